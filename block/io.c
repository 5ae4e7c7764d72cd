/*
 * The request path: reads, writes, write-zeroes, discard, flush, truncate
 * and length on a node, from any thread, in the caller's AioContext.
 *
 * Design notes:
 *  - A request first passes bounds checks, then is counted in the node's
 *    in_flight (what drain waits for), then is aligned to
 *    bl.request_alignment: reads get their head and tail padded with a
 *    bounce buffer, writes do read-modify-write of the partial blocks.
 *  - Read-modify-write must not interleave with another write to the same
 *    block, or one of them is lost.  Nodes that can need it (alignment
 *    above 1, or copy-on-read) track every write in a per-node list under
 *    reqs_lock; a request marked serialising waits for every earlier
 *    overlapping tracked request, and any request waits for an earlier
 *    overlapping serialising one.  "Earlier" means inserted before, so
 *    waits never form a cycle.  Waiters yield; the finishing request
 *    wakes them with aio_co_wake, in their own context.
 *  - Aligned requests are split to bl.max_transfer before the driver.
 *  - Compressed writes (BDRV_REQ_WRITE_COMPRESSED) take the write path
 *    (tracking, bitmaps, write generation) but reach the driver whole and
 *    unpadded; the VM state area has its own entry points, bounded by
 *    nothing but the request limits (the driver knows where it lies).
 *  - Nothing here takes a global lock: the node's limits and flags only
 *    change inside drained sections, and the graph reader lock (held by
 *    the caller) keeps the children in place.
 */
#include "block/block-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Largest end offset a request may reach; aligned ends never overflow. */
#define BDRV_MAX_LENGTH (INT64_MAX & ~((int64_t)(1 << 30) - 1))
/* Bounce size for the write-zeroes fallback and copy-on-read. */
#define BDRV_BOUNCE_MAX (1 << 20)

struct BdrvTrackedRequest {
    BlockDriverState *bs;
    int64_t offset;
    int64_t bytes;
    bool serialising;
    GSList *waiters; /* Coroutine * waiting for this one to end; under reqs_lock */
    BdrvTrackedRequest *prev, *next;
};

/* ---- helpers for drivers -------------------------------------------------- */

void bdrv_inc_in_flight(BlockDriverState *bs)
{
    bdrv_in_flight_begin(&bs->shards[bdrv_shard_index()].in_flight);
}

void bdrv_dec_in_flight(BlockDriverState *bs)
{
    bdrv_in_flight_end(&bs->shards[bdrv_shard_index()].in_flight);
    bdrv_kick_drain_waiters();
}

uint64_t bdrv_get_in_flight(BlockDriverState *bs)
{
    return bdrv_in_flight_count(&bs->shards[0].in_flight, sizeof(BdrvNodeShard));
}

/* A write (or discard, truncate) completed: the next flush has work to do. */
static void bdrv_bump_write_gen(BlockDriverState *bs)
{
    bdrv_shard_add(&bs->shards[bdrv_shard_index()].write_gen, 1);
}

/*
 * The node's write generation: the number of completed writes, summed
 * from per-thread slots.  Not a snapshot, but enough for flush: it counts
 * every write that completed before the call, and a flush that loads
 * flushed_gen (stored by an earlier flush after its own sum) before
 * summing reads every slot at least as far as that flush did.  Equal
 * values therefore mean equal slots: every write this sum counts was
 * counted, and so flushed, by that earlier flush.
 */
static uint64_t bdrv_write_gen(BlockDriverState *bs)
{
    return bdrv_shard_sum(&bs->shards[0].write_gen, sizeof(BdrvNodeShard));
}

void *bdrv_blockalign(BlockDriverState *bs, size_t size)
{
    size_t align = MAX(MAX(bs->bl.opt_mem_alignment, bs->bl.min_mem_alignment), 64);
    void *p;
    if (posix_memalign(&p, align, MAX(size, 1)) != 0) {
        g_error("out of memory allocating %zu bytes", size);
    }
    return p;
}

void *bdrv_blockalign0(BlockDriverState *bs, size_t size)
{
    return memset(bdrv_blockalign(bs, size), 0, size);
}

static int64_t align_down(int64_t x, int64_t a)
{
    return x - (x % a);
}

