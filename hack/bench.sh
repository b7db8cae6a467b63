#!/usr/bin/env bash
# Benchmark (not a test). Builds a realistic release: IMAGES provider images on three shared base layers
# (30, 45 and 60 MiB compressed), one unique layer of 20–40 MiB compressed each and a small manifests layer
# each, all of binary-like content; pushes it to a local TLS registry; then measures, RUNS times each and
# printed as medians:
#   - provider-images extract, cold (empty output directory)      - the same again, warm (tree present)
#   - the peer: `skopeo copy` of every image to an OCI directory, then untarring the manifests subtree
#     from every gzip/zstd blob once (generous to the peer: each unique blob is decompressed once)
#   - the floor: decompressing the unique compressed bytes once, `gzip -dc`/`zstd -dc` split over 2
#     processes
# with wall and CPU time and peak RSS (/usr/bin/time), bytes fetched and requests made (the registry's
# access log), and the registry's own CPU time during the run (/proc/<pid>/stat; it shares the cores).
# Then the peak RSS of a cold run on one image with a BIG_MIB layer.
# COMPRESSION=zstd:chunked builds the set as zstd, has skopeo rewrite each image as zstd:chunked (the
# images it manages to write; the count is printed) and adds the cold runs with --no-partial: partial
# pulls against whole layers, on the same images, in the same run.
# LINK=<rate> (tc's units: 1gbit, 250mbit) limits what the registry sends to that rate (tc htb on lo,
# matched by the registry's port; removed on exit): on loopback a download costs only the registry's
# and our CPU, where a cluster pulls from a mirror across a network.
# The cold run is also measured under a ClusterImagePolicy covering every image (a test key signs each,
# its `.sig` pushed beside it; --cluster-dir holds the policy): the cost of verification, as extra requests
# and extra time, against the plain cold run of the same round.
# OTHER_BIN=path adds the cold runs of another build (say, main's) to the table, measured alongside.
# KEEP_LAB=1 keeps the lab (images, registry storage); REUSE_LAB=<that dir> measures again on it without
# building anything (the same IMAGES, COMPRESSION and BIG_MIB).
#   IMAGES=11 RUNS=3 COMPRESSION=gzip|zstd|zstd:chunked BIG_MIB=1024 [LINK=1gbit] [OTHER_BIN=…] bash hack/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

IMAGES=${IMAGES:-11}
RUNS=${RUNS:-3}
COMPRESSION=${COMPRESSION:-gzip}
BIG_MIB=${BIG_MIB:-1024}
BASE_MIB=(30 45 60)
case "$COMPRESSION" in
    gzip) EXT=tar.gz && COMPRESS=(pigz -n -6 -c) && DECOMPRESS=(gzip -dc) ;;
    zstd | zstd:chunked) EXT=tar.zst && COMPRESS=(zstd -q -3 -c) && DECOMPRESS=(zstd -q -dc) ;;
    *) echo "COMPRESSION is gzip, zstd or zstd:chunked" >&2 && exit 2 ;;
esac
CHUNKED=$([ "$COMPRESSION" = zstd:chunked ] && echo 1 || true)

if [ -z "${REUSE_LAB:-}" ]; then
    open_lab bench bench bench-password
    echo "$REGISTRY" >"$LAB/registry-host"
else
    ensure_packages
    cargo build --release --quiet
    BIN=$PWD/target/release/provider-images
    LAB=$REUSE_LAB
    KEEP_LAB=1
    trap close_lab EXIT
    REGISTRY=127.0.0.1:$(free_port)
    start_registry "$LAB" "${REGISTRY#*:}" bench bench-password
    sed -i "s/$(cat "$LAB/registry-host")/$REGISTRY/g" "$LAB/images.json" "$LAB"/big.json 2>/dev/null || true
    echo "$REGISTRY" >"$LAB/registry-host"
    printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY" "$(printf bench:bench-password | base64)" >"$LAB/auth.json"
fi
TICK=$(getconf CLK_TCK)
if [ -n "${LINK:-}" ]; then shape_link "$LINK" "${REGISTRY#*:}"; fi

