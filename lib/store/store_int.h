/*
 * store_int.h - internals shared by the store's files: the environment, the databases, and the
 * translation of LMDB errors into meshsync ones.
 */
#ifndef MESH_STORE_INT_H
#define MESH_STORE_INT_H

#include <lmdb.h>

#include "store/store.h"

enum {
    DB_LOG,
    DB_SOPS,
    DB_STREAMS,
    DB_PENDING,
    DB_STATE,
    DB_BYTYPE,    /* the type index of formats 1-2; kept empty since format 3 */
    DB_CONFLICTS,
    DB_META,
    DB_PEERS,     /* per-peer sync state (peers.c); added after format 1 shipped */
    DB_OUTBOX,    /* the gateway's outbox (outbox.c); added after format 1 shipped */
    DB_COUNT
};

struct mesh_store {
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    uint64_t map_bytes_max;
    char dir[4096];
    bool sealed;                 /* op records are encrypted (seal.c) */
    struct mesh_seal *seal;      /* their key; NULL until mesh_store_seal_open() */
    struct mesh_ingest_pool *pool; /* the ingest's helper thread and scratch; NULL until used */
};

/* Ends the ingest helper thread and frees the scratch memory a store keeps (ingest.c). */
void mesh_ingest_pool_free(struct mesh_ingest_pool *pool);

struct mesh_txn {
    mesh_store *s;
    MDB_txn *txn;
    /* Set when an LMDB call reported the map full: mesh_store_write grows it and retries. */
    bool map_full;
    /* Per database: appending failed once in this transaction, so stop trying (see put_seq). */
    bool no_append[DB_COUNT];
    /* Per database: the cursor put_seq appends with, opened on first use. It stays on the last
     * key, so an append does not search the tree from its root; LMDB closes it with the
     * transaction. */
    MDB_cursor *append_cur[DB_COUNT];
    /* Decrypted op records of a sealed store, freed when the transaction ends (seal.c). */
    struct mesh_rec_arena *arena;
};

/*
 * Puts a key that is usually larger than every key in `db` (time-ordered UUIDv7 entities, stream
 * sequence numbers). MDB_APPEND fills pages completely instead of splitting them in half, which
 * halves the pages a bulk ingest writes; when a key is not the largest, LMDB refuses the append
 * and we fall back to a normal put (and stop trying for the rest of the transaction).
 * Returns an LMDB code.
 */
static inline int put_seq(mesh_txn *t, int db, MDB_val *k, MDB_val *v, unsigned flags)
{
    if (!t->no_append[db]) {
        if (t->append_cur[db] == NULL) {
            int crc = mdb_cursor_open(t->txn, t->s->dbi[db], &t->append_cur[db]);
            if (crc != 0) return crc;
        }
        int rc = mdb_cursor_put(t->append_cur[db], k, v, flags | MDB_APPEND);
        if (rc != MDB_KEYEXIST) return rc;
        t->no_append[db] = true;
    }
    return mdb_put(t->txn, t->s->dbi[db], k, v, flags);
}

/* Translates an LMDB return code (non-zero) for the operation `what`. */
int mesh_lmdb_err(mesh_txn *t, int rc, const char *what);

static inline MDB_val mval(const void *p, size_t n)
{
    MDB_val v = {.mv_size = n, .mv_data = (void *)p};
    return v;
}

/* Log key: entity | rowVersion (BE) | author. */
static inline void log_key(uint8_t k[MESH_STORE_LOG_KEY_BYTES], const uint8_t entity[16],
                           uint32_t rv, const uint8_t author[32])
{
    memcpy(k, entity, 16);
    mesh_be32_put(k + 16, rv);
    memcpy(k + 20, author, 32);
}

/*
 * The stream index (DB_SOPS) lists each stream's ops in seq order, for sending them oldest first.
 * A record maps (sid, first seq), both big-endian, to up to MESH_SOPS_CHUNK_OPS entries, one per
 * consecutive op from that seq: the op's entity and rowVersion (BE), which with the stream's
 * author make its log key. One B-tree entry per chunk instead of per op is most of what a bulk
 * ingest saves by it. A format-1 record holds one whole log key (52 bytes, which no chunk of
 * 20-byte entries can be) and reads as a chunk of one.
 */
