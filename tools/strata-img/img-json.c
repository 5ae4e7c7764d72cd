/*
 * strata-img: JSON and human output of structured data, laid out the way
 * qemu-img 7.2 prints it so that scripts parsing one parse the other.
 *
 * The JSON writer streams: members come out in call order.  qemu-img's key
 * order is not alphabetical (it is the iteration order of QEMU's internal
 * dictionaries); each subcommand calls the writer in the order qemu-img
 * shows, observed by running it.
 */
#include <inttypes.h>
#include <string.h>

#include "tools/strata-img/img.h"

void img_json_init(ImgJson *j)
{
    j->out = g_string_new(NULL);
    j->depth = 0;
    j->has_items = 0;
}

char *img_json_finish(ImgJson *j)
{
    g_assert(j->depth == 0);
    return g_string_free(g_steal_pointer(&j->out), false);
}

static void img_json_indent(GString *out, int depth)
{
    for (int i = 0; i < depth; i++) {
        g_string_append(out, "    ");
    }
}

/* Starts a member of the current container: separator, new line, indent, key. */
static void img_json_member(ImgJson *j, const char *key)
{
    if (j->depth > 0) {
        uint64_t bit = 1ULL << j->depth;
        if (j->has_items & bit) {
            g_string_append_c(j->out, ',');
        }
        j->has_items |= bit;
        g_string_append_c(j->out, '\n');
        img_json_indent(j->out, j->depth);
    }
    if (key) {
        img_json_quote(j->out, key);
        g_string_append(j->out, ": ");
    }
}

static void img_json_open(ImgJson *j, const char *key, char bracket)
{
    img_json_member(j, key);
    g_string_append_c(j->out, bracket);
    j->depth++;
    g_assert(j->depth < 63);
    j->has_items &= ~(1ULL << j->depth);
}

static void img_json_close(ImgJson *j, char bracket)
{
    g_assert(j->depth > 0);
    j->depth--;
    g_string_append_c(j->out, '\n');
    img_json_indent(j->out, j->depth);
    g_string_append_c(j->out, bracket);
}

void img_json_begin_object(ImgJson *j, const char *key)
{
    img_json_open(j, key, '{');
}

void img_json_end_object(ImgJson *j)
{
    img_json_close(j, '}');
}

void img_json_begin_array(ImgJson *j, const char *key)
{
    img_json_open(j, key, '[');
}

void img_json_end_array(ImgJson *j)
{
    img_json_close(j, ']');
}

void img_json_int(ImgJson *j, const char *key, int64_t v)
{
    img_json_member(j, key);
    g_string_append_printf(j->out, "%" PRId64, v);
}

void img_json_uint(ImgJson *j, const char *key, uint64_t v)
{
    img_json_member(j, key);
    g_string_append_printf(j->out, "%" PRIu64, v);
}

void img_json_bool(ImgJson *j, const char *key, bool v)
{
    img_json_member(j, key);
    g_string_append(j->out, v ? "true" : "false");
}

void img_json_str(ImgJson *j, const char *key, const char *v)
{
    img_json_member(j, key);
    img_json_quote(j->out, v);
}

static void img_json_append_u16(GString *out, gunichar c)
{
    g_string_append_printf(out, "\\u%04" PRIX32, (uint32_t)c);
}

/* The letter after the backslash of JSON's short escapes, or 0. */
static char img_json_escape(unsigned char c)
{
    static const char pairs[][2] = {
        {'"', '"'}, {'\\', '\\'}, {'\b', 'b'}, {'\f', 'f'}, {'\n', 'n'}, {'\r', 'r'}, {'\t', 't'},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(pairs); i++) {
        if (pairs[i][0] == (char)c) {
            return pairs[i][1];
        }
    }
    return 0;
}

