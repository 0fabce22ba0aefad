/*
 * types.c - This file implements the entity-type registry (types.h): it parses and checks a
 * JSON type configuration and orders the types parents first.
 *
 * Configuration format (lib/model/digit_hcm_types.json is the default):
 *   {"version": 1, "comment": "...", "types": [
 *     {"name": "household_member",            required; mesh_type_check grammar, unique
 *      "path": "/household/member/v1",        required; starts with '/', < 128 bytes
 *      "array_key": "HouseholdMembers",       required; < 64 bytes
 *      "single_key": "HouseholdMember",       optional; defaults to array_key
 *      "search_key": "HouseholdMember",       optional; defaults to single_key
 *      "response_key": "HouseholdMembers",    optional; defaults to array_key
 *      "parents": [{"field": "householdClientReferenceId", "types": ["household"]}]}]}
 *                                             optional; <= MESH_PARENTS_MAX refs of 1..4 types
 * Unknown keys are errors (a misspelt "parent" would otherwise silently drop a link), except
 * "comment" at any level. "version" is optional and must be 1.
 */
#include "model/types.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>

#include "model/op.h"

#define PARENT_TYPES_MAX 4  /* mesh_parent_ref.types */

extern const char mesh_default_types_json[];

struct mesh_types {
    size_t count;
    mesh_type types[MESH_TYPES_MAX];    /* in (rank, name) order */
    uint8_t by_name[MESH_TYPES_MAX];    /* indices into types, in name order */
};

_Static_assert(MESH_TYPES_MAX <= 255, "by_name holds uint8_t indices");

const char *mesh_types_default_json(void) { return mesh_default_types_json; }

/* ---- Parsing ------------------------------------------------------------------------------- */

static bool known_key(const char *key, const char *const *allowed)
{
    if (strcmp(key, "comment") == 0) return true;
    for (; *allowed != NULL; allowed++)
        if (strcmp(key, *allowed) == 0) return true;
    return false;
}

static int check_keys(json_t *obj, const char *const *allowed, const char *where)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (!known_key(key, allowed))
            return mesh_err(MESH_EINVAL, "types configuration: %s has unknown field '%.64s'", where,
                            key);
    }
    return MESH_OK;
}

/* Copies string member `key` of `obj` into `out` (`cap` bytes with the NUL). An absent member
 * leaves `out` alone when optional. */
static int copy_str(json_t *obj, const char *key, bool required, char *out, size_t cap,
                    const char *where)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        if (!required) return MESH_OK;
        return mesh_err(MESH_EINVAL, "types configuration: %s lacks required field '%s'", where,
                        key);
    }
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    if (!json_is_string(v) || n == 0 || n >= cap)
        return mesh_err(MESH_EINVAL,
                        "types configuration: %s field '%s' must be a string of 1..%zu bytes", where,
                        key, cap - 1);
    memcpy(out, json_string_value(v), n + 1);
    return MESH_OK;
}

static int parse_parent(json_t *pj, mesh_parent_ref *p, const char *where)
{
    static const char *const allowed[] = {"field", "types", NULL};
    if (!json_is_object(pj))
        return mesh_err(MESH_EINVAL, "types configuration: %s is not an object", where);
    int rc = check_keys(pj, allowed, where);
    if (rc == MESH_OK) rc = copy_str(pj, "field", true, p->field, sizeof p->field, where);
    if (rc != MESH_OK) return rc;
    json_t *ts = json_object_get(pj, "types");
    size_t n = json_array_size(ts);
    if (!json_is_array(ts) || n == 0 || n > PARENT_TYPES_MAX)
        return mesh_err(MESH_EINVAL,
                        "types configuration: %s field 'types' must be an array of 1..%d type names",
                        where, PARENT_TYPES_MAX);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(ts, i);
        const char *s = json_string_value(t);
        size_t len = json_is_string(t) ? json_string_length(t) : 0;
        if (s == NULL)
            return mesh_err(MESH_EINVAL, "types configuration: %s field 'types' entry %zu is not a string",
                            where, i);
        if (mesh_type_check(s, len) != MESH_OK)
            return mesh_err_wrap(MESH_EINVAL, "types configuration: %s field 'types' entry %zu",
                                 where, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->types[j], s) == 0)
                return mesh_err(MESH_EINVAL, "types configuration: %s lists type '%s' twice", where, s);
        memcpy(p->types[i], s, len + 1);
    }
    p->types_count = (uint32_t)n;
    return MESH_OK;
}

