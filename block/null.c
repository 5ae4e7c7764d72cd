/*
 * null-co: a protocol driver with no storage.  Reads return nothing (or
 * zeroes with read-zeroes=on), writes are dropped, after an optional
 * latency.  It exists to measure the engine's own cost, so every I/O
 * callback is a few instructions.
 *
 * Options: size (default 1 GiB), latency-ns (default 0), read-zeroes
 * (default off).  Filename: "null-co://" or none.
 *
 * Threading: the state is written once at open; callbacks only read it,
 * from any thread.
 */
#include "block/block-int.h"
#include "coroutine/co-lock.h"

#include <string.h>

typedef struct BDRVNullState {
    int64_t length;
    int64_t latency_ns;
    bool read_zeroes;
} BDRVNullState;

static bool null_parse_filename(const char *filename, GHashTable *options, GError **errp)
{
    if (strcmp(filename, "null-co://") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "The only allowed filename for this driver is 'null-co://'");
        return false;
    }
    return true;
}

static bool null_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    BDRVNullState *s = bs->opaque;
    uint64_t size;
    g_autofree char *filename = opts_take_str(options, "filename");

    if (filename && !null_parse_filename(filename, options, errp)) {
        return false;
    }
    if (!opts_take_size(options, "size", 1ULL << 30, &size, errp) ||
        !opts_take_int(options, "latency-ns", 0, &s->latency_ns, errp) ||
        !opts_take_bool(options, "read-zeroes", false, &s->read_zeroes, errp)) {
        return false;
    }
    if (s->latency_ns < 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "latency-ns must be a non-negative number");
        return false;
    }
    s->length = size;
    if (!bs->filename) {
        bs->filename = g_strdup("null-co://");
    }
    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    return true;
}

static void coroutine_fn null_delay(BDRVNullState *s)
{
    if (s->latency_ns) {
        co_sleep_ns(s->latency_ns);
    }
}

static int coroutine_fn null_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, BdrvRequestFlags flags)
{
    BDRVNullState *s = bs->opaque;
    if (s->read_zeroes) {
        iov_memset(qiov, 0, 0, bytes);
    }
    null_delay(s);
    return 0;
}

static int coroutine_fn null_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, BdrvRequestFlags flags)
{
    null_delay(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                              BdrvRequestFlags flags)
{
    null_delay(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    null_delay(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_flush(BlockDriverState *bs)
{
    null_delay(bs->opaque);
    return 0;
}

static int64_t coroutine_fn null_co_getlength(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;
    return s->length;
}

static int coroutine_fn null_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                             int64_t bytes, int64_t *pnum, int64_t *map,
                                             BlockDriverState **file)
{
    BDRVNullState *s = bs->opaque;
    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BDRV_BLOCK_OFFSET_VALID | (s->read_zeroes ? BDRV_BLOCK_ZERO : 0);
}

static int null_has_zero_init(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;
    return s->read_zeroes;
}

static bool null_reopen_prepare(BDRVReopenState *state, GError **errp)
{
    return true;
}

BlockDriver bdrv_null_co = {
    .format_name = "null-co",
    .protocol_name = "null-co",
    .instance_size = sizeof(BDRVNullState),
    .is_protocol = true,
    .parse_filename = null_parse_filename,
    .open = null_open,
    .co_preadv = null_co_preadv,
    .co_pwritev = null_co_pwritev,
    .co_pwrite_zeroes = null_co_pwrite_zeroes,
    .co_pdiscard = null_co_pdiscard,
    .co_flush_to_disk = null_co_flush,
    .co_getlength = null_co_getlength,
    .co_block_status = null_co_block_status,
    .has_zero_init = null_has_zero_init,
    .reopen_prepare = null_reopen_prepare,
};
