/*
 * team.c - This file implements the roster codec and the access rules (see team.h).
 *
 * The roster body is an ordinary canonical body, so it is decoded through its JSON form with
 * jansson: the body checker has already refused anything non-canonical, and the JSON form is
 * what `meshsync team show --json` prints. Every field is checked strictly; an unknown field is
 * refused (a later format raises "format" instead).
 */
#include "model/team.h"

#include "crypto/crypto.h"
#include "model/body.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define DOMAIN_ROSTER "meshsync/roster/v1"

static const char *const ROLE_NAMES[] = {NULL, "field", "supervisor", "gateway"};

const char *mesh_team_role_name(mesh_team_role role)
{
    return role >= MESH_ROLE_FIELD && role <= MESH_ROLE_GATEWAY ? ROLE_NAMES[role] : NULL;
}

int mesh_team_role_parse(const char *name, mesh_team_role *out)
{
    for (int r = MESH_ROLE_FIELD; r <= MESH_ROLE_GATEWAY; r++)
        if (name && strcmp(name, ROLE_NAMES[r]) == 0) {
            *out = (mesh_team_role)r;
            return MESH_OK;
        }
    return mesh_err(MESH_EINVAL, "role '%.40s' is not one of field, supervisor, gateway",
                    name ? name : "(none)");
}

void mesh_team_roster_entity(const uint8_t authority[MESH_KEY_BYTES],
                             uint8_t out[MESH_UUID_BYTES])
{
    mesh_hash_state h;
    uint8_t d[MESH_HASH_BYTES];
    mesh_hash_init(&h);
    mesh_hash_update(&h, DOMAIN_ROSTER, sizeof DOMAIN_ROSTER);
    mesh_hash_update(&h, authority, MESH_KEY_BYTES);
    mesh_hash_final(&h, d);
    memcpy(out, d, MESH_UUID_BYTES);
    out[6] = (uint8_t)(0x80 | (out[6] & 0x0f));   /* version 8 */
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));   /* RFC 9562 variant */
}

bool mesh_scope_within(const char *scope, size_t len, const char *outer, size_t outer_len)
{
    return len >= outer_len && memcmp(scope, outer, outer_len) == 0 &&
           (len == outer_len || scope[outer_len] == '/');
}

static int key_cmp(const void *a, const void *b)
{
    return memcmp(((const mesh_team_member *)a)->key, ((const mesh_team_member *)b)->key,
                  MESH_KEY_BYTES);
}

const mesh_team_member *mesh_team_find(const mesh_team *t, const uint8_t key[MESH_KEY_BYTES])
{
    if (t == NULL || t->nmembers == 0) return NULL;
    mesh_team_member k;
    memcpy(k.key, key, MESH_KEY_BYTES);
    return bsearch(&k, t->members, t->nmembers, sizeof k, key_cmp);
}

uint64_t mesh_team_write_limit(const mesh_team *t, const uint8_t author[MESH_KEY_BYTES],
                               const char *scope, size_t len)
{
    if (memcmp(author, t->authority, MESH_KEY_BYTES) == 0) return UINT64_MAX;
    const mesh_team_member *m = mesh_team_find(t, author);
    if (m == NULL) return 0;
    if (!m->removed)
        for (uint32_t i = 0; i < m->nscopes; i++) {
            const mesh_team_scope *s = &t->scopes[m->scope_first + i];
            if (mesh_scope_within(scope, len, s->text, s->len)) return UINT64_MAX;
        }
    for (uint32_t i = 0; i < m->ncuts; i++) {
        const mesh_team_scope *c = &t->cuts[m->cut_first + i];
        if (c->len == len && memcmp(c->text, scope, len) == 0) return c->seq;
    }
    return 0;
}

bool mesh_team_may_hold(const mesh_team *t, const uint8_t member[MESH_KEY_BYTES],
                        const uint8_t author[MESH_KEY_BYTES], const char *scope, size_t len)
{
    const mesh_team_member *m = mesh_team_find(t, member);
    if (m == NULL || m->removed) return false;
    if (memcmp(author, t->authority, MESH_KEY_BYTES) == 0) return true;
    for (uint32_t i = 0; i < m->nscopes; i++) {
        const mesh_team_scope *s = &t->scopes[m->scope_first + i];
        if (mesh_scope_within(scope, len, s->text, s->len) ||
            mesh_scope_within(s->text, s->len, scope, len))
            return true;
    }
    return false;
}

