/*
 * op.c - This file implements the op's canonical msgpack encoding (op.h), the checks on its
 * fields, its hash, the merge order, stream ids and the scope and type grammars.
 *
 * Encoding goes through msgpack-c's packer, which always picks the shortest form. Decoding is a
 * hand-written reader over the caller's buffer instead of msgpack_unpack: it allocates nothing
 * (ingest decodes every op it receives), a hostile count prefix can never size an allocation,
 * and it rejects every non-shortest header as it meets it, so exactly one byte string decodes
 * to a given op. tests/fuzz/fuzz_op.c checks that decode followed by encode gives back the
 * input for everything the decoder accepts.
 */
#include "model/op.h"

#include <stddef.h>

#include <stdio.h>

#include <msgpack.h>

#include "crypto/crypto.h"
#include "model/body.h"

_Static_assert(MESH_HASH_BYTES == MESH_DIGEST_BYTES, "an op hash is a crypto digest");
_Static_assert(MESH_KEY_BYTES == MESH_PK_BYTES, "an author is an Ed25519 public key");

enum {
    F_FORMAT, F_KIND, F_TYPE, F_ENTITY, F_ROW_VERSION, F_AUTHOR, F_SCOPE, F_SEQ, F_PREV, F_HLC,
    F_BASE, F_MERGED, F_PARENTS, F_BODY, F_COUNT
};

static const char *const FIELD[F_COUNT] = {
    "format", "kind", "type", "entity", "row_version", "author", "scope", "seq", "prev", "hlc",
    "base", "merged", "parents", "body",
};

#define SEQ_MAX ((UINT64_C(1) << 63) - 1)

/* ---- Grammars ------------------------------------------------------------------------------ */

/* Writes at most 40 bytes of untrusted text into `out` with non-printable bytes as \xNN, so an
 * error message never carries control characters or a stray NUL from a peer. */
static const char *printable(const char *s, size_t len, char out[4 * 40 + 4])
{
    size_t o = 0;
    for (size_t i = 0; i < len && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
    }
    if (len > 40) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = '\0';
    return out;
}

static int scope_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

int mesh_scope_check(const char *scope, size_t len)
{
    char p[4 * 40 + 4];
    if (scope == NULL || len == 0) return mesh_err(MESH_EINVAL, "scope is empty");
    if (len > MESH_SCOPE_BYTES_MAX)
        return mesh_err(MESH_EINVAL, "scope '%s' is %zu bytes; the limit is %d",
                        printable(scope, len, p), len, MESH_SCOPE_BYTES_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)scope[i];
        if (c == '/') {
            /* A '/' must sit between two non-empty segments. */
            if (i == 0 || i == len - 1 || scope[i - 1] == '/')
                return mesh_err(MESH_EINVAL,
                                "scope '%s' has an empty segment at byte %zu (no leading, trailing "
                                "or doubled '/')",
                                printable(scope, len, p), i);
        } else if (!scope_char(c)) {
            return mesh_err(MESH_EINVAL,
                            "scope '%s' has byte 0x%02x at %zu; allowed are A-Z a-z 0-9 _ . - and "
                            "'/' between segments",
                            printable(scope, len, p), c, i);
        }
    }
    return MESH_OK;
}

int mesh_type_check(const char *type, size_t len)
{
    char p[4 * 40 + 4];
    if (type == NULL || len == 0) return mesh_err(MESH_EINVAL, "type name is empty");
    if (len > MESH_TYPE_BYTES_MAX)
        return mesh_err(MESH_EINVAL, "type name '%s' is %zu bytes; the limit is %d",
                        printable(type, len, p), len, MESH_TYPE_BYTES_MAX);
    /* User types start with a letter; system types with '_' and need at least one more byte. */
    unsigned char c0 = (unsigned char)type[0];
    if (!(c0 >= 'a' && c0 <= 'z') && !(c0 == '_' && len > 1))
        return mesh_err(MESH_EINVAL,
                        "type name '%s' must start with a lowercase letter (or '_' for a system "
                        "type)",
                        printable(type, len, p));
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)type[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return mesh_err(MESH_EINVAL,
                            "type name '%s' has byte 0x%02x at %zu; allowed are a-z 0-9 _",
                            printable(type, len, p), c, i);
    }
    return MESH_OK;
}

