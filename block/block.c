/*
 * Nodes: the driver registry, opening (options, probing, protocol and
 * backing children), node names, references and closing.
 *
 * Main loop only, except the registry lookups and the probe check, which
 * any thread may call once bdrv_init() has run (the registry only grows,
 * and it grows before any I/O).
 *
 * How a filename becomes a graph (bdrv_open):
 *   json:{...}        -> options
 *   driver=<protocol> -> one protocol node
 *   otherwise         -> a protocol node "file" (from file.* options or the
 *                        filename's "proto:" prefix, default "file"), then a
 *                        format node on it (driver=, or probed), then its
 *                        backing chain (backing.* options or the header).
 */
#include "block/block-priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_DRIVERS 32

static BlockDriver *drivers[MAX_DRIVERS];
static _Atomic int nr_drivers;

static GList *all_nodes; /* BlockDriverState *, creation order */
static unsigned node_name_counter;

/* ---- registry --------------------------------------------------------- */

void bdrv_register(BlockDriver *drv)
{
    int n = atomic_load(&nr_drivers);
    g_assert(drv->format_name);
    for (int i = 0; i < n; i++) {
        if (drivers[i] == drv) {
            return;
        }
    }
    g_assert(n < MAX_DRIVERS);
    drivers[n] = drv;
    atomic_store(&nr_drivers, n + 1);
}

BlockDriver *bdrv_find_driver(const char *format_name)
{
    int n = atomic_load(&nr_drivers);
    for (int i = n - 1; i >= 0; i--) {
        if (strcmp(drivers[i]->format_name, format_name) == 0) {
            return drivers[i];
        }
    }
    return NULL;
}

/* Length of a "proto:" prefix (0 if none): a colon before any slash. */
static size_t protocol_prefix_len(const char *filename)
{
    size_t n = strcspn(filename, ":/\\");
    return filename[n] == ':' ? n : 0;
}

BlockDriver *bdrv_find_protocol(const char *filename, GError **errp)
{
    size_t n = protocol_prefix_len(filename);
    int count = atomic_load(&nr_drivers);

    if (n == 0) {
        BlockDriver *file = bdrv_find_driver("file");
        if (!file) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                        "The 'file' protocol driver is not available");
        }
        return file;
    }
    for (int i = count - 1; i >= 0; i--) {
        const char *p = drivers[i]->protocol_name;
        if (drivers[i]->is_protocol && p && strlen(p) == n && strncmp(p, filename, n) == 0) {
            return drivers[i];
        }
    }
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "Unknown protocol '%.*s'", (int)n,
                filename);
    return NULL;
}

/* Highest probe score for @buf; *best is the driver (NULL when all say 0). */
static int probe_best(const uint8_t *buf, int len, const char *filename, BlockDriver **best)
{
    int n = atomic_load(&nr_drivers);
    int best_score = 0;
    *best = NULL;
    for (int i = 0; i < n; i++) {
        if (drivers[i]->probe) {
            int score = drivers[i]->probe(buf, len, filename);
            if (score > best_score) {
                best_score = score;
                *best = drivers[i];
            }
        }
    }
    return best_score;
}

bool bdrv_probe_matches_other_format(const uint8_t *buf, int len)
{
    BlockDriver *best;
    /* Score 1 is the fallback guess (raw); anything above recognised a header. */
    return probe_best(buf, len, NULL, &best) > 1;
}

/* ---- nodes ---------------------------------------------------------------- */

BlockDriverState *bdrv_new(void)
{
    GLOBAL_STATE_CODE();
    BlockDriverState *bs = g_new0(BlockDriverState, 1);
    bs->refcnt = 1;
    bs->cumulative_shared = BLK_PERM_ALL; /* no parent restricts anything yet */
    atomic_init(&bs->total_bytes, -1);
    atomic_init(&bs->quiesce_counter, bdrv_drain_all_count);
    pthread_mutex_init(&bs->reqs_lock, NULL);
    bs->shards = g_aligned_alloc0(BDRV_SHARDS, sizeof(BdrvNodeShard), _Alignof(BdrvNodeShard));
    bs->bl.request_alignment = 1;
    all_nodes = g_list_append(all_nodes, bs);
    return bs;
}

