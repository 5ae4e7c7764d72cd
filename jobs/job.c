/*
 * Jobs: the state machine, verbs, pause points, sleeping, rate limit,
 * progress, events and completion (see job.h for the model).
 *
 * Everything runs in the main loop thread, so the job state needs no lock:
 * the coroutine and the verbs interleave only at yields.  The coroutine is
 * "busy" whenever it runs or waits on something other than job_yield /
 * job_sleep_ns / a pause point; job_enter() wakes it only when it is not
 * busy, so it is never entered twice.
 *
 * Completion: when run returns, a bottom half in the main loop takes over
 * (the coroutine has finished by then).  Success goes waiting -> pending
 * and, at finalize (automatic or job_finalize), prepare, commit and clean
 * run and the job concludes.  Failure or a forced cancel goes aborting:
 * abort and clean run and the job concludes with its error.  A concluded
 * job is dismissed (automatically or by job_dismiss): state null, off the
 * list.  The list holds one reference, the running coroutine another.
 */
#include "jobs/job.h"

#include <errno.h>
#include <string.h>

typedef struct JobListener {
    JobEventFunc *cb;
    void *opaque;
} JobListener;

static GList *all_jobs; /* live jobs (not dismissed), creation order */
static unsigned job_counter;

/* ---- names and tables ------------------------------------------------------------------------ */

static const char *const status_names[JOB_STATUS__MAX] = {
    [JOB_STATUS_CREATED] = "created",     [JOB_STATUS_RUNNING] = "running",
    [JOB_STATUS_PAUSED] = "paused",       [JOB_STATUS_READY] = "ready",
    [JOB_STATUS_STANDBY] = "standby",     [JOB_STATUS_WAITING] = "waiting",
    [JOB_STATUS_PENDING] = "pending",     [JOB_STATUS_ABORTING] = "aborting",
    [JOB_STATUS_CONCLUDED] = "concluded", [JOB_STATUS_NULL] = "null",
};

static const char *const verb_names[JOB_VERB__MAX] = {
    [JOB_VERB_CANCEL] = "cancel",     [JOB_VERB_PAUSE] = "pause",
    [JOB_VERB_RESUME] = "resume",     [JOB_VERB_SET_SPEED] = "set-speed",
    [JOB_VERB_COMPLETE] = "complete", [JOB_VERB_FINALIZE] = "finalize",
    [JOB_VERB_DISMISS] = "dismiss",
};

#define S(x) (1u << JOB_STATUS_##x)

/* Which states each state may move to. */
static const unsigned transitions[JOB_STATUS__MAX] = {
    [JOB_STATUS_CREATED] = S(RUNNING) | S(ABORTING) | S(NULL),
    [JOB_STATUS_RUNNING] = S(PAUSED) | S(READY) | S(WAITING) | S(ABORTING),
    [JOB_STATUS_PAUSED] = S(RUNNING),
    [JOB_STATUS_READY] = S(STANDBY) | S(WAITING) | S(ABORTING),
    [JOB_STATUS_STANDBY] = S(READY),
    [JOB_STATUS_WAITING] = S(PENDING) | S(ABORTING),
    [JOB_STATUS_PENDING] = S(CONCLUDED) | S(ABORTING),
    [JOB_STATUS_ABORTING] = S(CONCLUDED),
    [JOB_STATUS_CONCLUDED] = S(NULL),
    [JOB_STATUS_NULL] = 0,
};

#define LIVE (S(CREATED) | S(RUNNING) | S(PAUSED) | S(READY) | S(STANDBY))

/* In which states each verb is accepted. */
static const unsigned verbs[JOB_VERB__MAX] = {
    [JOB_VERB_CANCEL] = LIVE | S(WAITING) | S(PENDING),
    [JOB_VERB_PAUSE] = LIVE,
    [JOB_VERB_RESUME] = LIVE,
    [JOB_VERB_SET_SPEED] = LIVE,
    [JOB_VERB_COMPLETE] = S(READY),
    [JOB_VERB_FINALIZE] = S(PENDING),
    [JOB_VERB_DISMISS] = S(CONCLUDED),
};

#undef S

const char *job_status_name(JobStatus status)
{
    return status < JOB_STATUS__MAX ? status_names[status] : "invalid";
}

const char *job_verb_name(JobVerb verb)
{
    return verb < JOB_VERB__MAX ? verb_names[verb] : "invalid";
}

