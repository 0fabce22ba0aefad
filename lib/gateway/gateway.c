/*
 * gateway.c - This file implements the gateway core (gateway.h): scanning the op-log for ops to
 * forward, choosing each entity's next op (parents first, merge order, deletes last), batching
 * writes per (type, action), confirming them by search, retrying with backoff, the file uplink,
 * authentication and reachability, and persisting every change with its receipts in one LMDB
 * transaction. docs/GATEWAY.md is the design; gw_int.h describes the memory model.
 *
 * One op per entity is forwarded at a time (gent.cur), in this order: the entity's live
 * non-delete ops in merge order (rowVersion, hlc, author), then its winning delete (deletes are
 * final; other deletes are confirmed with it), then, if the server holds the body of an op that
 * is not the mesh's winner (an op arrived late, after a later one was forwarded), a write of the
 * winner's body. An op waits for its base op (and merged heads) to be held, and for each parent
 * entity to be created on the server; a parent whose create was rejected (and has nothing more
 * to send) gets its children's ops rejected with an error naming it.
 *
 * The exactly-once argument (docs/GATEWAY.md): every write carries a precondition the server
 * checks (a create: no entity with that clientReferenceId; an update or delete: the server's
 * current rowVersion and id), so a repeated or delayed copy of a write can apply at most once;
 * and an op is sent again only after a search shows that it did not apply.
 */
#include "gateway/gw_int.h"

#include "model/body.h"
#include "model/hlc.h"
#include "model/uuid.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* A search over ops whose confirmation is due waits this long for more to come due. */
#define SEARCH_LINGER_MS(g) ((g)->cfg.linger_ms)
/* Consecutive transport failures (timeouts, broken connections) that mean "offline". */
#define NET_FAILS_OFFLINE 3u
/* Parents of an op this file tracks (the store's limit). */
#define OP_BODY_JSON_MAX (4u * MESH_OP_BYTES_MAX)

static const char *const ACTION_NAMES[ACT_COUNT] = {"none", "create", "update", "delete"};
static const char *const ACTION_PATHS[ACT_COUNT] = {"", "_create", "_update", "_delete"};

/* ---- Small helpers ------------------------------------------------------------------------ */

void gw_log(mesh_gw *g, int level, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (level <= 1) {
        size_t n = strnlen(msg, sizeof g->st.last_error - 1);
        memcpy(g->st.last_error, msg, n);
        g->st.last_error[n] = '\0';
    }
    if (g->cfg.log) g->cfg.log(g->cfg.log_ctx, level, msg);
}

static uint64_t rng_next(mesh_gw *g)
{
    /* splitmix64: the core's only randomness, from the caller's seed. */
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t gw_jitter(mesh_gw *g, uint64_t ms)
{
    uint64_t span = ms * g->cfg.jitter_pct / 100;
    if (span == 0) return ms;
    return ms - span + rng_next(g) % (2 * span + 1);
}

uint64_t gw_backoff(mesh_gw *g, uint32_t fails)
{
    uint64_t ms = g->cfg.backoff_base_ms;
    for (uint32_t i = 1; i < fails && ms < g->cfg.backoff_max_ms; i++) ms *= 2;
    if (ms > g->cfg.backoff_max_ms) ms = g->cfg.backoff_max_ms;
    return gw_jitter(g, ms);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return MESH_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (p == NULL) return mesh_err(MESH_ENOMEM, "out of memory in the gateway");
    *arr = p;
    *cap = nc;
    return MESH_OK;
}

#define PUSH(arr, n, cap, item)                                                                 \
    (grow((void **)&(arr), &(cap), (n) + 1, sizeof *(arr)) == MESH_OK ? ((arr)[(n)++] = (item), \
                                                                         MESH_OK)               \
                                                                      : MESH_ENOMEM)

static int vec_push(opvec *q, gop *op)
{
    if (q->head > 0 && q->head == q->n) q->head = q->n = 0;
    if (q->n == q->cap && q->head > q->cap / 2) {
        memmove(q->v, q->v + q->head, (q->n - q->head) * sizeof *q->v);
        q->n -= q->head;
        q->head = 0;
    }
    return PUSH(q->v, q->n, q->cap, op);
}

static size_t vec_len(const opvec *q) { return q->n - q->head; }

static void fail(mesh_gw *g, int rc, const char *what)
{
    if (!g->broken) {
        g->broken = true;
        snprintf(g->broken_msg, sizeof g->broken_msg, "%s: %s", what, mesh_errmsg());
        gw_log(g, 0, "gateway stopped: %s (%s); it must be restarted, which resumes from the "
               "store", g->broken_msg, mesh_strerror(rc));
    }
}

static int broken_err(mesh_gw *g)
{
    return mesh_err(MESH_EIO, "the gateway failed earlier (%s); make a new one from the store",
                    g->broken_msg);
}

static void uuid_str(const uint8_t id[16], char out[MESH_UUID_STR_LEN]) { mesh_uuid_format(id, out); }

static const mesh_gw_type *type_of(const mesh_gw *g, const gent *e) { return &g->cfg.types[e->type]; }

static int type_index(const mesh_gw *g, const char *name, size_t len)
{
    for (size_t i = 0; i < g->cfg.ntypes; i++)
        if (strlen(g->cfg.types[i].name) == len && memcmp(g->cfg.types[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static uint16_t tenant_index(mesh_gw *g, const char *t, size_t len)
{
    if (len == 0 || len > 64) return 0;
    for (size_t i = 0; i < g->ntenants; i++)
        if (strlen(g->tenants[i]) == len && memcmp(g->tenants[i], t, len) == 0) return (uint16_t)i;
    if (g->ntenants == MESH_GW_TENANTS_MAX) {
        gw_log(g, 1, "more than %u tenantIds among forwarded entities; searching the others "
               "under %s", MESH_GW_TENANTS_MAX, g->tenants[0]);
        return 0;
    }
    memcpy(g->tenants[g->ntenants], t, len);
    g->tenants[g->ntenants][len] = '\0';
    return (uint16_t)g->ntenants++;
}

/* ---- Timers --------------------------------------------------------------------------------- */

static bool timer_less(const timer *a, const timer *b) { return a->due < b->due; }

static int timer_push(mesh_gw *g, gop *op, uint64_t due)
{
    op->due = due;
    op->timer_gen++;
    int rc = grow((void **)&g->heap, &g->heap_cap, g->nheap + 1, sizeof *g->heap);
    if (rc != MESH_OK) return rc;
    size_t i = g->nheap++;
    g->heap[i] = (timer){due, op, op->timer_gen};
    while (i > 0 && timer_less(&g->heap[i], &g->heap[(i - 1) / 2])) {
        timer t = g->heap[i];
        g->heap[i] = g->heap[(i - 1) / 2];
        g->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return MESH_OK;
}

static bool timer_stale(const timer *t)
{
    return t->op->timer_gen != t->gen ||
           (t->op->phase != PH_DELAY && t->op->phase != PH_ACCEPT);
}

static void timer_pop(mesh_gw *g)
{
    g->heap[0] = g->heap[--g->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < g->nheap && timer_less(&g->heap[l], &g->heap[m])) m = l;
        if (r < g->nheap && timer_less(&g->heap[r], &g->heap[m])) m = r;
        if (m == i) break;
        timer t = g->heap[i];
        g->heap[i] = g->heap[m];
        g->heap[m] = t;
        i = m;
    }
}

/* The earliest live timer (drops stale ones), or NULL. */
static const timer *timer_top(mesh_gw *g)
{
    while (g->nheap > 0 && timer_stale(&g->heap[0])) timer_pop(g);
    return g->nheap ? &g->heap[0] : NULL;
}

/* ---- Entities --------------------------------------------------------------------------------- */

static size_t ent_hash(const uint8_t id[16])
{
    uint64_t a = mesh_be64_get(id), b = mesh_be64_get(id + 8);
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ull));
    return (size_t)(h ^ (h >> 29));
}

static gent *ent_find(const mesh_gw *g, const uint8_t id[16])
{
    if (g->tab_cap == 0) return NULL;
    size_t mask = g->tab_cap - 1;
    for (size_t i = ent_hash(id) & mask;; i = (i + 1) & mask) {
        gent *e = g->tab[i];
        if (e == NULL) return NULL;
        if (memcmp(e->entity, id, 16) == 0) return e;
    }
}

static int ent_insert(mesh_gw *g, gent *e)
{
    if ((g->nents + 1) * 2 > g->tab_cap) {
        size_t nc = g->tab_cap ? g->tab_cap * 2 : 1024;
        gent **nt = calloc(nc, sizeof *nt);
        if (nt == NULL) return mesh_err(MESH_ENOMEM, "out of memory in the gateway");
        for (size_t i = 0; i < g->tab_cap; i++) {
            gent *x = g->tab[i];
            if (x == NULL) continue;
            size_t j = ent_hash(x->entity) & (nc - 1);
            while (nt[j]) j = (j + 1) & (nc - 1);
            nt[j] = x;
        }
        free(g->tab);
        g->tab = nt;
        g->tab_cap = nc;
    }
    size_t mask = g->tab_cap - 1, i = ent_hash(e->entity) & mask;
    while (g->tab[i]) i = (i + 1) & mask;
    g->tab[i] = e;
    g->nents++;
    return MESH_OK;
}

static void op_free(gop *op)
{
    if (op == NULL) return;
    free(op->merged);
    free(op->parents);
    free(op->verdict);
    free(op);
}

static void ent_free(gent *e)
{
    if (e == NULL) return;
    /* A winner re-send is not among the entity's ops: free it on its own (look before the
     * ops are freed: cur may be one of them). */
    gop *resend = e->cur && e->cur->reassert ? e->cur : NULL;
    for (uint32_t i = 0; i < e->nops; i++) op_free(e->ops[i]);
    op_free(resend);
    free(e->ops);
    free(e->waiters);
    free(e->server_id);
    free(e->refusal);
    free(e);
}

static int order_cmp(uint32_t rva, uint64_t ha, const uint8_t *aa, uint32_t rvb, uint64_t hb,
                     const uint8_t *ab)
{
    return mesh_op_order_cmp(rva, ha, aa, rvb, hb, ab);
}

static int op_order(const gop *a, const gop *b)
{
    return order_cmp(a->rv, a->hlc, a->author, b->rv, b->hlc, b->author);
}

static int ent_add_op(gent *e, gop *op)
{
    if (e->nops == e->cap) {
        uint32_t nc = e->cap ? e->cap * 2 : 2;
        gop **n = realloc(e->ops, nc * sizeof *n);
        if (n == NULL) return mesh_err(MESH_ENOMEM, "out of memory in the gateway");
        e->ops = n;
        e->cap = nc;
    }
    uint32_t i = e->nops;
    while (i > 0 && op_order(e->ops[i - 1], op) > 0) {
        e->ops[i] = e->ops[i - 1];
        i--;
    }
    e->ops[i] = op;
    e->nops++;
    op->ent = e;
    return MESH_OK;
}

static void ent_remove_op(gent *e, gop *op)
{
    for (uint32_t i = 0; i < e->nops; i++)
        if (e->ops[i] == op) {
            memmove(&e->ops[i], &e->ops[i + 1], (e->nops - i - 1) * sizeof *e->ops);
            e->nops--;
            return;
        }
}

static void set_server_id(gent *e, const char *id)
{
    if (id == NULL || (e->server_id && strcmp(e->server_id, id) == 0)) return;
    free(e->server_id);
    e->server_id = strndup(id, MESH_OUTBOX_ID_BYTES_MAX);
}

/* ---- Dirty tracking ---------------------------------------------------------------------------- */

static void ent_dirty(mesh_gw *g, gent *e)
{
    if (e->dirty) return;
    if (PUSH(g->dirty_ents, g->ndirty_ents, g->dirty_ents_cap, e) != MESH_OK) {
        fail(g, MESH_ENOMEM, "tracking changes");
        return;
    }
    e->dirty = true;
}

static void op_dirty(mesh_gw *g, gop *op)
{
    if (op->dirty) return;
    if (PUSH(g->dirty_ops, g->ndirty_ops, g->dirty_ops_cap, op) != MESH_OK) {
        fail(g, MESH_ENOMEM, "tracking changes");
        return;
    }
    op->dirty = true;
}

static void advance_later(mesh_gw *g, gent *e)
{
    if (e->queued) return;
    if (PUSH(g->advance, g->nadvance, g->advance_cap, e) != MESH_OK) {
        fail(g, MESH_ENOMEM, "scheduling");
        return;
    }
    e->queued = true;
}

static void verdict_set(verdict *v, const char *code, const char *fmt, ...) MESH_PRINTF(3, 4);
static void verdict_set(verdict *v, const char *code, const char *fmt, ...)
{
    snprintf(v->code, sizeof v->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof v->msg, fmt, ap);
    va_end(ap);
}

static void stage_receipt(mesh_gw *g, const gop *op, const gent *e, uint8_t status,
                          const verdict *err)
{
    receipt_rec r;
    memset(&r, 0, sizeof r);
    memcpy(r.entity, op->entity, 16);
    r.rv = op->rv;
    memcpy(r.author, op->author, 32);
    r.type = e->type;
    r.status = status;
    r.action = op->action;
    r.reasserted = op->reassert;
    r.server_rv = status == MESH_OUTBOX_CONFIRMED ? op->server_rv : 0;
    if (e->server_id && status == MESH_OUTBOX_CONFIRMED)
        snprintf(r.server_id, sizeof r.server_id, "%s", e->server_id);
    if (err) r.err = *err;
    if (PUSH(g->receipts, g->nreceipts, g->receipts_cap, r) != MESH_OK)
        fail(g, MESH_ENOMEM, "staging a receipt");
}

/* Settles op in memory: confirmed (server_rv set by the caller) or rejected with `err`. */
static void finish(mesh_gw *g, gop *op, uint8_t status, const verdict *err)
{
    gent *e = op->ent;
    op->state = status;
    op->phase = PH_FINISHED;
    if (status == MESH_OUTBOX_REJECTED) {
        if (op->verdict == NULL) op->verdict = malloc(sizeof *op->verdict);
        if (op->verdict && err && op->verdict != err) *op->verdict = *err;
    }
    if (!op->reassert) ent_remove_op(e, op);
    if (e->cur == op) e->cur = NULL;
    stage_receipt(g, op, e, status, err);
    op_dirty(g, op);
    advance_later(g, e);
    if (op->reassert) g->reasserts--;
    else g->live_ops--;
    if (status == MESH_OUTBOX_CONFIRMED) g->st.ops_confirmed += !op->reassert;
    else g->st.ops_rejected += !op->reassert;
}

/* A re-send of the winner that cannot be done (refused): give up on it, so that it does not
 * repeat forever, and say so. */
static void reassert_give_up(mesh_gw *g, gop *op, const verdict *v)
{
    gent *e = op->ent;
    char id[MESH_UUID_STR_LEN];
    mesh_uuid_format(e->entity, id);
    gw_log(g, 1, "%s %s: re-sending the mesh's winner was refused (%s: %s); the server keeps "
           "an earlier version", g->cfg.types[e->type].name, id, v->code, v->msg);
    e->flags &= ~MESH_OUTBOX_ENT_REASSERT;
    e->fwd_rv = e->max_rv;
    e->fwd_hlc = e->max_hlc;
    memcpy(e->fwd_author, e->max_author, 32);
    ent_dirty(g, e);
    g->reasserts--;
    op->phase = PH_FINISHED;
    e->cur = NULL;
    op_dirty(g, op);
    advance_later(g, e);
}

/* Wakes the entities waiting for `e` (its create was confirmed, or refused for good). */
static void wake_waiters(mesh_gw *g, gent *e)
{
    for (size_t i = 0; i < e->nwaiters; i++) {
        gent *w = e->waiters[i];
        if (w->blocked_on == e) {
            w->blocked_on = NULL;
            advance_later(g, w);
        }
    }
    e->nwaiters = 0;
}

/* ---- Persistence ------------------------------------------------------------------------------ */

static void op_record(const gop *op, mesh_outbox_op *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->entity, op->entity, 16);
    r->row_version = op->rv;
    memcpy(r->author, op->author, 32);
    r->state = op->state;
    r->kind = op->kind;
    r->action = op->action;
    r->attempt = op->attempt;
    r->hlc = op->hlc;
    r->expect_rv = op->expect_rv;
    r->server_rv = op->server_rv;
    if (op->state == MESH_OUTBOX_REJECTED && op->verdict) {
        snprintf(r->error_code, sizeof r->error_code, "%s", op->verdict->code);
        snprintf(r->error_msg, sizeof r->error_msg, "%s", op->verdict->msg);
    }
}

static void ent_record(const mesh_gw *g, const gent *e, mesh_outbox_ent *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->entity, e->entity, 16);
    snprintf(r->type, sizeof r->type, "%s", g->cfg.types[e->type].name);
    r->flags = e->flags;
    r->server_rv = e->server_rv;
    if (e->server_id) snprintf(r->server_id, sizeof r->server_id, "%s", e->server_id);
    r->fwd_rv = e->fwd_rv;
    r->fwd_hlc = e->fwd_hlc;
    memcpy(r->fwd_author, e->fwd_author, 32);
    r->max_rv = e->max_rv;
    r->max_hlc = e->max_hlc;
    memcpy(r->max_author, e->max_author, 32);
    r->reassert_rv = e->reassert_rv;
    if (e->refusal) {
        snprintf(r->error_code, sizeof r->error_code, "%s", e->refusal->code);
        snprintf(r->error_msg, sizeof r->error_msg, "%s", e->refusal->msg);
    }
}

static int receipt_body(mesh_gw *g, const receipt_rec *r, uint64_t now_ms, mesh_buf *out)
{
    char id[MESH_UUID_STR_LEN], author[MESH_KEY_STR_LEN];
    uuid_str(r->entity, id);
    mesh_hex_encode(r->author, 32, author);
    mesh_buf *j = &g->scratch2;
    mesh_buf_reset(j);
    int rc = gw_appendf(j, "{\"entity\":\"%s\",\"type\":\"%s\",\"opRowVersion\":%u,\"author\":\"%s\","
                           "\"status\":\"%s\",\"action\":\"%s\",\"time\":%" PRIu64,
                        id, g->cfg.types[r->type].name, r->rv, author,
                        r->status == MESH_OUTBOX_CONFIRMED ? "confirmed" : "rejected",
                        ACTION_NAMES[r->action < ACT_COUNT ? r->action : 0], now_ms);
    if (rc == MESH_OK && r->status == MESH_OUTBOX_CONFIRMED) {
        rc = gw_appendf(j, ",\"serverRowVersion\":%u", r->server_rv);
        if (rc == MESH_OK && r->server_id[0]) {
            rc = gw_append(j, ",\"serverId\":");
            if (rc == MESH_OK) rc = gw_json_str(j, r->server_id, strlen(r->server_id));
        }
        if (rc == MESH_OK && r->reasserted) rc = gw_append(j, ",\"reasserted\":true");
    }
    if (rc == MESH_OK && r->status == MESH_OUTBOX_REJECTED) {
        rc = gw_append(j, ",\"error\":{\"code\":");
        if (rc == MESH_OK) rc = gw_json_str(j, r->err.code, strlen(r->err.code));
        if (rc == MESH_OK) rc = gw_append(j, ",\"message\":");
        if (rc == MESH_OK) rc = gw_json_str(j, r->err.msg, strlen(r->err.msg));
        if (rc == MESH_OK) rc = gw_append(j, "}");
    }
    if (rc == MESH_OK) rc = gw_append(j, "}");
    mesh_buf_reset(out);
    if (rc == MESH_OK) rc = mesh_body_from_json((const char *)j->data, j->len, out);
    return rc;
}

static int config_body(mesh_gw *g, const pend_config *c, mesh_buf *out)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:O}", "key", c->key, "kind", c->kind, "source",
                          c->source, "fetchedTime", (json_int_t)c->fetched_ms, "value", c->value);
    if (o == NULL) return mesh_err(MESH_ENOMEM, "out of memory writing configuration");
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL) return mesh_err(MESH_ENOMEM, "out of memory writing configuration");
    mesh_buf_reset(out);
    int rc = mesh_body_from_json(text, strlen(text), out);
    free(text);
    if (rc != MESH_OK) mesh_err_wrap(rc, "downloaded configuration %s", c->key);
    (void)g;
    return rc;
}