/* The largest piece the driver accepts in one read or write, aligned. */
static int64_t bdrv_max_transfer(BlockDriverState *bs)
{
    int64_t max = bs->bl.max_transfer ? bs->bl.max_transfer : BDRV_REQUEST_MAX_BYTES;
    int64_t align = bs->bl.request_alignment;
    max = MIN(max, BDRV_REQUEST_MAX_BYTES);
    /* A power of two (refresh_limits asserts it): a mask, not a division per request. */
    return MAX(max & ~(align - 1), align);
}

/* -EINVAL unless [offset, offset + bytes) is a sane range (and not too big with @limit). */
static int bdrv_check_request(int64_t offset, int64_t bytes, bool limit)
{
    if (offset < 0 || bytes < 0 || offset > BDRV_MAX_LENGTH - bytes) {
        return -EINVAL;
    }
    if (limit && bytes > BDRV_REQUEST_MAX_BYTES) {
        return -EINVAL;
    }
    return 0;
}

/* ---- tracked requests -------------------------------------------------------- */

static bool bdrv_tracks_writes(BlockDriverState *bs)
{
    return bs->bl.request_alignment > 1 || (bs->open_flags & BDRV_O_COPY_ON_READ);
}

static void tracked_request_begin(BdrvTrackedRequest *req, BlockDriverState *bs, int64_t offset,
                                  int64_t bytes, bool serialising)
{
    *req = (BdrvTrackedRequest){
        .bs = bs, .offset = offset, .bytes = bytes, .serialising = serialising};
    pthread_mutex_lock(&bs->reqs_lock);
    req->next = bs->tracked_reqs;
    if (req->next) {
        req->next->prev = req;
    }
    bs->tracked_reqs = req;
    pthread_mutex_unlock(&bs->reqs_lock);
}

static bool tracked_overlap(BdrvTrackedRequest *a, BdrvTrackedRequest *b)
{
    return a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
}

/* Yields until no earlier request conflicting with @req is left. */
static void coroutine_fn tracked_request_wait(BdrvTrackedRequest *req)
{
    BlockDriverState *bs = req->bs;
    for (;;) {
        BdrvTrackedRequest *r;
        pthread_mutex_lock(&bs->reqs_lock);
        /* The list is newest first: everything after @req came before it. */
        for (r = req->next; r; r = r->next) {
            if ((r->serialising || req->serialising) && tracked_overlap(r, req)) {
                break;
            }
        }
        if (!r) {
            pthread_mutex_unlock(&bs->reqs_lock);
            return;
        }
        r->waiters = g_slist_prepend(r->waiters, co_self());
        pthread_mutex_unlock(&bs->reqs_lock);
        /* tracked_request_end's wake-up reaches us only after this yield. */
        co_yield();
    }
}

static void tracked_request_end(BdrvTrackedRequest *req)
{
    BlockDriverState *bs = req->bs;
    pthread_mutex_lock(&bs->reqs_lock);
    if (req->prev) {
        req->prev->next = req->next;
    } else {
        bs->tracked_reqs = req->next;
    }
    if (req->next) {
        req->next->prev = req->prev;
    }
    GSList *waiters = req->waiters;
    req->waiters = NULL;
    pthread_mutex_unlock(&bs->reqs_lock);

    for (GSList *l = waiters; l; l = l->next) {
        aio_co_wake(l->data);
    }
    g_slist_free(waiters);
}

/* ---- length ----------------------------------------------------------------- */

int64_t coroutine_fn bdrv_co_getlength(BlockDriverState *bs)
{
    IO_CODE();
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    int64_t len = atomic_load_explicit(&bs->total_bytes, memory_order_relaxed);
    if (len >= 0 && !bs->drv->has_variable_length) {
        return len;
    }
    if (bs->drv->co_getlength) {
        len = bs->drv->co_getlength(bs);
    } else if (bs->drv->is_filter && bs->file) {
        len = bdrv_co_getlength(bs->file->bs);
    } else {
        len = -ENOTSUP;
    }
    if (len >= 0) {
        atomic_store(&bs->total_bytes, len);
    }
    return len;
}

int64_t coroutine_fn bdrv_co_get_allocated_file_size(BlockDriverState *bs)
{
    IO_CODE();
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (bs->drv->co_get_allocated_file_size) {
        return bs->drv->co_get_allocated_file_size(bs);
    }
    if (bs->file) {
        return bdrv_co_get_allocated_file_size(bs->file->bs);
    }
    return -ENOTSUP;
}

