/*
 * cmd_gateway.c - `meshsync gateway CONFIG`: the campaign-service gateway in the foreground (the
 * sans-IO core of lib/gateway driven by its libcurl driver), the supervised child process that
 * `meshsync run --gateway CONFIG` starts, and the gateway section of `meshsync status`.
 *
 * Why a process of its own (docs/GATEWAY.md, "Processes"): LMDB allows one environment per data
 * file per process and must not grow its map while another thread of the process holds a
 * transaction, so the gateway cannot share the daemon's store handle from another thread; in its
 * own process it opens the node like any CLI command, and a stalled HTTP request never delays
 * mesh sync. The daemon and the gateway meet in the store: ops the daemon receives are scanned
 * by the gateway within half a second, receipts the gateway writes are passed on by the daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "gateway.h"
#include "crypto/crypto.h"
#include "gateway/curl_driver.h"
#include "gateway/gateway.h"
#include "net/log.h"

/* The op-log is scanned for new ops this often. */
#define STORE_POLL_MS 500u
/* gateway-state.json is rewritten this often. */
#define STATE_WRITE_MS 2000u
/* After the core fails (a store write), wait this long before making a new one. */
#define RESTART_MS 2000u
/* The configuration file: a few KB. */
#define CONFIG_BYTES_MAX (256u * 1024u)

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static uint64_t wall_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void core_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    mesh_log((mesh_log_level)level, "gateway: %s", msg);
}

static int read_config(const cli_ctx *ctx, const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        cli_error(ctx, "cannot open the gateway configuration %s: %s", path, strerror(errno));
        return errno == ENOENT ? CLI_EXIT_NOTFOUND : CLI_EXIT_IO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        mesh_log_warn("%s holds credentials but others may read it: chmod 600 %s", path, path);
    char *buf = malloc(CONFIG_BYTES_MAX + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_BYTES_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL) {
        cli_error(ctx, "out of memory");
        return CLI_EXIT_FAILURE;
    }
    if (n > CONFIG_BYTES_MAX) {
        free(buf);
        cli_error(ctx, "%s is larger than %u bytes", path, CONFIG_BYTES_MAX);
        return CLI_EXIT_INPUT;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return CLI_EXIT_OK;
}

static void write_state(const cli_ctx *ctx, const mesh_gw *g, const mesh_gw_driver *d,
                        const mesh_gw_config *cfg, uint64_t started)
{
    mesh_gw_stats s;
    mesh_gw_stats_get(g, &s);
    mesh_gw_driver_stats ds;
    mesh_gw_driver_stats_get(d, &ds);
    json_t *o = json_pack(
        "{s:I, s:s, s:I, s:I, s:b, s:b, s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I}, "
        "s:{s:I, s:I, s:I, s:I, s:I}, s:I, s:I}",
        "pid", (json_int_t)getpid(), "baseUrl", cfg->base_url, "startedMs", (json_int_t)started,
        "updatedMs", (json_int_t)wall_ms(NULL), "online", s.online, "authenticated",
        s.authenticated, "lastError", s.last_error, "ops", "known", (json_int_t)s.ops_known,
        "live", (json_int_t)s.ops_live, "waiting", (json_int_t)s.ops_waiting, "confirmed",
        (json_int_t)s.ops_confirmed, "rejected", (json_int_t)s.ops_rejected, "resent",
        (json_int_t)s.ops_resent, "requests", "total", (json_int_t)s.requests, "failed",
        (json_int_t)s.requests_failed, "writes", (json_int_t)s.write_requests, "searches",
        (json_int_t)s.search_requests, "other", (json_int_t)s.other_requests, "bytesUp",
        (json_int_t)ds.bytes_up, "bytesDown", (json_int_t)ds.bytes_down);
    if (o == NULL) return;
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/%s", ctx->data_dir, GATEWAY_STATE_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (json_dump_file(o, tmp, JSON_COMPACT) == 0) rename(tmp, path);
    json_decref(o);
}

static const cli_opt gateway_opts[] = {
    {"record", "FILE", "Append every request sent (no secrets) as a JSON line to FILE."},
    {"log-level", "LEVEL", "error, warn, info (default) or debug."},
    {"until-idle", NULL, "Exit 0 once every op is confirmed or rejected (scripts, the demo)."},
    {NULL, NULL, NULL},
};

static const int gateway_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_NOTSTORE,
                                    CLI_EXIT_PERM, CLI_EXIT_IO, CLI_EXIT_TRYAGAIN, 0};

