/*
 * strata-img create: makes a new image with qemu-img 7.2's options
 * (-f, -b/-F, -u, -o, -q, size with suffixes), checks and messages, and
 * its "Formatting '...', fmt=... " line.  The image itself is written by
 * the format driver's create callback through bdrv_create().
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/block-global-state.h"
#include "block/options.h"
#include "tools/strata-img/img.h"

typedef struct ImgCreateArgs {
    const char *filename;
    const char *fmt;
    const char *base;
    const char *base_fmt;
    char *options; /* every -o joined with ',' */
    int64_t size;  /* -1: not given on the command line */
    bool unsafe;
    bool quiet;
} ImgCreateArgs;

/* Opens the backing file read-only without its own backing chain. */
static BlockDriverState *img_open_backing(const char *filename, const char *backing,
                                          const char *fmt, GError **errp)
{
    g_autofree char *path = img_path_combine(filename, backing);
    GHashTable *opts = opts_new();

    if (fmt) {
        opts_set(opts, "driver", fmt);
    }
    return bdrv_open(path, opts, BDRV_O_NO_BACKING | BDRV_O_FORCE_SHARE, errp);
}

/* Validates the backing options; fills in the size from the backing file when needed. */
static bool img_create_check_backing(const ImgCreateArgs *a, GHashTable *values, GHashTable *shown)
{
    const char *backing = opts_get(values, "backing_file");
    const char *bfmt = opts_get(values, "backing_fmt");
    GError *err = NULL;

    if (!backing) {
        return true;
    }
    if (strcmp(backing, a->filename) == 0) {
        img_error("%s: Error: Trying to create an image with the same filename as the backing file",
                  a->filename);
        return false;
    }
    if (!bfmt) {
        BlockDriverState *bs =
            a->unsafe ? NULL : img_open_backing(a->filename, backing, NULL, NULL);
        img_error("%s: Backing file specified without backing format", a->filename);
        if (bs) {
            fprintf(stderr, "Detected format of %s.\n", bdrv_get_format_name(bs));
            bdrv_unref(bs);
        }
        return false;
    }
    if (a->unsafe) {
        return true;
    }
    BlockDriverState *bs = img_open_backing(a->filename, backing, bfmt, &err);
    if (!bs) {
        img_error("%s: %s\nCould not open backing image.", a->filename, err->message);
        g_error_free(err);
        return false;
    }
    if (!opts_get(values, "size")) {
        int64_t len = bdrv_getlength(bs);
        if (len < 0) {
            img_error("%s: Could not get the size of the backing file: %s", a->filename,
                      g_strerror((int)-len));
            bdrv_unref(bs);
            return false;
        }
        g_autofree char *s = g_strdup_printf("%" PRId64, len);
        opts_set(values, "size", s);
        g_hash_table_replace(shown, g_strdup("size"), g_strdup(s));
    }
    bdrv_unref(bs);
    return true;
}

/* Sets @name from the command line (-b, -F, size) when the format knows it. */
static bool img_create_set(GPtrArray *list, GHashTable *values, GHashTable *shown, const char *name,
                           const char *value, const char *what, const ImgCreateArgs *a)
{
    if (!img_create_opt_find(list, name)) {
        img_error("%s: %s not supported for file format '%s'", a->filename, what, a->fmt);
        return false;
    }
    opts_set(values, name, value);
    g_hash_table_replace(shown, g_strdup(name), g_strdup(value));
    return true;
}

/* Everything qemu-img checks between the command line and the driver's create. */
static bool img_create_collect(const ImgCreateArgs *a, GPtrArray *list, GHashTable *values,
                               GHashTable *shown)
{
    GError *err = NULL;

    if (a->options && !img_opts_parse(list, a->options, values, shown, &err)) {
        img_error("%s: %s", a->filename, err->message);
        g_error_free(err);
        return false;
    }
    if (a->size >= 0) {
        if (opts_get(values, "size")) {
            img_error("%s: The image size must be specified only once", a->filename);
            return false;
        }
        g_autofree char *s = g_strdup_printf("%" PRId64, a->size);
        opts_set(values, "size", s);
        g_hash_table_replace(shown, g_strdup("size"), g_strdup(s));
    }
    if ((a->base &&
         !img_create_set(list, values, shown, "backing_file", a->base, "Backing file", a)) ||
        (a->base_fmt && !img_create_set(list, values, shown, "backing_fmt", a->base_fmt,
                                        "Backing file format", a))) {
        return false;
    }
    if (!img_create_check_backing(a, values, shown)) {
        return false;
    }
    if (!opts_get(values, "size")) {
        img_error("%s: Image creation needs a size parameter", a->filename);
        return false;
    }
    return true;
}

