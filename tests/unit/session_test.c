/*
 * session_test.c - the sync engine end to end over two (or three) real stores: convergence,
 * multi-hop, interruption and resume, duplicates, tampered ops, protocol errors, the idle
 * deadline, delta HELLOs and the byte budgets of the bench goals.
 */
#include <criterion/criterion.h>
#include <time.h>

#include "sync_fixture.h"
#include "store/peers.h"
#include "sync/frame.h"
#include "sync/vector.h"

#define T0 1000000u

static void setup(void) { cr_assert_eq(mesh_crypto_init(), MESH_OK); }

TestSuite(session, .init = setup, .timeout = 300);

typedef struct node {
    char dir[64];
    mesh_store *st;
    uint8_t pk[32];
} node;

static void node_new(node *n, uint8_t tag)
{
    n->st = fx_store_new(n->dir);
    memset(n->pk, tag, sizeof n->pk);
}

static void node_free(node *n) { fx_store_free(n->st, n->dir); }

static mesh_session *open_session(node *self, node *peer, bool initiator,
                                  const mesh_session_opts *extra)
{
    mesh_session_opts o = extra ? *extra : (mesh_session_opts){0};
    o.store = self->st;
    memcpy(o.self, self->pk, 32);
    memcpy(o.peer, peer->pk, 32);
    o.initiator = initiator;
    mesh_session *s = NULL;
    cr_assert_eq(mesh_session_new(&o, T0, &s), MESH_OK, "%s", mesh_errmsg());
    return s;
}

typedef struct result {
    mesh_session_stats a, b;
    mesh_session_state sa, sb;
} result;

/* Runs one whole session between a (initiator) and b. */
static result sync_pair(node *a, node *b, const mesh_session_opts *opts, bool dup)
{
    mesh_session *sa = open_session(a, b, true, opts), *sb = open_session(b, a, false, opts);
    fx_pump(sa, sb, T0, SIZE_MAX, dup, NULL, NULL);
    result r;
    mesh_session_stats_get(sa, &r.a);
    mesh_session_stats_get(sb, &r.b);
    r.sa = mesh_session_state_get(sa);
    r.sb = mesh_session_state_get(sb);
    mesh_session_free(sa);
    mesh_session_free(sb);
    cr_assert_eq(r.sa, MESH_SESSION_DONE, "initiator: %d %s", r.a.error, r.a.error_msg);
    cr_assert_eq(r.sb, MESH_SESSION_DONE, "responder: %d %s", r.b.error, r.b.error_msg);
    return r;
}

static void assert_same(node *a, node *b)
{
    mesh_store_counts ca = fx_counts(a->st), cb = fx_counts(b->st);
    cr_assert_eq(ca.ops, cb.ops, "ops %llu vs %llu", (unsigned long long)ca.ops,
                 (unsigned long long)cb.ops);
    cr_assert_eq(ca.streams, cb.streams);
    cr_assert_arr_eq(ca.digest, cb.digest, sizeof ca.digest, "digests differ");
}

Test(session, empty_with_empty)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    result r = sync_pair(&a, &b, NULL, false);
    cr_assert_eq(r.a.ops_sent + r.b.ops_sent, 0);
    cr_assert_eq(r.a.round_trips, 1);
    cr_assert_eq(r.b.round_trips, 0);
    cr_assert_lt(r.a.bytes_sent + r.b.bytes_sent, 128);
    assert_same(&a, &b);
    node_free(&a);
    node_free(&b);
}

Test(session, both_ways_union)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author x, y, z, shared;
    fx_author_init(&x, 10, "MZ/A");
    fx_author_init(&y, 11, "MZ/B");
    fx_author_init(&z, 12, "MZ/C");
    fx_author_init(&shared, 13, "MZ/S");
    fx_write(&a.st, 1, &x, 300, 0);
    fx_write(&a.st, 1, &y, 20, 200);
    fx_write(&b.st, 1, &z, 150, 50);
    mesh_store *both[2] = {a.st, b.st};
    fx_write(both, 2, &shared, 40, 0);
    fx_write(&b.st, 1, &shared, 7, 0);  /* b is ahead on a stream both hold */
    result r = sync_pair(&a, &b, NULL, false);
    cr_assert_eq(r.a.ops_sent, 320);
    cr_assert_eq(r.b.ops_sent, 157);
    cr_assert_eq(r.b.ops_applied, 320);
    cr_assert_eq(r.a.ops_applied, 157);
    cr_assert_eq(r.a.ops_rejected + r.b.ops_rejected + r.a.ops_pending + r.b.ops_pending, 0);
    cr_assert_eq(r.a.round_trips, 1);
    cr_assert_eq(r.b.round_trips, 0);
    assert_same(&a, &b);
    cr_assert_eq(fx_counts(a.st).ops, 300 + 20 + 150 + 47);
    node_free(&a);
    node_free(&b);
}

