/*
 * discovery.c - UDP beacons and probes with a keyed tag (see discovery.h).
 */
#include "net/discovery.h"

#include "crypto/crypto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t MAGIC[4] = {'M', 'S', 'H', 'D'};
#define HDR_BYTES 8
#define NONCE_BYTES 16
#define TAG_BYTES 20

_Static_assert(HDR_BYTES + NONCE_BYTES + TAG_BYTES == MESH_BEACON_BYTES, "beacon layout");

static void beacon_tag(const uint8_t team_key[32], const uint8_t *hdr_nonce, const uint8_t pk[32],
                       uint8_t out[TAG_BYTES])
{
    static const char domain[] = "meshsync/beacon/v1";
    mesh_hash_state h;
    uint8_t full[32];
    mesh_hash_init(&h);
    /* BLAKE2b has no length extension, so key || message is a sound MAC. */
    mesh_hash_update(&h, team_key, 32);
    mesh_hash_update(&h, domain, sizeof domain - 1);
    mesh_hash_update(&h, hdr_nonce, HDR_BYTES + NONCE_BYTES);
    mesh_hash_update(&h, pk, 32);
    mesh_hash_final(&h, full);
    memcpy(out, full, TAG_BYTES);
}

static void beacon_make(const mesh_discovery *d, mesh_beacon_kind kind,
                        uint8_t out[MESH_BEACON_BYTES])
{
    memcpy(out, MAGIC, 4);
    out[4] = 1;
    out[5] = (uint8_t)kind;
    out[6] = (uint8_t)(d->listen_port >> 8);
    out[7] = (uint8_t)d->listen_port;
    mesh_random(out + HDR_BYTES, NONCE_BYTES);
    beacon_tag(d->roster->team_key, out, d->self, out + HDR_BYTES + NONCE_BYTES);
}

static int udp_socket(uint16_t port, bool shared, const char *what)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return mesh_err(MESH_EIO, "cannot create the %s socket: %s", what, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    if (shared) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return mesh_err(MESH_EIO, "cannot bind the %s socket to UDP port %u: %s", what,
                        (unsigned)port, strerror(e));
    }
    return fd;
}

int mesh_discovery_open(mesh_discovery *d, const mesh_discovery_opts *o,
                        const mesh_roster *roster, const uint8_t self[32])
{
    memset(d, 0, sizeof *d);
    d->bcast_fd = d->ucast_fd = -1;
    d->roster = roster;
    memcpy(d->self, self, 32);
    d->listen_port = o->listen_port;
    d->discovery_port = o->discovery_port ? o->discovery_port : MESH_DISCOVERY_PORT_DEFAULT;
    d->bcast_to.sin_family = AF_INET;
    d->bcast_to.sin_port = htons(d->discovery_port);
    const char *ba = o->broadcast_addr ? o->broadcast_addr : "255.255.255.255";
    if (inet_pton(AF_INET, ba, &d->bcast_to.sin_addr) != 1)
        return mesh_err(MESH_EINVAL, "broadcast address '%s' is not an IPv4 address", ba);
    /* The unicast socket shares the TCP port's number: that is where probes for our key come. */
    int fd = udp_socket(o->listen_port, false, "probe");
    if (fd < 0) return fd;
    d->ucast_fd = fd;
    if (o->broadcast) {
        fd = udp_socket(d->discovery_port, true, "discovery");
        if (fd < 0) {
            mesh_discovery_close(d);
            return fd;
        }
        d->bcast_fd = fd;
    }
    return MESH_OK;
}

void mesh_discovery_close(mesh_discovery *d)
{
    if (d->bcast_fd >= 0) close(d->bcast_fd);
    if (d->ucast_fd >= 0) close(d->ucast_fd);
    d->bcast_fd = d->ucast_fd = -1;
}

static int send_to(mesh_discovery *d, mesh_beacon_kind kind, const struct sockaddr_in *to)
{
    uint8_t b[MESH_BEACON_BYTES];
    beacon_make(d, kind, b);
    if (sendto(d->ucast_fd, b, sizeof b, 0, (const struct sockaddr *)to, sizeof *to) < 0) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &to->sin_addr, ip, sizeof ip);
        return mesh_err(MESH_EIO, "cannot send a discovery datagram to %s:%u: %s", ip,
                        (unsigned)ntohs(to->sin_port), strerror(errno));
    }
    d->sent++;
    return MESH_OK;
}

int mesh_discovery_beacon(mesh_discovery *d)
{
    if (d->bcast_fd < 0) return MESH_OK;
    return send_to(d, MESH_BEACON, &d->bcast_to);
}

int mesh_discovery_probe(mesh_discovery *d, const struct sockaddr_in *to)
{
    return send_to(d, MESH_BEACON_PROBE, to);
}

int mesh_discovery_recv(mesh_discovery *d, int fd, mesh_discovered *out)
{
    uint8_t b[MESH_BEACON_BYTES + 1];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
    if (n < 0) return MESH_EAGAIN;
    d->received++;
    if (n != MESH_BEACON_BYTES || memcmp(b, MAGIC, 4) != 0 || b[4] != 1 || b[5] < MESH_BEACON ||
        b[5] > MESH_BEACON_REPLY || fl != sizeof from || from.sin_family != AF_INET) {
        d->ignored++;
        return MESH_ENOTFOUND;
    }
    /* Which member made this tag? The roster is small; a hash per member is microseconds. */
    const mesh_roster_member *who = NULL;
    for (size_t i = 0; i < d->roster->count && who == NULL; i++) {
        uint8_t tag[TAG_BYTES];
        beacon_tag(d->roster->team_key, b, d->roster->members[i].ed_pk, tag);
        if (memcmp(tag, b + HDR_BYTES + NONCE_BYTES, TAG_BYTES) == 0) who = &d->roster->members[i];
    }
    if (who == NULL || memcmp(who->ed_pk, d->self, 32) == 0) {
        d->ignored++;
        return MESH_ENOTFOUND;
    }
    out->kind = (mesh_beacon_kind)b[5];
    memcpy(out->pk, who->ed_pk, 32);
    out->from = from;
    out->port = (uint16_t)(b[6] << 8 | b[7]);
    if (out->kind == MESH_BEACON_PROBE) send_to(d, MESH_BEACON_REPLY, &from);
    return MESH_OK;
}

int mesh_endpoint_parse(const char *endpoint, struct sockaddr_in *out)
{
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return mesh_err(MESH_EINVAL, "peer address '%s' must look like tcp://HOST:PORT", endpoint);
    const char *host = endpoint + 6;
    const char *colon = strrchr(host, ':');
    if (colon == NULL || colon == host || colon[1] == '\0')
        return mesh_err(MESH_EINVAL, "peer address '%s' has no port (tcp://HOST:PORT)", endpoint);
    char h[256];
    size_t hl = (size_t)(colon - host);
    if (hl >= sizeof h) return mesh_err(MESH_EINVAL, "peer address '%s' is too long", endpoint);
    memcpy(h, host, hl);
    h[hl] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535)
        return mesh_err(MESH_EINVAL, "peer address '%s' has a bad port", endpoint);
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, h, &out->sin_addr) == 1) return MESH_OK;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *res = NULL;
    int g = getaddrinfo(h, NULL, &hints, &res);
    if (g != 0 || res == NULL)
        return mesh_err(MESH_EINVAL, "cannot resolve host '%s' of peer %s: %s", h, endpoint,
                        gai_strerror(g));
    out->sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return MESH_OK;
}
