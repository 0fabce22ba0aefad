/*
 * node.c - node lifecycle (init, open, close), identity, status, and appending this node's own
 * signed ops.
 */
#include "api/node_int.h"

#include "crypto/atrest.h"
#include "model/hlc.h"
#include "store/seal.h"
#include "store/team.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t system_clock_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int path_join(char *out, size_t cap, const char *dir, const char *name)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return mesh_err(MESH_EINVAL, "path too long: %s/%s", dir, name);
    return MESH_OK;
}

static int read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT) return mesh_err(MESH_ENOTFOUND, "%s does not exist", path);
        return mesh_err(MESH_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    char *buf = malloc(max + 1);
    if (buf == NULL) {
        fclose(f);
        return mesh_err(MESH_ENOMEM, "out of memory reading %s", path);
    }
    size_t n = fread(buf, 1, max + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mesh_err(MESH_EIO, "cannot read %s", path);
    }
    if (n > max) {
        free(buf);
        return mesh_err(MESH_ELIMIT, "%s is larger than %zu bytes", path, max);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MESH_OK;
}

static int write_file_atomic(const char *path, const char *data, size_t len)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return mesh_err(MESH_EINVAL, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return mesh_err(MESH_EIO, "cannot create %s: %s", tmp, strerror(errno));
    bool ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        return mesh_err(e == ENOSPC ? MESH_ENOSPC : MESH_EIO, "cannot write %s: %s", path,
                        strerror(e));
    }
    return MESH_OK;
}

/* mkdir -p: parents get 0755 like mkdir(1) would; the data directory itself 0700. */
static int mkdir_parents(const char *dir)
{
    char p[4096];
    if ((size_t)snprintf(p, sizeof p, "%s", dir) >= sizeof p)
        return mesh_err(MESH_EINVAL, "path too long: %s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return mesh_err(MESH_EIO, "cannot create %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0700) != 0 && errno != EEXIST)
        return mesh_err(MESH_EIO, "cannot create %s: %s", p, strerror(errno));
    return MESH_OK;
}

typedef struct init_ctx {
    const char *scope;
    bool has_team;
    uint8_t team[MESH_KEY_BYTES];
} init_ctx;

static int init_meta(mesh_txn *t, void *vctx)
{
    init_ctx *c = vctx;
    int rc = mesh_store_meta_put(t, "scope", c->scope, strlen(c->scope));
    if (rc == MESH_OK && c->has_team) rc = mesh_store_team_set(t, c->team);
    return rc;
}

/* The key of a new encrypted store, before anything is written: from a passphrase (a fresh
 * salt) or from a key file (read, or created if missing). */
static int seal_prepare(const mesh_init_opts *o, mesh_seal_info *info,
                        uint8_t key[MESH_SEAL_KEY_BYTES])
{
    memset(info, 0, sizeof *info);
    info->kind = o->passphrase ? MESH_SEAL_PASSPHRASE : MESH_SEAL_KEYFILE;
    if (o->passphrase) {
        info->ops = MESH_PWHASH_OPS_DEFAULT;
        info->mem = MESH_PWHASH_MEM_DEFAULT;
        mesh_random(info->salt, sizeof info->salt);
        return mesh_seal_key_derive(o->passphrase, strlen(o->passphrase), info->salt, info->ops,
                                    info->mem, key);
    }
    int rc = mesh_keyfile_load(o->key_file, key);
    if (rc == MESH_ENOTFOUND) rc = mesh_keyfile_create(o->key_file, key);
    return rc;
}

/* Unlocks an encrypted store with the passphrase or key file the caller gave. */
static int seal_unlock(mesh_node *n, const mesh_open_opts *o)
{
    mesh_seal_info info;
    int rc = mesh_store_seal_info(n->store, &info);
    if (rc != MESH_OK || info.kind == MESH_SEAL_NONE) return rc;
    uint8_t key[MESH_SEAL_KEY_BYTES];
    if (info.kind == MESH_SEAL_KEYFILE) {
        if (o == NULL || o->key_file == NULL)
            return mesh_err(MESH_EPERM, "the node in %s is encrypted with a key file; give it "
                            "(--key-file FILE)", n->dir);
        rc = mesh_keyfile_load(o->key_file, key);
        if (rc == MESH_ENOTFOUND) rc = mesh_err(MESH_EPERM, "%s", mesh_errmsg());
    } else {
        char buf[MESH_PASSPHRASE_BYTES_MAX + 1];
        const char *pass = o ? o->passphrase : NULL;
        if (pass == NULL && o && o->passphrase_cb &&
            o->passphrase_cb(buf, sizeof buf, o->passphrase_ctx) == 0) {
            buf[sizeof buf - 1] = '\0';
            pass = buf;
        }
        if (pass == NULL)
            return mesh_err(MESH_EPERM, "the node in %s is encrypted with a passphrase; give "
                            "it to open the node", n->dir);
        rc = mesh_seal_key_derive(pass, strlen(pass), info.salt, info.ops, info.mem, key);
        mesh_wipe(buf, sizeof buf);
    }
    if (rc == MESH_OK) rc = mesh_store_seal_open(n->store, key);
    if (rc == MESH_OK) {
        mesh_wrap_key_derive(key, n->wrap);
        n->wrapped = true;
    }
    mesh_wipe(key, sizeof key);
    return rc;
}

