/*
 * files.c - the filestore (upload, URL lookup, download, metadata) and the design-era sync
 * service's file endpoints (archive/sync.service.yml): the gateway uploads one file of
 * entries, posts its reference with a SHA-256 checksum to /sync/file/v1/_create, and polls
 * /sync/file/status/v1/_search. The checksum is verified against the stored bytes before the
 * file is accepted; its entries are then applied by the queue worker like bulk writes.
 *
 * Sync file format (defined here; the gateway produces it): UTF-8 JSON Lines, optionally
 * gzip-compressed (detected by the gzip magic bytes). Each non-empty line is one entry
 *     {"type": "household", "action": "create" | "update" | "delete", "entity": {...}}
 * where type is a name from the entity table (entities.c) and entity is what the bulk endpoint
 * of that type would carry. Entries are applied in file order.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "campaign.h"

static bool valid_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n > 0 && n <= CS_KEY_FIELD_BYTES_MAX;
}

static void file_url(const cs_server *srv, const char *tenant, const char *id, char *out,
                     size_t cap)
{
    snprintf(out, cap, "%s/filestore/v1/files/id?tenantId=%s&fileStoreId=%s", srv->base_url,
             tenant, id);
}

/* ---- Filestore ----------------------------------------------------------------------------- */

static void handle_upload(cs_server *srv, const cs_req *rq, cs_resp *rs)
{
    if (!rq->is_multipart) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "upload files as multipart/form-data with "
                      "fields file, tenantId and module");
        return;
    }
    /* The token comes in a header (multipart bodies carry no RequestInfo), or in an optional
     * requestInfo form field holding JSON. */
    json_t *ri = NULL;
    const char *ri_text = cs_json_str(rq->form_fields, "requestInfo");
    if (ri_text)
        ri = json_loads(ri_text, 0, NULL);
    cs_principal who;
    bool ok = cs_auth_check(srv, rq, ri, rs, &who);
    json_decref(ri);
    if (!ok)
        return;
    const char *tenant = cs_json_str(rq->form_fields, "tenantId");
    const char *module = cs_json_str(rq->form_fields, "module");
    const char *tag = cs_json_str(rq->form_fields, "tag");
    if (!tenant || !*tenant || strlen(tenant) > 256) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "the tenantId form field is required");
        return;
    }
    if (!module || !*module) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "the module form field is required");
        return;
    }
    if (rq->n_files == 0) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "no file part named \"file\" in the upload");
        return;
    }
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, true, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "storing the upload");
        return;
    }
    json_t *files = json_array();
    int64_t now = cs_now_ms();
    for (unsigned i = 0; i < rq->n_files && !rc; i++) {
        const cs_form_file *f = &rq->files[i];
        char id[37], hex[2 * crypto_hash_sha256_BYTES + 1];
        uint8_t digest[crypto_hash_sha256_BYTES];
        cs_uuid(id);
        crypto_hash_sha256(digest, f->data.data ? f->data.data : (const uint8_t *)"",
                           f->data.len);
        cs_hex(digest, sizeof digest, hex);
        json_t *meta = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s, s:I, s:s, s:I, s:s}",
                                 "fileStoreId", id, "tenantId", tenant, "module", module, "tag",
                                 tag, "fileName", f->name, "contentType", f->content_type,
                                 "fileSize", (json_int_t)f->data.len, "sha256", hex,
                                 "createdTime", now, "createdBy", who.uuid);
        rc = meta ? cs_store_put_json(txn, srv->store.files, id, strlen(id), meta) : ENOMEM;
        json_decref(meta);
        if (!rc) {
            MDB_val k = {strlen(id), id};
            MDB_val v = {f->data.len, f->data.data ? (void *)f->data.data : (void *)""};
            rc = mdb_put(txn, srv->store.blobs, &k, &v, 0);
        }
        json_array_append_new(files, json_pack("{s:s, s:s}", "fileStoreId", id, "tenantId",
                                               tenant));
    }
    if (!rc)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) {
        json_decref(files);
        cs_resp_store_error(rs, rc, "storing the upload");
        return;
    }
    /* StorageController answers 201 Created. */
    cs_resp_json(rs, 201, json_pack("{s:o}", "files", files));
}

