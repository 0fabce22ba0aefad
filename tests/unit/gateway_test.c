/*
 * gateway_test.c - the gateway's sans-IO core (lib/gateway/gateway.h) alone, driven on a virtual
 * clock against a scripted in-memory campaign service: parents before children and each
 * entity's ops in order, batching per (type, action), retries with backoff from an injected
 * time and seed (and the same seed giving the same schedule), confirming by search after a
 * crash (a new core made from the persisted store) without sending anything twice, rejections
 * that do not block other entities, the exactly-once decisions for lost responses, dropped
 * writes and duplicates, a late concurrent op re-asserting the mesh's winner, deletes, and
 * receipts readable through the public API. Real LMDB stores, no sockets.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/node_int.h"
#include "gateway/gateway.h"
#include "testlib.h"

/* ---- A scripted campaign service ------------------------------------------------------------ */

typedef struct fake_req {
    uint64_t at;
    char method[8];
    char path[512];
    json_t *body;
} fake_req;

typedef struct fake {
    json_t *ents;             /* "<type>/<crid>" -> stored entity */
    int next_id;
    /* Faults, consumed in order. */
    int fail_writes;          /* the next N write requests answer 503 (not processed) */
    int lose_write_responses; /* the next N write requests are processed, but time out */
    int drop_writes;          /* the next N write requests answer 202 and are not applied */
    int fail_searches;        /* the next N searches answer 500 */
    /* Writes are applied this long after they are accepted (0: at once). */
    uint64_t apply_delay;
    json_t *queue;            /* [{due, type, action, entities}] */
    fake_req reqs[4096];
    size_t nreqs;
    int creates_applied, duplicates, mismatches;
} fake;

static void fake_init(fake *f)
{
    memset(f, 0, sizeof *f);
    f->ents = json_object();
    f->queue = json_array();
}

static void fake_fini(fake *f)
{
    json_decref(f->ents);
    json_decref(f->queue);
    for (size_t i = 0; i < f->nreqs; i++) json_decref(f->reqs[i].body);
}

static const char *const TYPES[][2] = {
    {"/household/v1", "household"},       {"/household/member/v1", "household_member"},
    {"/individual/v1", "individual"},     {"/project/beneficiary/v1", "project_beneficiary"},
    {"/project/task/v1", "task"},
};

static const char *type_of_path(const char *path, const char **rest)
{
    const char *best = NULL;
    size_t bl = 0;
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) {
        size_t l = strlen(TYPES[i][0]);
        if (strncmp(path, TYPES[i][0], l) == 0 && l > bl && (path[l] == '/')) {
            best = TYPES[i][1];
            bl = l;
        }
    }
    *rest = path + bl;
    return best;
}

/* The service's write rules (ValidatorUtils): returns NULL or the error code. */
static const char *fake_apply(fake *f, const char *type, const char *action, json_t *e)
{
    const char *crid = json_string_value(json_object_get(e, "clientReferenceId"));
    char key[160];
    snprintf(key, sizeof key, "%s/%s", type, crid ? crid : "");
    json_t *cur = json_object_get(f->ents, key);
    if (strcmp(action, "create") == 0) {
        if (cur) {
            f->duplicates++;
            return "DUPLICATE_ENTITY";
        }
        json_t *n = json_deep_copy(e);
        char id[32];
        snprintf(id, sizeof id, "srv-%d", ++f->next_id);
        json_object_set_new(n, "id", json_string(id));
        json_object_set_new(n, "rowVersion", json_integer(1));
        json_object_set_new(n, "isDeleted", json_false());
        json_object_set_new(f->ents, key, n);
        f->creates_applied++;
        return NULL;
    }
    if (cur == NULL || json_is_true(json_object_get(cur, "isDeleted"))) return "NON_EXISTENT_ENTITY";
    if (json_integer_value(json_object_get(e, "rowVersion")) !=
        json_integer_value(json_object_get(cur, "rowVersion"))) {
        f->mismatches++;
        return "MISMATCHED_ROW_VERSION";
    }
    json_int_t rv = json_integer_value(json_object_get(cur, "rowVersion")) + 1;
    if (strcmp(action, "update") == 0) {
        json_t *n = json_deep_copy(e);
        json_object_set_new(n, "rowVersion", json_integer(rv));
        json_object_set_new(n, "isDeleted", json_false());
        json_object_set_new(f->ents, key, n);
    } else {
        json_object_set_new(cur, "rowVersion", json_integer(rv));
        json_object_set_new(cur, "isDeleted", json_true());
    }
    return NULL;
}

