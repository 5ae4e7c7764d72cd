/*
 * Tests of block options: "key=value" strings with ",," escaping, json:
 * filenames flattened to dotted keys, sub-dictionaries by prefix, typed
 * access, and the rejection of malformed input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glib.h>
#include <string.h>

#include "block/options.h"

static GHashTable *parse_kv_ok(const char *s, const char *implied)
{
    GError *err = NULL;
    GHashTable *o = opts_new();
    bool ok = opts_parse_kv(o, s, implied, &err);
    if (!ok) {
        fail_msg("parsing '%s' failed: %s", s, err->message);
    }
    return o;
}

static char *parse_kv_error(const char *s, const char *implied)
{
    GError *err = NULL;
    g_autoptr(GHashTable) o = opts_new();
    assert_false(opts_parse_kv(o, s, implied, &err));
    assert_non_null(err);
    char *msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

static void test_kv_pairs_become_entries(void **state)
{
    g_autoptr(GHashTable) o = parse_kv_ok("driver=qcow2,file.filename=a.img,file.aio=native", NULL);
    assert_int_equal(g_hash_table_size(o), 3);
    assert_string_equal(opts_get(o, "driver"), "qcow2");
    assert_string_equal(opts_get(o, "file.filename"), "a.img");
    assert_string_equal(opts_get(o, "file.aio"), "native");
}

static void test_kv_double_comma_is_a_literal_comma(void **state)
{
    g_autoptr(GHashTable) o = parse_kv_ok("file.filename=a,,b,,,,c.img,driver=raw", NULL);
    assert_string_equal(opts_get(o, "file.filename"), "a,b,,c.img");
    assert_string_equal(opts_get(o, "driver"), "raw");
}

static void test_kv_value_may_contain_equals_and_be_empty(void **state)
{
    g_autoptr(GHashTable) o = parse_kv_ok("a=x=y,b=", NULL);
    assert_string_equal(opts_get(o, "a"), "x=y");
    assert_string_equal(opts_get(o, "b"), "");
}

static void test_kv_later_key_wins(void **state)
{
    g_autoptr(GHashTable) o = parse_kv_ok("size=1,size=2", NULL);
    assert_string_equal(opts_get(o, "size"), "2");
}

static void test_kv_implied_key_takes_the_first_bare_item(void **state)
{
    g_autoptr(GHashTable) o = parse_kv_ok("/tmp/x,,y.img,format=raw", "filename");
    assert_string_equal(opts_get(o, "filename"), "/tmp/x,y.img");
    assert_string_equal(opts_get(o, "format"), "raw");
}

static void test_kv_empty_string_gives_no_entries(void **state)
{
    g_autoptr(GHashTable) o = parse_kv_ok("", NULL);
    assert_int_equal(g_hash_table_size(o), 0);
}

static void test_kv_bad_syntax_is_rejected_with_a_message(void **state)
{
    g_autofree char *m1 = parse_kv_error("driver", NULL);
    assert_non_null(strstr(m1, "Expected '=' after parameter 'driver'"));
    g_autofree char *m2 = parse_kv_error("a=1,b", NULL);
    assert_non_null(strstr(m2, "'b'"));
    g_autofree char *m3 = parse_kv_error("a=1,", NULL);
    assert_non_null(strstr(m3, "Trailing"));
    g_autofree char *m4 = parse_kv_error("=x", NULL);
    assert_non_null(strstr(m4, "Invalid parameter name"));
    g_autofree char *m5 = parse_kv_error("a b=1", NULL);
    assert_non_null(m5);
    g_autofree char *m6 = parse_kv_error("a=1,,,", NULL);
    assert_non_null(m6);
}

static GHashTable *parse_json_ok(const char *s)
{
    GError *err = NULL;
    GHashTable *o = opts_new();
    if (!opts_parse_json(o, s, &err)) {
        fail_msg("parsing %s failed: %s", s, err->message);
    }
    return o;
}

static void test_json_nested_objects_flatten_to_dotted_keys(void **state)
{
    g_autoptr(GHashTable) o = parse_json_ok(
        "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": \"a.img\","
        " \"cache\": {\"direct\": true}}, \"backing\": null}");
    assert_int_equal(g_hash_table_size(o), 5);
    assert_string_equal(opts_get(o, "driver"), "qcow2");
    assert_string_equal(opts_get(o, "file.driver"), "file");
    assert_string_equal(opts_get(o, "file.filename"), "a.img");
    assert_string_equal(opts_get(o, "file.cache.direct"), "on");
    assert_string_equal(opts_get(o, "backing"), "");
}

static void test_json_numbers_arrays_and_escapes_become_strings(void **state)
{
    g_autoptr(GHashTable) o = parse_json_ok(
        " { \"size\" : 1048576, \"f\": -1.5e3, \"no\": false,"
        " \"list\": [\"x\", {\"y\": 2}], \"s\": \"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\" } ");
    assert_string_equal(opts_get(o, "size"), "1048576");
    assert_string_equal(opts_get(o, "f"), "-1.5e3");
    assert_string_equal(opts_get(o, "no"), "off");
    assert_string_equal(opts_get(o, "list.0"), "x");
    assert_string_equal(opts_get(o, "list.1.y"), "2");
    assert_string_equal(opts_get(o, "s"), "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
}

static void test_json_bad_syntax_is_rejected(void **state)
{
    static const char *const bad[] = {
        "",
        "[]",
        "\"x\"",
        "{",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"line\nbreak\"}",
        "{\"a\":1} trailing",
        "{\"a\":1,\"a\":2}",
        "{\"a.b\":1,\"a\":{\"b\":2}}",
        "{\"\":1}",
        "{\"a\":\"\\u0000\"}",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        g_autoptr(GHashTable) o = opts_new();
        if (opts_parse_json(o, bad[i], &err)) {
            fail_msg("accepted bad JSON: %s", bad[i]);
        }
        assert_non_null(err);
        g_error_free(err);
    }
}

static void test_json_nesting_deeper_than_the_limit_is_rejected(void **state)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < 40; i++) {
        g_string_append(s, "{\"a\":");
    }
    g_string_append(s, "1");
    for (int i = 0; i < 40; i++) {
        g_string_append_c(s, '}');
    }
    GError *err = NULL;
    g_autoptr(GHashTable) o = opts_new();
    assert_false(opts_parse_json(o, s->str, &err));
    assert_non_null(strstr(err->message, "deep"));
    g_error_free(err);
    g_string_free(s, true);
}

static void test_filename_with_json_prefix_is_parsed(void **state)
{
    GError *err = NULL;
    g_autoptr(GHashTable) o =
        opts_from_filename("json:{\"driver\":\"raw\",\"file.filename\":\"x.img\"}", &err);
    assert_non_null(o);
    assert_string_equal(opts_get(o, "driver"), "raw");
    assert_string_equal(opts_get(o, "file.filename"), "x.img");

    g_autoptr(GHashTable) plain = opts_from_filename("dir/a,b.img", &err);
    assert_string_equal(opts_get(plain, "filename"), "dir/a,b.img");

    assert_null(opts_from_filename("json:{bad", &err));
    assert_non_null(err);
    g_error_free(err);
}

static void test_prefix_extraction_moves_the_subtree(void **state)
{
    g_autoptr(GHashTable) o =
        parse_kv_ok("driver=qcow2,file.driver=file,file.filename=a,filex=1,backing.file.x=2", NULL);
    assert_true(opts_has_prefix(o, "file."));
    assert_false(opts_has_prefix(o, "data-file."));
    g_autoptr(GHashTable) sub = opts_extract_prefix(o, "file.");
    assert_int_equal(g_hash_table_size(sub), 2);
    assert_string_equal(opts_get(sub, "driver"), "file");
    assert_string_equal(opts_get(sub, "filename"), "a");
    assert_null(opts_get(o, "file.driver"));
    assert_string_equal(opts_get(o, "filex"), "1");
    assert_string_equal(opts_get(o, "backing.file.x"), "2");
}

static void test_typed_takes_convert_and_remove(void **state)
{
    static const char *const aio_names[] = {"threads", "native", "io_uring", NULL};
    g_autoptr(GHashTable) o =
        parse_kv_ok("ro=on,direct=false,n=-0x10,size=1.5G,small=512,aio=native", NULL);
    GError *err = NULL;
    bool b;
    int64_t i;
    uint64_t sz;
    int e;

    assert_true(opts_take_bool(o, "ro", false, &b, &err) && b);
    assert_true(opts_take_bool(o, "direct", true, &b, &err) && !b);
    assert_true(opts_take_bool(o, "absent", true, &b, &err) && b);
    assert_true(opts_take_int(o, "n", 0, &i, &err));
    assert_int_equal(i, -16);
    assert_true(opts_take_size(o, "size", 0, &sz, &err));
    assert_int_equal(sz, 3ULL << 29);
    assert_true(opts_take_size(o, "small", 0, &sz, &err));
    assert_int_equal(sz, 512);
    assert_true(opts_take_enum(o, "aio", aio_names, 0, &e, &err));
    assert_int_equal(e, 1);
    assert_null(err);
    assert_int_equal(g_hash_table_size(o), 0);
}

static void test_malformed_typed_values_name_the_key(void **state)
{
    static const char *const names[] = {"a", "b", NULL};
    g_autoptr(GHashTable) o = parse_kv_ok("b=maybe,i=12x,s=4Q,s2=1.5,e=c", NULL);
    GError *err = NULL;
    bool b;
    int64_t i;
    uint64_t sz;
    int e;

    assert_false(opts_take_bool(o, "b", false, &b, &err));
    assert_non_null(strstr(err->message, "'b'"));
    g_clear_error(&err);
    assert_false(opts_take_int(o, "i", 0, &i, &err));
    assert_non_null(strstr(err->message, "'i'"));
    g_clear_error(&err);
    assert_false(opts_take_size(o, "s", 0, &sz, &err));
    assert_non_null(strstr(err->message, "'s'"));
    g_clear_error(&err);
    assert_false(opts_take_size(o, "s2", 0, &sz, &err));
    g_clear_error(&err);
    assert_false(opts_take_enum(o, "e", names, 0, &e, &err));
    assert_non_null(strstr(err->message, "'e'"));
    g_clear_error(&err);
}

static void test_sizes_that_overflow_are_rejected(void **state)
{
    GError *err = NULL;
    uint64_t v;
    assert_false(opts_parse_size("16E", &v, &err));
    g_clear_error(&err);
    assert_false(opts_parse_size("99999999999999999999", &v, &err));
    g_clear_error(&err);
    assert_true(opts_parse_size("8191P", &v, &err));
    assert_int_equal(v, 8191ULL << 50);
}

static void test_to_string_sorts_and_escapes(void **state)
{
    g_autoptr(GHashTable) o = opts_new();
    opts_set(o, "b", "x,y");
    opts_set(o, "a", "1");
    g_autofree char *s = opts_to_string(o);
    assert_string_equal(s, "a=1,b=x,,y");
    g_autoptr(GHashTable) back = parse_kv_ok(s, NULL);
    assert_string_equal(opts_get(back, "b"), "x,y");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_pairs_become_entries),
        cmocka_unit_test(test_kv_double_comma_is_a_literal_comma),
        cmocka_unit_test(test_kv_value_may_contain_equals_and_be_empty),
        cmocka_unit_test(test_kv_later_key_wins),
        cmocka_unit_test(test_kv_implied_key_takes_the_first_bare_item),
        cmocka_unit_test(test_kv_empty_string_gives_no_entries),
        cmocka_unit_test(test_kv_bad_syntax_is_rejected_with_a_message),
        cmocka_unit_test(test_json_nested_objects_flatten_to_dotted_keys),
        cmocka_unit_test(test_json_numbers_arrays_and_escapes_become_strings),
        cmocka_unit_test(test_json_bad_syntax_is_rejected),
        cmocka_unit_test(test_json_nesting_deeper_than_the_limit_is_rejected),
        cmocka_unit_test(test_filename_with_json_prefix_is_parsed),
        cmocka_unit_test(test_prefix_extraction_moves_the_subtree),
        cmocka_unit_test(test_typed_takes_convert_and_remove),
        cmocka_unit_test(test_malformed_typed_values_name_the_key),
        cmocka_unit_test(test_sizes_that_overflow_are_rejected),
        cmocka_unit_test(test_to_string_sorts_and_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