static void bdrv_free(BlockDriverState *bs)
{
    all_nodes = g_list_remove(all_nodes, bs);
    pthread_mutex_destroy(&bs->reqs_lock);
    g_aligned_free(bs->shards);
    g_free(bs->filename);
    g_free(bs->backing_file);
    g_free(bs->backing_format);
    if (bs->options) {
        g_hash_table_unref(bs->options);
    }
    g_free(bs->opaque);
    g_free(bs);
}

BlockDriverState *bdrv_find_node(const char *node_name)
{
    GLOBAL_STATE_CODE();
    for (GList *l = all_nodes; l; l = l->next) {
        BlockDriverState *bs = l->data;
        if (strcmp(bs->node_name, node_name) == 0) {
            return bs;
        }
    }
    return NULL;
}

GList *bdrv_get_all_nodes(void)
{
    GLOBAL_STATE_CODE();
    return g_list_copy(all_nodes);
}

const char *bdrv_get_node_name(const BlockDriverState *bs)
{
    return bs->node_name;
}

const char *bdrv_get_format_name(const BlockDriverState *bs)
{
    return bs->drv ? bs->drv->format_name : NULL;
}

static bool node_name_valid(const char *name)
{
    if (!g_ascii_isalpha(name[0]) || strlen(name) >= BDRV_NODE_NAME_MAX) {
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.') {
            return false;
        }
    }
    return true;
}

/* Gives @bs the user's name (checked) or a generated "#blockN" one. */
static bool bdrv_assign_node_name(BlockDriverState *bs, const char *name, GError **errp)
{
    if (!name) {
        g_snprintf(bs->node_name, sizeof(bs->node_name), "#block%u", node_name_counter++);
        return true;
    }
    if (!node_name_valid(name)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Invalid node-name: '%s' (a letter, then letters, digits, '-', '_' or '.', "
                    "at most %d characters)",
                    name, BDRV_NODE_NAME_MAX - 1);
        return false;
    }
    if (bdrv_find_node(name)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    g_strlcpy(bs->node_name, name, sizeof(bs->node_name));
    return true;
}

void bdrv_ref(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    bs->refcnt++;
}

static void bdrv_close(BlockDriverState *bs)
{
    g_assert(bs->parents == NULL);

    bdrv_drained_begin(bs);
    if (bs->drv && bs->drv->close && bs->opaque) {
        bs->drv->close(bs);
    }
    while (bs->children) {
        bdrv_unref_child(bs, bs->children->data);
    }
    bdrv_drained_end(bs);
    bdrv_free(bs);
}

void bdrv_unref(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    if (!bs) {
        return;
    }
    g_assert(bs->refcnt > 0);
    if (--bs->refcnt == 0) {
        bdrv_close(bs);
    }
}

/* ---- options common to every node ---------------------------------------- */

/* Takes the options every node understands and folds them into *flags. */
static bool bdrv_take_common_options(GHashTable *opts, int *flags, GError **errp)
{
    static const char *const discard_names[] = {"ignore", "off", "unmap", "on", NULL};
    int discard;
    bool ro, direct, no_flush, cor, share;
    bool has_ro = opts_get(opts, "read-only") != NULL;

    if (!opts_take_bool(opts, "read-only", !(*flags & BDRV_O_RDWR), &ro, errp) ||
        !opts_take_bool(opts, "cache.direct", *flags & BDRV_O_NOCACHE, &direct, errp) ||
        !opts_take_bool(opts, "cache.no-flush", *flags & BDRV_O_NO_FLUSH, &no_flush, errp) ||
        !opts_take_bool(opts, "copy-on-read", *flags & BDRV_O_COPY_ON_READ, &cor, errp) ||
        !opts_take_bool(opts, "force-share", *flags & BDRV_O_FORCE_SHARE, &share, errp) ||
        !opts_take_enum(opts, "discard", discard_names, (*flags & BDRV_O_UNMAP) ? 2 : 0, &discard,
                        errp)) {
        return false;
    }
    if (has_ro) {
        *flags = ro ? (*flags & ~BDRV_O_RDWR) : (*flags | BDRV_O_RDWR);
    }
    *flags = (*flags & ~BDRV_O_NOCACHE) | (direct ? BDRV_O_NOCACHE : 0);
    *flags = (*flags & ~BDRV_O_NO_FLUSH) | (no_flush ? BDRV_O_NO_FLUSH : 0);
    *flags = (*flags & ~BDRV_O_COPY_ON_READ) | (cor ? BDRV_O_COPY_ON_READ : 0);
    *flags = (*flags & ~BDRV_O_FORCE_SHARE) | (share ? BDRV_O_FORCE_SHARE : 0);
    *flags = (*flags & ~BDRV_O_UNMAP) | (discard >= 2 ? BDRV_O_UNMAP : 0);
    if ((*flags & BDRV_O_FORCE_SHARE) && (*flags & BDRV_O_RDWR)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "force-share=on can only be used with read-only images");
        return false;
    }
    return true;
}

