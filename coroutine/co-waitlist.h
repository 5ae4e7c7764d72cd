/*
 * Intrusive FIFO of coroutines linked through Coroutine.queue_next, shared
 * by CoMutex and CoQueue.  No locking of its own: callers hold their
 * lock's spinlock.
 */
#ifndef STRATA_CO_WAITLIST_H
#define STRATA_CO_WAITLIST_H

#include "coroutine/co-lock.h"
#include "coroutine/coroutine-int.h"

static inline void co_waitlist_push(CoWaitList *l, Coroutine *co)
{
    co->queue_next = NULL;
    if (l->tail) {
        l->tail->queue_next = co;
    } else {
        l->head = co;
    }
    l->tail = co;
}

static inline Coroutine *co_waitlist_pop(CoWaitList *l)
{
    Coroutine *co = l->head;
    if (co) {
        l->head = co->queue_next;
        if (!l->head) {
            l->tail = NULL;
        }
        co->queue_next = NULL;
    }
    return co;
}

/* Detaches the whole list; walk it with queue_next. */
static inline Coroutine *co_waitlist_take_all(CoWaitList *l)
{
    Coroutine *co = l->head;
    l->head = l->tail = NULL;
    return co;
}

/*
 * Wakes every coroutine of a detached list.  The next pointer is read
 * before each wake: once woken (possibly in another thread) a coroutine
 * may run on and reuse its queue_next.
 */
void co_waitlist_wake_all(Coroutine *first);

#endif /* STRATA_CO_WAITLIST_H */
