/*
 * session.c - This file implements the sans-IO sync session (session.h): the HELLO exchange
 * with delta vectors, streaming what the peer lacks in bounded OPS frames read lazily from the
 * store, verifying and storing what arrives in large transactions, DONE, errors and the idle
 * deadline. proto/PROTOCOL.md, "Sync session", is the normative description.
 *
 * Time comes only from the now_ms arguments and bytes only through recv/send: the same code runs
 * under the daemon's ZeroMQ loop and the simulator's virtual network.
 */
#include "sync/session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "crypto/crypto.h"
#include "store/peers.h"
#include "sync/frame.h"
#include "sync/vector.h"

/* Received op bytes buffered before a store transaction, besides ingest_batch_ops: bounds the
 * session's memory (~8 MiB plus one frame) whatever the op sizes. */
#define RECV_BUFFER_BYTES_MAX (8u * 1024u * 1024u)

_Static_assert(RECV_BUFFER_BYTES_MAX >= MESH_FRAME_BYTES_MAX, "the buffer holds a frame");
_Static_assert(MESH_FRAME_OPS_MAX <= MESH_INGEST_BATCH_MAX, "a frame fits one ingest");

/* Callback results that stop a store iteration without being errors. */
enum { STOP_FULL = 1, STOP_STREAM = 2 };

/* A stream to send: ops next..last. */
typedef struct plan_entry {
    uint64_t sid;
    uint64_t next;
    uint64_t last;
} plan_entry;

/* A received op record buffered for the next ingest: its bytes live in the arena. */
typedef struct buffered {
    size_t off;       /* signature, then op bytes */
    size_t op_len;
    uint64_t sid;
    uint64_t seq;
} buffered;

struct mesh_session {
    mesh_session_opts o;
    mesh_session_state state;
    mesh_session_stats st;
    char peer_hex[17];           /* first 16 hex digits of the peer's key, for messages */
    uint64_t last_ms;            /* last frame in either direction */

    uint32_t version;            /* negotiated; 0 until the peer's HELLO */
    uint64_t fno_out;            /* last frame number sent */
    uint64_t fno_in;             /* last frame number received */

    /* Our vector at session start, and the peer record's vectors. */
    mesh_vector self;
    uint8_t self_digest[MESH_VECTOR_DIGEST_BYTES];
    bool have_record;
    mesh_vector ours_base;       /* our vector as the peer holds it */
    mesh_vector theirs_base;     /* the peer's vector as we hold it */

    /* Our announcement in progress: a HELLO or VECTOR head, then MORE frames. */
    uint32_t ann_type;           /* 0: none */
    uint32_t ann_version;
    uint32_t ann_flags;
    mesh_vector ann;
    size_t ann_pos;
    bool ann_head_sent;
    bool hello_started, hello_sent, vector_started;
    bool want_out, want_sent;    /* we must ask for / have asked for the peer's full vector */
    bool peer_wants;             /* the peer asked for ours */

    /* The peer's announcement being received. */
    uint32_t in_type;            /* 0: none */
    uint32_t in_version;
    uint32_t in_flags;
    uint64_t in_total;
    uint8_t in_digest[MESH_VECTOR_DIGEST_BYTES];
    uint8_t hello_digest[MESH_VECTOR_DIGEST_BYTES];
    mesh_vector in_entries;
    bool hello_received;         /* the whole HELLO arrived */
    bool vector_received;
    bool peer_known;
    mesh_vector peer;            /* the peer's full vector at its session start */
    uint64_t recv_budget;        /* ops the peer can owe us: sum of (peer seq - our seq)+ */

    /* Sending ops. */
    plan_entry *plan;
    size_t nplan, plan_pos;
    bool planned;
    uint64_t ops_frames_sent;
    bool done_sent;
    mesh_buf items;              /* scratch: a frame's entries or records */

    /* Receiving ops. */
    bool done_received;
    uint64_t ops_frames_received;
    mesh_vector recv_max;        /* highest seq the peer sent, per stream */
    mesh_vector poisoned;        /* streams with a rejected op: nothing more is taken from them */
    mesh_vector recv_new;        /* streams first seen in the current frame */
    mesh_vector scratch;
    mesh_buf arena;
    buffered *buf;
    size_t nbuf, buf_cap;

    bool error_out;              /* an ERROR frame is owed to the peer */
};

/* ---- Failure ------------------------------------------------------------------------------- */

static int flush(mesh_session *s);

/* Ends the session with `code` (the thread's error message says why), storing what arrived
 * first. `tell_peer`: the next send returns an ERROR frame. */
static int fail(mesh_session *s, int code, bool tell_peer)
{
    if (s->state != MESH_SESSION_ACTIVE) return code;
    char msg[sizeof s->st.error_msg];
    snprintf(msg, sizeof msg, "%s", mesh_errmsg());
    s->state = MESH_SESSION_FAILED;
    s->st.error = code;
    snprintf(s->st.error_msg, sizeof s->st.error_msg, "%s", msg);
    s->error_out = tell_peer;
    /* What verified is kept, unless the store itself is what failed. */
    bool store_failed = code == MESH_ENOSPC || code == MESH_EIO || code == MESH_ENOMEM;
    if (!store_failed) (void)flush(s);
    return mesh_err(code, "%s", msg);
}

/* A protocol violation by the peer. */
MESH_PRINTF(3, 4) static int violation(mesh_session *s, int code, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mesh_err(code, "peer %s broke the sync protocol: %s", s->peer_hex, msg);
    return fail(s, code, true);
}

/* ---- Storing received ops ------------------------------------------------------------------ */

typedef struct ingest_ctx {
    mesh_session *s;
    const mesh_oprec *recs;
    mesh_ingest_report rep;
    mesh_vector *streams;     /* in: highest buffered seq per stream; out: streams that fell short */
    mesh_vector *short_out;
} ingest_ctx;

