#!/usr/bin/env bash
# The stack of docker-compose.yml on this machine, with every image built locally and nothing
# pulled (for CI and for machines without a registry).
#
#   ARGILLA_GATEWAY_USERS_DIR=/path/to/users ARGILLA_GATEWAY_UPSTREAM_API_KEY=... \
#   ARGILLA_GATEWAY_PORT=6900 deploy/compose-test.sh up
#   deploy/compose-test.sh down           # the stack and its volumes, nothing else
#   deploy/compose-test.sh stop-engine    # dockerd, only if `up` started it
#
# `up`:
#   - starts dockerd (as root; apt-get installs docker.io when missing) unless one answers, with
#     --ip-masq=false --ip-forward=false: containers reach their own networks only;
#   - makes two base images once and keeps them in the image store: a Debian bookworm root file
#     system made by debootstrap (argilla-gateway-test/debian:bookworm), and a static base with
#     only the non-root user 65532, /tmp and CA certificates (argilla-gateway-test/static:1);
#   - builds the Argilla 1.5.1 image (deploy/compose-test/argilla.Dockerfile) from the host's
#     Python 3.10 and the packages the host's pip installed from deploy/requirements-argilla.txt
#     into .e2e/venv-server (shared with tests/e2e/run.sh), tagged by a hash of its inputs so that
#     a second run reuses it; the same image runs osmem-server in place of Elasticsearch
#     (deploy/compose-test/docker-compose.test.yml);
#   - builds the gateway image from the project's Dockerfile with RUNTIME_IMAGE set to the local
#     static base and --target prebuilt: the static musl binary built on the host;
#   - `docker-compose up -d`, waits (bounded: COMPOSE_TEST_TIMEOUT, default 240 s) until every
#     service is healthy, and prints where the gateway listens, the gateway image's size and its
#     start-to-healthy time.
# Compose project: argilla-gateway-test (COMPOSE_TEST_PROJECT). Work files: .compose-test/.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=processes.sh
source "$ROOT/deploy/processes.sh"
WORK=$ROOT/.compose-test
PROJECT=${COMPOSE_TEST_PROJECT:-argilla-gateway-test}
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-240}
DEBIAN_IMAGE=argilla-gateway-test/debian:bookworm
STATIC_IMAGE=argilla-gateway-test/static:1
GATEWAY_IMAGE=argilla-gateway-test/gateway:latest
LABEL=org.argilla-gateway.compose-test=1
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never

say() { printf 'compose-test: %s\n' "$*" >&2; }
die() {
  printf 'compose-test: ERROR: %s\n' "$*" >&2
  exit 1
}
# The Debian docker.io client (20.10) builds with the engine's own BuildKit; a newer client
# without the buildx plugin cannot. Looked up at each call: `up` may have just installed it.
docker_bin() { if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker; fi; }
docker() { "$(docker_bin)" "$@"; }
# The env file is empty: a developer's .env must not leak into the test stack.
compose() {
  docker-compose --env-file "$WORK/empty.env" -p "$PROJECT" --project-directory "$ROOT" \
    -f "$ROOT/docker-compose.yml" -f "$ROOT/deploy/compose-test/docker-compose.test.yml" "$@"
}
mkdir -p "$WORK/cache"
: >"$WORK/empty.env"

