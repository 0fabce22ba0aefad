/*
 * auth.c - DIGIT egov-user's token endpoint and the token check of every protected endpoint.
 *
 * POST /user/oauth/token takes an application/x-www-form-urlencoded body (grant_type=password
 * with username, password, tenantId, userType, scope; or grant_type=refresh_token with
 * refresh_token) and an `Authorization: Basic base64(client:secret)` header, and answers the
 * Spring OAuth2 shape that egov-user produces (access_token, token_type, refresh_token,
 * expires_in, scope, ResponseInfo, UserRequest). Failures are Spring OAuth2 errors
 * ({"error", "error_description"}), as the real service answers. Tokens live in LMDB, so they
 * survive a restart like the real service's Redis-backed tokens.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "campaign.h"

static void user_uuid(const char *name, char out[37])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    char in[160];
    snprintf(in, sizeof in, "meshsync-campaign user %s", name);
    crypto_hash_sha256(h, (const uint8_t *)in, strlen(in));
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x40);
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12],
             h[13], h[14], h[15]);
}

static bool valid_type(const char *t)
{
    return !strcmp(t, "EMPLOYEE") || !strcmp(t, "CITIZEN") || !strcmp(t, "SYSTEM");
}

static int add_user(cs_config *cfg, const char *name, const char *password, const char *tenant,
                    const char *type, const json_t *roles)
{
    if (cfg->n_users >= CS_USERS_MAX || !name || !*name || !password || !tenant || !*tenant ||
        strlen(name) > 64 || strlen(password) > 64 || strlen(tenant) > 64 ||
        (type && (strlen(type) > 16 || !valid_type(type))))
        return -1;
    cs_user *u = &cfg->users[cfg->n_users];
    memset(u, 0, sizeof *u);
    snprintf(u->user_name, sizeof u->user_name, "%s", name);
    snprintf(u->password, sizeof u->password, "%s", password);
    snprintf(u->tenant_id, sizeof u->tenant_id, "%s", tenant);
    snprintf(u->type, sizeof u->type, "%s", type ? type : "EMPLOYEE");
    user_uuid(name, u->uuid);
    if (json_is_array(roles)) {
        u->roles = json_deep_copy(roles);
    } else {
        u->roles = json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:s}]", "name", "Registrar", "code",
                             "REGISTRAR", "tenantId", tenant, "name", "Distributor", "code",
                             "DISTRIBUTOR", "tenantId", tenant);
    }
    cfg->n_users++;
    return 0;
}

int cs_auth_add_user_spec(cs_config *cfg, const char *spec)
{
    char buf[256];
    if (strlen(spec) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    char *name = strtok_r(buf, ":", &save);
    char *password = strtok_r(NULL, ":", &save);
    char *tenant = strtok_r(NULL, ":", &save);
    char *type = strtok_r(NULL, ":", &save);
    return add_user(cfg, name, password, tenant ? tenant : "mz", type, NULL);
}

int cs_auth_load_seed_users(cs_config *cfg, const json_t *seed)
{
    const json_t *users = json_object_get(seed, "users");
    const char *default_tenant = cs_json_str(seed, "tenantId");
    size_t i;
    const json_t *u;
    json_array_foreach(users, i, u) {
        const char *tenant = cs_json_str(u, "tenantId");
        if (add_user(cfg, cs_json_str(u, "userName"), cs_json_str(u, "password"),
                     tenant ? tenant : (default_tenant ? default_tenant : "mz"),
                     cs_json_str(u, "type"), json_object_get(u, "roles")) != 0) {
            cs_log("error", "seed: users[%zu] needs userName, password (at most 64 bytes each) "
                   "and a type of EMPLOYEE, CITIZEN or SYSTEM", i);
            return -1;
        }
    }
    return 0;
}

void cs_auth_fini(cs_config *cfg)
{
    for (unsigned i = 0; i < cfg->n_users; i++)
        json_decref(cfg->users[i].roles);
    cfg->n_users = 0;
}

static const cs_user *find_user(const cs_config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->n_users; i++)
        if (!strcmp(cfg->users[i].user_name, name))
            return &cfg->users[i];
    return NULL;
}

/* ---- The token check ---------------------------------------------------------------------------- */

const char *cs_auth_token(const cs_req *rq, const json_t *ri)
{
    const char *t = cs_json_str(ri, "authToken");
    if (t && *t)
        return t;
    t = cs_req_header(rq, "auth-token");
    if (t && *t)
        return t;
    t = cs_req_header(rq, "Authorization");
    if (t && !strncasecmp(t, "Bearer ", 7))
        return t + 7;
    return NULL;
}

