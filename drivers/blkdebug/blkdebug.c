/*
 * blkdebug: a filter for fault injection, after QEMU's.  It forwards every
 * request to its "image" child, except when a rule says otherwise.
 *
 * Notes on the design:
 *
 * Format drivers above fire named events (block/debug-event.h) just
 * before their metadata and data I/O.  When an event fires, its rules run
 * in the current state: inject-error rules become *armed* (the list of
 * armed rules is replaced by this event's), set-state rules change the
 * state, breakpoints stop the request.  Every later request on this node
 * that an armed rule covers (I/O type, offset) fails with its errno; a
 * "once" rule is removed after its first failure, the others stay armed
 * until another event arms a new set.  So `event = "l2_update"` with
 * once=off fails the L2 write and everything after it, as in QEMU.
 *
 * Filenames: "blkdebug:CONFIG:IMAGE" (CONFIG may be empty), or
 * driver=blkdebug with config=, image.* (or x-image=) options.  The node is
 * opened as a protocol (it opens its own child), so a format is probed
 * on top of it: "blkdebug:rules.conf:t.qcow2" is qcow2 -> blkdebug -> file.
 *
 * Threading: the rules and the suspended requests are under s->lock, a
 * pthread mutex never held across a yield; requests may come from any
 * thread.  Breakpoint commands run in the main loop; a stopped request is
 * resumed with aio_co_wake() in its own context.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "coroutine/co-lock.h"
#include "drivers/blkdebug/blkdebug.h"

/* ---- opening ----------------------------------------------------------------------------- */

/* "blkdebug:CONFIG:IMAGE" -> config=CONFIG, x-image=IMAGE. */
static bool blkdebug_parse_filename(const char *filename, GHashTable *options, GError **errp)
{
    if (!g_str_has_prefix(filename, "blkdebug:")) {
        /* No prefix: every option but the image name is in @options already. */
        opts_set(options, "x-image", filename);
        return true;
    }
    filename += strlen("blkdebug:");
    const char *c = strchr(filename, ':');
    if (!c) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "blkdebug requires both config file and image path");
        return false;
    }
    if (c != filename) {
        g_autofree char *config = g_strndup(filename, c - filename);
        opts_set(options, "config", config);
    }
    opts_set(options, "x-image", c + 1);
    return true;
}

static void free_rules(BDRVBlkdebugState *s)
{
    g_list_free(s->active);
    s->active = NULL;
    for (int i = 0; i < BLKDBG__MAX; i++) {
        g_list_free_full(s->rules[i], (GDestroyNotify)blkdebug_rule_free);
        s->rules[i] = NULL;
    }
}

static void blkdebug_debug_event(BlockDriverState *bs, BlkdebugEvent event);

static bool blkdebug_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    g_autofree char *image = NULL;

    pthread_mutex_init(&s->lock, NULL);
    s->state = 1;
    s->config_file = opts_take_str(options, "config");
    image = opts_take_str(options, "x-image");
    g_free(opts_take_str(options, "filename"));
    if (!opts_take_size(options, "align", 0, &s->align, errp) ||
        !opts_take_size(options, "max-transfer", 0, &s->max_transfer, errp) ||
        !blkdebug_read_config(s, s->config_file, options, errp)) {
        goto fail;
    }
    if (s->align && (s->align >= INT32_MAX || (s->align & (s->align - 1)))) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Cannot meet constraints with align %" G_GUINT64_FORMAT, s->align);
        goto fail;
    }
    if (s->max_transfer && (s->max_transfer >= INT32_MAX || s->max_transfer % MAX(s->align, 1))) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Cannot meet constraints with max-transfer %" G_GUINT64_FORMAT,
                    s->max_transfer);
        goto fail;
    }
    bs->file = bdrv_open_child(image, options, "image", bs,
                               BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY, false, errp);
    if (!bs->file) {
        goto fail;
    }
    bs->supported_write_flags = BDRV_REQ_FUA & bs->file->bs->supported_write_flags;
    bs->supported_zero_flags = (BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
                               bs->file->bs->supported_zero_flags;
    bs->supported_truncate_flags = bs->file->bs->supported_truncate_flags;
    /* "none" fires once, now: rules on it arm errors for the very first requests. */
    blkdebug_debug_event(bs, BLKDBG_NONE);
    return true;

fail:
    free_rules(s);
    g_free(s->config_file);
    pthread_mutex_destroy(&s->lock);
    return false;
}

static void blkdebug_close(BlockDriverState *bs)
{
    BDRVBlkdebugState *s = bs->opaque;
    g_assert(!s->suspended); /* drained: nobody can be stopped any more */
    free_rules(s);
    g_free(s->config_file);
    pthread_mutex_destroy(&s->lock);
}

static void blkdebug_refresh_limits(BlockDriverState *bs, GError **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    if (s->align) {
        bs->bl.request_alignment = MAX(bs->bl.request_alignment, s->align);
    }
    if (s->max_transfer) {
        bs->bl.max_transfer = s->max_transfer;
    }
}

