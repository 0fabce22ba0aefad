/*
 * entities.c - the HCM entity endpoints: for every entity type in the table below, single and
 * bulk _create/_update/_delete (202, applied later by the queue worker) and _search, with the
 * real services' rules: the server assigns `id`, sets rowVersion 1 on create and checks it on
 * update and delete, refuses a repeated clientReferenceId, soft-deletes, and hides deleted
 * entities from search unless includeDeleted=true.
 *
 * Sources (see /work/shared/reference/digit-hcm): paths compose each contract's server prefix
 * with its paths (household.yml: server .../household + /v1/bulk/_create); request, response
 * and search keys are the Java models' @JsonProperty names where SOURCE.md lists a drift from
 * the YAML (individual search answers "Individual"); error codes are those of
 * health-services-common ValidatorUtils (DUPLICATE_ENTITY, NULL_ID, NON_EXISTENT_ENTITY,
 * MISMATCHED_ROW_VERSION, IS_DELETED_TRUE).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign.h"

/* The entity types. Adding a type is one row: its URL prefix, JSON keys, the fields every
 * entity must carry (the contract's `required` list), and where its boundary code lives. */
const cs_type cs_types[] = {
    /* name, path, bulk array key, single key, search criteria key, search response key,
     * required fields, boundary paths */
    {"household", "/household/v1", "Households", "Household", "Household", "Households",
     "tenantId,memberCount", "address.locality.code"},
    {"household_member", "/household/member/v1", "HouseholdMembers", "HouseholdMember",
     "HouseholdMember", "HouseholdMembers", "tenantId", ""},
    {"individual", "/individual/v1", "Individuals", "Individual", "Individual", "Individual",
     "tenantId", "address.locality.code"},
    {"project_beneficiary", "/project/beneficiary/v1", "ProjectBeneficiaries",
     "ProjectBeneficiary", "ProjectBeneficiary", "ProjectBeneficiaries", "tenantId", ""},
    {"task", "/project/task/v1", "Tasks", "Task", "Task", "Tasks", "tenantId",
     "address.locality.code"},
    {"side_effect", "/referralmanagement/side-effect/v1", "SideEffects", "SideEffect",
     "SideEffect", "SideEffects", "tenantId", ""},
    {"referral", "/referralmanagement/v1", "Referrals", "Referral", "Referral", "Referrals",
     "tenantId", ""},
    {"hf_referral", "/referralmanagement/hf-referral/v1", "HFReferrals", "HFReferral",
     "HFReferral", "HFReferrals", "tenantId", ""},
    {"stock", "/stock/v1", "Stock", "Stock", "Stock", "Stock", "tenantId", ""},
    {"stock_reconciliation", "/stock/reconciliation/v1", "StockReconciliation",
     "StockReconciliation", "StockReconciliation", "StockReconciliation", "tenantId", ""},
};
const size_t cs_n_types = sizeof cs_types / sizeof cs_types[0];

_Static_assert(sizeof cs_types / sizeof cs_types[0] * 7 < CS_STAT_ROUTES_MAX,
               "every entity route can be counted in /_test/stats");

const cs_type *cs_type_find(const char *name)
{
    for (size_t i = 0; i < cs_n_types; i++)
        if (!strcmp(cs_types[i].name, name))
            return &cs_types[i];
    return NULL;
}

static const char *const action_names[] = {"create", "update", "delete"};

const char *cs_action_name(cs_action a)
{
    return action_names[a];
}

int cs_action_parse(const char *s, cs_action *out)
{
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, action_names[i])) {
            *out = (cs_action)i;
            return 0;
        }
    return -1;
}

json_t *cs_response_info(const json_t *ri, const char *api_id_override, bool success)
{
    /* As DIGIT's ResponseInfoFactory: echoes apiId, ver, ts and msgId of the RequestInfo. */
    const json_t *ts = json_object_get(ri, "ts");
    return json_pack("{s:s?, s:s?, s:o?, s:s, s:s?, s:s}", "apiId",
                     api_id_override ? api_id_override : cs_json_str(ri, "apiId"), "ver",
                     cs_json_str(ri, "ver"), "ts", ts ? json_deep_copy(ts) : NULL, "resMsgId",
                     "uief87324", "msgId", cs_json_str(ri, "msgId"), "status",
                     success ? "successful" : "failed");
}