void mesh_team_free(mesh_team *t)
{
    if (t == NULL) return;
    free(t->members);
    free(t->scopes);
    free(t->cuts);
    free(t);
}

/* ---- Decoding ---- */

static int bad(const char *what, size_t member)
{
    if (member == SIZE_MAX) return mesh_err(MESH_ECORRUPT, "roster: %s", what);
    return mesh_err(MESH_ECORRUPT, "roster member %zu: %s", member, what);
}

/* Only `allowed` keys (NULL-terminated) may appear in `o`. */
static bool only_keys(json_t *o, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++) ok = strcmp(k, allowed[i]) == 0;
        if (!ok) return false;
    }
    return true;
}

static int scope_get(json_t *v, mesh_team_scope *out)
{
    const char *s = json_string_value(v);
    if (s == NULL) return MESH_ECORRUPT;
    size_t n = json_string_length(v);
    if (mesh_scope_check(s, n) != MESH_OK) return MESH_ECORRUPT;
    memcpy(out->text, s, n);
    out->text[n] = '\0';
    out->len = n;
    out->seq = 0;
    return MESH_OK;
}

typedef struct counts {
    size_t members, scopes, cuts;
} counts;

/* First pass: shapes and counts, so the second allocates exactly. */
static int count(json_t *root, counts *c)
{
    json_t *members = json_object_get(root, "members");
    if (!json_is_array(members)) return bad("'members' is not an array", SIZE_MAX);
    c->members = json_array_size(members);
    if (c->members > MESH_TEAM_MEMBERS_MAX)
        return mesh_err(MESH_ELIMIT, "roster: %zu members; the limit is %u", c->members,
                        MESH_TEAM_MEMBERS_MAX);
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m) {
        if (!json_is_object(m)) return bad("not a map", i);
        json_t *sc = json_object_get(m, "scopes"), *cu = json_object_get(m, "cuts");
        if (!json_is_array(sc)) return bad("'scopes' is not an array", i);
        if (cu != NULL && !json_is_array(cu)) return bad("'cuts' is not an array", i);
        if (json_array_size(sc) > MESH_TEAM_SCOPES_MAX)
            return mesh_err(MESH_ELIMIT, "roster member %zu: %zu scopes; the limit is %u", i,
                            json_array_size(sc), MESH_TEAM_SCOPES_MAX);
        if (cu != NULL && json_array_size(cu) > MESH_TEAM_CUTS_MAX)
            return mesh_err(MESH_ELIMIT, "roster member %zu: %zu cuts; the limit is %u", i,
                            json_array_size(cu), MESH_TEAM_CUTS_MAX);
        c->scopes += json_array_size(sc);
        c->cuts += cu ? json_array_size(cu) : 0;
    }
    return MESH_OK;
}

