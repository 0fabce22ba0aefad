/*
 * team.c - This file implements the team API (meshsync.h, "Team"): creating a team, joining
 * one, and, on the authority's node, signing new roster versions that add, change and remove
 * members. The roster's codec and rules are in lib/model/team.c; the store enforces them
 * (lib/store/team.c, ingest.c).
 *
 * A roster op is appended to the authority's own stream (author: the authority key, scope: the
 * team's root) by the node that holds the authority key, and signed with that key: to every
 * other node it is an ordinary op of a stream it may hold, whose author it trusts for rosters.
 */
#include "api/node_int.h"

#include "model/hlc.h"
#include "store/team.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define AUTHORITY_FILE "team-authority.key"
#define KEY_URI_PREFIX "meshsync:"

int mesh_key_parse(const char *text, char out[MESH_KEY_STR_LEN])
{
    mesh_err_clear();
    if (text == NULL) return mesh_err(MESH_EINVAL, "no public key given");
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    if (strncasecmp(p, KEY_URI_PREFIX, sizeof KEY_URI_PREFIX - 1) == 0)
        p += sizeof KEY_URI_PREFIX - 1;
    size_t n = 0;
    while (n < MESH_KEY_STR_LEN && isxdigit((unsigned char)p[n])) n++;
    const char *rest = p + n;
    while (isspace((unsigned char)*rest)) rest++;
    if (n != MESH_KEY_STR_LEN - 1 || *rest != '\0')
        return mesh_err(MESH_EINVAL, "'%.80s' is not a public key: expected 64 hex characters "
                        "(what 'meshsync identity' prints), optionally after 'meshsync:'", text);
    for (size_t i = 0; i < n; i++) out[i] = (char)tolower((unsigned char)p[i]);
    out[n] = '\0';
    return MESH_OK;
}

static int key_from_text(const char *text, uint8_t key[MESH_KEY_BYTES])
{
    char hex[MESH_KEY_STR_LEN];
    int rc = mesh_key_parse(text, hex);
    if (rc == MESH_OK) rc = mesh_hex_decode(hex, key, MESH_KEY_BYTES);
    return rc;
}

static int authority_path(const mesh_node *n, char *out, size_t cap)
{
    if ((size_t)snprintf(out, cap, "%s/%s", n->dir, AUTHORITY_FILE) >= cap)
        return mesh_err(MESH_EINVAL, "path too long: %s/%s", n->dir, AUTHORITY_FILE);
    return MESH_OK;
}

/* Loads the authority key; only the authority's node has it. */
static int authority_load(const mesh_node *n, mesh_identity *id)
{
    char path[4200];
    int rc = authority_path(n, path, sizeof path);
    if (rc != MESH_OK) return rc;
    rc = mesh_node_key_load(n, path, id);
    if (rc == MESH_ENOTFOUND)
        return mesh_err(MESH_EPERM, "%s holds no team authority key (%s): rosters are signed on "
                        "the node where 'meshsync team create' ran", n->dir, AUTHORITY_FILE);
    return rc;
}

/* Signs and stores roster `team` (its version already set) in the authority's stream. */
static int roster_append(mesh_node *n, mesh_txn *t, const mesh_identity *auth,
                         const mesh_team *team)
{
    mesh_buf body;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    int rc = mesh_team_encode(team, &body);
    if (rc != MESH_OK) {
        mesh_buf_fini(&body);
        return rc;
    }
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = team->version == 1 ? MESH_OP_CREATE : MESH_OP_UPDATE;
    op.type = MESH_TYPE_ROSTER;
    op.type_len = strlen(MESH_TYPE_ROSTER);
    mesh_team_roster_entity(auth->pk, op.entity);
    op.row_version = (uint32_t)team->version;
    if (team->version > 1) {
        op.has_base = true;
        op.base.row_version = (uint32_t)team->version - 1;
        memcpy(op.base.author, auth->pk, MESH_KEY_BYTES);
    }
    op.body = body.data;
    op.body_len = body.len;
    rc = mesh_store_append(t, auth, team->root, mesh_node_now_ms(n), &op, NULL);
    mesh_buf_fini(&body);
    return rc;
}

/* ---- An editable roster ---- */

