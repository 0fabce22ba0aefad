/*
 * gateway_test.c - the gateway end to end over real HTTP, with real processes: the reference
 * campaign service (`meshsync-campaign`, started on a free loopback port), daemons (`meshsync
 * run`, the real binary) for three field nodes and a gateway node (`run --gateway`, which runs
 * `meshsync gateway` as a child process).
 *
 *   story      households, individuals and members written offline on three field nodes (with
 *              updates and deletes) reach the service exactly once in effect, parents first,
 *              each entity's final rowVersion and fields equal to the mesh's winner; receipts
 *              and downloaded configuration reach the field nodes
 *   contracts  every request the gateway sent (recorded, secrets left out) is checked against
 *              the YAML contracts in ../shared/reference: paths, query parameters, RequestInfo,
 *              array keys, entity field names and types; in bulk and in file uplink mode
 *   faults     20% of writes silently dropped, 5xx and responses slower than the gateway's
 *              timeout, and the gateway process killed with SIGKILL mid-batch twice: no op
 *              lost, none applied twice, nothing left waiting
 *   rejection  a household the service refuses and a member of it: the authoring device's
 *              `meshsync status` and `history` show the server's error and the parent's; every
 *              other entity goes through
 *
 * Every child process dies with the test (PR_SET_PDEATHSIG) and is stopped in teardown; no
 * Criterion call is made in a forked child.
 */
#include <criterion/criterion.h>

#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <poll.h>
#include <sys/prctl.h>
#include <yaml.h>

#include "integration/net_helpers.h"

#ifndef MESH_CAMPAIGN_BIN
#define MESH_CAMPAIGN_BIN MESH_BINARY_DIR "/sim/meshsync-campaign"
#endif
#ifndef MESH_REFERENCE_DIR
#define MESH_REFERENCE_DIR MESH_SOURCE_DIR "/../shared/reference"
#endif

#define FIELD_NODES 3
#define WAIT_MS 180000u

/* ---- Processes ------------------------------------------------------------------------------ */

typedef struct proc {
    pid_t pid;
    char log[320];
} proc;

static char base[64];
static proc service;
static int service_port;
static nh_daemon daemons[FIELD_NODES + 1]; /* [0] is the gateway node */
static char keys[FIELD_NODES + 1][MESH_KEY_STR_LEN];

/* Starts argv (NULL-terminated) with stderr to `log`; stdout to a pipe whose read end is
 * returned in *out (if out != NULL). The child dies with the test. */
static pid_t spawn(const char *const *argv, const char *log, int *out)
{
    int fds[2] = {-1, -1};
    if (out && pipe(fds) != 0) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int lf = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nul = open("/dev/null", O_RDWR);
        if (lf >= 0) dup2(lf, 2);
        if (nul >= 0) dup2(nul, 0);
        if (out) dup2(fds[1], 1);
        else if (nul >= 0) dup2(nul, 1);
        if (out) close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (out) {
        close(fds[1]);
        *out = fds[0];
    }
    return pid;
}

static void stop(pid_t *pid, int sig)
{
    if (*pid <= 0) return;
    kill(*pid, sig);
    int st;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        nh_sleep_ms(10);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, &st, 0);
    *pid = 0;
}

