#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20), as many at once as there are
# cores, starting from the seed corpus. Exits 0 with a one-line notice when
# cargo-fuzz or the nightly toolchain is missing; nonzero when a target crashes (its
# input is left in fuzz/artifacts/<target>/).
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
# UDPACK_FUZZ_TARGET_DIR, if set, is where the targets are built (CI keeps one across
# runs, so that a tree whose fuzzed crates did not change builds almost nothing);
# fuzz/target otherwise.
if [ -n "${UDPACK_FUZZ_TARGET_DIR:-}" ]; then
    flags+=(--target-dir "$UDPACK_FUZZ_TARGET_DIR")
fi
nice cargo +nightly fuzz build "${flags[@]}"
# The targets run side by side, one per core: each gets its full time on a core of
# its own, and the smoke takes a fraction of their sum.
jobs="$(nproc 2>/dev/null || echo 1)"
run_one() {
    local t="$1"
    mkdir -p "corpus/$t"
    local seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    local log="target/smoke-$t.log"
    if ! nice cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz smoke: $t failed; the input is in fuzz/artifacts/$t/" >&2
        return 1
    fi
    echo "fuzz smoke: $t ran ${secs}s: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || tail -n 1 "$log")"
}
mkdir -p target
rm -f target/smoke-*.failed
for t in $(cargo +nightly fuzz list); do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        sleep 0.2
    done
    (run_one "$t" || touch "target/smoke-$t.failed") &
done
wait
if compgen -G "target/smoke-*.failed" >/dev/null; then
    exit 1
fi
echo "fuzz smoke: all targets ran ${secs}s without a crash"
