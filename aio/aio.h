/*
 * AioContext: one event loop per I/O thread.
 *
 * Every thread that does block I/O runs an AioContext: the main thread runs
 * the main context, each IOThread its own.  A context offers file
 * descriptor handlers (epoll), event notifiers (eventfd), bottom halves,
 * timers and aio_poll(), plus adaptive busy-polling.  A thread-local
 * "current context" tells code where it runs.
 *
 * Calling rules (see docs/design/event-loops.md):
 *  - aio_bh_schedule(), aio_bh_schedule_oneshot(), aio_notify(),
 *    aio_co_schedule(), aio_co_wake(), aio_timer_mod()/del() and the
 *    parameter setters may be called from any thread.
 *  - aio_set_fd_handler(), aio_set_event_notifier(), aio_poll() and
 *    aio_bh_delete() only from the context's home thread (or before the
 *    context is run by any thread).  To act on another context, schedule a
 *    one-shot bottom half there.
 *  - aio_poll() makes @ctx the calling thread's current context while it
 *    runs, so callbacks see aio_get_current() == their context.
 *
 * Errors (GError) use the G_FILE_ERROR domain: G_FILE_ERROR_INVAL for a
 * parameter out of range (the message names the parameter), codes from
 * g_file_error_from_errno() for system failures.
 */
#ifndef STRATA_AIO_H
#define STRATA_AIO_H

#include <glib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "coroutine/coroutine.h"

typedef struct AioContext AioContext;
typedef struct AioBH AioBH;
typedef struct AioTimer AioTimer;

typedef void IOHandler(void *opaque);
/* A poll callback returns true when it sees work ready (no syscall allowed). */
typedef bool AioPollFn(void *opaque);
typedef void AioBHFunc(void *opaque);
typedef void AioTimerFunc(void *opaque);

/* --- event notifiers (eventfd) --- */
/* The eventfd is non-blocking; io_poll callbacks of a notifier get it as their opaque. */
typedef struct EventNotifier {
    int fd;
} EventNotifier;

typedef void EventNotifierHandler(EventNotifier *e);

/* Returns -errno on failure. */
int event_notifier_init(EventNotifier *e, bool active);
void event_notifier_cleanup(EventNotifier *e);
/* Makes the notifier readable; safe from any thread. */
int event_notifier_set(EventNotifier *e);
/* Reads and clears; returns true if it was set. */
bool event_notifier_test_and_clear(EventNotifier *e);

/* --- lifetime and thread binding --- */

/* Creates a new context (not bound to any thread yet). */
AioContext *aio_context_new(GError **errp);
void aio_context_ref(AioContext *ctx);
void aio_context_unref(AioContext *ctx);

/*
 * Creates the main context and binds it to the calling thread, which
 * becomes the main thread.  Idempotent when called again from that thread.
 */
bool aio_main_loop_init(GError **errp);
/* The main context; aio_main_loop_init() must have run. */
AioContext *aio_main_context(void);
/* True when the calling thread is the main thread. */
bool aio_in_main_thread(void);

/* The calling thread's context, or NULL for threads that run none. */
AioContext *aio_get_current(void);
/* Binds @ctx as the calling thread's current context (used by IOThreads). */
void aio_set_current(AioContext *ctx);

/* --- handlers --- */

/*
 * Registers, changes or (all callbacks NULL) removes the handlers of @fd.
 * @io_poll, when given, is spun during adaptive polling; @io_poll_ready
 * runs when it returned true.  Home thread only.
 */
void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read, IOHandler *io_write,
                        AioPollFn *io_poll, IOHandler *io_poll_ready, void *opaque);

/* Same for an event notifier: @handler runs when it is set (and cleared by it). */
void aio_set_event_notifier(AioContext *ctx, EventNotifier *e, EventNotifierHandler *handler,
                            AioPollFn *io_poll, EventNotifierHandler *io_poll_ready);

/* --- bottom halves --- */

AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque);
/* Lock-free, from any thread.  Scheduling twice before it runs runs it once. */
void aio_bh_schedule(AioBH *bh);
/* Clears a pending schedule; the callback will not run unless scheduled again. */
void aio_bh_cancel(AioBH *bh);
/* Home thread only; a pending BH is freed without running. */
void aio_bh_delete(AioBH *bh);
/* Allocates, schedules and frees after running: from any thread. */
void aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque);