static json_t *load_meta(cs_server *srv, const char *id, int *rc_out)
{
    MDB_txn *txn;
    json_t *meta = NULL;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (!rc) {
        rc = cs_store_get_json(txn, srv->store.files, id, strlen(id), &meta);
        mdb_txn_abort(txn);
    }
    *rc_out = rc;
    return meta;
}

static void handle_url(cs_server *srv, const cs_req *rq, cs_resp *rs)
{
    cs_principal who;
    if (!cs_auth_check(srv, rq, NULL, rs, &who))
        return;
    const char *tenant = cs_req_query(rq, "tenantId");
    const char *ids = cs_req_query(rq, "fileStoreIds");
    if (!tenant || !*tenant) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "tenantId is required");
        return;
    }
    json_t *resp = json_object();
    if (ids && *ids) {
        json_t *list = json_array();
        const char *p = ids;
        unsigned count = 0;
        while (*p && count++ < 1000) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char id[CS_KEY_FIELD_BYTES_MAX + 1];
            if (n > 0 && n <= CS_KEY_FIELD_BYTES_MAX) {
                memcpy(id, p, n);
                id[n] = 0;
                int rc;
                json_t *meta = load_meta(srv, id, &rc);
                if (rc) {
                    json_decref(list);
                    json_decref(resp);
                    cs_resp_store_error(rs, rc, "reading file metadata");
                    return;
                }
                if (meta && !strcmp(cs_json_str(meta, "tenantId"), tenant)) {
                    char url[512];
                    file_url(srv, tenant, id, url, sizeof url);
                    json_object_set_new(resp, id, json_string(url));
                    json_array_append_new(list, json_pack("{s:s, s:s}", "id", id, "url", url));
                }
                json_decref(meta);
            }
            p = comma ? comma + 1 : p + n;
        }
        json_object_set_new(resp, "fileStoreIds", list);
    }
    cs_resp_json(rs, 200, resp);
}

static void handle_download(cs_server *srv, const cs_req *rq, cs_resp *rs, bool metadata_only)
{
    if (metadata_only) {
        cs_principal who;
        if (!cs_auth_check(srv, rq, NULL, rs, &who))
            return;
    }
    const char *tenant = cs_req_query(rq, "tenantId");
    const char *id = cs_req_query(rq, "fileStoreId");
    if (!tenant || !valid_id(id)) {
        cs_resp_error(rs, 400, "INVALID_PARAM", "tenantId and fileStoreId are required");
        return;
    }
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "reading the file");
        return;
    }
    json_t *meta = NULL;
    rc = cs_store_get_json(txn, srv->store.files, id, strlen(id), &meta);
    if (!rc && (!meta || strcmp(cs_json_str(meta, "tenantId"), tenant) != 0)) {
        cs_resp_error(rs, 404, "FILE_NOT_FOUND", "no file %s for tenant %s", id, tenant);
    } else if (!rc && metadata_only) {
        cs_resp_json(rs, 200, json_incref(meta));
    } else if (!rc) {
        MDB_val k = {strlen(id), (void *)(uintptr_t)id}, v;
        rc = mdb_get(txn, srv->store.blobs, &k, &v);
        if (!rc) {
            cs_resp_bytes(rs, 200, cs_json_str(meta, "contentType"), v.mv_data, v.mv_size);
            char disp[320];
            snprintf(disp, sizeof disp, "attachment; filename=\"%s\"",
                     cs_json_str(meta, "fileName"));
            cs_resp_header(rs, "Content-Disposition", disp);
        }
    }
    json_decref(meta);
    mdb_txn_abort(txn);
    if (rc)
        cs_resp_store_error(rs, rc, "reading the file");
}

static void handle_filestore(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    const char *which = arg;
    bool post = !strcmp(rq->method, "POST"), get = !strcmp(rq->method, "GET");
    if (!strcmp(which, "files") && post)
        handle_upload(srv, rq, rs);
    else if (!strcmp(which, "url") && get)
        handle_url(srv, rq, rs);
    else if (!strcmp(which, "id") && get)
        handle_download(srv, rq, rs, false);
    else if (!strcmp(which, "metadata") && get)
        handle_download(srv, rq, rs, true);
    else
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s does not accept %s", rq->path,
                      rq->method);
}

/* ---- Sync file format ---------------------------------------------------------------------- */

typedef struct sync_entry {
    size_t line;
    const cs_type *t;
    cs_action action;
    const json_t *entity;
} sync_entry;

typedef bool sync_visit(const sync_entry *e, void *arg);

