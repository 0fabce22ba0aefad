/*
 * query.c - reads: an entity's ops, entities by type, conflicts, counts and the op-log digest.
 */
#include "store/store_int.h"

#include "crypto/crypto.h"
#include "store/seal_int.h"

#include <stdio.h>
#include <sys/stat.h>

int mesh_store_entity_ops(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES],
                          int (*fn)(const mesh_oprec *rec, void *ctx), void *ctx)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_LOG], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading an entity's ops");
    MDB_val k = mval(entity, 16), v;
    int out = MESH_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != MESH_STORE_LOG_KEY_BYTES || memcmp(k.mv_data, entity, 16) != 0) break;
        mesh_rec_mark mark = mesh_store_rec_mark(t);
        mesh_oprec rec;
        out = mesh_store_rec_open(t, DB_LOG, &k, &v, &rec);
        if (out == MESH_OK) out = fn(&rec, ctx);
        mesh_store_rec_release(t, mark);
        if (out != MESH_OK) break;
    }
    if (out == MESH_OK && rc != 0 && rc != MDB_NOTFOUND)
        out = mesh_lmdb_err(t, rc, "reading an entity's ops");
    mdb_cursor_close(c);
    return out;
}

/* Calls fn with each entity's state: those of type `type` (NULL: all) from the state table, or
 * those named by the keys of `db` (the conflict index). */
static int walk(mesh_txn *t, int db, const char *type,
                int (*fn)(const mesh_state *st, void *ctx), void *ctx)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "listing entities");
    size_t tl = type ? strlen(type) : 0;
    MDB_val k, v;
    int out = MESH_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16) {
            out = mesh_err(MESH_ECORRUPT, "an index key is damaged");
            break;
        }
        mesh_state st;
        if (db == DB_STATE) {
            if (type && !mesh_state_type_is(v.mv_data, v.mv_size, type, tl)) continue;
            out = mesh_state_decode(v.mv_data, v.mv_size, k.mv_data, &st);
        } else {
            out = mesh_store_state_get(t, k.mv_data, &st);
        }
        if (out == MESH_OK) out = fn(&st, ctx);
        if (out != MESH_OK) break;
    }
    if (out == MESH_OK && rc != 0 && rc != MDB_NOTFOUND) out = mesh_lmdb_err(t, rc, "listing entities");
    mdb_cursor_close(c);
    return out;
}

/* There is no index by type: an ingest would pay a B-tree insert for every new entity, while a
 * scan of the state table reads each record in order and skips other types by their first bytes
 * (state records are ~90 bytes, so a million entities are one sequential pass over ~90 MB). */
int mesh_store_states(mesh_txn *t, const char *type, int (*fn)(const mesh_state *st, void *ctx),
                      void *ctx)
{
    if (type != NULL && (type[0] == '\0' || strlen(type) > MESH_TYPE_BYTES_MAX)) return MESH_OK;
    return walk(t, DB_STATE, type, fn, ctx);
}

int mesh_store_conflicts(mesh_txn *t, int (*fn)(const mesh_state *st, void *ctx), void *ctx)
{
    return walk(t, DB_CONFLICTS, NULL, fn, ctx);
}

static uint64_t entries(mesh_txn *t, int db)
{
    MDB_stat st;
    mdb_stat(t->txn, t->s->dbi[db], &st);
    return st.ms_entries;
}

static int digest_stream(const mesh_stream *st, void *ctx)
{
    mesh_hash_state *h = ctx;
    uint8_t fixed[8 + 1];
    mesh_hash_update(h, st->author, MESH_KEY_BYTES);
    fixed[0] = (uint8_t)st->scope_len;
    mesh_hash_update(h, fixed, 1);
    mesh_hash_update(h, st->scope, st->scope_len);
    mesh_be64_put(fixed, st->seq);
    mesh_hash_update(h, fixed, 8);
    mesh_hash_update(h, st->tip, MESH_HASH_BYTES);
    return MESH_OK;
}

int mesh_store_counts_get(mesh_txn *t, mesh_store_counts *out)
{
    memset(out, 0, sizeof *out);
    out->ops = entries(t, DB_LOG);
    out->entities = entries(t, DB_STATE);
    out->conflicts = entries(t, DB_CONFLICTS);
    out->streams = entries(t, DB_STREAMS);
    out->pending = entries(t, DB_PENDING);
    int rc = mesh_store_meta_get_u64(t, "deleted", &out->deleted);
    if (rc != MESH_OK) return rc;
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", t->s->dir);
    if (stat(path, &sb) == 0) out->file_bytes = (uint64_t)sb.st_size;
    /* Streams are hash chains: their (author, scope, seq, tip) in sid order fix the op set. */
    mesh_hash_state h;
    mesh_hash_init(&h);
    rc = mesh_store_streams(t, digest_stream, &h);
    mesh_hash_final(&h, out->digest);
    return rc;
}
