/*
 * outbox.c - This file implements the gateway's outbox (outbox.h) in the `outbox` database.
 *
 * Records (big-endian integers):
 *   op:     format u8 (=1) | state u8 | kind u8 | action u8 | attempt u16 | hlc u64
 *           | expect_rv u32 | server_rv u32 | code_len u8 | code | msg_len u16 | msg
 *   entity: format u8 (=1) | flags u32 | server_rv u32 | fwd_rv u32 | fwd_hlc u64
 *           | fwd_author(32) | max_rv u32 | max_hlc u64 | max_author(32) | reassert_rv u32
 *           | type_len u8 | type | id_len u8 | id
 *           | code_len u8 | code | msg_len u16 | msg
 * Counters of ops by state live under 'M' and change in the same transaction as the records.
 */
#include "store/outbox.h"

#include "store/store_int.h"

#include <stdio.h>

#define OUTBOX_FORMAT 1u
#define OP_KEY_BYTES (1 + MESH_UUID_BYTES + 4 + MESH_KEY_BYTES)
#define OP_FIXED_BYTES (1 + 1 + 1 + 1 + 2 + 8 + 4 + 4)
#define ENT_FIXED_BYTES (1 + 4 + 4 + 4 + 8 + MESH_KEY_BYTES + 4 + 8 + MESH_KEY_BYTES + 4)
#define META_NAME_BYTES_MAX 64

static const char *const COUNTER_NAMES[] = {NULL, "ops.pending", "ops.sent", "ops.confirmed",
                                            "ops.rejected"};

static bool state_live(uint8_t s) { return s == MESH_OUTBOX_PENDING || s == MESH_OUTBOX_SENT; }

static void op_key(uint8_t k[OP_KEY_BYTES], char prefix, const uint8_t entity[16], uint32_t rv,
                   const uint8_t author[32])
{
    k[0] = (uint8_t)prefix;
    memcpy(k + 1, entity, 16);
    mesh_be32_put(k + 17, rv);
    memcpy(k + 21, author, 32);
}

/* Copies a length-prefixed string out of a record; false if it overruns. */
static bool get_str(const uint8_t **p, const uint8_t *end, size_t len_bytes, char *out, size_t cap)
{
    if ((size_t)(end - *p) < len_bytes) return false;
    size_t n = len_bytes == 1 ? **p : (size_t)((*p)[0] << 8 | (*p)[1]);
    *p += len_bytes;
    if ((size_t)(end - *p) < n || n >= cap) return false;
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += n;
    return true;
}

static uint8_t *put_str(uint8_t *p, size_t len_bytes, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (len_bytes == 1) {
        *p++ = (uint8_t)n;
    } else {
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
    }
    memcpy(p, s, n);
    return p + n;
}

static int op_decode(const uint8_t *key, const MDB_val *v, mesh_outbox_op *out)
{
    const uint8_t *p = v->mv_data, *end = p + v->mv_size;
    memset(out, 0, sizeof *out);
    memcpy(out->entity, key + 1, 16);
    out->row_version = mesh_be32_get(key + 17);
    memcpy(out->author, key + 21, 32);
    if (v->mv_size < OP_FIXED_BYTES || p[0] != OUTBOX_FORMAT) goto bad;
    out->state = p[1];
    out->kind = p[2];
    out->action = p[3];
    out->attempt = (uint16_t)(p[4] << 8 | p[5]);
    out->hlc = mesh_be64_get(p + 6);
    out->expect_rv = mesh_be32_get(p + 14);
    out->server_rv = mesh_be32_get(p + 18);
    p += OP_FIXED_BYTES;
    if (out->state < MESH_OUTBOX_PENDING || out->state > MESH_OUTBOX_REJECTED) goto bad;
    if (!get_str(&p, end, 1, out->error_code, sizeof out->error_code) ||
        !get_str(&p, end, 2, out->error_msg, sizeof out->error_msg) || p != end)
        goto bad;
    return MESH_OK;
bad:
    return mesh_err(MESH_ECORRUPT, "a gateway outbox op record is damaged; the gateway cannot "
                    "tell whether that op reached the server");
}

static int op_lookup(mesh_txn *t, char prefix, const uint8_t entity[16], uint32_t rv,
                     const uint8_t author[32], mesh_outbox_op *out)
{
    uint8_t key[OP_KEY_BYTES];
    op_key(key, prefix, entity, rv, author);
    MDB_val k = mval(key, sizeof key), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_OUTBOX], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading the gateway outbox");
    return op_decode(key, &v, out);
}

