/*
 * Tests of the coroutine locks: CoMutex, CoQueue, CoRwlock and co_sleep_ns,
 * in one thread and across IOThreads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glib.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "coroutine/co-lock.h"
#include "coroutine/coroutine.h"

/* Records the order in which coroutines got somewhere. */
typedef struct Trace {
    int order[64];
    int n;
} Trace;

static void trace_add(Trace *t, int id)
{
    assert_true(t->n < 64);
    t->order[t->n++] = id;
}

/* Runs the main context until nothing is left to do. */
static void drain_main_loop(void)
{
    while (aio_poll(aio_main_context(), false)) {
    }
}

/* Yields to the event loop and comes back in a later iteration. */
static void coroutine_fn co_yield_to_loop(void)
{
    Coroutine *self = co_self();
    aio_co_schedule(co_get_ctx(self), self);
    co_yield();
}

/* ---- CoMutex ---------------------------------------------------------- */

typedef struct MutexUser {
    CoMutex *m;
    Trace *trace;
    int id;
    bool hold_until_yield; /* keep the mutex until released by the test */
    bool release;
} MutexUser;

static void coroutine_fn mutex_user_co(void *opaque)
{
    MutexUser *u = opaque;
    co_mutex_lock(u->m);
    trace_add(u->trace, u->id);
    while (u->hold_until_yield && !u->release) {
        co_yield();
    }
    co_mutex_unlock(u->m);
}

static void test_comutex_wakes_in_fifo_order(void **state)
{
    CoMutex m;
    Trace trace = {0};
    MutexUser users[5];

    co_mutex_init(&m);
    for (int i = 0; i < 5; i++) {
        users[i] = (MutexUser){.m = &m, .trace = &trace, .id = i, .hold_until_yield = i == 0};
    }
    Coroutine *holder = co_create(mutex_user_co, &users[0]);
    co_enter(holder);
    for (int i = 1; i < 5; i++) {
        co_enter(co_create(mutex_user_co, &users[i]));
    }
    assert_int_equal(trace.n, 1); /* everyone else waits */
    users[0].release = true;
    co_enter(holder);
    drain_main_loop();
    assert_int_equal(trace.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(trace.order[i], i);
    }
}

typedef struct TryState {
    CoMutex m;
    bool first, second, held_by_self;
} TryState;

static void coroutine_fn trylock_co(void *opaque)
{
    TryState *s = opaque;
    s->first = co_mutex_trylock(&s->m);
    s->held_by_self = co_mutex_held(&s->m);
    co_yield();
    co_mutex_unlock(&s->m);
}

static void coroutine_fn trylock_second_co(void *opaque)
{
    TryState *s = opaque;
    s->second = co_mutex_trylock(&s->m);
    if (s->second) {
        co_mutex_unlock(&s->m);
    }
}

static void test_comutex_trylock_fails_while_held(void **state)
{
    TryState s = {0};
    Coroutine *a = co_create(trylock_co, &s);
    co_enter(a);
    co_enter(co_create(trylock_second_co, &s));
    assert_true(s.first);
    assert_true(s.held_by_self);
    assert_false(s.second);
    co_enter(a);
    assert_false(co_mutex_held(&s.m));
    co_enter(co_create(trylock_second_co, &s));
    assert_true(s.second);
}

/* Many coroutines in two IOThreads and the main loop share one counter. */
enum { COUNTER_COS_PER_CTX = 8, COUNTER_ITERATIONS = 300 };

typedef struct Counter {
    CoMutex m;
    long value;           /* protected by m */
    atomic_int finished;  /* coroutines done */
    atomic_int wrong_ctx; /* woke outside their home context */
} Counter;

static void coroutine_fn counter_co(void *opaque)
{
    Counter *c = opaque;
    AioContext *home = aio_get_current();

    for (int i = 0; i < COUNTER_ITERATIONS; i++) {
        co_mutex_lock(&c->m);
        if (aio_get_current() != home) {
            atomic_fetch_add(&c->wrong_ctx, 1);
        }
        long v = c->value;
        if (i % 3 == 0) {
            co_yield_to_loop(); /* widen the window for a lost update */
        }
        c->value = v + 1;
        co_mutex_unlock(&c->m);
        if (i % 5 == 0) {
            co_yield_to_loop();
        }
    }
    atomic_fetch_add(&c->finished, 1);
    aio_wait_kick();
}

