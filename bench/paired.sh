#!/usr/bin/env bash
# Paired join runs: two builds of the binary, alternated round by round on a
# fresh server each time (embedded, or --prod), wrk on POST
# /v1/matchmaking/queue as in bench/core.sh. The machine's speed drifts;
# interleaving old and new is what makes a few per cent visible.
# ROUTE=status measures GET /v1/matchmaking/queue/{id} instead (over
# status_entries, as in bench/core.sh).
# Usage: [ROUTE=join|status] bench/paired.sh [--prod] OLD_BIN NEW_BIN [rounds=3] [connections=8] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
PROD=""
if [ "${1:-}" = "--prod" ]; then PROD=1; shift; fi
OLD=$1; NEW=$2
ROUNDS=${3:-3}
CONNS=${4:-8}
DURATION=${5:-10}
ADDR="127.0.0.1:${PORT:-18097}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
machine_line
ROUTE=${ROUTE:-join}
echo "== backends: $(backends_name); $ROUTE; $CONNS connections, ${DURATION}s, $ROUNDS rounds"
echo "| round | build | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for build in old new; do
    bench_setup "paired_$build"
    BIN=$([ "$build" = old ] && echo "$OLD" || echo "$NEW")
    start_server "$ADDR"
    if [ "$ROUTE" = status ]; then
      status_entries "$ADDR"
      row "$round" "$build" env ENTRIES="$WORK/entries.txt" \
        wrk -t2 -c"$CONNS" -d"${DURATION}"s --latency -s bench/status.lua "http://$ADDR"
    else
      python3 bench/tokens.py "$SECRET" $((DURATION * 50000)) "j-" > "$WORK/tokens.txt"
      row "$round" "$build" env TOKENS="$WORK/tokens.txt" WRK_THREADS=2 \
        wrk -t2 -c"$CONNS" -d"${DURATION}"s --latency -s bench/join.lua "http://$ADDR"
    fi
    stop_server
    bench_cleanup
    trap - EXIT
  done
done
