#!/usr/bin/env bash
# make check-fuzz: the qcow2 fuzz target as a test.  First every input an
# earlier run left behind (crash-*, leak-*, timeout-*, oom-*) is replayed,
# so a finding stays a failure until it is fixed; then the fuzzer runs for
# TIME seconds from the kept corpus and the seed images.  Any crash, leak,
# per-input timeout (10 s) or memory blow-up fails the run with one line
# naming the input to reproduce it with.
#
#   fuzz/check-fuzz.sh BUILD_DIR TIME
set -uo pipefail
dir=${1:?usage: check-fuzz.sh BUILD_DIR TIME}
time=${2:?usage: check-fuzz.sh BUILD_DIR TIME}
bin=$dir/fuzz-qcow2-open
log=$dir/check-fuzz.log
flags=(-timeout=10 -rss_limit_mb=2048 -max_len=65536)

[ -x "$bin" ] || { echo "check-fuzz: $bin is missing (make fuzz)" >&2; exit 1; }

# Inputs that failed before: must pass now.
for f in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-*; do
    [ -e "$f" ] || continue
    if ! "$bin" "${flags[@]}" "$f" >"$log" 2>&1; then
        echo "check-fuzz: FAILED: earlier finding still fails: $bin $f (log: $log)" >&2
        exit 1
    fi
done

mkdir -p "$dir/corpus"
echo "check-fuzz: fuzzing qcow2 images for ${time}s (log: $log)"
# The watchdog only matters if the fuzzer itself wedges; libFuzzer stops on time.
timeout --kill-after=10 $((time + 120)) "$bin" "${flags[@]}" -max_total_time="$time" \
    -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$dir/" \
    "$dir/corpus" "$dir/corpus-seed" >"$log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" | tr '\n' ' '
    echo
    echo "check-fuzz: passed"
    exit 0
fi
input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
kind=$(grep -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-z-]+' "$log" |
    head -1)
if [ -n "$input" ]; then
    echo "check-fuzz: FAILED (${kind:-exit $rc}): reproduce with $bin $input (log: $log)" >&2
else
    echo "check-fuzz: FAILED (${kind:-exit $rc}), no input saved (log: $log)" >&2
fi
tail -40 "$log" >&2
exit 1