# Binary-like, compressible content: this machine's libraries and executables, in 16 disjoint slices.
slice() { # SLOT
    find /usr/lib /usr/bin /usr/libexec -type f -size +64k 2>/dev/null | sort |
        awk -v s="$1" 'NR % 16 == s % 16' | xargs cat 2>/dev/null || true
}
# layer DIR FILE_IN_DIR COMPRESSED_MIB SLOT OUT: a layer holding one file of slice SLOT, cut so that it
# compresses to within 4 % of COMPRESSED_MIB: the cut is scaled by the last try's ratio, kept between the
# longest cut found too small and the shortest found too large (compressibility varies along a slice).
layer() {
    local dir=$1 file=$2 mib=$3 slot=$4 out=$5 raw=$(($3 << 21)) lo=0 hi=0 try size want
    want=$(($3 << 20))
    mkdir -p "$(dirname "$dir/$file")"
    for try in 1 2 3 4 5 6 7 8; do
        slice "$slot" | head -c "$raw" >"$dir/$file"
        tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir" -cf "$out.difftar" .
        "${COMPRESS[@]}" "$out.difftar" >"$out"
        size=$(stat -c %s "$out")
        if [ $((size * 25)) -gt $((want * 24)) ] && [ $((size * 25)) -lt $((want * 26)) ]; then break; fi
        if [ "$size" -lt "$want" ]; then lo=$raw; else hi=$raw; fi
        raw=$((raw * want / size))
        if [ "$hi" -gt 0 ] && { [ "$raw" -le "$lo" ] || [ "$raw" -ge "$hi" ]; }; then raw=$(((lo + hi) / 2)); fi
    done
    rm -rf "$dir"
}

