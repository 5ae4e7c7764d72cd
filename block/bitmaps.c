/*
 * Persistent dirty bitmaps, the block-layer side: checks the common
 * arguments and routes each operation to the format driver's bitmap_ops
 * inside a drained section of the node (and of the merge source).
 */
#include <string.h>

#include "block/bitmaps.h"
#include "block/block-int.h"

static const BdrvBitmapOps *bitmap_ops(BlockDriverState *bs, bool write, GError **errp)
{
    if (!bs->drv || !bs->drv->bitmap_ops) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Block format '%s' used by node '%s' does not support persistent bitmaps",
                    bs->drv ? bs->drv->format_name : "(none)", bdrv_get_node_name(bs));
        return NULL;
    }
    if (write && bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ROFS, "Image is read-only");
        return NULL;
    }
    return bs->drv->bitmap_ops;
}

uint32_t bdrv_bitmap_default_granularity(BlockDriverState *bs)
{
    BlockDriverInfo bdi = {0};
    GLOBAL_STATE_CODE();
    if (bs->drv && bs->drv->get_info && bs->drv->get_info(bs, &bdi) == 0 && bdi.cluster_size > 0) {
        return MIN(65536, MAX(4096, (uint32_t)bdi.cluster_size));
    }
    return 65536;
}

void bdrv_bitmap_list_free(BdrvBitmapInfo *list, int count)
{
    for (int i = 0; i < count; i++) {
        g_free(list[i].name);
    }
    g_free(list);
}