/* Flags a child opened below a node inherits from it. */
static int bdrv_child_flags(int parent_flags, bool backing)
{
    int keep = BDRV_O_NOCACHE | BDRV_O_NO_FLUSH | BDRV_O_UNMAP | BDRV_O_FORCE_SHARE | BDRV_O_NO_IO;
    if (!backing) {
        keep |= BDRV_O_RDWR;
    }
    return parent_flags & keep;
}

static bool bdrv_check_leftover_options(BlockDriverState *bs, GHashTable *opts, GError **errp)
{
    if (g_hash_table_size(opts) == 0) {
        return true;
    }
    GList *keys = g_list_sort(g_hash_table_get_keys(opts), (GCompareFunc)strcmp);
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                "Block %s '%s' does not support the option '%s'",
                bs->drv->is_protocol ? "protocol" : "format", bs->drv->format_name,
                (char *)keys->data);
    g_list_free(keys);
    return false;
}

/* ---- backing files --------------------------------------------------------- */

char *bdrv_get_full_backing_filename(BlockDriverState *bs, GError **errp)
{
    GLOBAL_STATE_CODE();
    const char *name = bs->backing_file;
    if (!name || !*name) {
        return NULL;
    }
    if (g_str_has_prefix(name, "json:") || protocol_prefix_len(name)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Backing file name '%s' is not a plain local path (json: and protocol "
                    "names are refused for backing files)",
                    name);
        return NULL;
    }
    if (g_path_is_absolute(name)) {
        return g_strdup(name);
    }
    if (!bs->filename || protocol_prefix_len(bs->filename) ||
        g_str_has_prefix(bs->filename, "json:")) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Cannot use relative backing file names for '%s'",
                    bs->filename ? bs->filename : bs->node_name);
        return NULL;
    }
    g_autofree char *dir = g_path_get_dirname(bs->filename);
    return g_build_filename(dir, name, NULL);
}

static BlockDriverState *bdrv_open_inherit(const char *filename, GHashTable *options, int flags,
                                           GError **errp);

/*
 * Opens what @bs's backing child should be: @ref names an existing node
 * ("" = no backing), else @bopts (backing.* options) and the name stored
 * in the image header.
 */
