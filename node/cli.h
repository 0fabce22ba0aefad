/*
 * cli.h - the framework every `meshsync` command is written against: command descriptors (from
 * which `--help` is generated), option parsing, exit codes, error reporting and output.
 *
 * A command is a `cli_command` (declared in commands.h, listed in main.c's table). The framework
 * parses its options into a `cli_ctx`, resolves the data directory, opens the node when the
 * command asks for it, and calls `run`. `run` writes its result to ctx->out, which is a memory
 * buffer: main.c copies it to stdout only when `run` returns CLI_EXIT_OK, so a failing command
 * never prints partial output. Errors go to stderr through cli_fail() and friends.
 *
 * Only lib/include/meshsync.h is used from the library.
 */
#ifndef MESH_CLI_H
#define MESH_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "meshsync.h"

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

/* ---- Exit codes (docs/cli/exit-codes.md) ------------------------------------------------- */

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,   /* generic failure: out of memory, internal error */
    CLI_EXIT_USAGE = 2,     /* bad command line: unknown option, missing or extra argument */
    CLI_EXIT_NOTFOUND = 3,  /* no such entity or file */
    CLI_EXIT_INPUT = 4,     /* invalid input: bad JSON, UUID, type, key, or over a limit */
    CLI_EXIT_STATE = 5,     /* refused by current state: stale rowVersion, deleted, no conflict,
                               node already exists */
    CLI_EXIT_CORRUPT = 6,   /* data fails validation: truncated, tampered (signature, chain) */
    CLI_EXIT_NOTSTORE = 7,  /* the data directory does not hold a meshsync node */
    CLI_EXIT_PERM = 8,      /* not permitted: file modes, roster, scope */
    CLI_EXIT_IO = 9,        /* an I/O error or a full disk */
    CLI_EXIT_VERSION = 10,  /* data written by an unsupported format version */
    CLI_EXIT_TRYAGAIN = 11, /* busy or timed out; retrying later may work */
};

#define CLI_EXIT_MAX 11

/* The exit code for a MESH_E* code (the one table, in cli.c). Unknown codes give
 * CLI_EXIT_FAILURE. */
int cli_exit_from_mesh(int mesh_code);

/* A short description of an exit code ("no such entity or file"). Never NULL. */
const char *cli_exit_describe(int exit_code);

/* The exit code for an errno value from our own file handling. */
int cli_exit_from_errno(int err);

/* ---- Commands and options ------------------------------------------------------------------ */

/* An option a command accepts. Options come after the command name, anywhere among the
 * positional arguments, as `--name VALUE`, `--name=VALUE` or `--flag`; `--` ends them. */
typedef struct cli_opt {
    const char *name;  /* without the leading "--"; NULL ends a table */
    const char *arg;   /* the value's placeholder ("FILE"), or NULL for a flag */
    const char *help;  /* one or two sentences */
    /* If not 0, the value must be a decimal integer from 0 to `max`; the framework checks it
     * before anything else happens, and cli_opt_u64() returns it. */
    uint64_t max;
} cli_opt;

/* What the framework does before calling run(). */
enum cli_needs {
    CLI_NEEDS_NOTHING = 0,
    CLI_NEEDS_DATA = 1,  /* resolve --data, but do not open the node (init) */
    CLI_NEEDS_NODE = 2,  /* resolve --data and open the node into ctx->node */
};

#define CLI_OPTS_MAX 16
#define CLI_ARGS_MAX 8

typedef struct cli_ctx cli_ctx;

typedef struct cli_command {
    const char *name;         /* "put" */
    const char *summary;      /* one line for `meshsync help` */
    /* Arguments and command-specific options after "meshsync <name> ", "TYPE [ID] [--file FILE]";
     * the usage line adds "[--data DIR] [--json]" to commands that use a node. Required
     * arguments come first: usage errors name them from here. */
    const char *synopsis;
    const char *description;  /* paragraphs, lines of at most 80 columns */
    const cli_opt *opts;      /* command-specific options (the common ones are added), or NULL */
    int args_min, args_max;   /* positional arguments */
    enum cli_needs needs;
    const char *examples;     /* "  meshsync ...\n" lines */
    const int *exit_codes;    /* the codes this command returns besides 0, 1 and 2; ends with 0 */
    int (*run)(cli_ctx *ctx); /* returns a CLI_EXIT_* code */
} cli_command;

struct cli_ctx {
    const cli_command *cmd;
    /* Positional arguments, in order. Borrowed from argv. */
    const char *args[CLI_ARGS_MAX];
    int nargs;
    /* Values of the command-specific options, parallel to cmd->opts: NULL if not given; a
     * flag that was given points at "". */
    const char *opt_values[CLI_OPTS_MAX];
    int json;                 /* --json */
    const char *data_dir;     /* from --data, $MESHSYNC_DATA or $HOME/.meshsync */
    /* The key file of an encrypted node: --key-file, else $MESHSYNC_KEY_FILE (CLI_NEEDS_NODE
     * commands; a passphrase comes from $MESHSYNC_PASSPHRASE or a prompt on the terminal). */
    const char *key_file;
    mesh_node *node;          /* open when cmd->needs == CLI_NEEDS_NODE */
    FILE *out;                /* buffered stdout; see the file comment */
};

