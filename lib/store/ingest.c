/*
 * ingest.c - verifies and stores batches of op records.
 *
 * A node holds a gap-free prefix of every stream, so its holdings are summarised by a version
 * vector. Records are grouped by stream and sorted by seq; each run that continues the stored
 * tip is checked link by link (each op names the hash of its predecessor) and authenticated by
 * one Ed25519 signature, the run's last: the signature covers that op's hash, which covers its
 * predecessor's, and so on back to the tip. Records beyond a gap wait in `pending` until the gap
 * fills. This is the only path into the log: local writes go through it too.
 *
 * A batch is routed to streams by each record's leading fields, sorted into stream order and
 * stored in slices; a large batch shares decoding, hashing and signature checks with a helper
 * thread, which prepares slices ahead of the one being stored (see `prep` below). The result is
 * the same for any timing and any thread count: a slice is stored only when wholly prepared, in
 * order, by this thread.
 */
#include "store/store_int.h"

#include "crypto/crypto.h"
#include "model/hlc.h"
#include "store/seal_int.h"
#include "store/team.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct item {
    mesh_op op;
    mesh_oprec rec;
    uint8_t hash[MESH_HASH_BYTES];
    uint64_t sid;
    size_t idx;          /* position in the caller's array: keeps the sort stable */
    bool from_pending;   /* loaded from the pending database (bytes in scratch memory) */
    bool auth;           /* written by the team authority: its streams go first */
    int bad;             /* MESH_E* when the record does not decode; 0 otherwise */
    int8_t sig;          /* 1: signature checked good, -1: checked bad, 0: not checked yet */
    uint16_t fresh_len;  /* the state the op alone gives (mesh_state_fresh); 0: not prepared */
    uint8_t fresh[MESH_STATE_FRESH_BYTES_MAX];
} item;

static int verify_sig(const item *it)
{
    if (it->sig != 0) return it->sig > 0 ? MESH_OK : MESH_ESIG;
    return mesh_verify(it->op.author, MESH_DOMAIN_OP, it->hash, MESH_HASH_BYTES, it->rec.sig);
}

/*
 * A batch is stored slice by slice, in stream order. Routing, decoding and hashing need no
 * transaction, so for a large batch the store's helper thread shares them: both threads read the
 * leading fields of runs of records, then, once this thread has sorted them, both take slices to
 * prepare in turn, and this thread stores each one, in order, once it is ready. The result does
 * not depend on the timing: a slice is stored only once it is wholly prepared.
 */
typedef struct prep {
    item *items;
    const mesh_oprec *recs;
    size_t n;
    uint8_t authority[MESH_KEY_BYTES];
    bool team_on;
    bool signed_here;    /* MESH_INGEST_LOCAL: the signatures were just made by this process */
    size_t peek_next;    /* records [0, peek_next) are taken for peeking, in PEEK_CHUNK runs */
    size_t peeked;       /* how many records are peeked */
    item **order;        /* every record that peeked well, in stream order */
    size_t m;
    size_t nslices;
    bool threaded;       /* the store's helper thread works on this batch (prep_start) */
    struct mesh_ingest_pool *pool;
    bool sorted;         /* order, m and nslices are set: the helper may prepare slices */
    size_t slice;        /* ops per slice */
    size_t claimed;      /* slices [0, claimed) are taken by one thread or the other */
    uint8_t *done;       /* per slice: prepared */
    bool stop;           /* the storing side gave up: prepare no more */
    size_t *first_bad;   /* per slice: position (in order) of its first bad record, or SIZE_MAX */
    char (*msg)[256];    /* per slice: why that record is bad */
} prep;

/*
 * What a store keeps between ingests: its helper thread, started by the first batch that needs
 * it and parked between batches (LMDB runs one write transaction at a time, so one ingest at a
 * time uses it), and the item arrays of the last batch, so that a steady stream of batches
 * neither starts a thread nor faults in fresh pages for each one. `mu` and `cv` also guard the
 * progress of the batch in hand (the prep fields the two threads share).
 */
struct mesh_ingest_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running;        /* the thread was started */
    bool quit;           /* mesh_store_close: the thread ends */
    prep *job;           /* the batch the helper works on; NULL between batches */
    item *items;         /* scratch for batches up to MESH_INGEST_SCRATCH_OPS */
    item **order;
    size_t cap;
};

/* Records are peeked in runs of this many, taken by either thread: whichever is free first
 * does more, so neither waits on the other to wake up. */
#define PEEK_CHUNK 256u

/* Routes records [from, to) to their streams by their leading fields. A record that cannot be
 * read is marked bad; route() asks again for the message of the first one. */
static void peek_range(prep *p, size_t from, size_t to)
{
    mesh_sid_memo memo = {0};
    for (size_t i = from; i < to; i++) {
        item *it = &p->items[i];
        it->rec = p->recs[i];
        it->idx = i;
        it->from_pending = false;
        it->bad = mesh_op_peek(it->rec.op, it->rec.op_len, &it->op);
        if (it->bad != MESH_OK) continue;
        it->sid = mesh_stream_id_memo(&memo, it->op.author, it->op.scope, it->op.scope_len);
        it->auth = p->team_on && memcmp(it->op.author, p->authority, MESH_KEY_BYTES) == 0;
    }
}

