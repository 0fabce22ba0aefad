/*
 * mdms.c - the download side: master data (MDMS v1 search, which serves form schemas, SOS
 * contacts and any other seeded master), localisation messages, dashboard aggregates computed
 * from the stored entities, and the design-era form sync endpoint.
 *
 * Master data and messages come from the seed (--seed FILE, or the built-in default): its
 * "mdms" array holds documents in the MDMS data-file shape ({"tenantId", "moduleName",
 * "<masterName>": [...]}), its "localization" array holds localisation _create bodies
 * ({"tenantId", "messages": [{code, message, module, locale}]}).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign.h"

#define FORMS_MODULE "HCM-FORMS"
#define FORMS_MASTER "Forms"
#define FILTER_BYTES_MAX 500 /* MasterDetail.filter maxLength in the MDMS contract */
#define TENANT_LEVELS_MAX 8

/* The tenant and its ancestors: "mz.nampula.erati" -> "mz.nampula.erati", "mz.nampula", "mz". */
static unsigned tenant_chain(const char *tenant, char levels[TENANT_LEVELS_MAX][65])
{
    unsigned n = 0;
    char cur[65];
    snprintf(cur, sizeof cur, "%s", tenant);
    while (n < TENANT_LEVELS_MAX && cur[0]) {
        snprintf(levels[n++], 65, "%s", cur);
        char *dot = strrchr(cur, '.');
        if (!dot)
            break;
        *dot = 0;
    }
    return n;
}

/* ---- A small JSONPath filter: [?(@.a.b OP value && ...)] --------------------------------------- */

typedef struct fparse {
    const char *p, *end;
    const char *error;
} fparse;

static void skip_ws(fparse *f)
{
    while (f->p < f->end && isspace((unsigned char)*f->p))
        f->p++;
}

static bool eat(fparse *f, const char *tok)
{
    skip_ws(f);
    size_t n = strlen(tok);
    if ((size_t)(f->end - f->p) >= n && !strncmp(f->p, tok, n)) {
        f->p += n;
        return true;
    }
    return false;
}

/* Parses a literal: 'str', "str", number, true, false, null, or [lit, ...]. New reference. */
static json_t *parse_literal(fparse *f)
{
    skip_ws(f);
    if (f->p >= f->end) {
        f->error = "a value is missing";
        return NULL;
    }
    char c = *f->p;
    if (c == '\'' || c == '"') {
        const char *s = ++f->p;
        while (f->p < f->end && *f->p != c)
            f->p++;
        if (f->p >= f->end) {
            f->error = "a string is not closed";
            return NULL;
        }
        json_t *v = json_stringn(s, (size_t)(f->p - s));
        f->p++;
        return v;
    }
    if (c == '[') {
        f->p++;
        json_t *arr = json_array();
        if (eat(f, "]"))
            return arr;
        for (;;) {
            json_t *v = parse_literal(f);
            if (!v) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, v);
            if (eat(f, "]"))
                return arr;
            if (!eat(f, ",")) {
                f->error = "a list needs ',' or ']'";
                json_decref(arr);
                return NULL;
            }
        }
    }
    if (eat(f, "true"))
        return json_true();
    if (eat(f, "false"))
        return json_false();
    if (eat(f, "null"))
        return json_null();
    char num[64];
    size_t n = 0;
    while (f->p < f->end && n + 1 < sizeof num && (isdigit((unsigned char)*f->p) ||
                                                  strchr("+-.eE", *f->p)))
        num[n++] = *f->p++;
    num[n] = 0;
    if (!n) {
        f->error = "a value must be a number, a quoted string, true, false, null or a list";
        return NULL;
    }
    char *e;
    if (!strpbrk(num, ".eE")) {
        long long i = strtoll(num, &e, 10);
        if (!*e)
            return json_integer(i);
    }
    double d = strtod(num, &e);
    if (*e) {
        f->error = "a number is malformed";
        return NULL;
    }
    return json_real(d);
}

