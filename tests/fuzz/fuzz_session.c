/*
 * fuzz_session.c - a fresh sync session over a small store, fed the input as a stream of frames.
 *
 * Input: byte 0 picks the role (bit 0: initiator) and the frame limits (bits 1-2); then frames,
 * each a 2-byte big-endian length and that many bytes. After each frame the session's output is
 * drained and its deadline handled, with the clock advancing 7 s per frame, so the sending,
 * ingest and timeout paths all run. The store is made once per process (no_sync) and holds a few
 * streams to send; the peer's record is forgotten before each input so runs do not depend on
 * history. Set MESH_FUZZ_SEEDS=<dir> to write seed inputs (valid sessions) into <dir>, and
 * MESH_FUZZ_VERBOSE=1 to print how each input ended.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../sync_fixture.h"
#include "store/peers.h"
#include "sync/frame.h"
#include "sync/vector.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mesh_store *store;
static char store_dir[64];
static const uint8_t PEER[32] = {0xfe, 0xed};
static const uint8_t SELF[32] = {0x5e, 0x1f};

static int forget_fn(mesh_txn *t, void *ctx)
{
    (void)ctx;
    return mesh_store_peer_forget(t, PEER);
}

/* ---- Seeds --------------------------------------------------------------------------------- */

typedef struct seed {
    mesh_buf b;
    uint64_t fno;
} seed;

static void seed_frame(seed *s, mesh_frame *f)
{
    mesh_buf fr;
    mesh_buf_init(&fr, MESH_FRAME_BYTES_MAX);
    f->fno = ++s->fno;
    if (mesh_frame_encode(f, &fr) != MESH_OK) abort();
    uint8_t len[2] = {(uint8_t)(fr.len >> 8), (uint8_t)fr.len};
    mesh_buf_append(&s->b, len, 2);
    mesh_buf_append(&s->b, fr.data, fr.len);
    mesh_buf_fini(&fr);
}

static void seed_vector(seed *s, uint32_t type, uint32_t flags, const mesh_vector *v,
                        const uint8_t digest[16])
{
    mesh_buf items;
    mesh_buf_init(&items, MESH_FRAME_BYTES_MAX);
    for (size_t i = 0; i < v->n; i++) {
        mesh_mp_put_uint(&items, v->e[i].sid);
        mesh_mp_put_uint(&items, v->e[i].seq);
    }
    mesh_frame f = {.type = type, .version = 1, .version_min = 1, .flags = flags, .total = v->n,
                    .items = items.data, .items_len = items.len, .nitems = v->n};
    memcpy(f.digest, digest, 16);
    seed_frame(s, &f);
    mesh_buf_fini(&items);
}

static void seed_write(const char *dir, const char *name, seed *s)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL || fwrite(s->b.data, 1, s->b.len, fp) != s->b.len) abort();
    fclose(fp);
    mesh_buf_fini(&s->b);
}

static void seed_start(seed *s, uint8_t role)
{
    mesh_buf_init(&s->b, 4 * MESH_FRAME_BYTES_MAX);
    s->fno = 0;
    mesh_buf_append(&s->b, &role, 1);
}

