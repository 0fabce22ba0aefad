/*
 * cli.c - the command framework of the `meshsync` tool: the exit-code table, option parsing,
 * generated --help, error reporting, body input and the small JSON writer behind --json.
 */
#include "cli.h"

#include <errno.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* ---- Exit codes ---------------------------------------------------------------------------- */

/* The one table from library error codes to exit codes. Every MESH_E* code appears exactly
 * once; docs/cli/exit-codes.md restates it. */
static const struct {
    int mesh_code;
    int exit_code;
} exit_map[] = {
    {MESH_EINVAL, CLI_EXIT_INPUT},
    {MESH_ENOMEM, CLI_EXIT_FAILURE},
    {MESH_EIO, CLI_EXIT_IO},
    {MESH_ENOTFOUND, CLI_EXIT_NOTFOUND},
    {MESH_EEXIST, CLI_EXIT_STATE},
    {MESH_ECORRUPT, CLI_EXIT_CORRUPT},
    {MESH_ESIG, CLI_EXIT_CORRUPT},
    {MESH_ECHAIN, CLI_EXIT_CORRUPT},
    {MESH_EDELETED, CLI_EXIT_STATE},
    {MESH_ESTALE, CLI_EXIT_STATE},
    {MESH_ETYPE, CLI_EXIT_INPUT},
    {MESH_ENOSPC, CLI_EXIT_IO},
    {MESH_ELIMIT, CLI_EXIT_INPUT},
    {MESH_ENOTSTORE, CLI_EXIT_NOTSTORE},
    {MESH_EVERSION, CLI_EXIT_VERSION},
    {MESH_EPERM, CLI_EXIT_PERM},
    {MESH_ECONFLICT, CLI_EXIT_STATE},
    {MESH_EPROTO, CLI_EXIT_CORRUPT},
    {MESH_EAGAIN, CLI_EXIT_TRYAGAIN},
    {MESH_ECLOSED, CLI_EXIT_TRYAGAIN},
    {MESH_ETIMEDOUT, CLI_EXIT_TRYAGAIN},
    {MESH_EINTERNAL, CLI_EXIT_FAILURE},
};

_Static_assert(sizeof exit_map / sizeof exit_map[0] == -MESH_EINTERNAL,
               "every MESH_E* code has one exit code");

static const char *const exit_descriptions[CLI_EXIT_MAX + 1] = {
    [CLI_EXIT_OK] = "success",
    [CLI_EXIT_FAILURE] = "failure (out of memory, internal error)",
    [CLI_EXIT_USAGE] = "usage error (unknown option, missing or extra argument)",
    [CLI_EXIT_NOTFOUND] = "not found (no such entity or file)",
    [CLI_EXIT_INPUT] = "invalid input (bad JSON, UUID, type or key; over a limit)",
    [CLI_EXIT_STATE] = "refused by current state (stale rowVersion, deleted, no conflict, "
                       "node exists)",
    [CLI_EXIT_CORRUPT] = "corrupt or tampered data (truncated, bad signature, broken chain)",
    [CLI_EXIT_NOTSTORE] = "the data directory holds no meshsync node",
    [CLI_EXIT_PERM] = "not permitted (file modes, roster, scope)",
    [CLI_EXIT_IO] = "I/O error or disk full",
    [CLI_EXIT_VERSION] = "unsupported format version",
    [CLI_EXIT_TRYAGAIN] = "busy or timed out; try again later",
};

int cli_exit_from_mesh(int mesh_code)
{
    if (mesh_code == MESH_OK) return CLI_EXIT_OK;
    for (size_t i = 0; i < sizeof exit_map / sizeof exit_map[0]; i++)
        if (exit_map[i].mesh_code == mesh_code) return exit_map[i].exit_code;
    return CLI_EXIT_FAILURE;
}

const char *cli_exit_describe(int exit_code)
{
    if (exit_code < 0 || exit_code > CLI_EXIT_MAX) return "unknown exit code";
    return exit_descriptions[exit_code];
}

int cli_exit_from_errno(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR: return CLI_EXIT_NOTFOUND;
    case EACCES:
    case EPERM:
    case EROFS: return CLI_EXIT_PERM;
    case ENOMEM: return CLI_EXIT_FAILURE;
    default: return CLI_EXIT_IO;
    }
}

/* ---- Errors -------------------------------------------------------------------------------- */

