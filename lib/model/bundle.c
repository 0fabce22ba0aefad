/*
 * bundle.c - This file implements the bundle (bundle.h): the signed export file that carries
 * ops between nodes on removable media.
 *
 * The writer streams: it keeps at most about one MiB plus one record in memory, hashes bytes
 * as it hands them to the caller's flush callback, and signs the hash at the end. The reader
 * works on the whole file in memory and validates its structure and the exporter's signature
 * before it returns a single record, so an importer never acts on a truncated or edited file.
 * As in op.c, reading is a bounded hand-written cursor in which every msgpack header must be in
 * its shortest form, so a bundle has one encoding and no count prefix sizes an allocation.
 */
#include "model/bundle.h"

#include <stdbool.h>
#include <stdio.h>

#include <msgpack.h>

#define MAGIC_BYTES 8
/* The writer hands bytes to `flush` once this much is buffered. */
#define FLUSH_BYTES (1024u * 1024u)
/* A record is [bin op, bin64 sig]: at most 1 + 5 + op + 2 + 64 bytes. */
#define RECORD_BYTES_MAX (1u + 5u + MESH_OP_BYTES_MAX + 2u + MESH_SIGNATURE_BYTES)
/* The smallest record: fixarray, bin8 header and one op byte, bin8 header and signature. */
#define RECORD_BYTES_MIN (1u + 2u + 1u + 2u + MESH_SIGNATURE_BYTES)
/* The trailer: a bin8 header (0xc4 0x40) and the signature. */
#define TRAILER_BYTES (2u + MESH_SIGNATURE_BYTES)

_Static_assert(sizeof MESH_BUNDLE_MAGIC - 1 == MAGIC_BYTES, "magic is 8 bytes");

/* ---- Writer -------------------------------------------------------------------------------- */

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

/* Hands everything buffered to the callback. Every byte before the trailer goes through here
 * (with `hash` set), so the hash covers exactly what the reader will hash. */
static int flush_buf(mesh_bundle_writer *w, bool hash)
{
    if (w->buf.len == 0) return MESH_OK;
    if (hash) mesh_hash_update(&w->hash, w->buf.data, w->buf.len);
    int rc = w->flush(w->buf.data, w->buf.len, w->ctx);
    if (rc > 0) rc = MESH_EIO;  /* a callback that broke its contract still fails the write */
    if (rc != MESH_OK) return mesh_err_wrap(rc, "writing bundle bytes");
    mesh_buf_reset(&w->buf);
    return MESH_OK;
}

int mesh_bundle_writer_begin(mesh_bundle_writer *w, const mesh_bundle_header *h,
                             int (*flush)(const uint8_t *p, size_t n, void *ctx), void *ctx)
{
    MESH_ASSERT(w != NULL && h != NULL && flush != NULL);
    memset(w, 0, sizeof *w);
    if (h->count > MESH_BUNDLE_OPS_MAX)
        return mesh_err(MESH_ELIMIT, "a bundle holds at most %u ops, not %llu",
                        MESH_BUNDLE_OPS_MAX, (unsigned long long)h->count);
    mesh_buf_init(&w->buf, FLUSH_BYTES + RECORD_BYTES_MAX);
    mesh_hash_init(&w->hash);
    w->count_declared = h->count;
    w->flush = flush;
    w->ctx = ctx;

    uint8_t fmt = MESH_BUNDLE_FORMAT;
    sink s = {&w->buf, MESH_OK};
    sink_write(&s, MESH_BUNDLE_MAGIC, MAGIC_BYTES);
    sink_write(&s, (const char *)&fmt, 1);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, sink_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_bin_with_body(&pk, h->exporter, MESH_PK_BYTES);
    msgpack_pack_uint64(&pk, h->created_ms);
    msgpack_pack_uint64(&pk, h->count);
    if (s.rc != MESH_OK) {
        mesh_buf_fini(&w->buf);
        return mesh_err_wrap(s.rc, "starting a bundle");
    }
    return MESH_OK;
}

int mesh_bundle_writer_add(mesh_bundle_writer *w, const mesh_oprec *rec)
{
    if (w->count_written >= w->count_declared)
        return mesh_err(MESH_EINVAL, "bundle declared %llu ops; cannot add another",
                        (unsigned long long)w->count_declared);
    if (rec->op_len == 0 || rec->op == NULL || rec->sig == NULL)
        return mesh_err(MESH_EINVAL, "bundle record %llu has no op bytes or no signature",
                        (unsigned long long)w->count_written);
    if (rec->op_len > MESH_OP_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "bundle record %llu: op is %zu bytes; the limit is %u",
                        (unsigned long long)w->count_written, rec->op_len, MESH_OP_BYTES_MAX);
    sink s = {&w->buf, MESH_OK};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, sink_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_bin_with_body(&pk, rec->op, rec->op_len);
    msgpack_pack_bin_with_body(&pk, rec->sig, MESH_SIGNATURE_BYTES);
    /* The buffer's cap leaves room for one whole record past FLUSH_BYTES, so this cannot fail
     * for lack of room; ENOMEM still can. */
    if (s.rc != MESH_OK) return mesh_err_wrap(s.rc, "adding a record to a bundle");
    w->count_written++;
    return w->buf.len >= FLUSH_BYTES ? flush_buf(w, true) : MESH_OK;
}