/* --- timers (CLOCK_MONOTONIC, nanoseconds) --- */

int64_t aio_clock_ns(void);
AioTimer *aio_timer_new(AioContext *ctx, AioTimerFunc *cb, void *opaque);
/* Arms (or re-arms) the timer for the absolute time @expire_ns.  Any thread. */
void aio_timer_mod(AioTimer *t, int64_t expire_ns);
/* Disarms.  Any thread; the callback may still be running in the home thread. */
void aio_timer_del(AioTimer *t);
bool aio_timer_pending(AioTimer *t);
/* Disarms and frees; home thread only. */
void aio_timer_free(AioTimer *t);

/* --- running --- */

/* Wakes the context's thread if it sleeps in aio_poll().  Any thread. */
void aio_notify(AioContext *ctx);

/*
 * Runs one iteration: ready handlers, bottom halves, expired timers.
 * With @blocking, waits (after busy-polling for up to the current poll
 * window) until something happens.  Returns true when a callback other
 * than the internal notifier ran.  Home thread only; never from a
 * coroutine.
 */
bool aio_poll(AioContext *ctx, bool blocking);

/*
 * Adaptive polling parameters (as QEMU's IOThread properties): the poll
 * window grows by @grow (0 = default 2) up to @max_ns and shrinks by
 * @shrink (0 = default 2, i.e. halving).  @max_ns = 0 disables polling.
 * Values must be in [0, INT64_MAX]; errors name the parameter.
 */
bool aio_context_set_poll_params(AioContext *ctx, int64_t max_ns, int64_t grow, int64_t shrink,
                                 GError **errp);
void aio_context_get_poll_params(AioContext *ctx, int64_t *max_ns, int64_t *grow, int64_t *shrink);
/* Current poll window in ns (for tests and diagnostics). */
int64_t aio_context_poll_ns(AioContext *ctx);

/* Submission batch bound used by the I/O engines (0 = engine default). */
bool aio_context_set_aio_params(AioContext *ctx, int64_t max_batch, GError **errp);
int64_t aio_context_get_max_batch(AioContext *ctx);

/*
 * A GSource that dispatches @ctx from a GMainContext; the first call
 * creates it, later calls return the same source with a new reference.
 */
GSource *aio_get_g_source(AioContext *ctx);

/* --- coroutines across contexts --- */

/*
 * Makes @co run in @ctx (its new home) from a bottom half.  Any thread.
 * Scheduling a coroutine that is already scheduled aborts.
 */
void aio_co_schedule(AioContext *ctx, Coroutine *co);

/*
 * Resumes a yielded coroutine in its home context: directly (after the
 * current coroutine yields) when called from that context's thread,
 * through aio_co_schedule() otherwise.
 */
void aio_co_wake(Coroutine *co);

/*
 * Enters @co in @ctx: directly if @ctx is the current context, else
 * schedules it there.
 */
void aio_co_enter(AioContext *ctx, Coroutine *co);

/* Moves the calling coroutine to @ctx; returns running there. */
void coroutine_fn aio_co_reschedule_self(AioContext *ctx);

/* --- waiting from the main loop --- */

extern _Atomic unsigned aio_wait_waiters;

/*
 * Wakes AIO_WAIT_WHILE() in the main loop so it re-evaluates its
 * condition.  Call it (from any thread) after changing what a waiter's
 * condition reads.
 */
void aio_wait_kick(void);

/*
 * Polls the main context until @cond becomes false.  Main thread only,
 * never from a coroutine.  Workers in other threads call aio_wait_kick()
 * after making progress.
 */
#define AIO_WAIT_WHILE(cond)                                                                       \
    ({                                                                                             \
        bool waited_ = false;                                                                      \
        AioContext *main_ctx_ = aio_main_context();                                                \
        g_assert(aio_in_main_thread() && !co_in_coroutine());                                      \
        atomic_fetch_add(&aio_wait_waiters, 1);                                                    \
        while ((cond)) {                                                                           \
            aio_poll(main_ctx_, true);                                                             \
            waited_ = true;                                                                        \
        }                                                                                          \
        atomic_fetch_sub(&aio_wait_waiters, 1);                                                    \
        waited_;                                                                                   \
    })

#endif /* STRATA_AIO_H */
