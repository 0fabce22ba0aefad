/*
 * roster_test.c - the team roster (lib/model/team.c): its canonical codec, the strictness of
 * the decoder, scope matching, and the access rules (write limits with cuts, may-hold).
 */
#include <criterion/criterion.h>

#include "model/body.h"
#include "model/team.h"
#include "testlib.h"

static uint8_t AUTH[32], K1[32], K2[32], K3[32];

static void setup(void)
{
    mesh_crypto_init();
    memset(AUTH, 0xaa, 32);
    memset(K1, 0x11, 32);
    memset(K2, 0x22, 32);
    memset(K3, 0x33, 32);
}

TestSuite(roster, .init = setup);

/* Decodes a roster given as JSON (through its canonical body). */
static int decode_json(const char *json, mesh_team **out)
{
    mesh_buf b;
    mesh_buf_init(&b, MESH_OP_BYTES_MAX);
    int rc = mesh_body_from_json(json, strlen(json), &b);
    cr_assert_eq(rc, MESH_OK, "%s", mesh_errmsg());
    rc = mesh_team_decode(b.data, b.len, AUTH, out);
    mesh_buf_fini(&b);
    return rc;
}

#define KEY1 "1111111111111111111111111111111111111111111111111111111111111111"
#define KEY2 "2222222222222222222222222222222222222222222222222222222222222222"
#define KEY3 "3333333333333333333333333333333333333333333333333333333333333333"

static const char *const GOOD =
    "{\"format\":1,\"root\":\"MZ\",\"version\":3,\"members\":["
    "{\"key\":\"" KEY1 "\",\"role\":\"supervisor\",\"scopes\":[\"MZ/N/E\"]},"
    "{\"key\":\"" KEY2 "\",\"role\":\"field\",\"scopes\":[\"MZ/N/E/L01\"],"
    "\"cuts\":[{\"scope\":\"MZ/N/E/L02\",\"seq\":7}]},"
    "{\"key\":\"" KEY3 "\",\"role\":\"field\",\"scopes\":[],\"removed\":true,"
    "\"cuts\":[{\"scope\":\"MZ/N/E/L01\",\"seq\":5}]}]}";

Test(roster, decodes_and_reencodes_byte_for_byte)
{
    mesh_team *t = NULL;
    cr_assert_eq(decode_json(GOOD, &t), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(t->version, 3);
    cr_assert_str_eq(t->root, "MZ");
    cr_assert_eq(t->nmembers, 3);
    cr_assert_eq(t->members[0].role, MESH_ROLE_SUPERVISOR);
    cr_assert(t->members[2].removed);
    cr_assert_eq(t->members[1].ncuts, 1);
    cr_assert_eq(t->cuts[t->members[1].cut_first].seq, 7);

    mesh_buf b, again;
    mesh_buf_init(&b, MESH_OP_BYTES_MAX);
    mesh_buf_init(&again, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_team_encode(t, &b), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_body_from_json(GOOD, strlen(GOOD), &again), MESH_OK);
    cr_assert_eq(b.len, again.len);
    cr_assert_eq(memcmp(b.data, again.data, b.len), 0, "encode is not canonical");
    mesh_buf_fini(&b);
    mesh_buf_fini(&again);
    mesh_team_free(t);
}

Test(roster, decoder_refuses_what_is_not_a_valid_roster)
{
    static const struct {
        const char *json;
        int code;
        const char *why;
    } cases[] = {
        {"{\"format\":2,\"root\":\"MZ\",\"version\":1,\"members\":[]}", MESH_EVERSION, "format"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":0,\"members\":[]}", MESH_ECORRUPT, "version 0"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1}", MESH_ECORRUPT, "no members"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":[],\"x\":1}", MESH_ECORRUPT,
         "unknown field"},
        {"{\"format\":1,\"root\":\"/MZ\",\"version\":1,\"members\":[]}", MESH_ECORRUPT, "root"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY2 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"]},"
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"]}]}",
         MESH_ECORRUPT, "unsorted members"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"]},"
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/B\"]}]}",
         MESH_ECORRUPT, "duplicate member"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"boss\",\"scopes\":[\"MZ/A\"]}]}",
         MESH_ECORRUPT, "role"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"TZ/A\"]}]}",
         MESH_ECORRUPT, "scope outside root"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZA\"]}]}",
         MESH_ECORRUPT, "prefix is not within"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[]}]}",
         MESH_ECORRUPT, "active member without scopes"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"],\"removed\":true}]}",
         MESH_ECORRUPT, "removed member with scopes"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"],\"removed\":false}]}",
         MESH_ECORRUPT, "removed false"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\",\"MZ/A\"]}]}",
         MESH_ECORRUPT, "duplicate scope"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"11\",\"role\":\"field\",\"scopes\":[\"MZ/A\"]}]}",
         MESH_ECORRUPT, "short key"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
         "\"role\":\"field\",\"scopes\":[\"MZ/A\"]}]}",
         MESH_ECORRUPT, "uppercase key"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"],"
         "\"cuts\":[{\"scope\":\"MZ/B\",\"seq\":0}]}]}",
         MESH_ECORRUPT, "cut at seq 0"},
        {"{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":["
         "{\"key\":\"" KEY1 "\",\"role\":\"field\",\"scopes\":[\"MZ/A\"],\"cuts\":[]}]}",
         MESH_ECORRUPT, "empty cuts"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mesh_team *t = NULL;
        int rc = decode_json(cases[i].json, &t);
        cr_expect_eq(rc, cases[i].code, "%s: got %d (%s)", cases[i].why, rc, mesh_errmsg());
        cr_expect_null(t);
        mesh_team_free(t);
    }
    /* Not a body at all. */
    mesh_team *t = NULL;
    static const uint8_t junk[] = {0x92, 0x01, 0x02};
    cr_assert_neq(mesh_team_decode(junk, sizeof junk, AUTH, &t), MESH_OK);
    cr_assert_null(t);
}

