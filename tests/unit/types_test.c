/*
 * types_test.c - the entity-type registry: the compiled-in DIGIT HCM configuration, ordering,
 * defaults and every configuration error.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/types.h"

static int parse(const char *j, mesh_types **t) { return mesh_types_parse(j, strlen(j), t); }

Test(types, default_configuration)
{
    mesh_types *t;
    cr_assert_eq(mesh_types_default(&t), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_types_count(t), 10);
    const mesh_type *hm = mesh_types_find(t, "household_member", 16);
    cr_assert_not_null(hm);
    cr_assert_str_eq(hm->path, "/household/member/v1");
    cr_assert_str_eq(hm->array_key, "HouseholdMembers");
    cr_assert_str_eq(hm->single_key, "HouseholdMember");
    cr_assert_eq(hm->parents_count, 2);
    cr_assert_str_eq(hm->parents[0].field, "householdClientReferenceId");
    cr_assert_str_eq(hm->parents[0].types[0], "household");
    cr_assert_eq(hm->rank, 1);
    const mesh_type *pb = mesh_types_find(t, "project_beneficiary", 19);
    cr_assert_eq(pb->parents[0].types_count, 2);
    cr_assert_eq(mesh_types_find(t, "referral", 8)->rank, 4);
    cr_assert_eq(mesh_types_find(t, "household", 9)->rank, 0);
    cr_assert_null(mesh_types_find(t, "househol", 8));
    cr_assert_null(mesh_types_find(t, "householdx", 10));
    cr_assert_not_null(mesh_types_find(t, "household_memberXYZ", 16), "length-bounded name");
    /* parents first: every parent type sits before its child */
    for (size_t i = 0; i < mesh_types_count(t); i++) {
        const mesh_type *ty = mesh_types_at(t, i);
        if (i > 0) {
            const mesh_type *pr = mesh_types_at(t, i - 1);
            cr_assert(pr->rank < ty->rank || (pr->rank == ty->rank && strcmp(pr->name, ty->name) < 0));
        }
        for (uint32_t p = 0; p < ty->parents_count; p++)
            for (uint32_t k = 0; k < ty->parents[p].types_count; k++)
                cr_assert_lt(mesh_types_find(t, ty->parents[p].types[k],
                                             strlen(ty->parents[p].types[k]))->rank, ty->rank);
    }
    cr_assert_str_eq(mesh_types_at(t, 0)->name, "hf_referral");
    mesh_types_free(t);
    cr_assert_not_null(strstr(mesh_types_default_json(), "household_member"));
}

Test(types, defaults_for_optional_keys)
{
    mesh_types *t;
    cr_assert_eq(parse("{\"types\":[{\"name\":\"a\",\"path\":\"/a/v1\",\"array_key\":\"As\"},"
                       "{\"name\":\"b\",\"path\":\"/b\",\"array_key\":\"Bs\",\"single_key\":\"B\"}]}",
                       &t),
                 MESH_OK, "%s", mesh_errmsg());
    const mesh_type *a = mesh_types_find(t, "a", 1), *b = mesh_types_find(t, "b", 1);
    cr_assert_str_eq(a->single_key, "As");
    cr_assert_str_eq(a->search_key, "As");
    cr_assert_str_eq(a->response_key, "As");
    cr_assert_str_eq(b->single_key, "B");
    cr_assert_str_eq(b->search_key, "B");
    cr_assert_str_eq(b->response_key, "Bs");
    cr_assert_eq(a->parents_count, 0);
    mesh_types_free(t);
}

static void expect_error(const char *j, int code, const char *needle)
{
    mesh_types *t = (mesh_types *)1;
    cr_assert_eq(parse(j, &t), code, "%s -> %s", j, mesh_errmsg());
    cr_assert_null(t);
    cr_assert(strstr(mesh_errmsg(), needle) != NULL, "%s: message '%s' lacks '%s'", j,
              mesh_errmsg(), needle);
}

#define T(name, extra) "{\"name\":\"" name "\",\"path\":\"/p\",\"array_key\":\"K\"" extra "}"