static int member_get(mesh_team *t, json_t *m, size_t i)
{
    static const char *const keys[] = {"cuts", "key", "removed", "role", "scopes", NULL};
    if (!only_keys(m, keys)) return bad("has a field other than key, role, scopes, removed, cuts",
                                        i);
    mesh_team_member *mb = &t->members[i];
    memset(mb, 0, sizeof *mb);
    const char *key = json_string_value(json_object_get(m, "key"));
    if (key == NULL || strlen(key) != 2 * MESH_KEY_BYTES ||
        mesh_hex_decode(key, mb->key, MESH_KEY_BYTES) != MESH_OK)
        return bad("'key' is not a public key (64 hex characters)", i);
    for (const char *p = key; *p; p++)
        if (*p >= 'A' && *p <= 'F') return bad("'key' is not lowercase hex", i);
    if (i > 0 && memcmp(t->members[i - 1].key, mb->key, MESH_KEY_BYTES) >= 0)
        return bad("members are not sorted by key, or a key appears twice", i);
    if (mesh_team_role_parse(json_string_value(json_object_get(m, "role")), &mb->role) != MESH_OK)
        return bad("'role' is not field, supervisor or gateway", i);
    json_t *rm = json_object_get(m, "removed");
    if (rm != NULL && !json_is_true(rm)) return bad("'removed' is present but not true", i);
    mb->removed = rm != NULL;

    json_t *sc = json_object_get(m, "scopes");
    mb->scope_first = (uint32_t)t->nscopes;
    mb->nscopes = (uint32_t)json_array_size(sc);
    if (mb->removed ? mb->nscopes != 0 : mb->nscopes == 0)
        return bad(mb->removed ? "a removed member keeps no scopes" : "has no scopes", i);
    size_t k;
    json_t *v;
    json_array_foreach(sc, k, v) {
        mesh_team_scope *s = &t->scopes[t->nscopes];
        if (scope_get(v, s) != MESH_OK) return bad("a scope is not a boundary path", i);
        if (!mesh_scope_within(s->text, s->len, t->root, t->root_len))
            return bad("a scope lies outside the team's root", i);
        for (uint32_t j = 0; j < k; j++)
            if (strcmp(t->scopes[mb->scope_first + j].text, s->text) == 0)
                return bad("a scope appears twice", i);
        t->nscopes++;
    }

    json_t *cu = json_object_get(m, "cuts");
    mb->cut_first = (uint32_t)t->ncuts;
    mb->ncuts = (uint32_t)json_array_size(cu);
    if (cu != NULL && mb->ncuts == 0) return bad("'cuts' is present but empty", i);
    json_array_foreach(cu, k, v) {
        static const char *const ckeys[] = {"scope", "seq", NULL};
        mesh_team_scope *c = &t->cuts[t->ncuts];
        json_t *seq = json_object_get(v, "seq");
        if (!json_is_object(v) || !only_keys(v, ckeys) ||
            scope_get(json_object_get(v, "scope"), c) != MESH_OK || !json_is_integer(seq) ||
            json_integer_value(seq) < 1)
            return bad("a cut is not {scope, seq >= 1}", i);
        c->seq = (uint64_t)json_integer_value(seq);
        for (uint32_t j = 0; j < k; j++)
            if (strcmp(t->cuts[mb->cut_first + j].text, c->text) == 0)
                return bad("two cuts of one scope", i);
        t->ncuts++;
    }
    return MESH_OK;
}

static int decode_json(json_t *root, const uint8_t authority[MESH_KEY_BYTES], mesh_team **out)
{
    static const char *const keys[] = {"format", "members", "root", "version", NULL};
    if (!json_is_object(root)) return bad("not a map", SIZE_MAX);
    json_t *fmt = json_object_get(root, "format");
    if (!json_is_integer(fmt)) return bad("no 'format'", SIZE_MAX);
    if (json_integer_value(fmt) != MESH_TEAM_FORMAT)
        return mesh_err(MESH_EVERSION, "roster format %" PRId64 " is not known to this meshsync "
                        "(it reads format %d): upgrade meshsync",
                        (int64_t)json_integer_value(fmt), MESH_TEAM_FORMAT);
    if (!only_keys(root, keys)) return bad("has a field other than format, members, root, version",
                                           SIZE_MAX);
    json_t *ver = json_object_get(root, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) < 1 ||
        json_integer_value(ver) > (json_int_t)UINT32_MAX)
        return bad("'version' is not a number from 1 to 2^32-1", SIZE_MAX);
    counts c = {0};
    int rc = count(root, &c);
    if (rc != MESH_OK) return rc;

    mesh_team *t = calloc(1, sizeof *t);
    if (t == NULL) return mesh_err(MESH_ENOMEM, "out of memory decoding a roster");
    t->members = calloc(c.members ? c.members : 1, sizeof *t->members);
    t->scopes = calloc(c.scopes ? c.scopes : 1, sizeof *t->scopes);
    t->cuts = calloc(c.cuts ? c.cuts : 1, sizeof *t->cuts);
    if (t->members == NULL || t->scopes == NULL || t->cuts == NULL) {
        mesh_team_free(t);
        return mesh_err(MESH_ENOMEM, "out of memory decoding a roster");
    }
    memcpy(t->authority, authority, MESH_KEY_BYTES);
    t->version = (uint64_t)json_integer_value(ver);
    mesh_team_scope root_scope;
    if (scope_get(json_object_get(root, "root"), &root_scope) != MESH_OK) {
        mesh_team_free(t);
        return bad("'root' is not a boundary path", SIZE_MAX);
    }
    memcpy(t->root, root_scope.text, root_scope.len + 1);
    t->root_len = root_scope.len;
    t->nmembers = c.members;
    json_t *members = json_object_get(root, "members");
    for (size_t i = 0; i < c.members; i++) {
        rc = member_get(t, json_array_get(members, i), i);
        if (rc != MESH_OK) {
            mesh_team_free(t);
            return rc;
        }
    }
    *out = t;
    return MESH_OK;
}