/* Starts meshsync-campaign on a free port with extra flags. */
static void service_start(const char *const *extra)
{
    const char *argv[32];
    int n = 0;
    char data[200];
    snprintf(data, sizeof data, "%s/service", base);
    argv[n++] = MESH_CAMPAIGN_BIN;
    argv[n++] = "--data";
    argv[n++] = data;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; extra && extra[i] && n < 30; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    snprintf(service.log, sizeof service.log, "%s/service.log", base);
    int out;
    service.pid = spawn(argv, service.log, &out);
    cr_assert_gt(service.pid, 0);
    char line[128] = "";
    size_t len = 0;
    uint64_t deadline = nh_now_ms() + 10000;
    while (len + 1 < sizeof line && nh_now_ms() < deadline) {
        struct pollfd p = {out, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        if (read(out, line + len, 1) <= 0) break;
        if (line[len] == '\n') break;
        len++;
    }
    line[len] = '\0';
    close(out);
    cr_assert(sscanf(line, "listening on 127.0.0.1:%d", &service_port) == 1,
              "the service did not start: '%s' (see %s)", line, service.log);
}

static void setup(void)
{
    snprintf(base, sizeof base, "/tmp/meshgw-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
    memset(&service, 0, sizeof service);
    memset(daemons, 0, sizeof daemons);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void teardown(void)
{
    for (int i = 0; i <= FIELD_NODES; i++)
        if (daemons[i].pid > 0) nh_daemon_stop(&daemons[i], SIGTERM);
    stop(&service.pid, SIGTERM);
    if (getenv("MESH_TEST_KEEP") == NULL) nh_rm_rf(base);
}

static void dump_logs(void)
{
    nh_dump(service.log);
    for (int i = 0; i <= FIELD_NODES; i++)
        if (daemons[i].log[0]) nh_dump(daemons[i].log);
}

/* ---- HTTP to the service's test endpoints ------------------------------------------------- */

static size_t on_data(char *p, size_t s, size_t n, void *ctx)
{
    mesh_buf *b = ctx;
    return mesh_buf_append(b, p, s * n) == MESH_OK ? s * n : 0;
}

static json_t *http_json(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", service_port, path);
    CURL *c = curl_easy_init();
    mesh_buf b;
    mesh_buf_init(&b, 512u * 1024u * 1024u);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    json_t *j = cc == CURLE_OK ? json_loadb((const char *)b.data, b.len, 0, NULL) : NULL;
    mesh_buf_fini(&b);
    return j;
}

static json_t *service_entities(const char *type)
{
    char path[128];
    snprintf(path, sizeof path, "/_test/entities?type=%s&includeDeleted=true", type);
    json_t *j = http_json("GET", path, NULL);
    cr_assert_not_null(j);
    return j;
}

static json_int_t stat_of(const char *section, const char *key)
{
    json_t *s = http_json("GET", "/_test/stats", NULL);
    json_int_t v = json_integer_value(json_object_get(json_object_get(s, section), key));
    json_decref(s);
    return v;
}

/* ---- Nodes -------------------------------------------------------------------------------- */

static void make_nodes(void)
{
    const char *ks[FIELD_NODES + 1];
    for (int i = 0; i <= FIELD_NODES; i++) {
        snprintf(daemons[i].dir, sizeof daemons[i].dir, "%s/%s%d", base, i ? "field" : "gateway",
                 i);
        cr_assert_eq(nh_init_node(daemons[i].dir, keys[i]), MESH_OK, "%s", mesh_errmsg());
        ks[i] = keys[i];
        daemons[i].port = nh_free_port();
    }
    for (int i = 0; i <= FIELD_NODES; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/roster", daemons[i].dir);
        cr_assert_eq(nh_write_roster(path, ks, FIELD_NODES + 1), 0);
    }
}

/* Deep-merges object `src` into `dst`. */
static void merge(json_t *dst, json_t *src)
{
    const char *k;
    json_t *v;
    json_object_foreach(src, k, v) {
        json_t *d = json_object_get(dst, k);
        if (json_is_object(d) && json_is_object(v)) merge(d, v);
        else json_object_set(dst, k, v);
    }
}

/* Writes a gateway configuration for the running service; `extra` (JSON object text without
 * braces, or NULL) overrides settings. */
static void write_config(const char *path, const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"baseUrl\":\"http://127.0.0.1:%d\",\"tenantId\":\"mz\","
             "\"auth\":{\"username\":\"gateway\",\"password\":\"eGov@123\"},"
             "\"confirm\":{\"delayMs\":300,\"windowMs\":3000},\"uplink\":{\"lingerMs\":100},"
             "\"retries\":{\"baseMs\":200,\"maxMs\":3000,\"count\":12},\"probeIntervalMs\":200,"
             "\"downloads\":{\"intervalS\":3600}}",
             service_port);
    json_t *cfg = json_loads(text, 0, NULL);
    cr_assert_not_null(cfg);
    if (extra) {
        char more[2048];
        snprintf(more, sizeof more, "{%s}", extra);
        json_t *x = json_loads(more, 0, NULL);
        cr_assert_not_null(x, "bad extra configuration %s", extra);
        merge(cfg, x);
        json_decref(x);
    }
    cr_assert_eq(json_dump_file(cfg, path, JSON_INDENT(2)), 0);
    json_decref(cfg);
    chmod(path, 0600);
}

static void start_gateway_daemon(const char *config)
{
    const char *extra[] = {"--no-discovery", "--gateway", config, "--log-level", "debug", NULL};
    cr_assert_eq(nh_daemon_start(&daemons[0], NULL, MESH_CLI, "127.0.0.1", extra), 0);
}

static void start_field_daemon(int i)
{
    char peer[160];
    snprintf(peer, sizeof peer, "%s@tcp://127.0.0.1:%u", keys[0], (unsigned)daemons[0].port);
    const char *extra[] = {"--no-discovery", "--peer", peer, "--sync-interval", "2", NULL};
    cr_assert_eq(nh_daemon_start(&daemons[i], NULL, MESH_CLI, "127.0.0.1", extra), 0);
}

typedef struct written {
    char type[24];
    char id[37];
    char parent1[37], parent2[37];   /* household, individual of a member */
    int deleted;
} written;

#define WRITTEN_MAX 4096
static written wr[WRITTEN_MAX];
static size_t nwr;

static void put(mesh_node *n, const char *type, const char *id, const char *json, char out[37])
{
    mesh_put_result r;
    cr_assert_eq(mesh_put(n, type, id, json, strlen(json), &r), MESH_OK, "%s", mesh_errmsg());
    if (out) memcpy(out, r.id, 37);
}

/* Writes `households` households (each with an individual and a member tying them) on field
 * node i, updates every third household twice, deletes every fifth member. Offline: no daemon
 * runs. */
static void write_field_ops(int i, int households)
{
    mesh_node *n;
    cr_assert_eq(mesh_node_open(daemons[i].dir, NULL, &n), MESH_OK);
    for (int k = 0; k < households; k++) {
        written *h = &wr[nwr++], *ind = &wr[nwr++], *m = &wr[nwr++];
        char j[700];
        snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"memberCount\":1,\"address\":{\"tenantId\":"
                 "\"mz\",\"locality\":{\"code\":\"ERATI_%d\"},\"latitude\":-13.9,\"longitude\":39.2,"
                 "\"addressLine1\":\"plot %d\"},\"source\":\"field%d\",\"clientAuditDetails\":"
                 "{\"createdBy\":\"worker%d\",\"createdTime\":1714550400000}}", i, k, i, i);
        snprintf(h->type, sizeof h->type, "household");
        put(n, "household", NULL, j, h->id);
        snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"Person %d-%d\","
                 "\"familyName\":\"Field\"},\"gender\":\"FEMALE\",\"dateOfBirth\":\"01/01/1990\"}",
                 i, k);
        snprintf(ind->type, sizeof ind->type, "individual");
        put(n, "individual", NULL, j, ind->id);
        snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"%s\","
                 "\"individualClientReferenceId\":\"%s\",\"isHeadOfHousehold\":true}", h->id,
                 ind->id);
        snprintf(m->type, sizeof m->type, "household_member");
        memcpy(m->parent1, h->id, 37);
        memcpy(m->parent2, ind->id, 37);
        put(n, "household_member", NULL, j, m->id);
        if (k % 3 == 0) {
            for (int u = 2; u <= 3; u++) {
                snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"memberCount\":%d,\"address\":{"
                         "\"tenantId\":\"mz\",\"locality\":{\"code\":\"ERATI_%d\"}},\"source\":"
                         "\"field%d\"}", u, i, i);
                put(n, "household", h->id, j, NULL);
            }
        }
        if (k % 5 == 4) {
            mesh_put_result r;
            cr_assert_eq(mesh_delete(n, m->id, &r), MESH_OK);
            m->deleted = 1;
        }
    }
    mesh_node_close(n);
}

/* ---- Checks against the mesh -------------------------------------------------------------- */

typedef struct mesh_view {
    json_t *by_id;   /* id -> {json of the entity (winner), deleted, rowVersion, type} */
} mesh_view;

static int view_cb(const mesh_entity *e, void *ctx)
{
    json_t *by_id = ctx;
    json_t *body = json_loadb(e->json, e->json_len, 0, NULL);
    json_object_set_new(by_id, e->id,
                        json_pack("{s:o, s:b, s:i, s:s}", "body", body, "deleted", e->deleted,
                                  "rowVersion", (int)e->row_version, "type", e->type));
    return 0;
}

static json_t *mesh_entities(const char *dir)
{
    mesh_node *n;
    cr_assert_eq(mesh_node_open(dir, NULL, &n), MESH_OK);
    json_t *by_id = json_object();
    static const char *const types[] = {"household", "individual", "household_member"};
    for (size_t i = 0; i < 3; i++) {
        mesh_query q = {.type = types[i], .include_deleted = 1};
        cr_assert_eq(mesh_list(n, &q, view_cb, by_id), MESH_OK);
    }
    mesh_node_close(n);
    return by_id;
}

