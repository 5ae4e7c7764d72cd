/*
 * Mirror, and active commit built on it.
 *
 * Start: a job-top filter goes above the source; a dirty bitmap on the
 * source records every write from then on (the request path marks it
 * after each write); the job reads the source and writes the target
 * through its own BlockBackends.
 *
 * Run: the bulk pass is the bitmap itself: it starts with what must be
 * copied (everything, what the source node holds, or nothing, per sync
 * mode; for active commit what is above base) and the copy engine keeps
 * taking dirty areas from it, clearing their bits, many at a time.  Writes
 * that land meanwhile set bits again.  When the bitmap is clean and
 * nothing is in flight the target is flushed and the job becomes ready; it
 * then keeps copying new writes until completed or cancelled.
 *
 * Write-blocking mode: the filter hooks the writes that come through it:
 * each locks its granules against the copies, writes the source, writes
 * the target, and clears the granules it covered whole, so once ready the
 * target never lags behind by more than what is in flight.
 *
 * Completion (prepare, main loop): the source is drained (its users'
 * requests wait), the last dirty areas are copied, the target flushed,
 * then, to pivot, the filter's parents move to the target (active commit:
 * to base); a cancel after ready instead drops the filter and leaves the
 * target as a consistent copy.  The drained section ends after the graph
 * change, so no write is lost between the last copy and the switch.
 */
#include <errno.h>

#include "jobs/block-copy.h"
#include "jobs/block-jobs.h"
#include "jobs/job-filter.h"

#define MIRROR_DEFAULT_GRANULARITY (64 * 1024)

typedef struct MirrorJob {
    BlockJob common;
    bool active_commit;
    BlockDriverState *source, *target, *base; /* referenced; base: copy only what is above it */
    BlockDriverState *filter;                 /* referenced while in the graph */
    BlockBackend *src_blk, *tgt_blk;
    BdrvDirtyBitmap *dirty;
    BlockCopy *bc;
    MirrorSyncMode sync;
    MirrorCopyMode copy_mode;
    JobErrorPolicy on_target_error;
    bool should_complete;
    bool target_was_ro;
} MirrorJob;

/* ---- write-blocking mode: the filter's write hook (any thread) ------------------------------- */

static int coroutine_fn mirror_active_write(void *opaque, BdrvChild *child, int64_t offset,
                                            int64_t bytes, IOVector *qiov, BdrvRequestFlags flags)
{
    MirrorJob *s = opaque;
    BlockCopyRange r;
    int ret;

    block_copy_co_lock_range(s->bc, &r, offset, bytes);
    if (qiov) {
        ret = bdrv_co_pwritev(child, offset, bytes, qiov, flags);
    } else {
        ret = bdrv_co_pwrite_zeroes(child, offset, bytes, flags & ~BDRV_REQ_ZERO_WRITE);
    }
    if (ret == 0) {
        int tret = qiov ? blk_co_pwritev(s->tgt_blk, offset, bytes, qiov, flags & BDRV_REQ_FUA)
                        : blk_co_pwrite_zeroes(s->tgt_blk, offset, bytes,
                                               flags & (BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP));
        if (tret == 0) {
            /* The granules covered whole are in sync now; partial ones stay dirty. */
            int64_t g = bdrv_dirty_bitmap_granularity(s->dirty);
            int64_t size = bdrv_dirty_bitmap_size(s->dirty);
            int64_t start = (offset + g - 1) / g * g;
            int64_t end = offset + bytes >= size ? size : (offset + bytes) / g * g;
            if (end > start) {
                bdrv_reset_dirty_bitmap(s->dirty, start, end - start);
            }
        }
        /* On a target error the range stays dirty: the background copy retries it. */
    }
    block_copy_unlock_range(s->bc, &r);
    return ret;
}

/* ---- the job --------------------------------------------------------------------------------- */

