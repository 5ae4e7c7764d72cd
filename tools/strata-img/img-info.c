/*
 * strata-img info: describes an image (and with --backing-chain each image
 * below it) in qemu-img 7.2's human or JSON layout.
 *
 * Each image of a chain is opened on its own, without its backing file,
 * the way qemu-img does it: a missing backing file does not stop "info"
 * on the overlay, and the chain is followed by the names the headers
 * record.  Everything is collected first and printed at the end, so an
 * error halfway prints nothing but the error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/block-global-state.h"
#include "block/snapshot.h"
#include "tools/strata-img/img.h"

typedef struct ImgImageInfo {
    char *filename;
    char *format;
    int64_t virtual_size;
    int64_t actual_size; /* < 0: unavailable */
    bool has_dirty;
    bool dirty;
    int cluster_size; /* 0: the format has none */
    char *backing_filename;
    char *full_backing_filename;
    char *backing_format;
    BdrvSnapshotInfo *snapshots;
    int nb_snapshots;
    GVariant *specific; /* a{sv} or NULL */
} ImgImageInfo;

static void img_image_info_free(gpointer p)
{
    ImgImageInfo *info = p;
    g_free(info->filename);
    g_free(info->format);
    g_free(info->backing_filename);
    g_free(info->full_backing_filename);
    g_free(info->backing_format);
    bdrv_snapshot_list_free(info->snapshots, info->nb_snapshots);
    if (info->specific) {
        g_variant_unref(info->specific);
    }
    g_free(info);
}

/* The backing file name resolved against the image's own name, as qemu-img shows it. */
static char *img_full_backing_filename(BlockDriverState *bs)
{
    const char *base = bs->filename;
    size_t n = base ? strcspn(base, ":/") : 0;

    if (!base || base[n] == ':') {
        /* Protocol or json: names: let the block layer say whether it can resolve. */
        return bdrv_get_full_backing_filename(bs, NULL);
    }
    return img_path_combine(base, bs->backing_file);
}

/* Gathers what "info" shows about the node @blk is attached to. */
static ImgImageInfo *img_collect_info(BlockBackend *blk)
{
    BlockDriverState *bs = blk_bs(blk);
    ImgImageInfo *info = g_new0(ImgImageInfo, 1);
    BlockDriverInfo bdi;

    info->filename = g_strdup(bs->filename);
    info->format = g_strdup(bdrv_get_format_name(bs));
    info->virtual_size = blk_getlength(blk);
    info->actual_size = img_get_allocated_file_size(bs);
    if (img_get_info(bs, &bdi) >= 0) {
        info->has_dirty = true;
        info->dirty = bdi.is_dirty;
        info->cluster_size = bdi.cluster_size;
    }
    if (bs->backing_file && *bs->backing_file) {
        info->backing_filename = g_strdup(bs->backing_file);
        info->full_backing_filename = img_full_backing_filename(bs);
        info->backing_format = g_strdup(bs->backing_format);
    }
    if (bdrv_can_snapshot(bs) &&
        !bdrv_snapshot_list(bs, &info->snapshots, &info->nb_snapshots, NULL)) {
        info->snapshots = NULL;
        info->nb_snapshots = 0;
    }
    /* A failure (say, an unreadable bitmap directory) only drops the section, as in qemu-img. */
    info->specific = bdrv_get_specific_info(bs, NULL);
    return info;
}

/* ---- human output ------------------------------------------------------------------------- */

static void img_dump_info_human(GString *out, const ImgImageInfo *info)
{
    g_autofree char *vsize = img_size_to_str(info->virtual_size);

    g_string_append_printf(out,
                           "image: %s\nfile format: %s\nvirtual size: %s (%" PRId64 " bytes)\n",
                           info->filename, info->format, vsize, info->virtual_size);
    if (info->actual_size >= 0) {
        g_autofree char *dsize = img_size_to_str(info->actual_size);
        g_string_append_printf(out, "disk size: %s\n", dsize);
    } else {
        g_string_append(out, "disk size: unavailable\n");
    }
    if (info->cluster_size > 0) {
        g_string_append_printf(out, "cluster_size: %d\n", info->cluster_size);
    }
    if (info->has_dirty && info->dirty) {
        g_string_append(out, "cleanly shut down: no\n");
    }
    if (info->backing_filename) {
        g_string_append_printf(out, "backing file: %s", info->backing_filename);
        if (info->full_backing_filename &&
            strcmp(info->full_backing_filename, info->backing_filename) != 0) {
            g_string_append_printf(out, " (actual path: %s)", info->full_backing_filename);
        }
        g_string_append_c(out, '\n');
        if (info->backing_format) {
            g_string_append_printf(out, "backing file format: %s\n", info->backing_format);
        }
    }
    if (info->nb_snapshots > 0) {
        img_dump_snapshot_table(out, info->snapshots, info->nb_snapshots);
    }
    if (info->specific) {
        g_string_append(out, "Format specific information:\n");
        bdrv_specific_info_dump(out, info->specific, 4);
    }
}

/* ---- JSON output (keys in qemu-img's order) --------------------------------------------- */

