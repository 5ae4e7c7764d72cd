#!/usr/bin/env bash
# Makes the seed corpus of the qcow2 fuzz target: small valid images made
# by qemu-img and qemu-io, one per feature the driver parses (v2, v3,
# small and large clusters, extended L2, compressed clusters, internal
# snapshots, bitmaps, lazy refcounts left dirty, backing file name,
# external data file, zstd).  No binaries live in the repository: make
# fuzz-run calls this.
#
#   scripts/make-fuzz-corpus.sh DIR
set -euo pipefail
dir=${1:?usage: make-fuzz-corpus.sh DIR}
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
command -v qemu-img >/dev/null || { echo "make-fuzz-corpus: qemu-img is missing" >&2; exit 1; }

img() { # NAME SIZE OPTS [qemu-io commands...]
    local name=$1 size=$2 opts=$3
    shift 3
    qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "$tmp/$name" "$size"
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    if [ ${#args[@]} -gt 0 ]; then
        qemu-io -f qcow2 "${args[@]}" "$tmp/$name" >/dev/null
    fi
}

img empty-v3 1M cluster_size=512
img empty-v2 1M compat=0.10,cluster_size=512
img data-512 256k cluster_size=512 "write -P 0x11 0 4k" "write -P 0x22 100k 1k" "write -z 8k 4k"
img data-v2 256k compat=0.10,cluster_size=1k "write -P 0x33 1k 3k"
img extl2 1M cluster_size=16k,extended_l2=on "write -P 0x44 2k 2k" "write -z 32k 16k"
img compressed 256k cluster_size=4k "write -c -P 0x55 0 4k" "write -c -P 0x66 8k 4k"
img zstd 256k cluster_size=4k,compression_type=zstd "write -c -P 0x77 0 4k"
img refcount1 256k cluster_size=512,refcount_bits=1 "write 0 2k"
img refcount64 256k cluster_size=512,refcount_bits=64 "write 0 2k"
img big-cluster 1M cluster_size=8k "write -P 0x12 0 512"
img snapshot 256k cluster_size=512 "write -P 0x13 0 2k"
qemu-img snapshot -c one "$tmp/snapshot"
qemu-io -f qcow2 -c "write -P 0x14 512 1k" "$tmp/snapshot" >/dev/null
img bitmaps 256k cluster_size=512 "write 0 1k"
qemu-img bitmap -q --add "$tmp/bitmaps" b0 2>/dev/null || true
img lazy 256k cluster_size=512,lazy_refcounts=on "write -P 0x15 0 2k"
# Dirty: the refcounts were never written back (a crash with lazy refcounts).
printf '\x01' | dd of="$tmp/lazy" bs=1 seek=79 conv=notrunc status=none
qemu-img create -q -f raw "$tmp/base.raw" 256k
img backing 256k cluster_size=512,backing_file=base.raw,backing_fmt=raw "write 1k 1k"
img datafile 256k cluster_size=512,data_file=data.raw "write 0 1k"
img preallocated 64k cluster_size=512,preallocation=metadata

for f in empty-v3 empty-v2 data-512 data-v2 extl2 compressed zstd refcount1 refcount64 \
    big-cluster snapshot bitmaps lazy backing datafile preallocated; do
    cp "$tmp/$f" "$dir/$f.qcow2"
done
echo "make-fuzz-corpus: $(ls "$dir" | wc -l) images in $dir"
