/*
 * team.c - This file implements the store's side of the team roster (see team.h): the team and
 * roster records in meta, reading the roster op, and cutting streams back to what a new roster
 * admits.
 */
#include "store/team.h"

#include "crypto/crypto.h"
#include "store/seal_int.h"

#include <stdio.h>
#include <stdlib.h>

#define META_TEAM "team"
#define META_ROSTER_VERSION "roster_version"

int mesh_store_team_get(mesh_txn *t, uint8_t authority[MESH_KEY_BYTES])
{
    size_t len = 0;
    int rc = mesh_store_meta_get(t, META_TEAM, authority, MESH_KEY_BYTES, &len);
    if (rc != MESH_OK) return rc;
    if (len != MESH_KEY_BYTES) return mesh_err(MESH_ECORRUPT, "store metadata 'team' is damaged");
    return MESH_OK;
}

typedef struct held_roster {
    const uint8_t *authority;
    mesh_team *best;     /* the newest valid roster found so far */
} held_roster;

static int held_roster_op(const mesh_oprec *rec, void *ctx)
{
    held_roster *h = ctx;
    mesh_op op;
    if (mesh_op_decode(rec->op, rec->op_len, &op) != MESH_OK) return MESH_OK;
    if (memcmp(op.author, h->authority, MESH_KEY_BYTES) != 0 || !mesh_op_is_roster(&op))
        return MESH_OK;  /* not the authority's: a roster op by anyone else counts for nothing */
    mesh_team *team = NULL;
    if (mesh_team_decode(op.body, op.body_len, h->authority, &team) != MESH_OK ||
        team->version != op.row_version || (h->best && team->version <= h->best->version)) {
        mesh_team_free(team);
        return MESH_OK;
    }
    mesh_team_free(h->best);
    h->best = team;
    return MESH_OK;
}

/* A node may hold the authority's stream before it joins the team (it synced with members
 * under a roster file, or imported a bundle): the newest valid roster among the ops it holds
 * becomes its roster, and its streams are cut back to what that roster admits, as if the roster
 * had arrived now. */
static int roster_from_held(mesh_txn *t, const uint8_t authority[MESH_KEY_BYTES])
{
    uint8_t entity[MESH_UUID_BYTES];
    mesh_team_roster_entity(authority, entity);
    held_roster h = {.authority = authority};
    int rc = mesh_store_entity_ops(t, entity, held_roster_op, &h);
    if (rc == MESH_OK) mesh_err_clear();  /* rosters that do not decode are skipped, not reported */
    if (rc == MESH_OK && h.best != NULL) rc = mesh_store_roster_install(t, h.best);
    if (rc == MESH_OK && h.best != NULL) rc = mesh_store_team_enforce(t, h.best, NULL);
    mesh_team_free(h.best);
    return rc;
}

int mesh_store_team_set(mesh_txn *t, const uint8_t authority[MESH_KEY_BYTES])
{
    uint8_t cur[MESH_KEY_BYTES];
    int rc = mesh_store_team_get(t, cur);
    if (rc == MESH_OK) {
        if (memcmp(cur, authority, MESH_KEY_BYTES) == 0) return MESH_OK;
        char hex[2 * MESH_KEY_BYTES + 1];
        mesh_hex_encode(cur, MESH_KEY_BYTES, hex);
        return mesh_err(MESH_EEXIST, "this node already belongs to the team of authority %s; a "
                        "node belongs to one team (make a new node for another)", hex);
    }
    if (rc != MESH_ENOTFOUND) return rc;
    rc = mesh_store_meta_put(t, META_TEAM, authority, MESH_KEY_BYTES);
    return rc == MESH_OK ? roster_from_held(t, authority) : rc;
}

int mesh_store_roster_version(mesh_txn *t, uint64_t *version)
{
    return mesh_store_meta_get_u64(t, META_ROSTER_VERSION, version);
}

int mesh_store_roster_get(mesh_txn *t, mesh_team **out)
{
    *out = NULL;
    uint8_t auth[MESH_KEY_BYTES];
    int rc = mesh_store_team_get(t, auth);
    if (rc != MESH_OK) return rc;
    uint64_t version;
    if ((rc = mesh_store_roster_version(t, &version)) != MESH_OK) return rc;
    if (version == 0) return MESH_ENOTFOUND;
    uint8_t entity[MESH_UUID_BYTES];
    mesh_team_roster_entity(auth, entity);
    mesh_opref ref = {.row_version = (uint32_t)version};
    memcpy(ref.author, auth, MESH_KEY_BYTES);
    mesh_oprec rec;
    rc = mesh_store_op_get(t, entity, &ref, &rec);
    if (rc == MESH_ENOTFOUND)
        return mesh_err(MESH_ECORRUPT, "the store names roster version %llu but holds no such "
                        "op", (unsigned long long)version);
    mesh_op op;
    if (rc == MESH_OK) rc = mesh_op_decode(rec.op, rec.op_len, &op);
    if (rc == MESH_OK) rc = mesh_team_decode(op.body, op.body_len, auth, out);
    return rc;
}