bool job_apply_verb(Job *job, JobVerb verb, GError **errp)
{
    if (verbs[verb] & (1u << job->status)) {
        return true;
    }
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                "Job '%s' in state '%s' cannot accept command verb '%s'", job->id,
                job_status_name(job->status), job_verb_name(verb));
    return false;
}

/* ---- events ---------------------------------------------------------------------------------- */

void job_add_listener(Job *job, JobEventFunc *cb, void *opaque)
{
    JobListener l = {cb, opaque};
    g_array_append_val(job->listeners, l);
}

void job_remove_listener(Job *job, JobEventFunc *cb, void *opaque)
{
    for (guint i = 0; i < job->listeners->len; i++) {
        JobListener *l = &g_array_index(job->listeners, JobListener, i);
        if (l->cb == cb && l->opaque == opaque) {
            g_array_remove_index(job->listeners, i);
            return;
        }
    }
}

static void job_notify(Job *job, JobEvent event)
{
    /* A listener may add or remove listeners: call a copy. */
    g_autoptr(GArray) copy = g_array_copy(job->listeners);
    job_ref(job);
    for (guint i = 0; i < copy->len; i++) {
        JobListener *l = &g_array_index(copy, JobListener, i);
        l->cb(job, event, l->opaque);
    }
    job_unref(job);
}

static void job_state_transition(Job *job, JobStatus to)
{
    if (!(transitions[job->status] & (1u << to))) {
        g_error("job '%s': illegal transition %s -> %s", job->id, job_status_name(job->status),
                job_status_name(to));
    }
    job->status = to;
    job_notify(job, JOB_EVENT_STATUS_CHANGE);
}

/* ---- creation and references ----------------------------------------------------------------- */

static bool job_id_valid(const char *id)
{
    if (!g_ascii_isalpha(id[0])) {
        return false;
    }
    for (const char *p = id; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.') {
            return false;
        }
    }
    return strlen(id) < 128;
}

static void job_sleep_timer_cb(void *opaque)
{
    job_enter(opaque);
}

void *job_create(const char *id, const JobDriver *driver, int flags, JobEventFunc *cb, void *opaque,
                 GError **errp)
{
    g_assert(aio_in_main_thread());
    g_assert(driver->instance_size >= sizeof(Job));
    if (id && !job_id_valid(id)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Invalid job ID '%s' (a letter, then letters, digits, '-', '_' or '.')", id);
        return NULL;
    }
    if (id && job_find(id)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST, "Job ID '%s' already in use", id);
        return NULL;
    }
    Job *job = g_malloc0(driver->instance_size);
    job->id = id ? g_strdup(id) : g_strdup_printf("#job%u", job_counter);
    job_counter++;
    job->driver = driver;
    job->status = JOB_STATUS_CREATED;
    job->refcnt = 1;
    job->flags = flags;
    job->listeners = g_array_new(false, false, sizeof(JobListener));
    job->sleep_timer = aio_timer_new(aio_main_context(), job_sleep_timer_cb, job);
    if (cb) {
        job_add_listener(job, cb, opaque);
    }
    all_jobs = g_list_append(all_jobs, job);
    return job;
}

void job_ref(Job *job)
{
    job->refcnt++;
}

void job_unref(Job *job)
{
    g_assert(job->refcnt > 0);
    if (--job->refcnt > 0) {
        return;
    }
    g_assert(!g_list_find(all_jobs, job));
    if (job->driver->free) {
        job->driver->free(job);
    }
    aio_timer_free(job->sleep_timer);
    g_array_unref(job->listeners);
    g_free(job->error);
    g_free(job->id);
    g_free(job);
}

Job *job_find(const char *id)
{
    for (GList *l = all_jobs; l; l = l->next) {
        Job *job = l->data;
        if (strcmp(job->id, id) == 0) {
            return job;
        }
    }
    return NULL;
}

GList *job_list(void)
{
    return g_list_copy(all_jobs);
}

/* ---- queries --------------------------------------------------------------------------------- */

const char *job_type(const Job *job)
{
    return job->driver->type;
}

bool job_is_ready(const Job *job)
{
    return job->status == JOB_STATUS_READY || job->status == JOB_STATUS_STANDBY;
}

bool job_is_completed(const Job *job)
{
    return job->status == JOB_STATUS_CONCLUDED || job->status == JOB_STATUS_NULL;
}

bool job_is_cancelled(const Job *job)
{
    return job->cancelled && job->force_cancel;
}

bool job_cancel_requested(const Job *job)
{
    return job->cancelled;
}

int job_ret(const Job *job)
{
    return job->ret;
}

const char *job_error_message(const Job *job)
{
    return job->error;
}

