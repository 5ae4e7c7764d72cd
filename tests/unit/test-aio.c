/*
 * Unit tests for AioContext (aio/async.c, aio/aio-posix.c, aio/timer.c,
 * aio/aio-gsource.c): bottom halves, timers, handlers, notify, adaptive
 * polling, the GSource, coroutine scheduling across threads, AIO_WAIT_WHILE.
 *
 * Threading: the main thread runs the main context; tests that need a
 * second event loop start a LoopThread running its own context and stop it
 * (joined) before returning, so no thread outlives its test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio/aio.h"

#define NS_PER_MS 1000000

/* ------------------------------------------------------------------ */
/* helpers */

typedef struct LoopThread {
    pthread_t thread;
    AioContext *ctx;
    atomic_bool stop;
    pid_t tid;
} LoopThread;

static void *loop_thread_run(void *opaque)
{
    LoopThread *lt = opaque;
    aio_set_current(lt->ctx);
    lt->tid = gettid();
    while (!atomic_load(&lt->stop)) {
        aio_poll(lt->ctx, true);
    }
    aio_set_current(NULL);
    return NULL;
}

static void loop_thread_stop_bh(void *opaque)
{
    atomic_store(&((LoopThread *)opaque)->stop, true);
}

static void loop_thread_start(LoopThread *lt)
{
    lt->ctx = aio_context_new(NULL);
    assert_non_null(lt->ctx);
    atomic_init(&lt->stop, false);
    assert_int_equal(pthread_create(&lt->thread, NULL, loop_thread_run, lt), 0);
}

static void loop_thread_stop(LoopThread *lt)
{
    aio_bh_schedule_oneshot(lt->ctx, loop_thread_stop_bh, lt);
    pthread_join(lt->thread, NULL);
    aio_context_unref(lt->ctx);
}

static void count_cb(void *opaque)
{
    atomic_fetch_add((atomic_int *)opaque, 1);
}

/* Polls @ctx until *counter reaches @target; bounded so a bug fails instead of hanging. */
static void poll_until_count(AioContext *ctx, atomic_int *counter, int target)
{
    for (int i = 0; atomic_load(counter) < target && i < 10000000; i++) {
        aio_poll(ctx, true);
    }
    assert_int_equal(atomic_load(counter), target);
}

/* ------------------------------------------------------------------ */
/* bottom halves */

static void test_bh_scheduled_twice_before_running_runs_once(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    atomic_int count = 0;
    AioBH *bh = aio_bh_new(ctx, count_cb, &count);

    aio_bh_schedule(bh);
    aio_bh_schedule(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(count, 1);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(count, 1);

    aio_bh_schedule(bh);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(count, 2);
    aio_bh_delete(bh);
    aio_context_unref(ctx);
}

typedef struct OrderData {
    int order[3];
    int n;
} OrderData;

static void order_cb_0(void *opaque)
{
    OrderData *d = opaque;
    d->order[d->n++] = 0;
}

static void order_cb_1(void *opaque)
{
    OrderData *d = opaque;
    d->order[d->n++] = 1;
}

static void order_cb_2(void *opaque)
{
    OrderData *d = opaque;
    d->order[d->n++] = 2;
}

static void test_bhs_run_in_scheduling_order(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    OrderData d = {.n = 0};

    aio_bh_schedule_oneshot(ctx, order_cb_0, &d);
    aio_bh_schedule_oneshot(ctx, order_cb_1, &d);
    aio_bh_schedule_oneshot(ctx, order_cb_2, &d);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(d.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d.order[i], i);
    }
    aio_context_unref(ctx);
}

#define BH_STRESS_THREADS    4
#define BH_STRESS_PER_THREAD 10000

typedef struct BHStress {
    AioContext *ctx;
    atomic_int count;
} BHStress;

static void *bh_stress_producer(void *opaque)
{
    BHStress *s = opaque;
    for (int i = 0; i < BH_STRESS_PER_THREAD; i++) {
        aio_bh_schedule_oneshot(s->ctx, count_cb, &s->count);
    }
    return NULL;
}

