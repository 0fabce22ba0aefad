/*
 * loop.c - the event loop that connects the transport, discovery and control socket to the
 * sans-IO sync engine (see loop.h for what triggers a session).
 *
 * Everything runs on one thread around zmq_poll(). Each turn: answer ZAP requests, take bounded
 * batches of messages from the ROUTER and each DEALER and feed them to their sessions, read
 * discovery datagrams, answer the control socket, pump frames out of each session while its
 * socket takes them (a session is asked for its next frame only when the previous one was
 * queued, which is the backpressure: a slow peer slows its sender, never our memory), handle
 * expiries, and start sessions for peers that want one. Timers (beacons, probes, the store poll,
 * the sync timer) set the poll timeout.
 *
 * A peer is one Ed25519 key on the roster. It may be reachable outbound (we know an endpoint:
 * static, from a beacon, or from the cache of last-known peers, and hold a DEALER to it) and
 * inbound (it dialled our ROUTER). A session runs on one of the two: on our DEALER if we started
 * it (initiator), on the ROUTER if the peer did. At most one session per peer at a time.
 */
#include "net/loop.h"

#include "api/node_int.h"
#include "net/discovery.h"
#include "net/log.h"
#include "net/roster.h"
#include "net/transport.h"
#include "net/zap.h"
#include "store/team.h"
#include "sync/session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Limits of the loop --------------------------------------------------------------------- */
/* Concurrent manual sync jobs (each a `meshsync sync` waiting on the control socket). */
#define JOBS_MAX 8
/* A finished job is kept this long for its client to collect the result. */
#define JOB_KEEP_MS 120000u
/* Static peers given on the command line. */
#define STATIC_MAX 64
/* How often an unresolved static peer is probed: start, and cap of the doubling backoff. */
#define PROBE_IVL_MS_MIN 500u
#define PROBE_IVL_MS_MAX 30000u
/* After BUSY or a failed session: retry after this (doubling, with jitter, up to the cap). */
#define RETRY_MS_MIN 1000u
#define RETRY_MS_MAX 60000u
/* A ROUTER send found the peer's queue full: try again after this. ZeroMQ has no per-peer
 * writability on a ROUTER, so this is a short timer rather than a poll event. */
#define ROUTER_RETRY_MS 2u
/* A peer not heard from (beacon or connection) for this many beacon intervals has left;
 * hearing it again is a "returning peer" trigger. */
#define PEER_AWAY_BEACONS 3u
/* peers.json is rewritten at most this often while sessions end. */
#define PERSIST_MIN_MS 2000u
/* The roster file is checked for edits this often. */
#define ROSTER_CHECK_MS 2000u
/* zmq_poll never sleeps longer than this, so a signal caught on a ZeroMQ thread still stops the
 * loop promptly. */
#define POLL_MAX_MS 200u
/* Control requests: their size, and how many are served per turn. */
#define CONTROL_REQ_BYTES_MAX 4096u
#define PROGRESS_MS 200u

enum {
    SRC_STATIC = 1u,
    SRC_BEACON = 2u,
    SRC_CACHE = 4u,
    SRC_INBOUND = 8u,
};

enum { SLOT_WAITING = 0, SLOT_RUNNING, SLOT_DONE, SLOT_FAILED };
static const char *const SLOT_NAMES[] = {"waiting", "running", "done", "failed"};

typedef struct peer {
    bool used;
    struct mesh_loop *l;             /* the loop (scope filters reach the roster through it) */
    uint8_t pk[32];
    char ks[9];                      /* short key for log lines */
    char endpoint[MESH_ENDPOINT_MAX]; /* where we dial it; "" if unknown */
    unsigned src;                    /* SRC_* bits: how we learned of it */
    uint64_t last_seen_ms;           /* wall clock, beacon or message */
    uint64_t last_seen_mono;

    mesh_dealer dealer;              /* open while endpoint is known */
    bool connected;                  /* DEALER handshake succeeded and not down since */
    int dealer_fail;                 /* last mesh_dealer_ev failure logged, to log changes only */

    /* The running session, if any. */
    mesh_session *sess;
    uint64_t sid;
    bool initiator;
    bool opened;                     /* the OPEN message went out */
    bool out_pending;                /* `out` holds a frame the socket did not take yet */
    bool blocked;                    /* the socket's queue to this peer is full */
    bool more;                       /* the pump stopped at its per-turn bound */
    uint64_t blocked_until;
    mesh_buf out;
    uint64_t sess_start_mono;
    uint64_t gen_at_start;
    uint8_t rid[256];                /* ROUTER routing id of its connection to us */
    size_t rid_len;

    /* Scheduling. */
    bool want;                       /* a trigger asked for a session */
    uint64_t want_mono;              /* when the trigger fired */
    uint64_t retry_mono;             /* not before this */
    uint32_t backoff_ms;
    uint64_t synced_gen;             /* store generation both sides held at the last session */
    bool synced_valid;

    /* Stats (persisted). */
    uint64_t last_sync_ms, sessions_ok, sessions_failed;
    uint64_t ops_sent, ops_received, bytes_sent, bytes_received, ops_rejected;
    char last_error[256];
    uint64_t last_error_ms;
} peer;

typedef struct static_peer {
    char endpoint[MESH_ENDPOINT_MAX];
    struct sockaddr_in addr;
    bool resolved;
    uint8_t pk[32];
    uint64_t next_probe_mono;
    uint32_t probe_ivl_ms;
    bool warned;
    bool announce;                   /* resolved from KEY@: still send one probe */
} static_peer;

typedef struct job_slot {
    int peer;                        /* index in peers, or -1 until a static peer resolves */
    int static_idx;                  /* the static peer this slot waits for, or -1 */
    int state;
    uint64_t sid;
    mesh_session_stats st;
    uint64_t started_mono, ended_mono;
    char error[256];
} job_slot;

typedef struct job {
    bool used;
    uint32_t id;
    uint64_t created_mono;
    uint64_t deadline_mono;          /* slots still waiting by then fail as unreachable */
    bool done;
    uint64_t done_mono;
    char note[160];
    size_t n;
    job_slot slots[MESH_PEERS_MAX];
} job;

struct mesh_loop {
    mesh_loop_opts o;
    mesh_node *node;
    char dir[4096];
    mesh_transport tr;
    mesh_zap zap;
    bool zap_on;
    mesh_discovery disc;
    bool disc_on;
    mesh_roster roster;              /* owned copy (team roster, file or the caller's keys) */
    bool roster_from_file;
    /* A node in a team (store/team.h) takes its roster from the store: the signed roster's
     * members are admitted, and each session replicates only what the roster lets each side
     * hold. Without a roster yet (bootstrap) nobody is admitted inbound; the node dials peers
     * given with their key, sends them only the authority's stream, and takes what they send
     * (its ingest judges it as soon as a roster arrives). */
    bool team_mode;
    uint8_t authority[32];
    mesh_team *team;                 /* the roster held; NULL in bootstrap */
    uint64_t roster_version;
    bool roster_dirty;               /* a session stored ops: look for a new roster at once */
    void *control;                   /* REP socket, or NULL */
    int lock_fd;

    peer *peers;                     /* MESH_PEERS_MAX */
    size_t npeers_used;
    static_peer statics[STATIC_MAX];
    size_t nstatics;
    job *jobs;                       /* JOBS_MAX */
    uint32_t next_job_id;
    int once_job;                    /* index of the one-shot job, or -1 */

    size_t active;                   /* running sessions */
    size_t rr;                       /* round-robin start for scheduling */
    uint64_t gen;                    /* store generation: ops held, as last polled */
    uint64_t start_mono, start_ms;
    uint64_t next_beacon, next_store_poll, next_sync_timer, next_roster_check, next_progress;
    uint64_t next_persist;
    bool persist_dirty;
    uint64_t sessions_total;
};

/* ---- Small helpers --------------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(const mesh_loop *l) { return mesh_node_now_ms(l->node); }

static uint32_t jitter(uint32_t ms)
{
    /* +-20 %: spreads beacons and retries of nodes that started together. */
    uint32_t r;
    mesh_random(&r, sizeof r);
    uint32_t span = ms / 5 + 1;
    return ms - span + r % (2 * span);
}

static uint64_t random_sid(void)
{
    uint64_t v = 0;
    while (v == 0) mesh_random(&v, sizeof v);
    return v;
}

/* Copies a NUL-terminated string, truncating to fit: for messages and endpoints. */
static void strcopy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int path_in_dir(const mesh_loop *l, const char *name, char *out, size_t cap)
{
    if ((size_t)snprintf(out, cap, "%s/%s", l->dir, name) >= cap)
        return mesh_err(MESH_EINVAL, "path too long: %s/%s", l->dir, name);
    return MESH_OK;
}

static void peer_error(mesh_loop *l, peer *p, const char *msg)
{
    strcopy(p->last_error, sizeof p->last_error, msg);
    p->last_error_ms = wall_ms(l);
    l->persist_dirty = true;
}

/* ---- Store generation ------------------------------------------------------------------------ */

static int gen_fn(mesh_txn *t, void *ctx)
{
    mesh_store_counts c;
    int rc = mesh_store_counts_get(t, &c);
    if (rc == MESH_OK) *(uint64_t *)ctx = c.ops;
    return rc;
}

/* The store's generation: the number of ops it holds. Ops are never removed, so any change
 * (a local put, an import, ops from any peer) increases it. A cheap read transaction. */
static uint64_t store_gen(mesh_loop *l)
{
    uint64_t g = l->gen;
    if (mesh_store_read(l->node->store, gen_fn, &g) != MESH_OK)
        mesh_log_warn("cannot read the store's op count: %s", mesh_errmsg());
    return g;
}

/* ---- Peers ----------------------------------------------------------------------------------- */

