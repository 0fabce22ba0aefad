/*
 * node_int.h - the node handle's internals, shared by the API files and by the layers that drive
 * a node (the daemon's transport loop, the simulator).
 */
#ifndef MESH_NODE_INT_H
#define MESH_NODE_INT_H

#include "crypto/crypto.h"
#include "model/types.h"
#include "store/store.h"

struct mesh_node {
    mesh_store *store;
    mesh_identity id;
    mesh_types *types;
    char scope[MESH_SCOPE_BYTES_MAX + 1];
    size_t scope_len;
    uint64_t sid;                        /* this node's own stream id */
    char dir[4096];
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
};

static inline uint64_t mesh_node_now_ms(const mesh_node *n) { return n->clock_ms(n->clock_ctx); }

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

#endif
