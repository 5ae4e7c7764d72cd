/*
 * strata-img convert: the copy engine.
 *
 * Notes on the design:
 *
 * The target is cut into chunks in offset order by one claim function
 * (under a CoMutex, so the status cache stays coherent): each claim asks
 * the source's block status once per extent and hands out either a data
 * chunk (at most r->chunk bytes: what a worker's buffer holds), or
 * a whole zero / backing extent (no buffer needed).  Chunk edges are kept
 * on the target's alignment (its cluster size): a data extent is rounded
 * up, a zero extent down, so the target never sees a write of part of a
 * cluster between two chunks, and -c always has whole clusters.
 *
 * -m workers (coroutines in the main loop) each claim a chunk, read it,
 * cut it into data and zero runs at the -S granularity, and issue the
 * writes.  Writes run as their own small coroutines so that a worker can
 * have several in flight (up to CONV_WRITES_PER_WORKER).  Without -W the
 * writes are *issued* in chunk order: a worker waits for its turn before
 * it starts its first write and passes the turn on as soon as its last
 * write has started; the writes themselves overlap.  A format driver thus
 * allocates clusters in guest order, while the copy keeps the disk busy.
 * qemu-img instead waits for the previous chunk's writes to complete.
 *
 * Memory: one buffer of r->chunk per worker plus the write coroutines,
 * whatever the image size.  That is IMG_CONVERT_CHUNK (2 MiB), or with -c
 * a few clusters (conv_compress_chunk): the driver compresses the clusters
 * of all requests in flight at once, each with its own copies and
 * compressor state, so the chunk is what keeps about two compressions per
 * core going, no more.
 *
 * -C maps each data chunk to host file ranges (block status of the source
 * with its file, and of the target) and copies them with copy_file_range
 * in the thread pool; when either end is not a plain file range (a qcow2
 * target cluster not yet allocated), the engine falls back to reading and
 * writing for the rest of the run, as qemu-img does.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "aio/aio.h"
#include "aio/thread-pool.h"
#include "block/block-global-state.h"
#include "block/block-int.h"
#include "block/graph-lock.h"
#include "coroutine/co-lock.h"
#include "tools/strata-img/img-convert.h"
#include "tools/strata-img/img.h"

#define CONV_RING              32 /* > IMG_CONVERT_MAX_WORKERS: chunks in flight at once */
#define CONV_WRITES_PER_WORKER 16
#define CONV_STATUS_MAX        (1LL << 30) /* one block status query asks this much at most */
#define CONV_ZERO_MAX          (1LL << 30) /* largest zero chunk */
#define CONV_COPY_EXTENTS      16          /* host extents one -C chunk may map to */
#define CONV_COMPRESS_MAX      8           /* most clusters per chunk with -c */

typedef enum ConvKind {
    CONV_DATA,    /* read it, write what is not zero */
    CONV_ZERO,    /* reads as zeroes: nothing to read */
    CONV_BACKING, /* the target's backing file provides it: skip */
} ConvKind;

/* One step of work: a range of the target and what the sources hold there. */
typedef struct ConvChunk {
    uint64_t seq; /* claim order: the order of issue without -W */
    int64_t offset;
    int64_t bytes;
    ConvKind kind;
    bool known_zero; /* a zero extent copied as data (-S 0): no read */
} ConvChunk;

typedef struct ConvWorker ConvWorker;

typedef struct ConvRun {
    ImgConvert *s;
    CoMutex claim_lock;
    int64_t next;       /* first byte not claimed yet */
    int64_t status_end; /* [next, status_end) is of kind status_kind */
    ConvKind status_kind;
    uint64_t next_seq;
    uint64_t turn;                      /* without -W: the chunk that may issue writes */
    ConvWorker *turn_waiter[CONV_RING]; /* by seq % CONV_RING */
    int ret;                            /* first error, 0 while all is well */
    int running;                        /* workers not finished */
    bool copy_range;                    /* -C and no fallback yet */
    ImgConvertHost *host;               /* our descriptors, for -C */
    int64_t rate_next_ns;               /* -r: when the next chunk may start */
    int64_t chunk;                      /* largest data chunk, the size of each buffer */
    const uint8_t *zero_buf;            /* r->chunk zero bytes (-S 0) */
    ImgProgress *progress;
    bool exact_progress; /* counts data bytes (shown progress), else every byte (SIGUSR1 only) */
} ConvRun;

