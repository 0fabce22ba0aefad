/*
 * fuzz_bundle.c - mesh_bundle_open on arbitrary bytes, then every record through
 * mesh_bundle_next and mesh_op_decode. Past the signature check only well-signed inputs get
 * through, so the seed corpus holds signed bundles for the fuzzer to reach the record walk.
 */
#include <stdlib.h>

#include "model/bundle.h"
#include "model/op.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) ready = mesh_crypto_init() == MESH_OK;
    mesh_bundle_reader r;
    if (mesh_bundle_open(&r, data, size) != MESH_OK) return 0;
    mesh_oprec rec;
    uint64_t n = 0;
    while (mesh_bundle_next(&r, &rec) == MESH_OK) {
        mesh_op op;
        (void)mesh_op_decode(rec.op, rec.op_len, &op);
        n++;
    }
    if (n != r.header.count) abort();
    return 0;
}
