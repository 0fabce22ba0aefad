/*
 * meshsync.h - the public C API of libmeshsync, a peer-to-peer mesh sync engine.
 *
 * A node is a data directory holding an Ed25519 identity and an LMDB op-log. Every save action
 * (create, update, soft delete) of an entity is kept as a signed op; the current state of each
 * entity is the deterministic merge of its ops, identical on every node that holds the same ops.
 *
 * Conventions
 *  - Every function that can fail returns an int: 0 (MESH_OK) on success or a negative MESH_E*
 *    code. mesh_strerror() names the code; mesh_errmsg() returns a sentence about the last
 *    failure on the calling thread (what failed, on what, and what to do).
 *  - The caller owns what it passes in; the library copies what it keeps.
 *  - Strings returned through callbacks are borrowed: valid only during the callback.
 *  - Memory returned through a `char **` out-parameter is owned by the caller; free it with
 *    mesh_free().
 *  - A mesh_node handle must not be used by two threads at once. Several processes may open the
 *    same data directory (e.g. the daemon and the CLI); LMDB serialises their writes.
 *  - A node that ingests a large batch of ops (an import, a sync) starts one helper thread for
 *    the decoding and hashing, and keeps it, parked, until mesh_node_close() ends it. It never
 *    calls back into the application. As with LMDB, a handle must not be used in a child
 *    process after fork(): open the node again there.
 *  - Entity ids are RFC 4122 UUIDs in text form (36 characters), the campaign service's
 *    clientReferenceId. Public keys are 64 lowercase hex characters.
 */
#ifndef MESHSYNC_H
#define MESHSYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MESH_NODISCARD __attribute__((warn_unused_result))
#else
#define MESH_NODISCARD
#endif

#define MESH_VERSION_STRING "0.1.0"

/* The library's version string (MESH_VERSION_STRING of the build that made the library). */
const char *mesh_version(void);

/* ---- Error codes ------------------------------------------------------------------------ */

enum {
    MESH_OK = 0,
    MESH_EINVAL = -1,      /* an argument or input is malformed (JSON, UUID, option) */
    MESH_ENOMEM = -2,      /* out of memory */
    MESH_EIO = -3,         /* an operating-system I/O call failed; see mesh_errmsg() */
    MESH_ENOTFOUND = -4,   /* no such entity, op, file or key */
    MESH_EEXIST = -5,      /* already exists (e.g. init of an existing node) */
    MESH_ECORRUPT = -6,    /* stored or received bytes fail validation */
    MESH_ESIG = -7,        /* a signature does not verify */
    MESH_ECHAIN = -8,      /* a stream's hash chain is broken or has a gap */
    MESH_EDELETED = -9,    /* the entity is deleted; deletes are final */
    MESH_ESTALE = -10,     /* a rowVersion that is not the current one (goes backwards) */
    MESH_ETYPE = -11,      /* unknown entity type */
    MESH_ENOSPC = -12,     /* the disk or the store's size limit is full */
    MESH_ELIMIT = -13,     /* an input exceeds a documented limit (see proto/PROTOCOL.md) */
    MESH_ENOTSTORE = -14,  /* the directory is not a meshsync data directory */
    MESH_EVERSION = -15,   /* unsupported format or protocol version */
    MESH_EPERM = -16,      /* not permitted (not on the roster, outside scope, file mode) */
    MESH_ECONFLICT = -17,  /* the entity has no open conflict to resolve, or the choice is invalid */
    MESH_EPROTO = -18,     /* a peer broke the sync protocol */
    MESH_EAGAIN = -19,     /* try again later (busy, would block) */
    MESH_ECLOSED = -20,    /* the session or connection is closed */
    MESH_ETIMEDOUT = -21,  /* a deadline passed */
    MESH_EINTERNAL = -22,  /* a bug in meshsync: please report it with mesh_errmsg() */
};