int mesh_bundle_writer_end(mesh_bundle_writer *w, const mesh_identity *exporter)
{
    int rc = MESH_OK;
    if (w->count_written != w->count_declared)
        rc = mesh_err(MESH_EINVAL, "bundle declared %llu ops but %llu were added",
                      (unsigned long long)w->count_declared,
                      (unsigned long long)w->count_written);
    if (rc == MESH_OK) rc = flush_buf(w, true);
    if (rc == MESH_OK) {
        uint8_t digest[MESH_DIGEST_BYTES];
        uint8_t trailer[TRAILER_BYTES] = {0xc4, MESH_SIGNATURE_BYTES};
        mesh_hash_final(&w->hash, digest);
        mesh_sign(exporter, MESH_DOMAIN_BUNDLE, digest, sizeof digest, trailer + 2);
        rc = mesh_buf_append(&w->buf, trailer, sizeof trailer);
        if (rc == MESH_OK) rc = flush_buf(w, false);
    }
    mesh_buf_fini(&w->buf);
    return rc;
}

void mesh_bundle_writer_abort(mesh_bundle_writer *w) { mesh_buf_fini(&w->buf); }

/* ---- Reader -------------------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
} rd;

static int need(const rd *r, size_t n, const char *what)
{
    if (n > r->len - r->pos)
        return mesh_err(MESH_ECORRUPT, "bundle truncated at byte %zu in %s (needs %zu bytes, %zu left)",
                        r->pos, what, n, r->len - r->pos);
    return MESH_OK;
}

static int not_shortest(const rd *r, const char *what)
{
    return mesh_err(MESH_ECORRUPT, "bundle byte %zu: %s header is not in its shortest form",
                    r->pos, what);
}

static int wrong(const rd *r, const char *what, const char *expected)
{
    return mesh_err(MESH_ECORRUPT, "bundle byte %zu: %s should be %s, found byte 0x%02x", r->pos,
                    what, expected, r->p[r->pos]);
}

static int read_uint(rd *r, const char *what, uint64_t *v)
{
    int rc = need(r, 1, what);
    if (rc != MESH_OK) return rc;
    const uint8_t *p = r->p + r->pos;
    if (p[0] <= 0x7f) { *v = p[0]; r->pos++; return MESH_OK; }
    if (p[0] < 0xcc || p[0] > 0xcf) return wrong(r, what, "an unsigned integer");
    static const uint64_t mins[4] = {0x80, 0x100, 0x10000, UINT64_C(0x100000000)};
    size_t n = (size_t)1 << (p[0] - 0xcc);
    if ((rc = need(r, 1 + n, what)) != MESH_OK) return rc;
    uint64_t x = 0;
    for (size_t i = 1; i <= n; i++) x = x << 8 | p[i];
    if (x < mins[p[0] - 0xcc]) return not_shortest(r, what);
    *v = x;
    r->pos += 1 + n;
    return MESH_OK;
}

static int read_array(rd *r, const char *what, uint32_t expect)
{
    int rc = need(r, 1, what);
    if (rc != MESH_OK) return rc;
    /* Only small fixed arrays occur in a bundle. */
    if (r->p[r->pos] != (0x90 | expect)) {
        char e[32];
        snprintf(e, sizeof e, "an array of %u", expect);
        return wrong(r, what, e);
    }
    r->pos++;
    return MESH_OK;
}

static int read_bin(rd *r, const char *what, const uint8_t **data, size_t *len)
{
    int rc = need(r, 1, what);
    if (rc != MESH_OK) return rc;
    const uint8_t *p = r->p + r->pos;
    size_t h, n;
    switch (p[0]) {
    case 0xc4:
        if ((rc = need(r, 2, what)) != MESH_OK) return rc;
        h = 2;
        n = p[1];
        break;
    case 0xc5:
        if ((rc = need(r, 3, what)) != MESH_OK) return rc;
        h = 3;
        n = (size_t)p[1] << 8 | p[2];
        if (n < 256) return not_shortest(r, what);
        break;
    case 0xc6:
        if ((rc = need(r, 5, what)) != MESH_OK) return rc;
        h = 5;
        n = mesh_be32_get(p + 1);
        if (n < 65536) return not_shortest(r, what);
        break;
    default:
        return wrong(r, what, "binary data");
    }
    if ((rc = need(r, h + n, what)) != MESH_OK) return rc;
    *data = p + h;
    *len = n;
    r->pos += h + n;
    return MESH_OK;
}

static int read_bin_exact(rd *r, const char *what, size_t n, const uint8_t **data)
{
    size_t at = r->pos, len;
    int rc = read_bin(r, what, data, &len);
    if (rc != MESH_OK) return rc;
    if (len != n)
        return mesh_err(MESH_ECORRUPT, "bundle byte %zu: %s is %zu bytes, expected %zu", at, what,
                        len, n);
    return MESH_OK;
}

