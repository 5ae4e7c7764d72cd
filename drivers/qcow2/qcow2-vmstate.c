/*
 * qcow2 VM state area (the co_preadv_vmstate / co_pwritev_vmstate callbacks).
 *
 * A qcow2 image keeps saved VM state in its own guest address space, just
 * past the disk: the area starts at the first guest offset that the L1
 * entries covering the disk do not reach (l1_vm_state_index << (cluster_bits
 * + l2_bits)), so it never shares an L2 table with disk data.  Reads and
 * writes there are ordinary guest I/O at that offset: the data path grows
 * L1 as needed and reads unallocated clusters from the backing chain (or as
 * zeroes past its end).  The block layer bounds guest requests by the disk
 * size; calling the data path directly is what lets these go beyond it.
 *
 * Locking: the data path takes s->lock itself; the size is read under it.
 */
#include "drivers/qcow2/qcow2.h"

/* Guest offset where the VM state area starts. */
static uint64_t coroutine_fn vmstate_base(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    co_mutex_lock(&s->lock);
    uint64_t base = qcow2_l1_entries_for(s, s->size) * qcow2_l2_span(s);
    co_mutex_unlock(&s->lock);
    return base;
}

int coroutine_fn qcow2_co_preadv_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov)
{
    bdrv_debug_event(bs->file, BLKDBG_VMSTATE_LOAD);
    return qcow2_co_preadv_impl(bs, (int64_t)vmstate_base(bs) + offset, bytes, qiov);
}

int coroutine_fn qcow2_co_pwritev_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          IOVector *qiov)
{
    bdrv_debug_event(bs->file, BLKDBG_VMSTATE_SAVE);
    return qcow2_co_pwritev_impl(bs, (int64_t)vmstate_base(bs) + offset, bytes, qiov);
}
