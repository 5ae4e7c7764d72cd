/*
 * BlockBackend: the root of a graph that users do I/O through.
 *
 * Request path: count the request in the backend's in_flight, wait while
 * a drained section holds the node (queued requests yield on a FIFO under
 * queue_lock and are woken by drained_end), take the graph reader lock,
 * check the range against the node's length, call bdrv_co_*, account.
 *
 * Threads: requests come from any thread and run in the caller's
 * AioContext.  The in-flight count and the statistics live in per-thread
 * slots (block/shard.h), so that threads driving one backend do not share
 * a written cache line; quiesce_counter is an atomic that only drains
 * write.  queue_lock guards the list of waiting coroutines and is never
 * held across a yield.  Everything else (root, permissions, flags,
 * refcnt) changes in the main loop only, while the backend is drained.
 */
#include "block/block-backend.h"

#include <errno.h>
#include <pthread.h>

#include "block/block-int.h"
#include "block/block-priv.h"
#include "block/shard.h"

/* The BlockAcctStats counters, as atomics (relaxed: they order nothing). */
typedef struct BlkStats {
    _Atomic uint64_t rd_ops, wr_ops, flush_ops, discard_ops;
    _Atomic uint64_t rd_bytes, wr_bytes, discard_bytes;
    _Atomic uint64_t rd_total_ns, wr_total_ns, flush_total_ns;
    _Atomic uint64_t failed_rd_ops, failed_wr_ops, failed_flush_ops;
} BlkStats;

/* One thread's slot of the backend's per-request counters. */
typedef struct BlkShard {
    BdrvInFlight in_flight;
    BlkStats stats;
} __attribute__((aligned(BDRV_CACHE_LINE))) BlkShard;

struct BlockBackend {
    char *name;
    int refcnt;
    BdrvChild *root;
    uint64_t perm;
    uint64_t shared_perm;
    bool allow_write_beyond_eof;
    bool disable_request_queuing;
    _Atomic bool enable_write_cache;

    _Atomic int quiesce_counter;
    pthread_mutex_t queue_lock;
    GQueue queued; /* Coroutine * waiting for the drained section to end */

    BlkShard *shards; /* BDRV_SHARDS slots: requests in flight, statistics */
};

/* ---- in-flight and queuing ---------------------------------------------------- */

static void blk_inc_in_flight(BlockBackend *blk)
{
    bdrv_in_flight_begin(&blk->shards[bdrv_shard_index()].in_flight);
}

static void blk_dec_in_flight(BlockBackend *blk)
{
    bdrv_in_flight_end(&blk->shards[bdrv_shard_index()].in_flight);
    bdrv_kick_drain_waiters();
}

static bool blk_has_in_flight(BlockBackend *blk)
{
    return bdrv_in_flight_count(&blk->shards[0].in_flight, sizeof(BlkShard)) > 0;
}

/*
 * Called with the request counted in flight.  While the backend is
 * quiesced, stops counting it (so the drain can complete) and sleeps.
 */
static void coroutine_fn blk_wait_while_drained(BlockBackend *blk)
{
    while (atomic_load(&blk->quiesce_counter) && !blk->disable_request_queuing) {
        pthread_mutex_lock(&blk->queue_lock);
        if (!atomic_load(&blk->quiesce_counter)) {
            pthread_mutex_unlock(&blk->queue_lock);
            return;
        }
        g_queue_push_tail(&blk->queued, co_self());
        pthread_mutex_unlock(&blk->queue_lock);
        blk_dec_in_flight(blk);
        /* blk_root_drained_end's wake-up reaches us only after this yield. */
        co_yield();
        blk_inc_in_flight(blk);
    }
}

static char *blk_root_get_parent_desc(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;
    return blk->name ? g_strdup_printf("block device '%s'", blk->name)
                     : g_strdup("an unnamed block device");
}

static void blk_root_drained_begin(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;
    atomic_fetch_add(&blk->quiesce_counter, 1);
}

static void blk_root_drained_end(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;
    GQueue waiters = G_QUEUE_INIT;

    pthread_mutex_lock(&blk->queue_lock);
    int old = atomic_fetch_sub(&blk->quiesce_counter, 1);
    g_assert(old > 0);
    if (old == 1) {
        waiters = blk->queued;
        g_queue_init(&blk->queued);
    }
    pthread_mutex_unlock(&blk->queue_lock);

    for (GList *l = waiters.head; l; l = l->next) {
        aio_co_wake(l->data);
    }
    g_queue_clear(&waiters);
}