/* A write reached @end on a growable protocol: the cached length follows. */
static void bdrv_note_write_end(BlockDriverState *bs, int64_t end)
{
    int64_t cur = atomic_load(&bs->total_bytes);
    while (cur >= 0 && end > cur && !atomic_compare_exchange_weak(&bs->total_bytes, &cur, end)) {
    }
}

/* ---- reads ------------------------------------------------------------------- */

static int coroutine_fn bdrv_driver_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           IOVector *qiov, BdrvRequestFlags flags)
{
    int64_t max = bdrv_max_transfer(bs);
    flags &= BDRV_REQ_PREFETCH;
    if (!bs->drv->co_preadv) {
        return -ENOTSUP;
    }
    if (bytes <= max) {
        return bs->drv->co_preadv(bs, offset, bytes, qiov, flags);
    }
    for (int64_t done = 0; done < bytes;) {
        int64_t n = MIN(max, bytes - done);
        IOVector slice;
        iov_init_slice(&slice, qiov, done, n);
        int ret = bs->drv->co_preadv(bs, offset + done, n, &slice, flags);
        iov_destroy(&slice);
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

static int coroutine_fn bdrv_driver_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            IOVector *qiov, BdrvRequestFlags flags);

/*
 * Reads what the backing chain shows for an unallocated range and stores
 * it in @bs, so the next read is served by @bs itself.
 */
static int coroutine_fn bdrv_copy_on_read_piece(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                                IOVector *qiov, size_t qoff)
{
    int64_t chunk = MIN(bytes, MIN(BDRV_BOUNCE_MAX, bdrv_max_transfer(bs)));
    void *buf = bdrv_blockalign(bs, chunk);
    int ret = 0;

    for (int64_t done = 0; done < bytes && ret == 0; done += chunk) {
        int64_t n = MIN(chunk, bytes - done);
        IOVector v;
        iov_init_buf(&v, buf, n);
        ret = bs->drv->co_preadv(bs, offset + done, n, &v, 0);
        if (ret == 0) {
            ret = bdrv_driver_pwritev(bs, offset + done, n, &v, BDRV_REQ_WRITE_UNCHANGED);
        }
        if (ret == 0) {
            iov_from_buf(qiov, qoff + done, buf, n);
        }
    }
    free(buf);
    return ret;
}

/* Copy-on-read: serves allocated parts normally, copies up the rest. */
static int coroutine_fn bdrv_co_do_copy_on_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                                IOVector *qiov)
{
    for (int64_t done = 0; done < bytes;) {
        int64_t pnum;
        int ret = bdrv_co_is_allocated(bs, offset + done, bytes - done, &pnum);
        if (ret < 0) {
            return ret;
        }
        pnum = MAX(MIN(pnum, bytes - done), MIN((int64_t)bs->bl.request_alignment, bytes - done));
        if (ret) {
            IOVector slice;
            iov_init_slice(&slice, qiov, done, pnum);
            ret = bdrv_driver_preadv(bs, offset + done, pnum, &slice, 0);
            iov_destroy(&slice);
        } else {
            ret = bdrv_copy_on_read_piece(bs, offset + done, pnum, qiov, done);
        }
        if (ret < 0) {
            return ret;
        }
        done += pnum;
    }
    return 0;
}

/* Pads [*offset, *offset + *bytes) out to whole blocks of the node's alignment. */
typedef struct BdrvPad {
    uint8_t *buf;      /* head block, then tail block (one block if they coincide) */
    uint8_t *tail_buf; /* the last block's bounce */
    int64_t align;
    int64_t head; /* bytes of the first block before the request */
    int64_t tail; /* bytes of the last block after the request */
    bool one_block;
    IOVector local; /* [head pad][caller's data][tail pad] */
} BdrvPad;