static void fake_run_queue(fake *f, uint64_t now)
{
    size_t i = 0;
    while (i < json_array_size(f->queue)) {
        json_t *q = json_array_get(f->queue, i);
        if ((uint64_t)json_integer_value(json_object_get(q, "due")) > now) break;
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(q, "entities"), k, e)
            fake_apply(f, json_string_value(json_object_get(q, "type")),
                       json_string_value(json_object_get(q, "action")), e);
        json_array_remove(f->queue, i);
    }
}

static bool required_ok(const char *type, json_t *e)
{
    if (!json_is_string(json_object_get(e, "tenantId"))) return false;
    if (strcmp(type, "household") == 0 && !json_is_integer(json_object_get(e, "memberCount")))
        return false;
    return true;
}

/* Answers one request: *status (0: no answer, as a timeout) and *body (malloc'd). */
static void fake_handle(fake *f, const mesh_gw_request *rq, uint64_t now, int *status, char **out)
{
    fake_run_queue(f, now);
    json_t *body = rq->body_len ? json_loadb((const char *)rq->body, rq->body_len, 0, NULL) : NULL;
    if (f->nreqs < sizeof f->reqs / sizeof f->reqs[0]) {
        fake_req *r = &f->reqs[f->nreqs++];
        r->at = now;
        snprintf(r->method, sizeof r->method, "%s", rq->method);
        snprintf(r->path, sizeof r->path, "%s", rq->path);
        r->body = json_incref(body);
    }
    *status = 200;
    json_t *ans = NULL;
    if (strcmp(rq->path, "/user/oauth/token") == 0) {
        ans = json_pack("{s:s, s:i, s:{s:s, s:s, s:s, s:[]}}", "access_token", "tok-1", "expires_in",
                        604800, "UserRequest", "userName", "gateway", "uuid", "u-1", "tenantId",
                        "mz", "roles");
        goto done;
    }
    const char *rest;
    const char *type = type_of_path(rq->path, &rest);
    cr_assert_not_null(type, "unexpected path %s", rq->path);
    cr_assert_not_null(body, "%s: body is not JSON", rq->path);
    cr_assert(json_is_object(json_object_get(body, "RequestInfo")), "%s lacks RequestInfo",
              rq->path);
    if (strncmp(rest, "/_search?", 9) == 0) {
        if (f->fail_searches > 0) {
            f->fail_searches--;
            *status = 500;
            goto done;
        }
        json_t *crit = NULL;
        const char *k;
        json_t *v;
        json_object_foreach(body, k, v) if (strcmp(k, "RequestInfo") != 0) crit = v;
        json_t *arr = json_array();
        size_t i;
        json_t *id;
        json_array_foreach(json_object_get(crit, "clientReferenceId"), i, id) {
            char key[160];
            snprintf(key, sizeof key, "%s/%s", type, json_string_value(id));
            json_t *e = json_object_get(f->ents, key);
            if (e) json_array_append(arr, e);
        }
        /* The individual service answers under "Individual" (SOURCE.md). */
        const char *rk = strcmp(type, "individual") == 0 ? "Individual"
                         : strcmp(type, "household") == 0 ? "Households"
                         : strcmp(type, "household_member") == 0 ? "HouseholdMembers"
                         : strcmp(type, "task") == 0 ? "Tasks" : "ProjectBeneficiaries";
        ans = json_pack("{s:{}, s:o, s:i}", "ResponseInfo", rk, arr, "TotalCount",
                        (int)json_array_size(arr));
        goto done;
    }
    bool bulk = strncmp(rest, "/bulk/", 6) == 0;
    const char *action = strrchr(rest, '_') + 1;
    if (f->fail_writes > 0) {
        f->fail_writes--;
        *status = 503;
        goto done;
    }
    json_t *ents = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "RequestInfo") == 0) continue;
        if (bulk) json_array_extend(ents, v);
        else json_array_append(ents, v);
    }
    size_t i;
    json_t *e;
    json_array_foreach(ents, i, e) if (!required_ok(type, e)) {
        /* Bean validation refuses the whole request. */
        *status = 400;
        ans = json_pack("{s:[{s:s, s:s}]}", "Errors", "code", "INVALID_REQUEST", "message",
                        "memberCount is required");
        json_decref(ents);
        goto done;
    }
    if (!bulk) {
        /* Single endpoints validate against the stored state synchronously. */
        json_t *copy = json_deep_copy(f->ents);
        int c = f->creates_applied, d = f->duplicates, m = f->mismatches;
        const char *err = fake_apply(f, type, action, json_array_get(ents, 0));
        json_decref(f->ents);
        f->ents = copy;
        f->creates_applied = c;
        f->duplicates = d;
        f->mismatches = m;
        if (err) {
            *status = 400;
            ans = json_pack("{s:[{s:s, s:s}]}", "Errors", "code", err, "message", "rule");
            json_decref(ents);
            goto done;
        }
    }
    if (f->drop_writes > 0) {
        f->drop_writes--;
    } else {
        json_array_append_new(f->queue, json_pack("{s:I, s:s, s:s, s:O}", "due",
                                                  (json_int_t)(now + f->apply_delay), "type",
                                                  type, "action", action, "entities", ents));
    }
    json_decref(ents);
    fake_run_queue(f, now);
    *status = 202;
    if (f->lose_write_responses > 0) {
        f->lose_write_responses--;
        *status = 0;
    }