void cli_error(const cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "meshsync: %s: ", ctx->cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_hint(const char *fmt, ...)
{
    va_list ap;
    fputs("hint: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* "Usage: meshsync put TYPE [ID] [--file FILE] [--data DIR] [--json]" */
static void print_usage(const cli_command *cmd, FILE *f)
{
    fprintf(f, "Usage: meshsync %s%s%s%s\n", cmd->name, cmd->synopsis[0] ? " " : "",
            cmd->synopsis, cmd->needs != CLI_NEEDS_NOTHING ? " [--data DIR] [--json]" : "");
}

int cli_usage_error(const cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "meshsync: %s: ", ctx->cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_usage(ctx->cmd, stderr);
    fprintf(stderr, "Try 'meshsync %s --help'.\n", ctx->cmd->name);
    return CLI_EXIT_USAGE;
}

int cli_fail(const cli_ctx *ctx, int mesh_code)
{
    const char *msg = mesh_errmsg();
    if (msg == NULL || msg[0] == '\0') msg = mesh_strerror(mesh_code);
    cli_error(ctx, "%s", msg);
    return cli_exit_from_mesh(mesh_code);
}

/* ---- Options ------------------------------------------------------------------------------ */

static const cli_opt data_opt = {"data", "DIR",
                                 "The node's data directory (default: $MESHSYNC_DATA, else "
                                 "$HOME/.meshsync)."};
static const cli_opt json_opt = {"json", NULL, "Print one JSON document on stdout, for scripts."};
static const cli_opt key_file_opt = {"key-file", "FILE",
                                     "Key file of an encrypted node (default: $MESHSYNC_KEY_FILE; "
                                     "a passphrase comes from $MESHSYNC_PASSPHRASE or a prompt)."};
static const cli_opt help_opt = {"help", NULL, "Show this help and exit."};

static size_t opts_count(const cli_command *cmd)
{
    size_t n = 0;
    if (cmd->opts)
        while (cmd->opts[n].name) n++;
    return n;
}

const char *cli_opt_get(const cli_ctx *ctx, const char *name)
{
    size_t n = opts_count(ctx->cmd);
    for (size_t i = 0; i < n; i++)
        if (strcmp(ctx->cmd->opts[i].name, name) == 0) return ctx->opt_values[i];
    return NULL;
}

/* Parses a decimal integer from 0 to `max`; returns 0 or -1. */
static int parse_u64(const char *text, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (*text == '\0') return -1;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

uint64_t cli_opt_u64(const cli_ctx *ctx, const char *name, uint64_t dflt)
{
    const char *v = cli_opt_get(ctx, name);
    uint64_t n;
    return v && parse_u64(v, UINT64_MAX, &n) == 0 ? n : dflt;
}

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    }
    return 0;
}

/* Matches argv[*i] against option `name`; takes the value from "--name=V" or the next
 * argument. Returns 0 if it is not this option, 1 if matched, -1 on a usage error. */
static int match_opt(cli_ctx *ctx, int argc, char **argv, int *i, const cli_opt *o,
                     const char **value)
{
    const char *a = argv[*i] + 2;
    size_t n = strlen(o->name);
    if (strncmp(a, o->name, n) != 0 || (a[n] != '\0' && a[n] != '=')) return 0;
    if (o->arg == NULL) {
        if (a[n] == '=') {
            cli_usage_error(ctx, "option '--%s' takes no value", o->name);
            return -1;
        }
        *value = "";
        return 1;
    }
    if (a[n] == '=') {
        *value = a + n + 1;
    } else if (*i + 1 < argc) {
        *value = argv[++*i];
    } else {
        cli_usage_error(ctx, "option '--%s' needs a value (%s)", o->name, o->arg);
        return -1;
    }
    if ((*value)[0] == '\0') {
        cli_usage_error(ctx, "option '--%s' needs a non-empty value (%s)", o->name, o->arg);
        return -1;
    }
    return 1;
}

/* The name of required argument number `i` (0-based), from the synopsis: required arguments
 * are the words before the first '[' ("TYPE [ID] ..."). */
static void missing_arg_name(const cli_command *cmd, int i, char *out, size_t size)
{
    const char *p = cmd->synopsis;
    snprintf(out, size, "%d", i + 1);
    for (int k = 0; *p && *p != '['; k++) {
        size_t n = strcspn(p, " ");
        if (k == i) {
            snprintf(out, size, "%.*s", (int)n, p);
            return;
        }
        p += n;
        p += strspn(p, " ");
    }
}

static int parse_args(cli_ctx *ctx, int argc, char **argv)
{
    const cli_command *cmd = ctx->cmd;
    size_t nopts = opts_count(cmd);
    int options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && strcmp(a, "--") == 0) {
            options_done = 1;
            continue;
        }
        if (options_done || a[0] != '-' || strcmp(a, "-") == 0) {
            if (ctx->nargs >= cmd->args_max || ctx->nargs >= CLI_ARGS_MAX)
                return cli_usage_error(ctx, "unexpected argument '%s'", a);
            ctx->args[ctx->nargs++] = a;
            continue;
        }
        if (a[1] != '-')
            return cli_usage_error(ctx, "unknown option '%s'", a);
        int m = 0;
        const char *v = NULL;
        for (size_t k = 0; k < nopts && m == 0; k++) {
            m = match_opt(ctx, argc, argv, &i, &cmd->opts[k], &v);
            if (m == 1) ctx->opt_values[k] = v;
        }
        if (m == 0 && cmd->needs != CLI_NEEDS_NOTHING) {
            m = match_opt(ctx, argc, argv, &i, &data_opt, &v);
            if (m == 1) ctx->data_dir = v;
            if (m == 0) {
                m = match_opt(ctx, argc, argv, &i, &json_opt, &v);
                if (m == 1) ctx->json = 1;
            }
        }
        if (m == 0 && cmd->needs == CLI_NEEDS_NODE) {
            m = match_opt(ctx, argc, argv, &i, &key_file_opt, &v);
            if (m == 1) ctx->key_file = v;
        }
        if (m < 0) return CLI_EXIT_USAGE;
        if (m == 0) return cli_usage_error(ctx, "unknown option '%s'", a);
    }
    for (size_t k = 0; k < nopts; k++) {
        uint64_t n;
        const char *v = ctx->opt_values[k];
        if (cmd->opts[k].max && v && parse_u64(v, cmd->opts[k].max, &n) != 0)
            return cli_usage_error(ctx, "--%s expects a whole number from 0 to %llu, not '%s'",
                                   cmd->opts[k].name, (unsigned long long)cmd->opts[k].max, v);
    }
    if (ctx->nargs < cmd->args_min) {
        char name[32];
        missing_arg_name(cmd, ctx->nargs, name, sizeof name);
        return cli_usage_error(ctx, "missing argument %s", name);
    }
    return CLI_EXIT_OK;
}

