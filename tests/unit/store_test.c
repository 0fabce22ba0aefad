/*
 * store_test.c - the LMDB op-log: opening, ingest (chains, signatures, gaps, idempotence), the
 * merge rule (winner, conflicts, final deletes, deleted ancestors) and map growth.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "store/store.h"
#include "store/store_int.h"
#include "testlib.h"

static char *dir;
static mesh_store *st;

static void open_store(uint64_t initial, uint64_t max)
{
    mesh_store_opts o = {.create = true, .no_sync = true, .map_bytes_initial = initial,
                         .map_bytes_max = max};
    cr_assert_eq(mesh_store_open(dir, &o, &st), MESH_OK, "%s", mesh_errmsg());
}

static void setup(void)
{
    cr_assert_eq(mesh_crypto_init(), MESH_OK);
    dir = tl_tmpdir("store");
    open_store(0, 0);
}

static void teardown(void)
{
    mesh_store_close(st);
    st = NULL;
    tl_rmtree(dir);
}

static mesh_ingest_report ingest(tl_rec *recs, size_t n, mesh_ingest_mode mode, int expect_rc)
{
    mesh_oprec *v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = tl_rec_view(&recs[i]);
    mesh_ingest_report rep;
    int rc = tl_ingest(st, v, n, mode, &rep);
    cr_assert_eq(rc, expect_rc, "ingest returned %d (%s), wanted %d", rc, mesh_errmsg(), expect_rc);
    free(v);
    return rep;
}

static int counts_fn(mesh_txn *t, void *ctx) { return mesh_store_counts_get(t, ctx); }

static mesh_store_counts counts(void)
{
    mesh_store_counts c;
    cr_assert_eq(mesh_store_read(st, counts_fn, &c), MESH_OK);
    return c;
}

typedef struct state_q {
    uint8_t entity[16];
    mesh_state s;
    bool deleted;
    int rc;
} state_q;

static int state_fn(mesh_txn *t, void *ctx)
{
    state_q *q = ctx;
    q->rc = mesh_store_state_get(t, q->entity, &q->s);
    if (q->rc == MESH_OK) mesh_store_effectively_deleted(t, &q->s, &q->deleted);
    return MESH_OK;
}

static state_q state_of(const uint8_t entity[16])
{
    state_q q = {0};
    memcpy(q.entity, entity, 16);
    cr_assert_eq(mesh_store_read(st, state_fn, &q), MESH_OK);
    return q;
}

/* n household creates in one stream. */
static tl_rec *make_chain(tl_stream *s, size_t n, uint64_t first_entity)
{
    tl_rec *r = calloc(n, sizeof *r);
    mesh_buf body = tl_body("{\"name\":\"x\",\"memberCount\":3}");
    for (size_t i = 0; i < n; i++) {
        mesh_op op = {.kind = MESH_OP_CREATE, .type = "household", .type_len = 9,
                      .row_version = 1, .body = body.data, .body_len = body.len};
        tl_entity_id(op.entity, first_entity + i);
        r[i] = tl_stream_add(s, &op);
    }
    mesh_buf_fini(&body);
    return r;
}

static void free_chain(tl_rec *r, size_t n)
{
    for (size_t i = 0; i < n; i++) tl_rec_free(&r[i]);
    free(r);
}

TestSuite(store, .init = setup, .fini = teardown);

Test(store, open_rejects_what_is_not_a_store)
{
    char *d = tl_tmpdir("notstore");
    mesh_store *s2;
    cr_assert_eq(mesh_store_open(d, NULL, &s2), MESH_ENOTSTORE);
    cr_assert(strstr(mesh_errmsg(), d) != NULL, "message names the directory: %s", mesh_errmsg());
    char p[512];
    snprintf(p, sizeof p, "%s/data.mdb", d);
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    cr_assert(write(fd, "this is not an lmdb file, just some text.......", 48) == 48);
    close(fd);
    cr_assert_eq(mesh_store_open(d, NULL, &s2), MESH_ENOTSTORE, "%s", mesh_errmsg());
    tl_rmtree(d);
    mesh_store_opts o = {.create = true};
    cr_assert_eq(mesh_store_open(dir, &o, &s2), MESH_EEXIST);
}