int mesh_node_init(const char *dir, const mesh_init_opts *opts)
{
    mesh_err_clear();
    int rc = mesh_crypto_init();
    if (rc != MESH_OK) return rc;
    const char *scope = opts && opts->scope ? opts->scope : "default";
    if (mesh_scope_check(scope, strlen(scope)) != MESH_OK)
        return mesh_err(MESH_EINVAL,
                        "scope '%s' is not a boundary path: use 1-64 characters of "
                        "A-Z a-z 0-9 _ . - separated by single '/', e.g. MZ/NAMPULA/ERATI",
                        scope);
    init_ctx c = {.scope = scope};
    if (opts && opts->team) {
        char hex[MESH_KEY_STR_LEN];
        if ((rc = mesh_key_parse(opts->team, hex)) != MESH_OK) return rc;
        mesh_hex_decode(hex, c.team, MESH_KEY_BYTES);
        c.has_team = true;
    }
    if (opts && opts->passphrase && opts->key_file)
        return mesh_err(MESH_EINVAL, "encrypt with a passphrase or with a key file, not both");
    bool sealed = opts && (opts->passphrase || opts->key_file);
    mesh_seal_info seal;
    uint8_t seal_key[MESH_SEAL_KEY_BYTES];

    /* Validate the type configuration before touching the disk. */
    char *types_text = NULL;
    size_t types_len = 0;
    mesh_types *types = NULL;
    if (opts && opts->types_path) {
        rc = read_file(opts->types_path, MESH_TYPES_FILE_BYTES_MAX, &types_text, &types_len);
        if (rc == MESH_OK) rc = mesh_types_parse(types_text, types_len, &types);
        if (rc != MESH_OK) {
            free(types_text);
            return mesh_err_wrap(rc == MESH_ENOTFOUND ? MESH_EINVAL : rc, "entity types %s",
                                 opts->types_path);
        }
    } else {
        const char *def = mesh_types_default_json();
        types_len = strlen(def);
        types_text = malloc(types_len + 1);
        if (types_text == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
        memcpy(types_text, def, types_len + 1);
    }
    mesh_types_free(types);

    char idpath[4200], storepath[4200], typespath[4200];
    if ((rc = path_join(idpath, sizeof idpath, dir, MESH_NODE_IDENTITY_FILE)) != MESH_OK ||
        (rc = path_join(storepath, sizeof storepath, dir, MESH_NODE_STORE_DIR)) != MESH_OK ||
        (rc = path_join(typespath, sizeof typespath, dir, MESH_NODE_TYPES_FILE)) != MESH_OK) {
        free(types_text);
        return rc;
    }
    if (access(idpath, F_OK) == 0 || access(storepath, F_OK) == 0) {
        free(types_text);
        return mesh_err(MESH_EEXIST, "%s already holds a meshsync node; use it, or choose another "
                        "directory", dir);
    }
    if ((rc = mkdir_parents(dir)) != MESH_OK) {
        free(types_text);
        return rc;
    }
    if (sealed && (rc = seal_prepare(opts, &seal, seal_key)) != MESH_OK) {
        free(types_text);
        return rc;
    }

    mesh_identity id;
    mesh_identity_generate(&id);
    uint8_t wrap[MESH_SEAL_KEY_BYTES];
    if (sealed) mesh_wrap_key_derive(seal_key, wrap);
    rc = mesh_identity_save(&id, idpath, sealed ? wrap : NULL);
    mesh_wipe(wrap, sizeof wrap);
    mesh_identity_wipe(&id);
    if (rc == MESH_OK) rc = write_file_atomic(typespath, types_text, types_len);
    free(types_text);
    if (rc != MESH_OK) {
        if (sealed) mesh_wipe(seal_key, sizeof seal_key);
        return rc;
    }

    mesh_store *s = NULL;
    mesh_store_opts so = {.create = true};
    rc = mesh_store_open(storepath, &so, &s);
    if (rc == MESH_OK) rc = mesh_store_write(s, init_meta, &c);
    if (rc == MESH_OK && sealed) rc = mesh_store_seal_init(s, &seal, seal_key);
    if (sealed) mesh_wipe(seal_key, sizeof seal_key);
    mesh_store_close(s);
    return rc;
}

typedef struct open_ctx {
    mesh_node *n;
} open_ctx;

static int load_meta(mesh_txn *t, void *vctx)
{
    mesh_node *n = vctx;
    int rc = mesh_store_meta_get(t, "scope", n->scope, MESH_SCOPE_BYTES_MAX, &n->scope_len);
    if (rc == MESH_ENOTFOUND)
        return mesh_err(MESH_ENOTSTORE, "%s: the store has no node configuration", n->dir);
    if (rc != MESH_OK) return rc;
    n->scope[n->scope_len] = '\0';
    return MESH_OK;
}

int mesh_node_key_load(const mesh_node *n, const char *path, mesh_identity *id)
{
    bool sealed;
    int rc = mesh_identity_load(path, n->wrapped ? n->wrap : NULL, id, &sealed);
    /* A key written in clear by a meshsync before sealed keys, on an encrypted node: seal it
     * now. If the directory cannot be written the node still opens, and a later open seals it. */
    if (rc == MESH_OK && n->wrapped && !sealed && mesh_identity_reseal(id, path, n->wrap) != MESH_OK)
        mesh_err_clear();
    return rc;
}

/* Loads the node's identity, after seal_unlock (a sealed key needs the store's key). */
static int identity_open(mesh_node *n, const char *idpath)
{
    int rc = mesh_node_key_load(n, idpath, &n->id);
    if (rc == MESH_ENOTFOUND)
        rc = mesh_err(MESH_ENOTSTORE, "%s has a store but no identity.key; restore it from a "
                      "backup", n->dir);
    return rc;
}

int mesh_node_open(const char *dir, const mesh_open_opts *opts, mesh_node **out)
{
    mesh_err_clear();
    *out = NULL;
    int rc = mesh_crypto_init();
    if (rc != MESH_OK) return rc;
    mesh_node *n = calloc(1, sizeof *n);
    if (n == NULL) return mesh_err(MESH_ENOMEM, "out of memory");
    snprintf(n->dir, sizeof n->dir, "%s", dir);
    n->clock_ms = opts && opts->clock_ms ? opts->clock_ms : system_clock_ms;
    n->clock_ctx = opts ? opts->clock_ctx : NULL;

    char idpath[4200], storepath[4200], typespath[4200];
    if ((rc = path_join(idpath, sizeof idpath, dir, MESH_NODE_IDENTITY_FILE)) != MESH_OK ||
        (rc = path_join(storepath, sizeof storepath, dir, MESH_NODE_STORE_DIR)) != MESH_OK ||
        (rc = path_join(typespath, sizeof typespath, dir, MESH_NODE_TYPES_FILE)) != MESH_OK)
        goto fail;

    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = mesh_err(MESH_ENOTSTORE, "%s is not a directory; create a node there with "
                      "'meshsync init --data %s'", dir, dir);
        goto fail;
    }
    mesh_store_opts so = {.map_bytes_max = opts ? opts->map_bytes_max : 0};
    rc = mesh_store_open(storepath, &so, &n->store);
    if (rc == MESH_ENOTSTORE) {
        rc = mesh_err(MESH_ENOTSTORE, "%s is not a meshsync data directory (%s); create one with "
                      "'meshsync init --data %s'", dir, mesh_errmsg(), dir);
        goto fail;
    }
    if (rc != MESH_OK) goto fail;

    char *text;
    size_t len;
    rc = read_file(typespath, MESH_TYPES_FILE_BYTES_MAX, &text, &len);
    if (rc == MESH_OK) {
        rc = mesh_types_parse(text, len, &n->types);
        free(text);
    }
    if (rc != MESH_OK) {
        rc = mesh_err_wrap(rc == MESH_ENOTFOUND ? MESH_ENOTSTORE : rc, "%s", typespath);
        goto fail;
    }
    rc = seal_unlock(n, opts);
    if (rc != MESH_OK) goto fail;
    rc = identity_open(n, idpath);
    if (rc != MESH_OK) goto fail;
    rc = mesh_store_read(n->store, load_meta, n);
    if (rc != MESH_OK) goto fail;
    n->sid = mesh_stream_id(n->id.pk, n->scope, n->scope_len);
    *out = n;
    return MESH_OK;
fail:
    mesh_node_close(n);
    return rc;
}

