/*
 * campaign.h - internal interfaces of meshsync-campaign, the reference campaign service: a small,
 * faithful stand-in for the DIGIT Health Campaign Management (HCM) API that the meshsync gateway
 * speaks, served over real HTTP (libmicrohttpd) and persisted in LMDB. docs/CAMPAIGN_SERVICE.md
 * describes the endpoints and how they map to the real DIGIT services.
 *
 * The program is one process with three kinds of threads: the libmicrohttpd connection threads
 * (one per connection) that run the handlers, one queue worker that applies accepted writes after
 * the configured delay, and the main thread that waits for SIGINT/SIGTERM. Every state change is
 * an LMDB write transaction; LMDB serialises writers and lets readers run beside them, and the
 * environment is opened with MDB_NOTLS so a read transaction belongs to its handler, not to a
 * thread slot.
 *
 * Names: cs_<noun>_<verb> for functions shared between files; file-local helpers are static.
 */
#ifndef CS_CAMPAIGN_H
#define CS_CAMPAIGN_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <lmdb.h>

/* ---- Limits (each with its reason; flags may lower or raise the ones marked "default") ------ */

/* Default request body cap: a bulk request of a few thousand entities is well under this. */
#define CS_BODY_BYTES_DEFAULT (16u * 1024u * 1024u)
/* Hard bound for --max-body-bytes: bodies are buffered in memory. */
#define CS_BODY_BYTES_HARD_MAX (1024u * 1024u * 1024u)
/* Default size cap of one uploaded file (DIGIT's filestore allows 5 MB; sync files need more). */
#define CS_FILE_BYTES_DEFAULT (16u * 1024u * 1024u)
/* Search page size: the HCM contracts declare `limit` with maximum 1000. */
#define CS_SEARCH_LIMIT_MAX 1000
/* Values in one search criterion list (ids, clientReferenceIds): bounds index lookups. */
#define CS_CRITERIA_VALUES_MAX 10000u
/* Entities in one bulk request: bounds one queue item and one apply transaction. */
#define CS_BULK_ENTITIES_MAX 100000u
/* id and clientReferenceId: the contracts declare maxLength 64; they are LMDB key parts. */
#define CS_KEY_FIELD_BYTES_MAX 64u
/* An entity type name ("stock_reconciliation"). */
#define CS_TYPE_NAME_BYTES_MAX 32u
/* A sync file once inflated, and one JSON line in it: bounds the memory of one apply. */
#define CS_SYNC_INFLATED_BYTES_MAX (256u * 1024u * 1024u)
#define CS_SYNC_LINE_BYTES_MAX (1024u * 1024u)
#define CS_SYNC_ENTRIES_MAX 1000000u
/* Per-entry errors kept in a sync status record (the full log is in the error log). */
#define CS_SYNC_STATUS_ERRORS_MAX 1000u
/* Concurrent HTTP connections (each has a thread). */
#define CS_CONNECTIONS_MAX 256u
/* LMDB readers: one per concurrent handler plus the worker, with slack. */
#define CS_LMDB_READERS_MAX 512u
/* A non-file multipart field (tenantId, module, tag, requestInfo). */
#define CS_FORM_FIELD_BYTES_MAX (64u * 1024u)
/* Files in one upload request. */
#define CS_FORM_FILES_MAX 16u
/* Records returned by one /_test/errors or /_test/entities call. */
#define CS_TEST_LIST_MAX 1000000u
/* --slow-ms and --process-delay-ms bounds: a sleeping handler holds a connection thread. */
#define CS_SLOW_MS_MAX (10u * 60u * 1000u)
#define CS_PROCESS_DELAY_MS_MAX (3600u * 1000u)
/* Users and OAuth clients configurable by flags and seed. */
#define CS_USERS_MAX 64u
#define CS_CLIENTS_MAX 8u
/* Distinct routes counted in /_test/stats (the route table is bounded; unknown paths share one). */
#define CS_STAT_ROUTES_MAX 160u
/* Fault path prefixes (--fault-paths). */
#define CS_FAULT_PATHS_MAX 16u
/* LMDB map (sparse file). */
#define CS_MAP_MB_DEFAULT 1024u
#define CS_MAP_MB_MAX (256u * 1024u)

