/*
 * access_test.c - the store enforcing the team roster (lib/store/team.c, ingest.c): members'
 * ops are taken and strangers' refused, a forged and a rolled-back roster are refused with a
 * clear message, a member's ops are cut at its removal whether they arrived before or after
 * the roster that removed it, and every arrival order and batching of the same ops gives the
 * same store.
 */
#include <criterion/criterion.h>

#include "model/team.h"
#include "store/team.h"
#include "testlib.h"

#define ROOT "MZ"
#define L01 "MZ/N/E/L01"
#define L02 "MZ/N/E/L02"

typedef struct member_spec {
    const tl_stream *who;
    const char *role;
    const char *scope;      /* NULL: removed */
    const char *cut_scope;  /* NULL: no cut */
    uint64_t cut_seq;
} member_spec;

static tl_stream auth, sup, f1, f2, stranger;
static char *dirs[8];
static int ndirs;
static uint64_t next_entity = 1;

static void setup(void)
{
    mesh_crypto_init();
    tl_stream_init(&auth, 0xa0, ROOT);
    tl_stream_init(&sup, 0x01, "MZ/N/E");
    tl_stream_init(&f1, 0x02, L01);
    tl_stream_init(&f2, 0x03, L01);
    tl_stream_init(&stranger, 0x04, L01);
    ndirs = 0;
}

static void teardown(void)
{
    for (int i = 0; i < ndirs; i++) tl_rmtree(dirs[i]);
}

TestSuite(access, .init = setup, .fini = teardown);

static int team_set_fn(mesh_txn *t, void *ctx) { return mesh_store_team_set(t, ctx); }

/* A new store in the team of `auth`. */
static mesh_store *team_store(void)
{
    char *d = tl_tmpdir("access");
    dirs[ndirs++] = d;
    mesh_store *s = NULL;
    mesh_store_opts o = {.create = true, .no_sync = true};
    cr_assert_eq(mesh_store_open(d, &o, &s), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_store_write(s, team_set_fn, auth.id.pk), MESH_OK, "%s", mesh_errmsg());
    return s;
}

static int spec_cmp(const void *a, const void *b)
{
    return memcmp(((const member_spec *)a)->who->id.pk, ((const member_spec *)b)->who->id.pk, 32);
}

/* The next roster op of the authority's stream, at `version`, listing `specs`. */
static tl_rec roster_op(uint32_t version, member_spec *specs, size_t n)
{
    qsort(specs, n, sizeof *specs, spec_cmp);
    char json[8192];
    size_t len = (size_t)snprintf(json, sizeof json,
                                  "{\"format\":1,\"root\":\"" ROOT "\",\"version\":%u,\"members\":[",
                                  version);
    for (size_t i = 0; i < n; i++) {
        char hex[65];
        mesh_hex_encode(specs[i].who->id.pk, 32, hex);
        len += (size_t)snprintf(json + len, sizeof json - len,
                                "%s{\"key\":\"%s\",\"role\":\"%s\",\"scopes\":[%s%s%s]%s",
                                i ? "," : "", hex, specs[i].role, specs[i].scope ? "\"" : "",
                                specs[i].scope ? specs[i].scope : "", specs[i].scope ? "\"" : "",
                                specs[i].scope ? "" : ",\"removed\":true");
        if (specs[i].cut_scope)
            len += (size_t)snprintf(json + len, sizeof json - len,
                                    ",\"cuts\":[{\"scope\":\"%s\",\"seq\":%llu}]",
                                    specs[i].cut_scope, (unsigned long long)specs[i].cut_seq);
        len += (size_t)snprintf(json + len, sizeof json - len, "}");
    }
    snprintf(json + len, sizeof json - len, "]}");
    mesh_buf b = tl_body(json);
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = version == 1 ? MESH_OP_CREATE : MESH_OP_UPDATE;
    op.type = MESH_TYPE_ROSTER;
    op.type_len = strlen(MESH_TYPE_ROSTER);
    op.row_version = version;
    mesh_team_roster_entity(auth.id.pk, op.entity);
    if (version > 1) {
        op.has_base = true;
        op.base.row_version = version - 1;
        memcpy(op.base.author, auth.id.pk, 32);
    }
    op.body = b.data;
    op.body_len = b.len;
    tl_rec r = tl_stream_add(&auth, &op);
    mesh_buf_fini(&b);
    return r;
}

