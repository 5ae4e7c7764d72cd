/*
 * Intermediate commit: overlay -> top -> ... -> base becomes overlay -> base.
 *
 * Start: base (and the overlay, whose header changes) are reopened
 * read-write if need be; a job-top filter goes above top, so the overlay
 * reads through it and the job may write base although the overlay's users
 * do not share writes on what they read; the job becomes a parent of every
 * node from top to base (drains pause it).
 *
 * Run: a detached work bitmap lists what top..base (exclusive) holds; the
 * copy engine copies it from top (reading through the chain) to base,
 * many requests at a time, zero ranges as write-zeroes.  Nobody else
 * writes these nodes (they are backing files), so one pass is enough.
 *
 * Prepare (finalize, main loop): the job lets go of its BlockBackends,
 * moves the filter's parents (the overlay's backing edge) onto base and
 * rewrites the overlay's header to name base.  Top and the nodes between
 * are closed when the job drops its references.  Abort instead puts the
 * filter's parents back on top; base keeps what was copied, which changes
 * nothing it shows through top.
 */
#include <errno.h>

#include "jobs/block-copy.h"
#include "jobs/block-jobs.h"
#include "jobs/job-filter.h"

#define COMMIT_GRANULARITY (64 * 1024)

typedef struct CommitJob {
    BlockJob common;
    BlockDriverState *top, *base, *overlay, *above_base; /* referenced */
    BlockDriverState *filter;                            /* referenced while in the graph */
    BlockBackend *top_blk, *base_blk;
    BdrvDirtyBitmap *work;
    BlockCopy *bc;
    JobErrorPolicy on_error;
    char *backing_file;
    bool base_was_ro, overlay_was_ro;
} CommitJob;

bool block_job_chain_contains(BlockDriverState *top, BlockDriverState *base)
{
    for (BlockDriverState *bs = bdrv_cow_bs(bdrv_skip_filters(top)); bs;
         bs = bdrv_cow_bs(bdrv_skip_filters(bs))) {
        if (bs == base || bdrv_skip_filters(bs) == base) {
            return true;
        }
    }
    return false;
}

/* The node whose backing child is @bs (skipping a filter above it), or NULL. */
static BlockDriverState *commit_find_overlay(BlockDriverState *bs)
{
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *c = l->data;
        if (!c->klass->parent_is_bds) {
            continue;
        }
        BlockDriverState *p = c->opaque;
        if (p->backing == c) {
            return p;
        }
        if (p->drv && p->drv->is_filter && p->file == c) {
            BlockDriverState *o = commit_find_overlay(p);
            if (o) {
                return o;
            }
        }
    }
    return NULL;
}

static int coroutine_fn commit_run(Job *job, GError **errp)
{
    CommitJob *s = (CommitJob *)job;
    int64_t len = blk_co_getlength(s->top_blk);
    int64_t base_len = blk_co_getlength(s->base_blk);
    int ret;

    if (len < 0 || base_len < 0) {
        return len < 0 ? len : base_len;
    }
    if (base_len < len) {
        ret = blk_co_truncate(s->base_blk, len, false, PREALLOC_MODE_OFF, 0, errp);
        if (ret < 0) {
            return ret;
        }
    }
    ret = block_job_co_mark_allocated(&s->common, s->work, s->top, s->base, false, len);
    if (ret < 0) {
        return ret;
    }
    return block_job_co_copy_marked(&s->common, s->bc, s->work, s->base_blk);
}

/* Reopens @bs read-write when it is not; *@was_ro says whether it was. */
static bool commit_make_writable(BlockDriverState *bs, bool *was_ro, GError **errp)
{
    *was_ro = bdrv_is_read_only(bs);
    return !*was_ro || bdrv_reopen_set_read_only(bs, false, errp);
}

static void commit_release_io(CommitJob *s)
{
    block_job_remove_all_bdrv(&s->common);
    s->top_blk = s->base_blk = NULL;
    block_copy_free(s->bc);
    s->bc = NULL;
    if (s->work) {
        bdrv_release_dirty_bitmap(s->work);
        s->work = NULL;
    }
}

static bool commit_prepare(Job *job, GError **errp)
{
    CommitJob *s = (CommitJob *)job;

    commit_release_io(s);
    g_autofree char *name = block_job_backing_name(s->overlay, s->base, s->backing_file,
                                                   s->above_base, s->above_base->backing_file);
    bool ok = job_filter_drop(s->filter, s->base, errp);
    s->filter = NULL;
    if (!ok) {
        return false;
    }
    if (s->overlay->drv->change_backing_file) {
        int ret = s->overlay->drv->change_backing_file(s->overlay, name, s->base->drv->format_name);
        if (ret < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                        "Could not update the backing file link of '%s': %s", s->overlay->filename,
                        g_strerror(-ret));
            return false;
        }
    }
    return true;
}

static void commit_abort(Job *job)
{
    CommitJob *s = (CommitJob *)job;
    commit_release_io(s);
    if (s->filter) {
        job_filter_drop(s->filter, NULL, NULL);
        s->filter = NULL;
    }
}

