/*
 * strata-io helpers shared by the commands: number and pattern parsing,
 * the size/time/statistics formats of qemu-io's output, hex dumps, data
 * buffers and vectors.
 *
 * The formats are reproduced from qemu-io 7.2's observable output (see
 * tests/qemu-iotests-lite for the cases compared against it).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tools/strata-io/sio.h"

void sio_error(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "strata-io: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- numbers ---------------------------------------------------------------------------- */

/* Multiplier of a size suffix letter, or 0 when @c is not one. */
static uint64_t suffix_unit(char c)
{
    static const char letters[] = "bkmgtpe";
    const char *p = c ? strchr(letters, g_ascii_tolower(c)) : NULL;
    return p ? 1ULL << (10 * (p - letters)) : 0;
}

/*
 * The size syntax: [space][+]digits[.digits][suffix] or 0xHEX[suffix].
 * A fraction needs a suffix larger than bytes.  Returns 0, -EINVAL or
 * -ERANGE (more than 64 bits).
 */
static int parse_size(const char *str, uint64_t *out, bool *hex_suffix)
{
    const char *p = str;
    char *end;
    double frac = 0;
    bool hex;

    while (isspace((unsigned char)*p)) {
        p++;
    }
    if (*p == '+') {
        p++;
    }
    hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    if (!isdigit((unsigned char)*p) || (hex && !isxdigit((unsigned char)p[2]))) {
        return -EINVAL;
    }
    errno = 0;
    uint64_t val = strtoull(p, &end, hex ? 16 : 10);
    if (errno == ERANGE) {
        return -ERANGE;
    }
    if (!hex && *end == '.') {
        const char *d = ++end;
        while (isdigit((unsigned char)*end)) {
            end++;
        }
        g_autofree char *digits = g_strdup_printf("0.%.*s", (int)(end - d), d);
        frac = g_ascii_strtod(digits, NULL);
    }
    uint64_t unit = suffix_unit(*end);
    if (unit) {
        end++;
    } else {
        unit = 1;
    }
    if (*end || (frac > 0 && unit == 1)) {
        return -EINVAL;
    }
    *hex_suffix = hex && unit > 1;
    if (val > UINT64_MAX / unit) {
        return -ERANGE;
    }
    uint64_t extra = (uint64_t)(frac * (double)unit);
    if (val * unit > UINT64_MAX - extra) {
        return -ERANGE;
    }
    *out = val * unit + extra;
    return 0;
}

int64_t sio_parse_num(const char *str)
{
    uint64_t v;
    bool hex_suffix = false;
    int ret = parse_size(str, &v, &hex_suffix);

    if (ret == 0 && v > INT64_MAX) {
        ret = -ERANGE;
    }
    if (ret < 0) {
        return ret;
    }
    if (hex_suffix) {
        sio_error("warning: Using a multiplier suffix on hex numbers is deprecated: %s", str);
    }
    return (int64_t)v;
}

void sio_print_num_error(int64_t err, const char *str)
{
    if (err == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", str);
    } else {
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
               str);
    }
}

int sio_parse_pattern(const char *str)
{
    char *end;
    errno = 0;
    long v = strtol(str, &end, 0);
    if (errno || end == str || *end || v < 0 || v > 0xff) {
        printf("%s is not a valid pattern byte\n", str);
        return -1;
    }
    return (int)v;
}

/* ---- output formats ------------------------------------------------------------------------ */

void sio_fmt_size(double value, char *buf, size_t len)
{
    static const char *const units[] = {" EiB", " PiB", " TiB", " GiB", " MiB", " KiB"};
    const char *suffix = " bytes";
    bool scaled = false;

    for (int i = 0; i < (int)G_N_ELEMENTS(units); i++) {
        double unit = (double)(1ULL << (10 * (6 - i)));
        if (value >= unit) {
            value /= unit;
            suffix = units[i];
            scaled = true;
            break;
        }
    }
    g_snprintf(buf, len, scaled ? "%.3f" : "%f", value);
    /* A fraction that prints as zeroes is dropped: "64 KiB", "512 bytes". */
    char *dot = strchr(buf, '.');
    if (dot && strncmp(dot, ".000", 4) == 0) {
        *dot = '\0';
    }
    g_strlcat(buf, suffix, len);
}

void sio_fmt_time(int64_t ns, bool machine, char *buf, size_t len)
{
    int64_t secs = ns / 1000000000;
    int centis = (int)(ns % 1000000000 / 10000000);

    if (!machine && secs == 0) {
        g_snprintf(buf, len, "00.%02d sec", centis);
    } else {
        g_snprintf(buf, len, "%" PRId64 ":%02d:%02d.%02d", secs / 3600, (int)(secs / 60 % 60),
                   (int)(secs % 60), centis);
    }
}

