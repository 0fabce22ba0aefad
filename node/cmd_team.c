/*
 * cmd_team.c - `meshsync team`: the team roster (docs/cli/team.md, docs/SECURITY.md). On the
 * authority's node: create the team, add, change and remove members; on every node: join a
 * team and show the roster it holds. Also the team section of `meshsync status`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "team.h"

/* Scopes one `team add` takes (the roster's limit per member). */
#define TEAM_SCOPES_MAX 16

static const cli_opt team_opts[] = {
    {"root", "CODE", "create: the team's boundary, containing every member's scopes (default: "
                     "this node's scope)."},
    {"role", "ROLE", "add: field, supervisor or gateway (default: field)."},
    {"scope", "CODE", "add: a boundary the member may see, e.g. MZ/N/E/L01; several separated "
                      "by commas, or more after KEY."},
    {NULL, NULL, NULL},
};

static const int team_exits[] = {CLI_EXIT_NOTFOUND, CLI_EXIT_INPUT, CLI_EXIT_STATE,
                                 CLI_EXIT_CORRUPT, CLI_EXIT_NOTSTORE, CLI_EXIT_PERM, CLI_EXIT_IO,
                                 0};

/* ---- show ---------------------------------------------------------------------------------- */

typedef struct show_ctx {
    cli_json *j;
    FILE *f;
} show_ctx;

static int show_member(const mesh_team_member_info *m, void *vctx)
{
    show_ctx *c = vctx;
    if (c->j) {
        cli_json *j = c->j;
        cli_json_object_open(j);
        cli_json_key(j, "key");
        cli_json_str(j, m->key);
        cli_json_key(j, "role");
        cli_json_str(j, m->role);
        cli_json_key(j, "removed");
        cli_json_bool(j, m->removed);
        cli_json_key(j, "scopes");
        cli_json_array_open(j);
        for (size_t i = 0; i < m->nscopes; i++) cli_json_str(j, m->scopes[i]);
        cli_json_array_close(j);
        cli_json_key(j, "cuts");
        cli_json_array_open(j);
        for (size_t i = 0; i < m->ncuts; i++) {
            cli_json_object_open(j);
            cli_json_key(j, "scope");
            cli_json_str(j, m->cuts[i].scope);
            cli_json_key(j, "seq");
            cli_json_u64(j, m->cuts[i].seq);
            cli_json_object_close(j);
        }
        cli_json_array_close(j);
        cli_json_object_close(j);
        return MESH_OK;
    }
    fprintf(c->f, "%s  %-10s  ", m->key, m->removed ? "removed" : m->role);
    for (size_t i = 0; i < m->nscopes; i++) fprintf(c->f, "%s%s", i ? "," : "", m->scopes[i]);
    for (size_t i = 0; i < m->ncuts; i++)
        fprintf(c->f, "%s%s closed at seq %llu", i || m->nscopes ? "; " : "", m->cuts[i].scope,
                (unsigned long long)m->cuts[i].seq);
    fputc('\n', c->f);
    return MESH_OK;
}

static int run_show(cli_ctx *ctx)
{
    mesh_team_info ti;
    int rc = mesh_team_info_get(ctx->node, &ti);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "joined");
        cli_json_bool(&j, ti.joined);
        cli_json_key(&j, "authority");
        if (ti.joined) cli_json_str(&j, ti.authority);
        else cli_json_null(&j);
        cli_json_key(&j, "is_authority");
        cli_json_bool(&j, ti.is_authority);
        cli_json_key(&j, "version");
        cli_json_u64(&j, ti.version);
        cli_json_key(&j, "root");
        cli_json_str(&j, ti.root);
        cli_json_key(&j, "member");
        cli_json_bool(&j, ti.member);
        cli_json_key(&j, "members");
        cli_json_array_open(&j);
        show_ctx c = {.j = &j};
        if (ti.version > 0) rc = mesh_team_members(ctx->node, show_member, &c);
        cli_json_array_close(&j);
        cli_json_object_close(&j);
        cli_json_end(&j);
        return rc == MESH_OK ? CLI_EXIT_OK : cli_fail(ctx, rc);
    }
    FILE *f = ctx->out;
    if (!ti.joined) {
        fprintf(f, "this node belongs to no team: 'meshsync team create' makes one, 'meshsync "
                "team join KEY' joins one\n");
        return CLI_EXIT_OK;
    }
    fprintf(f, "authority  %s%s\n", ti.authority,
            ti.is_authority ? " (held here: this node signs the rosters)" : "");
    if (ti.version == 0) {
        fprintf(f, "roster     none yet: sync with a member of the team "
                "('meshsync sync --peer KEY@tcp://HOST:PORT')\n");
        return CLI_EXIT_OK;
    }
    fprintf(f, "roster     version %llu, root %s, %llu entries; this node is %s\n\n",
            (unsigned long long)ti.version, ti.root, (unsigned long long)ti.members,
            ti.member ? "a member" : "NOT a member");
    fprintf(f, "%-64s  %-10s  %s\n", "KEY", "ROLE", "SCOPES");
    show_ctx c = {.f = f};
    rc = mesh_team_members(ctx->node, show_member, &c);
    return rc == MESH_OK ? CLI_EXIT_OK : cli_fail(ctx, rc);
}

