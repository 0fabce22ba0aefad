/*
 * campaign_test.c - runs the real `meshsync-campaign` binary on a free loopback port with a
 * temporary data directory and talks HTTP to it with libcurl: asynchronous writes (202, not
 * visible before the delay, visible after with an id and rowVersion 1), the write rules
 * (DUPLICATE_ENTITY, MISMATCHED_ROW_VERSION, NULL_ID, NON_EXISTENT_ENTITY, soft delete), search
 * parameters, request validation, tokens, gzip, every entity type's paths and keys, MDMS,
 * localisation, dashboard, form sync, filestore and the sync file endpoint with its checksum,
 * fault injection (5xx, slow, dropped writes, reproducible with a seed), the body limit, a
 * restart that keeps data and the pending queue, and concurrent writers applied exactly once.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <zlib.h>

#ifndef MESH_CAMPAIGN_BIN
#define MESH_CAMPAIGN_BIN MESH_BINARY_DIR "/sim/meshsync-campaign"
#endif

/* ---- The service process ----------------------------------------------------------------- */

typedef struct svc {
    pid_t pid;
    int port;
    char dir[128];   /* the test's temporary directory */
    char data[160];  /* --data */
    char log[160];   /* the service's stderr */
    char base[64];   /* http://127.0.0.1:PORT */
    char token[64];
} svc;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void make_dir(svc *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/campaign_test.XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir), "mkdtemp: %s", strerror(errno));
    snprintf(s->data, sizeof s->data, "%s/data", s->dir);
    snprintf(s->log, sizeof s->log, "%s/service.log", s->dir);
}