static bool bdrv_open_backing(BlockDriverState *bs, const char *ref, GHashTable *bopts,
                              GError **errp)
{
    BlockDriverState *backing;

    if (ref) {
        if (!*ref) {
            return true;
        }
        backing = bdrv_find_node(ref);
        if (!backing) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Cannot find node '%s' for 'backing'", ref);
            return false;
        }
        bdrv_ref(backing);
    } else {
        bool explicit = g_hash_table_size(bopts) > 0;
        if ((bs->open_flags & BDRV_O_NO_BACKING) || (!explicit && !bs->backing_file)) {
            return true;
        }
        GHashTable *o = opts_copy(bopts);
        g_autofree char *full = NULL;
        if (!opts_get(o, "filename") && !opts_has_prefix(o, "file.")) {
            full = bdrv_get_full_backing_filename(bs, errp);
            if (!full) {
                g_hash_table_unref(o);
                return false;
            }
        }
        if (!opts_get(o, "driver") && bs->backing_format) {
            opts_set(o, "driver", bs->backing_format);
        }
        GError *err = NULL;
        backing = bdrv_open_inherit(full, o, bdrv_child_flags(bs->open_flags, true), &err);
        if (!backing) {
            g_propagate_prefixed_error(errp, err, "Could not open backing file: ");
            return false;
        }
    }
    bs->backing = bdrv_attach_child(bs, backing, "backing", BDRV_CHILD_COW, errp);
    return bs->backing != NULL;
}

/* ---- opening ---------------------------------------------------------------- */

static void bdrv_warn_probed_raw(BlockDriverState *bs)
{
    /* The wording matches QEMU's so that scripts and test outputs agree. */
    fprintf(stderr,
            "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
            "         Automatically detecting the format is dangerous for raw images, "
            "write operations on block 0 will be restricted.\n"
            "         Specify the 'raw' format explicitly to remove the restrictions.\n",
            bs->file ? bs->file->bs->filename : bs->filename);
}

static bool bdrv_open_node_finish(BlockDriverState *bs, GHashTable *opts, const char *backing_ref,
                                  GHashTable *bopts, GError **errp);

/* Runs the driver's open and the steps that need the driver state. */
static bool bdrv_open_node_driver(BlockDriverState *bs, GHashTable *opts, GError **errp)
{
    BlockDriver *drv = bs->drv;
    g_autofree char *backing_ref = opts_take_str(opts, "backing");
    g_autoptr(GHashTable) bopts = opts_extract_prefix(opts, "backing.");

    if (!drv->open(bs, opts, bs->open_flags, errp)) {
        return false;
    }
    if (!bdrv_open_node_finish(bs, opts, backing_ref, bopts, errp)) {
        if (drv->close) {
            drv->close(bs);
        }
        return false;
    }
    return true;
}

/* What follows a successful driver open; on failure the caller closes the driver. */
static bool bdrv_open_node_finish(BlockDriverState *bs, GHashTable *opts, const char *backing_ref,
                                  GHashTable *bopts, GError **errp)
{
    BlockDriver *drv = bs->drv;
    if (!bs->filename) {
        bs->filename = g_strdup(bs->file ? bs->file->bs->filename : bs->node_name);
    }
    if (((backing_ref && *backing_ref) || g_hash_table_size(bopts)) && !drv->supports_backing) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Driver '%s' of node '%s' does not support backing files", drv->format_name,
                    bs->node_name);
        return false;
    }
    GError *err = NULL;
    bdrv_refresh_limits(bs, &err);
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    int64_t len = bdrv_refresh_total_bytes(bs);
    if (len < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-len),
                    "Could not get the length of '%s': %s", bs->filename, g_strerror(-len));
        return false;
    }
    if (drv->supports_backing && !bdrv_open_backing(bs, backing_ref, bopts, errp)) {
        return false;
    }
    return bdrv_check_leftover_options(bs, opts, errp);
}

