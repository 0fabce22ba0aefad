/*
 * cmd_peers.c - `meshsync peers`: the peers the node knows, whether they are connected, when
 * they last synced and what moved each way.
 */
#include <stdlib.h>

#include "commands.h"
#include "daemon.h"

static const int peers_exits[] = {CLI_EXIT_IO, CLI_EXIT_TRYAGAIN, 0};

static int run_peers(cli_ctx *ctx)
{
    json_t *state = daemon_peers(ctx);
    if (state == NULL) return CLI_EXIT_TRYAGAIN;
    if (ctx->json) {
        char *text = json_dumps(state, JSON_INDENT(2));
        if (text) fprintf(ctx->out, "%s\n", text);
        free(text);
    } else {
        daemon_print_peers(ctx->out, state);
    }
    json_decref(state);
    return CLI_EXIT_OK;
}

const cli_command cmd_peers = {
    .name = "peers",
    .summary = "List the peers this node knows and what moved between them.",
    .synopsis = "",
    .description =
        "Lists every peer the daemon knows: its key, the address it is dialled at\n"
        "(static, found by a LAN beacon, or remembered from an earlier run), whether it\n"
        "is connected or syncing now, when it last synced, the ops and bytes sent and\n"
        "received in all, and the last error. When the daemon is not running, shows\n"
        "what it saved on its last run (DIR/peers.json).",
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_DATA,
    .examples = "  meshsync peers\n"
                "  meshsync peers --json | jq '.peers[] | {key, last_sync_ms}'\n",
    .exit_codes = peers_exits,
    .run = run_peers,
};
