/*
 * Synchronous forms of the node requests, for code that is not in a
 * coroutine (driver open, image creation, front ends).
 *
 * Called outside a coroutine, a wrapper runs the request in a new
 * coroutine in the calling thread's AioContext and polls that context
 * until it is done; the coroutine takes the graph reader lock.  Called
 * inside a coroutine, it just calls the coroutine_fn (the caller holds
 * the reader lock, as for any bdrv_co_* call).  Never from a thread
 * without an AioContext.
 */
#include "block/block-priv.h"

#include <errno.h>

typedef struct RunCo {
    CoroutineEntry *entry;
    void *opaque;
    AioContext *ctx;
    _Atomic bool done;
} RunCo;

static void coroutine_fn run_co_entry(void *opaque)
{
    RunCo *r = opaque;
    r->entry(r->opaque);
    atomic_store(&r->done, true);
    /* If something moved the coroutine elsewhere, wake the poller up. */
    if (aio_get_current() != r->ctx) {
        aio_notify(r->ctx);
    }
}

void bdrv_run_co(CoroutineEntry *entry, void *opaque)
{
    if (co_in_coroutine()) {
        entry(opaque);
        return;
    }
    RunCo r = {.entry = entry, .opaque = opaque, .ctx = aio_get_current()};
    g_assert(r.ctx);
    co_enter(co_create(run_co_entry, &r));
    while (!atomic_load(&r.done)) {
        aio_poll(r.ctx, true);
    }
}

typedef enum SyncOp {
    SYNC_PREAD,
    SYNC_PWRITE,
    SYNC_PWRITE_ZEROES,
    SYNC_PDISCARD,
    SYNC_FLUSH,
    SYNC_GETLENGTH,
    SYNC_TRUNCATE,
    SYNC_BLOCK_STATUS_ABOVE,
    SYNC_IS_ALLOCATED_ABOVE,
} SyncOp;

typedef struct SyncReq {
    SyncOp op;
    bool take_lock;
    BdrvChild *child;
    BlockDriverState *bs, *base;
    int64_t offset, bytes;
    void *buf;
    BdrvRequestFlags flags;
    bool exact, include_base;
    PreallocMode prealloc;
    GError **errp;
    int64_t *pnum, *map;
    BlockDriverState **file;
    int64_t ret;
} SyncReq;

static int64_t coroutine_fn sync_req_do(SyncReq *r)
{
    switch (r->op) {
    case SYNC_PREAD:
        return bdrv_co_pread(r->child, r->offset, r->bytes, r->buf, r->flags);
    case SYNC_PWRITE:
        return bdrv_co_pwrite(r->child, r->offset, r->bytes, r->buf, r->flags);
    case SYNC_PWRITE_ZEROES:
        return bdrv_co_pwrite_zeroes(r->child, r->offset, r->bytes, r->flags);
    case SYNC_PDISCARD:
        return bdrv_co_pdiscard(r->child, r->offset, r->bytes);
    case SYNC_FLUSH:
        return bdrv_co_flush(r->bs);
    case SYNC_GETLENGTH:
        return bdrv_co_getlength(r->bs);
    case SYNC_TRUNCATE:
        return bdrv_co_truncate(r->child, r->offset, r->exact, r->prealloc, r->flags, r->errp);
    case SYNC_BLOCK_STATUS_ABOVE:
        return bdrv_co_block_status_above(r->bs, r->base, true, r->offset, r->bytes, r->pnum,
                                          r->map, r->file);
    case SYNC_IS_ALLOCATED_ABOVE:
        return bdrv_co_is_allocated_above(r->bs, r->base, r->include_base, r->offset, r->bytes,
                                          r->pnum);
    }
    g_assert_not_reached();
}

static void coroutine_fn sync_req_entry(void *opaque)
{
    SyncReq *r = opaque;
    if (r->take_lock) {
        bdrv_graph_co_rdlock();
    }
    r->ret = sync_req_do(r);
    if (r->take_lock) {
        bdrv_graph_co_rdunlock();
    }
}

static int64_t sync_req_run(SyncReq *r)
{
    r->take_lock = !co_in_coroutine();
    bdrv_run_co(sync_req_entry, r);
    return r->ret;
}

int bdrv_pread(BdrvChild *child, int64_t offset, int64_t bytes, void *buf, BdrvRequestFlags flags)
{
    SyncReq r = {.op = SYNC_PREAD,
                 .child = child,
                 .offset = offset,
                 .bytes = bytes,
                 .buf = buf,
                 .flags = flags};
    return sync_req_run(&r);
}

int bdrv_pwrite(BdrvChild *child, int64_t offset, int64_t bytes, const void *buf,
                BdrvRequestFlags flags)
{
    SyncReq r = {.op = SYNC_PWRITE,
                 .child = child,
                 .offset = offset,
                 .bytes = bytes,
                 .buf = (void *)buf,
                 .flags = flags};
    return sync_req_run(&r);
}

int bdrv_pwrite_sync(BdrvChild *child, int64_t offset, int64_t bytes, const void *buf,
                     BdrvRequestFlags flags)
{
    int ret = bdrv_pwrite(child, offset, bytes, buf, flags);
    return ret < 0 ? ret : bdrv_flush(child->bs);
}

int bdrv_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes, BdrvRequestFlags flags)
{
    SyncReq r = {
        .op = SYNC_PWRITE_ZEROES, .child = child, .offset = offset, .bytes = bytes, .flags = flags};
    return sync_req_run(&r);
}

int bdrv_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes)
{
    SyncReq r = {.op = SYNC_PDISCARD, .child = child, .offset = offset, .bytes = bytes};
    return sync_req_run(&r);
}

int bdrv_flush(BlockDriverState *bs)
{
    SyncReq r = {.op = SYNC_FLUSH, .bs = bs};
    return sync_req_run(&r);
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    SyncReq r = {.op = SYNC_GETLENGTH, .bs = bs};
    return sync_req_run(&r);
}

int64_t bdrv_refresh_total_bytes(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    atomic_store(&bs->total_bytes, -1);
    return bdrv_getlength(bs);
}

int bdrv_truncate(BdrvChild *child, int64_t offset, bool exact, PreallocMode prealloc,
                  BdrvRequestFlags flags, GError **errp)
{
    SyncReq r = {.op = SYNC_TRUNCATE,
                 .child = child,
                 .offset = offset,
                 .exact = exact,
                 .prealloc = prealloc,
                 .flags = flags,
                 .errp = errp};
    return sync_req_run(&r);
}

int bdrv_block_status_above(BlockDriverState *bs, BlockDriverState *base, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    SyncReq r = {.op = SYNC_BLOCK_STATUS_ABOVE,
                 .bs = bs,
                 .base = base,
                 .offset = offset,
                 .bytes = bytes,
                 .pnum = pnum,
                 .map = map,
                 .file = file};
    return sync_req_run(&r);
}

int bdrv_is_allocated_above(BlockDriverState *top, BlockDriverState *base, bool include_base,
                            int64_t offset, int64_t bytes, int64_t *pnum)
{
    SyncReq r = {.op = SYNC_IS_ALLOCATED_ABOVE,
                 .bs = top,
                 .base = base,
                 .include_base = include_base,
                 .offset = offset,
                 .bytes = bytes,
                 .pnum = pnum};
    return sync_req_run(&r);
}
