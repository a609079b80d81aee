#!/usr/bin/env bash
# Fuzzes Egret's core with cargo-fuzz: each target in turn for FUZZ_SECONDS seconds (default
# 30), starting from its committed corpus (fuzz/corpus/<target>/). Exits non-zero when any
# target crashes; the input that crashed is left in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh                      # every target, 30 s each
#   FUZZ_SECONDS=300 fuzz/run.sh session allowlist
#   FUZZ_MERGE=1 fuzz/run.sh         # then minimise what was found into fuzz/corpus/
#                                    # (at most 300 inputs per target, with shrink.py)
#
# New inputs go to a scratch corpus (FUZZ_WORK, default fuzz/target/corpus/<target>) unless
# FUZZ_MERGE=1, so a plain run leaves the committed corpus as it is. cargo-fuzz is installed
# from crates.io at the pinned version when missing. It needs nightly compiler flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 unlocks them. FUZZ_SANITIZER picks the sanitizer
# (default address; `none` runs faster). FUZZ_QUIET=1 keeps libFuzzer's running output in
# fuzz/target/logs/<target>.log and prints its final figures only (all of it on a crash).
set -euo pipefail
cd "$(dirname "$0")"

cargo_fuzz_version=0.13.2
all_targets=(http_preamble tls_hello proxy_protocol allowlist session)
seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
work="${FUZZ_WORK:-$PWD/target/corpus}"
if (($# > 0)); then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: FUZZ_SECONDS must be a positive number of seconds, not '$seconds'" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    echo "run.sh: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# Build first, so that the time limit is spent fuzzing.
cargo fuzz build --sanitizer "$sanitizer"

# Prints the path of a built fuzz target.
fuzz_binary() {
    local dir="${CARGO_TARGET_DIR:-$PWD/target}"
    echo "$dir/$(rustc -vV | sed -n 's/^host: //p')/release/$1"
}

failed=()
for target in "${targets[@]}"; do
    mkdir -p "$work/$target" "corpus/$target"
    echo "run.sh: fuzzing $target for ${seconds}s" >&2
    # libFuzzer stops itself after -max_total_time; `timeout` bounds a run that would not.
    run_target=(timeout --kill-after=30 $((seconds + 300))
        cargo fuzz run --sanitizer "$sanitizer" "$target" "$work/$target" "corpus/$target" --
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1)
    if [[ ${FUZZ_QUIET:-0} == 1 ]]; then
        mkdir -p target/logs
        log=target/logs/$target.log
        if ! "${run_target[@]}" >"$log" 2>&1; then
            cat "$log" >&2
            failed+=("$target")
            continue
        fi
        grep -E '^(stat::|Done )' "$log" >&2 || true
    elif ! "${run_target[@]}"; then
        failed+=("$target")
        continue
    fi
    if [[ ${FUZZ_MERGE:-0} == 1 ]]; then
        echo "run.sh: minimising the corpus of $target" >&2
        # cmin keeps the inputs that add an edge (hit counts aside), then shrink.py picks at
        # most 300 of them that cover as many edges as it can.
        cp -n "$work/$target"/* "corpus/$target"/ 2>/dev/null || true
        cargo fuzz cmin --sanitizer "$sanitizer" "$target" "corpus/$target" -- -use_counters=0
        python3 shrink.py "$(fuzz_binary "$target")" "corpus/$target" 300
    fi
done

if ((${#failed[@]})); then
    echo "run.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "run.sh: ${#targets[@]} target(s) fuzzed for ${seconds}s each, no crash" >&2
