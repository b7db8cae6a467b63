#!/usr/bin/env bash
# Benchmark (not a test): N provider images sharing base layers, pushed to a local TLS registry, then in
# one run: our cold extract, and the peer — `skopeo copy` of every image to an OCI directory plus untarring
# the manifests subtree from its layers. Prints wall time and peak RSS of each, and the ratio.
# The same images are also pushed as zstd:chunked (those skopeo manages to write), and extracted with
# partial pulls and with --no-partial: bytes fetched, requests and wall time of each.
#   IMAGES=10 BASE_MIB=40 UNIQUE_MIB=20 RUNS=3 bash hack/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

IMAGES=${IMAGES:-10}
BASE_MIB=${BASE_MIB:-40}
UNIQUE_MIB=${UNIQUE_MIB:-20}
RUNS=${RUNS:-3}

open_lab bench bench bench-password

# Binary-like, compressible content: real executables and libraries of this machine, cut to size.
fill() { # DIR MIB SEED
    mkdir -p "$1"
    find /usr/lib /usr/bin -type f -size +64k 2>/dev/null | sort | awk -v s="$3" 'NR % 7 == s % 7' |
        xargs cat 2>/dev/null | head -c $(($2 << 20)) >"$1/blob.bin" || true
}
echo "== building $IMAGES images: 3 shared base layers of ${BASE_MIB} MiB, one unique ${UNIQUE_MIB} MiB layer each"
for b in 1 2 3; do
    fill "$LAB/base$b/usr/lib/base$b" "$BASE_MIB" "$b"
    layer_from_dir "$LAB/base$b" "$LAB/base$b.tar.gz"
done
IMAGES_JSON="{"
CHUNKED_JSON="{"
sep=""
csep=""
chunked=0
for i in $(seq 1 "$IMAGES"); do
    fill "$LAB/u$i/opt/provider$i" "$UNIQUE_MIB" "$((i + 3))"
    layer_from_dir "$LAB/u$i" "$LAB/u$i.tar.gz"
    mkdir -p "$LAB/m$i/capi-operator-manifests/default"
    printf 'name: provider%s\nattributes:\n  type: infrastructure\n  version: v1.0.%s\ninstallOrder: 20\n' "$i" "$i" \
        >"$LAB/m$i/capi-operator-manifests/default/metadata.yaml"
    for n in $(seq 1 200); do printf -- '---\nkind: ConfigMap\nmetadata:\n  name: provider%s-%s\n' "$i" "$n"; done \
        >"$LAB/m$i/capi-operator-manifests/default/manifests.yaml"
    layer_from_dir "$LAB/m$i" "$LAB/m$i.tar.gz"
    digest=$(oci_image "$LAB/oci$i" v1 amd64 "$LAB/base1.tar.gz" "$LAB/base2.tar.gz" "$LAB/base3.tar.gz" \
        "$LAB/u$i.tar.gz" "$LAB/m$i.tar.gz")
    skopeo copy --quiet --dest-creds bench:bench-password --dest-cert-dir "$LAB/certs" --preserve-digests \
        "oci:$LAB/oci$i:v1" "docker://$REGISTRY/bench/provider$i:v1"
    # Converted in a fresh layout, then pushed as is: copied straight to the registry, skopeo would
    # reuse the gzip blobs already there. skopeo 1.9's zstd:chunked writer fails ("short write") on
    # some layers: such images are left out.
    if skopeo copy --quiet --dest-compress-format zstd:chunked \
        "oci:$LAB/oci$i:v1" "oci:$LAB/chunked$i:v1" 2>"$LAB/chunked$i.err" &&
        skopeo copy --quiet --dest-creds bench:bench-password --dest-cert-dir "$LAB/certs" \
            --preserve-digests --digestfile "$LAB/chunked$i.digest" \
            "oci:$LAB/chunked$i:v1" "docker://$REGISTRY/bench/chunked$i:v1" 2>>"$LAB/chunked$i.err"; then
        CHUNKED_JSON="$CHUNKED_JSON$csep\"provider$i\":\"$REGISTRY/bench/chunked$i@$(cat "$LAB/chunked$i.digest")\""
        csep=,
        chunked=$((chunked + 1))
    else
        echo "   skopeo could not write image $i as zstd:chunked: $(tail -1 "$LAB/chunked$i.err")"
    fi
    rm -rf "$LAB/oci$i" "$LAB/chunked$i" "$LAB/u$i"
    IMAGES_JSON="$IMAGES_JSON$sep\"provider$i\":\"$REGISTRY/bench/provider$i@$digest\""
    sep=,