static void img_json_snapshot(ImgJson *j, const BdrvSnapshotInfo *sn)
{
    img_json_begin_object(j, NULL);
    if (sn->icount != UINT64_MAX) {
        img_json_uint(j, "icount", sn->icount);
    }
    img_json_int(j, "vm-clock-nsec", sn->vm_clock_nsec % 1000000000);
    img_json_str(j, "name", sn->name);
    img_json_int(j, "date-sec", sn->date_sec);
    img_json_int(j, "date-nsec", sn->date_nsec);
    img_json_int(j, "vm-clock-sec", sn->vm_clock_nsec / 1000000000);
    img_json_str(j, "id", sn->id);
    img_json_uint(j, "vm-state-size", sn->vm_state_size);
    img_json_end_object(j);
}

static void img_json_info(ImgJson *j, const ImgImageInfo *info)
{
    img_json_begin_object(j, NULL);
    if (info->backing_format) {
        img_json_str(j, "backing-filename-format", info->backing_format);
    }
    if (info->nb_snapshots > 0) {
        img_json_begin_array(j, "snapshots");
        for (int i = 0; i < info->nb_snapshots; i++) {
            img_json_snapshot(j, &info->snapshots[i]);
        }
        img_json_end_array(j);
    }
    img_json_int(j, "virtual-size", info->virtual_size);
    img_json_str(j, "filename", info->filename);
    if (info->cluster_size > 0) {
        img_json_int(j, "cluster-size", info->cluster_size);
    }
    img_json_str(j, "format", info->format);
    if (info->actual_size >= 0) {
        img_json_int(j, "actual-size", info->actual_size);
    }
    if (info->specific) {
        img_json_begin_object(j, "format-specific");
        img_json_str(j, "type", info->format);
        img_json_variant(j, "data", info->specific);
        img_json_end_object(j);
    }
    if (info->full_backing_filename) {
        img_json_str(j, "full-backing-filename", info->full_backing_filename);
    }
    if (info->backing_filename) {
        img_json_str(j, "backing-filename", info->backing_filename);
    }
    if (info->has_dirty) {
        img_json_bool(j, "dirty-flag", info->dirty);
    }
    img_json_end_object(j);
}

/* ---- collecting a chain ------------------------------------------------------------------- */

/*
 * Opens @filename and, with @chain, every backing file below it; returns
 * the infos top first, or NULL after printing an error.
 */
static GPtrArray *img_collect_chain(const char *filename, ImgOpenOptions o, bool chain)
{
    g_autoptr(GPtrArray) infos = g_ptr_array_new_with_free_func(img_image_info_free);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autofree char *name = g_strdup(filename);
    g_autofree char *fmt = g_strdup(o.fmt);

    while (name) {
        if (!g_hash_table_add(seen, g_strdup(name))) {
            img_error("Backing file '%s' creates an infinite loop.", name);
            return NULL;
        }
        o.fmt = fmt;
        BlockBackend *blk = img_open(name, &o, "writeback");
        if (!blk) {
            return NULL;
        }
        ImgImageInfo *info = img_collect_info(blk);
        blk_unref(blk);
        g_ptr_array_add(infos, info);

        g_free(g_steal_pointer(&name));
        g_free(g_steal_pointer(&fmt));
        if (chain && info->backing_filename) {
            name = g_strdup(info->full_backing_filename ? info->full_backing_filename
                                                        : info->backing_filename);
            fmt = g_strdup(info->backing_format);
            o.image_opts = false;
        }
    }
    return g_steal_pointer(&infos);
}

static void img_print_infos(GPtrArray *infos, ImgOutputFormat output, bool chain)
{
    if (output == IMG_OUTPUT_JSON) {
        ImgJson j;
        img_json_init(&j);
        if (chain) {
            img_json_begin_array(&j, NULL);
        }
        for (guint i = 0; i < infos->len; i++) {
            img_json_info(&j, g_ptr_array_index(infos, i));
        }
        if (chain) {
            img_json_end_array(&j);
        }
        g_autofree char *text = img_json_finish(&j);
        printf("%s\n", text);
        return;
    }
    GString *out = g_string_new(NULL);
    for (guint i = 0; i < infos->len; i++) {
        if (i > 0) {
            g_string_append_c(out, '\n');
        }
        img_dump_info_human(out, g_ptr_array_index(infos, i));
    }
    fputs(out->str, stdout);
    g_string_free(out, true);
}

enum { OPT_BACKING_CHAIN = IMG_OPT_LOCAL };

int img_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, IMG_OPT_OUTPUT},
        {"backing-chain", no_argument, NULL, OPT_BACKING_CHAIN},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {.no_backing = true};
    ImgOutputFormat output = IMG_OUTPUT_HUMAN;
    const char *output_arg = NULL;
    bool chain = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BACKING_CHAIN:
            chain = true;
            break;
        default:
            if (!img_common_opt(c, argv, &o, NULL, &output_arg, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        img_usage_hint();
        return 1;
    }
    if (output_arg && !img_parse_output_format(output_arg, &output)) {
        return 1;
    }
    if (!img_check_format_opts(&o)) {
        return 1;
    }
    g_autoptr(GPtrArray) infos = img_collect_chain(argv[optind], o, chain);
    if (!infos) {
        return 1;
    }
    img_print_infos(infos, output, chain);
    return 0;
}
