/*
 * strata-io synchronous data commands: read, readv, write, writev.
 *
 * Each one parses its flags, builds a buffer (filled with qemu-io's
 * defaults: 0xab for reads, 0xcd for writes, or -P's byte), runs the
 * request through the BlockBackend's synchronous form and prints the
 * result lines.  A failed request or a failed -P verification makes the
 * command fail (and the tool's exit status 1).
 */
#include <errno.h>
#include <getopt.h> /* optind */
#include <inttypes.h>
#include <string.h>

#include "tools/strata-io/sio.h"

/* -b: the VM state area (qcow2 has one; raw fails with -ENOTSUP, as in qemu-io). */
static int vmstate_rw(Sio *s, int64_t offset, int64_t bytes, void *buf, bool write)
{
    return write ? blk_save_vmstate(s->blk, offset, bytes, buf)
                 : blk_load_vmstate(s->blk, offset, bytes, buf);
}

/* The VM state and compressed paths work in whole sectors, as in qemu-io. */
static int check_sector_aligned(int64_t offset, int64_t bytes)
{
    if (offset % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
        return -EINVAL;
    }
    if (bytes % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'count'\n", bytes);
        return -EINVAL;
    }
    return 0;
}

/* ---- read ----------------------------------------------------------------------------------- */

typedef struct ReadOpts {
    SioXferOpts x;
    bool vmstate;
    int64_t pattern_offset, pattern_count;
    bool has_pattern_offset, has_pattern_count;
} ReadOpts;

static int read_extra_opt(int c, const char *arg, void *opaque)
{
    ReadOpts *o = opaque;
    switch (c) {
    case 'b':
        o->vmstate = true;
        return 0;
    case 'l':
        o->has_pattern_count = true;
        return sio_parse_arg(arg, &o->pattern_count);
    case 'p':
        return 0; /* accepted and ignored, like qemu-io */
    case 's':
        o->has_pattern_offset = true;
        return sio_parse_arg(arg, &o->pattern_offset);
    default:
        return -ENOENT;
    }
}

static int read_parse(int argc, char **argv, ReadOpts *o)
{
    *o = (ReadOpts){.x.pattern = -1};
    /* qemu-io's synopsis lists -a, but it accepts no such flag: neither do we. */
    return sio_parse_xfer_opts(argc, argv, "bCl:pP:qs:v", "read", &o->x, read_extra_opt, o);
}

