#!/usr/bin/env bash
# Join throughput with RS256 tokens against HS256, alternated round by
# round on a fresh embedded server each time (wrk on POST
# /v1/matchmaking/queue as in bench/core.sh, a distinct user per request).
# RS256: the test key pair of tests/keys (RSA 2048); tokens are signed up
# front (bench/tokens.py, needs python3's `cryptography`).
# Usage: bench/join_rs256.sh [rounds=3] [connections=8] [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${1:-3}
CONNS=${2:-8}
DURATION=${3:-10}
ADDR="127.0.0.1:${PORT:-18098}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
machine_line
TOKENS_DIR=$(mktemp -d)
python3 bench/tokens.py "$SECRET" $((DURATION * 40000)) "h-" > "$TOKENS_DIR/hs256.txt"
RS256_KEY=tests/keys/rsa-private.pem python3 bench/tokens.py - $((DURATION * 25000)) "r-" bench \
  > "$TOKENS_DIR/rs256.txt"
echo "== embedded; join; $CONNS connections, ${DURATION}s, $ROUNDS rounds"
echo "| round | tokens | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for alg in hs256 rs256; do
    bench_setup "join_$alg"
    if [ "$alg" = rs256 ]; then
      KEYS=(JWT_PUBLIC_KEY_PEM="$(cat tests/keys/rsa-public.pem)")
    else
      KEYS=()
    fi
    start_server "$ADDR"
    row "$round" "$alg" env TOKENS="$TOKENS_DIR/$alg.txt" WRK_THREADS=2 \
      wrk -t2 -c"$CONNS" -d"${DURATION}"s --latency -s bench/join.lua "http://$ADDR"
    stop_server
    bench_cleanup
  done
done
rm -rf "$TOKENS_DIR"
