/*
 * merge_property_test.c - the merge is deterministic and order-independent: one set of ops with
 * concurrent edits, conflicts, resolutions, deletes and parent links, ingested in 1,000 random
 * orders and batchings (with duplicates), always gives the same materialized state, conflicts
 * and digest; and the incremental merge always equals recomputing from the log.
 */
#include <criterion/criterion.h>

#include "store/store.h"
#include "testlib.h"

#define AUTHORS 3
#define STEPS 500
#define TRIALS 1000

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r)
{
    /* splitmix64: small, seedable, good enough to shuffle. */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t below(rng *r, uint32_t n) { return (uint32_t)(next(r) % n); }

/* ---- Generating a history ---- */

typedef struct gop {
    uint32_t rv;
    int author;
    uint8_t kind;
    bool referenced;
} gop;

typedef struct gentity {
    uint8_t id[16];
    const char *type;
    int parent;        /* index of the parent entity, or -1 */
    gop ops[64];
    int nops;
    uint32_t max_rv_by[AUTHORS];
} gentity;

static gentity ents[200];
static int nents;
static tl_rec recs[STEPS * 2];
static size_t nrecs;
static tl_stream streams[AUTHORS][2];

static mesh_opref ref_of(const gentity *e, int i)
{
    mesh_opref r = {.row_version = e->ops[i].rv};
    memcpy(r.author, streams[e->ops[i].author][0].id.pk, 32);
    return r;
}

static void emit(rng *r, int a, gentity *e, uint8_t kind, int base, const int *merged, int nmerged)
{
    uint32_t rv = 1;
    if (base >= 0) {
        rv = e->ops[base].rv + 1;
        for (int i = 0; i < nmerged; i++)
            if (e->ops[merged[i]].rv + 1 > rv) rv = e->ops[merged[i]].rv + 1;
    }
    if (rv <= e->max_rv_by[a]) rv = e->max_rv_by[a] + 1; /* an author never reuses a rowVersion */
    char json[128];
    snprintf(json, sizeof json, "{\"step\":%zu,\"by\":%d,\"w\":\"%c\"}", nrecs, a,
             'a' + (int)below(r, 26));
    mesh_buf body = tl_body(json);
    mesh_op op = {.kind = kind, .type = e->type, .type_len = strlen(e->type), .row_version = rv,
                  .body = body.data, .body_len = body.len};
    memcpy(op.entity, e->id, 16);
    if (base >= 0) {
        op.has_base = true;
        op.base = ref_of(e, base);
        e->ops[base].referenced = true;
    }
    for (int i = 0; i < nmerged; i++) {
        op.merged[op.merged_count++] = ref_of(e, merged[i]);
        e->ops[merged[i]].referenced = true;
    }
    if (e->parent >= 0) {
        op.parents_count = 1;
        memcpy(op.parents[0], ents[e->parent].id, 16);
    }
    /* Authors write under two scopes: several streams per author. */
    tl_stream *s = &streams[a][below(r, 2)];
    /* Each op's hlc: a shared clock with jitter, so hlc orders are mixed across authors. */
    op.hlc = ((uint64_t)(1700000000000ull + nrecs * 10 + below(r, 30)) << 16) | below(r, 4);
    recs[nrecs++] = tl_stream_add(s, &op);
    e->ops[e->nops++] = (gop){.rv = rv, .author = a, .kind = kind};
    e->max_rv_by[a] = rv;
    mesh_buf_fini(&body);
}

static bool deleted(const gentity *e)
{
    for (int i = 0; i < e->nops; i++)
        if (e->ops[i].kind == MESH_OP_DELETE) return true;
    return false;
}

static void generate(void)
{
    rng r = {.s = 42};
    for (int a = 0; a < AUTHORS; a++) {
        tl_stream_init(&streams[a][0], (uint8_t)(50 + a), "MZ/NAMPULA/L1");
        tl_stream_init(&streams[a][1], (uint8_t)(50 + a), "MZ/NAMPULA/L2");
    }
    for (int step = 0; step < STEPS; step++) {
        int a = (int)below(&r, AUTHORS);
        uint32_t act = below(&r, 100);
        if (nents < 4 || (act < 20 && nents < 200)) {
            gentity *e = &ents[nents];
            tl_entity_id(e->id, 5000 + (uint64_t)nents);
            e->parent = -1;
            e->type = "household";
            if (nents > 0 && below(&r, 2)) {
                e->type = "household_member";
                e->parent = (int)below(&r, (uint32_t)nents);
            }
            nents++;
            emit(&r, a, e, MESH_OP_CREATE, -1, NULL, 0);
            continue;
        }
        gentity *e = &ents[below(&r, (uint32_t)nents)];
        if (e->nops >= 60) continue;
        int heads[64], nh = 0, latest = 0;
        for (int i = 0; i < e->nops; i++) {
            if (!e->ops[i].referenced) heads[nh++] = i;
            if (e->ops[i].rv > e->ops[latest].rv) latest = i;
        }
        if (act < 30 && nh >= 2) {
            emit(&r, a, e, MESH_OP_UPDATE, heads[0], heads + 1, nh - 1); /* resolution */
        } else if (act < 35 && !deleted(e)) {
            emit(&r, a, e, MESH_OP_DELETE, latest, NULL, 0);
        } else {
            /* An update from a possibly stale view: concurrent edits make conflicts. */
            int base = below(&r, 3) == 0 ? (int)below(&r, (uint32_t)e->nops) : latest;
            emit(&r, a, e, MESH_OP_UPDATE, base, NULL, 0);
        }
    }
}

/* ---- Ingesting in random orders ---- */

typedef struct fp_ctx {
    mesh_txn *t;
    mesh_hash_state h;
    bool check_recompute;
    int mismatches;
} fp_ctx;

/* Field by field: the structs have padding. */
static void hash_head(mesh_hash_state *h, const mesh_head *x)
{
    mesh_hash_update(h, &x->ref.row_version, sizeof x->ref.row_version);
    mesh_hash_update(h, x->ref.author, 32);
    mesh_hash_update(h, &x->hlc, sizeof x->hlc);
}

static void hash_state(mesh_hash_state *h, const mesh_state *s)
{
    mesh_hash_update(h, s->entity, 16);
    mesh_hash_update(h, s->type, strlen(s->type) + 1);
    mesh_hash_update(h, &s->flags, sizeof s->flags);
    mesh_hash_update(h, &s->max_rv, sizeof s->max_rv);
    hash_head(h, &s->winner);
    mesh_hash_update(h, &s->nparents, sizeof s->nparents);
    mesh_hash_update(h, s->parents, 16 * s->nparents);
    mesh_hash_update(h, &s->nheads, sizeof s->nheads);
    for (uint32_t i = 0; i < s->nheads; i++) hash_head(h, &s->heads[i]);
}

static int fp_state(const mesh_state *s, void *vctx)
{
    fp_ctx *c = vctx;
    hash_state(&c->h, s);
    bool del;
    cr_assert_eq(mesh_store_effectively_deleted(c->t, s, &del), MESH_OK);
    mesh_hash_update(&c->h, &del, sizeof del);
    if (c->check_recompute) {
        mesh_state r;
        cr_assert_eq(mesh_store_recompute(c->t, s->entity, &r), MESH_OK);
        mesh_hash_state a, b;
        uint8_t da[32], db[32];
        mesh_hash_init(&a);
        mesh_hash_init(&b);
        hash_state(&a, s);
        hash_state(&b, &r);
        mesh_hash_final(&a, da);
        mesh_hash_final(&b, db);
        if (memcmp(da, db, 32) != 0) c->mismatches++;
    }
    return MESH_OK;
}

static int fp_conflict(const mesh_state *s, void *vctx)
{
    fp_ctx *c = vctx;
    mesh_hash_update(&c->h, s->entity, 16);
    return MESH_OK;
}

typedef struct fingerprint {
    mesh_store_counts counts;
    uint8_t states[32];
    int mismatches;
} fingerprint;

typedef struct fp_args {
    fingerprint *out;
    bool check_recompute;
} fp_args;

static int fingerprint_fn(mesh_txn *t, void *vctx)
{
    fp_args *a = vctx;
    cr_assert_eq(mesh_store_counts_get(t, &a->out->counts), MESH_OK);
    fp_ctx c = {.t = t, .check_recompute = a->check_recompute};
    mesh_hash_init(&c.h);
    cr_assert_eq(mesh_store_states(t, NULL, fp_state, &c), MESH_OK);
    cr_assert_eq(mesh_store_conflicts(t, fp_conflict, &c), MESH_OK);
    mesh_hash_final(&c.h, a->out->states);
    a->out->mismatches = c.mismatches;
    return MESH_OK;
}

static fingerprint run_trial(const char *dir, rng *r, bool check_recompute)
{
    mesh_store *st;
    mesh_store_opts o = {.create = true, .no_sync = true};
    cr_assert_eq(mesh_store_open(dir, &o, &st), MESH_OK, "%s", mesh_errmsg());
    /* A random order with ~10% of the records repeated. */
    size_t n = nrecs + nrecs / 10;
    mesh_oprec *order = malloc(sizeof *order * n);
    for (size_t i = 0; i < n; i++) order[i] = tl_rec_view(&recs[i < nrecs ? i : below(r, (uint32_t)nrecs)]);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = below(r, (uint32_t)(i + 1));
        mesh_oprec tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (size_t i = 0; i < n;) {
        size_t b = 1 + below(r, below(r, 4) == 0 ? 200 : 20);
        if (b > n - i) b = n - i;
        mesh_ingest_report rep;
        cr_assert_eq(tl_ingest(st, order + i, b, MESH_INGEST_PARTIAL, &rep), MESH_OK, "%s",
                     mesh_errmsg());
        cr_assert_eq(rep.rejected, 0, "%s", rep.first_error_msg);
        i += b;
    }
    fingerprint fp;
    fp_args a = {.out = &fp, .check_recompute = check_recompute};
    cr_assert_eq(mesh_store_read(st, fingerprint_fn, &a), MESH_OK);
    mesh_store_close(st);
    free(order);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/data.mdb", dir);
    remove(cmd);
    snprintf(cmd, sizeof cmd, "%s/lock.mdb", dir);
    remove(cmd);
    return fp;
}

Test(merge_property, same_ops_any_order_same_state, .timeout = 600)
{
    cr_assert_eq(mesh_crypto_init(), MESH_OK);
    generate();
    char *dir = tl_tmpdir("prop");
    rng r = {.s = 7};
    fingerprint ref = run_trial(dir, &r, true);
    cr_assert_eq(ref.counts.ops, nrecs);
    cr_assert_eq(ref.counts.pending, 0);
    cr_assert_gt(ref.counts.conflicts, 0, "the history must contain open conflicts");
    cr_assert_gt(ref.counts.deleted, 0, "the history must contain deletes");
    cr_assert_eq(ref.mismatches, 0, "incremental merge differs from recompute");
    for (int t = 1; t < TRIALS; t++) {
        fingerprint fp = run_trial(dir, &r, t % 50 == 0);
        cr_assert_eq(fp.counts.ops, ref.counts.ops, "trial %d", t);
        cr_assert_eq(fp.counts.entities, ref.counts.entities, "trial %d", t);
        cr_assert_eq(fp.counts.deleted, ref.counts.deleted, "trial %d", t);
        cr_assert_eq(fp.counts.conflicts, ref.counts.conflicts, "trial %d", t);
        cr_assert_eq(fp.counts.pending, 0, "trial %d", t);
        cr_assert_eq(memcmp(fp.counts.digest, ref.counts.digest, 32), 0, "digest, trial %d", t);
        cr_assert_eq(memcmp(fp.states, ref.states, 32), 0, "states, trial %d", t);
        cr_assert_eq(fp.mismatches, 0, "incremental merge differs from recompute, trial %d", t);
    }
    printf("merge_property: %zu ops, %d entities, %llu conflicts, %llu deleted: %d orders agree\n",
           nrecs, nents, (unsigned long long)ref.counts.conflicts,
           (unsigned long long)ref.counts.deleted, TRIALS);
    tl_rmtree(dir);
    for (size_t i = 0; i < nrecs; i++) tl_rec_free(&recs[i]);
}
