/*
 * qcow2: what "info" shows under "Format specific information"
 * (BlockDriver.get_specific_info) and how much host storage a new qcow2
 * image would take (BlockDriver.measure), both as qemu-img 7.2 reports them.
 *
 * The measure arithmetic counts what a freshly written image holds: one
 * header cluster, L2 tables for the whole disk, an L1 table, the refcount
 * table and blocks that count all of it (a fixed point, since refcount
 * structures count themselves), plus data clusters.  "Required" keeps only
 * the data clusters the source really has; the metadata stays sized for a
 * fully allocated disk, which overestimates a little, as qemu-img does.
 *
 * Locking: main loop only.  get_specific_info reads header fields that only
 * change under a drained node, and lists bitmaps through bdrv_bitmap_list,
 * which takes s->lock itself.
 */
#include <string.h>

#include "block/bitmaps.h"
#include "block/block-io.h"
#include "block/options.h"
#include "drivers/qcow2/qcow2.h"

#define QCOW2_MEASURE_DIR_ENTRY 24 /* fixed part of a bitmap directory entry */

static inline uint64_t div_round_up(uint64_t x, uint64_t d)
{
    return (x + d - 1) / d;
}

/* ---- get_specific_info ------------------------------------------------------------------ */

/* One bitmap as {"flags": [...], "name": ..., "granularity": ...}; flags "in-use" then "auto". */
static GVariant *qcow2_bitmap_info(const BdrvBitmapInfo *bm)
{
    GVariantBuilder flags, dict;

    g_variant_builder_init(&flags, G_VARIANT_TYPE("as"));
    if (bm->in_use) {
        g_variant_builder_add(&flags, "s", "in-use");
    }
    if (bm->enabled) {
        g_variant_builder_add(&flags, "s", "auto");
    }
    g_variant_builder_init(&dict, G_VARIANT_TYPE("a{sv}"));
    g_variant_builder_add(&dict, "{sv}", "flags", g_variant_builder_end(&flags));
    g_variant_builder_add(&dict, "{sv}", "name", g_variant_new_string(bm->name));
    g_variant_builder_add(&dict, "{sv}", "granularity", g_variant_new_uint32(bm->granularity));
    return g_variant_builder_end(&dict);
}

/* The "bitmaps" list, or NULL when the image has none (qemu-img then omits the key). */
static GVariant *qcow2_bitmaps_info(BlockDriverState *bs, GError **errp)
{
    BdrvBitmapInfo *list = NULL;
    int count = 0;

    if (!bdrv_bitmap_list(bs, &list, &count, errp)) {
        return NULL;
    }
    GVariant *result = NULL;
    if (count > 0) {
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("av"));
        for (int i = 0; i < count; i++) {
            g_variant_builder_add(&b, "v", qcow2_bitmap_info(&list[i]));
        }
        result = g_variant_builder_end(&b);
    }
    bdrv_bitmap_list_free(list, count);
    return result;
}

