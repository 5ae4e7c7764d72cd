/*
 * Block layer, global state: opening and closing nodes, changing the graph,
 * permissions, reopen and drain.  Main loop thread only (each function
 * starts with GLOBAL_STATE_CODE()); none of these may run in an IOThread.
 *
 * Graph changes happen inside a drained section of the nodes whose edges
 * change, and take the graph writer lock only around the pointer updates.
 */
#ifndef STRATA_BLOCK_GLOBAL_STATE_H
#define STRATA_BLOCK_GLOBAL_STATE_H

#include "block/block-common.h"

/*
 * Opens a node graph for @filename and/or @options (consumed, may be NULL).
 * Options: "driver" (format; probed when absent), "node-name", "read-only",
 * "cache.direct", "cache.no-flush", "discard", "copy-on-read", "file.*"
 * (the protocol node below a format), "backing.*" / backing="" (none).
 * "json:{...}" filenames are parsed into options.  Without BDRV_O_RDWR
 * the graph is read-only.  Returns a node with one reference.
 */
BlockDriverState *bdrv_open(const char *filename, GHashTable *options, int flags, GError **errp);
/* Opens a node of @drv directly (no probing, no protocol child unless "file" options say so). */
BlockDriverState *bdrv_new_open_driver(BlockDriver *drv, const char *node_name, GHashTable *options,
                                       int flags, GError **errp);
void bdrv_ref(BlockDriverState *bs);
/* Drops a reference; the last one closes the node (drained) and its children. */
void bdrv_unref(BlockDriverState *bs);

BlockDriverState *bdrv_find_node(const char *node_name);
/* Every open node, in creation order (free the list with g_list_free). */
GList *bdrv_get_all_nodes(void);

/*
 * Attaches @child under @parent as @name with @role.  Takes over one
 * reference to @child that the caller holds (dropped on failure).
 * Computes permissions from the parent's driver and fails, changing
 * nothing, if another user of @child forbids them.
 */
BdrvChild *bdrv_attach_child(BlockDriverState *parent, BlockDriverState *child, const char *name,
                             BdrvChildRole role, GError **errp);
/*
 * Attaches a non-node parent (a BlockBackend, a job) to @bs with explicit
 * permissions.  Same reference rule as bdrv_attach_child.
 */
BdrvChild *bdrv_root_attach_child(BlockDriverState *bs, const char *name,
                                  const BdrvChildClass *klass, BdrvChildRole role, uint64_t perm,
                                  uint64_t shared, void *opaque, GError **errp);
/* Detaches a root edge and drops its reference on the node. */
void bdrv_root_unref_child(BdrvChild *child);
/* Changes a root edge's permissions; on conflict nothing changes. */
bool bdrv_child_try_set_perm(BdrvChild *c, uint64_t perm, uint64_t shared, GError **errp);
/* Recomputes the permissions of @bs's subtree after its parents changed. */
bool bdrv_refresh_perms(BlockDriverState *bs, GError **errp);
/* "write, resize": readable names of permission bits (caller frees). */
char *bdrv_perm_names(uint64_t perm);

/*
 * Makes every parent of @from point to @to instead (except @to's own
 * edges, so that a filter above @from keeps @from as its child).  Both
 * are drained here.  On a permission conflict nothing changes.
 */
bool bdrv_replace_node(BlockDriverState *from, BlockDriverState *to, GError **errp);
/*
 * Opens a filter node from @options (with "driver" set) on top of @bs and
 * moves @bs's parents to it.  Returns the filter (its reference is held by
 * its parents) or NULL.
 */
BlockDriverState *bdrv_insert_node(BlockDriverState *bs, GHashTable *options, int flags,
                                   GError **errp);
/* Moves the parents of @filter to its child and drops the filter. */
bool bdrv_drop_filter(BlockDriverState *filter, GError **errp);
/* Replaces (or with NULL removes) the backing child; takes a reference to @backing. */
bool bdrv_set_backing_hd(BlockDriverState *bs, BlockDriverState *backing, GError **errp);

/* The backing file name as stored, resolved against @bs's directory (caller frees). */
char *bdrv_get_full_backing_filename(BlockDriverState *bs, GError **errp);

/*
 * Switches @bs between read-only and read-write (prepare, then commit or
 * abort on every driver involved: @bs and its "file" child).
 */
bool bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, GError **errp);
/*
 * Reopens @bs with the options @opts (consumed): "read-only", "cache.direct"
 * and "cache.no-flush" change the open flags of @bs and its file child;
 * anything else must be taken by a driver's reopen_prepare or equal the
 * value the node was opened with ("file.*" for the file child), else the
 * reopen fails with "Cannot change the option 'KEY'" and nothing changes.
 */
bool bdrv_reopen(BlockDriverState *bs, GHashTable *opts, GError **errp);

/* Recomputes bs->bl from the driver and the children. */
void bdrv_refresh_limits(BlockDriverState *bs, GError **errp);

/* Creates an image: @options (consumed) holds "size" and format options. */
bool bdrv_create(BlockDriver *drv, const char *filename, GHashTable *options, GError **errp);
/* Same through the protocol driver @filename selects. */
bool bdrv_create_file(const char *filename, GHashTable *options, GError **errp);

/*
 * Drained sections.  bdrv_drained_begin quiesces @bs: its parents stop
 * sending new requests (recursively upwards; a BlockBackend queues them)
 * and it returns once nothing is in flight in @bs or above it.  Sections
 * nest.  From a coroutine, the drain runs in the main loop while the
 * coroutine yields.  See docs/design/drain.md.
 */
void bdrv_drained_begin(BlockDriverState *bs);
void bdrv_drained_end(BlockDriverState *bs);
/* True while some section holds @bs. */
bool bdrv_is_drained(BlockDriverState *bs);
/* Quiesces every node, including nodes opened while the section lasts. */
void bdrv_drain_all_begin(void);
void bdrv_drain_all_end(void);
/* Begin + end: waits for everything in flight now. */
void bdrv_drain_all(void);

/*
 * Format-specific information (block/info-dump.c): the driver's a{sv}
 * dictionary with keys in QEMU's order (a new reference), or NULL when the
 * driver has nothing to say or fails (then *errp is set).  The dump appends
 * the human layout qemu-img info and qemu-io info share.
 */
GVariant *bdrv_get_specific_info(BlockDriverState *bs, GError **errp);
void bdrv_specific_info_dump(GString *out, GVariant *dict, int indent);

#endif /* STRATA_BLOCK_GLOBAL_STATE_H */
