#!/usr/bin/env bash
# Password checks under a busy host and under a flood of wrong passwords. See bench/README.md.
# Usage: bench/passwords.sh   (knobs: the variables below, from the environment)
#
# (a) Logins (POST /api/security/token, right password, bcrypt cost 12, a distinct user each
#     time so that every one runs bcrypt) while `stress --cpu <every CPU>` keeps every CPU busy at
#     normal priority, started from this same session (no scheduler group of its own): the
#     gateway runs unpinned with its defaults. Target: every answer 200, p99 <= 2 s.
# (b) API-key load (wrk on CPU 1) on a gateway pinned with its upstream nginx to CPU 0, quiet and
#     then while attack.py (CPU 1) sends ATTACK_RATE wrong-password Basic requests/s from 250
#     loopback addresses, each for a distinct unknown username (bcrypt cost 12 each: the users
#     file's usual cost), with the default failure budgets. Each round starts the flood, lets it
#     run ATTACK_WARMUP s, measures, lets the flood end and drain, and measures quiet again; the
#     flood is compared with the mean of the quiet measurements just before and after it. Targets:
#     attacked p99 <= 1.5x quiet p99, attacked req/s >= 0.9x quiet req/s (medians of rounds).
# Every process this script starts is killed by PID on exit; all traffic goes to 127.0.0.1;
# every load is bounded in count and time.
set -euo pipefail

LOGINS=${LOGINS:-20}               # (a) logins, one every LOGIN_EVERY seconds
LOGIN_EVERY=${LOGIN_EVERY:-4}
ROUNDS=${ROUNDS:-5}                # (b) rounds of quiet + attacked
DURATION=${DURATION:-10}           # (b) seconds per measurement
ATTACK_WARMUP=${ATTACK_WARMUP:-10} # (b) seconds of flood before its measurement
ATTACK_RATE=${ATTACK_RATE:-200}
CONNECTIONS=${CONNECTIONS:-64}
BASE_PORT=${BASE_PORT:-18180}      # ports BASE_PORT+1 .. +5 on 127.0.0.1
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
WORK=$OUT/passwords
GW=${GATEWAY_BIN:-$ROOT/target/release/argilla-gateway}
UP_KEY=bench-upstream-service-key
SECRET=bench-secret-key-0123456789abcdef
KEY=bench-key-0123456789abcdef0123456789ab
ROUTE='/api/datasets/bench-ds?workspace=team-a'
UP_PORT=$((BASE_PORT + 1)) GW_A_PORT=$((BASE_PORT + 2)) GW_B_PORT=$((BASE_PORT + 3))
METRICS_A=$((BASE_PORT + 4)) METRICS_B=$((BASE_PORT + 5))

