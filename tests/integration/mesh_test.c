/*
 * mesh_test.c - daemons (`meshsync run`, the real binary MESH_CLI) syncing over loopback with
 * CURVE: three nodes converge; ops travel over a relay to a node that never meets their author;
 * a daemon killed with SIGKILL in the middle of a large transfer loses and duplicates nothing;
 * a key that is not on the roster is refused and learns nothing; an op with a bad signature is
 * rejected and nothing after it in its stream is stored. Discovery by broadcast is tested in
 * netns_test.c; here every daemon runs with --no-discovery and finds peers by --peer.
 */
#include <criterion/criterion.h>

#include <jansson.h>

#include "integration/net_helpers.h"

#define NODES_MAX 4
#define CONVERGE_MS 120000u

static char base[64];
static nh_daemon daemons[NODES_MAX];
static char keys[NODES_MAX][MESH_KEY_STR_LEN];

static void setup(void)
{
    snprintf(base, sizeof base, "/tmp/meshnet-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
    memset(daemons, 0, sizeof daemons);
}

static void teardown(void)
{
    for (int i = 0; i < NODES_MAX; i++)
        if (daemons[i].pid > 0) nh_daemon_stop(&daemons[i], SIGKILL);
    if (getenv("MESH_TEST_KEEP") == NULL) nh_rm_rf(base);
}

static void dump_logs(void)
{
    for (int i = 0; i < NODES_MAX; i++)
        if (daemons[i].log[0]) nh_dump(daemons[i].log);
}

/* Creates nodes 0..n-1 with their data dirs; each gets a roster listing `on_roster` of them. */
static void make_nodes(int n, int on_roster)
{
    const char *ks[NODES_MAX];
    for (int i = 0; i < n; i++) {
        snprintf(daemons[i].dir, sizeof daemons[i].dir, "%s/n%c", base, 'a' + i);
        cr_assert_eq(nh_init_node(daemons[i].dir, keys[i]), MESH_OK, "%s", mesh_errmsg());
        ks[i] = keys[i];
        daemons[i].port = nh_free_port();
        snprintf(daemons[i].endpoint, sizeof daemons[i].endpoint, "tcp://127.0.0.1:%u",
                 (unsigned)daemons[i].port);
    }
    for (int i = 0; i < n; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/roster", daemons[i].dir);
        cr_assert_eq(nh_write_roster(path, ks, (size_t)on_roster), 0);
    }
}

static void start(int i, const char *peers)
{
    const char *extra[8] = {"--no-discovery", "--log-level", "debug", NULL};
    if (peers) {
        extra[3] = "--peer";
        extra[4] = peers;
        extra[5] = NULL;
    }
    cr_assert_eq(nh_daemon_start(&daemons[i], NULL, MESH_CLI, "127.0.0.1", extra), 0);
}

/* `meshsync status --json`, the way an operator compares nodes. */
static void cli_status(int i, nh_counts *c)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s status --json --data %s", MESH_CLI, daemons[i].dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_assert_eq(pclose(p), 0, "status failed: %s", buf);
    json_error_t je;
    json_t *o = json_loads(buf, 0, &je);
    cr_assert_not_null(o, "status --json printed: %s", buf);
    memset(c, 0, sizeof *c);
    c->ops = (uint64_t)json_integer_value(json_object_get(o, "ops"));
    c->pending = (uint64_t)json_integer_value(json_object_get(o, "pending"));
    c->streams = (uint64_t)json_integer_value(json_object_get(o, "streams"));
    snprintf(c->digest, sizeof c->digest, "%s", json_string_value(json_object_get(o, "digest")));
    json_decref(o);
}

/* Waits until nodes in `set` (a bitmask) all hold `ops` ops with one digest. */
static bool wait_converged(unsigned set, uint64_t ops, unsigned timeout_ms)
{
    uint64_t deadline = nh_now_ms() + timeout_ms;
    while (nh_now_ms() < deadline) {
        bool same = true;
        char first[MESH_HASH_STR_LEN] = "";
        for (int i = 0; i < NODES_MAX && same; i++) {
            if (!(set & (1u << i))) continue;
            nh_counts c;
            if (nh_counts_get(daemons[i].dir, &c) != MESH_OK || c.ops != ops) same = false;
            else if (first[0] == '\0') memcpy(first, c.digest, sizeof first);
            else if (strcmp(first, c.digest) != 0) same = false;
        }
        if (same) return true;
        nh_sleep_ms(100);
    }
    return false;
}