/* ---- Help ---------------------------------------------------------------------------------- */

#define HELP_COLUMN 25
#define HELP_WIDTH 80

/* Prints an option and its help, wrapped to HELP_WIDTH columns. */
static void print_opt(FILE *f, const cli_opt *o, int dash_h)
{
    char left[64];
    snprintf(left, sizeof left, "%s--%s%s%s", dash_h ? "-h, " : "", o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
    int col = fprintf(f, "  %s", left);
    if (col >= HELP_COLUMN) {
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", HELP_COLUMN - col, "");
    col = HELP_COLUMN;
    for (const char *p = o->help; *p;) {
        size_t n = strcspn(p, " ");
        if (col > HELP_COLUMN && col + 1 + (int)n > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_COLUMN, "");
            col = HELP_COLUMN;
        } else if (col > HELP_COLUMN) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, n, f);
        col += (int)n;
        p += n;
        p += strspn(p, " ");
    }
    fputc('\n', f);
}

void cli_print_help(const cli_command *cmd, FILE *f)
{
    print_usage(cmd, f);
    fprintf(f, "\n%s\n\n%s\n", cmd->summary, cmd->description);
    fputs("\nOptions:\n", f);
    size_t n = opts_count(cmd);
    for (size_t i = 0; i < n; i++) print_opt(f, &cmd->opts[i], 0);
    if (cmd->needs != CLI_NEEDS_NOTHING) {
        print_opt(f, &data_opt, 0);
        print_opt(f, &json_opt, 0);
    }
    print_opt(f, &help_opt, 1);
    if (cmd->examples) fprintf(f, "\nExamples:\n%s", cmd->examples);
    fputs("\nExit codes:\n", f);
    fprintf(f, "  %2d  %s\n", CLI_EXIT_OK, cli_exit_describe(CLI_EXIT_OK));
    fprintf(f, "  %2d  %s\n", CLI_EXIT_FAILURE, cli_exit_describe(CLI_EXIT_FAILURE));
    fprintf(f, "  %2d  %s\n", CLI_EXIT_USAGE, cli_exit_describe(CLI_EXIT_USAGE));
    for (const int *c = cmd->exit_codes; c && *c; c++)
        fprintf(f, "  %2d  %s\n", *c, cli_exit_describe(*c));
    fputs("See docs/cli/exit-codes.md for the full table.\n", f);
}