static peer *peer_find(mesh_loop *l, const uint8_t pk[32])
{
    for (size_t i = 0; i < l->npeers_used; i++)
        if (l->peers[i].used && memcmp(l->peers[i].pk, pk, 32) == 0) return &l->peers[i];
    return NULL;
}

static peer *peer_add(mesh_loop *l, const uint8_t pk[32], unsigned src)
{
    peer *p = peer_find(l, pk);
    if (p) {
        p->src |= src;
        return p;
    }
    if (memcmp(pk, l->node->id.pk, 32) == 0) return NULL;
    /* Waiting for a first roster, a node may dial the peers its operator named with their key. */
    bool bootstrap = l->team_mode && l->team == NULL && (src & SRC_STATIC);
    if (!bootstrap && mesh_roster_find(&l->roster, pk) == NULL) return NULL;
    size_t i = 0;
    while (i < l->npeers_used && l->peers[i].used) i++;
    if (i == MESH_PEERS_MAX) {
        mesh_log_warn("tracking %u peers already; ignoring another (raise MESH_PEERS_MAX)",
                      MESH_PEERS_MAX);
        return NULL;
    }
    if (i == l->npeers_used) l->npeers_used++;
    p = &l->peers[i];
    memset(p, 0, sizeof *p);
    p->used = true;
    p->l = l;
    memcpy(p->pk, pk, 32);
    mesh_log_key(pk, p->ks);
    p->src = src;
    mesh_buf_init(&p->out, MESH_FRAME_BYTES_MAX);
    return p;
}

static int peer_index(const mesh_loop *l, const peer *p) { return (int)(p - l->peers); }

/* True if we may dial p: its address is known, and came from somewhere other than the cache
 * unless the cache is in use. */
static bool dialable(const mesh_loop *l, const peer *p)
{
    return p->endpoint[0] && (l->o.use_cache || (p->src & (SRC_STATIC | SRC_BEACON)));
}

/* Opens (or re-opens, if the address changed) the DEALER to a peer with a known endpoint. */
static void peer_dial(mesh_loop *l, peer *p)
{
    if (!dialable(l, p)) return;
    if (p->dealer.sock && strcmp(p->dealer.endpoint, p->endpoint) == 0) return;
    if (p->dealer.sock) {
        mesh_log_info("peer %s moved to %s", p->ks, p->endpoint);
        if (p->sess && p->initiator) p->retry_mono = 0;  /* its session is cut below */
        mesh_dealer_close(&p->dealer);
        p->connected = false;
    }
    if (mesh_dealer_open(&l->tr, p->pk, p->endpoint, &p->dealer) != MESH_OK) {
        mesh_log_warn("cannot dial peer %s at %s: %s", p->ks, p->endpoint, mesh_errmsg());
        peer_error(l, p, mesh_errmsg());
        return;
    }
    mesh_log_debug("dialling peer %s at %s", p->ks, p->endpoint);
}

static void peer_want(mesh_loop *l, peer *p, const char *why)
{
    if (!p->want) {
        p->want = true;
        p->want_mono = mono_ms();
        mesh_log_debug("sync with %s wanted: %s", p->ks, why);
    }
    (void)l;
}

/* ---- Jobs (manual syncs) --------------------------------------------------------------------- */

static job *job_new(mesh_loop *l)
{
    uint64_t now = mono_ms();
    job *free_slot = NULL;
    for (size_t i = 0; i < JOBS_MAX; i++) {
        job *j = &l->jobs[i];
        if (!j->used || (j->done && now - j->done_mono > JOB_KEEP_MS)) {
            free_slot = j;
            break;
        }
    }
    if (free_slot == NULL) return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    free_slot->used = true;
    free_slot->id = ++l->next_job_id;
    free_slot->created_mono = now;
    return free_slot;
}

static void job_add_peer(mesh_loop *l, job *j, peer *p, int static_idx)
{
    if (j->n == MESH_PEERS_MAX) return;
    for (size_t i = 0; i < j->n; i++) {
        if (p && j->slots[i].peer == peer_index(l, p)) return;
        if (!p && static_idx >= 0 && j->slots[i].static_idx == static_idx) return;
    }
    job_slot *s = &j->slots[j->n++];
    memset(s, 0, sizeof *s);
    s->peer = p ? peer_index(l, p) : -1;
    s->static_idx = static_idx;
    s->state = SLOT_WAITING;
    if (p) peer_want(l, p, "manual sync");
}

/* A static peer resolved to `p`: slots waiting for it now wait for the peer. */
static void jobs_static_resolved(mesh_loop *l, int static_idx, peer *p)
{
    for (size_t k = 0; k < JOBS_MAX; k++) {
        job *j = &l->jobs[k];
        if (!j->used || j->done) continue;
        for (size_t i = 0; i < j->n; i++)
            if (j->slots[i].static_idx == static_idx && j->slots[i].peer < 0) {
                j->slots[i].peer = peer_index(l, p);
                peer_want(l, p, "manual sync");
            }
    }
}

static void jobs_session_started(mesh_loop *l, peer *p)
{
    for (size_t k = 0; k < JOBS_MAX; k++) {
        job *j = &l->jobs[k];
        if (!j->used || j->done) continue;
        for (size_t i = 0; i < j->n; i++) {
            job_slot *s = &j->slots[i];
            if (s->peer == peer_index(l, p) && s->state == SLOT_WAITING) {
                s->state = SLOT_RUNNING;
                s->sid = p->sid;
                s->started_mono = mono_ms();
            }
        }
    }
}

static void jobs_session_ended(mesh_loop *l, peer *p, const mesh_session_stats *st, bool ok,
                               const char *error)
{
    for (size_t k = 0; k < JOBS_MAX; k++) {
        job *j = &l->jobs[k];
        if (!j->used || j->done) continue;
        for (size_t i = 0; i < j->n; i++) {
            job_slot *s = &j->slots[i];
            if (s->peer != peer_index(l, p) || s->state != SLOT_RUNNING || s->sid != p->sid)
                continue;
            s->st = *st;
            s->ended_mono = mono_ms();
            if (ok) {
                s->state = SLOT_DONE;
            } else if (st->frames_received == 0 && st->frames_sent <= 1 && error &&
                       strstr(error, "busy")) {
                /* Refused as busy before anything moved: wait for the retry. */
                s->state = SLOT_WAITING;
            } else {
                s->state = SLOT_FAILED;
                strcopy(s->error, sizeof s->error, error ? error : "failed");
            }
        }
    }
}

/* Fails a job's slots for a peer that cannot be reached (refused us, unreachable). */
static void jobs_peer_failed(mesh_loop *l, peer *p, const char *error)
{
    for (size_t k = 0; k < JOBS_MAX; k++) {
        job *j = &l->jobs[k];
        if (!j->used || j->done) continue;
        for (size_t i = 0; i < j->n; i++) {
            job_slot *s = &j->slots[i];
            if (s->peer == peer_index(l, p) && s->state == SLOT_WAITING) {
                s->state = SLOT_FAILED;
                strcopy(s->error, sizeof s->error, error);
            }
        }
    }
}

static void jobs_check(mesh_loop *l, uint64_t now)
{
    for (size_t k = 0; k < JOBS_MAX; k++) {
        job *j = &l->jobs[k];
        if (!j->used || j->done) continue;
        bool all = true;
        for (size_t i = 0; i < j->n; i++) {
            job_slot *s = &j->slots[i];
            if (s->state == SLOT_WAITING && now >= j->deadline_mono) {
                s->state = SLOT_FAILED;
                if (s->peer < 0)
                    snprintf(s->error, sizeof s->error, "no meshsync node of this team "
                             "answered at %s (is its daemon running? is its key on our roster?)",
                             l->statics[s->static_idx].endpoint);
                else
                    snprintf(s->error, sizeof s->error, "could not connect within %u s",
                             (unsigned)((j->deadline_mono - j->created_mono + 500) / 1000));
            }
            if (s->state == SLOT_WAITING || s->state == SLOT_RUNNING) all = false;
        }
        if (all) {
            j->done = true;
            j->done_mono = now;
        }
    }
}

static json_t *stats_json(json_t *o, const mesh_session_stats *st)
{
    json_object_set_new(o, "ops_sent", json_integer((json_int_t)st->ops_sent));
    json_object_set_new(o, "ops_received", json_integer((json_int_t)st->ops_received));
    json_object_set_new(o, "ops_applied", json_integer((json_int_t)st->ops_applied));
    json_object_set_new(o, "ops_duplicate", json_integer((json_int_t)st->ops_duplicate));
    json_object_set_new(o, "ops_rejected", json_integer((json_int_t)st->ops_rejected));
    json_object_set_new(o, "ops_pending", json_integer((json_int_t)st->ops_pending));
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)st->bytes_sent));
    json_object_set_new(o, "bytes_received", json_integer((json_int_t)st->bytes_received));
    json_object_set_new(o, "round_trips", json_integer((json_int_t)st->round_trips));
    json_object_set_new(o, "frames_sent", json_integer((json_int_t)st->frames_sent));
    json_object_set_new(o, "frames_received", json_integer((json_int_t)st->frames_received));
    return o;
}

