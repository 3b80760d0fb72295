#!/usr/bin/env bash
# Match-found push (issue 22): what open event streams cost a node, how
# soon a match reaches its player, and what streaming saves in polls.
#
#   bench/streams.sh [--streams 10000] [--players 200] [--duration 20]
#
# 1. Memory: a release server (embedded, no worker: nobody is matched or
#    dropped) takes --streams joins; its RSS is read once every player has
#    joined, then again with one event stream open per player. The
#    difference over the number of streams is the memory per stream
#    (connection, stream state, presence).
# 2. Push delay, embedded: mm-load's players (--players, --duration) wait
#    on their event streams; the delay runs from the match's matched_at to
#    the event at the player. The same players polling every 500 ms give
#    the polling load the streams replace.
# 3. Push delay across nodes: two `serve` nodes on one Redis and one
#    PostgreSQL; players join through node A (which runs the worker) and
#    stream through node B, so every event crosses Redis pub/sub.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

STREAMS=10000 PLAYERS=200 DURATION=20
while [[ $# -gt 0 ]]; do
  case $1 in
    --streams) STREAMS=$2; shift 2 ;;
    --players) PLAYERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "usage: $0 [--streams N] [--players N] [--duration S]" >&2; exit 2 ;;
  esac
done

build_release --bin matchmaking-api --bin mm-load
BIN=target/release/matchmaking-api LOAD=target/release/mm-load
SECRET=bench-secret-bench-secret-bench-secret-01
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${TAG:-} ]] && drop_prod_backends
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

# Starts a server with the settings given; sets SERVER (its pid).
start() {
  local port=$1; shift
  env JWT_SECRET=$SECRET DATA_DIR="$WORK/data$port" LOG_FORMAT=json RUST_LOG=warn \
    RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 BIND_ADDR=127.0.0.1:$port "$@" \
    "$BIN" serve > "$WORK/serve$port.log" 2>&1 &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_ready 127.0.0.1:$port
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# The server's commit → event histogram (matchmaking_event_push_seconds)
# at $1: events, the share within 10 ms and 25 ms, and the bucket bounds
# that hold the median and the 99th percentile.
push_histogram() {
  curl -s "http://$1/metrics" | awk '
    /^matchmaking_event_push_seconds_bucket/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      n++; les[n] = le; cum[n] = $NF
    }
    /^matchmaking_event_push_seconds_count/ { total = $NF }
    END {
      for (i = 1; i <= n; i++) {
        if (les[i] == "0.01") in10 = cum[i]
        if (les[i] == "0.025") in25 = cum[i]
        if (p50 == "" && cum[i] >= 0.5 * total) p50 = les[i]
        if (p99 == "" && cum[i] >= 0.99 * total) p99 = les[i]
      }
      printf "server, commit → event handed to the stream: %d events; %.2f%% within 10 ms, %.2f%% within 25 ms; p50 ≤ %s s, p99 ≤ %s s\n",
        total, 100 * in10 / total, 100 * in25 / total, p50, p99
    }'
}

machine_line

# 1. Memory per open stream.
start 18101 WORKER_ENABLED=false HTTP_MAX_CONNECTIONS=$((STREAMS + 2000)) \
  EVENT_STREAMS_PER_NODE=$((STREAMS + 1000))
progress "memory: $STREAMS players join, then each opens its event stream"
"$LOAD" --url http://127.0.0.1:18101 --secret $SECRET --hold-streams \
  --players "$STREAMS" --duration 120 > "$WORK/hold.out" 2> "$WORK/hold.err" &
LOADER=$!
PIDS+=("$LOADER")
until grep -q 'every player joined' "$WORK/hold.err"; do sleep 0.2; done
sleep 2
joined_kib=$(rss_kib "$SERVER")
progress "every player joined: server RSS $joined_kib KiB; opening the streams"
until grep -q "mm-load: $STREAMS streams open" "$WORK/hold.err"; do
  if ! kill -0 "$LOADER" 2>/dev/null; then
    echo "mm-load ended before $STREAMS streams were open:" >&2
    tail -5 "$WORK/hold.err" >&2
    exit 1
  fi
  sleep 0.5
done
sleep 3
open_kib=$(rss_kib "$SERVER")
open=$(curl -s http://127.0.0.1:18101/metrics | awk '/^matchmaking_event_streams_open/ {print $2}')
kill "$LOADER" "$SERVER"
wait "$LOADER" "$SERVER" 2>/dev/null || true
echo
echo "| streams open (server's gauge) | RSS, every player joined | RSS, streams open | per stream |"
echo "|---|---|---|---|"
printf '| %s | %.1f MiB | %.1f MiB | %.1f KiB |\n' "$open" \
  "$(bc -l <<<"$joined_kib/1024")" "$(bc -l <<<"$open_kib/1024")" \
  "$(bc -l <<<"($open_kib-$joined_kib)/$open")"

# 2. Push delay on the embedded default, and polling against streaming.
start 18102
for wait in poll events; do
  progress "embedded: $PLAYERS players for $DURATION s, --wait $wait"
  echo
  echo "--- embedded, players --wait $wait"
  "$LOAD" --url http://127.0.0.1:18102 --secret $SECRET --players "$PLAYERS" \
    --duration "$DURATION" --wait $wait 2>/dev/null
done
push_histogram 127.0.0.1:18102
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

# 3. Across nodes: join through A (with the worker), stream through B.
prod_backends streams
start 18103 "${BACKENDS[@]}"
start 18104 "${BACKENDS[@]}" WORKER_ENABLED=false
NODE_B=127.0.0.1:18104
progress "across nodes on Redis: $PLAYERS players join through A, stream through B"
echo
echo "--- two nodes on Redis and PostgreSQL: join through A, --wait events through B"
"$LOAD" --url http://127.0.0.1:18103 --events-url http://127.0.0.1:18104 --secret $SECRET \
  --players "$PLAYERS" --duration "$DURATION" --wait events 2>/dev/null
push_histogram "$NODE_B"
