/*
 * strata-img convert: copies one image, or several laid end to end, into
 * a new image (or an existing one with -n), with qemu-img 7.2's options,
 * checks, messages and exit codes.  This file parses the command line,
 * opens the sources and creates and opens the target through the format
 * driver's create; the copy itself is img-convert-copy.c.
 *
 * Beyond qemu-img: --progress=json (img-progress.h), and writes that
 * overlap even without -W (they are issued in order, not completed in
 * order).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/bitmaps.h"
#include "block/block-global-state.h"
#include "block/options.h"
#include "block/snapshot.h"
#include "tools/strata-img/img-convert.h"
#include "tools/strata-img/img.h"

typedef struct ConvArgs {
    ImgOpenOptions src;        /* -f, --image-opts, -T, -U */
    const char *out_fmt;       /* -O, NULL until given */
    bool tgt_image_opts;       /* --target-image-opts */
    char *options;             /* every -o joined with ',' */
    const char *out_baseimg;   /* -B */
    const char *backing_fmt;   /* -F */
    ImgSnapshotParam snapshot; /* -l */
    const char *cache;         /* -t */
    bool skip_create;          /* -n */
    bool target_is_zero;
    bool bitmaps, skip_broken_bitmaps;
    bool explicit_min_sparse;
    bool progress;
    ImgProgressMode progress_mode;
    ImgConvert s;
} ConvArgs;

enum {
    OPT_TARGET_IMAGE_OPTS = IMG_OPT_LOCAL,
    OPT_SALVAGE,
    OPT_TARGET_IS_ZERO,
    OPT_BITMAPS,
    OPT_SKIP_BROKEN,
    OPT_PROGRESS,
};

/* qemu-img's words for getopt errors. */
static void conv_getopt_error(int c, char **argv)
{
    g_autofree char *opt = optopt ? g_strdup_printf("-%c", optopt) : g_strdup(argv[optind - 1]);

    if (c == ':') {
        img_error("missing argument for option '%s'", opt);
    } else {
        img_error("unrecognized option '%s'", opt);
    }
    img_usage_hint();
}

static bool conv_parse_sparse(ConvArgs *a, const char *arg)
{
    int64_t v;
    bool range;

    if (!img_parse_size_ex(arg, &v, &range) && !range) {
        img_error_size_suffix("buffer size for sparse output");
        return false;
    }
    if (range || v % BDRV_SECTOR_SIZE || v > IMG_CONVERT_MAX_SPARSE) {
        img_error("Invalid buffer size for sparse output specified. Valid sizes are multiples "
                  "of %d up to %d. Select 0 to disable sparse detection (fully allocates output).",
                  BDRV_SECTOR_SIZE, IMG_CONVERT_MAX_SPARSE);
        return false;
    }
    a->s.min_sparse = v;
    a->explicit_min_sparse = true;
    return true;
}

static bool conv_parse_workers(ConvArgs *a, const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 10);

    if (end == arg || *end || v < 1 || v > IMG_CONVERT_MAX_WORKERS) {
        img_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and %d",
                  IMG_CONVERT_MAX_WORKERS);
        return false;
    }
    a->s.num_workers = (int)v;
    return true;
}

static int conv_long_option(ConvArgs *a, int c, char **argv);

/* One option; returns 0 to go on, 1 for an error exit, -1 for a success exit (-h). */
static int conv_option(ConvArgs *a, int c, char **argv)
{
    int64_t v;

    switch (c) {
    case 'O':
        a->out_fmt = optarg;
        break;
    case 'B':
        a->out_baseimg = optarg;
        break;
    case 'F':
        a->backing_fmt = optarg;
        break;
    case 'C':
        a->s.copy_range = true;
        break;
    case 'c':
        a->s.compressed = true;
        break;
    case 'o':
        return img_opt_list_append(&a->options, optarg) ? 0 : 1;
    case 'l':
        return img_parse_snapshot_param(optarg, &a->snapshot) ? 0 : 1;
    case 'S':
        return conv_parse_sparse(a, optarg) ? 0 : 1;
    case 'p':
        a->progress = true;
        a->progress_mode = IMG_PROGRESS_HUMAN;
        break;
    case 't': /* the target's; -T (the sources') is common */
        a->cache = optarg;
        break;
    case 'n':
        a->skip_create = true;
        break;
    case 'm':
        return conv_parse_workers(a, optarg) ? 0 : 1;
    case 'W':
        a->s.out_of_order = true;
        break;
    case 'r':
        if (!img_parse_size(optarg, &v)) {
            img_error_size_suffix("rate limit");
            return 1;
        }
        a->s.rate_limit = (uint64_t)v;
        break;
    default:
        return conv_long_option(a, c, argv);
    }
    return 0;
}