static int compare(const json_t *a, const json_t *b, bool *ok)
{
    *ok = true;
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return x < y ? -1 : x > y;
    }
    if (json_is_string(a) && json_is_string(b))
        return strcmp(json_string_value(a), json_string_value(b));
    *ok = false;
    return 0;
}

static bool eval_or(fparse *f, const json_t *item);

static bool eval_cond(fparse *f, const json_t *item)
{
    if (eat(f, "(")) {
        bool v = eval_or(f, item);
        if (!eat(f, ")"))
            f->error = "a '(' is not closed";
        return v;
    }
    bool negate = eat(f, "!");
    if (!eat(f, "@.")) {
        f->error = "a condition must start with @.field";
        return false;
    }
    char path[128];
    size_t n = 0;
    while (f->p < f->end && n + 1 < sizeof path &&
           (isalnum((unsigned char)*f->p) || *f->p == '_' || *f->p == '.' || *f->p == '-'))
        path[n++] = *f->p++;
    path[n] = 0;
    const json_t *v = n ? cs_json_path(item, path) : NULL;
    static const char *const ops[] = {"==", "!=", ">=", "<=", ">", "<", "in ", "nin ", "IN ",
                                      "NIN "};
    int op = -1;
    for (int i = 0; i < 10 && op < 0; i++)
        if (eat(f, ops[i]))
            op = i;
    if (op < 0) {
        bool truthy = v && !json_is_null(v) && !json_is_false(v);
        return negate ? !truthy : truthy;
    }
    json_t *lit = parse_literal(f);
    if (!lit)
        return false;
    bool r = false, ok;
    switch (op) {
    case 0: r = v && (json_equal(v, lit) || (compare(v, lit, &ok) == 0 && ok)); break;
    case 1: r = !v || !(json_equal(v, lit) || (compare(v, lit, &ok) == 0 && ok)); break;
    case 2: r = v && compare(v, lit, &ok) >= 0 && ok; break;
    case 3: r = v && compare(v, lit, &ok) <= 0 && ok; break;
    case 4: r = v && compare(v, lit, &ok) > 0 && ok; break;
    case 5: r = v && compare(v, lit, &ok) < 0 && ok; break;
    default: {
        if (!json_is_array(lit)) {
            f->error = "in/nin need a list";
            break;
        }
        bool in = false;
        size_t i;
        const json_t *x;
        json_array_foreach(lit, i, x)
            if (v && json_equal(v, x))
                in = true;
        r = (op == 6 || op == 8) ? in : !in;
    }
    }
    json_decref(lit);
    return negate ? !r : r;
}

static bool eval_and(fparse *f, const json_t *item)
{
    bool v = eval_cond(f, item);
    while (!f->error && eat(f, "&&"))
        v = eval_cond(f, item) && v;
    return v;
}

static bool eval_or(fparse *f, const json_t *item)
{
    bool v = eval_and(f, item);
    while (!f->error && eat(f, "||"))
        v = eval_and(f, item) || v;
    return v;
}

/* Evaluates `filter` on item; returns 1 match, 0 no match, -1 unsupported (why set). */
static int filter_match(const char *filter, const json_t *item, const char **why)
{
    fparse f = {filter, filter + strlen(filter), NULL};
    eat(&f, "$");
    eat(&f, ".");
    eat(&f, "*");
    if (!eat(&f, "[?(")) {
        *why = "only predicate filters like [?(@.field == 'value')] are supported";
        return -1;
    }
    bool r = eval_or(&f, item);
    if (!f.error && !eat(&f, ")]"))
        f.error = "the filter must end with ')]'";
    skip_ws(&f);
    if (!f.error && f.p != f.end)
        f.error = "unexpected text after the filter";
    if (f.error) {
        *why = f.error;
        return -1;
    }
    return r;
}

/* ---- MDMS v1 search --------------------------------------------------------------------------- */