_Static_assert(CS_FILE_BYTES_DEFAULT <= CS_BODY_BYTES_DEFAULT, "a file fits in a request");
_Static_assert(CS_TYPE_NAME_BYTES_MAX + 1 + CS_KEY_FIELD_BYTES_MAX < 511, "index key fits LMDB");

/* ---- Small utilities (util.c) ----------------------------------------------------------------- */

#if defined(__GNUC__)
#define CS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CS_PRINTF(a, b)
#endif

/* Invariant checks: a failure is a bug here, never bad input. Kept in release builds. */
void cs_panic(const char *file, int line, const char *expr) __attribute__((noreturn));
#define CS_ASSERT(e) ((e) ? (void)0 : cs_panic(__FILE__, __LINE__, #e))

/* Logging to stderr. cs_log_verbose is set by --verbose. */
extern bool cs_log_verbose;
void cs_log(const char *level, const char *fmt, ...) CS_PRINTF(2, 3);

/* Wall clock in milliseconds since the epoch (auditDetails, tokens) and monotonic milliseconds. */
int64_t cs_now_ms(void);
int64_t cs_mono_ms(void);

/* A random UUIDv4 string; `out` gets 37 bytes. */
void cs_uuid(char out[37]);

/* A growable byte buffer with a hard cap; append returns -1 past `cap` (or on allocation failure). */
typedef struct cs_buf {
    uint8_t *data;
    size_t len;
    size_t alloc;
    size_t cap;
} cs_buf;
void cs_buf_init(cs_buf *b, size_t cap);
void cs_buf_fini(cs_buf *b);
int cs_buf_append(cs_buf *b, const void *p, size_t n);

/* Parses a whole decimal integer in [min, max]; returns 0 or -1. */
int cs_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Parses "true"/"false" (case-insensitive); returns 0 or -1. */
int cs_parse_bool(const char *s, bool *out);
/* Parses a probability in [0, 1]; returns 0 or -1. */
int cs_parse_rate(const char *s, double *out);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void cs_hex(const uint8_t *in, size_t n, char *out);

/* gzip (RFC 1952) compression of `in`; *out is malloc'd. Returns 0 or -1. */
int cs_gzip(const uint8_t *in, size_t n, uint8_t **out, size_t *out_len);
/* Inflates gzip or zlib data of at most `max_out` bytes; *out is malloc'd. Returns 0, -1 on
 * corrupt data, -2 when the output would exceed max_out. */
int cs_gunzip(const uint8_t *in, size_t n, size_t max_out, uint8_t **out, size_t *out_len);

/* A borrowed string member of an object, or NULL when absent or not a string. */
const char *cs_json_str(const json_t *obj, const char *key);
/* Follows a dotted path through objects ("address.locality.code"); array steps take element 0. */
const json_t *cs_json_path(const json_t *root, const char *dotted);

/* ---- Configuration (main.c) ----------------------------------------------------------------- */

typedef struct cs_user {
    char user_name[65];
    char password[65];
    char tenant_id[65];
    char type[17];     /* EMPLOYEE | CITIZEN | SYSTEM */
    char uuid[37];     /* derived from the user name so it is stable across restarts */
    json_t *roles;     /* array of {name, code, tenantId}; owned */
} cs_user;

typedef struct cs_config {
    char listen_host[64];
    uint16_t listen_port;          /* 0 picks a free port */
    char data_dir[4096];
    char seed_path[4096];          /* empty: built-in default seed */
    char public_url[256];          /* base of filestore URLs; default http://host:port */
    uint32_t process_delay_ms;
    double fail_rate, slow_rate, drop_rate;
    uint32_t slow_ms;
    uint64_t fault_seed;
    bool fault_seed_set;
    char fault_paths[CS_FAULT_PATHS_MAX][128];
    unsigned n_fault_paths;        /* 0: every non-test path */
    bool auth_required;
    int64_t token_ttl_s;
    size_t max_body_bytes;
    size_t max_file_bytes;
    size_t map_bytes;
    bool test_endpoints;
    cs_user users[CS_USERS_MAX];
    unsigned n_users;
    char clients[CS_CLIENTS_MAX][130]; /* "id:secret" accepted in Basic auth */
    unsigned n_clients;
} cs_config;

