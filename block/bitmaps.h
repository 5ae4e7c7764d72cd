/*
 * Persistent dirty bitmaps stored in an image (qcow2's bitmaps
 * extension): the library calls behind strata-img bitmap, and the table a
 * format driver fills to offer them (BlockDriver.bitmap_ops).  Main loop
 * only; each call drains the node(s) it works on.
 *
 * A bitmap has one bit per @granularity bytes of the disk; a set bit says
 * the range was written while the bitmap was enabled.  An enabled bitmap
 * tracks writes made through the driver from the first write on; an
 * "in use" (inconsistent) bitmap no longer matches the disk and can only
 * be removed.
 */
#ifndef STRATA_BLOCK_BITMAPS_H
#define STRATA_BLOCK_BITMAPS_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-common.h"

typedef struct BdrvBitmapInfo {
    char *name;
    uint32_t granularity; /* bytes per bit */
    bool enabled;         /* tracks writes ("auto" in qcow2) */
    bool in_use;          /* inconsistent: not saved correctly, cannot be used */
} BdrvBitmapInfo;

/*
 * A driver's bitmap callbacks: main loop, node drained; false and @errp
 * on failure, the image unchanged (or with leaked clusters after a
 * failed write).  Bits are packed least significant bit first: bit i of
 * byte k covers disk bytes [(8k + i) * granularity, + granularity).
 */
typedef struct BdrvBitmapOps {
    bool (*list)(BlockDriverState *bs, BdrvBitmapInfo **list, int *count, GError **errp);
    /* A new empty bitmap; @granularity a power of two >= 512. */
    bool (*add)(BlockDriverState *bs, const char *name, uint32_t granularity, bool enabled,
                GError **errp);
    bool (*remove)(BlockDriverState *bs, const char *name, GError **errp);
    bool (*clear)(BlockDriverState *bs, const char *name, GError **errp);
    bool (*set_enabled)(BlockDriverState *bs, const char *name, bool enabled, GError **errp);
    /* The bits of @name (*bits: *nbits bits, caller frees) and its granularity. */
    bool (*read)(BlockDriverState *bs, const char *name, uint8_t **bits, uint64_t *nbits,
                 uint32_t *granularity, GError **errp);
    /*
     * ORs into @name the bitmap @bits (@nbits bits of @granularity bytes,
     * any granularity: a set bit dirties every bit it overlaps).
     */
    bool (*merge)(BlockDriverState *bs, const char *name, const uint8_t *bits, uint64_t nbits,
                  uint32_t granularity, GError **errp);
    /* Whether this image can hold persistent bitmaps at all (qcow2: v3 only). */
    bool (*supported)(BlockDriverState *bs);
} BdrvBitmapOps;

/* The granularity qemu-img picks when none is given: the cluster size within [4k, 64k]. */
uint32_t bdrv_bitmap_default_granularity(BlockDriverState *bs);

bool bdrv_bitmap_list(BlockDriverState *bs, BdrvBitmapInfo **list, int *count, GError **errp);
void bdrv_bitmap_list_free(BdrvBitmapInfo *list, int count);
/* @granularity 0: the default. */
bool bdrv_bitmap_add(BlockDriverState *bs, const char *name, uint32_t granularity, bool enabled,
                     GError **errp);
bool bdrv_bitmap_remove(BlockDriverState *bs, const char *name, GError **errp);
bool bdrv_bitmap_clear(BlockDriverState *bs, const char *name, GError **errp);
bool bdrv_bitmap_enable(BlockDriverState *bs, const char *name, GError **errp);
bool bdrv_bitmap_disable(BlockDriverState *bs, const char *name, GError **errp);
/* ORs bitmap @src_name of @src (may be @bs) into bitmap @dst_name of @bs. */
bool bdrv_bitmap_merge(BlockDriverState *bs, const char *dst_name, BlockDriverState *src,
                       const char *src_name, GError **errp);
/* The bits of bitmap @name (see BdrvBitmapOps.read). */
bool bdrv_bitmap_read(BlockDriverState *bs, const char *name, uint8_t **bits, uint64_t *nbits,
                      uint32_t *granularity, GError **errp);

/* Whether @bs can hold persistent bitmaps (qemu's bdrv_supports_persistent_dirty_bitmap). */
bool bdrv_bitmap_supported(BlockDriverState *bs);

/*
 * What qemu-img convert --bitmaps checks on its source before it creates the
 * target: false with "Source lacks bitmap support" when @src cannot hold
 * bitmaps, or, unless @skip_broken, with "Cannot copy inconsistent bitmap
 * 'NAME'" (G_FILE_ERROR_INVAL) for the first in-use bitmap in qemu-img's
 * order (last in the directory first).  With @skip_broken and @skipped not
 * NULL, the in-use bitmaps' names are appended to @skipped in that order.
 */
bool bdrv_check_persistent_bitmaps(BlockDriverState *src, bool skip_broken, GPtrArray *skipped,
                                   GError **errp);
/*
 * Copies every persistent bitmap of @src into @dst: same name,
 * granularity, enabled state and bits; in-use ones are skipped with
 * @skip_broken and fail the copy without it.  @dst must not have bitmaps of
 * these names ("Failed to create bitmap NAME: Bitmap already exists:
 * NAME").  A bitmap that cannot be filled is removed again ("Failed to
 * populate bitmap NAME: ...").  Call it after the data is copied: enabled
 * bitmaps of @dst track writes from their creation on.
 */
bool bdrv_copy_persistent_bitmaps(BlockDriverState *src, BlockDriverState *dst, bool skip_broken,
                                  GError **errp);

#endif /* STRATA_BLOCK_BITMAPS_H */