int mesh_outbox_op_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], uint32_t rv,
                       const uint8_t author[MESH_KEY_BYTES], mesh_outbox_op *out)
{
    int rc = op_lookup(t, 'P', entity, rv, author, out);
    if (rc == MESH_ENOTFOUND) rc = op_lookup(t, 'D', entity, rv, author, out);
    return rc;
}

int mesh_outbox_op_put(mesh_txn *t, const mesh_outbox_op *op, uint8_t prev,
                       mesh_outbox_deltas *deltas)
{
    MESH_ASSERT(op->state >= MESH_OUTBOX_PENDING && op->state <= MESH_OUTBOX_REJECTED);
    int rc;
    if (prev == MESH_OUTBOX_PREV_UNKNOWN) {
        mesh_outbox_op old;
        rc = mesh_outbox_op_get(t, op->entity, op->row_version, op->author, &old);
        if (rc == MESH_OK) prev = old.state;
        else if (rc == MESH_ENOTFOUND) prev = MESH_OUTBOX_PREV_NONE;
        else return rc;
    }
    bool had = prev != MESH_OUTBOX_PREV_NONE;
    MESH_ASSERT(!had || (prev >= MESH_OUTBOX_PENDING && prev <= MESH_OUTBOX_REJECTED));
    char want = state_live(op->state) ? 'P' : 'D';
    uint8_t key[OP_KEY_BYTES];
    if (had && state_live(prev) != state_live(op->state)) {
        op_key(key, state_live(prev) ? 'P' : 'D', op->entity, op->row_version, op->author);
        MDB_val k = mval(key, sizeof key);
        rc = mdb_del(t->txn, t->s->dbi[DB_OUTBOX], &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) return mesh_lmdb_err(t, rc, "updating the gateway outbox");
    }
    uint8_t val[OP_FIXED_BYTES + 1 + MESH_OUTBOX_CODE_BYTES_MAX + 2 + MESH_OUTBOX_MSG_BYTES_MAX];
    uint8_t *p = val;
    p[0] = OUTBOX_FORMAT;
    p[1] = op->state;
    p[2] = op->kind;
    p[3] = op->action;
    p[4] = (uint8_t)(op->attempt >> 8);
    p[5] = (uint8_t)op->attempt;
    mesh_be64_put(p + 6, op->hlc);
    mesh_be32_put(p + 14, op->expect_rv);
    mesh_be32_put(p + 18, op->server_rv);
    p += OP_FIXED_BYTES;
    p = put_str(p, 1, op->error_code, MESH_OUTBOX_CODE_BYTES_MAX);
    p = put_str(p, 2, op->error_msg, MESH_OUTBOX_MSG_BYTES_MAX);
    op_key(key, want, op->entity, op->row_version, op->author);
    MDB_val k = mval(key, sizeof key), v = mval(val, (size_t)(p - val));
    rc = mdb_put(t->txn, t->s->dbi[DB_OUTBOX], &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing the gateway outbox");
    if (!had || prev != op->state) {
        mesh_outbox_deltas local = {{0}};
        mesh_outbox_deltas *d = deltas ? deltas : &local;
        if (had) d->d[prev]--;
        d->d[op->state]++;
        if (deltas == NULL) return mesh_outbox_deltas_apply(t, &local);
    }
    return MESH_OK;
}

int mesh_outbox_deltas_apply(mesh_txn *t, mesh_outbox_deltas *deltas)
{
    for (int s = MESH_OUTBOX_PENDING; s <= MESH_OUTBOX_REJECTED; s++) {
        if (deltas->d[s] == 0) continue;
        int rc = mesh_outbox_meta_add(t, COUNTER_NAMES[s], deltas->d[s]);
        if (rc != MESH_OK) return rc;
        deltas->d[s] = 0;
    }
    return MESH_OK;
}

/* Walks the records whose key starts with prefix (pl bytes). */
static int walk(mesh_txn *t, const uint8_t *prefix, size_t pl,
                int (*fn)(const uint8_t *key, size_t klen, const MDB_val *v, void *ctx), void *ctx)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_OUTBOX], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading the gateway outbox");
    MDB_val k = mval(prefix, pl), v;
    int out = MESH_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < pl || memcmp(k.mv_data, prefix, pl) != 0) break;
        out = fn(k.mv_data, k.mv_size, &v, ctx);
        if (out != MESH_OK) break;
    }
    if (out == MESH_OK && rc != 0 && rc != MDB_NOTFOUND)
        out = mesh_lmdb_err(t, rc, "reading the gateway outbox");
    mdb_cursor_close(c);
    return out;
}

