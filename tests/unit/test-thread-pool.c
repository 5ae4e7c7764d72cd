/*
 * Unit tests for the thread pool (aio/thread-pool.c): where completions
 * run, the coroutine form, many submissions at once, the thread limits,
 * waking sleeping workers for a burst, idle-thread expiry, and teardown
 * with the context.
 *
 * Threading: the main thread runs the main context; one test submits from
 * inside an IOThread.  Work functions run in pool workers and report
 * through atomics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "aio/iothread.h"
#include "aio/thread-pool.h"

typedef struct Job {
    atomic_int worker_tid;
    atomic_int done_tid;
    AioContext *done_ctx;
    atomic_int ret;
    atomic_bool done;
} Job;

static int job_fn(void *opaque)
{
    Job *j = opaque;
    atomic_store(&j->worker_tid, gettid());
    return 42;
}

static void job_done(void *opaque, int ret)
{
    Job *j = opaque;
    j->done_ctx = aio_get_current();
    atomic_store(&j->done_tid, gettid());
    atomic_store(&j->ret, ret);
    atomic_store(&j->done, true);
}

static void poll_main_until(atomic_bool *flag)
{
    for (int i = 0; i < 1000000 && !atomic_load(flag); i++) {
        aio_poll(aio_main_context(), true);
    }
    assert_true(atomic_load(flag));
}

static void test_completion_runs_in_the_submitting_context_thread(void **state)
{
    AioContext *main_ctx = aio_main_context();
    ThreadPool *pool = aio_get_thread_pool(main_ctx);
    Job j = {.ret = -1};

    assert_ptr_equal(pool, aio_get_thread_pool(main_ctx));
    thread_pool_submit(pool, job_fn, &j, job_done, &j);
    poll_main_until(&j.done);
    assert_int_equal(atomic_load(&j.ret), 42);
    assert_int_equal(atomic_load(&j.done_tid), gettid());
    assert_ptr_equal(j.done_ctx, main_ctx);
    assert_true(atomic_load(&j.worker_tid) != gettid());
}

typedef struct IOThreadJob {
    Job job;
    AioContext *ctx;
} IOThreadJob;

static void submit_from_iothread_bh(void *opaque)
{
    IOThreadJob *ij = opaque;
    thread_pool_submit(aio_get_thread_pool(ij->ctx), job_fn, &ij->job, job_done, &ij->job);
}

static void test_completion_of_iothread_submission_runs_in_that_iothread(void **state)
{
    IOThread *io = iothread_create("pool-user", NULL, NULL);
    IOThreadJob ij = {.ctx = iothread_get_aio_context(io)};
    IOThreadInfo info;

    iothread_query(io, &info);
    aio_bh_schedule_oneshot(ij.ctx, submit_from_iothread_bh, &ij);
    for (int i = 0; i < 10000 && !atomic_load(&ij.job.done); i++) {
        g_usleep(500);
    }
    assert_true(atomic_load(&ij.job.done));
    assert_int_equal(atomic_load(&ij.job.done_tid), info.thread_id);
    assert_ptr_equal(ij.job.done_ctx, ij.ctx);
    iothread_info_clear(&info);
    iothread_destroy(io); /* frees the context and joins its pool */
}

typedef struct CoSubmit {
    int ret;
    AioContext *resumed_in;
    atomic_bool done;
} CoSubmit;

static int return_arg_fn(void *opaque)
{
    return (int)(intptr_t)opaque;
}

static void coroutine_fn co_submit_entry(void *opaque)
{
    CoSubmit *c = opaque;
    c->ret = thread_pool_co_submit(aio_get_thread_pool(aio_get_current()), return_arg_fn,
                                   (void *)(intptr_t)-5);
    c->resumed_in = aio_get_current();
    atomic_store(&c->done, true);
}

static void test_coroutine_submit_returns_the_function_value(void **state)
{
    CoSubmit c = {.ret = 0};
    co_enter(co_create(co_submit_entry, &c));
    assert_false(atomic_load(&c.done)); /* it yielded while the worker ran */
    poll_main_until(&c.done);
    assert_int_equal(c.ret, -5);
    assert_ptr_equal(c.resumed_in, aio_main_context());
}

#define MANY_JOBS 2000

typedef struct Many {
    atomic_int completed;
    atomic_llong sum;
} Many;

static int square_fn(void *opaque)
{
    int v = (int)(intptr_t)opaque;
    return v * v;
}

static void many_done(void *opaque, int ret)
{
    Many *m = opaque;
    atomic_fetch_add(&m->sum, ret);
    atomic_fetch_add(&m->completed, 1);
}

static void test_many_concurrent_submissions_all_complete(void **state)
{
    ThreadPool *pool = aio_get_thread_pool(aio_main_context());
    Many m = {.completed = 0};
    long long expect = 0;

    for (int i = 0; i < MANY_JOBS; i++) {
        thread_pool_submit(pool, square_fn, (void *)(intptr_t)i, many_done, &m);
        expect += (long long)i * i;
    }
    for (int i = 0; i < 1000000 && atomic_load(&m.completed) < MANY_JOBS; i++) {
        aio_poll(aio_main_context(), true);
    }
    assert_int_equal(atomic_load(&m.completed), MANY_JOBS);
    assert_true(atomic_load(&m.sum) == expect);
}