static json_t *job_json(mesh_loop *l, const job *j)
{
    uint64_t now = mono_ms();
    json_t *o = json_object();
    json_object_set_new(o, "job", json_integer(j->id));
    json_object_set_new(o, "done", json_boolean(j->done));
    uint64_t elapsed = (j->done ? j->done_mono : now) - j->created_mono;
    json_object_set_new(o, "elapsed_ms", json_integer((json_int_t)elapsed));
    if (j->note[0]) json_object_set_new(o, "note", json_string(j->note));
    json_t *arr = json_array();
    for (size_t i = 0; i < j->n; i++) {
        const job_slot *s = &j->slots[i];
        json_t *e = json_object();
        char hex[65] = "";
        const char *ep = "";
        if (s->peer >= 0) {
            peer *p = &l->peers[s->peer];
            mesh_hex_encode(p->pk, 32, hex);
            ep = p->endpoint;
        } else if (s->static_idx >= 0) {
            ep = l->statics[s->static_idx].endpoint;
        }
        json_object_set_new(e, "key", hex[0] ? json_string(hex) : json_null());
        json_object_set_new(e, "endpoint", json_string(ep));
        json_object_set_new(e, "state", json_string(SLOT_NAMES[s->state]));
        mesh_session_stats st = s->st;
        if (s->state == SLOT_RUNNING && s->peer >= 0 && l->peers[s->peer].sess &&
            l->peers[s->peer].sid == s->sid)
            mesh_session_stats_get(l->peers[s->peer].sess, &st);
        stats_json(e, &st);
        uint64_t end = s->ended_mono ? s->ended_mono : now;
        uint64_t dur = s->started_mono ? end - s->started_mono : 0;
        json_object_set_new(e, "duration_ms", json_integer((json_int_t)dur));
        json_object_set_new(e, "error", s->error[0] ? json_string(s->error) : json_null());
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "peers", arr);
    return o;
}

/* ---- Sessions -------------------------------------------------------------------------------- */

static void *session_sock(mesh_loop *l, peer *p)
{
    return p->initiator ? p->dealer.sock : l->tr.router;
}

/* Scope filters of a team node's sessions (sync/session.h): what the roster lets the peer and
 * this node hold. Without a roster (bootstrap) the peer gets only the authority's stream and
 * this node takes everything, which its ingest judges once the roster is in. */
static bool peer_may_hold(const uint8_t author[32], const char *scope, size_t len, void *ctx)
{
    const peer *p = ctx;
    if (p->l->team == NULL) return memcmp(author, p->l->authority, 32) == 0;
    return mesh_team_may_hold(p->l->team, p->pk, author, scope, len);
}

static bool self_may_hold(const uint8_t author[32], const char *scope, size_t len, void *ctx)
{
    const peer *p = ctx;
    if (p->l->team == NULL) return true;
    return mesh_team_may_hold(p->l->team, p->l->node->id.pk, author, scope, len);
}

static int session_new(mesh_loop *l, peer *p, bool initiator, uint64_t sid, uint64_t now)
{
    mesh_session_opts so = {
        .store = l->node->store,
        .initiator = initiator,
        .idle_timeout_ms = l->o.session_idle_ms,
    };
    if (l->team_mode) {
        so.peer_may_hold = peer_may_hold;
        so.self_may_hold = self_may_hold;
        so.filter_ctx = p;
    }
    memcpy(so.self, l->node->id.pk, 32);
    memcpy(so.peer, p->pk, 32);
    mesh_session *s = NULL;
    int rc = mesh_session_new(&so, now, &s);
    if (rc != MESH_OK) {
        mesh_log_error("cannot start a session with %s: %s", p->ks, mesh_errmsg());
        return rc;
    }
    p->sess = s;
    p->sid = sid;
    p->initiator = initiator;
    p->opened = !initiator;          /* a responder's every frame is DATA */
    p->out_pending = false;
    p->blocked = false;
    p->sess_start_mono = now;
    p->gen_at_start = l->gen;
    l->active++;
    l->sessions_total++;
    mesh_log_debug("session %016" PRIx64 " with %s started (%s)", sid, p->ks,
                   initiator ? "we dialled" : "it dialled");
    jobs_session_started(l, p);
    return MESH_OK;
}

static void fmt_bytes(uint64_t n, char *out, size_t cap)
{
    if (n < 10 * 1024) snprintf(out, cap, "%" PRIu64 " B", n);
    else if (n < 10 * 1024 * 1024) snprintf(out, cap, "%.1f KiB", (double)n / 1024);
    else snprintf(out, cap, "%.1f MiB", (double)n / (1024 * 1024));
}

/* Ends p's session: folds its stats into the peer's, updates jobs and scheduling, frees it.
 * `why` is NULL when the session ran to DONE. */
static void session_end(mesh_loop *l, peer *p, const char *why, bool tell_peer)
{
    MESH_ASSERT(p->sess != NULL);
    mesh_session_stats st;
    mesh_session_stats_get(p->sess, &st);
    mesh_session_state state = mesh_session_state_get(p->sess);
    bool ok = why == NULL && state == MESH_SESSION_DONE;
    char err[300] = "";
    if (!ok) {
        if (why) strcopy(err, sizeof err, why);
        else if (st.error_msg[0]) strcopy(err, sizeof err, st.error_msg);
        else strcopy(err, sizeof err, mesh_strerror(st.error ? st.error : MESH_EPROTO));
    }
    if (tell_peer) {
        void *sock = session_sock(l, p);
        if (sock)
            mesh_wire_send(sock, p->initiator ? NULL : p->rid, p->initiator ? 0 : p->rid_len,
                           MESH_WIRE_CLOSE, p->sid, NULL, 0);
    }
    uint64_t now = mono_ms();
    p->ops_sent += st.ops_sent;
    p->ops_received += st.ops_applied;
    p->bytes_sent += st.bytes_sent;
    p->bytes_received += st.bytes_received;
    p->ops_rejected += st.ops_rejected;
    char sent[32], recv[32];
    fmt_bytes(st.bytes_sent, sent, sizeof sent);
    fmt_bytes(st.bytes_received, recv, sizeof recv);
    bool busy = why && strstr(why, "busy") != NULL;
    if (ok) {
        p->sessions_ok++;
        p->last_sync_ms = wall_ms(l);
        p->backoff_ms = 0;
        /* Level with the peer as of the session's start, plus what it brought; if anything else
         * changed the store meanwhile, the next poll starts another session to pass it on. */
        uint64_t gen_now = store_gen(l);
        l->gen = gen_now;
        p->synced_gen = gen_now - p->gen_at_start == st.ops_applied ? gen_now : p->gen_at_start;
        p->synced_valid = true;
        if (p->want && p->want_mono <= p->sess_start_mono) p->want = false;
        mesh_log_info("synced with %s in %" PRIu64 " ms: sent %" PRIu64 " ops (%s), received %"
                      PRIu64 " ops (%s; %" PRIu64 " new, %" PRIu64 " already held)",
                      p->ks, now - p->sess_start_mono, st.ops_sent, sent, st.ops_received, recv,
                      st.ops_applied, st.ops_duplicate);
    } else if (busy) {
        p->retry_mono = now + jitter(RETRY_MS_MIN);
        mesh_log_debug("session with %s refused as busy; retrying", p->ks);
    } else {
        p->sessions_failed++;
        p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : RETRY_MS_MIN;
        if (p->backoff_ms > RETRY_MS_MAX) p->backoff_ms = RETRY_MS_MAX;
        p->retry_mono = now + jitter(p->backoff_ms);
        peer_error(l, p, err);
        mesh_log_warn("session with %s failed after %" PRIu64 " ms: %s (kept %" PRIu64
                      " ops received so far, sent %" PRIu64 ")",
                      p->ks, now - p->sess_start_mono, err, st.ops_applied, st.ops_sent);
    }
    if (st.ops_rejected > 0) {
        char msg[400];
        const char *reason = st.reject_msg[0] ? st.reject_msg
                             : st.error_msg[0]  ? st.error_msg
                                                : "they failed verification (bad signature or "
                                                  "broken hash chain)";
        snprintf(msg, sizeof msg, "rejected %" PRIu64 " ops from %s: %s", st.ops_rejected, p->ks,
                 reason);
        peer_error(l, p, msg);
        mesh_log_error("%s; nothing after the first bad op of that stream was stored", msg);
    }
    jobs_session_ended(l, p, &st, ok, ok ? NULL : err);
    if (l->team_mode && st.ops_applied > 0) l->roster_dirty = true;
    mesh_session_free(p->sess);
    p->sess = NULL;
    p->sid = 0;
    /* A frame buffer grows to the frame limit (1 MiB); idle peers should not keep one. */
    mesh_buf_fini(&p->out);
    mesh_buf_init(&p->out, MESH_FRAME_BYTES_MAX);
    p->out_pending = false;
    p->blocked = false;
    MESH_ASSERT(l->active > 0);
    l->active--;
    l->persist_dirty = true;
}

/* Moves frames from p's session into its socket until the socket is full, the session has
 * nothing to send, or the per-turn bound is reached (then p->more asks for another turn at
 * once). Ends the session when it is over. */
static void session_pump(mesh_loop *l, peer *p, uint64_t now)
{
    p->more = false;
    if (p->sess == NULL) return;
    if (p->blocked && !p->initiator && now < p->blocked_until) return;
    void *sock = session_sock(l, p);
    if (sock == NULL) {
        session_end(l, p, "connection lost", false);
        return;
    }
    for (int i = 0; i < MESH_NET_PUMP_FRAMES_MAX; i++) {
        if (!p->out_pending) {
            int rc = mesh_session_send(p->sess, &p->out, now);
            if (rc == MESH_EAGAIN && mesh_session_state_get(p->sess) == MESH_SESSION_ACTIVE)
                return;
            if (rc == MESH_EAGAIN || rc == MESH_ECLOSED) {
                /* Over: DONE, or FAILED after its ERROR frame went out. */
                session_end(l, p, NULL, false);
                return;
            }
            if (rc != MESH_OK) {
                char why[300];
                strcopy(why, sizeof why, mesh_errmsg()[0] ? mesh_errmsg() : mesh_strerror(rc));
                session_end(l, p, why, true);
                return;
            }
            p->out_pending = true;
        }
        int rc = mesh_wire_send(sock, p->initiator ? NULL : p->rid, p->initiator ? 0 : p->rid_len,
                                p->opened ? MESH_WIRE_DATA : MESH_WIRE_OPEN, p->sid, p->out.data,
                                p->out.len);
        if (rc == MESH_EAGAIN) {
            p->blocked = true;
            p->blocked_until = now + ROUTER_RETRY_MS;
            return;
        }
        if (rc != MESH_OK) {
            char why[300];
            snprintf(why, sizeof why, "%s",
                     rc == MESH_ECLOSED ? "the peer disconnected" : mesh_errmsg());
            session_end(l, p, why, false);
            return;
        }
        p->blocked = false;
        p->out_pending = false;
        p->opened = true;
    }
    p->more = true;
}

