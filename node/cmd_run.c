/*
 * cmd_run.c - `meshsync run`: the daemon. Listens for peers, finds them on the LAN, syncs with
 * them, and serves the control socket that `meshsync sync`, `peers` and `status` talk to.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "daemon.h"
#include "gateway.h"
#include "net/log.h"
#include "net/loop.h"

#define RUN_LISTEN_DEFAULT "tcp://0.0.0.0:47200"
#define RUN_PEERS_MAX 64

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const cli_opt run_opts[] = {
    {"listen", "ADDR", "Where peers reach this node (default " RUN_LISTEN_DEFAULT ")."},
    {"peer", "ADDR",
     "A peer to dial, tcp://HOST:PORT (or KEY@tcp://HOST:PORT); several separated by commas."},
    {"roster", "FILE", "Keys admitted by a node in no team, one per line (default: DIR/roster)."},
    {"discovery-port", "N", "UDP port of LAN beacons (default 47100).", 65535},
    {"broadcast", "ADDR", "Where beacons are sent (default 255.255.255.255)."},
    {"beacon-interval", "SEC", "Seconds between beacons (default 5).", 3600},
    {"no-discovery", NULL, "Send and hear no LAN beacons: static and cached peers only."},
    {"sync-interval", "SEC", "Sync with every connected peer this often (default 900).", 604800},
    {"log-level", "LEVEL", "error, warn, info (default) or debug."},
    {"gateway", "CONFIG",
     "Also run the campaign-service gateway with this configuration ('meshsync gateway')."},
    {NULL, NULL, NULL},
};

static const int run_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_NOTSTORE,
                                CLI_EXIT_PERM, CLI_EXIT_IO, CLI_EXIT_TRYAGAIN, 0};

/* Splits a comma- or space-separated list of peer addresses in place. */
static int split_peers(char *list, const char **out, size_t max, size_t *n)
{
    for (char *tok = strtok(list, ", "); tok; tok = strtok(NULL, ", ")) {
        if (*n == max) return -1;
        out[(*n)++] = tok;
    }
    return 0;
}

static int run_run(cli_ctx *ctx)
{
    const char *lvl = cli_opt_get(ctx, "log-level");
    if (lvl) {
        mesh_log_level level;
        if (mesh_log_level_parse(lvl, &level) != MESH_OK)
            return cli_usage_error(ctx, "--log-level must be error, warn, info or debug, not "
                                        "'%s'", lvl);
        mesh_log_set_level(level);
    }
    const char *peers[RUN_PEERS_MAX];
    size_t npeers = 0;
    char *peer_list = NULL;
    if (cli_opt_get(ctx, "peer")) {
        peer_list = strdup(cli_opt_get(ctx, "peer"));
        if (peer_list == NULL) {
            cli_error(ctx, "out of memory");
            return CLI_EXIT_FAILURE;
        }
        if (split_peers(peer_list, peers, RUN_PEERS_MAX, &npeers) != 0) {
            free(peer_list);
            return cli_usage_error(ctx, "more than %d peers in --peer", RUN_PEERS_MAX);
        }
    }
    mesh_loop_opts o = {
        .node = ctx->node,
        .listen = cli_opt_get(ctx, "listen") ? cli_opt_get(ctx, "listen") : RUN_LISTEN_DEFAULT,
        .peers = peers,
        .npeers = npeers,
        .roster_path = cli_opt_get(ctx, "roster"),
        .discovery = cli_opt_get(ctx, "no-discovery") == NULL,
        .discovery_port = (uint16_t)cli_opt_u64(ctx, "discovery-port", 0),
        .broadcast_addr = cli_opt_get(ctx, "broadcast"),
        .beacon_interval_ms = (uint32_t)cli_opt_u64(ctx, "beacon-interval", 0) * 1000u,
        .sync_interval_ms = (uint32_t)cli_opt_u64(ctx, "sync-interval", 0) * 1000u,
        .control = true,
        .use_cache = true,
        .persist = true,
        .stop = &g_stop,
    };
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    mesh_loop *loop = NULL;
    int rc = mesh_loop_new(&o, &loop);
    if (rc != MESH_OK) {
        free(peer_list);
        int ec = cli_fail(ctx, rc);
        if (rc == MESH_ENOTFOUND && o.roster_path == NULL)
            cli_hint("make the node part of a team ('meshsync team'), or put the keys to admit "
                     "in %s/roster (one 'meshsync identity' per line) or --roster FILE",
                     ctx->data_dir);
        return ec;
    }
    char key[MESH_KEY_STR_LEN];
    mesh_node_identity(ctx->node, key);
    mesh_log_info("meshsync %s node %.8s (%s) started on %s", MESH_VERSION_STRING, key,
                  mesh_node_scope(ctx->node), ctx->data_dir);
    /* The gateway runs as a supervised child process (docs/GATEWAY.md, "Processes"). */
    const char *gw = cli_opt_get(ctx, "gateway");
    if (gw && gateway_child_start(ctx, gw, lvl) != 0) {
        mesh_loop_free(loop);
        free(peer_list);
        return CLI_EXIT_NOTFOUND;
    }
    rc = mesh_loop_run(loop);
    if (gw) gateway_child_stop();
    mesh_loop_free(loop);
    free(peer_list);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    mesh_log_info("stopped");
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "stopped");
        cli_json_bool(&j, 1);
        cli_json_object_close(&j);
        cli_json_end(&j);
    }
    return CLI_EXIT_OK;
}

const cli_command cmd_run = {
    .name = "run",
    .summary = "Run the node's daemon: find peers and keep in sync with them.",
    .synopsis = "[--listen ADDR] [--peer ADDR] [--roster FILE] [--no-discovery] "
                "[--discovery-port N] [--broadcast ADDR] [--beacon-interval SEC] "
                "[--sync-interval SEC] [--log-level LEVEL] [--gateway CONFIG]",
    .description =
        "Runs in the foreground until SIGINT or SIGTERM, logging to stderr. It listens\n"
        "for peers on --listen (ZeroMQ CURVE, keys derived from the node's identity)\n"
        "and admits only keys on the roster. It finds peers by UDP beacons on the LAN,\n"
        "dials the --peer addresses and the peers it knew last time (DIR/peers.json),\n"
        "and syncs with each when it connects, when the store changes (a 'meshsync put'\n"
        "from another shell is passed on within a second), every --sync-interval, and\n"
        "when 'meshsync sync' asks. 'meshsync peers' and 'meshsync status' show its\n"
        "peers. With --gateway, it also runs 'meshsync gateway CONFIG' as a child\n"
        "process (restarted if it dies) that forwards every op to the campaign service.",
    .opts = run_opts,
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync run\n"
                "  meshsync run --data /media/node1 --listen tcp://0.0.0.0:47201 "
                "--no-discovery \\\n"
                "      --peer tcp://192.168.1.20:47200\n"
                "  meshsync run --log-level debug --sync-interval 60\n"
                "  meshsync run --gateway /etc/meshsync/gateway.json\n",
    .exit_codes = run_exits,
    .run = run_run,
};
