/*
 * Thread-pool engine of the `file` driver (aio=threads, the default), and
 * the blocking helpers every engine needs (fallocate, ftruncate).
 *
 * Each call runs one blocking syscall in a worker of the current
 * AioContext's thread pool while the calling coroutine yields; the
 * coroutine resumes in its own context.  Call only from a coroutine
 * running in the current thread's AioContext.
 */
#ifndef STRATA_FILE_THREADS_H
#define STRATA_FILE_THREADS_H

#include "drivers/raw/raw-aio.h"

/*
 * Same contract as laio_co_submit(), but the worker keeps going after a
 * short transfer (interrupted or partial preadv/pwritev), so a short
 * result here always means end of file (reads) or a write that made no
 * progress.
 */
int coroutine_fn raw_thread_co_submit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                      RawAioType type);

/* fallocate(2); returns 0 or -errno (-EOPNOTSUPP when the fs lacks @mode). */
int coroutine_fn raw_thread_co_fallocate(int fd, int mode, uint64_t offset, uint64_t len);

/* ftruncate(2); returns 0 or -errno. */
int coroutine_fn raw_thread_co_ftruncate(int fd, uint64_t length);

#endif /* STRATA_FILE_THREADS_H */
