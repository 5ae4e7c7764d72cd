/*
 * Coroutine internals shared by coroutine/ and aio/ (waking, scheduling,
 * lock bookkeeping).  Nothing outside those two folders includes this.
 *
 * Field ownership: everything except `scheduled` and `sched_next` is only
 * touched by the thread currently running or entering the coroutine.
 * `scheduled` is set atomically by whoever schedules it (any thread) and
 * cleared by the home context before entering it.
 */
#ifndef STRATA_COROUTINE_INT_H
#define STRATA_COROUTINE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "coroutine/coroutine.h"
#include "coroutine/switch.h"

typedef enum CoroutineState {
    CO_STATE_READY,      /* created or taken from the pool, never entered */
    CO_STATE_RUNNING,    /* currently executing (on some thread's stack) */
    CO_STATE_ENTERED,    /* has entered another coroutine and waits for it */
    CO_STATE_YIELDED,    /* suspended in co_yield() */
    CO_STATE_TERMINATED, /* entry returned; about to go back to the pool */
} CoroutineState;

struct Coroutine {
    CoroutineSwitch sw;       /* backend context (stack, registers, sanitizer state) */
    CoroutineEntry *entry;
    void *opaque;
    Coroutine *caller;        /* who entered us; NULL when running from the thread stack */
    AioContext *ctx;          /* home context */
    CoroutineState state;
    unsigned locks_held;      /* CoMutex/CoRwlock held; must be 0 at termination */

    /*
     * Coroutines woken (same thread) while this one runs; they are entered
     * once this one yields or terminates, which bounds recursion depth.
     */
    Coroutine *wakeup_head, **wakeup_tail;
    Coroutine *wakeup_next;
    bool wakeup_queued;       /* on some coroutine's wakeup queue, not yet entered */

    /* Intrusive link for CoMutex / CoQueue / CoRwlock waiter lists. */
    Coroutine *queue_next;

    /* Cross-thread scheduling (aio_co_schedule): name of the scheduler, link. */
    _Atomic(const char *) scheduled;
    Coroutine *_Atomic sched_next;

    Coroutine *pool_next;     /* free-pool link */
};

/*
 * Enters @co with @ctx as home; used by co_enter and the aio scheduling BH.
 * Runs the wakeup queue afterwards.
 */
void co_enter_ctx(AioContext *ctx, Coroutine *co);

/*
 * Queues @co to be entered (in this thread) after the current coroutine
 * yields; outside coroutine context, enters it at once.
 */
void co_wake_same_thread(Coroutine *co);

/* Bookkeeping for lock ownership assertions. */
static inline void co_inc_locks(Coroutine *co)
{
    co->locks_held++;
}

static inline void co_dec_locks(Coroutine *co)
{
    co->locks_held--;
}

#endif /* STRATA_COROUTINE_INT_H */
