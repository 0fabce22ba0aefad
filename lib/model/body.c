/*
 * body.c - This file implements entity bodies (body.h): the canonical-map validator, lookups
 * of top-level fields, the key-merging editor, and conversion to and from JSON.
 *
 * The canonical form is chosen so that JSON -> body -> JSON -> body is the identity on bytes:
 *  - only types JSON can express: nil, bool, integers in the int64 range, finite float64, str,
 *    array, map with str keys (no bin, no ext, no float32, no uint64 above 2^63-1);
 *  - strings are valid UTF-8 without U+0000 (jansson rejects both invalid UTF-8 and "\u0000"
 *    by default, and NUL-free strings are safe for every C consumer downstream);
 *  - every header (int, str, array, map) in its shortest form, non-negative ints as unsigned;
 *  - map keys unique and sorted by bytes, shorter first on a common prefix.
 * Reading uses a bounded cursor over the caller's buffer, never an allocation sized by a count
 * prefix; writing uses msgpack-c's packer, which picks the shortest forms.
 */
#include "model/body.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <msgpack.h>

/* JSON text accepted by mesh_body_from_json. A body is at most MESH_OP_BYTES_MAX bytes of
 * msgpack, and jansson holds the whole tree in memory while we convert it, so the text gets a
 * bound of its own. mesh_body_to_json writes at most 6 bytes per body byte (a control character
 * becomes \u00XX), so 8x keeps every body's JSON acceptable: the round trip never fails. */
#define JSON_BYTES_MAX (8u * MESH_OP_BYTES_MAX)

/* ---- Reading ------------------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
} rd;

enum kind { K_NIL, K_BOOL, K_UINT, K_INT, K_F64, K_STR, K_ARR, K_MAP };

/* One decoded header. For K_STR `data`/`n` are the bytes; for K_ARR/K_MAP `n` is the count. */
typedef struct hd {
    enum kind kind;
    bool b;
    uint64_t u;
    int64_t i;
    double d;
    const uint8_t *data;
    size_t n;
} hd;

static int bad(int code, size_t at, const char *fmt, ...) MESH_PRINTF(3, 4);
static int bad(int code, size_t at, const char *fmt, ...)
{
    char msg[MESH_ERRMSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mesh_err(code, "body at byte %zu: %s", at, msg);
}

static int need(const rd *r, size_t n)
{
    if (n > r->len - r->pos)
        return bad(MESH_ECORRUPT, r->pos, "truncated (needs %zu bytes, %zu left)", n,
                   r->len - r->pos);
    return MESH_OK;
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Returns the offset of the first byte that is not part of valid UTF-8 (or is NUL), or `n`.
 * Follows RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_bad(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* Most body text is ASCII: take eight bytes at a time while none is NUL or >= 0x80. */
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            const uint64_t ones = UINT64_C(0x0101010101010101), highs = ones << 7;
            /* (b | 0x80) - 1 keeps its top bit unless b is 0; no byte borrows from another. */
            uint64_t nz = (w | highs) - ones;
            if ((w & highs) == 0 && (nz & highs) == highs) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c >= 0x01 && c <= 0x7f) { i++; continue; }
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;  /* allowed range of the first continuation byte */
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c == 0xe0) { k = 2; lo = 0xa0; }
        else if (c == 0xed) { k = 2; hi = 0x9f; }
        else if (c >= 0xe1 && c <= 0xef) k = 2;
        else if (c == 0xf0) { k = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) k = 3;
        else if (c == 0xf4) { k = 3; hi = 0x8f; }
        else return i;
        if (k > n - i - 1) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return i;
        i += 1 + k;
    }
    return n;
}

/* Decodes and validates the header at the cursor (for a str also its bytes) and advances past
 * it. Everything that makes a single header non-canonical is rejected here. */
