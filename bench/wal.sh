#!/usr/bin/env bash
# The SQLite WAL under a sustained join load (issue 16): wrk on POST
# /v1/matchmaking/queue for $1 seconds (every join is matched and its match
# written), with 500,000 players who may join again 5 s after their match
# (ACTIVE_GAME_GUARD_SECONDS=5), so the writes never stop. Samples the
# database and WAL file sizes (and the server's RSS) every second; prints
# the largest and the last, and the join figures.
# Usage: bench/wal.sh [seconds=300] [connections=8]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${1:-300}
CONNS=${2:-8}
ADDR="127.0.0.1:${PORT:-18085}"
bench_setup wal
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
build_release --bin matchmaking-api
machine_line
start_server "$ADDR" ACTIVE_GAME_GUARD_SECONDS=5 PRESENCE_TIMEOUT_SECONDS=0
python3 bench/tokens.py "$SECRET" 500000 "w-" > "$WORK/tokens.txt"
DB="$WORK/data/matchmaking.db"
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
(while kill -0 "$SERVER" 2>/dev/null; do
   echo "$(size "$DB") $(size "$DB-wal") $(( $(ps -o rss= -p "$SERVER") / 1024 ))"
   sleep 1
 done > "$WORK/sizes.txt") &
SAMPLER=$!
echo "== $CONNS connections of joins for ${DURATION}s"
TOKENS="$WORK/tokens.txt" WRK_THREADS=2 wrk -t2 -c"$CONNS" -d"${DURATION}"s --latency \
  -s bench/join.lua "http://$ADDR" | grep -E "Requests/sec|50%|99%|Non-2xx"
sleep 2
kill $SAMPLER 2>/dev/null || true
echo "== matches recorded: $(python3 -c "import sqlite3; print(sqlite3.connect('file:$DB?mode=ro', uri=True).execute('select count(*) from match_records').fetchone()[0])")"
awk '{ if ($2 > wal) wal = $2; if ($3 > rss) rss = $3; db = $1; last = $2 }
     END { printf "== WAL: largest %.1f MiB, last %.1f MiB; database: %.1f MiB at the end; largest RSS %d MiB\n", wal/1048576, last/1048576, db/1048576, rss }' "$WORK/sizes.txt"
