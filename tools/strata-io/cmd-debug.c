/*
 * strata-io breakpoint commands for the blkdebug test driver: break,
 * wait_break, resume, remove_break.
 *
 * Each command calls one bdrv_debug_*() function (block/debug-event.h),
 * which walks down from the root node to the first node whose driver
 * handles breakpoints (blkdebug).  Without one they answer -ENOTSUP, and
 * the command prints what qemu-io prints for an image without blkdebug.
 */
#include <errno.h>
#include <string.h>

#include "block/debug-event.h"
#include "tools/strata-io/sio.h"

static int break_f(Sio *s, int argc, char **argv)
{
    int ret = bdrv_debug_breakpoint(blk_bs(s->blk), argv[1], argv[2]);
    if (ret < 0) {
        printf("Could not set breakpoint: %s\n", strerror(-ret));
    }
    return ret;
}

static int remove_break_f(Sio *s, int argc, char **argv)
{
    int ret = bdrv_debug_remove_breakpoint(blk_bs(s->blk), argv[1]);
    if (ret < 0) {
        printf("Could not remove breakpoint %s: %s\n", argv[1], strerror(-ret));
    }
    return ret;
}

static int resume_f(Sio *s, int argc, char **argv)
{
    int ret = bdrv_debug_resume(blk_bs(s->blk), argv[1]);
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
    while ((ret = bdrv_debug_is_suspended(blk_bs(s->blk), argv[1])) == 0) {
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
