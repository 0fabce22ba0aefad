/*
 * store.c - the LMDB environment: open and create, transactions with map growth, meta, and
 * stream records.
 */
#include "store/store_int.h"

#include "store/seal_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const DB_NAMES[DB_COUNT] = {
    "log", "sops", "streams", "pending", "state", "bytype", "conflicts", "meta", "peers",
    "outbox",
};

#define STORE_MAGIC "meshsync-store"
/* Format 2 chunks the stream index (store_int.h); format 3 drops the index by type (query.c).
 * Older stores are brought up to format 3 when opened: their stream index reads as chunks of one
 * op, and their type index is emptied. */
#define STORE_VERSION 3u
/* Map growth retries per write: doubling from the initial map reaches any sane limit well
 * within this. */
#define GROW_RETRIES_MAX 16

int mesh_lmdb_err(mesh_txn *t, int rc, const char *what)
{
    switch (rc) {
    case MDB_MAP_FULL:
        if (t) t->map_full = true;
        return mesh_err(MESH_ENOSPC, "%s: the store's map is full", what);
    case MDB_NOTFOUND: return mesh_err(MESH_ENOTFOUND, "%s: not found", what);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return mesh_err(MESH_ECORRUPT, "%s: the LMDB file is damaged (%s); restore it from a peer",
                        what, mdb_strerror(rc));
    case MDB_VERSION_MISMATCH:
        return mesh_err(MESH_EVERSION, "%s: %s", what, mdb_strerror(rc));
    case ENOSPC:
        return mesh_err(MESH_ENOSPC, "%s: disk full; free some space and retry (nothing was lost)",
                        what);
    case ENOMEM: return mesh_err(MESH_ENOMEM, "%s: out of memory", what);
    default: return mesh_err(MESH_EIO, "%s: %s", what, mdb_strerror(rc));
    }
}

static int env_open(mesh_store *s, const char *dir, const mesh_store_opts *o)
{
    int rc = mdb_env_create(&s->env);
    if (rc != 0) return mesh_lmdb_err(NULL, rc, "creating the LMDB environment");
    mdb_env_set_maxdbs(s->env, DB_COUNT + 4);
    /* A larger map recorded in the file wins over this; it only sizes new stores. */
    mdb_env_set_mapsize(s->env, o->map_bytes_initial ? o->map_bytes_initial
                                                     : MESH_MAP_BYTES_INITIAL);
    /* NOTLS: read snapshots are not bound to threads (the daemon hands work between threads). */
    rc = mdb_env_open(s->env, dir, MDB_NOTLS | (o->no_sync ? MDB_NOSYNC : 0), 0600);
    if (rc != 0) {
        mdb_env_close(s->env);
        s->env = NULL;
        if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
            return mesh_err(MESH_ENOTSTORE, "%s does not hold a meshsync store (%s)", dir,
                            mdb_strerror(rc));
        return mesh_lmdb_err(NULL, rc, dir);
    }
    return MESH_OK;
}

static int open_dbs(mesh_txn *t, bool create)
{
    for (int i = 0; i < DB_COUNT; i++) {
        /* `peers` and `outbox` came after the first stores were made: create them in those
         * when opened. */
        unsigned flags = create || i == DB_PEERS || i == DB_OUTBOX ? MDB_CREATE : 0;
        int rc = mdb_dbi_open(t->txn, DB_NAMES[i], flags, &t->s->dbi[i]);
        if (rc == MDB_NOTFOUND)
            return mesh_err(MESH_ENOTSTORE, "%s is an LMDB file but not a meshsync store (no '%s')",
                            t->s->dir, DB_NAMES[i]);
        if (rc != 0) return mesh_lmdb_err(t, rc, "opening the store's databases");
    }
    return MESH_OK;
}

