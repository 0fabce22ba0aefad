/*
 * merge.c - the deterministic merge rule and the materialized state of each entity.
 *
 * For the set of ops of one entity:
 *   - deleted   = some op is a delete (deletes are final);
 *   - winner    = the op with the largest (rowVersion, hlc, author), taken among the deletes if
 *                 the entity is deleted;
 *   - heads     = the ops that no other op names as its base or merges; more than one head on a
 *                 live entity is a conflict that a person resolves by writing an op merging them.
 * Each is a function of the set alone, so every node holding the same ops shows the same state
 * whatever order the ops arrived in. mesh_store_recompute() evaluates the rule from the log;
 * mesh_state_apply() takes a fast path for the common case (an op newer than all others) that
 * gives the same result, and falls back to recomputing otherwise.
 */
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>

/* Format 1 spells out the winner; format 2 omits it because it is the first head (the usual
 * case: 44 bytes less for nearly every entity). Both are read. */
#define STATE_FORMAT_WINNER 1
#define STATE_FORMAT_HEAD_WINS 2
#define HEAD_BYTES (4 + MESH_KEY_BYTES + 8)

static int head_cmp_desc(const void *a, const void *b)
{
    const mesh_head *x = a, *y = b;
    return -mesh_op_order_cmp(x->ref.row_version, x->hlc, x->ref.author, y->ref.row_version,
                              y->hlc, y->ref.author);
}

static uint8_t *put_head(uint8_t *p, const mesh_head *h)
{
    mesh_be32_put(p, h->ref.row_version);
    memcpy(p + 4, h->ref.author, MESH_KEY_BYTES);
    mesh_be64_put(p + 4 + MESH_KEY_BYTES, h->hlc);
    return p + HEAD_BYTES;
}

static const uint8_t *get_head(const uint8_t *p, mesh_head *h)
{
    h->ref.row_version = mesh_be32_get(p);
    memcpy(h->ref.author, p + 4, MESH_KEY_BYTES);
    h->hlc = mesh_be64_get(p + 4 + MESH_KEY_BYTES);
    return p + HEAD_BYTES;
}

int mesh_state_encode(const mesh_state *st, uint8_t *out, size_t cap, size_t *len)
{
    size_t tl = strlen(st->type);
    size_t need = 3 + tl + 4 + HEAD_BYTES + 1 + st->nparents * 16 + 1 + st->nheads * HEAD_BYTES;
    MESH_ASSERT(need <= cap && st->nparents <= MESH_PARENTS_MAX && st->nheads <= MESH_HEADS_MAX &&
                st->nheads >= 1);
    const mesh_head *w = &st->winner, *h0 = &st->heads[0];
    bool head_wins = w->ref.row_version == h0->ref.row_version && w->hlc == h0->hlc &&
                     memcmp(w->ref.author, h0->ref.author, MESH_KEY_BYTES) == 0;
    uint8_t *p = out;
    *p++ = head_wins ? STATE_FORMAT_HEAD_WINS : STATE_FORMAT_WINNER;
    *p++ = (uint8_t)st->flags;
    *p++ = (uint8_t)tl;
    memcpy(p, st->type, tl);
    p += tl;
    mesh_be32_put(p, st->max_rv);
    p += 4;
    if (!head_wins) p = put_head(p, &st->winner);
    *p++ = (uint8_t)st->nparents;
    for (uint32_t i = 0; i < st->nparents; i++, p += 16) memcpy(p, st->parents[i], 16);
    *p++ = (uint8_t)st->nheads;
    for (uint32_t i = 0; i < st->nheads; i++) p = put_head(p, &st->heads[i]);
    *len = (size_t)(p - out);
    return MESH_OK;
}

bool mesh_state_type_is(const uint8_t *p, size_t len, const char *type, size_t tl)
{
    /* format, flags, type length, type: the same in both formats */
    return len >= 3 + tl && p[2] == tl && memcmp(p + 3, type, tl) == 0;
}

