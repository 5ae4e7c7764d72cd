/*
 * Block jobs: the job's edges to its nodes and its BlockBackends (see
 * block-job.h).
 *
 * Drain: child_job's drained_begin pauses the job (job_pause wakes it if
 * it sleeps, so that it parks at its next pause point), drained_poll keeps
 * the drain waiting while the coroutine is busy (between two pause points,
 * possibly with I/O in flight) or the driver still has I/O in flight, and
 * drained_end resumes it.  A job whose coroutine has finished never makes
 * a drain wait: its completion drains nodes itself.
 */
#include "jobs/block-job.h"

#include <errno.h>
#include <string.h>

static char *child_job_desc(BdrvChild *c)
{
    BlockJob *bjob = c->opaque;
    return g_strdup_printf("job '%s'", bjob->job.id);
}

static void child_job_drained_begin(BdrvChild *c)
{
    BlockJob *bjob = c->opaque;
    job_pause(&bjob->job);
}

static void child_job_drained_end(BdrvChild *c)
{
    BlockJob *bjob = c->opaque;
    job_resume(&bjob->job);
}

static bool child_job_drained_poll(BdrvChild *c)
{
    BlockJob *bjob = c->opaque;
    Job *job = &bjob->job;
    if (job->finished || job_is_completed(job)) {
        return false;
    }
    if (job->busy) {
        return true;
    }
    return job->driver->drained_poll && job->driver->drained_poll(job);
}

static const BdrvChildClass child_job = {
    .get_parent_desc = child_job_desc,
    .drained_begin = child_job_drained_begin,
    .drained_end = child_job_drained_end,
    .drained_poll = child_job_drained_poll,
};