typedef struct persist_ctx {
    mesh_gw *g;
    uint64_t now;
    uint64_t configs_written;
} persist_ctx;

static int persist_fn(mesh_txn *t, void *vctx)
{
    persist_ctx *c = vctx;
    mesh_gw *g = c->g;
    c->configs_written = 0;
    mesh_sysbatch_reset(g->batch);
    int rc = MESH_OK;
    mesh_outbox_deltas deltas = {{0}};
    for (size_t i = 0; i < g->ndirty_ops && rc == MESH_OK; i++) {
        const gop *op = g->dirty_ops[i];
        if (op->reassert) continue;
        mesh_outbox_op r;
        op_record(op, &r);
        rc = mesh_outbox_op_put(t, &r, op->disk_state, &deltas);
    }
    if (rc == MESH_OK) rc = mesh_outbox_deltas_apply(t, &deltas);
    for (size_t i = 0; i < g->ndirty_ents && rc == MESH_OK; i++) {
        mesh_outbox_ent r;
        ent_record(g, g->dirty_ents[i], &r);
        rc = mesh_outbox_ent_put(t, &r);
    }
    for (size_t i = 0; i < g->ncursors && rc == MESH_OK; i++)
        rc = mesh_outbox_cursor_put(t, g->cursors[i][0], g->cursors[i][1]);
    if (rc == MESH_OK && g->forms_since_dirty)
        rc = mesh_outbox_meta_put(t, "dl.forms.since", g->forms_since);
    for (size_t i = 0; i < g->nreceipts && rc == MESH_OK; i++) {
        const receipt_rec *r = &g->receipts[i];
        uint8_t rid[16];
        mesh_receipt_entity_id(r->entity, r->rv, r->author, rid);
        rc = receipt_body(g, r, c->now, &g->scratch);
        if (rc == MESH_OK)
            rc = mesh_sysbatch_put(g->batch, t, MESH_TYPE_RECEIPT, rid, g->scratch.data,
                                   g->scratch.len, NULL);
    }
    for (size_t i = 0; i < g->nconfigs && rc == MESH_OK; i++) {
        uint8_t cid[16];
        bool changed = false;
        mesh_config_entity_id(g->configs[i].key, cid);
        rc = config_body(g, &g->configs[i], &g->scratch);
        if (rc == MESH_OK)
            rc = mesh_sysbatch_put(g->batch, t, MESH_TYPE_CONFIG, cid, g->scratch.data,
                                   g->scratch.len, &changed);
        c->configs_written += changed;
    }
    if (rc == MESH_OK) rc = mesh_sysbatch_flush(g->batch, t);
    return rc;
}

/* Writes everything changed in memory, with its receipts, in one transaction. */
static int persist(mesh_gw *g, uint64_t now)
{
    if (g->broken) return broken_err(g);
    if (g->ndirty_ops + g->ndirty_ents + g->ncursors + g->nreceipts + g->nconfigs == 0 &&
        !g->forms_since_dirty)
        return MESH_OK;
    persist_ctx c = {.g = g, .now = now};
    int rc = mesh_store_write(g->node->store, persist_fn, &c);
    if (rc != MESH_OK) {
        fail(g, rc, "writing the gateway's state to the store");
        return rc;
    }
    for (size_t i = 0; i < g->ndirty_ops; i++) {
        gop *op = g->dirty_ops[i];
        op->dirty = false;
        op->disk_state = op->state;
        if (op->phase == PH_FINISHED) op_free(op);
    }
    for (size_t i = 0; i < g->ndirty_ents; i++) g->dirty_ents[i]->dirty = false;
    for (size_t i = 0; i < g->nconfigs; i++) json_decref(g->configs[i].value);
    g->st.receipts_written += g->nreceipts;
    g->st.configs_written += c.configs_written;
    g->ndirty_ops = g->ndirty_ents = g->ncursors = g->nreceipts = g->nconfigs = 0;
    g->forms_since_dirty = false;
    return MESH_OK;
}

static size_t dirty_count(const mesh_gw *g)
{
    return g->ndirty_ops + g->ndirty_ents + g->ncursors + g->nreceipts + g->nconfigs +
           (g->forms_since_dirty ? 1 : 0);
}

/* Writes settled changes when enough wait or the oldest has waited long enough. Sending never
 * depends on it: an op is marked sent by persist() itself before it leaves. */
static int maybe_persist(mesh_gw *g, uint64_t now)
{
    size_t n = dirty_count(g);
    if (n == 0) {
        g->dirty_since = 0;
        return MESH_OK;
    }
    if (g->dirty_since == 0) g->dirty_since = now;
    if (n < MESH_GW_PERSIST_BATCH && now < g->dirty_since + MESH_GW_PERSIST_LINGER_MS)
        return MESH_OK;
    int rc = persist(g, now);
    if (rc == MESH_OK) g->dirty_since = 0;
    return rc;
}

int mesh_gw_flush(mesh_gw *g, uint64_t now_ms)
{
    if (g->broken) return broken_err(g);
    int rc = persist(g, now_ms);
    if (rc == MESH_OK) g->dirty_since = 0;
    return rc;
}

int gw_config_stage(mesh_gw *g, const char *key, const char *kind, const char *source,
                    uint64_t fetched_ms, json_t *value)
{
    pend_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.key, sizeof c.key, "%s", key);
    snprintf(c.kind, sizeof c.kind, "%s", kind);
    snprintf(c.source, sizeof c.source, "%s", source);
    c.fetched_ms = fetched_ms;
    c.value = value;
    if (PUSH(g->configs, g->nconfigs, g->configs_cap, c) != MESH_OK) {
        json_decref(value);
        return MESH_ENOMEM;
    }
    return MESH_OK;
}

/* ---- Choosing each entity's next op ----------------------------------------------------------- */

static opvec *queue_of(mesh_gw *g, const gop *op)
{
    if (op->single && g->cfg.uplink == MESH_GW_UPLINK_BULK) return &g->single;
    if (op->bisect) return &g->split[op->ent->type * ACT_COUNT + op->action];
    return &g->ready[op->ent->type * ACT_COUNT + op->action];
}

static void queue_ready(mesh_gw *g, gop *op, uint64_t now)
{
    op->phase = PH_READY;
    op->ready_at = now;
    if (vec_push(queue_of(g, op), op) != MESH_OK) fail(g, MESH_ENOMEM, "queueing an op");
}

static void make_current(mesh_gw *g, gent *e, gop *op, uint8_t action, uint64_t now)
{
    e->cur = op;
    op->action = action;
    queue_ready(g, op, now);
}

static void reject_now(mesh_gw *g, gop *op, const char *code, const char *fmt, ...)
    MESH_PRINTF(4, 5);
static void reject_now(mesh_gw *g, gop *op, const char *code, const char *fmt, ...)
{
    verdict v;
    snprintf(v.code, sizeof v.code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v.msg, sizeof v.msg, fmt, ap);
    va_end(ap);
    finish(g, op, MESH_OUTBOX_REJECTED, &v);
}

/* Checks op's parents: NULL if every one is on the server; else the first that is not, with
 * *refused set when its create was rejected and it has nothing more to send, and *unknown
 * when the gateway holds nothing of it yet. */
static gent *unmet_parent(mesh_gw *g, const gop *op, bool *refused, bool *unknown)
{
    *refused = *unknown = false;
    for (uint8_t i = 0; i < op->nparents; i++) {
        gent *p = ent_find(g, op->parents[i]);
        if (p == NULL) {
            *unknown = true;
            return op->ent;
        }
        if (p->flags & MESH_OUTBOX_ENT_ON_SERVER) continue;
        if ((p->flags & MESH_OUTBOX_ENT_REFUSED) && p->nops == 0 && p->cur == NULL)
            *refused = true;
        return p;
    }
    return NULL;
}