int mesh_state_decode(const uint8_t *p, size_t len, const uint8_t entity[16], mesh_state *st)
{
    const uint8_t *end = p + len;
    memset(st, 0, sizeof *st);
    memcpy(st->entity, entity, 16);
    if (len < 3 || (p[0] != STATE_FORMAT_WINNER && p[0] != STATE_FORMAT_HEAD_WINS)) goto bad;
    bool head_wins = p[0] == STATE_FORMAT_HEAD_WINS;
    st->flags = p[1];
    size_t tl = p[2];
    p += 3;
    size_t wl = head_wins ? 0 : HEAD_BYTES;
    if (tl == 0 || tl > MESH_TYPE_BYTES_MAX || (size_t)(end - p) < tl + 4 + wl + 2) goto bad;
    /* The type came from an op, which only carries names of the type grammar (no NUL). */
    if (mesh_type_check((const char *)p, tl) != MESH_OK) goto bad;
    memcpy(st->type, p, tl);
    st->type[tl] = '\0';
    p += tl;
    st->max_rv = mesh_be32_get(p);
    p += 4;
    if (!head_wins) p = get_head(p, &st->winner);
    st->nparents = *p++;
    if (st->nparents > MESH_PARENTS_MAX || (size_t)(end - p) < st->nparents * 16u + 1) goto bad;
    for (uint32_t i = 0; i < st->nparents; i++, p += 16) memcpy(st->parents[i], p, 16);
    st->nheads = *p++;
    if (st->nheads < 1 || st->nheads > MESH_HEADS_MAX ||
        (size_t)(end - p) != st->nheads * (size_t)HEAD_BYTES)
        goto bad;
    for (uint32_t i = 0; i < st->nheads; i++) p = get_head(p, &st->heads[i]);
    if (head_wins) st->winner = st->heads[0];
    return MESH_OK;
bad:;
    char hex[33];
    mesh_hex_encode(entity, 16, hex);
    return mesh_err(MESH_ECORRUPT, "the state record of entity %s is damaged; it can be "
                    "rebuilt from the op-log", hex);
}

int mesh_store_state_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], mesh_state *out)
{
    MDB_val k = mval(entity, 16), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_STATE], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading an entity's state");
    return mesh_state_decode(v.mv_data, v.mv_size, entity, out);
}

/* Keeps the conflict index and the count of deleted entities in step with an entity's state
 * going from `old` (NULL: none) to `st`, whose record is already written. (There is no index by
 * type: a list by type scans the state table, see query.c.) */
static int state_index(mesh_txn *t, const mesh_state *old, const mesh_state *st)
{
    bool was = old != NULL && mesh_state_conflict(old), is = mesh_state_conflict(st);
    if (was != is) {
        MDB_val ck = mval(st->entity, 16), cv = mval("", 0);
        int rc = is ? mdb_put(t->txn, t->s->dbi[DB_CONFLICTS], &ck, &cv, 0)
                : mdb_del(t->txn, t->s->dbi[DB_CONFLICTS], &ck, NULL);
        if (rc != 0) return mesh_lmdb_err(t, rc, "updating the conflict index");
    }
    bool wasdel = old != NULL && (old->flags & MESH_STATE_DELETED);
    if (!wasdel && (st->flags & MESH_STATE_DELETED)) return mesh_store_deleted_add(t, 1);
    return MESH_OK;
}

int mesh_store_deleted_add(mesh_txn *t, int delta)
{
    MESH_ASSERT(delta == 1 || delta == -1);
    uint64_t n;
    int rc = mesh_store_meta_get_u64(t, "deleted", &n);
    if (rc != MESH_OK || (delta < 0 && n == 0)) return rc;
    return mesh_store_meta_put_u64(t, "deleted", delta > 0 ? n + 1 : n - 1);
}

int mesh_state_store(mesh_txn *t, const mesh_state *old, const mesh_state *st)
{
    uint8_t buf[MESH_STATE_BYTES_MAX];
    size_t len;
    mesh_state_encode(st, buf, sizeof buf, &len);
    MDB_val k = mval(st->entity, 16), v = mval(buf, len);
    int rc = old ? mdb_put(t->txn, t->s->dbi[DB_STATE], &k, &v, 0) : put_seq(t, DB_STATE, &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing an entity's state");
    return state_index(t, old, st);
}

/* One op's contribution to the merge, kept while recomputing. */
typedef struct summary {
    mesh_head h;
    uint8_t kind;
    char type[MESH_TYPE_BYTES_MAX + 1];
    uint32_t nparents;
    uint8_t parents[MESH_PARENTS_MAX][16];
} summary;

typedef struct recompute_ctx {
    summary *ops;
    size_t n, cap;
    mesh_opref *refs;   /* every base and merged reference */
    size_t nrefs, refcap;
    int err;
} recompute_ctx;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return MESH_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (np == NULL) return mesh_err(MESH_ENOMEM, "out of memory merging an entity's ops");
    *p = np;
    *cap = nc;
    return MESH_OK;
}

static int collect(const mesh_oprec *rec, void *vctx)
{
    recompute_ctx *c = vctx;
    mesh_op op;
    int rc = mesh_op_decode(rec->op, rec->op_len, &op);
    if (rc != MESH_OK) return mesh_err_wrap(rc, "a stored op no longer decodes");
    if ((rc = grow((void **)&c->ops, &c->cap, c->n + 1, sizeof(summary))) != MESH_OK) return rc;
    if ((rc = grow((void **)&c->refs, &c->refcap, c->nrefs + 1 + op.merged_count,
                   sizeof(mesh_opref))) != MESH_OK)
        return rc;
    summary *s = &c->ops[c->n++];
    s->h.ref.row_version = op.row_version;
    memcpy(s->h.ref.author, op.author, MESH_KEY_BYTES);
    s->h.hlc = op.hlc;
    s->kind = op.kind;
    memcpy(s->type, op.type, op.type_len);
    s->type[op.type_len] = '\0';
    s->nparents = op.parents_count;
    memcpy(s->parents, op.parents, sizeof op.parents[0] * op.parents_count);
    if (op.has_base) c->refs[c->nrefs++] = op.base;
    for (uint32_t i = 0; i < op.merged_count; i++) c->refs[c->nrefs++] = op.merged[i];
    return MESH_OK;
}

