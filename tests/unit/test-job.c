/*
 * The job framework with test job types (no images): the state machine
 * and its refusals, nested pauses, cancel in every live state, ready and
 * complete, soft and forced cancel, manual finalize and dismiss, the rate
 * limit (also changed while running), progress, error policies, and jobs
 * taking part in drained sections of the nodes they use.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "jobs/block-job.h"

/* ---- a test job: N iterations with a pause point each; optionally becomes ready -------------- */

typedef struct TestJob {
    BlockJob common;
    int iterations, done;
    int64_t sleep_ns;  /* per iteration */
    uint64_t bytes;    /* accounted against the rate limit per iteration */
    bool ready_at_end; /* become ready, then wait for complete or cancel */
    bool should_complete;
    int fail_at; /* iteration that fails (-1: none) */
    JobErrorPolicy policy;
    int errors_left; /* how many times the failing iteration fails */
    int prepared, committed, aborted, cleaned;
    bool prepare_fails;
} TestJob;

static int coroutine_fn test_job_run(Job *job, GError **errp)
{
    TestJob *t = (TestJob *)job;
    job_progress_set_remaining(job, t->iterations);
    while (t->done < t->iterations) {
        job_pause_point(job);
        if (job_is_cancelled(job)) {
            return 0;
        }
        if (t->done == t->fail_at && t->errors_left > 0) {
            t->errors_left--;
            JobErrorAction a = job_error_action(job, t->policy, true, EIO);
            if (a == JOB_ACTION_REPORT) {
                g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO, "iteration %d failed", t->done);
                return -EIO;
            }
            if (a == JOB_ACTION_STOP) {
                continue; /* retry after the resume */
            }
        }
        int64_t delay = job_ratelimit_account(job, t->bytes);
        job_sleep_ns(job, MAX(delay, t->sleep_ns));
        t->done++;
        job_progress_update(job, 1);
    }
    if (t->ready_at_end) {
        job_transition_to_ready(job);
        while (!t->should_complete && !job_cancel_requested(job)) {
            job_sleep_ns(job, 1000000000LL);
        }
    }
    return 0;
}

static bool test_job_complete(Job *job, GError **errp)
{
    ((TestJob *)job)->should_complete = true;
    return true;
}

static bool test_job_cancel(Job *job, bool force)
{
    return force || !job_is_ready(job);
}

static bool test_job_prepare(Job *job, GError **errp)
{
    TestJob *t = (TestJob *)job;
    t->prepared++;
    if (t->prepare_fails) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO, "prepare failed");
        return false;
    }
    return true;
}

static void test_job_commit(Job *job)
{
    ((TestJob *)job)->committed++;
}

static void test_job_abort(Job *job)
{
    ((TestJob *)job)->aborted++;
}

static void test_job_clean(Job *job)
{
    TestJob *t = (TestJob *)job;
    t->cleaned++;
    block_job_remove_all_bdrv(&t->common);
}

static const JobDriver test_driver = {
    .type = "test",
    .instance_size = sizeof(TestJob),
    .run = test_job_run,
    .complete = test_job_complete,
    .cancel = test_job_cancel,
    .prepare = test_job_prepare,
    .commit = test_job_commit,
    .abort = test_job_abort,
    .clean = test_job_clean,
};

typedef struct Recorder {
    GString *seq;
    int ready, completed, errors, pending;
} Recorder;

static void record(Job *job, JobEvent ev, void *opaque)
{
    Recorder *r = opaque;
    if (ev == JOB_EVENT_STATUS_CHANGE) {
        g_string_append_printf(r->seq, "%s%s", r->seq->len ? " " : "",
                               job_status_name(job->status));
    }
    r->ready += ev == JOB_EVENT_READY;
    r->completed += ev == JOB_EVENT_COMPLETED;
    r->errors += ev == JOB_EVENT_ERROR;
    r->pending += ev == JOB_EVENT_PENDING;
}

