/*
 * libFuzzer target: the input is a qcow2 image.  It is held in memory by
 * the "memimg" protocol (tests/unit/mem-image.h), opened read-write as
 * qcow2, and exercised: reads at a few places, writes, write-zeroes,
 * discard, flush, the consistency check with repair, close.  Anything the
 * driver does with a hostile image must end in an error, never a crash, a
 * hang or unbounded memory (run with -rss_limit_mb and -timeout).
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

#include "block/block-backend.h"
#include "block/block-int.h"
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
