/*
 * Tests of the per-thread counter slots (block/shard.c) and of what the
 * block layer builds on them: in-flight counts that drain reads, backend
 * statistics, and the write generation that lets flush skip the driver.
 *
 * The reading-order test is a stress test: requests that begin in one slot
 * and end in another run nonstop in two threads while a third keeps one
 * request in flight; every count the main thread reads must include it.
 * Reading `begun` before `ended` (or one up-and-down count per slot) fails
 * it within a few thousand reads.  The other tests drive a null-co or
 * counting node from two IOThreads and check the sums, and that a drain
 * waits for a request that moved to another thread before it ended.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <string.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "block/shard.h"
#include "coroutine/co-lock.h"

/* ---- slots ------------------------------------------------------------------------ */

typedef struct SlotThread {
    pthread_barrier_t *recorded; /* all threads hold their index at once */
    unsigned index;
    bool shared;
} SlotThread;

static void *record_index(void *opaque)
{
    SlotThread *t = opaque;
    t->index = bdrv_shard_index();
    g_assert(bdrv_shard_index() == t->index); /* stable once assigned */
    t->shared = bdrv_shard_tls & BDRV_SHARD_SHARED;
    if (t->recorded) {
        pthread_barrier_wait(t->recorded);
    }
    return NULL;
}

static void test_live_threads_own_distinct_slots_and_the_rest_share_one(void **state)
{
    enum { N = BDRV_SHARDS };
    SlotThread t[N];
    pthread_t threads[N];
    pthread_barrier_t recorded;
    unsigned mine = bdrv_shard_index();
    bool used[BDRV_SHARDS] = {false};
    int shared = 0;

    /* N threads alive at once, with the main thread: more than there are slots to own. */
    pthread_barrier_init(&recorded, NULL, N);
    for (int i = 0; i < N; i++) {
        t[i] = (SlotThread){.recorded = &recorded};
        assert_int_equal(pthread_create(&threads[i], NULL, record_index, &t[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
    }
    pthread_barrier_destroy(&recorded);

    used[mine] = true;
    for (int i = 0; i < N; i++) {
        if (t[i].shared) {
            assert_int_equal(t[i].index, BDRV_SHARDS - 1);
            shared++;
            continue;
        }
        assert_true(t[i].index < BDRV_SHARDS - 1);
        assert_false(used[t[i].index]);
        used[t[i].index] = true;
    }
    assert_true(shared >= 2);

    /* The threads are gone: their slots are free to own again. */
    SlotThread late = {NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, record_index, &late), 0);
    pthread_join(th, NULL);
    assert_false(late.shared);
    assert_true(late.index < BDRV_SHARDS - 1 && late.index != mine);
}

typedef struct Slots {
    BdrvInFlight slot[BDRV_SHARDS];
} Slots;

static uint64_t slots_count(Slots *s)
{
    return bdrv_in_flight_count(&s->slot[0], sizeof(s->slot[0]));
}

static void test_a_request_may_end_in_another_slot(void **state)
{
    Slots s = {0};

    bdrv_in_flight_begin(&s.slot[2]);
    bdrv_in_flight_begin(&s.slot[2]);
    bdrv_in_flight_begin(&s.slot[7]);
    assert_int_equal(slots_count(&s), 3);
    bdrv_in_flight_end(&s.slot[9]);
    bdrv_in_flight_end(&s.slot[15]);
    assert_int_equal(slots_count(&s), 1);
    bdrv_in_flight_end(&s.slot[0]);
    assert_int_equal(slots_count(&s), 0);
}

typedef struct Mover {
    Slots *s;
    unsigned first;
    _Atomic bool *stop;
    _Atomic long moves;
} Mover;

/* Begins requests in one slot and ends them in another, as a coroutine moved to another thread. */
static void *mover_thread(void *opaque)
{
    Mover *m = opaque;
    for (unsigned k = m->first; !atomic_load_explicit(m->stop, memory_order_relaxed); k++) {
        bdrv_in_flight_begin(&m->s->slot[k % BDRV_SHARDS]);
        bdrv_in_flight_end(&m->s->slot[(k + 5) % BDRV_SHARDS]);
        atomic_fetch_add_explicit(&m->moves, 1, memory_order_relaxed);
    }
    return NULL;
}

static void test_count_never_misses_a_request_while_others_move_between_slots(void **state)
{
    Slots *s = g_new0(Slots, 1);
    _Atomic bool stop = false;
    Mover movers[2] = {{s, 0, &stop, 0}, {s, 8, &stop, 0}};
    pthread_t threads[2];
    long bad_reads = 0, reads = 0;

    /* The request that stays in flight throughout. */
    bdrv_in_flight_begin(&s->slot[5]);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, mover_thread, &movers[i]), 0);
    }
    int64_t end = aio_clock_ns() + 300 * 1000 * 1000;
    while (aio_clock_ns() < end ||
           atomic_load(&movers[0].moves) + atomic_load(&movers[1].moves) < 10000) {
        for (int i = 0; i < 1000; i++, reads++) {
            /* At least the one that stays, and never a wrapped-around "negative" count. */
            uint64_t n = slots_count(s);
            bad_reads += n == 0 || n > (UINT64_C(1) << 62);
        }
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
    }
    assert_int_equal(bad_reads, 0);
    assert_true(reads > 0);
    bdrv_in_flight_end(&s->slot[5]);
    assert_int_equal(slots_count(s), 0);
    g_free(s);
}