BlockDriverState *bdrv_open_driver(BlockDriver *drv, const char *filename, BlockDriverState *file,
                                   GHashTable *options, int flags, bool probed, GError **errp)
{
    GLOBAL_STATE_CODE();
    g_autoptr(GHashTable) opts = options;
    g_autofree char *node_name = opts_take_str(opts, "node-name");
    BlockDriverState *bs = bdrv_new();

    bs->drv = drv;
    bs->options = opts_copy(opts);
    bs->probed = probed;
    if (!bdrv_assign_node_name(bs, node_name, errp) ||
        !bdrv_take_common_options(opts, &flags, errp)) {
        bdrv_unref(file);
        goto fail;
    }
    bs->open_flags = flags;
    bs->filename = g_strdup(filename);
    /* Allocated before the file child: the driver's child_perm may look at it. */
    bs->opaque = g_malloc0(MAX(drv->instance_size, 1));
    if (file) {
        BdrvChildRole role = drv->file_child_role;
        if (!role) {
            role = drv->is_filter ? BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY
                                  : BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY;
        }
        bs->file = bdrv_attach_child(bs, file, "file", role, errp);
        if (!bs->file) {
            goto fail;
        }
    }
    if (!bdrv_open_node_driver(bs, opts, errp)) {
        goto fail;
    }
    if (probed && (flags & BDRV_O_RDWR)) {
        bdrv_warn_probed_raw(bs);
    }
    return bs;

fail:
    bs->drv = NULL; /* the driver is closed already (or was never open) */
    bdrv_unref(bs);
    return NULL;
}

BlockDriverState *bdrv_new_open_driver(BlockDriver *drv, const char *node_name, GHashTable *options,
                                       int flags, GError **errp)
{
    GLOBAL_STATE_CODE();
    bdrv_init();
    GHashTable *opts = options ? options : opts_new();
    if (node_name) {
        opts_set(opts, "node-name", node_name);
    }
    opts_set(opts, "driver", drv->format_name);
    return bdrv_open_inherit(NULL, opts, flags, errp);
}

/* Reads the first bytes of @file and picks the format that claims them. */
static BlockDriver *bdrv_probe_format(BlockDriverState *file, bool *guessed, GError **errp)
{
    static const BdrvChildClass probe_class = {0};
    uint8_t *buf = bdrv_blockalign0(file, BDRV_PROBE_BUF_SIZE);
    BlockDriver *drv = NULL;
    int64_t len = bdrv_getlength(file);
    int ret = len < 0 ? (int)len : 0;

    bdrv_ref(file);
    BdrvChild *c = bdrv_root_attach_child(file, "probe", &probe_class, BDRV_CHILD_DATA,
                                          BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, NULL, errp);
    if (!c) {
        free(buf);
        return NULL;
    }
    len = MIN(len, BDRV_PROBE_BUF_SIZE);
    if (ret == 0 && len > 0) {
        ret = bdrv_pread(c, 0, len, buf, 0);
    }
    bdrv_root_unref_child(c);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not read image for determining its format: %s", g_strerror(-ret));
    } else {
        int score = probe_best(buf, len, file->filename, &drv);
        if (score == 0) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Could not determine image format: No compatible driver found");
        }
        *guessed = score == 1;
    }
    free(buf);
    return drv;
}

/* Opens a protocol node; @filename may carry a "proto:" prefix. */
static BlockDriverState *bdrv_open_protocol(BlockDriver *drv, const char *filename,
                                            GHashTable *opts, int flags, GError **errp)
{
    if (filename) {
        bool ok = true;
        if (drv->parse_filename) {
            ok = drv->parse_filename(filename, opts, errp);
        } else if (!opts_get(opts, "filename")) {
            size_t n = protocol_prefix_len(filename);
            bool ours = n && drv->protocol_name && strncmp(filename, drv->protocol_name, n) == 0;
            opts_set(opts, "filename", ours ? filename + n + 1 : filename);
        }
        if (!ok) {
            g_hash_table_unref(opts);
            return NULL;
        }
    }
    const char *fname = opts_get(opts, "filename");
    g_autofree char *node_fname = g_strdup(fname ? fname : filename);
    return bdrv_open_driver(drv, node_fname, NULL, opts, flags, false, errp);
}