static int ingest_fn(mesh_txn *t, void *ctx)
{
    ingest_ctx *c = ctx;
    /* The transaction may run again after the map grows: start from scratch. */
    memset(&c->rep, 0, sizeof c->rep);
    mesh_vector_clear(c->short_out);
    int rc = mesh_store_ingest(t, c->recs, c->s->nbuf, MESH_INGEST_PARTIAL, &c->rep);
    if (rc != MESH_OK) return rc;
    /* A stream that stops short of what arrived had an op rejected; later ops of it would only
     * wait in `pending` for an op that will never verify. */
    for (size_t i = 0; i < c->streams->n; i++) {
        mesh_stream st;
        rc = mesh_store_stream_get(t, c->streams->e[i].sid, &st);
        if (rc == MESH_ENOTFOUND) st.seq = 0;
        else if (rc != MESH_OK) return rc;
        if (st.seq < c->streams->e[i].seq &&
            (rc = mesh_vector_push(c->short_out, c->streams->e[i].sid, 0)))
            return rc;
    }
    return MESH_OK;
}

/* Notes (sid, seq) in an unsorted list. Ops of a stream arrive together, so merging with the
 * last entry keeps the list near one entry per stream; a full list is compacted, and cannot
 * overflow again because the streams received are bounded like a vector (on_ops). */
static int note_stream(mesh_vector *v, uint64_t sid, uint64_t seq)
{
    if (v->n > 0 && v->e[v->n - 1].sid == sid) {
        if (seq > v->e[v->n - 1].seq) v->e[v->n - 1].seq = seq;
        return MESH_OK;
    }
    int rc = mesh_vector_append(v, sid, seq);
    if (rc != MESH_ELIMIT) return rc;
    mesh_vector_normalize(v);
    return mesh_vector_append(v, sid, seq);
}

/* Stores the buffered records in one transaction. */
static int flush(mesh_session *s)
{
    if (s->nbuf == 0) return MESH_OK;
    mesh_oprec *recs = malloc(s->nbuf * sizeof *recs);
    if (recs == NULL) return mesh_err(MESH_ENOMEM, "out of memory storing %zu ops", s->nbuf);
    mesh_vector_clear(&s->scratch);
    int rc = MESH_OK;
    for (size_t i = 0; i < s->nbuf && rc == MESH_OK; i++) {
        const uint8_t *p = s->arena.data + s->buf[i].off;
        recs[i].sig = p;
        recs[i].op = p + MESH_SIGNATURE_BYTES;
        recs[i].op_len = s->buf[i].op_len;
        rc = note_stream(&s->scratch, s->buf[i].sid, s->buf[i].seq);
    }
    mesh_vector shorts;
    mesh_vector_init(&shorts);
    if (rc == MESH_OK) {
        mesh_vector_normalize(&s->scratch);
        ingest_ctx c = {.s = s, .recs = recs, .streams = &s->scratch, .short_out = &shorts};
        rc = mesh_store_write(s->o.store, ingest_fn, &c);
        if (rc == MESH_OK) {
            s->st.ops_applied += c.rep.applied;
            s->st.ops_duplicate += c.rep.duplicate;
            s->st.ops_rejected += c.rep.rejected;
            s->st.ops_pending += c.rep.pending;
            if (c.rep.rejected > 0 && s->st.reject_msg[0] == '\0')
                snprintf(s->st.reject_msg, sizeof s->st.reject_msg, "%s", c.rep.first_error_msg);
            s->nbuf = 0;
            mesh_buf_reset(&s->arena);
            if (shorts.n > 0) {
                mesh_vector_clear(&s->scratch);
                rc = mesh_vector_join(&s->poisoned, &shorts, &s->scratch);
                if (rc == MESH_OK) {
                    mesh_vector tmp = s->poisoned;
                    s->poisoned = s->scratch;
                    s->scratch = tmp;
                }
            }
        }
    }
    mesh_vector_fini(&shorts);
    free(recs);
    return rc;
}

/* ---- Creating ------------------------------------------------------------------------------ */

static int load_stream(const mesh_stream *st, void *ctx)
{
    mesh_session *s = ctx;
    return mesh_vector_push(&s->self, st->sid, st->seq);
}

static int load_fn(mesh_txn *t, void *ctx)
{
    mesh_session *s = ctx;
    mesh_vector_clear(&s->self);
    int rc = mesh_store_streams(t, load_stream, s);
    if (rc == MESH_ELIMIT)
        return mesh_err(MESH_ELIMIT, "this node holds more than %u streams, the protocol's vector "
                        "limit; it cannot sync", MESH_VECTOR_ENTRIES_MAX);
    if (rc != MESH_OK) return rc;
    mesh_peer_state ps;
    rc = mesh_store_peer_get(t, s->o.peer, &ps);
    if (rc == MESH_ENOTFOUND || rc == MESH_ECORRUPT) return MESH_OK; /* full vectors, then */
    if (rc != MESH_OK) return rc;
    /* A damaged record only costs a full vector. */
    if (mesh_vector_load(&s->ours_base, ps.ours, ps.ours_count) == MESH_OK &&
        mesh_vector_load(&s->theirs_base, ps.theirs, ps.theirs_count) == MESH_OK)
        s->have_record = true;
    return MESH_OK;
}

static void session_free_memory(mesh_session *s)
{
    mesh_vector_fini(&s->self);
    mesh_vector_fini(&s->ours_base);
    mesh_vector_fini(&s->theirs_base);
    mesh_vector_fini(&s->ann);
    mesh_vector_fini(&s->in_entries);
    mesh_vector_fini(&s->peer);
    mesh_vector_fini(&s->recv_max);
    mesh_vector_fini(&s->poisoned);
    mesh_vector_fini(&s->scratch);
    mesh_vector_fini(&s->recv_new);
    mesh_buf_fini(&s->items);
    mesh_buf_fini(&s->arena);
    free(s->plan);
    free(s->buf);
    free(s);
}

