/*
 * io_uring engine (see io-uring.h).
 *
 * Design notes.
 *
 * Submission is batched exactly as in the Linux AIO engine: requests are
 * queued on their coroutines' stacks, the first one queued in an
 * event-loop iteration schedules a bottom half, and the bottom half (or
 * the coroutine that fills a batch of aio-max-batch) turns the queue into
 * SQEs and makes one io_uring_submit() per batch.  SQEs are filled only
 * at that point, so the queue may grow past the ring's size; the number
 * of requests in the kernel is kept below the completion queue's size so
 * that completions never overflow.
 *
 * Completion.  The ring's file descriptor becomes readable whenever the
 * completion queue is not empty, so it is registered directly as an fd
 * handler: no eventfd, no extra write per completion.  The polling
 * callback reads the CQ head and tail, which live in memory shared with
 * the kernel, and so costs no syscall.  Reaping copies a batch of CQEs,
 * advances the CQ head, and only then wakes the coroutines.
 *
 * io_uring_submit() failing with EAGAIN or EBUSY leaves the SQEs in the
 * ring; they are submitted again after the next completion, or from the
 * bottom half when nothing is in flight to complete.
 *
 * Threading: a ring belongs to one AioContext and is only touched from
 * that context's thread; it needs no lock.
 */
#include "drivers/raw/io-uring.h"

#include <errno.h>
#include <liburing.h>

#include "aio/aio-engine-slots.h"

/* Submission queue size; the kernel makes the completion queue twice as big. */
#define LURING_ENTRIES 128
/* CQEs copied out per round, before any coroutine wakes. */
#define LURING_REAP_CHUNK 64

typedef struct LuringRequest LuringRequest;
struct LuringRequest {
    Coroutine *co;
    int ret; /* -EINPROGRESS until completed */
    RawAioType type;
    int fd;
    uint64_t offset;
    struct iovec *iov;
    int niov;
    LuringRequest *next;
};

typedef struct LuringState {
    AioContext *ctx;
    struct io_uring ring;
    AioBH *submit_bh;

    LuringRequest *pending_head; /* queued, no SQE yet */
    LuringRequest **pending_tail;
    unsigned n_pending;
    unsigned in_flight;  /* SQEs in the ring or the kernel, not yet reaped */
    unsigned max_kernel; /* in_flight bound: the CQ size */
    bool blocked;        /* io_uring_submit() said EAGAIN/EBUSY */

    RawAioStats stats;
} LuringState;

static void luring_submit_pending(LuringState *s);

static unsigned luring_max_batch(LuringState *s)
{
    int64_t batch = aio_context_get_max_batch(s->ctx);
    if (batch <= 0) {
        return LURING_DEFAULT_MAX_BATCH;
    }
    return batch > LURING_ENTRIES ? LURING_ENTRIES : (unsigned)batch;
}

static void luring_process_completions(LuringState *s)
{
    struct io_uring_cqe *cqes[LURING_REAP_CHUNK];
    LuringRequest *reqs[LURING_REAP_CHUNK];
    int res[LURING_REAP_CHUNK];
    unsigned n;

    while ((n = io_uring_peek_batch_cqe(&s->ring, cqes, LURING_REAP_CHUNK)) > 0) {
        for (unsigned i = 0; i < n; i++) {
            reqs[i] = io_uring_cqe_get_data(cqes[i]);
            res[i] = cqes[i]->res;
        }
        io_uring_cq_advance(&s->ring, n);
        g_assert(n <= s->in_flight);
        s->in_flight -= n;
        for (unsigned i = 0; i < n; i++) {
            reqs[i]->ret = res[i];
            aio_co_wake(reqs[i]->co);
        }
    }
    /* Completions made room (and may have lifted an EAGAIN/EBUSY). */
    s->blocked = false;
    if (s->n_pending || io_uring_sq_ready(&s->ring)) {
        luring_submit_pending(s);
    }
}

static void luring_fd_read(void *opaque)
{
    luring_process_completions(opaque);
}

/* Adaptive polling: is a CQE waiting?  A load from the shared ring only. */
static bool luring_poll(void *opaque)
{
    LuringState *s = opaque;
    return s->in_flight && io_uring_cq_ready(&s->ring) > 0;
}

static void luring_prep(struct io_uring_sqe *sqe, LuringRequest *req)
{
    switch (req->type) {
    case RAW_AIO_READ:
        io_uring_prep_readv(sqe, req->fd, req->iov, req->niov, req->offset);
        break;
    case RAW_AIO_WRITE:
        io_uring_prep_writev(sqe, req->fd, req->iov, req->niov, req->offset);
        break;
    case RAW_AIO_FDATASYNC:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    case RAW_AIO_FSYNC:
        io_uring_prep_fsync(sqe, req->fd, 0);
        break;
    }
    io_uring_sqe_set_data(sqe, req);
}

/* Moves up to one batch of queued requests into SQEs; returns how many. */
static unsigned luring_fill_sqes(LuringState *s, unsigned batch)
{
    unsigned n = 0;
    while (s->n_pending && n < batch && s->in_flight < s->max_kernel) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
        if (!sqe) {
            break;
        }
        LuringRequest *req = s->pending_head;
        s->pending_head = req->next;
        if (!s->pending_head) {
            s->pending_tail = &s->pending_head;
        }
        s->n_pending--;
        luring_prep(sqe, req);
        s->in_flight++;
        n++;
    }
    return n;
}