/* Starts the service on a free port with `args` (NULL-terminated) after --data and --port. */
static void svc_start_in(svc *s, const char *const *args)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *argv[40];
    int n = 0;
    argv[n++] = MESH_CAMPAIGN_BIN;
    argv[n++] = "--data";
    argv[n++] = s->data;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; args && args[i] && n < 38; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int out[2];
    cr_assert(pipe(out) == 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* A test that fails or times out never reaches svc_stop: take the service down with
         * the test process instead of leaving it running. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        /* No Criterion call here: with --full-stats even a passing assertion messages the
         * runner, which does not know this process and leaves it waiting forever. */
        int logfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(out[1], 1);
        if (logfd >= 0)
            dup2(logfd, 2);
        close(out[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    cr_assert(pid > 0, "fork: %s", strerror(errno));
    close(out[1]);
    char line[128] = "";
    size_t len = 0;
    int64_t deadline = now_ms() + 10000;
    while (len + 1 < sizeof line && now_ms() < deadline) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(out[0], line + len, 1);
        if (r <= 0)
            break;
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = 0;
    close(out[0]);
    s->pid = pid;
    cr_assert(sscanf(line, "listening on 127.0.0.1:%d", &s->port) == 1,
              "the service did not announce its port (got '%s'; see %s)", line, s->log);
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    s->token[0] = 0;
}

static void svc_start(svc *s, const char *const *args)
{
    make_dir(s);
    svc_start_in(s, args);
}

/* Stops the service with SIGTERM and checks it exits 0. */
static void svc_stop(svc *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int status = 0;
    int64_t deadline = now_ms() + 10000;
    pid_t r;
    while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(10);
    if (r == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        cr_assert_fail("the service did not stop on SIGTERM within 10 s (log: %s)", s->log);
    }
    s->pid = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the service exited with status %d (log: %s)", status, s->log);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void svc_cleanup(svc *s)
{
    svc_stop(s);
    nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

typedef struct resp {
    long status;
    CURLcode curl;
    char *body;
    size_t len;
    bool gzip;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    char *b = realloc(r->body, r->len + sz * n + 1);
    if (!b)
        return 0;
    memcpy(b + r->len, p, sz * n);
    r->len += sz * n;
    b[r->len] = 0;
    r->body = b;
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    if (sz * n >= 22 && !strncasecmp(p, "Content-Encoding: gzip", 22))
        r->gzip = true;
    return sz * n;
}

static void resp_free(resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* One request; `headers` is NULL-terminated (may be NULL); timeout_ms 0 means 20 s. */
static resp http_ex(const svc *s, const char *method, const char *path, const void *body,
                    size_t body_len, const char *const *headers, long timeout_ms)
{
    /* No Criterion assertions here: writer threads call this. */
    resp r = {0};
    CURL *c = curl_easy_init();
    if (!c) {
        r.curl = CURLE_FAILED_INIT;
        r.body = calloc(1, 1);
        return r;
    }
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    struct curl_slist *h = NULL;
    for (int i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    if (body)
        h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 20000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    r.curl = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body)
        r.body = calloc(1, 1);
    return r;
}

static json_t *parse(const resp *r)
{
    json_error_t e;
    json_t *v = json_loadb(r->body, r->len, 0, &e);
    cr_assert_not_null(v, "response (HTTP %ld) is not JSON: %s: %.300s", r->status, e.text,
                       r->body);
    return v;
}

/* POSTs `body` (stolen) as JSON; returns the parsed answer and its status. */
static json_t *post(const svc *s, const char *path, json_t *body, long *status)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    const char *hdr[] = {"Content-Type: application/json", NULL};
    resp r = http_ex(s, "POST", path, text, strlen(text), hdr, 0);
    free(text);
    cr_assert_eq(r.curl, CURLE_OK, "POST %s: %s", path, curl_easy_strerror(r.curl));
    if (status)
        *status = r.status;
    json_t *v = parse(&r);
    resp_free(&r);
    return v;
}

static json_t *get(const svc *s, const char *path, long *status)
{
    resp r = http_ex(s, "GET", path, NULL, 0, NULL, 0);
    cr_assert_eq(r.curl, CURLE_OK, "GET %s: %s", path, curl_easy_strerror(r.curl));
    if (status)
        *status = r.status;
    json_t *v = parse(&r);
    resp_free(&r);
    return v;
}

static const char *str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

static long long num(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* The first error code of a DIGIT error body. */
static const char *err_code(const json_t *v)
{
    return str(json_array_get(json_object_get(v, "Errors"), 0), "code");
}

static void login(svc *s)
{
    const char *hdr[] = {"Authorization: Basic ZWdvdi11c2VyLWNsaWVudDo=", /* egov-user-client: */
                         "Content-Type: application/x-www-form-urlencoded", NULL};
    const char *form = "grant_type=password&username=gateway&password=eGov%40123&tenantId=mz"
                       "&userType=EMPLOYEE&scope=read";
    resp r = http_ex(s, "POST", "/user/oauth/token", form, strlen(form), hdr, 0);
    cr_assert_eq(r.status, 200, "login: HTTP %ld %s", r.status, r.body);
    json_t *v = parse(&r);
    snprintf(s->token, sizeof s->token, "%s", str(v, "access_token"));
    cr_assert(strlen(s->token) > 10);
    json_decref(v);
    resp_free(&r);
}

static json_t *request_info(const svc *s)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "apiId", "meshsync-test", "ver", "1", "ts",
                     (json_int_t)now_ms(), "msgId", "msg-1", "authToken", s->token);
}

static void flush(const svc *s)
{
    long st;
    json_t *v = post(s, "/_test/flush", json_object(), &st);
    cr_assert_eq(st, 200);
    json_decref(v);
}

static json_t *household(const char *crid, int members, const char *locality)
{
    return json_pack("{s:s, s:s, s:i, s:{s:{s:s}}}", "tenantId", "mz", "clientReferenceId", crid,
                     "memberCount", members, "address", "locality", "code", locality);
}

/* Bulk write of households (array stolen); asserts 202. */
static void bulk(const svc *s, const char *op, json_t *arr)
{
    char path[64];
    snprintf(path, sizeof path, "/household/v1/bulk/%s", op);
    long st;
    json_t *v = post(s, path, json_pack("{s:o, s:o}", "RequestInfo", request_info(s),
                                        "Households", arr), &st);
    cr_assert_eq(st, 202, "%s: HTTP %ld", path, st);
    cr_assert_str_eq(str(v, "status"), "successful");
    cr_assert_str_eq(str(v, "apiId"), path);
    json_decref(v);
}

/* Searches households; `query` is the query string after '?'. Returns the whole answer. */
static json_t *search_q(const svc *s, const char *query, json_t *criteria, long *status)
{
    char path[256];
    snprintf(path, sizeof path, "/household/v1/_search?%s", query);
    return post(s, path, json_pack("{s:o, s:o}", "RequestInfo", request_info(s), "Household",
                                   criteria ? criteria : json_object()), status);
}

static json_t *search_crids(const svc *s, const char *crid, bool include_deleted)
{
    long st;
    json_t *v = search_q(s, include_deleted
                                ? "limit=100&offset=0&tenantId=mz&includeDeleted=true"
                                : "limit=100&offset=0&tenantId=mz",
                         crid ? json_pack("{s:[s]}", "clientReferenceId", crid) : NULL, &st);
    cr_assert_eq(st, 200);
    return v;
}

static json_t *errors_with(const svc *s, const char *code)
{
    char path[128];
    snprintf(path, sizeof path, "/_test/errors?code=%s", code);
    return get(s, path, NULL);
}

static long long stat_writes(const svc *s, const char *key)
{
    json_t *v = get(s, "/_test/stats", NULL);
    long long n = num(json_object_get(v, "writes"), key);
    json_decref(v);
    return n;
}

/* The first household with clientReferenceId `crid` (new reference), or NULL. */
static json_t *find(const svc *s, const char *crid, bool include_deleted)
{
    json_t *v = search_crids(s, crid, include_deleted);
    json_t *h = json_array_get(json_object_get(v, "Households"), 0);
    json_incref(h);
    json_decref(v);
    return h;
}

/* ---- Asynchronous writes --------------------------------------------------------------------- */

Test(campaign, create_is_accepted_then_applied_after_the_delay, .timeout = 60)
{
    svc s;
    const char *args[] = {"--process-delay-ms", "1500", NULL};
    svc_start(&s, args);
    login(&s);
    int64_t before = now_ms();
    bulk(&s, "_create", json_pack("[o, o]", household("hh-1", 3, "L1"), household("hh-2", 5, "L1")));

    json_t *v = search_crids(&s, NULL, true);
    cr_assert_eq(num(v, "TotalCount"), 0, "visible before the processing delay");
    cr_assert_eq(json_array_size(json_object_get(v, "Households")), 0);
    json_decref(v);

    /* The worker applies it after ~1.5 s without any help. */
    long long total = 0;
    while (total < 2 && now_ms() - before < 10000) {
        sleep_ms(100);
        v = search_crids(&s, NULL, false);
        total = num(v, "TotalCount");
        json_decref(v);
    }
    cr_assert_eq(total, 2, "not applied within 10 s");
    cr_assert_geq(now_ms() - before, 1400, "applied before the delay");

    json_t *h = find(&s, "hh-1", false);
    cr_assert_not_null(h);
    cr_assert_eq(num(h, "rowVersion"), 1);
    cr_assert_gt(strlen(str(h, "id")), 8);
    cr_assert(json_is_false(json_object_get(h, "isDeleted")));
    cr_assert_eq(num(h, "memberCount"), 3);
    json_t *audit = json_object_get(h, "auditDetails");
    cr_assert_geq(num(audit, "createdTime"), before);
    cr_assert_eq(num(audit, "createdTime"), num(audit, "lastModifiedTime"));
    cr_assert_gt(strlen(str(audit, "createdBy")), 8);
    json_decref(h);

    /* Search by id gives the same entity. */
    h = find(&s, "hh-2", false);
    long st;
    v = search_q(&s, "limit=10&offset=0&tenantId=mz",
                 json_pack("{s:[s]}", "id", str(h, "id")), &st);
    cr_assert_eq(num(v, "TotalCount"), 1);
    cr_assert_str_eq(str(json_array_get(json_object_get(v, "Households"), 0), "clientReferenceId"),
                     "hh-2");
    json_decref(v);
    json_decref(h);
    cr_assert_eq(stat_writes(&s, "accepted"), 2);
    cr_assert_eq(stat_writes(&s, "applied"), 2);
    svc_cleanup(&s);
}

Test(campaign, repeated_create_is_a_recorded_duplicate_applied_once, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    for (int i = 0; i < 5; i++)
        bulk(&s, "_create", json_pack("[o]", household("dup-1", 10 + i, "L1")));
    flush(&s);
    json_t *v = search_crids(&s, "dup-1", true);
    cr_assert_eq(num(v, "TotalCount"), 1);
    cr_assert_eq(num(json_array_get(json_object_get(v, "Households"), 0), "memberCount"), 10,
                 "a duplicate overwrote the first create");
    json_decref(v);
    v = errors_with(&s, "DUPLICATE_ENTITY");
    cr_assert_eq(num(v, "count"), 4);
    const json_t *e = json_array_get(json_object_get(v, "errors"), 0);
    cr_assert_str_eq(str(e, "clientReferenceId"), "dup-1");
    cr_assert_str_eq(str(e, "type"), "household");
    cr_assert_str_eq(str(e, "action"), "create");
    json_decref(v);
    cr_assert_eq(stat_writes(&s, "applied"), 1);
    cr_assert_eq(stat_writes(&s, "rejected"), 4);
    svc_cleanup(&s);
}

Test(campaign, update_checks_id_and_row_version, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    bulk(&s, "_create", json_pack("[o]", household("up-1", 2, "L1")));
    flush(&s);
    json_t *h = find(&s, "up-1", false);
    cr_assert_not_null(h);
    const char *id = str(h, "id");

    /* Wrong rowVersion. */
    json_t *u = household("up-1", 4, "L1");
    json_object_set_new(u, "id", json_string(id));
    json_object_set_new(u, "rowVersion", json_integer(7));
    bulk(&s, "_update", json_pack("[o]", u));
    /* No id. */
    u = household("up-1", 5, "L1");
    json_object_set_new(u, "rowVersion", json_integer(1));
    bulk(&s, "_update", json_pack("[o]", u));
    /* Unknown id. */
    u = household("up-1", 6, "L1");
    json_object_set_new(u, "id", json_string("no-such-id"));
    json_object_set_new(u, "rowVersion", json_integer(1));
    bulk(&s, "_update", json_pack("[o]", u));
    flush(&s);

    json_t *v = errors_with(&s, "MISMATCHED_ROW_VERSION");
    cr_assert_eq(num(v, "count"), 1);
    json_decref(v);
    v = errors_with(&s, "NULL_ID");
    cr_assert_eq(num(v, "count"), 1);
    json_decref(v);
    v = errors_with(&s, "NON_EXISTENT_ENTITY");
    cr_assert_eq(num(v, "count"), 1);
    json_decref(v);
    json_t *now = find(&s, "up-1", false);
    cr_assert_eq(num(now, "rowVersion"), 1);
    cr_assert_eq(num(now, "memberCount"), 2);
    json_decref(now);

    /* The right rowVersion: applied, rowVersion + 1, fields replaced, creation audit kept. */
    u = household("up-1", 8, "L2");
    json_object_set_new(u, "id", json_string(id));
    json_object_set_new(u, "rowVersion", json_integer(1));
    bulk(&s, "_update", json_pack("[o]", u));
    flush(&s);
    now = find(&s, "up-1", false);
    cr_assert_eq(num(now, "rowVersion"), 2);
    cr_assert_eq(num(now, "memberCount"), 8);
    cr_assert_str_eq(str(now, "id"), id);
    const json_t *a0 = json_object_get(h, "auditDetails"), *a1 = json_object_get(now, "auditDetails");
    cr_assert_eq(num(a1, "createdTime"), num(a0, "createdTime"));
    cr_assert_geq(num(a1, "lastModifiedTime"), num(a0, "lastModifiedTime"));
    json_decref(now);

    /* The old rowVersion is stale now. */
    u = household("up-1", 9, "L2");
    json_object_set_new(u, "id", json_string(id));
    json_object_set_new(u, "rowVersion", json_integer(1));
    bulk(&s, "_update", json_pack("[o]", u));
    flush(&s);
    v = errors_with(&s, "MISMATCHED_ROW_VERSION");
    cr_assert_eq(num(v, "count"), 2);
    json_decref(v);
    json_decref(h);
    svc_cleanup(&s);
}

Test(campaign, delete_is_soft_and_hidden_unless_include_deleted, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    bulk(&s, "_create", json_pack("[o, o]", household("del-1", 2, "L1"),
                                  household("del-2", 2, "L1")));
    flush(&s);
    json_t *h = find(&s, "del-1", false);
    json_t *d = json_deep_copy(h);
    json_object_set_new(d, "rowVersion", json_integer(3));
    bulk(&s, "_delete", json_pack("[o]", d)); /* wrong rowVersion: refused */
    flush(&s);
    json_t *v = errors_with(&s, "MISMATCHED_ROW_VERSION");
    cr_assert_eq(num(v, "count"), 1);
    json_decref(v);

    bulk(&s, "_delete", json_pack("[O]", h));
    flush(&s);
    v = search_crids(&s, NULL, false);
    cr_assert_eq(num(v, "TotalCount"), 1);
    cr_assert_str_eq(str(json_array_get(json_object_get(v, "Households"), 0), "clientReferenceId"),
                     "del-2");
    json_decref(v);
    v = search_crids(&s, NULL, true);
    cr_assert_eq(num(v, "TotalCount"), 2);
    json_decref(v);
    json_t *gone = find(&s, "del-1", true);
    cr_assert_not_null(gone);
    cr_assert(json_is_true(json_object_get(gone, "isDeleted")));
    cr_assert_eq(num(gone, "rowVersion"), 2);
    cr_assert_eq(num(gone, "memberCount"), 2, "a delete keeps the stored fields");
    json_decref(gone);

    /* Deleting or updating a deleted entity: it no longer exists for writes. */
    json_object_set_new(h, "rowVersion", json_integer(2));
    bulk(&s, "_delete", json_pack("[O]", h));
    bulk(&s, "_update", json_pack("[O]", h));
    flush(&s);
    v = errors_with(&s, "NON_EXISTENT_ENTITY");
    cr_assert_eq(num(v, "count"), 2);
    json_decref(v);
    /* And a new create with its clientReferenceId is still a duplicate. */
    bulk(&s, "_create", json_pack("[o]", household("del-1", 2, "L1")));
    flush(&s);
    v = errors_with(&s, "DUPLICATE_ENTITY");
    cr_assert_eq(num(v, "count"), 1);
    json_decref(v);
    json_decref(h);
    svc_cleanup(&s);
}

/* ---- Search --------------------------------------------------------------------------------- */

Test(campaign, search_last_changed_since, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    bulk(&s, "_create", json_pack("[o]", household("lc-a", 1, "L1")));
    flush(&s);
    json_t *a = find(&s, "lc-a", false);
    long long t_a = num(json_object_get(a, "auditDetails"), "lastModifiedTime");
    sleep_ms(20);
    bulk(&s, "_create", json_pack("[o]", household("lc-b", 1, "L1")));
    flush(&s);
    char q[160];
    snprintf(q, sizeof q, "limit=100&offset=0&tenantId=mz&lastChangedSince=%lld", t_a + 1);
    long st;
    json_t *v = search_q(&s, q, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(num(v, "TotalCount"), 1);
    cr_assert_str_eq(str(json_array_get(json_object_get(v, "Households"), 0), "clientReferenceId"),
                     "lc-b");
    json_decref(v);
    snprintf(q, sizeof q, "limit=100&offset=0&tenantId=mz&lastChangedSince=%lld", t_a);
    v = search_q(&s, q, NULL, &st);
    cr_assert_eq(num(v, "TotalCount"), 2, "lastChangedSince is inclusive");
    json_decref(v);
    /* Updating A makes it changed again. */
    sleep_ms(20);
    json_object_set_new(a, "memberCount", json_integer(2));
    bulk(&s, "_update", json_pack("[O]", a));
    flush(&s);
    json_t *b = find(&s, "lc-b", false);
    snprintf(q, sizeof q, "limit=100&offset=0&tenantId=mz&lastChangedSince=%lld",
             num(json_object_get(b, "auditDetails"), "lastModifiedTime") + 1);
    v = search_q(&s, q, NULL, &st);
    cr_assert_eq(num(v, "TotalCount"), 1);
    cr_assert_str_eq(str(json_array_get(json_object_get(v, "Households"), 0), "clientReferenceId"),
                     "lc-a");
    json_decref(v);
    json_decref(a);
    json_decref(b);
    svc_cleanup(&s);
}

Test(campaign, search_limit_offset_tenant_and_params, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    json_t *arr = json_array();
    char crid[16];
    for (int i = 0; i < 5; i++) {
        snprintf(crid, sizeof crid, "pg-%d", i);
        json_array_append_new(arr, household(crid, 1, "L1"));
    }
    json_t *other = household("pg-other", 1, "L1");
    json_object_set_new(other, "tenantId", json_string("ke"));
    json_array_append_new(arr, other);
    bulk(&s, "_create", arr);
    flush(&s);

    long st;
    json_t *v = search_q(&s, "limit=2&offset=0&tenantId=mz", NULL, &st);
    json_t *page = json_object_get(v, "Households");
    cr_assert_eq(num(v, "TotalCount"), 5);
    cr_assert_eq(json_array_size(page), 2);
    cr_assert_str_eq(str(json_array_get(page, 0), "clientReferenceId"), "pg-0");
    cr_assert_str_eq(str(json_array_get(page, 1), "clientReferenceId"), "pg-1");
    json_decref(v);
    v = search_q(&s, "limit=2&offset=4&tenantId=mz", NULL, &st);
    page = json_object_get(v, "Households");
    cr_assert_eq(json_array_size(page), 1);
    cr_assert_str_eq(str(json_array_get(page, 0), "clientReferenceId"), "pg-4");
    json_decref(v);
    v = search_q(&s, "limit=0&offset=0&tenantId=mz", NULL, &st);
    cr_assert_eq(json_array_size(json_object_get(v, "Households")), 0);
    cr_assert_eq(num(v, "TotalCount"), 5);
    json_decref(v);
    v = search_q(&s, "limit=10&offset=0&tenantId=ke", NULL, &st);
    cr_assert_eq(num(v, "TotalCount"), 1);
    json_decref(v);
    /* clientReferenceId and id lists, generic field criteria. */
    v = search_q(&s, "limit=10&offset=0&tenantId=mz",
                 json_pack("{s:[s, s, s]}", "clientReferenceId", "pg-3", "pg-1", "nope"), &st);
    cr_assert_eq(num(v, "TotalCount"), 2);
    cr_assert_str_eq(str(json_array_get(json_object_get(v, "Households"), 0), "clientReferenceId"),
                     "pg-1", "results come in creation order");
    json_decref(v);
    v = search_q(&s, "limit=10&offset=0&tenantId=mz",
                 json_pack("{s:s}", "boundaryCode", "L9"), &st);
    cr_assert_eq(num(v, "TotalCount"), 0);
    json_decref(v);

    static const char *const bad[] = {"offset=0&tenantId=mz", "limit=1001&offset=0&tenantId=mz",
                                      "limit=10&tenantId=mz", "limit=10&offset=0",
                                      "limit=x&offset=0&tenantId=mz",
                                      "limit=10&offset=0&tenantId=mz&includeDeleted=maybe",
                                      "limit=10&offset=0&tenantId=mz&lastChangedSince=-4"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = search_q(&s, bad[i], NULL, &st);
        cr_assert_eq(st, 400, "%s: HTTP %ld", bad[i], st);
        cr_assert_str_eq(err_code(v), "INVALID_PARAM");
        json_decref(v);
    }
    v = search_q(&s, "limit=10&offset=0&tenantId=mz",
                 json_pack("{s:s}", "clientReferenceId", "not-a-list"), &st);
    cr_assert_eq(st, 400);
    json_decref(v);
    svc_cleanup(&s);
}

/* ---- Requests and auth ------------------------------------------------------------------------ */

Test(campaign, bad_requests_get_digit_errors, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    long st;
    json_t *v = post(&s, "/household/v1/bulk/_create",
                     json_pack("{s:[o]}", "Households", household("x", 1, "L1")), &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "MISSING_REQUEST_INFO");
    cr_assert(json_is_null(json_object_get(v, "ResponseInfo")));
    cr_assert_gt(strlen(str(json_array_get(json_object_get(v, "Errors"), 0), "message")), 10);
    json_decref(v);

    const char *hdr[] = {"Content-Type: application/json", NULL};
    static const char *const bodies[] = {"{\"RequestInfo\": {", "[1, 2]", "", "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < 4; i++) {
        resp r = http_ex(&s, "POST", "/household/v1/bulk/_create", bodies[i], strlen(bodies[i]),
                         hdr, 0);
        cr_assert_eq(r.status, 400, "body '%s': HTTP %ld", bodies[i], r.status);
        v = parse(&r);
        cr_assert_str_eq(err_code(v), "INVALID_JSON");
        json_decref(v);
        resp_free(&r);
    }
    /* Shape problems. */
    json_t *no_members = json_pack("{s:s, s:s}", "tenantId", "mz", "clientReferenceId", "x");
    json_t *long_crid = household("x", 1, "L1");
    char big[100];
    memset(big, 'a', 99);
    big[99] = 0;
    json_object_set_new(long_crid, "clientReferenceId", json_string(big));
    json_t *cases[] = {json_pack("{s:o, s:[]}", "RequestInfo", request_info(&s), "Households"),
                       json_pack("{s:o}", "RequestInfo", request_info(&s)),
                       json_pack("{s:o, s:[i]}", "RequestInfo", request_info(&s), "Households", 1),
                       json_pack("{s:o, s:[o]}", "RequestInfo", request_info(&s), "Households",
                                 no_members),
                       json_pack("{s:o, s:[o]}", "RequestInfo", request_info(&s), "Households",
                                 long_crid)};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        v = post(&s, "/household/v1/bulk/_create", cases[i], &st);
        cr_assert_eq(st, 400, "case %zu: HTTP %ld", i, st);
        cr_assert_str_eq(err_code(v), "INVALID_REQUEST");
        json_decref(v);
    }
    v = post(&s, "/household/v2/bulk/_create", json_object(), &st);
    cr_assert_eq(st, 404);
    json_decref(v);
    v = get(&s, "/household/v1/bulk/_create", &st);
    cr_assert_eq(st, 405);
    json_decref(v);
    cr_assert_eq(stat_writes(&s, "accepted"), 0);
    svc_cleanup(&s);
}

Test(campaign, tokens_are_required_and_issued_like_egov_user, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    long st;
    json_t *v = post(&s, "/household/v1/bulk/_create",
                     json_pack("{s:{}, s:[o]}", "RequestInfo", "Households",
                               household("a-1", 1, "L1")), &st);
    cr_assert_eq(st, 401);
    cr_assert_str_eq(err_code(v), "InvalidAccessTokenException");
    json_decref(v);
    snprintf(s.token, sizeof s.token, "forged-token");
    v = search_q(&s, "limit=1&offset=0&tenantId=mz", NULL, &st);
    cr_assert_eq(st, 401);
    json_decref(v);

    /* Token endpoint failures: Spring OAuth2 errors. */
    const char *form_hdr = "Content-Type: application/x-www-form-urlencoded";
    const char *basic = "Authorization: Basic ZWdvdi11c2VyLWNsaWVudDplZ292LXVzZXItc2VjcmV0";
    const char *no_auth[] = {form_hdr, NULL}, *with_auth[] = {form_hdr, basic, NULL};
    const char *good = "grant_type=password&username=gateway&password=eGov%40123&tenantId=mz"
                       "&userType=EMPLOYEE";
    resp r = http_ex(&s, "POST", "/user/oauth/token", good, strlen(good), no_auth, 0);
    cr_assert_eq(r.status, 401);
    resp_free(&r);
    const char *wrong = "grant_type=password&username=gateway&password=nope&tenantId=mz"
                        "&userType=EMPLOYEE";
    r = http_ex(&s, "POST", "/user/oauth/token", wrong, strlen(wrong), with_auth, 0);
    cr_assert_eq(r.status, 400);
    v = parse(&r);
    cr_assert_str_eq(str(v, "error"), "invalid_request");
    cr_assert_str_eq(str(v, "error_description"), "Invalid login credentials");
    json_decref(v);
    resp_free(&r);
    const char *no_tenant = "grant_type=password&username=gateway&password=eGov%40123"
                            "&userType=EMPLOYEE";
    r = http_ex(&s, "POST", "/user/oauth/token", no_tenant, strlen(no_tenant), with_auth, 0);
    cr_assert_eq(r.status, 400);
    v = parse(&r);
    cr_assert_str_eq(str(v, "error_description"), "TenantId is mandatory");
    json_decref(v);
    resp_free(&r);

    /* A good login: the egov-user shape; the token works; refresh gives a new one. */
    r = http_ex(&s, "POST", "/user/oauth/token", good, strlen(good), with_auth, 0);
    cr_assert_eq(r.status, 200);
    v = parse(&r);
    cr_assert_str_eq(str(v, "token_type"), "bearer");
    cr_assert_gt(num(v, "expires_in"), 0);
    const json_t *user = json_object_get(v, "UserRequest");
    cr_assert_str_eq(str(user, "userName"), "gateway");
    cr_assert_str_eq(str(user, "tenantId"), "mz");
    cr_assert_gt(json_array_size(json_object_get(user, "roles")), 0);
    snprintf(s.token, sizeof s.token, "%s", str(v, "access_token"));
    char refresh[300];
    snprintf(refresh, sizeof refresh, "grant_type=refresh_token&refresh_token=%s",
             str(v, "refresh_token"));
    json_decref(v);
    resp_free(&r);
    v = search_q(&s, "limit=1&offset=0&tenantId=mz", NULL, &st);
    cr_assert_eq(st, 200);
    json_decref(v);
    r = http_ex(&s, "POST", "/user/oauth/token", refresh, strlen(refresh), with_auth, 0);
    cr_assert_eq(r.status, 200, "refresh: %s", r.body);
    v = parse(&r);
    cr_assert_str_neq(str(v, "access_token"), s.token);
    snprintf(s.token, sizeof s.token, "%s", str(v, "access_token"));
    json_decref(v);
    resp_free(&r);
    /* Header tokens work too (multipart and GET requests carry no RequestInfo). */
    char auth_hdr[128];
    snprintf(auth_hdr, sizeof auth_hdr, "auth-token: %s", s.token);
    const char *hdr[] = {auth_hdr, "Content-Type: application/json", NULL};
    const char *body = "{\"RequestInfo\": {}}";
    r = http_ex(&s, "POST", "/household/v1/_search?limit=1&offset=0&tenantId=mz", body,
                strlen(body), hdr, 0);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    svc_cleanup(&s);

    /* --no-auth accepts requests without a token. */
    const char *args[] = {"--no-auth", NULL};
    svc_start(&s, args);
    v = post(&s, "/household/v1/bulk/_create",
             json_pack("{s:{}, s:[o]}", "RequestInfo", "Households", household("a-1", 1, "L1")),
             &st);
    cr_assert_eq(st, 202);
    json_decref(v);
    svc_cleanup(&s);
}

Test(campaign, responses_are_gzip_when_asked, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    bulk(&s, "_create", json_pack("[o]", household("gz-1", 1, "L1")));
    flush(&s);
    char *body = json_dumps(json_pack("{s:o}", "RequestInfo", request_info(&s)), JSON_COMPACT);
    const char *gz_hdr[] = {"Content-Type: application/json", "Accept-Encoding: gzip", NULL};
    resp r = http_ex(&s, "POST", "/household/v1/_search?limit=10&offset=0&tenantId=mz", body,
                     strlen(body), gz_hdr, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.gzip, "no Content-Encoding: gzip");
    cr_assert(r.len > 2 && (uint8_t)r.body[0] == 0x1f && (uint8_t)r.body[1] == 0x8b);
    uint8_t plain[65536];
    z_stream zs = {0};
    cr_assert_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = (Bytef *)r.body;
    zs.avail_in = (uInt)r.len;
    zs.next_out = plain;
    zs.avail_out = sizeof plain - 1;
    cr_assert_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
    plain[zs.total_out] = 0;
    inflateEnd(&zs);
    json_t *v = json_loads((char *)plain, 0, NULL);
    cr_assert_not_null(v);
    cr_assert_eq(num(v, "TotalCount"), 1);
    json_decref(v);
    resp_free(&r);
    const char *plain_hdr[] = {"Content-Type: application/json", NULL};
    r = http_ex(&s, "POST", "/household/v1/_search?limit=10&offset=0&tenantId=mz", body,
                strlen(body), plain_hdr, 0);
    cr_assert(!r.gzip);
    cr_assert_eq(r.body[0], '{');
    resp_free(&r);
    const char *q0_hdr[] = {"Content-Type: application/json", "Accept-Encoding: gzip;q=0", NULL};
    r = http_ex(&s, "POST", "/household/v1/_search?limit=10&offset=0&tenantId=mz", body,
                strlen(body), q0_hdr, 0);
    cr_assert(!r.gzip, "gzip;q=0 refuses gzip");
    resp_free(&r);
    free(body);
    svc_cleanup(&s);
}

/* ---- Single endpoints and every type ---------------------------------------------------------- */

Test(campaign, single_endpoints_validate_now_and_apply_later, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    long st;
    json_t *v = post(&s, "/household/v1/_create",
                     json_pack("{s:o, s:o}", "RequestInfo", request_info(&s), "Household",
                               household("one-1", 4, "L1")), &st);
    cr_assert_eq(st, 202);
    json_t *echo = json_object_get(v, "Household");
    cr_assert_eq(num(echo, "rowVersion"), 1);
    cr_assert_gt(strlen(str(echo, "id")), 8);
    cr_assert_str_eq(str(json_object_get(v, "ResponseInfo"), "msgId"), "msg-1");
    char id[64];
    snprintf(id, sizeof id, "%s", str(echo, "id"));
    json_decref(v);
    json_t *h = find(&s, "one-1", true);
    cr_assert_null(h, "visible before processing");
    flush(&s);
    h = find(&s, "one-1", false);
    cr_assert_not_null(h);
    cr_assert_str_eq(str(h, "id"), id, "the applied id differs from the one promised");

    /* Errors of single writes come back synchronously as 400. */
    v = post(&s, "/household/v1/_create",
             json_pack("{s:o, s:o}", "RequestInfo", request_info(&s), "Household",
                       household("one-1", 4, "L1")), &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "DUPLICATE_ENTITY");
    json_decref(v);
    json_t *u = json_deep_copy(h);
    json_object_set_new(u, "rowVersion", json_integer(5));
    v = post(&s, "/household/v1/_update",
             json_pack("{s:o, s:o}", "RequestInfo", request_info(&s), "Household", u), &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "MISMATCHED_ROW_VERSION");
    json_decref(v);
    u = json_deep_copy(h);
    json_object_del(u, "id");
    v = post(&s, "/household/v1/_update",
             json_pack("{s:o, s:o}", "RequestInfo", request_info(&s), "Household", u), &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "NULL_ID");
    json_decref(v);
    u = json_deep_copy(h);
    json_object_set_new(u, "isDeleted", json_true());
    v = post(&s, "/household/v1/_update",
             json_pack("{s:o, s:o}", "RequestInfo", request_info(&s), "Household", u), &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "IS_DELETED_TRUE");
    json_decref(v);
    v = post(&s, "/household/v1/_delete",
             json_pack("{s:o, s:O}", "RequestInfo", request_info(&s), "Household", h), &st);
    cr_assert_eq(st, 202);
    cr_assert(json_is_true(json_object_get(json_object_get(v, "Household"), "isDeleted")));
    cr_assert_eq(num(json_object_get(v, "Household"), "rowVersion"), 2);
    json_decref(v);
    flush(&s);
    json_t *gone = find(&s, "one-1", true);
    cr_assert(json_is_true(json_object_get(gone, "isDeleted")));
    json_decref(gone);
    json_decref(h);
    svc_cleanup(&s);
}

/* What the contracts and the Java models say for each type (see docs/CAMPAIGN_SERVICE.md). */
static const struct {
    const char *path, *array_key, *single_key, *search_key, *response_key;
} hcm_types[] = {
    {"/household/v1", "Households", "Household", "Household", "Households"},
    {"/household/member/v1", "HouseholdMembers", "HouseholdMember", "HouseholdMember",
     "HouseholdMembers"},
    {"/individual/v1", "Individuals", "Individual", "Individual", "Individual"},
    {"/project/beneficiary/v1", "ProjectBeneficiaries", "ProjectBeneficiary", "ProjectBeneficiary",
     "ProjectBeneficiaries"},
    {"/project/task/v1", "Tasks", "Task", "Task", "Tasks"},
    {"/referralmanagement/side-effect/v1", "SideEffects", "SideEffect", "SideEffect",
     "SideEffects"},
    {"/referralmanagement/v1", "Referrals", "Referral", "Referral", "Referrals"},
    {"/referralmanagement/hf-referral/v1", "HFReferrals", "HFReferral", "HFReferral",
     "HFReferrals"},
    {"/stock/v1", "Stock", "Stock", "Stock", "Stock"},
    {"/stock/reconciliation/v1", "StockReconciliation", "StockReconciliation",
     "StockReconciliation", "StockReconciliation"},
};

Test(campaign, every_entity_type_round_trips_on_its_contract_paths, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    size_t n = sizeof hcm_types / sizeof hcm_types[0];
    for (size_t i = 0; i < n; i++) {
        char path[128], crid[32];
        snprintf(crid, sizeof crid, "t-%zu", i);
        json_t *e = json_pack("{s:s, s:s, s:i}", "tenantId", "mz", "clientReferenceId", crid,
                              "memberCount", 1);
        snprintf(path, sizeof path, "%s/bulk/_create", hcm_types[i].path);
        long st;
        json_t *v = post(&s, path, json_pack("{s:o, s:[o]}", "RequestInfo", request_info(&s),
                                             hcm_types[i].array_key, e), &st);
        cr_assert_eq(st, 202, "%s: HTTP %ld", path, st);
        json_decref(v);
        snprintf(crid, sizeof crid, "t-%zu-single", i);
        e = json_pack("{s:s, s:s, s:i}", "tenantId", "mz", "clientReferenceId", crid,
                      "memberCount", 1);
        snprintf(path, sizeof path, "%s/_create", hcm_types[i].path);
        v = post(&s, path, json_pack("{s:o, s:o}", "RequestInfo", request_info(&s),
                                     hcm_types[i].single_key, e), &st);
        cr_assert_eq(st, 202, "%s: HTTP %ld", path, st);
        cr_assert(json_is_object(json_object_get(v, hcm_types[i].single_key)));
        json_decref(v);
    }
    flush(&s);
    for (size_t i = 0; i < n; i++) {
        char path[128], crid[32];
        snprintf(crid, sizeof crid, "t-%zu", i);
        snprintf(path, sizeof path, "%s/_search?limit=10&offset=0&tenantId=mz",
                 hcm_types[i].path);
        long st;
        json_t *v = post(&s, path, json_pack("{s:o, s:{s:[s]}}", "RequestInfo", request_info(&s),
                                             hcm_types[i].search_key, "clientReferenceId", crid),
                         &st);
        cr_assert_eq(st, 200, "%s: HTTP %ld", path, st);
        json_t *arr = json_object_get(v, hcm_types[i].response_key);
        cr_assert_eq(json_array_size(arr), 1, "%s answers under %s", path,
                     hcm_types[i].response_key);
        cr_assert_eq(num(json_array_get(arr, 0), "rowVersion"), 1);
        cr_assert_eq(num(v, "TotalCount"), 1);
        json_decref(v);
    }
    cr_assert_eq(stat_writes(&s, "applied"), (long long)(2 * n));
    svc_cleanup(&s);
}

/* ---- Downloads -------------------------------------------------------------------------------- */

static json_t *mdms(const svc *s, const char *tenant, const char *module, const char *master,
                    const char *filter, long *st)
{
    json_t *md = json_pack("{s:s}", "name", master);
    if (filter)
        json_object_set_new(md, "filter", json_string(filter));
    return post(s, "/mdms-v2/v1/_search",
                json_pack("{s:o, s:{s:s, s:[{s:s, s:[o]}]}}", "RequestInfo", request_info(s),
                          "MdmsCriteria", "tenantId", tenant, "moduleDetails", "moduleName",
                          module, "masterDetails", md), st);
}

Test(campaign, mdms_serves_forms_sos_contacts_and_seeded_masters, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    long st;
    json_t *v = mdms(&s, "mz.nampula", "HCM", "CALL_SUPPORT", NULL, &st);
    cr_assert_eq(st, 200);
    json_t *sos = json_object_get(json_object_get(json_object_get(v, "MdmsRes"), "HCM"),
                                  "CALL_SUPPORT");
    cr_assert_eq(json_array_size(sos), 3, "SOS contacts via the state-level tenant");
    cr_assert_gt(strlen(str(json_array_get(sos, 0), "code")), 5);
    json_decref(v);

    v = mdms(&s, "mz", "HCM-FORMS", "Forms", NULL, &st);
    json_t *forms = json_object_get(json_object_get(json_object_get(v, "MdmsRes"), "HCM-FORMS"),
                                    "Forms");
    cr_assert_eq(json_array_size(forms), 3);
    size_t i;
    json_t *f;
    json_array_foreach(forms, i, f)
        cr_assert(json_is_integer(json_object_get(f, "lastUpdatedTime")));
    json_decref(v);
    /* Newer than a time: a JSONPath predicate as MDMS takes it. */
    v = mdms(&s, "mz", "HCM-FORMS", "Forms", "[?(@.lastUpdatedTime > 1715000000000)]", &st);
    forms = json_object_get(json_object_get(json_object_get(v, "MdmsRes"), "HCM-FORMS"), "Forms");
    cr_assert_eq(json_array_size(forms), 2);
    json_decref(v);
    v = mdms(&s, "mz", "HCM-FORMS", "Forms",
             "$[?(@.schema == 'householdDetails' && @.version == '2')]", &st);
    forms = json_object_get(json_object_get(json_object_get(v, "MdmsRes"), "HCM-FORMS"), "Forms");
    cr_assert_eq(json_array_size(forms), 1);
    json_decref(v);
    v = mdms(&s, "mz", "common-masters", "GenderType", "[?(@.code in ['MALE', 'FEMALE'])]", &st);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(json_object_get(v, "MdmsRes"),
                                                                 "common-masters"),
                                                 "GenderType")), 2);
    json_decref(v);
    /* Unknown masters are left out; unsupported filters are refused. */
    v = mdms(&s, "mz", "HCM", "NO_SUCH_MASTER", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_object_size(json_object_get(v, "MdmsRes")), 0);
    json_decref(v);
    v = mdms(&s, "mz", "HCM", "CALL_SUPPORT", "$.*.code", &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "INVALID_FILTER");
    json_decref(v);
    v = post(&s, "/mdms-v2/v1/_search", json_pack("{s:o}", "RequestInfo", request_info(&s)), &st);
    cr_assert_eq(st, 400);
    json_decref(v);
    svc_cleanup(&s);

    /* --seed replaces the built-in masters. */
    make_dir(&s);
    char seed[256];
    snprintf(seed, sizeof seed, "%s/seed.json", s.dir);
    FILE *fp = fopen(seed, "w");
    cr_assert_not_null(fp);
    fputs("{\"tenantId\": \"ke\", \"users\": [{\"userName\": \"gateway\", \"password\": "
          "\"eGov@123\", \"tenantId\": \"mz\"}], \"mdms\": [{\"tenantId\": \"ke\", "
          "\"moduleName\": \"HCM\", \"CALL_SUPPORT\": [{\"code\": \"999\", \"name\": \"x\"}]}]}",
          fp);
    fclose(fp);
    const char *args[] = {"--seed", seed, NULL};
    svc_start_in(&s, args);
    login(&s);
    v = mdms(&s, "ke.nairobi", "HCM", "CALL_SUPPORT", NULL, &st);
    sos = json_object_get(json_object_get(json_object_get(v, "MdmsRes"), "HCM"), "CALL_SUPPORT");
    cr_assert_eq(json_array_size(sos), 1);
    cr_assert_str_eq(str(json_array_get(sos, 0), "code"), "999");
    json_decref(v);
    svc_cleanup(&s);
}

