/*
 * entity.c - the entity API: put, delete, get, list, history, conflicts and resolve.
 *
 * Bodies arrive as JSON. The fields an op carries in its header (clientReferenceId, rowVersion,
 * isDeleted) are taken out of the stored body and put back when an entity is printed, so the
 * header is the one source of truth for them.
 */
#include "api/node_int.h"

#include "model/body.h"
#include "model/hlc.h"
#include "model/uuid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const HEADER_FIELDS[] = {"clientReferenceId", "rowVersion", "isDeleted"};
#define NHEADER_FIELDS (sizeof HEADER_FIELDS / sizeof HEADER_FIELDS[0])

/* ---- Building ops from JSON ---- */

typedef struct draft {
    const mesh_type *type;
    uint8_t entity[MESH_UUID_BYTES];
    bool have_entity;
    bool have_rv;
    int64_t rv;                       /* the body's rowVersion, if any */
    mesh_buf body;                    /* canonical body without header fields */
    uint32_t nparents;
    uint8_t parents[MESH_PARENTS_MAX][MESH_UUID_BYTES];
} draft;

static void draft_fini(draft *d) { mesh_buf_fini(&d->body); }

/* Extracts the parent references a type declares from a canonical body. */
static int extract_parents(const mesh_type *type, const uint8_t *body, size_t len, uint32_t *n,
                           uint8_t parents[][MESH_UUID_BYTES])
{
    *n = 0;
    for (uint32_t i = 0; i < type->parents_count; i++) {
        const char *v;
        size_t vl;
        int rc = mesh_body_get_str(body, len, type->parents[i].field, &v, &vl);
        if (rc == MESH_ENOTFOUND || (rc == MESH_OK && vl == 0)) continue;
        if (rc != MESH_OK) return rc;
        char text[MESH_UUID_STR_LEN];
        if (vl != 36) goto bad;
        memcpy(text, v, 36);
        text[36] = '\0';
        if (mesh_uuid_parse(text, parents[*n]) != MESH_OK) goto bad;
        (*n)++;
        continue;
    bad:
        return mesh_err(MESH_EINVAL, "%s.%s is not a UUID (\"%.*s\"); it must be the "
                        "clientReferenceId of the parent entity", type->name,
                        type->parents[i].field, (int)(vl > 40 ? 40 : vl), v);
    }
    return MESH_OK;
}

static int draft_from_json(mesh_node *n, const char *type, const char *id, const char *json,
                           size_t json_len, draft *d)
{
    memset(d, 0, sizeof *d);
    mesh_buf_init(&d->body, MESH_OP_BYTES_MAX);
    if (type == NULL) return mesh_err(MESH_EINVAL, "no entity type given");
    d->type = mesh_types_find(n->types, type, strlen(type));
    if (d->type == NULL) {
        char known[512] = "";
        size_t used = 0;
        for (size_t i = 0; i < mesh_types_count(n->types) && used < sizeof known; i++) {
            int w = snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                             mesh_types_at(n->types, i)->name);
            if (w > 0) used += (size_t)w;
        }
        return mesh_err(MESH_ETYPE, "entity type '%s' is not configured in %s/types.json; the "
                        "configured types are: %s", type, n->dir, known);
    }
    if (json == NULL) return mesh_err(MESH_EINVAL, "no JSON body given");

    mesh_buf raw;
    mesh_buf_init(&raw, MESH_OP_BYTES_MAX);
    int rc = mesh_body_from_json(json, json_len, &raw);
    if (rc != MESH_OK) {
        mesh_buf_fini(&raw);
        return rc;
    }
    const char *crid;
    size_t crid_len;
    rc = mesh_body_get_str(raw.data, raw.len, "clientReferenceId", &crid, &crid_len);
    if (rc == MESH_OK) {
        char text[MESH_UUID_STR_LEN];
        if (crid_len != 36 || (memcpy(text, crid, 36), text[36] = '\0',
                               mesh_uuid_parse(text, d->entity) != MESH_OK)) {
            rc = mesh_err(MESH_EINVAL, "clientReferenceId \"%.*s\" is not a UUID",
                          (int)(crid_len > 40 ? 40 : crid_len), crid);
            goto out;
        }
        d->have_entity = true;
    }
    if (id != NULL) {
        uint8_t given[MESH_UUID_BYTES];
        if ((rc = mesh_uuid_parse(id, given)) != MESH_OK) goto out;
        if (d->have_entity && memcmp(given, d->entity, 16) != 0) {
            rc = mesh_err(MESH_EINVAL, "the id %s differs from the body's clientReferenceId", id);
            goto out;
        }
        memcpy(d->entity, given, 16);
        d->have_entity = true;
    }
    int64_t v;
    rc = mesh_body_get_int(raw.data, raw.len, "rowVersion", &v);
    if (rc == MESH_OK) {
        d->have_rv = true;
        d->rv = v;
    }
    bool del;
    if (mesh_body_get_bool(raw.data, raw.len, "isDeleted", &del) == MESH_OK && del) {
        rc = mesh_err(MESH_EINVAL, "isDeleted cannot be set by a put; use 'meshsync delete'");
        goto out;
    }
    rc = mesh_body_edit(raw.data, raw.len, HEADER_FIELDS, NHEADER_FIELDS, NULL, 0, &d->body);
    if (rc == MESH_OK)
        rc = extract_parents(d->type, d->body.data, d->body.len, &d->nparents, d->parents);