static void ent_advance(mesh_gw *g, gent *e, uint64_t now)
{
    char id[MESH_UUID_STR_LEN];
    for (;;) {
        if (g->broken || e->cur != NULL || e->blocked_on != NULL) return;
        if (e->nops == 0) {
            /* Nothing left to send: make the server hold the mesh's winner (docs/GATEWAY.md,
             * "Concurrent ops"): after an op that arrived late was forwarded, the server holds
             * its body, not the winner's. */
            if ((e->flags & MESH_OUTBOX_ENT_ON_SERVER) && !(e->flags & MESH_OUTBOX_ENT_DELETED) &&
                e->max_rv != 0 &&
                order_cmp(e->fwd_rv, e->fwd_hlc, e->fwd_author, e->max_rv, e->max_hlc,
                          e->max_author) != 0) {
                gop *op = calloc(1, sizeof *op);
                if (op == NULL) {
                    fail(g, MESH_ENOMEM, "re-sending a winner");
                    return;
                }
                memcpy(op->entity, e->entity, 16);
                op->rv = e->max_rv;
                op->hlc = e->max_hlc;
                memcpy(op->author, e->max_author, 32);
                op->kind = MESH_OP_UPDATE;
                op->state = MESH_OUTBOX_PENDING;
                op->reassert = true;
                op->ent = e;
                g->reasserts++;
                make_current(g, e, op, ACT_UPDATE, now);
            }
            return;
        }
        uuid_str(e->entity, id);
        if (e->flags & MESH_OUTBOX_ENT_DELETED) {
            /* Deletes are final: a later delete has nothing left to do; a later update cannot
             * apply (the mesh shows the entity deleted too). */
            gop *op = e->ops[0];
            if (op->kind == MESH_OP_DELETE) {
                op->server_rv = e->server_rv;
                op->action = ACT_DELETE;
                finish(g, op, MESH_OUTBOX_CONFIRMED, NULL);
            } else {
                reject_now(g, op, "ENTITY_DELETED",
                           "%s %s was already deleted on the server when this save reached the "
                           "gateway; deletes are final", type_of(g, e)->name, id);
            }
            continue;
        }
        /* The first non-delete op in merge order; else the winning (last) delete. */
        gop *nd = NULL, *del = NULL;
        for (uint32_t i = 0; i < e->nops; i++) {
            if (e->ops[i]->kind != MESH_OP_DELETE) {
                if (nd == NULL) nd = e->ops[i];
            } else {
                del = e->ops[i];
            }
        }
        gop *next = nd ? nd : del;
        if (next->wait_deps) return; /* its base is not held yet: the scan that brings it rechecks */
        bool refused, unknown;
        gent *p = unmet_parent(g, next, &refused, &unknown);
        if (p && unknown) {
            e->blocked_on = e; /* waits for an entity the gateway has not seen */
            if (PUSH(g->orphans, g->norphans, g->orphans_cap, e) != MESH_OK)
                fail(g, MESH_ENOMEM, "waiting for a parent");
            return;
        }
        if (p && refused) {
            char pid[MESH_UUID_STR_LEN];
            uuid_str(p->entity, pid);
            reject_now(g, next, "PARENT_REJECTED",
                       "parent %s %s was rejected by the server (%s: %s), so this %s cannot be "
                       "sent", type_of(g, p)->name, pid, p->refusal ? p->refusal->code : "?",
                       p->refusal ? p->refusal->msg : "", type_of(g, e)->name);
            continue;
        }
        if (p) {
            e->blocked_on = p;
            if (PUSH(p->waiters, p->nwaiters, p->wcap, e) != MESH_OK)
                fail(g, MESH_ENOMEM, "waiting for a parent");
            return;
        }
        if (nd) {
            make_current(g, e, nd,
                         (e->flags & MESH_OUTBOX_ENT_ON_SERVER) ? ACT_UPDATE : ACT_CREATE, now);
            return;
        }
        if (!(e->flags & MESH_OUTBOX_ENT_ON_SERVER)) {
            reject_now(g, del, e->refusal ? e->refusal->code : "NOT_ON_SERVER",
                       "%s %s was never created on the server%s%s, so it cannot be deleted there",
                       type_of(g, e)->name, id, e->refusal ? ": " : "",
                       e->refusal ? e->refusal->msg : "");
            continue;
        }
        make_current(g, e, del, ACT_DELETE, now);
        return;
    }
}

static void advance_all(mesh_gw *g, uint64_t now)
{
    /* Advancing may settle ops and queue more entities: the list grows while we walk it. */
    for (size_t i = 0; i < g->nadvance && !g->broken; i++) {
        gent *e = g->advance[i];
        e->queued = false;
        ent_advance(g, e, now);
    }
    g->nadvance = 0;
}

/* New entities were scanned: re-evaluate the ones waiting for a parent nobody had seen. */
static void wake_orphans(mesh_gw *g)
{
    size_t n = g->norphans;
    g->norphans = 0;
    for (size_t i = 0; i < n; i++) {
        gent *e = g->orphans[i];
        if (e->blocked_on == e) {
            e->blocked_on = NULL;
            advance_later(g, e);
        }
    }
}

/* ---- Scanning the op-log ------------------------------------------------------------------------ */

typedef struct scan_ctx {
    mesh_gw *g;
    mesh_txn *t;
    uint64_t now;
    size_t budget;
    bool more;
    bool new_entities;
    gent **touched;
    size_t ntouched, touched_cap;
    int err;
} scan_ctx;

static bool op_held(mesh_txn *t, const uint8_t entity[16], const mesh_opref *ref)
{
    mesh_oprec rec;
    return mesh_store_op_get(t, entity, ref, &rec) == MESH_OK;
}

/* Fills a gop from a decoded op: base, merged heads and the parents that matter (a parent of a
 * type the gateway does not forward is never waited for). */
static int gop_fill(mesh_gw *g, mesh_txn *t, gop *op, const mesh_op *m)
{
    memcpy(op->entity, m->entity, 16);
    op->rv = m->row_version;
    memcpy(op->author, m->author, 32);
    op->hlc = m->hlc;
    op->kind = m->kind;
    op->has_base = m->has_base;
    op->base = m->base;
    if (m->merged_count) {
        op->merged = malloc(m->merged_count * sizeof *op->merged);
        if (op->merged == NULL) return mesh_err(MESH_ENOMEM, "out of memory scanning ops");
        memcpy(op->merged, m->merged, m->merged_count * sizeof *op->merged);
        op->nmerged = (uint8_t)m->merged_count;
    }
    uint8_t keep[MESH_PARENTS_MAX][16];
    uint8_t nkeep = 0;
    for (uint32_t i = 0; i < m->parents_count; i++) {
        if (ent_find(g, m->parents[i]) == NULL) {
            mesh_state st;
            int rc = mesh_store_state_get(t, m->parents[i], &st);
            if (rc == MESH_OK && type_index(g, st.type, strlen(st.type)) < 0) continue;
            if (rc != MESH_OK && rc != MESH_ENOTFOUND) return rc;
        }
        memcpy(keep[nkeep++], m->parents[i], 16);
    }
    if (nkeep) {
        op->parents = malloc(nkeep * sizeof *op->parents);
        if (op->parents == NULL) return mesh_err(MESH_ENOMEM, "out of memory scanning ops");
        memcpy(op->parents, keep, nkeep * sizeof *op->parents);
        op->nparents = nkeep;
    }
    op->wait_deps = false;
    if (op->has_base && !op_held(t, op->entity, &op->base)) op->wait_deps = true;
    for (uint8_t i = 0; i < op->nmerged && !op->wait_deps; i++)
        if (!op_held(t, op->entity, &op->merged[i])) op->wait_deps = true;
    return MESH_OK;
}

static gent *ent_new(mesh_gw *g, const uint8_t entity[16], uint16_t type)
{
    gent *e = calloc(1, sizeof *e);
    if (e == NULL) return NULL;
    memcpy(e->entity, entity, 16);
    e->type = type;
    if (ent_insert(g, e) != MESH_OK) {
        free(e);
        return NULL;
    }
    return e;
}

static void ent_note_max(mesh_gw *g, gent *e, const gop *op)
{
    if (e->max_rv == 0 ||
        order_cmp(op->rv, op->hlc, op->author, e->max_rv, e->max_hlc, e->max_author) > 0) {
        e->max_rv = op->rv;
        e->max_hlc = op->hlc;
        memcpy(e->max_author, op->author, 32);
        ent_dirty(g, e);
    }
}

static int scan_op(const mesh_oprec *rec, uint64_t seq, void *vctx)
{
    (void)seq;
    scan_ctx *c = vctx;
    mesh_gw *g = c->g;
    if (c->budget == 0) {
        c->more = true;
        return 1; /* stop: resume from the cursor next time */
    }
    c->budget--;
    mesh_op m;
    /* The leading fields tell whether the op is forwarded at all (receipts are not): only
     * those are decoded in full. */
    int rc = mesh_op_peek(rec->op, rec->op_len, &m);
    if (rc != MESH_OK) return rc;
    if (m.type_len == 0 || m.type[0] == '_') return MESH_OK;
    int ti = type_index(g, m.type, m.type_len);
    if (ti < 0) return MESH_OK;
    if ((rc = mesh_op_decode(rec->op, rec->op_len, &m)) != MESH_OK) return rc;
    gent *e = ent_find(g, m.entity);
    if (e && e->type != ti) {
        char id[MESH_UUID_STR_LEN];
        uuid_str(m.entity, id);
        gw_log(g, 1, "entity %s appears as %s and as %.*s; only its %s ops are forwarded", id,
               type_of(g, e)->name, (int)m.type_len, m.type, type_of(g, e)->name);
        return MESH_OK;
    }
    mesh_outbox_op known;
    rc = mesh_outbox_op_get(c->t, m.entity, m.row_version, m.author, &known);
    if (rc == MESH_OK) return MESH_OK;
    if (rc != MESH_ENOTFOUND) return rc;
    if (e == NULL) {
        e = ent_new(g, m.entity, (uint16_t)ti);
        if (e == NULL) return mesh_err(MESH_ENOMEM, "out of memory scanning ops");
        c->new_entities = true;
        ent_dirty(g, e);
    }
    gop *op = calloc(1, sizeof *op);
    if (op == NULL) return mesh_err(MESH_ENOMEM, "out of memory scanning ops");
    rc = gop_fill(g, c->t, op, &m);
    if (rc == MESH_OK) rc = ent_add_op(e, op);
    if (rc != MESH_OK) {
        op_free(op);
        return rc;
    }
    op->state = MESH_OUTBOX_PENDING;
    op->disk_state = MESH_OUTBOX_PREV_NONE;
    op_dirty(g, op);
    ent_note_max(g, e, op);
    g->live_ops++;
    g->st.ops_known++;
    if (PUSH(c->touched, c->ntouched, c->touched_cap, e) != MESH_OK) return MESH_ENOMEM;
    return MESH_OK;
}

/* Stream ops are visited in seq order; the cursor moves past every op visited. A stream's
 * visit stops when the budget runs out, so its cursor is the seq of the last op visited:
 * tracked through the callback's seq. */
typedef struct cur_track {
    scan_ctx *c;
    uint64_t sid;
    uint64_t last;
} cur_track;

static int scan_op_tracked(const mesh_oprec *rec, uint64_t seq, void *vctx)
{
    cur_track *k = vctx;
    int rc = scan_op(rec, seq, k->c);
    if (rc == MESH_OK) k->last = seq;
    return rc;
}

static int set_cursor(mesh_gw *g, uint64_t sid, uint64_t seq)
{
    for (size_t i = 0; i < g->ncursors; i++)
        if (g->cursors[i][0] == sid) {
            g->cursors[i][1] = seq;
            return MESH_OK;
        }
    int rc = grow((void **)&g->cursors, &g->cursors_cap, g->ncursors + 1, sizeof *g->cursors);
    if (rc != MESH_OK) return rc;
    g->cursors[g->ncursors][0] = sid;
    g->cursors[g->ncursors][1] = seq;
    g->ncursors++;
    return MESH_OK;
}

static int scan_stream_tracked(const mesh_stream *st, void *vctx)
{
    scan_ctx *c = vctx;
    uint64_t from;
    int rc = mesh_outbox_cursor_get(c->t, st->sid, &from);
    if (rc != MESH_OK) return rc;
    for (size_t i = 0; i < c->g->ncursors; i++)
        if (c->g->cursors[i][0] == st->sid) from = c->g->cursors[i][1];
    if (from >= st->seq) return MESH_OK;
    if (c->budget == 0) {
        c->more = true;
        return MESH_OK;
    }
    cur_track k = {.c = c, .sid = st->sid, .last = from};
    rc = mesh_store_stream_ops(c->t, st->sid, from + 1, scan_op_tracked, &k);
    if (rc == 1) rc = MESH_OK;
    if (rc == MESH_OK && k.last != from) rc = set_cursor(c->g, st->sid, k.last);
    return rc;
}

static int scan_fn(mesh_txn *t, void *vctx)
{
    scan_ctx *c = vctx;
    c->t = t;
    int rc = mesh_store_streams(t, scan_stream_tracked, c);
    if (rc != MESH_OK) return rc;
    /* Ops of touched entities that waited for their base: it may have come in this scan. */
    for (size_t i = 0; i < c->ntouched; i++) {
        gent *e = c->touched[i];
        for (uint32_t k = 0; k < e->nops; k++) {
            gop *op = e->ops[k];
            if (!op->wait_deps) continue;
            bool held = !op->has_base || op_held(t, op->entity, &op->base);
            for (uint8_t j = 0; j < op->nmerged && held; j++)
                held = op_held(t, op->entity, &op->merged[j]);
            op->wait_deps = !held;
        }
        advance_later(c->g, e);
    }
    return MESH_OK;
}

static int count_fn(mesh_txn *t, void *ctx)
{
    mesh_store_counts c;
    int rc = mesh_store_counts_get(t, &c);
    if (rc == MESH_OK) *(uint64_t *)ctx = c.ops;
    return rc;
}

int mesh_gw_poll_store(mesh_gw *g, uint64_t now_ms)
{
    if (g->broken) return broken_err(g);
    uint64_t ops = 0;
    int rc = mesh_store_read(g->node->store, count_fn, &ops);
    if (rc != MESH_OK) return rc;
    if (ops == g->seen_ops && !g->scan_more) return MESH_OK;
    scan_ctx c = {.g = g, .now = now_ms, .budget = MESH_GW_SCAN_OPS_MAX};
    rc = mesh_store_read(g->node->store, scan_fn, &c);
    free(c.touched);
    if (rc != MESH_OK) {
        /* Memory may hold part of the scan: start over from the store. */
        fail(g, rc, "scanning the op-log");
        return rc;
    }
    g->scan_more = c.more;
    if (!c.more) g->seen_ops = ops;
    if (c.new_entities) wake_orphans(g);
    advance_all(g, now_ms);
    return maybe_persist(g, now_ms);
}

/* ---- Loading the outbox (a restart) ----------------------------------------------------------- */

typedef struct load_ctx {
    mesh_gw *g;
    mesh_txn *t;
    uint64_t now;
} load_ctx;