/* The seeded array of (tenant, module, master), trying the tenant then its ancestors. */
static const json_t *master_data(cs_server *srv, const char *tenant, const char *module,
                                 const char *master)
{
    char levels[TENANT_LEVELS_MAX][65];
    unsigned n = tenant_chain(tenant, levels);
    const json_t *docs = json_object_get(srv->seed, "mdms");
    for (unsigned l = 0; l < n; l++) {
        size_t i;
        const json_t *d;
        json_array_foreach(docs, i, d) {
            const char *t = cs_json_str(d, "tenantId"), *m = cs_json_str(d, "moduleName");
            const json_t *arr = json_object_get(d, master);
            if (t && m && !strcmp(t, levels[l]) && !strcmp(m, module) && json_is_array(arr))
                return arr;
        }
    }
    return NULL;
}

static void handle_mdms(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST only", rq->path);
        return;
    }
    json_t *body = cs_req_json(rq, rs);
    if (!body)
        return;
    const json_t *crit = json_object_get(body, "MdmsCriteria");
    const char *tenant = cs_json_str(crit, "tenantId");
    const json_t *modules = json_object_get(crit, "moduleDetails");
    if (!json_is_object(crit) || !tenant || !*tenant || !json_is_array(modules)) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "MdmsCriteria {tenantId, moduleDetails: "
                      "[{moduleName, masterDetails: [{name, filter}]}]} is required");
        json_decref(body);
        return;
    }
    json_t *res = json_object();
    size_t i;
    const json_t *md;
    json_array_foreach(modules, i, md) {
        const char *module = cs_json_str(md, "moduleName");
        const json_t *masters = json_object_get(md, "masterDetails");
        if (!module || !json_is_array(masters)) {
            cs_resp_error(rs, 400, "INVALID_REQUEST", "moduleDetails[%zu] needs moduleName and "
                          "masterDetails", i);
            goto fail;
        }
        size_t j;
        const json_t *ms;
        json_array_foreach(masters, j, ms) {
            const char *master = cs_json_str(ms, "name");
            const char *filter = cs_json_str(ms, "filter");
            if (!master) {
                cs_resp_error(rs, 400, "INVALID_REQUEST", "moduleDetails[%zu].masterDetails[%zu]"
                              " needs a name", i, j);
                goto fail;
            }
            if (filter && strlen(filter) > FILTER_BYTES_MAX) {
                cs_resp_error(rs, 400, "INVALID_FILTER", "filter is longer than %d bytes",
                              FILTER_BYTES_MAX);
                goto fail;
            }
            const json_t *data = master_data(srv, tenant, module, master);
            if (!data)
                continue; /* absent masters are left out of MdmsRes */
            json_t *out = json_array();
            size_t k;
            const json_t *item;
            json_array_foreach(data, k, item) {
                const char *why = NULL;
                int m = filter && *filter ? filter_match(filter, item, &why) : 1;
                if (m < 0) {
                    json_decref(out);
                    cs_resp_error(rs, 400, "INVALID_FILTER", "filter \"%s\" of %s.%s: %s",
                                  filter, module, master, why);
                    goto fail;
                }
                if (m)
                    json_array_append_new(out, json_deep_copy(item));
            }
            json_t *mod = json_object_get(res, module);
            if (!mod) {
                mod = json_object();
                json_object_set_new(res, module, mod);
            }
            json_object_set_new(mod, master, out);
        }
    }
    /* MDMS answers 200 with a null ResponseInfo (MDMSController). */
    cs_resp_json(rs, 200, json_pack("{s:n, s:o}", "ResponseInfo", "MdmsRes", res));
    json_decref(body);
    return;
fail:
    json_decref(res);
    json_decref(body);
}

/* ---- Localisation ------------------------------------------------------------------------------- */

static bool in_csv(const char *csv, const char *v)
{
    if (!csv || !*csv)
        return true;
    size_t vl = strlen(v);
    const char *p = csv;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == vl && !strncmp(p, v, n))
            return true;
        p = comma ? comma + 1 : p + n;
    }
    return false;
}

