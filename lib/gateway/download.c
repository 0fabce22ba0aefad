/*
 * download.c - This file implements the gateway's downloads (gw_int.h): the configuration that
 * field devices need and cannot fetch without internet, written as `_config` system ops into
 * the gateway's stream so that every device of the mesh gets it by ordinary sync:
 *
 *   forms/<schema>                   a form schema, from MDMS (HCM-FORMS.Forms) or the sync
 *                                    service's /sync/forms/v1/_search; only forms newer than
 *                                    the newest held (lastUpdatedTime) are asked for
 *   localization/<module>/<locale>   a dictionary {code: message} per form (module
 *                                    hcm-forms-<schema>) and per configured module and locale
 *   sos/contacts                     MDMS HCM.CALL_SUPPORT: the numbers field workers call
 *   dashboard/<tenant>               per-boundary counts, /dashboard/v1/_search (a contract the
 *                                    reference service defines: DIGIT has no public one)
 *
 * An item is written only when its value changed. Each kind is fetched every
 * downloads.intervalS, with backoff after failures; downloads go out only when no uplink work
 * is waiting for a request slot.
 */
#include "gateway/gw_int.h"

#include <stdio.h>
#include <stdlib.h>

/* Form schemas whose dictionaries are downloaded, found among the `_config` items held. */
typedef struct forms_list {
    size_t n;
    char schema[MESH_GW_FORMS_MAX][96];
} forms_list;

static int collect_form(const mesh_config_entry *e, void *ctx)
{
    forms_list *f = ctx;
    if (f->n < MESH_GW_FORMS_MAX && strncmp(e->key, "forms/", 6) == 0)
        snprintf(f->schema[f->n++], sizeof f->schema[0], "%s", e->key + 6);
    return 0;
}

/* The forms held, with their versions (the sync service answers only newer ones). */
typedef struct held_forms {
    size_t n;
    char schema[MESH_GW_FORMS_MAX][96];
    char version[MESH_GW_FORMS_MAX][32];
} held_forms;

static int collect_held(const mesh_config_entry *e, void *ctx)
{
    held_forms *h = ctx;
    if (h->n >= MESH_GW_FORMS_MAX || strncmp(e->key, "forms/", 6) != 0) return 0;
    json_t *v = json_loadb(e->json, e->json_len, 0, NULL);
    json_t *ver = json_object_get(v, "version");
    if (json_is_string(ver))
        snprintf(h->version[h->n], sizeof h->version[0], "%s", json_string_value(ver));
    else if (json_is_integer(ver))
        snprintf(h->version[h->n], sizeof h->version[0], "%" JSON_INTEGER_FORMAT,
                 json_integer_value(ver));
    else
        snprintf(h->version[h->n], sizeof h->version[0], "0");
    snprintf(h->schema[h->n], sizeof h->schema[0], "%s", e->key + 6);
    h->n++;
    json_decref(v);
    return 0;
}

static req *dl_json_req(mesh_gw *g, int kind, const char *path, const char *what)
{
    req *r = gw_req_new(g, kind);
    if (r == NULL) return NULL;
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->ctype, sizeof r->ctype, "application/json");
    snprintf(r->what, sizeof r->what, "%s", what);
    return r;
}

static req *publish(mesh_gw *g, req *r, int rc, const char *method, int dl)
{
    if (rc != MESH_OK) {
        r->used = false;
        gw_log(g, 1, "cannot build the %s request: %s", r->what, mesh_errmsg());
        g->dl_next[dl] = UINT64_MAX;
        return NULL;
    }
    r->pub.id = r->id;
    r->pub.method = method;
    r->pub.path = r->path;
    r->pub.content_type = r->ctype[0] ? r->ctype : NULL;
    r->pub.authorization = NULL;
    r->pub.auth_token = g->token[0] ? g->token : NULL;
    r->pub.body = r->body.data;
    r->pub.body_len = r->body.len;
    r->pub.timeout_ms = g->cfg.timeout_ms;
    r->pub.what = r->what;
    g->dl_inflight[dl] = true;
    r->handed = true;
    g->inflight++;
    g->st.requests++;
    g->st.other_requests++;
    g->st.body_bytes += r->body.len;
    return r;
}

