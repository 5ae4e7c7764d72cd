/*
 * Tests of drained sections and graph changes under load.
 *
 * The central test: two IOThreads issue reads and writes nonstop (four
 * coroutines each) through one BlockBackend -> passthrough filter ->
 * "test-count" node, while the main loop repeatedly drains the node,
 * checks that nothing moves, inserts or removes a second filter above
 * it, and ends the section.  Every request must complete exactly once
 * and reach the bottom node exactly once, no request may reach it
 * inside a section, and nothing may hang.  It is bounded by counts.
 *
 * Smaller tests cover queuing in the backend, nesting, drains asked for
 * from a coroutine, and bdrv_drain_all over nodes created inside it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "coroutine/co-lock.h"

#define NR_THREADS       2
#define CO_PER_THREAD    4
#define REQS_PER_CO      300
#define TOTAL_REQS       (NR_THREADS * CO_PER_THREAD * REQS_PER_CO)
#define MAX_DRAIN_ROUNDS 250
#define MIN_DRAIN_ROUNDS 40
#define REQ_SIZE         4096

/* ---- test-count: a protocol that counts what reaches it ----------------------- */

static _Atomic long count_reads, count_writes;
static _Atomic long count_in_section; /* requests that arrived while the test held a section */
static _Atomic bool in_section;

static bool count_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    g_free(opts_take_str(options, "filename"));
    return true;
}

static void coroutine_fn count_request(int64_t offset, _Atomic long *counter)
{
    if (atomic_load(&in_section)) {
        atomic_fetch_add(&count_in_section, 1);
    }
    atomic_fetch_add(counter, 1);
    /* Stay in flight a little, so that drains find requests to wait for. */
    co_sleep_ns(20000 + (offset / REQ_SIZE % 8) * 10000);
}

static int coroutine_fn count_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     IOVector *qiov, BdrvRequestFlags flags)
{
    count_request(offset, &count_reads);
    iov_memset(qiov, 0, 0, bytes);
    return 0;
}

static int coroutine_fn count_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, BdrvRequestFlags flags)
{
    count_request(offset, &count_writes);
    return 0;
}

static int64_t coroutine_fn count_getlength(BlockDriverState *bs)
{
    return 1 << 20;
}

static BlockDriver test_count_driver = {
    .format_name = "test-count",
    .is_protocol = true,
    .open = count_open,
    .co_preadv = count_preadv,
    .co_pwritev = count_pwritev,
    .co_getlength = count_getlength,
};

static void reset_counts(void)
{
    atomic_store(&count_reads, 0);
    atomic_store(&count_writes, 0);
    atomic_store(&count_in_section, 0);
    atomic_store(&in_section, false);
}

static long counted(void)
{
    return atomic_load(&count_reads) + atomic_load(&count_writes);
}

/* ---- workers ---------------------------------------------------------------------- */

typedef struct Load {
    BlockBackend *blk;
    _Atomic long issued, completed, errors;
    _Atomic int workers_done;
} Load;

typedef struct Worker {
    Load *load;
    int id;
    uint8_t buf[REQ_SIZE];
} Worker;

static void coroutine_fn worker_co(void *opaque)
{
    Worker *w = opaque;
    Load *load = w->load;
    IOVector v;

    for (int i = 0; i < REQS_PER_CO; i++) {
        int64_t off = (int64_t)((w->id * 7919 + i * 104729) % 256) * REQ_SIZE;
        iov_init_buf(&v, w->buf, REQ_SIZE);
        atomic_fetch_add(&load->issued, 1);
        int ret = (i & 1) ? blk_co_pwritev(load->blk, off, REQ_SIZE, &v, 0)
                          : blk_co_preadv(load->blk, off, REQ_SIZE, &v, 0);
        atomic_fetch_add(&load->completed, 1);
        if (ret != 0) {
            atomic_fetch_add(&load->errors, 1);
        }
    }
    atomic_fetch_add(&load->workers_done, 1);
    aio_wait_kick();
}

/* Runs in an IOThread: starts its coroutines there, so they live in its context. */
static void start_workers_bh(void *opaque)
{
    Worker *workers = opaque;
    for (int i = 0; i < CO_PER_THREAD; i++) {
        co_enter(co_create(worker_co, &workers[i]));
    }
}

/* ---- graph helpers ------------------------------------------------------------------- */