done:
    json_decref(body);
    *out = ans ? json_dumps(ans, JSON_COMPACT) : strdup("{}");
    json_decref(ans);
}

static json_t *fake_get(fake *f, const char *type, const char *crid)
{
    char key[160];
    snprintf(key, sizeof key, "%s/%s", type, crid);
    return json_object_get(f->ents, key);
}

static size_t fake_count(const fake *f, const char *path_prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nreqs; i++)
        n += strncmp(f->reqs[i].path, path_prefix, strlen(path_prefix)) == 0;
    return n;
}

/* ---- Nodes and the driver loop ----------------------------------------------------------- */

typedef struct world {
    char *dir;
    mesh_node *n;
    mesh_gw_config cfg;
    mesh_gw *g;
    fake f;
    uint64_t now;
    uint64_t seed;
} world;

static void world_config(world *w)
{
    const char *json = "{\"baseUrl\":\"http://service\",\"auth\":{\"username\":\"gateway\","
                       "\"password\":\"pw\"},\"confirm\":{\"delayMs\":100,\"windowMs\":2000},"
                       "\"uplink\":{\"lingerMs\":50},"
                       "\"downloads\":{\"forms\":false,\"localization\":false,\"sos\":false,"
                       "\"dashboard\":false}}";
    cr_assert_eq(mesh_gw_config_parse(json, strlen(json), w->n, &w->cfg), MESH_OK, "%s",
                 mesh_errmsg());
}

static void world_open(world *w, const char *tag)
{
    memset(w, 0, sizeof *w);
    w->dir = tl_tmpdir(tag);
    char d[300];
    snprintf(d, sizeof d, "%s/gw", w->dir);
    cr_assert_eq(mesh_node_init(d, NULL), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_node_open(d, NULL, &w->n), MESH_OK);
    fake_init(&w->f);
    world_config(w);
    w->now = 1700000000000ull;
    w->seed = 42;
}

static void gw_start(world *w)
{
    cr_assert_eq(mesh_gw_new(w->n, &w->cfg, w->now, w->seed, &w->g), MESH_OK, "%s",
                 mesh_errmsg());
}

static void world_close(world *w)
{
    mesh_gw_free(w->g);
    mesh_node_close(w->n);
    fake_fini(&w->f);
    tl_rmtree(w->dir);
}

/* Runs the core until it is idle (or `steps` turns): requests are answered at once, time jumps
 * to the core's next deadline when it has nothing to send. */
static void run(world *w, int steps)
{
    for (int i = 0; i < steps; i++) {
        cr_assert_eq(mesh_gw_poll_store(w->g, w->now), MESH_OK, "%s", mesh_errmsg());
        const mesh_gw_request *rq;
        int rc, sent = 0;
        while ((rc = mesh_gw_next_request(w->g, w->now, &rq)) == MESH_OK) {
            int status;
            char *body;
            fake_handle(&w->f, rq, w->now, &status, &body);
            mesh_gw_response resp = {.net = status ? MESH_GW_NET_OK : MESH_GW_NET_TIMEOUT,
                                     .status = status, .body = (const uint8_t *)body,
                                     .body_len = strlen(body), .error = "timeout"};
            uint64_t id = rq->id;
            w->now += 5;
            cr_assert_eq(mesh_gw_on_response(w->g, id, w->now, &resp), MESH_OK, "%s",
                         mesh_errmsg());
            free(body);
            sent++;
        }
        cr_assert_eq(rc, MESH_EAGAIN, "%s", mesh_errmsg());
        if (mesh_gw_idle(w->g)) return;
        uint64_t exp = mesh_gw_expiry(w->g);
        w->now = exp > w->now && exp != UINT64_MAX ? exp : w->now + 10;
        fake_run_queue(&w->f, w->now);
    }
    cr_assert_fail("the gateway did not become idle in %d turns", steps);
}

