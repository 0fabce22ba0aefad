/*
 * peers.c - This file implements the per-peer sync state (peers.h) in the `peers` database.
 */
#include "store/peers.h"

#include "store/store_int.h"

#define PEER_FORMAT 1u
#define PEER_HEAD_BYTES (1 + 8 + 4 + 4)

int mesh_store_peer_get(mesh_txn *t, const uint8_t peer[MESH_KEY_BYTES], mesh_peer_state *out)
{
    MDB_val k = mval(peer, MESH_KEY_BYTES), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_PEERS], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading a peer's sync state");
    const uint8_t *p = v.mv_data;
    if (v.mv_size < PEER_HEAD_BYTES || p[0] != PEER_FORMAT)
        return mesh_err(MESH_ECORRUPT, "a peer's sync state record is damaged");
    uint32_t no = mesh_be32_get(p + 9), nt = mesh_be32_get(p + 13);
    if (no > MESH_VECTOR_ENTRIES_MAX || nt > MESH_VECTOR_ENTRIES_MAX ||
        v.mv_size != PEER_HEAD_BYTES + ((size_t)no + nt) * MESH_PEER_ENTRY_BYTES)
        return mesh_err(MESH_ECORRUPT, "a peer's sync state record has a bad length");
    out->synced_ms = mesh_be64_get(p + 1);
    out->ours = p + PEER_HEAD_BYTES;
    out->ours_count = no;
    out->theirs = out->ours + (size_t)no * MESH_PEER_ENTRY_BYTES;
    out->theirs_count = nt;
    return MESH_OK;
}

/* Forgets the least recently synced peer other than `keep`. */
static int evict_one(mesh_txn *t, const uint8_t keep[MESH_KEY_BYTES])
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_PEERS], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "listing peers");
    uint8_t oldest[MESH_KEY_BYTES];
    uint64_t oldest_ms = UINT64_MAX;
    bool found = false;
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != MESH_KEY_BYTES || memcmp(k.mv_data, keep, MESH_KEY_BYTES) == 0) continue;
        /* A damaged record counts as the oldest: it is useless anyway. */
        uint64_t ms = v.mv_size >= PEER_HEAD_BYTES ? mesh_be64_get((uint8_t *)v.mv_data + 1) : 0;
        if (!found || ms < oldest_ms) {
            memcpy(oldest, k.mv_data, MESH_KEY_BYTES);
            oldest_ms = ms;
            found = true;
        }
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) return mesh_lmdb_err(t, rc, "listing peers");
    return found ? mesh_store_peer_forget(t, oldest) : MESH_OK;
}

int mesh_store_peer_put(mesh_txn *t, const uint8_t peer[MESH_KEY_BYTES], const mesh_peer_state *st)
{
    if (st->ours_count > MESH_VECTOR_ENTRIES_MAX || st->theirs_count > MESH_VECTOR_ENTRIES_MAX)
        return mesh_err(MESH_ELIMIT, "a peer vector above %u streams", MESH_VECTOR_ENTRIES_MAX);
    MDB_val k = mval(peer, MESH_KEY_BYTES), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_PEERS], &k, &v);
    if (rc == MDB_NOTFOUND) {
        MDB_stat ms;
        mdb_stat(t->txn, t->s->dbi[DB_PEERS], &ms);
        if (ms.ms_entries >= MESH_PEERS_MAX && (rc = evict_one(t, peer)) != MESH_OK) return rc;
    } else if (rc != 0) {
        return mesh_lmdb_err(t, rc, "reading a peer's sync state");
    }
    v.mv_size = PEER_HEAD_BYTES + (st->ours_count + st->theirs_count) * MESH_PEER_ENTRY_BYTES;
    rc = mdb_put(t->txn, t->s->dbi[DB_PEERS], &k, &v, MDB_RESERVE);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing a peer's sync state");
    uint8_t *p = v.mv_data;
    p[0] = PEER_FORMAT;
    mesh_be64_put(p + 1, st->synced_ms);
    mesh_be32_put(p + 9, (uint32_t)st->ours_count);
    mesh_be32_put(p + 13, (uint32_t)st->theirs_count);
    size_t no = st->ours_count * MESH_PEER_ENTRY_BYTES;
    if (no) memcpy(p + PEER_HEAD_BYTES, st->ours, no);
    if (st->theirs_count)
        memcpy(p + PEER_HEAD_BYTES + no, st->theirs, st->theirs_count * MESH_PEER_ENTRY_BYTES);
    return MESH_OK;
}

int mesh_store_peer_forget(mesh_txn *t, const uint8_t peer[MESH_KEY_BYTES])
{
    MDB_val k = mval(peer, MESH_KEY_BYTES);
    int rc = mdb_del(t->txn, t->s->dbi[DB_PEERS], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) return mesh_lmdb_err(t, rc, "forgetting a peer");
    return MESH_OK;
}
