/*
 * system.c - This file implements system ops (node_int.h): entities of types starting with '_'
 * that the gateway writes into its own signed stream (receipts, downloaded configuration), their
 * deterministic entity ids, and the public reads of them (meshsync.h: receipts, configuration,
 * gateway status).
 *
 * System entities are ordinary ops to the store, the merge and sync: they travel to every node
 * like any op and are verified the same way. They have no parents, are not listed by mesh_list()
 * without a type, and cannot be written with mesh_put().
 */
#include "api/node_int.h"

#include "model/body.h"
#include "model/hlc.h"
#include "model/uuid.h"
#include "store/outbox.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define DOMAIN_RECEIPT "meshsync/receipt/v1"
#define DOMAIN_CONFIG "meshsync/config/v1"
/* Encoded ops one batch holds before it ingests them (bounds its memory: ~1 KB per receipt). */
#define SYSBATCH_OPS_MAX 4096u

/* A UUID (version 8, RFC 9562 "custom") from the first 16 bytes of a BLAKE2b-256 hash. */
static void uuid_from_hash(const uint8_t h[MESH_HASH_BYTES], uint8_t out[MESH_UUID_BYTES])
{
    memcpy(out, h, 16);
    out[6] = (uint8_t)(0x80 | (out[6] & 0x0f));
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
}

void mesh_receipt_entity_id(const uint8_t entity[MESH_UUID_BYTES], uint32_t rv,
                            const uint8_t author[MESH_KEY_BYTES], uint8_t out[MESH_UUID_BYTES])
{
    mesh_hash_state h;
    uint8_t rvb[4], d[MESH_HASH_BYTES];
    mesh_be32_put(rvb, rv);
    mesh_hash_init(&h);
    mesh_hash_update(&h, DOMAIN_RECEIPT, sizeof DOMAIN_RECEIPT);
    mesh_hash_update(&h, entity, MESH_UUID_BYTES);
    mesh_hash_update(&h, rvb, 4);
    mesh_hash_update(&h, author, MESH_KEY_BYTES);
    mesh_hash_final(&h, d);
    /* The first bytes are the op's entity's (a UUIDv7's are its creation time): receipts of
     * recent entities then land beside each other in the store's B-trees instead of all over
     * them, which makes a commit of 1,000 receipts write tens of pages, not thousands. The
     * rest is the hash, so distinct ops still get distinct receipts. */
    memcpy(d, entity, 8);
    uuid_from_hash(d, out);
}

void mesh_config_entity_id(const char *key, uint8_t out[MESH_UUID_BYTES])
{
    mesh_hash_state h;
    uint8_t d[MESH_HASH_BYTES];
    mesh_hash_init(&h);
    mesh_hash_update(&h, DOMAIN_CONFIG, sizeof DOMAIN_CONFIG);
    mesh_hash_update(&h, key, strlen(key));
    mesh_hash_final(&h, d);
    uuid_from_hash(d, out);
}

/* ---- Appending system ops in batches ---- */

typedef struct batch_ent {
    uint8_t entity[MESH_UUID_BYTES];
} batch_ent;

struct mesh_sysbatch {
    mesh_node *n;
    bool started;                 /* stream tip and clock read in this transaction */
    uint64_t seq;                 /* the stream's last seq, counting ops in the batch */
    uint8_t tip[MESH_HASH_BYTES];
    uint64_t hlc;
    size_t count;
    mesh_buf arena;               /* signature | op bytes, back to back */
    size_t offs[SYSBATCH_OPS_MAX];
    size_t lens[SYSBATCH_OPS_MAX];
    batch_ent ents[SYSBATCH_OPS_MAX];
    mesh_buf enc;
    mesh_buf cur;                 /* the current winner's body, for the no-change test */
};