static int read_record(rd *r, uint64_t index, mesh_oprec *rec)
{
    size_t at = r->pos;
    int rc = read_array(r, "a record", 2);
    if (rc != MESH_OK) return rc;
    if ((rc = read_bin(r, "a record's op", &rec->op, &rec->op_len)) != MESH_OK) return rc;
    if (rec->op_len > MESH_OP_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "bundle record %llu at byte %zu: op is %zu bytes; the limit is %u",
                        (unsigned long long)index, at, rec->op_len, MESH_OP_BYTES_MAX);
    if (rec->op_len == 0)
        return mesh_err(MESH_ECORRUPT, "bundle record %llu at byte %zu: empty op",
                        (unsigned long long)index, at);
    return read_bin_exact(r, "a record's signature", MESH_SIGNATURE_BYTES, &rec->sig);
}

int mesh_bundle_open(mesh_bundle_reader *r, const uint8_t *buf, size_t len)
{
    memset(r, 0, sizeof *r);
    rd c = {buf, len, 0};
    int rc;
    if (len < MAGIC_BYTES + 1 || memcmp(buf, MESH_BUNDLE_MAGIC, MAGIC_BYTES) != 0)
        return mesh_err(MESH_ECORRUPT, "not a meshsync bundle (the file does not start with %s)",
                        MESH_BUNDLE_MAGIC);
    if (buf[MAGIC_BYTES] != MESH_BUNDLE_FORMAT)
        return mesh_err(MESH_EVERSION,
                        "bundle format %u is not supported (this build reads format %d); upgrade "
                        "meshsync",
                        buf[MAGIC_BYTES], MESH_BUNDLE_FORMAT);
    c.pos = MAGIC_BYTES + 1;

    const uint8_t *exporter;
    if ((rc = read_array(&c, "the header", 3)) != MESH_OK) return rc;
    if ((rc = read_bin_exact(&c, "the exporter key", MESH_PK_BYTES, &exporter)) != MESH_OK)
        return rc;
    memcpy(r->header.exporter, exporter, MESH_PK_BYTES);
    if ((rc = read_uint(&c, "the creation time", &r->header.created_ms)) != MESH_OK) return rc;
    size_t count_at = c.pos;
    if ((rc = read_uint(&c, "the op count", &r->header.count)) != MESH_OK) return rc;
    if (r->header.count > MESH_BUNDLE_OPS_MAX)
        return mesh_err(MESH_ELIMIT, "bundle byte %zu: %llu ops; a bundle holds at most %u",
                        count_at, (unsigned long long)r->header.count, MESH_BUNDLE_OPS_MAX);
    /* A count the file is too short to hold is truncation; say so before walking it. */
    if (r->header.count > (len - c.pos) / RECORD_BYTES_MIN)
        return mesh_err(MESH_ECORRUPT,
                        "bundle declares %llu ops but its %zu remaining bytes cannot hold them "
                        "(truncated?)",
                        (unsigned long long)r->header.count, len - c.pos);
    size_t first = c.pos;

    for (uint64_t i = 0; i < r->header.count; i++) {
        mesh_oprec rec;
        if ((rc = read_record(&c, i, &rec)) != MESH_OK) return rc;
    }

    size_t end = c.pos;
    const uint8_t *sig;
    if ((rc = read_bin_exact(&c, "the trailer signature", MESH_SIGNATURE_BYTES, &sig)) != MESH_OK)
        return rc;
    if (c.pos != len)
        return mesh_err(MESH_ECORRUPT, "bundle has %zu bytes of garbage after its trailer at byte %zu",
                        len - c.pos, c.pos);

    uint8_t digest[MESH_DIGEST_BYTES];
    mesh_hash(buf, end, digest);
    if (mesh_verify(r->header.exporter, MESH_DOMAIN_BUNDLE, digest, sizeof digest, sig) != MESH_OK) {
        char pk[2 * MESH_PK_BYTES + 1];
        mesh_hex_encode(r->header.exporter, MESH_PK_BYTES, pk);
        return mesh_err(MESH_ESIG,
                        "bundle signature does not verify for exporter %s: the file was changed "
                        "or damaged after export",
                        pk);
    }

    r->buf = buf;
    r->len = len;
    r->pos = first;
    r->end = end;
    r->left = r->header.count;
    return MESH_OK;
}

int mesh_bundle_next(mesh_bundle_reader *r, mesh_oprec *rec)
{
    if (r->left == 0) return MESH_ENOTFOUND;
    rd c = {r->buf, r->end, r->pos};
    /* mesh_bundle_open walked these records already; a failure here means the buffer changed
     * under the reader, which is reported rather than trusted. */
    int rc = read_record(&c, r->header.count - r->left, rec);
    if (rc != MESH_OK) return rc;
    r->pos = c.pos;
    r->left--;
    return MESH_OK;
}
