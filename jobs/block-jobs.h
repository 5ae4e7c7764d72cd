/*
 * Starting the block jobs: commit (intermediate and active), stream and
 * mirror.  Each returns the job, started, or NULL with an error and no
 * change to the graph.  Main loop only, outside coroutines.
 *
 * Nodes are named by BlockDriverState; the caller keeps its own
 * references (each job takes the references it needs).  What each job
 * does when it finishes is described beside its start function; the design
 * is in docs/design/jobs.md.
 */
#ifndef STRATA_BLOCK_JOBS_H
#define STRATA_BLOCK_JOBS_H

#include "jobs/block-job.h"

typedef enum MirrorSyncMode {
    MIRROR_SYNC_FULL, /* the whole content as the source reads it */
    MIRROR_SYNC_TOP,  /* only what the source node itself holds; the target shares its backing */
    MIRROR_SYNC_NONE, /* only what is written from now on */
} MirrorSyncMode;

typedef enum MirrorCopyMode {
    MIRROR_COPY_BACKGROUND,     /* writes go to the source; the job copies them later */
    MIRROR_COPY_WRITE_BLOCKING, /* writes complete on both source and target */
} MirrorCopyMode;

/* Options common to every block job; zero-initialised means defaults. */
typedef struct BlockJobOptions {
    const char *id; /* NULL: generated */
    int flags;      /* JOB_MANUAL_FINALIZE, JOB_MANUAL_DISMISS */
    int64_t speed;  /* bytes/s, 0 = unlimited */
    JobErrorPolicy on_source_error;
    JobErrorPolicy on_target_error;
    /* commit, stream: the backing file name to write into the overlay's header */
    const char *backing_file;
    JobEventFunc *cb;
    void *opaque;

    /* mirror and active commit */
    MirrorSyncMode sync;
    MirrorCopyMode copy_mode;
    uint32_t granularity; /* dirty tracking unit; 0: 64 KiB or the target's cluster size */
    int64_t buf_size;     /* bytes in flight; 0: 16 MiB */
} BlockJobOptions;

/*
 * Intermediate commit: copies what @top and the nodes below it down to
 * (excluding) @base show into @base, then makes the overlay of @top use
 * @base as its backing file (graph and image header) and drops @top and
 * the nodes between.  @top must have an overlay (a node whose backing file
 * it is); for the active layer use commit_active_start().  @base must be
 * below @top in its backing chain.  Base (and the overlay, for its
 * header) are reopened read-write for the job if need be.
 */
Job *commit_start(BlockDriverState *top, BlockDriverState *base, const BlockJobOptions *o,
                  GError **errp);

/*
 * Active commit: @bs is in use (writes keep coming); built on mirror with
 * @base as its target.  It copies what is above @base, becomes ready once
 * in sync, and job_complete() switches @bs's users to @base inside a
 * drained section.  @bs and the nodes above @base are then unused (their
 * images are left as they were).
 */
Job *commit_active_start(BlockDriverState *bs, BlockDriverState *base, const BlockJobOptions *o,
                         GError **errp);

/*
 * Stream: copies into @bs what its backing chain shows above @base (NULL:
 * the whole chain), then makes @base its backing file (none when NULL),
 * in the graph and in the image header.  Guest writes to @bs may go on:
 * copies go through copy-on-read, which serialises with them.
 */
Job *stream_start(BlockDriverState *bs, BlockDriverState *base, const BlockJobOptions *o,
                  GError **errp);

/*
 * Mirror: copies @bs to @target (same length, opened read-write, not in
 * @bs's chain) and keeps copying what is written to @bs; ready once in
 * sync.  job_complete() switches @bs's users to @target inside a drained
 * section; a cancel after ready stops with @target in sync and switches
 * nothing.  With sync=top/none the target should already have @bs's
 * backing file as its own; on completion the target gets @bs's backing
 * node if it has none.
 */
Job *mirror_start(BlockDriverState *bs, BlockDriverState *target, const BlockJobOptions *o,
                  GError **errp);

/* True when @base is strictly below @top in its chain of backing files (filters skipped). */
bool block_job_chain_contains(BlockDriverState *top, BlockDriverState *base);

#endif /* STRATA_BLOCK_JOBS_H */
