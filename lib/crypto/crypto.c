/*
 * crypto.c - libsodium adapters: hashing, signing, identities on disk, randomness.
 */
#include "crypto/crypto.h"

#include "crypto/atrest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

_Static_assert(sizeof(crypto_generichash_state) <= sizeof(((mesh_hash_state *)0)->opaque),
               "hash state storage too small");
_Static_assert(crypto_sign_PUBLICKEYBYTES == MESH_PK_BYTES, "pk size");
_Static_assert(crypto_sign_SECRETKEYBYTES == MESH_SK_BYTES, "sk size");
_Static_assert(crypto_sign_BYTES == MESH_SIGNATURE_BYTES, "sig size");

int mesh_crypto_init(void)
{
    /* sodium_init is idempotent and thread-safe; 1 means it already ran. */
    if (sodium_init() < 0) return mesh_err(MESH_EINTERNAL, "libsodium failed to initialise");
    return MESH_OK;
}

void mesh_hash(const void *data, size_t len, uint8_t out[MESH_DIGEST_BYTES])
{
    crypto_generichash(out, MESH_DIGEST_BYTES, data, len, NULL, 0);
}

void mesh_sha256(const void *data, size_t len, uint8_t out[MESH_SHA256_BYTES])
{
    crypto_hash_sha256(out, data, len);
}

void mesh_hash_init(mesh_hash_state *st)
{
    crypto_generichash_init((crypto_generichash_state *)st->opaque, NULL, 0, MESH_DIGEST_BYTES);
}

void mesh_hash_update(mesh_hash_state *st, const void *data, size_t len)
{
    crypto_generichash_update((crypto_generichash_state *)st->opaque, data, len);
}

void mesh_hash_final(mesh_hash_state *st, uint8_t out[MESH_DIGEST_BYTES])
{
    crypto_generichash_final((crypto_generichash_state *)st->opaque, out, MESH_DIGEST_BYTES);
}

void mesh_identity_generate(mesh_identity *id) { crypto_sign_keypair(id->pk, id->sk); }

void mesh_identity_from_seed(mesh_identity *id, const uint8_t seed[32])
{
    crypto_sign_seed_keypair(id->pk, id->sk, seed);
}

void mesh_identity_wipe(mesh_identity *id) { sodium_memzero(id, sizeof *id); }

int mesh_identity_curve(const mesh_identity *id, uint8_t pk[32], uint8_t sk[32])
{
    if (crypto_sign_ed25519_pk_to_curve25519(pk, id->pk) != 0)
        return mesh_err(MESH_EINVAL, "the node's public key has no Curve25519 form");
    if (crypto_sign_ed25519_sk_to_curve25519(sk, id->sk) != 0)
        return mesh_err(MESH_EINVAL, "the node's secret key has no Curve25519 form");
    return MESH_OK;
}

int mesh_pk_to_curve(const uint8_t ed_pk[32], uint8_t curve_pk[32])
{
    if (crypto_sign_ed25519_pk_to_curve25519(curve_pk, ed_pk) != 0)
        return mesh_err(MESH_EINVAL, "not a valid Ed25519 public key");
    return MESH_OK;
}

void mesh_wipe(void *p, size_t len) { sodium_memzero(p, len); }

/* File formats. Clear: "meshsync-identity-v1\n" then the 64-byte secret key (which embeds the
 * public key) as 128 hex characters and a newline; text so that an operator can inspect and back
 * it up. Sealed (the key of a node whose store is encrypted): "meshsync-identity-sealed-v1\n",
 * the public key as 64 hex characters and a newline (it is no secret, and it tells which node's
 * key this is), then a random 24-byte nonce and the XSalsa20-Poly1305 box of the secret key
 * (80 bytes) as 208 hex characters and a newline. */
static const char ID_MAGIC[] = "meshsync-identity-v1\n";
static const char ID_SEALED_MAGIC[] = "meshsync-identity-sealed-v1\n";
#define ID_BOX_BYTES (MESH_SEAL_NONCE_BYTES + MESH_SK_BYTES + MESH_SEAL_MAC_BYTES)
#define ID_TEXT_MAX (sizeof ID_SEALED_MAGIC + 2 * MESH_PK_BYTES + 1 + 2 * ID_BOX_BYTES + 2)

