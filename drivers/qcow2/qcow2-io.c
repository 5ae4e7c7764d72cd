/*
 * qcow2 data path: guest reads and writes, copy-on-write, compressed
 * cluster reads.
 *
 * Each request is cut into pieces that map to one contiguous host range
 * (qcow2_get_host_offset / qcow2_alloc_host_offset, under s->lock); the
 * data I/O of a piece runs with s->lock released, so requests from any
 * number of threads overlap their I/O.  An allocating piece writes the
 * old content it must keep (cow_start), the guest data and the old
 * content after it (cow_end) with a single host write, then takes the
 * lock again to link the new clusters.  When that old content is all
 * zeroes, the file zeroes the range instead and only the guest data is
 * written (write_zeroed_alloc).
 *
 * Locking: the functions here take and release s->lock themselves; the
 * helpers that read old content run without it, on L2 entries copied
 * while it was held (an in-flight allocation keeps them from changing).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

/* Reads guest [@offset, @offset + @bytes) from the backing chain into @qiov at @qoff. */
static int coroutine_fn read_backing(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                     IOVector *qiov, size_t qoff)
{
    uint64_t avail = 0;
    int ret = 0;

    if (bs->backing) {
        int64_t len = bdrv_co_getlength(bs->backing->bs);
        if (len < 0) {
            return len;
        }
        avail = (uint64_t)len > offset ? MIN(bytes, (uint64_t)len - offset) : 0;
    }
    if (avail) {
        IOVector slice;
        iov_init_slice(&slice, qiov, qoff, avail);
        bdrv_debug_event(bs->file, BLKDBG_READ_BACKING_AIO);
        ret = bdrv_co_preadv(bs->backing, offset, avail, &slice, 0);
        iov_destroy(&slice);
    }
    /* Past the end of a shorter backing file (or without one): zeroes. */
    iov_memset(qiov, qoff + avail, 0, bytes - avail);
    return ret;
}

/*
 * Inflates the compressed cluster that L2 entry @entry describes into @out
 * (one cluster).  The descriptor must point past the header and start
 * inside the file, else the image is corrupt.  Its last sector may pass
 * the end of the file (writers do not pad it; reads there give zeroes).
 */
static int coroutine_fn read_compressed_cluster(BlockDriverState *bs, uint64_t entry, void *out)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off, bytes;
    qcow2_compressed_range(s, entry, &off, &bytes);
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    if (file_len < 0) {
        return file_len;
    }
    if (off < s->cluster_size || off >= (uint64_t)file_len) {
        co_mutex_lock(&s->lock);
        int ret = qcow2_signal_corruption(
            bs, "Compressed cluster descriptor 0x%" PRIx64 " points outside the image file", entry);
        co_mutex_unlock(&s->lock);
        return ret;
    }
    uint8_t *in = g_malloc(bytes);
    bdrv_debug_event(bs->file, BLKDBG_READ_COMPRESSED);
    int ret = bdrv_co_pread(bs->file, off, bytes, in, 0);
    if (ret == 0) {
        ret = qcow2_decompress(s->compression_type, out, s->cluster_size, in, bytes);
    }
    g_free(in);
    return ret;
}

/*
 * Reads bytes [@x, @y) of the guest cluster at @gc as L2 entry (@entry,
 * @bitmap) describes them, into @qiov at @qoff.
 */
static int coroutine_fn read_cluster_part(BlockDriverState *bs, uint64_t gc, uint64_t entry,
                                          uint64_t bitmap, uint64_t x, uint64_t y, IOVector *qiov,
                                          size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint8_t *buf = g_malloc(s->cluster_size);
        ret = read_compressed_cluster(bs, entry, buf);
        if (ret == 0) {
            iov_from_buf(qiov, qoff, buf + x, y - x);
        }
        g_free(buf);
        return ret;
    }
    for (uint64_t pos = x; pos < y && ret == 0;) {
        int sc = (int)(pos >> s->subcluster_bits);
        Qcow2SubclusterType t = qcow2_sc_type(s, entry, bitmap, sc);
        uint64_t next = MIN(y, (uint64_t)(sc + 1) << s->subcluster_bits);
        while (next < y &&
               qcow2_sc_type(s, entry, bitmap, (int)(next >> s->subcluster_bits)) == t) {
            next = MIN(y, next + s->subcluster_size);
        }
        size_t at = qoff + (pos - x);
        switch (t) {
        case QCOW2_SC_NORMAL: {
            IOVector slice;
            iov_init_slice(&slice, qiov, at, next - pos);
            bdrv_debug_event(bs->file, BLKDBG_READ_AIO);
            ret = bdrv_co_preadv(s->data_file, (entry & L2E_OFFSET_MASK) + pos, next - pos, &slice,
                                 0);
            iov_destroy(&slice);
            break;
        }
        case QCOW2_SC_ZERO_PLAIN:
        case QCOW2_SC_ZERO_ALLOC:
            iov_memset(qiov, at, 0, next - pos);
            break;
        case QCOW2_SC_UNALLOC_PLAIN:
        case QCOW2_SC_UNALLOC_ALLOC:
            ret = read_backing(bs, gc + pos, next - pos, qiov, at);
            break;
        default:
            ret = -EIO;
            break;
        }
        pos = next;
    }
    return ret;
}