Test(store, ingest_is_idempotent)
{
    tl_stream s;
    tl_stream_init(&s, 1, "MZ/NAMPULA");
    tl_rec *r = make_chain(&s, 10, 100);
    mesh_ingest_report rep = ingest(r, 10, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 10);
    mesh_store_counts a = counts();
    cr_assert_eq(a.ops, 10);
    cr_assert_eq(a.entities, 10);
    cr_assert_eq(a.streams, 1);
    rep = ingest(r, 10, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 0);
    cr_assert_eq(rep.duplicate, 10);
    mesh_store_counts b = counts();
    cr_assert_eq(memcmp(a.digest, b.digest, 32), 0);
    cr_assert_eq(b.ops, 10);
    free_chain(r, 10);
}

Test(store, gaps_wait_in_pending_until_filled)
{
    tl_stream s;
    tl_stream_init(&s, 2, "MZ");
    tl_rec *r = make_chain(&s, 10, 200);
    mesh_ingest_report rep = ingest(r + 4, 6, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 0);
    cr_assert_eq(rep.pending, 6);
    cr_assert_eq(counts().ops, 0);
    cr_assert_eq(counts().pending, 6);
    rep = ingest(r, 4, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 10, "the gap filled and the waiting ops followed");
    mesh_store_counts c = counts();
    cr_assert_eq(c.ops, 10);
    cr_assert_eq(c.pending, 0);
    free_chain(r, 10);
}

Test(store, bad_signature_at_run_end_is_rejected)
{
    tl_stream s;
    tl_stream_init(&s, 3, "MZ");
    tl_rec *r = make_chain(&s, 5, 300);
    r[4].bytes[10] ^= 1; /* signature of the last op */
    mesh_ingest_report rep = ingest(r, 5, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 4);
    cr_assert_eq(rep.rejected, 1);
    cr_assert_eq(rep.first_error, MESH_ESIG);
    cr_assert(strstr(rep.first_error_msg, "bad signature") != NULL, "%s", rep.first_error_msg);
    free_chain(r, 5);
}

Test(store, tampered_op_stops_its_stream)
{
    tl_stream s;
    tl_stream_init(&s, 4, "MZ");
    tl_rec *r = make_chain(&s, 6, 400);
    /* Change op 3's body without re-signing: its hash changes, op 4's link breaks, and op 3's
     * signature no longer matches. Nothing from op 3 on may be stored. */
    uint8_t *op3 = r[2].bytes + MESH_SIGNATURE_BYTES;
    uint8_t *x = memmem(op3, r[2].op_len, "\xa1x", 2);
    cr_assert(x != NULL);
    x[1] = 'y'; /* still a canonical op, but not the one the author signed */
    mesh_ingest_report rep = ingest(r, 6, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 2, "applied %llu", (unsigned long long)rep.applied);
    cr_assert_eq(rep.rejected, 4);
    cr_assert_eq(counts().ops, 2);
    free_chain(r, 6);
}

Test(store, broken_chain_is_rejected_and_atomic_mode_fails_whole)
{
    tl_stream s;
    tl_stream_init(&s, 5, "MZ");
    tl_rec *r = make_chain(&s, 3, 500);
    /* A fork: a second op claiming seq 2 with a wrong predecessor, signed by the author. */
    tl_stream fork = s;
    fork.seq = 1;
    memset(fork.tip, 0xab, 32);
    mesh_buf body = tl_body("{\"forged\":true}");
    mesh_op op = {.kind = MESH_OP_CREATE, .type = "household", .type_len = 9, .row_version = 1,
                  .body = body.data, .body_len = body.len};
    tl_entity_id(op.entity, 999);
    tl_rec bad[2] = {r[0], tl_stream_add(&fork, &op)};
    mesh_ingest_report rep = ingest(bad, 2, MESH_INGEST_ATOMIC, MESH_ECHAIN);
    cr_assert_eq(counts().ops, 0, "atomic ingest stored nothing");
    rep = ingest(bad, 2, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 1);
    cr_assert_eq(rep.first_error, MESH_ECHAIN);
    tl_rec_free(&bad[1]);
    mesh_buf_fini(&body);
    free_chain(r, 3);
}