/* ---- The data directory and the node ------------------------------------------------------- */

/* 1 if `dir` is missing or an empty directory. */
static int dir_is_absent_or_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) return errno == ENOENT;
    int empty = 1;
    struct dirent *e;
    while (empty && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = 0;
    closedir(d);
    return empty;
}

static int resolve_data_dir(cli_ctx *ctx, char **owned)
{
    if (ctx->data_dir) return CLI_EXIT_OK;
    const char *env = getenv("MESHSYNC_DATA");
    if (env && env[0]) {
        ctx->data_dir = env;
        return CLI_EXIT_OK;
    }
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0')
        return cli_usage_error(ctx, "no data directory: pass --data DIR, or set MESHSYNC_DATA "
                                    "or HOME");
    size_t n = strlen(home) + sizeof "/.meshsync";
    *owned = malloc(n);
    if (*owned == NULL) {
        cli_error(ctx, "out of memory");
        return CLI_EXIT_FAILURE;
    }
    snprintf(*owned, n, "%s/.meshsync", home);
    ctx->data_dir = *owned;
    return CLI_EXIT_OK;
}

int cli_read_passphrase(const char *prompt, char *buf, size_t cap)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (tty == NULL) return -1;
    struct termios old, quiet;
    int fd = fileno(tty);
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    fputs(prompt, tty);
    fflush(tty);
    int rc = fgets(buf, (int)cap, tty) != NULL ? 0 : -1;
    if (restore) tcsetattr(fd, TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    if (rc != 0) return -1;
    size_t n = strlen(buf);
    if (n == 0 || buf[n - 1] != '\n') return -1;  /* too long for buf */
    buf[n - 1] = '\0';
    return 0;
}

/* Asks for an encrypted node's passphrase when $MESHSYNC_PASSPHRASE does not give it. */
static int prompt_passphrase(char *buf, size_t cap, void *vctx)
{
    const cli_ctx *ctx = vctx;
    char prompt[4200];
    snprintf(prompt, sizeof prompt, "Passphrase of the node in %s: ", ctx->data_dir);
    return cli_read_passphrase(prompt, buf, cap);
}

static int open_node(cli_ctx *ctx)
{
    if (ctx->key_file == NULL) {
        const char *env = getenv("MESHSYNC_KEY_FILE");
        if (env && env[0]) ctx->key_file = env;
    } else {
        /* Child processes (the daemon's gateway) open the node too. */
        setenv("MESHSYNC_KEY_FILE", ctx->key_file, 1);
    }
    const char *pass = getenv("MESHSYNC_PASSPHRASE");
    mesh_open_opts o = {.passphrase = pass && pass[0] ? pass : NULL, .key_file = ctx->key_file,
                        .passphrase_cb = prompt_passphrase, .passphrase_ctx = ctx};
    int rc = mesh_node_open(ctx->data_dir, &o, &ctx->node);
    if (rc == MESH_OK) return CLI_EXIT_OK;
    ctx->node = NULL;
    /* The hints are left out where the library's message already says what to do. */
    int ec = cli_fail(ctx, rc);
    switch (rc) {
    case MESH_ENOTSTORE:
        if (cli_errmsg_has("meshsync init")) break;
        if (dir_is_absent_or_empty(ctx->data_dir))
            cli_hint("no node at %s; run 'meshsync init --data %s' first", ctx->data_dir,
                     ctx->data_dir);
        else
            cli_hint("%s holds files but no meshsync node; check --data or MESHSYNC_DATA",
                     ctx->data_dir);
        break;
    case MESH_EPERM:
        if (cli_errmsg_has("chmod")) break;
        if (cli_errmsg_has("passphrase")) {
            cli_hint("set MESHSYNC_PASSPHRASE, or run the command on a terminal to be asked");
            break;
        }
        if (cli_errmsg_has("key file")) {
            cli_hint("pass --key-file FILE or set MESHSYNC_KEY_FILE");
            break;
        }
        cli_hint("the identity key must be private: chmod 600 %s/identity.key", ctx->data_dir);
        break;
    case MESH_EVERSION:
        cli_hint("%s was written by another version of meshsync (this is %s)", ctx->data_dir,
                 MESH_VERSION_STRING);
        break;
    default: break;
    }
    return ec;
}

