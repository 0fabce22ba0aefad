/*
 * cli_test.c - runs the real `meshsync` binary (MESH_CLI) as a child process in temporary
 * directories and checks its output, exit codes and the stores it leaves behind: the single-node
 * commands, export/import between two nodes, a conflict made and resolved across two nodes, bad
 * input of every kind (specific exit code, a clear message, nothing on stdout, store unchanged),
 * and --help for every command against its page in docs/cli/.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "meshsync.h"

/* Exit codes, as docs/cli/exit-codes.md documents them. */
enum {
    EX_OK = 0,
    EX_USAGE = 2,
    EX_NOTFOUND = 3,
    EX_INPUT = 4,
    EX_STATE = 5,
    EX_CORRUPT = 6,
    EX_NOTSTORE = 7,
};

/* ---- Running the binary ------------------------------------------------------------------- */

typedef struct run_result {
    int code;      /* exit status, or 128 + signal */
    char *out;     /* stdout, NUL-terminated */
    size_t out_len;
    char *err;     /* stderr, NUL-terminated */
    size_t err_len;
} run_result;

static char base_dir[64];  /* this test's temporary directory */

static void result_free(run_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static void append(char **buf, size_t *len, const char *p, size_t n)
{
    char *b = realloc(*buf, *len + n + 1);
    cr_assert_not_null(b);
    memcpy(b + *len, p, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
}

/*
 * Runs MESH_CLI with `argv` (NULL-terminated, without argv[0]), writing `in` (may be NULL: an
 * empty stdin) to its stdin. `env` (NULL-terminated, may be NULL) holds "NAME=VALUE" to set or
 * "NAME" to unset in the child; by default MESHSYNC_DATA is unset and HOME is the test's
 * temporary directory, so a test never touches a real node.
 */
static void run_env(run_result *r, const char *in, const char *const *env, const char *const *argv)
{
    int pin[2], pout[2], perr[2];
    memset(r, 0, sizeof *r);
    cr_assert(pipe(pin) == 0 && pipe(pout) == 0 && pipe(perr) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child must not touch Criterion (its asserts report to the runner by pid). */
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        dup2(perr[1], 2);
        int fds[] = {pin[0], pin[1], pout[0], pout[1], perr[0], perr[1]};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) close(fds[i]);
        unsetenv("MESHSYNC_DATA");
        setenv("HOME", base_dir, 1);
        for (const char *const *e = env; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            if (eq == NULL) {
                unsetenv(*e);
            } else {
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(eq - *e), *e);
                setenv(name, eq + 1, 1);
            }
        }
        const char *args[32];
        int n = 0;
        args[n++] = MESH_CLI;
        for (const char *const *a = argv; *a && n < 31; a++) args[n++] = *a;
        args[n] = NULL;
        execv(MESH_CLI, (char *const *)args);
        _exit(127);
    }
    cr_assert(pid > 0, "fork: %s", strerror(errno));
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    size_t in_len = in ? strlen(in) : 0, in_off = 0;
    if (in_len == 0) {
        close(pin[1]);
        pin[1] = -1;
    } else {
        fcntl(pin[1], F_SETFL, O_NONBLOCK);
    }
    signal(SIGPIPE, SIG_IGN);
    r->out = calloc(1, 1);
    r->err = calloc(1, 1);
    int open_out = 1, open_err = 1;
    time_t deadline = time(NULL) + 60;
    while (open_out || open_err) {
        struct pollfd fds[3] = {{pout[0], POLLIN, 0}, {perr[0], POLLIN, 0}, {pin[1], POLLOUT, 0}};
        if (!open_out) fds[0].fd = -1;
        if (!open_err) fds[1].fd = -1;
        int rc = poll(fds, 3, 1000);
        cr_assert(rc >= 0 || errno == EINTR, "poll: %s", strerror(errno));
        cr_assert(time(NULL) < deadline, "meshsync %s did not finish within 60 s", argv[0]);
        char buf[4096];
        if (fds[0].revents) {
            ssize_t k = read(pout[0], buf, sizeof buf);
            if (k > 0) append(&r->out, &r->out_len, buf, (size_t)k);
            else open_out = 0;
        }
        if (fds[1].revents) {
            ssize_t k = read(perr[0], buf, sizeof buf);
            if (k > 0) append(&r->err, &r->err_len, buf, (size_t)k);
            else open_err = 0;
        }
        if (pin[1] >= 0 && fds[2].revents) {
            ssize_t k = write(pin[1], in + in_off, in_len - in_off);
            if (k > 0) in_off += (size_t)k;
            if (k < 0 || in_off == in_len) {
                close(pin[1]);
                pin[1] = -1;
            }
        }
    }
    if (pin[1] >= 0) close(pin[1]);
    close(pout[0]);
    close(perr[0]);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define RUN(r, in, ...) run_env((r), (in), NULL, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_ENV(r, in, env, ...) \
    run_env((r), (in), (const char *const[]){env, NULL}, (const char *const[]){__VA_ARGS__, NULL})

/* Asserts a successful run, showing stderr if not. */
#define ASSERT_OK(r) cr_assert_eq((r)->code, 0, "exit %d, stderr: %s", (r)->code, (r)->err)

/* Asserts a failure with exit code `ec`, nothing on stdout, and "meshsync: <cmd>: " on stderr. */
static void assert_fails(const run_result *r, int ec, const char *cmd)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "meshsync: %s: ", cmd);
    cr_assert_eq(r->code, ec, "expected exit %d, got %d; stderr: %s", ec, r->code, r->err);
    cr_assert_eq(r->out_len, 0, "a failure printed on stdout: %s", r->out);
    cr_assert(strncmp(r->err, prefix, strlen(prefix)) == 0, "stderr does not start with '%s': %s",
              prefix, r->err);
    /* The message is a sentence, not just the prefix. */
    cr_assert_gt(strcspn(r->err + strlen(prefix), "\n"), 10, "message too short: %s", r->err);
}

static json_t *parse_json(const run_result *r)
{
    json_error_t e;
    json_t *j = json_loads(r->out, 0, &e);
    cr_assert_not_null(j, "stdout is not one JSON document (%s at line %d): %s", e.text, e.line,
                       r->out);
    return j;
}

