#!/usr/bin/env bash
# Fuzzing with afl.rs on the stable toolchain (not a test; CI only replays tests/corpus).
#   bash hack/fuzz.sh [SECONDS]    (default 60 per target; TARGETS="layer toc" picks some)
# Installs cargo-afl if missing, builds the targets of fuzz/ (`cargo afl build`), writes seeds from
# the tests' own fixtures (tests/it/fuzz_corpus.rs) plus tests/corpus, then runs each target for
# SECONDS on one core. Findings are under target/fuzz-out/<target>/default/{crashes,hangs} (FUZZ_OUT=DIR
# puts them in DIR instead, so that two campaigns can run side by side): commit each as
# tests/corpus/<target>/<name> with its fix. Ends with one line of AFL's own counts.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-60}
ALL_TARGETS=(reference images pull_secret headers manifest layer toc byteranges cluster_dump mirrors pem signature_payload rekor_set policy_render)
read -r -a TARGETS <<<"${TARGETS:-${ALL_TARGETS[*]}}"
OUT=${FUZZ_OUT:-$PWD/target/fuzz-out}
SEEDS=$OUT-seeds
export CARGO_TARGET_DIR=$PWD/target/afl

if ! cargo afl --version >/dev/null 2>&1; then
    cargo install cargo-afl --locked
fi

(cd fuzz && cargo afl build --locked --quiet)

rm -rf "$SEEDS" "$OUT"
mkdir -p "$SEEDS" "$OUT"
# The seeds are built by the test harness from its fixtures, with the normal test build.
FUZZ_SEEDS=$SEEDS CARGO_TARGET_DIR=$PWD/target cargo test --quiet --locked --test it \
    fuzz_corpus::write_seeds -- --ignored --exact >/dev/null
for target in "${TARGETS[@]}"; do
    mkdir -p "$SEEDS/$target"
    if [ -d "tests/corpus/$target" ]; then
        find "tests/corpus/$target" -type f ! -name README.md -exec cp {} "$SEEDS/$target/" \;
    fi
done

# A machine we do not own: no CPU governor or core-pattern changes, no UI, no core binding.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
export AFL_FORKSRV_INIT_TMOUT=30000 AFL_QUIET=1 AFL_SKIP_CRASHES=1

stat_of() { awk -F' *: *' -v key="$2" '$1 == key {print $2}' "$1"; }
total_execs=0 total_crashes=0 total_hangs=0
for target in "${TARGETS[@]}"; do
    log=$OUT/$target.log
    # -V: stop after SECONDS; -t: 2 s per input counts as a hang; -m: a memory cap (MiB).
    cargo afl fuzz -i "$SEEDS/$target" -o "$OUT/$target" -V "$SECONDS_PER_TARGET" -t 2000 -m 1024 \
        "$CARGO_TARGET_DIR/debug/$target" >"$log" 2>&1 || {
        echo "fuzz: $target did not run; see $log" >&2
        tail -n 20 "$log" >&2
        exit 1
    }
    stats=$OUT/$target/default/fuzzer_stats
    execs=$(stat_of "$stats" execs_done)
    crashes=$(stat_of "$stats" saved_crashes)
    hangs=$(stat_of "$stats" saved_hangs)
    corpus=$(stat_of "$stats" corpus_count)
    echo "$target: $execs execs, corpus $corpus, $crashes crashes, $hangs hangs"
    total_execs=$((total_execs + execs))
    total_crashes=$((total_crashes + crashes))
    total_hangs=$((total_hangs + hangs))
done
echo "fuzz: ${#TARGETS[@]} targets, $total_execs execs, $total_crashes crashes, $total_hangs hangs"
