#!/usr/bin/env bash
# Joins with ratings from the rating service and a warm cache, against the
# local ratings table: the same binary, alternated round by round on a fresh
# server each time (embedded backends). The load is bench/join_cancel.lua
# (join, then cancel, user after user around a ring, one connection per wrk
# thread); before the measured run both sides get the same warm-up
# (WARMUP seconds, default 10), in which the service side turns the ring: the
# fake rating service (bench/fake_ratings.py) serves every user once, so
# every measured join reads its rating from the cache (the table shows the
# service's reads in each phase, and the fallbacks while measuring).
# Usage: bench/rating_cache.sh [BIN] [rounds=3] [threads=4] [seconds=10] [users=6000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BIN=${1:-./target/release/matchmaking-api}
ROUNDS=${2:-3}
THREADS=${3:-4}
DURATION=${4:-10}
USERS=${5:-6000}
WARMUP=${WARMUP:-10}
ADDR="127.0.0.1:${PORT:-18098}"
RATINGS_PORT=${RATINGS_PORT:-18099}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
machine_line
echo "== embedded; join+cancel; $THREADS connections, ${DURATION}s, $ROUNDS rounds, $USERS users"
echo "| round | ratings | requests/s | p50 | p99 | non-2xx | service reads in warm-up | service reads measured | fallbacks measured |"
echo "|---|---|---|---|---|---|---|---|---|"
load() {
  env TOKENS="$WORK/tokens.txt" WRK_THREADS="$THREADS" \
    wrk -t"$THREADS" -c"$THREADS" -d"$1"s --latency -s bench/join_cancel.lua "http://$ADDR"
}
fallbacks() {
  curl -fs "http://$ADDR/metrics" | awk '/^matchmaking_rating_fallbacks_total/ {s += $2} END {print s + 0}'
}
calls() {
  if [ -n "$FAKE" ]; then curl -fs "http://127.0.0.1:$RATINGS_PORT/calls"; else echo 0; fi
}
for round in $(seq 1 "$ROUNDS"); do
  for ratings in local service; do
    bench_setup "ratings_$ratings"
    python3 bench/tokens.py "$SECRET" "$USERS" "rc-" > "$WORK/tokens.txt"
    EXTRA=()
    FAKE=""
    if [ "$ratings" = service ]; then
      python3 bench/fake_ratings.py "$RATINGS_PORT" & FAKE=$!
      for _ in $(seq 1 50); do calls > /dev/null 2>&1 && break; sleep 0.1; done
      EXTRA=(RATING_API_URL="http://127.0.0.1:$RATINGS_PORT" RATING_API_TIMEOUT_SECONDS=2)
    fi
    # No matching: every entry stays searching until its cancel.
    start_server "$ADDR" WORKER_ENABLED=false "${EXTRA[@]}"
    # The same warm-up on both sides; on the service side it turns the
    # ring (every user read once, then cached).
    load "$WARMUP" > /dev/null
    warm=$(calls)
    before=$(fallbacks)
    out=$(load "$DURATION")
    after=$(fallbacks)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$round" "$ratings" \
      "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
      "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
      "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
      "$(awk '/Non-2xx/ {print $5}' <<<"$out" | grep . || echo 0)" \
      "$warm" "$(( $(calls) - warm ))" "$((after - before))"
    stop_server
    if [ -n "$FAKE" ]; then kill "$FAKE" 2>/dev/null || true; fi
    bench_cleanup
    trap - EXIT
  done
done
