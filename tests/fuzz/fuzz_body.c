/*
 * fuzz_body.c - mesh_body_check on arbitrary bytes. A body it accepts must convert to JSON and
 * back to identical bytes (the canonical form is chosen so this holds for every body, floats
 * included), and the lookups and the editor must agree with it.
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
    /* The lookups walk only part of a body: they must never crash, whatever the verdict. */
    const char *s;
    size_t n;
    int64_t v;
    (void)mesh_body_get_str(data, size, "a", &s, &n);
    (void)mesh_body_get_int(data, size, "b", &v);

    if (mesh_body_check(data, size) != MESH_OK) return 0;

    mesh_buf json, back, edited;
    mesh_buf_init(&json, 16u * MESH_OP_BYTES_MAX);
    mesh_buf_init(&back, MESH_OP_BYTES_MAX);
    mesh_buf_init(&edited, MESH_OP_BYTES_MAX);
    int rc = mesh_body_to_json(data, size, &json);
    if (rc != MESH_OK) fail("to_json of a valid body", rc);
    rc = mesh_body_from_json((const char *)json.data, json.len, &back);
    if (rc != MESH_OK) fail("from_json of to_json output", rc);
    if (back.len != size || memcmp(back.data, data, size) != 0) fail("JSON round trip differs", 0);

    /* Editing with nothing to drop or add is the identity; dropping then re-adding a key too. */
    rc = mesh_body_edit(data, size, NULL, 0, NULL, 0, &edited);
    if (rc != MESH_OK || edited.len != size || memcmp(edited.data, data, size) != 0)
        fail("identity edit differs", rc);
    static const char *const drop[] = {"a", "b", ""};
    mesh_buf_reset(&edited);
    rc = mesh_body_edit(data, size, drop, 3, data, size, &edited);
    if (rc != MESH_OK || edited.len != size || memcmp(edited.data, data, size) != 0)
        fail("drop and re-add differs", rc);
    mesh_buf_reset(&edited);
    rc = mesh_body_edit(data, size, drop, 3, NULL, 0, &edited);
    if (rc != MESH_OK || mesh_body_check(edited.data, edited.len) != MESH_OK)
        fail("dropping keys gave a non-canonical body", rc);

    mesh_buf_fini(&json);
    mesh_buf_fini(&back);
    mesh_buf_fini(&edited);
    return 0;
}
