/*
 * Block options: parsing "key=value,..." and "json:{...}" into a flat
 * dictionary of strings, and typed access to its values.
 *
 * The JSON reader is a small strict recursive-descent parser (RFC 8259
 * syntax, objects, arrays, strings with escapes, numbers, literals) that
 * writes leaves straight into the flat dictionary; it keeps no tree.
 *
 * No shared state; a dictionary belongs to one thread at a time.
 */
#include "block/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 32

GHashTable *opts_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

GHashTable *opts_copy(GHashTable *opts)
{
    GHashTable *copy = opts_new();
    opts_merge(copy, opts, true);
    return copy;
}

void opts_set(GHashTable *opts, const char *key, const char *value)
{
    g_hash_table_insert(opts, g_strdup(key), g_strdup(value));
}

const char *opts_get(GHashTable *opts, const char *key)
{
    return g_hash_table_lookup(opts, key);
}

void opts_merge(GHashTable *dst, GHashTable *src, bool overwrite)
{
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, src);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (overwrite || !g_hash_table_contains(dst, k)) {
            opts_set(dst, k, v);
        }
    }
}

/* ---- key=value ------------------------------------------------------- */

static bool key_char_ok(char c)
{
    return g_ascii_isalnum(c) || c == '.' || c == '-' || c == '_';
}

/*
 * Reads a value up to an unescaped ',' or the end; ",," stands for ','.
 * Returns the position after the value (at ',' or '\0').
 */
static const char *kv_read_value(const char *p, GString *out)
{
    for (;;) {
        if (*p == ',') {
            if (p[1] != ',') {
                return p;
            }
            p++;
        } else if (*p == '\0') {
            return p;
        }
        g_string_append_c(out, *p++);
    }
}

bool opts_parse_kv(GHashTable *opts, const char *str, const char *implied_key, GError **errp)
{
    const char *p = str;
    bool first = true;

    if (*p == '\0') {
        return true;
    }
    for (;;) {
        const char *key = p;
        while (key_char_ok(*p)) {
            p++;
        }
        g_autofree char *name = g_strndup(key, p - key);
        g_autoptr(GString) value = g_string_new(NULL);

        if (*p == '=' && p > key) {
            p = kv_read_value(p + 1, value);
            opts_set(opts, name, value->str);
        } else if (first && implied_key && (*p == ',' || *p == '\0' || *p != '=')) {
            p = kv_read_value(key, value);
            if (value->len == 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "Empty value for implied parameter '%s'", implied_key);
                return false;
            }
            opts_set(opts, implied_key, value->str);
        } else if (p == key) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Invalid parameter name at '%s'", key);
            return false;
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Expected '=' after parameter '%s'", name);
            return false;
        }
        first = false;
        if (*p == '\0') {
            return true;
        }
        p++; /* the separating comma */
        if (*p == '\0') {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Trailing ',' in option string");
            return false;
        }
    }
}

/* ---- JSON ------------------------------------------------------------ */

typedef struct JsonParser {
    const char *p;
    const char *start;
    GHashTable *opts;
    GError **errp;
    bool failed;
} JsonParser;