/* A household created by `s`. */
static tl_rec data_op(tl_stream *s)
{
    mesh_buf b = tl_body("{\"memberCount\":3}");
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = MESH_OP_CREATE;
    op.type = "household";
    op.type_len = 9;
    op.row_version = 1;
    tl_entity_id(op.entity, next_entity++);
    op.body = b.data;
    op.body_len = b.len;
    tl_rec r = tl_stream_add(s, &op);
    mesh_buf_fini(&b);
    return r;
}

static mesh_ingest_report ingest(mesh_store *s, const tl_rec *recs, size_t n)
{
    mesh_oprec *v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = tl_rec_view(&recs[i]);
    mesh_ingest_report rep;
    int rc = tl_ingest(s, v, n, MESH_INGEST_PARTIAL, &rep);
    cr_assert_eq(rc, MESH_OK, "%s", mesh_errmsg());
    free(v);
    return rep;
}

static int counts_fn(mesh_txn *t, void *ctx) { return mesh_store_counts_get(t, ctx); }

static mesh_store_counts counts(mesh_store *s)
{
    mesh_store_counts c;
    cr_assert_eq(mesh_store_read(s, counts_fn, &c), MESH_OK, "%s", mesh_errmsg());
    return c;
}

typedef struct stream_q {
    uint64_t sid, seq;
} stream_q;

static int stream_fn(mesh_txn *t, void *ctx)
{
    stream_q *q = ctx;
    mesh_stream st;
    int rc = mesh_store_stream_get(t, q->sid, &st);
    q->seq = rc == MESH_OK ? st.seq : 0;
    return rc == MESH_ENOTFOUND ? MESH_OK : rc;
}

static uint64_t held(mesh_store *s, const tl_stream *w)
{
    stream_q q = {.sid = mesh_stream_id(w->id.pk, w->scope, strlen(w->scope))};
    cr_assert_eq(mesh_store_read(s, stream_fn, &q), MESH_OK);
    return q.seq;
}

static int roster_fn(mesh_txn *t, void *ctx) { return mesh_store_roster_get(t, ctx); }

static uint64_t roster_version(mesh_store *s)
{
    mesh_team *t = NULL;
    int rc = mesh_store_read(s, roster_fn, &t);
    if (rc == MESH_ENOTFOUND) return 0;
    cr_assert_eq(rc, MESH_OK, "%s", mesh_errmsg());
    uint64_t v = t->version;
    mesh_team_free(t);
    return v;
}

Test(access, members_in_strangers_out)
{
    mesh_store *s = team_store();
    member_spec m[] = {{&sup, "supervisor", "MZ/N/E", NULL, 0}, {&f1, "field", L01, NULL, 0}};
    tl_rec recs[4] = {roster_op(1, m, 2), data_op(&f1), data_op(&sup), data_op(&stranger)};
    mesh_ingest_report rep = ingest(s, recs, 4);
    cr_assert_eq(rep.applied, 3);
    cr_assert_eq(rep.rejected, 1);
    cr_assert_eq(rep.first_error, MESH_EPERM);
    cr_assert(strstr(rep.first_error_msg, "not on the team roster"), "%s", rep.first_error_msg);
    cr_assert_eq(held(s, &stranger), 0);
    /* A member writing outside its scope is refused too. */
    tl_stream f1_elsewhere;
    tl_stream_init(&f1_elsewhere, 0x02, L02);
    tl_rec out = data_op(&f1_elsewhere);
    rep = ingest(s, &out, 1);
    cr_assert_eq(rep.rejected, 1);
    cr_assert(strstr(rep.first_error_msg, "does not let its author write"), "%s",
              rep.first_error_msg);
    for (size_t i = 0; i < 4; i++) tl_rec_free(&recs[i]);
    tl_rec_free(&out);
    mesh_store_close(s);
}

