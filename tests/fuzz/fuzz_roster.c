/*
 * fuzz_roster.c - mesh_team_decode (the roster body decoder, lib/model/team.c) on arbitrary
 * bytes. A roster it accepts must re-encode to the same bytes (the codec is canonical: what the
 * authority signs is what every node reads), and the access rules must answer for every member
 * and scope without crashing.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model/team.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, int rc)
{
    fprintf(stderr, "%s: rc %d (%s)\n", what, rc, mesh_errmsg());
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t authority[32] = {0xaa, 0xbb};
    mesh_team *t = NULL;
    int rc = mesh_team_decode(data, size, authority, &t);
    if (rc != MESH_OK) {
        if (t != NULL) fail("a refused roster left a result", rc);
        return 0;
    }
    mesh_buf b;
    mesh_buf_init(&b, MESH_OP_BYTES_MAX);
    rc = mesh_team_encode(t, &b);
    if (rc != MESH_OK) fail("encode of a decoded roster", rc);
    if (b.len != size || memcmp(b.data, data, size) != 0) fail("roster round trip differs", 0);
    mesh_buf_fini(&b);
    /* Every member against every scope and cut in the roster, and the authority. */
    for (size_t i = 0; i < t->nmembers; i++) {
        const mesh_team_member *m = &t->members[i];
        if (mesh_team_find(t, m->key) != m) fail("find does not find a member", 0);
        for (size_t k = 0; k < t->nscopes; k++) {
            const mesh_team_scope *s = &t->scopes[k];
            (void)mesh_team_write_limit(t, m->key, s->text, s->len);
            (void)mesh_team_may_hold(t, m->key, authority, s->text, s->len);
            (void)mesh_team_may_hold(t, m->key, m->key, s->text, s->len);
        }
        for (uint32_t k = 0; k < m->ncuts; k++) {
            const mesh_team_scope *c = &t->cuts[m->cut_first + k];
            uint64_t lim = mesh_team_write_limit(t, m->key, c->text, c->len);
            if (lim == 0) fail("a cut admits nothing", 0);
        }
        if (!m->removed && m->nscopes > 0) {
            const mesh_team_scope *s = &t->scopes[m->scope_first];
            if (mesh_team_write_limit(t, m->key, s->text, s->len) != UINT64_MAX)
                fail("a member may not write in its own scope", 0);
        }
    }
    if (mesh_team_write_limit(t, authority, t->root, t->root_len) != UINT64_MAX)
        fail("the authority is limited", 0);
    mesh_team_free(t);
    return 0;
}
