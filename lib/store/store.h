/*
 * store.h - the op-log store: the only code that calls LMDB.
 *
 * Databases in one LMDB environment (docs/ARCHITECTURE.md, "On-disk layout"):
 *   log      entity(16) | rowVersion(4 BE) | author(32)  -> signature(64) | op bytes
 *   sops     stream id(8 BE) | seq(8 BE)                  -> log key(52)
 *   streams  stream id(8 BE)                              -> stream record (author, scope, tip)
 *   pending  stream id(8 BE) | seq(8 BE)                  -> signature(64) | op bytes (waiting for a gap)
 *   state    entity(16)                                   -> materialized state record
 *   bytype   type | 0x00 | entity(16)                     -> (empty)
 *   conflicts entity(16)                                  -> (empty)
 *   meta     name                                         -> value (magic, version, hlc, counters)
 *
 * Every op is kept (the campaign service audits each save); the state database is derived and
 * can always be rebuilt from the log. Writes run inside mesh_store_write(), which retries the
 * whole transaction after growing the map when LMDB reports it full.
 */
#ifndef MESH_STORE_H
#define MESH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/bundle.h"
#include "model/op.h"

typedef struct mesh_store mesh_store;
typedef struct mesh_txn mesh_txn;

#define MESH_STORE_LOG_KEY_BYTES (MESH_UUID_BYTES + 4 + MESH_KEY_BYTES)

typedef struct mesh_store_opts {
    bool create;                 /* create a new store (MESH_EEXIST if one is there) */
    bool no_sync;                /* skip fsync at commit: tests and simulations only */
    uint64_t map_bytes_initial;  /* 0: MESH_MAP_BYTES_INITIAL */
    uint64_t map_bytes_max;      /* 0: MESH_MAP_BYTES_MAX */
} mesh_store_opts;

/*
 * Opens (or creates) the store in directory `dir`; `opts` may be NULL (open, durable).
 * Returns MESH_OK, MESH_ENOTSTORE (no store there, or not a meshsync store), MESH_EEXIST
 * (create over an existing store), MESH_EVERSION, MESH_EIO, MESH_ENOMEM.
 */
int mesh_store_open(const char *dir, const mesh_store_opts *opts, mesh_store **out);
void mesh_store_close(mesh_store *s);

/* Runs fn in a write transaction and commits it durably. If LMDB reports the map full, the
 * transaction is aborted, the map doubled (up to the limit) and fn run again from scratch: fn
 * must compute everything from the transaction and its own inputs. A non-zero return from fn
 * aborts the transaction and is returned. Returns MESH_OK, fn's error, MESH_ENOSPC (disk full or
 * map limit reached), MESH_EIO. */
int mesh_store_write(mesh_store *s, int (*fn)(mesh_txn *txn, void *ctx), void *ctx);

/* Runs fn in a read-only snapshot. */
int mesh_store_read(mesh_store *s, int (*fn)(mesh_txn *txn, void *ctx), void *ctx);

/* ---- Meta ---- */
int mesh_store_meta_get_u64(mesh_txn *t, const char *name, uint64_t *val); /* 0 if absent */
int mesh_store_meta_put_u64(mesh_txn *t, const char *name, uint64_t val);
/* Byte-string metadata; get copies at most cap bytes and sets *len (MESH_ENOTFOUND if absent). */
int mesh_store_meta_get(mesh_txn *t, const char *name, void *buf, size_t cap, size_t *len);
int mesh_store_meta_put(mesh_txn *t, const char *name, const void *val, size_t len);

/* ---- Streams ---- */
typedef struct mesh_stream {
    uint64_t sid;
    uint8_t author[MESH_KEY_BYTES];
    char scope[MESH_SCOPE_BYTES_MAX + 1];
    size_t scope_len;
    uint64_t seq;                    /* ops held: 1..seq */
    uint8_t tip[MESH_HASH_BYTES];    /* hash of op `seq`; zeros when seq == 0 */
} mesh_stream;

/* Gets stream `sid`; MESH_ENOTFOUND if the store holds none of its ops. */
int mesh_store_stream_get(mesh_txn *t, uint64_t sid, mesh_stream *out);
/* Calls fn for each stream in sid order; a non-zero return stops and is returned. */
int mesh_store_streams(mesh_txn *t, int (*fn)(const mesh_stream *st, void *ctx), void *ctx);
/* Calls fn for ops seq_from.. of stream sid, in order, until fn returns non-zero (returned). The
 * record borrows from the snapshot until fn returns. */
int mesh_store_stream_ops(mesh_txn *t, uint64_t sid, uint64_t seq_from,
                          int (*fn)(const mesh_oprec *rec, uint64_t seq, void *ctx), void *ctx);

/* ---- Ingest ---- */
typedef enum mesh_ingest_mode {
    /* Keep what verifies; reject a stream from its first bad op on (sync from a peer). */
    MESH_INGEST_PARTIAL = 0,
    /* Any rejection fails the whole call, which the caller then aborts (bundle import). */
    MESH_INGEST_ATOMIC = 1,
    /* As ATOMIC, for ops this process has just signed with the node's own keys: their
     * signatures are not checked again, and their clocks do not count as seen from others
     * (the caller keeps the node's clock). See mesh_store_append. */
    MESH_INGEST_LOCAL = 2,
} mesh_ingest_mode;