static int load_ent(const mesh_outbox_ent *r, void *vctx)
{
    load_ctx *c = vctx;
    mesh_gw *g = c->g;
    int ti = type_index(g, r->type, strlen(r->type));
    if (ti < 0) return MESH_OK; /* no longer forwarded */
    gent *e = ent_new(g, r->entity, (uint16_t)ti);
    if (e == NULL) return mesh_err(MESH_ENOMEM, "out of memory loading the outbox");
    e->flags = r->flags;
    e->server_rv = r->server_rv;
    if (r->server_id[0]) set_server_id(e, r->server_id);
    e->fwd_rv = r->fwd_rv;
    e->fwd_hlc = r->fwd_hlc;
    memcpy(e->fwd_author, r->fwd_author, 32);
    e->max_rv = r->max_rv;
    e->max_hlc = r->max_hlc;
    memcpy(e->max_author, r->max_author, 32);
    e->reassert_rv = r->reassert_rv;
    if (r->error_code[0]) {
        e->refusal = calloc(1, sizeof *e->refusal);
        if (e->refusal == NULL) return mesh_err(MESH_ENOMEM, "out of memory loading the outbox");
        snprintf(e->refusal->code, sizeof e->refusal->code, "%s", r->error_code);
        snprintf(e->refusal->msg, sizeof e->refusal->msg, "%s", r->error_msg);
    }
    return MESH_OK;
}

static uint16_t body_tenant(mesh_gw *g, const uint8_t *body, size_t len)
{
    const char *t;
    size_t tl;
    if (mesh_body_get_str(body, len, "tenantId", &t, &tl) == MESH_OK && tl > 0)
        return tenant_index(g, t, tl);
    return 0;
}

static int load_op(const mesh_outbox_op *r, void *vctx)
{
    load_ctx *c = vctx;
    mesh_gw *g = c->g;
    gent *e = ent_find(g, r->entity);
    if (e == NULL) return MESH_OK; /* its type is no longer forwarded */
    mesh_opref ref = {.row_version = r->row_version};
    memcpy(ref.author, r->author, 32);
    mesh_oprec rec;
    mesh_op m;
    int rc = mesh_store_op_get(c->t, r->entity, &ref, &rec);
    if (rc == MESH_ENOTFOUND) {
        char id[MESH_UUID_STR_LEN];
        uuid_str(r->entity, id);
        return mesh_err(MESH_ECORRUPT, "the gateway outbox names op %s rowVersion %u, which the "
                        "op-log does not hold", id, r->row_version);
    }
    if (rc == MESH_OK) rc = mesh_op_decode(rec.op, rec.op_len, &m);
    if (rc != MESH_OK) return rc;
    gop *op = calloc(1, sizeof *op);
    if (op == NULL) return mesh_err(MESH_ENOMEM, "out of memory loading the outbox");
    rc = gop_fill(g, c->t, op, &m);
    if (rc == MESH_OK) rc = ent_add_op(e, op);
    if (rc != MESH_OK) {
        op_free(op);
        return rc;
    }
    op->state = r->state;
    op->disk_state = r->state;
    op->action = r->action;
    op->attempt = r->attempt;
    op->expect_rv = r->expect_rv;
    op->tenant = body_tenant(g, m.body, m.body_len);
    g->live_ops++;
    g->st.ops_known++;
    if (r->state == MESH_OUTBOX_SENT) {
        /* In flight when the last gateway stopped: confirm by search before anything else. */
        e->cur = op;
        op->phase = PH_ACCEPT;
        op->unknown = true;
        rc = timer_push(g, op, c->now);
    }
    return rc;
}

static int load_fn(mesh_txn *t, void *vctx)
{
    load_ctx *c = vctx;
    c->t = t;
    int rc = mesh_outbox_meta_get(t, "dl.forms.since", &c->g->forms_since);
    if (rc == MESH_OK) rc = mesh_outbox_ents(t, load_ent, c);
    if (rc == MESH_OK) rc = mesh_outbox_live_ops(t, load_op, c);
    return rc;
}

static int load(mesh_gw *g, uint64_t now)
{
    load_ctx c = {.g = g, .now = now};
    int rc = mesh_store_read(g->node->store, load_fn, &c);
    if (rc != MESH_OK) return rc;
    for (size_t i = 0; i < g->tab_cap; i++) {
        gent *e = g->tab[i];
        if (e == NULL) continue;
        if ((e->flags & MESH_OUTBOX_ENT_REASSERT) && e->cur == NULL) {
            gop *op = calloc(1, sizeof *op);
            if (op == NULL) return mesh_err(MESH_ENOMEM, "out of memory loading the outbox");
            memcpy(op->entity, e->entity, 16);
            op->rv = e->max_rv;
            op->hlc = e->max_hlc;
            memcpy(op->author, e->max_author, 32);
            op->kind = MESH_OP_UPDATE;
            op->state = MESH_OUTBOX_SENT;
            op->action = ACT_UPDATE;
            op->reassert = true;
            op->expect_rv = e->reassert_rv;
            op->ent = e;
            op->phase = PH_ACCEPT;
            op->unknown = true;
            e->cur = op;
            g->reasserts++;
            if ((rc = timer_push(g, op, now)) != MESH_OK) return rc;
        }
        if (e->nops > 0 || e->cur) advance_later(g, e);
    }
    advance_all(g, now);
    return MESH_OK;
}

/* ---- Requests -------------------------------------------------------------------------------- */

req *gw_req_new(mesh_gw *g, int kind)
{
    for (size_t i = 0; i < g->nslots; i++) {
        req *r = &g->reqs[i];
        if (r->used) continue;
        r->used = true;
        r->handed = false;
        r->kind = kind;
        r->id = ++g->next_id;
        r->nops = 0;
        r->single = false;
        r->path[0] = r->what[0] = r->ctype[0] = r->authz[0] = '\0';
        mesh_buf_reset(&r->body);
        memset(&r->pub, 0, sizeof r->pub);
        return r;
    }
    return NULL;
}

static void req_release(mesh_gw *g, req *r)
{
    if (!r->used) return;
    r->used = false;
    if (r->handed) {
        g->inflight--;
        if (r->kind == RQ_WRITE) g->writes_inflight--;
    }
    r->handed = false;
}

static int req_add_op(req *r, gop *op)
{
    return PUSH(r->ops, r->nops, r->opcap, op);
}

/* Fills the public view of a built request. */
static const mesh_gw_request *req_publish(mesh_gw *g, req *r, const char *method)
{
    r->handed = true;
    g->inflight++;
    if (r->kind == RQ_WRITE) g->writes_inflight++;
    r->pub.id = r->id;
    r->pub.method = method;
    r->pub.path = r->path;
    r->pub.content_type = r->ctype[0] ? r->ctype : NULL;
    r->pub.authorization = r->authz[0] ? r->authz : NULL;
    r->pub.auth_token = NULL;
    r->pub.body = r->body.data;
    r->pub.body_len = r->body.len;
    r->pub.timeout_ms = g->cfg.timeout_ms;
    r->pub.what = r->what;
    g->st.requests++;
    g->st.body_bytes += r->body.len;
    return &r->pub;
}

static bool need_login(const mesh_gw *g, uint64_t now)
{
    if (g->cfg.token[0]) return false;
    return g->token[0] == '\0' || !g->online || now >= g->token_refresh_at;
}

static const mesh_gw_request *build_auth(mesh_gw *g, uint64_t now)
{
    req *r = gw_req_new(g, RQ_AUTH);
    if (r == NULL) return NULL;
    char cred[400], b64[560];
    snprintf(cred, sizeof cred, "%s:%s", g->cfg.client_id, g->cfg.client_secret);
    gw_base64((const uint8_t *)cred, strlen(cred), b64, sizeof b64);
    mesh_wipe(cred, sizeof cred);
    snprintf(r->authz, sizeof r->authz, "Basic %s", b64);
    snprintf(r->ctype, sizeof r->ctype, "application/x-www-form-urlencoded");
    snprintf(r->path, sizeof r->path, "%s", g->cfg.token_path);
    snprintf(r->what, sizeof r->what, "login as %s", g->cfg.username);
    mesh_buf *b = &r->body;
    int rc = gw_append(b, "grant_type=password&scope=read&username=");
    if (rc == MESH_OK) rc = gw_urlenc(b, g->cfg.username);
    if (rc == MESH_OK) rc = gw_append(b, "&password=");
    if (rc == MESH_OK) rc = gw_urlenc(b, g->cfg.password);
    if (rc == MESH_OK) rc = gw_append(b, "&tenantId=");
    if (rc == MESH_OK) rc = gw_urlenc(b, g->cfg.tenant_id);
    if (rc == MESH_OK) rc = gw_append(b, "&userType=");
    if (rc == MESH_OK) rc = gw_urlenc(b, g->cfg.user_type);
    if (rc != MESH_OK) {
        req_release(g, r);
        fail(g, rc, "building a login request");
        return NULL;
    }
    g->auth_inflight = true;
    g->st.other_requests++;
    (void)now;
    return req_publish(g, r, "POST");
}

/* The fields of egov-user's UserRequest that the contracts' RequestInfo.userInfo (User) has. */
static char *user_info_of(const json_t *u)
{
    if (!json_is_object(u)) return NULL;
    static const char *const keys[] = {"id", "userName", "name", "type", "mobileNumber",
                                       "emailId", "tenantId", "uuid"};
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(u, keys[i]);
        if (v && !json_is_null(v)) json_object_set(o, keys[i], v);
    }
    json_t *roles = json_array(), *rs = json_object_get(u, "roles");
    size_t i;
    json_t *x;
    json_array_foreach(rs, i, x) {
        json_t *r = json_object();
        static const char *const rk[] = {"name", "code", "tenantId"};
        for (size_t k = 0; k < 3; k++) {
            json_t *v = json_object_get(x, rk[k]);
            if (v && json_is_string(v)) json_object_set(r, rk[k], v);
        }
        json_array_append_new(roles, r);
    }
    json_object_set_new(o, "roles", roles);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void went_online(mesh_gw *g)
{
    if (!g->online) gw_log(g, 2, "the campaign service at %s is reachable", g->cfg.base_url);
    g->online = true;
    g->net_fails = 0;
    g->probe_ms = g->cfg.probe_ms;
}

static void went_offline(mesh_gw *g, uint64_t now, const char *why)
{
    if (g->online) gw_log(g, 1, "the campaign service at %s is unreachable (%s); probing every "
                          "%u ms and more slowly", g->cfg.base_url, why, g->probe_ms);
    g->online = false;
    g->next_probe = now + gw_jitter(g, g->probe_ms);
    g->probe_ms = g->probe_ms * 2 > g->cfg.backoff_max_ms ? g->cfg.backoff_max_ms
                                                           : g->probe_ms * 2;
}

/* Notes a transport failure (no HTTP answer) for reachability. */
static void net_failure(mesh_gw *g, uint64_t now, const mesh_gw_response *resp)
{
    g->st.requests_failed++;
    if (resp->net == MESH_GW_NET_CONNECT || ++g->net_fails >= NET_FAILS_OFFLINE)
        went_offline(g, now, resp->error ? resp->error : "no answer");
}

static void on_auth(mesh_gw *g, uint64_t now, const mesh_gw_response *resp)
{
    g->auth_inflight = false;
    if (resp->net != MESH_GW_NET_OK || resp->status >= 500) {
        if (resp->net == MESH_GW_NET_OK) {
            g->st.requests_failed++;
            went_offline(g, now, "the login answered a server error");
        } else {
            net_failure(g, now, resp);
            if (g->online) went_offline(g, now, resp->error ? resp->error : "no answer");
        }
        return;
    }
    json_t *j = gw_parse(resp);
    const char *tok = json_string_value(json_object_get(j, "access_token"));
    if (resp->status != 200 || tok == NULL || strlen(tok) >= sizeof g->token) {
        verdict v;
        gw_error_of(resp, &v);
        g->st.requests_failed++;
        went_online(g);
        g->online = false; /* reachable, but nothing can be sent without a token */
        g->next_probe = now + gw_jitter(g, g->cfg.backoff_max_ms);
        gw_log(g, 0, "login as %s at %s%s was refused (%s: %s); check auth in the gateway "
               "configuration; trying again in %u s", g->cfg.username, g->cfg.base_url,
               g->cfg.token_path, v.code, v.msg, g->cfg.backoff_max_ms / 1000);
        json_decref(j);
        return;
    }
    snprintf(g->token, sizeof g->token, "%s", tok);
    free(g->user_info);
    g->user_info = user_info_of(json_object_get(j, "UserRequest"));
    json_int_t ttl = json_integer_value(json_object_get(j, "expires_in"));
    if (ttl <= 0) ttl = 3600;
    /* Log in again at 90 % of the token's life, before requests start failing with 401. */
    g->token_refresh_at = now + (uint64_t)ttl * 900u;
    json_decref(j);
    went_online(g);
    gw_log(g, 2, "logged in to %s as %s", g->cfg.base_url, g->cfg.username);
}

/* A 401: the token is no longer valid. */
static void token_rejected(mesh_gw *g)
{
    if (g->cfg.token[0]) {
        gw_log(g, 0, "the campaign service refused the configured token (401); set a valid "
               "auth.token or use username and password");
        return;
    }
    g->token[0] = '\0';
}

/* ---- Write requests -------------------------------------------------------------------------- */

typedef struct build_ctx {
    mesh_gw *g;
    req *r;
    uint64_t now;
    size_t kept;                /* file: entries that fit (0: all) */
    mesh_buf edited, add, ejson;
} build_ctx;

static const char *const DROP_FIELDS[] = {"clientReferenceId", "rowVersion", "isDeleted", "id"};

/* Appends op's entity as the campaign service wants it: the op's body with clientReferenceId,
 * and for an update or delete the server's id and rowVersion (and tenantId if the body has
 * none). */
