/*
 * crypto.h - the only code that calls libsodium: hashing, Ed25519 identities, signatures of op
 * heads and bundles, and randomness. Everything above this layer sees fixed-size byte arrays.
 */
#ifndef MESH_CRYPTO_H
#define MESH_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define MESH_PK_BYTES 32
#define MESH_SK_BYTES 64
#define MESH_SIGNATURE_BYTES 64
#define MESH_DIGEST_BYTES 32

/* Must be called (it is idempotent and thread-safe) before any other function here; every
 * public entry point of the library does. Returns MESH_OK or MESH_EINTERNAL. */
int mesh_crypto_init(void);

/* BLAKE2b-256 of one buffer. */
void mesh_hash(const void *data, size_t len, uint8_t out[MESH_DIGEST_BYTES]);

/* Incremental BLAKE2b-256. The state is large and aligned; keep it on the stack or in a struct. */
typedef struct mesh_hash_state {
    _Alignas(64) uint8_t opaque[384];
} mesh_hash_state;
void mesh_hash_init(mesh_hash_state *st);
void mesh_hash_update(mesh_hash_state *st, const void *data, size_t len);
void mesh_hash_final(mesh_hash_state *st, uint8_t out[MESH_DIGEST_BYTES]);

/* SHA-256 of one buffer: the checksum the campaign service's sync-file contract names (the
 * gateway's file uplink); meshsync's own hashes are BLAKE2b. */
#define MESH_SHA256_BYTES 32
void mesh_sha256(const void *data, size_t len, uint8_t out[MESH_SHA256_BYTES]);

/* An Ed25519 key pair. The secret half is wiped by mesh_identity_wipe. */
typedef struct mesh_identity {
    uint8_t pk[MESH_PK_BYTES];
    uint8_t sk[MESH_SK_BYTES];
} mesh_identity;

/* Creates a new random identity. */
void mesh_identity_generate(mesh_identity *id);
/* Creates an identity from a 32-byte seed (tests and the simulator). */
void mesh_identity_from_seed(mesh_identity *id, const uint8_t seed[32]);
void mesh_identity_wipe(mesh_identity *id);

/* The X25519 (Curve25519) key pair that the transport's CURVE handshake uses, derived from the
 * Ed25519 identity so that a node has one key to back up and one public key to put on a roster.
 * The caller wipes `sk` with mesh_wipe() when done. Returns MESH_OK or MESH_EINVAL (a key that
 * does not map to Curve25519). */
int mesh_identity_curve(const mesh_identity *id, uint8_t pk[32], uint8_t sk[32]);
/* The X25519 public key that belongs to Ed25519 public key `ed_pk` (a roster entry). Returns
 * MESH_OK or MESH_EINVAL (not a valid Ed25519 point). */
int mesh_pk_to_curve(const uint8_t ed_pk[32], uint8_t curve_pk[32]);
/* Zeroes `len` bytes of secret material in a way the compiler does not optimise away. */
void mesh_wipe(void *p, size_t len);

/* Writes the identity to `path` with mode 0600, atomically (temp file + rename), failing with
 * MESH_EEXIST if `path` exists. With `wrap` (a key of MESH_SEAL_KEY_BYTES derived from the
 * node's store key; NULL for a node whose store is in clear) the secret key is stored sealed
 * and only its public half in clear. Returns MESH_OK, MESH_EEXIST, MESH_EIO. */
int mesh_identity_save(const mesh_identity *id, const char *path, const uint8_t *wrap);

/* Replaces the identity file at `path` by the sealed form under `wrap` (for a key file written
 * in clear by an older meshsync on an encrypted node). Returns MESH_OK, MESH_EIO. */
int mesh_identity_reseal(const mesh_identity *id, const char *path, const uint8_t *wrap);

/* Reads an identity written by mesh_identity_save, clear or sealed; `wrap` is the key a sealed
 * one needs (NULL if the caller has none). *sealed (if not NULL) says which form it was.
 * Refuses a file that group or others can read (MESH_EPERM), a sealed file without `wrap`
 * (MESH_EPERM), a malformed file, one that does not open with `wrap` or whose public half does
 * not match (MESH_ECORRUPT). Returns MESH_OK, MESH_ENOTFOUND, MESH_EPERM, MESH_ECORRUPT,
 * MESH_EIO. */
int mesh_identity_load(const char *path, const uint8_t *wrap, mesh_identity *id, bool *sealed);

/* What mesh_identity_load does with the `len` bytes of a key file once read (named `what` in
 * messages): the decoder, on its own for fuzzing. Same returns but MESH_ENOTFOUND and MESH_EIO. */
int mesh_identity_parse(const char *what, const char *bytes, size_t len, const uint8_t *wrap,
                        mesh_identity *id, bool *sealed);

/* Domain-separated signatures: the signed message is `domain` || msg, so a signature made for
 * one purpose (an op head) can never be replayed as another (a bundle, a roster). */
#define MESH_DOMAIN_OP "meshsync/op/v1"
#define MESH_DOMAIN_BUNDLE "meshsync/bundle/v1"

void mesh_sign(const mesh_identity *id, const char *domain, const uint8_t *msg, size_t len,
               uint8_t sig[MESH_SIGNATURE_BYTES]);
/* Returns MESH_OK or MESH_ESIG. */
int mesh_verify(const uint8_t pk[MESH_PK_BYTES], const char *domain, const uint8_t *msg,
                size_t len, const uint8_t sig[MESH_SIGNATURE_BYTES]);

/* Fills `buf` with random bytes from the operating system. Cores that must be deterministic
 * take randomness from their caller instead. */
void mesh_random(void *buf, size_t len);

/* Deterministic pseudo-random bytes from a 32-byte seed and a counter (simulator, tests). */
void mesh_random_deterministic(void *buf, size_t len, const uint8_t seed[32], uint64_t counter);

#endif