static bool blk_root_drained_poll(BdrvChild *c)
{
    return blk_has_in_flight(c->opaque);
}

static const BdrvChildClass child_root = {
    .get_parent_desc = blk_root_get_parent_desc,
    .drained_begin = blk_root_drained_begin,
    .drained_end = blk_root_drained_end,
    .drained_poll = blk_root_drained_poll,
};

/* ---- global state ------------------------------------------------------------ */

BlockBackend *blk_new(uint64_t perm, uint64_t shared_perm)
{
    GLOBAL_STATE_CODE();
    BlockBackend *blk = g_new0(BlockBackend, 1);
    blk->refcnt = 1;
    blk->perm = perm;
    blk->shared_perm = shared_perm;
    atomic_init(&blk->enable_write_cache, true);
    pthread_mutex_init(&blk->queue_lock, NULL);
    g_queue_init(&blk->queued);
    blk->shards = g_aligned_alloc0(BDRV_SHARDS, sizeof(BlkShard), _Alignof(BlkShard));
    return blk;
}

BlockBackend *blk_new_open(const char *filename, GHashTable *options, int flags, GError **errp)
{
    GLOBAL_STATE_CODE();
    uint64_t perm = BLK_PERM_CONSISTENT_READ;
    uint64_t shared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;

    if (flags & BDRV_O_RDWR) {
        perm |= BLK_PERM_WRITE;
    }
    if (flags & BDRV_O_RESIZE) {
        perm |= BLK_PERM_RESIZE;
    }
    if (flags & BDRV_O_NO_IO) {
        perm = 0;
    }
    if (flags & BDRV_O_FORCE_SHARE) {
        shared = BLK_PERM_ALL;
    }
    BlockDriverState *bs = bdrv_open(filename, options, flags & ~BDRV_O_RESIZE, errp);
    if (!bs) {
        return NULL;
    }
    BlockBackend *blk = blk_new(perm, shared);
    blk->root = bdrv_root_attach_child(
        bs, "root", &child_root, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY, perm, shared, blk, errp);
    if (!blk->root) {
        blk_unref(blk);
        return NULL;
    }
    return blk;
}

void blk_ref(BlockBackend *blk)
{
    GLOBAL_STATE_CODE();
    blk->refcnt++;
}

void blk_unref(BlockBackend *blk)
{
    GLOBAL_STATE_CODE();
    if (!blk) {
        return;
    }
    g_assert(blk->refcnt > 0);
    if (--blk->refcnt > 0) {
        return;
    }
    blk_remove_bs(blk);
    blk_drain(blk);
    g_assert(g_queue_is_empty(&blk->queued));
    pthread_mutex_destroy(&blk->queue_lock);
    g_aligned_free(blk->shards);
    g_free(blk->name);
    g_free(blk);
}

void blk_set_name(BlockBackend *blk, const char *name)
{
    GLOBAL_STATE_CODE();
    g_free(blk->name);
    blk->name = g_strdup(name);
}

const char *blk_name(BlockBackend *blk)
{
    return blk->name;
}

bool blk_insert_bs(BlockBackend *blk, BlockDriverState *bs, GError **errp)
{
    GLOBAL_STATE_CODE();
    g_assert(!blk->root);
    bdrv_ref(bs);
    blk->root =
        bdrv_root_attach_child(bs, "root", &child_root, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                               blk->perm, blk->shared_perm, blk, errp);
    return blk->root != NULL;
}

void blk_remove_bs(BlockBackend *blk)
{
    GLOBAL_STATE_CODE();
    BdrvChild *root = blk->root;
    if (!root) {
        return;
    }
    BlockDriverState *bs = root->bs;
    /* Queued requests resume after the end and find no medium. */
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    blk->root = NULL;
    bdrv_root_unref_child(root);
    bdrv_drained_end(bs);
    bdrv_unref(bs);
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    return blk->root ? blk->root->bs : NULL;
}

bool blk_set_perm(BlockBackend *blk, uint64_t perm, uint64_t shared_perm, GError **errp)
{
    GLOBAL_STATE_CODE();
    if (blk->root && !bdrv_child_try_set_perm(blk->root, perm, shared_perm, errp)) {
        return false;
    }
    blk->perm = perm;
    blk->shared_perm = shared_perm;
    return true;
}

void blk_get_perm(BlockBackend *blk, uint64_t *perm, uint64_t *shared_perm)
{
    *perm = blk->perm;
    *shared_perm = blk->shared_perm;
}

