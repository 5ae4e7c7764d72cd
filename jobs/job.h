/*
 * Jobs: long-running background operations (commit, stream, mirror) with
 * a state machine, pause points, a rate limit, progress and events.
 *
 * A job is a coroutine in the main loop plus a state machine:
 *
 *   created -> running <-> paused               (user pause, drained sections)
 *              running -> ready <-> standby     (mirror: in sync, waits for complete)
 *   running/ready -> waiting -> pending -> concluded -> null
 *                     (success: prepare + commit at finalize)
 *   any live state -> aborting -> concluded -> null
 *                     (failure or cancel: abort)
 *
 * Verbs (pause, resume, cancel, set-speed, complete, finalize, dismiss)
 * are accepted only in the states the table in job.c lists; otherwise
 * they fail with "Job 'ID' in state 'S' cannot accept command verb 'V'".
 * Finalize is automatic unless JOB_MANUAL_FINALIZE (the job then stops in
 * pending), dismissal likewise unless JOB_MANUAL_DISMISS (the job then
 * stays in concluded so that its result can be read).
 *
 * Threads: every function here runs in the main loop thread.  The job's
 * coroutine lives in the main AioContext; its I/O may wait on other
 * threads, and other threads may wake it only through job_enter() called
 * from a bottom half in the main loop.  Functions marked coroutine_fn are
 * for the job's own coroutine (the driver's run callback).
 */
#ifndef STRATA_JOB_H
#define STRATA_JOB_H

#include <glib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "aio/aio.h"
#include "coroutine/coroutine.h"

typedef struct Job Job;
typedef struct JobDriver JobDriver;

typedef enum JobStatus {
    JOB_STATUS_CREATED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_PAUSED,
    JOB_STATUS_READY,
    JOB_STATUS_STANDBY,
    JOB_STATUS_WAITING,
    JOB_STATUS_PENDING,
    JOB_STATUS_ABORTING,
    JOB_STATUS_CONCLUDED,
    JOB_STATUS_NULL,
    JOB_STATUS__MAX,
} JobStatus;

typedef enum JobVerb {
    JOB_VERB_CANCEL,
    JOB_VERB_PAUSE,
    JOB_VERB_RESUME,
    JOB_VERB_SET_SPEED,
    JOB_VERB_COMPLETE,
    JOB_VERB_FINALIZE,
    JOB_VERB_DISMISS,
    JOB_VERB__MAX,
} JobVerb;

/* What an embedder hears about (job_add_listener). */
typedef enum JobEvent {
    JOB_EVENT_STATUS_CHANGE, /* job->status changed (also to ready, pending, concluded, null) */
    JOB_EVENT_READY,         /* the job is ready to be completed */
    JOB_EVENT_PENDING,       /* the job waits for finalize (manual finalize) */
    JOB_EVENT_ERROR,         /* an I/O error met the error policy (job_error_action) */
    JOB_EVENT_COMPLETED,     /* concluded; job_ret()/job_error_message() tell how */
} JobEvent;

/*
 * Called in the main loop for each event of @job, in order.  It may query
 * the job and call verbs on it (other than freeing it).  @job stays valid
 * during the call.
 */
typedef void JobEventFunc(Job *job, JobEvent event, void *opaque);

/* job_create() flags. */
enum {
    JOB_MANUAL_FINALIZE = 1 << 0,
    JOB_MANUAL_DISMISS = 1 << 1,
};

/* What to do when a request of the job fails (QEMU's on-error values). */
typedef enum JobErrorPolicy {
    JOB_ERROR_REPORT, /* fail the job with the error */
    JOB_ERROR_IGNORE, /* carry on; the data concerned is not copied */
    JOB_ERROR_STOP,   /* pause the job; resuming retries */
    JOB_ERROR_ENOSPC, /* stop on ENOSPC, report anything else */
} JobErrorPolicy;

typedef enum JobErrorAction {
    JOB_ACTION_REPORT,
    JOB_ACTION_IGNORE,
    JOB_ACTION_STOP,
} JobErrorAction;

/*
 * The callbacks of a job type.  All but run are optional and run in the
 * main loop outside coroutines.
 */