static int append_entity(build_ctx *c, mesh_txn *t, gop *op, mesh_buf *out)
{
    mesh_gw *g = c->g;
    gent *e = op->ent;
    mesh_opref ref = {.row_version = op->rv};
    memcpy(ref.author, op->author, 32);
    mesh_oprec rec;
    mesh_op m;
    int rc = mesh_store_op_get(t, op->entity, &ref, &rec);
    if (rc == MESH_ENOTFOUND) return mesh_err(MESH_ECORRUPT, "an op to forward left the op-log");
    if (rc == MESH_OK) rc = mesh_op_decode(rec.op, rec.op_len, &m);
    if (rc != MESH_OK) return rc;
    char id[MESH_UUID_STR_LEN];
    uuid_str(op->entity, id);
    const char *ten;
    size_t tl;
    bool has_tenant = mesh_body_get_str(m.body, m.body_len, "tenantId", &ten, &tl) == MESH_OK && tl;
    op->tenant = has_tenant ? tenant_index(g, ten, tl) : tenant_index(g, g->cfg.tenant_id,
                                                                      strlen(g->cfg.tenant_id));
    /* The fast path: the body has none of the fields added here (mesh_put keeps
     * clientReferenceId, rowVersion and isDeleted in the op header), so its JSON is spliced
     * after them. Otherwise the body is edited (a device may carry a stale server "id"). */
    const char *sv;
    size_t sl;
    int64_t iv;
    bool clash = mesh_body_get_str(m.body, m.body_len, "id", &sv, &sl) != MESH_ENOTFOUND ||
                 mesh_body_get_int(m.body, m.body_len, "rowVersion", &iv) != MESH_ENOTFOUND ||
                 mesh_body_get_str(m.body, m.body_len, "clientReferenceId", &sv, &sl) != MESH_ENOTFOUND;
    mesh_buf *a = &c->ejson;
    mesh_buf_reset(a);
    rc = gw_appendf(a, "{\"clientReferenceId\":\"%s\"", id);
    if (rc == MESH_OK && op->action != ACT_CREATE) {
        rc = gw_append(a, ",\"id\":");
        const char *sid = e->server_id ? e->server_id : "";
        if (rc == MESH_OK) rc = gw_json_str(a, sid, strlen(sid));
        if (rc == MESH_OK) rc = gw_appendf(a, ",\"rowVersion\":%u", e->server_rv);
    }
    if (rc == MESH_OK && !has_tenant) {
        rc = gw_append(a, ",\"tenantId\":");
        if (rc == MESH_OK) rc = gw_json_str(a, g->cfg.tenant_id, strlen(g->cfg.tenant_id));
    }
    if (rc != MESH_OK) return rc;
    if (!clash) {
        size_t at = out->len;
        rc = mesh_body_to_json(m.body, m.body_len, out);
        if (rc != MESH_OK) return rc;
        /* out now ends with the body's JSON object: put our fields in front of its own. */
        size_t blen = out->len - at;
        if (blen < 2 || out->data[at] != '{')
            return mesh_err(MESH_ECORRUPT, "a stored body is not an object");
        bool empty = blen == 2;
        size_t extra = a->len + (empty ? 0 : 1);
        if ((rc = mesh_buf_reserve(out, extra)) != MESH_OK) return rc;
        memmove(out->data + at + extra, out->data + at + 1, blen - 1);
        memcpy(out->data + at, a->data, a->len);
        if (!empty) out->data[at + a->len] = ',';
        out->len += extra - 1;
        return MESH_OK;
    }
    if ((rc = gw_append(a, "}")) != MESH_OK) return rc;
    mesh_buf_reset(&c->add);
    mesh_buf_reset(&c->edited);
    rc = mesh_body_from_json((const char *)a->data, a->len, &c->add);
    if (rc == MESH_OK)
        rc = mesh_body_edit(m.body, m.body_len, DROP_FIELDS, 4, c->add.data, c->add.len,
                            &c->edited);
    if (rc == MESH_OK) rc = mesh_body_to_json(c->edited.data, c->edited.len, out);
    return rc;
}

static int build_write_fn(mesh_txn *t, void *vctx)
{
    build_ctx *c = vctx;
    mesh_gw *g = c->g;
    req *r = c->r;
    const mesh_gw_type *ty = &g->cfg.types[r->type];
    mesh_buf *b = &r->body;
    mesh_buf_reset(b);
    int rc = gw_append(b, "{\"RequestInfo\":");
    if (rc == MESH_OK) rc = gw_request_info(g, c->now, ACTION_PATHS[r->action], b);
    if (rc == MESH_OK)
        rc = gw_appendf(b, r->single ? ",\"%s\":" : ",\"%s\":[",
                        r->single ? ty->single_key : ty->array_key);
    for (size_t i = 0; i < r->nops && rc == MESH_OK; i++) {
        if (i) rc = gw_append(b, ",");
        if (rc == MESH_OK) rc = append_entity(c, t, r->ops[i], b);
        if (rc == MESH_OK && i + 1 < r->nops && b->len > MESH_GW_WRITE_BYTES_MAX)
            return MESH_ELIMIT; /* the caller splits the batch */
    }
    if (rc == MESH_OK) rc = gw_append(b, r->single ? "}" : "]}");
    return rc;
}

/* Builds a write request and marks its ops sent in memory; the caller persists every prepared
 * request in one transaction before any is handed out (one fsync for several batches). */
static bool prepare_write(mesh_gw *g, req *r, uint64_t now)
{
    const mesh_gw_type *ty = &g->cfg.types[r->type];
    build_ctx c = {.g = g, .r = r, .now = now};
    mesh_buf_init(&c.edited, MESH_OP_BYTES_MAX * 2);
    mesh_buf_init(&c.add, 4096);
    mesh_buf_init(&c.ejson, 4096);
    int rc = mesh_store_read(g->node->store, build_write_fn, &c);
    mesh_buf_fini(&c.edited);
    mesh_buf_fini(&c.add);
    mesh_buf_fini(&c.ejson);
    if (rc == MESH_ELIMIT && r->nops > 1) {
        /* Too many bytes for one request: send the batch in halves. */
        mesh_err_clear();
        uint16_t half = (uint16_t)((r->nops + 1) / 2);
        for (size_t i = 0; i < r->nops; i++) {
            gop *op = r->ops[i];
            op->bisect = i < half ? half : (uint16_t)(r->nops - half);
            queue_ready(g, op, now);
        }
        req_release(g, r);
        return true;
    }
    if (rc != MESH_OK) {
        /* The ops stay where they are (READY is only memory): try again from the store. */
        req_release(g, r);
        fail(g, rc, "building a write request");
        return false;
    }
    for (size_t i = 0; i < r->nops; i++) {
        gop *op = r->ops[i];
        gent *e = op->ent;
        op->attempt++;
        if (op->attempt > 1) g->st.ops_resent++;
        op->state = MESH_OUTBOX_SENT;
        op->phase = PH_SENDING;
        op->expect_rv = op->action == ACT_CREATE ? 1 : e->server_rv + 1;
        op->sent_at = now;
        op->unknown = false;
        op->rounds = 0;
        free(op->verdict);
        op->verdict = NULL;
        if (op->reassert) {
            e->flags |= MESH_OUTBOX_ENT_REASSERT;
            e->reassert_rv = op->expect_rv;
            ent_dirty(g, e);
        } else {
            op_dirty(g, op);
        }
    }
    snprintf(r->path, sizeof r->path, "%s%s%s", ty->path, r->single ? "/" : "/bulk/",
             ACTION_PATHS[r->action]);
    snprintf(r->ctype, sizeof r->ctype, "application/json");
    snprintf(r->what, sizeof r->what, "%s %s%s (%zu op%s)", ty->name,
             r->single ? "" : "bulk ", ACTION_PATHS[r->action], r->nops, r->nops == 1 ? "" : "s");
    g->st.write_requests++;
    g->prepared[g->nprepared++] = r;
    return true;
}

/* Takes up to `max` ops in READY from the head of q (skipping any that left READY). */
static void take_ops(opvec *q, req *r, size_t max, uint16_t bisect)
{
    while (q->head < q->n && r->nops < max) {
        gop *op = q->v[q->head];
        if (op->phase != PH_READY) {
            q->head++;
            continue;
        }
        if (bisect && op->bisect != bisect && r->nops > 0) break;
        if (req_add_op(r, op) != MESH_OK) break;
        q->head++;
    }
}

static gop *queue_head(opvec *q)
{
    while (q->head < q->n && q->v[q->head]->phase != PH_READY) q->head++;
    return q->head < q->n ? q->v[q->head] : NULL;
}

/* Prepares one write request if a batch is due: true if it did. */
static bool prepare_one_write(mesh_gw *g, uint64_t now)
{
    if (g->nprepared >= MESH_GW_PREPARED_MAX) return false;
    /* Ops sent one by one through the single endpoint (it answers the server's error). */
    gop *op = queue_head(&g->single);
    if (op) {
        req *r = gw_req_new(g, RQ_WRITE);
        if (r == NULL) return false;
        r->type = op->ent->type;
        r->action = op->action;
        r->single = true;
        take_ops(&g->single, r, 1, 0);
        return prepare_write(g, r, now);
    }
    for (size_t t = 0; t < g->cfg.ntypes; t++) {
        for (uint8_t a = ACT_CREATE; a < ACT_COUNT; a++) {
            opvec *sq = &g->split[t * ACT_COUNT + a];
            gop *h = queue_head(sq);
            if (h) {
                req *r = gw_req_new(g, RQ_WRITE);
                if (r == NULL) return false;
                r->type = (uint16_t)t;
                r->action = a;
                take_ops(sq, r, h->bisect, h->bisect);
                return prepare_write(g, r, now);
            }
            opvec *q = &g->ready[t * ACT_COUNT + a];
            h = queue_head(q);
            if (h == NULL) continue;
            if (vec_len(q) < g->cfg.batch_size && now < h->ready_at + g->cfg.linger_ms) continue;
            req *r = gw_req_new(g, RQ_WRITE);
            if (r == NULL) return false;
            r->type = (uint16_t)t;
            r->action = a;
            take_ops(q, r, g->cfg.batch_size, 0);
            if (r->nops == 0) {
                req_release(g, r);
                continue;
            }
            return prepare_write(g, r, now);
        }
    }
    return false;
}

/* One slot stays free for searches: confirmations are what unblock further ops. */
static bool write_slot_free(const mesh_gw *g)
{
    size_t limit = g->cfg.concurrency > 1 ? g->cfg.concurrency - 1 : 1;
    return g->writes_inflight < limit && g->inflight < g->cfg.concurrency;
}

/* Prepares the write requests that are due, up to MESH_GW_PREPARED_MAX waiting, marks their
 * ops sent in one transaction, and hands out the oldest prepared one if a slot is free. */
static const mesh_gw_request *next_write(mesh_gw *g, uint64_t now)
{
    size_t before = g->nprepared;
    /* Refill only below half: several batches then share one transaction (one fsync). */
    if (g->nprepared <= MESH_GW_PREPARED_MAX / 2)
        while (!g->broken && prepare_one_write(g, now)) {
        }
    if (g->broken) return NULL;
    if (g->nprepared > before && persist(g, now) != MESH_OK) {
        /* Nothing was sent; the core is broken and will be made anew from the store. */
        for (size_t i = 0; i < g->nprepared; i++) req_release(g, g->prepared[i]);
        g->nprepared = 0;
        return NULL;
    }
    if (g->nprepared == 0 || !write_slot_free(g)) return NULL;
    req *p = g->prepared[0];
    memmove(&g->prepared[0], &g->prepared[1], (g->nprepared - 1) * sizeof g->prepared[0]);
    g->nprepared--;
    return req_publish(g, p, "POST");
}

/* Sends op again after a backoff (transient failure) or now. */
static void resend_later(mesh_gw *g, gop *op, uint64_t at)
{
    op->phase = PH_DELAY;
    if (timer_push(g, op, at) != MESH_OK)
        fail(g, MESH_ENOMEM, "scheduling a retry");
}

static void schedule_confirm(mesh_gw *g, gop *op, uint64_t at)
{
    op->phase = PH_ACCEPT;
    op->in_due = false;
    if (timer_push(g, op, at) != MESH_OK) fail(g, MESH_ENOMEM, "scheduling a search");
}

static void split_batch(mesh_gw *g, req *r, uint64_t now)
{
    /* A refused batch: send each half on its own until the refused op is alone. */
    uint16_t half = (uint16_t)((r->nops + 1) / 2);
    for (size_t i = 0; i < r->nops; i++) {
        gop *op = r->ops[i];
        op->bisect = i < half ? half : (uint16_t)(r->nops - half);
        queue_ready(g, op, now);
    }
}

static void on_write(mesh_gw *g, req *r, uint64_t now, const mesh_gw_response *resp)
{
    const mesh_gw_type *ty = &g->cfg.types[r->type];
    int st = resp->net == MESH_GW_NET_OK ? resp->status : 0;
    if (resp->net == MESH_GW_NET_OK) went_online(g);
    if (st >= 200 && st < 300) {
        for (size_t i = 0; i < r->nops; i++) {
            gop *op = r->ops[i];
            op->accepted_at = now;
            op->fails = 0;
            op->bisect = 0;
            schedule_confirm(g, op, now + g->cfg.confirm_delay_ms);
        }
        return;
    }
    if (st == 401) {
        g->st.requests_failed++;
        token_rejected(g);
        for (size_t i = 0; i < r->nops; i++) queue_ready(g, r->ops[i], now);
        return;
    }
    verdict v;
    if (st == 400 || st == 409 || st == 413 || st == 422) {
        gw_error_of(resp, &v);
        g->st.requests_failed++;
        /* Envelope errors are ours, not the ops': do not blame the ops for them. */
        bool ours = strcmp(v.code, "MISSING_REQUEST_INFO") == 0 ||
                    strcmp(v.code, "INVALID_JSON") == 0 ||
                    strcmp(v.code, "UNSUPPORTED_CONTENT_ENCODING") == 0;
        if (ours) {
            gw_log(g, 0, "%s%s refused the request as malformed (%s: %s); this is a gateway "
                   "bug or a wrong endpoint; retrying in %u s", g->cfg.base_url, r->path, v.code,
                   v.msg, g->cfg.backoff_max_ms / 1000);
            for (size_t i = 0; i < r->nops; i++) {
                r->ops[i]->unknown = false;
                resend_later(g, r->ops[i], now + gw_jitter(g, g->cfg.backoff_max_ms));
            }
            return;
        }
        if (r->single) {
            /* The single endpoint validated against the stored state: verify by search (a
             * DUPLICATE_ENTITY or MISMATCHED_ROW_VERSION may mean an earlier send applied). */
            gop *op = r->ops[0];
            if (op->verdict == NULL) op->verdict = malloc(sizeof *op->verdict);
            if (op->verdict) *op->verdict = v;
            op->unknown = false;
            op->accepted_at = 0;
            schedule_confirm(g, op, now);
            return;
        }
        if (r->nops > 1) {
            gw_log(g, 3, "%s refused a batch of %zu (%s); splitting it to find the op at fault",
                   r->what, r->nops, v.code);
            split_batch(g, r, now);
            return;
        }
        /* A refused request of one op: nothing was queued; that is the server's verdict. */
        gop *op = r->ops[0];
        char id[MESH_UUID_STR_LEN];
        uuid_str(op->entity, id);
        gw_log(g, 2, "%s %s rowVersion %u rejected by %s: %s: %s", ty->name, id, op->rv, r->path,
               v.code, v.msg);
        gent *e = op->ent;
        if (op->reassert) {
            reassert_give_up(g, op, &v);
            return;
        }
        if (op->action == ACT_CREATE) {
            e->flags |= MESH_OUTBOX_ENT_REFUSED;
            if (e->refusal == NULL) e->refusal = malloc(sizeof *e->refusal);
            if (e->refusal) *e->refusal = v;
            ent_dirty(g, e);
        }
        finish(g, op, MESH_OUTBOX_REJECTED, &v);
        if (!(e->flags & MESH_OUTBOX_ENT_ON_SERVER) && e->nops == 0) wake_waiters(g, e);
        return;
    }
    if (st == 403 || st == 404 || st == 405) {
        gw_error_of(resp, &v);
        g->st.requests_failed++;
        gw_log(g, 0, "%s%s answered %d (%s): check the endpoint and the account's roles in the "
               "gateway configuration; retrying in %u s", g->cfg.base_url, r->path, st, v.code,
               g->cfg.backoff_max_ms / 1000);
        for (size_t i = 0; i < r->nops; i++)
            resend_later(g, r->ops[i], now + gw_jitter(g, g->cfg.backoff_max_ms));
        return;
    }
    /* No answer, a broken connection, a 5xx: the write may or may not have applied. A search
     * decides before anything is sent again. A request that never left (no connection) is
     * simply sent again. */
    if (resp->net == MESH_GW_NET_OK) {
        g->st.requests_failed++;
    } else {
        net_failure(g, now, resp);
    }
    gw_log(g, 3, "%s: %s", r->what, resp->net == MESH_GW_NET_OK ? "server error"
                                    : resp->error ? resp->error : "no answer");
    for (size_t i = 0; i < r->nops; i++) {
        gop *op = r->ops[i];
        op->fails++;
        if (resp->net == MESH_GW_NET_CONNECT) {
            op->unknown = false;
            resend_later(g, op, now + gw_backoff(g, op->fails));
        } else {
            op->unknown = true;
            schedule_confirm(g, op, now + gw_backoff(g, op->fails));
        }
    }
}