/* ---- Store (store.c) ----------------------------------------------------------------------- */

typedef struct cs_store {
    MDB_env *env;
    MDB_dbi ent;       /* type \0 be64(seq) -> entity JSON (seq = creation order) */
    MDB_dbi ent_id;    /* type \0 id -> be64(seq) */
    MDB_dbi ent_crid;  /* type \0 clientReferenceId -> be64(seq) */
    MDB_dbi queue;     /* be64(qseq) -> queued write JSON */
    MDB_dbi errors;    /* be64(eseq) -> error record JSON */
    MDB_dbi tokens;    /* token -> JSON {kind, userName, expires} */
    MDB_dbi files;     /* fileStoreId -> metadata JSON */
    MDB_dbi blobs;     /* fileStoreId -> bytes */
    MDB_dbi syncs;     /* syncId -> status JSON */
    MDB_dbi meta;      /* counter name -> be64 */
} cs_store;

/* Opens (creating) the environment in directory `dir`. Returns 0 or -1 with a logged reason. */
int cs_store_open(cs_store *st, const char *dir, size_t map_bytes);
void cs_store_close(cs_store *st);
/* Begins a transaction; returns an LMDB code (0 ok). */
int cs_store_begin(cs_store *st, bool write, MDB_txn **txn);
/* Reads JSON under key; *out is a new reference or NULL when absent. Returns an LMDB code or
 * MDB_CORRUPTED when the stored bytes are not JSON. */
int cs_store_get_json(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, json_t **out);
int cs_store_put_json(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, const json_t *v);
/* Counters in the meta database. */
int cs_store_counter_get(MDB_txn *txn, const cs_store *st, const char *name, uint64_t *out);
int cs_store_counter_add(MDB_txn *txn, const cs_store *st, const char *name, uint64_t delta,
                         uint64_t *after);
/* Builds "type\0rest" keys; returns the key length or 0 when it would not fit `cap`. */
size_t cs_store_key(uint8_t *key, size_t cap, const char *type, const void *rest, size_t rest_len);

static inline void cs_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint64_t cs_be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* ---- HTTP requests and responses (http.c) --------------------------------------------------- */

struct MHD_Connection;

typedef struct cs_form_file {
    char name[256];           /* client file name */
    char content_type[128];
    cs_buf data;
} cs_form_file;

/* One HTTP request, valid for the duration of the handler call. */
typedef struct cs_req {
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    const uint8_t *body;      /* NUL-terminated copy; body_len excludes the NUL */
    size_t body_len;
    /* multipart/form-data (filestore upload) */
    bool is_multipart;
    cs_form_file files[CS_FORM_FILES_MAX];
    unsigned n_files;
    json_t *form_fields;      /* object of non-file fields (strings) */
    bool form_overflow;       /* a field or file exceeded its limit */
    bool fault_drop;          /* --drop-writes chose this request: accept it, never apply it */
} cs_req;

/* Query argument or header value; borrowed, valid for the request. NULL when absent. */
const char *cs_req_query(const cs_req *rq, const char *name);
const char *cs_req_header(const cs_req *rq, const char *name);

#define CS_RESP_HEADERS_MAX 4
typedef struct cs_resp {
    int status;
    char *body;               /* malloc'd */
    size_t len;
    char content_type[96];
    char header_name[CS_RESP_HEADERS_MAX][48];
    char header_value[CS_RESP_HEADERS_MAX][256];
    unsigned n_headers;
} cs_resp;

/* Sets the response to `v` serialised as JSON (steals the reference). */
void cs_resp_json(cs_resp *rs, int status, json_t *v);
/* Sets the response to raw bytes (copied). */
void cs_resp_bytes(cs_resp *rs, int status, const char *content_type, const void *p, size_t n);
/* A DIGIT-style error: {"ResponseInfo": null, "Errors": [{code, message, description, params}]}. */
void cs_resp_error(cs_resp *rs, int status, const char *code, const char *fmt, ...) CS_PRINTF(4, 5);
void cs_resp_header(cs_resp *rs, const char *name, const char *value);
/* 500 or 507 for an LMDB failure, logged with what was being done. */
void cs_resp_store_error(cs_resp *rs, int rc, const char *what);

