/*
 * team.h - the CLI side of the team roster (cmd_team.c) that other commands show.
 */
#ifndef MESH_CLI_TEAM_H
#define MESH_CLI_TEAM_H

#include "cli.h"

/* The status command's team section: the authority, the roster version held and whether this
 * node is on it, as a "team" key in JSON or a line of text; nothing for a node in no team. */
void team_status_section(cli_ctx *ctx, cli_json *j);

#endif
