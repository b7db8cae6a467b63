#!/usr/bin/env bash
# The test command: installs what the tests need (Debian packages, as root), then runs every test with
# cargo-nextest (one process per test, in parallel; each integration test starts its own registry).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
ensure_packages
cargo nextest run --no-fail-fast "$@"
