/*
 * frame.c - This file implements the sync frame codec (frame.h): a small msgpack reader that
 * accepts only shortest-form headers, the per-type layouts, and a writer that produces exactly
 * what the reader accepts.
 *
 * The reader is hand-written rather than msgpack_unpack for the same reasons as the op decoder:
 * a frame comes from the network, so no count prefix may size an allocation, and a canonical
 * reader makes decode/encode a byte-for-byte round trip (golden vectors, fuzzing).
 */
#include "sync/frame.h"

#include <stdio.h>

/* Op seqs and stream positions stay below 2^63 (op.c, SEQ_MAX). */
#define SEQ_MAX ((UINT64_C(1) << 63) - 1)
/* Nesting allowed inside the extra elements a newer HELLO, MORE or ERROR may append. */
#define SKIP_DEPTH_MAX 8

typedef struct reader {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *start;
} reader;

static size_t left(const reader *r) { return (size_t)(r->end - r->p); }
static size_t off(const reader *r) { return (size_t)(r->p - r->start); }

static uint64_t be_get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static int bad(const reader *r, const char *what)
{
    return mesh_err(MESH_EPROTO, "malformed frame: %s at byte %zu", what, off(r));
}

/* Reads an unsigned integer in its shortest form. */
static int rd_uint(reader *r, uint64_t *v, const char *what)
{
    if (left(r) < 1) return bad(r, what);
    uint8_t b = *r->p;
    int n;
    uint64_t min;
    if (b <= 0x7f) {
        *v = b;
        r->p++;
        return MESH_OK;
    }
    switch (b) {
    case 0xcc: n = 1; min = 0x80; break;
    case 0xcd: n = 2; min = 0x100; break;
    case 0xce: n = 4; min = 0x10000; break;
    case 0xcf: n = 8; min = UINT64_C(0x100000000); break;
    default: return bad(r, what);
    }
    if (left(r) < (size_t)n + 1) return bad(r, what);
    *v = be_get(r->p + 1, n);
    if (*v < min) return bad(r, what);  /* not the shortest form */
    r->p += 1 + n;
    return MESH_OK;
}

static int rd_u32(reader *r, uint32_t *v, uint32_t max, const char *what)
{
    uint64_t x;
    int rc = rd_uint(r, &x, what);
    if (rc != MESH_OK) return rc;
    if (x > max) return mesh_err(MESH_EPROTO, "malformed frame: %s is %llu, above %u", what,
                                 (unsigned long long)x, max);
    *v = (uint32_t)x;
    return MESH_OK;
}

static int rd_array(reader *r, uint64_t *n, const char *what)
{
    if (left(r) < 1) return bad(r, what);
    uint8_t b = *r->p;
    if (b >= 0x90 && b <= 0x9f) {
        *n = b & 0x0f;
        r->p++;
    } else if (b == 0xdc || b == 0xdd) {
        int k = b == 0xdc ? 2 : 4;
        if (left(r) < (size_t)k + 1) return bad(r, what);
        *n = be_get(r->p + 1, k);
        if (*n < (b == 0xdc ? 16u : 0x10000u)) return bad(r, what);
        r->p += 1 + k;
    } else {
        return bad(r, what);
    }
    /* Every element takes at least one byte: a count beyond the input is a lie. */
    if (*n > left(r)) return bad(r, what);
    return MESH_OK;
}

/* Reads a bin (or, with `str`, a str) header and its bytes. */
static int rd_bytes(reader *r, bool str, const uint8_t **p, size_t *n, const char *what)
{
    if (left(r) < 1) return bad(r, what);
    uint8_t b = *r->p;
    int k;
    uint64_t min;
    if (str && b >= 0xa0 && b <= 0xbf) {
        k = 0;
        min = 0;
        *n = b & 0x1f;
    } else {
        switch (b) {
        case 0xc4: case 0xd9: k = 1; min = str ? 32 : 0; break;
        case 0xc5: case 0xda: k = 2; min = 0x100; break;
        case 0xc6: case 0xdb: k = 4; min = 0x10000; break;
        default: return bad(r, what);
        }
        if ((b >= 0xd9) != str) return bad(r, what);
        if (left(r) < (size_t)k + 1) return bad(r, what);
        *n = (size_t)be_get(r->p + 1, k);
        if (*n < min) return bad(r, what);
    }
    r->p += 1 + k;
    if (*n > left(r)) return bad(r, what);
    *p = r->p;
    r->p += *n;
    return MESH_OK;
}

