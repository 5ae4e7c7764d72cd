/*
 * strata-io asynchronous commands: aio_read, aio_write, aio_flush.
 *
 * aio_read and aio_write start a request with the BlockBackend's
 * asynchronous form and return at once; the completion callback runs
 * later in the main loop (during another command's wait, an aio_flush, a
 * sleep, the idle interactive prompt, or the drain at exit) and prints the
 * result.  As in qemu-io, a command counts as successful once submitted:
 * failures and pattern mismatches found at completion are printed but do
 * not change the exit status.
 */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "tools/strata-io/sio.h"

/* One request in flight; freed by its completion. */
typedef struct AioReq {
    Sio *s;
    IOVector v;
    bool has_v; /* v was built (write-zeroes has none) */
    int64_t offset;
    int64_t bytes;
    int64_t start_ns;
    int pattern; /* aio_read -P, else -1 */
    bool machine, quiet, verbose;
} AioReq;

static void aio_req_free(AioReq *r)
{
    if (r->has_v) {
        sio_iov_free(r->s, &r->v);
    }
    g_free(r);
}

static void aio_read_done(void *opaque, int ret)
{
    AioReq *r = opaque;
    int64_t ns = aio_clock_ns() - r->start_ns;
    g_autofree uint8_t *flat = NULL;

    if (ret < 0) {
        /* qemu-io names the vectored read here, not aio_read. */
        printf("readv failed: %s\n", strerror(-ret));
        goto out;
    }
    flat = g_malloc(MAX(r->bytes, 1));
    iov_to_buf(&r->v, 0, flat, r->bytes);
    if (r->pattern >= 0) {
        sio_verify(flat, r->pattern, r->offset, r->bytes);
    }
    if (r->quiet) {
        goto out;
    }
    if (r->verbose) {
        sio_dump(flat, r->offset, r->bytes);
    }
    sio_print_report("read", ns, r->offset, r->bytes, 1, r->machine);
out:
    aio_req_free(r);
}

static void aio_write_done(void *opaque, int ret)
{
    AioReq *r = opaque;
    int64_t ns = aio_clock_ns() - r->start_ns;

    if (ret < 0) {
        printf("aio_write failed: %s\n", strerror(-ret));
    } else if (!r->quiet) {
        sio_print_report("wrote", ns, r->offset, r->bytes, 1, r->machine);
    }
    aio_req_free(r);
}

/* A request at the offset @offset_str names, or NULL after printing why it does not parse. */
static AioReq *aio_req_new(Sio *s, const char *offset_str, int pattern)
{
    int64_t offset;
    if (sio_parse_arg(offset_str, &offset) < 0) {
        return NULL;
    }
    AioReq *r = g_new0(AioReq, 1);
    r->s = s;
    r->offset = offset;
    r->pattern = pattern;
    return r;
}

static int aio_read_f(Sio *s, int argc, char **argv)
{
    SioXferOpts o = {.pattern = -1};
    int ret = sio_parse_xfer_opts(argc, argv, "CiP:qv", "aio_read", &o, NULL, NULL);

    if (ret == 1) {
        /* qemu-io feeds an invalid request to its statistics; we keep none. */
        printf("injecting invalid read request\n");
        return 0;
    }
    if (ret < 0) {
        return ret;
    }
    if (optind > argc - 2) {
        return sio_usage("aio_read");
    }
    AioReq *r = aio_req_new(s, argv[optind], o.pattern);
    if (!r) {
        return -EINVAL;
    }
    r->bytes = sio_iov_build(s, &r->v, argv + optind + 1, argc - optind - 1, SIO_READ_FILL);
    if (r->bytes < 0) {
        aio_req_free(r);
        return -EINVAL;
    }
    r->has_v = true;
    r->machine = o.machine;
    r->quiet = o.quiet;
    r->verbose = o.verbose;
    r->start_ns = aio_clock_ns();
    blk_aio_preadv(s->blk, r->offset, &r->v, 0, aio_read_done, r);
    return 0;
}