static int head(rd *r, hd *h)
{
    int rc = need(r, 1);
    if (rc != MESH_OK) return rc;
    size_t at = r->pos;
    const uint8_t *p = r->p + at;
    uint8_t b = p[0];
    size_t hl = 1;     /* header length */
    uint64_t min = 0;  /* smallest value or length this header form may carry */
    memset(h, 0, sizeof *h);

    if (b <= 0x7f) { h->kind = K_UINT; h->u = b; goto done; }
    if (b >= 0xe0) { h->kind = K_INT; h->i = (int8_t)b; goto done; }
    if (b >= 0x80 && b <= 0x8f) { h->kind = K_MAP; h->n = b & 0x0f; goto counted; }
    if (b >= 0x90 && b <= 0x9f) { h->kind = K_ARR; h->n = b & 0x0f; goto counted; }
    if (b >= 0xa0 && b <= 0xbf) { h->kind = K_STR; h->n = b & 0x1f; goto str; }

    switch (b) {
    case 0xc0: h->kind = K_NIL; goto done;
    case 0xc2: case 0xc3: h->kind = K_BOOL; h->b = b == 0xc3; goto done;
    case 0xc1: return bad(MESH_ECORRUPT, at, "byte 0xc1 is never used in msgpack");
    case 0xc4: case 0xc5: case 0xc6:
        return bad(MESH_ECORRUPT, at, "bin value: text is str and bodies carry no binary data");
    case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return bad(MESH_ECORRUPT, at, "ext value (0x%02x): bodies carry no extension types", b);
    case 0xca:
        return bad(MESH_ECORRUPT, at, "float32: numbers with a fraction are float64 in a body");
    case 0xcb: {
        if ((rc = need(r, 9)) != MESH_OK) return rc;
        uint64_t bits = be(p + 1, 8);
        /* All-ones exponent: infinity or NaN, which JSON cannot express. */
        if ((bits >> 52 & 0x7ff) == 0x7ff)
            return bad(MESH_ECORRUPT, at, "float64 is NaN or infinite");
        memcpy(&h->d, &bits, 8);
        h->kind = K_F64;
        hl = 9;
        goto done;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        static const uint64_t mins[4] = {0x80, 0x100, 0x10000, UINT64_C(0x100000000)};
        size_t n = (size_t)1 << (b - 0xcc);
        if ((rc = need(r, 1 + n)) != MESH_OK) return rc;
        h->kind = K_UINT;
        h->u = be(p + 1, n);
        hl = 1 + n;
        if (h->u < mins[b - 0xcc])
            return bad(MESH_ECORRUPT, at, "integer %llu not in its shortest form",
                       (unsigned long long)h->u);
        if (h->u > INT64_MAX)
            return bad(MESH_ECORRUPT, at, "integer %llu is above 2^63-1, the largest in a body",
                       (unsigned long long)h->u);
        goto done;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        /* The largest value each signed form may hold: anything bigger fits a shorter form,
         * and non-negative values are always written unsigned. */
        static const int64_t maxs[4] = {-33, -129, -32769, -2147483649LL};
        size_t n = (size_t)1 << (b - 0xd0);
        if ((rc = need(r, 1 + n)) != MESH_OK) return rc;
        uint64_t u = be(p + 1, n);
        /* Sign-extend from n bytes. */
        if (n < 8 && (u >> (8 * n - 1)) & 1) u |= ~UINT64_C(0) << (8 * n);
        int64_t v;
        memcpy(&v, &u, 8);
        h->kind = K_INT;
        h->i = v;
        hl = 1 + n;
        if (v > maxs[b - 0xd0])
            return bad(MESH_ECORRUPT, at, "integer %lld not in its shortest form", (long long)v);
        goto done;
    }
    case 0xd9: case 0xda: case 0xdb: {
        static const uint64_t mins[3] = {32, 0x100, 0x10000};
        size_t n = (size_t)1 << (b - 0xd9);
        if ((rc = need(r, 1 + n)) != MESH_OK) return rc;
        h->kind = K_STR;
        h->n = (size_t)be(p + 1, n);
        hl = 1 + n;
        if (h->n < mins[b - 0xd9])
            return bad(MESH_ECORRUPT, at, "string of %zu bytes not in its shortest header", h->n);
        goto str;
    }
    case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        size_t n = b & 1 ? 4 : 2;
        if ((rc = need(r, 1 + n)) != MESH_OK) return rc;
        h->kind = b <= 0xdd ? K_ARR : K_MAP;
        h->n = (size_t)be(p + 1, n);
        hl = 1 + n;
        min = n == 2 ? 16 : 0x10000;
        if (h->n < min)
            return bad(MESH_ECORRUPT, at, "%s of %zu entries not in its shortest header",
                       h->kind == K_ARR ? "array" : "map", h->n);
        goto counted;
    }
    default:
        MESH_ASSERT(0);  /* every byte value is handled above */
    }

