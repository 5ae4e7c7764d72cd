/*
 * strata-img bitmap: changes the persistent dirty bitmaps of an image,
 * qemu-img 7.2 style.  Several actions may be given; they run in command
 * line order on one bitmap, each committed to the image at once, and the
 * first failure stops the rest ("Operation <op> on bitmap <name> failed:
 * ...").  --merge reads its source bitmap from the image itself or from
 * the image given with -b (opened read-only).
 *
 * The checks qemu-img's QMP layer makes before the driver is asked (name,
 * granularity, existence) are made here with its words, so that the
 * messages match; the library does the rest (block/bitmaps.h).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/bitmaps.h"
#include "tools/strata-img/img.h"

typedef enum {
    BITMAP_ADD,
    BITMAP_REMOVE,
    BITMAP_CLEAR,
    BITMAP_ENABLE,
    BITMAP_DISABLE,
    BITMAP_MERGE,
} ImgBitmapActKind;

static const char *const img_bitmap_op_names[] = {"add",    "remove",  "clear",
                                                  "enable", "disable", "merge"};

typedef struct ImgBitmapAct {
    ImgBitmapActKind kind;
    const char *src; /* merge: the source bitmap */
} ImgBitmapAct;

enum {
    OPT_ADD = IMG_OPT_LOCAL,
    OPT_REMOVE,
    OPT_CLEAR,
    OPT_ENABLE,
    OPT_DISABLE,
    OPT_MERGE,
};

/* True when @bs has a bitmap called @name. */
static bool img_bitmap_exists(BlockDriverState *bs, const char *name)
{
    BdrvBitmapInfo *list;
    int n;
    bool found = false;
    if (!bdrv_bitmap_list(bs, &list, &n, NULL)) {
        return false;
    }
    for (int i = 0; i < n; i++) {
        found |= !strcmp(list[i].name, name);
    }
    bdrv_bitmap_list_free(list, n);
    return found;
}

static bool img_bitmap_not_found(const char *name, GError **errp)
{
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "Dirty bitmap '%s' not found", name);
    return false;
}

/* --add, with qemu's checks in qemu's order before the driver's own. */
static bool img_bitmap_add(BlockDriverState *bs, const char *name, int64_t granularity,
                           GError **errp)
{
    GError *err = NULL;
    if (!*name) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Bitmap name cannot be empty");
        return false;
    }
    if (granularity &&
        (granularity < 512 || granularity > UINT32_MAX || (granularity & (granularity - 1)))) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Granularity must be power of 2 and at least 512");
        return false;
    }
    if (!bs->drv->bitmap_ops) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Can't store persistent bitmaps to %s: Operation not supported",
                    bdrv_get_node_name(bs));
        return false;
    }
    if (img_bitmap_exists(bs, name)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST, "Bitmap already exists: %s", name);
        return false;
    }
    if (strlen(name) > 1023) {
        g_set_error(&err, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Name length exceeds maximum (1023 characters)");
    } else if (!bdrv_bitmap_add(bs, name, (uint32_t)granularity, true, &err)) {
        /* fall through to the prefix */
    } else {
        return true;
    }
    g_set_error(errp, err->domain, err->code, "Can't make bitmap '%s' persistent in '%s': %s", name,
                bdrv_get_node_name(bs), err->message);
    g_error_free(err);
    return false;
}

static bool img_bitmap_run(BlockDriverState *bs, BlockDriverState *src_bs, const char *name,
                           const ImgBitmapAct *act, int64_t granularity, GError **errp)
{
    if (act->kind == BITMAP_ADD) {
        return img_bitmap_add(bs, name, granularity, errp);
    }
    if (!img_bitmap_exists(bs, name)) {
        return img_bitmap_not_found(name, errp);
    }
    switch (act->kind) {
    case BITMAP_REMOVE:
        return bdrv_bitmap_remove(bs, name, errp);
    case BITMAP_CLEAR:
        return bdrv_bitmap_clear(bs, name, errp);
    case BITMAP_ENABLE:
        return bdrv_bitmap_enable(bs, name, errp);
    case BITMAP_DISABLE:
        return bdrv_bitmap_disable(bs, name, errp);
    default:
        if (!img_bitmap_exists(src_bs, act->src)) {
            return img_bitmap_not_found(act->src, errp);
        }
        return bdrv_bitmap_merge(bs, name, src_bs, act->src, errp);
    }
}

