/*
 * Reopen: changing how a node and the nodes below it that hold its data
 * (not its backing chain) are open: read-only or read-write, the host
 * page cache (cache.direct) and flushes (cache.no-flush).
 *
 * Main loop only, inside a drained section of the node.  Three phases:
 * every driver prepares (nothing visible changes) and takes the options
 * it can change from its BDRVReopenState; what nobody took must equal
 * what the node was opened with ("Cannot change the option 'X'"); the new
 * flags are checked against the permissions every parent holds; then
 * every driver commits and the limits are refreshed bottom-up (O_DIRECT
 * changes the alignment) — or, if anything failed, every prepared driver
 * aborts and the old flags come back.
 */
#include "block/block-priv.h"

#include <string.h>

/* Open flags a reopen may change; children follow their parent's new values. */
#define REOPEN_FLAGS (BDRV_O_RDWR | BDRV_O_NOCACHE | BDRV_O_NO_FLUSH)

/* @bs and, depth first, its children other than backing files. */
static void reopen_collect(BlockDriverState *bs, GList **queue)
{
    if (g_list_find(*queue, bs)) {
        return;
    }
    *queue = g_list_append(*queue, bs);
    for (GList *l = bs->children; l; l = l->next) {
        BdrvChild *c = l->data;
        if (!(c->role & BDRV_CHILD_COW)) {
            reopen_collect(c->bs, queue);
        }
    }
}

static void reopen_abort_all(GList *states)
{
    for (GList *l = g_list_last(states); l; l = l->prev) {
        BDRVReopenState *st = l->data;
        if (st->bs->drv->reopen_abort) {
            st->bs->drv->reopen_abort(st);
        }
    }
}

static void reopen_state_free(gpointer p)
{
    BDRVReopenState *st = p;
    g_hash_table_unref(st->options);
    g_free(st);
}

/* The options of @opts meant for @n: all of them for the root, "file.*" for its file child. */
static GHashTable *reopen_options_for(BlockDriverState *root, BlockDriverState *n, GHashTable *opts)
{
    if (n == root) {
        return opts_copy(opts);
    }
    if (root->file && root->file->bs == n) {
        return opts_extract_prefix(opts, "file.");
    }
    return opts_new();
}

/* Prepares every node of @queue; on failure aborts those prepared. */
static bool reopen_prepare_all(GList *queue, int flags, GHashTable *opts, GList **states,
                               GError **errp)
{
    BlockDriverState *root = queue->data;
    g_autoptr(GHashTable) rest = opts_copy(opts);

    for (GList *l = queue; l; l = l->next) {
        BlockDriverState *n = l->data;
        if (!n->drv || !n->drv->reopen_prepare) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                        "Block format '%s' used by node '%s' does not support reopening files",
                        n->drv ? n->drv->format_name : "(none)", n->node_name);
            reopen_abort_all(*states);
            return false;
        }
        BDRVReopenState *st = g_new0(BDRVReopenState, 1);
        st->bs = n;
        st->flags = (n->open_flags & ~REOPEN_FLAGS) | (flags & REOPEN_FLAGS);
        st->options = reopen_options_for(root, n, rest);
        if (!n->drv->reopen_prepare(st, errp)) {
            reopen_state_free(st);
            reopen_abort_all(*states);
            return false;
        }
        *states = g_list_append(*states, st);
    }
    return true;
}

/* What a node was opened with for @key, as a reopen compares it. */
static const char *reopen_current_value(BlockDriverState *bs, const char *key)
{
    if (!strcmp(key, "driver")) {
        return bs->drv->format_name;
    }
    if (!strcmp(key, "node-name")) {
        return bs->node_name;
    }
    if (!strcmp(key, "filename") && bs->drv->is_protocol) {
        return bs->filename;
    }
    return bs->options ? opts_get(bs->options, key) : NULL;
}

