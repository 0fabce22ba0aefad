/*
 * check.c - This file implements the checks made after every run, once the network has been
 * healed (as configured) and no session is left:
 *   converge  every connected group's nodes hold identical digests and counts, and identical
 *             merged state (winners, heads, flags of every entity);
 *   no loss   every op a node wrote is held, with the same chain tip, by every node of its
 *             group (so nothing was dropped, truncated or altered on the way);
 *   pending   no node keeps ops waiting for a predecessor that never came;
 *   gateway   the campaign model applied every op exactly once, each after its base and each
 *             create after its parents' creates (with a gateway and heal = all);
 *   engine    no engine or store call failed in a way no peer can cause, and no op was
 *             rejected although every simulated peer is honest.
 * Each failure is described in sim_result.failure with the nodes and ops involved.
 */
#include "sim_int.h"
#include "model/uuid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(sim_world *w, uint32_t check, const char *fmt, ...) MESH_PRINTF(3, 4);

static void fail(sim_world *w, uint32_t check, const char *fmt, ...)
{
    sim_result *r = w->res;
    r->failed |= check;
    size_t used = strlen(r->failure);
    if (used + 2 >= sizeof r->failure) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->failure + used, sizeof r->failure - used, fmt, ap);
    va_end(ap);
    used = strlen(r->failure);
    if (used + 1 < sizeof r->failure) {
        r->failure[used] = '\n';
        r->failure[used + 1] = '\0';
    }
}

/* Group key of a node at the end: nodes that can reach each other share it. */
static uint64_t group_key(const sim_world *w, uint32_t i)
{
    const sim_node *n = &w->nodes[i];
    if (!n->up || n->loc == SIM_NONE) return (1ull << 63) | i;   /* alone */
    return ((uint64_t)n->loc << 32) | n->part;
}

bool sim_groups_settled(sim_world *w)
{
    if (w->cfg.heal == SIM_HEAL_ALL) {
        if (w->ncomplete != w->nnodes) return false;
        return w->up.gw == SIM_NONE || (w->up.applied == w->nops && !w->up.inflight);
    }
    /* Each group: every member holds as many ops as the most any member holds, and at least
     * what its members wrote. */
    for (uint32_t i = 0; i < w->nnodes; i++) {
        uint64_t k = group_key(w, i);
        uint64_t most = 0, wrote = 0;
        for (uint32_t j = 0; j < w->nnodes; j++) {
            if (group_key(w, j) != k) continue;
            if (j < i) goto next;   /* group already examined from its first member */
            if (w->nodes[j].ops_held > most) most = w->nodes[j].ops_held;
            wrote += w->nodes[j].my_seq;
        }
        if (most < wrote) return false;
        for (uint32_t j = i; j < w->nnodes; j++)
            if (group_key(w, j) == k && w->nodes[j].ops_held != most) return false;
    next:;
    }
    return true;
}

typedef struct node_view {
    mesh_store_counts counts;
    uint8_t state[MESH_HASH_BYTES];   /* digest of every entity's merged state */
    mesh_stream *streams;
    uint32_t nstreams, cap;
    bool ok;
} node_view;

static int collect_stream(const mesh_stream *st, void *ctx)
{
    node_view *v = ctx;
    if (v->nstreams == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 64;
        mesh_stream *s = realloc(v->streams, cap * sizeof *s);
        if (s == NULL) return mesh_err(MESH_ENOMEM, "out of memory reading streams");
        v->streams = s;
        v->cap = cap;
    }
    v->streams[v->nstreams++] = *st;
    return MESH_OK;
}

/* The merged state is a function of the op set (docs/ARCHITECTURE.md, "Merge rule"): nodes
 * holding the same ops must hold the same state, whatever order the ops came in. */
static int hash_state(const mesh_state *st, void *ctx)
{
    mesh_hash_state *h = ctx;
    uint8_t fixed[16];
    mesh_hash_update(h, st->entity, MESH_UUID_BYTES);
    mesh_hash_update(h, st->type, strlen(st->type) + 1);
    mesh_be32_put(fixed, st->flags);
    mesh_be32_put(fixed + 4, st->max_rv);
    mesh_be32_put(fixed + 8, st->nparents);
    mesh_be32_put(fixed + 12, st->nheads);
    mesh_hash_update(h, fixed, sizeof fixed);
    const mesh_head *heads[1 + MESH_HEADS_MAX];
    heads[0] = &st->winner;
    for (uint32_t i = 0; i < st->nheads && i < MESH_HEADS_MAX; i++) heads[1 + i] = &st->heads[i];
    for (uint32_t i = 0; i <= st->nheads && i <= MESH_HEADS_MAX; i++) {
        mesh_be32_put(fixed, heads[i]->ref.row_version);
        mesh_be64_put(fixed + 4, heads[i]->hlc);
        mesh_hash_update(h, fixed, 12);
        mesh_hash_update(h, heads[i]->ref.author, MESH_KEY_BYTES);
    }
    for (uint32_t i = 0; i < st->nparents && i < MESH_PARENTS_MAX; i++)
        mesh_hash_update(h, st->parents[i], MESH_UUID_BYTES);
    return MESH_OK;
}

