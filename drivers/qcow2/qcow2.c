/*
 * The qcow2 format driver: probing, opening (header, extensions, features,
 * every table offset checked before use), the header writer, clean close,
 * and the driver table whose callbacks forward to qcow2-io.c and
 * qcow2-cluster.c.
 *
 * Locking: open, close, reopen and the control callbacks run in the main
 * loop with no request in flight.  Request callbacks run in any thread
 * and take s->lock (see qcow2.h) around metadata work only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

/* Cache defaults: enough L2 tables for the whole disk, capped at this many bytes. */
#define QCOW2_DEFAULT_L2_CACHE_MAX (32 * 1024 * 1024)
#define QCOW2_MIN_L2_CACHE_TABLES  4
#define QCOW2_MIN_RB_CACHE_TABLES  4
/* cache-clean-interval: QEMU's default, in seconds; 0 turns cleaning off. */
#define QCOW2_DEFAULT_CACHE_CLEAN_INTERVAL 600

/* The features this driver knows, as written into the feature name table. */
static const Qcow2Feature qcow2_known_features[] = {
    {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},          {2, 1, "raw external data"},
};

static int qcow2_probe(const uint8_t *buf, int len, const char *filename)
{
    if (len >= 8 && qcow2_ld32(buf) == QCOW2_MAGIC &&
        (qcow2_ld32(buf + 4) == 2 || qcow2_ld32(buf + 4) == 3)) {
        return 100;
    }
    return 0;
}

/* ---- header writing ----------------------------------------------------------------- */

bool qcow2_put_ext(uint8_t *buf, size_t cap, size_t *pos, uint32_t type, const void *data,
                   uint32_t len)
{
    size_t need = 8 + qcow2_round_up(len, 8);
    if (*pos + need > cap) {
        return false;
    }
    qcow2_st32(buf + *pos, type);
    qcow2_st32(buf + *pos + 4, len);
    if (len) {
        memcpy(buf + *pos + 8, data, len);
    }
    memset(buf + *pos + 8 + len, 0, need - 8 - len);
    *pos += need;
    return true;
}

uint8_t *qcow2_feature_table(const Qcow2Feature *extra, int n_extra, uint32_t *len)
{
    int n = G_N_ELEMENTS(qcow2_known_features);
    uint8_t *t = g_malloc0((size_t)(n + n_extra) * QCOW2_FEATURE_ENTRY_SIZE);
    int k = 0;

    for (int i = 0; i < n + n_extra; i++) {
        const Qcow2Feature *f = i < n ? &qcow2_known_features[i] : &extra[i - n];
        bool dup = false;
        for (int j = 0; j < n && i >= n; j++) {
            dup |= qcow2_known_features[j].type == f->type && qcow2_known_features[j].bit == f->bit;
        }
        if (dup) {
            continue;
        }
        uint8_t *e = t + (size_t)k++ * QCOW2_FEATURE_ENTRY_SIZE;
        e[0] = f->type;
        e[1] = f->bit;
        memcpy(e + 2, f->name, strnlen(f->name, QCOW2_FEATURE_NAME_SIZE));
    }
    *len = (uint32_t)k * QCOW2_FEATURE_ENTRY_SIZE;
    return t;
}

/*
 * Builds the header cluster from the state into @buf (s->cluster_size
 * bytes).  Fields this driver does not know keep their old value.  The
 * feature name table is optional: @features false leaves it out.
 * Returns -ENOSPC when extensions and the backing name do not fit.
 */
static int qcow2_build_header(BlockDriverState *bs, uint8_t *buf, bool features)
{
    BDRVQcow2State *s = bs->opaque;
    size_t cap = s->cluster_size, pos;

    memset(buf, 0, cap);
    memcpy(buf, s->header_raw, s->header_length);
    qcow2_st32(buf + QH_MAGIC, QCOW2_MAGIC);
    qcow2_st32(buf + QH_VERSION, s->version);
    qcow2_st64(buf + QH_BACKING_OFFSET, 0);
    qcow2_st32(buf + QH_BACKING_SIZE, 0);
    qcow2_st32(buf + QH_CLUSTER_BITS, s->cluster_bits);
    qcow2_st64(buf + QH_SIZE, s->size);
    qcow2_st32(buf + QH_CRYPT, 0);
    qcow2_st32(buf + QH_L1_SIZE, s->l1_size);
    qcow2_st64(buf + QH_L1_OFFSET, s->l1_table_offset);
    qcow2_st64(buf + QH_RT_OFFSET, s->refcount_table_offset);
    qcow2_st32(buf + QH_RT_CLUSTERS, (uint32_t)(s->refcount_table_size * 8 / s->cluster_size));
    qcow2_st32(buf + QH_NB_SNAPSHOTS, s->nb_snapshots);
    qcow2_st64(buf + QH_SNAPSHOTS_OFFSET, s->snapshots_offset);
    if (s->version >= 3) {
        qcow2_st64(buf + QH_INCOMPAT, s->incompat);
        qcow2_st64(buf + QH_COMPAT, s->compat);
        qcow2_st64(buf + QH_AUTOCLEAR, s->autoclear);
        qcow2_st32(buf + QH_REFCOUNT_ORDER, s->refcount_order);
        qcow2_st32(buf + QH_HEADER_LENGTH, s->header_length);
        if (s->header_length > QH_COMPRESSION_TYPE) {
            buf[QH_COMPRESSION_TYPE] = s->compression_type;
        }
    }

    pos = s->header_length;
    bool ok = true;
    if (s->backing_format) {
        ok &= qcow2_put_ext(buf, cap, &pos, QCOW2_EXT_BACKING_FORMAT, s->backing_format,
                            strlen(s->backing_format));
    }
    if (s->data_file_name) {
        ok &= qcow2_put_ext(buf, cap, &pos, QCOW2_EXT_DATA_FILE, s->data_file_name,
                            strlen(s->data_file_name));
    }
    if (s->version >= 3 && features) {
        uint32_t len;
        g_autofree uint8_t *t = qcow2_feature_table(s->features, s->nb_features, &len);
        ok &= qcow2_put_ext(buf, cap, &pos, QCOW2_EXT_FEATURE_TABLE, t, len);
    }
    if (s->has_bitmaps_ext) {
        ok &= qcow2_put_ext(buf, cap, &pos, QCOW2_EXT_BITMAPS, s->bitmaps_ext,
                            sizeof(s->bitmaps_ext));
    }
    for (int i = 0; i < s->nb_unknown_exts; i++) {
        Qcow2UnknownExt *x = &s->unknown_exts[i];
        ok &= qcow2_put_ext(buf, cap, &pos, x->type, x->data, x->len);
    }
    ok &= qcow2_put_ext(buf, cap, &pos, QCOW2_EXT_END, NULL, 0);
    if (ok && bs->backing_file) {
        size_t len = strlen(bs->backing_file);
        if (pos + len > cap) {
            ok = false;
        } else {
            memcpy(buf + pos, bs->backing_file, len);
            qcow2_st64(buf + QH_BACKING_OFFSET, pos);
            qcow2_st32(buf + QH_BACKING_SIZE, (uint32_t)len);
        }
    }
    return ok ? 0 : -ENOSPC;
}

