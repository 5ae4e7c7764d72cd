/*
 * CoRwlock: a reader/writer lock for coroutines, fair by arrival order.
 *
 * A newcomer only takes the lock at once when nobody is queued, so a
 * waiting writer holds back every reader that arrives after it: writers
 * cannot starve.  Whenever the lock is released (or downgraded), grants go
 * to the head of the queue: one writer, or every consecutive reader.
 * Granted waiters own the lock when they wake up.  Waiter records live on
 * the waiting coroutine's stack, which stays valid until it is woken.
 * All state is guarded by `spin`, never held across a yield.
 */
#include "coroutine/co-waitlist.h"

#include <glib.h>

#include "aio/aio.h"

struct CoRwWaiter {
    Coroutine *co;
    bool write;
    CoRwWaiter *next;
};

void co_rwlock_init(CoRwlock *l)
{
    *l = (CoRwlock){0};
}

static void co_rwlock_enqueue(CoRwlock *l, CoRwWaiter *w, bool at_head)
{
    if (at_head) {
        w->next = l->head;
        l->head = w;
        if (!l->tail) {
            l->tail = w;
        }
    } else {
        w->next = NULL;
        if (l->tail) {
            l->tail->next = w;
        } else {
            l->head = w;
        }
        l->tail = w;
    }
}

/*
 * Grants the lock to whoever can have it from the head of the queue.
 * Returns the granted coroutines linked by queue_next, to be woken after
 * the spinlock is dropped.  Caller holds l->spin.
 */
static Coroutine *co_rwlock_grant_locked(CoRwlock *l)
{
    Coroutine *first = NULL, **link = &first;

    while (l->head && !l->writer) {
        CoRwWaiter *w = l->head;
        if (w->write) {
            if (l->readers > 0) {
                break;
            }
            l->writer = true;
        } else {
            l->readers++;
        }
        l->head = w->next;
        if (!l->head) {
            l->tail = NULL;
        }
        *link = w->co;
        w->co->queue_next = NULL;
        link = &w->co->queue_next;
    }
    return first;
}

/* Queues the caller (spinlock held on entry, dropped here) and sleeps until granted. */
static void coroutine_fn co_rwlock_wait_unlock(CoRwlock *l, bool write, bool at_head)
{
    CoRwWaiter w = {.co = co_self(), .write = write};

    co_rwlock_enqueue(l, &w, at_head);
    co_spin_unlock(&l->spin);
    co_yield();
}

void coroutine_fn co_rwlock_rdlock(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    if (!l->writer && !l->head) {
        l->readers++;
        co_spin_unlock(&l->spin);
    } else {
        co_rwlock_wait_unlock(l, false, false);
    }
    co_inc_locks(co_self());
}

void coroutine_fn co_rwlock_wrlock(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    if (!l->writer && l->readers == 0 && !l->head) {
        l->writer = true;
        co_spin_unlock(&l->spin);
    } else {
        co_rwlock_wait_unlock(l, true, false);
    }
    co_inc_locks(co_self());
}

void coroutine_fn co_rwlock_unlock(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    if (l->writer) {
        l->writer = false;
    } else {
        g_assert(l->readers > 0);
        l->readers--;
    }
    Coroutine *wake = co_rwlock_grant_locked(l);
    co_spin_unlock(&l->spin);
    co_dec_locks(co_self());
    co_waitlist_wake_all(wake);
}

/*
 * The only reader becomes the writer at once.  Otherwise the caller gives
 * up its read lock and waits at the head of the queue, so it is the next
 * writer once the other readers leave.
 */
void coroutine_fn co_rwlock_upgrade(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    g_assert(!l->writer && l->readers > 0);
    if (l->readers == 1) {
        l->readers = 0;
        l->writer = true;
        co_spin_unlock(&l->spin);
        return;
    }
    l->readers--;
    co_rwlock_wait_unlock(l, true, true);
}

void coroutine_fn co_rwlock_downgrade(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    g_assert(l->writer);
    l->writer = false;
    l->readers = 1;
    Coroutine *wake = co_rwlock_grant_locked(l);
    co_spin_unlock(&l->spin);
    co_waitlist_wake_all(wake);
}