static int ref_cmp(const void *a, const void *b)
{
    const mesh_opref *x = a, *y = b;
    if (x->row_version != y->row_version) return x->row_version < y->row_version ? -1 : 1;
    return memcmp(x->author, y->author, MESH_KEY_BYTES);
}

static int order_cmp(const mesh_head *a, const mesh_head *b)
{
    return mesh_op_order_cmp(a->ref.row_version, a->hlc, a->ref.author, b->ref.row_version, b->hlc,
                             b->ref.author);
}

static void set_winner(mesh_state *st, const summary *s)
{
    st->winner = s->h;
    memcpy(st->type, s->type, strlen(s->type) + 1);
    st->nparents = s->nparents;
    memcpy(st->parents, s->parents, sizeof s->parents[0] * s->nparents);
}

int mesh_store_recompute(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], mesh_state *out)
{
    recompute_ctx c = {0};
    int rc = mesh_store_entity_ops(t, entity, collect, &c);
    if (rc == MESH_OK && c.n == 0) rc = MESH_ENOTFOUND;
    if (rc != MESH_OK) goto done;

    memset(out, 0, sizeof *out);
    memcpy(out->entity, entity, 16);
    const summary *win = NULL;
    for (size_t i = 0; i < c.n; i++) {
        const summary *s = &c.ops[i];
        if (s->h.ref.row_version > out->max_rv) out->max_rv = s->h.ref.row_version;
        if (s->kind == MESH_OP_DELETE) out->flags |= MESH_STATE_DELETED;
    }
    bool deleted = out->flags & MESH_STATE_DELETED;
    for (size_t i = 0; i < c.n; i++) {
        const summary *s = &c.ops[i];
        if (deleted && s->kind != MESH_OP_DELETE) continue;
        if (win == NULL || order_cmp(&s->h, &win->h) > 0) win = s;
    }
    set_winner(out, win);

    /* Heads: ops nobody references. Keep the largest MESH_HEADS_MAX in descending order. */
    qsort(c.refs, c.nrefs, sizeof *c.refs, ref_cmp);
    mesh_head heads[MESH_HEADS_MAX + 1];
    uint32_t nh = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (bsearch(&c.ops[i].h.ref, c.refs, c.nrefs, sizeof *c.refs, ref_cmp)) continue;
        heads[nh++] = c.ops[i].h;
        qsort(heads, nh, sizeof heads[0], head_cmp_desc);
        if (nh > MESH_HEADS_MAX) nh = MESH_HEADS_MAX;
    }
    /* A reference cycle cannot occur (a base always has a lower rowVersion), so there is at least
     * the op with the highest rowVersion. */
    MESH_ASSERT(nh >= 1);
    out->nheads = nh;
    memcpy(out->heads, heads, nh * sizeof heads[0]);
done:
    free(c.ops);
    free(c.refs);
    return rc;
}

static bool ref_eq(const mesh_opref *a, const mesh_head *h)
{
    return a->row_version == h->ref.row_version &&
           memcmp(a->author, h->ref.author, MESH_KEY_BYTES) == 0;
}

static void summary_of(const mesh_op *op, summary *s)
{
    s->h.hlc = op->hlc;
    s->h.ref.row_version = op->row_version;
    memcpy(s->h.ref.author, op->author, MESH_KEY_BYTES);
    s->kind = op->kind;
    memcpy(s->type, op->type, op->type_len);
    s->type[op->type_len] = '\0';
    s->nparents = op->parents_count;
    memcpy(s->parents, op->parents, sizeof op->parents[0] * op->parents_count);
}