/* ---- Confirming searches --------------------------------------------------------------------- */

static group *group_of(mesh_gw *g, uint16_t type, uint16_t tenant)
{
    size_t i = (size_t)type * MESH_GW_TENANTS_MAX + tenant;
    if (g->groups[i] == NULL) {
        g->groups[i] = calloc(1, sizeof *g->groups[i]);
        if (g->groups[i] == NULL) fail(g, MESH_ENOMEM, "grouping searches");
    }
    return g->groups[i];
}

/* Moves ops whose timer is due: retries to their ready queue, confirmations to their group. */
static void run_timers(mesh_gw *g, uint64_t now)
{
    const timer *t;
    while ((t = timer_top(g)) != NULL && t->due <= now) {
        gop *op = t->op;
        timer_pop(g);
        if (op->phase == PH_DELAY) {
            queue_ready(g, op, now);
        } else if (op->phase == PH_ACCEPT && !op->in_due) {
            group *gr = group_of(g, op->ent->type, op->tenant);
            if (gr == NULL) return;
            if (vec_len(&gr->due) == 0) gr->first_due = now;
            op->in_due = true;
            if (vec_push(&gr->due, op) != MESH_OK) fail(g, MESH_ENOMEM, "grouping searches");
        }
    }
}

static const mesh_gw_request *next_search(mesh_gw *g, uint64_t now)
{
    size_t ngroups = g->cfg.ntypes * MESH_GW_TENANTS_MAX;
    for (size_t gi = 0; gi < ngroups; gi++) {
        group *gr = g->groups[gi];
        if (gr == NULL) continue;
        while (gr->due.head < gr->due.n && (gr->due.v[gr->due.head]->phase != PH_ACCEPT ||
                                            !gr->due.v[gr->due.head]->in_due))
            gr->due.head++;
        size_t n = vec_len(&gr->due);
        if (n == 0) continue;
        if (n < MESH_GW_SEARCH_IDS_MAX && now < gr->first_due + SEARCH_LINGER_MS(g)) continue;
        req *r = gw_req_new(g, RQ_SEARCH);
        if (r == NULL) return NULL;
        r->type = (uint16_t)(gi / MESH_GW_TENANTS_MAX);
        r->tenant = (uint16_t)(gi % MESH_GW_TENANTS_MAX);
        const mesh_gw_type *ty = &g->cfg.types[r->type];
        mesh_buf *b = &r->body;
        int rc = gw_append(b, "{\"RequestInfo\":");
        if (rc == MESH_OK) rc = gw_request_info(g, now, "_search", b);
        if (rc == MESH_OK) rc = gw_appendf(b, ",\"%s\":{\"clientReferenceId\":[", ty->search_key);
        while (gr->due.head < gr->due.n && r->nops < MESH_GW_SEARCH_IDS_MAX && rc == MESH_OK) {
            gop *op = gr->due.v[gr->due.head++];
            if (op->phase != PH_ACCEPT || !op->in_due) continue;
            op->in_due = false;
            op->phase = PH_CONFIRMING;
            char id[MESH_UUID_STR_LEN];
            uuid_str(op->entity, id);
            rc = gw_appendf(b, "%s\"%s\"", r->nops ? "," : "", id);
            if (rc == MESH_OK) rc = req_add_op(r, op);
        }
        if (rc == MESH_OK) rc = gw_append(b, "]}}");
        gr->first_due = now;
        if (rc != MESH_OK) {
            req_release(g, r);
            fail(g, rc, "building a search");
            return NULL;
        }
        mesh_buf q;
        mesh_buf_init(&q, 256);
        rc = gw_urlenc(&q, g->tenants[r->tenant]);
        if (rc == MESH_OK) rc = mesh_buf_append(&q, "", 1);
        snprintf(r->path, sizeof r->path,
                 "%s/_search?limit=%zu&offset=0&tenantId=%s&includeDeleted=true", ty->path,
                 r->nops, rc == MESH_OK ? (const char *)q.data : "");
        mesh_buf_fini(&q);
        snprintf(r->ctype, sizeof r->ctype, "application/json");
        snprintf(r->what, sizeof r->what, "%s _search (%zu ids)", ty->name, r->nops);
        g->st.search_requests++;
        return req_publish(g, r, "POST");
    }
    return NULL;
}

typedef struct fields_ctx {
    const gop *op;
    const json_t *srv;
    bool same;
} fields_ctx;

/* True if every top-level scalar field of the op's body has the same value on the server. */
static int fields_fn(mesh_txn *t, void *vctx)
{
    fields_ctx *c = vctx;
    mesh_opref ref = {.row_version = c->op->rv};
    memcpy(ref.author, c->op->author, 32);
    mesh_oprec rec;
    mesh_op m;
    int rc = mesh_store_op_get(t, c->op->entity, &ref, &rec);
    if (rc == MESH_OK) rc = mesh_op_decode(rec.op, rec.op_len, &m);
    if (rc != MESH_OK) return rc;
    mesh_buf j;
    mesh_buf_init(&j, OP_BODY_JSON_MAX);
    rc = mesh_body_to_json(m.body, m.body_len, &j);
    json_t *mine = rc == MESH_OK ? json_loadb((const char *)j.data, j.len, 0, NULL) : NULL;
    mesh_buf_fini(&j);
    c->same = mine != NULL;
    const char *k;
    json_t *v;
    json_object_foreach(mine, k, v) {
        if (json_is_object(v) || json_is_array(v)) continue; /* servers enrich nested parts */
        if (!json_equal(v, json_object_get(c->srv, k))) c->same = false;
    }
    json_decref(mine);
    return rc;
}

/* The server is past the rowVersion this gateway's write should give: another writer changed
 * the entity. The write applied only if the server holds its fields. */
static bool server_holds_fields(mesh_gw *g, const gop *op, const char *obj, size_t obj_len)
{
    json_t *srv = json_loadb(obj, obj_len, 0, NULL);
    fields_ctx c = {.op = op, .srv = srv};
    bool same = srv && mesh_store_read(g->node->store, fields_fn, &c) == MESH_OK && c.same;
    json_decref(srv);
    return same;
}

/* Decides one op from what the server holds (found: an entity with its clientReferenceId). */
static void confirm_one(mesh_gw *g, gop *op, uint64_t now, bool found, const char *srv_id,
                        uint32_t srv_rv, bool srv_deleted, const char *srv_obj, size_t srv_len)
{
    gent *e = op->ent;
    bool applied;
    if (!found) applied = false;
    else if (op->action == ACT_CREATE && !op->reassert) applied = true;
    else if (op->action == ACT_DELETE) applied = srv_deleted;
    else if (srv_rv < op->expect_rv || srv_deleted) applied = false;
    else if (srv_rv == op->expect_rv) applied = true; /* one write at a time per entity */
    else applied = !op->reassert && srv_obj && server_holds_fields(g, op, srv_obj, srv_len);

    if (applied) {
        bool created = !(e->flags & MESH_OUTBOX_ENT_ON_SERVER);
        if (srv_rv > op->expect_rv && !op->reassert && op->action != ACT_CREATE) {
            char id[MESH_UUID_STR_LEN];
            uuid_str(e->entity, id);
            gw_log(g, 1, "%s %s is at rowVersion %u on the server, past the %u this gateway "
                   "wrote: something else writes to it too", type_of(g, e)->name, id, srv_rv,
                   op->expect_rv);
        }
        e->server_rv = srv_rv;
        set_server_id(e, srv_id);
        e->flags |= MESH_OUTBOX_ENT_ON_SERVER;
        e->flags &= ~MESH_OUTBOX_ENT_REFUSED;
        free(e->refusal);
        e->refusal = NULL;
        if (srv_deleted) e->flags |= MESH_OUTBOX_ENT_DELETED;
        op->server_rv = srv_rv;
        if (op->reassert) {
            e->flags &= ~MESH_OUTBOX_ENT_REASSERT;
            e->fwd_rv = e->max_rv;
            e->fwd_hlc = e->max_hlc;
            memcpy(e->fwd_author, e->max_author, 32);
        } else if (op->action != ACT_DELETE) {
            e->fwd_rv = op->rv;
            e->fwd_hlc = op->hlc;
            memcpy(e->fwd_author, op->author, 32);
        }
        ent_dirty(g, e);
        finish(g, op, MESH_OUTBOX_CONFIRMED, NULL);
        if (op->action == ACT_DELETE) {
            /* Deletes are final: every other delete of the entity has its effect too. */
            for (uint32_t i = 0; i < e->nops;) {
                gop *d = e->ops[i];
                if (d->kind == MESH_OP_DELETE && d->phase == PH_IDLE) {
                    d->server_rv = srv_rv;
                    d->action = ACT_DELETE;
                    finish(g, d, MESH_OUTBOX_CONFIRMED, NULL);
                } else {
                    i++;
                }
            }
        }
        if (created) wake_waiters(g, e);
        return;
    }
    if (op->verdict) {
        /* The server told us why (single endpoint, sync file): that is the op's rejection. */
        verdict v = *op->verdict;
        char id[MESH_UUID_STR_LEN];
        uuid_str(e->entity, id);
        gw_log(g, 2, "%s %s rowVersion %u rejected: %s: %s", type_of(g, e)->name, id, op->rv,
               v.code, v.msg);
        if (op->reassert) {
            reassert_give_up(g, op, &v);
            return;
        }
        if (op->action == ACT_CREATE && !(e->flags & MESH_OUTBOX_ENT_ON_SERVER)) {
            e->flags |= MESH_OUTBOX_ENT_REFUSED;
            if (e->refusal == NULL) e->refusal = malloc(sizeof *e->refusal);
            if (e->refusal) *e->refusal = v;
            ent_dirty(g, e);
        }
        finish(g, op, MESH_OUTBOX_REJECTED, &v);
        if (!(e->flags & MESH_OUTBOX_ENT_ON_SERVER) && e->nops == 0) wake_waiters(g, e);
        return;
    }
    if (op->unknown) {
        /* The last send had no answer and did not apply: send it again. */
        op->unknown = false;
        queue_ready(g, op, now);
        return;
    }
    if (op->accepted_at && now < op->accepted_at + g->cfg.confirm_window_ms) {
        /* Accepted, not applied yet (the service applies writes asynchronously). */
        op->rounds++;
        uint64_t wait = g->cfg.confirm_delay_ms ? g->cfg.confirm_delay_ms : 100;
        for (uint32_t i = 1; i < op->rounds && wait < g->cfg.confirm_window_ms; i++) wait *= 2;
        uint64_t left = op->accepted_at + g->cfg.confirm_window_ms - now;
        schedule_confirm(g, op, now + (wait < left ? wait : left));
        return;
    }
    /* Accepted but never applied within the window: dropped, or refused in bulk (errors of a
     * bulk write are not returned). Send again; after bulk_attempts, through the single
     * endpoint, which answers the server's error. */
    op->drops++;
    if (op->drops > g->cfg.retries) {
        verdict v;
        verdict_set(&v, "NOT_APPLIED",
                    "the service accepted this write %u times but never applied it within %u s "
                    "each; see its error log", op->drops, g->cfg.confirm_window_ms / 1000);
        if (op->reassert) {
            reassert_give_up(g, op, &v);
            return;
        }
        finish(g, op, MESH_OUTBOX_REJECTED, &v);
        if (!(e->flags & MESH_OUTBOX_ENT_ON_SERVER) && e->nops == 0) wake_waiters(g, e);
        return;
    }
    if (op->drops >= g->cfg.bulk_attempts) op->single = true;
    queue_ready(g, op, now);
}

typedef struct search_hits {
    mesh_gw *g;
    req *r;
    gw_hit *hits;            /* per op of the request */
    bool *found;
} search_hits;

static int on_hit(const gw_hit *h, void *ctx)
{
    search_hits *s = ctx;
    char crid[MESH_UUID_STR_LEN];
    uint8_t id[16];
    if (h->escaped || h->crid_len != 36) return MESH_OK;
    memcpy(crid, h->crid, 36);
    crid[36] = '\0';
    if (mesh_uuid_parse(crid, id) != MESH_OK) return MESH_OK;
    gent *e = ent_find(s->g, id);
    if (e == NULL || e->cur == NULL || e->cur->phase != PH_CONFIRMING) return MESH_OK;
    uint32_t k = e->cur->idx;
    if (k < s->r->nops && s->r->ops[k] == e->cur) {
        s->found[k] = true;
        s->hits[k] = *h;
    }
    return MESH_OK;
}

