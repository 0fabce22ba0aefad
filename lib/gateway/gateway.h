/*
 * gateway.h - the campaign-service gateway core: a sans-IO state machine that forwards every op a
 * node holds to the campaign service (DIGIT Health Campaign Management), exactly once in effect,
 * writes a signed receipt for each into the node's own stream, and downloads configuration (form
 * schemas, localisations, SOS contacts, dashboard aggregates) into the mesh. docs/GATEWAY.md
 * describes the design, the state machine and the exactly-once argument.
 *
 * The core opens no socket, reads no clock and draws no random number: the caller (the libcurl
 * driver, curl_driver.h; the unit tests; the simulator) passes the time and a seed in, takes HTTP
 * requests out (method, path, headers, body, timeout), performs them, and passes each response
 * (status and body) back. It keeps its state in the node's store (lib/store/outbox.h): every
 * change is one LMDB transaction, so the process may be killed at any point and a new core made
 * from the same store carries on without losing or repeating an op.
 *
 * Shape (after ngtcp2):
 *     mesh_gw_new(node, cfg, now, seed, &g);
 *     loop:
 *         mesh_gw_poll_store(g, now);                  // new ops from sync or local writes
 *         while (mesh_gw_next_request(g, now, &req) == MESH_OK) perform(req);
 *         ... when a response arrives: mesh_gw_on_response(g, req_id, now, &resp);
 *         sleep until mesh_gw_expiry(g), a response, or the next store poll.
 */
#ifndef MESH_GATEWAY_H
#define MESH_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "meshsync.h"

/* ---- Limits (each with its reason) ---- */

/* Requests in flight at once: the reference service and DIGIT's gateway both serve a few
 * connections per client well; more only queues on the server. */
#define MESH_GW_CONCURRENCY_MAX 16u
/* Write requests prepared ahead of a free request slot: their ops are marked sent together in
 * one transaction (one fsync for up to this many batches instead of one each). A crash leaves
 * them marked sent although some never left; a restart confirms them by search (cheap). */
#define MESH_GW_PREPARED_MAX 16u
/* Ops in one bulk request: DIGIT's bulk endpoints take any number, but a request must stay far
 * below the servers' body limits (16 MiB at the reference, a few MiB behind typical proxies). */
#define MESH_GW_BATCH_MAX 1000u
/* A bulk request's body: a batch of large entities is split to stay under it (proxies in front
 * of DIGIT commonly refuse bodies of a few MiB). */
#define MESH_GW_WRITE_BYTES_MAX (4u * 1024u * 1024u)
/* clientReferenceIds in one confirming search: the contracts cap `limit` at 1000. */
#define MESH_GW_SEARCH_IDS_MAX 1000u
/* Entries in one sync file (file uplink): the reference service accepts 1,000,000; a file is
 * built in memory. */
#define MESH_GW_FILE_ENTRIES_MAX 100000u
/* A sync file before compression: its entries stop there (the reference service takes 256 MiB
 * inflated and 16 MiB stored; JSON lines of entities compress about 8:1). */
#define MESH_GW_FILE_BYTES_MAX (64u * 1024u * 1024u)
/* Ops the gateway scans from the op-log per store transaction. */
#define MESH_GW_SCAN_OPS_MAX 20000u
/* Response bodies the driver hands in (a search of 1000 entities is ~1 MB). */
#define MESH_GW_RESPONSE_BYTES_MAX (64u * 1024u * 1024u)
/* Distinct tenantIds among forwarded entities (searches are per tenant). */
#define MESH_GW_TENANTS_MAX 64u
/* Locales and extra localisation modules downloaded. */
#define MESH_GW_LOCALES_MAX 8u
#define MESH_GW_LOC_MODULES_MAX 32u
/* Settled changes (confirmations, receipts) wait at most this long, or until this many are
 * waiting, to be written in one transaction: each commit is an fsync, which costs a busy
 * laptop's disk tens of milliseconds. */
