/*
 * gw_int.h - internals of the gateway core shared by its files: gateway.c (the uplink state
 * machine and persistence), download.c (configuration downloads) and http.c (building request
 * bodies: RequestInfo, JSON escaping, form and multipart encoding, base64, gzip).
 *
 * Memory model. The core keeps, per entity the gateway forwards, a small record (gent) and the
 * entity's live ops (gop: not yet confirmed or rejected), sorted in merge order. At most one op
 * per entity is being forwarded at a time (gent.cur): per-entity order and the server's
 * rowVersion checks need it. Every change is made in memory and then written, with the receipts
 * it implies, in one LMDB transaction (persist()). If that transaction fails, the core is
 * "broken": every call returns an error and the caller makes a new core from the store, as after
 * a crash (the store is always consistent; memory may have run ahead of it).
 */
#ifndef MESH_GW_INT_H
#define MESH_GW_INT_H

#include "gateway/gateway.h"

#include "api/node_int.h"
#include "store/outbox.h"

#include <jansson.h>

/* Phases of a live op in memory. */
enum {
    PH_IDLE = 0,      /* waiting its turn in its entity (or for a parent, or its base) */
    PH_READY,         /* in a ready queue: goes out in the next batch of its (type, action) */
    PH_DELAY,         /* to be sent again after a backoff (timer) */
    PH_SENDING,       /* in a write request in flight */
    PH_ACCEPT,        /* sent; a confirming search is scheduled (timer, then a due list) */
    PH_CONFIRMING,    /* in a search request in flight */
    PH_FINISHED,      /* confirmed or rejected in memory; freed once persisted */
};

enum { ACT_CREATE = MESH_OUTBOX_ACT_CREATE, ACT_UPDATE = MESH_OUTBOX_ACT_UPDATE,
       ACT_DELETE = MESH_OUTBOX_ACT_DELETE, ACT_COUNT = 4 };

typedef struct gent gent;

typedef struct verdict {
    char code[MESH_OUTBOX_CODE_BYTES_MAX + 1];
    char msg[MESH_OUTBOX_MSG_BYTES_MAX + 1];
} verdict;

typedef struct gop {
    uint8_t entity[MESH_UUID_BYTES];
    uint32_t rv;
    uint8_t author[MESH_KEY_BYTES];
    uint64_t hlc;
    uint8_t kind;               /* the op's kind */
    uint8_t state;              /* outbox state (what is, or will be, on disk) */
    uint8_t disk_state;         /* the state last written (MESH_OUTBOX_PREV_NONE: no record) */
    uint8_t action;             /* how it is (to be) sent */
    uint8_t phase;
    uint16_t attempt;           /* sends so far (persisted) */
    uint16_t drops;             /* sends the server accepted but did not apply */
    uint16_t bisect;            /* a refused batch is split: at most this many per batch */
    bool reassert;              /* a pseudo-op: re-send the entity's winner (no outbox record) */
    bool unknown;               /* the last send's outcome is unknown (no 2xx answer) */
    bool single;                /* send through the single endpoint (it answers errors) */
    bool has_base;
    bool in_due;                /* in its search group's due list */
    bool wait_deps;             /* its base (or a merged head) is not held yet */
    uint32_t idx;               /* scratch: position in the request being answered */
    bool dirty;                 /* in g->dirty_ops */
    uint32_t expect_rv;         /* the server rowVersion the last send should produce */
    uint32_t server_rv;         /* confirmed */
    uint32_t fails;             /* consecutive transient failures (backoff) */
    uint32_t rounds;            /* confirming searches since the last send */
    uint32_t timer_gen;
    uint16_t tenant;            /* index into g->tenants */
    uint64_t due;               /* timer / confirm due time */
    uint64_t sent_at, accepted_at, ready_at;
    mesh_opref base;
    uint8_t nmerged, nparents;
    mesh_opref *merged;         /* nmerged */
    uint8_t (*parents)[MESH_UUID_BYTES]; /* nparents */
    verdict *verdict;           /* a definitive server error for the last send, or NULL */
    gent *ent;
} gop;

struct gent {
    uint8_t entity[MESH_UUID_BYTES];
    uint16_t type;              /* index into cfg.types */
    uint32_t flags;             /* MESH_OUTBOX_ENT_* */
    uint32_t server_rv;
    char *server_id;            /* malloc'd, or NULL */
    uint32_t fwd_rv, max_rv, reassert_rv;
    uint64_t fwd_hlc, max_hlc;
    uint8_t fwd_author[MESH_KEY_BYTES], max_author[MESH_KEY_BYTES];
    verdict *refusal;           /* REFUSED: why */
    gop **ops;                  /* live ops in merge order */
    uint32_t nops, cap;
    gop *cur;                   /* the op being forwarded, or NULL */
    gent **waiters;             /* children waiting for this entity's create */
    size_t nwaiters, wcap;
    gent *blocked_on;           /* the parent this entity waits for, or NULL */
    bool dirty;                 /* in g->dirty_ents */
    bool queued;                /* in g->advance (to be re-evaluated) */
    bool finishing;             /* has ops finished in memory but not persisted */
};