/* The name of an error code ("MESH_EINVAL: invalid argument"). Never NULL; static storage. */
const char *mesh_strerror(int code);

/* A sentence about the last failure on this thread, or "" if none. Valid until the next
 * meshsync call on this thread. */
const char *mesh_errmsg(void);

/* Frees memory that meshsync returned through an out-parameter. NULL is ignored. */
void mesh_free(void *p);

/* ---- Node lifecycle --------------------------------------------------------------------- */

typedef struct mesh_node mesh_node;

/* Lengths of text forms, including the terminating NUL. */
#define MESH_UUID_STR_LEN 37
#define MESH_KEY_STR_LEN 65
#define MESH_HASH_STR_LEN 65

typedef struct mesh_init_opts {
    /* The boundary code this node writes its ops under (its stream scope), e.g.
     * "MZ/NAMPULA/ERATI/L01". NULL means "default". At most 64 bytes of [A-Za-z0-9_./-]. */
    const char *scope;
    /* Path of an entity-type configuration (JSON) to copy into the node; NULL ships the DIGIT
     * Health Campaign Management types. */
    const char *types_path;
    /* The team authority's public key (as mesh_key_parse() reads it): the node joins that team
     * (see mesh_team_join()). NULL: no team for now. */
    const char *team;
    /* At-rest encryption of the op-log (docs/SECURITY.md): with a key derived from `passphrase`
     * (Argon2id), or with the 32-byte key in `key_file` (created, mode 0600, if missing). At most
     * one of the two; both NULL: not encrypted. Every later open needs the same. */
    const char *passphrase;
    const char *key_file;
} mesh_init_opts;

/*
 * Creates a new node in `dir` (created if missing, mode 0700): a fresh Ed25519 identity
 * (identity.key, mode 0600), the LMDB store and the node configuration.
 * Returns MESH_OK, MESH_EEXIST (dir already holds a node), MESH_EINVAL (bad scope, types file,
 * team key, or both a passphrase and a key file), MESH_EPERM (a key file others can read),
 * MESH_ECORRUPT (a key file that is not 32 bytes), MESH_EIO, MESH_ENOMEM.
 */
MESH_NODISCARD int mesh_node_init(const char *dir, const mesh_init_opts *opts);

typedef struct mesh_open_opts {
    /* Upper bound for the LMDB map in bytes; 0 means the default (MESH_MAP_BYTES_MAX). */
    uint64_t map_bytes_max;
    /* Returns the wall clock in milliseconds since the epoch; NULL uses the system clock.
     * The simulator injects a virtual clock here. */
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
    /* The key of an encrypted node: its passphrase, or its key file (ignored when the node is
     * not encrypted). When the node needs a passphrase and `passphrase` is NULL,
     * `passphrase_cb` (if not NULL) is asked: it writes a NUL-terminated passphrase of less than
     * `cap` bytes into `buf` and returns 0, or returns non-zero to give up. */
    const char *passphrase;
    const char *key_file;
    int (*passphrase_cb)(char *buf, size_t cap, void *ctx);
    void *passphrase_ctx;
} mesh_open_opts;

/*
 * Opens the node in `dir`. `opts` may be NULL. On success *out is a handle to close with
 * mesh_node_close().
 * Returns MESH_OK, MESH_ENOTSTORE (no node there, or not a meshsync store), MESH_EVERSION
 * (written by an incompatible version), MESH_EPERM (identity.key or the key file readable by
 * others; an encrypted node opened without its key, or with a wrong one: "the passphrase does
 * not open this store"), MESH_ECORRUPT, MESH_EIO, MESH_ENOMEM.
 */
MESH_NODISCARD int mesh_node_open(const char *dir, const mesh_open_opts *opts, mesh_node **out);

/* Closes the node. NULL is ignored. */
void mesh_node_close(mesh_node *node);

/* Copies the node's public key (64 hex chars + NUL) into `out`. */
void mesh_node_identity(const mesh_node *node, char out[MESH_KEY_STR_LEN]);