/* The long options, the common ones and getopt's errors; same returns as conv_option. */
static int conv_long_option(ConvArgs *a, int c, char **argv)
{
    int ret;

    switch (c) {
    case OPT_TARGET_IMAGE_OPTS:
        a->tgt_image_opts = true;
        break;
    case OPT_SALVAGE:
        a->s.salvage = true;
        break;
    case OPT_TARGET_IS_ZERO:
        a->target_is_zero = true;
        break;
    case OPT_BITMAPS:
        a->bitmaps = true;
        break;
    case OPT_SKIP_BROKEN:
        a->skip_broken_bitmaps = true;
        break;
    case OPT_PROGRESS:
        a->progress = true;
        return img_progress_parse_mode(optarg, &a->progress_mode) ? 0 : 1;
    case ':':
    case '?':
        conv_getopt_error(c, argv);
        return 1;
    default:
        if (!img_common_opt(c, argv, &a->src, &a->s.quiet, NULL, &ret)) {
            return ret == 0 ? -1 : 1;
        }
    }
    return 0;
}

/* The checks qemu-img makes once all options are known, in its order. */
static bool conv_check_args(ConvArgs *a)
{
    const char *err = NULL;

    if (a->skip_broken_bitmaps && !a->bitmaps) {
        err = "Use of --skip-broken-bitmaps requires --bitmaps";
    } else if (a->s.compressed && a->s.copy_range) {
        err = "Cannot enable copy offloading when -c is used";
    } else if (a->explicit_min_sparse && a->s.copy_range) {
        err = "Cannot enable copy offloading when -S is used";
    } else if (a->s.copy_range && a->s.salvage) {
        err = "Cannot use copy offloading in salvaging mode";
    } else if (a->tgt_image_opts && !a->skip_create) {
        err = "--target-image-opts requires use of -n flag";
    } else if (a->skip_create && a->options) {
        err = "-o has no effect when skipping image creation";
    } else if (a->target_is_zero && !a->skip_create) {
        err = "--target-is-zero requires use of -n flag";
    }
    if (err) {
        img_error("%s", err);
        return false;
    }
    return true;
}

/* Opens every source and lays them end to end. */
static bool conv_open_sources(ConvArgs *a, char **names, int n)
{
    ImgConvert *s = &a->s;

    if (!img_check_format_opts(&a->src)) {
        return false;
    }
    s->src = g_new0(ImgConvertSource, n);
    for (int i = 0; i < n; i++) {
        ImgConvertSource *src = &s->src[s->nsrc];
        src->name = names[i];
        src->blk = img_open(names[i], &a->src, "writeback");
        if (!src->blk) {
            return false;
        }
        s->nsrc++;
        src->size = blk_getlength(src->blk);
        if (src->size < 0) {
            img_error("Could not get size of %s: %s", names[i], g_strerror((int)-src->size));
            return false;
        }
        src->start = s->total_size;
        s->total_size += src->size;
    }
    return true;
}

/* --bitmaps: qemu-img's checks of the source, before the target exists. */
static bool conv_check_bitmaps(ConvArgs *a, BlockDriverState *bs)
{
    GError *err = NULL;

    if (a->s.nsrc > 1) {
        img_error("Copying bitmaps only possible with single source");
        return false;
    }
    if (!bdrv_check_persistent_bitmaps(bs, a->skip_broken_bitmaps, NULL, &err)) {
        bool inconsistent = g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_INVAL);
        img_report_error(err);
        if (inconsistent) {
            fprintf(stderr, "Try --skip-broken-bitmaps, or use 'strata-img bitmap --remove' to "
                            "delete it\n");
        }
        return false;
    }
    return true;
}

/* --bitmaps, after the data: warns about the in-use bitmaps it skips, as qemu-img does. */
static bool conv_copy_bitmaps(ConvArgs *a)
{
    GError *err = NULL;
    BlockDriverState *src = blk_bs(a->s.src[0].blk);
    g_autoptr(GPtrArray) skipped = g_ptr_array_new_with_free_func(g_free);

    if (a->skip_broken_bitmaps && bdrv_check_persistent_bitmaps(src, true, skipped, NULL)) {
        for (guint i = 0; i < skipped->len; i++) {
            img_error("warning: Skipping inconsistent bitmap '%s'",
                      (const char *)skipped->pdata[i]);
        }
    }
    if (!bdrv_copy_persistent_bitmaps(src, blk_bs(a->s.target), a->skip_broken_bitmaps, &err)) {
        img_report_error(err);
        return false;
    }
    return true;
}

