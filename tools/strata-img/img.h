/*
 * strata-img: shared pieces of the subcommands (argument helpers, opening
 * images the way qemu-img does, error output, running a coroutine to
 * completion from main).  Each subcommand lives in its own img-<name>.c.
 */
#ifndef STRATA_IMG_H
#define STRATA_IMG_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block-backend.h"
#include "coroutine/coroutine.h"

/* A subcommand: returns the process exit status. */
typedef int ImgCommandFunc(int argc, char **argv);

int img_bench(int argc, char **argv);

/* Prints "strata-img: <message>" on stderr. */
void G_GNUC_PRINTF(1, 2) img_error(const char *fmt, ...);
/* Same for a GError, then frees it. */
void img_report_error(GError *err);
/* The "Try 'strata-img --help'" hint qemu-img prints after a usage error. */
void img_usage_hint(void);

/*
 * Parses a size with qemu-img's suffixes (k/K, M, G, T, P, E; no suffix =
 * bytes).  Returns false on junk, negative values or overflow.
 */
bool img_parse_size(const char *str, int64_t *out);

/* How to open an image: what qemu-img's common options set. */
typedef struct ImgOpenOptions {
    const char *fmt;        /* -f, NULL to probe */
    bool image_opts;        /* --image-opts: the filename is key=value,... */
    const char *cache;      /* -t, NULL for the subcommand's default */
    const char *aio;        /* -i threads|native|io_uring, or NULL */
    bool native_aio;        /* -n in bench: aio=native */
    bool force_share;       /* -U */
    bool writable;
    bool no_backing;
} ImgOpenOptions;

/*
 * Opens @filename as qemu-img would, with its error text ("Could not open
 * 'x': ...").  Returns NULL after printing the error.
 */
BlockBackend *img_open(const char *filename, const ImgOpenOptions *o, const char *default_cache);

/*
 * Runs entry(opaque) in a new coroutine in the main context and polls the
 * main loop until it returns.
 */
void img_run_co(CoroutineEntry *entry, void *opaque);

#endif /* STRATA_IMG_H */