#define MESH_GW_PERSIST_LINGER_MS 200u
#define MESH_GW_PERSIST_BATCH 8000u
/* Form schemas tracked for localisation downloads. */
#define MESH_GW_FORMS_MAX 256u

/* ---- Configuration (config.c parses the JSON file, docs/gateway.example.json) ---- */

enum mesh_gw_uplink { MESH_GW_UPLINK_BULK = 0, MESH_GW_UPLINK_FILE = 1 };
enum mesh_gw_forms_source { MESH_GW_FORMS_MDMS = 0, MESH_GW_FORMS_SYNC = 1 };

typedef struct mesh_gw_type {
    char name[MESH_TYPE_BYTES_MAX + 1];
    char path[128];            /* service base path, "/household/v1" */
    char array_key[64];        /* bulk request array: "Households" */
    char single_key[64];       /* single request: "Household" */
    char search_key[64];       /* search criteria: "Household" */
    char response_key[64];     /* search response array: "Households" */
    uint32_t rank;             /* parents first: lower ranks are sent first */
} mesh_gw_type;

typedef struct mesh_gw_config {
    char base_url[512];        /* "https://hcm.example.org" (no trailing slash) */
    char tenant_id[64];        /* default tenantId (searches, downloads, entities without one) */

    /* Authentication: DIGIT's /user/oauth/token (password grant, Basic client auth), or a
     * fixed token. */
    char username[128];
    char password[256];
    char user_type[32];        /* "EMPLOYEE" */
    char client_id[128];       /* "egov-user-client" */
    char client_secret[256];   /* "" */
    char token[512];           /* a fixed access token instead of logging in */
    char token_path[128];      /* "/user/oauth/token" */

    /* RequestInfo. */
    char api_id[64];           /* "meshsync-gateway" */
    char api_ver[16];          /* "1.0" */
    char locale[16];           /* "en_MZ": the msgId suffix DIGIT clients send */

    int uplink;                /* enum mesh_gw_uplink */
    uint32_t batch_size;       /* ops per bulk request (100) */
    uint32_t concurrency;      /* requests in flight (4) */
    uint32_t linger_ms;        /* a partial batch waits this long for more ops (200) */
    uint32_t bulk_attempts;    /* sends in bulk before the single endpoint is used (2) */
    uint32_t retries;          /* re-sends of an op the server accepted but did not apply (6) */
    uint32_t backoff_base_ms;  /* first retry delay after a failure (500) */
    uint32_t backoff_max_ms;   /* cap of the doubling delay (60000) */
    uint32_t jitter_pct;       /* +- this percentage on every delay (20) */
    uint32_t timeout_ms;       /* per request (30000) */
    uint32_t confirm_delay_ms; /* first confirming search after a write is accepted (1000) */
    uint32_t confirm_window_ms;/* an accepted write not visible by then is sent again (30000) */
    uint32_t probe_ms;         /* reachability probe interval when offline (5000, doubling) */
    bool gzip_requests;        /* Content-Encoding: gzip on request bodies (off: DIGIT refuses) */
    char record_path[512];     /* the driver appends every request here ("": none) */

    /* Entity types forwarded, with their endpoints (defaults: the node's type configuration). */
    size_t ntypes;
    mesh_gw_type types[MESH_TYPES_MAX];

    /* Other endpoints (defaults: DIGIT's paths). */
    char mdms_path[128];           /* "/mdms-v2/v1/_search" */
    char localization_path[128];   /* "/localization/messages/v1/_search" */
    char dashboard_path[128];      /* "/dashboard/v1/_search" */
    char forms_sync_path[128];     /* "/sync/forms/v1/_search" */
    char filestore_path[128];      /* "/filestore/v1/files" */
    char filestore_url_path[128];  /* "/filestore/v1/files/url" */
    char sync_file_path[128];      /* "/sync/file/v1/_create" */
    char sync_status_path[128];    /* "/sync/file/status/v1/_search" */

    /* File uplink. */
    uint32_t file_entries_max;     /* ops per file (10000) */
    uint32_t file_poll_ms;         /* status polling interval (1000) */
    char campaign_id[64];          /* sync.campaignId ("") */
    char file_module[64];          /* filestore module ("meshsync") */

    /* Downloads. */
    uint32_t download_interval_ms; /* every kind is fetched this often (900000) */
    bool dl_forms, dl_localization, dl_sos, dl_dashboard;
    int forms_source;              /* enum mesh_gw_forms_source */
    char forms_module[64];         /* MDMS module of form schemas ("HCM-FORMS") */
    char forms_master[64];         /* its master ("Forms") */
    char sos_module[64];           /* "HCM" */
    char sos_master[64];           /* "CALL_SUPPORT" */
    size_t nlocales;
    char locales[MESH_GW_LOCALES_MAX][16];   /* ("en_MZ", "pt_MZ") */
    size_t nloc_modules;           /* extra localisation modules besides hcm-forms-<schema> */
    char loc_modules[MESH_GW_LOC_MODULES_MAX][64];

    /* Logging: the core calls this (if set) for noteworthy events. level: 0 error, 1 warn,
     * 2 info, 3 debug. The message is borrowed for the call. */
    void (*log)(void *ctx, int level, const char *msg);
    void *log_ctx;
} mesh_gw_config;

