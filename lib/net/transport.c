/*
 * transport.c - ZeroMQ sockets with CURVE: the node's ROUTER, DEALERs to peers, and the wire
 * header that frames sync sessions (see transport.h).
 */
#include "net/transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int mesh_transport_check(void)
{
    if (!zmq_has("curve")) {
        int major, minor, patch;
        zmq_version(&major, &minor, &patch);
        return mesh_err(MESH_EINTERNAL, "libzmq %d.%d.%d was built without CURVE security; "
                        "install a libzmq built with libsodium (Debian: libzmq5)",
                        major, minor, patch);
    }
    return MESH_OK;
}

static int zerr(const char *what, const char *endpoint)
{
    int e = zmq_errno();
    int code = e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO ? MESH_EINVAL : MESH_EIO;
    return mesh_err(code, "%s %s: %s", what, endpoint ? endpoint : "", zmq_strerror(e));
}

static int setopt_int(void *s, int opt, int v)
{
    if (zmq_setsockopt(s, opt, &v, sizeof v) != 0) return zerr("setting a socket option", "");
    return MESH_OK;
}

/* Options every peer socket shares: bounded queues, bounded messages, no linger at close (a
 * session that is cut off is resumed by the next one; nothing must hold shutdown up). */
static int common_opts(void *s)
{
    int rc;
    if ((rc = setopt_int(s, ZMQ_SNDHWM, MESH_NET_HWM)) != MESH_OK ||
        (rc = setopt_int(s, ZMQ_RCVHWM, MESH_NET_HWM)) != MESH_OK ||
        (rc = setopt_int(s, ZMQ_LINGER, 0)) != MESH_OK ||
        (rc = setopt_int(s, ZMQ_HANDSHAKE_IVL, 10000)) != MESH_OK ||
        (rc = setopt_int(s, ZMQ_RECONNECT_IVL, 500)) != MESH_OK ||
        (rc = setopt_int(s, ZMQ_RECONNECT_IVL_MAX, 30000)) != MESH_OK)
        return rc;
    /* A frame plus the largest header part; bounds what an unauthenticated or hostile peer can
     * make us allocate. */
    int64_t max = (int64_t)MESH_FRAME_BYTES_MAX + 1024;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0)
        return zerr("setting ZMQ_MAXMSGSIZE", "");
    return MESH_OK;
}

int mesh_transport_init(mesh_transport *t, const mesh_identity *id)
{
    memset(t, 0, sizeof *t);
    int rc = mesh_transport_check();
    if (rc != MESH_OK) return rc;
    if ((rc = mesh_identity_curve(id, t->curve_pk, t->curve_sk)) != MESH_OK) return rc;
    t->zctx = zmq_ctx_new();
    if (t->zctx == NULL) return mesh_err(MESH_ENOMEM, "cannot create a ZeroMQ context: %s",
                                         zmq_strerror(zmq_errno()));
    /* Sockets: one ROUTER, one DEALER and monitor pair per peer, ZAP, control. */
    zmq_ctx_set(t->zctx, ZMQ_MAX_SOCKETS, 4 * MESH_PEERS_MAX + 64);
    return MESH_OK;
}

int mesh_transport_listen(mesh_transport *t, const char *endpoint)
{
    MESH_ASSERT(t->router == NULL);
    void *s = zmq_socket(t->zctx, ZMQ_ROUTER);
    if (s == NULL) return zerr("cannot create the ROUTER socket for", endpoint);
    int rc = common_opts(s);
    if (rc == MESH_OK) rc = setopt_int(s, ZMQ_CURVE_SERVER, 1);
    if (rc == MESH_OK && zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, t->curve_sk, 32) != 0)
        rc = zerr("setting the CURVE secret key for", endpoint);
    /* Unroutable or full: report it (EHOSTUNREACH / EAGAIN) instead of dropping silently. */
    if (rc == MESH_OK) rc = setopt_int(s, ZMQ_ROUTER_MANDATORY, 1);
    /* A reconnecting peer takes over its routing id instead of being refused. */
    if (rc == MESH_OK) rc = setopt_int(s, ZMQ_ROUTER_HANDOVER, 1);
    if (rc == MESH_OK && zmq_bind(s, endpoint) != 0) {
        int e = zmq_errno();
        rc = mesh_err(e == EINVAL || e == EPROTONOSUPPORT ? MESH_EINVAL : MESH_EIO,
                      "cannot listen on %s: %s%s", endpoint, zmq_strerror(e),
                      e == EADDRINUSE ? " (another daemon on that port? pick another with "
                                        "--listen)" : "");
    }
    if (rc != MESH_OK) {
        zmq_close(s);
        return rc;
    }
    size_t len = sizeof t->endpoint;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, t->endpoint, &len) != 0)
        snprintf(t->endpoint, sizeof t->endpoint, "%s", endpoint);
    const char *colon = strrchr(t->endpoint, ':');
    t->port = colon ? (uint16_t)strtoul(colon + 1, NULL, 10) : 0;
    t->router = s;
    return MESH_OK;
}

