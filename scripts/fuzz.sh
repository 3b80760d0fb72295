#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time and prints
# the executions each made and whether it found anything.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60, all)
#
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). A
# crash leaves its input in fuzz/artifacts/<target>/; keep it as a test
# (tests/fuzz_regressions.rs) once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O >/dev/null 2>&1
status=0
printf '%-14s %14s %10s  %s\n' target executions "exec/s" result
for target in "${targets[@]}"; do
    log="$(mktemp)"
    mkdir -p "corpus/$target"
    if cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 -max_len=4096 \
        >"$log" 2>&1; then
        result="nothing found"
    else
        result="FOUND: see fuzz/artifacts/$target/ and $log"
        status=1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    printf '%-14s %14s %10s  %s\n' "$target" "$runs" "$rate" "$result"
    if [ "$result" = "nothing found" ]; then rm -f "$log"; fi
done
exit "$status"