/* The node's write scope. Borrowed; valid until mesh_node_close(). */
const char *mesh_node_scope(const mesh_node *node);

/* ---- Entities ---------------------------------------------------------------------------- */

/* A materialized entity, as passed to callbacks. All pointers are borrowed for the callback. */
typedef struct mesh_entity {
    const char *type;
    char id[MESH_UUID_STR_LEN];
    uint32_t row_version;    /* the winning op's rowVersion */
    int deleted;             /* 1 if deleted, or if an ancestor is deleted */
    int conflict;            /* 1 if concurrent edits await a person's resolution */
    uint64_t modified_ms;    /* physical time of the winning op's hybrid logical clock */
    char author[MESH_KEY_STR_LEN];
    /* The entity as JSON: the winning op's body with clientReferenceId, rowVersion and
     * isDeleted added. NUL-terminated. */
    const char *json;
    size_t json_len;
} mesh_entity;

/* Return 0 to continue an iteration, anything else to stop it (that value is returned). */
typedef int (*mesh_entity_cb)(const mesh_entity *entity, void *ctx);

typedef struct mesh_put_result {
    char id[MESH_UUID_STR_LEN];
    uint32_t row_version;
} mesh_put_result;

/*
 * Creates or updates an entity of `type` from a JSON object (`json`, `json_len` bytes).
 * The entity id is `id` if not NULL, else the body's "clientReferenceId", else a new UUIDv7.
 * If the body has "rowVersion", it must be the entity's current rowVersion (optimistic
 * concurrency, as the campaign service does); it is not stored in the body.
 * The op is durable when this returns MESH_OK; `res` (may be NULL) gets the id and the new
 * rowVersion.
 * Returns MESH_OK, MESH_EINVAL (malformed JSON, not an object, invalid UUID, id mismatch),
 * MESH_ETYPE (type not configured), MESH_EDELETED (entity is deleted), MESH_ESTALE
 * (rowVersion is not the current one), MESH_ELIMIT (body too large or too deep), MESH_ENOSPC,
 * MESH_EIO.
 */
MESH_NODISCARD int mesh_put(mesh_node *node, const char *type, const char *id, const char *json,
                            size_t json_len, mesh_put_result *res);

/*
 * Soft-deletes entity `id`: writes a delete op whose body is the current state. Final: no later
 * op undoes it. Returns MESH_OK, MESH_EINVAL (bad UUID), MESH_ENOTFOUND, MESH_EDELETED
 * (already deleted), MESH_ENOSPC, MESH_EIO.
 */
MESH_NODISCARD int mesh_delete(mesh_node *node, const char *id, mesh_put_result *res);

#define MESH_GET_INCLUDE_DELETED 0x1u

/*
 * Calls `cb` once with entity `id`. Unless flags has MESH_GET_INCLUDE_DELETED, a deleted entity
 * (or one whose ancestor is deleted) is MESH_ENOTFOUND. Returns MESH_OK, the callback's non-zero
 * value, MESH_EINVAL, MESH_ENOTFOUND, MESH_ECORRUPT, MESH_EIO.
 */
MESH_NODISCARD int mesh_get(mesh_node *node, const char *id, unsigned flags, mesh_entity_cb cb,
                            void *ctx);

typedef struct mesh_query {
    const char *type;              /* NULL: every type */
    int include_deleted;           /* as the campaign service's includeDeleted */
    uint64_t last_changed_since_ms; /* 0: no filter; else modified_ms >= this */
    uint32_t limit;                /* 0: no limit */
    uint32_t offset;
} mesh_query;

/* Calls `cb` for each entity matching `q`, in (type, id) order. Returns MESH_OK, the callback's
 * non-zero value, MESH_EINVAL, MESH_ECORRUPT, MESH_EIO. */
