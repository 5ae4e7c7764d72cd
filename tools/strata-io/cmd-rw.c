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
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "tools/strata-io/sio.h"

#define READ_FILL  0xab
#define WRITE_FILL 0xcd

static const SioCommand *self(const char *name)
{
    return sio_find_command(name);
}

static int usage(const char *name)
{
    sio_print_usage(self(name));
    return -EINVAL;
}

/* Parses an offset or length argument; prints the error itself. */
static int parse_arg(const char *str, int64_t *out)
{
    int64_t v = sio_parse_num(str);
    if (v < 0) {
        sio_print_num_error(v, str);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* -b: the VM state area.  No driver has one yet, as for raw in qemu-io. */
static int vmstate_rw(Sio *s, int64_t offset, int64_t bytes, void *buf, bool write)
{
    return -ENOTSUP;
}

/* -c: compressed writes need a format that compresses; none is reachable here yet. */
static int write_compressed(Sio *s, int64_t offset, int64_t bytes, void *buf)
{
    return -ENOTSUP;
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
    bool vmstate, machine, quiet, verbose;
    int pattern; /* -1: no -P */
    int64_t pattern_offset, pattern_count;
    bool has_pattern_offset, has_pattern_count;
} ReadOpts;

static int read_parse(int argc, char **argv, ReadOpts *o)
{
    int c;
    *o = (ReadOpts){.pattern = -1};
    /* qemu-io's synopsis lists -a, but it accepts no such flag: neither do we. */
    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            o->vmstate = true;
            break;
        case 'C':
            o->machine = true;
            break;
        case 'l':
            if (parse_arg(optarg, &o->pattern_count) < 0) {
                return -EINVAL;
            }
            o->has_pattern_count = true;
            break;
        case 'p':
            break; /* accepted and ignored, like qemu-io */
        case 'P':
            o->pattern = sio_parse_pattern(optarg);
            if (o->pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            o->quiet = true;
            break;
        case 's':
            if (parse_arg(optarg, &o->pattern_offset) < 0) {
                return -EINVAL;
            }
            o->has_pattern_offset = true;
            break;
        case 'v':
            o->verbose = true;
            break;
        default:
            return usage("read");
        }
    }
    return 0;
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
        return usage("read");
    }
    if (parse_arg(argv[optind], &offset) < 0 || parse_arg(argv[optind + 1], &count) < 0) {
        return -EINVAL;
    }
    if (count > SIO_MAX_REQUEST) {
        printf("length cannot exceed %lld, given %s\n", SIO_MAX_REQUEST, argv[optind + 1]);
        return -EINVAL;
    }
    if (o.pattern < 0 && (o.has_pattern_offset || o.has_pattern_count)) {
        return usage("read");
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

    uint8_t *buf = sio_buf_alloc(s, count, READ_FILL);
    int64_t start = aio_clock_ns();
    ret = o.vmstate ? vmstate_rw(s, offset, count, buf, false)
                    : blk_pread(s->blk, offset, count, buf, 0);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (o.pattern >= 0 && !sio_verify(buf + o.pattern_offset, o.pattern, offset + o.pattern_offset,
                                      o.pattern_count)) {
        ret = -EINVAL;
    }
    if (o.quiet) {
        goto out;
    }
    if (o.verbose) {
        sio_dump(buf, offset, count);
    }
    sio_print_report("read", ns, offset, count, 1, o.machine);
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
    bool machine = false, quiet = false, verbose = false;
    int pattern = -1;
    int64_t offset;
    int c;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'P':
            pattern = sio_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'v':
            verbose = true;
            break;
        default:
            return usage("readv");
        }
    }
    if (optind > argc - 2) {
        return usage("readv");
    }
    if (parse_arg(argv[optind], &offset) < 0) {
        return -EINVAL;
    }

    IOVector v;
    g_autofree uint8_t *flat = NULL;
    int64_t total = sio_iov_build(s, &v, argv + optind + 1, argc - optind - 1, READ_FILL);
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
    if (pattern >= 0 && !sio_verify(flat, pattern, offset, total)) {
        ret = -EINVAL;
    }
    if (quiet) {
        goto out;
    }
    if (verbose) {
        sio_dump(flat, offset, total);
    }
    sio_print_report("read", ns, offset, total, 1, machine);
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
    bool vmstate, compressed, machine, quiet, zeroes;
    BdrvRequestFlags flags;
    int pattern; /* -1: no -P */
    const char *source;
} WriteOpts;