typedef struct ed_member {
    uint8_t key[MESH_KEY_BYTES];
    mesh_team_role role;
    bool removed;
    uint32_t nscopes, ncuts;
    mesh_team_scope scopes[MESH_TEAM_SCOPES_MAX];
    mesh_team_scope cuts[MESH_TEAM_CUTS_MAX];
} ed_member;

typedef struct ed_roster {
    uint64_t version;
    char root[MESH_SCOPE_BYTES_MAX + 1];
    size_t nmembers;
    ed_member *members;            /* room for one more than nmembers */
} ed_roster;

static int ed_from(const mesh_team *t, ed_roster *e)
{
    memset(e, 0, sizeof *e);
    e->members = calloc(t->nmembers + 1, sizeof *e->members);
    if (e->members == NULL) return mesh_err(MESH_ENOMEM, "out of memory editing the roster");
    e->version = t->version;
    memcpy(e->root, t->root, t->root_len + 1);
    e->nmembers = t->nmembers;
    for (size_t i = 0; i < t->nmembers; i++) {
        const mesh_team_member *m = &t->members[i];
        ed_member *d = &e->members[i];
        memcpy(d->key, m->key, MESH_KEY_BYTES);
        d->role = m->role;
        d->removed = m->removed;
        d->nscopes = m->nscopes;
        d->ncuts = m->ncuts;
        memcpy(d->scopes, &t->scopes[m->scope_first], m->nscopes * sizeof d->scopes[0]);
        memcpy(d->cuts, &t->cuts[m->cut_first], m->ncuts * sizeof d->cuts[0]);
    }
    return MESH_OK;
}

/* Flattens an edited roster into a mesh_team for encoding. */
static int ed_to(const ed_roster *e, const uint8_t authority[MESH_KEY_BYTES], mesh_team **out)
{
    mesh_team *t = calloc(1, sizeof *t);
    size_t ns = 0, nc = 0;
    for (size_t i = 0; i < e->nmembers; i++) {
        ns += e->members[i].nscopes;
        nc += e->members[i].ncuts;
    }
    if (t) {
        t->members = calloc(e->nmembers + 1, sizeof *t->members);
        t->scopes = calloc(ns + 1, sizeof *t->scopes);
        t->cuts = calloc(nc + 1, sizeof *t->cuts);
    }
    if (t == NULL || t->members == NULL || t->scopes == NULL || t->cuts == NULL) {
        mesh_team_free(t);
        return mesh_err(MESH_ENOMEM, "out of memory editing the roster");
    }
    memcpy(t->authority, authority, MESH_KEY_BYTES);
    t->version = e->version;
    t->root_len = strlen(e->root);
    memcpy(t->root, e->root, t->root_len + 1);
    for (size_t i = 0; i < e->nmembers; i++) {
        const ed_member *d = &e->members[i];
        mesh_team_member *m = &t->members[t->nmembers++];
        memcpy(m->key, d->key, MESH_KEY_BYTES);
        m->role = d->role;
        m->removed = d->removed;
        m->scope_first = (uint32_t)t->nscopes;
        m->nscopes = d->nscopes;
        memcpy(&t->scopes[t->nscopes], d->scopes, d->nscopes * sizeof d->scopes[0]);
        t->nscopes += d->nscopes;
        m->cut_first = (uint32_t)t->ncuts;
        m->ncuts = d->ncuts;
        memcpy(&t->cuts[t->ncuts], d->cuts, d->ncuts * sizeof d->cuts[0]);
        t->ncuts += d->ncuts;
    }
    *out = t;
    return MESH_OK;
}

/* The member with `key`, added (zeroed, in key order) if absent and `add`. */
static ed_member *ed_find(ed_roster *e, const uint8_t key[MESH_KEY_BYTES], bool add)
{
    size_t i = 0;
    while (i < e->nmembers && memcmp(e->members[i].key, key, MESH_KEY_BYTES) < 0) i++;
    if (i < e->nmembers && memcmp(e->members[i].key, key, MESH_KEY_BYTES) == 0)
        return &e->members[i];
    if (!add) return NULL;
    memmove(&e->members[i + 1], &e->members[i], (e->nmembers - i) * sizeof e->members[0]);
    memset(&e->members[i], 0, sizeof e->members[i]);
    memcpy(e->members[i].key, key, MESH_KEY_BYTES);
    e->nmembers++;
    return &e->members[i];
}

