/*
 * curl_driver.c - This file implements the gateway's HTTP driver (curl_driver.h) with libcurl's
 * multi interface. Each request of the core becomes one easy handle; the multi handle keeps
 * connections alive between them and runs up to the core's concurrency at once. Responses are
 * decoded (gzip) by curl. A transfer that gets no HTTP response is reported to the core as
 * CONNECT (the request did not leave: nothing was sent), TIMEOUT or OTHER (it may have been
 * processed), which is what the core's exactly-once reasoning needs.
 */
#include "gateway/curl_driver.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zlib.h>

typedef struct xfer {
    CURL *easy;
    uint64_t id;
    struct curl_slist *headers;
    mesh_buf resp;
    mesh_buf gz;               /* the gzipped body, when gzip_requests */
    char errbuf[CURL_ERROR_SIZE];
    bool used;
} xfer;

struct mesh_gw_driver {
    mesh_gw *g;
    CURLM *multi;
    char base_url[512];
    bool gzip_requests, measure_gzip;
    FILE *record;
    xfer x[MESH_GW_CONCURRENCY_MAX];
    unsigned inflight;
    mesh_gw_driver_stats st;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int mesh_gw_driver_new(mesh_gw *g, const mesh_gw_driver_opts *o, mesh_gw_driver **out)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return mesh_err(MESH_EIO, "cannot initialise libcurl: %s", curl_easy_strerror(curl_init_rc));
    mesh_gw_driver *d = calloc(1, sizeof *d);
    if (d == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
    d->g = g;
    snprintf(d->base_url, sizeof d->base_url, "%s", o->base_url);
    d->gzip_requests = o->gzip_requests;
    d->measure_gzip = o->measure_gzip;
    d->multi = curl_multi_init();
    if (d->multi == NULL) {
        free(d);
        return mesh_err(MESH_EIO, "cannot create a curl multi handle");
    }
    curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MESH_GW_CONCURRENCY_MAX);
    for (size_t i = 0; i < MESH_GW_CONCURRENCY_MAX; i++) {
        mesh_buf_init(&d->x[i].resp, MESH_GW_RESPONSE_BYTES_MAX);
        mesh_buf_init(&d->x[i].gz, 256u * 1024u * 1024u);
    }
    if (o->record_path) {
        d->record = fopen(o->record_path, "a");
        if (d->record == NULL) {
            int rc = mesh_err(MESH_EIO, "cannot open the request record %s: %s", o->record_path,
                              strerror(errno));
            mesh_gw_driver_free(d);
            return rc;
        }
    }
    *out = d;
    return MESH_OK;
}

static void xfer_end(mesh_gw_driver *d, xfer *x)
{
    if (!x->used) return;
    curl_multi_remove_handle(d->multi, x->easy);
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    x->easy = NULL;
    x->headers = NULL;
    x->used = false;
    d->inflight--;
}

void mesh_gw_driver_free(mesh_gw_driver *d)
{
    if (d == NULL) return;
    for (size_t i = 0; i < MESH_GW_CONCURRENCY_MAX; i++) {
        xfer_end(d, &d->x[i]);
        mesh_buf_fini(&d->x[i].resp);
        mesh_buf_fini(&d->x[i].gz);
    }
    if (d->multi) curl_multi_cleanup(d->multi);
    if (d->record) fclose(d->record);
    free(d);
}

unsigned mesh_gw_driver_inflight(const mesh_gw_driver *d) { return d->inflight; }

void mesh_gw_driver_stats_get(const mesh_gw_driver *d, mesh_gw_driver_stats *out) { *out = d->st; }

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    xfer *x = ctx;
    size_t len = size * n;
    if (mesh_buf_append(&x->resp, p, len) != MESH_OK) return 0; /* over the limit: abort */
    return len;
}