/* Every mesh entity is on the service exactly once, with the winner's fields and rowVersion
 * (no conflicts here, so the server's linear rowVersion equals the mesh's). */
static void assert_service_matches_mesh(const char *gwdir, size_t expect_entities)
{
    json_t *mesh = mesh_entities(gwdir);
    cr_assert_eq(json_object_size(mesh), expect_entities);
    size_t seen = 0;
    static const char *const types[] = {"household", "individual", "household_member"};
    json_t *created = json_object();
    for (size_t t = 0; t < 3; t++) {
        json_t *all = service_entities(types[t]);
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(all, "entities"), i, e) {
            const char *crid = json_string_value(json_object_get(e, "clientReferenceId"));
            cr_assert_not_null(crid);
            cr_assert_null(json_object_get(created, crid), "%s %s is on the service twice",
                           types[t], crid);
            json_object_set_new(created, crid,
                                json_deep_copy(json_object_get(json_object_get(e, "auditDetails"),
                                                               "createdTime")));
            json_t *m = json_object_get(mesh, crid);
            cr_assert_not_null(m, "the service holds %s %s that the mesh does not", types[t], crid);
            cr_assert_str_eq(json_string_value(json_object_get(m, "type")), types[t]);
            cr_assert_eq(json_integer_value(json_object_get(e, "rowVersion")),
                         json_integer_value(json_object_get(m, "rowVersion")),
                         "%s %s: service rowVersion %lld, mesh %lld", types[t], crid,
                         (long long)json_integer_value(json_object_get(e, "rowVersion")),
                         (long long)json_integer_value(json_object_get(m, "rowVersion")));
            bool deleted = json_is_true(json_object_get(e, "isDeleted"));
            json_t *mb = json_object_get(m, "body");
            cr_assert_eq(deleted, json_is_true(json_object_get(m, "deleted")),
                         "%s %s: deleted differs", types[t], crid);
            const char *k;
            json_t *v;
            json_object_foreach(mb, k, v) {
                if (strcmp(k, "rowVersion") == 0 || strcmp(k, "isDeleted") == 0) continue;
                cr_assert(json_equal(v, json_object_get(e, k)), "%s %s: field %s differs", types[t],
                          crid, k);
            }
            json_object_foreach(e, k, v) {
                static const char *const server_fields[] = {"id", "rowVersion", "isDeleted",
                                                            "auditDetails"};
                bool ok = json_object_get(mb, k) != NULL;
                for (size_t s = 0; s < 4 && !ok; s++) ok = strcmp(k, server_fields[s]) == 0;
                cr_assert(ok, "%s %s: the service holds a field %s the mesh has not", types[t], crid,
                          k);
            }
            seen++;
        }
        json_decref(all);
    }
    cr_assert_eq(seen, expect_entities, "the service holds %zu entities, the mesh %zu", seen,
                 expect_entities);
    /* Parents first: each member was created after its household and individual. */
    for (size_t i = 0; i < nwr; i++) {
        if (strcmp(wr[i].type, "household_member") != 0) continue;
        json_int_t tm = json_integer_value(json_object_get(created, wr[i].id));
        json_int_t th = json_integer_value(json_object_get(created, wr[i].parent1));
        json_int_t ti = json_integer_value(json_object_get(created, wr[i].parent2));
        cr_assert(tm >= th && tm >= ti, "member %s was applied before a parent", wr[i].id);
    }
    json_decref(created);
    json_decref(mesh);
}

/* Waits until every field node holds a receipt for each of its ops. */
static bool wait_receipts(int nodes, uint64_t timeout_ms, mesh_receipt_summary *out)
{
    uint64_t deadline = nh_now_ms() + timeout_ms;
    while (nh_now_ms() < deadline) {
        bool all = true;
        for (int i = 1; i <= nodes && all; i++) {
            mesh_node *n;
            if (mesh_node_open(daemons[i].dir, NULL, &n) != MESH_OK) {
                all = false;
                break;
            }
            mesh_receipt_summary s;
            if (mesh_receipt_summary_get(n, &s) != MESH_OK || s.awaiting > 0) all = false;
            if (out) out[i] = s;
            mesh_node_close(n);
        }
        if (all) return true;
        nh_sleep_ms(250);
    }
    return false;
}

static bool wait_gateway_idle(const char *dir, uint64_t timeout_ms)
{
    uint64_t deadline = nh_now_ms() + timeout_ms;
    while (nh_now_ms() < deadline) {
        mesh_node *n;
        if (mesh_node_open(dir, NULL, &n) == MESH_OK) {
            mesh_gateway_status s;
            int rc = mesh_gateway_status_get(n, &s);
            mesh_node_close(n);
            if (rc == MESH_OK && s.active && s.pending == 0 && s.sent == 0) return true;
        }
        nh_sleep_ms(250);
    }
    return false;
}

/* Runs `meshsync ARGS... --data DIR --json` and returns its output parsed. */
static json_t *cli_json(const char *dir, const char *a1, const char *a2, const char *a3)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s %s %s --data %s --json 2>/dev/null", MESH_CLI, a1,
             a2 ? a2 : "", a3 ? a3 : "", dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    int st = pclose(p);
    cr_assert_eq(st, 0, "%s failed: %s", cmd, buf);
    json_t *j = json_loads(buf, 0, NULL);
    cr_assert_not_null(j, "%s printed: %.300s", cmd, buf);
    return j;
}

/* ---- The story ------------------------------------------------------------------------------ */

TestSuite(gateway, .init = setup, .fini = teardown, .timeout = 600);

