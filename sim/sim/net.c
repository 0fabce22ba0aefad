/*
 * net.c - This file implements the simulated network and drives the real sync engine over it:
 * connections (one lib/sync session at each end), frames carried with per-node radio bandwidth,
 * latency and jitter, loss, duplication and reordering, session deadlines, and the end of a
 * session (stats, the triggered policy's bookkeeping, freeing). It also holds the test-only
 * fault hook that removes an op from frames in transit (sim.h, sim_inject).
 *
 * The responder's session is created when the first frame reaches it, as the daemon creates
 * one when an OPEN message arrives; a frame that arrives for an end that is over, or at a node
 * that crashed or moved out of range, is lost. The engine sees a lost or reordered frame as a
 * gap in frame numbers and fails the session; the next session resumes from what was stored.
 */
#include "sim_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "sync/frame.h"

static sim_conn *conn_get(sim_world *w, uint32_t slot, uint32_t uid)
{
    if (slot >= w->nconns) return NULL;
    sim_conn *c = &w->conns[slot];
    return c->used && c->uid == uid ? c : NULL;
}

static void list_remove(sim_node *n, uint32_t slot)
{
    for (uint32_t i = 0; i < n->nconns; i++) {
        if (n->conns[i] == slot) {
            n->conns[i] = n->conns[--n->nconns];
            return;
        }
    }
}

static bool list_has_peer(const sim_world *w, const sim_node *n, uint32_t peer)
{
    for (uint32_t i = 0; i < n->nconns; i++) {
        const sim_conn *c = &w->conns[n->conns[i]];
        if (c->node[0] == peer || c->node[1] == peer) return true;
    }
    return false;
}

bool sim_conn_busy(const sim_world *w, uint32_t a, uint32_t b)
{
    return list_has_peer(w, &w->nodes[a], b) || list_has_peer(w, &w->nodes[b], a);
}

/* Converts a node's clock (ms) to virtual time (us). */
static uint64_t node_ms_to_us(const sim_world *w, const sim_node *n, uint64_t ms)
{
    int64_t g = (int64_t)ms - (int64_t)w->cfg.epoch_ms - n->skew_ms;
    if (g < 0) return 0;
    if ((uint64_t)g > UINT64_MAX / 1000) return UINT64_MAX;
    return (uint64_t)g * 1000;
}

/* Errors of the node's own store or of the engine itself: no peer can cause them. */
static bool local_failure(int rc)
{
    return rc == MESH_EIO || rc == MESH_ENOSPC || rc == MESH_ENOMEM || rc == MESH_EINTERNAL;
}

static void note_applied(sim_world *w, sim_conn *c, int e)
{
    mesh_session_stats st;
    mesh_session_stats_get(c->s[e], &st);
    uint64_t delta = st.ops_applied - c->applied[e];
    c->applied[e] = st.ops_applied;
    if (delta > 0) {
        w->nodes[c->node[e]].ops_applied += delta;
        sim_store_changed(w, &w->nodes[c->node[e]], delta);
    }
}