/* ---- test-move: a protocol that can finish a request in another thread -------------- */

static _Atomic long move_flushes;
static AioContext *_Atomic move_target; /* when set, reads move there and linger */
static _Atomic bool move_read_done;
static _Atomic bool move_read_moved;

static bool move_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    g_free(opts_take_str(options, "filename"));
    return true;
}

static int coroutine_fn move_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    IOVector *qiov, BdrvRequestFlags flags)
{
    AioContext *target = atomic_load(&move_target);
    if (target) {
        aio_co_reschedule_self(target);
        atomic_store(&move_read_moved, aio_get_current() == target);
        co_sleep_ns(50 * 1000 * 1000);
        atomic_store(&move_read_done, true);
    }
    return 0;
}

static int coroutine_fn move_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     IOVector *qiov, BdrvRequestFlags flags)
{
    return 0;
}

static int coroutine_fn move_flush(BlockDriverState *bs)
{
    atomic_fetch_add(&move_flushes, 1);
    return 0;
}

static int64_t coroutine_fn move_getlength(BlockDriverState *bs)
{
    return 1 << 20;
}

static BlockDriver test_move_driver = {
    .format_name = "test-move",
    .is_protocol = true,
    .open = move_open,
    .co_preadv = move_preadv,
    .co_pwritev = move_pwritev,
    .co_flush_to_disk = move_flush,
    .co_getlength = move_getlength,
};

/* ---- helpers ------------------------------------------------------------------------ */

static BlockBackend *open_kv(const char *kv)
{
    GHashTable *o = opts_new();
    GError *err = NULL;
    g_assert(opts_parse_kv(o, kv, NULL, NULL));
    BlockBackend *blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("open failed: %s", err->message);
    }
    return blk;
}

#define REQS_PER_THREAD 2000

typedef struct Job {
    BlockBackend *blk;
    bool write, read;
    int reqs;
    _Atomic bool done;
    int errors;
} Job;

static void coroutine_fn job_co(void *opaque)
{
    Job *j = opaque;
    uint8_t buf[4096];
    memset(buf, 0, sizeof(buf));
    for (int i = 0; i < j->reqs; i++) {
        int64_t off = (int64_t)(i % 256) * 4096;
        if (j->read && blk_co_pread(j->blk, off, 4096, buf, 0) < 0) {
            j->errors++;
        }
        if (j->write && blk_co_pwrite(j->blk, off, 4096, buf, 0) < 0) {
            j->errors++;
        }
    }
    atomic_store(&j->done, true);
    aio_wait_kick();
}

static void start_job_bh(void *opaque)
{
    co_enter(co_create(job_co, opaque));
}

/* Runs @jobs[i] in IOThread @threads[i] and waits for all of them. */
static void run_jobs(IOThread **threads, Job *jobs, int n)
{
    for (int i = 0; i < n; i++) {
        aio_bh_schedule_oneshot(iothread_get_aio_context(threads[i]), start_job_bh, &jobs[i]);
    }
    for (int i = 0; i < n; i++) {
        AIO_WAIT_WHILE(!atomic_load(&jobs[i].done));
        assert_int_equal(jobs[i].errors, 0);
    }
}

static void make_threads(IOThread **threads, int n)
{
    for (int i = 0; i < n; i++) {
        g_autofree char *id = g_strdup_printf("shard-io%d", i);
        threads[i] = iothread_create(id, NULL, NULL);
        assert_non_null(threads[i]);
    }
}

static void destroy_threads(IOThread **threads, int n)
{
    for (int i = 0; i < n; i++) {
        iothread_destroy(threads[i]);
    }
}