/* ---- Running a command --------------------------------------------------------------------- */

static int flush_output(cli_ctx *ctx, char *buf, size_t len)
{
    if (len > 0 && fwrite(buf, 1, len, stdout) != len) goto fail;
    if (fflush(stdout) != 0) goto fail;
    return CLI_EXIT_OK;
fail:
    cli_error(ctx, "cannot write to standard output: %s", strerror(errno));
    return CLI_EXIT_IO;
}

int cli_run(const cli_command *cmd, int argc, char **argv)
{
    cli_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.cmd = cmd;
    if (opts_count(cmd) > CLI_OPTS_MAX || cmd->args_max > CLI_ARGS_MAX) {
        cli_error(&ctx, "too many options or arguments declared (a bug in meshsync)");
        return CLI_EXIT_FAILURE;
    }
    if (wants_help(argc, argv)) {
        cli_print_help(cmd, stdout);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_IO;
    }
    int ec = parse_args(&ctx, argc, argv);
    if (ec != CLI_EXIT_OK) return ec;

    char *owned_dir = NULL;
    char *buf = NULL;
    size_t len = 0;
    ctx.out = open_memstream(&buf, &len);
    if (ctx.out == NULL) {
        cli_error(&ctx, "out of memory");
        return CLI_EXIT_FAILURE;
    }
    if (cmd->needs != CLI_NEEDS_NOTHING) ec = resolve_data_dir(&ctx, &owned_dir);
    if (ec == CLI_EXIT_OK && cmd->needs == CLI_NEEDS_NODE) ec = open_node(&ctx);
    if (ec == CLI_EXIT_OK) ec = cmd->run(&ctx);
    mesh_node_close(ctx.node);
    ctx.node = NULL;
    if (fclose(ctx.out) != 0 && ec == CLI_EXIT_OK) {
        cli_error(&ctx, "out of memory buffering output");
        ec = CLI_EXIT_FAILURE;
    }
    if (ec == CLI_EXIT_OK) ec = flush_output(&ctx, buf, len);
    free(buf);
    free(owned_dir);
    return ec;
}

/* ---- Input --------------------------------------------------------------------------------- */

