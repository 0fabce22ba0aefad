/*
 * config.c - This file implements the gateway configuration (gateway.h, mesh_gw_config_parse):
 * a JSON file whose every setting but the base URL and the credentials has a default, so that
 * pointing the gateway at a DIGIT deployment takes only those. docs/gateway.example.json shows
 * every setting; docs/GATEWAY.md explains them.
 *
 * Unknown keys are errors (a misspelt setting must not be silently ignored).
 */
#include "gateway/gateway.h"

#include "api/node_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static int bad(const char *what, const char *why)
{
    return mesh_err(MESH_EINVAL, "gateway configuration: %s %s", what, why);
}

/* Copies string setting `key` of `obj` into dst (cap bytes) if present. */
static int get_str(const json_t *obj, const char *key, const char *where, char *dst, size_t cap)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) return MESH_OK;
    char what[128];
    snprintf(what, sizeof what, "%s%s", where, key);
    if (!json_is_string(v)) return bad(what, "must be a string");
    if (json_string_length(v) >= cap) {
        char why[64];
        snprintf(why, sizeof why, "is longer than %zu bytes", cap - 1);
        return bad(what, why);
    }
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return MESH_OK;
}

static int get_u32(const json_t *obj, const char *key, const char *where, uint32_t lo, uint32_t hi,
                   uint32_t *dst)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) return MESH_OK;
    char what[128], why[96];
    snprintf(what, sizeof what, "%s%s", where, key);
    snprintf(why, sizeof why, "must be an integer from %u to %u", lo, hi);
    if (!json_is_integer(v)) return bad(what, why);
    json_int_t x = json_integer_value(v);
    if (x < (json_int_t)lo || x > (json_int_t)hi) return bad(what, why);
    *dst = (uint32_t)x;
    return MESH_OK;
}

static int get_bool(const json_t *obj, const char *key, const char *where, bool *dst)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) return MESH_OK;
    char what[128];
    snprintf(what, sizeof what, "%s%s", where, key);
    if (!json_is_boolean(v)) return bad(what, "must be true or false");
    *dst = json_is_true(v);
    return MESH_OK;
}

/* Refuses keys of `obj` that are not in `known` (NULL-terminated). */
static int check_keys(const json_t *obj, const char *where, const char *const *known)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++) ok = strcmp(key, known[i]) == 0;
        if (!ok) {
            char what[160];
            snprintf(what, sizeof what, "'%s%s'", where, key);
            return bad(what, "is not a setting (see docs/gateway.example.json)");
        }
    }
    (void)v;
    return MESH_OK;
}

static const json_t *section(const json_t *root, const char *key, int *rc)
{
    const json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) return NULL;
    if (!json_is_object(v)) {
        *rc = bad(key, "must be an object");
        return NULL;
    }
    return v;
}

