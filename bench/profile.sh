#!/usr/bin/env bash
# Profiles the gateway's hot path under the benchmark's load (run bench/run.sh once first: it
# installs the tools and writes the users file and configs this reuses from bench/out/work).
#
#   bench/profile.sh [key|basic|bearer|up|down] [seconds]
#
# up / down: the API-key 1 MiB upload (:bulk) and download (:search) of bench/run.sh.
#
# Builds a release binary with line-table debug info into bench/out/target-prof (your normal
# target/ is untouched), starts the upstream nginx and that gateway on CPU 0, drives it with
# wrk on CPU 1, and prints: CPU µs per request of the gateway and of the upstream (from
# /proc/PID/stat), context switches per request, and perf's flat and inclusive top functions
# (perf record -e cpu-clock --call-graph dwarf). Output also in bench/out/profile-*.txt.
set -euo pipefail
MODE=${1:-key}
SECS=${2:-8}
BASE_PORT=${BASE_PORT:-18180}
RUN=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/out/prof
# shellcheck source=bench/prof-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/prof-common.sh"
PROF=$RUN
command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null; }
GW=${GATEWAY_BIN:-$(profiling_build)} # GATEWAY_BIN: profile that binary instead (symbols, no line tables)
start_upstream 0
# shellcheck disable=SC2046 # one word per variable
env -i $(gateway_env) taskset -c 0 "$GW" >"$PROF/gw.log" 2>&1 &
PIDS+=($!)
GWPID=$!
sleep 1.5
URL="http://127.0.0.1:$GW_PORT$ROUTE"
export BENCH_BODY_FILE=
case $MODE in
key) HDR=$KEY_HEADER ;;
up) HDR=$KEY_HEADER URL="http://127.0.0.1:$GW_PORT$UP_ROUTE" BENCH_BODY_FILE=$WORK/bulk.json ;;
down) HDR=$KEY_HEADER URL="http://127.0.0.1:$GW_PORT$DOWN_ROUTE" BENCH_BODY_FILE=$WORK/search-query.json ;;
basic) HDR=$BASIC_HEADER ;;
bearer)
    TOKEN=$(curl -sf -X POST -d username=bench-token -d password=token-pass-1 \
        "http://127.0.0.1:$GW_PORT/api/security/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    HDR="Authorization: Bearer $TOKEN" ;;
*) echo "mode: key, basic, bearer, up or down" >&2; exit 2 ;;
esac
POST=()
[ -z "$BENCH_BODY_FILE" ] || POST=(-X POST -H 'Content-Type: application/json' -H 'Expect:' --data-binary "@$BENCH_BODY_FILE")
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$HDR" "${POST[@]}" "$URL")" = 200 ] || { echo "not 200" >&2; exit 1; }
taskset -c 1 wrk -t1 -c64 -d2s -s "$HERE/report.lua" -H "$HDR" "$URL" >/dev/null # warm-up

ticks() { # utime+stime of a process and its children (nginx workers), in clock ticks
    local t=0 p
    for p in "$@" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo $t
}
csw() { awk '/ctxt_switches/ {s += $2} END {print s}' /proc/"$1"/task/*/status; }
HZ=$(getconf CLK_TCK)
g0=$(ticks $GWPID) n0=$(ticks $NGX) c0=$(csw $GWPID)
taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s "$HERE/report.lua" -H "$HDR" "$URL" | tail -1 >"$PROF/wrk.json"
g1=$(ticks $GWPID) n1=$(ticks $NGX) c1=$(csw $GWPID)
REPORT=$OUT/profile-$MODE.txt
python3 - "$PROF/wrk.json" $((g1 - g0)) $((n1 - n0)) $((c1 - c0)) "$HZ" >"$REPORT" <<'EOF'
import json, sys
w = json.load(open(sys.argv[1]))
g, n, c, hz = (int(x) for x in sys.argv[2:6])
r = w["requests"]
print(f"{w['rps']:.0f} req/s, p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms, {r} requests")
print(f"gateway CPU per request: {g / hz / r * 1e6:.1f} µs; upstream nginx: {n / hz / r * 1e6:.1f} µs; "
      f"gateway context switches per request: {c / r:.2f}")
EOF
perf record -q -e cpu-clock -F 4999 --call-graph dwarf,16384 -p $GWPID -o "$PROF/perf.data" -- sleep 4 \
    >/dev/null 2>&1 &
PERF=$!
PIDS+=("$PERF")
taskset -c 1 wrk -t1 -c64 -d5s -s "$HERE/report.lua" -H "$HDR" "$URL" >/dev/null
wait $PERF || true
{
    echo
    echo "== self time (flat), top 40 =="
    perf report -i "$PROF/perf.data" --no-children --sort symbol --stdio -g none --percent-limit 0.7 2>/dev/null |
        grep -v '^#' | grep -v "^$" | head -40 || true # head ends the pipe early
    echo
    echo "== inclusive time (children), top 60 =="
    perf report -i "$PROF/perf.data" --children --sort symbol --stdio -g none --percent-limit 2 2>/dev/null |
        grep -v '^#' | grep -v "^$" | head -60 || true
} >>"$REPORT"
cat "$REPORT"