MESH_NODISCARD int mesh_list(mesh_node *node, const mesh_query *q, mesh_entity_cb cb, void *ctx);

/* ---- Ops, history and conflicts ------------------------------------------------------------ */

enum mesh_op_kind {
    MESH_OP_CREATE = 1,
    MESH_OP_UPDATE = 2,
    MESH_OP_DELETE = 3,
};

/* One stored op, as passed to callbacks. Pointers are borrowed for the callback. */
typedef struct mesh_op_info {
    const char *type;
    char entity[MESH_UUID_STR_LEN];
    uint32_t row_version;
    int kind;                        /* enum mesh_op_kind */
    char author[MESH_KEY_STR_LEN];
    uint64_t hlc;                    /* hybrid logical clock: ms << 16 | counter */
    uint32_t base_row_version;       /* 0 for a create */
    char base_author[MESH_KEY_STR_LEN]; /* "" for a create */
    const char *scope;
    uint64_t seq;                    /* position in the author's stream for this scope */
    char hash[MESH_HASH_STR_LEN];
    int winner;                      /* 1 if this op is the entity's current state */
    int head;                        /* 1 if no other op derives from this one */
    const char *json;                /* the op's body as JSON */
    size_t json_len;
} mesh_op_info;

typedef int (*mesh_op_cb)(const mesh_op_info *op, void *ctx);

/* Calls `cb` for each op of entity `id`, in (rowVersion, author) order. Returns MESH_OK, the
 * callback's value, MESH_EINVAL, MESH_ENOTFOUND, MESH_ECORRUPT, MESH_EIO. */
MESH_NODISCARD int mesh_history(mesh_node *node, const char *id, mesh_op_cb cb, void *ctx);

/* Calls `cb` for each entity that has an open conflict (more than one head), in id order.
 * mesh_history() shows the competing heads. Returns MESH_OK, the callback's value, MESH_EIO. */
MESH_NODISCARD int mesh_conflicts(mesh_node *node, mesh_entity_cb cb, void *ctx);

/*
 * Resolves the open conflict on entity `id` by writing a new op that derives from all of its
 * heads. The new state is `json` if not NULL, else the body of the head written by `pick_author`
 * (hex public key; NULL picks the current winner).
 * Returns MESH_OK, MESH_EINVAL, MESH_ENOTFOUND, MESH_ECONFLICT (no open conflict, or
 * pick_author is not a head), MESH_EDELETED, MESH_ELIMIT, MESH_ENOSPC, MESH_EIO.
 */
MESH_NODISCARD int mesh_resolve(mesh_node *node, const char *id, const char *json, size_t json_len,
                                const char *pick_author, mesh_put_result *res);

/* ---- Status ------------------------------------------------------------------------------ */

typedef struct mesh_status {
    uint64_t ops;            /* ops held (applied) */
    uint64_t entities;       /* entities, deleted ones included */
    uint64_t deleted;        /* deleted entities */
    uint64_t conflicts;      /* entities with an open conflict */
    uint64_t streams;        /* (author, scope) streams held */
    uint64_t pending;        /* ops waiting for an earlier op of their stream */
    uint64_t store_bytes;    /* size of the LMDB data file */
    /* BLAKE2b-256 over every stream's (author, scope, seq, head hash), in stream-id order:
     * equal on two nodes exactly when they hold the same ops. */
    char digest[MESH_HASH_STR_LEN];
} mesh_status;

MESH_NODISCARD int mesh_node_status(mesh_node *node, mesh_status *out);

/* ---- Receipts, downloaded configuration and the gateway -------------------------------------- */

/*
 * A gateway node (`meshsync run --gateway`, docs/GATEWAY.md) forwards every op to the campaign
 * service and writes, for each, a signed receipt into its own stream: confirmed (with the
 * server's id and rowVersion) or rejected (with the server's error). Receipts reach the other
 * nodes by ordinary sync, so the device that wrote an op learns what became of it.
 */