/* ---- Hash, order, stream id ---------------------------------------------------------------- */

void mesh_op_hash(const uint8_t *buf, size_t len, uint8_t out[MESH_HASH_BYTES])
{
    mesh_hash(buf, len, out);
}

int mesh_op_order_cmp(uint32_t rv_a, uint64_t hlc_a, const uint8_t *author_a, uint32_t rv_b,
                      uint64_t hlc_b, const uint8_t *author_b)
{
    if (rv_a != rv_b) return rv_a < rv_b ? -1 : 1;
    if (hlc_a != hlc_b) return hlc_a < hlc_b ? -1 : 1;
    int c = memcmp(author_a, author_b, MESH_KEY_BYTES);
    return (c > 0) - (c < 0);
}

uint64_t mesh_stream_id(const uint8_t author[MESH_KEY_BYTES], const char *scope, size_t scope_len)
{
    mesh_hash_state st;
    uint8_t h[MESH_HASH_BYTES];
    mesh_hash_init(&st);
    mesh_hash_update(&st, author, MESH_KEY_BYTES);
    mesh_hash_update(&st, scope, scope_len);
    mesh_hash_final(&st, h);
    return mesh_be64_get(h);
}

/* ---- Field checks shared by the encoder and the decoder ------------------------------------ */

/* Checks the values of a filled-in op (everything but the body's canonical form). `code` is
 * the error for a bad value: MESH_EINVAL when the caller built the op, MESH_ECORRUPT when it
 * came off the wire. `off` gives each field's byte offset for messages, or is NULL. */
static int check_fields(const mesh_op *op, int code, const size_t *off)
{
    char where[64] = "";
#define AT(f) (off ? (snprintf(where, sizeof where, " at byte %zu", off[f]), where) : "")
    if (op->kind < MESH_OP_KIND_MIN || op->kind > MESH_OP_KIND_MAX)
        return mesh_err(code, "op field 'kind'%s: %u is not a kind (%d..%d)", AT(F_KIND),
                        op->kind, MESH_OP_KIND_MIN, MESH_OP_KIND_MAX);
    int rc = mesh_type_check(op->type, op->type_len);
    if (rc != MESH_OK) return mesh_err_wrap(code, "op field 'type'%s", AT(F_TYPE));
    if (op->row_version == 0)
        return mesh_err(code, "op field 'row_version'%s: must be at least 1", AT(F_ROW_VERSION));
    rc = mesh_scope_check(op->scope, op->scope_len);
    if (rc != MESH_OK) return mesh_err_wrap(code, "op field 'scope'%s", AT(F_SCOPE));
    if (op->seq == 0 || op->seq > SEQ_MAX)
        return mesh_err(code, "op field 'seq'%s: %llu is outside 1..2^63-1", AT(F_SEQ),
                        (unsigned long long)op->seq);
    if (op->seq == 1) {
        static const uint8_t zero[MESH_HASH_BYTES];
        if (memcmp(op->prev, zero, MESH_HASH_BYTES) != 0)
            return mesh_err(code, "op field 'prev'%s: must be all zeros for seq 1", AT(F_PREV));
    }
    if (op->kind == MESH_OP_CREATE && op->has_base)
        return mesh_err(code, "op field 'base'%s: a create (kind 1) has no base, found one",
                        AT(F_BASE));
    if (op->kind != MESH_OP_CREATE && !op->has_base)
        return mesh_err(code, "op field 'base'%s: kind %u needs a base, found nil", AT(F_BASE),
                        op->kind);
    if (op->has_base && (op->base.row_version == 0 || op->base.row_version >= op->row_version))
        return mesh_err(code,
                        "op field 'base'%s: base row_version %u must be in 1..%u (below the op's "
                        "row_version %u)",
                        AT(F_BASE), op->base.row_version, op->row_version - 1, op->row_version);
    if (op->merged_count > MESH_MERGED_MAX)
        return mesh_err(MESH_ELIMIT, "op field 'merged'%s: %u entries; the limit is %d",
                        AT(F_MERGED), op->merged_count, MESH_MERGED_MAX);
    for (uint32_t i = 0; i < op->merged_count; i++)
        if (op->merged[i].row_version == 0)
            return mesh_err(code, "op field 'merged'%s: entry %u has row_version 0",
                            AT(F_MERGED), i);
    if (op->parents_count > MESH_PARENTS_MAX)
        return mesh_err(MESH_ELIMIT, "op field 'parents'%s: %u entries; the limit is %d",
                        AT(F_PARENTS), op->parents_count, MESH_PARENTS_MAX);
#undef AT
    return MESH_OK;
}