/* BB -> passthrough "f1" -> test-count "bottom", writable. */
static BlockBackend *open_stack(void)
{
    GError *err = NULL;
    GHashTable *o = opts_new();
    g_assert(opts_parse_kv(o,
                           "driver=passthrough,node-name=f1,file.driver=test-count,"
                           "file.node-name=bottom",
                           NULL, NULL));
    BlockBackend *blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("open failed: %s", err->message);
    }
    return blk;
}

static BlockDriverState *insert_filter(BlockDriverState *bs)
{
    GError *err = NULL;
    GHashTable *o = opts_new();
    opts_set(o, "driver", "passthrough");
    BlockDriverState *f = bdrv_insert_node(bs, o, BDRV_O_RDWR, &err);
    if (!f) {
        fail_msg("insert failed: %s", err->message);
    }
    return f;
}

/* Lets the loaded system run a little (bounded: a few polls and short naps). */
static void let_io_run(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        aio_poll(aio_main_context(), false);
        g_usleep(50);
    }
}

/* ---- the load test ---------------------------------------------------------------------- */

typedef enum DrainKind { DRAIN_NODE, DRAIN_ALL } DrainKind;

static void run_load_with_graph_changes(DrainKind kind)
{
    IOThread *threads[NR_THREADS];
    Worker workers[NR_THREADS][CO_PER_THREAD];
    Load load = {0};
    long frozen_changes = 0;
    int rounds = 0;

    reset_counts();
    load.blk = open_stack();
    BlockDriverState *bottom = bdrv_find_node("bottom");
    BlockDriverState *extra = NULL;
    assert_non_null(bottom);

    for (int t = 0; t < NR_THREADS; t++) {
        g_autofree char *id = g_strdup_printf("drain-io%d", t);
        threads[t] = iothread_create(id, NULL, NULL);
        assert_non_null(threads[t]);
        for (int c = 0; c < CO_PER_THREAD; c++) {
            workers[t][c] = (Worker){.load = &load, .id = t * CO_PER_THREAD + c};
        }
        aio_bh_schedule_oneshot(iothread_get_aio_context(threads[t]), start_workers_bh, workers[t]);
    }

    while (rounds < MAX_DRAIN_ROUNDS &&
           (rounds < MIN_DRAIN_ROUNDS ||
            atomic_load(&load.workers_done) < NR_THREADS * CO_PER_THREAD)) {
        if (kind == DRAIN_NODE) {
            bdrv_drained_begin(bottom);
        } else {
            bdrv_drain_all_begin();
        }
        atomic_store(&in_section, true);
        assert_int_equal(bdrv_get_in_flight(bottom), 0);

        long before = counted();
        let_io_run(2);
        frozen_changes += counted() - before;

        if (extra) {
            GError *err = NULL;
            assert_true(bdrv_drop_filter(extra, &err));
            extra = NULL;
        } else {
            extra = insert_filter(bottom);
        }

        atomic_store(&in_section, false);
        if (kind == DRAIN_NODE) {
            bdrv_drained_end(bottom);
        } else {
            bdrv_drain_all_end();
        }
        let_io_run(1);
        rounds++;
    }

    AIO_WAIT_WHILE(atomic_load(&load.workers_done) < NR_THREADS * CO_PER_THREAD);
    for (int t = 0; t < NR_THREADS; t++) {
        iothread_destroy(threads[t]);
    }

    assert_int_equal(frozen_changes, 0);
    assert_int_equal(atomic_load(&count_in_section), 0);
    assert_int_equal(atomic_load(&load.errors), 0);
    assert_int_equal(atomic_load(&load.issued), TOTAL_REQS);
    assert_int_equal(atomic_load(&load.completed), TOTAL_REQS);
    assert_int_equal(atomic_load(&count_reads), TOTAL_REQS / 2);
    assert_int_equal(atomic_load(&count_writes), TOTAL_REQS / 2);
    assert_int_equal(bdrv_graph_reader_count(), 0);
    assert_true(rounds >= MIN_DRAIN_ROUNDS);

    if (extra) {
        GError *err = NULL;
        assert_true(bdrv_drop_filter(extra, &err));
    }
    blk_unref(load.blk);
    assert_null(bdrv_find_node("bottom"));
}

