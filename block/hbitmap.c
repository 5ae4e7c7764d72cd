/*
 * HBitmap (see hbitmap.h for the contract).
 *
 * Layout: levels[0] is the item bitmap, levels[l + 1] has one bit per word
 * of levels[l]; levels[top] is one word.  Every word is an atomic; sets
 * are fetch-or, resets fetch-and, all sequentially consistent.
 *
 * Setting: OR the bits into the level-0 word; when the word was zero
 * before, set its bit one level up, and so on while words were zero.
 * A word that already had bits has its summary bit set by whoever put the
 * first bit there (or is being restored by a reset, below).
 *
 * Resetting (serialised by reset_lock): AND the bits out; when the word
 * became zero, clear its summary bit, then load the word again: if a set
 * slipped in since, put the summary bit back (propagating up as a set
 * does) and stop; else continue one level up if that summary word became
 * zero too.  Any set that makes the word non-zero either happens before
 * that second load (and is seen) or after the summary bit was cleared
 * (and it then found the word empty and sets the bit itself).
 */
#include "block/hbitmap.h"

#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>

#define HB_LEVELS_MAX 12 /* 64^11 items is far beyond any disk */

struct HBitmap {
    uint64_t size;
    int top;                        /* index of the single-word level */
    uint64_t nwords[HB_LEVELS_MAX]; /* words per level */
    _Atomic uint64_t *levels[HB_LEVELS_MAX];
    _Atomic uint64_t count;     /* set items */
    pthread_mutex_t reset_lock; /* one resetter at a time */
};

static inline uint64_t bit_of(uint64_t idx)
{
    return 1ULL << (idx & 63);
}

HBitmap *hbitmap_new(uint64_t nbits)
{
    HBitmap *hb = g_new0(HBitmap, 1);
    uint64_t n = MAX((nbits + 63) / 64, 1);
    int l = 0;

    hb->size = nbits;
    for (;;) {
        g_assert(l < HB_LEVELS_MAX);
        hb->nwords[l] = n;
        hb->levels[l] = g_new0(_Atomic uint64_t, n);
        if (n == 1) {
            break;
        }
        n = (n + 63) / 64;
        l++;
    }
    hb->top = l;
    pthread_mutex_init(&hb->reset_lock, NULL);
    return hb;
}

void hbitmap_free(HBitmap *hb)
{
    if (!hb) {
        return;
    }
    for (int l = 0; l <= hb->top; l++) {
        g_free(hb->levels[l]);
    }
    pthread_mutex_destroy(&hb->reset_lock);
    g_free(hb);
}

uint64_t hbitmap_size(const HBitmap *hb)
{
    return hb->size;
}

uint64_t hbitmap_count(const HBitmap *hb)
{
    return atomic_load(&hb->count);
}

/* Word @widx of level @l became (or may have become) non-empty: set the summaries above. */
static void hb_set_summary(HBitmap *hb, int l, uint64_t widx)
{
    while (l < hb->top) {
        _Atomic uint64_t *w = &hb->levels[l + 1][widx >> 6];
        uint64_t old = atomic_fetch_or(w, bit_of(widx));
        if (old != 0) {
            return; /* the summary word had bits: its own summary is set already */
        }
        widx >>= 6;
        l++;
    }
}

/* Word @widx of level @l became empty: clear summaries above, re-checking for racing sets. */
static void hb_clear_summary(HBitmap *hb, int l, uint64_t widx)
{
    while (l < hb->top) {
        _Atomic uint64_t *w = &hb->levels[l + 1][widx >> 6];
        uint64_t old = atomic_fetch_and(w, ~bit_of(widx));
        if (atomic_load(&hb->levels[l][widx]) != 0) {
            /* A set made the word non-empty again: put the summary back. */
            hb_set_summary(hb, l, widx);
            return;
        }
        if ((old & ~bit_of(widx)) != 0) {
            return; /* the summary word still has other bits */
        }
        widx >>= 6;
        l++;
    }
}

/* Mask of the bits of word @widx that fall in [start, end). */
static uint64_t hb_word_mask(uint64_t widx, uint64_t start, uint64_t end)
{
    uint64_t wfirst = widx * 64;
    uint64_t lo = start > wfirst ? start - wfirst : 0;
    uint64_t hi = end - wfirst >= 64 ? 64 : end - wfirst;
    uint64_t mask = hi == 64 ? ~0ULL : (1ULL << hi) - 1;
    return mask & (~0ULL << lo);
}

/* ORs @mask into level-0 word @widx; returns how many items it newly set. */
static uint64_t hb_or_word(HBitmap *hb, uint64_t widx, uint64_t mask)
{
    _Atomic uint64_t *w = &hb->levels[0][widx];
    if ((atomic_load_explicit(w, memory_order_relaxed) & mask) == mask) {
        return 0; /* already set: the common case of repeated writes */
    }
    uint64_t old = atomic_fetch_or(w, mask);
    if (old == 0) {
        hb_set_summary(hb, 0, widx);
    }
    return __builtin_popcountll(mask & ~old);
}