out:
    mesh_buf_fini(&raw);
    return rc;
}

static void new_entity_id(mesh_node *n, uint8_t out[MESH_UUID_BYTES])
{
    uint8_t r[10];
    mesh_random(r, sizeof r);
    mesh_uuid_v7(mesh_node_now_ms(n), r, out);
}

static void result_set(mesh_put_result *res, const uint8_t entity[16], uint32_t rv)
{
    if (res == NULL) return;
    mesh_uuid_format(entity, res->id);
    res->row_version = rv;
}

static void op_from_winner(mesh_op *op, const mesh_state *st)
{
    op->has_base = true;
    op->base = st->winner.ref;
    op->row_version = st->max_rv + 1;
}

static int deleted_error(mesh_txn *t, const mesh_state *st)
{
    char id[MESH_UUID_STR_LEN];
    mesh_uuid_format(st->entity, id);
    if (st->flags & MESH_STATE_DELETED)
        return mesh_err(MESH_EDELETED, "%s %s is deleted; deletes are final", st->type, id);
    (void)t;
    return mesh_err(MESH_EDELETED, "%s %s belongs to a deleted parent; deletes are final",
                    st->type, id);
}

typedef struct put_ctx {
    mesh_node *n;
    draft *d;
    mesh_put_result *res;
} put_ctx;

static int put_fn(mesh_txn *t, void *vctx)
{
    put_ctx *c = vctx;
    draft *d = c->d;
    mesh_op op = {0};
    mesh_state st;
    char id[MESH_UUID_STR_LEN];
    mesh_uuid_format(d->entity, id);
    int rc = mesh_store_state_get(t, d->entity, &st);
    if (rc == MESH_OK) {
        bool deleted;
        if ((rc = mesh_store_effectively_deleted(t, &st, &deleted)) != MESH_OK) return rc;
        if (deleted) return deleted_error(t, &st);
        if (strcmp(st.type, d->type->name) != 0)
            return mesh_err(MESH_EINVAL, "entity %s is a %s, not a %s", id, st.type, d->type->name);
        if (d->have_rv && d->rv != (int64_t)st.winner.ref.row_version)
            return mesh_err(MESH_ESTALE,
                            "%s %s: the body says rowVersion %" PRId64 " but the current one is "
                            "%u; get the entity again and reapply the change",
                            st.type, id, d->rv, st.winner.ref.row_version);
        op.kind = MESH_OP_UPDATE;
        op_from_winner(&op, &st);
    } else if (rc == MESH_ENOTFOUND) {
        if (d->have_rv && d->rv > 1)
            return mesh_err(MESH_ESTALE, "%s %s does not exist here, so rowVersion %" PRId64
                            " cannot be current; sync first or drop rowVersion to create it",
                            d->type->name, id, d->rv);
        op.kind = MESH_OP_CREATE;
        op.row_version = 1;
    } else {
        return rc;
    }
    op.type = d->type->name;
    op.type_len = strlen(d->type->name);
    memcpy(op.entity, d->entity, 16);
    op.parents_count = d->nparents;
    memcpy(op.parents, d->parents, sizeof d->parents[0] * d->nparents);
    op.body = d->body.data;
    op.body_len = d->body.len;
    rc = mesh_node_append(c->n, t, &op);
    if (rc == MESH_OK) result_set(c->res, d->entity, op.row_version);
    return rc;
}

