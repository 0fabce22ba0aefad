/*
 * queue.c - the persisted write queue and its worker, standing in for DIGIT's Kafka topics and
 * consumers: accepted writes are stored in LMDB in arrival order with a due time
 * (--process-delay-ms after arrival) and applied by one worker thread, oldest first, each item
 * in one write transaction together with its removal from the queue. A restart resumes where
 * the last commit left off, so accepted work is never lost and never applied twice.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "campaign.h"

int cs_queue_put(MDB_txn *txn, cs_server *srv, json_t *item, uint64_t *qseq)
{
    uint64_t seq;
    int rc = cs_store_counter_add(txn, &srv->store, "queue.seq", 1, &seq);
    if (!rc) {
        uint8_t key[8];
        cs_be64_put(key, seq);
        rc = cs_store_put_json(txn, srv->store.queue, key, 8, item);
    }
    json_decref(item);
    if (!rc && qseq)
        *qseq = seq;
    return rc;
}

void cs_queue_kick(cs_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->queue_kicks++;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
}

/* Applies the oldest queued item if it is due (or `force`). Returns 1 when one was applied, 0
 * when nothing is due (*due_ms = its due time, or -1 when the queue is empty), or -1 on a store
 * failure (logged; the item stays queued). */
static int apply_head(cs_server *srv, bool force, int64_t *due_ms)
{
    *due_ms = -1;
    MDB_txn *txn;
    int rc = cs_store_begin(&srv->store, true, &txn);
    if (rc) {
        cs_log("error", "queue: begin: %s", mdb_strerror(rc));
        return -1;
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, srv->store.queue, &cur);
    MDB_val k, v;
    if (!rc)
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (rc) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND)
            return 0;
        cs_log("error", "queue: reading the head: %s", mdb_strerror(rc));
        return -1;
    }
    uint64_t qseq = k.mv_size == 8 ? cs_be64_get(k.mv_data) : 0;
    json_t *item = json_loadb(v.mv_data, v.mv_size, 0, NULL);
    if (item && !force) {
        int64_t due = json_integer_value(json_object_get(item, "dueTime"));
        if (due > cs_now_ms()) {
            json_decref(item);
            mdb_txn_abort(txn);
            *due_ms = due;
            return 0;
        }
    }
    const char *kind = cs_json_str(item, "kind");
    if (!item || !kind)
        rc = MDB_CORRUPTED;
    else if (!strcmp(kind, "entities"))
        rc = cs_entities_apply_item(txn, srv, item, qseq);
    else if (!strcmp(kind, "file"))
        rc = cs_files_apply_sync(txn, srv, item);
    else
        rc = MDB_CORRUPTED;
    json_decref(item);
    if (rc == MDB_CORRUPTED) {
        /* A record this program cannot read would block the queue forever: log and drop it. */
        mdb_txn_abort(txn);
        cs_log("error", "queue: item %llu is unreadable; removing it", (unsigned long long)qseq);
        if (cs_store_begin(&srv->store, true, &txn) != 0)
            return -1;
        if (mdb_cursor_open(txn, srv->store.queue, &cur) != 0 ||
            mdb_cursor_get(cur, &k, &v, MDB_FIRST) != 0) {
            mdb_txn_abort(txn);
            return -1;
        }
        rc = 0;
    }
    if (!rc)
        rc = mdb_cursor_del(cur, 0);
    if (rc) {
        mdb_txn_abort(txn);
        cs_log("error", "queue: applying item %llu: %s (will retry)", (unsigned long long)qseq,
               mdb_strerror(rc));
        return -1;
    }
    rc = mdb_txn_commit(txn);
    if (rc) {
        cs_log("error", "queue: committing item %llu: %s (will retry)",
               (unsigned long long)qseq, mdb_strerror(rc));
        return -1;
    }
    return 1;
}

static void wait_until_ms(cs_server *srv, int64_t wall_ms)
{
    /* The condition variable uses CLOCK_REALTIME, the same clock as dueTime. */
    struct timespec ts = {.tv_sec = wall_ms / 1000, .tv_nsec = (wall_ms % 1000) * 1000000};
    pthread_cond_timedwait(&srv->cond, &srv->mu, &ts);
}

static void *worker_main(void *arg)
{
    cs_server *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        bool stop = srv->stopping;
        uint64_t kicks = srv->queue_kicks;
        pthread_mutex_unlock(&srv->mu);
        if (stop)
            break;
        int64_t due;
        int r = apply_head(srv, false, &due);
        if (r == 1)
            continue;
        pthread_mutex_lock(&srv->mu);
        if (!srv->stopping && kicks == srv->queue_kicks) {
            if (r < 0)
                wait_until_ms(srv, cs_now_ms() + 1000); /* back off after a store failure */
            else if (due < 0)
                pthread_cond_wait(&srv->cond, &srv->mu);
            else
                wait_until_ms(srv, due);
        }
        pthread_mutex_unlock(&srv->mu);
    }
    return NULL;
}

int cs_queue_start(cs_server *srv)
{
    int rc = pthread_create(&srv->worker, NULL, worker_main, srv);
    if (rc) {
        cs_log("error", "starting the queue worker: %s", strerror(rc));
        return -1;
    }
    srv->worker_started = true;
    return 0;
}

void cs_queue_stop(cs_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
    if (srv->worker_started)
        pthread_join(srv->worker, NULL);
    srv->worker_started = false;
}

long cs_queue_flush(cs_server *srv)
{
    /* Bounded by the items queued now, so a steady stream of new writes cannot keep it busy. */
    MDB_txn *txn;
    MDB_stat stat;
    int rc = cs_store_begin(&srv->store, false, &txn);
    if (rc)
        return -1;
    rc = mdb_stat(txn, srv->store.queue, &stat);
    mdb_txn_abort(txn);
    if (rc)
        return -1;
    long applied = 0;
    for (size_t i = 0; i < stat.ms_entries; i++) {
        int64_t due;
        int r = apply_head(srv, true, &due);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        applied++;
    }
    return applied;
}
