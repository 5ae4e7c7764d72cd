/*
 * strata-io internals: the tool's state, the command table and the helpers
 * the command files share.
 *
 * strata-io is a qemu-io compatible exerciser.  Everything runs in the main
 * thread: commands use the synchronous BlockBackend calls (which run the
 * main AioContext while they wait), aio_* commands start requests whose
 * completions print from the main loop later.  Output lines, error shapes
 * and exit codes follow qemu-io 7.2 so that filtered outputs of both tools
 * compare equal (see tests/qemu-iotests-lite).
 *
 * Where messages go, as in qemu-io: results and per-command failures
 * ("read failed: ...", "Pattern verification failed ...", usage lines) go
 * to stdout; dispatch errors ("command ... not found", "bad argument
 * count ...", "no file open ...") and errors carrying a GError go to
 * stderr, the latter prefixed with "strata-io: ".
 */
#ifndef STRATA_IO_SIO_H
#define STRATA_IO_SIO_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "block/block-backend.h"

/* Largest read or write one command may ask for: qemu-io's bound, kept for identical errors. */
#define SIO_MAX_REQUEST 2147483136LL

typedef struct Sio {
    BlockBackend *blk; /* the open image, or NULL */
    int open_flags;    /* BDRV_O_* it was opened with, updated by reopen */
    bool image_opts;   /* --image-opts: "open PATH" takes an option string */
    bool misalign;     /* -m: buffers start 16 bytes past an aligned address */
    bool quit;         /* "quit" ran: stop reading commands */
} Sio;

/* Commands may run without an open image. */
#define SIO_CMD_NOFILE_OK 0x1

typedef struct SioCommand {
    const char *name;
    const char *altname; /* short form ("r" for read), or NULL */
    /* Returns 0 or a negative errno; what failed has already been printed. */
    int (*fn)(Sio *s, int argc, char **argv);
    int argmin, argmax; /* words after the command name; argmax -1: no limit */
    const char *args;   /* synopsis of the arguments, or NULL */
    const char *oneline;
    void (*help)(void); /* extended help, or NULL */
    unsigned flags;
    uint64_t perm; /* BLK_PERM_* the command needs, taken on first use */
} SioCommand;

/* Command tables, each ending with an entry whose name is NULL. */
extern const SioCommand sio_rw_commands[];
extern const SioCommand sio_aio_commands[];
extern const SioCommand sio_misc_commands[];
extern const SioCommand sio_open_commands[];
extern const SioCommand sio_debug_commands[];

/* ---- commands.c ---- */

/*
 * Splits @line on spaces (qemu-io knows no quoting) and runs the command.
 * Empty lines succeed.  Returns 0 or a negative errno.
 */
int sio_run_line(Sio *s, const char *line);
/* Prints "NAME ARGS -- ONELINE" to stdout. */
void sio_print_usage(const SioCommand *ct);
/* The command named @name (or with that altname), or NULL. */
const SioCommand *sio_find_command(const char *name);
/* Completion for interactive mode: the @state-th command name starting with @text. */
char *sio_command_generator(const char *text, int state);

/* ---- sio-util.c ---- */

/*
 * Parses a byte count as qemu-io does: decimal or 0x hex, an optional
 * fraction and a binary suffix (b k m g t p e, any case).  Returns the
 * value (>= 0), or prints the parse error and returns -EINVAL/-ERANGE.
 */
int64_t sio_parse_num(const char *str);
/* Prints why @str is not a number, for a negative result of the parse. */
void sio_print_num_error(int64_t err, const char *str);
/* A pattern byte (0..255, C integer syntax) or -1 after printing an error. */
int sio_parse_pattern(const char *str);

/* "64 KiB", "1.500 KiB", "512 bytes", "888.485319 bytes": a size or rate for humans. */
void sio_fmt_size(double value, char *buf, size_t len);
/* Elapsed time: "00.25 sec" or "0:01:02.50", and always the latter when @machine. */
void sio_fmt_time(int64_t ns, bool machine, char *buf, size_t len);
/*
 * The two result lines of a transfer ("read 512/512 bytes at offset 0"
 * and the statistics), or one comma-separated line when @machine (-C).
 */
void sio_print_report(const char *op, int64_t ns, int64_t offset, int64_t bytes, int ops,
                      bool machine);
/* Hex and ASCII dump of @len bytes that sit at image offset @offset (-v). */
void sio_dump(const void *buf, int64_t offset, size_t len);

/* A buffer of @len bytes filled with @pattern, aligned for O_DIRECT (misaligned with -m). */
void *sio_buf_alloc(Sio *s, size_t len, int pattern);
/* The same, filled with the content of @path repeated; NULL after printing an error. */
void *sio_buf_from_file(Sio *s, size_t len, const char *path);
void sio_buf_free(Sio *s, void *buf);
/* True when @len bytes at @buf are all @pattern; else prints the failure (at @offset). */
bool sio_verify(const void *buf, int pattern, int64_t offset, size_t len);

