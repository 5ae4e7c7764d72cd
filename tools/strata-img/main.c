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
    {"bench", img_bench,
     "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] "
     "[--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] "
     "[-t cache] [-w] [-U] [--iothreads=N] filename"},
};

static void img_help(void)
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
