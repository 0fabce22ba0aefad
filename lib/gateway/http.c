/*
 * http.c - This file implements the encodings the gateway's requests need (gw_int.h): DIGIT's
 * RequestInfo envelope, JSON string literals, form-urlencoding, base64 (HTTP Basic auth), gzip
 * (sync files), and reading DIGIT error bodies. Pure functions of their inputs: no I/O.
 */
#include "gateway/gw_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

int gw_append(mesh_buf *out, const char *s) { return mesh_buf_append(out, s, strlen(s)); }

int gw_appendf(mesh_buf *out, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return mesh_err(MESH_EINTERNAL, "formatting a request");
    if ((size_t)n < sizeof tmp) return mesh_buf_append(out, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (big == NULL) return mesh_err(MESH_ENOMEM, "out of memory building a request");
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = mesh_buf_append(out, big, (size_t)n);
    free(big);
    return rc;
}

int gw_json_str(mesh_buf *out, const char *s, size_t len)
{
    int rc = mesh_buf_append(out, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len && rc == MESH_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        rc = mesh_buf_append(out, s + start, i - start);
        char esc[8];
        if (c == '"') snprintf(esc, sizeof esc, "\\\"");
        else if (c == '\\') snprintf(esc, sizeof esc, "\\\\");
        else if (c == '\n') snprintf(esc, sizeof esc, "\\n");
        else if (c == '\r') snprintf(esc, sizeof esc, "\\r");
        else if (c == '\t') snprintf(esc, sizeof esc, "\\t");
        else snprintf(esc, sizeof esc, "\\u%04x", c);
        if (rc == MESH_OK) rc = gw_append(out, esc);
        start = i + 1;
    }
    if (rc == MESH_OK) rc = mesh_buf_append(out, s + start, len - start);
    if (rc == MESH_OK) rc = mesh_buf_append(out, "\"", 1);
    return rc;
}

int gw_urlenc(mesh_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = MESH_OK;
    for (; *s && rc == MESH_OK; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            rc = mesh_buf_append(out, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = mesh_buf_append(out, e, 3);
        }
    }
    return rc;
}

bool gw_base64(const uint8_t *in, size_t len, char *out, size_t cap)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (len + 2) / 3 * 4 + 1;
    if (need > cap) return false;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return true;
}

