/*
 * Stream: top -> ... -> base becomes top -> base, top having copied what
 * the nodes between showed.
 *
 * How the data moves: the job turns copy-on-read on for top (inside a
 * drained section) and reads, through its own BlockBackend, every range
 * that top does not hold but a node above base does.  The request layer's
 * copy-on-read writes what it read into top as a serialising request, and
 * while copy-on-read is on every write to top is tracked, so a guest write
 * and a copy of the same range never interleave: the copy reads and
 * writes the old data before the guest write, or sees that top now holds
 * the range and copies nothing.
 *
 * Prepare rewrites top's header to name base (or nothing), then makes base
 * top's backing node; the nodes between close when the job lets them go.
 * Copy-on-read is switched back off in clean, whatever happened.
 */
#include <errno.h>

#include "jobs/block-copy.h"
#include "jobs/block-jobs.h"

#define STREAM_GRANULARITY (64 * 1024)

typedef struct StreamJob {
    BlockJob common;
    BlockDriverState *top, *base, *above_base; /* referenced; base may be NULL */
    BlockBackend *blk;
    BdrvDirtyBitmap *work;
    BlockCopy *bc;
    char *backing_file;
    bool top_was_ro;
    bool cor_set; /* the job turned copy-on-read on */
} StreamJob;

static int coroutine_fn stream_run(Job *job, GError **errp)
{
    StreamJob *s = (StreamJob *)job;
    int64_t len = blk_co_getlength(s->blk);
    int ret;

    if (len < 0) {
        return len;
    }
    if (!bdrv_cow_bs(s->top)) {
        return 0;
    }
    ret = block_job_co_mark_allocated(&s->common, s->work, s->top, s->base, true, len);
    if (ret < 0) {
        return ret;
    }
    return block_job_co_copy_marked(&s->common, s->bc, s->work, s->blk);
}

static void stream_release_io(StreamJob *s)
{
    block_job_remove_all_bdrv(&s->common);
    s->blk = NULL;
    block_copy_free(s->bc);
    s->bc = NULL;
    if (s->work) {
        bdrv_release_dirty_bitmap(s->work);
        s->work = NULL;
    }
}

static bool stream_prepare(Job *job, GError **errp)
{
    StreamJob *s = (StreamJob *)job;
    BlockDriverState *top = s->top;

    stream_release_io(s);
    if (!bdrv_cow_bs(top)) {
        return true;
    }
    g_autofree char *name = NULL;
    if (s->base) {
        name = block_job_backing_name(top, s->base, s->backing_file, s->above_base,
                                      s->above_base->backing_file);
    }
    if (top->drv->change_backing_file) {
        int ret =
            top->drv->change_backing_file(top, name, s->base ? s->base->drv->format_name : NULL);
        if (ret < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                        "Could not update the backing file link of '%s': %s", top->filename,
                        g_strerror(-ret));
            return false;
        }
    }
    return bdrv_set_backing_hd(top, s->base, errp);
}

static void stream_clean(Job *job)
{
    StreamJob *s = (StreamJob *)job;
    stream_release_io(s);
    if (s->top && s->cor_set) {
        bdrv_drained_begin(s->top);
        s->top->open_flags &= ~BDRV_O_COPY_ON_READ;
        bdrv_drained_end(s->top);
        s->cor_set = false;
    }
    if (s->top && s->top_was_ro) {
        bdrv_reopen_set_read_only(s->top, true, NULL);
    }
    bdrv_unref(s->above_base);
    bdrv_unref(s->base);
    bdrv_unref(s->top);
    s->top = s->base = s->above_base = NULL;
}

static void stream_free(Job *job)
{
    StreamJob *s = (StreamJob *)job;
    g_free(s->backing_file);
}

static bool stream_drained_poll(Job *job)
{
    StreamJob *s = (StreamJob *)job;
    return s->bc && block_copy_ops_in_flight(s->bc) > 0;
}

static const JobDriver stream_driver = {
    .type = "stream",
    .instance_size = sizeof(StreamJob),
    .run = stream_run,
    .drained_poll = stream_drained_poll,
    .prepare = stream_prepare,
    .clean = stream_clean,
    .free = stream_free,
};

Job *stream_start(BlockDriverState *bs, BlockDriverState *base, const BlockJobOptions *o,
                  GError **errp)
{
    GLOBAL_STATE_CODE();
    static const BlockJobOptions defaults;
    o = o ? o : &defaults;

    BlockDriverState *top = bdrv_skip_filters(bs);
    if (base && (base == top || !block_job_chain_contains(top, base))) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Node '%s' is not a backing image of '%s'", base->node_name, top->node_name);
        return NULL;
    }
    StreamJob *s =
        block_job_create(o->id, &stream_driver, o->flags, o->speed, o->cb, o->opaque, errp);
    if (!s) {
        return NULL;
    }
    Job *job = &s->common.job;
    s->top = top;
    bdrv_ref(top);
    s->base = base;
    if (base) {
        bdrv_ref(base);
        s->above_base = top;
        while (bdrv_skip_filters(bdrv_cow_bs(s->above_base)) != base) {
            s->above_base = bdrv_skip_filters(bdrv_cow_bs(s->above_base));
        }
        bdrv_ref(s->above_base);
    }
    s->backing_file = g_strdup(o->backing_file);

    int64_t len = bdrv_getlength(top);
    if (len < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-len),
                    "Could not get the length of '%s': %s", top->node_name, g_strerror(-len));
        goto fail;
    }
    s->top_was_ro = bdrv_is_read_only(top);
    if (s->top_was_ro && !bdrv_reopen_set_read_only(top, false, errp)) {
        s->top_was_ro = false;
        goto fail;
    }
    for (BlockDriverState *n = top; n && n != base; n = bdrv_skip_filters(bdrv_cow_bs(n))) {
        if (!block_job_add_bdrv(&s->common, n == top ? "top" : "intermediate node", n, 0,
                                BLK_PERM_ALL, errp)) {
            goto fail;
        }
    }
    s->blk = block_job_new_blk(&s->common, top, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED,
                               BLK_PERM_ALL, errp);
    if (!s->blk) {
        goto fail;
    }
    s->work = bdrv_dirty_bitmap_new(len, STREAM_GRANULARITY, errp);
    if (!s->work) {
        goto fail;
    }
    BlockCopyOptions co = {
        .source = s->blk,
        .buf_size = o->buf_size,
        .on_source_error = o->on_source_error,
        .on_target_error = o->on_source_error,
    };
    s->bc = block_copy_new(job, s->work, &co);

    if (!(top->open_flags & BDRV_O_COPY_ON_READ)) {
        /* Open flags change only while the node is drained (block-int.h). */
        bdrv_drained_begin(top);
        top->open_flags |= BDRV_O_COPY_ON_READ;
        bdrv_drained_end(top);
        s->cor_set = true;
    }
    job_start(job);
    return job;

fail:
    job_early_fail(job);
    return NULL;
}
