#!/usr/bin/env bash
# Try argilla-gateway in one command, without Docker: a local Argilla 1.5.1 behind the gateway.
#
#   deploy/local.sh          then open http://127.0.0.1:6900 and sign in; Ctrl-C stops it all
#
# Installs what it needs under .try/ in the checkout (a Python 3.10 virtual environment with
# argilla[server]==1.5.1 and its pins, and osmem-server, an in-memory search engine standing in
# for Elasticsearch), builds the gateway, creates .try/users.yml from deploy/users.yml.example
# with fresh passwords and keys (printed once), and starts, on loopback only:
#   the search engine   127.0.0.1:$ARGILLA_LOCAL_SEARCH_PORT   (default 9201)
#   Argilla 1.5.1       127.0.0.1:$ARGILLA_LOCAL_UPSTREAM_PORT (default 6901), through
#                       deploy/argilla-upstream.py, which keeps its users in step with the file
#   the gateway         127.0.0.1:$ARGILLA_LOCAL_PORT          (default 6900)
# Everything it started is stopped, by process id, on Ctrl-C or when one of them dies.
# A second run reinstalls nothing and starts in seconds. Knobs (environment):
#   ARGILLA_LOCAL_HOST     loopback address to bind (default 127.0.0.1; nothing else is accepted)
#   ARGILLA_LOCAL_DIR      where installs, users file and logs go (default .try in the checkout)
#   ARGILLA_LOCAL_VENV     an existing environment with the pins of deploy/requirements-argilla.txt
#   ARGILLA_GATEWAY_BIN    a gateway binary to use instead of `cargo build --release`
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRY=${ARGILLA_LOCAL_DIR:-$ROOT/.try}
HOST=${ARGILLA_LOCAL_HOST:-127.0.0.1}
PORT=${ARGILLA_LOCAL_PORT:-6900}
UPSTREAM_PORT=${ARGILLA_LOCAL_UPSTREAM_PORT:-6901}
SEARCH_PORT=${ARGILLA_LOCAL_SEARCH_PORT:-9201}

say() { printf 'local: %s\n' "$*" >&2; }
die() {
  printf 'local: ERROR: %s\n' "$*" >&2
  exit 1
}

case $HOST in
  127.* | ::1 | localhost) ;;
  *) die "ARGILLA_LOCAL_HOST=$HOST is not a loopback address: this try-out binds 127.0.0.1 (or ::1) only. For a real deployment use docker-compose.yml (README, \"Running it with Docker Compose\")." ;;
esac
[[ $HOST == *:* ]] && URL_HOST="[$HOST]" || URL_HOST=$HOST

mkdir -p "$TRY/logs"
chmod 700 "$TRY"

# shellcheck source=python-env.sh
source "$ROOT/deploy/python-env.sh"
# shellcheck source=processes.sh
source "$ROOT/deploy/processes.sh"

# ---------------------------------------------------------------- installs (once)
if [[ -n ${ARGILLA_LOCAL_VENV:-} ]]; then
  VENV=$ARGILLA_LOCAL_VENV
  [[ -x $VENV/bin/python ]] || die "ARGILLA_LOCAL_VENV=$VENV has no bin/python"
else
  PY310=$(find_python 3.10)
  [[ -n $PY310 ]] || die "Python 3.10 not found (looked in \$(pyenv root)/versions/3.10.* and for python3.10 on PATH). The Argilla 1.5.1 server needs exactly 3.10: install it with 'pyenv install 3.10' (https://github.com/pyenv/pyenv), or your distribution's python3.10 with its venv module, then run this again."
  "$PY310" -c 'import venv, ensurepip' 2>/dev/null || die "$PY310 lacks the venv or ensurepip module (Debian: apt-get install python3.10-venv)"
  VENV=$TRY/venv
  ensure_venv "$VENV" "$PY310" "$ROOT/deploy/requirements-argilla.txt" "$TRY/logs"
fi
PY=$VENV/bin/python
OSMEM=$("$PY" -c 'import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')
[[ -f $OSMEM ]] || die "osmem-server binary not found at $OSMEM"
[[ -x $OSMEM ]] || chmod +x "$OSMEM"

if [[ -n ${ARGILLA_GATEWAY_BIN:-} ]]; then
  GATEWAY=$ARGILLA_GATEWAY_BIN