GVariant *qcow2_get_specific_info(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    GVariantBuilder b;

    /* Keys in the order qemu-img and qemu-io print them (both layouts follow it). */
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
    g_variant_builder_add(&b, "{sv}", "compat",
                          g_variant_new_string(s->version >= 3 ? "1.1" : "0.10"));
    g_variant_builder_add(
        &b, "{sv}", "compression-type",
        g_variant_new_string(s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib"));
    if (s->version < 3) {
        g_variant_builder_add(&b, "{sv}", "refcount-bits", g_variant_new_int32(s->refcount_bits));
        return g_variant_builder_end(&b);
    }
    /* The header's bit, not s->lazy_refcounts (which is off for read-only opens). */
    g_variant_builder_add(&b, "{sv}", "lazy-refcounts",
                          g_variant_new_boolean(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS));
    g_autoptr(GError) err = NULL;
    GVariant *bitmaps = qcow2_bitmaps_info(bs, &err);
    if (err) {
        g_variant_builder_clear(&b);
        g_propagate_error(errp, g_steal_pointer(&err));
        return NULL;
    }
    if (bitmaps) {
        g_variant_builder_add(&b, "{sv}", "bitmaps", bitmaps);
    }
    g_variant_builder_add(&b, "{sv}", "refcount-bits", g_variant_new_int32(s->refcount_bits));
    if (s->data_file_name) {
        g_variant_builder_add(&b, "{sv}", "data-file", g_variant_new_string(s->data_file_name));
    }
    if (s->has_data_file) {
        g_variant_builder_add(&b, "{sv}", "data-file-raw", g_variant_new_boolean(s->data_file_raw));
    }
    g_variant_builder_add(&b, "{sv}", "corrupt",
                          g_variant_new_boolean(s->incompat & QCOW2_INCOMPAT_CORRUPT));
    g_variant_builder_add(&b, "{sv}", "extended-l2", g_variant_new_boolean(s->extended_l2));
    return g_variant_builder_end(&b);
}

/* ---- measure ------------------------------------------------------------------------------ */

typedef struct Qcow2MeasureOpts {
    uint64_t cluster_size;
    int version;
    int refcount_order;
    bool extended_l2;
    int prealloc;
    bool has_backing;
} Qcow2MeasureOpts;

#define MEASURE_FAIL(...)                                                                          \
    do {                                                                                           \
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, __VA_ARGS__);                  \
        return false;                                                                              \
    } while (0)

/*
 * The creation options measure looks at, checked the way qemu-img measure
 * checks them (fewer checks than create: compat=0.10 with extended_l2 is
 * measured, not refused).  Other options are ignored.
 */
static bool qcow2_measure_opts(GHashTable *opts, Qcow2MeasureOpts *o, GError **errp)
{
    static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};
    g_autofree char *compat = opts_take_str(opts, "compat");
    g_autofree char *prealloc = opts_take_str(opts, "preallocation");
    g_autofree char *backing = opts_take_str(opts, "backing_file");
    int64_t refcount_bits;

    if (!opts_take_bool(opts, "extended_l2", false, &o->extended_l2, errp) ||
        !opts_take_size(opts, "cluster_size", 65536, &o->cluster_size, errp)) {
        return false;
    }
    if (o->cluster_size < 512 || o->cluster_size > 2 * 1024 * 1024 ||
        (o->cluster_size & (o->cluster_size - 1))) {
        MEASURE_FAIL("Cluster size must be a power of two between 512 and 2048k");
    }
    if (o->extended_l2 && o->cluster_size < 16384) {
        MEASURE_FAIL("Extended L2 entries are only supported with cluster sizes of at least "
                     "16384 bytes");
    }
    if (!compat || !strcmp(compat, "1.1") || !strcmp(compat, "v3")) {
        o->version = 3;
    } else if (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) {
        o->version = 2;
    } else {
        MEASURE_FAIL("Invalid compatibility level: '%s'", compat);
    }
    if (!opts_take_int(opts, "refcount_bits", 16, &refcount_bits, errp)) {
        return false;
    }
    if (refcount_bits < 1 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1))) {
        MEASURE_FAIL("Refcount width must be a power of two and may not exceed 64 bits");
    }
    if (o->version < 3 && refcount_bits != 16) {
        MEASURE_FAIL("Different refcount widths than 16 bits require compatibility level 1.1 "
                     "or above (use compat=1.1 or greater)");
    }
    o->refcount_order = __builtin_ctzll((uint64_t)refcount_bits);
    o->prealloc = PREALLOC_MODE_OFF;
    for (int i = 0; prealloc && prealloc_names[i]; i++) {
        o->prealloc = !strcmp(prealloc, prealloc_names[i]) ? i : o->prealloc;
    }
    if (prealloc && strcmp(prealloc, prealloc_names[o->prealloc]) != 0) {
        MEASURE_FAIL("invalid parameter value: %s", prealloc);
    }
    o->has_backing = backing != NULL;
    return true;
}

/*
 * Bytes of refcount table and blocks that count @clusters clusters plus
 * themselves: grow both until another round adds nothing.
 */
static uint64_t qcow2_refcount_meta_bytes(uint64_t clusters, uint64_t cluster_size,
                                          int refcount_order)
{
    uint64_t per_block = cluster_size * 8 >> refcount_order;
    uint64_t per_table_cluster = cluster_size / 8;
    uint64_t blocks = 0, table = 0, total = 0, prev;

    do {
        prev = total;
        blocks = div_round_up(clusters + blocks + table, per_block);
        table = div_round_up(blocks, per_table_cluster);
        total = clusters + blocks + table;
    } while (total != prev);
    return (blocks + table) * cluster_size;
}

/* Host bytes of a fully allocated image of @disk bytes (a multiple of the cluster size). */
static uint64_t qcow2_full_size(const Qcow2MeasureOpts *o, uint64_t disk)
{
    uint64_t cs = o->cluster_size;
    uint64_t l2_entry = o->extended_l2 ? 16 : 8;
    /* L2 tables for every cluster, in whole tables. */
    uint64_t l2_bytes = qcow2_round_up(disk / cs, cs / l2_entry) * l2_entry;
    /* One L1 entry per L2 table, in whole clusters. */
    uint64_t l1_bytes = qcow2_round_up(l2_bytes / cs, cs / 8) * 8;
    uint64_t meta = cs + l2_bytes + l1_bytes;

    meta += qcow2_refcount_meta_bytes((meta + disk) / cs, cs, o->refcount_order);
    return meta + disk;
}

