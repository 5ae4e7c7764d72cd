/*
 * In-memory dirty bitmaps of a node: which byte ranges were written since
 * the bitmap was created (or last cleared there).  Jobs use them to know
 * what to copy (mirror, active commit) and as their work lists.
 *
 * A bitmap has a granularity (a power of two >= 512 bytes): one bit per
 * granule, set when any byte of it is written.  The request path marks
 * every enabled bitmap of a node after each write, write-zeroes and
 * discard on that node (bdrv_dirty_bitmaps_mark, a single pointer load
 * when the node has none).
 *
 * Threads: creating, releasing and enabling bitmaps happens in the main
 * loop, inside a drained section of the node (done here).  Setting,
 * resetting and reading run in any thread at any time (block/hbitmap.h).
 */
#ifndef STRATA_DIRTY_BITMAP_H
#define STRATA_DIRTY_BITMAP_H

#include "block/block-int.h"

typedef struct BdrvDirtyBitmap BdrvDirtyBitmap;

/*
 * Adds a bitmap of @granularity bytes (power of two, at least 512) to @bs,
 * covering its current length, all clean.  @name may be NULL; a name
 * already used on @bs is refused.  Main loop.
 */
BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockDriverState *bs, uint32_t granularity,
                                          const char *name, GError **errp);
/*
 * A bitmap attached to no node (a job's work list): it follows no writes.
 * Any thread.
 */
BdrvDirtyBitmap *bdrv_dirty_bitmap_new(int64_t size, uint32_t granularity, GError **errp);
/* Removes @bm from its node (if any) and frees it.  Main loop. */
void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bm);
/* The bitmap named @name on @bs, or NULL.  Main loop. */
BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockDriverState *bs, const char *name);
/* A disabled bitmap keeps its bits but no longer follows writes.  Main loop. */
void bdrv_dirty_bitmap_set_enabled(BdrvDirtyBitmap *bm, bool enabled);
bool bdrv_dirty_bitmap_enabled(const BdrvDirtyBitmap *bm);

uint32_t bdrv_dirty_bitmap_granularity(const BdrvDirtyBitmap *bm);
/* The length in bytes the bitmap covers. */
int64_t bdrv_dirty_bitmap_size(const BdrvDirtyBitmap *bm);
/* The node the bitmap follows, or NULL for a detached one. */
BlockDriverState *bdrv_dirty_bitmap_node(const BdrvDirtyBitmap *bm);

/* Marks / clears the granules that [@offset, @offset + @bytes) touches.  Any thread. */
void bdrv_set_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes);
void bdrv_reset_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes);
void bdrv_clear_dirty_bitmap(BdrvDirtyBitmap *bm);
/* True when the granule holding @offset is dirty. */
bool bdrv_dirty_bitmap_get(const BdrvDirtyBitmap *bm, int64_t offset);
/* Dirty bytes (whole granules; the last one cut at the size). */
int64_t bdrv_get_dirty_count(const BdrvDirtyBitmap *bm);
/* Start of the first dirty granule at or after @offset and before @end, or -1. */
int64_t bdrv_dirty_bitmap_next_dirty(const BdrvDirtyBitmap *bm, int64_t offset, int64_t end);
/* Start of the first clean granule at or after @offset and before @end, or -1. */
int64_t bdrv_dirty_bitmap_next_zero(const BdrvDirtyBitmap *bm, int64_t offset, int64_t end);
/*
 * The first dirty run starting in [@offset, @end), at most @max_bytes long
 * (rounded up to a granule) and cut at @end: granule-aligned except at the
 * end of the bitmap.  Returns false when nothing there is dirty.
 */
bool bdrv_dirty_bitmap_next_dirty_area(const BdrvDirtyBitmap *bm, int64_t offset, int64_t end,
                                       int64_t max_bytes, int64_t *area_offset,
                                       int64_t *area_bytes);
/*
 * @dst |= @src.  Both must cover the same length; granularities may differ
 * (each dirty granule of @src marks the granules of @dst it overlaps).
 * Returns false (and says why) when the lengths differ.
 */
bool bdrv_merge_dirty_bitmap(BdrvDirtyBitmap *dst, const BdrvDirtyBitmap *src, GError **errp);

#endif /* STRATA_DIRTY_BITMAP_H */
