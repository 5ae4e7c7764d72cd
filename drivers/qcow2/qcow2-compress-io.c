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
 *    refcounts (qcow2_link_compressed).
 *  - As in QEMU, a compressed cluster goes only where the guest cluster has
 *    no host cluster yet: over data, a compressed cluster or an allocated
 *    zero cluster the write fails with -EIO (an incompressible cluster is
 *    an ordinary write and goes anywhere).  The check and the allocation
 *    are one locked section; should another writer's allocation of the
 *    same cluster slip in while qcow2_alloc_compressed waits for it, the
 *    later link replaces and frees it, as concurrent overlapping writes
 *    may end either way.
 *  - With zlib, clusters that a cheap estimate says deflate would not
 *    shrink by 1/64 are written plainly without running deflate (see
 *    zlib_not_worth_it).
 *  - A zero-length request aligns the end of the file to a sector, as QEMU
 *    does after its last compressed write.
 *
 * Locking: takes s->lock itself around allocation and linking only.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
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

/*
 * Deciding without deflate that a cluster is not worth compressing with
 * zlib.  Deflate is at its slowest on random bytes (about 10 MB/s per core
 * here: every position is hashed and searched), and the result is thrown
 * away since it is not smaller: such a cluster is written plainly anyway.
 * Deflate shrinks data in two ways; this estimates both over every byte of
 * the cluster, about 20 times faster than deflate (CPU time):
 *  - an uneven byte distribution: the order-0 entropy of each 4 KiB slice
 *    (a deflate block fits its Huffman code to its own part of the input),
 *    with the Miller-Madow correction so that random slices come out at
 *    8 bits rather than just under;
 *  - repeated strings, only when the entropy leaves the question open:
 *    positions whose next 4 bytes occurred within deflate's window (4 KiB
 *    with window bits 12), found through a table of the last occurrence per
 *    hash bucket, as deflate's fastest level keeps it.  This finds fewer
 *    repeats than deflate, never more than there are.  Each counts as one
 *    byte costing PROBE_MATCH_BITS, less than deflate spends on it, so the
 *    estimate errs towards compressing.
 * Only a cluster estimated to save less than 1/64 of itself is written
 * plainly.  qemu-img would store some of these compressed, when deflate
 * happens to shave off a few bytes; nothing that saves space worth having
 * is lost (text, zeroes among random bytes, repeated patterns compress).
 */
#define PROBE_SLICE      4096
#define PROBE_HASH_BITS  12
#define PROBE_WINDOW     (4096 - 262) /* deflate's farthest match with window bits 12 */
#define PROBE_MATCH_BITS 2
#define PROBE_MIN_SAVING 64 /* run deflate when the estimate saves at least 1/64 */

/* n * log2(n) for the byte counts of one slice. */
static float probe_nlogn[PROBE_SLICE + 1];

static void probe_fill_table(void)
{
    for (int n = 1; n <= PROBE_SLICE; n++) {
        probe_nlogn[n] = (float)(n * log2(n));
    }
}

/*
 * pthread_once rather than g_once_init_enter: glib is not built with TSan,
 * so TSan would not see the ordering its atomics give and report a race.
 */
static void probe_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, probe_fill_table);
}

/* Bits that coding each byte of an @n-byte slice by its frequency takes. */
static double probe_slice_bits(const uint32_t *counts, size_t n)
{
    double sum = 0;
    int used = 0;
    for (int i = 0; i < 256; i++) {
        sum += probe_nlogn[counts[i]];
        used += counts[i] != 0;
    }
    double h = log2((double)n) - sum / n + (used - 1) / (2.0 * n * M_LN2);
    return n * MIN(h, 8.0);
}

/* Positions of @p whose next 4 bytes occurred within deflate's window before. */
static size_t probe_repeats(const uint8_t *p, size_t len)
{
    /* Stored positions are offset by the window, so an empty entry is always too far back. */
    struct {
        uint32_t val, pos;
    } last[1 << PROBE_HASH_BITS] = {0};
    size_t hits = 0;

    /* Every position, with no branch on the outcome: this loop is the probe's cost. */
    for (size_t i = 0; i + 4 <= len; i++) {
        uint32_t v;
        memcpy(&v, p + i, 4);
        uint32_t h = (v * 2654435761u) >> (32 - PROBE_HASH_BITS);
        uint32_t pos = (uint32_t)i + PROBE_WINDOW + 1;
        hits += (last[h].val == v) & (pos - last[h].pos <= PROBE_WINDOW);
        last[h].val = v;
        last[h].pos = pos;
    }
    return hits;
}

/* True when deflate is not expected to save 1/PROBE_MIN_SAVING of @len bytes at @p. */
static bool zlib_not_worth_it(const uint8_t *p, size_t len)
{
    double bits = 0, bar = (double)len * 8 * (1.0 - 1.0 / PROBE_MIN_SAVING);

    probe_init();
    for (size_t start = 0; start < len; start += PROBE_SLICE) {
        size_t n = MIN(PROBE_SLICE, len - start);
        uint32_t counts[256] = {0};
        for (size_t i = start; i < start + n; i++) {
            counts[p[i]]++;
        }
        bits += probe_slice_bits(counts, n);
    }
    if (bits <= bar) {
        return false;
    }
    bits -= probe_repeats(p, len) * (bits / len - PROBE_MATCH_BITS);
    return bits > bar;
}

/* Worker thread: compresses one cluster into less than one cluster. */
static int compress_job(void *opaque)
{
    CompressJob *j = opaque;
    if (j->type == QCOW2_COMPRESSION_ZLIB && zlib_not_worth_it(j->src, j->cluster_size)) {
        return -ENOSPC;
    }
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

/*
 * -EIO when the guest cluster at @offset has a host cluster (data, a
 * compressed stream, or zeroes that kept their cluster), as QEMU refuses
 * compressed writes there: they are meant for fresh images.  Under s->lock.
 */
static int coroutine_fn check_cluster_unallocated(BlockDriverState *bs, uint64_t offset)
{
    uint64_t bytes = 1, host;
    int type = qcow2_get_host_offset(bs, offset, &bytes, &host);
    if (type < 0) {
        return type;
    }
    return type == QCOW2_SC_UNALLOC_PLAIN || type == QCOW2_SC_ZERO_PLAIN ? 0 : -EIO;
}

/* Writes one compressed cluster of @len bytes at guest @offset. */
static int coroutine_fn write_compressed_cluster(BlockDriverState *bs, uint64_t offset,
                                                 const uint8_t *data, uint64_t len)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Alloc a;

    co_mutex_lock(&s->lock);
    int ret = check_cluster_unallocated(bs, offset);
    if (ret == 0) {
        ret = qcow2_alloc_compressed(bs, offset, len, &a);
    }
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