int mesh_session_new(const mesh_session_opts *o, uint64_t now_ms, mesh_session **out)
{
    *out = NULL;
    if (o == NULL || o->store == NULL) return mesh_err(MESH_EINVAL, "a session needs a store");
    if (o->frame_bytes_max != 0 &&
        (o->frame_bytes_max < MESH_FRAME_BYTES_MIN || o->frame_bytes_max > MESH_FRAME_BYTES_MAX))
        return mesh_err(MESH_EINVAL, "frame_bytes_max %u is outside %u..%u", o->frame_bytes_max,
                        MESH_FRAME_BYTES_MIN, MESH_FRAME_BYTES_MAX);
    if (o->frame_ops_max > MESH_FRAME_OPS_MAX)
        return mesh_err(MESH_EINVAL, "frame_ops_max %u is above the protocol limit %u",
                        o->frame_ops_max, MESH_FRAME_OPS_MAX);
    if (o->ingest_batch_ops > MESH_INGEST_BATCH_MAX)
        return mesh_err(MESH_EINVAL, "ingest_batch_ops %u is above %u", o->ingest_batch_ops,
                        MESH_INGEST_BATCH_MAX);
    int rc = mesh_crypto_init();
    if (rc != MESH_OK) return rc;
    mesh_session *s = calloc(1, sizeof *s);
    if (s == NULL) return mesh_err(MESH_ENOMEM, "out of memory starting a sync session");
    s->o = *o;
    if (!s->o.idle_timeout_ms) s->o.idle_timeout_ms = MESH_SESSION_IDLE_MS_DEFAULT;
    if (!s->o.frame_bytes_max) s->o.frame_bytes_max = MESH_FRAME_BYTES_DEFAULT;
    if (!s->o.frame_ops_max) s->o.frame_ops_max = MESH_FRAME_OPS_MAX;
    if (!s->o.ingest_batch_ops) s->o.ingest_batch_ops = MESH_INGEST_OPS_DEFAULT;
    s->state = MESH_SESSION_ACTIVE;
    s->last_ms = now_ms;
    char hex[2 * MESH_KEY_BYTES + 1];
    mesh_hex_encode(o->peer, MESH_KEY_BYTES, hex);
    memcpy(s->peer_hex, hex, 16);
    s->peer_hex[16] = '\0';
    mesh_vector_init(&s->self);
    mesh_vector_init(&s->ours_base);
    mesh_vector_init(&s->theirs_base);
    mesh_vector_init(&s->ann);
    mesh_vector_init(&s->in_entries);
    mesh_vector_init(&s->peer);
    mesh_vector_init(&s->recv_max);
    mesh_vector_init(&s->poisoned);
    mesh_vector_init(&s->scratch);
    mesh_vector_init(&s->recv_new);
    mesh_buf_init(&s->items, s->o.frame_bytes_max);
    mesh_buf_init(&s->arena, RECV_BUFFER_BYTES_MAX + MESH_FRAME_BYTES_MAX);

    rc = mesh_store_read(o->store, load_fn, s);
    if (rc == MESH_OK) mesh_vector_digest(&s->self, s->self_digest);
    if (rc != MESH_OK) {
        session_free_memory(s);
        return rc;
    }
    *out = s;
    return MESH_OK;
}

void mesh_session_free(mesh_session *s)
{
    if (s == NULL) return;
    /* An interrupted session keeps what it received (best effort: nothing to report to). */
    if (s->state == MESH_SESSION_ACTIVE) (void)flush(s);
    session_free_memory(s);
}

void mesh_session_abort(mesh_session *s)
{
    if (s == NULL) return;
    session_free_memory(s);
}

/* ---- Sending ------------------------------------------------------------------------------- */

/* Writes the next frame of our announcement: the head (HELLO or VECTOR) or a MORE. */
static int send_announcement(mesh_session *s, mesh_buf *out)
{
    mesh_frame f = {0};
    f.fno = s->fno_out + 1;
    if (!s->ann_head_sent) {
        f.type = s->ann_type;
        f.version = s->ann_version;
        f.version_min = MESH_PROTO_VERSION_MIN;
        f.flags = s->ann_flags;
        memcpy(f.digest, s->self_digest, sizeof f.digest);
        f.total = s->ann.n;
    } else {
        f.type = MESH_FRAME_MORE;
        f.version = s->ann_version;
    }
    /* As many entries as fit; a MORE carries at least one (the frame minimum guarantees room). */
    mesh_buf_reset(&s->items);
    size_t budget = s->o.frame_bytes_max - MESH_FRAME_HEAD_BYTES_MAX;
    size_t i = s->ann_pos;
    for (; i < s->ann.n; i++) {
        const mesh_vec_entry *e = &s->ann.e[i];
        if (s->items.len + mesh_mp_uint_size(e->sid) + mesh_mp_uint_size(e->seq) > budget) break;
        int rc = mesh_mp_put_uint(&s->items, e->sid);
        if (rc == MESH_OK) rc = mesh_mp_put_uint(&s->items, e->seq);
        if (rc != MESH_OK) return rc;
    }
    f.items = s->items.data;
    f.items_len = s->items.len;
    f.nitems = i - s->ann_pos;
    int rc = mesh_frame_encode(&f, out);
    if (rc != MESH_OK) return rc;
    s->ann_pos = i;
    s->ann_head_sent = true;
    if (s->ann_pos == s->ann.n) {
        if (s->ann_type == MESH_FRAME_HELLO) s->hello_sent = true;
        s->ann_type = 0;
    }
    return MESH_OK;
}