/* Closes stream (member, scope) at `seq`: keeps the larger of an earlier cut and this one. */
static int ed_cut(ed_member *m, const char *scope, size_t len, uint64_t seq)
{
    for (uint32_t i = 0; i < m->ncuts; i++)
        if (m->cuts[i].len == len && memcmp(m->cuts[i].text, scope, len) == 0) {
            if (seq > m->cuts[i].seq) m->cuts[i].seq = seq;
            return MESH_OK;
        }
    if (m->ncuts == MESH_TEAM_CUTS_MAX)
        return mesh_err(MESH_ELIMIT, "a member has lost more than %u scopes; make a new node "
                        "for it", MESH_TEAM_CUTS_MAX);
    mesh_team_scope *c = &m->cuts[m->ncuts++];
    memcpy(c->text, scope, len);
    c->text[len] = '\0';
    c->len = len;
    c->seq = seq;
    return MESH_OK;
}

typedef struct cut_ctx {
    ed_member *m;
} cut_ctx;

/* For each stream of the member held here that its (new) scopes no longer cover: a cut at the
 * seq held. A removed member keeps no scopes, so all its streams are cut. */
static int cut_stream(const mesh_stream *st, void *vctx)
{
    ed_member *m = ((cut_ctx *)vctx)->m;
    if (memcmp(st->author, m->key, MESH_KEY_BYTES) != 0) return MESH_OK;
    if (!m->removed)
        for (uint32_t i = 0; i < m->nscopes; i++)
            if (mesh_scope_within(st->scope, st->scope_len, m->scopes[i].text, m->scopes[i].len))
                return MESH_OK;
    return ed_cut(m, st->scope, st->scope_len, st->seq);
}

/* ---- The public calls ---- */

typedef struct team_args {
    mesh_node *n;
    const mesh_identity *auth;
    const char *root;
    uint8_t key[MESH_KEY_BYTES];
    mesh_team_role role;
    const char *const *scopes;
    size_t nscopes;
    bool remove;
    uint64_t version;
} team_args;

static int create_fn(mesh_txn *t, void *ctx)
{
    team_args *a = ctx;
    uint8_t cur[MESH_KEY_BYTES];
    int rc = mesh_store_team_get(t, cur);
    if (rc == MESH_OK)
        return mesh_err(MESH_EEXIST, "%s already belongs to a team ('meshsync team show')",
                        a->n->dir);
    if (rc != MESH_ENOTFOUND) return rc;
    if ((rc = mesh_store_team_set(t, a->auth->pk)) != MESH_OK) return rc;
    ed_roster e = {.version = 1, .nmembers = 1};
    ed_member self = {.role = MESH_ROLE_SUPERVISOR, .nscopes = 1};
    memcpy(self.key, a->n->id.pk, MESH_KEY_BYTES);
    self.scopes[0].len = strlen(a->root);
    memcpy(self.scopes[0].text, a->root, self.scopes[0].len + 1);
    snprintf(e.root, sizeof e.root, "%s", a->root);
    e.members = &self;
    mesh_team *team = NULL;
    rc = ed_to(&e, a->auth->pk, &team);
    if (rc == MESH_OK) rc = roster_append(a->n, t, a->auth, team);
    mesh_team_free(team);
    a->version = 1;
    return rc;
}

int mesh_team_create(mesh_node *n, const char *root, char authority[MESH_KEY_STR_LEN])
{
    mesh_err_clear();
    if (root == NULL) root = n->scope;
    if (mesh_scope_check(root, strlen(root)) != MESH_OK)
        return mesh_err(MESH_EINVAL, "team root '%s' is not a boundary path (e.g. MZ or "
                        "MZ/NAMPULA)", root);
    if (!mesh_scope_within(n->scope, n->scope_len, root, strlen(root)))
        return mesh_err(MESH_EINVAL, "this node's scope %s is not within the team root %s: give "
                        "a root that contains it", n->scope, root);
    char path[4200];
    int rc = authority_path(n, path, sizeof path);
    if (rc != MESH_OK) return rc;
    if (access(path, F_OK) == 0)
        return mesh_err(MESH_EEXIST, "%s already exists; this node is already a team authority",
                        path);
    mesh_identity auth;
    mesh_identity_generate(&auth);
    team_args a = {.n = n, .auth = &auth, .root = root};
    rc = mesh_identity_save(&auth, path, n->wrapped ? n->wrap : NULL);
    if (rc == MESH_OK) {
        rc = mesh_store_write(n->store, create_fn, &a);
        if (rc != MESH_OK) unlink(path);
    }
    if (rc == MESH_OK && authority) mesh_hex_encode(auth.pk, MESH_KEY_BYTES, authority);
    mesh_identity_wipe(&auth);
    return rc;
}