static int img_create_image(const ImgCreateArgs *a)
{
    GError *err = NULL;
    BlockDriver *drv = bdrv_find_driver(a->fmt);
    BlockDriver *proto = NULL;

    if (!drv) {
        img_error("%s: Unknown file format '%s'", a->filename, a->fmt);
        return 1;
    }
    if (!drv->create) {
        img_error("%s: Format driver '%s' does not support image creation", a->filename, a->fmt);
        return 1;
    }
    if (!drv->is_protocol) {
        proto = bdrv_find_protocol(a->filename, &err);
        if (!proto) {
            img_error("%s: %s", a->filename, err->message);
            g_error_free(err);
            return 1;
        }
    }
    g_autoptr(GPtrArray) list = img_create_opts_for(drv, proto);
    GHashTable *values = opts_new();
    g_autoptr(GHashTable) shown = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (!img_create_collect(a, list, values, shown)) {
        g_hash_table_unref(values);
        return 1;
    }
    if (!a->quiet) {
        g_autofree char *text = img_opts_to_string(list, shown);
        printf("Formatting '%s', fmt=%s %s\n", a->filename, a->fmt, text);
        fflush(stdout);
    }
    if (opts_get(values, "backing_fmt") && !opts_get(values, "backing_file")) {
        img_error("%s: Backing format cannot be used without backing file", a->filename);
        g_hash_table_unref(values);
        return 1;
    }
    if (!img_bdrv_create(drv, a->filename, values, &err)) {
        img_error("%s: %s", a->filename, err->message);
        g_error_free(err);
        return 1;
    }
    return 0;
}

/* The optional size argument: qemu-img's messages for junk and for out-of-range values. */
static bool img_create_parse_size(const char *arg, int64_t *size)
{
    bool range;
    if (img_parse_size_ex(arg, size, &range)) {
        return true;
    }
    if (range) {
        img_error("Invalid image size specified. Must be between 0 and %" PRId64 ".", INT64_MAX);
    } else {
        img_error_size_suffix("image size");
    }
    return false;
}

int img_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {NULL, 0, NULL, 0},
    };
    ImgCreateArgs a = {.fmt = "raw", .size = -1};
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", longopts, NULL)) != -1) {
        switch (c) {
        case 'F':
            a.base_fmt = optarg;
            break;
        case 'b':
            a.base = optarg;
            break;
        case 'f': /* not an ImgOpenOptions: nothing is opened with it */
            a.fmt = optarg;
            break;
        case 'o':
            if (!img_opt_list_append(&a.options, optarg)) {
                goto out;
            }
            break;
        case 'u':
            a.unsafe = true;
            break;
        default:
            if (!img_common_opt(c, argv, NULL, &a.quiet, NULL, &ret)) {
                goto out;
            }
        }
    }
    a.filename = optind < argc ? argv[optind++] : NULL;
    if (a.options && img_opt_list_has_help(a.options)) {
        ret = img_create_opts_help(a.fmt, a.filename);
        goto out;
    }
    if (!a.filename) {
        img_error("Expecting image file name");
        img_usage_hint();
        goto out;
    }
    if (optind < argc && !img_create_parse_size(argv[optind++], &a.size)) {
        goto out;
    }
    if (optind != argc) {
        img_error("Unexpected argument: %s", argv[optind]);
        img_usage_hint();
        goto out;
    }
    ret = img_create_image(&a);
out:
    g_free(a.options);
    return ret;
}
