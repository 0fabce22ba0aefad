/*
 * team.h - the team a node belongs to and the roster it holds, as the store keeps them, and
 * the store's side of access control (lib/model/team.h has the roster and the rules).
 *
 * Meta "team" holds the team authority's public key (32 bytes), set once by `meshsync team
 * create` or `team join` (or `init --team`); a store without it belongs to no team and
 * enforces nothing (development and tests). Meta "roster_version" is the version of the roster
 * the node holds (0 or absent: none yet). The roster itself is the winning `_roster` op in the
 * authority's stream, read from the op-log.
 *
 * Ingest (ingest.c) enforces the roster on every op, local writes and imports included:
 *   - a `_roster` op by anyone but the authority is refused (a forged roster), and so is one by
 *     the authority whose version is not above the held one (a rolled-back roster);
 *   - any other op is refused unless the roster's write limit for its stream admits its seq;
 *   - when a newer roster is stored, every stream is cut back to what that roster admits
 *     (mesh_store_team_enforce), so a node that took a removed device's later ops before it
 *     learned of the removal drops them, and every node ends with the same ops.
 * A node that belongs to a team but holds no roster yet judges nothing (it cannot); its sync
 * sessions take only the authority's stream until a roster arrives.
 */
#ifndef MESH_STORE_TEAM_H
#define MESH_STORE_TEAM_H

#include <stdbool.h>
#include <stdint.h>

#include "model/team.h"
#include "store/store.h"

/* Gets the team authority key. Returns MESH_OK, MESH_ENOTFOUND (the node is in no team),
 * MESH_ECORRUPT, MESH_EIO. */
int mesh_store_team_get(mesh_txn *t, uint8_t authority[MESH_KEY_BYTES]);

/* Makes the node a member of the team of `authority`. Setting the same key again is a no-op.
 * If the node already holds rosters of that authority (it synced with the team's members before
 * it joined), the newest valid one becomes the roster held and is enforced at once.
 * Returns MESH_OK, MESH_EEXIST (the node already belongs to another team), MESH_ECORRUPT,
 * MESH_ENOMEM, MESH_ENOSPC, MESH_EIO. */
int mesh_store_team_set(mesh_txn *t, const uint8_t authority[MESH_KEY_BYTES]);

/* The version of the roster held (0: none). Returns MESH_OK, MESH_EIO. */
int mesh_store_roster_version(mesh_txn *t, uint64_t *version);

/* Reads and decodes the roster held. On MESH_OK *out is a new roster (mesh_team_free()).
 * Returns MESH_OK, MESH_ENOTFOUND (no team, or no roster yet), MESH_ECORRUPT, MESH_ENOMEM,
 * MESH_EIO. */
int mesh_store_roster_get(mesh_txn *t, mesh_team **out);

/* Records `team` as the roster held (its op must be stored already). Returns MESH_OK,
 * MESH_ENOSPC, MESH_EIO. */
int mesh_store_roster_install(mesh_txn *t, const mesh_team *team);

/*
 * Cuts every stream back to what `team` admits (mesh_team_write_limit): removes the ops beyond
 * the limit from the log, the stream index and pending, moves the stream's tip back, and
 * recomputes the state of every entity that lost an op. `removed` (may be NULL) gets the
 * number of ops removed. Returns MESH_OK, MESH_ECORRUPT, MESH_ENOMEM, MESH_ENOSPC, MESH_EIO.
 */
int mesh_store_team_enforce(mesh_txn *t, const mesh_team *team, uint64_t *removed);

#endif