enum mesh_receipt_status {
    MESH_RECEIPT_NONE = 0,       /* no receipt yet: the op has not reached a gateway's verdict */
    MESH_RECEIPT_CONFIRMED = 1,  /* the campaign service holds the op's effect */
    MESH_RECEIPT_REJECTED = 2,   /* the campaign service refused it: error_code says why */
};

typedef struct mesh_receipt {
    int status;                      /* enum mesh_receipt_status */
    char action[8];                  /* how it was sent: "create", "update", "delete" */
    char server_id[65];              /* the server's id of the entity ("" if none) */
    uint32_t server_row_version;     /* the server's rowVersion after the op (0 if none) */
    char error_code[65];             /* rejected: the server's code, e.g. "INVALID_REQUEST" */
    char error_message[401];         /* rejected: the server's message */
    char gateway[MESH_KEY_STR_LEN];  /* the gateway that wrote the receipt */
    uint64_t time_ms;                /* when the gateway learned the outcome */
} mesh_receipt;

/*
 * Gets the receipt of op (entity_id, row_version, author) (author: 64 hex characters, as
 * mesh_op_info.author). Returns MESH_OK, MESH_ENOTFOUND (no receipt has arrived), MESH_EINVAL,
 * MESH_ECORRUPT, MESH_EIO.
 */
MESH_NODISCARD int mesh_receipt_get(mesh_node *node, const char *entity_id, uint32_t row_version,
                                    const char *author, mesh_receipt *out);

#define MESH_RECEIPT_RECENT_MAX 5

typedef struct mesh_receipt_rejection {
    char entity[MESH_UUID_STR_LEN];
    char type[33];
    uint32_t row_version;
    char code[65];
    char message[401];
    uint64_t time_ms;
} mesh_receipt_rejection;

/* What became of this node's own ops (its streams' ops of entity types). */
typedef struct mesh_receipt_summary {
    uint64_t own_ops;        /* ops this node wrote */
    uint64_t confirmed;      /* ... with a "confirmed" receipt */
    uint64_t rejected;       /* ... with a "rejected" receipt */
    uint64_t awaiting;       /* ... with no receipt yet */
    size_t nrecent;          /* the latest rejections, newest first */
    mesh_receipt_rejection recent[MESH_RECEIPT_RECENT_MAX];
} mesh_receipt_summary;

/* Reads every own op's receipt (a read transaction; ~1 s per million ops). Returns MESH_OK,
 * MESH_ECORRUPT, MESH_EIO. */
MESH_NODISCARD int mesh_receipt_summary_get(mesh_node *node, mesh_receipt_summary *out);

/* One item of configuration a gateway downloaded (form schema, localisation, SOS contacts,
 * dashboard aggregates). Pointers are borrowed for the callback. */
typedef struct mesh_config_entry {
    const char *key;           /* "forms/<schema>", "localization/<module>/<locale>",
                                  "sos/contacts", "dashboard/<tenant>" */
    const char *kind;          /* "form", "localization", "sos", "dashboard" */
    const char *source;        /* the endpoint it came from */
    const char *json;          /* the value as JSON, NUL-terminated */
    size_t json_len;
    uint64_t fetched_ms;       /* when the gateway fetched this version */
    uint64_t modified_ms;      /* when it was written into the mesh */
    uint32_t version;          /* 1, 2, ...: each change of the value is a new version */
    char author[MESH_KEY_STR_LEN]; /* the gateway that wrote it */
} mesh_config_entry;

typedef int (*mesh_config_cb)(const mesh_config_entry *entry, void *ctx);

/* Calls `cb` once with configuration `key`. Returns MESH_OK, the callback's value, MESH_EINVAL,
 * MESH_ENOTFOUND, MESH_ECORRUPT, MESH_EIO. */
MESH_NODISCARD int mesh_config_get(mesh_node *node, const char *key, mesh_config_cb cb,
                                   void *ctx);

