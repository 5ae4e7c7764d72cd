/*
 * Private to aio/: the layout of AioContext and the helpers its files share.
 *
 * Threading: each field says who may touch it.  "home" fields belong to the
 * thread that runs aio_poll() on the context (no lock); "any" fields are
 * atomics, or are guarded by the lock named beside them.  The fields that
 * other threads write (notify protocol, BH list, scheduled coroutines) sit
 * apart from the home fields so that producers do not bounce the poller's
 * cache lines.
 *
 * Locks are pthread mutexes, not GMutex: glib's futex-based GMutex is
 * invisible to ThreadSanitizer.
 */
#ifndef STRATA_AIO_INT_H
#define STRATA_AIO_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "aio/aio.h"
#include "aio/thread-pool.h"

/* First step of a growing poll window, and the size below which shrinking goes to 0. */
#define AIO_POLL_NS_MIN 4000

typedef struct AioHandler AioHandler;
typedef struct AioBHSlice AioBHSlice;

/* One registered fd or event notifier.  Home thread only. */
struct AioHandler {
    int fd;
    IOHandler *io_read;
    IOHandler *io_write;
    AioPollFn *io_poll;
    IOHandler *io_poll_ready;
    void *opaque;
    /* Event notifiers call these with the notifier instead of io_read/io_poll_ready. */
    EventNotifier *notifier;
    EventNotifierHandler *en_read;
    EventNotifierHandler *en_poll_ready;
    uint32_t events; /* epoll mask registered; 0 = not in the epoll set */
    bool deleted;    /* unregistered while handlers were walked; freed later */
    bool poll_ready; /* io_poll returned true; io_poll_ready is due */
    bool internal;   /* the context's own notifier: running it is not progress */
    AioHandler *next;
};

/*
 * The BHs taken off the shared list by one aio_bh_poll() call, in FIFO
 * order.  Slices live on that call's stack and are queued on the context so
 * that a nested aio_poll() (from inside a BH) runs the BHs its caller has
 * already taken but not yet run; otherwise it could wait for them forever.
 */
struct AioBHSlice {
    AioBH *head;
    AioBHSlice *next;
};

struct AioContext {
    /* --- written by any thread --- */
    atomic_int refcount;
    /*
     * Notify protocol (see aio_notify in async.c): notify_me counts 2 for
     * each aio_poll() that is about to block, plus bit 0 while the GSource
     * may block in glib's poll.  notified is set by every aio_notify() and
     * cleared by the home thread before it looks for work.
     */
    atomic_uint notify_me;
    atomic_bool notified;
    AioBH *_Atomic bh_list;                  /* LIFO of BHs flagged pending */
    Coroutine *_Atomic scheduled_coroutines; /* LIFO via Coroutine.sched_next */
    _Atomic int64_t timer_deadline;          /* first timer's expiry, INT64_MAX if none */

    /* --- parameters: written by any thread, read by home --- */
    _Atomic int64_t poll_max_ns;
    _Atomic int64_t poll_grow;
    _Atomic int64_t poll_shrink;
    _Atomic int64_t aio_max_batch;
    _Atomic int64_t poll_ns; /* current window; written by home only */

    /* --- home --- */
    __attribute__((aligned(64))) int epollfd;
    EventNotifier notifier;
    AioHandler *handlers;
    unsigned walking_handlers; /* > 0 while aio_poll dispatches: defer frees */
    unsigned deleted_handlers;
    unsigned nr_poll_handlers; /* handlers with an io_poll callback */
    AioBHSlice *slice_head, *slice_tail;
    AioBH *co_schedule_bh;

    /* --- timers: guarded by timer_lock --- */
    pthread_mutex_t timer_lock;
    AioTimer *timers; /* sorted by expiry; FIFO among equal expiries */

    /* --- lazily created companions --- */
    pthread_mutex_t lock; /* guards gsource creation */
    GSource *gsource;
    ThreadPool *_Atomic thread_pool;
};

/* async.c */
/* Runs due BHs; returns true if any callback ran. Home thread. */
bool aio_bh_poll(AioContext *ctx);
/* True if a BH waits on the shared list or in a slice (may be cancelled ones). */
bool aio_bh_pending(AioContext *ctx);
/* Frees BHs still queued when the context dies (oneshot or deleted ones). */
void aio_bh_drop_all(AioContext *ctx);

/* aio-posix.c */
/* Creates the epoll fd and the notifier; returns -errno. */
int aio_context_setup(AioContext *ctx);
void aio_context_teardown(AioContext *ctx);
/*
 * How long aio_poll may sleep, in ns: 0 when work is already visible
 * (notified, BHs, expired timers), -1 for "until an fd fires".
 */
int64_t aio_compute_timeout(AioContext *ctx);

/* timer.c */
/* Runs expired timers; returns true if any callback ran. Home thread. */
bool aio_timers_run(AioContext *ctx);
/* ns until the first timer expires (0 if expired), -1 if none. Any thread. */
int64_t aio_timers_timeout_ns(AioContext *ctx);

/* aio-gsource.c */
/* Destroys the context's GSource (if any) so no GMainContext dispatches it again. */
void aio_gsource_detach(AioContext *ctx);

#endif /* STRATA_AIO_INT_H */
