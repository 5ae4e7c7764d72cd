/*
 * Public API, block jobs: starting commit, stream and mirror on an image,
 * querying them, the verbs, and events (see the jobs section of strata.h).
 *
 * A StrataJob wraps an engine Job and holds a reference on it, so that its
 * accessors keep working after the job was dismissed.  It is referenced by
 * the embedder (one reference per handle returned) and, while the job is
 * live, by the API's own list; the job's listener forwards every event to
 * the embedder's callback and drops the list's reference when the job
 * reaches null.  A mirror target opened here is referenced until the job
 * concludes (on a pivot the image's users hold it from then on).
 *
 * Everything runs in the main thread, outside coroutines (checked).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "api/api-int.h"
#include "block/block-int.h"
#include "block/options.h"
#include "jobs/block-jobs.h"

struct StrataJob {
    Job *job;
    int refcnt;
    StrataJobEventFunc *cb;
    void *opaque;
    BlockDriverState *target; /* mirror target opened here, until the job concludes */
    bool live;                /* in api_jobs */
};

static GList *api_jobs; /* StrataJob *, live, start order */

static void api_job_unref(StrataJob *sj)
{
    if (--sj->refcnt > 0) {
        return;
    }
    if (sj->target) {
        bdrv_unref(sj->target);
    }
    job_unref(sj->job);
    g_free(sj);
}

static void api_job_event(Job *job, JobEvent ev, void *opaque)
{
    static const StrataJobEvent map[] = {
        [JOB_EVENT_STATUS_CHANGE] = STRATA_JOB_EVENT_STATUS,
        [JOB_EVENT_READY] = STRATA_JOB_EVENT_READY,
        [JOB_EVENT_PENDING] = STRATA_JOB_EVENT_PENDING,
        [JOB_EVENT_ERROR] = STRATA_JOB_EVENT_ERROR,
        [JOB_EVENT_COMPLETED] = STRATA_JOB_EVENT_COMPLETED,
    };
    StrataJob *sj = opaque;
    if (!sj->job) {
        /* The first event comes from inside strata_job_start. */
        sj->job = job;
        job_ref(job);
    }
    sj->refcnt++;
    if (sj->cb) {
        sj->cb(sj->opaque, sj, map[ev]);
    }
    if (ev == JOB_EVENT_COMPLETED && sj->target) {
        bdrv_unref(sj->target);
        sj->target = NULL;
    }
    if (ev == JOB_EVENT_STATUS_CHANGE && job->status == JOB_STATUS_NULL && sj->live) {
        sj->live = false;
        api_jobs = g_list_remove(api_jobs, sj);
        job_remove_listener(job, api_job_event, sj);
        api_job_unref(sj);
    }
    api_job_unref(sj);
}

/* ---- starting -------------------------------------------------------------------------------- */

static bool same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (!a || !b) {
        return false;
    }
    if (strcmp(a, b) == 0) {
        return true;
    }
    return realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) == 0;
}

/* The node of @top's backing chain (filters skipped) called @name, by node name or filename. */
static BlockDriverState *api_find_in_chain(BlockDriverState *top, const char *name, GError **errp)
{
    for (BlockDriverState *bs = bdrv_skip_filters(top); bs;
         bs = bdrv_skip_filters(bdrv_cow_bs(bs))) {
        if (strcmp(bdrv_get_node_name(bs), name) == 0 || same_file(bs->filename, name)) {
            return bs;
        }
    }
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                "'%s' is not an image of the backing chain of '%s'", name, top->filename);
    return NULL;
}

static BlockDriverState *api_chain_bottom(BlockDriverState *top)
{
    BlockDriverState *bs = bdrv_skip_filters(top);
    while (bdrv_cow_bs(bs)) {
        bs = bdrv_skip_filters(bdrv_cow_bs(bs));
    }
    return bs;
}

static bool api_take_policy(GHashTable *o, const char *key, JobErrorPolicy *p, GError **errp)
{
    g_autofree char *v = opts_take_str(o, key);
    *p = JOB_ERROR_REPORT;
    return !v || job_parse_error_policy(v, p, errp);
}