typedef struct timer {
    uint64_t due;
    gop *op;
    uint32_t gen;
} timer;

typedef struct opvec {
    gop **v;
    size_t n, head, cap;        /* FIFO: items v[head..n) */
} opvec;

typedef struct group {          /* confirming searches of one (type, tenant) */
    opvec due;                  /* ops whose search is due, oldest first */
    uint64_t first_due;         /* when the oldest entry became due */
} group;

enum {
    RQ_AUTH = 1,
    RQ_WRITE,                   /* bulk or single write */
    RQ_SEARCH,
    RQ_FILE_UPLOAD,
    RQ_FILE_URL,
    RQ_FILE_CREATE,
    RQ_FILE_STATUS,
    RQ_DL_MDMS,
    RQ_DL_FORMS_SYNC,
    RQ_DL_LOC,
    RQ_DL_DASH,
};

typedef struct req {
    bool used;
    bool handed;                /* handed out (counts against the concurrency) */
    int kind;
    uint64_t id;
    uint16_t type, tenant;
    uint8_t action;
    bool single;
    gop **ops;
    size_t nops, opcap;
    uint32_t locale;            /* RQ_DL_LOC: index into cfg.locales */
    char path[2048];
    char what[256];
    char ctype[128];
    char authz[600];
    mesh_buf body;
    mesh_gw_request pub;
} req;

/* The file uplink: one file at a time, through four requests. */
typedef struct fileup {
    int stage;                  /* 0 idle, RQ_FILE_* while a request is due or in flight */
    bool waiting;               /* the stage's request is in flight */
    gop **ops;                  /* in file order (line i+1 is ops[i]) */
    size_t nops, cap;
    mesh_buf content;           /* the gzipped JSON-lines file */
    char checksum[65];
    char file_id[160];
    char url[1024];
    char sync_id[160];
    uint64_t next_at;           /* the stage's next try (poll, backoff) */
    uint64_t created_at;        /* when the sync record was accepted */
    uint32_t fails;
} fileup;

typedef struct pend_config {    /* a downloaded item to write into the mesh */
    char key[200];
    char kind[16];
    char source[160];
    uint64_t fetched_ms;
    json_t *value;              /* owned */
} pend_config;

typedef struct receipt_rec {    /* a receipt to write */
    uint8_t entity[MESH_UUID_BYTES];
    uint32_t rv;
    uint8_t author[MESH_KEY_BYTES];
    uint16_t type;
    uint8_t status;             /* MESH_OUTBOX_CONFIRMED or REJECTED */
    uint8_t action;
    bool reasserted;
    uint32_t server_rv;
    char server_id[MESH_OUTBOX_ID_BYTES_MAX + 1];
    verdict err;
} receipt_rec;

enum { DL_FORMS = 0, DL_LOC, DL_SOS, DL_DASH, DL_COUNT };

struct mesh_gw {
    mesh_node *node;
    mesh_gw_config cfg;
    uint64_t rng;               /* splitmix64 state from the seed */
    uint64_t next_id;
    bool broken;
    char broken_msg[256];

    /* Entities: open addressing, keyed by UUID. */
    gent **tab;
    size_t tab_cap, nents;

    /* Ready queues per (type, action): ops to batch, ops of a refused batch being split, and
     * ops to send one by one through the single endpoint; search groups per (type, tenant). */
    opvec *ready;               /* ntypes * ACT_COUNT */
    opvec *split;               /* ntypes * ACT_COUNT */
    opvec single;
    group **groups;             /* ntypes * MESH_GW_TENANTS_MAX, made on first use */
    char tenants[MESH_GW_TENANTS_MAX][65];
    size_t ntenants;

    timer *heap;
    size_t nheap, heap_cap;

    req *reqs;                  /* nslots: concurrency + MESH_GW_PREPARED_MAX */
    size_t nslots;
    req *prepared[MESH_GW_PREPARED_MAX]; /* write requests marked sent, to hand out in order */
    size_t nprepared;
    size_t inflight;
    size_t writes_inflight;

