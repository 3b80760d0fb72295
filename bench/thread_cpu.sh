#!/usr/bin/env bash
# CPU per thread of the server under the join load: the server's ticks per
# thread name (from /proc/<pid>/task/*/stat) before and after a 10 s run of
# joins on 8 connections (bench/join.lua, one pool, every join matched).
# BIN picks the binary (default: the release build).
# Usage: [BIN=path] bench/thread_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_setup thr
ADDR=127.0.0.1:18113
start_server "$ADDR"
python3 bench/tokens.py "$SECRET" 500000 "j-" > "$WORK/tokens.txt"
snap() { for t in /proc/$SERVER/task/*; do l=$(cat $t/stat); n=$(cat $t/comm); r=${l##*) }; set -- $r; echo "$n $(( ${12} + ${13} ))"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort; }
snap > "$WORK/a"
TOKENS="$WORK/tokens.txt" WRK_THREADS=2 wrk -t2 -c8 -d10s -s bench/join.lua "http://$ADDR" | grep -E "Requests/sec|Non-2xx"
snap > "$WORK/b"
join "$WORK/a" "$WORK/b" -a2 | awk '{d=$3-$2; if ($3=="") d=$2; printf "%-20s %5d ticks\n", $1, d}'
stop_server