static bool bdrv_pad_init(BlockDriverState *bs, int64_t *offset, int64_t *bytes, IOVector *qiov,
                          BdrvPad *pad)
{
    int64_t align = bs->bl.request_alignment;
    int64_t end = *offset + *bytes;

    if (align == 1) {
        return false; /* spares the two divisions on byte-granular nodes */
    }
    pad->align = align;
    pad->head = *offset % align;
    pad->tail = (end % align) ? align - end % align : 0;
    if (!pad->head && !pad->tail) {
        return false;
    }
    int64_t aoff = *offset - pad->head;
    int64_t aend = end + pad->tail;
    pad->one_block = aend - aoff == align;
    int nblocks = pad->one_block ? 1 : (pad->head ? 1 : 0) + (pad->tail ? 1 : 0);
    pad->buf = bdrv_blockalign(bs, nblocks * align);
    pad->tail_buf = pad->buf + (nblocks - 1) * align;

    iov_init(&pad->local, (qiov ? qiov->niov : 0) + 2);
    iov_add(&pad->local, pad->buf, pad->head);
    if (qiov) {
        iov_concat(&pad->local, qiov, 0, qiov->size);
    }
    iov_add(&pad->local, pad->tail_buf + align - pad->tail, pad->tail);
    *offset = aoff;
    *bytes = aend - aoff;
    return true;
}

static void bdrv_pad_destroy(BdrvPad *pad)
{
    iov_destroy(&pad->local);
    free(pad->buf);
}

static int coroutine_fn bdrv_aligned_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            IOVector *qiov, BdrvRequestFlags flags)
{
    if ((bs->open_flags & BDRV_O_COPY_ON_READ) && bs->backing && !bdrv_is_read_only(bs) &&
        !(flags & BDRV_REQ_PREFETCH)) {
        BdrvTrackedRequest req;
        tracked_request_begin(&req, bs, offset, bytes, true);
        tracked_request_wait(&req);
        int ret = bdrv_co_do_copy_on_read(bs, offset, bytes, qiov);
        tracked_request_end(&req);
        return ret;
    }
    return bdrv_driver_preadv(bs, offset, bytes, qiov, flags);
}

