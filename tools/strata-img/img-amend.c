/*
 * strata-img amend: changes creation options of an existing image in
 * place, qemu-img 7.2 style: "-o help" lists what the format can amend,
 * options it can only take at creation are refused with qemu-img's hint,
 * and the change itself is the driver's (BlockDriver.amend, for qcow2 in
 * drivers/qcow2/qcow2-amend.c).
 *
 * The amendable options are listed here per format, as the creation
 * options are in img-create-opts.c, until the block layer has such tables;
 * those that are creation options too come from the creation table (as
 * qcow2's QCOW_COMMON_OPTIONS serve both lists in QEMU).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tools/strata-img/img.h"

/* The qcow2 creation options that amend takes as well. */
static const char *const img_qcow2_amend_create_names[] = {
    "size",          "compat",         "backing_file",  "backing_fmt",       "data_file",
    "data_file_raw", "lazy_refcounts", "refcount_bits", "encrypt.iter-time",
};

/* The qcow2 options only amend takes. */
static const ImgCreateOpt img_qcow2_amend_opts[] = {
    {"encrypt.new-secret", IMG_OPT_STRING,
     "New secret to set in the matching keyslots. Empty string to erase"},
    {"encrypt.state", IMG_OPT_STRING, "Select new state of affected keyslots (active/inactive)"},
    {"encrypt.keyslot", IMG_OPT_NUMBER, "Select a single keyslot to modify explicitly"},
    {"encrypt.old-secret", IMG_OPT_STRING, "Select all keyslots that match this password"},
};

/* The amendable options of @drv (empty when it cannot amend).  Free with g_ptr_array_unref. */
static GPtrArray *img_amend_opts_for(BlockDriver *drv)
{
    GPtrArray *list = g_ptr_array_new();
    if (drv->amend && !strcmp(drv->format_name, "qcow2")) {
        g_autoptr(GPtrArray) create = img_create_opts_for(drv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(img_qcow2_amend_create_names); i++) {
            const ImgCreateOpt *o = img_create_opt_find(create, img_qcow2_amend_create_names[i]);
            g_assert(o);
            g_ptr_array_add(list, (gpointer)o);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(img_qcow2_amend_opts); i++) {
            g_ptr_array_add(list, (gpointer)&img_qcow2_amend_opts[i]);
        }
    }
    return list;
}

/* "-o help": the sorted amendable options of format @fmt.  Returns the exit status. */
static int img_amend_help(const char *fmt)
{
    BlockDriver *drv = bdrv_find_driver(fmt);
    if (!drv) {
        img_error("Unknown file format '%s'", fmt);
        return 1;
    }
    if (!drv->amend) {
        img_error("Format driver '%s' does not support option amendment", fmt);
        return 1;
    }
    g_autoptr(GPtrArray) list = img_amend_opts_for(drv);
    printf("Amend options for '%s':\n", fmt);
    img_print_opts_list(list);
    return 0;
}

/*
 * Parses @options against what @drv can amend; a list that only creation
 * options make valid earns qemu-img's hint.  Prints the error and returns
 * NULL on failure.
 */
static GHashTable *img_amend_parse(BlockDriver *drv, const char *options)
{
    GHashTable *values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) shown = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GPtrArray) list = img_amend_opts_for(drv);
    GError *err = NULL;

    if (img_opts_parse(list, options, values, shown, &err)) {
        return values;
    }
    g_autoptr(GPtrArray) create = img_create_opts_for(drv, NULL);
    for (guint i = 0; i < create->len; i++) {
        g_ptr_array_add(list, g_ptr_array_index(create, i));
    }
    g_autoptr(GHashTable) v2 = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) s2 = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    bool creation_only = img_opts_parse(list, options, v2, s2, NULL);
    img_error("%s", err->message);
    if (creation_only) {
        fprintf(stderr, "This option is only supported for image creation\n");
    }
    g_error_free(err);
    g_hash_table_unref(values);
    return NULL;
}

/* Applies @options to the open image.  Returns the exit status. */
static int img_amend_apply(BlockBackend *blk, const char *options, bool force, bool progress)
{
    BlockDriverState *bs = blk_bs(blk);
    ImgSimpleProgress p;
    GError *err = NULL;

    if (img_opt_list_has_help(options)) {
        return img_amend_help(bs->drv->format_name);
    }
    if (!bs->drv->amend) {
        img_error("Format driver '%s' does not support option amendment", bs->drv->format_name);
        return 1;
    }
    g_autoptr(GHashTable) opts = img_amend_parse(bs->drv, options);
    if (!opts) {
        return 1;
    }
    img_simple_progress_init(&p, progress, 1.0);
    img_simple_progress_set(&p, 0);
    bdrv_drained_begin(bs);
    bool ok = bs->drv->amend(bs, opts, force, &err);
    bdrv_drained_end(bs);
    img_simple_progress_set(&p, 100);
    img_simple_progress_end(&p);
    if (!ok) {
        img_error("%s", err->message);
        if (!strcmp(err->message, "Cannot amend the backing file")) {
            fprintf(stderr, "You can use 'strata-img rebase' instead.\n");
        }
        g_error_free(err);
        return 1;
    }
    return 0;
}

enum { OPT_FORCE = IMG_OPT_LOCAL };

int img_amend(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force", no_argument, NULL, OPT_FORCE},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {.writable = true, .resize = true};
    g_autofree char *options = NULL;
    bool progress = false, quiet = false, force = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (!img_opt_list_append(&options, optarg)) {
                return 1;
            }
            break;
        case 'p':
            progress = true;
            break;
        case OPT_FORCE:
            force = true;
            break;
        default:
            if (!img_common_opt(c, argv, &o, &quiet, NULL, &ret)) {
                return ret;
            }
        }
    }
    if (!options) {
        img_error("Must specify options (-o)");
        img_usage_hint();
        return 1;
    }
    if (o.fmt && img_opt_list_has_help(options)) {
        return img_amend_help(o.fmt);
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        return 1;
    }
    if (!img_check_cache_mode(o.cache, "cache")) {
        return 1;
    }
    BlockBackend *blk = img_open(argv[optind], &o, "writeback");
    if (!blk) {
        return 1;
    }
    ret = img_amend_apply(blk, options, force, progress && !quiet);
    blk_unref(blk);
    return ret;
}
