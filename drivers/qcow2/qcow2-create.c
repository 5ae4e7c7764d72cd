/*
 * qcow2 image creation.
 *
 * The image is made in two steps.  First a minimal valid image of size 0
 * is written directly: the header (with its extensions and the backing
 * file name), a one-cluster refcount table and one refcount block that
 * counts these three clusters.  Then that image is opened with this driver
 * and resized to the requested size, which lays out the L1 table (and,
 * with preallocation, every L2 table and data cluster; falloc and full
 * also have the file allocate the data area) through the same code that
 * serves requests.  The result has the layout qemu-img
 * gives: header, refcount table, refcount block, L1 table.
 *
 * Main loop only; no state.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "block/block-backend.h"
#include "drivers/qcow2/qcow2.h"

typedef struct Qcow2CreateOpts {
    uint64_t size;
    bool has_size;
    uint64_t cluster_size;
    int version;
    int refcount_order;
    bool lazy_refcounts;
    bool extended_l2;
    int prealloc;
    int compression;
    bool data_file_raw;
    char *backing_file;
    char *backing_fmt;
    char *data_file;
} Qcow2CreateOpts;

static void create_opts_free(Qcow2CreateOpts *o)
{
    g_free(o->backing_file);
    g_free(o->backing_fmt);
    g_free(o->data_file);
}

#define CREATE_FAIL(...)                                                                           \
    do {                                                                                           \
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, __VA_ARGS__);                  \
        return false;                                                                              \
    } while (0)

/* Takes the creation options and checks that they fit together. */
static bool take_create_opts(GHashTable *options, Qcow2CreateOpts *o, GError **errp)
{
    static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};
    static const char *const compression_names[] = {"zlib", "zstd", NULL};
    int64_t refcount_bits;
    g_autofree char *compat = NULL;

    o->has_size = opts_get(options, "size") != NULL;
    g_free(opts_take_str(options, "filename"));
    if (!opts_take_size(options, "size", 0, &o->size, errp) ||
        !opts_take_size(options, "cluster_size", 65536, &o->cluster_size, errp) ||
        !opts_take_int(options, "refcount_bits", 16, &refcount_bits, errp) ||
        !opts_take_bool(options, "lazy_refcounts", false, &o->lazy_refcounts, errp) ||
        !opts_take_bool(options, "extended_l2", false, &o->extended_l2, errp) ||
        !opts_take_bool(options, "data_file_raw", false, &o->data_file_raw, errp) ||
        !opts_take_enum(options, "preallocation", prealloc_names, PREALLOC_MODE_OFF, &o->prealloc,
                        errp) ||
        !opts_take_enum(options, "compression_type", compression_names, 0, &o->compression, errp)) {
        return false;
    }
    compat = opts_take_str(options, "compat");
    o->backing_file = opts_take_str(options, "backing_file");
    o->backing_fmt = opts_take_str(options, "backing_fmt");
    o->data_file = opts_take_str(options, "data_file");

    if (!compat || !strcmp(compat, "1.1") || !strcmp(compat, "v3")) {
        o->version = 3;
    } else if (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) {
        o->version = 2;
    } else {
        CREATE_FAIL("Invalid compatibility level: '%s' (0.10 or 1.1)", compat);
    }
    if (o->cluster_size < 512 || o->cluster_size > 2 * 1024 * 1024 ||
        (o->cluster_size & (o->cluster_size - 1))) {
        CREATE_FAIL("Cluster size must be a power of two between 512 and 2048k");
    }
    if (refcount_bits < 1 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1))) {
        CREATE_FAIL("Refcount width must be a power of two and may not exceed 64 bits");
    }
    o->refcount_order = __builtin_ctzll((uint64_t)refcount_bits);
    if (o->version < 3) {
        if (refcount_bits != 16) {
            CREATE_FAIL("Different refcount widths than 16 bits require compatibility level 1.1 "
                        "or above (use compat=1.1 or greater)");
        }
        if (o->lazy_refcounts) {
            CREATE_FAIL("Lazy refcounts only supported with compatibility level 1.1 and above "
                        "(use compat=1.1 or greater)");
        }
        if (o->extended_l2) {
            CREATE_FAIL("Extended L2 entries are only supported with compatibility level 1.1 "
                        "and above (use compat=1.1 or greater)");
        }
        if (o->compression) {
            CREATE_FAIL("Non-zlib compression type is only supported with compatibility level "
                        "1.1 and above (use compat=1.1 or greater)");
        }
        if (o->data_file) {
            CREATE_FAIL("Data file can be used only with compatibility level 1.1 and above");
        }
    }
    if (o->extended_l2 && o->cluster_size < 16384) {
        CREATE_FAIL("Extended L2 entries are only supported with cluster sizes of at least "
                    "16384 bytes");
    }
    if (o->prealloc != PREALLOC_MODE_OFF && o->backing_file && !o->extended_l2) {
        CREATE_FAIL("Backing file and preallocation can only be used at the same time if "
                    "extended_l2 is on");
    }
    if (o->backing_fmt && !o->backing_file) {
        CREATE_FAIL("Backing format cannot be used without backing file");
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        CREATE_FAIL("Backing file name too long (at most %d bytes)", QCOW2_MAX_BACKING_NAME);
    }
    if (o->data_file_raw && !o->data_file) {
        CREATE_FAIL("data_file_raw can only be used with data_file");
    }
    if (o->data_file_raw && o->backing_file) {
        CREATE_FAIL("Backing file and data_file_raw cannot be used at the same time");
    }
    return true;
}

