/*
 * Linux AIO engine of the `file` driver (aio=native).
 *
 * One kernel AIO context per AioContext, created by the first request
 * issued there and released by aio_context_free_engines().  Requests run
 * and complete in the calling coroutine's own AioContext; they are meant
 * for files opened with O_DIRECT (without it the kernel may run them
 * synchronously inside io_submit).
 *
 * Threading: call laio_co_submit() from a coroutine running in the
 * AioContext of the current thread.  Any number of threads may submit at
 * once; each uses its own engine instance.
 */
#ifndef STRATA_LINUX_AIO_H
#define STRATA_LINUX_AIO_H

#include <glib.h>
#include <stdbool.h>

#include "aio/aio.h"
#include "drivers/raw/raw-aio.h"

/* Default number of requests per io_submit() when aio-max-batch is 0. */
#define LAIO_DEFAULT_MAX_BATCH 32

/*
 * Checks that the kernel lets this process use Linux AIO (it may be
 * compiled out, or /proc/sys/fs/aio-max-nr exhausted).  Control path.
 */
bool laio_probe(GError **errp);

/*
 * Reads, writes or syncs @fd and yields until the kernel has completed it.
 * Returns bytes transferred (possibly short), 0 for syncs, or -errno;
 * notably -EBADF for a bad descriptor, -EINVAL for misaligned O_DIRECT
 * requests and -EAGAIN when the kernel has no AIO resources left.
 */
int coroutine_fn laio_co_submit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                RawAioType type);

/*
 * Copies the counters of @ctx's engine into @stats; false when @ctx has
 * none yet.  Home thread of @ctx only.
 */
bool laio_get_stats(AioContext *ctx, RawAioStats *stats);

#endif /* STRATA_LINUX_AIO_H */
