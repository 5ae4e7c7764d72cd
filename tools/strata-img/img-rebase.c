/*
 * strata-img rebase: gives an image another backing file (or none), with
 * qemu-img 7.2's options and messages.
 *
 * Safe mode (the default) keeps what the guest sees: wherever the image
 * itself holds nothing, the old backing chain's content is compared with
 * the new backing file's, and the 512-byte sectors that differ are copied
 * into the image before its header names the new backing file.  Reading
 * an unallocated range through the image gives the old chain's content,
 * so the old backing file needs no BlockBackend of its own.  Unsafe mode
 * (-u) only rewrites the header.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/strata-img/img.h"

#define IMG_REBASE_CHUNK (2 * 1024 * 1024)
#define IMG_SECTOR       512

typedef struct ImgRebase {
    BlockBackend *blk;     /* the image, opened with its old backing chain */
    BlockBackend *new_blk; /* the new backing file, NULL for none */
    int64_t size, new_size;
    uint8_t *old_buf, *new_buf;
} ImgRebase;

/* Writes the sectors of [@offset, +@bytes) where old and new content differ. */
static int img_rebase_write_diff(ImgRebase *r, int64_t offset, int64_t bytes)
{
    for (int64_t i = 0; i < bytes;) {
        int64_t n = MIN(IMG_SECTOR, bytes - i);
        if (!memcmp(r->old_buf + i, r->new_buf + i, n)) {
            i += n;
            continue;
        }
        int64_t start = i;
        while (i < bytes && memcmp(r->old_buf + i, r->new_buf + i, MIN(IMG_SECTOR, bytes - i))) {
            i += MIN(IMG_SECTOR, bytes - i);
        }
        int ret = blk_pwrite(r->blk, offset + start, i - start, r->old_buf + start, 0);
        if (ret < 0) {
            img_error("Error while writing to COW image: %s", g_strerror(-ret));
            return ret;
        }
    }
    return 0;
}

/* Handles [@offset, +@bytes), which the image itself does not hold. */
static int img_rebase_range(ImgRebase *r, int64_t offset, int64_t bytes)
{
    int ret = blk_pread(r->blk, offset, bytes, r->old_buf, 0);
    if (ret < 0) {
        img_error("error while reading from old backing file");
        return ret;
    }
    memset(r->new_buf, 0, bytes);
    int64_t from_new = r->new_blk ? MAX(MIN(bytes, r->new_size - offset), 0) : 0;
    if (from_new > 0 && (ret = blk_pread(r->new_blk, offset, from_new, r->new_buf, 0)) < 0) {
        img_error("error while reading from new backing file");
        return ret;
    }
    return img_rebase_write_diff(r, offset, bytes);
}

/*
 * Copies what would change under the guest.  Each step takes the next
 * extent the image holds or not (at most a chunk); like qemu-img, every
 * step that had to compare adds one chunk's share to the -p figure.
 */
static int img_rebase_copy(ImgRebase *r, ImgSimpleProgress *progress)
{
    BlockDriverState *bs = blk_bs(r->blk);
    double step = r->size ? 100.0 / (double)(r->size / MIN(r->size, IMG_REBASE_CHUNK)) : 100;
    double done = 0;
    int64_t n;

    img_simple_progress_set(progress, 0);
    for (int64_t offset = 0; offset < r->size; offset += n) {
        n = MIN(IMG_REBASE_CHUNK, r->size - offset);
        int ret = bdrv_is_allocated_above(bs, bdrv_cow_bs(bs), false, offset, n, &n);
        if (ret < 0) {
            img_error("error while reading image metadata: %s", g_strerror(-ret));
            return ret;
        }
        if (n <= 0) {
            return -EIO;
        }
        if (ret) {
            continue;
        }
        ret = img_rebase_range(r, offset, n);
        if (ret < 0) {
            return ret;
        }
        done += step;
        img_simple_progress_set(progress, done);
    }
    return 0;
}

/* Opens the new backing file (and its own chain), relative to the image's directory. */
static BlockBackend *img_rebase_open_new(const char *filename, const char *backing, const char *fmt,
                                         const char *cache, bool force_share)
{
    g_autofree char *path = img_path_combine(filename, backing);
    GError *err = NULL;
    GHashTable *opts = opts_new();
    int flags = force_share ? BDRV_O_FORCE_SHARE : 0;
    bool writethrough;

    if (fmt) {
        opts_set(opts, "driver", fmt);
    }
    bdrv_parse_cache_mode(cache ? cache : "writeback", &flags, &writethrough, NULL);
    BlockBackend *blk = blk_new_open(path, opts, flags, &err);
    if (!blk) {
        img_error("Could not open new backing file '%s': %s", backing, err->message);
        g_error_free(err);
    }
    return blk;
}