typedef struct Limit {
    atomic_int running;
    atomic_int max_running;
    atomic_int completed;
    int sleep_us; /* how long each job blocks; 0 = 5 ms */
} Limit;

static int blocking_fn(void *opaque)
{
    Limit *l = opaque;
    int now = atomic_fetch_add(&l->running, 1) + 1;
    int seen = atomic_load(&l->max_running);
    while (now > seen && !atomic_compare_exchange_weak(&l->max_running, &seen, now)) {
    }
    g_usleep(l->sleep_us ? l->sleep_us : 5000);
    atomic_fetch_sub(&l->running, 1);
    return 0;
}

static void limit_done(void *opaque, int ret)
{
    atomic_fetch_add(&((Limit *)opaque)->completed, 1);
}

static void run_blocking_jobs(ThreadPool *pool, Limit *l, int n, AioContext *ctx)
{
    for (int i = 0; i < n; i++) {
        thread_pool_submit(pool, blocking_fn, l, limit_done, l);
    }
    for (int i = 0; i < 1000000 && atomic_load(&l->completed) < n; i++) {
        aio_poll(ctx, true);
    }
    assert_int_equal(atomic_load(&l->completed), n);
}

static void test_no_more_than_max_threads_run_at_once(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    ThreadPool *pool = aio_get_thread_pool(ctx);
    /*
     * Workers are added only while jobs wait: jobs long enough that a loaded
     * machine cannot finish one before the next worker has started.
     */
    Limit l = {.sleep_us = 50000};

    assert_true(thread_pool_set_limits(pool, 0, 3, 10000, NULL));
    run_blocking_jobs(pool, &l, 12, ctx);
    assert_int_equal(atomic_load(&l.max_running), 3);
    assert_int_equal(thread_pool_nr_threads(pool), 3);
    aio_context_unref(ctx); /* joins the three workers */
}

static void test_a_burst_wakes_every_sleeping_worker_it_needs(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    ThreadPool *pool = aio_get_thread_pool(ctx);
    Limit warm = {.sleep_us = 100000}, l = {.sleep_us = 100000};

    /* Eight workers, all asleep on the condition variable once the first round is over. */
    assert_true(thread_pool_set_limits(pool, 8, 8, 10000, NULL));
    run_blocking_jobs(pool, &warm, 8, ctx);
    assert_int_equal(thread_pool_nr_threads(pool), 8);
    g_usleep(20000);

    /* Each worker that takes a job wakes the next while jobs remain: all eight run at once. */
    run_blocking_jobs(pool, &l, 8, ctx);
    assert_int_equal(atomic_load(&l.max_running), 8);
    assert_int_equal(thread_pool_nr_threads(pool), 8);
    aio_context_unref(ctx);
}

static void test_idle_threads_above_min_exit_after_the_timeout(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    ThreadPool *pool = aio_get_thread_pool(ctx);
    Limit l = {.sleep_us = 50000}; /* long enough to need all four workers, as above */

    assert_true(thread_pool_set_limits(pool, 1, 4, 50, NULL));
    run_blocking_jobs(pool, &l, 8, ctx);
    assert_int_equal(thread_pool_nr_threads(pool), 4);

    int64_t start = aio_clock_ns();
    for (int i = 0; i < 400 && thread_pool_nr_threads(pool) > 1; i++) {
        g_usleep(5000);
    }
    assert_int_equal(thread_pool_nr_threads(pool), 1);
    assert_true(aio_clock_ns() - start >= 40 * 1000000); /* not before the timeout */

    /* The survivor still serves requests. */
    Limit again = {.running = 0};
    run_blocking_jobs(pool, &again, 1, ctx);
    aio_context_unref(ctx);
}

static void test_invalid_limits_are_rejected_naming_the_parameter(void **state)
{
    ThreadPool *pool = aio_get_thread_pool(aio_main_context());
    GError *err = NULL;

    assert_false(thread_pool_set_limits(pool, 0, 0, 10, &err));
    assert_non_null(strstr(err->message, "max-threads"));
    g_clear_error(&err);
    assert_false(thread_pool_set_limits(pool, 5, 4, 10, &err));
    assert_non_null(strstr(err->message, "min-threads"));
    g_clear_error(&err);
    assert_false(thread_pool_set_limits(pool, 0, 4, -1, &err));
    assert_non_null(strstr(err->message, "idle-timeout-ms"));
    g_clear_error(&err);
}

static int group_setup(void **state)
{
    return aio_main_loop_init(NULL) ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completion_runs_in_the_submitting_context_thread),
        cmocka_unit_test(test_completion_of_iothread_submission_runs_in_that_iothread),
        cmocka_unit_test(test_coroutine_submit_returns_the_function_value),
        cmocka_unit_test(test_many_concurrent_submissions_all_complete),
        cmocka_unit_test(test_no_more_than_max_threads_run_at_once),
        cmocka_unit_test(test_a_burst_wakes_every_sleeping_worker_it_needs),
        cmocka_unit_test(test_idle_threads_above_min_exit_after_the_timeout),
        cmocka_unit_test(test_invalid_limits_are_rejected_naming_the_parameter),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