/* ---- Validation of a write's shape (request time) -------------------------------------------- */

const char *cs_entity_check_shape(const cs_type *t, const json_t *e, char *why, size_t why_len)
{
    if (!json_is_object(e)) {
        snprintf(why, why_len, "must be a JSON object");
        return why;
    }
    /* Every required field must be present and not null. */
    const char *p = t->required;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char field[64];
        if (n < sizeof field) {
            memcpy(field, p, n);
            field[n] = 0;
            const json_t *v = json_object_get(e, field);
            if (!v || json_is_null(v)) {
                snprintf(why, why_len, "%s is required", field);
                return why;
            }
        }
        p = comma ? comma + 1 : p + n;
    }
    const json_t *tenant = json_object_get(e, "tenantId");
    if (tenant && (!json_is_string(tenant) || json_string_length(tenant) == 0)) {
        snprintf(why, why_len, "tenantId must be a non-empty string");
        return why;
    }
    static const char *const keys[] = {"id", "clientReferenceId"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(e, keys[i]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_string(v) || json_string_length(v) > CS_KEY_FIELD_BYTES_MAX ||
            memchr(json_string_value(v), 0, json_string_length(v))) {
            snprintf(why, why_len, "%s must be a string of at most %u bytes", keys[i],
                     CS_KEY_FIELD_BYTES_MAX);
            return why;
        }
    }
    const json_t *rv = json_object_get(e, "rowVersion");
    if (rv && !json_is_null(rv) && !json_is_integer(rv)) {
        snprintf(why, why_len, "rowVersion must be an integer");
        return why;
    }
    return NULL;
}

/* ---- Store access ------------------------------------------------------------------------------ */

