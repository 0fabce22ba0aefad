/*
 * cmd_entity.c - commands on entities: `put`, `get`, `list`, `delete` and `history`.
 */
#include <stdlib.h>
#include <string.h>

#include "commands.h"

/* Exit codes of any command that opens the node, plus the ones named. */
#define NODE_EXITS CLI_EXIT_CORRUPT, CLI_EXIT_NOTSTORE, CLI_EXIT_PERM, CLI_EXIT_IO, CLI_EXIT_VERSION

/* Prints the result of a write: the entity id and its new rowVersion. */
static void print_put_result(cli_ctx *ctx, const mesh_put_result *res, int deleted)
{
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "id");
        cli_json_str(&j, res->id);
        cli_json_key(&j, "rowVersion");
        cli_json_u64(&j, res->row_version);
        if (deleted) {
            cli_json_key(&j, "deleted");
            cli_json_bool(&j, 1);
        }
        cli_json_object_close(&j);
        cli_json_end(&j);
    } else {
        fprintf(ctx->out, "%s rowVersion %u%s\n", res->id, res->row_version,
                deleted ? " deleted" : "");
    }
}

/* Hints for the write errors a person can act on, where the library's message does not already
 * say what to do. */
static void hint_write_error(int rc, const char *id)
{
    switch (rc) {
    case MESH_ESTALE:
        cli_hint("'meshsync get %s' shows the current rowVersion; or leave rowVersion out of the "
                 "body to save over whatever is current",
                 id ? id : "ID");
        break;
    case MESH_ETYPE:
        cli_hint("a node's entity types are set by 'meshsync init --types FILE' (default: the "
                 "DIGIT HCM types, such as household, individual and task)");
        break;
    default: break;
    }
}

/* ---- put ----------------------------------------------------------------------------------- */

static const cli_opt put_opts[] = {
    {"file", "FILE", "Read the body from FILE instead of stdin ('-' is stdin)."},
    {NULL, NULL, NULL},
};

static const int put_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_STATE, NODE_EXITS, 0};

static int run_put(cli_ctx *ctx)
{
    const char *type = ctx->args[0];
    const char *id = ctx->nargs > 1 ? ctx->args[1] : NULL;
    const char *file = cli_opt_get(ctx, "file");
    char *body = NULL;
    size_t len = 0;
    int ec = cli_read_body(ctx, file, &body, &len);
    if (ec != CLI_EXIT_OK) return ec;
    mesh_put_result res;
    memset(&res, 0, sizeof res);
    int rc = mesh_put(ctx->node, type, id, body, len, &res);
    if (rc != MESH_OK) {
        ec = cli_fail_body(ctx, rc, body, len, file);
        hint_write_error(rc, id);
        free(body);
        return ec;
    }
    free(body);
    print_put_result(ctx, &res, 0);
    return CLI_EXIT_OK;
}

const cli_command cmd_put = {
    .name = "put",
    .summary = "Create or update an entity from a JSON body.",
    .synopsis = "TYPE [ID] [--file FILE]",
    .description =
        "Saves an entity of TYPE. The body is a JSON object, read from stdin or from\n"
        "--file: the entity's full state after the save. The entity id is ID if given,\n"
        "else the body's \"clientReferenceId\", else a new time-ordered UUID. Saving an id\n"
        "that exists updates it. If the body has \"rowVersion\", it must be the entity's\n"
        "current rowVersion, as the campaign service requires: a save based on an older\n"
        "version is refused instead of silently overwriting a newer one.\n"
        "\n"
        "Prints the entity id and its new rowVersion. The save is durable when the\n"
        "command exits with 0; on any error nothing is stored.",
    .opts = put_opts,
    .args_min = 1,
    .args_max = 2,
    .needs = CLI_NEEDS_NODE,
    .examples = "  echo '{\"address\":{\"locality\":\"Erati\"}}' | meshsync put household\n"
                "  meshsync put individual --file person.json --json\n"
                "  meshsync put household 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e < household.json\n",
    .exit_codes = put_exits,
    .run = run_put,
};

/* ---- get ----------------------------------------------------------------------------------- */

static const cli_opt get_opts[] = {
    {"include-deleted", NULL, "Show the entity even if it (or an ancestor) is deleted."},
    {NULL, NULL, NULL},
};

