/*
 * cmd_node.c - commands about the node itself: `init`, `identity` and `status`.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "daemon.h"
#include "gateway.h"
#include "qr.h"
#include "team.h"

/* ---- init ---------------------------------------------------------------------------------- */

static const cli_opt init_opts[] = {
    {"scope", "CODE",
     "Boundary code this node writes under, e.g. MZ/NAMPULA/ERATI/L01 (default: \"default\")."},
    {"types", "FILE", "Entity-type configuration (JSON) to use instead of the DIGIT HCM types."},
    {"team", "KEY", "Join the team of this authority key (as 'meshsync team join' does)."},
    {"encrypt", NULL,
     "Encrypt the op-log and keys with a passphrase: $MESHSYNC_PASSPHRASE, or asked."},
    {"key-file", "FILE",
     "Encrypt the op-log and keys with the 32-byte key in FILE (made, mode 0600, if missing)."},
    {NULL, NULL, NULL},
};

static const int init_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_STATE,
                                 CLI_EXIT_CORRUPT, CLI_EXIT_PERM, CLI_EXIT_IO, 0};

/* The passphrase of a new encrypted node: $MESHSYNC_PASSPHRASE, else typed twice. */
static int new_passphrase(cli_ctx *ctx, char *buf, size_t cap)
{
    const char *env = getenv("MESHSYNC_PASSPHRASE");
    if (env && env[0]) {
        if (strlen(env) >= cap) {
            cli_error(ctx, "MESHSYNC_PASSPHRASE is longer than %zu bytes", cap - 1);
            return CLI_EXIT_INPUT;
        }
        snprintf(buf, cap, "%s", env);
        return CLI_EXIT_OK;
    }
    char again[1025];
    if (cli_read_passphrase("New passphrase: ", buf, cap) != 0)
        return cli_usage_error(ctx, "--encrypt needs a passphrase: set MESHSYNC_PASSPHRASE, or "
                                    "run on a terminal to be asked");
    int ec = CLI_EXIT_OK;
    if (buf[0] == '\0') {
        cli_error(ctx, "the passphrase is empty");
        ec = CLI_EXIT_INPUT;
    } else if (cli_read_passphrase("Repeat it: ", again, sizeof again) != 0 ||
               strcmp(buf, again) != 0) {
        cli_error(ctx, "the two passphrases differ; nothing was created");
        ec = CLI_EXIT_INPUT;
    }
    explicit_bzero(again, sizeof again);
    return ec;
}

static int run_init(cli_ctx *ctx)
{
    char pass[1025] = "";
    mesh_init_opts opts = {
        .scope = cli_opt_get(ctx, "scope"),
        .types_path = cli_opt_get(ctx, "types"),
        .team = cli_opt_get(ctx, "team"),
        .key_file = cli_opt_get(ctx, "key-file"),
    };
    if (cli_opt_get(ctx, "encrypt")) {
        if (opts.key_file)
            return cli_usage_error(ctx, "--encrypt (a passphrase) and --key-file exclude each "
                                        "other");
        int ec = new_passphrase(ctx, pass, sizeof pass);
        if (ec != CLI_EXIT_OK) {
            explicit_bzero(pass, sizeof pass);
            return ec;
        }
        opts.passphrase = pass;
    }
    int rc = mesh_node_init(ctx->data_dir, &opts);
    mesh_node *node = NULL;
    mesh_open_opts oo = {.passphrase = opts.passphrase, .key_file = opts.key_file};
    if (rc == MESH_OK) rc = mesh_node_open(ctx->data_dir, &oo, &node);
    explicit_bzero(pass, sizeof pass);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    char key[MESH_KEY_STR_LEN];
    mesh_node_identity(node, key);
    const char *scope = mesh_node_scope(node);
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "data");
        cli_json_str(&j, ctx->data_dir);
        cli_json_key(&j, "identity");
        cli_json_str(&j, key);
        cli_json_key(&j, "scope");
        cli_json_str(&j, scope);
        cli_json_key(&j, "team");
        cli_json_str(&j, opts.team ? opts.team : "");
        cli_json_key(&j, "encrypted");
        cli_json_bool(&j, opts.passphrase || opts.key_file);
        cli_json_object_close(&j);
        cli_json_end(&j);
    } else {
        fprintf(ctx->out, "Initialized a meshsync node in %s\nidentity  %s\nscope     %s\n",
                ctx->data_dir, key, scope);
        if (opts.passphrase || opts.key_file)
            fprintf(ctx->out, "encrypted with %s\n", opts.passphrase ? "a passphrase"
                                                                     : opts.key_file);
        if (opts.team)
            fprintf(ctx->out, "joined the team of authority %s; a supervisor adds this node "
                    "with 'meshsync team add' (show its key with 'meshsync identity')\n",
                    opts.team);
    }
    mesh_node_close(node);
    return CLI_EXIT_OK;
}