static void on_search(mesh_gw *g, req *r, uint64_t now, const mesh_gw_response *resp)
{
    int st = resp->net == MESH_GW_NET_OK ? resp->status : 0;
    const mesh_gw_type *ty = &g->cfg.types[r->type];
    int src = MESH_ENOTFOUND;
    if (st == 200) {
        for (size_t i = 0; i < r->nops; i++) r->ops[i]->idx = (uint32_t)i;
        search_hits sh = {.g = g, .r = r, .hits = calloc(r->nops ? r->nops : 1, sizeof(gw_hit)),
                          .found = calloc(r->nops ? r->nops : 1, sizeof(bool))};
        if (sh.hits == NULL || sh.found == NULL) {
            free(sh.hits);
            free(sh.found);
            fail(g, MESH_ENOMEM, "reading a search");
            return;
        }
        src = gw_scan_search(resp->body, resp->body_len, ty->response_key, on_hit, &sh);
        if (src == MESH_OK) {
            went_online(g);
            for (size_t k = 0; k < r->nops; k++) {
                const gw_hit *h = &sh.hits[k];
                char sid[MESH_OUTBOX_ID_BYTES_MAX + 1] = "";
                if (sh.found[k] && h->id && !h->escaped && h->id_len < sizeof sid) {
                    memcpy(sid, h->id, h->id_len);
                    sid[h->id_len] = '\0';
                }
                confirm_one(g, r->ops[k], now, sh.found[k], sid[0] ? sid : NULL,
                            h->rv > 0 && h->rv <= UINT32_MAX ? (uint32_t)h->rv : 0, h->deleted,
                            sh.found[k] ? h->obj : NULL, h->obj_len);
            }
        }
        free(sh.hits);
        free(sh.found);
        if (src == MESH_OK) return;
    }
    if (st == 401) {
        g->st.requests_failed++;
        token_rejected(g);
        for (size_t i = 0; i < r->nops; i++) schedule_confirm(g, r->ops[i], now);
        return;
    }
    if (resp->net != MESH_GW_NET_OK) {
        net_failure(g, now, resp);
    } else {
        g->st.requests_failed++;
        went_online(g);
        if (st == 200 || (st >= 400 && st < 500)) {
            verdict v;
            gw_error_of(resp, &v);
            gw_log(g, 1, "%s%s/_search answered %d%s%s (%s); check searchKey and responseKey of "
                   "%s in the gateway configuration", g->cfg.base_url, ty->path, st,
                   st == 200 ? (src == MESH_ENOTFOUND ? " without " : " a malformed ") : "",
                   st == 200 ? ty->response_key : "", v.code, ty->name);
        }
    }
    for (size_t i = 0; i < r->nops; i++) {
        gop *op = r->ops[i];
        op->fails++;
        schedule_confirm(g, op, now + gw_backoff(g, op->fails));
    }
}

/* ---- The file uplink ------------------------------------------------------------------------- */

static int file_entries_fn(mesh_txn *t, void *vctx)
{
    build_ctx *c = vctx;
    mesh_gw *g = c->g;
    fileup *f = &g->file;
    mesh_buf lines;
    mesh_buf_init(&lines, (size_t)MESH_GW_FILE_ENTRIES_MAX * 8 * MESH_OP_BYTES_MAX);
    int rc = MESH_OK;
    for (size_t i = 0; i < f->nops && rc == MESH_OK; i++) {
        if (i > 0 && lines.len > MESH_GW_FILE_BYTES_MAX) {
            c->kept = i; /* the rest goes in the next file */
            break;
        }
        gop *op = f->ops[i];
        rc = gw_appendf(&lines, "{\"type\":\"%s\",\"action\":\"%s\",\"entity\":",
                        type_of(g, op->ent)->name, ACTION_NAMES[op->action]);
        if (rc == MESH_OK) rc = append_entity(c, t, op, &lines);
        if (rc == MESH_OK) rc = gw_append(&lines, "}\n");
    }
    mesh_buf_reset(&f->content);
    if (rc == MESH_OK) rc = gw_gzip(lines.data, lines.len, &f->content);
    mesh_buf_fini(&lines);
    return rc;
}

/* Compiles the ready ops (every type, parents first) into one gzipped JSON-lines file. */
static bool file_compile(mesh_gw *g, uint64_t now)
{
    fileup *f = &g->file;
    f->nops = 0;
    size_t ready = 0;
    uint64_t oldest = UINT64_MAX;
    for (size_t t = 0; t < g->cfg.ntypes; t++)
        for (uint8_t a = ACT_CREATE; a < ACT_COUNT; a++) {
            opvec *q = &g->ready[t * ACT_COUNT + a];
            gop *h = queue_head(q);
            if (h == NULL) continue;
            ready += vec_len(q);
            if (h->ready_at < oldest) oldest = h->ready_at;
        }
    if (ready == 0) return false;
    if (ready < g->cfg.file_entries_max && now < oldest + g->cfg.linger_ms) return false;
    for (size_t t = 0; t < g->cfg.ntypes && f->nops < g->cfg.file_entries_max; t++)
        for (uint8_t a = ACT_CREATE; a < ACT_COUNT && f->nops < g->cfg.file_entries_max; a++) {
            opvec *q = &g->ready[t * ACT_COUNT + a];
            while (f->nops < g->cfg.file_entries_max) {
                gop *op = queue_head(q);
                if (op == NULL) break;
                q->head++;
                if (PUSH(f->ops, f->nops, f->cap, op) != MESH_OK) {
                    fail(g, MESH_ENOMEM, "compiling a sync file");
                    return false;
                }
            }
        }
    build_ctx c = {.g = g, .now = now};
    mesh_buf_init(&c.edited, MESH_OP_BYTES_MAX * 2);
    mesh_buf_init(&c.add, 4096);
    mesh_buf_init(&c.ejson, 4096);
    int rc = mesh_store_read(g->node->store, file_entries_fn, &c);
    mesh_buf_fini(&c.edited);
    mesh_buf_fini(&c.add);
    mesh_buf_fini(&c.ejson);
    if (rc != MESH_OK) {
        fail(g, rc, "compiling a sync file");
        return false;
    }
    if (c.kept) {
        for (size_t i = c.kept; i < f->nops; i++) queue_ready(g, f->ops[i], now);
        f->nops = c.kept;
    }
    for (size_t i = 0; i < f->nops; i++) {
        gop *op = f->ops[i];
        op->attempt++;
        if (op->attempt > 1) g->st.ops_resent++;
        op->state = MESH_OUTBOX_SENT;
        op->phase = PH_SENDING;
        op->expect_rv = op->action == ACT_CREATE ? 1 : op->ent->server_rv + 1;
        op->sent_at = now;
        op->unknown = true; /* until the status says COMPLETED */
        op->rounds = 0;
        free(op->verdict);
        op->verdict = NULL;
        if (op->reassert) {
            op->ent->flags |= MESH_OUTBOX_ENT_REASSERT;
            op->ent->reassert_rv = op->expect_rv;
            ent_dirty(g, op->ent);
        } else {
            op_dirty(g, op);
        }
    }
    if (persist(g, now) != MESH_OK) return false;
    uint8_t sum[MESH_SHA256_BYTES];
    mesh_sha256(f->content.data, f->content.len, sum);
    mesh_hex_encode(sum, sizeof sum, f->checksum);
    f->stage = RQ_FILE_UPLOAD;
    f->waiting = false;
    f->next_at = now;
    f->fails = 0;
    gw_log(g, 3, "compiled a sync file of %zu ops (%zu bytes gzipped)", f->nops, f->content.len);
    return true;
}

/* The file's ops leave the uplink: each is confirmed by search (or sent again). */
static void file_release(mesh_gw *g, uint64_t now, bool completed)
{
    fileup *f = &g->file;
    for (size_t i = 0; i < f->nops; i++) {
        gop *op = f->ops[i];
        op->unknown = !completed && f->created_at == 0;
        op->accepted_at = completed ? now : f->created_at;
        schedule_confirm(g, op, now + (completed ? 0 : 0));
    }
    f->nops = 0;
    f->stage = 0;
    f->waiting = false;
    f->created_at = 0;
    f->file_id[0] = f->url[0] = f->sync_id[0] = '\0';
}

static const mesh_gw_request *file_request(mesh_gw *g, uint64_t now)
{
    fileup *f = &g->file;
    if (f->stage == 0 && !file_compile(g, now)) return NULL;
    if (f->waiting || now < f->next_at) return NULL;
    req *r = gw_req_new(g, f->stage);
    if (r == NULL) return NULL;
    mesh_buf *b = &r->body;
    int rc = MESH_OK;
    const char *method = "POST";
    mesh_buf q;
    mesh_buf_init(&q, 1024);
    switch (f->stage) {
    case RQ_FILE_UPLOAD: {
        /* multipart/form-data: tenantId, module, file (the filestore's fields). */
        char boundary[48];
        snprintf(boundary, sizeof boundary, "meshsync%016llx", (unsigned long long)rng_next(g));
        snprintf(r->ctype, sizeof r->ctype, "multipart/form-data; boundary=%s", boundary);
        rc = gw_appendf(b, "--%s\r\nContent-Disposition: form-data; name=\"tenantId\"\r\n\r\n%s\r\n"
                           "--%s\r\nContent-Disposition: form-data; name=\"module\"\r\n\r\n%s\r\n"
                           "--%s\r\nContent-Disposition: form-data; name=\"file\"; "
                           "filename=\"meshsync-%llu.jsonl.gz\"\r\nContent-Type: "
                           "application/gzip\r\n\r\n",
                        boundary, g->cfg.tenant_id, boundary, g->cfg.file_module, boundary,
                        (unsigned long long)r->id);
        if (rc == MESH_OK) rc = mesh_buf_append(b, f->content.data, f->content.len);
        if (rc == MESH_OK) rc = gw_appendf(b, "\r\n--%s--\r\n", boundary);
        snprintf(r->path, sizeof r->path, "%s", g->cfg.filestore_path);
        snprintf(r->what, sizeof r->what, "upload a sync file of %zu ops", f->nops);
        break;
    }
    case RQ_FILE_URL:
        method = "GET";
        rc = gw_urlenc(&q, g->cfg.tenant_id);
        if (rc == MESH_OK) rc = gw_append(&q, "&fileStoreIds=");
        if (rc == MESH_OK) rc = gw_urlenc(&q, f->file_id);
        if (rc == MESH_OK) rc = mesh_buf_append(&q, "", 1);
        if (rc == MESH_OK)
            snprintf(r->path, sizeof r->path, "%s?tenantId=%s", g->cfg.filestore_url_path,
                     (const char *)q.data);
        snprintf(r->what, sizeof r->what, "URL of sync file %s", f->file_id);
        break;
    case RQ_FILE_CREATE:
        snprintf(r->ctype, sizeof r->ctype, "application/json");
        rc = gw_append(b, "{\"requestInfo\":");
        if (rc == MESH_OK) rc = gw_request_info(g, now, "_create", b);
        if (rc == MESH_OK) rc = gw_append(b, ",\"sync\":{\"tenantId\":");
        if (rc == MESH_OK) rc = gw_json_str(b, g->cfg.tenant_id, strlen(g->cfg.tenant_id));
        if (rc == MESH_OK && g->cfg.campaign_id[0]) {
            rc = gw_append(b, ",\"campaignId\":");
            if (rc == MESH_OK) rc = gw_json_str(b, g->cfg.campaign_id, strlen(g->cfg.campaign_id));
        }
        if (rc == MESH_OK) rc = gw_append(b, ",\"file\":");
        if (rc == MESH_OK) rc = gw_json_str(b, f->url, strlen(f->url));
        if (rc == MESH_OK) rc = gw_append(b, ",\"fileStoreId\":");
        if (rc == MESH_OK) rc = gw_json_str(b, f->file_id, strlen(f->file_id));
        if (rc == MESH_OK) rc = gw_appendf(b, ",\"checksum\":\"%s\"}}", f->checksum);
        snprintf(r->path, sizeof r->path, "%s", g->cfg.sync_file_path);
        snprintf(r->what, sizeof r->what, "post sync file %s (%zu ops)", f->file_id, f->nops);
        break;
    case RQ_FILE_STATUS:
        snprintf(r->ctype, sizeof r->ctype, "application/json");
        rc = gw_append(b, "{\"requestInfo\":");
        if (rc == MESH_OK) rc = gw_request_info(g, now, "_search", b);
        if (rc == MESH_OK) rc = gw_append(b, ",\"sync\":{\"syncId\":");
        if (rc == MESH_OK) rc = gw_json_str(b, f->sync_id, strlen(f->sync_id));
        if (rc == MESH_OK) rc = gw_append(b, "}}");
        snprintf(r->path, sizeof r->path, "%s", g->cfg.sync_status_path);
        snprintf(r->what, sizeof r->what, "status of sync %s", f->sync_id);
        break;
    default: rc = mesh_err(MESH_EINTERNAL, "file uplink stage %d", f->stage);
    }
    mesh_buf_fini(&q);
    if (rc != MESH_OK) {
        req_release(g, r);
        fail(g, rc, "building a file-uplink request");
        return NULL;
    }
    f->waiting = true;
    g->st.other_requests++;
    const mesh_gw_request *pub = req_publish(g, r, method);
    r->pub.auth_token = g->token[0] ? g->token : NULL;
    return pub;
}

static void file_stage_retry(mesh_gw *g, uint64_t now, const mesh_gw_response *resp)
{
    fileup *f = &g->file;
    f->fails++;
    f->next_at = now + gw_backoff(g, f->fails);
    if (resp->net != MESH_GW_NET_OK) net_failure(g, now, resp);
    else g->st.requests_failed++;
    if (resp->net == MESH_GW_NET_OK && resp->status == 401) token_rejected(g);
}

