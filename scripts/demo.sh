#!/usr/bin/env bash
# make demo: the main job end to end on local files.
#   1. the foundation: coroutines in IOThreads sharing work (strata-demo);
#   2. the image pipeline: a qcow2 base written with strata-io, an overlay
#      with more data, the chain inspected with strata-img info, flattened
#      by strata-img convert into a compressed standalone qcow2, and the
#      result verified by the real qemu-img (compare and check).
set -euo pipefail
B=${STRATA_BUILD:-build}
B=$(cd "$B" && pwd)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"
step() { printf '\n== %s\n' "$*"; }
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }

step "foundation: coroutines, IOThreads, thread pools, CoMutex"
run "$B/strata-demo"

step "create a 256 MiB qcow2 base image and write data into it with strata-io"
run "$B/strata-img" create -f qcow2 base.qcow2 256M
run "$B/strata-io" -c "write -P 0xa1 0 4M" -c "write -P 0xa2 64M 2M" -c "write -z 100M 1M" base.qcow2

step "create an overlay on it and write more (partly over the base's data)"
run "$B/strata-img" create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
run "$B/strata-io" -c "write -P 0xb1 2M 4M" -c "write -P 0xb2 200M 1M" -c "read -P 0xa1 0 2M" \
    overlay.qcow2

step "inspect the chain"
run "$B/strata-img" info --backing-chain overlay.qcow2

step "flatten the chain into a compressed standalone qcow2"
run "$B/strata-img" convert -p -c -O qcow2 overlay.qcow2 flat.qcow2
run "$B/strata-img" info flat.qcow2

step "verify with the real qemu-img"
run qemu-img compare overlay.qcow2 flat.qcow2
run qemu-img check flat.qcow2
run "$B/strata-io" -c "read -P 0xa1 0 2M" -c "read -P 0xb1 2M 4M" -c "read -P 0xa2 64M 2M" \
    -c "read -P 0xb2 200M 1M" -c "read -P 0 100M 1M" flat.qcow2

printf '\nDemo complete: the chain was flattened and compressed, and qemu-img agrees.\n'