int coroutine_fn qcow2_update_header(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *buf = g_malloc(s->cluster_size);
    int ret = qcow2_build_header(bs, buf, true);
    if (ret == -ENOSPC) {
        /* Small clusters: the feature names are a luxury (qemu-img drops them too). */
        ret = qcow2_build_header(bs, buf, false);
    }
    if (ret == 0) {
        ret = bdrv_co_pwrite(bs->file, 0, s->cluster_size, buf, 0);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        memcpy(s->header_raw, buf, s->cluster_size);
    }
    g_free(buf);
    return ret;
}

int coroutine_fn qcow2_write_incompat(BlockDriverState *bs, uint64_t incompat)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t be[8];
    g_assert(s->version >= 3);
    qcow2_st64(be, incompat);
    int ret = bdrv_co_pwrite(bs->file, QH_INCOMPAT, 8, be, 0);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        s->incompat = incompat;
        memcpy(s->header_raw + QH_INCOMPAT, be, 8);
    }
    return ret;
}

int coroutine_fn qcow2_signal_corruption(BlockDriverState *bs, const char *fmt, ...)
{
    BDRVQcow2State *s = bs->opaque;
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);

    if (!s->corrupt_signalled) {
        bool mark = !bdrv_is_read_only(bs) && s->version >= 3;
        fprintf(stderr, "qcow2: %s: %s%s\n", mark ? "Marking image as corrupt" : "Image is corrupt",
                msg, "; further corruption events will be suppressed");
        s->corrupt_signalled = true;
        if (mark && !(s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
            qcow2_write_incompat(bs, s->incompat | QCOW2_INCOMPAT_CORRUPT);
        }
    }
    return -EIO;
}

int coroutine_fn qcow2_before_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->corrupt_signalled || (s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
        return -EIO;
    }
    if (s->first_write_done) {
        return 0;
    }
    if (s->autoclear & ~QCOW2_AUTOCLEAR_KNOWN) {
        /* Unknown autoclear features may describe data we are about to invalidate. */
        s->autoclear &= QCOW2_AUTOCLEAR_KNOWN;
        ret = qcow2_update_header(bs);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_bitmaps_before_write(bs);
    if (ret < 0) {
        return ret;
    }
    if (s->lazy_refcounts && !(s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_write_incompat(bs, s->incompat | QCOW2_INCOMPAT_DIRTY);
        if (ret < 0) {
            return ret;
        }
        s->dirty_marked = true;
    }
    s->first_write_done = true;
    return 0;
}

/* ---- opening -------------------------------------------------------------------------- */

typedef struct OpenCo {
    BlockDriverState *bs;
    int flags;
    GError **errp;
    int ret;
} OpenCo;

#define OPEN_FAIL(errp, ...)                                                                       \
    do {                                                                                           \
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, __VA_ARGS__);                          \
        return -EINVAL;                                                                            \
    } while (0)

/* True when [off, off + len) is cluster aligned at @off and stays below 2^63. */
static bool table_offset_ok(BDRVQcow2State *s, uint64_t off, uint64_t len)
{
    return !(off & (s->cluster_size - 1)) && off <= INT64_MAX && len <= INT64_MAX - off;
}

/* Names the unknown incompatible bits, from the image's feature table where it has them. */
static char *unknown_feature_names(BDRVQcow2State *s, uint64_t mask)
{
    GString *str = g_string_new(NULL);
    for (int b = 0; b < 64; b++) {
        if (!(mask & (1ULL << b))) {
            continue;
        }
        const char *name = NULL;
        for (int i = 0; i < s->nb_features; i++) {
            if (s->features[i].type == 0 && s->features[i].bit == b) {
                name = s->features[i].name;
            }
        }
        if (str->len) {
            g_string_append(str, ", ");
        }
        if (name) {
            g_string_append(str, name);
        } else {
            g_string_append_printf(str, "Unknown incompatible feature: %" PRIx64, (uint64_t)1 << b);
        }
    }
    return g_string_free(str, false);
}

/* Parses the header extensions in [s->header_length, end) of the header cluster @buf. */
static int parse_extensions(BlockDriverState *bs, const uint8_t *buf, uint64_t end, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t pos = s->header_length;
    uint32_t seen[8];
    int nseen = 0;

    while (pos + 8 <= end) {
        uint32_t type = qcow2_ld32(buf + pos), len = qcow2_ld32(buf + pos + 4);
        const uint8_t *data = buf + pos + 8;
        if (type == QCOW2_EXT_END) {
            return 0;
        }
        if (len > end - pos - 8) {
            OPEN_FAIL(errp, "Header extension 0x%08x too large (%u bytes)", type, len);
        }
        bool known = type == QCOW2_EXT_BACKING_FORMAT || type == QCOW2_EXT_FEATURE_TABLE ||
                     type == QCOW2_EXT_BITMAPS || type == QCOW2_EXT_DATA_FILE;
        for (int i = 0; known && i < nseen; i++) {
            if (seen[i] == type) {
                OPEN_FAIL(errp, "Duplicate header extension 0x%08x", type);
            }
        }
        if (known && nseen < (int)G_N_ELEMENTS(seen)) {
            seen[nseen++] = type;
        }
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len > QCOW2_MAX_EXT_STRING) {
                OPEN_FAIL(errp, "Backing format name too long (%u bytes)", len);
            }
            s->backing_format = g_strndup((const char *)data, len);
            break;
        case QCOW2_EXT_DATA_FILE:
            if (len > QCOW2_MAX_EXT_STRING) {
                OPEN_FAIL(errp, "External data file name too long (%u bytes)", len);
            }
            s->data_file_name = g_strndup((const char *)data, len);
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            s->nb_features = len / QCOW2_FEATURE_ENTRY_SIZE;
            s->features = g_new0(Qcow2Feature, s->nb_features);
            for (int i = 0; i < s->nb_features; i++) {
                const uint8_t *e = data + i * QCOW2_FEATURE_ENTRY_SIZE;
                s->features[i].type = e[0];
                s->features[i].bit = e[1];
                memcpy(s->features[i].name, e + 2, QCOW2_FEATURE_NAME_SIZE);
            }
            break;
        case QCOW2_EXT_BITMAPS:
            if (len != sizeof(s->bitmaps_ext)) {
                OPEN_FAIL(errp, "Bitmaps extension has length %u, expected %zu", len,
                          sizeof(s->bitmaps_ext));
            }
            s->has_bitmaps_ext = true;
            memcpy(s->bitmaps_ext, data, len);
            break;
        default: {
            /* Unknown extensions are kept so that header rewrites preserve them. */
            s->unknown_exts = g_renew(Qcow2UnknownExt, s->unknown_exts, s->nb_unknown_exts + 1);
            Qcow2UnknownExt *x = &s->unknown_exts[s->nb_unknown_exts++];
            x->type = type;
            x->len = len;
            x->data = g_memdup2(data, len);
            break;
        }
        }
        pos += 8 + qcow2_round_up(len, 8);
    }
    return 0;
}

