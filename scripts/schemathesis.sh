#!/usr/bin/env bash
# The API against its own OpenAPI document: schemathesis (4.x, from PyPI)
# runs every check, positive and negative, on every operation of the
# release binary (embedded default), once with a player's token and once
# with an admin's. Exits non-zero on any failure.
#
#   bash scripts/schemathesis.sh
#
# SCHEMATHESIS_EXAMPLES (default 25) bounds the examples per operation and
# phase; SCHEMATHESIS_SEED (default 1) fixes the generation so a run is
# reproducible (set it empty for a fresh seed).
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${SCHEMATHESIS_EXAMPLES:-25}"
seed="${SCHEMATHESIS_SEED-1}"
target="${CARGO_TARGET_DIR:-target}"

cargo build --release --quiet --bin matchmaking-api
bin="$target/release/matchmaking-api"

venv="$target/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis>=4,<5"
fi

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export DATA_DIR="$dir" BIND_ADDR="127.0.0.1:$port" LOG_FORMAT=json RUST_LOG=warn \
    JWT_SECRET="schemathesis-secret-$(python3 -c 'import secrets; print(secrets.token_hex(16))')" \
    RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0
# The embedded default, whatever the calling shell points at.
unset REDIS_URL DATABASE_URL JWT_SECRET_KEY JWT_PUBLIC_KEY_PEM JWT_JWKS_URL
"$bin" serve >"$dir/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
if ! curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
    echo "schemathesis: the server did not start:" >&2
    cat "$dir/server.log" >&2
    exit 1
fi

player="$("$bin" token --user st_player --ttl 86400)"
admin="$("$bin" token --user st_admin --role admin --ttl 86400)"
status=0
for who in player admin; do
    token="${!who}"
    echo "schemathesis: as the $who"
    "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run \
        "http://127.0.0.1:$port/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks all --exclude-checks use_after_free \
        --mode all --max-examples "$examples" \
        ${seed:+--seed "$seed"} --no-color || status=1
done
if [ "$status" -ne 0 ]; then
    echo "schemathesis: failures (server log: last lines)" >&2
    tail -20 "$dir/server.log" >&2
fi
exit "$status"
