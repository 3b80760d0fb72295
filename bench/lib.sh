# Shared by the bench scripts (source it): wrk table rows and readiness.

# One table row from a wrk run: requests/s, p50, p99, non-2xx count.
row() {
  local name=$1 conns=$2; shift 2
  local out
  # Progress on stderr (the table on stdout stays clean for pasting).
  progress "loading $name with $conns connections"
  out=$("$@")
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$conns" \
    "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
    "$(awk '/Non-2xx/ {print $5}' <<<"$out" | grep . || echo 0)"
}

# A progress line on stderr, timestamped: a run takes minutes, and says
# what it is doing meanwhile.
progress() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

# Builds the release targets named, with cargo's own progress shown (a
# first release build takes several minutes).
build_release() {
  progress "building the release binaries ($*): minutes on a first build"
  cargo build --release "$@"
}

table_head() {
  echo
  echo "| endpoint | connections | requests/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|---|"
}

# Waits (up to 5 s) until the server at $1 answers /healthz.
wait_ready() {
  for _ in $(seq 1 50); do curl -fs "http://$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "the server at $1 did not start" >&2
  return 1
}

machine_line() {
  echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); $(date -u +%F)"
}

# --prod: a PostgreSQL schema and a Redis key prefix of their own, named
# "$1_<time>"; sets TAG and BACKENDS (the server's environment).
# drop_prod_backends removes both.
prod_backends() {
  TAG="$1_$(date +%s)"
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $TAG"
  BACKENDS=(REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX=$TAG
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$TAG")
}

drop_prod_backends() {
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $TAG CASCADE" || true
  redis-cli --scan --pattern "$TAG:*" | xargs -r -n 500 redis-cli del > /dev/null || true
}

# The secret every bench script signs its tokens with.
SECRET="bench-secret-bench-secret-bench-secret-00"

# The backends the server runs on, for the scripts' headings.
backends_name() {
  if [ -n "${PROD:-}" ]; then echo "Redis + PostgreSQL"; else echo "embedded (memory + SQLite)"; fi
}

# bench_setup NAME: WORK (a temporary directory) and, when PROD is set, a
# Redis prefix and a PostgreSQL schema of their own (BACKENDS, see
# prod_backends). On exit the server ($SERVER) is stopped and all of it
# removed.
bench_setup() {
  WORK=$(mktemp -d)
  BACKENDS=()
  SERVER=""
  if [ -n "${PROD:-}" ]; then prod_backends "$1"; fi
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
  if [ -n "${PROD:-}" ]; then drop_prod_backends; fi
}

# start_server ADDR [VAR=value…]: the release build's `serve` on ADDR with
# BACKENDS, JSON logs to $WORK/server.log, rate limits off (the load comes
# from one address); sets SERVER and waits until it answers.
start_server() {
  local addr=$1; shift
  # KEYS: how the server verifies tokens (default: the HS256 secret).
  env BIND_ADDR="$addr" DATA_DIR="$WORK/data" "${KEYS[@]:-JWT_SECRET=$SECRET}" LOG_FORMAT=json "${BACKENDS[@]}" \
    RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 "$@" \
    "${BIN:-./target/release/matchmaking-api}" serve > "$WORK/server.log" 2>&1 &
  SERVER=$!
  wait_ready "$addr"
}

# stop_server: stops $SERVER and waits for it.
stop_server() {
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  SERVER=""
}

# status_entries ADDR: 2000 searching players in a pool of their own (a
# 30+20 casual OCEANIA pool) for the status route; writes
# "<token> <queue_entry_id>" lines to $WORK/entries.txt. One process on one
# kept-alive connection (2000 curls took 40 s).
status_entries() {
  python3 bench/tokens.py "$SECRET" 2000 "s-" > "$WORK/status-tokens.txt"
  python3 - "$1" "$WORK/status-tokens.txt" > "$WORK/entries.txt" <<'PY'
import http.client, json, sys
conn = http.client.HTTPConnection(sys.argv[1])
body = json.dumps({"time_control": "30+20", "mode": "casual", "region": "OCEANIA"})
for token in open(sys.argv[2]).read().split():
    conn.request("POST", "/v1/matchmaking/queue", body,
                 {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    print(token, json.loads(conn.getresponse().read())["queue_entry_id"])
PY
}