static void put(world *w, const char *type, const char *id, const char *json, char out[37])
{
    mesh_put_result res;
    cr_assert_eq(mesh_put(w->n, type, id, json, strlen(json), &res), MESH_OK, "%s",
                 mesh_errmsg());
    if (out) memcpy(out, res.id, 37);
}

static void receipt_of(world *w, const char *id, uint32_t rv, mesh_receipt *r)
{
    char key[MESH_KEY_STR_LEN];
    mesh_node_identity(w->n, key);
    cr_assert_eq(mesh_receipt_get(w->n, id, rv, key, r), MESH_OK, "no receipt for %s rv %u: %s",
                 id, rv, mesh_errmsg());
}

/* Position of the first write carrying `crid` in the fake's request log. */
static size_t first_write_with(world *w, const char *crid)
{
    for (size_t i = 0; i < w->f.nreqs; i++) {
        if (strstr(w->f.reqs[i].path, "_search") || w->f.reqs[i].body == NULL) continue;
        char *s = json_dumps(w->f.reqs[i].body, JSON_COMPACT);
        bool hit = s && strstr(s, crid);
        free(s);
        if (hit) return i;
    }
    return SIZE_MAX;
}

/* ---- Tests --------------------------------------------------------------------------------- */

Test(gateway, parents_first_and_each_entity_in_order)
{
    world w;
    world_open(&w, "gw-order");
    char m[37], h[37], ind[37], j[600];
    /* The child is written first: the gateway must still create the parents before it. */
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", h);
    put(&w, "individual", NULL, "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"A\"}}", ind);
    snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"%s\","
             "\"individualClientReferenceId\":\"%s\"}", h, ind);
    put(&w, "household_member", NULL, j, m);
    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":2}", NULL);
    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":3}", NULL);
    gw_start(&w);
    run(&w, 200);

    size_t wh = first_write_with(&w, h), wi = first_write_with(&w, ind),
           wm = first_write_with(&w, m);
    cr_assert(wh < wm && wi < wm, "the member went out before a parent (%zu %zu %zu)", wh, wi, wm);
    /* Between the parent's create and the child's, a search confirmed the parent. */
    bool searched = false;
    for (size_t i = wh; i < wm; i++) searched |= strstr(w.f.reqs[i].path, "/household/v1/_search") != NULL;
    cr_assert(searched, "the child was sent before its parent was confirmed");
    json_t *srv = fake_get(&w.f, "household", h);
    cr_assert_not_null(srv);
    cr_assert_eq(json_integer_value(json_object_get(srv, "rowVersion")), 3);
    cr_assert_eq(json_integer_value(json_object_get(srv, "memberCount")), 3);
    cr_assert_eq(w.f.mismatches + w.f.duplicates, 0);
    mesh_receipt r;
    for (uint32_t rv = 1; rv <= 3; rv++) {
        receipt_of(&w, h, rv, &r);
        cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
        cr_assert_eq(r.server_row_version, rv);
        cr_assert_str_eq(r.server_id, json_string_value(json_object_get(srv, "id")));
    }
    receipt_of(&w, m, 1, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    cr_assert_str_eq(r.action, "create");
    /* The updates carried the server's id and rowVersion. */
    bool saw_update = false;
    for (size_t i = 0; i < w.f.nreqs; i++) {
        if (strcmp(w.f.reqs[i].path, "/household/v1/bulk/_update") != 0) continue;
        json_t *e = json_array_get(json_object_get(w.f.reqs[i].body, "Households"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(e, "id")),
                         json_string_value(json_object_get(srv, "id")));
        cr_assert(json_integer_value(json_object_get(e, "rowVersion")) >= 1);
        saw_update = true;
    }
    cr_assert(saw_update);
    mesh_receipt_summary s;
    cr_assert_eq(mesh_receipt_summary_get(w.n, &s), MESH_OK);
    cr_assert_eq(s.own_ops, 5);
    cr_assert_eq(s.confirmed, 5);
    cr_assert_eq(s.awaiting, 0);
    world_close(&w);
}

