/*
 * op.h - the op: one save action of one entity, and its canonical msgpack encoding.
 *
 * The encoding is canonical: an op has exactly one valid byte string, so its BLAKE2b-256 hash
 * identifies it on every node. The decoder rejects any other encoding of the same values.
 * proto/PROTOCOL.md section "Op" is the normative layout; proto/vectors/ holds golden vectors.
 */
#ifndef MESH_MODEL_OP_H
#define MESH_MODEL_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define MESH_OP_FORMAT 1
#define MESH_UUID_BYTES 16
#define MESH_KEY_BYTES 32   /* Ed25519 public key */
#define MESH_HASH_BYTES 32  /* BLAKE2b-256 */
#define MESH_SIG_BYTES 64   /* Ed25519 detached signature */

/* Kinds beyond the public create/update/delete are reserved for system streams (receipts,
 * rosters, downloaded configuration) and are introduced by later protocol revisions. */
#define MESH_OP_KIND_MIN 1
#define MESH_OP_KIND_MAX 15

typedef struct mesh_opref {
    uint32_t row_version;
    uint8_t author[MESH_KEY_BYTES];
} mesh_opref;

/*
 * A decoded op. Pointer members borrow from the buffer that was decoded (or, when encoding,
 * from the caller): the struct is only valid while that buffer is.
 */
typedef struct mesh_op {
    uint8_t kind;                       /* enum mesh_op_kind or a system kind */
    const char *type;                   /* not NUL-terminated; type_len bytes */
    size_t type_len;
    uint8_t entity[MESH_UUID_BYTES];
    uint32_t row_version;               /* >= 1 */
    uint8_t author[MESH_KEY_BYTES];
    const char *scope;                  /* not NUL-terminated; scope_len bytes */
    size_t scope_len;
    uint64_t seq;                       /* >= 1 */
    uint8_t prev[MESH_HASH_BYTES];      /* hash of op seq-1 of the same stream; zeros for seq 1 */
    uint64_t hlc;
    bool has_base;                      /* false only for a create */
    mesh_opref base;
    uint32_t merged_count;              /* <= MESH_MERGED_MAX */
    mesh_opref merged[MESH_MERGED_MAX];
    uint32_t parents_count;             /* <= MESH_PARENTS_MAX */
    uint8_t parents[MESH_PARENTS_MAX][MESH_UUID_BYTES];
    const uint8_t *body;                /* canonical msgpack map */
    size_t body_len;
} mesh_op;

/*
 * Appends the canonical encoding of `op` to `out`. The op's body must already be canonical
 * (see mesh_body_check). Checks every field against its limit.
 * Returns MESH_OK, MESH_EINVAL (a field out of range, e.g. row_version 0), MESH_ELIMIT
 * (encoding larger than MESH_OP_BYTES_MAX), MESH_ENOMEM.
 */
int mesh_op_encode(const mesh_op *op, mesh_buf *out);

/*
 * Decodes `len` bytes into `op` (which then borrows from `buf`). Rejects trailing bytes,
 * non-canonical encodings, out-of-range fields and bodies that are not canonical maps.
 * Never crashes on any input. Returns MESH_OK, MESH_ECORRUPT (with a message naming the field),
 * MESH_EVERSION (unknown format number), MESH_ELIMIT.
 */
int mesh_op_decode(const uint8_t *buf, size_t len, mesh_op *op);

/*
 * Reads only an op's leading fields (format, kind, type, entity, row_version, author, scope, seq)
 * into `op`, without checking the rest: enough to route a record to its stream before
 * mesh_op_decode() validates it in full. The other fields of `op` are left unset.
 * Returns MESH_OK, MESH_ECORRUPT, MESH_EVERSION, MESH_ELIMIT.
 */
int mesh_op_peek(const uint8_t *buf, size_t len, mesh_op *op);

/* A one-entry memo for mesh_stream_id(): a batch's ops mostly come from one stream after another,
 * so this saves a hash per op. Zero-initialise before use. */
typedef struct mesh_sid_memo {
    uint8_t author[MESH_KEY_BYTES];
    char scope[MESH_SCOPE_BYTES_MAX];
    size_t scope_len;
    uint64_t sid;
    bool valid;
} mesh_sid_memo;

uint64_t mesh_stream_id_memo(mesh_sid_memo *m, const uint8_t author[MESH_KEY_BYTES],
                             const char *scope, size_t scope_len);

/* BLAKE2b-256 of an op's encoded bytes. */
void mesh_op_hash(const uint8_t *buf, size_t len, uint8_t out[MESH_HASH_BYTES]);

/* Total order used by the merge rule: (row_version, hlc, author) compared in that order. */
int mesh_op_order_cmp(uint32_t rv_a, uint64_t hlc_a, const uint8_t *author_a, uint32_t rv_b,
                      uint64_t hlc_b, const uint8_t *author_b);

/* A stream id: the first 8 bytes of BLAKE2b-256(author || scope). Names an (author, scope)
 * stream compactly in keys and version vectors. */
uint64_t mesh_stream_id(const uint8_t author[MESH_KEY_BYTES], const char *scope, size_t scope_len);

/* A scope is 1..MESH_SCOPE_BYTES_MAX bytes of [A-Za-z0-9_.-] separated by single '/'
 * (no leading, trailing or doubled '/'). Returns MESH_OK or MESH_EINVAL. */
int mesh_scope_check(const char *scope, size_t len);

/* A type name is 1..MESH_TYPE_BYTES_MAX bytes of [a-z0-9_], starting with a letter, or a system
 * type starting with '_'. Returns MESH_OK or MESH_EINVAL. */
int mesh_type_check(const char *type, size_t len);

#endif
