/*
 * body_test.c - canonical bodies: JSON conversion both ways, every canonical-form rule, the
 * limits, lookups and the editor.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/body.h"

static mesh_buf out;

static void setup(void) { mesh_buf_init(&out, 64u * 1024 * 1024); }
static void teardown(void) { mesh_buf_fini(&out); }

TestSuite(body, .init = setup, .fini = teardown);

static int from_json(const char *j)
{
    mesh_buf_reset(&out);
    return mesh_body_from_json(j, strlen(j), &out);
}

static void expect_bytes(const char *j, const uint8_t *want, size_t n)
{
    cr_assert_eq(from_json(j), MESH_OK, "%s: %s", j, mesh_errmsg());
    cr_assert_eq(out.len, n, "%s: %zu bytes, want %zu", j, out.len, n);
    cr_assert(memcmp(out.data, want, n) == 0, "%s: bytes differ", j);
    cr_assert_eq(mesh_body_check(out.data, out.len), MESH_OK, "%s", mesh_errmsg());
}

#define EXPECT(j, ...)                                                                           \
    do {                                                                                         \
        static const uint8_t w_[] = {__VA_ARGS__};                                               \
        expect_bytes(j, w_, sizeof w_);                                                          \
    } while (0)

/* JSON -> body -> JSON, expecting `want` (NULL: the input itself). */
static void json_round(const char *j, const char *want)
{
    cr_assert_eq(from_json(j), MESH_OK, "%s: %s", j, mesh_errmsg());
    mesh_buf js;
    mesh_buf_init(&js, 64u * 1024 * 1024);
    cr_assert_eq(mesh_body_to_json(out.data, out.len, &js), MESH_OK, "%s", mesh_errmsg());
    want = want ? want : j;
    cr_assert_eq(js.len, strlen(want), "%s -> %.*s", j, (int)js.len, js.data);
    cr_assert(memcmp(js.data, want, js.len) == 0, "%s -> %.*s", j, (int)js.len, js.data);
    /* and back to the same bytes */
    mesh_buf again;
    mesh_buf_init(&again, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_body_from_json((const char *)js.data, js.len, &again), MESH_OK);
    cr_assert_eq(again.len, out.len);
    cr_assert(memcmp(again.data, out.data, out.len) == 0);
    mesh_buf_fini(&again);
    mesh_buf_fini(&js);
}

static int check(const uint8_t *p, size_t n) { return mesh_body_check(p, n); }
#define CHECK(...) check((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

Test(body, keys_sorted_bytewise_shorter_first)
{
    EXPECT("{\"b\":1,\"aa\":2,\"a\":3,\"\":4,\"B\":5}",
           0x85, 0xa0, 0x04, 0xa1, 'B', 0x05, 0xa1, 'a', 0x03, 0xa2, 'a', 'a', 0x02, 0xa1, 'b',
           0x01);
}