static const int get_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, NODE_EXITS, 0};

typedef struct get_state {
    cli_ctx *ctx;
    int found;
    int conflict;
    int deleted;
} get_state;

static int get_cb(const mesh_entity *e, void *arg)
{
    get_state *g = arg;
    g->found = 1;
    g->conflict = e->conflict;
    g->deleted = e->deleted;
    if (g->ctx->json) {
        cli_json j;
        cli_json_begin(&j, g->ctx->out);
        cli_json_entity(&j, e);
        cli_json_end(&j);
    } else {
        cli_print_pretty_json(g->ctx->out, e->json, e->json_len);
    }
    return 0;
}

/* ---- get config: configuration a gateway downloaded into the mesh, sorted by key ---- */

typedef struct config_row {
    char *key, *kind, *source, *value, author[MESH_KEY_STR_LEN];
    uint32_t version;
    uint64_t fetched_ms, modified_ms;
} config_row;

typedef struct config_state {
    config_row *rows;
    size_t n, cap;
    int failed;
} config_state;

static int config_cb(const mesh_config_entry *e, void *arg)
{
    config_state *c = arg;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 32;
        config_row *r = realloc(c->rows, nc * sizeof *r);
        if (r == NULL) {
            c->failed = 1;
            return 1;
        }
        c->rows = r;
        c->cap = nc;
    }
    config_row *r = &c->rows[c->n];
    r->key = strdup(e->key);
    r->kind = strdup(e->kind);
    r->source = strdup(e->source);
    r->value = strndup(e->json, e->json_len);
    memcpy(r->author, e->author, sizeof r->author);
    r->version = e->version;
    r->fetched_ms = e->fetched_ms;
    r->modified_ms = e->modified_ms;
    if (!r->key || !r->kind || !r->source || !r->value) c->failed = 1;
    c->n++;
    return c->failed;
}

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const config_row *)a)->key, ((const config_row *)b)->key);
}

static void config_row_json(cli_json *j, const config_row *r)
{
    cli_json_object_open(j);
    cli_json_key(j, "key");
    cli_json_str(j, r->key);
    cli_json_key(j, "kind");
    cli_json_str(j, r->kind);
    cli_json_key(j, "version");
    cli_json_u64(j, r->version);
    cli_json_key(j, "source");
    cli_json_str(j, r->source);
    cli_json_key(j, "fetched_ms");
    cli_json_u64(j, r->fetched_ms);
    cli_json_key(j, "modified_ms");
    cli_json_u64(j, r->modified_ms);
    cli_json_key(j, "author");
    cli_json_str(j, r->author);
    cli_json_key(j, "value");
    cli_json_raw(j, r->value, strlen(r->value));
    cli_json_object_close(j);
}

static int run_get_config(cli_ctx *ctx)
{
    config_state c = {0};
    int one = ctx->nargs > 1;
    int rc = one ? mesh_config_get(ctx->node, ctx->args[1], config_cb, &c)
                 : mesh_config_list(ctx->node, NULL, config_cb, &c);
    int ec = CLI_EXIT_OK;
    if (c.failed) {
        cli_error(ctx, "out of memory");
        ec = CLI_EXIT_FAILURE;
    } else if (rc != MESH_OK) {
        ec = cli_fail(ctx, rc);
    } else {
        qsort(c.rows, c.n, sizeof *c.rows, row_cmp);
        if (ctx->json) {
            cli_json j;
            cli_json_begin(&j, ctx->out);
            if (!one) cli_json_array_open(&j);
            for (size_t i = 0; i < c.n; i++) config_row_json(&j, &c.rows[i]);
            if (!one) cli_json_array_close(&j);
            cli_json_end(&j);
        } else {
            for (size_t i = 0; i < c.n; i++) {
                const config_row *r = &c.rows[i];
                if (one) {
                    cli_print_pretty_json(ctx->out, r->value, strlen(r->value));
                    continue;
                }
                char when[32];
                cli_format_time(r->fetched_ms, when);
                fprintf(ctx->out, "%-48s %-13s v%-3u fetched %s\n", r->key, r->kind, r->version,
                        when);
            }
        }
    }
    for (size_t i = 0; i < c.n; i++) {
        free(c.rows[i].key);
        free(c.rows[i].kind);
        free(c.rows[i].source);
        free(c.rows[i].value);
    }
    free(c.rows);
    return ec;
}