/* Looks up a token of `kind`; returns 1 valid (who filled), 0 invalid, or -rc on store error. */
static int token_lookup(cs_server *srv, const char *token, const char *kind, cs_principal *who)
{
    if (strlen(token) > 128)
        return 0;
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc)
        return -1;
    json_t *rec = NULL;
    rc = cs_store_get_json(txn, srv->store.tokens, token, strlen(token), &rec);
    mdb_txn_abort(txn);
    if (rc)
        return -1;
    int ok = rec && !strcmp(cs_json_str(rec, "kind") ? cs_json_str(rec, "kind") : "", kind) &&
             json_integer_value(json_object_get(rec, "expires")) > cs_now_ms();
    if (ok && who) {
        snprintf(who->user_name, sizeof who->user_name, "%s", cs_json_str(rec, "userName"));
        snprintf(who->uuid, sizeof who->uuid, "%s", cs_json_str(rec, "uuid"));
        snprintf(who->tenant_id, sizeof who->tenant_id, "%s", cs_json_str(rec, "tenantId"));
    }
    json_decref(rec);
    return ok;
}

bool cs_auth_check(cs_server *srv, const cs_req *rq, const json_t *request_info, cs_resp *rs,
                   cs_principal *who)
{
    memset(who, 0, sizeof *who);
    const char *token = cs_auth_token(rq, request_info);
    int r = token ? token_lookup(srv, token, "access", who) : 0;
    if (r < 0) {
        cs_resp_error(rs, 500, "STORE_ERROR", "reading tokens failed");
        return false;
    }
    if (r == 1)
        return true;
    if (!srv->cfg.auth_required) {
        snprintf(who->user_name, sizeof who->user_name, "anonymous");
        snprintf(who->uuid, sizeof who->uuid, "00000000-0000-0000-0000-000000000000");
        return true;
    }
    /* The DIGIT API gateway answers an unknown or missing token this way. */
    cs_resp_error(rs, 401, "InvalidAccessTokenException", "%s",
                  token ? "Access token is invalid or expired; get a new one from "
                          "POST /user/oauth/token"
                        : "No access token: send RequestInfo.authToken (or an auth-token "
                          "header) from POST /user/oauth/token");
    return false;
}

/* ---- The token endpoint ------------------------------------------------------------------------- */

static void oauth_error(cs_resp *rs, int status, const char *error, const char *description)
{
    cs_resp_json(rs, status, json_pack("{s:s, s:s}", "error", error, "error_description",
                                       description));
}

static bool client_ok(const cs_config *cfg, const cs_req *rq)
{
    const char *h = cs_req_header(rq, "Authorization");
    if (!h || strncasecmp(h, "Basic ", 6) != 0)
        return false;
    h += 6;
    while (*h == ' ')
        h++;
    char decoded[200];
    size_t n = 0;
    if (sodium_base642bin((unsigned char *)decoded, sizeof decoded - 1, h, strlen(h), NULL, &n,
                          NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
        return false;
    decoded[n] = 0;
    for (unsigned i = 0; i < cfg->n_clients; i++)
        if (!strcmp(cfg->clients[i], decoded))
            return true;
    return false;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Finds `name` in an x-www-form-urlencoded body and decodes its value into out. */
static bool form_value(const uint8_t *body, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i > nl && !memcmp(body + i, name, nl) && body[i + nl] == '=') {
            size_t o = 0;
            for (size_t j = i + nl + 1; j < end && o + 1 < cap; j++) {
                int c = body[j];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && j + 2 < end) {
                    int hi = hexval(body[j + 1]), lo = hexval(body[j + 2]);
                    if (hi >= 0 && lo >= 0) {
                        c = hi * 16 + lo;
                        j += 2;
                    }
                }
                out[o++] = (char)c;
            }
            out[o] = 0;
            return true;
        }
        i = end + 1;
    }
    return false;
}

static bool param(const cs_req *rq, const char *name, char *out, size_t cap)
{
    if (form_value(rq->body, rq->body_len, name, out, cap))
        return true;
    const char *q = cs_req_query(rq, name);
    if (q) {
        snprintf(out, cap, "%s", q);
        return true;
    }
    out[0] = 0;
    return false;
}

static int store_token(cs_server *srv, MDB_txn *txn, const char *token, const char *kind,
                       const cs_user *u, int64_t expires)
{
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind", kind, "userName", u->user_name,
                            "uuid", u->uuid, "tenantId", u->tenant_id, "expires", expires);
    if (!rec)
        return ENOMEM;
    int rc = cs_store_put_json(txn, srv->store.tokens, token, strlen(token), rec);
    json_decref(rec);
    return rc;
}