void blk_set_allow_write_beyond_eof(BlockBackend *blk, bool allow)
{
    GLOBAL_STATE_CODE();
    blk->allow_write_beyond_eof = allow;
}

void blk_set_enable_write_cache(BlockBackend *blk, bool enable)
{
    atomic_store(&blk->enable_write_cache, enable);
}

bool blk_enable_write_cache(BlockBackend *blk)
{
    return atomic_load(&blk->enable_write_cache);
}

void blk_set_disable_request_queuing(BlockBackend *blk, bool disable)
{
    GLOBAL_STATE_CODE();
    blk->disable_request_queuing = disable;
}

void blk_drain(BlockBackend *blk)
{
    GLOBAL_STATE_CODE();
    BlockDriverState *bs = blk_bs(blk);
    if (bs) {
        bdrv_ref(bs);
        bdrv_drained_begin(bs);
    }
    /* Also covers asynchronous requests whose callback has not run yet. */
    BDRV_WAIT_IN_FLIGHT(blk_has_in_flight(blk));
    if (bs) {
        bdrv_drained_end(bs);
        bdrv_unref(bs);
    }
}

/* Sums one BlkStats field over the slots (a running total, not a snapshot). */
#define STAT_SUM(field) bdrv_shard_sum(&blk->shards[0].stats.field, sizeof(BlkShard))

void blk_get_stats(BlockBackend *blk, BlockAcctStats *st)
{
    *st = (BlockAcctStats){
        .rd_ops = STAT_SUM(rd_ops),
        .wr_ops = STAT_SUM(wr_ops),
        .flush_ops = STAT_SUM(flush_ops),
        .discard_ops = STAT_SUM(discard_ops),
        .rd_bytes = STAT_SUM(rd_bytes),
        .wr_bytes = STAT_SUM(wr_bytes),
        .discard_bytes = STAT_SUM(discard_bytes),
        .rd_total_ns = STAT_SUM(rd_total_ns),
        .wr_total_ns = STAT_SUM(wr_total_ns),
        .flush_total_ns = STAT_SUM(flush_total_ns),
        .failed_rd_ops = STAT_SUM(failed_rd_ops),
        .failed_wr_ops = STAT_SUM(failed_wr_ops),
        .failed_flush_ops = STAT_SUM(failed_flush_ops),
    };
}

/* ---- coroutine requests -------------------------------------------------------- */

typedef enum BlkOp {
    BLK_OP_READ,
    BLK_OP_WRITE,
    BLK_OP_WRITE_ZEROES,
    BLK_OP_DISCARD,
    BLK_OP_FLUSH,
    BLK_OP_LOAD_VMSTATE, /* the VM state area: offsets are not bounded by the length */
    BLK_OP_SAVE_VMSTATE,
} BlkOp;

#define STAT_ADD(field, v) bdrv_shard_add(&st->field, (v))

/* Counts a finished request in the calling thread's slot. */
static void blk_account(BlockBackend *blk, BlkOp op, int64_t bytes, int64_t start_ns, int ret)
{
    uint64_t ns = aio_clock_ns() - start_ns;
    BlkStats *st = &blk->shards[bdrv_shard_index()].stats;
    switch (op) {
    case BLK_OP_READ:
        STAT_ADD(rd_ops, 1);
        STAT_ADD(rd_bytes, bytes);
        STAT_ADD(rd_total_ns, ns);
        if (ret < 0) {
            STAT_ADD(failed_rd_ops, 1);
        }
        break;
    case BLK_OP_WRITE:
    case BLK_OP_WRITE_ZEROES:
        STAT_ADD(wr_ops, 1);
        STAT_ADD(wr_bytes, bytes);
        STAT_ADD(wr_total_ns, ns);
        if (ret < 0) {
            STAT_ADD(failed_wr_ops, 1);
        }
        break;
    case BLK_OP_DISCARD:
        STAT_ADD(discard_ops, 1);
        STAT_ADD(discard_bytes, bytes);
        break;
    case BLK_OP_FLUSH:
        STAT_ADD(flush_ops, 1);
        STAT_ADD(flush_total_ns, ns);
        if (ret < 0) {
            STAT_ADD(failed_flush_ops, 1);
        }
        break;
    case BLK_OP_LOAD_VMSTATE:
    case BLK_OP_SAVE_VMSTATE:
        break; /* not guest I/O: QEMU does not count it either */
    }
}

