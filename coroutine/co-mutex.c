/*
 * CoMutex: a FIFO coroutine mutex that works across threads.
 *
 * `lockers` counts the holder plus every coroutine that has committed to
 * waiting.  Uncontended lock and unlock are one compare-and-swap each.
 * A contended locker increments `lockers` and enqueues itself while
 * holding the spinlock, so an unlocker that sees lockers > 1 and then
 * takes the spinlock always finds that waiter queued.  Unlock hands the
 * mutex directly to the first waiter (which wakes up owning it, in its own
 * AioContext via aio_co_wake), so a stream of newcomers cannot overtake
 * the queue.
 */
#include "coroutine/co-waitlist.h"

#include <glib.h>

#include "aio/aio.h"

void co_mutex_init(CoMutex *m)
{
    *m = (CoMutex){0};
}

/* One compare-and-swap: takes the mutex when nobody holds or wants it. */
static inline bool co_mutex_try_fast(CoMutex *m, Coroutine *self)
{
    unsigned expected = 0;
    if (atomic_compare_exchange_strong_explicit(&m->lockers, &expected, 1, memory_order_acquire,
                                                memory_order_relaxed)) {
        atomic_store_explicit(&m->holder, self, memory_order_relaxed);
        co_inc_locks(self);
        return true;
    }
    return false;
}

bool coroutine_fn co_mutex_trylock(CoMutex *m)
{
    return co_mutex_try_fast(m, co_self());
}

void coroutine_fn co_mutex_lock(CoMutex *m)
{
    Coroutine *self = co_self();

    g_assert(self);
    if (co_mutex_try_fast(m, self)) {
        return;
    }

    co_spin_lock(&m->spin);
    if (atomic_fetch_add_explicit(&m->lockers, 1, memory_order_acquire) == 0) {
        /* Released between our failed CAS and here: it is ours. */
        co_spin_unlock(&m->spin);
        atomic_store_explicit(&m->holder, self, memory_order_relaxed);
        co_inc_locks(self);
        return;
    }
    co_waitlist_push(&m->waiters, self);
    co_spin_unlock(&m->spin);

    co_yield();
    /* The unlocker handed us the mutex and set holder. */
    g_assert(atomic_load_explicit(&m->holder, memory_order_relaxed) == self);
    co_inc_locks(self);
}

void coroutine_fn co_mutex_unlock(CoMutex *m)
{
    Coroutine *self = co_self();
    unsigned expected = 1;

    g_assert(atomic_load_explicit(&m->holder, memory_order_relaxed) == self);
    co_dec_locks(self);
    atomic_store_explicit(&m->holder, NULL, memory_order_relaxed);
    if (atomic_compare_exchange_strong_explicit(&m->lockers, &expected, 0, memory_order_release,
                                                memory_order_relaxed)) {
        return;
    }

    /* Someone counted themselves in: they are queued by now (see header). */
    co_spin_lock(&m->spin);
    Coroutine *next = co_waitlist_pop(&m->waiters);
    g_assert(next);
    atomic_store_explicit(&m->holder, next, memory_order_relaxed);
    atomic_fetch_sub_explicit(&m->lockers, 1, memory_order_release);
    co_spin_unlock(&m->spin);
    aio_co_wake(next);
}

bool co_mutex_held(CoMutex *m)
{
    Coroutine *self = co_self();
    return self && atomic_load_explicit(&m->holder, memory_order_relaxed) == self;
}
