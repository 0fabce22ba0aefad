/*
 * loop.h - the daemon's event loop: one thread that polls the ROUTER, the DEALERs to peers, the
 * discovery sockets and the control socket, and drives one sans-IO sync session (lib/sync) per
 * peer.
 *
 * What starts a session with a peer (when none is running with it and fewer than
 * MESH_SESSIONS_MAX run): the first connection to it after start-up or after it was away (a new
 * or returning peer), a change of the local store (a `meshsync put` from another process, or ops
 * received from a third peer, which makes the node a relay), the sync timer, and a manual sync
 * (`meshsync sync`, through the control socket). If both peers start one at the same time, the
 * one started by the smaller key wins and the other is answered BUSY.
 *
 * The same loop runs the daemon (`meshsync run`), a one-shot sync when no daemon is running
 * (`meshsync sync --peer`), and the benchmarks, which run two loops in one process.
 */
#ifndef MESH_NET_LOOP_H
#define MESH_NET_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "meshsync.h"

typedef struct mesh_loop mesh_loop;
struct mesh_roster;

#define MESH_SYNC_INTERVAL_MS_DEFAULT (15u * 60u * 1000u)
#define MESH_STORE_POLL_MS_DEFAULT 500u
/* How long a manual sync waits for a peer to connect before it reports it unreachable. */
#define MESH_JOB_CONNECT_MS_DEFAULT 20000u
/* Data-directory files the loop owns. */
#define MESH_CONTROL_FILE "control.sock"
#define MESH_LOCK_FILE "daemon.lock"
#define MESH_PEERS_FILE "peers.json"
#define MESH_ROSTER_FILE "roster"

typedef struct mesh_loop_opts {
    mesh_node *node;               /* borrowed; the loop uses its store and identity */
    const char *listen;            /* "tcp://0.0.0.0:47200"; NULL: dial only (one-shot sync) */
    const char *const *peers;      /* static peers: "tcp://HOST:PORT" or "KEYHEX@tcp://HOST:PORT" */
    size_t npeers;
    const char *roster_path;       /* NULL: <data>/roster */
    const struct mesh_roster *roster; /* in-memory roster instead of a file (tests, benches) */
    bool discovery;                /* LAN broadcast beacons */
    uint16_t discovery_port;       /* 0: MESH_DISCOVERY_PORT_DEFAULT */
    const char *broadcast_addr;    /* NULL: 255.255.255.255 */
    uint32_t beacon_interval_ms;   /* 0: MESH_BEACON_INTERVAL_MS_DEFAULT */
    uint32_t sync_interval_ms;     /* 0: MESH_SYNC_INTERVAL_MS_DEFAULT */
    uint32_t store_poll_ms;        /* 0: MESH_STORE_POLL_MS_DEFAULT */
    uint32_t session_idle_ms;      /* 0: the engine's default */
    bool control;                  /* serve <data>/control.sock and hold <data>/daemon.lock */
    bool use_cache;                /* dial the last-known peers in <data>/peers.json */
    bool persist;                  /* write per-peer stats and addresses to <data>/peers.json */
    /* One-shot: sync once with every static (and, with use_cache, cached) peer, then return. */
    bool once;
    uint32_t once_connect_ms;      /* 0: MESH_JOB_CONNECT_MS_DEFAULT */
    /* Called about five times a second during a one-shot sync, and once when it ends, with the
     * job as JSON (the shape `meshsync sync --json` prints). Borrowed for the call. */
    void (*progress)(const char *job_json, void *ctx);
    void *progress_ctx;
    const volatile sig_atomic_t *stop; /* the loop returns soon after *stop becomes non-zero */
} mesh_loop_opts;

/*
 * Sets up the transport, ZAP, discovery and control sockets. Returns MESH_OK; MESH_EINVAL (an
 * option or a peer address); MESH_ENOTFOUND (no roster); MESH_EAGAIN (another daemon holds the
 * data directory); MESH_EINTERNAL (libzmq without CURVE); MESH_EIO (a port in use, ...);
 * MESH_ENOMEM. mesh_errmsg() says which.
 */
int mesh_loop_new(const mesh_loop_opts *o, mesh_loop **out);

/*
 * Runs until *stop is set (or, with `once`, until the sync job is over). Returns MESH_OK; for a
 * one-shot sync, MESH_ETIMEDOUT or the first session error if a peer could not be synced.
 */
int mesh_loop_run(mesh_loop *l);

/* Ends running sessions (telling their peers), saves peer state, closes everything. */
void mesh_loop_free(mesh_loop *l);

/* The TCP endpoint the loop listens on, port resolved ("tcp://0.0.0.0:47213"), or "". */
const char *mesh_loop_endpoint(const mesh_loop *l);

/* ---- Control socket client (used by the CLI) ---- */

/* True if a daemon holds the data directory's lock. */
bool mesh_daemon_running(const char *dir);

/*
 * Sends one JSON request to the daemon of `dir` and waits up to timeout_ms for the reply, which
 * is returned in *reply (NUL-terminated; free with mesh_free()). Returns MESH_OK; MESH_ENOTFOUND
 * (no daemon running); MESH_ETIMEDOUT (the daemon did not answer); MESH_EIO; MESH_ENOMEM.
 */
int mesh_control_call(const char *dir, const char *request, uint32_t timeout_ms, char **reply);

#endif
