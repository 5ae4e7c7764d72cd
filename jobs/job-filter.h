/*
 * job-top: the filter node a job puts above a node it works on (QEMU's
 * commit_top / mirror_top).  It shows exactly its child's content.  It
 * serves two purposes:
 *  - permissions: the users above the filter keep what they asked for, but
 *    the filter itself lets anybody write below it (it shares everything
 *    on its child), so the job may write a backing file the users above
 *    read through (commit, active commit);
 *  - interception: a job may hook the writes that come through it (the
 *    write-blocking mode of mirror).
 *
 * Main loop for inserting, hooking and dropping; requests through the
 * filter come from any thread.
 */
#ifndef STRATA_JOB_FILTER_H
#define STRATA_JOB_FILTER_H

#include "block/block-int.h"

/*
 * A write of [@offset, @offset + @bytes) arrived at the filter: do it on
 * @child (and whatever else the job wants).  @qiov is NULL for
 * write-zeroes (@flags then holds BDRV_REQ_ZERO_WRITE).  Returns 0 or
 * -errno.  Any thread, in a coroutine, graph reader lock held.
 */
typedef int coroutine_fn JobFilterWriteFunc(void *opaque, BdrvChild *child, int64_t offset,
                                            int64_t bytes, IOVector *qiov, BdrvRequestFlags flags);

/*
 * Opens a job-top filter on @bs and moves @bs's parents onto it.  Returns
 * the filter with a reference for the caller, or NULL (with an error; also
 * when @bs has no parent to move).
 */
BlockDriverState *job_filter_insert(BlockDriverState *bs, GError **errp);
/* Routes writes through @fn (NULL: plain pass-through again).  Drains the filter. */
void job_filter_set_write_hook(BlockDriverState *filter, JobFilterWriteFunc *fn, void *opaque);
/*
 * Moves the filter's parents back to its child (or, when @replacement is
 * not NULL, to @replacement) and drops the caller's reference.
 */
bool job_filter_drop(BlockDriverState *filter, BlockDriverState *replacement, GError **errp);

#endif /* STRATA_JOB_FILTER_H */