static int cmp_code(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(cs_json_str(x, "code"), cs_json_str(y, "code"));
}

static void handle_localization(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0 && strcmp(rq->method, "GET") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST and GET", rq->path);
        return;
    }
    const char *locale = cs_req_query(rq, "locale"), *tenant = cs_req_query(rq, "tenantId");
    const char *module = cs_req_query(rq, "module"), *codes = cs_req_query(rq, "codes");
    if (!locale || !*locale || !tenant || !*tenant) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "locale and tenantId are required query "
                      "parameters");
        return;
    }
    char levels[TENANT_LEVELS_MAX + 1][65];
    unsigned n = tenant_chain(tenant, levels);
    snprintf(levels[n++], 65, "default");
    const json_t *groups = json_object_get(srv->seed, "localization");
    json_t *found = json_array();
    /* The first tenant level with any matching message wins (MessageService). */
    for (unsigned l = 0; l < n && json_array_size(found) == 0; l++) {
        size_t i, j;
        const json_t *g, *m;
        json_array_foreach(groups, i, g) {
            const char *gt = cs_json_str(g, "tenantId");
            if (!gt || strcmp(gt, levels[l]) != 0)
                continue;
            json_array_foreach(json_object_get(g, "messages"), j, m) {
                const char *code = cs_json_str(m, "code"), *mod = cs_json_str(m, "module");
                const char *loc = cs_json_str(m, "locale");
                if (!code || !mod || !loc || strcmp(loc, locale) != 0 || !in_csv(module, mod) ||
                    !in_csv(codes, code))
                    continue;
                json_array_append_new(found, json_pack("{s:s, s:s?, s:s, s:s}", "code", code,
                                                       "message", cs_json_str(m, "message"),
                                                       "module", mod, "locale", loc));
            }
        }
    }
    size_t count = json_array_size(found);
    json_t **items = malloc((count ? count : 1) * sizeof *items);
    json_t *sorted = json_array();
    if (items) {
        for (size_t i = 0; i < count; i++)
            items[i] = json_array_get(found, i);
        qsort(items, count, sizeof *items, cmp_code);
        for (size_t i = 0; i < count; i++)
            json_array_append(sorted, items[i]);
        free(items);
    }
    json_decref(found);
    cs_resp_json(rs, 200, json_pack("{s:o}", "messages", sorted));
}

/* ---- Dashboard -------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct agg {
    const cs_type *t;
    const char *tenant;
    const json_t *boundaries; /* optional array filter */
    json_t *counts;           /* boundary -> {type: n} */
} agg;

static bool visit_agg(const json_t *e, void *arg)
{
    agg *a = arg;
    const char *tenant = cs_json_str(e, "tenantId");
    if (!tenant || strcmp(tenant, a->tenant) != 0 || json_is_true(json_object_get(e, "isDeleted")))
        return true;
    const char *b = cs_entity_boundary(a->t, e);
    if (!b)
        b = "UNKNOWN";
    if (json_array_size(a->boundaries)) {
        bool want = false;
        size_t i;
        const json_t *x;
        json_array_foreach(a->boundaries, i, x)
            if (json_is_string(x) && !strcmp(json_string_value(x), b))
                want = true;
        if (!want)
            return true;
    }
    json_t *row = json_object_get(a->counts, b);
    if (!row) {
        row = json_object();
        json_object_set_new(a->counts, b, row);
    }
    json_int_t n = json_integer_value(json_object_get(row, a->t->name));
    json_object_set_new(row, a->t->name, json_integer(n + 1));
    return true;
}

