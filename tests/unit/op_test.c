/*
 * op_test.c - the op encoding: round trips, every rejection the decoder promises, the grammars,
 * the merge order and stream ids.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "crypto/crypto.h"
#include "model/body.h"
#include "model/op.h"

static mesh_buf body;

static void setup(void)
{
    cr_assert_eq(mesh_crypto_init(), MESH_OK);
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    const char *j = "{\"name\":\"Amina\",\"age\":34,\"tags\":[\"a\",\"b\"]}";
    cr_assert_eq(mesh_body_from_json(j, strlen(j), &body), MESH_OK, "%s", mesh_errmsg());
}

static void teardown(void) { mesh_buf_fini(&body); }

TestSuite(op, .init = setup, .fini = teardown);

/* A valid update op with every optional part filled in. */
static void sample(mesh_op *op)
{
    memset(op, 0, sizeof *op);
    op->kind = MESH_OP_UPDATE;
    op->type = "household";
    op->type_len = 9;
    for (int i = 0; i < 16; i++) op->entity[i] = (uint8_t)(0xa0 + i);
    op->row_version = 3;
    memset(op->author, 0x11, 32);
    op->scope = "MZ/NAMPULA/ERATI/L01";
    op->scope_len = strlen(op->scope);
    op->seq = 7;
    memset(op->prev, 0x22, 32);
    op->hlc = UINT64_C(0x0190a1b2c3d40001);
    op->has_base = true;
    op->base.row_version = 2;
    memset(op->base.author, 0x33, 32);
    op->merged_count = 2;
    op->merged[0].row_version = 2;
    memset(op->merged[0].author, 0x44, 32);
    op->merged[1].row_version = 1;
    memset(op->merged[1].author, 0x55, 32);
    op->parents_count = 1;
    memset(op->parents[0], 0x66, 16);
    op->body = body.data;
    op->body_len = body.len;
}

static void encode(const mesh_op *op, mesh_buf *out)
{
    mesh_buf_init(out, 2 * MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_op_encode(op, out), MESH_OK, "%s", mesh_errmsg());
}

/* Replaces bytes [at, at+n) of `in` with `rep` (m bytes). */
static uint8_t *splice(const mesh_buf *in, size_t at, size_t n, const void *rep, size_t m,
                       size_t *len)
{
    *len = in->len - n + m;
    uint8_t *p = malloc(*len + 1);
    memcpy(p, in->data, at);
    memcpy(p + at, rep, m);
    memcpy(p + at + m, in->data + at + n, in->len - at - n);
    return p;
}

static int decode_spliced(const mesh_buf *in, size_t at, size_t n, const void *rep, size_t m)
{
    size_t len;
    uint8_t *p = splice(in, at, n, rep, m, &len);
    mesh_op op;
    int rc = mesh_op_decode(p, len, &op);
    free(p);
    return rc;
}