/* Decodes and walks the entries of a sync file. Returns 0, or -1 with `why` set when the
 * file is malformed (nothing is applied by the caller in that case at request time). */
static int sync_walk(const uint8_t *data, size_t len, sync_visit *fn, void *arg, size_t *entries,
                     char *why, size_t why_len)
{
    uint8_t *plain = NULL;
    size_t plain_len = len;
    const uint8_t *p = data;
    if (len >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        int r = cs_gunzip(data, len, CS_SYNC_INFLATED_BYTES_MAX, &plain, &plain_len);
        if (r != 0) {
            snprintf(why, why_len, r == -2 ? "the file inflates to more than %u bytes"
                                           : "the file is not valid gzip (%u)",
                     CS_SYNC_INFLATED_BYTES_MAX);
            return -1;
        }
        p = plain;
    }
    size_t line = 0, count = 0, i = 0;
    int result = 0;
    while (i < plain_len && result == 0) {
        size_t end = i;
        while (end < plain_len && p[end] != '\n')
            end++;
        line++;
        size_t n = end - i;
        if (n && p[i + n - 1] == '\r')
            n--;
        bool blank = true;
        for (size_t j = 0; j < n && blank; j++)
            blank = p[i + j] == ' ' || p[i + j] == '\t';
        if (!blank) {
            json_error_t jerr;
            json_t *e = NULL;
            const cs_type *t = NULL;
            cs_action a = CS_CREATE;
            const json_t *entity = NULL;
            char shape[160];
            if (n > CS_SYNC_LINE_BYTES_MAX) {
                snprintf(why, why_len, "line %zu is longer than %u bytes", line,
                         CS_SYNC_LINE_BYTES_MAX);
            } else if (++count > CS_SYNC_ENTRIES_MAX) {
                snprintf(why, why_len, "more than %u entries", CS_SYNC_ENTRIES_MAX);
            } else if (!(e = json_loadb((const char *)p + i, n, JSON_REJECT_DUPLICATES, &jerr))) {
                snprintf(why, why_len, "line %zu is not JSON: %s", line, jerr.text);
            } else if (!json_is_object(e)) {
                snprintf(why, why_len, "line %zu is not a JSON object", line);
            } else if (!(t = cs_type_find(cs_json_str(e, "type") ? cs_json_str(e, "type") : ""))) {
                snprintf(why, why_len, "line %zu: \"type\" must be an entity type name such as "
                         "\"household\"", line);
            } else if (cs_action_parse(cs_json_str(e, "action"), &a) != 0) {
                snprintf(why, why_len, "line %zu: \"action\" must be create, update or delete",
                         line);
            } else if (!(entity = json_object_get(e, "entity")) ||
                       cs_entity_check_shape(t, entity, shape, sizeof shape)) {
                snprintf(why, why_len, "line %zu: entity %.160s", line,
                         entity ? shape : "is required");
            } else {
                sync_entry se = {line, t, a, entity};
                if (fn && !fn(&se, arg))
                    result = 1;
                json_decref(e);
                i = end + 1;
                continue;
            }
            json_decref(e);
            result = -1;
        }
        i = end + 1;
    }
    free(plain);
    if (entries)
        *entries = count;
    return result < 0 ? -1 : 0;
}

/* ---- Sync file endpoints ----------------------------------------------------------------- */

static const json_t *sync_envelope(const json_t *body)
{
    const json_t *ri = json_object_get(body, "requestInfo");
    return ri ? ri : json_object_get(body, "RequestInfo");
}

/* "file" may be a fileStoreId or a URL from /filestore/v1/files/url (…fileStoreId=<id>). */
static bool resolve_file_id(const json_t *sync, char *out, size_t cap)
{
    const char *id = cs_json_str(sync, "fileStoreId");
    if (!id) {
        const char *file = cs_json_str(sync, "file");
        if (!file)
            return false;
        const char *q = strstr(file, "fileStoreId=");
        if (q) {
            q += strlen("fileStoreId=");
            size_t n = strcspn(q, "&#");
            if (n == 0 || n >= cap)
                return false;
            memcpy(out, q, n);
            out[n] = 0;
            return valid_id(out);
        }
        const char *slash = strrchr(file, '/');
        id = slash ? slash + 1 : file;
    }
    if (!valid_id(id) || strlen(id) >= cap)
        return false;
    snprintf(out, cap, "%s", id);
    return true;
}

