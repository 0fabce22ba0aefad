/*
 * vectors_test.c - the golden vectors in proto/vectors/: every valid op decodes to the listed
 * fields, re-encodes byte for byte and has the listed hash and author signature; every invalid
 * one fails with the listed error; bodies convert both ways exactly; the bundle opens, lists the
 * listed ops and is reproduced byte for byte by the writer.
 *
 * The vectors are data: this test only reads them. To regenerate them after a deliberate
 * format change, run the test with MESH_VECTORS_WRITE=<dir>: the `generate` test then writes
 * fresh files (and fuzz seed corpora) into <dir>, to be reviewed and copied by hand
 * (proto/vectors/README.md).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "crypto/crypto.h"
#include "model/body.h"
#include "model/bundle.h"
#include "model/hlc.h"
#include "model/op.h"
#include "model/uuid.h"

#define VEC_DIR MESH_SOURCE_DIR "/proto/vectors"

static void setup(void) { cr_assert_eq(mesh_crypto_init(), MESH_OK); }

TestSuite(vectors, .init = setup);

/* ---- Shared helpers ------------------------------------------------------------------------ */

static const struct { const char *name; int code; } CODES[] = {
    {"MESH_OK", MESH_OK},         {"MESH_EINVAL", MESH_EINVAL}, {"MESH_ECORRUPT", MESH_ECORRUPT},
    {"MESH_ELIMIT", MESH_ELIMIT}, {"MESH_EVERSION", MESH_EVERSION}, {"MESH_ESIG", MESH_ESIG},
};

static int code_of(const char *name)
{
    for (size_t i = 0; i < sizeof CODES / sizeof *CODES; i++)
        if (strcmp(CODES[i].name, name) == 0) return CODES[i].code;
    cr_assert_fail("unknown error name %s", name);
    return 1;
}

static const char *name_of(int code)
{
    for (size_t i = 0; i < sizeof CODES / sizeof *CODES; i++)
        if (CODES[i].code == code) return CODES[i].name;
    return "?";
}

static char *hex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    mesh_hex_encode(p, n, s);
    return s;
}

/* Decodes a hex string of any length; *n gets the byte count. */
static uint8_t *unhex(const char *s, size_t *n)
{
    size_t len = strlen(s);
    cr_assert_eq(len % 2, 0, "odd hex length");
    *n = len / 2;
    uint8_t *p = malloc(*n + 1);
    for (size_t i = 0; i < *n; i++) {
        char two[3] = {s[2 * i], s[2 * i + 1], 0};
        cr_assert_eq(mesh_hex_decode(two, p + i, 1), MESH_OK, "bad hex at %zu", 2 * i);
    }
    return p;
}

static void unhex_exact(const char *s, uint8_t *out, size_t n)
{
    cr_assert_eq(mesh_hex_decode(s, out, n), MESH_OK, "expected %zu bytes of hex: %s", n, s);
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    cr_assert_not_null(s, "missing string '%s'", k);
    return s;
}

static uint64_t u64str(json_t *o, const char *k) { return strtoull(str(o, k), NULL, 10); }

static json_t *load(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", VEC_DIR, name);
    json_error_t err;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    cr_assert_not_null(j, "%s: %s at line %d", path, err.text, err.line);
    return j;
}

/* ---- Reading the vectors ------------------------------------------------------------------- */

static void check_opref(json_t *j, const mesh_opref *r)
{
    uint8_t a[32];
    cr_assert_eq(r->row_version, json_integer_value(json_object_get(j, "row_version")));
    unhex_exact(str(j, "author"), a, 32);
    cr_assert(memcmp(r->author, a, 32) == 0);
}

