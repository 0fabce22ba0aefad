/*
 * session.h - the sans-IO sync engine: one sync session between this node and one peer.
 *
 * The engine owns no socket, clock or randomness. The driver (the daemon's ZeroMQ loop, or the
 * simulator) feeds it each frame received from the peer with mesh_session_recv(), asks it for
 * frames to send with mesh_session_send(), and wakes it at mesh_session_expiry(). The engine
 * reads and writes the node's store directly (that is its job: store writes are its output).
 *
 * A session is single-shot (proto/PROTOCOL.md, "Sync session"): both sides send HELLO with their
 * version vector (a delta against what the peer already knows, when both agree on it), each
 * streams the ops the other lacks, oldest first per stream, in bounded OPS frames, then DONE.
 * Frames are ZeroMQ messages: the transport preserves message boundaries, so a frame is one
 * self-delimiting msgpack value and the engine never sees partial frames.
 * Received ops are verified (hash chain, one signature per stream run) and stored in large
 * transactions as they arrive, so an interrupted session keeps what it got and the next one
 * re-sends only what is missing. A duplicated or retried frame changes nothing.
 */
#ifndef MESH_SYNC_SESSION_H
#define MESH_SYNC_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"
#include "store/store.h"

typedef struct mesh_session mesh_session;

/* Decides whether the peer may hold stream (author, scope): the access-control hook. NULL
 * allows every stream. A sender never offers a stream the peer may not hold, and a receiver
 * rejects one it may not hold itself. */
typedef bool (*mesh_scope_filter)(const uint8_t author[32], const char *scope, size_t scope_len,
                                  void *ctx);

typedef struct mesh_session_opts {
    mesh_store *store;              /* borrowed; must outlive the session */
    uint8_t self[32];               /* this node's public key */
    uint8_t peer[32];               /* the peer's public key, as authenticated by the transport */
    bool initiator;                 /* the side that dialled: it speaks first */
    uint32_t idle_timeout_ms;       /* 0: MESH_SESSION_IDLE_MS_DEFAULT */
    uint32_t frame_bytes_max;       /* 0: MESH_FRAME_BYTES_DEFAULT */
    uint32_t frame_ops_max;         /* 0: MESH_FRAME_OPS_MAX */
    uint32_t ingest_batch_ops;      /* ops per store transaction; 0: MESH_INGEST_OPS_DEFAULT */
    mesh_scope_filter peer_may_hold; /* NULL: everything */
    mesh_scope_filter self_may_hold; /* NULL: everything */
    void *filter_ctx;
} mesh_session_opts;

/* Reads this node's version vector and what it last agreed with the peer (lib/store/peers.h).
 * Returns MESH_OK, MESH_EINVAL (no store, or a limit outside the protocol's: frame_bytes_max
 * 256..MESH_FRAME_BYTES_MAX, frame_ops_max <= MESH_FRAME_OPS_MAX, ingest_batch_ops <=
 * MESH_INGEST_BATCH_MAX), MESH_ELIMIT (the node holds more than MESH_VECTOR_ENTRIES_MAX streams),
 * MESH_ENOMEM, MESH_EIO or MESH_ECORRUPT (reading the store). */
int mesh_session_new(const mesh_session_opts *o, uint64_t now_ms, mesh_session **out);
/* Frees the session. One still active first stores the ops it buffered (an interrupted session
 * loses nothing it received). NULL is ignored. */
void mesh_session_free(mesh_session *s);

/* Frees the session without storing the ops it buffered: what a crash at this instant loses
 * (the simulator models process crashes with it). */
void mesh_session_abort(mesh_session *s);

/*
 * Feeds one frame received from the peer. May ingest ops into the store.
 * Returns MESH_OK; MESH_EPROTO or MESH_EVERSION when the peer broke the protocol (the session
 * is now failed: call mesh_session_send() once more to get the ERROR frame for the peer, then
 * drop the session); MESH_ENOSPC or MESH_EIO when the local store failed (failed likewise);
 * MESH_ECLOSED when the frame is the peer's ERROR (the session is failed, its code and message
 * are in the stats; MESH_EVERSION instead if the peer reported a version mismatch) or when the
 * session is already over. A frame already received (same frame number) is ignored: MESH_OK.
 */
int mesh_session_recv(mesh_session *s, const uint8_t *frame, size_t len, uint64_t now_ms);

/*
 * Writes the next frame to send into `out` (which it resets first; its cap must be at least
 * frame_bytes_max). Returns MESH_OK (a frame is in `out`), MESH_EAGAIN (nothing to send until a
 * frame arrives or the expiry passes), MESH_ECLOSED (the session is over: nothing more to send),
 * MESH_EINVAL (out's cap is too small). MESH_EIO, MESH_ECORRUPT, MESH_ENOMEM or MESH_ELIMIT (an
 * op larger than frame_bytes_max allows) when reading the local store failed: the session is
 * failed, and the next call returns the ERROR frame for the peer.
 */
int mesh_session_send(mesh_session *s, mesh_buf *out, uint64_t now_ms);

/* The time (ms, same clock as now_ms) at which mesh_session_handle_expiry() must be called;
 * UINT64_MAX if none. */
uint64_t mesh_session_expiry(const mesh_session *s);

/* Returns MESH_OK, or MESH_ETIMEDOUT when no frame went either way for the idle timeout (the
 * session is failed; what it received so far is stored; the next send returns an ERROR frame,
 * which the driver may send or drop). */
int mesh_session_handle_expiry(mesh_session *s, uint64_t now_ms);

typedef enum mesh_session_state {
    MESH_SESSION_ACTIVE = 0,
    MESH_SESSION_DONE = 1,      /* both sides sent DONE and everything received is stored */
    MESH_SESSION_FAILED = 2,
} mesh_session_state;

mesh_session_state mesh_session_state_get(const mesh_session *s);

typedef struct mesh_session_stats {
    /* ops_rejected: failed verification, or undecodable, refused by self_may_hold, or after a
     * rejected op of the same stream in this session. */
    uint64_t ops_sent, ops_received, ops_applied, ops_duplicate, ops_rejected, ops_pending;
    uint64_t bytes_sent, bytes_received, frames_sent, frames_received;
    uint32_t round_trips;           /* request/response exchanges this side waited for */
    int error;                      /* MESH_E* of the failure, 0 if none */
    char error_msg[256];
    /* Why the first rejected op was rejected ("" if none was): the store's verdict (a bad
     * signature, a broken chain, the team roster's rules) or the scope filter's. */
    char reject_msg[256];
} mesh_session_stats;

void mesh_session_stats_get(const mesh_session *s, mesh_session_stats *out);

#endif
