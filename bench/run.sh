#!/usr/bin/env bash
# Throughput/latency benchmark of argilla-gateway against nginx and Caddy on loopback.
# See bench/README.md. Usage: bench/run.sh   (knobs: the variables below, from the environment)
#
# CPU 0: the upstream nginx and the proxy under test.  CPU 1: wrk -t1 (and the attacker).
# Every process this script starts is killed by PID on exit; all traffic goes to 127.0.0.1.
set -euo pipefail

ROUNDS=${ROUNDS:-5}              # interleaved rounds; the table shows medians
DURATION=${DURATION:-7}          # seconds per measurement
CONNECTIONS=${CONNECTIONS:-64}   # wrk connections (one thread)
ATTACK_RATE=${ATTACK_RATE:-200}  # wrong-password Basic requests per second
USERS=${USERS:-10000}            # users in the file every proxy serves
BIG_USERS=${BIG_USERS:-100000}   # users in the file whose load time is measured
BASE_PORT=${BASE_PORT:-18080}    # ports BASE_PORT+1 .. BASE_PORT+10 on 127.0.0.1
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
IDLE_WAIT=${IDLE_WAIT:-120}      # longest wait, in seconds, for CPU 0 to be idle before a measurement
# GATEWAY_BASELINE_BIN: another gateway binary (an earlier commit) measured in the same run
# SCENARIOS: measure only these (names from ORDER below, space-separated); default all

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
WORK=$OUT/work
GW=${GATEWAY_BIN:-$ROOT/target/release/argilla-gateway}
UP_KEY=bench-upstream-service-key
SECRET=bench-secret-key-0123456789abcdef
ROUTE='/api/datasets/bench-ds?workspace=team-a'
UP_ROUTE='/api/datasets/bench-ds/TextClassification:bulk?workspace=team-a'
DOWN_ROUTE='/api/datasets/bench-ds/TextClassification:search?workspace=team-a&limit=1000'
BASELINE=${GATEWAY_BASELINE_BIN:-}

UP_PORT=$((BASE_PORT + 1)) NGX_PORT=$((BASE_PORT + 2)) CADDY_PORT=$((BASE_PORT + 3))
GW_PORT=$((BASE_PORT + 4)) GW_ATT_PORT=$((BASE_PORT + 5)) GW_OPEN_PORT=$((BASE_PORT + 6))
RELAY_PORT=$((BASE_PORT + 7)) HAP_PORT=$((BASE_PORT + 8)) NGX_STREAM_PORT=$((BASE_PORT + 9))
GW_OLD_PORT=$((BASE_PORT + 10))

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- packages (only when missing)
# shellcheck source=packages.sh
source "$HERE/packages.sh"
need_packages nginx=nginx caddy=caddy haproxy=haproxy wrk=wrk hyperfine=hyperfine curl=curl python3=python3 \
    taskset=util-linux ps=procps
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (proxy on $PROXY_CPU, load on $LOAD_CPU)"