/* MDMS v1 search of one master (MdmsCriteriaReq, mdms-contract.yml). */
static int mdms_body(mesh_gw *g, mesh_buf *b, uint64_t now, const char *module,
                     const char *master, const char *filter)
{
    int rc = gw_append(b, "{\"RequestInfo\":");
    if (rc == MESH_OK) rc = gw_request_info(g, now, "_search", b);
    if (rc == MESH_OK) rc = gw_append(b, ",\"MdmsCriteria\":{\"tenantId\":");
    if (rc == MESH_OK) rc = gw_json_str(b, g->cfg.tenant_id, strlen(g->cfg.tenant_id));
    if (rc == MESH_OK) rc = gw_append(b, ",\"moduleDetails\":[{\"moduleName\":");
    if (rc == MESH_OK) rc = gw_json_str(b, module, strlen(module));
    if (rc == MESH_OK) rc = gw_append(b, ",\"masterDetails\":[{\"name\":");
    if (rc == MESH_OK) rc = gw_json_str(b, master, strlen(master));
    if (rc == MESH_OK && filter) {
        rc = gw_append(b, ",\"filter\":");
        if (rc == MESH_OK) rc = gw_json_str(b, filter, strlen(filter));
    }
    if (rc == MESH_OK) rc = gw_append(b, "}]}]}}");
    return rc;
}