/*
 * Submits queued requests, one io_uring_submit() per batch, while the
 * kernel has room.  Errors of single requests come back as CQEs; only
 * ring-wide conditions (EAGAIN, EBUSY) make this stop early.
 */
static void luring_submit_pending(LuringState *s)
{
    unsigned batch = luring_max_batch(s);

    while (!s->blocked) {
        unsigned filled = luring_fill_sqes(s, batch);
        if (!io_uring_sq_ready(&s->ring)) {
            return;
        }
        int ret = io_uring_submit(&s->ring);
        s->stats.submit_calls++;
        if (ret == -EINTR) {
            continue;
        }
        if (ret < 0) {
            /* The SQEs stay in the ring; retry once something completes. */
            s->blocked = true;
            if (s->in_flight == io_uring_sq_ready(&s->ring)) {
                aio_bh_schedule(s->submit_bh); /* nothing will complete */
            }
            return;
        }
        s->stats.requests += ret;
        s->stats.max_in_flight = MAX(s->stats.max_in_flight, s->in_flight);
        if (filled == 0 && ret == 0) {
            return;
        }
    }
}

static void luring_submit_bh(void *opaque)
{
    LuringState *s = opaque;
    s->blocked = false;
    luring_submit_pending(s);
}

static void luring_state_free(void *opaque)
{
    LuringState *s = opaque;
    g_assert(s->in_flight == 0 && s->n_pending == 0);

    aio_set_fd_handler(s->ctx, s->ring.ring_fd, NULL, NULL, NULL, NULL, NULL);
    aio_bh_delete(s->submit_bh);
    io_uring_queue_exit(&s->ring);
    g_free(s);
}

static LuringState *luring_state_new(AioContext *ctx, int *err)
{
    LuringState *s = g_new0(LuringState, 1);
    s->ctx = ctx;
    s->pending_tail = &s->pending_head;

    int ret = io_uring_queue_init(LURING_ENTRIES, &s->ring, 0);
    if (ret < 0) {
        *err = ret;
        g_free(s);
        return NULL;
    }
    s->max_kernel = s->ring.cq.ring_entries;
    s->submit_bh = aio_bh_new(ctx, luring_submit_bh, s);
    aio_set_fd_handler(ctx, s->ring.ring_fd, luring_fd_read, NULL, luring_poll, luring_fd_read, s);
    return s;
}

static LuringState *luring_get(AioContext *ctx, int *err)
{
    LuringState *s = aio_context_get_engine(ctx, AIO_ENGINE_SLOT_IO_URING);
    if (s) {
        return s;
    }
    s = luring_state_new(ctx, err);
    if (s && !aio_context_set_engine(ctx, AIO_ENGINE_SLOT_IO_URING, s, luring_state_free)) {
        g_assert_not_reached(); /* only the home thread installs, so no race */
    }
    return s;
}

bool luring_probe(GError **errp)
{
    struct io_uring ring;
    int ret = io_uring_queue_init(2, &ring, 0);
    if (ret < 0) {
        const char *why = "";
        if (ret == -ENOSYS) {
            why = ": the kernel was built without io_uring";
        } else if (ret == -EPERM) {
            why = ": forbidden by policy (kernel.io_uring_disabled sysctl or a seccomp filter)";
        } else if (ret == -ENOMEM) {
            why = ": out of locked memory (RLIMIT_MEMLOCK)";
        }
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "io_uring is not available (%s)%s", g_strerror(-ret), why);
        return false;
    }

    bool ok = true;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (probe) {
        ok = io_uring_opcode_supported(probe, IORING_OP_READV) &&
             io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
             io_uring_opcode_supported(probe, IORING_OP_FSYNC);
        io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
    if (!ok) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "io_uring lacks readv, writev or fsync on this kernel");
    }
    return ok;
}

int coroutine_fn luring_co_submit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                  RawAioType type)
{
    AioContext *ctx = aio_get_current();
    g_assert(ctx && co_in_coroutine());
    if (type > RAW_AIO_FSYNC) {
        return -EINVAL;
    }

    int err = 0;
    LuringState *s = luring_get(ctx, &err);
    if (!s) {
        return err;
    }

    LuringRequest req = {
        .co = co_self(),
        .ret = -EINPROGRESS,
        .type = type,
        .fd = fd,
        .offset = offset,
        .iov = iov,
        .niov = niov,
    };
    *s->pending_tail = &req;
    s->pending_tail = &req.next;
    s->n_pending++;
    if (s->n_pending >= luring_max_batch(s)) {
        luring_submit_pending(s);
    } else {
        aio_bh_schedule(s->submit_bh);
    }

    while (req.ret == -EINPROGRESS) {
        co_yield ();
    }
    return req.ret;
}

bool luring_get_stats(AioContext *ctx, RawAioStats *stats)
{
    LuringState *s = aio_context_get_engine(ctx, AIO_ENGINE_SLOT_IO_URING);
    if (!s) {
        return false;
    }
    *stats = s->stats;
    return true;
}
