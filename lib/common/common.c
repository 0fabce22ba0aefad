/*
 * common.c - error strings, the per-thread error detail, hex, the bounded buffer and panic.
 */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char errmsg[MESH_ERRMSG_BYTES];

const char *mesh_strerror(int code)
{
    switch (code) {
    case MESH_OK: return "MESH_OK: success";
    case MESH_EINVAL: return "MESH_EINVAL: invalid argument or input";
    case MESH_ENOMEM: return "MESH_ENOMEM: out of memory";
    case MESH_EIO: return "MESH_EIO: input/output error";
    case MESH_ENOTFOUND: return "MESH_ENOTFOUND: not found";
    case MESH_EEXIST: return "MESH_EEXIST: already exists";
    case MESH_ECORRUPT: return "MESH_ECORRUPT: data failed validation";
    case MESH_ESIG: return "MESH_ESIG: bad signature";
    case MESH_ECHAIN: return "MESH_ECHAIN: broken hash chain";
    case MESH_EDELETED: return "MESH_EDELETED: entity is deleted";
    case MESH_ESTALE: return "MESH_ESTALE: stale rowVersion";
    case MESH_ETYPE: return "MESH_ETYPE: unknown entity type";
    case MESH_ENOSPC: return "MESH_ENOSPC: no space left";
    case MESH_ELIMIT: return "MESH_ELIMIT: limit exceeded";
    case MESH_ENOTSTORE: return "MESH_ENOTSTORE: not a meshsync data directory";
    case MESH_EVERSION: return "MESH_EVERSION: unsupported version";
    case MESH_EPERM: return "MESH_EPERM: not permitted";
    case MESH_ECONFLICT: return "MESH_ECONFLICT: no such conflict";
    case MESH_EPROTO: return "MESH_EPROTO: protocol violation";
    case MESH_EAGAIN: return "MESH_EAGAIN: try again";
    case MESH_ECLOSED: return "MESH_ECLOSED: closed";
    case MESH_ETIMEDOUT: return "MESH_ETIMEDOUT: timed out";
    case MESH_EINTERNAL: return "MESH_EINTERNAL: internal error";
    default: return "MESH_E?: unknown error code";
    }
}

const char *mesh_errmsg(void) { return errmsg; }

void mesh_err_clear(void) { errmsg[0] = '\0'; }

int mesh_err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return code;
}

int mesh_err_wrap(int code, const char *fmt, ...)
{
    char prefix[MESH_ERRMSG_BYTES];
    char old[MESH_ERRMSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errmsg, sizeof old);
    /* Written in two steps so that a long prefix truncates the detail, not the reverse. */
    int n = snprintf(errmsg, sizeof errmsg, "%s: ", prefix);
    if (n >= 0 && (size_t)n < sizeof errmsg)
        snprintf(errmsg + n, sizeof errmsg - (size_t)n, "%s", old[0] ? old : mesh_strerror(code));
    return code;
}

void mesh_free(void *p) { free(p); }

void mesh_panic(const char *file, int line, const char *expr)
{
    fprintf(stderr, "meshsync: assertion failed at %s:%d: %s (a bug; please report it)\n", file,
            line, expr);
    abort();
}

void mesh_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int mesh_hex_decode(const char *in, uint8_t *out, size_t n)
{
    if (in == NULL || strlen(in) != 2 * n) return MESH_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0) return MESH_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return MESH_OK;
}

void mesh_buf_init(mesh_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void mesh_buf_fini(mesh_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}

int mesh_buf_reserve(mesh_buf *b, size_t n)
{
    if (n > b->cap - b->len) return mesh_err(MESH_ELIMIT, "buffer limit of %zu bytes reached", b->cap);
    size_t need = b->len + n;
    if (need <= b->alloc) return MESH_OK;
    size_t na = b->alloc ? b->alloc : 256;
    while (na < need) na = na * 2 < na ? need : na * 2;
    if (na > b->cap) na = b->cap;
    uint8_t *p = realloc(b->data, na);
    if (p == NULL) return mesh_err(MESH_ENOMEM, "out of memory growing a buffer to %zu bytes", na);
    b->data = p;
    b->alloc = na;
    return MESH_OK;
}

int mesh_buf_append(mesh_buf *b, const void *p, size_t n)
{
    int rc = mesh_buf_reserve(b, n);
    if (rc != MESH_OK) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return MESH_OK;
}