static int parse_type(json_t *tj, size_t index, mesh_type *t)
{
    static const char *const allowed[] = {"name", "path", "array_key", "single_key",
                                          "search_key", "response_key", "parents", NULL};
    char where[96];
    snprintf(where, sizeof where, "types[%zu]", index);
    if (!json_is_object(tj))
        return mesh_err(MESH_EINVAL, "types configuration: %s is not an object", where);
    json_t *name = json_object_get(tj, "name");
    if (!json_is_string(name))
        return mesh_err(MESH_EINVAL, "types configuration: %s lacks a string field 'name'", where);
    if (mesh_type_check(json_string_value(name), json_string_length(name)) != MESH_OK)
        return mesh_err_wrap(MESH_EINVAL, "types configuration: %s field 'name'", where);
    memcpy(t->name, json_string_value(name), json_string_length(name) + 1);
    /* From here on, messages name the type rather than its position. */
    snprintf(where, sizeof where, "type '%s'", t->name);

    int rc = check_keys(tj, allowed, where);
    if (rc == MESH_OK) rc = copy_str(tj, "path", true, t->path, sizeof t->path, where);
    if (rc == MESH_OK && t->path[0] != '/')
        rc = mesh_err(MESH_EINVAL, "types configuration: %s field 'path' must start with '/'", where);
    if (rc == MESH_OK) rc = copy_str(tj, "array_key", true, t->array_key, sizeof t->array_key, where);
    if (rc != MESH_OK) return rc;
    /* Defaults: a service that only names its bulk array uses that name everywhere. */
    memcpy(t->single_key, t->array_key, sizeof t->single_key);
    memcpy(t->response_key, t->array_key, sizeof t->response_key);
    rc = copy_str(tj, "single_key", false, t->single_key, sizeof t->single_key, where);
    if (rc != MESH_OK) return rc;
    memcpy(t->search_key, t->single_key, sizeof t->search_key);
    rc = copy_str(tj, "search_key", false, t->search_key, sizeof t->search_key, where);
    if (rc == MESH_OK)
        rc = copy_str(tj, "response_key", false, t->response_key, sizeof t->response_key, where);
    if (rc != MESH_OK) return rc;

    json_t *ps = json_object_get(tj, "parents");
    if (ps == NULL) return MESH_OK;
    if (!json_is_array(ps))
        return mesh_err(MESH_EINVAL, "types configuration: %s field 'parents' must be an array", where);
    size_t n = json_array_size(ps);
    if (n > MESH_PARENTS_MAX)
        return mesh_err(MESH_ELIMIT, "types configuration: %s has %zu parents; the limit is %d",
                        where, n, MESH_PARENTS_MAX);
    for (size_t i = 0; i < n; i++) {
        char pwhere[160];
        snprintf(pwhere, sizeof pwhere, "%s parents[%zu]", where, i);
        if ((rc = parse_parent(json_array_get(ps, i), &t->parents[i], pwhere)) != MESH_OK) return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->parents[j].field, t->parents[i].field) == 0)
                return mesh_err(MESH_EINVAL, "types configuration: %s has two parents with field '%s'",
                                where, t->parents[i].field);
    }
    t->parents_count = (uint32_t)n;
    return MESH_OK;
}

/* ---- Ranks --------------------------------------------------------------------------------- */

static int index_of(const mesh_types *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->types[i].name, name) == 0) return (int)i;
    return -1;
}

/* Depth-first rank: 0 for a type without parents, else one more than its highest parent.
 * `state` is 0 (unvisited), 1 (on the current path: meeting it again is a cycle) or 2 (done).
 * Recursion is at most MESH_TYPES_MAX deep. */
static int rank_of(mesh_types *t, size_t i, uint8_t *state)
{
    mesh_type *ty = &t->types[i];
    if (state[i] == 2) return MESH_OK;
    state[i] = 1;
    uint32_t rank = 0;
    for (uint32_t p = 0; p < ty->parents_count; p++) {
        for (uint32_t k = 0; k < ty->parents[p].types_count; k++) {
            int j = index_of(t, ty->parents[p].types[k]);
            MESH_ASSERT(j >= 0);  /* resolved before ranking */
            if (state[j] == 1)
                return mesh_err(MESH_EINVAL,
                                "types configuration: type '%s' field '%s' points to '%s', which "
                                "closes a cycle of parent links",
                                ty->name, ty->parents[p].field, t->types[j].name);
            int rc = rank_of(t, (size_t)j, state);
            if (rc != MESH_OK) return rc;
            if (t->types[j].rank + 1 > rank) rank = t->types[j].rank + 1;
        }
    }
    ty->rank = rank;
    state[i] = 2;
    return MESH_OK;
}

