/*
 * main.c - the `meshsync` executable: finds the command named by argv[1] in the dispatch table
 * and hands it to the framework in cli.c. Also implements `help` and `--version`.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const cli_command cmd_help;

/* The dispatch table, in the order `meshsync help` lists it. A group starts a new heading. */
static const struct {
    const char *group;
    const cli_command *cmd;
} commands[] = {
    {"Node", &cmd_init},
    {"Node", &cmd_identity},
    {"Node", &cmd_status},
    {"Node", &cmd_team},
    {"Entities", &cmd_put},
    {"Entities", &cmd_get},
    {"Entities", &cmd_list},
    {"Entities", &cmd_delete},
    {"Entities", &cmd_history},
    {"Conflicts", &cmd_conflicts},
    {"Conflicts", &cmd_resolve},
    {"Moving data on files", &cmd_export},
    {"Moving data on files", &cmd_import},
    {"Syncing over the network", &cmd_run},
    {"Syncing over the network", &cmd_sync},
    {"Syncing over the network", &cmd_peers},
    {"Campaign service", &cmd_gateway},
    {"Help", &cmd_help},
};

#define COMMANDS_COUNT (sizeof commands / sizeof commands[0])

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < COMMANDS_COUNT; i++)
        if (strcmp(commands[i].cmd->name, name) == 0) return commands[i].cmd;
    return NULL;
}

static void print_overview(FILE *f)
{
    fputs("Usage: meshsync <command> [arguments] [options]\n"
          "\n"
          "meshsync keeps entity records (households, individuals, tasks, ...) in sync\n"
          "between the devices of a field team, peer to peer. Each device is a node: a\n"
          "data directory with its own identity and a signed log of every save.\n",
          f);
    const char *group = NULL;
    for (size_t i = 0; i < COMMANDS_COUNT; i++) {
        if (group == NULL || strcmp(group, commands[i].group) != 0) {
            group = commands[i].group;
            fprintf(f, "\n%s:\n", group);
        }
        fprintf(f, "  %-12s %s\n", commands[i].cmd->name, commands[i].cmd->summary);
    }
    fputs("\n"
          "Options:\n"
          "  --version    Print the version and exit.\n"
          "  -h, --help   Show this help and exit.\n"
          "\n"
          "Every command takes --help, and those that use a node take --data DIR (default:\n"
          "$MESHSYNC_DATA, else $HOME/.meshsync) and --json. An encrypted node also needs\n"
          "its key: --key-file FILE ($MESHSYNC_KEY_FILE) or its passphrase\n"
          "($MESHSYNC_PASSPHRASE, else asked on the terminal). Run 'meshsync help\n"
          "exit-codes' for the exit codes.\n",
          f);
}

static void print_exit_codes(FILE *f)
{
    fputs("Exit codes:\n", f);
    for (int c = 0; c <= CLI_EXIT_MAX; c++) fprintf(f, "  %2d  %s\n", c, cli_exit_describe(c));
}

static int run_help(cli_ctx *ctx)
{
    if (ctx->nargs == 0) {
        print_overview(ctx->out);
        return CLI_EXIT_OK;
    }
    if (strcmp(ctx->args[0], "exit-codes") == 0) {
        print_exit_codes(ctx->out);
        return CLI_EXIT_OK;
    }
    const cli_command *cmd = find_command(ctx->args[0]);
    if (cmd == NULL)
        return cli_usage_error(ctx, "no command named '%s'; 'meshsync help' lists them",
                               ctx->args[0]);
    cli_print_help(cmd, ctx->out);
    return CLI_EXIT_OK;
}

static const cli_command cmd_help = {
    .name = "help",
    .summary = "Show help for meshsync, a command, or the exit codes.",
    .synopsis = "[COMMAND | exit-codes]",
    .description = "Without an argument, lists the commands. With a command name, prints that\n"
                   "command's help (the same as 'meshsync COMMAND --help'). With 'exit-codes',\n"
                   "prints what every exit code means.",
    .args_min = 0,
    .args_max = 1,
    .needs = CLI_NEEDS_NOTHING,
    .examples = "  meshsync help\n"
                "  meshsync help put\n"
                "  meshsync help exit-codes\n",
    .run = run_help,
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_overview(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--version") == 0) {
        printf("meshsync %s\n", MESH_VERSION_STRING);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_IO;
    }
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_overview(stdout);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_IO;
    }
    const cli_command *cmd = find_command(name);
    if (cmd == NULL) {
        if (name[0] == '-')
            fprintf(stderr, "meshsync: unknown option '%s' before the command\n", name);
        else
            fprintf(stderr, "meshsync: '%s' is not a meshsync command\n", name);
        fputs("Try 'meshsync help'.\n", stderr);
        return CLI_EXIT_USAGE;
    }
    return cli_run(cmd, argc - 1, argv + 1);
}
