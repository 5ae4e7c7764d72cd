/*
 * io_uring engine of the `file` driver (aio=io_uring).
 *
 * One ring per AioContext, created by the first request issued there and
 * released by aio_context_free_engines().  Requests run and complete in
 * the calling coroutine's own AioContext.  Unlike Linux AIO, io_uring is
 * asynchronous for buffered I/O too (the kernel punts blocking work to its
 * own workers), so it suits every cache mode.
 *
 * Threading: call luring_co_submit() from a coroutine running in the
 * AioContext of the current thread.  Each thread uses its own ring.
 */
#ifndef STRATA_IO_URING_H
#define STRATA_IO_URING_H

#include <glib.h>
#include <stdbool.h>

#include "aio/aio.h"
#include "drivers/raw/raw-aio.h"

/* Default number of requests per io_uring_submit() when aio-max-batch is 0. */
#define LURING_DEFAULT_MAX_BATCH 32

/*
 * Checks that the kernel lets this process create a ring that supports
 * readv, writev and fsync.  The error says why not: no io_uring in the
 * kernel (ENOSYS), forbidden by policy (EPERM: the io_uring_disabled
 * sysctl, a seccomp filter or a container runtime), or out of locked
 * memory (ENOMEM).  Control path.
 */
bool luring_probe(GError **errp);

/*
 * Reads, writes or syncs @fd and yields until the kernel has completed it.
 * Returns bytes transferred (possibly short), 0 for syncs, or -errno
 * (-EBADF for a bad descriptor, -EINVAL for misaligned O_DIRECT requests,
 * the ring's creation error when none could be made).
 */
int coroutine_fn luring_co_submit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                  RawAioType type);

/*
 * Copies the counters of @ctx's ring into @stats; false when @ctx has
 * none yet.  Home thread of @ctx only.
 */
bool luring_get_stats(AioContext *ctx, RawAioStats *stats);

#endif /* STRATA_IO_URING_H */