Test(op, round_trip_all_fields)
{
    mesh_op a, b;
    mesh_buf enc, again;
    sample(&a);
    encode(&a, &enc);
    cr_assert_eq(mesh_op_decode(enc.data, enc.len, &b), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(b.kind, a.kind);
    cr_assert_eq(b.type_len, a.type_len);
    cr_assert(memcmp(b.type, a.type, a.type_len) == 0);
    cr_assert(memcmp(b.entity, a.entity, 16) == 0);
    cr_assert_eq(b.row_version, 3);
    cr_assert(memcmp(b.author, a.author, 32) == 0);
    cr_assert_eq(b.scope_len, a.scope_len);
    cr_assert(memcmp(b.scope, a.scope, a.scope_len) == 0);
    cr_assert_eq(b.seq, 7);
    cr_assert(memcmp(b.prev, a.prev, 32) == 0);
    cr_assert_eq(b.hlc, a.hlc);
    cr_assert(b.has_base);
    cr_assert_eq(b.base.row_version, 2);
    cr_assert(memcmp(b.base.author, a.base.author, 32) == 0);
    cr_assert_eq(b.merged_count, 2);
    cr_assert_eq(b.merged[1].row_version, 1);
    cr_assert(memcmp(b.merged[1].author, a.merged[1].author, 32) == 0);
    cr_assert_eq(b.parents_count, 1);
    cr_assert(memcmp(b.parents[0], a.parents[0], 16) == 0);
    cr_assert_eq(b.body_len, body.len);
    cr_assert(memcmp(b.body, body.data, body.len) == 0);
    /* The op borrows from the encoded buffer. */
    cr_assert(b.type >= (const char *)enc.data && b.type < (const char *)enc.data + enc.len);
    encode(&b, &again);
    cr_assert_eq(again.len, enc.len);
    cr_assert(memcmp(again.data, enc.data, enc.len) == 0);
    mesh_buf_fini(&enc);
    mesh_buf_fini(&again);
}

Test(op, layout_starts_as_specified)
{
    mesh_op a;
    mesh_buf enc;
    sample(&a);
    encode(&a, &enc);
    static const uint8_t start[] = {0x9e, 0x01, 0x02, 0xa9, 'h', 'o', 'u', 's', 'e', 'h', 'o', 'l',
                                    'd', 0xc4, 0x10};
    cr_assert(memcmp(enc.data, start, sizeof start) == 0);
    /* entity, then row_version 3 as a fixint, then author as bin8 of 32. */
    cr_assert_eq(enc.data[sizeof start + 16], 0x03);
    cr_assert_eq(enc.data[sizeof start + 17], 0xc4);
    cr_assert_eq(enc.data[sizeof start + 18], 0x20);
    /* The body is the tail of the encoding, byte for byte. */
    cr_assert(memcmp(enc.data + enc.len - body.len, body.data, body.len) == 0);
    mesh_buf_fini(&enc);
}

Test(op, create_has_no_base)
{
    mesh_op a, b;
    mesh_buf enc;
    sample(&a);
    a.kind = MESH_OP_CREATE;
    a.row_version = 1;
    a.seq = 1;
    memset(a.prev, 0, 32);
    cr_assert_eq(mesh_op_encode(&a, &(mesh_buf){0}), MESH_EINVAL);
    a.has_base = false;
    a.merged_count = 0;
    encode(&a, &enc);
    cr_assert_eq(mesh_op_decode(enc.data, enc.len, &b), MESH_OK, "%s", mesh_errmsg());
    cr_assert(!b.has_base);
    /* Kind 2 with a nil base: patch the kind byte (offset 2). */
    uint8_t k = 2;
    cr_assert_eq(decode_spliced(&enc, 2, 1, &k, 1), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "base") != NULL, "%s", mesh_errmsg());
    mesh_buf_fini(&enc);
}

Test(op, create_with_base_rejected_by_decoder)
{
    mesh_op a;
    mesh_buf enc;
    sample(&a);
    encode(&a, &enc);
    uint8_t k = 1;
    cr_assert_eq(decode_spliced(&enc, 2, 1, &k, 1), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "'base'") != NULL, "%s", mesh_errmsg());
    mesh_buf_fini(&enc);
}

Test(op, field_range_checks_on_encode)
{
    mesh_op a;
    mesh_buf out;
    mesh_buf_init(&out, MESH_OP_BYTES_MAX);
    sample(&a); a.row_version = 0;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.kind = 0;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.kind = 16;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.seq = 0;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.seq = UINT64_C(1) << 63;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.seq = (UINT64_C(1) << 63) - 1;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_OK);
    mesh_buf_reset(&out);
    sample(&a); a.seq = 1;  /* prev is not zero */
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.base.row_version = 3;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.base.row_version = 0;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.merged_count = MESH_MERGED_MAX + 1;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_ELIMIT);
    sample(&a); a.parents_count = MESH_PARENTS_MAX + 1;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_ELIMIT);
    sample(&a); a.type = "House"; a.type_len = 5;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    sample(&a); a.scope = "a//b"; a.scope_len = 4;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    static const uint8_t not_map[] = {0x90};
    sample(&a); a.body = not_map; a.body_len = 1;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_EINVAL);
    cr_assert_eq(out.len, 0, "a failed encode leaves the buffer as it was");
    mesh_buf_fini(&out);
}