/* The checks qemu-img makes before opening anything.  Returns false after printing. */
static bool img_bitmap_check_args(GArray *acts, bool add, bool merge, int64_t granularity,
                                  const char *src_file, const char *src_fmt, int argc)
{
    const char *err = NULL;
    if (acts->len == 0) {
        err = "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge";
    } else if (granularity && !add) {
        err = "granularity only supported with --add";
    } else if (src_fmt && !src_file) {
        err = "-F only supported with -b";
    } else if (src_file && !merge) {
        err = "Merge bitmap source file only supported with --merge";
    } else if (optind != argc - 2) {
        err = "Expecting filename and bitmap name";
    }
    if (err) {
        img_error("%s", err);
        return false;
    }
    return true;
}

/* Opens the image(s) and runs the actions in order.  Returns the exit status. */
static int img_bitmap_apply(const ImgOpenOptions *o, const char *filename, const char *name,
                            GArray *acts, const char *src_file, const char *src_fmt,
                            int64_t granularity)
{
    BlockBackend *blk = img_open(filename, o, "writeback");
    BlockBackend *src = NULL;
    int ret = 1;

    if (!blk) {
        return 1;
    }
    if (src_file) {
        ImgOpenOptions so = {.fmt = src_fmt};
        if (!(src = img_open(src_file, &so, "writeback"))) {
            goto out;
        }
    }
    BlockDriverState *bs = blk_bs(blk);
    BlockDriverState *src_bs = src ? blk_bs(src) : bs;
    for (guint i = 0; i < acts->len; i++) {
        const ImgBitmapAct *act = &g_array_index(acts, ImgBitmapAct, i);
        GError *err = NULL;
        if (!img_bitmap_run(bs, src_bs, name, act, granularity, &err)) {
            img_error("Operation %s on bitmap %s failed: %s", img_bitmap_op_names[act->kind], name,
                      err->message);
            g_error_free(err);
            goto out;
        }
    }
    ret = 0;
out:
    if (src) {
        blk_unref(src);
    }
    blk_unref(blk);
    return ret;
}

int img_bitmap(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"add", no_argument, NULL, OPT_ADD},
        {"remove", no_argument, NULL, OPT_REMOVE},
        {"clear", no_argument, NULL, OPT_CLEAR},
        {"enable", no_argument, NULL, OPT_ENABLE},
        {"disable", no_argument, NULL, OPT_DISABLE},
        {"merge", required_argument, NULL, OPT_MERGE},
        {"granularity", required_argument, NULL, 'g'},
        {"source-file", required_argument, NULL, 'b'},
        {"source-format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {.writable = true, .no_backing = true};
    const char *src_file = NULL, *src_fmt = NULL;
    g_autoptr(GArray) acts = g_array_new(false, true, sizeof(ImgBitmapAct));
    bool add = false, merge = false;
    int64_t granularity = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":b:f:F:g:h", longopts, NULL)) != -1) {
        ImgBitmapAct act = {0};
        switch (c) {
        case 'b':
            src_file = optarg;
            break;
        case 'F':
            src_fmt = optarg;
            break;
        case 'g': {
            bool range;
            if (!img_parse_size_ex(optarg, &granularity, &range)) {
                if (range) {
                    img_error("Invalid granularity specified. Must be between 0 and %" PRId64 ".",
                              INT64_MAX);
                } else {
                    img_error_size_suffix("granularity");
                }
                return 1;
            }
            break;
        }
        case OPT_ADD ... OPT_MERGE:
            act.kind = (ImgBitmapActKind)(c - OPT_ADD);
            act.src = c == OPT_MERGE ? optarg : NULL;
            add |= c == OPT_ADD;
            merge |= c == OPT_MERGE;
            g_array_append_val(acts, act);
            break;
        default:
            if (!img_common_opt(c, argv, &o, NULL, NULL, &ret)) {
                return ret;
            }
        }
    }
    if (!img_bitmap_check_args(acts, add, merge, granularity, src_file, src_fmt, argc)) {
        return 1;
    }
    return img_bitmap_apply(&o, argv[optind], argv[optind + 1], acts, src_file, src_fmt,
                            granularity);
}