static void check_valid_op(json_t *v)
{
    const char *name = str(v, "name");
    size_t n;
    uint8_t *bytes = unhex(str(v, "hex"), &n);
    mesh_op op;
    cr_assert_eq(mesh_op_decode(bytes, n, &op), MESH_OK, "%s: %s", name, mesh_errmsg());

    /* byte for byte */
    mesh_buf enc;
    mesh_buf_init(&enc, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_op_encode(&op, &enc), MESH_OK, "%s", name);
    cr_assert(enc.len == n && memcmp(enc.data, bytes, n) == 0, "%s: re-encoding differs", name);
    mesh_buf_fini(&enc);

    /* hash and signature */
    uint8_t h[32], want[32], sig[64];
    mesh_op_hash(bytes, n, h);
    unhex_exact(str(v, "hash"), want, 32);
    cr_assert(memcmp(h, want, 32) == 0, "%s: hash differs", name);
    unhex_exact(str(v, "signature"), sig, 64);
    cr_assert_eq(mesh_verify(op.author, MESH_DOMAIN_OP, h, 32, sig), MESH_OK, "%s: signature",
                 name);
    char sid[17];
    snprintf(sid, sizeof sid, "%016llx",
             (unsigned long long)mesh_stream_id(op.author, op.scope, op.scope_len));
    cr_assert_str_eq(sid, str(v, "stream_id"), "%s", name);

    /* fields */
    json_t *f = json_object_get(v, "op");
    cr_assert_eq(op.kind, json_integer_value(json_object_get(f, "kind")), "%s", name);
    const char *type = str(f, "type");
    cr_assert(op.type_len == strlen(type) && memcmp(op.type, type, op.type_len) == 0, "%s", name);
    char uuid[MESH_UUID_STR_LEN];
    mesh_uuid_format(op.entity, uuid);
    cr_assert_str_eq(uuid, str(f, "entity"), "%s", name);
    cr_assert_eq(op.row_version, json_integer_value(json_object_get(f, "row_version")));
    uint8_t a[32];
    unhex_exact(str(f, "author"), a, 32);
    cr_assert(memcmp(op.author, a, 32) == 0, "%s", name);
    const char *scope = str(f, "scope");
    cr_assert(op.scope_len == strlen(scope) && memcmp(op.scope, scope, op.scope_len) == 0);
    cr_assert_eq(op.seq, u64str(f, "seq"), "%s", name);
    unhex_exact(str(f, "prev"), a, 32);
    cr_assert(memcmp(op.prev, a, 32) == 0, "%s", name);
    cr_assert_eq(op.hlc, u64str(f, "hlc"), "%s", name);
    json_t *base = json_object_get(f, "base");
    cr_assert_eq(op.has_base, !json_is_null(base), "%s", name);
    if (op.has_base) check_opref(base, &op.base);
    json_t *merged = json_object_get(f, "merged");
    cr_assert_eq(op.merged_count, json_array_size(merged), "%s", name);
    for (uint32_t i = 0; i < op.merged_count; i++) check_opref(json_array_get(merged, i), &op.merged[i]);
    json_t *parents = json_object_get(f, "parents");
    cr_assert_eq(op.parents_count, json_array_size(parents), "%s", name);
    for (uint32_t i = 0; i < op.parents_count; i++) {
        mesh_uuid_format(op.parents[i], uuid);
        cr_assert_str_eq(uuid, json_string_value(json_array_get(parents, i)), "%s", name);
    }

    /* the body, both ways */
    const char *bj = str(f, "body");
    mesh_buf js, body;
    mesh_buf_init(&js, 16u * MESH_OP_BYTES_MAX);
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_body_to_json(op.body, op.body_len, &js), MESH_OK);
    cr_assert(js.len == strlen(bj) && memcmp(js.data, bj, js.len) == 0, "%s: body JSON %.*s", name,
              (int)js.len, js.data);
    cr_assert_eq(mesh_body_from_json(bj, strlen(bj), &body), MESH_OK);
    cr_assert(body.len == op.body_len && memcmp(body.data, op.body, body.len) == 0, "%s", name);
    mesh_buf_fini(&js);
    mesh_buf_fini(&body);
    free(bytes);
}

Test(vectors, ops)
{
    json_t *root = load("ops.json");
    cr_assert_eq(json_integer_value(json_object_get(root, "format")), MESH_OP_FORMAT);
    json_t *valid = json_object_get(root, "valid"), *invalid = json_object_get(root, "invalid");
    cr_assert_geq(json_array_size(valid), 5);
    cr_assert_geq(json_array_size(invalid), 10);
    size_t i;
    json_t *v;
    json_array_foreach(valid, i, v) check_valid_op(v);
    json_array_foreach(invalid, i, v)
    {
        size_t n;
        uint8_t *bytes = unhex(str(v, "hex"), &n);
        mesh_op op;
        int rc = mesh_op_decode(bytes, n, &op);
        cr_assert_eq(rc, code_of(str(v, "error")), "%s: got %s (%s)", str(v, "name"),
                     name_of(rc), mesh_errmsg());
        free(bytes);
    }
    json_decref(root);
}

Test(vectors, bodies)
{
    json_t *root = load("bodies.json");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(root, "valid"), i, v)
    {
        const char *name = str(v, "name"), *in = str(v, "json"), *out = str(v, "canonical_json");
        size_t n;
        uint8_t *want = unhex(str(v, "hex"), &n);
        mesh_buf b, js;
        mesh_buf_init(&b, MESH_OP_BYTES_MAX);
        mesh_buf_init(&js, 16u * MESH_OP_BYTES_MAX);
        cr_assert_eq(mesh_body_from_json(in, strlen(in), &b), MESH_OK, "%s: %s", name, mesh_errmsg());
        cr_assert(b.len == n && memcmp(b.data, want, n) == 0, "%s: bytes differ", name);
        cr_assert_eq(mesh_body_check(want, n), MESH_OK, "%s", name);
        cr_assert_eq(mesh_body_to_json(want, n, &js), MESH_OK, "%s", name);
        cr_assert(js.len == strlen(out) && memcmp(js.data, out, js.len) == 0, "%s: %.*s", name,
                  (int)js.len, js.data);
        mesh_buf_fini(&b);
        mesh_buf_fini(&js);
        free(want);
    }
    json_array_foreach(json_object_get(root, "invalid"), i, v)
    {
        size_t n;
        uint8_t *bytes = unhex(str(v, "hex"), &n);
        int rc = mesh_body_check(bytes, n);
        cr_assert_eq(rc, code_of(str(v, "error")), "%s: got %s", str(v, "name"), name_of(rc));
        free(bytes);
    }
    json_array_foreach(json_object_get(root, "invalid_json"), i, v)
    {
        mesh_buf b;
        mesh_buf_init(&b, MESH_OP_BYTES_MAX);
        const char *in = str(v, "json");
        int rc = mesh_body_from_json(in, strlen(in), &b);
        cr_assert_eq(rc, code_of(str(v, "error")), "%s: got %s", str(v, "name"), name_of(rc));
        mesh_buf_fini(&b);
    }
    json_decref(root);
}

static int to_buf(const uint8_t *p, size_t n, void *ctx) { return mesh_buf_append(ctx, p, n); }