static void session_feed(mesh_loop *l, peer *p, const uint8_t *frame, size_t len, uint64_t now)
{
    int rc = mesh_session_recv(p->sess, frame, len, now);
    if (rc != MESH_OK)
        mesh_log_debug("session with %s: %s", p->ks,
                       mesh_errmsg()[0] ? mesh_errmsg() : mesh_strerror(rc));
    session_pump(l, p, now);
}

/* Starts an initiator session with every peer that wants one and can have one. */
static void schedule(mesh_loop *l, uint64_t now)
{
    size_t n = l->npeers_used;
    for (size_t k = 0; k < n && l->active < MESH_SESSIONS_MAX; k++) {
        peer *p = &l->peers[(l->rr + k) % n];
        if (!p->used || !p->want || p->sess || !p->connected || now < p->retry_mono) continue;
        if (session_new(l, p, true, random_sid(), now) != MESH_OK) {
            p->retry_mono = now + RETRY_MS_MAX;
            continue;
        }
        session_pump(l, p, now);
    }
    if (n) l->rr = (l->rr + 1) % n;
}

/* ---- Messages from the ROUTER (sessions peers started) and DEALERs (sessions we started) ----- */

static void on_router_msg(mesh_loop *l, mesh_wire_msg *m, uint64_t now)
{
    peer *p = peer_add(l, m->peer, SRC_INBOUND);
    if (p == NULL) return;
    p->last_seen_ms = wall_ms(l);
    p->last_seen_mono = now;
    if (m->kind == MESH_WIRE_OPEN) {
        memcpy(p->rid, m->rid, m->rid_len);
        p->rid_len = m->rid_len;
        if (p->sess) {
            if (!p->initiator) {
                /* The peer started afresh (it restarted or gave up on the old one). */
                session_end(l, p, "replaced by a new session from the peer", false);
            } else if (memcmp(l->node->id.pk, p->pk, 32) < 0) {
                /* Both sides dialled at once: the session of the smaller key goes ahead. */
                mesh_wire_send(l->tr.router, m->rid, m->rid_len, MESH_WIRE_BUSY, m->sid, NULL, 0);
                return;
            } else {
                mesh_session *s = p->sess;
                p->sess = NULL;
                mesh_session_free(s);
                l->active--;
                jobs_session_ended(l, p, &(mesh_session_stats){0}, false, "busy: crossed");
            }
        }
        if (l->active >= MESH_SESSIONS_MAX) {
            mesh_wire_send(l->tr.router, m->rid, m->rid_len, MESH_WIRE_BUSY, m->sid, NULL, 0);
            return;
        }
        if (session_new(l, p, false, m->sid, now) != MESH_OK) {
            mesh_wire_send(l->tr.router, m->rid, m->rid_len, MESH_WIRE_BUSY, m->sid, NULL, 0);
            return;
        }
        session_feed(l, p, m->frame, m->frame_len, now);
        return;
    }
    if (p->sess == NULL || p->initiator || p->sid != m->sid) {
        mesh_log_debug("dropped a stale message (kind %u) from %s", m->kind, p->ks);
        return;
    }
    memcpy(p->rid, m->rid, m->rid_len);
    p->rid_len = m->rid_len;
    if (m->kind == MESH_WIRE_DATA) session_feed(l, p, m->frame, m->frame_len, now);
    else if (m->kind == MESH_WIRE_CLOSE) session_end(l, p, "the peer closed the session", false);
}

static void on_dealer_msg(mesh_loop *l, peer *p, mesh_wire_msg *m, uint64_t now)
{
    p->last_seen_ms = wall_ms(l);
    p->last_seen_mono = now;
    if (p->sess == NULL || !p->initiator || p->sid != m->sid) {
        mesh_log_debug("dropped a stale message (kind %u) from %s", m->kind, p->ks);
        return;
    }
    switch (m->kind) {
    case MESH_WIRE_DATA: session_feed(l, p, m->frame, m->frame_len, now); break;
    case MESH_WIRE_BUSY: session_end(l, p, "the peer is busy", false); break;
    case MESH_WIRE_CLOSE: session_end(l, p, "the peer closed the session", false); break;
    default: mesh_log_debug("unexpected message kind %u from %s", m->kind, p->ks); break;
    }
}

static void drain_socket(mesh_loop *l, void *sock, peer *p, uint64_t now)
{
    bool router = p == NULL;
    for (int i = 0; i < MESH_NET_RECV_BATCH_MAX; i++) {
        mesh_wire_msg m;
        int rc = mesh_wire_recv(sock, router, &m);
        if (rc == MESH_EAGAIN) return;
        if (rc != MESH_OK) {
            mesh_log_warn("%s: %s", router ? "incoming connection" : p->ks, mesh_errmsg());
            if (rc == MESH_EIO) return;
            continue;
        }
        if (router) on_router_msg(l, &m, now);
        else on_dealer_msg(l, p, &m, now);
        mesh_wire_msg_close(&m);
        /* The dealer may have been closed by what the message did (roster change). */
        if (!router && p->dealer.sock != sock) return;
    }
}

static void on_dealer_event(mesh_loop *l, peer *p, mesh_dealer_ev ev, uint64_t now)
{
    switch (ev) {
    case MESH_DEALER_UP: {
        p->connected = true;
        p->dealer_fail = 0;
        p->last_seen_ms = wall_ms(l);
        p->last_seen_mono = now;
        mesh_log_info("connected to %s at %s", p->ks, p->endpoint);
        /* A new or returning peer: sync unless we already are level with it (it dialled us
         * first and a session ran since this process started, and nothing changed here; its
         * own changes it pushes itself). */
        if (!p->synced_valid || p->synced_gen != l->gen) peer_want(l, p, "connected");
        p->retry_mono = 0;
        l->persist_dirty = true;
        break;
    }
    case MESH_DEALER_DOWN:
        if (p->connected) mesh_log_info("lost the connection to %s at %s", p->ks, p->endpoint);
        p->connected = false;
        if (p->sess && p->initiator) session_end(l, p, "connection lost", false);
        break;
    case MESH_DEALER_REFUSED:
    case MESH_DEALER_BADKEY:
        if (p->dealer_fail != (int)ev) {
            const char *msg = ev == MESH_DEALER_REFUSED
                                  ? "it refused our key (is this node on its roster?)"
                                  : "the handshake failed (the node there has another key, or "
                                    "is not meshsync)";
            char full[400];
            snprintf(full, sizeof full, "%s at %s: %s", p->ks, p->endpoint, msg);
            mesh_log_warn("cannot connect to %s", full);
            peer_error(l, p, msg);
            jobs_peer_failed(l, p, msg);
        }
        p->dealer_fail = (int)ev;
        p->connected = false;
        break;
    default: break;
    }
}

/* ---- Discovery ------------------------------------------------------------------------------- */

static void on_discovered(mesh_loop *l, const mesh_discovered *d, uint64_t now)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &d->from.sin_addr, ip, sizeof ip);
    if (d->port == 0 && d->kind != MESH_BEACON_REPLY) return;  /* a dial-only prober */
    /* A reply to a probe resolves the static peer we probed at that address; the port alone
     * decides when the reply came from another address of the same host. */
    int sidx = -1, by_port = -1, port_matches = 0;
    for (size_t i = 0; i < l->nstatics && d->kind == MESH_BEACON_REPLY; i++) {
        static_peer *s = &l->statics[i];
        if (s->addr.sin_port != d->from.sin_port) continue;
        if (s->addr.sin_addr.s_addr == d->from.sin_addr.s_addr) {
            sidx = (int)i;
            break;
        }
        if (!s->resolved) {
            by_port = (int)i;
            port_matches++;
        }
    }
    if (sidx < 0 && port_matches == 1) sidx = by_port;
    peer *p = peer_find(l, d->pk);
    bool fresh = p == NULL;
    unsigned src = sidx >= 0 ? SRC_STATIC : SRC_BEACON;
    p = peer_add(l, d->pk, src);
    if (p == NULL) return;
    if (sidx >= 0) {
        static_peer *s = &l->statics[sidx];
        if (!s->resolved) {
            s->resolved = true;
            memcpy(s->pk, d->pk, 32);
            mesh_log_info("static peer %s is %s", s->endpoint, p->ks);
        }
        strcopy(p->endpoint, sizeof p->endpoint, s->endpoint);
        jobs_static_resolved(l, sidx, p);
    } else if (d->port != 0 && !(p->src & SRC_STATIC)) {
        char ep[MESH_ENDPOINT_MAX];
        snprintf(ep, sizeof ep, "tcp://%s:%u", ip, (unsigned)d->port);
        if (strcmp(ep, p->endpoint) != 0) {
            if (fresh || p->endpoint[0] == '\0')
                mesh_log_info("found peer %s at %s (%s)", p->ks, ep,
                              d->kind == MESH_BEACON ? "LAN beacon" : "it probed us");
            strcopy(p->endpoint, sizeof p->endpoint, ep);
            l->persist_dirty = true;
        }
    }
    uint64_t beacon_ms = l->o.beacon_interval_ms ? l->o.beacon_interval_ms
                                                 : MESH_BEACON_INTERVAL_MS_DEFAULT;
    bool away = p->last_seen_mono == 0 ||
                now - p->last_seen_mono > (uint64_t)PEER_AWAY_BEACONS * beacon_ms;
    p->last_seen_ms = wall_ms(l);
    p->last_seen_mono = now;
    peer_dial(l, p);
    if (away && !fresh && p->connected) peer_want(l, p, "returning peer");
}

