/*
 * uplink.c - This file implements the gateway's intermittent uplink and a model of the campaign
 * service behind it, standing in for lib/gateway until that lands (docs/SIMULATOR.md).
 *
 * While the uplink is up, the gateway sends, every tick, one request with up to `batch` ops
 * that it holds and the service has not confirmed, in an order the service accepts: an op only
 * after its base (per-entity order) and a create only after its parents' creates. The request
 * reaches the service after half the round trip and the answer comes back after the other
 * half; if the uplink drops or the gateway crashes in between, the gateway does not learn the
 * outcome and sends the ops again later. The service applies an op the first time and
 * recognises a repeat (as DIGIT answers DUPLICATE_ENTITY or a rowVersion mismatch), so every op
 * is applied exactly once in effect. The gateway keeps what the service confirmed per author
 * stream in its store's meta database, so a restart resumes there.
 *
 * The service checks, as it applies, that each op's base and each parent's create came first;
 * the end-of-run check adds that every op was applied.
 */
#include "sim_int.h"
#include "model/uuid.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

bool sim_uplink_is_up(const sim_world *w)
{
    if (w->up.gw == SIM_NONE) return false;
    if (w->settling) return true;
    double t = (double)w->now / SIM_US;
    const sim_config *c = &w->cfg;
    if (t < c->uplink_start_s) return false;
    double phase = fmod(t - c->uplink_start_s, c->uplink_period_s);
    return phase < c->uplink_up_s;
}

/* ---- Cursors in the gateway's store ------------------------------------------------------- */

static void cursor_name(uint32_t author, char out[32])
{
    snprintf(out, 32, "sim.uplink.%u", author);
}

typedef struct cursor_ctx {
    sim_world *w;
    bool write;
} cursor_ctx;

static int cursor_fn(mesh_txn *t, void *ctx)
{
    cursor_ctx *c = ctx;
    sim_world *w = c->w;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        char name[32];
        cursor_name(i, name);
        int rc;
        if (c->write) {
            if (w->up.pending_cursor[i] == w->up.cursor[i]) continue;
            rc = mesh_store_meta_put_u64(t, name, w->up.pending_cursor[i]);
        } else {
            rc = mesh_store_meta_get_u64(t, name, &w->up.cursor[i]);
        }
        if (rc != MESH_OK) return rc;
    }
    return MESH_OK;
}

/* ---- Building a request ------------------------------------------------------------------- */

/* Confirmed by the service as far as the gateway knows, or earlier in the request. */
static bool known(const sim_world *w, uint32_t op)
{
    const sim_op *o = &w->ops[op];
    return o->seq <= w->up.cursor[o->author] || w->up.in_batch[op];
}

static bool ready(const sim_world *w, uint32_t op)
{
    const sim_op *o = &w->ops[op];
    if (o->base != SIM_NONE && !known(w, o->base)) return false;
    if (o->kind == MESH_OP_CREATE) {
        const sim_entity *e = &w->ents[o->entity];
        for (uint32_t i = 0; i < e->nparents; i++) {
            uint32_t pc = w->ents[e->parents[i]].create_op;
            if (pc != SIM_NONE && !known(w, pc)) return false;
        }
    }
    return true;
}

typedef struct held_ctx {
    sim_world *w;
    uint64_t *held;    /* per author: seq the gateway holds */
} held_ctx;

static int held_stream(const mesh_stream *st, void *ctx)
{
    held_ctx *h = ctx;
    uint32_t a = sim_author_of(h->w, st->sid);
    if (a != SIM_NONE) h->held[a] = st->seq;
    return MESH_OK;
}

static int held_fn(mesh_txn *t, void *ctx) { return mesh_store_streams(t, held_stream, ctx); }

