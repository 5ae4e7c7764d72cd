/*
 * strata-io: exercises a block image with qemu-io's commands.
 *
 *   strata-io [OPTIONS]... [-c COMMAND]... [FILE]
 *
 * This file handles the command line (options compatible with qemu-io
 * 7.2, plus --object iothread), opens FILE, then runs the -c commands in
 * order or, without any, reads commands interactively.  The exit status
 * is 1 when opening failed or any command failed (a later success does
 * not clear it), as with qemu-io; a "quit" stops the remaining commands.
 *
 * stdout is line buffered (qemu-io leaves it fully buffered on pipes), so
 * that results and stderr messages interleave in the order they happen
 * whatever the output sizes; the tests compare the two streams apart.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "aio/iothread.h"
#include "block/options.h"
#include "strata/strata.h"
#include "tools/strata-io/sio.h"

typedef struct MainOpts {
    GPtrArray *commands; /* char *, borrowed from argv */
    GPtrArray *objects;  /* char *: --object definitions */
    const char *format;
    const char *aio;
    int flags;
    bool writethrough, readonly, snapshot, force_share, image_opts, misalign;
} MainOpts;

static void print_usage(void)
{
    printf("Usage: strata-io [OPTIONS]... [-c COMMAND]... [FILE]\n"
           "Runs block I/O commands against an image (qemu-io compatible).\n"
           "\n"
           "  --object iothread,id=ID[,poll-max-ns=N,poll-grow=N,poll-shrink=N,aio-max-batch=N]\n"
           "                       start an IOThread\n"
           "  --image-opts         FILE is an option string (driver=raw,file.filename=...)\n"
           "  -c, --cmd COMMAND    run COMMAND (repeatable, in order); without any, read\n"
           "                       commands from stdin\n"
           "  -f, --format FMT     image format (probed when absent)\n"
           "  -r, --read-only      open read-only\n"
           "  -s, --snapshot       writes go to a temporary overlay; the image is unchanged\n"
           "  -n, --nocache        bypass the host page cache (same as -t none)\n"
           "  -C, --copy-on-read   copy data read from backing files into the image\n"
           "  -m, --misalign       misalign data buffers, to exercise bounce buffers\n"
           "  -k, --native-aio     use Linux AIO (same as -i native)\n"
           "  -i, --aio=MODE       I/O engine: threads, native or io_uring\n"
           "  -t, --cache=MODE     cache mode: none, writeback, writethrough, directsync,\n"
           "                       unsafe (default: writethrough)\n"
           "  -d, --discard=MODE   discard mode: ignore or unmap (default: unmap)\n"
           "  -T, --trace OPTS     accepted for compatibility; strata-io has no tracing\n"
           "  -U, --force-share    share every permission with other users (read-only)\n"
           "  -h, --help           show this help and exit\n"
           "  -V, --version        show the version and exit\n"
           "\n"
           "'strata-io -c help' lists the commands.\n");
}

/* Parses one --object; only IOThreads exist in strata-io. */
static bool create_object(const char *def)
{
    g_autoptr(GHashTable) o = opts_new();
    g_autoptr(GError) err = NULL;
    g_autofree char *type = NULL, *id = NULL;
    IOThreadParams p = IOTHREAD_PARAMS_DEFAULT;

    if (!opts_parse_kv(o, def, "qom-type", &err)) {
        sio_error("%s", err->message);
        return false;
    }
    type = opts_take_str(o, "qom-type");
    if (!type || strcmp(type, "iothread") != 0) {
        sio_error("invalid object type: %s", type ? type : "");
        return false;
    }
    id = opts_take_str(o, "id");
    if (!id) {
        sio_error("Parameter 'id' is missing");
        return false;
    }
    if (!opts_take_int(o, "poll-max-ns", -1, &p.poll_max_ns, &err) ||
        !opts_take_int(o, "poll-grow", -1, &p.poll_grow, &err) ||
        !opts_take_int(o, "poll-shrink", -1, &p.poll_shrink, &err) ||
        !opts_take_int(o, "aio-max-batch", -1, &p.aio_max_batch, &err)) {
        sio_error("%s", err->message);
        return false;
    }
    if (g_hash_table_size(o)) {
        GList *keys = g_list_sort(g_hash_table_get_keys(o), (GCompareFunc)strcmp);
        sio_error("Property 'iothread.%s' not found", (char *)keys->data);
        g_list_free(keys);
        return false;
    }
    if (!iothread_create(id, &p, &err)) {
        sio_error("%s", err->message);
        return false;
    }
    return true;
}

static void destroy_iothreads(void)
{
    GList *all = iothread_query_all();
    for (GList *l = all; l; l = l->next) {
        IOThreadInfo *info = l->data;
        iothread_destroy(iothread_find(info->id));
    }
    iothread_info_list_free(all);
}