static int index_get(MDB_txn *txn, MDB_dbi dbi, const cs_type *t, const char *val, uint64_t *seq,
                     bool *found)
{
    uint8_t key[512];
    *found = false;
    size_t kl = cs_store_key(key, sizeof key, t->name, val, strlen(val));
    if (!kl)
        return 0; /* longer than any stored key: cannot exist */
    MDB_val k = {kl, key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    *seq = cs_be64_get(v.mv_data);
    *found = true;
    return 0;
}

static int index_put(MDB_txn *txn, MDB_dbi dbi, const cs_type *t, const char *val, uint64_t seq)
{
    uint8_t key[512], sb[8];
    size_t kl = cs_store_key(key, sizeof key, t->name, val, strlen(val));
    CS_ASSERT(kl); /* lengths were checked at request time */
    cs_be64_put(sb, seq);
    MDB_val k = {kl, key}, v = {8, sb};
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int entity_get(MDB_txn *txn, cs_store *st, const cs_type *t, uint64_t seq, json_t **out)
{
    uint8_t key[64], sb[8];
    cs_be64_put(sb, seq);
    size_t kl = cs_store_key(key, sizeof key, t->name, sb, 8);
    return cs_store_get_json(txn, st->ent, key, kl, out);
}

static int entity_put(MDB_txn *txn, cs_store *st, const cs_type *t, uint64_t seq, const json_t *e)
{
    uint8_t key[64], sb[8];
    cs_be64_put(sb, seq);
    size_t kl = cs_store_key(key, sizeof key, t->name, sb, 8);
    return cs_store_put_json(txn, st->ent, key, kl, e);
}

int cs_entities_scan(MDB_txn *txn, cs_store *st, const cs_type *t, cs_entity_visit *fn, void *arg)
{
    uint8_t prefix[64];
    size_t pl = cs_store_key(prefix, sizeof prefix, t->name, NULL, 0);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->ent, &cur);
    if (rc)
        return rc;
    MDB_val k = {pl, prefix}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == pl + 8 && !memcmp(k.mv_data, prefix, pl)) {
        json_t *e = json_loadb(v.mv_data, v.mv_size, 0, NULL);
        if (!e) {
            rc = MDB_CORRUPTED;
            break;
        }
        bool more = fn(e, arg);
        json_decref(e);
        if (!more)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- Applying one write ------------------------------------------------------------------------ */

static json_t *audit(const char *created_by, json_int_t created_time, const char *modified_by,
                     json_int_t modified_time)
{
    return json_pack("{s:s, s:I, s:s, s:I}", "createdBy", created_by, "createdTime",
                     created_time, "lastModifiedBy", modified_by, "lastModifiedTime",
                     modified_time);
}

static int reject(const char **code, char *message, size_t message_len, const char *c,
                  const char *fmt, ...) CS_PRINTF(5, 6);
static int reject(const char **code, char *message, size_t message_len, const char *c,
                  const char *fmt, ...)
{
    *code = c;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, message_len, fmt, ap);
    va_end(ap);
    return CS_REJECTED;
}

int cs_entity_apply(MDB_txn *txn, cs_store *st, const cs_type *t, cs_action a, const json_t *in,
                    const cs_apply_ctx *ctx, json_t **result, const char **code, char *message,
                    size_t message_len)
{
    if (result)
        *result = NULL;
    const char *crid = cs_json_str(in, "clientReferenceId");
    const char *user = ctx->user_uuid ? ctx->user_uuid : "anonymous";
    json_t *e = NULL;
    int rc;
    bool found;
    uint64_t seq;

    if (a == CS_CREATE) {
        if (crid && *crid) {
            rc = index_get(txn, st->ent_crid, t, crid, &seq, &found);
            if (rc)
                return rc;
            if (found)
                return reject(code, message, message_len, "DUPLICATE_ENTITY",
                              "%s with clientReferenceId %s already exists", t->name, crid);
        }
        char idbuf[37];
        const char *id = ctx->assigned_id;
        if (!id) {
            cs_uuid(idbuf);
            id = idbuf;
        }
        rc = index_get(txn, st->ent_id, t, id, &seq, &found);
        if (rc)
            return rc;
        if (found)
            return reject(code, message, message_len, "DUPLICATE_ENTITY",
                          "%s with id %s already exists", t->name, id);
        e = json_deep_copy(in);
        if (!e)
            return ENOMEM;
        json_object_set_new(e, "id", json_string(id));
        json_object_set_new(e, "rowVersion", json_integer(1));
        json_object_set_new(e, "isDeleted", json_false());
        json_object_set_new(e, "auditDetails", audit(user, ctx->now_ms, user, ctx->now_ms));
        if (!ctx->dry_run) {
            rc = cs_store_counter_add(txn, st, "entity.seq", 1, &seq);
            if (!rc)
                rc = entity_put(txn, st, t, seq, e);
            if (!rc)
                rc = index_put(txn, st->ent_id, t, id, seq);
            if (!rc && crid && *crid)
                rc = index_put(txn, st->ent_crid, t, crid, seq);
            if (rc) {
                json_decref(e);
                return rc;
            }
        }
    } else {
        const char *verb = a == CS_UPDATE ? "update" : "delete";
        const char *id = cs_json_str(in, "id");
        if (!id || !*id)
            return reject(code, message, message_len, "NULL_ID",
                          "id is required to %s a %s (clientReferenceId %s); search by "
                          "clientReferenceId to learn it", verb, t->name, crid ? crid : "-");
        rc = index_get(txn, st->ent_id, t, id, &seq, &found);
        if (rc)
            return rc;
        json_t *stored = NULL;
        if (found) {
            rc = entity_get(txn, st, t, seq, &stored);
            if (rc)
                return rc;
        }
        /* Deleted entities do not exist for update and delete (the services look them up with
         * includeDeleted=false). */
        if (!stored || json_is_true(json_object_get(stored, "isDeleted"))) {
            json_decref(stored);
            return reject(code, message, message_len, "NON_EXISTENT_ENTITY",
                          "%s with id %s does not exist%s", t->name, id,
                          found ? " (it is deleted)" : "");
        }
        if (a == CS_UPDATE && json_is_true(json_object_get(in, "isDeleted"))) {
            json_decref(stored);
            return reject(code, message, message_len, "IS_DELETED_TRUE",
                          "isDeleted cannot be true in an update of %s %s; use _delete", t->name,
                          id);
        }
        json_int_t stored_rv = json_integer_value(json_object_get(stored, "rowVersion"));
        const json_t *rv = json_object_get(in, "rowVersion");
        if (!json_is_integer(rv) || json_integer_value(rv) != stored_rv) {
            json_decref(stored);
            char given[32] = "none";
            if (json_is_integer(rv))
                snprintf(given, sizeof given, "%" JSON_INTEGER_FORMAT, json_integer_value(rv));
            return reject(code, message, message_len, "MISMATCHED_ROW_VERSION",
                          "rowVersion %s does not match the stored rowVersion %" JSON_INTEGER_FORMAT
                          " of %s %s", given, stored_rv, t->name, id);
        }
        const json_t *old_audit = json_object_get(stored, "auditDetails");
        const char *created_by = cs_json_str(old_audit, "createdBy");
        json_int_t created_time = json_integer_value(json_object_get(old_audit, "createdTime"));
        if (a == CS_UPDATE) {
            e = json_deep_copy(in);
            if (!e) {
                json_decref(stored);
                return ENOMEM;
            }
            /* The server keeps identity and creation audit; everything else is replaced. */
            const json_t *old_crid = json_object_get(stored, "clientReferenceId");
            if (old_crid)
                json_object_set_new(e, "clientReferenceId", json_deep_copy(old_crid));
            json_object_set_new(e, "isDeleted", json_false());
        } else {
            /* A delete writes only the audit, rowVersion and isDeleted (see the persisters). */
            e = json_deep_copy(stored);
            if (!e) {
                json_decref(stored);
                return ENOMEM;
            }
            json_object_set_new(e, "isDeleted", json_true());
            const json_t *cad = json_object_get(in, "clientAuditDetails");
            json_t *ecad = json_object_get(e, "clientAuditDetails");
            if (json_is_object(cad) && json_is_object(ecad)) {
                const json_t *lmb = json_object_get(cad, "lastModifiedBy");
                const json_t *lmt = json_object_get(cad, "lastModifiedTime");
                if (lmb)
                    json_object_set_new(ecad, "lastModifiedBy", json_deep_copy(lmb));
                if (lmt)
                    json_object_set_new(ecad, "lastModifiedTime", json_deep_copy(lmt));
            }
        }
        json_object_set_new(e, "id", json_string(id));
        json_object_set_new(e, "rowVersion", json_integer(stored_rv + 1));
        json_object_set_new(e, "auditDetails", audit(created_by ? created_by : user,
                                                     created_time, user, ctx->now_ms));
        json_decref(stored);
        if (!ctx->dry_run) {
            rc = entity_put(txn, st, t, seq, e);
            if (rc) {
                json_decref(e);
                return rc;
            }
        }
    }
    if (result)
        *result = e;
    else
        json_decref(e);
    return 0;
}

int cs_errors_record(MDB_txn *txn, cs_store *st, json_t *record)
{
    uint64_t seq;
    int rc = cs_store_counter_add(txn, st, "errors.seq", 1, &seq);
    if (!rc) {
        uint8_t key[8];
        cs_be64_put(key, seq);
        json_object_set_new(record, "seq", json_integer((json_int_t)seq));
        rc = cs_store_put_json(txn, st->errors, key, 8, record);
    }
    json_decref(record);
    return rc;
}

int cs_entities_apply_item(MDB_txn *txn, cs_server *srv, const json_t *item, uint64_t qseq)
{
    const cs_type *t = cs_type_find(cs_json_str(item, "type"));
    cs_action a;
    if (!t || cs_action_parse(cs_json_str(item, "action"), &a) != 0)
        return MDB_CORRUPTED;
    const char *source = cs_json_str(item, "source");
    bool single = source && !strcmp(source, "single");
    cs_apply_ctx ctx = {
        .user_uuid = cs_json_str(item, "user"),
        /* A single write answered with its enriched entity; apply exactly that. */
        .now_ms = single ? json_integer_value(json_object_get(item, "requestTime")) : cs_now_ms(),
        .assigned_id = single ? cs_json_str(item, "assignedId") : NULL,
    };
    const json_t *entities = json_object_get(item, "entities");
    size_t i;
    const json_t *in;
    uint64_t applied = 0, rejected = 0;
    json_array_foreach(entities, i, in) {
        const char *code = NULL;
        char message[512];
        int rc = cs_entity_apply(txn, &srv->store, t, a, in, &ctx, NULL, &code, message,
                                 sizeof message);
        if (rc == 0) {
            applied++;
            continue;
        }
        if (rc != CS_REJECTED)
            return rc;
        rejected++;
        json_t *rec = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s?, s:s?, s:s, s:s, s:I}", "type",
                                t->name, "action", cs_action_name(a), "source",
                                source ? source : "bulk", "queueSeq", (json_int_t)qseq, "index",
                                (json_int_t)i, "clientReferenceId",
                                cs_json_str(in, "clientReferenceId"), "id", cs_json_str(in, "id"),
                                "code", code, "message", message, "time", cs_now_ms());
        if (cs_log_verbose)
            cs_log("info", "rejected %s %s: %s: %s", t->name, cs_action_name(a), code, message);
        rc = rec ? cs_errors_record(txn, &srv->store, rec) : ENOMEM;
        if (rc)
            return rc;
    }
    int rc = cs_store_counter_add(txn, &srv->store, "writes.applied", applied, NULL);
    if (!rc)
        rc = cs_store_counter_add(txn, &srv->store, "writes.rejected", rejected, NULL);
    return rc;
}

