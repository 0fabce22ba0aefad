/*
 * gateway_bench.c - the gateway forwarding 100,000 ops (households, individuals and tasks, all
 * creates) to the reference campaign service on loopback and confirming each by search: the
 * real core and libcurl driver in this process, meshsync-campaign as a child process. Prints
 * confirmed ops per second, the HTTP requests and bytes sent and received, and the minimum
 * request count for the batch size (one login, one bulk write per batch of each type, one
 * search per 1,000 ids of each type). Goals: >= 5,000 confirmed ops/s and requests <= 1.1 x the
 * minimum.
 *
 *   gateway_bench [--ops N] [--batch N] [--concurrency N] [--smoke]
 *
 * --smoke runs 1,000 ops (CI). The service runs with --process-delay-ms 20 (its writes are
 * applied asynchronously, as DIGIT's are) and its own LMDB store in a temporary directory.
 */

#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "gateway/curl_driver.h"
#include "gateway/gateway.h"
#include "integration/net_helpers.h"

#ifndef MESH_CAMPAIGN_BIN
#define MESH_CAMPAIGN_BIN MESH_BINARY_DIR "/sim/meshsync-campaign"
#endif


static uint64_t wall_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Writing the ops: what mesh_put does, batched (net_helpers.h) ---------------------------- */

static const char *const GEN_TYPES[3] = {"household", "individual", "task"};

/* 40 % households, 40 % individuals, 20 % tasks, interleaved. */
static int type_of(uint64_t i)
{
    uint64_t r = i % 5;
    return r < 2 ? 0 : r < 4 ? 1 : 2;
}

static int write_ops(mesh_node *n, uint64_t count)
{
    static const char *const json[3] = {
        "{\"tenantId\":\"mz\",\"memberCount\":4,\"address\":{\"tenantId\":\"mz\",\"locality\":{"
        "\"code\":\"MZ_NAMPULA_ERATI_L01\"},\"latitude\":-13.9,\"longitude\":39.2},\"source\":"
        "\"bench\",\"clientAuditDetails\":{\"createdBy\":\"worker-1\",\"createdTime\":1714550400000}}",
        "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"Amina\",\"familyName\":\"Bench\"},\"gender\":"
        "\"FEMALE\",\"dateOfBirth\":\"01/01/1990\",\"address\":[{\"tenantId\":\"mz\",\"locality\":{"
        "\"code\":\"MZ_NAMPULA_ERATI_L01\"}}]}",
        "{\"tenantId\":\"mz\",\"projectId\":\"P-1\",\"status\":\"DELIVERED\",\"address\":{\"tenantId\":"
        "\"mz\",\"locality\":{\"code\":\"MZ_NAMPULA_ERATI_L01\"}},\"resources\":[{\"tenantId\":\"mz\","
        "\"productVariantId\":\"PV-1\",\"quantity\":1,\"isDelivered\":true}]}",
    };
    nh_gen g = {.n = n, .left = count, .ntypes = 3, .pick = type_of};
    int rc = MESH_OK;
    for (int i = 0; i < 3; i++) {
        g.types[i] = GEN_TYPES[i];
        mesh_buf_init(&g.bodies[i], MESH_OP_BYTES_MAX);
        if (rc == MESH_OK) rc = mesh_body_from_json(json[i], strlen(json[i]), &g.bodies[i]);
    }
    if (rc == MESH_OK) return nh_gen_run(&g);
    for (int i = 0; i < 3; i++) mesh_buf_fini(&g.bodies[i]);
    return rc;
}

/* ---- The service ------------------------------------------------------------------------------ */