Test(gateway, story_three_field_nodes_to_the_service_and_receipts_back)
{
    const char *svc_args[] = {"--process-delay-ms", "100", NULL};
    service_start(svc_args);
    make_nodes();
    nwr = 0;
    for (int i = 1; i <= FIELD_NODES; i++) write_field_ops(i, 12);
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/gateway.json", base);
    write_config(cfg, NULL);
    start_gateway_daemon(cfg);
    for (int i = 1; i <= FIELD_NODES; i++) start_field_daemon(i);

    mesh_receipt_summary s[FIELD_NODES + 1];
    bool ok = wait_receipts(FIELD_NODES, WAIT_MS, s);
    if (!ok) dump_logs();
    cr_assert(ok, "receipts did not reach every field node");
    size_t own_ops = 0;
    for (int i = 1; i <= FIELD_NODES; i++) {
        cr_assert_eq(s[i].rejected, 0);
        cr_assert_eq(s[i].confirmed, s[i].own_ops);
        own_ops += s[i].own_ops;
    }
    /* 12 households x (3 creates + 1 delete per 5 + 2 updates per 3) per node. */
    cr_assert_eq(own_ops, (size_t)FIELD_NODES * (12 * 3 + 2 + 4 * 2));
    cr_assert(wait_gateway_idle(daemons[0].dir, 10000));
    assert_service_matches_mesh(daemons[0].dir, nwr);
    /* No fault: nothing was refused, duplicated or sent twice. */
    json_t *errs = http_json("GET", "/_test/errors", NULL);
    cr_assert_eq(json_integer_value(json_object_get(errs, "count")), 0, "service errors: %s",
                 json_dumps(errs, 0));
    json_decref(errs);
    cr_assert_eq(stat_of("writes", "applied"), stat_of("writes", "accepted"));

    /* A field node sees the server's verdict per op, and the downloads. */
    json_t *h = cli_json(daemons[1].dir, "history", wr[0].id, NULL);
    cr_assert_eq(json_array_size(h), 3, "created and updated twice");
    for (size_t i = 0; i < 3; i++) {
        json_t *r = json_object_get(json_array_get(h, i), "receipt");
        cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "confirmed");
        cr_assert_eq(json_integer_value(json_object_get(r, "serverRowVersion")), (json_int_t)i + 1);
        cr_assert_str_eq(json_string_value(json_object_get(r, "gateway")), keys[0]);
    }
    json_decref(h);
    json_t *st = cli_json(daemons[1].dir, "status", NULL, NULL);
    json_t *rec = json_object_get(st, "receipts");
    cr_assert_eq(json_integer_value(json_object_get(rec, "awaiting")), 0);
    cr_assert_eq(json_integer_value(json_object_get(rec, "confirmed")),
                 json_integer_value(json_object_get(rec, "own_ops")));
    json_decref(st);
    uint64_t deadline = nh_now_ms() + 30000;
    json_t *sos = NULL;
    while (nh_now_ms() < deadline) {
        json_t *cfgs = cli_json(daemons[2].dir, "get", "config", NULL);
        size_t n = json_array_size(cfgs);
        json_decref(cfgs);
        if (n >= 8) break; /* 3 forms, 6 dictionaries, SOS, dashboard */
        nh_sleep_ms(250);
    }
    sos = cli_json(daemons[2].dir, "get", "config", "sos/contacts");
    cr_assert(json_array_size(json_object_get(sos, "value")) >= 1, "SOS contacts reached field 2");
    json_decref(sos);
    json_t *loc = cli_json(daemons[3].dir, "get", "config",
                           "localization/hcm-forms-householdDetails/pt_MZ");
    cr_assert_str_eq(json_string_value(json_object_get(loc, "kind")), "localization");
    json_decref(loc);
    json_t *gst = cli_json(daemons[0].dir, "status", NULL, NULL);
    json_t *gw = json_object_get(gst, "gateway");
    cr_assert(json_is_true(json_object_get(gw, "running")));
    cr_assert_eq(json_integer_value(json_object_get(gw, "confirmed")), (json_int_t)own_ops);
    json_decref(gst);
}

/* ---- Faults: drops, 5xx, timeouts, kill -9 ---------------------------------------------------- */

static pid_t gateway_child_pid(void)
{
    char path[320];
    snprintf(path, sizeof path, "%s/gateway-state.json", daemons[0].dir);
    json_t *j = json_load_file(path, 0, NULL);
    pid_t pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    return pid;
}

Test(gateway, faults_drops_errors_timeouts_and_kill_9)
{
    const char *svc_args[] = {"--process-delay-ms", "100", "--drop-writes", "0.2", "--fail-rate",
                              "0.1", "--slow-rate", "0.05", "--slow-ms", "2500", "--fault-seed",
                              "7", NULL};
    service_start(svc_args);
    make_nodes();
    nwr = 0;
    for (int i = 1; i <= FIELD_NODES; i++) write_field_ops(i, 60);
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/gateway.json", base);
    write_config(cfg, "\"timeoutMs\":1500,\"uplink\":{\"batchSize\":25,\"lingerMs\":100}");
    start_gateway_daemon(cfg);
    for (int i = 1; i <= FIELD_NODES; i++) start_field_daemon(i);

    /* Kill the gateway process with SIGKILL twice while batches are in flight; the daemon
     * restarts it and it resumes from the store. */
    for (int kill_no = 0; kill_no < 2; kill_no++) {
        /* Mid-batch: once a quarter (then half) of the writes arrived, at a moment when the
         * outbox holds ops marked sent whose outcome the gateway does not know yet. */
        json_int_t target = (kill_no + 1) * (json_int_t)nwr / 4;
        uint64_t deadline = nh_now_ms() + 60000;
        while (nh_now_ms() < deadline && stat_of("writes", "accepted") < target) nh_sleep_ms(20);
        uint64_t in_flight = 0;
        while (nh_now_ms() < deadline && in_flight == 0) {
            mesh_node *gn;
            if (mesh_node_open(daemons[0].dir, NULL, &gn) == MESH_OK) {
                mesh_gateway_status gs;
                if (mesh_gateway_status_get(gn, &gs) == MESH_OK) in_flight = gs.sent;
                mesh_node_close(gn);
            }
        }
        cr_assert_gt(in_flight, 0, "no batch was in flight");
        pid_t pid = gateway_child_pid();
        cr_assert_gt(pid, 0, "the gateway process wrote no state file");
        cr_assert_eq(kill(pid, SIGKILL), 0);
        nh_sleep_ms(300);
        /* The supervisor starts a new one (after its backoff). */
        deadline = nh_now_ms() + 20000;
        while (nh_now_ms() < deadline && (gateway_child_pid() == pid || gateway_child_pid() == 0))
            nh_sleep_ms(100);
        cr_assert_neq(gateway_child_pid(), pid, "the gateway was not restarted");
    }
    cr_assert(nh_file_contains(daemons[0].log, "was killed by signal 9"));

    mesh_receipt_summary s[FIELD_NODES + 1];
    bool ok = wait_receipts(FIELD_NODES, WAIT_MS, s);
    if (!ok) dump_logs();
    cr_assert(ok, "receipts did not reach every field node: something is stuck");
    for (int i = 1; i <= FIELD_NODES; i++) {
        cr_assert_eq(s[i].rejected, 0, "field %d: %zu rejected (%s: %s)", i, (size_t)s[i].rejected,
                     s[i].nrecent ? s[i].recent[0].code : "", s[i].nrecent ? s[i].recent[0].message : "");
        cr_assert_eq(s[i].confirmed, s[i].own_ops);
    }
    cr_assert(wait_gateway_idle(daemons[0].dir, 10000), "the outbox still has work");
    /* Repeats of writes that timed out may still wait in the service's queue: apply them now;
     * they must change nothing. */
    json_decref(http_json("POST", "/_test/flush", ""));
    assert_service_matches_mesh(daemons[0].dir, nwr);
    /* The faults happened: writes were dropped and requests failed or were slowed; the
     * service's accounting adds up (every write it queued was applied or refused; the ones
     * it dropped are counted apart). */
    json_t *st = http_json("GET", "/_test/stats", NULL);
    json_t *w = json_object_get(st, "writes");
    cr_assert_gt(json_integer_value(json_object_get(w, "dropped")), 0);
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(st, "faults"), "failed")), 0);
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(st, "faults"), "slowed")), 0);
    cr_assert_eq(json_integer_value(json_object_get(w, "accepted")),
                 json_integer_value(json_object_get(w, "applied")) +
                     json_integer_value(json_object_get(w, "rejected")),
                 "service stats: %s", json_dumps(st, JSON_COMPACT));
    cr_assert_eq(json_integer_value(json_object_get(w, "queuedRequests")), 0);
    json_decref(st);
    /* Whatever the service refused was a repeat of something already applied. */
    json_t *errs = http_json("GET", "/_test/errors", NULL);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(errs, "errors"), i, e) {
        const char *code = json_string_value(json_object_get(e, "code"));
        cr_assert(strcmp(code, "DUPLICATE_ENTITY") == 0 || strcmp(code, "MISMATCHED_ROW_VERSION") == 0,
                  "unexpected service error %s", code);
    }
    json_decref(errs);
}