static void end_end(sim_world *w, sim_conn *c, int e)
{
    if (c->ended[e]) return;
    sim_node *n = &w->nodes[c->node[e]];
    uint32_t slot = (uint32_t)(c - w->conns);
    if (c->s[e] != NULL) {
        note_applied(w, c, e);
        mesh_session_stats st;
        mesh_session_stats_get(c->s[e], &st);
        bool ok = mesh_session_state_get(c->s[e]) == MESH_SESSION_DONE;
        n->ops_rejected += st.ops_rejected;
        if (ok && st.ops_pending > 0) {
            /* Between honest peers a completed session carries each stream contiguously from
             * what the receiver announced: nothing it brought can wait for a predecessor. */
            sim_engine_error(w, "node %u: a session with node %u completed, but %llu of the ops "
                             "it received wait for a predecessor the peer never sent",
                             n->id, c->node[1 - e], (unsigned long long)st.ops_pending);
        }
        if (ok) {
            n->sessions_ok++;
            if (e == 0) w->res->sessions_ok++;
            if (w->cfg.policy == SIM_POLICY_TRIGGERED) {
                /* The daemon's rule: level with the peer as of the session's start, plus what
                 * it brought; anything else that changed the store is passed on next time. */
                uint64_t now_gen = n->store_gen;
                uint64_t synced = now_gen - c->gen_at_start[e] == st.ops_applied
                                      ? now_gen : c->gen_at_start[e];
                sim_peer_synced(w, n, c->node[1 - e], synced);
            }
        } else {
            n->sessions_failed++;
            if (e == 0) w->res->sessions_failed++;
            int code = st.error < 0 && st.error > -32 ? -st.error : 0;
            w->fail_by_code[code]++;
            if (getenv("MESH_SIM_DEBUG"))
                fprintf(stderr, "t=%.3f node %u end %d conn %u: %s\n", (double)w->now / SIM_US,
                        n->id, e, c->uid, st.error_msg);
        }
        sim_trace(w, 3100, n->id, (uint32_t)ok, st.ops_applied);
        mesh_session_free(c->s[e]);
        c->s[e] = NULL;
    }
    c->ended[e] = true;
    list_remove(n, slot);
    /* A responder that never heard from the initiator has nothing to finish. */
    if (e == 0 && c->s[1] == NULL && !c->ended[1]) {
        c->ended[1] = true;
        list_remove(&w->nodes[c->node[1]], slot);
    }
    if (c->ended[0] && c->ended[1]) {
        c->used = false;
        w->free_conns[w->nfree_conns++] = slot;
        w->conns_active--;
    }
    /* Peers that waited for a free session slot. */
    if (w->cfg.policy == SIM_POLICY_TRIGGERED) {
        sim_schedule_sync(w, n, 0.01);
        if (e == 0) sim_schedule_sync(w, &w->nodes[c->node[1]], 0.01);
    }
}

static void arm_wake(sim_world *w, sim_conn *c, int e)
{
    if (c->wake_armed[e]) return;
    uint64_t exp = mesh_session_expiry(c->s[e]);
    if (exp == UINT64_MAX) return;
    uint64_t t = node_ms_to_us(w, &w->nodes[c->node[e]], exp);
    c->wake_armed[e] = true;
    sim_push(w, t, EV_WAKE, (uint32_t)(c - w->conns), c->uid, (uint32_t)e, NULL);
}

static void arm_pump(sim_world *w, sim_conn *c, int e, uint64_t t)
{
    if (c->pump_armed[e]) return;
    c->pump_armed[e] = true;
    sim_push(w, t, EV_PUMP, (uint32_t)(c - w->conns), c->uid, (uint32_t)e, NULL);
}

/* ---- Test-only fault hook (sim.h, sim_inject) --------------------------------------------- */

static bool record_id(const mesh_oprec *rec, uint64_t *sid, uint64_t *seq)
{
    mesh_op op;
    if (mesh_op_decode(rec->op, rec->op_len, &op) != MESH_OK) return false;
    *sid = mesh_stream_id(op.author, op.scope, op.scope_len);
    *seq = op.seq;
    return true;
}

