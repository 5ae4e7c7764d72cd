/*
 * strata-io: the format names and the "Format specific information" part
 * of the info command.  The latter is printed from the dictionary a
 * driver's get_specific_info callback returns (an a{sv}: "compat": "1.1",
 * "lazy-refcounts": false, "bitmaps": [...]).
 *
 * qemu-io 7.2 lays it out exactly as qemu-img's human info does: four spaces
 * per level, "key: value" for scalars, "key:" alone above a nested
 * dictionary or list, "[i]" as the key of a list item, and '-' in keys
 * printed as a space.  Its keys come in the iteration order of QEMU's
 * dictionaries, not the driver's order, so the printer sorts them by the
 * table below.
 *
 * strata-img has the same printer and table (tools/strata-img/img-json.c
 * and img-driver.c).  The GNUmakefile links each tool from its own folder
 * only, so the two copies cannot share one file yet; a change to either
 * table belongs in both (iotests 022 and 112 catch a divergence from QEMU).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "tools/strata-io/sio.h"

/* qemu-io 7.2's key order; keys not listed follow in the driver's order. */
static const char *const sio_specific_key_order[] = {
    /* qcow2 */
    "compat",
    "compression-type",
    "lazy-refcounts",
    "bitmaps",
    "refcount-bits",
    "data-file",
    "encrypt",
    "data-file-raw",
    "corrupt",
    "extended-l2",
    /* qcow2 bitmap entries */
    "flags",
    "name",
    "granularity",
};

typedef struct SioDictEntry {
    int rank;
    gsize index;
    const char *key; /* points into @entry */
    GVariant *entry; /* one {sv} child of the dictionary */
} SioDictEntry;

static int sio_key_rank(const char *key)
{
    for (size_t i = 0; i < G_N_ELEMENTS(sio_specific_key_order); i++) {
        if (strcmp(key, sio_specific_key_order[i]) == 0) {
            return (int)i;
        }
    }
    return G_N_ELEMENTS(sio_specific_key_order);
}

/* Rank first, then the driver's position: a stable sort through qsort. */
static int sio_dict_entry_cmp(const void *a, const void *b)
{
    const SioDictEntry *x = a, *y = b;
    if (x->rank != y->rank) {
        return x->rank < y->rank ? -1 : 1;
    }
    return x->index < y->index ? -1 : x->index > y->index;
}

/* @v with any variant boxes removed (a new reference). */
static GVariant *sio_unbox(GVariant *v)
{
    GVariant *val = g_variant_ref(v);
    while (g_variant_is_of_type(val, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(val);
        g_variant_unref(val);
        val = inner;
    }
    return val;
}

/* A scalar as qemu-io prints it (strings unquoted); false for containers. */
static bool sio_print_scalar(GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BOOLEAN:
        fputs(g_variant_get_boolean(v) ? "true" : "false", stdout);
        return true;
    case G_VARIANT_CLASS_BYTE:
        printf("%u", g_variant_get_byte(v));
        return true;
    case G_VARIANT_CLASS_INT16:
        printf("%d", g_variant_get_int16(v));
        return true;
    case G_VARIANT_CLASS_UINT16:
        printf("%u", g_variant_get_uint16(v));
        return true;
    case G_VARIANT_CLASS_INT32:
        printf("%" G_GINT32_FORMAT, g_variant_get_int32(v));
        return true;
    case G_VARIANT_CLASS_UINT32:
        printf("%" G_GUINT32_FORMAT, g_variant_get_uint32(v));
        return true;
    case G_VARIANT_CLASS_INT64:
        printf("%" G_GINT64_FORMAT, g_variant_get_int64(v));
        return true;
    case G_VARIANT_CLASS_UINT64:
        printf("%" G_GUINT64_FORMAT, g_variant_get_uint64(v));
        return true;
    case G_VARIANT_CLASS_DOUBLE:
        printf("%.17g", g_variant_get_double(v));
        return true;
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        fputs(g_variant_get_string(v, NULL), stdout);
        return true;
    default:
        return false;
    }
}

static void sio_print_dict(GVariant *dict, int indent);

/* "label: scalar", or "label:" and the container's members one level deeper. */
static void sio_print_value(const char *label, GVariant *v, int indent)
{
    g_autoptr(GVariant) val = sio_unbox(v);

    printf("%*s%s:", indent, "", label);
    if (g_variant_is_of_type(val, G_VARIANT_TYPE("a{s*}"))) {
        putchar('\n');
        sio_print_dict(val, indent + 4);
    } else if (g_variant_is_container(val)) {
        putchar('\n');
        for (gsize i = 0; i < g_variant_n_children(val); i++) {
            g_autoptr(GVariant) item = g_variant_get_child_value(val, i);
            g_autofree char *item_label = g_strdup_printf("[%zu]", (size_t)i);
            sio_print_value(item_label, item, indent + 4);
        }
    } else {
        putchar(' ');
        sio_print_scalar(val);
        putchar('\n');
    }
}

static void sio_print_dict(GVariant *dict, int indent)
{
    gsize n = g_variant_n_children(dict);
    g_autofree SioDictEntry *e = g_new0(SioDictEntry, n ? n : 1);

    for (gsize i = 0; i < n; i++) {
        e[i].entry = g_variant_get_child_value(dict, i);
        g_variant_get_child(e[i].entry, 0, "&s", &e[i].key);
        e[i].rank = sio_key_rank(e[i].key);
        e[i].index = i;
    }
    qsort(e, n, sizeof(*e), sio_dict_entry_cmp);
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) val = g_variant_get_child_value(e[i].entry, 1);
        g_autofree char *label = g_strdelimit(g_strdup(e[i].key), "-", ' ');
        sio_print_value(label, val, indent);
        g_variant_unref(e[i].entry);
    }
}

void sio_print_format_name(BlockDriverState *bs)
{
    printf("format name: %s\n", bdrv_get_format_name(bs));
    if (bs->drv && bs->drv->protocol_name) {
        printf("format name: %s\n", bs->drv->protocol_name);
    }
}

int sio_print_specific_info(BlockDriverState *bs)
{
    if (!bs->drv || !bs->drv->get_specific_info) {
        return 0;
    }
    g_autoptr(GError) err = NULL;
    GVariant *from_driver = bs->drv->get_specific_info(bs, &err);
    if (!from_driver) {
        if (err) {
            /* qemu-io reports the error and fails the command with EIO. */
            sio_error("%s", err->message);
            return -EIO;
        }
        return 0; /* nothing to say about this image */
    }
    /* The driver hands over its reference, floating (g_variant_new) or not. */
    g_autoptr(GVariant) info = g_variant_take_ref(from_driver);
    printf("Format specific information:\n");
    sio_print_dict(info, 4);
    return 0;
}
