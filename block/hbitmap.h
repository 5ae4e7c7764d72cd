/*
 * HBitmap: a hierarchical bitmap with cheap "next set bit" searches, for
 * dirty tracking (block/dirty-bitmap.h builds on it).
 *
 * Level 0 holds one bit per item; each higher level holds one bit per
 * 64-bit word of the level below, set while that word may be non-zero.
 * The top level is a single word, so a search skips empty regions 64^k
 * items at a time.  A count of set items is kept as well.
 *
 * Threads: hbitmap_set() and hbitmap_merge() may run in any number of
 * threads at once, concurrently with everything else (atomic OR, no lock).
 * Resets are serialised by an internal mutex, so any thread may reset too.
 * Readers (get, count, searches) may run at any time; they see each word
 * atomically, not a snapshot of the whole bitmap.  A summary bit may be
 * set over an empty word for a moment (searches skip it), but never stays
 * clear over a non-empty word: a reset that empties a word clears its
 * summary bit and then looks at the word again, restoring the bit if a
 * concurrent set got there in between.
 */
#ifndef STRATA_HBITMAP_H
#define STRATA_HBITMAP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct HBitmap HBitmap;

/* A bitmap of @nbits items, all clear.  @nbits may be 0. */
HBitmap *hbitmap_new(uint64_t nbits);
void hbitmap_free(HBitmap *hb);
/* Number of items. */
uint64_t hbitmap_size(const HBitmap *hb);
/* Number of set items (exact when no set or reset runs concurrently). */
uint64_t hbitmap_count(const HBitmap *hb);

/* Sets items [start, start + count), clipped to the size.  Any thread, lock-free. */
void hbitmap_set(HBitmap *hb, uint64_t start, uint64_t count);
/* Clears items [start, start + count), clipped to the size.  Any thread. */
void hbitmap_reset(HBitmap *hb, uint64_t start, uint64_t count);
/* Clears every item. */
void hbitmap_reset_all(HBitmap *hb);
bool hbitmap_get(const HBitmap *hb, uint64_t item);

/* The first set item >= @start, or -1 when there is none. */
int64_t hbitmap_next_set(const HBitmap *hb, uint64_t start);
/* The first clear item in [@start, @end), or -1 when all are set (@end is clipped). */
int64_t hbitmap_next_clear(const HBitmap *hb, uint64_t start, uint64_t end);
/*
 * The first run of set items that starts in [@start, @end): *@first is
 * its first item, *@count its length, cut at @end and at @max_count
 * (> 0).  Returns false when no item in the range is set.
 */
bool hbitmap_next_set_area(const HBitmap *hb, uint64_t start, uint64_t end, uint64_t max_count,
                           uint64_t *first, uint64_t *count);

/* @dst |= @src.  The sizes must be equal.  Safe while others set @dst. */
void hbitmap_merge(HBitmap *dst, const HBitmap *src);

/* Debug checker for assert(): summaries cover every non-empty word, count matches. */
bool hbitmap_sanity(const HBitmap *hb);

#endif /* STRATA_HBITMAP_H */
