/*
 * Block layer debug events: named points in a format driver's metadata and
 * data paths ("l2_update", "refblock_alloc_write", ...) that a test driver
 * below it (blkdebug) can react to, by failing the next requests or by
 * stopping the request at a breakpoint.
 *
 * The names and their order are QEMU 7.2's BlkdebugEvent, so blkdebug
 * configuration files and qemu-io scripts written for QEMU carry over.
 * Older QEMU spelled the dotted events with a dot ("l2_alloc.write");
 * bdrv_debug_event_lookup() accepts both spellings.
 *
 * Cost when nobody listens: bdrv_debug_event() (block-int.h) is an inline
 * check of the child node's driver (two loads of a static table); it calls
 * out of line only when that driver handles events or is a filter.
 */
#ifndef STRATA_BLOCK_DEBUG_EVENT_H
#define STRATA_BLOCK_DEBUG_EVENT_H

#include <stdbool.h>

#include "block/block-common.h"

typedef enum BlkdebugEvent {
    BLKDBG_L1_UPDATE,
    BLKDBG_L1_GROW_ALLOC_TABLE,
    BLKDBG_L1_GROW_WRITE_TABLE,
    BLKDBG_L1_GROW_ACTIVATE_TABLE,
    BLKDBG_L2_LOAD,
    BLKDBG_L2_UPDATE,
    BLKDBG_L2_UPDATE_COMPRESSED,
    BLKDBG_L2_ALLOC_COW_READ,
    BLKDBG_L2_ALLOC_WRITE,
    BLKDBG_READ_AIO,
    BLKDBG_READ_BACKING_AIO,
    BLKDBG_READ_COMPRESSED,
    BLKDBG_WRITE_AIO,
    BLKDBG_WRITE_COMPRESSED,
    BLKDBG_VMSTATE_LOAD,
    BLKDBG_VMSTATE_SAVE,
    BLKDBG_COW_READ,
    BLKDBG_COW_WRITE,
    BLKDBG_REFTABLE_LOAD,
    BLKDBG_REFTABLE_GROW,
    BLKDBG_REFTABLE_UPDATE,
    BLKDBG_REFBLOCK_LOAD,
    BLKDBG_REFBLOCK_UPDATE,
    BLKDBG_REFBLOCK_UPDATE_PART,
    BLKDBG_REFBLOCK_ALLOC,
    BLKDBG_REFBLOCK_ALLOC_HOOKUP,
    BLKDBG_REFBLOCK_ALLOC_WRITE,
    BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE,
    BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE,
    BLKDBG_CLUSTER_ALLOC,
    BLKDBG_CLUSTER_ALLOC_BYTES,
    BLKDBG_CLUSTER_FREE,
    BLKDBG_FLUSH_TO_OS,
    BLKDBG_FLUSH_TO_DISK,
    BLKDBG_PWRITEV_RMW_HEAD,
    BLKDBG_PWRITEV_RMW_AFTER_HEAD,
    BLKDBG_PWRITEV_RMW_TAIL,
    BLKDBG_PWRITEV_RMW_AFTER_TAIL,
    BLKDBG_PWRITEV,
    BLKDBG_PWRITEV_ZERO,
    BLKDBG_PWRITEV_DONE,
    BLKDBG_EMPTY_IMAGE_PREPARE,
    BLKDBG_L1_SHRINK_WRITE_TABLE,
    BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS,
    BLKDBG_COR_WRITE,
    BLKDBG_CLUSTER_ALLOC_SPACE,
    BLKDBG_NONE, /* fired once by blkdebug itself when it opens */
    BLKDBG__MAX,
} BlkdebugEvent;

/* The QEMU 7.2 name of @ev ("l2_alloc_write"). */
const char *bdrv_debug_event_name(BlkdebugEvent ev);
/*
 * The event named @name, in QEMU 7.2's spelling or the older dotted one
 * ("l2_alloc.write"), or -1.
 */
int bdrv_debug_event_lookup(const char *name);

/*
 * Runs the event handler of the first node at or below @bs, through
 * filters, whose driver has one.  The handler may yield (a breakpoint).
 * Format drivers call bdrv_debug_event() (block-int.h), which checks
 * inline whether anybody listens.  IO_CODE.
 */
void coroutine_fn bdrv_debug_event_slow(BlockDriverState *bs, BlkdebugEvent ev);

/*
 * Breakpoints, for strata-io's break / wait_break / resume / remove_break.
 * Each walks from @bs down its primary (file) children to the first node
 * whose driver handles breakpoints; -ENOTSUP when there is none.  Main
 * loop only.
 */
/* Stops the next request that reaches @event, tagged @tag.  -ENOENT for an unknown event. */
int bdrv_debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag);
/* Removes @tag's breakpoints and resumes requests stopped there.  -ENOENT when none. */
int bdrv_debug_remove_breakpoint(BlockDriverState *bs, const char *tag);
/* Resumes one request stopped at @tag.  -ENOENT when none is. */
int bdrv_debug_resume(BlockDriverState *bs, const char *tag);
/* 1 when a request is stopped at @tag, 0 when none is, -ENOTSUP without blkdebug. */
int bdrv_debug_is_suspended(BlockDriverState *bs, const char *tag);

#endif /* STRATA_BLOCK_DEBUG_EVENT_H */