/*
 * Builds a vector from length arguments ("512", "1k"...), one buffer
 * each, filled with @pattern.  Returns the total, or a negative errno
 * after printing why (then @v is untouched and there is nothing to
 * free).  Release with sio_iov_free().
 */
int64_t sio_iov_build(Sio *s, IOVector *v, char **lens, int nlens, int pattern);
void sio_iov_free(Sio *s, IOVector *v);

/* Prints "strata-io: " and the formatted message to stderr. */
void sio_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* ---- sio-xfer.c: options shared by the data commands ---- */

/* qemu-io's default buffer contents: reads 0xab (so that a short read shows), writes 0xcd. */
#define SIO_READ_FILL  0xab
#define SIO_WRITE_FILL 0xcd

typedef struct SioXferOpts {
    bool machine;           /* -C */
    bool quiet;             /* -q */
    bool verbose;           /* -v */
    bool zeroes;            /* -z */
    BdrvRequestFlags flags; /* -f: FUA, -u: MAY_UNMAP */
    int pattern;            /* -P byte; set the default (-1: none) before parsing */
} SioXferOpts;

/*
 * A command's own option letter @c (with @arg for those that take one).
 * Returns 0, -ENOENT for a letter it does not know (usage is printed), or
 * another negative errno after printing why.
 */
typedef int SioXferExtraOpt(int c, const char *arg, void *opaque);

/*
 * Runs getopt over @argv with @optstring, filling @o for the shared
 * letters and calling @extra (may be NULL) for the others.  Returns 0,
 * 1 when -i was seen (the parse stops there), or -EINVAL after printing
 * the error or @cmd's usage.  optind is left after the last option.
 */
int sio_parse_xfer_opts(int argc, char **argv, const char *optstring, const char *cmd,
                        SioXferOpts *o, SioXferExtraOpt *extra, void *opaque);
/* Prints @name's usage line; returns -EINVAL. */
int sio_usage(const char *name);
/* Parses an offset or length argument into *out; prints the error itself (-EINVAL). */
int sio_parse_arg(const char *str, int64_t *out);

/* ---- sio-block.c: what the tool needs beyond the BlockBackend API ---- */

/* True when @driver names a protocol driver ("file", "null-co"). */
bool sio_driver_is_protocol(const char *driver);
/* Cache mode name to BDRV_O_NOCACHE/NO_FLUSH bits and write-through. */
bool sio_parse_cache_mode(const char *mode, int *flags, bool *writethrough);
/*
 * Cluster size and VM state offset of the root node.  Drivers without
 * format details report zeroes, as qemu-io shows for raw and file.
 */
int sio_get_info(BlockDriverState *bs, int *cluster_size, int64_t *vm_state_offset);
/* The node's open flags (BDRV_O_*), as a reopen left them. */
int sio_node_flags(BlockDriverState *bs);

/* ---- sio-info.c ---- */

/*
 * "format name: ..." as qemu-io prints it: the format name, then the
 * protocol name when the driver has one (so "file" shows twice).
 */
void sio_print_format_name(BlockDriverState *bs);
/*
 * Prints "Format specific information:" and the driver's details in
 * qemu-io's layout, or nothing when the driver has none.  Returns 0, or
 * -EIO after printing why the driver could not tell.
 */
int sio_print_specific_info(BlockDriverState *bs);

/* ---- sio-snapshot.c ---- */

/*
 * A temporary qcow2 overlay (its file already unlinked) whose backing
 * node is @base, writable when @flags has BDRV_O_RDWR.  Returns a new
 * reference, or NULL.  The caller keeps its own reference to @base.
 */
BlockDriverState *sio_snapshot_overlay(BlockDriverState *base, int flags, GError **errp);

/* ---- cmd-open.c ---- */

/*
 * Opens an image as the current one.  @opts (consumed, may be NULL) are
 * block options; @aio ("threads"...) may be NULL.  With @snapshot, the
 * image is opened read-only under a temporary overlay that takes the
 * writes (sio-snapshot.c).  Prints why it failed.
 */
bool sio_open(Sio *s, const char *name, GHashTable *opts, int flags, bool writethrough,
              const char *aio, bool snapshot);
/* Waits for the aio requests still in flight, then closes the image. */
void sio_close(Sio *s);
/* -d values: ignore/off clear BDRV_O_UNMAP, unmap/on set it; false for anything else. */
bool sio_parse_discard(const char *mode, int *flags);
/* True for the I/O engines the file driver knows: threads, native, io_uring. */
bool sio_parse_aio(const char *mode);

/* ---- interactive.c ---- */

/* Reads commands from stdin until EOF or quit; returns 0 or the last failure. */
int sio_interactive(Sio *s);

#endif /* STRATA_IO_SIO_H */