static void test_oneshot_bhs_scheduled_from_many_threads_all_run(void **state)
{
    BHStress s = {.ctx = aio_context_new(NULL)};
    pthread_t threads[BH_STRESS_THREADS];

    for (int i = 0; i < BH_STRESS_THREADS; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, bh_stress_producer, &s), 0);
    }
    poll_until_count(s.ctx, &s.count, BH_STRESS_THREADS * BH_STRESS_PER_THREAD);
    for (int i = 0; i < BH_STRESS_THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    assert_false(aio_poll(s.ctx, false));
    assert_int_equal(atomic_load(&s.count), BH_STRESS_THREADS * BH_STRESS_PER_THREAD);
    aio_context_unref(s.ctx);
}

static void test_bh_cancelled_before_running_does_not_run(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    atomic_int count = 0;
    AioBH *bh = aio_bh_new(ctx, count_cb, &count);

    aio_bh_schedule(bh);
    aio_bh_cancel(bh);
    aio_poll(ctx, false);
    assert_int_equal(count, 0);

    /* Cancelled while still queued, then scheduled again: runs once. */
    aio_bh_schedule(bh);
    aio_bh_cancel(bh);
    aio_bh_schedule(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(count, 1);
    aio_bh_delete(bh);
    aio_context_unref(ctx);
}

static void test_bh_deleted_while_pending_is_freed_without_running(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    atomic_int count = 0;
    AioBH *bh = aio_bh_new(ctx, count_cb, &count);

    aio_bh_schedule(bh);
    aio_bh_delete(bh); /* ASan reports a leak or a use-after-free if this goes wrong */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(count, 0);
    aio_context_unref(ctx);
}

typedef struct SelfDelete {
    AioBH *bh;
    int runs;
} SelfDelete;

static void self_delete_cb(void *opaque)
{
    SelfDelete *d = opaque;
    d->runs++;
    aio_bh_delete(d->bh);
}

static void test_bh_may_delete_itself_from_its_callback(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    SelfDelete d = {.runs = 0};
    d.bh = aio_bh_new(ctx, self_delete_cb, &d);

    aio_bh_schedule(d.bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(d.runs, 1);
    assert_false(aio_poll(ctx, false));
    aio_context_unref(ctx);
}

typedef struct NestedData {
    AioContext *ctx;
    atomic_int second_ran;
    bool saw_second_from_nested;
} NestedData;

static void nested_first_cb(void *opaque)
{
    NestedData *d = opaque;
    /* The second BH was taken off the list together with us: a nested poll must run it. */
    for (int i = 0; i < 10 && !atomic_load(&d->second_ran); i++) {
        aio_poll(d->ctx, false);
    }
    d->saw_second_from_nested = atomic_load(&d->second_ran);
}

static void test_nested_poll_runs_bhs_its_caller_already_took(void **state)
{
    NestedData d = {.ctx = aio_context_new(NULL)};
    aio_bh_schedule_oneshot(d.ctx, nested_first_cb, &d);
    aio_bh_schedule_oneshot(d.ctx, count_cb, &d.second_ran);
    assert_true(aio_poll(d.ctx, false));
    assert_true(d.saw_second_from_nested);
    assert_int_equal(atomic_load(&d.second_ran), 1);
    aio_context_unref(d.ctx);
}

/* ------------------------------------------------------------------ */
/* timers */

typedef struct TimerRec {
    int64_t expire;
    int64_t fired_at;
    int id;
    int *log;
    int *n;
} TimerRec;

static void timer_rec_cb(void *opaque)
{
    TimerRec *r = opaque;
    r->fired_at = aio_clock_ns();
    r->log[(*r->n)++] = r->id;
}

static void test_timers_fire_in_deadline_order_and_never_early(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    int log[3], n = 0;
    TimerRec rec[3];
    AioTimer *t[3];
    int64_t now = aio_clock_ns();
    /* Armed out of order: ids are the expected firing order. */
    const int64_t delays_ms[3] = {6, 2, 4};
    const int ids[3] = {2, 0, 1};

    for (int i = 0; i < 3; i++) {
        rec[i] =
            (TimerRec){.expire = now + delays_ms[i] * NS_PER_MS, .id = ids[i], .log = log, .n = &n};
        t[i] = aio_timer_new(ctx, timer_rec_cb, &rec[i]);
        aio_timer_mod(t[i], rec[i].expire);
        assert_true(aio_timer_pending(t[i]));
    }
    for (int i = 0; i < 100 && n < 3; i++) {
        aio_poll(ctx, true);
    }
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(log[i], i);
        assert_true(rec[i].fired_at >= rec[i].expire);
        assert_false(aio_timer_pending(t[i]));
        aio_timer_free(t[i]);
    }
    aio_context_unref(ctx);
}

static void test_short_timer_sleeps_instead_of_spinning(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    int log[1], n = 0, polls = 0;
    TimerRec rec = {.expire = aio_clock_ns() + 300000, .id = 0, .log = log, .n = &n};
    AioTimer *t = aio_timer_new(ctx, timer_rec_cb, &rec);

    aio_timer_mod(t, rec.expire);
    while (n == 0 && polls < 1000) {
        aio_poll(ctx, true);
        polls++;
    }
    assert_int_equal(n, 1);
    assert_true(rec.fired_at >= rec.expire);
    /* One sleep for the whole 300 us (a spurious early return at most). */
    assert_true(polls <= 3);
    aio_timer_free(t);
    aio_context_unref(ctx);
}

static void test_deleted_timer_does_not_fire(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    atomic_int count = 0;
    AioTimer *t = aio_timer_new(ctx, count_cb, &count);

    aio_timer_mod(t, aio_clock_ns() + NS_PER_MS);
    aio_timer_del(t);
    assert_false(aio_timer_pending(t));
    g_usleep(2000);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(count, 0);
    aio_timer_free(t);
    aio_context_unref(ctx);
}

typedef struct TimerFromThread {
    AioTimer *timer;
} TimerFromThread;

static void *arm_timer_later(void *opaque)
{
    TimerFromThread *d = opaque;
    g_usleep(20000);
    aio_timer_mod(d->timer, aio_clock_ns());
    return NULL;
}

static void test_timer_armed_from_other_thread_wakes_blocked_poll(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    atomic_int count = 0;
    TimerFromThread d = {.timer = aio_timer_new(ctx, count_cb, &count)};
    pthread_t thread;

    assert_int_equal(pthread_create(&thread, NULL, arm_timer_later, &d), 0);
    /* No timer and no fd: without the notify this would sleep forever. */
    poll_until_count(ctx, &count, 1);
    pthread_join(thread, NULL);
    aio_timer_free(d.timer);
    aio_context_unref(ctx);
}

/* ------------------------------------------------------------------ */
/* handlers and notify */

typedef struct PipeData {
    AioContext *ctx;
    int fds[2];
    int reads;
    char last;
} PipeData;

static void pipe_read_cb(void *opaque)
{
    PipeData *d = opaque;
    char c = 0;
    if (read(d->fds[0], &c, 1) == 1) {
        d->reads++;
        d->last = c;
    }
    if (c == 'q') {
        /* Removing ourselves from our own callback must be safe. */
        aio_set_fd_handler(d->ctx, d->fds[0], NULL, NULL, NULL, NULL, NULL);
    }
}

static void test_fd_handler_runs_when_pipe_is_readable(void **state)
{
    PipeData d = {.ctx = aio_context_new(NULL)};
    assert_int_equal(pipe2(d.fds, O_NONBLOCK | O_CLOEXEC), 0);
    aio_set_fd_handler(d.ctx, d.fds[0], pipe_read_cb, NULL, NULL, NULL, &d);

    assert_false(aio_poll(d.ctx, false));
    assert_int_equal(write(d.fds[1], "a", 1), 1);
    assert_true(aio_poll(d.ctx, true));
    assert_int_equal(d.reads, 1);
    assert_int_equal(d.last, 'a');

    assert_int_equal(write(d.fds[1], "q", 1), 1);
    assert_true(aio_poll(d.ctx, true));
    assert_int_equal(d.reads, 2);
    /* Removed: further data is not dispatched. */
    assert_int_equal(write(d.fds[1], "b", 1), 1);
    assert_false(aio_poll(d.ctx, false));
    assert_int_equal(d.reads, 2);

    close(d.fds[0]);
    close(d.fds[1]);
    aio_context_unref(d.ctx);
}

static void pipe_write_cb(void *opaque)
{
    PipeData *d = opaque;
    d->reads++; /* counts writable events here */
    aio_set_fd_handler(d->ctx, d->fds[1], NULL, NULL, NULL, NULL, NULL);
}

static void test_write_handler_runs_when_pipe_is_writable(void **state)
{
    PipeData d = {.ctx = aio_context_new(NULL)};
    assert_int_equal(pipe2(d.fds, O_NONBLOCK | O_CLOEXEC), 0);
    aio_set_fd_handler(d.ctx, d.fds[1], NULL, pipe_write_cb, NULL, NULL, &d);
    assert_true(aio_poll(d.ctx, true));
    assert_int_equal(d.reads, 1);
    assert_false(aio_poll(d.ctx, false));
    close(d.fds[0]);
    close(d.fds[1]);
    aio_context_unref(d.ctx);
}

static atomic_int notifier_runs;

static void notifier_cb(EventNotifier *e)
{
    if (event_notifier_test_and_clear(e)) {
        atomic_fetch_add(&notifier_runs, 1);
    }
}

static void *set_notifier_later(void *opaque)
{
    g_usleep(10000);
    event_notifier_set(opaque);
    return NULL;
}

static void test_event_notifier_set_from_other_thread_runs_handler(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    EventNotifier e;
    pthread_t thread;

    atomic_store(&notifier_runs, 0);
    assert_int_equal(event_notifier_init(&e, false), 0);
    assert_false(event_notifier_test_and_clear(&e));
    aio_set_event_notifier(ctx, &e, notifier_cb, NULL, NULL);

    assert_int_equal(pthread_create(&thread, NULL, set_notifier_later, &e), 0);
    poll_until_count(ctx, &notifier_runs, 1);
    pthread_join(thread, NULL);
    assert_false(aio_poll(ctx, false));

    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    event_notifier_cleanup(&e);
    aio_context_unref(ctx);
}

typedef struct PollHandler {
    atomic_bool work;
    int ready_runs;
    int read_runs;
} PollHandler;

static PollHandler poll_handler;

/* For an event notifier, io_poll gets the notifier as its opaque. */
static bool poll_handler_poll(void *opaque)
{
    return atomic_load(&poll_handler.work);
}

static void poll_handler_ready_cb(EventNotifier *e)
{
    poll_handler.ready_runs++;
    atomic_store(&poll_handler.work, false);
}

static void poll_handler_read_cb(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
    poll_handler.read_runs++;
}

static void test_io_poll_seeing_work_runs_poll_ready_without_the_fd(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    EventNotifier e;

    poll_handler = (PollHandler){.ready_runs = 0};
    assert_int_equal(event_notifier_init(&e, false), 0);
    aio_set_event_notifier(ctx, &e, poll_handler_read_cb, poll_handler_poll, poll_handler_ready_cb);
    assert_false(aio_poll(ctx, false));

    atomic_store(&poll_handler.work, true);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(poll_handler.ready_runs, 1);
    assert_int_equal(poll_handler.read_runs, 0);

    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    event_notifier_cleanup(&e);
    aio_context_unref(ctx);
}

static void test_poll_without_blocking_returns_false_when_idle(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    assert_false(aio_poll(ctx, false));
    assert_false(aio_poll(ctx, false));
    aio_context_unref(ctx);
}

static void *notify_later(void *opaque)
{
    g_usleep(30000);
    aio_notify(opaque);
    return NULL;
}

static void test_notify_wakes_a_blocked_poll(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    pthread_t thread;
    int64_t start = aio_clock_ns();

    assert_int_equal(pthread_create(&thread, NULL, notify_later, ctx), 0);
    /* Nothing but the notifier can end this wait; it is not progress. */
    assert_false(aio_poll(ctx, true));
    assert_true(aio_clock_ns() - start >= 25 * NS_PER_MS);
    pthread_join(thread, NULL);
    aio_context_unref(ctx);
}

/* ------------------------------------------------------------------ */
/* adaptive polling */

static void test_poll_params_out_of_range_are_rejected_naming_the_parameter(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    GError *err = NULL;

    assert_false(aio_context_set_poll_params(ctx, -1, 0, 0, &err));
    assert_true(g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_INVAL));
    assert_string_equal(err->message, "poll-max-ns must be in range [0, 9223372036854775807]");
    g_clear_error(&err);

    assert_false(aio_context_set_poll_params(ctx, 0, -5, 0, &err));
    assert_non_null(strstr(err->message, "poll-grow"));
    g_clear_error(&err);

    assert_false(aio_context_set_poll_params(ctx, 0, 0, INT64_MIN, &err));
    assert_non_null(strstr(err->message, "poll-shrink"));
    g_clear_error(&err);

    assert_false(aio_context_set_aio_params(ctx, -1, &err));
    assert_non_null(strstr(err->message, "aio-max-batch"));
    g_clear_error(&err);

    int64_t max_ns, grow, shrink;
    aio_context_get_poll_params(ctx, &max_ns, &grow, &shrink);
    assert_true(max_ns == 0 && grow == 0 && shrink == 0);
    aio_context_unref(ctx);
}