Test(campaign, localisation_search_with_tenant_fallback, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    long st;
    resp r = http_ex(&s, "POST", "/localization/messages/v1/_search?locale=pt_MZ&tenantId=mz."
                     "nampula&module=hcm-forms-householdDetails", "{}", 2, NULL, 0);
    cr_assert_eq(r.status, 200);
    json_t *v = parse(&r);
    json_t *msgs = json_object_get(v, "messages");
    cr_assert_eq(json_array_size(msgs), 4);
    cr_assert_str_eq(str(json_array_get(msgs, 0), "code"), "HCM_FORMS_HOUSEHOLD_LOCALITY",
                     "sorted by code");
    cr_assert_str_eq(str(json_array_get(msgs, 0), "message"), "Localidade");
    cr_assert_str_eq(str(json_array_get(msgs, 0), "locale"), "pt_MZ");
    json_decref(v);
    resp_free(&r);
    /* Several modules, a codes filter, and the "default" tenant level. */
    v = get(&s, "/localization/messages/v1/_search?locale=en_MZ&tenantId=mz&module=hcm-forms-"
            "householdDetails,hcm-forms-deliveryDetails&codes=HCM_FORMS_DELIVERY_QUANTITY,"
            "HCM_FORMS_HOUSEHOLD_LOCALITY", &st);
    cr_assert_eq(json_array_size(json_object_get(v, "messages")), 2);
    json_decref(v);
    v = get(&s, "/localization/messages/v1/_search?locale=en_MZ&tenantId=zz&module="
            "rainmaker-common", &st);
    cr_assert_str_eq(str(json_array_get(json_object_get(v, "messages"), 0), "message"), "Submit");
    json_decref(v);
    v = get(&s, "/localization/messages/v1/_search?tenantId=mz", &st);
    cr_assert_eq(st, 400);
    json_decref(v);
    svc_cleanup(&s);
}