static void aio_read_help(void)
{
    printf(" Starts a vectored read of one buffer per LEN argument at OFF and returns\n"
           " at once; the result is printed when the request completes.  Use aio_flush\n"
           " to wait for it.  The command succeeds once the request is submitted:\n"
           " errors and -P mismatches found later are printed only.\n"
           "\n"
           " Example: 'aio_read -P 0x5a 0 4k 4k' reads 8 KiB at 0 and checks the data.\n"
           "\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -i, -- do not read; only say an invalid request is injected\n"
           " -P, -- check that the data read is all this byte\n"
           " -q, -- print no statistics and no dump\n"
           " -v, -- dump the data read in hex and ASCII\n");
}

/* Returns 1 when the command is done (-i), 0 to go on, or -EINVAL. */
static int aio_write_parse(int argc, char **argv, SioXferOpts *o)
{
    *o = (SioXferOpts){.pattern = SIO_WRITE_FILL};
    int ret = sio_parse_xfer_opts(argc, argv, "CfiqP:uz", "aio_write", o, NULL, NULL);
    if (ret == 1) {
        printf("injecting invalid write request\n");
        return 1;
    }
    if (ret < 0) {
        return ret;
    }
    if (optind > argc - 2) {
        return sio_usage("aio_write");
    }
    if (o->zeroes && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        return -EINVAL;
    }
    if ((o->flags & BDRV_REQ_MAY_UNMAP) && !o->zeroes) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    return 0;
}

static int aio_write_f(Sio *s, int argc, char **argv)
{
    SioXferOpts o;
    int ret = aio_write_parse(argc, argv, &o);
    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    AioReq *r = aio_req_new(s, argv[optind], -1);
    if (!r) {
        return -EINVAL;
    }
    r->machine = o.machine;
    r->quiet = o.quiet;
    if (o.zeroes) {
        int64_t count;
        if (sio_parse_arg(argv[optind + 1], &count) < 0) {
            aio_req_free(r);
            return -EINVAL;
        }
        r->bytes = count;
        r->start_ns = aio_clock_ns();
        blk_aio_pwrite_zeroes(s->blk, r->offset, count, o.flags, aio_write_done, r);
        return 0;
    }
    r->bytes = sio_iov_build(s, &r->v, argv + optind + 1, argc - optind - 1, o.pattern);
    if (r->bytes < 0) {
        aio_req_free(r);
        return -EINVAL;
    }
    r->has_v = true;
    r->start_ns = aio_clock_ns();
    blk_aio_pwritev(s->blk, r->offset, &r->v, o.flags, aio_write_done, r);
    return 0;
}

static void aio_write_help(void)
{
    printf(" Starts a vectored write of one buffer per LEN argument at OFF (by default\n"
           " every byte 0xcd) and returns at once; the result is printed when the\n"
           " request completes.  Use aio_flush to wait for it.  The command succeeds\n"
           " once the request is submitted: errors found later are printed only.\n"
           "\n"
           " Example: 'aio_write -P 0x5a 0 4k 4k' writes 8 KiB at 0.\n"
           "\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -f, -- force unit access: the data is on stable storage when it completes\n"
           " -i, -- do not write; only say an invalid request is injected\n"
           " -P, -- fill the buffers with this byte\n"
           " -q, -- print no statistics\n"
           " -u, -- with -z, let the image deallocate the range\n"
           " -z, -- write zeroes without a buffer (one LEN only)\n");
}

static int aio_flush_f(Sio *s, int argc, char **argv)
{
    /* The callbacks run inside the drain, so every result is printed when it returns. */
    blk_drain(s->blk);
    return 0;
}

const SioCommand sio_aio_commands[] = {
    {
        .name = "aio_read",
        .fn = aio_read_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-Ciqv] [-P pattern] off len [len..]",
        .oneline = "asynchronously reads a number of bytes",
        .help = aio_read_help,
    },
    {
        .name = "aio_write",
        .fn = aio_write_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-Cfiquz] [-P pattern] off len [len..]",
        .oneline = "asynchronously writes a number of bytes",
        .help = aio_write_help,
        .perm = BLK_PERM_WRITE,
    },
    {
        .name = "aio_flush",
        .fn = aio_flush_f,
        .argmin = 0,
        .argmax = 0,
        .oneline = "completes all outstanding aio requests",
    },
    {0},
};
