#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20), one after another, starting from
# the seed corpus. Exits 0 with a one-line notice when cargo-fuzz or the nightly
# toolchain is missing; nonzero when a target crashes (its input is left in
# fuzz/artifacts/<target>/).
#
#   fuzz/smoke.sh [SECONDS]
set -euo pipefail

secs="${1:-20}"
cd "$(dirname "$0")"

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz smoke skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke skipped: cargo-fuzz missing (cargo install cargo-fuzz)"
    exit 0
fi

# No sanitizer (the crates are safe Rust; this doubles the executions), but debug
# assertions and overflow checks on: an overflow in a decoder is a crash.
flags=(--sanitizer none --debug-assertions)
nice cargo +nightly fuzz build "${flags[@]}"
for t in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "fuzz smoke: $t for ${secs}s"
    log="target/smoke-$t.log"
    if ! nice cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz smoke: $t failed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || tail -n 1 "$log"
done
echo "fuzz smoke: all targets ran ${secs}s without a crash"
