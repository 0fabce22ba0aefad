/*
 * uuid_test.c - UUID text forms and the UUIDv7 layout of RFC 9562.
 */
#include <criterion/criterion.h>

#include "model/uuid.h"

Test(uuid, parse_and_format)
{
    uint8_t id[16];
    char text[MESH_UUID_STR_LEN];
    cr_assert_eq(mesh_uuid_parse("0190A1B2-C3D4-7E5F-8A6B-7C8D9E0F1A2B", id), MESH_OK);
    cr_assert_eq(id[0], 0x01);
    cr_assert_eq(id[15], 0x2b);
    mesh_uuid_format(id, text);
    cr_assert_str_eq(text, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
    /* any version parses */
    cr_assert_eq(mesh_uuid_parse("f47ac10b-58cc-4372-a567-0e02b2c3d479", id), MESH_OK);
    mesh_uuid_format(id, text);
    cr_assert_str_eq(text, "f47ac10b-58cc-4372-a567-0e02b2c3d479");
}

Test(uuid, parse_rejects)
{
    static const char *bad[] = {
        "",
        "f47ac10b-58cc-4372-a567-0e02b2c3d47",
        "f47ac10b-58cc-4372-a567-0e02b2c3d4799",
        "f47ac10b58cc4372a5670e02b2c3d479",
        "f47ac10b-58cc-4372-a567_0e02b2c3d479",
        "g47ac10b-58cc-4372-a567-0e02b2c3d479",
        "{f47ac10b-58cc-4372-a567-0e02b2c3d479}",
    };
    uint8_t id[16];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(mesh_uuid_parse(bad[i], id), MESH_EINVAL, "%s", bad[i]);
        cr_assert(strstr(mesh_errmsg(), "UUID") != NULL);
    }
    cr_assert_eq(mesh_uuid_parse(NULL, id), MESH_EINVAL);
    cr_assert_eq(mesh_uuid_parse("f47ac10b-58cc-4372-a567", id), MESH_EINVAL);
    cr_assert(strstr(mesh_errmsg(), "f47ac10b-58cc-4372-a567") != NULL, "%s", mesh_errmsg());
}

Test(uuid, v7_layout)
{
    uint8_t r[10] = {0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66};
    uint8_t id[16];
    uint64_t ms = UINT64_C(0x0190a1b2c3d4);
    mesh_uuid_v7(ms, r, id);
    static const uint8_t want[16] = {0x01, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0x7f, 0xee,
                                     0x9d, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66};
    cr_assert(memcmp(id, want, 16) == 0);
    char text[MESH_UUID_STR_LEN];
    mesh_uuid_format(id, text);
    cr_assert_eq(text[14], '7', "version nibble: %s", text);
    cr_assert(strchr("89ab", text[19]) != NULL, "variant: %s", text);
    /* zero randomness still gives version and variant */
    uint8_t z[10] = {0};
    mesh_uuid_v7(0, z, id);
    cr_assert_eq(id[6], 0x70);
    cr_assert_eq(id[8], 0x80);
}

Test(uuid, v7_sorts_by_time)
{
    uint8_t r[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t z[10] = {0};
    uint8_t a[16], b[16];
    for (uint64_t ms = 1; ms < (UINT64_C(1) << 48); ms = ms * 3 + 1) {
        mesh_uuid_v7(ms - 1, r, a);
        mesh_uuid_v7(ms, z, b);
        cr_assert_lt(memcmp(a, b, 16), 0, "ms %llu", (unsigned long long)ms);
    }
}