typedef struct ImgRebaseArgs {
    ImgOpenOptions o;
    const char *backing, *backing_fmt, *src_cache;
    bool unsafe, progress, quiet, force_share;
} ImgRebaseArgs;

/* Safe mode's copy; returns false after printing an error. */
static bool img_rebase_safe(BlockBackend *blk, const char *filename, const ImgRebaseArgs *a,
                            ImgSimpleProgress *progress)
{
    ImgRebase r = {.blk = blk};
    int ret = -EIO;

    if (a->backing && *a->backing) {
        r.new_blk =
            img_rebase_open_new(filename, a->backing, a->backing_fmt, a->src_cache, a->force_share);
        if (!r.new_blk) {
            return false;
        }
        r.new_size = blk_getlength(r.new_blk);
    }
    r.size = blk_getlength(blk);
    if (r.size >= 0 && r.new_size >= 0) {
        r.old_buf = bdrv_blockalign(blk_bs(blk), IMG_REBASE_CHUNK);
        r.new_buf = bdrv_blockalign(blk_bs(blk), IMG_REBASE_CHUNK);
        ret = img_rebase_copy(&r, progress);
        free(r.old_buf);
        free(r.new_buf);
    } else {
        img_error("Could not get the size of the images");
    }
    if (r.new_blk) {
        blk_unref(r.new_blk);
    }
    return ret >= 0;
}

static int img_rebase_image(const char *filename, const ImgRebaseArgs *a)
{
    const char *backing = a->backing ? a->backing : "";
    ImgOpenOptions o = a->o;
    ImgSimpleProgress progress;

    img_simple_progress_init(&progress, a->progress && !a->quiet && !a->unsafe, 2.0);
    o.writable = true;
    o.no_backing = a->unsafe;
    BlockBackend *blk = img_open(filename, &o, "writeback");
    if (!blk) {
        return 1;
    }
    BlockDriverState *bs = blk_bs(blk);
    int ret = 1;
    if (*backing && !a->backing_fmt) {
        img_error("Could not change the backing file to '%s': backing format must be specified",
                  backing);
        goto out;
    }
    if (!a->unsafe && !img_rebase_safe(blk, filename, a, &progress)) {
        goto out;
    }
    int err = bs->drv->change_backing_file
                  ? bs->drv->change_backing_file(bs, *backing ? backing : NULL, a->backing_fmt)
                  : -ENOTSUP;
    if (err < 0) {
        img_error("Could not change the backing file to '%s': %s", backing, g_strerror(-err));
        goto out;
    }
    img_simple_progress_set(&progress, 100);
    img_simple_progress_end(&progress);
    ret = 0;
out:
    blk_unref(blk);
    return ret;
}

int img_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgRebaseArgs a = {0};
    int c, ret;

    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", longopts, NULL)) != -1) {
        switch (c) {
        case 'F':
            a.backing_fmt = optarg;
            break;
        case 'b':
            a.backing = optarg;
            break;
        case 'u':
            a.unsafe = true;
            break;
        case 'p':
            a.progress = true;
            break;
        case 'T': /* the new backing file's; -t is the image's */
            a.src_cache = optarg;
            break;
        case 'U': /* the new backing file only: the image itself is written */
            a.force_share = true;
            break;
        default:
            if (!img_common_opt(c, argv, &a.o, &a.quiet, NULL, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        img_usage_hint();
        return 1;
    }
    if (!a.unsafe && !a.backing) {
        img_error("Must specify backing file (-b) or use unsafe mode (-u)");
        img_usage_hint();
        return 1;
    }
    if (a.backing_fmt && !bdrv_find_driver(a.backing_fmt)) {
        img_error("Invalid format name: '%s'", a.backing_fmt);
        return 1;
    }
    if (!img_check_format_opts(&a.o) || !img_check_cache_mode(a.o.cache, "cache") ||
        !img_check_cache_mode(a.src_cache, "source cache")) {
        return 1;
    }
    return img_rebase_image(argv[optind], &a);
}
