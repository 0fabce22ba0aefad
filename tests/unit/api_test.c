/*
 * api_test.c - the public API on real nodes in temporary directories: lifecycle, put/get/list,
 * optimistic concurrency, final deletes, deleted ancestors, history, bundles, and bad input that
 * must fail clearly and leave the store exactly as it was.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "meshsync.h"
#include "testlib.h"

static char *tmp;
static char dir_a[512], dir_b[512];
static mesh_node *a, *b;

static void setup(void)
{
    tmp = tl_tmpdir("api");
    snprintf(dir_a, sizeof dir_a, "%s/a", tmp);
    snprintf(dir_b, sizeof dir_b, "%s/b", tmp);
    mesh_init_opts o = {.scope = "MZ/NAMPULA/ERATI"};
    cr_assert_eq(mesh_node_init(dir_a, &o), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_node_init(dir_b, &o), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_node_open(dir_a, NULL, &a), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_node_open(dir_b, NULL, &b), MESH_OK, "%s", mesh_errmsg());
}

static void teardown(void)
{
    mesh_node_close(a);
    mesh_node_close(b);
    tl_rmtree(tmp);
}

TestSuite(api, .init = setup, .fini = teardown);

static mesh_status status(mesh_node *n)
{
    mesh_status s;
    cr_assert_eq(mesh_node_status(n, &s), MESH_OK, "%s", mesh_errmsg());
    return s;
}

static mesh_put_result put(mesh_node *n, const char *type, const char *id, const char *json)
{
    mesh_put_result r;
    cr_assert_eq(mesh_put(n, type, id, json, strlen(json), &r), MESH_OK, "%s", mesh_errmsg());
    return r;
}

typedef struct got {
    int count;
    char json[4096];
    mesh_entity e;
} got;

static int got_cb(const mesh_entity *e, void *ctx)
{
    got *g = ctx;
    g->count++;
    g->e = *e;
    snprintf(g->json, sizeof g->json, "%s", e->json);
    return 0;
}

Test(api, lifecycle_errors_are_clear)
{
    mesh_node *n;
    mesh_init_opts o = {0};
    cr_assert_eq(mesh_node_init(dir_a, &o), MESH_EEXIST);
    char empty[600];
    snprintf(empty, sizeof empty, "%s/empty", tmp);
    mkdir(empty, 0700);
    cr_assert_eq(mesh_node_open(empty, NULL, &n), MESH_ENOTSTORE);
    cr_assert(strstr(mesh_errmsg(), "meshsync init") != NULL, "hint in: %s", mesh_errmsg());
    o.scope = "/bad//scope";
    cr_assert_eq(mesh_node_init(empty, &o), MESH_EINVAL);
    char key[600];
    snprintf(key, sizeof key, "%s/identity.key", dir_b);
    mesh_node_close(b);
    b = NULL;
    chmod(key, 0644);
    cr_assert_eq(mesh_node_open(dir_b, NULL, &n), MESH_EPERM, "%s", mesh_errmsg());
    cr_assert(strstr(mesh_errmsg(), "chmod 600") != NULL);
    chmod(key, 0600);
    cr_assert_eq(mesh_node_open(dir_b, NULL, &b), MESH_OK);
    char pk[MESH_KEY_STR_LEN];
    mesh_node_identity(a, pk);
    cr_assert_eq(strlen(pk), 64);
    cr_assert_str_eq(mesh_node_scope(a), "MZ/NAMPULA/ERATI");
}

Test(api, put_get_update_and_stale_row_version)
{
    mesh_put_result r = put(a, "household", NULL, "{\"tenantId\":\"mz\",\"memberCount\":2}");
    cr_assert_eq(r.row_version, 1);
    cr_assert_eq(r.id[14], '7', "new ids are UUIDv7: %s", r.id);
    got g = {0};
    cr_assert_eq(mesh_get(a, r.id, 0, got_cb, &g), MESH_OK);
    cr_assert(strstr(g.json, "\"clientReferenceId\":\"") && strstr(g.json, "\"rowVersion\":1") &&
              strstr(g.json, "\"memberCount\":2") && strstr(g.json, "\"isDeleted\":false"),
              "%s", g.json);
    char body[256];
    snprintf(body, sizeof body, "{\"clientReferenceId\":\"%s\",\"rowVersion\":1,\"memberCount\":3}",
             r.id);
    mesh_put_result r2 = put(a, "household", NULL, body);
    cr_assert_eq(r2.row_version, 2);
    cr_assert_str_eq(r2.id, r.id);
    mesh_status before = status(a);
    cr_assert_eq(mesh_put(a, "household", NULL, body, strlen(body), NULL), MESH_ESTALE);
    cr_assert(strstr(mesh_errmsg(), "current one is 2") != NULL, "%s", mesh_errmsg());
    cr_assert_str_eq(status(a).digest, before.digest);
}

Test(api, bad_input_changes_nothing)
{
    put(a, "household", NULL, "{\"n\":1}");
    mesh_status before = status(a);
    const char *bad_json = "{\"n\": 1,";
    cr_assert_eq(mesh_put(a, "household", NULL, bad_json, strlen(bad_json), NULL), MESH_EINVAL);
    cr_assert(strstr(mesh_errmsg(), "line") != NULL, "position in: %s", mesh_errmsg());
    cr_assert_eq(mesh_put(a, "spaceship", NULL, "{}", 2, NULL), MESH_ETYPE);
    cr_assert(strstr(mesh_errmsg(), "spaceship") != NULL);
    cr_assert_eq(mesh_put(a, "household", "not-a-uuid", "{}", 2, NULL), MESH_EINVAL);
    const char *arr = "[1,2]";
    cr_assert_eq(mesh_put(a, "household", NULL, arr, strlen(arr), NULL), MESH_EINVAL);
    const char *badparent = "{\"householdClientReferenceId\":\"nope\"}";
    cr_assert_eq(mesh_put(a, "household_member", NULL, badparent, strlen(badparent), NULL),
                 MESH_EINVAL);
    cr_assert(strstr(mesh_errmsg(), "householdClientReferenceId") != NULL, "%s", mesh_errmsg());
    const char *del = "{\"isDeleted\":true}";
    cr_assert_eq(mesh_put(a, "household", NULL, del, strlen(del), NULL), MESH_EINVAL);
    mesh_status after = status(a);
    cr_assert_str_eq(after.digest, before.digest);
    cr_assert_eq(after.ops, before.ops);
}

Test(api, deletes_are_final_and_hide_children)
{
    mesh_put_result hh = put(a, "household", NULL, "{\"memberCount\":1}");
    mesh_put_result ind = put(a, "individual", NULL, "{\"name\":\"A\"}");
    char body[256];
    snprintf(body, sizeof body,
             "{\"householdClientReferenceId\":\"%s\",\"individualClientReferenceId\":\"%s\"}",
             hh.id, ind.id);
    mesh_put_result mem = put(a, "household_member", NULL, body);
    mesh_put_result d;
    cr_assert_eq(mesh_delete(a, hh.id, &d), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(d.row_version, 2);
    got g = {0};
    cr_assert_eq(mesh_get(a, hh.id, 0, got_cb, &g), MESH_ENOTFOUND);
    cr_assert_eq(mesh_get(a, hh.id, MESH_GET_INCLUDE_DELETED, got_cb, &g), MESH_OK);
    cr_assert(strstr(g.json, "\"isDeleted\":true") && strstr(g.json, "\"memberCount\":1"),
              "a delete keeps the state it deleted: %s", g.json);
    cr_assert_eq(mesh_get(a, mem.id, 0, got_cb, &g), MESH_ENOTFOUND, "child of a deleted parent");
    mesh_status before = status(a);
    cr_assert_eq(mesh_delete(a, hh.id, NULL), MESH_EDELETED);
    cr_assert_eq(mesh_put(a, "household", hh.id, "{}", 2, NULL), MESH_EDELETED);
    cr_assert_eq(mesh_put(a, "household_member", mem.id, body, strlen(body), NULL), MESH_EDELETED);
    cr_assert_str_eq(status(a).digest, before.digest);
    got all = {0};
    mesh_query q = {.type = "household_member"};
    cr_assert_eq(mesh_list(a, &q, got_cb, &all), MESH_OK);
    cr_assert_eq(all.count, 0);
    q.include_deleted = 1;
    cr_assert_eq(mesh_list(a, &q, got_cb, &all), MESH_OK);
    cr_assert_eq(all.count, 1);
    cr_assert(all.e.deleted);
    cr_assert_eq(status(a).deleted, 1);
}

Test(api, list_filters_limit_offset_since)
{
    for (int i = 0; i < 5; i++) put(a, "household", NULL, "{\"k\":1}");
    for (int i = 0; i < 3; i++) put(a, "individual", NULL, "{\"k\":2}");
    got g = {0};
    mesh_query q = {.type = "household"};
    cr_assert_eq(mesh_list(a, &q, got_cb, &g), MESH_OK);
    cr_assert_eq(g.count, 5);
    g.count = 0;
    q.limit = 2;
    q.offset = 4;
    cr_assert_eq(mesh_list(a, &q, got_cb, &g), MESH_OK);
    cr_assert_eq(g.count, 1);
    g.count = 0;
    mesh_query all = {0};
    cr_assert_eq(mesh_list(a, &all, got_cb, &g), MESH_OK);
    cr_assert_eq(g.count, 8);
    g.count = 0;
    mesh_query future = {.last_changed_since_ms = g.e.modified_ms + 3600 * 1000};
    cr_assert_eq(mesh_list(a, &future, got_cb, &g), MESH_OK);
    cr_assert_eq(g.count, 0);
    mesh_query bad = {.type = "Not A Type"};
    cr_assert_eq(mesh_list(a, &bad, got_cb, &g), MESH_ETYPE);
}

typedef struct hist {
    int n, heads, winners;
} hist;

static int hist_cb(const mesh_op_info *op, void *ctx)
{
    hist *h = ctx;
    h->n++;
    h->heads += op->head;
    h->winners += op->winner;
    return 0;
}

static void exchange(mesh_node *from, mesh_node *to)
{
    char path[600];
    snprintf(path, sizeof path, "%s/x.bundle", tmp);
    cr_assert_eq(mesh_export(from, path, NULL), MESH_OK, "%s", mesh_errmsg());
    mesh_ingest_report rep;
    cr_assert_eq(mesh_import(to, path, &rep), MESH_OK, "%s", mesh_errmsg());
}

Test(api, concurrent_edits_conflict_everywhere_and_resolve_once)
{
    mesh_put_result r = put(a, "household", NULL, "{\"memberCount\":1}");
    exchange(a, b);
    put(a, "household", r.id, "{\"memberCount\":2}");
    put(b, "household", r.id, "{\"memberCount\":3}");
    exchange(a, b);
    exchange(b, a);
    cr_assert_str_eq(status(a).digest, status(b).digest);
    cr_assert_eq(status(a).conflicts, 1);
    cr_assert_eq(status(b).conflicts, 1);
    got ga = {0}, gb = {0};
    cr_assert_eq(mesh_get(a, r.id, 0, got_cb, &ga), MESH_OK);
    cr_assert_eq(mesh_get(b, r.id, 0, got_cb, &gb), MESH_OK);
    cr_assert_str_eq(ga.json, gb.json, "same winner everywhere");
    cr_assert(ga.e.conflict);
    hist h = {0};
    cr_assert_eq(mesh_history(a, r.id, hist_cb, &h), MESH_OK);
    cr_assert_eq(h.n, 3);
    cr_assert_eq(h.heads, 2);
    cr_assert_eq(h.winners, 1);
    got c = {0};
    cr_assert_eq(mesh_conflicts(b, got_cb, &c), MESH_OK);
    cr_assert_eq(c.count, 1);
    cr_assert_eq(mesh_resolve(a, r.id, NULL, 0, "00", NULL), MESH_EINVAL);
    mesh_put_result res;
    const char *merged = "{\"memberCount\":5}";
    cr_assert_eq(mesh_resolve(b, r.id, merged, strlen(merged), NULL, &res), MESH_OK, "%s",
                 mesh_errmsg());
    cr_assert_eq(res.row_version, 3);
    cr_assert_eq(mesh_resolve(b, r.id, merged, strlen(merged), NULL, &res), MESH_ECONFLICT);
    exchange(b, a);
    cr_assert_eq(status(a).conflicts, 0);
    cr_assert_str_eq(status(a).digest, status(b).digest);
    cr_assert_eq(mesh_get(a, r.id, 0, got_cb, &ga), MESH_OK);
    cr_assert(strstr(ga.json, "\"memberCount\":5") != NULL, "%s", ga.json);
}

static size_t file_size(const char *p)
{
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    return (size_t)st.st_size;
}

Test(api, damaged_bundles_store_nothing)
{
    for (int i = 0; i < 20; i++) put(a, "household", NULL, "{\"memberCount\":7}");
    char path[600], bad[600];
    snprintf(path, sizeof path, "%s/good.bundle", tmp);
    snprintf(bad, sizeof bad, "%s/bad.bundle", tmp);
    uint64_t count;
    cr_assert_eq(mesh_export(a, path, &count), MESH_OK);
    cr_assert_eq(count, 20);
    mesh_status before = status(b);
    size_t n = file_size(path);
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(n);
    cr_assert_eq(fread(buf, 1, n, f), n);
    fclose(f);
    /* Truncated. */
    f = fopen(bad, "wb");
    fwrite(buf, 1, n - 100, f);
    fclose(f);
    cr_assert_eq(mesh_import(b, bad, NULL), MESH_ECORRUPT, "%s", mesh_errmsg());
    cr_assert(strstr(mesh_errmsg(), "nothing was stored") != NULL, "%s", mesh_errmsg());
    /* One byte flipped in the middle. */
    buf[n / 2] ^= 0x20;
    f = fopen(bad, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    int rc = mesh_import(b, bad, NULL);
    cr_assert(rc == MESH_ESIG || rc == MESH_ECORRUPT, "rc %d: %s", rc, mesh_errmsg());
    cr_assert_eq(mesh_import(b, "/nonexistent/x.bundle", NULL), MESH_ENOTFOUND);
    mesh_status after = status(b);
    cr_assert_str_eq(after.digest, before.digest);
    cr_assert_eq(after.ops, 0);
    mesh_ingest_report rep;
    cr_assert_eq(mesh_import(b, path, &rep), MESH_OK);
    cr_assert_eq(rep.applied, 20);
    cr_assert_eq(mesh_import(b, path, &rep), MESH_OK);
    cr_assert_eq(rep.applied, 0);
    cr_assert_eq(rep.duplicate, 20);
    cr_assert_str_eq(status(a).digest, status(b).digest);
    free(buf);
}
