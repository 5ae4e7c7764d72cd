/*
 * strata-io transfer options: the flags that read, readv, write, writev,
 * aio_read and aio_write share, parsed by one getopt loop.
 *
 * Each command passes the letters it accepts and, for the few letters only
 * it knows (-b, -c, -l, -s, -n...), a callback; the shared letters mean the
 * same everywhere: -C statistics on one line, -f FUA, -P pattern byte, -q
 * quiet, -u may unmap, -v hex dump, -z write zeroes, -i "inject an invalid
 * request" (which ends the parse at once, as in qemu-io).  An unknown
 * letter prints the command's usage.
 */
#include <errno.h>
#include <getopt.h>

#include "tools/strata-io/sio.h"

int sio_usage(const char *name)
{
    sio_print_usage(sio_find_command(name));
    return -EINVAL;
}

int sio_parse_xfer_opts(int argc, char **argv, const char *optstring, const char *cmd,
                        SioXferOpts *o, SioXferExtraOpt *extra, void *opaque)
{
    int c;

    while ((c = getopt(argc, argv, optstring)) != -1) {
        switch (c) {
        case 'C':
            o->machine = true;
            break;
        case 'f':
            o->flags |= BDRV_REQ_FUA;
            break;
        case 'i':
            return 1;
        case 'P':
            o->pattern = sio_parse_pattern(optarg);
            if (o->pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'u':
            o->flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'z':
            o->zeroes = true;
            break;
        case '?':
            return sio_usage(cmd);
        default: {
            int ret = extra ? extra(c, optarg, opaque) : -ENOENT;
            if (ret == -ENOENT) {
                return sio_usage(cmd);
            }
            if (ret < 0) {
                return ret;
            }
            break;
        }
        }
    }
    return 0;
}

int sio_parse_arg(const char *str, int64_t *out)
{
    int64_t v = sio_parse_num(str);
    if (v < 0) {
        sio_print_num_error(v, str);
        return -EINVAL;
    }
    *out = v;
    return 0;
}
