/*
 * seal.c - This file implements at-rest encryption of op records (see seal.h and seal_int.h):
 * the seal record in meta, the key check, sealing and opening records, and the per-transaction
 * arena of decrypted records.
 */
#include "store/seal_int.h"

#include <stdlib.h>

#define META_SEAL "seal"
#define SEAL_FORMAT 1
#define SEAL_RECORD_BYTES (2 + 8 + 8 + MESH_SEAL_SALT_BYTES + MESH_HASH_BYTES)
#define CHECK_DOMAIN "meshsync/seal-check/v1"
/* An arena chunk: large enough for a few hundred ordinary records, always one maximal op. */
#define CHUNK_BYTES (1024u * 1024u)

struct mesh_seal {
    uint8_t key[MESH_SEAL_KEY_BYTES];
};

typedef struct chunk {
    struct chunk *prev;          /* chunks form a stack; the newest is the arena's head */
    size_t cap, used;
    uint8_t data[];
} chunk;

struct mesh_rec_arena {
    chunk *head;
};

/* ---- The seal record and the key ---- */

static void key_check(const uint8_t key[MESH_SEAL_KEY_BYTES], uint8_t out[MESH_HASH_BYTES])
{
    mesh_mac(key, CHECK_DOMAIN, sizeof CHECK_DOMAIN - 1, out, MESH_HASH_BYTES);
}

static int info_get(mesh_txn *t, mesh_seal_info *out)
{
    memset(out, 0, sizeof *out);
    uint8_t b[SEAL_RECORD_BYTES];
    size_t len = 0;
    int rc = mesh_store_meta_get(t, META_SEAL, b, sizeof b, &len);
    if (rc == MESH_ENOTFOUND) return MESH_OK;
    if (rc != MESH_OK) return rc;
    if (len != SEAL_RECORD_BYTES || b[0] != SEAL_FORMAT ||
        (b[1] != MESH_SEAL_PASSPHRASE && b[1] != MESH_SEAL_KEYFILE))
        return mesh_err(MESH_ECORRUPT, "the store's encryption record is damaged or of a newer "
                        "meshsync");
    out->kind = (mesh_seal_kind)b[1];
    out->ops = mesh_be64_get(b + 2);
    out->mem = mesh_be64_get(b + 10);
    memcpy(out->salt, b + 18, MESH_SEAL_SALT_BYTES);
    memcpy(out->check, b + 18 + MESH_SEAL_SALT_BYTES, MESH_HASH_BYTES);
    return MESH_OK;
}

static int info_fn(mesh_txn *t, void *ctx) { return info_get(t, ctx); }

int mesh_store_seal_info(mesh_store *s, mesh_seal_info *out)
{
    return mesh_store_read(s, info_fn, out);
}

int mesh_store_seal_probe(mesh_txn *t, void *ctx)
{
    (void)ctx;
    mesh_seal_info info;
    int rc = info_get(t, &info);
    if (rc == MESH_OK) t->s->sealed = info.kind != MESH_SEAL_NONE;
    return rc;
}

typedef struct init_args {
    const mesh_seal_info *info;
    const uint8_t *key;
} init_args;

static int init_fn(mesh_txn *t, void *ctx)
{
    init_args *a = ctx;
    mesh_seal_info cur;
    int rc = info_get(t, &cur);
    if (rc != MESH_OK) return rc;
    if (cur.kind != MESH_SEAL_NONE) return mesh_err(MESH_EEXIST, "the store is already encrypted");
    mesh_store_counts c;
    if ((rc = mesh_store_counts_get(t, &c)) != MESH_OK) return rc;
    if (c.ops > 0 || c.pending > 0)
        return mesh_err(MESH_EINVAL, "only a new, empty store can be encrypted (this one holds "
                        "%llu ops)", (unsigned long long)(c.ops + c.pending));
    uint8_t b[SEAL_RECORD_BYTES];
    b[0] = SEAL_FORMAT;
    b[1] = (uint8_t)a->info->kind;
    mesh_be64_put(b + 2, a->info->ops);
    mesh_be64_put(b + 10, a->info->mem);
    memcpy(b + 18, a->info->salt, MESH_SEAL_SALT_BYTES);
    key_check(a->key, b + 18 + MESH_SEAL_SALT_BYTES);
    return mesh_store_meta_put(t, META_SEAL, b, sizeof b);
}

