#!/usr/bin/env bash
# make bench: runs every benchmark, each printing "name value" lines, medians
# and ratios against its baselines measured in the same run.  The scripts:
# bench-block.sh (request path), bench-qcow2.sh (qcow2 against qemu-img),
# bench-convert.sh, bench-commit.sh; BENCH_QUICK=1 makes bench-qcow2.sh a
# short smoke run.
set -euo pipefail
B=${STRATA_BUILD:-build}
cd "$(dirname "$0")/.."
for b in "$B"/bench/bench-*; do
    [ -x "$b" ] || continue
    echo "== $(basename "$b")"
    "$b"
done
for s in bench/bench-*.sh; do
    [ -x "$s" ] || continue
    echo "== $(basename "$s")"
    STRATA_BUILD="$B" "$s"
done
