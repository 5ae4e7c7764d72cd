#!/usr/bin/env bash
# Block core benchmark: strata-img bench against qemu-img bench (and fio for the
# device-bound case) on the same targets in one run.  Runs alternate between
# the programs, each case is repeated, and medians and ratios are printed.
#
#   REPS=5 (default 5) BENCH_DIR=/var/tmp (where the 1 GiB test file goes)
set -euo pipefail
B=${STRATA_BUILD:-build}
REPS=${REPS:-5}
DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/strata-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
STRATA_IMG="$B/strata-img"
IMG="$DIR/bench.raw"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Prints the IOPS of one bench run: $1 = program, rest = bench arguments (-c must be first).
iops() {
    local prog=$1; shift
    local count=$2
    local secs
    secs=$("$prog" bench "$@" 2>&1 | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
    [ -n "$secs" ] || { echo "bench failed: $prog bench $*" >&2; "$prog" bench "$@" >&2; exit 1; }
    awk -v c="$count" -v s="$secs" 'BEGIN {printf "%.0f\n", (s > 0 ? c / s : 0)}'
}

# One case: label, then the bench arguments shared by both programs.
compare() {
    local label=$1; shift
    local s=() q=()
    for _ in $(seq "$REPS"); do
        s+=("$(iops "$STRATA_IMG" "$@")")
        q+=("$(iops qemu-img "$@")")
    done
    local sm qm
    sm=$(printf '%s\n' "${s[@]}" | median)
    qm=$(printf '%s\n' "${q[@]}" | median)
    printf '%-48s strata %9.0f IOPS  qemu-img %9.0f IOPS  ratio %.2f\n' "$label" "$sm" "$qm" \
        "$(awk -v a="$sm" -v b="$qm" 'BEGIN {print (b > 0 ? a / b : 0)}')"
}

fio_iops() { # $1 = rw (randread/randwrite/read/write)
    fio --name=b --filename="$IMG" --ioengine=libaio --direct=1 --rw="$1" --bs=4k \
        --iodepth=64 --size=1G --runtime=5 --time_based=0 --number_ios=100000 \
        --output-format=terse --terse-version=3 2>/dev/null |
        awk -F';' -v rw="$1" '{print (rw ~ /write/ ? $49 : $8)}'
}

echo "# block core: strata-img bench vs qemu-img bench, median of $REPS, alternating"
NULL="driver=null-co,size=1G"
compare "null-co 4k read depth 1" -c 200000 -d 1 --image-opts "$NULL"
compare "null-co 4k read depth 64" -c 500000 -d 64 --image-opts "$NULL"

dd if=/dev/zero of="$IMG" bs=1M count=1024 status=none
sync
compare "raw 1G 4k read wb io_uring depth 1" -c 200000 -d 1 -t writeback -i io_uring -f raw "$IMG"
compare "raw 1G 4k read wb depth 1" -c 100000 -d 1 -t writeback -f raw "$IMG"
compare "raw 1G 4k read wb depth 64" -c 200000 -d 64 -t writeback -f raw "$IMG"
compare "raw 1G 4k write wb depth 1" -c 100000 -d 1 -w -t writeback -f raw "$IMG"
compare "raw 1G 4k write wb depth 64" -c 100000 -d 64 -w -t writeback -f raw "$IMG"
compare "raw 1G 4k read none native depth 64" -c 100000 -d 64 -t none -n -f raw "$IMG"
compare "raw 1G 4k write none native depth 64" -c 100000 -d 64 -w -t none -n -f raw "$IMG"
if command -v fio >/dev/null; then
    for rw in read write; do
        f=$(fio_iops "$rw")
        s=$(iops "$STRATA_IMG" -c 100000 -d 64 $([ $rw = write ] && echo -w) -t none -n -f raw "$IMG")
        printf '%-48s strata %9.0f IOPS  fio      %9.0f IOPS  ratio %.2f\n' \
            "raw 1G 4k $rw none libaio depth 64 (fio)" "$s" "$f" \
            "$(awk -v a="$s" -v b="$f" 'BEGIN {print (b > 0 ? a / b : 0)}')"
    done
fi

echo "# multiqueue: one node driven from 2 IOThreads vs 1 (strata-img bench --iothreads)"
# One case: label, request count, then the target's bench arguments; runs with 1 and 2
# IOThreads alternate.  null-co runs millions of requests a second: 3M of them make each run
# long enough to time.
multiqueue() {
    local label=$1 count=$2; shift 2
    local r1=() r2=() one two
    for _ in $(seq "$REPS"); do
        r1+=("$(iops "$STRATA_IMG" -c "$count" -d 64 "$@" --iothreads=1)")
        r2+=("$(iops "$STRATA_IMG" -c "$count" -d 64 "$@" --iothreads=2)")
    done
    one=$(printf '%s\n' "${r1[@]}" | median)
    two=$(printf '%s\n' "${r2[@]}" | median)
    printf '%-48s 1 IOThread %9.0f IOPS  2 IOThreads %9.0f IOPS  ratio %.2f\n' "$label" "$one" \
        "$two" "$(awk -v a="$two" -v b="$one" 'BEGIN {print (b > 0 ? a / b : 0)}')"
}
multiqueue "null-co 4k read depth 64" 3000000 --image-opts "$NULL"
multiqueue "raw 1G 4k read wb io_uring depth 64" 500000 -t writeback -i io_uring -f raw "$IMG"