Test(session, small_frames_and_batches)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author au[60];
    for (uint32_t i = 0; i < 60; i++) {
        char scope[16];
        snprintf(scope, sizeof scope, "S%u", i);
        fx_author_init(&au[i], 100 + i, scope);
        fx_write(i % 2 ? &a.st : &b.st, 1, &au[i], 1 + i % 7, 0);
    }
    /* 512-byte frames: HELLO needs MORE frames and OPS carry two ops each. */
    mesh_session_opts o = {.frame_bytes_max = 512, .frame_ops_max = 3, .ingest_batch_ops = 5};
    result r = sync_pair(&a, &b, &o, false);
    cr_assert_gt(r.a.frames_sent, 20);
    assert_same(&a, &b);
    /* A second meeting with the same tiny frames sends deltas. */
    r = sync_pair(&b, &a, &o, false);
    cr_assert_eq(r.a.ops_sent + r.b.ops_sent, 0);
    cr_assert_eq(r.a.frames_sent, 2);  /* HELLO, DONE */
    node_free(&a);
    node_free(&b);
}

Test(session, multi_hop)
{
    node a, b, c;
    node_new(&a, 1);
    node_new(&b, 2);
    node_new(&c, 3);
    fx_author x, y;
    fx_author_init(&x, 20, "MZ/X");
    fx_author_init(&y, 21, "MZ/Y");
    fx_write(&a.st, 1, &x, 500, 100);
    fx_write(&c.st, 1, &y, 30, 0);
    sync_pair(&a, &b, NULL, false);
    result r = sync_pair(&b, &c, NULL, false);
    cr_assert_eq(r.a.ops_sent, 500);
    cr_assert_eq(r.b.ops_sent, 30);
    sync_pair(&a, &b, NULL, false);
    assert_same(&a, &c);
    assert_same(&a, &b);
    node_free(&a);
    node_free(&b);
    node_free(&c);
}

Test(session, interrupted_then_resumed)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author x, y;
    fx_author_init(&x, 30, "MZ/X");
    fx_author_init(&y, 31, "MZ/Y");
    fx_write(&a.st, 1, &x, 3000, 0);
    fx_write(&a.st, 1, &y, 2000, 0);
    mesh_session_opts o = {.frame_ops_max = 100, .ingest_batch_ops = 700};
    mesh_session *sa = open_session(&a, &b, true, &o), *sb = open_session(&b, &a, false, &o);
    /* HELLO, HELLO, DONE of b, then 23 OPS frames of a: stop mid-transfer. */
    fx_pump(sa, sb, T0, 26, false, NULL, NULL);
    cr_assert_eq(mesh_session_state_get(sa), MESH_SESSION_ACTIVE);
    cr_assert_eq(mesh_session_state_get(sb), MESH_SESSION_ACTIVE);
    mesh_session_stats s1;
    mesh_session_stats_get(sb, &s1);
    cr_assert_gt(s1.ops_received, 0);
    mesh_session_free(sa);
    mesh_session_free(sb);  /* stores what it buffered */
    uint64_t held = fx_counts(b.st).ops;
    cr_assert_eq(held, s1.ops_received, "held %llu received %llu", (unsigned long long)held,
                 (unsigned long long)s1.ops_received);
    cr_assert_lt(held, 5000);
    result r = sync_pair(&a, &b, &o, false);
    cr_assert_eq(r.a.ops_sent, 5000 - held);
    cr_assert_eq(r.b.ops_applied, 5000 - held);
    cr_assert_eq(r.b.ops_duplicate, 0);
    assert_same(&a, &b);
    node_free(&a);
    node_free(&b);
}

Test(session, duplicated_and_refed_frames)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author x, y;
    fx_author_init(&x, 40, "MZ/X");
    fx_author_init(&y, 41, "MZ/Y");
    fx_write(&a.st, 1, &x, 400, 0);
    fx_write(&b.st, 1, &y, 300, 0);
    mesh_session_opts o = {.frame_ops_max = 50, .ingest_batch_ops = 120};
    result r = sync_pair(&a, &b, &o, true);
    cr_assert_eq(r.b.ops_applied, 400);
    cr_assert_eq(r.a.ops_applied, 300);
    cr_assert_eq(r.b.ops_received, 400);
    cr_assert_eq(r.a.ops_duplicate + r.b.ops_duplicate, 0);
    assert_same(&a, &b);

    /* Re-feeding a whole earlier session's frames to a new one changes nothing. */
    fx_write(&a.st, 1, &x, 10, 0);
    mesh_session *sa = open_session(&a, &b, true, &o), *sb = open_session(&b, &a, false, &o);
    mesh_buf out;
    mesh_buf_init(&out, MESH_FRAME_BYTES_MAX);
    cr_assert_eq(mesh_session_send(sa, &out, T0), MESH_OK);
    cr_assert_eq(mesh_session_recv(sb, out.data, out.len, T0), MESH_OK);
    cr_assert_eq(mesh_session_send(sb, &out, T0), MESH_OK);
    cr_assert_eq(mesh_session_recv(sa, out.data, out.len, T0), MESH_OK);
    cr_assert_eq(mesh_session_send(sb, &out, T0), MESH_OK);  /* b's DONE */
    cr_assert_eq(mesh_session_recv(sa, out.data, out.len, T0), MESH_OK);
    cr_assert_eq(mesh_session_send(sa, &out, T0), MESH_OK);  /* a's OPS */
    mesh_buf ops;
    mesh_buf_init(&ops, MESH_FRAME_BYTES_MAX);
    mesh_buf_append(&ops, out.data, out.len);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(mesh_session_recv(sb, ops.data, ops.len, T0), MESH_OK, "%s", mesh_errmsg());
    fx_pump(sa, sb, T0, SIZE_MAX, false, NULL, NULL);
    cr_assert_eq(mesh_session_state_get(sa), MESH_SESSION_DONE);
    cr_assert_eq(mesh_session_state_get(sb), MESH_SESSION_DONE);
    cr_assert_eq(mesh_session_recv(sb, ops.data, ops.len, T0), MESH_OK);  /* after the end */
    mesh_session_stats st;
    mesh_session_stats_get(sb, &st);
    cr_assert_eq(st.ops_applied, 10);
    cr_assert_eq(st.ops_received, 10);
    assert_same(&a, &b);
    mesh_buf_fini(&out);
    mesh_buf_fini(&ops);
    mesh_session_free(sa);
    mesh_session_free(sb);
    node_free(&a);
    node_free(&b);
}

