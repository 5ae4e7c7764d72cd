/*
 * Block status: what a range of a node (or of a backing chain) holds —
 * data, zeroes, or nothing of its own — and where the data lives.
 *
 * Any thread, in a coroutine, with the graph reader lock held.  Queries
 * count as requests in flight so that drain waits for them too.
 */
#include "block/block-priv.h"

#include <errno.h>

int coroutine_fn bdrv_co_block_status_from_file(BlockDriverState *bs, bool want_zero,
                                                int64_t offset, int64_t bytes, int64_t *pnum,
                                                int64_t *map, BlockDriverState **file)
{
    *pnum = bytes;
    *map = offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

/* Asks the driver (or the default for its kind), with the range aligned for it. */
static int coroutine_fn bdrv_driver_block_status(BlockDriverState *bs, bool want_zero,
                                                 int64_t offset, int64_t bytes, int64_t *pnum,
                                                 int64_t *map, BlockDriverState **file)
{
    BlockDriver *drv = bs->drv;
    if (!drv->co_block_status) {
        if (drv->is_protocol) {
            *pnum = bytes;
            *map = offset;
            *file = bs;
            return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
        }
        if (drv->is_filter && bs->file) {
            return bdrv_co_block_status_from_file(bs, want_zero, offset, bytes, pnum, map, file);
        }
        *pnum = bytes;
        return BDRV_BLOCK_DATA;
    }

    int64_t align = bs->bl.request_alignment;
    int64_t head = offset % align;
    int64_t aoff = offset - head;
    int64_t aend = offset + bytes;
    aend += (aend % align) ? align - aend % align : 0;

    int ret = drv->co_block_status(bs, want_zero, aoff, aend - aoff, pnum, map, file);
    if (ret < 0) {
        return ret;
    }
    if (*pnum <= 0) {
        return -EIO; /* a driver must describe at least one byte */
    }
    /* Whole blocks were described: report from the caller's offset on. */
    *pnum += (*pnum % align) ? align - *pnum % align : 0;
    *pnum = MIN(*pnum - head, bytes);
    if (ret & BDRV_BLOCK_OFFSET_VALID) {
        *map += head;
    }
    return ret;
}

/* DATA reported by a format may still read as zeroes in its file: ask it. */
static int coroutine_fn bdrv_refine_zero(int ret, bool want_zero, BlockDriverState *bs,
                                         int64_t *pnum, int64_t map, BlockDriverState *file)
{
    if (!want_zero || !(ret & BDRV_BLOCK_RECURSE) || !(ret & BDRV_BLOCK_OFFSET_VALID) || !file ||
        file == bs || (ret & BDRV_BLOCK_ZERO)) {
        return ret;
    }
    int64_t file_pnum;
    int ret2 = bdrv_co_block_status(file, true, map, *pnum, &file_pnum, NULL, NULL);
    if (ret2 < 0) {
        return ret;
    }
    if ((ret2 & BDRV_BLOCK_EOF) && file_pnum == 0) {
        return ret | BDRV_BLOCK_ZERO; /* past the end of the file: zeroes */
    }
    *pnum = MIN(*pnum, file_pnum);
    return ret | (ret2 & BDRV_BLOCK_ZERO);
}

int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                      int64_t bytes, int64_t *pnum, int64_t *map,
                                      BlockDriverState **file)
{
    IO_CODE();
    int64_t local_pnum, local_map = 0;
    BlockDriverState *local_file = NULL;
    int ret;

    pnum = pnum ? pnum : &local_pnum;
    *pnum = 0;
    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes) {
        return -EINVAL;
    }
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    int64_t total = bdrv_co_getlength(bs);
    if (total < 0) {
        return total;
    }
    if (offset >= total) {
        return BDRV_BLOCK_EOF;
    }
    if (bytes == 0) {
        return 0;
    }
    bytes = MIN(bytes, total - offset);

    bdrv_inc_in_flight(bs);
    ret = bdrv_driver_block_status(bs, want_zero, offset, bytes, pnum, &local_map, &local_file);
    if (ret < 0) {
        goto out;
    }
    if (ret & BDRV_BLOCK_RAW) {
        /* The driver defers to a node below: its answer is ours. */
        g_assert((ret & BDRV_BLOCK_OFFSET_VALID) && local_file);
        ret = bdrv_co_block_status(local_file, want_zero, local_map, *pnum, pnum, &local_map,
                                   &local_file);
        goto out;
    }
    if (ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) {
        ret |= BDRV_BLOCK_ALLOCATED;
    } else if (want_zero && bs->drv->supports_backing) {
        /* Not ours: zeroes unless a backing file has something there. */
        BlockDriverState *backing = bdrv_cow_bs(bs);
        if (!backing || offset >= bdrv_co_getlength(backing)) {
            ret |= BDRV_BLOCK_ZERO;
        }
    }
    ret = bdrv_refine_zero(ret, want_zero, bs, pnum, local_map, local_file);
    ret &= ~BDRV_BLOCK_RECURSE;
    if (offset + *pnum == total) {
        ret |= BDRV_BLOCK_EOF;
    }