typedef struct op_walk {
    int (*fn)(const mesh_outbox_op *op, void *ctx);
    void *ctx;
} op_walk;

static int op_visit(const uint8_t *key, size_t klen, const MDB_val *v, void *ctx)
{
    op_walk *w = ctx;
    if (klen != OP_KEY_BYTES)
        return mesh_err(MESH_ECORRUPT, "a gateway outbox key is damaged");
    mesh_outbox_op op;
    int rc = op_decode(key, v, &op);
    return rc == MESH_OK ? w->fn(&op, w->ctx) : rc;
}

int mesh_outbox_live_ops(mesh_txn *t, int (*fn)(const mesh_outbox_op *op, void *ctx), void *ctx)
{
    op_walk w = {fn, ctx};
    return walk(t, (const uint8_t *)"P", 1, op_visit, &w);
}

int mesh_outbox_done_ops(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES],
                         int (*fn)(const mesh_outbox_op *op, void *ctx), void *ctx)
{
    uint8_t prefix[17] = {'D'};
    memcpy(prefix + 1, entity, 16);
    op_walk w = {fn, ctx};
    return walk(t, prefix, sizeof prefix, op_visit, &w);
}

/* ---- Entities ---- */

static int ent_decode(const uint8_t *key, const MDB_val *v, mesh_outbox_ent *out)
{
    const uint8_t *p = v->mv_data, *end = p + v->mv_size;
    memset(out, 0, sizeof *out);
    memcpy(out->entity, key + 1, 16);
    if (v->mv_size < ENT_FIXED_BYTES || p[0] != OUTBOX_FORMAT) goto bad;
    out->flags = mesh_be32_get(p + 1);
    out->server_rv = mesh_be32_get(p + 5);
    out->fwd_rv = mesh_be32_get(p + 9);
    out->fwd_hlc = mesh_be64_get(p + 13);
    memcpy(out->fwd_author, p + 21, 32);
    out->max_rv = mesh_be32_get(p + 53);
    out->max_hlc = mesh_be64_get(p + 57);
    memcpy(out->max_author, p + 65, 32);
    out->reassert_rv = mesh_be32_get(p + 97);
    p += ENT_FIXED_BYTES;
    if (!get_str(&p, end, 1, out->type, sizeof out->type) || out->type[0] == '\0' ||
        !get_str(&p, end, 1, out->server_id, sizeof out->server_id) ||
        !get_str(&p, end, 1, out->error_code, sizeof out->error_code) ||
        !get_str(&p, end, 2, out->error_msg, sizeof out->error_msg) || p != end)
        goto bad;
    return MESH_OK;
bad:
    return mesh_err(MESH_ECORRUPT, "a gateway outbox entity record is damaged");
}

int mesh_outbox_ent_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], mesh_outbox_ent *out)
{
    uint8_t key[17] = {'E'};
    memcpy(key + 1, entity, 16);
    MDB_val k = mval(key, sizeof key), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_OUTBOX], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading the gateway outbox");
    return ent_decode(key, &v, out);
}

