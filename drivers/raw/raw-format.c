/*
 * The `raw` format driver: the guest sees the bytes of its `file` child,
 * optionally a window of them ("offset" and "size" options).  Every
 * callback forwards to the child with the offset added; alignment and
 * transfer limits are the child's, merged in by the block core.
 *
 * Threading: offset/size are set at open and only read afterwards, so the
 * I/O callbacks run from any thread without a lock.
 */
#include <errno.h>
#include <inttypes.h>

#include "block/block-int.h"
#include "drivers/raw/raw-drivers.h"

typedef struct BDRVRawFormatState {
    uint64_t offset;
    uint64_t size;
    bool has_size; /* without it the window runs to the end of the (growable) child */
} BDRVRawFormatState;

static int raw_fmt_probe(const uint8_t *buf, int len, const char *filename)
{
    return 1; /* anything is a raw image, if nothing better matches */
}

static bool raw_fmt_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    BDRVRawFormatState *s = bs->opaque;
    g_autofree char *size_str = g_strdup(opts_get(options, "size"));

    s->has_size = size_str != NULL;
    if (!opts_take_size(options, "offset", 0, &s->offset, errp) ||
        !opts_take_size(options, "size", 0, &s->size, errp)) {
        return false;
    }

    BlockDriverState *file = bs->file->bs;
    int64_t len = bdrv_getlength(file);
    if (len < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-len),
                    "Could not get the length of the file: %s", g_strerror(-len));
        return false;
    }
    if (s->offset > (uint64_t)len) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "offset (%" PRIu64 ") is past the end of the file (%" PRId64 " bytes)",
                    s->offset, len);
        return false;
    }
    if (s->has_size && s->size > (uint64_t)len - s->offset) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "offset (%" PRIu64 ") + size (%" PRIu64 ") exceed the file (%" PRId64 " bytes)",
                    s->offset, s->size, len);
        return false;
    }
    /* Aligned requests on this node must stay aligned on the child. */
    uint32_t align = file->bl.request_alignment ? file->bl.request_alignment : 1;
    if (s->offset % align || (s->has_size && s->size % align)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "offset and size must be multiples of the file's request alignment (%u)",
                    align);
        return false;
    }

    bs->supported_write_flags = file->supported_write_flags;
    bs->supported_zero_flags = file->supported_zero_flags;
    bs->supported_truncate_flags = s->has_size ? 0 : file->supported_truncate_flags;
    return true;
}

static int coroutine_fn raw_fmt_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          IOVector *qiov, BdrvRequestFlags flags)
{
    BDRVRawFormatState *s = bs->opaque;
    return bdrv_co_preadv(bs->file, offset + s->offset, bytes, qiov, flags);
}

static int coroutine_fn raw_fmt_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           IOVector *qiov, BdrvRequestFlags flags)
{
    BDRVRawFormatState *s = bs->opaque;
    return bdrv_co_pwritev(bs->file, offset + s->offset, bytes, qiov, flags);
}

static int coroutine_fn raw_fmt_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                 int64_t bytes, BdrvRequestFlags flags)
{
    BDRVRawFormatState *s = bs->opaque;
    return bdrv_co_pwrite_zeroes(bs->file, offset + s->offset, bytes, flags);
}

static int coroutine_fn raw_fmt_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVRawFormatState *s = bs->opaque;
    return bdrv_co_pdiscard(bs->file, offset + s->offset, bytes);
}

static int coroutine_fn raw_fmt_co_block_status(BlockDriverState *bs, bool want_zero,
                                                int64_t offset, int64_t bytes, int64_t *pnum,
                                                int64_t *map, BlockDriverState **file)
{
    BDRVRawFormatState *s = bs->opaque;
    *pnum = bytes;
    *map = offset + s->offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t coroutine_fn raw_fmt_co_getlength(BlockDriverState *bs)
{
    BDRVRawFormatState *s = bs->opaque;
    if (s->has_size) {
        return s->size;
    }
    int64_t len = bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        return len;
    }
    return len > (int64_t)s->offset ? len - (int64_t)s->offset : 0;
}