Test(vectors, bundle)
{
    json_t *root = load("bundle.json");
    size_t n;
    uint8_t *file = unhex(str(root, "hex"), &n);
    mesh_bundle_reader r;
    cr_assert_eq(mesh_bundle_open(&r, file, n), MESH_OK, "%s", mesh_errmsg());
    uint8_t seed[32], pk[32];
    unhex_exact(str(root, "exporter_seed"), seed, 32);
    unhex_exact(str(root, "exporter"), pk, 32);
    mesh_identity exporter;
    mesh_identity_from_seed(&exporter, seed);
    cr_assert(memcmp(exporter.pk, pk, 32) == 0);
    cr_assert(memcmp(r.header.exporter, pk, 32) == 0);
    cr_assert_eq(r.header.created_ms, u64str(root, "created_ms"));
    json_t *hashes = json_object_get(root, "op_hashes");
    cr_assert_eq(r.header.count, json_array_size(hashes));

    /* Rewrite it from its records: the writer must give the same bytes (Ed25519 is
     * deterministic). */
    mesh_buf again;
    mesh_buf_init(&again, 1u << 24);
    mesh_bundle_writer w;
    cr_assert_eq(mesh_bundle_writer_begin(&w, &r.header, to_buf, &again), MESH_OK);
    mesh_oprec rec;
    for (size_t i = 0; i < r.header.count; i++) {
        cr_assert_eq(mesh_bundle_next(&r, &rec), MESH_OK);
        uint8_t h[32], want[32];
        mesh_op_hash(rec.op, rec.op_len, h);
        unhex_exact(json_string_value(json_array_get(hashes, i)), want, 32);
        cr_assert(memcmp(h, want, 32) == 0, "record %zu", i);
        mesh_op op;
        cr_assert_eq(mesh_op_decode(rec.op, rec.op_len, &op), MESH_OK);
        cr_assert_eq(mesh_verify(op.author, MESH_DOMAIN_OP, h, 32, rec.sig), MESH_OK);
        cr_assert_eq(mesh_bundle_writer_add(&w, &rec), MESH_OK);
    }
    cr_assert_eq(mesh_bundle_next(&r, &rec), MESH_ENOTFOUND);
    cr_assert_eq(mesh_bundle_writer_end(&w, &exporter), MESH_OK);
    cr_assert(again.len == n && memcmp(again.data, file, n) == 0, "writer output differs");
    char *trailer = hex(file + n - 64, 64);
    cr_assert_str_eq(trailer, str(root, "signature"));
    free(trailer);
    mesh_buf_fini(&again);
    mesh_identity_wipe(&exporter);
    free(file);
    json_decref(root);
}

/* ---- Generating the vectors (only with MESH_VECTORS_WRITE) ---------------------------------- */

typedef struct gen {
    const char *dir;
    mesh_identity ids[3];       /* author A, author B, exporter */
    json_t *valid, *invalid;
    mesh_buf ops[16];           /* encoded valid ops, for the bundle and the corpus */
    uint8_t sigs[16][64];
    size_t nops;
} gen;

static void seed_of(int who, uint8_t seed[32])
{
    for (int i = 0; i < 32; i++) seed[i] = (uint8_t)(32 * who + i);
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void write_json(const char *dir, const char *name, json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    size_t n = strlen(s);
    s = realloc(s, n + 2);
    s[n] = '\n';
    write_file(dir, name, s, n + 1);
    free(s);
}

static json_t *opref_json(const mesh_opref *r)
{
    char *a = hex(r->author, 32);
    json_t *j = json_pack("{s:I,s:s}", "row_version", (json_int_t)r->row_version, "author", a);
    free(a);
    return j;
}

static json_t *u64json(uint64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    return json_string(s);
}

/* Encodes, signs and records a valid op, returning its index. */
static size_t add_valid(gen *g, const char *name, const char *comment, mesh_op *op,
                        const char *body_json, const mesh_identity *author)
{
    mesh_buf body;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_body_from_json(body_json, strlen(body_json), &body), MESH_OK, "%s", name);
    op->body = body.data;
    op->body_len = body.len;
    memcpy(op->author, author->pk, 32);
    size_t k = g->nops++;
    mesh_buf *enc = &g->ops[k];
    mesh_buf_init(enc, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_op_encode(op, enc), MESH_OK, "%s: %s", name, mesh_errmsg());
    uint8_t h[32];
    mesh_op_hash(enc->data, enc->len, h);
    mesh_sign(author, MESH_DOMAIN_OP, h, 32, g->sigs[k]);

    mesh_buf js;
    mesh_buf_init(&js, 16u * MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_body_to_json(body.data, body.len, &js), MESH_OK);
    cr_assert_eq(mesh_buf_append(&js, "", 1), MESH_OK);

    char uuid[MESH_UUID_STR_LEN];
    mesh_uuid_format(op->entity, uuid);
    json_t *f = json_object();
    json_object_set_new(f, "kind", json_integer(op->kind));
    json_object_set_new(f, "type", json_stringn(op->type, op->type_len));
    json_object_set_new(f, "entity", json_string(uuid));
    json_object_set_new(f, "row_version", json_integer(op->row_version));
    char *s = hex(op->author, 32);
    json_object_set_new(f, "author", json_string(s));
    free(s);
    json_object_set_new(f, "scope", json_stringn(op->scope, op->scope_len));
    json_object_set_new(f, "seq", u64json(op->seq));
    s = hex(op->prev, 32);
    json_object_set_new(f, "prev", json_string(s));
    free(s);
    json_object_set_new(f, "hlc", u64json(op->hlc));
    json_object_set_new(f, "base", op->has_base ? opref_json(&op->base) : json_null());
    json_t *m = json_array();
    for (uint32_t i = 0; i < op->merged_count; i++) json_array_append_new(m, opref_json(&op->merged[i]));
    json_object_set_new(f, "merged", m);
    json_t *p = json_array();
    for (uint32_t i = 0; i < op->parents_count; i++) {
        mesh_uuid_format(op->parents[i], uuid);
        json_array_append_new(p, json_string(uuid));
    }
    json_object_set_new(f, "parents", p);
    json_object_set_new(f, "body", json_string((const char *)js.data));

    json_t *v = json_object();
    json_object_set_new(v, "name", json_string(name));
    json_object_set_new(v, "comment", json_string(comment));
    s = hex(enc->data, enc->len);
    json_object_set_new(v, "hex", json_string(s));
    free(s);
    s = hex(h, 32);
    json_object_set_new(v, "hash", json_string(s));
    free(s);
    s = hex(g->sigs[k], 64);
    json_object_set_new(v, "signature", json_string(s));
    free(s);
    char sid[17];
    snprintf(sid, sizeof sid, "%016llx",
             (unsigned long long)mesh_stream_id(op->author, op->scope, op->scope_len));
    json_object_set_new(v, "stream_id", json_string(sid));
    json_object_set_new(v, "op", f);
    json_array_append_new(g->valid, v);
    mesh_buf_fini(&js);
    mesh_buf_fini(&body);
    return k;
}

