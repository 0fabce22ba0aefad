/*
 * frame_test.c - the sync frame codec against the golden vectors in proto/vectors/frames.json:
 * every valid frame decodes to the listed meaning, is produced byte for byte by the encoder from
 * that meaning and from its own decoding; every invalid one fails with the listed error. Also
 * the version vector helpers (diff, patch, join, digest).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>

#include "crypto/crypto.h"
#include "sync/frame.h"
#include "sync/vector.h"

#define FRAMES_JSON MESH_SOURCE_DIR "/proto/vectors/frames.json"

static void setup(void) { cr_assert_eq(mesh_crypto_init(), MESH_OK); }

TestSuite(frame, .init = setup);

static uint8_t *unhex(const char *s, size_t *n)
{
    size_t len = strlen(s);
    cr_assert_eq(len % 2, 0);
    *n = len / 2;
    uint8_t *p = malloc(*n + 1);
    cr_assert_eq(mesh_hex_decode(s, p, *n), MESH_OK, "bad hex %s", s);
    return p;
}

static uint64_t u64_of(json_t *j)
{
    if (json_is_integer(j)) return (uint64_t)json_integer_value(j);
    return strtoull(json_string_value(j), NULL, 10);
}

static uint64_t field(json_t *f, const char *k, uint64_t dflt)
{
    json_t *v = json_object_get(f, k);
    return v ? u64_of(v) : dflt;
}

static uint32_t type_of(const char *name)
{
    for (uint32_t t = MESH_FRAME_TYPE_MIN; t <= MESH_FRAME_TYPE_MAX; t++)
        if (strcmp(mesh_frame_type_name(t), name) == 0) return t;
    cr_assert_fail("unknown frame type %s", name);
    return 0;
}

static json_t *load(void)
{
    json_error_t err;
    json_t *root = json_load_file(FRAMES_JSON, 0, &err);
    cr_assert_not_null(root, "%s:%d: %s", FRAMES_JSON, err.line, err.text);
    return root;
}

/* Builds the frame that `meaning` describes; items go into `items`. */
static void build(json_t *m, mesh_frame *f, mesh_buf *items, mesh_vector *ents)
{
    memset(f, 0, sizeof *f);
    mesh_vector_clear(ents);
    f->type = type_of(json_string_value(json_object_get(m, "type")));
    f->version = (uint32_t)field(m, "version", 0);
    f->fno = field(m, "fno", 0);
    f->version_min = (uint32_t)field(m, "version_min", 0);
    f->flags = (uint32_t)field(m, "flags", 0);
    f->total = field(m, "total", 0);
    f->ops = field(m, "ops", 0);
    f->frames = field(m, "frames", 0);
    f->code = (uint32_t)field(m, "code", 0);
    f->extra = (uint32_t)field(m, "extra", 0);
    json_t *d = json_object_get(m, "digest");
    if (d) cr_assert_eq(mesh_hex_decode(json_string_value(d), f->digest, 16), MESH_OK);
    json_t *msg = json_object_get(m, "message");
    if (msg) {
        f->msg = json_string_value(msg);
        f->msg_len = strlen(f->msg);
    }
    mesh_buf_reset(items);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(m, "entries"), i, e) {
        uint64_t sid = u64_of(json_array_get(e, 0)), seq = u64_of(json_array_get(e, 1));
        cr_assert_eq(mesh_mp_put_uint(items, sid), MESH_OK);
        cr_assert_eq(mesh_mp_put_uint(items, seq), MESH_OK);
        cr_assert_eq(mesh_vector_push(ents, sid, seq), MESH_OK);
        f->nitems++;
    }
    json_array_foreach(json_object_get(m, "records"), i, e) {
        size_t n;
        uint8_t *op = unhex(json_string_value(json_array_get(e, 0)), &n);
        cr_assert_eq(mesh_mp_put_bin(items, op, n), MESH_OK);
        free(op);
        uint8_t *sig = unhex(json_string_value(json_array_get(e, 1)), &n);
        cr_assert_eq(n, 64);
        cr_assert_eq(mesh_mp_put_bin(items, sig, n), MESH_OK);
        free(sig);
        f->nitems++;
    }
    f->items = items->data;
    f->items_len = items->len;
}

