/*
 * peers.h - per-peer sync state: the version vectors this node and a peer last agreed on, so the
 * next session's HELLO carries only what changed (proto/PROTOCOL.md, "Version vectors").
 *
 * Database `peers`: peer public key (32) -> record
 *   format u8 (=1) | synced_ms u64 BE | n_ours u32 BE | n_theirs u32 BE
 *   | n_ours x (sid u64 BE | seq u64 BE) | n_theirs x (sid u64 BE | seq u64 BE)
 * Each vector is sorted by stream id. At most MESH_PEERS_MAX peers are kept: recording a new one
 * beyond that forgets the one synced least recently (it only costs that peer a full vector).
 */
#ifndef MESH_STORE_PEERS_H
#define MESH_STORE_PEERS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define MESH_PEER_ENTRY_BYTES 16

typedef struct mesh_peer_state {
    uint64_t synced_ms;          /* the caller's clock at the last completed session */
    /* Our vector as the peer holds it (the base of the deltas we send). */
    const uint8_t *ours;         /* ours_count x MESH_PEER_ENTRY_BYTES */
    size_t ours_count;
    /* The peer's vector as we hold it (the base of the deltas we receive). */
    const uint8_t *theirs;
    size_t theirs_count;
} mesh_peer_state;

/* Gets the state kept for `peer`. The vectors borrow from the transaction's snapshot and stay
 * valid until it ends (read) or until the next write in it. Returns MESH_OK, MESH_ENOTFOUND,
 * MESH_ECORRUPT (a damaged record: callers treat it as absent), MESH_EIO. */
int mesh_store_peer_get(mesh_txn *t, const uint8_t peer[MESH_KEY_BYTES], mesh_peer_state *out);

/* Replaces the state kept for `peer`; may forget the least recently synced peer to stay within
 * MESH_PEERS_MAX. Returns MESH_OK, MESH_ELIMIT (a vector above MESH_VECTOR_ENTRIES_MAX),
 * MESH_ENOSPC, MESH_EIO. */
int mesh_store_peer_put(mesh_txn *t, const uint8_t peer[MESH_KEY_BYTES],
                        const mesh_peer_state *st);

/* Forgets `peer` (absent is fine). Returns MESH_OK, MESH_EIO. */
int mesh_store_peer_forget(mesh_txn *t, const uint8_t peer[MESH_KEY_BYTES]);

#endif
