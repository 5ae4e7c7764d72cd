/*
 * CoQueue: coroutines waiting for a condition, woken in FIFO order.
 *
 * The waiter list has its own spinlock, so wakers in any thread may call
 * co_queue_next() without holding the caller's CoMutex; they should still
 * hold it whenever the condition itself is shared, or a wake-up can slip
 * in between the waiter testing the condition and queueing.  A wake from
 * another thread can never resume a waiter before it has yielded: it goes
 * through a bottom half of the waiter's own thread (aio_co_wake).
 */
#include "coroutine/co-waitlist.h"

#include <glib.h>

#include "aio/aio.h"

void co_waitlist_wake_all(Coroutine *co)
{
    while (co) {
        Coroutine *next = co->queue_next;
        co->queue_next = NULL;
        aio_co_wake(co);
        co = next;
    }
}

void co_queue_init(CoQueue *q)
{
    *q = (CoQueue){0};
}

void coroutine_fn co_queue_wait(CoQueue *q, CoMutex *m)
{
    Coroutine *self = co_self();

    g_assert(self);
    co_spin_lock(&q->spin);
    co_waitlist_push(&q->waiters, self);
    co_spin_unlock(&q->spin);

    if (m) {
        co_mutex_unlock(m);
    }
    co_yield();
    if (m) {
        co_mutex_lock(m);
    }
}

bool co_queue_next(CoQueue *q)
{
    co_spin_lock(&q->spin);
    Coroutine *co = co_waitlist_pop(&q->waiters);
    co_spin_unlock(&q->spin);
    if (!co) {
        return false;
    }
    aio_co_wake(co);
    return true;
}

void co_queue_restart_all(CoQueue *q)
{
    co_spin_lock(&q->spin);
    Coroutine *first = co_waitlist_take_all(&q->waiters);
    co_spin_unlock(&q->spin);
    co_waitlist_wake_all(first);
}

bool co_queue_empty(CoQueue *q)
{
    co_spin_lock(&q->spin);
    bool empty = q->waiters.head == NULL;
    co_spin_unlock(&q->spin);
    return empty;
}
