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
PROD_FLAG=""
if [ "${1:-}" = "--prod" ]; then PROD_FLAG="--prod"; shift; fi
DURATION=${1:-10}
PLAYERS=${2:-200}
PORT=${PORT:-18087}
ADDR="127.0.0.1:$PORT"
SECRET="bench-secret-bench-secret-bench-secret-00"
WORK=$(mktemp -d)
SERVER=""
BACKENDS=()
if [ -n "$PROD_FLAG" ]; then
  prod_backends load
fi
cleanup() {
  [ -n "$SERVER" ] && kill $SERVER 2>/dev/null || true
  rm -rf "$WORK"
  if [ -n "$PROD_FLAG" ]; then
    drop_prod_backends
  fi
}
trap cleanup EXIT

cargo build --release --quiet --bin matchmaking-api --bin mm-load
machine_line
echo "== mm-load: $PLAYERS players for ${DURATION}s, ${PROD_FLAG:-embedded}"
env BIND_ADDR=$ADDR DATA_DIR="$WORK/data" JWT_SECRET=$SECRET LOG_FORMAT=json "${BACKENDS[@]}" \
  RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 \
  ./target/release/matchmaking-api serve > "$WORK/server.log" 2>&1 &
SERVER=$!
wait_ready "$ADDR"
./target/release/mm-load --url "http://$ADDR" --secret "$SECRET" --players "$PLAYERS" --duration "$DURATION"
kill $SERVER; wait $SERVER 2>/dev/null || true
SERVER=""
echo
bench/core.sh $PROD_FLAG "$DURATION"
