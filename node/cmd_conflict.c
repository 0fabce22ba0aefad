/*
 * cmd_conflict.c - `conflicts` (list entities whose concurrent edits await a person) and
 * `resolve` (settle one by writing a new version).
 */
#include <stdlib.h>
#include <string.h>

#include "commands.h"

#define NODE_EXITS CLI_EXIT_CORRUPT, CLI_EXIT_NOTSTORE, CLI_EXIT_PERM, CLI_EXIT_IO, CLI_EXIT_VERSION

/* ---- conflicts ----------------------------------------------------------------------------- */

static const int conflicts_exits[] = {NODE_EXITS, 0};

/* An entity in conflict, copied out of the iteration: the heads are read with mesh_history()
 * afterwards, not from inside mesh_conflicts()'s callback. */
typedef struct conflict_item {
    char id[MESH_UUID_STR_LEN];
    char author[MESH_KEY_STR_LEN];
    char *type;
    uint32_t row_version;
    uint64_t modified_ms;
} conflict_item;

typedef struct conflict_list {
    conflict_item *items;
    size_t count, alloc;
    int oom;
} conflict_list;

static int collect_conflict_cb(const mesh_entity *e, void *arg)
{
    conflict_list *l = arg;
    if (l->count == l->alloc) {
        size_t na = l->alloc ? l->alloc * 2 : 16;
        conflict_item *p = realloc(l->items, na * sizeof *p);
        if (p == NULL) goto oom;
        l->items = p;
        l->alloc = na;
    }
    conflict_item *it = &l->items[l->count];
    memcpy(it->id, e->id, sizeof it->id);
    memcpy(it->author, e->author, sizeof it->author);
    it->type = strdup(e->type ? e->type : "");
    if (it->type == NULL) goto oom;
    it->row_version = e->row_version;
    it->modified_ms = e->modified_ms;
    l->count++;
    return 0;
oom:
    l->oom = 1;
    return 1;
}

typedef struct heads_state {
    cli_ctx *ctx;
    cli_json *j;
} heads_state;

static int heads_cb(const mesh_op_info *op, void *arg)
{
    heads_state *h = arg;
    if (!op->head) return 0;
    uint64_t ms = op->hlc >> 16;
    if (h->ctx->json) {
        cli_json *j = h->j;
        cli_json_object_open(j);
        cli_json_key(j, "author");
        cli_json_str(j, op->author);
        cli_json_key(j, "rowVersion");
        cli_json_u64(j, op->row_version);
        cli_json_key(j, "time_ms");
        cli_json_u64(j, ms);
        cli_json_key(j, "hash");
        cli_json_str(j, op->hash);
        cli_json_key(j, "winner");
        cli_json_bool(j, op->winner);
        cli_json_key(j, "body");
        cli_json_raw(j, op->json, op->json ? op->json_len : 0);
        cli_json_object_close(j);
    } else {
        char when[32];
        cli_format_time(ms, when);
        fprintf(h->ctx->out, "  head rowVersion %u by %s at %s%s\n    ", op->row_version,
                op->author, when, op->winner ? " (shown now)" : "");
        if (op->json) fwrite(op->json, 1, op->json_len, h->ctx->out);
        fputc('\n', h->ctx->out);
    }
    return 0;
}

static int print_conflicts(cli_ctx *ctx, const conflict_list *l)
{
    cli_json j;
    cli_json_begin(&j, ctx->out);
    if (ctx->json) cli_json_array_open(&j);
    for (size_t i = 0; i < l->count; i++) {
        const conflict_item *it = &l->items[i];
        if (ctx->json) {
            cli_json_object_open(&j);
            cli_json_key(&j, "id");
            cli_json_str(&j, it->id);
            cli_json_key(&j, "type");
            cli_json_str(&j, it->type);
            cli_json_key(&j, "rowVersion");
            cli_json_u64(&j, it->row_version);
            cli_json_key(&j, "author");
            cli_json_str(&j, it->author);
            cli_json_key(&j, "modified_ms");
            cli_json_u64(&j, it->modified_ms);
            cli_json_key(&j, "heads");
            cli_json_array_open(&j);
        } else {
            fprintf(ctx->out, "%s%s %s\n", i ? "\n" : "", it->type, it->id);
        }
        heads_state h = {.ctx = ctx, .j = &j};
        int rc = mesh_history(ctx->node, it->id, heads_cb, &h);
        if (rc != MESH_OK) return cli_fail(ctx, rc);
        if (ctx->json) {
            cli_json_array_close(&j);
            cli_json_object_close(&j);
        }
    }
    if (ctx->json) {
        cli_json_array_close(&j);
        cli_json_end(&j);
    }
    return CLI_EXIT_OK;
}

