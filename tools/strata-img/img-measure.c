/*
 * strata-img measure: how much host storage an image of format -O would
 * need, for a given virtual size (--size) or to hold a copy of an existing
 * image.  qemu-img 7.2's options and output ("required size", "fully
 * allocated size"; JSON "required", "fully-allocated").
 *
 * The computation belongs to the target format's measure callback
 * (BlockDriver.measure); this file parses the options, opens the source
 * image (with its backing chain: all its data counts) and prints.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/block-global-state.h"
#include "block/options.h"
#include "block/snapshot.h"
#include "tools/strata-img/img.h"

typedef struct ImgMeasureArgs {
    ImgOpenOptions in;
    const char *out_fmt;
    char *options;
    const char *snapshot;
    int64_t size; /* -1: measure the image named on the command line */
    ImgOutputFormat output;
} ImgMeasureArgs;

static void img_measure_print(const BlockMeasureInfo *m, ImgOutputFormat output)
{
    if (output == IMG_OUTPUT_HUMAN) {
        printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", m->required,
               m->fully_allocated);
        if (m->has_bitmaps) {
            printf("bitmaps size: %" PRIu64 "\n", m->bitmaps);
        }
        return;
    }
    ImgJson j;
    img_json_init(&j);
    img_json_begin_object(&j, NULL);
    if (m->has_bitmaps) {
        img_json_uint(&j, "bitmaps", m->bitmaps);
    }
    img_json_uint(&j, "required", m->required);
    img_json_uint(&j, "fully-allocated", m->fully_allocated);
    img_json_end_object(&j);
    g_autofree char *text = img_json_finish(&j);
    printf("%s\n", text);
}

/*
 * -l: snapshot.id=ID,snapshot.name=NAME or a plain ID or name; the source
 * then shows that snapshot's disk (qemu-img's parsing and messages).
 */
static bool img_measure_load_snapshot(const char *arg, BlockDriverState *bs)
{
    ImgSnapshotParam p = {0};
    bool ok = img_parse_snapshot_param(arg, &p) && img_load_snapshot(bs, &p);
    img_snapshot_param_clear(&p);
    return ok;
}

/* Opens the source image, or leaves *blk NULL with --size. */
static bool img_measure_open_source(const ImgMeasureArgs *a, const char *filename,
                                    BlockBackend **blk)
{
    *blk = NULL;
    if (!filename) {
        return true;
    }
    *blk = img_open(filename, &a->in, "writeback");
    if (!*blk) {
        return false;
    }
    if (a->snapshot && !img_measure_load_snapshot(a->snapshot, blk_bs(*blk))) {
        blk_unref(*blk);
        *blk = NULL;
        return false;
    }
    return true;
}

/* Asks the driver of -O, with the source's size or --size. */
static bool img_measure_with(BlockDriver *drv, GHashTable *values, BlockBackend *src, int64_t size,
                             BlockMeasureInfo *m)
{
    GError *err = NULL;

    if (src) {
        size = blk_getlength(src);
        if (size < 0) {
            img_error("Unable to get image size: %s", g_strerror((int)-size));
            return false;
        }
    }
    if (!drv->measure(values, src ? blk_bs(src) : NULL, size, m, &err)) {
        img_error("%s", err->message);
        g_error_free(err);
        return false;
    }
    return true;
}

static int img_measure_run(const ImgMeasureArgs *a, const char *filename)
{
    GError *err = NULL;
    BlockDriver *drv = bdrv_find_driver(a->out_fmt);

    if (!drv) {
        img_error("Unknown file format '%s'", a->out_fmt);
        return 1;
    }
    if (!drv->create) {
        img_error("Format driver '%s' does not support image creation", a->out_fmt);
        return 1;
    }
    BlockDriver *proto = drv->is_protocol ? NULL : bdrv_find_driver("file");
    g_autoptr(GPtrArray) list = img_create_opts_for(drv, proto);
    g_autoptr(GHashTable) values = opts_new();
    g_autoptr(GHashTable) shown = opts_new();
    if (a->options && !img_opts_parse(list, a->options, values, shown, &err)) {
        img_error("%s", err->message);
        img_error("Invalid options for file format '%s'", a->out_fmt);
        g_error_free(err);
        return 1;
    }
    BlockBackend *src;
    if (!img_measure_open_source(a, filename, &src)) {
        return 1;
    }
    if (!drv->measure) {
        img_error("Block driver '%s' does not support size measurement", a->out_fmt);
        if (src) {
            blk_unref(src);
        }
        return 1;
    }
    BlockMeasureInfo m;
    bool ok = img_measure_with(drv, values, src, a->size, &m);
    if (src) {
        blk_unref(src);
    }
    if (!ok) {
        return 1;
    }
    img_measure_print(&m, a->output);
    return 0;
}

enum { OPT_SIZE = IMG_OPT_LOCAL };

/* Options qemu-img accepts; unknown ones print getopt's message and the help (exit 0). */
static bool img_measure_opt(ImgMeasureArgs *a, int c, char **argv, const char **output_arg,
                            int *ret)
{
    bool range;

    switch (c) {
    case 'O':
        a->out_fmt = optarg;
        return true;
    case 'o':
        if (!img_opt_list_append(&a->options, optarg)) {
            *ret = 1;
            return false;
        }
        return true;
    case 'l':
        a->snapshot = optarg;
        return true;
    case OPT_SIZE:
        if (!img_parse_size_ex(optarg, &a->size, &range)) {
            if (range) {
                img_error("Invalid image size specified. Must be between 0 and %" PRId64 ".",
                          INT64_MAX);
            } else {
                img_error_size_suffix("image size");
            }
            *ret = 1;
            return false;
        }
        return true;
    case '?': /* getopt has complained already */
        img_help();
        *ret = 0;
        return false;
    default: /* -h among them */
        return img_common_opt(c, argv, &a->in, NULL, output_arg, ret);
    }
}

int img_measure(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"output", required_argument, NULL, IMG_OPT_OUTPUT},
        {"size", required_argument, NULL, OPT_SIZE},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgMeasureArgs a = {.out_fmt = "raw", .size = -1, .output = IMG_OUTPUT_HUMAN};
    const char *output_arg = NULL;
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, "hf:O:o:l:U", longopts, NULL)) != -1) {
        if (!img_measure_opt(&a, c, argv, &output_arg, &ret)) {
            goto out;
        }
    }
    if (!img_check_format_opts(&a.in)) {
        goto out;
    }
    if (a.size >= 0 && optind < argc) {
        img_error("--size N cannot be used together with a filename.");
        goto out;
    }
    if (a.size < 0 && optind >= argc) {
        img_error("Either --size N or one filename must be specified.");
        goto out;
    }
    if (optind < argc - 1) {
        img_error("At most one filename argument is allowed.");
        goto out;
    }
    if (output_arg && !img_parse_output_format(output_arg, &a.output)) {
        goto out;
    }
    ret = img_measure_run(&a, optind < argc ? argv[optind] : NULL);
out:
    g_free(a.options);
    return ret;
}