/* Skips one msgpack value of any kind (elements a newer version appended). */
static int skip(reader *r, int depth)
{
    if (depth > SKIP_DEPTH_MAX) return bad(r, "extra element nested too deeply");
    if (left(r) < 1) return bad(r, "extra element");
    uint8_t b = *r->p++;
    uint64_t n = 0, items = 0;
    size_t hdr = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return MESH_OK;
    if (b >= 0x80 && b <= 0x8f) items = 2u * (b & 0x0f);
    else if (b >= 0x90 && b <= 0x9f) items = b & 0x0f;
    else if (b >= 0xa0 && b <= 0xbf) n = b & 0x1f;
    else {
        switch (b) {
        case 0xc4: case 0xd9: hdr = 1; break;
        case 0xc5: case 0xda: hdr = 2; break;
        case 0xc6: case 0xdb: hdr = 4; break;
        case 0xcc: case 0xd0: n = 1; break;
        case 0xcd: case 0xd1: n = 2; break;
        case 0xca: case 0xce: case 0xd2: n = 4; break;
        case 0xcb: case 0xcf: case 0xd3: n = 8; break;
        case 0xd4: n = 2; break;
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xc7: hdr = 1; n = 1; break;
        case 0xc8: hdr = 2; n = 1; break;
        case 0xc9: hdr = 4; n = 1; break;
        case 0xdc: case 0xde: hdr = 2; break;
        case 0xdd: case 0xdf: hdr = 4; break;
        default: return bad(r, "extra element");
        }
        if (hdr) {
            if (left(r) < hdr) return bad(r, "extra element");
            uint64_t len = be_get(r->p, (int)hdr);
            r->p += hdr;
            if (b >= 0xdc) items = b >= 0xde ? 2 * len : len;
            else n += len;
        }
    }
    if (n > left(r)) return bad(r, "extra element");
    r->p += n;
    if (items > left(r)) return bad(r, "extra element");
    for (uint64_t i = 0; i < items; i++) {
        int rc = skip(r, depth + 1);
        if (rc != MESH_OK) return rc;
    }
    return MESH_OK;
}

static int rd_digest(reader *r, uint8_t out[MESH_VECTOR_DIGEST_BYTES])
{
    const uint8_t *p;
    size_t n;
    int rc = rd_bytes(r, false, &p, &n, "vector digest");
    if (rc != MESH_OK) return rc;
    if (n != MESH_VECTOR_DIGEST_BYTES)
        return mesh_err(MESH_EPROTO, "malformed frame: vector digest of %zu bytes, not %u", n,
                        MESH_VECTOR_DIGEST_BYTES);
    memcpy(out, p, n);
    return MESH_OK;
}

/* Reads the array of (sid, seq) pairs, strictly increasing by sid. */
static int rd_entries(reader *r, mesh_frame *f)
{
    uint64_t n;
    int rc = rd_array(r, &n, "vector entries");
    if (rc != MESH_OK) return rc;
    if (n % 2 != 0) return bad(r, "vector entries array of odd length");
    if (n / 2 > MESH_VECTOR_ENTRIES_MAX)
        return mesh_err(MESH_EPROTO, "frame holds %llu vector entries; the limit is %u",
                        (unsigned long long)(n / 2), MESH_VECTOR_ENTRIES_MAX);
    f->items = r->p;
    f->nitems = (size_t)(n / 2);
    uint64_t prev = 0;
    for (uint64_t i = 0; i < n / 2; i++) {
        uint64_t sid, seq;
        if ((rc = rd_uint(r, &sid, "stream id")) != MESH_OK) return rc;
        if ((rc = rd_uint(r, &seq, "stream seq")) != MESH_OK) return rc;
        if (i > 0 && sid <= prev) return bad(r, "vector entries not in increasing stream order");
        if (seq > SEQ_MAX) return bad(r, "stream seq above 2^63-1");
        prev = sid;
    }
    f->items_len = (size_t)(r->p - f->items);
    return MESH_OK;
}