out:
    bdrv_dec_in_flight(bs);
    if (ret >= 0) {
        if (map) {
            *map = local_map;
        }
        if (file) {
            *file = local_file;
        }
    }
    return ret;
}

int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs, BlockDriverState *base,
                                            bool want_zero, int64_t offset, int64_t bytes,
                                            int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    IO_CODE();
    int64_t local_pnum;
    int64_t n = bytes;
    int ret = 0;

    pnum = pnum ? pnum : &local_pnum;
    for (BlockDriverState *p = bs; p && p != base;) {
        ret = bdrv_co_block_status(p, want_zero, offset, n, pnum, map, file);
        if (ret < 0 || (ret & BDRV_BLOCK_ALLOCATED)) {
            return ret;
        }
        if ((ret & BDRV_BLOCK_EOF) && *pnum == 0) {
            if (p == bs) {
                return ret;
            }
            /* A backing layer shorter than the overlay reads as zeroes past its end. */
            *pnum = n;
            return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
        }
        n = *pnum;
        BdrvChild *next = bdrv_filter_or_cow_child(p);
        if (!next) {
            return ret;
        }
        p = next->bs;
    }
    *pnum = n;
    return 0;
}

int coroutine_fn bdrv_co_is_allocated(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      int64_t *pnum)
{
    IO_CODE();
    int64_t local_pnum;
    pnum = pnum ? pnum : &local_pnum;
    int ret = bdrv_co_block_status(bs, false, offset, bytes, pnum, NULL, NULL);
    if (ret < 0) {
        return ret;
    }
    if ((ret & BDRV_BLOCK_EOF) && *pnum == 0) {
        *pnum = bytes; /* past the end: nothing of ours there */
        return 0;
    }
    return !!(ret & BDRV_BLOCK_ALLOCATED);
}

int coroutine_fn bdrv_co_is_allocated_above(BlockDriverState *top, BlockDriverState *base,
                                            bool include_base, int64_t offset, int64_t bytes,
                                            int64_t *pnum)
{
    IO_CODE();
    int64_t n = bytes;
    BlockDriverState *p = top;

    if (!include_base && top == base) {
        *pnum = bytes;
        return 0;
    }
    for (;;) {
        int64_t pnum_inter;
        int ret = bdrv_co_is_allocated(p, offset, n, &pnum_inter);
        if (ret < 0) {
            return ret;
        }
        if (ret) {
            *pnum = pnum_inter;
            return 1;
        }
        n = MIN(n, pnum_inter);
        BdrvChild *next = bdrv_filter_or_cow_child(p);
        if (p == base || !next || (next->bs == base && !include_base)) {
            break;
        }
        p = next->bs;
    }
    *pnum = n;
    return 0;
}