/* Writes the request to the record file: secrets (Authorization, tokens, passwords) are not. */
static void record(mesh_gw_driver *d, const mesh_gw_request *r, uint64_t now)
{
    json_t *o = json_pack("{s:I, s:s, s:s}", "ts", (json_int_t)now, "method", r->method, "path",
                          r->path);
    if (o == NULL) return;
    if (r->content_type) json_object_set_new(o, "contentType", json_string(r->content_type));
    json_object_set_new(o, "authorization", json_boolean(r->authorization != NULL));
    json_object_set_new(o, "authTokenHeader", json_boolean(r->auth_token != NULL));
    json_t *body = NULL;
    if (r->body_len && r->content_type && strncmp(r->content_type, "application/json", 16) == 0)
        body = json_loadb((const char *)r->body, r->body_len, 0, NULL);
    if (body) {
        /* The token is a secret: keep whether it was there. */
        json_t *ri = json_object_get(body, "RequestInfo");
        if (ri == NULL) ri = json_object_get(body, "requestInfo");
        if (json_is_object(ri) && json_object_get(ri, "authToken"))
            json_object_set_new(ri, "authToken", json_string("<redacted>"));
        json_object_set_new(o, "body", body);
    } else if (r->body_len) {
        json_object_set_new(o, "bodyBytes", json_integer((json_int_t)r->body_len));
        bool form = r->content_type &&
                    strncmp(r->content_type, "application/x-www-form-urlencoded", 33) == 0;
        bool multi = r->content_type && strncmp(r->content_type, "multipart/form-data", 19) == 0;
        json_object_set_new(o, "bodyKind", json_string(form ? "form" : multi ? "multipart" : "binary"));
        /* The names of the fields, never their values (a password is one). */
        json_t *names = json_array();
        if (form) {
            const char *p = (const char *)r->body, *end = p + r->body_len;
            while (p < end) {
                const char *amp = memchr(p, '&', (size_t)(end - p));
                const char *stop = amp ? amp : end;
                const char *eq = memchr(p, '=', (size_t)(stop - p));
                json_array_append_new(names, json_stringn(p, (size_t)((eq ? eq : stop) - p)));
                p = stop + 1;
            }
        } else if (multi) {
            const char *p = (const char *)r->body, *end = p + r->body_len;
            static const char tag[] = "Content-Disposition: form-data; name=\"";
            while ((p = memmem(p, (size_t)(end - p), tag, sizeof tag - 1)) != NULL) {
                p += sizeof tag - 1;
                const char *q = memchr(p, '"', (size_t)(end - p));
                if (q == NULL) break;
                json_array_append_new(names, json_stringn(p, (size_t)(q - p)));
                p = q;
            }
        }
        json_object_set_new(o, "formFields", names);
    }
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (line) {
        fprintf(d->record, "%s\n", line);
        fflush(d->record);
        free(line);
    }
}

static size_t gzip_size(const uint8_t *p, size_t n)
{
    uLongf cap = compressBound((uLong)n) + 32;
    uint8_t *out = malloc(cap);
    if (out == NULL) return 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    size_t res = 0;
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK) {
        z.next_in = (Bytef *)p;
        z.avail_in = (uInt)n;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_FINISH) == Z_STREAM_END) res = cap - z.avail_out;
        deflateEnd(&z);
    }
    free(out);
    return res;
}

static int submit(mesh_gw_driver *d, const mesh_gw_request *r, uint64_t now)
{
    xfer *x = NULL;
    for (size_t i = 0; i < MESH_GW_CONCURRENCY_MAX && x == NULL; i++)
        if (!d->x[i].used) x = &d->x[i];
    if (x == NULL) return mesh_err(MESH_EINTERNAL, "more requests than transfer slots");
    if (d->record) record(d, r, now);
    x->easy = curl_easy_init();
    if (x->easy == NULL) return mesh_err(MESH_ENOMEM, "cannot create a curl handle");
    x->used = true;
    x->id = r->id;
    x->errbuf[0] = '\0';
    mesh_buf_reset(&x->resp);
    d->inflight++;
    char url[2600];
    snprintf(url, sizeof url, "%s%s", d->base_url, r->path);
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  /* every encoding curl decodes (gzip) */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    long ct = r->timeout_ms < 10000 ? (long)r->timeout_ms : 10000L;
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ct);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    struct curl_slist *h = NULL;
    char line[700];
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    if (r->content_type) {
        snprintf(line, sizeof line, "Content-Type: %s", r->content_type);
        h = curl_slist_append(h, line);
    }
    if (r->authorization) {
        snprintf(line, sizeof line, "Authorization: %s", r->authorization);
        h = curl_slist_append(h, line);
    }
    if (r->auth_token) {
        snprintf(line, sizeof line, "auth-token: %s", r->auth_token);
        h = curl_slist_append(h, line);
    }
    const uint8_t *body = r->body;
    size_t blen = r->body_len;
    if (d->gzip_requests && blen > 0 && strcmp(r->method, "POST") == 0) {
        mesh_buf_reset(&x->gz);
        /* Reuse the core's encoder through a raw deflate: the body must not be changed. */
        uLongf cap = compressBound((uLong)blen) + 32;
        if (mesh_buf_reserve(&x->gz, cap) == MESH_OK) {
            z_stream z;
            memset(&z, 0, sizeof z);
            if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK) {
                z.next_in = (Bytef *)body;
                z.avail_in = (uInt)blen;
                z.next_out = x->gz.data;
                z.avail_out = (uInt)cap;
                if (deflate(&z, Z_FINISH) == Z_STREAM_END) {
                    x->gz.len = cap - z.avail_out;
                    body = x->gz.data;
                    blen = x->gz.len;
                    h = curl_slist_append(h, "Content-Encoding: gzip");
                }
                deflateEnd(&z);
            }
        }
    }
    x->headers = h;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, blen ? (const char *)body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
    if (d->measure_gzip && r->body_len) d->st.body_bytes_gzip += gzip_size(r->body, r->body_len);
    CURLMcode mc = curl_multi_add_handle(d->multi, e);
    if (mc != CURLM_OK) {
        xfer_end(d, x);
        return mesh_err(MESH_EIO, "curl: %s", curl_multi_strerror(mc));
    }
    return MESH_OK;
}