static void test_poll_params_set_are_read_back(void **state)
{
    AioContext *ctx = aio_context_new(NULL);
    int64_t max_ns, grow, shrink;

    assert_true(aio_context_set_poll_params(ctx, INT64_MAX, 3, 4, NULL));
    aio_context_get_poll_params(ctx, &max_ns, &grow, &shrink);
    assert_true(max_ns == INT64_MAX && grow == 3 && shrink == 4);
    assert_true(aio_context_set_aio_params(ctx, 32, NULL));
    assert_int_equal(aio_context_get_max_batch(ctx), 32);
    assert_true(aio_context_set_poll_params(ctx, 0, 0, 0, NULL));
    aio_context_get_poll_params(ctx, &max_ns, NULL, NULL);
    assert_int_equal(max_ns, 0);
    aio_context_unref(ctx);
}

#define WINDOW_STREAM_BHS 2000
#define WINDOW_MAX_NS     (2 * NS_PER_MS)

typedef struct WindowData {
    AioContext *ctx;
    atomic_int count;
    int64_t max_seen;
} WindowData;

static void window_bh(void *opaque)
{
    WindowData *d = opaque;
    int64_t ns = aio_context_poll_ns(d->ctx);
    if (ns > d->max_seen) {
        d->max_seen = ns;
    }
    atomic_fetch_add(&d->count, 1);
}

