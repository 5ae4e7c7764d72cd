/*
 * Linux AIO engine (see linux-aio.h).
 *
 * Design notes.
 *
 * Submission is batched.  A request is prepared on its coroutine's stack
 * and appended to the engine's pending queue; the first request queued in
 * an event-loop iteration schedules a bottom half that hands the whole
 * queue to io_submit() in chunks of aio-max-batch.  A queue that reaches
 * the batch size is submitted at once by the coroutine that filled it, so
 * a burst never waits for the bottom half.  The kernel context accepts at
 * most LAIO_MAX_EVENTS requests; beyond that requests wait in the queue
 * and are submitted as completions free room.  io_submit() failing with
 * EAGAIN (kernel out of resources) also leaves them queued until the next
 * completion.
 *
 * Completion.  Every iocb carries the engine's eventfd, which the kernel
 * signals on completion; the eventfd is registered with the AioContext.
 * Completions are read straight from the completion ring the kernel maps
 * into our address space (the io_context_t handle is its address): the
 * ring is a header followed by io_event slots, the kernel advances `tail`,
 * we advance `head`.  That makes the adaptive-polling callback a plain
 * memory comparison, and reaping costs no syscall at all.  Should the
 * ring ever not look the way we expect (magic or incompatible features),
 * we fall back to io_getevents() with a zero timeout, which is correct
 * but needs one syscall per batch and cannot be polled.
 *
 * Reaping copies a batch of events out of the ring and publishes the new
 * head before waking any coroutine, so a woken coroutine that issues new
 * requests never sees a half-consumed ring.
 *
 * Threading: an engine belongs to one AioContext and is only touched from
 * that context's thread; it needs no lock.
 */
#include "drivers/raw/linux-aio.h"

#include <errno.h>
#include <libaio.h>

#include "aio/aio-engine-slots.h"

/* Requests the kernel context accepts at once (per AioContext). */
#define LAIO_MAX_EVENTS 512
/* Events copied out of the ring per round, before any coroutine wakes. */
#define LAIO_REAP_CHUNK 64

/* The kernel's layout of the completion ring (fs/aio.c, a stable ABI). */
#define LAIO_RING_MAGIC 0xa10a10a1u
typedef struct LaioRing {
    unsigned id;
    unsigned nr; /* slots in io_events */
    unsigned head;
    unsigned tail;
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
    struct io_event io_events[];
} LaioRing;

typedef struct LaioRequest LaioRequest;
struct LaioRequest {
    struct iocb iocb;
    Coroutine *co;
    int ret; /* -EINPROGRESS until completed */
    LaioRequest *next;
};

typedef struct LinuxAioState {
    EventNotifier notifier; /* first: handlers get a pointer to it */
    AioContext *ctx;
    io_context_t io_ctx;
    LaioRing *ring; /* NULL when the ring cannot be read in user space */
    AioBH *submit_bh;

    LaioRequest *pending_head; /* prepared, not yet given to the kernel */
    LaioRequest **pending_tail;
    unsigned n_pending;
    unsigned in_flight; /* given to the kernel, not yet reaped */
    bool blocked;       /* io_submit said EAGAIN: wait for a completion */

    RawAioStats stats;
} LinuxAioState;

static void laio_submit_pending(LinuxAioState *s);

static unsigned laio_max_batch(LinuxAioState *s)
{
    int64_t batch = aio_context_get_max_batch(s->ctx);
    if (batch <= 0) {
        return LAIO_DEFAULT_MAX_BATCH;
    }
    return batch > LAIO_MAX_EVENTS ? LAIO_MAX_EVENTS : (unsigned)batch;
}

/* Hands @req its result and resumes its coroutine (unless it is the caller). */
static void laio_complete(LaioRequest *req, int ret)
{
    req->ret = ret;
    if (req->co != co_self()) {
        aio_co_wake(req->co);
    }
}

/*
 * Copies up to @max completion events into @events and consumes them.
 * Returns how many, 0 when the ring is empty.
 */
