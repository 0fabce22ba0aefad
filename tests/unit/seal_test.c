/*
 * seal_test.c - at-rest encryption of a store (lib/store/seal.c): sealed records in the log and
 * in pending read back through every read path, the data file holds no plaintext, a store opened
 * without its key refuses to read and a wrong key is told apart, and the roster's cuts work on a
 * sealed store. Passphrases and key files through the public API: mesh_node_init/open.
 */
#include <criterion/criterion.h>

#include "api/node_int.h"
#include "crypto/atrest.h"
#include "model/team.h"
#include "store/seal.h"
#include "store/team.h"
#include "testlib.h"

static char *dir;

static void setup(void)
{
    mesh_crypto_init();
    dir = tl_tmpdir("seal");
}

static void teardown(void) { tl_rmtree(dir); }

TestSuite(seal, .init = setup, .fini = teardown);

static const uint8_t KEY[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

static mesh_store *sealed_store(void)
{
    mesh_store *s = NULL;
    mesh_store_opts o = {.create = true, .no_sync = true};
    cr_assert_eq(mesh_store_open(dir, &o, &s), MESH_OK, "%s", mesh_errmsg());
    mesh_seal_info info = {.kind = MESH_SEAL_KEYFILE};
    cr_assert_eq(mesh_store_seal_init(s, &info, KEY), MESH_OK, "%s", mesh_errmsg());
    return s;
}

static tl_rec marked_op(tl_stream *w, uint64_t n, const char *marker)
{
    char json[128];
    snprintf(json, sizeof json, "{\"name\":\"%s-%04llu\"}", marker, (unsigned long long)n);
    mesh_buf b = tl_body(json);
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = MESH_OP_CREATE;
    op.type = "household";
    op.type_len = 9;
    op.row_version = 1;
    tl_entity_id(op.entity, n);
    op.body = b.data;
    op.body_len = b.len;
    tl_rec r = tl_stream_add(w, &op);
    mesh_buf_fini(&b);
    return r;
}

static bool file_has(const char *needle)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    bool found = memmem(buf, (size_t)len, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

typedef struct reads {
    size_t n;
    int bad;
} reads;

static int stream_op(const mesh_oprec *rec, uint64_t seq, void *ctx)
{
    reads *r = ctx;
    mesh_op op;
    uint8_t h[32];
    mesh_op_hash(rec->op, rec->op_len, h);
    if (mesh_op_decode(rec->op, rec->op_len, &op) != MESH_OK || op.seq != seq ||
        mesh_verify(op.author, MESH_DOMAIN_OP, h, 32, rec->sig) != MESH_OK)
        r->bad++;
    r->n++;
    return MESH_OK;
}

typedef struct read_args {
    uint64_t sid;
    reads r;
    int rc_get;
    uint8_t entity[16];
    mesh_opref ref;
} read_args;

static int read_fn(mesh_txn *t, void *ctx)
{
    read_args *a = ctx;
    mesh_oprec rec;
    a->rc_get = mesh_store_op_get(t, a->entity, &a->ref, &rec);
    if (a->rc_get == MESH_OK && memmem(rec.op, rec.op_len, "secret-0003", 11) == NULL)
        a->rc_get = MESH_ECORRUPT;
    return mesh_store_stream_ops(t, a->sid, 1, stream_op, &a->r);
}

Test(seal, records_sealed_in_log_and_pending_read_back)
{
    mesh_store *s = sealed_store();
    tl_stream w;
    tl_stream_init(&w, 7, "MZ/A");
    tl_rec recs[6];
    for (int i = 0; i < 6; i++) recs[i] = marked_op(&w, (uint64_t)i + 1, "secret");
    /* 4..6 first: they wait in pending (sealed), then 1..3 fill the gap. */
    mesh_oprec v[6];
    for (int i = 0; i < 6; i++) v[i] = tl_rec_view(&recs[i]);
    mesh_ingest_report rep;
    cr_assert_eq(tl_ingest(s, v + 3, 3, MESH_INGEST_PARTIAL, &rep), MESH_OK);
    cr_assert_eq(rep.pending, 3);
    cr_assert(!file_has("secret-0005"), "a pending op is stored in clear");
    cr_assert_eq(tl_ingest(s, v, 3, MESH_INGEST_PARTIAL, &rep), MESH_OK);
    cr_assert_eq(rep.applied, 6, "%s", rep.first_error_msg);
    for (int i = 1; i <= 6; i++) {
        char m[32];
        snprintf(m, sizeof m, "secret-%04d", i);
        cr_assert(!file_has(m), "%s is in the data file", m);
    }
    read_args a = {.sid = mesh_stream_id(w.id.pk, "MZ/A", 4), .ref = {.row_version = 1}};
    tl_entity_id(a.entity, 3);
    memcpy(a.ref.author, w.id.pk, 32);
    cr_assert_eq(mesh_store_read(s, read_fn, &a), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(a.rc_get, MESH_OK);
    cr_assert_eq(a.r.n, 6);
    cr_assert_eq(a.r.bad, 0);
    mesh_store_close(s);

    /* Reopened without the key: reads refuse; a wrong key is told apart; the right one opens. */
    cr_assert_eq(mesh_store_open(dir, NULL, &s), MESH_OK);
    memset(&a.r, 0, sizeof a.r);
    cr_assert_eq(mesh_store_read(s, read_fn, &a), MESH_EPERM);
    uint8_t wrong[32] = {9};
    cr_assert_eq(mesh_store_seal_open(s, wrong), MESH_EPERM);
    cr_assert(strstr(mesh_errmsg(), "does not open this store") != NULL, "%s", mesh_errmsg());
    cr_assert_eq(mesh_store_seal_open(s, KEY), MESH_OK);
    memset(&a.r, 0, sizeof a.r);
    cr_assert_eq(mesh_store_read(s, read_fn, &a), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(a.r.n, 6);
    /* Writing without the key is refused too. */
    mesh_store_close(s);
    cr_assert_eq(mesh_store_open(dir, NULL, &s), MESH_OK);
    tl_rec more = marked_op(&w, 7, "secret");
    mesh_oprec mv = tl_rec_view(&more);
    cr_assert_eq(tl_ingest(s, &mv, 1, MESH_INGEST_ATOMIC, &rep), MESH_EPERM);
    mesh_store_close(s);
    for (int i = 0; i < 6; i++) tl_rec_free(&recs[i]);
    tl_rec_free(&more);
}

static int team_set_fn(mesh_txn *t, void *ctx) { return mesh_store_team_set(t, ctx); }

Test(seal, roster_cuts_on_a_sealed_store)
{
    mesh_store *s = sealed_store();
    tl_stream auth, dev;
    tl_stream_init(&auth, 0xa0, "MZ");
    tl_stream_init(&dev, 0x05, "MZ/A");
    cr_assert_eq(mesh_store_write(s, team_set_fn, auth.id.pk), MESH_OK);
    char hex[65], json[512];
    mesh_hex_encode(dev.id.pk, 32, hex);
    tl_rec recs[8];
    size_t n = 0;
    for (uint32_t v = 1; v <= 2; v++) {
        if (v == 1)
            snprintf(json, sizeof json, "{\"format\":1,\"root\":\"MZ\",\"version\":1,\"members\":"
                     "[{\"key\":\"%s\",\"role\":\"field\",\"scopes\":[\"MZ/A\"]}]}", hex);
        else
            snprintf(json, sizeof json, "{\"format\":1,\"root\":\"MZ\",\"version\":2,\"members\":"
                     "[{\"key\":\"%s\",\"role\":\"field\",\"scopes\":[],\"removed\":true,"
                     "\"cuts\":[{\"scope\":\"MZ/A\",\"seq\":2}]}]}", hex);
        mesh_buf b = tl_body(json);
        mesh_op op;
        memset(&op, 0, sizeof op);
        op.kind = v == 1 ? MESH_OP_CREATE : MESH_OP_UPDATE;
        op.type = MESH_TYPE_ROSTER;
        op.type_len = strlen(MESH_TYPE_ROSTER);
        op.row_version = v;
        mesh_team_roster_entity(auth.id.pk, op.entity);
        if (v == 2) {
            op.has_base = true;
            op.base.row_version = 1;
            memcpy(op.base.author, auth.id.pk, 32);
        }
        op.body = b.data;
        op.body_len = b.len;
        recs[n++] = tl_stream_add(&auth, &op);
        mesh_buf_fini(&b);
        if (v == 1)
            for (int i = 0; i < 4; i++) recs[n++] = marked_op(&dev, 100 + (uint64_t)i, "cut");
    }
    mesh_oprec v[8];
    for (size_t i = 0; i < n; i++) v[i] = tl_rec_view(&recs[i]);
    mesh_ingest_report rep;
    /* v1 and the four ops, then v2, which cuts the device's stream back to 2. */
    cr_assert_eq(tl_ingest(s, v, 5, MESH_INGEST_PARTIAL, &rep), MESH_OK);
    cr_assert_eq(rep.applied, 5, "%s", rep.first_error_msg);
    cr_assert_eq(tl_ingest(s, v + 5, 1, MESH_INGEST_PARTIAL, &rep), MESH_OK);
    read_args a = {.sid = mesh_stream_id(dev.id.pk, "MZ/A", 4)};
    tl_entity_id(a.entity, 3);
    cr_assert_eq(mesh_store_read(s, read_fn, &a), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(a.r.n, 2, "the stream holds %zu ops", a.r.n);
    cr_assert_eq(a.r.bad, 0);
    mesh_store_close(s);
    for (size_t i = 0; i < n; i++) tl_rec_free(&recs[i]);
}

Test(seal, passphrase_and_key_file_through_the_api)
{
    char node_dir[600], kf[600];
    snprintf(node_dir, sizeof node_dir, "%s/p", dir);
    mesh_init_opts io = {.scope = "MZ/A", .passphrase = "correct horse"};
    cr_assert_eq(mesh_node_init(node_dir, &io), MESH_OK, "%s", mesh_errmsg());
    mesh_node *n = NULL;
    cr_assert_eq(mesh_node_open(node_dir, NULL, &n), MESH_EPERM);
    cr_assert(strstr(mesh_errmsg(), "encrypted with a passphrase") != NULL, "%s", mesh_errmsg());
    mesh_open_opts oo = {.passphrase = "battery staple"};
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_EPERM);
    cr_assert(strstr(mesh_errmsg(), "the passphrase does not open this store") != NULL, "%s",
              mesh_errmsg());
    oo.passphrase = "correct horse";
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_OK, "%s", mesh_errmsg());
    const char *body = "{\"name\":\"API-SECRET\"}";
    mesh_put_result res;
    cr_assert_eq(mesh_put(n, "household", NULL, body, strlen(body), &res), MESH_OK, "%s",
                 mesh_errmsg());
    mesh_node_close(n);

    /* A key file: created at init with mode 0600; one others can read is refused. */
    snprintf(node_dir, sizeof node_dir, "%s/k", dir);
    snprintf(kf, sizeof kf, "%s/k.key", dir);
    mesh_init_opts ko = {.scope = "MZ/A", .key_file = kf};
    cr_assert_eq(mesh_node_init(node_dir, &ko), MESH_OK, "%s", mesh_errmsg());
    struct stat st;
    cr_assert_eq(stat(kf, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, 32);
    mesh_open_opts kfo = {.key_file = kf};
    cr_assert_eq(mesh_node_open(node_dir, &kfo, &n), MESH_OK, "%s", mesh_errmsg());
    mesh_node_close(n);
    chmod(kf, 0644);
    cr_assert_eq(mesh_node_open(node_dir, &kfo, &n), MESH_EPERM);
    cr_assert(strstr(mesh_errmsg(), "chmod 600") != NULL, "%s", mesh_errmsg());
    /* Both at once is a mistake. */
    snprintf(node_dir, sizeof node_dir, "%s/both", dir);
    mesh_init_opts bo = {.passphrase = "x", .key_file = kf};
    cr_assert_eq(mesh_node_init(node_dir, &bo), MESH_EINVAL);
}

static void read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert(f != NULL, "%s", path);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* On an encrypted node the node key and the team authority key are sealed under a key derived
 * from the store's: the files give the public key only, a copy of the directory without the
 * passphrase yields no secret key, and a key file left in clear by an older meshsync is sealed
 * at the next open, keeping the node's identity. */
Test(seal, node_and_authority_keys_are_sealed)
{
    char node_dir[600], idpath[700], apath[700], text[1024];
    snprintf(node_dir, sizeof node_dir, "%s/n", dir);
    snprintf(idpath, sizeof idpath, "%s/identity.key", node_dir);
    snprintf(apath, sizeof apath, "%s/team-authority.key", node_dir);
    mesh_init_opts io = {.scope = "MZ/A", .passphrase = "correct horse"};
    cr_assert_eq(mesh_node_init(node_dir, &io), MESH_OK, "%s", mesh_errmsg());
    mesh_open_opts oo = {.passphrase = "correct horse"};
    mesh_node *n = NULL;
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_OK, "%s", mesh_errmsg());
    char pk[MESH_KEY_STR_LEN], sk_hex[2 * 32 + 1];
    mesh_node_identity(n, pk);
    mesh_hex_encode(n->id.sk, 32, sk_hex);  /* the seed; the secret key's other half is pk */
    char authority[MESH_KEY_STR_LEN];
    cr_assert_eq(mesh_team_create(n, NULL, authority), MESH_OK, "%s", mesh_errmsg());
    mesh_node_close(n);

    read_text(idpath, text, sizeof text);
    cr_assert(strncmp(text, "meshsync-identity-sealed-v1\n", 28) == 0, "%s", text);
    cr_assert(strstr(text, pk) != NULL, "the public key is readable");
    cr_assert(strstr(text, sk_hex) == NULL, "the secret seed is not in clear");
    read_text(apath, text, sizeof text);
    cr_assert(strncmp(text, "meshsync-identity-sealed-v1\n", 28) == 0, "%s", text);
    cr_assert(strstr(text, authority) != NULL);
    mesh_identity id;
    cr_assert_eq(mesh_identity_load(idpath, NULL, &id, NULL), MESH_EPERM);
    cr_assert(strstr(mesh_errmsg(), "passphrase") != NULL, "%s", mesh_errmsg());

    /* The authority key opens again through the node: a roster change is signed with it. */
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_OK, "%s", mesh_errmsg());
    char other[MESH_KEY_STR_LEN];
    mesh_identity o;
    mesh_identity_generate(&o);
    mesh_hex_encode(o.pk, 32, other);
    const char *scopes[] = {"MZ/A"};
    cr_assert_eq(mesh_team_add(n, other, "field", scopes, 1, NULL), MESH_OK, "%s", mesh_errmsg());
    mesh_node_close(n);

    /* A clear key file, as an older meshsync wrote it on an encrypted node: it still opens,
     * with the same identity, and is sealed on the way. */
    mesh_identity clear;
    mesh_identity_generate(&clear);
    char clear_pk[MESH_KEY_STR_LEN];
    mesh_hex_encode(clear.pk, 32, clear_pk);
    cr_assert_eq(unlink(idpath), 0);
    cr_assert_eq(mesh_identity_save(&clear, idpath, NULL), MESH_OK);
    read_text(idpath, text, sizeof text);
    cr_assert(strncmp(text, "meshsync-identity-v1\n", 21) == 0);
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_OK, "%s", mesh_errmsg());
    mesh_node_identity(n, pk);
    cr_assert_str_eq(pk, clear_pk);
    mesh_node_close(n);
    read_text(idpath, text, sizeof text);
    cr_assert(strncmp(text, "meshsync-identity-sealed-v1\n", 28) == 0, "%s", text);
    struct stat st;
    cr_assert_eq(stat(idpath, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_OK, "%s", mesh_errmsg());
    mesh_node_identity(n, pk);
    cr_assert_str_eq(pk, clear_pk);
    mesh_node_close(n);

    /* A sealed key file changed on disk is refused as damaged, not taken. */
    read_text(idpath, text, sizeof text);
    size_t len = strlen(text);
    text[len - 3] = text[len - 3] == '0' ? '1' : '0';
    FILE *f = fopen(idpath, "w");
    fputs(text, f);
    fclose(f);
    cr_assert_eq(mesh_node_open(node_dir, &oo, &n), MESH_ECORRUPT);
    cr_assert(strstr(mesh_errmsg(), "identity.key") != NULL, "%s", mesh_errmsg());
    mesh_identity_wipe(&clear);
    mesh_identity_wipe(&o);
}
