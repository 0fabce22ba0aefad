/*
 * outbox.h - the gateway's persistent state (docs/GATEWAY.md, "Persistence"): for every op it
 * forwards to the campaign service, whether it is pending, sent (in flight: outcome unknown until
 * a search confirms it), confirmed (with the server's rowVersion) or rejected (with the server's
 * error); for every entity, what the server holds of it (server id, rowVersion, deleted); and how
 * far the gateway has scanned each stream of the op-log.
 *
 * Database `outbox` (one LMDB database, records told apart by a one-byte key prefix):
 *   'P' | entity(16) | rowVersion(4 BE) | author(32) -> op record   (pending or sent: live)
 *   'D' | entity(16) | rowVersion(4 BE) | author(32) -> op record   (confirmed or rejected: done)
 *   'E' | entity(16)                                 -> entity record
 *   'S' | stream id(8 BE)                            -> scanned seq (8 BE)
 *   'M' | name                                       -> u64 (8 BE): counters, download cursors
 * Live and done ops have different prefixes so that a restart loads only the live ones.
 *
 * Every state change the gateway makes is one call sequence inside one write transaction
 * (mesh_store_write): a crash at any point leaves either the old or the new state.
 */
#ifndef MESH_STORE_OUTBOX_H
#define MESH_STORE_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Text fields of the server's answers that the outbox keeps (error codes and messages, server
 * ids): the contracts bound ids at 64 bytes; messages are cut to fit. */
#define MESH_OUTBOX_ID_BYTES_MAX 64
#define MESH_OUTBOX_CODE_BYTES_MAX 64
#define MESH_OUTBOX_MSG_BYTES_MAX 400

enum mesh_outbox_state {
    MESH_OUTBOX_PENDING = 1,   /* known, not sent yet (or to be sent again) */
    MESH_OUTBOX_SENT = 2,      /* sent at least once; a search decides whether it applied */
    MESH_OUTBOX_CONFIRMED = 3, /* the server holds its effect (done) */
    MESH_OUTBOX_REJECTED = 4,  /* the server refused it, or it cannot be sent (done) */
};

/* How the op was last sent (what a restart needs to confirm it). */
enum mesh_outbox_action {
    MESH_OUTBOX_ACT_NONE = 0,
    MESH_OUTBOX_ACT_CREATE = 1,
    MESH_OUTBOX_ACT_UPDATE = 2,
    MESH_OUTBOX_ACT_DELETE = 3,
};

typedef struct mesh_outbox_op {
    uint8_t entity[MESH_UUID_BYTES];
    uint32_t row_version;
    uint8_t author[MESH_KEY_BYTES];
    uint8_t state;                 /* enum mesh_outbox_state */
    uint8_t kind;                  /* the op's kind (create, update, delete) */
    uint8_t action;                /* enum mesh_outbox_action: how it was (last) sent */
    uint16_t attempt;              /* sends so far */
    uint64_t hlc;                  /* the op's hybrid logical clock (merge order) */
    uint32_t expect_rv;            /* the server rowVersion the last send should produce */
    uint32_t server_rv;            /* confirmed: the server rowVersion it produced */
    char error_code[MESH_OUTBOX_CODE_BYTES_MAX + 1];   /* rejected: the server's code */
    char error_msg[MESH_OUTBOX_MSG_BYTES_MAX + 1];     /* rejected: the server's message */
} mesh_outbox_op;

#define MESH_OUTBOX_ENT_ON_SERVER 0x1u   /* the server holds the entity (its create confirmed) */
#define MESH_OUTBOX_ENT_DELETED 0x2u     /* the server holds it deleted */
#define MESH_OUTBOX_ENT_REFUSED 0x4u     /* its create was rejected: nothing more can be sent */
#define MESH_OUTBOX_ENT_REASSERT 0x8u    /* a write restoring the mesh winner is in flight */