static int take_lock(const cli_ctx *ctx)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", ctx->data_dir, GATEWAY_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_error(ctx, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        cli_error(ctx, "another gateway runs on %s (it holds %s); stop it first", ctx->data_dir,
                  path);
        close(fd);
        return -2;
    }
    return fd;
}

static int run_gateway(cli_ctx *ctx)
{
    const char *lvl = cli_opt_get(ctx, "log-level");
    if (lvl) {
        mesh_log_level level;
        if (mesh_log_level_parse(lvl, &level) != MESH_OK)
            return cli_usage_error(ctx, "--log-level must be error, warn, info or debug, not "
                                        "'%s'", lvl);
        mesh_log_set_level(level);
    }
    char *text = NULL;
    size_t len = 0;
    int ec = read_config(ctx, ctx->args[0], &text, &len);
    if (ec != CLI_EXIT_OK) return ec;
    mesh_gw_config cfg;
    int rc = mesh_gw_config_parse(text, len, ctx->node, &cfg);
    free(text);
    if (rc != MESH_OK) {
        cli_error(ctx, "%s: %s", ctx->args[0], mesh_errmsg());
        return cli_exit_from_mesh(rc);
    }
    const char *pw = getenv("MESHSYNC_GATEWAY_PASSWORD");
    if (pw && *pw) snprintf(cfg.password, sizeof cfg.password, "%s", pw);
    cfg.log = core_log;
    int lock = take_lock(ctx);
    if (lock < 0) return lock == -2 ? CLI_EXIT_TRYAGAIN : CLI_EXIT_IO;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    mesh_gw_driver_opts dopts = {.base_url = cfg.base_url, .gzip_requests = cfg.gzip_requests,
                                 .record_path = cli_opt_get(ctx, "record")};
    if (dopts.record_path == NULL && cfg.record_path[0]) dopts.record_path = cfg.record_path;
    uint64_t started = wall_ms(NULL);
    mesh_log_info("gateway for %s started: %zu entity types, %s uplink, batches of %u", 
                  cfg.base_url, cfg.ntypes, cfg.uplink == MESH_GW_UPLINK_FILE ? "file" : "bulk",
                  cfg.batch_size);
    int result = CLI_EXIT_OK;
    mesh_gw_stats total;
    memset(&total, 0, sizeof total);
    bool until_idle = cli_opt_get(ctx, "until-idle") != NULL;
    while (!g_stop) {
        mesh_gw *g = NULL;
        mesh_gw_driver *d = NULL;
        uint64_t seed;
        mesh_random(&seed, sizeof seed);
        rc = mesh_gw_new(ctx->node, &cfg, wall_ms(NULL), seed, &g);
        if (rc == MESH_OK) rc = mesh_gw_driver_new(g, &dopts, &d);
        if (rc != MESH_OK) {
            mesh_log_error("cannot start the gateway: %s", mesh_errmsg());
            mesh_gw_driver_free(d);
            mesh_gw_free(g);
            if (rc == MESH_EINVAL || rc == MESH_ECORRUPT) {
                result = cli_exit_from_mesh(rc);
                break;
            }
            struct timespec ts = {RESTART_MS / 1000, 0};
            nanosleep(&ts, NULL);
            continue;
        }
        uint64_t next_poll = 0, next_state = 0;
        bool scanned = false;
        while (!g_stop) {
            uint64_t now = wall_ms(NULL);
            if (now >= next_poll) {
                rc = mesh_gw_poll_store(g, now);
                if (rc != MESH_OK) break;
                next_poll = now + STORE_POLL_MS;
                scanned = true;
            }
            if (now >= next_state) {
                write_state(ctx, g, d, &cfg, started);
                next_state = now + STATE_WRITE_MS;
            }
            if (until_idle && scanned && mesh_gw_idle(g) && mesh_gw_driver_inflight(d) == 0) {
                g_stop = 1;
                break;
            }
            uint32_t wait = next_poll > now ? (uint32_t)(next_poll - now) : 0;
            rc = mesh_gw_driver_step(d, wait < 200 ? wait : 200, wall_ms, NULL);
            if (rc != MESH_OK) break;
        }
        if (g_stop && mesh_gw_flush(g, wall_ms(NULL)) != MESH_OK)
            mesh_log_warn("gateway: %s (what was not written is searched for again next time)",
                          mesh_errmsg());
        write_state(ctx, g, d, &cfg, started);
        mesh_gw_stats s;
        mesh_gw_stats_get(g, &s);
        mesh_log_info("gateway: %" PRIu64 " ops confirmed, %" PRIu64 " rejected, %" PRIu64
                      " left; %" PRIu64 " requests", s.ops_confirmed, s.ops_rejected, s.ops_live,
                      s.requests);
        total.ops_confirmed += s.ops_confirmed;
        total.ops_rejected += s.ops_rejected;
        total.ops_live = s.ops_live;
        total.requests += s.requests;
        mesh_gw_driver_free(d);
        mesh_gw_free(g);
        if (!g_stop) {
            /* The core failed a store write: the store is consistent; start over from it. */
            mesh_log_error("gateway: %s; restarting from the store in %u s", mesh_errmsg(),
                           RESTART_MS / 1000);
            struct timespec ts = {RESTART_MS / 1000, 0};
            nanosleep(&ts, NULL);
        }
    }
    close(lock);
    mesh_log_info("gateway stopped");
    if (result == CLI_EXIT_OK && ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "confirmed");
        cli_json_u64(&j, total.ops_confirmed);
        cli_json_key(&j, "rejected");
        cli_json_u64(&j, total.ops_rejected);
        cli_json_key(&j, "left");
        cli_json_u64(&j, total.ops_live);
        cli_json_key(&j, "requests");
        cli_json_u64(&j, total.requests);
        cli_json_object_close(&j);
        cli_json_end(&j);
    }
    return result;
}