static int join_fn(mesh_txn *t, void *ctx) { return mesh_store_team_set(t, ctx); }

int mesh_team_join(mesh_node *n, const char *authority)
{
    mesh_err_clear();
    uint8_t key[MESH_KEY_BYTES];
    int rc = key_from_text(authority, key);
    if (rc != MESH_OK) return rc;
    return mesh_store_write(n->store, join_fn, key);
}

static int edit_fn(mesh_txn *t, void *ctx)
{
    team_args *a = ctx;
    uint8_t team_key[MESH_KEY_BYTES];
    int rc = mesh_store_team_get(t, team_key);
    if (rc == MESH_ENOTFOUND || (rc == MESH_OK && memcmp(team_key, a->auth->pk, 32) != 0))
        return mesh_err(MESH_EPERM, "the authority key in %s is not the authority of this "
                        "node's team", a->n->dir);
    mesh_team *cur = NULL;
    if (rc == MESH_OK) rc = mesh_store_roster_get(t, &cur);
    if (rc == MESH_ENOTFOUND)
        return mesh_err(MESH_ENOTFOUND, "this node holds no roster of its team");
    if (rc != MESH_OK) return rc;
    ed_roster e;
    rc = ed_from(cur, &e);
    mesh_team_free(cur);
    if (rc != MESH_OK) return rc;
    char hex[MESH_KEY_STR_LEN];
    mesh_hex_encode(a->key, MESH_KEY_BYTES, hex);
    ed_member *m = ed_find(&e, a->key, !a->remove);
    if (a->remove) {
        if (m == NULL || m->removed)
            rc = mesh_err(MESH_ENOTFOUND, "%s is not a member of the team (roster version %llu)",
                          hex, (unsigned long long)e.version);
        else {
            m->removed = true;
            m->nscopes = 0;
        }
    } else if (e.nmembers > MESH_TEAM_MEMBERS_MAX) {
        rc = mesh_err(MESH_ELIMIT, "the roster already lists %u members", MESH_TEAM_MEMBERS_MAX);
    } else {
        m->role = a->role;
        m->removed = false;
        m->nscopes = (uint32_t)a->nscopes;
        for (size_t i = 0; i < a->nscopes; i++) {
            size_t len = strlen(a->scopes[i]);
            memcpy(m->scopes[i].text, a->scopes[i], len + 1);
            m->scopes[i].len = len;
            m->scopes[i].seq = 0;
            if (!mesh_scope_within(a->scopes[i], len, e.root, strlen(e.root)))
                rc = mesh_err(MESH_EINVAL, "scope %s is not within the team's root %s",
                              a->scopes[i], e.root);
            for (size_t j = 0; j < i && rc == MESH_OK; j++)
                if (strcmp(a->scopes[i], a->scopes[j]) == 0)
                    rc = mesh_err(MESH_EINVAL, "scope %s is given twice", a->scopes[i]);
        }
    }
    cut_ctx cc = {.m = m};
    if (rc == MESH_OK) rc = mesh_store_streams(t, cut_stream, &cc);
    mesh_team *next = NULL;
    e.version++;
    if (rc == MESH_OK) rc = ed_to(&e, a->auth->pk, &next);
    if (rc == MESH_OK) rc = roster_append(a->n, t, a->auth, next);
    a->version = e.version;
    mesh_team_free(next);
    free(e.members);
    return rc;
}

static int edit(mesh_node *n, team_args *a, uint64_t *version)
{
    mesh_identity auth;
    int rc = authority_load(n, &auth);
    if (rc != MESH_OK) return rc;
    a->n = n;
    a->auth = &auth;
    rc = mesh_store_write(n->store, edit_fn, a);
    mesh_identity_wipe(&auth);
    if (rc == MESH_OK && version) *version = a->version;
    return rc;
}