Test(op, maxima_round_trip)
{
    mesh_op a, b;
    mesh_buf enc;
    sample(&a);
    char type[MESH_TYPE_BYTES_MAX], scope[MESH_SCOPE_BYTES_MAX];
    memset(type, 'z', sizeof type);
    memset(scope, 'S', sizeof scope);
    a.type = type; a.type_len = sizeof type;
    a.scope = scope; a.scope_len = sizeof scope;
    a.row_version = UINT32_MAX;
    a.base.row_version = UINT32_MAX - 1;
    a.hlc = UINT64_MAX;
    a.merged_count = MESH_MERGED_MAX;
    for (int i = 0; i < MESH_MERGED_MAX; i++) a.merged[i].row_version = UINT32_MAX;
    a.parents_count = MESH_PARENTS_MAX;
    encode(&a, &enc);
    /* A 32-byte type takes str8 (0xd9), as msgpack-c 4 writes it. */
    cr_assert_eq(enc.data[3], 0xd9);
    cr_assert_eq(enc.data[4], 32);
    cr_assert_eq(mesh_op_decode(enc.data, enc.len, &b), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(b.row_version, UINT32_MAX);
    cr_assert_eq(b.hlc, UINT64_MAX);
    cr_assert_eq(b.merged_count, MESH_MERGED_MAX);
    cr_assert_eq(b.parents_count, MESH_PARENTS_MAX);
    mesh_buf_fini(&enc);
}

Test(op, rejects_non_shortest_forms)
{
    mesh_op a;
    mesh_buf enc;
    sample(&a);
    encode(&a, &enc);
    /* kind 2 as uint8 */
    cr_assert_eq(decode_spliced(&enc, 2, 1, (uint8_t[]){0xcc, 0x02}, 2), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "'kind'") != NULL, "%s", mesh_errmsg());
    /* format 1 as uint16 */
    cr_assert_eq(decode_spliced(&enc, 1, 1, (uint8_t[]){0xcd, 0x00, 0x01}, 3), MESH_ECORRUPT);
    /* type "household" as str8 */
    cr_assert_eq(decode_spliced(&enc, 3, 1, (uint8_t[]){0xd9, 0x09}, 2), MESH_ECORRUPT);
    /* entity bin8 as bin16 */
    cr_assert_eq(decode_spliced(&enc, 13, 2, (uint8_t[]){0xc5, 0x00, 0x10}, 3), MESH_ECORRUPT);
    /* the top array as array16 */
    cr_assert_eq(decode_spliced(&enc, 0, 1, (uint8_t[]){0xdc, 0x00, 0x0e}, 3), MESH_ECORRUPT);
    mesh_buf_fini(&enc);
}

