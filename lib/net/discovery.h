/*
 * discovery.h - finding peers on the LAN with UDP beacons, and learning a static peer's key.
 *
 * A beacon is one 44-byte datagram:
 *   magic "MSHD" | version u8 (=1) | kind u8 | port u16 BE | nonce 16 | tag 20
 * kind is BEACON (an announcement, broadcast every interval), PROBE (asks the receiver to reply,
 * sent to a static peer's address) or REPLY. `port` is the sender's TCP listen port (0: it does
 * not listen). The tag is BLAKE2b-256(team key || "meshsync/beacon/v1" || header || nonce ||
 * sender's Ed25519 key), truncated to 20 bytes. The receiver finds the sender by computing the
 * tag for each roster member, so the datagram shows neither the team nor the device: without the
 * roster it is 44 random-looking bytes, and a fresh random nonce keeps two beacons of one device
 * unlinkable. A replayed beacon can at worst make a node dial an address whose CURVE handshake
 * then fails, because the key it expects is the real member's.
 *
 * Two UDP sockets: one bound to the discovery port (shared by every node on the host with
 * SO_REUSEADDR/SO_REUSEPORT) that hears broadcasts, and one bound to the node's TCP listen port
 * number, from which beacons and probes go out and to which probes and replies come back. A
 * static peer given as tcp://host:port is asked for its key with a PROBE to host:port over UDP.
 */
#ifndef MESH_NET_DISCOVERY_H
#define MESH_NET_DISCOVERY_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/roster.h"

#define MESH_DISCOVERY_PORT_DEFAULT 47100u
#define MESH_BEACON_INTERVAL_MS_DEFAULT 5000u
#define MESH_BEACON_BYTES 44
/* Datagrams read per loop turn from one socket: bounds work a flood can cause. */
#define MESH_DISCOVERY_RECV_MAX 64

typedef enum mesh_beacon_kind {
    MESH_BEACON = 1,
    MESH_BEACON_PROBE = 2,
    MESH_BEACON_REPLY = 3,
} mesh_beacon_kind;

typedef struct mesh_discovery {
    int bcast_fd;                   /* hears broadcasts on the discovery port; -1 if disabled */
    int ucast_fd;                   /* sends beacons and probes; hears probes and replies */
    uint16_t listen_port;           /* our TCP port announced in beacons (0: none) */
    uint16_t discovery_port;
    struct sockaddr_in bcast_to;    /* where beacons go */
    const mesh_roster *roster;      /* borrowed */
    uint8_t self[32];
    uint64_t sent, received, ignored;
} mesh_discovery;

typedef struct mesh_discovery_opts {
    bool broadcast;                 /* listen to and send LAN beacons */
    uint16_t discovery_port;        /* 0: MESH_DISCOVERY_PORT_DEFAULT */
    const char *broadcast_addr;     /* NULL: 255.255.255.255 */
    uint16_t listen_port;           /* TCP port of this node; also the UDP port probes reach */
} mesh_discovery_opts;

/* Opens the sockets. Returns MESH_OK, MESH_EINVAL (bad broadcast address), MESH_EIO (a port in
 * use by another program without SO_REUSEPORT, ...). */
int mesh_discovery_open(mesh_discovery *d, const mesh_discovery_opts *o,
                        const mesh_roster *roster, const uint8_t self[32]);
void mesh_discovery_close(mesh_discovery *d);

/* Broadcasts one beacon. Returns MESH_OK or MESH_EIO (no route for broadcast, ...). */
int mesh_discovery_beacon(mesh_discovery *d);

/* Sends a PROBE to `to`. Returns MESH_OK or MESH_EIO. */
int mesh_discovery_probe(mesh_discovery *d, const struct sockaddr_in *to);

typedef struct mesh_discovered {
    mesh_beacon_kind kind;
    uint8_t pk[32];                 /* the roster member that sent it */
    struct sockaddr_in from;        /* datagram source */
    uint16_t port;                  /* its TCP listen port, 0 if none */
} mesh_discovered;

/*
 * Reads one datagram from `fd` (one of the two sockets) without blocking. A PROBE from a member
 * is answered with a REPLY here. Returns MESH_OK (a member's datagram), MESH_EAGAIN (nothing
 * queued), MESH_ENOTFOUND (not ours, our own, or not from a member: ignored).
 */
int mesh_discovery_recv(mesh_discovery *d, int fd, mesh_discovered *out);

/* Parses "tcp://host:port" into an IPv4 address (resolving a host name). Returns MESH_OK or
 * MESH_EINVAL with a message naming the endpoint. */
int mesh_endpoint_parse(const char *endpoint, struct sockaddr_in *out);

#endif
