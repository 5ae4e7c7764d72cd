/*
 * BlockBackend, global state: creating, attaching, permissions and
 * references.  Main loop only (each function asserts GLOBAL_STATE_CODE()).
 */
#ifndef STRATA_BLOCK_BACKEND_GLOBAL_STATE_H
#define STRATA_BLOCK_BACKEND_GLOBAL_STATE_H

#include "block/block-backend-common.h"

/* A backend with no node; @perm/@shared apply once a node is inserted. */
BlockBackend *blk_new(uint64_t perm, uint64_t shared_perm);
/*
 * Opens @filename/@options (consumed) with bdrv_open and attaches the
 * result.  Takes write permission with BDRV_O_RDWR, resize with
 * BDRV_O_RESIZE, shares consistent read and unchanged writes (everything
 * with BDRV_O_FORCE_SHARE).
 */
BlockBackend *blk_new_open(const char *filename, GHashTable *options, int flags, GError **errp);
void blk_ref(BlockBackend *blk);
/* The last reference drains, detaches the node and frees the backend. */
void blk_unref(BlockBackend *blk);
/* Names the backend in permission errors ("block device 'NAME'"). */
void blk_set_name(BlockBackend *blk, const char *name);
const char *blk_name(BlockBackend *blk);

/* Attaches @bs (a new reference is taken) with the backend's permissions. */
bool blk_insert_bs(BlockBackend *blk, BlockDriverState *bs, GError **errp);
/* Drains and detaches the node, if any. */
void blk_remove_bs(BlockBackend *blk);
/* The root node, or NULL. */
BlockDriverState *blk_bs(BlockBackend *blk);
bool blk_set_perm(BlockBackend *blk, uint64_t perm, uint64_t shared_perm, GError **errp);
void blk_get_perm(BlockBackend *blk, uint64_t *perm, uint64_t *shared_perm);

/* Writes past the end are allowed (image creation); default off. */
void blk_set_allow_write_beyond_eof(BlockBackend *blk, bool allow);
/* Without the write cache every write is FUA (cache=writethrough); default on. */
void blk_set_enable_write_cache(BlockBackend *blk, bool enable);
bool blk_enable_write_cache(BlockBackend *blk);
/* Requests keep flowing during drained sections (for internal users). */
void blk_set_disable_request_queuing(BlockBackend *blk, bool disable);

/* Waits until the backend and its node have nothing in flight; outside coroutines. */
void blk_drain(BlockBackend *blk);
/* A consistent-enough copy of the counters (each one is read atomically). */
void blk_get_stats(BlockBackend *blk, BlockAcctStats *stats);

#endif /* STRATA_BLOCK_BACKEND_GLOBAL_STATE_H */