static void drain_udp(mesh_loop *l, int fd, uint64_t now)
{
    for (int i = 0; i < MESH_DISCOVERY_RECV_MAX; i++) {
        mesh_discovered d;
        int rc = mesh_discovery_recv(&l->disc, fd, &d);
        if (rc == MESH_EAGAIN) return;
        if (rc == MESH_OK) on_discovered(l, &d, now);
    }
}

static void probe_statics(mesh_loop *l, uint64_t now)
{
    for (size_t i = 0; i < l->nstatics; i++) {
        static_peer *s = &l->statics[i];
        /* A static peer given with its key is probed once anyway: the probe carries our port,
         * so the peer learns where to dial us and can push its own changes. */
        if ((s->resolved && !s->announce) || now < s->next_probe_mono) continue;
        s->announce = false;
        if (mesh_discovery_probe(&l->disc, &s->addr) != MESH_OK && !s->warned) {
            mesh_log_warn("%s", mesh_errmsg());
            s->warned = true;
        }
        s->probe_ivl_ms = s->probe_ivl_ms ? s->probe_ivl_ms * 2 : PROBE_IVL_MS_MIN;
        if (s->probe_ivl_ms > PROBE_IVL_MS_MAX) s->probe_ivl_ms = PROBE_IVL_MS_MAX;
        s->next_probe_mono = now + s->probe_ivl_ms;
    }
}

static int static_add(mesh_loop *l, const char *spec)
{
    if (l->nstatics == STATIC_MAX)
        return mesh_err(MESH_ELIMIT, "more than %u static peers", STATIC_MAX);
    static_peer *s = &l->statics[l->nstatics];
    memset(s, 0, sizeof *s);
    const char *at = strchr(spec, '@');
    const char *ep = at ? at + 1 : spec;
    if (strlen(ep) >= sizeof s->endpoint)
        return mesh_err(MESH_EINVAL, "peer address '%s' is too long", ep);
    int rc = mesh_endpoint_parse(ep, &s->addr);
    if (rc != MESH_OK) return rc;
    strcopy(s->endpoint, sizeof s->endpoint, ep);
    for (size_t i = 0; i < l->nstatics; i++)
        if (strcmp(l->statics[i].endpoint, s->endpoint) == 0) return (int)i;
    l->nstatics++;
    if (at) {
        uint8_t pk[32];
        char hex[65];
        if (at - spec == 64) {
            memcpy(hex, spec, 64);
            hex[64] = '\0';
        }
        if (at - spec != 64 || mesh_hex_decode(hex, pk, 32) != MESH_OK)
            return mesh_err(MESH_EINVAL, "peer '%s': the part before '@' must be the peer's key "
                            "(64 hex characters)", spec);
        peer *p = peer_add(l, pk, SRC_STATIC);
        if (p == NULL)
            return mesh_err(MESH_EPERM, "peer '%s': that key is not on the roster", spec);
        s->resolved = true;
        s->announce = l->tr.port != 0;
        memcpy(s->pk, pk, 32);
        strcopy(p->endpoint, sizeof p->endpoint, s->endpoint);
    }
    return (int)(l->nstatics - 1);
}

/* ---- Persistence of peers (the last-known peers cache and per-peer stats) -------------------- */

static json_t *peer_json(const mesh_loop *l, const peer *p, bool live)
{
    json_t *o = json_object();
    char hex[65];
    mesh_hex_encode(p->pk, 32, hex);
    json_object_set_new(o, "key", json_string(hex));
    json_object_set_new(o, "endpoint", json_string(p->endpoint));
    json_t *src = json_array();
    if (p->src & SRC_STATIC) json_array_append_new(src, json_string("static"));
    if (p->src & SRC_BEACON) json_array_append_new(src, json_string("beacon"));
    if (p->src & SRC_CACHE) json_array_append_new(src, json_string("cache"));
    if (p->src & SRC_INBOUND) json_array_append_new(src, json_string("inbound"));
    json_object_set_new(o, "sources", src);
    json_object_set_new(o, "last_seen_ms", json_integer((json_int_t)p->last_seen_ms));
    json_object_set_new(o, "last_sync_ms", json_integer((json_int_t)p->last_sync_ms));
    json_object_set_new(o, "sessions_ok", json_integer((json_int_t)p->sessions_ok));
    json_object_set_new(o, "sessions_failed", json_integer((json_int_t)p->sessions_failed));
    json_object_set_new(o, "ops_sent", json_integer((json_int_t)p->ops_sent));
    json_object_set_new(o, "ops_received", json_integer((json_int_t)p->ops_received));
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)p->bytes_sent));
    json_object_set_new(o, "bytes_received", json_integer((json_int_t)p->bytes_received));
    json_object_set_new(o, "ops_rejected", json_integer((json_int_t)p->ops_rejected));
    json_object_set_new(o, "last_error",
                        p->last_error[0] ? json_string(p->last_error) : json_null());
    json_object_set_new(o, "last_error_ms", json_integer((json_int_t)p->last_error_ms));
    if (live) {
        json_object_set_new(o, "connected", json_boolean(p->connected));
        if (p->sess) {
            mesh_session_stats st;
            mesh_session_stats_get(p->sess, &st);
            json_t *s = stats_json(json_object(), &st);
            json_object_set_new(s, "initiator", json_boolean(p->initiator));
            json_object_set_new(s, "elapsed_ms",
                                json_integer((json_int_t)(mono_ms() - p->sess_start_mono)));
            json_object_set_new(o, "session", s);
        } else {
            json_object_set_new(o, "session", json_null());
        }
    }
    (void)l;
    return o;
}

static void persist(mesh_loop *l)
{
    if (!l->o.persist) return;
    char path[4200], tmp[4300];
    if (path_in_dir(l, MESH_PEERS_FILE, path, sizeof path) != MESH_OK) return;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    json_t *root = json_object();
    json_object_set_new(root, "version", json_integer(1));
    json_t *arr = json_array();
    for (size_t i = 0; i < l->npeers_used; i++)
        if (l->peers[i].used) json_array_append_new(arr, peer_json(l, &l->peers[i], false));
    json_object_set_new(root, "peers", arr);
    /* Not fsynced: it is a cache and statistics; losing the last minutes of it is harmless. */
    int rc = json_dump_file(root, tmp, JSON_INDENT(1));
    json_decref(root);
    if (rc != 0 || rename(tmp, path) != 0) {
        mesh_log_warn("cannot write %s; peer statistics will not survive a restart", path);
        unlink(tmp);
    }
    l->persist_dirty = false;
}

static uint64_t ju64(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void load_cache(mesh_loop *l)
{
    char path[4200];
    if (path_in_dir(l, MESH_PEERS_FILE, path, sizeof path) != MESH_OK) return;
    if (access(path, F_OK) != 0) return;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    json_t *arr = root ? json_object_get(root, "peers") : NULL;
    if (!json_is_array(arr)) {
        mesh_log_warn("ignoring %s: %s", path, root ? "no peers array" : je.text);
        json_decref(root);
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *key = json_string_value(json_object_get(e, "key"));
        uint8_t pk[32];
        if (key == NULL || strlen(key) != 64 || mesh_hex_decode(key, pk, 32) != MESH_OK) continue;
        peer *p = peer_add(l, pk, 0);
        if (p == NULL) continue;  /* no longer on the roster */
        const char *ep = json_string_value(json_object_get(e, "endpoint"));
        /* Kept even when not dialled (use_cache off), so that saving does not forget it. */
        if (ep && ep[0] && p->endpoint[0] == '\0' && strlen(ep) < sizeof p->endpoint) {
            strcopy(p->endpoint, sizeof p->endpoint, ep);
            p->src |= SRC_CACHE;
        }
        p->last_seen_ms = ju64(e, "last_seen_ms");
        p->last_sync_ms = ju64(e, "last_sync_ms");
        p->sessions_ok = ju64(e, "sessions_ok");
        p->sessions_failed = ju64(e, "sessions_failed");
        p->ops_sent = ju64(e, "ops_sent");
        p->ops_received = ju64(e, "ops_received");
        p->bytes_sent = ju64(e, "bytes_sent");
        p->bytes_received = ju64(e, "bytes_received");
        p->ops_rejected = ju64(e, "ops_rejected");
        const char *err = json_string_value(json_object_get(e, "last_error"));
        if (err) strcopy(p->last_error, sizeof p->last_error, err);
        p->last_error_ms = ju64(e, "last_error_ms");
    }
    json_decref(root);
}

/* ---- Control socket -------------------------------------------------------------------------- */

static json_t *daemon_json(mesh_loop *l)
{
    json_t *d = json_object();
    char hex[65];
    mesh_hex_encode(l->node->id.pk, 32, hex);
    json_object_set_new(d, "pid", json_integer(getpid()));
    json_object_set_new(d, "identity", json_string(hex));
    json_object_set_new(d, "listen", json_string(l->tr.endpoint));
    json_object_set_new(d, "uptime_ms", json_integer((json_int_t)(mono_ms() - l->start_mono)));
    json_object_set_new(d, "discovery", json_boolean(l->disc.bcast_fd >= 0));
    json_object_set_new(d, "roster_members", json_integer((json_int_t)l->roster.count));
    if (l->team_mode) {
        char auth[65];
        mesh_hex_encode(l->authority, 32, auth);
        json_object_set_new(d, "team_authority", json_string(auth));
        json_object_set_new(d, "roster_version", json_integer((json_int_t)l->roster_version));
    }
    json_object_set_new(d, "sessions_active", json_integer((json_int_t)l->active));
    json_object_set_new(d, "sessions_total", json_integer((json_int_t)l->sessions_total));
    json_object_set_new(d, "refused_connections", json_integer((json_int_t)l->zap.refused));
    return d;
}

static json_t *peers_json(mesh_loop *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->npeers_used; i++)
        if (l->peers[i].used) json_array_append_new(arr, peer_json(l, &l->peers[i], true));
    return arr;
}