/* Normalises a checksum ("sha256:<hex>", upper or lower case) to 64 lowercase hex chars. */
static bool normalise_checksum(const char *in, char out[65])
{
    if (!in)
        return false;
    if (!strncasecmp(in, "sha256:", 7))
        in += 7;
    else if (!strncasecmp(in, "sha-256:", 8))
        in += 8;
    if (strlen(in) != 64)
        return false;
    for (int i = 0; i < 64; i++) {
        char c = (char)tolower((unsigned char)in[i]);
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        out[i] = c;
    }
    out[64] = 0;
    return true;
}

static void handle_sync_create(cs_server *srv, const cs_req *rq, cs_resp *rs, const json_t *body)
{
    const json_t *ri = sync_envelope(body);
    cs_principal who;
    if (!json_is_object(ri)) {
        cs_resp_error(rs, 400, "MISSING_REQUEST_INFO", "requestInfo is required");
        return;
    }
    if (!cs_auth_check(srv, rq, ri, rs, &who))
        return;
    const json_t *sync = json_object_get(body, "sync");
    const char *tenant = cs_json_str(sync, "tenantId");
    char id[CS_KEY_FIELD_BYTES_MAX + 1], want[65];
    if (!json_is_object(sync) || !tenant || !*tenant) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "sync {tenantId, campaignId, file, checksum} "
                      "is required");
        return;
    }
    if (!resolve_file_id(sync, id, sizeof id)) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "sync.file must be a fileStoreId or a "
                      "filestore URL (or give sync.fileStoreId)");
        return;
    }
    if (!normalise_checksum(cs_json_str(sync, "checksum"), want)) {
        cs_resp_error(rs, 400, "MISSING_CHECKSUM", "sync.checksum must be the SHA-256 of the file "
                      "as 64 hex characters (optionally prefixed \"sha256:\")");
        return;
    }
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc) {
        cs_resp_store_error(rs, rc, "reading the file");
        return;
    }
    MDB_val k = {strlen(id), id}, v;
    rc = mdb_get(txn, srv->store.blobs, &k, &v);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        cs_resp_error(rs, 400, "FILE_NOT_FOUND", "no stored file %s; upload it with POST "
                      "/filestore/v1/files first", id);
        return;
    }
    if (rc) {
        mdb_txn_abort(txn);
        cs_resp_store_error(rs, rc, "reading the file");
        return;
    }
    uint8_t digest[crypto_hash_sha256_BYTES];
    char have[65];
    crypto_hash_sha256(digest, v.mv_data, v.mv_size);
    cs_hex(digest, sizeof digest, have);
    if (strcmp(have, want) != 0) {
        mdb_txn_abort(txn);
        cs_resp_error(rs, 400, "CHECKSUM_MISMATCH", "the SHA-256 of stored file %s is %s, but "
                      "sync.checksum is %s: the upload was corrupted or the wrong file was "
                      "referenced; upload again", id, have, want);
        return;
    }
    char why[256];
    size_t entries = 0;
    rc = sync_walk(v.mv_data, v.mv_size, NULL, NULL, &entries, why, sizeof why);
    mdb_txn_abort(txn);
    if (rc) {
        cs_resp_error(rs, 400, "INVALID_SYNC_FILE", "file %s: %s", id, why);
        return;
    }
    char sync_id[37];
    cs_uuid(sync_id);
    int64_t now = cs_now_ms();
    json_t *rec = json_pack("{s:s, s:s?, s:s, s:s?, s:s, s:s, s:s, s:I, s:I, s:I, s:[], s:I, "
                            "s:I, s:s, s:s}",
                            "syncId", sync_id, "campaignId", cs_json_str(sync, "campaignId"),
                            "tenantId", tenant, "file", cs_json_str(sync, "file"),
                            "fileStoreId", id, "checksum", want, "status", "ACCEPTED",
                            "totalCount", (json_int_t)entries, "successCount", (json_int_t)0,
                            "errorCount", (json_int_t)0, "errors", "createdAt", now,
                            "modifiedAt", now, "createdBy", who.uuid, "modifiedBy", who.uuid);
    if (!rec) {
        cs_resp_error(rs, 500, "INTERNAL_ERROR", "out of memory");
        return;
    }
    rc = cs_store_begin(&srv->store, true, &txn);
    if (!rc)
        rc = cs_store_put_json(txn, srv->store.syncs, sync_id, strlen(sync_id), rec);
    if (!rc && rq->fault_drop) {
        /* Accepted, recorded, and never processed: the status stays ACCEPTED. */
        rc = cs_store_counter_add(txn, &srv->store, "writes.dropped", entries, NULL);
        pthread_mutex_lock(&srv->stats.mu);
        srv->stats.faults_dropped++;
        pthread_mutex_unlock(&srv->stats.mu);
    } else if (!rc) {
        json_t *item = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "kind", "file", "syncId",
                                 sync_id, "fileStoreId", id, "user", who.uuid, "receivedTime",
                                 now, "dueTime", now + srv->cfg.process_delay_ms);
        rc = item ? cs_queue_put(txn, srv, item, NULL) : ENOMEM;
        if (!rc)
            rc = cs_store_counter_add(txn, &srv->store, "writes.accepted", entries, NULL);
    }
    if (!rc)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) {
        json_decref(rec);
        cs_resp_store_error(rs, rc, "recording the sync request");
        return;
    }
    if (!rq->fault_drop)
        cs_queue_kick(srv);
    cs_resp_json(rs, 200, json_pack("{s:o, s:o}", "responseInfo", cs_response_info(ri, NULL, true),
                                    "sync", rec));
}

