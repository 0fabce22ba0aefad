/*
 * seal_int.h - the store's internal side of at-rest encryption (seal.c, see seal.h): writing
 * and reading op records of the `log` and `pending` databases, and the per-transaction memory
 * that decrypted records live in.
 *
 * LMDB hands out borrowed pointers into the map; a sealed record has to be decrypted somewhere
 * else. Decrypted records go into an arena that belongs to the transaction and is wiped and
 * freed when it ends (mesh_store_write/read), so a record from mesh_store_op_get() stays valid
 * for the whole transaction, as a clear one does. Iterations (stream and entity ops) release
 * each record's memory when their callback returns, so a scan of a million ops does not hold a
 * million records; a record obtained inside such a callback lives until the callback returns.
 */
#ifndef MESH_STORE_SEAL_INT_H
#define MESH_STORE_SEAL_INT_H

#include "store/seal.h"
#include "store/store_int.h"

/* Bytes a record of this store adds to the signature and op bytes (0 when not sealed). */
size_t mesh_store_rec_overhead(const mesh_txn *t);

/* Writes record (sig, op) as stored under `key` of database `db` into `out`, which has
 * MESH_SIG_BYTES + op_len + mesh_store_rec_overhead(t) bytes (LMDB's reserved space). Returns
 * MESH_OK or MESH_EPERM (a sealed store opened without its key). */
int mesh_store_rec_seal(mesh_txn *t, int db, const MDB_val *key, const uint8_t *sig,
                        const uint8_t *op, size_t op_len, uint8_t *out);

/* Reads the record `val` stored under `key` of database `db`: borrowed from LMDB when the store
 * is clear, decrypted into the transaction's arena when sealed. Returns MESH_OK, MESH_ECORRUPT
 * (too short, or failing authentication), MESH_EPERM (a sealed store opened without its key),
 * MESH_ENOMEM. */
int mesh_store_rec_open(mesh_txn *t, int db, const MDB_val *key, const MDB_val *val,
                        mesh_oprec *out);

/* A position in the transaction's arena: records decrypted after it are released together. */
typedef struct mesh_rec_mark {
    void *chunk;
    size_t used;
} mesh_rec_mark;

mesh_rec_mark mesh_store_rec_mark(mesh_txn *t);
void mesh_store_rec_release(mesh_txn *t, mesh_rec_mark m);

/* Wipes and frees the transaction's arena (store.c, when a transaction ends). */
void mesh_store_rec_fini(mesh_txn *t);

/* Notes at open whether the store is sealed (store.c); a sealed store refuses to read or write
 * op records until mesh_store_seal_open(). A mesh_store_read() callback. */
int mesh_store_seal_probe(mesh_txn *t, void *ctx);

/* Wipes the key (store.c, at close). */
void mesh_store_seal_close(mesh_store *s);

#endif