Test(gateway, batches_per_type_and_action)
{
    world w;
    world_open(&w, "gw-batch");
    for (int i = 0; i < 250; i++) put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", NULL);
    for (int i = 0; i < 30; i++) put(&w, "individual", NULL, "{\"tenantId\":\"mz\"}", NULL);
    gw_start(&w);
    run(&w, 400);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/_create"), 3, "250 households in 3 batches");
    cr_assert_eq(fake_count(&w.f, "/individual/v1/bulk/_create"), 1);
    /* Confirmations of a batch size of 100 fit in one search each type (limit 1000). */
    cr_assert_leq(fake_count(&w.f, "/household/v1/_search"), 2);
    cr_assert_eq(fake_count(&w.f, "/individual/v1/_search"), 1);
    cr_assert_eq(w.f.creates_applied, 280);
    mesh_gw_stats st;
    mesh_gw_stats_get(w.g, &st);
    cr_assert_eq(st.ops_confirmed, 280);
    cr_assert_eq(st.receipts_written, 280);
    world_close(&w);
}

/* The times of the write requests of a run where the first three writes fail with 503. */
static void backoff_run(uint64_t seed, uint64_t times[8], size_t *n)
{
    world w;
    world_open(&w, "gw-backoff");
    w.seed = seed;
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", NULL);
    w.f.fail_writes = 3;
    gw_start(&w);
    run(&w, 400);
    *n = 0;
    for (size_t i = 0; i < w.f.nreqs && *n < 8; i++)
        if (strstr(w.f.reqs[i].path, "bulk/_create")) times[(*n)++] = w.f.reqs[i].at;
    cr_assert_eq(w.f.creates_applied, 1);
    world_close(&w);
}

Test(gateway, retries_back_off_with_jitter_from_the_seed)
{
    uint64_t a[8], b[8], c[8];
    size_t na, nb, nc;
    backoff_run(7, a, &na);
    backoff_run(7, b, &nb);
    backoff_run(8, c, &nc);
    cr_assert_eq(na, 4, "three failed writes, then the one that applied");
    cr_assert_eq(nb, na);
    cr_assert(memcmp(a, b, sizeof a[0] * na) == 0, "same seed, same schedule");
    cr_assert(memcmp(a, c, sizeof a[0] * na) != 0, "another seed, another jitter");
    /* Each failed write is searched for after a backoff (500 ms doubling, +-20 %), then sent
     * again: the gaps grow. */
    for (size_t i = 1; i < na; i++) {
        uint64_t gap = a[i] - a[i - 1];
        uint64_t base = 500ull << (i - 1);
        cr_assert(gap >= base * 8 / 10 && gap <= base * 12 / 10 + 200,
                  "gap %zu is %" PRIu64 " ms, base %" PRIu64, i, gap, base);
    }
}

Test(gateway, crash_mid_batch_confirms_by_search_before_sending_again)
{
    world w;
    world_open(&w, "gw-crash");
    char ids[20][37];
    for (int i = 0; i < 20; i++) put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", ids[i]);
    gw_start(&w);
    cr_assert_eq(mesh_gw_poll_store(w.g, w.now), MESH_OK);
    /* Take the login and the batch out; the service applies the batch; the gateway dies before
     * it hears back. */
    const mesh_gw_request *rq;
    int guard = 0;
    bool sent_batch = false;
    while (!sent_batch && guard++ < 100) {
        int rc = mesh_gw_next_request(w.g, w.now, &rq);
        if (rc == MESH_EAGAIN) {
            w.now = mesh_gw_expiry(w.g);
            continue;
        }
        cr_assert_eq(rc, MESH_OK);
        int status;
        char *body;
        fake_handle(&w.f, rq, w.now, &status, &body);
        if (strstr(rq->path, "bulk/_create")) {
            sent_batch = true;
        } else {
            mesh_gw_response resp = {.status = status, .body = (const uint8_t *)body,
                                     .body_len = strlen(body)};
            cr_assert_eq(mesh_gw_on_response(w.g, rq->id, w.now, &resp), MESH_OK);
        }
        free(body);
    }
    cr_assert(sent_batch);
    cr_assert_eq(w.f.creates_applied, 20);
    mesh_gateway_status gs;
    cr_assert_eq(mesh_gateway_status_get(w.n, &gs), MESH_OK);
    cr_assert_eq(gs.sent, 20, "the batch is durably 'sent' before it leaves");
    mesh_gw_free(w.g); /* the crash: nothing of the answer is recorded */
    w.g = NULL;
    size_t before = w.f.nreqs;

    gw_start(&w);
    run(&w, 200);
    /* After the restart: a login, then a search; no write at all. */
    for (size_t i = before; i < w.f.nreqs; i++)
        cr_assert(strstr(w.f.reqs[i].path, "bulk/") == NULL,
                  "request %zu after the restart is a write: %s", i, w.f.reqs[i].path);
    cr_assert_geq(fake_count(&w.f, "/household/v1/_search"), 1);
    cr_assert_eq(w.f.creates_applied, 20);
    cr_assert_eq(w.f.duplicates, 0);
    for (int i = 0; i < 20; i++) {
        mesh_receipt r;
        receipt_of(&w, ids[i], 1, &r);
        cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    }
    world_close(&w);
}

