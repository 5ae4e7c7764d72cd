/*
 * strata-img compare: do two images show the same content?  qemu-img 7.2's
 * options, messages and exit codes:
 *   0 identical, 1 different, 2 cannot open / bad option value,
 *   3 block status failed, 4 read failed (usage errors exit 1).
 *
 * The walk follows block status through each whole backing chain: a range
 * that reads as zeroes in both images (unallocated, or ZERO) is skipped
 * without reading; a range that reads as zeroes in one is checked for
 * zeroes in the other; only where both hold data are both read.  A
 * mismatch is reported at the first differing 512-byte sector.  Images of
 * different sizes are equal when the longer one holds only zeroes past the
 * shorter one's end (a warning says so); strict mode (-s) refuses any size
 * difference and any difference in block status.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/strata-img/img.h"

#define IMG_COMPARE_BUF (2 * 1024 * 1024)
#define IMG_SECTOR      512

/*
 * Bits strict mode compares: like qemu-img, the whole status, so that an
 * extent reaching the end of one image (EOF) but not of the other, or
 * mapped in one (OFFSET_VALID) but not in the other, counts as different.
 */
#define IMG_STATUS_MASK                                                                            \
    (BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID |          \
     BDRV_BLOCK_EOF)

/* Progress of the walk, in bytes of the larger image. */
typedef struct ImgCompareProgress {
    ImgSimpleProgress shown;
    double total, done;
} ImgCompareProgress;

static void img_progress_add(ImgCompareProgress *p, int64_t bytes)
{
    p->done += bytes;
    img_simple_progress_set(&p->shown, p->total > 0 ? p->done * 100.0 / p->total : 100.0);
}

typedef struct ImgCompare {
    BlockBackend *blk[2];
    const char *name[2];
    uint8_t *buf[2];
    bool strict, quiet;
    ImgCompareProgress progress;
} ImgCompare;

/* Reads as zeroes: nothing in the chain decides the content, or it is known zero. */
static bool img_status_zero(int status)
{
    return !(status & BDRV_BLOCK_ALLOCATED) || (status & BDRV_BLOCK_ZERO);
}

/* Offset of the first 512-byte sector of [0, len) where the buffers differ (@b NULL: zeroes). */
static int64_t img_first_diff(const uint8_t *a, const uint8_t *b, int64_t len)
{
    for (int64_t i = 0; i < len; i += IMG_SECTOR) {
        int64_t n = MIN(IMG_SECTOR, len - i);
        bool differ;
        if (b) {
            differ = memcmp(a + i, b + i, n) != 0;
        } else {
            differ = a[i] != 0 || memcmp(a + i, a + i + 1, n - 1) != 0;
        }
        if (differ) {
            return i;
        }
    }
    return -1;
}

/* Reads [@offset, +@bytes) of image @i into its buffer; returns the exit status on failure. */
static int img_compare_read(ImgCompare *c, int i, int64_t offset, int64_t bytes)
{
    int ret = blk_pread(c->blk[i], offset, bytes, c->buf[i], 0);
    if (ret < 0) {
        img_error("Error while reading offset %" PRId64 " of %s: %s", offset, c->name[i],
                  g_strerror(-ret));
        return 4;
    }
    return 0;
}

static int img_compare_status(ImgCompare *c, int i, int64_t offset, int64_t bytes, int64_t *pnum)
{
    int ret = blk_block_status(c->blk[i], offset, bytes, pnum, NULL, NULL);
    if (ret < 0) {
        img_error("Sector allocation test failed for %s", c->name[i]);
    }
    return ret;
}

static int img_report_mismatch(ImgCompare *c, int64_t offset)
{
    img_printf(c->quiet, "Content mismatch at offset %" PRId64 "!\n", offset);
    return 1;
}

/* One chunk of the common part: 0 when equal, else the exit status. */
static int img_compare_chunk(ImgCompare *c, int64_t offset, int64_t bytes, int st0, int st1)
{
    bool z0 = img_status_zero(st0), z1 = img_status_zero(st1);
    int ret;

    if (z0 && z1) {
        return 0;
    }
    if (!z0 && (ret = img_compare_read(c, 0, offset, bytes))) {
        return ret;
    }
    if (!z1 && (ret = img_compare_read(c, 1, offset, bytes))) {
        return ret;
    }
    int64_t diff = z0   ? img_first_diff(c->buf[1], NULL, bytes)
                   : z1 ? img_first_diff(c->buf[0], NULL, bytes)
                        : img_first_diff(c->buf[0], c->buf[1], bytes);
    return diff >= 0 ? img_report_mismatch(c, offset + diff) : 0;
}