static int write_parse(int argc, char **argv, WriteOpts *o)
{
    int c;
    *o = (WriteOpts){.pattern = -1};
    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            o->vmstate = true;
            break;
        case 'c':
            o->compressed = true;
            break;
        case 'C':
            o->machine = true;
            break;
        case 'f':
            o->flags |= BDRV_REQ_FUA;
            break;
        case 'n':
            o->flags |= BDRV_REQ_NO_FALLBACK;
            break;
        case 'p':
            break; /* accepted and ignored, like qemu-io */
        case 'P':
            o->pattern = sio_parse_pattern(optarg);
            if (o->pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            o->quiet = true;
            break;
        case 's':
            o->source = optarg;
            break;
        case 'u':
            o->flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'z':
            o->zeroes = true;
            break;
        default:
            return usage("write");
        }
    }
    return 0;
}

/* The flag combinations qemu-io refuses, with its messages. */
static int write_check_flags(const WriteOpts *o)
{
    const char *msg = NULL;
    if (o->zeroes + (o->pattern >= 0) + (o->source != NULL) > 1) {
        msg = "Only one of -z, -P, and -s can be specified at the same time";
    } else if ((o->flags & BDRV_REQ_FUA) && (o->vmstate || o->compressed)) {
        msg = "-f and -b or -c cannot be specified at the same time";
    } else if ((o->flags & BDRV_REQ_MAY_UNMAP) && !o->zeroes) {
        msg = "-u requires -z to be specified";
    } else if ((o->flags & BDRV_REQ_NO_FALLBACK) && !o->zeroes) {
        msg = "-n requires -z to be specified";
    } else if (o->zeroes && o->vmstate) {
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
    if (o->zeroes) {
        return blk_pwrite_zeroes(s->blk, offset, count, o->flags);
    }
    if (o->vmstate) {
        return vmstate_rw(s, offset, count, buf, true);
    }
    if (o->compressed) {
        return write_compressed(s, offset, count, buf);
    }
    return blk_pwrite(s->blk, offset, count, buf, o->flags);
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
        return usage("write");
    }
    if (parse_arg(argv[optind], &offset) < 0 || parse_arg(argv[optind + 1], &count) < 0) {
        return -EINVAL;
    }
    /* Only a write-zeroes that may not fall back to writing a buffer can be this large. */
    if (count > SIO_MAX_REQUEST && !(o.flags & BDRV_REQ_NO_FALLBACK)) {
        printf("length cannot exceed %lld without -n, given %s\n", SIO_MAX_REQUEST,
               argv[optind + 1]);
        return -EINVAL;
    }
    if ((o.vmstate || o.compressed) && check_sector_aligned(offset, count) < 0) {
        return -EINVAL;
    }

    void *buf = NULL;
    if (!o.zeroes) {
        buf = o.source ? sio_buf_from_file(s, count, o.source)
                       : sio_buf_alloc(s, count, o.pattern >= 0 ? o.pattern : WRITE_FILL);
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
        if (!o.quiet) {
            sio_print_report("wrote", ns, offset, count, 1, o.machine);
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
    bool machine = false, quiet = false;
    BdrvRequestFlags flags = 0;
    int pattern = WRITE_FILL;
    int64_t offset;
    int c;

    while ((c = getopt(argc, argv, "CfqP:")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'f':
            flags |= BDRV_REQ_FUA;
            break;
        case 'q':
            quiet = true;
            break;
        case 'P':
            pattern = sio_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        default:
            return usage("writev");
        }
    }
    if (optind > argc - 2) {
        return usage("writev");
    }
    if (parse_arg(argv[optind], &offset) < 0) {
        return -EINVAL;
    }

    IOVector v;
    int64_t total = sio_iov_build(s, &v, argv + optind + 1, argc - optind - 1, pattern);
    if (total < 0) {
        return -EINVAL;
    }
    int64_t start = aio_clock_ns();
    int ret = blk_pwritev(s->blk, offset, total, &v, flags);
    int64_t ns = aio_clock_ns() - start;
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
    } else {
        ret = 0;
        if (!quiet) {
            sio_print_report("wrote", ns, offset, total, 1, machine);
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
