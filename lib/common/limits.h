/*
 * limits.h - every limit meshsync enforces, with its reason. Each can be overridden at build
 * time (-DMESH_...=N) within the hard bound checked below. proto/PROTOCOL.md restates the ones
 * that peers must agree on.
 */
#ifndef MESH_LIMITS_H
#define MESH_LIMITS_H

#include <stdint.h>

/* An op's encoded bytes. Entities are records of tens of fields; 256 KiB leaves room for form
 * schemas that the gateway distributes as ops, and bounds a peer's per-op allocation. */
#ifndef MESH_OP_BYTES_MAX
#define MESH_OP_BYTES_MAX (256u * 1024u)
#endif

/* An op body's nesting depth: bounds recursion when encoding, decoding and printing. */
#ifndef MESH_BODY_DEPTH_MAX
#define MESH_BODY_DEPTH_MAX 32
#endif

/* Entries in one map or array of a body: bounds allocation driven by a count prefix. */
#ifndef MESH_BODY_ITEMS_MAX
#define MESH_BODY_ITEMS_MAX 65536u
#endif

/* A type name: short identifiers like "household_member". */
#define MESH_TYPE_BYTES_MAX 32
/* A scope (boundary path such as "MZ/NAMPULA/ERATI/L01"): fits in an LMDB key with the author. */
#define MESH_SCOPE_BYTES_MAX 64
/* Parent references of one op (household_member has two; slack for configured types). */
#define MESH_PARENTS_MAX 8
/* Extra heads a conflict-resolving op may merge. */
#define MESH_MERGED_MAX 16
/* Heads tracked per entity; more concurrent writers than this keep the largest ones. */
#define MESH_HEADS_MAX 16
/* Depth of the parent chain followed to decide that an ancestor is deleted. */
#define MESH_ANCESTRY_DEPTH_MAX 8
/* Entity types in one configuration. */
#define MESH_TYPES_MAX 64
/* A type configuration file. */
#define MESH_TYPES_FILE_BYTES_MAX (1024u * 1024u)

/* Ops ingested in one LMDB transaction by mesh_store_ingest. */
#ifndef MESH_INGEST_BATCH_MAX
#define MESH_INGEST_BATCH_MAX 100000u
#endif

/* Ops held back per store while an earlier op of their stream is missing. */
#ifndef MESH_PENDING_MAX
#define MESH_PENDING_MAX 1000000u
#endif

/* LMDB map: the address space reserved for the store, which doubles when full up to the bound.
 * The file holds only the pages written, whatever the map, so on 64-bit systems the map starts
 * at 1 GiB: each doubling aborts and redoes a transaction, which a bulk ingest would otherwise
 * pay several times. 32-bit systems, short of address space, start at 64 MiB. */
#if UINTPTR_MAX > 0xffffffffu
#define MESH_MAP_BYTES_INITIAL (1024ull * 1024 * 1024)
#else
#define MESH_MAP_BYTES_INITIAL (64ull * 1024 * 1024)
#endif
#ifndef MESH_MAP_BYTES_MAX
#define MESH_MAP_BYTES_MAX (256ull * 1024 * 1024 * 1024)
#endif

/* A bundle (export file) chunk: the importer's read buffer. */
#define MESH_BUNDLE_CHUNK_BYTES_MAX (4u * 1024u * 1024u)
/* Ops in a bundle: one import is one transaction. */
#define MESH_BUNDLE_OPS_MAX 10000000u

/* The detail message kept per thread. */
#define MESH_ERRMSG_BYTES 512

/* A remote HLC more than this ahead of our clock is not followed (clock skew guard). */
#define MESH_HLC_SKEW_MAX_MS (3600ull * 1000)

/* ---- Sync protocol (proto/PROTOCOL.md restates these; peers must agree) ---- */
/* A frame (one ZeroMQ message): holds at least one maximal op; bounds a peer's per-frame memory. */
#ifndef MESH_FRAME_BYTES_MAX
#define MESH_FRAME_BYTES_MAX (1024u * 1024u)
#endif
/* The frame size a sender aims for unless told otherwise: one maximal op plus room. A receiver
 * sees only whole frames, so its idle timeout must outlast one frame on the slowest link; at
 * this size a 100 kbit/s radio link delivers a frame in ~22 s, within the 30 s default (1 MiB
 * frames took ~33 s at 250 kbit/s and such pairs never converged in the simulator). */
#define MESH_FRAME_BYTES_DEFAULT (MESH_OP_BYTES_MAX + 8u * 1024u)
/* Ops in one OPS frame: bounds decode work per frame. */
#define MESH_FRAME_OPS_MAX 4096u
/* Entries in a version vector (streams a node replicates): 16 devices x 8 scopes x 512 teams. */
#define MESH_VECTOR_ENTRIES_MAX 65536u
/* A session with no frame from the peer for this long fails; what arrived is kept. */
#define MESH_SESSION_IDLE_MS_DEFAULT 30000u
/* Received ops stored per transaction: large enough to amortise the fsync, small enough that a
 * crash loses little and memory stays bounded (~10 MB). */
#define MESH_INGEST_OPS_DEFAULT 10000u
/* An ingest stores its ops in slices (an eighth of the batch, within these bounds), in stream
 * order; from MESH_INGEST_PARALLEL_MIN ops on, the store's helper thread shares the decoding and
 * hashing of slices with the storing thread (below that, handing work over costs more than it
 * saves). A stream run is authenticated by the signature at its end within each slice: each
 * slice costs a signature check (~55 us) per stream in it, hence the lower bound. */
#define MESH_INGEST_SLICE_MIN 512u
#define MESH_INGEST_SLICE_MAX 1024u
#define MESH_INGEST_PARALLEL_MIN 512u
/* A store keeps the item arrays of its last batch (~1.3 KB an op) for the next one, for
 * batches up to this many ops; a larger batch allocates its own and frees them after. */
#define MESH_INGEST_SCRATCH_OPS 16384u
/* Sessions a node runs at once, and peers it tracks. */
#define MESH_SESSIONS_MAX 16u
#define MESH_PEERS_MAX 256u

_Static_assert(MESH_FRAME_BYTES_MAX >= MESH_OP_BYTES_MAX + 4096, "a frame holds a maximal op");
_Static_assert(MESH_FRAME_BYTES_DEFAULT <= MESH_FRAME_BYTES_MAX, "default within the maximum");
_Static_assert(MESH_INGEST_OPS_DEFAULT <= MESH_INGEST_BATCH_MAX, "ingest batch within limit");
_Static_assert(MESH_OP_BYTES_MAX <= 16u * 1024u * 1024u, "an op must stay far below a frame");
_Static_assert(MESH_BUNDLE_CHUNK_BYTES_MAX >= 2 * MESH_OP_BYTES_MAX, "a chunk holds an op");
_Static_assert(MESH_HEADS_MAX >= 2, "a conflict needs two heads");
_Static_assert(32 + 1 + MESH_SCOPE_BYTES_MAX < 511, "stream key fits an LMDB key");

#endif