static json_t *error_json(const char *msg)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(msg));
    return o;
}

/* Creates a manual sync job: with `endpoint`, with that peer only; else with every peer we can
 * dial or that is connected. */
static json_t *control_sync(mesh_loop *l, const char *endpoint, uint64_t connect_ms)
{
    job *j = job_new(l);
    if (j == NULL) return error_json("too many syncs in progress; try again in a moment");
    uint64_t now = mono_ms();
    j->deadline_mono = now + (connect_ms ? connect_ms : MESH_JOB_CONNECT_MS_DEFAULT);
    if (endpoint) {
        int si = static_add(l, endpoint);
        if (si < 0) {
            j->used = false;
            return error_json(mesh_errmsg());
        }
        static_peer *s = &l->statics[si];
        peer *p = s->resolved ? peer_find(l, s->pk) : NULL;
        if (p) {
            job_add_peer(l, j, p, si);
            peer_dial(l, p);
        } else {
            job_add_peer(l, j, NULL, si);
            s->next_probe_mono = 0;
            s->probe_ivl_ms = 0;
        }
    } else {
        for (size_t i = 0; i < l->npeers_used; i++) {
            peer *p = &l->peers[i];
            if (p->used && (p->dealer.sock || dialable(l, p))) job_add_peer(l, j, p, -1);
        }
        for (size_t i = 0; i < l->nstatics; i++)
            if (!l->statics[i].resolved) job_add_peer(l, j, NULL, (int)i);
        if (j->n == 0)
            snprintf(j->note, sizeof j->note, "no peers known yet: none found by discovery, "
                     "none given with --peer, none cached");
    }
    jobs_check(l, now);
    json_t *o = json_object();
    json_object_set_new(o, "job", json_integer(j->id));
    return o;
}

static json_t *control_handle(mesh_loop *l, json_t *req)
{
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (cmd == NULL) return error_json("request has no \"cmd\"");
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "peers") == 0) {
        json_t *o = json_object();
        json_object_set_new(o, "daemon", daemon_json(l));
        json_object_set_new(o, "peers", peers_json(l));
        return o;
    }
    if (strcmp(cmd, "sync") == 0) {
        const char *ep = json_string_value(json_object_get(req, "peer"));
        return control_sync(l, ep, ju64(req, "connect_ms"));
    }
    if (strcmp(cmd, "job") == 0) {
        uint64_t id = ju64(req, "id");
        for (size_t k = 0; k < JOBS_MAX; k++)
            if (l->jobs[k].used && l->jobs[k].id == id) return job_json(l, &l->jobs[k]);
        return error_json("no such sync job (finished more than two minutes ago?)");
    }
    return error_json("unknown command");
}

static void control_serve(mesh_loop *l)
{
    if (l->control == NULL) return;
    for (int i = 0; i < 16; i++) {
        char buf[CONTROL_REQ_BYTES_MAX + 1];
        int n = zmq_recv(l->control, buf, CONTROL_REQ_BYTES_MAX, ZMQ_DONTWAIT);
        if (n < 0) return;
        json_t *resp;
        if (n > (int)CONTROL_REQ_BYTES_MAX) {
            resp = error_json("request too large");
        } else {
            buf[n] = '\0';
            json_error_t je;
            json_t *req = json_loads(buf, 0, &je);
            resp = req ? control_handle(l, req) : error_json("request is not JSON");
            json_decref(req);
        }
        char *text = json_dumps(resp, JSON_COMPACT);
        json_decref(resp);
        if (text) {
            zmq_send(l->control, text, strlen(text), 0);
            free(text);
        } else {
            zmq_send(l->control, "{}", 2, 0);
        }
    }
}

/* ---- Roster ---------------------------------------------------------------------------------- */

/* Drops peers that are no longer on the roster: their sessions end and their connections
 * close (ZAP refuses them from now on). */
static void roster_prune(mesh_loop *l)
{
    for (size_t i = 0; i < l->npeers_used; i++) {
        peer *p = &l->peers[i];
        if (!p->used || mesh_roster_find(&l->roster, p->pk)) continue;
        mesh_log_info("peer %s is no longer on the roster; disconnecting", p->ks);
        if (p->sess) session_end(l, p, "removed from the roster", true);
        mesh_dealer_close(&p->dealer);
        mesh_buf_fini(&p->out);
        p->used = false;
    }
}

static void roster_reload(mesh_loop *l)
{
    if (!l->roster_from_file || !mesh_roster_changed(&l->roster)) return;
    mesh_roster fresh;
    if (mesh_roster_load(l->roster.path, &fresh) != MESH_OK) {
        mesh_log_error("keeping the old roster: %s", mesh_errmsg());
        /* Do not retry until the file changes again. */
        struct stat st;
        if (stat(l->roster.path, &st) == 0) {
            l->roster.mtime = st.st_mtim.tv_sec;
            l->roster.mtime_ns = st.st_mtim.tv_nsec;
        }
        return;
    }
    mesh_roster_fini(&l->roster);
    l->roster = fresh;
    mesh_log_info("reloaded the roster %s: %zu members", l->roster.path, l->roster.count);
    roster_prune(l);
}

typedef struct team_read {
    uint64_t version;
    mesh_team *team;
    bool load;
} team_read;

static int team_read_fn(mesh_txn *t, void *ctx)
{
    team_read *r = ctx;
    int rc = mesh_store_roster_version(t, &r->version);
    if (rc == MESH_OK && r->load && r->version > 0) rc = mesh_store_roster_get(t, &r->team);
    return rc;
}

/* Takes up the signed roster the store holds, if it is not the one in use. Sessions running
 * with a peer that left the roster end at once; the others go on under the new rules. */
static int team_refresh(mesh_loop *l, bool force)
{
    team_read r = {0};
    int rc = mesh_store_read(l->node->store, team_read_fn, &r);
    if (rc != MESH_OK || (!force && r.version == l->roster_version)) return rc;
    r.load = true;
    rc = mesh_store_read(l->node->store, team_read_fn, &r);
    mesh_roster fresh;
    if (rc == MESH_OK) rc = mesh_roster_from_team(r.team, l->authority, &fresh);
    if (rc != MESH_OK) {
        mesh_team_free(r.team);
        return rc;
    }
    bool running = l->zap_on || l->disc_on;  /* not the load at start-up */
    mesh_roster_fini(&l->roster);
    l->roster = fresh;
    mesh_team_free(l->team);
    l->team = r.team;
    l->roster_version = r.version;
    if (r.team == NULL) {
        char auth[65];
        mesh_hex_encode(l->authority, 32, auth);
        mesh_log_info("this node joined the team of authority %.16s... but holds no roster yet; "
                      "it gets one from a member dialled with --peer KEY@tcp://HOST:PORT", auth);
        return MESH_OK;
    }
    const mesh_team_member *self = mesh_team_find(r.team, l->node->id.pk);
    mesh_log_info("team roster version %" PRIu64 ": %zu members admitted%s", r.version,
                  l->roster.count,
                  self == NULL     ? "; this node is not on it, so members will refuse it"
                  : self->removed ? "; this node has been removed from the team"
                                  : "");
    if (!running) return MESH_OK;
    roster_prune(l);
    /* What each side may hold has changed (a first roster lets this node send its own ops): sync
     * again with every peer still connected. */
    for (size_t i = 0; i < l->npeers_used; i++) {
        peer *p = &l->peers[i];
        if (!p->used) continue;
        p->synced_valid = false;
        if (p->connected) peer_want(l, p, "new roster");
    }
    return MESH_OK;
}

/* ---- Setup and teardown -------------------------------------------------------------------- */

static int take_lock(mesh_loop *l)
{
    char path[4200];
    int rc = path_in_dir(l, MESH_LOCK_FILE, path, sizeof path);
    if (rc != MESH_OK) return rc;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return mesh_err(MESH_EIO, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = read(fd, pid, sizeof pid - 1);
        pid[n > 0 ? n : 0] = '\0';
        close(fd);
        return mesh_err(MESH_EAGAIN, "a daemon is already running on %s (pid %s); stop it "
                        "first, or talk to it with 'meshsync sync' and 'meshsync peers'",
                        l->dir, pid[0] ? pid : "?");
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)n) != n) {
        /* The pid is only informative. */
    }
    l->lock_fd = fd;
    return MESH_OK;
}

static int control_open(mesh_loop *l)
{
    char path[4200], ep[4300];
    int rc = path_in_dir(l, MESH_CONTROL_FILE, path, sizeof path);
    if (rc != MESH_OK) return rc;
    if (strlen(path) > 100)
        return mesh_err(MESH_EINVAL, "the control socket path %s is longer than Unix sockets "
                        "allow (~100 bytes); use a shorter --data path", path);
    snprintf(ep, sizeof ep, "ipc://%s", path);
    l->control = zmq_socket(l->tr.zctx, ZMQ_REP);
    if (l->control == NULL) return mesh_err(MESH_EIO, "cannot create the control socket");
    int linger = 0;
    zmq_setsockopt(l->control, ZMQ_LINGER, &linger, sizeof linger);
    int64_t max = CONTROL_REQ_BYTES_MAX;
    zmq_setsockopt(l->control, ZMQ_MAXMSGSIZE, &max, sizeof max);
    /* We hold the lock, so a socket file left there is a crashed daemon's. */
    unlink(path);
    mode_t old = umask(0077);
    int b = zmq_bind(l->control, ep);
    umask(old);
    if (b != 0)
        return mesh_err(MESH_EIO, "cannot bind the control socket %s: %s", path,
                        zmq_strerror(zmq_errno()));
    return MESH_OK;
}

static int team_get_fn(mesh_txn *t, void *ctx) { return mesh_store_team_get(t, ctx); }

