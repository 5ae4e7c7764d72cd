/*
 * libFuzzer target: the input is a qcow2 image.  It is held in memory by
 * the "memimg" protocol (tests/unit/mem-image.h), opened read-write as
 * qcow2, and exercised: reads at a few places, writes, write-zeroes,
 * discard, flush, the consistency check with repair, close.  The bits of
 * the next-to-last input byte add operations strata-img can run on a
 * hostile image: a compressed write, snapshot create / apply / delete, a
 * resize (with metadata preallocation) and back, a bitmap add / remove,
 * two passes of the metadata cache cleaning (cache-clean-interval) with
 * reads between them.  Anything the driver does with a hostile image must end in an error, never a
 * crash, a hang or unbounded memory (run with -rss_limit_mb and -timeout).
 *
 * Nothing touches the disk: backing files are switched off (backing=""),
 * and an image asking for an external data file gets a second memory
 * image instead of the file its header names.
 *
 * Build and run: make fuzz, make fuzz-run (fuzz/fuzz.mk).  The driver
 * reports corruption on stderr; fuzz-run passes -close_fd_mask=2 to
 * silence it (libFuzzer keeps its own output).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "block/bitmaps.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "block/snapshot.h"
#include "drivers/qcow2/qcow2.h"
#include "tests/unit/mem-image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (!aio_main_loop_init(NULL)) {
        abort();
    }
    bdrv_init();
    bdrv_register(&mem_image_driver);
    return 0;
}

typedef struct CheckCo {
    BlockDriverState *bs;
    BdrvCheckMode fix;
} CheckCo;

static void coroutine_fn check_entry(void *opaque)
{
    CheckCo *c = opaque;
    BdrvCheckResult res = {0};
    GRAPH_RDLOCK_GUARD();
    c->bs->drv->co_check(c->bs, &res, c->fix);
}

typedef struct CompressCo {
    BlockDriverState *bs;
    int64_t bytes;
} CompressCo;

/* The driver's compressed write of the first @bytes, as strata-img convert -c calls it. */
static void coroutine_fn compress_entry(void *opaque)
{
    CompressCo *c = opaque;
    static uint8_t buf[65536];
    IOVector qiov;
    GRAPH_RDLOCK_GUARD();
    memset(buf, 'z', sizeof(buf));
    iov_init_buf(&qiov, buf, c->bytes);
    bdrv_inc_in_flight(c->bs);
    c->bs->drv->co_pwritev_compressed(c->bs, 0, c->bytes, &qiov);
    bdrv_dec_in_flight(c->bs);
}

/* One cleaning pass over both qcow2 caches, as the cache-clean-interval timer does it. */
static void coroutine_fn clean_entry(void *opaque)
{
    BDRVQcow2State *s = ((BlockDriverState *)opaque)->opaque;
    co_mutex_lock(&s->lock);
    qcow2_cache_clean_unused(s->l2_cache);
    qcow2_cache_clean_unused(s->refblock_cache);
    g_assert(qcow2_cache_sanity(s->l2_cache) && qcow2_cache_sanity(s->refblock_cache));
    co_mutex_unlock(&s->lock);
}