/* Schedules one BH at a time, ~20 us after the previous one ran. */
static void *window_producer(void *opaque)
{
    WindowData *d = opaque;
    for (int i = 0; i < WINDOW_STREAM_BHS; i++) {
        while (atomic_load(&d->count) < i) {
            sched_yield();
        }
        int64_t until = aio_clock_ns() + 20000;
        while (aio_clock_ns() < until) {
        }
        aio_bh_schedule_oneshot(d->ctx, window_bh, d);
    }
    return NULL;
}

static void null_cb(void *opaque)
{
}

static void test_poll_window_grows_under_cross_thread_bhs_and_shrinks_when_idle(void **state)
{
    WindowData d = {.ctx = aio_context_new(NULL)};
    pthread_t thread;

    assert_true(aio_context_set_poll_params(d.ctx, WINDOW_MAX_NS, 0, 0, NULL));
    aio_poll(d.ctx, false); /* consume the notify of the setter */
    assert_int_equal(aio_context_poll_ns(d.ctx), 0);

    assert_int_equal(pthread_create(&thread, NULL, window_producer, &d), 0);
    poll_until_count(d.ctx, &d.count, WINDOW_STREAM_BHS);
    pthread_join(thread, NULL);
    /* It grew past the first step, so the multiplication happened, and never beyond max. */
    assert_true(d.max_seen > 4000);
    assert_true(d.max_seen <= WINDOW_MAX_NS);

    /* Idle: every wait (a 3 ms timer) is longer than poll-max-ns, so the window halves to 0. */
    AioTimer *t = aio_timer_new(d.ctx, null_cb, NULL);
    for (int i = 0; i < 40 && aio_context_poll_ns(d.ctx) > 0; i++) {
        aio_timer_mod(t, aio_clock_ns() + 3 * NS_PER_MS);
        while (aio_timer_pending(t)) {
            aio_poll(d.ctx, true);
        }
    }
    assert_int_equal(aio_context_poll_ns(d.ctx), 0);

    /* poll-max-ns 0 disables polling altogether. */
    assert_true(aio_context_set_poll_params(d.ctx, 0, 0, 0, NULL));
    aio_bh_schedule_oneshot(d.ctx, null_cb, NULL);
    aio_poll(d.ctx, true);
    assert_int_equal(aio_context_poll_ns(d.ctx), 0);
    aio_timer_free(t);
    aio_context_unref(d.ctx);
}

