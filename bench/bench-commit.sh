#!/usr/bin/env bash
# Commit benchmark: strata-img commit against qemu-img commit on the same
# input in one run.  The programs alternate, each run gets a fresh copy of
# the images, every case is repeated, and the medians of wall time are
# printed with their ratio.  Target (docs/design/jobs.md): <= 0.8x qemu-img.
#
# The input is a SIZE qcow2 base holding data everywhere and a qcow2
# overlay on it with half of its 64 KiB clusters written (chosen at random,
# random bytes): commit copies SIZE/2 into the base, then empties the
# overlay.  Cases: the default (writeback cache), -t none (O_DIRECT), and -d
# (the copy alone, without emptying the overlay afterwards).  Medians of the
# wall time and of the CPU time (user + system, from /usr/bin/time).
#
#   SIZE=1G (default) REPS=5 BENCH_DIR=/var/tmp STRATA_BUILD=build
set -euo pipefail
B=${STRATA_BUILD:-build}
REPS=${REPS:-5}
SIZE=${SIZE:-1G}
DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/strata-bench-commit.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
STRATA_IMG=$(cd "$B" && pwd)/strata-img

[ -x "$STRATA_IMG" ] || { echo "bench-commit: $STRATA_IMG is missing" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "bench-commit: qemu-img is not installed" >&2; exit 1; }
command -v qemu-io >/dev/null || { echo "bench-commit: qemu-io is not installed" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# base.qcow2: SIZE of data; top.qcow2: every other 64 KiB cluster on average,
# chosen at random, written with qemu-io (so the rest stays unallocated).
make_input() {
    qemu-img create -q -f raw "$DIR/base.raw" "$SIZE"
    python3 - "$DIR/base.raw" "$DIR/top.cmds" <<'EOF'
import os, random, sys
base, cmds = sys.argv[1], sys.argv[2]
chunk = 64 * 1024
n = os.path.getsize(base) // chunk
random.seed(42)
with open(base, "r+b") as f:
    for i in range(0, n, 16):
        f.seek(i * chunk)
        f.write(bytes([i % 251 + 1]) * chunk * 16)
with open(cmds, "w") as f:
    for i in sorted(random.sample(range(n), n // 2)):
        f.write("write -P %d %d %d\n" % (i % 253 + 1, i * chunk, chunk))
EOF
    qemu-img convert -f raw -O qcow2 "$DIR/base.raw" "$DIR/base.qcow2.orig"
    rm -f "$DIR/base.raw"
    (cd "$DIR" && qemu-img create -q -f qcow2 -b base.qcow2.orig -F qcow2 top.qcow2.orig "$SIZE" &&
        qemu-io top.qcow2.orig <top.cmds >/dev/null &&
        qemu-img rebase -u -b base.qcow2 -F qcow2 top.qcow2.orig)
    rm -f "$DIR/top.cmds"
}

# A run on fresh copies: prints the wall time and the CPU time (user +
# system) in seconds, or "fail".
run_one() {
    local prog=$1; shift
    cp "$DIR/base.qcow2.orig" "$DIR/base.qcow2"
    cp "$DIR/top.qcow2.orig" "$DIR/top.qcow2"
    sync
    if ! (cd "$DIR" && /usr/bin/time -f '%e %U %S' -o "$DIR/time" \
        "$prog" commit "$@" top.qcow2 >/dev/null 2>"$DIR/err"); then
        echo fail
        return
    fi
    awk '{printf "%s %.2f\n", $1, $2 + $3}' "$DIR/time"
}

compare() {
    local label=$1; shift
    local st=() qt=() sc=() qc=() r
    for _ in $(seq "$REPS"); do
        r=$(run_one "$STRATA_IMG" "$@")
        [ "$r" = fail ] && { printf '%-24s strata-img failed: %s\n' "$label" "$(head -n 1 "$DIR/err")"; return; }
        st+=("${r% *}") sc+=("${r#* }")
        r=$(run_one qemu-img "$@")
        [ "$r" = fail ] && { echo "qemu-img failed: $(cat "$DIR/err")" >&2; exit 1; }
        qt+=("${r% *}") qc+=("${r#* }")
    done
    local sm qm
    sm=$(printf '%s\n' "${st[@]}" | median)
    qm=$(printf '%s\n' "${qt[@]}" | median)
    printf '%-24s strata-img %7.3f s (cpu %.2f)   qemu-img %7.3f s (cpu %.2f)   ratio %.2f\n' \
        "$label" "$sm" "$(printf '%s\n' "${sc[@]}" | median)" "$qm" \
        "$(printf '%s\n' "${qc[@]}" | median)" "$(echo "$sm / $qm" | bc -l)"
}

make_input
# The two programs must agree on the result.
run_one "$STRATA_IMG" >/dev/null
cp "$DIR/base.qcow2" "$DIR/base.strata"
run_one qemu-img >/dev/null
qemu-img compare -q "$DIR/base.strata" "$DIR/base.qcow2" ||
    { echo "bench-commit: strata-img and qemu-img committed different data" >&2; exit 1; }
rm -f "$DIR/base.strata"

echo "commit of a $SIZE overlay, half allocated, into a full base ($REPS runs, medians)"
compare "default (writeback)"
compare "-t none" -t none
# The copy alone (top left as it is): separates the job from emptying the overlay.
compare "-d (no emptying)" -d