/* Builds an op on entity e in stream s. */
static tl_rec op_on(tl_stream *s, int kind, const uint8_t e[16], uint32_t rv, const mesh_opref *base,
                    const char *type, const char *json, const uint8_t (*parent)[16])
{
    mesh_buf body = tl_body(json);
    mesh_op op = {.kind = (uint8_t)kind, .type = type, .type_len = strlen(type),
                  .row_version = rv, .body = body.data, .body_len = body.len};
    memcpy(op.entity, e, 16);
    if (base) {
        op.has_base = true;
        op.base = *base;
    }
    if (parent) {
        op.parents_count = 1;
        memcpy(op.parents[0], *parent, 16);
    }
    tl_rec r = tl_stream_add(s, &op);
    mesh_buf_fini(&body);
    return r;
}

Test(store, concurrent_updates_conflict_and_resolve)
{
    tl_stream a, b;
    tl_stream_init(&a, 6, "MZ");
    tl_stream_init(&b, 7, "MZ");
    uint8_t e[16];
    tl_entity_id(e, 600);
    tl_rec c1 = op_on(&a, MESH_OP_CREATE, e, 1, NULL, "household", "{\"n\":1}", NULL);
    mesh_opref base = {.row_version = 1};
    memcpy(base.author, a.id.pk, 32);
    tl_rec ua = op_on(&a, MESH_OP_UPDATE, e, 2, &base, "household", "{\"n\":2}", NULL);
    tl_rec ub = op_on(&b, MESH_OP_UPDATE, e, 2, &base, "household", "{\"n\":3}", NULL);
    tl_rec all[3] = {c1, ua, ub};
    ingest(all, 3, MESH_INGEST_PARTIAL, MESH_OK);
    state_q q = state_of(e);
    cr_assert_eq(q.rc, MESH_OK);
    cr_assert_eq(q.s.nheads, 2);
    cr_assert(mesh_state_conflict(&q.s));
    cr_assert_eq(counts().conflicts, 1);
    /* The winner is the larger (rv, hlc, author): b wrote later (its hlc counter is equal, so
     * compare hlc then author) - assert it is one of the heads and deterministic by rule. */
    cr_assert_eq(q.s.winner.ref.row_version, 2);

    /* A resolution merges both heads. */
    mesh_buf body = tl_body("{\"n\":4}");
    mesh_op res = {.kind = MESH_OP_UPDATE, .type = "household", .type_len = 9, .row_version = 3,
                   .has_base = true, .body = body.data, .body_len = body.len, .merged_count = 1};
    memcpy(res.entity, e, 16);
    res.base.row_version = 2;
    memcpy(res.base.author, a.id.pk, 32);
    res.merged[0].row_version = 2;
    memcpy(res.merged[0].author, b.id.pk, 32);
    tl_rec rr = tl_stream_add(&a, &res);
    ingest(&rr, 1, MESH_INGEST_PARTIAL, MESH_OK);
    q = state_of(e);
    cr_assert_eq(q.s.nheads, 1);
    cr_assert(!mesh_state_conflict(&q.s));
    cr_assert_eq(q.s.winner.ref.row_version, 3);
    cr_assert_eq(counts().conflicts, 0);
    mesh_buf_fini(&body);
    tl_rec_free(&c1);
    tl_rec_free(&ua);
    tl_rec_free(&ub);
    tl_rec_free(&rr);
}

Test(store, deletes_are_final_and_hide_children)
{
    tl_stream a, b;
    tl_stream_init(&a, 8, "MZ");
    tl_stream_init(&b, 9, "MZ");
    uint8_t hh[16], ind[16];
    tl_entity_id(hh, 700);
    tl_entity_id(ind, 701);
    tl_rec r[4];
    r[0] = op_on(&a, MESH_OP_CREATE, hh, 1, NULL, "household", "{}", NULL);
    r[1] = op_on(&a, MESH_OP_CREATE, ind, 1, NULL, "household_member", "{}",
                 (const uint8_t(*)[16])hh);
    mesh_opref base = {.row_version = 1};
    memcpy(base.author, a.id.pk, 32);
    r[2] = op_on(&a, MESH_OP_DELETE, hh, 2, &base, "household", "{}", NULL);
    /* A concurrent later update from b with a higher rowVersion cannot resurrect it. */
    mesh_opref base2 = {.row_version = 2};
    memcpy(base2.author, a.id.pk, 32);
    r[3] = op_on(&b, MESH_OP_UPDATE, hh, 3, &base2, "household", "{\"late\":1}", NULL);
    ingest(r, 4, MESH_INGEST_PARTIAL, MESH_OK);
    state_q q = state_of(hh);
    cr_assert(q.s.flags & MESH_STATE_DELETED);
    cr_assert_eq(q.s.winner.ref.row_version, 2, "the delete stays the winner");
    cr_assert(!mesh_state_conflict(&q.s));
    state_q c = state_of(ind);
    cr_assert(!(c.s.flags & MESH_STATE_DELETED));
    cr_assert(c.deleted, "a child of a deleted parent reads as deleted");
    cr_assert_eq(counts().deleted, 1);
    for (int i = 0; i < 4; i++) tl_rec_free(&r[i]);
}