/* Parses the body as a JSON object. On failure sets a 400 response and returns NULL. */
json_t *cs_req_json(const cs_req *rq, cs_resp *rs);

/* ---- The server (main.c owns it) ------------------------------------------------------------ */

typedef struct cs_stats {
    pthread_mutex_t mu;
    uint64_t requests_total;
    char route[CS_STAT_ROUTES_MAX][96];
    uint64_t route_count[CS_STAT_ROUTES_MAX];
    unsigned n_routes;
    uint64_t by_class[6];     /* 1xx..5xx at [1..5] */
    uint64_t faults_failed, faults_slowed, faults_dropped;
} cs_stats;

typedef struct cs_faults {
    pthread_mutex_t mu;
    uint64_t rng;             /* splitmix64 state: one draw sequence for every request */
    double fail_rate, slow_rate, drop_rate;
    uint32_t slow_ms;
} cs_faults;

typedef struct cs_server {
    cs_config cfg;
    cs_store store;
    json_t *seed;             /* read-only after start; never share references across threads */
    cs_stats stats;
    cs_faults faults;
    char base_url[300];       /* for filestore URLs */
    /* Shutdown: handlers sleeping for --slow-ms and the worker wait on this. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
    uint64_t queue_kicks;     /* bumped on enqueue so the worker re-reads the queue head */
    pthread_t worker;
    bool worker_started;
    struct MHD_Daemon *daemon;
    uint16_t bound_port;
} cs_server;

/* Sleeps up to ms, returning early on shutdown. */
void cs_server_sleep(cs_server *srv, uint32_t ms);

/* ---- Routes ---------------------------------------------------------------------------------- */

/* A handler fills `rs` from `rq`. `route_name` is what /_test/stats counts. */
typedef void cs_handler(cs_server *srv, const cs_req *rq, cs_resp *rs, const void *arg);

typedef struct cs_route {
    cs_handler *fn;
    const void *arg;
    char name[96];            /* counted in stats */
    bool is_write;            /* subject to --drop-writes */
    bool is_test;             /* /_test/...: never faulted */
} cs_route;

/* Each module resolves paths it owns; returns true and fills *route on a match. */
bool cs_entities_route(const char *path, cs_route *route);
bool cs_mdms_route(const char *path, cs_route *route);
bool cs_files_route(const char *path, cs_route *route);
bool cs_auth_route(const char *path, cs_route *route);
bool cs_test_route(const char *path, cs_route *route);

/* ---- HTTP daemon (http.c) -------------------------------------------------------------------- */

int cs_http_start(cs_server *srv);
void cs_http_stop(cs_server *srv);

/* ---- Auth (auth.c) --------------------------------------------------------------------------- */

typedef struct cs_principal {
    char user_name[65];
    char uuid[37];
    char tenant_id[65];
} cs_principal;

/* Checks the request's token (RequestInfo.authToken, else the auth-token header, else an
 * Authorization: Bearer header). With --no-auth every request passes as the "anonymous" user.
 * Returns true, or false with a 401 set in rs. */
bool cs_auth_check(cs_server *srv, const cs_req *rq, const json_t *request_info, cs_resp *rs,
                   cs_principal *who);
/* The token a request carries (RequestInfo.authToken, auth-token header, Bearer), or NULL. */
const char *cs_auth_token(const cs_req *rq, const json_t *request_info);
/* Adds a user from "name:password[:tenant[:type]]"; returns 0 or -1. */
int cs_auth_add_user_spec(cs_config *cfg, const char *spec);
/* Adds users from the seed's "users" array (when no --user flag was given). */
int cs_auth_load_seed_users(cs_config *cfg, const json_t *seed);
void cs_auth_fini(cs_config *cfg);

/* ---- Faults (faults.c) ----------------------------------------------------------------------- */

typedef struct cs_fault_decision {
    int fail_status;          /* 0, 500 or 503 */
    uint32_t slow_ms;         /* 0 or the delay before responding */
    bool drop;                /* accept a write but never apply it */
} cs_fault_decision;

void cs_faults_init(cs_server *srv);
/* Draws the faults for one request (deterministic sequence with --fault-seed). */
cs_fault_decision cs_faults_draw(cs_server *srv, const char *path, const cs_route *route);

