/*
 * commands.h - every `meshsync` command, one descriptor each. The descriptors live in the
 * cmd_*.c file of their group; main.c lists them in its dispatch table. To add a command, write
 * its descriptor and run function in a cmd_*.c file, declare it here, add it to main.c's table
 * and give it a page under docs/cli/.
 */
#ifndef MESH_CLI_COMMANDS_H
#define MESH_CLI_COMMANDS_H

#include "cli.h"

/* cmd_node.c: the node itself */
extern const cli_command cmd_init;
extern const cli_command cmd_identity;
extern const cli_command cmd_status;

/* cmd_team.c: the team roster */
extern const cli_command cmd_team;

/* cmd_entity.c: entities */
extern const cli_command cmd_put;
extern const cli_command cmd_get;
extern const cli_command cmd_list;
extern const cli_command cmd_delete;
extern const cli_command cmd_history;

/* cmd_conflict.c: conflicts */
extern const cli_command cmd_conflicts;
extern const cli_command cmd_resolve;

/* cmd_bundle.c: moving ops on files */
extern const cli_command cmd_export;
extern const cli_command cmd_import;

/* cmd_run.c, cmd_sync.c, cmd_peers.c: the daemon and syncing over the network */
extern const cli_command cmd_run;
extern const cli_command cmd_sync;
extern const cli_command cmd_peers;

/* cmd_gateway.c: the campaign-service gateway */
extern const cli_command cmd_gateway;

#endif
