/*
 * strata-io commands about the image as a whole and the process:
 * flush, discard, alloc, map, length, info, truncate, sleep, abort,
 * sigraise and quit.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-io.h"
#include "tools/strata-io/sio.h"

/* ---- flush, discard ------------------------------------------------------------------------ */

static int flush_f(Sio *s, int argc, char **argv)
{
    int ret = blk_flush(s->blk);
    if (ret < 0) {
        /* qemu-io fails silently here; saying why costs nothing. */
        printf("flush failed: %s\n", strerror(-ret));
    }
    return ret < 0 ? ret : 0;
}

static int discard_f(Sio *s, int argc, char **argv)
{
    bool machine = false, quiet = false;
    int64_t offset, bytes;
    int c;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            return sio_usage("discard");
        }
    }
    if (optind != argc - 2) {
        return sio_usage("discard");
    }
    if (sio_parse_arg(argv[optind], &offset) < 0 || sio_parse_arg(argv[optind + 1], &bytes) < 0) {
        return -EINVAL;
    }
    if (bytes > SIO_MAX_REQUEST) {
        printf("length cannot exceed %lld, given %s\n", SIO_MAX_REQUEST, argv[optind + 1]);
        return -EINVAL;
    }
    int64_t start = aio_clock_ns();
    int ret = blk_pdiscard(s->blk, offset, bytes);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!quiet) {
        sio_print_report("discard", ns, offset, bytes, 1, machine);
    }
    return 0;
}

static void discard_help(void)
{
    printf(" Tells the image that LEN bytes at OFF are no longer used; the image may\n"
           " deallocate them (with discard=unmap, the default).\n"
           "\n"
           " Example: 'discard 1M 64k'\n"
           "\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -q, -- print no statistics\n");
}

/* ---- alloc, map ----------------------------------------------------------------------------- */

typedef struct AllocQuery {
    BlockDriverState *bs;
    int64_t offset, bytes, pnum;
    int ret;
} AllocQuery;

static void coroutine_fn alloc_query_co(void *opaque)
{
    AllocQuery *q = opaque;
    GRAPH_RDLOCK_GUARD();
    q->ret = bdrv_co_is_allocated(q->bs, q->offset, q->bytes, &q->pnum);
}

/* Whether the root node itself (not its backing chain) holds the first *pnum bytes. */
static int is_allocated(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum)
{
    AllocQuery q = {.bs = bs, .offset = offset, .bytes = bytes};
    bdrv_run_co(alloc_query_co, &q);
    *pnum = q.pnum;
    return q.ret;
}

static int alloc_f(Sio *s, int argc, char **argv)
{
    int64_t offset, count = 512, sum = 0;
    char where[64];

    if (sio_parse_arg(argv[1], &offset) < 0 || (argc == 3 && sio_parse_arg(argv[2], &count) < 0)) {
        return -EINVAL;
    }
    /* Bytes past the end count neither as asked nor as allocated (qemu-io's "0/0"). */
    int64_t len = blk_getlength(s->blk);
    if (len < 0) {
        printf("is_allocated failed: %s\n", strerror(-len));
        return len;
    }
    count = offset >= len ? 0 : MIN(count, len - offset);
    for (int64_t pos = offset; pos < offset + count;) {
        int64_t n;
        int ret = is_allocated(blk_bs(s->blk), pos, offset + count - pos, &n);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        if (n <= 0) {
            count = pos - offset;
            break;
        }
        sum += ret ? n : 0;
        pos += n;
    }
    sio_fmt_size((double)offset, where, sizeof(where));
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", sum, count, where);
    return 0;
}

/*
 * Length of the run at @offset whose allocation (anywhere in the chain)
 * is the same; returns that allocation (0/1) or -errno.
 */
static int map_run(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *run)
{
    int64_t n;
    int first = bdrv_is_allocated_above(bs, NULL, false, offset, bytes, &n);
    if (first < 0) {
        return first;
    }
    *run = n;
    while (*run < bytes && n > 0) {
        int next = bdrv_is_allocated_above(bs, NULL, false, offset + *run, bytes - *run, &n);
        if (next < 0) {
            return next;
        }
        if (next != first) {
            break;
        }
        *run += n;
    }
    return first;
}

static int map_f(Sio *s, int argc, char **argv)
{
    int64_t len = blk_getlength(s->blk);
    if (len < 0) {
        printf("Failed to get allocation status: %s\n", strerror(-len));
        return len;
    }
    for (int64_t offset = 0; offset < len;) {
        int64_t run;
        char size[64], where[64];
        int ret = map_run(blk_bs(s->blk), offset, len - offset, &run);
        if (ret < 0) {
            printf("Failed to get allocation status: %s\n", strerror(-ret));
            return ret;
        }
        if (run <= 0) {
            break;
        }
        sio_fmt_size((double)run, size, sizeof(size));
        sio_fmt_size((double)offset, where, sizeof(where));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", size, run,
               ret ? "    allocated" : "not allocated", where, offset);
        offset += run;
    }
    return 0;
}

/* ---- length, info, truncate ---------------------------------------------------------------- */

static int length_f(Sio *s, int argc, char **argv)
{
    char size[64];
    int64_t len = blk_getlength(s->blk);
    if (len < 0) {
        printf("getlength: %s\n", strerror(-len));
        return len;
    }
    sio_fmt_size((double)len, size, sizeof(size));
    printf("%s\n", size);
    return 0;
}