int gw_gzip(const uint8_t *in, size_t len, mesh_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* 15 + 16: a gzip wrapper (the sync-file format recognises the gzip magic). */
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return mesh_err(MESH_ENOMEM, "cannot start gzip compression");
    size_t bound = deflateBound(&z, (uLong)len);
    int rc = mesh_buf_reserve(out, bound);
    if (rc != MESH_OK) {
        deflateEnd(&z);
        return rc;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out->data + out->len;
    z.avail_out = (uInt)bound;
    int zr = deflate(&z, Z_FINISH);
    if (zr == Z_STREAM_END) out->len += bound - z.avail_out;
    deflateEnd(&z);
    return zr == Z_STREAM_END ? MESH_OK : mesh_err(MESH_EINTERNAL, "gzip compression failed");
}

int gw_request_info(mesh_gw *g, uint64_t now_ms, const char *action, mesh_buf *out)
{
    char did[MESH_KEY_STR_LEN];
    mesh_node_identity(g->node, did);
    uint64_t msg = g->rng ^ g->next_id * 0x9e3779b97f4a7c15ull;
    int rc = gw_append(out, "{\"apiId\":");
    if (rc == MESH_OK) rc = gw_json_str(out, g->cfg.api_id, strlen(g->cfg.api_id));
    if (rc == MESH_OK) rc = gw_append(out, ",\"ver\":");
    if (rc == MESH_OK) rc = gw_json_str(out, g->cfg.api_ver, strlen(g->cfg.api_ver));
    if (rc == MESH_OK)
        rc = gw_appendf(out, ",\"ts\":%llu,\"action\":\"%s\",\"did\":\"%s\",\"msgId\":\"%016llx|",
                        (unsigned long long)now_ms, action, did, (unsigned long long)msg);
    if (rc == MESH_OK) rc = gw_append(out, g->cfg.locale);
    if (rc == MESH_OK) rc = gw_append(out, "\"");
    if (rc == MESH_OK && g->token[0]) {
        rc = gw_append(out, ",\"authToken\":");
        if (rc == MESH_OK) rc = gw_json_str(out, g->token, strlen(g->token));
    }
    if (rc == MESH_OK && g->user_info) {
        rc = gw_append(out, ",\"userInfo\":");
        if (rc == MESH_OK) rc = gw_append(out, g->user_info);
    }
    if (rc == MESH_OK) rc = gw_append(out, "}");
    return rc;
}

json_t *gw_parse(const mesh_gw_response *r)
{
    if (r->body == NULL || r->body_len == 0) return NULL;
    return json_loadb((const char *)r->body, r->body_len, 0, NULL);
}

void gw_error_of(const mesh_gw_response *r, verdict *out)
{
    memset(out, 0, sizeof *out);
    json_t *j = gw_parse(r);
    const json_t *e = json_array_get(json_object_get(j, "Errors"), 0);
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code == NULL) {
        code = json_string_value(json_object_get(j, "error"));
        msg = json_string_value(json_object_get(j, "error_description"));
    }
    if (code)
        snprintf(out->code, sizeof out->code, "%s", code);
    else
        snprintf(out->code, sizeof out->code, "HTTP_%d", r->status);
    if (msg)
        snprintf(out->msg, sizeof out->msg, "%s", msg);
    else if (r->body_len)
        snprintf(out->msg, sizeof out->msg, "HTTP %d: %.*s", r->status,
                 (int)(r->body_len > 300 ? 300 : r->body_len), (const char *)r->body);
    else
        snprintf(out->msg, sizeof out->msg, "HTTP %d with an empty body", r->status);
    json_decref(j);
}

/* ---- A light reader of search answers ----------------------------------------------------- */

/* A confirming search only needs four top-level fields of each entity; building a jansson tree
 * of a 1,000-entity answer costs more than everything else done with it. This reader walks the
 * text once without allocating. It accepts what a JSON parser accepts for the parts it reads and
 * skips the rest by depth (strings respected); anything malformed is MESH_ECORRUPT. */

typedef struct lex {
    const char *p, *end;
} lex;

static void ws(lex *l)
{
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
        l->p++;
}

/* At a '"': the string's raw contents (escapes left as they are; *esc says if any). */
static bool lex_str(lex *l, const char **s, size_t *n, bool *esc)
{
    if (l->p >= l->end || *l->p != '"') return false;
    const char *start = ++l->p;
    *esc = false;
    while (l->p < l->end && *l->p != '"') {
        if (*l->p == '\\') {
            *esc = true;
            l->p++;
        }
        l->p++;
    }
    if (l->p >= l->end) return false;
    *s = start;
    *n = (size_t)(l->p - start);
    l->p++;
    return true;
}

static bool skip_value(lex *l)
{
    ws(l);
    if (l->p >= l->end) return false;
    char c = *l->p;
    if (c == '"') {
        const char *s;
        size_t n;
        bool e;
        return lex_str(l, &s, &n, &e);
    }
    if (c == '{' || c == '[') {
        int depth = 0;
        while (l->p < l->end) {
            char x = *l->p;
            if (x == '"') {
                const char *s;
                size_t n;
                bool e;
                if (!lex_str(l, &s, &n, &e)) return false;
                continue;
            }
            if (x == '{' || x == '[') depth++;
            else if (x == '}' || x == ']') depth--;
            l->p++;
            if (depth == 0) return true;
        }
        return false;
    }
    /* A number or a literal. */
    const char *s = l->p;
    while (l->p < l->end && *l->p != ',' && *l->p != '}' && *l->p != ']' && *l->p != ' ' &&
           *l->p != '\n' && *l->p != '\r' && *l->p != '\t')
        l->p++;
    return l->p > s;
}

static bool key_is(const char *s, size_t n, const char *k)
{
    return strlen(k) == n && memcmp(s, k, n) == 0;
}

