#!/usr/bin/env bash
# What metrics, logging and rate limiting cost (issue 7's figure): join
# throughput of one release build with them on and off, alternated in one
# run. "On" is the production default: METRICS_ENABLED=true, JSON logs at
# info (one line per enqueue, match and game), RATE_LIMIT_PER_USER=20 (every
# join is a distinct user, so each adds a limiter key) and a per-IP limiter
# that counts but cannot refuse (RATE_LIMIT_PER_IP=1000000: wrk is one
# address). "Off": METRICS_ENABLED=false, RUST_LOG=warn, both limits 0.
# The server's stdout goes to a pipe that counts the lines (as in a
# container, where a log collector reads it); LOGS_TO=file writes it to a
# file on this machine's disk instead, so the kernel's writeback of the
# log file competes for the same two cores.
# Usage: [LOGS_TO=pipe|file] bench/ops_overhead.sh [duration-seconds=10] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${1:-10}
ROUNDS=${2:-2}
CONNS=32
THREADS=2
PORT=${PORT:-18089}
LOGS_TO=${LOGS_TO:-pipe}
ADDR="127.0.0.1:$PORT"
WORK=$(mktemp -d)
SERVER=""
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
build_release --bin matchmaking-api
machine_line
echo "== server logs to: $LOGS_TO"

ON=(METRICS_ENABLED=true RUST_LOG=info RATE_LIMIT_PER_IP=1000000 RATE_LIMIT_PER_USER=20)
OFF=(METRICS_ENABLED=false RUST_LOG=warn RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0)

run() { # name round settings...
  local name=$1 round=$2; shift 2
  local lines="$WORK/lines-$name-$round"
  if [ "$LOGS_TO" = file ]; then
    env BIND_ADDR=$ADDR DATA_DIR="$WORK/data-$name-$round" JWT_SECRET=$SECRET LOG_FORMAT=json "$@" \
      ./target/release/matchmaking-api serve > "$lines.log" 2>&1 &
  else
    env BIND_ADDR=$ADDR DATA_DIR="$WORK/data-$name-$round" JWT_SECRET=$SECRET LOG_FORMAT=json "$@" \
      ./target/release/matchmaking-api serve > >(wc -l > "$lines") 2>&1 &
  fi
  SERVER=$!
  wait_ready "$ADDR"
  wrk -t$THREADS -c$CONNS -d2s "http://$ADDR/healthz" > /dev/null
  row "POST /v1/matchmaking/queue, ops $name (round $round)" $CONNS \
    env TOKENS="$WORK/tokens.txt" WRK_THREADS=$THREADS \
    wrk -t$THREADS -c$CONNS -d"${DURATION}"s --latency -s bench/join.lua "http://$ADDR" \
    | tee -a "$WORK/rows.txt"
  kill $SERVER; wait $SERVER 2>/dev/null || true
  SERVER=""
  sleep 0.2
  if [ "$LOGS_TO" = file ]; then wc -l < "$lines.log" > "$lines"; rm "$lines.log"; fi
  echo "   ($name, round $round: $(cat "$lines") log lines)" >&2
}

# One set of users serves every run: each run starts with empty stores.
python3 bench/tokens.py "$SECRET" $((DURATION * 50000)) "u-" > "$WORK/tokens.txt"
table_head
for round in $(seq 1 "$ROUNDS"); do
  run on "$round" "${ON[@]}"
  run off "$round" "${OFF[@]}"
done
awk -F'|' '/ops on/ {on += $4; n++} /ops off/ {off += $4; m++}
  END {printf "\n== mean join requests/s: ops on %.0f, ops off %.0f: on is %.1f%% of off (cost %.1f%%)\n",
       on/n, off/m, 100*(on/n)/(off/m), 100 - 100*(on/n)/(off/m)}' "$WORK/rows.txt"
