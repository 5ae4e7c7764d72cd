/*
 * The block jobs' copy engine (see block-copy.h).
 *
 * Bookkeeping: ops_in_flight / bytes_in_flight count started operations
 * and are only touched in the main loop (operations are main-loop
 * coroutines).  The locked ranges are a list under a pthread mutex because
 * mirror's write-blocking writers lock ranges from IOThreads.  A locker
 * that finds an overlapping range adds itself to that range's waiters and
 * yields; the unlocker wakes every waiter, which then looks again.
 *
 * Every 64 MiB written, a flush of the target starts in the background (one
 * at a time, counted as an operation, so drain and the job wait for it): the
 * copied data reaches the disk during the copy rather than all in the job's
 * final flush.  Its failure fails the job whatever the error policy.
 *
 * Order of a copy: clear the bits, lock the range, read, write, unlock.
 * A guest write that lands after the clear marks the bits again (the
 * request path marks after the write), so the granule is copied again
 * later; the lock makes that later copy wait for this one.
 */
#include "jobs/block-copy.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-io.h"
#include "coroutine/co-lock.h"

#define BLOCK_COPY_MAX_IO   (1 << 20)
#define BLOCK_COPY_BUF_SIZE (16 << 20)
#define BLOCK_COPY_MAX_OPS  64
#define BLOCK_COPY_ALIGN    4096
/* Bytes written to the target after which a flush starts in the background. */
#define BLOCK_COPY_WRITEBACK (64 << 20)

struct BlockCopy {
    Job *job;
    BdrvDirtyBitmap *work;
    BlockCopyOptions o;
    int64_t granularity;
    int64_t length;

    int64_t cursor;          /* where the next search for dirty areas starts */
    int ops_in_flight;       /* main loop */
    int64_t bytes_in_flight; /* main loop */
    Coroutine *waiter;       /* the coroutine in block_copy_co_wait_*, if any */
    int ret;                 /* first reported error */
    int failures;            /* failed operations, whatever the policy did */
    int last_failure;        /* -errno of the latest one */

    pthread_mutex_t lock; /* guards ranges */
    BlockCopyRange *ranges;

    GSList *free_bufs; /* spare max_io buffers */

    int64_t unflushed;  /* bytes written to the target since the last background flush began */
    bool flush_started; /* a background flush is in flight (counts in ops_in_flight) */
};

typedef struct BlockCopyOp {
    BlockCopy *bc;
    int64_t offset, bytes;
    bool zero;
    BlockCopyRange range;
} BlockCopyOp;

BlockCopy *block_copy_new(Job *job, BdrvDirtyBitmap *work, const BlockCopyOptions *o)
{
    BlockCopy *bc = g_new0(BlockCopy, 1);
    bc->job = job;
    bc->work = work;
    bc->o = *o;
    bc->granularity = bdrv_dirty_bitmap_granularity(work);
    bc->length = bdrv_dirty_bitmap_size(work);
    if (bc->o.max_io <= 0) {
        bc->o.max_io = BLOCK_COPY_MAX_IO;
    }
    bc->o.max_io = MAX(bc->o.max_io / bc->granularity, 1) * bc->granularity;
    if (bc->o.buf_size <= 0) {
        bc->o.buf_size = BLOCK_COPY_BUF_SIZE;
    }
    bc->o.buf_size = MAX(bc->o.buf_size, bc->o.max_io);
    pthread_mutex_init(&bc->lock, NULL);
    return bc;
}

void block_copy_free(BlockCopy *bc)
{
    if (!bc) {
        return;
    }
    g_assert(bc->ops_in_flight == 0 && !bc->ranges);
    g_slist_free_full(bc->free_bufs, free);
    pthread_mutex_destroy(&bc->lock);
    g_free(bc);
}

int block_copy_ops_in_flight(const BlockCopy *bc)
{
    return bc->ops_in_flight;
}

int64_t block_copy_bytes_in_flight(const BlockCopy *bc)
{
    return bc->bytes_in_flight;
}

bool block_copy_budget_full(const BlockCopy *bc)
{
    return bc->bytes_in_flight >= bc->o.buf_size || bc->ops_in_flight >= BLOCK_COPY_MAX_OPS;
}

int block_copy_ret(const BlockCopy *bc)
{
    return bc->ret;
}

/* ---- range locks ----------------------------------------------------------------------------- */

static bool ranges_overlap(const BlockCopyRange *a, int64_t offset, int64_t bytes)
{
    return a->offset < offset + bytes && offset < a->offset + a->bytes;
}