/* Options shared by every type: id, speed, auto-*, error policies. */
static bool api_take_common(GHashTable *o, BlockJobOptions *jo, char **id, GError **errp)
{
    uint64_t speed;
    bool auto_finalize, auto_dismiss;
    *id = opts_take_str(o, "id");
    jo->id = *id;
    if (!opts_take_size(o, "speed", 0, &speed, errp) ||
        !opts_take_bool(o, "auto-finalize", true, &auto_finalize, errp) ||
        !opts_take_bool(o, "auto-dismiss", true, &auto_dismiss, errp)) {
        return false;
    }
    if (speed > INT64_MAX) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "speed is too large");
        return false;
    }
    jo->speed = (int64_t)speed;
    jo->flags = (auto_finalize ? 0 : JOB_MANUAL_FINALIZE) | (auto_dismiss ? 0 : JOB_MANUAL_DISMISS);
    return true;
}

static Job *api_start_commit(BlockDriverState *image, GHashTable *o, BlockJobOptions *jo,
                             GError **errp)
{
    g_autofree char *top_name = opts_take_str(o, "top");
    g_autofree char *base_name = opts_take_str(o, "base");
    g_autofree char *backing = opts_take_str(o, "backing-file");
    JobErrorPolicy p;
    if (!api_take_policy(o, "on-error", &p, errp)) {
        return NULL;
    }
    jo->on_source_error = jo->on_target_error = p;
    jo->backing_file = backing;
    BlockDriverState *top =
        top_name ? api_find_in_chain(image, top_name, errp) : bdrv_skip_filters(image);
    if (!top) {
        return NULL;
    }
    BlockDriverState *base =
        base_name ? api_find_in_chain(top, base_name, errp) : api_chain_bottom(top);
    if (!base) {
        return NULL;
    }
    if (top == base) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Top '%s' has no backing file to commit into", top->filename);
        return NULL;
    }
    if (g_hash_table_size(o)) {
        return NULL; /* the caller reports the leftover option */
    }
    if (top == bdrv_skip_filters(image)) {
        return commit_active_start(image, base, jo, errp);
    }
    return commit_start(top, base, jo, errp);
}

static Job *api_start_stream(BlockDriverState *image, GHashTable *o, BlockJobOptions *jo,
                             GError **errp)
{
    g_autofree char *base_name = opts_take_str(o, "base");
    g_autofree char *backing = opts_take_str(o, "backing-file");
    JobErrorPolicy p;
    if (!api_take_policy(o, "on-error", &p, errp)) {
        return NULL;
    }
    jo->on_source_error = jo->on_target_error = p;
    jo->backing_file = backing;
    BlockDriverState *base = NULL;
    if (base_name) {
        base = api_find_in_chain(image, base_name, errp);
        if (!base) {
            return NULL;
        }
    }
    if (g_hash_table_size(o)) {
        return NULL;
    }
    return stream_start(image, base, jo, errp);
}