Test(roster, member_limit)
{
    /* MESH_TEAM_MEMBERS_MAX + 1 members: refused on the count, before any member is read. */
    size_t n = MESH_TEAM_MEMBERS_MAX + 1;
    size_t cap = 64 + n * 110;
    char *json = malloc(cap);
    size_t len = (size_t)snprintf(json, cap, "{\"format\":1,\"root\":\"MZ\",\"version\":1,"
                                  "\"members\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(json + len, cap - len,
                                "%s{\"key\":\"%064zx\",\"role\":\"field\",\"scopes\":[\"MZ\"]}",
                                i ? "," : "", i);
    snprintf(json + len, cap - len, "]}");
    mesh_team *t = NULL;
    cr_assert_eq(decode_json(json, &t), MESH_ELIMIT, "%s", mesh_errmsg());
    free(json);
}

Test(roster, scope_within)
{
    cr_assert(mesh_scope_within("MZ/N/E", 6, "MZ/N", 4));
    cr_assert(mesh_scope_within("MZ/N", 4, "MZ/N", 4));
    cr_assert(mesh_scope_within("MZ/N/E/L01", 10, "MZ", 2));
    cr_assert_not(mesh_scope_within("MZ/NA", 5, "MZ/N", 4), "a prefix is not a parent");
    cr_assert_not(mesh_scope_within("MZ", 2, "MZ/N", 4), "a parent is not within its child");
    cr_assert_not(mesh_scope_within("TZ/N", 4, "MZ", 2));
}

Test(roster, write_limits)
{
    mesh_team *t = NULL;
    cr_assert_eq(decode_json(GOOD, &t), MESH_OK, "%s", mesh_errmsg());
    /* The authority writes anywhere. */
    cr_assert_eq(mesh_team_write_limit(t, AUTH, "MZ", 2), UINT64_MAX);
    /* A supervisor of a district writes in it and below. */
    cr_assert_eq(mesh_team_write_limit(t, K1, "MZ/N/E", 6), UINT64_MAX);
    cr_assert_eq(mesh_team_write_limit(t, K1, "MZ/N/E/L02", 10), UINT64_MAX);
    cr_assert_eq(mesh_team_write_limit(t, K1, "MZ/N", 4), 0, "not above its district");
    /* A field device: its locality, and the cut of the locality it lost. */
    cr_assert_eq(mesh_team_write_limit(t, K2, "MZ/N/E/L01", 10), UINT64_MAX);
    cr_assert_eq(mesh_team_write_limit(t, K2, "MZ/N/E/L02", 10), 7);
    cr_assert_eq(mesh_team_write_limit(t, K2, "MZ/N/E/L03", 10), 0);
    /* A removed device: up to its cut, nothing elsewhere. */
    cr_assert_eq(mesh_team_write_limit(t, K3, "MZ/N/E/L01", 10), 5);
    cr_assert_eq(mesh_team_write_limit(t, K3, "MZ/N/E/L02", 10), 0);
    /* A stranger: nothing. */
    uint8_t k4[32];
    memset(k4, 0x44, 32);
    cr_assert_eq(mesh_team_write_limit(t, k4, "MZ/N/E/L01", 10), 0);
    mesh_team_free(t);
}