Test(gateway, crash_after_a_dropped_write_sends_it_once_more)
{
    world w;
    world_open(&w, "gw-crash2");
    char id[37];
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", id);
    w.f.drop_writes = 1;
    w.f.lose_write_responses = 1;
    gw_start(&w);
    /* Run a few turns: the write is dropped and its answer lost; the gateway searches, finds
     * nothing and sends it again. Crash before that, then go on. */
    cr_assert_eq(mesh_gw_poll_store(w.g, w.now), MESH_OK);
    for (int i = 0; i < 3; i++) {
        const mesh_gw_request *rq;
        if (mesh_gw_next_request(w.g, w.now, &rq) != MESH_OK) {
            w.now = mesh_gw_expiry(w.g);
            continue;
        }
        int status;
        char *body;
        fake_handle(&w.f, rq, w.now, &status, &body);
        mesh_gw_response resp = {.net = status ? MESH_GW_NET_OK : MESH_GW_NET_TIMEOUT,
                                 .status = status, .body = (const uint8_t *)body,
                                 .body_len = strlen(body)};
        cr_assert_eq(mesh_gw_on_response(w.g, rq->id, w.now, &resp), MESH_OK);
        free(body);
    }
    mesh_gw_free(w.g);
    w.g = NULL;
    gw_start(&w);
    run(&w, 300);
    cr_assert_eq(w.f.creates_applied, 1);
    mesh_receipt r;
    receipt_of(&w, id, 1, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    world_close(&w);
}

Test(gateway, a_rejected_parent_rejects_its_children_and_blocks_nothing_else)
{
    world w;
    world_open(&w, "gw-reject");
    char bad[37], good[37], ind[37], m1[37], m2[37], j[600];
    put(&w, "household", NULL, "{\"tenantId\":\"mz\"}", bad); /* no memberCount: refused */
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":2}", good);
    put(&w, "individual", NULL, "{\"tenantId\":\"mz\"}", ind);
    snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"%s\","
             "\"individualClientReferenceId\":\"%s\"}", bad, ind);
    put(&w, "household_member", NULL, j, m1);
    snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"%s\","
             "\"individualClientReferenceId\":\"%s\"}", good, ind);
    put(&w, "household_member", NULL, j, m2);
    for (int i = 0; i < 10; i++)
        put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", NULL);
    gw_start(&w);
    run(&w, 400);
    mesh_receipt r;
    receipt_of(&w, bad, 1, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_REJECTED);
    cr_assert_str_eq(r.error_code, "INVALID_REQUEST");
    cr_assert(strstr(r.error_message, "memberCount") != NULL, "%s", r.error_message);
    receipt_of(&w, m1, 1, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_REJECTED);
    cr_assert_str_eq(r.error_code, "PARENT_REJECTED");
    cr_assert(strstr(r.error_message, bad) && strstr(r.error_message, "INVALID_REQUEST"),
              "%s", r.error_message);
    receipt_of(&w, good, 1, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    receipt_of(&w, m2, 1, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    cr_assert_eq(w.f.creates_applied, 1 + 1 + 1 + 10);
    cr_assert_null(fake_get(&w.f, "household_member", m1));
    mesh_receipt_summary s;
    cr_assert_eq(mesh_receipt_summary_get(w.n, &s), MESH_OK);
    cr_assert_eq(s.rejected, 2);
    cr_assert_eq(s.nrecent, 2);
    world_close(&w);
}

Test(gateway, lost_answers_and_dropped_writes_apply_once)
{
    world w;
    world_open(&w, "gw-once");
    char h[37];
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", h);
    w.f.lose_write_responses = 1; /* the create applies but its answer is lost */
    gw_start(&w);
    run(&w, 200);
    cr_assert_eq(w.f.creates_applied, 1);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/_create"), 1, "found by search: not resent");

    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":2}", NULL);
    w.f.lose_write_responses = 1; /* the update applies, its answer is lost */
    run(&w, 200);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/_update"), 1);
    cr_assert_eq(w.f.mismatches, 0);

    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":3}", NULL);
    w.f.drop_writes = 1; /* accepted (202), never applied: sent again after the window */
    run(&w, 400);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/_update"), 3);
    json_t *srv = fake_get(&w.f, "household", h);
    cr_assert_eq(json_integer_value(json_object_get(srv, "rowVersion")), 3);
    cr_assert_eq(json_integer_value(json_object_get(srv, "memberCount")), 3);
    cr_assert_eq(w.f.mismatches + w.f.duplicates, 0);
    world_close(&w);
}

