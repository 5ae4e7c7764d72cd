#!/usr/bin/env bash
# Runs every cmocka unit-test binary given, shows failures in full, and ends
# with one closing line "unit: N passed, N failed".  Exit status 1 on any failure.
set -uo pipefail
passed=0 failed=0
for t in "$@"; do
    log=$(mktemp)
    # A hang guard, not a speed test: TSan builds run 5-15x slower on shared CPUs.
    timeout "${UNIT_TIMEOUT:-300}" "$t" >"$log" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or timed out
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc -ne 0 ]; then
        echo "FAIL $(basename "$t") (exit $rc)"; cat "$log"
    else
        echo "ok   $(basename "$t"): $p tests"
    fi
    rm -f "$log"
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