str:
    if ((rc = need(r, hl + h->n)) != MESH_OK) return rc;
    h->data = p + hl;
    {
        size_t e = utf8_bad(h->data, h->n);
        if (e != h->n)
            return bad(MESH_ECORRUPT, at + hl + e,
                       h->data[e] ? "string is not valid UTF-8 (byte 0x%02x)"
                                  : "string contains U+0000 (byte 0x%02x)",
                       h->data[e]);
    }
    hl += h->n;
    goto done;

counted:
    if (h->n > MESH_BODY_ITEMS_MAX)
        return bad(MESH_ELIMIT, at, "%s of %zu entries; the limit is %u",
                   h->kind == K_ARR ? "array" : "map", h->n, MESH_BODY_ITEMS_MAX);
    /* Each entry takes at least one byte (two in a map): a count the rest of the buffer cannot
     * hold is truncation, found here instead of after a long walk. */
    if (h->n > (r->len - at - hl) / (h->kind == K_MAP ? 2 : 1))
        return bad(MESH_ECORRUPT, at, "%s of %zu entries does not fit in the %zu bytes left",
                   h->kind == K_ARR ? "array" : "map", h->n, r->len - at - hl);

done:
    r->pos = at + hl;
    return MESH_OK;
}

/* Bytewise order with a shorter key first on a common prefix: the canonical key order. */
static int keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) return c;
    return (alen > blen) - (alen < blen);
}

static int check_value(rd *r, int level);

/* A fixstr (up to 31 bytes, the form of nearly every key and most short values) at the cursor
 * that is whole and valid UTF-8: its bytes go to *data and *n and the cursor moves past it.
 * Anything else is left to head(), which also words the error. */
static bool fixstr_ok(rd *r, const uint8_t **data, size_t *n)
{
    if (r->pos >= r->len) return false;
    uint8_t b = r->p[r->pos];
    size_t len = b & 0x1fu;
    if (b < 0xa0 || b > 0xbf || len > r->len - r->pos - 1) return false;
    const uint8_t *d = r->p + r->pos + 1;
    if (utf8_bad(d, len) != len) return false;
    *data = d;
    *n = len;
    r->pos += 1 + len;
    return true;
}

/* Checks `n` map entries at the cursor: str keys in strictly increasing order. */
static int check_entries(rd *r, size_t n, int level)
{
    const uint8_t *prev = NULL;
    size_t prev_n = 0;
    for (size_t i = 0; i < n; i++) {
        size_t at = r->pos;
        hd k;
        if (!fixstr_ok(r, &k.data, &k.n)) {
            int rc = head(r, &k);
            if (rc != MESH_OK) return rc;
            if (k.kind != K_STR) return bad(MESH_ECORRUPT, at, "map key is not a string");
        }
        if (prev != NULL && keycmp(prev, prev_n, k.data, k.n) >= 0)
            return bad(MESH_ECORRUPT, at, "map key '%.*s' %s", (int)(k.n > 40 ? 40 : k.n),
                       (const char *)k.data,
                       keycmp(prev, prev_n, k.data, k.n) == 0 ? "is a duplicate"
                                                              : "is out of canonical order");
        prev = k.data;
        prev_n = k.n;
        int rc = check_value(r, level);
        if (rc != MESH_OK) return rc;
    }
    return MESH_OK;
}

/* Checks one value whose containers, if any, sit at nesting `level` (the top map is 1). */
static int check_value(rd *r, int level)
{
    size_t at = r->pos;
    if (at < r->len) {
        /* One-byte values are canonical whatever they hold: fixint, negative fixint, nil and
         * the booleans. */
        uint8_t b = r->p[at];
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            r->pos++;
            return MESH_OK;
        }
        const uint8_t *d;
        size_t n;
        if (fixstr_ok(r, &d, &n)) return MESH_OK;
    }
    hd h;
    int rc = head(r, &h);
    if (rc != MESH_OK) return rc;
    if (h.kind != K_ARR && h.kind != K_MAP) return MESH_OK;
    if (level + 1 > MESH_BODY_DEPTH_MAX)
        return bad(MESH_ELIMIT, at, "nesting deeper than %d levels", MESH_BODY_DEPTH_MAX);
    if (h.kind == K_MAP) return check_entries(r, h.n, level + 1);
    for (size_t i = 0; i < h.n; i++)
        if ((rc = check_value(r, level + 1)) != MESH_OK) return rc;
    return MESH_OK;
}

