/*
 * roster.h - the keys the transport admits and discovery recognises. Two sources:
 *
 *  - A node in a team (meshsync team create / join) uses its signed roster (lib/model/team.h):
 *    the current members' keys, rebuilt whenever a newer roster is stored. The team key of LAN
 *    discovery is BLAKE2b-256("meshsync/team/v2" || authority key): stable across roster
 *    versions, so nodes that hold different versions still hear each other, and useless to an
 *    outsider, who needs the member keys (which travel only inside the team) to read a beacon.
 *  - A node in no team uses a plain text file of keys (development, tests, benchmarks): one key
 *    per line as 64 hex characters; '#' starts a comment; blank lines are ignored; text after
 *    the key on the same line (a device name, say) is a comment too. Its team key is BLAKE2b-256
 *    over a domain string and the sorted member keys.
 */
#ifndef MESH_NET_ROSTER_H
#define MESH_NET_ROSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/common.h"
#include "model/team.h"

/* Members of one roster: a team of field devices, supervisors and gateways. */
#define MESH_ROSTER_MAX 4096u
/* A roster file: 4096 keys with generous comments. */
#define MESH_ROSTER_FILE_BYTES_MAX (1024u * 1024u)

typedef struct mesh_roster_member {
    uint8_t ed_pk[32];     /* the node identity: op author, roster entry */
    uint8_t curve_pk[32];  /* the same key in Curve25519 form: what CURVE handshakes show */
} mesh_roster_member;

typedef struct mesh_roster {
    mesh_roster_member *members; /* sorted by ed_pk */
    size_t count;
    uint8_t team_key[32];
    char path[4096];
    time_t mtime;                /* of the file when loaded, to notice edits */
    long mtime_ns;
} mesh_roster;

/*
 * Loads the roster at `path` into `r` (which the caller zeroed or finished). Duplicate keys are
 * merged. Returns MESH_OK; MESH_ENOTFOUND (no such file); MESH_EINVAL (a line that is not a key,
 * with its line number; an empty roster); MESH_ELIMIT; MESH_EIO; MESH_ENOMEM.
 */
int mesh_roster_load(const char *path, mesh_roster *r);

/* Builds a roster from keys in memory (tests, benchmarks). Returns MESH_OK, MESH_EINVAL,
 * MESH_ENOMEM. */
int mesh_roster_from_keys(const uint8_t (*keys)[32], size_t n, mesh_roster *r);

/* Builds the roster of a team's signed roster: its current (not removed) members; `team` may be
 * NULL (no roster yet: nobody is admitted). Returns MESH_OK, MESH_EINVAL, MESH_ENOMEM. */
int mesh_roster_from_team(const mesh_team *team, const uint8_t authority[32], mesh_roster *r);

/* The discovery team key of the team of `authority`. */
void mesh_roster_team_key(const uint8_t authority[32], uint8_t out[32]);

void mesh_roster_fini(mesh_roster *r);

/* True if the file changed since it was loaded (mtime), so the caller can reload it. */
bool mesh_roster_changed(const mesh_roster *r);

/* The member with Ed25519 key `ed_pk`, or NULL. */
const mesh_roster_member *mesh_roster_find(const mesh_roster *r, const uint8_t ed_pk[32]);
/* The member whose Curve25519 key is `curve_pk`, or NULL (linear: handshakes are rare). */
const mesh_roster_member *mesh_roster_find_curve(const mesh_roster *r, const uint8_t curve_pk[32]);

#endif