static int init_fn(mesh_txn *t, void *ctx)
{
    bool create = *(bool *)ctx;
    int rc = open_dbs(t, create);
    if (rc != MESH_OK) return rc;
    MDB_val k = mval("magic", 5), v;
    rc = mdb_get(t->txn, t->s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) {
        if (!create)
            return mesh_err(MESH_ENOTSTORE, "%s is not a meshsync store (no magic)", t->s->dir);
        v = mval(STORE_MAGIC, strlen(STORE_MAGIC));
        rc = mdb_put(t->txn, t->s->dbi[DB_META], &k, &v, 0);
        if (rc != 0) return mesh_lmdb_err(t, rc, "writing the store header");
        return mesh_store_meta_put_u64(t, "version", STORE_VERSION);
    }
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading the store header");
    if (create) return mesh_err(MESH_EEXIST, "%s already holds a meshsync store", t->s->dir);
    if (v.mv_size != strlen(STORE_MAGIC) || memcmp(v.mv_data, STORE_MAGIC, v.mv_size) != 0)
        return mesh_err(MESH_ENOTSTORE, "%s is not a meshsync store (bad magic)", t->s->dir);
    uint64_t version = 0;
    rc = mesh_store_meta_get_u64(t, "version", &version);
    if (rc != MESH_OK) return rc;
    if (version == 1 || version == 2) {
        rc = mdb_drop(t->txn, t->s->dbi[DB_BYTYPE], 0);
        if (rc != 0) return mesh_lmdb_err(t, rc, "upgrading the store");
        return mesh_store_meta_put_u64(t, "version", STORE_VERSION);
    }
    if (version != STORE_VERSION)
        return mesh_err(MESH_EVERSION,
                        "%s has store format %llu; this meshsync reads format %u: upgrade meshsync",
                        t->s->dir, (unsigned long long)version, STORE_VERSION);
    return MESH_OK;
}

int mesh_store_open(const char *dir, const mesh_store_opts *opts, mesh_store **out)
{
    static const mesh_store_opts defaults;
    const mesh_store_opts *o = opts ? opts : &defaults;
    bool create = o->create;
    *out = NULL;
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    bool exists = stat(path, &st) == 0;
    if (!create && !exists)
        return mesh_err(MESH_ENOTSTORE, "%s holds no meshsync store (no data.mdb)", dir);
    if (create && exists) return mesh_err(MESH_EEXIST, "%s already holds a store", dir);
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return mesh_err(MESH_EIO, "cannot create %s: %s", dir, strerror(errno));

    mesh_store *s = calloc(1, sizeof *s);
    if (s == NULL) return mesh_err(MESH_ENOMEM, "out of memory opening %s", dir);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->map_bytes_max = o->map_bytes_max ? o->map_bytes_max : MESH_MAP_BYTES_MAX;
    int rc = env_open(s, dir, o);
    if (rc == MESH_OK) rc = mesh_store_write(s, init_fn, &create);
    if (rc == MESH_OK) rc = mesh_store_read(s, mesh_store_seal_probe, NULL);
    if (rc != MESH_OK) {
        mesh_store_close(s);
        return rc;
    }
    *out = s;
    return MESH_OK;
}

void mesh_store_close(mesh_store *s)
{
    if (s == NULL) return;
    if (s->env) mdb_env_close(s->env);
    mesh_ingest_pool_free(s->pool);
    mesh_store_seal_close(s);
    free(s);
}

static int txn_begin(mesh_store *s, unsigned flags, mesh_txn *t)
{
    memset(t, 0, sizeof *t);
    t->s = s;
    int rc = mdb_txn_begin(s->env, NULL, flags, &t->txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and retry once. */
        mdb_env_set_mapsize(s->env, 0);
        rc = mdb_txn_begin(s->env, NULL, flags, &t->txn);
    }
    if (rc != 0) return mesh_lmdb_err(NULL, rc, "starting a transaction");
    return MESH_OK;
}

static int grow_map(mesh_store *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    uint64_t cur = info.me_mapsize;
    if (cur >= s->map_bytes_max)
        return mesh_err(MESH_ENOSPC,
                        "the store reached its size limit of %llu MiB; raise map_bytes_max or "
                        "free space (nothing was lost)",
                        (unsigned long long)(s->map_bytes_max >> 20));
    uint64_t next = cur * 2 > s->map_bytes_max ? s->map_bytes_max : cur * 2;
    int rc = mdb_env_set_mapsize(s->env, next);
    if (rc != 0) return mesh_lmdb_err(NULL, rc, "growing the store's map");
    return MESH_OK;
}

int mesh_store_write(mesh_store *s, int (*fn)(mesh_txn *txn, void *ctx), void *ctx)
{
    for (int attempt = 0; attempt < GROW_RETRIES_MAX; attempt++) {
        mesh_txn t;
        int rc = txn_begin(s, 0, &t);
        if (rc != MESH_OK) return rc;
        rc = fn(&t, ctx);
        mesh_store_rec_fini(&t);
        if (rc == MESH_OK) {
            int mrc = mdb_txn_commit(t.txn);
            if (mrc == 0) return MESH_OK;
            rc = mesh_lmdb_err(&t, mrc, "committing to the store");
        } else {
            mdb_txn_abort(t.txn);
        }
        if (!t.map_full) return rc;
        rc = grow_map(s);
        if (rc != MESH_OK) return rc;
    }
    return mesh_err(MESH_ENOSPC, "the store stayed full after growing its map %d times",
                    GROW_RETRIES_MAX);
}