/* Records op `k` with bytes [at, at+n) replaced by `rep`, expecting `code`. */
static void add_invalid(gen *g, const char *name, const char *reason, size_t k, size_t at,
                        size_t n, const void *rep, size_t m, int code)
{
    const mesh_buf *src = &g->ops[k];
    size_t len = src->len - n + m;
    uint8_t *p = malloc(len + 1);
    memcpy(p, src->data, at);
    memcpy(p + at, rep, m);
    memcpy(p + at + m, src->data + at + n, src->len - at - n);
    mesh_op op;
    int rc = mesh_op_decode(p, len, &op);
    cr_assert_eq(rc, code, "%s: got %s (%s)", name, name_of(rc), mesh_errmsg());
    char *s = hex(p, len);
    json_array_append_new(g->invalid, json_pack("{s:s,s:s,s:s,s:s}", "name", name, "reason", reason,
                                                "hex", s, "error", name_of(code)));
    char file[128];
    snprintf(file, sizeof file, "corpus/op/invalid_%s", name);
    write_file(g->dir, file, p, len);
    free(s);
    free(p);
}

static void uuid_at(uint64_t ms, uint8_t tag, uint8_t out[16])
{
    uint8_t r[10];
    for (int i = 0; i < 10; i++) r[i] = (uint8_t)(tag * 17 + i);
    mesh_uuid_v7(ms, r, out);
}