static int laio_reap(LinuxAioState *s, struct io_event *events, int max)
{
    LaioRing *ring = s->ring;
    if (!ring) {
        struct timespec zero = {0, 0};
        int n = io_getevents(s->io_ctx, 0, max, events, &zero);
        return n < 0 ? 0 : n;
    }

    unsigned head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    int n = 0;
    while (head != tail && n < max) {
        events[n++] = ring->io_events[head];
        head = head + 1 == ring->nr ? 0 : head + 1;
    }
    /* Releases the slots back to the kernel only after they were copied. */
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    return n;
}

static int laio_event_result(const struct io_event *ev)
{
    long res = (long)ev->res;
    g_assert(res <= INT32_MAX);
    return (int)res;
}

static void laio_process_completions(LinuxAioState *s)
{
    struct io_event events[LAIO_REAP_CHUNK];
    int n;

    while ((n = laio_reap(s, events, LAIO_REAP_CHUNK)) > 0) {
        g_assert((unsigned)n <= s->in_flight);
        s->in_flight -= n;
        for (int i = 0; i < n; i++) {
            laio_complete(events[i].data, laio_event_result(&events[i]));
        }
    }
    /* Completions made room (and may have lifted an EAGAIN). */
    s->blocked = false;
    if (s->n_pending) {
        laio_submit_pending(s);
    }
}

static void laio_notifier_read(EventNotifier *e)
{
    LinuxAioState *s = (LinuxAioState *)e;
    if (event_notifier_test_and_clear(e)) {
        laio_process_completions(s);
    }
}

/* Adaptive polling: is a completion waiting in the ring?  No syscall. */
static bool laio_poll(void *opaque)
{
    LinuxAioState *s = opaque;
    LaioRing *ring = s->ring;
    if (!ring || !s->in_flight) {
        return false;
    }
    return __atomic_load_n(&ring->head, __ATOMIC_RELAXED) !=
           __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
}

static void laio_poll_ready(EventNotifier *e)
{
    laio_process_completions((LinuxAioState *)e);
}

static LaioRequest *laio_pop_pending(LinuxAioState *s)
{
    LaioRequest *req = s->pending_head;
    s->pending_head = req->next;
    if (!s->pending_head) {
        s->pending_tail = &s->pending_head;
    }
    s->n_pending--;
    return req;
}

/*
 * Gives queued requests to the kernel, in chunks of aio-max-batch, while
 * the kernel context has room.  A request the kernel rejects outright
 * (bad fd, bad opcode) completes with that error; EAGAIN leaves the
 * queue for the next completion to retry.
 */
static void laio_submit_pending(LinuxAioState *s)
{
    struct iocb *iocbs[LAIO_MAX_EVENTS];
    unsigned batch = laio_max_batch(s);

    while (s->n_pending && !s->blocked) {
        unsigned n = MIN(MIN(s->n_pending, batch), LAIO_MAX_EVENTS - s->in_flight);
        if (n == 0) {
            return; /* full: the next completion resumes us */
        }
        LaioRequest *req = s->pending_head;
        for (unsigned i = 0; i < n; i++, req = req->next) {
            iocbs[i] = &req->iocb;
        }

        int ret = io_submit(s->io_ctx, n, iocbs);
        s->stats.submit_calls++;
        if (ret == -EINTR) {
            continue;
        }
        if (ret == -EAGAIN && s->in_flight) {
            s->blocked = true;
            return;
        }
        if (ret < 0) {
            /* The first iocb is at fault (or, with nothing in flight, EAGAIN would never lift). */
            laio_complete(laio_pop_pending(s), ret);
            continue;
        }
        for (int i = 0; i < ret; i++) {
            laio_pop_pending(s);
        }
        s->in_flight += ret;
        s->stats.requests += ret;
        s->stats.max_in_flight = MAX(s->stats.max_in_flight, s->in_flight);
    }
}

static void laio_submit_bh(void *opaque)
{
    laio_submit_pending(opaque);
}