/* ---- Encoder ------------------------------------------------------------------------------- */

/* msgpack-c's packer writes through a callback; this one appends to a mesh_buf and keeps the
 * first error, since the packer only passes back -1/0 per call. */
typedef struct sink {
    mesh_buf *buf;
    int rc;
} sink;

static int sink_write(void *data, const char *p, size_t n)
{
    sink *s = data;
    if (s->rc == MESH_OK) s->rc = mesh_buf_append(s->buf, p, n);
    return s->rc == MESH_OK ? 0 : -1;
}

static void pack_opref(msgpack_packer *pk, const mesh_opref *r)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, r->row_version);
    msgpack_pack_bin_with_body(pk, r->author, MESH_KEY_BYTES);
}

int mesh_op_encode(const mesh_op *op, mesh_buf *out)
{
    int rc = check_fields(op, MESH_EINVAL, NULL);
    if (rc != MESH_OK) return rc;
    if (op->body_len > MESH_OP_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "op body is %zu bytes; an op is at most %u bytes",
                        op->body_len, MESH_OP_BYTES_MAX);
    rc = mesh_body_check(op->body, op->body_len);
    if (rc != MESH_OK) return mesh_err_wrap(MESH_EINVAL, "op body is not a canonical map");

    size_t start = out->len;
    sink s = {out, MESH_OK};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, sink_write);
    msgpack_pack_array(&pk, F_COUNT);
    msgpack_pack_uint64(&pk, MESH_OP_FORMAT);
    msgpack_pack_uint64(&pk, op->kind);
    msgpack_pack_str_with_body(&pk, op->type, op->type_len);
    msgpack_pack_bin_with_body(&pk, op->entity, MESH_UUID_BYTES);
    msgpack_pack_uint64(&pk, op->row_version);
    msgpack_pack_bin_with_body(&pk, op->author, MESH_KEY_BYTES);
    msgpack_pack_str_with_body(&pk, op->scope, op->scope_len);
    msgpack_pack_uint64(&pk, op->seq);
    msgpack_pack_bin_with_body(&pk, op->prev, MESH_HASH_BYTES);
    msgpack_pack_uint64(&pk, op->hlc);
    if (op->has_base) pack_opref(&pk, &op->base);
    else msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, op->merged_count);
    for (uint32_t i = 0; i < op->merged_count; i++) pack_opref(&pk, &op->merged[i]);
    msgpack_pack_array(&pk, op->parents_count);
    for (uint32_t i = 0; i < op->parents_count; i++)
        msgpack_pack_bin_with_body(&pk, op->parents[i], MESH_UUID_BYTES);
    sink_write(&s, (const char *)op->body, op->body_len);

    if (s.rc == MESH_OK && out->len - start > MESH_OP_BYTES_MAX)
        s.rc = mesh_err(MESH_ELIMIT, "encoded op is %zu bytes; the limit is %u",
                        out->len - start, MESH_OP_BYTES_MAX);
    if (s.rc != MESH_OK) {
        out->len = start;  /* leave the caller's buffer as it was */
        return mesh_err_wrap(s.rc, "encoding op");
    }
    return MESH_OK;
}

/* ---- Decoder ------------------------------------------------------------------------------- */

/* A bounded cursor. Every read checks the bytes it needs against `len` first. */
typedef struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
} rd;

static int need(const rd *r, size_t n, int f)
{
    if (n > r->len - r->pos)
        return mesh_err(MESH_ECORRUPT, "op field '%s' at byte %zu: truncated (needs %zu bytes, %zu left)",
                        FIELD[f], r->pos, n, r->len - r->pos);
    return MESH_OK;
}

static int wrong(const rd *r, int f, const char *what)
{
    return mesh_err(MESH_ECORRUPT, "op field '%s' at byte %zu: expected %s, found byte 0x%02x",
                    FIELD[f], r->pos, what, r->p[r->pos]);
}

