/*
 * strata-img: shared pieces of the subcommands (argument helpers, opening
 * images the way qemu-img does, error output, running a coroutine to
 * completion from main, JSON and human output in qemu-img's layout).  Each
 * subcommand lives in its own img-<name>.c.
 */
#ifndef STRATA_IMG_H
#define STRATA_IMG_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block-backend.h"
#include "block/block-int.h"
#include "coroutine/coroutine.h"

/* A subcommand: returns the process exit status. */
typedef int ImgCommandFunc(int argc, char **argv);

int img_amend(int argc, char **argv);
int img_bench(int argc, char **argv);
int img_bitmap(int argc, char **argv);
int img_check(int argc, char **argv);
int img_commit(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_create(int argc, char **argv);
int img_dd(int argc, char **argv);
int img_info(int argc, char **argv);
int img_map(int argc, char **argv);
int img_measure(int argc, char **argv);
int img_rebase(int argc, char **argv);
int img_resize(int argc, char **argv);
int img_snapshot(int argc, char **argv);

/* The general help text (main.c); subcommands print it for -h. */
void img_help(void);

/* Prints "strata-img: <message>" on stderr. */
void G_GNUC_PRINTF(1, 2) img_error(const char *fmt, ...);
/* Same for a GError, then frees it. */
void img_report_error(GError *err);
/* The "Try 'strata-img --help'" hint qemu-img prints after a usage error. */
void img_usage_hint(void);
/*
 * getopt's error for the option that just failed (@c is what getopt
 * returned: ':' for a missing argument, '?' otherwise), in qemu-img's
 * words, followed by the usage hint.
 */
void img_getopt_error(int c, char **argv);

/* Prints to stdout unless @quiet (qemu-img's -q). */
void G_GNUC_PRINTF(2, 3) img_printf(bool quiet, const char *fmt, ...);

/*
 * @name seen from the directory of @base, as qemu-img combines a backing
 * file name with its overlay's: "sub/top.qcow2" + "base.qcow2" is
 * "sub/base.qcow2"; a @base without a directory leaves @name as it is (no
 * "./"); absolute names and "proto:..." / "json:..." names stay as they are.
 */
char *img_path_combine(const char *base, const char *name);

/*
 * qemu-img's plain progress records ("    (25.00/100%)\r" on stdout), for the
 * subcommands whose -p output follows qemu-img's exactly (compare, rebase):
 * a record whenever the figure moved by more than @min_skip points since
 * the last one, and whenever it is 0 or 100.
 */
typedef struct ImgSimpleProgress {
    bool enabled;
    double min_skip, last;
} ImgSimpleProgress;

void img_simple_progress_init(ImgSimpleProgress *p, bool enabled, double min_skip);
/* The work is @percent done (0 to 100, clamped). */
void img_simple_progress_set(ImgSimpleProgress *p, double percent);
/* Ends the progress line (a new line when enabled). */
void img_simple_progress_end(ImgSimpleProgress *p);

/* ---- sizes ---------------------------------------------------------------------------------- */

/*
 * Parses a byte count the way qemu-img does: decimal (a fraction only with
 * a unit suffix: "1.5G") or 0x hexadecimal, optional suffix b/B (bytes),
 * k/K, M, G, T, P, E (powers of 1024), nothing else around it.  Returns
 * 0, -EINVAL for junk (a minus sign included), -ERANGE above UINT64_MAX.
 */
int img_strtosz(const char *str, uint64_t *out);
/*
 * img_strtosz limited to [0, INT64_MAX] (an image size).  Returns false on
 * any error; *range tells whether the number was only too big.
 */
bool img_parse_size_ex(const char *str, int64_t *out, bool *range);
/* Same, without telling why. */
bool img_parse_size(const char *str, int64_t *out);
/*
 * qemu-img's two-line complaint about a bad size:
 * "Invalid <what> specified. You may use k, M, G, T, P or E suffixes for" ...
 */
void img_error_size_suffix(const char *what);
/* "1.5 KiB", "977 KiB", "4.66 GiB": three significant digits (caller frees). */
char *img_size_to_str(uint64_t size);

/* --output=human|json */
typedef enum ImgOutputFormat {
    IMG_OUTPUT_HUMAN,
    IMG_OUTPUT_JSON,
} ImgOutputFormat;

/* Parses --output's argument; prints qemu-img's error and returns false on anything else. */
bool img_parse_output_format(const char *arg, ImgOutputFormat *out);

/* ---- opening images ------------------------------------------------------------------------- */

/* How to open an image: what qemu-img's common options set. */
typedef struct ImgOpenOptions {
    const char *fmt;   /* -f, NULL to probe */
    bool image_opts;   /* --image-opts: the filename is key=value,... */
    const char *cache; /* -t, NULL for the subcommand's default */
    const char *aio;   /* -i threads|native|io_uring, or NULL */
    bool native_aio;   /* -n in bench: aio=native */
    bool force_share;  /* -U */
    bool writable;
    bool no_backing;
    bool resize; /* take the resize permission (resize) */
    bool unmap;  /* discard=unmap, inherited by the backing files (commit) */
} ImgOpenOptions;

/* qemu-img's check of -f against --image-opts; prints its error and returns false on a clash. */
bool img_check_format_opts(const ImgOpenOptions *o);

/* getopt_long codes of the long options subcommands share; their own start at IMG_OPT_LOCAL. */
enum {
    IMG_OPT_OBJECT = 256, /* --object */
    IMG_OPT_IMAGE_OPTS,   /* --image-opts */
    IMG_OPT_OUTPUT,       /* --output */
    IMG_OPT_LOCAL,
};

/*
 * -l's argument in qemu-img's two forms: a plain ID or name, or
 * snapshot.id=ID,snapshot.name=NAME.  The parser prints qemu-img's errors;
 * the loader shows the snapshot's disk on the read-only @bs from then on.
 */
typedef struct ImgSnapshotParam {
    char *id;
    char *name;
    bool plain; /* @name is an ID or a name, tried in that order */
} ImgSnapshotParam;
bool img_parse_snapshot_param(const char *arg, ImgSnapshotParam *p);
bool img_load_snapshot(BlockDriverState *bs, const ImgSnapshotParam *p);
void img_snapshot_param_clear(ImgSnapshotParam *p);

/*
 * The options subcommands share, with qemu-img's meaning: -h (help),
 * -f, -U, --image-opts and -t / -T (the cache of the image @o opens) fill
 * @o; -q sets *@quiet; --output stores its argument in *@output (parsed
 * later, so that its error comes in qemu-img's order); --object is
 * refused; anything else is getopt's error (img_getopt_error).  Call it
 * from the default branch of a subcommand's switch: the subcommand's own
 * cases come first, so a letter it gives another meaning stays its own.
 * A pointer may be NULL when the subcommand does not offer that option.
 * Returns true to go on parsing, false when the subcommand must return
 * *@ret now (0 after -h, 1 after an error, printed).
 */
bool img_common_opt(int c, char **argv, ImgOpenOptions *o, bool *quiet, const char **output,
                    int *ret);

/*
 * Opens @filename as qemu-img would, with its error text ("Could not open
 * 'x': ...").  Returns NULL after printing the error.
 */
BlockBackend *img_open(const char *filename, const ImgOpenOptions *o, const char *default_cache);

/* True when @mode is a cache mode qemu-img accepts (-t, -T). */
bool img_cache_mode_valid(const char *mode);
/*
 * True when @mode is NULL (not given) or valid; else prints "Invalid
 * <what> option: <mode>" (@what: "cache" or "source cache").
 */
bool img_check_cache_mode(const char *mode, const char *what);

/*
 * Runs entry(opaque) in a new coroutine in the main context and polls the
 * main loop until it returns.
 */
void img_run_co(CoroutineEntry *entry, void *opaque);

/* Allocated bytes of @bs on the host (st_blocks), or -errno. */
int64_t img_get_allocated_file_size(BlockDriverState *bs);

/* ---- JSON output (qemu's pretty printer layout) -----------------------------------------------
 */

/*
 * A streaming writer: members are written in call order, four spaces per
 * level, `"key": value`, empty containers as an open and a close line.
 * Inside an array pass key = NULL.  Strings are escaped as QEMU does
 * (non-ASCII as \uXXXX).
 */
typedef struct ImgJson {
    GString *out;
    int depth;
    uint64_t has_items; /* bit d: the container at depth d has a member already */
} ImgJson;

void img_json_init(ImgJson *j);
/* Returns the text (caller frees) and resets the writer. */
char *img_json_finish(ImgJson *j);
void img_json_begin_object(ImgJson *j, const char *key);
void img_json_end_object(ImgJson *j);
void img_json_begin_array(ImgJson *j, const char *key);
void img_json_end_array(ImgJson *j);
void img_json_int(ImgJson *j, const char *key, int64_t v);
void img_json_uint(ImgJson *j, const char *key, uint64_t v);
void img_json_bool(ImgJson *j, const char *key, bool v);
void img_json_str(ImgJson *j, const char *key, const char *v);
/*
 * Writes a GVariant tree: a{sv} as an object, av (or any array) as an
 * array, scalars as numbers, booleans and strings.
 */
void img_json_variant(ImgJson *j, const char *key, GVariant *v);
/* Appends @s to @out as a JSON string literal, quotes included. */
void img_json_quote(GString *out, const char *s);

/* ---- what the library does not offer yet (img-driver.c) -------------------------------------- */

/* bdrv_create (consumes @options), working around raw's double release of them. */
bool img_bdrv_create(BlockDriver *drv, const char *filename, GHashTable *options, GError **errp);

/* bdrv_get_info: the driver's get_info, or what qemu-img shows for raw. -ENOTSUP when neither. */
int img_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);