static void write_seeds(const char *dir)
{
    mesh_vector empty, vx;
    mesh_vector_init(&empty);
    mesh_vector_init(&vx);
    uint8_t d[16];
    mesh_vector_digest(&empty, d);
    seed s;
    mesh_frame done = {.type = MESH_FRAME_DONE, .version = 1};

    /* An empty peer, as initiator and as responder. */
    for (uint8_t role = 0; role < 2; role++) {
        seed_start(&s, role);
        seed_vector(&s, MESH_FRAME_HELLO, MESH_HELLO_FULL, &empty, d);
        seed_frame(&s, &done);
        seed_write(dir, role ? "empty-initiator" : "empty-responder", &s);
    }

    /* A peer sending five ops of a stream of its own in two frames. */
    fx_author x;
    fx_author_init(&x, 4242, "FUZZ/PEER");
    fx_rec r[5];
    for (int i = 0; i < 5; i++) r[i] = fx_next(&x, 40);
    mesh_vector_push(&vx, mesh_stream_id(x.id.pk, x.scope, strlen(x.scope)), 5);
    mesh_vector_digest(&vx, d);
    seed_start(&s, 2);
    seed_vector(&s, MESH_FRAME_HELLO, MESH_HELLO_FULL, &vx, d);
    mesh_buf items;
    mesh_buf_init(&items, MESH_FRAME_BYTES_MAX);
    for (int k = 0; k < 2; k++) {
        mesh_buf_reset(&items);
        int from = k ? 2 : 0, to = k ? 5 : 2;
        for (int i = from; i < to; i++) {
            mesh_mp_put_bin(&items, r[i].op, r[i].op_len);
            mesh_mp_put_bin(&items, r[i].sig, 64);
        }
        mesh_frame ops = {.type = MESH_FRAME_OPS, .version = 1, .items = items.data,
                          .items_len = items.len, .nitems = (size_t)(to - from)};
        seed_frame(&s, &ops);
    }
    done.ops = 5;
    done.frames = 2;
    seed_frame(&s, &done);
    seed_write(dir, "five-ops", &s);

    /* A delta HELLO the session cannot rebuild: it asks, the peer answers with VECTOR. */
    seed_start(&s, 0);
    seed_vector(&s, MESH_FRAME_HELLO, 0, &vx, d);
    seed_vector(&s, MESH_FRAME_VECTOR, 0, &vx, d);
    done.ops = done.frames = 0;
    seed_frame(&s, &done);
    seed_write(dir, "delta-want-vector", &s);

    /* A peer that ends the session with an ERROR. */
    seed_start(&s, 1);
    mesh_frame e = {.type = MESH_FRAME_ERROR, .version = 1, .code = 18, .msg = "no", .msg_len = 2};
    seed_frame(&s, &e);
    seed_write(dir, "peer-error", &s);

    for (int i = 0; i < 5; i++) fx_rec_free(&r[i]);
    mesh_buf_fini(&items);
    mesh_vector_fini(&empty);
    mesh_vector_fini(&vx);
}

/* ---- The harness --------------------------------------------------------------------------- */

static void init_once(void)
{
    if (mesh_crypto_init() != MESH_OK) abort();
    store = fx_store_new(store_dir);
    /* Three streams to send, one long enough to need several frames at small limits. */
    for (uint32_t i = 0; i < 3; i++) {
        fx_author a;
        char scope[16];
        snprintf(scope, sizeof scope, "FUZZ/S%u", i);
        fx_author_init(&a, 77 + i, scope);
        fx_write(&store, 1, &a, i == 0 ? 40 : 3, 20);
    }
    const char *seeds = getenv("MESH_FUZZ_SEEDS");
    if (seeds) write_seeds(seeds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        init_once();
        ready = true;
    }
    if (size < 1) return 0;
    if (mesh_store_write(store, forget_fn, NULL) != MESH_OK) abort();
    static const uint32_t frame_bytes[4] = {0, 512, 1024, 4096};
    mesh_session_opts o = {.store = store, .initiator = data[0] & 1,
                           .frame_bytes_max = frame_bytes[(data[0] >> 1) & 3],
                           .frame_ops_max = (data[0] >> 1) & 3 ? 4 : 0, .ingest_batch_ops = 3};
    memcpy(o.self, SELF, 32);
    memcpy(o.peer, PEER, 32);
    uint64_t now = 1000;
    mesh_session *s;
    if (mesh_session_new(&o, now, &s) != MESH_OK) abort();
    mesh_buf out;
    mesh_buf_init(&out, MESH_FRAME_BYTES_MAX);
    size_t pos = 1;
    for (;;) {
        /* Drain what the session has to say; each frame it writes must decode. */
        for (int i = 0; i < 256 && mesh_session_send(s, &out, now) == MESH_OK; i++) {
            mesh_frame f;
            if (mesh_frame_decode(out.data, out.len, &f) != MESH_OK) {
                fprintf(stderr, "the session wrote a frame it cannot decode: %s\n", mesh_errmsg());
                abort();
            }
        }
        if (pos + 2 > size) break;
        size_t len = (size_t)data[pos] << 8 | data[pos + 1];
        pos += 2;
        if (len > size - pos) len = size - pos;
        (void)mesh_session_recv(s, data + pos, len, now);
        pos += len;
        now += 7000;
        (void)mesh_session_handle_expiry(s, now);
    }
    mesh_session_stats st;
    mesh_session_stats_get(s, &st);
    if (mesh_session_state_get(s) == MESH_SESSION_FAILED && st.error == 0) abort();
    if (getenv("MESH_FUZZ_VERBOSE"))
        fprintf(stderr, "state %d, %llu frames in, %llu out, %llu ops applied: %s\n",
                (int)mesh_session_state_get(s), (unsigned long long)st.frames_received,
                (unsigned long long)st.frames_sent, (unsigned long long)st.ops_applied,
                st.error_msg);
    mesh_buf_fini(&out);
    mesh_session_free(s);
    return 0;
}