int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset, int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags)
{
    IO_CODE();
    BlockDriverState *bs = child->bs;
    int ret = bdrv_check_request(offset, bytes, true);

    if (ret < 0 || !qiov || qiov->size != (size_t)bytes) {
        return -EINVAL;
    }
    if (!bs || !bs->drv) {
        return -ENOMEDIUM;
    }
    if (!bs->drv->is_protocol) {
        int64_t len = bdrv_co_getlength(bs);
        if (len < 0) {
            return len;
        }
        if (offset + bytes > len) {
            return -EIO;
        }
    }
    if (bytes == 0) {
        return 0;
    }

    bdrv_inc_in_flight(bs);
    BdrvPad pad;
    if (bdrv_pad_init(bs, &offset, &bytes, qiov, &pad)) {
        ret = bdrv_aligned_preadv(bs, offset, bytes, &pad.local, flags);
        bdrv_pad_destroy(&pad);
    } else {
        ret = bdrv_aligned_preadv(bs, offset, bytes, qiov, flags);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_pread(BdrvChild *child, int64_t offset, int64_t bytes, void *buf,
                               BdrvRequestFlags flags)
{
    IOVector v;
    iov_init_buf(&v, buf, bytes < 0 ? 0 : bytes);
    return bdrv_co_preadv(child, offset, bytes, &v, flags);
}

/* ---- writes ------------------------------------------------------------------- */

static int coroutine_fn bdrv_driver_pwritev_one(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                                IOVector *qiov, BdrvRequestFlags flags)
{
    if (!bs->drv->co_pwritev) {
        return -ENOTSUP;
    }
    int ret = bs->drv->co_pwritev(bs, offset, bytes, qiov, flags & bs->supported_write_flags);
    if (ret == 0 && (flags & BDRV_REQ_FUA) && !(bs->supported_write_flags & BDRV_REQ_FUA)) {
        /* Count the write as done now, or the flush would think there is nothing to do. */
        bdrv_bump_write_gen(bs);
        ret = bdrv_co_flush(bs);
    }
    return ret;
}

static int coroutine_fn bdrv_driver_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            IOVector *qiov, BdrvRequestFlags flags)
{
    int64_t max = bdrv_max_transfer(bs);
    if (bytes <= max) {
        return bdrv_driver_pwritev_one(bs, offset, bytes, qiov, flags);
    }
    for (int64_t done = 0; done < bytes;) {
        int64_t n = MIN(max, bytes - done);
        IOVector slice;
        iov_init_slice(&slice, qiov, done, n);
        int ret = bdrv_driver_pwritev_one(bs, offset + done, n, &slice, flags);
        iov_destroy(&slice);
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

/* Writes zeroes from a bounce buffer, when the driver cannot zero a range itself. */
static int coroutine_fn bdrv_zero_fallback(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           BdrvRequestFlags flags)
{
    int64_t chunk = MIN(bytes, MIN(BDRV_BOUNCE_MAX, bdrv_max_transfer(bs)));
    void *buf = bdrv_blockalign0(bs, chunk);
    int ret = 0;
    for (int64_t done = 0; done < bytes && ret == 0; done += chunk) {
        IOVector v;
        iov_init_buf(&v, buf, MIN(chunk, bytes - done));
        ret = bdrv_driver_pwritev(bs, offset + done, v.size, &v, flags & BDRV_REQ_FUA);
    }
    free(buf);
    return ret;
}

/* Zeroes an aligned range: the driver's fast path where it can, else a buffer of zeroes. */
static int coroutine_fn bdrv_co_do_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                 int64_t bytes, BdrvRequestFlags flags)
{
    int64_t zalign = MAX(bs->bl.pwrite_zeroes_alignment, bs->bl.request_alignment);
    int64_t max = bs->bl.max_pwrite_zeroes ? bs->bl.max_pwrite_zeroes : INT32_MAX;
    bool need_flush = false;
    int ret = 0;

    max = MAX(align_down(max, zalign), zalign);
    while (bytes > 0 && ret == 0) {
        int64_t num = bytes;
        if (offset % zalign) {
            num = MIN(bytes, zalign - offset % zalign);
        } else if (num > zalign && (offset + num) % zalign) {
            num -= (offset + num) % zalign;
        }
        num = MIN(num, max);

        ret = -ENOTSUP;
        if (bs->drv->co_pwrite_zeroes && !(offset % zalign) && !(num % zalign)) {
            ret = bs->drv->co_pwrite_zeroes(bs, offset, num, flags & bs->supported_zero_flags);
            need_flush |=
                ret == 0 && (flags & BDRV_REQ_FUA) && !(bs->supported_zero_flags & BDRV_REQ_FUA);
        }
        if (ret == -ENOTSUP && !(flags & BDRV_REQ_NO_FALLBACK)) {
            ret = bdrv_zero_fallback(bs, offset, num, flags);
        }
        offset += num;
        bytes -= num;
    }
    if (ret == 0 && need_flush) {
        bdrv_bump_write_gen(bs);
        ret = bdrv_co_flush(bs);
    }
    return ret;
}

/*
 * Writing a recognisable header into sector 0 of an image whose format was
 * only guessed as raw would make the next open see another format (and,
 * say, follow a backing file name chosen by the guest).  Refuse it.
 */
static bool bdrv_probe_guard_refuses(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     IOVector *qiov)
{
    uint8_t sector[BDRV_SECTOR_SIZE];
    if (!bs->probed || offset >= BDRV_SECTOR_SIZE || !qiov) {
        return false;
    }
    /* refresh_limits makes probed nodes 512-aligned, so sector 0 is whole here. */
    g_assert(offset == 0 && bytes >= BDRV_SECTOR_SIZE);
    iov_to_buf(qiov, 0, sector, sizeof(sector));
    return bdrv_probe_matches_other_format(sector, sizeof(sector));
}

/*
 * A compressed write goes to the driver whole: it decides which offsets
 * and lengths it can compress (qcow2: whole clusters, the disk's last one
 * may be short; 0 bytes aligns its file's end).  FUA flushes afterwards.
 */
static int coroutine_fn bdrv_driver_pwritev_compressed(BlockDriverState *bs, int64_t offset,
                                                       int64_t bytes, IOVector *qiov,
                                                       BdrvRequestFlags flags)
{
    if (!bs->drv->co_pwritev_compressed) {
        return -ENOTSUP;
    }
    int ret = bs->drv->co_pwritev_compressed(bs, offset, bytes, qiov);
    if (ret == 0 && (flags & BDRV_REQ_FUA)) {
        bdrv_bump_write_gen(bs);
        ret = bdrv_co_flush(bs);
    }
    return ret;
}

static int coroutine_fn bdrv_aligned_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                             IOVector *qiov, BdrvRequestFlags flags)
{
    int ret;
    if (flags & BDRV_REQ_ZERO_WRITE) {
        ret = bdrv_co_do_pwrite_zeroes(bs, offset, bytes, flags);
    } else if (flags & BDRV_REQ_WRITE_COMPRESSED) {
        ret = bdrv_driver_pwritev_compressed(bs, offset, bytes, qiov, flags);
    } else if (bdrv_probe_guard_refuses(bs, offset, bytes, qiov)) {
        ret = -EPERM;
    } else {
        ret = bdrv_driver_pwritev(bs, offset, bytes, qiov, flags);
    }
    if (ret == 0) {
        bdrv_bump_write_gen(bs);
        if (bs->drv->is_protocol) {
            bdrv_note_write_end(bs, offset + bytes);
        }
    }
    return ret;
}

/* Read-modify-write of the partial first/last blocks, then one aligned write. */
static int coroutine_fn bdrv_padded_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            BdrvPad *pad, BdrvRequestFlags flags)
{
    int64_t align = pad->align;
    IOVector v;
    int ret = 0;

    /* Plain driver reads: a copy-on-read here would wait for our own tracked request. */
    if (pad->head) {
        iov_init_buf(&v, pad->buf, align);
        ret = bdrv_driver_preadv(bs, offset, align, &v, 0);
    }
    if (ret == 0 && pad->tail && !(pad->one_block && pad->head)) {
        iov_init_buf(&v, pad->tail_buf, align);
        ret = bdrv_driver_preadv(bs, offset + bytes - align, align, &v, 0);
    }
    if (ret < 0) {
        return ret;
    }
    if (!(flags & BDRV_REQ_ZERO_WRITE)) {
        return bdrv_aligned_pwritev(bs, offset, bytes, &pad->local, flags);
    }

    /* Write-zeroes: zero the caller's part of the edge blocks and write them. */
    int64_t head_len = pad->one_block ? align - pad->head - pad->tail : align - pad->head;
    flags &= ~(BDRV_REQ_ZERO_WRITE | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK);
    if (pad->head || pad->one_block) {
        memset(pad->buf + pad->head, 0, head_len);
        iov_init_buf(&v, pad->buf, align);
        ret = bdrv_aligned_pwritev(bs, offset, align, &v, flags);
        if (ret < 0 || pad->one_block) {
            return ret;
        }
        offset += align;
        bytes -= align;
    }
    if (pad->tail) {
        bytes -= align;
        memset(pad->tail_buf, 0, align - pad->tail);
        iov_init_buf(&v, pad->tail_buf, align);
        ret = bdrv_aligned_pwritev(bs, offset + bytes, align, &v, flags);
    }
    if (ret == 0 && bytes > 0) {
        ret = bdrv_co_do_pwrite_zeroes(bs, offset, bytes, flags | BDRV_REQ_ZERO_WRITE);
    }
    return ret;
}