/* Counts live entities of `types` per boundary: {boundary: {type: n}}. NULL on store error. */
static json_t *aggregate(cs_server *srv, const char *tenant, const json_t *types,
                         const json_t *boundaries, int *rc_out)
{
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        *rc_out = rc;
        return NULL;
    }
    agg a = {.tenant = tenant, .boundaries = boundaries, .counts = json_object()};
    for (size_t i = 0; i < cs_n_types && !rc; i++) {
        a.t = &cs_types[i];
        bool want = json_array_size(types) ? false : cs_types[i].boundary[0] != 0;
        size_t j;
        const json_t *x;
        json_array_foreach(types, j, x)
            if (json_is_string(x) && !strcmp(json_string_value(x), cs_types[i].name))
                want = true;
        if (!want)
            continue;
        /* Every selected type appears in the totals, even with no entities. */
        rc = cs_entities_scan(txn, &srv->store, a.t, visit_agg, &a);
    }
    mdb_txn_abort(txn);
    if (rc) {
        json_decref(a.counts);
        *rc_out = rc;
        return NULL;
    }
    return a.counts;
}

static void handle_dashboard(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST only", rq->path);
        return;
    }
    json_t *body = cs_req_json(rq, rs);
    if (!body)
        return;
    const json_t *ri = json_object_get(body, "RequestInfo");
    cs_principal who;
    if (!json_is_object(ri)) {
        cs_resp_error(rs, 400, "MISSING_REQUEST_INFO", "RequestInfo is required");
        json_decref(body);
        return;
    }
    if (!cs_auth_check(srv, rq, ri, rs, &who)) {
        json_decref(body);
        return;
    }
    const json_t *crit = json_object_get(body, "DashboardCriteria");
    const char *tenant = cs_json_str(crit, "tenantId");
    const json_t *types = json_object_get(crit, "types");
    const json_t *bounds = json_object_get(crit, "boundaryCodes");
    if (!tenant || (types && !json_is_array(types)) || (bounds && !json_is_array(bounds))) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "DashboardCriteria {tenantId, boundaryCodes?: "
                      "[...], types?: [...]} is required");
        json_decref(body);
        return;
    }
    size_t i;
    const json_t *x;
    json_array_foreach(types, i, x)
        if (!json_is_string(x) || !cs_type_find(json_string_value(x))) {
            cs_resp_error(rs, 400, "INVALID_REQUEST", "DashboardCriteria.types[%zu] is not an "
                          "entity type", i);
            json_decref(body);
            return;
        }
    int rc = 0;
    json_t *counts = aggregate(srv, tenant, types, bounds, &rc);
    if (!counts) {
        cs_resp_store_error(rs, rc, "aggregating entities");
        json_decref(body);
        return;
    }
    json_t *rows = json_array(), *totals = json_object();
    for (size_t t = 0; t < cs_n_types; t++) {
        bool want = json_array_size(types) ? false : cs_types[t].boundary[0] != 0;
        json_array_foreach(types, i, x)
            if (!strcmp(json_string_value(x), cs_types[t].name))
                want = true;
        if (want)
            json_object_set_new(totals, cs_types[t].name, json_integer(0));
    }
    /* Boundaries sorted by code: collect keys, sort, emit. */
    size_t nb = json_object_size(counts), k = 0;
    const char **keys = malloc((nb ? nb : 1) * sizeof *keys);
    const char *key;
    json_t *row;
    json_object_foreach(counts, key, row)
        if (keys)
            keys[k++] = key;
    if (keys) {
        qsort(keys, k, sizeof *keys, cmp_str);
        for (size_t b = 0; b < k; b++) {
            row = json_object_get(counts, keys[b]);
            json_t *full = json_deep_copy(totals); /* zeros for absent types */
            const char *tn;
            json_t *c;
            json_object_foreach(row, tn, c) {
                json_object_set_new(full, tn, json_integer(json_integer_value(c)));
                json_object_set_new(totals, tn, json_integer(json_integer_value(
                    json_object_get(totals, tn)) + json_integer_value(c)));
            }
            json_array_append_new(rows, json_pack("{s:s, s:o}", "boundaryCode", keys[b],
                                                  "counts", full));
        }
        free(keys);
    }
    json_decref(counts);
    json_t *resp = json_pack("{s:o, s:{s:s, s:I, s:o, s:o}}", "ResponseInfo",
                             cs_response_info(ri, NULL, true), "Dashboard", "tenantId", tenant,
                             "generatedTime", cs_now_ms(), "boundaries", rows, "totals", totals);
    cs_resp_json(rs, 200, resp);
    json_decref(body);
}

