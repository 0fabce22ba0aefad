/*
 * sync_fixture.h - helpers for the sync engine's tests and fuzzers: temporary stores, authors
 * that write signed, chained ops, and a pump that carries frames between two sessions in memory.
 * Header-only (static functions) so a fuzz target can use it without the test include path.
 */
#ifndef MESH_TESTS_SYNC_FIXTURE_H
#define MESH_TESTS_SYNC_FIXTURE_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "model/op.h"
#include "store/store.h"
#include "sync/session.h"

/* An author writing one (author, scope) stream. */
typedef struct fx_author {
    mesh_identity id;
    char scope[MESH_SCOPE_BYTES_MAX + 1];
    uint64_t seq;
    uint8_t tip[MESH_HASH_BYTES];
    uint32_t serial;    /* makes entity ids unique per author */
} fx_author;

/* One signed op record with its own bytes. */
typedef struct fx_rec {
    uint8_t *op;
    size_t op_len;
    uint8_t sig[MESH_SIGNATURE_BYTES];
} fx_rec;

static MESH_UNUSED void fx_author_init(fx_author *a, uint32_t seed, const char *scope)
{
    uint8_t s[32] = {0};
    memcpy(s, &seed, sizeof seed);
    s[31] = 0x5a;
    memset(a, 0, sizeof *a);
    mesh_identity_from_seed(&a->id, s);
    snprintf(a->scope, sizeof a->scope, "%s", scope);
}

/* Builds, encodes and signs the author's next op (a create with a small body). `body_bytes`
 * pads the body to roughly that size. Returns the record (free with fx_rec_free). */
static MESH_UNUSED fx_rec fx_next(fx_author *a, size_t body_bytes)
{
    static const uint8_t empty_map = 0x80;
    uint8_t *body = NULL;
    size_t body_len = 1;
    if (body_bytes > 8) {
        /* {"p": "xxxx..."} as canonical msgpack: fixmap 1, fixstr "p", then the padding as a
         * string in its shortest header. */
        size_t n = body_bytes - 6;
        body = malloc(6 + n);
        size_t h = 0;
        body[h++] = 0x81;
        body[h++] = 0xa1;
        body[h++] = 'p';
        if (n <= 31) {
            body[h++] = (uint8_t)(0xa0 | n);
        } else if (n <= 0xff) {
            body[h++] = 0xd9;
            body[h++] = (uint8_t)n;
        } else {
            body[h++] = 0xda;
            body[h++] = (uint8_t)(n >> 8);
            body[h++] = (uint8_t)n;
        }
        memset(body + h, 'x', n);
        body_len = h + n;
    }
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = 1;
    op.type = "household";
    op.type_len = 9;
    a->serial++;
    memcpy(op.entity, a->id.pk, 6);
    mesh_be32_put(op.entity + 12, a->serial);
    op.entity[6] = 0x70 | (op.entity[6] & 0x0f);  /* a plausible UUIDv7 */
    op.entity[8] = 0x80 | (op.entity[8] & 0x3f);
    op.row_version = 1;
    memcpy(op.author, a->id.pk, 32);
    op.scope = a->scope;
    op.scope_len = strlen(a->scope);
    op.seq = a->seq + 1;
    memcpy(op.prev, a->tip, 32);
    op.hlc = (UINT64_C(1700000000000) << 16) + a->seq;
    op.body = body ? body : &empty_map;
    op.body_len = body_len;
    mesh_buf enc;
    mesh_buf_init(&enc, MESH_OP_BYTES_MAX);
    int rc = mesh_op_encode(&op, &enc);
    if (rc != MESH_OK) {
        fprintf(stderr, "fx_next: %s\n", mesh_errmsg());
        abort();
    }
    free(body);
    fx_rec r = {.op = enc.data, .op_len = enc.len};
    uint8_t h[MESH_HASH_BYTES];
    mesh_op_hash(enc.data, enc.len, h);
    mesh_sign(&a->id, MESH_DOMAIN_OP, h, sizeof h, r.sig);
    memcpy(a->tip, h, 32);
    a->seq++;
    return r;
}

static MESH_UNUSED void fx_rec_free(fx_rec *r)
{
    free(r->op);
    r->op = NULL;
}

typedef struct fx_ingest_ctx {
    const mesh_oprec *recs;
    size_t n;
    mesh_ingest_report rep;
} fx_ingest_ctx;