int mesh_store_roster_install(mesh_txn *t, const mesh_team *team)
{
    return mesh_store_meta_put_u64(t, META_ROSTER_VERSION, team->version);
}

/* ---- Cutting streams back ---- */

typedef struct stream_list {
    mesh_stream *v;
    size_t n, cap;
    const mesh_team *team;
} stream_list;

static int collect_stream(const mesh_stream *st, void *ctx)
{
    stream_list *l = ctx;
    if (st->seq <= mesh_team_write_limit(l->team, st->author, st->scope, st->scope_len))
        return MESH_OK;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        mesh_stream *nv = realloc(l->v, nc * sizeof *nv);
        if (nv == NULL) return mesh_err(MESH_ENOMEM, "out of memory applying a roster");
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = *st;
    return MESH_OK;
}

static int tip_fn(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    (void)seq;
    mesh_op_hash(rec->op, rec->op_len, ctx);
    return 1;
}

/* Removes the state of an entity that has no ops left. */
static int state_remove(mesh_txn *t, const mesh_state *old)
{
    MDB_val k = mval(old->entity, MESH_UUID_BYTES);
    int rc = mdb_del(t->txn, t->s->dbi[DB_STATE], &k, NULL);
    if (rc == 0) rc = mdb_del(t->txn, t->s->dbi[DB_CONFLICTS], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) return mesh_lmdb_err(t, rc, "removing an entity's state");
    return MESH_OK;
}

/* Re-derives the state of an entity that lost ops. */
static int entity_refresh(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES])
{
    mesh_state old, st;
    int rc = mesh_store_state_get(t, entity, &old);
    if (rc == MESH_ENOTFOUND) return MESH_OK;  /* already handled (two cut ops of one entity) */
    if (rc != MESH_OK) return rc;
    bool was_deleted = old.flags & MESH_STATE_DELETED;
    rc = mesh_store_recompute(t, entity, &st);
    if (rc == MESH_ENOTFOUND) {
        rc = state_remove(t, &old);
        if (rc == MESH_OK && was_deleted) rc = mesh_store_deleted_add(t, -1);
        return rc;
    }
    if (rc == MESH_OK) rc = mesh_state_store(t, &old, &st);
    if (rc == MESH_OK && was_deleted && !(st.flags & MESH_STATE_DELETED))
        rc = mesh_store_deleted_add(t, -1);
    return rc;
}

/* Cuts stream `st` back to seq `keep`: the ops after it leave the log, the stream index and
 * pending; the entities they touched are recomputed. */
