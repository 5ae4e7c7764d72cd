/*
 * strata-img: helpers shared by the subcommands.  Main thread only.
 */
#include "tools/strata-img/img.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-global-state.h"
#include "block/block-int.h"
#include "block/graph-lock.h"
#include "block/options.h"
#include "block/snapshot.h"

void img_error(const char *fmt, ...)
{
    va_list ap;

    fputs("strata-img: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void img_report_error(GError *err)
{
    img_error("%s", err->message);
    g_error_free(err);
}

void img_usage_hint(void)
{
    fprintf(stderr, "Try 'strata-img --help' for more information\n");
}

void img_getopt_error(int c, char **argv)
{
    if (c == ':') {
        img_error("missing argument for option '%s'", argv[optind - 1]);
    } else {
        img_error("unrecognized option '%s'", argv[optind - 1]);
    }
    img_usage_hint();
}

bool img_common_opt(int c, char **argv, ImgOpenOptions *o, bool *quiet, const char **output,
                    int *ret)
{
    switch (c) {
    case 'h':
        img_help();
        *ret = 0;
        return false;
    case 'f':
        o->fmt = optarg;
        return true;
    case 'U':
        o->force_share = true;
        return true;
    case 't':
    case 'T':
        o->cache = optarg;
        return true;
    case 'q':
        *quiet = true;
        return true;
    case IMG_OPT_IMAGE_OPTS:
        o->image_opts = true;
        return true;
    case IMG_OPT_OUTPUT:
        *output = optarg;
        return true;
    case IMG_OPT_OBJECT:
        img_error("--object is not supported");
        break;
    default:
        img_getopt_error(c, argv);
        break;
    }
    *ret = 1;
    return false;
}

void img_printf(bool quiet, const char *fmt, ...)
{
    va_list ap;

    if (quiet) {
        return;
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

char *img_path_combine(const char *base, const char *name)
{
    size_t n = strcspn(name, ":/");

    if (g_path_is_absolute(name) || name[n] == ':') {
        return g_strdup(name);
    }
    const char *slash = strrchr(base, '/');
    if (!slash) {
        return g_strdup(name);
    }
    return g_strdup_printf("%.*s%s", (int)(slash - base + 1), base, name);
}

void img_simple_progress_init(ImgSimpleProgress *p, bool enabled, double min_skip)
{
    *p = (ImgSimpleProgress){.enabled = enabled, .min_skip = min_skip};
}

void img_simple_progress_set(ImgSimpleProgress *p, double percent)
{
    percent = MIN(MAX(percent, 0.0), 100.0);
    if (p->enabled && (percent - p->last > p->min_skip || percent == 0 || percent == 100)) {
        printf("    (%3.2f/100%%)\r", percent);
        fflush(stdout);
        p->last = percent;
    }
}

void img_simple_progress_end(ImgSimpleProgress *p)
{
    if (p->enabled) {
        printf("\n");
    }
}

/* ---- sizes ---------------------------------------------------------------------------------- */

/* Bytes per unit of a size suffix (b, k, M, G, T, P, E in any case), 0 for anything else. */
static uint64_t img_size_unit(char c)
{
    static const char units[] = "bkmgtpe";
    const char *u = c ? strchr(units, g_ascii_tolower(c)) : NULL;
    return u ? 1ULL << (10 * (u - units)) : 0;
}

int img_strtosz(const char *str, uint64_t *out)
{
    const char *p = str;
    uint64_t whole = 0, unit = 1;
    double frac = 0;
    bool hex = false;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p == '+') {
        p++;
    }
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        hex = true;
        p += 2;
    }
    const char *digits = p;
    bool overflow = false;
    for (; hex ? g_ascii_isxdigit(*p) : g_ascii_isdigit(*p); p++) {
        int d = g_ascii_xdigit_value(*p);
        if (whole > (UINT64_MAX - d) / (hex ? 16 : 10)) {
            overflow = true;
        }
        whole = whole * (hex ? 16 : 10) + d;
    }
    if (p == digits) {
        return -EINVAL;
    }
    if (!hex && *p == '.') {
        double scale = 0.1;
        for (p++; g_ascii_isdigit(*p); p++, scale /= 10) {
            frac += (*p - '0') * scale;
        }
    }
    if (*p) {
        unit = img_size_unit(*p++);
        if (!unit || *p) {
            return -EINVAL;
        }
    }
    /* A fraction of a byte is not a size. */
    if (frac != 0 && unit == 1) {
        return -EINVAL;
    }
    if (overflow || whole > UINT64_MAX / unit) {
        return -ERANGE;
    }
    uint64_t v = whole * unit;
    double extra = frac * (double)unit + 0.5;
    if (extra >= 0x1p64 || v > UINT64_MAX - (uint64_t)extra) {
        return -ERANGE;
    }
    *out = v + (uint64_t)extra;
    return 0;
}

bool img_parse_size_ex(const char *str, int64_t *out, bool *range)
{
    uint64_t v;
    int ret = str ? img_strtosz(str, &v) : -EINVAL;

    *range = ret == -ERANGE || (ret == 0 && v > INT64_MAX);
    if (ret < 0 || v > INT64_MAX) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

bool img_parse_size(const char *str, int64_t *out)
{
    bool range;
    return img_parse_size_ex(str, out, &range);
}

void img_error_size_suffix(const char *what)
{
    img_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
    img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
}

char *img_size_to_str(uint64_t size)
{
    static const char *const units[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int i = 0;

    /* Move to the next unit once the number would reach 1000 in this one. */
    while (i < 6 && (double)size * 1.024 >= (double)(1ULL << (10 * (i + 1)))) {
        i++;
    }
    return g_strdup_printf("%0.3g %sB", (double)size / (double)(1ULL << (10 * i)), units[i]);
}

bool img_parse_output_format(const char *arg, ImgOutputFormat *out)
{
    if (strcmp(arg, "human") == 0) {
        *out = IMG_OUTPUT_HUMAN;
    } else if (strcmp(arg, "json") == 0) {
        *out = IMG_OUTPUT_JSON;
    } else {
        img_error("--output must be used with human or json as argument.");
        return false;
    }
    return true;
}

bool img_cache_mode_valid(const char *mode)
{
    int flags = 0;
    bool writethrough;
    GError *err = NULL;

    if (!bdrv_parse_cache_mode(mode, &flags, &writethrough, &err)) {
        g_error_free(err);
        return false;
    }
    return true;
}

bool img_check_cache_mode(const char *mode, const char *what)
{
    if (mode && !img_cache_mode_valid(mode)) {
        img_error("Invalid %s option: %s", what, mode);
        return false;
    }
    return true;
}

bool img_check_format_opts(const ImgOpenOptions *o)
{
    if (o->image_opts && o->fmt) {
        img_error("--image-opts and --format are mutually exclusive");
        return false;
    }
    return true;
}

/*
 * Where the aio= option goes: on the node itself when it is the file
 * protocol, else on its file child.
 */
static const char *img_aio_key(GHashTable *opts)
{
    const char *drv = opts_get(opts, "driver");
    return drv && strcmp(drv, "file") == 0 ? "aio" : "file.aio";
}

BlockBackend *img_open(const char *filename, const ImgOpenOptions *o, const char *default_cache)
{
    GError *err = NULL;
    GHashTable *opts = opts_new();
    int flags = o->writable ? BDRV_O_RDWR : 0;
    bool writethrough = false;
    const char *name = filename;

    if (o->image_opts) {
        if (!opts_parse_kv(opts, filename, NULL, &err)) {
            g_hash_table_unref(opts);
            img_report_error(err);
            return NULL;
        }
        filename = NULL;
    } else if (o->fmt) {
        opts_set(opts, "driver", o->fmt);
    }
    if (!bdrv_parse_cache_mode(o->cache ? o->cache : default_cache, &flags, &writethrough, &err)) {
        g_hash_table_unref(opts);
        img_error("Invalid cache option: %s", o->cache);
        g_error_free(err);
        return NULL;
    }
    if (o->aio || o->native_aio) {
        opts_set(opts, img_aio_key(opts), o->aio ? o->aio : "native");
    }
    flags |= o->force_share ? BDRV_O_FORCE_SHARE : 0;
    flags |= o->no_backing ? BDRV_O_NO_BACKING : 0;
    flags |= o->resize ? BDRV_O_RESIZE : 0;
    flags |= o->unmap ? BDRV_O_UNMAP : 0;

    BlockBackend *blk = blk_new_open(filename, opts, flags, &err);
    if (!blk) {
        img_error("Could not open '%s': %s", name, err->message);
        g_error_free(err);
        return NULL;
    }
    blk_set_enable_write_cache(blk, !writethrough);
    return blk;
}

typedef struct ImgCo {
    CoroutineEntry *entry;
    void *opaque;
    bool done;
} ImgCo;

static void coroutine_fn img_co_trampoline(void *opaque)
{
    ImgCo *c = opaque;
    c->entry(c->opaque);
    c->done = true;
    aio_wait_kick();
}

void img_run_co(CoroutineEntry *entry, void *opaque)
{
    ImgCo c = {.entry = entry, .opaque = opaque};
    co_enter(co_create(img_co_trampoline, &c));
    AIO_WAIT_WHILE(!c.done);
}

typedef struct ImgAllocSize {
    BlockDriverState *bs;
    int64_t ret;
} ImgAllocSize;

static void coroutine_fn img_alloc_size_co(void *opaque)
{
    ImgAllocSize *a = opaque;
    GRAPH_RDLOCK_GUARD();
    a->ret = bdrv_co_get_allocated_file_size(a->bs);
}

int64_t img_get_allocated_file_size(BlockDriverState *bs)
{
    ImgAllocSize a = {.bs = bs};
    img_run_co(img_alloc_size_co, &a);
    return a.ret;
}

void img_snapshot_param_clear(ImgSnapshotParam *p)
{
    g_free(p->id);
    g_free(p->name);
    *p = (ImgSnapshotParam){0};
}

bool img_parse_snapshot_param(const char *arg, ImgSnapshotParam *p)
{
    GError *err = NULL;
    GHashTableIter it;
    gpointer key;

    img_snapshot_param_clear(p);
    if (!g_str_has_prefix(arg, "snapshot.")) {
        p->name = g_strdup(arg);
        p->plain = true;
        return true;
    }
    g_autoptr(GHashTable) kv = opts_new();
    if (!opts_parse_kv(kv, arg, NULL, &err)) {
        img_report_error(err);
        img_error("Failed in parsing snapshot param '%s'", arg);
        return false;
    }
    g_hash_table_iter_init(&it, kv);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (strcmp(key, "snapshot.id") != 0 && strcmp(key, "snapshot.name") != 0) {
            img_error("Invalid parameter '%s'", (const char *)key);
            img_error("Failed in parsing snapshot param '%s'", arg);
            return false;
        }
    }
    p->id = g_strdup(opts_get(kv, "snapshot.id"));
    p->name = g_strdup(opts_get(kv, "snapshot.name"));
    return true;
}

bool img_load_snapshot(BlockDriverState *bs, const ImgSnapshotParam *p)
{
    GError *err = NULL;
    bool ok = p->plain ? bdrv_snapshot_load_tmp_by_id_or_name(bs, p->name, &err)
                       : bdrv_snapshot_load_tmp(bs, p->id, p->name, &err);
    if (!ok) {
        img_error("Failed to load snapshot: %s", err->message);
        g_error_free(err);
    }
    return ok;
}