apt_install() { # command package...
  local cmd=$1
  shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [[ $(id -u) -eq 0 ]] || die "$cmd is missing: apt-get install $* (as root)"
  say "apt-get install $*"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# ---------------------------------------------------------------- engine
start_engine() {
  apt_install docker-compose docker-compose
  if docker info >/dev/null 2>&1; then
    return
  fi
  [[ $(id -u) -eq 0 ]] || die "no Docker engine answers and only root can start dockerd"
  PATH=$PATH:/usr/sbin apt_install dockerd docker.io iptables
  say "starting dockerd (log: $WORK/dockerd.log)"
  setsid "$(PATH=$PATH:/usr/sbin command -v dockerd)" --ip-masq=false --ip-forward=false \
    --pidfile "$WORK/dockerd.pid" </dev/null >"$WORK/dockerd.log" 2>&1 &
  echo $! >"$WORK/dockerd.started"
  local deadline=$(($(date +%s) + 60))
  until docker info >/dev/null 2>&1; do
    kill -0 "$(cat "$WORK/dockerd.started")" 2>/dev/null || {
      tail -n 20 "$WORK/dockerd.log" >&2
      rm -f "$WORK/dockerd.started"
      die "dockerd exited (log: $WORK/dockerd.log)"
    }
    (($(date +%s) < deadline)) || die "dockerd did not answer within 60 s (log: $WORK/dockerd.log)"
    sleep 0.5
  done
  say "dockerd $(docker info -f '{{.ServerVersion}}') ready"
}

stop_engine() {
  [[ -f $WORK/dockerd.started ]] || {
    say "dockerd was not started by this script: left alone"
    return
  }
  local pid
  pid=$(cat "$WORK/dockerd.started")
  rm -f "$WORK/dockerd.started"
  kill -0 "$pid" 2>/dev/null || return 0
  # shellcheck disable=SC2034 # read by stop_pids through namerefs
  local pids=("$pid") names=(dockerd)
  stop_pids 30 pids names
  say "dockerd (pid $pid) stopped"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- base images
debian_base() {
  have_image "$DEBIAN_IMAGE" && return
  local tarball=$WORK/cache/debian-bookworm.tar dir
  if [[ ! -s $tarball ]]; then
    PATH=$PATH:/usr/sbin apt_install debootstrap debootstrap
    dir=$WORK/cache/rootfs-tmp
    rm -rf "$dir"
    say "debootstrap bookworm (minbase and the libraries Python 3.10 needs; a few minutes, once)"
    PATH=$PATH:/usr/sbin timeout 900 debootstrap --variant=minbase \
      --include=libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libexpat1,libnsl2,libtirpc3,libgdbm6 \
      bookworm "$dir" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
      {
        tail -n 20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (log: $WORK/debootstrap.log)"
      }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" --numeric-owner -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$dir"
  fi
  docker import -c "LABEL $LABEL" "$tarball" "$DEBIAN_IMAGE" >/dev/null
  say "imported $DEBIAN_IMAGE"
}

# The runtime base in place of distroless/static: the non-root user 65532, /tmp, CA certificates.
static_base() {
  have_image "$STATIC_IMAGE" && return
  local dir=$WORK/cache/static-root
  rm -rf "$dir"
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  fi
  tar -C "$dir" --numeric-owner --owner=0 --group=0 -c . |
    docker import -c "LABEL $LABEL" -c "USER 65532:65532" - "$STATIC_IMAGE" >/dev/null
  rm -rf "$dir"
  say "imported $STATIC_IMAGE"
}

# ---------------------------------------------------------------- Argilla image
argilla_image() {
  # shellcheck source=python-env.sh
  source "$ROOT/deploy/python-env.sh"
  local py prefix tag ctx
  py=$(find_python 3.10)
  [[ -n $py ]] || die "Python 3.10 not found: the Argilla 1.5.1 server needs it (pyenv install 3.10)"
  mkdir -p "$ROOT/.e2e/logs"
  ensure_venv "$ROOT/.e2e/venv-server" "$py" "$ROOT/deploy/requirements-argilla.txt" "$ROOT/.e2e/logs"
  prefix=$("$py" -c 'import sys; print(sys.base_prefix)')
  tag=$({
    "$py" -c 'import sys; print(sys.version)'
    echo "$prefix"
    cat "$ROOT/deploy/requirements-argilla.txt" "$ROOT/deploy/compose-test/argilla.Dockerfile"
    docker image inspect -f '{{.Id}}' "$DEBIAN_IMAGE"
  } | sha256sum | cut -c1-16)
  ARGILLA_IMAGE=argilla-gateway-test/argilla:$tag
  have_image "$ARGILLA_IMAGE" && return
  ctx=$WORK/argilla-context
  rm -rf "$ctx"
  mkdir -p "$ctx"
  say "building $ARGILLA_IMAGE (Python $prefix + .e2e/venv-server's packages; once per change of pins)"
  cp -a "$prefix" "$ctx/python"
  cp -a "$ROOT/.e2e/venv-server/lib/python3.10/site-packages" "$ctx/site-packages"
  find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
  DOCKER_BUILDKIT=1 timeout 900 "$(docker_bin)" build -q --label "$LABEL" \
    --build-arg BASE_IMAGE="$DEBIAN_IMAGE" --build-arg PYTHON_PREFIX="$prefix" \
    -f "$ROOT/deploy/compose-test/argilla.Dockerfile" -t "$ARGILLA_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# ---------------------------------------------------------------- gateway image
gateway_image() {
  local target size
  target="$(uname -m)-unknown-linux-musl"
  apt_install musl-gcc musl-tools
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  say "cargo build --release --locked --target $target (target/docker-musl, as .ci/docker-check.sh)"
  (cd "$ROOT" && CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR=target/docker-musl \
    cargo build -q --release --locked --target "$target")
  # The Dockerfile as it is, less its `# syntax=` line (that would fetch the frontend image).
  sed '/^# syntax=/d' "$ROOT/Dockerfile" >"$WORK/gateway.Dockerfile"
  DOCKER_BUILDKIT=1 timeout 600 "$(docker_bin)" build -q --label "$LABEL" \
    --build-arg BUILD_IMAGE="$STATIC_IMAGE" --build-arg RUNTIME_IMAGE="$STATIC_IMAGE" \
    --target prebuilt --build-arg MUSL_TARGET="$target" \
    -f "$WORK/gateway.Dockerfile" -t "$GATEWAY_IMAGE" "$ROOT" >/dev/null
  # The image must hold the very binary built above.
  cmp -s <(docker run --rm --network none --entrypoint /usr/local/bin/argilla-gateway "$GATEWAY_IMAGE" --version) \
    <("$ROOT/target/docker-musl/$target/release/argilla-gateway" --version) ||
    die "the gateway image does not run the binary of target/docker-musl"
  size=$(docker image inspect -f '{{.Size}}' "$GATEWAY_IMAGE")
  echo "compose-test: gateway image $GATEWAY_IMAGE: $size bytes ($((size / 1000000)) MB; target <= 20 MB)"
}

# ---------------------------------------------------------------- up / down
GATEWAY_HEALTHY_AFTER=
wait_healthy() {
  local deadline=$(($(date +%s) + TIMEOUT)) ids id state pending
  while :; do
    ids=$(compose ps -q)
    [[ -n $ids ]] || die "no container in project $PROJECT"
    pending=
    for id in $ids; do
      state=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id")
      case $state in
      *" running healthy")
        # Right away: Docker keeps only the last five probes.
        [[ $state == *_gateway_1" "* && -z $GATEWAY_HEALTHY_AFTER ]] && GATEWAY_HEALTHY_AFTER=$(gateway_start_to_healthy)
        ;;
      *" running starting") pending+="${state%% *} " ;;
      *)
        compose logs --tail 40 >&2 || true
        die "container not healthy: $state"
        ;;
      esac
    done
    [[ -z $pending ]] && return
    if (($(date +%s) >= deadline)); then
      compose logs --tail 40 >&2 || true
      die "not healthy after ${TIMEOUT}s: $pending(COMPOSE_TEST_TIMEOUT)"
    fi
    sleep 0.5
  done
}