static int rd_records(reader *r, mesh_frame *f)
{
    uint64_t n;
    int rc = rd_array(r, &n, "op records");
    if (rc != MESH_OK) return rc;
    if (n % 2 != 0) return bad(r, "op records array of odd length");
    if (n / 2 > MESH_FRAME_OPS_MAX)
        return mesh_err(MESH_EPROTO, "OPS frame holds %llu ops; the limit is %u",
                        (unsigned long long)(n / 2), MESH_FRAME_OPS_MAX);
    f->items = r->p;
    f->nitems = (size_t)(n / 2);
    for (uint64_t i = 0; i < n / 2; i++) {
        const uint8_t *p;
        size_t len;
        if ((rc = rd_bytes(r, false, &p, &len, "op bytes")) != MESH_OK) return rc;
        if (len == 0 || len > MESH_OP_BYTES_MAX)
            return mesh_err(MESH_EPROTO, "OPS frame holds an op of %zu bytes; the limit is 1..%u",
                            len, MESH_OP_BYTES_MAX);
        if ((rc = rd_bytes(r, false, &p, &len, "op signature")) != MESH_OK) return rc;
        if (len != MESH_SIGNATURE_BYTES)
            return mesh_err(MESH_EPROTO, "OPS frame holds a signature of %zu bytes, not %u", len,
                            MESH_SIGNATURE_BYTES);
    }
    f->items_len = (size_t)(r->p - f->items);
    return MESH_OK;
}

/* Elements of each type in protocol version 1, indexed by type. */
static const uint8_t ELEMENTS_V1[MESH_FRAME_TYPE_MAX + 1] = {0, 8, 4, 5, 5, 3, 6, 4};

const char *mesh_frame_type_name(uint32_t type)
{
    static const char *const names[MESH_FRAME_TYPE_MAX + 1] = {
        "type 0", "HELLO", "OPS", "DONE", "ERROR", "WANT", "VECTOR", "MORE"};
    return type <= MESH_FRAME_TYPE_MAX ? names[type] : "unknown";
}

