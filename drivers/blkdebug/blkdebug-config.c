/*
 * blkdebug configuration: rules from a QEMU-style configuration file and
 * from "inject-error.N.KEY=VALUE" / "set-state.N.KEY=VALUE" options.
 *
 * The file is read as QEMU's qemu_config_parse reads it, so that files
 * written for QEMU mean the same here, quirks included: a section starts
 * with "[inject-error]" or "[set-state]" (optionally with an id:
 * [inject-error "x"]) in the first column; entries are `key = "value"`
 * with the value quoted (an unquoted value reads as empty); lines starting
 * with '#' and empty lines are skipped.  Messages are QEMU 7.2's.
 *
 * Everything here runs in the main loop at open, before the node serves
 * requests, so the rule lists are filled without the lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/blkdebug/blkdebug.h"

/* What a section of either kind may hold, and how each value reads. */
typedef enum { VAL_STRING, VAL_NUMBER, VAL_BOOL } ValueType;

typedef struct KeySpec {
    const char *key;
    ValueType type;
} KeySpec;

static const KeySpec inject_keys[] = {
    {"event", VAL_STRING},     {"state", VAL_NUMBER},    {"iotype", VAL_STRING},
    {"errno", VAL_NUMBER},     {"sector", VAL_NUMBER},   {"once", VAL_BOOL},
    {"immediately", VAL_BOOL}, {"delay-ns", VAL_NUMBER}, {NULL, 0},
};

static const KeySpec set_state_keys[] = {
    {"event", VAL_STRING},
    {"state", VAL_NUMBER},
    {"new_state", VAL_NUMBER},
    {NULL, 0},
};

static const char *const iotype_names[BLKDEBUG__IO_MAX] = {
    [BLKDEBUG_IO_READ] = "read",
    [BLKDEBUG_IO_WRITE] = "write",
    [BLKDEBUG_IO_WRITE_ZEROES] = "write-zeroes",
    [BLKDEBUG_IO_DISCARD] = "discard",
    [BLKDEBUG_IO_FLUSH] = "flush",
    [BLKDEBUG_IO_BLOCK_STATUS] = "block-status",
};

/* One [group] of the file or one inject-error.N of the options. */
typedef struct Section {
    BlkdebugAction action;
    GHashTable *kv; /* key -> value, both owned */
} Section;

static void section_free(gpointer p)
{
    Section *sec = p;
    g_hash_table_unref(sec->kv);
    g_free(sec);
}

static Section *section_new(BlkdebugAction action)
{
    Section *sec = g_new0(Section, 1);
    sec->action = action;
    sec->kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return sec;
}

/* The action a group name stands for, or -1. */
static int group_action(const char *group)
{
    if (strcmp(group, "inject-error") == 0) {
        return BLKDEBUG_INJECT_ERROR;
    }
    if (strcmp(group, "set-state") == 0) {
        return BLKDEBUG_SET_STATE;
    }
    return -1;
}

/* Parses QEMU's number syntax (decimal, 0x hex, 0 octal; may be negative). */
static bool parse_number(const char *key, const char *str, int64_t *out, GError **errp)
{
    char *end;
    errno = 0;
    long long v = strtoll(str, &end, 0);
    if (!*str || *end || errno) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Parameter '%s' expects a number", key);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_bool(const char *key, const char *str, bool *out, GError **errp)
{
    static const char *const yes[] = {"on", "yes", "true", "y"};
    static const char *const no[] = {"off", "no", "false", "n"};
    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (strcmp(str, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(str, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "Parameter '%s' expects 'on' or 'off'", key);
    return false;
}

/* Checks that every key of @sec is known and well typed (sorted, for a stable message). */
static bool section_check(Section *sec, GError **errp)
{
    const KeySpec *spec = sec->action == BLKDEBUG_INJECT_ERROR ? inject_keys : set_state_keys;
    g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(sec->kv), (GCompareFunc)strcmp);

    for (GList *l = keys; l; l = l->next) {
        const char *key = l->data;
        const char *val = g_hash_table_lookup(sec->kv, key);
        const KeySpec *k = spec;
        while (k->key && strcmp(k->key, key) != 0) {
            k++;
        }
        if (!k->key) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "Invalid parameter '%s'", key);
            return false;
        }
        int64_t n;
        bool b;
        if ((k->type == VAL_NUMBER && !parse_number(key, val, &n, errp)) ||
            (k->type == VAL_BOOL && !parse_bool(key, val, &b, errp))) {
            return false;
        }
    }
    return true;
}