void sio_print_report(const char *op, int64_t ns, int64_t offset, int64_t bytes, int ops,
                      bool machine)
{
    double secs = (double)ns / 1e9;
    double rate = secs > 0 ? (double)bytes / secs : 0;
    double op_rate = secs > 0 ? (double)ops / secs : 0;
    char size[64], time[64], speed[64];

    sio_fmt_time(ns, machine, time, sizeof(time));
    if (machine) {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", bytes, ops, time, rate, op_rate);
        return;
    }
    sio_fmt_size((double)bytes, size, sizeof(size));
    sio_fmt_size(rate, speed, sizeof(speed));
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, bytes, bytes, offset);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", size, ops, time, speed, op_rate);
}

void sio_dump(const void *buf, int64_t offset, size_t len)
{
    const uint8_t *p = buf;

    for (size_t line = 0; line < len; line += 16) {
        size_t n = MIN(16, len - line);
        printf("%08" PRIx64 ":  ", (uint64_t)(offset + (int64_t)line));
        for (size_t i = 0; i < n; i++) {
            printf("%02x ", p[line + i]);
        }
        putchar(' ');
        for (size_t i = 0; i < n; i++) {
            uint8_t c = p[line + i];
            /* Only letters and digits show; everything else, space included, is a dot. */
            putchar(g_ascii_isalnum(c) ? c : '.');
        }
        putchar('\n');
    }
}

/* ---- buffers --------------------------------------------------------------------------------- */

/*
 * Buffers are page aligned so that O_DIRECT needs no bounce buffer; with
 * -m they start 16 bytes later, which makes the block layer bounce them.
 */
#define SIO_BUF_ALIGN    4096
#define SIO_MISALIGNMENT 16

void *sio_buf_alloc(Sio *s, size_t len, int pattern)
{
    size_t skip = s->misalign ? SIO_MISALIGNMENT : 0;
    void *base = NULL;
    if (posix_memalign(&base, SIO_BUF_ALIGN, MAX(len + skip, 1)) != 0) {
        g_error("strata-io: out of memory allocating %zu bytes", len);
    }
    memset(base, pattern, len + skip);
    return (uint8_t *)base + skip;
}

void sio_buf_free(Sio *s, void *buf)
{
    if (buf) {
        free((uint8_t *)buf - (s->misalign ? SIO_MISALIGNMENT : 0));
    }
}

void *sio_buf_from_file(Sio *s, size_t len, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, g_strerror(errno));
        return NULL;
    }
    /* The file's first @len bytes, repeated when it is shorter. */
    uint8_t *buf = sio_buf_alloc(s, len, 0);
    size_t size = fread(buf, 1, len, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || (size == 0 && len > 0)) {
        fprintf(stderr, "%s: %s\n", path, err ? g_strerror(err) : "file is empty");
        sio_buf_free(s, buf);
        return NULL;
    }
    for (size_t done = size; done < len; done += size) {
        memcpy(buf + done, buf, MIN(size, len - done));
    }
    return buf;
}

bool sio_verify(const void *buf, int pattern, int64_t offset, size_t len)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != pattern) {
            printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n", offset, len);
            return false;
        }
    }
    return true;
}

int64_t sio_iov_build(Sio *s, IOVector *v, char **lens, int nlens, int pattern)
{
    g_autofree int64_t *len = g_new(int64_t, MAX(nlens, 1));
    int64_t total = 0;

    /* Every length is checked before any buffer is allocated (and filled). */
    for (int i = 0; i < nlens; i++) {
        len[i] = sio_parse_num(lens[i]);
        if (len[i] < 0) {
            sio_print_num_error(len[i], lens[i]);
            return -EINVAL;
        }
        if (len[i] > SIO_MAX_REQUEST) {
            printf("Argument '%s' exceeds maximum size %lld\n", lens[i], SIO_MAX_REQUEST);
            return -EINVAL;
        }
        if (total > SIO_MAX_REQUEST - len[i]) {
            printf("The total number of bytes exceed the maximum size %lld\n", SIO_MAX_REQUEST);
            return -EINVAL;
        }
        total += len[i];
    }
    iov_init(v, nlens);
    for (int i = 0; i < nlens; i++) {
        if (len[i] > 0) {
            iov_add(v, sio_buf_alloc(s, len[i], pattern), len[i]);
        }
    }
    return total;
}

void sio_iov_free(Sio *s, IOVector *v)
{
    for (int i = 0; i < v->niov; i++) {
        sio_buf_free(s, v->iov[i].iov_base);
    }
    iov_destroy(v);
}