/* Checks the feature bits once the feature table is known. */
static int check_features(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;

    if (unknown) {
        g_autofree char *names = unknown_feature_names(s, unknown);
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS, "Unsupported qcow2 feature(s): %s",
                    names);
        return -ENOTSUP;
    }
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && (flags & BDRV_O_RDWR)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ACCES,
                    "qcow2: Image is corrupt; cannot be opened read/write");
        return -EACCES;
    }
    if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
        if (s->header_length <= QH_COMPRESSION_TYPE || s->compression_type == 0) {
            OPEN_FAIL(errp, "Compression type bit set, but no non-zlib compression type given");
        }
    } else if (s->compression_type != QCOW2_COMPRESSION_ZLIB) {
        OPEN_FAIL(errp, "Compression type %u given without the compression type bit",
                  s->compression_type);
    }
    if (s->compression_type > QCOW2_COMPRESSION_ZSTD) {
        OPEN_FAIL(errp, "Unknown compression type %u", s->compression_type);
    }
    if (s->extended_l2 && s->cluster_bits < 14) {
        OPEN_FAIL(errp, "Extended L2 entries need clusters of at least 16 KiB");
    }
    if ((s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW) &&
        !(s->incompat & QCOW2_INCOMPAT_DATA_FILE)) {
        OPEN_FAIL(errp, "The raw external data bit is set without an external data file");
    }
    if ((s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW) && bs->backing_file) {
        OPEN_FAIL(errp, "A raw external data file cannot have a backing file");
    }
    return 0;
}

/* Reads the header fields into the state, checking each before use. */
static int parse_header(BlockDriverState *bs, const uint8_t *h, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    if (qcow2_ld32(h + QH_MAGIC) != QCOW2_MAGIC) {
        OPEN_FAIL(errp, "Image is not in qcow2 format");
    }
    s->version = qcow2_ld32(h + QH_VERSION);
    if (s->version != 2 && s->version != 3) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS, "Unsupported qcow2 version %d",
                    s->version);
        return -ENOTSUP;
    }
    uint32_t cb = qcow2_ld32(h + QH_CLUSTER_BITS);
    if (cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS) {
        OPEN_FAIL(errp, "Unsupported cluster size: 2^%u (cluster_bits must be 9 to 21)", cb);
    }
    s->cluster_bits = cb;
    s->cluster_size = 1ULL << cb;
    if (s->version == 2) {
        s->header_length = QCOW2_V2_HEADER_LENGTH;
        s->refcount_order = 4;
    } else {
        s->header_length = qcow2_ld32(h + QH_HEADER_LENGTH);
        s->incompat = qcow2_ld64(h + QH_INCOMPAT);
        s->compat = qcow2_ld64(h + QH_COMPAT);
        s->autoclear = qcow2_ld64(h + QH_AUTOCLEAR);
        s->refcount_order = (int)MIN(qcow2_ld32(h + QH_REFCOUNT_ORDER), 64u);
        if (s->header_length < QCOW2_V3_HEADER_LENGTH) {
            OPEN_FAIL(errp, "qcow2 header too short (%u bytes)", s->header_length);
        }
        if (s->header_length % 8) {
            OPEN_FAIL(errp, "qcow2 header length %u is not a multiple of 8", s->header_length);
        }
        if (s->refcount_order > 6) {
            OPEN_FAIL(errp, "Reference count entry width too large; may not exceed 64 bits");
        }
    }
    if (s->header_length > s->cluster_size) {
        OPEN_FAIL(errp, "qcow2 header (%u bytes) exceeds the cluster size", s->header_length);
    }
    if (s->header_length > QH_COMPRESSION_TYPE) {
        s->compression_type = h[QH_COMPRESSION_TYPE];
    }
    if (qcow2_ld32(h + QH_CRYPT) != 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS, "Encrypted images are not supported");
        return -ENOTSUP;
    }
    s->extended_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    s->l2_entry_words = s->extended_l2 ? 2 : 1;
    s->l2_bits = cb - (s->extended_l2 ? 4 : 3);
    s->l2_entries = 1ULL << s->l2_bits;
    s->subcluster_bits = cb - (s->extended_l2 ? 5 : 0);
    s->subcluster_size = 1ULL << s->subcluster_bits;
    s->refcount_bits = 1 << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ULL << s->refcount_bits) - 1;
    s->rb_bits = cb + 3 - s->refcount_order;
    s->rb_entries = 1ULL << s->rb_bits;
    s->csize_shift = 62 - (cb - 8);
    s->csize_mask = (1ULL << (cb - 8)) - 1;
    s->coffset_mask = (1ULL << s->csize_shift) - 1;

    s->size = qcow2_ld64(h + QH_SIZE);
    s->l1_size = qcow2_ld32(h + QH_L1_SIZE);
    s->l1_table_offset = qcow2_ld64(h + QH_L1_OFFSET);
    s->refcount_table_offset = qcow2_ld64(h + QH_RT_OFFSET);
    uint32_t rt_clusters = qcow2_ld32(h + QH_RT_CLUSTERS);
    s->nb_snapshots = qcow2_ld32(h + QH_NB_SNAPSHOTS);
    s->snapshots_offset = qcow2_ld64(h + QH_SNAPSHOTS_OFFSET);

    if (s->size > (uint64_t)INT64_MAX - s->cluster_size ||
        qcow2_l1_entries_for(s, s->size) > QCOW2_MAX_L1_BYTES / 8) {
        OPEN_FAIL(errp, "Image is too big (%" PRIu64 " bytes)", s->size);
    }
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        OPEN_FAIL(errp, "Active L1 table too large (%u entries)", s->l1_size);
    }
    if (s->l1_size < qcow2_l1_entries_for(s, s->size)) {
        OPEN_FAIL(errp, "L1 table is too small (%u entries for %" PRIu64 " bytes)", s->l1_size,
                  s->size);
    }
    if (!table_offset_ok(s, s->l1_table_offset, (uint64_t)s->l1_size * 8) ||
        (s->l1_size && !s->l1_table_offset)) {
        OPEN_FAIL(errp, "Invalid L1 table offset 0x%" PRIx64, s->l1_table_offset);
    }
    if (rt_clusters == 0) {
        OPEN_FAIL(errp, "Image does not contain a reference count table");
    }
    if ((uint64_t)rt_clusters << cb > QCOW2_MAX_REFTABLE_BYTES) {
        OPEN_FAIL(errp, "Reference count table too large (%u clusters)", rt_clusters);
    }
    s->refcount_table_size = ((uint64_t)rt_clusters << cb) / 8;
    if (!table_offset_ok(s, s->refcount_table_offset, (uint64_t)rt_clusters << cb) ||
        !s->refcount_table_offset) {
        OPEN_FAIL(errp, "Invalid reference count table offset 0x%" PRIx64,
                  s->refcount_table_offset);
    }
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        OPEN_FAIL(errp, "Snapshot table too large (%u snapshots)", s->nb_snapshots);
    }
    if (s->nb_snapshots &&
        (!table_offset_ok(s, s->snapshots_offset, (uint64_t)s->nb_snapshots * 40) ||
         !s->snapshots_offset)) {
        OPEN_FAIL(errp, "Invalid snapshot table offset 0x%" PRIx64, s->snapshots_offset);
    }
    return 0;
}