Test(campaign, dashboard_counts_live_entities_per_boundary, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    bulk(&s, "_create", json_pack("[o, o, o, o]", household("db-1", 1, "L1"),
                                  household("db-2", 1, "L1"), household("db-3", 1, "L2"),
                                  household("db-4", 1, "L1")));
    long st;
    json_t *v = post(&s, "/project/task/v1/bulk/_create",
                     json_pack("{s:o, s:[{s:s, s:s, s:{s:{s:s}}}]}", "RequestInfo",
                               request_info(&s), "Tasks", "tenantId", "mz", "clientReferenceId",
                               "task-1", "address", "locality", "code", "L1"), &st);
    cr_assert_eq(st, 202);
    json_decref(v);
    flush(&s);
    json_t *h = find(&s, "db-4", false);
    bulk(&s, "_delete", json_pack("[o]", h));
    flush(&s);

    v = post(&s, "/dashboard/v1/_search",
             json_pack("{s:o, s:{s:s}}", "RequestInfo", request_info(&s), "DashboardCriteria",
                       "tenantId", "mz"), &st);
    cr_assert_eq(st, 200);
    json_t *d = json_object_get(v, "Dashboard");
    json_t *rows = json_object_get(d, "boundaries");
    cr_assert_eq(json_array_size(rows), 2);
    json_t *l1 = json_array_get(rows, 0), *l2 = json_array_get(rows, 1);
    cr_assert_str_eq(str(l1, "boundaryCode"), "L1");
    cr_assert_eq(num(json_object_get(l1, "counts"), "household"), 2);
    cr_assert_eq(num(json_object_get(l1, "counts"), "task"), 1);
    cr_assert_eq(num(json_object_get(l2, "counts"), "household"), 1);
    cr_assert_eq(num(json_object_get(d, "totals"), "household"), 3);
    json_decref(v);

    /* The dashboard-analytics envelope. */
    v = post(&s, "/dashboard-analytics/dashboard/getChartV2",
             json_pack("{s:o, s:{s:s}, s:{s:s, s:{s:s}}}", "RequestInfo", request_info(&s),
                       "headers", "tenantId", "mz", "aggregationRequestDto", "visualizationCode",
                       "HOUSEHOLD_COUNT_BY_BOUNDARY", "filters", "boundaryCode", "L2"), &st);
    cr_assert_eq(st, 200);
    json_t *data = json_object_get(json_object_get(v, "responseData"), "data");
    cr_assert_eq(json_array_size(data), 1);
    cr_assert_str_eq(str(json_array_get(data, 0), "headerName"), "L2");
    cr_assert_eq(num(json_array_get(data, 0), "headerValue"), 1);
    json_decref(v);
    svc_cleanup(&s);
}