void coroutine_fn block_copy_co_lock_range(BlockCopy *bc, BlockCopyRange *r, int64_t offset,
                                           int64_t bytes)
{
    int64_t g = bc->granularity;
    int64_t start = offset / g * g;
    int64_t end = (offset + bytes + g - 1) / g * g;

    *r = (BlockCopyRange){.offset = start, .bytes = end - start};
    for (;;) {
        pthread_mutex_lock(&bc->lock);
        BlockCopyRange *busy = bc->ranges;
        while (busy && !ranges_overlap(busy, r->offset, r->bytes)) {
            busy = busy->next;
        }
        if (!busy) {
            r->next = bc->ranges;
            bc->ranges = r;
            pthread_mutex_unlock(&bc->lock);
            return;
        }
        busy->waiters = g_slist_prepend(busy->waiters, co_self());
        pthread_mutex_unlock(&bc->lock);
        /* The unlocker's wake-up reaches us only after this yield. */
        co_yield();
    }
}

void block_copy_unlock_range(BlockCopy *bc, BlockCopyRange *r)
{
    pthread_mutex_lock(&bc->lock);
    BlockCopyRange **link = &bc->ranges;
    while (*link != r) {
        g_assert(*link);
        link = &(*link)->next;
    }
    *link = r->next;
    GSList *waiters = r->waiters;
    r->waiters = NULL;
    pthread_mutex_unlock(&bc->lock);
    for (GSList *l = waiters; l; l = l->next) {
        aio_co_wake(l->data);
    }
    g_slist_free(waiters);
}

/* ---- operations ------------------------------------------------------------------------------ */

static void *block_copy_get_buf(BlockCopy *bc)
{
    if (bc->free_bufs) {
        void *buf = bc->free_bufs->data;
        bc->free_bufs = g_slist_delete_link(bc->free_bufs, bc->free_bufs);
        return buf;
    }
    void *buf;
    if (posix_memalign(&buf, BLOCK_COPY_ALIGN, bc->o.max_io) != 0) {
        g_error("out of memory allocating a copy buffer");
    }
    return buf;
}

static void block_copy_put_buf(BlockCopy *bc, void *buf)
{
    bc->free_bufs = g_slist_prepend(bc->free_bufs, buf);
}

/* A request failed: the policy decides; anything but report retries the range later. */
static void block_copy_op_error(BlockCopyOp *op, bool is_read, int ret)
{
    BlockCopy *bc = op->bc;
    JobErrorPolicy policy = is_read ? bc->o.on_source_error : bc->o.on_target_error;
    JobErrorAction action = job_error_action(bc->job, policy, is_read, ret);
    bc->failures++;
    bc->last_failure = ret;
    if (action == JOB_ACTION_REPORT) {
        if (bc->ret == 0) {
            bc->ret = ret;
        }
    } else {
        bdrv_set_dirty_bitmap(bc->work, op->offset, op->bytes);
    }
}

/* An operation (or flush) ended: the job may be waiting for one. */
static void block_copy_op_done(BlockCopy *bc)
{
    bc->ops_in_flight--;
    if (bc->waiter) {
        Coroutine *w = bc->waiter;
        bc->waiter = NULL;
        aio_co_wake(w);
    }
}

static void coroutine_fn block_copy_flush_co(void *opaque)
{
    BlockCopy *bc = opaque;
    int ret = blk_co_flush(bc->o.target);
    if (ret < 0 && bc->ret == 0) {
        /*
         * Always fatal, whatever the policy: the kernel reports a lost
         * write-back once, so the job's own final flush might not see it.
         */
        bc->ret = ret;
    }
    bc->flush_started = false;
    block_copy_op_done(bc);
}

/*
 * Every BLOCK_COPY_WRITEBACK bytes, flush the target in the background
 * while the copy goes on: the page cache then writes the copied data out
 * during the copy instead of all of it in the flush that ends the job (for
 * a commit of 512 MiB, a third of the whole command's time).
 */
static void block_copy_account_write(BlockCopy *bc, int64_t bytes)
{
    bc->unflushed += bytes;
    if (bc->unflushed < BLOCK_COPY_WRITEBACK || bc->flush_started) {
        return;
    }
    bc->unflushed = 0;
    bc->flush_started = true;
    bc->ops_in_flight++;
    aio_co_enter(aio_main_context(), co_create(block_copy_flush_co, bc));
}

