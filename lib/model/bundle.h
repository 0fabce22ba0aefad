/*
 * bundle.h - the export file ("bundle") that carries ops between nodes on a USB stick.
 *
 * Layout (proto/PROTOCOL.md, "Bundle"):
 *   "MESHBNDL" | format u8 (=1) | msgpack array [exporter bin32, created_ms uint, count uint]
 *   | count x msgpack array [op bin, sig bin64] | trailer bin64
 * The trailer is the exporter's Ed25519 signature (domain MESH_DOMAIN_BUNDLE) over the
 * BLAKE2b-256 of every byte before it: truncation or any edit is detected before import.
 * Each op also keeps its author's signature, so a bundle relayed by anyone stays verifiable.
 */
#ifndef MESH_MODEL_BUNDLE_H
#define MESH_MODEL_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "crypto/crypto.h"

#define MESH_BUNDLE_MAGIC "MESHBNDL"
#define MESH_BUNDLE_FORMAT 1

/* One op as carried on disk and on the wire: its canonical bytes and its author's signature over
 * MESH_DOMAIN_OP || BLAKE2b-256(op). Borrowed pointers. */
typedef struct mesh_oprec {
    const uint8_t *op;
    size_t op_len;
    const uint8_t *sig;   /* MESH_SIGNATURE_BYTES */
} mesh_oprec;

typedef struct mesh_bundle_header {
    uint8_t exporter[MESH_PK_BYTES];
    uint64_t created_ms;
    uint64_t count;
} mesh_bundle_header;

/* Writer: streams records to a buffer-flushing callback while hashing them. */
typedef struct mesh_bundle_writer {
    mesh_hash_state hash;
    mesh_buf buf;
    uint64_t count_declared;
    uint64_t count_written;
    int (*flush)(const uint8_t *p, size_t n, void *ctx);  /* returns MESH_OK or an error */
    void *ctx;
} mesh_bundle_writer;

int mesh_bundle_writer_begin(mesh_bundle_writer *w, const mesh_bundle_header *h,
                             int (*flush)(const uint8_t *p, size_t n, void *ctx), void *ctx);
int mesh_bundle_writer_add(mesh_bundle_writer *w, const mesh_oprec *rec);
/* Appends the signed trailer and flushes. Fails with MESH_EINVAL if fewer or more records than
 * declared were added. Always releases the writer's memory. */
int mesh_bundle_writer_end(mesh_bundle_writer *w, const mesh_identity *exporter);
void mesh_bundle_writer_abort(mesh_bundle_writer *w);

/* Reader over a whole file in memory (the importer maps it). */
typedef struct mesh_bundle_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;          /* next record */
    size_t end;          /* start of the trailer */
    uint64_t left;       /* records not yet returned */
    mesh_bundle_header header;
} mesh_bundle_reader;

/*
 * Checks the magic, format, header, that exactly header.count well-formed records are followed
 * by a trailer, and the trailer's signature. Does not decode the ops themselves.
 * Returns MESH_OK, MESH_ECORRUPT (truncated or malformed, with the byte offset), MESH_EVERSION,
 * MESH_ESIG (tampered), MESH_ELIMIT (count or an op over its limit).
 */
int mesh_bundle_open(mesh_bundle_reader *r, const uint8_t *buf, size_t len);

/* Returns the next record (borrowing from the buffer): MESH_OK, or MESH_ENOTFOUND at the end. */
int mesh_bundle_next(mesh_bundle_reader *r, mesh_oprec *rec);

#endif
