#!/usr/bin/env bash
# Counts the gateway's user-space instructions per request on the benchmark's route, with
# valgrind's callgrind: a figure that, unlike req/s, does not move with the machine's load, so
# two builds can be compared exactly. `nginx` counts the nginx API-key peer the same way. Run
# bench/run.sh once first (it writes the users file and the configs this reuses from
# bench/out/work).
#
#   bench/callgrind.sh [key|basic|nginx] [seconds]   (GATEWAY_BIN=path to measure another binary)
#
# Prints requests measured, instructions per request and the top inclusive functions; the raw
# profile is kept in bench/out/callgrind.out for callgrind_annotate.
set -euo pipefail
MODE=${1:-key}
SECS=${2:-6}
BASE_PORT=${BASE_PORT:-18280}
RUN=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/out/callgrind
# shellcheck source=bench/prof-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/prof-common.sh"
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
case $MODE in
key | nginx) HDR=$KEY_HEADER ;;
basic) HDR=$BASIC_HEADER ;;
*) echo "mode: key, basic or nginx" >&2; exit 2 ;;
esac
start_upstream 0-1
URL="http://127.0.0.1:$GW_PORT$ROUTE"
if [ "$MODE" = nginx ]; then
    # bench/run.sh's nginx-key, in one process (no master) so that callgrind sees the worker.
    GW=$(command -v nginx || echo /usr/sbin/nginx)
    sed -e "s#$WORK/nginx-key#$RUN/nginx-key#g" -e "s#127.0.0.1:[0-9]*;#127.0.0.1:$GW_PORT;#" \
        -e "s#server 127.0.0.1:$GW_PORT;#server 127.0.0.1:$UP_PORT;#" -e "s#$WORK/tmp#$RUN/tmp#g" \
        -e "s#include $RUN/nginx-keys#include $WORK/nginx-keys#" "$WORK/nginx-key.conf" >"$RUN/nginx-key.conf"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$RUN/cg.out" "$GW" \
        -e "$RUN/nginx-key.err" -p "$RUN" -c "$RUN/nginx-key.conf" -g 'daemon off; master_process off;' \
        >"$RUN/gw.log" 2>&1 &
else
    GW=${GATEWAY_BIN:-$(profiling_build)}
    # The users file is re-read every poll interval; an hour keeps that out of the count.
    # shellcheck disable=SC2046 # one word per variable
    env -i $(gateway_env) ARGILLA_GATEWAY_WORKER_THREADS=1 ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS=3600 \
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$RUN/cg.out" "$GW" \
        >"$RUN/gw.log" 2>&1 &
fi
GWPID=$!
PIDS+=("$GWPID")
for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$HDR" "$URL")" = 200 ] && break
    sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$HDR" "$URL")" = 200 ] || { echo "not 200" >&2; exit 1; }
callgrind_control -i on $GWPID >/dev/null
wrk -t1 -c16 -d3s -H "$HDR" "$URL" >/dev/null # warm-up, then count from zero
callgrind_control -z $GWPID >/dev/null
REQUESTS=$(wrk -t1 -c16 -d"${SECS}s" -H "$HDR" "$URL" | awk '/requests in/ {print $1}')
callgrind_control -d $GWPID >/dev/null
PROFILE=$(find "$RUN" -name "cg.out.*" | head -1)
cp "$PROFILE" "$OUT/callgrind.out"
TOTAL=$(callgrind_annotate "$PROFILE" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$REQUESTS requests, $((TOTAL / REQUESTS)) instructions per request ($MODE, $(basename "$GW"))"
echo "== inclusive, top 40 (instructions per request)"
callgrind_annotate --inclusive=yes "$PROFILE" 2>/dev/null |
    awk -v n="$REQUESTS" '/^ *[0-9,]+ \([ 0-9.]+%\)  / { c = $1; gsub(",", "", c);
        sub(/^ *[0-9,]+ \([ 0-9.]+%\)  /, ""); sub(/ \[.*\]$/, ""); sub(/^[^:]*\.(rs|c|h|S):/, "");
        if (!seen[$0]++) printf "%8d  %s\n", c / n, substr($0, 1, 150) }' | head -40
