/*
 * strata-img bench: qemu-img 7.2's request benchmark, with the same
 * options and output, plus --iothreads=N (Strata only) to spread the
 * queue depth over N IOThreads driving the same image (multiqueue).
 *
 * Each of `depth` worker coroutines claims the next request index, maps
 * it to an offset and issues it; the run ends when all `count` requests
 * completed.  Workers may run in several threads: each thread takes
 * indexes from the shared counter BENCH_BATCH at a time and hands them
 * out to its own workers in order, so the threads do not fight over one
 * cache line per request (with one thread the order is exactly qemu-img's).
 * The flush bookkeeping (--flush-interval) sits under a CoMutex that only
 * runs when flushes are asked for; it claims one index at a time.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "block/block-int.h"
#include "coroutine/co-lock.h"
#include "tools/strata-img/img.h"

/* Indexes a thread takes from the shared counter at once. */
#define BENCH_BATCH 64

typedef struct Bench {
    BlockBackend *blk;
    bool write, drain;
    int64_t count, bufsize, step, offset, image_size, flush_interval;
    int64_t first_pass; /* requests from the start offset before the first wrap */
    int64_t per_pass;   /* requests in each later pass, which starts at 0 */
    int pattern;

    /* Next request index not yet taken by a thread: alone on its line. */
    atomic_llong next __attribute__((aligned(128)));
    /* Workers still running, and the first -errno seen (read per request). */
    atomic_int workers_left __attribute__((aligned(128)));
    atomic_int error;

    CoMutex lock; /* protects the fields below (flush bookkeeping only) */
    int64_t done;
    int in_flight;
    int flushing;   /* flushes running that hold back new requests (drain mode) */
    CoQueue resume; /* workers waiting for a flush to finish */
    CoQueue idle;   /* flushers waiting for in-flight requests to end */
} Bench;

/* Offset of request @i: advance by step, wrap to 0 when a buffer no longer fits. */
static int64_t bench_offset(Bench *b, int64_t i)
{
    if (b->step == 0 || i < b->first_pass) {
        return b->offset + i * b->step;
    }
    return ((i - b->first_pass) % b->per_pass) * b->step;
}

static void bench_set_error(Bench *b, int ret)
{
    int expected = 0;
    atomic_compare_exchange_strong(&b->error, &expected, ret);
}

/* Offset of the request after one at @off: bench_offset without a division. */
static int64_t bench_next_offset(Bench *b, int64_t off)
{
    if (b->step == 0) {
        return off;
    }
    /* Past the last offset where a buffer fits, the next pass starts at 0. */
    return off > b->image_size - b->bufsize - b->step ? 0 : off + b->step;
}

/*
 * The indexes one thread has taken and not handed out yet: [next, end).
 * Written on every request, so each thread's copy has its own cache lines.
 */
typedef struct BenchThread {
    Bench *b;
    int workers; /* worker coroutines to start in this thread */
    int64_t next, end;
    int64_t next_off; /* offset of request `next` */
} __attribute__((aligned(128))) BenchThread;

/* Claims a request index and its offset, waiting while a draining flush runs. */
static int64_t coroutine_fn bench_co_claim(BenchThread *t, int64_t *off)
{
    Bench *b = t->b;
    if (!b->flush_interval) {
        /* Only this thread's coroutines touch t, one at a time. */
        if (t->next == t->end) {
            t->next = atomic_fetch_add(&b->next, BENCH_BATCH);
            t->end = t->next + BENCH_BATCH;
            t->next_off = t->next < b->count ? bench_offset(b, t->next) : 0;
        }
        *off = t->next_off;
        t->next_off = bench_next_offset(b, t->next_off);
        return t->next++;
    }
    co_mutex_lock(&b->lock);
    while (b->flushing) {
        co_queue_wait(&b->resume, &b->lock);
    }
    int64_t i = atomic_fetch_add(&b->next, 1);
    b->in_flight += i < b->count;
    co_mutex_unlock(&b->lock);
    *off = i < b->count ? bench_offset(b, i) : 0;
    return i;
}