/* The operations @ops selects, each allowed to fail. */
static void exercise_more(BlockBackend *blk, int64_t len, uint8_t ops)
{
    BlockDriverState *bs = blk_bs(blk);
    GError *err = NULL;

    if ((ops & 1) && bs->drv->co_pwritev_compressed) {
        BlockDriverInfo bdi = {0};
        bs->drv->get_info(bs, &bdi);
        CompressCo c = {bs, MIN(len, MIN(bdi.cluster_size, 65536))};
        if (c.bytes > 0 && c.bytes == bdi.cluster_size) {
            bdrv_run_co(compress_entry, &c);
        }
    }
    if (ops & 2) {
        BdrvSnapshotInfo *list = NULL, sn = {.name = "fz", .id = "fz"};
        int n = 0;
        if (bdrv_snapshot_list(bs, &list, &n, NULL) && n > 0) {
            bdrv_snapshot_goto(bs, list[0].id, NULL);
        }
        bdrv_snapshot_list_free(list, n);
        if (bdrv_snapshot_create(bs, &sn, NULL, NULL)) {
            blk_pwrite_zeroes(blk, 0, MIN(blk_getlength(blk), 4096), 0);
            bdrv_snapshot_delete(bs, "fz", NULL);
        }
    }
    if (ops & 4) {
        int64_t grow = (len + 65536 + 511) & ~511LL;
        PreallocMode mode = (ops & 8) ? PREALLOC_MODE_METADATA : PREALLOC_MODE_OFF;
        if (blk_truncate(blk, grow, false, mode, 0, &err) == 0) {
            blk_truncate(blk, len, false, PREALLOC_MODE_OFF, 0, NULL);
        }
        g_clear_error(&err);
    }
    if ((ops & 16) && bdrv_bitmap_add(bs, "fz", 0, true, NULL)) {
        blk_pwrite_zeroes(blk, 0, MIN(blk_getlength(blk), 4096), 0);
        bdrv_bitmap_remove(bs, "fz", NULL);
    }
    if ((ops & 32) && strcmp(bs->drv->format_name, "qcow2") == 0) {
        uint8_t buf[4096];
        bdrv_run_co(clean_entry, bs);
        blk_pread(blk, 0, MIN(len, 4096), buf, 0);
        bdrv_run_co(clean_entry, bs);
        blk_pread(blk, len / 2, MIN(len / 2, 4096), buf, 0);
    }
}

/* A few requests at @off (clipped to the disk), each allowed to fail. */
static void exercise(BlockBackend *blk, int64_t len, int64_t off, uint8_t seed)
{
    uint8_t buf[8192];
    int64_t n = MIN((int64_t)sizeof(buf), len);
    if (n <= 0) {
        return;
    }
    off = MIN(MAX(off, 0), len - n);
    blk_pread(blk, off, n, buf, 0);
    memset(buf, seed, sizeof(buf));
    blk_pwrite(blk, off + (off ? 0 : 1), n - 1, buf, 0); /* unaligned: copy-on-write */
    blk_pread(blk, off, n, buf, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    GError *err = NULL;
    GHashTable *o = opts_new();

    mem_image_new("fuzz", data, size);
    opts_set(o, "driver", "qcow2");
    opts_set(o, "backing", "");
    opts_set(o, "l2-cache-size", "256k");
    opts_set(o, "refcount-cache-size", "256k");
    /* v3 header, incompatible feature bit 2: an external data file. */
    if (size >= 80 && data[7] >= 3 && (data[79] & 4)) {
        mem_image_new("fuzz-data", "", 0);
        opts_set(o, "data-file.driver", "memimg");
        opts_set(o, "data-file.filename", "fuzz-data");
    }
    BlockBackend *blk =
        blk_new_open("memimg:fuzz", o, BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_UNMAP, &err);
    if (!blk) {
        g_clear_error(&err);
    } else {
        int64_t len = blk_getlength(blk);
        uint8_t seed = size ? data[size - 1] : 0;
        if (len > 0) {
            exercise(blk, len, 0, seed);
            exercise(blk, len, len / 2, seed + 1);
            exercise(blk, len, len - 1, seed + 2);
            blk_pwrite_zeroes(blk, 0, MIN(len, 65536), BDRV_REQ_MAY_UNMAP);
            blk_pdiscard(blk, len / 2, MIN(len / 2, 131072));
            blk_flush(blk);
            exercise_more(blk, len, size > 1 ? data[size - 2] : 0);
        }
        CheckCo c = {blk_bs(blk), BDRV_FIX_LEAKS | BDRV_FIX_ERRORS};
        if (c.bs->drv->co_check) {
            bdrv_run_co(check_entry, &c);
        }
        blk_unref(blk);
    }
    mem_image_remove("fuzz");
    mem_image_remove("fuzz-data");
    return 0;
}