static int vector_copy(mesh_vector *dst, const mesh_vector *src)
{
    mesh_vector_clear(dst);
    int rc = mesh_vector_reserve(dst, src->n);
    if (rc != MESH_OK || src->n == 0) return rc;
    memcpy(dst->e, src->e, src->n * sizeof *src->e);
    dst->n = src->n;
    return MESH_OK;
}

/* Starts a HELLO: a delta against what the peer holds of our vector when we know it and it is
 * smaller, else the full vector. */
static int start_hello(mesh_session *s)
{
    int rc = MESH_OK;
    s->ann_flags = MESH_HELLO_FULL;
    if (s->have_record) {
        rc = mesh_vector_diff(&s->self, &s->ours_base, &s->ann);
        if (rc == MESH_OK && s->ann.n < s->self.n) s->ann_flags = 0;
    }
    if (rc == MESH_OK && s->ann_flags == MESH_HELLO_FULL) {
        rc = vector_copy(&s->ann, &s->self);
    }
    if (rc != MESH_OK) return rc;
    s->ann_type = MESH_FRAME_HELLO;
    /* HELLO and the MOREs after it carry our highest version: the peer has not chosen yet. */
    s->ann_version = MESH_PROTO_VERSION_MAX;
    s->ann_pos = 0;
    s->ann_head_sent = false;
    s->hello_started = true;
    return MESH_OK;
}

static int start_vector(mesh_session *s)
{
    int rc = vector_copy(&s->ann, &s->self);
    if (rc != MESH_OK) return rc;
    s->ann_type = MESH_FRAME_VECTOR;
    s->ann_version = s->version;
    s->ann_flags = 0;
    s->ann_pos = 0;
    s->ann_head_sent = false;
    s->vector_started = true;
    return MESH_OK;
}

typedef struct plan_ctx {
    mesh_session *s;
} plan_ctx;

static int plan_stream(const mesh_stream *st, void *ctx)
{
    mesh_session *s = ((plan_ctx *)ctx)->s;
    /* Only what we announced: a stream that grew since is sent next time. */
    uint64_t mine = mesh_vector_get(&s->self, st->sid);
    uint64_t theirs = mesh_vector_get(&s->peer, st->sid);
    if (mine <= theirs) return MESH_OK;
    if (s->o.peer_may_hold &&
        !s->o.peer_may_hold(st->author, st->scope, st->scope_len, s->o.filter_ctx))
        return MESH_OK;
    MESH_ASSERT(s->nplan < s->self.n);
    s->plan[s->nplan++] = (plan_entry){.sid = st->sid, .next = theirs + 1, .last = mine};
    return MESH_OK;
}

static int plan_fn(mesh_txn *t, void *ctx) { return mesh_store_streams(t, plan_stream, ctx); }

/* Lists the streams where we are ahead of the peer, in stream id order. */
static int make_plan(mesh_session *s)
{
    s->plan = malloc((s->self.n ? s->self.n : 1) * sizeof *s->plan);
    if (s->plan == NULL) return mesh_err(MESH_ENOMEM, "out of memory planning a sync session");
    s->nplan = 0;
    plan_ctx c = {.s = s};
    int rc = mesh_store_read(s->o.store, plan_fn, &c);
    if (rc != MESH_OK) return rc;
    s->planned = true;
    return MESH_OK;
}

typedef struct fill_ctx {
    mesh_session *s;
    plan_entry *pe;
    size_t n;            /* records in the frame so far */
    size_t budget;
} fill_ctx;

static int fill_op(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    fill_ctx *c = ctx;
    mesh_session *s = c->s;
    if (seq != c->pe->next)
        return mesh_err(MESH_ECORRUPT, "the store lacks op %llu of stream %016llx that it listed",
                        (unsigned long long)c->pe->next, (unsigned long long)c->pe->sid);
    size_t need = mesh_mp_bin_size(rec->op_len) + mesh_mp_bin_size(MESH_SIGNATURE_BYTES);
    if (c->n == s->o.frame_ops_max || s->items.len + need > c->budget) {
        if (c->n == 0)
            return mesh_err(MESH_ELIMIT, "an op of %zu bytes does not fit frame_bytes_max %u",
                            rec->op_len, s->o.frame_bytes_max);
        return STOP_FULL;
    }
    int rc = mesh_mp_put_bin(&s->items, rec->op, rec->op_len);
    if (rc == MESH_OK) rc = mesh_mp_put_bin(&s->items, rec->sig, MESH_SIGNATURE_BYTES);
    if (rc != MESH_OK) return rc;
    c->n++;
    c->pe->next++;
    return c->pe->next > c->pe->last ? STOP_STREAM : MESH_OK;
}

static int fill_fn(mesh_txn *t, void *ctx)
{
    fill_ctx *c = ctx;
    mesh_session *s = c->s;
    while (s->plan_pos < s->nplan) {
        c->pe = &s->plan[s->plan_pos];
        int rc = mesh_store_stream_ops(t, c->pe->sid, c->pe->next, fill_op, c);
        if (rc == STOP_FULL) return MESH_OK;
        if (rc == STOP_STREAM) {
            s->plan_pos++;
            continue;
        }
        if (rc == MESH_OK)
            rc = mesh_err(MESH_ECORRUPT, "the store ends stream %016llx before op %llu",
                          (unsigned long long)c->pe->sid, (unsigned long long)c->pe->next);
        return rc;
    }
    return MESH_OK;
}