static Job *api_start_mirror(BlockDriverState *image, GHashTable *o, BlockJobOptions *jo,
                             BlockDriverState **target_out, GError **errp)
{
    static const char *const syncs[] = {"full", "top", "none", NULL};
    static const char *const modes[] = {"background", "write-blocking", NULL};
    g_autofree char *target = opts_take_str(o, "target");
    g_autofree char *fmt = opts_take_str(o, "target-format");
    int sync, mode;
    uint64_t granularity, buf_size;
    if (!api_take_policy(o, "on-source-error", &jo->on_source_error, errp) ||
        !api_take_policy(o, "on-target-error", &jo->on_target_error, errp) ||
        !opts_take_enum(o, "sync", syncs, 0, &sync, errp) ||
        !opts_take_enum(o, "copy-mode", modes, 0, &mode, errp) ||
        !opts_take_size(o, "granularity", 0, &granularity, errp) ||
        !opts_take_size(o, "buf-size", 0, &buf_size, errp)) {
        return NULL;
    }
    if (!target) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "mirror needs a target=FILENAME option");
        return NULL;
    }
    if (granularity > UINT32_MAX || buf_size > INT64_MAX) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "granularity or buf-size out of range");
        return NULL;
    }
    if (g_hash_table_size(o)) {
        return NULL;
    }
    jo->sync = (MirrorSyncMode)sync;
    jo->copy_mode = (MirrorCopyMode)mode;
    jo->granularity = (uint32_t)granularity;
    jo->buf_size = (int64_t)buf_size;
    GHashTable *topts = opts_new();
    if (fmt) {
        opts_set(topts, "driver", fmt);
    }
    BlockDriverState *tbs = bdrv_open(target, topts, BDRV_O_RDWR, errp);
    if (!tbs) {
        return NULL;
    }
    Job *job = mirror_start(image, tbs, jo, errp);
    if (!job) {
        bdrv_unref(tbs);
        return NULL;
    }
    *target_out = tbs;
    return job;
}