static int run_conflicts(cli_ctx *ctx)
{
    conflict_list l = {0};
    int ec;
    int rc = mesh_conflicts(ctx->node, collect_conflict_cb, &l);
    if (l.oom) {
        cli_error(ctx, "out of memory listing conflicts");
        ec = CLI_EXIT_FAILURE;
    } else if (rc != MESH_OK) {
        ec = cli_fail(ctx, rc);
    } else {
        ec = print_conflicts(ctx, &l);
    }
    for (size_t i = 0; i < l.count; i++) free(l.items[i].type);
    free(l.items);
    return ec;
}

const cli_command cmd_conflicts = {
    .name = "conflicts",
    .summary = "List entities with concurrent edits to resolve.",
    .synopsis = "",
    .description =
        "Lists every entity that has an open conflict: two or more saves made from the same\n"
        "version on different nodes, none of which knew of the other. For each, prints the\n"
        "competing heads: author, rowVersion, time and body. Every node that holds the same\n"
        "ops lists the same conflicts. Until a person resolves it, the entity reads as its\n"
        "deterministic winner. Prints nothing (or [] with --json) when there are none.",
    .args_min = 0,
    .args_max = 0,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync conflicts\n"
                "  meshsync conflicts --json | jq -r '.[].id'\n",
    .exit_codes = conflicts_exits,
    .run = run_conflicts,
};

/* ---- resolve ------------------------------------------------------------------------------- */

static const cli_opt resolve_opts[] = {
    {"file", "FILE", "Read the resolved body from FILE instead of stdin ('-' is stdin)."},
    {"pick", "AUTHOR_KEY", "Keep the body of the head written by AUTHOR_KEY (see 'conflicts')."},
    {NULL, NULL, NULL},
};

static const int resolve_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_STATE,
                                    NODE_EXITS, 0};

static int is_key(const char *s)
{
    size_t n = strlen(s);
    if (n != MESH_KEY_STR_LEN - 1) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static int run_resolve(cli_ctx *ctx)
{
    const char *id = ctx->args[0];
    const char *file = cli_opt_get(ctx, "file");
    const char *pick = cli_opt_get(ctx, "pick");
    if (file && pick)
        return cli_usage_error(ctx, "give either --file or --pick, not both");
    char *body = NULL;
    size_t len = 0;
    if (pick) {
        if (!is_key(pick)) {
            cli_error(ctx, "--pick expects an author's public key (64 lowercase hex "
                           "characters), not '%s'",
                      pick);
            cli_hint("'meshsync conflicts' lists each head's author");
            return CLI_EXIT_INPUT;
        }
    } else {
        int ec = cli_read_body(ctx, file, &body, &len);
        if (ec != CLI_EXIT_OK) return ec;
    }
    mesh_put_result res;
    memset(&res, 0, sizeof res);
    int rc = mesh_resolve(ctx->node, id, body, len, pick, &res);
    if (rc != MESH_OK) {
        int ec = cli_fail_body(ctx, rc, body, len, file);
        if (rc == MESH_ECONFLICT && !cli_errmsg_has("meshsync conflicts"))
            cli_hint("'meshsync conflicts' lists the open conflicts and their heads' authors");
        free(body);
        return ec;
    }
    free(body);
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "id");
        cli_json_str(&j, res.id);
        cli_json_key(&j, "rowVersion");
        cli_json_u64(&j, res.row_version);
        cli_json_object_close(&j);
        cli_json_end(&j);
    } else {
        fprintf(ctx->out, "%s rowVersion %u resolved\n", res.id, res.row_version);
    }
    return CLI_EXIT_OK;
}

const cli_command cmd_resolve = {
    .name = "resolve",
    .summary = "Settle a conflict with a new body or by picking a head.",
    .synopsis = "ID [--file FILE | --pick AUTHOR_KEY]",
    .description =
        "Resolves the open conflict on entity ID by saving a new version that derives from\n"
        "all of its heads, so every node that receives it sees the conflict closed. The new\n"
        "body is read as JSON from stdin or --file (typically a merge of the heads that\n"
        "'meshsync conflicts' shows), or, with --pick, is the body of the head written by\n"
        "AUTHOR_KEY. Prints the entity id and its new rowVersion.",
    .opts = resolve_opts,
    .args_min = 1,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync resolve 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e --file merged.json\n"
                "  meshsync resolve 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e --pick \"$(meshsync "
                "identity)\"\n",
    .exit_codes = resolve_exits,
    .run = run_resolve,
};
