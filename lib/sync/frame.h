/*
 * frame.h - the sync protocol's frames: their msgpack layout, a strict decoder and an encoder.
 *
 * A frame is one msgpack array [type, version, frame number, ...] (proto/PROTOCOL.md, "Frames").
 * The decoder allocates nothing and accepts exactly one byte string per frame (shortest integer
 * and length headers, exact element counts), so decode followed by encode gives back the input;
 * the fuzz target tests/fuzz/fuzz_frame.c checks that. Vector entries and op records stay in the
 * input buffer: the decoder validates them all, and the iterators below walk them again.
 */
#ifndef MESH_SYNC_FRAME_H
#define MESH_SYNC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/bundle.h"

/* Protocol versions this build speaks (proto/PROTOCOL.md, "Versioning and compatibility"). */
#define MESH_PROTO_VERSION_MIN 1u
#define MESH_PROTO_VERSION_MAX 1u
/* The largest version number a peer may announce: bounds what a HELLO can claim. */
#define MESH_PROTO_VERSION_LIMIT 0xffffu

/* Bytes of a frame outside its entries or records: array, type, version, frame number, HELLO's
 * fields and the items array header all fit in this (the largest, HELLO, needs 58). */
#define MESH_FRAME_HEAD_BYTES_MAX 64u
/* The smallest frame_bytes_max a session accepts: a head plus a few vector entries. */
#define MESH_FRAME_BYTES_MIN 256u
/* Bytes of an ERROR frame's message. */
#define MESH_ERROR_MSG_BYTES_MAX 256u
/* A version vector's digest: BLAKE2b-256 truncated; collisions only cost a fallback. */
#define MESH_VECTOR_DIGEST_BYTES 16u
/* Wire bytes of one vector entry at most: uint64 sid (9) + uint64 seq (9). */
#define MESH_VECTOR_ENTRY_BYTES_MAX 18u
/* Wire bytes of one op record beyond the op: bin32 header (5) + bin8 signature (2 + 64). */
#define MESH_RECORD_OVERHEAD_MAX (5u + 2u + MESH_SIGNATURE_BYTES)

_Static_assert(MESH_FRAME_BYTES_MIN > MESH_FRAME_HEAD_BYTES_MAX + 4 * MESH_VECTOR_ENTRY_BYTES_MAX,
               "a minimal frame holds a few vector entries");
_Static_assert(MESH_FRAME_BYTES_MAX >= MESH_FRAME_HEAD_BYTES_MAX + MESH_OP_BYTES_MAX +
                                           MESH_RECORD_OVERHEAD_MAX,
               "a maximal frame holds a maximal op");

typedef enum mesh_frame_type {
    MESH_FRAME_HELLO = 1,   /* versions, flags, vector digest, entry total, first entries */
    MESH_FRAME_OPS = 2,     /* op records */
    MESH_FRAME_DONE = 3,    /* counts of what was sent */
    MESH_FRAME_ERROR = 4,   /* code and message; ends the session */
    MESH_FRAME_WANT = 5,    /* "send me your full vector" */
    MESH_FRAME_VECTOR = 6,  /* the full vector, answering WANT: digest, total, first entries */
    MESH_FRAME_MORE = 7,    /* further entries of the HELLO or VECTOR before it */
} mesh_frame_type;

#define MESH_FRAME_TYPE_MIN 1u
#define MESH_FRAME_TYPE_MAX 7u

/* HELLO flags. */
#define MESH_HELLO_FULL 0x1u   /* entries are the whole vector, not a delta */
#define MESH_HELLO_FLAGS_KNOWN MESH_HELLO_FULL

/*
 * A decoded frame. Only the members of its type are meaningful. `items` points into the decoded
 * buffer (the struct is valid while that buffer is): the raw msgpack of the vector entries
 * (nitems (sid, seq) pairs) or of the op records (nitems (op, signature) pairs), without their
 * array header.
 */
typedef struct mesh_frame {
    uint32_t type;
    uint32_t version;             /* HELLO: the sender's highest version */
    uint64_t fno;                 /* the sender's frame number, 1 for its first frame */
    /* HELLO */
    uint32_t version_min;
    uint32_t flags;
    /* HELLO, VECTOR */
    uint8_t digest[MESH_VECTOR_DIGEST_BYTES];
    uint64_t total;               /* entries in the whole announcement */
    /* HELLO, VECTOR, MORE: entries; OPS: records */
    const uint8_t *items;
    size_t items_len;
    size_t nitems;
    /* DONE */
    uint64_t ops;
    uint64_t frames;
    /* ERROR */
    uint32_t code;                /* a MESH_E* code, negated (positive on the wire) */
    const char *msg;              /* not NUL-terminated; msg_len bytes */
    size_t msg_len;
    /* Trailing elements a newer version appended to a HELLO, MORE or ERROR (ignored). */
    uint32_t extra;
} mesh_frame;

/*
 * Decodes one frame. Checks every length and count against the protocol limits before it is
 * used, the canonical form of every header, that vector entries are strictly increasing by
 * stream id within the frame, and that each record holds an op of 1..MESH_OP_BYTES_MAX bytes and
 * a 64-byte signature. Frames of a version above MESH_PROTO_VERSION_MAX are decoded only as far
 * as their frozen prefix (HELLO, MORE, ERROR); others fail with MESH_EVERSION.
 * Never crashes on any input. Returns MESH_OK, MESH_EPROTO (malformed, with a message naming the
 * element), MESH_EVERSION.
 */
int mesh_frame_decode(const uint8_t *buf, size_t len, mesh_frame *f);

/* Appends the encoding of `f` to `out` (items copied as they are). Returns MESH_OK, MESH_ELIMIT
 * (out's cap), MESH_ENOMEM. */
int mesh_frame_encode(const mesh_frame *f, mesh_buf *out);

/* Iterates a decoded frame's vector entries or op records. */
typedef struct mesh_frame_iter {
    const uint8_t *p;
    const uint8_t *end;
} mesh_frame_iter;

void mesh_frame_iter_init(mesh_frame_iter *it, const mesh_frame *f);
/* Returns true and the next entry, or false at the end. */
bool mesh_frame_next_entry(mesh_frame_iter *it, uint64_t *sid, uint64_t *seq);
/* Returns true and the next record (borrowing from the frame's buffer), or false at the end. */
bool mesh_frame_next_record(mesh_frame_iter *it, mesh_oprec *rec);

/* ---- msgpack writing (shortest forms), for building entries and records ---------------- */
int mesh_mp_put_uint(mesh_buf *b, uint64_t v);
int mesh_mp_put_bin(mesh_buf *b, const void *p, size_t n);
/* Bytes mesh_mp_put_uint / mesh_mp_put_bin would write. */
size_t mesh_mp_uint_size(uint64_t v);
size_t mesh_mp_bin_size(size_t n);

/* The name of a frame type for messages ("HELLO"; "type 9" for unknown ones). */
const char *mesh_frame_type_name(uint32_t type);

#endif
