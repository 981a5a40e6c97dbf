#!/usr/bin/env bash
# Runs fuzz targets one after another, each for SECONDS (default 600), and prints each run's
# last status line (executions, coverage, corpus). Findings land in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET…]      # default: every target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). -timeout=10: an
# input that runs longer than 10 s (a filter that stalls evaluation) is a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
logs="${FUZZ_LOGS:-${CARGO_TARGET_DIR:-fuzz/target}/fuzz-logs}"
mkdir -p "$logs"
for t in "${targets[@]}"; do
    cargo +nightly fuzz run "$t" --fuzz-dir fuzz -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1 && result=clean || result="FAILED (see $logs/$t.log)"
    echo "$t: $result; $(grep -a -E '^#[0-9]+' "$logs/$t.log" | tail -1)"
done