struct JobDriver {
    const char *type; /* "commit", "stream", "mirror", "active-commit", ... */
    size_t instance_size;

    /*
     * The job's body, in its coroutine.  Calls job_pause_point() (or the
     * sleeping helpers) between iterations, checks job_is_cancelled().
     * Returns 0 or -errno (a message in @errp when it has one).
     */
    int coroutine_fn (*run)(Job *job, GError **errp);
    /* The user asked a ready job to complete; may refuse with an error. */
    bool (*complete)(Job *job, GError **errp);
    /*
     * Cancel was requested: returns whether it is a forced cancel (abort)
     * or, for a ready mirror, a request to stop without pivoting (false).
     * Without it every cancel is forced.
     */
    bool (*cancel)(Job *job, bool force);
    /* The coroutine parks at a pause point / leaves it. */
    void (*pause)(Job *job);
    void (*resume)(Job *job);
    /* While the coroutine is not busy: does the job still have I/O in flight (drain waits)? */
    bool (*drained_poll)(Job *job);
    /*
     * Finalizing a job whose run succeeded: make the result visible (graph
     * changes).  Failing here turns the job into a failed one (abort runs).
     */
    bool (*prepare)(Job *job, GError **errp);
    /* After a successful prepare. */
    void (*commit)(Job *job);
    /* After a failure or cancel (also when prepare failed). */
    void (*abort)(Job *job);
    /* Always, after commit or abort: release what the job held. */
    void (*clean)(Job *job);
    /* The last reference is gone: free what instance_size does not cover. */
    void (*free)(Job *job);
};

/* The last error action reported (for listeners of JOB_EVENT_ERROR). */
typedef struct JobErrorInfo {
    JobErrorAction action;
    bool is_read;
    int error; /* positive errno */
} JobErrorInfo;

/* Token bucket: @speed bytes/s, bursts of up to one slice. */
typedef struct RateLimit {
    uint64_t speed;  /* 0: unlimited */
    int64_t next_ns; /* virtual time when the bytes sent so far are paid for */
} RateLimit;

#define JOB_SLICE_NS (100 * 1000 * 1000LL)

/*
 * A job.  Drivers embed it as the first member of their own state.
 * Everything is main-loop only unless said otherwise.
 */
struct Job {
    char *id;
    const JobDriver *driver;
    JobStatus status;
    int refcnt;
    int flags; /* JOB_MANUAL_* */

    Coroutine *co;
    AioTimer *sleep_timer;
    bool busy;         /* the coroutine runs (not parked in a yield or sleep) */
    bool paused;       /* the coroutine is parked at a pause point */
    int pause_count;   /* drained sections + user pauses */
    int user_pauses;   /* pauses asked by the user (nested) */
    bool cancelled;    /* cancel requested */
    bool force_cancel; /* ... and it is a real abort */
    bool finished;     /* run returned; completion is scheduled or done */
    bool finalizing;   /* inside prepare/commit/abort/clean */

    int ret;     /* run's result, then prepare's */
    char *error; /* message of a failure, NULL on success */

    RateLimit limit;
    _Atomic uint64_t progress_current, progress_total;

    JobErrorInfo last_error;
    GArray *listeners; /* JobListener */
};

/* --- lifecycle (main loop) --- */

/*
 * Creates a job of @driver (instance_size bytes, zeroed) in state created.
 * @id must be unique among live jobs (NULL: a generated "#jobN").  @cb,
 * when given, is added as a listener.  Returns NULL with an error on a
 * duplicate or invalid id.  The job holds one reference for its own life
 * (dropped when dismissed); take another with job_ref() to keep it after.
 */
void *job_create(const char *id, const JobDriver *driver, int flags, JobEventFunc *cb, void *opaque,
                 GError **errp);
/* Starts the coroutine: created -> running. */
void job_start(Job *job);
/*
 * Drops a job that could not be set up (still created, never started):
 * runs the driver's clean (which must cope with a half-built job) and
 * dismisses it.
 */
void job_early_fail(Job *job);
void job_ref(Job *job);
void job_unref(Job *job);

void job_add_listener(Job *job, JobEventFunc *cb, void *opaque);
void job_remove_listener(Job *job, JobEventFunc *cb, void *opaque);