static int64_t get_number(Section *sec, const char *key, int64_t def)
{
    const char *v = g_hash_table_lookup(sec->kv, key);
    int64_t n = def;
    if (v) {
        parse_number(key, v, &n, NULL); /* checked by section_check */
    }
    return n;
}

static bool get_bool(Section *sec, const char *key, bool def)
{
    const char *v = g_hash_table_lookup(sec->kv, key);
    bool b = def;
    if (v) {
        parse_bool(key, v, &b, NULL);
    }
    return b;
}

void blkdebug_rule_free(BlkdebugRule *rule)
{
    if (rule->action == BLKDEBUG_SUSPEND) {
        g_free(rule->u.suspend.tag);
    }
    g_free(rule);
}

/* Turns a checked section into a rule appended to s->rules. */
static bool add_rule(BDRVBlkdebugState *s, Section *sec, GError **errp)
{
    if (!section_check(sec, errp)) {
        return false;
    }
    const char *name = g_hash_table_lookup(sec->kv, "event");
    if (!name) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Missing event name for rule");
        return false;
    }
    int ev = bdrv_debug_event_lookup(name);
    if (ev < 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "invalid parameter value: %s",
                    name);
        return false;
    }

    BlkdebugRule *rule = g_new0(BlkdebugRule, 1);
    rule->event = ev;
    rule->action = sec->action;
    rule->state = (int)get_number(sec, "state", 0);
    if (sec->action == BLKDEBUG_INJECT_ERROR) {
        const char *iotype = g_hash_table_lookup(sec->kv, "iotype");
        int64_t sector = get_number(sec, "sector", -1);
        rule->u.inject.error = (int)get_number(sec, "errno", EIO);
        rule->u.inject.once = get_bool(sec, "once", false);
        rule->u.inject.immediately = get_bool(sec, "immediately", false);
        rule->u.inject.delay_ns = get_number(sec, "delay-ns", 0);
        rule->u.inject.offset = sector < 0 ? -1 : sector * BDRV_SECTOR_SIZE;
        rule->u.inject.iotype_mask = BLKDEBUG_IO_DEFAULT_MASK;
        if (iotype) {
            int t = 0;
            while (t < BLKDEBUG__IO_MAX && strcmp(iotype_names[t], iotype) != 0) {
                t++;
            }
            if (t == BLKDEBUG__IO_MAX) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "invalid parameter value: %s", iotype);
                g_free(rule);
                return false;
            }
            rule->u.inject.iotype_mask = 1u << t;
        }
    } else {
        rule->u.set_state.new_state = (int)get_number(sec, "new_state", 0);
    }
    s->rules[ev] = g_list_append(s->rules[ev], rule);
    return true;
}