req *gw_dl_next(mesh_gw *g, uint64_t now)
{
    const mesh_gw_config *c = &g->cfg;
    if (c->dl_forms && !g->dl_inflight[DL_FORMS] && now >= g->dl_next[DL_FORMS]) {
        req *r;
        int rc;
        if (c->forms_source == MESH_GW_FORMS_SYNC) {
            r = dl_json_req(g, RQ_DL_FORMS_SYNC, c->forms_sync_path, "form schemas (sync)");
            if (r == NULL) return NULL;
            /* The archive sync contract: the forms held with their versions (the service
             * answers newer versions and forms not listed), or syncAll when none is held. It
             * spells the envelope requestInfo. */
            held_forms *hf = calloc(1, sizeof *hf);
            if (hf == NULL) {
                r->used = false;
                return NULL;
            }
            if (mesh_config_list(g->node, "forms/", collect_held, hf) != MESH_OK) hf->n = 0;
            mesh_buf *b = &r->body;
            rc = gw_append(b, "{\"requestInfo\":");
            if (rc == MESH_OK) rc = gw_request_info(g, now, "_search", b);
            if (rc == MESH_OK) rc = gw_append(b, ",\"sync\":{\"tenantId\":");
            if (rc == MESH_OK) rc = gw_json_str(b, c->tenant_id, strlen(c->tenant_id));
            if (rc == MESH_OK && c->campaign_id[0]) {
                rc = gw_append(b, ",\"campaignId\":");
                if (rc == MESH_OK) rc = gw_json_str(b, c->campaign_id, strlen(c->campaign_id));
            }
            if (rc == MESH_OK) rc = gw_appendf(b, ",\"syncAll\":%s,\"forms\":[", hf->n ? "false" : "true");
            for (size_t i = 0; i < hf->n && rc == MESH_OK; i++) {
                rc = gw_append(b, i ? ",{\"schemaId\":" : "{\"schemaId\":");
                if (rc == MESH_OK) rc = gw_json_str(b, hf->schema[i], strlen(hf->schema[i]));
                if (rc == MESH_OK) rc = gw_append(b, ",\"version\":");
                if (rc == MESH_OK) rc = gw_json_str(b, hf->version[i], strlen(hf->version[i]));
                if (rc == MESH_OK) rc = gw_append(b, "}");
            }
            if (rc == MESH_OK) rc = gw_append(b, "]}}");
            free(hf);
        } else {
            r = dl_json_req(g, RQ_DL_MDMS, c->mdms_path, "form schemas (MDMS)");
            if (r == NULL) return NULL;
            char filter[96];
            snprintf(filter, sizeof filter, "[?(@.lastUpdatedTime > %llu)]",
                     (unsigned long long)g->forms_since);
            rc = mdms_body(g, &r->body, now, c->forms_module, c->forms_master,
                           g->forms_since ? filter : NULL);
        }
        r->locale = DL_FORMS;
        return publish(g, r, rc, "POST", DL_FORMS);
    }
    if (c->dl_sos && !g->dl_inflight[DL_SOS] && now >= g->dl_next[DL_SOS]) {
        req *r = dl_json_req(g, RQ_DL_MDMS, c->mdms_path, "SOS contacts (MDMS)");
        if (r == NULL) return NULL;
        r->locale = DL_SOS;
        int rc = mdms_body(g, &r->body, now, c->sos_module, c->sos_master, NULL);
        return publish(g, r, rc, "POST", DL_SOS);
    }
    if (c->dl_dashboard && !g->dl_inflight[DL_DASH] && now >= g->dl_next[DL_DASH]) {
        req *r = dl_json_req(g, RQ_DL_DASH, c->dashboard_path, "dashboard aggregates");
        if (r == NULL) return NULL;
        mesh_buf *b = &r->body;
        int rc = gw_append(b, "{\"RequestInfo\":");
        if (rc == MESH_OK) rc = gw_request_info(g, now, "_search", b);
        if (rc == MESH_OK) rc = gw_append(b, ",\"DashboardCriteria\":{\"tenantId\":");
        if (rc == MESH_OK) rc = gw_json_str(b, c->tenant_id, strlen(c->tenant_id));
        if (rc == MESH_OK) rc = gw_append(b, "}}");
        return publish(g, r, rc, "POST", DL_DASH);
    }
    /* Dictionaries follow the forms: wait for a forms download in flight. */
    if (c->dl_localization && c->nlocales && !g->dl_inflight[DL_LOC] && !g->dl_inflight[DL_FORMS] &&
        now >= g->dl_next[DL_LOC]) {
        forms_list *fl = calloc(1, sizeof *fl);
        if (fl == NULL) return NULL;
        if (mesh_config_list(g->node, "forms/", collect_form, fl) != MESH_OK) fl->n = 0;
        /* Forms downloaded but not written yet count too (writes are batched). */
        for (size_t i = 0; i < g->nconfigs && fl->n < MESH_GW_FORMS_MAX; i++) {
            const char *key = g->configs[i].key;
            if (strncmp(key, "forms/", 6) != 0) continue;
            bool dup = false;
            for (size_t k = 0; k < fl->n && !dup; k++) dup = strcmp(fl->schema[k], key + 6) == 0;
            if (!dup) snprintf(fl->schema[fl->n++], sizeof fl->schema[0], "%s", key + 6);
        }
        if (fl->n == 0 && c->nloc_modules == 0) {
            free(fl);
            g->dl_next[DL_LOC] = now + c->download_interval_ms;
            return NULL;
        }
        uint32_t li = g->loc_next_locale % (uint32_t)c->nlocales;
        req *r = gw_req_new(g, RQ_DL_LOC);
        if (r == NULL) {
            free(fl);
            return NULL;
        }
        r->locale = li;
        mesh_buf q;
        mesh_buf_init(&q, sizeof r->path);
        int rc = gw_append(&q, "locale=");
        if (rc == MESH_OK) rc = gw_urlenc(&q, c->locales[li]);
        if (rc == MESH_OK) rc = gw_append(&q, "&tenantId=");
        if (rc == MESH_OK) rc = gw_urlenc(&q, c->tenant_id);
        if (rc == MESH_OK) rc = gw_append(&q, "&module=");
        for (size_t i = 0; i < fl->n && rc == MESH_OK; i++) {
            if (i) rc = gw_append(&q, "%2C");
            if (rc == MESH_OK) rc = gw_append(&q, "hcm-forms-");
            if (rc == MESH_OK) rc = gw_urlenc(&q, fl->schema[i]);
        }
        for (size_t i = 0; i < c->nloc_modules && rc == MESH_OK; i++) {
            if (i || fl->n) rc = gw_append(&q, "%2C");
            if (rc == MESH_OK) rc = gw_urlenc(&q, c->loc_modules[i]);
        }
        if (rc == MESH_OK) rc = mesh_buf_append(&q, "", 1);
        if (rc == MESH_OK)
            snprintf(r->path, sizeof r->path, "%s?%s", c->localization_path, (const char *)q.data);
        mesh_buf_fini(&q);
        free(fl);
        snprintf(r->what, sizeof r->what, "localisation %s", c->locales[li]);
        /* POST with an empty body: what DIGIT's own clients do (the params are in the query). */
        snprintf(r->ctype, sizeof r->ctype, "application/json");
        if (rc == MESH_OK) {
            rc = gw_append(&r->body, "{\"RequestInfo\":");
            if (rc == MESH_OK) rc = gw_request_info(g, now, "_search", &r->body);
            if (rc == MESH_OK) rc = gw_append(&r->body, "}");
        }
        return publish(g, r, rc, "POST", DL_LOC);
    }
    return NULL;
}