Test(store, map_grows_when_full)
{
    mesh_store_close(st);
    tl_rmtree(dir);
    dir = tl_tmpdir("grow");
    open_store(1u << 20, 1ull << 30);
    tl_stream s;
    tl_stream_init(&s, 10, "MZ");
    tl_rec *r = make_chain(&s, 20000, 10000);
    mesh_ingest_report rep = ingest(r, 20000, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 20000);
    cr_assert_eq(counts().ops, 20000);
    free_chain(r, 20000);
}

Test(store, full_map_is_a_clear_error_and_loses_nothing)
{
    mesh_store_close(st);
    tl_rmtree(dir);
    dir = tl_tmpdir("full");
    open_store(1u << 20, 2u << 20);
    tl_stream s;
    tl_stream_init(&s, 11, "MZ");
    tl_rec *r = make_chain(&s, 20000, 20000);
    ingest(r, 100, MESH_INGEST_PARTIAL, MESH_OK);
    mesh_store_counts before = counts();
    ingest(r + 100, 19900, MESH_INGEST_PARTIAL, MESH_ENOSPC);
    cr_assert(strstr(mesh_errmsg(), "limit") != NULL, "%s", mesh_errmsg());
    mesh_store_counts after = counts();
    cr_assert_eq(after.ops, 100);
    cr_assert_eq(memcmp(before.digest, after.digest, 32), 0);
    free_chain(r, 20000);
}

typedef struct seqs_q {
    uint64_t sid, from, next;
    int rc;
} seqs_q;

static int seqs_fn(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    seqs_q *q = ctx;
    mesh_op op;
    if (mesh_op_decode(rec->op, rec->op_len, &op) != MESH_OK || op.seq != seq || seq != q->next)
        return MESH_ECORRUPT;
    q->next++;
    return MESH_OK;
}

static int seqs_txn(mesh_txn *t, void *ctx)
{
    seqs_q *q = ctx;
    q->next = q->from;
    q->rc = mesh_store_stream_ops(t, q->sid, q->from, seqs_fn, q);
    return MESH_OK;
}

/* Reads stream `sid` (ops 1..total held) from every seq up to last_from: each read must run in
 * order to the end. */
static void check_stream_reads(uint64_t sid, uint64_t total, uint64_t last_from)
{
    for (uint64_t from = 1; from <= last_from; from++) {
        seqs_q q = {.sid = sid, .from = from};
        cr_assert_eq(mesh_store_read(st, seqs_txn, &q), MESH_OK);
        cr_assert_eq(q.rc, MESH_OK, "from %llu: %s", (unsigned long long)from, mesh_errmsg());
        cr_assert_eq(q.next, from <= total ? total + 1 : from, "from %llu",
                     (unsigned long long)from);
    }
}

/* The stream index keeps several ops per record: runs of every size (filling the last record,
 * spilling into new ones) read back in order from every seq, before and after a reopen. */
Test(store, stream_index_reads_every_seq_across_runs)
{
    tl_stream s;
    tl_stream_init(&s, 7, "MZ/NAMPULA/ERATI");
    const size_t total = 140;
    tl_rec *r = make_chain(&s, total, 5000);
    const size_t runs[] = {1, 1, 7, 31, 40, 1, 33, 26};
    size_t at = 0;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        mesh_ingest_report rep = ingest(r + at, runs[i], MESH_INGEST_PARTIAL, MESH_OK);
        cr_assert_eq(rep.applied, runs[i]);
        at += runs[i];
    }
    cr_assert_eq(at, total);
    mesh_op op;
    cr_assert_eq(mesh_op_decode(r[0].bytes + MESH_SIGNATURE_BYTES, r[0].op_len, &op), MESH_OK);
    for (int pass = 0; pass < 2; pass++) {
        check_stream_reads(mesh_stream_id(op.author, op.scope, op.scope_len), total, total + 2);
        mesh_store_close(st);
        mesh_store_opts o = {.no_sync = true};
        cr_assert_eq(mesh_store_open(dir, &o, &st), MESH_OK, "%s", mesh_errmsg());
    }
    free_chain(r, total);
}