struct ConvWorker {
    ConvRun *r;
    Coroutine *co;
    uint8_t *buf;
    int in_flight;   /* writes started and not finished */
    int wret;        /* first write error of the current chunk */
    bool wait_write; /* yielded until a write finishes */
    bool wait_turn;  /* yielded until its chunk's turn */
};

typedef enum ConvWriteKind {
    CONV_W_DATA,
    CONV_W_ZERO,
    CONV_W_COMPRESSED,
    CONV_W_COPY,
} ConvWriteKind;

typedef struct ConvWrite {
    ConvWorker *w;
    ConvWriteKind kind;
    int64_t offset, bytes;
    const void *buf;
    /* CONV_W_COPY: host file ranges */
    int src_fd, dst_fd;
    int64_t src_pos, dst_pos;
} ConvWrite;

static inline int64_t conv_align_up(int64_t v, int64_t a)
{
    return (v + a - 1) / a * a;
}

static inline int64_t conv_align_down(int64_t v, int64_t a)
{
    return v / a * a;
}

/* The source holding target byte @offset (< total_size). */
static ImgConvertSource *conv_source(ImgConvert *s, int64_t offset)
{
    for (int i = s->nsrc - 1; i > 0; i--) {
        if (offset >= s->src[i].start) {
            return &s->src[i];
        }
    }
    return &s->src[0];
}

/* Records the first error; everyone stops at the next claim, waiters are released. */
static void conv_fail(ConvRun *r, int ret)
{
    if (r->ret) {
        return;
    }
    r->ret = ret;
    for (int i = 0; i < CONV_RING; i++) {
        ConvWorker *w = r->turn_waiter[i];
        if (w && w->wait_turn) {
            r->turn_waiter[i] = NULL;
            w->wait_turn = false;
            aio_co_wake(w->co);
        }
    }
}

/* ---- what the sources hold --------------------------------------------------------------- */

/*
 * Kind of the target range starting at @offset and the first byte after
 * it, before alignment.  Returns 0 or -errno (message printed).
 */
static int coroutine_fn conv_co_raw_status(ConvRun *r, int64_t offset, ConvKind *kind, int64_t *end)
{
    ImgConvert *s = r->s;
    ImgConvertSource *src = conv_source(s, offset);
    BlockDriverState *bs = blk_bs(src->blk);
    int64_t soff = offset - src->start;
    int64_t want = MIN(src->size - soff, CONV_STATUS_MAX);
    int64_t pnum = 0;
    int ret;

    {
        GRAPH_RDLOCK_GUARD();
        BlockDriverState *top = bdrv_skip_filters(bs);
        BlockDriverState *base = s->target_has_backing ? bdrv_cow_bs(top) : NULL;
        /*
         * Formats know their zeroes from metadata; asking for more makes
         * the core probe their file for holes (lseek) on every extent.
         */
        bool want_zero = top->drv->is_protocol || strcmp(top->drv->format_name, "raw") == 0;
        ret = bdrv_co_block_status_above(bs, base, want_zero, soff, want, &pnum, NULL, NULL);
    }
    if (ret < 0) {
        if (!s->salvage) {
            img_error("error while reading block status at offset %" PRId64 ": %s", soff,
                      g_strerror(-ret));
            return ret;
        }
        if (!s->quiet) {
            img_error("warning: error while reading block status at offset %" PRId64 ": %s", soff,
                      g_strerror(-ret));
        }
        ret = BDRV_BLOCK_DATA; /* read it: the read path salvages what it can */
        pnum = MIN(want, BDRV_SECTOR_SIZE);
    }
    if (pnum <= 0) {
        pnum = want;
    }
    if (ret & BDRV_BLOCK_ZERO) {
        *kind = CONV_ZERO;
    } else if (ret & BDRV_BLOCK_DATA) {
        *kind = CONV_DATA;
    } else {
        /* Allocated nowhere above the base: the base has it, or (no base) nobody does. */
        *kind = s->target_has_backing ? CONV_BACKING : CONV_ZERO;
    }
    *end = offset + pnum;
    return 0;
}

