#!/usr/bin/env bash
# make bench: runs every benchmark, each printing "name value" lines, medians
# and ratios against its baselines measured in the same run.
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