/* Peeks runs of records nobody has taken until none is left (called by both threads). */
static void peek_share(prep *p)
{
    struct mesh_ingest_pool *pool = p->pool;
    pthread_mutex_lock(&pool->mu);
    while (p->peek_next < p->n) {
        size_t from = p->peek_next;
        size_t to = p->n - from > PEEK_CHUNK ? from + PEEK_CHUNK : p->n;
        p->peek_next = to;
        pthread_mutex_unlock(&pool->mu);
        peek_range(p, from, to);
        pthread_mutex_lock(&pool->mu);
        p->peeked += to - from;
        if (p->peeked == p->n) pthread_cond_broadcast(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
}

static void prep_slice(prep *p, size_t sl)
{
    size_t to = (sl + 1) * p->slice < p->m ? (sl + 1) * p->slice : p->m;
    p->first_bad[sl] = SIZE_MAX;
    for (size_t k = sl * p->slice; k < to; k++) {
        item *it = p->order[k];
        it->sig = 0;
        it->fresh_len = 0;
        it->bad = mesh_op_decode(it->rec.op, it->rec.op_len, &it->op);
        if (it->bad == MESH_OK) {
            mesh_op_hash(it->rec.op, it->rec.op_len, it->hash);
            it->fresh_len = (uint16_t)mesh_state_fresh(&it->op, it->fresh);
            /* The last op of a stream in the slice usually ends its run there: check its
             * signature here, off the storing thread. */
            if (p->signed_here) it->sig = 1;
            else if (k + 1 == to || p->order[k + 1]->sid != it->sid)
                it->sig = verify_sig(it) ? -1 : 1;
        } else if (p->first_bad[sl] == SIZE_MAX) {
            p->first_bad[sl] = k;
            snprintf(p->msg[sl], sizeof p->msg[sl], "op %zu of the batch is malformed: %s",
                     it->idx, mesh_errmsg());
        }
    }
}

/* The helper's part of one batch: its share of the routing, then slices until none is
 * left or the storing thread gives up. */
static void prep_help(prep *p)
{
    struct mesh_ingest_pool *pool = p->pool;
    peek_share(p);
    pthread_mutex_lock(&pool->mu);
    while (!p->sorted && !p->stop) pthread_cond_wait(&pool->cv, &pool->mu);
    /* Take the next slice nobody has taken; the storing thread does the same whenever the
     * slice it needs is not ready (slice_take), so neither thread idles while there is work. */
    while (!p->stop && p->claimed < p->nslices) {
        size_t sl = p->claimed++;
        pthread_mutex_unlock(&pool->mu);
        prep_slice(p, sl);
        pthread_mutex_lock(&pool->mu);
        p->done[sl] = 1;
        pthread_cond_broadcast(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
}

static void *helper_main(void *arg)
{
    struct mesh_ingest_pool *pool = arg;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->job == NULL && !pool->quit) pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->quit) break;
        prep *p = pool->job;
        pthread_mutex_unlock(&pool->mu);
        prep_help(p);
        pthread_mutex_lock(&pool->mu);
        pool->job = NULL;
        pthread_cond_broadcast(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static struct mesh_ingest_pool *pool_get(mesh_store *s)
{
    if (s->pool != NULL) return s->pool;
    struct mesh_ingest_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL) return NULL;
    if (pthread_mutex_init(&pool->mu, NULL) != 0) {
        free(pool);
        return NULL;
    }
    if (pthread_cond_init(&pool->cv, NULL) != 0) {
        pthread_mutex_destroy(&pool->mu);
        free(pool);
        return NULL;
    }
    s->pool = pool;
    return pool;
}

void mesh_ingest_pool_free(struct mesh_ingest_pool *pool)
{
    if (pool == NULL) return;
    if (pool->running) {
        pthread_mutex_lock(&pool->mu);
        MESH_ASSERT(pool->job == NULL);
        pool->quit = true;
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
        pthread_join(pool->thread, NULL);
    }
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool->items);
    free(pool->order);
    free(pool);
}

/* Item arrays for `n` records: the pool's, grown as needed, for batches up to
 * MESH_INGEST_SCRATCH_OPS; a batch larger than that gets its own (*owned), freed after it, so
 * a rare huge batch does not pin its memory for the store's lifetime. */
static int scratch_get(struct mesh_ingest_pool *pool, size_t n, item **items, item ***order,
                       bool *owned)
{
    size_t want = n ? n : 1;
    *owned = pool == NULL || n > MESH_INGEST_SCRATCH_OPS;
    if (!*owned && want <= pool->cap) {
        *items = pool->items;
        *order = pool->order;
        return MESH_OK;
    }
    item *it = malloc(sizeof *it * want);
    item **ord = malloc(sizeof *ord * want);
    if (it == NULL || ord == NULL) {
        free(it);
        free(ord);
        return mesh_err(MESH_ENOMEM, "out of memory ingesting %zu ops", n);
    }
    if (!*owned) {
        free(pool->items);
        free(pool->order);
        pool->items = it;
        pool->order = ord;
        pool->cap = want;
    }
    *items = it;
    *order = ord;
    return MESH_OK;
}

typedef struct ingest {
    mesh_txn *t;
    mesh_ingest_mode mode;
    mesh_ingest_report *rep;
    int first_err;       /* first rejection, for ATOMIC mode */
    uint64_t hlc_max;
    /* The team's roster (store/team.h): enforced when the node belongs to a team. */
    bool team_on;
    uint8_t authority[MESH_KEY_BYTES];
    mesh_team *roster;   /* the roster held; NULL: none yet, so nothing can be judged */
    bool roster_changed; /* a newer roster was stored: cut every stream back to it */
    /* A run cut short by a rejection at the end of a slice: the next slice's ops that continue
     * it are rejected too, as they would have been in one piece. */
    bool cut;
    uint64_t cut_sid, cut_next;
} ingest;

/* Records the cause of a rejection (the first one is kept); callers count the ops. */
static void reject(ingest *g, int code, const char *what)
{
    if (g->first_err == MESH_OK) g->first_err = code;
    if (g->rep->first_error == 0) {
        g->rep->first_error = code;
        snprintf(g->rep->first_error_msg, sizeof g->rep->first_error_msg, "%s", what);
    }
}

/* Sorts pointers: an item is ~1 KB, too big to move around in qsort. */
static int item_cmp(const void *a, const void *b)
{
    const item *x = *(item *const *)a, *y = *(item *const *)b;
    if (x->auth != y->auth) return x->auth ? -1 : 1;
    if (x->sid != y->sid) return x->sid < y->sid ? -1 : 1;
    if (x->op.seq != y->op.seq) return x->op.seq < y->op.seq ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Loads pending op (sid, seq) into a fresh item with its own copy of the bytes. */
static int pending_load(ingest *g, uint64_t sid, uint64_t seq, item **out)
{
    uint8_t key[16];
    sid_seq_key(key, sid, seq);
    MDB_val k = mval(key, 16), v;
    int rc = mdb_get(g->t->txn, g->t->s->dbi[DB_PENDING], &k, &v);
    if (rc == MDB_NOTFOUND) return MESH_ENOTFOUND;
    if (rc != 0) return mesh_lmdb_err(g->t, rc, "reading pending ops");
    mesh_rec_mark mark = mesh_store_rec_mark(g->t);
    mesh_oprec rec;
    rc = mesh_store_rec_open(g->t, DB_PENDING, &k, &v, &rec);
    if (rc == MESH_EPERM || rc == MESH_ENOMEM) return rc;
    /* LMDB's pointers die at the next write in this transaction: copy. */
    size_t bytes_len = rc == MESH_OK ? MESH_SIG_BYTES + rec.op_len : 0;
    item *it = calloc(1, sizeof *it + bytes_len);
    if (it == NULL) {
        mesh_store_rec_release(g->t, mark);
        return mesh_err(MESH_ENOMEM, "out of memory loading a pending op");
    }
    uint8_t *bytes = (uint8_t *)(it + 1);
    if (rc == MESH_OK) {
        memcpy(bytes, rec.sig, MESH_SIG_BYTES);
        memcpy(bytes + MESH_SIG_BYTES, rec.op, rec.op_len);
    }
    mesh_store_rec_release(g->t, mark);
    it->from_pending = true;
    it->sig = 0;
    it->fresh_len = 0;
    it->rec.sig = bytes;
    it->rec.op = bytes + MESH_SIG_BYTES;
    it->rec.op_len = bytes_len > MESH_SIG_BYTES ? bytes_len - MESH_SIG_BYTES : 0;
    if (rc != MESH_OK || mesh_op_decode(it->rec.op, it->rec.op_len, &it->op) != MESH_OK) {
        free(it);
        /* A damaged pending record is dropped: the op will come again from a peer. */
        mdb_del(g->t->txn, g->t->s->dbi[DB_PENDING], &k, NULL);
        return MESH_ENOTFOUND;
    }
    mesh_op_hash(it->rec.op, it->rec.op_len, it->hash);
    it->sid = sid;
    *out = it;
    return MESH_OK;
}

static int pending_del(ingest *g, uint64_t sid, uint64_t seq)
{
    uint8_t key[16];
    sid_seq_key(key, sid, seq);
    MDB_val k = mval(key, 16);
    int rc = mdb_del(g->t->txn, g->t->s->dbi[DB_PENDING], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) return mesh_lmdb_err(g->t, rc, "clearing pending ops");
    return MESH_OK;
}

static int pending_park(ingest *g, const item *it)
{
    MDB_stat st;
    mdb_stat(g->t->txn, g->t->s->dbi[DB_PENDING], &st);
    if (st.ms_entries >= MESH_PENDING_MAX) {
        g->rep->rejected++;
        reject(g, MESH_ELIMIT, "too many ops wait for missing predecessors; dropped one");
        return MESH_OK;
    }
    uint8_t key[16];
    sid_seq_key(key, it->sid, it->op.seq);
    MDB_val k = mval(key, 16), v;
    v.mv_size = MESH_SIG_BYTES + it->rec.op_len + mesh_store_rec_overhead(g->t);
    int rc = mdb_put(g->t->txn, g->t->s->dbi[DB_PENDING], &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc == MDB_KEYEXIST) {
        g->rep->duplicate++;
        return MESH_OK;
    }
    if (rc != 0) return mesh_lmdb_err(g->t, rc, "holding an op until its predecessor arrives");
    rc = mesh_store_rec_seal(g->t, DB_PENDING, &k, it->rec.sig, it->rec.op, it->rec.op_len,
                             v.mv_data);
    if (rc != MESH_OK) return rc;
    g->rep->pending++;
    return MESH_OK;
}

static bool same_stream(const mesh_stream *st, const mesh_op *op)
{
    return memcmp(st->author, op->author, MESH_KEY_BYTES) == 0 && st->scope_len == op->scope_len &&
           memcmp(st->scope, op->scope, op->scope_len) == 0;
}

static void describe(char *buf, size_t n, const mesh_stream *st, uint64_t seq, const char *what)
{
    char author[MESH_KEY_STR_LEN];
    mesh_hex_encode(st->author, MESH_KEY_BYTES, author);
    snprintf(buf, n, "%s at seq %llu of stream %.16s.../%s", what, (unsigned long long)seq, author,
             st->scope);
}

/* ---- The team roster (store/team.h) ---- */

static void short_key(const uint8_t key[MESH_KEY_BYTES], char out[17])
{
    char hex[2 * MESH_KEY_BYTES + 1];
    mesh_hex_encode(key, MESH_KEY_BYTES, hex);
    memcpy(out, hex, 16);
    out[16] = '\0';
}

/* Checks the roster ops of the authority's verified run[0..n): each must be a valid roster of
 * the team's roster entity, newer than the one before. Returns how many ops pass. */
static size_t authority_check(ingest *g, const mesh_stream *st, item **run, size_t n)
{
    char msg[256];
    uint64_t held = g->roster ? g->roster->version : 0;
    uint8_t entity[MESH_UUID_BYTES];
    mesh_team_roster_entity(g->authority, entity);
    for (size_t i = 0; i < n; i++) {
        const mesh_op *op = &run[i]->op;
        if (!mesh_op_is_roster(op)) continue;
        if (memcmp(op->entity, entity, MESH_UUID_BYTES) != 0) {
            describe(msg, sizeof msg, st, op->seq, "a roster op that is not the team's roster "
                     "entity: rejected");
            reject(g, MESH_ECORRUPT, msg);
            return i;
        }
        if (op->row_version <= held) {
            char what[112];
            snprintf(what, sizeof what, "rolled-back roster: version %u is not newer than the "
                     "held version %llu; rejected", op->row_version, (unsigned long long)held);
            describe(msg, sizeof msg, st, op->seq, what);
            reject(g, MESH_ESTALE, msg);
            return i;
        }
        mesh_team *team = NULL;
        int rc = mesh_team_decode(op->body, op->body_len, g->authority, &team);
        bool same = rc == MESH_OK && team->version == op->row_version;
        mesh_team_free(team);
        if (!same) {
            char what[112];
            snprintf(what, sizeof what, "invalid roster version %u (%s); rejected",
                     op->row_version, rc == MESH_OK ? "its body names another version"
                                                    : mesh_errmsg());
            describe(msg, sizeof msg, st, op->seq, what);
            reject(g, rc == MESH_OK ? MESH_ECORRUPT : rc, msg);
            return i;
        }
        held = op->row_version;
    }
    return n;
}

/* Applies the roster to the verified run[0..n) of stream st: returns how many of its ops the
 * roster admits (the rest are rejected, as ops after a bad one always are). */
static size_t team_check(ingest *g, const mesh_stream *st, item **run, size_t n)
{
    if (memcmp(st->author, g->authority, MESH_KEY_BYTES) == 0)
        return authority_check(g, st, run, n);
    char msg[256], what[112], auth[17];
    short_key(g->authority, auth);
    for (size_t i = 0; i < n; i++)
        if (mesh_op_is_roster(&run[i]->op)) {
            snprintf(what, sizeof what, "forged roster: not signed by the team authority "
                     "%s...; rejected", auth);
            describe(msg, sizeof msg, st, run[i]->op.seq, what);
            reject(g, MESH_EPERM, msg);
            return i;
        }
    if (g->roster == NULL) return n;  /* no roster yet: nothing to judge by */
    uint64_t limit = mesh_team_write_limit(g->roster, st->author, st->scope, st->scope_len);
    if (run[n - 1]->op.seq <= limit) return n;
    size_t i = 0;
    while (run[i]->op.seq <= limit) i++;
    const mesh_team_member *m = mesh_team_find(g->roster, st->author);
    unsigned long long v = (unsigned long long)g->roster->version;
    if (m == NULL)
        snprintf(what, sizeof what, "author not on the team roster (version %llu); rejected", v);
    else if (limit > 0)
        snprintf(what, sizeof what, "written after its author's removal (roster version %llu "
                 "admits seq <= %llu); rejected", v, (unsigned long long)limit);
    else if (m->removed)
        snprintf(what, sizeof what, "author removed from the team (roster version %llu); "
                 "rejected", v);
    else
        snprintf(what, sizeof what, "roster version %llu does not let its author write in "
                 "this scope; rejected", v);
    describe(msg, sizeof msg, st, run[i]->op.seq, what);
    reject(g, MESH_EPERM, msg);
    return i;
}

/* A roster op of the authority was stored: it becomes the roster held. */
static int roster_adopt(ingest *g, const mesh_op *op)
{
    mesh_team *team = NULL;
    int rc = mesh_team_decode(op->body, op->body_len, g->authority, &team);
    if (rc == MESH_OK) rc = mesh_store_roster_install(g->t, team);
    if (rc != MESH_OK) {
        mesh_team_free(team);
        return rc;
    }
    mesh_team_free(g->roster);
    g->roster = team;
    g->roster_changed = true;
    return MESH_OK;
}

/* Stores one verified op in the log and the state; its stream index entry (entity | rowVersion)
 * goes to `ent`, for the caller to index the whole run at once. */
static int apply_one(ingest *g, const item *it, uint8_t ent[MESH_SOPS_ENTRY_BYTES],
                     bool *equivocation)
{
    uint8_t key[MESH_STORE_LOG_KEY_BYTES];
    log_key(key, it->op.entity, it->op.row_version, it->op.author);
    memcpy(ent, key, MESH_SOPS_ENTRY_BYTES);
    MDB_val k = mval(key, MESH_STORE_LOG_KEY_BYTES), v;
    v.mv_size = MESH_SIG_BYTES + it->rec.op_len + mesh_store_rec_overhead(g->t);
    int rc = put_seq(g->t, DB_LOG, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc == MDB_KEYEXIST) {
        /* The author already wrote this (entity, rowVersion) at another place in its streams. */
        *equivocation = true;
        return MESH_OK;
    }
    if (rc != 0) return mesh_lmdb_err(g->t, rc, "storing an op");
    rc = mesh_store_rec_seal(g->t, DB_LOG, &k, it->rec.sig, it->rec.op, it->rec.op_len,
                             v.mv_data);
    if (rc != MESH_OK) return rc;
    if (it->op.hlc > g->hlc_max) g->hlc_max = it->op.hlc;
    return mesh_state_apply(g->t, &it->op, it->fresh_len ? it->fresh : NULL, it->fresh_len);
}

/* Processes the records of one stream, gp[0..n) sorted by seq. */
static int ingest_stream(ingest *g, item **gp, size_t n)
{
#define gi(i) (*gp[i])
    mesh_stream st;
    int rc = mesh_store_stream_get(g->t, gi(0).sid, &st);
    if (rc == MESH_ENOTFOUND) {
        memset(&st, 0, sizeof st);
        st.sid = gi(0).sid;
        memcpy(st.author, gi(0).op.author, MESH_KEY_BYTES);
        memcpy(st.scope, gi(0).op.scope, gi(0).op.scope_len);
        st.scope_len = gi(0).op.scope_len;
        st.scope[st.scope_len] = '\0';
    } else if (rc != MESH_OK) {
        return rc;
    }

    MDB_stat pst;
    mdb_stat(g->t->txn, g->t->s->dbi[DB_PENDING], &pst);
    bool any_pending = pst.ms_entries > 0;

    /* Build the run that continues the tip, from the batch and from pending. */
    item **run = malloc(sizeof *run * (n + 1));
    item **loaded = NULL;
    uint8_t (*ents)[MESH_SOPS_ENTRY_BYTES] = NULL;
    size_t nrun = 0, nloaded = 0, loaded_cap = 0;
    if (run == NULL) return mesh_err(MESH_ENOMEM, "out of memory ingesting ops");
    uint64_t expected = st.seq + 1;
    size_t i = 0;
    rc = MESH_OK;
    bool still_cut = false;
    if (g->cut && g->cut_sid == st.sid) {
        for (; i < n && gi(i).op.seq <= g->cut_next; i++) {
            if (gi(i).op.seq == g->cut_next) {
                g->rep->rejected++;
                g->cut_next++;
            } else {
                g->rep->duplicate++;
            }
        }
        still_cut = i == n;  /* the run may go on in the next slice */
    }
    g->cut = still_cut;
    for (;;) {
        while (i < n && gi(i).op.seq < expected) {
            g->rep->duplicate++;
            i++;
        }
        item *next = NULL;
        if (i < n && gi(i).op.seq == expected) {
            next = gp[i++];
            if (any_pending && (rc = pending_del(g, st.sid, expected)) != MESH_OK) break;
        } else if (any_pending) {
            rc = pending_load(g, st.sid, expected, &next);
            if (rc == MESH_ENOTFOUND) {
                rc = MESH_OK;
                break;
            }
            if (rc != MESH_OK) break;
            if (nloaded == loaded_cap) {
                loaded_cap = loaded_cap ? loaded_cap * 2 : 64;
                item **nl = realloc(loaded, sizeof *nl * loaded_cap);
                if (nl == NULL) {
                    free(next);
                    rc = mesh_err(MESH_ENOMEM, "out of memory ingesting pending ops");
                    break;
                }
                loaded = nl;
            }
            loaded[nloaded++] = next;
            if ((rc = pending_del(g, st.sid, expected)) != MESH_OK) break;
            /* The run may now grow past the batch's size. */
            item **nr = realloc(run, sizeof *run * (n + nloaded + 1));
            if (nr == NULL) {
                rc = mesh_err(MESH_ENOMEM, "out of memory ingesting ops");
                break;
            }
            run = nr;
        } else {
            break;
        }
        run[nrun++] = next;
        expected++;
    }
    if (rc != MESH_OK) goto out;

    /* Everything beyond the gap waits, unless the roster will never admit it. */
    uint64_t limit = UINT64_MAX;
    if (g->roster != NULL && memcmp(st.author, g->authority, MESH_KEY_BYTES) != 0)
        limit = mesh_team_write_limit(g->roster, st.author, st.scope, st.scope_len);
    for (; i < n; i++) {
        if (i > 0 && gi(i).op.seq == gi(i - 1).op.seq) {
            g->rep->duplicate++;
            continue;
        }
        if (gi(i).op.seq > limit) {
            char why[256];
            describe(why, sizeof why, &st, gi(i).op.seq, "beyond what the team roster admits "
                     "for its author; rejected");
            g->rep->rejected++;
            reject(g, MESH_EPERM, why);
            continue;
        }
        if ((rc = pending_park(g, gp[i])) != MESH_OK) goto out;
    }

    /* Verify the chain link by link, then the signature at its end. */
    size_t valid = 0;
    char msg[256];
    const uint8_t *prev = st.tip;
    for (; valid < nrun; valid++) {
        const item *it = run[valid];
        if (!same_stream(&st, &it->op)) {
            describe(msg, sizeof msg, &st, it->op.seq, "stream id collision");
            reject(g, MESH_ECORRUPT, msg);
            break;
        }
        if (memcmp(it->op.prev, prev, MESH_HASH_BYTES) != 0) {
            describe(msg, sizeof msg, &st, it->op.seq, "broken hash chain");
            reject(g, MESH_ECHAIN, msg);
            break;
        }
        prev = it->hash;
    }
    if (valid > 0 && verify_sig(run[valid - 1]) != MESH_OK) {
        /* Rare: find the longest prefix that ends in a good signature. */
        while (valid > 0 && verify_sig(run[valid - 1]) != MESH_OK) valid--;
        describe(msg, sizeof msg, &st, run[valid]->op.seq, "bad signature");
        reject(g, MESH_ESIG, msg);
    }
    if (g->team_on && valid > 0) valid = team_check(g, &st, run, valid);
    bool from_authority = g->team_on && memcmp(st.author, g->authority, MESH_KEY_BYTES) == 0;

    size_t applied = 0;
    ents = malloc(sizeof *ents * (valid ? valid : 1));
    if (ents == NULL) {
        rc = mesh_err(MESH_ENOMEM, "out of memory ingesting ops");
        goto out;
    }
    for (; applied < valid; applied++) {
        bool equivocation = false;
        rc = apply_one(g, run[applied], ents[applied], &equivocation);
        if (rc != MESH_OK) goto out;
        if (equivocation) {
            describe(msg, sizeof msg, &st, run[applied]->op.seq,
                     "author wrote the same entity rowVersion twice");
            reject(g, MESH_ECORRUPT, msg);
            break;
        }
        if (from_authority && mesh_op_is_roster(&run[applied]->op) &&
            (rc = roster_adopt(g, &run[applied]->op)) != MESH_OK)
            goto out;
        g->rep->applied++;
    }
    /* Ops after the first bad one are not stored: they depend on it. */
    g->rep->rejected += nrun - applied;
    if (applied < nrun) {
        g->cut = true;
        g->cut_sid = st.sid;
        g->cut_next = run[nrun - 1]->op.seq + 1;
    }
    if (applied > 0 && (rc = mesh_sops_append(g->t, st.sid, st.seq + 1, ents, applied)) != MESH_OK)
        goto out;
    if (applied > 0) {
        st.seq = run[applied - 1]->op.seq;
        memcpy(st.tip, run[applied - 1]->hash, MESH_HASH_BYTES);
        rc = mesh_store_stream_put(g->t, &st);
    }
out:
    free(ents);
    for (size_t j = 0; j < nloaded; j++) free(loaded[j]);
    free(loaded);
    free(run);
    return rc;
#undef gi
}

/* Hands a large batch to the store's helper thread, starting it if need be; without it (a
 * small batch, or no thread to be had) this thread does all the preparing, with the same
 * result. */
static void prep_start(prep *p)
{
    struct mesh_ingest_pool *pool = p->pool;
    p->threaded = false;
    if (p->n < MESH_INGEST_PARALLEL_MIN || pool == NULL) return;
    if (!pool->running) {
        if (pthread_create(&pool->thread, NULL, helper_main, pool) != 0) return;
        pool->running = true;
    }
    pthread_mutex_lock(&pool->mu);
    MESH_ASSERT(pool->job == NULL);
    p->threaded = true;
    pool->job = p;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

/* Stops the helper's work on this batch and waits until it has let go of it. */
static void prep_stop(prep *p)
{
    if (!p->threaded) return;
    struct mesh_ingest_pool *pool = p->pool;
    pthread_mutex_lock(&pool->mu);
    p->stop = true;
    pthread_cond_broadcast(&pool->cv);
    while (pool->job == p) pthread_cond_wait(&pool->cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

/* Routes each record to its stream by its leading fields (rejecting those that cannot be read),
 * then sorts them into stream order and lets the helper go on to slices. */
static void route(ingest *g, prep *p)
{
    if (p->threaded) {
        peek_share(p);
        pthread_mutex_lock(&p->pool->mu);
        while (p->peeked < p->n) pthread_cond_wait(&p->pool->cv, &p->pool->mu);
        pthread_mutex_unlock(&p->pool->mu);
    } else {
        peek_range(p, 0, p->n);
    }
    for (size_t i = 0; i < p->n; i++) {
        item *it = &p->items[i];
        if (it->bad == MESH_OK) {
            p->order[p->m++] = it;
            continue;
        }
        g->rep->rejected++;
        char msg[256] = "";
        if (g->rep->first_error == 0) {
            /* The first rejection's message: peek it again, on this thread, to have it. */
            mesh_op o;
            (void)mesh_op_peek(it->rec.op, it->rec.op_len, &o);
            snprintf(msg, sizeof msg, "op %zu of the batch is malformed: %s", i, mesh_errmsg());
        }
        reject(g, it->bad, msg);
    }
    /* Peers send each stream oldest first, so a batch is often in order already. */
    bool sorted = true;
    for (size_t i = 1; i < p->m && sorted; i++)
        sorted = item_cmp(&p->order[i - 1], &p->order[i]) < 0;
    if (!sorted) qsort(p->order, p->m, sizeof *p->order, item_cmp);
    p->nslices = (p->m + p->slice - 1) / p->slice;
    if (p->threaded) {
        pthread_mutex_lock(&p->pool->mu);
        p->sorted = true;
        pthread_cond_broadcast(&p->pool->cv);
        pthread_mutex_unlock(&p->pool->mu);
    }
}

/* Returns once slice `sl` is prepared. While the helper is still preparing it, this thread
 * prepares the next slice nobody has taken rather than wait: both threads keep preparing, and
 * this one stores whenever the slice next in order is ready. */
static void slice_take(prep *p, size_t sl)
{
    if (!p->threaded) {
        prep_slice(p, sl);
        return;
    }
    struct mesh_ingest_pool *pool = p->pool;
    pthread_mutex_lock(&pool->mu);
    while (!p->done[sl]) {
        size_t next = p->claimed;
        if (next >= p->nslices) {
            pthread_cond_wait(&pool->cv, &pool->mu);
            continue;
        }
        /* Slices are taken in order and every one before `sl` is stored: next >= sl. */
        MESH_ASSERT(next >= sl);
        p->claimed++;
        pthread_mutex_unlock(&pool->mu);
        prep_slice(p, next);
        pthread_mutex_lock(&pool->mu);
        p->done[next] = 1;
    }
    pthread_mutex_unlock(&pool->mu);
}

int mesh_store_ingest(mesh_txn *t, const mesh_oprec *recs, size_t n, mesh_ingest_mode mode,
                      mesh_ingest_report *rep)
{
    if (n > MESH_INGEST_BATCH_MAX)
        return mesh_err(MESH_ELIMIT, "%zu ops in one ingest; the limit is %u", n,
                        MESH_INGEST_BATCH_MAX);
    ingest g = {.t = t, .mode = mode, .rep = rep};
    int trc = mesh_store_team_get(t, g.authority);
    if (trc == MESH_OK) {
        g.team_on = true;
        trc = mesh_store_roster_get(t, &g.roster);
    }
    if (trc != MESH_OK && trc != MESH_ENOTFOUND) return trc;
    struct mesh_ingest_pool *pool = pool_get(t->s);  /* NULL (no memory): do without */
    item *items = NULL, **order = NULL;
    bool owned;
    int rc = scratch_get(pool, n, &items, &order, &owned);
    if (rc != MESH_OK) {
        mesh_team_free(g.roster);
        return rc;
    }
    /* Slices of an eighth of the batch, within bounds: enough of them to overlap the two
     * threads' work, few enough that the per-slice signature checks stay cheap. */
    size_t slice = n / 8 < MESH_INGEST_SLICE_MIN   ? MESH_INGEST_SLICE_MIN
                   : n / 8 > MESH_INGEST_SLICE_MAX ? MESH_INGEST_SLICE_MAX
                                                   : n / 8;
    size_t nslices = (n + slice - 1) / slice;
    prep p = {.items = items, .recs = recs, .n = n, .team_on = g.team_on,
              .signed_here = mode == MESH_INGEST_LOCAL,
              .order = order, .nslices = nslices, .slice = slice, .pool = pool,
              .done = calloc(nslices ? nslices : 1, 1),
              .first_bad = malloc(sizeof *p.first_bad * (nslices ? nslices : 1)),
              .msg = malloc(sizeof *p.msg * (nslices ? nslices : 1))};
    memcpy(p.authority, g.authority, MESH_KEY_BYTES);
    item **good = malloc(sizeof *good * slice);
    if (p.first_bad == NULL || p.msg == NULL || p.done == NULL || good == NULL) {
        if (owned) {
            free(items);
            free(order);
        }
        free(p.first_bad);
        free(p.msg);
        free(p.done);
        free(good);
        mesh_team_free(g.roster);
        return mesh_err(MESH_ENOMEM, "out of memory ingesting %zu ops", n);
    }

    prep_start(&p);
    route(&g, &p);
    for (size_t sl = 0; sl < p.nslices && rc == MESH_OK; sl++) {
        slice_take(&p, sl);
        size_t from = sl * slice, ng = 0;
        size_t to = from + slice < p.m ? from + slice : p.m;
        for (size_t k = from; k < to; k++) {
            if (order[k]->bad == MESH_OK) {
                good[ng++] = order[k];
                continue;
            }
            g.rep->rejected++;
            reject(&g, order[k]->bad, k == p.first_bad[sl] ? p.msg[sl] : "");
        }
        for (size_t i = 0; i < ng && rc == MESH_OK;) {
            size_t j = i + 1;
            while (j < ng && good[j]->sid == good[i]->sid) j++;
            rc = ingest_stream(&g, good + i, j - i);
            i = j;
        }
    }
    prep_stop(&p);
    free(good);
    if (owned) {
        free(order);
        free(items);
    }
    free(p.first_bad);
    free(p.msg);
    free(p.done);
    if (rc == MESH_OK && g.roster_changed) rc = mesh_store_team_enforce(t, g.roster, NULL);
    mesh_team_free(g.roster);
    /* A node's own ops move its clock through mesh_store_append, not through hlc_seen. */
    if (rc == MESH_OK && g.hlc_max && mode != MESH_INGEST_LOCAL) {
        uint64_t seen;
        rc = mesh_store_meta_get_u64(t, "hlc_seen", &seen);
        if (rc == MESH_OK && g.hlc_max > seen) rc = mesh_store_meta_put_u64(t, "hlc_seen", g.hlc_max);
    }
    if (rc == MESH_OK && mode != MESH_INGEST_PARTIAL && g.first_err != MESH_OK)
        return mesh_err(g.first_err, "%s", rep->first_error_msg);
    return rc;
}

int mesh_store_append_point(mesh_txn *t, uint64_t sid, uint64_t now_ms, uint64_t *seq,
                            uint8_t tip[MESH_HASH_BYTES], uint64_t *clock)
{
    mesh_stream st;
    int rc = mesh_store_stream_get(t, sid, &st);
    if (rc == MESH_ENOTFOUND) {
        st.seq = 0;
        memset(st.tip, 0, sizeof st.tip);
    } else if (rc != MESH_OK) {
        return rc;
    }
    uint64_t last, seen;
    if ((rc = mesh_store_meta_get_u64(t, "hlc", &last)) != MESH_OK ||
        (rc = mesh_store_meta_get_u64(t, "hlc_seen", &seen)) != MESH_OK)
        return rc;
    *clock = mesh_hlc_observe(last, seen, now_ms);
    *seq = st.seq;
    memcpy(tip, st.tip, MESH_HASH_BYTES);
    return MESH_OK;
}

int mesh_store_clock_set(mesh_txn *t, uint64_t hlc)
{
    return mesh_store_meta_put_u64(t, "hlc", hlc);
}

int mesh_store_append(mesh_txn *t, const mesh_identity *id, const char *scope, uint64_t now_ms,
                      mesh_op *op, uint8_t hash[MESH_HASH_BYTES])
{
    size_t sl = strlen(scope);
    uint64_t last_seq, clock;
    int rc = mesh_store_append_point(t, mesh_stream_id(id->pk, scope, sl), now_ms, &last_seq,
                                     op->prev, &clock);
    if (rc != MESH_OK) return rc;
    op->hlc = mesh_hlc_tick(clock, now_ms);
    if ((rc = mesh_store_clock_set(t, op->hlc)) != MESH_OK) return rc;
    memcpy(op->author, id->pk, MESH_KEY_BYTES);
    op->scope = scope;
    op->scope_len = sl;
    op->seq = last_seq + 1;

    mesh_buf enc;
    mesh_buf_init(&enc, MESH_OP_BYTES_MAX);
    rc = mesh_op_encode(op, &enc);
    if (rc == MESH_OK) {
        uint8_t h[MESH_HASH_BYTES], sig[MESH_SIGNATURE_BYTES];
        mesh_op_hash(enc.data, enc.len, h);
        mesh_sign(id, MESH_DOMAIN_OP, h, sizeof h, sig);
        mesh_oprec rec = {.op = enc.data, .op_len = enc.len, .sig = sig};
        mesh_ingest_report rep = {0};
        rc = mesh_store_ingest(t, &rec, 1, MESH_INGEST_LOCAL, &rep);
        if (rc == MESH_OK && rep.applied != 1)
            rc = mesh_err(MESH_EINTERNAL, "a new op of this node was not stored: %s",
                          rep.first_error_msg[0] ? rep.first_error_msg : "a duplicate");
        if (rc == MESH_OK && hash != NULL) memcpy(hash, h, MESH_HASH_BYTES);
    }
    mesh_buf_fini(&enc);
    return rc;
}