int mesh_put(mesh_node *n, const char *type, const char *id, const char *json, size_t json_len,
             mesh_put_result *res)
{
    mesh_err_clear();
    draft d;
    int rc = draft_from_json(n, type, id, json, json_len, &d);
    if (rc == MESH_OK) {
        if (!d.have_entity) new_entity_id(n, d.entity);
        put_ctx c = {.n = n, .d = &d, .res = res};
        rc = mesh_store_write(n->store, put_fn, &c);
    }
    draft_fini(&d);
    return rc;
}

/* Loads and decodes the op `ref` of entity `entity`. */
static int load_op(mesh_txn *t, const uint8_t entity[16], const mesh_opref *ref, mesh_op *op)
{
    mesh_oprec rec;
    int rc = mesh_store_op_get(t, entity, ref, &rec);
    if (rc == MESH_ENOTFOUND) return mesh_err(MESH_ECORRUPT, "a winning op is missing from the log");
    if (rc != MESH_OK) return rc;
    return mesh_op_decode(rec.op, rec.op_len, op);
}

/* Reads an entity's state, or fails with MESH_ENOTFOUND naming it. */
static int state_or_notfound(mesh_txn *t, const uint8_t entity[16], mesh_state *st)
{
    int rc = mesh_store_state_get(t, entity, st);
    if (rc == MESH_ENOTFOUND) {
        char id[MESH_UUID_STR_LEN];
        mesh_uuid_format(entity, id);
        return mesh_err(MESH_ENOTFOUND, "no entity %s here", id);
    }
    return rc;
}

/* Reads a live entity's state: MESH_ENOTFOUND if absent, MESH_EDELETED if deleted. */
static int live_state(mesh_txn *t, const uint8_t entity[16], mesh_state *st)
{
    int rc = state_or_notfound(t, entity, st);
    if (rc == MESH_OK && (st->flags & MESH_STATE_DELETED)) rc = deleted_error(t, st);
    return rc;
}

typedef struct del_ctx {
    mesh_node *n;
    uint8_t entity[16];
    mesh_put_result *res;
} del_ctx;

static int delete_fn(mesh_txn *t, void *vctx)
{
    del_ctx *c = vctx;
    mesh_state st;
    int rc = live_state(t, c->entity, &st);
    if (rc != MESH_OK) return rc;
    mesh_op cur;
    if ((rc = load_op(t, c->entity, &st.winner.ref, &cur)) != MESH_OK) return rc;
    /* The delete carries the full state it deletes, as the campaign service's audit wants. The
     * body borrows from the snapshot: copy it before appending writes. */
    mesh_buf body;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    rc = mesh_buf_append(&body, cur.body, cur.body_len);
    if (rc == MESH_OK) {
        mesh_op op = {.kind = MESH_OP_DELETE, .type = st.type, .type_len = strlen(st.type),
                      .parents_count = st.nparents, .body = body.data, .body_len = body.len};
        memcpy(op.entity, c->entity, 16);
        memcpy(op.parents, st.parents, sizeof st.parents[0] * st.nparents);
        op_from_winner(&op, &st);
        rc = mesh_node_append(c->n, t, &op);
        if (rc == MESH_OK) result_set(c->res, c->entity, op.row_version);
    }
    mesh_buf_fini(&body);
    return rc;
}

