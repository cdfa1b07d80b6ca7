# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by the scripts that source it
# Shared by bench/profile.sh and bench/callgrind.sh (sourced, not run): paths, the gateway
# binary with line-table debug info, and the upstream nginx of bench/run.sh started in a
# scratch folder. Expects BASE_PORT and RUN (the scratch folder) to be set by the caller.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
WORK=$OUT/work
UP_PORT=$((BASE_PORT + 1)) GW_PORT=$((BASE_PORT + 4))
ROUTE='/api/datasets/bench-ds?workspace=team-a'
UP_ROUTE='/api/datasets/bench-ds/TextClassification:bulk?workspace=team-a'
DOWN_ROUTE='/api/datasets/bench-ds/TextClassification:search?workspace=team-a&limit=1000'
KEY_HEADER="X-Argilla-Api-Key: bench-key-0123456789abcdef0123456789ab"
BASIC_HEADER="Authorization: Basic $(printf 'bench-basic:basic-pass-1' | base64 -w0)"
[ -f "$WORK/upstream.conf" ] || { echo "run bench/run.sh first" >&2; exit 1; }

# The release binary with line tables, in its own target folder (target/ is left alone).
profiling_build() {
    (cd "$ROOT" && CARGO_TARGET_DIR="$OUT/target-prof" CARGO_PROFILE_RELEASE_DEBUG=1 \
        cargo build --release --quiet)
    echo "$OUT/target-prof/release/argilla-gateway"
}

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts bench/run.sh's upstream nginx on UP_PORT with its files under RUN; sets NGX.
start_upstream() { # $1: CPU list for taskset
    rm -rf "$RUN" && mkdir -p "$RUN/tmp"
    sed -e "s#$WORK/upstream#$RUN/upstream#g" -e "s#127.0.0.1:[0-9]*;#127.0.0.1:$UP_PORT;#" \
        -e "s#$WORK/tmp#$RUN/tmp#g" "$WORK/upstream.conf" >"$RUN/upstream.conf"
    taskset -c "$1" "$(command -v nginx || echo /usr/sbin/nginx)" -e "$RUN/upstream.err" -p "$RUN" \
        -c "$RUN/upstream.conf" -g 'daemon off;' >"$RUN/upstream.log" 2>&1 &
    NGX=$!
    PIDS+=("$NGX")
}

# The gateway's environment: the benchmark's upstream, key, users file and secret.
gateway_env() {
    echo PATH="$PATH" HOME="$RUN" RUST_LOG=warn \
        ARGILLA_GATEWAY_LISTEN="127.0.0.1:$GW_PORT" \
        ARGILLA_GATEWAY_UPSTREAM_URL="http://127.0.0.1:$UP_PORT" \
        ARGILLA_GATEWAY_UPSTREAM_API_KEY=bench-upstream-service-key \
        ARGILLA_LOCAL_AUTH_USERS_DB_FILE="$WORK/users-$(find "$WORK" -name "users-*.yml" | sed "s/.*users-//; s/.yml//" | sort -n | head -1).yml" \
        ARGILLA_LOCAL_AUTH_SECRET_KEY=bench-secret-key-0123456789abcdef
}
