/*
 * seal.h - at-rest encryption of a store (docs/SECURITY.md, "At rest").
 *
 * An encrypted ("sealed") store keeps the op bytes of every record of the `log` and `pending`
 * databases encrypted and authenticated with XSalsa20-Poly1305 under a 32-byte store key:
 *   value = signature (64, in clear) | secretbox(op bytes) (16-byte tag + ciphertext)
 * The nonce is deterministic, the first 24 bytes of keyed BLAKE2b(key, database tag || record
 * key || signature): a record's place and its author's signature name it, so no randomness is
 * needed and the same op stored twice seals to the same bytes. The key comes from a passphrase
 * (Argon2id; salt and cost in the store) or from a key file; meta "seal" holds
 *   format u8 (=1) | kind u8 (1 passphrase, 2 key file) | ops u64 BE | mem u64 BE | salt 16
 *   | check 32 (keyed BLAKE2b(key, "meshsync/seal-check/v1"))
 * so that a wrong key is told apart from damage before anything is read. Everything else in the
 * store (entity ids, types, authors, scopes, stream positions, counts) stays in clear.
 */
#ifndef MESH_STORE_SEAL_H
#define MESH_STORE_SEAL_H

#include <stdint.h>

#include "crypto/atrest.h"
#include "store/store.h"

typedef enum mesh_seal_kind {
    MESH_SEAL_NONE = 0,
    MESH_SEAL_PASSPHRASE = 1,
    MESH_SEAL_KEYFILE = 2,
} mesh_seal_kind;

typedef struct mesh_seal_info {
    mesh_seal_kind kind;
    uint64_t ops, mem;                         /* Argon2id cost (passphrase only) */
    uint8_t salt[MESH_SEAL_SALT_BYTES];
    uint8_t check[MESH_HASH_BYTES];
} mesh_seal_info;

/* Reads how the store is sealed (kind MESH_SEAL_NONE: it is not). Returns MESH_OK,
 * MESH_ECORRUPT, MESH_EIO. */
int mesh_store_seal_info(mesh_store *s, mesh_seal_info *out);

/* Seals a new, empty store with `key`: records the kind, cost and salt of `info` and the key
 * check, and uses the key from now on. Returns MESH_OK, MESH_EEXIST (already sealed),
 * MESH_EINVAL (the store already holds ops), MESH_ENOSPC, MESH_EIO. */
int mesh_store_seal_init(mesh_store *s, const mesh_seal_info *info,
                         const uint8_t key[MESH_SEAL_KEY_BYTES]);

/* Unlocks a sealed store with `key` (copied and wiped at close). Returns MESH_OK, MESH_EPERM
 * (the key does not open this store), MESH_EINVAL (the store is not sealed), MESH_ECORRUPT,
 * MESH_EIO. */
int mesh_store_seal_open(mesh_store *s, const uint8_t key[MESH_SEAL_KEY_BYTES]);

#endif