void team_status_section(cli_ctx *ctx, cli_json *j)
{
    mesh_team_info ti;
    if (mesh_team_info_get(ctx->node, &ti) != MESH_OK || !ti.joined) return;
    if (j) {
        cli_json_key(j, "team");
        cli_json_object_open(j);
        cli_json_key(j, "authority");
        cli_json_str(j, ti.authority);
        cli_json_key(j, "roster_version");
        cli_json_u64(j, ti.version);
        cli_json_key(j, "member");
        cli_json_bool(j, ti.member);
        cli_json_object_close(j);
        return;
    }
    if (ti.version == 0)
        fprintf(ctx->out, "team       authority %.16s..., no roster yet\n", ti.authority);
    else
        fprintf(ctx->out, "team       authority %.16s..., roster version %llu, %s\n",
                ti.authority, (unsigned long long)ti.version,
                ti.member ? "member" : "NOT a member");
}

/* ---- create, join, add, remove ------------------------------------------------------------- */

static int run_create(cli_ctx *ctx)
{
    char auth[MESH_KEY_STR_LEN];
    int rc = mesh_team_create(ctx->node, cli_opt_get(ctx, "root"), auth);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "authority");
        cli_json_str(&j, auth);
        cli_json_key(&j, "version");
        cli_json_u64(&j, 1);
        cli_json_object_close(&j);
        cli_json_end(&j);
        return CLI_EXIT_OK;
    }
    fprintf(ctx->out,
            "Created a team; its authority key is\n%s\n"
            "The authority's secret key is in %s/team-authority.key: keep a backup somewhere\n"
            "safe, it cannot be replaced. Roster version 1 lists this node as supervisor.\n"
            "Next: on each device, 'meshsync init --team %s' (or 'meshsync team join'),\n"
            "then here 'meshsync team add KEY --role field --scope CODE' with its key.\n",
            auth, ctx->data_dir, auth);
    return CLI_EXIT_OK;
}

static int run_join(cli_ctx *ctx)
{
    if (ctx->nargs < 2) return cli_usage_error(ctx, "team join needs the authority's KEY");
    if (ctx->nargs > 2) return cli_usage_error(ctx, "unexpected argument '%s'", ctx->args[2]);
    int rc = mesh_team_join(ctx->node, ctx->args[1]);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    if (ctx->json) return CLI_EXIT_OK;
    mesh_team_info ti;
    if (mesh_team_info_get(ctx->node, &ti) != MESH_OK) ti.version = 0;
    fprintf(ctx->out, "This node now belongs to that team and accepts only its rosters.\n");
    if (ti.version > 0)
        fprintf(ctx->out, "It already held the team's roster (version %llu, from an earlier "
                "sync), which now\napplies%s.\n", (unsigned long long)ti.version,
                ti.member ? "" : "; this node is not a member on it yet");
    else
        fprintf(ctx->out, "A supervisor adds it with 'meshsync team add' and the key "
                "'meshsync identity'\nshows; it then gets the roster by syncing with a "
                "member.\n");
    return CLI_EXIT_OK;
}

static void print_version(cli_ctx *ctx, uint64_t version, const char *what)
{
    if (ctx->json) {
        cli_json j;
        cli_json_begin(&j, ctx->out);
        cli_json_object_open(&j);
        cli_json_key(&j, "version");
        cli_json_u64(&j, version);
        cli_json_object_close(&j);
        cli_json_end(&j);
        return;
    }
    fprintf(ctx->out, "Signed roster version %llu: %s.\nIt reaches the team as this node syncs.\n",
            (unsigned long long)version, what);
}