int mesh_delete(mesh_node *n, const char *id, mesh_put_result *res)
{
    mesh_err_clear();
    del_ctx c = {.n = n, .res = res};
    int rc = mesh_uuid_parse(id, c.entity);
    if (rc != MESH_OK) return rc;
    return mesh_store_write(n->store, delete_fn, &c);
}

/* ---- Reading ---- */

/* Appends the entity JSON: header fields, then the body's own fields. */
static int entity_json(const uint8_t entity[16], uint32_t rv, bool deleted, const uint8_t *body,
                       size_t body_len, mesh_buf *out)
{
    mesh_buf bj;
    mesh_buf_init(&bj, 4 * MESH_OP_BYTES_MAX);
    int rc = mesh_body_to_json(body, body_len, &bj);
    if (rc == MESH_OK && (bj.len < 2 || bj.data[0] != '{'))
        rc = mesh_err(MESH_ECORRUPT, "a stored body is not an object");
    if (rc == MESH_OK) {
        char id[MESH_UUID_STR_LEN], head[160];
        mesh_uuid_format(entity, id);
        int hl = snprintf(head, sizeof head,
                          "{\"clientReferenceId\":\"%s\",\"rowVersion\":%u,\"isDeleted\":%s%s", id,
                          rv, deleted ? "true" : "false", bj.len > 2 ? "," : "");
        mesh_buf_reset(out);
        rc = mesh_buf_append(out, head, (size_t)hl);
        if (rc == MESH_OK) rc = mesh_buf_append(out, bj.data + 1, bj.len - 1);
        if (rc == MESH_OK) rc = mesh_buf_append(out, "", 1);
    }
    mesh_buf_fini(&bj);
    return rc;
}

typedef struct emit_ctx {
    mesh_entity_cb cb;
    void *ctx;
    bool include_deleted;
    uint64_t since_ms;
    uint32_t offset, limit, emitted;
    mesh_buf json;
    bool found;
} emit_ctx;

#define STOP_ITERATION 1 /* internal: the limit was reached */

static int emit_state(mesh_txn *t, const mesh_state *st, emit_ctx *e)
{
    bool deleted;
    int rc = mesh_store_effectively_deleted(t, st, &deleted);
    if (rc != MESH_OK) return rc;
    if (deleted && !e->include_deleted) return MESH_OK;
    uint64_t modified = MESH_HLC_MS(st->winner.hlc);
    if (e->since_ms && modified < e->since_ms) return MESH_OK;
    if (e->offset > 0) {
        e->offset--;
        return MESH_OK;
    }
    if (e->limit && e->emitted >= e->limit) return STOP_ITERATION;
    mesh_op op;
    if ((rc = load_op(t, st->entity, &st->winner.ref, &op)) != MESH_OK) return rc;
    rc = entity_json(st->entity, st->winner.ref.row_version, deleted, op.body, op.body_len,
                     &e->json);
    if (rc != MESH_OK) return rc;
    mesh_entity ent = {.type = st->type, .row_version = st->winner.ref.row_version,
                       .deleted = deleted, .conflict = mesh_state_conflict(st),
                       .modified_ms = modified, .json = (const char *)e->json.data,
                       .json_len = e->json.len - 1};
    mesh_uuid_format(st->entity, ent.id);
    mesh_hex_encode(st->winner.ref.author, MESH_KEY_BYTES, ent.author);
    e->emitted++;
    e->found = true;
    return e->cb(&ent, e->ctx);
}

typedef struct get_ctx {
    uint8_t entity[16];
    emit_ctx e;
} get_ctx;