static void set_defaults(mesh_gw_config *c, mesh_node *node)
{
    memset(c, 0, sizeof *c);
    snprintf(c->tenant_id, sizeof c->tenant_id, "mz");
    snprintf(c->user_type, sizeof c->user_type, "EMPLOYEE");
    snprintf(c->client_id, sizeof c->client_id, "egov-user-client");
    snprintf(c->token_path, sizeof c->token_path, "/user/oauth/token");
    snprintf(c->api_id, sizeof c->api_id, "meshsync-gateway");
    snprintf(c->api_ver, sizeof c->api_ver, "1.0");
    snprintf(c->locale, sizeof c->locale, "en_MZ");
    c->uplink = MESH_GW_UPLINK_BULK;
    c->batch_size = 100;
    c->concurrency = 4;
    c->linger_ms = 200;
    c->bulk_attempts = 2;
    c->retries = 6;
    c->backoff_base_ms = 500;
    c->backoff_max_ms = 60000;
    c->jitter_pct = 20;
    c->timeout_ms = 30000;
    c->confirm_delay_ms = 1000;
    c->confirm_window_ms = 30000;
    c->probe_ms = 5000;
    snprintf(c->mdms_path, sizeof c->mdms_path, "/mdms-v2/v1/_search");
    snprintf(c->localization_path, sizeof c->localization_path,
             "/localization/messages/v1/_search");
    snprintf(c->dashboard_path, sizeof c->dashboard_path, "/dashboard/v1/_search");
    snprintf(c->forms_sync_path, sizeof c->forms_sync_path, "/sync/forms/v1/_search");
    snprintf(c->filestore_path, sizeof c->filestore_path, "/filestore/v1/files");
    snprintf(c->filestore_url_path, sizeof c->filestore_url_path, "/filestore/v1/files/url");
    snprintf(c->sync_file_path, sizeof c->sync_file_path, "/sync/file/v1/_create");
    snprintf(c->sync_status_path, sizeof c->sync_status_path, "/sync/file/status/v1/_search");
    c->file_entries_max = 10000;
    c->file_poll_ms = 1000;
    snprintf(c->file_module, sizeof c->file_module, "meshsync");
    c->download_interval_ms = 900000;
    c->dl_forms = c->dl_localization = c->dl_sos = c->dl_dashboard = true;
    c->forms_source = MESH_GW_FORMS_MDMS;
    snprintf(c->forms_module, sizeof c->forms_module, "HCM-FORMS");
    snprintf(c->forms_master, sizeof c->forms_master, "Forms");
    snprintf(c->sos_module, sizeof c->sos_module, "HCM");
    snprintf(c->sos_master, sizeof c->sos_master, "CALL_SUPPORT");
    c->nlocales = 2;
    snprintf(c->locales[0], sizeof c->locales[0], "en_MZ");
    snprintf(c->locales[1], sizeof c->locales[1], "pt_MZ");
    /* Every configured entity type, parents first, with the endpoints of the node's types. */
    for (size_t i = 0; i < mesh_types_count(node->types) && i < MESH_TYPES_MAX; i++) {
        const mesh_type *t = mesh_types_at(node->types, i);
        mesh_gw_type *g = &c->types[c->ntypes++];
        snprintf(g->name, sizeof g->name, "%s", t->name);
        snprintf(g->path, sizeof g->path, "%s", t->path);
        snprintf(g->array_key, sizeof g->array_key, "%s", t->array_key);
        snprintf(g->single_key, sizeof g->single_key, "%s", t->single_key);
        snprintf(g->search_key, sizeof g->search_key, "%s", t->search_key);
        snprintf(g->response_key, sizeof g->response_key, "%s", t->response_key);
        g->rank = t->rank;
    }
}

static int parse_types(const json_t *v, mesh_node *node, mesh_gw_config *c)
{
    /* "types": ["household", ...] (forward only these) or {"household": {"path": ...}, ...}
     * (forward these, overriding endpoints). */
    mesh_gw_config all;
    memcpy(&all, c, sizeof all);
    c->ntypes = 0;
    if (json_is_array(v)) {
        size_t i;
        const json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_string(x)) return bad("types", "must list type names");
            const mesh_gw_type *t = NULL;
            for (size_t k = 0; k < all.ntypes && !t; k++)
                if (strcmp(all.types[k].name, json_string_value(x)) == 0) t = &all.types[k];
            if (t == NULL) {
                char what[96];
                snprintf(what, sizeof what, "types: '%s'", json_string_value(x));
                return bad(what, "is not an entity type of this node (meshsync init --types)");
            }
            c->types[c->ntypes++] = *t;
        }
        return MESH_OK;
    }
    if (!json_is_object(v)) return bad("types", "must be a list of names or an object");
    const char *name;
    const json_t *x;
    size_t order[MESH_TYPES_MAX];
    json_object_foreach((json_t *)v, name, x) {
        const mesh_gw_type *t = NULL;
        for (size_t k = 0; k < all.ntypes && !t; k++)
            if (strcmp(all.types[k].name, name) == 0) {
                t = &all.types[k];
                order[c->ntypes] = k;
            }
        char where[96];
        snprintf(where, sizeof where, "types.%s.", name);
        if (t == NULL) return bad(where, "is not an entity type of this node");
        if (!json_is_object(x)) return bad(where, "must be an object");
        static const char *const keys[] = {"path", "arrayKey", "singleKey", "searchKey",
                                           "responseKey", NULL};
        mesh_gw_type g = *t;
        int rc = check_keys(x, where, keys);
        if (rc == MESH_OK) rc = get_str(x, "path", where, g.path, sizeof g.path);
        if (rc == MESH_OK) rc = get_str(x, "arrayKey", where, g.array_key, sizeof g.array_key);
        if (rc == MESH_OK) rc = get_str(x, "singleKey", where, g.single_key, sizeof g.single_key);
        if (rc == MESH_OK) rc = get_str(x, "searchKey", where, g.search_key, sizeof g.search_key);
        if (rc == MESH_OK)
            rc = get_str(x, "responseKey", where, g.response_key, sizeof g.response_key);
        if (rc != MESH_OK) return rc;
        c->types[c->ntypes++] = g;
    }
    /* Keep the node's parents-first order whatever order the file lists them in. */
    for (size_t i = 1; i < c->ntypes; i++)
        for (size_t j = i; j > 0 && order[j - 1] > order[j]; j--) {
            mesh_gw_type tmp = c->types[j];
            c->types[j] = c->types[j - 1];
            c->types[j - 1] = tmp;
            size_t o = order[j];
            order[j] = order[j - 1];
            order[j - 1] = o;
        }
    (void)node;
    return MESH_OK;
}

