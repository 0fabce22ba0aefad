/*
 * gateway.h - the CLI side of the campaign-service gateway (cmd_gateway.c): `meshsync gateway`
 * runs it in the foreground; `meshsync run --gateway CONFIG` starts that command as a child
 * process of the daemon and restarts it if it dies (docs/GATEWAY.md, "Processes").
 */
#ifndef MESH_CLI_GATEWAY_H
#define MESH_CLI_GATEWAY_H

#include <jansson.h>

#include "cli.h"

/* The gateway writes its live state here (in the data directory) every few seconds. */
#define GATEWAY_STATE_FILE "gateway-state.json"
#define GATEWAY_LOCK_FILE "gateway.lock"

/* Starts `meshsync gateway CONFIG --data DIR` as a supervised child process (restarted with
 * backoff when it exits unexpectedly). `log_level` may be NULL. Returns 0, or -1 after
 * reporting why. */
int gateway_child_start(const cli_ctx *ctx, const char *config_path, const char *log_level);

/* Stops the child (SIGTERM, then SIGKILL after 10 s) and its supervisor. */
void gateway_child_stop(void);

/* The status command's gateway section: outbox counts and the live state file, as a "gateway"
 * key in JSON or lines of text; nothing for a node that never ran a gateway. */
void gateway_status_section(cli_ctx *ctx, cli_json *j);

#endif