/* ------------------------------------------------------------------ */
/* GSource */

typedef struct GSourceData {
    AioContext *ctx;
    GMainLoop *loop;
    bool timer_fired;
    bool bh_in_ctx;
    bool idle_ran;
} GSourceData;

static void gsource_timer_cb(void *opaque)
{
    ((GSourceData *)opaque)->timer_fired = true;
}

static void gsource_quit_bh(void *opaque)
{
    GSourceData *d = opaque;
    d->bh_in_ctx = aio_get_current() == d->ctx;
    g_main_loop_quit(d->loop);
}

static gboolean gsource_idle_cb(gpointer opaque)
{
    ((GSourceData *)opaque)->idle_ran = true;
    return G_SOURCE_REMOVE;
}

static void *schedule_quit_later(void *opaque)
{
    GSourceData *d = opaque;
    g_usleep(20000);
    aio_bh_schedule_oneshot(d->ctx, gsource_quit_bh, d);
    return NULL;
}

static void test_gsource_lets_a_gmainloop_drive_the_context(void **state)
{
    GSourceData d = {.ctx = aio_context_new(NULL)};
    GMainContext *gctx = g_main_context_new();
    GSource *src = aio_get_g_source(d.ctx);
    GSource *again = aio_get_g_source(d.ctx);
    pthread_t thread;

    assert_ptr_equal(src, again);
    g_source_unref(again);
    g_source_attach(src, gctx);
    d.loop = g_main_loop_new(gctx, FALSE);

    AioTimer *t = aio_timer_new(d.ctx, gsource_timer_cb, &d);
    aio_timer_mod(t, aio_clock_ns() + 5 * NS_PER_MS);
    GSource *idle = g_idle_source_new();
    g_source_set_callback(idle, gsource_idle_cb, &d, NULL);
    g_source_attach(idle, gctx);
    g_source_unref(idle);

    assert_int_equal(pthread_create(&thread, NULL, schedule_quit_later, &d), 0);
    g_main_loop_run(d.loop);
    pthread_join(thread, NULL);

    assert_true(d.timer_fired);
    assert_true(d.bh_in_ctx);
    assert_true(d.idle_ran);

    aio_timer_free(t);
    g_main_loop_unref(d.loop);
    aio_context_unref(d.ctx); /* destroys the attached source */
    g_source_unref(src);
    g_main_context_unref(gctx);
}