# Seconds from the gateway container's start to its first passing health check.
gateway_start_to_healthy() {
  local id
  id=$(compose ps -q gateway)
  docker inspect "$id" | python3 -c '
import datetime, json, re, sys
c = json.load(sys.stdin)[0]
def t(s):
    s = re.sub(r"(\.\d{6})\d*", r"\1", s).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(s)
start = t(c["State"]["StartedAt"])
ok = [t(e["End"]) for e in c["State"]["Health"]["Log"] if e["ExitCode"] == 0 and t(e["End"]) >= start]
print("%.2f" % (min(ok) - start).total_seconds() if ok else "none")'
}

up() {
  : "${ARGILLA_GATEWAY_USERS_DIR:?set ARGILLA_GATEWAY_USERS_DIR to the folder holding users.yml}"
  : "${ARGILLA_GATEWAY_UPSTREAM_API_KEY:?set ARGILLA_GATEWAY_UPSTREAM_API_KEY}"
  : "${ARGILLA_GATEWAY_PORT:?set ARGILLA_GATEWAY_PORT (the host port of the gateway)}"
  [[ -f $ARGILLA_GATEWAY_USERS_DIR/users.yml ]] || die "no users.yml in $ARGILLA_GATEWAY_USERS_DIR"
  ARGILLA_GATEWAY_USERS_DIR=$(cd "$ARGILLA_GATEWAY_USERS_DIR" && pwd)
  export ARGILLA_GATEWAY_USERS_DIR ARGILLA_GATEWAY_UPSTREAM_API_KEY ARGILLA_GATEWAY_PORT
  local t0 t
  t0=$(date +%s)
  start_engine
  debian_base
  static_base
  argilla_image
  gateway_image
  t=$(date +%s)
  say "images ready in $((t - t0)) s; docker-compose up (project $PROJECT)"
  export COMPOSE_TEST_ARGILLA_IMAGE=$ARGILLA_IMAGE ARGILLA_GATEWAY_IMAGE=$GATEWAY_IMAGE
  # For later compose commands on this stack (tests/compose/test_stack.py): no secret in it.
  printf 'COMPOSE_TEST_ARGILLA_IMAGE=%s\nARGILLA_GATEWAY_IMAGE=%s\n' "$ARGILLA_IMAGE" "$GATEWAY_IMAGE" >"$WORK/stack.env"
  timeout 300 docker-compose --env-file "$WORK/empty.env" -p "$PROJECT" --project-directory "$ROOT" \
    -f "$ROOT/docker-compose.yml" -f "$ROOT/deploy/compose-test/docker-compose.test.yml" \
    up -d --no-build >"$WORK/compose-up.log" 2>&1 || {
    cat "$WORK/compose-up.log" >&2
    die "docker-compose up failed"
  }
  wait_healthy
  compose ps
  echo "compose-test: every service healthy $(($(date +%s) - t)) s after docker-compose up"
  echo "compose-test: gateway start to healthy: $GATEWAY_HEALTHY_AFTER s (container start to its first passing \`argilla-gateway healthcheck\`, probed every second)"
  echo "compose-test: gateway listening on http://127.0.0.1:$ARGILLA_GATEWAY_PORT"
}

down() {
  if ! docker info >/dev/null 2>&1; then
    say "no Docker engine answers: nothing to remove"
    return
  fi
  # The variables only have to be set for the file to parse.
  COMPOSE_TEST_ARGILLA_IMAGE=unused ARGILLA_GATEWAY_UPSTREAM_API_KEY=unused \
    compose down -v --remove-orphans --timeout 10
}

case ${1:-} in
up) up ;;
down) down ;;
stop-engine) stop_engine ;;
*) die "usage: $0 up|down|stop-engine" ;;
esac