static void on_file(mesh_gw *g, req *r, uint64_t now, const mesh_gw_response *resp)
{
    fileup *f = &g->file;
    f->waiting = false;
    int st = resp->net == MESH_GW_NET_OK ? resp->status : 0;
    if (resp->net == MESH_GW_NET_OK) went_online(g);
    json_t *j = st >= 200 && st < 300 ? gw_parse(resp) : NULL;
    verdict v;
    switch (r->kind) {
    case RQ_FILE_UPLOAD: {
        const char *id = json_string_value(
            json_object_get(json_array_get(json_object_get(j, "files"), 0), "fileStoreId"));
        if (id && strlen(id) < sizeof f->file_id) {
            snprintf(f->file_id, sizeof f->file_id, "%s", id);
            f->stage = RQ_FILE_URL;
            f->fails = 0;
            f->next_at = now;
        } else {
            file_stage_retry(g, now, resp);
        }
        break;
    }
    case RQ_FILE_URL: {
        const char *url = json_string_value(json_object_get(j, f->file_id));
        if (url == NULL)
            url = json_string_value(
                json_object_get(json_array_get(json_object_get(j, "fileStoreIds"), 0), "url"));
        if (url && strlen(url) < sizeof f->url) {
            snprintf(f->url, sizeof f->url, "%s", url);
            f->stage = RQ_FILE_CREATE;
            f->fails = 0;
            f->next_at = now;
        } else {
            file_stage_retry(g, now, resp);
        }
        break;
    }
    case RQ_FILE_CREATE: {
        const char *sid = json_string_value(json_object_get(json_object_get(j, "sync"), "syncId"));
        if (sid && strlen(sid) < sizeof f->sync_id) {
            snprintf(f->sync_id, sizeof f->sync_id, "%s", sid);
            f->stage = RQ_FILE_STATUS;
            f->fails = 0;
            f->created_at = now;
            f->next_at = now + g->cfg.file_poll_ms;
            break;
        }
        if (st == 400) {
            gw_error_of(resp, &v);
            gw_log(g, 1, "%s refused sync file %s (%s: %s); uploading it again",
                   g->cfg.sync_file_path, f->file_id, v.code, v.msg);
            f->stage = RQ_FILE_UPLOAD;
        }
        /* No answer: the sync may have been queued. Its entries carry the same preconditions
         * as bulk writes, so posting the file again applies each at most once. */
        file_stage_retry(g, now, resp);
        break;
    }
    case RQ_FILE_STATUS: {
        json_t *s = json_object_get(j, "sync");
        const char *status = json_string_value(json_object_get(s, "status"));
        if (status == NULL) {
            file_stage_retry(g, now, resp);
            if (now > f->created_at + g->cfg.confirm_window_ms) file_release(g, now, false);
            break;
        }
        if (strcmp(status, "COMPLETED") == 0 || strcmp(status, "FAILED") == 0) {
            size_t i;
            json_t *x;
            json_array_foreach(json_object_get(s, "errors"), i, x) {
                json_int_t line = json_integer_value(json_object_get(x, "line"));
                if (line < 1 || (size_t)line > f->nops) continue;
                gop *op = f->ops[line - 1];
                if (op->verdict == NULL) op->verdict = malloc(sizeof *op->verdict);
                if (op->verdict == NULL) continue;
                const char *code = json_string_value(json_object_get(x, "code"));
                const char *msg = json_string_value(json_object_get(x, "message"));
                verdict_set(op->verdict, code ? code : "REJECTED", "%s", msg ? msg : "");
            }
            file_release(g, now, true);
        } else if (now > f->created_at + g->cfg.confirm_window_ms) {
            gw_log(g, 1, "sync %s is still %s after %u s; confirming its ops by search",
                   f->sync_id, status, g->cfg.confirm_window_ms / 1000);
            file_release(g, now, false);
        } else {
            f->next_at = now + g->cfg.file_poll_ms;
        }
        break;
    }
    default: break;
    }
    json_decref(j);
}

/* ---- The public interface ------------------------------------------------------------------ */

int mesh_gw_new(mesh_node *node, const mesh_gw_config *cfg, uint64_t now_ms, uint64_t seed,
                mesh_gw **out)
{
    mesh_err_clear();
    *out = NULL;
    if (cfg->ntypes == 0 || cfg->ntypes > MESH_TYPES_MAX || cfg->concurrency == 0 ||
        cfg->concurrency > MESH_GW_CONCURRENCY_MAX || cfg->batch_size == 0 ||
        cfg->batch_size > MESH_GW_BATCH_MAX)
        return mesh_err(MESH_EINVAL, "gateway configuration out of range (types, concurrency or "
                        "batch size)");
    mesh_gw *g = calloc(1, sizeof *g);
    if (g == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
    g->node = node;
    g->cfg = *cfg;
    g->rng = seed;
    g->probe_ms = cfg->probe_ms;
    g->online = true; /* until a request says otherwise */
    snprintf(g->tenants[0], sizeof g->tenants[0], "%s", cfg->tenant_id);
    g->ntenants = 1;
    if (cfg->token[0]) snprintf(g->token, sizeof g->token, "%s", cfg->token);
    g->ready = calloc(cfg->ntypes * ACT_COUNT, sizeof *g->ready);
    g->split = calloc(cfg->ntypes * ACT_COUNT, sizeof *g->split);
    g->groups = calloc(cfg->ntypes * MESH_GW_TENANTS_MAX, sizeof *g->groups);
    g->nslots = cfg->concurrency + MESH_GW_PREPARED_MAX;
    g->reqs = calloc(g->nslots, sizeof *g->reqs);
    int rc = g->ready && g->split && g->groups && g->reqs ? MESH_OK
                                                          : mesh_err(MESH_ENOMEM, "out of memory");
    for (size_t i = 0; g->reqs && i < g->nslots; i++)
        mesh_buf_init(&g->reqs[i].body, 64u * 1024u * 1024u);
    mesh_buf_init(&g->scratch, 2 * MESH_OP_BYTES_MAX);
    mesh_buf_init(&g->scratch2, 8 * MESH_OP_BYTES_MAX);
    mesh_buf_init(&g->json, 8 * MESH_OP_BYTES_MAX);
    mesh_buf_init(&g->file.content, 256u * 1024u * 1024u);
    if (rc == MESH_OK) rc = mesh_sysbatch_new(node, &g->batch);
    for (int k = 0; k < DL_COUNT; k++) g->dl_next[k] = now_ms;
    if (rc == MESH_OK) rc = load(g, now_ms);
    if (rc == MESH_OK) rc = persist(g, now_ms);
    if (rc != MESH_OK) {
        mesh_gw_free(g);
        return rc;
    }
    *out = g;
    return MESH_OK;
}

void mesh_gw_free(mesh_gw *g)
{
    if (g == NULL) return;
    for (size_t i = 0; i < g->tab_cap; i++) ent_free(g->tab[i]);
    free(g->tab);
    for (size_t i = 0; i < g->ndirty_ops; i++)
        if (g->dirty_ops[i]->phase == PH_FINISHED) op_free(g->dirty_ops[i]);
    for (size_t i = 0; g->ready && i < g->cfg.ntypes * ACT_COUNT; i++) {
        free(g->ready[i].v);
        free(g->split[i].v);
    }
    free(g->ready);
    free(g->split);
    free(g->single.v);
    for (size_t i = 0; g->groups && i < g->cfg.ntypes * MESH_GW_TENANTS_MAX; i++)
        if (g->groups[i]) {
            free(g->groups[i]->due.v);
            free(g->groups[i]);
        }
    free(g->groups);
    for (size_t i = 0; g->reqs && i < g->nslots; i++) {
        mesh_buf_fini(&g->reqs[i].body);
        free(g->reqs[i].ops);
    }
    free(g->reqs);
    free(g->heap);
    free(g->dirty_ops);
    free(g->dirty_ents);
    free(g->receipts);
    for (size_t i = 0; i < g->nconfigs; i++) json_decref(g->configs[i].value);
    free(g->configs);
    free(g->cursors);
    free(g->advance);
    free(g->orphans);
    free(g->file.ops);
    mesh_buf_fini(&g->file.content);
    mesh_buf_fini(&g->scratch);
    mesh_buf_fini(&g->scratch2);
    mesh_buf_fini(&g->json);
    mesh_sysbatch_free(g->batch);
    free(g->user_info);
    mesh_wipe(g->token, sizeof g->token);
    mesh_wipe(g->cfg.password, sizeof g->cfg.password);
    mesh_wipe(g->cfg.client_secret, sizeof g->cfg.client_secret);
    free(g);
}

int mesh_gw_next_request(mesh_gw *g, uint64_t now, const mesh_gw_request **out)
{
    *out = NULL;
    if (g->broken) return broken_err(g);
    run_timers(g, now);
    advance_all(g, now);
    if (g->broken) return broken_err(g);
    if (g->inflight >= g->cfg.concurrency) return MESH_EAGAIN;
    const mesh_gw_request *r = NULL;
    if (need_login(g, now)) {
        /* Log in first (it doubles as the reachability probe): nothing goes out without it. */
        if (!g->auth_inflight && now >= g->next_probe) r = build_auth(g, now);
    } else if (!g->online && (g->inflight > 0 || now < g->next_probe)) {
        /* Offline with a fixed token: one request at a time probes. */
        r = NULL;
    } else {
        r = next_search(g, now);
        if (r == NULL && !g->broken) {
            if (g->cfg.uplink == MESH_GW_UPLINK_FILE) {
                r = file_request(g, now);
            } else {
                r = next_write(g, now);
            }
        }
        if (r == NULL && !g->broken) {
            req *dr = gw_dl_next(g, now);
            if (dr) r = &dr->pub;
        }
    }
    if (g->broken) return broken_err(g);
    if (r == NULL) return maybe_persist(g, now) == MESH_OK ? MESH_EAGAIN : broken_err(g);
    *out = r;
    return MESH_OK;
}

int mesh_gw_on_response(mesh_gw *g, uint64_t id, uint64_t now, const mesh_gw_response *resp)
{
    if (g->broken) return broken_err(g);
    req *r = NULL;
    for (size_t i = 0; i < g->nslots && r == NULL; i++)
        if (g->reqs[i].used && g->reqs[i].handed && g->reqs[i].id == id) r = &g->reqs[i];
    if (r == NULL) return mesh_err(MESH_ENOTFOUND, "no request %llu in flight",
                                   (unsigned long long)id);
    switch (r->kind) {
    case RQ_AUTH: on_auth(g, now, resp); break;
    case RQ_WRITE: on_write(g, r, now, resp); break;
    case RQ_SEARCH: on_search(g, r, now, resp); break;
    case RQ_FILE_UPLOAD:
    case RQ_FILE_URL:
    case RQ_FILE_CREATE:
    case RQ_FILE_STATUS: on_file(g, r, now, resp); break;
    default: gw_dl_on_response(g, r, now, resp); break;
    }
    req_release(g, r);
    run_timers(g, now);
    advance_all(g, now);
    return maybe_persist(g, now);
}

uint64_t mesh_gw_expiry(const mesh_gw *cg)
{
    mesh_gw *g = (mesh_gw *)cg; /* dropping stale timers does not change what the core does */
    if (g->broken || g->inflight >= g->cfg.concurrency) return UINT64_MAX;
    uint64_t t = UINT64_MAX;
#define EARLIER(x)                \
    do {                          \
        uint64_t x_ = (x);        \
        if (x_ < t) t = x_;       \
    } while (0)
    if (g->cfg.token[0] == '\0') {
        /* Logging in: nothing else goes out before a token (the login doubles as the probe). */
        if (g->token[0] == '\0' || !g->online) {
            if (!g->auth_inflight) EARLIER(g->next_probe);
            return t;
        }
        EARLIER(g->token_refresh_at);
    } else if (!g->online) {
        if (g->inflight == 0) EARLIER(g->next_probe);
        return t;
    }
    const timer *tp = timer_top(g);
    if (tp) EARLIER(tp->due);
    for (size_t gi = 0; gi < g->cfg.ntypes * MESH_GW_TENANTS_MAX; gi++) {
        group *gr = g->groups[gi];
        if (gr && vec_len(&gr->due))
            EARLIER(vec_len(&gr->due) >= MESH_GW_SEARCH_IDS_MAX ? 0
                                                                : gr->first_due + SEARCH_LINGER_MS(g));
    }
    size_t limit = g->cfg.concurrency > 1 ? g->cfg.concurrency - 1 : 1;
    bool can_write = g->cfg.uplink == MESH_GW_UPLINK_FILE || g->writes_inflight < limit;
    if (can_write && g->cfg.uplink == MESH_GW_UPLINK_BULK) {
        if (g->nprepared > 0 || vec_len(&g->single)) EARLIER(0);
        for (size_t i = 0; i < g->cfg.ntypes * ACT_COUNT; i++) {
            if (vec_len(&g->split[i])) EARLIER(0);
            if (vec_len(&g->ready[i])) {
                const gop *h = g->ready[i].v[g->ready[i].head];
                EARLIER(vec_len(&g->ready[i]) >= g->cfg.batch_size ? 0
                                                                    : h->ready_at + g->cfg.linger_ms);
            }
        }
    }
    if (g->cfg.uplink == MESH_GW_UPLINK_FILE) {
        if (g->file.stage && !g->file.waiting) EARLIER(g->file.next_at);
        if (g->file.stage == 0)
            for (size_t i = 0; i < g->cfg.ntypes * ACT_COUNT; i++)
                if (vec_len(&g->ready[i])) {
                    const gop *h = g->ready[i].v[g->ready[i].head];
                    EARLIER(h->ready_at + g->cfg.linger_ms);
                }
    }
    EARLIER(gw_dl_expiry(g));
    if (g->dirty_since) EARLIER(g->dirty_since + MESH_GW_PERSIST_LINGER_MS);
#undef EARLIER
    return t;
}

void mesh_gw_stats_get(const mesh_gw *g, mesh_gw_stats *out)
{
    *out = g->st;
    out->online = g->online;
    out->authenticated = g->token[0] != '\0';
    out->ops_live = g->live_ops;
    uint64_t waiting = 0;
    for (size_t i = 0; i < g->tab_cap; i++) {
        const gent *e = g->tab[i];
        if (e && e->cur == NULL && e->nops > 0) waiting += e->nops;
    }
    out->ops_waiting = waiting;
}

bool mesh_gw_idle(const mesh_gw *g)
{
    return !g->broken && g->live_ops == 0 && g->reasserts == 0 && g->writes_inflight == 0 &&
           g->nprepared == 0 && dirty_count(g) == 0 &&
           g->file.stage == 0 && !g->scan_more && g->nadvance == 0;
}

void mesh_gw_download_now(mesh_gw *g, uint64_t now)
{
    for (int k = 0; k < DL_COUNT; k++) g->dl_next[k] = now;
    g->loc_next_locale = 0;
}