int mesh_team_decode(const uint8_t *body, size_t len, const uint8_t authority[MESH_KEY_BYTES],
                     mesh_team **out)
{
    *out = NULL;
    int rc = mesh_body_check(body, len);
    if (rc != MESH_OK) return mesh_err_wrap(rc, "roster body");
    mesh_buf j;
    mesh_buf_init(&j, 6u * MESH_OP_BYTES_MAX + 1);
    rc = mesh_body_to_json(body, len, &j);
    json_t *root = NULL;
    if (rc == MESH_OK) {
        json_error_t je;
        /* Integers only up to int64: the body's canonical form already guarantees that. */
        root = json_loadb((const char *)j.data, j.len, JSON_REJECT_DUPLICATES, &je);
        if (root == NULL) rc = mesh_err(MESH_ECORRUPT, "roster: %s", je.text);
    }
    mesh_buf_fini(&j);
    if (rc == MESH_OK) rc = decode_json(root, authority, out);
    json_decref(root);
    return rc;
}

/* ---- Encoding ---- */

static json_t *scope_json(const mesh_team_scope *s) { return json_stringn(s->text, s->len); }

int mesh_team_encode(const mesh_team *t, mesh_buf *out)
{
    if (t->nmembers > MESH_TEAM_MEMBERS_MAX)
        return mesh_err(MESH_ELIMIT, "a roster of %zu members; the limit is %u", t->nmembers,
                        MESH_TEAM_MEMBERS_MAX);
    json_t *root = json_object(), *members = json_array();
    int rc = MESH_OK;
    for (size_t i = 0; i < t->nmembers && rc == MESH_OK; i++) {
        const mesh_team_member *m = &t->members[i];
        json_t *o = json_object(), *sc = json_array();
        char hex[2 * MESH_KEY_BYTES + 1];
        mesh_hex_encode(m->key, MESH_KEY_BYTES, hex);
        json_object_set_new(o, "key", json_string(hex));
        const char *role = mesh_team_role_name(m->role);
        if (role == NULL) rc = mesh_err(MESH_EINVAL, "roster member %zu has no role", i);
        json_object_set_new(o, "role", json_string(role ? role : ""));
        for (uint32_t k = 0; k < m->nscopes; k++)
            json_array_append_new(sc, scope_json(&t->scopes[m->scope_first + k]));
        json_object_set_new(o, "scopes", sc);
        if (m->removed) json_object_set_new(o, "removed", json_true());
        if (m->ncuts > 0) {
            json_t *cu = json_array();
            for (uint32_t k = 0; k < m->ncuts; k++) {
                const mesh_team_scope *c = &t->cuts[m->cut_first + k];
                json_t *co = json_object();
                json_object_set_new(co, "scope", scope_json(c));
                json_object_set_new(co, "seq", json_integer((json_int_t)c->seq));
                json_array_append_new(cu, co);
            }
            json_object_set_new(o, "cuts", cu);
        }
        json_array_append_new(members, o);
    }
    json_object_set_new(root, "format", json_integer(MESH_TEAM_FORMAT));
    json_object_set_new(root, "members", members);
    json_object_set_new(root, "root", json_stringn(t->root, t->root_len));
    json_object_set_new(root, "version", json_integer((json_int_t)t->version));
    char *text = rc == MESH_OK ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (rc != MESH_OK) return rc;
    if (text == NULL) return mesh_err(MESH_ENOMEM, "out of memory encoding a roster");
    size_t start = out->len;
    rc = mesh_body_from_json(text, strlen(text), out);
    free(text);
    if (rc != MESH_OK) return rc;
    /* What we sign must be what every node will accept. */
    mesh_team *check = NULL;
    rc = mesh_team_decode(out->data + start, out->len - start, t->authority, &check);
    mesh_team_free(check);
    if (rc != MESH_OK) {
        out->len = start;
        return mesh_err_wrap(MESH_EINVAL, "the new roster would be invalid");
    }
    return MESH_OK;
}