static void start_counter_cos_bh(void *opaque)
{
    for (int i = 0; i < COUNTER_COS_PER_CTX; i++) {
        co_enter(co_create(counter_co, opaque));
    }
}

static void test_comutex_counter_has_no_lost_update_across_iothreads(void **state)
{
    Counter c = {0};
    IOThread *t1 = iothread_create("lock-a", NULL, NULL);
    IOThread *t2 = iothread_create("lock-b", NULL, NULL);

    assert_non_null(t1);
    assert_non_null(t2);
    co_mutex_init(&c.m);
    aio_bh_schedule_oneshot(iothread_get_aio_context(t1), start_counter_cos_bh, &c);
    aio_bh_schedule_oneshot(iothread_get_aio_context(t2), start_counter_cos_bh, &c);
    start_counter_cos_bh(&c);
    AIO_WAIT_WHILE(atomic_load(&c.finished) < 3 * COUNTER_COS_PER_CTX);
    assert_int_equal(c.value, 3L * COUNTER_COS_PER_CTX * COUNTER_ITERATIONS);
    assert_int_equal(atomic_load(&c.wrong_ctx), 0);
    iothread_destroy(t1);
    iothread_destroy(t2);
}

/* A waiter in the main loop is handed the mutex by a holder in an IOThread. */
typedef struct HandOff {
    CoMutex m;
    atomic_int stage;
    AioContext *woke_in;
} HandOff;

static void coroutine_fn handoff_holder_co(void *opaque)
{
    HandOff *h = opaque;
    co_mutex_lock(&h->m);
    atomic_store(&h->stage, 1);
    aio_wait_kick();
    while (atomic_load(&h->stage) < 2) {
        co_sleep_ns(100000);
    }
    co_mutex_unlock(&h->m);
}

static void coroutine_fn handoff_waiter_co(void *opaque)
{
    HandOff *h = opaque;
    atomic_store(&h->stage, 2);
    co_mutex_lock(&h->m);
    h->woke_in = aio_get_current();
    co_mutex_unlock(&h->m);
    atomic_store(&h->stage, 3);
}

static void start_holder_bh(void *opaque)
{
    co_enter(co_create(handoff_holder_co, opaque));
}

static void test_comutex_waiter_resumes_in_its_own_context(void **state)
{
    HandOff h = {0};
    IOThread *t = iothread_create("handoff", NULL, NULL);

    co_mutex_init(&h.m);
    aio_bh_schedule_oneshot(iothread_get_aio_context(t), start_holder_bh, &h);
    AIO_WAIT_WHILE(atomic_load(&h.stage) < 1);
    co_enter(co_create(handoff_waiter_co, &h));
    AIO_WAIT_WHILE(atomic_load(&h.stage) < 3);
    assert_ptr_equal(h.woke_in, aio_main_context());
    iothread_destroy(t);
}

/* ---- CoQueue ---------------------------------------------------------- */

typedef struct QueueUser {
    CoQueue *q;
    CoMutex *m;
    Trace *trace;
    int id;
    bool held_after_wait;
} QueueUser;

static void coroutine_fn queue_waiter_co(void *opaque)
{
    QueueUser *u = opaque;
    if (u->m) {
        co_mutex_lock(u->m);
    }
    co_queue_wait(u->q, u->m);
    trace_add(u->trace, u->id);
    if (u->m) {
        u->held_after_wait = co_mutex_held(u->m);
        co_mutex_unlock(u->m);
    }
}

static void test_coqueue_next_wakes_one_waiter_in_order(void **state)
{
    CoQueue q;
    Trace trace = {0};
    QueueUser users[3];

    co_queue_init(&q);
    assert_true(co_queue_empty(&q));
    assert_false(co_queue_next(&q));
    for (int i = 0; i < 3; i++) {
        users[i] = (QueueUser){.q = &q, .trace = &trace, .id = i};
        co_enter(co_create(queue_waiter_co, &users[i]));
    }
    assert_false(co_queue_empty(&q));
    assert_int_equal(trace.n, 0);
    assert_true(co_queue_next(&q));
    drain_main_loop();
    assert_int_equal(trace.n, 1);
    assert_int_equal(trace.order[0], 0);
    co_queue_restart_all(&q);
    drain_main_loop();
    assert_int_equal(trace.n, 3);
    assert_int_equal(trace.order[1], 1);
    assert_int_equal(trace.order[2], 2);
    assert_true(co_queue_empty(&q));
}

