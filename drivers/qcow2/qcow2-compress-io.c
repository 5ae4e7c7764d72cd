/*
 * qcow2 compressed writes (the co_pwritev_compressed callback).
 *
 * Design notes.
 *  - Whole clusters only: the request starts on a cluster boundary and
 *    covers whole clusters, except that the last cluster of the disk may be
 *    cut short by the disk's end (it is compressed padded with zeroes).
 *  - The clusters of a request are compressed in the calling AioContext's
 *    thread pool, a batch at a time, all of a batch in parallel; several
 *    coroutines writing at once compress in parallel too.  s->lock is not
 *    held while compressing or writing the data.
 *  - A cluster whose data does not shrink below one cluster is written as a
 *    normal allocating write instead.
 *  - A compressed cluster is an allocation like any other (s->allocs): its
 *    bytes are allocated and counted under the lock, written unlocked, and
 *    the L2 entry is switched afterwards, ordered after the data and the
 *    refcounts (qcow2_link_compressed).  Whatever the entry held before
 *    (data, zeroes, another compressed cluster) is replaced and freed.
 *  - A zero-length request aligns the end of the file to a sector, as QEMU
 *    does after its last compressed write.
 *
 * Locking: takes s->lock itself around allocation and linking only.
 */
#include <errno.h>
#include <string.h>

#include "aio/thread-pool.h"
#include "drivers/qcow2/qcow2.h"

/* Clusters compressed at once per request. */
#define COMPRESS_BATCH 8

typedef struct CompressBatch CompressBatch;

typedef struct CompressJob {
    int type;
    const uint8_t *src;
    uint8_t *dest;
    size_t cluster_size;
    int ret; /* compressed length, -ENOSPC when it did not shrink, -EIO */
    CompressBatch *batch;
} CompressJob;

struct CompressBatch {
    Coroutine *co;
    int pending;
    bool waiting;
};

/* Worker thread: compresses one cluster into less than one cluster. */
static int compress_job(void *opaque)
{
    CompressJob *j = opaque;
    ssize_t n = qcow2_compress(j->type, j->dest, j->cluster_size - 1, j->src, j->cluster_size);
    return (int)n;
}

/* The submitting context's thread: one job done; the last one wakes the writer. */
static void compress_done(void *opaque, int ret)
{
    CompressJob *j = opaque;
    CompressBatch *b = j->batch;
    j->ret = ret;
    if (--b->pending == 0 && b->waiting) {
        aio_co_wake(b->co);
    }
}

/* Writes one compressed cluster of @len bytes at guest @offset. */
static int coroutine_fn write_compressed_cluster(BlockDriverState *bs, uint64_t offset,
                                                 const uint8_t *data, uint64_t len)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Alloc a;

    co_mutex_lock(&s->lock);
    int ret = qcow2_alloc_compressed(bs, offset, len, &a);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    ret = bdrv_co_pwrite(bs->file, a.host_offset, len, data, 0);
    co_mutex_lock(&s->lock);
    if (ret < 0) {
        qcow2_abort_compressed(bs, &a);
    } else {
        ret = qcow2_link_compressed(bs, &a);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* Rounds the file's end up to a whole sector (readers fetch whole sectors of compressed data). */
static int coroutine_fn align_file_end(BlockDriverState *bs)
{
    int64_t len = bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        return len;
    }
    if (len % BDRV_SECTOR_SIZE == 0) {
        return 0;
    }
    return bdrv_co_truncate(bs->file, qcow2_round_up(len, BDRV_SECTOR_SIZE), false,
                            PREALLOC_MODE_OFF, 0, NULL);
}

/*
 * Compresses and writes @n clusters of the request: guest [@offset, @offset
 * + @bytes) taken from @qiov at @qoff.
 */
static int coroutine_fn write_batch(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                    IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    int n = (int)qcow2_size_to_clusters(s, bytes);
    uint8_t *src = g_malloc0(n * cs);
    uint8_t *dest = g_malloc(n * cs);
    CompressJob jobs[COMPRESS_BATCH];
    CompressBatch batch = {.co = co_self(), .pending = n};
    ThreadPool *pool = aio_get_thread_pool(aio_get_current());
    int ret = 0;

    iov_to_buf(qiov, qoff, src, bytes); /* a short last cluster stays zero-padded */
    for (int i = 0; i < n; i++) {
        jobs[i] = (CompressJob){.type = s->compression_type,
                                .src = src + i * cs,
                                .dest = dest + i * cs,
                                .cluster_size = cs,
                                .batch = &batch};
        thread_pool_submit(pool, compress_job, &jobs[i], compress_done, &jobs[i]);
    }
    while (batch.pending) {
        batch.waiting = true;
        co_yield();
        batch.waiting = false;
    }
    for (int i = 0; i < n && ret == 0; i++) {
        uint64_t off = offset + i * cs;
        uint64_t len = MIN(cs, offset + bytes - off);
        if (jobs[i].ret == -ENOSPC) {
            /* Incompressible: an ordinary write of the guest bytes. */
            IOVector slice;
            iov_init_slice(&slice, qiov, qoff + i * cs, len);
            ret = qcow2_co_pwritev_impl(bs, off, len, &slice);
            iov_destroy(&slice);
        } else if (jobs[i].ret < 0) {
            ret = jobs[i].ret;
        } else {
            ret = write_compressed_cluster(bs, off, jobs[i].dest, jobs[i].ret);
        }
    }
    g_free(src);
    g_free(dest);
    return ret;
}

int coroutine_fn qcow2_co_pwritev_compressed_impl(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, IOVector *qiov)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    int ret = 0;

    if (s->has_data_file) {
        return -ENOTSUP;
    }
    if (bytes == 0) {
        return align_file_end(bs);
    }
    co_mutex_lock(&s->lock);
    uint64_t disk_size = s->size;
    co_mutex_unlock(&s->lock);
    if (qcow2_offset_into_cluster(s, offset) ||
        (qcow2_offset_into_cluster(s, bytes) && (uint64_t)(offset + bytes) != disk_size)) {
        return -EINVAL;
    }
    for (uint64_t done = 0; done < (uint64_t)bytes && ret == 0;) {
        uint64_t n = MIN((uint64_t)bytes - done, COMPRESS_BATCH * cs);
        ret = write_batch(bs, offset + done, n, qiov, done);
        done += n;
    }
    return ret;
}