static void assert_same_digest(unsigned set, uint64_t ops)
{
    nh_counts ref = {0};
    bool have = false;
    for (int i = 0; i < NODES_MAX; i++) {
        if (!(set & (1u << i))) continue;
        nh_counts c;
        cli_status(i, &c);
        cr_assert_eq(c.ops, ops, "node %c holds %llu ops, expected %llu", 'a' + i,
                     (unsigned long long)c.ops, (unsigned long long)ops);
        cr_assert_eq(c.pending, 0, "node %c has %llu pending ops", 'a' + i,
                     (unsigned long long)c.pending);
        if (!have) {
            ref = c;
            have = true;
        }
        cr_assert_str_eq(c.digest, ref.digest, "node %c's digest differs", 'a' + i);
    }
}

TestSuite(mesh, .init = setup, .fini = teardown, .timeout = 600);

Test(mesh, three_daemons_converge)
{
    make_nodes(3, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(nh_write_ops(daemons[i].dir, 1000, NULL), MESH_OK, "%s", mesh_errmsg());
    char peers_b[160], peers_c[160];
    snprintf(peers_b, sizeof peers_b, "%s", daemons[0].endpoint);
    snprintf(peers_c, sizeof peers_c, "%s,%s", daemons[0].endpoint, daemons[1].endpoint);
    start(0, NULL);
    start(1, peers_b);
    start(2, peers_c);
    bool ok = wait_converged(7, 3000, CONVERGE_MS);
    if (!ok) dump_logs();
    cr_assert(ok, "the three daemons did not converge on 3000 ops");
    assert_same_digest(7, 3000);

    /* A write by `meshsync put` while the daemons run reaches the others on its own. */
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "echo '{\"memberCount\":2}' | %s put household --data %s >/dev/null", MESH_CLI,
             daemons[2].dir);
    cr_assert_eq(system(cmd), 0);
    ok = wait_converged(7, 3001, 20000);
    if (!ok) dump_logs();
    cr_assert(ok, "a put on node c did not reach a and b");
    assert_same_digest(7, 3001);

    /* `meshsync peers` and `status` show the per-peer figures from the daemon. */
    snprintf(cmd, sizeof cmd, "%s peers --json --data %s", MESH_CLI, daemons[0].dir);
    FILE *p = popen(cmd, "r");
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_assert_eq(pclose(p), 0);
    json_error_t je;
    json_t *o = json_loads(buf, 0, &je);
    cr_assert_not_null(o, "peers --json printed: %s", buf);
    cr_assert(json_is_true(json_object_get(o, "running")));
    json_t *peers = json_object_get(o, "peers");
    cr_assert_eq(json_array_size(peers), 2, "node a knows %zu peers", json_array_size(peers));
    uint64_t received = 0;
    size_t i;
    json_t *e;
    json_array_foreach(peers, i, e) {
        received += (uint64_t)json_integer_value(json_object_get(e, "ops_received"));
        cr_assert(json_integer_value(json_object_get(e, "last_sync_ms")) > 0);
    }
    cr_assert_eq(received, 2001, "node a received %llu ops in all", (unsigned long long)received);
    json_decref(o);

    /* Clean shutdown on SIGTERM: exit status 0. */
    for (int k = 0; k < 3; k++) {
        int st = nh_daemon_stop(&daemons[k], SIGTERM);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon %c did not exit cleanly", 'a' + k);
    }
}