void mesh_node_close(mesh_node *n)
{
    if (n == NULL) return;
    mesh_store_close(n->store);
    mesh_types_free(n->types);
    mesh_identity_wipe(&n->id);
    mesh_wipe(n->wrap, sizeof n->wrap);
    free(n);
}

void mesh_node_identity(const mesh_node *n, char out[MESH_KEY_STR_LEN])
{
    mesh_hex_encode(n->id.pk, MESH_KEY_BYTES, out);
}

const char *mesh_node_scope(const mesh_node *n) { return n->scope; }

int mesh_node_append(mesh_node *n, mesh_txn *t, mesh_op *op)
{
    return mesh_store_append(t, &n->id, n->scope, mesh_node_now_ms(n), op, NULL);
}

static int status_fn(mesh_txn *t, void *ctx)
{
    return mesh_store_counts_get(t, ctx);
}

int mesh_node_status(mesh_node *n, mesh_status *out)
{
    mesh_err_clear();
    mesh_store_counts c;
    int rc = mesh_store_read(n->store, status_fn, &c);
    if (rc != MESH_OK) return rc;
    out->ops = c.ops;
    out->entities = c.entities;
    out->deleted = c.deleted;
    out->conflicts = c.conflicts;
    out->streams = c.streams;
    out->pending = c.pending;
    out->store_bytes = c.file_bytes;
    mesh_hex_encode(c.digest, MESH_HASH_BYTES, out->digest);
    return MESH_OK;
}