Test(types, errors)
{
    expect_error("{", MESH_EINVAL, "line 1");
    expect_error("[]", MESH_EINVAL, "object");
    expect_error("{\"types\":[]}", MESH_EINVAL, "non-empty");
    expect_error("{\"version\":2,\"types\":[" T("a", "") "]}", MESH_EINVAL, "version");
    expect_error("{\"typez\":[]}", MESH_EINVAL, "typez");
    expect_error("{\"types\":[" T("a", "") "," T("a", "") "]}", MESH_EINVAL, "'a' is defined twice");
    expect_error("{\"types\":[" T("A", "") "]}", MESH_EINVAL, "'name'");
    expect_error("{\"types\":[{\"path\":\"/p\",\"array_key\":\"K\"}]}", MESH_EINVAL, "'name'");
    expect_error("{\"types\":[{\"name\":\"a\",\"array_key\":\"K\"}]}", MESH_EINVAL,
                 "type 'a' lacks required field 'path'");
    expect_error("{\"types\":[{\"name\":\"a\",\"path\":\"p\",\"array_key\":\"K\"}]}", MESH_EINVAL,
                 "start with '/'");
    expect_error("{\"types\":[" T("a", ",\"array_keys\":\"x\"") "]}", MESH_EINVAL, "array_keys");
    expect_error("{\"types\":[" T("a", ",\"single_key\":\"\"") "]}", MESH_EINVAL, "single_key");
    expect_error("{\"types\":[" T("a", ",\"single_key\":5") "]}", MESH_EINVAL, "single_key");
    expect_error("{\"types\":[" T("a", ",\"parents\":[{\"field\":\"x\",\"types\":[\"b\"]}]") "]}",
                 MESH_EINVAL, "type 'b', which is not defined");
    expect_error("{\"types\":[" T("a", ",\"parents\":[{\"field\":\"x\",\"types\":[\"a\"]}]") "]}",
                 MESH_EINVAL, "cycle");
    expect_error("{\"types\":[" T("a", ",\"parents\":[{\"field\":\"x\",\"types\":[\"b\"]}]") ","
                 T("b", ",\"parents\":[{\"field\":\"y\",\"types\":[\"c\"]}]") ","
                 T("c", ",\"parents\":[{\"field\":\"z\",\"types\":[\"a\"]}]") "]}",
                 MESH_EINVAL, "cycle");
    expect_error("{\"types\":[" T("a", ",\"parents\":[{\"field\":\"x\",\"types\":[]}]") "]}",
                 MESH_EINVAL, "'types'");
    expect_error("{\"types\":[" T("a", ",\"parents\":[{\"field\":\"x\",\"types\":[\"a\",\"a\"]}]")
                 "]}", MESH_EINVAL, "twice");
    expect_error("{\"types\":[" T("a", ",\"parents\":[{\"types\":[\"a\"]}]") "]}", MESH_EINVAL,
                 "field");
    expect_error("{\"types\":[" T("a", "") "," T("b", ",\"parents\":[{\"field\":\"x\",\"types\":[\"a\"]},"
                 "{\"field\":\"x\",\"types\":[\"a\"]}]") "]}", MESH_EINVAL, "two parents");
    expect_error("{\"types\":[" T("a", ",\"parents\":{}") "]}", MESH_EINVAL, "parents");
}

Test(types, limits)
{
    char *j = malloc(64 * 1024);
    size_t n = (size_t)sprintf(j, "{\"types\":[");
    for (int i = 0; i <= MESH_TYPES_MAX; i++)
        n += (size_t)sprintf(j + n, "%s{\"name\":\"t%d\",\"path\":\"/p\",\"array_key\":\"K\"}",
                             i ? "," : "", i);
    sprintf(j + n, "]}");
    mesh_types *t;
    cr_assert_eq(parse(j, &t), MESH_ELIMIT);
    /* exactly MESH_TYPES_MAX is fine */
    char *last = strrchr(j, '{');
    strcpy(last - 1, "]}");
    cr_assert_eq(parse(j, &t), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_types_count(t), MESH_TYPES_MAX);
    mesh_types_free(t);
    free(j);

    char p[64];
    j = malloc(4096);
    strcpy(j, "{\"types\":[{\"name\":\"a\",\"path\":\"/p\",\"array_key\":\"K\",\"parents\":[");
    for (int i = 0; i <= MESH_PARENTS_MAX; i++) {
        sprintf(p, "%s{\"field\":\"f%d\",\"types\":[\"a\"]}", i ? "," : "", i);
        strcat(j, p);
    }
    strcat(j, "]}]}");
    cr_assert_eq(parse(j, &t), MESH_ELIMIT);
    free(j);
    cr_assert_eq(mesh_types_parse("{}", MESH_TYPES_FILE_BYTES_MAX + 1, &t), MESH_ELIMIT);
}

Test(types, chain_ranks)
{
    mesh_types *t;
    cr_assert_eq(parse("{\"types\":["
                       T("c", ",\"parents\":[{\"field\":\"b\",\"types\":[\"b\"]},{\"field\":\"a\",\"types\":[\"a\"]}]") ","
                       T("b", ",\"parents\":[{\"field\":\"a\",\"types\":[\"a\"]}]") ","
                       T("a", "") "," T("z", "") "]}", &t),
                 MESH_OK, "%s", mesh_errmsg());
    cr_assert_str_eq(mesh_types_at(t, 0)->name, "a");
    cr_assert_str_eq(mesh_types_at(t, 1)->name, "z");
    cr_assert_str_eq(mesh_types_at(t, 2)->name, "b");
    cr_assert_str_eq(mesh_types_at(t, 3)->name, "c");
    cr_assert_eq(mesh_types_at(t, 3)->rank, 2);
    mesh_types_free(t);
}