/* Reads the top map header: the common start of every entry point. */
static int open_body(rd *r, const uint8_t *buf, size_t len, hd *top)
{
    r->p = buf;
    r->len = len;
    r->pos = 0;
    if (buf == NULL && len != 0) return mesh_err(MESH_ECORRUPT, "body pointer is NULL");
    if (len > MESH_OP_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "body is %zu bytes; the limit is %u", len, MESH_OP_BYTES_MAX);
    int rc = head(r, top);
    if (rc != MESH_OK) return rc;
    if (top->kind != K_MAP) return bad(MESH_ECORRUPT, 0, "the top of a body must be a map");
    return MESH_OK;
}

int mesh_body_check(const uint8_t *buf, size_t len)
{
    rd r;
    hd top;
    int rc = open_body(&r, buf, len, &top);
    if (rc != MESH_OK) return rc;
    if ((rc = check_entries(&r, top.n, 1)) != MESH_OK) return rc;
    if (r.pos != len)
        return bad(MESH_ECORRUPT, r.pos, "%zu trailing bytes after the map", len - r.pos);
    return MESH_OK;
}

/* ---- Lookups ------------------------------------------------------------------------------- */

/* Finds top-level `key` and decodes its value's header into `val`. Keys are sorted, so the
 * walk stops at the first key past the one wanted. The part of the body walked is validated;
 * the rest is not looked at. */
static int lookup(const uint8_t *buf, size_t len, const char *key, hd *val)
{
    rd r;
    hd top;
    int rc = open_body(&r, buf, len, &top);
    if (rc != MESH_OK) return MESH_ECORRUPT;  /* an oversized body is corrupt here too */
    size_t klen = strlen(key);
    const uint8_t *prev = NULL;
    size_t prev_n = 0;
    for (size_t i = 0; i < top.n; i++) {
        size_t at = r.pos;
        hd k;
        if ((rc = head(&r, &k)) != MESH_OK) return MESH_ECORRUPT;
        if (k.kind != K_STR) return bad(MESH_ECORRUPT, at, "map key is not a string");
        if (prev != NULL && keycmp(prev, prev_n, k.data, k.n) >= 0)
            return bad(MESH_ECORRUPT, at, "map keys out of canonical order");
        prev = k.data;
        prev_n = k.n;
        int c = keycmp(k.data, k.n, key, klen);
        if (c > 0) break;
        if (c == 0) {
            rd v = r;
            if ((rc = head(&v, val)) != MESH_OK) return MESH_ECORRUPT;
            return MESH_OK;
        }
        if ((rc = check_value(&r, 1)) != MESH_OK) return MESH_ECORRUPT;
    }
    return mesh_err(MESH_ENOTFOUND, "body has no field '%s'", key);
}

int mesh_body_get_str(const uint8_t *buf, size_t len, const char *key, const char **val,
                      size_t *val_len)
{
    hd h;
    int rc = lookup(buf, len, key, &h);
    if (rc != MESH_OK) return rc;
    if (h.kind != K_STR) return mesh_err(MESH_ENOTFOUND, "body field '%s' is not a string", key);
    *val = (const char *)h.data;
    *val_len = h.n;
    return MESH_OK;
}

int mesh_body_get_int(const uint8_t *buf, size_t len, const char *key, int64_t *val)
{
    hd h;
    int rc = lookup(buf, len, key, &h);
    if (rc != MESH_OK) return rc;
    if (h.kind == K_UINT) *val = (int64_t)h.u;  /* head() keeps uints within int64 */
    else if (h.kind == K_INT) *val = h.i;
    else return mesh_err(MESH_ENOTFOUND, "body field '%s' is not an integer", key);
    return MESH_OK;
}