Test(mesh, multi_hop_relay)
{
    /* A-B and B-C meet; A and C never do. */
    make_nodes(3, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(nh_write_ops(daemons[i].dir, 300, NULL), MESH_OK, "%s", mesh_errmsg());
    start(0, NULL);
    start(1, daemons[0].endpoint);
    start(2, daemons[1].endpoint);
    bool ok = wait_converged(7, 900, CONVERGE_MS);
    if (!ok) dump_logs();
    cr_assert(ok, "C did not get A's ops through B");
    assert_same_digest(7, 900);
    /* A and C never connected: neither log names the other's key. */
    char ka[9], kc[9];
    memcpy(ka, keys[0], 8);
    ka[8] = '\0';
    memcpy(kc, keys[2], 8);
    kc[8] = '\0';
    cr_assert(!nh_file_contains(daemons[0].log, kc), "A talked to C");
    cr_assert(!nh_file_contains(daemons[2].log, ka), "C talked to A");
}

Test(mesh, kill9_mid_transfer)
{
    const uint64_t big = 200000;
    make_nodes(2, 2);
    cr_assert_eq(nh_write_ops(daemons[0].dir, big, NULL), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(nh_write_ops(daemons[1].dir, 10, NULL), MESH_OK, "%s", mesh_errmsg());
    start(0, NULL);
    start(1, daemons[0].endpoint);
    /* Kill B as soon as it has stored part of A's ops. */
    uint64_t deadline = nh_now_ms() + 60000, seen = 0;
    while (nh_now_ms() < deadline) {
        nh_counts c;
        if (nh_counts_get(daemons[1].dir, &c) == MESH_OK) seen = c.ops;
        if (seen > 10) break;
        nh_sleep_ms(5);
    }
    nh_daemon_stop(&daemons[1], SIGKILL);
    nh_counts mid;
    cr_assert_eq(nh_counts_get(daemons[1].dir, &mid), MESH_OK);
    cr_assert(mid.ops > 10, "B stored nothing before the kill");
    cr_log_info("B held %llu of %llu ops when killed", (unsigned long long)mid.ops,
                (unsigned long long)(big + 10));
    if (mid.ops >= big + 10) cr_log_warn("the transfer finished before the kill");
    start(1, daemons[0].endpoint);
    bool ok = wait_converged(3, big + 10, CONVERGE_MS);
    if (!ok) dump_logs();
    cr_assert(ok, "A and B did not converge after B's restart");
    assert_same_digest(3, big + 10);
}

Test(mesh, key_not_on_roster_is_refused)
{
    /* a and b are the team; d knows a's key and address but is not on a's roster. */
    make_nodes(3, 2);
    cr_assert_eq(nh_write_ops(daemons[0].dir, 50, NULL), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(nh_write_ops(daemons[2].dir, 5, NULL), MESH_OK, "%s", mesh_errmsg());
    /* d's own roster lists a and d, so d would admit a: the refusal must come from a. */
    char path[300];
    snprintf(path, sizeof path, "%s/roster", daemons[2].dir);
    const char *dk[2] = {keys[0], keys[2]};
    cr_assert_eq(nh_write_roster(path, dk, 2), 0);
    start(0, NULL);
    char spec[200];
    snprintf(spec, sizeof spec, "%s@%s", keys[0], daemons[0].endpoint);
    start(2, spec);
    /* Give d time to try (and a to refuse) several times. */
    uint64_t deadline = nh_now_ms() + 15000;
    while (nh_now_ms() < deadline && !nh_file_contains(daemons[0].log, "refused a connection"))
        nh_sleep_ms(100);
    nh_sleep_ms(1500);
    if (!nh_file_contains(daemons[0].log, "refused a connection")) dump_logs();
    cr_assert(nh_file_contains(daemons[0].log, "refused a connection"), "a did not log a refusal");
    cr_assert(nh_file_contains(daemons[2].log, "refused our key"), "d did not report the refusal");
    nh_counts a, d;
    cr_assert_eq(nh_counts_get(daemons[0].dir, &a), MESH_OK);
    cr_assert_eq(nh_counts_get(daemons[2].dir, &d), MESH_OK);
    cr_assert_eq(a.ops, 50, "a received ops from d");
    cr_assert_eq(d.ops, 5, "d learned %llu ops from a", (unsigned long long)d.ops - 5);
    /* A one-shot `meshsync sync` from d fails too, with a clear exit code. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s sync --data %s --peer %s --timeout 3 2>/dev/null", MESH_CLI,
             daemons[2].dir, spec);
    nh_daemon_stop(&daemons[2], SIGTERM);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "sync from d succeeded");
    cr_assert_eq(nh_counts_get(daemons[2].dir, &d), MESH_OK);
    cr_assert_eq(d.ops, 5);
}

/* Replaces every occurrence of `from` by `to` (same length) in a file. */
static int patch_file(const char *path, const char *from, const char *to)
{
    FILE *f = fopen(path, "r+b");
    if (f == NULL) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len);
    if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        fclose(f);
        return -1;
    }
    size_t n = strlen(from);
    int hits = 0;
    for (long i = 0; i + (long)n <= len; i++)
        if (memcmp(buf + i, from, n) == 0) {
            memcpy(buf + i, to, n);
            hits++;
        }
    fseek(f, 0, SEEK_SET);
    fwrite(buf, 1, (size_t)len, f);
    free(buf);
    fclose(f);
    return hits;
}

Test(mesh, bad_signature_rejected_and_stream_cut)
{
    /* m (a team member whose store was tampered with on disk) holds 10 ops; the body of its
     * 5th op was edited after signing, so its signature no longer verifies and op 6's link
     * to it is broken. r must keep ops 1-4 and nothing after. */
    make_nodes(2, 2);
    cr_assert_eq(nh_write_marked_ops(daemons[0].dir, 10, "tamper"), MESH_OK, "%s", mesh_errmsg());
    char mdb[400];
    snprintf(mdb, sizeof mdb, "%s/store/data.mdb", daemons[0].dir);
    int hits = patch_file(mdb, "tamper-0005", "tamper-9995");
    cr_assert(hits >= 1, "the marker was not found in %s", mdb);
    start(0, NULL);
    start(1, daemons[0].endpoint);
    uint64_t deadline = nh_now_ms() + 30000;
    nh_counts r = {0};
    while (nh_now_ms() < deadline) {
        if (nh_file_contains(daemons[1].log, "rejected")) break;
        nh_sleep_ms(100);
    }
    nh_sleep_ms(1000);
    cr_assert_eq(nh_counts_get(daemons[1].dir, &r), MESH_OK);
    if (r.ops != 4) dump_logs();
    cr_assert_eq(r.ops, 4, "r holds %llu ops of m's stream, expected 4", (unsigned long long)r.ops);
    cr_assert(nh_file_contains(daemons[1].log, "rejected"), "r did not report the rejection");
    /* The rejection shows in `meshsync peers` as the peer's last error. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s peers --json --data %s", MESH_CLI, daemons[1].dir);
    FILE *p = popen(cmd, "r");
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    pclose(p);
    cr_assert(strstr(buf, "rejected") != NULL, "peers does not show the rejection: %s", buf);
}

Test(mesh, loopback_broadcast_discovery)
{
    /* No --peer, no cache: three daemons on one host find each other by beacons broadcast on
     * the loopback network (127.255.255.255; the discovery port is shared by all three). */
    make_nodes(3, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(nh_write_ops(daemons[i].dir, 100, NULL), MESH_OK, "%s", mesh_errmsg());
    char dport[16];
    snprintf(dport, sizeof dport, "%u", (unsigned)nh_free_port());
    for (int i = 0; i < 3; i++) {
        const char *extra[] = {"--broadcast", "127.255.255.255", "--discovery-port", dport,
                               "--beacon-interval", "1", "--log-level", "debug", NULL};
        cr_assert_eq(nh_daemon_start(&daemons[i], NULL, MESH_CLI, "127.0.0.1", extra), 0);
    }
    bool ok = wait_converged(7, 300, 60000);
    if (!ok) dump_logs();
    cr_assert(ok, "the daemons did not find each other by loopback broadcast");
    assert_same_digest(7, 300);
    for (int i = 0; i < 3; i++) {
        uint64_t deadline = nh_now_ms() + 10000;
        while (nh_now_ms() < deadline && !nh_file_contains(daemons[i].log, "(LAN beacon)"))
            nh_sleep_ms(100);
        cr_assert(nh_file_contains(daemons[i].log, "(LAN beacon)"), "node %c heard no beacon",
                  'a' + i);
    }
}