/* Calls `cb` for each configuration item whose key starts with `prefix` (NULL or "": all), in
 * entity-id order. Returns MESH_OK, the callback's value, MESH_ECORRUPT, MESH_EIO. */
MESH_NODISCARD int mesh_config_list(mesh_node *node, const char *prefix, mesh_config_cb cb,
                                    void *ctx);

/* The forwarding state of a gateway node's outbox (all zero on a node that is no gateway). */
typedef struct mesh_gateway_status {
    int active;              /* 1 if this node has ever run as a gateway */
    uint64_t pending;        /* ops waiting to be sent (or to be sent again) */
    uint64_t sent;           /* ops sent whose outcome a search has not confirmed yet */
    uint64_t confirmed;      /* ops the service holds */
    uint64_t rejected;       /* ops the service refused (their receipts say why) */
} mesh_gateway_status;

MESH_NODISCARD int mesh_gateway_status_get(mesh_node *node, mesh_gateway_status *out);

/* ---- Team: the signed roster and access control (docs/SECURITY.md) ----------------------- */

/*
 * A team is named by its authority: an Ed25519 key held by the supervisor or district office
 * (DIR/team-authority.key on that node). The authority signs a versioned roster of the members'
 * keys, each with a role ("field", "supervisor", "gateway") and the boundary codes (scopes) it
 * may see. The roster travels through the mesh as an op in the authority's stream; every node
 * of the team admits only members to connect, replicates to each member only the streams its
 * scopes allow, and refuses ops its roster does not admit (proto/PROTOCOL.md, "Roster").
 */

/* Reads a public key given as 64 hex characters, or as the "meshsync:KEY" text that
 * `meshsync identity` shows as a QR code (case and surrounding blanks do not matter), into
 * canonical lowercase hex. Returns MESH_OK or MESH_EINVAL. */
MESH_NODISCARD int mesh_key_parse(const char *text, char out[MESH_KEY_STR_LEN]);

/*
 * Makes this node the authority of a new team: creates the authority key
 * (DIR/team-authority.key, mode 0600; keep a backup, it cannot be replaced), joins the team, and
 * signs roster version 1 listing this node as a supervisor of `root` (NULL: the node's scope),
 * the team's boundary, within which every member scope must lie. `authority` (may be NULL) gets
 * the authority key. Returns MESH_OK, MESH_EEXIST (the node already belongs to a team, or the
 * key file exists), MESH_EINVAL (a bad root, or one that does not contain the node's scope),
 * MESH_ENOSPC, MESH_EIO.
 */
MESH_NODISCARD int mesh_team_create(mesh_node *node, const char *root,
                                    char authority[MESH_KEY_STR_LEN]);

/* Makes this node a member-to-be of the team of `authority` (as mesh_key_parse() reads it): it
 * will accept only that authority's rosters. It holds no roster until one arrives by sync.
 * Returns MESH_OK, MESH_EINVAL, MESH_EEXIST (the node belongs to another team), MESH_EIO. */
MESH_NODISCARD int mesh_team_join(mesh_node *node, const char *authority);

/*
 * On the authority's node: adds member `key` (or changes an existing member: role, scopes; a
 * removed member is re-admitted) with `role` and `nscopes` (1..16) boundary codes within the
 * team's root, and signs the next roster version (in *version if not NULL). Streams the member
 * held in scopes it no longer has are closed at the position this node holds.
 * Returns MESH_OK, MESH_EINVAL (a bad key, role or scope), MESH_EPERM (this node does not hold
 * the authority key), MESH_ENOTFOUND (the node holds no roster), MESH_ELIMIT (too many members
 * or scopes), MESH_ENOSPC, MESH_EIO.
 */
MESH_NODISCARD int mesh_team_add(mesh_node *node, const char *key, const char *role,
                                 const char *const *scopes, size_t nscopes, uint64_t *version);