static int get_fn(mesh_txn *t, void *vctx)
{
    get_ctx *g = vctx;
    mesh_state st;
    char id[MESH_UUID_STR_LEN];
    mesh_uuid_format(g->entity, id);
    int rc = state_or_notfound(t, g->entity, &st);
    if (rc != MESH_OK) return rc;
    rc = emit_state(t, &st, &g->e);
    if (rc == MESH_OK && !g->e.found)
        return mesh_err(MESH_ENOTFOUND, "%s %s is deleted (add --include-deleted to see it)",
                        st.type, id);
    return rc;
}

int mesh_get(mesh_node *n, const char *id, unsigned flags, mesh_entity_cb cb, void *ctx)
{
    mesh_err_clear();
    get_ctx g = {.e = {.cb = cb, .ctx = ctx, .include_deleted = flags & MESH_GET_INCLUDE_DELETED}};
    int rc = mesh_uuid_parse(id, g.entity);
    if (rc != MESH_OK) return rc;
    mesh_buf_init(&g.e.json, 8 * MESH_OP_BYTES_MAX);
    rc = mesh_store_read(n->store, get_fn, &g);
    mesh_buf_fini(&g.e.json);
    return rc;
}

typedef struct list_ctx {
    mesh_txn *t;
    emit_ctx e;
    bool skip_system;   /* leave out system entities (receipts, configuration; system.c) */
} list_ctx;

static int emit_fn(const mesh_state *st, void *ctx)
{
    list_ctx *l = ctx;
    if (l->skip_system && st->type[0] == '_') return MESH_OK;
    return emit_state(l->t, st, &l->e);
}

typedef struct list_args {
    const mesh_query *q;
    list_ctx l;
    bool conflicts_only;
} list_args;

static int list_fn(mesh_txn *t, void *vctx)
{
    list_args *a = vctx;
    a->l.t = t;
    if (a->conflicts_only) return mesh_store_conflicts(t, emit_fn, &a->l);
    return mesh_store_states(t, a->q->type, emit_fn, &a->l);
}

static int run_list(mesh_node *n, list_args *a)
{
    mesh_buf_init(&a->l.e.json, 8 * MESH_OP_BYTES_MAX);
    int rc = mesh_store_read(n->store, list_fn, a);
    mesh_buf_fini(&a->l.e.json);
    return rc == STOP_ITERATION ? MESH_OK : rc;
}

int mesh_list(mesh_node *n, const mesh_query *q, mesh_entity_cb cb, void *ctx)
{
    mesh_err_clear();
    if (q == NULL) return mesh_err(MESH_EINVAL, "no query given");
    if (q->type && mesh_types_find(n->types, q->type, strlen(q->type)) == NULL &&
        mesh_type_check(q->type, strlen(q->type)) != MESH_OK)
        return mesh_err(MESH_ETYPE, "'%s' is not an entity type", q->type);
    list_args a = {.q = q,
                   .l.e = {.cb = cb, .ctx = ctx, .include_deleted = q->include_deleted,
                           .since_ms = q->last_changed_since_ms, .offset = q->offset,
                           .limit = q->limit},
                   .l.skip_system = q->type == NULL};
    return run_list(n, &a);
}

int mesh_conflicts(mesh_node *n, mesh_entity_cb cb, void *ctx)
{
    mesh_err_clear();
    mesh_query q = {0};
    list_args a = {.q = &q, .conflicts_only = true, .l.e = {.cb = cb, .ctx = ctx}};
    return run_list(n, &a);
}

/* ---- History ---- */

typedef struct hist_ctx {
    mesh_op_cb cb;
    void *ctx;
    mesh_state st;
    mesh_buf json;
    size_t count;
} hist_ctx;

