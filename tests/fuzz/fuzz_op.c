/*
 * fuzz_op.c - mesh_op_decode on arbitrary bytes. Whatever it accepts must re-encode to exactly
 * the input (the encoding is canonical) and hash without trouble. mesh_op_peek runs on every
 * input too, and must agree with the full decoder on every op the decoder accepts.
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/crypto.h"
#include "model/op.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) ready = mesh_crypto_init() == MESH_OK;
    mesh_op op, head;
    int peeked = mesh_op_peek(data, size, &head);
    if (mesh_op_decode(data, size, &op) != MESH_OK) return 0;
    if (peeked != MESH_OK || head.seq != op.seq || head.scope_len != op.scope_len ||
        memcmp(head.author, op.author, MESH_KEY_BYTES) != 0 ||
        memcmp(head.scope, op.scope, op.scope_len) != 0) {
        fprintf(stderr, "mesh_op_peek disagrees with mesh_op_decode\n");
        abort();
    }
    mesh_buf out;
    mesh_buf_init(&out, MESH_OP_BYTES_MAX);
    int rc = mesh_op_encode(&op, &out);
    if (rc != MESH_OK || out.len != size || memcmp(out.data, data, size) != 0) {
        fprintf(stderr, "decoded op does not re-encode to its input: rc %d (%s), %zu vs %zu bytes\n",
                rc, mesh_errmsg(), out.len, size);
        abort();
    }
    uint8_t h[MESH_HASH_BYTES];
    mesh_op_hash(data, size, h);
    (void)mesh_stream_id(op.author, op.scope, op.scope_len);
    mesh_buf_fini(&out);
    return 0;
}
