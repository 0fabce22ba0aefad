/*
 * sync_bench.c - sync over the real transport (ZeroMQ CURVE on loopback, lib/net's event loop)
 * and the real engine, with the raw ZeroMQ CURVE baseline measured in the same run.
 *
 *   (a) catch-up: an empty node pulls every op from one that holds 1,000,000, verified and
 *       durably stored; ops/s and MB/s beside raw CURVE throughput with messages of the same
 *       size as the session's frames.
 *   (b) two nodes that already share 100,000 ops, each with 10 new: bytes both ways and round
 *       trips of one session, against the bytes of the 20 new ops themselves.
 *   (c) nothing new, 50 streams: bytes both ways.
 *
 * Each node runs its own loop (mesh_loop, as `meshsync run` does) on its own thread; the
 * syncing side runs a one-shot loop like `meshsync sync --peer`. `--smoke` runs tiny sizes
 * (ctest); the full run is `build/tests/sync_bench` (scripts/bench.sh runs it).
 */
#include <pthread.h>
#include <zmq.h>

#include <jansson.h>

#include "integration/net_helpers.h"
#include "net/log.h"
#include "net/loop.h"
#include "net/roster.h"

static char base[64];

/* ---- Running loops ----------------------------------------------------------------------- */

typedef struct server {
    mesh_node *node;
    mesh_loop *loop;
    pthread_t thread;
    volatile sig_atomic_t stop;
    int rc;
} server;

static void *server_main(void *arg)
{
    server *s = arg;
    s->rc = mesh_loop_run(s->loop);
    return NULL;
}

static void die(const char *what)
{
    fprintf(stderr, "sync_bench: %s: %s\n", what, mesh_errmsg());
    exit(1);
}

static void server_start(server *s, const char *dir, const mesh_roster *roster)
{
    memset(s, 0, sizeof *s);
    if (mesh_node_open(dir, NULL, &s->node) != MESH_OK) die("open server node");
    mesh_loop_opts o = {
        .node = s->node,
        .listen = "tcp://127.0.0.1:0",
        .roster = roster,
        .stop = &s->stop,
        .session_idle_ms = 120000,
    };
    if (mesh_loop_new(&o, &s->loop) != MESH_OK) die("start server loop");
    pthread_create(&s->thread, NULL, server_main, s);
}

static void server_stop(server *s)
{
    s->stop = 1;
    pthread_join(s->thread, NULL);
    mesh_loop_free(s->loop);
    mesh_node_close(s->node);
}

typedef struct result {
    double seconds;
    uint64_t ops_sent, ops_received, ops_applied, bytes_sent, bytes_received, round_trips;
    uint64_t frames;   /* frames the initiator received */
    char error[256];
} result;

static void on_progress(const char *job_json, void *ctx)
{
    json_t **last = ctx;
    json_error_t je;
    json_t *j = json_loads(job_json, 0, &je);
    if (j == NULL) return;
    json_decref(*last);
    *last = j;
}