/* ---- A rejection reaches the authoring device ------------------------------------------------- */

Test(gateway, a_rejected_op_reaches_its_author_and_blocks_nothing_else)
{
    const char *svc_args[] = {"--process-delay-ms", "50", NULL};
    service_start(svc_args);
    make_nodes();
    nwr = 0;
    write_field_ops(2, 5);
    mesh_node *n;
    cr_assert_eq(mesh_node_open(daemons[1].dir, NULL, &n), MESH_OK);
    char bad[37], ind[37], mem[37], j[400];
    put(n, "household", NULL, "{\"tenantId\":\"mz\",\"address\":{\"tenantId\":\"mz\"}}", bad);
    put(n, "individual", NULL, "{\"tenantId\":\"mz\",\"name\":{\"givenName\":\"Ana\"}}", ind);
    snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"householdClientReferenceId\":\"%s\","
             "\"individualClientReferenceId\":\"%s\"}", bad, ind);
    put(n, "household_member", NULL, j, mem);
    mesh_node_close(n);
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/gateway.json", base);
    write_config(cfg, NULL);
    start_gateway_daemon(cfg);
    for (int i = 1; i <= 2; i++) start_field_daemon(i);

    mesh_receipt_summary s[FIELD_NODES + 1];
    bool ok = wait_receipts(2, WAIT_MS, s);
    if (!ok) dump_logs();
    cr_assert(ok);
    cr_assert_eq(s[1].rejected, 2);
    cr_assert_eq(s[1].confirmed, 1, "the individual went through");
    cr_assert_eq(s[2].rejected, 0);
    cr_assert_eq(s[2].confirmed, s[2].own_ops, "the other field node's entities are unaffected");

    json_t *st = cli_json(daemons[1].dir, "status", NULL, NULL);
    json_t *latest = json_object_get(json_object_get(st, "receipts"), "latest_rejections");
    cr_assert_eq(json_array_size(latest), 2);
    bool saw_parent = false, saw_invalid = false;
    size_t i;
    json_t *x;
    json_array_foreach(latest, i, x) {
        const char *code = json_string_value(json_object_get(x, "code"));
        const char *msg = json_string_value(json_object_get(x, "message"));
        if (strcmp(code, "PARENT_REJECTED") == 0) {
            saw_parent = true;
            cr_assert(strstr(msg, bad) && strstr(msg, "memberCount"), "%s", msg);
        }
        if (strcmp(code, "INVALID_REQUEST") == 0) {
            saw_invalid = true;
            cr_assert(strstr(msg, "memberCount is required") != NULL, "%s", msg);
        }
    }
    cr_assert(saw_parent && saw_invalid);
    json_decref(st);
    json_t *h = cli_json(daemons[1].dir, "history", mem, NULL);
    json_t *r = json_object_get(json_array_get(h, 0), "receipt");
    cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "rejected");
    cr_assert_str_eq(json_string_value(json_object_get(r, "code")), "PARENT_REJECTED");
    json_decref(h);
    json_t *all = service_entities("household");
    cr_assert_eq(json_integer_value(json_object_get(all, "count")), 5);
    json_decref(all);
}

/* ---- The contracts ---------------------------------------------------------------------------- */

/* YAML (libyaml) to JSON, scalars as strings. */
static json_t *yaml_node_json(yaml_document_t *d, yaml_node_t *n, int depth)
{
    if (n == NULL || depth > 64) return json_null();
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return json_stringn((const char *)n->data.scalar.value, n->data.scalar.length);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
            json_array_append_new(a, yaml_node_json(d, yaml_document_get_node(d, *it), depth + 1));
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(d, p->key);
            if (k == NULL || k->type != YAML_SCALAR_NODE) continue;
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)k->data.scalar.length, k->data.scalar.value);
            json_object_set_new(o, key, yaml_node_json(d, yaml_document_get_node(d, p->value), depth + 1));
        }
        return o;
    }
    default: return json_null();
    }
}

static json_t *yaml_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    yaml_parser_t p;
    yaml_document_t d;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    json_t *j = NULL;
    if (yaml_parser_load(&p, &d)) {
        j = yaml_node_json(&d, yaml_document_get_root_node(&d), 0);
        yaml_document_delete(&d);
    }
    yaml_parser_delete(&p);
    fclose(f);
    return j;
}

typedef struct contract {
    char file[512];
    char prefix[64];   /* servers[0] path (OpenAPI 3) */
    json_t *doc;
} contract;

#define CONTRACTS_MAX 64
static contract contracts[CONTRACTS_MAX];
static size_t ncontracts;