else
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) to build the gateway"
  say "building the gateway (cargo build --release; minutes the first time, seconds after)"
  (cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build --release failed"
  GATEWAY=$ROOT/target/release/argilla-gateway
fi
[[ -x $GATEWAY ]] || die "no gateway binary at $GATEWAY"

# ---------------------------------------------------------------- users (once)
USERS=$TRY/users.yml
if [[ ! -f $USERS ]]; then
  say "creating $USERS from deploy/users.yml.example, with new passwords and keys"
  ( umask 077 && "$PY" - "$ROOT/deploy/users.yml.example" "$USERS" "$GATEWAY" <<'EOF'
import re, secrets, subprocess, sys

example, target, gateway = sys.argv[1:4]
text = open(example).read()
# The example's own header is about editing it by hand: replaced by one saying where this came from.
body = text[text.index("\n- username:"):] if "\n- username:" in text else text
out, credentials = [], []
for block in re.split(r"(?m)^(?=- username:)", body):
    match = re.match(r"- username: (\S+)", block)
    if not match:
        out.append(block)
        continue
    name = match.group(1)
    password = secrets.token_urlsafe(12)
    key = secrets.token_hex(32)
    hashed = subprocess.run([gateway, "hash-password", "--cost", "12"], input=password + "\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    block = re.sub(r"(?m)^(  api_key:).*$", rf"\1 {key}", block)
    block = re.sub(r"(?m)^(  hashed_password:).*$", lambda m: f"{m.group(1)} '{hashed}'", block)
    block = re.sub(r"(?m)^  disabled: true\n", "", block)
    out.append(block)
    credentials.append((name, password, key))
with open(target, "w") as f:
    f.write("# Made by deploy/local.sh from deploy/users.yml.example. Edit it while everything runs:\n"
            "# the gateway and the Argilla behind it follow every change (README, \"The users file\").\n")
    f.write("".join(out).lstrip("\n"))
print(f"\nUsers (printed only now; delete {target} to make new ones):", file=sys.stderr)
for name, password, key in credentials:
    print(f"  {name:<6} password {password}   api_key {key}", file=sys.stderr)
print(file=sys.stderr)
EOF
  ) || die "could not create $USERS"
else
  say "using $USERS (its passwords and keys were printed when it was made; delete it for new ones)"
fi

# ---------------------------------------------------------------- processes (stopped on exit)
PIDS=()
NAMES=()
stop_all() {
  trap - EXIT INT TERM
  stop_pids 5 PIDS NAMES
  say "stopped everything it started (pids ${PIDS[*]:-none})"
}
trap 'stop_all; exit 0' INT TERM
trap 'rc=$?; stop_all; exit $rc' EXIT

start() { # start NAME CMD...: in the background, logging to .try/logs/NAME.log
  local name=$1
  shift
  "$@" >"$TRY/logs/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  say "started $name (pid $!), log $TRY/logs/$name.log"
}

wait_http() { # wait_http NAME URL SECONDS
  local name=$1 url=$2 deadline=$(($(date +%s) + $3)) pid=${PIDS[-1]}
  until "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$TRY/logs/$name.log" >&2; die "$name stopped (log: $TRY/logs/$name.log)"; }
    (($(date +%s) < deadline)) || { tail -n 20 "$TRY/logs/$name.log" >&2; die "$name not ready at $url"; }
    sleep 0.2
  done
}

SERVICE_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
SECRET=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')

start search "$OSMEM" -addr "$URL_HOST:$SEARCH_PORT" -no-stdin-watch -no-ja
wait_http search "http://$URL_HOST:$SEARCH_PORT/" 30
start argilla env -C "$TRY" \
  ARGILLA_ELASTICSEARCH="http://$URL_HOST:$SEARCH_PORT" \
  ARGILLA_ENABLE_TELEMETRY=0 \
  ARGILLA_GATEWAY_UPSTREAM_MODE=service \
  ARGILLA_GATEWAY_UPSTREAM_API_KEY="$SERVICE_KEY" \
  "$PY" "$ROOT/deploy/argilla-upstream.py" --users "$USERS" --host "$HOST" --port "$UPSTREAM_PORT"
wait_http argilla "http://$URL_HOST:$UPSTREAM_PORT/api/docs/spec.json" 150
start gateway env -C "$TRY" \
  ARGILLA_GATEWAY_LISTEN="$URL_HOST:$PORT" \
  ARGILLA_GATEWAY_UPSTREAM_URL="http://$URL_HOST:$UPSTREAM_PORT" \
  ARGILLA_GATEWAY_UPSTREAM_MODE=service \
  ARGILLA_GATEWAY_UPSTREAM_API_KEY="$SERVICE_KEY" \
  ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$USERS" \
  ARGILLA_LOCAL_AUTH_SECRET_KEY="$SECRET" \
  "$GATEWAY"
wait_http gateway "http://$URL_HOST:$PORT/healthz" 30

cat >&2 <<MSG

  argilla-gateway is ready: open http://$URL_HOST:$PORT and sign in with a user printed above.
  Python client:  rg.init(api_url="http://$URL_HOST:$PORT", api_key="<api_key>")
  Users file:     $USERS (changes apply while it runs)
  The search engine keeps everything in memory: datasets are LOST when this stops.
  Ctrl-C stops everything.

MSG

# Runs until Ctrl-C, or until one of the three stops (then the others are stopped too).
wait -n "${PIDS[@]}" || true
say "a process stopped (logs in $TRY/logs/); stopping the others"
exit 1
