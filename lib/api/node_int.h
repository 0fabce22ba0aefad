/*
 * node_int.h - the node handle's internals, shared by the API files and by the layers that drive
 * a node (the daemon's transport loop, the simulator).
 */
#ifndef MESH_NODE_INT_H
#define MESH_NODE_INT_H

#include "crypto/atrest.h"
#include "crypto/crypto.h"
#include "model/types.h"
#include "store/store.h"

struct mesh_node {
    mesh_store *store;
    mesh_identity id;
    /* On a node whose store is encrypted: the key that seals its identity files (crypto.h). */
    bool wrapped;
    uint8_t wrap[MESH_SEAL_KEY_BYTES];
    mesh_types *types;
    char scope[MESH_SCOPE_BYTES_MAX + 1];
    size_t scope_len;
    uint64_t sid;                        /* this node's own stream id */
    char dir[4096];
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
};

static inline uint64_t mesh_node_now_ms(const mesh_node *n) { return n->clock_ms(n->clock_ctx); }

/* Reads a key file of this node (its identity, or the team authority's key) at `path`: sealed
 * under the node's wrap key on an encrypted node; one still in clear there is sealed on the way.
 * Returns as mesh_identity_load. */
int mesh_node_key_load(const mesh_node *n, const char *path, mesh_identity *id);

/* Paths inside a data directory. */
#define MESH_NODE_IDENTITY_FILE "identity.key"
#define MESH_NODE_TYPES_FILE "types.json"
#define MESH_NODE_STORE_DIR "store"

/*
 * Signs and stores a new op of this node's own stream inside write transaction `t`: fills in
 * author, scope, seq, prev and hlc, encodes, signs and ingests it. The caller sets kind, type,
 * entity, row_version, base, merged, parents and body.
 */
int mesh_node_append(mesh_node *n, mesh_txn *t, mesh_op *op);

/* ---- System ops (system.c): receipts and downloaded configuration in this node's stream ---- */

/* System entity types. Types starting with '_' are not configured entity types: they are
 * written only through mesh_sysbatch, have no parents and are not listed by mesh_list() unless
 * asked for by name. */
#define MESH_TYPE_RECEIPT "_receipt"
#define MESH_TYPE_CONFIG "_config"

/* The entity id of the receipt for op (entity, rv, author): a version-8 UUID made of the first
 * 8 bytes of the entity id (for B-tree locality) and 8 bytes of BLAKE2b("meshsync/receipt/v1" |
 * entity | rv | author), so every node finds an op's receipt without an index. */
void mesh_receipt_entity_id(const uint8_t entity[MESH_UUID_BYTES], uint32_t rv,
                            const uint8_t author[MESH_KEY_BYTES], uint8_t out[MESH_UUID_BYTES]);

/* The entity id of downloaded configuration `key` (e.g. "forms/household-registration"). */
void mesh_config_entity_id(const char *key, uint8_t out[MESH_UUID_BYTES]);

/*
 * A batch of system ops appended to this node's own stream inside one write transaction:
 * every op is signed, and the batch is ingested in one call (one signature check for the run
 * instead of one per op). Use: put any number of times, then flush, all in the same
 * transaction; a batch that is not flushed before the transaction commits is lost with nothing
 * written (call mesh_sysbatch_reset before reusing it in another transaction).
 */
typedef struct mesh_sysbatch mesh_sysbatch;

/* Returns MESH_OK or MESH_ENOMEM. */
int mesh_sysbatch_new(mesh_node *n, mesh_sysbatch **out);
void mesh_sysbatch_free(mesh_sysbatch *b);
void mesh_sysbatch_reset(mesh_sysbatch *b);
size_t mesh_sysbatch_count(const mesh_sysbatch *b);

/* Adds a save of system entity `entity` of `type` (starts with '_') with body `body` (a
 * canonical msgpack map): a create if the store has no such entity, else an update based on
 * the current winner; nothing (*changed = false) if the body equals the current winner's.
 * A second put of an entity already in the batch flushes the batch first. Returns MESH_OK,
 * MESH_EINVAL (the entity exists with another type), MESH_ELIMIT, MESH_ENOSPC, MESH_EIO. */
int mesh_sysbatch_put(mesh_sysbatch *b, mesh_txn *t, const char *type,
                      const uint8_t entity[MESH_UUID_BYTES], const uint8_t *body, size_t body_len,
                      bool *changed);

/* Signs nothing more: ingests the batch's ops into the store in transaction `t`. Returns
 * MESH_OK, MESH_ENOSPC, MESH_EIO, MESH_EINTERNAL. */
int mesh_sysbatch_flush(mesh_sysbatch *b, mesh_txn *t);

#endif