/*
 * Verifies and stores `n` op records in transaction `t`: decodes each, groups them by stream,
 * checks each stream's hash chain from the stored tip and one author signature per run, parks
 * ops whose predecessor is missing in `pending`, applies what connects (including ops waiting in
 * `pending`) and merges every touched entity. Idempotent: records already held count as
 * duplicates. `rep` accumulates counts (it is not zeroed).
 * Returns MESH_OK (PARTIAL: even if some records were rejected), or in ATOMIC mode the first
 * rejection's code (MESH_ECORRUPT, MESH_ESIG, MESH_ECHAIN, MESH_ELIMIT); MESH_ENOSPC, MESH_EIO.
 */
int mesh_store_ingest(mesh_txn *t, const mesh_oprec *recs, size_t n, mesh_ingest_mode mode,
                      mesh_ingest_report *rep);

/*
 * Where a new op of this node in stream `sid` goes: *seq and tip get the stream's last seq and
 * tip hash (0 and zeros for a stream not begun), *clock the node's clock observed at `now_ms`
 * (its last own timestamp, or a newer one seen from others, or the wall clock: see
 * mesh_hlc_observe); the op's hlc is mesh_hlc_tick of it. Returns MESH_OK, MESH_ECORRUPT,
 * MESH_EIO.
 */
int mesh_store_append_point(mesh_txn *t, uint64_t sid, uint64_t now_ms, uint64_t *seq,
                            uint8_t tip[MESH_HASH_BYTES], uint64_t *clock);

/* Records `hlc` as the node's last own timestamp. Returns MESH_OK, MESH_ENOSPC, MESH_EIO. */
int mesh_store_clock_set(mesh_txn *t, uint64_t hlc);

/*
 * Writes a new op of this node: `op` has its content set (kind, type, entity, row_version,
 * base, merged, parents, body); this sets the rest as the next op of the stream of (`id`,
 * `scope`) (author, scope, seq, prev, and hlc: the node's clock observed at `now_ms`), signs it
 * with `id`, advances the node's clock and stores the op. If `hash` is not NULL it gets the
 * op's hash. Returns MESH_OK, MESH_EINVAL or MESH_ELIMIT (the op does not encode), or what
 * storing it returned (MESH_ENOSPC, MESH_EIO, MESH_EPERM under a team roster...).
 */
int mesh_store_append(mesh_txn *t, const mesh_identity *id, const char *scope, uint64_t now_ms,
                      mesh_op *op, uint8_t hash[MESH_HASH_BYTES]);

/* ---- Materialized state ---- */
#define MESH_STATE_DELETED 0x1u

typedef struct mesh_head {
    mesh_opref ref;
    uint64_t hlc;
} mesh_head;

typedef struct mesh_state {
    uint8_t entity[MESH_UUID_BYTES];
    char type[MESH_TYPE_BYTES_MAX + 1];
    uint32_t flags;
    uint32_t max_rv;                 /* highest rowVersion among the entity's ops */
    mesh_head winner;                /* max (rv, hlc, author); among deletes if deleted */
    uint32_t nparents;               /* the winner's parent references */
    uint8_t parents[MESH_PARENTS_MAX][MESH_UUID_BYTES];
    uint32_t nheads;                 /* ops no other op derives from; > 1 means conflict */
    mesh_head heads[MESH_HEADS_MAX];
} mesh_state;

static inline bool mesh_state_conflict(const mesh_state *s)
{
    return s->nheads > 1 && !(s->flags & MESH_STATE_DELETED);
}

/* Returns MESH_OK or MESH_ENOTFOUND. */
int mesh_store_state_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], mesh_state *out);

/* True if the entity or an ancestor (through winners' parent references, up to
 * MESH_ANCESTRY_DEPTH_MAX levels) is deleted. Ancestors this node does not hold are not deleted. */
int mesh_store_effectively_deleted(mesh_txn *t, const mesh_state *st, bool *deleted);

/* Gets one op by its log key parts; the record borrows from the snapshot. */
int mesh_store_op_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], const mesh_opref *ref,
                      mesh_oprec *out);

/* Calls fn for each op of an entity in (rowVersion, author) order. */
int mesh_store_entity_ops(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES],
                          int (*fn)(const mesh_oprec *rec, void *ctx), void *ctx);

/* Calls fn for each entity state: of one type (type != NULL) in id order, or of all types in
 * id order. */
int mesh_store_states(mesh_txn *t, const char *type, int (*fn)(const mesh_state *st, void *ctx),
                      void *ctx);

/* Calls fn for each entity with an open conflict, in id order. */
int mesh_store_conflicts(mesh_txn *t, int (*fn)(const mesh_state *st, void *ctx), void *ctx);

/* Rebuilds an entity's state from its ops in the log (the reference for the merge rule). */
int mesh_store_recompute(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], mesh_state *out);

/* ---- Status ---- */
typedef struct mesh_store_counts {
    uint64_t ops, entities, deleted, conflicts, streams, pending, file_bytes;
    uint8_t digest[MESH_HASH_BYTES];
} mesh_store_counts;

int mesh_store_counts_get(mesh_txn *t, mesh_store_counts *out);

#endif
