/*
 * strata-img: image creation options — which ones each driver takes, how
 * "-o" lists are parsed and checked, and how "-o help" and the
 * "Formatting ..." line show them.
 *
 * The tables describe the options the way qemu-img 7.2 presents them
 * (names, types, help text, defaults, print order).  They belong with the
 * drivers (a create_opts table in BlockDriver); until the block layer has
 * one they live here, looked up by driver name.  The driver's create
 * callback still decides what it accepts: an option listed here but
 * unknown to the driver fails in bdrv_create with the driver's message.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/options.h"
#include "tools/strata-img/img.h"

static const ImgCreateOpt img_raw_opts[] = {
    {"size", IMG_OPT_SIZE, "Virtual disk size"},
};

static const ImgCreateOpt img_file_opts[] = {
    {"size", IMG_OPT_SIZE, "Virtual disk size"},
    {"nocow", IMG_OPT_BOOL, "Turn off copy-on-write (valid only on btrfs)"},
    {"preallocation", IMG_OPT_STRING, "Preallocation mode (allowed values: off, falloc, full)"},
    {"extent_size_hint", IMG_OPT_SIZE, "Extent size hint for the image file, 0 to disable"},
};

static const ImgCreateOpt img_qcow2_opts[] = {
    {"encryption", IMG_OPT_BOOL,
     "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
    {"encrypt.format", IMG_OPT_STRING, "Encrypt the image, format choices: 'aes', 'luks'"},
    {"encrypt.key-secret", IMG_OPT_STRING,
     "ID of secret providing qcow AES key or LUKS passphrase"},
    {"encrypt.cipher-alg", IMG_OPT_STRING, "Name of encryption cipher algorithm"},
    {"encrypt.cipher-mode", IMG_OPT_STRING, "Name of encryption cipher mode"},
    {"encrypt.ivgen-alg", IMG_OPT_STRING, "Name of IV generator algorithm"},
    {"encrypt.ivgen-hash-alg", IMG_OPT_STRING, "Name of IV generator hash algorithm"},
    {"encrypt.hash-alg", IMG_OPT_STRING, "Name of encryption hash algorithm"},
    {"encrypt.iter-time", IMG_OPT_NUMBER, "Time to spend in PBKDF in milliseconds"},
    {"cluster_size", IMG_OPT_SIZE, "qcow2 cluster size", "65536"},
    {"extended_l2", IMG_OPT_BOOL, "Extended L2 tables", "off"},
    {"preallocation", IMG_OPT_STRING,
     "Preallocation mode (allowed values: off, metadata, falloc, full)"},
    {"compression_type", IMG_OPT_STRING, "Compression method used for image cluster compression",
     "zlib"},
    {"size", IMG_OPT_SIZE, "Virtual disk size"},
    {"compat", IMG_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])"},
    {"backing_file", IMG_OPT_STRING, "File name of a base image"},
    {"backing_fmt", IMG_OPT_STRING, "Image format of the base image"},
    {"data_file", IMG_OPT_STRING, "File name of an external data file"},
    {"data_file_raw", IMG_OPT_BOOL, "The external data file must stay valid as a raw image"},
    {"lazy_refcounts", IMG_OPT_BOOL, "Postpone refcount updates", "off"},
    {"refcount_bits", IMG_OPT_NUMBER, "Width of a reference count entry in bits", "16"},
};

static const struct {
    const char *driver;
    const ImgCreateOpt *opts;
    size_t n;
} img_create_tables[] = {
    {"raw", img_raw_opts, G_N_ELEMENTS(img_raw_opts)},
    {"file", img_file_opts, G_N_ELEMENTS(img_file_opts)},
    {"qcow2", img_qcow2_opts, G_N_ELEMENTS(img_qcow2_opts)},
};

static void img_create_opts_add(GPtrArray *list, BlockDriver *drv)
{
    if (!drv) {
        return;
    }
    for (size_t t = 0; t < G_N_ELEMENTS(img_create_tables); t++) {
        if (strcmp(drv->format_name, img_create_tables[t].driver) != 0) {
            continue;
        }
        for (size_t i = 0; i < img_create_tables[t].n; i++) {
            const ImgCreateOpt *o = &img_create_tables[t].opts[i];
            if (!img_create_opt_find(list, o->name)) {
                g_ptr_array_add(list, (gpointer)o);
            }
        }
    }
}

GPtrArray *img_create_opts_for(BlockDriver *drv, BlockDriver *proto)
{
    GPtrArray *list = g_ptr_array_new();
    img_create_opts_add(list, drv);
    if (proto != drv) {
        img_create_opts_add(list, proto);
    }
    return list;
}

const ImgCreateOpt *img_create_opt_find(GPtrArray *list, const char *name)
{
    for (guint i = 0; i < list->len; i++) {
        const ImgCreateOpt *o = g_ptr_array_index(list, i);
        if (strcmp(o->name, name) == 0) {
            return o;
        }
    }
    return NULL;
}

/*
 * Splits an option list at single commas (",," stands for a comma) into
 * newly allocated items.
 */