/* Writes `n` bytes to `path` with mode 0600 through a temp file and a rename, so a crash leaves
 * the old file or the new one. */
static int identity_write(const char *path, const char *text, size_t n, bool replace)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return mesh_err(MESH_EINVAL, "identity path too long: %s", path);
    if (!replace && access(path, F_OK) == 0)
        return mesh_err(MESH_EEXIST, "%s already exists; refusing to overwrite a node identity", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return mesh_err(MESH_EIO, "cannot create %s: %s", tmp, strerror(errno));
    int ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!ok) {
        unlink(tmp);
        return mesh_err(MESH_EIO, "cannot write %s: %s", tmp, strerror(saved));
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return mesh_err(MESH_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
    }
    return MESH_OK;
}

static int identity_save(const mesh_identity *id, const char *path, const uint8_t *wrap,
                         bool replace)
{
    char text[ID_TEXT_MAX];
    size_t n;
    if (wrap == NULL) {
        n = sizeof ID_MAGIC - 1;
        memcpy(text, ID_MAGIC, n);
        mesh_hex_encode(id->sk, MESH_SK_BYTES, text + n);
        n += 2 * MESH_SK_BYTES;
    } else {
        uint8_t box[ID_BOX_BYTES];
        mesh_random(box, MESH_SEAL_NONCE_BYTES);
        mesh_seal_box(box + MESH_SEAL_NONCE_BYTES, id->sk, MESH_SK_BYTES, box, wrap);
        n = sizeof ID_SEALED_MAGIC - 1;
        memcpy(text, ID_SEALED_MAGIC, n);
        mesh_hex_encode(id->pk, MESH_PK_BYTES, text + n);
        n += 2 * MESH_PK_BYTES;
        text[n++] = '\n';
        mesh_hex_encode(box, sizeof box, text + n);
        n += 2 * sizeof box;
    }
    text[n++] = '\n';
    int rc = identity_write(path, text, n, replace);
    sodium_memzero(text, sizeof text);
    return rc;
}

int mesh_identity_save(const mesh_identity *id, const char *path, const uint8_t *wrap)
{
    return identity_save(id, path, wrap, false);
}

int mesh_identity_reseal(const mesh_identity *id, const char *path, const uint8_t *wrap)
{
    MESH_ASSERT(wrap != NULL);
    return identity_save(id, path, wrap, true);
}

int mesh_identity_parse(const char *what, const char *bytes, size_t len, const uint8_t *wrap,
                        mesh_identity *id, bool *sealed)
{
    if (sealed) *sealed = false;
    char text[ID_TEXT_MAX + 8];
    size_t n = len < sizeof text - 1 ? len : sizeof text - 1;  /* what follows is not read */
    memcpy(text, bytes, n);
    text[n] = '\0';
    size_t clear = sizeof ID_MAGIC - 1, sealed_magic = sizeof ID_SEALED_MAGIC - 1;
    int rc = MESH_OK;
    uint8_t pk[MESH_PK_BYTES];
    if (n >= clear + 2 * MESH_SK_BYTES && memcmp(text, ID_MAGIC, clear) == 0) {
        text[clear + 2 * MESH_SK_BYTES] = '\0';
        if (mesh_hex_decode(text + clear, id->sk, MESH_SK_BYTES) != MESH_OK)
            rc = mesh_err(MESH_ECORRUPT, "%s holds a damaged key", what);
    } else if (n >= sealed_magic + 2 * MESH_PK_BYTES + 1 + 2 * ID_BOX_BYTES &&
               memcmp(text, ID_SEALED_MAGIC, sealed_magic) == 0) {
        char *hp = text + sealed_magic, *hb = hp + 2 * MESH_PK_BYTES + 1;
        uint8_t box[ID_BOX_BYTES];
        hp[2 * MESH_PK_BYTES] = '\0';
        hb[2 * ID_BOX_BYTES] = '\0';
        if (sealed) *sealed = true;
        if (mesh_hex_decode(hp, pk, MESH_PK_BYTES) != MESH_OK ||
            mesh_hex_decode(hb, box, sizeof box) != MESH_OK) {
            rc = mesh_err(MESH_ECORRUPT, "%s holds a damaged key", what);
        } else if (wrap == NULL) {
            rc = mesh_err(MESH_EPERM, "%s is encrypted with the node's store key; open the node "
                          "with its passphrase or key file", what);
        } else if (mesh_seal_unbox(id->sk, box + MESH_SEAL_NONCE_BYTES,
                                   sizeof box - MESH_SEAL_NONCE_BYTES, box, wrap) != MESH_OK) {
            rc = mesh_err(MESH_ECORRUPT, "%s does not open with this node's store key: it was "
                          "changed, or belongs to another node", what);
        } else if (memcmp(pk, id->sk + 32, MESH_PK_BYTES) != 0) {
            rc = mesh_err(MESH_ECORRUPT, "%s holds a damaged key", what);
        }
        sodium_memzero(box, sizeof box);
    } else {
        rc = mesh_err(MESH_ECORRUPT, "%s is not a meshsync identity file", what);
    }
    if (rc == MESH_OK) {
        if (crypto_sign_ed25519_sk_to_pk(pk, id->sk) != 0 ||
            memcmp(pk, id->sk + 32, MESH_PK_BYTES) != 0)
            rc = mesh_err(MESH_ECORRUPT, "%s holds a damaged key", what);
        else
            memcpy(id->pk, pk, MESH_PK_BYTES);
    }
    sodium_memzero(text, sizeof text);
    if (rc != MESH_OK) mesh_identity_wipe(id);
    return rc;
}