/* The node joined a team (`meshsync team join` or `team create`) while the loop ran: take it
 * up as a start in a team would have, so no restart is needed. From now on the roster is the
 * team's, signed in the store, and no longer the file. */
static void team_adopt(mesh_loop *l)
{
    int rc = mesh_store_read(l->node->store, team_get_fn, l->authority);
    if (rc == MESH_ENOTFOUND) return;
    if (rc != MESH_OK) {
        mesh_log_warn("cannot read the node's team: %s", mesh_errmsg());
        return;
    }
    char auth[65];
    mesh_hex_encode(l->authority, 32, auth);
    mesh_log_info("this node joined the team of authority %.16s... while running; the team's "
                  "roster replaces %s", auth, l->roster.path[0] ? l->roster.path : "the roster");
    /* Sessions begun under the old roster run without the team's scope filters: end them. The
     * peers the team admits are synced again under its rules. */
    for (size_t i = 0; i < l->npeers_used; i++)
        if (l->peers[i].used && l->peers[i].sess)
            session_end(l, &l->peers[i], "this node joined a team", true);
    l->team_mode = true;
    l->roster_from_file = false;
    if (team_refresh(l, true) != MESH_OK)
        mesh_log_warn("cannot read the team roster: %s", mesh_errmsg());
}

int mesh_loop_new(const mesh_loop_opts *o, mesh_loop **out)
{
    *out = NULL;
    mesh_err_clear();
    mesh_loop *l = calloc(1, sizeof *l);
    if (l == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
    l->peers = calloc(MESH_PEERS_MAX, sizeof *l->peers);
    l->jobs = calloc(JOBS_MAX, sizeof *l->jobs);
    l->lock_fd = -1;
    l->once_job = -1;
    l->disc.bcast_fd = l->disc.ucast_fd = -1;
    if (l->peers == NULL || l->jobs == NULL) {
        mesh_loop_free(l);
        return mesh_err(MESH_ENOMEM, "out of memory");
    }
    l->o = *o;
    l->node = o->node;
    strcopy(l->dir, sizeof l->dir, o->node->dir);
    l->start_mono = mono_ms();
    l->start_ms = wall_ms(l);
    int rc = MESH_OK;

    if (!o->roster) {
        /* A node in a team takes its roster from the store; the file is for nodes in none. */
        rc = mesh_store_read(l->node->store, team_get_fn, l->authority);
        if (rc == MESH_OK) l->team_mode = true;
        else if (rc == MESH_ENOTFOUND) rc = MESH_OK;
    }
    if (rc != MESH_OK) {
        /* the store could not be read */
    } else if (l->team_mode) {
        rc = team_refresh(l, true);
    } else if (o->roster) {
        /* Keep a private copy: the loop may outlive the caller's roster. */
        uint8_t(*keys)[32] = malloc(o->roster->count * 32 + 1);
        if (keys == NULL) {
            rc = mesh_err(MESH_ENOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < o->roster->count; i++)
                memcpy(keys[i], o->roster->members[i].ed_pk, 32);
            rc = mesh_roster_from_keys((const uint8_t(*)[32])keys, o->roster->count, &l->roster);
            free(keys);
        }
    } else {
        char path[4200];
        if (o->roster_path) strcopy(path, sizeof path, o->roster_path);
        else rc = path_in_dir(l, MESH_ROSTER_FILE, path, sizeof path);
        if (rc == MESH_OK) rc = mesh_roster_load(path, &l->roster);
        l->roster_from_file = true;
    }
    if (rc == MESH_OK && !l->team_mode && mesh_roster_find(&l->roster, l->node->id.pk) == NULL)
        mesh_log_warn("this node's own key is not on the roster %s: peers with the same roster "
                      "will refuse it", l->roster.path[0] ? l->roster.path : "(memory)");
    if (rc == MESH_OK && o->control) rc = take_lock(l);
    if (rc == MESH_OK) rc = mesh_transport_init(&l->tr, &l->node->id);
    if (rc == MESH_OK && o->listen) {
        rc = mesh_zap_start(&l->zap, &l->tr, &l->roster);
        l->zap_on = rc == MESH_OK;
        if (rc == MESH_OK) rc = mesh_transport_listen(&l->tr, o->listen);
    }
    if (rc == MESH_OK) {
        mesh_discovery_opts dopt = {
            .broadcast = o->discovery,
            .discovery_port = o->discovery_port,
            .broadcast_addr = o->broadcast_addr,
            .listen_port = l->tr.port,
        };
        rc = mesh_discovery_open(&l->disc, &dopt, &l->roster, l->node->id.pk);
        l->disc_on = rc == MESH_OK;
    }
    if (rc == MESH_OK && o->control) rc = control_open(l);
    for (size_t i = 0; rc == MESH_OK && i < o->npeers; i++) {
        int si = static_add(l, o->peers[i]);
        if (si < 0) rc = si;
    }
    if (rc != MESH_OK) {
        mesh_loop_free(l);
        return rc;
    }
    load_cache(l);
    for (size_t i = 0; i < l->npeers_used; i++)
        if (l->peers[i].used) peer_dial(l, &l->peers[i]);
    l->gen = store_gen(l);
    if (o->once) {
        job *j = job_new(l);
        MESH_ASSERT(j != NULL);
        l->once_job = (int)(j - l->jobs);
        j->deadline_mono = l->start_mono + (o->once_connect_ms ? o->once_connect_ms
                                                               : MESH_JOB_CONNECT_MS_DEFAULT);
        for (size_t i = 0; i < l->nstatics; i++) {
            peer *p = l->statics[i].resolved ? peer_find(l, l->statics[i].pk) : NULL;
            job_add_peer(l, j, p, (int)i);
        }
        for (size_t i = 0; i < l->npeers_used; i++)
            if (l->peers[i].used && dialable(l, &l->peers[i])) job_add_peer(l, j, &l->peers[i], -1);
        if (j->n == 0)
            snprintf(j->note, sizeof j->note, "no peers to sync with: give one with --peer "
                     "tcp://HOST:PORT, or start 'meshsync run' to find peers on the LAN");
    }
    uint64_t now = mono_ms();
    l->next_beacon = now;
    l->next_store_poll = now + (o->store_poll_ms ? o->store_poll_ms : MESH_STORE_POLL_MS_DEFAULT);
    l->next_sync_timer = now + (o->sync_interval_ms ? o->sync_interval_ms
                                                    : MESH_SYNC_INTERVAL_MS_DEFAULT);
    l->next_roster_check = now + ROSTER_CHECK_MS;
    *out = l;
    return MESH_OK;
}

const char *mesh_loop_endpoint(const mesh_loop *l) { return l->tr.endpoint; }

void mesh_loop_free(mesh_loop *l)
{
    if (l == NULL) return;
    if (l->peers) {
        for (size_t i = 0; i < l->npeers_used; i++) {
            peer *p = &l->peers[i];
            if (!p->used) continue;
            if (p->sess) session_end(l, p, "this node is shutting down", true);
        }
        persist(l);
        /* Give the CLOSE messages just queued a moment to leave. */
        int linger = 200;
        if (l->tr.router) zmq_setsockopt(l->tr.router, ZMQ_LINGER, &linger, sizeof linger);
        for (size_t i = 0; i < l->npeers_used; i++) {
            peer *p = &l->peers[i];
            if (!p->used) continue;
            if (p->dealer.sock) zmq_setsockopt(p->dealer.sock, ZMQ_LINGER, &linger, sizeof linger);
            mesh_dealer_close(&p->dealer);
            mesh_buf_fini(&p->out);
        }
    }
    if (l->control) {
        zmq_close(l->control);
        char path[4200];
        if (path_in_dir(l, MESH_CONTROL_FILE, path, sizeof path) == MESH_OK) unlink(path);
    }
    if (l->disc_on) mesh_discovery_close(&l->disc);
    if (l->zap_on) mesh_zap_stop(&l->zap);
    if (l->tr.zctx) mesh_transport_fini(&l->tr);
    mesh_roster_fini(&l->roster);
    mesh_team_free(l->team);
    if (l->lock_fd >= 0) close(l->lock_fd);
    free(l->peers);
    free(l->jobs);
    free(l);
}

/* ---- The loop ------------------------------------------------------------------------------ */

static void timers(mesh_loop *l, uint64_t now)
{
    if (l->disc.bcast_fd >= 0 && now >= l->next_beacon) {
        if (mesh_discovery_beacon(&l->disc) != MESH_OK) mesh_log_debug("%s", mesh_errmsg());
        l->next_beacon = now + jitter(l->o.beacon_interval_ms ? l->o.beacon_interval_ms
                                                              : MESH_BEACON_INTERVAL_MS_DEFAULT);
    }
    probe_statics(l, now);
    if (now >= l->next_store_poll) {
        uint64_t g = store_gen(l);
        if (g != l->gen) mesh_log_debug("store changed: %" PRIu64 " -> %" PRIu64 " ops", l->gen, g);
        l->gen = g;
        if (l->team_mode && team_refresh(l, false) != MESH_OK)
            mesh_log_warn("cannot read the team roster: %s", mesh_errmsg());
        else if (!l->team_mode && l->o.roster == NULL)
            team_adopt(l);
        /* Pass on what changed to every connected peer not already level with us. */
        for (size_t i = 0; i < l->npeers_used; i++) {
            peer *p = &l->peers[i];
            if (p->used && p->connected && p->synced_valid && p->synced_gen != g && !p->sess)
                peer_want(l, p, "store changed");
        }
        l->next_store_poll = now + (l->o.store_poll_ms ? l->o.store_poll_ms
                                                       : MESH_STORE_POLL_MS_DEFAULT);
    }
    if (now >= l->next_sync_timer) {
        for (size_t i = 0; i < l->npeers_used; i++)
            if (l->peers[i].used && l->peers[i].connected) peer_want(l, &l->peers[i], "timer");
        l->next_sync_timer = now + (l->o.sync_interval_ms ? l->o.sync_interval_ms
                                                          : MESH_SYNC_INTERVAL_MS_DEFAULT);
    }
    if (now >= l->next_roster_check) {
        roster_reload(l);
        l->next_roster_check = now + ROSTER_CHECK_MS;
    }
    if (l->roster_dirty) {
        l->roster_dirty = false;
        if (team_refresh(l, false) != MESH_OK)
            mesh_log_warn("cannot read the team roster: %s", mesh_errmsg());
    }
    for (size_t i = 0; i < l->npeers_used; i++) {
        peer *p = &l->peers[i];
        if (!p->used || p->sess == NULL) continue;
        if (now >= mesh_session_expiry(p->sess)) {
            if (mesh_session_handle_expiry(p->sess, now) != MESH_OK)
                mesh_log_debug("session with %s: %s", p->ks, mesh_errmsg());
        }
        session_pump(l, p, now);
    }
    jobs_check(l, now);
    if (l->persist_dirty && now >= l->next_persist) {
        persist(l);
        l->next_persist = now + PERSIST_MIN_MS;
    }
}

static uint64_t next_deadline(mesh_loop *l, uint64_t now)
{
    uint64_t t = now + POLL_MAX_MS;
#define EARLIER(x) \
    do {           \
        if ((x) < t) t = (x); \
    } while (0)
    if (l->disc.bcast_fd >= 0) EARLIER(l->next_beacon);
    EARLIER(l->next_store_poll);
    for (size_t i = 0; i < l->nstatics; i++)
        if (!l->statics[i].resolved) EARLIER(l->statics[i].next_probe_mono);
    for (size_t i = 0; i < l->npeers_used; i++) {
        peer *p = &l->peers[i];
        if (!p->used) continue;
        if (p->sess) {
            EARLIER(mesh_session_expiry(p->sess));
            if (p->blocked && !p->initiator) EARLIER(p->blocked_until);
            if (p->more) EARLIER(now);
        } else if (p->want && p->connected && l->active < MESH_SESSIONS_MAX) {
            EARLIER(p->retry_mono);
        }
    }
#undef EARLIER
    return t;
}

static void report_progress(mesh_loop *l, uint64_t now, bool final)
{
    if (l->once_job < 0 || l->o.progress == NULL) return;
    if (!final && now < l->next_progress) return;
    l->next_progress = now + PROGRESS_MS;
    json_t *j = job_json(l, &l->jobs[l->once_job]);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text) l->o.progress(text, l->o.progress_ctx);
    free(text);
}

