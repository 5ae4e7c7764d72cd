/*
 * strata-demo: shows the foundation at work, end to end.
 *
 * Two IOThreads and the main loop each run a batch of coroutines.  Every
 * coroutine hashes blocks of data in its context's thread pool, then adds
 * its result to one shared total under a CoMutex, hopping between event
 * loops on the way.  The main loop waits with AIO_WAIT_WHILE and prints
 * what happened, checking the total against a single-threaded computation.
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "aio/thread-pool.h"
#include "coroutine/co-lock.h"

enum { CONTEXTS = 3, COS_PER_CONTEXT = 16, BLOCKS_PER_CO = 32, BLOCK_SIZE = 4096 };

typedef struct Demo {
    AioContext *ctx[CONTEXTS];
    CoMutex lock;
    uint64_t total;       /* protected by lock */
    uint64_t hops;        /* protected by lock: moves between contexts */
    atomic_int finished;
} Demo;

typedef struct Work {
    Demo *demo;
    int index;
    uint64_t block;
    uint64_t sum;
} Work;

/* Deterministic block content, so the main thread can recompute the total. */
static uint64_t block_sum(uint64_t block)
{
    uint32_t state = (uint32_t)block * 2654435761u + 1;
    uint64_t sum = 0;
    for (int i = 0; i < BLOCK_SIZE; i++) {
        state = state * 1103515245u + 12345u;
        sum += (state >> 16) & 0xff;
    }
    return sum;
}

/* Runs in a thread-pool worker: the "blocking" part of a request. */
static int hash_block_worker(void *opaque)
{
    Work *w = opaque;
    w->sum = block_sum(w->block);
    return 0;
}

static void coroutine_fn demo_co(void *opaque)
{
    Work *w = opaque;
    Demo *d = w->demo;
    uint64_t local = 0;

    for (int b = 0; b < BLOCKS_PER_CO; b++) {
        w->block = (uint64_t)w->index * BLOCKS_PER_CO + b;
        thread_pool_co_submit(aio_get_thread_pool(aio_get_current()), hash_block_worker, w);
        local += w->sum;
    }
    /* Visit another context before publishing, as a request moving between loops would. */
    aio_co_reschedule_self(d->ctx[(w->index + 1) % CONTEXTS]);
    co_mutex_lock(&d->lock);
    d->total += local;
    d->hops++;
    co_mutex_unlock(&d->lock);
    g_free(w);
    atomic_fetch_add(&d->finished, 1);
    aio_wait_kick();
}

static void start_batch_bh(void *opaque)
{
    Work *first = opaque;
    for (int i = 0; i < COS_PER_CONTEXT; i++) {
        Work *w = g_new0(Work, 1);
        *w = *first;
        w->index = first->index + i;
        co_enter(co_create(demo_co, w));
    }
    g_free(first);
}

int main(void)
{
    g_autoptr(GError) err = NULL;
    Demo d = {0};
    IOThread *threads[CONTEXTS - 1];

    if (!aio_main_loop_init(&err)) {
        fprintf(stderr, "strata-demo: %s\n", err->message);
        return 1;
    }
    d.ctx[0] = aio_main_context();
    for (int i = 1; i < CONTEXTS; i++) {
        g_autofree char *id = g_strdup_printf("demo%d", i);
        threads[i - 1] = iothread_create(id, NULL, &err);
        if (!threads[i - 1]) {
            fprintf(stderr, "strata-demo: %s\n", err->message);
            return 1;
        }
        d.ctx[i] = iothread_get_aio_context(threads[i - 1]);
    }
    co_mutex_init(&d.lock);

    int64_t start = aio_clock_ns();
    for (int i = 0; i < CONTEXTS; i++) {
        Work *batch = g_new0(Work, 1);
        *batch = (Work){.demo = &d, .index = i * COS_PER_CONTEXT};
        aio_bh_schedule_oneshot(d.ctx[i], start_batch_bh, batch);
    }
    AIO_WAIT_WHILE(atomic_load(&d.finished) < CONTEXTS * COS_PER_CONTEXT);
    int64_t elapsed = aio_clock_ns() - start;

    uint64_t expect = 0;
    for (uint64_t b = 0; b < (uint64_t)CONTEXTS * COS_PER_CONTEXT * BLOCKS_PER_CO; b++) {
        expect += block_sum(b);
    }
    GList *infos = iothread_query_all();
    for (GList *l = infos; l; l = l->next) {
        IOThreadInfo *info = l->data;
        printf("iothread %s: tid %d, poll-max-ns %" G_GINT64_FORMAT "\n", info->id,
               info->thread_id, info->poll_max_ns);
    }
    iothread_info_list_free(infos);
    for (int i = 0; i < CONTEXTS - 1; i++) {
        iothread_destroy(threads[i]);
    }

    printf("%d coroutines in %d event loops hashed %d blocks in worker threads in %.1f ms\n",
           CONTEXTS * COS_PER_CONTEXT, CONTEXTS, CONTEXTS * COS_PER_CONTEXT * BLOCKS_PER_CO,
           elapsed / 1e6);
    printf("cross-context hops: %" PRIu64 ", total %" PRIu64 " (expected %" PRIu64 "): %s\n",
           d.hops, d.total, expect, d.total == expect ? "OK" : "MISMATCH");
    return d.total == expect ? 0 : 1;
}