manifests_layer() { # I OUT
    local dir=$LAB/m$1/capi-operator-manifests/default
    mkdir -p "$dir"
    printf 'name: provider%s\nattributes:\n  type: infrastructure\n  version: v1.0.%s\ninstallOrder: 20\n' "$1" "$1" \
        >"$dir/metadata.yaml"
    for n in $(seq 1 200); do printf -- '---\nkind: ConfigMap\nmetadata:\n  name: provider%s-%s\n' "$1" "$n"; done \
        >"$dir/manifests.yaml"
    layer_from_dir "$LAB/m$1" "$2"
    rm -rf "$LAB/m$1"
}
push() { # LAYOUT NAME: pushes the image (as zstd:chunked when CHUNKED), prints the pushed digest
    local layout=$1
    if [ -n "$CHUNKED" ]; then
        # Converted in a fresh layout, then pushed as is: copied straight to the registry, skopeo would
        # reuse blobs already there. skopeo 1.9's writer fails ("short write") on some layers.
        layout=$1.chunked
        if ! skopeo copy --quiet --dest-compress-format zstd:chunked "oci:$1:v1" "oci:$layout:v1" \
            2>"$LAB/$2.err"; then
            echo "   skopeo could not write $2 as zstd:chunked: $(tail -1 "$LAB/$2.err")" >&2
            rm -rf "$1" "$layout"
            return 1
        fi
    fi
    skopeo copy --quiet --dest-creds bench:bench-password --dest-cert-dir "$LAB/certs" --preserve-digests \
        --digestfile "$LAB/$2.digest" "oci:$layout:v1" "docker://$REGISTRY/bench/$2:v1"
    rm -rf "$1" "$layout"
    cat "$LAB/$2.digest"
}
build() {
    echo "== building $IMAGES images ($COMPRESSION): 3 shared base layers of ${BASE_MIB[*]} MiB, one unique layer of 20–40 MiB each"
    for b in 1 2 3; do
        layer "$LAB/base$b" "usr/lib/base$b/blob.bin" "${BASE_MIB[$((b - 1))]}" "$b" "$LAB/base$b.$EXT"
    done
    IMAGES_JSON="{"
    sep=""
    : >"$LAB/pushed"
    for i in $(seq 1 "$IMAGES"); do
        layer "$LAB/u$i" "opt/provider$i/manager" $((20 + (i - 1) * 2 % 21)) $((i + 3)) "$LAB/u$i.$EXT"
        manifests_layer "$i" "$LAB/m$i.$EXT"
        oci_image "$LAB/oci$i" v1 amd64 "$LAB/base1.$EXT" "$LAB/base2.$EXT" "$LAB/base3.$EXT" \
            "$LAB/u$i.$EXT" "$LAB/m$i.$EXT" >/dev/null
        digest=$(push "$LAB/oci$i" "provider$i") || continue
        IMAGES_JSON="$IMAGES_JSON$sep\"provider$i\":\"$REGISTRY/bench/provider$i@$digest\""
        sep=,
        echo "provider$i" >>"$LAB/pushed"
    done
    echo "$IMAGES_JSON}" >"$LAB/images.json"
    printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY" "$(printf bench:bench-password | base64)" >"$LAB/auth.json"
    UNIQUE=("$LAB"/base?."$EXT" "$LAB"/u*."$EXT" "$LAB"/m*."$EXT")
    compressed=$(du -cb "${UNIQUE[@]}" | tail -1 | cut -f1)
    inflated=$(du -cb "$LAB"/*.difftar | tail -1 | cut -f1)
    printf '== unique layers: %d, %d MiB compressed, %d MiB of tar; compressed MiB: %s\n' "${#UNIQUE[@]}" \
        $((compressed >> 20)) $((inflated >> 20)) "$(du -b "${UNIQUE[@]}" | awk '{printf "%.0f ", $1 / 1048576}')" \
        >"$LAB/sizes"
    rm -f "$LAB"/*.difftar
    # The floor's two halves: largest first, each to the lighter half.
    : >"$LAB/half0" && : >"$LAB/half1"
    h0=0 h1=0
    while read -r size file; do
        if [ "$h0" -le "$h1" ]; then echo "$file" >>"$LAB/half0" && h0=$((h0 + size)); else echo "$file" >>"$LAB/half1" && h1=$((h1 + size)); fi
    done < <(du -b "${UNIQUE[@]}" | sort -rn)
}
if [ -z "${REUSE_LAB:-}" ]; then build; fi
cat "$LAB/sizes"
PUSHED="$(wc -l <"$LAB/pushed") of $IMAGES images pushed${CHUNKED:+ as zstd:chunked}"
echo "== $PUSHED"

registry_ticks() { awk '{print $14 + $15}' "/proc/$REGISTRY_PID/stat"; }
log_lines() { wc -l <"$LAB/registry.log"; }
# measure NAME LOG CMD...: one run, its stderr to LOG; appends "wall cpu rss_kib fetched_bytes requests
# registry_cpu" to $LAB/NAME.txt.
measure() {
    local name=$1 log=$2 lines ticks
    shift 2
    # The previous run's writes (the peer writes every blob) are flushed outside the measured time.
    sync
    lines=$(log_lines)
    ticks=$(registry_ticks)
    local started ended
    started=$(date +%s%N)
    /usr/bin/time -f "%e %U %S %M" -o "$LAB/time" "$@" 2>"$log"
    ended=$(date +%s%N)
    local traffic
    traffic=$(tail -n +$((lines + 1)) "$LAB/registry.log" | awk -F'"' '/^[0-9.]+ - / {
        split($3, f, " "); n++; if (f[1] ~ /^2/) b += f[2] } END {printf "%d %d", b, n}')
    local _wall user sys rss
    read -r _wall user sys rss <"$LAB/time"
    printf '%.3f %.2f %s %s %.2f\n' "$(((ended - started) / 1000000))e-3" "$(echo "$user + $sys" | bc)" "$rss" \
        "$traffic" "$(echo "scale=2; ($(registry_ticks) - $ticks) / $TICK" | bc)" >>"$LAB/$name.txt"
}
OURS=(--no-cluster --pull-secret "$LAB/auth.json" --ca-file "$LAB/ca.crt" --log-format json)
ours_cold() {
    rm -rf "$LAB/out"
    measure cold "$LAB/cold.log" "$BIN" extract --images-json "$LAB/images.json" --output "$LAB/out" "${OURS[@]}"
}
other_cold() {
    rm -rf "$LAB/out"
    measure other "$LAB/other.log" "$OTHER_BIN" extract --images-json "$LAB/images.json" --output "$LAB/out" "${OURS[@]}"
}
ours_whole() {
    rm -rf "$LAB/out"
    measure whole "$LAB/whole.log" "$BIN" extract --images-json "$LAB/images.json" --output "$LAB/out" "${OURS[@]}" \
        --no-partial
}
ours_warm() {
    measure warm "$LAB/warm.log" "$BIN" extract --images-json "$LAB/images.json" --output "$LAB/out" "${OURS[@]}"
    grep -q '"warm run' "$LAB/warm.log" || echo "WARNING: the warm run was not warm; see $LAB/warm.log" >&2
}
peer() {
    rm -rf "$LAB/peer" && mkdir -p "$LAB/peer"
    measure peer "$LAB/peer.log" bash -c '
        set -e
        for name in $(cat '"$LAB/pushed"'); do
            skopeo copy --quiet --src-creds bench:bench-password --src-cert-dir '"$LAB/certs"' \
                "docker://'"$REGISTRY"'/bench/$name:v1" "oci:'"$LAB"'/peer/oci:$name"
        done
        mkdir -p '"$LAB"'/peer/tree
        for blob in '"$LAB"'/peer/oci/blobs/sha256/*; do
            case "$(head -c4 "$blob" | od -An -tx1 | tr -d " ")" in
                1f8b*) tar -xzf "$blob" -C '"$LAB"'/peer/tree capi-operator-manifests 2>/dev/null || true ;;
                28b52ffd) tar --zstd -xf "$blob" -C '"$LAB"'/peer/tree capi-operator-manifests 2>/dev/null || true ;;
            esac
        done'
}
floor() {
    measure floor "$LAB/floor.log" bash -c '
        xargs '"${DECOMPRESS[*]}"' <'"$LAB"'/half0 >/dev/null &
        xargs '"${DECOMPRESS[*]}"' <'"$LAB"'/half1 >/dev/null
        wait'
}

# Every pushed image signed by a test key (identity: its repository, as cosign signs by default), and
# the ClusterImagePolicy requiring it for the whole bench namespace.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$LAB/sign.key" 2>/dev/null
openssl pkey -in "$LAB/sign.key" -pubout -out "$LAB/sign.pub"
rm -rf "$LAB/policy-cluster"
cluster_image_policy "$LAB/policy-cluster" bench "$REGISTRY/bench" "$LAB/sign.pub"
while read -r name; do
    sign_image "$REGISTRY" "bench/$name" "$(cat "$LAB/$name.digest")" "$REGISTRY/bench/$name" "$LAB/sign.key" \
        bench:bench-password "$LAB/ca.crt"
done <"$LAB/pushed"
SIGNED=(--cluster-dir "$LAB/policy-cluster" --pull-secret "$LAB/auth.json" --ca-file "$LAB/ca.crt" --log-format json)
ours_signed() {
    rm -rf "$LAB/out"
    measure signed "$LAB/signed.log" "$BIN" extract --images-json "$LAB/images.json" --output "$LAB/out" "${SIGNED[@]}"
    grep -q '"signature"' "$LAB/out/index.json" || echo "WARNING: no signature recorded; see $LAB/signed.log" >&2
}

for name in cold signed whole warm peer floor other; do : >"$LAB/$name.txt"; done
for run in $(seq 1 "$RUNS"); do
    echo "== run $run of $RUNS"
    if [ -n "${OTHER_BIN:-}" ]; then other_cold; fi
    ours_cold
    if [ -n "$CHUNKED" ]; then ours_whole; fi
    ours_warm
    # After the warm run: a tree verified under a policy is not current for a run without one.
    ours_signed
    peer
    floor
done

median() { # FILE COLUMN
    cut -d' ' -f"$2" "$1" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
row() { # LABEL NAME
    local f=$LAB/$2.txt
    printf '%-38s %8s %8s %9s %11s %9s %12s\n' "$1" "$(median "$f" 1)" "$(median "$f" 2)" \
        "$(($(median "$f" 3) >> 10))" "$(($(median "$f" 4) >> 20))" "$(median "$f" 5)" "$(median "$f" 6)"
}
printf '\n%-38s %8s %8s %9s %11s %9s %12s\n' "median of $RUNS runs" "wall s" "CPU s" "RSS MiB" "fetched MiB" \
    "requests" "registry CPU"
printf '%s%s\n' "${LINK:+registry replies limited to $LINK; }" "$PUSHED"
row "provider-images extract, cold" cold
row "cold, every image signed + policy" signed
if [ -n "$CHUNKED" ]; then row "provider-images extract --no-partial" whole; fi
row "provider-images extract, warm" warm
if [ -n "${OTHER_BIN:-}" ]; then row "OTHER_BIN extract, cold" other; fi
row "peer: skopeo copy of each + tar" peer
row "floor: ${DECOMPRESS[0]} -dc over 2 processes" floor
cold=$(median "$LAB/cold.txt" 1)
awk -v c="$cold" -v w="$(median "$LAB/warm.txt" 1)" -v p="$(median "$LAB/peer.txt" 1)" \
    -v f="$(median "$LAB/floor.txt" 1)" -v r="$(median "$LAB/warm.txt" 5)" 'BEGIN {
    printf "cold: %.2f× faster than the peer (target ≥ 3×), %.2f× the floor (target ≤ 1.3×)\n", p / c, c / f
    printf "warm: %d ms (target ≤ 50 ms), %d requests (target 0)\n", w * 1000, r }'
awk -v c="$cold" -v s="$(median "$LAB/signed.txt" 1)" -v rc="$(median "$LAB/cold.txt" 5)" \
    -v rs="$(median "$LAB/signed.txt" 5)" -v n="$(wc -l <"$LAB/pushed")" 'BEGIN {
    printf "signature policy: %+.1f%% cold time (target ≤ 10%%), %.1f extra requests per image (target ≤ 2)\n", 100 * (s - c) / c, (rs - rc) / n }'
if [ -n "$CHUNKED" ]; then
    # Every unique layer is fetched whole once by --no-partial: its fetched bytes are the layers' bytes.
    awk -v c="$cold" -v w="$(median "$LAB/whole.txt" 1)" -v f="$(median "$LAB/cold.txt" 4)" \
        -v l="$(median "$LAB/whole.txt" 4)" -v rc="$(median "$LAB/cold.txt" 6)" -v n="$(median "$LAB/cold.txt" 5)" \
        -v cores="$(nproc)" 'BEGIN {
        printf "partial pulls: %.3f%% of the layer bytes fetched (target ≤ 1%%), %.2f× faster than --no-partial (target ≥ 20×)\n", 100 * f / l, w / c
        printf "the registry spent %.1f ms of CPU per request on this run'"'"'s %d requests, on the same %d cores: cold can be no faster than %.3f s here\n", 1000 * rc / n, n, cores, rc / cores }'
fi

if [ "$BIG_MIB" -gt 0 ]; then
    echo "== one image with a ${BIG_MIB} MiB layer (tar size)"
fi
if [ "$BIG_MIB" -gt 0 ] && [ ! -f "$LAB/big.json" ]; then
    mkdir -p "$LAB/big/opt/big"
    for slot in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do slice "$slot"; done | head -c $((BIG_MIB << 20)) \
        >"$LAB/big/opt/big/blob.bin"
    tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$LAB/big" -cf "$LAB/big.$EXT.difftar" .
    rm -rf "$LAB/big"
    "${COMPRESS[@]}" "$LAB/big.$EXT.difftar" >"$LAB/big.$EXT"
    manifests_layer big "$LAB/mbig.$EXT"
    oci_image "$LAB/ocibig" v1 amd64 "$LAB/big.$EXT" "$LAB/mbig.$EXT" >/dev/null
    rm -f "$LAB"/*.difftar
    digest=$(push "$LAB/ocibig" big)
    echo "{\"big\":\"$REGISTRY/bench/big@$digest\"}" >"$LAB/big.json"
fi
if [ "$BIG_MIB" -gt 0 ]; then
    : >"$LAB/big.txt"
    for run in $(seq 1 "$RUNS"); do
        rm -rf "$LAB/bigout"
        measure big "$LAB/big.log" "$BIN" extract --images-json "$LAB/big.json" --output "$LAB/bigout" "${OURS[@]}"
    done
    printf '%-38s %8s %8s %9s %11s %9s %12s\n' "cold, one image, ${BIG_MIB} MiB layer" "$(median "$LAB/big.txt" 1)" \
        "$(median "$LAB/big.txt" 2)" "$(($(median "$LAB/big.txt" 3) >> 10))" \
        "$(($(median "$LAB/big.txt" 4) >> 20))" "$(median "$LAB/big.txt" 5)" "$(median "$LAB/big.txt" 6)"
    echo "peak RSS target: ≤ 64 MiB"
fi