int mesh_team_add(mesh_node *n, const char *key, const char *role, const char *const *scopes,
                  size_t nscopes, uint64_t *version)
{
    mesh_err_clear();
    team_args a = {.scopes = scopes, .nscopes = nscopes};
    int rc = key_from_text(key, a.key);
    if (rc == MESH_OK) rc = mesh_team_role_parse(role, &a.role);
    if (rc != MESH_OK) return rc;
    if (nscopes == 0) return mesh_err(MESH_EINVAL, "a member needs at least one scope");
    if (nscopes > MESH_TEAM_SCOPES_MAX)
        return mesh_err(MESH_ELIMIT, "%zu scopes; a member may have at most %u", nscopes,
                        MESH_TEAM_SCOPES_MAX);
    for (size_t i = 0; i < nscopes; i++)
        if (scopes[i] == NULL || mesh_scope_check(scopes[i], strlen(scopes[i])) != MESH_OK)
            return mesh_err(MESH_EINVAL, "scope '%s' is not a boundary path (e.g. "
                            "MZ/NAMPULA/ERATI/L01)", scopes[i] ? scopes[i] : "");
    return edit(n, &a, version);
}

int mesh_team_remove(mesh_node *n, const char *key, uint64_t *version)
{
    mesh_err_clear();
    team_args a = {.remove = true};
    int rc = key_from_text(key, a.key);
    if (rc != MESH_OK) return rc;
    return edit(n, &a, version);
}

typedef struct info_args {
    mesh_node *n;
    mesh_team_info *out;
} info_args;

static int info_fn(mesh_txn *t, void *ctx)
{
    info_args *a = ctx;
    uint8_t key[MESH_KEY_BYTES];
    int rc = mesh_store_team_get(t, key);
    if (rc == MESH_ENOTFOUND) return MESH_OK;
    if (rc != MESH_OK) return rc;
    a->out->joined = 1;
    mesh_hex_encode(key, MESH_KEY_BYTES, a->out->authority);
    mesh_team *team = NULL;
    rc = mesh_store_roster_get(t, &team);
    if (rc == MESH_ENOTFOUND) return MESH_OK;
    if (rc != MESH_OK) return rc;
    a->out->version = team->version;
    snprintf(a->out->root, sizeof a->out->root, "%s", team->root);
    a->out->members = team->nmembers;
    const mesh_team_member *m = mesh_team_find(team, a->n->id.pk);
    a->out->member = m != NULL && !m->removed;
    mesh_team_free(team);
    return MESH_OK;
}

int mesh_team_info_get(mesh_node *n, mesh_team_info *out)
{
    mesh_err_clear();
    memset(out, 0, sizeof *out);
    char path[4200];
    if (authority_path(n, path, sizeof path) == MESH_OK) out->is_authority = access(path, F_OK) == 0;
    info_args a = {.n = n, .out = out};
    return mesh_store_read(n->store, info_fn, &a);
}

typedef struct members_args {
    mesh_team_member_cb cb;
    void *ctx;
} members_args;

static int members_fn(mesh_txn *t, void *ctx)
{
    members_args *a = ctx;
    mesh_team *team = NULL;
    int rc = mesh_store_roster_get(t, &team);
    if (rc == MESH_ENOTFOUND)
        return mesh_err(MESH_ENOTFOUND, "this node holds no team roster yet");
    if (rc != MESH_OK) return rc;
    for (size_t i = 0; i < team->nmembers && rc == MESH_OK; i++) {
        const mesh_team_member *m = &team->members[i];
        const char *scopes[MESH_TEAM_SCOPES_MAX];
        mesh_team_cut cuts[MESH_TEAM_CUTS_MAX];
        for (uint32_t k = 0; k < m->nscopes; k++) scopes[k] = team->scopes[m->scope_first + k].text;
        for (uint32_t k = 0; k < m->ncuts; k++) {
            cuts[k].scope = team->cuts[m->cut_first + k].text;
            cuts[k].seq = team->cuts[m->cut_first + k].seq;
        }
        mesh_team_member_info info = {.role = mesh_team_role_name(m->role),
                                      .removed = m->removed, .nscopes = m->nscopes,
                                      .scopes = scopes, .ncuts = m->ncuts, .cuts = cuts};
        mesh_hex_encode(m->key, MESH_KEY_BYTES, info.key);
        rc = a->cb(&info, a->ctx);
    }
    mesh_team_free(team);
    return rc;
}

int mesh_team_members(mesh_node *n, mesh_team_member_cb cb, void *ctx)
{
    mesh_err_clear();
    members_args a = {.cb = cb, .ctx = ctx};
    return mesh_store_read(n->store, members_fn, &a);
}
