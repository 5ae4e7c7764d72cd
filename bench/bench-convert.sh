#!/usr/bin/env bash
# Convert benchmark: strata-img convert against qemu-img convert on the same
# inputs in one run.  The programs alternate, every case is repeated, and
# the medians of wall time and peak RSS are printed with their ratios.
#
# The input is a SIZE raw image half full of random data in scattered 64 KiB
# chunks (the rest are holes), and its qcow2 copy.  Cases: raw->qcow2,
# qcow2->raw, qcow2->qcow2, each with the defaults and with -m 16 -W; then
# compressed qcow2->qcow2 with zlib and zstd.  Targets (docs/design/
# performance.md): time <= 0.8x qemu-img (plain), <= 0.6x (compressed),
# peak RSS <= qemu-img + 16 MiB.
#
#   SIZE=2G (default) REPS=3 BENCH_DIR=/var/tmp STRATA_BUILD=build
#   CASES="raw-qcow2 zlib ..." runs only the named cases (see the list below)
#
# CPU time (user + sys) is printed beside wall time: on a loaded machine it
# is the steadier figure.  Each run starts after a sync, with the input in
# the page cache.  On a busy
# machine (other builds running) single runs vary by 2x: use REPS=7 or more,
# and read the load average printed first.
set -euo pipefail
B=${STRATA_BUILD:-build}
REPS=${REPS:-3}
SIZE=${SIZE:-2G}
DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/strata-bench-convert.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
STRATA_IMG=$(cd "$B" && pwd)/strata-img
SRC_RAW="$DIR/src.raw"
SRC_QCOW2="$DIR/src.qcow2"
TIME=/usr/bin/time

[ -x "$STRATA_IMG" ] || { echo "bench-convert: $STRATA_IMG is missing" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "bench-convert: qemu-img is not installed" >&2; exit 1; }
[ -x "$TIME" ] || { echo "bench-convert: $TIME (GNU time) is not installed" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The input: every other 64 KiB cluster on average, chosen at random, filled
# with random bytes.
make_input() {
    qemu-img create -q -f raw "$SRC_RAW" "$SIZE"
    python3 - "$SRC_RAW" <<'EOF'
import os, random, sys
path = sys.argv[1]
chunk = 64 * 1024
n = os.path.getsize(path) // chunk
random.seed(42)
with open(path, "r+b") as f:
    for i in sorted(random.sample(range(n), n // 2)):
        f.seek(i * chunk)
        f.write(os.urandom(chunk))
EOF
    qemu-img convert -f raw -O qcow2 "$SRC_RAW" "$SRC_QCOW2"
}

# One run: prints "seconds max-rss-KiB cpu-seconds", or "fail" when the program failed.
# $1 = program, rest = convert arguments; the target is $DIR/out.
run_one() {
    local prog=$1; shift
    rm -f "$DIR/out"
    sync
    if ! "$TIME" -f '%e %M %U %S' -o "$DIR/time" "$prog" convert "$@" "$DIR/out" >/dev/null 2>"$DIR/err"
    then
        echo fail
        return
    fi
    awk '{ print $1, $2, $3 + $4 }' "$DIR/time"
}

# One case: label, then the convert arguments shared by both programs.
compare() {
    local label=$1; shift
    local st=() sr=() sc=() qt=() qr=() qc=() r f
    for _ in $(seq "$REPS"); do
        r=$(run_one "$STRATA_IMG" "$@")
        if [ "$r" = fail ]; then
            printf '%-34s strata-img failed: %s\n' "$label" "$(head -n 1 "$DIR/err")"
            return
        fi
        read -ra f <<<"$r"
        st+=("${f[0]}") sr+=("${f[1]}") sc+=("${f[2]}")
        r=$(run_one qemu-img "$@")
        [ "$r" = fail ] && { echo "qemu-img failed: $(cat "$DIR/err")" >&2; exit 1; }
        read -ra f <<<"$r"
        qt+=("${f[0]}") qr+=("${f[1]}") qc+=("${f[2]}")
    done
    local smt smr smc qmt qmr qmc
    smt=$(printf '%s\n' "${st[@]}" | median)
    smr=$(printf '%s\n' "${sr[@]}" | median)
    qmt=$(printf '%s\n' "${qt[@]}" | median)
    qmr=$(printf '%s\n' "${qr[@]}" | median)
    smc=$(printf '%s\n' "${sc[@]}" | median)
    qmc=$(printf '%s\n' "${qc[@]}" | median)
    printf '%-34s strata %6.2fs %5.0f MiB  qemu-img %6.2fs %5.0f MiB  time ratio %.2f  rss %+.0f MiB  cpu %.2fs / %.2fs\n' \
        "$label" "$smt" "$(awk -v k="$smr" 'BEGIN {print k / 1024}')" "$qmt" \
        "$(awk -v k="$qmr" 'BEGIN {print k / 1024}')" \
        "$(awk -v a="$smt" -v b="$qmt" 'BEGIN {print (b > 0 ? a / b : 0)}')" \
        "$(awk -v a="$smr" -v b="$qmr" 'BEGIN {print (a - b) / 1024}')" "$smc" "$qmc"
}

want() { [ -z "${CASES:-}" ] || [[ " $CASES " == *" $1 "* ]]; }

make_input
echo "input: $SIZE raw, half random data in 64 KiB chunks; $REPS runs each, medians"
echo "load average: $(cut -d ' ' -f 1-3 /proc/loadavg), $(nproc) CPUs"
want raw-qcow2 && compare "raw->qcow2" -f raw -O qcow2 "$SRC_RAW"
want raw-qcow2-W && compare "raw->qcow2 -m 16 -W" -f raw -O qcow2 -m 16 -W "$SRC_RAW"
want qcow2-raw && compare "qcow2->raw" -f qcow2 -O raw "$SRC_QCOW2"
want qcow2-raw-W && compare "qcow2->raw -m 16 -W" -f qcow2 -O raw -m 16 -W "$SRC_QCOW2"
want qcow2-qcow2 && compare "qcow2->qcow2" -f qcow2 -O qcow2 "$SRC_QCOW2"
want qcow2-qcow2-W && compare "qcow2->qcow2 -m 16 -W" -f qcow2 -O qcow2 -m 16 -W "$SRC_QCOW2"
want raw-raw-C && compare "raw->raw -C" -f raw -O raw -C "$SRC_RAW"
want zlib && compare "qcow2->qcow2 -c (zlib)" -f qcow2 -O qcow2 -c "$SRC_QCOW2"
want zstd && compare "qcow2->qcow2 -c zstd" -f qcow2 -O qcow2 -c -o compression_type=zstd \
    "$SRC_QCOW2"
exit 0