static int64_t coroutine_fn raw_fmt_co_get_allocated_file_size(BlockDriverState *bs)
{
    return bdrv_co_get_allocated_file_size(bs->file->bs);
}

static int coroutine_fn raw_fmt_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                            PreallocMode prealloc, BdrvRequestFlags flags,
                                            GError **errp)
{
    BDRVRawFormatState *s = bs->opaque;
    if (s->has_size) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                    "Cannot resize a raw node opened with a fixed 'size'");
        return -ENOTSUP;
    }
    return bdrv_co_truncate(bs->file, offset + s->offset, exact, prealloc, flags, errp);
}

static int raw_fmt_has_zero_init(BlockDriverState *bs)
{
    BlockDriverState *file = bs->file->bs;
    return file->drv && file->drv->has_zero_init ? file->drv->has_zero_init(file) : 0;
}

/*
 * A raw image takes exactly its virtual size (holes count too): both
 * numbers are the size of the source, or @size, in whole 512-byte sectors.
 */
static bool raw_fmt_measure(GHashTable *opts, BlockDriverState *in_bs, int64_t size,
                            BlockMeasureInfo *info, GError **errp)
{
    if (in_bs) {
        size = bdrv_getlength(in_bs);
        if (size < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno((int)-size),
                        "Unable to get image size: %s", g_strerror((int)-size));
            return false;
        }
    }
    *info = (BlockMeasureInfo){0};
    info->required = info->fully_allocated = ((uint64_t)size + 511) / 512 * 512;
    return true;
}

static bool raw_fmt_create(const char *filename, GHashTable *options, GError **errp)
{
    /* bdrv_create_file consumes a reference; the caller (bdrv_create) still owns its own. */
    return bdrv_create_file(filename, g_hash_table_ref(options), errp);
}

/*
 * The file holds exactly the guest's bytes and no metadata of ours, so the
 * parents' needs pass straight down (as for a filter).  A window is data
 * that only covers part of the file: others may still write elsewhere.
 */
static void raw_fmt_child_perm(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role,
                               uint64_t perm, uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    BDRVRawFormatState *s = bs->opaque;
    BdrvChildRole as = (s->offset || s->has_size) ? BDRV_CHILD_DATA : BDRV_CHILD_FILTERED;
    bdrv_default_perms(bs, c, as | BDRV_CHILD_PRIMARY, perm, shared, nperm, nshared);
}

/* Nothing of ours changes with the flags: the child reopens itself. */
static bool raw_fmt_reopen_prepare(BDRVReopenState *state, GError **errp)
{
    return true;
}

static void raw_fmt_reopen_commit(BDRVReopenState *state)
{
}

static void raw_fmt_reopen_abort(BDRVReopenState *state)
{
}

BlockDriver bdrv_raw = {
    .format_name = "raw",
    .instance_size = sizeof(BDRVRawFormatState),
    .file_child_role = BDRV_CHILD_DATA | BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,

    .probe = raw_fmt_probe,
    .open = raw_fmt_open,
    .create = raw_fmt_create,
    .has_zero_init = raw_fmt_has_zero_init,
    .measure = raw_fmt_measure,

    .co_preadv = raw_fmt_co_preadv,
    .co_pwritev = raw_fmt_co_pwritev,
    .co_pwrite_zeroes = raw_fmt_co_pwrite_zeroes,
    .co_pdiscard = raw_fmt_co_pdiscard,
    .co_block_status = raw_fmt_co_block_status,
    .co_getlength = raw_fmt_co_getlength,
    .co_get_allocated_file_size = raw_fmt_co_get_allocated_file_size,
    .co_truncate = raw_fmt_co_truncate,

    .child_perm = raw_fmt_child_perm,
    .reopen_prepare = raw_fmt_reopen_prepare,
    .reopen_commit = raw_fmt_reopen_commit,
    .reopen_abort = raw_fmt_reopen_abort,
};