Test(body, integers_shortest)
{
    EXPECT("{\"a\":0}", 0x81, 0xa1, 'a', 0x00);
    EXPECT("{\"a\":127}", 0x81, 0xa1, 'a', 0x7f);
    EXPECT("{\"a\":128}", 0x81, 0xa1, 'a', 0xcc, 0x80);
    EXPECT("{\"a\":65536}", 0x81, 0xa1, 'a', 0xce, 0x00, 0x01, 0x00, 0x00);
    EXPECT("{\"a\":-1}", 0x81, 0xa1, 'a', 0xff);
    EXPECT("{\"a\":-32}", 0x81, 0xa1, 'a', 0xe0);
    EXPECT("{\"a\":-33}", 0x81, 0xa1, 'a', 0xd0, 0xdf);
    EXPECT("{\"a\":-129}", 0x81, 0xa1, 'a', 0xd1, 0xff, 0x7f);
    EXPECT("{\"a\":-0}", 0x81, 0xa1, 'a', 0x00);
    EXPECT("{\"a\":9223372036854775807}", 0x81, 0xa1, 'a', 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff,
           0xff, 0xff, 0xff);
    EXPECT("{\"a\":-9223372036854775808}", 0x81, 0xa1, 'a', 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
    cr_assert_eq(from_json("{\"a\":9223372036854775808}"), MESH_EINVAL);
}

Test(body, reals_are_float64)
{
    EXPECT("{\"a\":1.5}", 0x81, 0xa1, 'a', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
    EXPECT("{\"a\":1.0}", 0x81, 0xa1, 'a', 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0);
    EXPECT("{\"a\":1e2}", 0x81, 0xa1, 'a', 0xcb, 0x40, 0x59, 0, 0, 0, 0, 0, 0);
}

Test(body, other_scalars_and_strings)
{
    EXPECT("{\"n\":null,\"t\":true,\"f\":false}", 0x83, 0xa1, 'f', 0xc2, 0xa1, 'n', 0xc0, 0xa1,
           't', 0xc3);
    EXPECT("{\"s\":\"\\u00e9\"}", 0x81, 0xa1, 's', 0xa2, 0xc3, 0xa9);
    /* 32 bytes take str8 */
    cr_assert_eq(from_json("{\"s\":\"0123456789abcdef0123456789abcdef\"}"), MESH_OK);
    cr_assert_eq(out.data[3], 0xd9);
    cr_assert_eq(out.data[4], 32);
}

Test(body, json_round_trips)
{
    json_round("{}", NULL);
    json_round("{\"a\":[1,-2,3.25,\"x\",null,true,false,{\"b\":{}}],\"b\":[]}", NULL);
    json_round("{ \"z\" : 1 , \"a\" : 2 }", "{\"a\":2,\"z\":1}");
    json_round("{\"a\":0.1}", NULL);
    json_round("{\"a\":1.0}", NULL);
    json_round("{\"a\":-0.0}", NULL);
    json_round("{\"a\":1e+300}", NULL);
    /* 15 significant digits already read back as the smallest subnormal */
    json_round("{\"a\":5e-324}", "{\"a\":4.94065645841247e-324}");
    json_round("{\"a\":0.30000000000000004}", NULL);
    json_round("{\"a\":123456789012345678}", NULL);
    json_round("{\"a\":1e2}", "{\"a\":100.0}");
    json_round("{\"s\":\"quote\\\" back\\\\ nl\\n tab\\t \\u0001 \\u001f \\/ é 😀\"}",
               "{\"s\":\"quote\\\" back\\\\ nl\\n tab\\t \\u0001 \\u001f / é 😀\"}");
}

Test(body, json_errors)
{
    cr_assert_eq(from_json("{\"a\":1,\"a\":2}"), MESH_EINVAL);
    cr_assert(strstr(mesh_errmsg(), "line 1") != NULL, "%s", mesh_errmsg());
    cr_assert_eq(from_json("[1]"), MESH_EINVAL);
    cr_assert_eq(from_json("{\"a\":1} x"), MESH_EINVAL);
    cr_assert_eq(from_json("{\n\"a\":\n}"), MESH_EINVAL);
    cr_assert(strstr(mesh_errmsg(), "line 3") != NULL, "%s", mesh_errmsg());
    cr_assert_eq(from_json("{\"a\":\"\\u0000\"}"), MESH_EINVAL);
    cr_assert_eq(from_json("{\"a\":\"\xff\"}"), MESH_EINVAL);
    cr_assert_eq(from_json("{\"a\":1e999}"), MESH_EINVAL);
    cr_assert_eq(from_json(""), MESH_EINVAL);
    cr_assert_eq(out.len, 0);
}

Test(body, depth_limit)
{
    char j[4 * MESH_BODY_DEPTH_MAX + 16];
    /* MESH_BODY_DEPTH_MAX levels: the top object and DEPTH_MAX-1 nested arrays. */
    for (int depth = MESH_BODY_DEPTH_MAX; depth <= MESH_BODY_DEPTH_MAX + 1; depth++) {
        size_t n = 0;
        n += (size_t)sprintf(j + n, "{\"a\":");
        for (int i = 1; i < depth; i++) j[n++] = '[';
        for (int i = 1; i < depth; i++) j[n++] = ']';
        j[n++] = '}';
        j[n] = 0;
        int rc = from_json(j);
        cr_assert_eq(rc, depth <= MESH_BODY_DEPTH_MAX ? MESH_OK : MESH_ELIMIT, "depth %d: %s",
                     depth, mesh_errmsg());
        if (rc == MESH_OK) {
            cr_assert_eq(mesh_body_check(out.data, out.len), MESH_OK);
            /* one more level, by hand: wrap the innermost [] in another array */
            size_t len = out.len;
            uint8_t *p = malloc(len + 1);
            memcpy(p, out.data, len - 1);
            p[len - 1] = 0x91;
            p[len] = 0x90;
            cr_assert_eq(check(p, len + 1), MESH_ELIMIT);
            free(p);
        }
    }
}

Test(body, items_limit)
{
    size_t n = MESH_BODY_ITEMS_MAX + 1;
    char *j = malloc(2 * n + 16);
    size_t k = (size_t)sprintf(j, "{\"a\":[");
    for (size_t i = 0; i < n; i++) { j[k++] = '0'; j[k++] = ','; }
    j[k - 1] = ']';
    j[k++] = '}';
    j[k] = 0;
    cr_assert_eq(from_json(j), MESH_ELIMIT);
    /* exactly the limit is fine */
    memmove(j + 6, j + 8, k - 8 + 1);
    cr_assert_eq(from_json(j), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_body_check(out.data, out.len), MESH_OK);
    free(j);
    /* a declared count over the limit is refused before any walk */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xdd, 0x00, 0x01, 0x00, 0x01, 0x00), MESH_ELIMIT);
}

