/*
 * strata-img: helpers shared by the subcommands.  Main thread only.
 */
#include "tools/strata-img/img.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-global-state.h"
#include "block/block-int.h"
#include "block/options.h"

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

bool img_parse_size(const char *str, int64_t *out)
{
    char *end;
    double mult = 1;

    errno = 0;
    if (!str || !*str || strchr(str, '-')) {
        return false;
    }
    double v = strtod(str, &end);
    if (errno || end == str) {
        return false;
    }
    switch (*end) {
    case '\0':
        break;
    case 'b': case 'B': mult = 1; end++; break;
    case 'k': case 'K': mult = 1ULL << 10; end++; break;
    case 'm': case 'M': mult = 1ULL << 20; end++; break;
    case 'g': case 'G': mult = 1ULL << 30; end++; break;
    case 't': case 'T': mult = 1ULL << 40; end++; break;
    case 'p': case 'P': mult = 1ULL << 50; end++; break;
    case 'e': case 'E': mult = 1ULL << 60; end++; break;
    default:
        return false;
    }
    if (*end) {
        return false;
    }
    v *= mult;
    /* A fraction of a byte is not a size; neither is anything past INT64_MAX. */
    if (v >= 0x1p63 || v != (double)(int64_t)v) {
        return false;
    }
    *out = (int64_t)v;
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