static int coroutine_fn mirror_mark_initial(MirrorJob *s, int64_t len)
{
    switch (s->sync) {
    case MIRROR_SYNC_NONE:
        return 0;
    case MIRROR_SYNC_TOP:
        return block_job_co_mark_allocated(&s->common, s->dirty, s->source, s->base, false, len);
    case MIRROR_SYNC_FULL:
    default: {
        bool zeroed = !s->active_commit && !s->target->backing && s->target->drv->has_zero_init &&
                      s->target->drv->has_zero_init(s->target);
        if (zeroed || s->active_commit) {
            /* A target that reads as zeroes only needs what some layer holds. */
            return block_job_co_mark_allocated(&s->common, s->dirty, s->source, s->base, false,
                                               len);
        }
        bdrv_set_dirty_bitmap(s->dirty, 0, len);
        return 0;
    }
    }
}

static int coroutine_fn mirror_run(Job *job, GError **errp)
{
    MirrorJob *s = (MirrorJob *)job;
    int64_t len = blk_co_getlength(s->src_blk);
    int64_t tlen = blk_co_getlength(s->tgt_blk);
    int ret;

    if (len < 0 || tlen < 0) {
        return len < 0 ? len : tlen;
    }
    if (s->active_commit && tlen < len) {
        ret = blk_co_truncate(s->tgt_blk, len, false, PREALLOC_MODE_OFF, 0, errp);
        if (ret < 0) {
            return ret;
        }
    }
    ret = mirror_mark_initial(s, len);
    if (ret < 0) {
        return ret;
    }

    for (;;) {
        job_pause_point(job);
        if (job_is_cancelled(job)) {
            break;
        }
        if (blk_co_getlength(s->src_blk) != len) {
            /* The bitmap and the target have the old length: nothing sane to go on with. */
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "The source was resized while the job ran");
            ret = -EINVAL;
            break;
        }
        int64_t delay = block_copy_co_issue(s->bc);
        if (block_copy_ret(s->bc) < 0) {
            break;
        }
        job_progress_set_remaining(job, bdrv_get_dirty_count(s->dirty) +
                                            block_copy_bytes_in_flight(s->bc));
        if (delay > 0) {
            job_sleep_ns(job, delay);
            continue;
        }
        if (block_copy_ops_in_flight(s->bc) > 0) {
            block_copy_co_wait_one(s->bc);
            continue;
        }
        if (bdrv_get_dirty_count(s->dirty) > 0) {
            continue; /* written meanwhile */
        }
        if (!job_is_ready(job)) {
            ret = blk_co_flush(s->tgt_blk);
            if (ret < 0) {
                if (job_error_action(job, s->on_target_error, false, ret) == JOB_ACTION_REPORT) {
                    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                                "Could not flush the target: %s", g_strerror(-ret));
                    break;
                }
                continue;
            }
            job_transition_to_ready(job);
        }
        if (s->should_complete || job_cancel_requested(job)) {
            break;
        }
        /* In sync: look for new writes now and then (complete and cancel wake us). */
        job_sleep_ns(job, JOB_SLICE_NS);
    }
    block_copy_co_wait_all(s->bc);
    if (ret == 0) {
        ret = block_copy_ret(s->bc);
    }
    return ret;
}

static void mirror_release_io(MirrorJob *s)
{
    if (s->filter) {
        job_filter_set_write_hook(s->filter, NULL, NULL);
    }
    block_job_remove_all_bdrv(&s->common);
    s->src_blk = s->tgt_blk = NULL;
    block_copy_free(s->bc);
    s->bc = NULL;
    if (s->dirty) {
        bdrv_release_dirty_bitmap(s->dirty);
        s->dirty = NULL;
    }
}

typedef struct MirrorSyncCo {
    MirrorJob *s;
    int ret;
} MirrorSyncCo;

static void coroutine_fn mirror_final_sync_co(void *opaque)
{
    MirrorSyncCo *c = opaque;
    c->ret = block_copy_co_sync(c->s->bc);
    if (c->ret == 0) {
        c->ret = blk_co_flush(c->s->tgt_blk);
    }
}