int mesh_identity_load(const char *path, const uint8_t *wrap, mesh_identity *id, bool *sealed)
{
    if (sealed) *sealed = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return mesh_err(MESH_ENOTFOUND, "no identity at %s", path);
        return mesh_err(MESH_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return mesh_err(MESH_EIO, "cannot stat %s: %s", path, strerror(errno));
    }
    if (st.st_mode & 077) {
        close(fd);
        return mesh_err(MESH_EPERM,
                        "%s is readable by other users (mode %03o); run 'chmod 600 %s' and retry",
                        path, (unsigned)(st.st_mode & 0777), path);
    }
    char text[ID_TEXT_MAX + 8];
    ssize_t got = read(fd, text, sizeof text);
    close(fd);
    int rc = mesh_identity_parse(path, text, got > 0 ? (size_t)got : 0, wrap, id, sealed);
    sodium_memzero(text, sizeof text);
    return rc;
}

/* Signs domain || msg. The domain is short and constant, so the concatenation uses the stack. */
void mesh_sign(const mesh_identity *id, const char *domain, const uint8_t *msg, size_t len,
               uint8_t sig[MESH_SIGNATURE_BYTES])
{
    /* Ed25519ph would change the signature scheme; instead sign a digest of the message. */
    uint8_t digest[MESH_DIGEST_BYTES];
    mesh_hash_state hs;
    mesh_hash_init(&hs);
    mesh_hash_update(&hs, domain, strlen(domain) + 1);
    mesh_hash_update(&hs, msg, len);
    mesh_hash_final(&hs, digest);
    crypto_sign_detached(sig, NULL, digest, sizeof digest, id->sk);
}

int mesh_verify(const uint8_t pk[MESH_PK_BYTES], const char *domain, const uint8_t *msg,
                size_t len, const uint8_t sig[MESH_SIGNATURE_BYTES])
{
    uint8_t digest[MESH_DIGEST_BYTES];
    mesh_hash_state hs;
    mesh_hash_init(&hs);
    mesh_hash_update(&hs, domain, strlen(domain) + 1);
    mesh_hash_update(&hs, msg, len);
    mesh_hash_final(&hs, digest);
    if (crypto_sign_verify_detached(sig, digest, sizeof digest, pk) != 0) return MESH_ESIG;
    return MESH_OK;
}

void mesh_random(void *buf, size_t len) { randombytes_buf(buf, len); }

void mesh_random_deterministic(void *buf, size_t len, const uint8_t seed[32], uint64_t counter)
{
    /* randombytes_buf_deterministic takes only a seed; fold the counter into it. */
    uint8_t s[32 + 8];
    memcpy(s, seed, 32);
    mesh_be64_put(s + 32, counter);
    uint8_t derived[randombytes_SEEDBYTES];
    mesh_hash(s, sizeof s, derived);
    randombytes_buf_deterministic(buf, len, derived);
}