static void handle_sync_status(cs_server *srv, const cs_req *rq, cs_resp *rs, const json_t *body)
{
    const json_t *ri = sync_envelope(body);
    cs_principal who;
    if (!json_is_object(ri)) {
        cs_resp_error(rs, 400, "MISSING_REQUEST_INFO", "requestInfo is required");
        return;
    }
    if (!cs_auth_check(srv, rq, ri, rs, &who))
        return;
    const char *sync_id = cs_json_str(json_object_get(body, "sync"), "syncId");
    if (!valid_id(sync_id)) {
        cs_resp_error(rs, 400, "INVALID_REQUEST", "sync.syncId is required");
        return;
    }
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, false, &txn);
    json_t *rec = NULL;
    if (!rc) {
        rc = cs_store_get_json(txn, srv->store.syncs, sync_id, strlen(sync_id), &rec);
        mdb_txn_abort(txn);
    }
    if (rc) {
        cs_resp_store_error(rs, rc, "reading the sync status");
        return;
    }
    if (!rec) {
        cs_resp_error(rs, 400, "SYNC_NOT_FOUND", "no sync request %s", sync_id);
        return;
    }
    cs_resp_json(rs, 200, json_pack("{s:o, s:o}", "responseInfo", cs_response_info(ri, NULL, true),
                                    "sync", rec));
}

static void handle_sync(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg)
{
    if (strcmp(rq->method, "POST") != 0) {
        cs_resp_error(rs, 405, "METHOD_NOT_ALLOWED", "%s accepts POST only", rq->path);
        return;
    }
    json_t *body = cs_req_json(rq, rs);
    if (!body)
        return;
    if (!strcmp(arg, "create"))
        handle_sync_create(srv, rq, rs, body);
    else
        handle_sync_status(srv, rq, rs, body);
    json_decref(body);
}

/* ---- Applying a sync file (queue worker) ----------------------------------------------------- */

typedef struct sync_apply {
    MDB_txn *txn;
    cs_server *srv;
    cs_apply_ctx ctx;
    const char *sync_id;
    uint64_t applied, rejected;
    json_t *errors;
    int rc;
} sync_apply;

static bool apply_entry(const sync_entry *e, void *arg)
{
    sync_apply *sa = arg;
    const char *code = NULL;
    char message[512];
    sa->ctx.now_ms = cs_now_ms();
    int rc = cs_entity_apply(sa->txn, &sa->srv->store, e->t, e->action, e->entity, &sa->ctx, NULL,
                             &code, message, sizeof message);
    if (rc == 0) {
        sa->applied++;
        return true;
    }
    if (rc != CS_REJECTED) {
        sa->rc = rc;
        return false;
    }
    sa->rejected++;
    const char *crid = cs_json_str(e->entity, "clientReferenceId");
    const char *id = cs_json_str(e->entity, "id");
    if (json_array_size(sa->errors) < CS_SYNC_STATUS_ERRORS_MAX)
        json_array_append_new(sa->errors, json_pack("{s:I, s:s, s:s, s:s?, s:s?, s:s, s:s}",
                                                    "line", (json_int_t)e->line, "type",
                                                    e->t->name, "action",
                                                    cs_action_name(e->action),
                                                    "clientReferenceId", crid, "id", id, "code",
                                                    code, "message", message));
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s?, s:s?, s:s, s:s, s:I}", "type",
                            e->t->name, "action", cs_action_name(e->action), "source", "file",
                            "syncId", sa->sync_id, "line", (json_int_t)e->line,
                            "clientReferenceId", crid, "id", id, "code", code, "message",
                            message, "time", sa->ctx.now_ms);
    rc = rec ? cs_errors_record(sa->txn, &sa->srv->store, rec) : ENOMEM;
    if (rc) {
        sa->rc = rc;
        return false;
    }
    return true;
}

