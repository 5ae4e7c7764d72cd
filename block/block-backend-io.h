/*
 * BlockBackend, I/O code: requests.  Any thread with an AioContext; a
 * request runs in the caller's context and thread, takes the graph reader
 * lock itself and, while a node below is drained, waits in the backend
 * until the section ends.
 */
#ifndef STRATA_BLOCK_BACKEND_IO_H
#define STRATA_BLOCK_BACKEND_IO_H

#include "block/block-backend-common.h"

/* ---- I/O: coroutine forms ------------------------------------------------- */

int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
                               BdrvRequestFlags flags);
/* Flags may hold BDRV_REQ_WRITE_COMPRESSED: -ENOTSUP when the format cannot compress. */
int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags);
int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
                              BdrvRequestFlags flags);
int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
                               BdrvRequestFlags flags);
/*
 * The VM state area (see bdrv_co_preadv_vmstate): @offset is relative to
 * it and not bounded by the length; a write is flushed in write-through
 * mode.  -ENOTSUP when the image has no such area (raw).
 */
int coroutine_fn blk_co_preadv_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes,
                                       IOVector *qiov);
int coroutine_fn blk_co_pwritev_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes,
                                        IOVector *qiov);
int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags);
int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
int coroutine_fn blk_co_flush(BlockBackend *blk);
int64_t coroutine_fn blk_co_getlength(BlockBackend *blk);
int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, GError **errp);
/* Status through the whole chain below the root (bdrv_co_block_status_above). */
int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset, int64_t bytes,
                                     int64_t *pnum, int64_t *map, BlockDriverState **file);

/* ---- I/O: synchronous forms (in a coroutine they call the forms above) ---- */

int blk_preadv(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
               BdrvRequestFlags flags);
int blk_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
                BdrvRequestFlags flags);
int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf, BdrvRequestFlags flags);
int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
               BdrvRequestFlags flags);
int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags);
int blk_load_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf);
int blk_save_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf);
int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
int blk_flush(BlockBackend *blk);
int64_t blk_getlength(BlockBackend *blk);
int blk_truncate(BlockBackend *blk, int64_t offset, bool exact, PreallocMode prealloc,
                 BdrvRequestFlags flags, GError **errp);
int blk_block_status(BlockBackend *blk, int64_t offset, int64_t bytes, int64_t *pnum, int64_t *map,
                     BlockDriverState **file);

/* ---- I/O: asynchronous forms ------------------------------------------------ */

/*
 * Start the request in the calling thread's context and return; @cb runs
 * later in that same thread (never before the call returns) with the
 * result.  @qiov and @buf must stay valid until then.
 */
void blk_aio_preadv(BlockBackend *blk, int64_t offset, IOVector *qiov, BdrvRequestFlags flags,
                    BlockCompletionFunc *cb, void *opaque);
void blk_aio_pwritev(BlockBackend *blk, int64_t offset, IOVector *qiov, BdrvRequestFlags flags,
                     BlockCompletionFunc *cb, void *opaque);
void blk_aio_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags,
                           BlockCompletionFunc *cb, void *opaque);
void blk_aio_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes, BlockCompletionFunc *cb,
                      void *opaque);
void blk_aio_flush(BlockBackend *blk, BlockCompletionFunc *cb, void *opaque);

#endif /* STRATA_BLOCK_BACKEND_IO_H */
