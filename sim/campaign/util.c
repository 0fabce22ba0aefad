/*
 * util.c - small helpers shared by the campaign service: logging, clocks, UUIDs, a capped
 * buffer, strict number parsing, gzip, and JSON accessors.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>
#include <zlib.h>

#include "campaign.h"

bool cs_log_verbose = false;

void cs_panic(const char *file, int line, const char *expr)
{
    fprintf(stderr, "meshsync-campaign: assertion failed at %s:%d: %s\n", file, line, expr);
    abort();
}

void cs_log(const char *level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One fprintf per line keeps lines from different threads whole. */
    fprintf(stderr, "meshsync-campaign: %s: %s\n", level, msg);
}

int64_t cs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cs_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cs_uuid(char out[37])
{
    uint8_t b[16];
    randombytes_buf(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

void cs_buf_init(cs_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void cs_buf_fini(cs_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}

int cs_buf_append(cs_buf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len)
        return -1;
    /* +1 keeps room for a terminating NUL that callers may add. */
    if (b->len + n + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 4096;
        while (want < b->len + n + 1)
            want *= 2;
        uint8_t *d = realloc(b->data, want);
        if (!d)
            return -1;
        b->data = d;
        b->alloc = want;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int cs_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max || isspace((unsigned char)s[0]))
        return -1;
    *out = v;
    return 0;
}

int cs_parse_bool(const char *s, bool *out)
{
    if (!s)
        return -1;
    if (!strcasecmp(s, "true")) {
        *out = true;
        return 0;
    }
    if (!strcasecmp(s, "false")) {
        *out = false;
        return 0;
    }
    return -1;
}

int cs_parse_rate(const char *s, double *out)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0.0 && v <= 1.0))
        return -1;
    *out = v;
    return 0;
}

void cs_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

int cs_gzip(const uint8_t *in, size_t n, uint8_t **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* windowBits 15 + 16 selects the gzip wrapper. */
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&zs, (uLong)n) + 32;
    uint8_t *buf = malloc(bound);
    if (!buf) {
        deflateEnd(&zs);
        return -1;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = buf;
    zs.avail_out = (uInt)bound;
    int rc = deflate(&zs, Z_FINISH);
    if (rc != Z_STREAM_END) {
        deflateEnd(&zs);
        free(buf);
        return -1;
    }
    *out_len = zs.total_out;
    *out = buf;
    deflateEnd(&zs);
    return 0;
}

int cs_gunzip(const uint8_t *in, size_t n, size_t max_out, uint8_t **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* windowBits 15 + 32: detect gzip or zlib headers. */
    if (inflateInit2(&zs, 15 + 32) != Z_OK)
        return -1;
    cs_buf b;
    cs_buf_init(&b, max_out);
    uint8_t chunk[65536];
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    int result = 0;
    for (;;) {
        zs.next_out = chunk;
        zs.avail_out = sizeof chunk;
        int rc = inflate(&zs, Z_NO_FLUSH);
        size_t got = sizeof chunk - zs.avail_out;
        if (got && cs_buf_append(&b, chunk, got) != 0) {
            result = b.len + got > max_out ? -2 : -1;
            break;
        }
        if (rc == Z_STREAM_END) {
            /* Concatenated gzip members are valid gzip: continue with the next one. */
            if (zs.avail_in > 0) {
                if (inflateReset(&zs) != Z_OK) {
                    result = -1;
                    break;
                }
                continue;
            }
            break;
        }
        if (rc != Z_OK) {
            result = -1;
            break;
        }
        if (zs.avail_in == 0 && got == 0) {
            result = -1; /* truncated stream */
            break;
        }
    }
    inflateEnd(&zs);
    if (result != 0) {
        cs_buf_fini(&b);
        return result;
    }
    if (!b.data && cs_buf_append(&b, "", 0) != 0) {
        cs_buf_fini(&b);
        return -1;
    }
    *out = b.data;
    *out_len = b.len;
    return 0;
}

const char *cs_json_str(const json_t *obj, const char *key)
{
    if (!json_is_object(obj))
        return NULL;
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

const json_t *cs_json_path(const json_t *root, const char *dotted)
{
    const json_t *cur = root;
    const char *p = dotted;
    char part[128];
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof part)
            return NULL;
        memcpy(part, p, n);
        part[n] = 0;
        if (json_is_array(cur))
            cur = json_array_get(cur, 0);
        cur = json_is_object(cur) ? json_object_get(cur, part) : NULL;
        p = dot ? dot + 1 : p + n;
    }
    return cur;
}
