/*
 * testapi.c - endpoints for tests and the simulator, under /_test/ (disabled by
 * --no-test-endpoints, never subject to fault injection):
 *   GET  /_test/stats                 requests by route and status class, faults, writes
 *   GET  /_test/errors?type=&code=&clientReferenceId=&syncId=&limit=
 *                                     the error log of rejected writes (not returned to callers)
 *   GET  /_test/entities?type=&includeDeleted=&limit=
 *                                     every stored entity of a type, in creation order
 *   POST /_test/flush                 apply every queued write now, ignoring the delay
 *   POST /_test/faults                change fault rates at run time: {"failRate", "slowRate",
 *                                     "slowMs", "dropWrites"} (omitted keys keep their value)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign.h"

static void handle_stats(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)rq;
    (void)arg;
    json_t *routes = json_object();
    cs_stats *s = &srv->stats;
    pthread_mutex_lock(&s->mu);
    for (unsigned i = 0; i < s->n_routes; i++)
        json_object_set_new(routes, s->route[i], json_integer((json_int_t)s->route_count[i]));
    json_t *req = json_pack("{s:I, s:o, s:{s:I, s:I, s:I, s:I}}", "total",
                            (json_int_t)s->requests_total, "byRoute", routes, "byStatus", "2xx",
                            (json_int_t)s->by_class[2], "3xx", (json_int_t)s->by_class[3], "4xx",
                            (json_int_t)s->by_class[4], "5xx", (json_int_t)s->by_class[5]);
    json_t *faults = json_pack("{s:I, s:I, s:I}", "failed", (json_int_t)s->faults_failed,
                               "slowed", (json_int_t)s->faults_slowed, "droppedRequests",
                               (json_int_t)s->faults_dropped);
    pthread_mutex_unlock(&s->mu);

    MDB_txn *txn;
    uint64_t accepted = 0, applied = 0, rejected = 0, dropped = 0;
    MDB_stat qs = {0};
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (!rc) {
        rc = cs_store_counter_get(txn, &srv->store, "writes.accepted", &accepted);
        if (!rc)
            rc = cs_store_counter_get(txn, &srv->store, "writes.applied", &applied);
        if (!rc)
            rc = cs_store_counter_get(txn, &srv->store, "writes.rejected", &rejected);
        if (!rc)
            rc = cs_store_counter_get(txn, &srv->store, "writes.dropped", &dropped);
        if (!rc)
            rc = mdb_stat(txn, srv->store.queue, &qs);
        mdb_txn_abort(txn);
    }
    if (rc) {
        json_decref(req);
        json_decref(faults);
        cs_resp_store_error(rs, rc, "reading stats");
        return;
    }
    /* Write counters count entities (or sync file entries) and persist across restarts; request
     * and fault counters count HTTP requests since this process started. */
    json_t *writes = json_pack("{s:I, s:I, s:I, s:I, s:I}", "accepted", (json_int_t)accepted,
                               "applied", (json_int_t)applied, "rejected", (json_int_t)rejected,
                               "dropped", (json_int_t)dropped, "queuedRequests",
                               (json_int_t)qs.ms_entries);
    cs_resp_json(rs, 200, json_pack("{s:o, s:o, s:o}", "requests", req, "faults", faults,
                                    "writes", writes));
}

static bool opt_match(const char *want, const char *have)
{
    return !want || (have && !strcmp(want, have));
}

static void handle_errors(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    const char *type = cs_req_query(rq, "type"), *code = cs_req_query(rq, "code");
    const char *crid = cs_req_query(rq, "clientReferenceId");
    const char *sync = cs_req_query(rq, "syncId");
    int64_t limit = CS_TEST_LIST_MAX;
    const char *l = cs_req_query(rq, "limit");
    if (l && cs_parse_i64(l, 0, CS_TEST_LIST_MAX, &limit) != 0) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "limit must be 0..%u", CS_TEST_LIST_MAX);
        return;
    }
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "reading the error log");
        return;
    }
    rc = mdb_cursor_open(txn, srv->store.errors, &cur);
    json_t *list = json_array();
    MDB_val k, v;
    if (!rc)
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (!rc && (int64_t)json_array_size(list) < limit) {
        json_t *e = json_loadb(v.mv_data, v.mv_size, 0, NULL);
        if (e && opt_match(type, cs_json_str(e, "type")) && opt_match(code, cs_json_str(e, "code"))
            && opt_match(crid, cs_json_str(e, "clientReferenceId")) &&
            opt_match(sync, cs_json_str(e, "syncId")))
            json_array_append_new(list, e);
        else
            json_decref(e);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (cur)
        mdb_cursor_close(cur); /* read-only transactions do not free their cursors */
    mdb_txn_abort(txn);
    if (rc && rc != MDB_NOTFOUND) {
        json_decref(list);
        cs_resp_store_error(rs, rc, "reading the error log");
        return;
    }
    size_t n = json_array_size(list);
    cs_resp_json(rs, 200, json_pack("{s:o, s:I}", "errors", list, "count", (json_int_t)n));
}