Test(op, rejects_structure_errors)
{
    mesh_op a, b;
    mesh_buf enc;
    sample(&a);
    encode(&a, &enc);
    /* trailing byte */
    cr_assert_eq(decode_spliced(&enc, enc.len, 0, (uint8_t[]){0xc0}, 1), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "trailing") != NULL, "%s", mesh_errmsg());
    /* 13 elements */
    cr_assert_eq(decode_spliced(&enc, 0, 1, (uint8_t[]){0x9d}, 1), MESH_ECORRUPT);
    /* 15 elements */
    cr_assert_eq(decode_spliced(&enc, 0, 1, (uint8_t[]){0x9f}, 1), MESH_ECORRUPT);
    /* unknown format */
    cr_assert_eq(decode_spliced(&enc, 1, 1, (uint8_t[]){0x02}, 1), MESH_EVERSION);
    /* a future format may have another length: still EVERSION */
    cr_assert_eq(decode_spliced(&enc, 0, 2, (uint8_t[]){0x93, 0x02}, 2), MESH_EVERSION);
    /* not an array */
    cr_assert_eq(mesh_op_decode((const uint8_t *)"\x80", 1, &b), MESH_ECORRUPT);
    cr_assert_eq(mesh_op_decode((const uint8_t *)"\x90", 1, &b), MESH_ECORRUPT);
    cr_assert_eq(mesh_op_decode(NULL, 0, &b), MESH_ECORRUPT);
    /* entity of 15 bytes */
    cr_assert_eq(decode_spliced(&enc, 13, 3, (uint8_t[]){0xc4, 0x0f}, 2), MESH_ECORRUPT);
    /* every truncation fails cleanly */
    for (size_t n = 0; n < enc.len; n++)
        if (mesh_op_decode(enc.data, n, &b) == MESH_OK) cr_assert_fail("prefix of %zu bytes", n);
    mesh_buf_fini(&enc);
}

Test(op, rejects_semantic_errors_from_the_wire)
{
    mesh_op a;
    mesh_buf enc;
    sample(&a);
    a.type = "_roster";
    a.type_len = 7;
    encode(&a, &enc);
    /* row_version 3 sits right after the entity: offset 3 + 8 + 18 = 29. */
    cr_assert_eq(enc.data[29], 0x03);
    cr_assert_eq(decode_spliced(&enc, 29, 1, (uint8_t[]){0x00}, 1), MESH_ECORRUPT);
    cr_assert_eq(decode_spliced(&enc, 29, 1, (uint8_t[]){0x02}, 1), MESH_ECORRUPT); /* = base */
    cr_assert_eq(decode_spliced(&enc, 29, 1, (uint8_t[]){0xcf, 1, 0, 0, 0, 0, 0, 0, 0}, 9),
                 MESH_ECORRUPT); /* above 2^32-1 */
    /* type "_Roster" fails the grammar */
    cr_assert_eq(decode_spliced(&enc, 5, 1, "R", 1), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "'type'") != NULL, "%s", mesh_errmsg());
    mesh_buf_fini(&enc);
}

Test(op, body_must_be_canonical)
{
    mesh_op a, b;
    mesh_buf enc;
    static const uint8_t empty[] = {0x80};
    sample(&a);
    a.body = empty;
    a.body_len = 1;
    encode(&a, &enc);
    cr_assert_eq(mesh_op_decode(enc.data, enc.len, &b), MESH_OK);
    /* {"b":1,"a":1}: keys out of order */
    static const uint8_t unsorted[] = {0x82, 0xa1, 'b', 0x01, 0xa1, 'a', 0x01};
    cr_assert_eq(decode_spliced(&enc, enc.len - 1, 1, unsorted, sizeof unsorted), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "'body'") != NULL, "%s", mesh_errmsg());
    /* a missing body */
    cr_assert_eq(decode_spliced(&enc, enc.len - 1, 1, "", 0), MESH_ECORRUPT);
    mesh_buf_fini(&enc);
}

Test(op, size_limit)
{
    mesh_op a;
    mesh_buf big, out;
    mesh_buf_init(&big, MESH_OP_BYTES_MAX);
    mesh_buf_init(&out, 2 * MESH_OP_BYTES_MAX);
    /* A body just under the limit: a map with one long string. */
    size_t n = MESH_OP_BYTES_MAX - 16;
    uint8_t hdr[] = {0x81, 0xa1, 'x', 0xdb, (uint8_t)(n >> 24), (uint8_t)(n >> 16),
                     (uint8_t)(n >> 8), (uint8_t)n};
    mesh_buf_append(&big, hdr, sizeof hdr);
    char *s = malloc(n);
    memset(s, 'q', n);
    mesh_buf_append(&big, s, n);
    free(s);
    cr_assert_eq(mesh_body_check(big.data, big.len), MESH_OK, "%s", mesh_errmsg());
    sample(&a);
    a.body = big.data;
    a.body_len = big.len;
    cr_assert_eq(mesh_op_encode(&a, &out), MESH_ELIMIT);
    cr_assert_eq(out.len, 0);
    uint8_t *huge = calloc(1, MESH_OP_BYTES_MAX + 1);
    mesh_op b;
    cr_assert_eq(mesh_op_decode(huge, MESH_OP_BYTES_MAX + 1, &b), MESH_ELIMIT);
    free(huge);
    mesh_buf_fini(&big);
    mesh_buf_fini(&out);
}