int mesh_sysbatch_new(mesh_node *n, mesh_sysbatch **out)
{
    mesh_sysbatch *b = calloc(1, sizeof *b);
    if (b == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
    b->n = n;
    mesh_buf_init(&b->arena, (size_t)SYSBATCH_OPS_MAX * (MESH_OP_BYTES_MAX + MESH_SIG_BYTES));
    mesh_buf_init(&b->enc, MESH_OP_BYTES_MAX);
    mesh_buf_init(&b->cur, MESH_OP_BYTES_MAX);
    *out = b;
    return MESH_OK;
}

void mesh_sysbatch_free(mesh_sysbatch *b)
{
    if (b == NULL) return;
    mesh_buf_fini(&b->arena);
    mesh_buf_fini(&b->enc);
    mesh_buf_fini(&b->cur);
    free(b);
}

void mesh_sysbatch_reset(mesh_sysbatch *b)
{
    b->started = false;
    b->count = 0;
    mesh_buf_reset(&b->arena);
}

size_t mesh_sysbatch_count(const mesh_sysbatch *b) { return b->count; }

int mesh_sysbatch_flush(mesh_sysbatch *b, mesh_txn *t)
{
    if (b->count == 0) {
        b->started = false;
        return MESH_OK;
    }
    mesh_oprec *recs = malloc(sizeof *recs * b->count);
    if (recs == NULL) return mesh_err(MESH_ENOMEM, "out of memory appending system ops");
    for (size_t i = 0; i < b->count; i++)
        recs[i] = (mesh_oprec){.sig = b->arena.data + b->offs[i],
                               .op = b->arena.data + b->offs[i] + MESH_SIG_BYTES,
                               .op_len = b->lens[i]};
    mesh_ingest_report rep = {0};
    int rc = mesh_store_clock_set(t, b->hlc);
    if (rc == MESH_OK) rc = mesh_store_ingest(t, recs, b->count, MESH_INGEST_LOCAL, &rep);
    if (rc == MESH_OK && rep.applied != b->count)
        rc = mesh_err(MESH_EINTERNAL, "%" PRIu64 " of %zu system ops were applied: %s",
                      rep.applied, b->count, rep.first_error_msg);
    free(recs);
    /* The next put reads the tip again: after a failure the caller aborts the transaction. */
    b->started = false;
    b->count = 0;
    mesh_buf_reset(&b->arena);
    return rc;
}

static int batch_start(mesh_sysbatch *b, mesh_txn *t)
{
    int rc = mesh_store_append_point(t, b->n->sid, mesh_node_now_ms(b->n), &b->seq, b->tip,
                                     &b->hlc);
    b->started = rc == MESH_OK;
    return rc;
}

int mesh_sysbatch_put(mesh_sysbatch *b, mesh_txn *t, const char *type,
                      const uint8_t entity[MESH_UUID_BYTES], const uint8_t *body, size_t body_len,
                      bool *changed)
{
    if (changed) *changed = false;
    MESH_ASSERT(type[0] == '_');
    /* The same entity twice in a batch: the second put must see the first one's state. */
    for (size_t i = 0; i < b->count; i++)
        if (memcmp(b->ents[i].entity, entity, MESH_UUID_BYTES) == 0) {
            int rc = mesh_sysbatch_flush(b, t);
            if (rc != MESH_OK) return rc;
            break;
        }
    if (b->count == SYSBATCH_OPS_MAX) {
        int rc = mesh_sysbatch_flush(b, t);
        if (rc != MESH_OK) return rc;
    }
    if (!b->started) {
        int rc = batch_start(b, t);
        if (rc != MESH_OK) return rc;
    }
    mesh_op op = {.kind = MESH_OP_CREATE, .type = type, .type_len = strlen(type),
                  .row_version = 1, .body = body, .body_len = body_len};
    memcpy(op.entity, entity, MESH_UUID_BYTES);
    mesh_state st;
    int rc = mesh_store_state_get(t, entity, &st);
    if (rc == MESH_OK) {
        if (strcmp(st.type, type) != 0) {
            char id[MESH_UUID_STR_LEN];
            mesh_uuid_format(entity, id);
            return mesh_err(MESH_EINVAL, "system entity %s is a %s, not a %s", id, st.type, type);
        }
        mesh_oprec rec;
        mesh_op cur;
        rc = mesh_store_op_get(t, entity, &st.winner.ref, &rec);
        if (rc == MESH_OK) rc = mesh_op_decode(rec.op, rec.op_len, &cur);
        if (rc != MESH_OK) return rc;
        if (cur.body_len == body_len && memcmp(cur.body, body, body_len) == 0) return MESH_OK;
        op.kind = MESH_OP_UPDATE;
        op.row_version = st.max_rv + 1;
        op.has_base = true;
        op.base = st.winner.ref;
    } else if (rc != MESH_ENOTFOUND) {
        return rc;
    }
    b->hlc = mesh_hlc_tick(b->hlc, mesh_node_now_ms(b->n));
    op.hlc = b->hlc;
    memcpy(op.author, b->n->id.pk, MESH_KEY_BYTES);
    op.scope = b->n->scope;
    op.scope_len = b->n->scope_len;
    op.seq = b->seq + 1;
    memcpy(op.prev, b->tip, MESH_HASH_BYTES);
    mesh_buf_reset(&b->enc);
    if ((rc = mesh_op_encode(&op, &b->enc)) != MESH_OK) return rc;
    uint8_t sig[MESH_SIG_BYTES];
    mesh_op_hash(b->enc.data, b->enc.len, b->tip);
    mesh_sign(&b->n->id, MESH_DOMAIN_OP, b->tip, MESH_HASH_BYTES, sig);
    size_t off = b->arena.len;
    if ((rc = mesh_buf_append(&b->arena, sig, sizeof sig)) != MESH_OK ||
        (rc = mesh_buf_append(&b->arena, b->enc.data, b->enc.len)) != MESH_OK)
        return rc;
    b->offs[b->count] = off;
    b->lens[b->count] = b->enc.len;
    memcpy(b->ents[b->count].entity, entity, MESH_UUID_BYTES);
    b->count++;
    b->seq++;
    if (changed) *changed = true;
    return MESH_OK;
}

/* ---- Reading system entities ---- */

/* Loads the winner's body of system entity `entity` as a JSON object (NULL if absent). */
static int load_body(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], const char *type,
                     json_t **out, mesh_state *st_out, uint64_t *hlc)
{
    *out = NULL;
    mesh_state st;
    int rc = mesh_store_state_get(t, entity, &st);
    if (rc != MESH_OK) return rc;
    if (strcmp(st.type, type) != 0) return MESH_ENOTFOUND;
    mesh_oprec rec;
    mesh_op op;
    rc = mesh_store_op_get(t, entity, &st.winner.ref, &rec);
    if (rc == MESH_ENOTFOUND) return mesh_err(MESH_ECORRUPT, "a winning op is missing");
    if (rc == MESH_OK) rc = mesh_op_decode(rec.op, rec.op_len, &op);
    if (rc != MESH_OK) return rc;
    mesh_buf j;
    mesh_buf_init(&j, 4 * MESH_OP_BYTES_MAX);
    rc = mesh_body_to_json(op.body, op.body_len, &j);
    if (rc == MESH_OK) {
        *out = json_loadb((const char *)j.data, j.len, 0, NULL);
        if (*out == NULL) rc = mesh_err(MESH_ECORRUPT, "a system entity's body is not JSON");
    }
    mesh_buf_fini(&j);
    if (st_out) *st_out = st;
    if (hlc) *hlc = st.winner.hlc;
    return rc;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static int receipt_read(mesh_txn *t, const uint8_t entity[16], uint32_t rv,
                        const uint8_t author[32], mesh_receipt *r)
{
    uint8_t rid[MESH_UUID_BYTES];
    mesh_receipt_entity_id(entity, rv, author, rid);
    json_t *b;
    mesh_state st;
    int rc = load_body(t, rid, MESH_TYPE_RECEIPT, &b, &st, NULL);
    if (rc != MESH_OK) return rc;
    memset(r, 0, sizeof *r);
    const char *status = json_string_value(json_object_get(b, "status"));
    r->status = status && strcmp(status, "confirmed") == 0  ? MESH_RECEIPT_CONFIRMED
                : status && strcmp(status, "rejected") == 0 ? MESH_RECEIPT_REJECTED
                                                            : MESH_RECEIPT_NONE;
    copy_str(r->server_id, sizeof r->server_id, json_string_value(json_object_get(b, "serverId")));
    r->server_row_version = (uint32_t)json_integer_value(json_object_get(b, "serverRowVersion"));
    json_t *err = json_object_get(b, "error");
    copy_str(r->error_code, sizeof r->error_code, json_string_value(json_object_get(err, "code")));
    copy_str(r->error_message, sizeof r->error_message,
             json_string_value(json_object_get(err, "message")));
    copy_str(r->action, sizeof r->action, json_string_value(json_object_get(b, "action")));
    r->time_ms = (uint64_t)json_integer_value(json_object_get(b, "time"));
    mesh_hex_encode(st.winner.ref.author, MESH_KEY_BYTES, r->gateway);
    json_decref(b);
    return MESH_OK;
}

typedef struct receipt_args {
    uint8_t entity[16];
    uint32_t rv;
    uint8_t author[32];
    mesh_receipt *out;
} receipt_args;

static int receipt_fn(mesh_txn *t, void *ctx)
{
    receipt_args *a = ctx;
    return receipt_read(t, a->entity, a->rv, a->author, a->out);
}

int mesh_receipt_get(mesh_node *n, const char *entity_id, uint32_t row_version,
                     const char *author, mesh_receipt *out)
{
    mesh_err_clear();
    receipt_args a = {.rv = row_version, .out = out};
    int rc = mesh_uuid_parse(entity_id, a.entity);
    if (rc != MESH_OK) return rc;
    if (author == NULL || mesh_hex_decode(author, a.author, MESH_KEY_BYTES) != MESH_OK)
        return mesh_err(MESH_EINVAL, "'%.70s' is not a public key (64 hex characters)",
                        author ? author : "(null)");
    return mesh_store_read(n->store, receipt_fn, &a);
}

typedef struct summary_args {
    mesh_node *n;
    mesh_receipt_summary *out;
    mesh_txn *t;
    const mesh_stream *st;
} summary_args;

/* Keeps the most recent rejections, newest first. */
static void remember_rejection(mesh_receipt_summary *s, const mesh_op *op, const mesh_receipt *r)
{
    size_t pos = 0;
    while (pos < s->nrecent && s->recent[pos].time_ms >= r->time_ms) pos++;
    if (pos >= MESH_RECEIPT_RECENT_MAX) return;
    size_t last = s->nrecent < MESH_RECEIPT_RECENT_MAX ? s->nrecent : MESH_RECEIPT_RECENT_MAX - 1;
    memmove(&s->recent[pos + 1], &s->recent[pos], (last - pos) * sizeof s->recent[0]);
    mesh_receipt_rejection *x = &s->recent[pos];
    memset(x, 0, sizeof *x);
    mesh_uuid_format(op->entity, x->entity);
    snprintf(x->type, sizeof x->type, "%.*s", (int)op->type_len, op->type);
    x->row_version = op->row_version;
    copy_str(x->code, sizeof x->code, r->error_code);
    copy_str(x->message, sizeof x->message, r->error_message);
    x->time_ms = r->time_ms;
    if (s->nrecent < MESH_RECEIPT_RECENT_MAX) s->nrecent++;
}

static int summary_op(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    (void)seq;
    summary_args *a = ctx;
    mesh_op op;
    int rc = mesh_op_decode(rec->op, rec->op_len, &op);
    if (rc != MESH_OK) return rc;
    if (op.type_len == 0 || op.type[0] == '_') return MESH_OK;
    mesh_receipt_summary *s = a->out;
    s->own_ops++;
    mesh_receipt r;
    rc = receipt_read(a->t, op.entity, op.row_version, op.author, &r);
    if (rc == MESH_ENOTFOUND) {
        s->awaiting++;
        return MESH_OK;
    }
    if (rc != MESH_OK) return rc;
    if (r.status == MESH_RECEIPT_CONFIRMED) {
        s->confirmed++;
    } else if (r.status == MESH_RECEIPT_REJECTED) {
        s->rejected++;
        remember_rejection(s, &op, &r);
    } else {
        s->awaiting++;
    }
    return MESH_OK;
}

static int summary_stream(const mesh_stream *st, void *ctx)
{
    summary_args *a = ctx;
    if (memcmp(st->author, a->n->id.pk, MESH_KEY_BYTES) != 0) return MESH_OK;
    a->st = st;
    return mesh_store_stream_ops(a->t, st->sid, 1, summary_op, a);
}

static int summary_fn(mesh_txn *t, void *ctx)
{
    summary_args *a = ctx;
    a->t = t;
    return mesh_store_streams(t, summary_stream, a);
}

int mesh_receipt_summary_get(mesh_node *n, mesh_receipt_summary *out)
{
    mesh_err_clear();
    memset(out, 0, sizeof *out);
    summary_args a = {.n = n, .out = out};
    return mesh_store_read(n->store, summary_fn, &a);
}

/* ---- Downloaded configuration ---- */

typedef struct config_args {
    const char *key;     /* get: this key; list: NULL */
    const char *prefix;  /* list: keys starting with this ("" for all) */
    mesh_config_cb cb;
    void *ctx;
    mesh_txn *t;
    bool found;
} config_args;

static int emit_config(config_args *a, const uint8_t entity[16])
{
    json_t *b;
    mesh_state st;
    uint64_t hlc;
    int rc = load_body(a->t, entity, MESH_TYPE_CONFIG, &b, &st, &hlc);
    if (rc != MESH_OK) return rc;
    const char *key = json_string_value(json_object_get(b, "key"));
    if (key == NULL || (a->prefix && strncmp(key, a->prefix, strlen(a->prefix)) != 0)) {
        json_decref(b);
        return MESH_OK;
    }
    char *value = json_dumps(json_object_get(b, "value"), JSON_COMPACT | JSON_ENCODE_ANY);
    if (value == NULL) {
        json_decref(b);
        return mesh_err(MESH_ENOMEM, "out of memory");
    }
    mesh_config_entry e = {.key = key, .kind = json_string_value(json_object_get(b, "kind")),
                           .source = json_string_value(json_object_get(b, "source")),
                           .json = value, .json_len = strlen(value),
                           .fetched_ms = (uint64_t)json_integer_value(json_object_get(b, "fetchedTime")),
                           .modified_ms = MESH_HLC_MS(hlc), .version = st.winner.ref.row_version};
    if (e.kind == NULL) e.kind = "";
    if (e.source == NULL) e.source = "";
    mesh_hex_encode(st.winner.ref.author, MESH_KEY_BYTES, e.author);
    a->found = true;
    rc = a->cb(&e, a->ctx);
    free(value);
    json_decref(b);
    return rc;
}

static int config_state(const mesh_state *st, void *ctx)
{
    return emit_config(ctx, st->entity);
}

static int config_fn(mesh_txn *t, void *ctx)
{
    config_args *a = ctx;
    a->t = t;
    if (a->key == NULL) return mesh_store_states(t, MESH_TYPE_CONFIG, config_state, a);
    uint8_t id[MESH_UUID_BYTES];
    mesh_config_entity_id(a->key, id);
    int rc = emit_config(a, id);
    if (rc == MESH_ENOTFOUND || (rc == MESH_OK && !a->found))
        return mesh_err(MESH_ENOTFOUND, "no configuration '%s' here; 'meshsync get config' lists "
                        "what the gateway has downloaded and this node holds", a->key);
    return rc;
}

int mesh_config_get(mesh_node *n, const char *key, mesh_config_cb cb, void *ctx)
{
    mesh_err_clear();
    if (key == NULL || *key == '\0') return mesh_err(MESH_EINVAL, "no configuration key given");
    config_args a = {.key = key, .cb = cb, .ctx = ctx};
    return mesh_store_read(n->store, config_fn, &a);
}

int mesh_config_list(mesh_node *n, const char *prefix, mesh_config_cb cb, void *ctx)
{
    mesh_err_clear();
    config_args a = {.prefix = prefix ? prefix : "", .cb = cb, .ctx = ctx};
    return mesh_store_read(n->store, config_fn, &a);
}

/* ---- Gateway status ---- */

static int gw_status_fn(mesh_txn *t, void *ctx)
{
    mesh_gateway_status *g = ctx;
    mesh_outbox_counts c;
    int rc = mesh_outbox_counts_get(t, &c);
    if (rc != MESH_OK) return rc;
    g->pending = c.pending;
    g->sent = c.sent;
    g->confirmed = c.confirmed;
    g->rejected = c.rejected;
    g->active = c.pending + c.sent + c.confirmed + c.rejected > 0;
    return MESH_OK;
}

int mesh_gateway_status_get(mesh_node *n, mesh_gateway_status *out)
{
    mesh_err_clear();
    memset(out, 0, sizeof *out);
    return mesh_store_read(n->store, gw_status_fn, out);
}