static int run_add(cli_ctx *ctx)
{
    if (ctx->nargs < 2) return cli_usage_error(ctx, "team add needs the member's KEY");
    const char *scopes[TEAM_SCOPES_MAX + 1];
    size_t n = 0;
    char *list = cli_opt_get(ctx, "scope") ? strdup(cli_opt_get(ctx, "scope")) : NULL;
    for (char *tok = list ? strtok(list, ", ") : NULL; tok && n <= TEAM_SCOPES_MAX;
         tok = strtok(NULL, ", "))
        scopes[n++] = tok;
    for (int i = 2; i < ctx->nargs && n <= TEAM_SCOPES_MAX; i++) scopes[n++] = ctx->args[i];
    int ec = CLI_EXIT_OK;
    if (n == 0)
        ec = cli_usage_error(ctx, "team add needs --scope CODE: the boundaries the member may "
                                  "see");
    else if (n > TEAM_SCOPES_MAX)
        ec = cli_usage_error(ctx, "at most %d scopes per member", TEAM_SCOPES_MAX);
    const char *role = cli_opt_get(ctx, "role") ? cli_opt_get(ctx, "role") : "field";
    uint64_t version = 0;
    if (ec == CLI_EXIT_OK) {
        int rc = mesh_team_add(ctx->node, ctx->args[1], role, scopes, n, &version);
        if (rc != MESH_OK) ec = cli_fail(ctx, rc);
    }
    if (ec == CLI_EXIT_OK) {
        char key[MESH_KEY_STR_LEN], what[256];
        if (mesh_key_parse(ctx->args[1], key) != MESH_OK) key[0] = '\0';
        snprintf(what, sizeof what, "%.16s... is a %s member", key, role);
        print_version(ctx, version, what);
    }
    free(list);
    return ec;
}

static int run_remove(cli_ctx *ctx)
{
    if (ctx->nargs < 2) return cli_usage_error(ctx, "team remove needs the member's KEY");
    if (ctx->nargs > 2) return cli_usage_error(ctx, "unexpected argument '%s'", ctx->args[2]);
    uint64_t version = 0;
    int rc = mesh_team_remove(ctx->node, ctx->args[1], &version);
    if (rc != MESH_OK) return cli_fail(ctx, rc);
    char key[MESH_KEY_STR_LEN], what[256];
    if (mesh_key_parse(ctx->args[1], key) != MESH_OK) key[0] = '\0';
    snprintf(what, sizeof what, "%.16s... is removed; what it signs from now on is refused, and "
             "nodes with this roster refuse its connections", key);
    print_version(ctx, version, what);
    return CLI_EXIT_OK;
}

static int run_team(cli_ctx *ctx)
{
    const char *sub = ctx->nargs > 0 ? ctx->args[0] : "show";
    if (strcmp(sub, "show") == 0) {
        if (ctx->nargs > 1) return cli_usage_error(ctx, "unexpected argument '%s'", ctx->args[1]);
        return run_show(ctx);
    }
    if (strcmp(sub, "create") == 0) {
        if (ctx->nargs > 1) return cli_usage_error(ctx, "unexpected argument '%s'", ctx->args[1]);
        return run_create(ctx);
    }
    if (strcmp(sub, "join") == 0) return run_join(ctx);
    if (strcmp(sub, "add") == 0) return run_add(ctx);
    if (strcmp(sub, "remove") == 0) return run_remove(ctx);
    return cli_usage_error(ctx, "'%s' is not a team command: use create, join, add, remove or "
                                "show", sub);
}

const cli_command cmd_team = {
    .name = "team",
    .summary = "Create or join a team; add and remove members (the signed roster).",
    .synopsis = "[show | create [--root CODE] | join KEY | add KEY --role ROLE --scope CODE... "
                "| remove KEY]",
    .description =
        "A team is named by its authority key, which the supervisor or district office\n"
        "holds. The authority signs a versioned roster: each member's key, role (field,\n"
        "supervisor, gateway) and the boundary codes it may see. The roster travels\n"
        "through the mesh like any op; nodes of the team admit only its members, send each\n"
        "member only the data its boundaries allow, and refuse ops signed by a removed\n"
        "member after its removal (docs/SECURITY.md).\n"
        "\n"
        "  show            the roster this node holds (the default)\n"
        "  create          make this node the authority of a new team (team-authority.key)\n"
        "  join KEY        accept the rosters of the team of authority KEY\n"
        "  add KEY         (authority) add a member, or change its role and scopes; KEY is\n"
        "                  what 'meshsync identity' prints or its QR code holds\n"
        "  remove KEY      (authority) remove a member, e.g. a lost device\n"
        "\n"
        "A scope covers itself and everything below it: a supervisor with MZ/N/E holds all\n"
        "localities of that district; a field device with MZ/N/E/L01 holds L01 and what is\n"
        "written at MZ/N/E or MZ, never MZ/N/E/L02.",
    .opts = team_opts,
    .args_min = 0,
    .args_max = 8,
    .needs = CLI_NEEDS_NODE,
    .examples = "  meshsync team create --root MZ/NAMPULA/ERATI\n"
                "  meshsync team add 5b0e...c1 --role field --scope MZ/NAMPULA/ERATI/L01\n"
                "  meshsync team add meshsync:5b0e...c1 --role supervisor --scope MZ/NAMPULA/ERATI\n"
                "  meshsync team remove 5b0e...c1\n"
                "  meshsync team join 9a7f...03     (on a device)\n"
                "  meshsync team show --json\n",
    .exit_codes = team_exits,
    .run = run_team,
};