/* Reads the sections of configuration file @f (named @path) into @out. */
static bool parse_file(FILE *f, GPtrArray *out, GError **errp)
{
    char line[1024 + 128];
    Section *cur = NULL;

    while (fgets(line, sizeof(line), f)) {
        char group[64], id[64], arg[64], value[1024];
        if (line[0] == '\n' || line[0] == '#') {
            continue;
        }
        if (line[0] == '[') {
            if (sscanf(line, "[%63s \"%63[^\"]\"]", group, id) == 2 ||
                sscanf(line, "[%63[^]]]", group) == 1) {
                int action = group_action(group);
                if (action < 0) {
                    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                                "There is no option group '%s'", group);
                    return false;
                }
                cur = section_new(action);
                g_ptr_array_add(out, cur);
                continue;
            }
        }
        value[0] = '\0';
        if (sscanf(line, " %63s = \"%1023[^\"]\"", arg, value) == 2 ||
            sscanf(line, " %63s = \"\"", arg) == 1) {
            if (!cur) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "no group defined");
                return false;
            }
            g_hash_table_replace(cur->kv, g_strdup(arg), g_strdup(value));
            continue;
        }
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "parse error");
        return false;
    }
    if (ferror(f)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO, "Cannot read config file: %s",
                    g_strerror(errno));
        return false;
    }
    return true;
}

static gint compare_index(gconstpointer a, gconstpointer b)
{
    uint64_t x = g_ascii_strtoull(*(char *const *)a, NULL, 10);
    uint64_t y = g_ascii_strtoull(*(char *const *)b, NULL, 10);
    return x < y ? -1 : x > y;
}

/*
 * Takes "GROUP.N.KEY" (a list of sections) and "GROUP.KEY" (one section)
 * out of @options into @out, lists in index order.
 */
static void sections_from_options(GHashTable *options, const char *group, BlkdebugAction action,
                                  GPtrArray *out)
{
    g_autofree char *prefix = g_strconcat(group, ".", NULL);
    g_autoptr(GHashTable) sub = opts_extract_prefix(options, prefix);
    g_autoptr(GHashTable) lists = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    Section *single = NULL;
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, sub);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *key = k;
        const char *dot = strchr(key, '.');
        Section *sec;
        if (dot && dot > key && strspn(key, "0123456789") == (size_t)(dot - key)) {
            g_autofree char *idx = g_strndup(key, dot - key);
            sec = g_hash_table_lookup(lists, idx);
            if (!sec) {
                sec = section_new(action);
                g_hash_table_insert(lists, g_steal_pointer(&idx), sec);
            }
            key = dot + 1;
        } else {
            if (!single) {
                single = section_new(action);
            }
            sec = single;
        }
        g_hash_table_replace(sec->kv, g_strdup(key), g_strdup(v));
    }
    if (single) {
        g_ptr_array_add(out, single);
    }
    g_autoptr(GPtrArray) idx = g_ptr_array_new();
    g_hash_table_iter_init(&it, lists);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_ptr_array_add(idx, k);
    }
    g_ptr_array_sort(idx, compare_index);
    for (guint i = 0; i < idx->len; i++) {
        g_ptr_array_add(out, g_hash_table_lookup(lists, idx->pdata[i]));
    }
}

bool blkdebug_read_config(BDRVBlkdebugState *s, const char *path, GHashTable *options,
                          GError **errp)
{
    GLOBAL_STATE_CODE();
    g_autoptr(GPtrArray) sections = g_ptr_array_new_with_free_func(section_free);

    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                        "Could not read blkdebug config file: %s", g_strerror(errno));
            return false;
        }
        bool ok = parse_file(f, sections, errp);
        fclose(f);
        if (!ok) {
            return false;
        }
    }
    sections_from_options(options, "inject-error", BLKDEBUG_INJECT_ERROR, sections);
    sections_from_options(options, "set-state", BLKDEBUG_SET_STATE, sections);

    /* Like QEMU: every inject-error rule first, then the set-state rules. */
    for (int pass = 0; pass < 2; pass++) {
        BlkdebugAction want = pass == 0 ? BLKDEBUG_INJECT_ERROR : BLKDEBUG_SET_STATE;
        for (guint i = 0; i < sections->len; i++) {
            Section *sec = sections->pdata[i];
            if (sec->action == want && !add_rule(s, sec, errp)) {
                return false;
            }
        }
    }
    return true;
}
