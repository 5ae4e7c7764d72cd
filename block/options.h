/*
 * Block options: a flat dictionary of strings with dotted keys
 * ("driver=qcow2", "file.filename=a.img", "file.aio=native").
 *
 * An options dictionary is a GHashTable mapping owned char* keys to owned
 * char* values (create it with opts_new()).  It is built by the caller of
 * an open and handed over; it is not thread-safe and needs no lock because
 * only the main loop opens nodes.
 *
 * Drivers read their options with the opts_take_*() helpers, which remove
 * the key they read: whatever is left after open is an option nobody
 * understood, and the open fails naming it.
 *
 * Values from JSON become strings: numbers as written, true/false as
 * "on"/"off", null as "" (for "backing": no backing file), arrays as
 * KEY.0, KEY.1, ...
 */
#ifndef STRATA_BLOCK_OPTIONS_H
#define STRATA_BLOCK_OPTIONS_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* An empty dictionary (string keys and values, both freed by it). */
GHashTable *opts_new(void);
GHashTable *opts_copy(GHashTable *opts);
/* Sets (replacing) @key to a copy of @value. */
void opts_set(GHashTable *opts, const char *key, const char *value);
const char *opts_get(GHashTable *opts, const char *key);
/* Copies every entry of @src into @dst; existing keys are kept unless @overwrite. */
void opts_merge(GHashTable *dst, GHashTable *src, bool overwrite);

/*
 * Parses "key=value,key2=value2" into @opts (later keys win).  A literal
 * comma in a value is written ",,".  When @implied_key is given, a first
 * item without '=' is its value ("a.img,format=raw").  Keys are made of
 * letters, digits, '.', '-' and '_'.  On error, @opts may be partly
 * filled and the message names the problem.
 */
bool opts_parse_kv(GHashTable *opts, const char *str, const char *implied_key, GError **errp);

/*
 * Parses one JSON object (the text after a "json:" prefix) into @opts,
 * flattening nested objects to dotted keys.  Strict JSON; rejects
 * trailing text, keys that collide after flattening, and nesting deeper
 * than 32 levels.
 */
bool opts_parse_json(GHashTable *opts, const char *json, GError **errp);

/*
 * Options for a filename as the user typed it: "json:{...}" is parsed,
 * anything else becomes {"filename": name}.  Returns NULL on error.
 */
GHashTable *opts_from_filename(const char *filename, GError **errp);

/* True when some key starts with @prefix ("file."), or equals it without the dot. */
bool opts_has_prefix(GHashTable *opts, const char *prefix);
/*
 * Moves every "PREFIX<rest>" entry out of @opts into a new dictionary
 * keyed by <rest>.  @prefix includes the dot ("file.").  Never NULL.
 */
GHashTable *opts_extract_prefix(GHashTable *opts, const char *prefix);

/* Removes @key and returns its value (caller frees), or NULL when absent. */
char *opts_take_str(GHashTable *opts, const char *key);
/*
 * Removes @key and converts it; absent keys yield @def.  On a malformed
 * value, returns false with an error naming the key.
 *   bool: on/off, yes/no, true/false
 *   int:  decimal or 0x hexadecimal, may be negative
 *   size: bytes with an optional binary suffix k, M, G, T, P, E (any case,
 *         optional trailing 'B'); a fraction is allowed with a suffix ("1.5G")
 *   enum: one of the NULL-terminated @names; *out is its index
 */
bool opts_take_bool(GHashTable *opts, const char *key, bool def, bool *out, GError **errp);
bool opts_take_int(GHashTable *opts, const char *key, int64_t def, int64_t *out, GError **errp);
bool opts_take_size(GHashTable *opts, const char *key, uint64_t def, uint64_t *out, GError **errp);
bool opts_take_enum(GHashTable *opts, const char *key, const char *const *names, int def, int *out,
                    GError **errp);

/* The size syntax of opts_take_size, for front ends. */
bool opts_parse_size(const char *str, uint64_t *out, GError **errp);
bool opts_parse_bool(const char *str, bool *out);

/* "k1=v1,k2=v2" sorted by key, commas escaped: for messages and tests. */
char *opts_to_string(GHashTable *opts);

#endif /* STRATA_BLOCK_OPTIONS_H */