int mesh_frame_decode(const uint8_t *buf, size_t len, mesh_frame *f)
{
    memset(f, 0, sizeof *f);
    if (len > MESH_FRAME_BYTES_MAX)
        return mesh_err(MESH_EPROTO, "frame of %zu bytes; the limit is %u", len,
                        MESH_FRAME_BYTES_MAX);
    if (buf == NULL || len == 0) return mesh_err(MESH_EPROTO, "malformed frame: empty");
    reader r = {.p = buf, .end = buf + len, .start = buf};
    uint64_t n;
    int rc = rd_array(&r, &n, "frame array");
    if (rc != MESH_OK) return rc;
    if (n < 3) return bad(&r, "frame array shorter than [type, version, frame number]");
    if ((rc = rd_u32(&r, &f->type, UINT32_MAX, "frame type")) != MESH_OK) return rc;
    if (f->type < MESH_FRAME_TYPE_MIN || f->type > MESH_FRAME_TYPE_MAX)
        return mesh_err(MESH_EPROTO, "malformed frame: unknown frame type %u", f->type);
    if ((rc = rd_u32(&r, &f->version, MESH_PROTO_VERSION_LIMIT, "protocol version")) != MESH_OK)
        return rc;
    if (f->version == 0) return bad(&r, "protocol version 0");
    if ((rc = rd_uint(&r, &f->fno, "frame number")) != MESH_OK) return rc;
    if (f->fno == 0 || f->fno > SEQ_MAX) return bad(&r, "frame number out of range");

    /* A newer peer may append elements to the frames whose prefix is frozen; nothing else of a
     * newer version can be read. */
    bool frozen = f->type == MESH_FRAME_HELLO || f->type == MESH_FRAME_MORE ||
                  f->type == MESH_FRAME_ERROR;
    uint64_t want = ELEMENTS_V1[f->type];
    if (f->version > MESH_PROTO_VERSION_MAX) {
        if (!frozen)
            return mesh_err(MESH_EVERSION,
                            "%s frame of protocol version %u; this node speaks %u..%u",
                            mesh_frame_type_name(f->type), f->version, MESH_PROTO_VERSION_MIN,
                            MESH_PROTO_VERSION_MAX);
        if (n < want) return bad(&r, "frame has too few elements for its type");
    } else if (n != want) {
        return mesh_err(MESH_EPROTO, "malformed frame: %s has %llu elements, not %llu",
                        mesh_frame_type_name(f->type), (unsigned long long)n,
                        (unsigned long long)want);
    }

    switch (f->type) {
    case MESH_FRAME_HELLO:
        if ((rc = rd_u32(&r, &f->version_min, MESH_PROTO_VERSION_LIMIT, "lowest version")))
            return rc;
        if (f->version_min == 0 || f->version_min > f->version)
            return bad(&r, "HELLO's lowest version is 0 or above its highest");
        if ((rc = rd_u32(&r, &f->flags, UINT32_MAX, "HELLO flags"))) return rc;
        /* Flags unknown to version 1 are an error in version 1, and ignored from newer peers. */
        if (f->version <= MESH_PROTO_VERSION_MAX && (f->flags & ~MESH_HELLO_FLAGS_KNOWN))
            return bad(&r, "unknown HELLO flags");
        f->flags &= MESH_HELLO_FLAGS_KNOWN;
        if ((rc = rd_digest(&r, f->digest))) return rc;
        if ((rc = rd_uint(&r, &f->total, "vector entry total"))) return rc;
        if ((rc = rd_entries(&r, f))) return rc;
        break;
    case MESH_FRAME_VECTOR:
        if ((rc = rd_digest(&r, f->digest))) return rc;
        if ((rc = rd_uint(&r, &f->total, "vector entry total"))) return rc;
        if ((rc = rd_entries(&r, f))) return rc;
        break;
    case MESH_FRAME_MORE:
        if ((rc = rd_entries(&r, f))) return rc;
        break;
    case MESH_FRAME_OPS:
        if ((rc = rd_records(&r, f))) return rc;
        break;
    case MESH_FRAME_DONE:
        if ((rc = rd_uint(&r, &f->ops, "DONE op count"))) return rc;
        if ((rc = rd_uint(&r, &f->frames, "DONE frame count"))) return rc;
        break;
    case MESH_FRAME_ERROR: {
        const uint8_t *p;
        if ((rc = rd_u32(&r, &f->code, 0xffff, "error code"))) return rc;
        if ((rc = rd_bytes(&r, true, &p, &f->msg_len, "error message"))) return rc;
        if (f->msg_len > MESH_ERROR_MSG_BYTES_MAX)
            return mesh_err(MESH_EPROTO, "ERROR frame message of %zu bytes; the limit is %u",
                            f->msg_len, MESH_ERROR_MSG_BYTES_MAX);
        f->msg = (const char *)p;
        break;
    }
    case MESH_FRAME_WANT: break;
    default: MESH_ASSERT(0);
    }
    if (f->type == MESH_FRAME_HELLO || f->type == MESH_FRAME_VECTOR) {
        if (f->total > MESH_VECTOR_ENTRIES_MAX)
            return mesh_err(MESH_EPROTO, "vector of %llu entries; the limit is %u",
                            (unsigned long long)f->total, MESH_VECTOR_ENTRIES_MAX);
        if (f->nitems > f->total)
            return bad(&r, "more vector entries than the announced total");
    }
    for (uint64_t i = want; i < n; i++) {
        if ((rc = skip(&r, 0)) != MESH_OK) return rc;
        f->extra++;
    }
    if (r.p != r.end) return bad(&r, "trailing bytes after the frame");
    return MESH_OK;
}

/* ---- Writing ------------------------------------------------------------------------------- */

static int put_hdr(mesh_buf *b, uint8_t tag, uint64_t v, int n)
{
    uint8_t tmp[9];
    tmp[0] = tag;
    for (int i = n; i >= 1; i--) {
        tmp[i] = (uint8_t)v;
        v >>= 8;
    }
    return mesh_buf_append(b, tmp, (size_t)n + 1);
}