/* Rewrites a frame on its way out. Returns false when the whole frame disappears. */
static bool inject(sim_world *w, sim_conn *c, int e, const uint8_t **data, size_t *len)
{
    uint64_t after = (uint64_t)(w->cfg.inject_after_s * SIM_US);
    bool active = w->now >= after &&
                  !(w->cfg.inject == SIM_INJECT_DROP_OP_ONCE && w->inject_spent);
    if (!active && c->removed_ops[e] == 0 && c->removed_frames[e] == 0) return true;
    mesh_frame f;
    if (mesh_frame_decode(*data, *len, &f) != MESH_OK) return true;
    bool changed = false;
    mesh_buf items;
    mesh_buf_init(&items, MESH_FRAME_BYTES_MAX);
    if (f.type == MESH_FRAME_OPS && active) {
        mesh_frame_iter it;
        mesh_oprec rec, prev_rec;
        uint64_t sid, seq, prev_sid = 0, prev_seq = 0;
        bool have_prev = false;
        if (!w->inject_chosen) {
            /* The victim: an op followed in the same frame by the next op of its stream, so that
             * skipping it leaves a gap. */
            mesh_frame_iter_init(&it, &f);
            while (mesh_frame_next_record(&it, &rec)) {
                if (!record_id(&rec, &sid, &seq)) continue;
                if (have_prev && sid == prev_sid && seq == prev_seq + 1) {
                    w->inject_chosen = true;
                    w->inject_sid = prev_sid;
                    w->inject_seq = prev_seq;
                    break;
                }
                have_prev = true;
                prev_sid = sid;
                prev_seq = seq;
                prev_rec = rec;
            }
            (void)prev_rec;
        }
        if (w->inject_chosen) {
            size_t removed = 0;
            mesh_frame_iter_init(&it, &f);
            while (mesh_frame_next_record(&it, &rec)) {
                if (record_id(&rec, &sid, &seq) && sid == w->inject_sid && seq == w->inject_seq) {
                    removed++;
                    continue;
                }
                if (mesh_mp_put_bin(&items, rec.op, rec.op_len) != MESH_OK ||
                    mesh_mp_put_bin(&items, rec.sig, MESH_SIGNATURE_BYTES) != MESH_OK) {
                    mesh_buf_fini(&items);
                    return true;
                }
            }
            if (removed > 0) {
                c->removed_ops[e] += removed;
                w->res->inject_hits += removed;
                if (w->cfg.inject == SIM_INJECT_DROP_OP_ONCE) w->inject_spent = true;
                sim_trace(w, 4000, c->node[e], (uint32_t)removed, w->inject_seq);
                if (removed == f.nitems) {
                    c->removed_frames[e]++;
                    mesh_buf_fini(&items);
                    return false;
                }
                f.items = items.data;
                f.items_len = items.len;
                f.nitems -= removed;
                changed = true;
            }
        }
    }
    /* Later frames close the gap in frame numbers, and DONE counts only what was "sent". */
    if (c->removed_frames[e] > 0) {
        f.fno -= c->removed_frames[e];
        changed = true;
    }
    if (f.type == MESH_FRAME_DONE && (c->removed_ops[e] > 0 || c->removed_frames[e] > 0)) {
        f.ops -= c->removed_ops[e];
        f.frames -= c->removed_frames[e];
        changed = true;
    }
    if (changed) {
        mesh_buf_reset(&w->scratch);
        if (mesh_frame_encode(&f, &w->scratch) == MESH_OK) {
            *data = w->scratch.data;
            *len = w->scratch.len;
        }
    }
    mesh_buf_fini(&items);
    return true;
}

/* ---- Frames on links ---------------------------------------------------------------------- */

static void transmit(sim_world *w, sim_conn *c, int e, const uint8_t *data, size_t len)
{
    sim_node *a = &w->nodes[c->node[e]];
    uint32_t to = c->node[1 - e];
    if (w->cfg.inject != SIM_INJECT_NONE && !inject(w, c, e, &data, &len)) return;
    a->frames_sent++;
    a->bytes_sent += len;
    w->res->frames_sent++;
    w->res->bytes_sent += len;
    mesh_hash_update(&w->trace, data, len);
    /* Draw every number each time, so one outcome does not shift the others' draws. */
    double u_drop = sim_rng_unit(&a->rng_net), u_jit = sim_rng_unit(&a->rng_net);
    double u_reo = sim_rng_unit(&a->rng_net), u_dup = sim_rng_unit(&a->rng_net);
    double u_dupd = sim_rng_unit(&a->rng_net);
    double u_try[17];
    for (uint32_t i = 0; i <= w->cfg.retries; i++) u_try[i] = sim_rng_unit(&a->rng_net);
    if (c->broken[e] || !sim_reachable(w, a->id, to)) {
        w->res->frames_lost++;
        return;
    }
    /* The radio loses transmissions; the transport (TCP under ZeroMQ) sends again after a
     * timeout that doubles, and resets the connection after `retries` retransmissions. */
    uint32_t tries = 0;
    uint64_t backoff = 0, rto = (uint64_t)(w->cfg.rto_ms * 1000.0);
    while (tries <= w->cfg.retries && u_try[tries] < w->cfg.loss) backoff += rto << tries++;
    w->res->retransmissions += tries;
    if (tries > w->cfg.retries) {
        c->broken[e] = true;
        w->res->frames_lost++;
        return;
    }
    uint64_t start = w->now, dur = 0;
    if (w->cfg.bandwidth_kbps > 0) {
        if (a->tx_busy > start) start = a->tx_busy;
        dur = (uint64_t)((double)len * 8.0 * 1000.0 / w->cfg.bandwidth_kbps) * (tries + 1);
        a->tx_busy = start + dur;
    }
    if (u_drop < w->cfg.drop) {
        w->res->frames_lost++;
        return;
    }
    uint64_t arrive = start + dur + backoff + (uint64_t)(w->cfg.latency_ms * 1000.0) +
                      (uint64_t)(u_jit * w->cfg.jitter_ms * 1000.0);
    /* Jitter does not reorder a link (the transport keeps order); `reorder` holds a frame
     * back past the ones sent after it. */
    if (u_reo < w->cfg.reorder) {
        arrive += (uint64_t)(w->cfg.reorder_ms * 1000.0);
    } else {
        if (arrive <= c->last_arrive[e]) arrive = c->last_arrive[e] + 1;
        c->last_arrive[e] = arrive;
    }
    bool dup = u_dup < w->cfg.duplicate;
    sim_frame *f = malloc(sizeof *f + len);
    if (f == NULL) {
        sim_engine_error(w, "out of memory carrying a frame of %zu bytes", len);
        w->stop = true;
        return;
    }
    f->refs = dup ? 2 : 1;
    f->len = (uint32_t)len;
    memcpy(f->data, data, len);
    uint32_t slot = (uint32_t)(c - w->conns);
    sim_push(w, arrive, EV_DELIVER, slot, c->uid, (uint32_t)(1 - e), f);
    if (dup) {
        uint64_t extra = 1000 + (uint64_t)(u_dupd * (w->cfg.latency_ms + w->cfg.jitter_ms) * 1000.0);
        sim_push(w, arrive + extra, EV_DELIVER, slot, c->uid, (uint32_t)(1 - e), f);
    }
}