uint64_t gw_dl_expiry(const mesh_gw *g)
{
    const mesh_gw_config *c = &g->cfg;
    uint64_t t = UINT64_MAX;
    bool on[DL_COUNT] = {c->dl_forms, c->dl_localization && c->nlocales &&
                                          !g->dl_inflight[DL_FORMS],
                         c->dl_sos, c->dl_dashboard};
    for (int k = 0; k < DL_COUNT; k++)
        if (on[k] && !g->dl_inflight[k] && g->dl_next[k] < t) t = g->dl_next[k];
    return t;
}

static void dl_done(mesh_gw *g, int k, uint64_t now, bool ok)
{
    g->dl_inflight[k] = false;
    if (ok) {
        g->dl_fails[k] = 0;
        g->dl_next[k] = now + g->cfg.download_interval_ms;
    } else {
        g->dl_fails[k]++;
        uint64_t b = gw_backoff(g, g->dl_fails[k]);
        g->dl_next[k] = now + (b < g->cfg.download_interval_ms ? b : g->cfg.download_interval_ms);
    }
}

static void dl_failed(mesh_gw *g, int k, const req *r, const mesh_gw_response *resp)
{
    if (resp->net != MESH_GW_NET_OK) {
        gw_log(g, 3, "%s: %s", r->what, resp->error ? resp->error : "no answer");
        return;
    }
    verdict v;
    gw_error_of(resp, &v);
    gw_log(g, 1, "%s: %s answered %d (%s: %s)", r->what, r->path, resp->status, v.code, v.msg);
    (void)k;
}

/* Stages form schemas from an array of form objects; tracks the newest lastUpdatedTime. */
static void stage_forms(mesh_gw *g, json_t *forms, const char *source, uint64_t now)
{
    size_t i;
    json_t *f;
    json_array_foreach(forms, i, f) {
        const char *schema = json_string_value(json_object_get(f, "schema"));
        if (schema == NULL) schema = json_string_value(json_object_get(f, "name"));
        if (schema == NULL || strlen(schema) > 90 || strchr(schema, '/')) continue;
        json_int_t lu = json_integer_value(json_object_get(f, "lastUpdatedTime"));
        if (lu > 0 && (uint64_t)lu > g->forms_since) {
            g->forms_since = (uint64_t)lu;
            g->forms_since_dirty = true;
        }
        char key[128];
        snprintf(key, sizeof key, "forms/%s", schema);
        gw_config_stage(g, key, "form", source, now, json_incref(f));
    }
}

/* True (and the held value is not touched) if `key` already holds `value`. */
typedef struct same_ctx {
    json_t *value;
    bool same;
} same_ctx;

static int same_cb(const mesh_config_entry *e, void *ctx)
{
    same_ctx *s = ctx;
    json_t *held = json_loadb(e->json, e->json_len, JSON_DECODE_ANY, NULL);
    s->same = held && json_equal(held, s->value);
    json_decref(held);
    return 0;
}

static void stage_if_changed(mesh_gw *g, const char *key, const char *kind, const char *source,
                             uint64_t now, json_t *value)
{
    same_ctx s = {.value = value};
    if (mesh_config_get(g->node, key, same_cb, &s) == MESH_OK && s.same) {
        json_decref(value);
        return;
    }
    mesh_err_clear();
    gw_config_stage(g, key, kind, source, now, value);
}