void job_progress(const Job *job, uint64_t *current, uint64_t *total)
{
    *current = atomic_load(&((Job *)job)->progress_current);
    *total = atomic_load(&((Job *)job)->progress_total);
}

void job_progress_update(Job *job, uint64_t done)
{
    atomic_fetch_add(&job->progress_current, done);
}

void job_progress_set_remaining(Job *job, uint64_t remaining)
{
    atomic_store(&job->progress_total, atomic_load(&job->progress_current) + remaining);
}

void job_progress_increase_remaining(Job *job, uint64_t delta)
{
    atomic_fetch_add(&job->progress_total, delta);
}

JobErrorInfo job_last_error(const Job *job)
{
    return job->last_error;
}

/* ---- the coroutine side ---------------------------------------------------------------------- */

void job_enter(Job *job)
{
    if (!job->co || job->finished || job->busy) {
        return;
    }
    aio_timer_del(job->sleep_timer);
    job->busy = true;
    aio_co_wake(job->co);
}

/* Parks the coroutine until job_enter(); with @deadline_ns >= 0 the timer enters it then. */
static void coroutine_fn job_do_yield(Job *job, int64_t deadline_ns)
{
    g_assert(job->busy && co_self() == job->co);
    if (deadline_ns >= 0) {
        aio_timer_mod(job->sleep_timer, deadline_ns);
    }
    job->busy = false;
    aio_wait_kick(); /* a drain may be waiting for the job to settle */
    co_yield();
    g_assert(job->busy);
}

void coroutine_fn job_pause_point(Job *job)
{
    if (job->pause_count == 0 || job_is_cancelled(job)) {
        return;
    }
    if (job->driver->pause) {
        job->driver->pause(job);
    }
    JobStatus was = job->status;
    job_state_transition(job, was == JOB_STATUS_READY ? JOB_STATUS_STANDBY : JOB_STATUS_PAUSED);
    job->paused = true;
    while (job->pause_count > 0 && !job_is_cancelled(job)) {
        job_do_yield(job, -1);
    }
    job->paused = false;
    job_state_transition(job, was);
    if (job->driver->resume) {
        job->driver->resume(job);
    }
}

void coroutine_fn job_sleep_ns(Job *job, int64_t ns)
{
    if (!job_is_cancelled(job) && job->pause_count == 0) {
        job_do_yield(job, aio_clock_ns() + MAX(ns, 0));
    }
    job_pause_point(job);
}

void coroutine_fn job_yield(Job *job)
{
    if (!job_is_cancelled(job)) {
        job_do_yield(job, -1);
    }
}

void job_transition_to_ready(Job *job)
{
    job_state_transition(job, JOB_STATUS_READY);
    job_notify(job, JOB_EVENT_READY);
}

int64_t job_ratelimit_account(Job *job, uint64_t bytes)
{
    RateLimit *rl = &job->limit;
    if (!rl->speed) {
        return 0;
    }
    int64_t now = aio_clock_ns();
    /* After an idle spell the budget refills, but only up to one slice of burst. */
    if (rl->next_ns < now - JOB_SLICE_NS) {
        rl->next_ns = now - JOB_SLICE_NS;
    }
    rl->next_ns += (int64_t)((double)bytes * 1e9 / (double)rl->speed);
    return rl->next_ns > now ? rl->next_ns - now : 0;
}

static void job_completed(Job *job);

static void job_exit_bh(void *opaque)
{
    Job *job = opaque;
    job_completed(job);
    job_unref(job); /* the coroutine's reference */
}

static void coroutine_fn job_co_entry(void *opaque)
{
    Job *job = opaque;
    GError *err = NULL;

    job_pause_point(job); /* paused before it started: wait here */
    int ret = job->driver->run(job, &err);
    job->ret = ret;
    if (ret < 0 && !job->error) {
        job->error = err ? g_strdup(err->message) : g_strdup(g_strerror(-ret));
    }
    g_clear_error(&err);
    job->busy = false;
    job->finished = true;
    /* Completion changes the graph: outside the coroutine, in the main loop. */
    aio_bh_schedule_oneshot(aio_main_context(), job_exit_bh, job);
}

void job_start(Job *job)
{
    g_assert(job->status == JOB_STATUS_CREATED && !job->co);
    job->co = co_create(job_co_entry, job);
    job->busy = true;
    job_ref(job); /* the coroutine's */
    job_state_transition(job, JOB_STATUS_RUNNING);
    aio_co_enter(aio_main_context(), job->co);
}

/* ---- completion ------------------------------------------------------------------------------ */

