/*
 * Graph lock: a reader/writer lock tuned for many cheap readers (requests
 * in any thread) and one rare writer (the main loop changing the graph).
 *
 * Design: each thread that ever takes the reader side owns a GraphReader
 * counter, registered in a global list.  A reader increments its own
 * counter, then checks has_writer; the writer sets has_writer, then sums
 * all counters.  Both use sequentially consistent operations, so at least
 * one of them sees the other (the classic store-then-load handshake):
 * either the reader backs off, or the writer counts it and waits.
 *
 * A coroutine may take the lock in one thread and release it in another
 * (after aio_co_schedule): counters are signed and only their sum means
 * anything.  When a thread exits, its counter is folded into orphan_count.
 *
 * Locks: readers_lock guards the reader list (registration and the
 * writer's sum); wait_lock guards the list of coroutines waiting for the
 * writer to finish.  Neither is held across a yield.
 */
#include "block/graph-lock.h"

#include <pthread.h>
#include <stdatomic.h>

#include "aio/aio.h"
#include "block/block-common.h"
#include "block/shard.h"

/* Each on its own cache line: the owner thread writes it twice per request. */
typedef struct GraphReader {
    _Atomic long count;
    struct GraphReader *next;
} __attribute__((aligned(BDRV_CACHE_LINE))) GraphReader;

static pthread_mutex_t readers_lock = PTHREAD_MUTEX_INITIALIZER;
static GraphReader *readers_head;
static _Atomic long orphan_count;

/* Read by every request: kept apart from the variables written at registration. */
static _Atomic bool has_writer __attribute__((aligned(BDRV_CACHE_LINE)));
static bool writer_active; /* main thread only */

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static GSList *waiting_readers; /* Coroutine *, under wait_lock */

static pthread_once_t reader_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t reader_key;
static __thread GraphReader *tl_reader;

/* Thread exit: keep the thread's (possibly nonzero) count in the sum. */
static void reader_thread_exit(void *opaque)
{
    GraphReader *r = opaque;
    pthread_mutex_lock(&readers_lock);
    for (GraphReader **p = &readers_head; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    atomic_fetch_add(&orphan_count, atomic_load(&r->count));
    pthread_mutex_unlock(&readers_lock);
    g_aligned_free(r);
}

static void reader_key_init(void)
{
    pthread_key_create(&reader_key, reader_thread_exit);
}

static GraphReader *reader_self(void)
{
    GraphReader *r = tl_reader;
    if (G_LIKELY(r)) {
        return r;
    }
    pthread_once(&reader_key_once, reader_key_init);
    r = g_aligned_alloc0(1, sizeof(GraphReader), _Alignof(GraphReader));
    pthread_mutex_lock(&readers_lock);
    r->next = readers_head;
    readers_head = r;
    pthread_mutex_unlock(&readers_lock);
    pthread_setspecific(reader_key, r);
    tl_reader = r;
    return r;
}

long bdrv_graph_reader_count(void)
{
    pthread_mutex_lock(&readers_lock);
    long sum = atomic_load(&orphan_count);
    for (GraphReader *r = readers_head; r; r = r->next) {
        sum += atomic_load(&r->count);
    }
    pthread_mutex_unlock(&readers_lock);
    return sum;
}

/* Yields until the writer has finished, unless it already has. */
static void coroutine_fn wait_for_writer(void)
{
    pthread_mutex_lock(&wait_lock);
    if (!atomic_load(&has_writer)) {
        pthread_mutex_unlock(&wait_lock);
        return;
    }
    waiting_readers = g_slist_prepend(waiting_readers, co_self());
    pthread_mutex_unlock(&wait_lock);
    /* bdrv_graph_wrunlock wakes us; its aio_co_wake runs only after this yield. */
    co_yield();
}

void coroutine_fn bdrv_graph_co_rdlock(void)
{
    GraphReader *r = reader_self();

    g_assert(co_in_coroutine());
    for (;;) {
        atomic_fetch_add(&r->count, 1);
        if (G_LIKELY(!atomic_load(&has_writer))) {
            return;
        }
        /*
         * The writer only ever runs in the main thread and never polls once
         * it holds the lock, so a main-thread reader running now means the
         * writer is still waiting: it will count us and wait a bit longer.
         */
        if (aio_in_main_thread()) {
            g_assert(!writer_active);
            return;
        }
        atomic_fetch_sub(&r->count, 1);
        aio_wait_kick();
        wait_for_writer();
    }
}

void coroutine_fn bdrv_graph_co_rdunlock(void)
{
    GraphReader *r = reader_self();
    atomic_fetch_sub(&r->count, 1);
    if (atomic_load(&has_writer)) {
        aio_wait_kick();
    }
}

void bdrv_graph_rdlock_main_loop(void)
{
    GLOBAL_STATE_CODE();
    g_assert(!co_in_coroutine());
}

void bdrv_graph_rdunlock_main_loop(void)
{
    GLOBAL_STATE_CODE();
    g_assert(!co_in_coroutine());
}

void bdrv_graph_wrlock(void)
{
    GLOBAL_STATE_CODE();
    g_assert(!co_in_coroutine());
    g_assert(!writer_active);

    atomic_store(&has_writer, true);
    AIO_WAIT_WHILE(bdrv_graph_reader_count() > 0);
    writer_active = true;
}

void bdrv_graph_wrunlock(void)
{
    GLOBAL_STATE_CODE();
    g_assert(writer_active);
    writer_active = false;

    pthread_mutex_lock(&wait_lock);
    atomic_store(&has_writer, false);
    GSList *waiters = waiting_readers;
    waiting_readers = NULL;
    pthread_mutex_unlock(&wait_lock);

    for (GSList *l = waiters; l; l = l->next) {
        aio_co_wake(l->data);
    }
    g_slist_free(waiters);
}

bool bdrv_graph_wrlock_held(void)
{
    return aio_in_main_thread() && writer_active;
}