/* Backing file name, extensions and features: everything else in the header cluster. */
static int parse_header_cluster(BlockDriverState *bs, const uint8_t *buf, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t boff = qcow2_ld64(buf + QH_BACKING_OFFSET);
    uint32_t blen = qcow2_ld32(buf + QH_BACKING_SIZE);
    uint64_t ext_end = s->cluster_size;

    if (boff) {
        if (blen > QCOW2_MAX_BACKING_NAME) {
            OPEN_FAIL(errp, "Backing file name too long (%u bytes, at most %d)", blen,
                      QCOW2_MAX_BACKING_NAME);
        }
        if (boff > s->cluster_size || blen > s->cluster_size - boff || boff < s->header_length) {
            OPEN_FAIL(errp, "Invalid backing file offset 0x%" PRIx64, boff);
        }
        ext_end = boff;
        if (blen) {
            bs->backing_file = g_strndup((const char *)buf + boff, blen);
        }
    }
    int ret = parse_extensions(bs, buf, ext_end, errp);
    if (ret < 0) {
        return ret;
    }
    if (bs->backing_file && s->backing_format) {
        bs->backing_format = g_strdup(s->backing_format);
    }
    return check_features(bs, flags, errp);
}

static void coroutine_fn qcow2_open_header_entry(void *opaque)
{
    OpenCo *o = opaque;
    BlockDriverState *bs = o->bs;
    BDRVQcow2State *s = bs->opaque;
    uint8_t first[QCOW2_NEW_HEADER_LENGTH];
    GRAPH_RDLOCK_GUARD();

    o->ret = bdrv_co_pread(bs->file, 0, sizeof(first), first, 0);
    if (o->ret < 0) {
        g_set_error(o->errp, G_FILE_ERROR, g_file_error_from_errno(-o->ret),
                    "Could not read qcow2 header: %s", g_strerror(-o->ret));
        return;
    }
    o->ret = parse_header(bs, first, o->errp);
    if (o->ret < 0) {
        return;
    }
    s->header_raw = g_malloc0(s->cluster_size);
    o->ret = bdrv_co_pread(bs->file, 0, s->cluster_size, s->header_raw, 0);
    if (o->ret < 0) {
        g_set_error(o->errp, G_FILE_ERROR, g_file_error_from_errno(-o->ret),
                    "Could not read qcow2 header: %s", g_strerror(-o->ret));
        return;
    }
    o->ret = parse_header_cluster(bs, s->header_raw, o->flags, o->errp);
}

/* Repairs refcounts of an image left dirty (lazy refcounts) before writing to it. */
static int coroutine_fn repair_dirty_image(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BdrvCheckResult res = {0};
    int ret = qcow2_check_refcounts(bs, &res, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    if (ret < 0 || res.corruptions || res.check_errors) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO,
                    "Could not repair the refcounts of a dirty qcow2 image (%d corruptions "
                    "left): %s",
                    res.corruptions, ret < 0 ? g_strerror(-ret) : "run a full check");
        return ret < 0 ? ret : -EIO;
    }
    ret = qcow2_write_incompat(bs, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not clear the dirty bit: %s", g_strerror(-ret));
    }
    return ret;
}

static void coroutine_fn qcow2_open_tables_entry(void *opaque)
{
    OpenCo *o = opaque;
    BlockDriverState *bs = o->bs;
    BDRVQcow2State *s = bs->opaque;
    GRAPH_RDLOCK_GUARD();

    if ((o->ret = qcow2_l1_open(bs, o->errp)) < 0 ||
        (o->ret = qcow2_refcount_open(bs, o->errp)) < 0 ||
        (o->ret = qcow2_snapshots_open(bs, o->errp)) < 0 ||
        (o->ret = qcow2_bitmaps_open(bs, o->errp)) < 0) {
        return;
    }
    if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && (o->flags & BDRV_O_RDWR)) {
        co_mutex_lock(&s->lock);
        o->ret = repair_dirty_image(bs, o->errp);
        co_mutex_unlock(&s->lock);
    }
}

/* Takes "cache-clean-interval" (seconds, 0 to UINT32_MAX as QEMU allows) into *out. */
static bool take_clean_interval(GHashTable *options, uint64_t def, uint64_t *out, GError **errp)
{
    int64_t v;
    if (!opts_take_int(options, "cache-clean-interval", (int64_t)def, &v, errp)) {
        return false;
    }
    if (v < 0 || v > UINT32_MAX) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Cache clean interval too big");
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

/* Takes our options and sizes the caches. */
static bool qcow2_take_options(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l2_bytes, rb_bytes, clean_interval;
    bool lazy;
    uint64_t tables_needed = MAX(qcow2_l1_entries_for(s, s->size), 1);
    uint64_t l2_default =
        MIN(tables_needed * s->cluster_size, MAX(QCOW2_DEFAULT_L2_CACHE_MAX, 4 * s->cluster_size));

    if (!opts_take_size(options, "l2-cache-size", l2_default, &l2_bytes, errp) ||
        !opts_take_size(options, "refcount-cache-size", l2_bytes / 4, &rb_bytes, errp) ||
        !opts_take_bool(options, "lazy-refcounts", s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS, &lazy,
                        errp) ||
        !take_clean_interval(options, QCOW2_DEFAULT_CACHE_CLEAN_INTERVAL, &clean_interval, errp)) {
        return false;
    }
    if (lazy && s->version < 3) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Lazy refcounts need a qcow2 image with compat=1.1 or later");
        return false;
    }
    s->lazy_refcounts = lazy && (flags & BDRV_O_RDWR);
    uint64_t l2_n = MIN(MAX(l2_bytes >> s->cluster_bits, QCOW2_MIN_L2_CACHE_TABLES), 65536);
    uint64_t rb_n = MIN(MAX(rb_bytes >> s->cluster_bits, QCOW2_MIN_RB_CACHE_TABLES), 65536);
    s->l2_cache = qcow2_cache_create(bs, (int)l2_n);
    s->refblock_cache = qcow2_cache_create(bs, (int)rb_n);
    s->cache_clean_interval = clean_interval; /* the timer starts once the node is open */
    return true;
}

