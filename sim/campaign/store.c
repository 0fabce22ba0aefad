/*
 * store.c - the LMDB environment of the campaign service: one environment in the data
 * directory, one named database per kind of record (see cs_store in campaign.h), JSON values,
 * and big-endian counters. Every state change elsewhere is one write transaction here, so a
 * crash leaves either the whole change or none of it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "campaign.h"

static int open_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
    int rc = mdb_dbi_open(txn, name, MDB_CREATE, dbi);
    if (rc)
        cs_log("error", "opening LMDB database '%s': %s", name, mdb_strerror(rc));
    return rc;
}

int cs_store_open(cs_store *st, const char *dir, size_t map_bytes)
{
    memset(st, 0, sizeof *st);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        cs_log("error", "creating data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = mdb_env_create(&st->env);
    if (rc) {
        cs_log("error", "mdb_env_create: %s", mdb_strerror(rc));
        return -1;
    }
    mdb_env_set_maxdbs(st->env, 16);
    mdb_env_set_maxreaders(st->env, CS_LMDB_READERS_MAX);
    mdb_env_set_mapsize(st->env, map_bytes);
    /* MDB_NOTLS: read transactions are owned by the handler that made them, not by a thread
     * slot, because libmicrohttpd creates and ends a thread per connection. */
    rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600);
    if (rc) {
        cs_log("error", "opening LMDB environment in %s: %s (is another meshsync-campaign using "
               "this --data directory?)", dir, mdb_strerror(rc));
        mdb_env_close(st->env);
        st->env = NULL;
        return -1;
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        cs_log("error", "mdb_txn_begin: %s", mdb_strerror(rc));
        cs_store_close(st);
        return -1;
    }
    if (open_dbi(txn, "ent", &st->ent) || open_dbi(txn, "ent_id", &st->ent_id) ||
        open_dbi(txn, "ent_crid", &st->ent_crid) || open_dbi(txn, "queue", &st->queue) ||
        open_dbi(txn, "errors", &st->errors) || open_dbi(txn, "tokens", &st->tokens) ||
        open_dbi(txn, "files", &st->files) || open_dbi(txn, "blobs", &st->blobs) ||
        open_dbi(txn, "syncs", &st->syncs) || open_dbi(txn, "meta", &st->meta)) {
        mdb_txn_abort(txn);
        cs_store_close(st);
        return -1;
    }
    rc = mdb_txn_commit(txn);
    if (rc) {
        cs_log("error", "committing LMDB database creation: %s", mdb_strerror(rc));
        cs_store_close(st);
        return -1;
    }
    return 0;
}

void cs_store_close(cs_store *st)
{
    if (st->env)
        mdb_env_close(st->env);
    st->env = NULL;
}

int cs_store_begin(cs_store *st, bool write, MDB_txn **txn)
{
    return mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, txn);
}

int cs_store_get_json(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, json_t **out)
{
    *out = NULL;
    MDB_val k = {klen, (void *)(uintptr_t)key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    json_error_t jerr;
    *out = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
    if (!*out) {
        cs_log("error", "stored record is not JSON: %s", jerr.text);
        return MDB_CORRUPTED;
    }
    return 0;
}

int cs_store_put_json(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    if (!s)
        return ENOMEM;
    MDB_val k = {klen, (void *)(uintptr_t)key}, d = {strlen(s), s};
    int rc = mdb_put(txn, dbi, &k, &d, 0);
    free(s);
    return rc;
}

int cs_store_counter_get(MDB_txn *txn, const cs_store *st, const char *name, uint64_t *out)
{
    *out = 0;
    MDB_val k = {strlen(name), (void *)(uintptr_t)name}, v;
    int rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    *out = cs_be64_get(v.mv_data);
    return 0;
}

int cs_store_counter_add(MDB_txn *txn, const cs_store *st, const char *name, uint64_t delta,
                         uint64_t *after)
{
    uint64_t cur;
    int rc = cs_store_counter_get(txn, st, name, &cur);
    if (rc)
        return rc;
    cur += delta;
    uint8_t buf[8];
    cs_be64_put(buf, cur);
    MDB_val k = {strlen(name), (void *)(uintptr_t)name}, v = {8, buf};
    rc = mdb_put(txn, st->meta, &k, &v, 0);
    if (rc == 0 && after)
        *after = cur;
    return rc;
}

size_t cs_store_key(uint8_t *key, size_t cap, const char *type, const void *rest, size_t rest_len)
{
    size_t tl = strlen(type);
    if (tl + 1 + rest_len > cap)
        return 0;
    memcpy(key, type, tl);
    key[tl] = 0;
    if (rest_len)
        memcpy(key + tl + 1, rest, rest_len);
    return tl + 1 + rest_len;
}