Test(op, hash_is_blake2b_of_bytes)
{
    uint8_t a[32], b[32];
    mesh_op_hash((const uint8_t *)"abc", 3, a);
    mesh_hash("abc", 3, b);
    cr_assert(memcmp(a, b, 32) == 0);
}

Test(op, order)
{
    uint8_t x[32] = {1}, y[32] = {2};
    cr_assert_lt(mesh_op_order_cmp(1, 9, y, 2, 0, x), 0);
    cr_assert_gt(mesh_op_order_cmp(2, 1, x, 2, 0, y), 0);
    cr_assert_lt(mesh_op_order_cmp(2, 1, x, 2, 1, y), 0);
    cr_assert_eq(mesh_op_order_cmp(2, 1, x, 2, 1, x), 0);
    cr_assert_gt(mesh_op_order_cmp(UINT32_MAX, 0, x, 1, UINT64_MAX, y), 0);
}

Test(op, stream_id)
{
    uint8_t author[32];
    memset(author, 7, 32);
    uint8_t cat[32 + 3], h[32];
    memcpy(cat, author, 32);
    memcpy(cat + 32, "a/b", 3);
    mesh_hash(cat, sizeof cat, h);
    cr_assert_eq(mesh_stream_id(author, "a/b", 3), mesh_be64_get(h));
    cr_assert_neq(mesh_stream_id(author, "a/b", 3), mesh_stream_id(author, "a/c", 3));
}

Test(op, scope_grammar)
{
    static const char *good[] = {"a", "MZ/NAMPULA/ERATI/L01", "x.y-z_0", "default", "a/b/c"};
    static const char *bad[] = {"", "/a", "a/", "a//b", "a b", "a\\b", "é", "a/b/"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cr_assert_eq(mesh_scope_check(good[i], strlen(good[i])), MESH_OK, "%s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(mesh_scope_check(bad[i], strlen(bad[i])), MESH_EINVAL, "%s", bad[i]);
    char s[MESH_SCOPE_BYTES_MAX + 1];
    memset(s, 'a', sizeof s);
    cr_assert_eq(mesh_scope_check(s, MESH_SCOPE_BYTES_MAX), MESH_OK);
    cr_assert_eq(mesh_scope_check(s, MESH_SCOPE_BYTES_MAX + 1), MESH_EINVAL);
    cr_assert_eq(mesh_scope_check("a\0b", 3), MESH_EINVAL);
    cr_assert(strstr(mesh_errmsg(), "\\x00") != NULL, "%s", mesh_errmsg());
}

Test(op, type_grammar)
{
    static const char *good[] = {"household", "household_member", "a", "a1", "_roster", "__x",
                                 "_1"};
    static const char *bad[] = {"", "_", "1a", "Household", "house-hold", "a b", "hé"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cr_assert_eq(mesh_type_check(good[i], strlen(good[i])), MESH_OK, "%s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(mesh_type_check(bad[i], strlen(bad[i])), MESH_EINVAL, "%s", bad[i]);
    char s[MESH_TYPE_BYTES_MAX + 1];
    memset(s, 'a', sizeof s);
    cr_assert_eq(mesh_type_check(s, MESH_TYPE_BYTES_MAX), MESH_OK);
    cr_assert_eq(mesh_type_check(s, MESH_TYPE_BYTES_MAX + 1), MESH_EINVAL);
}