/* The real dashboard-analytics envelope, for visualizationCode "<TYPE>_COUNT_BY_BOUNDARY". */
static void handle_chart(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST only", rq->path);
        return;
    }
    json_t *body = cs_req_json(rq, rs);
    if (!body)
        return;
    cs_principal who;
    const json_t *ri = json_object_get(body, "RequestInfo");
    if (!cs_auth_check(srv, rq, ri, rs, &who)) {
        json_decref(body);
        return;
    }
    const json_t *dto = json_object_get(body, "aggregationRequestDto");
    const char *code = cs_json_str(dto, "visualizationCode");
    const char *tenant = cs_json_str(json_object_get(body, "headers"), "tenantId");
    const cs_type *t = NULL;
    char tname[CS_TYPE_NAME_BYTES_MAX + 1];
    const char *suffix = "_COUNT_BY_BOUNDARY";
    size_t cl = code ? strlen(code) : 0, sl = strlen(suffix);
    if (code && cl > sl && cl - sl <= CS_TYPE_NAME_BYTES_MAX && !strcmp(code + cl - sl, suffix)) {
        for (size_t i = 0; i < cl - sl; i++)
            tname[i] = (char)tolower((unsigned char)code[i]);
        tname[cl - sl] = 0;
        t = cs_type_find(tname);
    }
    if (!tenant || !t) {
        cs_resp_json(rs, 400, json_pack("{s:{s:i, s:s, s:s}}", "statusInfo", "statusCode", 400,
                                        "statusMessage", "failed", "errorMessage",
                                        "headers.tenantId and aggregationRequestDto."
                                        "visualizationCode <TYPE>_COUNT_BY_BOUNDARY (e.g. "
                                        "HOUSEHOLD_COUNT_BY_BOUNDARY) are required"));
        json_decref(body);
        return;
    }
    const json_t *filters = json_object_get(dto, "filters");
    const json_t *bounds = json_object_get(filters, "boundaryCode");
    json_t *types = json_pack("[s]", t->name);
    json_t *one = NULL;
    if (json_is_string(bounds))
        bounds = one = json_pack("[O]", bounds);
    else if (!json_is_array(bounds))
        bounds = NULL;
    int rc = 0;
    json_t *counts = aggregate(srv, tenant, types, bounds, &rc);
    json_decref(types);
    json_decref(one);
    if (!counts) {
        cs_resp_store_error(rs, rc, "aggregating entities");
        json_decref(body);
        return;
    }
    json_t *data = json_array();
    const char *key;
    json_t *row;
    json_object_foreach(counts, key, row) {
        json_int_t n = json_integer_value(json_object_get(row, t->name));
        json_array_append_new(data, json_pack("{s:s, s:I, s:s, s:[{s:n, s:s, s:I, s:s}]}",
                                              "headerName", key, "headerValue", n,
                                              "headerSymbol", "number", "plots", "label", "name",
                                              "count", "value", n, "symbol", "number"));
    }
    json_decref(counts);
    cs_resp_json(rs, 200, json_pack("{s:{s:i, s:s, s:s}, s:{s:s, s:s, s:s, s:[], s:o}}",
                                    "statusInfo", "statusCode", 200, "statusMessage", "success",
                                    "errorMessage", "", "responseData", "chartType", "table",
                                    "visualizationCode", code, "drillDownChartId", "none",
                                    "filter", "data", data));
    json_decref(body);
}

/* ---- Form sync (archive sync.service.yml) ------------------------------------------------------ */

