/*
 * blkdebug, private header: the rules and the node state shared by the
 * driver (blkdebug.c) and its configuration reader (blkdebug-config.c).
 *
 * A rule says what to do when a format driver above fires a debug event
 * (block/debug-event.h): inject an error into the following requests, move
 * to another state, or stop the request at a breakpoint.  Rules come from
 * a QEMU-style configuration file and from options; breakpoints come from
 * strata-io's "break" command.
 */
#ifndef STRATA_BLKDEBUG_H
#define STRATA_BLKDEBUG_H

#include <pthread.h>

#include "block/block-int.h"

typedef enum BlkdebugAction {
    BLKDEBUG_INJECT_ERROR,
    BLKDEBUG_SET_STATE,
    BLKDEBUG_SUSPEND,
    BLKDEBUG__ACTION_MAX,
} BlkdebugAction;

/* Kinds of requests an injected error may hit (QEMU's BlkdebugIOType). */
typedef enum BlkdebugIOType {
    BLKDEBUG_IO_READ,
    BLKDEBUG_IO_WRITE,
    BLKDEBUG_IO_WRITE_ZEROES,
    BLKDEBUG_IO_DISCARD,
    BLKDEBUG_IO_FLUSH,
    BLKDEBUG_IO_BLOCK_STATUS,
    BLKDEBUG__IO_MAX,
} BlkdebugIOType;

/* Everything but block-status, QEMU's default. */
#define BLKDEBUG_IO_DEFAULT_MASK                                                                   \
    ((1u << BLKDEBUG_IO_READ) | (1u << BLKDEBUG_IO_WRITE) | (1u << BLKDEBUG_IO_WRITE_ZEROES) |     \
     (1u << BLKDEBUG_IO_DISCARD) | (1u << BLKDEBUG_IO_FLUSH))

typedef struct BlkdebugRule {
    BlkdebugEvent event;
    BlkdebugAction action;
    int state; /* the rule applies only in this state; 0: in any */
    union {
        struct {
            int error;            /* errno to fail with (positive) */
            bool once;            /* removed after failing one request */
            bool immediately;     /* fail without yielding first */
            int64_t offset;       /* only requests covering this byte; -1: any */
            unsigned iotype_mask; /* 1 << BlkdebugIOType */
            int64_t delay_ns;     /* sleep before failing */
        } inject;
        struct {
            int new_state;
        } set_state;
        struct {
            char *tag;
        } suspend;
    } u;
    bool active; /* in s->active: injects into the next requests */
} BlkdebugRule;

/* A request stopped at a breakpoint. */
typedef struct BlkdebugSuspended {
    Coroutine *co;
    char *tag;
} BlkdebugSuspended;

/*
 * The node state.  config_file, align and max_transfer are set at open
 * and read-only afterwards.  Under @lock (any thread): state, the rule
 * lists, the active list and the suspended list.  A rule is in exactly
 * one rules[] list; when active it is also in @active.
 */
typedef struct BDRVBlkdebugState {
    char *config_file;
    uint64_t align;
    uint64_t max_transfer;

    pthread_mutex_t lock;
    int state;                 /* starts at 1 */
    GList *rules[BLKDBG__MAX]; /* BlkdebugRule *, in configuration order */
    GList *active;             /* BlkdebugRule *, the rules the last event armed */
    GList *suspended;          /* BlkdebugSuspended * */
} BDRVBlkdebugState;

/*
 * Reads the rules of configuration file @path (may be NULL) and of the
 * "inject-error.*" and "set-state.*" entries of @options (taken), and
 * appends them to s->rules.  The file syntax and the messages are QEMU's:
 *     [inject-error]
 *     event = "l2_update"
 *     errno = "28"
 * Main loop, before the node serves requests.
 */
bool blkdebug_read_config(BDRVBlkdebugState *s, const char *path, GHashTable *options,
                          GError **errp);
/* Frees @rule (not in any list any more). */
void blkdebug_rule_free(BlkdebugRule *rule);

#endif /* STRATA_BLKDEBUG_H */
