/*
 * strata-img convert: copy offload (-C), the one path that reaches the
 * host files behind the images directly, next to the block layer rather
 * than through it: copy_file_range between the file ranges that block
 * status maps a source range and a target range to, with descriptors of
 * our own on the same files.
 *
 * An adapter: the library has no copy-range request yet (a
 * blk_co_copy_range() that formats forward to their files, as proposed in
 * the convert report); when it does, this becomes a call into it.  Where
 * the target has no place yet (a qcow2 cluster not allocated), the engine
 * falls back to reading and writing, as qemu-img does.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "block/block-int.h"
#include "block/graph-lock.h"
#include "tools/strata-img/img-convert.h"

struct ImgConvertHost {
    GHashTable *fds; /* BlockDriverState * of a file node -> our fd + 1 */
};

ImgConvertHost *img_convert_host_new(void)
{
    ImgConvertHost *h = g_new0(ImgConvertHost, 1);
    h->fds = g_hash_table_new(NULL, NULL);
    return h;
}

static void host_close_fd(gpointer key, gpointer value, gpointer opaque)
{
    close(GPOINTER_TO_INT(value) - 1);
}

void img_convert_host_free(ImgConvertHost *h)
{
    g_hash_table_foreach(h->fds, host_close_fd, NULL);
    g_hash_table_unref(h->fds);
    g_free(h);
}

/* A descriptor of our own on the file behind node @bs, or -errno. */
static int host_fd(ImgConvertHost *h, BlockDriverState *bs, bool write)
{
    int fd = GPOINTER_TO_INT(g_hash_table_lookup(h->fds, bs)) - 1;
    if (fd >= 0) {
        return fd;
    }
    fd = open(bs->filename, (write ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    g_hash_table_insert(h->fds, bs, GINT_TO_POINTER(fd + 1));
    return fd;
}

static bool host_is_file_node(BlockDriverState *bs)
{
    return bs && bs->drv && strcmp(bs->drv->format_name, "file") == 0;
}

int coroutine_fn img_convert_co_map_source(ImgConvertHost *h, ImgConvert *s, ImgConvertSource *src,
                                           int64_t soff, int64_t bytes, int64_t *pnum, int *fd,
                                           int64_t *pos)
{
    BlockDriverState *bs = blk_bs(src->blk), *file = NULL;

    GRAPH_RDLOCK_GUARD();
    BlockDriverState *base = s->target_has_backing ? bdrv_cow_bs(bdrv_skip_filters(bs)) : NULL;
    int ret = bdrv_co_block_status_above(bs, base, false, soff, bytes, pnum, pos, &file);
    if (ret < 0 || !(ret & BDRV_BLOCK_OFFSET_VALID) || !(ret & BDRV_BLOCK_DATA) ||
        !host_is_file_node(file)) {
        return -ENOTSUP;
    }
    *fd = host_fd(h, file, false);
    return *fd < 0 ? -ENOTSUP : 0;
}

int coroutine_fn img_convert_co_map_target(ImgConvertHost *h, ImgConvert *s, int64_t offset,
                                           int64_t bytes, int64_t *pnum, int *fd, int64_t *pos)
{
    BlockDriverState *file = NULL;

    GRAPH_RDLOCK_GUARD();
    int ret = bdrv_co_block_status(blk_bs(s->target), false, offset, bytes, pnum, pos, &file);
    if (ret < 0 || !(ret & BDRV_BLOCK_OFFSET_VALID) || !host_is_file_node(file)) {
        return -ENOTSUP;
    }
    *fd = host_fd(h, file, true);
    return *fd < 0 ? -ENOTSUP : 0;
}

int img_convert_copy_file_range(void *opaque)
{
    ImgConvertCopyRange *a = opaque;
    loff_t in = a->src_pos, out = a->dst_pos;
    int64_t left = a->bytes;

    while (left > 0) {
        ssize_t n = copy_file_range(a->src_fd, &in, a->dst_fd, &out, left, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            return -EIO; /* the file is shorter than its mapping said */
        }
        left -= n;
    }
    return 0;
}