/* ---- A scripted peer: frames built by hand ------------------------------------------------- */

typedef struct script {
    mesh_session *s;
    uint64_t fno;
    mesh_buf frame, items, out;
} script;

static void script_init(script *sc, mesh_session *s)
{
    sc->s = s;
    sc->fno = 0;
    mesh_buf_init(&sc->frame, 2 * MESH_FRAME_BYTES_MAX);
    mesh_buf_init(&sc->items, 2 * MESH_FRAME_BYTES_MAX);
    mesh_buf_init(&sc->out, MESH_FRAME_BYTES_MAX);
}

static void script_fini(script *sc)
{
    mesh_buf_fini(&sc->frame);
    mesh_buf_fini(&sc->items);
    mesh_buf_fini(&sc->out);
}

static int script_send(script *sc, mesh_frame *f)
{
    mesh_buf_reset(&sc->frame);
    f->fno = ++sc->fno;
    cr_assert_eq(mesh_frame_encode(f, &sc->frame), MESH_OK);
    return mesh_session_recv(sc->s, sc->frame.data, sc->frame.len, T0);
}

/* Sends a full HELLO announcing `v`. */
static int script_hello(script *sc, const mesh_vector *v, uint32_t vmin, uint32_t vmax)
{
    mesh_buf_reset(&sc->items);
    for (size_t i = 0; i < v->n; i++) {
        mesh_mp_put_uint(&sc->items, v->e[i].sid);
        mesh_mp_put_uint(&sc->items, v->e[i].seq);
    }
    mesh_frame f = {.type = MESH_FRAME_HELLO, .version = vmax, .version_min = vmin,
                    .flags = MESH_HELLO_FULL, .total = v->n, .items = sc->items.data,
                    .items_len = sc->items.len, .nitems = v->n};
    mesh_vector_digest(v, f.digest);
    return script_send(sc, &f);
}

static int script_ops(script *sc, const fx_rec *r, size_t n)
{
    mesh_buf_reset(&sc->items);
    for (size_t i = 0; i < n; i++) {
        mesh_mp_put_bin(&sc->items, r[i].op, r[i].op_len);
        mesh_mp_put_bin(&sc->items, r[i].sig, 64);
    }
    mesh_frame f = {.type = MESH_FRAME_OPS, .version = 1, .items = sc->items.data,
                    .items_len = sc->items.len, .nitems = n};
    return script_send(sc, &f);
}

static int script_done(script *sc, uint64_t ops, uint64_t frames)
{
    mesh_frame f = {.type = MESH_FRAME_DONE, .version = 1, .ops = ops, .frames = frames};
    return script_send(sc, &f);
}

/* The session's next frame, decoded (into sc->out). */
static int script_take(script *sc, mesh_frame *f)
{
    int rc = mesh_session_send(sc->s, &sc->out, T0);
    if (rc == MESH_OK) cr_assert_eq(mesh_frame_decode(sc->out.data, sc->out.len, f), MESH_OK);
    return rc;
}

static void expect_error_frame(script *sc, uint32_t code)
{
    mesh_frame f;
    cr_assert_eq(script_take(sc, &f), MESH_OK);
    cr_assert_eq(f.type, MESH_FRAME_ERROR);
    cr_assert_eq(f.code, code, "code %u", f.code);
    cr_assert_gt(f.msg_len, 10);
    cr_assert_eq(mesh_session_send(sc->s, &sc->out, T0), MESH_ECLOSED);
    cr_assert_eq(mesh_session_state_get(sc->s), MESH_SESSION_FAILED);
}