/* ---- Temporary directories ------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    strcpy(base_dir, "/tmp/meshsync-cli-XXXXXX");
    cr_assert_not_null(mkdtemp(base_dir), "mkdtemp: %s", strerror(errno));
}

static void teardown(void)
{
    if (base_dir[0]) nftw(base_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 300);

/* A path under the test's directory; static rotating buffers, enough for one test's calls. */
static const char *path_in(const char *name)
{
    static char bufs[16][256];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof bufs[0], "%s/%s", base_dir, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0;
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) append(&buf, &n, chunk, k);
    fclose(f);
    if (buf == NULL) buf = calloc(1, 1);
    *len = n;
    return buf;
}

/* ---- Node helpers ---------------------------------------------------------------------------- */

static void init_node(const char *dir, char key[MESH_KEY_STR_LEN])
{
    run_result r;
    RUN(&r, NULL, "init", "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    const char *k = json_string_value(json_object_get(j, "identity"));
    cr_assert_not_null(k);
    cr_assert_eq(strlen(k), 64);
    if (key) memcpy(key, k, MESH_KEY_STR_LEN);
    json_decref(j);
    result_free(&r);
}

/* put TYPE from `body` on stdin; returns the new rowVersion and copies the id. */
static unsigned put(const char *dir, const char *type, const char *body, char id[MESH_UUID_STR_LEN])
{
    run_result r;
    RUN(&r, body, "put", type, "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    const char *s = json_string_value(json_object_get(j, "id"));
    cr_assert_not_null(s);
    cr_assert_eq(strlen(s), 36);
    if (id) memcpy(id, s, MESH_UUID_STR_LEN);
    unsigned rv = (unsigned)json_integer_value(json_object_get(j, "rowVersion"));
    json_decref(j);
    result_free(&r);
    return rv;
}

typedef struct node_status {
    json_int_t ops, entities, deleted, conflicts, streams, pending;
    char digest[MESH_HASH_STR_LEN];
} node_status;

static void get_status(const char *dir, node_status *st)
{
    run_result r;
    RUN(&r, NULL, "status", "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    st->ops = json_integer_value(json_object_get(j, "ops"));
    st->entities = json_integer_value(json_object_get(j, "entities"));
    st->deleted = json_integer_value(json_object_get(j, "deleted"));
    st->conflicts = json_integer_value(json_object_get(j, "conflicts"));
    st->streams = json_integer_value(json_object_get(j, "streams"));
    st->pending = json_integer_value(json_object_get(j, "pending"));
    const char *d = json_string_value(json_object_get(j, "digest"));
    cr_assert_not_null(d);
    cr_assert_eq(strlen(d), 64, "digest: %s", d);
    memcpy(st->digest, d, sizeof st->digest);
    json_decref(j);
    result_free(&r);
}

static void assert_same_status(const node_status *a, const node_status *b)
{
    cr_assert_str_eq(a->digest, b->digest);
    cr_assert_eq(a->ops, b->ops);
    cr_assert_eq(a->entities, b->entities);
    cr_assert_eq(a->deleted, b->deleted);
    cr_assert_eq(a->conflicts, b->conflicts);
    cr_assert_eq(a->streams, b->streams);
    cr_assert_eq(a->pending, b->pending);
}

/* get ID --json [--include-deleted]; returns the parsed object (json_decref it). */
static json_t *get_entity(const char *dir, const char *id, int include_deleted)
{
    run_result r;
    if (include_deleted)
        RUN(&r, NULL, "get", id, "--include-deleted", "--data", dir, "--json");
    else
        RUN(&r, NULL, "get", id, "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    result_free(&r);
    return j;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* ---- One node -------------------------------------------------------------------------------- */

Test(cli, init_identity_put_get_list_delete_history_status)
{
    const char *dir = path_in("node");
    char key[MESH_KEY_STR_LEN];
    init_node(dir, key);

    run_result r;
    RUN(&r, NULL, "identity", "--data", dir);
    ASSERT_OK(&r);
    cr_assert_eq(r.out_len, 65);
    cr_assert(strncmp(r.out, key, 64) == 0 && r.out[64] == '\n', "identity: %s", r.out);
    result_free(&r);

    /* put from stdin, human output: "<id> rowVersion 1" */
    RUN(&r, "{\"memberCount\": 4, \"address\": {\"locality\": \"Erati\"}}", "put", "household",
        "--data", dir);
    ASSERT_OK(&r);
    char h1[MESH_UUID_STR_LEN];
    cr_assert_eq(r.out_len, 36 + strlen(" rowVersion 1\n"), "put printed: %s", r.out);
    cr_assert_str_eq(r.out + 36, " rowVersion 1\n");
    memcpy(h1, r.out, 36);
    h1[36] = '\0';
    result_free(&r);

    /* put from --file, with the id as an argument */
    const char *f = path_in("ind.json");
    const char *ind_id = "0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e";
    const char *ind_body = "{\"name\": {\"givenName\": \"Ana\"}, \"age\": 31}";
    write_file(f, ind_body, strlen(ind_body));
    RUN(&r, NULL, "put", "individual", ind_id, "--file", f, "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "id")), ind_id);
    cr_assert_eq(json_integer_value(json_object_get(j, "rowVersion")), 1);
    json_decref(j);
    result_free(&r);

    /* get: human output is the pretty-printed body */
    RUN(&r, NULL, "get", h1, "--data", dir);
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "memberCount")), 4);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "address"), "locality")),
                     "Erati");
    cr_assert_str_eq(json_string_value(json_object_get(j, "clientReferenceId")), h1);
    cr_assert_eq(json_integer_value(json_object_get(j, "rowVersion")), 1);
    cr_assert(strstr(r.out, "\n  \"memberCount\": 4") != NULL, "not pretty-printed: %s", r.out);
    json_decref(j);
    result_free(&r);

    /* get --json: metadata and body */
    j = get_entity(dir, ind_id, 0);
    cr_assert_str_eq(json_string_value(json_object_get(j, "id")), ind_id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "individual");
    cr_assert_eq(json_integer_value(json_object_get(j, "rowVersion")), 1);
    cr_assert(json_is_false(json_object_get(j, "deleted")));
    cr_assert(json_is_false(json_object_get(j, "conflict")));
    cr_assert_gt(json_integer_value(json_object_get(j, "modified_ms")), 1600000000000LL);
    cr_assert_str_eq(json_string_value(json_object_get(j, "author")), key);
    json_t *body = json_object_get(j, "body");
    cr_assert_eq(json_integer_value(json_object_get(body, "age")), 31);
    cr_assert_str_eq(json_string_value(json_object_get(body, "clientReferenceId")), ind_id);
    json_decref(j);

    /* update with the current rowVersion */
    char upd[256];
    snprintf(upd, sizeof upd, "{\"memberCount\": 5, \"rowVersion\": 1}");
    RUN(&r, upd, "put", "household", h1, "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "rowVersion")), 2);
    json_decref(j);
    result_free(&r);

    /* list: one JSON body per line, in (type, id) order */
    RUN(&r, NULL, "list", "--data", dir);
    ASSERT_OK(&r);
    cr_assert_eq(count_lines(r.out), 2, "list: %s", r.out);
    cr_assert(strstr(r.out, "\"memberCount\":5") || strstr(r.out, "\"memberCount\": 5"));
    result_free(&r);
    RUN(&r, NULL, "list", "individual", "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "id")), ind_id);
    json_decref(j);
    result_free(&r);

    /* delete; a deleted entity is hidden unless asked for */
    RUN(&r, NULL, "delete", ind_id, "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "id")), ind_id);
    cr_assert_eq(json_integer_value(json_object_get(j, "rowVersion")), 2);
    json_decref(j);
    result_free(&r);

    RUN(&r, NULL, "get", ind_id, "--data", dir);
    assert_fails(&r, EX_NOTFOUND, "get");
    cr_assert(strstr(r.err, "--include-deleted") != NULL, "no hint: %s", r.err);
    result_free(&r);

    j = get_entity(dir, ind_id, 1);
    cr_assert(json_is_true(json_object_get(j, "deleted")));
    cr_assert(json_is_true(json_object_get(json_object_get(j, "body"), "isDeleted")));
    json_decref(j);

    RUN(&r, NULL, "list", "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "id")), h1);
    json_decref(j);
    result_free(&r);
    RUN(&r, NULL, "list", "--include-deleted", "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 2);
    json_decref(j);
    result_free(&r);

    /* history: create then delete, the delete is the winner */
    RUN(&r, NULL, "history", ind_id, "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 2);
    json_t *op0 = json_array_get(j, 0), *op1 = json_array_get(j, 1);
    cr_assert_str_eq(json_string_value(json_object_get(op0, "kind")), "create");
    cr_assert_str_eq(json_string_value(json_object_get(op1, "kind")), "delete");
    cr_assert_eq(json_integer_value(json_object_get(op1, "base_rowVersion")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(op1, "base_author")), key);
    cr_assert(json_is_null(json_object_get(op0, "base_author")));
    cr_assert(json_is_true(json_object_get(op1, "winner")));
    cr_assert(json_is_true(json_object_get(op1, "head")));
    cr_assert_str_eq(json_string_value(json_object_get(op0, "author")), key);
    json_decref(j);
    result_free(&r);
    RUN(&r, NULL, "history", h1, "--data", dir);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, "rowVersion 1 create by ") != NULL, "history: %s", r.out);
    cr_assert(strstr(r.out, "rowVersion 2 update by ") != NULL, "history: %s", r.out);
    result_free(&r);

    /* status: 2 entities (1 deleted), 4 ops in one stream */
    node_status st;
    get_status(dir, &st);
    cr_assert_eq(st.entities, 2);
    cr_assert_eq(st.deleted, 1);
    cr_assert_eq(st.ops, 4);
    cr_assert_eq(st.streams, 1);
    cr_assert_eq(st.conflicts, 0);
    cr_assert_eq(st.pending, 0);

    /* human status: no escape sequences when piped */
    RUN(&r, NULL, "status", "--data", dir);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, "digest     ") != NULL);
    cr_assert(strstr(r.out, st.digest) != NULL);
    cr_assert_null(strchr(r.out, '\033'));
    result_free(&r);
}

Test(cli, init_scope_and_types)
{
    const char *dir = path_in("scoped"), *types = path_in("types.json");
    const char *cfg = "{\"version\": 1, \"types\": [{\"name\": \"widget\", \"path\": "
                      "\"/widget/v1\", \"array_key\": \"Widgets\"}]}";
    write_file(types, cfg, strlen(cfg));
    run_result r;
    RUN(&r, NULL, "init", "--scope", "MZ/NAMPULA/ERATI/L01", "--types", types, "--data", dir);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, "scope     MZ/NAMPULA/ERATI/L01\n") != NULL, "%s", r.out);
    result_free(&r);
    RUN(&r, NULL, "identity", "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "scope")), "MZ/NAMPULA/ERATI/L01");
    json_decref(j);
    result_free(&r);

    /* The configured type works; a default type is now unknown. */
    char id[MESH_UUID_STR_LEN];
    cr_assert_eq(put(dir, "widget", "{\"size\": 3}", id), 1);
    RUN(&r, "{\"n\": 1}", "put", "household", "--data", dir);
    assert_fails(&r, EX_INPUT, "put");
    result_free(&r);

    /* Bad scope or types file: invalid input, and no node is left behind. */
    const char *bad = path_in("bad-scope");
    RUN(&r, NULL, "init", "--scope", "has spaces!", "--data", bad);
    assert_fails(&r, EX_INPUT, "init");
    result_free(&r);
    RUN(&r, NULL, "status", "--data", bad);
    assert_fails(&r, EX_NOTSTORE, "status");
    result_free(&r);
    const char *bad_types = path_in("bad-types.json");
    const char *bad_cfg = "{\"types\": [{\"name\": \"x\"}]}";  /* no path, no array_key */
    write_file(bad_types, bad_cfg, strlen(bad_cfg));
    const char *bad2 = path_in("bad-types");
    RUN(&r, NULL, "init", "--types", bad_types, "--data", bad2);
    assert_fails(&r, EX_INPUT, "init");
    result_free(&r);
    RUN(&r, NULL, "status", "--data", bad2);
    assert_fails(&r, EX_NOTSTORE, "status");
    result_free(&r);
}