/* Accounts a completed request and sends a flush every flush_interval requests. */
static void coroutine_fn bench_co_complete(Bench *b)
{
    if (!b->flush_interval) {
        return;
    }
    co_mutex_lock(&b->lock);
    b->in_flight--;
    bool flush = ++b->done % b->flush_interval == 0;
    if (b->flushing && b->in_flight == 0) {
        co_queue_restart_all(&b->idle);
    }
    if (flush) {
        if (b->drain) {
            b->flushing++;
            while (b->in_flight > 0) {
                co_queue_wait(&b->idle, &b->lock);
            }
        }
        co_mutex_unlock(&b->lock);
        int ret = blk_co_flush(b->blk);
        if (ret < 0) {
            bench_set_error(b, ret);
        }
        co_mutex_lock(&b->lock);
        if (b->drain && --b->flushing == 0) {
            co_queue_restart_all(&b->resume);
        }
    }
    co_mutex_unlock(&b->lock);
}

static void coroutine_fn bench_worker_co(void *opaque)
{
    BenchThread *t = opaque;
    Bench *b = t->b;
    void *buf = bdrv_blockalign(blk_bs(b->blk), MAX(b->bufsize, 1));

    memset(buf, b->pattern, b->bufsize);
    for (;;) {
        int64_t off;
        int64_t i = bench_co_claim(t, &off);
        if (i >= b->count || atomic_load(&b->error)) {
            break;
        }
        int ret = b->write ? blk_co_pwrite(b->blk, off, b->bufsize, buf, 0)
                           : blk_co_pread(b->blk, off, b->bufsize, buf, 0);
        if (ret < 0) {
            bench_set_error(b, ret);
            break;
        }
        bench_co_complete(b);
    }
    free(buf);
    atomic_fetch_sub(&b->workers_left, 1);
    aio_wait_kick();
}

static void bench_start_bh(void *opaque)
{
    BenchThread *t = opaque;
    /* Once the last worker has finished, bench_run may free t: read it first. */
    int workers = t->workers;
    for (int i = 0; i < workers; i++) {
        co_enter(co_create(bench_worker_co, t));
    }
}

/* Starts the workers, spread over the main loop or @nthreads IOThreads, and waits. */
static bool bench_run(Bench *b, int depth, IOThread **threads, int nthreads)
{
    int workers = (int)MIN((int64_t)depth, MAX(b->count, 1));
    int nt = MAX(nthreads, 1);
    BenchThread *per_thread = g_aligned_alloc0(nt, sizeof(BenchThread), _Alignof(BenchThread));

    atomic_store(&b->workers_left, workers);
    for (int t = 0; t < nt; t++) {
        per_thread[t].b = b;
        per_thread[t].workers = workers / nt + (t < workers % nt);
        AioContext *ctx = nthreads ? iothread_get_aio_context(threads[t]) : aio_main_context();
        aio_bh_schedule_oneshot(ctx, bench_start_bh, &per_thread[t]);
    }
    AIO_WAIT_WHILE(atomic_load(&b->workers_left) > 0);
    g_aligned_free(per_thread);
    return atomic_load(&b->error) == 0;
}

enum { OPT_FLUSH_INTERVAL = IMG_OPT_LOCAL, OPT_NO_DRAIN, OPT_PATTERN, OPT_IOTHREADS };

