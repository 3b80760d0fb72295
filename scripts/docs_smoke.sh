#!/usr/bin/env bash
# The docs page in a real browser, offline: starts the service (embedded
# default, debug build), loads /docs/ in headless Chromium with every host but
# loopback unresolvable, and checks that Swagger UI rendered the operations
# of /openapi.json. Usage: scripts/docs_smoke.sh  (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

BROWSER=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$BROWSER" ]; then
  echo "docs-smoke: chromium is needed (apt-get install chromium)" >&2
  exit 1
fi
cargo build --quiet --bin matchmaking-api
BIN="${CARGO_TARGET_DIR:-target}/debug/matchmaking-api"
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA_DIR="$WORK/data" LOG_FORMAT=json RUST_LOG=warn \
  "$BIN" serve --bind-addr "127.0.0.1:$PORT" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.1; done
if ! curl -fs "http://127.0.0.1:$PORT/healthz" > /dev/null; then
  echo "docs-smoke: the service did not start" >&2
  cat "$WORK/server.log" >&2
  exit 1
fi

EXPECTED=$(curl -fs "http://127.0.0.1:$PORT/openapi.json" \
  | python3 -c 'import sys,json; d=json.load(sys.stdin); print(sum(len(v) for v in d["paths"].values()))')
# No network: every name but loopback fails to resolve.
"$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$WORK/profile" \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --virtual-time-budget=10000 --dump-dom "http://127.0.0.1:$PORT/docs/" \
  > "$WORK/dom.html" 2> "$WORK/browser.log" || true

RENDERED=$(grep -o 'class="opblock opblock-' "$WORK/dom.html" | wc -l)
echo "docs-smoke: $RENDERED of $EXPECTED operations rendered"
if [ "$RENDERED" -ne "$EXPECTED" ] || ! grep -q '/v1/matchmaking/queue' "$WORK/dom.html"; then
  echo "docs-smoke: the docs page did not render the API" >&2
  head -c 2000 "$WORK/dom.html" >&2
  tail -20 "$WORK/browser.log" >&2
  exit 1
fi
echo "docs-smoke: ok"