/* The size of the backing file, for images created without a size. */
static bool backing_size(const char *image, Qcow2CreateOpts *o, GError **errp)
{
    g_autofree char *path = NULL;
    if (g_path_is_absolute(o->backing_file)) {
        path = g_strdup(o->backing_file);
    } else {
        g_autofree char *dir = g_path_get_dirname(image);
        path = g_build_filename(dir, o->backing_file, NULL);
    }
    GHashTable *opts = opts_new();
    if (o->backing_fmt) {
        opts_set(opts, "driver", o->backing_fmt);
    }
    GError *err = NULL;
    BlockBackend *blk = blk_new_open(path, opts, BDRV_O_NO_BACKING | BDRV_O_FORCE_SHARE, &err);
    if (!blk) {
        g_propagate_prefixed_error(errp, err,
                                   "Could not open backing file to determine the size: ");
        return false;
    }
    int64_t len = blk_getlength(blk);
    blk_unref(blk);
    if (len < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-len),
                    "Could not get the backing file size: %s", g_strerror(-len));
        return false;
    }
    o->size = len;
    return true;
}

/*
 * Header, refcount table and refcount block of an empty image: three
 * clusters.  The feature name table is left out (@features false) when it
 * does not fit.
 */
static uint8_t *initial_clusters(const Qcow2CreateOpts *o, bool features, GError **errp)
{
    uint64_t cs = o->cluster_size;
    size_t pos = o->version >= 3 ? QCOW2_NEW_HEADER_LENGTH : QCOW2_V2_HEADER_LENGTH;
    uint8_t *buf = g_malloc0(3 * cs);
    bool ok = true;

    qcow2_st32(buf + QH_MAGIC, QCOW2_MAGIC);
    qcow2_st32(buf + QH_VERSION, o->version);
    qcow2_st32(buf + QH_CLUSTER_BITS, __builtin_ctzll(cs));
    qcow2_st64(buf + QH_RT_OFFSET, cs);
    qcow2_st32(buf + QH_RT_CLUSTERS, 1);
    if (o->version >= 3) {
        uint64_t incompat = (o->data_file ? QCOW2_INCOMPAT_DATA_FILE : 0) |
                            (o->compression ? QCOW2_INCOMPAT_COMPRESSION : 0) |
                            (o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0);
        qcow2_st64(buf + QH_INCOMPAT, incompat);
        qcow2_st64(buf + QH_COMPAT, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        qcow2_st64(buf + QH_AUTOCLEAR, o->data_file_raw ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);
        qcow2_st32(buf + QH_REFCOUNT_ORDER, o->refcount_order);
        qcow2_st32(buf + QH_HEADER_LENGTH, QCOW2_NEW_HEADER_LENGTH);
        buf[QH_COMPRESSION_TYPE] = (uint8_t)o->compression;
    }
    if (o->backing_fmt) {
        ok &= qcow2_put_ext(buf, cs, &pos, QCOW2_EXT_BACKING_FORMAT, o->backing_fmt,
                            strlen(o->backing_fmt));
    }
    if (o->data_file) {
        ok &= qcow2_put_ext(buf, cs, &pos, QCOW2_EXT_DATA_FILE, o->data_file, strlen(o->data_file));
    }
    if (o->version >= 3 && features) {
        uint32_t len;
        g_autofree uint8_t *t = qcow2_feature_table(NULL, 0, &len);
        ok &= qcow2_put_ext(buf, cs, &pos, QCOW2_EXT_FEATURE_TABLE, t, len);
    }
    ok &= qcow2_put_ext(buf, cs, &pos, QCOW2_EXT_END, NULL, 0);
    if (ok && o->backing_file) {
        size_t len = strlen(o->backing_file);
        ok = pos + len <= cs;
        if (ok) {
            memcpy(buf + pos, o->backing_file, len);
            qcow2_st64(buf + QH_BACKING_OFFSET, pos);
            qcow2_st32(buf + QH_BACKING_SIZE, (uint32_t)len);
        }
    }
    if (!ok) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSPC,
                    "Header extensions and backing file name do not fit in one cluster");
        g_free(buf);
        return NULL;
    }
    qcow2_st64(buf + cs, 2 * cs); /* refcount table: one block, in cluster 2 */
    BDRVQcow2State geo = {.refcount_order = o->refcount_order, .refcount_max = UINT64_MAX};
    for (int i = 0; i < 3; i++) {
        qcow2_refblock_set(&geo, buf + 2 * cs, i, 1);
    }
    return buf;
}