/* Opens the external data file named by the image or by the "data-file" option. */
static bool qcow2_open_data_file(BlockDriverState *bs, GHashTable *options, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool wanted = s->incompat & QCOW2_INCOMPAT_DATA_FILE;
    g_autofree char *path = NULL;

    if (!wanted) {
        if (opts_has_prefix(options, "data-file")) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "'data-file' can only be set for images with an external data file");
            return false;
        }
        s->data_file = bs->file;
        return true;
    }
    if (s->data_file_name && !opts_has_prefix(options, "data-file")) {
        /*
         * A relative name is looked up beside the image (as backing files
         * are), then, as QEMU does, relative to the working directory.
         */
        const char *base = bs->file->bs->filename;
        if (!g_path_is_absolute(s->data_file_name) && base) {
            g_autofree char *dir = g_path_get_dirname(base);
            path = g_build_filename(dir, s->data_file_name, NULL);
        }
        if (!path || !g_file_test(path, G_FILE_TEST_EXISTS)) {
            g_free(path);
            path = g_strdup(s->data_file_name);
        }
    }
    GError *err = NULL;
    BdrvChild *c = bdrv_open_child(path, options, "data-file", bs, BDRV_CHILD_DATA, true, &err);
    if (!c) {
        if (err) {
            g_propagate_prefixed_error(errp, err, "Could not open the external data file: ");
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Missing external data file (no name in the image, no 'data-file' "
                        "option)");
        }
        return false;
    }
    s->data_file = c;
    s->has_data_file = true;
    s->data_file_raw = s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    return true;
}

static void qcow2_free_state(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    qcow2_cache_clean_timer_set(bs, 0);
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refblock_cache);
    qcow2_overlap_free(s);
    qcow2_snapshots_free(s);
    qcow2_bitmaps_free(s);
    for (int i = 0; i < s->nb_unknown_exts; i++) {
        g_free(s->unknown_exts[i].data);
    }
    g_free(s->unknown_exts);
    g_free(s->features);
    g_free(s->backing_format);
    g_free(s->data_file_name);
    g_free(s->l1_table);
    g_free(s->refcount_table);
    g_free(s->header_raw);
    memset(s, 0, sizeof(*s));
}

static bool qcow2_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    OpenCo o = {.bs = bs, .flags = flags, .errp = errp};

    co_mutex_init(&s->lock);
    bdrv_run_co(qcow2_open_header_entry, &o);
    if (o.ret < 0 || !qcow2_open_data_file(bs, options, errp) ||
        !qcow2_take_options(bs, options, flags, errp)) {
        goto fail;
    }
    bdrv_run_co(qcow2_open_tables_entry, &o);
    if (o.ret < 0) {
        goto fail;
    }
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    bs->supported_truncate_flags = BDRV_REQ_ZERO_WRITE;
    qcow2_cache_clean_timer_set(bs, s->cache_clean_interval);
    return true;

fail:
    g_free(bs->backing_file);
    g_free(bs->backing_format);
    bs->backing_file = bs->backing_format = NULL;
    qcow2_free_state(bs);
    return false;
}

/* Writes back every cache and, when we set it, clears the dirty bit.  Under s->lock. */
static int coroutine_fn qcow2_flush_caches(BlockDriverState *bs, bool mark_clean)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_cache_write(bs, s->l2_cache);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refblock_cache);
    }
    if (ret == 0 && mark_clean && s->dirty_marked) {
        ret = bdrv_co_flush(bs->file->bs);
        if (ret == 0) {
            ret = qcow2_write_incompat(bs, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
        }
        if (ret == 0) {
            s->dirty_marked = false;
            s->first_write_done = false; /* the next write marks it dirty again */
        }
    }
    return ret;
}

typedef struct CloseCo {
    BlockDriverState *bs;
    int ret;
} CloseCo;

static void coroutine_fn qcow2_close_entry(void *opaque)
{
    CloseCo *c = opaque;
    BDRVQcow2State *s = c->bs->opaque;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    c->ret = qcow2_bitmaps_store(c->bs);
    if (c->ret == 0) {
        c->ret = qcow2_flush_caches(c->bs, true);
    }
    if (c->ret == 0) {
        c->ret = bdrv_co_flush(c->bs->file->bs);
    }
    co_mutex_unlock(&s->lock);
}

static void qcow2_close(BlockDriverState *bs)
{
    if (!bdrv_is_read_only(bs)) {
        CloseCo c = {bs, 0};
        bdrv_run_co(qcow2_close_entry, &c);
        if (c.ret < 0) {
            fprintf(stderr, "qcow2: could not write back metadata of '%s' on close: %s\n",
                    bs->filename ? bs->filename : bs->node_name, g_strerror(-c.ret));
        }
    }
    qcow2_free_state(bs);
}

/* ---- request callbacks ---------------------------------------------------------------- */

static int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, BdrvRequestFlags flags)
{
    return qcow2_co_preadv_impl(bs, offset, bytes, qiov);
}

static int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov, BdrvRequestFlags flags)
{
    int ret = qcow2_co_pwritev_impl(bs, offset, bytes, qiov);
    qcow2_bitmaps_track(bs, offset, bytes); /* even after a failure: the data may have changed */
    return ret;
}

static int coroutine_fn qcow2_co_pwritev_compressed(BlockDriverState *bs, int64_t offset,
                                                    int64_t bytes, IOVector *qiov)
{
    int ret = qcow2_co_pwritev_compressed_impl(bs, offset, bytes, qiov);
    qcow2_bitmaps_track(bs, offset, bytes);
    return ret;
}

static int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                               BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    co_mutex_lock(&s->lock);
    int ret = qcow2_zero_clusters(bs, offset, bytes, flags & BDRV_REQ_MAY_UNMAP);
    co_mutex_unlock(&s->lock);
    qcow2_bitmaps_track(bs, offset, bytes);
    return ret;
}