const cli_command cmd_gateway = {
    .name = "gateway",
    .summary = "Forward every op to the campaign service; bring receipts and downloads back.",
    .synopsis = "CONFIG [--record FILE] [--log-level LEVEL] [--until-idle]",
    .description =
        "Runs the campaign-service gateway in the foreground until SIGINT or SIGTERM: it\n"
        "forwards every op this node holds (its own and those synced from field devices)\n"
        "to the campaign service named in CONFIG (DIGIT Health Campaign Management or any\n"
        "faithful implementation), exactly once in effect, parents first and each\n"
        "entity's saves in order, in bulk batches; confirms each by search; and writes a\n"
        "signed receipt (confirmed with the server's id, or rejected with its error) into\n"
        "this node's stream, so the device that wrote the op learns what became of it.\n"
        "It also downloads form schemas, localisations, SOS contacts and dashboard\n"
        "counts into the mesh ('meshsync get config' reads them on any device).\n"
        "\n"
        "CONFIG is a JSON file (docs/gateway.example.json); only baseUrl and auth are\n"
        "required. $MESHSYNC_GATEWAY_PASSWORD overrides auth.password. The gateway can\n"
        "be killed at any moment: it resumes from the store and confirms by search what\n"
        "was in flight before sending anything again. 'meshsync run --gateway CONFIG'\n"
        "runs this command beside the daemon. State: DIR/gateway-state.json,\n"
        "'meshsync status'.",
    .opts = gateway_opts,
    .args_min = 1,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync gateway /etc/meshsync/gateway.json --data /var/lib/meshsync\n"
                "  meshsync gateway gw.json --until-idle --record requests.jsonl\n",
    .exit_codes = gateway_exits,
    .run = run_gateway,
};

/* ---- The supervised child of `meshsync run --gateway` ---------------------------------------- */

static struct {
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pid_t pid;
    volatile sig_atomic_t stop;
    char exe[4096];
    char data[4096];
    char config[4096];
    char level[16];
} child = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pid_t spawn(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* The gateway goes when the daemon goes, even after a kill -9 of the daemon. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    /* Nothing of the daemon's (its lock, sockets) may stay open in the gateway. */
    long maxfd = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++) close((int)fd);
    const char *argv[12];
    int n = 0;
    argv[n++] = child.exe;
    argv[n++] = "gateway";
    argv[n++] = child.config;
    argv[n++] = "--data";
    argv[n++] = child.data;
    if (child.level[0]) {
        argv[n++] = "--log-level";
        argv[n++] = child.level;
    }
    argv[n] = NULL;
    execv(child.exe, (char *const *)argv);
    _exit(127);
}

static void *supervise(void *arg)
{
    (void)arg;
    uint32_t backoff_ms = 1000;
    while (!child.stop) {
        pthread_mutex_lock(&child.mu);
        child.pid = spawn();
        pid_t pid = child.pid;
        pthread_mutex_unlock(&child.mu);
        if (pid < 0) {
            mesh_log_error("cannot start the gateway process: %s", strerror(errno));
        } else {
            mesh_log_info("gateway process %d started", (int)pid);
            uint64_t t0 = wall_ms(NULL);
            int status = 0;
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            pthread_mutex_lock(&child.mu);
            child.pid = 0;
            pthread_mutex_unlock(&child.mu);
            if (child.stop) break;
            if (WIFSIGNALED(status))
                mesh_log_warn("gateway process %d was killed by signal %d; restarting it",
                              (int)pid, WTERMSIG(status));
            else
                mesh_log_warn("gateway process %d exited with %d; restarting it", (int)pid,
                              WEXITSTATUS(status));
            if (wall_ms(NULL) - t0 > 60000) backoff_ms = 1000;
        }
        for (uint32_t slept = 0; slept < backoff_ms && !child.stop; slept += 100) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
        backoff_ms = backoff_ms * 2 > 60000 ? 60000 : backoff_ms * 2;
    }
    return NULL;
}