/* "Snapshot list:" and the table of @n snapshots, as info and snapshot -l print it. */
struct BdrvSnapshotInfo;
void img_dump_snapshot_table(GString *out, const struct BdrvSnapshotInfo *list, int n);

/* ---- creation options (img-create-opts.c) ---------------------------------------------------- */

typedef enum ImgOptType {
    IMG_OPT_STRING,
    IMG_OPT_BOOL,
    IMG_OPT_NUMBER,
    IMG_OPT_SIZE,
} ImgOptType;

/* One creation option of a driver, as qemu-img lists and prints it. */
typedef struct ImgCreateOpt {
    const char *name;
    ImgOptType type;
    const char *help;
    const char *def; /* printed in "Formatting ..." even when not given */
} ImgCreateOpt;

/*
 * The creation options of @drv followed by those of @proto that it does
 * not have itself (@proto may be NULL), in the order "Formatting ..."
 * prints them.  Never NULL (may be empty).  Free with g_ptr_array_unref.
 */
GPtrArray *img_create_opts_for(BlockDriver *drv, BlockDriver *proto);
const ImgCreateOpt *img_create_opt_find(GPtrArray *list, const char *name);

/* qemu's check of an -o argument: not empty, no empty item. */
bool img_opt_list_valid(const char *list);
/*
 * Appends -o's @arg to *@list (",": qemu-img joins repeated -o); frees and
 * replaces *@list.  Prints "Invalid option list" and returns false when
 * @arg is not a valid list.
 */