static void load_contracts_in(const char *dir)
{
    DIR *dp = opendir(dir);
    if (dp == NULL) return;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL && ncontracts < CONTRACTS_MAX) {
        if (de->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            load_contracts_in(path);
            continue;
        }
        size_t l = strlen(de->d_name);
        if (l < 5 || (strcmp(de->d_name + l - 4, ".yml") && strcmp(de->d_name + l - 5, ".yaml")))
            continue;
        json_t *doc = yaml_load(path);
        if (doc == NULL) continue;
        contract *c = &contracts[ncontracts++];
        snprintf(c->file, sizeof c->file, "%s", path);
        c->doc = doc;
        const char *url = json_string_value(json_object_get(json_array_get(json_object_get(doc, "servers"), 0), "url"));
        c->prefix[0] = '\0';
        if (url) {
            const char *p = strstr(url, "://");
            p = p ? strchr(p + 3, '/') : NULL;
            if (p) snprintf(c->prefix, sizeof c->prefix, "%s", p);
        }
    }
    closedir(dp);
}

/* The contract document a $ref's file part names: of the local copies, the one whose path
 * shares the longest suffix with the URL's (".../common/contracts/v1-0-0.yml"), or NULL. */
static contract *contract_by_ref(const char *ref)
{
    const char *hash = strchr(ref, '#');
    size_t len = hash ? (size_t)(hash - ref) : strlen(ref);
    contract *best = NULL;
    size_t best_common = 0;
    for (size_t i = 0; i < ncontracts; i++) {
        const char *f = contracts[i].file;
        size_t fl = strlen(f), k = 0;
        while (k < fl && k < len && f[fl - 1 - k] == ref[len - 1 - k]) k++;
        /* At least the whole file name must agree. */
        const char *fname = strrchr(f, '/');
        if (fname == NULL || k < strlen(fname)) continue;
        if (k > best_common) {
            best = &contracts[i];
            best_common = k;
        }
    }
    return best;
}

static json_t *resolve(contract **c, json_t *schema)
{
    for (int i = 0; i < 16 && json_is_object(schema); i++) {
        const char *ref = json_string_value(json_object_get(schema, "$ref"));
        if (ref == NULL) return schema;
        if (ref[0] != '#') {
            contract *o = contract_by_ref(ref);
            if (o == NULL) return NULL; /* an external contract we do not hold: anything goes */
            *c = o;
            ref = strchr(ref, '#');
            if (ref == NULL) return NULL;
        }
        json_t *node = (*c)->doc;
        char part[128];
        const char *p = ref + 1;
        while (*p == '/' && node) {
            p++;
            size_t n = strcspn(p, "/");
            snprintf(part, sizeof part, "%.*s", (int)n, p);
            node = json_object_get(node, part);
            p += n;
        }
        schema = node;
    }
    return schema;
}

static contract *hcm_household; /* its User schema is the code's RequestInfo.userInfo */

static void validate(contract *c, json_t *schema, json_t *inst, const char *where, bool strict,
                     int depth);

static void validate_object(contract *c, json_t *schema, json_t *inst, const char *where,
                            bool strict, int depth)
{
    cr_assert(json_is_object(inst), "%s must be an object", where);
    json_t *props = json_object_get(schema, "properties");
    const char *k;
    json_t *v;
    json_object_foreach(inst, k, v) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s.%s", where, k);
        json_t *ps = json_object_get(props, k);
        if (ps == NULL) {
            cr_assert(!strict || props == NULL, "%s is not a field of the contract (%s)", sub,
                      c->file);
            continue;
        }
        if (strcmp(k, "userInfo") == 0 && hcm_household) {
            /* DIGIT's code (and household.yml) carry a User here; the 2017 common contract's
             * UserInfo predates it. */
            contract *hc = hcm_household;
            json_t *user = json_object_get(json_object_get(json_object_get(hc->doc, "components"), "schemas"), "User");
            validate(hc, user, v, sub, strict, depth + 1);
            continue;
        }
        validate(c, ps, v, sub, strict, depth + 1);
    }
}

static void validate(contract *c, json_t *schema, json_t *inst, const char *where, bool strict,
                     int depth)
{
    if (depth > 32) return;
    schema = resolve(&c, schema);
    if (!json_is_object(schema)) return;
    if (json_object_get(schema, "allOf") || json_object_get(schema, "oneOf") ||
        json_object_get(schema, "anyOf"))
        return;
    const char *type = json_string_value(json_object_get(schema, "type"));
    if (json_object_get(schema, "properties") || (type && strcmp(type, "object") == 0)) {
        validate_object(c, schema, inst, where, strict, depth);
        json_t *req = json_object_get(schema, "required");
        size_t i;
        json_t *r;
        json_array_foreach(req, i, r) {
            const char *name = json_string_value(r);
            bool has = json_object_get(inst, name) != NULL;
            /* A server id that an offline client cannot know is sent as the client reference
             * (beneficiaryId as beneficiaryClientReferenceId): CAMPAIGN_SERVICE.md, "Entity
             * types"; the code does not require the ids. */
            size_t nl = strlen(name);
            if (!has && nl > 2 && strcmp(name + nl - 2, "Id") == 0) {
                char alt[160];
                snprintf(alt, sizeof alt, "%.*sClientReferenceId", (int)(nl - 2), name);
                has = json_object_get(inst, alt) != NULL;
            }
            cr_assert(has, "%s lacks %s, which %s requires", where, name, c->file);
        }
        return;
    }
    if (type == NULL) return;
    if (strcmp(type, "array") == 0) {
        cr_assert(json_is_array(inst), "%s must be an array", where);
        size_t i;
        json_t *x;
        json_array_foreach(inst, i, x) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s[%zu]", where, i);
            validate(c, json_object_get(schema, "items"), x, sub, strict, depth + 1);
        }
    } else if (strcmp(type, "string") == 0) {
        cr_assert(json_is_string(inst), "%s must be a string", where);
    } else if (strcmp(type, "integer") == 0) {
        cr_assert(json_is_integer(inst), "%s must be an integer", where);
    } else if (strcmp(type, "number") == 0) {
        cr_assert(json_is_number(inst), "%s must be a number", where);
    } else if (strcmp(type, "boolean") == 0) {
        cr_assert(json_is_boolean(inst), "%s must be a boolean", where);
    }
}

/* The operation of a POST path in any loaded contract (prefix + path), or NULL. */
static json_t *find_operation(const char *path, const char *method, contract **out)
{
    for (size_t i = 0; i < ncontracts; i++) {
        contract *c = &contracts[i];
        json_t *paths = json_object_get(c->doc, "paths");
        const char *p;
        json_t *item;
        json_object_foreach(paths, p, item) {
            char full[512];
            const char *bp = json_string_value(json_object_get(c->doc, "basePath"));
            snprintf(full, sizeof full, "%s%s", c->prefix[0] ? c->prefix : bp ? bp : "", p);
            if (strcmp(full, path) != 0 && strcmp(p, path) != 0) continue;
            json_t *op = json_object_get(item, method);
            if (op == NULL) continue;
            *out = c;
            return op;
        }
    }
    return NULL;
}