static bool blkdebug_reopen_prepare(BDRVReopenState *state, GError **errp)
{
    return true;
}

/* ---- events ------------------------------------------------------------------------------ */

/* Removes @rule from every list and frees it.  Under s->lock. */
static void remove_rule_locked(BDRVBlkdebugState *s, BlkdebugRule *rule)
{
    if (rule->active) {
        s->active = g_list_remove(s->active, rule);
    }
    s->rules[rule->event] = g_list_remove(s->rules[rule->event], rule);
    blkdebug_rule_free(rule);
}

/*
 * Runs @event's rules.  Breakpoints stop the calling coroutine until
 * "resume"; outside a coroutine (the "none" event at open) they wait for
 * the next time the event fires.
 */
static void coroutine_fn blkdebug_debug_event(BlockDriverState *bs, BlkdebugEvent event)
{
    BDRVBlkdebugState *s = bs->opaque;
    bool in_co = co_in_coroutine();
    int suspends = 0;
    bool new_state_set = false;
    bool armed = false;

    g_assert((int)event >= 0 && event < BLKDBG__MAX);
    pthread_mutex_lock(&s->lock);
    int new_state = s->state;
    for (GList *l = s->rules[event], *next; l; l = next) {
        BlkdebugRule *rule = l->data;
        next = l->next;
        if (rule->state && rule->state != s->state) {
            continue;
        }
        switch (rule->action) {
        case BLKDEBUG_INJECT_ERROR:
            if (!armed) {
                /* This event's rules replace whatever an earlier event armed. */
                for (GList *a = s->active; a; a = a->next) {
                    ((BlkdebugRule *)a->data)->active = false;
                }
                g_list_free(s->active);
                s->active = NULL;
                armed = true;
            }
            rule->active = true;
            s->active = g_list_append(s->active, rule);
            break;
        case BLKDEBUG_SET_STATE:
            if (!new_state_set) {
                new_state = rule->u.set_state.new_state;
                new_state_set = true;
            }
            break;
        case BLKDEBUG_SUSPEND:
            if (in_co) {
                BlkdebugSuspended *r = g_new(BlkdebugSuspended, 1);
                r->co = co_self();
                r->tag = g_strdup(rule->u.suspend.tag);
                s->suspended = g_list_append(s->suspended, r);
                printf("blkdebug: Suspended request '%s'\n", r->tag);
                fflush(stdout);
                remove_rule_locked(s, rule);
                suspends++;
            }
            break;
        default:
            g_assert_not_reached();
        }
    }
    s->state = new_state;
    pthread_mutex_unlock(&s->lock);

    if (suspends) {
        aio_wait_kick(); /* wait_break may sleep in the main loop */
    }
    /*
     * Resumed from the main loop by aio_co_wake(), which runs us in our own
     * context: a wake cannot overtake this yield (it needs our thread).
     */
    while (suspends-- > 0) {
        co_yield();
    }
}

/*
 * The error an armed rule injects into a request of @type covering
 * [@offset, @offset + @bytes) (@bytes 0: a flush), or 0.
 */
static int coroutine_fn rule_check(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   BlkdebugIOType type)
{
    BDRVBlkdebugState *s = bs->opaque;
    BlkdebugRule *rule = NULL;

    pthread_mutex_lock(&s->lock);
    for (GList *l = s->active; l; l = l->next) {
        BlkdebugRule *r = l->data;
        int64_t at = r->u.inject.offset;
        if ((at == -1 || (bytes && at >= offset && at < offset + bytes)) &&
            (r->u.inject.iotype_mask & (1u << type))) {
            rule = r;
            break;
        }
    }
    if (!rule) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    int error = rule->u.inject.error;
    bool immediately = rule->u.inject.immediately;
    int64_t delay_ns = rule->u.inject.delay_ns;
    if (rule->u.inject.once) {
        remove_rule_locked(s, rule);
    }
    pthread_mutex_unlock(&s->lock);

    if (delay_ns > 0) {
        co_sleep_ns(delay_ns);
    }
    if (!immediately) {
        /* Complete later, from the event loop, as a real failed request would. */
        aio_co_schedule(aio_get_current(), co_self());
        co_yield();
    }
    return -error;
}

/* ---- requests ---------------------------------------------------------------------------- */