/* Writes the next OPS frame, or DONE when every planned stream is sent. */
static int send_ops(mesh_session *s, mesh_buf *out)
{
    int rc;
    if (!s->planned && (rc = make_plan(s)) != MESH_OK) return rc;
    mesh_frame f = {.version = s->version, .fno = s->fno_out + 1};
    if (s->plan_pos == s->nplan) {
        f.type = MESH_FRAME_DONE;
        f.ops = s->st.ops_sent;
        f.frames = s->ops_frames_sent;
        rc = mesh_frame_encode(&f, out);
        if (rc == MESH_OK) s->done_sent = true;
        return rc;
    }
    mesh_buf_reset(&s->items);
    fill_ctx c = {.s = s, .budget = s->o.frame_bytes_max - MESH_FRAME_HEAD_BYTES_MAX};
    rc = mesh_store_read(s->o.store, fill_fn, &c);
    if (rc != MESH_OK) return rc;
    MESH_ASSERT(c.n > 0);
    f.type = MESH_FRAME_OPS;
    f.items = s->items.data;
    f.items_len = s->items.len;
    f.nitems = c.n;
    rc = mesh_frame_encode(&f, out);
    if (rc != MESH_OK) return rc;
    s->st.ops_sent += c.n;
    s->ops_frames_sent++;
    return MESH_OK;
}

/* Chooses and writes the next frame; MESH_EAGAIN if we wait for the peer. */
static int next_frame(mesh_session *s, mesh_buf *out)
{
    int rc;
    if (s->ann_type != 0) return send_announcement(s, out);
    /* The initiator speaks first; the responder answers once the whole HELLO arrived. */
    if (!s->hello_started && (s->o.initiator || s->hello_received)) {
        if ((rc = start_hello(s)) != MESH_OK) return rc;
        return send_announcement(s, out);
    }
    if (!s->hello_sent) return MESH_EAGAIN;
    if (s->want_out && !s->want_sent) {
        mesh_frame f = {.type = MESH_FRAME_WANT, .version = s->version, .fno = s->fno_out + 1};
        rc = mesh_frame_encode(&f, out);
        if (rc == MESH_OK) s->want_sent = true;
        return rc;
    }
    if (s->peer_wants && !s->vector_started) {
        if ((rc = start_vector(s)) != MESH_OK) return rc;
        return send_announcement(s, out);
    }
    if (s->peer_known && !s->done_sent) return send_ops(s, out);
    return MESH_EAGAIN;
}

/* ---- Completion ---------------------------------------------------------------------------- */

typedef struct persist_ctx {
    mesh_session *s;
    mesh_peer_state ps;
} persist_ctx;

static int persist_fn(mesh_txn *t, void *ctx)
{
    persist_ctx *c = ctx;
    return mesh_store_peer_put(t, c->s->o.peer, &c->ps);
}

/* Records what both sides now hold of each other's vector: each side computes the same from
 * the two HELLOs and the ops that went across (proto/PROTOCOL.md, "Version vectors"). */
static void persist(mesh_session *s, uint64_t now_ms)
{
    mesh_vector ours, theirs, sent;
    mesh_vector_init(&ours);
    mesh_vector_init(&theirs);
    mesh_vector_init(&sent);
    uint8_t *raw = NULL;
    int rc = mesh_vector_join(&s->self, &s->recv_max, &ours);
    for (size_t i = 0; i < s->nplan && rc == MESH_OK; i++)
        rc = mesh_vector_push(&sent, s->plan[i].sid, s->plan[i].last);
    if (rc == MESH_OK) rc = mesh_vector_join(&s->peer, &sent, &theirs);
    if (rc == MESH_OK) {
        raw = malloc((ours.n + theirs.n) * MESH_PEER_ENTRY_BYTES + 1);
        if (raw == NULL) rc = MESH_ENOMEM;
    }
    if (rc == MESH_OK) {
        mesh_vector_save(&ours, raw);
        mesh_vector_save(&theirs, raw + ours.n * MESH_PEER_ENTRY_BYTES);
        persist_ctx c = {.s = s,
                         .ps = {.synced_ms = now_ms,
                                .ours = raw,
                                .ours_count = ours.n,
                                .theirs = raw + ours.n * MESH_PEER_ENTRY_BYTES,
                                .theirs_count = theirs.n}};
        /* A failure here costs the next session one full vector; the data is all stored. */
        (void)mesh_store_write(s->o.store, persist_fn, &c);
    }
    free(raw);
    mesh_vector_fini(&ours);
    mesh_vector_fini(&theirs);
    mesh_vector_fini(&sent);
}

static void check_complete(mesh_session *s, uint64_t now_ms)
{
    if (s->state != MESH_SESSION_ACTIVE || !s->done_sent || !s->done_received || s->nbuf > 0 ||
        s->ann_type != 0)
        return;
    persist(s, now_ms);
    s->state = MESH_SESSION_DONE;
}

int mesh_session_send(mesh_session *s, mesh_buf *out, uint64_t now_ms)
{
    mesh_buf_reset(out);
    if (out->cap < s->o.frame_bytes_max)
        return mesh_err(MESH_EINVAL, "the output buffer's cap %zu is below frame_bytes_max %u",
                        out->cap, s->o.frame_bytes_max);
    int rc;
    if (s->state == MESH_SESSION_FAILED) {
        if (!s->error_out) return MESH_ECLOSED;
        s->error_out = false;
        /* Before negotiation the peer reads ERROR at any version: its prefix is frozen. */
        mesh_frame f = {.type = MESH_FRAME_ERROR,
                        .version = s->version ? s->version : MESH_PROTO_VERSION_MAX,
                        .fno = s->fno_out + 1,
                        .code = (uint32_t)-s->st.error,
                        .msg = s->st.error_msg,
                        .msg_len = strlen(s->st.error_msg)};
        if (f.msg_len > MESH_ERROR_MSG_BYTES_MAX) f.msg_len = MESH_ERROR_MSG_BYTES_MAX;
        rc = mesh_frame_encode(&f, out);
        if (rc != MESH_OK) return rc;
    } else if (s->state == MESH_SESSION_DONE) {
        return MESH_ECLOSED;
    } else {
        rc = next_frame(s, out);
        if (rc == MESH_EAGAIN) return rc;
        if (rc != MESH_OK) {
            mesh_buf_reset(out);
            mesh_err_wrap(rc, "sync with peer %s", s->peer_hex);
            return fail(s, rc, true);
        }
        s->last_ms = now_ms;
    }
    s->fno_out++;
    s->st.frames_sent++;
    s->st.bytes_sent += out->len;
    check_complete(s, now_ms);
    return MESH_OK;
}