const cli_command cmd_init = {
    .name = "init",
    .summary = "Create a new node: an identity and an empty store.",
    .synopsis = "[--scope CODE] [--types FILE] [--team KEY] [--encrypt | --key-file FILE]",
    .description =
        "Creates a node in the data directory (created if missing, mode 0700): a fresh\n"
        "Ed25519 identity (identity.key, mode 0600), an empty store and the node's\n"
        "configuration. The scope is the boundary code the node writes its saves under.\n"
        "The entity types are the DIGIT Health Campaign Management types unless --types\n"
        "names another configuration. A directory that already holds a node is left\n"
        "untouched.\n"
        "\n"
        "--team joins the team of an authority key (see 'meshsync team'). --encrypt or\n"
        "--key-file encrypts the op-log and the keys for a device that can be lost:\n"
        "every later command then needs the same passphrase ($MESHSYNC_PASSPHRASE or a\n"
        "prompt) or key file (--key-file or $MESHSYNC_KEY_FILE). A lost passphrase or key\n"
        "file cannot be recovered: the node's data then has to come again from its peers.",
    .opts = init_opts,
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_DATA,
    .examples = "  meshsync init\n"
                "  meshsync init --data /media/node1 --scope MZ/NAMPULA/ERATI/L01\n"
                "  meshsync init --types my-types.json --json\n"
                "  meshsync init --scope MZ/N/E/L01 --team 3f1c...e9 --encrypt\n",
    .exit_codes = init_exits,
    .run = run_init,
};

/* ---- identity ------------------------------------------------------------------------------ */

static const int node_exits[] = {CLI_EXIT_CORRUPT, CLI_EXIT_NOTSTORE, CLI_EXIT_PERM, CLI_EXIT_IO,
                                 CLI_EXIT_VERSION, 0};

static const cli_opt identity_opts[] = {
    {"qr", NULL, "Draw the QR code even when standard output is not a terminal."},
    {"no-qr", NULL, "Print the key only, also on a terminal."},
    {NULL, NULL, NULL},
};

static int run_identity(cli_ctx *ctx)
{
    char key[MESH_KEY_STR_LEN];
    mesh_node_identity(ctx->node, key);
    if (cli_opt_get(ctx, "qr") && cli_opt_get(ctx, "no-qr"))
        return cli_usage_error(ctx, "--qr and --no-qr exclude each other");
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "identity");
        cli_json_str(&j, key);
        cli_json_key(&j, "uri");
        char uri[sizeof "meshsync:" + MESH_KEY_STR_LEN];
        snprintf(uri, sizeof uri, "meshsync:%s", key);
        cli_json_str(&j, uri);
        cli_json_key(&j, "scope");
        cli_json_str(&j, mesh_node_scope(ctx->node));
        cli_json_object_close(&j);
        cli_json_end(&j);
        return CLI_EXIT_OK;
    }
    fprintf(ctx->out, "%s\n", key);
    int qr = cli_opt_get(ctx, "qr") || (isatty(STDOUT_FILENO) && !cli_opt_get(ctx, "no-qr"));
    if (qr) {
        char text[sizeof QR_KEY_PREFIX + MESH_KEY_STR_LEN];
        size_t n = (size_t)snprintf(text, sizeof text, "%s", QR_KEY_PREFIX);
        for (const char *p = key; *p; p++) text[n++] = (char)toupper((unsigned char)*p);
        text[n] = '\0';
        fputc('\n', ctx->out);
        if (qr_print(ctx->out, text) != 0) {
            cli_error(ctx, "cannot draw the QR code of %s", text);
            return CLI_EXIT_FAILURE;
        }
        fprintf(ctx->out, "\nScan it, or type the key, into 'meshsync team add KEY' on the "
                "supervisor's device.\n");
    }
    return CLI_EXIT_OK;
}