/* ---- Handlers ----------------------------------------------------------------------------------- */

enum { OP_CREATE, OP_UPDATE, OP_DELETE, OP_BULK_CREATE, OP_BULK_UPDATE, OP_BULK_DELETE, OP_SEARCH,
       OP_COUNT };
static const char *const op_suffix[OP_COUNT] = {"/_create", "/_update", "/_delete",
                                                "/bulk/_create", "/bulk/_update",
                                                "/bulk/_delete", "/_search"};

/* Parses the body, requires RequestInfo, checks the token. Returns the body or NULL (rs set). */
static json_t *open_envelope(cs_server *srv, const cs_req *rq, cs_resp *rs, const json_t **ri,
                             cs_principal *who)
{
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST only", rq->path);
        return NULL;
    }
    json_t *body = cs_req_json(rq, rs);
    if (!body)
        return NULL;
    *ri = json_object_get(body, "RequestInfo");
    if (!json_is_object(*ri)) {
        json_decref(body);
        cs_resp_error(rs, 400, "MISSING_REQUEST_INFO", "RequestInfo is required: send "
                      "{\"RequestInfo\": {\"authToken\": ...}, ...}");
        return NULL;
    }
    if (!cs_auth_check(srv, rq, *ri, rs, who)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

static void count_dropped(cs_server *srv, size_t n)
{
    pthread_mutex_lock(&srv->stats.mu);
    srv->stats.faults_dropped++;
    pthread_mutex_unlock(&srv->stats.mu);
    MDB_txn *txn;
    if (cs_store_begin(&srv->store, true, &txn) == 0) {
        if (cs_store_counter_add(txn, &srv->store, "writes.dropped", n, NULL) == 0)
            mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
}

/* Queues a write; returns 0 or sets an error response. */
static int enqueue(cs_server *srv, cs_resp *rs, json_t *item, size_t n)
{
    int64_t now = cs_now_ms();
    json_object_set_new(item, "receivedTime", json_integer(now));
    json_object_set_new(item, "dueTime", json_integer(now + srv->cfg.process_delay_ms));
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, true, &txn);
    if (!rc) {
        rc = cs_queue_put(txn, srv, item, NULL);
        item = NULL;
        if (!rc)
            rc = cs_store_counter_add(txn, &srv->store, "writes.accepted", n, NULL);
        if (!rc)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    json_decref(item);
    if (rc) {
        cs_resp_store_error(rs, rc, "queueing the write");
        return -1;
    }
    cs_queue_kick(srv);
    return 0;
}

static void handle_bulk(cs_server *srv, const cs_req *rq, cs_resp *rs, const cs_type *t,
                        cs_action a)
{
    const json_t *ri;
    cs_principal who;
    json_t *body = open_envelope(srv, rq, rs, &ri, &who);
    if (!body)
        return;
    json_t *arr = json_object_get(body, t->array_key);
    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > CS_BULK_ENTITIES_MAX) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "%s must be an array of 1 to %u %s objects",
                      t->array_key, CS_BULK_ENTITIES_MAX, t->name);
        json_decref(body);
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        char why[256];
        if (cs_entity_check_shape(t, e, why, sizeof why)) {
            cs_resp_error(rs, 400, "INVALID_REQUEST", "%s[%zu]: %s", t->array_key, i, why);
            json_decref(body);
            return;
        }
    }
    size_t n = json_array_size(arr);
    if (rq->fault_drop) {
        count_dropped(srv, n);
    } else {
        json_t *item = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "kind", "entities", "type",
                                 t->name, "action", cs_action_name(a), "source", "bulk", "user",
                                 who.uuid, "entities", arr);
        if (!item || enqueue(srv, rs, item, n) != 0) {
            if (!item)
                cs_resp_error(rs, 500, "INTERNAL_ERROR", "out of memory");
            json_decref(body);
            return;
        }
    }
    /* The bulk controllers answer with a bare ResponseInfo whose apiId is the request URI. */
    cs_resp_json(rs, 202, cs_response_info(ri, rq->path, true));
    json_decref(body);
}