/* The request body's schema of an operation (OpenAPI 3 requestBody or Swagger 2 in: body). */
static json_t *body_schema(contract *c, json_t *op)
{
    json_t *s = json_object_get(json_object_get(json_object_get(json_object_get(op, "requestBody"),
                                                        "content"), "application/json"), "schema");
    if (s) return s;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(op, "parameters"), i, p) {
        contract *cc = c;
        json_t *rp = resolve(&cc, p);
        if (rp && json_is_string(json_object_get(rp, "in")) &&
            strcmp(json_string_value(json_object_get(rp, "in")), "body") == 0)
            return json_object_get(rp, "schema");
    }
    return NULL;
}

static bool param_declared(contract *c, json_t *op, const char *name, const char *in)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(op, "parameters"), i, p) {
        contract *cc = c;
        json_t *rp = resolve(&cc, p);
        const char *pn = json_string_value(json_object_get(rp, "name"));
        const char *pin = json_string_value(json_object_get(rp, "in"));
        if (pn && pin && strcmp(pn, name) == 0 && strcmp(pin, in) == 0) return true;
    }
    return false;
}

/* Checks one recorded request; returns a short kind for the tally. */
static const char *check_request(json_t *rq)
{
    const char *method = json_string_value(json_object_get(rq, "method"));
    const char *full = json_string_value(json_object_get(rq, "path"));
    char path[1024], query[2048] = "";
    snprintf(path, sizeof path, "%.*s", (int)strcspn(full, "?"), full);
    if (strchr(full, '?')) snprintf(query, sizeof query, "%s", strchr(full, '?') + 1);
    json_t *body = json_object_get(rq, "body");
    if (strcmp(path, "/user/oauth/token") == 0) {
        /* egov-user's password grant (CAMPAIGN_SERVICE.md, "Auth"): form fields, Basic client. */
        cr_assert(json_is_true(json_object_get(rq, "authorization")), "login without Basic auth");
        cr_assert_str_eq(json_string_value(json_object_get(rq, "contentType")),
                         "application/x-www-form-urlencoded");
        static const char *const want[] = {"grant_type", "scope", "username", "password",
                                           "tenantId", "userType"};
        json_t *names = json_object_get(rq, "formFields");
        cr_assert_eq(json_array_size(names), 6);
        for (size_t i = 0; i < 6; i++)
            cr_assert_str_eq(json_string_value(json_array_get(names, i)), want[i]);
        return "login";
    }
    if (strcmp(path, "/dashboard/v1/_search") == 0) {
        /* No public contract: the reference service's (CAMPAIGN_SERVICE.md). */
        contract *c = hcm_household;
        json_t *ri = json_object_get(json_object_get(json_object_get(c->doc, "components"), "schemas"), "RequestInfo");
        validate(c, ri, json_object_get(body, "RequestInfo"), "RequestInfo", true, 0);
        json_t *crit = json_object_get(body, "DashboardCriteria");
        cr_assert(json_is_string(json_object_get(crit, "tenantId")));
        cr_assert_eq(json_object_size(body), 2);
        return "dashboard";
    }
    if (strncmp(path, "/mdms-v2/v1/_search", 19) == 0 || strcmp(path, "/egov-mdms-service/v1/_search") == 0) {
        /* mdms-contract.yml's basePath is a placeholder: its /_search operation. */
        contract *c = NULL;
        json_t *op = NULL;
        for (size_t i = 0; i < ncontracts && !op; i++)
            if (strstr(contracts[i].file, "mdms-contract.yml")) {
                c = &contracts[i];
                op = json_object_get(json_object_get(json_object_get(c->doc, "paths"), "/_search"), "post");
            }
        cr_assert_not_null(op, "mdms-contract.yml not found");
        validate(c, body_schema(c, op), body, "MdmsCriteriaReq", true, 0);
        return "mdms";
    }
    if (strcmp(path, "/localization/messages/v1/_search") == 0) {
        contract *c = NULL;
        json_t *op = find_operation("/messages/v1/_search", "post", &c);
        cr_assert_not_null(op, "localisation-contract.yml not found");
        char q[2048];
        snprintf(q, sizeof q, "%s", query);
        for (char *t = strtok(q, "&"); t; t = strtok(NULL, "&")) {
            t[strcspn(t, "=")] = '\0';
            cr_assert(param_declared(c, op, t, "query"), "localisation query parameter %s is "
                      "not in the contract", t);
        }
        return "localization";
    }
    if (strcmp(path, "/filestore/v1/files") == 0) {
        contract *c = NULL;
        json_t *op = find_operation(path, "post", &c);
        cr_assert_not_null(op);
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(rq, "formFields"), i, n)
            cr_assert(param_declared(c, op, json_string_value(n), "formData"),
                      "filestore field %s is not in the contract", json_string_value(n));
        cr_assert(json_is_true(json_object_get(rq, "authTokenHeader")));
        return "filestore";
    }
    contract *c = NULL;
    json_t *op = find_operation(path, strcmp(method, "GET") == 0 ? "get" : "post", &c);
    cr_assert_not_null(op, "%s %s is in no contract", method, path);
    if (query[0]) {
        char q[2048];
        snprintf(q, sizeof q, "%s", query);
        for (char *t = strtok(q, "&"); t; t = strtok(NULL, "&")) {
            t[strcspn(t, "=")] = '\0';
            cr_assert(param_declared(c, op, t, "query"), "%s: query parameter %s is not in %s",
                      path, t, c->file);
        }
    }
    if (strcmp(method, "GET") == 0) return "filestore-url";
    json_t *schema = body_schema(c, op);
    cr_assert_not_null(schema, "%s: the contract has no request body", path);
    contract *cc = c;
    json_t *rs = resolve(&cc, schema);
    if (strncmp(path, "/sync/", 6) == 0) {
        /* The design-era sync contract; the reference service adds checksum and fileStoreId
         * (CAMPAIGN_SERVICE.md, "Sync file"). */
        json_t *sync = json_deep_copy(json_object_get(body, "sync"));
        json_object_del(sync, "checksum");
        json_object_del(sync, "fileStoreId");
        json_t *b2 = json_pack("{s:O, s:o}", "requestInfo", json_object_get(body, "requestInfo"), "sync", sync);
        validate(cc, rs, b2, path, true, 0);
        json_decref(b2);
        return strstr(path, "/forms/") ? "forms-sync" : "sync-file";
    }
    /* Entity requests: the body's keys are the schema's (RequestInfo and the array, single or
     * criteria key), every entity's fields are the contract's. `required` at the top is not
     * checked: individual.yml requires "Individual" where the code reads "Individuals"
     * (digit-hcm SOURCE.md); the key the code reads must be among the properties. */
    json_t *props = json_object_get(rs, "properties");
    cr_assert_not_null(props, "%s: body schema without properties", path);
    cr_assert(json_object_get(body, "RequestInfo") != NULL, "%s without RequestInfo", path);
    validate_object(cc, rs, body, path, true, 0);
    return strstr(path, "_search") ? "search" : strstr(path, "/bulk/") ? "bulk write" : "single write";
}