static void job_do_dismiss(Job *job)
{
    job_state_transition(job, JOB_STATUS_NULL);
    all_jobs = g_list_remove(all_jobs, job);
    job_unref(job);
}

static void job_conclude(Job *job)
{
    job_state_transition(job, JOB_STATUS_CONCLUDED);
    job_notify(job, JOB_EVENT_COMPLETED);
    aio_wait_kick();
    if (!(job->flags & JOB_MANUAL_DISMISS)) {
        job_do_dismiss(job);
    }
}

static void job_set_failure(Job *job, int ret, GError *err)
{
    if (job->ret == 0) {
        job->ret = ret < 0 ? ret : -EIO;
    }
    if (!job->error && (err || job->ret != -ECANCELED)) {
        job->error = err ? g_strdup(err->message) : g_strdup(g_strerror(-job->ret));
    }
    g_clear_error(&err);
}

static void job_abort_and_conclude(Job *job)
{
    job->finalizing = true;
    job_state_transition(job, JOB_STATUS_ABORTING);
    if (job->driver->abort) {
        job->driver->abort(job);
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    job->finalizing = false;
    job_conclude(job);
}

static void job_do_finalize(Job *job)
{
    GError *err = NULL;

    job_ref(job);
    job->finalizing = true;
    if (job->driver->prepare && !job->driver->prepare(job, &err)) {
        job_set_failure(job, -EIO, err);
        job->finalizing = false;
        job_abort_and_conclude(job);
        job_unref(job);
        return;
    }
    if (job->driver->commit) {
        job->driver->commit(job);
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    job->finalizing = false;
    job_conclude(job);
    job_unref(job);
}

/* The coroutine has finished (or never started): decide how the job ends. */
static void job_completed(Job *job)
{
    if (job->ret == 0 && job_is_cancelled(job)) {
        job->ret = -ECANCELED;
    }
    if (job->ret < 0) {
        job_abort_and_conclude(job);
        return;
    }
    job_state_transition(job, JOB_STATUS_WAITING);
    job_state_transition(job, JOB_STATUS_PENDING);
    job_notify(job, JOB_EVENT_PENDING);
    if (!(job->flags & JOB_MANUAL_FINALIZE) && job->status == JOB_STATUS_PENDING &&
        !job->finalizing) {
        job_do_finalize(job);
    }
}

void job_early_fail(Job *job)
{
    g_assert(job->status == JOB_STATUS_CREATED && !job->co);
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    job_do_dismiss(job);
}

/* ---- verbs ----------------------------------------------------------------------------------- */

static void job_wake_bh(void *opaque)
{
    Job *job = opaque;
    aio_co_wake(job->co);
    job_unref(job);
}

/*
 * job_enter(), but the coroutine runs from a bottom half: pause and resume
 * come from drained sections, which may begin or end in the middle of a
 * graph change (graph writer lock held), where the job must not run.  The
 * job counts as busy from now on, so a drain waits until it has parked.
 */
static void job_enter_later(Job *job)
{
    if (!job->co || job->finished || job->busy) {
        return;
    }
    aio_timer_del(job->sleep_timer);
    job->busy = true;
    job_ref(job);
    aio_bh_schedule_oneshot(aio_main_context(), job_wake_bh, job);
}

void job_pause(Job *job)
{
    job->pause_count++;
    /* A sleeping job wakes up to park at its pause point. */
    if (!job->paused && !job->busy) {
        job_enter_later(job);
    }
}

void job_resume(Job *job)
{
    g_assert(job->pause_count > 0);
    if (--job->pause_count == 0) {
        job_enter_later(job);
    }
}

bool job_user_pause(Job *job, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_PAUSE, errp)) {
        return false;
    }
    if (job_cancel_requested(job)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM, "Job '%s' is being cancelled", job->id);
        return false;
    }
    job->user_pauses++;
    job_pause(job);
    return true;
}

bool job_user_resume(Job *job, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_RESUME, errp)) {
        return false;
    }
    if (job->user_pauses == 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                    "Can't resume a job that was not paused");
        return false;
    }
    job->user_pauses--;
    job_resume(job);
    return true;
}