static int parse_str_list(const json_t *v, const char *what, char (*dst)[64], size_t dst_size,
                          size_t max, size_t *n)
{
    if (!json_is_array(v)) return bad(what, "must be a list of strings");
    if (json_array_size(v) > max) {
        char why[64];
        snprintf(why, sizeof why, "may list at most %zu items", max);
        return bad(what, why);
    }
    *n = 0;
    size_t i;
    const json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x) || json_string_length(x) == 0 || json_string_length(x) >= dst_size)
            return bad(what, "must list non-empty short strings");
        memcpy(dst[(*n)++], json_string_value(x), json_string_length(x) + 1);
    }
    return MESH_OK;
}

static int parse_root(const json_t *root, mesh_node *node, mesh_gw_config *c)
{
    static const char *const keys[] = {"baseUrl", "tenantId", "auth", "requestInfo", "uplink",
                                       "retries", "timeoutMs", "confirm", "probeIntervalMs",
                                       "gzipRequests", "types", "endpoints", "file", "downloads",
                                       "record", "comment", NULL};
    int rc = check_keys(root, "", keys);
    if (rc == MESH_OK) rc = get_str(root, "baseUrl", "", c->base_url, sizeof c->base_url);
    if (rc == MESH_OK) rc = get_str(root, "tenantId", "", c->tenant_id, sizeof c->tenant_id);
    if (rc == MESH_OK) rc = get_u32(root, "timeoutMs", "", 100, 600000, &c->timeout_ms);
    if (rc == MESH_OK) rc = get_u32(root, "probeIntervalMs", "", 10, 3600000, &c->probe_ms);
    if (rc == MESH_OK) rc = get_bool(root, "gzipRequests", "", &c->gzip_requests);
    if (rc == MESH_OK) rc = get_str(root, "record", "", c->record_path, sizeof c->record_path);
    if (rc != MESH_OK) return rc;

    const json_t *s;
    if ((s = section(root, "auth", &rc))) {
        static const char *const k[] = {"username", "password", "userType", "clientId",
                                        "clientSecret", "token", "tokenPath", NULL};
        if ((rc = check_keys(s, "auth.", k)) != MESH_OK ||
            (rc = get_str(s, "username", "auth.", c->username, sizeof c->username)) ||
            (rc = get_str(s, "password", "auth.", c->password, sizeof c->password)) ||
            (rc = get_str(s, "userType", "auth.", c->user_type, sizeof c->user_type)) ||
            (rc = get_str(s, "clientId", "auth.", c->client_id, sizeof c->client_id)) ||
            (rc = get_str(s, "clientSecret", "auth.", c->client_secret, sizeof c->client_secret)) ||
            (rc = get_str(s, "token", "auth.", c->token, sizeof c->token)) ||
            (rc = get_str(s, "tokenPath", "auth.", c->token_path, sizeof c->token_path)))
            return rc;
    }
    if (rc != MESH_OK) return rc;
    if ((s = section(root, "requestInfo", &rc))) {
        static const char *const k[] = {"apiId", "ver", "locale", NULL};
        if ((rc = check_keys(s, "requestInfo.", k)) ||
            (rc = get_str(s, "apiId", "requestInfo.", c->api_id, sizeof c->api_id)) ||
            (rc = get_str(s, "ver", "requestInfo.", c->api_ver, sizeof c->api_ver)) ||
            (rc = get_str(s, "locale", "requestInfo.", c->locale, sizeof c->locale)))
            return rc;
    }
    if (rc != MESH_OK) return rc;
    if ((s = section(root, "uplink", &rc))) {
        static const char *const k[] = {"mode", "batchSize", "concurrency", "lingerMs",
                                        "bulkAttempts", NULL};
        char mode[16] = "";
        if ((rc = check_keys(s, "uplink.", k)) ||
            (rc = get_str(s, "mode", "uplink.", mode, sizeof mode)) ||
            (rc = get_u32(s, "batchSize", "uplink.", 1, MESH_GW_BATCH_MAX, &c->batch_size)) ||
            (rc = get_u32(s, "concurrency", "uplink.", 1, MESH_GW_CONCURRENCY_MAX,
                          &c->concurrency)) ||
            (rc = get_u32(s, "lingerMs", "uplink.", 0, 60000, &c->linger_ms)) ||
            (rc = get_u32(s, "bulkAttempts", "uplink.", 1, 100, &c->bulk_attempts)))
            return rc;
        if (mode[0] && strcmp(mode, "bulk") == 0) c->uplink = MESH_GW_UPLINK_BULK;
        else if (mode[0] && strcmp(mode, "file") == 0) c->uplink = MESH_GW_UPLINK_FILE;
        else if (mode[0]) return bad("uplink.mode", "must be \"bulk\" or \"file\"");
    }
    if (rc != MESH_OK) return rc;
    if ((s = section(root, "retries", &rc))) {
        static const char *const k[] = {"count", "baseMs", "maxMs", "jitterPct", NULL};
        if ((rc = check_keys(s, "retries.", k)) ||
            (rc = get_u32(s, "count", "retries.", 0, 1000, &c->retries)) ||
            (rc = get_u32(s, "baseMs", "retries.", 1, 3600000, &c->backoff_base_ms)) ||
            (rc = get_u32(s, "maxMs", "retries.", 1, 86400000, &c->backoff_max_ms)) ||
            (rc = get_u32(s, "jitterPct", "retries.", 0, 100, &c->jitter_pct)))
            return rc;
        if (c->backoff_max_ms < c->backoff_base_ms)
            return bad("retries.maxMs", "must be at least retries.baseMs");
    }
    if (rc != MESH_OK) return rc;
    if ((s = section(root, "confirm", &rc))) {
        static const char *const k[] = {"delayMs", "windowMs", NULL};
        if ((rc = check_keys(s, "confirm.", k)) ||
            (rc = get_u32(s, "delayMs", "confirm.", 0, 3600000, &c->confirm_delay_ms)) ||
            (rc = get_u32(s, "windowMs", "confirm.", 1, 86400000, &c->confirm_window_ms)))
            return rc;
    }
    if (rc != MESH_OK) return rc;
    const json_t *types = json_object_get(root, "types");
    if (types && !json_is_null(types) && (rc = parse_types(types, node, c)) != MESH_OK) return rc;
    if ((s = section(root, "endpoints", &rc))) {
        static const char *const k[] = {"mdms", "localization", "dashboard", "formsSync",
                                        "filestore", "filestoreUrl", "syncFile", "syncFileStatus",
                                        NULL};
        if ((rc = check_keys(s, "endpoints.", k)) ||
            (rc = get_str(s, "mdms", "endpoints.", c->mdms_path, sizeof c->mdms_path)) ||
            (rc = get_str(s, "localization", "endpoints.", c->localization_path,
                          sizeof c->localization_path)) ||
            (rc = get_str(s, "dashboard", "endpoints.", c->dashboard_path,
                          sizeof c->dashboard_path)) ||
            (rc = get_str(s, "formsSync", "endpoints.", c->forms_sync_path,
                          sizeof c->forms_sync_path)) ||
            (rc = get_str(s, "filestore", "endpoints.", c->filestore_path,
                          sizeof c->filestore_path)) ||
            (rc = get_str(s, "filestoreUrl", "endpoints.", c->filestore_url_path,
                          sizeof c->filestore_url_path)) ||
            (rc = get_str(s, "syncFile", "endpoints.", c->sync_file_path,
                          sizeof c->sync_file_path)) ||
            (rc = get_str(s, "syncFileStatus", "endpoints.", c->sync_status_path,
                          sizeof c->sync_status_path)))
            return rc;
    }
    if (rc != MESH_OK) return rc;
    if ((s = section(root, "file", &rc))) {
        static const char *const k[] = {"maxEntries", "pollMs", "campaignId", "module", NULL};
        if ((rc = check_keys(s, "file.", k)) ||
            (rc = get_u32(s, "maxEntries", "file.", 1, MESH_GW_FILE_ENTRIES_MAX,
                          &c->file_entries_max)) ||
            (rc = get_u32(s, "pollMs", "file.", 10, 3600000, &c->file_poll_ms)) ||
            (rc = get_str(s, "campaignId", "file.", c->campaign_id, sizeof c->campaign_id)) ||
            (rc = get_str(s, "module", "file.", c->file_module, sizeof c->file_module)))
            return rc;
    }
    if (rc != MESH_OK) return rc;
    if ((s = section(root, "downloads", &rc))) {
        static const char *const k[] = {"intervalS", "forms", "formsSource", "formsModule",
                                        "formsMaster", "localization", "locales",
                                        "localizationModules", "sos", "sosModule", "sosMaster",
                                        "dashboard", NULL};
        uint32_t ivl = c->download_interval_ms / 1000;
        char src[16] = "";
        if ((rc = check_keys(s, "downloads.", k)) ||
            (rc = get_u32(s, "intervalS", "downloads.", 1, 7u * 86400u, &ivl)) ||
            (rc = get_bool(s, "forms", "downloads.", &c->dl_forms)) ||
            (rc = get_str(s, "formsSource", "downloads.", src, sizeof src)) ||
            (rc = get_str(s, "formsModule", "downloads.", c->forms_module,
                          sizeof c->forms_module)) ||
            (rc = get_str(s, "formsMaster", "downloads.", c->forms_master,
                          sizeof c->forms_master)) ||
            (rc = get_bool(s, "localization", "downloads.", &c->dl_localization)) ||
            (rc = get_bool(s, "sos", "downloads.", &c->dl_sos)) ||
            (rc = get_str(s, "sosModule", "downloads.", c->sos_module, sizeof c->sos_module)) ||
            (rc = get_str(s, "sosMaster", "downloads.", c->sos_master, sizeof c->sos_master)) ||
            (rc = get_bool(s, "dashboard", "downloads.", &c->dl_dashboard)))
            return rc;
        c->download_interval_ms = ivl * 1000u;
        if (src[0] && strcmp(src, "mdms") == 0) c->forms_source = MESH_GW_FORMS_MDMS;
        else if (src[0] && strcmp(src, "sync") == 0) c->forms_source = MESH_GW_FORMS_SYNC;
        else if (src[0]) return bad("downloads.formsSource", "must be \"mdms\" or \"sync\"");
        const json_t *l = json_object_get(s, "locales");
        if (l && !json_is_null(l)) {
            char tmp[MESH_GW_LOCALES_MAX][64];
            size_t n = 0;
            if ((rc = parse_str_list(l, "downloads.locales", tmp, 16, MESH_GW_LOCALES_MAX, &n)))
                return rc;
            c->nlocales = n;
            for (size_t i = 0; i < n; i++) snprintf(c->locales[i], sizeof c->locales[i], "%s", tmp[i]);
        }
        l = json_object_get(s, "localizationModules");
        if (l && !json_is_null(l) &&
            (rc = parse_str_list(l, "downloads.localizationModules", c->loc_modules, 64,
                                 MESH_GW_LOC_MODULES_MAX, &c->nloc_modules)))
            return rc;
    }
    return rc;
}