/* Compares [0, @len), which both images have. */
static int img_compare_common(ImgCompare *c, int64_t len)
{
    for (int64_t offset = 0; offset < len;) {
        int64_t n0, n1;
        int st0 = img_compare_status(c, 0, offset, len - offset, &n0);
        if (st0 < 0) {
            return 3;
        }
        int st1 = img_compare_status(c, 1, offset, len - offset, &n1);
        if (st1 < 0) {
            return 3;
        }
        if (c->strict && (st0 & IMG_STATUS_MASK) != (st1 & IMG_STATUS_MASK)) {
            img_printf(c->quiet, "Strict mode: Offset %" PRId64 " block status mismatch!\n",
                       offset);
            return 1;
        }
        int64_t chunk = MIN(n0, n1);
        if (chunk <= 0) {
            return 3;
        }
        if (!img_status_zero(st0) || !img_status_zero(st1)) {
            chunk = MIN(chunk, IMG_COMPARE_BUF);
        }
        int ret = img_compare_chunk(c, offset, chunk, st0, st1);
        if (ret) {
            return ret;
        }
        offset += chunk;
        img_progress_add(&c->progress, chunk);
    }
    return 0;
}

/* The part of image @i past @from: it must read as zeroes. */
static int img_compare_tail(ImgCompare *c, int i, int64_t from, int64_t len)
{
    for (int64_t offset = from; offset < len;) {
        int64_t n;
        int st = img_compare_status(c, i, offset, len - offset, &n);
        if (st < 0) {
            return 3;
        }
        int64_t chunk = n;
        if (chunk <= 0) {
            return 3;
        }
        if (!img_status_zero(st)) {
            chunk = MIN(chunk, IMG_COMPARE_BUF);
            int ret = img_compare_read(c, i, offset, chunk);
            if (ret) {
                return ret;
            }
            int64_t diff = img_first_diff(c->buf[i], NULL, chunk);
            if (diff >= 0) {
                return img_report_mismatch(c, offset + diff);
            }
        }
        offset += chunk;
        img_progress_add(&c->progress, chunk);
    }
    return 0;
}

static int img_compare_images(ImgCompare *c)
{
    int64_t len[2];

    for (int i = 0; i < 2; i++) {
        len[i] = blk_getlength(c->blk[i]);
        if (len[i] < 0) {
            img_error("Can't get size of %s: %s", c->name[i], g_strerror((int)-len[i]));
            return 4;
        }
    }
    if (c->strict && len[0] != len[1]) {
        img_printf(c->quiet, "Strict mode: Image size mismatch!\n");
        return 1;
    }
    c->progress.total = (double)MAX(len[0], len[1]);
    img_progress_add(&c->progress, 0);

    int64_t common = MIN(len[0], len[1]);
    int ret = img_compare_common(c, common);
    if (ret) {
        return ret;
    }
    if (len[0] != len[1]) {
        img_printf(c->quiet, "Warning: Image size mismatch!\n");
        int longer = len[0] > len[1] ? 0 : 1;
        ret = img_compare_tail(c, longer, common, len[longer]);
        if (ret) {
            return ret;
        }
    }
    img_printf(c->quiet, "Images are identical.\n");
    return 0;
}

int img_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o[2] = {{0}, {0}}; /* -F aside, the options fill o[0], copied to o[1] below */
    ImgCompare c = {0};
    bool progress = false;
    int ch, ret;

    while ((ch = getopt_long(argc, argv, ":hf:F:T:pqsU", longopts, NULL)) != -1) {
        switch (ch) {
        case 'F':
            o[1].fmt = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case 's':
            c.strict = true;
            break;
        case IMG_OPT_OBJECT:
            img_error("--object is not supported");
            return 2; /* compare's exit status for errors */
        default:
            if (!img_common_opt(ch, argv, &o[0], &c.quiet, NULL, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 2) {
        img_error("Expecting two image file names");
        img_usage_hint();
        return 1;
    }
    o[1].cache = o[0].cache;
    o[1].image_opts = o[0].image_opts;
    o[1].force_share = o[0].force_share;
    if (!img_check_format_opts(&o[0]) || !img_check_format_opts(&o[1]) ||
        !img_check_cache_mode(o[0].cache, "source cache")) {
        return 2;
    }
    img_simple_progress_init(&c.progress.shown, progress && !c.quiet, 2.0);
    ret = 2;
    for (int i = 0; i < 2; i++) {
        c.name[i] = argv[optind + i];
        c.blk[i] = img_open(c.name[i], &o[i], "writeback");
        if (!c.blk[i]) {
            goto out;
        }
        c.buf[i] = bdrv_blockalign(blk_bs(c.blk[i]), IMG_COMPARE_BUF);
    }
    ret = img_compare_images(&c);
    img_simple_progress_end(&c.progress.shown);
out:
    for (int i = 0; i < 2; i++) {
        free(c.buf[i]);
        if (c.blk[i]) {
            blk_unref(c.blk[i]);
        }
    }
    return ret;
}
