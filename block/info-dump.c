/*
 * Format-specific image information: fetching it from the driver and the
 * human layout qemu-img info and qemu-io info both print.
 *
 * A driver's get_specific_info returns an a{sv} dictionary whose keys come
 * in the order QEMU prints them (the JSON and the human forms share it), so
 * nothing here sorts.  The human layout: four spaces per level, "key: value"
 * for scalars, "key:" alone above a nested dictionary or list, "[i]" as the
 * label of a list item, and '-' in keys printed as a space.
 *
 * Main loop only (drivers read their state under a drained or idle node).
 */
#include <inttypes.h>

#include "block/block-int.h"

GVariant *bdrv_get_specific_info(BlockDriverState *bs, GError **errp)
{
    if (!bs->drv || !bs->drv->get_specific_info) {
        return NULL;
    }
    GVariant *from_driver = bs->drv->get_specific_info(bs, errp);
    /* The driver hands over its reference, floating (g_variant_new) or not. */
    return from_driver ? g_variant_take_ref(from_driver) : NULL;
}

static GVariant *info_unbox(GVariant *v)
{
    GVariant *val = g_variant_ref(v);
    while (g_variant_is_of_type(val, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(val);
        g_variant_unref(val);
        val = inner;
    }
    return val;
}

/* A scalar as QEMU's human output shows it (strings unquoted). */
static void info_dump_scalar(GString *out, GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BOOLEAN:
        g_string_append(out, g_variant_get_boolean(v) ? "true" : "false");
        break;
    case G_VARIANT_CLASS_BYTE:
        g_string_append_printf(out, "%u", g_variant_get_byte(v));
        break;
    case G_VARIANT_CLASS_INT16:
        g_string_append_printf(out, "%d", g_variant_get_int16(v));
        break;
    case G_VARIANT_CLASS_UINT16:
        g_string_append_printf(out, "%u", g_variant_get_uint16(v));
        break;
    case G_VARIANT_CLASS_INT32:
        g_string_append_printf(out, "%" PRId32, g_variant_get_int32(v));
        break;
    case G_VARIANT_CLASS_UINT32:
        g_string_append_printf(out, "%" PRIu32, g_variant_get_uint32(v));
        break;
    case G_VARIANT_CLASS_INT64:
        g_string_append_printf(out, "%" PRId64, (int64_t)g_variant_get_int64(v));
        break;
    case G_VARIANT_CLASS_UINT64:
        g_string_append_printf(out, "%" PRIu64, (uint64_t)g_variant_get_uint64(v));
        break;
    case G_VARIANT_CLASS_DOUBLE:
        g_string_append_printf(out, "%.17g", g_variant_get_double(v));
        break;
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        g_string_append(out, g_variant_get_string(v, NULL));
        break;
    default:
        g_string_append(out, "?");
        break;
    }
}

/* "label: scalar", or "label:" and the container's members one level deeper. */
static void info_dump_value(GString *out, const char *label, GVariant *v, int indent)
{
    g_autoptr(GVariant) val = info_unbox(v);

    g_string_append_printf(out, "%*s%s:", indent, "", label);
    if (g_variant_is_of_type(val, G_VARIANT_TYPE("a{s*}"))) {
        g_string_append_c(out, '\n');
        bdrv_specific_info_dump(out, val, indent + 4);
    } else if (g_variant_is_container(val)) {
        g_string_append_c(out, '\n');
        for (gsize i = 0; i < g_variant_n_children(val); i++) {
            g_autoptr(GVariant) item = g_variant_get_child_value(val, i);
            g_autofree char *item_label = g_strdup_printf("[%zu]", (size_t)i);
            info_dump_value(out, item_label, item, indent + 4);
        }
    } else {
        g_string_append_c(out, ' ');
        info_dump_scalar(out, val);
        g_string_append_c(out, '\n');
    }
}

void bdrv_specific_info_dump(GString *out, GVariant *dict, int indent)
{
    for (gsize i = 0; i < g_variant_n_children(dict); i++) {
        g_autoptr(GVariant) entry = g_variant_get_child_value(dict, i);
        const char *key;
        g_variant_get_child(entry, 0, "&s", &key); /* valid while @entry lives */
        g_autoptr(GVariant) val = g_variant_get_child_value(entry, 1);
        g_autofree char *label = g_strdelimit(g_strdup(key), "-", ' ');
        info_dump_value(out, label, val, indent);
    }
}