static uint64_t ju(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

/* Runs one sync from the node in `dir` (the initiator) with the server, like `meshsync sync`. */
static result sync_once(const char *dir, const mesh_roster *roster, const char *server_key,
                        const char *endpoint)
{
    result r;
    memset(&r, 0, sizeof r);
    mesh_node *n = NULL;
    if (mesh_node_open(dir, NULL, &n) != MESH_OK) die("open client node");
    char spec[256];
    snprintf(spec, sizeof spec, "%s@%s", server_key, endpoint);
    const char *peers[1] = {spec};
    json_t *last = NULL;
    mesh_loop_opts o = {
        .node = n,
        .peers = peers,
        .npeers = 1,
        .roster = roster,
        .once = true,
        .session_idle_ms = 120000,
        .progress = on_progress,
        .progress_ctx = &last,
    };
    mesh_loop *l = NULL;
    uint64_t t0 = nh_now_ms();
    if (mesh_loop_new(&o, &l) != MESH_OK) die("start client loop");
    int rc = mesh_loop_run(l);
    r.seconds = (double)(nh_now_ms() - t0) / 1000.0;
    mesh_loop_free(l);
    mesh_node_close(n);
    json_t *p = last ? json_array_get(json_object_get(last, "peers"), 0) : NULL;
    if (rc != MESH_OK || p == NULL) {
        snprintf(r.error, sizeof r.error, "%s", mesh_errmsg());
        fprintf(stderr, "sync_bench: sync failed: %s\n", r.error);
        exit(1);
    }
    r.ops_sent = ju(p, "ops_sent");
    r.ops_received = ju(p, "ops_received");
    r.ops_applied = ju(p, "ops_applied");
    r.bytes_sent = ju(p, "bytes_sent");
    r.bytes_received = ju(p, "bytes_received");
    r.round_trips = ju(p, "round_trips");
    r.frames = ju(p, "frames_received");
    json_decref(last);
    return r;
}

/* ---- Raw ZeroMQ CURVE baseline ------------------------------------------------------------- */

typedef struct raw_rx {
    void *ctx;
    char endpoint[64];
    char server_sk[41];
    size_t count;
    int ready;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} raw_rx;

static void *raw_receiver(void *arg)
{
    raw_rx *r = arg;
    void *s = zmq_socket(r->ctx, ZMQ_PULL);
    int one = 1;
    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, r->server_sk, 40);
    zmq_bind(s, "tcp://127.0.0.1:*");
    size_t len = sizeof r->endpoint;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, r->endpoint, &len);
    pthread_mutex_lock(&r->mu);
    r->ready = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (size_t i = 0; i < r->count; i++) zmq_msg_recv(&m, s, 0);
    zmq_msg_close(&m);
    zmq_close(s);
    return NULL;
}

/* Sends `count` messages of `size` bytes PUSH -> PULL over loopback with CURVE; returns the
 * seconds until the last one was received. */
static double raw_curve(size_t size, size_t count)
{
    char server_pk[41], server_sk[41], client_pk[41], client_sk[41];
    zmq_curve_keypair(server_pk, server_sk);
    zmq_curve_keypair(client_pk, client_sk);
    raw_rx r = {.ctx = zmq_ctx_new(), .count = count};
    memcpy(r.server_sk, server_sk, sizeof server_sk);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pthread_t th;
    pthread_create(&th, NULL, raw_receiver, &r);
    pthread_mutex_lock(&r.mu);
    while (!r.ready) pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    void *s = zmq_socket(r.ctx, ZMQ_PUSH);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pk, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, client_pk, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, client_sk, 40);
    zmq_connect(s, r.endpoint);
    uint8_t *buf = malloc(size);
    mesh_random(buf, size);
    uint64_t t0 = nh_now_ms();
    for (size_t i = 0; i < count; i++) zmq_send(s, buf, size, 0);
    pthread_join(th, NULL);
    double secs = (double)(nh_now_ms() - t0) / 1000.0;
    free(buf);
    zmq_close(s);
    zmq_ctx_term(r.ctx);
    return secs;
}

/* ---- Scenarios ----------------------------------------------------------------------------- */

typedef struct pair {
    char a[128], b[128];
    char ka[MESH_KEY_STR_LEN], kb[MESH_KEY_STR_LEN];
    mesh_roster roster;
} pair;

static void pair_make(pair *p, const char *name)
{
    snprintf(p->a, sizeof p->a, "%s/%s-a", base, name);
    snprintf(p->b, sizeof p->b, "%s/%s-b", base, name);
    if (nh_init_node(p->a, p->ka) != MESH_OK || nh_init_node(p->b, p->kb) != MESH_OK)
        die("init nodes");
    uint8_t keys[2][32];
    mesh_hex_decode(p->ka, keys[0], 32);
    mesh_hex_decode(p->kb, keys[1], 32);
    if (mesh_roster_from_keys((const uint8_t(*)[32])keys, 2, &p->roster) != MESH_OK)
        die("roster");
}

/* Server a, client b: one session, b dials. */
static result pair_sync(pair *p)
{
    server s;
    server_start(&s, p->a, &p->roster);
    result r = sync_once(p->b, &p->roster, p->ka, mesh_loop_endpoint(s.loop));
    server_stop(&s);
    return r;
}

/* Writes `streams` author streams of `per` ops each into the node in `dir` (the node's own
 * stream is one of them), by lending the node other identities. */