static void handle_single(cs_server *srv, const cs_req *rq, cs_resp *rs, const cs_type *t,
                          cs_action a)
{
    const json_t *ri;
    cs_principal who;
    json_t *body = open_envelope(srv, rq, rs, &ri, &who);
    if (!body)
        return;
    json_t *e = json_object_get(body, t->single_key);
    char why[256];
    if (!e || cs_entity_check_shape(t, e, why, sizeof why)) {
        if (!e)
            snprintf(why, sizeof why, "is required");
        cs_resp_error(rs, 400, "INVALID_REQUEST", "%s: %s", t->single_key, why);
        json_decref(body);
        return;
    }
    /* The single endpoints validate and enrich synchronously (errors come back as 400) and
     * persist asynchronously: compute the result now, apply the same write later. */
    char assigned[37];
    cs_uuid(assigned);
    cs_apply_ctx ctx = {.user_uuid = who.uuid, .now_ms = cs_now_ms(),
                        .assigned_id = a == CS_CREATE ? assigned : NULL, .dry_run = true};
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "reading entities");
        json_decref(body);
        return;
    }
    json_t *result = NULL;
    const char *code = NULL;
    char message[512];
    rc = cs_entity_apply(txn, &srv->store, t, a, e, &ctx, &result, &code, message,
                         sizeof message);
    mdb_txn_abort(txn);
    if (rc == CS_REJECTED) {
        cs_resp_error(rs, 400, code, "%s", message);
        json_decref(body);
        return;
    }
    if (rc) {
        cs_resp_store_error(rs, rc, "validating the write");
        json_decref(body);
        return;
    }
    if (rq->fault_drop) {
        count_dropped(srv, 1);
    } else {
        json_t *item = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:I, s:[O]}", "kind",
                                 "entities", "type", t->name, "action", cs_action_name(a),
                                 "source", "single", "user", who.uuid, "assignedId",
                                 a == CS_CREATE ? assigned : NULL, "requestTime", ctx.now_ms,
                                 "entities", e);
        if (!item || enqueue(srv, rs, item, 1) != 0) {
            if (!item)
                cs_resp_error(rs, 500, "INTERNAL_ERROR", "out of memory");
            json_decref(result);
            json_decref(body);
            return;
        }
    }
    json_t *resp = json_object();
    json_object_set_new(resp, "ResponseInfo", cs_response_info(ri, NULL, true));
    json_object_set_new(resp, t->single_key, result);
    cs_resp_json(rs, 202, resp);
    json_decref(body);
}

