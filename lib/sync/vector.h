/*
 * vector.h - version vectors: for each stream a node holds, the seq of its last op. A node holds
 * a gap-free prefix of every stream, so this vector is all a peer needs to know to send it
 * exactly what it lacks (proto/PROTOCOL.md, "Version vectors").
 *
 * A vector is an array of (sid, seq) sorted by strictly increasing sid, at most
 * MESH_VECTOR_ENTRIES_MAX entries. In a delta, seq 0 means "no longer held".
 */
#ifndef MESH_SYNC_VECTOR_H
#define MESH_SYNC_VECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "sync/frame.h"

typedef struct mesh_vec_entry {
    uint64_t sid;
    uint64_t seq;
} mesh_vec_entry;

typedef struct mesh_vector {
    mesh_vec_entry *e;
    size_t n;
    size_t cap;
} mesh_vector;

void mesh_vector_init(mesh_vector *v);
void mesh_vector_fini(mesh_vector *v);
static inline void mesh_vector_clear(mesh_vector *v) { v->n = 0; }

/* Makes room for `n` entries in total. Returns MESH_OK, MESH_ELIMIT (n above
 * MESH_VECTOR_ENTRIES_MAX), MESH_ENOMEM. */
int mesh_vector_reserve(mesh_vector *v, size_t n);

/* Appends an entry; its sid must be above the last one's (checked: MESH_EINVAL). Returns
 * MESH_OK, MESH_EINVAL, MESH_ELIMIT, MESH_ENOMEM. */
int mesh_vector_push(mesh_vector *v, uint64_t sid, uint64_t seq);

/* Appends an entry in any order: call mesh_vector_normalize before using the vector. */
int mesh_vector_append(mesh_vector *v, uint64_t sid, uint64_t seq);

/* Index of `sid`, or SIZE_MAX. */
size_t mesh_vector_find(const mesh_vector *v, uint64_t sid);
/* Seq of `sid`, 0 if absent. */
uint64_t mesh_vector_get(const mesh_vector *v, uint64_t sid);

/* BLAKE2b-256 of "meshsync/vector/v1" || every entry as sid (8 BE) | seq (8 BE), truncated to
 * MESH_VECTOR_DIGEST_BYTES. */
void mesh_vector_digest(const mesh_vector *v, uint8_t out[MESH_VECTOR_DIGEST_BYTES]);

/* delta := the entries of `cur` whose seq differs from `base`'s, plus (sid, 0) for each stream of
 * `base` that `cur` lacks. */
int mesh_vector_diff(const mesh_vector *cur, const mesh_vector *base, mesh_vector *delta);

/* out := `base` with each entry of `delta` replacing or adding its stream, seq 0 removing it. */
int mesh_vector_patch(const mesh_vector *base, const mesh_vector *delta, mesh_vector *out);

/* out := the pointwise maximum of a and b (streams of either). */
int mesh_vector_join(const mesh_vector *a, const mesh_vector *b, mesh_vector *out);

/* Sorts entries appended in any order by sid and merges duplicate sids, keeping the highest
 * seq. */
void mesh_vector_normalize(mesh_vector *v);

/* Converts to and from the stored layout: n x (sid 8 BE | seq 8 BE). load checks the order
 * (MESH_ECORRUPT). */
int mesh_vector_load(mesh_vector *v, const uint8_t *raw, size_t n);
void mesh_vector_save(const mesh_vector *v, uint8_t *raw);

#endif