Test(gateway, delayed_application_is_waited_for_not_resent)
{
    world w;
    world_open(&w, "gw-delay");
    for (int i = 0; i < 50; i++) put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", NULL);
    w.f.apply_delay = 700; /* longer than the first confirm delay, within the window */
    gw_start(&w);
    run(&w, 400);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/_create"), 1);
    cr_assert_eq(w.f.creates_applied, 50);
    cr_assert_eq(w.f.duplicates, 0);
    world_close(&w);
}

Test(gateway, repeated_drops_fall_back_to_the_single_endpoint_which_names_the_error)
{
    world w;
    world_open(&w, "gw-single");
    char h[37];
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", h);
    gw_start(&w);
    run(&w, 200);
    /* Someone else changes the entity on the server: our update's rowVersion no longer
     * matches, and bulk errors are not returned. */
    json_t *srv = fake_get(&w.f, "household", h);
    json_object_set_new(srv, "rowVersion", json_integer(7));
    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":2}", NULL);
    run(&w, 600);
    mesh_receipt r;
    receipt_of(&w, h, 2, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_REJECTED);
    cr_assert_str_eq(r.error_code, "MISMATCHED_ROW_VERSION");
    cr_assert_geq(fake_count(&w.f, "/household/v1/_update"), 1, "the single endpoint was asked");
    world_close(&w);
}

Test(gateway, a_late_concurrent_op_is_forwarded_and_the_winner_reasserted)
{
    world w;
    world_open(&w, "gw-late");
    /* A second node edits the same household concurrently; its op reaches the gateway only
     * after the gateway forwarded its own (later) edit. */
    char d2[300];
    snprintf(d2, sizeof d2, "%s/field", w.dir);
    cr_assert_eq(mesh_node_init(d2, NULL), MESH_OK);
    mesh_node *n2;
    cr_assert_eq(mesh_node_open(d2, NULL, &n2), MESH_OK);
    char h[37], bundle[320];
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", h);
    snprintf(bundle, sizeof bundle, "%s/a.bundle", w.dir);
    cr_assert_eq(mesh_export(w.n, bundle, NULL), MESH_OK);
    cr_assert_eq(mesh_import(n2, bundle, NULL), MESH_OK);
    const char *theirs = "{\"tenantId\":\"mz\",\"memberCount\":5}";
    cr_assert_eq(mesh_put(n2, "household", h, theirs, strlen(theirs), NULL), MESH_OK);
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL); /* our edit gets the later clock: it wins the merge */
    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":9}", NULL);
    gw_start(&w);
    run(&w, 300);
    json_t *srv = fake_get(&w.f, "household", h);
    cr_assert_eq(json_integer_value(json_object_get(srv, "memberCount")), 9);
    cr_assert_eq(json_integer_value(json_object_get(srv, "rowVersion")), 2);

    snprintf(bundle, sizeof bundle, "%s/b.bundle", w.dir);
    cr_assert_eq(mesh_export(n2, bundle, NULL), MESH_OK);
    cr_assert_eq(mesh_import(w.n, bundle, NULL), MESH_OK);
    run(&w, 300);
    /* Their op reached the server (rowVersion 3) and then the winner was sent again (4). */
    srv = fake_get(&w.f, "household", h);
    cr_assert_eq(json_integer_value(json_object_get(srv, "memberCount")), 9);
    cr_assert_eq(json_integer_value(json_object_get(srv, "rowVersion")), 4);
    char k2[MESH_KEY_STR_LEN];
    mesh_node_identity(n2, k2);
    mesh_receipt r;
    cr_assert_eq(mesh_receipt_get(w.n, h, 2, k2, &r), MESH_OK);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    cr_assert_eq(r.server_row_version, 3);
    receipt_of(&w, h, 2, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    cr_assert_eq(r.server_row_version, 4, "the winner's receipt names the re-sent version");
    mesh_node_close(n2);
    world_close(&w);
}