/* What qemu-img checks about the sources before it looks at the target. */
static bool conv_check_sources(ConvArgs *a)
{
    ImgConvert *s = &a->s;

    if (a->snapshot.id || a->snapshot.name) {
        if (s->nsrc > 1) {
            img_error("No support for concatenating multiple snapshot");
            return false;
        }
        if (!img_load_snapshot(blk_bs(s->src[0].blk), &a->snapshot)) {
            return false;
        }
    }
    if (a->bitmaps && !conv_check_bitmaps(a, blk_bs(s->src[0].blk))) {
        return false;
    }
    if (s->nsrc > 1 && a->out_baseimg) {
        img_error("Having a backing file for the target makes no sense when concatenating "
                  "multiple input images");
        return false;
    }
    return true;
}

static bool conv_driver_can_compress(BlockDriver *drv)
{
    return drv->co_pwritev_compressed != NULL;
}

/* Sets a creation option from the command line (-B, -F) when the format has it. */
static bool conv_set_create_opt(GPtrArray *list, GHashTable *values, const char *name,
                                const char *value, const char *what, const char *fmt)
{
    if (!value) {
        return true;
    }
    if (!img_create_opt_find(list, name)) {
        img_error("%s not supported for file format '%s'", what, fmt);
        return false;
    }
    opts_set(values, name, value);
    return true;
}

/* Creates the target through the format driver, sized for all sources. */
static bool conv_create_target(ConvArgs *a, BlockDriver *drv, BlockDriver *proto,
                               const char *filename)
{
    GError *err = NULL;
    g_autoptr(GPtrArray) list = img_create_opts_for(drv, proto);
    GHashTable *values = opts_new();
    g_autoptr(GHashTable) shown = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autofree char *size = g_strdup_printf("%" PRId64, a->s.total_size);
    const char *prealloc;

    if (a->options && !img_opts_parse(list, a->options, values, shown, &err)) {
        img_report_error(err);
        goto fail;
    }
    opts_set(values, "size", size);
    if (!conv_set_create_opt(list, values, "backing_file", a->out_baseimg, "Backing file",
                             a->out_fmt) ||
        !conv_set_create_opt(list, values, "backing_fmt", a->backing_fmt, "Backing file format",
                             a->out_fmt)) {
        goto fail;
    }
    if (opts_get(values, "backing_file") && !opts_get(values, "backing_fmt")) {
        img_error("Use of backing file requires explicit backing format");
        goto fail;
    }
    a->s.target_has_backing = opts_get(values, "backing_file") != NULL;
    if (a->s.compressed && !conv_driver_can_compress(drv)) {
        img_error("Compression not supported for this file format");
        goto fail;
    }
    prealloc = opts_get(values, "preallocation");
    if (a->s.compressed && prealloc && strcmp(prealloc, "off") != 0) {
        img_error("Compression and preallocation not supported at the same time");
        goto fail;
    }
    if (!img_bdrv_create(drv, filename, values, &err)) {
        img_error("%s: error while converting %s: %s", filename, a->out_fmt, err->message);
        g_error_free(err);
        return false;
    }
    return true;
fail:
    g_hash_table_unref(values);
    return false;
}

/* Finds the output driver and creates the target unless -n. */
static bool conv_prepare_target(ConvArgs *a, const char *filename)
{
    GError *err = NULL;
    BlockDriver *drv = NULL, *proto = NULL;

    if (a->tgt_image_opts) {
        if (a->out_fmt) {
            img_error("--image-opts and --format are mutually exclusive");
            return false;
        }
        a->s.target_has_backing = a->out_baseimg != NULL;
        return true; /* -n is implied: the driver comes from the options */
    }
    drv = bdrv_find_driver(a->out_fmt);
    if (!drv) {
        img_error("Unknown file format '%s'", a->out_fmt);
        return false;
    }
    if (!drv->is_protocol) {
        proto = bdrv_find_protocol(filename, &err);
        if (!proto) {
            img_report_error(err);
            return false;
        }
    }
    if (a->skip_create) {
        a->s.target_has_backing = a->out_baseimg != NULL;
        return true;
    }
    if (!drv->create) {
        img_error("Format driver '%s' does not support image creation", a->out_fmt);
        return false;
    }
    if (proto && !proto->create) {
        img_error("Protocol driver '%s' does not support image creation", proto->format_name);
        return false;
    }
    return conv_create_target(a, drv, proto, filename);
}

