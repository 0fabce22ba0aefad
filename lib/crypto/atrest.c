/*
 * atrest.c - This file implements the libsodium side of at-rest encryption (see atrest.h):
 * Argon2id key derivation, secretbox, keyed BLAKE2b, and key files.
 */
#include "crypto/atrest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

_Static_assert(crypto_secretbox_KEYBYTES == MESH_SEAL_KEY_BYTES, "seal key size");
_Static_assert(crypto_secretbox_MACBYTES == MESH_SEAL_MAC_BYTES, "seal mac size");
_Static_assert(crypto_secretbox_NONCEBYTES == MESH_SEAL_NONCE_BYTES, "seal nonce size");
_Static_assert(crypto_pwhash_SALTBYTES == MESH_SEAL_SALT_BYTES, "salt size");

int mesh_seal_key_derive(const char *pass, size_t len, const uint8_t salt[MESH_SEAL_SALT_BYTES],
                         uint64_t ops, uint64_t mem, uint8_t key[MESH_SEAL_KEY_BYTES])
{
    if (len == 0) return mesh_err(MESH_EINVAL, "the passphrase is empty");
    if (len > MESH_PASSPHRASE_BYTES_MAX)
        return mesh_err(MESH_EINVAL, "the passphrase is longer than %u bytes",
                        MESH_PASSPHRASE_BYTES_MAX);
    if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > MESH_PWHASH_OPS_MAX ||
        mem < crypto_pwhash_MEMLIMIT_MIN || mem > MESH_PWHASH_MEM_MAX)
        return mesh_err(MESH_EINVAL, "key derivation cost (%llu passes, %llu bytes) is outside "
                        "what meshsync accepts; the store's encryption record is damaged",
                        (unsigned long long)ops, (unsigned long long)mem);
    if (crypto_pwhash(key, MESH_SEAL_KEY_BYTES, pass, len, salt, ops, (size_t)mem,
                      crypto_pwhash_ALG_ARGON2ID13) != 0)
        return mesh_err(MESH_ENOMEM, "deriving the store key needs %llu MiB of memory, which "
                        "could not be had", (unsigned long long)(mem >> 20));
    return MESH_OK;
}

void mesh_seal_box(uint8_t *out, const uint8_t *m, size_t len,
                   const uint8_t nonce[MESH_SEAL_NONCE_BYTES],
                   const uint8_t key[MESH_SEAL_KEY_BYTES])
{
    crypto_secretbox_easy(out, m, len, nonce, key);
}

int mesh_seal_unbox(uint8_t *out, const uint8_t *c, size_t clen,
                    const uint8_t nonce[MESH_SEAL_NONCE_BYTES],
                    const uint8_t key[MESH_SEAL_KEY_BYTES])
{
    if (clen < MESH_SEAL_MAC_BYTES ||
        crypto_secretbox_open_easy(out, c, clen, nonce, key) != 0)
        return mesh_err(MESH_ECORRUPT, "a sealed record fails its authentication (changed on "
                        "disk, or read with the wrong key)");
    return MESH_OK;
}

void mesh_mac(const uint8_t key[MESH_SEAL_KEY_BYTES], const void *msg, size_t len, uint8_t *out,
              size_t outlen)
{
    crypto_generichash(out, outlen, msg, len, key, MESH_SEAL_KEY_BYTES);
}

int mesh_keyfile_load(const char *path, uint8_t key[MESH_SEAL_KEY_BYTES])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return mesh_err(MESH_ENOTFOUND, "key file %s does not exist", path);
        return mesh_err(MESH_EIO, "cannot open key file %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mesh_err(MESH_EIO, "cannot stat key file %s: %s", path, strerror(e));
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        close(fd);
        return mesh_err(MESH_EPERM, "key file %s can be read by other users; make it private "
                        "with 'chmod 600 %s'", path, path);
    }
    uint8_t buf[MESH_SEAL_KEY_BYTES + 1];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    int rc = MESH_OK;
    if (n < 0) rc = mesh_err(MESH_EIO, "cannot read key file %s", path);
    else if (n != MESH_SEAL_KEY_BYTES)
        rc = mesh_err(MESH_ECORRUPT, "key file %s is not a meshsync key (%d bytes; a key file "
                      "holds exactly %d)", path, (int)n, MESH_SEAL_KEY_BYTES);
    else memcpy(key, buf, MESH_SEAL_KEY_BYTES);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

int mesh_keyfile_create(const char *path, uint8_t key[MESH_SEAL_KEY_BYTES])
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) return mesh_err(MESH_EEXIST, "%s already exists", path);
        return mesh_err(MESH_EIO, "cannot create key file %s: %s", path, strerror(errno));
    }
    randombytes_buf(key, MESH_SEAL_KEY_BYTES);
    bool ok = write(fd, key, MESH_SEAL_KEY_BYTES) == MESH_SEAL_KEY_BYTES && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok) {
        unlink(path);
        sodium_memzero(key, MESH_SEAL_KEY_BYTES);
        return mesh_err(MESH_EIO, "cannot write key file %s: %s", path, strerror(e));
    }
    return MESH_OK;
}

void mesh_wrap_key_derive(const uint8_t store_key[MESH_SEAL_KEY_BYTES],
                          uint8_t wrap[MESH_SEAL_KEY_BYTES])
{
    static const char tag[] = "meshsync/identity-wrap/v1";
    mesh_mac(store_key, tag, sizeof tag - 1, wrap, MESH_SEAL_KEY_BYTES);
}