Test(gateway, deletes_go_last_and_are_final)
{
    world w;
    world_open(&w, "gw-delete");
    char h[37];
    put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", h);
    put(&w, "household", h, "{\"tenantId\":\"mz\",\"memberCount\":2}", NULL);
    mesh_put_result res;
    cr_assert_eq(mesh_delete(w.n, h, &res), MESH_OK);
    gw_start(&w);
    run(&w, 300);
    json_t *srv = fake_get(&w.f, "household", h);
    cr_assert(json_is_true(json_object_get(srv, "isDeleted")));
    cr_assert_eq(json_integer_value(json_object_get(srv, "rowVersion")), 3);
    mesh_receipt r;
    receipt_of(&w, h, 3, &r);
    cr_assert_eq(r.status, MESH_RECEIPT_CONFIRMED);
    cr_assert_str_eq(r.action, "delete");
    world_close(&w);
}

Test(gateway, a_restart_resumes_without_repeating_confirmed_ops)
{
    world w;
    world_open(&w, "gw-resume");
    for (int i = 0; i < 120; i++) put(&w, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":1}", NULL);
    gw_start(&w);
    run(&w, 300);
    size_t writes = fake_count(&w.f, "/household/v1/bulk/");
    mesh_gw_free(w.g);
    w.g = NULL;
    gw_start(&w);
    run(&w, 50);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/"), writes, "nothing sent again");
    for (int i = 0; i < 5; i++) put(&w, "individual", NULL, "{\"tenantId\":\"mz\"}", NULL);
    run(&w, 100);
    cr_assert_eq(w.f.creates_applied, 125);
    world_close(&w);
}

Test(gateway, configuration_is_checked)
{
    world w;
    world_open(&w, "gw-config");
    mesh_gw_config c;
    const char *bad[] = {
        "{}",
        "{\"baseUrl\":\"ftp://x\",\"auth\":{\"token\":\"t\"}}",
        "{\"baseUrl\":\"http://x\"}",
        "{\"baseUrl\":\"http://x\",\"auth\":{\"token\":\"t\"},\"uplink\":{\"batchSize\":0}}",
        "{\"baseUrl\":\"http://x\",\"auth\":{\"token\":\"t\"},\"uplink\":{\"mode\":\"fax\"}}",
        "{\"baseUrl\":\"http://x\",\"auth\":{\"token\":\"t\"},\"types\":[\"spaceship\"]}",
        "{\"baseUrl\":\"http://x\",\"auth\":{\"token\":\"t\"},\"retrys\":{}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(mesh_gw_config_parse(bad[i], strlen(bad[i]), w.n, &c), MESH_EINVAL,
                     "accepted: %s", bad[i]);
    const char *ok = "{\"baseUrl\":\"https://hcm.example.org/\",\"auth\":{\"username\":\"u\","
                     "\"password\":\"p\"},\"types\":{\"individual\":{\"responseKey\":\"Individuals\"},"
                     "\"household\":{}}}";
    cr_assert_eq(mesh_gw_config_parse(ok, strlen(ok), w.n, &c), MESH_OK, "%s", mesh_errmsg());
    cr_assert_str_eq(c.base_url, "https://hcm.example.org");
    cr_assert_eq(c.ntypes, 2);
    cr_assert_eq(c.batch_size, 100);
    cr_assert_eq(c.timeout_ms, 30000);
    int ind = strcmp(c.types[0].name, "individual") == 0 ? 0 : 1;
    cr_assert_str_eq(c.types[ind].name, "individual");
    cr_assert_str_eq(c.types[ind].response_key, "Individuals");
    cr_assert_str_eq(c.types[1 - ind].response_key, "Households");
    world_close(&w);
}

Test(gateway, a_batch_too_large_for_one_request_is_split)
{
    world w;
    world_open(&w, "gw-big");
    /* 60 households of ~100 KB: one batch would be ~6 MB, over MESH_GW_WRITE_BYTES_MAX. */
    size_t big = 100 * 1024;
    char *json = malloc(big + 100);
    cr_assert_not_null(json);
    int n = snprintf(json, big + 100, "{\"tenantId\":\"mz\",\"memberCount\":1,\"source\":\"");
    memset(json + n, 'x', big);
    snprintf(json + n + big, 100, "\"}");
    for (int i = 0; i < 60; i++) put(&w, "household", NULL, json, NULL);
    free(json);
    gw_start(&w);
    run(&w, 400);
    cr_assert_eq(w.f.creates_applied, 60);
    cr_assert_eq(fake_count(&w.f, "/household/v1/bulk/_create"), 2, "two halves of 30");
    for (size_t i = 0; i < w.f.nreqs; i++) {
        if (strcmp(w.f.reqs[i].path, "/household/v1/bulk/_create") != 0) continue;
        cr_assert_eq(json_array_size(json_object_get(w.f.reqs[i].body, "Households")), 30);
    }
    world_close(&w);
}