int mesh_store_read(mesh_store *s, int (*fn)(mesh_txn *txn, void *ctx), void *ctx)
{
    mesh_txn t;
    int rc = txn_begin(s, MDB_RDONLY, &t);
    if (rc != MESH_OK) return rc;
    rc = fn(&t, ctx);
    mesh_store_rec_fini(&t);
    mdb_txn_abort(t.txn);
    return rc;
}

int mesh_store_meta_get_u64(mesh_txn *t, const char *name, uint64_t *val)
{
    MDB_val k = mval(name, strlen(name)), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) {
        *val = 0;
        return MESH_OK;
    }
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading store metadata");
    if (v.mv_size != 8) return mesh_err(MESH_ECORRUPT, "store metadata '%s' is damaged", name);
    *val = mesh_be64_get(v.mv_data);
    return MESH_OK;
}

int mesh_store_meta_put_u64(mesh_txn *t, const char *name, uint64_t val)
{
    uint8_t b[8];
    mesh_be64_put(b, val);
    MDB_val k = mval(name, strlen(name)), v = mval(b, 8);
    int rc = mdb_put(t->txn, t->s->dbi[DB_META], &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing store metadata");
    return MESH_OK;
}

int mesh_store_meta_get(mesh_txn *t, const char *name, void *buf, size_t cap, size_t *len)
{
    MDB_val k = mval(name, strlen(name)), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading store metadata");
    if (v.mv_size > cap) return mesh_err(MESH_ECORRUPT, "store metadata '%s' is too long", name);
    memcpy(buf, v.mv_data, v.mv_size);
    *len = v.mv_size;
    return MESH_OK;
}

int mesh_store_meta_put(mesh_txn *t, const char *name, const void *val, size_t len)
{
    MDB_val k = mval(name, strlen(name)), v = mval(val, len);
    int rc = mdb_put(t->txn, t->s->dbi[DB_META], &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing store metadata");
    return MESH_OK;
}

/* Stream record: author(32) | seq(8) | tip(32) | scope. */
static int stream_decode(uint64_t sid, const MDB_val *v, mesh_stream *out)
{
    size_t fixed = 32 + 8 + 32;
    if (v->mv_size < fixed + 1 || v->mv_size > fixed + MESH_SCOPE_BYTES_MAX)
        return mesh_err(MESH_ECORRUPT, "stream record %016llx is damaged", (unsigned long long)sid);
    const uint8_t *p = v->mv_data;
    out->sid = sid;
    memcpy(out->author, p, 32);
    out->seq = mesh_be64_get(p + 32);
    memcpy(out->tip, p + 40, 32);
    out->scope_len = v->mv_size - fixed;
    memcpy(out->scope, p + fixed, out->scope_len);
    out->scope[out->scope_len] = '\0';
    return MESH_OK;
}

int mesh_store_stream_put(mesh_txn *t, const mesh_stream *st)
{
    uint8_t key[8], val[32 + 8 + 32 + MESH_SCOPE_BYTES_MAX];
    mesh_be64_put(key, st->sid);
    memcpy(val, st->author, 32);
    mesh_be64_put(val + 32, st->seq);
    memcpy(val + 40, st->tip, 32);
    memcpy(val + 72, st->scope, st->scope_len);
    MDB_val k = mval(key, 8), v = mval(val, 72 + st->scope_len);
    int rc = mdb_put(t->txn, t->s->dbi[DB_STREAMS], &k, &v, 0);
    if (rc != 0) return mesh_lmdb_err(t, rc, "writing a stream record");
    return MESH_OK;
}

int mesh_store_stream_get(mesh_txn *t, uint64_t sid, mesh_stream *out)
{
    uint8_t key[8];
    mesh_be64_put(key, sid);
    MDB_val k = mval(key, 8), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_STREAMS], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading a stream record");
    return stream_decode(sid, &v, out);
}

int mesh_store_streams(mesh_txn *t, int (*fn)(const mesh_stream *st, void *ctx), void *ctx)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_STREAMS], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "listing streams");
    MDB_val k, v;
    int out = MESH_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            out = mesh_err(MESH_ECORRUPT, "a stream key is damaged");
            break;
        }
        mesh_stream st;
        out = stream_decode(mesh_be64_get(k.mv_data), &v, &st);
        if (out == MESH_OK) out = fn(&st, ctx);
        if (out != MESH_OK) break;
    }
    if (out == MESH_OK && rc != MDB_NOTFOUND) out = mesh_lmdb_err(t, rc, "listing streams");
    mdb_cursor_close(c);
    return out;
}

