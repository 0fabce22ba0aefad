/*
 * fuzz_json.c - mesh_body_from_json on arbitrary text. What it accepts must be a canonical body
 * that converts back to JSON and then to the very same bytes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model/body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, int rc)
{
    fprintf(stderr, "%s: rc %d (%s)\n", what, rc, mesh_errmsg());
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mesh_buf body, json, back;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    if (mesh_body_from_json((const char *)data, size, &body) != MESH_OK) {
        if (body.len != 0) fail("failed conversion left output behind", 0);
        mesh_buf_fini(&body);
        return 0;
    }
    int rc = mesh_body_check(body.data, body.len);
    if (rc != MESH_OK) fail("from_json produced a non-canonical body", rc);
    mesh_buf_init(&json, 16u * MESH_OP_BYTES_MAX);
    mesh_buf_init(&back, MESH_OP_BYTES_MAX);
    if ((rc = mesh_body_to_json(body.data, body.len, &json)) != MESH_OK) fail("to_json", rc);
    if ((rc = mesh_body_from_json((const char *)json.data, json.len, &back)) != MESH_OK)
        fail("from_json of to_json output", rc);
    if (back.len != body.len || memcmp(back.data, body.data, body.len) != 0)
        fail("JSON round trip differs", 0);
    mesh_buf_fini(&body);
    mesh_buf_fini(&json);
    mesh_buf_fini(&back);
    return 0;
}