/* ---- Receiving ----------------------------------------------------------------------------- */

/* Appends a frame's entries to the announcement being received. */
static int take_entries(mesh_session *s, const mesh_frame *f)
{
    if (s->in_entries.n + f->nitems > s->in_total)
        return violation(s, MESH_EPROTO, "%s frame carries more vector entries than announced",
                         mesh_frame_type_name(f->type));
    mesh_frame_iter it;
    mesh_frame_iter_init(&it, f);
    uint64_t sid, seq;
    while (mesh_frame_next_entry(&it, &sid, &seq)) {
        int rc = mesh_vector_push(&s->in_entries, sid, seq);
        if (rc == MESH_EINVAL)
            return violation(s, MESH_EPROTO, "vector entries out of stream order across frames");
        if (rc != MESH_OK) return fail(s, rc, true);
    }
    return MESH_OK;
}

static bool is_full_vector(const mesh_vector *v)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->e[i].seq == 0) return false;
    return true;
}

/* The peer's vector is known: an honest peer sends at most the ops by which it is ahead of what
 * we announced, which bounds the session whatever it sends. */
static int peer_learned(mesh_session *s)
{
    s->peer_known = true;
    uint64_t budget = 0;
    for (size_t i = 0; i < s->peer.n; i++) {
        uint64_t mine = mesh_vector_get(&s->self, s->peer.e[i].sid);
        if (s->peer.e[i].seq > mine) budget += s->peer.e[i].seq - mine;
    }
    s->recv_budget = budget;
    if (s->st.ops_received > budget)
        return violation(s, MESH_EPROTO, "%llu ops arrived but its vector accounts for %llu",
                         (unsigned long long)s->st.ops_received, (unsigned long long)budget);
    return MESH_OK;
}

/* The whole announcement arrived: learn the peer's vector, or ask for the full one. */
static int finish_announcement(mesh_session *s)
{
    uint8_t d[MESH_VECTOR_DIGEST_BYTES];
    uint32_t type = s->in_type;
    s->in_type = 0;
    if (type == MESH_FRAME_HELLO) s->hello_received = true;
    else s->vector_received = true;
    bool full = type == MESH_FRAME_VECTOR || (s->in_flags & MESH_HELLO_FULL);
    if (full) {
        if (!is_full_vector(&s->in_entries))
            return violation(s, MESH_EPROTO, "a full vector holds a stream at seq 0");
        mesh_vector_digest(&s->in_entries, d);
        if (memcmp(d, s->in_digest, sizeof d) != 0)
            return violation(s, MESH_EPROTO, "the %s does not match its digest",
                             type == MESH_FRAME_HELLO ? "HELLO's full vector" : "VECTOR");
        mesh_vector tmp = s->peer;
        s->peer = s->in_entries;
        s->in_entries = tmp;
        return peer_learned(s);
    }
    /* A delta: rebuild from our copy; any disagreement shows in the digest. */
    if (s->have_record) {
        int rc = mesh_vector_patch(&s->theirs_base, &s->in_entries, &s->peer);
        if (rc == MESH_OK) {
            mesh_vector_digest(&s->peer, d);
            if (memcmp(d, s->in_digest, sizeof d) == 0) return peer_learned(s);
        } else if (rc != MESH_ELIMIT) {
            return fail(s, rc, true);
        }
        mesh_vector_clear(&s->peer);
    }
    s->want_out = true;
    return MESH_OK;
}

static int start_in(mesh_session *s, const mesh_frame *f)
{
    s->in_type = f->type;
    s->in_version = f->version;
    s->in_total = f->total;
    memcpy(s->in_digest, f->digest, sizeof s->in_digest);
    mesh_vector_clear(&s->in_entries);
    /* total was checked against MESH_VECTOR_ENTRIES_MAX by the decoder. */
    int rc = mesh_vector_reserve(&s->in_entries, (size_t)f->total);
    if (rc != MESH_OK) return fail(s, rc, true);
    if ((rc = take_entries(s, f)) != MESH_OK) return rc;
    return s->in_entries.n == s->in_total ? finish_announcement(s) : MESH_OK;
}

static int on_hello(mesh_session *s, const mesh_frame *f)
{
    if (s->hello_received || s->in_type != 0) return violation(s, MESH_EPROTO, "a second HELLO");
    if (s->o.initiator && !s->hello_sent)
        return violation(s, MESH_EPROTO, "HELLO before ours was sent; the initiator speaks first");
    uint32_t lo = f->version_min > MESH_PROTO_VERSION_MIN ? f->version_min : MESH_PROTO_VERSION_MIN;
    uint32_t hi = f->version < MESH_PROTO_VERSION_MAX ? f->version : MESH_PROTO_VERSION_MAX;
    if (lo > hi) {
        mesh_err(MESH_EVERSION,
                 "peer %s speaks sync protocol versions %u..%u and this node %u..%u: upgrade "
                 "the older node's meshsync",
                 s->peer_hex, f->version_min, f->version, MESH_PROTO_VERSION_MIN,
                 MESH_PROTO_VERSION_MAX);
        return fail(s, MESH_EVERSION, true);
    }
    s->version = hi;
    if (s->o.initiator) s->st.round_trips++;  /* our HELLO's answer */
    memcpy(s->hello_digest, f->digest, sizeof s->hello_digest);
    s->in_flags = f->flags;
    return start_in(s, f);
}