const cli_command cmd_identity = {
    .name = "identity",
    .summary = "Print the node's public key, and a QR code of it on a terminal.",
    .synopsis = "[--qr | --no-qr]",
    .description =
        "Prints the node's Ed25519 public key as 64 lowercase hex characters. Other nodes\n"
        "see this key as the author of the node's saves, 'meshsync team add' takes it to\n"
        "put the node on a team roster, and 'meshsync resolve --pick' takes it to choose\n"
        "this node's version of a conflicting entity.\n"
        "\n"
        "On a terminal the key is also drawn as a QR code (of \"MESHSYNC:\" and the key,\n"
        "which 'team add' reads as it is), so a supervisor can add a phone by scanning\n"
        "it; --no-qr leaves it out, --qr draws it also into a pipe. With --json, the\n"
        "key, its \"meshsync:KEY\" form and the node's scope are printed, never a QR code.",
    .opts = identity_opts,
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync identity\n"
                "  meshsync identity --no-qr > my.key\n"
                "  meshsync identity --data /media/node1 --json\n",
    .exit_codes = node_exits,
    .run = run_identity,
};

/* ---- status -------------------------------------------------------------------------------- */

static void print_bytes(FILE *f, uint64_t n)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        fprintf(f, "%llu bytes", (unsigned long long)n);
        return;
    }
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    fprintf(f, "%.1f %s", v, units[u]);
}

/* What became of this node's own ops at the campaign service (receipts from a gateway). */
static void receipts_json(cli_json *j, const mesh_receipt_summary *rs)
{
    cli_json_key(j, "receipts");
    cli_json_object_open(j);
    cli_json_key(j, "own_ops");
    cli_json_u64(j, rs->own_ops);
    cli_json_key(j, "confirmed");
    cli_json_u64(j, rs->confirmed);
    cli_json_key(j, "rejected");
    cli_json_u64(j, rs->rejected);
    cli_json_key(j, "awaiting");
    cli_json_u64(j, rs->awaiting);
    cli_json_key(j, "latest_rejections");
    cli_json_array_open(j);
    for (size_t i = 0; i < rs->nrecent; i++) {
        const mesh_receipt_rejection *x = &rs->recent[i];
        cli_json_object_open(j);
        cli_json_key(j, "id");
        cli_json_str(j, x->entity);
        cli_json_key(j, "type");
        cli_json_str(j, x->type);
        cli_json_key(j, "rowVersion");
        cli_json_u64(j, x->row_version);
        cli_json_key(j, "code");
        cli_json_str(j, x->code);
        cli_json_key(j, "message");
        cli_json_str(j, x->message);
        cli_json_key(j, "time_ms");
        cli_json_u64(j, x->time_ms);
        cli_json_object_close(j);
    }
    cli_json_array_close(j);
    cli_json_object_close(j);
}

static void receipts_text(FILE *f, const mesh_receipt_summary *rs)
{
    fprintf(f, "server     %llu of this node's ops confirmed, %llu rejected, %llu awaiting a "
               "receipt\n",
            (unsigned long long)rs->confirmed, (unsigned long long)rs->rejected,
            (unsigned long long)rs->awaiting);
    for (size_t i = 0; i < rs->nrecent; i++) {
        const mesh_receipt_rejection *x = &rs->recent[i];
        fprintf(f, "           rejected: %s %s rowVersion %u: %s: %s\n", x->type, x->entity,
                x->row_version, x->code, x->message);
    }
}

