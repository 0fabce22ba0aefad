/*
 * zap.c - admits CURVE clients whose key is on the team roster (see zap.h).
 */
#include "net/zap.h"

#include "net/log.h"

#include <stdio.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* A ZAP request has 7 parts (RFC 27) for CURVE; more is malformed. */
#define ZAP_PARTS_MAX 8

int mesh_zap_start(mesh_zap *z, mesh_transport *t, const mesh_roster *roster)
{
    memset(z, 0, sizeof *z);
    z->roster = roster;
    z->sock = zmq_socket(t->zctx, ZMQ_REP);
    if (z->sock == NULL || zmq_bind(z->sock, ZAP_ENDPOINT) != 0) {
        int e = zmq_errno();
        if (z->sock) zmq_close(z->sock);
        z->sock = NULL;
        return mesh_err(MESH_EIO, "cannot start the ZAP handler: %s", zmq_strerror(e));
    }
    int linger = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
    return MESH_OK;
}

void mesh_zap_stop(mesh_zap *z)
{
    if (z->sock) zmq_close(z->sock);
    z->sock = NULL;
}

static void send_str(void *s, const char *str, int more)
{
    zmq_send(s, str, strlen(str), more ? ZMQ_SNDMORE : 0);
}

/* Logs a refusal unless the same key was logged within the interval. */
static void log_refusal(mesh_zap *z, const uint8_t curve_pk[32], const char *addr,
                        const char *why, uint64_t now_ms)
{
    size_t slot = 0;
    for (size_t i = 0; i < MESH_ZAP_RECENT_MAX; i++) {
        if (memcmp(z->recent[i].curve_pk, curve_pk, 32) == 0) {
            if (now_ms - z->recent[i].logged_ms < MESH_ZAP_LOG_INTERVAL_MS) return;
            slot = i;
            break;
        }
        if (z->recent[i].logged_ms < z->recent[slot].logged_ms) slot = i;
    }
    memcpy(z->recent[slot].curve_pk, curve_pk, 32);
    z->recent[slot].logged_ms = now_ms;
    char hex[65];
    mesh_hex_encode(curve_pk, 32, hex);
    mesh_log_warn("refused a connection from %s: %s (CURVE key %s); if this device belongs to "
                  "the team, add its 'meshsync identity' key to the roster", addr, why, hex);
}

static void serve_one(mesh_zap *z, uint64_t now_ms)
{
    zmq_msg_t parts[ZAP_PARTS_MAX];
    int n = 0;
    for (;;) {
        zmq_msg_init(&parts[n]);
        if (zmq_msg_recv(&parts[n], z->sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&parts[n]);
            break;
        }
        n++;
        if (!zmq_msg_more(&parts[n - 1]) || n == ZAP_PARTS_MAX) break;
    }
    if (n == 0) return;
    /* RFC 27: version, request id, domain, address, identity, mechanism, credentials... */
    const char *status = "400", *text = "malformed request";
    char uid[65] = "";
    char addr[64] = "?";
    if (n >= 6) {
        size_t al = zmq_msg_size(&parts[3]);
        if (al >= sizeof addr) al = sizeof addr - 1;
        memcpy(addr, zmq_msg_data(&parts[3]), al);
        addr[al] = '\0';
    }
    bool is_curve = n >= 7 && zmq_msg_size(&parts[5]) == 5 &&
                    memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0 &&
                    zmq_msg_size(&parts[6]) == 32;
    if (n >= 2 && zmq_msg_size(&parts[0]) == 3 && memcmp(zmq_msg_data(&parts[0]), "1.0", 3) == 0) {
        if (!is_curve) {
            text = "only CURVE connections are admitted";
        } else {
            const uint8_t *ck = zmq_msg_data(&parts[6]);
            const mesh_roster_member *m = mesh_roster_find_curve(z->roster, ck);
            if (m != NULL) {
                status = "200";
                text = "OK";
                mesh_hex_encode(m->ed_pk, 32, uid);
                z->admitted++;
            } else {
                status = "400";
                text = "key not on the roster";
                z->refused++;
                log_refusal(z, ck, addr, text, now_ms);
            }
        }
    }
    /* Reply: version, request id (echoed), status code, status text, user id, metadata. */
    send_str(z->sock, "1.0", 1);
    if (n >= 2)
        zmq_send(z->sock, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), ZMQ_SNDMORE);
    else
        send_str(z->sock, "", 1);
    send_str(z->sock, status, 1);
    send_str(z->sock, text, 1);
    send_str(z->sock, uid, 1);
    zmq_send(z->sock, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
}

void mesh_zap_serve(mesh_zap *z, uint64_t now_ms)
{
    if (z->sock == NULL) return;
    /* A REP socket alternates receive and send, so serve until nothing is queued; bounded by
     * the handshakes in flight, each of which produced one request. */
    for (int i = 0; i < 256; i++) {
        int ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &ev, &len) != 0 || !(ev & ZMQ_POLLIN)) return;
        serve_one(z, now_ms);
    }
}
