/*
 * strata-io snapshot mode (-s, open -s): the image is opened read-only and
 * a temporary qcow2 overlay on top of it takes every write, so the image
 * itself never changes.
 *
 * As in qemu-io, the overlay is created in $TMPDIR (default /tmp here),
 * sized like the image, opened with cache.no-flush (nothing in it needs
 * to survive), and its file is unlinked as soon as it is open: it goes
 * away with the last descriptor, even if the tool is killed.  (A later
 * reopen that needs a new descriptor then fails, as qemu-io's does.)
 * Main loop only.
 */
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>

#include "block/block-int.h"
#include "tools/strata-io/sio.h"

/* Creates an empty qcow2 file of @size bytes; returns its path or NULL. */
static char *create_overlay_file(int64_t size, GError **errp)
{
    g_autofree char *path = NULL;
    int fd = g_file_open_tmp("strata-io-snapshot.XXXXXX", &path, errp);
    if (fd < 0) {
        return NULL;
    }
    close(fd);

    GHashTable *opts = opts_new();
    g_autofree char *size_str = g_strdup_printf("%" PRId64, size);
    opts_set(opts, "size", size_str);
    if (!bdrv_create(bdrv_find_driver("qcow2"), path, opts, errp)) {
        unlink(path);
        return NULL;
    }
    return g_steal_pointer(&path);
}

BlockDriverState *sio_snapshot_overlay(BlockDriverState *base, int flags, GError **errp)
{
    bdrv_init();
    int64_t size = bdrv_getlength(base);
    if (size < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-size),
                    "Could not get image size: %s", g_strerror(-size));
        return NULL;
    }
    g_autofree char *path = create_overlay_file(size, errp);
    if (!path) {
        return NULL;
    }

    /* The overlay's backing child is the node already open, not a file named in a header. */
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "qcow2");
    opts_set(opts, "backing", bdrv_get_node_name(base));
    int oflags = (flags & (BDRV_O_RDWR | BDRV_O_UNMAP)) | BDRV_O_NO_FLUSH;
    BlockDriverState *top = bdrv_open(path, opts, oflags, errp);
    unlink(path);
    return top;
}