# ---------------------------------------------------------------- build
if [ -z "${GATEWAY_BIN:-}" ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
fi
[ -x "$GW" ] || die "no gateway binary at $GW"
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "no baseline gateway binary at $BASELINE"

# ---------------------------------------------------------------- processes (killed on exit)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $UP_PORT $NGX_PORT $CADDY_PORT $GW_PORT $GW_ATT_PORT $GW_OPEN_PORT $RELAY_PORT $HAP_PORT \
    $NGX_STREAM_PORT $GW_OLD_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use; set BASE_PORT"
    fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

rm -rf "$WORK"
mkdir -p "$WORK/tmp" "$WORK/caddy"
cd "$WORK"

# ---------------------------------------------------------------- users files
log "generating users files ($USERS and $BIG_USERS users)"
{
    # cost 10 for the users whose passwords are verified (bench-basic, bench-token, victim)
    for pw in basic-pass-1 token-pass-1 victim-pass-1; do printf '%s' "$pw" | "$GW" hash-password --cost 10; done
    # cost 4 for the bulk users, reused round-robin
    for i in $(seq 1 16); do printf 'bulk-%s' "$i" | "$GW" hash-password --cost 4; done
} >hashes.txt
python3 "$HERE/gen_users.py" "$WORK" "$USERS" hashes.txt
python3 "$HERE/gen_users.py" "$WORK" "$BIG_USERS" hashes.txt
# 1 MiB bodies: bulk.json (uploaded), search-query.json and static/search-page.json (downloaded)
python3 "$HERE/gen_bodies.py" "$WORK"
MIB=1048576
python3 -c 'import json,sys; print(json.dumps({"dataset": "bench-ds", "processed": len(json.load(open(sys.argv[1]))["records"]), "failed": 0}))' \
    bulk.json >static/bulk-answer.json

# ---------------------------------------------------------------- configs
BODY='{"id":"5f3c1e2a-0000-4000-8000-000000000001","name":"bench-ds","task":"TextClassification","owner":"team-a","workspace":"team-a","tags":{},"metadata":{},"created_at":"2023-01-01T00:00:00","last_updated":"2023-01-01T00:00:00","created_by":"admin"}'
nginx_common() { # $1: name
    cat <<EOF
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 8192; }
EOF
}
nginx_http_common() {
    cat <<EOF
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/tmp/body; proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fcgi; uwsgi_temp_path $WORK/tmp/uwsgi; scgi_temp_path $WORK/tmp/scgi;
EOF
}
{
    nginx_common upstream
    echo "http {"
    nginx_http_common
    cat <<EOF
    # each upload's body as the upstream read it (length, also of a chunked one, once read whole)
    log_format bulk '\$content_length|\$http_transfer_encoding|\$request_length|\$status';
    server {
        listen 127.0.0.1:$UP_PORT;
        default_type application/json;
        client_max_body_size 100m;
        client_body_buffer_size 2m;
        location / { return 200 '$BODY'; }
        # Like Argilla, which parses the records first, the upstream answers an upload once it
        # has read the whole body (into memory: mirror_request_body reads it before the content
        # phase; the mirror subrequest itself does nothing).  The static module refuses POST
        # (405); the error page's internal redirect is a GET of the fixed answer.
        location ~ :bulk\$ {
            mirror /bench-null;
            mirror_request_body on;
            error_page 405 =200 /bench-bulk-answer.json;
            root $WORK/static; try_files /bulk-answer.json =404;
        }
        location = /bench-null { internal; return 204; }
        location = /bench-bulk-answer.json {
            internal;
            access_log $WORK/upstream-bulk.log bulk buffer=32k flush=1s;
            root $WORK/static; try_files /bulk-answer.json =404;
        }
        location ~ :search\$ { error_page 405 =200 /bench-search-page.json; return 405; }
        location = /bench-search-page.json { internal; root $WORK/static; try_files /search-page.json =404; }
    }
}
EOF
} >upstream.conf
nginx_key_location() {
    cat <<EOF
            if (\$bench_user = "") { return 401 '{"detail":"unauthenticated"}'; }
            proxy_pass http://argilla;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Argilla-Api-Key "$UP_KEY";
            proxy_set_header X-Forwarded-User \$bench_user;
            proxy_set_header X-Forwarded-For \$remote_addr;
EOF
}
{
    nginx_common nginx-key
    echo "http {"
    nginx_http_common
    cat <<EOF
    map_hash_max_size 65536;
    map_hash_bucket_size 128;
    map \$http_x_argilla_api_key \$bench_user {
        default "";
        include $WORK/nginx-keys-$USERS.map;
    }
    upstream argilla {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    client_max_body_size 100m;
    # NGX_PORT: proxy_buffering and proxy_request_buffering on (nginx's defaults), with buffers
    # that hold a whole 1 MiB body in memory (the defaults, 16 KiB and 8 x 4 KiB, spill the rest
    # to a temporary file).  NGX_STREAM_PORT: both off, every chunk passed on as it arrives.
    client_body_buffer_size 2m;
    proxy_buffers 32 64k;
    proxy_busy_buffers_size 128k;
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
$(nginx_key_location)
        }
    }
    server {
        listen 127.0.0.1:$NGX_STREAM_PORT;
        location / {
            proxy_buffering off;
            proxy_request_buffering off;
$(nginx_key_location)
        }
    }
}
EOF
} >nginx-key.conf
{
    cat <<EOF
{
    admin off
    auto_https off
    storage file_system $WORK/caddy
}
http://127.0.0.1:$CADDY_PORT {
    basicauth {
EOF
    cat "caddy-users-$USERS.txt"
    cat <<EOF
    }
    reverse_proxy 127.0.0.1:$UP_PORT {
        header_up -Authorization
        header_up X-Argilla-Api-Key "$UP_KEY"
        header_up X-Forwarded-User {http.auth.user.id}
        transport http {
            keepalive_idle_conns 64
            keepalive_idle_conns_per_host 64
        }
    }
}
EOF
} >Caddyfile