/* Every option no driver took must keep the node's current value. */
static bool reopen_check_leftovers(GList *states, GError **errp)
{
    for (GList *l = states; l; l = l->next) {
        BDRVReopenState *st = l->data;
        GList *keys = g_list_sort(g_hash_table_get_keys(st->options), (GCompareFunc)strcmp);
        for (GList *k = keys; k; k = k->next) {
            const char *key = k->data;
            const char *cur = reopen_current_value(st->bs, key);
            /* Options for nodes further down ("file.x" of the file child) are not ours. */
            if (st->bs->file && g_str_has_prefix(key, "file.")) {
                continue;
            }
            if (!cur || strcmp(cur, opts_get(st->options, key)) != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "Cannot change the option '%s'", key);
                g_list_free(keys);
                return false;
            }
        }
        g_list_free(keys);
    }
    return true;
}

/* Sets the new flags, checks permissions, commits; or restores and aborts. */
static bool reopen_commit_all(BlockDriverState *bs, GList *queue, GList *states, GError **errp)
{
    GArray *old = g_array_new(false, false, sizeof(int));
    for (GList *l = states; l; l = l->next) {
        BDRVReopenState *st = l->data;
        g_array_append_val(old, st->bs->open_flags);
        st->bs->open_flags = st->flags;
    }
    bool ok = bdrv_refresh_perms(bs, errp);
    if (!ok) {
        int i = 0;
        for (GList *l = states; l; l = l->next, i++) {
            ((BDRVReopenState *)l->data)->bs->open_flags = g_array_index(old, int, i);
        }
        reopen_abort_all(states);
    } else {
        for (GList *l = states; l; l = l->next) {
            BDRVReopenState *st = l->data;
            if (st->bs->drv->reopen_commit) {
                st->bs->drv->reopen_commit(st);
            }
        }
        /* Children first: a parent's limits start from its file child's. */
        for (GList *l = g_list_last(queue); l; l = l->prev) {
            bdrv_refresh_limits(l->data, NULL);
        }
    }
    g_array_unref(old);
    return ok;
}

/* Reopens @bs with @flags (the REOPEN_FLAGS bits count) and the options @opts. */
static bool bdrv_reopen_common(BlockDriverState *bs, int flags, GHashTable *opts, GError **errp)
{
    GList *queue = NULL, *states = NULL;
    bool ok;

    if (!(bs->open_flags & BDRV_O_RDWR) && (flags & BDRV_O_RDWR) &&
        (bs->open_flags & BDRV_O_FORCE_SHARE)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Node '%s' was opened with force-share=on and must stay read-only",
                    bs->node_name);
        return false;
    }
    bdrv_drained_begin(bs);
    reopen_collect(bs, &queue);
    ok = reopen_prepare_all(queue, flags, opts, &states, errp);
    if (ok && !reopen_check_leftovers(states, errp)) {
        reopen_abort_all(states);
        ok = false;
    }
    if (ok) {
        ok = reopen_commit_all(bs, queue, states, errp);
    }
    bdrv_drained_end(bs);

    g_list_free_full(states, reopen_state_free);
    g_list_free(queue);
    return ok;
}

bool bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, GError **errp)
{
    GLOBAL_STATE_CODE();
    if (bdrv_is_read_only(bs) == read_only) {
        return true;
    }
    int flags = read_only ? bs->open_flags & ~BDRV_O_RDWR : bs->open_flags | BDRV_O_RDWR;
    g_autoptr(GHashTable) opts = opts_new();
    return bdrv_reopen_common(bs, flags, opts, errp);
}

bool bdrv_reopen(BlockDriverState *bs, GHashTable *opts, GError **errp)
{
    GLOBAL_STATE_CODE();
    g_autoptr(GHashTable) o = opts;
    int flags = bs->open_flags;
    bool ro, direct, no_flush;

    if (!opts_take_bool(o, "read-only", !(flags & BDRV_O_RDWR), &ro, errp) ||
        !opts_take_bool(o, "cache.direct", flags & BDRV_O_NOCACHE, &direct, errp) ||
        !opts_take_bool(o, "cache.no-flush", flags & BDRV_O_NO_FLUSH, &no_flush, errp)) {
        return false;
    }
    flags = (flags & ~REOPEN_FLAGS) | (ro ? 0 : BDRV_O_RDWR) | (direct ? BDRV_O_NOCACHE : 0) |
            (no_flush ? BDRV_O_NO_FLUSH : 0);
    if (flags == bs->open_flags && g_hash_table_size(o) == 0) {
        return true;
    }
    return bdrv_reopen_common(bs, flags, o, errp);
}