    /* Work for the next persist(). */
    gop **dirty_ops;
    size_t ndirty_ops, dirty_ops_cap;
    gent **dirty_ents;
    size_t ndirty_ents, dirty_ents_cap;
    receipt_rec *receipts;
    size_t nreceipts, receipts_cap;
    pend_config *configs;
    size_t nconfigs, configs_cap;
    /* Stream cursors advanced by the scan in memory: (sid, seq). */
    uint64_t (*cursors)[2];
    size_t ncursors, cursors_cap;
    bool forms_since_dirty;
    uint64_t dirty_since;       /* when unwritten changes first appeared (0: none) */
    gent **advance;             /* entities to re-evaluate */
    size_t nadvance, advance_cap;
    gent **orphans;             /* entities waiting for a parent the gateway holds nothing of */
    size_t norphans, orphans_cap;
    mesh_sysbatch *batch;

    uint64_t live_ops;          /* ops known and not settled */
    uint64_t reasserts;         /* winner re-sends in progress */

    /* Scan. */
    uint64_t seen_ops;          /* the store's op count at the last scan */
    bool scan_more;             /* the last scan stopped at its bound */

    /* Reachability and authentication. */
    bool online;
    bool auth_inflight;
    uint32_t net_fails;         /* consecutive transport failures */
    uint64_t next_probe;
    uint32_t probe_ms;
    char token[512];
    char *user_info;            /* compact JSON of RequestInfo.userInfo, or NULL */
    uint64_t token_refresh_at;  /* log in again from this time on */

    fileup file;

    /* Downloads. */
    uint64_t dl_next[DL_COUNT];
    bool dl_inflight[DL_COUNT];
    uint32_t dl_fails[DL_COUNT];
    uint64_t forms_since;       /* the newest form lastUpdatedTime held */
    uint32_t loc_next_locale;

    mesh_gw_stats st;
    mesh_buf scratch, scratch2, json;
};

/* ---- gateway.c helpers used by download.c ---- */
void gw_log(mesh_gw *g, int level, const char *fmt, ...) MESH_PRINTF(3, 4);
uint64_t gw_jitter(mesh_gw *g, uint64_t ms);
uint64_t gw_backoff(mesh_gw *g, uint32_t fails);
req *gw_req_new(mesh_gw *g, int kind);
int gw_config_stage(mesh_gw *g, const char *key, const char *kind, const char *source,
                    uint64_t fetched_ms, json_t *value);

/* ---- http.c ---- */
/* Appends RequestInfo JSON ("{...}") for `action` ("_create", "_search", ...). */
int gw_request_info(mesh_gw *g, uint64_t now_ms, const char *action, mesh_buf *out);
/* Appends `s` as a JSON string literal. */
int gw_json_str(mesh_buf *out, const char *s, size_t len);
/* Appends `s` form-urlencoded. */
int gw_urlenc(mesh_buf *out, const char *s);
int gw_append(mesh_buf *out, const char *s);
int gw_appendf(mesh_buf *out, const char *fmt, ...) MESH_PRINTF(2, 3);
/* Base64 of `in` into out (NUL-terminated); returns false if cap is too small. */
bool gw_base64(const uint8_t *in, size_t len, char *out, size_t cap);
/* gzip-compresses `in` into out. Returns MESH_OK, MESH_ENOMEM, MESH_ELIMIT. */
int gw_gzip(const uint8_t *in, size_t len, mesh_buf *out);
/* Parses a JSON response body; NULL if it is not JSON. */
json_t *gw_parse(const mesh_gw_response *r);
/* The first DIGIT error of a response body: Errors[0].code/message (or error/
 * error_description of Spring OAuth bodies), else the HTTP status. */
void gw_error_of(const mesh_gw_response *r, verdict *out);

/* One entity of a search answer: the fields a confirmation needs (strings raw, not NUL-ended,
 * borrowed from the body) and the whole object's text for a closer look. */
typedef struct gw_hit {
    const char *crid, *id;
    size_t crid_len, id_len;
    int64_t rv;
    bool deleted;
    bool escaped;               /* crid or id held an escape: not a plain UUID */
    const char *obj;
    size_t obj_len;
} gw_hit;

/* Calls fn for each object of the top-level array `key` of a search answer. Returns MESH_OK,
 * MESH_ENOTFOUND (no such array), MESH_ECORRUPT (malformed), or fn's non-zero value. */
int gw_scan_search(const uint8_t *body, size_t len, const char *key,
                   int (*fn)(const gw_hit *h, void *ctx), void *ctx);

/* ---- download.c ---- */
/* The next download request due at now_ms (or NULL). */
req *gw_dl_next(mesh_gw *g, uint64_t now_ms);
void gw_dl_on_response(mesh_gw *g, req *r, uint64_t now_ms, const mesh_gw_response *resp);
uint64_t gw_dl_expiry(const mesh_gw *g);

#endif