/* -EINVAL for malformed ranges, -EIO past the end (unless writes may grow it). */
static int coroutine_fn blk_check_range(BlockBackend *blk, int64_t offset, int64_t bytes,
                                        bool write)
{
    if (!blk->root) {
        return -ENOMEDIUM;
    }
    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes) {
        return -EINVAL;
    }
    if (write && blk->allow_write_beyond_eof) {
        return 0;
    }
    int64_t len = bdrv_co_getlength(blk->root->bs);
    if (len < 0) {
        return len;
    }
    if (offset > len || bytes > len - offset) {
        return -EIO;
    }
    return 0;
}

/*
 * The body every request shares: queue while drained, lock the graph,
 * check, run.  @counted: the caller (an asynchronous request) already
 * counts the request in flight, and keeps counting it until its callback.
 */
static int coroutine_fn blk_co_do(BlockBackend *blk, BlkOp op, int64_t offset, int64_t bytes,
                                  IOVector *qiov, BdrvRequestFlags flags, bool counted)
{
    int64_t start = aio_clock_ns();
    int ret;

    if (!counted) {
        blk_inc_in_flight(blk);
    }
    blk_wait_while_drained(blk);
    bdrv_graph_co_rdlock();

    if (op == BLK_OP_FLUSH) {
        ret = blk->root ? bdrv_co_flush(blk->root->bs) : -ENOMEDIUM;
    } else if (op == BLK_OP_LOAD_VMSTATE || op == BLK_OP_SAVE_VMSTATE) {
        ret = blk->root ? 0 : -ENOMEDIUM; /* the node checks the range */
    } else {
        ret = blk_check_range(blk, offset, bytes, op != BLK_OP_READ);
    }
    if (ret == 0 && op != BLK_OP_FLUSH) {
        if ((op == BLK_OP_WRITE || op == BLK_OP_WRITE_ZEROES) &&
            !atomic_load(&blk->enable_write_cache)) {
            flags |= BDRV_REQ_FUA;
        }
        switch (op) {
        case BLK_OP_READ:
            ret = bdrv_co_preadv(blk->root, offset, bytes, qiov, flags);
            break;
        case BLK_OP_WRITE:
            ret = bdrv_co_pwritev(blk->root, offset, bytes, qiov, flags);
            break;
        case BLK_OP_WRITE_ZEROES:
            ret = bdrv_co_pwrite_zeroes(blk->root, offset, bytes, flags);
            break;
        case BLK_OP_DISCARD:
            ret = bdrv_co_pdiscard(blk->root, offset, bytes);
            break;
        case BLK_OP_LOAD_VMSTATE:
            ret = bdrv_co_preadv_vmstate(blk->root->bs, offset, bytes, qiov);
            break;
        case BLK_OP_SAVE_VMSTATE:
            ret = bdrv_co_pwritev_vmstate(blk->root->bs, offset, bytes, qiov);
            /* Write-through applies to the VM state too: flush instead of FUA. */
            if (ret == 0 && !atomic_load(&blk->enable_write_cache)) {
                ret = bdrv_co_flush(blk->root->bs);
            }
            break;
        case BLK_OP_FLUSH:
            break;
        }
    }

    bdrv_graph_co_rdunlock();
    blk_account(blk, op, bytes, start, ret);
    if (!counted) {
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
                               BdrvRequestFlags flags)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_READ, offset, bytes, qiov, flags, false);
}

int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_WRITE, offset, bytes, qiov, flags, false);
}

int coroutine_fn blk_co_preadv_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes,
                                       IOVector *qiov)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_LOAD_VMSTATE, offset, bytes, qiov, 0, false);
}

int coroutine_fn blk_co_pwritev_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes,
                                        IOVector *qiov)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_SAVE_VMSTATE, offset, bytes, qiov, 0, false);
}

int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
                              BdrvRequestFlags flags)
{
    IOVector v;
    iov_init_buf(&v, buf, bytes < 0 ? 0 : bytes);
    return blk_co_preadv(blk, offset, bytes, &v, flags);
}

int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
                               BdrvRequestFlags flags)
{
    IOVector v;
    iov_init_buf(&v, (void *)buf, bytes < 0 ? 0 : bytes);
    return blk_co_pwritev(blk, offset, bytes, &v, flags);
}

int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_WRITE_ZEROES, offset, bytes, NULL, flags, false);
}

int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_DISCARD, offset, bytes, NULL, 0, false);
}

int coroutine_fn blk_co_flush(BlockBackend *blk)
{
    IO_CODE();
    return blk_co_do(blk, BLK_OP_FLUSH, 0, 0, NULL, 0, false);
}