/* Hands finished transfers to the core. */
static int collect(mesh_gw_driver *d, uint64_t (*now_ms)(void *), void *ctx)
{
    int out = MESH_OK;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) continue;
        xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x == NULL) continue;
        CURLcode cc = m->data.result;
        long status = 0;
        curl_off_t up = 0, down = 0;
        long req_size = 0, hdr_size = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up);
        curl_easy_getinfo(x->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
        curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &req_size);
        curl_easy_getinfo(x->easy, CURLINFO_HEADER_SIZE, &hdr_size);
        d->st.requests++;
        /* REQUEST_SIZE counts the body too when curl sent it with the headers. */
        d->st.bytes_up += (uint64_t)req_size >= (uint64_t)up ? (uint64_t)req_size
                                                             : (uint64_t)req_size + (uint64_t)up;
        d->st.body_bytes_up += (uint64_t)up;
        d->st.bytes_down += (uint64_t)hdr_size + (uint64_t)down;
        d->st.body_bytes_decoded += x->resp.len;
        mesh_gw_response resp = {.net = MESH_GW_NET_OK, .status = (int)status,
                                 .body = x->resp.data, .body_len = x->resp.len};
        char err[CURL_ERROR_SIZE + 64];
        if (cc != CURLE_OK || status == 0) {
            d->st.net_errors++;
            snprintf(err, sizeof err, "%s%s%s", curl_easy_strerror(cc), x->errbuf[0] ? ": " : "",
                     x->errbuf);
            resp.error = err;
            resp.status = 0;
            /* Nothing went out (no connection, or no byte of the request sent): it cannot
             * have been processed. */
            if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                cc == CURLE_COULDNT_RESOLVE_PROXY || req_size == 0)
                resp.net = MESH_GW_NET_CONNECT;
            else if (cc == CURLE_OPERATION_TIMEDOUT)
                resp.net = MESH_GW_NET_TIMEOUT;
            else
                resp.net = MESH_GW_NET_OTHER;
        }
        uint64_t id = x->id;
        int rc = mesh_gw_on_response(d->g, id, now_ms(ctx), &resp);
        xfer_end(d, x);
        if (rc != MESH_OK && rc != MESH_ENOTFOUND && out == MESH_OK) out = rc;
    }
    return out;
}

int mesh_gw_driver_step(mesh_gw_driver *d, uint32_t wait_ms, uint64_t (*now_ms)(void *ctx),
                        void *ctx)
{
    int running = 0;
    for (;;) {
        const mesh_gw_request *r;
        int rc = mesh_gw_next_request(d->g, now_ms(ctx), &r);
        if (rc == MESH_EAGAIN) break;
        if (rc != MESH_OK) return rc;
        if ((rc = submit(d, r, now_ms(ctx))) != MESH_OK) {
            /* The core still counts it in flight: answer it as not sent. */
            mesh_gw_response resp = {.net = MESH_GW_NET_CONNECT, .error = mesh_errmsg()};
            int rc2 = mesh_gw_on_response(d->g, r->id, now_ms(ctx), &resp);
            return rc2 != MESH_OK ? rc2 : rc;
        }
    }
    curl_multi_perform(d->multi, &running);
    int rc = collect(d, now_ms, ctx);
    if (rc != MESH_OK) return rc;
    uint64_t now = now_ms(ctx), exp = mesh_gw_expiry(d->g);
    uint32_t wait = wait_ms;
    if (exp <= now) wait = 0;
    else if (exp - now < wait) wait = (uint32_t)(exp - now);
    if (wait > 0) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        curl_multi_poll(d->multi, NULL, 0, (int)wait, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        d->st.wait_ms += (uint64_t)((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000);
    }
    curl_multi_perform(d->multi, &running);
    return collect(d, now_ms, ctx);
}