/* ---- the block layer on top ---------------------------------------------------------- */

static void test_statistics_add_up_requests_from_two_iothreads(void **state)
{
    IOThread *threads[2];
    BlockBackend *blk = open_kv("driver=null-co,size=1M");
    Job jobs[2] = {{.blk = blk, .read = true, .write = true, .reqs = REQS_PER_THREAD},
                   {.blk = blk, .read = true, .reqs = REQS_PER_THREAD}};
    BlockAcctStats st;

    make_threads(threads, 2);
    run_jobs(threads, jobs, 2);
    assert_int_equal(blk_pread(blk, 0, 512, (char[512]){0}, 0), 0); /* and one from here */
    blk_get_stats(blk, &st);
    assert_int_equal(st.rd_ops, 2 * REQS_PER_THREAD + 1);
    assert_int_equal(st.rd_bytes, 2 * REQS_PER_THREAD * 4096 + 512);
    assert_int_equal(st.wr_ops, REQS_PER_THREAD);
    assert_int_equal(st.wr_bytes, REQS_PER_THREAD * 4096);
    assert_int_equal(st.failed_rd_ops + st.failed_wr_ops, 0);
    assert_int_equal(bdrv_get_in_flight(blk_bs(blk)), 0);
    destroy_threads(threads, 2);
    blk_unref(blk);
}

static void test_flush_sees_writes_completed_in_other_threads(void **state)
{
    IOThread *threads[2];
    BlockBackend *blk = open_kv("driver=test-move");

    make_threads(threads, 2);
    atomic_store(&move_flushes, 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(atomic_load(&move_flushes), 0); /* nothing written yet */

    Job w = {.blk = blk, .write = true, .reqs = 1};
    run_jobs(&threads[1], &w, 1);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(atomic_load(&move_flushes), 1);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(atomic_load(&move_flushes), 1); /* clean again */

    Job w2[2] = {{.blk = blk, .write = true, .reqs = 3}, {.blk = blk, .read = true, .reqs = 3}};
    run_jobs(threads, w2, 2);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(atomic_load(&move_flushes), 2);
    destroy_threads(threads, 2);
    blk_unref(blk);
}

typedef struct MovedRead {
    BlockBackend *blk;
    _Atomic bool done;
} MovedRead;

static void coroutine_fn moved_read_co(void *opaque)
{
    MovedRead *r = opaque;
    g_assert(blk_co_pread(r->blk, 0, 512, (char[512]){0}, 0) == 0);
    atomic_store(&r->done, true);
    aio_wait_kick();
}

static void start_moved_read_bh(void *opaque)
{
    co_enter(co_create(moved_read_co, opaque));
}

static void test_drain_waits_for_a_request_that_ended_in_another_thread(void **state)
{
    IOThread *threads[2];
    BlockBackend *blk = open_kv("driver=test-move");
    BlockDriverState *bs = blk_bs(blk);
    MovedRead r = {.blk = blk};

    make_threads(threads, 2);
    atomic_store(&move_read_done, false);
    atomic_store(&move_read_moved, false);
    atomic_store(&move_target, iothread_get_aio_context(threads[1]));
    aio_bh_schedule_oneshot(iothread_get_aio_context(threads[0]), start_moved_read_bh, &r);
    /* Wait until the request is in flight, counted in the first thread's slots. */
    while (bdrv_get_in_flight(bs) == 0 && !atomic_load(&move_read_done)) {
        g_usleep(100);
    }

    bdrv_drained_begin(bs);
    assert_true(atomic_load(&move_read_done));
    assert_true(atomic_load(&move_read_moved));
    assert_int_equal(bdrv_get_in_flight(bs), 0);
    bdrv_drained_end(bs);

    AIO_WAIT_WHILE(!atomic_load(&r.done)); /* the backend's part ends in the second thread */
    atomic_store(&move_target, NULL);
    blk_drain(blk);
    assert_int_equal(bdrv_get_in_flight(bs), 0);
    destroy_threads(threads, 2);
    blk_unref(blk);
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    bdrv_register(&test_move_driver);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_threads_own_distinct_slots_and_the_rest_share_one),
        cmocka_unit_test(test_a_request_may_end_in_another_slot),
        cmocka_unit_test(test_count_never_misses_a_request_while_others_move_between_slots),
        cmocka_unit_test(test_statistics_add_up_requests_from_two_iothreads),
        cmocka_unit_test(test_flush_sees_writes_completed_in_other_threads),
        cmocka_unit_test(test_drain_waits_for_a_request_that_ended_in_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