Test(body, size_limit)
{
    size_t n = MESH_OP_BYTES_MAX;
    char *j = malloc(n + 16);
    size_t k = (size_t)sprintf(j, "{\"a\":\"");
    memset(j + k, 'x', n);
    k += n;
    k += (size_t)sprintf(j + k, "\"}");
    cr_assert_eq(mesh_body_from_json(j, k, &out), MESH_ELIMIT);
    cr_assert_eq(out.len, 0);
    free(j);
    uint8_t *big = calloc(1, MESH_OP_BYTES_MAX + 1);
    cr_assert_eq(check(big, MESH_OP_BYTES_MAX + 1), MESH_ELIMIT);
    free(big);
}

Test(body, check_accepts_canonical)
{
    cr_assert_eq(CHECK(0x80), MESH_OK);
    cr_assert_eq(CHECK(0x81, 0xa0, 0xc0), MESH_OK);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xcb, 0, 0, 0, 0, 0, 0, 0, 1), MESH_OK); /* subnormal */
}

Test(body, check_rejects)
{
    /* not a map on top */
    cr_assert_eq(CHECK(0x90), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0xc0), MESH_ECORRUPT);
    cr_assert_eq(check(NULL, 0), MESH_ECORRUPT);
    /* trailing bytes */
    cr_assert_eq(CHECK(0x80, 0x80), MESH_ECORRUPT);
    /* truncated */
    cr_assert_eq(CHECK(0x81, 0xa1), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a'), MESH_ECORRUPT);
    /* keys: unsorted, duplicate, not a string, shorter-first rule */
    cr_assert_eq(CHECK(0x82, 0xa1, 'b', 0x01, 0xa1, 'a', 0x01), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x01), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "duplicate") != NULL, "%s", mesh_errmsg());
    cr_assert_eq(CHECK(0x82, 0xa2, 'a', 'a', 0x01, 0xa1, 'a', 0x01), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0x01, 0x01), MESH_ECORRUPT);
    /* non-shortest integers, signed forms for non-negative values */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xcc, 0x05), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xcd, 0x00, 0xff), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd0, 0x05), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd0, 0xff), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd1, 0xff, 0x80), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd3, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0),
                 MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff),
                 MESH_OK);
    /* uint64 above int64 */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0), MESH_ECORRUPT);
    /* float32, NaN, infinity */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xca, 0x3f, 0x80, 0, 0), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0), MESH_ECORRUPT);
    /* bin, ext, never-used */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xc4, 0x00), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd4, 0x01, 0x00), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xc1), MESH_ECORRUPT);
    /* strings: str8 for a short one, invalid UTF-8, NUL, surrogate, overlong */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xd9, 0x01, 'x'), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xa1, 0xff), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xa1, 0x00), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xa3, 0xed, 0xa0, 0x80), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xa2, 0xc0, 0x80), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xa4, 0xf4, 0x90, 0x80, 0x80), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xa4, 0xf4, 0x8f, 0xbf, 0xbf), MESH_OK);
    cr_assert_eq(CHECK(0x81, 0xa1, 0xff, 0x01), MESH_ECORRUPT); /* key too */
    /* array16/map16 with a small count */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0xdc, 0x00, 0x00), MESH_ECORRUPT);
    cr_assert_eq(CHECK(0xde, 0x00, 0x00), MESH_ECORRUPT);
    /* a count the bytes cannot hold */
    cr_assert_eq(CHECK(0x81, 0xa1, 'a', 0x9f, 0x01), MESH_ECORRUPT);
}