static int coroutine_fn blkdebug_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           IOVector *qiov, BdrvRequestFlags flags)
{
    int ret = rule_check(bs, offset, bytes, BLKDEBUG_IO_READ);
    return ret ? ret : bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn blkdebug_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            IOVector *qiov, BdrvRequestFlags flags)
{
    int ret = rule_check(bs, offset, bytes, BLKDEBUG_IO_WRITE);
    return ret ? ret : bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn blkdebug_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, BdrvRequestFlags flags)
{
    int ret = rule_check(bs, offset, bytes, BLKDEBUG_IO_WRITE_ZEROES);
    return ret ? ret : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn blkdebug_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret = rule_check(bs, offset, bytes, BLKDEBUG_IO_DISCARD);
    return ret ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

/* The core flushes the image child itself (before this runs); only the rules are ours. */
static int coroutine_fn blkdebug_co_flush_to_disk(BlockDriverState *bs)
{
    return rule_check(bs, 0, 0, BLKDEBUG_IO_FLUSH);
}

static int coroutine_fn blkdebug_co_block_status(BlockDriverState *bs, bool want_zero,
                                                 int64_t offset, int64_t bytes, int64_t *pnum,
                                                 int64_t *map, BlockDriverState **file)
{
    int ret = rule_check(bs, offset, bytes, BLKDEBUG_IO_BLOCK_STATUS);
    return ret ? ret
               : bdrv_co_block_status_from_file(bs, want_zero, offset, bytes, pnum, map, file);
}

static int64_t coroutine_fn blkdebug_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

static int coroutine_fn blkdebug_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                             PreallocMode prealloc, BdrvRequestFlags flags,
                                             GError **errp)
{
    return bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
}

/* ---- breakpoints (main loop) ------------------------------------------------------------- */

static int blkdebug_debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag)
{
    BDRVBlkdebugState *s = bs->opaque;
    int ev = bdrv_debug_event_lookup(event);
    if (ev < 0) {
        return -ENOENT;
    }
    BlkdebugRule *rule = g_new0(BlkdebugRule, 1);
    rule->event = ev;
    rule->action = BLKDEBUG_SUSPEND;
    rule->u.suspend.tag = g_strdup(tag);
    pthread_mutex_lock(&s->lock);
    s->rules[ev] = g_list_prepend(s->rules[ev], rule);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Resumes the first (or, with @all, every) request stopped at @tag.  -ENOENT when none. */
static int resume_by_tag(BDRVBlkdebugState *s, const char *tag, bool all)
{
    int ret = -ENOENT;
    for (;;) {
        Coroutine *co = NULL;
        pthread_mutex_lock(&s->lock);
        for (GList *l = s->suspended; l; l = l->next) {
            BlkdebugSuspended *r = l->data;
            if (strcmp(r->tag, tag) == 0) {
                co = r->co;
                s->suspended = g_list_delete_link(s->suspended, l);
                g_free(r->tag);
                g_free(r);
                break;
            }
        }
        pthread_mutex_unlock(&s->lock);
        if (!co) {
            return ret;
        }
        printf("blkdebug: Resuming request '%s'\n", tag);
        fflush(stdout);
        aio_co_wake(co);
        ret = 0;
        if (!all) {
            return ret;
        }
    }
}

static int blkdebug_debug_resume(BlockDriverState *bs, const char *tag)
{
    return resume_by_tag(bs->opaque, tag, false);
}

static int blkdebug_debug_remove_breakpoint(BlockDriverState *bs, const char *tag)
{
    BDRVBlkdebugState *s = bs->opaque;
    int ret = -ENOENT;

    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < BLKDBG__MAX; i++) {
        for (GList *l = s->rules[i], *next; l; l = next) {
            BlkdebugRule *rule = l->data;
            next = l->next;
            if (rule->action == BLKDEBUG_SUSPEND && strcmp(rule->u.suspend.tag, tag) == 0) {
                remove_rule_locked(s, rule);
                ret = 0;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (resume_by_tag(s, tag, true) == 0) {
        ret = 0;
    }
    return ret;
}

static bool blkdebug_debug_is_suspended(BlockDriverState *bs, const char *tag)
{
    BDRVBlkdebugState *s = bs->opaque;
    bool found = false;
    pthread_mutex_lock(&s->lock);
    for (GList *l = s->suspended; l && !found; l = l->next) {
        found = strcmp(((BlkdebugSuspended *)l->data)->tag, tag) == 0;
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

BlockDriver bdrv_blkdebug = {
    .format_name = "blkdebug",
    .protocol_name = "blkdebug",
    .instance_size = sizeof(BDRVBlkdebugState),
    .is_protocol = true,
    .is_filter = true,
    .parse_filename = blkdebug_parse_filename,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .refresh_limits = blkdebug_refresh_limits,
    .reopen_prepare = blkdebug_reopen_prepare,
    .co_preadv = blkdebug_co_preadv,
    .co_pwritev = blkdebug_co_pwritev,
    .co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
    .co_pdiscard = blkdebug_co_pdiscard,
    .co_flush_to_disk = blkdebug_co_flush_to_disk,
    .co_block_status = blkdebug_co_block_status,
    .co_getlength = blkdebug_co_getlength,
    .co_truncate = blkdebug_co_truncate,
    .debug_event = blkdebug_debug_event,
    .debug_breakpoint = blkdebug_debug_breakpoint,
    .debug_remove_breakpoint = blkdebug_debug_remove_breakpoint,
    .debug_resume = blkdebug_debug_resume,
    .debug_is_suspended = blkdebug_debug_is_suspended,
};