void gw_dl_on_response(mesh_gw *g, req *r, uint64_t now, const mesh_gw_response *resp)
{
    int k = r->kind == RQ_DL_DASH ? DL_DASH : r->kind == RQ_DL_LOC ? DL_LOC
            : r->kind == RQ_DL_FORMS_SYNC ? DL_FORMS : (int)r->locale;
    int st = resp->net == MESH_GW_NET_OK ? resp->status : 0;
    json_t *j = st == 200 ? gw_parse(resp) : NULL;
    if (j == NULL) {
        if (st == 401) g->token[0] = g->cfg.token[0] ? g->token[0] : '\0';
        dl_failed(g, k, r, resp);
        dl_done(g, k, now, false);
        return;
    }
    bool ok = true;
    const mesh_gw_config *c = &g->cfg;
    switch (r->kind) {
    case RQ_DL_MDMS: {
        json_t *res = json_object_get(json_object_get(j, "MdmsRes"),
                                      k == DL_FORMS ? c->forms_module : c->sos_module);
        json_t *arr = json_object_get(res, k == DL_FORMS ? c->forms_master : c->sos_master);
        if (k == DL_FORMS) {
            if (arr) stage_forms(g, arr, c->mdms_path, now);
        } else if (json_is_array(arr)) {
            stage_if_changed(g, "sos/contacts", "sos", c->mdms_path, now, json_incref(arr));
        } else {
            ok = json_is_object(json_object_get(j, "MdmsRes"));
        }
        break;
    }
    case RQ_DL_FORMS_SYNC: {
        json_t *forms = json_object_get(j, "forms");
        ok = json_is_array(forms);
        if (ok) stage_forms(g, forms, c->forms_sync_path, now);
        break;
    }
    case RQ_DL_LOC: {
        json_t *msgs = json_object_get(j, "messages");
        ok = json_is_array(msgs);
        /* One dictionary per module: {code: message}. */
        json_t *by_module = json_object();
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m) {
            const char *mod = json_string_value(json_object_get(m, "module"));
            const char *code = json_string_value(json_object_get(m, "code"));
            json_t *text = json_object_get(m, "message");
            if (mod == NULL || code == NULL || !json_is_string(text)) continue;
            json_t *d = json_object_get(by_module, mod);
            if (d == NULL) {
                d = json_object();
                json_object_set_new(by_module, mod, d);
            }
            json_object_set(d, code, text);
        }
        const char *mod;
        json_t *d;
        const char *locale = c->locales[r->locale % (c->nlocales ? c->nlocales : 1)];
        json_object_foreach(by_module, mod, d) {
            char key[200];
            if (strlen(mod) > 120 || strchr(mod, '/')) continue;
            snprintf(key, sizeof key, "localization/%s/%s", mod, locale);
            stage_if_changed(g, key, "localization", c->localization_path, now, json_incref(d));
        }
        json_decref(by_module);
        /* The next locale now; after the last one, wait for the next round. */
        g->loc_next_locale++;
        g->dl_inflight[DL_LOC] = false;
        if (ok && g->loc_next_locale % c->nlocales != 0) {
            g->dl_next[DL_LOC] = now;
            json_decref(j);
            return;
        }
        break;
    }
    case RQ_DL_DASH: {
        json_t *d = json_object_get(j, "Dashboard");
        ok = json_is_object(d);
        if (ok) {
            /* generatedTime changes on every call: the item changes only when counts do. */
            json_t *v = json_deep_copy(d);
            json_object_del(v, "generatedTime");
            char key[128];
            snprintf(key, sizeof key, "dashboard/%s", c->tenant_id);
            stage_if_changed(g, key, "dashboard", c->dashboard_path, now, v);
        }
        break;
    }
    default: break;
    }
    json_decref(j);
    if (!ok) gw_log(g, 1, "%s: %s answered in an unexpected shape", r->what, r->path);
    dl_done(g, k, now, ok);
}
