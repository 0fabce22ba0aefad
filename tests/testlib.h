/*
 * testlib.h - helpers shared by tests and benchmarks: temporary directories, deterministic
 * identities, and building signed, chained ops without a node.
 */
#ifndef MESH_TESTLIB_H
#define MESH_TESTLIB_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "model/body.h"
#include "model/bundle.h"
#include "model/op.h"
#include "store/store.h"

#define TL_UNUSED __attribute__((unused))

static int tl_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* Creates a fresh directory under /tmp; returns a malloc'd path. */
static TL_UNUSED char *tl_tmpdir(const char *tag)
{
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "/tmp/meshsync-%s-XXXXXX", tag);
    char *d = mkdtemp(tmpl);
    if (d == NULL) abort();
    return strdup(d);
}

static TL_UNUSED void tl_rmtree(char *dir)
{
    if (dir == NULL) return;
    nftw(dir, tl_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static TL_UNUSED void tl_identity(mesh_identity *id, uint8_t n)
{
    uint8_t seed[32];
    memset(seed, n, sizeof seed);
    mesh_identity_from_seed(id, seed);
}

/* A stream writer: produces correctly chained and signed ops for one (author, scope). */
typedef struct tl_stream {
    mesh_identity id;
    char scope[MESH_SCOPE_BYTES_MAX + 1];
    uint64_t seq;
    uint8_t tip[MESH_HASH_BYTES];
    uint64_t hlc;
} tl_stream;

static TL_UNUSED void tl_stream_init(tl_stream *s, uint8_t who, const char *scope)
{
    memset(s, 0, sizeof *s);
    tl_identity(&s->id, who);
    snprintf(s->scope, sizeof s->scope, "%s", scope);
    s->hlc = (uint64_t)1700000000000ull << 16;
}

/* An owned op record. */
typedef struct tl_rec {
    uint8_t *bytes;       /* signature(64) then op */
    size_t op_len;
    uint8_t hash[MESH_HASH_BYTES];
} tl_rec;

static TL_UNUSED mesh_oprec tl_rec_view(const tl_rec *r)
{
    mesh_oprec v = {.op = r->bytes + MESH_SIGNATURE_BYTES, .op_len = r->op_len, .sig = r->bytes};
    return v;
}

static TL_UNUSED void tl_rec_free(tl_rec *r)
{
    free(r->bytes);
    r->bytes = NULL;
}

/*
 * Appends an op to the stream. `op` supplies kind, type, entity, row_version, base, merged,
 * parents and body (canonical); author, scope, seq, prev and hlc are filled in.
 */
static TL_UNUSED tl_rec tl_stream_add(tl_stream *s, mesh_op *op)
{
    memcpy(op->author, s->id.pk, MESH_KEY_BYTES);
    op->scope = s->scope;
    op->scope_len = strlen(s->scope);
    op->seq = ++s->seq;
    memcpy(op->prev, s->tip, MESH_HASH_BYTES);
    if (op->hlc == 0) op->hlc = ++s->hlc;
    mesh_buf b;
    mesh_buf_init(&b, MESH_OP_BYTES_MAX);
    if (mesh_op_encode(op, &b) != MESH_OK) {
        fprintf(stderr, "tl_stream_add: encode failed: %s\n", mesh_errmsg());
        abort();
    }
    tl_rec r;
    r.op_len = b.len;
    r.bytes = malloc(MESH_SIGNATURE_BYTES + b.len);
    memcpy(r.bytes + MESH_SIGNATURE_BYTES, b.data, b.len);
    mesh_op_hash(b.data, b.len, r.hash);
    mesh_sign(&s->id, MESH_DOMAIN_OP, r.hash, MESH_HASH_BYTES, r.bytes);
    memcpy(s->tip, r.hash, MESH_HASH_BYTES);
    mesh_buf_fini(&b);
    return r;
}

/* A canonical body from JSON (aborts on error: test inputs are valid). */
static TL_UNUSED mesh_buf tl_body(const char *json)
{
    mesh_buf b;
    mesh_buf_init(&b, MESH_OP_BYTES_MAX);
    if (mesh_body_from_json(json, strlen(json), &b) != MESH_OK) {
        fprintf(stderr, "tl_body: %s\n", mesh_errmsg());
        abort();
    }
    return b;
}

/* A simple op for `entity` (bytes from a counter) of type household. */
static TL_UNUSED void tl_entity_id(uint8_t out[16], uint64_t n)
{
    memset(out, 0, 16);
    out[0] = 0x01;
    out[6] = 0x70; /* version 7 nibble */
    out[8] = 0x80; /* variant */
    for (int i = 0; i < 7; i++) out[15 - i] = (uint8_t)(n >> (8 * i));
}

/* Ingests records in one write transaction; `rep` gets the counts of the last attempt (a map
 * growth retries the whole transaction). Returns the store's code. */
typedef struct tl_ingest_ctx {
    const mesh_oprec *v;
    size_t n;
    mesh_ingest_mode mode;
    mesh_ingest_report *rep;
} tl_ingest_ctx;

static int tl_ingest_fn(mesh_txn *t, void *ctx)
{
    tl_ingest_ctx *c = ctx;
    memset(c->rep, 0, sizeof *c->rep);
    return mesh_store_ingest(t, c->v, c->n, c->mode, c->rep);
}

static TL_UNUSED int tl_ingest(mesh_store *st, const mesh_oprec *v, size_t n,
                               mesh_ingest_mode mode, mesh_ingest_report *rep)
{
    tl_ingest_ctx c = {.v = v, .n = n, .mode = mode, .rep = rep};
    return mesh_store_write(st, tl_ingest_fn, &c);
}

#endif
