/*
 * qcow2 compressed clusters: deflating one cluster into a zlib (raw
 * deflate, no header) or zstd stream, and inflating it back.
 *
 * The compressed bytes of a cluster are followed by unrelated bytes (the
 * rest of the last 512-byte sector, perhaps the next compressed cluster),
 * so decompression stops as soon as the cluster is full and never asks
 * for the stream to end exactly at the end of the input.
 *
 * Pure functions on buffers: no state, any thread.
 */
#include <errno.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "drivers/qcow2/qcow2.h"

static int inflate_zlib(void *dest, size_t dest_size, const void *src, size_t src_size)
{
    z_stream z = {0};
    /* Negative window bits: raw deflate, 4 KiB window as qcow2 writers use. */
    if (inflateInit2(&z, -12) != Z_OK) {
        return -EIO;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_size;
    z.next_out = dest;
    z.avail_out = (uInt)dest_size;
    int zr = inflate(&z, Z_FINISH);
    int ret = ((zr == Z_STREAM_END || zr == Z_BUF_ERROR) && z.avail_out == 0) ? 0 : -EIO;
    inflateEnd(&z);
    return ret;
}

static int inflate_zstd(void *dest, size_t dest_size, const void *src, size_t src_size)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    ZSTD_inBuffer in = {src, src_size, 0};
    ZSTD_outBuffer out = {dest, dest_size, 0};
    int ret = 0;

    if (!dctx) {
        return -ENOMEM;
    }
    while (out.pos < out.size) {
        size_t prev_in = in.pos, prev_out = out.pos;
        size_t zr = ZSTD_decompressStream(dctx, &out, &in);
        if (ZSTD_isError(zr)) {
            ret = -EIO;
            break;
        }
        if (zr == 0 && out.pos < out.size) {
            ret = -EIO; /* the frame ended before the cluster was full */
            break;
        }
        if (in.pos == prev_in && out.pos == prev_out) {
            ret = -EIO; /* no progress: the input is cut short */
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return ret;
}

int qcow2_decompress(int type, void *dest, size_t dest_size, const void *src, size_t src_size)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return inflate_zlib(dest, dest_size, src, src_size);
    case QCOW2_COMPRESSION_ZSTD:
        return inflate_zstd(dest, dest_size, src, src_size);
    default:
        return -EIO;
    }
}

static ssize_t deflate_zlib(void *dest, size_t dest_size, const void *src, size_t src_size)
{
    z_stream z = {0};
    /* Raw deflate with a 4 KiB window, as QEMU writes it (and as inflate_zlib reads it). */
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -EIO;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_size;
    z.next_out = dest;
    z.avail_out = (uInt)dest_size;
    int zr = deflate(&z, Z_FINISH);
    ssize_t ret = zr == Z_STREAM_END                  ? (ssize_t)(dest_size - z.avail_out)
                  : (zr == Z_OK || zr == Z_BUF_ERROR) ? -ENOSPC
                                                      : -EIO;
    deflateEnd(&z);
    return ret;
}

static ssize_t compress_zstd(void *dest, size_t dest_size, const void *src, size_t src_size)
{
    size_t n = ZSTD_compress(dest, dest_size, src, src_size, ZSTD_CLEVEL_DEFAULT);
    if (ZSTD_isError(n)) {
        return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
    }
    return (ssize_t)n;
}

ssize_t qcow2_compress(int type, void *dest, size_t dest_size, const void *src, size_t src_size)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return deflate_zlib(dest, dest_size, src, src_size);
    case QCOW2_COMPRESSION_ZSTD:
        return compress_zstd(dest, dest_size, src, src_size);
    default:
        return -EIO;
    }
}
