/*
 * strata-io image lifetime: opening (from the command line or the open
 * command), close and reopen.
 *
 * Permissions follow qemu-io rather than the BlockBackend default: the
 * image is opened with only what the open mode needs ("consistent read",
 * plus "write" when read-write) and shares everything with other users,
 * so that strata-io can poke at an image another process uses, exactly
 * when qemu-io could.  Commands take more on first use (commands.c).
 */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "block/block-global-state.h"
#include "block/block-io.h"
#include "block/options.h"
#include "tools/strata-io/sio.h"

/* Puts the I/O engine choice where the file driver will find it. */
static void set_aio_option(GHashTable *opts, const char *aio)
{
    const char *driver = opts_get(opts, "driver");
    const char *key = driver && sio_driver_is_protocol(driver) ? "aio" : "file.aio";
    if (!opts_get(opts, key)) {
        opts_set(opts, key, aio);
    }
}

static void print_open_error(const char *name, const char *msg)
{
    if (name) {
        sio_error("can't open device %s: %s", name, msg);
    } else {
        sio_error("can't open: %s", msg);
    }
}

/* The image read-only with a temporary overlay on top; drops @bs's reference either way. */
static BlockDriverState *open_snapshot(BlockDriverState *bs, int flags, GError **errp)
{
    BlockDriverState *top = sio_snapshot_overlay(bs, flags, errp);
    bdrv_unref(bs); /* the overlay's backing edge holds its own */
    return top;
}

bool sio_open(Sio *s, const char *name, GHashTable *opts, int flags, bool writethrough,
              const char *aio, bool snapshot)
{
    g_autoptr(GError) err = NULL;

    if (!opts) {
        opts = opts_new();
    }
    if (s->blk) {
        sio_error("file open already, try 'help close'");
        g_hash_table_unref(opts);
        return false;
    }
    if (aio) {
        set_aio_option(opts, aio);
    }
    if (!name && !opts_get(opts, "driver") && !opts_get(opts, "filename") &&
        !opts_has_prefix(opts, "file")) {
        print_open_error(NULL, "Must specify either driver or file");
        g_hash_table_unref(opts);
        return false;
    }

    uint64_t perm = BLK_PERM_CONSISTENT_READ | ((flags & BDRV_O_RDWR) ? BLK_PERM_WRITE : 0);
    BlockDriverState *bs = bdrv_open(name, opts, snapshot ? flags & ~BDRV_O_RDWR : flags, &err);
    if (bs && snapshot) {
        bs = open_snapshot(bs, flags, &err);
    }
    if (!bs) {
        print_open_error(name, err->message);
        return false;
    }
    BlockBackend *blk = blk_new(perm, BLK_PERM_ALL);
    if (!blk_insert_bs(blk, bs, &err)) {
        print_open_error(name, err->message);
        blk_unref(blk);
        bdrv_unref(bs);
        return false;
    }
    bdrv_unref(bs); /* the backend holds its own reference */
    blk_set_enable_write_cache(blk, !writethrough);
    s->blk = blk;
    s->open_flags = flags;
    return true;
}

void sio_close(Sio *s)
{
    if (s->blk) {
        /* Completions print from inside the drain, before the image goes away. */
        blk_drain(s->blk);
        blk_unref(s->blk);
        s->blk = NULL;
    }
}

/* ---- open ----------------------------------------------------------------------------------- */

/* Shared by the command line and "open": -d values. */
bool sio_parse_discard(const char *mode, int *flags)
{
    if (!strcmp(mode, "ignore") || !strcmp(mode, "off")) {
        *flags &= ~BDRV_O_UNMAP;
    } else if (!strcmp(mode, "unmap") || !strcmp(mode, "on")) {
        *flags |= BDRV_O_UNMAP;
    } else {
        return false;
    }
    return true;
}

bool sio_parse_aio(const char *mode)
{
    return !strcmp(mode, "threads") || !strcmp(mode, "native") || !strcmp(mode, "io_uring");
}

typedef struct OpenArgs {
    int flags;
    bool writethrough, readonly, force_share, snapshot;
    const char *aio;
    GHashTable *opts; /* from -o, or NULL */
} OpenArgs;

