/*
 * Internal snapshots: the library calls (for strata-img snapshot and
 * embedders) and the table a format driver fills to offer them
 * (BlockDriver.snapshot_ops).  Main loop only; each call drains the node
 * for its duration, so no request runs while a snapshot is taken,
 * applied or deleted.
 */
#ifndef STRATA_BLOCK_SNAPSHOT_H
#define STRATA_BLOCK_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-common.h"

/* One internal snapshot, as qemu-img snapshot -l shows it. */
typedef struct BdrvSnapshotInfo {
    char *id;   /* unique ID ("1", "2", ...) */
    char *name; /* tag; need not be unique */
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec; /* wall clock when taken */
    uint64_t vm_clock_nsec;       /* guest run time when taken */
    uint64_t icount;              /* instruction count; UINT64_MAX when not recorded */
    uint64_t disk_size;           /* virtual disk size when taken */
} BdrvSnapshotInfo;

/*
 * A driver's snapshot callbacks.  Each runs in the main loop with the
 * node drained, returns false and fills @errp on failure, and leaves the
 * image consistent (a crash in the middle may leak clusters, no more).
 */
typedef struct BdrvSnapshotOps {
    /* Takes a snapshot of the current disk; @sn->id is set and unused. */
    bool (*create)(BlockDriverState *bs, const BdrvSnapshotInfo *sn, GError **errp);
    /* All snapshots in table order (*list freed with bdrv_snapshot_list_free). */
    bool (*list)(BlockDriverState *bs, BdrvSnapshotInfo **list, int *count, GError **errp);
    /* Reverts the disk (content and size) to snapshot @id. */
    bool (*go_to)(BlockDriverState *bs, const char *id, GError **errp);
    /* Deletes snapshot @id, freeing what only it used. */
    bool (*delete)(BlockDriverState *bs, const char *id, GError **errp);
    /*
     * Reads show snapshot @id's disk from now until the node is closed; the
     * node is read-only and nothing is written.  Optional.
     */
    bool (*load_tmp)(BlockDriverState *bs, const char *id, GError **errp);
} BdrvSnapshotOps;

/* True when @bs's driver has internal snapshots. */
bool bdrv_can_snapshot(BlockDriverState *bs);

/*
 * Takes a snapshot named @name of @bs.  @id NULL or "" picks the next
 * free number; date_sec == date_nsec == 0 means now; disk_size is
 * ignored (the current size is recorded).  The chosen ID is returned in
 * *new_id when not NULL (caller frees).  Fails with an existing @id.
 */
bool bdrv_snapshot_create(BlockDriverState *bs, const BdrvSnapshotInfo *sn, char **new_id,
                          GError **errp);
/* The snapshots of @bs (*count may be 0). */
bool bdrv_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list, int *count, GError **errp);
void bdrv_snapshot_list_free(BdrvSnapshotInfo *list, int count);
/*
 * Finds a snapshot by ID, else by name (the first with that name), as
 * qemu-img does; fills *out (free its strings with bdrv_snapshot_info_clear).
 */
bool bdrv_snapshot_find(BlockDriverState *bs, const char *id_or_name, BdrvSnapshotInfo *out,
                        GError **errp);
void bdrv_snapshot_info_clear(BdrvSnapshotInfo *sn);
/* Reverts @bs to the snapshot with this ID or name (qemu-img snapshot -a). */
bool bdrv_snapshot_goto(BlockDriverState *bs, const char *id_or_name, GError **errp);
/* Deletes the snapshot with this ID or name (qemu-img snapshot -d). */
bool bdrv_snapshot_delete(BlockDriverState *bs, const char *id_or_name, GError **errp);

/*
 * Makes the read-only node @bs show, until it is closed, the disk as it was
 * in the snapshot with ID @snapshot_id and name @name (either may be NULL,
 * not both; both given must name the same snapshot), without writing to
 * the image (qemu-img convert -l).  The virtual size stays the current one,
 * as in QEMU: what lies past the snapshot's disk reads as unallocated.  The
 * node must stay read-only afterwards.  Errors carry qemu-img's words:
 * "Can't find snapshot" (G_FILE_ERROR_NOENT), "Block format '...' used by
 * device '' does not support temporarily loading internal snapshots".
 */
bool bdrv_snapshot_load_tmp(BlockDriverState *bs, const char *snapshot_id, const char *name,
                            GError **errp);
/* The same with one string tried as an ID, then as a name (qemu-img convert -l NAME). */
bool bdrv_snapshot_load_tmp_by_id_or_name(BlockDriverState *bs, const char *id_or_name,
                                          GError **errp);

#endif /* STRATA_BLOCK_SNAPSHOT_H */