/* Changes the household's name in op r (a valid op of other content: its hash, and so the next
 * op's link, no longer match, and its signature fails). */
static void tamper_name(tl_rec *r)
{
    uint8_t *op = r->bytes + MESH_SIGNATURE_BYTES;
    static const uint8_t pat[] = {0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x'};
    for (size_t i = 0; i + sizeof pat <= r->op_len; i++)
        if (memcmp(op + i, pat, sizeof pat) == 0) {
            op[i + sizeof pat - 1] = 'y';
            return;
        }
    cr_assert_fail("no name to tamper with");
}

/* A batch large enough to be stored in slices on two threads behaves as one piece: a broken
 * link in the second slice keeps the ops before it and rejects every later op of the run, in
 * whatever order the batch comes, and nothing is left waiting in pending. */
Test(store, large_batch_rejection_spans_slices)
{
    tl_stream s;
    tl_stream_init(&s, 9, "MZ/NAMPULA/ERATI");
    const size_t total = 3000, bad = 500;  /* seq 500 is altered */
    tl_rec *r = make_chain(&s, total, 20000);
    tamper_name(&r[bad - 1]);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            /* Again into a fresh store, the batch shuffled. */
            mesh_store_close(st);
            tl_rmtree(dir);
            dir = tl_tmpdir("store");
            open_store(0, 0);
            srand(7);
            for (size_t i = total - 1; i > 0; i--) {
                size_t j = (size_t)rand() % (i + 1);
                tl_rec tmp = r[i];
                r[i] = r[j];
                r[j] = tmp;
            }
        }
        mesh_ingest_report rep = ingest(r, total, MESH_INGEST_PARTIAL, MESH_OK);
        cr_assert_eq(rep.applied, bad - 1, "pass %d: applied %llu", pass,
                     (unsigned long long)rep.applied);
        cr_assert_eq(rep.rejected, total - (bad - 1), "pass %d: rejected %llu", pass,
                     (unsigned long long)rep.rejected);
        cr_assert_eq(rep.pending, 0);
        cr_assert(strstr(rep.first_error_msg, "broken hash chain at seq 501") != NULL, "%s",
                  rep.first_error_msg);
        mesh_store_counts c = counts();
        cr_assert_eq(c.ops, bad - 1);
        cr_assert_eq(c.pending, 0);
    }
    free_chain(r, total);
}

/* Rewrites the store as format 1 wrote it: one stream-index record per op holding the whole log
 * key, a type-index entry per entity, and version 1 in meta. */
static int to_format1_fn(mesh_txn *t, void *ctx)
{
    (void)ctx;
    MDB_dbi sops = t->s->dbi[DB_SOPS];
    MDB_cursor *c;
    cr_assert_eq(mdb_cursor_open(t->txn, sops, &c), 0);
    uint8_t (*keys)[16] = NULL, (*vals)[MESH_STORE_LOG_KEY_BYTES] = NULL;
    size_t n = 0;
    MDB_val k, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint64_t sid = mesh_be64_get(k.mv_data), first = mesh_be64_get((uint8_t *)k.mv_data + 8);
        mesh_stream strm;
        cr_assert_eq(mesh_store_stream_get(t, sid, &strm), MESH_OK);
        size_t cnt = mesh_sops_count(&k, &v);
        cr_assert(cnt > 0);
        keys = realloc(keys, (n + cnt) * sizeof *keys);
        vals = realloc(vals, (n + cnt) * sizeof *vals);
        for (size_t i = 0; i < cnt; i++, n++) {
            sid_seq_key(keys[n], sid, first + i);
            mesh_sops_log_key(&v, i, strm.author, vals[n]);
        }
    }
    mdb_cursor_close(c);
    cr_assert_eq(mdb_drop(t->txn, sops, 0), 0);
    for (size_t i = 0; i < n; i++) {
        MDB_val kk = {16, keys[i]}, vv = {MESH_STORE_LOG_KEY_BYTES, vals[i]};
        cr_assert_eq(mdb_put(t->txn, sops, &kk, &vv, 0), 0);
        uint8_t tk[64] = "household";
        memcpy(tk + 10, vals[i], 16);
        MDB_val tkk = {26, tk}, empty = {0, ""};
        cr_assert_eq(mdb_put(t->txn, t->s->dbi[DB_BYTYPE], &tkk, &empty, 0), 0);
    }
    free(keys);
    free(vals);
    return mesh_store_meta_put_u64(t, "version", 1);
}