static int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    co_mutex_lock(&s->lock);
    int ret = qcow2_discard_clusters(bs, offset, bytes, false);
    co_mutex_unlock(&s->lock);
    qcow2_bitmaps_track(bs, offset, bytes);
    return ret;
}

static int coroutine_fn qcow2_co_flush_to_os(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    bdrv_debug_event(bs->file, BLKDBG_FLUSH_TO_OS);
    co_mutex_lock(&s->lock);
    int ret = qcow2_flush_caches(bs, false);
    co_mutex_unlock(&s->lock);
    /* The core flushes the children next: QEMU's flush_to_disk point. */
    if (ret == 0) {
        bdrv_debug_event(bs->file, BLKDBG_FLUSH_TO_DISK);
    }
    return ret;
}

static int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                              int64_t bytes, int64_t *pnum, int64_t *map,
                                              BlockDriverState **file)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = bytes, host;

    co_mutex_lock(&s->lock);
    int type = qcow2_get_host_offset(bs, offset, &n, &host);
    co_mutex_unlock(&s->lock);
    if (type < 0) {
        return type;
    }
    *pnum = n;
    switch (type) {
    case QCOW2_SC_NORMAL:
        *map = host;
        *file = s->data_file->bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_RECURSE;
    case QCOW2_SC_ZERO_ALLOC:
        *map = host;
        *file = s->data_file->bs;
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
    case QCOW2_SC_ZERO_PLAIN:
        return BDRV_BLOCK_ZERO;
    case QCOW2_SC_COMPRESSED:
        return BDRV_BLOCK_DATA;
    default:
        return 0;
    }
}

static int64_t coroutine_fn qcow2_co_getlength(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    co_mutex_lock(&s->lock);
    int64_t len = s->size;
    co_mutex_unlock(&s->lock);
    return len;
}

static int64_t coroutine_fn qcow2_co_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t n = bdrv_co_get_allocated_file_size(bs->file->bs);
    if (n >= 0 && s->has_data_file) {
        int64_t d = bdrv_co_get_allocated_file_size(s->data_file->bs);
        n = d < 0 ? d : n + d;
    }
    return n;
}

/* Writes the new size into the header.  Under s->lock. */
static int coroutine_fn write_size(BlockDriverState *bs, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t be[8];
    qcow2_st64(be, size);
    int ret = bdrv_co_pwrite(bs->file, QH_SIZE, 8, be, 0);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        s->size = size;
        memcpy(s->header_raw + QH_SIZE, be, 8);
    }
    return ret;
}

/* Writes zero-filled buffers over guest [@offset, @offset + @bytes).  Without s->lock. */
static int coroutine_fn write_zero_buffers(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    uint64_t chunk = MIN(bytes, 1024 * 1024);
    void *buf = bdrv_blockalign0(bs, chunk);
    int ret = 0;
    for (uint64_t done = 0; done < bytes && ret == 0; done += chunk) {
        IOVector v;
        iov_init_buf(&v, buf, MIN(chunk, bytes - done));
        ret = qcow2_co_pwritev_impl(bs, offset + done, v.size, &v);
    }
    free(buf);
    return ret;
}

/*
 * Makes guest [@offset, @offset + @bytes) read as zeroes: zero clusters
 * where the format allows, zero-filled writes for the rest.  Without s->lock.
 */
static int coroutine_fn zero_range(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = offset + bytes;
    uint64_t a = qcow2_round_up(offset, s->subcluster_size);
    uint64_t b = end & ~(s->subcluster_size - 1);
    int ret = 0;

    if (a >= b) {
        return write_zero_buffers(bs, offset, bytes);
    }
    co_mutex_lock(&s->lock);
    ret = qcow2_zero_clusters(bs, a, b - a, true);
    co_mutex_unlock(&s->lock);
    if (ret == -ENOTSUP) {
        ret = write_zero_buffers(bs, a, b - a);
    }
    if (ret == 0 && offset < a) {
        ret = write_zero_buffers(bs, offset, a - offset);
    }
    if (ret == 0 && b < end) {
        ret = write_zero_buffers(bs, b, end - b);
    }
    return ret;
}

/* True when some byte of guest [@offset, @offset + @bytes) may not read as zero.  Without s->lock.
 */
static int coroutine_fn range_may_be_nonzero(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                             bool *nonzero)
{
    BDRVQcow2State *s = bs->opaque;
    *nonzero = false;
    for (uint64_t done = 0; done < bytes && !*nonzero;) {
        uint64_t n = bytes - done, host;
        co_mutex_lock(&s->lock);
        int type = qcow2_get_host_offset(bs, offset + done, &n, &host);
        co_mutex_unlock(&s->lock);
        if (type < 0) {
            return type;
        }
        *nonzero =
            type == QCOW2_SC_NORMAL || type == QCOW2_SC_COMPRESSED ||
            ((type == QCOW2_SC_UNALLOC_PLAIN || type == QCOW2_SC_UNALLOC_ALLOC) && bs->backing);
        done += n;
    }
    return 0;
}

/* Shrinks the disk: clusters past the new end are dropped.  Under s->lock. */
static int coroutine_fn qcow2_shrink(BlockDriverState *bs, uint64_t size, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t keep_end = qcow2_round_up(size, s->cluster_size);
    uint64_t old_end = qcow2_round_up(s->size, s->cluster_size);
    int ret = 0;

    if (s->nb_snapshots) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Cannot shrink an image that has internal snapshots");
        return -ENOTSUP;
    }
    ret = qcow2_before_write(bs);
    if (ret == 0 && keep_end < old_end) {
        ret = qcow2_discard_clusters(bs, keep_end, old_end - keep_end, true);
    }
    if (ret == 0) {
        ret = qcow2_drop_l2_tables(bs, qcow2_l1_entries_for(s, size));
    }
    if (ret == 0) {
        ret = write_size(bs, size);
    }
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret), "Could not shrink: %s",
                    g_strerror(-ret));
    }
    return ret;
}

/*
 * falloc/full: metadata preallocation plus a data area that the protocol
 * allocated (fallocate, or zeroes written), as QEMU does by truncating its
 * file child with the same mode.  The file is first grown in @prealloc mode
 * by more than the new clusters can take (data, L2 tables, refcount blocks
 * and a moved refcount table), so that the free-cluster search places every
 * one of them inside the allocated area; the unused tail is cut off after.
 * Returns 0 or -errno.  Under s->lock.
 */