/* ------------------------------------------------------------------ */
/* coroutines across contexts */

typedef struct HopData {
    AioContext *main_ctx, *other_ctx;
    AioContext *seen[4];
    AioContext *home[4];
    pid_t tid[4];
    atomic_int stage;
} HopData;

static void hop_record(HopData *d, int i)
{
    d->seen[i] = aio_get_current();
    d->home[i] = co_get_ctx(co_self());
    /* Not pthread_self(): it is declared const, so the compiler may reuse it across a yield. */
    d->tid[i] = gettid();
}

static void coroutine_fn hop_entry(void *opaque)
{
    HopData *d = opaque;
    hop_record(d, 0);
    aio_co_reschedule_self(d->other_ctx);
    hop_record(d, 1);
    atomic_store(&d->stage, 1);
    co_yield (); /* the main thread wakes us with aio_co_wake */
    hop_record(d, 2);
    aio_co_reschedule_self(d->main_ctx);
    hop_record(d, 3);
    atomic_store(&d->stage, 2);
}

static void test_coroutine_moves_and_wakes_in_its_home_context(void **state)
{
    LoopThread lt;
    HopData d = {.main_ctx = aio_main_context()};
    loop_thread_start(&lt);
    d.other_ctx = lt.ctx;

    Coroutine *co = co_create(hop_entry, &d);
    aio_co_enter(d.main_ctx, co);
    /* The hand-over to the loop thread starts from a BH in the main context. */
    while (atomic_load(&d.stage) < 1) {
        aio_poll(d.main_ctx, false);
        g_usleep(100);
    }
    aio_co_wake(co); /* from the main thread, while co's home is the loop thread */
    for (int i = 0; i < 100000 && atomic_load(&d.stage) < 2; i++) {
        aio_poll(d.main_ctx, true);
    }
    assert_int_equal(atomic_load(&d.stage), 2);
    loop_thread_stop(&lt);

    assert_ptr_equal(d.seen[0], d.main_ctx);
    assert_int_equal(d.tid[0], gettid());
    for (int i = 1; i <= 2; i++) {
        assert_ptr_equal(d.seen[i], d.other_ctx);
        assert_ptr_equal(d.home[i], d.other_ctx);
        assert_int_equal(d.tid[i], lt.tid);
    }
    assert_ptr_equal(d.seen[3], d.main_ctx);
    assert_ptr_equal(d.home[3], d.main_ctx);
    assert_int_equal(d.tid[3], gettid());
}