/* A responder session on b, with a scripted initiator that announces author x's stream at
 * `seq` and has b's vector from its HELLO. */
static void scripted_start(script *sc, node *b, node *peer, fx_author *x, uint64_t seq)
{
    mesh_session *s = open_session(b, peer, false, NULL);
    script_init(sc, s);
    mesh_vector v;
    mesh_vector_init(&v);
    mesh_vector_push(&v, mesh_stream_id(x->id.pk, x->scope, strlen(x->scope)), seq);
    cr_assert_eq(script_hello(sc, &v, 1, 1), MESH_OK, "%s", mesh_errmsg());
    mesh_vector_fini(&v);
    mesh_frame f;
    cr_assert_eq(script_take(sc, &f), MESH_OK);
    cr_assert_eq(f.type, MESH_FRAME_HELLO);
    cr_assert_eq(script_take(sc, &f), MESH_OK);
    cr_assert_eq(f.type, MESH_FRAME_DONE);
}

static void tampered_case(bool break_chain)
{
    node b, p;
    node_new(&b, 2);
    memset(p.pk, 9, 32);
    fx_author x;
    fx_author_init(&x, 50, "MZ/X");
    fx_rec r[30];
    for (int i = 0; i < 30; i++) r[i] = fx_next(&x, 0);
    if (break_chain) {
        /* Op 5 (index 4) replaced by a validly signed op whose prev is wrong. */
        fx_author fork = x;
        fork.seq = 4;
        memset(fork.tip, 0xee, 32);
        fx_rec_free(&r[4]);
        r[4] = fx_next(&fork, 0);
    } else {
        /* Op 5's bytes changed after signing (its entity id). */
        mesh_op op;
        cr_assert_eq(mesh_op_decode(r[4].op, r[4].op_len, &op), MESH_OK);
        size_t at = (size_t)((const uint8_t *)memmem(r[4].op, r[4].op_len, op.entity, 16) -
                             r[4].op);
        r[4].op[at + 15] ^= 1;
    }
    script sc;
    scripted_start(&sc, &b, &p, &x, 30);
    cr_assert_eq(script_ops(&sc, r, 10), MESH_OK);
    /* Force the first ten into the store, then send the rest in another frame. */
    cr_assert_eq(script_ops(&sc, r + 10, 20), MESH_OK);
    cr_assert_eq(script_done(&sc, 30, 2), MESH_OK);
    cr_assert_eq(mesh_session_state_get(sc.s), MESH_SESSION_DONE);
    mesh_session_stats st;
    mesh_session_stats_get(sc.s, &st);
    cr_assert_eq(st.ops_applied, 4);
    cr_assert_eq(st.ops_rejected, 26);
    mesh_store_counts c = fx_counts(b.st);
    cr_assert_eq(c.ops, 4);
    cr_assert_eq(c.pending, 0);
    mesh_session_free(sc.s);
    script_fini(&sc);
    for (int i = 0; i < 30; i++) fx_rec_free(&r[i]);
    node_free(&b);
}

Test(session, tampered_op_rejected) { tampered_case(false); }
Test(session, broken_chain_rejected) { tampered_case(true); }

Test(session, rejection_across_batches)
{
    /* The bad op lands in one transaction, later ops of its stream in the next. */
    node b, p;
    node_new(&b, 2);
    memset(p.pk, 9, 32);
    fx_author x;
    fx_author_init(&x, 51, "MZ/X");
    fx_rec r[20];
    for (int i = 0; i < 20; i++) r[i] = fx_next(&x, 0);
    memset(r[9].sig, 0, 64);  /* op 10, the last of the first batch: its signature fails */
    mesh_session *s = NULL;
    mesh_session_opts o = {.store = b.st, .ingest_batch_ops = 10};
    memcpy(o.peer, p.pk, 32);
    cr_assert_eq(mesh_session_new(&o, T0, &s), MESH_OK);
    script sc;
    script_init(&sc, s);
    mesh_vector v;
    mesh_vector_init(&v);
    mesh_vector_push(&v, mesh_stream_id(x.id.pk, x.scope, strlen(x.scope)), 20);
    cr_assert_eq(script_hello(&sc, &v, 1, 1), MESH_OK);
    mesh_vector_fini(&v);
    cr_assert_eq(script_ops(&sc, r, 10), MESH_OK);
    cr_assert_eq(script_ops(&sc, r + 10, 10), MESH_OK);
    cr_assert_eq(script_done(&sc, 20, 2), MESH_OK);
    mesh_store_counts c = fx_counts(b.st);
    cr_assert_eq(c.ops, 9);
    cr_assert_eq(c.pending, 0);
    mesh_session_stats st;
    mesh_session_stats_get(s, &st);
    cr_assert_eq(st.ops_rejected, 11);
    mesh_session_free(s);
    script_fini(&sc);
    for (int i = 0; i < 20; i++) fx_rec_free(&r[i]);
    node_free(&b);
}

