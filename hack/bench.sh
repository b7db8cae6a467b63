#!/usr/bin/env bash
# Benchmark (not a test): N provider images sharing base layers, pushed to a local TLS registry, then in
# one run: our cold extract, and the peer — `skopeo copy` of every image to an OCI directory plus untarring
# the manifests subtree from its layers. Prints wall time and peak RSS of each, and the ratio.
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
sep=""
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
    rm -rf "$LAB/oci$i" "$LAB/u$i"
    IMAGES_JSON="$IMAGES_JSON$sep\"provider$i\":\"$REGISTRY/bench/provider$i@$digest\""
    sep=,
done
echo "$IMAGES_JSON}" >"$LAB/images.json"
printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY" "$(printf bench:bench-password | base64)" >"$LAB/auth.json"
compressed=$(du -cb "$LAB"/base?.tar.gz "$LAB"/u*.tar.gz "$LAB"/m*.tar.gz | tail -1 | cut -f1)
echo "== unique compressed bytes in the registry: $((compressed >> 20)) MiB"

ours() {
    rm -rf "$LAB/out"
    /usr/bin/time -f "%e %M" -o "$LAB/time" "$BIN" extract --no-cluster --images-json "$LAB/images.json" \
        --output "$LAB/out" --pull-secret "$LAB/auth.json" --ca-file "$LAB/ca.crt" --log-format json 2>"$LAB/ours.log"
    cat "$LAB/time"
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
for run in $(seq 1 "$RUNS"); do
    ours >>"$LAB/ours.txt"
    peer >>"$LAB/peer.txt"
done
ours_wall=$(cut -d' ' -f1 "$LAB/ours.txt" | median)
ours_rss=$(cut -d' ' -f2 "$LAB/ours.txt" | median)
peer_wall=$(cut -d' ' -f1 "$LAB/peer.txt" | median)
peer_rss=$(cut -d' ' -f2 "$LAB/peer.txt" | median)
printf '\n%-34s %10s %14s\n' "median of $RUNS runs" "wall (s)" "peak RSS (MiB)"
printf '%-34s %10s %14s\n' "provider-images extract (cold)" "$ours_wall" "$((ours_rss >> 10))"
printf '%-34s %10s %14s\n' "skopeo copy ×$IMAGES + tar (peer)" "$peer_wall" "$((peer_rss >> 10))"
awk -v o="$ours_wall" -v p="$peer_wall" 'BEGIN {printf "peer / ours wall-time ratio: %.2f×\n", p / o}'