void mesh_transport_fini(mesh_transport *t)
{
    if (t->router) zmq_close(t->router);
    t->router = NULL;
    if (t->zctx) zmq_ctx_term(t->zctx);
    t->zctx = NULL;
    mesh_wipe(t->curve_sk, sizeof t->curve_sk);
}

int mesh_dealer_open(mesh_transport *t, const uint8_t peer_pk[32], const char *endpoint,
                     mesh_dealer *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->endpoint, sizeof d->endpoint, "%s", endpoint);
    uint8_t server[32];
    int rc = mesh_pk_to_curve(peer_pk, server);
    if (rc != MESH_OK) return rc;
    d->sock = zmq_socket(t->zctx, ZMQ_DEALER);
    if (d->sock == NULL) return zerr("cannot create a DEALER socket for", endpoint);
    rc = common_opts(d->sock);
    /* Queue nothing for a peer that is not connected: a session starts only once it is. */
    if (rc == MESH_OK) rc = setopt_int(d->sock, ZMQ_IMMEDIATE, 1);
    if (rc == MESH_OK && (zmq_setsockopt(d->sock, ZMQ_CURVE_SERVERKEY, server, 32) != 0 ||
                          zmq_setsockopt(d->sock, ZMQ_CURVE_PUBLICKEY, t->curve_pk, 32) != 0 ||
                          zmq_setsockopt(d->sock, ZMQ_CURVE_SECRETKEY, t->curve_sk, 32) != 0))
        rc = zerr("setting CURVE keys to dial", endpoint);
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://mesh-monitor-%u", t->monitor_seq++);
    if (rc == MESH_OK &&
        zmq_socket_monitor(d->sock, mon,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
        rc = zerr("cannot monitor the connection to", endpoint);
    if (rc == MESH_OK) {
        d->monitor = zmq_socket(t->zctx, ZMQ_PAIR);
        if (d->monitor == NULL || zmq_connect(d->monitor, mon) != 0)
            rc = zerr("cannot monitor the connection to", endpoint);
    }
    if (rc == MESH_OK && zmq_connect(d->sock, endpoint) != 0)
        rc = zerr("cannot dial", endpoint);
    if (rc != MESH_OK) mesh_dealer_close(d);
    return rc;
}

void mesh_dealer_close(mesh_dealer *d)
{
    if (d->sock) {
        /* Stop the monitor first so its PAIR can be closed without a pending event blocking. */
        zmq_socket_monitor(d->sock, NULL, 0);
        zmq_close(d->sock);
    }
    if (d->monitor) zmq_close(d->monitor);
    d->sock = d->monitor = NULL;
}

mesh_dealer_ev mesh_dealer_event(mesh_dealer *d)
{
    if (d->monitor == NULL) return MESH_DEALER_NONE;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, d->monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return MESH_DEALER_NONE;
    }
    uint16_t event = 0;
    uint32_t value = 0;
    if (zmq_msg_size(&m) >= 6) {
        memcpy(&event, zmq_msg_data(&m), 2);
        memcpy(&value, (const uint8_t *)zmq_msg_data(&m) + 2, 4);
    }
    /* The second part is the endpoint; drain it. */
    while (zmq_msg_more(&m)) {
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, d->monitor, 0) < 0) break;
    }
    zmq_msg_close(&m);
    switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: return MESH_DEALER_UP;
    case ZMQ_EVENT_DISCONNECTED: return MESH_DEALER_DOWN;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: return MESH_DEALER_REFUSED;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        /* A CURVE server that cannot decrypt our HELLO (wrong key) just drops us. */
        return MESH_DEALER_BADKEY;
    default: return MESH_DEALER_NONE;
    }
}