static bool not_secret(const uint8_t author[32], const char *scope, size_t len, void *ctx)
{
    (void)author;
    (void)ctx;
    return !(len >= 6 && memcmp(scope + len - 6, "SECRET", 6) == 0);
}

Test(session, scope_filters)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author x, y;
    fx_author_init(&x, 60, "MZ/OK");
    fx_author_init(&y, 61, "MZ/SECRET");
    fx_write(&a.st, 1, &x, 10, 0);
    fx_write(&a.st, 1, &y, 10, 0);
    /* The sender never offers what the peer may not hold. */
    mesh_session_opts o = {.peer_may_hold = not_secret};
    result r = sync_pair(&a, &b, &o, false);
    cr_assert_eq(r.a.ops_sent, 10);
    cr_assert_eq(fx_counts(b.st).ops, 10);
    cr_assert_eq(fx_counts(b.st).streams, 1);
    /* A receiver refuses what it may not hold, even when offered. */
    node c;
    node_new(&c, 3);
    mesh_session *sa = open_session(&a, &c, true, NULL);
    mesh_session_opts oc = {.self_may_hold = not_secret};
    mesh_session *sc = open_session(&c, &a, false, &oc);
    fx_pump(sa, sc, T0, SIZE_MAX, false, NULL, NULL);
    mesh_session_stats st;
    mesh_session_stats_get(sc, &st);
    cr_assert_eq(mesh_session_state_get(sc), MESH_SESSION_DONE);
    cr_assert_eq(st.ops_received, 20);
    cr_assert_eq(st.ops_rejected, 10);
    cr_assert_eq(fx_counts(c.st).ops, 10);
    mesh_session_free(sa);
    mesh_session_free(sc);
    node_free(&a);
    node_free(&b);
    node_free(&c);
}

/* ---- Protocol errors ------------------------------------------------------------------------ */

static mesh_session *responder_for(node *b)
{
    node p;
    memset(p.pk, 9, 32);
    return open_session(b, &p, false, NULL);
}

Test(session, garbage_frame)
{
    node b;
    node_new(&b, 2);
    static const uint8_t junk[][8] = {
        {0xc1}, {0x93, 0x01, 0x01}, {0x92, 0x01, 0x01}, {0x95, 0x09, 0x01, 0x01, 0, 0},
        {0x93, 0x02, 0x01, 0x01},  /* OPS without records */
    };
    static const size_t junk_len[] = {1, 3, 3, 6, 4};
    for (size_t i = 0; i < sizeof junk_len / sizeof *junk_len; i++) {
        mesh_session *s = responder_for(&b);
        script sc;
        script_init(&sc, s);
        cr_assert_eq(mesh_session_recv(s, junk[i], junk_len[i], T0), MESH_EPROTO, "junk %zu", i);
        expect_error_frame(&sc, (uint32_t)-MESH_EPROTO);
        mesh_session_stats st;
        mesh_session_stats_get(s, &st);
        cr_assert_eq(st.error, MESH_EPROTO);
        cr_assert_eq(mesh_session_recv(s, junk[i], junk_len[i], T0), MESH_ECLOSED);
        mesh_session_free(s);
        script_fini(&sc);
    }
    node_free(&b);
}

Test(session, out_of_order_frames)
{
    node b;
    node_new(&b, 2);
    /* DONE before HELLO. */
    mesh_session *s = responder_for(&b);
    script sc;
    script_init(&sc, s);
    cr_assert_eq(script_done(&sc, 0, 0), MESH_EPROTO);
    expect_error_frame(&sc, (uint32_t)-MESH_EPROTO);
    mesh_session_free(s);
    script_fini(&sc);
    /* A gap in frame numbers. */
    s = responder_for(&b);
    script_init(&sc, s);
    mesh_vector v;
    mesh_vector_init(&v);
    cr_assert_eq(script_hello(&sc, &v, 1, 1), MESH_OK);
    sc.fno++;
    cr_assert_eq(script_done(&sc, 0, 0), MESH_EPROTO);
    expect_error_frame(&sc, (uint32_t)-MESH_EPROTO);
    mesh_session_free(s);
    script_fini(&sc);
    /* DONE counts that do not match what arrived. */
    s = responder_for(&b);
    script_init(&sc, s);
    cr_assert_eq(script_hello(&sc, &v, 1, 1), MESH_OK);
    cr_assert_eq(script_done(&sc, 5, 1), MESH_EPROTO);
    mesh_session_free(s);
    script_fini(&sc);
    /* A full HELLO whose digest is wrong. */
    s = responder_for(&b);
    script_init(&sc, s);
    mesh_vector_push(&v, 42, 7);
    mesh_frame f = {.type = MESH_FRAME_HELLO, .version = 1, .version_min = 1,
                    .flags = MESH_HELLO_FULL, .total = 0};
    cr_assert_eq(script_send(&sc, &f), MESH_EPROTO);
    mesh_session_free(s);
    script_fini(&sc);
    mesh_vector_fini(&v);
    node_free(&b);
}