Test(frame, golden_valid)
{
    json_t *root = load();
    json_t *valid = json_object_get(root, "valid");
    cr_assert_gt(json_array_size(valid), 10);
    mesh_buf items, out;
    mesh_buf_init(&items, MESH_FRAME_BYTES_MAX);
    mesh_buf_init(&out, MESH_FRAME_BYTES_MAX);
    mesh_vector ents, got;
    mesh_vector_init(&ents);
    mesh_vector_init(&got);
    size_t k;
    json_t *v;
    json_array_foreach(valid, k, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        size_t len;
        uint8_t *bytes = unhex(json_string_value(json_object_get(v, "hex")), &len);
        mesh_frame f, want;
        cr_assert_eq(mesh_frame_decode(bytes, len, &f), MESH_OK, "%s: %s", name, mesh_errmsg());
        json_t *m = json_object_get(v, "frame");
        build(m, &want, &items, &ents);
        cr_assert_eq(f.type, want.type, "%s", name);
        cr_assert_eq(f.version, want.version, "%s", name);
        cr_assert_eq(f.fno, want.fno, "%s", name);
        cr_assert_eq(f.version_min, want.version_min, "%s", name);
        cr_assert_eq(f.flags, want.flags, "%s", name);
        cr_assert_eq(f.total, want.total, "%s", name);
        cr_assert_eq(f.ops, want.ops, "%s", name);
        cr_assert_eq(f.frames, want.frames, "%s", name);
        cr_assert_eq(f.code, want.code, "%s", name);
        cr_assert_eq(f.extra, want.extra, "%s", name);
        cr_assert_eq(f.nitems, want.nitems, "%s", name);
        cr_assert_arr_eq(f.digest, want.digest, 16, "%s", name);
        cr_assert_eq(f.msg_len, want.msg_len, "%s", name);
        if (f.msg_len) cr_assert_arr_eq(f.msg, want.msg, f.msg_len, "%s", name);
        cr_assert_eq(f.items_len, want.items_len, "%s", name);
        if (f.items_len) cr_assert_arr_eq(f.items, want.items, f.items_len, "%s", name);
        /* The iterators walk what the decoder validated. */
        mesh_frame_iter it;
        mesh_frame_iter_init(&it, &f);
        if (f.type == MESH_FRAME_OPS) {
            mesh_oprec rec;
            size_t n = 0;
            while (mesh_frame_next_record(&it, &rec)) n++;
            cr_assert_eq(n, f.nitems, "%s", name);
        } else {
            uint64_t sid, seq;
            mesh_vector_clear(&got);
            while (mesh_frame_next_entry(&it, &sid, &seq)) mesh_vector_push(&got, sid, seq);
            cr_assert_eq(got.n, ents.n, "%s", name);
            if (got.n) cr_assert_arr_eq(got.e, ents.e, got.n * sizeof *got.e, "%s", name);
        }
        if (json_is_true(json_object_get(m, "digest_is_of_entries"))) {
            /* hashlib (the generator) and libsodium agree on the vector digest. */
            uint8_t d[16];
            mesh_vector_digest(&ents, d);
            cr_assert_arr_eq(d, f.digest, 16, "%s: digest", name);
        }
        /* Every strict prefix of a frame is refused (and never crashes the decoder). */
        for (size_t n = 0; n < len; n++) cr_assert_neq(mesh_frame_decode(bytes, n, &f), MESH_OK);
        mesh_frame_decode(bytes, len, &f);
        if (json_is_true(json_object_get(v, "reencode"))) {
            mesh_buf_reset(&out);
            cr_assert_eq(mesh_frame_encode(&f, &out), MESH_OK);
            cr_assert_eq(out.len, len, "%s", name);
            cr_assert_arr_eq(out.data, bytes, len, "%s: re-encoding differs", name);
            mesh_buf_reset(&out);
            cr_assert_eq(mesh_frame_encode(&want, &out), MESH_OK);
            cr_assert_arr_eq(out.data, bytes, len, "%s: encoding the meaning differs", name);
        }
        free(bytes);
    }
    mesh_vector_fini(&ents);
    mesh_vector_fini(&got);
    mesh_buf_fini(&items);
    mesh_buf_fini(&out);
    json_decref(root);
}

Test(frame, golden_invalid)
{
    json_t *root = load();
    json_t *invalid = json_object_get(root, "invalid");
    cr_assert_gt(json_array_size(invalid), 10);
    size_t k;
    json_t *v;
    json_array_foreach(invalid, k, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *err = json_string_value(json_object_get(v, "error"));
        int want = strcmp(err, "MESH_EVERSION") == 0 ? MESH_EVERSION : MESH_EPROTO;
        cr_assert(strcmp(err, "MESH_EVERSION") == 0 || strcmp(err, "MESH_EPROTO") == 0);
        size_t len;
        uint8_t *bytes = unhex(json_string_value(json_object_get(v, "hex")), &len);
        mesh_frame f;
        int rc = mesh_frame_decode(bytes, len, &f);
        cr_assert_eq(rc, want, "%s: got %d (%s)", name, rc, mesh_errmsg());
        free(bytes);
    }
    json_decref(root);
}