void mesh_wire_msg_close(mesh_wire_msg *m)
{
    for (int i = 0; i < m->nparts; i++) zmq_msg_close(&m->parts[i]);
    m->nparts = 0;
}

/* Drains the remaining parts of a message that has too many. */
static void drain(void *sock)
{
    int more = 1;
    size_t len = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

int mesh_wire_recv(void *sock, bool router, mesh_wire_msg *m)
{
    m->nparts = 0;
    m->frame = NULL;
    m->frame_len = 0;
    m->rid_len = 0;
    int want_max = router ? 3 : 2;
    for (;;) {
        zmq_msg_t *p = &m->parts[m->nparts];
        zmq_msg_init(p);
        if (zmq_msg_recv(p, sock, m->nparts == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = zmq_errno();
            zmq_msg_close(p);
            mesh_wire_msg_close(m);
            if (e == EAGAIN) return MESH_EAGAIN;
            if (e == EINTR) return MESH_EAGAIN;
            return mesh_err(MESH_EIO, "receiving a message: %s", zmq_strerror(e));
        }
        m->nparts++;
        if (!zmq_msg_more(p)) break;
        if (m->nparts == want_max) {
            drain(sock);
            mesh_wire_msg_close(m);
            return mesh_err(MESH_EPROTO, "a message with more than %d parts", want_max);
        }
    }
    int h = router ? 1 : 0;
    if (m->nparts < h + 1) goto bad;
    if (router) {
        size_t n = zmq_msg_size(&m->parts[0]);
        if (n > sizeof m->rid) goto bad;
        memcpy(m->rid, zmq_msg_data(&m->parts[0]), n);
        m->rid_len = n;
        const char *uid = zmq_msg_gets(&m->parts[h], "User-Id");
        if (uid == NULL || strlen(uid) != 64 || mesh_hex_decode(uid, m->peer, 32) != MESH_OK) {
            mesh_wire_msg_close(m);
            return mesh_err(MESH_EPROTO, "a message from an unauthenticated connection");
        }
    }
    const uint8_t *hdr = zmq_msg_data(&m->parts[h]);
    if (zmq_msg_size(&m->parts[h]) != MESH_WIRE_HDR_BYTES || hdr[0] != MESH_WIRE_VERSION) goto bad;
    m->kind = hdr[1];
    m->sid = mesh_be64_get(hdr + 2);
    if (m->nparts == h + 2) {
        m->frame = zmq_msg_data(&m->parts[h + 1]);
        m->frame_len = zmq_msg_size(&m->parts[h + 1]);
    }
    if (m->kind < MESH_WIRE_OPEN || m->kind > MESH_WIRE_CLOSE) goto bad;
    if ((m->kind == MESH_WIRE_OPEN || m->kind == MESH_WIRE_DATA) != (m->frame != NULL)) goto bad;
    return MESH_OK;
bad:
    mesh_wire_msg_close(m);
    return mesh_err(MESH_EPROTO, "a message with a malformed header (another version of "
                    "meshsync?)");
}

int mesh_wire_send(void *sock, const uint8_t *rid, size_t rid_len, uint8_t kind, uint64_t sid,
                   const uint8_t *frame, size_t frame_len)
{
    uint8_t hdr[MESH_WIRE_HDR_BYTES];
    hdr[0] = MESH_WIRE_VERSION;
    hdr[1] = kind;
    mesh_be64_put(hdr + 2, sid);
    /* The first part decides: if the ROUTER or DEALER cannot take the message (queue full,
     * peer gone), nothing has been queued yet. Later parts of a started message always go. */
    if (rid && zmq_send(sock, rid, rid_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0) goto fail;
    if (zmq_send(sock, hdr, sizeof hdr, (rid ? 0 : ZMQ_DONTWAIT) | (frame ? ZMQ_SNDMORE : 0)) < 0)
        goto fail;
    if (frame && zmq_send(sock, frame, frame_len, 0) < 0) goto fail;
    return MESH_OK;
fail:;
    int e = zmq_errno();
    if (e == EAGAIN) return MESH_EAGAIN;
    if (e == EHOSTUNREACH) return MESH_ECLOSED;
    return mesh_err(MESH_EIO, "sending a message: %s", zmq_strerror(e));
}

bool mesh_sock_writable(void *sock)
{
    int ev = 0;
    size_t len = sizeof ev;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLOUT);
}