static int cut_stream(mesh_txn *t, const mesh_stream *st, uint64_t keep, uint64_t *removed)
{
    uint8_t (*ents)[MESH_UUID_BYTES] = NULL;
    size_t nents = 0, cap = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_SOPS], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "cutting a stream");
    int out = MESH_OK;
    /* Each pass seeks afresh from seq keep+1: the records after it are gone, and the chunk that
     * holds keep+1 too (or, when it starts at or before keep, it keeps only those seqs). */
    for (;;) {
        MDB_val k, v;
        size_t idx;
        out = mesh_sops_seek(t, c, st->sid, keep + 1, &k, &v, &idx);
        if (out != MESH_OK) break;
        size_t n = mesh_sops_count(&k, &v);
        uint8_t cut[MESH_SOPS_CHUNK_OPS][MESH_STORE_LOG_KEY_BYTES];
        for (size_t i = idx; i < n; i++) mesh_sops_log_key(&v, i, st->author, cut[i - idx]);
        if (nents + (n - idx) > cap) {
            size_t nc = cap ? cap * 2 : 64;
            while (nc < nents + (n - idx)) nc *= 2;
            void *ne = realloc(ents, nc * MESH_UUID_BYTES);
            if (ne == NULL) {
                out = mesh_err(MESH_ENOMEM, "out of memory cutting a stream");
                break;
            }
            ents = ne;
            cap = nc;
        }
        if (idx > 0) {
            /* (idx > 0: a chunk of 20-byte entries, since a format-1 record holds one op.) */
            uint8_t kept[MESH_SOPS_CHUNK_OPS * MESH_SOPS_ENTRY_BYTES];
            memcpy(kept, v.mv_data, idx * MESH_SOPS_ENTRY_BYTES);
            if ((out = mesh_sops_rewrite(t, c, &k, kept, idx * MESH_SOPS_ENTRY_BYTES)) != MESH_OK)
                break;
        }
        int drc = idx > 0 ? 0 : mdb_cursor_del(c, 0);
        for (size_t i = 0; i < n - idx && drc == 0; i++) {
            memcpy(ents[nents++], cut[i], MESH_UUID_BYTES);
            MDB_val lkv = mval(cut[i], MESH_STORE_LOG_KEY_BYTES);
            drc = mdb_del(t->txn, t->s->dbi[DB_LOG], &lkv, NULL);
            if (drc == MDB_NOTFOUND) drc = 0;
            if (removed) (*removed)++;
        }
        if (drc != 0) {
            out = mesh_lmdb_err(t, drc, "cutting a stream");
            break;
        }
    }
    if (out == MESH_ENOTFOUND) out = MESH_OK;
    mdb_cursor_close(c);

    if (out == MESH_OK) {
        mesh_stream ns = *st;
        if (keep == 0) {
            uint8_t sk[8];
            mesh_be64_put(sk, st->sid);
            MDB_val skv = mval(sk, 8);
            rc = mdb_del(t->txn, t->s->dbi[DB_STREAMS], &skv, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND) out = mesh_lmdb_err(t, rc, "cutting a stream");
        } else {
            ns.seq = keep;
            out = mesh_store_stream_ops(t, st->sid, keep, tip_fn, ns.tip);
            if (out == 1) out = mesh_store_stream_put(t, &ns);
            else if (out == MESH_OK)
                out = mesh_err(MESH_ECORRUPT, "op %llu of a stream is missing",
                               (unsigned long long)keep);
        }
    }
    for (size_t i = 0; i < nents && out == MESH_OK; i++) out = entity_refresh(t, ents[i]);
    free(ents);
    return out;
}

/* Drops the ops waiting in pending that `team` will never admit (also of streams of which
 * nothing is held yet). */
static int pending_sweep(mesh_txn *t, const mesh_team *team)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_PENDING], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading pending ops");
    uint8_t (*doomed)[16] = NULL;
    size_t n = 0, cap = 0;
    int out = MESH_OK;
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        mesh_oprec rec;
        mesh_op op;
        if (k.mv_size != 16) continue;
        mesh_rec_mark mark = mesh_store_rec_mark(t);
        out = mesh_store_rec_open(t, DB_PENDING, &k, &v, &rec);
        if (out == MESH_EPERM || out == MESH_ENOMEM) break;
        bool drop = out != MESH_OK || mesh_op_peek(rec.op, rec.op_len, &op) != MESH_OK ||
                    op.seq > mesh_team_write_limit(team, op.author, op.scope, op.scope_len);
        out = MESH_OK;
        mesh_store_rec_release(t, mark);
        if (!drop) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            void *nd = realloc(doomed, nc * 16);
            if (nd == NULL) {
                out = mesh_err(MESH_ENOMEM, "out of memory applying a roster");
                break;
            }
            doomed = nd;
            cap = nc;
        }
        memcpy(doomed[n++], k.mv_data, 16);
    }
    if (out == MESH_OK && rc != MDB_NOTFOUND) out = mesh_lmdb_err(t, rc, "reading pending ops");
    mdb_cursor_close(c);
    for (size_t i = 0; i < n && out == MESH_OK; i++) {
        MDB_val dk = mval(doomed[i], 16);
        rc = mdb_del(t->txn, t->s->dbi[DB_PENDING], &dk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) out = mesh_lmdb_err(t, rc, "dropping pending ops");
    }
    free(doomed);
    return out;
}

int mesh_store_team_enforce(mesh_txn *t, const mesh_team *team, uint64_t *removed)
{
    if (removed) *removed = 0;
    stream_list l = {.team = team};
    int rc = pending_sweep(t, team);
    if (rc == MESH_OK) rc = mesh_store_streams(t, collect_stream, &l);
    for (size_t i = 0; i < l.n && rc == MESH_OK; i++) {
        const mesh_stream *st = &l.v[i];
        rc = cut_stream(t, st, mesh_team_write_limit(team, st->author, st->scope, st->scope_len),
                        removed);
    }
    free(l.v);
    return rc;
}
