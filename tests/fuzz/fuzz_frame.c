/*
 * fuzz_frame.c - mesh_frame_decode on arbitrary bytes. Whatever it accepts at a version this
 * build speaks must re-encode to exactly the input (the frame encoding is canonical), and its
 * entries or records must iterate to the decoded count.
 */
#include <stdio.h>
#include <stdlib.h>

#include "sync/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mesh_frame f;
    if (mesh_frame_decode(data, size, &f) != MESH_OK) return 0;
    mesh_frame_iter it;
    mesh_frame_iter_init(&it, &f);
    size_t n = 0;
    if (f.type == MESH_FRAME_OPS) {
        mesh_oprec rec;
        while (mesh_frame_next_record(&it, &rec)) n++;
    } else {
        uint64_t sid, seq;
        while (mesh_frame_next_entry(&it, &sid, &seq)) n++;
    }
    if (n != f.nitems) {
        fprintf(stderr, "iterated %zu items of %zu\n", n, f.nitems);
        abort();
    }
    /* A newer peer's HELLO, MORE or ERROR may carry elements and flags we skip. */
    if (f.version > MESH_PROTO_VERSION_MAX) return 0;
    mesh_buf out;
    mesh_buf_init(&out, MESH_FRAME_BYTES_MAX);
    int rc = mesh_frame_encode(&f, &out);
    if (rc != MESH_OK || out.len != size || memcmp(out.data, data, size) != 0) {
        fprintf(stderr, "decoded frame does not re-encode to its input: rc %d, %zu vs %zu bytes\n",
                rc, out.len, size);
        abort();
    }
    mesh_buf_fini(&out);
    return 0;
}
