/*
 * Block layer, I/O code: requests on nodes.  Callable from any thread that
 * runs an AioContext; a request runs in the caller's context.
 *
 * bdrv_co_* functions are coroutine_fn and expect the caller to hold the
 * graph reader lock (driver callbacks already do; BlockBackend takes it).
 * The synchronous forms (no _co_) work inside and outside coroutines: from
 * outside, they run a coroutine and poll the calling thread's AioContext
 * until it finishes, taking the reader lock themselves.
 *
 * Errors: -EINVAL for bad offsets/lengths (negative, overflowing, over
 * BDRV_REQUEST_MAX_BYTES), -EIO for reads past the end, -EPERM for writes
 * to a read-only node or to sector 0 of a probed raw image,
 * -ENOMEDIUM for a node without a driver, -ENOTSUP for unsupported
 * operations; anything else comes from the driver.
 */
#ifndef STRATA_BLOCK_IO_H
#define STRATA_BLOCK_IO_H

#include "block/block-common.h"
#include "block/graph-lock.h"
#include "block/iov.h"

/* --- requests through an edge (the parent's view) --- */

int coroutine_fn GRAPH_RDLOCK bdrv_co_preadv(BdrvChild *child, int64_t offset, int64_t bytes,
                                             IOVector *qiov, BdrvRequestFlags flags);
int coroutine_fn GRAPH_RDLOCK bdrv_co_pwritev(BdrvChild *child, int64_t offset, int64_t bytes,
                                              IOVector *qiov, BdrvRequestFlags flags);
int coroutine_fn GRAPH_RDLOCK bdrv_co_pread(BdrvChild *child, int64_t offset, int64_t bytes,
                                            void *buf, BdrvRequestFlags flags);
int coroutine_fn GRAPH_RDLOCK bdrv_co_pwrite(BdrvChild *child, int64_t offset, int64_t bytes,
                                             const void *buf, BdrvRequestFlags flags);
/* Makes the range read as zeroes; flags: MAY_UNMAP, FUA, NO_FALLBACK. */
int coroutine_fn GRAPH_RDLOCK bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes,
                                                    BdrvRequestFlags flags);
/* Hint that the range is unused; returns 0 when the driver cannot discard. */
int coroutine_fn GRAPH_RDLOCK bdrv_co_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes);
/* Resizes; needs the resize permission on @child. */
int coroutine_fn GRAPH_RDLOCK bdrv_co_truncate(BdrvChild *child, int64_t offset, bool exact,
                                               PreallocMode prealloc, BdrvRequestFlags flags,
                                               GError **errp);

/*
 * The VM state area (saved VM state, qemu-io read/write -b): @offset is
 * relative to the area, not bounded by the disk length.  Nodes without
 * one pass the request to their file child; -ENOTSUP when nothing below
 * has one (raw over file), -EPERM for writes to a read-only node.
 */
int coroutine_fn GRAPH_RDLOCK bdrv_co_preadv_vmstate(BlockDriverState *bs, int64_t offset,
                                                     int64_t bytes, IOVector *qiov);
int coroutine_fn GRAPH_RDLOCK bdrv_co_pwritev_vmstate(BlockDriverState *bs, int64_t offset,
                                                      int64_t bytes, IOVector *qiov);

/* --- node-level queries and flush --- */

/* Flushes the node, then its children, recursively. */
int coroutine_fn GRAPH_RDLOCK bdrv_co_flush(BlockDriverState *bs);
/* Length in bytes, or -errno. */
int64_t coroutine_fn GRAPH_RDLOCK bdrv_co_getlength(BlockDriverState *bs);
int64_t coroutine_fn GRAPH_RDLOCK bdrv_co_get_allocated_file_size(BlockDriverState *bs);
/*
 * Status of [offset, offset + bytes) in @bs alone (BDRV_BLOCK_* bits for
 * the first *pnum bytes).  Unlike the driver callback it never returns RAW
 * or RECURSE: it follows them.  @map and @file may be NULL.
 */
int coroutine_fn GRAPH_RDLOCK bdrv_co_block_status(BlockDriverState *bs, bool want_zero,
                                                   int64_t offset, int64_t bytes, int64_t *pnum,
                                                   int64_t *map, BlockDriverState **file);
/*
 * Status seen through the chain from @bs down to (excluding) @base, as
 * a reader of @bs sees it: ALLOCATED when some layer above @base decides.
 * @base NULL: the whole chain.
 */
int coroutine_fn GRAPH_RDLOCK bdrv_co_block_status_above(BlockDriverState *bs,
                                                         BlockDriverState *base, bool want_zero,
                                                         int64_t offset, int64_t bytes,
                                                         int64_t *pnum, int64_t *map,
                                                         BlockDriverState **file);
/* 1 when @bs itself holds the first *pnum bytes, 0 when not, -errno on error. */
int coroutine_fn GRAPH_RDLOCK bdrv_co_is_allocated(BlockDriverState *bs, int64_t offset,
                                                   int64_t bytes, int64_t *pnum);
/*
 * 1 when some node from @top down to @base (included only when
 * @include_base) holds the first *pnum bytes, 0 when none does.
 */
int coroutine_fn GRAPH_RDLOCK bdrv_co_is_allocated_above(BlockDriverState *top,
                                                         BlockDriverState *base, bool include_base,
                                                         int64_t offset, int64_t bytes,
                                                         int64_t *pnum);

/* --- synchronous forms (any thread with an AioContext, in or out of coroutines) --- */

int bdrv_pread(BdrvChild *child, int64_t offset, int64_t bytes, void *buf, BdrvRequestFlags flags);
int bdrv_pwrite(BdrvChild *child, int64_t offset, int64_t bytes, const void *buf,
                BdrvRequestFlags flags);
/* Write then flush the child's node. */
int bdrv_pwrite_sync(BdrvChild *child, int64_t offset, int64_t bytes, const void *buf,
                     BdrvRequestFlags flags);
int bdrv_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes, BdrvRequestFlags flags);
int bdrv_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes);
int bdrv_flush(BlockDriverState *bs);
int64_t bdrv_getlength(BlockDriverState *bs);
int bdrv_truncate(BdrvChild *child, int64_t offset, bool exact, PreallocMode prealloc,
                  BdrvRequestFlags flags, GError **errp);
int bdrv_block_status_above(BlockDriverState *bs, BlockDriverState *base, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map, BlockDriverState **file);
int bdrv_is_allocated_above(BlockDriverState *top, BlockDriverState *base, bool include_base,
                            int64_t offset, int64_t bytes, int64_t *pnum);

/*
 * Runs @entry(@opaque) to completion: called directly when already in a
 * coroutine, else in a new coroutine while the calling thread's context
 * is polled.  The building block of every synchronous form.
 */
void bdrv_run_co(CoroutineEntry *entry, void *opaque);

/* --- cheap accessors (any thread; the graph ones under the reader lock) --- */

const char *bdrv_get_node_name(const BlockDriverState *bs);
const char *bdrv_get_format_name(const BlockDriverState *bs);
/* The child whose data shows through: a filter's file, else the backing child. */
BdrvChild *GRAPH_RDLOCK bdrv_filter_or_cow_child(BlockDriverState *bs);
/* The backing node, or NULL. */
BlockDriverState *GRAPH_RDLOCK bdrv_cow_bs(BlockDriverState *bs);
/* Follows filters down to the first node that is not one. */
BlockDriverState *GRAPH_RDLOCK bdrv_skip_filters(BlockDriverState *bs);

#endif /* STRATA_BLOCK_IO_H */
