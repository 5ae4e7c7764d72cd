/*
 * The copy engine of the block jobs: copies the areas a work bitmap marks
 * dirty from a source BlockBackend to a target one, many requests at once.
 *
 * The job's coroutine calls block_copy_co_issue() in its loop: it takes
 * dirty areas (clearing their bits), and starts one coroutine per
 * operation, up to a budget of bytes in flight.  Each operation asks the
 * source's block status first: a range that reads as zeroes becomes a
 * write-zeroes on the target instead of a copy.  An operation that fails
 * consults the job's error policy (QEMU's semantics: report fails the job,
 * ignore and stop put the range back into the bitmap to retry later; stop
 * also pauses the job).  Success adds to the job's progress.
 *
 * Ranges: every operation locks its range (granule-aligned) for its whole
 * duration, and so do writers that must not interleave with copies
 * (mirror's write-blocking mode, from any thread): two lockers of
 * overlapping ranges run one after the other, so a newer copy of a granule
 * never lands on the target before an older one.
 *
 * Without a target the engine only reads (stream: the source node does
 * copy-on-read, which is what moves the data).
 *
 * Threads: the engine belongs to the job (main loop): issue, wait and
 * free run there, operations too.  Range locks may be taken from any
 * thread; waiters are woken in their own AioContext.
 */
#ifndef STRATA_BLOCK_COPY_H
#define STRATA_BLOCK_COPY_H

#include "block/block-backend.h"
#include "block/dirty-bitmap.h"
#include "jobs/job.h"

typedef struct BlockCopy BlockCopy;

typedef struct BlockCopyOptions {
    BlockBackend *source;
    BlockBackend *target; /* NULL: read only */
    int64_t max_io;       /* largest request (default 1 MiB) */
    int64_t buf_size;     /* bytes in flight at most (default 16 MiB) */
    bool detect_zeroes;   /* ask the source's block status; zero ranges become write-zeroes */
    JobErrorPolicy on_source_error, on_target_error;
} BlockCopyOptions;

/* @work is the job's bitmap (on any node): its granularity is the locking unit. */
BlockCopy *block_copy_new(Job *job, BdrvDirtyBitmap *work, const BlockCopyOptions *o);
/* Waits for nothing: call it once no operation is in flight. */
void block_copy_free(BlockCopy *bc);

/*
 * Starts operations for dirty areas until the budget is used, nothing is
 * dirty, or the rate limit asks for a pause.  Returns the nanoseconds the
 * job should sleep for the rate limit (0: none).
 */
int64_t coroutine_fn block_copy_co_issue(BlockCopy *bc);
/* Yields until some operation has finished (returns at once if none is in flight). */
void coroutine_fn block_copy_co_wait_one(BlockCopy *bc);
/* Yields until no operation is in flight. */
void coroutine_fn block_copy_co_wait_all(BlockCopy *bc);
/* Operations in flight, and their bytes. */
int block_copy_ops_in_flight(const BlockCopy *bc);
int64_t block_copy_bytes_in_flight(const BlockCopy *bc);
/* True when the budget is used: waiting for an operation is the only way on. */
bool block_copy_budget_full(const BlockCopy *bc);
/* The first error reported (policy "report"), or 0. */
int block_copy_ret(const BlockCopy *bc);
/* Copies everything dirty now, waits, and repeats until clean or failed.  No rate limit. */
int coroutine_fn block_copy_co_sync(BlockCopy *bc);

/* A range lock held by a writer (lives on the locker's stack). */
typedef struct BlockCopyRange BlockCopyRange;
struct BlockCopyRange {
    int64_t offset, bytes;
    GSList *waiters; /* Coroutine * */
    BlockCopyRange *next;
};
/* Waits until no overlapping range is locked, then locks [offset, offset + bytes) (widened to
 * granules). */
void coroutine_fn block_copy_co_lock_range(BlockCopy *bc, BlockCopyRange *r, int64_t offset,
                                           int64_t bytes);
void block_copy_unlock_range(BlockCopy *bc, BlockCopyRange *r);

#endif /* STRATA_BLOCK_COPY_H */