/* ---- Entities and the write queue (entities.c, queue.c) ------------------------------------- */

typedef struct cs_type {
    const char *name;         /* "household" */
    const char *path;         /* "/household/v1" */
    const char *array_key;    /* bulk request key: "Households" */
    const char *single_key;   /* single request and response key: "Household" */
    const char *search_key;   /* search criteria key: "Household" */
    const char *response_key; /* search response array key: "Households" */
    const char *required;     /* comma-separated required fields of every entity */
    const char *boundary;     /* comma-separated dotted paths to a boundary code (dashboard) */
} cs_type;

extern const cs_type cs_types[];
extern const size_t cs_n_types;
const cs_type *cs_type_find(const char *name);

typedef enum cs_action { CS_CREATE = 0, CS_UPDATE = 1, CS_DELETE = 2 } cs_action;
const char *cs_action_name(cs_action a);
int cs_action_parse(const char *s, cs_action *out);

/* Context of one apply: who, when, and for a single create the id already promised. */
typedef struct cs_apply_ctx {
    const char *user_uuid;
    int64_t now_ms;
    const char *assigned_id;  /* NULL: generate */
    bool dry_run;             /* validate and compute the result without writing */
} cs_apply_ctx;

/* Validates the shape of one entity of a write request (object, required fields, key field
 * lengths). Returns NULL or a static description of the problem written into `why`. */
const char *cs_entity_check_shape(const cs_type *t, const json_t *e, char *why, size_t why_len);

/* Returned by cs_entity_apply for a write that a business rule rejects; distinct from every
 * LMDB code (MDB_* are -30800..-30780, system errors are positive errno values). */
#define CS_REJECTED (-1)

/* Applies one write to the store inside `txn` (with ctx->dry_run, only validates and computes).
 * Returns 0 with *result (new reference; pass NULL when not wanted) holding the entity as
 * stored; CS_REJECTED with *code and message filled (DUPLICATE_ENTITY, NULL_ID,
 * NON_EXISTENT_ENTITY, MISMATCHED_ROW_VERSION, IS_DELETED_TRUE); or an LMDB error code, after
 * which the caller must abort the transaction. */
int cs_entity_apply(MDB_txn *txn, cs_store *st, const cs_type *t, cs_action a, const json_t *in,
                    const cs_apply_ctx *ctx, json_t **result, const char **code, char *message,
                    size_t message_len);

/* Applies a queued item of kind "entities" (one bulk or single request) in `txn`: each entity
 * in order; rejections go to the error log. Returns 0 or an LMDB code. */
int cs_entities_apply_item(MDB_txn *txn, cs_server *srv, const json_t *item, uint64_t qseq);

/* The boundary code of an entity (the first of the type's boundary paths present), or NULL. */
const char *cs_entity_boundary(const cs_type *t, const json_t *e);

/* Appends an error record to the error log. */
int cs_errors_record(MDB_txn *txn, cs_store *st, json_t *record /* stolen */);

/* Queues a write (a JSON item, stolen) for the worker; returns an LMDB code. */
int cs_queue_put(MDB_txn *txn, cs_server *srv, json_t *item, uint64_t *qseq);
/* Wakes the worker after a commit that queued something. */
void cs_queue_kick(cs_server *srv);
int cs_queue_start(cs_server *srv);
void cs_queue_stop(cs_server *srv);
/* Applies queued items now regardless of their due time, oldest first; returns items applied
 * or a negative value on a store failure. */
long cs_queue_flush(cs_server *srv);

/* Iterates stored entities of a type in creation order; the callback returns false to stop. */
typedef bool cs_entity_visit(const json_t *entity, void *arg);
int cs_entities_scan(MDB_txn *txn, cs_store *st, const cs_type *t, cs_entity_visit *fn, void *arg);

/* Applies the entries of a verified sync file (files.c defines the format); called by the
 * worker for queue items of kind "file". Updates the sync status record. */
int cs_files_apply_sync(MDB_txn *txn, cs_server *srv, const json_t *item);

/* A ResponseInfo object as DIGIT's ResponseInfoFactory builds it from a RequestInfo. */
json_t *cs_response_info(const json_t *request_info, const char *api_id_override, bool success);

#endif