done
echo "$IMAGES_JSON}" >"$LAB/images.json"
echo "$CHUNKED_JSON}" >"$LAB/chunked.json"
echo "== $chunked of $IMAGES images written as zstd:chunked"
printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY" "$(printf bench:bench-password | base64)" >"$LAB/auth.json"
compressed=$(du -cb "$LAB"/base?.tar.gz "$LAB"/u*.tar.gz "$LAB"/m*.tar.gz | tail -1 | cut -f1)
echo "== unique compressed bytes in the registry: $((compressed >> 20)) MiB"

ours() { # IMAGES_JSON LOG [ARGS...]: "wall rss fetched_bytes layer_bytes requests"
    local images=$1 log=$2
    shift 2
    rm -rf "$LAB/out"
    /usr/bin/time -f "%e %M" -o "$LAB/time" "$BIN" extract --no-cluster --images-json "$images" \
        --output "$LAB/out" --pull-secret "$LAB/auth.json" --ca-file "$LAB/ca.crt" --log-format json "$@" 2>"$log"
    printf '%s %s\n' "$(cat "$LAB/time")" "$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "layer bytes fetched":
        print(event["fetched_bytes"], event["layer_bytes"], event["blob_requests"])
' "$log")"
}
peer() {
    rm -rf "$LAB/peer" && mkdir -p "$LAB/peer"
    /usr/bin/time -f "%e %M" -o "$LAB/time" bash -c '
        set -e
        for i in $(seq 1 '"$IMAGES"'); do
            skopeo copy --quiet --src-creds bench:bench-password --src-cert-dir '"$LAB/certs"' \
                "docker://'"$REGISTRY"'/bench/provider$i:v1" "oci:'"$LAB"'/peer/oci:provider$i"
        done
        for blob in '"$LAB"'/peer/oci/blobs/sha256/*; do
            if [ "$(head -c2 "$blob" | od -An -tx1 | tr -d " ")" = "1f8b" ]; then
                mkdir -p '"$LAB"'/peer/tree && tar -xzf "$blob" -C '"$LAB"'/peer/tree capi-operator-manifests 2>/dev/null || true
            fi
        done'
    cat "$LAB/time"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$LAB/ours.txt"
: >"$LAB/peer.txt"
: >"$LAB/partial.txt"
: >"$LAB/whole.txt"
for run in $(seq 1 "$RUNS"); do
    ours "$LAB/images.json" "$LAB/ours.log" >>"$LAB/ours.txt"
    peer >>"$LAB/peer.txt"
    if [ "$chunked" -gt 0 ]; then
        ours "$LAB/chunked.json" "$LAB/partial.log" >>"$LAB/partial.txt"
        ours "$LAB/chunked.json" "$LAB/whole.log" --no-partial >>"$LAB/whole.txt"
    fi
done
ours_wall=$(cut -d' ' -f1 "$LAB/ours.txt" | median)
ours_rss=$(cut -d' ' -f2 "$LAB/ours.txt" | median)
peer_wall=$(cut -d' ' -f1 "$LAB/peer.txt" | median)
peer_rss=$(cut -d' ' -f2 "$LAB/peer.txt" | median)
printf '\n%-34s %10s %14s\n' "median of $RUNS runs" "wall (s)" "peak RSS (MiB)"
printf '%-34s %10s %14s\n' "provider-images extract (cold)" "$ours_wall" "$((ours_rss >> 10))"
printf '%-34s %10s %14s\n' "skopeo copy ×$IMAGES + tar (peer)" "$peer_wall" "$((peer_rss >> 10))"
awk -v o="$ours_wall" -v p="$peer_wall" 'BEGIN {printf "peer / ours wall-time ratio: %.2f×\n", p / o}'
if [ "$chunked" -gt 0 ]; then
    row() { # LABEL FILE
        local wall fetched layers requests
        wall=$(cut -d' ' -f1 "$2" | median)
        read -r _ _ fetched layers requests < <(head -1 "$2")
        printf '%-34s %10s %14s %14s %9s\n' "$1" "$wall" "$(awk -v b="$fetched" 'BEGIN {printf "%.2f", b / 1048576}')" \
            "$((layers >> 20))" "$requests"
    }
    printf '\nzstd:chunked set, %s of %s images  %10s %14s %14s %9s\n' "$chunked" "$IMAGES" "wall (s)" \
        "fetched (MiB)" "layers (MiB)" "requests"
    row "extract, partial pulls (cold)" "$LAB/partial.txt"
    row "extract --no-partial (cold)" "$LAB/whole.txt"
    read -r _ _ fetched layers _ < <(head -1 "$LAB/partial.txt")
    awk -v f="$fetched" -v l="$layers" 'BEGIN {printf "bytes fetched with partial pulls: %.3f%% of the layer bytes\n", 100 * f / l}'
    awk -v p="$(cut -d' ' -f1 "$LAB/partial.txt" | median)" -v w="$(cut -d' ' -f1 "$LAB/whole.txt" | median)" \
        'BEGIN {printf "--no-partial / partial wall-time ratio: %.2f×\n", w / p}'
fi