static int open_parse(Sio *s, int argc, char **argv, OpenArgs *o)
{
    g_autoptr(GError) err = NULL;
    int c;

    while ((c = getopt(argc, argv, "snCro:ki:t:d:U")) != -1) {
        switch (c) {
        case 's':
            o->snapshot = true;
            break;
        case 'n':
            o->flags |= BDRV_O_NOCACHE;
            o->writethrough = false;
            break;
        case 'C':
            o->flags |= BDRV_O_COPY_ON_READ;
            break;
        case 'r':
            o->readonly = true;
            break;
        case 'k':
            o->aio = "native";
            break;
        case 'i':
            if (!sio_parse_aio(optarg)) {
                sio_error("Invalid aio option: %s", optarg);
                return -EINVAL;
            }
            o->aio = optarg;
            break;
        case 't':
            if (!sio_parse_cache_mode(optarg, &o->flags, &o->writethrough)) {
                sio_error("Invalid cache option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'd':
            if (!sio_parse_discard(optarg, &o->flags)) {
                sio_error("Invalid discard option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'o':
            if (s->image_opts) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                return -EINVAL;
            }
            if (!o->opts) {
                o->opts = opts_new();
            }
            if (!opts_parse_kv(o->opts, optarg, NULL, &err)) {
                sio_error("%s", err->message);
                return -EINVAL;
            }
            break;
        case 'U':
            o->force_share = true;
            break;
        default:
            return sio_usage("open");
        }
    }
    return 0;
}

static int open_f(Sio *s, int argc, char **argv)
{
    OpenArgs o = {.flags = BDRV_O_UNMAP, .writethrough = true};
    g_autoptr(GError) err = NULL;
    const char *name = NULL;

    int ret = open_parse(s, argc, argv, &o);
    if (ret == 0 && optind < argc - 1) {
        ret = sio_usage("open");
    }
    if (ret < 0) {
        if (o.opts) {
            g_hash_table_unref(o.opts);
        }
        return ret;
    }
    if (optind == argc - 1) {
        name = argv[optind];
        if (s->image_opts) {
            /* With --image-opts the argument is an option string, not a file name. */
            if (!o.opts) {
                o.opts = opts_new();
            }
            if (!opts_parse_kv(o.opts, name, NULL, &err)) {
                sio_error("%s", err->message);
                g_hash_table_unref(o.opts);
                return -EINVAL;
            }
            name = NULL;
        }
    }
    if (!o.readonly) {
        o.flags |= BDRV_O_RDWR;
    }
    if (o.force_share) {
        o.flags |= BDRV_O_FORCE_SHARE;
    }
    return sio_open(s, name, o.opts, o.flags, o.writethrough, o.aio, o.snapshot) ? 0 : -EINVAL;
}

static void open_help(void)
{
    printf(" Opens an image as the current one (when none is open).\n"
           "\n"
           " Example: 'open -n -o driver=raw /tmp/data' opens a raw image read-write\n"
           " with O_DIRECT.\n"
           "\n"
           " -r, -- open read-only\n"
           " -s, -- snapshot mode: writes go to a temporary overlay, the image is unchanged\n"
           " -C, -- copy data read from backing files into the image\n"
           " -n, -- bypass the host page cache (same as -t none)\n"
           " -U, -- share every permission with other users (read-only only)\n"
           " -k, -- use Linux AIO (same as -i native; needs -n or -t none)\n"
           " -i, -- I/O engine: threads, native or io_uring\n"
           " -t, -- cache mode: none, writeback, writethrough, directsync, unsafe\n"
           " -d, -- discard mode: ignore (off) or unmap (on)\n"
           " -o, -- block options, key=value[,key=value...]\n");
}

/* ---- close ---------------------------------------------------------------------------------- */

static int close_f(Sio *s, int argc, char **argv)
{
    sio_close(s);
    return 0;
}

/* ---- reopen --------------------------------------------------------------------------------- */

typedef struct ReopenArgs {
    int flags; /* BDRV_O_* after -c, -r, -w */
    bool writethrough;
    bool has_rw, has_cache;
    GHashTable *opts; /* from -o */
} ReopenArgs;

static int reopen_parse(int argc, char **argv, ReopenArgs *o)
{
    g_autoptr(GError) err = NULL;
    int c;

    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c':
            if (!sio_parse_cache_mode(optarg, &o->flags, &o->writethrough)) {
                sio_error("Invalid cache option: %s", optarg);
                return -EINVAL;
            }
            o->has_cache = true;
            break;
        case 'o':
            if (!opts_parse_kv(o->opts, optarg, NULL, &err)) {
                sio_error("%s", err->message);
                return -EINVAL;
            }
            break;
        case 'r':
        case 'w':
            if (o->has_rw) {
                sio_error("Only one -r/-w option may be given");
                return -EINVAL;
            }
            o->flags = c == 'r' ? o->flags & ~BDRV_O_RDWR : o->flags | BDRV_O_RDWR;
            o->has_rw = true;
            break;
        default:
            return sio_usage("reopen");
        }
    }
    if (optind != argc) {
        return sio_usage("reopen");
    }
    return 0;
}

/*
 * -r/-w and -c become the options "read-only", "cache.direct" and
 * "cache.no-flush", unless -o gives them too, which qemu-io refuses.
 */
static int reopen_merge_options(ReopenArgs *o)
{
    if (opts_get(o->opts, "read-only")) {
        if (o->has_rw) {
            sio_error("Cannot set both -r/-w and 'read-only'");
            return -EINVAL;
        }
    } else {
        opts_set(o->opts, "read-only", (o->flags & BDRV_O_RDWR) ? "off" : "on");
    }
    if (opts_get(o->opts, "cache.direct") || opts_get(o->opts, "cache.no-flush")) {
        if (o->has_cache) {
            sio_error("Cannot set both -c and the cache options");
            return -EINVAL;
        }
    } else {
        opts_set(o->opts, "cache.direct", (o->flags & BDRV_O_NOCACHE) ? "on" : "off");
        opts_set(o->opts, "cache.no-flush", (o->flags & BDRV_O_NO_FLUSH) ? "on" : "off");
    }
    return 0;
}

/*
 * As in qemu-io: a reopen that ends read-only first drops the backend's
 * write permissions (commands take them again when needed), so that the
 * node may become read-only; they are not given back if it fails.
 */
static int reopen_f(Sio *s, int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    ReopenArgs o = {
        .flags = sio_node_flags(blk_bs(s->blk)),
        .writethrough = !blk_enable_write_cache(s->blk),
        .opts = opts_new(),
    };
    int ret = reopen_parse(argc, argv, &o);
    if (ret == 0 && !(o.flags & BDRV_O_RDWR)) {
        uint64_t perm, shared;
        blk_get_perm(s->blk, &perm, &shared);
        perm &= ~(BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED | BLK_PERM_RESIZE);
        blk_set_perm(s->blk, perm, shared, NULL);
    }
    if (ret == 0) {
        ret = reopen_merge_options(&o);
    }
    if (ret < 0) {
        g_hash_table_unref(o.opts);
        return ret;
    }
    if (!bdrv_reopen(blk_bs(s->blk), o.opts, &err)) {
        sio_error("%s", err->message);
        return -EINVAL;
    }
    blk_set_enable_write_cache(s->blk, !o.writethrough);
    s->open_flags = sio_node_flags(blk_bs(s->blk));
    return 0;
}

static void reopen_help(void)
{
    printf(" Changes how the current image is open.\n"
           "\n"
           " Example: 'reopen -r' makes it read-only; write commands then fail.\n"
           "\n"
           " -r, -- reopen read-only\n"
           " -w, -- reopen read-write\n"
           " -c, -- change the cache mode (none, writeback, writethrough, directsync, unsafe)\n"
           " -o, -- options to change: read-only, cache.direct, cache.no-flush; others\n"
           "        must keep the value the image was opened with\n");
}

const SioCommand sio_open_commands[] = {
    {
        .name = "open",
        .altname = "o",
        .fn = open_f,
        .argmin = 1,
        .argmax = -1,
        .args = "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
        .oneline = "open the file specified by path",
        .help = open_help,
        .flags = SIO_CMD_NOFILE_OK,
    },
    {
        .name = "close",
        .altname = "c",
        .fn = close_f,
        .argmin = 0,
        .argmax = 0,
        .oneline = "close the current open file",
    },
    {
        .name = "reopen",
        .fn = reopen_f,
        .argmin = 0,
        .argmax = -1,
        .args = "[(-r|-w)] [-c cache] [-o options]",
        .oneline = "reopens an image with new options",
        .help = reopen_help,
    },
    {0},
};