static int run_get(cli_ctx *ctx)
{
    if (strcmp(ctx->args[0], "config") == 0) return run_get_config(ctx);
    if (ctx->nargs > 1)
        return cli_usage_error(ctx, "one entity ID, or 'config [KEY]'; '%s' is extra",
                               ctx->args[1]);
    const char *id = ctx->args[0];
    unsigned flags = cli_opt_get(ctx, "include-deleted") ? MESH_GET_INCLUDE_DELETED : 0;
    get_state g = {.ctx = ctx};
    int rc = mesh_get(ctx->node, id, flags, get_cb, &g);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    if (!ctx->json && g.conflict)
        cli_hint("%s has an open conflict; 'meshsync conflicts' shows it, 'meshsync resolve' "
                 "settles it",
                 id);
    return CLI_EXIT_OK;
}

const cli_command cmd_get = {
    .name = "get",
    .summary = "Print an entity as JSON.",
    .synopsis = "ID [--include-deleted] | config [KEY]",
    .description =
        "Prints the current state of entity ID: its body with clientReferenceId,\n"
        "rowVersion and isDeleted set, pretty-printed. With --json, prints an object with\n"
        "the entity's metadata (id, type, rowVersion, deleted, conflict, modified_ms,\n"
        "author) and the body under \"body\". A deleted entity, or one whose parent is\n"
        "deleted, is not found unless --include-deleted is given.\n"
        "\n"
        "'get config' lists the configuration a campaign-service gateway downloaded into\n"
        "the mesh (form schemas, localisations, SOS contacts, dashboard counts); 'get\n"
        "config KEY' prints one item's value, e.g. 'get config sos/contacts'.",
    .opts = get_opts,
    .args_min = 1,
    .args_max = 2,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync get 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e\n"
                "  meshsync get 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e --json | jq .rowVersion\n"
                "  meshsync get config\n"
                "  meshsync get config localization/hcm-forms-householdDetails/pt_MZ\n",
    .exit_codes = get_exits,
    .run = run_get,
};

/* ---- list ---------------------------------------------------------------------------------- */

static const cli_opt list_opts[] = {
    {"include-deleted", NULL, "Include deleted entities (and children of deleted ones)."},
    {"since", "MS", "Only entities modified at or after MS milliseconds since the epoch.",
     UINT64_MAX},
    {"limit", "N", "Print at most N entities (0, the default, means no limit).", UINT32_MAX},
    {"offset", "N", "Skip the first N matching entities.", UINT32_MAX},
    {NULL, NULL, NULL},
};

static const int list_exits[] = {CLI_EXIT_INPUT, NODE_EXITS, 0};

typedef struct list_state {
    cli_ctx *ctx;
    cli_json j;
} list_state;

static int list_cb(const mesh_entity *e, void *arg)
{
    list_state *l = arg;
    if (l->ctx->json) {
        cli_json_entity(&l->j, e);
    } else {
        fwrite(e->json, 1, e->json_len, l->ctx->out);
        fputc('\n', l->ctx->out);
    }
    return 0;
}

static int run_list(cli_ctx *ctx)
{
    mesh_query q;
    memset(&q, 0, sizeof q);
    q.type = ctx->nargs > 0 ? ctx->args[0] : NULL;
    q.include_deleted = cli_opt_get(ctx, "include-deleted") != NULL;
    q.last_changed_since_ms = cli_opt_u64(ctx, "since", 0);
    q.limit = (uint32_t)cli_opt_u64(ctx, "limit", 0);
    q.offset = (uint32_t)cli_opt_u64(ctx, "offset", 0);
    list_state l = {.ctx = ctx};
    if (ctx->json) {
        cli_json_begin(&l.j, ctx->out);
        cli_json_array_open(&l.j);
    }
    int rc = mesh_list(ctx->node, &q, list_cb, &l);
    if (rc != MESH_OK) {
        int ec = cli_fail(ctx, rc);
        if (rc == MESH_ETYPE) hint_write_error(rc, NULL);
        return ec;
    }
    if (ctx->json) {
        cli_json_array_close(&l.j);
        cli_json_end(&l.j);
    }
    return CLI_EXIT_OK;
}

