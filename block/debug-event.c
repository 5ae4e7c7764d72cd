/*
 * Debug events and breakpoints (block/debug-event.h): the event names, the
 * out of line part of bdrv_debug_event(), and the walk from a node down to
 * the driver that handles breakpoints (blkdebug).
 *
 * No state of its own: the walks read the graph (main loop, or requests
 * under the reader lock) and the handlers keep their own locks.
 */
#include "block/block-int.h"

#include <errno.h>
#include <string.h>

static const char *const event_names[BLKDBG__MAX] = {
    [BLKDBG_L1_UPDATE] = "l1_update",
    [BLKDBG_L1_GROW_ALLOC_TABLE] = "l1_grow_alloc_table",
    [BLKDBG_L1_GROW_WRITE_TABLE] = "l1_grow_write_table",
    [BLKDBG_L1_GROW_ACTIVATE_TABLE] = "l1_grow_activate_table",
    [BLKDBG_L2_LOAD] = "l2_load",
    [BLKDBG_L2_UPDATE] = "l2_update",
    [BLKDBG_L2_UPDATE_COMPRESSED] = "l2_update_compressed",
    [BLKDBG_L2_ALLOC_COW_READ] = "l2_alloc_cow_read",
    [BLKDBG_L2_ALLOC_WRITE] = "l2_alloc_write",
    [BLKDBG_READ_AIO] = "read_aio",
    [BLKDBG_READ_BACKING_AIO] = "read_backing_aio",
    [BLKDBG_READ_COMPRESSED] = "read_compressed",
    [BLKDBG_WRITE_AIO] = "write_aio",
    [BLKDBG_WRITE_COMPRESSED] = "write_compressed",
    [BLKDBG_VMSTATE_LOAD] = "vmstate_load",
    [BLKDBG_VMSTATE_SAVE] = "vmstate_save",
    [BLKDBG_COW_READ] = "cow_read",
    [BLKDBG_COW_WRITE] = "cow_write",
    [BLKDBG_REFTABLE_LOAD] = "reftable_load",
    [BLKDBG_REFTABLE_GROW] = "reftable_grow",
    [BLKDBG_REFTABLE_UPDATE] = "reftable_update",
    [BLKDBG_REFBLOCK_LOAD] = "refblock_load",
    [BLKDBG_REFBLOCK_UPDATE] = "refblock_update",
    [BLKDBG_REFBLOCK_UPDATE_PART] = "refblock_update_part",
    [BLKDBG_REFBLOCK_ALLOC] = "refblock_alloc",
    [BLKDBG_REFBLOCK_ALLOC_HOOKUP] = "refblock_alloc_hookup",
    [BLKDBG_REFBLOCK_ALLOC_WRITE] = "refblock_alloc_write",
    [BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS] = "refblock_alloc_write_blocks",
    [BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE] = "refblock_alloc_write_table",
    [BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE] = "refblock_alloc_switch_table",
    [BLKDBG_CLUSTER_ALLOC] = "cluster_alloc",
    [BLKDBG_CLUSTER_ALLOC_BYTES] = "cluster_alloc_bytes",
    [BLKDBG_CLUSTER_FREE] = "cluster_free",
    [BLKDBG_FLUSH_TO_OS] = "flush_to_os",
    [BLKDBG_FLUSH_TO_DISK] = "flush_to_disk",
    [BLKDBG_PWRITEV_RMW_HEAD] = "pwritev_rmw_head",
    [BLKDBG_PWRITEV_RMW_AFTER_HEAD] = "pwritev_rmw_after_head",
    [BLKDBG_PWRITEV_RMW_TAIL] = "pwritev_rmw_tail",
    [BLKDBG_PWRITEV_RMW_AFTER_TAIL] = "pwritev_rmw_after_tail",
    [BLKDBG_PWRITEV] = "pwritev",
    [BLKDBG_PWRITEV_ZERO] = "pwritev_zero",
    [BLKDBG_PWRITEV_DONE] = "pwritev_done",
    [BLKDBG_EMPTY_IMAGE_PREPARE] = "empty_image_prepare",
    [BLKDBG_L1_SHRINK_WRITE_TABLE] = "l1_shrink_write_table",
    [BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS] = "l1_shrink_free_l2_clusters",
    [BLKDBG_COR_WRITE] = "cor_write",
    [BLKDBG_CLUSTER_ALLOC_SPACE] = "cluster_alloc_space",
    [BLKDBG_NONE] = "none",
};