static bool version_newer(const json_t *ours, const char *theirs)
{
    char buf[64];
    const char *o = json_is_string(ours) ? json_string_value(ours) : NULL;
    if (json_is_integer(ours)) {
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(ours));
        o = buf;
    }
    if (!o)
        return false;
    int64_t a, b;
    if (cs_parse_i64(o, INT64_MIN, INT64_MAX, &a) == 0 &&
        cs_parse_i64(theirs, INT64_MIN, INT64_MAX, &b) == 0)
        return a > b;
    return strcmp(o, theirs) != 0;
}

static void handle_forms(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST only", rq->path);
        return;
    }
    json_t *body = cs_req_json(rq, rs);
    if (!body)
        return;
    /* The archive contract spells the envelope "requestInfo"; accept DIGIT's usual key too. */
    const json_t *ri = json_object_get(body, "requestInfo");
    if (!ri)
        ri = json_object_get(body, "RequestInfo");
    cs_principal who;
    if (!json_is_object(ri)) {
        cs_resp_error(rs, 400, "MISSING_REQUEST_INFO", "requestInfo is required");
        json_decref(body);
        return;
    }
    if (!cs_auth_check(srv, rq, ri, rs, &who)) {
        json_decref(body);
        return;
    }
    const json_t *sync = json_object_get(body, "sync");
    const char *tenant = cs_json_str(sync, "tenantId");
    const char *campaign = cs_json_str(sync, "campaignId");
    const json_t *have = json_object_get(sync, "forms");
    const json_t *since = json_object_get(sync, "lastUpdatedSince");
    if (!tenant || (have && !json_is_array(have)) || (since && !json_is_integer(since))) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "sync {tenantId, campaignId?, syncAll?, "
                      "forms?: [{schemaId, version}], lastUpdatedSince?} is required");
        json_decref(body);
        return;
    }
    bool all = json_is_true(json_object_get(sync, "syncAll")) || json_array_size(have) == 0;
    const json_t *forms = master_data(srv, tenant, FORMS_MODULE, FORMS_MASTER);
    json_t *out = json_array();
    size_t i;
    const json_t *form;
    json_array_foreach(forms, i, form) {
        const char *fc = cs_json_str(form, "campaignId");
        if (campaign && fc && strcmp(campaign, fc) != 0)
            continue;
        if (since && json_integer_value(json_object_get(form, "lastUpdatedTime")) <
                         json_integer_value(since))
            continue;
        bool send = all;
        if (!all) {
            /* Forms the client lacks, or holds in an older version. */
            send = true;
            size_t j;
            const json_t *h;
            json_array_foreach(have, j, h) {
                const char *sid = cs_json_str(h, "schemaId"), *ver = cs_json_str(h, "version");
                const char *schema = cs_json_str(form, "schema");
                if (sid && schema && !strcmp(sid, schema))
                    send = !ver || version_newer(json_object_get(form, "version"), ver);
            }
        }
        if (send)
            json_array_append_new(out, json_deep_copy(form));
    }
    cs_resp_json(rs, 200, json_pack("{s:o, s:o}", "responseInfo", cs_response_info(ri, NULL, true),
                                    "forms", out));
    json_decref(body);
}

bool cs_mdms_route(const char *path, cs_route *route)
{
    if (!strcmp(path, "/mdms-v2/v1/_search") || !strcmp(path, "/egov-mdms-service/v1/_search"))
        route->fn = handle_mdms;
    else if (!strcmp(path, "/localization/messages/v1/_search"))
        route->fn = handle_localization;
    else if (!strcmp(path, "/dashboard/v1/_search"))
        route->fn = handle_dashboard;
    else if (!strcmp(path, "/dashboard-analytics/dashboard/getChartV2"))
        route->fn = handle_chart;
    else if (!strcmp(path, "/sync/forms/v1/_search"))
        route->fn = handle_forms;
    else
        return false;
    snprintf(route->name, sizeof route->name, "%s", path);
    return true;
}