bool img_opt_list_append(char **list, const char *arg);
/* True when the -o list asks for help ("help" or "?" as an item). */
bool img_opt_list_has_help(const char *list);
/*
 * "-o help" of create and convert: the creation options of format @fmt,
 * with its protocol's when @filename (the image to create) is given.
 * Returns the exit status.
 */
int img_create_opts_help(const char *fmt, const char *filename);
/*
 * Parses "k=v,k2=v2" (",," is a literal comma; a bare "k" means k=on and
 * a bare "nok" k=off) against @list into @values (normalised strings:
 * sizes and numbers in decimal, booleans on/off) and @shown (the text
 * "Formatting" prints).  On error prints nothing and fills @errp with
 * qemu-img's text.
 */
bool img_opts_parse(GPtrArray *list, const char *str, GHashTable *values, GHashTable *shown,
                    GError **errp);
/* "Supported <title> options:" ("Supported options:" for NULL) and the sorted list. */
void img_print_opts_help(GPtrArray *list, const char *title);
/* The sorted list alone, one "  name=<type>  - help" line each (amend has its own title). */
void img_print_opts_list(GPtrArray *list);
/* The options as "Formatting" shows them: given ones and defaults, in table order. */
char *img_opts_to_string(GPtrArray *list, GHashTable *shown);

#endif /* STRATA_IMG_H */