const cli_command cmd_list = {
    .name = "list",
    .summary = "List entities, optionally of one type, as JSON lines.",
    .synopsis = "[TYPE] [--include-deleted] [--since MS] [--limit N] [--offset N]",
    .description =
        "Prints the entities that match, in (type, id) order, one JSON body per line.\n"
        "With TYPE, only entities of that type. Deleted entities are left out unless\n"
        "--include-deleted is given, as the campaign service's includeDeleted does; --since\n"
        "works like its lastChangedSince. With --json, prints one array of objects in the\n"
        "shape of 'meshsync get --json'.",
    .opts = list_opts,
    .args_min = 0,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync list\n"
                "  meshsync list household --limit 20 --offset 40\n"
                "  meshsync list --include-deleted --since 1714550400000 --json\n",
    .exit_codes = list_exits,
    .run = run_list,
};

/* ---- delete -------------------------------------------------------------------------------- */

static const int delete_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_STATE, NODE_EXITS,
                                   0};

static int run_delete(cli_ctx *ctx)
{
    const char *id = ctx->args[0];
    mesh_put_result res;
    memset(&res, 0, sizeof res);
    int rc = mesh_delete(ctx->node, id, &res);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    print_put_result(ctx, &res, 1);
    return CLI_EXIT_OK;
}

const cli_command cmd_delete = {
    .name = "delete",
    .summary = "Soft-delete an entity (final).",
    .synopsis = "ID",
    .description =
        "Deletes entity ID: writes a delete op whose body is the entity's current state,\n"
        "so the history keeps what was deleted. Deletes are soft and final: the entity and\n"
        "its children then read as deleted on every node, and no later save undoes it.\n"
        "Prints the entity id and the delete's rowVersion.",
    .args_min = 1,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync delete 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e\n",
    .exit_codes = delete_exits,
    .run = run_delete,
};

/* ---- history ------------------------------------------------------------------------------- */

static const int history_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, NODE_EXITS, 0};

static const char *kind_name(int kind)
{
    switch (kind) {
    case MESH_OP_CREATE: return "create";
    case MESH_OP_UPDATE: return "update";
    case MESH_OP_DELETE: return "delete";
    default: return "unknown";
    }
}

typedef struct history_state {
    cli_ctx *ctx;
    cli_json j;
    int count;
} history_state;

static void receipt_json(cli_json *j, int rc, const mesh_receipt *r)
{
    cli_json_key(j, "receipt");
    if (rc != MESH_OK) {
        cli_json_null(j);
        return;
    }
    cli_json_object_open(j);
    cli_json_key(j, "status");
    cli_json_str(j, r->status == MESH_RECEIPT_CONFIRMED  ? "confirmed"
                    : r->status == MESH_RECEIPT_REJECTED ? "rejected"
                                                          : "unknown");
    cli_json_key(j, "action");
    cli_json_str(j, r->action);
    if (r->status == MESH_RECEIPT_CONFIRMED) {
        cli_json_key(j, "serverId");
        cli_json_str(j, r->server_id);
        cli_json_key(j, "serverRowVersion");
        cli_json_u64(j, r->server_row_version);
    } else {
        cli_json_key(j, "code");
        cli_json_str(j, r->error_code);
        cli_json_key(j, "message");
        cli_json_str(j, r->error_message);
    }
    cli_json_key(j, "gateway");
    cli_json_str(j, r->gateway);
    cli_json_key(j, "time_ms");
    cli_json_u64(j, r->time_ms);
    cli_json_object_close(j);
}

static void receipt_text(FILE *f, int rc, const mesh_receipt *r)
{
    if (rc != MESH_OK) return; /* no gateway's receipt yet: nothing to say */
    char when[32];
    cli_format_time(r->time_ms, when);
    if (r->status == MESH_RECEIPT_CONFIRMED)
        fprintf(f, "  server  confirmed (%s): id %s rowVersion %u, by gateway %.8s at %s\n",
                r->action, r->server_id, r->server_row_version, r->gateway, when);
    else
        fprintf(f, "  server  rejected (%s): %s: %s (gateway %.8s at %s)\n", r->action,
                r->error_code, r->error_message, r->gateway, when);
}

