/*
 * What the I/O engines of the `file` protocol driver share: the request
 * types and the result convention.
 *
 * Three engines run requests for the driver: the thread pool
 * (file-threads.c, aio=threads), Linux AIO (linux-aio.c, aio=native) and
 * io_uring (io-uring.c, aio=io_uring).  Each keeps one instance per
 * AioContext and completes a request in the context that issued it.
 *
 * Result convention of every *_co_submit(): for reads and writes, the
 * number of bytes transferred (which may be short: the driver decides
 * whether to retry the remainder or, past end of file, to zero-fill); for
 * flushes, 0; on failure a negative errno.  A request's total length must
 * fit in an int (the driver caps max_transfer accordingly).
 */
#ifndef STRATA_RAW_AIO_H
#define STRATA_RAW_AIO_H

#include <stdint.h>
#include <sys/uio.h>

#include "coroutine/coroutine.h"

typedef enum RawAioType {
    RAW_AIO_READ,      /* preadv */
    RAW_AIO_WRITE,     /* pwritev */
    RAW_AIO_FDATASYNC, /* fdatasync: data plus the metadata needed to read it */
    RAW_AIO_FSYNC,     /* fsync: everything */
} RawAioType;

/*
 * Counters of one engine instance, for tests and benchmarks: they show
 * whether batching works (requests per submit call) and how deep the
 * queue went.
 */
typedef struct RawAioStats {
    uint64_t submit_calls;  /* io_submit() / io_uring_submit() calls made */
    uint64_t requests;      /* requests handed to the kernel */
    unsigned max_in_flight; /* deepest kernel queue seen */
} RawAioStats;

/* Largest total length of one read or write request. */
#define RAW_AIO_MAX_BYTES (1u << 30)

#endif /* STRATA_RAW_AIO_H */