Test(session, more_ops_than_announced)
{
    node b, p;
    node_new(&b, 2);
    memset(p.pk, 9, 32);
    fx_author x;
    fx_author_init(&x, 52, "MZ/X");
    fx_rec r[3];
    for (int i = 0; i < 3; i++) r[i] = fx_next(&x, 0);
    /* The peer announced seq 2 of its stream: a third op is beyond what it can owe us. */
    script sc;
    scripted_start(&sc, &b, &p, &x, 2);
    cr_assert_eq(script_ops(&sc, r, 2), MESH_OK);
    cr_assert_eq(script_ops(&sc, r + 2, 1), MESH_EPROTO);
    expect_error_frame(&sc, (uint32_t)-MESH_EPROTO);
    cr_assert_eq(fx_counts(b.st).ops, 2);  /* what verified before is kept */
    mesh_session_free(sc.s);
    script_fini(&sc);
    /* An empty OPS frame is refused too: every frame must make progress. */
    scripted_start(&sc, &b, &p, &x, 2);
    cr_assert_eq(script_ops(&sc, r, 0), MESH_EPROTO);
    mesh_session_free(sc.s);
    script_fini(&sc);
    for (int i = 0; i < 3; i++) fx_rec_free(&r[i]);
    node_free(&b);
}

Test(session, wrong_version)
{
    node b;
    node_new(&b, 2);
    mesh_vector v;
    mesh_vector_init(&v);
    /* A peer that speaks only 2..3: no common version. */
    mesh_session *s = responder_for(&b);
    script sc;
    script_init(&sc, s);
    cr_assert_eq(script_hello(&sc, &v, 2, 3), MESH_EVERSION);
    mesh_frame f;
    cr_assert_eq(script_take(&sc, &f), MESH_OK);
    cr_assert_eq(f.type, MESH_FRAME_ERROR);
    cr_assert_eq(f.code, (uint32_t)-MESH_EVERSION);
    char msg[300];
    snprintf(msg, sizeof msg, "%.*s", (int)f.msg_len, f.msg);
    cr_assert(strstr(msg, "2..3") && strstr(msg, "1..1"), "%s", msg);
    mesh_session_free(s);
    script_fini(&sc);

    /* A peer that speaks 1..2 and appends a field to HELLO: both use 1. */
    s = responder_for(&b);
    script_init(&sc, s);
    uint8_t hello[64];
    mesh_buf hb;
    mesh_buf_init(&hb, sizeof hello);
    mesh_frame h = {.type = MESH_FRAME_HELLO, .version = 2, .version_min = 1, .fno = 1,
                    .flags = MESH_HELLO_FULL | 0x80};
    mesh_vector_digest(&v, h.digest);
    cr_assert_eq(mesh_frame_encode(&h, &hb), MESH_OK);
    hb.data[0] = 0x99;                          /* nine elements ... */
    uint8_t extra[] = {0x81, 0xa1, 'x', 0x01};  /* ... the ninth a map */
    mesh_buf_append(&hb, extra, sizeof extra);
    cr_assert_eq(mesh_session_recv(s, hb.data, hb.len, T0), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(script_take(&sc, &f), MESH_OK);
    cr_assert_eq(f.type, MESH_FRAME_HELLO);
    cr_assert_eq(script_take(&sc, &f), MESH_OK);
    cr_assert_eq(f.type, MESH_FRAME_DONE);
    cr_assert_eq(f.version, 1);
    /* ... but an OPS frame of version 2 is refused. */
    mesh_buf_reset(&hb);
    uint8_t ops2[] = {0x94, 0x02, 0x02, 0x02, 0x90};
    cr_assert_eq(mesh_session_recv(s, ops2, sizeof ops2, T0), MESH_EVERSION);
    expect_error_frame(&sc, (uint32_t)-MESH_EVERSION);
    mesh_buf_fini(&hb);
    mesh_session_free(s);
    script_fini(&sc);
    mesh_vector_fini(&v);
    node_free(&b);
}

Test(session, oversize_counts)
{
    node b;
    node_new(&b, 2);
    /* HELLO announcing 70000 entries. */
    mesh_session *s = responder_for(&b);
    script sc;
    script_init(&sc, s);
    mesh_frame f = {.type = MESH_FRAME_HELLO, .version = 1, .version_min = 1,
                    .flags = MESH_HELLO_FULL, .total = 70000};
    cr_assert_eq(script_send(&sc, &f), MESH_EPROTO);
    expect_error_frame(&sc, (uint32_t)-MESH_EPROTO);
    mesh_session_free(s);
    script_fini(&sc);
    /* An OPS frame whose array claims 5000 records, and one over the frame size limit. */
    static const uint8_t big_count[] = {0x94, 0x02, 0x01, 0x02, 0xdc, 0x27, 0x10, 0xc4, 0x01};
    s = responder_for(&b);
    cr_assert_eq(mesh_session_recv(s, big_count, sizeof big_count, T0), MESH_EPROTO);
    mesh_session_free(s);
    uint8_t *huge = calloc(1, MESH_FRAME_BYTES_MAX + 1);
    s = responder_for(&b);
    cr_assert_eq(mesh_session_recv(s, huge, MESH_FRAME_BYTES_MAX + 1, T0), MESH_EPROTO);
    mesh_session_free(s);
    free(huge);
    /* An ERROR from the peer ends the session without an answer. */
    s = responder_for(&b);
    script_init(&sc, s);
    mesh_frame e = {.type = MESH_FRAME_ERROR, .version = 1, .code = 12, .msg = "disk\nfull",
                    .msg_len = 9};
    cr_assert_eq(script_send(&sc, &e), MESH_ECLOSED);
    cr_assert_eq(mesh_session_send(s, &sc.out, T0), MESH_ECLOSED);
    mesh_session_stats st;
    mesh_session_stats_get(s, &st);
    cr_assert(strstr(st.error_msg, "disk?full"), "%s", st.error_msg);
    mesh_session_free(s);
    script_fini(&sc);
    node_free(&b);
}

Test(session, idle_timeout)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author x;
    fx_author_init(&x, 70, "MZ/X");
    fx_write(&b.st, 1, &x, 50, 0);
    mesh_session_opts o = {.idle_timeout_ms = 5000, .frame_ops_max = 10};
    mesh_session *sa = open_session(&a, &b, true, &o), *sb = open_session(&b, &a, false, &o);
    cr_assert_eq(mesh_session_expiry(sa), T0 + 5000);
    /* b answers HELLO and two OPS frames, then goes silent. */
    mesh_buf out;
    mesh_buf_init(&out, MESH_FRAME_BYTES_MAX);
    cr_assert_eq(mesh_session_send(sa, &out, T0 + 10), MESH_OK);
    cr_assert_eq(mesh_session_recv(sb, out.data, out.len, T0 + 10), MESH_OK);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(mesh_session_send(sb, &out, T0 + 20), MESH_OK);
        cr_assert_eq(mesh_session_recv(sa, out.data, out.len, T0 + 100), MESH_OK);
    }
    cr_assert_eq(mesh_session_expiry(sa), T0 + 5100);
    cr_assert_eq(mesh_session_handle_expiry(sa, T0 + 5099), MESH_OK);
    cr_assert_eq(mesh_session_state_get(sa), MESH_SESSION_ACTIVE);
    cr_assert_eq(mesh_session_handle_expiry(sa, T0 + 5100), MESH_ETIMEDOUT);
    cr_assert_eq(mesh_session_state_get(sa), MESH_SESSION_FAILED);
    cr_assert_eq(mesh_session_expiry(sa), UINT64_MAX);
    cr_assert_eq(fx_counts(a.st).ops, 20);  /* what arrived is stored */
    mesh_session_stats st;
    mesh_session_stats_get(sa, &st);
    cr_assert_eq(st.error, MESH_ETIMEDOUT);
    mesh_buf_fini(&out);
    mesh_session_free(sa);
    mesh_session_free(sb);
    node_free(&a);
    node_free(&b);
}