static pid_t service_start(const char *dir, int *port)
{
    char data[300], log[300];
    snprintf(data, sizeof data, "%s/service", dir);
    snprintf(log, sizeof log, "%s/service.log", dir);
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int lf = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (lf >= 0) dup2(lf, 2);
        dup2(fds[1], 1);
        close(fds[0]);
        execl(MESH_CAMPAIGN_BIN, MESH_CAMPAIGN_BIN, "--data", data, "--port", "0",
              "--process-delay-ms", "20", "--map-mb", "8192", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[128] = "";
    size_t len = 0;
    uint64_t deadline = nh_now_ms() + 10000;
    while (len + 1 < sizeof line && nh_now_ms() < deadline) {
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        if (read(fds[0], line + len, 1) <= 0) break;
        if (line[len] == '\n') break;
        len++;
    }
    line[len] = '\0';
    close(fds[0]);
    if (sscanf(line, "listening on 127.0.0.1:%d", port) != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fprintf(stderr, "the service did not start: '%s' (see %s)\n", line, log);
        return -1;
    }
    return pid;
}

/* CPU seconds a process used (utime + stime from /proc/PID/stat). */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void service_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return;
        nh_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- The benchmark -------------------------------------------------------------------------- */

static void log_fn(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (level <= 1) fprintf(stderr, "gateway: %s\n", msg);
}

int main(int argc, char **argv)
{
    uint64_t ops = 100000;
    uint32_t batch = 100, concurrency = 4;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0) ops = 1000;
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) ops = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = (uint32_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--concurrency") == 0 && i + 1 < argc)
            concurrency = (uint32_t)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--ops N] [--batch N] [--concurrency N] [--smoke]\n",
                    argv[0]);
            return 2;
        }
    }
    char dir[] = "/tmp/gateway-bench-XXXXXX";
    if (mkdtemp(dir) == NULL) return 1;
    char node_dir[300];
    snprintf(node_dir, sizeof node_dir, "%s/gateway", dir);
    int rc = mesh_node_init(node_dir, NULL);
    mesh_node *n = NULL;
    if (rc == MESH_OK) rc = mesh_node_open(node_dir, NULL, &n);
    uint64_t t0 = nh_now_ms();
    if (rc == MESH_OK) rc = write_ops(n, ops);
    if (rc != MESH_OK) {
        fprintf(stderr, "setting up the gateway node: %s\n", mesh_errmsg());
        return 1;
    }
    printf("gateway_bench: %" PRIu64 " ops written to the gateway's store in %.1f s\n", ops,
           (double)(nh_now_ms() - t0) / 1000);

    int port = 0;
    pid_t svc = service_start(dir, &port);
    if (svc < 0) return 1;
    char cfgjson[1024];
    snprintf(cfgjson, sizeof cfgjson,
             "{\"baseUrl\":\"http://127.0.0.1:%d\",\"auth\":{\"username\":\"gateway\","
             "\"password\":\"eGov@123\"},\"uplink\":{\"batchSize\":%u,\"concurrency\":%u,"
             "\"lingerMs\":100},\"confirm\":{\"delayMs\":500,\"windowMs\":30000},"
             "\"types\":[\"household\",\"individual\",\"task\"],"
             "\"downloads\":{\"forms\":false,\"localization\":false,\"sos\":false,"
             "\"dashboard\":false}}",
             port, batch, concurrency);
    mesh_gw_config cfg;
    int result = 1;
    mesh_gw *g = NULL;
    mesh_gw_driver *d = NULL;
    rc = mesh_gw_config_parse(cfgjson, strlen(cfgjson), n, &cfg);
    cfg.log = log_fn;
    if (rc == MESH_OK) rc = mesh_gw_new(n, &cfg, wall_ms(NULL), 1, &g);
    mesh_gw_driver_opts dopts = {.base_url = cfg.base_url, .measure_gzip = true,
                                 .record_path = getenv("MESH_BENCH_RECORD")};
    if (rc == MESH_OK) rc = mesh_gw_driver_new(g, &dopts, &d);
    if (rc != MESH_OK) {
        fprintf(stderr, "starting the gateway: %s\n", mesh_errmsg());
        goto out;
    }
    double svc_cpu0 = proc_cpu_s(svc);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t start = nh_now_ms(), next_poll = 0, deadline = start + 30u * 60u * 1000u;
    bool scanned = false;
    while (nh_now_ms() < deadline) {
        uint64_t now = wall_ms(NULL);
        if (now >= next_poll) {
            if ((rc = mesh_gw_poll_store(g, now)) != MESH_OK) break;
            next_poll = now + 500;
            scanned = true;
        }
        if (scanned && mesh_gw_idle(g) && mesh_gw_driver_inflight(d) == 0) break;
        if ((rc = mesh_gw_driver_step(d, 50, wall_ms, NULL)) != MESH_OK) break;
    }
    uint64_t elapsed = nh_now_ms() - start;
    getrusage(RUSAGE_SELF, &ru1);
    double gw_cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
                             ru0.ru_stime.tv_sec) +
                    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                             ru0.ru_stime.tv_usec) / 1e6;
    double svc_cpu = proc_cpu_s(svc) - svc_cpu0;
    if (rc != MESH_OK) {
        fprintf(stderr, "the gateway failed: %s\n", mesh_errmsg());
        goto out;
    }
    mesh_gw_stats st;
    mesh_gw_stats_get(g, &st);
    mesh_gw_driver_stats ds;
    mesh_gw_driver_stats_get(d, &ds);
    /* The minimum: one login; per type, one write per batch and one search per 1,000 ids. */
    uint64_t per_type[3] = {0, 0, 0};
    for (uint64_t i = 0; i < ops; i++) per_type[type_of(i)]++;
    uint64_t min_req = 1;
    for (int t = 0; t < 3; t++)
        min_req += (per_type[t] + batch - 1) / batch +
                   (per_type[t] + MESH_GW_SEARCH_IDS_MAX - 1) / MESH_GW_SEARCH_IDS_MAX;
    double rate = elapsed ? (double)st.ops_confirmed * 1000.0 / (double)elapsed : 0;
    double ratio = (double)st.requests / (double)min_req;
    printf("gateway_bench: %" PRIu64 " ops (%" PRIu64 " households, %" PRIu64 " individuals, %" PRIu64
           " tasks), batch %u, concurrency %u\n",
           ops, per_type[0], per_type[1], per_type[2], batch, concurrency);
    printf("  confirmed %" PRIu64 ", rejected %" PRIu64 " in %.2f s: %.0f confirmed ops/s (goal >= 5000)\n",
           st.ops_confirmed, st.ops_rejected, (double)elapsed / 1000, rate);
    printf("  requests %" PRIu64 " (writes %" PRIu64 ", searches %" PRIu64 ", other %" PRIu64
           "); minimum %" PRIu64 ": %.3f x (goal <= 1.1)\n",
           st.requests, st.write_requests, st.search_requests, st.other_requests, min_req, ratio);
    printf("  sent %.2f MiB in requests (bodies %.2f MiB, not compressed: the service refuses "
           "gzip request bodies, as DIGIT does; gzipped they would be %.2f MiB)\n",
           (double)ds.bytes_up / 1048576, (double)ds.body_bytes_up / 1048576,
           (double)ds.body_bytes_gzip / 1048576);
    printf("  received %.2f MiB gzip (%.2f MiB decoded); %" PRIu64 " ops sent again, %" PRIu64
           " receipts written\n",
           (double)ds.bytes_down / 1048576, (double)ds.body_bytes_decoded / 1048576,
           st.ops_resent, st.receipts_written);
    printf("  CPU: gateway %.1f s, service %.1f s (of %.1f s elapsed); the gateway waited %.1f s "
           "for the network\n", gw_cpu, svc_cpu, (double)elapsed / 1000, (double)ds.wait_ms / 1000);
    result = st.ops_confirmed == ops ? 0 : 1;
    if (result) fprintf(stderr, "gateway_bench: only %" PRIu64 " of %" PRIu64 " ops confirmed\n",
                        st.ops_confirmed, ops);
out:
    mesh_gw_driver_free(d);
    mesh_gw_free(g);
    mesh_node_close(n);
    service_stop(svc);
    if (getenv("MESH_BENCH_KEEP") == NULL) nh_rm_rf(dir);
    return result;
}