static bool bench_parse_int(const char *arg, int64_t min, int64_t max, int64_t *out, bool sized)
{
    int64_t v;
    char *end;

    if (sized) {
        if (!img_parse_size(arg, &v)) {
            return false;
        }
    } else {
        errno = 0;
        v = strtoll(arg, &end, 0);
        if (errno || end == arg || *end) {
            return false;
        }
    }
    if (v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

int img_bench(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"pattern", required_argument, NULL, OPT_PATTERN},
        {"no-drain", no_argument, NULL, OPT_NO_DRAIN},
        {"iothreads", required_argument, NULL, OPT_IOTHREADS},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {0};
    Bench b = {.count = 75000, .bufsize = 4096, .drain = true};
    int64_t depth = 64, nthreads = 0, v;
    bool quiet = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("usage: strata-img bench [-c count] [-d depth] [-f fmt] [-i aio] [-n] "
                   "[-o offset] [-q] [-s size] [-S step] [-t cache] [-w] [-U] filename\n");
            return 0;
        case 'c':
            if (!bench_parse_int(optarg, 0, INT_MAX, &b.count, false)) {
                img_error("Invalid request count specified");
                return 1;
            }
            break;
        case 'd':
            if (!bench_parse_int(optarg, 1, INT_MAX, &depth, false)) {
                img_error("Invalid queue depth specified");
                return 1;
            }
            break;
        case 'n':
            o.native_aio = true;
            break;
        case 'i':
            if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
                strcmp(optarg, "io_uring")) {
                img_error("Invalid aio option: %s", optarg);
                return 1;
            }
            o.aio = optarg;
            break;
        case 'o':
            if (!bench_parse_int(optarg, 0, INT64_MAX, &b.offset, true)) {
                img_error("Invalid offset specified");
                return 1;
            }
            break;
        case 's':
            if (!bench_parse_int(optarg, 0, INT_MAX, &b.bufsize, true)) {
                img_error("Invalid buffer size specified");
                return 1;
            }
            break;
        case 'S':
            if (!bench_parse_int(optarg, 0, INT_MAX, &b.step, true)) {
                img_error("Invalid step size specified");
                return 1;
            }
            break;
        case 'w':
            b.write = true;
            o.writable = true;
            break;
        case OPT_FLUSH_INTERVAL:
            if (!bench_parse_int(optarg, 0, INT_MAX, &b.flush_interval, false)) {
                img_error("Invalid flush interval specified");
                return 1;
            }
            break;
        case OPT_NO_DRAIN:
            b.drain = false;
            break;
        case OPT_PATTERN:
            if (!bench_parse_int(optarg, 0, 0xff, &v, false)) {
                img_error("Invalid pattern byte specified");
                return 1;
            }
            b.pattern = (int)v;
            break;
        case OPT_IOTHREADS:
            if (!bench_parse_int(optarg, 0, 64, &nthreads, false)) {
                img_error("Invalid number of IOThreads specified (0 to 64)");
                return 1;
            }
            break;
        case ':': /* bench's own words for getopt's errors */
            img_error("option '%s' requires an argument", argv[optind - 1]);
            img_usage_hint();
            return 1;
        case '?':
            img_error("unrecognized option '%s'", argv[optind - 1]);
            img_usage_hint();
            return 1;
        default:
            if (!img_common_opt(c, argv, &o, &quiet, NULL, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        return 1;
    }
    if (b.flush_interval && !b.write) {
        img_error("--flush-interval is only available in write tests");
        return 1;
    }
    if (!b.drain && !b.write) {
        img_error("--no-drain is only available in write tests");
        return 1;
    }
    if (b.step == 0) {
        b.step = b.bufsize;
    }
    if (o.force_share && b.write) {
        img_error("--force-share/-U is not allowed with write tests");
        return 1;
    }

    b.blk = img_open(argv[optind], &o, "writeback");
    if (!b.blk) {
        return 1;
    }
    b.image_size = blk_getlength(b.blk);
    if (b.image_size < 0) {
        img_error("Could not get image size: %s", g_strerror((int)-b.image_size));
        blk_unref(b.blk);
        return 1;
    }
    if (b.step > 0) {
        int64_t room = b.image_size - b.bufsize;
        /* The first request always goes to the start offset, even past the end. */
        b.first_pass = room >= b.offset ? (room - b.offset) / b.step + 1 : 1;
        b.per_pass = room >= 0 ? room / b.step + 1 : 1;
    }
    co_mutex_init(&b.lock);
    co_queue_init(&b.resume);
    co_queue_init(&b.idle);

    if (!quiet) {
        printf("Sending %" G_GINT64_FORMAT " %s requests, %" G_GINT64_FORMAT
               " bytes each, %" G_GINT64_FORMAT " in parallel (starting at offset %" G_GINT64_FORMAT
               ", step size %" G_GINT64_FORMAT ")\n",
               b.count, b.write ? "write" : "read", b.bufsize, depth, b.offset, b.step);
        if (b.flush_interval) {
            printf("Sending flush every %" G_GINT64_FORMAT " requests\n", b.flush_interval);
        }
    }

    IOThread **threads = g_new0(IOThread *, MAX(nthreads, 1));
    for (int t = 0; t < nthreads; t++) {
        GError *err = NULL;
        g_autofree char *id = g_strdup_printf("bench%d", t);
        threads[t] = iothread_create(id, NULL, &err);
        if (!threads[t]) {
            img_report_error(err);
            return 1;
        }
    }
    int64_t start = aio_clock_ns();
    bool ok = bench_run(&b, (int)depth, threads, (int)nthreads);
    int64_t elapsed = aio_clock_ns() - start;
    for (int t = 0; t < nthreads; t++) {
        iothread_destroy(threads[t]);
    }
    g_free(threads);

    if (!ok) {
        img_error("Failed request: %s", g_strerror(-atomic_load(&b.error)));
    } else if (!quiet) {
        printf("Run completed in %.3f seconds.\n", elapsed / 1e9);
    }
    blk_unref(b.blk);
    return ok ? 0 : 1;
}
