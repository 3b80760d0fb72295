#!/usr/bin/env bash
# Overload (issue 16): the embedded default under joins from 2,000
# connections (well past what the node serves), with load shedding. Prints
# wrk's totals (admitted and shed together), the latency of admitted joins
# as 16 tracked clients saw it (and of their shed ones), and the node's RSS:
# idle after normal traffic (8 connections of joins for 10 s, then the
# retention time so their entries are gone), at the peak of the flood, and
# every 15 s after it until the retention time has passed again. Finished
# entries and active-game guards are kept ENTRY_RETENTION_SECONDS and
# ACTIVE_GAME_GUARD_SECONDS ($RETENTION s each here); a purge runs every 30
# worker ticks. EXTRA_ENV adds server settings; SMAPS=1 prints the memory
# map at the end.
# Usage: bench/overload.sh [connections=2000] [seconds=30] [retention=60]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
CONNS=${1:-2000}
DURATION=${2:-30}
RETENTION=${3:-60}
ADDR="127.0.0.1:${PORT:-18093}"
bench_setup overload
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
build_release --bin matchmaking-api --example tracked_clients
machine_line
start_server "$ADDR" ENTRY_RETENTION_SECONDS="$RETENTION" ACTIVE_GAME_GUARD_SECONDS="$RETENTION" ${EXTRA_ENV:-} \
  PRESENCE_TIMEOUT_SECONDS=0
rss() { echo $(( $(ps -o rss= -p "$SERVER") / 1024 )); }
echo "== minting tokens"
python3 bench/tokens.py "$SECRET" $((DURATION * 60000)) "o-" > "$WORK/tokens.txt"
python3 bench/tokens.py "$SECRET" 400000 "w-" > "$WORK/warm.txt"
echo "== normal traffic: 8 connections of joins for 10 s (RSS $(rss) MiB at start)"
TOKENS="$WORK/warm.txt" WRK_THREADS=2 wrk -t2 -c8 -d10s -s bench/join.lua "http://$ADDR" | grep Requests/sec
echo "   RSS right after: $(rss) MiB; waiting $((RETENTION + 45)) s for its entries to go"
sleep $((RETENTION + 45))
BEFORE=$(rss)
echo "== RSS before the flood (idle, after normal traffic): $BEFORE MiB"
(while kill -0 "$SERVER" 2>/dev/null; do rss; sleep 1; done > "$WORK/rss.txt") &
SAMPLER=$!
echo "== $CONNS connections of joins for ${DURATION}s, and 16 tracked clients"
TOKENS="$WORK/tokens.txt" WRK_THREADS=2 wrk -t2 -c"$CONNS" -d"${DURATION}"s --latency \
  -s bench/join.lua "http://$ADDR" > "$WORK/wrk.txt" &
WRK=$!
sleep 2
./target/release/examples/tracked_clients "http://$ADDR" "$SECRET" 16 $((DURATION - 4))
wait $WRK
grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" "$WORK/wrk.txt"
echo "== /readyz right after: $(curl -s -o /dev/null -w '%{http_code} in %{time_total}s' "http://$ADDR/readyz")"
PEAK=$(sort -n "$WORK/rss.txt" | tail -1)
echo "== RSS: before $BEFORE MiB, peak $PEAK MiB, right after $(rss) MiB"
for t in $(seq 15 15 $((RETENTION + 60))); do
  sleep 15
  echo "   ${t}s after the flood: $(rss) MiB"
done
kill $SAMPLER 2>/dev/null || true
AFTER=$(rss)
echo "== RSS after the retention time: $AFTER MiB, before the flood $BEFORE MiB ($(( (AFTER - BEFORE) * 100 / BEFORE ))%)"
if [ -n "${SMAPS:-}" ]; then
  grep -E "^(Rss|Anonymous)" /proc/$SERVER/smaps_rollup
fi