static void coroutine_fn queue_waker_co(void *opaque)
{
    QueueUser *u = opaque;
    co_mutex_lock(u->m);
    co_queue_restart_all(u->q);
    co_mutex_unlock(u->m);
}

static void test_coqueue_wait_releases_and_retakes_the_mutex(void **state)
{
    CoQueue q;
    CoMutex m;
    Trace trace = {0};
    QueueUser waiter, waker;

    co_queue_init(&q);
    co_mutex_init(&m);
    waiter = (QueueUser){.q = &q, .m = &m, .trace = &trace, .id = 7};
    waker = (QueueUser){.q = &q, .m = &m, .trace = &trace, .id = 8};
    co_enter(co_create(queue_waiter_co, &waiter));
    /* The waker could not take the mutex if the waiter still held it. */
    co_enter(co_create(queue_waker_co, &waker));
    drain_main_loop();
    assert_int_equal(trace.n, 1);
    assert_true(waiter.held_after_wait);
}

/* ---- CoRwlock --------------------------------------------------------- */

typedef enum { RW_READ, RW_WRITE, RW_UPGRADE, RW_DOWNGRADE } RwMode;

typedef struct RwUser {
    CoRwlock *l;
    RwMode mode;
    Trace *trace;
    int id;
    bool release;
    int *readers_inside, *writers_inside;
    int max_readers_seen, writers_seen_with_others;
} RwUser;

static void coroutine_fn rw_user_co(void *opaque)
{
    RwUser *u = opaque;
    bool write = u->mode == RW_WRITE || u->mode == RW_DOWNGRADE;

    if (write) {
        co_rwlock_wrlock(u->l);
    } else {
        co_rwlock_rdlock(u->l);
    }
    if (u->mode == RW_UPGRADE) {
        co_rwlock_upgrade(u->l);
        write = true;
    }
    trace_add(u->trace, u->id);
    if (write) {
        (*u->writers_inside)++;
        if (*u->readers_inside || *u->writers_inside > 1) {
            u->writers_seen_with_others++;
        }
    } else {
        (*u->readers_inside)++;
        u->max_readers_seen = MAX(u->max_readers_seen, *u->readers_inside);
    }
    while (!u->release) {
        co_yield();
    }
    if (u->mode == RW_DOWNGRADE) {
        (*u->writers_inside)--;
        co_rwlock_downgrade(u->l);
        (*u->readers_inside)++;
        write = false;
    }
    if (write) {
        (*u->writers_inside)--;
    } else {
        (*u->readers_inside)--;
    }
    co_rwlock_unlock(u->l);
}

typedef struct RwFixture {
    CoRwlock l;
    Trace trace;
    int readers, writers;
    RwUser users[6];
    Coroutine *cos[6];
} RwFixture;

static void rw_start(RwFixture *f, int i, RwMode mode)
{
    f->users[i] = (RwUser){.l = &f->l, .mode = mode, .trace = &f->trace, .id = i,
                           .readers_inside = &f->readers, .writers_inside = &f->writers};
    f->cos[i] = co_create(rw_user_co, &f->users[i]);
    co_enter(f->cos[i]);
}

static void rw_release(RwFixture *f, int i)
{
    f->users[i].release = true;
    if (co_entered(f->cos[i])) {
        co_enter(f->cos[i]);
    }
    drain_main_loop();
}

static void test_corwlock_readers_overlap(void **state)
{
    RwFixture f = {0};
    co_rwlock_init(&f.l);
    rw_start(&f, 0, RW_READ);
    rw_start(&f, 1, RW_READ);
    assert_int_equal(f.trace.n, 2);
    assert_int_equal(f.users[1].max_readers_seen, 2);
    rw_release(&f, 0);
    rw_release(&f, 1);
}

