#!/usr/bin/env bash
# End-to-end suite: the gateway in front of a real Argilla 1.5.1 server (with the osmem-server
# search emulator), driven by the real Argilla Python client and the real web app in Chromium.
#
# Installs what it needs under .e2e/ (gitignored), starts everything on free loopback ports,
# runs every scenario, stops what it started (by process id), and prints one summary line:
#   e2e: N passed, M failed
# See tests/e2e/README.md. Environment knobs:
#   E2E_ARTIFACTS_DIR  where the screenshot goes (default .e2e/artifacts)
#   E2E_GATEWAY_BIN    use this gateway binary instead of `cargo build --release --locked`
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../deploy/processes.sh
source "$ROOT/deploy/processes.sh"
HERE=$ROOT/tests/e2e
WORK=$ROOT/.e2e
RUN=$WORK/run
LOGS=$WORK/logs
ARTIFACTS=${E2E_ARTIFACTS_DIR:-$WORK/artifacts}
STARTED=$(date +%s)

say() { printf 'e2e: %s\n' "$*" >&2; }
die() {
  printf 'e2e: ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- processes we started
PIDS=()
NAMES=()
stop_all() {
  stop_pids 5 PIDS NAMES
  PIDS=()
  NAMES=()
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if ((rc != 0)) && [[ -z ${SUMMARY_PRINTED:-} ]]; then
    say "logs: $LOGS"
    echo "e2e: aborted before the scenarios finished (exit $rc)"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOGFILE CMD...: runs CMD in the background (its own process group is not needed:
# every command here is a single process, which we stop by its pid).
start() {
  local name=$1 logfile=$2
  shift 2
  "$@" >"$logfile" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  say "started $name (pid $!), log $logfile"
}

# wait_http NAME URL SECONDS: poll URL until it answers 2xx; fail if the process died or time ran out.
wait_http() {
  local name=$1 url=$2 limit=$3 pid=${WAIT_PID:-${PIDS[-1]}} deadline
  deadline=$(($(date +%s) + limit))
  until "$CLIENT_PY" - "$url" <<'EOF' 2>/dev/null; do
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "$name exited before it was ready (log: $LOGS/$name.log)"
    fi
    if (($(date +%s) >= deadline)); then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "$name not ready at $url after ${limit}s (log: $LOGS/$name.log)"
    fi
    sleep 0.2
  done
  say "$name ready at $url"
}

# ---------------------------------------------------------------- prerequisites
# find_python and ensure_venv, shared with deploy/local.sh.
# shellcheck source=../../deploy/python-env.sh
source "$ROOT/deploy/python-env.sh"

PY310=$(find_python 3.10)
[[ -n $PY310 ]] || die "Python 3.10 not found (looked in \$(pyenv root)/versions/3.10.* and PATH). The Argilla 1.5.1 server needs it: install it with 'pyenv install 3.10'."
PY311=$(find_python 3.11)
[[ -n $PY311 ]] || die "Python 3.11 not found (looked in \$(pyenv root)/versions/3.11.* and PATH). The Argilla 1.5.1 client runs on it."
command -v node >/dev/null || die "node (>= 20) not found; install Node.js 20"
command -v npm >/dev/null || die "npm not found; install Node.js 20 with npm"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
((NODE_MAJOR >= 20)) || die "node $(node -v) is too old: playwright-core needs node >= 20"
for module in venv ensurepip; do
  "$PY310" -c "import $module" 2>/dev/null || die "$PY310 lacks the '$module' module"
  "$PY311" -c "import $module" 2>/dev/null || die "$PY311 lacks the '$module' module"
done

mkdir -p "$WORK" "$LOGS" "$ARTIFACTS"
rm -rf "$RUN" "$LOGS"/*.log "$ARTIFACTS/dataset-list.png" "$ARTIFACTS/dataset-list-sso.png"
mkdir -p "$RUN"

# ---------------------------------------------------------------- installs (idempotent)
ensure_venv "$WORK/venv-server" "$PY310" "$ROOT/deploy/requirements-argilla.txt" "$LOGS"
ensure_venv "$WORK/venv-client" "$PY311" "$HERE/requirements-client.txt" "$LOGS"
SERVER_PY=$WORK/venv-server/bin/python
CLIENT_PY=$WORK/venv-client/bin/python

OSMEM_BIN=$("$SERVER_PY" -c 'import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')
[[ -f $OSMEM_BIN ]] || die "osmem-server binary not found at $OSMEM_BIN"
[[ -x $OSMEM_BIN ]] || chmod +x "$OSMEM_BIN"

NODE_DIR=$WORK/node
lock_sum=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ -f $NODE_DIR/.e2e-installed && "$(cat "$NODE_DIR/.e2e-installed")" == "$lock_sum" && -d $NODE_DIR/node_modules/playwright-core ]]; then
  say "reusing $NODE_DIR"
else
  say "installing npm packages into $NODE_DIR"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --ignore-scripts >"$LOGS/npm.log" 2>&1) ||
    {
      tail -n 30 "$LOGS/npm.log" >&2
      die "npm ci failed (log: $LOGS/npm.log)"
    }
  echo "$lock_sum" >"$NODE_DIR/.e2e-installed"
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  command -v apt-get >/dev/null || die "chromium is missing and apt-get is not available to install it"
  [[ $(id -u) == 0 ]] || die "chromium is missing: run 'apt-get install chromium chromium-driver' as root"
  say "installing Debian's chromium and chromium-driver with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  {
    apt-get -o DPkg::Lock::Timeout=300 update -q &&
      apt-get -o DPkg::Lock::Timeout=300 install -y -q chromium chromium-driver
  } </dev/null >"$LOGS/apt.log" 2>&1 ||
    {
      tail -n 30 "$LOGS/apt.log" >&2
      die "apt-get install chromium chromium-driver failed (log: $LOGS/apt.log)"
    }
fi
CHROMIUM=$(command -v chromium)

# The OpenID Provider of the single sign-on scenario: tests/oidc/provider.mjs (panva's
# oidc-provider), installed the way tests/oidc.rs installs it.
OIDC_DIR=$ROOT/tests/oidc
oidc_lock_stamp=$OIDC_DIR/node_modules/.argilla-gateway-lock
if [[ -f $OIDC_DIR/node_modules/oidc-provider/package.json ]] && cmp -s "$OIDC_DIR/package-lock.json" "$oidc_lock_stamp"; then
  say "reusing $OIDC_DIR/node_modules"
else
  say "installing the OpenID Provider's npm packages into $OIDC_DIR/node_modules"
  (cd "$OIDC_DIR" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm-oidc.log" 2>&1) ||
    {
      tail -n 30 "$LOGS/npm-oidc.log" >&2
      die "npm ci in tests/oidc failed (log: $LOGS/npm-oidc.log)"
    }
  cp "$OIDC_DIR/package-lock.json" "$oidc_lock_stamp"
fi

if [[ -n ${E2E_GATEWAY_BIN:-} ]]; then
  GATEWAY_BIN=$E2E_GATEWAY_BIN
else
  command -v cargo >/dev/null || die "cargo not found: needed to build the gateway"
  say "building the gateway (cargo build --release --locked)"
  (cd "$ROOT" && cargo build --release --locked </dev/null >"$LOGS/cargo.log" 2>&1) ||
    {
      tail -n 40 "$LOGS/cargo.log" >&2
      die "cargo build --release --locked failed (log: $LOGS/cargo.log)"
    }
  GATEWAY_BIN=$ROOT/target/release/argilla-gateway
fi
[[ -x $GATEWAY_BIN ]] || die "gateway binary $GATEWAY_BIN is missing"
say "prerequisites ready after $(($(date +%s) - STARTED))s"

# ---------------------------------------------------------------- ports, users, secrets
# Two stacks, each its own osmem, upstream and gateway: the gateway's `service` mode (every
# scenario) and its `passthrough` mode (scenario 4: the upstream's users follow the file). Plus,
# for the single sign-on scenario, an OpenID Provider and a third gateway (service mode, in front
# of the service stack's upstream) with [oidc] on and password login off.
read -r ES_PORT UPSTREAM_PORT GATEWAY_PORT PT_ES_PORT PT_UPSTREAM_PORT PT_GATEWAY_PORT IDP_PORT \
  SSO_GATEWAY_PORT < <("$CLIENT_PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
ES_URL=http://127.0.0.1:$ES_PORT
UPSTREAM_URL=http://127.0.0.1:$UPSTREAM_PORT
GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT
PT_RUN=$RUN/passthrough
PT_ES_URL=http://127.0.0.1:$PT_ES_PORT
PT_UPSTREAM_URL=http://127.0.0.1:$PT_UPSTREAM_PORT
PT_GATEWAY_URL=http://127.0.0.1:$PT_GATEWAY_PORT
mkdir -p "$PT_RUN"

"$CLIENT_PY" "$HERE/gen_fixture.py" "$RUN" "$GATEWAY_URL" "$UPSTREAM_URL" service "$LOGS/upstream.log"
"$CLIENT_PY" "$HERE/gen_fixture.py" "$PT_RUN" "$PT_GATEWAY_URL" "$PT_UPSTREAM_URL" passthrough \
  "$LOGS/upstream-passthrough.log"
# shellcheck source=/dev/null
source "$RUN/secrets.env"
PT_GATEWAY_SECRET_KEY=$(sed -n 's/^GATEWAY_SECRET_KEY=//p' "$PT_RUN/secrets.env")

# The SSO gateway's own users file: a copy of the service stack's as generated (alice, with the
# workspaces team-a and team-b and the e-mail alice@example.com of the provider's account alice;
# bob; admin), untouched by the scenarios that edit the service stack's.
SSO_RUN=$RUN/sso
IDP_URL=http://127.0.0.1:$IDP_PORT
SSO_GATEWAY_URL=http://127.0.0.1:$SSO_GATEWAY_PORT
mkdir -p "$SSO_RUN/state"
cp "$RUN/gateway-users.yml" "$SSO_RUN/gateway-users.yml"
read -r SSO_GATEWAY_SECRET_KEY SSO_CLIENT_SECRET < <("$CLIENT_PY" -c 'import secrets; print(secrets.token_hex(32), secrets.token_urlsafe(24))')

# ---------------------------------------------------------------- start the stacks
# start_stack SUFFIX MODE RUN_DIR ES_PORT UPSTREAM_PORT GATEWAY_PORT GATEWAY_SECRET
# The upstream is the Argilla 1.5.1 server run by deploy/argilla-upstream.py, which gives it its
# users from the gateway's users file and keeps them in step while the file changes. Each stack
# runs from its run folder, so that no stray .users.yml in the repo is picked up.
start_stack() {
  local suffix=$1 mode=$2 dir=$3 es_port=$4 upstream_port=$5 gateway_port=$6 secret=$7
  cd "$dir"
  start "osmem$suffix" "$LOGS/osmem$suffix.log" "$OSMEM_BIN" -addr "127.0.0.1:$es_port" -no-stdin-watch -no-ja
  start "upstream$suffix" "$LOGS/upstream$suffix.log" env -u ARGILLA_LOCAL_AUTH_USERS_DB_FILE \
    ARGILLA_ELASTICSEARCH="http://127.0.0.1:$es_port" \
    ARGILLA_ENABLE_TELEMETRY=0 \
    ARGILLA_GATEWAY_UPSTREAM_MODE="$mode" \
    ARGILLA_GATEWAY_UPSTREAM_API_KEY="$UPSTREAM_API_KEY" \
    "$SERVER_PY" "$ROOT/deploy/argilla-upstream.py" --users "$dir/gateway-users.yml" \
    --host 127.0.0.1 --port "$upstream_port"
  start "gateway$suffix" "$LOGS/gateway$suffix.log" env \
    ARGILLA_GATEWAY_LISTEN="127.0.0.1:$gateway_port" \
    ARGILLA_GATEWAY_UPSTREAM_URL="http://127.0.0.1:$upstream_port" \
    ARGILLA_GATEWAY_UPSTREAM_MODE="$mode" \
    ARGILLA_GATEWAY_UPSTREAM_API_KEY="$UPSTREAM_API_KEY" \
    ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$dir/gateway-users.yml" \
    ARGILLA_LOCAL_AUTH_SECRET_KEY="$secret" \
    NO_COLOR=1 \
    "$GATEWAY_BIN"
  cd "$ROOT"
}
# wait_started NAME URL SECONDS: wait_http for the process started under NAME.
wait_started() {
  local name=$1 i
  for i in "${!NAMES[@]}"; do
    if [[ ${NAMES[i]} == "$name" ]]; then
      WAIT_PID=${PIDS[i]} wait_http "$@"
      return
    fi
  done
  die "internal: no process named $name"
}
start_stack "" service "$RUN" "$ES_PORT" "$UPSTREAM_PORT" "$GATEWAY_PORT" "$GATEWAY_SECRET_KEY"
start_stack -passthrough passthrough "$PT_RUN" "$PT_ES_PORT" "$PT_UPSTREAM_PORT" "$PT_GATEWAY_PORT" \
  "$PT_GATEWAY_SECRET_KEY"
start idp "$LOGS/idp.log" env PORT="$IDP_PORT" CLIENT_ID=argilla-gateway \
  CLIENT_SECRET="$SSO_CLIENT_SECRET" REDIRECT_URI="$SSO_GATEWAY_URL/oauth2/callback" \
  node "$OIDC_DIR/provider.mjs"
wait_started idp "$IDP_URL/.well-known/openid-configuration" 30
cd "$SSO_RUN"
start gateway-sso "$LOGS/gateway-sso.log" env \
  ARGILLA_GATEWAY_LISTEN="127.0.0.1:$SSO_GATEWAY_PORT" \
  ARGILLA_GATEWAY_UPSTREAM_URL="$UPSTREAM_URL" \
  ARGILLA_GATEWAY_UPSTREAM_MODE=service \
  ARGILLA_GATEWAY_UPSTREAM_API_KEY="$UPSTREAM_API_KEY" \
  ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$SSO_RUN/gateway-users.yml" \
  ARGILLA_LOCAL_AUTH_SECRET_KEY="$SSO_GATEWAY_SECRET_KEY" \
  ARGILLA_GATEWAY_OIDC_ISSUER_URL="$IDP_URL" \
  ARGILLA_GATEWAY_OIDC_CLIENT_ID=argilla-gateway \
  ARGILLA_GATEWAY_OIDC_CLIENT_SECRET="$SSO_CLIENT_SECRET" \
  ARGILLA_GATEWAY_OIDC_REDIRECT_URL="$SSO_GATEWAY_URL/oauth2/callback" \
  ARGILLA_GATEWAY_OIDC_ALLOWED_EMAIL_DOMAINS=example.com \
  ARGILLA_GATEWAY_OIDC_PASSWORD_LOGIN=false \
  ARGILLA_GATEWAY_OIDC_STATE_DIR="$SSO_RUN/state" \
  NO_COLOR=1 \
  "$GATEWAY_BIN"
cd "$ROOT"
wait_started osmem "$ES_URL/" 30
wait_started osmem-passthrough "$PT_ES_URL/" 30
wait_started upstream "$UPSTREAM_URL/api/docs/spec.json" 150
wait_started upstream-passthrough "$PT_UPSTREAM_URL/api/docs/spec.json" 150
wait_started gateway "$GATEWAY_URL/healthz" 30
wait_started gateway-passthrough "$PT_GATEWAY_URL/healthz" 30
wait_started gateway-sso "$SSO_GATEWAY_URL/healthz" 30

# ---------------------------------------------------------------- scenarios
export E2E_FIXTURE=$RUN/fixture.json
export E2E_ARTIFACTS_DIR=$ARTIFACTS
# Scenario 5 starts its own search emulator, Argilla upstream and gateway from these.
export E2E_UVICORN=$WORK/venv-server/bin/uvicorn E2E_OSMEM_BIN=$OSMEM_BIN E2E_GATEWAY_BIN=$GATEWAY_BIN E2E_LOGS_DIR=$LOGS
set +e
say "scenarios 1-4: Python client (pytest), gateway in service mode"
PYTHONDONTWRITEBYTECODE=1 timeout 900 "$CLIENT_PY" -m pytest "$HERE/scenarios" \
  -c "$HERE/pytest.ini" -v -rfE --junitxml="$RUN/pytest.xml" </dev/null
PYTEST_RC=$?
say "scenario 4 again: Python client (pytest), gateway in passthrough mode"
E2E_FIXTURE=$PT_RUN/fixture.json PYTHONDONTWRITEBYTECODE=1 timeout 300 "$CLIENT_PY" -m pytest \
  "$HERE/scenarios/test_4_upstream_reload.py" -c "$HERE/pytest.ini" -v -rfE \
  --junitxml="$RUN/pytest-passthrough.xml" </dev/null
PT_PYTEST_RC=$?
say "web app in headless Chromium (password login, then single sign-on)"
E2E_NODE_MODULES=$NODE_DIR/node_modules E2E_CHROMIUM=$CHROMIUM E2E_RESULT=$RUN/browser.json \
  E2E_SSO_GATEWAY_URL=$SSO_GATEWAY_URL E2E_IDP_URL=$IDP_URL \
  timeout 300 node "$HERE/browser.cjs" </dev/null
BROWSER_RC=$?
set -e

stop_all
say "screenshots and artifacts: $ARTIFACTS"
say "logs: $LOGS"
SUMMARY=$("$CLIENT_PY" - "$RUN/browser.json" "$BROWSER_RC" "$RUN/pytest.xml" "$PYTEST_RC" \
  "$RUN/pytest-passthrough.xml" "$PT_PYTEST_RC" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
browser, browser_rc = sys.argv[1], int(sys.argv[2])
passed = failed = 0
for junit, pytest_rc in zip(sys.argv[3::2], map(int, sys.argv[4::2])):
    run_failed = 0
    try:
        for case in ET.parse(junit).getroot().iter("testcase"):
            # a skipped scenario counts as failed: this suite never skips
            if any(child.tag in ("failure", "error", "skipped") for child in case):
                run_failed += 1
            else:
                passed += 1
    except (OSError, ET.ParseError):
        pass
    if pytest_rc != 0 and run_failed == 0:
        run_failed += 1  # pytest itself failed (collected nothing, crashed, timed out)
    failed += run_failed
try:
    with open(browser) as f:
        result = json.load(f)
    passed += result["passed"]
    failed += result["failed"]
except (OSError, ValueError, KeyError):
    result = None
if browser_rc != 0 and (result is None or result["failed"] == 0):
    failed += 1  # the browser script crashed or timed out
print(passed, failed)
EOF
)
read -r PASSED FAILED <<<"$SUMMARY"
SUMMARY_PRINTED=1
say "took $(($(date +%s) - STARTED))s"
echo "e2e: $PASSED passed, $FAILED failed"
((FAILED == 0 && PASSED > 0))