Test(campaign, form_sync_returns_new_and_newer_forms, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    long st;
    json_t *v = post(&s, "/sync/forms/v1/_search",
                     json_pack("{s:o, s:{s:s, s:s, s:b, s:[{s:s, s:s}, {s:s, s:s}]}}",
                               "requestInfo", request_info(&s), "sync", "tenantId", "mz",
                               "campaignId", "CMP-2024-MZ-001", "syncAll", 0, "forms",
                               "schemaId", "householdDetails", "version", "1", "schemaId",
                               "individualDetails", "version", "1"), &st);
    cr_assert_eq(st, 200);
    json_t *forms = json_object_get(v, "forms");
    cr_assert_eq(json_array_size(forms), 2);
    cr_assert_str_eq(str(json_array_get(forms, 0), "schema"), "householdDetails");
    cr_assert_str_eq(str(json_array_get(forms, 1), "schema"), "deliveryDetails");
    json_decref(v);
    v = post(&s, "/sync/forms/v1/_search",
             json_pack("{s:o, s:{s:s, s:b}}", "requestInfo", request_info(&s), "sync",
                       "tenantId", "mz", "syncAll", 1), &st);
    cr_assert_eq(json_array_size(json_object_get(v, "forms")), 3);
    json_decref(v);
    svc_cleanup(&s);
}