/* The node below a format: an existing node ("file": name) or a new protocol node. */
static BlockDriverState *bdrv_open_file_child(const char *filename, GHashTable *opts, int flags,
                                              GError **errp)
{
    g_autofree char *ref = opts_take_str(opts, "file");
    GHashTable *fopts = opts_extract_prefix(opts, "file.");

    if (ref) {
        g_hash_table_unref(fopts);
        BlockDriverState *bs = bdrv_find_node(ref);
        if (!bs) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Cannot find node '%s' for 'file'", ref);
            return NULL;
        }
        bdrv_ref(bs);
        return bs;
    }
    if (filename && !opts_get(fopts, "filename")) {
        opts_set(fopts, "filename", filename);
    }
    if (!opts_get(fopts, "filename") && !opts_get(fopts, "driver")) {
        g_hash_table_unref(fopts);
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "A block device must be specified for \"file\"");
        return NULL;
    }
    return bdrv_open_inherit(NULL, fopts, bdrv_child_flags(flags, false) | BDRV_O_PROTOCOL, errp);
}

/* bdrv_open's body: consumes @options. */
static BlockDriverState *bdrv_open_inherit(const char *filename, GHashTable *options, int flags,
                                           GError **errp)
{
    g_autoptr(GHashTable) opts = options;
    g_autofree char *name = NULL;
    BlockDriver *drv = NULL;

    if (filename && g_str_has_prefix(filename, "json:")) {
        g_autoptr(GHashTable) json = opts_new();
        if (!opts_parse_json(json, filename + 5, errp)) {
            return NULL;
        }
        opts_merge(opts, json, false);
        filename = NULL;
    }
    name = filename ? g_strdup(filename) : opts_take_str(opts, "filename");

    g_autofree char *drvname = opts_take_str(opts, "driver");
    if (drvname) {
        drv = bdrv_find_driver(drvname);
        if (!drv) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Unknown driver '%s'",
                        drvname);
            return NULL;
        }
    } else if (flags & BDRV_O_PROTOCOL) {
        if (!name) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Either a filename or a protocol driver must be given");
            return NULL;
        }
        drv = bdrv_find_protocol(name, errp);
        if (!drv) {
            return NULL;
        }
    }
    flags &= ~BDRV_O_PROTOCOL;
    if (drv && drv->is_protocol) {
        return bdrv_open_protocol(drv, name, g_steal_pointer(&opts), flags, errp);
    }

    BlockDriverState *file = bdrv_open_file_child(name, opts, flags, errp);
    if (!file) {
        return NULL;
    }
    bool guessed = false;
    if (!drv) {
        drv = bdrv_probe_format(file, &guessed, errp);
        if (!drv) {
            bdrv_unref(file);
            return NULL;
        }
    }
    return bdrv_open_driver(drv, NULL, file, g_steal_pointer(&opts), flags, guessed, errp);
}

BlockDriverState *bdrv_open(const char *filename, GHashTable *options, int flags, GError **errp)
{
    GLOBAL_STATE_CODE();
    bdrv_init();
    if (!filename && !options) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Neither a filename nor options were given");
        return NULL;
    }
    return bdrv_open_inherit(filename, options ? options : opts_new(), flags, errp);
}

BdrvChild *bdrv_open_child(const char *filename, GHashTable *parent_options, const char *name,
                           BlockDriverState *parent, BdrvChildRole role, bool allow_none,
                           GError **errp)
{
    GLOBAL_STATE_CODE();
    g_autofree char *prefix = g_strconcat(name, ".", NULL);
    g_autofree char *ref = opts_take_str(parent_options, name);
    GHashTable *copts = opts_extract_prefix(parent_options, prefix);
    BlockDriverState *bs;

    if (ref) {
        g_hash_table_unref(copts);
        bs = bdrv_find_node(ref);
        if (!bs) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Cannot find node '%s' for '%s'", ref, name);
            return NULL;
        }
        bdrv_ref(bs);
    } else if (!filename && g_hash_table_size(copts) == 0) {
        g_hash_table_unref(copts);
        if (!allow_none) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "A block device must be specified for \"%s\"", name);
        }
        return NULL;
    } else {
        int flags = bdrv_child_flags(parent->open_flags, false);
        if (!(role & BDRV_CHILD_METADATA)) {
            flags |= BDRV_O_PROTOCOL;
        }
        bs = bdrv_open_inherit(filename, copts, flags, errp);
        if (!bs) {
            return NULL;
        }
    }
    return bdrv_attach_child(parent, bs, name, role, errp);
}

