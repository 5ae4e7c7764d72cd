/*
 * job-top filter (see job-filter.h).  Its state is one hook pointer pair,
 * changed only while the filter is drained, read by requests with acquire
 * loads.  The driver is registered the first time a job inserts one.
 */
#include "jobs/job-filter.h"

#include <errno.h>

typedef struct JobFilterState {
    JobFilterWriteFunc *_Atomic write_fn;
    void *_Atomic opaque;
} JobFilterState;

static bool job_filter_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    bs->supported_truncate_flags = BDRV_REQ_ZERO_WRITE;
    return true;
}

static int coroutine_fn job_filter_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                             IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn job_filter_write(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov, BdrvRequestFlags flags)
{
    JobFilterState *s = bs->opaque;
    JobFilterWriteFunc *fn = atomic_load_explicit(&s->write_fn, memory_order_acquire);
    if (fn) {
        return fn(atomic_load_explicit(&s->opaque, memory_order_acquire), bs->file, offset, bytes,
                  qiov, flags);
    }
    if (!qiov) {
        return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags & ~BDRV_REQ_ZERO_WRITE);
    }
    return bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn job_filter_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                              IOVector *qiov, BdrvRequestFlags flags)
{
    return job_filter_write(bs, offset, bytes, qiov, flags);
}

static int coroutine_fn job_filter_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                    int64_t bytes, BdrvRequestFlags flags)
{
    return job_filter_write(bs, offset, bytes, NULL, flags | BDRV_REQ_ZERO_WRITE);
}

static int coroutine_fn job_filter_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int64_t coroutine_fn job_filter_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

static int coroutine_fn job_filter_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                               PreallocMode prealloc, BdrvRequestFlags flags,
                                               GError **errp)
{
    return bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
}

static bool job_filter_reopen_prepare(BDRVReopenState *state, GError **errp)
{
    return true;
}

/* Passes down what the users above need, but lets anybody else do anything below. */
static void job_filter_child_perm(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role,
                                  uint64_t perm, uint64_t shared, uint64_t *nperm,
                                  uint64_t *nshared)
{
    *nperm = perm;
    *nshared = BLK_PERM_ALL;
}

static BlockDriver bdrv_job_top = {
    .format_name = "job-top",
    .instance_size = sizeof(JobFilterState),
    .is_filter = true,
    .open = job_filter_open,
    .co_preadv = job_filter_co_preadv,
    .co_pwritev = job_filter_co_pwritev,
    .co_pwrite_zeroes = job_filter_co_pwrite_zeroes,
    .co_pdiscard = job_filter_co_pdiscard,
    .co_getlength = job_filter_co_getlength,
    .co_truncate = job_filter_co_truncate,
    .co_block_status = bdrv_co_block_status_from_file,
    .reopen_prepare = job_filter_reopen_prepare,
    .child_perm = job_filter_child_perm,
};

BlockDriverState *job_filter_insert(BlockDriverState *bs, GError **errp)
{
    GLOBAL_STATE_CODE();
    bdrv_register(&bdrv_job_top);
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", bdrv_job_top.format_name);
    /* The users above keep seeing the same node: writable, discarding, as before. */
    int flags = bs->open_flags & (BDRV_O_RDWR | BDRV_O_UNMAP);
    BlockDriverState *filter = bdrv_insert_node(bs, opts, flags, errp);
    if (filter) {
        bdrv_ref(filter);
    }
    return filter;
}

void job_filter_set_write_hook(BlockDriverState *filter, JobFilterWriteFunc *fn, void *opaque)
{
    GLOBAL_STATE_CODE();
    JobFilterState *s = filter->opaque;
    g_assert(filter->drv == &bdrv_job_top);
    bdrv_drained_begin(filter);
    atomic_store_explicit(&s->opaque, opaque, memory_order_release);
    atomic_store_explicit(&s->write_fn, fn, memory_order_release);
    bdrv_drained_end(filter);
}

bool job_filter_drop(BlockDriverState *filter, BlockDriverState *replacement, GError **errp)
{
    GLOBAL_STATE_CODE();
    bool ok;
    job_filter_set_write_hook(filter, NULL, NULL);
    if (replacement) {
        ok = bdrv_replace_node(filter, replacement, errp);
    } else {
        ok = bdrv_drop_filter(filter, errp);
    }
    bdrv_unref(filter);
    return ok;
}