static void commit_clean(Job *job)
{
    CommitJob *s = (CommitJob *)job;
    commit_release_io(s);
    if (s->filter) {
        job_filter_drop(s->filter, NULL, NULL);
        s->filter = NULL;
    }
    if (s->base && s->base_was_ro) {
        bdrv_reopen_set_read_only(s->base, true, NULL);
    }
    if (s->overlay && s->overlay_was_ro) {
        bdrv_reopen_set_read_only(s->overlay, true, NULL);
    }
    /* Top and the nodes below it close here once nothing else holds them. */
    bdrv_unref(s->top);
    bdrv_unref(s->above_base);
    bdrv_unref(s->overlay);
    bdrv_unref(s->base);
    s->top = s->above_base = s->overlay = s->base = NULL;
}

static void commit_free(Job *job)
{
    CommitJob *s = (CommitJob *)job;
    g_free(s->backing_file);
}

static bool commit_drained_poll(Job *job)
{
    CommitJob *s = (CommitJob *)job;
    return s->bc && block_copy_ops_in_flight(s->bc) > 0;
}

static const JobDriver commit_driver = {
    .type = "commit",
    .instance_size = sizeof(CommitJob),
    .run = commit_run,
    .drained_poll = commit_drained_poll,
    .prepare = commit_prepare,
    .abort = commit_abort,
    .clean = commit_clean,
    .free = commit_free,
};

Job *commit_start(BlockDriverState *top, BlockDriverState *base, const BlockJobOptions *o,
                  GError **errp)
{
    GLOBAL_STATE_CODE();
    static const BlockJobOptions defaults;
    o = o ? o : &defaults;

    top = bdrv_skip_filters(top);
    if (top == base || !block_job_chain_contains(top, base)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Base '%s' is not in the backing chain of '%s'", base->node_name,
                    top->node_name);
        return NULL;
    }
    BlockDriverState *overlay = commit_find_overlay(top);
    if (!overlay) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "'%s' is the active layer: it has no overlay to link to its base; "
                    "commit it with an active commit",
                    top->node_name);
        return NULL;
    }
    BlockDriverState *above_base = top;
    while (bdrv_skip_filters(bdrv_cow_bs(above_base)) != base) {
        above_base = bdrv_skip_filters(bdrv_cow_bs(above_base));
    }

    CommitJob *s =
        block_job_create(o->id, &commit_driver, o->flags, o->speed, o->cb, o->opaque, errp);
    if (!s) {
        return NULL;
    }
    Job *job = &s->common.job;
    s->top = top;
    s->base = base;
    s->overlay = overlay;
    s->above_base = above_base;
    bdrv_ref(top);
    bdrv_ref(base);
    bdrv_ref(overlay);
    bdrv_ref(above_base);
    s->on_error = o->on_source_error;
    s->backing_file = g_strdup(o->backing_file);

    int64_t top_len = bdrv_getlength(top);
    int64_t base_len = bdrv_getlength(base);
    if (top_len < 0 || base_len < 0) {
        int err = top_len < 0 ? (int)top_len : (int)base_len;
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-err),
                    "Could not get the image lengths: %s", g_strerror(-err));
        goto fail;
    }
    if (!commit_make_writable(base, &s->base_was_ro, errp) ||
        !commit_make_writable(overlay, &s->overlay_was_ro, errp)) {
        goto fail;
    }
    s->filter = job_filter_insert(top, errp);
    if (!s->filter) {
        goto fail;
    }
    for (BlockDriverState *bs = top; bs != base; bs = bdrv_skip_filters(bdrv_cow_bs(bs))) {
        if (!block_job_add_bdrv(&s->common, bs == top ? "top" : "intermediate node", bs, 0,
                                BLK_PERM_ALL, errp)) {
            goto fail;
        }
    }
    if (!block_job_add_bdrv(&s->common, "base", base, 0, BLK_PERM_ALL, errp)) {
        goto fail;
    }
    s->top_blk = block_job_new_blk(&s->common, top, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, errp);
    if (!s->top_blk) {
        goto fail;
    }
    uint64_t perm = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE;
    perm |= base_len < top_len ? BLK_PERM_RESIZE : 0;
    s->base_blk = block_job_new_blk(&s->common, base, perm,
                                    BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED, errp);
    if (!s->base_blk) {
        goto fail;
    }
    s->work = bdrv_dirty_bitmap_new(top_len, COMMIT_GRANULARITY, errp);
    if (!s->work) {
        goto fail;
    }
    BlockCopyOptions co = {
        .source = s->top_blk,
        .target = s->base_blk,
        .buf_size = o->buf_size,
        .detect_zeroes = true,
        .on_source_error = o->on_source_error,
        .on_target_error = o->on_source_error,
    };
    s->bc = block_copy_new(job, s->work, &co);
    job_start(job);
    return job;

fail:
    job_early_fail(job);
    return NULL;
}
