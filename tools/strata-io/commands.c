/*
 * strata-io command dispatch: finding a command by name, the checks every
 * command gets before it runs (an image is open, the argument count fits,
 * the permissions it needs are taken), and the help command.
 *
 * Permissions are taken lazily, as qemu-io does: an image opened
 * read-write holds only "consistent read" and "write"; the first truncate
 * adds "resize", and keeps it.  A read-only image refuses the upgrade,
 * which is how writes to it fail.
 */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "tools/strata-io/sio.h"

static int help_f(Sio *s, int argc, char **argv);

static const SioCommand help_commands[] = {
    {
        .name = "help",
        .altname = "?",
        .fn = help_f,
        .argmin = 0,
        .argmax = 1,
        .args = "[command]",
        .oneline = "help for one or all commands",
        .flags = SIO_CMD_NOFILE_OK,
    },
    {0},
};

static const SioCommand *const *all_tables(void)
{
    static const SioCommand *const tables[] = {
        help_commands,
        sio_rw_commands,
        sio_aio_commands,
        sio_misc_commands,
        sio_open_commands,
        sio_debug_commands,
        NULL,
    };
    return tables;
}

const SioCommand *sio_find_command(const char *name)
{
    for (const SioCommand *const *t = all_tables(); *t; t++) {
        for (const SioCommand *ct = *t; ct->name; ct++) {
            if (strcmp(ct->name, name) == 0 || (ct->altname && strcmp(ct->altname, name) == 0)) {
                return ct;
            }
        }
    }
    return NULL;
}

static int compare_commands(gconstpointer a, gconstpointer b)
{
    const SioCommand *x = *(const SioCommand *const *)a;
    const SioCommand *y = *(const SioCommand *const *)b;
    return strcmp(x->name, y->name);
}

/* Every command, sorted by name (the array is freed by the caller, not its elements). */
static GPtrArray *sorted_commands(void)
{
    GPtrArray *all = g_ptr_array_new();
    for (const SioCommand *const *t = all_tables(); *t; t++) {
        for (const SioCommand *ct = *t; ct->name; ct++) {
            g_ptr_array_add(all, (gpointer)ct);
        }
    }
    g_ptr_array_sort(all, compare_commands);
    return all;
}

char *sio_command_generator(const char *text, int state)
{
    static GPtrArray *names;
    static guint next;

    if (state == 0) {
        if (!names) {
            names = sorted_commands();
        }
        next = 0;
    }
    while (next < names->len) {
        const SioCommand *ct = g_ptr_array_index(names, next++);
        if (g_str_has_prefix(ct->name, text)) {
            return strdup(ct->name); /* readline frees it with free() */
        }
    }
    return NULL;
}

/* The synopsis line under the name the user typed (help shows "r ..." for "help r"). */
static void print_usage_as(const SioCommand *ct, const char *name)
{
    /* A NULL synopsis leaves one space, an empty one two: qemu-io's "map  --". */
    printf("%s %s%s-- %s\n", name, ct->args ? ct->args : "", ct->args ? " " : "", ct->oneline);
}

void sio_print_usage(const SioCommand *ct)
{
    print_usage_as(ct, ct->name);
}

static void print_bad_count(const SioCommand *ct, const char *name, int count)
{
    if (ct->argmax == -1) {
        fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", count,
                name, ct->argmin);
    } else if (ct->argmin == ct->argmax) {
        fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", count, name,
                ct->argmin);
    } else {
        fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n",
                count, name, ct->argmin, ct->argmax);
    }
}

/* Adds what @ct needs to the backend's permissions; prints why not when it cannot. */
static int take_command_perm(Sio *s, const SioCommand *ct)
{
    uint64_t perm, shared;
    g_autoptr(GError) err = NULL;

    if (!ct->perm || !s->blk) {
        return 0;
    }
    blk_get_perm(s->blk, &perm, &shared);
    if (!(ct->perm & ~perm)) {
        return 0;
    }
    if (!(s->open_flags & BDRV_O_RDWR)) {
        /* Said before asking the block layer, whose message names the node. */
        sio_error("Block node is read-only");
        return -EPERM;
    }
    if (!blk_set_perm(s->blk, perm | ct->perm, shared, &err)) {
        sio_error("%s", err->message);
        return -EPERM;
    }
    return 0;
}

static int run_command(Sio *s, const SioCommand *ct, int argc, char **argv)
{
    if (!(ct->flags & SIO_CMD_NOFILE_OK) && !s->blk) {
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    if (argc - 1 < ct->argmin || (ct->argmax != -1 && argc - 1 > ct->argmax)) {
        print_bad_count(ct, argv[0], argc - 1);
        return -EINVAL;
    }
    int ret = take_command_perm(s, ct);
    if (ret < 0) {
        return ret;
    }
    /* Commands parse their flags with getopt; 0 makes it start afresh (GNU). */
    optind = 0;
    return ct->fn(s, argc, argv);
}

int sio_run_line(Sio *s, const char *line)
{
    g_auto(GStrv) words = g_strsplit(line, " ", -1);
    GPtrArray *argv = g_ptr_array_new();
    int ret = 0;

    for (char **w = words; *w; w++) {
        if (**w) {
            g_ptr_array_add(argv, *w);
        }
    }
    if (argv->len > 0) {
        g_ptr_array_add(argv, NULL);
        char **args = (char **)argv->pdata;
        const SioCommand *ct = sio_find_command(args[0]);
        if (ct) {
            ret = run_command(s, ct, argv->len - 1, args);
        } else {
            fprintf(stderr, "command \"%s\" not found\n", args[0]);
            ret = -EINVAL;
        }
    }
    g_ptr_array_free(argv, true);
    return ret;
}

/* ---- help ------------------------------------------------------------------------------------ */

static int help_f(Sio *s, int argc, char **argv)
{
    if (argc == 2) {
        const SioCommand *ct = sio_find_command(argv[1]);
        if (!ct) {
            printf("command %s not found\n", argv[1]);
            return -EINVAL;
        }
        print_usage_as(ct, argv[1]);
        if (ct->help) {
            putchar('\n');
            ct->help();
            putchar('\n');
        }
        return 0;
    }
    GPtrArray *all = sorted_commands();
    for (guint i = 0; i < all->len; i++) {
        sio_print_usage(g_ptr_array_index(all, i));
    }
    g_ptr_array_free(all, true);
    printf("\nUse 'help commandname' for extended help.\n");
    return 0;
}