static void test_corwlock_writer_is_exclusive_and_not_starved(void **state)
{
    RwFixture f = {0};
    co_rwlock_init(&f.l);
    rw_start(&f, 0, RW_READ);
    rw_start(&f, 1, RW_WRITE);   /* waits for reader 0 */
    rw_start(&f, 2, RW_READ);    /* arrives after the writer: must wait behind it */
    assert_int_equal(f.trace.n, 1);
    rw_release(&f, 0);
    assert_int_equal(f.trace.n, 2);
    assert_int_equal(f.trace.order[1], 1);
    assert_int_equal(f.users[1].writers_seen_with_others, 0);
    rw_release(&f, 1);
    assert_int_equal(f.trace.n, 3);
    assert_int_equal(f.trace.order[2], 2);
    rw_release(&f, 2);
    /* Free again: a writer gets it at once. */
    rw_start(&f, 3, RW_WRITE);
    assert_int_equal(f.trace.n, 4);
    rw_release(&f, 3);
}

static void test_corwlock_upgrade_waits_for_other_readers(void **state)
{
    RwFixture f = {0};
    co_rwlock_init(&f.l);
    rw_start(&f, 0, RW_READ);
    rw_start(&f, 1, RW_UPGRADE); /* reads, then wants to write: must wait for reader 0 */
    assert_int_equal(f.trace.n, 0 + 1);
    assert_int_equal(f.trace.order[0], 0);
    rw_release(&f, 0);
    assert_int_equal(f.trace.n, 2);
    assert_int_equal(f.users[1].writers_seen_with_others, 0);
    rw_release(&f, 1);
    /* The only reader upgrades at once. */
    rw_start(&f, 2, RW_UPGRADE);
    assert_int_equal(f.trace.n, 3);
    rw_release(&f, 2);
}

static void test_corwlock_downgrade_lets_readers_in(void **state)
{
    RwFixture f = {0};
    co_rwlock_init(&f.l);
    rw_start(&f, 0, RW_DOWNGRADE);
    rw_start(&f, 1, RW_READ);
    rw_start(&f, 2, RW_READ);
    assert_int_equal(f.trace.n, 1);
    /* Release 0's wait: it downgrades (readers 1 and 2 enter), then unlocks. */
    f.users[0].release = true;
    co_enter(f.cos[0]);
    drain_main_loop();
    assert_int_equal(f.trace.n, 3);
    rw_release(&f, 1);
    rw_release(&f, 2);
    rw_start(&f, 3, RW_WRITE);
    assert_int_equal(f.trace.n, 4);
    rw_release(&f, 3);
}

/* ---- co_sleep_ns ------------------------------------------------------ */

typedef struct Sleeper {
    int64_t ns, slept;
    bool done;
} Sleeper;

static void coroutine_fn sleeper_co(void *opaque)
{
    Sleeper *s = opaque;
    int64_t start = aio_clock_ns();
    co_sleep_ns(s->ns);
    s->slept = aio_clock_ns() - start;
    s->done = true;
}

static void test_co_sleep_ns_sleeps_at_least_the_time_asked(void **state)
{
    Sleeper s = {.ns = 10 * 1000 * 1000};
    co_enter(co_create(sleeper_co, &s));
    assert_false(s.done);
    while (!s.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_true(s.slept >= s.ns);
    assert_true(s.slept < 2 * 1000 * 1000 * 1000LL);
}

static int setup(void **state)
{
    return aio_main_loop_init(NULL) ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comutex_wakes_in_fifo_order),
        cmocka_unit_test(test_comutex_trylock_fails_while_held),
        cmocka_unit_test(test_comutex_counter_has_no_lost_update_across_iothreads),
        cmocka_unit_test(test_comutex_waiter_resumes_in_its_own_context),
        cmocka_unit_test(test_coqueue_next_wakes_one_waiter_in_order),
        cmocka_unit_test(test_coqueue_wait_releases_and_retakes_the_mutex),
        cmocka_unit_test(test_corwlock_readers_overlap),
        cmocka_unit_test(test_corwlock_writer_is_exclusive_and_not_starved),
        cmocka_unit_test(test_corwlock_upgrade_waits_for_other_readers),
        cmocka_unit_test(test_corwlock_downgrade_lets_readers_in),
        cmocka_unit_test(test_co_sleep_ns_sleeps_at_least_the_time_asked),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