/* Polling set: fixed sockets first, then each peer's DEALER and its monitor. */
#define FIXED_ITEMS 5

int mesh_loop_run(mesh_loop *l)
{
    size_t cap = FIXED_ITEMS + 2 * MESH_PEERS_MAX;
    zmq_pollitem_t *items = calloc(cap, sizeof *items);
    int *owner = calloc(cap, sizeof *owner);
    if (items == NULL || owner == NULL) {
        free(items);
        free(owner);
        return mesh_err(MESH_ENOMEM, "out of memory");
    }
    if (l->tr.router) mesh_log_info("listening on %s", l->tr.endpoint);
    int result = MESH_OK;
    for (;;) {
        if (l->o.stop && *l->o.stop) break;
        uint64_t now = mono_ms();
        if (l->once_job >= 0 && l->jobs[l->once_job].done) break;
        size_t n = 0;
        enum { IT_ROUTER = -1, IT_ZAP = -2, IT_CONTROL = -3, IT_BCAST = -4, IT_UCAST = -5 };
#define ADD_ITEM(sock, fd, who) \
    (items[n] = (zmq_pollitem_t){(sock), (fd), ZMQ_POLLIN, 0}, owner[n++] = (who))
        if (l->tr.router) ADD_ITEM(l->tr.router, 0, IT_ROUTER);
        if (l->zap_on) ADD_ITEM(l->zap.sock, 0, IT_ZAP);
        if (l->control) ADD_ITEM(l->control, 0, IT_CONTROL);
        if (l->disc.bcast_fd >= 0) ADD_ITEM(NULL, l->disc.bcast_fd, IT_BCAST);
        if (l->disc.ucast_fd >= 0) ADD_ITEM(NULL, l->disc.ucast_fd, IT_UCAST);
#undef ADD_ITEM
        for (size_t i = 0; i < l->npeers_used; i++) {
            peer *p = &l->peers[i];
            if (!p->used || p->dealer.sock == NULL) continue;
            short ev = ZMQ_POLLIN;
            if (p->sess && p->initiator && p->blocked) ev |= ZMQ_POLLOUT;
            items[n] = (zmq_pollitem_t){p->dealer.sock, 0, ev, 0};
            owner[n++] = (int)i;
            items[n] = (zmq_pollitem_t){p->dealer.monitor, 0, ZMQ_POLLIN, 0};
            owner[n++] = (int)(i + MESH_PEERS_MAX);
        }
        uint64_t deadline = next_deadline(l, now);
        long timeout = deadline > now ? (long)(deadline - now) : 0;
        int pr = zmq_poll(items, (int)n, timeout);
        if (pr < 0 && zmq_errno() != EINTR) {
            result = mesh_err(MESH_EIO, "polling sockets: %s", zmq_strerror(zmq_errno()));
            break;
        }
        now = mono_ms();
        /* ZAP first: handshakes waiting on it hold up peers. Then everything with input. */
        if (l->zap_on) mesh_zap_serve(&l->zap, now);
        for (size_t k = 0; pr > 0 && k < n; k++) {
            if (!(items[k].revents & (ZMQ_POLLIN | ZMQ_POLLOUT))) continue;
            int who = owner[k];
            if (who == IT_ROUTER) drain_socket(l, l->tr.router, NULL, now);
            else if (who == IT_CONTROL) control_serve(l);
            else if (who == IT_BCAST) drain_udp(l, l->disc.bcast_fd, now);
            else if (who == IT_UCAST) drain_udp(l, l->disc.ucast_fd, now);
            else if (who >= (int)MESH_PEERS_MAX) {
                peer *p = &l->peers[who - (int)MESH_PEERS_MAX];
                if (!p->used || p->dealer.monitor != items[k].socket) continue;
                for (int e = 0; e < 16; e++) {
                    mesh_dealer_ev ev = mesh_dealer_event(&p->dealer);
                    if (ev == MESH_DEALER_NONE) break;
                    on_dealer_event(l, p, ev, now);
                }
            } else if (who >= 0) {
                peer *p = &l->peers[who];
                if (!p->used || p->dealer.sock != items[k].socket) continue;
                if (items[k].revents & ZMQ_POLLIN) drain_socket(l, p->dealer.sock, p, now);
                if (p->sess && p->blocked && (items[k].revents & ZMQ_POLLOUT)) {
                    p->blocked = false;
                    session_pump(l, p, now);
                }
            }
        }
        timers(l, now);
        schedule(l, now);
        report_progress(l, now, false);
    }
    if (l->once_job >= 0) {
        job *j = &l->jobs[l->once_job];
        jobs_check(l, mono_ms());
        report_progress(l, mono_ms(), true);
        if (result == MESH_OK) {
            for (size_t i = 0; i < j->n; i++)
                if (j->slots[i].state != SLOT_DONE) {
                    result = mesh_err(j->slots[i].state == SLOT_FAILED ? MESH_ETIMEDOUT
                                                                        : MESH_ECLOSED,
                                      "%s", j->slots[i].error[0] ? j->slots[i].error
                                                                 : "the sync did not finish");
                    break;
                }
            if (j->n == 0) result = mesh_err(MESH_ENOTFOUND, "%s", j->note);
        }
    }
    free(items);
    free(owner);
    return result;
}

/* ---- Control socket client ---------------------------------------------------------------- */

bool mesh_daemon_running(const char *dir)
{
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, MESH_LOCK_FILE) >= sizeof path)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

int mesh_control_call(const char *dir, const char *request, uint32_t timeout_ms, char **reply)
{
    *reply = NULL;
    if (!mesh_daemon_running(dir))
        return mesh_err(MESH_ENOTFOUND, "no daemon is running on %s (start one with 'meshsync "
                        "run --data %s')", dir, dir);
    char ep[4300];
    if ((size_t)snprintf(ep, sizeof ep, "ipc://%s/%s", dir, MESH_CONTROL_FILE) >= sizeof ep)
        return mesh_err(MESH_EINVAL, "path too long: %s", dir);
    void *ctx = zmq_ctx_new();
    if (ctx == NULL) return mesh_err(MESH_ENOMEM, "cannot create a ZeroMQ context");
    void *s = zmq_socket(ctx, ZMQ_REQ);
    int rc = MESH_OK;
    int linger = 0, to = (int)timeout_ms;
    if (s == NULL) {
        rc = mesh_err(MESH_EIO, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &to, sizeof to);
    if (zmq_connect(s, ep) != 0 || zmq_send(s, request, strlen(request), 0) < 0) {
        rc = mesh_err(MESH_EIO, "cannot reach the daemon of %s: %s", dir,
                      zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s, 0) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m);
        rc = e == EAGAIN ? mesh_err(MESH_ETIMEDOUT, "the daemon of %s did not answer within %u "
                                    "ms", dir, (unsigned)timeout_ms)
                         : mesh_err(MESH_EIO, "no answer from the daemon of %s: %s", dir,
                                    zmq_strerror(e));
        goto out;
    }
    size_t n = zmq_msg_size(&m);
    *reply = malloc(n + 1);
    if (*reply == NULL) {
        rc = mesh_err(MESH_ENOMEM, "out of memory");
    } else {
        memcpy(*reply, zmq_msg_data(&m), n);
        (*reply)[n] = '\0';
    }
    zmq_msg_close(&m);
out:
    if (s) zmq_close(s);
    zmq_ctx_term(ctx);
    return rc;
}