/* The live (not dismissed) job called @id, or NULL. */
Job *job_find(const char *id);
/* Live jobs in creation order (g_list_free the list; the jobs are not referenced). */
GList *job_list(void);

/* --- verbs (main loop) --- */

/* Fails with the standard message unless @verb is allowed in the job's state. */
bool job_apply_verb(Job *job, JobVerb verb, GError **errp);
/* User pause/resume; nested: each pause needs its resume. */
bool job_user_pause(Job *job, GError **errp);
bool job_user_resume(Job *job, GError **errp);
/* Internal pause (drained sections); nested, never fails. */
void job_pause(Job *job);
void job_resume(Job *job);
/* Requests cancellation; @force aborts a ready mirror instead of stopping it in sync. */
bool job_user_cancel(Job *job, bool force, GError **errp);
/* Cancels and runs the main loop until the job concluded; returns its ret. */
int job_cancel_sync(Job *job, bool force);
/* Asks a ready job to complete (mirror: pivot). */
bool job_complete(Job *job, GError **errp);
/* Runs the main loop until the job concluded (driving it to ready -> complete if need be). */
int job_complete_sync(Job *job, GError **errp);
/* Manual finalize of a pending job. */
bool job_finalize(Job *job, GError **errp);
/* Removes a concluded job from the list (state null). */
bool job_dismiss(Job *job, GError **errp);
/* Changes the rate limit (bytes/s, 0 = unlimited); effective at once, also while sleeping. */
bool job_set_speed(Job *job, int64_t speed, GError **errp);
/*
 * Runs the main loop until @job concluded, is pending (manual finalize)
 * or, with @until_ready, is ready (or in standby because the user paused
 * it; a standby that a drained section caused is waited out).  Returns 0
 * when it got there with success, else the job's error.
 */
int job_wait(Job *job, bool until_ready, GError **errp);

/* --- queries (main loop; the progress getters from any thread) --- */

const char *job_status_name(JobStatus status);
const char *job_verb_name(JobVerb verb);
const char *job_type(const Job *job);
bool job_is_ready(const Job *job);
/* Concluded or null: nothing more will happen. */
bool job_is_completed(const Job *job);
/* A forced cancel was requested. */
bool job_is_cancelled(const Job *job);
/* Any cancel was requested (ready mirror: stop in sync). */
bool job_cancel_requested(const Job *job);
int job_ret(const Job *job);
const char *job_error_message(const Job *job);
void job_progress(const Job *job, uint64_t *current, uint64_t *total);

/* --- for the job's coroutine --- */

/* Parks the coroutine while the job is paused (by the user or a drained section). */
void coroutine_fn job_pause_point(Job *job);
/* Sleeps @ns (or until woken by resume/cancel/complete/set_speed), then a pause point. */
void coroutine_fn job_sleep_ns(Job *job, int64_t ns);
/* Yields until job_enter(); no pause point. */
void coroutine_fn job_yield(Job *job);
/* Wakes the coroutine when it sleeps or yields (not when paused at a pause point). */
void job_enter(Job *job);
/* running -> ready; emits the ready event. */
void job_transition_to_ready(Job *job);
/* Accounts @bytes against the rate limit; returns how long to sleep (0 = go on). */
int64_t job_ratelimit_account(Job *job, uint64_t bytes);

/* Progress (any thread). */
void job_progress_update(Job *job, uint64_t done);
void job_progress_set_remaining(Job *job, uint64_t remaining);
void job_progress_increase_remaining(Job *job, uint64_t delta);

/*
 * An I/O error of the job met @policy: tells the listeners (JOB_EVENT_ERROR)
 * and returns what to do.  STOP pauses the job as a user pause would
 * (resume retries).  Main loop, also from the job's coroutine.
 */
JobErrorAction job_error_action(Job *job, JobErrorPolicy policy, bool is_read, int error);
JobErrorInfo job_last_error(const Job *job);
/* "report", "ignore", "stop", "enospc". */
bool job_parse_error_policy(const char *name, JobErrorPolicy *policy, GError **errp);

#endif /* STRATA_JOB_H */