Test(cli, list_since_limit_offset)
{
    const char *dir = path_in("node");
    init_node(dir, NULL);
    char a[MESH_UUID_STR_LEN], b[MESH_UUID_STR_LEN], c[MESH_UUID_STR_LEN];
    put(dir, "household", "{\"n\": 1}", a);
    usleep(30 * 1000);
    put(dir, "household", "{\"n\": 2}", b);
    usleep(30 * 1000);
    put(dir, "household", "{\"n\": 3}", c);

    json_t *jb = get_entity(dir, b, 0);
    json_int_t since_b = json_integer_value(json_object_get(jb, "modified_ms"));
    json_decref(jb);
    json_t *ja = get_entity(dir, a, 0);
    json_int_t since_a = json_integer_value(json_object_get(ja, "modified_ms"));
    json_decref(ja);
    cr_assert_gt(since_b, since_a);

    char since[32];
    snprintf(since, sizeof since, "%lld", (long long)since_b);
    run_result r;
    RUN(&r, NULL, "list", "household", "--since", since, "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 2, "list --since: %s", r.out);
    for (size_t i = 0; i < 2; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(j, i), "id"));
        cr_assert(strcmp(id, a) != 0, "--since returned an older entity");
    }
    json_decref(j);
    result_free(&r);

    /* --since=MS form, human output */
    char opt[48];
    snprintf(opt, sizeof opt, "--since=%lld", (long long)since_a);
    RUN(&r, NULL, "list", opt, "--data", dir);
    ASSERT_OK(&r);
    cr_assert_eq(count_lines(r.out), 3);
    result_free(&r);

    RUN(&r, NULL, "list", "--limit", "2", "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 2);
    json_decref(j);
    result_free(&r);

    RUN(&r, NULL, "list", "--offset", "2", "--limit", "5", "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 1);
    json_decref(j);
    result_free(&r);

    /* a type with no entities: empty output, [] in JSON */
    RUN(&r, NULL, "list", "task", "--data", dir);
    ASSERT_OK(&r);
    cr_assert_eq(r.out_len, 0);
    result_free(&r);
    RUN(&r, NULL, "list", "task", "--data", dir, "--json");
    ASSERT_OK(&r);
    j = parse_json(&r);
    cr_assert(json_is_array(j) && json_array_size(j) == 0);
    json_decref(j);
    result_free(&r);
}

Test(cli, data_dir_from_environment)
{
    const char *dir = path_in("envnode");
    char key[MESH_KEY_STR_LEN];
    init_node(dir, key);
    char env[300];
    snprintf(env, sizeof env, "MESHSYNC_DATA=%s", dir);
    run_result r;
    RUN_ENV(&r, NULL, env, "identity");
    ASSERT_OK(&r);
    cr_assert(strncmp(r.out, key, 64) == 0);
    result_free(&r);

    /* Without --data and MESHSYNC_DATA: $HOME/.meshsync (HOME is the test directory). */
    RUN(&r, NULL, "init");
    ASSERT_OK(&r);
    result_free(&r);
    struct stat st;
    cr_assert_eq(stat(path_in(".meshsync"), &st), 0, "init did not use $HOME/.meshsync");
    cr_assert(S_ISDIR(st.st_mode));
    RUN(&r, NULL, "status");
    ASSERT_OK(&r);
    result_free(&r);

    /* No HOME either: a usage error. */
    RUN_ENV(&r, NULL, "HOME", "status");
    assert_fails(&r, EX_USAGE, "status");
    result_free(&r);
}

/* ---- Two nodes ------------------------------------------------------------------------------- */

static void export_to(const char *dir, const char *file)
{
    run_result r;
    RUN(&r, NULL, "export", file, "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "file")), file);
    json_decref(j);
    result_free(&r);
}

/* Imports `file` into `dir`; returns the parsed report. */
static json_t *import_from(const char *dir, const char *file)
{
    run_result r;
    RUN(&r, NULL, "import", file, "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    result_free(&r);
    return j;
}

Test(cli, export_import_gives_equal_digests)
{
    const char *a = path_in("a"), *b = path_in("b"), *bundle = path_in("a.bundle");
    init_node(a, NULL);
    init_node(b, NULL);
    char id[MESH_UUID_STR_LEN];
    put(a, "household", "{\"n\": 1}", id);
    put(a, "household", "{\"n\": 2}", NULL);
    put(a, "individual", "{\"age\": 40}", NULL);
    run_result r;
    RUN(&r, NULL, "delete", id, "--data", a);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, " deleted\n") != NULL, "delete printed: %s", r.out);
    result_free(&r);

    RUN(&r, NULL, "export", bundle, "--data", a);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, "exported 4 ops to ") == r.out, "export printed: %s", r.out);
    result_free(&r);

    node_status sa, sb;
    get_status(a, &sa);
    get_status(b, &sb);
    cr_assert_str_neq(sa.digest, sb.digest);

    json_t *rep = import_from(b, bundle);
    cr_assert_eq(json_integer_value(json_object_get(rep, "applied")), 4);
    cr_assert_eq(json_integer_value(json_object_get(rep, "duplicate")), 0);
    cr_assert_eq(json_integer_value(json_object_get(rep, "pending")), 0);
    json_decref(rep);

    get_status(b, &sb);
    assert_same_status(&sa, &sb);

    /* The same entities, deleted one included. */
    run_result la, lb;
    RUN(&la, NULL, "list", "--include-deleted", "--data", a);
    RUN(&lb, NULL, "list", "--include-deleted", "--data", b);
    ASSERT_OK(&la);
    ASSERT_OK(&lb);
    cr_assert_str_eq(la.out, lb.out);
    cr_assert_eq(count_lines(la.out), 3);
    result_free(&la);
    result_free(&lb);

    /* Importing again changes nothing; human output. */
    RUN(&r, NULL, "import", bundle, "--data", b);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, ": 0 applied, 4 duplicate, 0 pending") != NULL, "%s", r.out);
    result_free(&r);
    node_status sb2;
    get_status(b, &sb2);
    assert_same_status(&sb, &sb2);

    /* B's export carries A's ops: importing it into A is all duplicates. */
    const char *back = path_in("b.bundle");
    export_to(b, back);
    rep = import_from(a, back);
    cr_assert_eq(json_integer_value(json_object_get(rep, "applied")), 0);
    cr_assert_eq(json_integer_value(json_object_get(rep, "duplicate")), 4);
    json_decref(rep);
}

