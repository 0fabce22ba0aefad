/*
 * bundle_io.c - export to and import from bundle files (ops on a USB stick).
 *
 * Export writes a temporary file and renames it into place, so a bundle at `path` is always
 * complete. Import maps the file, checks its signature and structure, then ingests every op in
 * one transaction: a bad bundle leaves the store exactly as it was.
 */
#include "api/node_int.h"

#include "model/bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct export_ctx {
    mesh_node *n;
    mesh_bundle_writer w;
    mesh_txn *t;
    int fd;
    const char *path;
    uint64_t count;
} export_ctx;

static int flush_fd(const uint8_t *p, size_t len, void *vctx)
{
    export_ctx *c = vctx;
    while (len > 0) {
        ssize_t w = write(c->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0)
            return mesh_err(errno == ENOSPC ? MESH_ENOSPC : MESH_EIO, "writing %s: %s", c->path,
                            strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return MESH_OK;
}

static int export_op(const mesh_oprec *rec, uint64_t seq, void *vctx)
{
    (void)seq;
    export_ctx *c = vctx;
    c->count++;
    return mesh_bundle_writer_add(&c->w, rec);
}

static int export_stream(const mesh_stream *st, void *vctx)
{
    export_ctx *c = vctx;
    return mesh_store_stream_ops(c->t, st->sid, 1, export_op, c);
}

static int export_fn(mesh_txn *t, void *vctx)
{
    export_ctx *c = vctx;
    mesh_store_counts counts;
    int rc = mesh_store_counts_get(t, &counts);
    if (rc != MESH_OK) return rc;
    mesh_bundle_header h = {.created_ms = mesh_node_now_ms(c->n), .count = counts.ops};
    memcpy(h.exporter, c->n->id.pk, MESH_PK_BYTES);
    rc = mesh_bundle_writer_begin(&c->w, &h, flush_fd, c);
    if (rc != MESH_OK) return rc;
    c->t = t;
    rc = mesh_store_streams(t, export_stream, c);
    if (rc == MESH_OK) return mesh_bundle_writer_end(&c->w, &c->n->id);
    mesh_bundle_writer_abort(&c->w);
    return rc;
}

int mesh_export(mesh_node *n, const char *path, uint64_t *count)
{
    mesh_err_clear();
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return mesh_err(MESH_EINVAL, "path too long: %s", path);
    export_ctx c = {.n = n, .path = path};
    c.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (c.fd < 0) return mesh_err(MESH_EIO, "cannot create %s: %s", tmp, strerror(errno));
    int rc = mesh_store_read(n->store, export_fn, &c);
    if (rc == MESH_OK && fsync(c.fd) != 0)
        rc = mesh_err(MESH_EIO, "cannot flush %s: %s", tmp, strerror(errno));
    close(c.fd);
    if (rc == MESH_OK && rename(tmp, path) != 0)
        rc = mesh_err(MESH_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc != MESH_OK) {
        unlink(tmp);
        return rc;
    }
    if (count) *count = c.count;
    return MESH_OK;
}

typedef struct import_ctx {
    const uint8_t *buf;
    size_t len;
    mesh_ingest_report *rep;
} import_ctx;

static int import_fn(mesh_txn *t, void *vctx)
{
    import_ctx *c = vctx;
    /* A retry after map growth starts over: reset everything derived from the transaction. */
    memset(c->rep, 0, sizeof *c->rep);
    mesh_bundle_reader r;
    int rc = mesh_bundle_open(&r, c->buf, c->len);
    if (rc != MESH_OK) return rc;
    size_t batch_max = 10000;
    mesh_oprec *batch = malloc(sizeof *batch * batch_max);
    if (batch == NULL) return mesh_err(MESH_ENOMEM, "out of memory importing");
    for (;;) {
        size_t n = 0;
        while (n < batch_max && (rc = mesh_bundle_next(&r, &batch[n])) == MESH_OK) n++;
        if (rc != MESH_OK && rc != MESH_ENOTFOUND) break;
        bool end = rc == MESH_ENOTFOUND;
        rc = n ? mesh_store_ingest(t, batch, n, MESH_INGEST_ATOMIC, c->rep) : MESH_OK;
        if (rc != MESH_OK || end) break;
    }
    free(batch);
    return rc;
}

int mesh_import(mesh_node *n, const char *path, mesh_ingest_report *rep)
{
    mesh_err_clear();
    mesh_ingest_report local;
    if (rep == NULL) rep = &local;
    memset(rep, 0, sizeof *rep);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return mesh_err(MESH_ENOTFOUND, "%s does not exist", path);
        return mesh_err(MESH_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mesh_err(MESH_EINVAL, "%s is not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return mesh_err(MESH_ECORRUPT, "%s is empty: not a meshsync bundle", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return mesh_err(MESH_EIO, "cannot map %s: %s", path, strerror(errno));
    import_ctx c = {.buf = map, .len = (size_t)st.st_size, .rep = rep};
    int rc = mesh_store_write(n->store, import_fn, &c);
    munmap(map, (size_t)st.st_size);
    if (rc != MESH_OK) return mesh_err_wrap(rc, "importing %s (nothing was stored)", path);
    return MESH_OK;
}