int mesh_body_get_bool(const uint8_t *buf, size_t len, const char *key, bool *val)
{
    hd h;
    int rc = lookup(buf, len, key, &h);
    if (rc != MESH_OK) return rc;
    if (h.kind != K_BOOL) return mesh_err(MESH_ENOTFOUND, "body field '%s' is not a boolean", key);
    *val = h.b;
    return MESH_OK;
}

/* ---- Writing ------------------------------------------------------------------------------- */

/* The packer's write callback: appends to a mesh_buf, keeps the first error, and stops a body
 * from growing past MESH_OP_BYTES_MAX (counted from `start`, as `out` may hold other data). */
typedef struct sink {
    mesh_buf *buf;
    size_t start;
    int rc;
} sink;

static int sink_write(void *data, const char *p, size_t n)
{
    sink *s = data;
    if (s->rc != MESH_OK) return -1;
    if (n > MESH_OP_BYTES_MAX - (s->buf->len - s->start))
        s->rc = mesh_err(MESH_ELIMIT, "body would exceed %u bytes", MESH_OP_BYTES_MAX);
    else
        s->rc = mesh_buf_append(s->buf, p, n);
    return s->rc == MESH_OK ? 0 : -1;
}

/* ---- Body -> JSON -------------------------------------------------------------------------- */

static int put(mesh_buf *out, const void *p, size_t n) { return mesh_buf_append(out, p, n); }

static int put_json_str(mesh_buf *out, const uint8_t *s, size_t n)
{
    int rc = put(out, "\"", 1);
    size_t run = 0;  /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n && rc == MESH_OK; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if ((rc = put(out, s + run, i - run)) != MESH_OK) break;
        char e[8];
        size_t el = 2;
        e[0] = '\\';
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default: el = (size_t)snprintf(e, sizeof e, "\\u%04x", c); break;
        }
        rc = put(out, e, el);
        run = i + 1;
    }
    if (rc == MESH_OK) rc = put(out, s + run, n - run);
    if (rc == MESH_OK) rc = put(out, "\"", 1);
    return rc;
}

/* Formats a finite double so that strtod (and so jansson) reads back the same bits, with the
 * first of 15, 16 or 17 significant digits that does (15 keeps typed decimals like 0.1 short),
 * and so that it reads back as a real: an integral value gets ".0". */
static size_t format_double(double d, char out[40])
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d) break;
    }
    MESH_ASSERT(n > 0 && n < 36);
    /* printf follows LC_NUMERIC; JSON wants '.' whatever the locale's decimal point is. */
    bool real = false;
    for (int i = 0; i < n; i++) {
        char c = out[i];
        if (c == 'e' || c == 'E') real = true;
        else if (!(c >= '0' && c <= '9') && c != '-' && c != '+') { out[i] = '.'; real = true; }
    }
    if (!real) { memcpy(out + n, ".0", 3); n += 2; }
    return (size_t)n;
}

static int emit(rd *r, mesh_buf *out)
{
    hd h;
    int rc = head(r, &h);
    if (rc != MESH_OK) return rc;
    char num[40];
    size_t n;
    switch (h.kind) {
    case K_NIL: return put(out, "null", 4);
    case K_BOOL: return h.b ? put(out, "true", 4) : put(out, "false", 5);
    case K_UINT:
        n = (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)h.u);
        return put(out, num, n);
    case K_INT:
        n = (size_t)snprintf(num, sizeof num, "%lld", (long long)h.i);
        return put(out, num, n);
    case K_F64:
        n = format_double(h.d, num);
        return put(out, num, n);
    case K_STR: return put_json_str(out, h.data, h.n);
    case K_ARR:
        if ((rc = put(out, "[", 1)) != MESH_OK) return rc;
        for (size_t i = 0; i < h.n; i++) {
            if (i && (rc = put(out, ",", 1)) != MESH_OK) return rc;
            if ((rc = emit(r, out)) != MESH_OK) return rc;
        }
        return put(out, "]", 1);
    case K_MAP:
        if ((rc = put(out, "{", 1)) != MESH_OK) return rc;
        for (size_t i = 0; i < h.n; i++) {
            if (i && (rc = put(out, ",", 1)) != MESH_OK) return rc;
            if ((rc = emit(r, out)) != MESH_OK) return rc;  /* the key, a string */
            if ((rc = put(out, ":", 1)) != MESH_OK) return rc;
            if ((rc = emit(r, out)) != MESH_OK) return rc;
        }
        return put(out, "}", 1);
    }
    MESH_ASSERT(0);
    return MESH_EINTERNAL;
}

