/*
 * strata-img resize: changes an image's virtual size, qemu-img 7.2 style:
 * "size" sets it, "+size" and "-size" change it; shrinking needs --shrink;
 * --preallocation applies to the added part only.
 *
 * Like qemu-img, the size is taken off the end of the command line before
 * the options are parsed, so "-1G" is never mistaken for an option.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tools/strata-img/img.h"

static const char *const img_prealloc_names[] = {"off", "metadata", "falloc", "full"};

/* Parses the size argument: *sign is +1/-1 for a relative change, 0 for an absolute size. */
static bool img_resize_parse_size(const char *arg, int *sign, uint64_t *n)
{
    *sign = arg[0] == '+' ? 1 : arg[0] == '-' ? -1 : 0;
    const char *num = *sign ? arg + 1 : arg;
    int ret = img_strtosz(num, n);

    if (ret == -ERANGE) {
        img_error("Value '%s' is out of range for parameter 'size'", num);
        return false;
    }
    if (ret < 0) {
        img_error("Parameter 'size' expects a non-negative number below 2^64\n"
                  "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                  "and exabytes, respectively.");
        return false;
    }
    return true;
}

/* Works out the new size and applies it.  Returns the exit status. */
static int img_do_resize(BlockBackend *blk, int sign, uint64_t n, bool shrink,
                         PreallocMode prealloc, bool quiet)
{
    GError *err = NULL;
    int64_t current = blk_getlength(blk);
    int64_t total;

    if (current < 0) {
        img_error("Could not get image size: %s", g_strerror((int)-current));
        return 1;
    }
    /* Sizes of 2^63 and more wrap to negative values, which are refused below (as qemu-img). */
    if (sign > 0) {
        total = (int64_t)((uint64_t)current + n);
    } else if (sign < 0) {
        total = (int64_t)((uint64_t)current - n);
    } else {
        total = (int64_t)n;
    }
    if (total <= 0) {
        img_error("New image size must be positive");
        return 1;
    }
    if (total < current && prealloc != PREALLOC_MODE_OFF) {
        img_error("Preallocation can only be used for growing images");
        return 1;
    }
    if (total < current && !shrink) {
        img_error("Use the --shrink option to perform a shrink operation.");
        img_error("warning: Shrinking an image will delete all data beyond the shrunken image's "
                  "end. Before performing such an operation, make sure there is no important "
                  "data there.");
        return 1;
    }
    if (blk_truncate(blk, total, false, prealloc, 0, &err) < 0) {
        if (err) {
            img_report_error(err);
        } else {
            img_error("Failed to resize the image");
        }
        return 1;
    }
    img_printf(quiet, "Image resized.\n");
    return 0;
}

enum { OPT_SHRINK = IMG_OPT_LOCAL, OPT_PREALLOCATION };

int img_resize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"preallocation", required_argument, NULL, OPT_PREALLOCATION},
        {"shrink", no_argument, NULL, OPT_SHRINK},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {.writable = true, .resize = true};
    PreallocMode prealloc = PREALLOC_MODE_OFF;
    bool quiet = false, shrink = false;
    int c, ret;

    if (argc < 3) {
        img_error("Not enough arguments");
        img_usage_hint();
        return 1;
    }
    const char *size_arg = argv[--argc];

    while ((c = getopt_long(argc, argv, ":f:hq", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SHRINK:
            shrink = true;
            break;
        case OPT_PREALLOCATION: {
            size_t i = 0;
            while (i < G_N_ELEMENTS(img_prealloc_names) && strcmp(optarg, img_prealloc_names[i])) {
                i++;
            }
            if (i == G_N_ELEMENTS(img_prealloc_names)) {
                img_error("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            prealloc = (PreallocMode)i;
            break;
        }
        default:
            if (!img_common_opt(c, argv, &o, &quiet, NULL, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting image file name and size");
        img_usage_hint();
        return 1;
    }
    int sign;
    uint64_t n;
    if (!img_resize_parse_size(size_arg, &sign, &n)) {
        return 1;
    }
    if (!img_check_format_opts(&o)) {
        return 1;
    }
    BlockBackend *blk = img_open(argv[optind], &o, "writeback");
    if (!blk) {
        return 1;
    }
    ret = img_do_resize(blk, sign, n, shrink, prealloc, quiet);
    blk_unref(blk);
    return ret;
}
