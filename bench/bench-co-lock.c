/*
 * Benchmarks of the coroutine locks: uncontended CoMutex lock+unlock, and
 * CoMutex hand-off between coroutines in two IOThreads.  Prints one
 * "name value" line per figure (medians of several runs) and the target.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "bench/bench-util.h"
#include "coroutine/co-lock.h"

enum { UNCONTENDED_ITERS = 2000000, HANDOFF_ITERS = 20000, RUNS = 7 };

typedef struct Uncontended {
    CoMutex m;
    double ns;
} Uncontended;

static void coroutine_fn uncontended_co(void *opaque)
{
    Uncontended *u = opaque;
    int64_t start = aio_clock_ns();
    for (int i = 0; i < UNCONTENDED_ITERS; i++) {
        co_mutex_lock(&u->m);
        co_mutex_unlock(&u->m);
    }
    u->ns = (double)(aio_clock_ns() - start) / UNCONTENDED_ITERS;
}

typedef struct HandOff {
    CoMutex m;
    long counter;
    atomic_int ready;
    atomic_int done;
} HandOff;

static void coroutine_fn handoff_co(void *opaque)
{
    HandOff *h = opaque;
    /* Start together, so the two threads really contend from the first lock. */
    atomic_fetch_add(&h->ready, 1);
    while (atomic_load(&h->ready) < 2) {
        co_cpu_relax();
    }
    for (int i = 0; i < HANDOFF_ITERS; i++) {
        co_mutex_lock(&h->m);
        h->counter++;
        co_mutex_unlock(&h->m);
    }
    atomic_fetch_add(&h->done, 1);
    aio_wait_kick();
}

static void start_handoff_bh(void *opaque)
{
    co_enter(co_create(handoff_co, opaque));
}

/* Mean time per lock acquisition when two IOThreads fight over one mutex. */
static double handoff_run(IOThread *a, IOThread *b)
{
    HandOff h = {0};
    int64_t start = aio_clock_ns();
    aio_bh_schedule_oneshot(iothread_get_aio_context(a), start_handoff_bh, &h);
    aio_bh_schedule_oneshot(iothread_get_aio_context(b), start_handoff_bh, &h);
    AIO_WAIT_WHILE(atomic_load(&h.done) < 2);
    if (h.counter != 2L * HANDOFF_ITERS) {
        fprintf(stderr, "lost update: %ld\n", h.counter);
        exit(1);
    }
    return (double)(aio_clock_ns() - start) / (2.0 * HANDOFF_ITERS);
}

int main(void)
{
    double unc[RUNS], hand[RUNS];

    if (!aio_main_loop_init(NULL)) {
        return 1;
    }
    for (int r = 0; r < RUNS; r++) {
        Uncontended u = {0};
        co_enter(co_create(uncontended_co, &u));
        unc[r] = u.ns;
    }
    IOThread *a = iothread_create("bench-a", NULL, NULL);
    IOThread *b = iothread_create("bench-b", NULL, NULL);
    for (int r = 0; r < RUNS; r++) {
        hand[r] = handoff_run(a, b);
    }
    iothread_destroy(a);
    iothread_destroy(b);

    printf("comutex.uncontended_lock_unlock_ns %.1f   (target <= 20)\n", bench_median(unc, RUNS));
    printf("comutex.two_iothreads_per_lock_ns %.1f\n", bench_median(hand, RUNS));
    return 0;
}
