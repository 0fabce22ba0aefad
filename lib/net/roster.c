/*
 * roster.c - loading the plain-text team roster and deriving the team key (see roster.h).
 */
#include "net/roster.h"

#include "crypto/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int cmp_member(const void *a, const void *b)
{
    return memcmp(((const mesh_roster_member *)a)->ed_pk, ((const mesh_roster_member *)b)->ed_pk,
                  32);
}

/* Sorts, merges duplicates, derives curve keys and, unless `team_key` is given, the team key
 * from the keys. A signed roster may be empty (a node waiting for its first roster). */
static int finish(mesh_roster *r, const uint8_t *team_key)
{
    if (r->count == 0 && team_key == NULL)
        return mesh_err(MESH_EINVAL, "roster %s lists no keys; add each team member's key "
                        "('meshsync identity' prints it), one per line",
                        r->path[0] ? r->path : "(memory)");
    if (r->count > 1) qsort(r->members, r->count, sizeof r->members[0], cmp_member);
    size_t w = 0;
    for (size_t i = 0; i < r->count; i++)
        if (w == 0 || memcmp(r->members[w - 1].ed_pk, r->members[i].ed_pk, 32) != 0)
            r->members[w++] = r->members[i];
    r->count = w;
    mesh_hash_state h;
    mesh_hash_init(&h);
    static const char domain[] = "meshsync/team/v1";
    mesh_hash_update(&h, domain, sizeof domain - 1);
    for (size_t i = 0; i < r->count; i++) {
        char hex[65];
        if (mesh_pk_to_curve(r->members[i].ed_pk, r->members[i].curve_pk) != MESH_OK) {
            mesh_hex_encode(r->members[i].ed_pk, 32, hex);
            return mesh_err(MESH_EINVAL, "roster %s: %s is not a valid Ed25519 public key",
                            r->path[0] ? r->path : "(memory)", hex);
        }
        mesh_hash_update(&h, r->members[i].ed_pk, 32);
    }
    mesh_hash_final(&h, r->team_key);
    if (team_key) memcpy(r->team_key, team_key, 32);
    return MESH_OK;
}

static int add_key(mesh_roster *r, const uint8_t key[32], size_t *alloc)
{
    if (r->count >= MESH_ROSTER_MAX)
        return mesh_err(MESH_ELIMIT, "roster %s has more than %u keys", r->path, MESH_ROSTER_MAX);
    if (r->count == *alloc) {
        size_t n = *alloc ? *alloc * 2 : 16;
        mesh_roster_member *m = realloc(r->members, n * sizeof *m);
        if (m == NULL) return mesh_err(MESH_ENOMEM, "out of memory loading roster %s", r->path);
        r->members = m;
        *alloc = n;
    }
    memcpy(r->members[r->count++].ed_pk, key, 32);
    return MESH_OK;
}

int mesh_roster_load(const char *path, mesh_roster *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return mesh_err(MESH_ENOTFOUND, "roster %s does not exist; create it with one team "
                            "member's public key per line ('meshsync identity' prints a node's "
                            "key)", path);
        return mesh_err(MESH_EIO, "cannot open roster %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0) {
        r->mtime = st.st_mtim.tv_sec;
        r->mtime_ns = st.st_mtim.tv_nsec;
        if ((uint64_t)st.st_size > MESH_ROSTER_FILE_BYTES_MAX) {
            fclose(f);
            return mesh_err(MESH_ELIMIT, "roster %s is larger than %u bytes", path,
                            MESH_ROSTER_FILE_BYTES_MAX);
        }
    }
    char line[1024];
    size_t alloc = 0;
    int lineno = 0, rc = MESH_OK;
    while (rc == MESH_OK && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0') continue;
        size_t n = strspn(p, "0123456789abcdefABCDEF");
        char after = p[n];
        uint8_t key[32];
        bool ok = n == 64 && (after == '\0' || after == '\n' || after == '\r' || after == ' ' ||
                              after == '\t' || after == '#');
        if (ok) p[64] = '\0';
        if (!ok || mesh_hex_decode(p, key, 32) != MESH_OK) {
            rc = mesh_err(MESH_EINVAL, "roster %s line %d is not a public key (64 hex "
                          "characters, as 'meshsync identity' prints)", path, lineno);
            break;
        }
        rc = add_key(r, key, &alloc);
    }
    if (rc == MESH_OK && ferror(f)) rc = mesh_err(MESH_EIO, "cannot read roster %s", path);
    fclose(f);
    if (rc == MESH_OK) rc = finish(r, NULL);
    if (rc != MESH_OK) mesh_roster_fini(r);
    return rc;
}

int mesh_roster_from_keys(const uint8_t (*keys)[32], size_t n, mesh_roster *r)
{
    memset(r, 0, sizeof *r);
    size_t alloc = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = add_key(r, keys[i], &alloc);
        if (rc != MESH_OK) {
            mesh_roster_fini(r);
            return rc;
        }
    }
    int rc = finish(r, NULL);
    if (rc != MESH_OK) mesh_roster_fini(r);
    return rc;
}

void mesh_roster_team_key(const uint8_t authority[32], uint8_t out[32])
{
    static const char domain[] = "meshsync/team/v2";
    mesh_hash_state h;
    mesh_hash_init(&h);
    mesh_hash_update(&h, domain, sizeof domain - 1);
    mesh_hash_update(&h, authority, 32);
    mesh_hash_final(&h, out);
}

int mesh_roster_from_team(const mesh_team *team, const uint8_t authority[32], mesh_roster *r)
{
    memset(r, 0, sizeof *r);
    size_t alloc = 0;
    for (size_t i = 0; team && i < team->nmembers; i++) {
        if (team->members[i].removed) continue;
        int rc = add_key(r, team->members[i].key, &alloc);
        if (rc != MESH_OK) {
            mesh_roster_fini(r);
            return rc;
        }
    }
    uint8_t key[32];
    mesh_roster_team_key(authority, key);
    int rc = finish(r, key);
    if (rc != MESH_OK) mesh_roster_fini(r);
    return rc;
}

void mesh_roster_fini(mesh_roster *r)
{
    free(r->members);
    memset(r, 0, sizeof *r);
}

bool mesh_roster_changed(const mesh_roster *r)
{
    struct stat st;
    if (r->path[0] == '\0' || stat(r->path, &st) != 0) return false;
    return st.st_mtim.tv_sec != r->mtime || st.st_mtim.tv_nsec != r->mtime_ns;
}

const mesh_roster_member *mesh_roster_find(const mesh_roster *r, const uint8_t ed_pk[32])
{
    mesh_roster_member key;
    memcpy(key.ed_pk, ed_pk, 32);
    if (r->count == 0) return NULL;  /* a team node without a roster yet */
    return bsearch(&key, r->members, r->count, sizeof key, cmp_member);
}

const mesh_roster_member *mesh_roster_find_curve(const mesh_roster *r, const uint8_t curve_pk[32])
{
    for (size_t i = 0; i < r->count; i++)
        if (memcmp(r->members[i].curve_pk, curve_pk, 32) == 0) return &r->members[i];
    return NULL;
}