static int on_vector(mesh_session *s, const mesh_frame *f)
{
    if (!s->want_sent || s->vector_received || s->in_type != 0)
        return violation(s, MESH_EPROTO, "a VECTOR that was not asked for");
    if (memcmp(f->digest, s->hello_digest, sizeof f->digest) != 0)
        return violation(s, MESH_EPROTO, "the VECTOR's digest differs from its HELLO's");
    s->st.round_trips++;  /* our WANT's answer */
    s->in_flags = MESH_HELLO_FULL;
    return start_in(s, f);
}

static int on_more(mesh_session *s, const mesh_frame *f)
{
    if (s->in_type == 0) return violation(s, MESH_EPROTO, "a MORE frame without HELLO or VECTOR");
    if (f->version != s->in_version)
        return violation(s, MESH_EVERSION, "a MORE frame of version %u continues one of %u",
                         f->version, s->in_version);
    if (f->nitems == 0) return violation(s, MESH_EPROTO, "an empty MORE frame");
    int rc = take_entries(s, f);
    if (rc != MESH_OK) return rc;
    return s->in_entries.n == s->in_total ? finish_announcement(s) : MESH_OK;
}

/* Notes the highest seq the peer sent of each stream in this frame. */
static int note_received(mesh_session *s, uint64_t sid, uint64_t seq)
{
    size_t i = mesh_vector_find(&s->recv_max, sid);
    if (i != SIZE_MAX) {
        if (seq > s->recv_max.e[i].seq) s->recv_max.e[i].seq = seq;
        return MESH_OK;
    }
    return note_stream(&s->recv_new, sid, seq);
}

static int merge_received(mesh_session *s)
{
    if (s->recv_new.n == 0) return MESH_OK;
    mesh_vector_normalize(&s->recv_new);
    mesh_vector joined;
    mesh_vector_init(&joined);
    int rc = mesh_vector_join(&s->recv_max, &s->recv_new, &joined);
    mesh_vector_clear(&s->recv_new);
    if (rc != MESH_OK) {
        mesh_vector_fini(&joined);
        return rc;
    }
    mesh_vector_fini(&s->recv_max);
    s->recv_max = joined;
    return MESH_OK;
}

static int buffer_record(mesh_session *s, const mesh_oprec *rec, uint64_t sid, uint64_t seq)
{
    if (s->nbuf == s->buf_cap) {
        size_t cap = s->buf_cap ? s->buf_cap * 2 : 1024;
        buffered *b = realloc(s->buf, cap * sizeof *b);
        if (b == NULL) return mesh_err(MESH_ENOMEM, "out of memory buffering received ops");
        s->buf = b;
        s->buf_cap = cap;
    }
    size_t off = s->arena.len;
    int rc = mesh_buf_append(&s->arena, rec->sig, MESH_SIGNATURE_BYTES);
    if (rc == MESH_OK) rc = mesh_buf_append(&s->arena, rec->op, rec->op_len);
    if (rc != MESH_OK) return rc;
    s->buf[s->nbuf++] = (buffered){.off = off, .op_len = rec->op_len, .sid = sid, .seq = seq};
    return MESH_OK;
}

static int on_ops(mesh_session *s, const mesh_frame *f)
{
    if (!s->hello_received) return violation(s, MESH_EPROTO, "OPS before HELLO");
    if (s->done_received) return violation(s, MESH_EPROTO, "OPS after DONE");
    if (f->nitems == 0) return violation(s, MESH_EPROTO, "an empty OPS frame");
    s->ops_frames_received++;
    s->st.ops_received += f->nitems;
    if (s->peer_known && s->st.ops_received > s->recv_budget)
        return violation(s, MESH_EPROTO, "%llu ops arrived but its vector accounts for %llu",
                         (unsigned long long)s->st.ops_received,
                         (unsigned long long)s->recv_budget);
    int rc = MESH_OK;
    /* Keep each transaction within the batch and the buffer within its bytes. */
    if (s->nbuf > 0 && (s->nbuf + f->nitems > s->o.ingest_batch_ops ||
                        s->arena.len + f->items_len > RECV_BUFFER_BYTES_MAX))
        rc = flush(s);
    mesh_vector_clear(&s->recv_new);
    mesh_frame_iter it;
    mesh_frame_iter_init(&it, f);
    mesh_oprec rec;
    mesh_sid_memo memo = {0};
    while (rc == MESH_OK && mesh_frame_next_record(&it, &rec)) {
        /* Only the stream position here: the store's ingest decodes and checks the whole op. */
        mesh_op op;
        if (mesh_op_peek(rec.op, rec.op_len, &op) != MESH_OK) {
            s->st.ops_rejected++;  /* e.g. a newer op format: the author's peers keep it */
            continue;
        }
        uint64_t sid = mesh_stream_id_memo(&memo, op.author, op.scope, op.scope_len);
        if ((rc = note_received(s, sid, op.seq)) != MESH_OK) break;
        if (mesh_vector_find(&s->poisoned, sid) != SIZE_MAX) {
            s->st.ops_rejected++;
            continue;
        }
        if (s->o.self_may_hold &&
            !s->o.self_may_hold(op.author, op.scope, op.scope_len, s->o.filter_ctx)) {
            s->st.ops_rejected++;
            if (s->st.reject_msg[0] == '\0') {
                char author[MESH_KEY_STR_LEN];
                mesh_hex_encode(op.author, MESH_KEY_BYTES, author);
                snprintf(s->st.reject_msg, sizeof s->st.reject_msg,
                         "ops of stream %.16s.../%.*s, which this node may not hold (outside "
                         "its roster scopes); rejected", author, (int)op.scope_len, op.scope);
            }
            continue;
        }
        rc = buffer_record(s, &rec, sid, op.seq);
    }
    if (rc == MESH_OK) rc = merge_received(s);
    if (rc == MESH_ELIMIT)
        return violation(s, MESH_EPROTO, "ops of more than %u streams", MESH_VECTOR_ENTRIES_MAX);
    if (rc == MESH_OK &&
        (s->nbuf >= s->o.ingest_batch_ops || s->arena.len >= RECV_BUFFER_BYTES_MAX))
        rc = flush(s);
    return rc == MESH_OK ? MESH_OK : fail(s, rc, true);
}