static void test_io_from_two_iothreads_survives_drains_and_filter_changes(void **state)
{
    run_load_with_graph_changes(DRAIN_NODE);
}

static void test_io_from_two_iothreads_survives_drain_all_and_filter_changes(void **state)
{
    run_load_with_graph_changes(DRAIN_ALL);
}

/* ---- queuing and nesting, in the main thread ------------------------------------------- */

typedef struct AioResult {
    int ret;
    bool done;
} AioResult;

static void aio_done(void *opaque, int ret)
{
    AioResult *r = opaque;
    r->ret = ret;
    r->done = true;
}

static void test_requests_wait_in_the_backend_until_the_section_ends(void **state)
{
    reset_counts();
    BlockBackend *blk = open_stack();
    BlockDriverState *bottom = bdrv_find_node("bottom");
    uint8_t buf[REQ_SIZE];
    IOVector v;
    AioResult r = {0};

    bdrv_drained_begin(bottom);
    iov_init_buf(&v, buf, sizeof(buf));
    blk_aio_preadv(blk, 0, &v, 0, aio_done, &r);
    let_io_run(5);
    assert_false(r.done);
    assert_int_equal(counted(), 0);

    /* Nested: one end is not enough. */
    bdrv_drained_begin(bottom);
    bdrv_drained_end(bottom);
    let_io_run(5);
    assert_false(r.done);

    bdrv_drained_end(bottom);
    while (!r.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_int_equal(r.ret, 0);
    assert_int_equal(counted(), 1);
    assert_false(bdrv_is_drained(bottom));
    blk_unref(blk);
}

static void test_draining_a_node_quiesces_its_parents_only(void **state)
{
    BlockBackend *blk = open_stack();
    BlockDriverState *bottom = bdrv_find_node("bottom");
    BlockDriverState *f1 = bdrv_find_node("f1");

    bdrv_drained_begin(f1);
    assert_true(bdrv_is_drained(f1));
    assert_false(bdrv_is_drained(bottom));
    bdrv_drained_end(f1);

    bdrv_drained_begin(bottom);
    assert_true(bdrv_is_drained(f1));
    assert_true(bdrv_is_drained(bottom));
    bdrv_drained_end(bottom);
    assert_false(bdrv_is_drained(f1));
    blk_unref(blk);
}

typedef struct CoDrain {
    BlockDriverState *bs;
    bool was_drained, done;
} CoDrain;

static void coroutine_fn co_drain_entry(void *opaque)
{
    CoDrain *d = opaque;
    bdrv_drained_begin(d->bs);
    d->was_drained = bdrv_is_drained(d->bs);
    bdrv_drained_end(d->bs);
    d->done = true;
}

static void test_a_coroutine_can_ask_for_a_drained_section(void **state)
{
    BlockBackend *blk = open_stack();
    CoDrain d = {.bs = bdrv_find_node("bottom")};
    co_enter(co_create(co_drain_entry, &d));
    while (!d.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_true(d.was_drained);
    assert_false(bdrv_is_drained(d.bs));
    blk_unref(blk);
}

static void test_drain_all_covers_nodes_opened_inside_it(void **state)
{
    BlockBackend *blk = open_stack();
    bdrv_drain_all_begin();
    assert_true(bdrv_is_drained(bdrv_find_node("bottom")));

    GError *err = NULL;
    GHashTable *o = opts_new();
    opts_set(o, "driver", "null-co");
    BlockDriverState *late = bdrv_open(NULL, o, 0, &err);
    assert_non_null(late);
    assert_true(bdrv_is_drained(late));

    bdrv_drain_all_end();
    assert_false(bdrv_is_drained(late));
    assert_false(bdrv_is_drained(bdrv_find_node("bottom")));
    bdrv_unref(late);
    blk_unref(blk);
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    bdrv_register(&test_count_driver);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_wait_in_the_backend_until_the_section_ends),
        cmocka_unit_test(test_draining_a_node_quiesces_its_parents_only),
        cmocka_unit_test(test_a_coroutine_can_ask_for_a_drained_section),
        cmocka_unit_test(test_drain_all_covers_nodes_opened_inside_it),
        cmocka_unit_test(test_io_from_two_iothreads_survives_drains_and_filter_changes),
        cmocka_unit_test(test_io_from_two_iothreads_survives_drain_all_and_filter_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