/* ---- creating images ------------------------------------------------------- */

bool bdrv_create(BlockDriver *drv, const char *filename, GHashTable *options, GError **errp)
{
    GLOBAL_STATE_CODE();
    g_autoptr(GHashTable) opts = options ? options : opts_new();
    if (!drv->create) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Driver '%s' does not support image creation", drv->format_name);
        return false;
    }
    if (!drv->create(filename, opts, errp)) {
        return false;
    }
    if (g_hash_table_size(opts)) {
        GList *keys = g_list_sort(g_hash_table_get_keys(opts), (GCompareFunc)strcmp);
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                    "Invalid parameter '%s' for creating a '%s' image", (char *)keys->data,
                    drv->format_name);
        g_list_free(keys);
        return false;
    }
    return true;
}

bool bdrv_create_file(const char *filename, GHashTable *options, GError **errp)
{
    GLOBAL_STATE_CODE();
    bdrv_init();
    BlockDriver *drv = bdrv_find_protocol(filename, errp);
    if (!drv) {
        if (options) {
            g_hash_table_unref(options);
        }
        return false;
    }
    size_t n = protocol_prefix_len(filename);
    return bdrv_create(drv, n ? filename + n + 1 : filename, options, errp);
}

bool bdrv_parse_cache_mode(const char *mode, int *flags, bool *writethrough, GError **errp)
{
    static const struct {
        const char *name;
        int flags;
        bool writethrough;
    } modes[] = {
        {"none", BDRV_O_NOCACHE, false},
        {"off", BDRV_O_NOCACHE, false},
        {"directsync", BDRV_O_NOCACHE, true},
        {"writeback", 0, false},
        {"writethrough", 0, true},
        {"unsafe", BDRV_O_NO_FLUSH, false},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        if (strcmp(mode, modes[i].name) == 0) {
            *flags = (*flags & ~(BDRV_O_NOCACHE | BDRV_O_NO_FLUSH)) | modes[i].flags;
            *writethrough = modes[i].writethrough;
            return true;
        }
    }
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Invalid cache mode '%s'", mode);
    return false;
}

/* ---- limits ---------------------------------------------------------------- */

static uint32_t min_nonzero(uint32_t a, uint32_t b)
{
    return !a ? b : !b ? a : MIN(a, b);
}

void bdrv_refresh_limits(BlockDriverState *bs, GError **errp)
{
    GLOBAL_STATE_CODE();
    BlockLimits bl = {.request_alignment = 1};

    /* What the node below can take bounds what this node should send it. */
    if (bs->file) {
        const BlockLimits *c = &bs->file->bs->bl;
        bl.max_transfer = min_nonzero(bl.max_transfer, c->max_transfer);
        bl.opt_transfer = MAX(bl.opt_transfer, c->opt_transfer);
        bl.min_mem_alignment = MAX(bl.min_mem_alignment, c->min_mem_alignment);
        bl.opt_mem_alignment = MAX(bl.opt_mem_alignment, c->opt_mem_alignment);
    }
    bs->bl = bl;
    if (bs->drv && bs->drv->refresh_limits) {
        GError *err = NULL;
        bs->drv->refresh_limits(bs, &err);
        if (err) {
            g_propagate_error(errp, err);
            return;
        }
    }
    if (bs->probed) {
        /* The sector-0 guard in io.c needs whole first sectors. */
        bs->bl.request_alignment = MAX(bs->bl.request_alignment, BDRV_SECTOR_SIZE);
    }
    g_assert(bs->bl.request_alignment &&
             !(bs->bl.request_alignment & (bs->bl.request_alignment - 1)));
    if (bs->bl.max_transfer) {
        bs->bl.max_transfer =
            MAX(bs->bl.max_transfer - bs->bl.max_transfer % bs->bl.request_alignment,
                bs->bl.request_alignment);
    }
}