static int hist_op(const mesh_oprec *rec, void *vctx)
{
    hist_ctx *h = vctx;
    mesh_op op;
    int rc = mesh_op_decode(rec->op, rec->op_len, &op);
    if (rc != MESH_OK) return mesh_err_wrap(rc, "a stored op no longer decodes");
    mesh_buf_reset(&h->json);
    rc = mesh_body_to_json(op.body, op.body_len, &h->json);
    if (rc == MESH_OK) rc = mesh_buf_append(&h->json, "", 1);
    if (rc != MESH_OK) return rc;
    char type[MESH_TYPE_BYTES_MAX + 1], scope[MESH_SCOPE_BYTES_MAX + 1];
    snprintf(type, sizeof type, "%.*s", (int)op.type_len, op.type);
    snprintf(scope, sizeof scope, "%.*s", (int)op.scope_len, op.scope);
    mesh_op_info info = {.type = type, .row_version = op.row_version, .kind = op.kind,
                         .hlc = op.hlc, .scope = scope, .seq = op.seq,
                         .json = (const char *)h->json.data, .json_len = h->json.len - 1};
    mesh_uuid_format(op.entity, info.entity);
    mesh_hex_encode(op.author, MESH_KEY_BYTES, info.author);
    if (op.has_base) {
        info.base_row_version = op.base.row_version;
        mesh_hex_encode(op.base.author, MESH_KEY_BYTES, info.base_author);
    }
    uint8_t hash[MESH_HASH_BYTES];
    mesh_op_hash(rec->op, rec->op_len, hash);
    mesh_hex_encode(hash, MESH_HASH_BYTES, info.hash);
    mesh_head me = {.hlc = op.hlc};
    me.ref.row_version = op.row_version;
    memcpy(me.ref.author, op.author, MESH_KEY_BYTES);
    info.winner = h->st.winner.ref.row_version == op.row_version &&
                  memcmp(h->st.winner.ref.author, op.author, MESH_KEY_BYTES) == 0;
    for (uint32_t i = 0; i < h->st.nheads; i++)
        if (h->st.heads[i].ref.row_version == op.row_version &&
            memcmp(h->st.heads[i].ref.author, op.author, MESH_KEY_BYTES) == 0)
            info.head = 1;
    h->count++;
    return h->cb(&info, h->ctx);
}

typedef struct hist_args {
    uint8_t entity[16];
    hist_ctx h;
} hist_args;

static int history_fn(mesh_txn *t, void *vctx)
{
    hist_args *a = vctx;
    int rc = state_or_notfound(t, a->entity, &a->h.st);
    if (rc != MESH_OK) return rc;
    return mesh_store_entity_ops(t, a->entity, hist_op, &a->h);
}

int mesh_history(mesh_node *n, const char *id, mesh_op_cb cb, void *ctx)
{
    mesh_err_clear();
    hist_args a = {.h = {.cb = cb, .ctx = ctx}};
    int rc = mesh_uuid_parse(id, a.entity);
    if (rc != MESH_OK) return rc;
    mesh_buf_init(&a.h.json, 4 * MESH_OP_BYTES_MAX);
    rc = mesh_store_read(n->store, history_fn, &a);
    mesh_buf_fini(&a.h.json);
    return rc;
}

/* ---- Resolve ---- */

typedef struct resolve_ctx {
    mesh_node *n;
    uint8_t entity[16];
    draft *d;                 /* new body, or NULL to pick a head's */
    const char *pick_author;
    mesh_put_result *res;
} resolve_ctx;