int cli_read_body(const cli_ctx *ctx, const char *path, char **out, size_t *len)
{
    int from_stdin = path == NULL || strcmp(path, "-") == 0;
    const char *name = from_stdin ? "stdin" : path;
    FILE *f = stdin;
    if (from_stdin) {
        if (isatty(STDIN_FILENO))
            return cli_usage_error(ctx, "expects the body as JSON on stdin or with --file "
                                        "FILE, and stdin is a terminal");
    } else {
        f = fopen(path, "rb");
        if (f == NULL) {
            int err = errno;
            cli_error(ctx, "cannot open %s: %s", path, strerror(err));
            return cli_exit_from_errno(err);
        }
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int ec = CLI_EXIT_OK;
    while (buf != NULL) {
        if (n + 1 >= cap) {
            if (cap > CLI_BODY_BYTES_MAX) {
                cli_error(ctx, "%s is larger than %u MiB", name, CLI_BODY_BYTES_MAX >> 20);
                ec = CLI_EXIT_INPUT;
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (p == NULL) break;
            buf = p;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                int err = errno;
                cli_error(ctx, "cannot read %s: %s", name, strerror(err));
                ec = cli_exit_from_errno(err);
            }
            break;
        }
    }
    if (!from_stdin) fclose(f);
    if (buf == NULL && ec == CLI_EXIT_OK) {
        cli_error(ctx, "out of memory reading %s", name);
        ec = CLI_EXIT_FAILURE;
    }
    if (ec != CLI_EXIT_OK) {
        free(buf);
        return ec;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return CLI_EXIT_OK;
}

int cli_fail_body(const cli_ctx *ctx, int mesh_code, const char *body, size_t len,
                  const char *path)
{
    if (mesh_code != MESH_EINVAL || body == NULL) return cli_fail(ctx, mesh_code);
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY, NULL);
    int body_at_fault = v == NULL || !json_is_object(v);
    json_decref(v);
    if (!body_at_fault) return cli_fail(ctx, mesh_code);
    const char *msg = mesh_errmsg();
    if (msg == NULL || msg[0] == '\0') msg = mesh_strerror(mesh_code);
    cli_error(ctx, "%s: %s", path && strcmp(path, "-") != 0 ? path : "stdin", msg);
    return cli_exit_from_mesh(mesh_code);
}

int cli_errmsg_has(const char *text)
{
    const char *msg = mesh_errmsg();
    return msg != NULL && strstr(msg, text) != NULL;
}

/* ---- JSON output --------------------------------------------------------------------------- */

void cli_json_begin(cli_json *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
    j->first[0] = 1;
}

void cli_json_end(cli_json *j) { fputc('\n', j->f); }

/* Writes the separator before a value. */
static void before_value(cli_json *j)
{
    if (j->after_key) {
        j->after_key = 0;
        return;
    }
    if (!j->first[j->depth]) fputc(',', j->f);
    j->first[j->depth] = 0;
}

static void open_nested(cli_json *j, char c)
{
    before_value(j);
    fputc(c, j->f);
    if (j->depth + 1 < (int)sizeof j->first) j->depth++;
    j->first[j->depth] = 1;
}

static void close_nested(cli_json *j, char c)
{
    fputc(c, j->f);
    if (j->depth > 0) j->depth--;
}

void cli_json_object_open(cli_json *j) { open_nested(j, '{'); }
void cli_json_object_close(cli_json *j) { close_nested(j, '}'); }
void cli_json_array_open(cli_json *j) { open_nested(j, '['); }
void cli_json_array_close(cli_json *j) { close_nested(j, ']'); }

static void write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void cli_json_key(cli_json *j, const char *key)
{
    before_value(j);
    write_string(j->f, key);
    fputc(':', j->f);
    j->after_key = 1;
}

void cli_json_str(cli_json *j, const char *s)
{
    before_value(j);
    write_string(j->f, s);
}

void cli_json_u64(cli_json *j, uint64_t v)
{
    before_value(j);
    fprintf(j->f, "%llu", (unsigned long long)v);
}

void cli_json_bool(cli_json *j, int v)
{
    before_value(j);
    fputs(v ? "true" : "false", j->f);
}

void cli_json_null(cli_json *j)
{
    before_value(j);
    fputs("null", j->f);
}

void cli_json_raw(cli_json *j, const char *text, size_t len)
{
    before_value(j);
    if (len == 0)
        fputs("null", j->f);
    else
        fwrite(text, 1, len, j->f);
}

void cli_json_entity(cli_json *j, const mesh_entity *e)
{
    cli_json_object_open(j);
    cli_json_key(j, "id");
    cli_json_str(j, e->id);
    cli_json_key(j, "type");
    cli_json_str(j, e->type ? e->type : "");
    cli_json_key(j, "rowVersion");
    cli_json_u64(j, e->row_version);
    cli_json_key(j, "deleted");
    cli_json_bool(j, e->deleted);
    cli_json_key(j, "conflict");
    cli_json_bool(j, e->conflict);
    cli_json_key(j, "modified_ms");
    cli_json_u64(j, e->modified_ms);
    cli_json_key(j, "author");
    cli_json_str(j, e->author);
    cli_json_key(j, "body");
    cli_json_raw(j, e->json, e->json ? e->json_len : 0);
    cli_json_object_close(j);
}

static void newline_indent(FILE *f, int depth)
{
    fputc('\n', f);
    for (int i = 0; i < depth; i++) fputs("  ", f);
}

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void cli_print_pretty_json(FILE *f, const char *text, size_t len)
{
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '"') {
            /* Copy the string through its closing quote, honouring escapes. */
            size_t k = i + 1;
            while (k < len && text[k] != '"') k += text[k] == '\\' ? 2 : 1;
            if (k >= len) k = len - 1;
            fwrite(text + i, 1, k - i + 1, f);
            i = k;
        } else if (c == '{' || c == '[') {
            size_t k = i + 1;
            while (k < len && is_json_space(text[k])) k++;
            if (k < len && (text[k] == '}' || text[k] == ']')) {
                fputc(c, f);
                fputc(text[k], f);
                i = k;
            } else {
                fputc(c, f);
                newline_indent(f, ++depth);
            }
        } else if (c == '}' || c == ']') {
            newline_indent(f, depth > 0 ? --depth : 0);
            fputc(c, f);
        } else if (c == ',') {
            fputc(',', f);
            newline_indent(f, depth);
        } else if (c == ':') {
            fputs(": ", f);
        } else if (!is_json_space(c)) {
            fputc(c, f);
        }
    }
    fputc('\n', f);
}

void cli_format_time(uint64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, 32, "%llu ms", (unsigned long long)ms);
        return;
    }
    size_t n = strlen(out);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}