static bool read_entity(lex *l, gw_hit *h)
{
    memset(h, 0, sizeof *h);
    h->obj = l->p;
    if (*l->p != '{') return false;
    l->p++;
    ws(l);
    if (l->p < l->end && *l->p == '}') {
        l->p++;
        h->obj_len = (size_t)(l->p - h->obj);
        return true;
    }
    for (;;) {
        ws(l);
        const char *k;
        size_t kn;
        bool esc;
        if (!lex_str(l, &k, &kn, &esc)) return false;
        ws(l);
        if (l->p >= l->end || *l->p != ':') return false;
        l->p++;
        ws(l);
        if (l->p >= l->end) return false;
        if ((key_is(k, kn, "clientReferenceId") || key_is(k, kn, "id")) && *l->p == '"') {
            const char *v;
            size_t vn;
            if (!lex_str(l, &v, &vn, &esc)) return false;
            if (esc) h->escaped = true;
            if (k[0] == 'c') {
                h->crid = v;
                h->crid_len = vn;
            } else {
                h->id = v;
                h->id_len = vn;
            }
        } else if (key_is(k, kn, "rowVersion") && (*l->p == '-' || (*l->p >= '0' && *l->p <= '9'))) {
            char *endp;
            char num[32];
            size_t nn = 0;
            while (l->p + nn < l->end && nn < sizeof num - 1 &&
                   (l->p[nn] == '-' || (l->p[nn] >= '0' && l->p[nn] <= '9')))
                nn++;
            memcpy(num, l->p, nn);
            num[nn] = '\0';
            h->rv = strtoll(num, &endp, 10);
            if (!skip_value(l)) return false;
        } else if (key_is(k, kn, "isDeleted") && *l->p == 't') {
            h->deleted = true;
            if (!skip_value(l)) return false;
        } else if (!skip_value(l)) {
            return false;
        }
        ws(l);
        if (l->p >= l->end) return false;
        if (*l->p == ',') {
            l->p++;
            continue;
        }
        if (*l->p != '}') return false;
        l->p++;
        h->obj_len = (size_t)(l->p - h->obj);
        return true;
    }
}

int gw_scan_search(const uint8_t *body, size_t len, const char *key,
                   int (*fn)(const gw_hit *h, void *ctx), void *ctx)
{
    lex l = {(const char *)body, (const char *)body + len};
    ws(&l);
    if (l.p >= l.end || *l.p != '{') return MESH_ECORRUPT;
    l.p++;
    bool found = false;
    for (;;) {
        ws(&l);
        if (l.p < l.end && *l.p == '}') break;
        const char *k;
        size_t kn;
        bool esc;
        if (!lex_str(&l, &k, &kn, &esc)) return MESH_ECORRUPT;
        ws(&l);
        if (l.p >= l.end || *l.p != ':') return MESH_ECORRUPT;
        l.p++;
        ws(&l);
        if (key_is(k, kn, key) && l.p < l.end && *l.p == '[') {
            found = true;
            l.p++;
            ws(&l);
            if (l.p < l.end && *l.p == ']') {
                l.p++;
            } else {
                for (;;) {
                    ws(&l);
                    gw_hit h;
                    if (l.p >= l.end || !read_entity(&l, &h)) return MESH_ECORRUPT;
                    int rc = fn(&h, ctx);
                    if (rc != MESH_OK) return rc;
                    ws(&l);
                    if (l.p < l.end && *l.p == ',') {
                        l.p++;
                        continue;
                    }
                    if (l.p < l.end && *l.p == ']') {
                        l.p++;
                        break;
                    }
                    return MESH_ECORRUPT;
                }
            }
        } else if (!skip_value(&l)) {
            return MESH_ECORRUPT;
        }
        ws(&l);
        if (l.p < l.end && *l.p == ',') {
            l.p++;
            continue;
        }
        if (l.p < l.end && *l.p == '}') break;
        return MESH_ECORRUPT;
    }
    return found ? MESH_OK : MESH_ENOTFOUND;
}