static int view_fn(mesh_txn *t, void *ctx)
{
    node_view *v = ctx;
    v->nstreams = 0;
    int rc = mesh_store_counts_get(t, &v->counts);
    if (rc == MESH_OK) rc = mesh_store_streams(t, collect_stream, v);
    if (rc == MESH_OK) {
        mesh_hash_state h;
        mesh_hash_init(&h);
        rc = mesh_store_states(t, NULL, hash_state, &h);
        mesh_hash_final(&h, v->state);
    }
    return rc;
}

static const mesh_stream *view_find(const node_view *v, uint64_t sid)
{
    uint32_t lo = 0, hi = v->nstreams;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (v->streams[mid].sid < sid) lo = mid + 1;
        else hi = mid;
    }
    return lo < v->nstreams && v->streams[lo].sid == sid ? &v->streams[lo] : NULL;
}

static void hex8(const uint8_t *d, char out[17]) { mesh_hex_encode(d, 8, out); }

static const char *loc_name(const sim_world *w, uint32_t loc, char *buf, size_t cap)
{
    if (loc == SIM_NONE) snprintf(buf, cap, "travelling");
    else if (loc == w->base_loc) snprintf(buf, cap, "base");
    else snprintf(buf, cap, "team %u", loc);
    return buf;
}

static void check_group(sim_world *w, node_view *v, const uint32_t *m, uint32_t cnt)
{
    char where[32];
    loc_name(w, w->nodes[m[0]].loc, where, sizeof where);
    /* Converge: identical digests and derived counts. */
    const node_view *ref = &v[m[0]];
    for (uint32_t k = 1; k < cnt; k++) {
        const node_view *o = &v[m[k]];
        if (!o->ok || !ref->ok) continue;
        if (memcmp(o->counts.digest, ref->counts.digest, MESH_HASH_BYTES) != 0 ||
            o->counts.ops != ref->counts.ops) {
            char a[17], b[17];
            hex8(ref->counts.digest, a);
            hex8(o->counts.digest, b);
            fail(w, SIM_CHECK_CONVERGE,
                 "converge: in the group of %u nodes at %s, node %u holds digest %s.. (%llu ops) "
                 "but node %u holds %s.. (%llu ops)",
                 cnt, where, m[0], a, (unsigned long long)ref->counts.ops, m[k], b,
                 (unsigned long long)o->counts.ops);
            break;
        }
        if (memcmp(o->state, ref->state, MESH_HASH_BYTES) != 0 ||
            o->counts.entities != ref->counts.entities ||
            o->counts.deleted != ref->counts.deleted ||
            o->counts.conflicts != ref->counts.conflicts) {
            char a[17], b[17], d[17];
            hex8(ref->state, a);
            hex8(o->state, b);
            hex8(ref->counts.digest, d);
            fail(w, SIM_CHECK_CONVERGE,
                 "converge: in the group of %u nodes at %s, nodes %u and %u hold the same ops "
                 "(digest %s..) but different merged state (state %s.. and %s..; %llu and %llu "
                 "entities, %llu and %llu deleted, %llu and %llu conflicts): the merge depends "
                 "on arrival order",
                 cnt, where, m[0], m[k], d, a, b, (unsigned long long)ref->counts.entities,
                 (unsigned long long)o->counts.entities, (unsigned long long)ref->counts.deleted,
                 (unsigned long long)o->counts.deleted, (unsigned long long)ref->counts.conflicts,
                 (unsigned long long)o->counts.conflicts);
            break;
        }
    }
    /* No loss: every member holds every member's whole stream (heal = all: every node's). */
    uint32_t reported = 0;
    bool all = w->cfg.heal == SIM_HEAL_ALL;
    uint32_t nauthors = all ? w->nnodes : cnt;
    for (uint32_t k = 0; k < cnt && reported < 3; k++) {
        const node_view *o = &v[m[k]];
        if (!o->ok) continue;
        for (uint32_t ai = 0; ai < nauthors && reported < 3; ai++) {
            const sim_node *a = &w->nodes[all ? ai : m[ai]];
            if (a->my_seq == 0) continue;
            const mesh_stream *st = view_find(o, a->sid);
            uint64_t have = st ? st->seq : 0;
            if (have == a->my_seq && memcmp(st->tip, a->my_tip, MESH_HASH_BYTES) == 0) continue;
            reported++;
            if (have < a->my_seq) {
                const sim_op *first = &w->ops[a->ops[have]];
                char id[MESH_UUID_STR_LEN];
                mesh_uuid_format(w->ents[first->entity].uuid, id);
                fail(w, SIM_CHECK_NO_LOSS,
                     "no loss: node %u holds %llu of the %llu ops node %u wrote; ops %llu..%llu "
                     "never arrived (the first: rowVersion %u of %s)",
                     m[k], (unsigned long long)have, (unsigned long long)a->my_seq, a->id,
                     (unsigned long long)have + 1, (unsigned long long)a->my_seq, first->rv, id);
            } else {
                fail(w, SIM_CHECK_NO_LOSS,
                     "no loss: node %u holds node %u's stream up to op %llu but with a different "
                     "tip than its author wrote", m[k], a->id, (unsigned long long)have);
            }
        }
    }
}