static void gen_ops(gen *g)
{
    const mesh_identity *A = &g->ids[0], *B = &g->ids[1];
    const uint64_t t0 = 1718000000000ull;
    mesh_op op;
    uint8_t hh[16], ind[16];
    uuid_at(t0, 1, hh);
    uuid_at(t0 + 5, 2, ind);

    /* 1: create */
    memset(&op, 0, sizeof op);
    op.kind = MESH_OP_CREATE;
    op.type = "household";
    op.type_len = 9;
    memcpy(op.entity, hh, 16);
    op.row_version = 1;
    op.scope = "MZ/NAMPULA/ERATI/L01";
    op.scope_len = strlen(op.scope);
    op.seq = 1;
    op.hlc = MESH_HLC_MAKE(t0, 0);
    size_t c1 = add_valid(g, "create", "first op of a stream: kind 1, no base, prev all zeros", &op,
                          "{\"memberCount\":4,\"address\":{\"locality\":\"ERATI\",\"latitude\":-13.9},"
                          "\"tenantId\":\"mz\"}",
                          A);

    /* 2: update, chained to 1 */
    op.kind = MESH_OP_UPDATE;
    op.row_version = 2;
    op.seq = 2;
    mesh_op_hash(g->ops[c1].data, g->ops[c1].len, op.prev);
    op.hlc = MESH_HLC_MAKE(t0 + 60000, 0);
    op.has_base = true;
    op.base.row_version = 1;
    memcpy(op.base.author, A->pk, 32);
    size_t u2 = add_valid(g, "update", "kind 2 deriving from row_version 1; prev is the hash of op seq 1",
                          &op,
                          "{\"memberCount\":5,\"address\":{\"locality\":\"ERATI\",\"latitude\":-13.9},"
                          "\"tenantId\":\"mz\"}",
                          A);

    /* 3: delete */
    op.kind = MESH_OP_DELETE;
    op.row_version = 3;
    op.seq = 3;
    mesh_op_hash(g->ops[u2].data, g->ops[u2].len, op.prev);
    op.hlc = MESH_HLC_MAKE(t0 + 60000, 1);
    op.base.row_version = 2;
    add_valid(g, "delete", "kind 3 with an empty body; the hlc counter ticks within one ms", &op,
              "{}", A);

    /* 4: a child with two parents, by another author */
    memset(&op, 0, sizeof op);
    uint8_t hm[16];
    uuid_at(t0 + 9, 3, hm);
    op.kind = MESH_OP_CREATE;
    op.type = "household_member";
    op.type_len = 16;
    memcpy(op.entity, hm, 16);
    op.row_version = 1;
    op.scope = "MZ/NAMPULA/ERATI/L02";
    op.scope_len = strlen(op.scope);
    op.seq = 1;
    op.hlc = MESH_HLC_MAKE(t0 + 9, 0);
    op.parents_count = 2;
    memcpy(op.parents[0], hh, 16);
    memcpy(op.parents[1], ind, 16);
    size_t m1 = add_valid(g, "child_with_parents", "parents lists the entities this one points to",
                          &op,
                          "{\"householdClientReferenceId\":\"placeholder\",\"isHeadOfHousehold\":true,"
                          "\"relationship\":null}",
                          B);

    /* 5: a conflict resolution merging two heads */
    op.kind = MESH_OP_UPDATE;
    op.row_version = 3;
    op.seq = 2;
    mesh_op_hash(g->ops[m1].data, g->ops[m1].len, op.prev);
    op.hlc = MESH_HLC_MAKE(t0 + 120000, 0);
    op.has_base = true;
    op.base.row_version = 2;
    memcpy(op.base.author, B->pk, 32);
    op.merged_count = 1;
    op.merged[0].row_version = 2;
    memcpy(op.merged[0].author, A->pk, 32);
    add_valid(g, "resolve_conflict", "base is one head, merged lists the other heads it resolves",
              &op, "{\"isHeadOfHousehold\":false,\"note\":\"résolu ✓\"}", B);

    /* 6: every field at its maximum */
    memset(&op, 0, sizeof op);
    char type[MESH_TYPE_BYTES_MAX], scope[MESH_SCOPE_BYTES_MAX];
    memset(type, 'x', sizeof type);
    type[0] = 'm';
    for (size_t i = 0; i < sizeof scope; i++) scope[i] = (char)(i % 9 == 8 ? '/' : 'a' + i % 9);
    op.kind = MESH_OP_KIND_MAX;
    op.type = type;
    op.type_len = sizeof type;
    uuid_at(t0, 4, op.entity);
    op.row_version = UINT32_MAX;
    op.scope = scope;
    op.scope_len = sizeof scope;
    op.seq = (UINT64_C(1) << 63) - 1;
    memset(op.prev, 0xab, 32);
    op.hlc = UINT64_MAX;
    op.has_base = true;
    op.base.row_version = UINT32_MAX - 1;
    memcpy(op.base.author, B->pk, 32);
    op.merged_count = MESH_MERGED_MAX;
    for (uint32_t i = 0; i < MESH_MERGED_MAX; i++) {
        op.merged[i].row_version = 1u << (i * 2);
        memset(op.merged[i].author, (int)i, 32);
    }
    op.parents_count = MESH_PARENTS_MAX;
    for (uint32_t i = 0; i < MESH_PARENTS_MAX; i++) uuid_at(t0 + i, (uint8_t)(10 + i), op.parents[i]);
    add_valid(g, "maxima",
              "kind 15, 32-byte type (str8), 64-byte scope, row_version 2^32-1, seq 2^63-1, hlc "
              "2^64-1, 16 merged, 8 parents; integers of every width in the body",
              &op,
              "{\"i\":[0,127,128,255,256,65535,65536,4294967295,4294967296,9223372036854775807,"
              "-1,-32,-33,-128,-129,-32768,-32769,-2147483648,-2147483649,-9223372036854775808],"
              "\"f\":[0.5,-0.0,1.0,1e300,2.2250738585072014e-308,0.1],\"s\":\"" 
              "0123456789012345678901234567890123456789\",\"e\":\"\",\"n\":[null,true,false,[],{}]}",
              A);

    /* 7: a system kind */
    memset(&op, 0, sizeof op);
    op.kind = 9;
    op.type = "_roster";
    op.type_len = 7;
    uuid_at(t0, 5, op.entity);
    op.row_version = 2;
    op.scope = "_system";
    op.scope_len = 7;
    op.seq = 1;
    op.hlc = 1;
    op.has_base = true;
    op.base.row_version = 1;
    memcpy(op.base.author, A->pk, 32);
    add_valid(g, "system_kind", "a kind above 3 and a '_' type: reserved for system streams", &op,
              "{\"members\":[]}", A);

    /* Invalid ops, each a small edit of a valid one. Offsets: [0] array header, [1] format,
     * [2] kind, [3..] type. */
    const uint8_t trail[] = {0xc0};
    add_invalid(g, "trailing_byte", "a byte after the body", c1, g->ops[c1].len, 0, trail, 1,
                MESH_ECORRUPT);
    add_invalid(g, "kind_uint8", "kind 1 written as uint8 (0xcc 0x01): not the shortest form",
                c1, 2, 1, (uint8_t[]){0xcc, 0x01}, 2, MESH_ECORRUPT);
    add_invalid(g, "format_2", "format 2 is unknown to a format 1 reader", c1, 1, 1,
                (uint8_t[]){0x02}, 1, MESH_EVERSION);
    add_invalid(g, "array_13", "13 elements instead of 14", c1, 0, 1, (uint8_t[]){0x9d}, 1,
                MESH_ECORRUPT);
    add_invalid(g, "array16_header", "the top array as array16: not the shortest form", c1, 0, 1,
                (uint8_t[]){0xdc, 0x00, 0x0e}, 3, MESH_ECORRUPT);
    add_invalid(g, "type_str8", "type 'household' as str8: not the shortest form", c1, 3, 1,
                (uint8_t[]){0xd9, 0x09}, 2, MESH_ECORRUPT);
    add_invalid(g, "type_grammar", "type 'Household' breaks the type grammar", c1, 4, 1, "H", 1,
                MESH_ECORRUPT);
    add_invalid(g, "create_with_base", "kind 1 with a base", u2, 2, 1, (uint8_t[]){0x01}, 1,
                MESH_ECORRUPT);
    add_invalid(g, "update_without_base", "kind 2 with a nil base", c1, 2, 1, (uint8_t[]){0x02}, 1,
                MESH_ECORRUPT);
    /* create: [3] 0xa9 type(9) [13] c4 10 entity(16) [31] rv [32] c4 20 author(32) [66] scope */
    add_invalid(g, "row_version_0", "row_version 0", c1, 31, 1, (uint8_t[]){0x00}, 1, MESH_ECORRUPT);
    add_invalid(g, "entity_15_bytes", "entity must be bin of 16 bytes", c1, 13, 3,
                (uint8_t[]){0xc4, 0x0f}, 2, MESH_ECORRUPT);
    /* scope "MZ/NAMPULA/ERATI/L01" at [66] (0xb4) [67..86]; seq at [87]; prev [88] c4 20 */
    add_invalid(g, "scope_empty_segment", "scope 'MZ//AMPULA/...' has an empty segment", c1, 70, 1,
                "/", 1, MESH_ECORRUPT);
    add_invalid(g, "seq_1_with_prev", "seq 1 must have an all-zero prev", c1, 90, 1,
                (uint8_t[]){0x01}, 1, MESH_ECORRUPT);
    add_invalid(g, "seq_0", "seq 0", c1, 87, 1, (uint8_t[]){0x00}, 1, MESH_ECORRUPT);
    /* update: base [2 rv, author] follows hlc; rv at [31] is 2: make it 1 = base */
    add_invalid(g, "base_not_below", "base row_version 1 is not below row_version 1", u2, 31, 1,
                (uint8_t[]){0x01}, 1, MESH_ECORRUPT);
    const mesh_buf *o = &g->ops[c1];
    size_t bstart = 0;
    {
        mesh_op d;
        cr_assert_eq(mesh_op_decode(o->data, o->len, &d), MESH_OK);
        bstart = (size_t)(d.body - o->data);
    }
    static const uint8_t unsorted[] = {0x82, 0xa1, 'b', 0x01, 0xa1, 'a', 0x01};
    add_invalid(g, "body_unsorted_keys", "body map keys out of order", c1, bstart,
                o->len - bstart, unsorted, sizeof unsorted, MESH_ECORRUPT);
    static const uint8_t f32[] = {0x81, 0xa1, 'a', 0xca, 0x3f, 0xc0, 0x00, 0x00};
    add_invalid(g, "body_float32", "a float32 in the body", c1, bstart, o->len - bstart, f32,
                sizeof f32, MESH_ECORRUPT);
    static const uint8_t arr[] = {0x91, 0x01};
    add_invalid(g, "body_not_map", "the body is an array", c1, bstart, o->len - bstart, arr,
                sizeof arr, MESH_ECORRUPT);
    add_invalid(g, "merged_17", "17 merged entries (limit 16); the count is checked first", c1,
                bstart - 2, 2, (uint8_t[]){0xdc, 0x00, 0x11, 0x90}, 4, MESH_ELIMIT);
}

