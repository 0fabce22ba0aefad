/*
 * http.c - the libmicrohttpd glue: a daemon with a thread per connection, request bodies
 * buffered up to --max-body-bytes (413 beyond), multipart/form-data through MHD's post
 * processor, routing to the module handlers, fault injection before the handler, and gzip of
 * responses when the client sends Accept-Encoding: gzip (as DIGIT's gateways do).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "campaign.h"

/* Per-request state, from the first call of the access handler to the completion callback. */
typedef struct conn_state {
    cs_server *srv;
    cs_buf body;
    uint64_t received;
    bool too_large;
    bool form_bad;
    char form_problem[160];
    struct MHD_PostProcessor *pp;
    cs_req rq;
    int cur_file;             /* index of the file part being received, -1 none */
    int64_t start_ms;
} conn_state;

/* ---- Requests --------------------------------------------------------------------------------- */

const char *cs_req_query(const cs_req *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *cs_req_header(const cs_req *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

json_t *cs_req_json(const cs_req *rq, cs_resp *rs)
{
    if (rq->body_len == 0) {
        cs_resp_error(rs, 400, "INVALID_JSON", "the request body is empty; send a JSON object");
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb((const char *)rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        cs_resp_error(rs, 400, "INVALID_JSON", "the request body is not valid JSON: %s at line "
                      "%d column %d", jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        cs_resp_error(rs, 400, "INVALID_JSON", "the request body must be a JSON object");
        return NULL;
    }
    return v;
}

/* ---- Responses ------------------------------------------------------------------------------- */

static void resp_reset(cs_resp *rs)
{
    free(rs->body);
    rs->body = NULL;
    rs->len = 0;
}

void cs_resp_json(cs_resp *rs, int status, json_t *v)
{
    resp_reset(rs);
    rs->status = status;
    snprintf(rs->content_type, sizeof rs->content_type, "application/json; charset=utf-8");
    rs->body = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!rs->body) {
        rs->status = 500;
        rs->body = strdup("{\"ResponseInfo\":null,\"Errors\":[{\"code\":\"INTERNAL_ERROR\","
                          "\"message\":\"out of memory serialising the response\"}]}");
    }
    rs->len = rs->body ? strlen(rs->body) : 0;
}

void cs_resp_bytes(cs_resp *rs, int status, const char *content_type, const void *p, size_t n)
{
    resp_reset(rs);
    rs->status = status;
    snprintf(rs->content_type, sizeof rs->content_type, "%s", content_type);
    rs->body = malloc(n ? n : 1);
    if (!rs->body) {
        rs->status = 500;
        return;
    }
    if (n)
        memcpy(rs->body, p, n);
    rs->len = n;
}

void cs_resp_error(cs_resp *rs, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:s, s:s, s:s, s:n}", "code", code, "message", msg, "description",
                            msg, "params");
    cs_resp_json(rs, status, json_pack("{s:n, s:[o]}", "ResponseInfo", "Errors", err));
}

void cs_resp_header(cs_resp *rs, const char *name, const char *value)
{
    CS_ASSERT(rs->n_headers < CS_RESP_HEADERS_MAX);
    snprintf(rs->header_name[rs->n_headers], sizeof rs->header_name[0], "%s", name);
    snprintf(rs->header_value[rs->n_headers], sizeof rs->header_value[0], "%s", value);
    rs->n_headers++;
}

void cs_resp_store_error(cs_resp *rs, int rc, const char *what)
{
    cs_log("error", "%s: LMDB: %s", what, mdb_strerror(rc));
    if (rc == MDB_MAP_FULL)
        cs_resp_error(rs, 507, "STORE_FULL", "%s: the LMDB map is full; restart with a larger "
                      "--map-mb", what);
    else
        cs_resp_error(rs, 500, "STORE_ERROR", "%s: LMDB: %s", what, mdb_strerror(rc));
}

/* Whether Accept-Encoding admits gzip: a "gzip" or "*" token without q=0. */
static bool accepts_gzip(const char *ae)
{
    if (!ae)
        return false;
    const char *p = ae;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ')
            p++;
        size_t n = (size_t)(p - tok);
        bool match = (n == 4 && !strncasecmp(tok, "gzip", 4)) || (n == 1 && *tok == '*');
        bool q_zero = false;
        while (*p && *p != ',') {
            if (*p == 'q' && p[1] == '=') {
                double q = strtod(p + 2, NULL);
                q_zero = q <= 0.0;
            }
            p++;
        }
        if (match && !q_zero)
            return true;
    }
    return false;
}