/* Long strings go through the eight-bytes-at-a-time ASCII path: a NUL or a bad byte at any
 * position of a word, and valid multibyte text after a run of ASCII, are still judged exactly. */
Test(body, long_strings_every_position)
{
    for (size_t len = 8; len <= 31; len++)
        for (size_t at = 0; at < len; at++)
            for (int bad = 0; bad < 3; bad++) {
                uint8_t b[64] = {0x81, 0xa1, 'a', (uint8_t)(0xa0 | len)};
                memset(b + 4, 'x', len);
                int want = MESH_ECORRUPT;
                if (bad == 0) b[4 + at] = 0x00;          /* U+0000 */
                else if (bad == 1) b[4 + at] = 0x80;     /* a lone continuation byte */
                else if (at + 1 < len) {                 /* a valid two-byte character */
                    b[4 + at] = 0xc3;
                    b[4 + at + 1] = 0xa9;
                    want = MESH_OK;
                } else {
                    b[4 + at] = 0xc3;                    /* cut short at the end */
                }
                cr_assert_eq(mesh_body_check(b, 4 + len), want, "len %zu at %zu case %d", len,
                             at, bad);
            }
}

Test(body, to_json_rejects_corrupt_without_output)
{
    mesh_buf js;
    mesh_buf_init(&js, 1024);
    cr_assert_eq(mesh_body_to_json((const uint8_t[]){0x81, 0xa1, 'a', 0xc4, 0}, 5, &js),
                 MESH_ECORRUPT);
    cr_assert_eq(js.len, 0);
    mesh_buf_fini(&js);
}

Test(body, lookups)
{
    cr_assert_eq(from_json("{\"id\":\"abc\",\"n\":-5,\"u\":7,\"f\":1.5,\"x\":{\"id\":\"no\"}}"),
                 MESH_OK);
    const char *s;
    size_t n;
    int64_t v;
    cr_assert_eq(mesh_body_get_str(out.data, out.len, "id", &s, &n), MESH_OK);
    cr_assert_eq(n, 3);
    cr_assert(memcmp(s, "abc", 3) == 0);
    cr_assert_eq(mesh_body_get_int(out.data, out.len, "n", &v), MESH_OK);
    cr_assert_eq(v, -5);
    cr_assert_eq(mesh_body_get_int(out.data, out.len, "u", &v), MESH_OK);
    cr_assert_eq(v, 7);
    cr_assert_eq(mesh_body_get_int(out.data, out.len, "f", &v), MESH_ENOTFOUND);
    bool b;
    cr_assert_eq(mesh_body_get_bool(out.data, out.len, "id", &b), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_int(out.data, out.len, "id", &v), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_str(out.data, out.len, "n", &s, &n), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_str(out.data, out.len, "missing", &s, &n), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_str(out.data, out.len, "zzz", &s, &n), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_str(out.data, out.len, "", &s, &n), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_str((const uint8_t[]){0x91, 0x00}, 2, "a", &s, &n), MESH_ECORRUPT);
    /* keys out of order are found while walking towards the key */
    cr_assert_eq(mesh_body_get_str((const uint8_t[]){0x82, 0xa1, 'b', 0x01, 0xa1, 'a', 0x01}, 7,
                                   "c", &s, &n),
                 MESH_ECORRUPT);
}

