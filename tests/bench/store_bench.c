/*
 * store_bench.c - op-log ingest throughput against raw LMDB, measured in the same run.
 *
 * Ingests N ops (~200-byte bodies, 10 streams) in durable transactions of 1,000 and of 10,000
 * ops, and runs a raw LMDB loop that puts the same keys and values with the same batching and
 * durability. Prints ops/s and the ratio meshsync/raw (goal >= 0.5 at both batch sizes), the
 * rate of single durable mesh_put calls (goal >= 1,000/s), and peak RSS.
 *
 *   store_bench            1,000,000 ops (a few minutes)
 *   store_bench --smoke    a tiny run for CI
 *   store_bench --ops N
 *   store_bench --batch N  one batch size only (for profiling)
 *
 * The raw loop's keys are derived before it is timed: it measures LMDB alone.
 */
#include <lmdb.h>
#include <sys/resource.h>
#include <time.h>

#include "api/node_int.h"
#include "store/store.h"
#include "store/store_int.h"
#include "testlib.h"

#define STREAMS 10
#define ROUNDS 5

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    qsort(v, ROUNDS, sizeof *v, dcmp);
    return v[ROUNDS / 2];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static tl_rec *recs;
static uint8_t (*raw_keys)[MESH_STORE_LOG_KEY_BYTES]; /* the raw loop's keys, derived before it is timed */
static size_t nrecs;

static void generate(size_t n)
{
    recs = calloc(n, sizeof *recs);
    tl_stream s[STREAMS];
    for (int i = 0; i < STREAMS; i++) tl_stream_init(&s[i], (uint8_t)(100 + i), "MZ/NAMPULA/ERATI");
    /* A household body of about 200 bytes, varied per op. */
    char json[512];
    for (size_t i = 0; i < n; i++) {
        size_t k = i / (n / STREAMS);
        if (k >= STREAMS) k = STREAMS - 1;
        snprintf(json, sizeof json,
                 "{\"tenantId\":\"mz\",\"memberCount\":%zu,\"householdType\":\"FAMILY\","
                 "\"address\":{\"locality\":{\"code\":\"ERATI_L%03zu\"},\"latitude\":-14.%06zu,"
                 "\"longitude\":39.%06zu},\"additionalFields\":{\"schema\":\"HH\",\"version\":1}}",
                 i % 9, i % 1000, i, i * 7 % 1000000);
        mesh_buf body = tl_body(json);
        mesh_op op = {.kind = MESH_OP_CREATE, .type = "household", .type_len = 9,
                      .row_version = 1, .body = body.data, .body_len = body.len};
        tl_entity_id(op.entity, i);
        recs[i] = tl_stream_add(&s[k], &op);
        mesh_buf_fini(&body);
    }
    nrecs = n;
    /* The op-log key (entity | rowVersion | author), so the raw loop does nothing but put. */
    raw_keys = malloc(n * sizeof *raw_keys);
    for (size_t i = 0; i < n; i++) {
        mesh_op op;
        if (mesh_op_decode(recs[i].bytes + 64, recs[i].op_len, &op) != MESH_OK) abort();
        log_key(raw_keys[i], op.entity, op.row_version, op.author);
    }
}

static double bench_meshsync(size_t batch)
{
    char *dir = tl_tmpdir("bench-ms");
    mesh_store *st;
    mesh_store_opts o = {.create = true, .no_sync = getenv("BENCH_NOSYNC") != NULL};
    if (mesh_store_open(dir, &o, &st) != MESH_OK) abort();
    mesh_oprec *v = malloc(sizeof *v * batch);
    double t0 = now_s();
    for (size_t i = 0; i < nrecs; i += batch) {
        size_t n = nrecs - i < batch ? nrecs - i : batch;
        for (size_t j = 0; j < n; j++) v[j] = tl_rec_view(&recs[i + j]);
        mesh_ingest_report rep;
        if (tl_ingest(st, v, n, MESH_INGEST_PARTIAL, &rep) != MESH_OK || rep.applied != n) {
            fprintf(stderr, "ingest failed: %s %s\n", mesh_errmsg(), rep.first_error_msg);
            abort();
        }
    }
    double dt = now_s() - t0;
    free(v);
    mesh_store_close(st);
    tl_rmtree(dir);
    return nrecs / dt;
}

/* Puts `count` records (cycling through the input) in durable transactions of `batch`: the
 * same key (entity | rowVersion | author) and value (signature | op) as the op-log. */
