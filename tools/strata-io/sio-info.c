/*
 * strata-io: the format names and the "Format specific information" part
 * of the info command.  The latter comes from the driver through the block
 * layer (bdrv_get_specific_info) and is laid out by bdrv_specific_info_dump,
 * the same code strata-img info uses: qemu-io 7.2 and qemu-img print it
 * identically.
 */
#include <errno.h>
#include <stdio.h>

#include "block/block-int.h"
#include "tools/strata-io/sio.h"

void sio_print_format_name(BlockDriverState *bs)
{
    printf("format name: %s\n", bdrv_get_format_name(bs));
    if (bs->drv && bs->drv->protocol_name) {
        printf("format name: %s\n", bs->drv->protocol_name);
    }
}

int sio_print_specific_info(BlockDriverState *bs)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) info = bdrv_get_specific_info(bs, &err);
    if (!info) {
        if (err) {
            /* qemu-io reports the error and fails the command with EIO. */
            sio_error("%s", err->message);
            return -EIO;
        }
        return 0; /* nothing to say about this image */
    }
    g_autoptr(GString) out = g_string_new("Format specific information:\n");
    bdrv_specific_info_dump(out, info, 4);
    fputs(out->str, stdout);
    return 0;
}