/* Common body of writes and write-zeroes, once checked and counted in flight. */
static int coroutine_fn bdrv_co_do_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           IOVector *qiov, BdrvRequestFlags flags)
{
    BdrvTrackedRequest req;
    BdrvPad pad;
    bool padded = bdrv_pad_init(bs, &offset, &bytes, qiov, &pad);
    bool track = padded || bdrv_tracks_writes(bs);
    int ret;

    if (track) {
        tracked_request_begin(&req, bs, offset, bytes, padded);
        tracked_request_wait(&req);
    }
    if (padded) {
        ret = bdrv_padded_pwritev(bs, offset, bytes, &pad, flags);
        bdrv_pad_destroy(&pad);
    } else {
        ret = bdrv_aligned_pwritev(bs, offset, bytes, qiov, flags);
    }
    bdrv_dirty_bitmaps_mark(bs, offset, bytes); /* jobs hook: dirty bitmaps */
    if (track) {
        tracked_request_end(&req);
    }
    return ret;
}

/* Checks shared by everything that modifies a node through @child. */
static int bdrv_check_writable(BdrvChild *child, int64_t offset, int64_t bytes, bool limit)
{
    BlockDriverState *bs = child->bs;
    int ret = bdrv_check_request(offset, bytes, limit);
    if (ret < 0) {
        return ret;
    }
    if (!bs || !bs->drv) {
        return -ENOMEDIUM;
    }
    if (bdrv_is_read_only(bs) || !(child->perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED))) {
        return -EPERM;
    }
    return 0;
}