void img_json_quote(GString *out, const char *s)
{
    g_string_append_c(out, '"');
    for (const char *p = s; *p;) {
        unsigned char c = *p;
        if (c >= 0x80) {
            /* QEMU writes every non-ASCII character as an escape. */
            gunichar u = g_utf8_get_char_validated(p, -1);
            if (u == (gunichar)-1 || u == (gunichar)-2) {
                img_json_append_u16(out, 0xfffd);
                p++;
                continue;
            }
            if (u > 0xffff) {
                u -= 0x10000;
                img_json_append_u16(out, 0xd800 | (u >> 10));
                img_json_append_u16(out, 0xdc00 | (u & 0x3ff));
            } else {
                img_json_append_u16(out, u);
            }
            p = g_utf8_next_char(p);
            continue;
        }
        char esc = img_json_escape(c);
        if (esc) {
            g_string_append_c(out, '\\');
            g_string_append_c(out, esc);
        } else if (c < 0x20 || c == 0x7f) {
            img_json_append_u16(out, c);
        } else {
            g_string_append_c(out, c);
        }
        p++;
    }
    g_string_append_c(out, '"');
}

/* Scalars as JSON text; false for containers. */
static bool img_variant_scalar(GString *out, GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BOOLEAN:
        g_string_append(out, g_variant_get_boolean(v) ? "true" : "false");
        return true;
    case G_VARIANT_CLASS_BYTE:
        g_string_append_printf(out, "%u", g_variant_get_byte(v));
        return true;
    case G_VARIANT_CLASS_INT16:
        g_string_append_printf(out, "%d", g_variant_get_int16(v));
        return true;
    case G_VARIANT_CLASS_UINT16:
        g_string_append_printf(out, "%u", g_variant_get_uint16(v));
        return true;
    case G_VARIANT_CLASS_INT32:
        g_string_append_printf(out, "%" PRId32, g_variant_get_int32(v));
        return true;
    case G_VARIANT_CLASS_UINT32:
        g_string_append_printf(out, "%" PRIu32, g_variant_get_uint32(v));
        return true;
    case G_VARIANT_CLASS_INT64:
        g_string_append_printf(out, "%" PRId64, (int64_t)g_variant_get_int64(v));
        return true;
    case G_VARIANT_CLASS_UINT64:
        g_string_append_printf(out, "%" PRIu64, (uint64_t)g_variant_get_uint64(v));
        return true;
    case G_VARIANT_CLASS_DOUBLE:
        g_string_append_printf(out, "%.17g", g_variant_get_double(v));
        return true;
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        img_json_quote(out, g_variant_get_string(v, NULL));
        return true;
    default:
        return false;
    }
}

/* A dictionary entry {sv}: key and (unboxed) value. */
static GVariant *img_variant_entry(GVariant *entry, const char **key)
{
    g_variant_get_child(entry, 0, "&s", key); /* valid while @entry lives */
    GVariant *v = g_variant_get_child_value(entry, 1);
    while (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = inner;
    }
    return v;
}

static bool img_variant_is_dict(GVariant *v)
{
    return g_variant_is_of_type(v, G_VARIANT_TYPE("a{s*}"));
}

void img_json_variant(ImgJson *j, const char *key, GVariant *v)
{
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(v);
        img_json_variant(j, key, inner);
        return;
    }
    if (img_variant_is_dict(v)) {
        img_json_begin_object(j, key);
        for (gsize i = 0; i < g_variant_n_children(v); i++) {
            g_autoptr(GVariant) entry = g_variant_get_child_value(v, i);
            const char *k;
            g_autoptr(GVariant) val = img_variant_entry(entry, &k);
            img_json_variant(j, k, val);
        }
        img_json_end_object(j);
    } else if (g_variant_is_container(v)) {
        img_json_begin_array(j, key);
        for (gsize i = 0; i < g_variant_n_children(v); i++) {
            g_autoptr(GVariant) item = g_variant_get_child_value(v, i);
            img_json_variant(j, NULL, item);
        }
        img_json_end_array(j);
    } else {
        img_json_member(j, key);
        img_variant_scalar(j->out, v);
    }
}