/* ---- Search ------------------------------------------------------------------------------------- */

typedef struct search {
    const cs_type *t;
    const json_t *criteria;
    const char *tenant;
    bool include_deleted;
    bool since_set;
    int64_t since;
    int64_t limit, offset;
    int64_t total;
    json_t *page;
} search;

static bool scalar_in(const json_t *v, const json_t *list)
{
    if (!v)
        return false;
    if (!json_is_array(list))
        return json_equal(v, list);
    size_t i;
    const json_t *x;
    json_array_foreach(list, i, x)
        if (json_equal(v, x))
            return true;
    return false;
}

static const char *entity_boundary(const cs_type *t, const json_t *e)
{
    const char *p = t->boundary;
    char path[128];
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n < sizeof path) {
            memcpy(path, p, n);
            path[n] = 0;
            const json_t *v = cs_json_path(e, path);
            if (json_is_string(v))
                return json_string_value(v);
        }
        p = comma ? comma + 1 : p + n;
    }
    return NULL;
}

const char *cs_entity_boundary(const cs_type *t, const json_t *e)
{
    return entity_boundary(t, e);
}

static bool matches(const search *s, const json_t *e)
{
    const char *tenant = cs_json_str(e, "tenantId");
    if (!tenant || strcmp(tenant, s->tenant) != 0)
        return false;
    if (!s->include_deleted && json_is_true(json_object_get(e, "isDeleted")))
        return false;
    if (s->since_set) {
        const json_t *lm = cs_json_path(e, "auditDetails.lastModifiedTime");
        if (!json_is_integer(lm) || json_integer_value(lm) < s->since)
            return false;
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)s->criteria, key, val) {
        if (json_is_null(val) || json_is_object(val))
            continue;
        if (json_is_array(val) && json_array_size(val) == 0)
            continue;
        if (!strcmp(key, "boundaryCode")) {
            const char *b = entity_boundary(s->t, e);
            if (!json_is_string(val) || !b || strcmp(b, json_string_value(val)) != 0)
                return false;
            continue;
        }
        /* Geographic search is not implemented: these criteria do not filter. */
        if (!strcmp(key, "latitude") || !strcmp(key, "longitude") ||
            !strcmp(key, "searchRadius"))
            continue;
        if (!scalar_in(json_object_get(e, key), val))
            return false;
    }
    return true;
}