/*
 * The same with the end kept on the target alignment: data rounds up (the
 * extra bytes are read and copied as they are), zero and backing round
 * down, and a zero extent shorter than one aligned block becomes data.
 */
static int coroutine_fn conv_co_status(ConvRun *r, int64_t offset, ConvKind *kind, int64_t *end)
{
    ImgConvert *s = r->s;
    int64_t a = s->target_align;
    int ret = conv_co_raw_status(r, offset, kind, end);

    if (ret < 0 || *end == s->total_size) {
        return ret;
    }
    if (*kind == CONV_DATA) {
        *end = MIN(conv_align_up(*end, a), s->total_size);
        return 0;
    }
    int64_t down = conv_align_down(*end, a);
    if (down > offset) {
        *end = down;
    } else {
        *kind = CONV_DATA;
        *end = MIN(conv_align_up(offset + 1, a), s->total_size);
    }
    return 0;
}

/* Hands out the next chunk.  False when everything is claimed or the run failed. */
static bool coroutine_fn conv_co_claim(ConvRun *r, ConvChunk *c)
{
    ImgConvert *s = r->s;
    bool ok = false;

    co_mutex_lock(&r->claim_lock);
    if (r->ret || r->next >= s->total_size) {
        goto out;
    }
    if (r->next >= r->status_end) {
        int ret = conv_co_status(r, r->next, &r->status_kind, &r->status_end);
        if (ret < 0) {
            conv_fail(r, ret);
            goto out;
        }
    }
    c->offset = r->next;
    c->kind = r->status_kind;
    c->known_zero = false;
    if (c->kind == CONV_ZERO && !s->min_sparse) {
        /* -S 0: allocate everything, zeroes included. */
        c->kind = CONV_DATA;
        c->known_zero = true;
    }
    c->bytes = MIN(r->status_end - r->next, c->kind == CONV_DATA ? r->chunk : CONV_ZERO_MAX);
    c->seq = r->next_seq++;
    r->next += c->bytes;
    ok = true;
out:
    co_mutex_unlock(&r->claim_lock);
    return ok;
}

/* ---- issuing writes in order ------------------------------------------------------------- */

/* Without -W, yields until chunk @seq may issue writes.  False when the run failed meanwhile. */
static bool coroutine_fn conv_co_wait_turn(ConvWorker *w, uint64_t seq)
{
    ConvRun *r = w->r;

    while (!r->s->out_of_order && r->turn != seq && !r->ret) {
        r->turn_waiter[seq % CONV_RING] = w;
        w->wait_turn = true;
        co_yield();
    }
    return !r->ret;
}

static void conv_turn_done(ConvRun *r, uint64_t seq)
{
    if (r->s->out_of_order || r->turn != seq) {
        return;
    }
    r->turn = seq + 1;
    ConvWorker *next = r->turn_waiter[r->turn % CONV_RING];
    if (next && next->wait_turn) {
        r->turn_waiter[r->turn % CONV_RING] = NULL;
        next->wait_turn = false;
        aio_co_wake(next->co);
    }
}

/* Yields until at most @limit writes of @w are in flight. */
static void coroutine_fn conv_co_wait_writes(ConvWorker *w, int limit)
{
    while (w->in_flight > limit) {
        w->wait_write = true;
        co_yield();
    }
}

/*
 * A compressed write through the request path (tracking, drain, bitmaps),
 * which hands it to the format whole.  A zero-length one lets the driver
 * align the end of its file.
 */
static int coroutine_fn conv_co_pwrite_compressed(BlockBackend *blk, int64_t offset, int64_t bytes,
                                                  const void *buf)
{
    return blk_co_pwrite(blk, offset, bytes, buf, BDRV_REQ_WRITE_COMPRESSED);
}