# haproxy, one thread: as a byte relay (mode tcp: no HTTP parsed, each client connection paired
# with one upstream connection; the floor for any proxy that reads and writes both sockets), and
# as an HTTP proxy checking the key against a map of the same users.
haproxy_common() {
    cat <<EOF
global
    nbthread 1
    maxconn 4096
    pidfile $WORK/$1.pid
defaults
    timeout connect 5s
    timeout client 120s
    timeout server 120s
EOF
}
{
    haproxy_common relay-tcp
    cat <<EOF
    mode tcp
frontend relay
    bind 127.0.0.1:$RELAY_PORT
    default_backend argilla
backend argilla
    server up 127.0.0.1:$UP_PORT
EOF
} >relay-tcp.cfg
{
    haproxy_common haproxy-key
    cat <<EOF
    mode http
    option http-keep-alive
    http-reuse always
frontend keys
    bind 127.0.0.1:$HAP_PORT
    http-request set-var(txn.user) req.hdr(x-argilla-api-key),map($WORK/haproxy-keys-$USERS.map)
    http-request return status 401 content-type application/json string '{"detail":"unauthenticated"}' unless { var(txn.user) -m found }
    http-request del-header authorization
    http-request set-header X-Argilla-Api-Key $UP_KEY
    http-request set-header X-Forwarded-User %[var(txn.user)]
    http-request set-header X-Forwarded-For %[src]
    default_backend argilla
backend argilla
    server up 127.0.0.1:$UP_PORT
EOF
} >haproxy-key.cfg

