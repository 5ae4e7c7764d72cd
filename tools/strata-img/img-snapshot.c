/*
 * strata-img snapshot: lists, creates, applies and deletes internal
 * snapshots (block/snapshot.h) with qemu-img 7.2's options, table and
 * messages.  Also the snapshot table that "info" prints.
 *
 * As in qemu-img, -a finds a snapshot by ID first, then by name, while -d
 * goes by name only.  Only listing opens the image read-only.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "block/snapshot.h"
#include "tools/strata-img/img.h"

void img_dump_snapshot_table(GString *out, const BdrvSnapshotInfo *list, int n)
{
    g_string_append_printf(out, "Snapshot list:\n%-9s %-17s %7s%20s%13s%11s\n", "ID", "TAG",
                           "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (int i = 0; i < n; i++) {
        const BdrvSnapshotInfo *sn = &list[i];
        g_autofree char *vm_size = img_size_to_str(sn->vm_state_size);
        g_autofree char *icount =
            sn->icount != UINT64_MAX ? g_strdup_printf("%" PRIu64, sn->icount) : g_strdup("");
        char date[32];
        time_t t = (time_t)sn->date_sec;
        struct tm tm;
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
        uint64_t ms = sn->vm_clock_nsec / 1000000;
        g_autofree char *clock = g_strdup_printf("%02" PRIu64 ":%02u:%02u.%03u", ms / 3600000,
                                                 (unsigned)(ms / 60000 % 60),
                                                 (unsigned)(ms / 1000 % 60), (unsigned)(ms % 1000));
        g_string_append_printf(out, "%-9s %-17s %7s%20s%13s%11s\n", sn->id, sn->name, vm_size, date,
                               clock, icount);
    }
}

typedef enum ImgSnapshotAction {
    IMG_SNAPSHOT_LIST,
    IMG_SNAPSHOT_APPLY,
    IMG_SNAPSHOT_CREATE,
    IMG_SNAPSHOT_DELETE,
} ImgSnapshotAction;

/* qemu-img's wording for the failures everybody meets; the library's text otherwise. */
static const char *img_snapshot_reason(ImgSnapshotAction action, const GError *err)
{
    if (err->domain != G_FILE_ERROR) {
        return err->message;
    }
    if (err->code == G_FILE_ERROR_NOSYS && action == IMG_SNAPSHOT_CREATE) {
        return "-95 (Operation not supported)";
    }
    if (err->code == G_FILE_ERROR_NOSYS && action == IMG_SNAPSHOT_APPLY) {
        return "Block driver does not support snapshots";
    }
    if (err->code == G_FILE_ERROR_NOENT && action == IMG_SNAPSHOT_APPLY) {
        return "Failed to load snapshot: No such file or directory";
    }
    if (err->code == G_FILE_ERROR_NOENT && action == IMG_SNAPSHOT_DELETE) {
        return "snapshot not found";
    }
    return err->message;
}

/* qemu-img 7.2 deletes by name only (applying accepts an ID too). */
static bool img_snapshot_delete_by_name(BlockDriverState *bs, const char *name, GError **errp)
{
    BdrvSnapshotInfo *list;
    int n;
    g_autofree char *id = NULL;

    if (!bdrv_can_snapshot(bs)) {
        n = 0;
        list = NULL;
    } else if (!bdrv_snapshot_list(bs, &list, &n, errp)) {
        return false;
    }
    for (int i = 0; i < n && !id; i++) {
        if (strcmp(list[i].name, name) == 0) {
            id = g_strdup(list[i].id);
        }
    }
    bdrv_snapshot_list_free(list, n);
    if (!id) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "snapshot not found");
        return false;
    }
    return bdrv_snapshot_delete(bs, id, errp);
}

static int img_snapshot_run(BlockDriverState *bs, ImgSnapshotAction action, const char *name)
{
    static const char *const verbs[] = {NULL, "apply", "create", "delete"};
    GError *err = NULL;
    bool ok = true;

    switch (action) {
    case IMG_SNAPSHOT_LIST: {
        BdrvSnapshotInfo *list;
        int n;
        /* Formats without snapshots have nothing to list: no output, success. */
        if (bdrv_can_snapshot(bs) && bdrv_snapshot_list(bs, &list, &n, NULL)) {
            if (n > 0) {
                GString *out = g_string_new(NULL);
                img_dump_snapshot_table(out, list, n);
                fputs(out->str, stdout);
                g_string_free(out, true);
            }
            bdrv_snapshot_list_free(list, n);
        }
        return 0;
    }
    case IMG_SNAPSHOT_CREATE: {
        BdrvSnapshotInfo sn = {.name = (char *)name, .icount = 0};
        ok = bdrv_snapshot_create(bs, &sn, NULL, &err);
        break;
    }
    case IMG_SNAPSHOT_APPLY:
        ok = bdrv_snapshot_goto(bs, name, &err);
        break;
    case IMG_SNAPSHOT_DELETE:
        ok = img_snapshot_delete_by_name(bs, name, &err);
        break;
    }
    if (!ok) {
        img_error("Could not %s snapshot '%s': %s", verbs[action], name,
                  img_snapshot_reason(action, err));
        g_error_free(err);
        return 1;
    }
    return 0;
}

int img_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {0};
    ImgSnapshotAction action = IMG_SNAPSHOT_LIST;
    const char *name = NULL;
    bool quiet = false, chosen = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":la:c:d:hqU", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
        case 'a':
        case 'c':
        case 'd':
            if (chosen) {
                img_error("Cannot mix '-l', '-a', '-c', '-d'");
                img_usage_hint();
                return 1;
            }
            chosen = true;
            action = c == 'l'   ? IMG_SNAPSHOT_LIST
                     : c == 'a' ? IMG_SNAPSHOT_APPLY
                     : c == 'c' ? IMG_SNAPSHOT_CREATE
                                : IMG_SNAPSHOT_DELETE;
            name = optarg;
            o.writable = c != 'l';
            break;
        default:
            if (!img_common_opt(c, argv, &o, &quiet, NULL, &ret)) {
                return ret;
            }
        }
    }
    (void)quiet; /* nothing but errors is printed by the actions that change the image */
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        img_usage_hint();
        return 1;
    }
    BlockBackend *blk = img_open(argv[optind], &o, "writeback");
    if (!blk) {
        return 1;
    }
    ret = img_snapshot_run(blk_bs(blk), action, name);
    blk_unref(blk);
    return ret;
}