int64_t coroutine_fn blk_co_getlength(BlockBackend *blk)
{
    IO_CODE();
    GRAPH_RDLOCK_GUARD();
    return blk->root ? bdrv_co_getlength(blk->root->bs) : -ENOMEDIUM;
}

int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, GError **errp)
{
    IO_CODE();
    int ret;
    blk_inc_in_flight(blk);
    blk_wait_while_drained(blk);
    bdrv_graph_co_rdlock();
    if (!blk->root) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NODEV, "No medium inserted");
        ret = -ENOMEDIUM;
    } else {
        ret = bdrv_co_truncate(blk->root, offset, exact, prealloc, flags, errp);
    }
    bdrv_graph_co_rdunlock();
    blk_dec_in_flight(blk);
    return ret;
}

int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset, int64_t bytes,
                                     int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    IO_CODE();
    int ret;
    blk_inc_in_flight(blk);
    blk_wait_while_drained(blk);
    bdrv_graph_co_rdlock();
    if (!blk->root) {
        ret = -ENOMEDIUM;
    } else {
        ret = bdrv_co_block_status_above(blk->root->bs, NULL, true, offset, bytes, pnum, map, file);
    }
    bdrv_graph_co_rdunlock();
    blk_dec_in_flight(blk);
    return ret;
}

/* ---- synchronous forms ------------------------------------------------------------ */

typedef struct BlkSync {
    BlockBackend *blk;
    BlkOp op;
    int64_t offset, bytes;
    IOVector *qiov;
    BdrvRequestFlags flags;
    int ret;
} BlkSync;

static void coroutine_fn blk_sync_entry(void *opaque)
{
    BlkSync *s = opaque;
    s->ret = blk_co_do(s->blk, s->op, s->offset, s->bytes, s->qiov, s->flags, false);
}

static int blk_sync(BlockBackend *blk, BlkOp op, int64_t offset, int64_t bytes, IOVector *qiov,
                    BdrvRequestFlags flags)
{
    BlkSync s = {blk, op, offset, bytes, qiov, flags, 0};
    bdrv_run_co(blk_sync_entry, &s);
    return s.ret;
}

int blk_preadv(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
               BdrvRequestFlags flags)
{
    return blk_sync(blk, BLK_OP_READ, offset, bytes, qiov, flags);
}

int blk_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes, IOVector *qiov,
                BdrvRequestFlags flags)
{
    return blk_sync(blk, BLK_OP_WRITE, offset, bytes, qiov, flags);
}

int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf, BdrvRequestFlags flags)
{
    IOVector v;
    iov_init_buf(&v, buf, bytes < 0 ? 0 : bytes);
    return blk_sync(blk, BLK_OP_READ, offset, bytes, &v, flags);
}

int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
               BdrvRequestFlags flags)
{
    IOVector v;
    iov_init_buf(&v, (void *)buf, bytes < 0 ? 0 : bytes);
    return blk_sync(blk, BLK_OP_WRITE, offset, bytes, &v, flags);
}

int blk_load_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf)
{
    IOVector v;
    iov_init_buf(&v, buf, bytes < 0 ? 0 : bytes);
    return blk_sync(blk, BLK_OP_LOAD_VMSTATE, offset, bytes, &v, 0);
}

int blk_save_vmstate(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf)
{
    IOVector v;
    iov_init_buf(&v, (void *)buf, bytes < 0 ? 0 : bytes);
    return blk_sync(blk, BLK_OP_SAVE_VMSTATE, offset, bytes, &v, 0);
}

int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags)
{
    return blk_sync(blk, BLK_OP_WRITE_ZEROES, offset, bytes, NULL, flags);
}

int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    return blk_sync(blk, BLK_OP_DISCARD, offset, bytes, NULL, 0);
}

int blk_flush(BlockBackend *blk)
{
    return blk_sync(blk, BLK_OP_FLUSH, 0, 0, NULL, 0);
}

typedef struct BlkSyncMisc {
    BlockBackend *blk;
    int64_t offset, bytes;
    bool exact;
    PreallocMode prealloc;
    BdrvRequestFlags flags;
    GError **errp;
    int64_t *pnum, *map;
    BlockDriverState **file;
    int64_t ret;
} BlkSyncMisc;

static void coroutine_fn blk_getlength_entry(void *opaque)
{
    BlkSyncMisc *s = opaque;
    s->ret = blk_co_getlength(s->blk);
}