static json_t *conflicts_of(const char *dir)
{
    run_result r;
    RUN(&r, NULL, "conflicts", "--data", dir, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    cr_assert(json_is_array(j));
    result_free(&r);
    return j;
}

/* Makes a conflict on entity `id` between nodes a and b: both update the same base. */
static void make_conflict(const char *a, const char *b, const char *id, const char *tag)
{
    char file[64], body[128];
    run_result r;
    snprintf(body, sizeof body, "{\"memberCount\": 7, \"by\": \"a-%s\"}", tag);
    RUN(&r, body, "put", "household", id, "--data", a);
    ASSERT_OK(&r);
    result_free(&r);
    snprintf(body, sizeof body, "{\"memberCount\": 9, \"by\": \"b-%s\"}", tag);
    RUN(&r, body, "put", "household", id, "--data", b);
    ASSERT_OK(&r);
    result_free(&r);
    snprintf(file, sizeof file, "a-%s.bundle", tag);
    const char *fa = path_in(file);
    snprintf(file, sizeof file, "b-%s.bundle", tag);
    const char *fb = path_in(file);
    export_to(a, fa);
    export_to(b, fb);
    json_decref(import_from(b, fa));
    json_decref(import_from(a, fb));
}

Test(cli, conflict_listed_on_both_and_resolved_on_both)
{
    const char *a = path_in("a"), *b = path_in("b");
    char ka[MESH_KEY_STR_LEN], kb[MESH_KEY_STR_LEN];
    init_node(a, ka);
    init_node(b, kb);
    char id[MESH_UUID_STR_LEN], id2[MESH_UUID_STR_LEN];
    put(a, "household", "{\"memberCount\": 3}", id);
    put(a, "household", "{\"memberCount\": 1}", id2);
    const char *base = path_in("base.bundle");
    export_to(a, base);
    json_decref(import_from(b, base));

    make_conflict(a, b, id, "1");

    node_status sa, sb;
    get_status(a, &sa);
    get_status(b, &sb);
    assert_same_status(&sa, &sb);
    cr_assert_eq(sa.conflicts, 1);

    const char *nodes[2] = {a, b};
    for (int n = 0; n < 2; n++) {
        json_t *c = conflicts_of(nodes[n]);
        cr_assert_eq(json_array_size(c), 1, "node %d conflicts", n);
        json_t *e = json_array_get(c, 0);
        cr_assert_str_eq(json_string_value(json_object_get(e, "id")), id);
        cr_assert_str_eq(json_string_value(json_object_get(e, "type")), "household");
        json_t *heads = json_object_get(e, "heads");
        cr_assert_eq(json_array_size(heads), 2);
        int seen_a = 0, seen_b = 0;
        for (size_t i = 0; i < 2; i++) {
            json_t *h = json_array_get(heads, i);
            const char *author = json_string_value(json_object_get(h, "author"));
            cr_assert_eq(json_integer_value(json_object_get(h, "rowVersion")), 2);
            const char *by = json_string_value(json_object_get(json_object_get(h, "body"), "by"));
            if (strcmp(author, ka) == 0) seen_a = by && strcmp(by, "a-1") == 0;
            if (strcmp(author, kb) == 0) seen_b = by && strcmp(by, "b-1") == 0;
        }
        cr_assert(seen_a && seen_b, "heads are not A's and B's edits");
        json_decref(c);

        json_t *g = get_entity(nodes[n], id, 0);
        cr_assert(json_is_true(json_object_get(g, "conflict")));
        json_decref(g);
    }

    /* Human conflicts output names the entity and both authors. */
    run_result r;
    RUN(&r, NULL, "conflicts", "--data", a);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, id) && strstr(r.out, ka) && strstr(r.out, kb), "%s", r.out);
    result_free(&r);

    /* The other entity has no conflict: resolve refuses, and changes nothing. */
    RUN(&r, NULL, "resolve", id2, "--pick", ka, "--data", a);
    assert_fails(&r, EX_STATE, "resolve");
    result_free(&r);
    /* --pick an author that wrote no head */
    char nobody[MESH_KEY_STR_LEN];
    memset(nobody, 'a', 64);
    nobody[64] = '\0';
    RUN(&r, NULL, "resolve", id, "--pick", nobody, "--data", a);
    assert_fails(&r, EX_STATE, "resolve");
    result_free(&r);
    node_status sa2;
    get_status(a, &sa2);
    assert_same_status(&sa, &sa2);

    /* A resolves by picking B's version; B gets the resolution by import. */
    RUN(&r, NULL, "resolve", id, "--pick", kb, "--data", a, "--json");
    ASSERT_OK(&r);
    json_t *j = parse_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "id")), id);
    cr_assert_eq(json_integer_value(json_object_get(j, "rowVersion")), 3);
    json_decref(j);
    result_free(&r);

    json_t *c = conflicts_of(a);
    cr_assert_eq(json_array_size(c), 0);
    json_decref(c);
    c = conflicts_of(b);
    cr_assert_eq(json_array_size(c), 1, "B cannot know of the resolution yet");
    json_decref(c);

    const char *res = path_in("resolved.bundle");
    export_to(a, res);
    json_t *rep = import_from(b, res);
    cr_assert_eq(json_integer_value(json_object_get(rep, "applied")), 1);
    json_decref(rep);

    for (int n = 0; n < 2; n++) {
        c = conflicts_of(nodes[n]);
        cr_assert_eq(json_array_size(c), 0, "node %d still lists a conflict", n);
        json_decref(c);
        json_t *g = get_entity(nodes[n], id, 0);
        cr_assert(json_is_false(json_object_get(g, "conflict")));
        cr_assert_eq(json_integer_value(json_object_get(g, "rowVersion")), 3);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(g, "body"), "by")),
                         "b-1");
        json_decref(g);
    }
    get_status(a, &sa);
    get_status(b, &sb);
    assert_same_status(&sa, &sb);
    cr_assert_eq(sa.conflicts, 0);

    /* A second conflict, resolved on B with a merged body from a file. */
    make_conflict(a, b, id2, "2");
    const char *merged = path_in("merged.json");
    const char *mbody = "{\"memberCount\": 8, \"by\": \"merged\"}";
    write_file(merged, mbody, strlen(mbody));
    RUN(&r, NULL, "resolve", id2, "--file", merged, "--data", b);
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, " rowVersion 3 resolved") != NULL, "%s", r.out);
    result_free(&r);
    const char *res2 = path_in("resolved2.bundle");
    export_to(b, res2);
    json_decref(import_from(a, res2));
    for (int n = 0; n < 2; n++) {
        c = conflicts_of(nodes[n]);
        cr_assert_eq(json_array_size(c), 0);
        json_decref(c);
        json_t *g = get_entity(nodes[n], id2, 0);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(g, "body"), "by")),
                         "merged");
        json_decref(g);
    }
    get_status(a, &sa);
    get_status(b, &sb);
    assert_same_status(&sa, &sb);
}

