/*
 * team.h - the signed team roster: which devices are on the team, with which role, and which
 * boundaries (scopes) each may see and write; its canonical encoding as the body of a `_roster`
 * op in the team authority's stream; and the access rules every node applies identically
 * (proto/PROTOCOL.md, "Roster"; docs/SECURITY.md).
 *
 * A roster is signed as any op is: it is an op whose author is the team authority (an Ed25519
 * key held by the supervisor or district office). Its entity id is fixed by the authority key
 * and its rowVersion is the roster version, so two rosters of one team never share a log key.
 *
 * The rules are functions of the roster and the op alone, so every node holding the same roster
 * decides the same way whatever order ops arrive in:
 *   - write limit: an op of stream (author, scope) at position seq is admitted iff the author is
 *     the authority, or a current member whose roster scopes contain `scope`, or the roster
 *     records a cut for that stream (the seq the author had reached when it was removed, or when
 *     the scope was taken from it) and seq <= cut. Everything else is refused.
 *   - may hold: a member may hold stream (author, scope) iff the author is the authority, or
 *     `scope` is within one of its scopes (what it carries: a district holds all its localities),
 *     or one of its scopes is within `scope` (data written at a coarser boundary is shared with
 *     every device under it). A removed member may hold nothing.
 */
#ifndef MESH_MODEL_TEAM_H
#define MESH_MODEL_TEAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/op.h"

/* Entries in a roster, removed members included (their cuts are needed for as long as their
 * old ops travel): a district's devices with room to spare; ~200 bytes each keeps the roster op
 * well within MESH_OP_BYTES_MAX. */
#define MESH_TEAM_MEMBERS_MAX 1024u
/* Boundaries one member may see: a supervisor covering a few districts. */
#define MESH_TEAM_SCOPES_MAX 16u
/* Closed streams one member may have (one per scope it ever wrote in and lost). */
#define MESH_TEAM_CUTS_MAX 32u
/* The roster body format this code reads and writes. */
#define MESH_TEAM_FORMAT 1

/* The system entity type of roster ops. */
#define MESH_TYPE_ROSTER "_roster"

/* Whether `op` is a roster op (of type MESH_TYPE_ROSTER), whoever wrote it. */
static inline bool mesh_op_is_roster(const mesh_op *op)
{
    return op->type_len == sizeof MESH_TYPE_ROSTER - 1 &&
           memcmp(op->type, MESH_TYPE_ROSTER, op->type_len) == 0;
}

typedef enum mesh_team_role {
    MESH_ROLE_FIELD = 1,       /* a field device: writes and holds its localities */
    MESH_ROLE_SUPERVISOR = 2,  /* a supervisor: typically a district, carrying its localities */
    MESH_ROLE_GATEWAY = 3,     /* forwards to the campaign service */
} mesh_team_role;

/* A scope string, or a cut (a scope and the last seq admitted in it). */
typedef struct mesh_team_scope {
    char text[MESH_SCOPE_BYTES_MAX + 1];
    size_t len;
    uint64_t seq;                    /* cuts only */
} mesh_team_scope;

typedef struct mesh_team_member {
    uint8_t key[MESH_KEY_BYTES];
    mesh_team_role role;
    bool removed;
    uint32_t scope_first, nscopes;   /* into mesh_team.scopes */
    uint32_t cut_first, ncuts;       /* into mesh_team.cuts */
} mesh_team_member;

/* A decoded roster. Owns its arrays; free with mesh_team_free(). */
typedef struct mesh_team {
    uint8_t authority[MESH_KEY_BYTES];
    uint64_t version;
    char root[MESH_SCOPE_BYTES_MAX + 1];   /* the team's boundary: every scope lies within it */
    size_t root_len;
    mesh_team_member *members;             /* sorted by key */
    size_t nmembers;
    mesh_team_scope *scopes;
    size_t nscopes;
    mesh_team_scope *cuts;
    size_t ncuts;
} mesh_team;

/*
 * Decodes roster body `body` (a canonical msgpack map, the body of a `_roster` op) signed by
 * `authority`. Checks everything: format, version >= 1, members sorted by key and unique, valid
 * keys, roles and scopes, every scope within the root, limits. On success *out is a new roster.
 * Returns MESH_OK, MESH_ECORRUPT (with a message naming the problem), MESH_EVERSION (a body
 * format this code does not know), MESH_ELIMIT, MESH_ENOMEM. Never crashes on any input.
 */
int mesh_team_decode(const uint8_t *body, size_t len, const uint8_t authority[MESH_KEY_BYTES],
                     mesh_team **out);

/* Appends the canonical body of `t` to `out` (members must be sorted by key). Returns MESH_OK,
 * MESH_EINVAL (an invalid roster), MESH_ELIMIT, MESH_ENOMEM. */
int mesh_team_encode(const mesh_team *t, mesh_buf *out);

void mesh_team_free(mesh_team *t);

/* The member with `key`, removed or not, or NULL. */
const mesh_team_member *mesh_team_find(const mesh_team *t, const uint8_t key[MESH_KEY_BYTES]);

/* The roster entity id of a team: a version-8 UUID from
 * BLAKE2b("meshsync/roster/v1" || authority), the same on every node. */
void mesh_team_roster_entity(const uint8_t authority[MESH_KEY_BYTES],
                             uint8_t out[MESH_UUID_BYTES]);

/* True if `scope` equals `outer` or lies below it ("MZ/N/E" is within "MZ/N" and "MZ/N/E", not
 * within "MZ/NA"). */
bool mesh_scope_within(const char *scope, size_t len, const char *outer, size_t outer_len);

/* The highest seq of stream (author, scope) the roster admits: UINT64_MAX for no limit, 0 for
 * none (see the file comment). */
uint64_t mesh_team_write_limit(const mesh_team *t, const uint8_t author[MESH_KEY_BYTES],
                               const char *scope, size_t len);

/* True if member `member` may hold stream (author, scope) (see the file comment). */
bool mesh_team_may_hold(const mesh_team *t, const uint8_t member[MESH_KEY_BYTES],
                        const uint8_t author[MESH_KEY_BYTES], const char *scope, size_t len);

/* "field", "supervisor", "gateway"; NULL for anything else. */
const char *mesh_team_role_name(mesh_team_role role);
/* Parses a role name. Returns MESH_OK or MESH_EINVAL. */
int mesh_team_role_parse(const char *name, mesh_team_role *out);

#endif