static int on_done(mesh_session *s, const mesh_frame *f)
{
    if (!s->hello_received) return violation(s, MESH_EPROTO, "DONE before HELLO");
    if (s->done_received) return violation(s, MESH_EPROTO, "a second DONE");
    if (f->ops != s->st.ops_received || f->frames != s->ops_frames_received)
        return violation(s, MESH_EPROTO,
                         "DONE counts %llu ops in %llu frames but %llu ops in %llu frames arrived",
                         (unsigned long long)f->ops, (unsigned long long)f->frames,
                         (unsigned long long)s->st.ops_received,
                         (unsigned long long)s->ops_frames_received);
    s->done_received = true;
    int rc = flush(s);
    return rc == MESH_OK ? MESH_OK : fail(s, rc, true);
}

static int on_error(mesh_session *s, const mesh_frame *f)
{
    /* The message is the peer's text: keep it printable. */
    char text[MESH_ERROR_MSG_BYTES_MAX + 1];
    size_t n = f->msg_len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)f->msg[i];
        text[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    text[n] = '\0';
    int code = f->code == (uint32_t)-MESH_EVERSION ? MESH_EVERSION : MESH_ECLOSED;
    mesh_err(code, "peer %s ended the session with error %u (%s): %s", s->peer_hex, f->code,
             mesh_strerror(-(int)f->code), text);
    return fail(s, code, false);
}

int mesh_session_recv(mesh_session *s, const uint8_t *frame, size_t len, uint64_t now_ms)
{
    s->st.frames_received++;
    s->st.bytes_received += len;
    mesh_frame f;
    int rc = mesh_frame_decode(frame, len, &f);
    if (s->state != MESH_SESSION_ACTIVE) {
        /* A retried frame after the end changes nothing. */
        if (rc == MESH_OK && f.type != MESH_FRAME_ERROR && f.fno <= s->fno_in) return MESH_OK;
        return mesh_err(MESH_ECLOSED, "the sync session with peer %s is over", s->peer_hex);
    }
    s->last_ms = now_ms;
    if (rc != MESH_OK) {
        mesh_err_wrap(rc, "peer %s sent a bad frame", s->peer_hex);
        return fail(s, rc, true);
    }
    if (f.type == MESH_FRAME_ERROR) return on_error(s, &f);
    if (f.fno <= s->fno_in) return MESH_OK;  /* a duplicate: already handled */
    if (f.fno != s->fno_in + 1)
        return violation(s, MESH_EPROTO, "frame %llu arrived after frame %llu: frames were lost",
                         (unsigned long long)f.fno, (unsigned long long)s->fno_in);
    s->fno_in = f.fno;
    if (f.type != MESH_FRAME_HELLO && f.type != MESH_FRAME_MORE) {
        if (s->version == 0)
            return violation(s, MESH_EPROTO, "%s before HELLO", mesh_frame_type_name(f.type));
        if (f.version != s->version)
            return violation(s, MESH_EVERSION, "%s frame of version %u in a version %u session",
                             mesh_frame_type_name(f.type), f.version, s->version);
    }
    switch (f.type) {
    case MESH_FRAME_HELLO: rc = on_hello(s, &f); break;
    case MESH_FRAME_VECTOR: rc = on_vector(s, &f); break;
    case MESH_FRAME_MORE: rc = on_more(s, &f); break;
    case MESH_FRAME_OPS: rc = on_ops(s, &f); break;
    case MESH_FRAME_DONE: rc = on_done(s, &f); break;
    case MESH_FRAME_WANT:
        if (s->peer_wants || !s->hello_sent)
            return violation(s, MESH_EPROTO, "WANT before our HELLO, or twice");
        s->peer_wants = true;
        rc = MESH_OK;
        break;
    default: MESH_ASSERT(0);
    }
    if (rc == MESH_OK) check_complete(s, now_ms);
    return rc;
}

/* ---- Time and status ----------------------------------------------------------------------- */

uint64_t mesh_session_expiry(const mesh_session *s)
{
    if (s->state != MESH_SESSION_ACTIVE) return UINT64_MAX;
    uint64_t t = s->last_ms + s->o.idle_timeout_ms;
    return t < s->last_ms ? UINT64_MAX : t;
}

int mesh_session_handle_expiry(mesh_session *s, uint64_t now_ms)
{
    if (s->state != MESH_SESSION_ACTIVE || now_ms < mesh_session_expiry(s)) return MESH_OK;
    mesh_err(MESH_ETIMEDOUT,
             "peer %s sent nothing for %u ms; what arrived is stored and the next session "
             "resumes from there",
             s->peer_hex, s->o.idle_timeout_ms);
    return fail(s, MESH_ETIMEDOUT, true);
}

mesh_session_state mesh_session_state_get(const mesh_session *s) { return s->state; }

void mesh_session_stats_get(const mesh_session *s, mesh_session_stats *out) { *out = s->st; }