static int fx_ingest_fn(mesh_txn *t, void *ctx)
{
    fx_ingest_ctx *c = ctx;
    memset(&c->rep, 0, sizeof c->rep);
    return mesh_store_ingest(t, c->recs, c->n, MESH_INGEST_ATOMIC, &c->rep);
}

/* Stores records directly (as local writes would). */
static MESH_UNUSED int fx_store_recs(mesh_store *st, const fx_rec *r, size_t n)
{
    mesh_oprec *recs = malloc((n ? n : 1) * sizeof *recs);
    for (size_t i = 0; i < n; i++)
        recs[i] = (mesh_oprec){.op = r[i].op, .op_len = r[i].op_len, .sig = r[i].sig};
    fx_ingest_ctx c = {.recs = recs, .n = n};
    int rc = mesh_store_write(st, fx_ingest_fn, &c);
    free(recs);
    return rc;
}

/* Writes `n` new ops of author `a` into each of the `nst` stores, in batches. Returns the op
 * record bytes (op + signature) written per store. */
static MESH_UNUSED uint64_t fx_write(mesh_store **st, size_t nst, fx_author *a, size_t n,
                                     size_t body_bytes)
{
    enum { BATCH = 5000 };
    fx_rec *r = malloc(BATCH * sizeof *r);
    uint64_t bytes = 0;
    while (n > 0) {
        size_t k = n < BATCH ? n : BATCH;
        for (size_t i = 0; i < k; i++) {
            r[i] = fx_next(a, body_bytes);
            bytes += r[i].op_len + MESH_SIGNATURE_BYTES;
        }
        for (size_t j = 0; j < nst; j++) {
            if (fx_store_recs(st[j], r, k) != MESH_OK) {
                fprintf(stderr, "fx_write: %s\n", mesh_errmsg());
                abort();
            }
        }
        for (size_t i = 0; i < k; i++) fx_rec_free(&r[i]);
        n -= k;
    }
    free(r);
    return bytes;
}

/* A store in a fresh temporary directory. */
static MESH_UNUSED mesh_store *fx_store_new(char dir[64])
{
    snprintf(dir, 64, "/tmp/meshsync-test-XXXXXX");
    if (mkdtemp(dir) == NULL) abort();
    char sub[96];
    snprintf(sub, sizeof sub, "%s/store", dir);
    mesh_store_opts o = {.create = true, .no_sync = true};
    mesh_store *st = NULL;
    if (mesh_store_open(sub, &o, &st) != MESH_OK) {
        fprintf(stderr, "fx_store_new: %s\n", mesh_errmsg());
        abort();
    }
    return st;
}

static MESH_UNUSED void fx_store_free(mesh_store *st, const char *dir)
{
    mesh_store_close(st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static int fx_counts_fn(mesh_txn *t, void *ctx) { return mesh_store_counts_get(t, ctx); }

static MESH_UNUSED mesh_store_counts fx_counts(mesh_store *st)
{
    mesh_store_counts c;
    if (mesh_store_read(st, fx_counts_fn, &c) != MESH_OK) abort();
    return c;
}

/* Observes each frame the pump carries; may drop it (return false). */
typedef bool (*fx_tap)(int from, const uint8_t *frame, size_t len, void *ctx);

/*
 * Carries frames between sessions a (side 0) and b (side 1) until neither has anything to send
 * or `max_frames` frames went across. `dup`: deliver every frame twice. Returns frames carried.
 */
static MESH_UNUSED size_t fx_pump(mesh_session *a, mesh_session *b, uint64_t now_ms,
                                  size_t max_frames, bool dup, fx_tap tap, void *tap_ctx)
{
    mesh_buf out;
    mesh_buf_init(&out, MESH_FRAME_BYTES_MAX);
    size_t moved = 0;
    bool progress = true;
    while (progress && moved < max_frames) {
        progress = false;
        for (int side = 0; side < 2 && moved < max_frames; side++) {
            mesh_session *from = side == 0 ? a : b, *to = side == 0 ? b : a;
            while (moved < max_frames && mesh_session_send(from, &out, now_ms) == MESH_OK) {
                moved++;
                progress = true;
                if (tap && !tap(side, out.data, out.len, tap_ctx)) continue;
                (void)mesh_session_recv(to, out.data, out.len, now_ms);
                if (dup) (void)mesh_session_recv(to, out.data, out.len, now_ms);
            }
        }
    }
    mesh_buf_fini(&out);
    return moved;
}

#endif
