/*
 * BlockBackend types shared by both calling contexts.
 *
 * BlockBackend: the user-facing root of a node graph.  Tools, jobs and
 * embedders do their I/O through one.
 *
 * Global state (main loop only): creating, attaching, permissions,
 * references.  I/O (any thread with an AioContext): everything named
 * blk_co_*, blk_aio_* and the synchronous request forms; a request runs
 * in the caller's context and thread.
 *
 * While a node below is drained, new requests wait in the backend (they
 * yield, and resume after the section ends) unless queuing was disabled
 * for internal users that must make progress during a drain.
 */
#ifndef STRATA_BLOCK_BACKEND_COMMON_H
#define STRATA_BLOCK_BACKEND_COMMON_H

#include "block/block-common.h"
#include "block/iov.h"

typedef void BlockCompletionFunc(void *opaque, int ret);

/* Per-backend counters; read them with blk_get_stats(). */
typedef struct BlockAcctStats {
    uint64_t rd_ops, wr_ops, flush_ops, discard_ops;
    uint64_t rd_bytes, wr_bytes, discard_bytes;
    uint64_t rd_total_ns, wr_total_ns, flush_total_ns;
    uint64_t failed_rd_ops, failed_wr_ops, failed_flush_ops;
} BlockAcctStats;

#endif /* STRATA_BLOCK_BACKEND_COMMON_H */