Test(access, forged_roster_rejected)
{
    mesh_store *s = team_store();
    member_spec m[] = {{&f1, "field", L01, NULL, 0}};
    tl_rec r1 = roster_op(1, m, 1);
    ingest(s, &r1, 1);
    /* f1 writes a "roster" listing a stranger, in its own stream. */
    tl_stream rogue;
    tl_stream_init(&rogue, 0x02, L01);
    mesh_buf b = tl_body("{\"format\":1,\"members\":[],\"root\":\"MZ\",\"version\":9}");
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = MESH_OP_CREATE;
    op.type = MESH_TYPE_ROSTER;
    op.type_len = strlen(MESH_TYPE_ROSTER);
    op.row_version = 9;
    mesh_team_roster_entity(auth.id.pk, op.entity);
    op.body = b.data;
    op.body_len = b.len;
    tl_rec forged = tl_stream_add(&rogue, &op);
    mesh_ingest_report rep = ingest(s, &forged, 1);
    cr_assert_eq(rep.rejected, 1);
    cr_assert(strstr(rep.first_error_msg, "forged roster"), "%s", rep.first_error_msg);
    cr_assert_eq(roster_version(s), 1);
    mesh_buf_fini(&b);
    tl_rec_free(&r1);
    tl_rec_free(&forged);
    mesh_store_close(s);
}

Test(access, rolled_back_roster_rejected_and_stream_stops)
{
    mesh_store *s = team_store();
    member_spec m1[] = {{&f1, "field", L01, NULL, 0}};
    member_spec m2[] = {{&f1, "field", L01, NULL, 0}, {&f2, "field", L01, NULL, 0}};
    member_spec m3[] = {{&f1, "field", L01, NULL, 0}};
    tl_rec recs[4];
    recs[0] = roster_op(1, m1, 1);
    recs[1] = roster_op(2, m2, 2);
    /* The authority key signs version 2 again at the next position: a roll-back. */
    recs[2] = roster_op(2, m3, 1);
    recs[3] = data_op(&auth);
    mesh_ingest_report rep = ingest(s, recs, 4);
    cr_assert_eq(rep.applied, 2);
    cr_assert_eq(rep.rejected, 2, "the roll-back and everything after it in the stream");
    cr_assert_eq(rep.first_error, MESH_ESTALE);
    cr_assert(strstr(rep.first_error_msg, "rolled-back roster"), "%s", rep.first_error_msg);
    cr_assert_eq(roster_version(s), 2);
    cr_assert_eq(held(s, &auth), 2);
    for (size_t i = 0; i < 4; i++) tl_rec_free(&recs[i]);
    mesh_store_close(s);
}

Test(access, removal_cuts_the_stream_in_either_order)
{
    member_spec m1[] = {{&f1, "field", L01, NULL, 0}, {&f2, "field", L01, NULL, 0}};
    member_spec m2[] = {{&f1, "field", L01, NULL, 0}, {&f2, "field", NULL, L01, 3}};
    tl_rec v1 = roster_op(1, m1, 2);
    tl_rec v2 = roster_op(2, m2, 2);
    tl_rec ops[5];
    for (int i = 0; i < 5; i++) ops[i] = data_op(&f2);

    /* a: f2's five ops arrive first, then the roster that removes f2 after its third. */
    mesh_store *a = team_store();
    ingest(a, &v1, 1);
    mesh_ingest_report rep = ingest(a, ops, 5);
    cr_assert_eq(rep.applied, 5);
    cr_assert_eq(counts(a).entities, 1 + 5, "the roster and five households");
    ingest(a, &v2, 1);
    cr_assert_eq(held(a, &f2), 3, "ops signed after the removal are dropped");
    cr_assert_eq(counts(a).ops, 2 + 3);
    cr_assert_eq(counts(a).entities, 1 + 3, "their entities are gone with them");

    /* b: the removal first; the later ops are refused as they arrive. */
    mesh_store *b = team_store();
    ingest(b, &v1, 1);
    ingest(b, &v2, 1);
    rep = ingest(b, ops, 5);
    cr_assert_eq(rep.applied, 3);
    cr_assert_eq(rep.rejected, 2);
    cr_assert(strstr(rep.first_error_msg, "after its author's removal"), "%s",
              rep.first_error_msg);
    cr_assert_eq(memcmp(counts(a).digest, counts(b).digest, 32), 0);

    tl_rec_free(&v1);
    tl_rec_free(&v2);
    for (int i = 0; i < 5; i++) tl_rec_free(&ops[i]);
    mesh_store_close(a);
    mesh_store_close(b);
}

