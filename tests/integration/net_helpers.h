/*
 * net_helpers.h - helpers shared by the network integration tests and tests/bench/sync_bench.c:
 * temporary nodes, a roster, writing many signed ops into a node fast (straight through the
 * node's append path, 10,000 per transaction, not one `meshsync put` per op), free ports,
 * daemons as child processes, and reading a node's counts.
 *
 * Header-only (static functions) so each test executable includes what it uses; the test
 * executables link every library layer, so the node internals are available here.
 */
#ifndef MESH_TEST_NET_HELPERS_H
#define MESH_TEST_NET_HELPERS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/node_int.h"
#include "meshsync.h"
#include "model/body.h"
#include "model/hlc.h"
#include "model/uuid.h"

#define NH_OPS_PER_TXN 10000u

static inline uint64_t nh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void nh_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int nh_rm_fn(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void nh_rm_rf(const char *dir) { nftw(dir, nh_rm_fn, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- Writing ops fast ---- */

#define NH_GEN_TYPES_MAX 4

/* A generator of signed create ops in a node's own stream. Op i (counted from the first) is of
 * types[pick(i)] with bodies[pick(i)]; pick NULL means type 0 throughout. */
typedef struct nh_gen {
    mesh_node *n;
    uint64_t left, done;
    size_t ntypes;
    const char *types[NH_GEN_TYPES_MAX];
    mesh_buf bodies[NH_GEN_TYPES_MAX];
    int (*pick)(uint64_t i);
    uint8_t *arena;                  /* encoded ops of one batch */
    size_t arena_cap;
    mesh_oprec *recs;
    uint8_t (*sigs)[MESH_SIGNATURE_BYTES];
} nh_gen;

/* Builds, signs and ingests one batch in one transaction: what mesh_node_append does per op,
 * batched, so that a million-op store takes seconds rather than minutes. */
static int nh_gen_fn(mesh_txn *t, void *vctx)
{
    nh_gen *g = vctx;
    mesh_node *n = g->n;
    uint64_t batch = g->left < NH_OPS_PER_TXN ? g->left : NH_OPS_PER_TXN;
    mesh_stream st;
    int rc = mesh_store_stream_get(t, n->sid, &st);
    if (rc == MESH_ENOTFOUND) {
        st.seq = 0;
        memset(st.tip, 0, sizeof st.tip);
    } else if (rc != MESH_OK) {
        return rc;
    }
    uint64_t hlc = 0;
    if ((rc = mesh_store_meta_get_u64(t, "hlc", &hlc)) != MESH_OK) return rc;
    uint8_t prev[MESH_HASH_BYTES];
    memcpy(prev, st.tip, sizeof prev);
    size_t used = 0;
    mesh_buf enc;
    mesh_buf_init(&enc, MESH_OP_BYTES_MAX);
    for (uint64_t i = 0; i < batch; i++) {
        int ty = g->pick ? g->pick(g->done + i) : 0;
        mesh_op op;
        memset(&op, 0, sizeof op);
        op.kind = MESH_OP_CREATE;
        op.type = g->types[ty];
        op.type_len = strlen(op.type);
        uint8_t r[10];
        mesh_random(r, sizeof r);
        uint64_t now = mesh_node_now_ms(n);
        mesh_uuid_v7(now, r, op.entity);
        op.row_version = 1;
        op.body = g->bodies[ty].data;
        op.body_len = g->bodies[ty].len;
        memcpy(op.author, n->id.pk, MESH_KEY_BYTES);
        op.scope = n->scope;
        op.scope_len = n->scope_len;
        op.seq = st.seq + 1 + i;
        memcpy(op.prev, prev, sizeof prev);
        hlc = mesh_hlc_tick(hlc, now);
        op.hlc = hlc;
        mesh_buf_reset(&enc);
        if ((rc = mesh_op_encode(&op, &enc)) != MESH_OK) break;
        if (used + enc.len > g->arena_cap) {
            rc = mesh_err(MESH_ENOMEM, "generator arena full");
            break;
        }
        memcpy(g->arena + used, enc.data, enc.len);
        mesh_op_hash(enc.data, enc.len, prev);
        mesh_sign(&n->id, MESH_DOMAIN_OP, prev, sizeof prev, g->sigs[i]);
        g->recs[i] = (mesh_oprec){.op = g->arena + used, .op_len = enc.len, .sig = g->sigs[i]};
        used += enc.len;
    }
    mesh_buf_fini(&enc);
    if (rc != MESH_OK) return rc;
    if ((rc = mesh_store_meta_put_u64(t, "hlc", hlc)) != MESH_OK) return rc;
    mesh_ingest_report rep;
    memset(&rep, 0, sizeof rep);
    rc = mesh_store_ingest(t, g->recs, batch, MESH_INGEST_ATOMIC, &rep);
    if (rc == MESH_OK && rep.applied != batch)
        rc = mesh_err(MESH_EINTERNAL, "generated ops not applied: %s", rep.first_error_msg);
    return rc;
}

/*
 * Appends `count` signed create ops (households of ~200 bytes) to the node in `dir`, which must
 * not be open elsewhere in this process. `marker`, if not NULL, is put in every body (the
 * tamper test finds op bytes by it). Returns MESH_OK or the library's error.
 */
/* Writes g->left ops with the generator's types and bodies (already set), then frees the
 * bodies. The node must be open in this process only. */
static inline int nh_gen_run(nh_gen *g)
{
    int rc = MESH_OK;
    g->arena_cap = (size_t)NH_OPS_PER_TXN * 1024;
    g->arena = malloc(g->arena_cap);
    g->recs = calloc(NH_OPS_PER_TXN, sizeof *g->recs);
    g->sigs = calloc(NH_OPS_PER_TXN, sizeof *g->sigs);
    if (g->arena == NULL || g->recs == NULL || g->sigs == NULL) rc = MESH_ENOMEM;
    while (rc == MESH_OK && g->left > 0) {
        uint64_t batch = g->left < NH_OPS_PER_TXN ? g->left : NH_OPS_PER_TXN;
        rc = mesh_store_write(g->n->store, nh_gen_fn, g);
        if (rc == MESH_OK) {
            g->left -= batch;
            g->done += batch;
        }
    }
    free(g->arena);
    free(g->recs);
    free(g->sigs);
    for (size_t i = 0; i < g->ntypes; i++) mesh_buf_fini(&g->bodies[i]);
    return rc;
}

static inline int nh_write_ops(const char *dir, uint64_t count, const char *marker)
{
    mesh_node *n = NULL;
    int rc = mesh_node_open(dir, NULL, &n);
    if (rc != MESH_OK) return rc;
    nh_gen g = {.n = n, .left = count, .ntypes = 1, .types = {"household"}};
    mesh_buf_init(&g.bodies[0], MESH_OP_BYTES_MAX);
    char json[512];
    snprintf(json, sizeof json,
             "{\"tenantId\":\"mz\",\"memberCount\":4,\"address\":{\"locality\":{\"code\":"
             "\"MZ_NAMPULA_ERATI_L01\"},\"latitude\":-13.9,\"longitude\":39.2},"
             "\"source\":\"%s\",\"householdType\":\"FAMILY\",\"additionalFields\":"
             "{\"schema\":\"Household\",\"version\":1,\"fields\":[]}}",
             marker ? marker : "bench-generator");
    rc = mesh_body_from_json(json, strlen(json), &g.bodies[0]);
    if (rc == MESH_OK) rc = nh_gen_run(&g);
    else mesh_buf_fini(&g.bodies[0]);
    mesh_node_close(n);
    return rc;
}

/* Appends one op per call with a body holding `marker` (distinct markers find distinct ops). */
static inline int nh_write_marked_ops(const char *dir, unsigned count, const char *prefix)
{
    for (unsigned i = 0; i < count; i++) {
        char marker[64];
        snprintf(marker, sizeof marker, "%s-%04u", prefix, i + 1);
        int rc = nh_write_ops(dir, 1, marker);
        if (rc != MESH_OK) return rc;
    }
    return MESH_OK;
}

/* ---- Nodes and rosters ---- */

/* Creates a node in `dir` and copies its 64-hex key into `key` (65 bytes). */
static inline int nh_init_node(const char *dir, char key[MESH_KEY_STR_LEN])
{
    int rc = mesh_node_init(dir, NULL);
    if (rc != MESH_OK) return rc;
    mesh_node *n = NULL;
    rc = mesh_node_open(dir, NULL, &n);
    if (rc != MESH_OK) return rc;
    mesh_node_identity(n, key);
    mesh_node_close(n);
    return MESH_OK;
}

/* Writes a roster file with the given keys to `path`. */
static inline int nh_write_roster(const char *path, const char *const *keys, size_t n)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) return -1;
    fputs("# team roster written by a test\n", f);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s  # member %zu\n", keys[i], i);
    return fclose(f) == 0 ? 0 : -1;
}

typedef struct nh_counts {
    uint64_t ops, pending, streams;
    char digest[MESH_HASH_STR_LEN];
} nh_counts;

/* Reads a node's counts in this process (LMDB allows it beside a daemon in another process). */
static inline int nh_counts_get(const char *dir, nh_counts *c)
{
    memset(c, 0, sizeof *c);
    mesh_node *n = NULL;
    int rc = mesh_node_open(dir, NULL, &n);
    if (rc != MESH_OK) return rc;
    mesh_status st;
    rc = mesh_node_status(n, &st);
    mesh_node_close(n);
    if (rc != MESH_OK) return rc;
    c->ops = st.ops;
    c->pending = st.pending;
    c->streams = st.streams;
    memcpy(c->digest, st.digest, sizeof c->digest);
    return MESH_OK;
}

/* ---- Ports ---- */

/* A port that is free for both TCP and UDP on every address right now. */
static inline uint16_t nh_free_port(void)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        int t = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
        socklen_t al = sizeof a;
        if (bind(t, (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(t, (struct sockaddr *)&a, &al) != 0) {
            close(t);
            continue;
        }
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        int ok = bind(u, (struct sockaddr *)&a, sizeof a) == 0;
        close(u);
        close(t);
        if (ok) return ntohs(a.sin_port);
    }
    return 0;
}

/* ---- Daemons ---- */

typedef struct nh_daemon {
    pid_t pid;
    char dir[256];
    char log[300];
    char endpoint[64];
    uint16_t port;
} nh_daemon;

/*
 * Starts `meshsync run --data DIR --listen tcp://127.0.0.1:PORT` plus `extra` arguments
 * (NULL-terminated), stderr appended to DIR.log. `prefix` (NULL-terminated, may be NULL) runs
 * the daemon under another program, e.g. {"ip", "netns", "exec", "ns1", NULL}.
 */
static inline int nh_daemon_start(nh_daemon *d, const char *const *prefix, const char *cli,
                                  const char *listen_host, const char *const *extra)
{
    if (d->port == 0) d->port = nh_free_port();
    snprintf(d->endpoint, sizeof d->endpoint, "tcp://%s:%u", listen_host, (unsigned)d->port);
    size_t dl = strlen(d->dir);
    if (dl + 5 > sizeof d->log) return -1;
    memcpy(d->log, d->dir, dl);
    memcpy(d->log + dl, ".log", 5);
    const char *argv[64];
    size_t n = 0;
    for (size_t i = 0; prefix && prefix[i]; i++) argv[n++] = prefix[i];
    argv[n++] = cli;
    argv[n++] = "run";
    argv[n++] = "--data";
    argv[n++] = d->dir;
    argv[n++] = "--listen";
    argv[n++] = d->endpoint;
    for (size_t i = 0; extra && extra[i] && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nul = open("/dev/null", O_RDWR);
        if (fd >= 0) dup2(fd, 2);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    return 0;
}

/* Sends `sig` and waits for the daemon (up to 10 s, then SIGKILL). Returns its wait status. */
static inline int nh_daemon_stop(nh_daemon *d, int sig)
{
    if (d->pid <= 0) return -1;
    kill(d->pid, sig);
    int status = 0;
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid) {
            d->pid = 0;
            return status;
        }
        nh_sleep_ms(10);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &status, 0);
    d->pid = 0;
    return status;
}

/* True if the file at `path` contains `needle`. */
static inline int nh_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* Prints a file to stderr (a failing test shows its daemons' logs). */
static inline void nh_dump(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return;
    fprintf(stderr, "---- %s ----\n", path);
    char line[4096];
    while (fgets(line, sizeof line, f)) fputs(line, stderr);
    fclose(f);
}

#endif
