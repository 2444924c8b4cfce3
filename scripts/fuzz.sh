#!/usr/bin/env bash
# Fuzzes every parser that takes outside input (docs/fuzzing.md): builds the targets
# of fuzz/ with cargo-fuzz (libFuzzer) on the stable toolchain (RUSTC_BOOTSTRAP=1) and
# runs each in turn, starting from its seed corpus (fuzz/corpus/<target>/).
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]     # default 15 s per target
#   FUZZ_RUNS=10000000 bash scripts/fuzz.sh        # N inputs per target instead of a time
#   FUZZ_TARGETS="frame mqtt" bash scripts/fuzz.sh 60   # only these targets
#   FUZZ_NO_TRACE_COMPARES=1 ...                   # without comparison tracing (below)
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is missing. New
# inputs the fuzzer finds go to fuzz/corpus-run/<target>/ (not committed), a crashing
# input to fuzz/artifacts/<target>/; the script fails if any target crashed, timed
# out (10 s for one input) or ran out of memory (2 GB), and names it.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-15}
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# The flags of every build and run: no sanitizer (the targets are safe Rust; ASan
# doubles the cost and does not reach the C of libopus, which is not built with it),
# debug assertions on (integer overflow panics, as in tests).
FLAGS=(--sanitizer none --debug-assertions)
# FUZZ_NO_TRACE_COMPARES=1 builds without libFuzzer's comparison tracing
# (`--no-trace-compares`, in a target directory of its own so that the default build
# stays). For the long runs of the arithmetic-heavy targets: `decode` spends 44 % of
# its time in `__sanitizer_cov_trace_cmp8` inside the resampler's FFT loops. Its seed
# corpus holds a valid file of every format, so the magic values that tracing would
# help find are there from the start (docs/fuzzing.md).
if [[ -n ${FUZZ_NO_TRACE_COMPARES:-} ]]; then
    FLAGS+=(--no-trace-compares --target-dir target/no-trace-compares)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd fuzz
start=$(date +%s)
TARGETS=${FUZZ_TARGETS:-$(cargo fuzz list)}
for t in $TARGETS; do
    cargo fuzz build "${FLAGS[@]}" "$t"
done
echo "fuzz: built in $(($(date +%s) - start)) s"

# Longest input per target, bytes: the seeds fit; the slow targets (audio decoding,
# the delay estimator) are bounded so that millions of runs stay feasible.
max_len() {
    case $1 in
        decode | snapcast) echo 16384 ;;
        delay) echo 16425 ;; # header + 2 × 2048 f32 samples (fuzz_targets/delay.rs)
        scenario) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

if [[ -n ${FUZZ_RUNS:-} ]]; then
    LIMIT=(-runs="$FUZZ_RUNS")
else
    LIMIT=(-max_total_time="$SECONDS_PER_TARGET")
fi

failed=()
for t in $TARGETS; do
    mkdir -p "corpus-run/$t"
    echo "fuzz: $t (${LIMIT[*]})"
    rc=0
    cargo fuzz run "${FLAGS[@]}" "$t" "corpus-run/$t" "corpus/$t" -- \
        "${LIMIT[@]}" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"corpus-run/$t.log" 2>&1 || rc=$?
    grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' \
        "corpus-run/$t.log" || true
    if ((rc != 0)); then
        failed+=("$t")
        grep -E -A1 'panicked at|==[0-9]+== ERROR|SUMMARY|Test unit written' "corpus-run/$t.log" | cut -c1-300 || true
        echo "fuzz: $t FAILED (exit $rc; log: fuzz/corpus-run/$t.log, input: fuzz/artifacts/$t/)"
    fi
done
echo "fuzz: done in $(($(date +%s) - start)) s"
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