static int by_rank(const void *a, const void *b)
{
    const mesh_type *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return strcmp(x->name, y->name);
}


static int build(json_t *root, mesh_types *t)
{
    static const char *const allowed[] = {"version", "types", NULL};
    if (!json_is_object(root))
        return mesh_err(MESH_EINVAL, "types configuration must be a JSON object");
    int rc = check_keys(root, allowed, "the top level");
    if (rc != MESH_OK) return rc;
    json_t *ver = json_object_get(root, "version");
    if (ver != NULL && !(json_is_integer(ver) && json_integer_value(ver) == 1))
        return mesh_err(MESH_EINVAL, "types configuration: 'version' must be 1");
    json_t *types = json_object_get(root, "types");
    if (!json_is_array(types) || json_array_size(types) == 0)
        return mesh_err(MESH_EINVAL, "types configuration: 'types' must be a non-empty array");
    size_t n = json_array_size(types);
    if (n > MESH_TYPES_MAX)
        return mesh_err(MESH_ELIMIT, "types configuration has %zu types; the limit is %d", n,
                        MESH_TYPES_MAX);

    for (size_t i = 0; i < n; i++) {
        if ((rc = parse_type(json_array_get(types, i), i, &t->types[i])) != MESH_OK) return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->types[j].name, t->types[i].name) == 0)
                return mesh_err(MESH_EINVAL, "types configuration: type '%s' is defined twice",
                                t->types[i].name);
        t->count = i + 1;
    }
    for (size_t i = 0; i < n; i++) {
        const mesh_type *ty = &t->types[i];
        for (uint32_t p = 0; p < ty->parents_count; p++)
            for (uint32_t k = 0; k < ty->parents[p].types_count; k++)
                if (index_of(t, ty->parents[p].types[k]) < 0)
                    return mesh_err(MESH_EINVAL,
                                    "types configuration: type '%s' field '%s' refers to type '%s', "
                                    "which is not defined",
                                    ty->name, ty->parents[p].field, ty->parents[p].types[k]);
    }
    uint8_t state[MESH_TYPES_MAX] = {0};
    for (size_t i = 0; i < n; i++)
        if ((rc = rank_of(t, i, state)) != MESH_OK) return rc;

    qsort(t->types, n, sizeof t->types[0], by_rank);
    /* Insertion sort: at most MESH_TYPES_MAX entries, and qsort has no context argument. */
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        for (; j > 0 && strcmp(t->types[t->by_name[j - 1]].name, t->types[i].name) > 0; j--)
            t->by_name[j] = t->by_name[j - 1];
        t->by_name[j] = (uint8_t)i;
    }
    return MESH_OK;
}

int mesh_types_parse(const char *json, size_t len, mesh_types **out)
{
    *out = NULL;
    if (len > MESH_TYPES_FILE_BYTES_MAX)
        return mesh_err(MESH_ELIMIT, "types configuration is %zu bytes; the limit is %u", len,
                        MESH_TYPES_FILE_BYTES_MAX);
    json_error_t err;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL)
        return mesh_err(MESH_EINVAL, "types configuration: JSON error at line %d, column %d: %s",
                        err.line, err.column, err.text);
    mesh_types *t = calloc(1, sizeof *t);
    if (t == NULL) {
        json_decref(root);
        return mesh_err(MESH_ENOMEM, "out of memory loading the types configuration");
    }
    int rc = build(root, t);
    json_decref(root);
    if (rc != MESH_OK) {
        free(t);
        return rc;
    }
    *out = t;
    return MESH_OK;
}

int mesh_types_default(mesh_types **out)
{
    int rc = mesh_types_parse(mesh_default_types_json, strlen(mesh_default_types_json), out);
    /* The compiled-in file is checked by the tests; failing here is a build bug. */
    return rc == MESH_OK ? MESH_OK : mesh_err_wrap(MESH_EINTERNAL, "built-in types configuration");
}

void mesh_types_free(mesh_types *t) { free(t); }

/* ---- Lookups ------------------------------------------------------------------------------- */

const mesh_type *mesh_types_find(const mesh_types *t, const char *name, size_t len)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mesh_type *ty = &t->types[t->by_name[mid]];
        size_t tl = strlen(ty->name);
        int c = memcmp(ty->name, name, tl < len ? tl : len);
        if (c == 0) c = (tl > len) - (tl < len);
        if (c == 0) return ty;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

size_t mesh_types_count(const mesh_types *t) { return t->count; }

const mesh_type *mesh_types_at(const mesh_types *t, size_t i)
{
    MESH_ASSERT(i < t->count);
    return &t->types[i];
}
