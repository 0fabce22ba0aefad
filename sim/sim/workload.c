/*
 * workload.c - This file implements what people do with the devices: field devices register
 * households form by form (household, then for each member an individual and its
 * household_member link, then the project_beneficiary, a task, and the task's delivery update),
 * edit recent entities of their team and sometimes delete one; supervisors edit entities of the
 * team they are visiting. Edits of the same entity on devices that have not synced yet are
 * concurrent: the engine must flag the same conflicts everywhere.
 *
 * Every save is a real op, built as lib/api's mesh_node_append builds one (rowVersion and base
 * from the store's merged state, hybrid logical clock from the node's skewed clock, hash chain
 * and Ed25519 signature), and ingested into the node's store in one transaction. The registry
 * of every op and entity created feeds the checks and the campaign model.
 */
#include "sim_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/body.h"
#include "model/hlc.h"
#include "model/uuid.h"

#define SKIP 1   /* the entity is not held here or is deleted: the person does something else */

static const char *const TYPE_NAMES[ET_COUNT] = {
    "household", "individual", "household_member", "project_beneficiary", "task",
};

/* ---- Registry ----------------------------------------------------------------------------- */

static int grow(void **p, uint32_t *cap, size_t elem, uint32_t need)
{
    if (need <= *cap) return 0;
    uint32_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (q == NULL) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static uint32_t entity_new(sim_world *w, sim_node *n, sim_etype type, uint32_t p0, uint32_t p1)
{
    if (w->nents >= SIM_OPS_MAX || grow((void **)&w->ents, &w->ents_cap, sizeof *w->ents,
                                        w->nents + 1) != 0)
        return SIM_NONE;
    sim_entity *e = &w->ents[w->nents];
    memset(e, 0, sizeof *e);
    uint8_t rnd[10];
    for (int i = 0; i < 10; i++) rnd[i] = (uint8_t)sim_rng_next(&n->rng_work);
    mesh_uuid_v7(sim_node_ms(w, n), rnd, e->uuid);
    e->type = (uint8_t)type;
    e->team = n->team == SIM_NONE ? 0 : n->team;
    e->create_op = SIM_NONE;
    if (p0 != SIM_NONE) e->parents[e->nparents++] = p0;
    if (p1 != SIM_NONE) e->parents[e->nparents++] = p1;
    return w->nents++;
}

static void hot_add(sim_world *w, uint32_t team, uint32_t ent)
{
    if (team >= w->cfg.teams) team = 0;
    uint32_t cap = w->cfg.hot_set;
    w->hot[team][w->hot_pos[team]] = ent;
    w->hot_pos[team] = (w->hot_pos[team] + 1) % cap;
    if (w->hot_n[team] < cap) w->hot_n[team]++;
}

static uint32_t find_op(const sim_world *w, const sim_entity *e, const mesh_opref *ref)
{
    for (uint32_t i = 0; i < e->nops; i++) {
        const sim_op *o = &w->ops[e->ops[i]];
        if (o->rv == ref->row_version &&
            memcmp(w->nodes[o->author].ident.pk, ref->author, MESH_KEY_BYTES) == 0)
            return e->ops[i];
    }
    return SIM_NONE;
}

/* ---- Bodies ------------------------------------------------------------------------------- */

static void uuid_text(const sim_world *w, uint32_t ent, char out[MESH_UUID_STR_LEN])
{
    mesh_uuid_format(w->ents[ent].uuid, out);
}

/* The JSON body of `ent` as saved by node n; `status` only for tasks. */
static int body_json(sim_world *w, sim_node *n, uint32_t ent, const char *status, char *buf,
                     size_t cap)
{
    const sim_entity *e = &w->ents[ent];
    char p0[MESH_UUID_STR_LEN] = "", p1[MESH_UUID_STR_LEN] = "";
    if (e->nparents > 0) uuid_text(w, e->parents[0], p0);
    if (e->nparents > 1) uuid_text(w, e->parents[1], p1);
    uint32_t edit = (uint32_t)sim_rng_below(&n->rng_work, 1000000);
    int len = -1;
    switch ((sim_etype)e->type) {
    case ET_HOUSEHOLD:
        len = snprintf(buf, cap,
                       "{\"tenantId\":\"mz\",\"memberCount\":%u,\"address\":{\"locality\":"
                       "{\"code\":\"%s\"},\"latitude\":%u,\"longitude\":%u},\"editedBy\":\"n%u\","
                       "\"edit\":%u}",
                       edit % 8 + 1, n->scope, 150000 + edit % 1000, 390000 + edit % 997, n->id,
                       edit);
        break;
    case ET_INDIVIDUAL:
        len = snprintf(buf, cap,
                       "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"G%05u\",\"familyName\":"
                       "\"F%05u\"},\"gender\":\"%s\",\"dateOfBirth\":\"%04u-%02u-%02u\","
                       "\"editedBy\":\"n%u\",\"edit\":%u}",
                       edit % 99991, edit % 9973, edit % 2 ? "FEMALE" : "MALE", 1950 + edit % 70,
                       1 + edit % 12, 1 + edit % 28, n->id, edit);
        break;
    case ET_MEMBER:
        len = snprintf(buf, cap,
                       "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"%s\","
                       "\"individualClientReferenceId\":\"%s\",\"isHeadOfHousehold\":%s,"
                       "\"editedBy\":\"n%u\",\"edit\":%u}",
                       p0, p1, edit % 3 == 0 ? "true" : "false", n->id, edit);
        break;
    case ET_BENEFICIARY:
        len = snprintf(buf, cap,
                       "{\"tenantId\":\"mz\",\"projectId\":\"PRJ-ERATI-2026\","
                       "\"beneficiaryClientReferenceId\":\"%s\",\"dateOfRegistration\":%" PRIu64
                       ",\"editedBy\":\"n%u\",\"edit\":%u}",
                       p0, sim_node_ms(w, n), n->id, edit);
        break;
    case ET_TASK:
        len = snprintf(buf, cap,
                       "{\"tenantId\":\"mz\",\"projectId\":\"PRJ-ERATI-2026\","
                       "\"projectBeneficiaryClientReferenceId\":\"%s\",\"status\":\"%s\","
                       "\"resources\":[{\"productVariantId\":\"PVAR-ITN\",\"quantity\":%u,"
                       "\"isDelivered\":%s}],\"editedBy\":\"n%u\",\"edit\":%u}",
                       p0, status ? status : "NOT_DELIVERED", 1 + edit % 4,
                       status && strcmp(status, "DELIVERED") == 0 ? "true" : "false", n->id, edit);
        break;
    case ET_COUNT: break;
    }
    return len < 0 || (size_t)len >= cap ? -1 : 0;
}

/* ---- Writing an op ------------------------------------------------------------------------ */

typedef struct draft {
    sim_world *w;
    sim_node *n;
    uint8_t kind;
    uint32_t ent;
    const mesh_buf *body;
    /* Results. */
    uint32_t rv;
    bool has_base;
    mesh_opref base;
    uint64_t seq;
    uint8_t hash[MESH_HASH_BYTES];
} draft;

static int append_fn(mesh_txn *t, void *ctx)
{
    draft *d = ctx;
    sim_world *w = d->w;
    sim_node *n = d->n;
    const sim_entity *e = &w->ents[d->ent];
    mesh_op op = {0};
    op.kind = d->kind;
    op.type = TYPE_NAMES[e->type];
    op.type_len = strlen(op.type);
    memcpy(op.entity, e->uuid, MESH_UUID_BYTES);
    op.parents_count = e->nparents;
    for (uint32_t i = 0; i < e->nparents; i++)
        memcpy(op.parents[i], w->ents[e->parents[i]].uuid, MESH_UUID_BYTES);
    op.body = d->body->data;
    op.body_len = d->body->len;

    mesh_state st;
    int rc = mesh_store_state_get(t, e->uuid, &st);
    if (d->kind == MESH_OP_CREATE) {
        if (rc == MESH_OK) return SKIP;
        if (rc != MESH_ENOTFOUND) return rc;
        op.row_version = 1;
    } else {
        if (rc == MESH_ENOTFOUND) return SKIP;
        if (rc != MESH_OK) return rc;
        bool deleted;
        if ((rc = mesh_store_effectively_deleted(t, &st, &deleted)) != MESH_OK) return rc;
        if (deleted) return SKIP;  /* deletes are final: the app refuses the edit */
        op.row_version = st.max_rv + 1;
        op.has_base = true;
        op.base = st.winner.ref;
    }

    if ((rc = mesh_store_append(t, &n->ident, n->scope, sim_node_ms(w, n), &op, d->hash)) !=
        MESH_OK)
        return rc;
    d->rv = op.row_version;
    d->has_base = op.has_base;
    d->base = op.base;
    d->seq = op.seq;
    return MESH_OK;
}

/* Writes one op of entity `ent` on node n. Returns 0, SKIP, or -1 (an engine error, recorded). */
static int save(sim_world *w, sim_node *n, uint32_t ent, uint8_t kind, const char *status)
{
    if (ent == SIM_NONE || !n->up || w->nops >= SIM_OPS_MAX) return SKIP;
    char json[1024];
    if (body_json(w, n, ent, status, json, sizeof json) != 0) return SKIP;
    mesh_buf body;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    if (mesh_body_from_json(json, strlen(json), &body) != MESH_OK) {
        sim_engine_error(w, "node %u: a workload body does not convert: %s", n->id,
                         mesh_errmsg());
        mesh_buf_fini(&body);
        return -1;
    }
    draft d = {.w = w, .n = n, .kind = kind, .ent = ent, .body = &body};
    int rc = mesh_store_write(n->store, append_fn, &d);
    mesh_buf_fini(&body);
    if (rc == SKIP) return SKIP;
    if (rc != MESH_OK) {
        sim_engine_error(w, "node %u: saving a %s failed: %s", n->id,
                         TYPE_NAMES[w->ents[ent].type], mesh_errmsg());
        return -1;
    }
    /* Register the op. */
    sim_entity *e = &w->ents[ent];
    if (grow((void **)&w->ops, &w->ops_cap, sizeof *w->ops, w->nops + 1) != 0 ||
        grow((void **)&e->ops, &e->ops_cap, sizeof *e->ops, e->nops + 1) != 0 ||
        grow((void **)&n->ops, &n->ops_cap, sizeof *n->ops, (uint32_t)d.seq) != 0) {
        sim_engine_error(w, "out of memory registering ops");
        w->stop = true;
        return -1;
    }
    uint32_t idx = w->nops;
    sim_op *o = &w->ops[idx];
    memset(o, 0, sizeof *o);
    o->author = n->id;
    o->entity = ent;
    o->seq = (uint32_t)d.seq;
    o->rv = d.rv;
    o->kind = kind;
    o->t = w->now;
    o->base = d.has_base ? find_op(w, e, &d.base) : SIM_NONE;
    if (d.has_base && o->base == SIM_NONE)
        sim_engine_error(w, "node %u: the base of its op on an entity is not a known op", n->id);
    memcpy(o->hash, d.hash, MESH_HASH_BYTES);
    e->ops[e->nops++] = idx;
    if (kind == MESH_OP_CREATE) e->create_op = idx;
    n->ops[d.seq - 1] = idx;
    n->my_seq = d.seq;
    memcpy(n->my_tip, d.hash, MESH_HASH_BYTES);
    w->nops++;
    w->last_op = w->now;
    w->converged = -1;
    w->ncomplete = 0;
    for (uint32_t i = 0; i < w->nnodes; i++)
        if (w->nodes[i].ops_held >= w->nops) w->ncomplete++;
    sim_trace(w, 6000, n->id, kind, d.seq);
    sim_store_changed(w, n, 1);
    return 0;
}

/* ---- Actions ------------------------------------------------------------------------------ */

static double form_time(sim_world *w, sim_node *n)
{
    return sim_rng_range(&n->rng_work, w->cfg.form_s_min, w->cfg.form_s_max);
}

static void next_form(sim_world *w, sim_node *n)
{
    sim_push(w, w->now + (uint64_t)(form_time(w, n) * SIM_US), EV_FORM, n->id, n->gen, 0, NULL);
}

static void start_registration(sim_world *w, sim_node *n)
{
    if (n->form.active) return;   /* still filling the last household's forms */
    uint32_t hh = entity_new(w, n, ET_HOUSEHOLD, SIM_NONE, SIM_NONE);
    if (save(w, n, hh, MESH_OP_CREATE, NULL) != 0) return;
    hot_add(w, n->team, hh);
    uint32_t span = w->cfg.members_max - w->cfg.members_min + 1;
    n->form = (sim_form){.active = true, .household = hh,
                         .members_left = w->cfg.members_min +
                                         (uint32_t)sim_rng_below(&n->rng_work, span),
                         .step = 0};
    next_form(w, n);
}

/* Picks a recent entity of `team` (any type but links, which nobody edits). */
static uint32_t pick_recent(sim_world *w, sim_node *n, uint32_t team)
{
    if (team >= w->cfg.teams || w->hot_n[team] == 0) return SIM_NONE;
    uint32_t ent = w->hot[team][sim_rng_below(&n->rng_work, w->hot_n[team])];
    return ent;
}

static void edit(sim_world *w, sim_node *n, uint32_t team)
{
    uint32_t ent = pick_recent(w, n, team);
    if (ent == SIM_NONE) return;
    const char *status = NULL;
    if (w->ents[ent].type == ET_TASK)
        status = sim_rng_unit(&n->rng_work) < 0.7 ? "DELIVERED" : "VISITED";
    (void)save(w, n, ent, MESH_OP_UPDATE, status);
}

static void delete_one(sim_world *w, sim_node *n, uint32_t team)
{
    uint32_t ent = pick_recent(w, n, team);
    if (ent != SIM_NONE) (void)save(w, n, ent, MESH_OP_DELETE, NULL);
}

void sim_on_form(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (ev->gen != n->gen || !n->form.active) return;
    if (w->settling || w->quiescing || !n->up) {
        n->form.active = false;
        return;
    }
    sim_form *f = &n->form;
    uint32_t ent;
    int rc;
    switch (f->step) {
    case 0:
        if (f->members_left == 0) {
            f->step = 2;
            sim_on_form(w, ev);
            return;
        }
        ent = entity_new(w, n, ET_INDIVIDUAL, SIM_NONE, SIM_NONE);
        rc = save(w, n, ent, MESH_OP_CREATE, NULL);
        f->individual = ent;
        f->step = 1;
        break;
    case 1:
        ent = entity_new(w, n, ET_MEMBER, f->household, f->individual);
        rc = save(w, n, ent, MESH_OP_CREATE, NULL);
        if (rc == 0) hot_add(w, n->team, f->individual);
        f->members_left--;
        f->step = f->members_left > 0 ? 0 : 2;
        break;
    case 2:
        ent = entity_new(w, n, ET_BENEFICIARY, f->household, SIM_NONE);
        rc = save(w, n, ent, MESH_OP_CREATE, NULL);
        f->beneficiary = ent;
        f->step = 3;
        break;
    case 3:
        ent = entity_new(w, n, ET_TASK, f->beneficiary, SIM_NONE);
        rc = save(w, n, ent, MESH_OP_CREATE, NULL);
        if (rc == 0) hot_add(w, n->team, ent);
        f->task = ent;
        f->step = 4;
        break;
    default:
        /* The delivery: the task's status changes once the bed nets are handed over. */
        rc = save(w, n, f->task, MESH_OP_UPDATE, "DELIVERED");
        f->active = false;
        return;
    }
    if (rc != 0) {
        f->active = false;  /* a form could not be saved: the registration stops */
        return;
    }
    next_form(w, n);
}

static double action_rate(const sim_world *w, const sim_node *n)
{
    if (n->role == ROLE_FIELD)
        return w->cfg.register_per_hour + w->cfg.update_per_hour + w->cfg.delete_per_hour;
    if (n->role == ROLE_MULE) return w->cfg.mule_update_per_hour;
    return 0;
}

void sim_workload_start(sim_world *w, sim_node *n)
{
    double rate = action_rate(w, n);
    if (rate <= 0 || w->settling || w->quiescing) return;
    double dt = sim_rng_exp(&n->rng_work, 3600.0 / rate);
    uint64_t t = w->now + (uint64_t)(dt * SIM_US);
    if (t < w->end_us) sim_push(w, t, EV_WORK, n->id, n->gen, 0, NULL);
}

void sim_on_work(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (ev->gen != n->gen || !n->up || w->settling || w->quiescing) return;
    double u = sim_rng_unit(&n->rng_work) * action_rate(w, n);
    if (n->role == ROLE_FIELD) {
        bool at_work = n->loc == n->team || (w->cfg.work_at_base && n->loc == w->base_loc);
        if (at_work) {
            if (u < w->cfg.register_per_hour) start_registration(w, n);
            else if (u < w->cfg.register_per_hour + w->cfg.update_per_hour) edit(w, n, n->team);
            else delete_one(w, n, n->team);
        }
    } else if (n->role == ROLE_MULE && n->loc != SIM_NONE && n->loc < w->cfg.teams) {
        edit(w, n, n->loc);
    }
    sim_workload_start(w, n);
}

int sim_initial_ops(sim_world *w, sim_node *n)
{
    for (uint32_t i = 0; i < w->cfg.initial_ops; i++) {
        uint32_t hh = entity_new(w, n, ET_HOUSEHOLD, SIM_NONE, SIM_NONE);
        int rc = save(w, n, hh, MESH_OP_CREATE, NULL);
        if (rc < 0) return -1;
        if (rc == 0) hot_add(w, n->team == SIM_NONE ? 0 : n->team, hh);
    }
    return 0;
}

int sim_workload_init(sim_world *w)
{
    uint32_t teams = w->cfg.teams;
    w->hot = calloc(teams, sizeof *w->hot);
    w->hot_n = calloc(teams, sizeof *w->hot_n);
    w->hot_pos = calloc(teams, sizeof *w->hot_pos);
    if (!w->hot || !w->hot_n || !w->hot_pos) return -1;
    for (uint32_t i = 0; i < teams; i++) {
        w->hot[i] = calloc(w->cfg.hot_set, sizeof *w->hot[i]);
        if (w->hot[i] == NULL) return -1;
    }
    return 0;
}

void sim_workload_free(sim_world *w)
{
    if (w->hot)
        for (uint32_t i = 0; i < w->cfg.teams; i++) free(w->hot[i]);
    free(w->hot);
    free(w->hot_n);
    free(w->hot_pos);
    for (uint32_t i = 0; i < w->nents; i++) free(w->ents[i].ops);
    free(w->ents);
    free(w->ops);
    w->hot = NULL;
    w->ents = NULL;
    w->ops = NULL;
}