static void issue(cs_server *srv, cs_resp *rs, const cs_user *u, const char *old_refresh)
{
    char access[37], refresh[37];
    cs_uuid(access);
    cs_uuid(refresh);
    int64_t now = cs_now_ms(), ttl_ms = srv->cfg.token_ttl_s * 1000;
    MDB_txn *txn = NULL;
    int rc = cs_store_begin(&srv->store, true, &txn);
    if (!rc)
        rc = store_token(srv, txn, access, "access", u, now + ttl_ms);
    if (!rc)
        rc = store_token(srv, txn, refresh, "refresh", u, now + 2 * ttl_ms);
    if (!rc && old_refresh) {
        MDB_val k = {strlen(old_refresh), (void *)(uintptr_t)old_refresh};
        rc = mdb_del(txn, srv->store.tokens, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (!rc)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "storing the token");
        return;
    }
    unsigned index = (unsigned)(u - srv->cfg.users);
    json_t *user = json_pack("{s:I, s:s, s:s, s:s, s:n, s:n, s:n, s:s, s:O, s:b, s:s, s:n}",
                             "id", (json_int_t)index + 1, "uuid", u->uuid, "userName",
                             u->user_name, "name", u->user_name, "mobileNumber", "emailId",
                             "locale", "type", u->type, "roles", u->roles, "active", 1,
                             "tenantId", u->tenant_id, "permanentCity");
    json_t *ri = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "api_id", "", "ver", "", "ts", "",
                           "res_msg_id", "", "msg_id", "", "status",
                           "Access Token generated successfully");
    cs_resp_json(rs, 200, json_pack("{s:s, s:s, s:s, s:I, s:s, s:o, s:o}", "access_token",
                                    access, "token_type", "bearer", "refresh_token", refresh,
                                    "expires_in", (json_int_t)srv->cfg.token_ttl_s, "scope",
                                    "read", "ResponseInfo", ri, "UserRequest", user));
}

static void handle_token(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    if (strcmp(rq->method, "POST") != 0) {
        oauth_error(rs, 405, "method_not_allowed", "Request method not supported; use POST");
        return;
    }
    if (!client_ok(&srv->cfg, rq)) {
        oauth_error(rs, 401, "unauthorized",
                    "Full authentication is required to access this resource (send "
                    "Authorization: Basic base64(egov-user-client:<secret>))");
        return;
    }
    char grant[32], user[80], password[80], tenant[80], type[32], refresh[80];
    param(rq, "grant_type", grant, sizeof grant);
    if (!strcmp(grant, "refresh_token")) {
        cs_principal who;
        if (!param(rq, "refresh_token", refresh, sizeof refresh) ||
            token_lookup(srv, refresh, "refresh", &who) != 1) {
            oauth_error(rs, 400, "invalid_grant", "Invalid refresh token");
            return;
        }
        const cs_user *u = find_user(&srv->cfg, who.user_name);
        if (!u) {
            oauth_error(rs, 400, "invalid_grant", "Invalid refresh token");
            return;
        }
        issue(srv, rs, u, refresh);
        return;
    }
    if (strcmp(grant, "password") != 0) {
        oauth_error(rs, 400, "unsupported_grant_type", "Unsupported grant type");
        return;
    }
    param(rq, "username", user, sizeof user);
    param(rq, "password", password, sizeof password);
    if (!param(rq, "tenantId", tenant, sizeof tenant) || !*tenant) {
        oauth_error(rs, 400, "invalid_request", "TenantId is mandatory");
        return;
    }
    if (!param(rq, "userType", type, sizeof type) || !valid_type(type)) {
        oauth_error(rs, 400, "invalid_request", "User Type is mandatory and has to be a valid type");
        return;
    }
    const cs_user *u = find_user(&srv->cfg, user);
    /* A user logs in at its own tenant or at its state-level tenant ("mz" for "mz.nampula"). */
    size_t tl = strlen(tenant);
    bool tenant_ok = u && (!strcmp(u->tenant_id, tenant) ||
                           (!strncmp(u->tenant_id, tenant, tl) && u->tenant_id[tl] == '.'));
    if (!u || !tenant_ok || strcmp(u->type, type) != 0 || strcmp(u->password, password) != 0) {
        oauth_error(rs, 400, "invalid_request", "Invalid login credentials");
        return;
    }
    issue(srv, rs, u, NULL);
}

static void handle_logout(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    (void)arg;
    const char *token = cs_req_query(rq, "access_token");
    if (!token || !*token || strlen(token) > 128) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "access_token is required");
        return;
    }
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, true, &txn);
    if (!rc) {
        MDB_val k = {strlen(token), (void *)(uintptr_t)token};
        rc = mdb_del(txn, srv->store.tokens, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        if (!rc)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc) {
        cs_resp_store_error(rs, rc, "removing the token");
        return;
    }
    cs_resp_json(rs, 200, json_pack("{s:{s:s, s:s}}", "ResponseInfo", "status",
                                    "Logout successfully", "resMsgId", "uief87324"));
}

bool cs_auth_route(const char *path, cs_route *route)
{
    if (!strcmp(path, "/user/oauth/token")) {
        route->fn = handle_token;
    } else if (!strcmp(path, "/user/_logout")) {
        route->fn = handle_logout;
    } else {
        return false;
    }
    snprintf(route->name, sizeof route->name, "%s", path);
    return true;
}