static int not_shortest(const rd *r, int f, const char *what, uint64_t v)
{
    return mesh_err(MESH_ECORRUPT,
                    "op field '%s' at byte %zu: non-canonical %s header for %llu (not the shortest "
                    "form)",
                    FIELD[f], r->pos, what, (unsigned long long)v);
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static int read_uint(rd *r, int f, uint64_t *v)
{
    int rc = need(r, 1, f);
    if (rc != MESH_OK) return rc;
    const uint8_t *p = r->p + r->pos;
    size_t n;
    uint64_t min;
    switch (p[0]) {
    case 0xcc: n = 1; min = 0x80; break;
    case 0xcd: n = 2; min = 0x100; break;
    case 0xce: n = 4; min = 0x10000; break;
    case 0xcf: n = 8; min = UINT64_C(0x100000000); break;
    default:
        if (p[0] <= 0x7f) { *v = p[0]; r->pos++; return MESH_OK; }
        return wrong(r, f, "an unsigned integer");
    }
    if ((rc = need(r, 1 + n, f)) != MESH_OK) return rc;
    uint64_t x = 0;
    for (size_t i = 1; i <= n; i++) x = x << 8 | p[i];
    if (x < min) return not_shortest(r, f, "integer", x);
    *v = x;
    r->pos += 1 + n;
    return MESH_OK;
}

/* Reads a str (`str` true: fixstr, str8/16/32 at 0xd9..0xdb) or bin (bin8/16/32 at 0xc4..0xc6;
 * there is no fixbin) in its shortest form and checks that the payload is all there. */
static int read_raw(rd *r, int f, bool str, const uint8_t **data, size_t *len)
{
    int rc = need(r, 1, f);
    if (rc != MESH_OK) return rc;
    const uint8_t *p = r->p + r->pos;
    uint8_t b8 = str ? 0xd9 : 0xc4;
    size_t h, n;
    if (str && p[0] >= 0xa0 && p[0] <= 0xbf) {
        h = 1;
        n = p[0] & 0x1f;
    } else if (p[0] == b8) {
        if ((rc = need(r, 2, f)) != MESH_OK) return rc;
        h = 2;
        n = p[1];
        if (str && n < 32) return not_shortest(r, f, "str8", n);
    } else if (p[0] == b8 + 1) {
        if ((rc = need(r, 3, f)) != MESH_OK) return rc;
        h = 3;
        n = be16(p + 1);
        if (n < 256) return not_shortest(r, f, str ? "str16" : "bin16", n);
    } else if (p[0] == b8 + 2) {
        if ((rc = need(r, 5, f)) != MESH_OK) return rc;
        h = 5;
        n = mesh_be32_get(p + 1);
        if (n < 65536) return not_shortest(r, f, str ? "str32" : "bin32", n);
    } else {
        return wrong(r, f, str ? "a string" : "binary data");
    }
    if ((rc = need(r, h + n, f)) != MESH_OK) return rc;
    *data = p + h;
    *len = n;
    r->pos += h + n;
    return MESH_OK;
}

static int read_bin_exact(rd *r, int f, uint8_t *out, size_t n)
{
    const uint8_t *d;
    size_t len;
    size_t at = r->pos;
    int rc = read_raw(r, f, false, &d, &len);
    if (rc != MESH_OK) return rc;
    if (len != n)
        return mesh_err(MESH_ECORRUPT, "op field '%s' at byte %zu: %zu bytes of binary data, expected %zu",
                        FIELD[f], at, len, n);
    memcpy(out, d, n);
    return MESH_OK;
}

static int read_array(rd *r, int f, uint32_t *n)
{
    int rc = need(r, 1, f);
    if (rc != MESH_OK) return rc;
    const uint8_t *p = r->p + r->pos;
    if (p[0] >= 0x90 && p[0] <= 0x9f) {
        *n = p[0] & 0x0f;
        r->pos++;
        return MESH_OK;
    }
    if (p[0] == 0xdc) {
        if ((rc = need(r, 3, f)) != MESH_OK) return rc;
        *n = be16(p + 1);
        if (*n < 16) return not_shortest(r, f, "array16", *n);
        r->pos += 3;
        return MESH_OK;
    }
    if (p[0] == 0xdd) {
        if ((rc = need(r, 5, f)) != MESH_OK) return rc;
        *n = mesh_be32_get(p + 1);
        if (*n < 65536) return not_shortest(r, f, "array32", *n);
        r->pos += 5;
        return MESH_OK;
    }
    return wrong(r, f, "an array");
}

static int read_u32(rd *r, int f, uint32_t *v)
{
    uint64_t x;
    size_t at = r->pos;
    int rc = read_uint(r, f, &x);
    if (rc != MESH_OK) return rc;
    if (x > UINT32_MAX)
        return mesh_err(MESH_ECORRUPT, "op field '%s' at byte %zu: %llu does not fit 32 bits",
                        FIELD[f], at, (unsigned long long)x);
    *v = (uint32_t)x;
    return MESH_OK;
}

static int read_opref(rd *r, int f, mesh_opref *ref)
{
    uint32_t n;
    size_t at = r->pos;
    int rc = read_array(r, f, &n);
    if (rc != MESH_OK) return rc;
    if (n != 2)
        return mesh_err(MESH_ECORRUPT,
                        "op field '%s' at byte %zu: an op reference is [row_version, author], found "
                        "%u elements",
                        FIELD[f], at, n);
    if ((rc = read_u32(r, f, &ref->row_version)) != MESH_OK) return rc;
    return read_bin_exact(r, f, ref->author, MESH_KEY_BYTES);
}

/* Reads fields format..seq (the op's stream position), the part that routing needs. */
static int decode_head(rd *r_, size_t off[F_COUNT], mesh_op *op)
{
    rd r = *r_;
    uint32_t n;
    uint64_t v;
    int rc;

    if ((rc = read_array(&r, F_FORMAT, &n)) != MESH_OK) return mesh_err_wrap(rc, "op is not a msgpack array");
    if (n == 0) return mesh_err(MESH_ECORRUPT, "op is an empty array");
    /* The format number comes first so a later format may change everything after it. */
    off[F_FORMAT] = r.pos;
    if ((rc = read_uint(&r, F_FORMAT, &v)) != MESH_OK) return rc;
    if (v != MESH_OP_FORMAT)
        return mesh_err(MESH_EVERSION,
                        "op format %llu is not supported (this build reads format %d); upgrade "
                        "meshsync",
                        (unsigned long long)v, MESH_OP_FORMAT);
    if (n != F_COUNT)
        return mesh_err(MESH_ECORRUPT, "op array has %u elements; format %d has %d", n,
                        MESH_OP_FORMAT, F_COUNT);

    off[F_KIND] = r.pos;
    if ((rc = read_uint(&r, F_KIND, &v)) != MESH_OK) return rc;
    if (v < MESH_OP_KIND_MIN || v > MESH_OP_KIND_MAX)
        return mesh_err(MESH_ECORRUPT, "op field 'kind' at byte %zu: %llu is not a kind (%d..%d)",
                        off[F_KIND], (unsigned long long)v, MESH_OP_KIND_MIN, MESH_OP_KIND_MAX);
    op->kind = (uint8_t)v;

    const uint8_t *s;
    off[F_TYPE] = r.pos;
    if ((rc = read_raw(&r, F_TYPE, true, &s, &op->type_len)) != MESH_OK) return rc;
    op->type = (const char *)s;

    off[F_ENTITY] = r.pos;
    if ((rc = read_bin_exact(&r, F_ENTITY, op->entity, MESH_UUID_BYTES)) != MESH_OK) return rc;
    off[F_ROW_VERSION] = r.pos;
    if ((rc = read_u32(&r, F_ROW_VERSION, &op->row_version)) != MESH_OK) return rc;
    off[F_AUTHOR] = r.pos;
    if ((rc = read_bin_exact(&r, F_AUTHOR, op->author, MESH_KEY_BYTES)) != MESH_OK) return rc;

    off[F_SCOPE] = r.pos;
    if ((rc = read_raw(&r, F_SCOPE, true, &s, &op->scope_len)) != MESH_OK) return rc;
    op->scope = (const char *)s;

    off[F_SEQ] = r.pos;
    if ((rc = read_uint(&r, F_SEQ, &op->seq)) != MESH_OK) return rc;
    *r_ = r;
    return MESH_OK;
}

int mesh_op_decode(const uint8_t *buf, size_t len, mesh_op *op)
{
    /* Not a memset of the whole struct: the merged and parents arrays are ~700 bytes and only
     * their first *_count entries mean anything. This runs once per op on the ingest path. */
    memset(op, 0, offsetof(mesh_op, merged));
    op->parents_count = 0;
    op->body = NULL;
    op->body_len = 0;
    if (len > MESH_OP_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "op is %zu bytes; the limit is %u", len, MESH_OP_BYTES_MAX);
    rd r = {buf, len, 0};
    size_t off[F_COUNT] = {0};
    uint32_t n;
    int rc;

    if ((rc = decode_head(&r, off, op)) != MESH_OK) return rc;
    off[F_PREV] = r.pos;
    if ((rc = read_bin_exact(&r, F_PREV, op->prev, MESH_HASH_BYTES)) != MESH_OK) return rc;
    off[F_HLC] = r.pos;
    if ((rc = read_uint(&r, F_HLC, &op->hlc)) != MESH_OK) return rc;

    off[F_BASE] = r.pos;
    if ((rc = need(&r, 1, F_BASE)) != MESH_OK) return rc;
    if (buf[r.pos] == 0xc0) {
        r.pos++;
    } else {
        if ((rc = read_opref(&r, F_BASE, &op->base)) != MESH_OK) return rc;
        op->has_base = true;
    }

    off[F_MERGED] = r.pos;
    if ((rc = read_array(&r, F_MERGED, &n)) != MESH_OK) return rc;
    if (n > MESH_MERGED_MAX)
        return mesh_err(MESH_ELIMIT, "op field 'merged' at byte %zu: %u entries; the limit is %d",
                        off[F_MERGED], n, MESH_MERGED_MAX);
    op->merged_count = n;
    for (uint32_t i = 0; i < n; i++)
        if ((rc = read_opref(&r, F_MERGED, &op->merged[i])) != MESH_OK) return rc;

    off[F_PARENTS] = r.pos;
    if ((rc = read_array(&r, F_PARENTS, &n)) != MESH_OK) return rc;
    if (n > MESH_PARENTS_MAX)
        return mesh_err(MESH_ELIMIT, "op field 'parents' at byte %zu: %u entries; the limit is %d",
                        off[F_PARENTS], n, MESH_PARENTS_MAX);
    op->parents_count = n;
    for (uint32_t i = 0; i < n; i++)
        if ((rc = read_bin_exact(&r, F_PARENTS, op->parents[i], MESH_UUID_BYTES)) != MESH_OK)
            return rc;

    /* The body is the last element, so it must run exactly to the end of the input: the body
     * check rejects anything after its map as trailing bytes. */
    off[F_BODY] = r.pos;
    if (r.pos == len) return mesh_err(MESH_ECORRUPT, "op field 'body' at byte %zu: missing", r.pos);
    op->body = buf + r.pos;
    op->body_len = len - r.pos;
    rc = mesh_body_check(op->body, op->body_len);
    if (rc != MESH_OK)
        return mesh_err_wrap(rc == MESH_ELIMIT ? MESH_ELIMIT : MESH_ECORRUPT,
                             "op field 'body' at byte %zu", off[F_BODY]);

    return check_fields(op, MESH_ECORRUPT, off);
}

int mesh_op_peek(const uint8_t *buf, size_t len, mesh_op *op)
{
    if (len > MESH_OP_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "op is %zu bytes; the limit is %u", len, MESH_OP_BYTES_MAX);
    rd r = {buf, len, 0};
    size_t off[F_COUNT] = {0};
    return decode_head(&r, off, op);
}

uint64_t mesh_stream_id_memo(mesh_sid_memo *m, const uint8_t author[MESH_KEY_BYTES],
                             const char *scope, size_t scope_len)
{
    if (m->valid && m->scope_len == scope_len && memcmp(m->author, author, MESH_KEY_BYTES) == 0 &&
        memcmp(m->scope, scope, scope_len) == 0)
        return m->sid;
    if (scope_len > sizeof m->scope) return mesh_stream_id(author, scope, scope_len);
    m->sid = mesh_stream_id(author, scope, scope_len);
    memcpy(m->author, author, MESH_KEY_BYTES);
    memcpy(m->scope, scope, scope_len);
    m->scope_len = scope_len;
    m->valid = true;
    return m->sid;
}