static void consider(search *s, json_t *e)
{
    if (!matches(s, e))
        return;
    if (s->total >= s->offset && s->total < s->offset + s->limit)
        json_array_append(s->page, e);
    s->total++;
}

static bool visit_search(const json_t *e, void *arg)
{
    consider(arg, (json_t *)e);
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool criteria_list(const json_t *criteria, const char *key, const json_t **out,
                          cs_resp *rs, const char *search_key)
{
    *out = NULL;
    const json_t *v = json_object_get(criteria, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_array(v) || json_array_size(v) > CS_CRITERIA_VALUES_MAX) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "%s.%s must be an array of at most %u strings",
                      search_key, key, CS_CRITERIA_VALUES_MAX);
        return false;
    }
    size_t i;
    const json_t *x;
    json_array_foreach(v, i, x)
        if (!json_is_string(x)) {
            cs_resp_error(rs, 400, "INVALID_REQUEST", "%s.%s[%zu] must be a string", search_key,
                          key, i);
            return false;
        }
    if (json_array_size(v))
        *out = v;
    return true;
}

static void handle_search(cs_server *srv, const cs_req *rq, cs_resp *rs, const cs_type *t)
{
    const json_t *ri;
    cs_principal who;
    json_t *body = open_envelope(srv, rq, rs, &ri, &who);
    if (!body)
        return;
    search s = {.t = t};
    /* limit, offset and tenantId are required query parameters in the real controllers. */
    const char *limit = cs_req_query(rq, "limit"), *offset = cs_req_query(rq, "offset");
    const char *inc = cs_req_query(rq, "includeDeleted");
    const char *since = cs_req_query(rq, "lastChangedSince");
    s.tenant = cs_req_query(rq, "tenantId");
    const char *bad = NULL;
    if (cs_parse_i64(limit, 0, CS_SEARCH_LIMIT_MAX, &s.limit) != 0)
        bad = "limit is required, an integer from 0 to 1000";
    else if (cs_parse_i64(offset, 0, INT32_MAX, &s.offset) != 0)
        bad = "offset is required, a non-negative integer";
    else if (!s.tenant || !*s.tenant)
        bad = "tenantId is required";
    else if (inc && cs_parse_bool(inc, &s.include_deleted) != 0)
        bad = "includeDeleted must be true or false";
    else if (since && cs_parse_i64(since, 0, INT64_MAX, &s.since) != 0)
        bad = "lastChangedSince must be epoch milliseconds";
    if (bad) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "%s", bad);
        json_decref(body);
        return;
    }
    s.since_set = since != NULL;
    json_t *empty = json_object();
    s.criteria = json_object_get(body, t->search_key);
    if (!s.criteria || json_is_null(s.criteria))
        s.criteria = empty;
    const json_t *ids, *crids;
    if (!json_is_object(s.criteria)) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "%s must be an object of search criteria",
                      t->search_key);
        goto out;
    }
    if (!criteria_list(s.criteria, "id", &ids, rs, t->search_key) ||
        !criteria_list(s.criteria, "clientReferenceId", &crids, rs, t->search_key))
        goto out;

    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "searching entities");
        goto out;
    }
    s.page = json_array();
    if (ids || crids) {
        /* Index lookups, then creation order. */
        const json_t *list = crids ? crids : ids;
        MDB_dbi dbi = crids ? srv->store.ent_crid : srv->store.ent_id;
        size_t n = json_array_size(list), m = 0;
        uint64_t *seqs = malloc((n ? n : 1) * sizeof *seqs);
        for (size_t i = 0; seqs && i < n && !rc; i++) {
            bool found;
            rc = index_get(txn, dbi, t, json_string_value(json_array_get(list, i)), &seqs[m],
                           &found);
            m += found;
        }
        if (!seqs)
            rc = ENOMEM;
        if (!rc) {
            qsort(seqs, m, sizeof *seqs, cmp_u64);
            for (size_t i = 0; i < m && !rc; i++) {
                if (i && seqs[i] == seqs[i - 1])
                    continue;
                json_t *e = NULL;
                rc = entity_get(txn, &srv->store, t, seqs[i], &e);
                if (!rc && e)
                    consider(&s, e);
                json_decref(e);
            }
        }
        free(seqs);
    } else {
        rc = cs_entities_scan(txn, &srv->store, t, visit_search, &s);
    }
    mdb_txn_abort(txn);
    if (rc) {
        json_decref(s.page);
        cs_resp_store_error(rs, rc, "searching entities");
        goto out;
    }
    json_t *resp = json_object();
    json_object_set_new(resp, "ResponseInfo", cs_response_info(ri, NULL, true));
    json_object_set_new(resp, t->response_key, s.page);
    json_object_set_new(resp, "TotalCount", json_integer(s.total));
    cs_resp_json(rs, 200, resp);