static int history_cb(const mesh_op_info *op, void *arg)
{
    history_state *h = arg;
    uint64_t ms = op->hlc >> 16;
    /* The campaign service's verdict on this op, if a gateway has sent one. */
    int is_system = op->type && op->type[0] == '_';
    mesh_receipt rec;
    int rrc = is_system ? MESH_ENOTFOUND
                        : mesh_receipt_get(h->ctx->node, op->entity, op->row_version, op->author,
                                           &rec);
    if (h->ctx->json) {
        cli_json *j = &h->j;
        cli_json_object_open(j);
        cli_json_key(j, "id");
        cli_json_str(j, op->entity);
        cli_json_key(j, "type");
        cli_json_str(j, op->type ? op->type : "");
        cli_json_key(j, "rowVersion");
        cli_json_u64(j, op->row_version);
        cli_json_key(j, "kind");
        cli_json_str(j, kind_name(op->kind));
        cli_json_key(j, "author");
        cli_json_str(j, op->author);
        cli_json_key(j, "hlc");
        cli_json_u64(j, op->hlc);
        cli_json_key(j, "time_ms");
        cli_json_u64(j, ms);
        cli_json_key(j, "base_rowVersion");
        cli_json_u64(j, op->base_row_version);
        cli_json_key(j, "base_author");
        if (op->base_author[0])
            cli_json_str(j, op->base_author);
        else
            cli_json_null(j);
        cli_json_key(j, "scope");
        cli_json_str(j, op->scope ? op->scope : "");
        cli_json_key(j, "seq");
        cli_json_u64(j, op->seq);
        cli_json_key(j, "hash");
        cli_json_str(j, op->hash);
        cli_json_key(j, "winner");
        cli_json_bool(j, op->winner);
        cli_json_key(j, "head");
        cli_json_bool(j, op->head);
        cli_json_key(j, "body");
        cli_json_raw(j, op->json, op->json ? op->json_len : 0);
        if (!is_system) receipt_json(j, rrc, &rec);
        cli_json_object_close(j);
    } else {
        FILE *f = h->ctx->out;
        char when[32];
        cli_format_time(ms, when);
        if (h->count > 0) fputc('\n', f);
        fprintf(f, "rowVersion %u %s by %s\n", op->row_version, kind_name(op->kind), op->author);
        fprintf(f, "  time    %s\n", when);
        if (op->base_author[0])
            fprintf(f, "  base    rowVersion %u by %s\n", op->base_row_version, op->base_author);
        fprintf(f, "  stream  %s seq %llu, hash %s\n", op->scope ? op->scope : "",
                (unsigned long long)op->seq, op->hash);
        if (op->winner || op->head)
            fprintf(f, "  state   %s%s%s\n", op->winner ? "winner (current state)" : "",
                    op->winner && op->head ? ", " : "", op->head ? "head" : "");
        if (!is_system) receipt_text(f, rrc, &rec);
        fputs("  body    ", f);
        if (op->json) fwrite(op->json, 1, op->json_len, f);
        fputc('\n', f);
    }
    h->count++;
    return 0;
}

static int run_history(cli_ctx *ctx)
{
    history_state h = {.ctx = ctx};
    if (ctx->json) {
        cli_json_begin(&h.j, ctx->out);
        cli_json_array_open(&h.j);
    }
    int rc = mesh_history(ctx->node, ctx->args[0], history_cb, &h);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    if (ctx->json) {
        cli_json_array_close(&h.j);
        cli_json_end(&h.j);
    }
    return CLI_EXIT_OK;
}

const cli_command cmd_history = {
    .name = "history",
    .summary = "Show every save of an entity, from every node.",
    .synopsis = "ID",
    .description =
        "Prints every op (save) of entity ID that this node holds, in (rowVersion, author)\n"
        "order: its kind (create, update, delete), author, time, the op it was based on,\n"
        "its place in the author's stream, and its body. The winner is the op that gives\n"
        "the entity's current state; heads are ops no other op derives from, and more\n"
        "than one head is a conflict. Deleted entities have a history too. Each op also\n"
        "shows what the campaign service made of it, once a gateway's receipt has\n"
        "arrived: confirmed (with the server's id and rowVersion) or rejected (with the\n"
        "server's error).",
    .args_min = 1,
    .args_max = 1,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync history 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e\n"
                "  meshsync history 0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e --json | jq length\n",
    .exit_codes = history_exits,
    .run = run_history,
};