static int coroutine_fn qcow2_preallocate_data(BlockDriverState *bs, uint64_t old, uint64_t size,
                                               PreallocMode prealloc)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    int64_t len = bdrv_co_getlength(s->data_file->bs);
    int ret;

    if (len < 0) {
        return len;
    }
    if (s->has_data_file) {
        /* Guest offset == host offset: the data file only needs the virtual size. */
        ret = (uint64_t)len < size ? bdrv_co_truncate(s->data_file, size, false, prealloc, 0, NULL)
                                   : 0;
        return ret < 0 ? ret : qcow2_preallocate(bs, old, size);
    }
    uint64_t start = qcow2_round_up(len, cs) / cs;
    uint64_t data = (qcow2_round_up(size, cs) - qcow2_start_of_cluster(s, old)) / cs;
    uint64_t l2 = data / (qcow2_l2_span(s) / cs) + 2;
    uint64_t rb_entries = UINT64_C(1) << s->rb_bits;
    uint64_t rb = (start + data + l2) / rb_entries - start / rb_entries + 2;
    uint64_t rt = qcow2_size_to_clusters(s, ((start + data + l2) / rb_entries + rb) * 8) + 1;
    uint64_t bound = (start + data + l2 + 2 * rb + 2 * rt) * cs;

    ret = bdrv_co_truncate(s->data_file, bound, false, prealloc, 0, NULL);
    if (ret == 0) {
        ret = qcow2_preallocate(bs, old, size);
    }
    if (ret < 0) {
        return ret;
    }
    /* The file ends with the last cluster in use, as after metadata preallocation. */
    uint64_t end = bound / cs;
    while (end > start) {
        uint64_t refcount;
        ret = qcow2_get_refcount(bs, end - 1, &refcount);
        if (ret < 0 || refcount) {
            break;
        }
        end--;
    }
    return ret < 0 ? ret
                   : bdrv_co_truncate(s->data_file, end * cs, false, PREALLOC_MODE_OFF, 0, NULL);
}

/* Grows the disk.  Under s->lock. */
static int coroutine_fn qcow2_grow(BlockDriverState *bs, uint64_t size, PreallocMode prealloc,
                                   GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->size;
    int ret = qcow2_before_write(bs);

    if (ret == 0) {
        ret = qcow2_grow_l1_table(bs, qcow2_l1_entries_for(s, size));
    }
    if (ret == 0 && s->data_file_raw) {
        ret = bdrv_co_truncate(s->data_file, size, false, PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret == 0) {
        ret = write_size(bs, size);
    }
    if (ret == 0 && prealloc == PREALLOC_MODE_METADATA) {
        ret = qcow2_preallocate(bs, old, size);
    } else if (ret == 0 && prealloc != PREALLOC_MODE_OFF) {
        ret = qcow2_preallocate_data(bs, old, size, prealloc);
    }
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret), "Could not grow: %s",
                    g_strerror(-ret));
    }
    return ret;
}

static int coroutine_fn qcow2_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                          PreallocMode prealloc, BdrvRequestFlags flags,
                                          GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (prealloc != PREALLOC_MODE_OFF && prealloc != PREALLOC_MODE_METADATA &&
        prealloc != PREALLOC_MODE_FALLOC && prealloc != PREALLOC_MODE_FULL) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS, "Unsupported preallocation mode");
        return -ENOTSUP;
    }
    if (offset % BDRV_SECTOR_SIZE) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "The new size must be a multiple of %d",
                    BDRV_SECTOR_SIZE);
        return -EINVAL;
    }
    co_mutex_lock(&s->lock);
    uint64_t old = s->size;
    if ((uint64_t)offset != old && s->nb_bitmaps) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Cannot resize a qcow2 image with persistent bitmaps (remove them first)");
        ret = -ENOTSUP;
    } else if ((uint64_t)offset == old) {
        ret = 0;
    } else if ((uint64_t)offset < old) {
        ret = qcow2_shrink(bs, offset, errp);
    } else {
        ret = qcow2_grow(bs, offset, prealloc, errp);
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0 || (uint64_t)offset <= old) {
        return ret;
    }

    /* The new area must read as zeroes, not as old bytes or the backing file. */
    bool zero_all = flags & BDRV_REQ_ZERO_WRITE;
    if (!zero_all && bs->backing) {
        int64_t blen = bdrv_co_getlength(bs->backing->bs);
        zero_all = blen < 0 || (uint64_t)blen > old;
    }
    if (zero_all) {
        ret = zero_range(bs, old, offset - old);
    } else if (old % s->cluster_size) {
        uint64_t tail = MIN((uint64_t)offset, qcow2_round_up(old, s->cluster_size)) - old;
        bool nonzero;
        ret = range_may_be_nonzero(bs, old, tail, &nonzero);
        if (ret == 0 && nonzero) {
            ret = zero_range(bs, old, tail);
        }
    }
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not zero the new area: %s", g_strerror(-ret));
    }
    return ret;
}

