/*
 * sim.c - This file implements one simulation run: the seeded generators, the event queue
 * ordered by (virtual time, push order), node life (stores, crashes, restarts, clocks), the
 * sync policies that decide when sessions start, and the phases of a run: the scenario's
 * duration, then settling (faults off, network healed) until every group converged, then
 * quiescing (no new sessions) until the last session ended, then the checks and the report.
 *
 * Determinism: nothing here reads the wall clock except to report wall time; every random
 * choice comes from a generator seeded by (seed, purpose, node); nodes and peers are visited in
 * id order; events at the same time run in the order they were queued.
 */
#include "sim_int.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Random numbers ----------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sim_rng_seed(sim_rng *r, uint64_t seed, uint64_t purpose, uint64_t index)
{
    uint64_t x = seed;
    uint64_t mix = splitmix64(&x) ^ (purpose * 0xd1342543de82ef95ull);
    x = mix;
    mix = splitmix64(&x) ^ (index * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull);
    x = mix;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sim_rng_next(sim_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sim_rng_unit(sim_rng *r) { return (double)(sim_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t sim_rng_below(sim_rng *r, uint64_t n)
{
    MESH_ASSERT(n > 0);
    /* Lemire's multiply-shift with rejection: unbiased. */
    unsigned __int128 m = (unsigned __int128)sim_rng_next(r) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t thresh = -n % n;
        while (low < thresh) {
            m = (unsigned __int128)sim_rng_next(r) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double sim_rng_range(sim_rng *r, double lo, double hi) { return lo + (hi - lo) * sim_rng_unit(r); }

double sim_rng_exp(sim_rng *r, double mean) { return -mean * log1p(-sim_rng_unit(r)); }

/* ---- Event queue: a binary heap on (t, seq) ----------------------------------------------- */

static bool ev_before(const sim_event *a, const sim_event *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

void sim_push(sim_world *w, uint64_t t, uint32_t type, uint32_t node, uint32_t gen, uint32_t arg,
              sim_frame *frame)
{
    sim_heap *h = &w->heap;
    if (t < w->now) t = w->now;
    if (h->n == h->cap) {
        if (h->cap >= SIM_EVENTS_MAX) {
            /* A bound, not a crash: the run is reported as failed. */
            sim_engine_error(w, "the event queue is full (%u events): the scenario is too large "
                             "for one run", SIM_EVENTS_MAX);
            w->stop = true;
            if (frame && --frame->refs == 0) free(frame);
            return;
        }
        size_t cap = h->cap ? h->cap * 2 : 4096;
        sim_event *ev = realloc(h->ev, cap * sizeof *ev);
        if (ev == NULL) {
            fprintf(stderr, "meshsync-sim: out of memory growing the event queue\n");
            exit(2);
        }
        h->ev = ev;
        h->cap = cap;
    }
    sim_event e = {.t = t, .seq = h->seq++, .type = type, .node = node, .gen = gen, .arg = arg,
                   .frame = frame};
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_before(&e, &h->ev[p])) break;
        h->ev[i] = h->ev[p];
        i = p;
    }
    h->ev[i] = e;
}

static bool heap_pop(sim_heap *h, sim_event *out)
{
    if (h->n == 0) return false;
    *out = h->ev[0];
    sim_event last = h->ev[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const sim_event *best = &last;
        if (l < h->n && ev_before(&h->ev[l], best)) {
            m = l;
            best = &h->ev[l];
        }
        if (r < h->n && ev_before(&h->ev[r], best)) m = r;
        if (m == i) break;
        h->ev[i] = h->ev[m];
        i = m;
    }
    if (h->n > 0) h->ev[i] = last;
    return true;
}

/* ---- Trace, clocks, errors ---------------------------------------------------------------- */

void sim_trace(sim_world *w, uint32_t kind, uint32_t a, uint32_t b, uint64_t x)
{
    uint8_t rec[32];
    mesh_be64_put(rec, w->now);
    mesh_be32_put(rec + 8, kind);
    mesh_be32_put(rec + 12, a);
    mesh_be32_put(rec + 16, b);
    mesh_be64_put(rec + 20, x);
    mesh_be32_put(rec + 28, 0);
    mesh_hash_update(&w->trace, rec, sizeof rec);
}

uint64_t sim_node_ms(const sim_world *w, const sim_node *n)
{
    int64_t ms = (int64_t)w->cfg.epoch_ms + (int64_t)(w->now / 1000) + n->skew_ms;
    return ms < 0 ? 0 : (uint64_t)ms;
}

void sim_engine_error(sim_world *w, const char *fmt, ...)
{
    w->engine_errors++;
    if (w->engine_errors > 1) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->engine_error, sizeof w->engine_error, fmt, ap);
    va_end(ap);
}

bool sim_reachable(const sim_world *w, uint32_t a, uint32_t b)
{
    const sim_node *x = &w->nodes[a], *y = &w->nodes[b];
    return a != b && x->up && y->up && x->loc != SIM_NONE && x->loc == y->loc &&
           x->part == y->part;
}

/* ---- Store counts ------------------------------------------------------------------------- */

static int counts_fn(mesh_txn *t, void *ctx) { return mesh_store_counts_get(t, ctx); }

static void set_held(sim_world *w, sim_node *n, uint64_t held)
{
    uint64_t total = w->nops;
    bool was = n->ops_held >= total, is = held >= total;
    n->ops_held = held;
    if (was && !is) w->ncomplete--;
    if (!was && is) {
        w->ncomplete++;
        if (w->ncomplete == w->nnodes && w->nops > 0) {
            w->converged = (int64_t)w->now;
            if (w->cfg.stop_when_converged && !w->quiescing) {
                w->quiescing = true;
                sim_trace(w, 1000, 0, 0, w->now);
            }
        }
    }
}

/* Re-reads how many ops the node's store holds (after a crash flushed sessions, a restart). */
static void refresh_held(sim_world *w, sim_node *n)
{
    if (n->store == NULL) return;
    mesh_store_counts c;
    if (mesh_store_read(n->store, counts_fn, &c) != MESH_OK) {
        sim_engine_error(w, "node %u: reading store counts failed: %s", n->id, mesh_errmsg());
        return;
    }
    set_held(w, n, c.ops);
}

void sim_store_changed(sim_world *w, sim_node *n, uint64_t ops)
{
    if (ops == 0) return;
    n->store_gen += ops;
    set_held(w, n, n->ops_held + ops);
    if (w->cfg.policy == SIM_POLICY_TRIGGERED) sim_schedule_sync(w, n, w->cfg.change_delay_s);
}

/* ---- Sync policy -------------------------------------------------------------------------- */

static sim_peer_entry *peer_find(sim_node *n, uint32_t peer)
{
    uint32_t lo = 0, hi = n->npeers;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (n->peers[mid].peer < peer) lo = mid + 1;
        else hi = mid;
    }
    return lo < n->npeers && n->peers[lo].peer == peer ? &n->peers[lo] : NULL;
}

static void peer_forget(sim_node *n, uint32_t peer)
{
    sim_peer_entry *e = peer_find(n, peer);
    if (e == NULL) return;
    size_t i = (size_t)(e - n->peers);
    memmove(e, e + 1, (n->npeers - i - 1) * sizeof *e);
    n->npeers--;
}

/* Records that n is level with `peer` as of n's store_gen `gen`. */
void sim_peer_synced(sim_world *w, sim_node *n, uint32_t peer, uint64_t gen)
{
    (void)w;
    sim_peer_entry *e = peer_find(n, peer);
    if (e) {
        e->synced_gen = gen;
        return;
    }
    if (n->npeers == SIM_PEER_TABLE_MAX) return; /* forgetting costs a session, nothing else */
    if (n->npeers == n->peers_cap) {
        uint32_t cap = n->peers_cap ? n->peers_cap * 2 : 16;
        sim_peer_entry *p = realloc(n->peers, cap * sizeof *p);
        if (p == NULL) return;
        n->peers = p;
        n->peers_cap = cap;
    }
    uint32_t i = 0;
    while (i < n->npeers && n->peers[i].peer < peer) i++;
    memmove(n->peers + i + 1, n->peers + i, (n->npeers - i) * sizeof *n->peers);
    n->peers[i] = (sim_peer_entry){.peer = peer, .synced_gen = gen};
    n->npeers++;
}

static bool wants(sim_node *n, uint32_t peer)
{
    const sim_peer_entry *e = peer_find(n, peer);
    return e == NULL || e->synced_gen != n->store_gen;
}

void sim_schedule_sync(sim_world *w, sim_node *n, double delay_s)
{
    if (!n->up || n->sync_queued || w->quiescing || w->cfg.policy != SIM_POLICY_TRIGGERED) return;
    n->sync_queued = true;
    sim_push(w, w->now + (uint64_t)(delay_s * SIM_US), EV_SYNC, n->id, n->gen, 0, NULL);
}

/* A node came into range of others (moved, restarted, partition healed): each side treats the
 * other as a returning peer, as the daemon does, and syncs with it. */
void sim_meet(sim_world *w, uint32_t node)
{
    sim_node *n = &w->nodes[node];
    if (!n->up || n->loc == SIM_NONE) return;
    const uint32_t *m = w->members[n->loc];
    uint32_t cnt = w->nmembers[n->loc];
    bool any = false;
    for (uint32_t i = 0; i < cnt; i++) {
        if (!sim_reachable(w, node, m[i])) continue;
        sim_node *y = &w->nodes[m[i]];
        peer_forget(y, node);
        peer_forget(n, m[i]);
        sim_schedule_sync(w, y, w->cfg.change_delay_s);
        any = true;
    }
    if (any) sim_schedule_sync(w, n, w->cfg.change_delay_s);
}

static void on_sync(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (ev->gen != n->gen) return;
    n->sync_queued = false;
    if (!n->up || w->quiescing || n->loc == SIM_NONE) return;
    const uint32_t *m = w->members[n->loc];
    uint32_t cnt = w->nmembers[n->loc];
    bool blocked = false;
    for (uint32_t k = 0; k < cnt; k++) {
        uint32_t y = m[(n->sync_rr + k) % cnt];
        if (!sim_reachable(w, n->id, y) || !wants(n, y) || sim_conn_busy(w, n->id, y)) continue;
        if (n->nconns >= w->cfg.sessions_max || w->nodes[y].nconns >= w->cfg.sessions_max) {
            blocked = true;
            continue;
        }
        if (sim_conn_open(w, n->id, y) != 0) blocked = true;
    }
    n->sync_rr++;
    /* Peers that could not be served now are tried again when a session ends, and at the
     * latest after a second. */
    if (blocked) sim_schedule_sync(w, n, 1.0 + sim_rng_unit(&n->rng_sync));
}

static void on_round(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (ev->gen != n->gen || w->quiescing) return;
    double next = w->cfg.interval_s;
    if (w->cfg.policy == SIM_POLICY_TRIGGERED) next *= sim_rng_range(&n->rng_sync, 0.9, 1.1);
    sim_push(w, w->now + (uint64_t)(next * SIM_US), EV_ROUND, n->id, n->gen, 0, NULL);
    if (!n->up || n->loc == SIM_NONE) return;
    if (w->cfg.policy == SIM_POLICY_TRIGGERED) {
        /* The sync timer: sync with every peer in range, changed or not. */
        n->npeers = 0;
        sim_schedule_sync(w, n, 0);
        return;
    }
    /* Gossip: `fanout` peers at random among those in range. */
    const uint32_t *m = w->members[n->loc];
    uint32_t cnt = w->nmembers[n->loc];
    for (uint32_t f = 0; f < w->cfg.fanout && n->nconns < w->cfg.sessions_max; f++) {
        for (int attempt = 0; attempt < 8; attempt++) {
            uint32_t y = m[sim_rng_below(&n->rng_sync, cnt)];
            if (!sim_reachable(w, n->id, y) || sim_conn_busy(w, n->id, y) ||
                w->nodes[y].nconns >= w->cfg.sessions_max)
                continue;
            (void)sim_conn_open(w, n->id, y);
            break;
        }
    }
}

/* ---- Node life ---------------------------------------------------------------------------- */

static void draw_skew(sim_world *w, sim_node *n)
{
    double s = w->cfg.skew_s;
    n->skew_ms = s > 0 ? (int64_t)llround(sim_rng_range(&n->rng_clock, -s, s) * 1000.0) : 0;
}

static void start_timers(sim_world *w, sim_node *n)
{
    double phase = sim_rng_unit(&n->rng_sync) * w->cfg.interval_s;
    sim_push(w, w->now + (uint64_t)(phase * SIM_US), EV_ROUND, n->id, n->gen, 0, NULL);
    sim_schedule_sync(w, n, w->cfg.change_delay_s);  /* the first start is a trigger */
    sim_workload_start(w, n);
}

/* Queues the node's next crash, some time after `from`. */
static void schedule_crash(sim_world *w, sim_node *n, uint64_t from)
{
    if (w->cfg.crash_per_hour <= 0) return;
    double dt = sim_rng_exp(&n->rng_fault, 3600.0 / w->cfg.crash_per_hour);
    uint64_t t = from + (uint64_t)(dt * SIM_US);
    if (t < w->end_us) sim_push(w, t, EV_CRASH, n->id, 0, 0, NULL);
}

static void crash(sim_world *w, sim_node *n)
{
    if (!n->up) return;
    sim_trace(w, 2000, n->id, n->gen, 0);
    /* Sessions are dropped: frames in flight to and from the node are lost (their events are
     * stale now) and its peers' sessions time out. See docs/SIMULATOR.md on what a crash keeps. */
    sim_conn_end_all(w, n);
    if (w->up.gw == n->id) sim_uplink_crash(w);
    refresh_held(w, n);
    mesh_store_close(n->store);
    n->store = NULL;
    n->up = false;
    n->gen++;
    n->crashes++;
    w->res->crashes++;
    n->form.active = false;   /* the forms being filled are lost */
    n->npeers = 0;
    n->sync_queued = false;
    n->tx_busy = w->now;
}

static int open_store(sim_world *w, sim_node *n, bool create)
{
    mesh_store_opts o = {.create = create, .no_sync = true,
                         .map_bytes_initial = SIM_MAP_BYTES_INITIAL};
    int rc = mesh_store_open(n->dir, &o, &n->store);
    if (rc != MESH_OK) {
        sim_engine_error(w, "node %u: opening its store %s failed: %s", n->id, n->dir,
                         mesh_errmsg());
        n->store = NULL;
    }
    return rc;
}

typedef struct own_ctx {
    uint64_t sid;
    mesh_stream st;
    bool found;
} own_ctx;

static int own_fn(mesh_txn *t, void *ctx)
{
    own_ctx *c = ctx;
    int rc = mesh_store_stream_get(t, c->sid, &c->st);
    c->found = rc == MESH_OK;
    return rc == MESH_ENOTFOUND ? MESH_OK : rc;
}

static void restart(sim_world *w, sim_node *n)
{
    if (n->up) return;
    sim_trace(w, 2001, n->id, n->gen, 0);
    if (open_store(w, n, false) != MESH_OK) return; /* stays down; the checks report it */
    n->up = true;
    draw_skew(w, n);
    n->tx_busy = w->now;
    refresh_held(w, n);
    /* What the node committed before the crash must be there. */
    own_ctx c = {.sid = n->sid};
    if (mesh_store_read(n->store, own_fn, &c) != MESH_OK) {
        sim_engine_error(w, "node %u: reading its own stream after restart failed: %s", n->id,
                         mesh_errmsg());
    } else {
        uint64_t seq = c.found ? c.st.seq : 0;
        if (seq != n->my_seq || (seq > 0 && memcmp(c.st.tip, n->my_tip, MESH_HASH_BYTES) != 0))
            sim_engine_error(w, "node %u: after a restart its store holds %llu of its own ops, "
                             "but it had committed %llu", n->id, (unsigned long long)seq,
                             (unsigned long long)n->my_seq);
    }
    if (w->up.gw == n->id) sim_uplink_restart(w);
    if (!w->quiescing) {
        start_timers(w, n);
        sim_meet(w, n->id);
    }
}

static void on_crash(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (w->settling || !n->up) return;
    crash(w, n);
    double dt = sim_rng_range(&n->rng_fault, w->cfg.restart_min_s, w->cfg.restart_max_s);
    uint64_t t = w->now + (uint64_t)(dt * SIM_US);
    sim_push(w, t, EV_RESTART, n->id, n->gen, 0, NULL);
    schedule_crash(w, n, t); /* the next one comes after this restart */
}

static void on_restart(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (ev->gen != n->gen) return;
    restart(w, n);
}

/* ---- Phases ------------------------------------------------------------------------------- */

static void begin_quiesce(sim_world *w)
{
    if (w->quiescing) return;
    w->quiescing = true;
    sim_trace(w, 1001, 0, 0, w->now);
}

static void on_end(sim_world *w)
{
    /* The duration is over: no more workload or faults; heal as configured; converge. */
    w->settling = true;
    sim_trace(w, 1002, 0, 0, w->now);
    w->cfg.loss = 0;
    w->cfg.drop = 0;
    w->cfg.duplicate = 0;
    w->cfg.reorder = 0;
    for (uint32_t i = 0; i < w->nnodes; i++) w->nodes[i].form.active = false;
    if (w->cfg.heal >= SIM_HEAL_PARTITIONS) {
        sim_heal_partitions(w);
        for (uint32_t i = 0; i < w->nnodes; i++) restart(w, &w->nodes[i]);
    }
    if (w->cfg.heal == SIM_HEAL_ALL) sim_on_evening(w);
    w->settle_deadline = w->now + (uint64_t)(w->cfg.settle_max_s * SIM_US);
    if (w->quiescing) return;
    sim_push(w, w->now + SIM_US / 10, EV_SETTLE_CHECK, 0, 0, 0, NULL);
}

static void on_settle_check(sim_world *w)
{
    if (w->quiescing) return;
    if (sim_groups_settled(w) || w->now >= w->settle_deadline) {
        begin_quiesce(w);
        return;
    }
    sim_push(w, w->now + SIM_US, EV_SETTLE_CHECK, 0, 0, 0, NULL);
}

static void on_sample(sim_world *w)
{
    if (w->quiescing) return;
    sim_sample_take(w);
    double dt = w->cfg.sample_s > 0 ? w->cfg.sample_s : w->cfg.duration_s / 400.0;
    if (dt < 0.001) dt = 0.001;
    sim_push(w, w->now + (uint64_t)(dt * SIM_US), EV_SAMPLE, 0, 0, 0, NULL);
}

static void dispatch(sim_world *w, const sim_event *ev)
{
    switch ((ev_type)ev->type) {
    case EV_DELIVER: sim_on_deliver(w, ev); break;
    case EV_PUMP: sim_on_pump(w, ev); break;
    case EV_WAKE: sim_on_wake(w, ev); break;
    case EV_SYNC: on_sync(w, ev); break;
    case EV_ROUND: on_round(w, ev); break;
    case EV_WORK: sim_on_work(w, ev); break;
    case EV_FORM: sim_on_form(w, ev); break;
    case EV_CRASH: on_crash(w, ev); break;
    case EV_RESTART: on_restart(w, ev); break;
    case EV_MULE: sim_on_mule(w, ev); break;
    case EV_WALK: sim_on_walk(w, ev); break;
    case EV_EVENING:
        if (!w->settling) sim_on_evening(w);
        break;
    case EV_PARTITION: sim_on_partition(w, ev); break;
    case EV_HEAL: sim_on_heal(w, ev); break;
    case EV_UPLINK_TICK: sim_on_uplink_tick(w, ev); break;
    case EV_UPLINK_ARRIVE: sim_on_uplink_arrive(w, ev); break;
    case EV_UPLINK_ACK: sim_on_uplink_ack(w, ev); break;
    case EV_SAMPLE: on_sample(w); break;
    case EV_END: on_end(w); break;
    case EV_SETTLE_CHECK: on_settle_check(w); break;
    }
}

/* ---- Setup and teardown ------------------------------------------------------------------- */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Each LMDB environment holds a few descriptors: allow thousands of nodes. */
static void raise_fd_limit(uint32_t nodes)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t)nodes * 4 + 256;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
}

static int make_root(sim_world *w)
{
    const char *parent = w->out->workdir;
    if (parent == NULL) parent = getenv("TMPDIR");
    if (parent == NULL || parent[0] == '\0') parent = "/tmp";
    if (mkdir(parent, 0700) != 0 && errno != EEXIST) {
        snprintf(w->res->failure, sizeof w->res->failure, "cannot create work directory %s: %s",
                 parent, strerror(errno));
        return -1;
    }
    char tmpl[sizeof w->root];
    int n = snprintf(tmpl, sizeof tmpl, "%s/meshsync-sim-XXXXXX", parent);
    if (n < 0 || (size_t)n >= sizeof tmpl || mkdtemp(tmpl) == NULL) {
        snprintf(w->res->failure, sizeof w->res->failure,
                 "cannot create a run directory under %s: %s", parent, strerror(errno));
        return -1;
    }
    snprintf(w->root, sizeof w->root, "%s", tmpl);
    return 0;
}

static int nodes_create(sim_world *w)
{
    const sim_config *c = &w->cfg;
    w->nnodes = sim_config_nodes(c);
    w->nodes = calloc(w->nnodes, sizeof *w->nodes);
    if (w->nodes == NULL) return -1;
    uint32_t field = c->teams * c->team_size;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        sim_node *n = &w->nodes[i];
        n->id = i;
        if (i < field) {
            n->role = ROLE_FIELD;
            n->team = i / c->team_size;
            snprintf(n->scope, sizeof n->scope, "MZ/NAMPULA/ERATI/T%03u", n->team);
        } else if (i < field + c->mules) {
            n->role = ROLE_MULE;
            n->team = i - field;
            snprintf(n->scope, sizeof n->scope, "MZ/NAMPULA/ERATI/SUP%02u", n->team);
        } else {
            n->role = ROLE_GATEWAY;
            n->team = SIM_NONE;
            snprintf(n->scope, sizeof n->scope, "MZ/NAMPULA/ERATI/GW");
        }
        n->loc = SIM_NONE;
        sim_rng_seed(&n->rng_net, c->seed, RNG_NET, i);
        sim_rng_seed(&n->rng_work, c->seed, RNG_WORK, i);
        sim_rng_seed(&n->rng_sync, c->seed, RNG_SYNC, i);
        sim_rng_seed(&n->rng_fault, c->seed, RNG_FAULT, i);
        sim_rng_seed(&n->rng_clock, c->seed, RNG_CLOCK, i);
        sim_rng ir;
        sim_rng_seed(&ir, c->seed, RNG_IDENT, i);
        uint8_t seed[32];
        for (int k = 0; k < 4; k++) mesh_be64_put(seed + 8 * k, sim_rng_next(&ir));
        mesh_identity_from_seed(&n->ident, seed);
        n->sid = mesh_stream_id(n->ident.pk, n->scope, strlen(n->scope));
        snprintf(n->dir, sizeof n->dir, "%s/node-%04u", w->root, i);
        n->conns = calloc(c->sessions_max, sizeof *n->conns);
        if (n->conns == NULL) return -1;
        draw_skew(w, n);
        if (open_store(w, n, true) != MESH_OK) {
            snprintf(w->res->failure, sizeof w->res->failure, "%s", w->engine_error);
            return -1;
        }
        n->up = true;
    }
    return 0;
}