int mesh_body_to_json(const uint8_t *buf, size_t len, mesh_buf *out)
{
    /* Validate first so that a corrupt body produces no output at all. */
    int rc = mesh_body_check(buf, len);
    if (rc != MESH_OK) return rc;
    size_t start = out->len;
    rd r = {buf, len, 0};
    rc = emit(&r, out);
    if (rc != MESH_OK) {
        out->len = start;
        return mesh_err_wrap(rc, "converting a body to JSON");
    }
    return MESH_OK;
}

/* ---- JSON -> body -------------------------------------------------------------------------- */

typedef struct jentry {
    const char *key;
    size_t key_len;
    json_t *val;
} jentry;

static int jentry_cmp(const void *a, const void *b)
{
    const jentry *x = a, *y = b;
    return keycmp(x->key, x->key_len, y->key, y->key_len);
}

static int from_json(msgpack_packer *pk, sink *s, json_t *v, int level)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY: {
        bool obj = json_is_object(v);
        size_t n = obj ? json_object_size(v) : json_array_size(v);
        if (level > MESH_BODY_DEPTH_MAX)
            return mesh_err(MESH_ELIMIT, "JSON nests deeper than %d levels", MESH_BODY_DEPTH_MAX);
        if (n > MESH_BODY_ITEMS_MAX)
            return mesh_err(MESH_ELIMIT, "JSON %s has %zu entries; the limit is %u",
                            obj ? "object" : "array", n, MESH_BODY_ITEMS_MAX);
        if (!obj) {
            msgpack_pack_array(pk, n);
            for (size_t i = 0; i < n && s->rc == MESH_OK; i++) {
                int rc = from_json(pk, s, json_array_get(v, i), level + 1);
                if (rc != MESH_OK) return rc;
            }
            return s->rc;
        }
        /* jansson keeps keys in insertion order; the canonical order is by bytes. */
        jentry *e = malloc((n ? n : 1) * sizeof *e);
        if (e == NULL) return mesh_err(MESH_ENOMEM, "out of memory sorting %zu JSON keys", n);
        size_t i = 0;
        const char *key;
        size_t key_len;
        json_t *val;
        json_object_keylen_foreach(v, key, key_len, val)
        {
            MESH_ASSERT(i < n);
            e[i++] = (jentry){key, key_len, val};
        }
        qsort(e, n, sizeof *e, jentry_cmp);
        msgpack_pack_map(pk, n);
        int rc = MESH_OK;
        for (i = 0; i < n && rc == MESH_OK && s->rc == MESH_OK; i++) {
            msgpack_pack_str_with_body(pk, e[i].key, e[i].key_len);
            rc = from_json(pk, s, e[i].val, level + 1);
        }
        free(e);
        return rc != MESH_OK ? rc : s->rc;
    }
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
    return s->rc;
}

int mesh_body_from_json(const char *json, size_t len, mesh_buf *out)
{
    if (json == NULL) return mesh_err(MESH_EINVAL, "JSON text is NULL");
    if (len > JSON_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "JSON body text is %zu bytes; the limit is %u", len,
                        JSON_BYTES_MAX);
    json_error_t err;
    /* Duplicate keys would make the body depend on which one a parser keeps. jansson also
     * rejects invalid UTF-8, "\u0000" (no JSON_ALLOW_NUL) and anything after the value. */
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL)
        return mesh_err(MESH_EINVAL, "JSON error at line %d, column %d: %s", err.line,
                        err.column, err.text);
    if (!json_is_object(root)) {
        bool array = json_is_array(root);
        json_decref(root);
        return mesh_err(MESH_EINVAL, "JSON body must be an object ({...}), not %s",
                        array ? "an array" : "a scalar");
    }
    size_t start = out->len;
    sink s = {out, start, MESH_OK};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, sink_write);
    int rc = from_json(&pk, &s, root, 1);
    json_decref(root);
    if (rc != MESH_OK) {
        out->len = start;
        return rc;
    }
    return MESH_OK;
}