StrataJob *strata_job_start(StrataImage *img, const char *type, const char *options,
                            StrataJobEventFunc *cb, void *opaque, StrataError **errp)
{
    GError *err = NULL;
    if (!api_check_main_thread("strata_job_start", errp)) {
        return NULL;
    }
    if (!img || !type || !blk_bs(img->blk)) {
        api_error_set(errp, -EINVAL, "strata_job_start: an image and a job type are needed");
        return NULL;
    }
    g_autoptr(GHashTable) o = opts_new();
    if (options && !opts_parse_kv(o, options, NULL, &err)) {
        api_error_propagate(errp, err);
        return NULL;
    }
    BlockJobOptions jo = {0};
    g_autofree char *id = NULL;
    if (!api_take_common(o, &jo, &id, &err)) {
        api_error_propagate(errp, err);
        return NULL;
    }
    /* One reference for the caller, one for the list while the job is live. */
    StrataJob *sj = g_new0(StrataJob, 1);
    sj->cb = cb;
    sj->opaque = opaque;
    sj->refcnt = 2;
    sj->live = true;
    api_jobs = g_list_append(api_jobs, sj);
    jo.cb = api_job_event;
    jo.opaque = sj;

    BlockDriverState *image = blk_bs(img->blk);
    Job *job = NULL;
    api_main_enter();
    if (strcmp(type, "commit") == 0) {
        job = api_start_commit(image, o, &jo, &err);
    } else if (strcmp(type, "stream") == 0) {
        job = api_start_stream(image, o, &jo, &err);
    } else if (strcmp(type, "mirror") == 0) {
        job = api_start_mirror(image, o, &jo, &sj->target, &err);
    } else {
        g_set_error(&err, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Unknown job type '%s' (commit, stream or mirror)", type);
    }
    api_main_leave();
    if (!job) {
        if (!err && g_hash_table_size(o)) {
            GList *keys = g_list_sort(g_hash_table_get_keys(o), (GCompareFunc)strcmp);
            g_set_error(&err, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "Job type '%s' does not support the option '%s'", type, (char *)keys->data);
            g_list_free(keys);
        }
        api_jobs = g_list_remove(api_jobs, sj);
        if (sj->job) {
            job_unref(sj->job);
        }
        g_free(sj);
        api_error_propagate(errp, err);
        return NULL;
    }
    if (!sj->job) {
        sj->job = job;
        job_ref(job);
    }
    return sj;
}

/* ---- queries --------------------------------------------------------------------------------- */

void strata_job_unref(StrataJob *job)
{
    if (job && api_check_main_thread("strata_job_unref", NULL)) {
        api_job_unref(job);
    }
}

StrataJob *strata_job_find(const char *id)
{
    if (!id || !api_check_main_thread("strata_job_find", NULL)) {
        return NULL;
    }
    for (GList *l = api_jobs; l; l = l->next) {
        StrataJob *sj = l->data;
        if (strcmp(sj->job->id, id) == 0) {
            sj->refcnt++;
            return sj;
        }
    }
    return NULL;
}

size_t strata_job_list(StrataJob **jobs, size_t max)
{
    size_t n = 0;
    if (!api_check_main_thread("strata_job_list", NULL)) {
        return 0;
    }
    for (GList *l = api_jobs; l; l = l->next, n++) {
        if (n < max) {
            StrataJob *sj = l->data;
            sj->refcnt++;
            jobs[n] = sj;
        }
    }
    return n;
}

const char *strata_job_id(const StrataJob *job)
{
    return job->job->id;
}

const char *strata_job_type(const StrataJob *job)
{
    return job_type(job->job);
}

StrataJobStatus strata_job_status(const StrataJob *job)
{
    return (StrataJobStatus)job->job->status;
}

const char *strata_job_status_name(StrataJobStatus status)
{
    return job_status_name((JobStatus)status);
}

void strata_job_progress(const StrataJob *job, uint64_t *current, uint64_t *total)
{
    job_progress(job->job, current, total);
}

int strata_job_error(const StrataJob *job)
{
    return job_ret(job->job);
}

const char *strata_job_error_message(const StrataJob *job)
{
    return job_error_message(job->job);
}

/* ---- verbs ----------------------------------------------------------------------------------- */

/* Runs @verb on the job inside the main-loop bracket; maps its error. */
#define API_JOB_VERB(name, job, errp, call)                                                        \
    do {                                                                                           \
        GError *err_ = NULL;                                                                       \
        if (!api_check_main_thread(name, errp)) {                                                  \
            return -EPERM;                                                                         \
        }                                                                                          \
        api_main_enter();                                                                          \
        (job)->refcnt++;                                                                           \
        bool ok_ = (call);                                                                         \
        api_job_unref(job);                                                                        \
        api_main_leave();                                                                          \
        return ok_ ? 0 : api_error_propagate(errp, err_);                                          \
    } while (0)

int strata_job_pause(StrataJob *job, StrataError **errp)
{
    API_JOB_VERB("strata_job_pause", job, errp, job_user_pause(job->job, &err_));
}

int strata_job_resume(StrataJob *job, StrataError **errp)
{
    API_JOB_VERB("strata_job_resume", job, errp, job_user_resume(job->job, &err_));
}

int strata_job_cancel(StrataJob *job, bool force, StrataError **errp)
{
    API_JOB_VERB("strata_job_cancel", job, errp, job_user_cancel(job->job, force, &err_));
}

int strata_job_complete(StrataJob *job, StrataError **errp)
{
    API_JOB_VERB("strata_job_complete", job, errp, job_complete(job->job, &err_));
}

int strata_job_finalize(StrataJob *job, StrataError **errp)
{
    API_JOB_VERB("strata_job_finalize", job, errp, job_finalize(job->job, &err_));
}

int strata_job_dismiss(StrataJob *job, StrataError **errp)
{
    API_JOB_VERB("strata_job_dismiss", job, errp, job_dismiss(job->job, &err_));
}

int strata_job_set_speed(StrataJob *job, uint64_t speed, StrataError **errp)
{
    API_JOB_VERB("strata_job_set_speed", job, errp,
                 speed <= INT64_MAX ? job_set_speed(job->job, (int64_t)speed, &err_)
                                    : job_set_speed(job->job, -1, &err_));
}

int strata_job_wait(StrataJob *job, bool until_ready, StrataError **errp)
{
    GError *err = NULL;
    if (!api_check_main_thread("strata_job_wait", errp)) {
        return -EPERM;
    }
    api_main_enter();
    job->refcnt++;
    int ret = job_wait(job->job, until_ready, &err);
    api_job_unref(job);
    api_main_leave();
    if (ret < 0) {
        /* The job's own errno (-ECANCELED has no G_FILE_ERROR code to travel in). */
        api_error_set(errp, ret, "%s", err ? err->message : g_strerror(-ret));
        g_clear_error(&err);
    }
    return ret;
}
