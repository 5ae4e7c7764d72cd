/*
 * strata-img: progress reporting (see img-progress.h for the outputs).
 *
 * The printing rule is qemu-img's: a new figure is printed when it moved
 * by more than one point since the last one printed, and always at 0% and
 * 100%.  The SIGUSR1 handler only sets a flag; the line is printed by the
 * next img_progress_add() in the main thread, never from the handler.
 */
#include "tools/strata-img/img-progress.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "tools/strata-img/img.h"

#define IMG_PROGRESS_MIN_STEP 1.0 /* percent between two printed figures */
#define IMG_PROGRESS_BAR      30  /* characters of the terminal bar */

struct ImgProgress {
    ImgProgressMode mode;
    bool tty; /* human mode on a terminal: draw the bar */
    uint64_t total, done;
    double last_print;
};

static volatile sig_atomic_t img_progress_sigusr1;

static void img_progress_on_sigusr1(int sig)
{
    img_progress_sigusr1 = 1;
}

bool img_progress_parse_mode(const char *arg, ImgProgressMode *mode)
{
    if (!arg || strcmp(arg, "human") == 0) {
        *mode = IMG_PROGRESS_HUMAN;
    } else if (strcmp(arg, "json") == 0) {
        *mode = IMG_PROGRESS_JSON;
    } else {
        img_error("--progress must be used with human or json as argument.");
        return false;
    }
    return true;
}

static double img_progress_percent(const ImgProgress *p)
{
    if (p->done >= p->total) {
        return 100.0; /* nothing to do counts as done */
    }
    return 100.0 * (double)p->done / (double)p->total;
}

static void img_progress_print(ImgProgress *p, double cur)
{
    switch (p->mode) {
    case IMG_PROGRESS_NONE:
        return;
    case IMG_PROGRESS_HUMAN:
        printf("    (%3.2f/100%%)", cur);
        if (p->tty) {
            int full = (int)(cur * IMG_PROGRESS_BAR / 100.0);
            printf(" [%.*s%*s]", full, "##############################", IMG_PROGRESS_BAR - full,
                   "");
        }
        putchar('\r');
        break;
    case IMG_PROGRESS_JSON:
        printf("{\"done\": %" G_GUINT64_FORMAT ", \"total\": %" G_GUINT64_FORMAT
               ", \"percent\": %.2f}\n",
               p->done, p->total, cur);
        break;
    }
    fflush(stdout);
    p->last_print = cur;
}

/* qemu-img's rule: a step of more than one point, or either end. */
static void img_progress_maybe_print(ImgProgress *p)
{
    double cur = img_progress_percent(p);

    if (img_progress_sigusr1) {
        img_progress_sigusr1 = 0;
        fprintf(stderr, "    (%3.2f/100%%)\n", cur);
    }
    if (cur - p->last_print > IMG_PROGRESS_MIN_STEP ||
        cur < p->last_print - IMG_PROGRESS_MIN_STEP || cur == 100.0 || cur == 0.0) {
        img_progress_print(p, cur);
    }
}

ImgProgress *img_progress_start(ImgProgressMode mode)
{
    ImgProgress *p = g_new0(ImgProgress, 1);
    struct sigaction sa = {.sa_handler = img_progress_on_sigusr1};

    p->mode = mode;
    p->tty = mode == IMG_PROGRESS_HUMAN && isatty(STDOUT_FILENO);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    if (mode == IMG_PROGRESS_HUMAN) {
        img_progress_print(p, 0.0); /* qemu-img prints 0% before it opens anything */
    }
    return p;
}

bool img_progress_shown(const ImgProgress *p)
{
    return p->mode != IMG_PROGRESS_NONE;
}

void img_progress_set_total(ImgProgress *p, uint64_t total)
{
    p->total = total;
    if (p->mode == IMG_PROGRESS_JSON) {
        img_progress_print(p, 0.0); /* JSON starts once the total is known */
    }
}

void img_progress_add(ImgProgress *p, uint64_t bytes)
{
    p->done += bytes;
    img_progress_maybe_print(p);
}

void img_progress_finish(ImgProgress *p, bool success)
{
    if (success) {
        p->done = p->total;
        img_progress_print(p, 100.0);
    }
    if (p->mode == IMG_PROGRESS_HUMAN) {
        putchar('\n');
        fflush(stdout);
    }
    signal(SIGUSR1, SIG_DFL);
    g_free(p);
}