static int coroutine_fn qcow2_co_check(BlockDriverState *bs, BdrvCheckResult *result,
                                       BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    if (fix && bdrv_is_read_only(bs)) {
        return -EACCES;
    }
    co_mutex_lock(&s->lock);
    int ret = qcow2_check_refcounts(bs, result, fix);
    if (ret == 0 && fix && (s->incompat & QCOW2_INCOMPAT_DIRTY) && !result->corruptions &&
        !s->dirty_marked) {
        ret = qcow2_write_incompat(bs, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* ---- control callbacks ------------------------------------------------------------------- */

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;
    bdi->cluster_size = (int)s->cluster_size;
    bdi->is_dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
    bdi->vm_state_offset = (int64_t)(qcow2_l1_entries_for(s, s->size) * qcow2_l2_span(s));
    return 0;
}

static int qcow2_has_zero_init(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    return !bs->backing_file && !s->data_file_raw;
}

typedef struct BackingCo {
    BlockDriverState *bs;
    const char *file, *fmt;
    int ret;
} BackingCo;

static void coroutine_fn change_backing_entry(void *opaque)
{
    BackingCo *b = opaque;
    BlockDriverState *bs = b->bs;
    BDRVQcow2State *s = bs->opaque;
    GRAPH_RDLOCK_GUARD();

    co_mutex_lock(&s->lock);
    char *old_file = bs->backing_file, *old_fmt = s->backing_format;
    bs->backing_file = b->file && *b->file ? g_strdup(b->file) : NULL;
    s->backing_format = bs->backing_file && b->fmt ? g_strdup(b->fmt) : NULL;
    b->ret = (bs->backing_file && strlen(bs->backing_file) > QCOW2_MAX_BACKING_NAME) ? -EINVAL
             : s->data_file_raw && bs->backing_file                                  ? -EINVAL
                                                                                     : 0;
    if (b->ret == 0) {
        b->ret = qcow2_update_header(bs);
    }
    if (b->ret < 0) {
        g_free(bs->backing_file);
        g_free(s->backing_format);
        bs->backing_file = old_file;
        s->backing_format = old_fmt;
    } else {
        g_free(old_file);
        g_free(old_fmt);
        g_free(bs->backing_format);
        bs->backing_format = g_strdup(s->backing_format);
    }
    co_mutex_unlock(&s->lock);
}

static int qcow2_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                     const char *backing_fmt)
{
    BackingCo b = {bs, backing_file, backing_fmt, 0};
    if (bdrv_is_read_only(bs)) {
        return -EACCES;
    }
    bdrv_run_co(change_backing_entry, &b);
    return b.ret;
}

static void qcow2_refresh_limits(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bs->bl.request_alignment = 1;
    bs->bl.pdiscard_alignment = s->cluster_size;
    bs->bl.pwrite_zeroes_alignment = s->subcluster_size;
    bs->bl.opt_transfer = MAX(bs->bl.opt_transfer, (uint32_t)s->cluster_size);
    bs->bl.max_transfer = 0;
}

static void qcow2_child_perm(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role, uint64_t perm,
                             uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    bdrv_default_perms(bs, c, role, perm, shared, nperm, nshared);
    /* The data file of a writable image is written by copy-on-write and preallocation too. */
    if ((role & BDRV_CHILD_DATA) && !(role & (BDRV_CHILD_METADATA | BDRV_CHILD_COW)) &&
        !bdrv_is_read_only(bs)) {
        *nperm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
        if (!(bs->open_flags & BDRV_O_FORCE_SHARE)) {
            *nshared &= ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
        }
    }
}

typedef struct FlushCo {
    BlockDriverState *bs;
    int ret;
} FlushCo;

static void coroutine_fn make_empty_entry(void *opaque)
{
    FlushCo *f = opaque;
    BDRVQcow2State *s = f->bs->opaque;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    bdrv_debug_event(f->bs->file, BLKDBG_EMPTY_IMAGE_PREPARE);
    f->ret = qcow2_discard_clusters(f->bs, 0, qcow2_round_up(s->size, s->cluster_size), true);
    qcow2_bitmaps_track(f->bs, 0, s->size);
    if (f->ret == 0) {
        f->ret = qcow2_flush_caches(f->bs, false);
    }
    co_mutex_unlock(&s->lock);
}

/* Drops every cluster: the image reads as its backing file again (after a commit). */
static int qcow2_make_empty(BlockDriverState *bs)
{
    FlushCo f = {bs, 0};
    if (bdrv_is_read_only(bs)) {
        return -EACCES;
    }
    bdrv_run_co(make_empty_entry, &f);
    return f.ret;
}

static void coroutine_fn reopen_flush_entry(void *opaque)
{
    FlushCo *f = opaque;
    BDRVQcow2State *s = f->bs->opaque;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    f->ret = qcow2_bitmaps_store(f->bs);
    if (f->ret == 0) {
        f->ret = qcow2_flush_caches(f->bs, true);
    }
    if (f->ret == 0) {
        f->ret = bdrv_co_flush(f->bs->file->bs);
    }
    co_mutex_unlock(&s->lock);
}

static bool qcow2_reopen_prepare(BDRVReopenState *st, GError **errp)
{
    BlockDriverState *bs = st->bs;
    BDRVQcow2State *s = bs->opaque;
    bool to_rw = st->flags & BDRV_O_RDWR;
    uint64_t interval;

    /* The only qcow2 option a reopen may change; applied by reopen_commit. */
    if (!take_clean_interval(st->options, s->cache_clean_interval, &interval, errp)) {
        return false;
    }
    if (!to_rw && !bdrv_is_read_only(bs)) {
        FlushCo f = {bs, 0};
        bdrv_run_co(reopen_flush_entry, &f);
        if (f.ret < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-f.ret),
                        "Could not write back qcow2 metadata: %s", g_strerror(-f.ret));
            return false;
        }
    }
    if (to_rw && bdrv_is_read_only(bs)) {
        if (s->incompat & QCOW2_INCOMPAT_CORRUPT) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ACCES,
                        "qcow2: Image is corrupt; cannot be opened read/write");
            return false;
        }
        if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ACCES,
                        "qcow2: Image is dirty and needs its refcounts repaired; open it "
                        "read/write instead of reopening");
            return false;
        }
    }
    st->opaque = g_memdup2(&interval, sizeof(interval));
    return true;
}

static void qcow2_reopen_commit(BDRVReopenState *st)
{
    BDRVQcow2State *s = st->bs->opaque;
    bool rw = st->flags & BDRV_O_RDWR;
    s->lazy_refcounts = rw && s->version >= 3 && (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS);
    s->first_write_done = false;
    if (st->opaque) {
        uint64_t interval = *(uint64_t *)st->opaque;
        if (interval != s->cache_clean_interval) {
            qcow2_cache_clean_timer_set(st->bs, interval);
        }
        g_clear_pointer(&st->opaque, g_free);
    }
}

static void qcow2_reopen_abort(BDRVReopenState *st)
{
    g_clear_pointer(&st->opaque, g_free);
}

BlockDriver bdrv_qcow2 = {
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2State),
    .supports_backing = true,

    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .amend = qcow2_amend,

    .co_preadv = qcow2_co_preadv,
    .co_pwritev = qcow2_co_pwritev,
    .co_pwritev_compressed = qcow2_co_pwritev_compressed,
    .co_pwrite_zeroes = qcow2_co_pwrite_zeroes,
    .co_pdiscard = qcow2_co_pdiscard,
    .co_flush_to_os = qcow2_co_flush_to_os,
    .co_block_status = qcow2_co_block_status,
    .co_truncate = qcow2_co_truncate,
    .co_getlength = qcow2_co_getlength,
    .co_get_allocated_file_size = qcow2_co_get_allocated_file_size,
    .co_check = qcow2_co_check,
    .co_preadv_vmstate = qcow2_co_preadv_vmstate,
    .co_pwritev_vmstate = qcow2_co_pwritev_vmstate,

    .get_info = qcow2_get_info,
    .get_specific_info = qcow2_get_specific_info,
    .measure = qcow2_measure,
    .has_zero_init = qcow2_has_zero_init,
    .make_empty = qcow2_make_empty,
    .change_backing_file = qcow2_change_backing_file,
    .snapshot_ops = &qcow2_snapshot_ops,
    .bitmap_ops = &qcow2_bitmap_ops,
    .refresh_limits = qcow2_refresh_limits,
    .child_perm = qcow2_child_perm,
    .reopen_prepare = qcow2_reopen_prepare,
    .reopen_commit = qcow2_reopen_commit,
    .reopen_abort = qcow2_reopen_abort,
};