static int version_fn(mesh_txn *t, void *ctx)
{
    MDB_stat bs;
    mdb_stat(t->txn, t->s->dbi[DB_BYTYPE], &bs);
    cr_assert_eq(bs.ms_entries, 0, "the old type index is emptied");
    return mesh_store_meta_get_u64(t, "version", ctx);
}

/* A format-1 store is upgraded when opened: its one-op index records read as they are, new ops
 * go on in chunks after them, and the old type index is emptied. */
Test(store, format1_store_is_upgraded)
{
    tl_stream s;
    tl_stream_init(&s, 11, "MZ/NAMPULA/ERATI");
    tl_rec *r = make_chain(&s, 60, 30000);
    ingest(r, 25, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(mesh_store_write(st, to_format1_fn, NULL), MESH_OK);
    mesh_store_close(st);
    mesh_store_opts o = {.no_sync = true};
    cr_assert_eq(mesh_store_open(dir, &o, &st), MESH_OK, "%s", mesh_errmsg());
    uint64_t version = 0;
    cr_assert_eq(mesh_store_read(st, version_fn, &version), MESH_OK);
    cr_assert_eq(version, 3);
    mesh_op op;
    cr_assert_eq(mesh_op_decode(r[0].bytes + MESH_SIGNATURE_BYTES, r[0].op_len, &op), MESH_OK);
    uint64_t sid = mesh_stream_id(op.author, op.scope, op.scope_len);
    check_stream_reads(sid, 25, 26);
    mesh_ingest_report rep = ingest(r + 25, 35, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 35);
    check_stream_reads(sid, 60, 61);
    cr_assert_eq(counts().ops, 60);
    free_chain(r, 60);
}

/* The state record an op alone gives is written straight from the op on the ingest's hot path;
 * it must be byte for byte what the general encoder writes for the same state. */
Test(store, fresh_state_is_what_the_encoder_writes)
{
    for (int kind = 0; kind < 2; kind++) {
        for (uint32_t np = 0; np <= MESH_PARENTS_MAX; np += 4) {
            mesh_op op = {.kind = kind ? MESH_OP_DELETE : MESH_OP_CREATE, .type = "household",
                          .type_len = 9, .row_version = 7, .hlc = 0x0123456789abcdefull,
                          .parents_count = np};
            tl_entity_id(op.entity, 42);
            memset(op.author, 0xa5, sizeof op.author);
            for (uint32_t i = 0; i < np; i++) tl_entity_id(op.parents[i], 1000 + i);
            uint8_t fresh[MESH_STATE_FRESH_BYTES_MAX];
            size_t fl = mesh_state_fresh(&op, fresh);

            mesh_state s = {.flags = kind ? MESH_STATE_DELETED : 0, .max_rv = 7, .nheads = 1,
                            .nparents = np};
            memcpy(s.entity, op.entity, 16);
            memcpy(s.type, "household", 10);
            s.heads[0] = (mesh_head){.ref.row_version = 7, .hlc = op.hlc};
            memcpy(s.heads[0].ref.author, op.author, MESH_KEY_BYTES);
            s.winner = s.heads[0];
            memcpy(s.parents, op.parents, sizeof s.parents[0] * np);
            uint8_t enc[MESH_STATE_BYTES_MAX];
            size_t el;
            cr_assert_eq(mesh_state_encode(&s, enc, sizeof enc, &el), MESH_OK);
            cr_assert_eq(fl, el, "kind %d, %u parents: %zu bytes, the encoder %zu", kind, np, fl,
                         el);
            cr_assert_eq(memcmp(fresh, enc, fl), 0, "kind %d, %u parents", kind, np);
            mesh_state back;
            cr_assert_eq(mesh_state_decode(fresh, fl, op.entity, &back), MESH_OK);
            cr_assert_eq(back.nparents, np);
            cr_assert_eq(back.winner.hlc, op.hlc);
        }
    }
}

typedef struct append_q {
    mesh_identity *id;
    uint64_t now;
    mesh_op op;
    uint8_t hash[MESH_HASH_BYTES];
} append_q;

static int append_fn(mesh_txn *t, void *ctx)
{
    append_q *q = ctx;
    return mesh_store_append(t, q->id, "MZ/NAMPULA", q->now, &q->op, q->hash);
}

typedef struct copied {
    tl_rec recs[4];
    size_t n;
} copied;

static int copy_fn(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    (void)seq;
    copied *c = ctx;
    cr_assert_lt(c->n, 4u);
    tl_rec *r = &c->recs[c->n++];
    r->bytes = malloc(MESH_SIGNATURE_BYTES + rec->op_len);
    memcpy(r->bytes, rec->sig, MESH_SIGNATURE_BYTES);
    memcpy(r->bytes + MESH_SIGNATURE_BYTES, rec->op, rec->op_len);
    r->op_len = rec->op_len;
    return MESH_OK;
}

typedef struct ops_q {
    uint64_t sid;
    copied *c;
} ops_q;

static int ops_fn(mesh_txn *t, void *ctx)
{
    ops_q *q = ctx;
    return mesh_store_stream_ops(t, q->sid, 1, copy_fn, q->c);
}

/* A node's own op is stored without checking the signature it was just given; what it stores
 * must still be a properly signed, chained op that another store accepts as a peer's. */
Test(store, append_writes_the_next_signed_op_and_moves_the_clock)
{
    mesh_identity id;
    mesh_identity_generate(&id);
    mesh_buf body = tl_body("{\"name\":\"x\"}");
    uint8_t hashes[2][MESH_HASH_BYTES];
    uint64_t hlcs[2];
    /* The wall clock goes backwards between the two: the clock must still move forward. */
    uint64_t nows[2] = {1700000000000ull, 1600000000000ull};
    for (int i = 0; i < 2; i++) {
        append_q q = {.id = &id, .now = nows[i]};
        q.op = (mesh_op){.kind = MESH_OP_CREATE, .type = "household", .type_len = 9,
                         .row_version = 1, .body = body.data, .body_len = body.len};
        tl_entity_id(q.op.entity, 500 + (uint64_t)i);
        cr_assert_eq(mesh_store_write(st, append_fn, &q), MESH_OK, "%s", mesh_errmsg());
        cr_assert_eq(q.op.seq, (uint64_t)i + 1);
        memcpy(hashes[i], q.hash, MESH_HASH_BYTES);
        hlcs[i] = q.op.hlc;
    }
    cr_assert_gt(hlcs[1], hlcs[0]);
    mesh_buf_fini(&body);

    copied c = {0};
    ops_q oq = {.sid = mesh_stream_id(id.pk, "MZ/NAMPULA", 10), .c = &c};
    cr_assert_eq(mesh_store_read(st, ops_fn, &oq), MESH_OK);
    cr_assert_eq(c.n, 2u);
    for (size_t i = 0; i < 2; i++) {
        uint8_t h[MESH_HASH_BYTES];
        mesh_op_hash(c.recs[i].bytes + MESH_SIGNATURE_BYTES, c.recs[i].op_len, h);
        cr_assert_eq(memcmp(h, hashes[i], MESH_HASH_BYTES), 0, "op %zu: the hash returned", i);
    }

    /* Another store takes them as a peer's ops: signatures and chain check out. */
    mesh_store_close(st);
    tl_rmtree(dir);
    dir = tl_tmpdir("store");
    open_store(0, 0);
    mesh_ingest_report rep = ingest(c.recs, c.n, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 2, "%s", rep.first_error_msg);
    cr_assert_eq(rep.rejected, 0);
    /* A flipped signature byte is refused by a peer. */
    c.recs[1].bytes[5] ^= 1;
    mesh_store_close(st);
    tl_rmtree(dir);
    dir = tl_tmpdir("store");
    open_store(0, 0);
    rep = ingest(c.recs, c.n, MESH_INGEST_PARTIAL, MESH_OK);
    cr_assert_eq(rep.applied, 1);
    cr_assert_eq(rep.first_error, MESH_ESIG);
    for (size_t i = 0; i < c.n; i++) free(c.recs[i].bytes);
}
