#!/usr/bin/env bash
# The Containerfile cannot be built here (no container engine), so this checks what would break it at
# run time: it builds the release binary with the builder stage's own `cargo build` line (read from the
# Containerfile) and checks that the final stage can run it — the highest GLIBC symbol version the
# binary needs (objdump) is at most the final stage's glibc, and it needs no shared library beyond
# glibc's and libgcc_s — or that it is linked statically.
set -euo pipefail
cd "$(dirname "$0")/.."

# The final stage this check knows, and its glibc: distroless cc-debian12 is made of Debian 12
# (bookworm) packages, whose libc6 is 2.36. Changing the base image means changing these two.
FINAL_IMAGE=gcr.io/distroless/cc-debian12:nonroot
FINAL_GLIBC=2.36
# What the final stage has besides glibc's own libraries: libgcc_s (libgcc-s1).
FINAL_LIBS='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1|libgcc_s\.so\.1)$'

final=$(awk 'toupper($1) == "FROM" { image = $2 } END { print image }' Containerfile)
if [ "$final" != "$FINAL_IMAGE" ]; then
    echo "check-binary: the Containerfile's final stage is $final; this check knows $FINAL_IMAGE" \
        "(glibc $FINAL_GLIBC): update FINAL_IMAGE and FINAL_GLIBC in $0" >&2
    exit 1
fi
mapfile -t builds < <(sed -n 's/^RUN \(cargo build .*\)$/\1/p' Containerfile)
if [ "${#builds[@]}" -ne 1 ]; then
    echo "check-binary: expected one 'RUN cargo build ...' line in the Containerfile, found ${#builds[@]}" >&2
    exit 1
fi
host_glibc=$(ldd --version | sed -n '1s/.* \([0-9][0-9.]*\)$/\1/p')
if [ "$host_glibc" != "$FINAL_GLIBC" ]; then
    # Symbol versions follow the glibc linked against: a newer one here can only raise them.
    echo "check-binary: note: this machine's glibc is $host_glibc, the builder stage's $FINAL_GLIBC;" \
        "the result is for this machine's build" >&2
fi

echo "== ${builds[0]}"
# shellcheck disable=SC2086 # the Containerfile's command line, split as its shell would
${builds[0]}
binary=target/release/provider-images

# Whole outputs are captured before matching: with pipefail, `grep -q` closing a pipe early would
# fail the producer (SIGPIPE) and the pipeline with it.
dynamic=$(readelf -d "$binary")
if ! grep -q '(NEEDED)' <<<"$dynamic"; then
    echo "== $binary is linked statically: it runs on any final stage"
    exit 0
fi
symbols=$(objdump -T "$binary")
needed=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$symbols" | sed 's/^GLIBC_//' | sort -uV | tail -1)
highest=$(printf '%s\n%s\n' "$needed" "$FINAL_GLIBC" | sort -V | tail -1)
echo "== $binary needs GLIBC_$needed at most; $FINAL_IMAGE has glibc $FINAL_GLIBC"
if [ "$highest" != "$FINAL_GLIBC" ]; then
    echo "check-binary: FAILED: the binary needs GLIBC_$needed, newer than the final stage's $FINAL_GLIBC:" >&2
    grep "GLIBC_$needed" <<<"$symbols" >&2
    exit 1
fi
libs=$(sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' <<<"$dynamic")
echo "== shared libraries: $(echo "$libs" | tr '\n' ' ')"
if unknown=$(echo "$libs" | grep -Ev "$FINAL_LIBS"); then
    echo "check-binary: FAILED: the final stage does not have: $unknown" >&2
    exit 1
fi
