/*
 * common.h - internal helpers shared by every layer: assertions that stay on in release builds,
 * error reporting with a per-thread detail message, and big-endian byte packing for keys.
 */
#ifndef MESH_COMMON_H
#define MESH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "meshsync.h"
#include "limits.h"

#if defined(__GNUC__)
#define MESH_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define MESH_NORETURN __attribute__((noreturn))
#define MESH_UNUSED __attribute__((unused))
#else
#define MESH_PRINTF(a, b)
#define MESH_NORETURN
#define MESH_UNUSED
#endif

/* Invariant checks: a failure is a bug in meshsync, never bad input. Kept in release builds. */
MESH_NORETURN void mesh_panic(const char *file, int line, const char *expr);
#define MESH_ASSERT(e) ((e) ? (void)0 : mesh_panic(__FILE__, __LINE__, #e))

/* Records `code` and a printf-style detail for mesh_errmsg(), and returns `code`.
 * Usage: return mesh_err(MESH_EINVAL, "type '%s' is not configured", t); */
int mesh_err(int code, const char *fmt, ...) MESH_PRINTF(2, 3);
/* Prefixes the current detail message with more context ("importing x.bundle: ..."). */
int mesh_err_wrap(int code, const char *fmt, ...) MESH_PRINTF(2, 3);
void mesh_err_clear(void);

/* Lowercase hex; `out` gets 2*n+1 bytes. */
void mesh_hex_encode(const uint8_t *in, size_t n, char *out);
/* Parses exactly 2*n hex chars; returns 0 or MESH_EINVAL. */
int mesh_hex_decode(const char *in, uint8_t *out, size_t n);

static inline void mesh_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint64_t mesh_be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}
static inline void mesh_be32_put(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint32_t mesh_be32_get(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = (v << 8) | p[i];
    return v;
}

/* A growable byte buffer with a hard cap; append fails with MESH_ELIMIT past `cap`. */
typedef struct mesh_buf {
    uint8_t *data;
    size_t len;
    size_t alloc;
    size_t cap;
} mesh_buf;

void mesh_buf_init(mesh_buf *b, size_t cap);
void mesh_buf_fini(mesh_buf *b);
int mesh_buf_append(mesh_buf *b, const void *p, size_t n);
int mesh_buf_reserve(mesh_buf *b, size_t n);
static inline void mesh_buf_reset(mesh_buf *b) { b->len = 0; }

#endif