static void write_streams(const char *dir, unsigned streams, uint64_t per)
{
    if (nh_write_ops(dir, per, NULL) != MESH_OK) die("write ops");
    for (unsigned i = 1; i < streams; i++) {
        /* Another author: a fresh identity file swapped in, then the node's own put back. */
        char id[300], saved[300];
        snprintf(id, sizeof id, "%s/identity.key", dir);
        snprintf(saved, sizeof saved, "%s/identity.key.own", dir);
        if (rename(id, saved) != 0) die("swap identity");
        mesh_identity other;
        mesh_identity_generate(&other);
        if (mesh_identity_save(&other, id, NULL) != MESH_OK) die("save identity");
        mesh_identity_wipe(&other);
        if (nh_write_ops(dir, per, NULL) != MESH_OK) die("write ops");
        if (rename(saved, id) != 0) die("restore identity");
    }
}

/* Bytes of the last `n` ops of the node's own stream as they travel: op bytes + signature. */
static int last_ops_fn(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    (void)seq;
    *(uint64_t *)ctx += rec->op_len + MESH_SIGNATURE_BYTES;
    return 0;
}

typedef struct last_ctx {
    mesh_node *n;
    uint64_t count;
    uint64_t bytes;
} last_ctx;

static int last_ops_txn(mesh_txn *t, void *vctx)
{
    last_ctx *c = vctx;
    mesh_stream st;
    int rc = mesh_store_stream_get(t, c->n->sid, &st);
    if (rc != MESH_OK) return rc;
    return mesh_store_stream_ops(t, c->n->sid, st.seq - c->count + 1, last_ops_fn, &c->bytes);
}

static uint64_t last_ops_bytes(const char *dir, uint64_t count)
{
    mesh_node *n = NULL;
    if (mesh_node_open(dir, NULL, &n) != MESH_OK) die("open node");
    last_ctx c = {.n = n, .count = count};
    if (mesh_store_read(n->store, last_ops_txn, &c) != MESH_OK) die("read ops");
    mesh_node_close(n);
    return c.bytes;
}