#define PINGPONG_ROUNDS 2000

typedef struct PingPong {
    Coroutine *co;
    AioContext *home;
    atomic_int yields;
    atomic_int wrong_ctx;
    atomic_bool done;
} PingPong;

static void coroutine_fn pingpong_entry(void *opaque)
{
    PingPong *p = opaque;
    for (int i = 0; i < PINGPONG_ROUNDS; i++) {
        atomic_fetch_add(&p->yields, 1);
        co_yield ();
        if (aio_get_current() != p->home) {
            atomic_fetch_add(&p->wrong_ctx, 1);
        }
    }
    atomic_store(&p->done, true);
}

static void pingpong_start_bh(void *opaque)
{
    PingPong *p = opaque;
    aio_co_enter(p->home, p->co);
}

static void test_coroutine_woken_from_other_thread_repeatedly_runs_at_home(void **state)
{
    LoopThread lt;
    PingPong p;
    loop_thread_start(&lt);
    p.home = lt.ctx;
    atomic_init(&p.yields, 0);
    atomic_init(&p.wrong_ctx, 0);
    atomic_init(&p.done, false);
    p.co = co_create(pingpong_entry, &p);
    aio_bh_schedule_oneshot(lt.ctx, pingpong_start_bh, &p);

    for (int i = 1; i <= PINGPONG_ROUNDS; i++) {
        while (atomic_load(&p.yields) < i) {
            sched_yield();
        }
        aio_co_wake(p.co);
    }
    while (!atomic_load(&p.done)) {
        g_usleep(100);
    }
    loop_thread_stop(&lt);
    assert_int_equal(atomic_load(&p.wrong_ctx), 0);
}

static void coroutine_fn yield_once_entry(void *opaque)
{
    co_yield ();
}