out:
    json_decref(empty);
    json_decref(body);
}

static void handle_entity(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    uintptr_t code = (uintptr_t)arg;
    const cs_type *t = &cs_types[code / OP_COUNT];
    int op = (int)(code % OP_COUNT);
    switch (op) {
    case OP_CREATE: handle_single(srv, rq, rs, t, CS_CREATE); break;
    case OP_UPDATE: handle_single(srv, rq, rs, t, CS_UPDATE); break;
    case OP_DELETE: handle_single(srv, rq, rs, t, CS_DELETE); break;
    case OP_BULK_CREATE: handle_bulk(srv, rq, rs, t, CS_CREATE); break;
    case OP_BULK_UPDATE: handle_bulk(srv, rq, rs, t, CS_UPDATE); break;
    case OP_BULK_DELETE: handle_bulk(srv, rq, rs, t, CS_DELETE); break;
    default: handle_search(srv, rq, rs, t); break;
    }
}

bool cs_entities_route(const char *path, cs_route *route)
{
    for (size_t i = 0; i < cs_n_types; i++) {
        size_t pl = strlen(cs_types[i].path);
        if (strncmp(path, cs_types[i].path, pl) != 0)
            continue;
        for (int op = 0; op < OP_COUNT; op++) {
            if (strcmp(path + pl, op_suffix[op]) != 0)
                continue;
            route->fn = handle_entity;
            route->arg = (const void *)(uintptr_t)(i * OP_COUNT + (size_t)op);
            route->is_write = op != OP_SEARCH;
            snprintf(route->name, sizeof route->name, "%s", path);
            return true;
        }
    }
    return false;
}