/* ---- Delta HELLOs and byte budgets ---------------------------------------------------------- */

static void fifty_streams(node *a, node *b, fx_author au[50])
{
    for (uint32_t i = 0; i < 50; i++) {
        char scope[16];
        snprintf(scope, sizeof scope, "T%u", i);
        fx_author_init(&au[i], 200 + i, scope);
        fx_write(i % 2 ? &a->st : &b->st, 1, &au[i], 3 + i, 0);
    }
}

Test(session, delta_hello_second_meeting)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author au[50];
    fifty_streams(&a, &b, au);
    result r1 = sync_pair(&a, &b, NULL, false);
    uint64_t first = r1.a.bytes_sent + r1.b.bytes_sent;
    /* Nothing new: both HELLOs are empty deltas. */
    result r2 = sync_pair(&a, &b, NULL, false);
    uint64_t second = r2.a.bytes_sent + r2.b.bytes_sent;
    cr_log_info("50 streams: first meeting %llu bytes, nothing new %llu bytes both ways",
                (unsigned long long)first, (unsigned long long)second);
    cr_assert_lt(second, 1024);
    cr_assert_lt(second, 100);
    cr_assert_eq(r2.a.round_trips, 1);
    /* Also with the roles swapped (each side keeps both vectors). */
    result r3 = sync_pair(&b, &a, NULL, false);
    cr_assert_lt(r3.a.bytes_sent + r3.b.bytes_sent, 100);
    /* One new op: one entry in a's delta. */
    fx_write(&a.st, 1, &au[1], 1, 0);
    result r4 = sync_pair(&a, &b, NULL, false);
    cr_assert_eq(r4.a.ops_sent, 1);
    cr_assert_eq(r4.b.round_trips + r4.a.round_trips, 1);
    assert_same(&a, &b);
    node_free(&a);
    node_free(&b);
}

static int forget_fn(mesh_txn *t, void *ctx) { return mesh_store_peer_forget(t, ctx); }