#define MESH_SOPS_CHUNK_OPS 32u
#define MESH_SOPS_ENTRY_BYTES (MESH_UUID_BYTES + 4)

/* The key of the stream index and of pending: stream id | seq, big-endian. */
static inline void sid_seq_key(uint8_t k[16], uint64_t sid, uint64_t seq)
{
    mesh_be64_put(k, sid);
    mesh_be64_put(k + 8, seq);
}

/* Positions `c` (on DB_SOPS) on the chunk of stream `sid` that holds `seq`, or else on the
 * stream's first chunk after it; *k and *v are that record and *idx the position of `seq` in it
 * (0 for a chunk after it). Returns MESH_OK, MESH_ENOTFOUND (no chunk of the stream at or after
 * `seq`), MESH_ECORRUPT (a damaged record), MESH_EIO. */
int mesh_sops_seek(mesh_txn *t, MDB_cursor *c, uint64_t sid, uint64_t seq, MDB_val *k,
                   MDB_val *v, size_t *idx);

/* Validates a chunk record read from DB_SOPS: returns its op count, or 0 when damaged. */
size_t mesh_sops_count(const MDB_val *k, const MDB_val *v);

/* The log key of entry `idx` of chunk `v` of a stream written by `author`. */
void mesh_sops_log_key(const MDB_val *v, size_t idx, const uint8_t author[MESH_KEY_BYTES],
                       uint8_t out[MESH_STORE_LOG_KEY_BYTES]);

/* Replaces the chunk under cursor `c` (record key `k`) by `len` bytes of entries. Returns MESH_OK
 * or an LMDB failure translated. */
int mesh_sops_rewrite(mesh_txn *t, MDB_cursor *c, const MDB_val *k, const void *ents, size_t len);

/* Indexes ops first_seq .. first_seq+n-1 of stream `sid`, whose entries (entity | rowVersion)
 * are ents[0..n), right after the stream's current tip (first_seq - 1): fills the tip's chunk,
 * then writes new ones. Returns MESH_OK or an LMDB failure translated. */
int mesh_sops_append(mesh_txn *t, uint64_t sid, uint64_t first_seq,
                     const uint8_t (*ents)[MESH_SOPS_ENTRY_BYTES], size_t n);

/* Writes a stream record (store.c). */
int mesh_store_stream_put(mesh_txn *t, const mesh_stream *st);

/* State record codec (merge.c). */
int mesh_state_encode(const mesh_state *st, uint8_t *out, size_t cap, size_t *len);
int mesh_state_decode(const uint8_t *p, size_t len, const uint8_t entity[16], mesh_state *st);
/* Whether state record p[0..len) is of type `type` (tl bytes), read from its leading bytes
 * without decoding the rest: how a list by type skips the others cheaply. */
bool mesh_state_type_is(const uint8_t *p, size_t len, const char *type, size_t tl);
#define MESH_STATE_BYTES_MAX                                                                      \
    (8 + MESH_TYPE_BYTES_MAX + 4 + 44 + 1 + MESH_PARENTS_MAX * 16 + 1 + MESH_HEADS_MAX * 44)

/* Writes `st` to the state and conflicts databases, replacing `old` (NULL if new), and
 * keeps the deleted-entity counter (merge.c). */
int mesh_state_store(mesh_txn *t, const mesh_state *old, const mesh_state *st);

/* Adds `delta` (+1 or -1) to the count of deleted entities in meta, never below 0 (merge.c). */
int mesh_store_deleted_add(mesh_txn *t, int delta);

/* Merges one newly stored op into its entity's state (merge.c). */
int mesh_state_apply(mesh_txn *t, const mesh_op *op, const uint8_t *fresh, size_t fresh_len);

/* The state record the op alone gives (what mesh_state_apply inserts for an entity not held
 * yet): pure, so an ingest prepares it off the storing thread. Returns its length. */
#define MESH_STATE_FRESH_BYTES_MAX                                                                \
    (3 + MESH_TYPE_BYTES_MAX + 4 + 1 + MESH_PARENTS_MAX * 16 + 1 + 44)
size_t mesh_state_fresh(const mesh_op *op, uint8_t out[MESH_STATE_FRESH_BYTES_MAX]);

#endif