static int read_f(Sio *s, int argc, char **argv)
{
    ReadOpts o;
    int64_t offset, count;
    int ret = read_parse(argc, argv, &o);

    if (ret < 0) {
        return ret;
    }
    if (optind != argc - 2) {
        return sio_usage("read");
    }
    if (sio_parse_arg(argv[optind], &offset) < 0 || sio_parse_arg(argv[optind + 1], &count) < 0) {
        return -EINVAL;
    }
    if (count > SIO_MAX_REQUEST) {
        printf("length cannot exceed %lld, given %s\n", SIO_MAX_REQUEST, argv[optind + 1]);
        return -EINVAL;
    }
    if (o.x.pattern < 0 && (o.has_pattern_offset || o.has_pattern_count)) {
        return sio_usage("read");
    }
    if (!o.has_pattern_count) {
        o.pattern_count = count - o.pattern_offset;
    }
    if (o.pattern_count < 0 || o.pattern_offset > count - o.pattern_count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (o.vmstate && check_sector_aligned(offset, count) < 0) {
        return -EINVAL;
    }

    uint8_t *buf = sio_buf_alloc(s, count, SIO_READ_FILL);
    int64_t start = aio_clock_ns();
    ret = o.vmstate ? vmstate_rw(s, offset, count, buf, false)
                    : blk_pread(s->blk, offset, count, buf, 0);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (o.x.pattern >= 0 && !sio_verify(buf + o.pattern_offset, o.x.pattern,
                                        offset + o.pattern_offset, o.pattern_count)) {
        ret = -EINVAL;
    }
    if (o.x.quiet) {
        goto out;
    }
    if (o.x.verbose) {
        sio_dump(buf, offset, count);
    }
    sio_print_report("read", ns, offset, count, 1, o.x.machine);
out:
    sio_buf_free(s, buf);
    return ret;
}

static void read_help(void)
{
    printf(" Reads LEN bytes at OFF from the image and reports the transfer rate.\n"
           "\n"
           " Example: 'read -P 0x5a 1M 64k' reads 64 KiB at 1 MiB and checks that\n"
           " every byte is 0x5a.\n"
           "\n"
           " -b, -- read the VM state area instead of the image data\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -l, -- how many bytes -P checks (default: up to the end of the read)\n"
           " -p, -- ignored (accepted for compatibility)\n"
           " -P, -- check that the data read is all this byte\n"
           " -q, -- print no statistics and no dump\n"
           " -s, -- where in the read data -P starts checking (default: 0)\n"
           " -v, -- dump the data read in hex and ASCII\n");
}

/* ---- readv ---------------------------------------------------------------------------------- */

static int readv_f(Sio *s, int argc, char **argv)
{
    SioXferOpts o = {.pattern = -1};
    int64_t offset;

    if (sio_parse_xfer_opts(argc, argv, "CP:qv", "readv", &o, NULL, NULL) < 0) {
        return -EINVAL;
    }
    if (optind > argc - 2) {
        return sio_usage("readv");
    }
    if (sio_parse_arg(argv[optind], &offset) < 0) {
        return -EINVAL;
    }

    IOVector v;
    g_autofree uint8_t *flat = NULL;
    int64_t total = sio_iov_build(s, &v, argv + optind + 1, argc - optind - 1, SIO_READ_FILL);
    if (total < 0) {
        return -EINVAL;
    }
    int64_t start = aio_clock_ns();
    int ret = blk_preadv(s->blk, offset, total, &v, 0);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("readv failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    flat = g_malloc(MAX(total, 1));
    iov_to_buf(&v, 0, flat, total);
    if (o.pattern >= 0 && !sio_verify(flat, o.pattern, offset, total)) {
        ret = -EINVAL;
    }
    if (o.quiet) {
        goto out;
    }
    if (o.verbose) {
        sio_dump(flat, offset, total);
    }
    sio_print_report("read", ns, offset, total, 1, o.machine);
out:
    sio_iov_free(s, &v);
    return ret;
}

static void readv_help(void)
{
    printf(" Reads into one buffer per LEN argument, starting at OFF, as a single\n"
           " vectored request.\n"
           "\n"
           " Example: 'readv -v 512 1k 1k' reads 2 KiB at 512 into two buffers and dumps them.\n"
           "\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -P, -- check that the data read is all this byte\n"
           " -q, -- print no statistics and no dump\n"
           " -v, -- dump the data read in hex and ASCII\n");
}

/* ---- write ---------------------------------------------------------------------------------- */

typedef struct WriteOpts {
    SioXferOpts x;
    bool vmstate, compressed;
    const char *source;
} WriteOpts;

static int write_extra_opt(int c, const char *arg, void *opaque)
{
    WriteOpts *o = opaque;
    switch (c) {
    case 'b':
        o->vmstate = true;
        return 0;
    case 'c':
        o->compressed = true;
        return 0;
    case 'n':
        o->x.flags |= BDRV_REQ_NO_FALLBACK;
        return 0;
    case 'p':
        return 0; /* accepted and ignored, like qemu-io */
    case 's':
        o->source = arg;
        return 0;
    default:
        return -ENOENT;
    }
}

static int write_parse(int argc, char **argv, WriteOpts *o)
{
    *o = (WriteOpts){.x.pattern = -1};
    return sio_parse_xfer_opts(argc, argv, "bcCfnpP:qs:uz", "write", &o->x, write_extra_opt, o);
}

/* The flag combinations qemu-io refuses, with its messages. */
static int write_check_flags(const WriteOpts *o)
{
    const SioXferOpts *x = &o->x;
    const char *msg = NULL;
    if (x->zeroes + (x->pattern >= 0) + (o->source != NULL) > 1) {
        msg = "Only one of -z, -P, and -s can be specified at the same time";
    } else if ((x->flags & BDRV_REQ_FUA) && (o->vmstate || o->compressed)) {
        msg = "-f and -b or -c cannot be specified at the same time";
    } else if ((x->flags & BDRV_REQ_MAY_UNMAP) && !x->zeroes) {
        msg = "-u requires -z to be specified";
    } else if ((x->flags & BDRV_REQ_NO_FALLBACK) && !x->zeroes) {
        msg = "-n requires -z to be specified";
    } else if (x->zeroes && o->vmstate) {
        msg = "-b and -z cannot be specified at the same time";
    }
    if (msg) {
        printf("%s\n", msg);
        return -EINVAL;
    }
    return 0;
}

static int write_do(Sio *s, const WriteOpts *o, int64_t offset, int64_t count, void *buf)
{
    if (o->x.zeroes) {
        return blk_pwrite_zeroes(s->blk, offset, count, o->x.flags);
    }
    if (o->vmstate) {
        return vmstate_rw(s, offset, count, buf, true);
    }
    if (o->compressed) {
        return blk_pwrite(s->blk, offset, count, buf, BDRV_REQ_WRITE_COMPRESSED);
    }
    return blk_pwrite(s->blk, offset, count, buf, o->x.flags);
}

static int write_f(Sio *s, int argc, char **argv)
{
    WriteOpts o;
    int64_t offset, count;
    int ret = write_parse(argc, argv, &o);

    if (ret < 0 || (ret = write_check_flags(&o)) < 0) {
        return ret;
    }
    if (optind != argc - 2) {
        return sio_usage("write");
    }
    if (sio_parse_arg(argv[optind], &offset) < 0 || sio_parse_arg(argv[optind + 1], &count) < 0) {
        return -EINVAL;
    }
    /* Only a write-zeroes that may not fall back to writing a buffer can be this large. */
    if (count > SIO_MAX_REQUEST && !(o.x.flags & BDRV_REQ_NO_FALLBACK)) {
        printf("length cannot exceed %lld without -n, given %s\n", SIO_MAX_REQUEST,
               argv[optind + 1]);
        return -EINVAL;
    }
    if ((o.vmstate || o.compressed) && check_sector_aligned(offset, count) < 0) {
        return -EINVAL;
    }

    void *buf = NULL;
    if (!o.x.zeroes) {
        buf = o.source ? sio_buf_from_file(s, count, o.source)
                       : sio_buf_alloc(s, count, o.x.pattern >= 0 ? o.x.pattern : SIO_WRITE_FILL);
        if (!buf) {
            return -EINVAL;
        }
    }
    int64_t start = aio_clock_ns();
    ret = write_do(s, &o, offset, count, buf);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
    } else {
        ret = 0;
        if (!o.x.quiet) {
            sio_print_report("wrote", ns, offset, count, 1, o.x.machine);
        }
    }
    sio_buf_free(s, buf);
    return ret;
}

static void write_help(void)
{
    printf(" Writes LEN bytes at OFF, by default all 0xcd.\n"
           "\n"
           " Example: 'write -P 0x5a 1M 64k' fills 64 KiB at 1 MiB with 0x5a.\n"
           "\n"
           " -b, -- write the VM state area instead of the image data\n"
           " -c, -- write compressed data (formats that compress only)\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -f, -- force unit access: the data is on stable storage when it completes\n"
           " -n, -- with -z, fail instead of writing a zeroed buffer when the image cannot\n"
           "        zero the range cheaply\n"
           " -p, -- ignored (accepted for compatibility)\n"
           " -P, -- fill the buffer with this byte\n"
           " -q, -- print no statistics\n"
           " -s, -- fill the buffer with the content of this file, repeated\n"
           " -u, -- with -z, let the image deallocate the range\n"
           " -z, -- write zeroes without a data buffer\n");
}

/* ---- writev --------------------------------------------------------------------------------- */

static int writev_f(Sio *s, int argc, char **argv)
{
    SioXferOpts o = {.pattern = SIO_WRITE_FILL};
    int64_t offset;

    if (sio_parse_xfer_opts(argc, argv, "CfqP:", "writev", &o, NULL, NULL) < 0) {
        return -EINVAL;
    }
    if (optind > argc - 2) {
        return sio_usage("writev");
    }
    if (sio_parse_arg(argv[optind], &offset) < 0) {
        return -EINVAL;
    }

    IOVector v;
    int64_t total = sio_iov_build(s, &v, argv + optind + 1, argc - optind - 1, o.pattern);
    if (total < 0) {
        return -EINVAL;
    }
    int64_t start = aio_clock_ns();
    int ret = blk_pwritev(s->blk, offset, total, &v, o.flags);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
    } else {
        ret = 0;
        if (!o.quiet) {
            sio_print_report("wrote", ns, offset, total, 1, o.machine);
        }
    }
    sio_iov_free(s, &v);
    return ret;
}