static int info_f(Sio *s, int argc, char **argv)
{
    BlockDriverState *bs = blk_bs(s->blk);
    int cluster_size;
    int64_t vm_state;
    char a[64], b[64];

    sio_print_format_name(bs);
    int ret = sio_get_info(bs, &cluster_size, &vm_state);
    if (ret < 0) {
        return ret;
    }
    sio_fmt_size(cluster_size, a, sizeof(a));
    sio_fmt_size((double)vm_state, b, sizeof(b));
    printf("cluster size: %s\n", a);
    printf("vm state offset: %s\n", b);
    return sio_print_specific_info(bs);
}

static int truncate_f(Sio *s, int argc, char **argv)
{
    static const char *const modes[] = {"off", "metadata", "falloc", "full"};
    PreallocMode prealloc = PREALLOC_MODE_OFF;
    int64_t offset;
    int c;

    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm': {
            int i = 0;
            while (i < (int)G_N_ELEMENTS(modes) && strcmp(modes[i], optarg) != 0) {
                i++;
            }
            if (i == (int)G_N_ELEMENTS(modes)) {
                sio_error("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            prealloc = (PreallocMode)i;
            break;
        }
        default:
            return sio_usage("truncate");
        }
    }
    if (optind != argc - 1) {
        return sio_usage("truncate");
    }
    if (sio_parse_arg(argv[optind], &offset) < 0) {
        return -EINVAL;
    }
    g_autoptr(GError) err = NULL;
    /* Not exact, as in qemu-io: a protocol may keep a size it cannot shrink to. */
    int ret = blk_truncate(s->blk, offset, false, prealloc, 0, &err);
    if (ret < 0) {
        sio_error("%s", err ? err->message : strerror(-ret));
        return ret;
    }
    return 0;
}

/* ---- sleep, abort, sigraise, quit ----------------------------------------------------------- */

static void sleep_done(void *opaque)
{
    *(bool *)opaque = true;
}

static int sleep_f(Sio *s, int argc, char **argv)
{
    char *end;
    errno = 0;
    long long ms = strtoll(argv[1], &end, 0);
    if (errno || end == argv[1] || *end || ms < 0) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    /* Run the main loop meanwhile, so that aio completions print during the sleep. */
    bool done = false;
    AioContext *ctx = aio_main_context();
    AioTimer *t = aio_timer_new(ctx, sleep_done, &done);
    aio_timer_mod(t, aio_clock_ns() + ms * 1000000);
    while (!done) {
        aio_poll(ctx, true);
    }
    aio_timer_free(t);
    return 0;
}

static int abort_f(Sio *s, int argc, char **argv)
{
    abort();
}

static int sigraise_f(Sio *s, int argc, char **argv)
{
    int64_t sig = sio_parse_num(argv[1]);
    if (sig < 0) {
        sio_print_num_error(sig, argv[1]);
        return -EINVAL;
    }
    if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    /* A signal that kills us must not lose what was printed so far. */
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);
    return 0;
}

static void sigraise_help(void)
{
    printf(" Sends signal number SIGNAL to strata-io itself with raise(3), after\n"
           " flushing the output.\n"
           "\n"
           " Example: 'sigraise 15' terminates the process with SIGTERM.\n");
}

static int quit_f(Sio *s, int argc, char **argv)
{
    s->quit = true;
    return 0;
}

const SioCommand sio_misc_commands[] = {
    {
        .name = "flush",
        .altname = "f",
        .fn = flush_f,
        .argmin = 0,
        .argmax = 0,
        .oneline = "flush all in-core file state to disk",
    },
    {
        .name = "discard",
        .altname = "d",
        .fn = discard_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-Cq] off len",
        .oneline = "discards a number of bytes at a specified offset",
        .help = discard_help,
        .perm = BLK_PERM_WRITE,
    },
    {
        .name = "alloc",
        .altname = "a",
        .fn = alloc_f,
        .argmin = 1,
        .argmax = 2,
        .args = "offset [count]",
        .oneline = "checks if offset is allocated in the file",
    },
    {
        .name = "map",
        .fn = map_f,
        .argmin = 0,
        .argmax = 0,
        .args = "",
        .oneline = "prints the allocated areas of a file",
    },
    {
        .name = "length",
        .altname = "l",
        .fn = length_f,
        .argmin = 0,
        .argmax = 0,
        .oneline = "gets the length of the current file",
    },
    {
        .name = "info",
        .altname = "i",
        .fn = info_f,
        .argmin = 0,
        .argmax = 0,
        .oneline = "prints information about the current file",
    },
    {
        .name = "truncate",
        .altname = "t",
        .fn = truncate_f,
        .argmin = 1,
        .argmax = 3,
        .args = "[-m prealloc_mode] off",
        .oneline = "truncates the current file at the given offset",
        .perm = BLK_PERM_RESIZE,
    },
    {
        .name = "sleep",
        .fn = sleep_f,
        .argmin = 1,
        .argmax = 1,
        .oneline = "waits for the given value in milliseconds",
        .flags = SIO_CMD_NOFILE_OK,
    },
    {
        .name = "abort",
        .fn = abort_f,
        .argmin = 0,
        .argmax = 0,
        .oneline = "simulate a program crash using abort(3)",
        .flags = SIO_CMD_NOFILE_OK,
    },
    {
        .name = "sigraise",
        .fn = sigraise_f,
        .argmin = 1,
        .argmax = 1,
        .args = "signal",
        .oneline = "raises a signal",
        .help = sigraise_help,
        .flags = SIO_CMD_NOFILE_OK,
    },
    {
        .name = "quit",
        .altname = "q",
        .fn = quit_f,
        .argmin = 0,
        .argmax = -1,
        .oneline = "exit the program",
        .flags = SIO_CMD_NOFILE_OK,
    },
    {0},
};