Test(frame, limits_of_the_encoding)
{
    /* The largest HELLO head fits MESH_FRAME_HEAD_BYTES_MAX. */
    mesh_buf out;
    mesh_buf_init(&out, 1024);
    mesh_frame f = {.type = MESH_FRAME_HELLO, .version = MESH_PROTO_VERSION_LIMIT,
                    .fno = UINT64_C(1) << 62, .version_min = MESH_PROTO_VERSION_LIMIT,
                    .flags = UINT32_MAX, .total = MESH_VECTOR_ENTRIES_MAX,
                    .nitems = MESH_VECTOR_ENTRIES_MAX};
    cr_assert_eq(mesh_frame_encode(&f, &out), MESH_OK);
    cr_assert_leq(out.len, MESH_FRAME_HEAD_BYTES_MAX);
    mesh_buf_reset(&out);
    mesh_frame o = {.type = MESH_FRAME_OPS, .version = MESH_PROTO_VERSION_LIMIT,
                    .fno = UINT64_C(1) << 62, .nitems = MESH_FRAME_OPS_MAX};
    cr_assert_eq(mesh_frame_encode(&o, &out), MESH_OK);
    cr_assert_leq(out.len, MESH_FRAME_HEAD_BYTES_MAX);
    mesh_buf_fini(&out);
}

/* A deterministic generator for the vector tests. */
static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void random_vector(mesh_vector *v, uint64_t *x, size_t n)
{
    mesh_vector_clear(v);
    for (size_t i = 0; i < n; i++) mesh_vector_append(v, rnd(x) % 64, 1 + rnd(x) % 5);
    mesh_vector_normalize(v);
}

Test(frame, vector_diff_patch_join)
{
    mesh_vector a, b, d, p, j;
    mesh_vector_init(&a);
    mesh_vector_init(&b);
    mesh_vector_init(&d);
    mesh_vector_init(&p);
    mesh_vector_init(&j);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < 2000; round++) {
        random_vector(&a, &x, rnd(&x) % 40);
        random_vector(&b, &x, rnd(&x) % 40);
        /* patch(base, diff(cur, base)) == cur, with equal digests. */
        cr_assert_eq(mesh_vector_diff(&a, &b, &d), MESH_OK);
        cr_assert_eq(mesh_vector_patch(&b, &d, &p), MESH_OK);
        cr_assert_eq(p.n, a.n);
        if (a.n) cr_assert_arr_eq(p.e, a.e, a.n * sizeof *a.e);
        uint8_t da[16], dp[16];
        mesh_vector_digest(&a, da);
        mesh_vector_digest(&p, dp);
        cr_assert_arr_eq(da, dp, 16);
        /* join is the pointwise max over the union. */
        cr_assert_eq(mesh_vector_join(&a, &b, &j), MESH_OK);
        for (size_t i = 0; i < j.n; i++) {
            uint64_t sa = mesh_vector_get(&a, j.e[i].sid), sb = mesh_vector_get(&b, j.e[i].sid);
            cr_assert_eq(j.e[i].seq, sa > sb ? sa : sb);
            if (i) cr_assert_gt(j.e[i].sid, j.e[i - 1].sid);
        }
        cr_assert_geq(j.n, a.n);
        cr_assert_geq(j.n, b.n);
        /* Save and load round-trip. */
        uint8_t *raw = malloc(16 * a.n + 1);
        mesh_vector_save(&a, raw);
        cr_assert_eq(mesh_vector_load(&p, raw, a.n), MESH_OK);
        if (a.n) cr_assert_arr_eq(p.e, a.e, a.n * sizeof *a.e);
        free(raw);
    }
    /* Different vectors, different digests; order is enforced. */
    mesh_vector_clear(&a);
    mesh_vector_push(&a, 1, 1);
    cr_assert_eq(mesh_vector_push(&a, 1, 2), MESH_EINVAL);
    mesh_vector_clear(&b);
    mesh_vector_push(&b, 1, 2);
    uint8_t d1[16], d2[16];
    mesh_vector_digest(&a, d1);
    mesh_vector_digest(&b, d2);
    cr_assert(memcmp(d1, d2, 16) != 0);
    mesh_vector_fini(&a);
    mesh_vector_fini(&b);
    mesh_vector_fini(&d);
    mesh_vector_fini(&p);
    mesh_vector_fini(&j);
}