/* Returns 0 to go on, -1 when done (help, version), or 1 after printing an error. */
static int parse_options(int argc, char **argv, MainOpts *o)
{
    enum { OPT_OBJECT = 256, OPT_IMAGE_OPTS };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"cmd", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, 'f'},
        {"read-only", no_argument, NULL, 'r'},
        {"snapshot", no_argument, NULL, 's'},
        {"nocache", no_argument, NULL, 'n'},
        {"copy-on-read", no_argument, NULL, 'C'},
        {"misalign", no_argument, NULL, 'm'},
        {"native-aio", no_argument, NULL, 'k'},
        {"aio", required_argument, NULL, 'i'},
        {"discard", required_argument, NULL, 'd'},
        {"cache", required_argument, NULL, 't'},
        {"trace", required_argument, NULL, 'T'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "hVc:f:rsnCmki:d:t:T:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            print_usage();
            return -1;
        case 'V':
            printf("strata-io version %s (libstrata)\n", strata_version());
            return -1;
        case 'c':
            g_ptr_array_add(o->commands, optarg);
            break;
        case 'f':
            o->format = optarg;
            break;
        case 'r':
            o->readonly = true;
            break;
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
        case 'm':
            o->misalign = true;
            break;
        case 'k':
            o->aio = "native";
            break;
        case 'i':
            if (!sio_parse_aio(optarg)) {
                sio_error("Invalid aio option: %s", optarg);
                return EXIT_FAILURE;
            }
            o->aio = optarg;
            break;
        case 'd':
            if (!sio_parse_discard(optarg, &o->flags)) {
                sio_error("Invalid discard option: %s", optarg);
                return EXIT_FAILURE;
            }
            break;
        case 't':
            if (!sio_parse_cache_mode(optarg, &o->flags, &o->writethrough)) {
                sio_error("Invalid cache option: %s", optarg);
                return EXIT_FAILURE;
            }
            break;
        case 'T':
            sio_error("warning: tracing is not supported, ignoring '%s'", optarg);
            break;
        case 'U':
            o->force_share = true;
            break;
        case OPT_OBJECT:
            g_ptr_array_add(o->objects, optarg);
            break;
        case OPT_IMAGE_OPTS:
            o->image_opts = true;
            break;
        default:
            print_usage();
            return EXIT_FAILURE;
        }
    }
    if (argc - optind > 1) {
        print_usage();
        return EXIT_FAILURE;
    }
    if (o->image_opts && o->format) {
        sio_error("--image-opts and -f are mutually exclusive");
        return EXIT_FAILURE;
    }
    return 0;
}

/* Opens the FILE argument; false after printing why. */
static bool open_image(Sio *s, MainOpts *o, const char *file)
{
    g_autoptr(GError) err = NULL;
    GHashTable *opts = NULL;
    const char *name = file;
    int flags =
        o->flags | (o->readonly ? 0 : BDRV_O_RDWR) | (o->force_share ? BDRV_O_FORCE_SHARE : 0);

    if (o->image_opts) {
        opts = opts_new();
        if (!opts_parse_kv(opts, file, NULL, &err)) {
            sio_error("%s", err->message);
            g_hash_table_unref(opts);
            return false;
        }
        name = NULL;
    } else if (o->format) {
        opts = opts_new();
        opts_set(opts, "driver", o->format);
    }
    return sio_open(s, name, opts, flags, o->writethrough, o->aio, o->snapshot);
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    MainOpts o = {
        .commands = g_ptr_array_new(),
        .objects = g_ptr_array_new(),
        .flags = BDRV_O_UNMAP,
        .writethrough = true, /* qemu-io's default cache mode */
    };
    Sio s = {0};
    int status = EXIT_SUCCESS;

    setvbuf(stdout, NULL, _IOLBF, 0);
    argv[0] = (char *)"strata-io"; /* getopt's messages name the tool, not its path */
    int ret = parse_options(argc, argv, &o);
    if (ret) {
        status = ret < 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        goto out_free;
    }
    if (!aio_main_loop_init(&err)) {
        sio_error("%s", err->message);
        status = EXIT_FAILURE;
        goto out_free;
    }
    for (guint i = 0; i < o.objects->len; i++) {
        if (!create_object(g_ptr_array_index(o.objects, i))) {
            status = EXIT_FAILURE;
            goto out;
        }
    }
    s.image_opts = o.image_opts;
    s.misalign = o.misalign;
    if (optind < argc && !open_image(&s, &o, argv[optind])) {
        status = EXIT_FAILURE;
        goto out;
    }

    if (o.commands->len == 0) {
        if (sio_interactive(&s) < 0) {
            status = EXIT_FAILURE;
        }
    }
    for (guint i = 0; i < o.commands->len && !s.quit; i++) {
        if (sio_run_line(&s, g_ptr_array_index(o.commands, i)) < 0) {
            status = EXIT_FAILURE;
        }
    }
    sio_close(&s);
out:
    destroy_iothreads();
out_free:
    g_ptr_array_free(o.commands, true);
    g_ptr_array_free(o.objects, true);
    return status;
}