static bool mirror_prepare(Job *job, GError **errp)
{
    MirrorJob *s = (MirrorJob *)job;
    bool pivot = s->should_complete && !job_cancel_requested(job);
    bool ok = true;

    /* From here until the graph changed nobody writes the source. */
    bdrv_drained_begin(s->source);
    MirrorSyncCo c = {s, 0};
    bdrv_run_co(mirror_final_sync_co, &c);
    if (c.ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-c.ret),
                    "Could not bring the target in sync: %s", g_strerror(-c.ret));
        bdrv_drained_end(s->source);
        return false;
    }
    mirror_release_io(s);

    if (pivot && !s->active_commit && s->sync != MIRROR_SYNC_FULL && !s->target->backing &&
        bdrv_cow_bs(s->source)) {
        ok = bdrv_set_backing_hd(s->target, bdrv_cow_bs(s->source), errp);
    }
    if (ok && s->filter) {
        ok = job_filter_drop(s->filter, pivot ? s->target : NULL, errp);
        s->filter = NULL;
    } else if (ok && pivot) {
        ok = bdrv_replace_node(s->source, s->target, errp);
    }
    if (ok && pivot && s->active_commit) {
        s->target_was_ro = false; /* base is the image in use now */
    }
    bdrv_drained_end(s->source);
    return ok;
}

static void mirror_abort(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;
    mirror_release_io(s);
    if (s->filter) {
        job_filter_drop(s->filter, NULL, NULL);
        s->filter = NULL;
    }
}

static void mirror_clean(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;
    mirror_abort(job);
    if (s->target && s->target_was_ro) {
        bdrv_reopen_set_read_only(s->target, true, NULL);
    }
    bdrv_unref(s->base);
    bdrv_unref(s->target);
    bdrv_unref(s->source);
    s->base = s->target = s->source = NULL;
}

static bool mirror_complete(Job *job, GError **errp)
{
    MirrorJob *s = (MirrorJob *)job;
    s->should_complete = true;
    return true;
}

static bool mirror_cancel(Job *job, bool force)
{
    /* Before ready a cancel aborts; after it, it stops in sync unless forced. */
    return force || !job_is_ready(job);
}

static bool mirror_drained_poll(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;
    return s->bc && block_copy_ops_in_flight(s->bc) > 0;
}

static const JobDriver mirror_driver = {
    .type = "mirror",
    .instance_size = sizeof(MirrorJob),
    .run = mirror_run,
    .complete = mirror_complete,
    .cancel = mirror_cancel,
    .drained_poll = mirror_drained_poll,
    .prepare = mirror_prepare,
    .abort = mirror_abort,
    .clean = mirror_clean,
};

static const JobDriver commit_active_driver = {
    .type = "commit",
    .instance_size = sizeof(MirrorJob),
    .run = mirror_run,
    .complete = mirror_complete,
    .cancel = mirror_cancel,
    .drained_poll = mirror_drained_poll,
    .prepare = mirror_prepare,
    .abort = mirror_abort,
    .clean = mirror_clean,
};

/* The target's cluster size when it has one (at least 64 KiB), else 64 KiB. */
static uint32_t mirror_default_granularity(BlockDriverState *target)
{
    BlockDriverInfo bdi = {0};
    if (target->drv->get_info && target->drv->get_info(target, &bdi) == 0 &&
        bdi.cluster_size > MIRROR_DEFAULT_GRANULARITY) {
        return MIN(bdi.cluster_size, 1 << 20);
    }
    return MIRROR_DEFAULT_GRANULARITY;
}