Test(roster, may_hold)
{
    mesh_team *t = NULL;
    cr_assert_eq(decode_json(GOOD, &t), MESH_OK, "%s", mesh_errmsg());
    uint8_t k4[32];
    memset(k4, 0x44, 32);
    /* The field device of L01 holds L01, what is written above it, and the authority's. */
    cr_assert(mesh_team_may_hold(t, K2, K1, "MZ/N/E/L01", 10));
    cr_assert(mesh_team_may_hold(t, K2, K1, "MZ/N/E", 6), "district-level data flows down");
    cr_assert(mesh_team_may_hold(t, K2, AUTH, "MZ", 2));
    cr_assert_not(mesh_team_may_hold(t, K2, K1, "MZ/N/E/L02", 10), "another locality");
    cr_assert_not(mesh_team_may_hold(t, K2, K1, "MZ/N/E/L011", 11), "a name prefix");
    /* The district supervisor carries all its localities. */
    cr_assert(mesh_team_may_hold(t, K1, K2, "MZ/N/E/L01", 10));
    cr_assert(mesh_team_may_hold(t, K1, K2, "MZ/N/E/L02", 10));
    cr_assert_not(mesh_team_may_hold(t, K1, K2, "MZ/S/X", 6), "another district");
    /* A removed device and a stranger hold nothing, not even the roster. */
    cr_assert_not(mesh_team_may_hold(t, K3, AUTH, "MZ", 2));
    cr_assert_not(mesh_team_may_hold(t, k4, AUTH, "MZ", 2));
    cr_assert_not(mesh_team_may_hold(t, K3, K2, "MZ/N/E/L01", 10));
    cr_assert(mesh_team_find(t, K3) != NULL);
    cr_assert_null(mesh_team_find(t, k4));
    mesh_team_free(t);
}

Test(roster, roster_entity_is_fixed_by_the_authority)
{
    uint8_t a[16], b[16], c[16];
    mesh_team_roster_entity(AUTH, a);
    mesh_team_roster_entity(AUTH, b);
    mesh_team_roster_entity(K1, c);
    cr_assert_eq(memcmp(a, b, 16), 0);
    cr_assert_neq(memcmp(a, c, 16), 0);
    cr_assert_eq(a[6] >> 4, 8, "version 8 UUID");
}

Test(roster, roles)
{
    mesh_team_role r;
    cr_assert_eq(mesh_team_role_parse("gateway", &r), MESH_OK);
    cr_assert_eq(r, MESH_ROLE_GATEWAY);
    cr_assert_eq(mesh_team_role_parse("Gateway", &r), MESH_EINVAL);
    cr_assert_str_eq(mesh_team_role_name(MESH_ROLE_FIELD), "field");
    cr_assert_null(mesh_team_role_name((mesh_team_role)9));
}

/* The fuzz corpus (tests/fuzz/corpus/roster) says what it is in its names: valid_* decode and
 * re-encode byte for byte, invalid_* are refused. */
Test(roster, fuzz_corpus_is_what_its_names_say)
{
    static const char *const valid[] = {"valid_v1", "valid_full", "valid_empty_members"};
    static const char *const invalid[] = {
        "invalid_format_2",      "invalid_version_0",           "invalid_unknown_field",
        "invalid_unsorted_members", "invalid_scope_outside_root", "invalid_bad_role",
        "invalid_removed_with_scopes", "invalid_cut_seq_0",       "invalid_not_a_map",
        "invalid_truncated",     "invalid_empty"};
    for (size_t k = 0; k < 2; k++) {
        size_t n = k == 0 ? 3 : sizeof invalid / sizeof invalid[0];
        for (size_t i = 0; i < n; i++) {
            const char *name = k == 0 ? valid[i] : invalid[i];
            char path[512];
            snprintf(path, sizeof path, "%s/tests/fuzz/corpus/roster/%s", MESH_SOURCE_DIR, name);
            FILE *f = fopen(path, "rb");
            cr_assert_not_null(f, "%s", path);
            uint8_t buf[4096];
            size_t len = fread(buf, 1, sizeof buf, f);
            fclose(f);
            mesh_team *t = NULL;
            int rc = mesh_team_decode(buf, len, AUTH, &t);
            if (k == 0) {
                cr_assert_eq(rc, MESH_OK, "%s: %s", name, mesh_errmsg());
                mesh_buf b;
                mesh_buf_init(&b, MESH_OP_BYTES_MAX);
                cr_assert_eq(mesh_team_encode(t, &b), MESH_OK);
                cr_assert(b.len == len && memcmp(b.data, buf, len) == 0, "%s re-encodes", name);
                mesh_buf_fini(&b);
            } else {
                cr_assert_neq(rc, MESH_OK, "%s was accepted", name);
            }
            mesh_team_free(t);
        }
    }
}