static GPtrArray *img_opt_list_split(const char *list)
{
    GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);

    for (const char *p = list;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || *p == '\0') {
            g_ptr_array_add(items, g_string_free(cur, false));
            if (*p == '\0') {
                break;
            }
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
    return items;
}

bool img_opt_list_valid(const char *list)
{
    g_autoptr(GPtrArray) items = img_opt_list_split(list);
    for (guint i = 0; i < items->len; i++) {
        if (!*(char *)g_ptr_array_index(items, i)) {
            return false;
        }
    }
    return true;
}

bool img_opt_list_append(char **list, const char *arg)
{
    if (!img_opt_list_valid(arg)) {
        img_error("Invalid option list: %s", arg);
        return false;
    }
    char *joined = *list ? g_strconcat(*list, ",", arg, NULL) : g_strdup(arg);
    g_free(*list);
    *list = joined;
    return true;
}

bool img_opt_list_has_help(const char *list)
{
    g_autoptr(GPtrArray) items = img_opt_list_split(list);
    for (guint i = 0; i < items->len; i++) {
        const char *item = g_ptr_array_index(items, i);
        if (strcmp(item, "help") == 0 || strcmp(item, "?") == 0) {
            return true;
        }
    }
    return false;
}

/* Checks and normalises one value of @o; fills *value (what the driver gets) and *shown. */
static bool img_opt_value(const ImgCreateOpt *o, const char *str, char **value, char **shown,
                          GError **errp)
{
    uint64_t u;
    char *end;
    int ret;

    switch (o->type) {
    case IMG_OPT_BOOL:
        if (!strcmp(str, "on") || !strcmp(str, "yes") || !strcmp(str, "true") ||
            !strcmp(str, "y")) {
            *value = g_strdup("on");
        } else if (!strcmp(str, "off") || !strcmp(str, "no") || !strcmp(str, "false") ||
                   !strcmp(str, "n")) {
            *value = g_strdup("off");
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Parameter '%s' expects 'on' or 'off'", o->name);
            return false;
        }
        *shown = g_strdup(str);
        return true;
    case IMG_OPT_NUMBER:
        errno = 0;
        u = g_ascii_strtoull(str, &end, 0);
        if (errno || end == str || *end) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Parameter '%s' expects a number", o->name);
            return false;
        }
        /* qemu-img shows the value as a signed number ("-1" stays "-1"). */
        *value = g_strdup_printf("%" PRId64, (int64_t)u);
        *shown = g_strdup(*value);
        return true;
    case IMG_OPT_SIZE:
        ret = img_strtosz(str, &u);
        if (ret == -ERANGE) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Value '%s' is out of range for parameter '%s'", str, o->name);
            return false;
        } else if (ret < 0) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Parameter '%s' expects a non-negative number below 2^64\n"
                        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
                        "peta-\nand exabytes, respectively.",
                        o->name);
            return false;
        }
        *value = g_strdup_printf("%" PRIu64, u);
        *shown = g_strdup(*value);
        return true;
    case IMG_OPT_STRING:
        *value = g_strdup(str);
        *shown = g_strdup(str);
        return true;
    }
    g_assert_not_reached();
}

