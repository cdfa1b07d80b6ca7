#!/usr/bin/env bash
# CI: coverage-guided fuzzing (cargo-fuzz / libFuzzer) of the users-file loader, the credential
# parser and the workspace resolver, each for a bounded time, failing on any crash or broken
# property. Stable Rust only: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz
# passes; the default sanitizer is `none` (no nightly std needed). FUZZ_SANITIZER=address works
# too where ASan runtime is available.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated targets (default: all three)
#   FUZZ_SANITIZER none | address (default none)
#   FUZZ_SEED      libFuzzer's seed (default 1: a landing run tries the same inputs in the same
#                  order each time; set another, or 0 for a random one, in longer local runs and
#                  commit each crash they find to corpus/<target> with its fix)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

export CARGO_TERM_COLOR=never
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-users_file credential policy}"
sanitizer="${FUZZ_SANITIZER:-none}"
seed="${FUZZ_SEED:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "== cargo fuzz build (sanitizer: $sanitizer)"
cargo fuzz build -s "$sanitizer" -O

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for target in $targets; do
    echo "== fuzzing $target for ${seconds}s (seed $seed)"
    # New inputs go to a scratch corpus; the committed seeds in corpus/$target stay as they are.
    mkdir -p "$work/$target"
    if ! cargo fuzz run -s "$sanitizer" -O "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1; then
        echo "!! $target failed; the crashing input is in fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
