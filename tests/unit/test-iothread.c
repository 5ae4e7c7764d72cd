/*
 * Unit tests for IOThread (aio/iothread.c): creation and ids, thread names,
 * queries, parameters (valid, invalid, changed while running), destroy
 * draining pending work, the GMainContext mode, and the CPU cost of an
 * idle IOThread.
 *
 * Threading: the main thread creates and destroys every IOThread; work is
 * sent into them as one-shot BHs and results come back through atomics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "aio/iothread.h"

/* Runs @fn(@opaque) in @ctx's thread and waits for it. */
typedef struct RunIn {
    void (*fn)(void *);
    void *opaque;
    atomic_bool done;
} RunIn;

static void run_in_bh(void *opaque)
{
    RunIn *r = opaque;
    r->fn(r->opaque);
    atomic_store(&r->done, true);
}

static void run_in(AioContext *ctx, void (*fn)(void *), void *opaque)
{
    RunIn r = {.fn = fn, .opaque = opaque};
    aio_bh_schedule_oneshot(ctx, run_in_bh, &r);
    while (!atomic_load(&r.done)) {
        g_usleep(200);
    }
}

static void read_comm(int tid, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, (int)size, f));
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

static void test_iothreads_are_found_by_id_and_ids_are_unique(void **state)
{
    GError *err = NULL;
    IOThread *a = iothread_create("a", NULL, &err);
    IOThread *b = iothread_create("b", NULL, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(err);

    assert_ptr_equal(iothread_find("a"), a);
    assert_ptr_equal(iothread_find("b"), b);
    assert_null(iothread_find("c"));
    assert_string_equal(iothread_get_id(a), "a");
    assert_true(iothread_get_aio_context(a) != iothread_get_aio_context(b));

    assert_null(iothread_create("a", NULL, &err));
    assert_true(g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_EXIST));
    assert_non_null(strstr(err->message, "'a'"));
    g_clear_error(&err);
    assert_null(iothread_create("", NULL, &err));
    assert_non_null(err);
    g_clear_error(&err);

    iothread_destroy(a);
    assert_null(iothread_find("a"));
    iothread_destroy(b);
}

static void test_iothread_threads_are_named_after_their_id(void **state)
{
    IOThread *io = iothread_create("disk0", NULL, NULL);
    IOThread *longer = iothread_create("a-very-long-identifier", NULL, NULL);
    IOThreadInfo info;
    char comm[64];

    iothread_query(io, &info);
    assert_true(info.thread_id > 0 && info.thread_id != gettid());
    read_comm(info.thread_id, comm, sizeof(comm));
    assert_string_equal(comm, "IO disk0");
    iothread_info_clear(&info);

    /* The kernel keeps 15 bytes of a name. */
    iothread_query(longer, &info);
    read_comm(info.thread_id, comm, sizeof(comm));
    assert_string_equal(comm, "IO a-very-long-");
    iothread_info_clear(&info);

    iothread_destroy(io);
    iothread_destroy(longer);
}

static void test_query_all_lists_iothreads_in_creation_order_with_their_params(void **state)
{
    IOThreadParams p = IOTHREAD_PARAMS_DEFAULT;
    p.poll_max_ns = 1000;
    p.aio_max_batch = 16;
    IOThread *first = iothread_create("first", NULL, NULL);
    IOThread *second = iothread_create("second", &p, NULL);

    GList *list = iothread_query_all();
    assert_int_equal(g_list_length(list), 2);
    IOThreadInfo *i0 = list->data, *i1 = list->next->data;
    assert_string_equal(i0->id, "first");
    assert_int_equal(i0->poll_max_ns, 32768);
    assert_int_equal(i0->poll_grow, 0);
    assert_int_equal(i0->poll_shrink, 0);
    assert_int_equal(i0->aio_max_batch, 0);
    assert_string_equal(i1->id, "second");
    assert_int_equal(i1->poll_max_ns, 1000);
    assert_int_equal(i1->aio_max_batch, 16);
    assert_true(i0->thread_id != i1->thread_id);
    iothread_info_list_free(list);

    iothread_destroy(first);
    iothread_destroy(second);
    list = iothread_query_all();
    assert_null(list);
}

static void test_params_set_while_running_take_effect(void **state)
{
    IOThread *io = iothread_create("tune", NULL, NULL);
    AioContext *ctx = iothread_get_aio_context(io);
    int64_t max_ns, grow, shrink;

    assert_true(iothread_set_param(io, "poll-max-ns", 100000, NULL));
    assert_true(iothread_set_param(io, "poll-grow", 4, NULL));
    assert_true(iothread_set_param(io, "poll-shrink", 8, NULL));
    assert_true(iothread_set_param(io, "aio-max-batch", 64, NULL));
    aio_context_get_poll_params(ctx, &max_ns, &grow, &shrink);
    assert_true(max_ns == 100000 && grow == 4 && shrink == 8);
    assert_int_equal(aio_context_get_max_batch(ctx), 64);

    /* Disabling polling while it runs: the window drops to 0 on its next iteration. */
    assert_true(iothread_set_param(io, "poll-max-ns", 0, NULL));
    for (int i = 0; i < 1000 && aio_context_poll_ns(ctx) != 0; i++) {
        aio_notify(ctx);
        g_usleep(1000);
    }
    assert_int_equal(aio_context_poll_ns(ctx), 0);
    iothread_destroy(io);
}