typedef struct bodyvec {
    const char *name, *json;
} bodyvec;

static void gen_bodies(gen *g, json_t *root)
{
    static const bodyvec valid[] = {
        {"empty", "{}"},
        {"key_order", "{\"b\":1,\"aa\":2,\"a\":3,\"\":4,\"B\":5,\"\\u00e9\":6}"},
        {"integers", "{\"v\":[0,127,128,255,256,65535,65536,4294967295,4294967296,-1,-32,-33,-128,"
                     "-129,-32768,-32769,-2147483648,-2147483649,-9223372036854775808]}"},
        {"reals", "{\"v\":[1.5,1.0,-0.0,1e2,0.1,1e300,5e-324,123456.789]}"},
        {"strings", "{\"s31\":\"0123456789012345678901234567890\",\"s32\":"
                    "\"01234567890123456789012345678901\",\"esc\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\","
                    "\"utf8\":\"\\u00e9\\u4e2d\\ud83d\\ude00\"}"},
        {"nesting", "{\"a\":{\"b\":{\"c\":[[],{},[null,true,false]]}}}"},
        {"whitespace", " { \"z\" :\n 1 ,\t\"y\" : [ ] } "},
    };
    json_t *va = json_object_get(root, "valid");
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        mesh_buf b, js;
        mesh_buf_init(&b, MESH_OP_BYTES_MAX);
        mesh_buf_init(&js, MESH_OP_BYTES_MAX);
        cr_assert_eq(mesh_body_from_json(valid[i].json, strlen(valid[i].json), &b), MESH_OK,
                     "%s", valid[i].name);
        cr_assert_eq(mesh_body_to_json(b.data, b.len, &js), MESH_OK);
        mesh_buf_append(&js, "", 1);
        char *s = hex(b.data, b.len);
        json_array_append_new(va, json_pack("{s:s,s:s,s:s,s:s}", "name", valid[i].name, "json",
                                            valid[i].json, "hex", s, "canonical_json",
                                            (const char *)js.data));
        char file[128];
        snprintf(file, sizeof file, "corpus/body/valid_%s", valid[i].name);
        write_file(g->dir, file, b.data, b.len);
        snprintf(file, sizeof file, "corpus/json/valid_%s", valid[i].name);
        write_file(g->dir, file, valid[i].json, strlen(valid[i].json));
        free(s);
        mesh_buf_fini(&b);
        mesh_buf_fini(&js);
    }

    static const struct { const char *name, *hex, *error; } invalid[] = {
        {"not_a_map", "90", "MESH_ECORRUPT"},
        {"empty_input", "", "MESH_ECORRUPT"},
        {"trailing_bytes", "8080", "MESH_ECORRUPT"},
        {"truncated", "81a161", "MESH_ECORRUPT"},
        {"unsorted_keys", "82a16201a16101", "MESH_ECORRUPT"},
        {"duplicate_keys", "82a16101a16101", "MESH_ECORRUPT"},
        {"longer_key_first", "82a2616101a16101", "MESH_ECORRUPT"},
        {"key_not_string", "810101", "MESH_ECORRUPT"},
        {"uint8_small", "81a161cc05", "MESH_ECORRUPT"},
        {"int8_positive", "81a161d005", "MESH_ECORRUPT"},
        {"int8_fixable", "81a161d0ff", "MESH_ECORRUPT"},
        {"uint64_above_int64", "81a161cf8000000000000000", "MESH_ECORRUPT"},
        {"float32", "81a161ca3f800000", "MESH_ECORRUPT"},
        {"nan", "81a161cb7ff8000000000000", "MESH_ECORRUPT"},
        {"infinity", "81a161cb7ff0000000000000", "MESH_ECORRUPT"},
        {"bin", "81a161c40100", "MESH_ECORRUPT"},
        {"ext", "81a161d40100", "MESH_ECORRUPT"},
        {"str8_short", "81a161d90178", "MESH_ECORRUPT"},
        {"invalid_utf8", "81a161a1ff", "MESH_ECORRUPT"},
        {"nul_in_string", "81a161a100", "MESH_ECORRUPT"},
        {"surrogate", "81a161a3eda080", "MESH_ECORRUPT"},
        {"overlong", "81a161a2c080", "MESH_ECORRUPT"},
        {"array16_small", "81a161dc0000", "MESH_ECORRUPT"},
        {"items_over_limit", "81a161dd0001000100", "MESH_ELIMIT"},
    };
    json_t *ia = json_object_get(root, "invalid");
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        size_t n;
        uint8_t *p = unhex(invalid[i].hex, &n);
        cr_assert_eq(mesh_body_check(p, n), code_of(invalid[i].error), "%s", invalid[i].name);
        json_array_append_new(ia, json_pack("{s:s,s:s,s:s}", "name", invalid[i].name, "hex",
                                            invalid[i].hex, "error", invalid[i].error));
        char file[128];
        snprintf(file, sizeof file, "corpus/body/invalid_%s", invalid[i].name);
        write_file(g->dir, file, p, n);
        free(p);
    }

    static const struct { const char *name, *json, *error; } invalid_json[] = {
        {"duplicate_key", "{\"a\":1,\"a\":2}", "MESH_EINVAL"},
        {"array_top", "[1,2]", "MESH_EINVAL"},
        {"trailing_text", "{} x", "MESH_EINVAL"},
        {"nul_escape", "{\"a\":\"\\u0000\"}", "MESH_EINVAL"},
        {"lone_surrogate", "{\"a\":\"\\ud800\"}", "MESH_EINVAL"},
        {"integer_overflow", "{\"a\":9223372036854775808}", "MESH_EINVAL"},
        {"real_overflow", "{\"a\":1e400}", "MESH_EINVAL"},
        {"too_deep", "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
         "MESH_ELIMIT"},
    };
    json_t *ja = json_object_get(root, "invalid_json");
    for (size_t i = 0; i < sizeof invalid_json / sizeof *invalid_json; i++) {
        mesh_buf b;
        mesh_buf_init(&b, MESH_OP_BYTES_MAX);
        int rc = mesh_body_from_json(invalid_json[i].json, strlen(invalid_json[i].json), &b);
        cr_assert_eq(rc, code_of(invalid_json[i].error), "%s: %s", invalid_json[i].name,
                     mesh_errmsg());
        json_array_append_new(ja, json_pack("{s:s,s:s,s:s}", "name", invalid_json[i].name, "json",
                                            invalid_json[i].json, "error", invalid_json[i].error));
        char file[128];
        snprintf(file, sizeof file, "corpus/json/invalid_%s", invalid_json[i].name);
        write_file(g->dir, file, invalid_json[i].json, strlen(invalid_json[i].json));
        mesh_buf_fini(&b);
    }
}