bool img_opts_parse(GPtrArray *list, const char *str, GHashTable *values, GHashTable *shown,
                    GError **errp)
{
    g_autoptr(GPtrArray) items = img_opt_list_split(str);

    for (guint i = 0; i < items->len; i++) {
        const char *item = g_ptr_array_index(items, i);
        const char *eq = strchr(item, '=');
        g_autofree char *name = NULL;
        const char *val;

        if (eq) {
            name = g_strndup(item, eq - item);
            val = eq + 1;
        } else if (g_str_has_prefix(item, "no")) {
            /* qemu's shorthand: "nofoo" is foo=off, "foo" is foo=on. */
            name = g_strdup(item + 2);
            val = "off";
        } else {
            name = g_strdup(item);
            val = "on";
        }
        const ImgCreateOpt *o = img_create_opt_find(list, name);
        if (!o) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "Invalid parameter '%s'", name);
            return false;
        }
        char *value, *text;
        if (!img_opt_value(o, val, &value, &text, errp)) {
            return false;
        }
        g_hash_table_replace(values, g_strdup(o->name), value);
        g_hash_table_replace(shown, g_strdup(o->name), text);
    }
    return true;
}

static gint img_opt_cmp(gconstpointer a, gconstpointer b)
{
    const ImgCreateOpt *x = *(const ImgCreateOpt *const *)a;
    const ImgCreateOpt *y = *(const ImgCreateOpt *const *)b;
    return strcmp(x->name, y->name);
}

static const char *img_opt_type_name(ImgOptType t)
{
    switch (t) {
    case IMG_OPT_BOOL:
        return "bool (on/off)";
    case IMG_OPT_NUMBER:
        return "num";
    case IMG_OPT_SIZE:
        return "size";
    case IMG_OPT_STRING:
        return "str";
    }
    return "str";
}

void img_print_opts_help(GPtrArray *list, const char *title)
{
    if (title) {
        printf("Supported %s options:\n", title);
    } else {
        printf("Supported options:\n");
    }
    img_print_opts_list(list);
}

void img_print_opts_list(GPtrArray *list)
{
    g_autoptr(GPtrArray) sorted = g_ptr_array_copy(list, NULL, NULL);
    g_ptr_array_sort(sorted, img_opt_cmp);

    for (guint i = 0; i < sorted->len; i++) {
        const ImgCreateOpt *o = g_ptr_array_index(sorted, i);
        g_autofree char *head = g_strdup_printf("%s=<%s>", o->name, img_opt_type_name(o->type));
        printf("  %-22s - %s\n", head, o->help);
    }
}

char *img_opts_to_string(GPtrArray *list, GHashTable *shown)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < list->len; i++) {
        const ImgCreateOpt *o = g_ptr_array_index(list, i);
        const char *v = g_hash_table_lookup(shown, o->name);
        v = v ? v : o->def;
        if (v) {
            g_string_append_printf(s, "%s%s=%s", s->len ? " " : "", o->name, v);
        }
    }
    return g_string_free(s, false);
}

int img_create_opts_help(const char *fmt, const char *filename)
{
    GError *err = NULL;
    BlockDriver *drv = bdrv_find_driver(fmt);
    BlockDriver *proto = NULL;

    if (!drv) {
        img_error("Unknown file format '%s'", fmt);
        return 1;
    }
    if (!drv->create) {
        img_error("Format driver '%s' does not support image creation", fmt);
        return 1;
    }
    if (filename && !drv->is_protocol) {
        proto = bdrv_find_protocol(filename, &err);
        if (!proto) {
            img_report_error(err);
            return 1;
        }
    }
    g_autoptr(GPtrArray) list = img_create_opts_for(drv, proto);
    img_print_opts_help(list, filename ? NULL : fmt);
    if (!filename) {
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    }
    return 0;
}
