/*
 * fuzz_state.c - the store's own records read back from disk: an entity's state record
 * (mesh_state_decode) and a stream index chunk (mesh_sops_count, mesh_sops_log_key). A state
 * record that decodes must encode and decode again to the same state; a chunk that validates
 * must yield a log key for each of its entries.
 */
#include <stdio.h>
#include <stdlib.h>

#include "store/store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
    fprintf(stderr, "%s (%s)\n", what, mesh_errmsg());
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t entity[16] = {0x01, 0x02, 0x03};
    mesh_state st, again;
    if (mesh_state_decode(data, size, entity, &st) == MESH_OK) {
        uint8_t buf[MESH_STATE_BYTES_MAX];
        size_t len;
        if (mesh_state_encode(&st, buf, sizeof buf, &len) != MESH_OK) fail("encode");
        if (mesh_state_decode(buf, len, entity, &again) != MESH_OK) fail("decode of encode");
        if (memcmp(&st, &again, sizeof st) != 0) fail("state round trip differs");
    }

    /* The same bytes as a stream index record: a 16-byte key, then the value. */
    if (size >= 16) {
        MDB_val k = {.mv_size = 16, .mv_data = (void *)data};
        MDB_val v = {.mv_size = size - 16, .mv_data = (void *)(data + 16)};
        size_t n = mesh_sops_count(&k, &v);
        if (n > MESH_SOPS_CHUNK_OPS) fail("chunk count over the limit");
        static const uint8_t author[MESH_KEY_BYTES] = {0xaa};
        uint8_t key[MESH_STORE_LOG_KEY_BYTES];
        for (size_t i = 0; i < n; i++) mesh_sops_log_key(&v, i, author, key);
    }
    return 0;
}
