/*
 * Block jobs: a Job that works on nodes.  It is a parent of every node it
 * uses (a BdrvChild of class child_job), so drained sections of those
 * nodes pause it at its next pause point and wait until it got there, and
 * permission conflicts name it ("job 'ID'").  Its I/O goes through its own
 * BlockBackends, which keep serving requests inside drained sections (the
 * job must be able to finish what it started before it pauses).
 *
 * Main loop only, like jobs/job.h.
 */
#ifndef STRATA_BLOCK_JOB_H
#define STRATA_BLOCK_JOB_H

#include "block/block-backend.h"
#include "block/block-int.h"
#include "block/dirty-bitmap.h"
#include "jobs/block-copy.h"
#include "jobs/job.h"

typedef struct BlockJob {
    Job job;
    GSList *nodes; /* BdrvChild * of class child_job */
    GSList *blks;  /* BlockBackend * made by block_job_new_blk */
} BlockJob;

/* job_create() plus the rate limit; @driver's instance starts with a BlockJob. */
void *block_job_create(const char *id, const JobDriver *driver, int flags, int64_t speed,
                       JobEventFunc *cb, void *opaque, GError **errp);

/*
 * Makes the job a parent of @bs called @name, needing @perm and sharing
 * @shared.  Takes its own reference on @bs.  Fails on a permission conflict.
 */
bool block_job_add_bdrv(BlockJob *bjob, const char *name, BlockDriverState *bs, uint64_t perm,
                        uint64_t shared, GError **errp);
/* True when the job is a parent of @bs. */
bool block_job_has_bdrv(BlockJob *bjob, BlockDriverState *bs);
/* Detaches every node edge and BlockBackend of the job (it stops taking part in drains). */
void block_job_remove_all_bdrv(BlockJob *bjob);

/*
 * A BlockBackend on @bs for the job's own I/O: named after the job, with
 * request queuing disabled (see above).  Freed by
 * block_job_remove_all_bdrv, or earlier by block_job_drop_blk.
 */
BlockBackend *block_job_new_blk(BlockJob *bjob, BlockDriverState *bs, uint64_t perm,
                                uint64_t shared, GError **errp);
void block_job_drop_blk(BlockJob *bjob, BlockBackend *blk);

/*
 * The text a backing file reference should have in the header of @overlay
 * when its backing node becomes @base: @explicit when given; else, when
 * @old_ref (a header name relative to @old_dir_of) resolves to @base's file
 * from @overlay's directory too, @old_ref itself; else @base's filename.
 * Caller frees.
 */
char *block_job_backing_name(BlockDriverState *overlay, BlockDriverState *base,
                             const char *explicit, BlockDriverState *old_dir_of,
                             const char *old_ref);

/*
 * Marks in @bm every range of [0, @bytes) that some node from @top down to
 * (excluding) @base holds (@base NULL: the whole chain); with
 * @skip_top, ranges that @top itself holds are left out.  Has pause
 * points; stops early when the job is cancelled.  Returns 0 or -errno.
 */
int coroutine_fn block_job_co_mark_allocated(BlockJob *bjob, BdrvDirtyBitmap *bm,
                                             BlockDriverState *top, BlockDriverState *base,
                                             bool skip_top, int64_t bytes);

/*
 * The copy loop commit and stream share: keeps @bc issuing copies of what
 * @work marks, with a pause point and the rate limit's sleep between
 * issues, until nothing is left, the job is cancelled or a copy fails;
 * then waits for the copies in flight and, when all went well, flushes
 * @target.  Returns 0 or -errno.
 */
int coroutine_fn block_job_co_copy_marked(BlockJob *bjob, BlockCopy *bc, BdrvDirtyBitmap *work,
                                          BlockBackend *target);

#endif /* STRATA_BLOCK_JOB_H */
