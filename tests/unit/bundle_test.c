/*
 * bundle_test.c - the export file: writing through the flush callback, reading back, and the
 * reader's refusal of every truncation, edit and trailing byte.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "model/bundle.h"

static mesh_identity exporter;

static void setup(void)
{
    cr_assert_eq(mesh_crypto_init(), MESH_OK);
    uint8_t seed[32];
    memset(seed, 0x42, sizeof seed);
    mesh_identity_from_seed(&exporter, seed);
}

TestSuite(bundle, .init = setup);

typedef struct file {
    mesh_buf data;
    int flushes;
    int fail_at;  /* make the n-th flush fail (1-based), 0 for never */
} file;

static int to_file(const uint8_t *p, size_t n, void *ctx)
{
    file *f = ctx;
    if (++f->flushes == f->fail_at) return MESH_EIO;
    return mesh_buf_append(&f->data, p, n);
}

/* Writes `count` records; record i has an op of `size(i)` bytes filled with i and a signature
 * filled with ~i. */
static void write_bundle(file *f, uint64_t count, size_t op_bytes)
{
    mesh_buf_init(&f->data, 1u << 30);
    f->flushes = 0;
    mesh_bundle_header h = {.created_ms = 1700000000000ull, .count = count};
    memcpy(h.exporter, exporter.pk, 32);
    mesh_bundle_writer w;
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_file, f), MESH_OK);
    uint8_t *op = malloc(op_bytes);
    uint8_t sig[64];
    for (uint64_t i = 0; i < count; i++) {
        memset(op, (int)i, op_bytes);
        memset(sig, (int)~i, 64);
        mesh_oprec rec = {op, op_bytes, sig};
        if (mesh_bundle_writer_add(&w, &rec) != MESH_OK)
            cr_assert_fail("adding record %llu: %s", (unsigned long long)i, mesh_errmsg());
    }
    free(op);
    cr_assert_eq(mesh_bundle_writer_end(&w, &exporter), MESH_OK, "%s", mesh_errmsg());
}

static void read_back(const file *f, uint64_t count, size_t op_bytes)
{
    mesh_bundle_reader r;
    cr_assert_eq(mesh_bundle_open(&r, f->data.data, f->data.len), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(r.header.count, count);
    cr_assert_eq(r.header.created_ms, 1700000000000ull);
    cr_assert(memcmp(r.header.exporter, exporter.pk, 32) == 0);
    mesh_oprec rec;
    /* Plain comparisons in loops: a Criterion assertion costs an IPC message under
     * --full-stats. */
    for (uint64_t i = 0; i < count; i++) {
        if (mesh_bundle_next(&r, &rec) != MESH_OK || rec.op_len != op_bytes ||
            rec.op[0] != (uint8_t)i || rec.op[op_bytes - 1] != (uint8_t)i ||
            rec.sig[63] != (uint8_t)~i)
            cr_assert_fail("record %llu differs", (unsigned long long)i);
    }
    cr_assert_eq(mesh_bundle_next(&r, &rec), MESH_ENOTFOUND);
    cr_assert_eq(mesh_bundle_next(&r, &rec), MESH_ENOTFOUND);
}

Test(bundle, round_trip)
{
    file f = {0};
    write_bundle(&f, 3, 100);
    cr_assert(memcmp(f.data.data, "MESHBNDL\x01\x93\xc4\x20", 12) == 0);
    read_back(&f, 3, 100);
    mesh_buf_fini(&f.data);
}

Test(bundle, empty)
{
    file f = {0};
    write_bundle(&f, 0, 1);
    read_back(&f, 0, 1);
    mesh_buf_fini(&f.data);
}

Test(bundle, large_flushes_in_chunks)
{
    file f = {0};
    write_bundle(&f, 40, MESH_OP_BYTES_MAX);  /* ~10 MiB */
    cr_assert_gt(f.flushes, 5);
    read_back(&f, 40, MESH_OP_BYTES_MAX);
    mesh_buf_fini(&f.data);
}

Test(bundle, many_small)
{
    file f = {0};
    write_bundle(&f, 20000, 150);
    read_back(&f, 20000, 150);
    mesh_buf_fini(&f.data);
}

Test(bundle, every_truncation_and_flip_is_refused)
{
    file f = {0};
    write_bundle(&f, 3, 40);
    mesh_bundle_reader r;
    for (size_t n = 0; n < f.data.len; n++)
        if (mesh_bundle_open(&r, f.data.data, n) == MESH_OK) cr_assert_fail("prefix %zu", n);
    uint8_t *copy = malloc(f.data.len);
    for (size_t i = 0; i < f.data.len; i++) {
        memcpy(copy, f.data.data, f.data.len);
        copy[i] ^= 0x01;
        if (mesh_bundle_open(&r, copy, f.data.len) == MESH_OK)
            cr_assert_fail("flipped byte %zu", i);
    }
    /* a flip inside an op's bytes keeps the structure: only the signature catches it */
    memcpy(copy, f.data.data, f.data.len);
    copy[f.data.len - 66 - 64 - 2 - 5] ^= 0x80;
    cr_assert_eq(mesh_bundle_open(&r, copy, f.data.len), MESH_ESIG);
    cr_assert(strstr(mesh_errmsg(), "exporter") != NULL, "%s", mesh_errmsg());
    free(copy);
    mesh_buf_fini(&f.data);
}

Test(bundle, trailing_garbage_and_versions)
{
    file f = {0};
    write_bundle(&f, 2, 10);
    mesh_buf_append(&f.data, "x", 1);
    mesh_bundle_reader r;
    cr_assert_eq(mesh_bundle_open(&r, f.data.data, f.data.len), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "garbage") != NULL, "%s", mesh_errmsg());
    f.data.len--;
    f.data.data[8] = 2;
    cr_assert_eq(mesh_bundle_open(&r, f.data.data, f.data.len), MESH_EVERSION);
    f.data.data[0] = 'X';
    cr_assert_eq(mesh_bundle_open(&r, f.data.data, f.data.len), MESH_ECORRUPT);
    cr_assert_eq(mesh_bundle_open(&r, NULL, 0), MESH_ECORRUPT);
    mesh_buf_fini(&f.data);
}

