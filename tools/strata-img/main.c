/*
 * strata-img: a qemu-img compatible command line over libstrata.
 *
 * Dispatches to one subcommand per file (img-<name>.c) with qemu-img 7.2's
 * syntax, output and exit codes, so scripts can switch by changing one
 * word.  Everything beyond argument parsing lives in the library.
 */
#include <stdio.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-int.h"
#include "strata/strata.h"
#include "tools/strata-img/img.h"

static const struct {
    const char *name;
    ImgCommandFunc *fn;
    const char *synopsis;
} img_commands[] = {
    {"amend", img_amend,
     "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] "
     "-o options filename"},
    {"bench", img_bench,
     "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] "
     "[--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] "
     "[-t cache] [-w] [-U] [--iothreads=N] filename"},
    {"bitmap", img_bitmap,
     "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... "
     "[-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] "
     "[--image-opts | -f fmt] filename bitmap"},
    {"check", img_check,
     "check [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] "
     "filename"},
    {"commit", img_commit,
     "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] "
     "[-r rate_limit] [-d] [-p] [--progress[=human|json]] filename"},
    {"compare", img_compare,
     "compare [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 "
     "filename2"},
    {"convert", img_convert,
     "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] "
     "[--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] "
     "[-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] "
     "[-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] "
     "[--progress[=human|json]] filename [filename2 [...]] output_filename"},
    {"create", img_create,
     "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]"},
    {"dd", img_dd,
     "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] "
     "[skip=blocks] if=input of=output"},
    {"info", img_info,
     "info [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename"},
    {"map", img_map,
     "map [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] "
     "[-U] filename"},
    {"measure", img_measure,
     "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--image-opts] [-f fmt] "
     "[-l snapshot_param] filename]"},
    {"snapshot", img_snapshot,
     "snapshot [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename"},
    {"rebase", img_rebase,
     "rebase [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] "
     "-b backing_file [-F backing_fmt] filename"},
    {"resize", img_resize,
     "resize [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename "
     "[+ | -]size"},
};

void img_help(void)
{
    printf("strata-img version %s\n"
           "usage: strata-img [standard options] command [command options]\n"
           "Strata disk image utility, command-line compatible with qemu-img\n\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n\n"
           "Command syntax:\n",
           strata_version());
    for (size_t i = 0; i < G_N_ELEMENTS(img_commands); i++) {
        printf("  %s\n", img_commands[i].synopsis);
    }
}

int main(int argc, char **argv)
{
    GError *err = NULL;

    if (argc < 2) {
        img_error("Not enough arguments");
        img_usage_hint();
        return 1;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        img_help();
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("strata-img version %s\n", strata_version());
        return 0;
    }
    if (!aio_main_loop_init(&err)) {
        img_report_error(err);
        return 1;
    }
    bdrv_init();
    for (size_t i = 0; i < G_N_ELEMENTS(img_commands); i++) {
        if (!strcmp(argv[1], img_commands[i].name)) {
            /* Subcommands parse argv[0..] as their own command line, as getopt expects. */
            return img_commands[i].fn(argc - 1, argv + 1);
        }
    }
    img_error("Command not found: %s", argv[1]);
    img_usage_hint();
    return 1;
}