/* ---- Bad input ------------------------------------------------------------------------------- */

/* A node with one live household (rowVersion 2) and one deleted one. */
typedef struct fixture_node {
    const char *dir;
    char live[MESH_UUID_STR_LEN];
    char dead[MESH_UUID_STR_LEN];
    node_status before;
} fixture_node;

static void fixture(fixture_node *f)
{
    f->dir = path_in("node");
    init_node(f->dir, NULL);
    put(f->dir, "household", "{\"memberCount\": 2}", f->live);
    char body[128];
    snprintf(body, sizeof body, "{\"memberCount\": 3, \"rowVersion\": 1}");
    run_result r;
    RUN(&r, body, "put", "household", f->live, "--data", f->dir);
    ASSERT_OK(&r);
    result_free(&r);
    put(f->dir, "household", "{\"memberCount\": 1}", f->dead);
    RUN(&r, NULL, "delete", f->dead, "--data", f->dir);
    ASSERT_OK(&r);
    result_free(&r);
    get_status(f->dir, &f->before);
}

static void assert_unchanged(const fixture_node *f)
{
    node_status now;
    get_status(f->dir, &now);
    assert_same_status(&f->before, &now);
}

Test(cli, put_malformed_json)
{
    fixture_node f;
    fixture(&f);
    run_result r;
    RUN(&r, "{\"memberCount\": 2,", "put", "household", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    cr_assert(strstr(r.err, "meshsync: put: stdin: ") == r.err, "source not named: %s", r.err);
    cr_assert(strstr(r.err, "line 1") != NULL, "no position: %s", r.err);
    result_free(&r);
    const char *bad = path_in("bad.json");
    write_file(bad, "{\"a\" 1}", 7);
    RUN(&r, NULL, "put", "household", "--file", bad, "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    char prefix[300];
    snprintf(prefix, sizeof prefix, "meshsync: put: %s: ", bad);
    cr_assert(strstr(r.err, prefix) == r.err, "the message does not name the file: %s", r.err);
    result_free(&r);
    RUN(&r, "[1, 2]", "put", "household", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    result_free(&r);
    RUN(&r, "", "put", "household", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    result_free(&r);
    assert_unchanged(&f);
}

Test(cli, put_unknown_type)
{
    fixture_node f;
    fixture(&f);
    run_result r;
    RUN(&r, "{\"x\": 1}", "put", "spaceship", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    cr_assert(strstr(r.err, "spaceship") != NULL, "the message does not name the type: %s", r.err);
    result_free(&r);
    assert_unchanged(&f);
}

Test(cli, invalid_uuid)
{
    fixture_node f;
    fixture(&f);
    run_result r;
    RUN(&r, "{\"x\": 1}", "put", "household", "not-a-uuid", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    result_free(&r);
    RUN(&r, "{\"clientReferenceId\": \"1234\"}", "put", "household", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "put");
    result_free(&r);
    RUN(&r, NULL, "get", "0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "get");
    result_free(&r);
    RUN(&r, NULL, "delete", "zz90c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "delete");
    result_free(&r);
    RUN(&r, NULL, "history", "nope", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "history");
    result_free(&r);
    /* a well-formed id that does not exist */
    RUN(&r, NULL, "get", "0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e", "--data", f.dir);
    assert_fails(&r, EX_NOTFOUND, "get");
    result_free(&r);
    RUN(&r, NULL, "delete", "0190c2d4-7a1e-7b3c-9d2e-4f5a6b7c8d9e", "--data", f.dir);
    assert_fails(&r, EX_NOTFOUND, "delete");
    result_free(&r);
    assert_unchanged(&f);
}

Test(cli, row_version_going_backwards)
{
    fixture_node f;
    fixture(&f);
    run_result r;
    RUN(&r, "{\"memberCount\": 9, \"rowVersion\": 1}", "put", "household", f.live, "--data",
        f.dir);
    assert_fails(&r, EX_STATE, "put");
    cr_assert(strstr(r.err, "hint: ") != NULL, "no hint: %s", r.err);
    result_free(&r);
    assert_unchanged(&f);
    json_t *g = get_entity(f.dir, f.live, 0);
    cr_assert_eq(json_integer_value(json_object_get(g, "rowVersion")), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(g, "body"), "memberCount")), 3);
    json_decref(g);
}

Test(cli, update_or_delete_of_deleted_entity)
{
    fixture_node f;
    fixture(&f);
    run_result r;
    RUN(&r, "{\"memberCount\": 5}", "put", "household", f.dead, "--data", f.dir);
    assert_fails(&r, EX_STATE, "put");
    cr_assert(strstr(r.err, "final") != NULL, "no hint that deletes are final: %s", r.err);
    result_free(&r);
    RUN(&r, NULL, "delete", f.dead, "--data", f.dir);
    assert_fails(&r, EX_STATE, "delete");
    result_free(&r);
    assert_unchanged(&f);
}

Test(cli, truncated_and_tampered_import)
{
    fixture_node f;
    fixture(&f);
    const char *src = path_in("src"), *bundle = path_in("src.bundle");
    init_node(src, NULL);
    put(src, "household", "{\"memberCount\": 6, \"note\": \"from another node\"}", NULL);
    put(src, "individual", "{\"age\": 22}", NULL);
    export_to(src, bundle);
    size_t len;
    char *bytes = read_file(bundle, &len);
    cr_assert_gt(len, 100);

    const char *trunc = path_in("truncated.bundle");
    write_file(trunc, bytes, len - 40);
    run_result r;
    RUN(&r, NULL, "import", trunc, "--data", f.dir);
    assert_fails(&r, EX_CORRUPT, "import");
    cr_assert(strstr(r.err, trunc) != NULL, "the message does not name the file: %s", r.err);
    cr_assert(strstr(r.err, "\nhint: ") != NULL, "no hint: %s", r.err);
    result_free(&r);
    assert_unchanged(&f);

    const char *half = path_in("half.bundle");
    write_file(half, bytes, len / 2);
    RUN(&r, NULL, "import", half, "--data", f.dir);
    assert_fails(&r, EX_CORRUPT, "import");
    result_free(&r);
    assert_unchanged(&f);

    const char *tampered = path_in("tampered.bundle");
    bytes[len / 2] ^= 0x01;
    write_file(tampered, bytes, len);
    RUN(&r, NULL, "import", tampered, "--data", f.dir);
    assert_fails(&r, EX_CORRUPT, "import");
    result_free(&r);
    assert_unchanged(&f);

    RUN(&r, NULL, "import", path_in("no-such.bundle"), "--data", f.dir);
    assert_fails(&r, EX_NOTFOUND, "import");
    result_free(&r);
    assert_unchanged(&f);
    free(bytes);

    /* The intact bundle still imports. */
    json_t *rep = import_from(f.dir, bundle);
    cr_assert_eq(json_integer_value(json_object_get(rep, "applied")), 2);
    json_decref(rep);
}

/* The names in `dir`, sorted, joined by '\n'. */
static char *listing(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | sort", dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char *buf = NULL;
    size_t n = 0;
    char chunk[1024];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, p)) > 0) append(&buf, &n, chunk, k);
    pclose(p);
    if (buf == NULL) buf = calloc(1, 1);
    return buf;
}

static void assert_not_a_store(const char *dir)
{
    static const char *const cmds[] = {"identity", "status", "list", "conflicts"};
    char *before = listing(dir);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        run_result r;
        RUN(&r, NULL, cmds[i], "--data", dir);
        assert_fails(&r, EX_NOTSTORE, cmds[i]);
        /* Names the directory and says how to make a node there. */
        char init[300];
        snprintf(init, sizeof init, "meshsync init --data %s", dir);
        cr_assert(strstr(r.err, init) != NULL, "%s", r.err);
        result_free(&r);
    }
    run_result r;
    RUN(&r, "{\"n\": 1}", "put", "household", "--data", dir);
    assert_fails(&r, EX_NOTSTORE, "put");
    result_free(&r);
    RUN(&r, NULL, "import", path_in("whatever.bundle"), "--data", dir);
    assert_fails(&r, EX_NOTSTORE, "import");
    result_free(&r);
    char *after = listing(dir);
    cr_assert_str_eq(before, after, "the directory was changed");
    free(before);
    free(after);
}

Test(cli, not_a_store)
{
    const char *empty = path_in("empty");
    cr_assert_eq(mkdir(empty, 0700), 0);
    assert_not_a_store(empty);

    const char *junk = path_in("junk");
    cr_assert_eq(mkdir(junk, 0700), 0);
    char name[300];
    snprintf(name, sizeof name, "%s/notes.txt", junk);
    write_file(name, "hello\n", 6);
    snprintf(name, sizeof name, "%s/data.mdb", junk);
    write_file(name, "this is not an LMDB file, just some random bytes....", 52);
    snprintf(name, sizeof name, "%s/identity.key", junk);
    write_file(name, "\x01\x02\x03", 3);
    chmod(name, 0600);
    assert_not_a_store(junk);
    size_t len;
    char *content = read_file(name, &len);
    cr_assert(len == 3 && memcmp(content, "\x01\x02\x03", 3) == 0);
    free(content);

    /* A directory that does not exist is not created by reading commands. */
    const char *missing = path_in("missing");
    run_result r;
    RUN(&r, NULL, "status", "--data", missing);
    assert_fails(&r, EX_NOTSTORE, "status");
    cr_assert(strstr(r.err, "meshsync init --data") != NULL, "%s", r.err);
    result_free(&r);
    struct stat st;
    cr_assert_neq(stat(missing, &st), 0, "status created the data directory");
}

Test(cli, init_refuses_existing_node)
{
    fixture_node f;
    fixture(&f);
    char key[MESH_KEY_STR_LEN];
    run_result r;
    RUN(&r, NULL, "identity", "--data", f.dir);
    ASSERT_OK(&r);
    memcpy(key, r.out, 64);
    key[64] = '\0';
    result_free(&r);
    RUN(&r, NULL, "init", "--data", f.dir);
    assert_fails(&r, EX_STATE, "init");
    cr_assert(strstr(r.err, "already") != NULL, "%s", r.err);
    result_free(&r);
    RUN(&r, NULL, "identity", "--data", f.dir);
    ASSERT_OK(&r);
    cr_assert(strncmp(r.out, key, 64) == 0, "init replaced the identity");
    result_free(&r);
    assert_unchanged(&f);
}

Test(cli, usage_errors)
{
    fixture_node f;
    fixture(&f);
    run_result r;
    RUN(&r, NULL, "get", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "get");
    cr_assert(strstr(r.err, "missing argument ID") != NULL, "%s", r.err);
    cr_assert(strstr(r.err, "Usage: meshsync get ID") != NULL, "%s", r.err);
    result_free(&r);
    RUN(&r, NULL, "get", f.live, "extra", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "get");
    result_free(&r);
    RUN(&r, NULL, "list", "--bogus", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "list");
    cr_assert(strstr(r.err, "unknown option '--bogus'") != NULL, "%s", r.err);
    result_free(&r);
    RUN(&r, NULL, "list", "--limit", "ten", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "list");
    result_free(&r);
    RUN(&r, NULL, "list", "--since", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "list");
    result_free(&r);
    RUN(&r, NULL, "list", "--json=yes", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "list");
    result_free(&r);
    RUN(&r, NULL, "put", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "put");
    cr_assert(strstr(r.err, "missing argument TYPE") != NULL, "%s", r.err);
    result_free(&r);
    RUN(&r, NULL, "resolve", f.live, "--file", "x.json", "--pick", "ab", "--data", f.dir);
    assert_fails(&r, EX_USAGE, "resolve");
    result_free(&r);
    RUN(&r, NULL, "resolve", f.live, "--pick", "not-a-key", "--data", f.dir);
    assert_fails(&r, EX_INPUT, "resolve");
    result_free(&r);
    RUN(&r, NULL, "put", "household", "--file", path_in("absent.json"), "--data", f.dir);
    assert_fails(&r, EX_NOTFOUND, "put");
    result_free(&r);
    RUN(&r, NULL, "frobnicate");
    cr_assert_eq(r.code, EX_USAGE);
    cr_assert_eq(r.out_len, 0);
    cr_assert(strstr(r.err, "'frobnicate' is not a meshsync command") != NULL, "%s", r.err);
    result_free(&r);
    RUN(&r, NULL, "--data");
    cr_assert_eq(r.code, EX_USAGE);
    result_free(&r);
    assert_unchanged(&f);

    /* "--" ends options: a following "-x" is an argument (here: an invalid id). */
    RUN(&r, NULL, "get", "--data", f.dir, "--", "-x");
    assert_fails(&r, EX_INPUT, "get");
    result_free(&r);
}

/* ---- Help and docs --------------------------------------------------------------------------- */

/* The command names listed by `meshsync help` (indented lines under a heading). */
static size_t command_names(char names[32][32])
{
    run_result r;
    RUN(&r, NULL, "help");
    ASSERT_OK(&r);
    size_t n = 0;
    int in_commands = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strcmp(line, "Options:") == 0) break;
        if (line[0] != ' ') {
            in_commands = strcmp(line, "Usage: meshsync <command> [arguments] [options]") != 0 &&
                          line[strlen(line) - 1] == ':';
            continue;
        }
        if (in_commands && n < 32) {
            sscanf(line, " %31s", names[n]);
            n++;
        }
    }
    result_free(&r);
    return n;
}