int gateway_child_start(const cli_ctx *ctx, const char *config_path, const char *log_level)
{
    ssize_t n = readlink("/proc/self/exe", child.exe, sizeof child.exe - 1);
    if (n <= 0) {
        cli_error(ctx, "cannot find the meshsync executable: %s", strerror(errno));
        return -1;
    }
    child.exe[n] = '\0';
    if (realpath(config_path, child.config) == NULL) {
        cli_error(ctx, "gateway configuration %s: %s", config_path, strerror(errno));
        return -1;
    }
    if (realpath(ctx->data_dir, child.data) == NULL)
        snprintf(child.data, sizeof child.data, "%s", ctx->data_dir);
    snprintf(child.level, sizeof child.level, "%s", log_level ? log_level : "");
    child.stop = 0;
    if (pthread_create(&child.thread, NULL, supervise, NULL) != 0) {
        cli_error(ctx, "cannot start the gateway supervisor");
        return -1;
    }
    child.running = true;
    return 0;
}

void gateway_child_stop(void)
{
    if (!child.running) return;
    child.stop = 1;
    pthread_mutex_lock(&child.mu);
    pid_t pid = child.pid;
    pthread_mutex_unlock(&child.mu);
    if (pid > 0) {
        kill(pid, SIGTERM);
        for (int i = 0; i < 1000; i++) {
            pthread_mutex_lock(&child.mu);
            pid_t p = child.pid;
            pthread_mutex_unlock(&child.mu);
            if (p == 0) break;
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&child.mu);
        if (child.pid > 0) kill(child.pid, SIGKILL);
        pthread_mutex_unlock(&child.mu);
    }
    pthread_join(child.thread, NULL);
    child.running = false;
}

/* ---- Status ---------------------------------------------------------------------------------- */

void gateway_status_section(cli_ctx *ctx, cli_json *j)
{
    mesh_gateway_status gs;
    if (mesh_gateway_status_get(ctx->node, &gs) != MESH_OK || !gs.active) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", ctx->data_dir, GATEWAY_STATE_FILE);
    json_t *live = json_load_file(path, 0, NULL);
    bool running = false;
    char lockpath[4200];
    snprintf(lockpath, sizeof lockpath, "%s/%s", ctx->data_dir, GATEWAY_LOCK_FILE);
    int fd = open(lockpath, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        running = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
        close(fd);
    }
    if (j) {
        cli_json_key(j, "gateway");
        cli_json_object_open(j);
        cli_json_key(j, "running");
        cli_json_bool(j, running);
        cli_json_key(j, "pending");
        cli_json_u64(j, gs.pending);
        cli_json_key(j, "sent");
        cli_json_u64(j, gs.sent);
        cli_json_key(j, "confirmed");
        cli_json_u64(j, gs.confirmed);
        cli_json_key(j, "rejected");
        cli_json_u64(j, gs.rejected);
        if (live) {
            char *s = json_dumps(live, JSON_COMPACT);
            if (s) {
                cli_json_key(j, "live");
                cli_json_raw(j, s, strlen(s));
                free(s);
            }
        }
        cli_json_object_close(j);
    } else {
        FILE *f = ctx->out;
        fprintf(f, "gateway    %s: %" PRIu64 " confirmed, %" PRIu64 " rejected, %" PRIu64
                " in flight, %" PRIu64 " waiting\n",
                running ? "running" : "not running", gs.confirmed, gs.rejected, gs.sent,
                gs.pending);
        if (live && running) {
            const char *err = json_string_value(json_object_get(live, "lastError"));
            fprintf(f, "           %s %s%s\n", json_string_value(json_object_get(live, "baseUrl")),
                    json_is_true(json_object_get(live, "online")) ? "reachable" : "unreachable",
                    json_is_true(json_object_get(live, "authenticated")) ? ", logged in" : "");
            if (err && *err) fprintf(f, "           last error: %s\n", err);
        }
    }
    json_decref(live);
}