Test(session, lost_peer_state_falls_back)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author au[50];
    fifty_streams(&a, &b, au);
    sync_pair(&a, &b, NULL, false);
    fx_write(&a.st, 1, &au[3], 5, 0);
    fx_write(&b.st, 1, &au[4], 6, 0);
    /* b lost what it knew of a: a's delta cannot be rebuilt, b asks for the full vector. */
    cr_assert_eq(mesh_store_write(b.st, forget_fn, a.pk), MESH_OK);
    result r = sync_pair(&a, &b, NULL, false);
    cr_assert_eq(r.a.ops_sent, 5);
    cr_assert_eq(r.b.ops_sent, 6);
    cr_assert_eq(r.b.round_trips, 1);  /* its WANT */
    assert_same(&a, &b);
    /* Now a lost its state instead: it sends full, and cannot rebuild b's delta. */
    fx_write(&b.st, 1, &au[4], 2, 0);
    cr_assert_eq(mesh_store_write(a.st, forget_fn, b.pk), MESH_OK);
    r = sync_pair(&a, &b, NULL, false);
    cr_assert_eq(r.b.ops_sent, 2);
    cr_assert_eq(r.a.round_trips, 2);  /* HELLO, then its WANT */
    assert_same(&a, &b);
    /* Both recorded the same again: the next meeting is a pure delta. */
    r = sync_pair(&a, &b, NULL, false);
    cr_assert_lt(r.a.bytes_sent + r.b.bytes_sent, 100);
    node_free(&a);
    node_free(&b);
}

/* Goal (b): both hold N shared ops, each writes 10 new ones; one round trip and at most 1.1 x
 * the 20 new op records + 2 KB both ways. */
static void shared_plus_ten(size_t shared_ops)
{
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    mesh_store *both[2] = {a.st, b.st};
    fx_author au[4];
    for (uint32_t i = 0; i < 4; i++) {
        char scope[16];
        snprintf(scope, sizeof scope, "MZ/L%u", i);
        fx_author_init(&au[i], 300 + i, scope);
        fx_write(both, 2, &au[i], shared_ops / 4, 300);
    }
    uint64_t new_bytes = fx_write(&a.st, 1, &au[0], 10, 300);
    new_bytes += fx_write(&b.st, 1, &au[1], 10, 300);
    result r = sync_pair(&a, &b, NULL, false);
    uint64_t total = r.a.bytes_sent + r.b.bytes_sent;
    cr_log_info("%zu shared + 10 new each: %llu bytes both ways for %llu bytes of new op "
                "records (budget %llu), round trips %u/%u",
                shared_ops, (unsigned long long)total, (unsigned long long)new_bytes,
                (unsigned long long)(new_bytes * 11 / 10 + 2048), r.a.round_trips,
                r.b.round_trips);
    fprintf(stderr, "goal (b): %zu shared + 10 new each: %llu bytes both ways, new records %llu "
            "bytes, budget %llu, round trips initiator %u responder %u\n",
            shared_ops, (unsigned long long)total, (unsigned long long)new_bytes,
            (unsigned long long)(new_bytes * 11 / 10 + 2048), r.a.round_trips, r.b.round_trips);
    cr_assert_eq(r.a.ops_sent, 10);
    cr_assert_eq(r.b.ops_sent, 10);
    cr_assert_eq(r.a.round_trips, 1);
    cr_assert_eq(r.b.round_trips, 0);
    cr_assert_leq(total * 10, new_bytes * 11 + 20480);
    assert_same(&a, &b);
    node_free(&a);
    node_free(&b);
}

/* 20,000 shared ops keep the test quick; MESH_GOAL_B_OPS=100000 runs the full-size goal. */
Test(session, goal_b_bytes)
{
    const char *n = getenv("MESH_GOAL_B_OPS");
    shared_plus_ten(n ? (size_t)strtoull(n, NULL, 10) : 20000);
}

/* Throughput of one big one-way transfer (MESH_BULK_OPS, default 20,000 ops of ~300 bytes). */
Test(session, bulk_one_way)
{
    const char *env = getenv("MESH_BULK_OPS");
    size_t n = env ? (size_t)strtoull(env, NULL, 10) : 20000;
    node a, b;
    node_new(&a, 1);
    node_new(&b, 2);
    fx_author au[8];
    for (uint32_t i = 0; i < 8; i++) {
        char scope[16];
        snprintf(scope, sizeof scope, "MZ/B%u", i);
        fx_author_init(&au[i], 400 + i, scope);
        fx_write(&a.st, 1, &au[i], n / 8, 300);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    result r = sync_pair(&a, &b, NULL, false);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "bulk: %llu ops, %llu bytes in %.2f s: %.0f ops/s (no_sync stores)\n",
            (unsigned long long)r.a.ops_sent, (unsigned long long)r.a.bytes_sent, s,
            (double)r.a.ops_sent / s);
    cr_assert_eq(r.b.ops_applied, (n / 8) * 8);
    assert_same(&a, &b);
    node_free(&a);
    node_free(&b);
}