uint32_t sim_author_of(const sim_world *w, uint64_t sid)
{
    uint32_t lo = 0, hi = w->nnodes;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (w->sid_sorted[mid] < sid) lo = mid + 1;
        else hi = mid;
    }
    return lo < w->nnodes && w->sid_sorted[lo] == sid ? w->sid_node[lo] : SIM_NONE;
}

/* Sorts the nodes' stream ids (insertion into a sorted array: done once per run). */
static int sid_map(sim_world *w)
{
    w->sid_sorted = malloc(w->nnodes * sizeof *w->sid_sorted);
    w->sid_node = malloc(w->nnodes * sizeof *w->sid_node);
    if (!w->sid_sorted || !w->sid_node) return -1;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        uint64_t sid = w->nodes[i].sid;
        uint32_t j = i;
        while (j > 0 && w->sid_sorted[j - 1] > sid) {
            w->sid_sorted[j] = w->sid_sorted[j - 1];
            w->sid_node[j] = w->sid_node[j - 1];
            j--;
        }
        w->sid_sorted[j] = sid;
        w->sid_node[j] = i;
    }
    return 0;
}

static void nodes_free(sim_world *w)
{
    if (w->nodes == NULL) return;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        sim_node *n = &w->nodes[i];
        mesh_store_close(n->store);
        mesh_identity_wipe(&n->ident);
        free(n->conns);
        free(n->peers);
        free(n->ops);
    }
    free(w->nodes);
    free(w->sid_sorted);
    free(w->sid_node);
    w->nodes = NULL;
}