static char *docs_page(const char *cmd)
{
    char path[512];
    snprintf(path, sizeof path, "%s/docs/cli/%s.md", MESH_SOURCE_DIR, cmd);
    size_t len;
    return read_file(path, &len);
}

Test(cli, help_for_every_command_matches_its_page)
{
    char names[32][32];
    size_t n = command_names(names);
    static const char *const expected[] = {"init", "identity", "status", "put", "get",
                                           "list", "delete", "history", "conflicts", "resolve",
                                           "export", "import", "help"};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        int found = 0;
        for (size_t k = 0; k < n; k++) found |= strcmp(names[k], expected[i]) == 0;
        cr_assert(found, "'meshsync help' does not list %s", expected[i]);
    }
    char *readme = docs_page("README");
    for (size_t i = 0; i < n; i++) {
        const char *cmd = names[i];
        run_result r, r2;
        RUN(&r, NULL, cmd, "--help");
        cr_assert_eq(r.code, 0, "%s --help exited %d", cmd, r.code);
        cr_assert_eq(r.err_len, 0, "%s --help wrote to stderr: %s", cmd, r.err);
        char usage[64];
        snprintf(usage, sizeof usage, "Usage: meshsync %s", cmd);
        cr_assert(strncmp(r.out, usage, strlen(usage)) == 0, "%s --help: %s", cmd, r.out);
        cr_assert(strstr(r.out, "\nOptions:\n") && strstr(r.out, "\nExit codes:\n") &&
                      strstr(r.out, "\nExamples:\n"),
                  "%s --help lacks a section: %s", cmd, r.out);

        /* -h, `help CMD` and --help anywhere on the line give the same text. */
        RUN(&r2, NULL, cmd, "-h");
        cr_assert_str_eq(r.out, r2.out);
        result_free(&r2);
        RUN(&r2, NULL, "help", cmd);
        cr_assert_str_eq(r.out, r2.out);
        result_free(&r2);
        RUN(&r2, NULL, cmd, "x", "--no-such-option", "--help");
        cr_assert_eq(r2.code, 0);
        cr_assert_str_eq(r.out, r2.out);
        result_free(&r2);

        /* The page has the same synopsis, every option and every exit code. */
        char *page = docs_page(cmd);
        size_t skip = strlen("Usage: ");
        char *synopsis = strndup(r.out + skip, strcspn(r.out, "\n") - skip);
        cr_assert(strstr(page, synopsis) != NULL, "docs/cli/%s.md lacks the synopsis '%s'", cmd,
                  synopsis);
        free(synopsis);
        const char *opts = strstr(r.out, "\nOptions:\n");
        const char *opts_end = strstr(r.out, "\nExamples:\n");
        for (const char *p = opts; p && p < opts_end; p++) {
            if (strncmp(p, "\n  --", 5) != 0 && strncmp(p, "\n  -h, --", 9) != 0) continue;
            const char *o = strstr(p, "--");
            size_t len = strcspn(o, " \n");
            char opt[64];
            snprintf(opt, sizeof opt, "`%.*s", (int)len, o);
            cr_assert(strstr(page, opt) != NULL, "docs/cli/%s.md does not document %s", cmd,
                      opt + 1);
        }
        const char *codes = strstr(r.out, "\nExit codes:\n");
        for (const char *p = codes; p; p = strchr(p + 1, '\n')) {
            int code;
            if (sscanf(p, "\n %d ", &code) != 1) continue;
            char row[16];
            snprintf(row, sizeof row, "| %d |", code);
            cr_assert(strstr(page, row) != NULL, "docs/cli/%s.md lacks exit code %d", cmd, code);
        }
        char link[64];
        snprintf(link, sizeof link, "(%s.md)", cmd);
        cr_assert(strstr(readme, link) != NULL, "docs/cli/README.md does not link %s.md", cmd);
        free(page);
        result_free(&r);
    }
    free(readme);

    run_result r;
    RUN(&r, NULL, "--version");
    ASSERT_OK(&r);
    cr_assert_str_eq(r.out, "meshsync " MESH_VERSION_STRING "\n");
    result_free(&r);
    RUN(&r, NULL, "--help");
    ASSERT_OK(&r);
    cr_assert(strstr(r.out, "Usage: meshsync <command>") == r.out);
    result_free(&r);
    RUN(&r, NULL, NULL);
    cr_assert_eq(r.code, EX_USAGE, "no command: exit %d", r.code);
    cr_assert_eq(r.out_len, 0);
    cr_assert(strstr(r.err, "Usage: meshsync <command>") != NULL);
    result_free(&r);
}

Test(cli, exit_code_table_is_documented)
{
    char *page = docs_page("exit-codes");
    run_result r;
    RUN(&r, NULL, "help", "exit-codes");
    ASSERT_OK(&r);
    int rows = 0;
    for (const char *p = r.out; p; p = strchr(p + 1, '\n')) {
        int code;
        if (sscanf(p, "%*[\n ]%d ", &code) != 1) continue;
        char row[16];
        snprintf(row, sizeof row, "| %d |", code);
        cr_assert(strstr(page, row) != NULL, "exit-codes.md lacks code %d", code);
        rows++;
    }
    cr_assert_eq(rows, 12, "help exit-codes: %s", r.out);
    result_free(&r);
    /* Every library error code is named in the table. */
    for (int code = -1; code >= MESH_EINTERNAL; code--) {
        const char *s = mesh_strerror(code);
        char name[32];
        snprintf(name, sizeof name, "`%.*s`", (int)strcspn(s, ":"), s);
        cr_assert(strstr(page, name) != NULL, "exit-codes.md does not map %s", name);
    }
    free(page);
}