/* ---- Files ------------------------------------------------------------------------------------- */

static void gzip_buf(const char *in, uint8_t **out, size_t *out_len)
{
    z_stream zs = {0};
    cr_assert_eq(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, strlen(in)) + 64;
    *out = malloc(cap);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)strlen(in);
    zs.next_out = *out;
    zs.avail_out = (uInt)cap;
    cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = zs.total_out;
    deflateEnd(&zs);
}

/* Uploads bytes to the filestore with curl's multipart; returns the fileStoreId. */
static void upload(const svc *s, const void *data, size_t len, const char *name, char id[64])
{
    CURL *c = curl_easy_init();
    char url[256], tok[128];
    snprintf(url, sizeof url, "%s/filestore/v1/files", s->base);
    snprintf(tok, sizeof tok, "auth-token: %s", s->token);
    struct curl_slist *h = curl_slist_append(NULL, tok);
    curl_mime *mime = curl_mime_init(c);
    curl_mimepart *part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filename(part, name);
    curl_mime_type(part, "application/gzip");
    curl_mime_data(part, data, len);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "tenantId");
    curl_mime_data(part, "mz", CURL_ZERO_TERMINATED);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "module");
    curl_mime_data(part, "meshsync-gateway", CURL_ZERO_TERMINATED);
    resp r = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_mime_free(mime);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    cr_assert_eq(r.status, 201, "upload: HTTP %ld %s", r.status, r.body);
    json_t *v = parse(&r);
    const json_t *f = json_array_get(json_object_get(v, "files"), 0);
    cr_assert_str_eq(str(f, "tenantId"), "mz");
    snprintf(id, 64, "%s", str(f, "fileStoreId"));
    cr_assert_gt(strlen(id), 8);
    json_decref(v);
    resp_free(&r);
}

static json_t *sync_create(const svc *s, const char *file, const char *checksum, long *st)
{
    return post(s, "/sync/file/v1/_create",
                json_pack("{s:o, s:{s:s, s:s, s:s, s:s?}}", "requestInfo", request_info(s),
                          "sync", "tenantId", "mz", "campaignId", "CMP-2024-MZ-001", "file",
                          file, "checksum", checksum), st);
}

