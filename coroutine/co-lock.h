/*
 * Coroutine locks: CoMutex, CoQueue, CoRwlock, and co_sleep_ns.
 *
 * All of them are safe when the holder and the waiters run in different
 * threads: a waiter is always resumed in its own home AioContext through
 * aio_co_wake().  Each keeps its waiters in a FIFO guarded by a short
 * spinlock that is never held across a yield.
 */
#ifndef STRATA_CO_LOCK_H
#define STRATA_CO_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "coroutine/coroutine.h"

static inline void co_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

/* A test-and-test-and-set spinlock for very short critical sections. */
typedef struct CoSpin {
    atomic_bool locked;
} CoSpin;

static inline void co_spin_lock(CoSpin *s)
{
    while (atomic_exchange_explicit(&s->locked, true, memory_order_acquire)) {
        while (atomic_load_explicit(&s->locked, memory_order_relaxed)) {
            co_cpu_relax();
        }
    }
}

static inline void co_spin_unlock(CoSpin *s)
{
    atomic_store_explicit(&s->locked, false, memory_order_release);
}

/* FIFO of waiting coroutines, linked through Coroutine.queue_next. */
typedef struct CoWaitList {
    Coroutine *head, *tail;
} CoWaitList;

/*
 * CoMutex: FIFO, with direct hand-off (unlock gives the mutex to the first
 * waiter, which wakes up owning it).  Zero-initialised is unlocked.
 *
 * `lockers` counts the holder plus every waiter; the uncontended paths are
 * a single compare-and-swap each.
 */
typedef struct CoMutex {
    atomic_uint lockers;
    CoSpin spin;          /* guards waiters */
    CoWaitList waiters;
    Coroutine *_Atomic holder; /* for assertions; written only by the owner or on hand-off */
} CoMutex;

void co_mutex_init(CoMutex *m);
void coroutine_fn co_mutex_lock(CoMutex *m);
void coroutine_fn co_mutex_unlock(CoMutex *m);
/* Takes the mutex if free; never yields. */
bool coroutine_fn co_mutex_trylock(CoMutex *m);
/* True if held by the calling coroutine (for assertions). */
bool co_mutex_held(CoMutex *m);

/*
 * CoQueue: coroutines waiting for a condition.  Waiting with a CoMutex
 * releases it while asleep and retakes it before returning; wakers should
 * hold the same mutex when the condition is shared across threads.
 */
typedef struct CoQueue {
    CoSpin spin;
    CoWaitList waiters;
} CoQueue;

void co_queue_init(CoQueue *q);
/* @m may be NULL. */
void coroutine_fn co_queue_wait(CoQueue *q, CoMutex *m);
/* Wakes the first waiter; returns false if there was none. */
bool co_queue_next(CoQueue *q);
/* Wakes every waiter. */
void co_queue_restart_all(CoQueue *q);
bool co_queue_empty(CoQueue *q);

/*
 * CoRwlock: many readers or one writer, granted in FIFO order so that a
 * waiting writer holds back later readers (no writer starvation).
 */
typedef struct CoRwWaiter CoRwWaiter; /* lives on the waiting coroutine's stack */

typedef struct CoRwlock {
    CoSpin spin;                /* guards everything below */
    int readers;                /* holders in read mode */
    bool writer;                /* held in write mode */
    CoRwWaiter *head, *tail;    /* FIFO of waiters, each wanting read or write */
} CoRwlock;

void co_rwlock_init(CoRwlock *l);
void coroutine_fn co_rwlock_rdlock(CoRwlock *l);
void coroutine_fn co_rwlock_wrlock(CoRwlock *l);
/* Releases whichever mode the caller holds. */
void coroutine_fn co_rwlock_unlock(CoRwlock *l);
/* Read lock -> write lock; waits until the caller is the only holder. */
void coroutine_fn co_rwlock_upgrade(CoRwlock *l);
/* Write lock -> read lock; lets queued readers in. */
void coroutine_fn co_rwlock_downgrade(CoRwlock *l);

/* Sleeps at least @ns nanoseconds on a timer of the current context. */
void coroutine_fn co_sleep_ns(int64_t ns);

#endif /* STRATA_CO_LOCK_H */