static bool json_fail(JsonParser *jp, const char *what)
{
    if (!jp->failed) {
        g_set_error(jp->errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Invalid JSON in options at offset %ld: %s", (long)(jp->p - jp->start), what);
        jp->failed = true;
    }
    return false;
}

static void json_skip_ws(JsonParser *jp)
{
    while (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r') {
        jp->p++;
    }
}

static int json_hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = g_ascii_xdigit_value(p[i]);
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* Reads a \uXXXX escape (with its surrogate pair) at jp->p, after the 'u'. */
static bool json_unicode_escape(JsonParser *jp, GString *out)
{
    int cp = json_hex4(jp->p);
    if (cp < 0) {
        return json_fail(jp, "bad \\u escape");
    }
    jp->p += 4;
    if (cp >= 0xd800 && cp < 0xdc00) {
        if (jp->p[0] != '\\' || jp->p[1] != 'u') {
            return json_fail(jp, "unpaired surrogate");
        }
        int lo = json_hex4(jp->p + 2);
        if (lo < 0xdc00 || lo > 0xdfff) {
            return json_fail(jp, "unpaired surrogate");
        }
        jp->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        return json_fail(jp, "unpaired surrogate");
    }
    if (cp == 0) {
        return json_fail(jp, "NUL character in string");
    }
    g_string_append_unichar(out, cp);
    return true;
}

static bool json_string(JsonParser *jp, GString *out)
{
    static const char esc_in[] = "\"\\/bfnrt";
    static const char esc_out[] = "\"\\/\b\f\n\r\t";

    if (*jp->p != '"') {
        return json_fail(jp, "expected a string");
    }
    jp->p++;
    for (;;) {
        unsigned char c = *jp->p;
        if (c == '"') {
            jp->p++;
            break;
        }
        if (c == '\0') {
            return json_fail(jp, "unterminated string");
        }
        if (c < 0x20) {
            return json_fail(jp, "control character in string");
        }
        if (c != '\\') {
            g_string_append_c(out, c);
            jp->p++;
            continue;
        }
        jp->p++;
        const char *e = *jp->p ? strchr(esc_in, *jp->p) : NULL;
        if (e) {
            g_string_append_c(out, esc_out[e - esc_in]);
            jp->p++;
        } else if (*jp->p == 'u') {
            jp->p++;
            if (!json_unicode_escape(jp, out)) {
                return false;
            }
        } else {
            return json_fail(jp, "bad escape in string");
        }
    }
    if (!g_utf8_validate(out->str, out->len, NULL)) {
        return json_fail(jp, "string is not valid UTF-8");
    }
    return true;
}

/* Checks the number grammar and copies the literal text. */
static bool json_number(JsonParser *jp, GString *out)
{
    const char *s = jp->p;
    const char *p = s;
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    } else if (g_ascii_isdigit(*p)) {
        while (g_ascii_isdigit(*p)) {
            p++;
        }
    } else {
        return json_fail(jp, "bad number");
    }
    if (*p == '.') {
        p++;
        if (!g_ascii_isdigit(*p)) {
            return json_fail(jp, "bad number");
        }
        while (g_ascii_isdigit(*p)) {
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (!g_ascii_isdigit(*p)) {
            return json_fail(jp, "bad number");
        }
        while (g_ascii_isdigit(*p)) {
            p++;
        }
    }
    g_string_append_len(out, s, p - s);
    jp->p = p;
    return true;
}

static bool json_value(JsonParser *jp, const char *key, int depth);

static bool json_store(JsonParser *jp, const char *key, const char *value)
{
    if (g_hash_table_contains(jp->opts, key)) {
        g_set_error(jp->errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Option '%s' is given twice in JSON", key);
        jp->failed = true;
        return false;
    }
    opts_set(jp->opts, key, value);
    return true;
}

static char *json_child_key(const char *prefix, const char *name)
{
    return prefix ? g_strconcat(prefix, ".", name, NULL) : g_strdup(name);
}

/* Object members become "<prefix>.<name>"; the top level has no prefix. */
static bool json_object(JsonParser *jp, const char *prefix, int depth)
{
    jp->p++; /* '{' */
    json_skip_ws(jp);
    if (*jp->p == '}') {
        jp->p++;
        return true;
    }
    for (;;) {
        g_autoptr(GString) name = g_string_new(NULL);
        json_skip_ws(jp);
        if (!json_string(jp, name)) {
            return false;
        }
        if (name->len == 0) {
            return json_fail(jp, "empty member name");
        }
        json_skip_ws(jp);
        if (*jp->p != ':') {
            return json_fail(jp, "expected ':'");
        }
        jp->p++;
        g_autofree char *key = json_child_key(prefix, name->str);
        if (!json_value(jp, key, depth + 1)) {
            return false;
        }
        json_skip_ws(jp);
        if (*jp->p == '}') {
            jp->p++;
            return true;
        }
        if (*jp->p != ',') {
            return json_fail(jp, "expected ',' or '}'");
        }
        jp->p++;
    }
}

static bool json_array(JsonParser *jp, const char *prefix, int depth)
{
    jp->p++; /* '[' */
    json_skip_ws(jp);
    if (*jp->p == ']') {
        jp->p++;
        return true;
    }
    for (unsigned i = 0;; i++) {
        g_autofree char *idx = g_strdup_printf("%u", i);
        g_autofree char *key = json_child_key(prefix, idx);
        if (!json_value(jp, key, depth + 1)) {
            return false;
        }
        json_skip_ws(jp);
        if (*jp->p == ']') {
            jp->p++;
            return true;
        }
        if (*jp->p != ',') {
            return json_fail(jp, "expected ',' or ']'");
        }
        jp->p++;
    }
}

static bool json_literal(JsonParser *jp, const char *key)
{
    static const struct {
        const char *word, *value;
    } lits[] = {{"true", "on"}, {"false", "off"}, {"null", ""}};
    for (size_t i = 0; i < G_N_ELEMENTS(lits); i++) {
        size_t n = strlen(lits[i].word);
        if (strncmp(jp->p, lits[i].word, n) == 0 && !g_ascii_isalnum(jp->p[n])) {
            jp->p += n;
            return json_store(jp, key, lits[i].value);
        }
    }
    return json_fail(jp, "unexpected character");
}

static bool json_value(JsonParser *jp, const char *key, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        return json_fail(jp, "nested too deeply");
    }
    json_skip_ws(jp);
    char c = *jp->p;
    if (c == '{') {
        return json_object(jp, key, depth);
    }
    if (c == '[') {
        return json_array(jp, key, depth);
    }
    if (c == '"' || c == '-' || g_ascii_isdigit(c)) {
        g_autoptr(GString) s = g_string_new(NULL);
        bool ok = c == '"' ? json_string(jp, s) : json_number(jp, s);
        return ok && json_store(jp, key, s->str);
    }
    return json_literal(jp, key);
}

bool opts_parse_json(GHashTable *opts, const char *json, GError **errp)
{
    JsonParser jp = {.p = json, .start = json, .opts = opts, .errp = errp};

    json_skip_ws(&jp);
    if (*jp.p != '{') {
        return json_fail(&jp, "options must be a JSON object");
    }
    if (!json_object(&jp, NULL, 1)) {
        return false;
    }
    json_skip_ws(&jp);
    if (*jp.p != '\0') {
        return json_fail(&jp, "trailing characters after the object");
    }
    return true;
}

GHashTable *opts_from_filename(const char *filename, GError **errp)
{
    GHashTable *opts = opts_new();
    if (g_str_has_prefix(filename, "json:")) {
        if (!opts_parse_json(opts, filename + 5, errp)) {
            g_hash_table_unref(opts);
            return NULL;
        }
    } else {
        opts_set(opts, "filename", filename);
    }
    return opts;
}

/* ---- sub-dictionaries -------------------------------------------------- */

bool opts_has_prefix(GHashTable *opts, const char *prefix)
{
    size_t n = strlen(prefix);
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (strncmp(k, prefix, n) == 0 || (n > 0 && prefix[n - 1] == '.' && strlen(k) == n - 1 &&
                                           strncmp(k, prefix, n - 1) == 0)) {
            return true;
        }
    }
    return false;
}