static void gen_bundle(gen *g)
{
    mesh_bundle_header h = {.created_ms = 1718000300000ull, .count = g->nops};
    memcpy(h.exporter, g->ids[2].pk, 32);
    mesh_buf file;
    mesh_buf_init(&file, 1u << 24);
    mesh_bundle_writer w;
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_buf, &file), MESH_OK);
    json_t *hashes = json_array();
    for (size_t i = 0; i < g->nops; i++) {
        mesh_oprec rec = {g->ops[i].data, g->ops[i].len, g->sigs[i]};
        cr_assert_eq(mesh_bundle_writer_add(&w, &rec), MESH_OK);
        uint8_t hh[32];
        mesh_op_hash(g->ops[i].data, g->ops[i].len, hh);
        char *s = hex(hh, 32);
        json_array_append_new(hashes, json_string(s));
        free(s);
    }
    cr_assert_eq(mesh_bundle_writer_end(&w, &g->ids[2]), MESH_OK);
    uint8_t seed[32];
    seed_of(2, seed);
    char *sh = hex(seed, 32), *pk = hex(g->ids[2].pk, 32), *fh = hex(file.data, file.len),
         *sig = hex(file.data + file.len - 64, 64);
    json_t *root = json_pack("{s:i,s:s,s:s,s:s,s:o,s:o,s:s,s:s}", "format", MESH_BUNDLE_FORMAT,
                             "comment",
                             "the valid ops of ops.json in order, exported by the identity with "
                             "exporter_seed; signature is the trailer: the exporter's Ed25519 "
                             "signature of BLAKE2b-256('meshsync/bundle/v1' || 0x00 || "
                             "BLAKE2b-256(every byte before the trailer))",
                             "exporter_seed", sh, "exporter", pk, "created_ms",
                             u64json(h.created_ms), "op_hashes", hashes, "signature", sig, "hex", fh);
    write_json(g->dir, "bundle.json", root);
    write_file(g->dir, "corpus/bundle/valid_all_vectors", file.data, file.len);
    /* small extras for the corpus: an empty bundle, and a one-op bundle cut short */
    mesh_buf_reset(&file);
    h.count = 0;
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_buf, &file), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_end(&w, &g->ids[2]), MESH_OK);
    write_file(g->dir, "corpus/bundle/valid_empty", file.data, file.len);
    mesh_buf_reset(&file);
    h.count = 1;
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_buf, &file), MESH_OK);
    mesh_oprec rec = {g->ops[0].data, g->ops[0].len, g->sigs[0]};
    cr_assert_eq(mesh_bundle_writer_add(&w, &rec), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_end(&w, &g->ids[2]), MESH_OK);
    write_file(g->dir, "corpus/bundle/valid_one", file.data, file.len);
    write_file(g->dir, "corpus/bundle/invalid_truncated", file.data, file.len - 10);
    file.data[file.len - 1] ^= 1;
    write_file(g->dir, "corpus/bundle/invalid_bad_signature", file.data, file.len);
    write_file(g->dir, "corpus/bundle/invalid_not_a_bundle", "MESHBNDX\x01", 9);
    free(sh);
    free(pk);
    free(fh);
    free(sig);
    json_decref(root);
    mesh_buf_fini(&file);
}

