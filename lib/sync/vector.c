/*
 * vector.c - This file implements version vectors (vector.h): sorted (sid, seq) arrays, their
 * digest, and the diff/patch pair that lets a HELLO carry only what changed.
 */
#include "sync/vector.h"

#include <stdlib.h>

#include "crypto/crypto.h"

#define DIGEST_DOMAIN "meshsync/vector/v1"

void mesh_vector_init(mesh_vector *v)
{
    v->e = NULL;
    v->n = v->cap = 0;
}

void mesh_vector_fini(mesh_vector *v)
{
    free(v->e);
    mesh_vector_init(v);
}

int mesh_vector_reserve(mesh_vector *v, size_t n)
{
    if (n > MESH_VECTOR_ENTRIES_MAX)
        return mesh_err(MESH_ELIMIT, "a version vector of %zu streams; the limit is %u", n,
                        MESH_VECTOR_ENTRIES_MAX);
    if (n <= v->cap) return MESH_OK;
    size_t cap = v->cap ? v->cap : 16;
    while (cap < n) cap *= 2;
    if (cap > MESH_VECTOR_ENTRIES_MAX) cap = MESH_VECTOR_ENTRIES_MAX;
    mesh_vec_entry *e = realloc(v->e, cap * sizeof *e);
    if (e == NULL) return mesh_err(MESH_ENOMEM, "out of memory for a vector of %zu streams", n);
    v->e = e;
    v->cap = cap;
    return MESH_OK;
}

int mesh_vector_push(mesh_vector *v, uint64_t sid, uint64_t seq)
{
    if (v->n > 0 && sid <= v->e[v->n - 1].sid)
        return mesh_err(MESH_EINVAL, "vector entries out of stream order");
    int rc = mesh_vector_reserve(v, v->n + 1);
    if (rc != MESH_OK) return rc;
    v->e[v->n].sid = sid;
    v->e[v->n].seq = seq;
    v->n++;
    return MESH_OK;
}

int mesh_vector_append(mesh_vector *v, uint64_t sid, uint64_t seq)
{
    int rc = mesh_vector_reserve(v, v->n + 1);
    if (rc != MESH_OK) return rc;
    v->e[v->n].sid = sid;
    v->e[v->n].seq = seq;
    v->n++;
    return MESH_OK;
}

size_t mesh_vector_find(const mesh_vector *v, uint64_t sid)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->e[mid].sid < sid) lo = mid + 1;
        else hi = mid;
    }
    return lo < v->n && v->e[lo].sid == sid ? lo : SIZE_MAX;
}

uint64_t mesh_vector_get(const mesh_vector *v, uint64_t sid)
{
    size_t i = mesh_vector_find(v, sid);
    return i == SIZE_MAX ? 0 : v->e[i].seq;
}

void mesh_vector_digest(const mesh_vector *v, uint8_t out[MESH_VECTOR_DIGEST_BYTES])
{
    mesh_hash_state st;
    uint8_t h[MESH_DIGEST_BYTES], b[16 * 64];
    mesh_hash_init(&st);
    mesh_hash_update(&st, DIGEST_DOMAIN, strlen(DIGEST_DOMAIN));
    /* Batched: one hash update per 64 entries. */
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++) {
        mesh_be64_put(b + 16 * k, v->e[i].sid);
        mesh_be64_put(b + 16 * k + 8, v->e[i].seq);
        if (++k == 64) {
            mesh_hash_update(&st, b, sizeof b);
            k = 0;
        }
    }
    mesh_hash_update(&st, b, 16 * k);
    mesh_hash_final(&st, h);
    memcpy(out, h, MESH_VECTOR_DIGEST_BYTES);
}