void hbitmap_set(HBitmap *hb, uint64_t start, uint64_t count)
{
    if (start >= hb->size || count == 0) {
        return;
    }
    uint64_t end = count > hb->size - start ? hb->size : start + count;
    uint64_t added = 0;
    for (uint64_t widx = start / 64; widx * 64 < end; widx++) {
        added += hb_or_word(hb, widx, hb_word_mask(widx, start, end));
    }
    if (added) {
        atomic_fetch_add(&hb->count, added);
    }
}

void hbitmap_reset(HBitmap *hb, uint64_t start, uint64_t count)
{
    if (start >= hb->size || count == 0) {
        return;
    }
    uint64_t end = count > hb->size - start ? hb->size : start + count;
    uint64_t removed = 0;
    pthread_mutex_lock(&hb->reset_lock);
    for (uint64_t widx = start / 64; widx * 64 < end; widx++) {
        uint64_t mask = hb_word_mask(widx, start, end);
        _Atomic uint64_t *w = &hb->levels[0][widx];
        if ((atomic_load_explicit(w, memory_order_relaxed) & mask) == 0) {
            continue;
        }
        uint64_t old = atomic_fetch_and(w, ~mask);
        removed += __builtin_popcountll(mask & old);
        if (old != 0 && (old & ~mask) == 0) {
            hb_clear_summary(hb, 0, widx);
        }
    }
    if (removed) {
        atomic_fetch_sub(&hb->count, removed);
    }
    pthread_mutex_unlock(&hb->reset_lock);
}

void hbitmap_reset_all(HBitmap *hb)
{
    hbitmap_reset(hb, 0, hb->size);
}

bool hbitmap_get(const HBitmap *hb, uint64_t item)
{
    if (item >= hb->size) {
        return false;
    }
    return (atomic_load(&hb->levels[0][item / 64]) & bit_of(item)) != 0;
}

int64_t hbitmap_next_set(const HBitmap *hb, uint64_t start)
{
    uint64_t pos = start;
    int l = 0;

    if (start >= hb->size) {
        return -1;
    }
    /*
     * Walk right and up until a word has a bit at or after pos, then down
     * to level 0.  A summary bit over an empty word (a reset in progress)
     * sends the walk up again past that word, so it always moves forward.
     */
    for (;;) {
        uint64_t widx = pos >> 6;
        if (widx >= hb->nwords[l]) {
            return -1;
        }
        uint64_t w = atomic_load(&hb->levels[l][widx]) & (~0ULL << (pos & 63));
        if (w) {
            uint64_t idx = (widx << 6) + __builtin_ctzll(w);
            if (l == 0) {
                return idx < hb->size ? (int64_t)idx : -1;
            }
            l--;
            pos = idx << 6;
            continue;
        }
        if (l == hb->top) {
            return -1;
        }
        l++;
        pos = widx + 1;
    }
}

int64_t hbitmap_next_clear(const HBitmap *hb, uint64_t start, uint64_t end)
{
    end = MIN(end, hb->size);
    for (uint64_t pos = start; pos < end;) {
        uint64_t widx = pos / 64;
        uint64_t w = ~atomic_load(&hb->levels[0][widx]) & (~0ULL << (pos & 63));
        if (w) {
            uint64_t idx = widx * 64 + __builtin_ctzll(w);
            return idx < end ? (int64_t)idx : -1;
        }
        pos = (widx + 1) * 64;
    }
    return -1;
}

bool hbitmap_next_set_area(const HBitmap *hb, uint64_t start, uint64_t end, uint64_t max_count,
                           uint64_t *first, uint64_t *count)
{
    end = MIN(end, hb->size);
    if (start >= end || max_count == 0) {
        return false;
    }
    int64_t s = hbitmap_next_set(hb, start);
    if (s < 0 || (uint64_t)s >= end) {
        return false;
    }
    uint64_t limit = (uint64_t)s + MIN(max_count, end - (uint64_t)s);
    int64_t c = hbitmap_next_clear(hb, s, limit);
    *first = s;
    *count = (c < 0 ? limit : (uint64_t)c) - (uint64_t)s;
    return true;
}

void hbitmap_merge(HBitmap *dst, const HBitmap *src)
{
    uint64_t added = 0;
    g_assert(dst->size == src->size);
    for (int64_t pos = hbitmap_next_set(src, 0); pos >= 0;) {
        uint64_t widx = pos / 64;
        added += hb_or_word(dst, widx, atomic_load(&src->levels[0][widx]));
        pos = hbitmap_next_set(src, (widx + 1) * 64);
    }
    if (added) {
        atomic_fetch_add(&dst->count, added);
    }
}

bool hbitmap_sanity(const HBitmap *hb)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < hb->nwords[0]; i++) {
        n += __builtin_popcountll(atomic_load(&hb->levels[0][i]));
    }
    if (n != atomic_load(&hb->count)) {
        return false;
    }
    for (int l = 0; l < hb->top; l++) {
        for (uint64_t i = 0; i < hb->nwords[l]; i++) {
            bool nonempty = atomic_load(&hb->levels[l][i]) != 0;
            bool summary = atomic_load(&hb->levels[l + 1][i >> 6]) & bit_of(i);
            if (nonempty && !summary) {
                return false;
            }
        }
    }
    return true;
}