/* Moves frames from a session end onto the network until it has nothing to send, its radio is
 * backed up, or it used its turn. Ends the session when it is over. */
static void pump(sim_world *w, sim_conn *c, int e)
{
    if (c->ended[e] || c->s[e] == NULL) return;
    sim_node *a = &w->nodes[c->node[e]];
    for (uint32_t i = 0; i < SIM_PUMP_FRAMES_MAX; i++) {
        if (w->cfg.bandwidth_kbps > 0 && a->tx_busy > w->now + SIM_TX_BACKLOG_US) {
            arm_pump(w, c, e, a->tx_busy - SIM_TX_BACKLOG_US);
            return;
        }
        int rc = mesh_session_send(c->s[e], &w->sendbuf, sim_node_ms(w, a));
        if (rc == MESH_OK) {
            transmit(w, c, e, w->sendbuf.data, w->sendbuf.len);
            continue;
        }
        if (rc == MESH_EAGAIN && mesh_session_state_get(c->s[e]) == MESH_SESSION_ACTIVE) {
            arm_wake(w, c, e);
            return;
        }
        if (rc == MESH_EAGAIN || rc == MESH_ECLOSED) {
            end_end(w, c, e);
            return;
        }
        /* The engine failed on its own side; the next call yields the ERROR frame. */
        if (local_failure(rc) || rc == MESH_ECORRUPT || rc == MESH_EINVAL || rc == MESH_ELIMIT)
            sim_engine_error(w, "node %u: sending a frame failed: %s", a->id, mesh_errmsg());
    }
    arm_pump(w, c, e, w->now);
}

/* ---- Connections -------------------------------------------------------------------------- */

static int conns_init(sim_world *w)
{
    if (w->conns) return 0;
    w->conns_cap = w->nnodes * w->cfg.sessions_max / 2 + 1;
    w->conns = calloc(w->conns_cap, sizeof *w->conns);
    w->free_conns = calloc(w->conns_cap, sizeof *w->free_conns);
    return w->conns && w->free_conns ? 0 : -1;
}

