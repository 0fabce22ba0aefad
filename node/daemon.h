/*
 * daemon.h - what the network commands share: asking the daemon (through its control socket)
 * or, when none runs, the saved peers.json for per-peer state, and printing it.
 */
#ifndef MESH_CLI_DAEMON_H
#define MESH_CLI_DAEMON_H

#include <jansson.h>

#include "cli.h"

/* How long a command waits for the daemon to answer one request. */
#define DAEMON_CALL_MS 5000u

/*
 * Per-peer state of the node in ctx->data_dir: {"running": bool, "daemon": {...} (if running),
 * "peers": [...]}. From the daemon if one runs, else from peers.json (without live fields).
 * Returns a new reference, or NULL after reporting the error.
 */
json_t *daemon_peers(const cli_ctx *ctx);

/* Prints a peers table (the text form of `meshsync peers`). */
void daemon_print_peers(FILE *f, json_t *state);

/* Formats "3 min ago" for a time in ms since the epoch (0: "never"). */
void daemon_format_ago(uint64_t ms, char *out, size_t cap);

/* Formats a byte count as "1.2 MiB". */
void daemon_format_bytes(uint64_t n, char *out, size_t cap);

/* The status command's peers section: a "network" key in JSON (the shape of `peers --json`),
 * or lines of text; nothing for a node that never ran a daemon. */
void daemon_status_section(cli_ctx *ctx, cli_json *j);

#endif
