#!/usr/bin/env bash
# Where the CPU goes under the join load: wrk on POST /v1/matchmaking/queue
# (every request a different user, one pool, so every join is matched) and,
# over the same seconds, the CPU each process on the machine used (server,
# redis-server, postgres, wrk, kernel threads), from /proc.
# Usage: bench/join_cpu.sh [--prod] [connections=32] [seconds=10]
# --prod: the machine's Redis and PostgreSQL, in a key prefix and schema of
# their own (dropped at the end). Release build; rate limits off.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
PROD=""
if [ "${1:-}" = "--prod" ]; then PROD=1; shift; fi
CONNS=${1:-32}
DURATION=${2:-10}
ADDR="127.0.0.1:${PORT:-18089}"
bench_setup cpu
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
build_release --bin matchmaking-api
machine_line
start_server "$ADDR"
python3 bench/tokens.py "$SECRET" $((DURATION * 50000)) "c-" > "$WORK/tokens.txt"

# CPU ticks used so far by every process, summed per command name.
ticks() {
  for stat in /proc/[0-9]*/stat; do
    # comm may hold spaces: the fields after its closing parenthesis.
    line=$(cat "$stat" 2>/dev/null) || continue
    name=${line#*(}; name=${name%%)*}; rest=${line##*) }
    set -- $rest
    echo "${name// /_} $(( ${12} + ${13} ))"
  done | awk '{t[$1] += $2} END {for (n in t) print n, t[n]}' | sort
}
# Measure the middle of the run: from one second after wrk has connected
# (it formats its requests first) to one second before its end.
loaded() { [ "$(ss -Htn state established "( dport = :${ADDR##*:} )" | wc -l)" -ge "$CONNS" ]; }
(until loaded; do sleep 0.05; done; sleep 1; ticks > "$WORK/before"; sleep $((DURATION - 2)); ticks > "$WORK/after") &
SAMPLER=$!
TOKENS="$WORK/tokens.txt" WRK_THREADS=2 wrk -t2 -c"$CONNS" -d"${DURATION}"s --latency \
  -s bench/join.lua "http://$ADDR" | grep -E "Requests/sec|50%|99%|Non-2xx"
wait $SAMPLER
echo "== CPU used during the run (cores), $(backends_name):"
join -a2 "$WORK/before" "$WORK/after" | awk -v secs=$((DURATION - 2)) -v hz="$(getconf CLK_TCK)" '
  { used = (NF == 3 ? $3 - $2 : $2) / hz / secs; if (used >= 0.01) printf "  %-28s %.2f\n", $1, used }' | sort -k2 -nr
