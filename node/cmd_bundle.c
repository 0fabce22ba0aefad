/*
 * cmd_bundle.c - `export` and `import`: moving ops between nodes on a signed file (a bundle),
 * for devices that meet only through a USB stick.
 */
#include <string.h>

#include "commands.h"

#define NODE_EXITS CLI_EXIT_CORRUPT, CLI_EXIT_NOTSTORE, CLI_EXIT_PERM, CLI_EXIT_IO, CLI_EXIT_VERSION

/* ---- export -------------------------------------------------------------------------------- */

static const int export_exits[] = {NODE_EXITS, 0};

static int run_export(cli_ctx *ctx)
{
    const char *path = ctx->args[0];
    uint64_t count = 0;
    int rc = mesh_export(ctx->node, path, &count);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "file");
        cli_json_str(&j, path);
        cli_json_key(&j, "ops");
        cli_json_u64(&j, count);
        cli_json_object_close(&j);
        cli_json_end(&j);
    } else {
        fprintf(ctx->out, "exported %llu ops to %s\n", (unsigned long long)count, path);
    }
    return CLI_EXIT_OK;
}

const cli_command cmd_export = {
    .name = "export",
    .summary = "Write every op this node holds to a signed bundle file.",
    .synopsis = "FILE",
    .description =
        "Writes every op the node holds, from every author, into the bundle FILE (mode\n"
        "0600; an existing file is replaced atomically). Each op keeps its author's\n"
        "signature and the file is signed by this node, so 'meshsync import' on another\n"
        "node detects a truncated or altered file and stores nothing from it.",
    .args_min = 1,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync export /media/usb/node1.bundle\n"
                "  meshsync export out.bundle --json\n",
    .exit_codes = export_exits,
    .run = run_export,
};

/* ---- import -------------------------------------------------------------------------------- */

static const int import_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, NODE_EXITS, 0};

static int run_import(cli_ctx *ctx)
{
    const char *path = ctx->args[0];
    mesh_ingest_report rep;
    memset(&rep, 0, sizeof rep);
    int rc = mesh_import(ctx->node, path, &rep);
    if (rc != MESH_OK) {
        const char *msg = mesh_errmsg();
        if ((msg == NULL || msg[0] == '\0') && rep.first_error_msg[0])
            cli_error(ctx, "%s: %s", path, rep.first_error_msg);
        else
            cli_fail(ctx, rc);
        int ec = cli_exit_from_mesh(rc);
        if (rc != MESH_ENOTFOUND && !cli_errmsg_has("nothing was stored"))
            cli_hint("nothing was imported from %s", path);
        if (ec == CLI_EXIT_CORRUPT)
            cli_hint("copy the bundle again, or export a new one on the node that wrote it");
        return ec;
    }
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "file");
        cli_json_str(&j, path);
        cli_json_key(&j, "applied");
        cli_json_u64(&j, rep.applied);
        cli_json_key(&j, "duplicate");
        cli_json_u64(&j, rep.duplicate);
        cli_json_key(&j, "pending");
        cli_json_u64(&j, rep.pending);
        cli_json_key(&j, "rejected");
        cli_json_u64(&j, rep.rejected);
        cli_json_object_close(&j);
        cli_json_end(&j);
    } else {
        fprintf(ctx->out, "imported %s: %llu applied, %llu duplicate, %llu pending\n", path,
                (unsigned long long)rep.applied, (unsigned long long)rep.duplicate,
                (unsigned long long)rep.pending);
    }
    if (rep.rejected > 0)
        cli_error(ctx, "warning: %llu ops of %s were rejected, the first because: %s",
                  (unsigned long long)rep.rejected, path,
                  rep.first_error_msg[0] ? rep.first_error_msg : mesh_strerror(rep.first_error));
    if (rep.pending > 0 && !ctx->json)
        cli_hint("pending ops wait for earlier ops of their author's stream; import a bundle "
                 "that holds those to apply them");
    return CLI_EXIT_OK;
}

const cli_command cmd_import = {
    .name = "import",
    .summary = "Verify a bundle file and store the ops this node lacks.",
    .synopsis = "FILE",
    .description =
        "Verifies the bundle FILE (the file's signature, and every op's hash chain and\n"
        "signature) and stores its ops in one transaction: on any error nothing is stored.\n"
        "Prints how many ops were applied (new), duplicate (already held) and pending\n"
        "(held back until an earlier op of their author's stream arrives). Importing the\n"
        "same bundle twice changes nothing.",
    .args_min = 1,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync import /media/usb/node1.bundle\n"
                "  meshsync import node1.bundle --json | jq .applied\n",
    .exit_codes = import_exits,
    .run = run_import,
};