bool job_user_cancel(Job *job, bool force, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_CANCEL, errp)) {
        return false;
    }
    bool forced = job->driver->cancel ? job->driver->cancel(job, force) : true;
    if (!job->cancelled) {
        job->cancelled = true;
        job->force_cancel = forced;
    } else if (forced) {
        job->force_cancel = true;
    }
    /* A cancel overrides the user's pauses (not those of drained sections). */
    if (job->user_pauses > 0) {
        job->pause_count -= job->user_pauses;
        job->user_pauses = 0;
    }
    if (job->status == JOB_STATUS_CREATED) {
        job->ret = -ECANCELED;
        job->force_cancel = true;
        job_completed(job);
    } else if (job->status == JOB_STATUS_PENDING && !job->finalizing) {
        job->ret = -ECANCELED;
        job->force_cancel = true;
        job_abort_and_conclude(job);
    } else {
        job_enter(job);
    }
    return true;
}

int job_cancel_sync(Job *job, bool force)
{
    job_ref(job);
    if (!job_is_completed(job)) {
        job_user_cancel(job, force, NULL);
        AIO_WAIT_WHILE(!job_is_completed(job));
    }
    int ret = job->ret;
    job_unref(job);
    return ret;
}

bool job_complete(Job *job, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_COMPLETE, errp)) {
        return false;
    }
    if (job_cancel_requested(job) || !job->driver->complete) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                    "The active block job '%s' cannot be completed", job->id);
        return false;
    }
    if (!job->driver->complete(job, errp)) {
        return false;
    }
    job_enter(job);
    return true;
}

bool job_finalize(Job *job, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_FINALIZE, errp)) {
        return false;
    }
    if (job->finalizing) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_AGAIN, "Job '%s' is being finalized", job->id);
        return false;
    }
    job_do_finalize(job);
    return true;
}

bool job_dismiss(Job *job, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_DISMISS, errp)) {
        return false;
    }
    job_do_dismiss(job);
    return true;
}

bool job_set_speed(Job *job, int64_t speed, GError **errp)
{
    if (!job_apply_verb(job, JOB_VERB_SET_SPEED, errp)) {
        return false;
    }
    if (speed < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Parameter 'speed' expects a non-negative value");
        return false;
    }
    job->limit.speed = speed;
    job->limit.next_ns = aio_clock_ns();
    /* A sleep computed for the old speed ends now; the next request pays at the new one. */
    job_enter(job);
    return true;
}

int job_wait(Job *job, bool until_ready, GError **errp)
{
    job_ref(job);
    /*
     * Standby because of a drained section is a moment: wait for ready, so
     * that a complete right after us is accepted.  A user's pause is not.
     */
    AIO_WAIT_WHILE(!job_is_completed(job) &&
                   !(until_ready && (job->status == JOB_STATUS_READY ||
                                     (job->status == JOB_STATUS_STANDBY && job->user_pauses))) &&
                   !(job->status == JOB_STATUS_PENDING && !job->finalizing));
    int ret = job->ret;
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret), "%s",
                    job->error ? job->error : g_strerror(-ret));
    }
    job_unref(job);
    return ret;
}

int job_complete_sync(Job *job, GError **errp)
{
    job_ref(job);
    int ret = job_wait(job, true, errp);
    if (ret == 0 && job_is_ready(job)) {
        ret = job_complete(job, errp) ? job_wait(job, false, errp) : -EPERM;
    }
    job_unref(job);
    return ret;
}

/* ---- errors ---------------------------------------------------------------------------------- */

bool job_parse_error_policy(const char *name, JobErrorPolicy *policy, GError **errp)
{
    static const char *const names[] = {"report", "ignore", "stop", "enospc"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (strcmp(name, names[i]) == 0) {
            *policy = (JobErrorPolicy)i;
            return true;
        }
    }
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "Invalid on-error value '%s' (report, ignore, stop or enospc)", name);
    return false;
}

JobErrorAction job_error_action(Job *job, JobErrorPolicy policy, bool is_read, int error)
{
    JobErrorAction action;
    error = error < 0 ? -error : error;
    switch (policy) {
    case JOB_ERROR_ENOSPC:
        action = error == ENOSPC ? JOB_ACTION_STOP : JOB_ACTION_REPORT;
        break;
    case JOB_ERROR_STOP:
        action = JOB_ACTION_STOP;
        break;
    case JOB_ERROR_IGNORE:
        action = JOB_ACTION_IGNORE;
        break;
    case JOB_ERROR_REPORT:
    default:
        action = JOB_ACTION_REPORT;
        break;
    }
    job->last_error = (JobErrorInfo){.action = action, .is_read = is_read, .error = error};
    job_notify(job, JOB_EVENT_ERROR);
    if (action == JOB_ACTION_STOP && !job_cancel_requested(job)) {
        /* As if the user paused it: the user's resume retries. */
        job->user_pauses++;
        job->pause_count++;
    }
    return action;
}