/*
 * On the authority's node: removes member `key` and signs the next roster version. Its streams
 * are closed at the position this node holds: ops it signed up to there stay everywhere, later
 * ones are refused by every node, and it can no longer connect to one that has the new roster.
 * Returns MESH_OK, MESH_EINVAL, MESH_EPERM (no authority key here), MESH_ENOTFOUND (not a
 * member, or already removed), MESH_ENOSPC, MESH_EIO.
 */
MESH_NODISCARD int mesh_team_remove(mesh_node *node, const char *key, uint64_t *version);

typedef struct mesh_team_info {
    int joined;                          /* 1 if the node belongs to a team */
    char authority[MESH_KEY_STR_LEN];    /* the team authority's key ("" if none) */
    int is_authority;                    /* 1 if this data directory holds the authority key */
    uint64_t version;                    /* the roster held (0: none yet) */
    char root[65];                       /* the team's boundary ("" without a roster) */
    uint64_t members;                    /* roster entries, removed members included */
    int member;                          /* 1 if this node is a current member */
} mesh_team_info;

MESH_NODISCARD int mesh_team_info_get(mesh_node *node, mesh_team_info *out);

typedef struct mesh_team_cut {
    const char *scope;
    uint64_t seq;                        /* the last op of the stream that is admitted */
} mesh_team_cut;

/* One roster entry, as passed to callbacks. Pointers are borrowed for the callback. */
typedef struct mesh_team_member_info {
    char key[MESH_KEY_STR_LEN];
    const char *role;                    /* "field", "supervisor", "gateway" */
    int removed;
    size_t nscopes;
    const char *const *scopes;
    size_t ncuts;                        /* streams closed at a position */
    const mesh_team_cut *cuts;
} mesh_team_member_info;

typedef int (*mesh_team_member_cb)(const mesh_team_member_info *m, void *ctx);

/* Calls `cb` for each entry of the roster held, in key order. Returns MESH_OK, the callback's
 * value, MESH_ENOTFOUND (no roster held), MESH_ECORRUPT, MESH_EIO. */
MESH_NODISCARD int mesh_team_members(mesh_node *node, mesh_team_member_cb cb, void *ctx);

/* ---- Ingest, export and import ----------------------------------------------------------- */

typedef struct mesh_ingest_report {
    uint64_t applied;     /* new ops stored and merged */
    uint64_t duplicate;   /* ops already held (ignored) */
    uint64_t pending;     /* ops held back until an earlier op of their stream arrives */
    uint64_t rejected;    /* ops refused (bad signature, broken chain, malformed) */
    int first_error;      /* MESH_E* of the first rejection, 0 if none */
    char first_error_msg[256];
} mesh_ingest_report;

/*
 * Writes every op the node holds (or, with `since_vector`, only what that vector lacks: reserved,
 * pass NULL) into a signed bundle file at `path` (created mode 0600, replaced atomically).
 * A bundle travels on a USB stick: each op keeps its author's signature, and the file is signed
 * by this node. `count` (may be NULL) gets the number of ops written.
 * Returns MESH_OK, MESH_EIO, MESH_ENOSPC, MESH_ENOMEM.
 */
MESH_NODISCARD int mesh_export(mesh_node *node, const char *path, uint64_t *count);

/*
 * Verifies a bundle (file signature, every op's chain and signature) and ingests it in one
 * transaction: on any error nothing is stored. `rep` (may be NULL) gets the counts.
 * Returns MESH_OK, MESH_ENOTFOUND, MESH_ECORRUPT (truncated or malformed), MESH_ESIG (tampered),
 * MESH_ECHAIN, MESH_EVERSION, MESH_ELIMIT, MESH_ENOSPC, MESH_EIO.
 */
MESH_NODISCARD int mesh_import(mesh_node *node, const char *path, mesh_ingest_report *rep);

#ifdef __cplusplus
}
#endif

#endif /* MESHSYNC_H */