/* Opens the target and derives what the engine needs from it. */
static bool conv_open_target(ConvArgs *a, const char *filename)
{
    ImgConvert *s = &a->s;
    ImgOpenOptions o = {
        .fmt = a->tgt_image_opts ? NULL : a->out_fmt,
        .image_opts = a->tgt_image_opts,
        .cache = a->cache,
        .writable = true,
    };
    BlockDriverInfo bdi;

    if (!img_check_cache_mode(a->cache, "cache")) {
        return false;
    }
    s->target = img_open(filename, &o, "unsafe");
    if (!s->target) {
        return false;
    }
    BlockDriverState *bs = blk_bs(s->target);
    if (a->bitmaps && !bdrv_bitmap_supported(bs)) {
        img_error("Format driver '%s' does not support bitmaps", bdrv_get_format_name(bs));
        return false;
    }
    if (s->compressed && !conv_driver_can_compress(bs->drv)) {
        img_error("Compression not supported for this file format");
        return false;
    }
    if (a->skip_create) {
        int64_t len = blk_getlength(s->target);
        if (len < 0) {
            img_error("unable to get output image length: %s", g_strerror((int)-len));
            return false;
        }
        if (len < s->total_size) {
            img_error("output file is smaller than input file");
            return false;
        }
    }
    s->cluster_size = img_get_info(bs, &bdi) == 0 ? bdi.cluster_size : 0;
    if (s->compressed && s->cluster_size <= 0) {
        img_error("invalid cluster size");
        return false;
    }
    s->target_align =
        MAX((int64_t)BDRV_SECTOR_SIZE,
            s->cluster_size > 0 ? s->cluster_size : (int64_t)bs->bl.request_alignment);
    if (a->target_is_zero) {
        s->target_zeroed = true;
    } else if (!a->skip_create && s->min_sparse && !s->target_has_backing) {
        s->target_zeroed = bs->drv->has_zero_init && bs->drv->has_zero_init(bs) > 0;
    }
    return true;
}

static int conv_run(ConvArgs *a, char **names, int nsrc, const char *out_filename)
{
    ImgConvert *s = &a->s;
    int ret = -1;

    if (!img_check_cache_mode(a->src.cache, "source cache")) {
        return 1;
    }
    s->progress = img_progress_start(a->progress ? a->progress_mode : IMG_PROGRESS_NONE);
    if (conv_open_sources(a, names, nsrc) && conv_check_sources(a) &&
        conv_prepare_target(a, out_filename) && conv_open_target(a, out_filename)) {
        ret = img_convert_copy(s);
        if (ret == 0 && a->bitmaps && !conv_copy_bitmaps(a)) {
            ret = -1;
        }
    }
    img_progress_finish(s->progress, ret == 0);
    if (s->target) {
        blk_unref(s->target);
    }
    for (int i = 0; i < s->nsrc; i++) {
        blk_unref(s->src[i].blk);
    }
    g_free(s->src);
    return ret == 0 ? 0 : 1;
}

int img_convert(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS},
        {"salvage", no_argument, NULL, OPT_SALVAGE},
        {"target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO},
        {"bitmaps", no_argument, NULL, OPT_BITMAPS},
        {"skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN},
        {"force-share", no_argument, NULL, 'U'},
        {"progress", optional_argument, NULL, OPT_PROGRESS},
        {NULL, 0, NULL, 0},
    };
    ConvArgs a = {.s = {.num_workers = 8, .min_sparse = 8 * BDRV_SECTOR_SIZE}};
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", longopts, NULL)) != -1) {
        int r = conv_option(&a, c, argv);
        if (r) {
            ret = r < 0 ? 0 : 1;
            goto out;
        }
    }
    if (!a.out_fmt && !a.tgt_image_opts) {
        a.out_fmt = "raw";
    }
    if (!conv_check_args(&a)) {
        goto out;
    }
    if (a.s.quiet) {
        a.progress = false;
    }
    int nsrc = argc - optind - 1;
    const char *out_filename = nsrc >= 1 ? argv[argc - 1] : NULL;
    if (a.options && img_opt_list_has_help(a.options)) {
        ret = a.out_fmt ? img_create_opts_help(a.out_fmt, out_filename) : 1;
        goto out;
    }
    if (nsrc < 1) {
        img_error("Must specify image file name");
        goto out;
    }
    ret = conv_run(&a, argv + optind, nsrc, out_filename);
out:
    g_free(a.options);
    img_snapshot_param_clear(&a.snapshot);
    return ret;
}