int mesh_gw_config_parse(const char *json, size_t len, mesh_node *node, mesh_gw_config *cfg)
{
    set_defaults(cfg, node);
    json_error_t e;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
    if (root == NULL)
        return mesh_err(MESH_EINVAL, "gateway configuration: JSON error at line %d column %d: %s",
                        e.line, e.column, e.text);
    int rc = json_is_object(root) ? parse_root(root, node, cfg)
                                  : bad("file", "must hold a JSON object");
    json_decref(root);
    if (rc != MESH_OK) return rc;
    size_t n = strlen(cfg->base_url);
    while (n > 0 && cfg->base_url[n - 1] == '/') cfg->base_url[--n] = '\0';
    if (n == 0)
        return bad("baseUrl", "is required: the campaign service's URL, e.g. "
                              "\"https://hcm.example.org\"");
    if (strncmp(cfg->base_url, "http://", 7) != 0 && strncmp(cfg->base_url, "https://", 8) != 0)
        return bad("baseUrl", "must start with http:// or https://");
    if (cfg->token[0] == '\0' && (cfg->username[0] == '\0' || cfg->password[0] == '\0'))
        return bad("auth", "needs username and password (or a fixed token)");
    if (cfg->tenant_id[0] == '\0') return bad("tenantId", "must not be empty");
    if (cfg->ntypes == 0) return bad("types", "leaves no entity type to forward");
    return MESH_OK;
}