Test(bundle, wrong_exporter_key)
{
    file f = {0};
    write_bundle(&f, 1, 10);
    mesh_identity other;
    uint8_t seed[32] = {1};
    mesh_identity_from_seed(&other, seed);
    memcpy(f.data.data + 12, other.pk, 32);
    mesh_bundle_reader r;
    cr_assert_eq(mesh_bundle_open(&r, f.data.data, f.data.len), MESH_ESIG);
    mesh_buf_fini(&f.data);
}

Test(bundle, count_limits)
{
    /* A header declaring more ops than the limit, with a valid-looking layout. */
    uint8_t hdr[64] = "MESHBNDL\x01\x93\xc4\x20";
    size_t n = 12 + 32;
    hdr[n++] = 0x00;                    /* created_ms */
    hdr[n++] = 0xce;                    /* count: uint32 */
    mesh_be32_put(hdr + n, MESH_BUNDLE_OPS_MAX + 1);
    n += 4;
    mesh_bundle_reader r;
    cr_assert_eq(mesh_bundle_open(&r, hdr, n), MESH_ELIMIT);
    /* a count the file cannot hold */
    mesh_be32_put(hdr + n - 4, 100000);
    cr_assert_eq(mesh_bundle_open(&r, hdr, n), MESH_ECORRUPT);
    /* non-shortest count */
    hdr[n - 5] = 0xcc;
    hdr[n - 4] = 0x01;
    cr_assert_eq(mesh_bundle_open(&r, hdr, n - 3), MESH_ECORRUPT);

    mesh_bundle_header h = {.count = MESH_BUNDLE_OPS_MAX + 1};
    mesh_bundle_writer w;
    file f = {0};
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_file, &f), MESH_ELIMIT);
}

Test(bundle, writer_misuse)
{
    file f = {0};
    mesh_buf_init(&f.data, 1u << 20);
    mesh_bundle_header h = {.count = 1};
    mesh_bundle_writer w;
    uint8_t op[4] = {1, 2, 3, 4}, sig[64] = {0};
    mesh_oprec rec = {op, 4, sig};
    /* too few */
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_file, &f), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_end(&w, &exporter), MESH_EINVAL);
    /* too many */
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_file, &f), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_add(&w, &rec), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_add(&w, &rec), MESH_EINVAL);
    mesh_bundle_writer_abort(&w);
    /* oversized and empty ops */
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_file, &f), MESH_OK);
    mesh_oprec big = {op, MESH_OP_BYTES_MAX + 1, sig};
    cr_assert_eq(mesh_bundle_writer_add(&w, &big), MESH_ELIMIT);
    mesh_oprec empty = {op, 0, sig};
    cr_assert_eq(mesh_bundle_writer_add(&w, &empty), MESH_EINVAL);
    mesh_bundle_writer_abort(&w);
    /* a failing flush is reported */
    mesh_buf_reset(&f.data);
    f.flushes = 0;
    f.fail_at = 1;
    cr_assert_eq(mesh_bundle_writer_begin(&w, &h, to_file, &f), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_add(&w, &rec), MESH_OK);
    cr_assert_eq(mesh_bundle_writer_end(&w, &exporter), MESH_EIO);
    mesh_buf_fini(&f.data);
}