log() { printf '[passwords %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- packages (only when missing)
# shellcheck source=packages.sh
source "$HERE/packages.sh"
need_packages nginx=nginx wrk=wrk stress=stress curl=curl python3=python3 taskset=util-linux
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
CPUS=$(nproc --all)
[ "$CPUS" -ge 2 ] || die "needs 2 CPUs (proxy on $PROXY_CPU, load on $LOAD_CPU)"

if [ -z "${GATEWAY_BIN:-}" ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
fi
[ -x "$GW" ] || die "no gateway binary at $GW"

# ---------------------------------------------------------------- processes (killed on exit)
PIDS=()
stop() { # $1: a PID this script started; its children first (stress forks its workers)
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill "$child" 2>/dev/null || true; done
    kill "$1" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $UP_PORT $GW_A_PORT $GW_B_PORT $METRICS_A $METRICS_B; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use; set BASE_PORT"; fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
rm -rf "$WORK"
mkdir -p "$WORK/tmp"
cd "$WORK"

# ---------------------------------------------------------------- users: every hash at cost 12
log "hashing (bcrypt cost 12)"
H12=$(printf 'login-pass-1' | "$GW" hash-password --cost 12)
{
    printf -- "- username: bench-key\n  hashed_password: '%s'\n  api_key: %s\n  workspaces: [team-a]\n" "$H12" "$KEY"
    for i in $(seq 1 "$LOGINS"); do
        printf -- "- username: login-%03d\n  hashed_password: '%s'\n  api_key: login-key-%03d-0123456789abcdef\n" "$i" "$H12" "$i"
    done
} >users.yml

BODY='{"name":"bench-ds","workspace":"team-a"}'
cat >upstream.conf <<EOF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/tmp/body; proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fcgi; uwsgi_temp_path $WORK/tmp/uwsgi; scgi_temp_path $WORK/tmp/scgi;
    server {
        listen 127.0.0.1:$UP_PORT;
        default_type application/json;
        location / { return 200 '$BODY'; }
    }
}
EOF

wait_port() { # $1 port, $2 name, $3 pid
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || die "$2 exited; see $WORK/$2.log"
        sleep 0.1
    done
    die "$2 did not listen on $1 within 10 s"
}
start_gateway() { # $1 name, $2 port, $3 metrics port, $4...: command prefix (taskset or nothing)
    local name=$1 port=$2 metrics=$3
    shift 3
    env -i PATH="$PATH" HOME="$WORK" RUST_LOG=warn \
        ARGILLA_GATEWAY_LISTEN="127.0.0.1:$port" \
        ARGILLA_GATEWAY_METRICS_LISTEN="127.0.0.1:$metrics" \
        ARGILLA_GATEWAY_UPSTREAM_URL="http://127.0.0.1:$UP_PORT" \
        ARGILLA_GATEWAY_UPSTREAM_API_KEY="$UP_KEY" \
        ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$WORK/users.yml" \
        ARGILLA_LOCAL_AUTH_SECRET_KEY="$SECRET" \
        "$@" "$GW" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" "$name" $!
}
metric() { # $1 metrics port, $2 name
    curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}

taskset -c "$PROXY_CPU" "$NGINX" -e "$WORK/upstream.err" -p "$WORK" -c "$WORK/upstream.conf" \
    -g 'daemon off;' >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" upstream $!
start_gateway gw-a "$GW_A_PORT" "$METRICS_A"                      # (a): unpinned, defaults
start_gateway gw-b "$GW_B_PORT" "$METRICS_B" taskset -c "$PROXY_CPU" # (b): CPU 0 with nginx
UP_PID=${PIDS[0]} GW_B_PID=${PIDS[2]}

# ---------------------------------------------------------------- (a) logins on a busy host
log "(a) $LOGINS logins, one every $LOGIN_EVERY s, while stress --cpu $CPUS keeps every CPU busy"
A_SECONDS=$((LOGINS * LOGIN_EVERY + 40))
stress --cpu "$CPUS" --timeout "$A_SECONDS" >"$WORK/stress.log" 2>&1 &
STRESS_PID=$!
PIDS+=($STRESS_PID)
sleep 2
STAT0=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
: >"$WORK/logins.txt"
for i in $(seq 1 "$LOGINS"); do
    started=$(date +%s.%N)
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 30 \
        --data-urlencode "username=$(printf 'login-%03d' "$i")" --data-urlencode password=login-pass-1 \
        "http://127.0.0.1:$GW_A_PORT/api/security/token" >>"$WORK/logins.txt" || echo "000 30" >>"$WORK/logins.txt"
    left=$(python3 -c "import sys,time; print(max(0.0, $started + $LOGIN_EVERY - time.time()))")
    sleep "$left"
done
STAT1=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
BUSY_A=$(awk -v a="$STAT0" -v b="$STAT1" 'BEGIN { split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; all = busy + y[2] - x[2]; printf "%.1f", (all > 0) ? 100 * busy / all : 0 }')
stop $STRESS_PID
CHECKS_A=$(metric "$METRICS_A" argilla_gateway_bcrypt_checks_total)

# ---------------------------------------------------------------- (b) API keys under a flood
threads_ticks() { # $1 comm prefix: CPU ticks of the gateway's threads whose name starts with it
    local t=0 task
    for task in /proc/"$GW_B_PID"/task/*; do
        case $(cat "$task/comm" 2>/dev/null) in
        "$1"*) t=$((t + $(awk '{print $14 + $15}' "$task/stat"))) ;;
        esac
    done
    echo $t
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_ticks() { # the upstream nginx: master and worker
    local t=0 p
    for p in $1 $(cat /proc/"$1"/task/*/children 2>/dev/null); do t=$((t + $(proc_ticks "$p"))); done
    echo $t
}
cpu0_ticks() { awk -v c="cpu$PROXY_CPU" '$1==c {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
snapshot() { # CPU ticks: CPU 0 busy, CPU 0 all, gateway, upstream nginx, bcrypt threads, overflow threads
    echo "$(cpu0_ticks) $(proc_ticks "$GW_B_PID") $(nginx_ticks "$UP_PID") $(threads_ticks bcrypt-overflow) $(($(threads_ticks bcrypt-) - $(threads_ticks bcrypt-overflow)))"
}
shares() { # $1, $2: snapshots -> JSON fields: shares of CPU 0's time
    python3 -c 'import sys; a=list(map(int, sys.argv[1].split())); b=list(map(int, sys.argv[2].split())); d=[y-x for x,y in zip(a,b)]; all_=max(d[1],1)
print("\"cpu0_busy_pct\":%.1f,\"foreign_pct\":%.1f,\"bcrypt_normal_pct\":%.1f,\"bcrypt_nice19_pct\":%.1f" % (100*d[0]/all_, max(0.0, 100*(d[0]-d[2]-d[3])/all_), 100*d[5]/all_, 100*d[4]/all_))' "$1" "$2"
}
wrk_run() { # $1 seconds -> one JSON line
    timeout $(($1 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$1s" --timeout 5s \
        -s "$HERE/report.lua" -H "X-Argilla-Api-Key: $KEY" "http://127.0.0.1:$GW_B_PORT$ROUTE" | tail -n 1
}
cpu_busy() { # percent busy of PROXY_CPU over 0.5 s
    local a b
    a=$(awk -v c="cpu$PROXY_CPU" '$1==c {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    sleep 0.5
    b=$(awk -v c="cpu$PROXY_CPU" '$1==c {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; all = busy + y[2] - x[2]; print (all > 0) ? int(100 * busy / all) : 0 }'
}
wait_idle() { # until PROXY_CPU is quiet (someone else's build over), at most 60 s
    local i
    for i in $(seq 1 120); do
        [ "$(cpu_busy)" -le 10 ] && return 0
    done
    log "warning: CPU $PROXY_CPU still busy after 60 s (other processes?); measuring anyway"
}
log "(b) warm-up"
wrk_run 3 >/dev/null
: >"$WORK/raw.jsonl"
# Each flood is measured between two quiet measurements (the one before it and the one after
# it, which is also the next round's "before"), and compared with their mean: the speed of this
# shared machine drifts by 2x within minutes, and a drift then moves both sides alike.
wait_idle
s0=$(snapshot)
quiet=$(wrk_run "$DURATION")
quiet_cpu=$(shares "$s0" "$(snapshot)")
for round in $(seq 1 "$ROUNDS"); do
    checks0=$(metric "$METRICS_B" argilla_gateway_bcrypt_checks_total)
    timeout $((ATTACK_WARMUP + DURATION + 20)) taskset -c "$LOAD_CPU" python3 "$HERE/attack.py" \
        127.0.0.1 "$GW_B_PORT" "$ROUTE" "$ATTACK_RATE" $((ATTACK_WARMUP + DURATION + 1)) \
        'nobody-{i}' wrong-password 127.0.1.1-250 >"$WORK/attack-$round.json" &
    apid=$!
    PIDS+=($apid)
    sleep "$ATTACK_WARMUP"
    checks1=$(metric "$METRICS_B" argilla_gateway_bcrypt_checks_total)
    s0=$(snapshot)
    attacked=$(wrk_run "$DURATION")
    attacked_cpu=$(shares "$s0" "$(snapshot)")
    checks2=$(metric "$METRICS_B" argilla_gateway_bcrypt_checks_total)
    wait $apid || true
    sleep 6 # the flood's queue drains (at most 5 s of waiting, then refused)
    wait_idle
    s0=$(snapshot)
    after=$(wrk_run "$DURATION")
    after_cpu=$(shares "$s0" "$(snapshot)")
    printf '{"round":%d,"quiet":%s,"attacked":%s,"after":%s,"quiet_cpu":{%s},"attacked_cpu":{%s},"after_cpu":{%s},"attack":%s,"checks_warmup":%d,"checks_measured":%d}\n' \
        "$round" "$quiet" "$attacked" "$after" "$quiet_cpu" "$attacked_cpu" "$after_cpu" "$(cat "$WORK/attack-$round.json")" \
        $((checks1 - checks0)) $((checks2 - checks1)) >>"$WORK/raw.jsonl"
    log "round $round: $(tail -n 1 "$WORK/raw.jsonl" | python3 -c 'import json,sys; d=json.load(sys.stdin); q,a,b=d["quiet"],d["attacked"],d["after"]
print("quiet %.0f req/s p99 %.2f ms; attacked %.0f req/s p99 %.2f ms (bcrypt %.1f%% + nice-19 %.1f%% of CPU 0); quiet after %.0f req/s p99 %.2f ms; foreign %.1f / %.1f / %.1f%%; bcrypt %d checks in %s s" % (q["rps"], q["p99_ms"], a["rps"], a["p99_ms"], d["attacked_cpu"]["bcrypt_normal_pct"], d["attacked_cpu"]["bcrypt_nice19_pct"], b["rps"], b["p99_ms"], d["quiet_cpu"]["foreign_pct"], d["attacked_cpu"]["foreign_pct"], d["after_cpu"]["foreign_pct"], d["checks_measured"], sys.argv[1]))' "$DURATION")"
    quiet=$after quiet_cpu=$after_cpu
done

# ---------------------------------------------------------------- report
python3 - "$WORK/logins.txt" "$WORK/raw.jsonl" "$CHECKS_A" "$BUSY_A" "$LOGINS" "$LOGIN_EVERY" "$CPUS" "$ATTACK_RATE" \
    "$DURATION" "$ATTACK_WARMUP" "$ROUNDS" "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(uname -r)" "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" >"$OUT/passwords.md" <<'EOF'
import json, statistics, sys
logins_file, raw_file, checks_a, busy_a, logins, every, cpus, rate, duration, warmup, rounds, rev, kernel, cpu = sys.argv[1:]
logins_rows = [line.split() for line in open(logins_file) if line.strip()]
codes = [r[0] for r in logins_rows]
times = sorted(float(r[1]) for r in logins_rows)
def pct(xs, p):
    return xs[min(len(xs) - 1, int(p * len(xs)))]
ok = codes.count("200")
p99 = pct(times, 0.99)
rows = [json.loads(line) for line in open(raw_file)]
def around(r, k):  # the mean of the quiet measurements before and after the flood
    return (r["quiet"][k] + r["after"][k]) / 2
p99_ratio = [r["attacked"]["p99_ms"] / around(r, "p99_ms") for r in rows]
rps_ratio = [r["attacked"]["rps"] / around(r, "rps") for r in rows]
med = statistics.median
answers = {}
for r in rows:
    for k, v in r["attack"].items():
        if k.isdigit() or k in ("sent", "failed"):
            answers[k] = answers.get(k, 0) + v
checks_rate = med(r["checks_measured"] / float(duration) for r in rows)
print("### (a) Logins while every CPU is busy\n")
print(f"{logins} logins (`POST /api/security/token`, right password, bcrypt cost 12, a distinct user each, so each runs bcrypt), one every {every} s, while `stress --cpu {cpus}` (normal priority, same session) keeps every CPU busy; gateway unpinned, defaults; {checks_a} bcrypt checks run; all CPUs {busy_a}% busy meanwhile.\n")
print("| answered 200 | p50 s | p99 s | max s |")
print("|---:|---:|---:|---:|")
print(f"| {ok} of {len(codes)} | {pct(times, 0.5):.2f} | {p99:.2f} | {times[-1]:.2f} |\n")
print(f"### (b) API keys while {rate} wrong passwords/s arrive\n")
print(f"Gateway and upstream nginx on CPU 0, `wrk -t1 -c64` with an API key and `attack.py` on CPU 1. Each of {rounds} rounds: {duration} s quiet, then the flood ({rate} req/s of Basic `nobody-<n>:wrong-password`, a distinct unknown username each, from 250 loopback addresses; bcrypt cost 12 each), {warmup} s of it, then {duration} s measured with it, then {duration} s quiet again after it has drained (the next round's quiet before). Default budgets. Ratios are per round: attacked ÷ the mean of the quiet measurements before and after; medians over rounds.\n")
print("| round | quiet req/s: before / after | quiet p99 ms: before / after | attacked req/s | attacked p99 ms | req/s ratio | p99 ratio | bcrypt checks/s | bcrypt % of CPU 0: normal + nice 19 | foreign % of CPU 0: before / attacked / after |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r, pr, rr in zip(rows, p99_ratio, rps_ratio):
    q, a, b, qc, ac, bc = r["quiet"], r["attacked"], r["after"], r["quiet_cpu"], r["attacked_cpu"], r["after_cpu"]
    print(f"| {r['round']} | {q['rps']:,.0f} / {b['rps']:,.0f} | {q['p99_ms']:.2f} / {b['p99_ms']:.2f} | {a['rps']:,.0f} | {a['p99_ms']:.2f} | {rr:.3f} | {pr:.2f} | {r['checks_measured'] / float(duration):.1f} | {ac['bcrypt_normal_pct']:.1f} + {ac['bcrypt_nice19_pct']:.1f} | {qc['foreign_pct']:.1f} / {ac['foreign_pct']:.1f} / {bc['foreign_pct']:.1f} |")
print(f"| **median** | {med(around(r, 'rps') for r in rows):,.0f} (mean of both) | {med(around(r, 'p99_ms') for r in rows):.2f} (mean of both) | {med(r['attacked']['rps'] for r in rows):,.0f} | {med(r['attacked']['p99_ms'] for r in rows):.2f} | **{med(rps_ratio):.3f}** | **{med(p99_ratio):.2f}** | {checks_rate:.1f} | {med(r['attacked_cpu']['bcrypt_normal_pct'] for r in rows):.1f} + {med(r['attacked_cpu']['bcrypt_nice19_pct'] for r in rows):.1f} | {med(r['quiet_cpu']['foreign_pct'] for r in rows):.1f} / {med(r['attacked_cpu']['foreign_pct'] for r in rows):.1f} / {med(r['after_cpu']['foreign_pct'] for r in rows):.1f} |\n")
print("Foreign: CPU 0 time spent by neither the gateway nor the upstream nginx (other processes on the shared machine); it moves both req/s and p99.\n")
print("Attacker's answers (all rounds): " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())) + ".\n")
print("| target | measured | verdict |")
print("|---|---|---|")
print(f"| (a) right password, cost 12, every CPU busy: all 200, p99 <= 2 s | {ok}/{len(codes)} 200, p99 {p99:.2f} s | {'met' if ok == len(codes) and p99 <= 2 else '**missed**'} |")
print(f"| (b) API-key p99 under the flood <= 1.5x quiet | {med(p99_ratio):.2f}x | {'met' if med(p99_ratio) <= 1.5 else '**missed**'} |")
print(f"| (b) API-key req/s under the flood >= 0.9x quiet | {med(rps_ratio):.3f}x | {'met' if med(rps_ratio) >= 0.9 else '**missed**'} |\n")
print(f"Machine: {cpus} CPUs ({cpu}), kernel {kernel}; gateway {rev}.\n")
print(f"Command: `LOGINS={logins} LOGIN_EVERY={every} ROUNDS={rounds} DURATION={duration} ATTACK_WARMUP={warmup} ATTACK_RATE={rate} bench/passwords.sh`")
EOF
cat "$OUT/passwords.md"
log "done: $OUT/passwords.md (raw: $WORK)"