Test(campaign, filestore_and_sync_file_verify_the_checksum, .timeout = 60)
{
    svc s;
    svc_start(&s, NULL);
    login(&s);
    /* The file: a create, a duplicate of it, an update without id, a member. */
    const char *lines =
        "{\"type\":\"household\",\"action\":\"create\",\"entity\":{\"tenantId\":\"mz\","
        "\"clientReferenceId\":\"sf-1\",\"memberCount\":2}}\n"
        "{\"type\":\"household\",\"action\":\"create\",\"entity\":{\"tenantId\":\"mz\","
        "\"clientReferenceId\":\"sf-1\",\"memberCount\":3}}\n"
        "\n"
        "{\"type\":\"household\",\"action\":\"update\",\"entity\":{\"tenantId\":\"mz\","
        "\"clientReferenceId\":\"sf-1\",\"memberCount\":4,\"rowVersion\":1}}\n"
        "{\"type\":\"household_member\",\"action\":\"create\",\"entity\":{\"tenantId\":\"mz\","
        "\"clientReferenceId\":\"sfm-1\",\"householdClientReferenceId\":\"sf-1\"}}\n";
    uint8_t *gz;
    size_t gz_len;
    gzip_buf(lines, &gz, &gz_len);
    char id[64];
    upload(&s, gz, gz_len, "entries.jsonl.gz", id);

    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, gz, gz_len);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);

    /* The URL and the download give back the same bytes. */
    char path[256];
    snprintf(path, sizeof path, "/filestore/v1/files/url?tenantId=mz&fileStoreIds=%s", id);
    char tok[128];
    snprintf(tok, sizeof tok, "auth-token: %s", s.token);
    const char *auth[] = {tok, NULL};
    resp r = http_ex(&s, "GET", path, NULL, 0, auth, 0);
    cr_assert_eq(r.status, 200);
    json_t *v = parse(&r);
    const char *url = str(v, id);
    cr_assert(strstr(url, "/filestore/v1/files/id?") != NULL, "url %s", url);
    char url_copy[512];
    snprintf(url_copy, sizeof url_copy, "%s", url);
    cr_assert_eq(json_array_size(json_object_get(v, "fileStoreIds")), 1);
    json_decref(v);
    resp_free(&r);
    r = http_ex(&s, "GET", strstr(url_copy, "/filestore"), NULL, 0, NULL, 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.len, gz_len);
    cr_assert(memcmp(r.body, gz, gz_len) == 0);
    resp_free(&r);

    /* A wrong checksum is refused with a clear error; nothing is queued. */
    char wrong[65];
    memcpy(wrong, hex, 65);
    wrong[0] = wrong[0] == '0' ? '1' : '0';
    long st;
    v = sync_create(&s, id, wrong, &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "CHECKSUM_MISMATCH");
    json_decref(v);
    v = sync_create(&s, id, NULL, &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "MISSING_CHECKSUM");
    json_decref(v);
    v = sync_create(&s, "no-such-file", hex, &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "FILE_NOT_FOUND");
    json_decref(v);
    cr_assert_eq(stat_writes(&s, "accepted"), 0);

    /* The right checksum, referencing the file by its URL. */
    v = sync_create(&s, url_copy, hex, &st);
    cr_assert_eq(st, 200, "sync create: HTTP %ld", st);
    json_t *rec = json_object_get(v, "sync");
    cr_assert_str_eq(str(rec, "status"), "ACCEPTED");
    cr_assert_eq(num(rec, "totalCount"), 4);
    cr_assert_str_eq(str(rec, "fileStoreId"), id);
    char sync_id[64];
    snprintf(sync_id, sizeof sync_id, "%s", str(rec, "syncId"));
    json_decref(v);
    flush(&s);
    v = post(&s, "/sync/file/status/v1/_search",
             json_pack("{s:o, s:{s:s}}", "requestInfo", request_info(&s), "sync", "syncId",
                       sync_id), &st);
    cr_assert_eq(st, 200);
    rec = json_object_get(v, "sync");
    cr_assert_str_eq(str(rec, "status"), "COMPLETED");
    cr_assert_eq(num(rec, "successCount"), 2);
    cr_assert_eq(num(rec, "errorCount"), 2);
    json_t *errs = json_object_get(rec, "errors");
    cr_assert_str_eq(str(json_array_get(errs, 0), "code"), "DUPLICATE_ENTITY");
    cr_assert_eq(num(json_array_get(errs, 0), "line"), 2);
    cr_assert_str_eq(str(json_array_get(errs, 1), "code"), "NULL_ID");
    cr_assert_eq(num(json_array_get(errs, 1), "line"), 4);
    json_decref(v);
    json_t *h = find(&s, "sf-1", false);
    cr_assert_not_null(h);
    cr_assert_eq(num(h, "memberCount"), 2);
    json_decref(h);
    v = get(&s, "/_test/entities?type=household_member", NULL);
    cr_assert_eq(num(v, "count"), 1);
    json_decref(v);

    /* A file that is not in the format is refused at _create. */
    const char *junk = "{\"type\":\"spaceship\",\"action\":\"create\",\"entity\":{}}\n";
    upload(&s, junk, strlen(junk), "junk.jsonl", id);
    crypto_hash_sha256(digest, (const uint8_t *)junk, strlen(junk));
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    v = sync_create(&s, id, hex, &st);
    cr_assert_eq(st, 400);
    cr_assert_str_eq(err_code(v), "INVALID_SYNC_FILE");
    json_decref(v);
    free(gz);
    svc_cleanup(&s);
}

Test(campaign, oversized_bodies_get_413, .timeout = 60)
{
    svc s;
    const char *args[] = {"--max-body-bytes", "4096", NULL};
    svc_start(&s, args);
    login(&s);
    size_t n = 100000;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[n] = 0;
    const char *hdr[] = {"Content-Type: application/json", NULL};
    resp r = http_ex(&s, "POST", "/household/v1/bulk/_create", big, n, hdr, 0);
    cr_assert_eq(r.status, 413);
    json_t *v = parse(&r);
    cr_assert_str_eq(err_code(v), "PAYLOAD_TOO_LARGE");
    json_decref(v);
    resp_free(&r);
    free(big);
    /* The service still works afterwards. */
    bulk(&s, "_create", json_pack("[o]", household("after-413", 1, "L1")));
    svc_cleanup(&s);
}

/* ---- Faults ------------------------------------------------------------------------------------ */

Test(campaign, fail_rate_one_answers_every_request_5xx, .timeout = 60)
{
    svc s;
    const char *args[] = {"--fail-rate", "1", NULL};
    svc_start(&s, args);
    const char *form = "grant_type=password&username=gateway&password=eGov%40123&tenantId=mz"
                       "&userType=EMPLOYEE";
    const char *hdr[] = {"Authorization: Basic ZWdvdi11c2VyLWNsaWVudDo=", NULL};
    for (int i = 0; i < 10; i++) {
        resp r = http_ex(&s, "POST", "/user/oauth/token", form, strlen(form), hdr, 0);
        cr_assert(r.status == 500 || r.status == 503, "HTTP %ld", r.status);
        resp_free(&r);
        long st;
        json_t *v = post(&s, "/household/v1/bulk/_create",
                         json_pack("{s:o, s:[o]}", "RequestInfo", request_info(&s), "Households",
                                   household("f-1", 1, "L1")), &st);
        cr_assert(st == 500 || st == 503);
        cr_assert_str_eq(err_code(v), "INJECTED_FAULT");
        json_decref(v);
    }
    json_t *v = get(&s, "/_test/stats", NULL);
    cr_assert_eq(num(json_object_get(v, "faults"), "failed"), 20);
    cr_assert_eq(num(json_object_get(v, "writes"), "accepted"), 0);
    json_decref(v);
    /* Faults can be switched off at run time. */
    long st;
    v = post(&s, "/_test/faults", json_pack("{s:f}", "failRate", 0.0), &st);
    cr_assert_eq(st, 200);
    json_decref(v);
    login(&s);
    svc_cleanup(&s);
}

Test(campaign, drop_writes_one_accepts_but_applies_nothing, .timeout = 60)
{
    svc s;
    const char *args[] = {"--drop-writes", "1", "--process-delay-ms", "0", NULL};
    svc_start(&s, args);
    login(&s);
    bulk(&s, "_create", json_pack("[o, o]", household("dr-1", 1, "L1"), household("dr-2", 1, "L1")));
    long st;
    json_t *v = post(&s, "/household/v1/_create",
                     json_pack("{s:o, s:o}", "RequestInfo", request_info(&s), "Household",
                               household("dr-3", 1, "L1")), &st);
    cr_assert_eq(st, 202);
    cr_assert_gt(strlen(str(json_object_get(v, "Household"), "id")), 8);
    json_decref(v);
    sleep_ms(300);
    flush(&s);
    v = search_crids(&s, NULL, true);
    cr_assert_eq(num(v, "TotalCount"), 0);
    json_decref(v);
    v = get(&s, "/_test/stats", NULL);
    json_t *w = json_object_get(v, "writes");
    cr_assert_eq(num(w, "dropped"), 3);
    cr_assert_eq(num(w, "applied"), 0);
    cr_assert_eq(num(json_object_get(v, "faults"), "droppedRequests"), 2);
    json_decref(v);
    svc_cleanup(&s);
}

