/*
 * transport.h - the ZeroMQ transport: the only code (with zap.c and control.c) that calls libzmq.
 *
 * A node binds one ROUTER socket with CURVE server keys derived from its Ed25519 identity; a ZAP
 * handler (zap.h) admits only roster members and tags their connection with their Ed25519 key
 * (ZMQ "User-Id"), so every message the ROUTER receives names its authenticated sender. To reach
 * a peer, the node dials a DEALER with CURVE client keys and the peer's key as server key, so
 * the peer is authenticated too. Both directions are bounded queues (ZMQ_SNDHWM/RCVHWM) and
 * sends never block: a full queue is MESH_EAGAIN and the loop retries when the peer drains it.
 *
 * Wire format of one message (docs/ARCHITECTURE.md, "Transport and discovery"):
 *   [routing id]  (ROUTER side only; added and removed by ZeroMQ)
 *   header        10 bytes: version u8 (=1) | kind u8 | session id u64 BE
 *   frame         one sync frame (lib/sync), absent for BUSY and CLOSE
 * OPEN carries the first frame of a new session (the initiator's HELLO) and names the session
 * id the initiator chose; DATA carries every later frame, both ways; BUSY refuses an OPEN (too
 * many sessions, or one already running with that peer); CLOSE tells the peer a session was
 * dropped. A frame whose session id is not the current one is stale and ignored, so a restarted
 * session never mixes with the remains of an old one.
 */
#ifndef MESH_NET_TRANSPORT_H
#define MESH_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "common/common.h"
#include "crypto/crypto.h"

/* ---- Limits of the transport (its own; the protocol's are in common/limits.h) ---- */
/* Messages queued per connection each way. A frame is at most MESH_FRAME_BYTES_MAX (1 MiB), so
 * this bounds a connection's queues at 2 x 16 MiB in the worst case;
 * 16 keeps the pipe full while the receiver's store commits. */
#define MESH_NET_HWM 16
/* An endpoint string: "tcp://" + a host name or address + ":" + port. */
#define MESH_ENDPOINT_MAX 256
/* Frames pumped into one socket per loop turn, so one session cannot starve the others. */
#define MESH_NET_PUMP_FRAMES_MAX 64
/* Messages taken from one socket per loop turn, for the same reason. */
#define MESH_NET_RECV_BATCH_MAX 64

#define MESH_WIRE_VERSION 1
#define MESH_WIRE_HDR_BYTES 10

typedef enum mesh_wire_kind {
    MESH_WIRE_OPEN = 1,
    MESH_WIRE_DATA = 2,
    MESH_WIRE_BUSY = 3,
    MESH_WIRE_CLOSE = 4,
} mesh_wire_kind;

/* Returns MESH_OK if this libzmq was built with CURVE, else MESH_EINTERNAL with a message that
 * says how to get one that is. */
int mesh_transport_check(void);

typedef struct mesh_transport {
    void *zctx;                 /* the ZeroMQ context; owned */
    void *router;               /* NULL when the node does not listen */
    uint8_t curve_pk[32];
    uint8_t curve_sk[32];       /* wiped by mesh_transport_fini */
    char endpoint[MESH_ENDPOINT_MAX]; /* what the ROUTER is bound to, port resolved */
    uint16_t port;              /* the bound TCP port, 0 when not listening */
    unsigned monitor_seq;       /* names inproc monitor endpoints */
} mesh_transport;

/* Creates the context and derives the CURVE keys. Returns MESH_OK, MESH_EINTERNAL (no CURVE),
 * MESH_EINVAL, MESH_ENOMEM. */
int mesh_transport_init(mesh_transport *t, const mesh_identity *id);

/* Binds the ROUTER to `endpoint` ("tcp://0.0.0.0:47200"; port 0 or "*" picks a free port). The
 * ZAP handler must be running first (mesh_zap_start), or libzmq would admit every key.
 * Returns MESH_OK, MESH_EINVAL (malformed endpoint), MESH_EIO (address in use, ...). */
int mesh_transport_listen(mesh_transport *t, const char *endpoint);

void mesh_transport_fini(mesh_transport *t);

/* An outgoing connection to one peer, with a monitor that reports its handshakes. */
typedef struct mesh_dealer {
    void *sock;
    void *monitor;              /* PAIR socket receiving the DEALER's events */
    char endpoint[MESH_ENDPOINT_MAX];
} mesh_dealer;

/* Dials `endpoint` expecting the server to prove it holds Ed25519 key `peer_pk`. Connecting is
 * asynchronous: mesh_dealer_event() reports the outcome. Returns MESH_OK, MESH_EINVAL, MESH_EIO. */
int mesh_dealer_open(mesh_transport *t, const uint8_t peer_pk[32], const char *endpoint,
                     mesh_dealer *d);
void mesh_dealer_close(mesh_dealer *d);

typedef enum mesh_dealer_ev {
    MESH_DEALER_NONE = 0,
    MESH_DEALER_UP,             /* handshake succeeded: the peer is connected */
    MESH_DEALER_DOWN,           /* the connection closed; ZeroMQ redials by itself */
    MESH_DEALER_REFUSED,        /* the peer refused our key (we are not on its roster) */
    MESH_DEALER_BADKEY,         /* the handshake failed: not the peer we expected */
} mesh_dealer_ev;

/* Takes one pending event from the dealer's monitor without blocking. */
mesh_dealer_ev mesh_dealer_event(mesh_dealer *d);

/* One received message. Its parts stay valid until mesh_wire_msg_close. */
typedef struct mesh_wire_msg {
    uint8_t kind;
    uint64_t sid;
    const uint8_t *frame;
    size_t frame_len;
    uint8_t rid[256];           /* ROUTER routing id of the sender */
    size_t rid_len;
    uint8_t peer[32];           /* ROUTER: the sender's Ed25519 key from ZAP */
    zmq_msg_t parts[3];
    int nparts;
} mesh_wire_msg;

/*
 * Receives one message without blocking. `router` selects the ROUTER layout (routing id first,
 * sender key from the ZAP User-Id). Returns MESH_OK, MESH_EAGAIN (nothing queued), MESH_EPROTO
 * (a malformed message, consumed and dropped: the caller logs it), MESH_EIO.
 */
int mesh_wire_recv(void *sock, bool router, mesh_wire_msg *m);
void mesh_wire_msg_close(mesh_wire_msg *m);

/*
 * Sends one message without blocking. `rid` is the routing id on a ROUTER, NULL on a DEALER.
 * `frame` may be NULL for BUSY and CLOSE. Returns MESH_OK; MESH_EAGAIN (the peer's queue is
 * full: nothing was sent, try again later); MESH_ECLOSED (the peer is gone); MESH_EIO.
 */
int mesh_wire_send(void *sock, const uint8_t *rid, size_t rid_len, uint8_t kind, uint64_t sid,
                   const uint8_t *frame, size_t frame_len);

/* True if the socket can take a message now (ZMQ_EVENTS has ZMQ_POLLOUT). */
bool mesh_sock_writable(void *sock);

#endif
