/*
 * roster.h - the team roster the transport admits: a plain text file of Ed25519 public keys.
 *
 * Format: one key per line as 64 hex characters; '#' starts a comment; blank lines are ignored.
 * Text after the key on the same line (a device name, say) is a comment too. Signed rosters with
 * scopes come with the access-control work; this file is the interim trust list.
 *
 * The roster also names the team for LAN discovery: the team key is BLAKE2b-256 over a domain
 * string and the sorted member keys, so every node holding the same roster recognises the same
 * beacons, and an outsider, who lacks the roster, can neither read nor forge them.
 */
#ifndef MESH_NET_ROSTER_H
#define MESH_NET_ROSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/common.h"

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

void mesh_roster_fini(mesh_roster *r);

/* True if the file changed since it was loaded (mtime), so the caller can reload it. */
bool mesh_roster_changed(const mesh_roster *r);

/* The member with Ed25519 key `ed_pk`, or NULL. */
const mesh_roster_member *mesh_roster_find(const mesh_roster *r, const uint8_t ed_pk[32]);
/* The member whose Curve25519 key is `curve_pk`, or NULL (linear: handshakes are rare). */
const mesh_roster_member *mesh_roster_find_curve(const mesh_roster *r, const uint8_t curve_pk[32]);

#endif
