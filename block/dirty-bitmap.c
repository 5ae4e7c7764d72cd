/*
 * Dirty bitmaps of a node (see dirty-bitmap.h).
 *
 * The node's bitmaps form a singly linked list whose head is
 * bs->dirty_bitmaps.  The list only changes in the main loop while the node
 * is drained, so no request walks it at that moment; requests load the head
 * with acquire ordering and walk it without a lock.  Bits live in an
 * HBitmap, whose sets are lock-free, so the request path only pays an
 * atomic OR per touched word (nothing when the bits are set already).
 */
#include "block/dirty-bitmap.h"

#include <string.h>

#include "block/hbitmap.h"

struct BdrvDirtyBitmap {
    BlockDriverState *bs;
    char *name;
    uint32_t granularity;
    int shift; /* log2(granularity) */
    int64_t size;
    HBitmap *hb;
    _Atomic bool enabled;
    BdrvDirtyBitmap *_Atomic next; /* main loop writes (drained); requests read */
};

static BdrvDirtyBitmap *bm_head(BlockDriverState *bs)
{
    return atomic_load_explicit(&bs->dirty_bitmaps, memory_order_acquire);
}

static bool bm_check_granularity(uint32_t granularity, GError **errp)
{
    if (granularity < 512 || (granularity & (granularity - 1))) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Granularity must be a power of 2 of at least 512 bytes (got %u)", granularity);
        return false;
    }
    return true;
}

static BdrvDirtyBitmap *bm_new(BlockDriverState *bs, int64_t size, uint32_t granularity,
                               const char *name)
{
    BdrvDirtyBitmap *bm = g_new0(BdrvDirtyBitmap, 1);
    bm->bs = bs;
    bm->name = g_strdup(name);
    bm->granularity = granularity;
    bm->shift = __builtin_ctz(granularity);
    bm->size = size;
    bm->hb = hbitmap_new((size + granularity - 1) >> bm->shift);
    atomic_init(&bm->enabled, bs != NULL);
    return bm;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_new(int64_t size, uint32_t granularity, GError **errp)
{
    if (!bm_check_granularity(granularity, errp)) {
        return NULL;
    }
    return bm_new(NULL, MAX(size, 0), granularity, NULL);
}

BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockDriverState *bs, uint32_t granularity,
                                          const char *name, GError **errp)
{
    GLOBAL_STATE_CODE();
    if (!bm_check_granularity(granularity, errp)) {
        return NULL;
    }
    if (name && bdrv_find_dirty_bitmap(bs, name)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST, "Bitmap already exists: %s", name);
        return NULL;
    }
    int64_t size = bdrv_getlength(bs);
    if (size < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-size),
                    "Cannot get the length of node '%s': %s", bs->node_name, g_strerror(-size));
        return NULL;
    }
    BdrvDirtyBitmap *bm = bm_new(bs, size, granularity, name);
    bdrv_drained_begin(bs);
    atomic_init(&bm->next, bm_head(bs));
    atomic_store_explicit(&bs->dirty_bitmaps, bm, memory_order_release);
    bdrv_drained_end(bs);
    return bm;
}

void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    BlockDriverState *bs = bm->bs;

    if (bs) {
        GLOBAL_STATE_CODE();
        bdrv_drained_begin(bs);
        BdrvDirtyBitmap *_Atomic *link = &bs->dirty_bitmaps;
        while (atomic_load(link) != bm) {
            g_assert(atomic_load(link));
            link = &atomic_load(link)->next;
        }
        atomic_store_explicit(link, atomic_load(&bm->next), memory_order_release);
        bdrv_drained_end(bs);
    }
    hbitmap_free(bm->hb);
    g_free(bm->name);
    g_free(bm);
}

BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockDriverState *bs, const char *name)
{
    for (BdrvDirtyBitmap *bm = bm_head(bs); bm; bm = atomic_load(&bm->next)) {
        if (bm->name && strcmp(bm->name, name) == 0) {
            return bm;
        }
    }
    return NULL;
}

void bdrv_dirty_bitmap_set_enabled(BdrvDirtyBitmap *bm, bool enabled)
{
    GLOBAL_STATE_CODE();
    if (!bm->bs) {
        return; /* a detached bitmap follows no writes */
    }
    bdrv_drained_begin(bm->bs);
    atomic_store(&bm->enabled, enabled);
    bdrv_drained_end(bm->bs);
}

bool bdrv_dirty_bitmap_enabled(const BdrvDirtyBitmap *bm)
{
    return atomic_load(&bm->enabled);
}

uint32_t bdrv_dirty_bitmap_granularity(const BdrvDirtyBitmap *bm)
{
    return bm->granularity;
}

int64_t bdrv_dirty_bitmap_size(const BdrvDirtyBitmap *bm)
{
    return bm->size;
}