static void check_converged(const pair *p, uint64_t ops)
{
    nh_counts ca, cb;
    if (nh_counts_get(p->a, &ca) != MESH_OK || nh_counts_get(p->b, &cb) != MESH_OK)
        die("counts");
    if (ca.ops != ops || cb.ops != ops || strcmp(ca.digest, cb.digest) != 0) {
        fprintf(stderr, "sync_bench: not converged: a %llu ops %s, b %llu ops %s (expected %llu)\n",
                (unsigned long long)ca.ops, ca.digest, (unsigned long long)cb.ops, cb.digest,
                (unsigned long long)ops);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0;
    uint64_t n_catchup = smoke ? 2000 : 1000000;
    /* --catchup N: another size for (a), for profiling. */
    if (argc > 2 && strcmp(argv[1], "--catchup") == 0) n_catchup = strtoull(argv[2], NULL, 10);
    uint64_t n_shared = smoke ? 1000 : 100000;
    uint64_t n_new = 10;
    unsigned n_streams = 50;
    uint64_t per_stream = smoke ? 5 : 100;
    mesh_log_set_level(MESH_LOG_WARN);
    if (mesh_crypto_init() != MESH_OK) die("crypto");
    snprintf(base, sizeof base, "/tmp/sync_bench-XXXXXX");
    if (mkdtemp(base) == NULL) die("mkdtemp");

    /* (a) catch-up */
    pair a;
    pair_make(&a, "catchup");
    uint64_t t0 = nh_now_ms();
    if (nh_write_ops(a.a, n_catchup, NULL) != MESH_OK) die("write ops");
    fprintf(stderr, "generated %llu signed ops in %.1f s\n", (unsigned long long)n_catchup,
            (double)(nh_now_ms() - t0) / 1000);
    result ra = pair_sync(&a);
    check_converged(&a, n_catchup);
    double mb = (double)ra.bytes_received / 1e6;
    double ops_s = (double)ra.ops_applied / ra.seconds;
    /* The baseline moves the same bytes in messages of the session's average frame size. */
    size_t frame_size = (size_t)(ra.bytes_received / (ra.frames ? ra.frames : 1));
    size_t raw_count = (size_t)(ra.bytes_received / frame_size) + 1;
    double raw_s = raw_curve(frame_size, raw_count);
    double raw_mb_s = (double)raw_count * (double)frame_size / 1e6 / raw_s;
    double bytes_per_op = (double)ra.bytes_received / (double)ra.ops_applied;
    double raw_ops_s = (double)raw_count * (double)frame_size / bytes_per_op / raw_s;

    /* (b) 100,000 shared, 10 new on each side */
    pair b;
    pair_make(&b, "shared");
    if (nh_write_ops(b.a, n_shared, NULL) != MESH_OK) die("write ops");
    (void)pair_sync(&b);  /* they meet once: now they share n_shared ops */
    check_converged(&b, n_shared);
    if (nh_write_ops(b.a, n_new, NULL) != MESH_OK || nh_write_ops(b.b, n_new, NULL) != MESH_OK)
        die("write new ops");
    uint64_t new_bytes = last_ops_bytes(b.a, n_new) + last_ops_bytes(b.b, n_new);
    result rb = pair_sync(&b);
    check_converged(&b, n_shared + 2 * n_new);
    uint64_t rb_total = rb.bytes_sent + rb.bytes_received;
    double rb_goal = 1.1 * (double)new_bytes + 2048;

    /* (c) nothing new, 50 streams */
    pair c;
    pair_make(&c, "streams");
    write_streams(c.a, n_streams, per_stream);
    (void)pair_sync(&c);
    check_converged(&c, (uint64_t)n_streams * per_stream);
    result rc = pair_sync(&c);
    check_converged(&c, (uint64_t)n_streams * per_stream);
    uint64_t rc_total = rc.bytes_sent + rc.bytes_received;

    printf("sync_bench%s: loopback, ZeroMQ CURVE, durable LMDB stores (2 cores)\n",
           smoke ? " --smoke" : "");
    printf("\n(a) catch-up of an empty node from one holding %llu ops\n",
           (unsigned long long)n_catchup);
    printf("  %-44s %12.0f ops/s %9.1f MB/s  (%llu ops, %.1f MB in %.2f s)\n",
           "meshsync session (verified + durably stored)", ops_s, mb / ra.seconds,
           (unsigned long long)ra.ops_applied, mb, ra.seconds);
    printf("  %-44s %12.0f ops/s %9.1f MB/s  (%zu msgs of %zu B in %.2f s)\n",
           "raw ZeroMQ CURVE PUSH/PULL, same bytes", raw_ops_s, raw_mb_s, raw_count, frame_size,
           raw_s);
    printf("  %-44s %11.0f%%  goal: >= 100,000 ops/s: %s\n", "meshsync / raw (MB/s)",
           100.0 * (mb / ra.seconds) / raw_mb_s, ops_s >= 100000 ? "met" : "NOT met");
    printf("\n(b) two nodes sharing %llu ops, each with %llu new\n", (unsigned long long)n_shared,
           (unsigned long long)n_new);
    printf("  %-44s %8llu B sent + %llu B received = %llu B, %llu round trip(s)\n",
           "one session", (unsigned long long)rb.bytes_sent, (unsigned long long)rb.bytes_received,
           (unsigned long long)rb_total, (unsigned long long)rb.round_trips);
    printf("  %-44s %8llu B (op bytes + signatures)\n", "the 20 new ops themselves",
           (unsigned long long)new_bytes);
    printf("  %-44s %8.0f B and 1 round trip: %s\n", "goal: <= 1.1 x ops + 2 KB", rb_goal,
           (double)rb_total <= rb_goal && rb.round_trips <= 1 ? "met" : "NOT met");
    printf("\n(c) nothing new, %u streams (%llu ops each)\n", n_streams,
           (unsigned long long)per_stream);
    printf("  %-44s %8llu B sent + %llu B received = %llu B, %llu round trip(s)\n",
           "one session", (unsigned long long)rc.bytes_sent, (unsigned long long)rc.bytes_received,
           (unsigned long long)rc_total, (unsigned long long)rc.round_trips);
    printf("  %-44s %s\n", "goal: <= 1 KB both ways", rc_total <= 1024 ? "met" : "NOT met");
    printf("\n(session bytes are sync frames; each ZeroMQ message adds a %u-byte session header, "
           "ZMTP framing and CURVE's 33 bytes)\n", 10u);
    mesh_roster_fini(&a.roster);
    mesh_roster_fini(&b.roster);
    mesh_roster_fini(&c.roster);
    nh_rm_rf(base);
    return 0;
}