int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset, int64_t bytes, IOVector *qiov,
                                 BdrvRequestFlags flags)
{
    IO_CODE();
    BlockDriverState *bs = child->bs;
    bool zero = flags & BDRV_REQ_ZERO_WRITE;
    int ret = bdrv_check_writable(child, offset, bytes, !zero);

    if (ret < 0) {
        return ret;
    }
    if (!zero && (!qiov || qiov->size != (size_t)bytes)) {
        return -EINVAL;
    }
    if (!bs->drv->is_protocol) {
        int64_t len = bdrv_co_getlength(bs);
        if (len < 0) {
            return len;
        }
        if (offset + bytes > len) {
            return -EIO;
        }
    }
    if (flags & BDRV_REQ_WRITE_COMPRESSED) {
        if (zero) {
            return -EINVAL;
        }
        /* Compressed data cannot be read-modify-written: no padding. */
        if ((offset | bytes) & (bs->bl.request_alignment - 1)) {
            return -EINVAL;
        }
    } else if (bytes == 0) {
        return 0;
    }
    bdrv_inc_in_flight(bs);
    ret = bdrv_co_do_pwritev(bs, offset, bytes, zero ? NULL : qiov, flags);
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_pwrite(BdrvChild *child, int64_t offset, int64_t bytes, const void *buf,
                                BdrvRequestFlags flags)
{
    IOVector v;
    iov_init_buf(&v, (void *)buf, bytes < 0 ? 0 : bytes);
    return bdrv_co_pwritev(child, offset, bytes, &v, flags);
}

int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes,
                                       BdrvRequestFlags flags)
{
    IO_CODE();
    if (child->bs && !(child->bs->open_flags & BDRV_O_UNMAP)) {
        flags &= ~BDRV_REQ_MAY_UNMAP;
    }
    return bdrv_co_pwritev(child, offset, bytes, NULL, flags | BDRV_REQ_ZERO_WRITE);
}

/* ---- VM state area -------------------------------------------------------------- */

/*
 * The VM state area is addressed apart from the disk (@offset 0 is its
 * start), so the disk length does not bound it.  A node without the
 * callbacks passes the request to its primary child (a filter's or raw's
 * file); a protocol without them has no such area: -ENOTSUP.
 */
static int coroutine_fn bdrv_co_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, bool write)
{
    int ret = bdrv_check_request(offset, bytes, true);
    if (ret < 0) {
        return ret;
    }
    if (!bs || !bs->drv) {
        return -ENOMEDIUM;
    }
    if (!qiov || qiov->size != (size_t)bytes) {
        return -EINVAL;
    }
    if (write && bdrv_is_read_only(bs)) {
        return -EPERM;
    }
    bdrv_inc_in_flight(bs);
    if (write ? bs->drv->co_pwritev_vmstate : bs->drv->co_preadv_vmstate) {
        ret = write ? bs->drv->co_pwritev_vmstate(bs, offset, bytes, qiov)
                    : bs->drv->co_preadv_vmstate(bs, offset, bytes, qiov);
    } else if (bs->file) {
        ret = bdrv_co_vmstate(bs->file->bs, offset, bytes, qiov, write);
    } else {
        ret = -ENOTSUP;
    }
    if (write) {
        bdrv_bump_write_gen(bs); /* even after a failure: something may have changed */
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_preadv_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov)
{
    IO_CODE();
    return bdrv_co_vmstate(bs, offset, bytes, qiov, false);
}

int coroutine_fn bdrv_co_pwritev_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov)
{
    IO_CODE();
    return bdrv_co_vmstate(bs, offset, bytes, qiov, true);
}

/* ---- discard ------------------------------------------------------------------ */