BlockDriverState *bdrv_dirty_bitmap_node(const BdrvDirtyBitmap *bm)
{
    return bm->bs;
}

/* The granules [*first, *first + *count) that the byte range touches; false if none. */
static bool bm_granules(const BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes, uint64_t *first,
                        uint64_t *count)
{
    if (offset < 0 || bytes <= 0 || offset >= bm->size) {
        return false;
    }
    int64_t end = bytes > bm->size - offset ? bm->size : offset + bytes;
    *first = offset >> bm->shift;
    *count = ((end - 1) >> bm->shift) - *first + 1;
    return true;
}

void bdrv_set_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes)
{
    uint64_t first, count;
    if (bm_granules(bm, offset, bytes, &first, &count)) {
        hbitmap_set(bm->hb, first, count);
    }
}

void bdrv_reset_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes)
{
    uint64_t first, count;
    if (bm_granules(bm, offset, bytes, &first, &count)) {
        hbitmap_reset(bm->hb, first, count);
    }
}

void bdrv_clear_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    hbitmap_reset_all(bm->hb);
}

bool bdrv_dirty_bitmap_get(const BdrvDirtyBitmap *bm, int64_t offset)
{
    return offset >= 0 && hbitmap_get(bm->hb, offset >> bm->shift);
}

int64_t bdrv_get_dirty_count(const BdrvDirtyBitmap *bm)
{
    int64_t bytes = (int64_t)hbitmap_count(bm->hb) << bm->shift;
    /* The last granule may stick out past the end. */
    if (bytes && hbitmap_get(bm->hb, hbitmap_size(bm->hb) - 1)) {
        bytes -= ((int64_t)hbitmap_size(bm->hb) << bm->shift) - bm->size;
    }
    return bytes;
}

int64_t bdrv_dirty_bitmap_next_dirty(const BdrvDirtyBitmap *bm, int64_t offset, int64_t end)
{
    end = MIN(end, bm->size);
    if (offset < 0 || offset >= end) {
        return -1;
    }
    int64_t g = hbitmap_next_set(bm->hb, offset >> bm->shift);
    if (g < 0) {
        return -1;
    }
    int64_t at = MAX(g << bm->shift, offset);
    return at < end ? at : -1;
}

int64_t bdrv_dirty_bitmap_next_zero(const BdrvDirtyBitmap *bm, int64_t offset, int64_t end)
{
    end = MIN(end, bm->size);
    if (offset < 0 || offset >= end) {
        return -1;
    }
    int64_t g = hbitmap_next_clear(bm->hb, offset >> bm->shift, ((end - 1) >> bm->shift) + 1);
    if (g < 0) {
        return -1;
    }
    int64_t at = MAX(g << bm->shift, offset);
    return at < end ? at : -1;
}

bool bdrv_dirty_bitmap_next_dirty_area(const BdrvDirtyBitmap *bm, int64_t offset, int64_t end,
                                       int64_t max_bytes, int64_t *area_offset, int64_t *area_bytes)
{
    uint64_t first, count;
    end = MIN(end, bm->size);
    if (offset < 0 || offset >= end || max_bytes <= 0) {
        return false;
    }
    uint64_t gend = ((end - 1) >> bm->shift) + 1;
    uint64_t gmax = ((max_bytes - 1) >> bm->shift) + 1;
    if (!hbitmap_next_set_area(bm->hb, offset >> bm->shift, gend, gmax, &first, &count)) {
        return false;
    }
    int64_t s = MAX((int64_t)(first << bm->shift), offset);
    int64_t e = MIN((int64_t)((first + count) << bm->shift), end);
    *area_offset = s;
    *area_bytes = e - s;
    return true;
}

bool bdrv_merge_dirty_bitmap(BdrvDirtyBitmap *dst, const BdrvDirtyBitmap *src, GError **errp)
{
    if (dst->size != src->size) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Bitmaps of different lengths cannot be merged (%" G_GINT64_FORMAT
                    " and %" G_GINT64_FORMAT " bytes)",
                    dst->size, src->size);
        return false;
    }
    if (dst->granularity == src->granularity) {
        hbitmap_merge(dst->hb, src->hb);
        return true;
    }
    int64_t off = 0, bytes;
    while (bdrv_dirty_bitmap_next_dirty_area(src, off, src->size, INT64_MAX / 2, &off, &bytes)) {
        bdrv_set_dirty_bitmap(dst, off, bytes);
        off += bytes;
    }
    return true;
}

void bdrv_dirty_bitmaps_mark_slow(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    for (BdrvDirtyBitmap *bm = bm_head(bs); bm;
         bm = atomic_load_explicit(&bm->next, memory_order_acquire)) {
        if (atomic_load_explicit(&bm->enabled, memory_order_relaxed)) {
            bdrv_set_dirty_bitmap(bm, offset, bytes);
        }
    }
}