/* Creates @path (empty) with the protocol its name selects. */
static bool create_empty_file(const char *path, GError **errp)
{
    GHashTable *opts = opts_new();
    opts_set(opts, "size", "0");
    return bdrv_create_file(path, opts, errp);
}

static bool write_initial_image(const char *filename, const Qcow2CreateOpts *o, GError **errp)
{
    g_autofree uint8_t *buf = initial_clusters(o, true, NULL);
    if (!buf) {
        buf = initial_clusters(o, false, errp);
    }
    if (!buf) {
        return false;
    }
    BlockBackend *blk =
        blk_new_open(filename, NULL, BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_PROTOCOL, errp);
    if (!blk) {
        return false;
    }
    blk_set_allow_write_beyond_eof(blk, true);
    int ret = blk_pwrite(blk, 0, 3 * o->cluster_size, buf, 0);
    if (ret == 0) {
        ret = blk_flush(blk);
    }
    blk_unref(blk);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not write the qcow2 header: %s", g_strerror(-ret));
        return false;
    }
    return true;
}

bool qcow2_create(const char *filename, GHashTable *options, GError **errp)
{
    Qcow2CreateOpts o = {0};
    bool ok = false;

    GLOBAL_STATE_CODE();
    if (!take_create_opts(options, &o, errp)) {
        goto out;
    }
    if (!o.has_size) {
        if (!o.backing_file) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Image size must be given (or taken from a backing file)");
            goto out;
        }
        if (!backing_size(filename, &o, errp)) {
            goto out;
        }
    }
    if (o.size % BDRV_SECTOR_SIZE) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Image size must be a multiple of %d bytes", BDRV_SECTOR_SIZE);
        goto out;
    }
    if (!create_empty_file(filename, errp)) {
        goto out;
    }
    if (o.data_file) {
        g_autofree char *path = NULL;
        if (g_path_is_absolute(o.data_file)) {
            path = g_strdup(o.data_file);
        } else {
            g_autofree char *dir = g_path_get_dirname(filename);
            path = g_build_filename(dir, o.data_file, NULL);
        }
        if (!create_empty_file(path, errp)) {
            goto out;
        }
    }
    if (!write_initial_image(filename, &o, errp)) {
        goto out;
    }

    /* Now a valid empty image: let the driver lay out L1 (and preallocate). */
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "qcow2");
    BlockBackend *blk =
        blk_new_open(filename, opts, BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_NO_BACKING, errp);
    if (!blk) {
        goto out;
    }
    ok = blk_truncate(blk, o.size, true, o.prealloc, 0, errp) == 0;
    if (ok && blk_flush(blk) < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO, "Could not flush the new image");
        ok = false;
    }
    blk_unref(blk);
out:
    create_opts_free(&o);
    return ok;
}