static void world_free(sim_world *w)
{
    sim_conns_free(w);
    sim_uplink_free(w);
    sim_workload_free(w);
    sim_members_free(w);
    nodes_free(w);
    for (size_t i = 0; i < w->heap.n; i++) {
        sim_frame *f = w->heap.ev[i].frame;
        if (f && --f->refs == 0) free(f);
    }
    free(w->heap.ev);
    free(w->samples);
    mesh_buf_fini(&w->sendbuf);
    mesh_buf_fini(&w->scratch);
}

static void progress(sim_world *w, double *last_wall)
{
    double now = wall_now();
    if (now - *last_wall < 1.0) return;
    *last_wall = now;
    double total = w->nnodes ? (double)w->nops * w->nnodes : 0;
    double held = 0;
    for (uint32_t i = 0; i < w->nnodes; i++) held += (double)w->nodes[i].ops_held;
    fprintf(w->out->progress, "\r  t=%.0f s%s  ops %u  coverage %.4f  sessions %llu   ",
            (double)w->now / SIM_US, w->settling ? " (settling)" : "", w->nops,
            total > 0 ? held / total : 1.0, (unsigned long long)w->res->sessions);
    fflush(w->out->progress);
}

int sim_run(const sim_config *cfg, const sim_output *out, sim_result *res)
{
    static const sim_output quiet = {0};
    memset(res, 0, sizeof *res);
    res->converged_s = -1;
    if (out == NULL) out = &quiet;
    char err[512];
    if (sim_config_check(cfg, err, sizeof err) != 0) {
        snprintf(res->failure, sizeof res->failure, "%s", err);
        return -1;
    }
    if (mesh_crypto_init() != MESH_OK) {
        snprintf(res->failure, sizeof res->failure, "libsodium failed to initialise");
        return -1;
    }
    sim_world *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(res->failure, sizeof res->failure, "out of memory");
        return -1;
    }
    double wall0 = wall_now();
    w->cfg = *cfg;
    w->out = out;
    w->res = res;
    w->converged = -1;
    w->end_us = (uint64_t)(cfg->duration_s * SIM_US);
    w->up.gw = SIM_NONE;
    mesh_hash_init(&w->trace);
    mesh_buf_init(&w->sendbuf, MESH_FRAME_BYTES_MAX);
    mesh_buf_init(&w->scratch, MESH_FRAME_BYTES_MAX);
    raise_fd_limit(sim_config_nodes(cfg));

    int rc = make_root(w);
    if (rc == 0 && nodes_create(w) != 0) {
        if (res->failure[0] == '\0')
            snprintf(res->failure, sizeof res->failure, "out of memory creating nodes");
        rc = -1;
    }
    if (rc == 0 && (sid_map(w) != 0 || sim_world_topology(w) != 0 || sim_workload_init(w) != 0 ||
                    sim_uplink_init(w) != 0)) {
        snprintf(res->failure, sizeof res->failure, "out of memory setting up the world");
        rc = -1;
    }
    if (rc != 0) {
        world_free(w);
        if (w->root[0] && !out->keep) nftw(w->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        free(w);
        return -1;
    }
    res->nodes = w->nnodes;

    for (uint32_t i = 0; i < w->nnodes; i++) {
        sim_node *n = &w->nodes[i];
        if (sim_initial_ops(w, n) != 0) break;
    }
    for (uint32_t i = 0; i < w->nnodes; i++) {
        start_timers(w, &w->nodes[i]);
        schedule_crash(w, &w->nodes[i], 0);
    }
    sim_push(w, 0, EV_SAMPLE, 0, 0, 0, NULL);
    sim_push(w, w->end_us, EV_END, 0, 0, 0, NULL);

    double last_wall = wall0;
    sim_event ev;
    while (!w->stop && heap_pop(&w->heap, &ev)) {
        if (ev.t > w->now) w->now = ev.t;
        res->events++;
        sim_trace(w, ev.type, ev.node, ev.arg, ev.gen);
        dispatch(w, &ev);
        if (ev.frame && --ev.frame->refs == 0) free(ev.frame);
        /* Quiescent: no session left to finish; what is queued is periodic work. */
        if (w->quiescing && w->conns_active == 0 && !w->up.inflight) break;
        if (out->progress && (res->events & 1023) == 0) progress(w, &last_wall);
    }
    if (out->progress) fprintf(out->progress, "\r%*s\r", 78, "");
    sim_sample_take(w);
    res->sim_s = (double)w->now / SIM_US;
    res->node_seconds = res->sim_s * w->nnodes;
    res->ops_created = w->nops;
    res->last_op_s = (double)w->last_op / SIM_US;
    res->converged_s = w->converged >= 0 ? (double)w->converged / SIM_US : -1;
    if (w->converged >= 0) {
        double from = w->nops > 0 ? (double)w->last_op / SIM_US : 0;
        res->rounds = ceil(((double)w->converged / SIM_US - from) / cfg->interval_s);
    }

    sim_checks(w);
    mesh_hash_final(&w->trace, res->trace);
    mesh_hex_encode(res->trace, sizeof res->trace, res->trace_hex);
    res->wall_s = wall_now() - wall0;
    sim_report(w);
    int wrc = 0;
    if (out->timeline_path && sim_write_timeline(w, out->timeline_path) != 0) wrc = -1;
    if (out->plot_path && sim_write_plot(w, out->plot_path) != 0) wrc = -1;

    world_free(w);
    if (!out->keep) nftw(w->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    else if (out->report) fprintf(out->report, "stores kept in %s\n", w->root);
    free(w);
    res->wall_s = wall_now() - wall0;
    return wrc;
}
