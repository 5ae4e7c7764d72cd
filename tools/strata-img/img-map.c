/*
 * strata-img map: where the data of an image (through its backing chain)
 * lives, in qemu-img 7.2's human or JSON layout.
 *
 * For each range, the chain is walked from the top: the first layer that
 * has data or zeroes there gives the entry, and "depth" is how many
 * layers down that was.  Neighbouring ranges that look the same (same
 * depth and flags, and for mapped data the next host offset in the same
 * file) are merged into one entry before printing.  The whole walk runs
 * in one coroutine holding the graph reader lock.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/graph-lock.h"
#include "tools/strata-img/img.h"

typedef struct ImgMapEntry {
    int64_t start, length;
    int depth;
    bool present, zero, data, has_offset;
    int64_t offset;
    BlockDriverState *file; /* where offset points, when has_offset */
} ImgMapEntry;

typedef struct ImgMap {
    BlockDriverState *bs;
    ImgOutputFormat output;
    int64_t start, end;
    int ret; /* exit status */
} ImgMap;

/* Describes [@offset, +@bytes) of @bs's chain from the first range's point of view. */
static int coroutine_fn img_map_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       ImgMapEntry *e)
{
    int64_t map = 0;
    BlockDriverState *file = NULL;
    int depth = 0, ret;

    for (;;) {
        bs = bdrv_skip_filters(bs);
        ret = bdrv_co_block_status(bs, true, offset, bytes, &bytes, &map, &file);
        if (ret < 0) {
            return ret;
        }
        g_assert(bytes > 0);
        if (ret & (BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA)) {
            break;
        }
        bs = bdrv_cow_bs(bs);
        if (!bs) {
            ret = 0;
            break;
        }
        depth++;
    }
    *e = (ImgMapEntry){
        .start = offset,
        .length = bytes,
        .depth = depth,
        .present = !!(ret & BDRV_BLOCK_ALLOCATED),
        .zero = !!(ret & BDRV_BLOCK_ZERO),
        .data = !!(ret & BDRV_BLOCK_DATA),
        .has_offset = !!(ret & BDRV_BLOCK_OFFSET_VALID),
        .offset = map,
        .file = (ret & BDRV_BLOCK_OFFSET_VALID) ? file : NULL,
    };
    return 0;
}

static bool img_map_mergeable(const ImgMapEntry *a, const ImgMapEntry *b)
{
    return a->length > 0 && a->depth == b->depth && a->present == b->present &&
           a->zero == b->zero && a->data == b->data && a->has_offset == b->has_offset &&
           a->file == b->file && (!a->has_offset || a->offset + a->length == b->offset);
}

/* Prints @e (@more: another entry follows).  Returns false after an error. */
static bool img_map_dump(const ImgMap *m, const ImgMapEntry *e, bool more)
{
    const char *fname = e->file ? e->file->filename : "";

    if (m->output == IMG_OUTPUT_HUMAN) {
        if (e->data && !e->has_offset) {
            img_error("File contains external, encrypted or compressed clusters.");
            return false;
        }
        if (e->data && !e->zero) {
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", (uint64_t)e->start,
                   (uint64_t)e->length, (uint64_t)(e->has_offset ? e->offset : 0), fname);
        }
        return true;
    }
    printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %d, \"present\": %s, "
           "\"zero\": %s, \"data\": %s",
           e->start, e->length, e->depth, e->present ? "true" : "false", e->zero ? "true" : "false",
           e->data ? "true" : "false");
    if (e->has_offset) {
        printf(", \"offset\": %" PRId64, e->offset);
    }
    printf("}%s", more ? ",\n" : "");
    return true;
}

static void coroutine_fn img_map_co(void *opaque)
{
    ImgMap *m = opaque;
    ImgMapEntry curr = {.start = m->start}, next;
    GRAPH_RDLOCK_GUARD();

    if (m->output == IMG_OUTPUT_HUMAN) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    } else {
        printf("[");
    }
    while (curr.start + curr.length < m->end) {
        int64_t offset = curr.start + curr.length;
        int ret = img_map_status(m->bs, offset, m->end - offset, &next);
        if (ret < 0) {
            img_error("Could not read file metadata: %s", g_strerror(-ret));
            m->ret = 1;
            return;
        }
        if (img_map_mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && !img_map_dump(m, &curr, true)) {
            m->ret = 1;
            return;
        }
        curr = next;
    }
    if (!img_map_dump(m, &curr, false)) {
        m->ret = 1;
        return;
    }
    if (m->output == IMG_OUTPUT_JSON) {
        printf("]\n");
    }
}

/* --start-offset / --max-length: a byte count with suffixes. */
static bool img_map_parse(const char *arg, const char *what, int64_t *out)
{
    if (!img_parse_size(arg, out)) {
        img_error_size_suffix(what);
        return false;
    }
    return true;
}

enum { OPT_START_OFFSET = IMG_OPT_LOCAL, OPT_MAX_LENGTH };

int img_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, IMG_OPT_OUTPUT},
        {"object", required_argument, NULL, IMG_OPT_OBJECT},
        {"image-opts", no_argument, NULL, IMG_OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {"start-offset", required_argument, NULL, OPT_START_OFFSET},
        {"max-length", required_argument, NULL, OPT_MAX_LENGTH},
        {NULL, 0, NULL, 0},
    };
    ImgOpenOptions o = {0};
    ImgMap m = {.output = IMG_OUTPUT_HUMAN};
    const char *output_arg = NULL;
    int64_t max_length = -1;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_START_OFFSET:
            if (!img_map_parse(optarg, "start offset", &m.start)) {
                return 1;
            }
            break;
        case OPT_MAX_LENGTH:
            if (!img_map_parse(optarg, "max length", &max_length)) {
                return 1;
            }
            break;
        default:
            if (!img_common_opt(c, argv, &o, NULL, &output_arg, &ret)) {
                return ret;
            }
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        img_usage_hint();
        return 1;
    }
    if (output_arg && !img_parse_output_format(output_arg, &m.output)) {
        return 1;
    }
    if (!img_check_format_opts(&o)) {
        return 1;
    }
    BlockBackend *blk = img_open(argv[optind], &o, "writeback");
    if (!blk) {
        return 1;
    }
    m.bs = blk_bs(blk);
    m.end = blk_getlength(blk);
    if (m.end < 0) {
        img_error("Failed to get size for '%s'", argv[optind]);
        blk_unref(blk);
        return 1;
    }
    if (max_length != -1) {
        m.end = MIN(m.end, m.start + MIN(max_length, INT64_MAX - m.start));
    }
    img_run_co(img_map_co, &m);
    blk_unref(blk);
    return m.ret;
}