Test(campaign, slow_responses_outlast_the_client_but_still_write, .timeout = 60)
{
    svc s;
    const char *args[] = {"--slow-rate", "1", "--slow-ms", "2500", "--fault-paths",
                          "/household/v1/bulk", NULL};
    svc_start(&s, args);
    login(&s);
    char *body = json_dumps(json_pack("{s:o, s:[o]}", "RequestInfo", request_info(&s),
                                      "Households", household("slow-1", 1, "L1")),
                            JSON_COMPACT);
    const char *hdr[] = {"Content-Type: application/json", NULL};
    int64_t t0 = now_ms();
    resp r = http_ex(&s, "POST", "/household/v1/bulk/_create", body, strlen(body), hdr, 800);
    cr_assert_eq(r.curl, CURLE_OPERATION_TIMEDOUT, "curl: %s", curl_easy_strerror(r.curl));
    cr_assert_lt(now_ms() - t0, 2000);
    resp_free(&r);
    free(body);
    /* Searches are not on the faulted paths; the write went through anyway. */
    int64_t deadline = now_ms() + 10000;
    json_t *h = NULL;
    while (!h && now_ms() < deadline) {
        sleep_ms(100);
        h = find(&s, "slow-1", false);
    }
    cr_assert_not_null(h, "the timed-out write was not applied");
    json_decref(h);
    json_t *v = get(&s, "/_test/stats", NULL);
    cr_assert_eq(num(json_object_get(v, "faults"), "slowed"), 1);
    json_decref(v);
    svc_cleanup(&s);
}

/* Runs 30 token requests and records which failed. */
static void fault_pattern(const char *seed, char out[31])
{
    svc s;
    const char *args[] = {"--fail-rate", "0.5", "--fault-seed", seed, NULL};
    svc_start(&s, args);
    const char *form = "grant_type=password&username=gateway&password=eGov%40123&tenantId=mz"
                       "&userType=EMPLOYEE";
    const char *hdr[] = {"Authorization: Basic ZWdvdi11c2VyLWNsaWVudDo=", NULL};
    for (int i = 0; i < 30; i++) {
        resp r = http_ex(&s, "POST", "/user/oauth/token", form, strlen(form), hdr, 0);
        out[i] = r.status == 200 ? '.' : 'F';
        resp_free(&r);
    }
    out[30] = 0;
    svc_cleanup(&s);
}

Test(campaign, a_fault_seed_reproduces_the_fault_sequence, .timeout = 60)
{
    char a[31], b[31], c[31];
    fault_pattern("42", a);
    fault_pattern("42", b);
    fault_pattern("43", c);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c);
    cr_assert(strchr(a, 'F') && strchr(a, '.'), "pattern %s", a);
}

/* ---- Restart and concurrency ------------------------------------------------------------------- */

Test(campaign, restart_keeps_data_tokens_and_the_pending_queue, .timeout = 60)
{
    svc s;
    const char *slow_args[] = {"--process-delay-ms", "60000", NULL};
    svc_start(&s, slow_args);
    login(&s);
    bulk(&s, "_create", json_pack("[o]", household("rs-applied", 1, "L1")));
    flush(&s);
    bulk(&s, "_create", json_pack("[o, o]", household("rs-pending-1", 1, "L1"),
                                  household("rs-pending-2", 1, "L1")));
    svc_stop(&s);

    /* Pending items keep their due time: flush applies them now. */
    svc_start_in(&s, slow_args);
    login(&s);
    json_t *v = search_crids(&s, NULL, false);
    cr_assert_eq(num(v, "TotalCount"), 1, "applied data lost or pending applied early");
    json_decref(v);
    v = get(&s, "/_test/stats", NULL);
    cr_assert_eq(num(json_object_get(v, "writes"), "queuedRequests"), 1);
    json_decref(v);
    flush(&s);
    v = search_crids(&s, NULL, false);
    cr_assert_eq(num(v, "TotalCount"), 3);
    json_decref(v);

    /* A queue left with a short delay is applied by the worker after the restart by itself;
     * the token issued before the restart still works. */
    svc_stop(&s);
    const char *fast_args[] = {"--process-delay-ms", "1000", NULL};
    svc_start_in(&s, fast_args);
    login(&s);
    char kept[64];
    snprintf(kept, sizeof kept, "%s", s.token);
    bulk(&s, "_create", json_pack("[o]", household("rs-pending-3", 1, "L1")));
    svc_stop(&s);
    svc_start_in(&s, fast_args);
    snprintf(s.token, sizeof s.token, "%s", kept);
    int64_t deadline = now_ms() + 10000;
    json_t *h = NULL;
    while (!h && now_ms() < deadline) {
        sleep_ms(100);
        h = find(&s, "rs-pending-3", false);
    }
    cr_assert_not_null(h, "the pending write was lost in the restart");
    json_decref(h);
    cr_assert_eq(stat_writes(&s, "applied"), 4);
    svc_cleanup(&s);
}

typedef struct writer {
    svc *s;
    int index;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < 20; i++) {
        char crid[32];
        snprintf(crid, sizeof crid, "cc-%d-%d", w->index, i);
        json_t *body = json_pack("{s:o, s:[o]}", "RequestInfo", request_info(w->s), "Households",
                                 household(crid, 1, "L1"));
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        const char *hdr[] = {"Content-Type: application/json", NULL};
        resp r = http_ex(w->s, "POST", "/household/v1/bulk/_create", text, strlen(text), hdr, 0);
        free(text);
        if (r.status != 202) {
            resp_free(&r);
            return (void *)1;
        }
        resp_free(&r);
        /* Every writer also sends a duplicate of its first entity. */
        if (i == 19) {
            body = json_pack("{s:o, s:[o]}", "RequestInfo", request_info(w->s), "Households",
                             household("cc-shared", 1, "L1"));
            text = json_dumps(body, JSON_COMPACT);
            json_decref(body);
            r = http_ex(w->s, "POST", "/household/v1/bulk/_create", text, strlen(text), hdr, 0);
            free(text);
            long st = r.status;
            resp_free(&r);
            if (st != 202)
                return (void *)1;
        }
    }
    return NULL;
}

Test(campaign, concurrent_writers_are_applied_exactly_once, .timeout = 120)
{
    svc s;
    const char *args[] = {"--process-delay-ms", "20", NULL};
    svc_start(&s, args);
    login(&s);
    enum { WRITERS = 8 };
    pthread_t th[WRITERS];
    writer w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer){&s, i};
        cr_assert_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        cr_assert_null(ret, "writer %d got a non-202 answer", i);
    }
    flush(&s);
    json_t *v = get(&s, "/_test/entities?type=household", NULL);
    cr_assert_eq(num(v, "count"), WRITERS * 20 + 1);
    json_decref(v);
    v = errors_with(&s, "DUPLICATE_ENTITY");
    cr_assert_eq(num(v, "count"), WRITERS - 1);
    json_decref(v);
    cr_assert_eq(stat_writes(&s, "accepted"), WRITERS * 21);
    cr_assert_eq(stat_writes(&s, "applied"), WRITERS * 20 + 1);
    svc_cleanup(&s);
}

Test(campaign, help_explains_every_flag)
{
    svc s;
    make_dir(&s);
    char cmd[512], out[8192];
    snprintf(cmd, sizeof cmd, "%s --help", MESH_CAMPAIGN_BIN);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    cr_assert_eq(pclose(p), 0);
    static const char *const flags[] = {"--listen", "--port", "--data", "--seed", "--public-url",
                                        "--process-delay-ms", "--no-auth", "--user",
                                        "--oauth-client", "--token-ttl-s", "--fail-rate",
                                        "--slow-rate", "--slow-ms", "--drop-writes",
                                        "--fault-seed", "--fault-paths", "--max-body-bytes",
                                        "--max-file-bytes", "--map-mb", "--no-test-endpoints",
                                        "--verbose"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_assert(strstr(out, flags[i]) != NULL, "--help does not explain %s", flags[i]);
    snprintf(cmd, sizeof cmd, "%s --port 0 --fail-rate 2 --data %s/d 2>/dev/null", MESH_CAMPAIGN_BIN,
             s.dir);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "a bad flag exits 2");
    nftw(s.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
