#!/usr/bin/env bash
# CI: the docker-compose stack for real (deploy/compose-test.sh), driven from the host by
# tests/compose/test_stack.py with the real Argilla 1.5.1 client, then taken down. Prints its
# duration. Users, keys and the port are made here; nothing is left running: the stack is
# removed with its volumes and dockerd is stopped if this run started it.
#   COMPOSE_TEST_KEEP=1 leaves the stack up (take it down with deploy/compose-test.sh down).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STARTED=$(date +%s)
RUN=$ROOT/.compose-test/run

say() { printf 'compose-test: %s\n' "$*" >&2; }
die() {
  printf 'compose-test: ERROR: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=../deploy/python-env.sh
source deploy/python-env.sh
PY311=$(find_python 3.11)
[[ -n $PY311 ]] || die "Python 3.11 not found: the Argilla 1.5.1 client runs on it"
mkdir -p .e2e/logs
# The e2e suite's client venv (reused when tests/e2e/run.sh made it).
ensure_venv .e2e/venv-client "$PY311" tests/e2e/requirements-client.txt .e2e/logs
CLIENT_PY=.e2e/venv-client/bin/python

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ ${COMPOSE_TEST_KEEP:-0} != 1 ]]; then
    timeout 120 bash deploy/compose-test.sh down >&2 || say "down failed"
    timeout 60 bash deploy/compose-test.sh stop-engine >&2 || true
  fi
  echo "compose-test: took $(($(date +%s) - STARTED)) s (exit $rc)"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A stack left by an interrupted run goes first (only this project's).
bash deploy/compose-test.sh down >/dev/null 2>&1 || true

rm -rf "$RUN"
mkdir -p "$RUN/users"
chmod 0755 "$RUN" "$RUN/users"
port=$("$CLIENT_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(openssl rand -hex 32)
# The users (bcrypt cost 4: test users) and the fixture the test reads (0600).
COMPOSE_TEST_KEY=$key "$CLIENT_PY" - "$RUN" "$port" <<'PY'
import json, os, secrets, sys
import bcrypt, yaml

run, port = sys.argv[1], sys.argv[2]
users, entries = {}, []
for name, workspaces, superuser in [("admin", None, True), ("alice", ["team-a"], None), ("bob", ["team-b"], None)]:
    password = secrets.token_urlsafe(12)
    entry = {"username": name, "api_key": f"{name}.{secrets.token_hex(16)}",
             "hashed_password": bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}
    if workspaces is not None:
        entry["workspaces"] = workspaces
    if superuser:
        entry["superuser"] = True
    entries.append(entry)
    users[name] = {"api_key": entry["api_key"], "password": password, "workspaces": workspaces}
path = os.path.join(run, "users", "users.yml")
with open(path, "w") as f:
    yaml.safe_dump(entries, f, sort_keys=False)
os.chmod(path, 0o644)  # the gateway reads it as 65532
fixture = os.path.join(run, "fixture.json")
with open(os.open(fixture, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump({"users": users, "upstream_api_key": os.environ["COMPOSE_TEST_KEY"], "users_dir": os.path.join(run, "users"),
               "gateway_port": port, "gateway_url": f"http://127.0.0.1:{port}",
               "project": os.environ.get("COMPOSE_TEST_PROJECT", "argilla-gateway-test"),
               "empty_env": os.path.join(os.path.dirname(run), "empty.env")}, f)
PY

ARGILLA_GATEWAY_USERS_DIR=$RUN/users ARGILLA_GATEWAY_UPSTREAM_API_KEY=$key ARGILLA_GATEWAY_PORT=$port \
  bash deploy/compose-test.sh up
up_done=$(date +%s)

COMPOSE_TEST_FIXTURE=$RUN/fixture.json timeout 600 "$CLIENT_PY" -m pytest -p no:cacheprovider -q -s \
  -o console_output_style=classic tests/compose/test_stack.py
say "stack up in $((up_done - STARTED)) s, tests in $(($(date +%s) - up_done)) s"
