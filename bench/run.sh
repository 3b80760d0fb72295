#!/usr/bin/env bash
# The figures of BENCHMARKS.md in one go: builds release, starts the server
# (embedded; Redis + PostgreSQL with --prod, in a key prefix and schema of
# their own), runs mm-load (virtual players joining, polling, finishing
# games, 10 % cancelling), then bench/core.sh (wrk on healthz/join/status and
# time to match). Rate limits are turned off for the load (one address,
# many players): RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0.
# Usage: bench/run.sh [--prod] [seconds=10] [players=200]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
PROD=""
if [ "${1:-}" = "--prod" ]; then PROD=1; shift; fi
DURATION=${1:-10}
PLAYERS=${2:-200}
ADDR="127.0.0.1:${PORT:-18087}"
bench_setup load

build_release --bin matchmaking-api --bin mm-load
machine_line
echo "== mm-load: $PLAYERS players for ${DURATION}s, $(backends_name)"
start_server "$ADDR"
./target/release/mm-load --url "http://$ADDR" --secret "$SECRET" --players "$PLAYERS" --duration "$DURATION"
stop_server
echo
bench/core.sh ${PROD:+--prod} "$DURATION"