typedef struct mesh_outbox_ent {
    uint8_t entity[MESH_UUID_BYTES];
    char type[MESH_TYPE_BYTES_MAX + 1];
    uint32_t flags;                      /* MESH_OUTBOX_ENT_* */
    uint32_t server_rv;                  /* the server's rowVersion as last confirmed; 0: none */
    char server_id[MESH_OUTBOX_ID_BYTES_MAX + 1];
    /* The op whose body the server holds (the last one forwarded), for the merge order. */
    uint32_t fwd_rv;
    uint64_t fwd_hlc;
    uint8_t fwd_author[MESH_KEY_BYTES];
    /* The largest op of the entity (merge order) the gateway has seen: the mesh winner of a
     * live entity. When the server holds another op's body, the winner is re-sent. */
    uint32_t max_rv;
    uint64_t max_hlc;
    uint8_t max_author[MESH_KEY_BYTES];
    uint32_t reassert_rv;                /* REASSERT: the server rowVersion it should produce */
    /* REFUSED: why (the create's rejection), for the receipts of the entity's children. */
    char error_code[MESH_OUTBOX_CODE_BYTES_MAX + 1];
    char error_msg[MESH_OUTBOX_MSG_BYTES_MAX + 1];
} mesh_outbox_ent;

/* Gets op (entity, rv, author), live or done. Returns MESH_OK, MESH_ENOTFOUND, MESH_ECORRUPT,
 * MESH_EIO. */
int mesh_outbox_op_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], uint32_t rv,
                       const uint8_t author[MESH_KEY_BYTES], mesh_outbox_op *out);

/* What the caller knows of an op's stored state before a put: nothing (look it up), that there
 * is no record, or the stored state (enum mesh_outbox_state). */
#define MESH_OUTBOX_PREV_UNKNOWN 0
#define MESH_OUTBOX_PREV_NONE 0xff

/* Deltas of the per-state counters, indexed by enum mesh_outbox_state (0 unused). */
typedef struct mesh_outbox_deltas {
    int64_t d[5];
} mesh_outbox_deltas;

/*
 * Stores an op record under the prefix its state implies (live: pending/sent; done:
 * confirmed/rejected), removing it from the other. `prev` is MESH_OUTBOX_PREV_UNKNOWN (looked
 * up), MESH_OUTBOX_PREV_NONE or the stored state: knowing it saves two lookups. With `deltas`
 * the counter changes are added there for one mesh_outbox_deltas_apply() per transaction
 * instead of being written per op. Returns MESH_OK, MESH_ENOSPC, MESH_EIO.
 */
int mesh_outbox_op_put(mesh_txn *t, const mesh_outbox_op *op, uint8_t prev,
                       mesh_outbox_deltas *deltas);

/* Adds the accumulated counter deltas (and zeroes them). */
int mesh_outbox_deltas_apply(mesh_txn *t, mesh_outbox_deltas *deltas);

/* Calls fn for every live op (pending or sent) in key order; a non-zero return stops and is
 * returned. Records damaged on disk are MESH_ECORRUPT. */
int mesh_outbox_live_ops(mesh_txn *t, int (*fn)(const mesh_outbox_op *op, void *ctx), void *ctx);

/* Calls fn for every done op (confirmed or rejected) of one entity, in (rv, author) order. */
int mesh_outbox_done_ops(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES],
                         int (*fn)(const mesh_outbox_op *op, void *ctx), void *ctx);

/* Gets, stores and iterates entity records. Returns MESH_OK, MESH_ENOTFOUND (get),
 * MESH_ECORRUPT, MESH_ENOSPC, MESH_EIO. */
int mesh_outbox_ent_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], mesh_outbox_ent *out);
int mesh_outbox_ent_put(mesh_txn *t, const mesh_outbox_ent *ent);
int mesh_outbox_ents(mesh_txn *t, int (*fn)(const mesh_outbox_ent *ent, void *ctx), void *ctx);

/* The last seq of stream `sid` the gateway has scanned (0 if none), and its update. */
int mesh_outbox_cursor_get(mesh_txn *t, uint64_t sid, uint64_t *seq);
int mesh_outbox_cursor_put(mesh_txn *t, uint64_t sid, uint64_t seq);

/* Named u64 values (0 if absent): counters and download cursors. Names are at most 64 bytes. */
int mesh_outbox_meta_get(mesh_txn *t, const char *name, uint64_t *val);
int mesh_outbox_meta_put(mesh_txn *t, const char *name, uint64_t val);
int mesh_outbox_meta_add(mesh_txn *t, const char *name, int64_t delta);

/* Counts of ops by state, kept as counters (no scan). */
typedef struct mesh_outbox_counts {
    uint64_t pending, sent, confirmed, rejected;
} mesh_outbox_counts;

int mesh_outbox_counts_get(mesh_txn *t, mesh_outbox_counts *out);

#endif