size_t mesh_state_fresh(const mesh_op *op, uint8_t out[MESH_STATE_FRESH_BYTES_MAX])
{
    /* What mesh_state_encode writes for the state of this op alone, written straight from the
     * op (every op of a bulk ingest goes through here): the op is the one head and the winner,
     * so the record is in the head-wins format. */
    MESH_ASSERT(op->type_len <= MESH_TYPE_BYTES_MAX && op->parents_count <= MESH_PARENTS_MAX);
    mesh_head h = {.ref.row_version = op->row_version, .hlc = op->hlc};
    memcpy(h.ref.author, op->author, MESH_KEY_BYTES);
    uint8_t *p = out;
    *p++ = STATE_FORMAT_HEAD_WINS;
    *p++ = op->kind == MESH_OP_DELETE ? MESH_STATE_DELETED : 0;
    *p++ = (uint8_t)op->type_len;
    memcpy(p, op->type, op->type_len);
    p += op->type_len;
    mesh_be32_put(p, op->row_version);
    p += 4;
    *p++ = (uint8_t)op->parents_count;
    memcpy(p, op->parents, 16 * (size_t)op->parents_count);
    p += 16 * (size_t)op->parents_count;
    *p++ = 1;
    p = put_head(p, &h);
    return (size_t)(p - out);
}

int mesh_state_apply(mesh_txn *t, const mesh_op *op, const uint8_t *fresh, size_t fresh_len)
{
    /* Most ops reach a node before any other op of their entity: insert the state the op alone
     * gives. For an entity already held the insert fails and hands back the stored state, so
     * either way the state table is searched once. */
    uint8_t buf[MESH_STATE_FRESH_BYTES_MAX];
    if (fresh == NULL) {
        fresh_len = mesh_state_fresh(op, buf);
        fresh = buf;
    }
    MDB_val k = mval(op->entity, 16), v = mval(fresh, fresh_len);
    int rc = put_seq(t, DB_STATE, &k, &v, MDB_NOOVERWRITE);
    if (rc == 0) {
        /* A new entity has one head, so no conflict; a delete counts as a deleted entity. */
        return op->kind == MESH_OP_DELETE ? mesh_store_deleted_add(t, 1) : MESH_OK;
    }
    if (rc != MDB_KEYEXIST) return mesh_lmdb_err(t, rc, "writing an entity's state");
    /* v is the stored record now; it lives until the next write. */
    mesh_state old, st;
    if ((rc = mesh_state_decode(v.mv_data, v.mv_size, op->entity, &old)) != MESH_OK) return rc;
    summary s;
    summary_of(op, &s);

    if (op->row_version <= old.max_rv || old.nheads >= MESH_HEADS_MAX) {
        /* An older op arrived late, or the head list is saturated: only the full rule is exact. */
        rc = mesh_store_recompute(t, op->entity, &st);
        if (rc != MESH_OK) return rc;
        return mesh_state_store(t, &old, &st);
    }

    /* Fast path: op is newer than every op held, so none of them derives from it. */
    st = old;
    st.max_rv = op->row_version;
    bool del = op->kind == MESH_OP_DELETE;
    if (del && !(st.flags & MESH_STATE_DELETED)) {
        st.flags |= MESH_STATE_DELETED;
        set_winner(&st, &s);
    } else if (del || !(st.flags & MESH_STATE_DELETED)) {
        if (order_cmp(&s.h, &st.winner) > 0) set_winner(&st, &s);
    }
    uint32_t nh = 0;
    for (uint32_t i = 0; i < old.nheads; i++) {
        const mesh_head *h = &old.heads[i];
        bool referenced = op->has_base && ref_eq(&op->base, h);
        for (uint32_t j = 0; j < op->merged_count && !referenced; j++)
            referenced = ref_eq(&op->merged[j], h);
        if (!referenced) st.heads[nh++] = *h;
    }
    st.heads[nh++] = s.h;
    qsort(st.heads, nh, sizeof st.heads[0], head_cmp_desc);
    st.nheads = nh;
    return mesh_state_store(t, &old, &st);
}

int mesh_store_effectively_deleted(mesh_txn *t, const mesh_state *st, bool *deleted)
{
    /* Breadth-first over ancestors, bounded in depth and width. */
    uint8_t frontier[MESH_PARENTS_MAX * 4][16];
    size_t nf = 0;
    *deleted = (st->flags & MESH_STATE_DELETED) != 0;
    if (*deleted) return MESH_OK;
    for (uint32_t i = 0; i < st->nparents; i++) memcpy(frontier[nf++], st->parents[i], 16);
    for (int depth = 0; depth < MESH_ANCESTRY_DEPTH_MAX && nf > 0; depth++) {
        uint8_t next[MESH_PARENTS_MAX * 4][16];
        size_t nn = 0;
        for (size_t i = 0; i < nf; i++) {
            mesh_state ps;
            int rc = mesh_store_state_get(t, frontier[i], &ps);
            if (rc == MESH_ENOTFOUND) continue;
            if (rc != MESH_OK) return rc;
            if (ps.flags & MESH_STATE_DELETED) {
                *deleted = true;
                return MESH_OK;
            }
            for (uint32_t j = 0; j < ps.nparents && nn < sizeof next / sizeof next[0]; j++)
                memcpy(next[nn++], ps.parents[j], 16);
        }
        memcpy(frontier, next, nn * 16);
        nf = nn;
    }
    return MESH_OK;
}