Test(vectors, generate)
{
    const char *dir = getenv("MESH_VECTORS_WRITE");
    if (dir == NULL || *dir == '\0') cr_skip_test("set MESH_VECTORS_WRITE=<dir> to regenerate");
    gen g = {.dir = dir};
    char path[2048];
    static const char *const sub[] = {"corpus", "corpus/op", "corpus/body", "corpus/json",
                                      "corpus/bundle"};
    mkdir(dir, 0755);
    for (size_t i = 0; i < sizeof sub / sizeof *sub; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, sub[i]);
        mkdir(path, 0755);
    }
    for (int i = 0; i < 3; i++) {
        uint8_t seed[32];
        seed_of(i, seed);
        mesh_identity_from_seed(&g.ids[i], seed);
    }
    g.valid = json_array();
    g.invalid = json_array();
    gen_ops(&g);
    json_t *ids = json_array();
    for (int i = 0; i < 2; i++) {
        uint8_t seed[32];
        seed_of(i, seed);
        char *s = hex(seed, 32), *p = hex(g.ids[i].pk, 32);
        json_array_append_new(ids, json_pack("{s:s,s:s}", "seed", s, "public_key", p));
        free(s);
        free(p);
    }
    json_t *ops = json_pack("{s:i,s:s,s:s,s:o,s:o,s:o}", "format", MESH_OP_FORMAT, "comment",
                            "Golden op vectors (proto/PROTOCOL.md, Op encoding). hex is the op; hash "
                            "is BLAKE2b-256 of it; signature is the author's Ed25519 signature of "
                            "BLAKE2b-256('meshsync/op/v1' || 0x00 || hash); stream_id is the first 8 bytes of "
                            "BLAKE2b-256(author || scope); seq and hlc are decimal strings because "
                            "they may exceed 2^53.",
                            "signature_domain", MESH_DOMAIN_OP, "identities", ids, "valid", g.valid,
                            "invalid", g.invalid);
    write_json(dir, "ops.json", ops);
    for (size_t i = 0; i < g.nops; i++) {
        char file[64];
        snprintf(file, sizeof file, "corpus/op/valid_%zu", i);
        write_file(dir, file, g.ops[i].data, g.ops[i].len);
    }

    json_t *bodies = json_pack("{s:s,s:[],s:[],s:[]}", "comment",
                               "Golden body vectors (proto/PROTOCOL.md, Body). valid: json converts "
                               "to hex, and hex prints as canonical_json. invalid: hex fails "
                               "mesh_body_check with error. invalid_json: json fails "
                               "mesh_body_from_json with error.",
                               "valid", "invalid", "invalid_json");
    gen_bodies(&g, bodies);
    write_json(dir, "bodies.json", bodies);
    gen_bundle(&g);

    json_decref(ops);
    json_decref(bodies);
    for (size_t i = 0; i < g.nops; i++) mesh_buf_fini(&g.ops[i]);
    for (int i = 0; i < 3; i++) mesh_identity_wipe(&g.ids[i]);
}