static void writev_help(void)
{
    printf(" Writes one buffer per LEN argument, starting at OFF, as a single vectored\n"
           " request; by default every byte is 0xcd.\n"
           "\n"
           " Example: 'writev 512 1k 1k' writes 2 KiB at 512 from two buffers.\n"
           "\n"
           " -C, -- print the statistics as one comma-separated line\n"
           " -f, -- force unit access: the data is on stable storage when it completes\n"
           " -P, -- fill the buffers with this byte\n"
           " -q, -- print no statistics\n");
}

const SioCommand sio_rw_commands[] = {
    {
        .name = "read",
        .altname = "r",
        .fn = read_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-abCqv] [-P pattern [-s off] [-l len]] off len",
        .oneline = "reads a number of bytes at a specified offset",
        .help = read_help,
    },
    {
        .name = "readv",
        .fn = readv_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-Cqv] [-P pattern] off len [len..]",
        .oneline = "reads a number of bytes at a specified offset",
        .help = readv_help,
    },
    {
        .name = "write",
        .altname = "w",
        .fn = write_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-bcCfnquz] [-P pattern | -s source_file] off len",
        .oneline = "writes a number of bytes at a specified offset",
        .help = write_help,
        .perm = BLK_PERM_WRITE,
    },
    {
        .name = "writev",
        .fn = writev_f,
        .argmin = 2,
        .argmax = -1,
        .args = "[-Cfq] [-P pattern] off len [len..]",
        .oneline = "writes a number of bytes at a specified offset",
        .help = writev_help,
        .perm = BLK_PERM_WRITE,
    },
    {0},
};