static void test_invalid_params_are_rejected_naming_the_parameter(void **state)
{
    IOThread *io = iothread_create("strict", NULL, NULL);
    GError *err = NULL;

    assert_false(iothread_set_param(io, "poll-grow", -3, &err));
    assert_true(g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_INVAL));
    assert_string_equal(err->message, "poll-grow must be in range [0, 9223372036854775807]");
    g_clear_error(&err);
    assert_false(iothread_set_param(io, "aio-max-batch", INT64_MIN, &err));
    assert_non_null(strstr(err->message, "aio-max-batch"));
    g_clear_error(&err);
    assert_false(iothread_set_param(io, "poll-speed", 1, &err));
    assert_non_null(strstr(err->message, "poll-speed"));
    g_clear_error(&err);
    iothread_destroy(io);

    IOThreadParams p = IOTHREAD_PARAMS_DEFAULT;
    p.poll_shrink = -7;
    assert_null(iothread_create("bad", &p, &err));
    assert_string_equal(err->message, "poll-shrink must be in range [0, 9223372036854775807]");
    g_clear_error(&err);
    assert_null(iothread_find("bad"));
}

#define DESTROY_BHS 200

static void slow_count_bh(void *opaque)
{
    g_usleep(50);
    atomic_fetch_add((atomic_int *)opaque, 1);
}

static void test_destroy_finishes_bhs_scheduled_before_it(void **state)
{
    atomic_int count = 0;
    IOThread *io = iothread_create("drain", NULL, NULL);
    AioContext *ctx = iothread_get_aio_context(io);

    for (int i = 0; i < DESTROY_BHS; i++) {
        aio_bh_schedule_oneshot(ctx, slow_count_bh, &count);
    }
    iothread_destroy(io);
    assert_int_equal(atomic_load(&count), DESTROY_BHS);
}

typedef struct GMainData {
    atomic_int idle_tid, timeout_tid, bh_tid;
    AioContext *ctx;
    atomic_bool bh_in_ctx;
} GMainData;

static gboolean gmain_idle_cb(gpointer opaque)
{
    atomic_store(&((GMainData *)opaque)->idle_tid, gettid());
    return G_SOURCE_REMOVE;
}

static gboolean gmain_timeout_cb(gpointer opaque)
{
    atomic_store(&((GMainData *)opaque)->timeout_tid, gettid());
    return G_SOURCE_REMOVE;
}

static void gmain_bh(void *opaque)
{
    GMainData *d = opaque;
    atomic_store(&d->bh_in_ctx, aio_get_current() == d->ctx);
    atomic_store(&d->bh_tid, gettid());
}

static void test_gmain_context_mode_runs_glib_sources_and_bhs(void **state)
{
    IOThread *io = iothread_create("glib", NULL, NULL);
    GMainData d = {.ctx = iothread_get_aio_context(io)};
    IOThreadInfo info;
    iothread_query(io, &info);

    GMainContext *gctx = iothread_get_g_main_context(io);
    assert_ptr_equal(gctx, iothread_get_g_main_context(io));
    GSource *idle = g_idle_source_new();
    g_source_set_callback(idle, gmain_idle_cb, &d, NULL);
    g_source_attach(idle, gctx);
    g_source_unref(idle);
    GSource *timeout = g_timeout_source_new(10);
    g_source_set_callback(timeout, gmain_timeout_cb, &d, NULL);
    g_source_attach(timeout, gctx);
    g_source_unref(timeout);
    aio_bh_schedule_oneshot(d.ctx, gmain_bh, &d);

    for (int i = 0; i < 5000; i++) {
        if (atomic_load(&d.idle_tid) && atomic_load(&d.timeout_tid) && atomic_load(&d.bh_tid)) {
            break;
        }
        g_usleep(1000);
    }
    assert_int_equal(atomic_load(&d.idle_tid), info.thread_id);
    assert_int_equal(atomic_load(&d.timeout_tid), info.thread_id);
    assert_int_equal(atomic_load(&d.bh_tid), info.thread_id);
    assert_true(atomic_load(&d.bh_in_ctx));
    iothread_info_clear(&info);
    iothread_destroy(io);
}

static void read_thread_cpu_us(void *opaque)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    *(int64_t *)opaque = (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                         ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static void noop_bh(void *opaque)
{
}

static void test_idle_iothread_costs_almost_no_cpu_once_its_window_shrank(void **state)
{
    IOThread *io = iothread_create("idle", NULL, NULL);
    AioContext *ctx = iothread_get_aio_context(io);

    /* A burst of cross-thread work opens the poll window... */
    for (int i = 0; i < 2000; i++) {
        aio_bh_schedule_oneshot(ctx, noop_bh, NULL);
        if (i % 10 == 0) {
            g_usleep(20);
        }
    }
    /* ...and wake-ups far apart (each > poll-max-ns) close it again. */
    for (int i = 0; i < 100 && aio_context_poll_ns(ctx) > 0; i++) {
        g_usleep(2000);
        aio_bh_schedule_oneshot(ctx, noop_bh, NULL);
    }
    assert_int_equal(aio_context_poll_ns(ctx), 0);

    int64_t before, after;
    run_in(ctx, read_thread_cpu_us, &before);
    g_usleep(300000);
    run_in(ctx, read_thread_cpu_us, &after);
    print_message("idle IOThread used %" PRId64 " us of CPU over 300 ms\n", after - before);
    assert_true(after - before < 5000);
    iothread_destroy(io);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iothreads_are_found_by_id_and_ids_are_unique),
        cmocka_unit_test(test_iothread_threads_are_named_after_their_id),
        cmocka_unit_test(test_query_all_lists_iothreads_in_creation_order_with_their_params),
        cmocka_unit_test(test_params_set_while_running_take_effect),
        cmocka_unit_test(test_invalid_params_are_rejected_naming_the_parameter),
        cmocka_unit_test(test_destroy_finishes_bhs_scheduled_before_it),
        cmocka_unit_test(test_gmain_context_mode_runs_glib_sources_and_bhs),
        cmocka_unit_test(test_idle_iothread_costs_almost_no_cpu_once_its_window_shrank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
