/*
 * Thread-pool engine (see file-threads.h).
 *
 * A request lives on the calling coroutine's stack; the worker reads it
 * and returns the result through thread_pool_co_submit(), which resumes
 * the coroutine in its home context.  Nothing here is shared between
 * requests, so there is no lock.
 */
#include "drivers/raw/file-threads.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include "aio/thread-pool.h"

typedef struct RawThreadRequest {
    int fd;
    RawAioType type;
    uint64_t offset;
    uint64_t len;
    int mode;
    struct iovec *iov;
    int niov;
} RawThreadRequest;

static size_t raw_iov_size(const struct iovec *iov, int niov)
{
    size_t total = 0;
    for (int i = 0; i < niov; i++) {
        total += iov[i].iov_len;
    }
    return total;
}

/* Drops the first @bytes of the vector in place (entries may be consumed). */
static void raw_iov_advance(struct iovec **iov, int *niov, size_t bytes)
{
    while (bytes && *niov) {
        if (bytes < (*iov)->iov_len) {
            (*iov)->iov_base = (char *)(*iov)->iov_base + bytes;
            (*iov)->iov_len -= bytes;
            return;
        }
        bytes -= (*iov)->iov_len;
        (*iov)++;
        (*niov)--;
    }
}

/*
 * Transfers the whole vector unless end of file or an error intervenes.
 * The caller's iovec array is never modified: after a partial transfer
 * the worker continues on a private copy.
 */
static int raw_thread_rw(void *opaque)
{
    RawThreadRequest *r = opaque;
    size_t total = raw_iov_size(r->iov, r->niov);
    struct iovec *iov = r->iov, *copy = NULL;
    int niov = r->niov;
    size_t done = 0;
    int ret = 0;

    g_assert(total <= RAW_AIO_MAX_BYTES);
    while (done < total) {
        ssize_t n = r->type == RAW_AIO_READ ? preadv(r->fd, iov, niov, r->offset + done)
                                            : pwritev(r->fd, iov, niov, r->offset + done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = -errno;
            break;
        }
        if (n == 0) {
            break; /* end of file, or a write that cannot progress */
        }
        done += n;
        if (done < total) {
            if (!copy) {
                copy = g_memdup2(iov, sizeof(*iov) * niov);
                iov = copy;
            }
            raw_iov_advance(&iov, &niov, n);
        }
    }
    g_free(copy);
    return ret < 0 ? ret : (int)done;
}

static int raw_thread_sync(void *opaque)
{
    RawThreadRequest *r = opaque;
    int ret = r->type == RAW_AIO_FDATASYNC ? fdatasync(r->fd) : fsync(r->fd);
    return ret < 0 ? -errno : 0;
}

static int raw_thread_fallocate(void *opaque)
{
    RawThreadRequest *r = opaque;
    int ret;
    do {
        ret = fallocate(r->fd, r->mode, r->offset, r->len);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

static int raw_thread_ftruncate(void *opaque)
{
    RawThreadRequest *r = opaque;
    int ret;
    do {
        ret = ftruncate(r->fd, r->len);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

static int coroutine_fn raw_thread_co_run(ThreadPoolFunc *func, RawThreadRequest *r)
{
    AioContext *ctx = aio_get_current();
    g_assert(ctx && co_in_coroutine());
    return thread_pool_co_submit(aio_get_thread_pool(ctx), func, r);
}

int coroutine_fn raw_thread_co_submit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                      RawAioType type)
{
    RawThreadRequest r = {.fd = fd, .type = type, .offset = offset, .iov = iov, .niov = niov};
    switch (type) {
    case RAW_AIO_READ:
    case RAW_AIO_WRITE:
        return raw_thread_co_run(raw_thread_rw, &r);
    case RAW_AIO_FDATASYNC:
    case RAW_AIO_FSYNC:
        return raw_thread_co_run(raw_thread_sync, &r);
    }
    return -EINVAL;
}

int coroutine_fn raw_thread_co_fallocate(int fd, int mode, uint64_t offset, uint64_t len)
{
    RawThreadRequest r = {.fd = fd, .mode = mode, .offset = offset, .len = len};
    return raw_thread_co_run(raw_thread_fallocate, &r);
}

int coroutine_fn raw_thread_co_ftruncate(int fd, uint64_t length)
{
    RawThreadRequest r = {.fd = fd, .len = length};
    return raw_thread_co_run(raw_thread_ftruncate, &r);
}
