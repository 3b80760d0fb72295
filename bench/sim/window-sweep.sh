#!/usr/bin/env bash
# The SPEC §5 window (initial, +amount every interval s, max gap) swept at one
# arrival rate against lila's pools: one line a setting with `ours` figures
# (wait p50/p95/p99, gap mean/p95, time-outs), lila's line first.
# Usage: bench/sim/window-sweep.sh [RATE] [SEEDS]   (defaults: 2, 1..20)
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-2}
seeds=${2:-$(seq -s, 1 20)}
cargo build --release --quiet --bin mm-sim
sim() {
    ./target/release/mm-sim --rates "$rate" --seeds "$seeds" --snapshots 0 \
        --large-snapshots 0 --out "${TMPDIR:-/tmp}/window-sweep" "$@"
}
sim | grep "^| $rate | lila"
for initial in 100 120 130 140 160 180; do
    for amount in 10 12 15 20 25; do
        for interval in 10 12 15 20; do
            line=$(sim --initial-window "$initial" --widening-amount "$amount" \
                --widening-seconds "$interval" | grep "^| $rate | ours")
            echo "initial $initial +$amount/${interval}s $line"
        done
    done
done