static int counts_fn(mesh_txn *t, void *ctx) { return view_fn(t, ctx); }

void sim_checks(sim_world *w)
{
    node_view *v = calloc(w->nnodes, sizeof *v);
    uint32_t *order = malloc(w->nnodes * sizeof *order);
    uint64_t *keys = malloc(w->nnodes * sizeof *keys);
    bool *done = calloc(w->nnodes, sizeof *done);
    if (!v || !order || !keys || !done) {
        fail(w, SIM_CHECK_ENGINE, "engine: out of memory running the checks");
        goto out;
    }
    /* Read every store; a node that is down is read from its directory. */
    uint64_t rejected = 0;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        sim_node *n = &w->nodes[i];
        rejected += n->ops_rejected;
        mesh_store *s = n->store;
        bool opened = false;
        if (s == NULL) {
            mesh_store_opts o = {.no_sync = true, .map_bytes_initial = SIM_MAP_BYTES_INITIAL};
            if (mesh_store_open(n->dir, &o, &s) != MESH_OK) {
                fail(w, SIM_CHECK_ENGINE, "engine: node %u's store cannot be opened: %s", i,
                     mesh_errmsg());
                continue;
            }
            opened = true;
        }
        if (mesh_store_read(s, counts_fn, &v[i]) == MESH_OK) v[i].ok = true;
        else fail(w, SIM_CHECK_ENGINE, "engine: node %u's store cannot be read: %s", i,
                  mesh_errmsg());
        if (opened) mesh_store_close(s);
        if (v[i].ok && v[i].counts.pending > 0)
            fail(w, SIM_CHECK_PENDING,
                 "pending: node %u keeps %llu ops waiting for a predecessor that never came", i,
                 (unsigned long long)v[i].counts.pending);
        if (v[i].ok && v[i].counts.ops != n->ops_held && n->up)
            fail(w, SIM_CHECK_ENGINE,
                 "engine: node %u holds %llu ops but its sessions reported %llu", i,
                 (unsigned long long)v[i].counts.ops, (unsigned long long)n->ops_held);
    }
    /* Groups, visited from their smallest member. */
    for (uint32_t i = 0; i < w->nnodes; i++) keys[i] = group_key(w, i);
    for (uint32_t i = 0; i < w->nnodes; i++) {
        if (done[i]) continue;
        uint32_t cnt = 0;
        for (uint32_t j = i; j < w->nnodes; j++) {
            if (keys[j] == keys[i]) {
                order[cnt++] = j;
                done[j] = true;
            }
        }
        check_group(w, v, order, cnt);
    }
    if (w->nnodes > 0 && v[0].ok) w->res->conflicts = (uint32_t)v[0].counts.conflicts;

    /* The campaign model. */
    if (w->up.gw != SIM_NONE && w->cfg.heal == SIM_HEAL_ALL) {
        uint64_t missing = 0;
        uint32_t first = SIM_NONE;
        for (uint32_t i = 0; i < w->nops; i++) {
            if (!w->ops[i].applied) {
                if (first == SIM_NONE) first = i;
                missing++;
            }
        }
        if (missing > 0) {
            char id[MESH_UUID_STR_LEN];
            mesh_uuid_format(w->ents[w->ops[first].entity].uuid, id);
            fail(w, SIM_CHECK_GATEWAY,
                 "gateway: the campaign service never received %llu of %u ops (the first: "
                 "rowVersion %u of %s, op %u of node %u)",
                 (unsigned long long)missing, w->nops, w->ops[first].rv, id, w->ops[first].seq,
                 w->ops[first].author);
        }
        if (w->up.order_violations > 0)
            fail(w, SIM_CHECK_GATEWAY, "gateway: %llu ops reached the campaign service out of "
                 "order; the first: %s", (unsigned long long)w->up.order_violations,
                 w->up.first_violation);
    }
    w->res->ops_delivered = w->up.applied;
    w->res->uplink_duplicates = w->up.duplicates;

    if (w->engine_errors > 0)
        fail(w, SIM_CHECK_ENGINE, "engine: %llu problem%s; the first: %s",
             (unsigned long long)w->engine_errors, w->engine_errors == 1 ? "" : "s",
             w->engine_error);
    if (rejected > 0)
        fail(w, SIM_CHECK_ENGINE, "engine: %llu ops were rejected although every peer is honest",
             (unsigned long long)rejected);
out:
    if (v)
        for (uint32_t i = 0; i < w->nnodes; i++) free(v[i].streams);
    free(v);
    free(order);
    free(keys);
    free(done);
}