static void check_record(const char *record, json_t *tally)
{
    FILE *f = fopen(record, "r");
    cr_assert_not_null(f, "no request record at %s", record);
    static char line[8 << 20];
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *rq = json_loads(line, 0, NULL);
        cr_assert_not_null(rq, "record line %zu is not JSON", n + 1);
        const char *kind = check_request(rq);
        json_object_set_new(tally, kind, json_integer(json_integer_value(json_object_get(tally, kind)) + 1));
        json_decref(rq);
        n++;
    }
    fclose(f);
    cr_assert_gt(n, 0);
}

static void run_gateway_until_idle(const char *dir, const char *config, const char *record)
{
    const char *argv[] = {MESH_CLI, "gateway", config, "--data", dir, "--until-idle", "--record",
                          record, "--log-level", "debug", NULL};
    char log[320];
    snprintf(log, sizeof log, "%s/gateway-run.log", base);
    pid_t pid = spawn(argv, log, NULL);
    int st = 0;
    uint64_t deadline = nh_now_ms() + WAIT_MS;
    while (nh_now_ms() < deadline && waitpid(pid, &st, WNOHANG) == 0) nh_sleep_ms(50);
    if (waitpid(pid, &st, WNOHANG) == 0) {
        stop(&pid, SIGKILL);
        nh_dump(log);
        cr_assert_fail("the gateway did not become idle");
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) nh_dump(log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

Test(gateway, every_request_conforms_to_the_contracts_in_bulk_and_file_mode)
{
    /* The reference copies live beside the repository (../shared/reference); the environment
     * may point elsewhere. */
    const char *refdir = getenv("MESH_REFERENCE_DIR") ? getenv("MESH_REFERENCE_DIR")
                                                       : MESH_REFERENCE_DIR;
    char ref[600];
    snprintf(ref, sizeof ref, "%s/digit-hcm/health-campaign-services/docs/health-api-specs/contracts",
             refdir);
    struct stat sb;
    if (stat(ref, &sb) != 0) cr_skip_test("no reference contracts at %s", refdir);
    ncontracts = 0;
    load_contracts_in(ref);
    char more[600];
    snprintf(more, sizeof more, "%s/digit-hcm/egov-services", refdir);
    load_contracts_in(more);
    snprintf(more, sizeof more, "%s/digit-core", refdir);
    load_contracts_in(more);
    hcm_household = NULL;
    for (size_t i = 0; i < ncontracts; i++)
        if (strstr(contracts[i].file, "registries/household.yml")) hcm_household = &contracts[i];
    cr_assert_not_null(hcm_household);

    const char *svc_args[] = {"--process-delay-ms", "50", NULL};
    service_start(svc_args);
    make_nodes();
    nwr = 0;
    write_field_ops(0, 8); /* on the gateway node itself: no daemons needed */
    /* A beneficiary and a task, to cover project.yml too. */
    mesh_node *n;
    cr_assert_eq(mesh_node_open(daemons[0].dir, NULL, &n), MESH_OK);
    char pb[37], j[400];
    snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"projectId\":\"P-1\","
             "\"beneficiaryClientReferenceId\":\"%s\",\"dateOfRegistration\":1714550400000}", wr[0].id);
    put(n, "project_beneficiary", NULL, j, pb);
    snprintf(j, sizeof j, "{\"tenantId\":\"mz\",\"projectId\":\"P-1\",\"projectBeneficiaryClientReferenceId\":"
             "\"%s\",\"status\":\"DELIVERED\",\"address\":{\"tenantId\":\"mz\",\"locality\":{\"code\":"
             "\"ERATI_1\"}},\"resources\":[{\"tenantId\":\"mz\",\"productVariantId\":\"PV-1\","
             "\"quantity\":1,\"isDelivered\":true}]}", pb);
    put(n, "task", NULL, j, NULL);
    mesh_node_close(n);
    char cfg[300], record[300];
    snprintf(cfg, sizeof cfg, "%s/gateway.json", base);
    snprintf(record, sizeof record, "%s/requests.jsonl", base);
    write_config(cfg, NULL);
    run_gateway_until_idle(daemons[0].dir, cfg, record);

    /* The same entities again in file mode, from another node. */
    write_field_ops(1, 6);
    char cfg2[300], record2[300];
    snprintf(cfg2, sizeof cfg2, "%s/gateway-file.json", base);
    snprintf(record2, sizeof record2, "%s/requests-file.jsonl", base);
    write_config(cfg2, "\"uplink\":{\"mode\":\"file\",\"lingerMs\":100},\"file\":{\"campaignId\":"
                       "\"CMP-2024-MZ-001\",\"pollMs\":100},\"downloads\":{\"formsSource\":\"sync\"}");
    run_gateway_until_idle(daemons[1].dir, cfg2, record2);
    json_t *all = service_entities("household");
    cr_assert_eq(json_integer_value(json_object_get(all, "count")), 8 + 6);
    json_decref(all);
    /* The sync service's forms search brought the forms into that node. */
    json_t *form = cli_json(daemons[1].dir, "get", "config", "forms/householdDetails");
    cr_assert_str_eq(json_string_value(json_object_get(form, "source")), "/sync/forms/v1/_search");
    json_decref(form);

    json_t *tally = json_object();
    check_record(record, tally);
    check_record(record2, tally);
    static const char *const kinds[] = {"login", "bulk write", "search", "mdms", "localization",
                                        "dashboard", "filestore", "filestore-url", "sync-file",
                                        "forms-sync"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        cr_assert_gt(json_integer_value(json_object_get(tally, kinds[i])), 0,
                     "no %s request was checked: %s", kinds[i], json_dumps(tally, 0));
    char *t = json_dumps(tally, JSON_COMPACT);
    fprintf(stderr, "checked requests: %s\n", t);
    free(t);
    json_decref(tally);
    for (size_t i = 0; i < ncontracts; i++) json_decref(contracts[i].doc);
    ncontracts = 0;
}