void sim_on_uplink_tick(sim_world *w, const sim_event *ev)
{
    (void)ev;
    if (w->quiescing) return;
    sim_push(w, w->now + (uint64_t)(w->cfg.uplink_tick_s * SIM_US), EV_UPLINK_TICK, 0, 0, 0, NULL);
    sim_node *g = &w->nodes[w->up.gw];
    if (!g->up || w->up.inflight || !sim_uplink_is_up(w)) return;
    uint64_t *held = calloc(w->nnodes, sizeof *held);
    if (held == NULL) return;
    held_ctx hc = {.w = w, .held = held};
    if (mesh_store_read(g->store, held_fn, &hc) != MESH_OK) {
        sim_engine_error(w, "gateway: reading its streams failed: %s", mesh_errmsg());
        free(held);
        return;
    }
    /* Walk the streams in node order, each as far as its ops are ready; repeat while a pass
     * makes progress (an op may wait for an op of a stream visited later). */
    uint32_t n = 0, cap = w->cfg.uplink_batch;
    bool progress = true;
    for (uint32_t i = 0; i < w->nnodes; i++) w->up.pending_cursor[i] = w->up.cursor[i];
    while (progress && n < cap) {
        progress = false;
        for (uint32_t a = 0; a < w->nnodes && n < cap; a++) {
            sim_node *au = &w->nodes[a];
            uint64_t limit = held[a] < au->my_seq ? held[a] : au->my_seq;
            while (w->up.pending_cursor[a] < limit && n < cap) {
                uint32_t op = au->ops[w->up.pending_cursor[a]];
                if (!ready(w, op)) break;
                w->up.in_batch[op] = 1;
                w->up.batch[n++] = op;
                w->up.pending_cursor[a]++;
                progress = true;
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) w->up.in_batch[w->up.batch[i]] = 0;
    free(held);
    if (n == 0) return;
    w->up.nbatch = n;
    w->up.inflight = true;
    w->up.inflight_gen = g->gen;
    w->up.requests++;
    sim_trace(w, 7000, n, 0, w->up.requests);
    uint64_t half = (uint64_t)(w->cfg.uplink_latency_ms * 500.0);
    sim_push(w, w->now + half, EV_UPLINK_ARRIVE, 0, g->gen, 0, NULL);
    sim_push(w, w->now + 2 * half, EV_UPLINK_ACK, 0, g->gen, 0, NULL);
}

/* ---- The campaign service ----------------------------------------------------------------- */

static void violation(sim_world *w, const char *fmt, uint32_t op, uint32_t other)
{
    w->up.order_violations++;
    if (w->up.order_violations > 1) return;
    const sim_op *o = &w->ops[op];
    char id[MESH_UUID_STR_LEN];
    mesh_uuid_format(w->ents[o->entity].uuid, id);
    snprintf(w->up.first_violation, sizeof w->up.first_violation, fmt, o->rv, id, o->author,
             other);
}

void sim_on_uplink_arrive(sim_world *w, const sim_event *ev)
{
    (void)ev;
    if (!w->up.inflight) return;
    if (!sim_uplink_is_up(w)) {
        w->up.lost++;   /* the request never made it */
        return;
    }
    for (uint32_t i = 0; i < w->up.nbatch; i++) {
        uint32_t op = w->up.batch[i];
        sim_op *o = &w->ops[op];
        if (o->applied) {
            w->up.duplicates++;
            continue;
        }
        if (o->base != SIM_NONE && !w->ops[o->base].applied)
            violation(w, "rowVersion %u of %s (by node %u) arrived before its base (op %u)", op,
                      o->base);
        if (o->kind == MESH_OP_CREATE) {
            const sim_entity *e = &w->ents[o->entity];
            for (uint32_t k = 0; k < e->nparents; k++) {
                uint32_t pc = w->ents[e->parents[k]].create_op;
                if (pc != SIM_NONE && !w->ops[pc].applied)
                    violation(w, "the create (rowVersion %u) of %s (by node %u) arrived before "
                              "its parent's create (op %u)", op, pc);
            }
        }
        o->applied = 1;
        w->up.applied++;
    }
    sim_trace(w, 7001, w->up.nbatch, 0, w->up.applied);
}

void sim_on_uplink_ack(sim_world *w, const sim_event *ev)
{
    sim_node *g = &w->nodes[w->up.gw];
    if (!w->up.inflight || ev->gen != w->up.inflight_gen || !g->up) return;
    w->up.inflight = false;
    if (!sim_uplink_is_up(w)) {
        w->up.lost++;   /* the answer was lost: the gateway will ask again */
        return;
    }
    cursor_ctx c = {.w = w, .write = true};
    if (mesh_store_write(g->store, cursor_fn, &c) != MESH_OK) {
        sim_engine_error(w, "gateway: recording confirmed ops failed: %s", mesh_errmsg());
        return;
    }
    for (uint32_t i = 0; i < w->nnodes; i++) w->up.cursor[i] = w->up.pending_cursor[i];
}

void sim_uplink_crash(sim_world *w) { w->up.inflight = false; }

void sim_uplink_restart(sim_world *w)
{
    sim_node *g = &w->nodes[w->up.gw];
    cursor_ctx c = {.w = w, .write = false};
    if (mesh_store_read(g->store, cursor_fn, &c) != MESH_OK)
        sim_engine_error(w, "gateway: reading confirmed ops after a restart failed: %s",
                         mesh_errmsg());
}

int sim_uplink_init(sim_world *w)
{
    w->up.gw = SIM_NONE;
    for (uint32_t i = 0; i < w->nnodes; i++)
        if (w->nodes[i].role == ROLE_GATEWAY) w->up.gw = i;
    if (w->up.gw == SIM_NONE) return 0;
    w->up.batch = calloc(w->cfg.uplink_batch, sizeof *w->up.batch);
    w->up.cursor = calloc(w->nnodes, sizeof *w->up.cursor);
    w->up.pending_cursor = calloc(w->nnodes, sizeof *w->up.pending_cursor);
    w->up.in_batch = calloc(SIM_OPS_MAX, 1);
    if (!w->up.batch || !w->up.cursor || !w->up.pending_cursor || !w->up.in_batch) return -1;
    sim_push(w, (uint64_t)(w->cfg.uplink_tick_s * SIM_US), EV_UPLINK_TICK, 0, 0, 0, NULL);
    return 0;
}

void sim_uplink_free(sim_world *w)
{
    free(w->up.batch);
    free(w->up.cursor);
    free(w->up.pending_cursor);
    free(w->up.in_batch);
    w->up.batch = NULL;
    w->up.cursor = NULL;
    w->up.pending_cursor = NULL;
    w->up.in_batch = NULL;
}