int mesh_outbox_ent_put(mesh_txn *t, const mesh_outbox_ent *e)
{
    uint8_t key[17] = {'E'};
    memcpy(key + 1, e->entity, 16);
    uint8_t val[ENT_FIXED_BYTES + 1 + MESH_TYPE_BYTES_MAX + 1 + MESH_OUTBOX_ID_BYTES_MAX + 1 +
                MESH_OUTBOX_CODE_BYTES_MAX + 2 + MESH_OUTBOX_MSG_BYTES_MAX];
    uint8_t *p = val;
    p[0] = OUTBOX_FORMAT;
    mesh_be32_put(p + 1, e->flags);
    mesh_be32_put(p + 5, e->server_rv);
    mesh_be32_put(p + 9, e->fwd_rv);
    mesh_be64_put(p + 13, e->fwd_hlc);
    memcpy(p + 21, e->fwd_author, 32);
    mesh_be32_put(p + 53, e->max_rv);
    mesh_be64_put(p + 57, e->max_hlc);
    memcpy(p + 65, e->max_author, 32);
    mesh_be32_put(p + 97, e->reassert_rv);
    p += ENT_FIXED_BYTES;
    p = put_str(p, 1, e->type, MESH_TYPE_BYTES_MAX);
    p = put_str(p, 1, e->server_id, MESH_OUTBOX_ID_BYTES_MAX);
    p = put_str(p, 1, e->error_code, MESH_OUTBOX_CODE_BYTES_MAX);
    p = put_str(p, 2, e->error_msg, MESH_OUTBOX_MSG_BYTES_MAX);
    MDB_val k = mval(key, sizeof key), v = mval(val, (size_t)(p - val));
    int rc = mdb_put(t->txn, t->s->dbi[DB_OUTBOX], &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing the gateway outbox");
    return MESH_OK;
}

typedef struct ent_walk {
    int (*fn)(const mesh_outbox_ent *e, void *ctx);
    void *ctx;
} ent_walk;

static int ent_visit(const uint8_t *key, size_t klen, const MDB_val *v, void *ctx)
{
    ent_walk *w = ctx;
    if (klen != 17) return mesh_err(MESH_ECORRUPT, "a gateway outbox key is damaged");
    mesh_outbox_ent e;
    int rc = ent_decode(key, v, &e);
    return rc == MESH_OK ? w->fn(&e, w->ctx) : rc;
}

int mesh_outbox_ents(mesh_txn *t, int (*fn)(const mesh_outbox_ent *ent, void *ctx), void *ctx)
{
    ent_walk w = {fn, ctx};
    return walk(t, (const uint8_t *)"E", 1, ent_visit, &w);
}

/* ---- Cursors and named values ---- */

static int u64_get(mesh_txn *t, const uint8_t *key, size_t klen, uint64_t *val)
{
    MDB_val k = mval(key, klen), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_OUTBOX], &k, &v);
    if (rc == MDB_NOTFOUND) {
        *val = 0;
        return MESH_OK;
    }
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading the gateway outbox");
    if (v.mv_size != 8) return mesh_err(MESH_ECORRUPT, "a gateway outbox value is damaged");
    *val = mesh_be64_get(v.mv_data);
    return MESH_OK;
}

static int u64_put(mesh_txn *t, const uint8_t *key, size_t klen, uint64_t val)
{
    uint8_t b[8];
    mesh_be64_put(b, val);
    MDB_val k = mval(key, klen), v = mval(b, 8);
    int rc = mdb_put(t->txn, t->s->dbi[DB_OUTBOX], &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing the gateway outbox");
    return MESH_OK;
}

int mesh_outbox_cursor_get(mesh_txn *t, uint64_t sid, uint64_t *seq)
{
    uint8_t key[9] = {'S'};
    mesh_be64_put(key + 1, sid);
    return u64_get(t, key, sizeof key, seq);
}

int mesh_outbox_cursor_put(mesh_txn *t, uint64_t sid, uint64_t seq)
{
    uint8_t key[9] = {'S'};
    mesh_be64_put(key + 1, sid);
    return u64_put(t, key, sizeof key, seq);
}

static size_t meta_key(uint8_t key[1 + META_NAME_BYTES_MAX], const char *name)
{
    size_t n = strlen(name);
    MESH_ASSERT(n > 0 && n <= META_NAME_BYTES_MAX);
    key[0] = 'M';
    memcpy(key + 1, name, n);
    return n + 1;
}

int mesh_outbox_meta_get(mesh_txn *t, const char *name, uint64_t *val)
{
    uint8_t key[1 + META_NAME_BYTES_MAX];
    return u64_get(t, key, meta_key(key, name), val);
}

int mesh_outbox_meta_put(mesh_txn *t, const char *name, uint64_t val)
{
    uint8_t key[1 + META_NAME_BYTES_MAX];
    return u64_put(t, key, meta_key(key, name), val);
}

int mesh_outbox_meta_add(mesh_txn *t, const char *name, int64_t delta)
{
    uint64_t v;
    int rc = mesh_outbox_meta_get(t, name, &v);
    if (rc != MESH_OK) return rc;
    /* A counter never goes below zero, even if an old store lost one (they are informative). */
    if (delta < 0 && v < (uint64_t)-delta) v = 0;
    else v += (uint64_t)delta;
    return mesh_outbox_meta_put(t, name, v);
}

int mesh_outbox_counts_get(mesh_txn *t, mesh_outbox_counts *out)
{
    memset(out, 0, sizeof *out);
    int rc = mesh_outbox_meta_get(t, COUNTER_NAMES[MESH_OUTBOX_PENDING], &out->pending);
    if (rc == MESH_OK) rc = mesh_outbox_meta_get(t, COUNTER_NAMES[MESH_OUTBOX_SENT], &out->sent);
    if (rc == MESH_OK)
        rc = mesh_outbox_meta_get(t, COUNTER_NAMES[MESH_OUTBOX_CONFIRMED], &out->confirmed);
    if (rc == MESH_OK)
        rc = mesh_outbox_meta_get(t, COUNTER_NAMES[MESH_OUTBOX_REJECTED], &out->rejected);
    return rc;
}