int mesh_vector_diff(const mesh_vector *cur, const mesh_vector *base, mesh_vector *delta)
{
    mesh_vector_clear(delta);
    size_t i = 0, j = 0;
    int rc = MESH_OK;
    while (rc == MESH_OK && (i < cur->n || j < base->n)) {
        if (j == base->n || (i < cur->n && cur->e[i].sid < base->e[j].sid)) {
            rc = mesh_vector_push(delta, cur->e[i].sid, cur->e[i].seq);
            i++;
        } else if (i == cur->n || base->e[j].sid < cur->e[i].sid) {
            rc = mesh_vector_push(delta, base->e[j].sid, 0);
            j++;
        } else {
            if (cur->e[i].seq != base->e[j].seq)
                rc = mesh_vector_push(delta, cur->e[i].sid, cur->e[i].seq);
            i++;
            j++;
        }
    }
    return rc;
}

int mesh_vector_patch(const mesh_vector *base, const mesh_vector *delta, mesh_vector *out)
{
    mesh_vector_clear(out);
    size_t i = 0, j = 0;
    int rc = MESH_OK;
    while (rc == MESH_OK && (i < base->n || j < delta->n)) {
        const mesh_vec_entry *e;
        if (j == delta->n || (i < base->n && base->e[i].sid < delta->e[j].sid)) {
            e = &base->e[i++];
        } else {
            if (i < base->n && base->e[i].sid == delta->e[j].sid) i++;
            e = &delta->e[j++];
        }
        if (e->seq != 0) rc = mesh_vector_push(out, e->sid, e->seq);
    }
    return rc;
}

int mesh_vector_join(const mesh_vector *a, const mesh_vector *b, mesh_vector *out)
{
    mesh_vector_clear(out);
    size_t i = 0, j = 0;
    int rc = MESH_OK;
    while (rc == MESH_OK && (i < a->n || j < b->n)) {
        if (j == b->n || (i < a->n && a->e[i].sid < b->e[j].sid)) {
            rc = mesh_vector_push(out, a->e[i].sid, a->e[i].seq);
            i++;
        } else if (i == a->n || b->e[j].sid < a->e[i].sid) {
            rc = mesh_vector_push(out, b->e[j].sid, b->e[j].seq);
            j++;
        } else {
            uint64_t s = a->e[i].seq > b->e[j].seq ? a->e[i].seq : b->e[j].seq;
            rc = mesh_vector_push(out, a->e[i].sid, s);
            i++;
            j++;
        }
    }
    return rc;
}

static int entry_cmp(const void *x, const void *y)
{
    const mesh_vec_entry *a = x, *b = y;
    if (a->sid != b->sid) return a->sid < b->sid ? -1 : 1;
    return a->seq < b->seq ? 1 : a->seq > b->seq ? -1 : 0;  /* highest seq first */
}

void mesh_vector_normalize(mesh_vector *v)
{
    if (v->n < 2) return;
    qsort(v->e, v->n, sizeof *v->e, entry_cmp);
    size_t o = 1;
    for (size_t i = 1; i < v->n; i++)
        if (v->e[i].sid != v->e[o - 1].sid) v->e[o++] = v->e[i];
    v->n = o;
}

int mesh_vector_load(mesh_vector *v, const uint8_t *raw, size_t n)
{
    mesh_vector_clear(v);
    int rc = mesh_vector_reserve(v, n);
    if (rc != MESH_OK) return rc;
    for (size_t i = 0; i < n; i++) {
        uint64_t sid = mesh_be64_get(raw + 16 * i);
        if (i > 0 && sid <= v->e[i - 1].sid)
            return mesh_err(MESH_ECORRUPT, "a stored peer vector is out of stream order");
        v->e[i].sid = sid;
        v->e[i].seq = mesh_be64_get(raw + 16 * i + 8);
        v->n = i + 1;
    }
    return MESH_OK;
}

void mesh_vector_save(const mesh_vector *v, uint8_t *raw)
{
    for (size_t i = 0; i < v->n; i++) {
        mesh_be64_put(raw + 16 * i, v->e[i].sid);
        mesh_be64_put(raw + 16 * i + 8, v->e[i].seq);
    }
}
