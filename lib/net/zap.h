/*
 * zap.h - the ZAP handler (ZeroMQ RFC 27) that decides which CURVE clients the node's ROUTER
 * admits: exactly the roster's members. An admitted connection is tagged with the member's
 * Ed25519 key in hex as its ZMQ "User-Id", which mesh_wire_recv() reads back from every message.
 *
 * The handler is a REP socket on inproc://zeromq.zap.01 in the transport's context, served by
 * the event loop itself (no thread): a handshake waits at most one loop turn for its verdict.
 */
#ifndef MESH_NET_ZAP_H
#define MESH_NET_ZAP_H

#include <stdint.h>

#include "net/roster.h"
#include "net/transport.h"

/* Refusals remembered to keep a peer that keeps redialling from flooding the log. */
#define MESH_ZAP_RECENT_MAX 16
#define MESH_ZAP_LOG_INTERVAL_MS 60000u

typedef struct mesh_zap {
    void *sock;
    const mesh_roster *roster;  /* borrowed; the loop swaps it on reload */
    struct {
        uint8_t curve_pk[32];
        uint64_t logged_ms;
    } recent[MESH_ZAP_RECENT_MAX];
    uint64_t admitted, refused;
} mesh_zap;

/* Binds the handler in `t`'s context. Must precede mesh_transport_listen(). Returns MESH_OK or
 * MESH_EIO (another handler is bound in this context). */
int mesh_zap_start(mesh_zap *z, mesh_transport *t, const mesh_roster *roster);

/* Answers every pending request without blocking. `now_ms` rate-limits refusal logs. */
void mesh_zap_serve(mesh_zap *z, uint64_t now_ms);

void mesh_zap_stop(mesh_zap *z);

#endif