bool bdrv_bitmap_list(BlockDriverState *bs, BdrvBitmapInfo **list, int *count, GError **errp)
{
    GLOBAL_STATE_CODE();
    const BdrvBitmapOps *ops = bitmap_ops(bs, false, errp);
    *list = NULL;
    *count = 0;
    if (!ops) {
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->list(bs, list, count, errp);
    bdrv_drained_end(bs);
    return ok;
}

bool bdrv_bitmap_add(BlockDriverState *bs, const char *name, uint32_t granularity, bool enabled,
                     GError **errp)
{
    GLOBAL_STATE_CODE();
    const BdrvBitmapOps *ops = bitmap_ops(bs, true, errp);
    if (!ops) {
        return false;
    }
    if (!granularity) {
        granularity = bdrv_bitmap_default_granularity(bs);
    }
    if (granularity < 512 || (granularity & (granularity - 1))) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Granularity must be a power of two, at least 512");
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->add(bs, name, granularity, enabled, errp);
    bdrv_drained_end(bs);
    return ok;
}

/* Runs one by-name operation drained. */
static bool by_name(BlockDriverState *bs, const char *name, int op, GError **errp)
{
    GLOBAL_STATE_CODE();
    const BdrvBitmapOps *ops = bitmap_ops(bs, true, errp);
    if (!ops) {
        return false;
    }
    bool ok;
    bdrv_drained_begin(bs);
    switch (op) {
    case 0:
        ok = ops->remove(bs, name, errp);
        break;
    case 1:
        ok = ops->clear(bs, name, errp);
        break;
    default:
        ok = ops->set_enabled(bs, name, op == 2, errp);
        break;
    }
    bdrv_drained_end(bs);
    return ok;
}

bool bdrv_bitmap_remove(BlockDriverState *bs, const char *name, GError **errp)
{
    return by_name(bs, name, 0, errp);
}

bool bdrv_bitmap_clear(BlockDriverState *bs, const char *name, GError **errp)
{
    return by_name(bs, name, 1, errp);
}

bool bdrv_bitmap_enable(BlockDriverState *bs, const char *name, GError **errp)
{
    return by_name(bs, name, 2, errp);
}

bool bdrv_bitmap_disable(BlockDriverState *bs, const char *name, GError **errp)
{
    return by_name(bs, name, 3, errp);
}

bool bdrv_bitmap_read(BlockDriverState *bs, const char *name, uint8_t **bits, uint64_t *nbits,
                      uint32_t *granularity, GError **errp)
{
    GLOBAL_STATE_CODE();
    const BdrvBitmapOps *ops = bitmap_ops(bs, false, errp);
    if (!ops) {
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->read(bs, name, bits, nbits, granularity, errp);
    bdrv_drained_end(bs);
    return ok;
}

bool bdrv_bitmap_merge(BlockDriverState *bs, const char *dst_name, BlockDriverState *src,
                       const char *src_name, GError **errp)
{
    g_autofree uint8_t *bits = NULL;
    uint64_t nbits;
    uint32_t gran;

    GLOBAL_STATE_CODE();
    const BdrvBitmapOps *ops = bitmap_ops(bs, true, errp);
    if (!ops || !bdrv_bitmap_read(src, src_name, &bits, &nbits, &gran, errp)) {
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->merge(bs, dst_name, bits, nbits, gran, errp);
    bdrv_drained_end(bs);
    return ok;
}

bool bdrv_bitmap_supported(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    return bs->drv && bs->drv->bitmap_ops &&
           (!bs->drv->bitmap_ops->supported || bs->drv->bitmap_ops->supported(bs));
}

bool bdrv_check_persistent_bitmaps(BlockDriverState *src, bool skip_broken, GPtrArray *skipped,
                                   GError **errp)
{
    BdrvBitmapInfo *list;
    int n;

    GLOBAL_STATE_CODE();
    if (!bdrv_bitmap_supported(src)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS, "Source lacks bitmap support");
        return false;
    }
    if (!bdrv_bitmap_list(src, &list, &n, errp)) {
        return false;
    }
    bool ok = true;
    /* qemu walks its in-memory list, which holds the directory backwards. */
    for (int i = n - 1; i >= 0 && ok; i--) {
        if (!list[i].in_use) {
            continue;
        }
        if (!skip_broken) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Cannot copy inconsistent bitmap '%s'", list[i].name);
            ok = false;
        } else if (skipped) {
            g_ptr_array_add(skipped, g_strdup(list[i].name));
        }
    }
    bdrv_bitmap_list_free(list, n);
    return ok;
}

/* Creates bitmap @bm in @dst and ORs the bits of @src's bitmap of that name into it. */
static bool copy_one_bitmap(BlockDriverState *src, BlockDriverState *dst, const BdrvBitmapInfo *bm,
                            GError **errp)
{
    GError *err = NULL;

    if (!bdrv_bitmap_add(dst, bm->name, bm->granularity, bm->enabled, &err)) {
        g_set_error(errp, err->domain, err->code, "Failed to create bitmap %s: %s", bm->name,
                    err->message);
        g_error_free(err);
        return false;
    }
    if (!bdrv_bitmap_merge(dst, bm->name, src, bm->name, &err)) {
        g_set_error(errp, err->domain, err->code, "Failed to populate bitmap %s: %s", bm->name,
                    err->message);
        g_error_free(err);
        bdrv_bitmap_remove(dst, bm->name, NULL);
        return false;
    }
    return true;
}

bool bdrv_copy_persistent_bitmaps(BlockDriverState *src, BlockDriverState *dst, bool skip_broken,
                                  GError **errp)
{
    BdrvBitmapInfo *list, *have;
    int n, nhave;

    GLOBAL_STATE_CODE();
    if (!bdrv_check_persistent_bitmaps(src, skip_broken, NULL, errp) ||
        !bdrv_bitmap_list(src, &list, &n, errp)) {
        return false;
    }
    if (!bdrv_bitmap_list(dst, &have, &nhave, errp)) {
        bdrv_bitmap_list_free(list, n);
        return false;
    }
    /*
     * qemu adds them last first, so the first name @dst already has, in
     * that order, is the one it reports; it then writes the directory
     * first to last.  Both come out the same when we look first and add
     * in directory order.
     */
    bool ok = true;
    int64_t src_len = bdrv_getlength(src), dst_len = bdrv_getlength(dst);
    for (int i = n - 1; i >= 0 && ok; i--) {
        if (list[i].in_use) {
            continue;
        }
        for (int k = 0; k < nhave && ok; k++) {
            if (!strcmp(have[k].name, list[i].name)) {
                g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                            "Failed to create bitmap %s: Bitmap already exists: %s", list[i].name,
                            list[i].name);
                ok = false;
            }
        }
        /* qemu merges only bitmaps of one disk size (a larger -n target fails). */
        if (ok && src_len != dst_len) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Failed to populate bitmap %s: Bitmaps are of different sizes "
                        "(destination size is %" G_GINT64_FORMAT
                        ", source size is %" G_GINT64_FORMAT ") and can't be merged",
                        list[i].name, dst_len, src_len);
            ok = false;
        }
    }
    for (int i = 0; i < n && ok; i++) {
        if (!list[i].in_use) {
            ok = copy_one_bitmap(src, dst, &list[i], errp);
        }
    }
    bdrv_bitmap_list_free(have, nhave);
    bdrv_bitmap_list_free(list, n);
    return ok;
}