static void laio_state_free(void *opaque)
{
    LinuxAioState *s = opaque;
    g_assert(s->in_flight == 0 && s->n_pending == 0);

    aio_set_event_notifier(s->ctx, &s->notifier, NULL, NULL, NULL);
    event_notifier_cleanup(&s->notifier);
    aio_bh_delete(s->submit_bh);
    io_destroy(s->io_ctx);
    g_free(s);
}

/* Creates the engine of @ctx; returns NULL with *err = -errno on failure. */
static LinuxAioState *laio_state_new(AioContext *ctx, int *err)
{
    LinuxAioState *s = g_new0(LinuxAioState, 1);
    s->ctx = ctx;
    s->pending_tail = &s->pending_head;

    int ret = io_setup(LAIO_MAX_EVENTS, &s->io_ctx);
    if (ret < 0) {
        *err = ret;
        g_free(s);
        return NULL;
    }
    ret = event_notifier_init(&s->notifier, false);
    if (ret < 0) {
        *err = ret;
        io_destroy(s->io_ctx);
        g_free(s);
        return NULL;
    }

    LaioRing *ring = (LaioRing *)s->io_ctx;
    if (ring->magic == LAIO_RING_MAGIC && ring->incompat_features == 0) {
        s->ring = ring;
    }
    s->submit_bh = aio_bh_new(ctx, laio_submit_bh, s);
    aio_set_event_notifier(ctx, &s->notifier, laio_notifier_read, laio_poll, laio_poll_ready);
    return s;
}

/* The engine of the current thread's context, created on first use. */
static LinuxAioState *laio_get(AioContext *ctx, int *err)
{
    LinuxAioState *s = aio_context_get_engine(ctx, AIO_ENGINE_SLOT_LINUX_AIO);
    if (s) {
        return s;
    }
    s = laio_state_new(ctx, err);
    if (s && !aio_context_set_engine(ctx, AIO_ENGINE_SLOT_LINUX_AIO, s, laio_state_free)) {
        g_assert_not_reached(); /* only the home thread installs, so no race */
    }
    return s;
}

bool laio_probe(GError **errp)
{
    io_context_t io_ctx = 0;
    int ret = io_setup(1, &io_ctx);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Linux AIO is not available (io_setup: %s)%s", g_strerror(-ret),
                    ret == -EAGAIN ? "; /proc/sys/fs/aio-max-nr is exhausted" : "");
        return false;
    }
    io_destroy(io_ctx);
    return true;
}

int coroutine_fn laio_co_submit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                RawAioType type)
{
    AioContext *ctx = aio_get_current();
    g_assert(ctx && co_in_coroutine());

    int err = 0;
    LinuxAioState *s = laio_get(ctx, &err);
    if (!s) {
        return err;
    }

    LaioRequest req = {.co = co_self(), .ret = -EINPROGRESS};
    switch (type) {
    case RAW_AIO_READ:
        io_prep_preadv(&req.iocb, fd, iov, niov, offset);
        break;
    case RAW_AIO_WRITE:
        io_prep_pwritev(&req.iocb, fd, iov, niov, offset);
        break;
    case RAW_AIO_FDATASYNC:
        io_prep_fdsync(&req.iocb, fd);
        break;
    case RAW_AIO_FSYNC:
        io_prep_fsync(&req.iocb, fd);
        break;
    default:
        return -EINVAL;
    }
    io_set_eventfd(&req.iocb, s->notifier.fd);
    req.iocb.data = &req;

    *s->pending_tail = &req;
    s->pending_tail = &req.next;
    s->n_pending++;
    if (s->n_pending >= laio_max_batch(s)) {
        laio_submit_pending(s);
    } else {
        aio_bh_schedule(s->submit_bh);
    }

    while (req.ret == -EINPROGRESS) {
        co_yield ();
    }
    return req.ret;
}

bool laio_get_stats(AioContext *ctx, RawAioStats *stats)
{
    LinuxAioState *s = aio_context_get_engine(ctx, AIO_ENGINE_SLOT_LINUX_AIO);
    if (!s) {
        return false;
    }
    *stats = s->stats;
    return true;
}