/* The dotted spellings of QEMU before 2.9, one per event that had a dot. */
static const struct {
    const char *name;
    BlkdebugEvent ev;
} old_names[] = {
    {"l1_grow.alloc_table", BLKDBG_L1_GROW_ALLOC_TABLE},
    {"l1_grow.write_table", BLKDBG_L1_GROW_WRITE_TABLE},
    {"l1_grow.activate_table", BLKDBG_L1_GROW_ACTIVATE_TABLE},
    {"l2_alloc.cow_read", BLKDBG_L2_ALLOC_COW_READ},
    {"l2_alloc.write", BLKDBG_L2_ALLOC_WRITE},
    {"refblock_alloc.hookup", BLKDBG_REFBLOCK_ALLOC_HOOKUP},
    {"refblock_alloc.write", BLKDBG_REFBLOCK_ALLOC_WRITE},
    {"refblock_alloc.write_blocks", BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS},
    {"refblock_alloc.write_table", BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE},
    {"refblock_alloc.switch_table", BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE},
    {"pwritev_rmw.head", BLKDBG_PWRITEV_RMW_HEAD},
    {"pwritev_rmw.after_head", BLKDBG_PWRITEV_RMW_AFTER_HEAD},
    {"pwritev_rmw.tail", BLKDBG_PWRITEV_RMW_TAIL},
    {"pwritev_rmw.after_tail", BLKDBG_PWRITEV_RMW_AFTER_TAIL},
};

const char *bdrv_debug_event_name(BlkdebugEvent ev)
{
    g_assert((int)ev >= 0 && ev < BLKDBG__MAX);
    return event_names[ev];
}

int bdrv_debug_event_lookup(const char *name)
{
    for (int i = 0; i < BLKDBG__MAX; i++) {
        if (strcmp(event_names[i], name) == 0) {
            return i;
        }
    }
    for (size_t i = 0; i < G_N_ELEMENTS(old_names); i++) {
        if (strcmp(old_names[i].name, name) == 0) {
            return old_names[i].ev;
        }
    }
    return -1;
}

void coroutine_fn bdrv_debug_event_slow(BlockDriverState *bs, BlkdebugEvent ev)
{
    IO_CODE();
    while (bs && bs->drv) {
        if (bs->drv->debug_event) {
            bs->drv->debug_event(bs, ev);
            return;
        }
        if (!bs->drv->is_filter || !bs->file) {
            return;
        }
        bs = bs->file->bs;
    }
}

/* The first node from @bs down its file children whose driver handles breakpoints. */
static BlockDriverState *debug_node(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    while (bs && bs->drv && !bs->drv->debug_breakpoint) {
        bs = bs->file ? bs->file->bs : NULL;
    }
    return bs && bs->drv ? bs : NULL;
}

int bdrv_debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag)
{
    bs = debug_node(bs);
    return bs ? bs->drv->debug_breakpoint(bs, event, tag) : -ENOTSUP;
}

int bdrv_debug_remove_breakpoint(BlockDriverState *bs, const char *tag)
{
    bs = debug_node(bs);
    return bs && bs->drv->debug_remove_breakpoint ? bs->drv->debug_remove_breakpoint(bs, tag)
                                                  : -ENOTSUP;
}

int bdrv_debug_resume(BlockDriverState *bs, const char *tag)
{
    bs = debug_node(bs);
    return bs && bs->drv->debug_resume ? bs->drv->debug_resume(bs, tag) : -ENOTSUP;
}

int bdrv_debug_is_suspended(BlockDriverState *bs, const char *tag)
{
    bs = debug_node(bs);
    if (!bs || !bs->drv->debug_is_suspended) {
        return -ENOTSUP;
    }
    return bs->drv->debug_is_suspended(bs, tag) ? 1 : 0;
}