static void test_scheduling_a_scheduled_coroutine_aborts(void **state)
{
    int err[2];
    assert_int_equal(pipe(err), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(err[1], 2);
        AioContext *ctx = aio_context_new(NULL);
        /* Never entered: no context switch in the child, only the scheduling claim. */
        Coroutine *co = co_create(yield_once_entry, NULL);
        aio_co_schedule(ctx, co);
        aio_co_schedule(ctx, co);
        _exit(0);
    }
    close(err[1]);
    char buf[8192] = "";
    ssize_t len = 0, r;
    while ((r = read(err[0], buf + len, sizeof(buf) - 1 - len)) > 0) {
        len += r;
    }
    close(err[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    if (!strstr(buf, "aio_co_schedule: coroutine already scheduled by aio_co_schedule")) {
        fail_msg("unexpected stderr: %s", buf);
    }
}

/* ------------------------------------------------------------------ */
/* AIO_WAIT_WHILE */

#define WAIT_STEPS 500

static void *wait_worker(void *opaque)
{
    atomic_int *progress = opaque;
    for (int i = 0; i < WAIT_STEPS; i++) {
        if (i % 50 == 0) {
            g_usleep(1000);
        }
        atomic_fetch_add(progress, 1);
        aio_wait_kick();
    }
    return NULL;
}

static void test_aio_wait_while_returns_once_the_worker_kicks(void **state)
{
    atomic_int progress = 0;
    pthread_t thread;

    assert_int_equal(pthread_create(&thread, NULL, wait_worker, &progress), 0);
    bool waited = AIO_WAIT_WHILE(atomic_load(&progress) < WAIT_STEPS);
    pthread_join(thread, NULL);
    assert_int_equal(atomic_load(&progress), WAIT_STEPS);
    assert_true(waited);
    assert_int_equal(atomic_load(&aio_wait_waiters), 0);

    /* A false condition returns at once without polling. */
    assert_false(AIO_WAIT_WHILE(false));
    /* Drain the kicks' BHs so later tests start idle. */
    while (aio_poll(aio_main_context(), false)) {
    }
}

static int group_setup(void **state)
{
    return aio_main_loop_init(NULL) ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bh_scheduled_twice_before_running_runs_once),
        cmocka_unit_test(test_bhs_run_in_scheduling_order),
        cmocka_unit_test(test_oneshot_bhs_scheduled_from_many_threads_all_run),
        cmocka_unit_test(test_bh_cancelled_before_running_does_not_run),
        cmocka_unit_test(test_bh_deleted_while_pending_is_freed_without_running),
        cmocka_unit_test(test_bh_may_delete_itself_from_its_callback),
        cmocka_unit_test(test_nested_poll_runs_bhs_its_caller_already_took),
        cmocka_unit_test(test_timers_fire_in_deadline_order_and_never_early),
        cmocka_unit_test(test_short_timer_sleeps_instead_of_spinning),
        cmocka_unit_test(test_deleted_timer_does_not_fire),
        cmocka_unit_test(test_timer_armed_from_other_thread_wakes_blocked_poll),
        cmocka_unit_test(test_fd_handler_runs_when_pipe_is_readable),
        cmocka_unit_test(test_write_handler_runs_when_pipe_is_writable),
        cmocka_unit_test(test_event_notifier_set_from_other_thread_runs_handler),
        cmocka_unit_test(test_io_poll_seeing_work_runs_poll_ready_without_the_fd),
        cmocka_unit_test(test_poll_without_blocking_returns_false_when_idle),
        cmocka_unit_test(test_notify_wakes_a_blocked_poll),
        cmocka_unit_test(test_poll_params_out_of_range_are_rejected_naming_the_parameter),
        cmocka_unit_test(test_poll_params_set_are_read_back),
        cmocka_unit_test(test_poll_window_grows_under_cross_thread_bhs_and_shrinks_when_idle),
        cmocka_unit_test(test_gsource_lets_a_gmainloop_drive_the_context),
        cmocka_unit_test(test_coroutine_moves_and_wakes_in_its_home_context),
        cmocka_unit_test(test_coroutine_woken_from_other_thread_repeatedly_runs_at_home),
        cmocka_unit_test(test_scheduling_a_scheduled_coroutine_aborts),
        cmocka_unit_test(test_aio_wait_while_returns_once_the_worker_kicks),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