size_t mesh_mp_uint_size(uint64_t v)
{
    return v <= 0x7f ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

size_t mesh_mp_bin_size(size_t n)
{
    return n + (n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);
}

int mesh_mp_put_uint(mesh_buf *b, uint64_t v)
{
    if (v <= 0x7f) {
        uint8_t c = (uint8_t)v;
        return mesh_buf_append(b, &c, 1);
    }
    if (v <= 0xff) return put_hdr(b, 0xcc, v, 1);
    if (v <= 0xffff) return put_hdr(b, 0xcd, v, 2);
    if (v <= 0xffffffffu) return put_hdr(b, 0xce, v, 4);
    return put_hdr(b, 0xcf, v, 8);
}

static int put_array(mesh_buf *b, uint64_t n)
{
    if (n <= 15) {
        uint8_t c = (uint8_t)(0x90 | n);
        return mesh_buf_append(b, &c, 1);
    }
    if (n <= 0xffff) return put_hdr(b, 0xdc, n, 2);
    return put_hdr(b, 0xdd, n, 4);
}

static int put_bytes(mesh_buf *b, bool str, const void *p, size_t n)
{
    int rc;
    if (str && n <= 31) {
        uint8_t c = (uint8_t)(0xa0 | n);
        rc = mesh_buf_append(b, &c, 1);
    } else if (n <= 0xff) {
        rc = put_hdr(b, str ? 0xd9 : 0xc4, n, 1);
    } else if (n <= 0xffff) {
        rc = put_hdr(b, str ? 0xda : 0xc5, n, 2);
    } else {
        rc = put_hdr(b, str ? 0xdb : 0xc6, n, 4);
    }
    if (rc != MESH_OK) return rc;
    return mesh_buf_append(b, p, n);
}

int mesh_mp_put_bin(mesh_buf *b, const void *p, size_t n) { return put_bytes(b, false, p, n); }

int mesh_frame_encode(const mesh_frame *f, mesh_buf *out)
{
    MESH_ASSERT(f->type >= MESH_FRAME_TYPE_MIN && f->type <= MESH_FRAME_TYPE_MAX);
    int rc = put_array(out, ELEMENTS_V1[f->type]);
    if (rc == MESH_OK) rc = mesh_mp_put_uint(out, f->type);
    if (rc == MESH_OK) rc = mesh_mp_put_uint(out, f->version);
    if (rc == MESH_OK) rc = mesh_mp_put_uint(out, f->fno);
    if (rc != MESH_OK) return rc;
    switch (f->type) {
    case MESH_FRAME_HELLO:
        if ((rc = mesh_mp_put_uint(out, f->version_min))) return rc;
        if ((rc = mesh_mp_put_uint(out, f->flags))) return rc;
        /* fall through */
    case MESH_FRAME_VECTOR:
        if ((rc = put_bytes(out, false, f->digest, MESH_VECTOR_DIGEST_BYTES))) return rc;
        if ((rc = mesh_mp_put_uint(out, f->total))) return rc;
        /* fall through */
    case MESH_FRAME_MORE:
    case MESH_FRAME_OPS:
        if ((rc = put_array(out, 2 * (uint64_t)f->nitems))) return rc;
        return mesh_buf_append(out, f->items, f->items_len);
    case MESH_FRAME_DONE:
        if ((rc = mesh_mp_put_uint(out, f->ops))) return rc;
        return mesh_mp_put_uint(out, f->frames);
    case MESH_FRAME_ERROR:
        if ((rc = mesh_mp_put_uint(out, f->code))) return rc;
        return put_bytes(out, true, f->msg, f->msg_len);
    case MESH_FRAME_WANT: return MESH_OK;
    default: MESH_ASSERT(0);
    }
    return MESH_OK;
}

/* ---- Iterating validated items -------------------------------------------------------------- */

void mesh_frame_iter_init(mesh_frame_iter *it, const mesh_frame *f)
{
    it->p = f->items;
    it->end = f->items ? f->items + f->items_len : NULL;
}

bool mesh_frame_next_entry(mesh_frame_iter *it, uint64_t *sid, uint64_t *seq)
{
    if (it->p >= it->end) return false;
    reader r = {.p = it->p, .end = it->end, .start = it->p};
    /* The decoder (or our own writer) validated these bytes. */
    MESH_ASSERT(rd_uint(&r, sid, "stream id") == MESH_OK);
    MESH_ASSERT(rd_uint(&r, seq, "stream seq") == MESH_OK);
    it->p = r.p;
    return true;
}

bool mesh_frame_next_record(mesh_frame_iter *it, mesh_oprec *rec)
{
    if (it->p >= it->end) return false;
    reader r = {.p = it->p, .end = it->end, .start = it->p};
    const uint8_t *sig;
    size_t n;
    MESH_ASSERT(rd_bytes(&r, false, &rec->op, &rec->op_len, "op bytes") == MESH_OK);
    MESH_ASSERT(rd_bytes(&r, false, &sig, &n, "op signature") == MESH_OK);
    MESH_ASSERT(n == MESH_SIGNATURE_BYTES);
    rec->sig = sig;
    it->p = r.p;
    return true;
}