int coroutine_fn qcow2_co_preadv_impl(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t done = 0;

    while (done < (uint64_t)bytes) {
        uint64_t n = bytes - done, host;
        uint64_t pos = offset + done;

        co_mutex_lock(&s->lock);
        int type = qcow2_get_host_offset(bs, pos, &n, &host);
        co_mutex_unlock(&s->lock);
        if (type < 0) {
            return type;
        }

        int ret = 0;
        switch (type) {
        case QCOW2_SC_UNALLOC_PLAIN:
        case QCOW2_SC_UNALLOC_ALLOC:
            ret = read_backing(bs, pos, n, qiov, done);
            break;
        case QCOW2_SC_ZERO_PLAIN:
        case QCOW2_SC_ZERO_ALLOC:
            iov_memset(qiov, done, 0, n);
            break;
        case QCOW2_SC_NORMAL: {
            IOVector slice;
            iov_init_slice(&slice, qiov, done, n);
            bdrv_debug_event(bs->file, BLKDBG_READ_AIO);
            ret = bdrv_co_preadv(s->data_file, host, n, &slice, 0);
            iov_destroy(&slice);
            break;
        }
        case QCOW2_SC_COMPRESSED: {
            uint64_t in_cluster = qcow2_offset_into_cluster(s, pos);
            ret = read_cluster_part(bs, pos - in_cluster, host, 0, in_cluster, in_cluster + n, qiov,
                                    done);
            break;
        }
        default:
            ret = -EIO;
            break;
        }
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

/*
 * Below this many bytes of copy-on-write, writing the zeroes costs less
 * than the extra file-system call that would make them.  It also keeps
 * the zeroed range 4 KiB aligned wherever a neighbour could share a page:
 * this much COW needs clusters (or, in place, subclusters) of 8 KiB or
 * more.
 */
#define QCOW2_ZERO_COW_MIN (16 * 1024)

/*
 * Whether bytes [@x, @y) of a guest cluster whose old L2 entry is
 * (@entry, @bitmap) read as zeroes: zero subclusters, or unallocated ones
 * with nothing behind them.  Compressed and normal data never qualify.
 */
static bool cow_reads_as_zeroes(BlockDriverState *bs, uint64_t entry, uint64_t bitmap, uint64_t x,
                                uint64_t y)
{
    BDRVQcow2State *s = bs->opaque;
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        return false;
    }
    for (uint64_t pos = x; pos < y; pos = ((pos >> s->subcluster_bits) + 1) << s->subcluster_bits) {
        switch (qcow2_sc_type(s, entry, bitmap, (int)(pos >> s->subcluster_bits))) {
        case QCOW2_SC_ZERO_PLAIN:
        case QCOW2_SC_ZERO_ALLOC:
            break;
        case QCOW2_SC_UNALLOC_PLAIN:
        case QCOW2_SC_UNALLOC_ALLOC:
            if (qcow2_has_backing(bs)) {
                return false;
            }
            break;
        default:
            return false;
        }
    }
    return true;
}

/*
 * When all the old content to keep is zeroes, makes the whole written
 * range read as zeroes in the file (FALLOC_FL_ZERO_RANGE, or a plain
 * fallocate past end of file) and writes only the guest data, as QEMU
 * does: the copy-on-write zeroes are neither built in memory, copied into
 * the page cache nor written back later.  For a 4 KiB write into a fresh
 * 64 KiB cluster that is 1/16 of the dirty data.  The range is exactly the
 * one the single write would cover, so nothing outside this allocation is
 * touched, and both writes happen before the L2 entry is linked (whose
 * cache depends on a flush), so the data-before-metadata order holds.
 * Returns 1 when done, 0 to take the copying path (the file cannot zero
 * a range cheaply, or the case does not qualify), or -errno.
 */
static int coroutine_fn write_zeroed_alloc(BlockDriverState *bs, Qcow2Alloc *a, uint64_t bytes,
                                           IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t last = (uint64_t)(a->nb_clusters - 1) << s->cluster_bits;
    uint64_t start = a->host_offset + a->cow_start.offset;
    uint64_t cow = a->cow_start.bytes + a->cow_end.bytes;

    /* A raw data file must keep its own bytes outside what the guest wrote. */
    if (cow < QCOW2_ZERO_COW_MIN || s->data_file_raw || a->compressed_bytes ||
        !cow_reads_as_zeroes(bs, a->old_first, a->old_first_bitmap, a->cow_start.offset,
                             a->cow_start.offset + a->cow_start.bytes) ||
        !cow_reads_as_zeroes(bs, a->old_last, a->old_last_bitmap, a->cow_end.offset - last,
                             a->cow_end.offset - last + a->cow_end.bytes)) {
        return 0;
    }
    bdrv_debug_event(bs->file, BLKDBG_CLUSTER_ALLOC_SPACE);
    int ret = bdrv_co_pwrite_zeroes(s->data_file, start, cow + bytes, BDRV_REQ_NO_FALLBACK);
    if (ret == -ENOTSUP) {
        return 0;
    }
    if (ret < 0) {
        return ret;
    }
    IOVector slice;
    iov_init_slice(&slice, qiov, qoff, bytes);
    bdrv_debug_event(bs->file, BLKDBG_WRITE_AIO);
    ret = bdrv_co_pwritev(s->data_file, start + a->cow_start.bytes, bytes, &slice, 0);
    iov_destroy(&slice);
    return ret < 0 ? ret : 1;
}

/*
 * Writes the piece that @a allocates: old content of cow_start, @bytes of
 * guest data from @qiov at @qoff, old content of cow_end, in one write
 * (or the zeroes made by the file and the guest data alone, see
 * write_zeroed_alloc).
 */
static int coroutine_fn write_with_cow(BlockDriverState *bs, Qcow2Alloc *a, uint64_t bytes,
                                       IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t last = (uint64_t)(a->nb_clusters - 1) << s->cluster_bits;
    uint8_t *head = NULL, *tail = NULL;
    IOVector v, part;
    int ret = write_zeroed_alloc(bs, a, bytes, qiov, qoff);

    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    iov_init(&v, qiov->niov + 2);
    if (a->cow_start.bytes) {
        head = bdrv_blockalign(bs, a->cow_start.bytes);
        iov_init_buf(&part, head, a->cow_start.bytes);
        bdrv_debug_event(bs->file, BLKDBG_COW_READ);
        ret = read_cluster_part(bs, a->guest_offset, a->old_first, a->old_first_bitmap,
                                a->cow_start.offset, a->cow_start.offset + a->cow_start.bytes,
                                &part, 0);
        iov_add(&v, head, a->cow_start.bytes);
    }
    iov_concat(&v, qiov, qoff, bytes);
    if (ret == 0 && a->cow_end.bytes) {
        uint64_t x = a->cow_end.offset - last;
        tail = bdrv_blockalign(bs, a->cow_end.bytes);
        iov_init_buf(&part, tail, a->cow_end.bytes);
        bdrv_debug_event(bs->file, BLKDBG_COW_READ);
        ret = read_cluster_part(bs, a->guest_offset + last, a->old_last, a->old_last_bitmap, x,
                                x + a->cow_end.bytes, &part, 0);
        iov_add(&v, tail, a->cow_end.bytes);
    }
    if (ret == 0) {
        if (a->cow_start.bytes || a->cow_end.bytes) {
            bdrv_debug_event(bs->file, BLKDBG_COW_WRITE);
        }
        bdrv_debug_event(bs->file, BLKDBG_WRITE_AIO);
        ret = bdrv_co_pwritev(s->data_file, a->host_offset + a->cow_start.offset, v.size, &v, 0);
    }
    iov_destroy(&v);
    free(head);
    free(tail);
    return ret;
}

int coroutine_fn qcow2_co_pwritev_impl(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t done = 0;

    while (done < (uint64_t)bytes) {
        uint64_t n = bytes - done, host;
        Qcow2Alloc a;

        co_mutex_lock(&s->lock);
        int ret = qcow2_alloc_host_offset(bs, offset + done, &n, &host, &a);
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        if (ret == 0) {
            IOVector slice;
            iov_init_slice(&slice, qiov, done, n);
            bdrv_debug_event(bs->file, BLKDBG_WRITE_AIO);
            ret = bdrv_co_pwritev(s->data_file, host, n, &slice, 0);
            iov_destroy(&slice);
        } else {
            ret = write_with_cow(bs, &a, n, qiov, done);
            co_mutex_lock(&s->lock);
            if (ret < 0) {
                qcow2_alloc_abort(bs, &a);
            } else {
                ret = qcow2_alloc_link(bs, &a);
            }
            co_mutex_unlock(&s->lock);
        }
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}