int mesh_store_op_get(mesh_txn *t, const uint8_t entity[MESH_UUID_BYTES], const mesh_opref *ref,
                      mesh_oprec *out)
{
    uint8_t key[MESH_STORE_LOG_KEY_BYTES];
    log_key(key, entity, ref->row_version, ref->author);
    MDB_val k = mval(key, sizeof key), v;
    int rc = mdb_get(t->txn, t->s->dbi[DB_LOG], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading an op");
    return mesh_store_rec_open(t, DB_LOG, &k, &v, out);
}

size_t mesh_sops_count(const MDB_val *k, const MDB_val *v)
{
    if (k->mv_size != 16) return 0;
    if (v->mv_size == MESH_STORE_LOG_KEY_BYTES) return 1;  /* format 1 */
    size_t n = v->mv_size / MESH_SOPS_ENTRY_BYTES;
    if (v->mv_size % MESH_SOPS_ENTRY_BYTES != 0 || n == 0 || n > MESH_SOPS_CHUNK_OPS) return 0;
    return n;
}

void mesh_sops_log_key(const MDB_val *v, size_t idx, const uint8_t author[MESH_KEY_BYTES],
                       uint8_t out[MESH_STORE_LOG_KEY_BYTES])
{
    if (v->mv_size == MESH_STORE_LOG_KEY_BYTES) {
        memcpy(out, v->mv_data, MESH_STORE_LOG_KEY_BYTES);
        return;
    }
    memcpy(out, (const uint8_t *)v->mv_data + idx * MESH_SOPS_ENTRY_BYTES, MESH_SOPS_ENTRY_BYTES);
    memcpy(out + MESH_SOPS_ENTRY_BYTES, author, MESH_KEY_BYTES);
}

int mesh_sops_seek(mesh_txn *t, MDB_cursor *c, uint64_t sid, uint64_t seq, MDB_val *k,
                   MDB_val *v, size_t *idx)
{
    uint8_t key[16];
    sid_seq_key(key, sid, seq);
    *k = mval(key, 16);
    /* The chunk holding seq starts at or before it: the record at seq, or the one before. */
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    bool exact = rc == 0 && k->mv_size == 16 && memcmp(k->mv_data, key, 16) == 0;
    if (!exact) {
        rc = mdb_cursor_get(c, k, v, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
        bool holds = false;
        if (rc == 0 && k->mv_size == 16 && mesh_be64_get(k->mv_data) == sid) {
            size_t n = mesh_sops_count(k, v);
            if (n == 0) return mesh_err(MESH_ECORRUPT, "a stream index record is damaged");
            uint64_t first = mesh_be64_get((const uint8_t *)k->mv_data + 8);
            holds = seq - first < n;
        }
        if (holds) {
            *idx = (size_t)(seq - mesh_be64_get((const uint8_t *)k->mv_data + 8));
        } else {
            /* Nothing holds seq: the stream's next chunk, if any. */
            *k = mval(key, 16);
            rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
            *idx = 0;
        }
    } else {
        *idx = 0;
    }
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading a stream");
    if (k->mv_size != 16 || mesh_be64_get(k->mv_data) != sid) return MESH_ENOTFOUND;
    if (mesh_sops_count(k, v) == 0)
        return mesh_err(MESH_ECORRUPT, "a stream index record is damaged");
    return MESH_OK;
}

int mesh_sops_rewrite(mesh_txn *t, MDB_cursor *c, const MDB_val *k, const void *ents, size_t len)
{
    /* A resized record is deleted and re-inserted: the key must not point into its page. */
    uint8_t kb[16];
    MESH_ASSERT(k->mv_size == sizeof kb);
    memcpy(kb, k->mv_data, sizeof kb);
    MDB_val kk = mval(kb, sizeof kb), v = mval(ents, len);
    int rc = mdb_cursor_put(c, &kk, &v, MDB_CURRENT);
    return rc == 0 ? MESH_OK : mesh_lmdb_err(t, rc, "rewriting the stream index");
}

int mesh_sops_append(mesh_txn *t, uint64_t sid, uint64_t first_seq,
                     const uint8_t (*ents)[MESH_SOPS_ENTRY_BYTES], size_t n)
{
    MESH_ASSERT(first_seq >= 1);
    MDB_dbi dbi = t->s->dbi[DB_SOPS];
    size_t done = 0;
    if (first_seq > 1 && n > 0) {
        /* Fill the chunk that ends at the tip, when it has room. */
        MDB_cursor *c;
        int rc = mdb_cursor_open(t->txn, dbi, &c);
        if (rc != 0) return mesh_lmdb_err(t, rc, "indexing ops");
        MDB_val k, v;
        size_t idx;
        rc = mesh_sops_seek(t, c, sid, first_seq - 1, &k, &v, &idx);
        size_t have = rc == MESH_OK ? mesh_sops_count(&k, &v) : 0;
        /* (A format-1 record, one whole log key, is left as it is.) */
        if (rc == MESH_OK && idx + 1 == have && have < MESH_SOPS_CHUNK_OPS &&
            v.mv_size == have * MESH_SOPS_ENTRY_BYTES) {
            size_t add = MESH_SOPS_CHUNK_OPS - have < n ? MESH_SOPS_CHUNK_OPS - have : n;
            uint8_t buf[MESH_SOPS_CHUNK_OPS * MESH_SOPS_ENTRY_BYTES];
            memcpy(buf, v.mv_data, v.mv_size);
            memcpy(buf + v.mv_size, ents, add * MESH_SOPS_ENTRY_BYTES);
            rc = mesh_sops_rewrite(t, c, &k, buf, (have + add) * MESH_SOPS_ENTRY_BYTES);
            if (rc != MESH_OK) {
                mdb_cursor_close(c);
                return rc;
            }
            done = add;
        } else if (rc != MESH_OK && rc != MESH_ENOTFOUND) {
            mdb_cursor_close(c);
            return rc;
        }
        mdb_cursor_close(c);
    }
    while (done < n) {
        size_t m = n - done < MESH_SOPS_CHUNK_OPS ? n - done : MESH_SOPS_CHUNK_OPS;
        uint8_t key[16];
        sid_seq_key(key, sid, first_seq + done);
        MDB_val k = mval(key, 16), v = mval(ents[done], m * MESH_SOPS_ENTRY_BYTES);
        int rc = put_seq(t, DB_SOPS, &k, &v, 0);
        if (rc != 0) return mesh_lmdb_err(t, rc, "indexing ops");
        done += m;
    }
    return MESH_OK;
}

int mesh_store_stream_ops(mesh_txn *t, uint64_t sid, uint64_t seq_from,
                          int (*fn)(const mesh_oprec *rec, uint64_t seq, void *ctx), void *ctx)
{
    mesh_stream st;
    int out = mesh_store_stream_get(t, sid, &st);
    if (out == MESH_ENOTFOUND) return MESH_OK;  /* nothing held of it */
    if (out != MESH_OK) return out;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_SOPS], &c);
    if (rc != 0) return mesh_lmdb_err(t, rc, "reading a stream");
    MDB_val k, v;
    size_t idx;
    out = mesh_sops_seek(t, c, sid, seq_from, &k, &v, &idx);
    if (out == MESH_ENOTFOUND) out = MESH_OK, rc = MDB_NOTFOUND;
    while (out == MESH_OK && rc == 0) {
        size_t n = mesh_sops_count(&k, &v);
        if (k.mv_size != 16 || mesh_be64_get(k.mv_data) != sid) break;
        if (n == 0) {
            out = mesh_err(MESH_ECORRUPT, "a stream index record is damaged");
            break;
        }
        uint64_t first = mesh_be64_get((const uint8_t *)k.mv_data + 8);
        for (; idx < n && out == MESH_OK; idx++) {
            uint8_t key[MESH_STORE_LOG_KEY_BYTES];
            mesh_sops_log_key(&v, idx, st.author, key);
            MDB_val lk = mval(key, sizeof key), lv;
            int grc = mdb_get(t->txn, t->s->dbi[DB_LOG], &lk, &lv);
            if (grc != 0) {
                out = mesh_lmdb_err(t, grc, "reading a stream's op");
                break;
            }
            mesh_rec_mark mark = mesh_store_rec_mark(t);
            mesh_oprec rec;
            out = mesh_store_rec_open(t, DB_LOG, &lk, &lv, &rec);
            if (out == MESH_OK) out = fn(&rec, first + idx, ctx);
            mesh_store_rec_release(t, mark);
        }
        if (out != MESH_OK) break;
        idx = 0;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (out == MESH_OK && rc != 0 && rc != MDB_NOTFOUND) out = mesh_lmdb_err(t, rc, "reading a stream");
    mdb_cursor_close(c);
    return out;
}
