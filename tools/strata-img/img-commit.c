/*
 * strata-img commit: qemu-img 7.2's commit (options, messages, exit codes)
 * on the library's commit job.
 *
 * As qemu-img does, it runs an active commit of the image into its backing
 * file (or the -b image further down): the job copies what is above base,
 * becomes ready and is completed; then, unless -d or -b was given, the
 * top image is emptied so that it reads through to base.  --progress=json
 * is Strata's addition (as in convert).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/block-jobs.h"
#include "tools/strata-img/img-progress.h"
#include "tools/strata-img/img.h"

enum { OPT_PROGRESS = IMG_OPT_LOCAL };

/* "proto:..." (a colon before any slash). */
static bool has_protocol(const char *name)
{
    size_t n = strcspn(name, ":/\\");
    return name[n] == ':';
}

/* Canonical absolute path of an existing file, or NULL. */
static char *real_path(const char *path)
{
    char buf[PATH_MAX];
    return path && realpath(path, buf) ? g_strdup(buf) : NULL;
}

/*
 * qemu-img's -b lookup: the node below the first image of the chain whose
 * backing file is @name, @name being relative to that image's directory
 * (compared as canonical paths), or, for protocol names, the same string.
 */
static BlockDriverState *find_backing_image(BlockDriverState *bs, const char *name)
{
    for (BlockDriverState *cur = bdrv_skip_filters(bs); cur && bdrv_cow_bs(cur);
         cur = bdrv_skip_filters(bdrv_cow_bs(cur))) {
        BlockDriverState *below = bdrv_cow_bs(cur);
        const char *stored = cur->backing_file ? cur->backing_file : "";
        g_autofree char *full = bdrv_get_full_backing_filename(cur, NULL);
        if (has_protocol(name) || has_protocol(stored)) {
            if (strcmp(name, stored) == 0 || (full && strcmp(name, full) == 0)) {
                return below;
            }
            continue;
        }
        g_autofree char *dir = g_path_get_dirname(cur->filename ? cur->filename : ".");
        g_autofree char *wanted =
            g_path_is_absolute(name) ? g_strdup(name) : g_build_filename(dir, name, NULL);
        g_autofree char *a = real_path(wanted);
        g_autofree char *b = real_path(full);
        if (a && b && strcmp(a, b) == 0) {
            return below;
        }
    }
    return NULL;
}

/* Runs the main loop until the job is ready or done, showing progress as it goes. */
static int commit_run_job(Job *job, ImgProgress *progress, GError **errp)
{
    uint64_t shown = 0;
    job_ref(job);
    while (!job_is_ready(job) && !job_is_completed(job)) {
        aio_poll(aio_main_context(), true);
        uint64_t cur, total;
        job_progress(job, &cur, &total);
        img_progress_set_total(progress, total ? total : 1);
        if (cur >= shown) {
            img_progress_add(progress, cur - shown);
            shown = cur;
        }
    }
    int ret = job_is_completed(job) ? job_wait(job, false, errp) : job_complete_sync(job, errp);
    job_unref(job);
    return ret;
}

typedef struct CommitArgs {
    ImgOpenOptions o; /* -f, -t, --image-opts */
    const char *base;
    bool drop, quiet, progress;
    ImgProgressMode mode;
    int64_t rate;
} CommitArgs;

/* Parses one option; returns 0 to go on, 1 to fail, -1 to exit successfully. */
static int commit_option(CommitArgs *a, int c, char **argv)
{
    bool range = false;
    int ret;

    switch (c) {
    case 'b':
        a->base = optarg;
        a->drop = true; /* -b implies -d */
        break;
    case 'd':
        a->drop = true;
        break;
    case 'p':
        a->progress = true;
        a->mode = IMG_PROGRESS_HUMAN;
        break;
    case 'r':
        if (!img_parse_size_ex(optarg, &a->rate, &range)) {
            if (range) {
                img_error("Invalid rate limit specified. Must be between 0 and %" G_GINT64_FORMAT
                          ".",
                          (gint64)INT64_MAX);
            } else {
                img_error_size_suffix("rate limit");
            }
            return 1;
        }
        break;
    case OPT_PROGRESS:
        a->progress = true;
        return img_progress_parse_mode(optarg, &a->mode) ? 0 : 1;
    default:
        if (!img_common_opt(c, argv, &a->o, &a->quiet, NULL, &ret)) {
            return ret == 0 ? -1 : 1;
        }
    }
    return 0;
}

int img_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"progress", optional_argument, NULL, OPT_PROGRESS},
        {NULL, 0, NULL, 0},
    };
    /* Read-write, and with discard=unmap (which the backing files inherit) so that zeroed
     * ranges committed into base are deallocated as qemu-img does. */
    CommitArgs a = {.o = {.writable = true, .unmap = true}};
    GError *err = NULL;
    int c;

    while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", longopts, NULL)) != -1) {
        int r = commit_option(&a, c, argv);
        if (r) {
            return r < 0 ? 0 : 1;
        }
    }
    if (a.quiet) {
        a.progress = false; /* progress is not shown in quiet mode */
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        img_usage_hint();
        return 1;
    }
    const char *filename = argv[optind];

    BlockBackend *blk = img_open(filename, &a.o, "writeback");
    if (!blk) {
        return 1;
    }
    BlockDriverState *bs = bdrv_skip_filters(blk_bs(blk));
    ImgProgress *progress = img_progress_start(a.progress ? a.mode : IMG_PROGRESS_NONE);

    BlockDriverState *base;
    if (a.base) {
        base = find_backing_image(bs, a.base);
        if (!base) {
            g_set_error(&err, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                        "Did not find '%s' in the backing chain of '%s'", a.base, filename);
        }
    } else {
        /* qemu-img's default is the immediate backing file, not the bottom of the chain. */
        base = bdrv_skip_filters(bdrv_cow_bs(bs));
        if (!base) {
            g_set_error(&err, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Image does not have a backing file");
        }
    }

    int ret = -EINVAL;
    if (base) {
        /* The job moves the image's users to base; keep top to empty it afterwards. */
        bdrv_ref(bs);
        BlockJobOptions jo = {.id = "commit", .speed = a.rate};
        Job *job = commit_active_start(bs, base, &jo, &err);
        if (job) {
            ret = commit_run_job(job, progress, &err);
        }
        if (ret == 0 && !a.drop && bs->drv->make_empty) {
            ret = bs->drv->make_empty(bs);
            if (ret == -ENOTSUP) {
                ret = 0;
            } else if (ret < 0) {
                g_set_error(&err, G_FILE_ERROR, g_file_error_from_errno(-ret),
                            "Could not empty %s: %s", filename, g_strerror(-ret));
            }
        }
        bdrv_unref(bs);
    }
    img_progress_finish(progress, ret == 0);
    blk_unref(blk);
    if (err) {
        img_report_error(err);
        return 1;
    }
    img_printf(a.quiet, "Image committed.\n");
    return 0;
}
