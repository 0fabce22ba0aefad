/*
 * fuzz_keyfile.c - mesh_identity_parse (the decoder of identity.key and team-authority.key,
 * lib/crypto/crypto.c) on arbitrary bytes, with and without the node's wrap key. A key it
 * accepts must be a consistent Ed25519 key pair; a clear file must read the same with or without
 * a wrap key; a sealed one must be refused without it; and an accepted key must survive being
 * written again in either form.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/atrest.h"
#include "crypto/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, int rc)
{
    fprintf(stderr, "%s: rc %d (%s)\n", what, rc, mesh_errmsg());
    abort();
}

/* The wrap key the seed corpus's sealed file was written with (tests/fuzz/corpus/keyfile). */
static const uint8_t WRAP[MESH_SEAL_KEY_BYTES] = {7, 7, 7, 7, 7, 7, 7, 7, 1, 2, 3, 4};

static void same_after_rewrite(const mesh_identity *id, const uint8_t *wrap)
{
    static char path[64];
    if (path[0] == '\0') snprintf(path, sizeof path, "/tmp/fuzz-keyfile-%d", (int)getpid());
    unlink(path);
    int rc = mesh_identity_save(id, path, wrap);
    if (rc != MESH_OK) fail("save of an accepted key", rc);
    mesh_identity back;
    bool sealed;
    rc = mesh_identity_load(path, wrap, &back, &sealed);
    unlink(path);
    if (rc != MESH_OK) fail("load of a key just saved", rc);
    if (sealed != (wrap != NULL)) fail("saved in the other form", 0);
    if (memcmp(back.sk, id->sk, sizeof back.sk) != 0 || memcmp(back.pk, id->pk, sizeof back.pk))
        fail("a key changed on the way through its file", 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        if (mesh_crypto_init() != MESH_OK) abort();
        init = true;
    }
    mesh_identity plain, wrapped;
    bool s1 = false, s2 = false;
    int r1 = mesh_identity_parse("input", (const char *)data, size, NULL, &plain, &s1);
    int r2 = mesh_identity_parse("input", (const char *)data, size, WRAP, &wrapped, &s2);
    if (r2 == MESH_OK && !s2 && r1 != MESH_OK) fail("a clear key needs a wrap key", r1);
    if (r1 == MESH_OK && s1) fail("a sealed key opened without a wrap key", r1);
    if (s1 && r1 != MESH_EPERM && r1 != MESH_ECORRUPT) fail("odd refusal of a sealed key", r1);
    if (r1 == MESH_OK) {
        if (r2 != MESH_OK || memcmp(plain.sk, wrapped.sk, sizeof plain.sk) != 0)
            fail("a clear key reads differently with a wrap key", r2);
        same_after_rewrite(&plain, NULL);
        same_after_rewrite(&plain, WRAP);
    } else if (r2 == MESH_OK) {
        same_after_rewrite(&wrapped, WRAP);
    }
    mesh_identity_wipe(&plain);
    mesh_identity_wipe(&wrapped);
    return 0;
}