/*
 * Data bytes a copy of @in_bs needs: every cluster that holds data, whole
 * (zero ranges and holes cost nothing; the target has no backing file).
 */
static bool qcow2_measure_source_data(BlockDriverState *in_bs, int64_t size, uint64_t cs,
                                      uint64_t *data, GError **errp)
{
    int64_t offset = 0, pnum = 0;

    *data = 0;
    for (; offset < size; offset += pnum) {
        int ret = bdrv_block_status_above(in_bs, NULL, offset, size - offset, &pnum, NULL, NULL);
        if (ret < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                        "Unable to get block status: %s", g_strerror(-ret));
            return false;
        }
        if (ret & BDRV_BLOCK_ZERO) {
            continue;
        }
        if ((ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) ==
            (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) {
            /* From the start of the first cluster touched to the end of the last. */
            int64_t end = (int64_t)qcow2_round_up(offset + pnum, cs);
            *data += end - (int64_t)(offset / cs * cs);
            pnum = end - offset;
        }
    }
    return true;
}

/*
 * Host bytes the persistent bitmaps of @in_bs would take in an image with
 * @cs byte clusters: each bitmap fully allocated, its table, and the
 * directory.  Only qcow2 v3 sources have them; false when there is no
 * answer to give (qemu-img then prints no "bitmaps size").
 */
static bool qcow2_measure_bitmaps(BlockDriverState *in_bs, uint64_t cs, uint64_t *bytes,
                                  GError **errp)
{
    if (!in_bs->drv || strcmp(in_bs->drv->format_name, "qcow2") != 0 ||
        ((BDRVQcow2State *)in_bs->opaque)->version < 3) {
        return false;
    }
    int64_t disk = bdrv_getlength(in_bs);
    BdrvBitmapInfo *list = NULL;
    int count = 0;
    uint64_t dir = 0;

    *bytes = 0;
    if (disk < 0 || !bdrv_bitmap_list(in_bs, &list, &count, errp)) {
        return false;
    }
    for (int i = 0; i < count; i++) {
        uint64_t gran = list[i].granularity ? list[i].granularity : 1ULL << 32;
        uint64_t bm_bytes = div_round_up(div_round_up((uint64_t)disk, gran), 8);
        uint64_t clusters = div_round_up(bm_bytes, cs);
        *bytes += clusters * cs + qcow2_round_up(clusters * 8, cs);
        dir += qcow2_round_up(QCOW2_MEASURE_DIR_ENTRY + strlen(list[i].name), 8);
    }
    *bytes += qcow2_round_up(dir, cs);
    bdrv_bitmap_list_free(list, count);
    return true;
}

bool qcow2_measure(GHashTable *opts, BlockDriverState *in_bs, int64_t size, BlockMeasureInfo *info,
                   GError **errp)
{
    Qcow2MeasureOpts o;
    uint64_t data = 0;

    if (!qcow2_measure_opts(opts, &o, errp)) {
        return false;
    }
    uint64_t disk = qcow2_round_up((uint64_t)size, o.cluster_size);
    uint64_t l2_tables =
        div_round_up(disk / o.cluster_size, o.cluster_size / (o.extended_l2 ? 16 : 8));
    if (l2_tables * 8 > QCOW2_MAX_L1_BYTES) {
        MEASURE_FAIL("The image size is too large (try using a larger cluster size)");
    }
    if (in_bs && o.has_backing) {
        /* What the new backing file shares with the source is unknown: count it all. */
        data = disk;
    } else if (in_bs && !qcow2_measure_source_data(in_bs, size, o.cluster_size, &data, errp)) {
        return false;
    }
    if (o.prealloc == PREALLOC_MODE_FALLOC || o.prealloc == PREALLOC_MODE_FULL) {
        data = disk;
    }
    *info = (BlockMeasureInfo){0};
    info->fully_allocated = qcow2_full_size(&o, disk);
    info->required = info->fully_allocated - disk + data;
    if (o.version >= 3 && in_bs) {
        g_autoptr(GError) err = NULL;
        info->has_bitmaps = qcow2_measure_bitmaps(in_bs, o.cluster_size, &info->bitmaps, &err);
        if (err) {
            g_propagate_error(errp, g_steal_pointer(&err));
            return false;
        }
    }
    return true;
}