GHashTable *opts_extract_prefix(GHashTable *opts, const char *prefix)
{
    GHashTable *sub = opts_new();
    size_t n = strlen(prefix);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (strncmp(k, prefix, n) == 0 && ((char *)k)[n] != '\0') {
            opts_set(sub, (char *)k + n, v);
            g_hash_table_iter_remove(&it);
        }
    }
    return sub;
}

/* ---- typed access ------------------------------------------------------ */

char *opts_take_str(GHashTable *opts, const char *key)
{
    gpointer orig_key, value;
    if (!g_hash_table_steal_extended(opts, key, &orig_key, &value)) {
        return NULL;
    }
    g_free(orig_key);
    return value;
}

bool opts_parse_bool(const char *str, bool *out)
{
    static const char *const yes[] = {"on", "yes", "true"};
    static const char *const no[] = {"off", "no", "false"};
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
    return false;
}

bool opts_take_bool(GHashTable *opts, const char *key, bool def, bool *out, GError **errp)
{
    g_autofree char *s = opts_take_str(opts, key);
    *out = def;
    if (s && !opts_parse_bool(s, out)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Parameter '%s' expects 'on' or 'off'", key);
        return false;
    }
    return true;
}

bool opts_take_int(GHashTable *opts, const char *key, int64_t def, int64_t *out, GError **errp)
{
    g_autofree char *s = opts_take_str(opts, key);
    *out = def;
    if (!s) {
        return true;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (*s == '\0' || *end != '\0' || errno || g_ascii_isspace(*s)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Parameter '%s' expects an integer", key);
        return false;
    }
    *out = v;
    return true;
}

static int size_suffix_shift(char c)
{
    switch (g_ascii_tolower(c)) {
    case 'b':
        return 0;
    case 'k':
        return 10;
    case 'm':
        return 20;
    case 'g':
        return 30;
    case 't':
        return 40;
    case 'p':
        return 50;
    case 'e':
        return 60;
    default:
        return -1;
    }
}

bool opts_parse_size(const char *str, uint64_t *out, GError **errp)
{
    const char *p = str;
    uint64_t whole = 0;
    double frac = 0;

    if (!g_ascii_isdigit(*p)) {
        goto bad;
    }
    while (g_ascii_isdigit(*p)) {
        if (whole > (UINT64_MAX - 9) / 10) {
            goto too_big;
        }
        whole = whole * 10 + (*p++ - '0');
    }
    bool has_frac = *p == '.';
    if (has_frac) {
        double scale = 0.1;
        p++;
        if (!g_ascii_isdigit(*p)) {
            goto bad;
        }
        for (; g_ascii_isdigit(*p); p++, scale /= 10) {
            frac += (*p - '0') * scale;
        }
    }
    int shift = 0;
    if (*p) {
        shift = size_suffix_shift(*p++);
        if (shift < 0) {
            goto bad;
        }
        if (shift > 0 && (*p == 'b' || *p == 'B')) {
            p++;
        }
    }
    if (*p || (has_frac && shift == 0)) {
        goto bad;
    }
    if (shift > 0 && whole > (UINT64_MAX >> shift)) {
        goto too_big;
    }
    uint64_t v = whole << shift;
    uint64_t extra = (uint64_t)(frac * (double)(1ULL << shift));
    if (v > UINT64_MAX - extra || v + extra > INT64_MAX) {
        goto too_big;
    }
    *out = v + extra;
    return true;

bad:
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "'%s' is not a size (a number with an optional k, M, G, T, P or E suffix)", str);
    return false;
too_big:
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Size '%s' is too large", str);
    return false;
}