static void coroutine_fn conv_write_co(void *opaque)
{
    ConvWrite *wr = opaque;
    ConvWorker *w = wr->w;
    ImgConvert *s = w->r->s;
    int ret = 0;

    switch (wr->kind) {
    case CONV_W_DATA:
        ret = blk_co_pwrite(s->target, wr->offset, wr->bytes, wr->buf, 0);
        break;
    case CONV_W_ZERO:
        ret = blk_co_pwrite_zeroes(s->target, wr->offset, wr->bytes,
                                   s->target_has_backing ? 0 : BDRV_REQ_MAY_UNMAP);
        break;
    case CONV_W_COMPRESSED:
        ret = conv_co_pwrite_compressed(s->target, wr->offset, wr->bytes, wr->buf);
        break;
    case CONV_W_COPY: {
        ImgConvertCopyRange a = {wr->src_fd, wr->dst_fd, wr->src_pos, wr->dst_pos, wr->bytes};
        ret = thread_pool_co_submit(aio_get_thread_pool(aio_get_current()),
                                    img_convert_copy_file_range, &a);
        break;
    }
    }
    if (ret < 0 && !w->wret) {
        w->wret = ret;
    }
    g_free(wr);
    w->in_flight--;
    if (w->wait_write) {
        w->wait_write = false;
        aio_co_wake(w->co);
    }
}

/* Starts one write; it runs until its first yield before this returns. */
static void coroutine_fn conv_co_start_write(ConvWorker *w, const ConvWrite *tmpl)
{
    ConvWrite *wr = g_memdup2(tmpl, sizeof(*tmpl));

    conv_co_wait_writes(w, CONV_WRITES_PER_WORKER - 1);
    wr->w = w;
    w->in_flight++;
    co_enter(co_create(conv_write_co, wr));
}

/* A zero run of the target: nothing when it already reads as zeroes. */
static void coroutine_fn conv_co_start_zero(ConvWorker *w, int64_t offset, int64_t bytes)
{
    if (!w->r->s->target_zeroed && bytes > 0) {
        conv_co_start_write(w, &(ConvWrite){.kind = CONV_W_ZERO, .offset = offset, .bytes = bytes});
    }
}

/* ---- zero detection ------------------------------------------------------------------------ */