/*
 * Fills `cfg` from a gateway configuration (JSON text, docs/gateway.example.json), with every
 * omitted setting at its default and the entity types and endpoints of `node`'s type
 * configuration unless the file overrides them. Returns MESH_OK, MESH_EINVAL (the message names
 * the setting and what is allowed), MESH_ENOMEM.
 */
int mesh_gw_config_parse(const char *json, size_t len, mesh_node *node, mesh_gw_config *cfg);

/* ---- The core ---- */

typedef struct mesh_gw mesh_gw;

/* An HTTP request to perform. Borrowed: valid until mesh_gw_on_response() for its id (or
 * mesh_gw_free()). */
typedef struct mesh_gw_request {
    uint64_t id;
    const char *method;         /* "POST" or "GET" */
    const char *path;           /* path and query, relative to cfg.base_url: "/household/v1/..." */
    const char *content_type;   /* NULL when there is no body */
    const char *authorization;  /* value of an Authorization header, or NULL */
    const char *auth_token;     /* value of an auth-token header (multipart, GET), or NULL */
    const uint8_t *body;
    size_t body_len;
    uint32_t timeout_ms;
    const char *what;           /* for logs: "household bulk _create (100 ops)" */
} mesh_gw_request;

/* How a request ended when no HTTP status came back. */
enum mesh_gw_net {
    MESH_GW_NET_OK = 0,         /* an HTTP response arrived (status set) */
    MESH_GW_NET_CONNECT = 1,    /* could not connect: the request did not leave */
    MESH_GW_NET_TIMEOUT = 2,    /* no complete answer within the timeout: it may have applied */
    MESH_GW_NET_OTHER = 3,      /* the connection broke: it may have applied */
};

typedef struct mesh_gw_response {
    int net;                    /* enum mesh_gw_net */
    int status;                 /* HTTP status when net == MESH_GW_NET_OK */
    const uint8_t *body;        /* decoded (gunzipped) body; borrowed for the call */
    size_t body_len;
    const char *error;          /* the transport's message when net != OK, or NULL */
} mesh_gw_response;

/*
 * Makes a gateway for `node` (borrowed: it must outlive the gateway and not be used by another
 * thread meanwhile). Loads the outbox: ops that were in flight when a previous gateway stopped
 * are confirmed by search before anything else is sent for them. `seed` feeds the backoff
 * jitter and request ids. Returns MESH_OK, MESH_EINVAL (a bad configuration), MESH_ECORRUPT,
 * MESH_ENOMEM, MESH_EIO.
 */