int cs_files_apply_sync(MDB_txn *txn, cs_server *srv, const json_t *item)
{
    const char *sync_id = cs_json_str(item, "syncId");
    const char *file_id = cs_json_str(item, "fileStoreId");
    if (!valid_id(sync_id) || !valid_id(file_id))
        return MDB_CORRUPTED;
    json_t *rec = NULL;
    int rc = cs_store_get_json(txn, srv->store.syncs, sync_id, strlen(sync_id), &rec);
    if (rc)
        return rc;
    if (!rec)
        return MDB_CORRUPTED;
    MDB_val k = {strlen(file_id), (void *)(uintptr_t)file_id}, v;
    rc = mdb_get(txn, srv->store.blobs, &k, &v);
    sync_apply sa = {.txn = txn, .srv = srv, .sync_id = sync_id, .errors = json_array(),
                     .ctx = {.user_uuid = cs_json_str(item, "user")}};
    char why[256] = "";
    if (rc == 0) {
        /* Bytes from mdb_get are valid only until the next update in this transaction, and
         * applying the entries updates it: work on a copy. */
        uint8_t *copy = malloc(v.mv_size ? v.mv_size : 1);
        if (!copy) {
            rc = ENOMEM;
        } else {
            memcpy(copy, v.mv_data, v.mv_size);
            if (sync_walk(copy, v.mv_size, apply_entry, &sa, NULL, why, sizeof why) != 0 &&
                !sa.rc)
                cs_log("error", "sync %s: file %s became unreadable: %s", sync_id, file_id, why);
            free(copy);
            rc = sa.rc;
        }
    } else if (rc == MDB_NOTFOUND) {
        snprintf(why, sizeof why, "file %s is gone", file_id);
        rc = 0;
    }
    if (!rc) {
        json_object_set_new(rec, "status", why[0] ? json_string("FAILED")
                                                  : json_string("COMPLETED"));
        if (why[0])
            json_object_set_new(rec, "reason", json_string(why));
        json_object_set_new(rec, "successCount", json_integer((json_int_t)sa.applied));
        json_object_set_new(rec, "errorCount", json_integer((json_int_t)sa.rejected));
        json_object_set(rec, "errors", sa.errors);
        json_object_set_new(rec, "modifiedAt", json_integer(cs_now_ms()));
        rc = cs_store_put_json(txn, srv->store.syncs, sync_id, strlen(sync_id), rec);
    }
    if (!rc)
        rc = cs_store_counter_add(txn, &srv->store, "writes.applied", sa.applied, NULL);
    if (!rc)
        rc = cs_store_counter_add(txn, &srv->store, "writes.rejected", sa.rejected, NULL);
    json_decref(sa.errors);
    json_decref(rec);
    return rc;
}

bool cs_files_route(const char *path, cs_route *route)
{
    static const struct {
        const char *path, *arg;
        bool write;
        cs_handler *fn;
    } routes[] = {
        {"/filestore/v1/files", "files", false, handle_filestore},
        {"/filestore/v1/files/url", "url", false, handle_filestore},
        {"/filestore/v1/files/id", "id", false, handle_filestore},
        {"/filestore/v1/files/metadata", "metadata", false, handle_filestore},
        {"/sync/file/v1/_create", "create", true, handle_sync},
        {"/sync/file/status/v1/_search", "status", false, handle_sync},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(path, routes[i].path)) {
            route->fn = routes[i].fn;
            route->arg = routes[i].arg;
            route->is_write = routes[i].write;
            snprintf(route->name, sizeof route->name, "%s", path);
            return true;
        }
    return false;
}