static TestJob *new_test_job(const char *id, int flags, Recorder *r)
{
    GError *err = NULL;
    TestJob *t = block_job_create(id, &test_driver, flags, 0, r ? record : NULL, r, &err);
    assert_non_null(t);
    t->iterations = 10;
    t->sleep_ns = 1000000;
    t->fail_at = -1;
    job_ref(&t->common.job);
    return t;
}

static void recorder_init(Recorder *r)
{
    *r = (Recorder){.seq = g_string_new(NULL)};
}

static void recorder_free(Recorder *r)
{
    g_string_free(r->seq, true);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_job_runs_through_the_states_and_is_dismissed(void **state)
{
    Recorder r;
    GError *err = NULL;
    recorder_init(&r);
    TestJob *t = new_test_job("j1", 0, &r);
    Job *job = &t->common.job;
    assert_ptr_equal(job_find("j1"), job);
    assert_string_equal(job_type(job), "test");
    job_start(job);
    assert_int_equal(job->status, JOB_STATUS_RUNNING);
    assert_int_equal(job_wait(job, false, &err), 0);
    assert_string_equal(r.seq->str, "running waiting pending concluded null");
    assert_int_equal(r.completed, 1);
    assert_int_equal(r.pending, 1);
    assert_int_equal(t->prepared, 1);
    assert_int_equal(t->committed, 1);
    assert_int_equal(t->aborted, 0);
    assert_int_equal(t->cleaned, 1);
    uint64_t cur, total;
    job_progress(job, &cur, &total);
    assert_int_equal(cur, 10);
    assert_int_equal(total, 10);
    assert_null(job_find("j1"));
    job_unref(job);
    recorder_free(&r);
}

static void test_verbs_are_refused_in_the_wrong_state(void **state)
{
    GError *err = NULL;
    TestJob *t = new_test_job("j2", JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS, NULL);
    Job *job = &t->common.job;
    assert_false(job_finalize(job, &err));
    assert_string_equal(err->message,
                        "Job 'j2' in state 'created' cannot accept command verb 'finalize'");
    g_clear_error(&err);
    assert_false(job_complete(job, &err));
    assert_string_equal(err->message,
                        "Job 'j2' in state 'created' cannot accept command verb 'complete'");
    g_clear_error(&err);
    assert_false(job_user_resume(job, &err));
    assert_string_equal(err->message, "Can't resume a job that was not paused");
    g_clear_error(&err);
    job_start(job);
    assert_false(job_dismiss(job, &err));
    assert_string_equal(err->message,
                        "Job 'j2' in state 'running' cannot accept command verb 'dismiss'");
    g_clear_error(&err);
    assert_int_equal(job_wait(job, false, &err), 0);
    assert_int_equal(job->status, JOB_STATUS_PENDING);
    assert_false(job_user_pause(job, &err));
    assert_string_equal(err->message,
                        "Job 'j2' in state 'pending' cannot accept command verb 'pause'");
    g_clear_error(&err);
    assert_false(job_set_speed(job, 100, &err));
    g_clear_error(&err);
    assert_true(job_finalize(job, &err));
    assert_int_equal(job->status, JOB_STATUS_CONCLUDED);
    assert_false(job_user_cancel(job, false, &err));
    assert_string_equal(err->message,
                        "Job 'j2' in state 'concluded' cannot accept command verb 'cancel'");
    g_clear_error(&err);
    assert_non_null(job_find("j2"));
    assert_true(job_dismiss(job, &err));
    assert_int_equal(job->status, JOB_STATUS_NULL);
    assert_null(job_find("j2"));
    job_unref(job);
}

static void test_nested_pauses_need_as_many_resumes(void **state)
{
    Recorder r;
    GError *err = NULL;
    recorder_init(&r);
    TestJob *t = new_test_job("j3", 0, &r);
    Job *job = &t->common.job;
    t->iterations = 1000;
    job_start(job);
    assert_true(job_user_pause(job, &err));
    assert_true(job_user_pause(job, &err));
    AIO_WAIT_WHILE(!job->paused);
    assert_int_equal(job->status, JOB_STATUS_PAUSED);
    int done = t->done;
    for (int i = 0; i < 20; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_int_equal(t->done, done);
    assert_true(job_user_resume(job, &err));
    for (int i = 0; i < 20; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_int_equal(job->status, JOB_STATUS_PAUSED);
    assert_int_equal(t->done, done);
    assert_true(job_user_resume(job, &err));
    AIO_WAIT_WHILE(t->done == done);
    assert_int_equal(job->status, JOB_STATUS_RUNNING);
    assert_int_equal(job_cancel_sync(job, false), -ECANCELED);
    assert_true(g_str_has_prefix(r.seq->str, "running paused running"));
    assert_true(g_str_has_suffix(r.seq->str, "aborting concluded null"));
    assert_int_equal(t->aborted, 1);
    assert_int_equal(t->committed, 0);
    job_unref(job);
    recorder_free(&r);
}

static void test_cancel_before_start_and_while_paused(void **state)
{
    GError *err = NULL;
    Recorder r;
    recorder_init(&r);
    TestJob *t = new_test_job("j4", 0, &r);
    Job *job = &t->common.job;
    assert_true(job_user_cancel(job, false, &err));
    assert_true(job_is_completed(job));
    assert_int_equal(job_ret(job), -ECANCELED);
    assert_string_equal(r.seq->str, "aborting concluded null");
    assert_int_equal(t->done, 0);
    job_unref(job);
    recorder_free(&r);

    t = new_test_job("j4", 0, NULL);
    job = &t->common.job;
    t->iterations = 1000;
    job_start(job);
    assert_true(job_user_pause(job, &err));
    AIO_WAIT_WHILE(!job->paused);
    /* A cancel overrides the user's pause. */
    assert_int_equal(job_cancel_sync(job, false), -ECANCELED);
    assert_true(t->done < 1000);
    job_unref(job);
}

static void test_ready_job_completes_or_stops_on_soft_cancel(void **state)
{
    GError *err = NULL;
    Recorder r;
    recorder_init(&r);
    TestJob *t = new_test_job("j5", 0, &r);
    Job *job = &t->common.job;
    t->ready_at_end = true;
    job_start(job);
    assert_int_equal(job_wait(job, true, &err), 0);
    assert_true(job_is_ready(job));
    assert_int_equal(r.ready, 1);
    /* Pausing a ready job puts it in standby. */
    assert_true(job_user_pause(job, &err));
    AIO_WAIT_WHILE(job->status != JOB_STATUS_STANDBY);
    assert_false(job_complete(job, &err));
    g_clear_error(&err);
    assert_true(job_user_resume(job, &err));
    AIO_WAIT_WHILE(job->status != JOB_STATUS_READY);
    assert_int_equal(job_complete_sync(job, &err), 0);
    assert_int_equal(t->committed, 1);
    assert_true(strstr(r.seq->str, "ready standby ready waiting pending concluded null") != NULL);
    job_unref(job);
    recorder_free(&r);

    /* A soft cancel of a ready job is a success without completion; a forced one aborts. */
    t = new_test_job("j5", 0, NULL);
    t->ready_at_end = true;
    job = &t->common.job;
    job_start(job);
    assert_int_equal(job_wait(job, true, &err), 0);
    assert_int_equal(job_cancel_sync(job, false), 0);
    assert_false(t->should_complete);
    assert_int_equal(t->committed, 1);
    job_unref(job);

    t = new_test_job("j5", 0, NULL);
    t->ready_at_end = true;
    job = &t->common.job;
    job_start(job);
    assert_int_equal(job_wait(job, true, &err), 0);
    assert_int_equal(job_cancel_sync(job, true), -ECANCELED);
    assert_int_equal(t->aborted, 1);
    job_unref(job);
}

static void test_failing_prepare_aborts_the_job(void **state)
{
    GError *err = NULL;
    TestJob *t = new_test_job("j6", JOB_MANUAL_DISMISS, NULL);
    Job *job = &t->common.job;
    t->prepare_fails = true;
    job_start(job);
    assert_int_equal(job_wait(job, false, &err), -EIO);
    assert_string_equal(err->message, "prepare failed");
    g_clear_error(&err);
    assert_string_equal(job_error_message(job), "prepare failed");
    assert_int_equal(t->prepared, 1);
    assert_int_equal(t->aborted, 1);
    assert_int_equal(t->committed, 0);
    assert_int_equal(job->status, JOB_STATUS_CONCLUDED);
    assert_true(job_dismiss(job, &err));
    job_unref(job);
}

static void test_error_policies(void **state)
{
    GError *err = NULL;
    Recorder r;

    /* report: the job fails with the error. */
    recorder_init(&r);
    TestJob *t = new_test_job("j7", 0, &r);
    t->fail_at = 3;
    t->errors_left = 1;
    t->policy = JOB_ERROR_REPORT;
    job_start(&t->common.job);
    assert_int_equal(job_wait(&t->common.job, false, &err), -EIO);
    assert_string_equal(err->message, "iteration 3 failed");
    g_clear_error(&err);
    assert_int_equal(r.errors, 1);
    assert_int_equal(job_last_error(&t->common.job).action, JOB_ACTION_REPORT);
    job_unref(&t->common.job);
    recorder_free(&r);

    /* ignore: it carries on. */
    t = new_test_job("j7", 0, NULL);
    t->fail_at = 3;
    t->errors_left = 1;
    t->policy = JOB_ERROR_IGNORE;
    job_start(&t->common.job);
    assert_int_equal(job_wait(&t->common.job, false, &err), 0);
    job_unref(&t->common.job);

    /* stop: it pauses; resume retries (and the error is gone by then). */
    recorder_init(&r);
    t = new_test_job("j7", 0, &r);
    t->fail_at = 3;
    t->errors_left = 1;
    t->policy = JOB_ERROR_STOP;
    Job *job = &t->common.job;
    job_start(job);
    AIO_WAIT_WHILE(!job->paused);
    assert_int_equal(job->status, JOB_STATUS_PAUSED);
    assert_int_equal(t->done, 3);
    assert_true(job_user_resume(job, &err));
    assert_int_equal(job_wait(job, false, &err), 0);
    assert_int_equal(t->done, 10);
    assert_int_equal(r.errors, 1);
    job_unref(job);
    recorder_free(&r);

    JobErrorPolicy p;
    assert_true(job_parse_error_policy("enospc", &p, &err));
    assert_int_equal(p, JOB_ERROR_ENOSPC);
    assert_false(job_parse_error_policy("maybe", &p, &err));
    g_clear_error(&err);
}

static void test_rate_limit_paces_the_job_and_can_change_while_running(void **state)
{
    GError *err = NULL;
    TestJob *t = new_test_job("j8", 0, NULL);
    Job *job = &t->common.job;
    /* 20 iterations of 100 KiB at 1 MiB/s: about 2 s minus one slice of burst. */
    t->iterations = 20;
    t->sleep_ns = 0;
    t->bytes = 100 << 10;
    assert_true(job_set_speed(job, 1 << 20, &err));
    int64_t start = aio_clock_ns();
    job_start(job);
    AIO_WAIT_WHILE(t->done < 5);
    int64_t t5 = aio_clock_ns() - start;
    assert_true(t5 > 300 * 1000000LL);
    /* Unlimited from now on: the rest goes at once. */
    assert_true(job_set_speed(job, 0, &err));
    assert_int_equal(job_wait(job, false, &err), 0);
    int64_t total = aio_clock_ns() - start;
    assert_true(total < t5 + 500 * 1000000LL);
    assert_false(job_set_speed(job, 1, &err)); /* dismissed */
    g_clear_error(&err);
    job_unref(job);

    t = new_test_job("j8b", 0, NULL);
    assert_false(job_set_speed(&t->common.job, -1, &err));
    g_clear_error(&err);
    job_user_cancel(&t->common.job, true, NULL);
    job_unref(&t->common.job);
}

static void test_job_on_a_node_pauses_in_drained_sections(void **state)
{
    GError *err = NULL;
    Recorder r;
    recorder_init(&r);
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "null-co");
    BlockDriverState *bs = bdrv_open(NULL, opts, BDRV_O_RDWR, &err);
    assert_non_null(bs);
    TestJob *t = new_test_job("j9", 0, &r);
    Job *job = &t->common.job;
    t->iterations = 100000;
    t->sleep_ns = 100000;
    assert_true(block_job_add_bdrv(&t->common, "node", bs, 0, BLK_PERM_ALL, &err));
    job_start(job);
    AIO_WAIT_WHILE(t->done < 3);
    for (int i = 0; i < 5; i++) {
        bdrv_drained_begin(bs);
        /* The drain returned: the job is parked at its pause point. */
        assert_true(job->paused);
        assert_false(job->busy);
        int done = t->done;
        for (int k = 0; k < 10; k++) {
            aio_poll(aio_main_context(), false);
        }
        assert_int_equal(t->done, done);
        bdrv_drained_end(bs);
        AIO_WAIT_WHILE(t->done == done);
    }
    /* A user pause inside a drained section nests with it. */
    assert_true(job_user_pause(job, &err));
    bdrv_drained_begin(bs);
    bdrv_drained_end(bs);
    AIO_WAIT_WHILE(!job->paused);
    assert_true(job_user_resume(job, &err));
    assert_int_equal(job_cancel_sync(job, false), -ECANCELED);
    assert_true(strstr(r.seq->str, "running paused running paused running") != NULL);
    job_unref(job);
    bdrv_unref(bs);
    recorder_free(&r);
}

static void test_ids_and_the_job_list(void **state)
{
    GError *err = NULL;
    TestJob *a = new_test_job("alpha", 0, NULL);
    assert_null(block_job_create("alpha", &test_driver, 0, 0, NULL, NULL, &err));
    assert_string_equal(err->message, "Job ID 'alpha' already in use");
    g_clear_error(&err);
    assert_null(block_job_create("1bad", &test_driver, 0, 0, NULL, NULL, &err));
    g_clear_error(&err);
    TestJob *b = new_test_job(NULL, 0, NULL);
    assert_true(g_str_has_prefix(b->common.job.id, "#job"));
    GList *l = job_list();
    assert_true(g_list_find(l, a) && g_list_find(l, b));
    g_list_free(l);
    job_user_cancel(&a->common.job, false, NULL);
    job_user_cancel(&b->common.job, false, NULL);
    job_unref(&a->common.job);
    job_unref(&b->common.job);
    assert_null(job_find("alpha"));
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_runs_through_the_states_and_is_dismissed),
        cmocka_unit_test(test_verbs_are_refused_in_the_wrong_state),
        cmocka_unit_test(test_nested_pauses_need_as_many_resumes),
        cmocka_unit_test(test_cancel_before_start_and_while_paused),
        cmocka_unit_test(test_ready_job_completes_or_stops_on_soft_cancel),
        cmocka_unit_test(test_failing_prepare_aborts_the_job),
        cmocka_unit_test(test_error_policies),
        cmocka_unit_test(test_rate_limit_paces_the_job_and_can_change_while_running),
        cmocka_unit_test(test_job_on_a_node_pauses_in_drained_sections),
        cmocka_unit_test(test_ids_and_the_job_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