/* True when @len bytes at @p are all zero.  Word-wise, stops at the first non-zero word. */
static bool conv_is_zero(const uint8_t *p, size_t len)
{
    size_t head = MIN(len, (size_t)(-(uintptr_t)p & 7));
    for (size_t i = 0; i < head; i++) {
        if (p[i]) {
            return false;
        }
    }
    p += head;
    len -= head;
    const uint64_t *q = (const uint64_t *)p;
    /* The first words decide for most data blocks: test them before the unrolled loop. */
    if (len >= 64 && (q[0] | q[1] | q[7])) {
        return false;
    }
    for (; len >= 64; q += 8, len -= 64) {
        if (q[0] | q[1] | q[2] | q[3] | q[4] | q[5] | q[6] | q[7]) {
            return false;
        }
    }
    p = (const uint8_t *)q;
    for (size_t i = 0; i < len; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* Starts the write of the run [@from, @to) of chunk @c: zeroes, or data from @buf as @kind. */
static void coroutine_fn conv_co_start_run(ConvWorker *w, const ConvChunk *c, const uint8_t *buf,
                                           int64_t from, int64_t to, bool zero, ConvWriteKind kind)
{
    if (zero) {
        conv_co_start_zero(w, from, to - from);
    } else if (to > from) {
        conv_co_start_write(w, &(ConvWrite){.kind = kind,
                                            .offset = from,
                                            .bytes = to - from,
                                            .buf = buf + (from - c->offset)});
    }
}

/*
 * Issues the writes of a data chunk held in @buf: runs of non-zero blocks
 * as data, runs of zero blocks (whole -S blocks, on the target alignment)
 * as zeroes, or nothing when the target already reads as zeroes.
 */
static void coroutine_fn conv_co_issue_data(ConvWorker *w, const ConvChunk *c, const uint8_t *buf)
{
    ImgConvert *s = w->r->s;
    int64_t g = s->min_sparse ? MAX(s->min_sparse, s->target_align) : 0;
    int64_t end = c->offset + c->bytes;
    int64_t run = c->offset;
    bool run_zero = false;

    for (int64_t pos = c->offset; g && pos < end;) {
        int64_t next = MIN(conv_align_up(pos + 1, g), end);
        bool whole = next - pos == g || next == s->total_size;
        bool zero = whole && conv_is_zero(buf + (pos - c->offset), next - pos);
        if (zero != run_zero && pos > run) {
            conv_co_start_run(w, c, buf, run, pos, run_zero, CONV_W_DATA);
            run = pos;
        }
        run_zero = zero;
        pos = next;
    }
    conv_co_start_run(w, c, buf, run, end, run_zero, CONV_W_DATA);
}

/*
 * -c: runs of clusters that are not all zeroes go to the driver's
 * compressed write as one request each (the qcow2 driver compresses the
 * clusters of a request in parallel in the thread pool); zero clusters
 * are left out or written as zeroes.
 */
static void coroutine_fn conv_co_issue_compressed(ConvWorker *w, const ConvChunk *c,
                                                  const uint8_t *buf)
{
    ImgConvert *s = w->r->s;
    int64_t end = c->offset + c->bytes;
    int64_t run = c->offset;
    bool run_zero = false;

    for (int64_t pos = c->offset; pos < end;) {
        int64_t next = MIN(conv_align_down(pos, s->cluster_size) + s->cluster_size, end);
        bool zero = conv_is_zero(buf + (pos - c->offset), next - pos);
        if (zero != run_zero && pos > run) {
            conv_co_start_run(w, c, buf, run, pos, run_zero, CONV_W_COMPRESSED);
            run = pos;
        }
        run_zero = zero;
        pos = next;
    }
    conv_co_start_run(w, c, buf, run, end, run_zero, CONV_W_COMPRESSED);
}

/* ---- reading ------------------------------------------------------------------------------- */

/* --salvage: reads sector by sector; what cannot be read becomes zeroes, with a warning. */
static int coroutine_fn conv_co_read_salvage(ImgConvert *s, ImgConvertSource *src, int64_t soff,
                                             int64_t bytes, uint8_t *buf)
{
    for (int64_t done = 0; done < bytes; done += BDRV_SECTOR_SIZE) {
        int64_t n = MIN(BDRV_SECTOR_SIZE, bytes - done);
        int ret = blk_co_pread(src->blk, soff + done, n, buf + done, 0);
        if (ret < 0) {
            if (!s->quiet) {
                img_error("warning: error while reading offset %" PRId64 ": %s", soff + done,
                          g_strerror(-ret));
            }
            memset(buf + done, 0, n);
        }
    }
    return 0;
}

/* Reads the target range of @c from the sources (it may span several) into @buf. */
static int coroutine_fn conv_co_read(ConvRun *r, const ConvChunk *c, uint8_t *buf)
{
    ImgConvert *s = r->s;
    int64_t end = c->offset + c->bytes;

    for (int64_t pos = c->offset; pos < end;) {
        ImgConvertSource *src = conv_source(s, pos);
        int64_t n = MIN(end, src->start + src->size) - pos;
        int64_t soff = pos - src->start;
        int ret = blk_co_pread(src->blk, soff, n, buf + (pos - c->offset), 0);
        if (ret < 0 && s->salvage) {
            ret = conv_co_read_salvage(s, src, soff, n, buf + (pos - c->offset));
        }
        if (ret < 0) {
            if (!r->ret) {
                img_error("error while reading at byte %" PRId64 ": %s", c->offset,
                          g_strerror(-ret));
            }
            return ret;
        }
        pos += n;
    }
    return 0;
}

/* -r: sleeps until @bytes more fit the rate. */
static void coroutine_fn conv_co_rate_limit(ConvRun *r, int64_t bytes)
{
    uint64_t rate = r->s->rate_limit;
    if (!rate) {
        return;
    }
    int64_t now = g_get_monotonic_time() * 1000;
    int64_t start = MAX(now, r->rate_next_ns);
    r->rate_next_ns = start + (int64_t)((double)bytes * 1e9 / (double)rate);
    if (start > now) {
        co_sleep_ns(start - now);
    }
}

/* ---- copy offload (-C) ---------------------------------------------------------------------- */

/*
 * Maps the data chunk @c to at most CONV_COPY_EXTENTS host file ranges of
 * the source and the target.  Returns the number of ranges, or -ENOTSUP
 * when some part is not a plain file range on both ends.
 */
static int coroutine_fn conv_co_map_copy(ConvRun *r, const ConvChunk *c, ConvWrite *out)
{
    ImgConvert *s = r->s;
    int64_t end = c->offset + c->bytes;
    int n = 0;

    for (int64_t pos = c->offset; pos < end; n++) {
        ImgConvertSource *src = conv_source(s, pos);
        int64_t len = MIN(end, src->start + src->size) - pos, spnum, tpnum, smap, tmap;
        int sfd, tfd;

        if (n == CONV_COPY_EXTENTS ||
            img_convert_co_map_source(r->host, s, src, pos - src->start, len, &spnum, &sfd, &smap) <
                0 ||
            img_convert_co_map_target(r->host, s, pos, spnum, &tpnum, &tfd, &tmap) < 0) {
            return -ENOTSUP;
        }
        out[n] = (ConvWrite){.kind = CONV_W_COPY,
                             .offset = pos,
                             .bytes = MIN(spnum, tpnum),
                             .src_fd = sfd,
                             .dst_fd = tfd,
                             .src_pos = smap,
                             .dst_pos = tmap};
        pos += out[n].bytes;
    }
    return n;
}

/* -C for one data chunk.  -ENOTSUP: not offloadable, copy it the usual way. */
static int coroutine_fn conv_co_copy_chunk(ConvWorker *w, const ConvChunk *c)
{
    ConvWrite extents[CONV_COPY_EXTENTS];
    int n = conv_co_map_copy(w->r, c, extents);

    if (n < 0) {
        return n;
    }
    if (!conv_co_wait_turn(w, c->seq)) {
        return w->r->ret;
    }
    for (int i = 0; i < n; i++) {
        conv_co_start_write(w, &extents[i]);
    }
    return 0;
}

/* ---- workers ------------------------------------------------------------------------------- */

/* Reads a data chunk and issues its writes (compressed or with zero detection). */
static int coroutine_fn conv_co_copy_data(ConvWorker *w, const ConvChunk *c, bool ordered)
{
    ConvRun *r = w->r;
    const uint8_t *buf = w->buf;
    int ret;

    if (c->known_zero) {
        buf = r->zero_buf;
    } else if ((ret = conv_co_read(r, c, w->buf)) < 0) {
        return ret;
    }
    if (ordered && !conv_co_wait_turn(w, c->seq)) {
        return r->ret;
    }
    if (r->s->compressed) {
        conv_co_issue_compressed(w, c, buf);
    } else {
        conv_co_issue_data(w, c, buf);
    }
    return 0;
}

/* Issues the writes of one chunk (in turn without -W); 0 or -errno. */
static int coroutine_fn conv_co_issue_chunk(ConvWorker *w, const ConvChunk *c, bool *offloaded)
{
    ConvRun *r = w->r;
    ImgConvert *s = r->s;
    int ret = 0;

    *offloaded = false;
    if (c->kind == CONV_ZERO && !s->target_zeroed) {
        if (conv_co_wait_turn(w, c->seq)) {
            conv_co_start_zero(w, c->offset, c->bytes);
        }
    } else if (c->kind == CONV_DATA) {
        conv_co_rate_limit(r, c->bytes);
        ret = r->copy_range && !c->known_zero ? conv_co_copy_chunk(w, c) : -ENOTSUP;
        *offloaded = ret == 0;
        if (ret == -ENOTSUP) {
            r->copy_range = false;
            ret = conv_co_copy_data(w, c, true);
        }
    }
    /* Zero chunks on a zeroed target and backing chunks write nothing. */
    if (ret == 0 && conv_co_wait_turn(w, c->seq)) {
        conv_turn_done(r, c->seq);
    }
    return ret < 0 ? ret : r->ret;
}

/* Copies one chunk; returns 0 or -errno (message printed). */
static int coroutine_fn conv_co_chunk(ConvWorker *w, const ConvChunk *c)
{
    ConvRun *r = w->r;
    bool offloaded;

    w->wret = 0;
    int ret = conv_co_issue_chunk(w, c, &offloaded);
    conv_co_wait_writes(w, 0);
    if (ret < 0) {
        return ret;
    }
    if (w->wret < 0 && offloaded) {
        /* copy_file_range refused (another file system...): copy it ourselves from now on. */
        r->copy_range = false;
        w->wret = 0;
        ret = conv_co_copy_data(w, c, false);
        conv_co_wait_writes(w, 0);
        if (ret < 0) {
            return ret;
        }
    }
    if (w->wret < 0) {
        if (!r->ret) {
            img_error("error while writing at byte %" PRId64 ": %s", c->offset,
                      g_strerror(-w->wret));
        }
        return w->wret;
    }
    if (c->kind == CONV_DATA || !r->exact_progress) {
        img_progress_add(r->progress, c->bytes);
    }
    return 0;
}

static void coroutine_fn conv_worker_co(void *opaque)
{
    ConvWorker *w = opaque;
    ConvRun *r = w->r;
    ConvChunk c;

    while (conv_co_claim(r, &c)) {
        int ret = conv_co_chunk(w, &c);
        if (ret < 0) {
            conv_fail(r, ret);
            break;
        }
    }
    r->running--;
    aio_wait_kick();
}

static void coroutine_fn conv_compress_end_co(void *opaque)
{
    ConvRun *r = opaque;
    int ret = conv_co_pwrite_compressed(r->s->target, 0, 0, NULL);
    if (ret < 0) {
        img_error("error while writing at byte %" PRId64 ": %s", r->s->total_size,
                  g_strerror(-ret));
        r->ret = ret;
    }
}

typedef struct ConvCount {
    ConvRun *r;
    uint64_t data;
    int ret;
} ConvCount;

/* The bytes of data chunks, for the progress total (qemu-img's first pass). */
static void coroutine_fn conv_count_co(void *opaque)
{
    ConvCount *cc = opaque;
    ConvRun *r = cc->r;
    ImgConvert *s = r->s;

    for (int64_t pos = 0; pos < s->total_size;) {
        ConvKind kind;
        int64_t end;
        cc->ret = conv_co_status(r, pos, &kind, &end);
        if (cc->ret < 0) {
            return;
        }
        if (kind == CONV_DATA || (kind == CONV_ZERO && !s->min_sparse)) {
            cc->data += end - pos;
        }
        pos = end;
    }
}

/*
 * -c: the chunk that keeps about two clusters per core compressing with
 * @workers workers (each has one request of one chunk in flight).
 */
static int64_t conv_compress_chunk(ImgConvert *s, int workers)
{
    int per_worker = (2 * (int)g_get_num_processors() + workers - 1) / workers;
    int64_t chunk = CLAMP(per_worker, 1, CONV_COMPRESS_MAX) * s->cluster_size;
    return MIN(chunk, IMG_CONVERT_CHUNK);
}

int img_convert_copy(ImgConvert *s)
{
    ConvRun r = {.s = s, .copy_range = s->copy_range, .status_end = 0};
    ConvCount cc = {.r = &r};
    ConvWorker workers[IMG_CONVERT_MAX_WORKERS] = {0};
    BlockDriverState *tbs = blk_bs(s->target);
    int n = MIN(MAX(s->num_workers, 1), IMG_CONVERT_MAX_WORKERS);

    r.chunk = IMG_CONVERT_CHUNK;
    if (s->compressed) {
        r.chunk = conv_compress_chunk(s, n);
    }
    co_mutex_init(&r.claim_lock);
    r.progress = s->progress;
    r.exact_progress = img_progress_shown(s->progress);
    if (r.exact_progress) {
        /* qemu-img's figures are shares of the data to copy: count it first. */
        img_run_co(conv_count_co, &cc);
        if (cc.ret < 0) {
            return cc.ret;
        }
    } else {
        /* Only SIGUSR1 asks: how far into the image is close enough, and saves a pass. */
        cc.data = s->total_size;
    }
    img_progress_set_total(r.progress, cc.data);
    r.host = img_convert_host_new();
    if (!s->min_sparse) {
        r.zero_buf = g_malloc0(r.chunk);
    }
    r.running = n;
    for (int i = 0; i < n; i++) {
        workers[i].r = &r;
        workers[i].buf = bdrv_blockalign(tbs, r.chunk);
        workers[i].co = co_create(conv_worker_co, &workers[i]);
    }
    for (int i = 0; i < n; i++) {
        co_enter(workers[i].co);
    }
    AIO_WAIT_WHILE(r.running > 0);
    if (!r.ret && s->compressed) {
        img_run_co(conv_compress_end_co, &r); /* lets the driver align the end of its file */
    }
    if (!r.ret && !cc.data) {
        img_progress_add(r.progress, 0); /* nothing to copy: 100% */
    }
    for (int i = 0; i < n; i++) {
        free(workers[i].buf);
    }
    img_convert_host_free(r.host);
    g_free((void *)r.zero_buf);
    return r.ret;
}