static int resolve_fn(mesh_txn *t, void *vctx)
{
    resolve_ctx *c = vctx;
    mesh_state st;
    char id[MESH_UUID_STR_LEN];
    mesh_uuid_format(c->entity, id);
    int rc = live_state(t, c->entity, &st);
    if (rc != MESH_OK) return rc;
    if (!mesh_state_conflict(&st))
        return mesh_err(MESH_ECONFLICT, "%s %s has no open conflict", st.type, id);
    if (c->d && strcmp(c->d->type->name, st.type) != 0)
        return mesh_err(MESH_EINVAL, "entity %s is a %s, not a %s", id, st.type, c->d->type->name);

    /* The chosen head becomes the base; every other head is merged. */
    uint32_t chosen = 0;
    for (uint32_t i = 0; i < st.nheads; i++)
        if (memcmp(&st.heads[i].ref, &st.winner.ref, sizeof st.winner.ref) == 0) chosen = i;
    if (c->pick_author) {
        uint8_t author[MESH_KEY_BYTES];
        if (mesh_hex_decode(c->pick_author, author, MESH_KEY_BYTES) != MESH_OK)
            return mesh_err(MESH_EINVAL, "'%s' is not a public key (64 hex characters)",
                            c->pick_author);
        bool found = false;
        for (uint32_t i = 0; i < st.nheads && !found; i++)
            if (memcmp(st.heads[i].ref.author, author, MESH_KEY_BYTES) == 0) {
                chosen = i;
                found = true;
            }
        if (!found)
            return mesh_err(MESH_ECONFLICT, "author %.16s... wrote none of the competing versions "
                            "of %s ('meshsync history %s' lists them)", c->pick_author, id, id);
    }
    mesh_op op = {.kind = MESH_OP_UPDATE, .row_version = st.max_rv + 1, .has_base = true,
                  .base = st.heads[chosen].ref, .type = st.type, .type_len = strlen(st.type)};
    memcpy(op.entity, c->entity, 16);
    for (uint32_t i = 0; i < st.nheads; i++)
        if (i != chosen) op.merged[op.merged_count++] = st.heads[i].ref;

    mesh_buf body;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    if (c->d) {
        rc = mesh_buf_append(&body, c->d->body.data, c->d->body.len);
        op.parents_count = c->d->nparents;
        memcpy(op.parents, c->d->parents, sizeof op.parents[0] * op.parents_count);
    } else {
        mesh_op head;
        rc = load_op(t, c->entity, &st.heads[chosen].ref, &head);
        if (rc == MESH_OK) rc = mesh_buf_append(&body, head.body, head.body_len);
        op.parents_count = head.parents_count;
        memcpy(op.parents, head.parents, sizeof op.parents[0] * op.parents_count);
    }
    if (rc == MESH_OK) {
        op.body = body.data;
        op.body_len = body.len;
        rc = mesh_node_append(c->n, t, &op);
        if (rc == MESH_OK) result_set(c->res, c->entity, op.row_version);
    }
    mesh_buf_fini(&body);
    return rc;
}

typedef struct type_ctx {
    uint8_t entity[16];
    char type[MESH_TYPE_BYTES_MAX + 1];
} type_ctx;

static int type_fn(mesh_txn *t, void *vctx)
{
    type_ctx *c = vctx;
    mesh_state st;
    int rc = state_or_notfound(t, c->entity, &st);
    if (rc == MESH_OK) memcpy(c->type, st.type, sizeof c->type);
    return rc;
}

int mesh_resolve(mesh_node *n, const char *id, const char *json, size_t json_len,
                 const char *pick_author, mesh_put_result *res)
{
    mesh_err_clear();
    resolve_ctx c = {.n = n, .pick_author = pick_author, .res = res};
    int rc = mesh_uuid_parse(id, c.entity);
    if (rc != MESH_OK) return rc;
    if (json != NULL && pick_author != NULL)
        return mesh_err(MESH_EINVAL, "give either a new body or an author to pick, not both");
    draft d;
    memset(&d, 0, sizeof d);
    mesh_buf_init(&d.body, MESH_OP_BYTES_MAX);
    if (json != NULL) {
        /* The body is parsed against the stored entity's type. */
        type_ctx tc;
        memcpy(tc.entity, c.entity, 16);
        rc = mesh_store_read(n->store, type_fn, &tc);
        if (rc == MESH_OK) {
            draft_fini(&d);
            rc = draft_from_json(n, tc.type, id, json, json_len, &d);
        }
        c.d = &d;
    }
    if (rc == MESH_OK) rc = mesh_store_write(n->store, resolve_fn, &c);
    draft_fini(&d);
    return rc;
}