static int run_status(cli_ctx *ctx)
{
    mesh_status st;
    memset(&st, 0, sizeof st);
    int rc = mesh_node_status(ctx->node, &st);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    mesh_receipt_summary rs;
    rc = mesh_receipt_summary_get(ctx->node, &rs);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    int have_receipts = rs.own_ops > 0 && rs.awaiting < rs.own_ops;
    char key[MESH_KEY_STR_LEN];
    mesh_node_identity(ctx->node, key);
    const char *scope = mesh_node_scope(ctx->node);
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "data");
        cli_json_str(&j, ctx->data_dir);
        cli_json_key(&j, "identity");
        cli_json_str(&j, key);
        cli_json_key(&j, "scope");
        cli_json_str(&j, scope);
        cli_json_key(&j, "ops");
        cli_json_u64(&j, st.ops);
        cli_json_key(&j, "entities");
        cli_json_u64(&j, st.entities);
        cli_json_key(&j, "deleted");
        cli_json_u64(&j, st.deleted);
        cli_json_key(&j, "conflicts");
        cli_json_u64(&j, st.conflicts);
        cli_json_key(&j, "streams");
        cli_json_u64(&j, st.streams);
        cli_json_key(&j, "pending");
        cli_json_u64(&j, st.pending);
        cli_json_key(&j, "store_bytes");
        cli_json_u64(&j, st.store_bytes);
        cli_json_key(&j, "digest");
        cli_json_str(&j, st.digest);
        if (rs.own_ops > 0) receipts_json(&j, &rs);
        team_status_section(ctx, &j);
        daemon_status_section(ctx, &j);
        gateway_status_section(ctx, &j);
        cli_json_object_close(&j);
        cli_json_end(&j);
        return CLI_EXIT_OK;
    }
    FILE *f = ctx->out;
    fprintf(f, "node       %s\n", ctx->data_dir);
    fprintf(f, "identity   %s\n", key);
    fprintf(f, "scope      %s\n", scope);
    fprintf(f, "entities   %llu (%llu deleted)\n", (unsigned long long)st.entities,
            (unsigned long long)st.deleted);
    fprintf(f, "conflicts  %llu\n", (unsigned long long)st.conflicts);
    fprintf(f, "ops        %llu in %llu streams\n", (unsigned long long)st.ops,
            (unsigned long long)st.streams);
    fprintf(f, "pending    %llu\n", (unsigned long long)st.pending);
    fputs("store      ", f);
    print_bytes(f, st.store_bytes);
    fprintf(f, "\ndigest     %s\n", st.digest);
    if (have_receipts) receipts_text(f, &rs);
    team_status_section(ctx, NULL);
    daemon_status_section(ctx, NULL);
    gateway_status_section(ctx, NULL);
    return CLI_EXIT_OK;
}

const cli_command cmd_status = {
    .name = "status",
    .summary = "Show counts of entities, ops and conflicts, and the op-log digest.",
    .synopsis = "",
    .description =
        "Prints what the node holds: entities (and how many are deleted), open conflicts,\n"
        "ops and the (author, scope) streams they belong to, ops pending an earlier op of\n"
        "their stream, the size of the store, and the digest of the op-log. Two nodes\n"
        "have the same digest exactly when they hold the same ops, so comparing digests\n"
        "tells whether a sync or an import brought two nodes level. Once a gateway has\n"
        "sent receipts, it shows how many of this node's ops the campaign service\n"
        "confirmed or rejected (with the latest errors) and how many await a receipt; on\n"
        "a gateway node, the state of its forwarding.",
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync status\n"
                "  meshsync status --json | jq -r .digest\n",
    .exit_codes = node_exits,
    .run = run_status,
};
