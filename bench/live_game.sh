#!/usr/bin/env bash
# Game creation through live-game-api (BENCHMARKS.md): a stand-in game service
# (examples/fake_live_game.rs) on loopback answering in 5 ms, first always,
# then failing half its calls with 503; the server uses its default retry and
# breaker settings. Usage: bench/live_game.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18089}
FAKE_PORT=${FAKE_PORT:-19090}
SECRET="bench-secret-bench-secret-bench-secret-00"
WORK=$(mktemp -d)
trap 'kill $SERVER $FAKE 2>/dev/null || true; rm -rf "$WORK"' EXIT
echo "== building the release binaries: minutes on a first build" >&2
cargo build --release --bin matchmaking-api --example match_latency --example fake_live_game
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); $(date -u +%F)"

run() { # failure-share pairs
  ./target/release/examples/fake_live_game "$FAKE_PORT" 5 "$1" > "$WORK/fake.log" 2>&1 &
  FAKE=$!
  BIND_ADDR=127.0.0.1:$PORT DATA_DIR="$WORK/data-$1" JWT_SECRET=$SECRET LOG_FORMAT=json \
    RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 \
    LIVE_GAME_API_URL=http://127.0.0.1:$FAKE_PORT ./target/release/matchmaking-api > "$WORK/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  ./target/release/examples/match_latency "http://127.0.0.1:$PORT" "$SECRET" "$2" 32
  echo "   CreateGame calls: $(grep -c '"game_created"' "$WORK/server.log") games created, $(grep -c 'game_creation_failed' "$WORK/server.log") creations failed for good"
  kill $SERVER $FAKE; wait $SERVER $FAKE 2>/dev/null || true
}

echo "== fake answering in 5 ms, no failures: 2000 pairs"
run 0.0 2000
echo "== fake answering in 5 ms, 50% of calls 503: 500 pairs (1000 players)"
run 0.5 500