/* ---- Editing ------------------------------------------------------------------------------- */

/* A cursor over the top-level entries of a body that mesh_body_check has accepted. */
typedef struct entries {
    rd r;
    size_t left;
    const uint8_t *key;  /* current entry, when `ok` */
    size_t key_len;
    size_t start, end;   /* the whole entry (key and value) in r.p */
    bool ok;
} entries;

static void entries_next(entries *it)
{
    it->ok = false;
    if (it->left == 0) return;
    it->left--;
    it->start = it->r.pos;
    hd k;
    /* The body was checked before, so neither call can fail. */
    int rc = head(&it->r, &k);
    MESH_ASSERT(rc == MESH_OK && k.kind == K_STR);
    rc = check_value(&it->r, 1);
    MESH_ASSERT(rc == MESH_OK);
    it->key = k.data;
    it->key_len = k.n;
    it->end = it->r.pos;
    it->ok = true;
}

static void entries_open(entries *it, const uint8_t *buf, size_t len)
{
    memset(it, 0, sizeof *it);
    if (buf == NULL) return;
    hd top;
    int rc = open_body(&it->r, buf, len, &top);
    MESH_ASSERT(rc == MESH_OK);
    it->left = top.n;
    entries_next(it);
}

static bool dropped(const entries *it, const char *const *drop, size_t ndrop)
{
    for (size_t i = 0; i < ndrop; i++)
        if (keycmp(it->key, it->key_len, drop[i], strlen(drop[i])) == 0) return true;
    return false;
}

/* Merges the two sorted entry lists. With `out` NULL it only counts the output entries. */
static int merge(const uint8_t *buf, size_t len, const char *const *drop, size_t ndrop,
                 const uint8_t *add, size_t add_len, mesh_buf *out, size_t *count)
{
    entries a, b;
    entries_open(&a, buf, len);
    entries_open(&b, add, add_len);
    *count = 0;
    for (;;) {
        while (a.ok && dropped(&a, drop, ndrop)) entries_next(&a);
        if (!a.ok && !b.ok) return MESH_OK;
        entries *take;
        if (!b.ok) take = &a;
        else if (!a.ok) take = &b;
        else {
            int c = keycmp(a.key, a.key_len, b.key, b.key_len);
            if (c == 0) entries_next(&a);  /* add wins on equal keys */
            take = c < 0 ? &a : &b;
        }
        (*count)++;
        if (out != NULL) {
            int rc = mesh_buf_append(out, take->r.p + take->start, take->end - take->start);
            if (rc != MESH_OK) return rc;
        }
        entries_next(take);
    }
}

int mesh_body_edit(const uint8_t *buf, size_t len, const char *const *drop, size_t ndrop,
                   const uint8_t *add, size_t add_len, mesh_buf *out)
{
    int rc = mesh_body_check(buf, len);
    if (rc != MESH_OK) return rc;
    if (add != NULL && (rc = mesh_body_check(add, add_len)) != MESH_OK)
        return mesh_err_wrap(rc, "the map of fields to add");
    size_t count;
    merge(buf, len, drop, ndrop, add, add_len, NULL, &count);
    if (count > MESH_BODY_ITEMS_MAX)
        return mesh_err(MESH_ELIMIT, "edited body would have %zu fields; the limit is %u", count,
                        MESH_BODY_ITEMS_MAX);
    size_t start = out->len;
    sink s = {out, start, MESH_OK};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, sink_write);
    msgpack_pack_map(&pk, count);
    if (s.rc == MESH_OK) rc = merge(buf, len, drop, ndrop, add, add_len, out, &count);
    else rc = s.rc;
    if (rc == MESH_OK && out->len - start > MESH_OP_BYTES_MAX)
        rc = mesh_err(MESH_ELIMIT, "edited body would be %zu bytes; the limit is %u",
                      out->len - start, MESH_OP_BYTES_MAX);
    if (rc != MESH_OK) {
        out->len = start;
        return rc;
    }
    return MESH_OK;
}