# ---------------------------------------------------------------- start everything on PROXY_CPU
wait_port() { # $1 port, $2 name, $3 pid
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || die "$2 exited; see $WORK/$2.log"
        sleep 0.1
    done
    die "$2 did not listen on $1 within 10 s; see $WORK/$2.log"
}
start_nginx() { # $1 name, $2 port
    taskset -c "$PROXY_CPU" "$NGINX" -e "$WORK/$1.err" -p "$WORK" -c "$WORK/$1.conf" -g 'daemon off;' \
        >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    eval "${1//-/_}_PID=$!"
    wait_port "$2" "$1" $!
}
start_haproxy() { # $1 name, $2 port
    taskset -c "$PROXY_CPU" "$HAPROXY" -f "$WORK/$1.cfg" -db >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    eval "${1//-/_}_PID=$!"
    wait_port "$2" "$1" $!
}
start_gateway() { # $1 name, $2 port, $3 failures per address, $4 failures per username[, $5 binary]
    env -i PATH="$PATH" HOME="$WORK" RUST_LOG=warn \
        ARGILLA_GATEWAY_LISTEN="127.0.0.1:$2" \
        ARGILLA_GATEWAY_UPSTREAM_URL="http://127.0.0.1:$UP_PORT" \
        ARGILLA_GATEWAY_UPSTREAM_API_KEY="$UP_KEY" \
        ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$WORK/users-$USERS.yml" \
        ARGILLA_LOCAL_AUTH_SECRET_KEY="$SECRET" \
        ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS="$3" \
        ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_USERNAME="$4" \
        taskset -c "$PROXY_CPU" "${5:-$GW}" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    eval "${1//-/_}_PID=$!"
    wait_port "$2" "$1" $!
}
log "starting upstream nginx, nginx peer, Caddy peer and three gateways on CPU $PROXY_CPU"
start_nginx upstream "$UP_PORT"
start_nginx nginx-key "$NGX_PORT"
env -i PATH="$PATH" HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" \
    taskset -c "$PROXY_CPU" caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
PIDS+=($!)
caddy_PID=$!
wait_port "$CADDY_PORT" caddy $!
start_haproxy relay-tcp "$RELAY_PORT"
start_haproxy haproxy-key "$HAP_PORT"
start_gateway gw "$GW_PORT" 100 10                     # defaults
start_gateway gw-att "$GW_ATT_PORT" 100 10             # defaults, attacked
start_gateway gw-open "$GW_OPEN_PORT" 1000000000 1000000000 # limits raised: every attack runs bcrypt
if [ -n "$BASELINE" ]; then
    log "starting the baseline gateway $BASELINE"
    start_gateway gw-old "$GW_OLD_PORT" 100 10 "$BASELINE"
fi

sleep 1
RSS_START=$(awk '/VmRSS/ {print $2}' "/proc/$gw_PID/status") # users loaded, no traffic yet

TOKEN=$(curl -sf -X POST --data-urlencode username=bench-token --data-urlencode password=token-pass-1 \
    "http://127.0.0.1:$GW_PORT/api/security/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') || die "login failed"
KEY=bench-key-0123456789abcdef0123456789ab
BASIC="Basic $(printf 'bench-basic:basic-pass-1' | base64 -w0)"

# scenario name -> "port|header"
declare -A SCEN=(
    [upstream]="$UP_PORT|Accept: application/json"
    [nginx-key]="$NGX_PORT|X-Argilla-Api-Key: $KEY"
    [relay-tcp]="$RELAY_PORT|X-Argilla-Api-Key: $KEY"
    [haproxy-key]="$HAP_PORT|X-Argilla-Api-Key: $KEY"
    [caddy-basic]="$CADDY_PORT|Authorization: $BASIC"
    [gw-key]="$GW_PORT|X-Argilla-Api-Key: $KEY"
    [gw-basic]="$GW_PORT|Authorization: $BASIC"
    [gw-bearer]="$GW_PORT|Authorization: Bearer $TOKEN"
    [gw-att-key]="$GW_ATT_PORT|X-Argilla-Api-Key: $KEY"
    [gw-open-key]="$GW_OPEN_PORT|X-Argilla-Api-Key: $KEY"
    # 1 MiB uploads (:bulk) and downloads (:search), API key
    [upstream-up]="$UP_PORT|Accept: application/json"
    [nginx-up-buf]="$NGX_PORT|X-Argilla-Api-Key: $KEY"
    [nginx-up-stream]="$NGX_STREAM_PORT|X-Argilla-Api-Key: $KEY"
    [gw-up]="$GW_PORT|X-Argilla-Api-Key: $KEY"
    [upstream-down]="$UP_PORT|Accept: application/json"
    [nginx-down-buf]="$NGX_PORT|X-Argilla-Api-Key: $KEY"
    [nginx-down-stream]="$NGX_STREAM_PORT|X-Argilla-Api-Key: $KEY"
    [gw-down]="$GW_PORT|X-Argilla-Api-Key: $KEY"
)
# scenario -> traffic: small (GET ROUTE, 250-byte answer; the default), up (1 MiB POST to
# UP_ROUTE, small answer) or down (small POST to DOWN_ROUTE, 1 MiB answer)
declare -A KIND=(
    [upstream-up]=up [nginx-up-buf]=up [nginx-up-stream]=up [gw-up]=up
    [upstream-down]=down [nginx-down-buf]=down [nginx-down-stream]=down [gw-down]=down
)
# scenario -> PID of the proxy under test (nginx: the master; its worker is its child)
declare -A PROXY_PID=(
    [upstream]=$upstream_PID [nginx-key]=$nginx_key_PID [caddy-basic]=$caddy_PID
    [relay-tcp]=$relay_tcp_PID [haproxy-key]=$haproxy_key_PID
    [gw-key]=$gw_PID [gw-basic]=$gw_PID [gw-bearer]=$gw_PID
    [gw-att-key]=$gw_att_PID [gw-open-key]=$gw_open_PID
    [upstream-up]=$upstream_PID [nginx-up-buf]=$nginx_key_PID [nginx-up-stream]=$nginx_key_PID [gw-up]=$gw_PID
    [upstream-down]=$upstream_PID [nginx-down-buf]=$nginx_key_PID [nginx-down-stream]=$nginx_key_PID [gw-down]=$gw_PID
)
if [ -n "$BASELINE" ]; then # the same traffic through the baseline binary
    for s in key basic bearer up down; do
        case $s in
        key | up | down) hdr="X-Argilla-Api-Key: $KEY" ;;
        basic) hdr="Authorization: $BASIC" ;;
        bearer) hdr="Authorization: Bearer $TOKEN" ;;
        esac
        SCEN[gw-old-$s]="$GW_OLD_PORT|$hdr"
        PROXY_PID[gw-old-$s]=$gw_old_PID
        case $s in up | down) KIND[gw-old-$s]=$s ;; esac
    done
