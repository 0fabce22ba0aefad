/*
 * atrest.h - the primitives of at-rest encryption (libsodium, like everything in crypto/): a
 * key derived from a passphrase with Argon2id, or read from a key file; authenticated
 * encryption of records with XSalsa20-Poly1305 (crypto_secretbox); keyed BLAKE2b for the
 * deterministic nonces and the key check. lib/store/seal.c decides what is sealed and how.
 */
#ifndef MESH_CRYPTO_ATREST_H
#define MESH_CRYPTO_ATREST_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define MESH_SEAL_KEY_BYTES 32
#define MESH_SEAL_MAC_BYTES 16    /* crypto_secretbox_MACBYTES: added to every sealed record */
#define MESH_SEAL_NONCE_BYTES 24  /* crypto_secretbox_NONCEBYTES */
#define MESH_SEAL_SALT_BYTES 16   /* crypto_pwhash_SALTBYTES */

/* Argon2id cost for a passphrase: libsodium's "interactive" level (~0.1-0.5 s and 64 MiB on a
 * phone). Every command that opens an encrypted node pays it once. The figures are stored with
 * the salt, so a store keeps the cost it was made with. */
#define MESH_PWHASH_OPS_DEFAULT 2u
#define MESH_PWHASH_MEM_DEFAULT (64u * 1024u * 1024u)
/* What a store may ask for: a damaged or hostile store must not make us allocate gigabytes. */
#define MESH_PWHASH_OPS_MAX 16u
#define MESH_PWHASH_MEM_MAX (1024u * 1024u * 1024u)

/* A passphrase: at most this many bytes. */
#define MESH_PASSPHRASE_BYTES_MAX 1024u

/*
 * Derives a 32-byte key from `pass` (len bytes) and `salt` with Argon2id at cost (ops, mem).
 * Returns MESH_OK, MESH_EINVAL (an empty passphrase, or a cost outside libsodium's bounds or
 * ours), MESH_ENOMEM (the memory cost could not be allocated).
 */
int mesh_seal_key_derive(const char *pass, size_t len, const uint8_t salt[MESH_SEAL_SALT_BYTES],
                         uint64_t ops, uint64_t mem, uint8_t key[MESH_SEAL_KEY_BYTES]);

/* Encrypts and authenticates `len` bytes of `m` into `out` (len + MESH_SEAL_MAC_BYTES bytes;
 * may not overlap m). A nonce must never be used twice with one key for different messages. */
void mesh_seal_box(uint8_t *out, const uint8_t *m, size_t len,
                   const uint8_t nonce[MESH_SEAL_NONCE_BYTES],
                   const uint8_t key[MESH_SEAL_KEY_BYTES]);

/* Checks and decrypts `clen` bytes of `c` into `out` (clen - MESH_SEAL_MAC_BYTES bytes).
 * Returns MESH_OK, or MESH_ECORRUPT if the bytes were changed or the key is wrong. */
int mesh_seal_unbox(uint8_t *out, const uint8_t *c, size_t clen,
                    const uint8_t nonce[MESH_SEAL_NONCE_BYTES],
                    const uint8_t key[MESH_SEAL_KEY_BYTES]);

/* The key that seals a node's identity files (identity.key, team-authority.key) on a node whose
 * store is encrypted with `store_key`: a keyed BLAKE2b of a constant, so it is not the key that
 * seals the op-log. */
void mesh_wrap_key_derive(const uint8_t store_key[MESH_SEAL_KEY_BYTES],
                          uint8_t wrap[MESH_SEAL_KEY_BYTES]);

/* Keyed BLAKE2b of `len` bytes: `outlen` (16..64) bytes into `out`. */
void mesh_mac(const uint8_t key[MESH_SEAL_KEY_BYTES], const void *msg, size_t len, uint8_t *out,
              size_t outlen);

/* Reads a 32-byte key file. Refuses one that group or others can read (MESH_EPERM). Returns
 * MESH_OK, MESH_ENOTFOUND, MESH_EPERM, MESH_ECORRUPT (not exactly 32 bytes), MESH_EIO. */
int mesh_keyfile_load(const char *path, uint8_t key[MESH_SEAL_KEY_BYTES]);

/* Creates a key file of 32 random bytes, mode 0600; fails if `path` exists. The key is also
 * returned in `key`. Returns MESH_OK, MESH_EEXIST, MESH_EIO. */
int mesh_keyfile_create(const char *path, uint8_t key[MESH_SEAL_KEY_BYTES]);

#endif