static void coroutine_fn blk_truncate_entry(void *opaque)
{
    BlkSyncMisc *s = opaque;
    s->ret = blk_co_truncate(s->blk, s->offset, s->exact, s->prealloc, s->flags, s->errp);
}

static void coroutine_fn blk_block_status_entry(void *opaque)
{
    BlkSyncMisc *s = opaque;
    s->ret = blk_co_block_status(s->blk, s->offset, s->bytes, s->pnum, s->map, s->file);
}

int64_t blk_getlength(BlockBackend *blk)
{
    BlkSyncMisc s = {.blk = blk};
    bdrv_run_co(blk_getlength_entry, &s);
    return s.ret;
}

int blk_truncate(BlockBackend *blk, int64_t offset, bool exact, PreallocMode prealloc,
                 BdrvRequestFlags flags, GError **errp)
{
    BlkSyncMisc s = {.blk = blk,
                     .offset = offset,
                     .exact = exact,
                     .prealloc = prealloc,
                     .flags = flags,
                     .errp = errp};
    bdrv_run_co(blk_truncate_entry, &s);
    return s.ret;
}

int blk_block_status(BlockBackend *blk, int64_t offset, int64_t bytes, int64_t *pnum, int64_t *map,
                     BlockDriverState **file)
{
    BlkSyncMisc s = {
        .blk = blk, .offset = offset, .bytes = bytes, .pnum = pnum, .map = map, .file = file};
    bdrv_run_co(blk_block_status_entry, &s);
    return s.ret;
}

/* ---- asynchronous forms -------------------------------------------------------------- */

typedef struct BlkAioCB {
    BlockBackend *blk;
    BlkOp op;
    int64_t offset, bytes;
    IOVector *qiov;
    BdrvRequestFlags flags;
    BlockCompletionFunc *cb;
    void *opaque;
    int ret;
    bool in_submit; /* still inside blk_aio_*: the callback must wait for a BH */
    bool done;
} BlkAioCB;

static void blk_aio_complete(BlkAioCB *acb)
{
    BlockBackend *blk = acb->blk;
    acb->cb(acb->opaque, acb->ret);
    g_free(acb);
    blk_dec_in_flight(blk);
}

static void blk_aio_complete_bh(void *opaque)
{
    blk_aio_complete(opaque);
}

static void coroutine_fn blk_aio_entry(void *opaque)
{
    BlkAioCB *acb = opaque;
    acb->ret = blk_co_do(acb->blk, acb->op, acb->offset, acb->bytes, acb->qiov, acb->flags, true);
    acb->done = true;
    if (!acb->in_submit) {
        blk_aio_complete(acb);
    }
}

static void blk_aio_start(BlockBackend *blk, BlkOp op, int64_t offset, int64_t bytes,
                          IOVector *qiov, BdrvRequestFlags flags, BlockCompletionFunc *cb,
                          void *opaque)
{
    AioContext *ctx = aio_get_current();
    BlkAioCB *acb = g_new(BlkAioCB, 1);

    g_assert(ctx);
    *acb = (BlkAioCB){.blk = blk,
                      .op = op,
                      .offset = offset,
                      .bytes = bytes,
                      .qiov = qiov,
                      .flags = flags,
                      .cb = cb,
                      .opaque = opaque,
                      .in_submit = true};
    /* Counted until the callback has run, so that blk_drain waits for it. */
    blk_inc_in_flight(blk);
    co_enter(co_create(blk_aio_entry, acb));
    acb->in_submit = false;
    if (acb->done) {
        aio_bh_schedule_oneshot(ctx, blk_aio_complete_bh, acb);
    }
}

void blk_aio_preadv(BlockBackend *blk, int64_t offset, IOVector *qiov, BdrvRequestFlags flags,
                    BlockCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLK_OP_READ, offset, qiov->size, qiov, flags, cb, opaque);
}

void blk_aio_pwritev(BlockBackend *blk, int64_t offset, IOVector *qiov, BdrvRequestFlags flags,
                     BlockCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLK_OP_WRITE, offset, qiov->size, qiov, flags, cb, opaque);
}

void blk_aio_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags,
                           BlockCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLK_OP_WRITE_ZEROES, offset, bytes, NULL, flags, cb, opaque);
}

void blk_aio_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes, BlockCompletionFunc *cb,
                      void *opaque)
{
    blk_aio_start(blk, BLK_OP_DISCARD, offset, bytes, NULL, 0, cb, opaque);
}

void blk_aio_flush(BlockBackend *blk, BlockCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLK_OP_FLUSH, 0, 0, NULL, 0, cb, opaque);
}
