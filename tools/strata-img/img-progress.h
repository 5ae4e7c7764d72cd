/*
 * strata-img: progress reporting for long subcommands (convert, commit).
 *
 * Three outputs, chosen once:
 *  - none: nothing, except that SIGUSR1 prints one "    (x.xx/100%)"
 *    line on stderr at the next update (as qemu-img does without -p);
 *  - human (-p): qemu-img's "    (x.xx/100%)\r" records on stdout, every
 *    time the figure moves by more than one point, plus a bar drawn after
 *    the figure when stdout is a terminal;
 *  - json (--progress=json): one {"done": N, "total": N, "percent": P}
 *    object per line on stdout at the same moments.
 * Main thread only.  One reporter at a time (SIGUSR1 is process-wide).
 */
#ifndef STRATA_IMG_PROGRESS_H
#define STRATA_IMG_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum ImgProgressMode {
    IMG_PROGRESS_NONE,
    IMG_PROGRESS_HUMAN,
    IMG_PROGRESS_JSON,
} ImgProgressMode;

typedef struct ImgProgress ImgProgress;

/*
 * Parses --progress's argument ("human", "json"; NULL means human).
 * Prints the error and returns false for anything else.
 */
bool img_progress_parse_mode(const char *arg, ImgProgressMode *mode);

/* Starts a reporter (human mode prints 0% now, json once the total is set); installs SIGUSR1. */
ImgProgress *img_progress_start(ImgProgressMode mode);
/* True when the figures are printed as the work goes (-p, --progress), not only on SIGUSR1. */
bool img_progress_shown(const ImgProgress *p);
/* The amount of work (bytes) that makes 100%; 0 means the work is trivially done. */
void img_progress_set_total(ImgProgress *p, uint64_t total);
/* Records that @bytes more are done; prints when due (or when SIGUSR1 asked). */
void img_progress_add(ImgProgress *p, uint64_t bytes);
/* Prints 100% and ends the line (@success false: ends the line only); frees @p. */
void img_progress_finish(ImgProgress *p, bool success);

#endif /* STRATA_IMG_PROGRESS_H */