int sim_conn_open(sim_world *w, uint32_t a, uint32_t b)
{
    sim_node *x = &w->nodes[a], *y = &w->nodes[b];
    if (conns_init(w) != 0) return -1;
    if (x->nconns >= w->cfg.sessions_max || y->nconns >= w->cfg.sessions_max) return -1;
    uint32_t slot;
    if (w->nfree_conns > 0) slot = w->free_conns[--w->nfree_conns];
    else if (w->nconns < w->conns_cap) slot = w->nconns++;
    else return -1;
    sim_conn *c = &w->conns[slot];
    memset(c, 0, sizeof *c);
    c->used = true;
    c->uid = ++w->next_uid;
    c->node[0] = a;
    c->node[1] = b;
    c->gen[0] = x->gen;
    c->gen[1] = y->gen;
    c->gen_at_start[0] = x->store_gen;
    c->started = w->now;
    mesh_session_opts o = {.store = x->store, .initiator = true,
                           .idle_timeout_ms = w->cfg.idle_timeout_ms,
                           .frame_bytes_max = w->cfg.frame_bytes_max};
    memcpy(o.self, x->ident.pk, MESH_KEY_BYTES);
    memcpy(o.peer, y->ident.pk, MESH_KEY_BYTES);
    int rc = mesh_session_new(&o, sim_node_ms(w, x), &c->s[0]);
    if (rc != MESH_OK) {
        sim_engine_error(w, "node %u: starting a session with node %u failed: %s", a, b,
                         mesh_errmsg());
        c->used = false;
        w->free_conns[w->nfree_conns++] = slot;
        return -1;
    }
    x->conns[x->nconns++] = slot;
    y->conns[y->nconns++] = slot;
    x->sessions_started++;
    w->res->sessions++;
    w->conns_active++;
    sim_trace(w, 3000, a, b, c->uid);
    pump(w, c, 0);
    return 0;
}

void sim_on_deliver(sim_world *w, const sim_event *ev)
{
    sim_conn *c = conn_get(w, ev->node, ev->gen);
    int e = (int)ev->arg;
    if (c == NULL || c->ended[e]) return;
    sim_node *b = &w->nodes[c->node[e]];
    if (!b->up || b->gen != c->gen[e] || !sim_reachable(w, c->node[1 - e], b->id)) {
        w->res->frames_lost++;
        return;
    }
    if (c->s[e] == NULL) {
        /* The first frame of a session the peer started. */
        mesh_session_opts o = {.store = b->store, .initiator = false,
                               .idle_timeout_ms = w->cfg.idle_timeout_ms,
                               .frame_bytes_max = w->cfg.frame_bytes_max};
        memcpy(o.self, b->ident.pk, MESH_KEY_BYTES);
        memcpy(o.peer, w->nodes[c->node[1 - e]].ident.pk, MESH_KEY_BYTES);
        c->gen_at_start[e] = b->store_gen;
        if (mesh_session_new(&o, sim_node_ms(w, b), &c->s[e]) != MESH_OK) {
            sim_engine_error(w, "node %u: answering a session failed: %s", b->id, mesh_errmsg());
            end_end(w, c, e);
            return;
        }
    }
    b->frames_recv++;
    b->bytes_recv += ev->frame->len;
    int rc = mesh_session_recv(c->s[e], ev->frame->data, ev->frame->len, sim_node_ms(w, b));
    sim_trace(w, 3001, b->id, (uint32_t)-rc, ev->frame->len);
    if (local_failure(rc))
        sim_engine_error(w, "node %u: storing received ops failed: %s", b->id, mesh_errmsg());
    note_applied(w, c, e);
    pump(w, c, e);
}

void sim_on_pump(sim_world *w, const sim_event *ev)
{
    sim_conn *c = conn_get(w, ev->node, ev->gen);
    if (c == NULL) return;
    int e = (int)ev->arg;
    c->pump_armed[e] = false;
    pump(w, c, e);
}

void sim_on_wake(sim_world *w, const sim_event *ev)
{
    sim_conn *c = conn_get(w, ev->node, ev->gen);
    if (c == NULL) return;
    int e = (int)ev->arg;
    c->wake_armed[e] = false;
    if (c->ended[e] || c->s[e] == NULL) return;
    sim_node *n = &w->nodes[c->node[e]];
    uint64_t now_ms = sim_node_ms(w, n);
    if (now_ms >= mesh_session_expiry(c->s[e])) {
        (void)mesh_session_handle_expiry(c->s[e], now_ms);
        pump(w, c, e);
        return;
    }
    arm_wake(w, c, e);
}

void sim_conn_end_all(sim_world *w, sim_node *n)
{
    while (n->nconns > 0) {
        sim_conn *c = &w->conns[n->conns[0]];
        int e = c->node[0] == n->id ? 0 : 1;
        end_end(w, c, e);
    }
}

void sim_conns_free(sim_world *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        sim_conn *c = &w->conns[i];
        if (!c->used) continue;
        for (int e = 0; e < 2; e++) {
            mesh_session_free(c->s[e]);
            c->s[e] = NULL;
        }
        c->used = false;
    }
    free(w->conns);
    free(w->free_conns);
    w->conns = NULL;
    w->free_conns = NULL;
}