static Job *mirror_start_common(const JobDriver *driver, BlockDriverState *bs,
                                BlockDriverState *target, BlockDriverState *base,
                                const BlockJobOptions *o, GError **errp)
{
    bool active_commit = driver == &commit_active_driver;
    BlockDriverState *source = bdrv_skip_filters(bs);

    int64_t len = bdrv_getlength(source);
    int64_t tlen = bdrv_getlength(target);
    if (len < 0 || tlen < 0) {
        int err = len < 0 ? (int)len : (int)tlen;
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-err),
                    "Could not get the image lengths: %s", g_strerror(-err));
        return NULL;
    }
    if (!active_commit && len != tlen) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Source and target image have different sizes");
        return NULL;
    }
    uint32_t granularity = o->granularity ? o->granularity : mirror_default_granularity(target);
    if (granularity < 512 || granularity > (64 << 20) || (granularity & (granularity - 1))) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Granularity must be a power of 2 between 512 and 64M");
        return NULL;
    }
    if (o->buf_size < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "buf-size must be positive");
        return NULL;
    }

    MirrorJob *s = block_job_create(o->id, driver, o->flags, o->speed, o->cb, o->opaque, errp);
    if (!s) {
        return NULL;
    }
    Job *job = &s->common.job;
    s->active_commit = active_commit;
    s->source = source;
    s->target = target;
    bdrv_ref(source);
    bdrv_ref(target);
    s->sync = active_commit ? MIRROR_SYNC_TOP : o->sync;
    s->copy_mode = o->copy_mode;
    s->on_target_error = o->on_target_error;
    s->base = active_commit ? base : s->sync == MIRROR_SYNC_TOP ? bdrv_cow_bs(source) : NULL;
    if (s->base) {
        bdrv_ref(s->base);
    }

    s->target_was_ro = bdrv_is_read_only(target);
    if (s->target_was_ro) {
        if (!active_commit) {
            s->target_was_ro = false;
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ACCES, "Target '%s' is read-only",
                        target->node_name);
            goto fail;
        }
        if (!bdrv_reopen_set_read_only(target, false, errp)) {
            s->target_was_ro = false;
            goto fail;
        }
    }
    if (source->parents) {
        s->filter = job_filter_insert(source, errp);
        if (!s->filter) {
            goto fail;
        }
    }
    if (!block_job_add_bdrv(&s->common, "source", source, 0, BLK_PERM_ALL, errp)) {
        goto fail;
    }
    if (active_commit) {
        for (BlockDriverState *n = bdrv_skip_filters(bdrv_cow_bs(source)); n && n != base;
             n = bdrv_skip_filters(bdrv_cow_bs(n))) {
            if (!block_job_add_bdrv(&s->common, "intermediate node", n, 0, BLK_PERM_ALL, errp)) {
                goto fail;
            }
        }
    }
    if (!block_job_add_bdrv(&s->common, "target", target, 0, BLK_PERM_ALL, errp)) {
        goto fail;
    }
    s->src_blk =
        block_job_new_blk(&s->common, source, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, errp);
    if (!s->src_blk) {
        goto fail;
    }
    uint64_t perm = BLK_PERM_WRITE | BLK_PERM_CONSISTENT_READ;
    perm |= active_commit && tlen < len ? BLK_PERM_RESIZE : 0;
    s->tgt_blk = block_job_new_blk(&s->common, target, perm,
                                   BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED, errp);
    if (!s->tgt_blk) {
        goto fail;
    }
    s->dirty = bdrv_create_dirty_bitmap(source, granularity, NULL, errp);
    if (!s->dirty) {
        goto fail;
    }
    BlockCopyOptions co = {
        .source = s->src_blk,
        .target = s->tgt_blk,
        .buf_size = o->buf_size,
        .detect_zeroes = true,
        .on_source_error = o->on_source_error,
        .on_target_error = o->on_target_error,
    };
    s->bc = block_copy_new(job, s->dirty, &co);
    if (s->copy_mode == MIRROR_COPY_WRITE_BLOCKING && s->filter) {
        job_filter_set_write_hook(s->filter, mirror_active_write, s);
    }
    job_start(job);
    return job;

fail:
    job_early_fail(job);
    return NULL;
}

Job *mirror_start(BlockDriverState *bs, BlockDriverState *target, const BlockJobOptions *o,
                  GError **errp)
{
    GLOBAL_STATE_CODE();
    static const BlockJobOptions defaults;
    o = o ? o : &defaults;
    BlockDriverState *source = bdrv_skip_filters(bs);
    if (source == target || block_job_chain_contains(source, target) ||
        block_job_chain_contains(target, source)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Target '%s' must not be the source or in its backing chain",
                    target->node_name);
        return NULL;
    }
    return mirror_start_common(&mirror_driver, bs, target, NULL, o, errp);
}

Job *commit_active_start(BlockDriverState *bs, BlockDriverState *base, const BlockJobOptions *o,
                         GError **errp)
{
    GLOBAL_STATE_CODE();
    static const BlockJobOptions defaults;
    o = o ? o : &defaults;
    BlockDriverState *top = bdrv_skip_filters(bs);
    if (top == base || !block_job_chain_contains(top, base)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Base '%s' is not in the backing chain of '%s'", base->node_name,
                    top->node_name);
        return NULL;
    }
    return mirror_start_common(&commit_active_driver, bs, base, base, o, errp);
}