/* The same op set in many orders and batchings, delivered again until nothing changes (as
 * repeated syncs do), gives one store. */
Test(access, order_independent)
{
    member_spec m1[] = {{&sup, "supervisor", "MZ/N/E", NULL, 0}, {&f1, "field", L01, NULL, 0},
                        {&f2, "field", L01, NULL, 0}};
    member_spec m2[] = {{&sup, "supervisor", "MZ/N/E", NULL, 0}, {&f1, "field", L01, NULL, 0},
                        {&f2, "field", NULL, L01, 4}, {&stranger, "field", L01, NULL, 0}};
    enum { N = 2 + 3 * 6 + 1 };
    tl_rec recs[N];
    size_t n = 0;
    recs[n++] = roster_op(1, m1, 3);
    for (int i = 0; i < 6; i++) {
        recs[n++] = data_op(&sup);
        recs[n++] = data_op(&f1);
        recs[n++] = data_op(&f2);
    }
    recs[n++] = roster_op(2, m2, 4);
    recs[n++] = data_op(&stranger);
    cr_assert_eq(n, N);

    uint8_t ref[32];
    uint64_t ref_ops = 0;
    uint32_t seed = 12345;
    for (int round = 0; round < 40; round++) {
        mesh_store *s = team_store();
        size_t idx[N];
        for (size_t i = 0; i < N; i++) idx[i] = i;
        for (size_t i = N - 1; i > 0; i--) {
            seed = seed * 1103515245u + 12345u;
            size_t j = (seed >> 8) % (i + 1);
            size_t tmp = idx[i];
            idx[i] = idx[j];
            idx[j] = tmp;
        }
        for (int pass = 0; pass < 4; pass++) {
            for (size_t i = 0; i < N;) {
                seed = seed * 1103515245u + 12345u;
                size_t k = 1 + (seed >> 8) % 5;
                if (i + k > N) k = N - i;
                tl_rec batch[5];
                for (size_t j = 0; j < k; j++) batch[j] = recs[idx[i + j]];
                ingest(s, batch, k);
                i += k;
            }
        }
        mesh_store_counts c = counts(s);
        cr_assert_eq(c.pending, 0);
        if (round == 0) {
            memcpy(ref, c.digest, 32);
            ref_ops = c.ops;
        } else {
            cr_assert_eq(memcmp(ref, c.digest, 32), 0, "round %d differs", round);
            cr_assert_eq(c.ops, ref_ops);
        }
        cr_assert_eq(held(s, &f2), 4);
        cr_assert_eq(held(s, &stranger), 1, "added by version 2");
        cr_assert_eq(roster_version(s), 2);
        mesh_store_close(s);
        tl_rmtree(dirs[--ndirs]);
    }
    cr_assert_eq(ref_ops, 2 + 6 + 6 + 4 + 1);
    for (size_t i = 0; i < N; i++) tl_rec_free(&recs[i]);
}

Test(access, local_write_outside_the_roster_fails_atomically)
{
    mesh_store *s = team_store();
    member_spec m[] = {{&f1, "field", L01, NULL, 0}};
    tl_rec r = roster_op(1, m, 1);
    ingest(s, &r, 1);
    tl_rec bad = data_op(&stranger);
    mesh_oprec v = tl_rec_view(&bad);
    mesh_ingest_report rep;
    int rc = tl_ingest(s, &v, 1, MESH_INGEST_ATOMIC, &rep);
    cr_assert_eq(rc, MESH_EPERM, "%s", mesh_errmsg());
    cr_assert(strstr(mesh_errmsg(), "not on the team roster"), "%s", mesh_errmsg());
    tl_rec_free(&r);
    tl_rec_free(&bad);
    mesh_store_close(s);
}

Test(access, no_team_no_enforcement)
{
    char *d = tl_tmpdir("access");
    dirs[ndirs++] = d;
    mesh_store *s = NULL;
    mesh_store_opts o = {.create = true, .no_sync = true};
    cr_assert_eq(mesh_store_open(d, &o, &s), MESH_OK);
    tl_rec r = data_op(&stranger);
    mesh_ingest_report rep = ingest(s, &r, 1);
    cr_assert_eq(rep.applied, 1);
    tl_rec_free(&r);
    mesh_store_close(s);
}