typedef struct dump {
    json_t *list;
    bool include_deleted;
    int64_t limit;
} dump;

static bool visit_dump(const json_t *e, void *arg)
{
    dump *d = arg;
    if (!d->include_deleted && json_is_true(json_object_get(e, "isDeleted")))
        return true;
    json_array_append_new(d->list, json_deep_copy(e));
    return (int64_t)json_array_size(d->list) < d->limit;
}

static void handle_entities(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    const char *type = cs_req_query(rq, "type");
    const cs_type *t = type ? cs_type_find(type) : NULL;
    dump d = {.include_deleted = true, .limit = CS_TEST_LIST_MAX};
    const char *inc = cs_req_query(rq, "includeDeleted"), *l = cs_req_query(rq, "limit");
    if (!t || (inc && cs_parse_bool(inc, &d.include_deleted) != 0) ||
        (l && cs_parse_i64(l, 1, CS_TEST_LIST_MAX, &d.limit) != 0)) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "type must be an entity type (household, "
                      "individual, ...); includeDeleted true|false (default true); limit 1..%u",
                      CS_TEST_LIST_MAX);
        return;
    }
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "reading entities");
        return;
    }
    d.list = json_array();
    rc = cs_entities_scan(txn, &srv->store, t, visit_dump, &d);
    mdb_txn_abort(txn);
    if (rc) {
        json_decref(d.list);
        cs_resp_store_error(rs, rc, "reading entities");
        return;
    }
    size_t n = json_array_size(d.list);
    cs_resp_json(rs, 200, json_pack("{s:s, s:o, s:I}", "type", t->name, "entities", d.list,
                                    "count", (json_int_t)n));
}

static void handle_flush(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "/_test/flush accepts POST only");
        return;
    }
    long n = cs_queue_flush(srv);
    if (n < 0) {
        cs_resp_error(rs, 500, "STORE_ERROR", "applying queued writes failed (see the log)");
        return;
    }
    cs_resp_json(rs, 200, json_pack("{s:I}", "appliedRequests", (json_int_t)n));
}

static void handle_faults(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    cs_faults *f = &srv->faults;
    if (!strcmp(rq->method, "POST")) {
        json_t *body = cs_req_json(rq, rs);
        if (!body)
            return;
        static const char *const rates[] = {"failRate", "slowRate", "dropWrites"};
        double vals[3];
        pthread_mutex_lock(&f->mu);
        vals[0] = f->fail_rate;
        vals[1] = f->slow_rate;
        vals[2] = f->drop_rate;
        uint32_t slow_ms = f->slow_ms;
        pthread_mutex_unlock(&f->mu);
        for (int i = 0; i < 3; i++) {
            const json_t *v = json_object_get(body, rates[i]);
            if (!v)
                continue;
            if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
                json_decref(body);
                cs_resp_error(rs, 400, "INVALID_REQUEST", "%s must be a number in [0, 1]",
                              rates[i]);
                return;
            }
            vals[i] = json_number_value(v);
        }
        const json_t *ms = json_object_get(body, "slowMs");
        if (ms) {
            if (!json_is_integer(ms) || json_integer_value(ms) < 0 ||
                json_integer_value(ms) > CS_SLOW_MS_MAX) {
                json_decref(body);
                cs_resp_error(rs, 400, "INVALID_REQUEST", "slowMs must be 0..%u",
                              CS_SLOW_MS_MAX);
                return;
            }
            slow_ms = (uint32_t)json_integer_value(ms);
        }
        json_decref(body);
        pthread_mutex_lock(&f->mu);
        f->fail_rate = vals[0];
        f->slow_rate = vals[1];
        f->drop_rate = vals[2];
        f->slow_ms = slow_ms;
        pthread_mutex_unlock(&f->mu);
    }
    pthread_mutex_lock(&f->mu);
    json_t *cur = json_pack("{s:f, s:f, s:I, s:f}", "failRate", f->fail_rate, "slowRate",
                            f->slow_rate, "slowMs", (json_int_t)f->slow_ms, "dropWrites",
                            f->drop_rate);
    pthread_mutex_unlock(&f->mu);
    cs_resp_json(rs, 200, cur);
}

bool cs_test_route(const char *path, cs_route *route)
{
    if (!strcmp(path, "/_test/stats"))
        route->fn = handle_stats;
    else if (!strcmp(path, "/_test/errors"))
        route->fn = handle_errors;
    else if (!strcmp(path, "/_test/entities"))
        route->fn = handle_entities;
    else if (!strcmp(path, "/_test/flush"))
        route->fn = handle_flush;
    else if (!strcmp(path, "/_test/faults"))
        route->fn = handle_faults;
    else
        return false;
    snprintf(route->name, sizeof route->name, "%s", path);
    return true;
}
