/*
 * strata-img: driver queries that the library does not offer (yet) as one
 * call.  Each function here is the adapter a front end needs; once the
 * block layer grows the matching entry point (see docs/strata-img.md,
 * "Library interfaces"), the body becomes a one-line call and nothing
 * else in the tool changes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-global-state.h"
#include "tools/strata-img/img.h"

bool img_bdrv_create(BlockDriver *drv, const char *filename, GHashTable *options, GError **errp)
{
    return bdrv_create(drv, filename, options, errp);
}

int img_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    memset(bdi, 0, sizeof(*bdi));
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (bs->drv->get_info) {
        return bs->drv->get_info(bs, bdi);
    }
    /*
     * What qemu-img shows: raw passes the question to its file, and the
     * file protocol answers "no clusters, clean".  Other drivers without
     * get_info have no answer (no "dirty-flag" key).
     */
    if (strcmp(bs->drv->format_name, "raw") == 0 && bs->file) {
        return img_get_info(bs->file->bs, bdi);
    }
    if (strcmp(bs->drv->format_name, "file") == 0) {
        return 0;
    }
    return -ENOTSUP;
}

/*
 * The order qemu-img 7.2 prints format-specific keys in (its dictionaries
 * iterate in hash order, not insertion order).  Keys not listed keep the
 * driver's order after the listed ones.
 */
static const char *const img_specific_key_order[] = {
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

static int img_specific_key_rank(const char *key)
{
    for (size_t i = 0; i < G_N_ELEMENTS(img_specific_key_order); i++) {
        if (strcmp(key, img_specific_key_order[i]) == 0) {
            return (int)i;
        }
    }
    return G_N_ELEMENTS(img_specific_key_order);
}

typedef struct ImgRankedEntry {
    int rank;
    gsize index;
    GVariant *entry;
} ImgRankedEntry;

static gint img_ranked_cmp(gconstpointer a, gconstpointer b)
{
    const ImgRankedEntry *x = a, *y = b;
    if (x->rank != y->rank) {
        return x->rank < y->rank ? -1 : 1;
    }
    return x->index < y->index ? -1 : x->index > y->index;
}

static GVariant *img_order_variant(GVariant *v);

/* An a{sv} with its entries in qemu-img's order, nested values ordered too. */
static GVariant *img_order_dict(GVariant *dict)
{
    gsize n = g_variant_n_children(dict);
    g_autofree ImgRankedEntry *e = g_new0(ImgRankedEntry, n ? n : 1);
    GVariantBuilder b;

    for (gsize i = 0; i < n; i++) {
        const char *key;
        e[i].entry = g_variant_get_child_value(dict, i);
        g_variant_get_child(e[i].entry, 0, "&s", &key);
        e[i].rank = img_specific_key_rank(key);
        e[i].index = i;
    }
    qsort(e, n, sizeof(*e), img_ranked_cmp);
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
    for (gsize i = 0; i < n; i++) {
        const char *key;
        GVariant *val;
        g_variant_get(e[i].entry, "{&sv}", &key, &val);
        g_variant_builder_add(&b, "{sv}", key, img_order_variant(val));
        g_variant_unref(val);
        g_variant_unref(e[i].entry);
    }
    return g_variant_builder_end(&b);
}

/* @v reordered (a new floating variant), or @v itself when it holds no dictionary. */
static GVariant *img_order_variant(GVariant *v)
{
    if (g_variant_is_of_type(v, G_VARIANT_TYPE("a{sv}"))) {
        return img_order_dict(v);
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE("av"))) {
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("av"));
        for (gsize i = 0; i < g_variant_n_children(v); i++) {
            g_autoptr(GVariant) item = g_variant_get_child_value(v, i);
            g_autoptr(GVariant) inner = g_variant_get_variant(item);
            g_variant_builder_add(&b, "v", img_order_variant(inner));
        }
        return g_variant_builder_end(&b);
    }
    return v; /* the builder takes its own reference */
}

/*
 * What the driver says about its format, as an a{sv} dictionary
 * ("compat": "1.1", "lazy-refcounts": false, ...), or NULL when it has
 * nothing to say.  A failure (say, an unreadable bitmap directory) only
 * drops the section, as qemu-img does.
 */
static GVariant *img_driver_specific_info(BlockDriverState *bs)
{
    if (!bs->drv || !bs->drv->get_specific_info) {
        return NULL;
    }
    g_autoptr(GError) err = NULL;
    return bs->drv->get_specific_info(bs, &err);
}

GVariant *img_get_specific_info(BlockDriverState *bs)
{
    GVariant *from_driver = img_driver_specific_info(bs);
    if (!from_driver) {
        return NULL;
    }
    /* The driver hands over its reference, floating (g_variant_new) or not. */
    g_autoptr(GVariant) info = g_variant_take_ref(from_driver);
    return g_variant_ref_sink(img_order_dict(info));
}
