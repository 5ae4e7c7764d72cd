/*
 * strata-io breakpoint commands for the blkdebug test driver: break,
 * wait_break, resume, remove_break.
 *
 * The hook: each command calls one debug_*() function below.  No driver
 * supports breakpoints yet, so they answer -ENOTSUP, which prints what
 * qemu-io prints for an image without blkdebug.  When blkdebug lands,
 * these four functions forward to it (walking down from the root node to
 * the first node whose driver handles breakpoints) and nothing else here
 * changes.
 */
#include <errno.h>
#include <string.h>

#include "tools/strata-io/sio.h"

static int debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag)
{
    return -ENOTSUP;
}

static int debug_remove_breakpoint(BlockDriverState *bs, const char *tag)
{
    return -ENOTSUP;
}

static int debug_resume(BlockDriverState *bs, const char *tag)
{
    return -ENOTSUP;
}

/* 1 when a request stopped at @tag's breakpoint, 0 when none has yet, or -errno. */
static int debug_is_suspended(BlockDriverState *bs, const char *tag)
{
    return -ENOTSUP;
}

static int break_f(Sio *s, int argc, char **argv)
{
    int ret = debug_breakpoint(blk_bs(s->blk), argv[1], argv[2]);
    if (ret < 0) {
        printf("Could not set breakpoint: %s\n", strerror(-ret));
    }
    return ret;
}

static int remove_break_f(Sio *s, int argc, char **argv)
{
    int ret = debug_remove_breakpoint(blk_bs(s->blk), argv[1]);
    if (ret < 0) {
        printf("Could not remove breakpoint %s: %s\n", argv[1], strerror(-ret));
    }
    return ret;
}

static int resume_f(Sio *s, int argc, char **argv)
{
    int ret = debug_resume(blk_bs(s->blk), argv[1]);
    if (ret < 0) {
        printf("Could not resume request: %s\n", strerror(-ret));
    }
    return ret;
}

/*
 * Runs the main loop until a request stops at the breakpoint.  (qemu-io
 * waits forever on an image without blkdebug; we say why we cannot wait.)
 */
static int wait_break_f(Sio *s, int argc, char **argv)
{
    int ret;
    while ((ret = debug_is_suspended(blk_bs(s->blk), argv[1])) == 0) {
        aio_poll(aio_main_context(), true);
    }
    if (ret < 0) {
        printf("Could not wait for breakpoint %s: %s\n", argv[1], strerror(-ret));
        return ret;
    }
    return 0;
}

const SioCommand sio_debug_commands[] = {
    {
        .name = "break",
        .fn = break_f,
        .argmin = 2,
        .argmax = 2,
        .args = "event tag",
        .oneline = "sets a breakpoint on event and tags the stopped request as tag",
    },
    {
        .name = "remove_break",
        .fn = remove_break_f,
        .argmin = 1,
        .argmax = 1,
        .args = "tag",
        .oneline = "remove a breakpoint by tag",
    },
    {
        .name = "resume",
        .fn = resume_f,
        .argmin = 1,
        .argmax = 1,
        .args = "tag",
        .oneline = "resumes the request tagged as tag",
    },
    {
        .name = "wait_break",
        .fn = wait_break_f,
        .argmin = 1,
        .argmax = 1,
        .args = "tag",
        .oneline = "waits for the suspension of a request",
    },
    {0},
};
