#!/usr/bin/env bash
# Core-service figures (BENCHMARKS.md): wrk on /healthz, join and status, and
# time to match, against a release build on loopback, embedded default.
# Each endpoint is loaded twice: with 8 connections (latency at a moderate
# load) and with 64 (saturation). Rate limits are turned off
# (RATE_LIMIT_PER_IP=0, RATE_LIMIT_PER_USER=0): wrk is one address. Usage: bench/core.sh [--prod] [duration-seconds=10]
# --prod runs the server on the machine's Redis (a key prefix of its own) and
# PostgreSQL (a schema of its own), both dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
PROD=""
if [ "${1:-}" = "--prod" ]; then PROD=1; shift; fi
DURATION=${1:-10}
LOADS="8 64"
THREADS=2
ADDR="127.0.0.1:${PORT:-18088}"
bench_setup bench

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
build_release --bin matchmaking-api --example match_latency --example commit_throughput

echo "== backends: $(backends_name)"
machine_line
start_server "$ADDR"

progress "minting tokens ($((DURATION * 50000)) per load)"
for c in $LOADS; do
  python3 bench/tokens.py "$SECRET" $((DURATION * 50000)) "j$c-" > "$WORK/join-tokens-$c.txt"
done
# Entries for the status run.
status_entries "$ADDR"

load() {
  local c=$1
  row "GET /healthz" "$c" wrk -t$THREADS -c"$c" -d"${DURATION}"s --latency "http://$ADDR/healthz"
  row "POST /v1/matchmaking/queue" "$c" env TOKENS="$WORK/join-tokens-$c.txt" WRK_THREADS=$THREADS \
    wrk -t$THREADS -c"$c" -d"${DURATION}"s --latency -s bench/join.lua "http://$ADDR"
  row "GET /v1/matchmaking/queue/{id}" "$c" env ENTRIES="$WORK/entries.txt" \
    wrk -t$THREADS -c"$c" -d"${DURATION}"s --latency -s bench/status.lua "http://$ADDR"
}

echo "== time to match, quiet server"
./target/release/examples/match_latency "http://$ADDR" "$SECRET" 2000 32
table_head
load 8
echo
echo "== time to match, right after the 8-connection runs"
./target/release/examples/match_latency "http://$ADDR" "$SECRET" 2000 32
table_head
load 64
echo
echo "== slow matching passes (over 200 ms) during the runs: $(grep -c '"slow matching pass"' "$WORK/server.log" || true)"
echo "== server RSS: $(ps -o rss= -p $SERVER | xargs) KiB"
echo "== matching commit throughput, no HTTP (one pass over 20000 waiting players)"
./target/release/examples/commit_throughput 20000 50