int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes)
{
    IO_CODE();
    BlockDriverState *bs = child->bs;
    int ret = bdrv_check_writable(child, offset, bytes, false);

    if (ret < 0) {
        return ret;
    }
    if (!(bs->open_flags & BDRV_O_UNMAP) || !bs->drv->co_pdiscard) {
        return 0;
    }
    /* Only whole granules can be dropped; the partial edges stay as they are. */
    int64_t align = MAX(bs->bl.pdiscard_alignment, bs->bl.request_alignment);
    int64_t start = align_down(offset + align - 1, align);
    int64_t end = align_down(offset + bytes, align);
    int64_t max = bs->bl.max_pdiscard ? bs->bl.max_pdiscard : INT32_MAX;
    max = MAX(align_down(max, align), align);
    if (start >= end) {
        return 0;
    }

    bdrv_inc_in_flight(bs);
    BdrvTrackedRequest req;
    bool track = bdrv_tracks_writes(bs);
    if (track) {
        tracked_request_begin(&req, bs, start, end - start, false);
        tracked_request_wait(&req);
    }
    for (int64_t off = start; off < end && ret == 0; off += max) {
        ret = bs->drv->co_pdiscard(bs, off, MIN(max, end - off));
        if (ret == -ENOTSUP) {
            ret = 0;
        }
    }
    bdrv_bump_write_gen(bs);
    bdrv_dirty_bitmaps_mark(bs, start, end - start); /* jobs hook: dirty bitmaps */
    if (track) {
        tracked_request_end(&req);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---- flush ---------------------------------------------------------------------- */

int coroutine_fn bdrv_co_flush(BlockDriverState *bs)
{
    IO_CODE();
    int ret = 0;

    if (!bs || !bs->drv) {
        return 0;
    }
    bdrv_inc_in_flight(bs);
    /* flushed_gen first: see bdrv_write_gen. */
    uint64_t flushed = atomic_load(&bs->flushed_gen);
    uint64_t gen = bdrv_write_gen(bs);
    bool dirty = gen != flushed;

    if (dirty && bs->drv->co_flush_to_os) {
        ret = bs->drv->co_flush_to_os(bs);
    }
    for (GList *l = bs->children; l && ret == 0; l = l->next) {
        BdrvChild *c = l->data;
        if (c->perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED)) {
            ret = bdrv_co_flush(c->bs);
        }
    }
    if (ret == 0 && dirty && !(bs->open_flags & BDRV_O_NO_FLUSH) && bs->drv->co_flush_to_disk) {
        ret = bs->drv->co_flush_to_disk(bs);
    }
    if (ret == 0) {
        uint64_t cur = atomic_load(&bs->flushed_gen);
        while (cur < gen && !atomic_compare_exchange_weak(&bs->flushed_gen, &cur, gen)) {
        }
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---- truncate ------------------------------------------------------------------- */

static int bdrv_truncate_check(BdrvChild *child, int64_t offset, GError **errp)
{
    BlockDriverState *bs = child->bs;
    if (offset < 0 || offset > BDRV_MAX_LENGTH) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Invalid image size %" PRId64, offset);
        return -EINVAL;
    }
    if (!bs || !bs->drv) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NODEV, "No medium inserted");
        return -ENOMEDIUM;
    }
    if (bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ACCES, "Image is read-only");
        return -EACCES;
    }
    if (!(child->perm & BLK_PERM_RESIZE)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                    "The user of node '%s' does not hold the 'resize' permission", bs->node_name);
        return -EPERM;
    }
    return 0;
}

int coroutine_fn bdrv_co_truncate(BdrvChild *child, int64_t offset, bool exact,
                                  PreallocMode prealloc, BdrvRequestFlags flags, GError **errp)
{
    IO_CODE();
    BlockDriverState *bs = child->bs;
    int ret = bdrv_truncate_check(child, offset, errp);
    if (ret < 0) {
        return ret;
    }

    bdrv_inc_in_flight(bs);
    int64_t old = bdrv_co_getlength(bs);
    BdrvTrackedRequest req;
    int64_t from = old < 0 ? 0 : MIN(old, offset);
    tracked_request_begin(&req, bs, from, BDRV_MAX_LENGTH - from, true);
    tracked_request_wait(&req);

    if (bs->drv->co_truncate && (flags & ~bs->supported_truncate_flags)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Block driver '%s' does not support the requested truncate flags",
                    bs->drv->format_name);
        ret = -ENOTSUP;
    } else if (bs->drv->co_truncate) {
        ret = bs->drv->co_truncate(bs, offset, exact, prealloc, flags, errp);
    } else if (bs->drv->is_filter && bs->file) {
        ret = bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
    } else {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Image format driver does not support resize");
        ret = -ENOTSUP;
    }
    if (ret < 0 && errp && !*errp) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret), "Could not resize image: %s",
                    g_strerror(-ret));
    }
    /* Whatever happened, the cached length must be read again. */
    atomic_store(&bs->total_bytes, -1);
    bdrv_co_getlength(bs);
    bdrv_bump_write_gen(bs);
    tracked_request_end(&req);
    bdrv_dec_in_flight(bs);
    return ret;
}