static void body_of(const char *j, mesh_buf *b)
{
    mesh_buf_init(b, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_body_from_json(j, strlen(j), b), MESH_OK, "%s", mesh_errmsg());
}

static void expect_json(const mesh_buf *b, const char *want)
{
    mesh_buf js;
    mesh_buf_init(&js, 1 << 20);
    cr_assert_eq(mesh_body_check(b->data, b->len), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_body_to_json(b->data, b->len, &js), MESH_OK);
    cr_assert(js.len == strlen(want) && memcmp(js.data, want, js.len) == 0, "got %.*s want %s",
              (int)js.len, js.data, want);
    mesh_buf_fini(&js);
}

Test(body, get_bool)
{
    cr_assert_eq(from_json("{\"isDeleted\":true,\"n\":false,\"z\":null}"), MESH_OK);
    bool b = false;
    cr_assert_eq(mesh_body_get_bool(out.data, out.len, "isDeleted", &b), MESH_OK);
    cr_assert(b);
    cr_assert_eq(mesh_body_get_bool(out.data, out.len, "n", &b), MESH_OK);
    cr_assert(!b);
    cr_assert_eq(mesh_body_get_bool(out.data, out.len, "z", &b), MESH_ENOTFOUND);
    cr_assert_eq(mesh_body_get_bool(out.data, out.len, "absent", &b), MESH_ENOTFOUND);
}

Test(body, edit)
{
    mesh_buf a, add;
    body_of("{\"clientReferenceId\":\"x\",\"name\":\"A\",\"rowVersion\":3,\"z\":[1]}", &a);
    body_of("{\"isDeleted\":false,\"name\":\"B\",\"rowVersion\":4}", &add);
    static const char *const drop[] = {"clientReferenceId", "rowVersion", "absent"};
    cr_assert_eq(mesh_body_edit(a.data, a.len, drop, 3, NULL, 0, &out), MESH_OK);
    expect_json(&out, "{\"name\":\"A\",\"z\":[1]}");
    mesh_buf_reset(&out);
    cr_assert_eq(mesh_body_edit(a.data, a.len, NULL, 0, add.data, add.len, &out), MESH_OK);
    expect_json(&out,
                "{\"clientReferenceId\":\"x\",\"isDeleted\":false,\"name\":\"B\",\"rowVersion\":4,"
                "\"z\":[1]}");
    mesh_buf_reset(&out);
    static const char *const all[] = {"clientReferenceId", "name", "rowVersion", "z"};
    cr_assert_eq(mesh_body_edit(a.data, a.len, all, 4, NULL, 0, &out), MESH_OK);
    cr_assert_eq(out.len, 1);
    cr_assert_eq(out.data[0], 0x80);
    mesh_buf_reset(&out);
    /* a dropped key that add brings back: add wins */
    cr_assert_eq(mesh_body_edit(a.data, a.len, drop, 3, add.data, add.len, &out), MESH_OK);
    expect_json(&out, "{\"isDeleted\":false,\"name\":\"B\",\"rowVersion\":4,\"z\":[1]}");
    mesh_buf_reset(&out);
    cr_assert_eq(mesh_body_edit((const uint8_t[]){0x90}, 1, NULL, 0, NULL, 0, &out), MESH_ECORRUPT);
    cr_assert_eq(mesh_body_edit(a.data, a.len, NULL, 0, (const uint8_t[]){0x90}, 1, &out),
                 MESH_ECORRUPT);
    cr_assert_eq(out.len, 0);
    mesh_buf_fini(&a);
    mesh_buf_fini(&add);
}

Test(body, edit_appends_after_existing_bytes)
{
    mesh_buf a;
    body_of("{\"a\":1}", &a);
    mesh_buf_append(&out, "xy", 2);
    cr_assert_eq(mesh_body_edit(a.data, a.len, NULL, 0, NULL, 0, &out), MESH_OK);
    cr_assert_eq(out.len, 2 + a.len);
    cr_assert(memcmp(out.data + 2, a.data, a.len) == 0);
    mesh_buf_fini(&a);
}