static int install_key(mesh_store *s, const uint8_t key[MESH_SEAL_KEY_BYTES])
{
    if (s->seal == NULL) {
        s->seal = calloc(1, sizeof *s->seal);
        if (s->seal == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
    }
    memcpy(s->seal->key, key, MESH_SEAL_KEY_BYTES);
    s->sealed = true;
    return MESH_OK;
}

int mesh_store_seal_init(mesh_store *s, const mesh_seal_info *info,
                         const uint8_t key[MESH_SEAL_KEY_BYTES])
{
    MESH_ASSERT(info->kind == MESH_SEAL_PASSPHRASE || info->kind == MESH_SEAL_KEYFILE);
    init_args a = {.info = info, .key = key};
    int rc = mesh_store_write(s, init_fn, &a);
    if (rc == MESH_OK) rc = install_key(s, key);
    return rc;
}

int mesh_store_seal_open(mesh_store *s, const uint8_t key[MESH_SEAL_KEY_BYTES])
{
    mesh_seal_info info;
    int rc = mesh_store_seal_info(s, &info);
    if (rc != MESH_OK) return rc;
    if (info.kind == MESH_SEAL_NONE) return mesh_err(MESH_EINVAL, "the store is not encrypted");
    uint8_t check[MESH_HASH_BYTES];
    key_check(key, check);
    /* Not secret (it is stored in clear), so an ordinary comparison is fine. */
    if (memcmp(check, info.check, sizeof check) != 0)
        return mesh_err(MESH_EPERM, "the %s does not open this store",
                        info.kind == MESH_SEAL_PASSPHRASE ? "passphrase" : "key file");
    return install_key(s, key);
}

void mesh_store_seal_close(mesh_store *s)
{
    if (s->seal == NULL) return;
    mesh_wipe(s->seal, sizeof *s->seal);
    free(s->seal);
    s->seal = NULL;
}

/* ---- Records ---- */

size_t mesh_store_rec_overhead(const mesh_txn *t)
{
    return t->s->sealed ? MESH_SEAL_MAC_BYTES : 0;
}

static void nonce_of(const mesh_store *s, int db, const MDB_val *key, const uint8_t *sig,
                     uint8_t nonce[MESH_SEAL_NONCE_BYTES])
{
    /* tag | record key (at most a log key) | signature */
    uint8_t in[1 + MESH_STORE_LOG_KEY_BYTES + MESH_SIG_BYTES];
    size_t kl = key->mv_size <= MESH_STORE_LOG_KEY_BYTES ? key->mv_size : MESH_STORE_LOG_KEY_BYTES;
    in[0] = db == DB_LOG ? 'L' : 'P';
    memcpy(in + 1, key->mv_data, kl);
    memcpy(in + 1 + kl, sig, MESH_SIG_BYTES);
    mesh_mac(s->seal->key, in, 1 + kl + MESH_SIG_BYTES, nonce, MESH_SEAL_NONCE_BYTES);
}

static int locked(void)
{
    return mesh_err(MESH_EPERM, "the store is encrypted; open the node with its passphrase or "
                    "key file");
}

int mesh_store_rec_seal(mesh_txn *t, int db, const MDB_val *key, const uint8_t *sig,
                        const uint8_t *op, size_t op_len, uint8_t *out)
{
    MESH_ASSERT(db == DB_LOG || db == DB_PENDING);
    memcpy(out, sig, MESH_SIG_BYTES);
    if (!t->s->sealed) {
        memcpy(out + MESH_SIG_BYTES, op, op_len);
        return MESH_OK;
    }
    if (t->s->seal == NULL) return locked();
    uint8_t nonce[MESH_SEAL_NONCE_BYTES];
    nonce_of(t->s, db, key, sig, nonce);
    mesh_seal_box(out + MESH_SIG_BYTES, op, op_len, nonce, t->s->seal->key);
    return MESH_OK;
}

static void *arena_alloc(mesh_txn *t, size_t n)
{
    if (t->arena == NULL) {
        t->arena = calloc(1, sizeof *t->arena);
        if (t->arena == NULL) return NULL;
    }
    chunk *c = t->arena->head;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
        chunk *nc = malloc(sizeof *nc + cap);
        if (nc == NULL) return NULL;
        nc->prev = c;
        nc->cap = cap;
        nc->used = 0;
        t->arena->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

int mesh_store_rec_open(mesh_txn *t, int db, const MDB_val *key, const MDB_val *val,
                        mesh_oprec *out)
{
    size_t over = mesh_store_rec_overhead(t);
    if (val->mv_size <= MESH_SIG_BYTES + over)
        return mesh_err(MESH_ECORRUPT, "a stored op is damaged");
    if (!t->s->sealed) {
        out->sig = val->mv_data;
        out->op = (const uint8_t *)val->mv_data + MESH_SIG_BYTES;
        out->op_len = val->mv_size - MESH_SIG_BYTES;
        return MESH_OK;
    }
    if (t->s->seal == NULL) return locked();
    size_t op_len = val->mv_size - MESH_SIG_BYTES - over;
    uint8_t *p = arena_alloc(t, MESH_SIG_BYTES + op_len);
    if (p == NULL) return mesh_err(MESH_ENOMEM, "out of memory decrypting an op");
    const uint8_t *v = val->mv_data;
    memcpy(p, v, MESH_SIG_BYTES);
    uint8_t nonce[MESH_SEAL_NONCE_BYTES];
    nonce_of(t->s, db, key, v, nonce);
    int rc = mesh_seal_unbox(p + MESH_SIG_BYTES, v + MESH_SIG_BYTES, op_len + over, nonce,
                             t->s->seal->key);
    if (rc != MESH_OK) return rc;
    out->sig = p;
    out->op = p + MESH_SIG_BYTES;
    out->op_len = op_len;
    return MESH_OK;
}

mesh_rec_mark mesh_store_rec_mark(mesh_txn *t)
{
    mesh_rec_mark m = {0};
    if (t->arena && t->arena->head) {
        m.chunk = t->arena->head;
        m.used = t->arena->head->used;
    }
    return m;
}

void mesh_store_rec_release(mesh_txn *t, mesh_rec_mark m)
{
    if (t->arena == NULL) return;
    while (t->arena->head && t->arena->head != m.chunk) {
        chunk *c = t->arena->head;
        t->arena->head = c->prev;
        mesh_wipe(c->data, c->used);
        free(c);
    }
    chunk *c = t->arena->head;
    if (c && c->used > m.used) {
        mesh_wipe(c->data + m.used, c->used - m.used);
        c->used = m.used;
    }
}

void mesh_store_rec_fini(mesh_txn *t)
{
    if (t->arena == NULL) return;
    mesh_store_rec_release(t, (mesh_rec_mark){0});
    free(t->arena);
    t->arena = NULL;
}