bool opts_take_size(GHashTable *opts, const char *key, uint64_t def, uint64_t *out, GError **errp)
{
    g_autofree char *s = opts_take_str(opts, key);
    GError *err = NULL;
    *out = def;
    if (s && !opts_parse_size(s, out, &err)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Parameter '%s': %s", key,
                    err->message);
        g_error_free(err);
        return false;
    }
    return true;
}

bool opts_take_enum(GHashTable *opts, const char *key, const char *const *names, int def, int *out,
                    GError **errp)
{
    g_autofree char *s = opts_take_str(opts, key);
    *out = def;
    if (!s) {
        return true;
    }
    for (int i = 0; names[i]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return true;
        }
    }
    g_autofree char *list = g_strjoinv("', '", (char **)names);
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "Parameter '%s' does not accept value '%s' (expected one of '%s')", key, s, list);
    return false;
}

static gint cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(a, b);
}

char *opts_to_string(GHashTable *opts)
{
    GList *keys = g_list_sort(g_hash_table_get_keys(opts), cmp_str);
    GString *s = g_string_new(NULL);
    for (GList *l = keys; l; l = l->next) {
        const char *v = g_hash_table_lookup(opts, l->data);
        if (s->len) {
            g_string_append_c(s, ',');
        }
        g_string_append_printf(s, "%s=", (char *)l->data);
        for (; *v; v++) {
            g_string_append_c(s, *v);
            if (*v == ',') {
                g_string_append_c(s, ',');
            }
        }
    }
    g_list_free(keys);
    return g_string_free(s, false);
}