void *block_job_create(const char *id, const JobDriver *driver, int flags, int64_t speed,
                       JobEventFunc *cb, void *opaque, GError **errp)
{
    GLOBAL_STATE_CODE();
    g_assert(driver->instance_size >= sizeof(BlockJob));
    if (speed < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    BlockJob *bjob = job_create(id, driver, flags, cb, opaque, errp);
    if (bjob) {
        bjob->job.limit.speed = speed;
    }
    return bjob;
}

bool block_job_add_bdrv(BlockJob *bjob, const char *name, BlockDriverState *bs, uint64_t perm,
                        uint64_t shared, GError **errp)
{
    GLOBAL_STATE_CODE();
    bdrv_ref(bs);
    BdrvChild *c = bdrv_root_attach_child(bs, name, &child_job, 0, perm, shared, bjob, errp);
    if (!c) {
        return false;
    }
    bjob->nodes = g_slist_prepend(bjob->nodes, c);
    return true;
}

bool block_job_has_bdrv(BlockJob *bjob, BlockDriverState *bs)
{
    for (GSList *l = bjob->nodes; l; l = l->next) {
        if (((BdrvChild *)l->data)->bs == bs) {
            return true;
        }
    }
    return false;
}

BlockBackend *block_job_new_blk(BlockJob *bjob, BlockDriverState *bs, uint64_t perm,
                                uint64_t shared, GError **errp)
{
    GLOBAL_STATE_CODE();
    BlockBackend *blk = blk_new(perm, shared);
    g_autofree char *name = g_strdup_printf("job %s", bjob->job.id);
    blk_set_name(blk, name);
    blk_set_disable_request_queuing(blk, true);
    if (!blk_insert_bs(blk, bs, errp)) {
        blk_unref(blk);
        return NULL;
    }
    bjob->blks = g_slist_prepend(bjob->blks, blk);
    return blk;
}

void block_job_drop_blk(BlockJob *bjob, BlockBackend *blk)
{
    GLOBAL_STATE_CODE();
    if (blk && g_slist_find(bjob->blks, blk)) {
        bjob->blks = g_slist_remove(bjob->blks, blk);
        blk_unref(blk);
    }
}

void block_job_remove_all_bdrv(BlockJob *bjob)
{
    GLOBAL_STATE_CODE();
    while (bjob->blks) {
        block_job_drop_blk(bjob, bjob->blks->data);
    }
    while (bjob->nodes) {
        BdrvChild *c = bjob->nodes->data;
        bjob->nodes = g_slist_delete_link(bjob->nodes, bjob->nodes);
        bdrv_root_unref_child(c);
    }
}

/* A plain local path (no "proto:" prefix, not json:). */
static bool plain_path(const char *name)
{
    size_t n = strcspn(name, ":/\\");
    return !g_str_has_prefix(name, "json:") && name[n] != ':';
}

char *block_job_backing_name(BlockDriverState *overlay, BlockDriverState *base,
                             const char *explicit, BlockDriverState *old_dir_of,
                             const char *old_ref)
{
    if (explicit) {
        return g_strdup(explicit);
    }
    if (old_ref && *old_ref && plain_path(old_ref)) {
        if (g_path_is_absolute(old_ref)) {
            return g_strdup(old_ref);
        }
        /* A name relative to the old overlay's directory stays right if the new one shares it. */
        if (old_dir_of && old_dir_of->filename && overlay->filename &&
            plain_path(old_dir_of->filename) && plain_path(overlay->filename)) {
            g_autofree char *d1 = g_path_get_dirname(old_dir_of->filename);
            g_autofree char *d2 = g_path_get_dirname(overlay->filename);
            g_autofree char *c1 = g_canonicalize_filename(d1, NULL);
            g_autofree char *c2 = g_canonicalize_filename(d2, NULL);
            if (strcmp(c1, c2) == 0) {
                return g_strdup(old_ref);
            }
        }
    }
    if (base->filename && plain_path(base->filename)) {
        return g_canonicalize_filename(base->filename, NULL);
    }
    return g_strdup(base->filename);
}

int coroutine_fn block_job_co_mark_allocated(BlockJob *bjob, BdrvDirtyBitmap *bm,
                                             BlockDriverState *top, BlockDriverState *base,
                                             bool skip_top, int64_t bytes)
{
    Job *job = &bjob->job;
    int64_t offset = 0;

    while (offset < bytes) {
        int64_t pnum = 0;
        int ret;
        job_pause_point(job);
        if (job_is_cancelled(job)) {
            return 0;
        }
        bdrv_graph_co_rdlock();
        if (skip_top) {
            ret = bdrv_co_is_allocated(top, offset, bytes - offset, &pnum);
            if (ret == 0) {
                BlockDriverState *below = bdrv_cow_bs(top);
                ret = below && below != base
                          ? bdrv_co_is_allocated_above(below, base, false, offset, pnum, &pnum)
                          : 0;
            } else if (ret > 0) {
                ret = 0; /* top has it: nothing to copy */
            }
        } else {
            ret = bdrv_co_is_allocated_above(top, base, false, offset, bytes - offset, &pnum);
        }
        bdrv_graph_co_rdunlock();
        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0) {
            pnum = bytes - offset;
        }
        if (ret > 0) {
            bdrv_set_dirty_bitmap(bm, offset, pnum);
        }
        offset += pnum;
    }
    return 0;
}

int coroutine_fn block_job_co_copy_marked(BlockJob *bjob, BlockCopy *bc, BdrvDirtyBitmap *work,
                                          BlockBackend *target)
{
    Job *job = &bjob->job;

    job_progress_set_remaining(job, bdrv_get_dirty_count(work));
    for (;;) {
        job_pause_point(job);
        if (job_is_cancelled(job)) {
            break;
        }
        int64_t delay = block_copy_co_issue(bc);
        if (block_copy_ret(bc) < 0) {
            break;
        }
        if (delay > 0) {
            job_sleep_ns(job, delay);
        } else if (block_copy_ops_in_flight(bc) > 0) {
            block_copy_co_wait_one(bc);
        } else if (bdrv_get_dirty_count(work) == 0) {
            break;
        }
    }
    block_copy_co_wait_all(bc);
    int ret = block_copy_ret(bc);
    if (ret == 0 && !job_is_cancelled(job)) {
        ret = blk_co_flush(target);
    }
    return ret;
}