int mesh_gw_new(mesh_node *node, const mesh_gw_config *cfg, uint64_t now_ms, uint64_t seed,
                mesh_gw **out);
void mesh_gw_free(mesh_gw *g);

/*
 * Scans the op-log for ops the gateway has not seen (new local writes, ops from sync). Cheap when
 * nothing changed (one read of the op count). Returns MESH_OK, MESH_ENOSPC, MESH_EIO,
 * MESH_ECORRUPT (nothing changed in memory or on disk then).
 */
int mesh_gw_poll_store(mesh_gw *g, uint64_t now_ms);

/*
 * The next request to perform now, if any: MESH_OK with *out set; MESH_EAGAIN when there is
 * nothing to send before mesh_gw_expiry() (or before a response or new ops arrive), or when
 * `concurrency` requests are in flight. Marking ops as sent is a store transaction done before
 * the request is handed out: MESH_ENOSPC, MESH_EIO if it fails (nothing is sent then; call
 * again later).
 */
int mesh_gw_next_request(mesh_gw *g, uint64_t now_ms, const mesh_gw_request **out);

/*
 * Hands in the outcome of request `id`. Returns MESH_OK; MESH_ENOTFOUND (no such request in
 * flight: ignored); MESH_ENOSPC, MESH_EIO when recording the outcome failed (the ops stay
 * unconfirmed and are searched for again later, so nothing is lost).
 */
int mesh_gw_on_response(mesh_gw *g, uint64_t id, uint64_t now_ms, const mesh_gw_response *resp);

/* The wall-clock time (ms) by which mesh_gw_next_request() may have something to send;
 * UINT64_MAX if nothing is scheduled. */
uint64_t mesh_gw_expiry(const mesh_gw *g);

typedef struct mesh_gw_stats {
    bool online;                  /* the service answered the last request */
    bool authenticated;           /* a token is held */
    uint64_t ops_known;           /* ops scanned that the gateway forwards */
    uint64_t ops_live;            /* not yet confirmed or rejected */
    uint64_t ops_waiting;         /* live ops waiting for a parent or an earlier op */
    uint64_t ops_confirmed;       /* since this core started */
    uint64_t ops_rejected;        /* since this core started */
    uint64_t ops_resent;          /* sends after the first (drops, unknown outcomes) */
    uint64_t requests;            /* requests handed out */
    uint64_t requests_failed;     /* no response, 5xx, 401, 413 */
    uint64_t write_requests;      /* bulk and single writes */
    uint64_t search_requests;     /* confirming searches */
    uint64_t other_requests;      /* auth, downloads, file uplink */
    uint64_t body_bytes;          /* request bodies handed out */
    uint64_t configs_written;     /* downloaded items that changed */
    uint64_t receipts_written;
    char last_error[256];         /* the latest failure, for status displays */
} mesh_gw_stats;

void mesh_gw_stats_get(const mesh_gw *g, mesh_gw_stats *out);

/*
 * Writes what the core has settled but not yet written (confirmations and receipts are written
 * together, at most MESH_GW_PERSIST_LINGER_MS after they happen, or with the next batch marked
 * sent). Call before mesh_gw_free() on a clean stop; after a crash nothing is lost either: what
 * was not written is confirmed by search again. Returns MESH_OK, MESH_ENOSPC, MESH_EIO.
 */
int mesh_gw_flush(mesh_gw *g, uint64_t now_ms);

/* True when nothing is left to forward: every known op is confirmed or rejected and nothing is
 * in flight (tests and the benchmark wait for this). */
bool mesh_gw_idle(const mesh_gw *g);

/* Schedules every download now (tests; `meshsync gateway --download-now`). */
void mesh_gw_download_now(mesh_gw *g, uint64_t now_ms);

#endif