static enum MHD_Result queue_resp(struct MHD_Connection *conn, cs_resp *rs, bool gzip_ok)
{
    uint8_t *gz = NULL;
    size_t gz_len = 0;
    bool gzipped = false;
    if (gzip_ok && rs->len > 0 && cs_gzip((const uint8_t *)rs->body, rs->len, &gz, &gz_len) == 0) {
        free(rs->body);
        rs->body = (char *)gz;
        rs->len = gz_len;
        gzipped = true;
    }
    struct MHD_Response *r;
    if (rs->body) {
        r = MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
        if (r)
            rs->body = NULL; /* owned by the response now */
    } else {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!r)
        return MHD_NO;
    if (rs->content_type[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type);
    if (gzipped)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    for (unsigned i = 0; i < rs->n_headers; i++)
        MHD_add_response_header(r, rs->header_name[i], rs->header_value[i]);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- Routing and stats ----------------------------------------------------------------------- */

static bool route_lookup(cs_server *srv, const char *path, cs_route *route)
{
    memset(route, 0, sizeof *route);
    if (cs_entities_route(path, route) || cs_mdms_route(path, route) ||
        cs_files_route(path, route) || cs_auth_route(path, route))
        return true;
    if (srv->cfg.test_endpoints && cs_test_route(path, route)) {
        route->is_test = true;
        return true;
    }
    return false;
}

static void stats_count(cs_server *srv, const char *route_name, int status)
{
    cs_stats *s = &srv->stats;
    pthread_mutex_lock(&s->mu);
    s->requests_total++;
    unsigned i;
    for (i = 0; i < s->n_routes; i++)
        if (!strcmp(s->route[i], route_name))
            break;
    if (i == s->n_routes && s->n_routes < CS_STAT_ROUTES_MAX) {
        snprintf(s->route[i], sizeof s->route[i], "%s", route_name);
        s->n_routes++;
    }
    if (i < s->n_routes)
        s->route_count[i]++;
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        s->by_class[cls]++;
    pthread_mutex_unlock(&s->mu);
}

/* ---- Multipart --------------------------------------------------------------------------------- */

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    (void)kind;
    (void)transfer_encoding;
    conn_state *cs = cls;
    cs_req *rq = &cs->rq;
    if (!key)
        return MHD_YES;
    if (filename) {
        if (strcmp(key, "file") != 0)
            return MHD_YES; /* the filestore reads only "file" parts */
        if (off == 0) {
            if (rq->n_files >= CS_FORM_FILES_MAX) {
                rq->form_overflow = true;
                snprintf(cs->form_problem, sizeof cs->form_problem,
                         "more than %u files in one upload", CS_FORM_FILES_MAX);
                return MHD_NO;
            }
            cs_form_file *f = &rq->files[rq->n_files++];
            snprintf(f->name, sizeof f->name, "%s", filename);
            snprintf(f->content_type, sizeof f->content_type, "%s",
                     content_type ? content_type : "application/octet-stream");
            cs_buf_init(&f->data, cs->srv->cfg.max_file_bytes);
            cs->cur_file = (int)rq->n_files - 1;
        }
        if (cs->cur_file < 0)
            return MHD_NO;
        if (size && cs_buf_append(&rq->files[cs->cur_file].data, data, size) != 0) {
            rq->form_overflow = true;
            snprintf(cs->form_problem, sizeof cs->form_problem,
                     "file '%s' is larger than --max-file-bytes (%zu)", filename,
                     cs->srv->cfg.max_file_bytes);
            return MHD_NO;
        }
        return MHD_YES;
    }
    /* A plain field, possibly delivered in pieces. */
    const char *prev = off ? cs_json_str(rq->form_fields, key) : NULL;
    size_t prev_len = prev ? strlen(prev) : 0;
    if (prev_len + size > CS_FORM_FIELD_BYTES_MAX) {
        rq->form_overflow = true;
        snprintf(cs->form_problem, sizeof cs->form_problem, "form field '%.40s' is larger than "
                 "%u bytes", key, CS_FORM_FIELD_BYTES_MAX);
        return MHD_NO;
    }
    char *joined = malloc(prev_len + size + 1);
    if (!joined)
        return MHD_NO;
    if (prev_len)
        memcpy(joined, prev, prev_len);
    if (size)
        memcpy(joined + prev_len, data, size);
    joined[prev_len + size] = 0;
    json_t *s = json_stringn_nocheck(joined, prev_len + size);
    free(joined);
    if (!s)
        return MHD_NO;
    json_object_set_new(rq->form_fields, key, s);
    return MHD_YES;
}

/* ---- The access handler ---------------------------------------------------------------------- */

static enum MHD_Result early_error(struct MHD_Connection *conn, int status, const char *code,
                                   const char *msg)
{
    cs_resp rs = {0};
    cs_resp_error(&rs, status, code, "%s", msg);
    enum MHD_Result r = queue_resp(conn, &rs, false);
    free(rs.body);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    cs_server *srv = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return MHD_NO;
        cs->srv = srv;
        cs->cur_file = -1;
        cs->start_ms = cs_mono_ms();
        cs_buf_init(&cs->body, srv->cfg.max_body_bytes);
        cs->rq.conn = conn;
        *con_cls = cs;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t n;
        if (cl && cs_parse_i64(cl, 0, INT64_MAX, &n) == 0 &&
            (uint64_t)n > srv->cfg.max_body_bytes) {
            /* Refuse before reading the body; MHD closes the connection afterwards. */
            char msg[160];
            snprintf(msg, sizeof msg, "the request body (%" PRId64 " bytes) exceeds the limit of "
                     "%zu bytes (--max-body-bytes)", n, srv->cfg.max_body_bytes);
            cs->too_large = true;
            stats_count(srv, "(too large)", 413);
            return early_error(conn, 413, "PAYLOAD_TOO_LARGE", msg);
        }
        const char *enc = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                      MHD_HTTP_HEADER_CONTENT_ENCODING);
        if (enc && strcasecmp(enc, "identity") != 0) {
            stats_count(srv, "(unsupported encoding)", 415);
            return early_error(conn, 415, "UNSUPPORTED_CONTENT_ENCODING",
                               "request bodies must not be encoded (Content-Encoding); DIGIT "
                               "services accept plain JSON and multipart bodies");
        }
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_TYPE);
        if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
            cs->rq.is_multipart = true;
            cs->rq.form_fields = json_object();
            cs->pp = MHD_create_post_processor(conn, 64 * 1024, post_iter, cs);
            if (!cs->pp || !cs->rq.form_fields) {
                cs->form_bad = true;
                snprintf(cs->form_problem, sizeof cs->form_problem,
                         "malformed multipart/form-data Content-Type (no boundary?)");
            }
        }
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        cs->received += n;
        if (cs->too_large || cs->form_bad || cs->rq.form_overflow)
            return MHD_YES; /* drain; the error is answered at the end */
        if (cs->received > srv->cfg.max_body_bytes) {
            cs->too_large = true;
            return MHD_YES;
        }
        if (cs->pp) {
            if (MHD_post_process(cs->pp, upload_data, n) != MHD_YES && !cs->rq.form_overflow) {
                cs->form_bad = true;
                snprintf(cs->form_problem, sizeof cs->form_problem,
                         "malformed multipart/form-data body");
            }
        } else if (cs_buf_append(&cs->body, upload_data, n) != 0) {
            cs->too_large = true;
        }
        return MHD_YES;
    }

    /* The whole request is in: route, inject faults, handle, respond. */
    cs_req *rq = &cs->rq;
    rq->method = method;
    rq->path = url;
    rq->body = cs->body.data ? cs->body.data : (const uint8_t *)"";
    rq->body_len = cs->body.len;

    cs_resp rs = {0};
    cs_route route;
    bool found = route_lookup(srv, url, &route);
    cs_fault_decision fault = {0};
    if (found && !route.is_test)
        fault = cs_faults_draw(srv, url, &route);

    if (!found) {
        cs_resp_error(&rs, 404, "NOT_FOUND", "no endpoint %s %s in this campaign service (see "
                      "docs/CAMPAIGN_SERVICE.md)", method, url);
    } else if (fault.fail_status) {
        cs_resp_error(&rs, fault.fail_status, "INJECTED_FAULT", "fault injected by --fail-rate: "
                      "%s %s was not processed", method, url);
    } else if (cs->too_large) {
        cs_resp_error(&rs, 413, "PAYLOAD_TOO_LARGE", "the request body exceeds the limit of %zu "
                      "bytes (--max-body-bytes)", srv->cfg.max_body_bytes);
    } else if (rq->form_overflow) {
        cs_resp_error(&rs, 413, "PAYLOAD_TOO_LARGE", "%s", cs->form_problem);
    } else if (cs->form_bad) {
        cs_resp_error(&rs, 400, "INVALID_MULTIPART", "%s", cs->form_problem);
    } else {
        rs.status = 500;
        rq->fault_drop = fault.drop;
        route.fn(srv, rq, &rs, route.arg);
    }
    stats_count(srv, found ? route.name : "(unmatched)", rs.status);
    if (fault.slow_ms)
        cs_server_sleep(srv, fault.slow_ms);
    if (cs_log_verbose)
        cs_log("info", "%s %s -> %d (%" PRId64 " ms)%s%s", method, url, rs.status,
               cs_mono_ms() - cs->start_ms, fault.fail_status ? " [fail]" : "",
               fault.slow_ms ? " [slow]" : "");
    bool gz = accepts_gzip(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_ACCEPT_ENCODING));
    enum MHD_Result ret = queue_resp(conn, &rs, gz);
    free(rs.body);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    conn_state *cs = *con_cls;
    if (!cs)
        return;
    if (cs->pp)
        MHD_destroy_post_processor(cs->pp);
    for (unsigned i = 0; i < cs->rq.n_files; i++)
        cs_buf_fini(&cs->rq.files[i].data);
    json_decref(cs->rq.form_fields);
    cs_buf_fini(&cs->body);
    free(cs);
    *con_cls = NULL;
}

/* ---- Daemon ------------------------------------------------------------------------------------ */

int cs_http_start(cs_server *srv)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(srv->cfg.listen_port);
    const char *host = srv->cfg.listen_host;
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        cs_log("error", "--listen: '%s' is not an IPv4 address", srv->cfg.listen_host);
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    srv->daemon = MHD_start_daemon(flags, srv->cfg.listen_port, NULL, NULL, on_request, srv,
                                   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                   MHD_OPTION_CONNECTION_LIMIT, (unsigned)CS_CONNECTIONS_MAX,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                   MHD_OPTION_END);
    if (!srv->daemon) {
        cs_log("error", "cannot listen on %s:%u (port in use, or not a local address?)",
               srv->cfg.listen_host, (unsigned)srv->cfg.listen_port);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->bound_port = di ? di->port : srv->cfg.listen_port;
    return 0;
}

void cs_http_stop(cs_server *srv)
{
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
}