fi
# the request of a scenario, as curl arguments after the URL's port: method, body, route
route_of() { case ${KIND[$1]:-small} in up) echo "$UP_ROUTE" ;; down) echo "$DOWN_ROUTE" ;; *) echo "$ROUTE" ;; esac; }
body_of() { case ${KIND[$1]:-small} in up) echo "$WORK/bulk.json" ;; down) echo "$WORK/search-query.json" ;; esac; }
for s in "${!SCEN[@]}"; do
    port=${SCEN[$s]%%|*} hdr=${SCEN[$s]#*|} body=$(body_of "$s")
    args=()
    [ -z "$body" ] || args=(-X POST -H 'Content-Type: application/json' -H 'Expect:' --data-binary "@$body")
    got=$(curl -s -o "$WORK/answer" -w '%{http_code} %{size_download}' -H "$hdr" "${args[@]}" \
        "http://127.0.0.1:$port$(route_of "$s")")
    [ "${got% *}" = 200 ] || die "$s answers ${got% *}, not 200: $(head -c 300 "$WORK/answer")"
    if [ "${KIND[$s]:-}" = down ]; then
        cmp -s "$WORK/answer" "$WORK/static/search-page.json" || die "$s: the 1 MiB answer arrived altered (${got#* } bytes)"
    fi
done
sleep 1.2 # the upstream's upload log is flushed every second
n_up=$(grep -c . "$WORK/upstream-bulk.log" || true)
n_whole=$(grep -c "^$MIB|" "$WORK/upstream-bulk.log" || true)
[ "$n_up" -ge 1 ] && [ "$n_up" = "$n_whole" ] ||
    die "the upstream was not told of a whole 1 MiB body for every upload: $(sort "$WORK/upstream-bulk.log" | uniq -c | tr '\n' ' ')"

# ---------------------------------------------------------------- measuring
cpu_busy() { # percent busy of PROXY_CPU over 0.5 s
    local a b
    a=$(awk -v c="cpu$PROXY_CPU" '$1==c {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    sleep 0.5
    b=$(awk -v c="cpu$PROXY_CPU" '$1==c {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; all = busy + y[2] - x[2]; print (all > 0) ? int(100 * busy / all) : 0 }'
}
own_busy() { # percent of one CPU the gateways used over 0.5 s (a bcrypt backlog still draining)
    local a=0 b=0 p
    for p in $gw_PID $gw_att_PID $gw_open_PID ${gw_old_PID:-}; do a=$((a + $(ticks "$p"))); done
    sleep 0.5
    for p in $gw_PID $gw_att_PID $gw_open_PID ${gw_old_PID:-}; do b=$((b + $(ticks "$p"))); done
    echo $(((b - a) * 200 / HZ))
}
wait_idle() { # until the gateways' own backlog (bcrypt after an attack) has drained, at most 300 s,
    # then until PROXY_CPU is quiet (someone's build over), at most IDLE_WAIT s
    local i
    for i in $(seq 1 600); do
        [ "$(own_busy)" -le 5 ] && break
    done
    for i in $(seq 1 $((IDLE_WAIT * 2))); do
        [ "$(cpu_busy)" -le 10 ] && return 0
    done
    log "warning: CPU $PROXY_CPU still busy after $IDLE_WAIT s (other processes?); measuring anyway"
}
cpu0_ticks() { awk -v c="cpu$PROXY_CPU" '$1==c {print $2+$3+$4+$7+$8}' /proc/stat; }
HZ=$(getconf CLK_TCK)
family() { echo "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); }
ticks() { # utime+stime of a process and its children, in clock ticks
    local t=0 p
    for p in $(family "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo $t
}
csw() { # voluntary + involuntary context switches of a process and its children
    local p
    for p in $(family "$1"); do cat /proc/"$p"/task/*/status; done | awk '/ctxt_switches/ {s += $2} END {print s}'
}
RAW=$WORK/raw.jsonl
: >"$RAW"
wrk_run() { # $1 scenario, $2 seconds -> JSON line on stdout
    local port=${SCEN[$1]%%|*} hdr=${SCEN[$1]#*|}
    BENCH_BODY_FILE=$(body_of "$1") timeout $(($2 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" \
        -d"$2s" --timeout 5s -s "$HERE/report.lua" -H "$hdr" "http://127.0.0.1:$port$(route_of "$1")" | tail -n 1
}
measure() { # $1 round, $2 label, $3 scenario
    wait_idle
    local json pp=${PROXY_PID[$3]} t0 u0 c0 cost
    t0=$(ticks "$pp") u0=$(ticks "$upstream_PID") c0=$(csw "$pp") k0=$(cpu0_ticks)
    json=$(wrk_run "$3" "$DURATION")
    # CPU time per request of the proxy and of the upstream, and the proxy's context switches
    cost=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); r=max(d["requests"],1); hz=int(sys.argv[5])
print("\"proxy_cpu_us\":%.2f,\"upstream_cpu_us\":%.2f,\"proxy_csw\":%.3f,\"foreign_pct\":%.1f" % (int(sys.argv[2])/hz/r*1e6, int(sys.argv[3])/hz/r*1e6, int(sys.argv[4])/r,
    max(0.0, 100.0 * (1 - (int(sys.argv[2]) + (int(sys.argv[3]) if sys.argv[7] == "0" else 0)) / max(int(sys.argv[6]), 1)))))' \
        "$json" $(($(ticks "$pp") - t0)) $(($(ticks "$upstream_PID") - u0)) $(($(csw "$pp") - c0)) "$HZ" \
        $(($(cpu0_ticks) - k0)) "$([ "$pp" = "$upstream_PID" ] && echo 1 || echo 0)")
    printf '{"round":%d,"scenario":"%s",%s,%s\n' "$1" "$2" "$cost" "${json#\{}" >>"$RAW"
    log "round $1 $2: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f req/s %.0f MiB/s in p50 %.2f ms p99 %.2f ms non2xx %d errors %d" % (d["rps"], d["bytes"] / 1048576 / (d["duration_us"] / 1e6), d["p50_ms"], d["p99_ms"], d["non2xx"], d["connect_err"] + d["read_err"] + d["write_err"] + d["timeouts"]))' "$json")"
}
attacked() { # $1 round, $2 label, $3 scenario, $4 port: API-key load while ATTACK_RATE wrong passwords/s arrive
    wait_idle
    local ajson="$WORK/attack-$2-$1.json" json
    # from 127.0.0.2: the attacker is another client address than the API-key users
    timeout $((DURATION + 20)) taskset -c "$LOAD_CPU" python3 "$HERE/attack.py" 127.0.0.1 "$4" "$ROUTE" \
        "$ATTACK_RATE" $((DURATION + 2)) victim wrong-password 127.0.0.2 >"$ajson" &
    local apid=$!
    PIDS+=($apid)
    sleep 1
    local pp=${PROXY_PID[$3]} t0 u0 c0 cost
    t0=$(ticks "$pp") u0=$(ticks "$upstream_PID") c0=$(csw "$pp") k0=$(cpu0_ticks)
    json=$(wrk_run "$3" "$DURATION")
    cost=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); r=max(d["requests"],1); hz=int(sys.argv[5])
print("\"proxy_cpu_us\":%.2f,\"upstream_cpu_us\":%.2f,\"proxy_csw\":%.3f,\"foreign_pct\":%.1f" % (int(sys.argv[2])/hz/r*1e6, int(sys.argv[3])/hz/r*1e6, int(sys.argv[4])/r,
    max(0.0, 100.0 * (1 - (int(sys.argv[2]) + (int(sys.argv[3]) if sys.argv[7] == "0" else 0)) / max(int(sys.argv[6]), 1)))))' \
        "$json" $(($(ticks "$pp") - t0)) $(($(ticks "$upstream_PID") - u0)) $(($(csw "$pp") - c0)) "$HZ" \
        $(($(cpu0_ticks) - k0)) "$([ "$pp" = "$upstream_PID" ] && echo 1 || echo 0)")
    wait $apid || true
    printf '{"round":%d,"scenario":"%s","attack":%s,%s,%s\n' "$1" "$2" "$(cat "$ajson")" "$cost" "${json#\{}" >>"$RAW"
    log "round $1 $2: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f req/s p99 %.2f ms non2xx %d" % (d["rps"], d["p99_ms"], d["non2xx"]))' "$json") attack $(cat "$ajson")"
}

log "warm-up (2 s each)"
for s in "${!SCEN[@]}"; do
    [ -z "${SCENARIOS:-}" ] || [[ " $SCENARIOS " == *" $s "* ]] || continue
    wrk_run "$s" 2 >/dev/null
done
sleep 1
RSS_WARM=$(awk '/VmRSS/ {print $2}' "/proc/$gw_PID/status")

ORDER=(upstream nginx-key relay-tcp haproxy-key caddy-basic gw-key gw-basic gw-bearer attack-default attack-raised
    upstream-up nginx-up-buf nginx-up-stream gw-up upstream-down nginx-down-buf nginx-down-stream gw-down)
[ -z "$BASELINE" ] || ORDER+=(gw-old-key gw-old-basic gw-old-bearer gw-old-up gw-old-down)
if [ -n "${SCENARIOS:-}" ]; then
    kept=()
    for s in "${ORDER[@]}"; do [[ " $SCENARIOS " == *" $s "* ]] && kept+=("$s"); done
    [ ${#kept[@]} -gt 0 ] || die "SCENARIOS names none of: ${ORDER[*]}"
    ORDER=("${kept[@]}")
fi
for round in $(seq 1 "$ROUNDS"); do
    # rotate the order each round so no scenario always runs first or last
    n=${#ORDER[@]}
    for i in $(seq 0 $((n - 1))); do
        s=${ORDER[$(((i + round - 1) % n))]}
        case $s in
        attack-default)
            measure "$round" "gw-att-key-quiet" gw-att-key
            attacked "$round" "gw-att-key-attacked" gw-att-key "$GW_ATT_PORT" ;;
        attack-raised)
            measure "$round" "gw-open-key-quiet" gw-open-key
            attacked "$round" "gw-open-key-attacked" gw-open-key "$GW_OPEN_PORT" ;;
        *) measure "$round" "$s" "$s" ;;
        esac
    done
done
wait_idle
RSS_END=$(awk '/VmRSS/ {print $2}' "/proc/$gw_PID/status")
HWM_END=$(awk '/VmHWM/ {print $2}' "/proc/$gw_PID/status")
RSS_OPEN=$(awk '/VmRSS/ {print $2}' "/proc/$gw_open_PID/status")

# ---------------------------------------------------------------- users file load time
log "load time of a $BIG_USERS-user file (argilla-gateway check)"
BIG=$WORK/users-$BIG_USERS.yml
env ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$BIG" ARGILLA_LOCAL_AUTH_SECRET_KEY="$SECRET" \
    "$GW" check >"$WORK/check.log" 2>&1 || die "check of the big file failed: $(tail -3 "$WORK/check.log")"
ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$BIG" ARGILLA_LOCAL_AUTH_SECRET_KEY="$SECRET" \
    taskset -c "$PROXY_CPU" hyperfine -N --warmup 1 --runs 10 --export-json "$WORK/load.json" \
    "$GW check" >"$WORK/hyperfine.log" 2>&1 || die "hyperfine failed: $(tail -3 "$WORK/hyperfine.log")"

# ---------------------------------------------------------------- report
{
    echo "nproc=$(nproc --all)"
    echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    echo "caddy=$(caddy version 2>&1 | head -1)"
    echo "haproxy=HAProxy $("$HAPROXY" -v 2>&1 | head -1 | awk '{print $3}')"
    echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $1" "$2}')"
    echo "rustc=$(rustc --version 2>/dev/null || echo '?')"
    echo "gateway=$(cd "$ROOT" && git log -1 --format=%h -- src Cargo.toml Cargo.lock 2>/dev/null || echo '?')$(cd "$ROOT" && [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (+ uncommitted changes)')"
    echo "baseline=${GATEWAY_BASELINE_NAME:-$(basename "${BASELINE:-none}")}"
    echo "upload_bytes=$MIB"
    echo "download_bytes=$(stat -c %s "$WORK/static/search-page.json")"
    echo "upstream_uploads=$(grep -c . "$WORK/upstream-bulk.log" || true)"
    echo "upstream_uploads_whole=$(grep -c "^$MIB|" "$WORK/upstream-bulk.log" || true)"
    echo "idle_wait=$IDLE_WAIT"
    echo "rss_start_kb=$RSS_START"
    echo "rss_warm_kb=$RSS_WARM"
    echo "rss_end_kb=$RSS_END"
    echo "hwm_end_kb=$HWM_END"
    echo "rss_open_end_kb=$RSS_OPEN"
    echo "users=$USERS"
    echo "big_users=$BIG_USERS"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "connections=$CONNECTIONS"
    echo "attack_rate=$ATTACK_RATE"
    echo "command=ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS ATTACK_RATE=$ATTACK_RATE USERS=$USERS BIG_USERS=$BIG_USERS IDLE_WAIT=$IDLE_WAIT${BASELINE:+ GATEWAY_BASELINE_BIN=$BASELINE}${SCENARIOS:+ SCENARIOS=\"$SCENARIOS\"} bench/run.sh"
} >"$WORK/meta.txt"
python3 "$HERE/summarize.py" "$RAW" "$WORK/meta.txt" "$WORK/load.json" >"$OUT/results.md"
cp "$RAW" "$OUT/raw.jsonl"
cat "$OUT/results.md"
log "done: $OUT/results.md (raw: $OUT/raw.jsonl, logs: $WORK)"