/* Runs command `cmd` with argv[0] == the command name. Prints the result or the error and
 * returns the process exit code. */
int cli_run(const cli_command *cmd, int argc, char **argv);

/* Writes the command's --help text to `f`. */
void cli_print_help(const cli_command *cmd, FILE *f);

/* The value of option `name` of the running command, NULL if not given ("" for a given flag). */
const char *cli_opt_get(const cli_ctx *ctx, const char *name);

/* The value of numeric option `name` (one with `max` set), or `dflt` if it was not given. */
uint64_t cli_opt_u64(const cli_ctx *ctx, const char *name, uint64_t dflt);

/* ---- Errors ----------------------------------------------------------------------------- */

/* Prints "meshsync: <command>: <message>" to stderr. */
void cli_error(const cli_ctx *ctx, const char *fmt, ...) CLI_PRINTF(2, 3);

/* Prints "hint: <message>" to stderr. */
void cli_hint(const char *fmt, ...) CLI_PRINTF(1, 2);

/* Reports a usage error (the message, then "Try 'meshsync <command> --help'.") and returns
 * CLI_EXIT_USAGE. */
int cli_usage_error(const cli_ctx *ctx, const char *fmt, ...) CLI_PRINTF(2, 3);

/* Reports a failed library call: "meshsync: <command>: <mesh_errmsg()>" (or the code's name
 * when the library left no message), and returns the code's exit code. */
int cli_fail(const cli_ctx *ctx, int mesh_code);

/* ---- Input ---------------------------------------------------------------------------------- */

/* Reads a whole body: from `path`, or from stdin when `path` is NULL or "-". Refuses to read
 * a terminal (the user most likely forgot to pipe the body in). On success *out (NUL-terminated,
 * free() it) and *len are set and CLI_EXIT_OK is returned; else the error is reported and its
 * exit code returned. Bodies larger than CLI_BODY_BYTES_MAX are refused. */
int cli_read_body(const cli_ctx *ctx, const char *path, char **out, size_t *len);

/* Larger than any op the library accepts, so the library's limit is the one users meet. */
#define CLI_BODY_BYTES_MAX (16u * 1024u * 1024u)

/* Reports a failed put/resolve of `body`, read from `path` (NULL or "-" for stdin). When the
 * body itself is at fault (not JSON, not an object) the message is prefixed with where it came
 * from: "meshsync: put: person.json: JSON error at line 3 ...". Returns the exit code. */
int cli_fail_body(const cli_ctx *ctx, int mesh_code, const char *body, size_t len,
                  const char *path);

/* 1 if the library's message for the last failure contains `text`: a hint that would repeat
 * what the library already said is left out. */
int cli_errmsg_has(const char *text);

/*
 * Reads a passphrase from the terminal with echo off, after printing `prompt` there. Returns 0
 * with a NUL-terminated passphrase (without the newline) in `buf`, or -1 when there is no
 * terminal or the line does not fit in `cap` bytes. The caller wipes `buf`.
 */
int cli_read_passphrase(const char *prompt, char *buf, size_t cap);

/* ---- Output --------------------------------------------------------------------------------- */

/* A minimal JSON writer for --json output. Values are written in order; the writer inserts the
 * commas. Bodies that came from the library as JSON text are spliced in unchanged with
 * cli_json_raw(), so numbers keep their exact text. */
typedef struct cli_json {
    FILE *f;
    int depth;
    unsigned char first[32];  /* per depth: no value written yet */
    int after_key;
} cli_json;

void cli_json_begin(cli_json *j, FILE *f);
void cli_json_end(cli_json *j);  /* ends the document with a newline */
void cli_json_object_open(cli_json *j);
void cli_json_object_close(cli_json *j);
void cli_json_array_open(cli_json *j);
void cli_json_array_close(cli_json *j);
void cli_json_key(cli_json *j, const char *key);
void cli_json_str(cli_json *j, const char *s);
void cli_json_u64(cli_json *j, uint64_t v);
void cli_json_bool(cli_json *j, int v);
void cli_json_null(cli_json *j);
void cli_json_raw(cli_json *j, const char *text, size_t len);

/* Writes an entity's metadata and body as a JSON object (the shape of `get --json`). */
void cli_json_entity(cli_json *j, const mesh_entity *e);

/* Writes JSON text re-indented by two spaces, without reparsing numbers or strings. */
void cli_print_pretty_json(FILE *f, const char *text, size_t len);

/* Formats milliseconds since the epoch as "2024-05-01T09:30:00.123Z" into `out`. */
void cli_format_time(uint64_t ms, char out[32]);

#endif