static double bench_raw(size_t count, size_t batch)
{
    char *dir = tl_tmpdir("bench-raw");
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    mdb_env_create(&env);
    mdb_env_set_mapsize(env, 64ull << 30);
    if (mdb_env_open(env, dir, 0, 0600) != 0) abort();
    double t0 = now_s();
    for (size_t i = 0; i < count; i += batch) {
        size_t n = count - i < batch ? count - i : batch;
        mdb_txn_begin(env, NULL, 0, &txn);
        mdb_dbi_open(txn, NULL, 0, &dbi);
        for (size_t j = 0; j < n; j++) {
            size_t x = (i + j) % nrecs;
            MDB_val k = {MESH_STORE_LOG_KEY_BYTES, raw_keys[x]}, val = {64 + recs[x].op_len, recs[x].bytes};
            if (mdb_put(txn, dbi, &k, &val, 0) != 0) abort();
        }
        if (mdb_txn_commit(txn) != 0) abort();
    }
    double dt = now_s() - t0;
    mdb_env_close(env);
    tl_rmtree(dir);
    return count / dt;
}

static double bench_single_put(int n)
{
    char *dir = tl_tmpdir("bench-put");
    char data[512];
    snprintf(data, sizeof data, "%s/node", dir);
    mesh_node *node;
    if (mesh_node_init(data, NULL) != MESH_OK || mesh_node_open(data, NULL, &node) != MESH_OK) {
        fprintf(stderr, "%s\n", mesh_errmsg());
        abort();
    }
    const char *json = "{\"tenantId\":\"mz\",\"memberCount\":4,\"householdType\":\"FAMILY\","
                       "\"address\":{\"locality\":{\"code\":\"ERATI_L001\"}}}";
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        if (mesh_put(node, "household", NULL, json, strlen(json), NULL) != MESH_OK) abort();
    double dt = now_s() - t0;
    mesh_node_close(node);
    tl_rmtree(dir);
    return n / dt;
}

int main(int argc, char **argv)
{
    size_t n = 1000000;
    int puts = 2000;
    size_t only_batch = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0) {
            n = 4000;
            puts = 50;
        } else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
            n = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            only_batch = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: store_bench [--smoke | --ops N] [--batch N]\n");
            return 2;
        }
    }
    if (mesh_crypto_init() != MESH_OK) return 1;
    printf("store_bench: generating %zu signed ops in %d streams...\n", n, STREAMS);
    generate(n);
    size_t bytes = 0;
    for (size_t i = 0; i < nrecs; i++) bytes += recs[i].op_len;
    printf("  average op %zu bytes (+64 signature), input %.0f MB held in memory\n", bytes / n,
           (bytes + 64.0 * n) / 1e6);
    long rss_input = peak_rss_mb();

    /* Alternate the two loops and keep the median of each: the machine is shared and noisy. */
    printf("\n%-8s %14s %14s %8s   (median of %d alternating rounds)\n", "batch",
           "meshsync op/s", "raw LMDB op/s", "ratio", ROUNDS);
    size_t batches[] = {1000, 10000}, nbatches = 2;
    if (only_batch) {
        batches[0] = only_batch;
        nbatches = 1;
    }
    for (size_t b = 0; b < nbatches; b++) {
        double raw[ROUNDS], ms[ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            raw[r] = bench_raw(nrecs, batches[b]);
            ms[r] = bench_meshsync(batches[b]);
        }
        char rounds[ROUNDS * 8] = "";
        for (int r = 0; r < ROUNDS; r++)
            snprintf(rounds + strlen(rounds), sizeof rounds - strlen(rounds), " %.2f",
                     ms[r] / raw[r]);
        double mr = median(raw), mm = median(ms);
        printf("%-8zu %14.0f %14.0f %8.2f%s   (each round:%s)\n", batches[b], mm, mr, mm / mr,
               mm / mr >= 0.5 ? "" : "  (below goal 0.5)", rounds);
    }
    double p = bench_single_put(puts);
    /* The floor under single puts: one raw LMDB put per durable commit. */
    double p_raw = bench_raw((size_t)puts, 1);
    printf("\nsingle durable mesh_put: %.0f puts/s (goal >= 1000); one raw LMDB put per durable "
           "commit on the same disk: %.0f/s\n", p, p_raw);
    printf("peak RSS: %ld MB (of which ~%ld MB is the pre-generated input)\n", peak_rss_mb(),
           rss_input);
    for (size_t i = 0; i < nrecs; i++) tl_rec_free(&recs[i]);
    free(recs);
    free(raw_keys);
    return 0;
}
