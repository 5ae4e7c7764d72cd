/*
 * passthrough: a filter that forwards every request to its "file" child
 * unchanged.  It is what tests insert and remove while I/O runs, and the
 * smallest example of a filter driver.  No state, so no locking.
 */
#include "block/block-int.h"

static bool passthrough_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    bs->supported_truncate_flags = BDRV_REQ_ZERO_WRITE;
    return true;
}

static int coroutine_fn passthrough_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                              IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn passthrough_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                               IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn passthrough_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                     int64_t bytes, BdrvRequestFlags flags)
{
    return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn passthrough_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int64_t coroutine_fn passthrough_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

static int coroutine_fn passthrough_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                                PreallocMode prealloc, BdrvRequestFlags flags,
                                                GError **errp)
{
    return bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
}

static bool passthrough_reopen_prepare(BDRVReopenState *state, GError **errp)
{
    return true;
}

BlockDriver bdrv_passthrough = {
    .format_name = "passthrough",
    .instance_size = 0,
    .is_filter = true,
    .open = passthrough_open,
    .co_preadv = passthrough_co_preadv,
    .co_pwritev = passthrough_co_pwritev,
    .co_pwrite_zeroes = passthrough_co_pwrite_zeroes,
    .co_pdiscard = passthrough_co_pdiscard,
    .co_getlength = passthrough_co_getlength,
    .co_truncate = passthrough_co_truncate,
    .co_block_status = bdrv_co_block_status_from_file,
    .reopen_prepare = passthrough_reopen_prepare,
};
