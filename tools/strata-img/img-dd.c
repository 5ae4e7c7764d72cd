/*
 * strata-img dd: copies an image (or part of it) into a new image, with
 * qemu-img 7.2's dd operands (if=, of=, bs=, count=, skip=) and options
 * (-f, -O, -U, --image-opts).
 *
 * Compatibility note: like qemu-img 7.2, count= limits the input to
 * count*bs bytes from its start, skipped blocks included, so "skip=16
 * count=20" copies blocks 16 to 19 (dd(1) would copy 20 blocks).  A skip
 * past the end of the input creates an empty output and only warns.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-global-state.h"
#include "block/options.h"
#include "tools/strata-img/img.h"

typedef struct ImgDd {
    const char *in_name, *out_name;
    int64_t bs;    /* block size in bytes */
    int64_t count; /* -1: no limit */
    int64_t skip;  /* blocks */
} ImgDd;

/* One operand "key=value".  Returns false after printing qemu-img's message. */
static bool img_dd_operand(ImgDd *dd, const char *arg)
{
    const char *eq = strchr(arg, '=');
    g_autofree char *key = eq ? g_strndup(arg, eq - arg) : g_strdup(arg);
    const char *val = eq ? eq + 1 : NULL;
    int64_t v;
    bool range;

    if (val && strcmp(key, "if") == 0) {
        dd->in_name = val;
    } else if (val && strcmp(key, "of") == 0) {
        dd->out_name = val;
    } else if (val && strcmp(key, "bs") == 0) {
        if (!img_parse_size_ex(val, &v, &range) && !range) {
            img_error_size_suffix("bs");
            return false;
        }
        if (range || v < 1 || v > INT32_MAX) {
            img_error("Invalid bs specified. Must be between 1 and %d.", INT32_MAX);
            return false;
        }
        dd->bs = v;
    } else if (val && (strcmp(key, "count") == 0 || strcmp(key, "skip") == 0)) {
        if (!img_parse_size_ex(val, &v, &range)) {
            if (range) {
                img_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", key,
                          INT64_MAX);
            } else {
                img_error_size_suffix(key);
            }
            return false;
        }
        *(strcmp(key, "count") == 0 ? &dd->count : &dd->skip) = v;
    } else {
        img_error("unrecognized operand %s", key);
        return false;
    }
    return true;
}

/* Creates the output image of @size bytes in @fmt and opens it. */
static BlockBackend *img_dd_create_output(const ImgDd *dd, BlockDriver *drv, int64_t size)
{
    GError *err = NULL;
    GHashTable *opts = opts_new();
    g_autofree char *s = g_strdup_printf("%" PRId64, size);

    opts_set(opts, "size", s);
    if (!img_bdrv_create(drv, dd->out_name, opts, &err)) {
        img_error("%s: error while creating output image: %s", dd->out_name, err->message);
        g_error_free(err);
        return NULL;
    }
    ImgOpenOptions o = {.fmt = drv->format_name, .writable = true};
    return img_open(dd->out_name, &o, "writeback");
}

/* Copies input [@from, @to) to the output from offset 0 in bs-sized pieces. */
static int img_dd_copy(const ImgDd *dd, BlockBackend *in, BlockBackend *out, int64_t from,
                       int64_t to)
{
    uint8_t *buf = bdrv_blockalign(blk_bs(in), dd->bs);
    int ret = 0;

    for (int64_t in_pos = from, out_pos = 0; in_pos < to;) {
        int64_t bytes = MIN(dd->bs, to - in_pos);
        ret = blk_pread(in, in_pos, bytes, buf, 0);
        if (ret < 0) {
            img_error("error while reading from input image file: %s", g_strerror(-ret));
            break;
        }
        ret = blk_pwrite(out, out_pos, bytes, buf, 0);
        if (ret < 0) {
            img_error("error while writing to output image file: %s", g_strerror(-ret));
            break;
        }
        in_pos += bytes;
        out_pos += bytes;
    }
    free(buf);
    return ret < 0 ? 1 : 0;
}

static int img_dd_run(const ImgDd *dd, const ImgOpenOptions *in_opts, const char *out_fmt)
{
    GError *err = NULL;
    BlockBackend *in = img_open(dd->in_name, in_opts, "writeback");
    BlockBackend *out = NULL;
    int ret = 1;

    if (!in) {
        return 1;
    }
    BlockDriver *drv = bdrv_find_driver(out_fmt);
    if (!drv) {
        img_error("Unknown file format");
        goto out;
    }
    if (!drv->is_protocol && !bdrv_find_protocol(dd->out_name, &err)) {
        img_report_error(err);
        goto out;
    }
    if (!drv->create) {
        img_error("Format driver '%s' does not support image creation", out_fmt);
        goto out;
    }
    int64_t size = blk_getlength(in);
    if (size < 0) {
        img_error("Failed to get size for '%s'", dd->in_name);
        goto out;
    }
    if (dd->count >= 0 && dd->count <= INT64_MAX / dd->bs && size > dd->count * dd->bs) {
        size = dd->count * dd->bs;
    }
    bool past_end = dd->skip > INT64_MAX / dd->bs || size < dd->skip * dd->bs;
    int64_t from = past_end ? size : dd->skip * dd->bs;
    out = img_dd_create_output(dd, drv, size - from);
    if (!out) {
        goto out;
    }
    if (past_end) {
        img_error("%s: cannot skip to specified offset", dd->in_name);
    }
    ret = img_dd_copy(dd, in, out, from, size);
out:
    if (out) {
        blk_unref(out);
    }
    blk_unref(in);
    return ret;
}

int img_dd(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions in_opts = {0};
    ImgDd dd = {.bs = 512, .count = -1};
    const char *out_fmt = "raw";
    int c, ret;

    while ((c = getopt_long(argc, argv, ":hf:O:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'O':
            out_fmt = optarg;
            break;
        default:
            if (!img_common_opt(c, argv, &in_opts, NULL, NULL, &ret)) {
                return ret;
            }
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!img_dd_operand(&dd, argv[i])) {
            return 1;
        }
    }
    if (!dd.in_name || !dd.out_name) {
        img_error("Must specify both input and output files");
        return 1;
    }
    if (!img_check_format_opts(&in_opts)) {
        return 1;
    }
    return img_dd_run(&dd, &in_opts, out_fmt);
}