static void coroutine_fn block_copy_op_co(void *opaque)
{
    BlockCopyOp *op = opaque;
    BlockCopy *bc = op->bc;
    int ret;

    block_copy_co_lock_range(bc, &op->range, op->offset, op->bytes);
    if (op->zero && bc->o.target) {
        ret = blk_co_pwrite_zeroes(bc->o.target, op->offset, op->bytes, BDRV_REQ_MAY_UNMAP);
        if (ret < 0) {
            block_copy_op_error(op, false, ret);
        }
    } else {
        void *buf = block_copy_get_buf(bc);
        ret = blk_co_pread(bc->o.source, op->offset, op->bytes, buf, 0);
        if (ret < 0) {
            block_copy_op_error(op, true, ret);
        } else if (bc->o.target) {
            ret = blk_co_pwrite(bc->o.target, op->offset, op->bytes, buf, 0);
            if (ret < 0) {
                block_copy_op_error(op, false, ret);
            } else {
                block_copy_account_write(bc, op->bytes);
            }
        }
        block_copy_put_buf(bc, buf);
    }
    block_copy_unlock_range(bc, &op->range);
    if (ret == 0) {
        job_progress_update(bc->job, op->bytes);
    }

    bc->bytes_in_flight -= op->bytes;
    g_free(op);
    block_copy_op_done(bc);
}

/* The next dirty area at or after the cursor (wrapping once), at most max_io long. */
static bool block_copy_next_area(BlockCopy *bc, int64_t *offset, int64_t *bytes)
{
    if (bdrv_dirty_bitmap_next_dirty_area(bc->work, bc->cursor, bc->length, bc->o.max_io, offset,
                                          bytes)) {
        return true;
    }
    bc->cursor = 0;
    return bdrv_dirty_bitmap_next_dirty_area(bc->work, 0, bc->length, bc->o.max_io, offset, bytes);
}

int64_t coroutine_fn block_copy_co_issue(BlockCopy *bc)
{
    int64_t offset, bytes;

    while (!block_copy_budget_full(bc) && bc->ret == 0 &&
           block_copy_next_area(bc, &offset, &bytes)) {
        bool zero = false;
        if (bc->o.detect_zeroes && bc->o.target) {
            int64_t pnum = 0;
            /* Metadata only (want_zero false): asking the files would cost a syscall each. */
            bdrv_graph_co_rdlock();
            BlockDriverState *src = blk_bs(bc->o.source);
            int st =
                src ? bdrv_co_block_status_above(src, NULL, false, offset, bytes, &pnum, NULL, NULL)
                    : -ENOMEDIUM;
            bdrv_graph_co_rdunlock();
            if (st >= 0 && (st & BDRV_BLOCK_ZERO) && pnum >= bc->granularity) {
                zero = true;
                if (pnum < bytes) {
                    bytes = pnum / bc->granularity * bc->granularity;
                }
            }
        }
        BlockCopyOp *op = g_new0(BlockCopyOp, 1);
        *op = (BlockCopyOp){.bc = bc, .offset = offset, .bytes = bytes, .zero = zero};
        bdrv_reset_dirty_bitmap(bc->work, offset, bytes);
        bc->cursor = offset + bytes;
        bc->ops_in_flight++;
        bc->bytes_in_flight += bytes;
        /* Entered after this coroutine yields: operations start in a batch. */
        aio_co_enter(aio_main_context(), co_create(block_copy_op_co, op));
        int64_t delay = zero ? 0 : job_ratelimit_account(bc->job, bytes);
        if (delay > 0) {
            return delay;
        }
    }
    return 0;
}

void coroutine_fn block_copy_co_wait_one(BlockCopy *bc)
{
    if (bc->ops_in_flight == 0) {
        return;
    }
    g_assert(!bc->waiter);
    bc->waiter = co_self();
    co_yield();
}

void coroutine_fn block_copy_co_wait_all(BlockCopy *bc)
{
    while (bc->ops_in_flight > 0) {
        block_copy_co_wait_one(bc);
    }
}

int coroutine_fn block_copy_co_sync(BlockCopy *bc)
{
    int failures = bc->failures;
    uint64_t saved = bc->job->limit.speed;

    bc->job->limit.speed = 0;
    for (;;) {
        block_copy_co_issue(bc);
        if (bc->ret < 0 || bc->failures != failures) {
            /* No retries here: a failure that the policy would retry fails the sync. */
            block_copy_co_wait_all(bc);
            bc->job->limit.speed = saved;
            return bc->ret < 0 ? bc->ret : bc->last_failure;
        }
        if (bc->ops_in_flight == 0 && bdrv_get_dirty_count(bc->work) == 0) {
            bc->job->limit.speed = saved;
            return 0;
        }
        block_copy_co_wait_one(bc);
    }
}
