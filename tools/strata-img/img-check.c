/*
 * strata-img check: runs the format driver's consistency check (co_check)
 * and reports as qemu-img 7.2 does, human or JSON, with its exit codes:
 *   0  consistent (possibly after repair)     2  corruptions remain
 *   1  the check could not complete           3  only leaked clusters remain
 *   63 the format has no check (raw)
 * With -r, the image is opened read-write, repaired, and checked a second
 * time; the report is the second check plus the repair counts of the first.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/graph-lock.h"
#include "tools/strata-img/img.h"

typedef struct ImgCheck {
    BlockDriverState *bs;
    BdrvCheckMode fix;
    BdrvCheckResult result;
    int ret;
} ImgCheck;

static void coroutine_fn img_check_co(void *opaque)
{
    ImgCheck *c = opaque;
    GRAPH_RDLOCK_GUARD();
    memset(&c->result, 0, sizeof(c->result));
    if (!c->bs->drv) {
        c->ret = -ENOMEDIUM;
    } else if (!c->bs->drv->co_check) {
        c->ret = -ENOTSUP;
    } else {
        c->ret = c->bs->drv->co_check(c->bs, &c->result, c->fix);
    }
}

static int img_run_check(BlockDriverState *bs, BdrvCheckMode fix, BdrvCheckResult *result)
{
    ImgCheck c = {.bs = bs, .fix = fix};
    img_run_co(img_check_co, &c);
    *result = c.result;
    return c.ret;
}

static void img_check_human(const BdrvCheckResult *r, bool quiet)
{
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        img_printf(quiet, "No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            img_printf(quiet,
                       "\n%d errors were found on the image.\n"
                       "Data may be corrupted, or further writes to the image may corrupt it.\n",
                       r->corruptions);
        }
        if (r->leaks) {
            img_printf(quiet,
                       "\n%d leaked clusters were found on the image.\n"
                       "This means waste of disk space, but no harm to data.\n",
                       r->leaks);
        }
        if (r->check_errors) {
            img_printf(quiet, "\n%d internal errors have occurred during the check.\n",
                       r->check_errors);
        }
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0) {
        img_printf(quiet,
                   "%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
                   "compressed clusters\n",
                   r->allocated_clusters, r->total_clusters,
                   r->allocated_clusters * 100.0 / r->total_clusters,
                   r->fragmented_clusters * 100.0 / r->allocated_clusters,
                   r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset > 0) {
        img_printf(quiet, "Image end offset: %" PRId64 "\n", r->image_end_offset);
    }
}

/* Zero counters are left out, as qemu-img does; keys in its order. */
static void img_check_json(const BdrvCheckResult *r, const char *filename, const char *format)
{
    ImgJson j;

    img_json_init(&j);
    img_json_begin_object(&j, NULL);
    if (r->image_end_offset) {
        img_json_int(&j, "image-end-offset", r->image_end_offset);
    }
    if (r->compressed_clusters) {
        img_json_int(&j, "compressed-clusters", r->compressed_clusters);
    }
    if (r->total_clusters) {
        img_json_int(&j, "total-clusters", r->total_clusters);
    }
    if (r->corruptions) {
        img_json_int(&j, "corruptions", r->corruptions);
    }
    if (r->corruptions_fixed) {
        img_json_int(&j, "corruptions-fixed", r->corruptions_fixed);
    }
    img_json_int(&j, "check-errors", r->check_errors);
    if (r->leaks) {
        img_json_int(&j, "leaks", r->leaks);
    }
    if (r->leaks_fixed) {
        img_json_int(&j, "leaks-fixed", r->leaks_fixed);
    }
    if (r->allocated_clusters) {
        img_json_int(&j, "allocated-clusters", r->allocated_clusters);
    }
    img_json_str(&j, "filename", filename);
    img_json_str(&j, "format", format);
    if (r->fragmented_clusters) {
        img_json_int(&j, "fragmented-clusters", r->fragmented_clusters);
    }
    img_json_end_object(&j);
    g_autofree char *text = img_json_finish(&j);
    printf("%s\n", text);
}

/* Checks (and repairs) @bs; prints the report.  Returns the exit status. */
static int img_check_image(BlockDriverState *bs, const char *filename, BdrvCheckMode fix,
                           ImgOutputFormat output, bool quiet)
{
    BdrvCheckResult r;
    int ret = img_run_check(bs, fix, &r);

    if (ret == -ENOTSUP) {
        img_error("This image format does not support checks");
        return 63;
    }
    if (ret == 0 && fix && (r.corruptions_fixed || r.leaks_fixed)) {
        int corruptions_fixed = r.corruptions_fixed, leaks_fixed = r.leaks_fixed;
        if (output == IMG_OUTPUT_HUMAN) {
            img_printf(quiet,
                       "The following inconsistencies were found and repaired:\n\n"
                       "    %d leaked clusters\n    %d corruptions\n\n"
                       "Double checking the fixed image now...\n",
                       leaks_fixed, corruptions_fixed);
        }
        ret = img_run_check(bs, 0, &r);
        r.corruptions_fixed = corruptions_fixed;
        r.leaks_fixed = leaks_fixed;
    }
    if (ret == 0) {
        if (output == IMG_OUTPUT_JSON) {
            img_check_json(&r, filename, bdrv_get_format_name(bs));
        } else {
            img_check_human(&r, quiet);
        }
    }
    if (ret < 0 || r.check_errors) {
        if (ret < 0) {
            img_error("Check failed: %s", g_strerror(-ret));
        } else {
            img_error("Check failed");
        }
        return 1;
    }
    return r.corruptions ? 2 : r.leaks ? 3 : 0;
}

int img_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"repair", required_argument, NULL, 'r'},
        {"output", required_argument, NULL, IMG_OPT_OUTPUT},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {0};
    ImgOutputFormat output = IMG_OUTPUT_HUMAN;
    const char *output_arg = NULL;
    BdrvCheckMode fix = BDRV_FIX_NONE;
    bool quiet = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (strcmp(optarg, "leaks") == 0) {
                fix = BDRV_FIX_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS;
            } else {
                img_error("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
                img_usage_hint();
                return 1;
            }
            o.writable = true;
            break;
        default:
            if (!img_common_opt(c, argv, &o, &quiet, &output_arg, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        img_usage_hint();
        return 1;
    }
    if (output_arg && !img_parse_output_format(output_arg, &output)) {
        return 1;
    }
    if (!img_check_format_opts(&o) || !img_check_cache_mode(o.cache, "source cache")) {
        return 1;
    }
    const char *filename = argv[optind];
    BlockBackend *blk = img_open(filename, &o, "writeback");
    if (!blk) {
        return 1;
    }
    ret = img_check_image(blk_bs(blk), filename, fix, output, quiet);
    blk_unref(blk);
    return ret;
}
