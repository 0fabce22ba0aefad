/*
 * cmd_sync.c - `meshsync sync`: sync now, through the running daemon or, when none runs, with
 * a loop of our own for the length of the sync. Shows progress on a terminal and prints what
 * moved.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "daemon.h"
#include "net/log.h"
#include "net/loop.h"

#define SYNC_POLL_MS 200u
/* A sync waits at most this long for a peer to connect; then the peer is reported. */
#define SYNC_CONNECT_SEC_DEFAULT 20u

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const cli_opt sync_opts[] = {
    {"peer", "ADDR", "Sync with this peer only: tcp://HOST:PORT (or KEY@tcp://HOST:PORT)."},
    {"timeout", "SEC", "Wait at most this long for a peer to connect (default 20).", 3600},
    {NULL, NULL, NULL},
};

static const int sync_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_CORRUPT,
                                 CLI_EXIT_NOTSTORE, CLI_EXIT_PERM, CLI_EXIT_IO,
                                 CLI_EXIT_TRYAGAIN, 0};

static uint64_t u64(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

typedef struct progress {
    int tty;
    int shown;        /* a progress line is on the terminal */
} progress;

/* One line on stderr, rewritten in place: what moved so far over all peers. */
static void show_progress(progress *pr, json_t *job)
{
    if (!pr->tty) return;
    uint64_t ops_in = 0, ops_out = 0, b_in = 0, b_out = 0;
    size_t running = 0, finished = 0, i;
    json_t *p, *peers = json_object_get(job, "peers");
    json_array_foreach(peers, i, p) {
        ops_in += u64(p, "ops_received");
        ops_out += u64(p, "ops_sent");
        b_in += u64(p, "bytes_received");
        b_out += u64(p, "bytes_sent");
        const char *st = json_string_value(json_object_get(p, "state"));
        if (st && strcmp(st, "running") == 0) running++;
        if (st && (strcmp(st, "done") == 0 || strcmp(st, "failed") == 0)) finished++;
    }
    char bi[24], bo[24];
    daemon_format_bytes(b_in, bi, sizeof bi);
    daemon_format_bytes(b_out, bo, sizeof bo);
    fprintf(stderr, "\r\033[Ksyncing: %zu/%zu peers done, %zu running | received %llu ops (%s) | "
            "sent %llu ops (%s) | %.1f s",
            finished, json_array_size(peers), running, (unsigned long long)ops_in, bi,
            (unsigned long long)ops_out, bo, (double)u64(job, "elapsed_ms") / 1000);
    fflush(stderr);
    pr->shown = 1;
}

static void end_progress(progress *pr)
{
    if (pr->shown) fputs("\r\033[K", stderr);
    pr->shown = 0;
}

/* Prints the finished job and returns the exit code it deserves. */
static int report(cli_ctx *ctx, json_t *job)
{
    json_t *peers = json_object_get(job, "peers");
    size_t i, failed = 0;
    uint64_t rejected = 0;
    json_t *p;
    json_array_foreach(peers, i, p) {
        const char *st = json_string_value(json_object_get(p, "state"));
        if (st == NULL || strcmp(st, "done") != 0) failed++;
        rejected += u64(p, "ops_rejected");
    }
    if (ctx->json) {
        char *text = json_dumps(job, JSON_INDENT(2));
        if (text) fprintf(ctx->out, "%s\n", text);
        free(text);
    } else {
        FILE *f = ctx->out;
        const char *note = json_string_value(json_object_get(job, "note"));
        if (json_array_size(peers) == 0) {
            fprintf(f, "nothing to do: %s\n", note ? note : "no peers");
        } else {
            fprintf(f, "synced with %zu of %zu peers in %.1f s\n", json_array_size(peers) - failed,
                    json_array_size(peers), (double)u64(job, "elapsed_ms") / 1000);
        }
        json_array_foreach(peers, i, p) {
            const char *key = json_string_value(json_object_get(p, "key"));
            const char *ep = json_string_value(json_object_get(p, "endpoint"));
            const char *st = json_string_value(json_object_get(p, "state"));
            const char *err = json_string_value(json_object_get(p, "error"));
            char bs[24], br[24];
            daemon_format_bytes(u64(p, "bytes_sent"), bs, sizeof bs);
            daemon_format_bytes(u64(p, "bytes_received"), br, sizeof br);
            fprintf(f, "  %.8s  %-24s  %-6s  sent %llu ops (%s), received %llu ops (%s): %llu "
                    "new, %llu already held",
                    key ? key : "?", ep && ep[0] ? ep : "(inbound)", st ? st : "?",
                    (unsigned long long)u64(p, "ops_sent"), bs,
                    (unsigned long long)u64(p, "ops_received"), br,
                    (unsigned long long)u64(p, "ops_applied"),
                    (unsigned long long)u64(p, "ops_duplicate"));
            if (u64(p, "ops_rejected"))
                fprintf(f, ", %llu REJECTED", (unsigned long long)u64(p, "ops_rejected"));
            fputc('\n', f);
            if (err) fprintf(f, "            %s\n", err);
        }
    }
    if (rejected > 0) {
        cli_error(ctx, "%llu ops were rejected (bad signature or broken chain); see the "
                       "error above and the daemon's log", (unsigned long long)rejected);
        return CLI_EXIT_CORRUPT;
    }
    if (json_array_size(peers) == 0 && !ctx->json) {
        const char *note = json_string_value(json_object_get(job, "note"));
        cli_error(ctx, "nothing to sync: %s", note ? note : "no peers known");
        return CLI_EXIT_NOTFOUND;
    }
    if (failed > 0) {
        /* stdout is dropped on failure: the reasons go to stderr. */
        json_array_foreach(peers, i, p) {
            const char *st = json_string_value(json_object_get(p, "state"));
            const char *ep = json_string_value(json_object_get(p, "endpoint"));
            const char *err = json_string_value(json_object_get(p, "error"));
            if (st == NULL || strcmp(st, "done") != 0)
                cli_error(ctx, "%s: %s", ep && ep[0] ? ep : "a peer", err ? err : "not synced");
        }
        cli_error(ctx, "%zu of %zu peers could not be synced", failed, json_array_size(peers));
        return CLI_EXIT_TRYAGAIN;
    }
    return CLI_EXIT_OK;
}

static int via_daemon(cli_ctx *ctx, progress *pr, uint32_t connect_ms)
{
    json_t *req = json_object();
    json_object_set_new(req, "cmd", json_string("sync"));
    const char *peer = cli_opt_get(ctx, "peer");
    if (peer) json_object_set_new(req, "peer", json_string(peer));
    json_object_set_new(req, "connect_ms", json_integer(connect_ms));
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *reply = NULL;
    int rc = text ? mesh_control_call(ctx->data_dir, text, DAEMON_CALL_MS, &reply) : MESH_ENOMEM;
    free(text);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    json_error_t je;
    json_t *o = json_loads(reply, 0, &je);
    mesh_free(reply);
    const char *err = json_string_value(json_object_get(o, "error"));
    if (o == NULL || err) {
        cli_error(ctx, "the daemon refused: %s", err ? err : "malformed answer");
        json_decref(o);
        return err && strstr(err, "address") ? CLI_EXIT_INPUT : CLI_EXIT_FAILURE;
    }
    uint64_t id = u64(o, "job");
    json_decref(o);
    char req_job[64];
    snprintf(req_job, sizeof req_job, "{\"cmd\":\"job\",\"id\":%llu}", (unsigned long long)id);
    for (;;) {
        if (g_stop) {
            end_progress(pr);
            cli_error(ctx, "interrupted; the daemon finishes the sync on its own");
            return CLI_EXIT_TRYAGAIN;
        }
        rc = mesh_control_call(ctx->data_dir, req_job, DAEMON_CALL_MS, &reply);
        if (rc != MESH_OK) {
            end_progress(pr);
            return cli_fail(ctx, rc);
        }
        json_t *job = json_loads(reply, 0, &je);
        mesh_free(reply);
        err = json_string_value(json_object_get(job, "error"));
        if (job == NULL || err) {
            end_progress(pr);
            cli_error(ctx, "lost track of the sync: %s", err ? err : "malformed answer");
            json_decref(job);
            return CLI_EXIT_FAILURE;
        }
        if (json_is_true(json_object_get(job, "done"))) {
            end_progress(pr);
            int ec = report(ctx, job);
            json_decref(job);
            return ec;
        }
        show_progress(pr, job);
        json_decref(job);
        struct timespec ts = {0, SYNC_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

typedef struct oneshot {
    progress *pr;
    json_t *last;
} oneshot;

static void on_progress(const char *job_json, void *vctx)
{
    oneshot *os = vctx;
    json_error_t je;
    json_t *job = json_loads(job_json, 0, &je);
    if (job == NULL) return;
    show_progress(os->pr, job);
    json_decref(os->last);
    os->last = job;
}

static int on_our_own(cli_ctx *ctx, progress *pr, uint32_t connect_ms)
{
    const char *peer = cli_opt_get(ctx, "peer");
    const char *peers[1] = {peer};
    mesh_loop_opts o = {
        .node = ctx->node,
        .listen = NULL,
        .peers = peers,
        .npeers = peer ? 1 : 0,
        .discovery = false,
        .use_cache = peer == NULL,
        .persist = true,
        .once = true,
        .once_connect_ms = connect_ms,
        .progress = on_progress,
        .stop = &g_stop,
    };
    oneshot os = {.pr = pr};
    o.progress_ctx = &os;
    mesh_log_set_level(MESH_LOG_ERROR);
    mesh_loop *loop = NULL;
    int rc = mesh_loop_new(&o, &loop);
    if (rc != MESH_OK) {
        int ec = cli_fail(ctx, rc);
        if (rc == MESH_ENOTFOUND)
            cli_hint("put the team's keys in %s/roster (one 'meshsync identity' per line)",
                     ctx->data_dir);
        return ec;
    }
    rc = mesh_loop_run(loop);
    mesh_loop_free(loop);
    end_progress(pr);
    if (os.last == NULL) return cli_fail(ctx, rc == MESH_OK ? MESH_EINTERNAL : rc);
    int ec = report(ctx, os.last);
    json_decref(os.last);
    return ec;
}

static int run_sync(cli_ctx *ctx)
{
    progress pr = {.tty = isatty(STDERR_FILENO)};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    uint32_t connect_ms = (uint32_t)cli_opt_u64(ctx, "timeout", SYNC_CONNECT_SEC_DEFAULT) * 1000u;
    if (mesh_daemon_running(ctx->data_dir)) return via_daemon(ctx, &pr, connect_ms);
    return on_our_own(ctx, &pr, connect_ms);
}

const cli_command cmd_sync = {
    .name = "sync",
    .summary = "Sync now with every known peer, or with one, and show what moved.",
    .synopsis = "[--peer ADDR] [--timeout SEC]",
    .description =
        "Asks the running daemon to sync now with every peer it knows (or only with\n"
        "--peer) and waits until it has, showing progress on a terminal. Then prints,\n"
        "per peer, the ops sent and received. When no daemon runs on the data\n"
        "directory, syncs on its own with --peer, or with the peers the daemon knew\n"
        "last time. A peer is identified by its key: an address alone is resolved by\n"
        "asking the node there for its key (UDP, same port), and only roster members\n"
        "answer and are admitted.",
    .opts = sync_opts,
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync sync\n"
                "  meshsync sync --peer tcp://192.168.1.20:47200\n"
                "  meshsync sync --data /media/node1 --json\n",
    .exit_codes = sync_exits,
    .run = run_sync,
};
