/*
 * netns_test.c - three daemons in their own network namespaces on a bridge (all made here, in a
 * fourth namespace, so nothing touches the host's interfaces) find each other by LAN broadcast
 * alone (no --peer, no cache) and converge; then again from scratch with nftables dropping 5% of
 * packets at random in every direction.
 *
 * Needs root, iproute2 and (for the drop phase) nftables. Where namespaces cannot be made the
 * test skips and says why. Namespaces are removed at the end, also when the test fails.
 * Traffic stays inside the test's own namespaces (10.99.0.0/24).
 */
#include <criterion/criterion.h>

#include "integration/net_helpers.h"

#define NS_NODES 3

static char base[64];
static char ns[NS_NODES + 1][32];   /* [NS_NODES] is the bridge's namespace */
static nh_daemon daemons[NS_NODES];
static char keys[NS_NODES][MESH_KEY_STR_LEN];
static bool exists[NS_NODES + 1];  /* namespaces created, to remove in teardown */

/* Runs a shell command quietly; returns its exit status (or -1). */
static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[1100];
    snprintf(full, sizeof full, "%s >/dev/null 2>&1", cmd);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void teardown(void)
{
    for (int i = 0; i < NS_NODES; i++)
        if (daemons[i].pid > 0) nh_daemon_stop(&daemons[i], SIGKILL);
    for (int i = 0; i <= NS_NODES; i++)
        if (exists[i]) sh("ip netns del %s", ns[i]);
    memset(exists, 0, sizeof exists);
    if (base[0] && getenv("MESH_TEST_KEEP") == NULL) nh_rm_rf(base);
}

static void dump_logs(void)
{
    for (int i = 0; i < NS_NODES; i++)
        if (daemons[i].log[0]) nh_dump(daemons[i].log);
}

/* Why namespaces cannot be made here, or NULL if they can. */
static const char *cannot_make_namespaces(void)
{
    if (geteuid() != 0) return "not running as root: network namespaces need CAP_SYS_ADMIN";
    if (sh("ip -V") != 0) return "iproute2 ('ip') is not installed";
    char probe[32];
    snprintf(probe, sizeof probe, "msnprobe%d", (int)getpid());
    if (sh("ip netns add %s", probe) != 0)
        return "'ip netns add' failed: this kernel or container does not allow network namespaces";
    sh("ip netns del %s", probe);
    return NULL;
}

static void make_network(void)
{
    for (int i = 0; i <= NS_NODES; i++)
        snprintf(ns[i], sizeof ns[i], "msn%d%c", (int)getpid() % 100000,
                 i < NS_NODES ? 'a' + i : 'z');
    const char *br = ns[NS_NODES];
    cr_assert_eq(sh("ip netns add %s", br), 0);
    exists[NS_NODES] = true;
    cr_assert_eq(sh("ip -n %s link add br0 type bridge", br), 0);
    cr_assert_eq(sh("ip -n %s link set br0 up", br), 0);
    for (int i = 0; i < NS_NODES; i++) {
        cr_assert_eq(sh("ip netns add %s", ns[i]), 0);
        exists[i] = true;
        /* veth pair created straight between the node's and the bridge's namespaces. */
        cr_assert_eq(sh("ip -n %s link add eth0 type veth peer name p%d netns %s", ns[i], i, br),
                     0);
        cr_assert_eq(sh("ip -n %s link set p%d master br0", br, i), 0);
        cr_assert_eq(sh("ip -n %s link set p%d up", br, i), 0);
        cr_assert_eq(sh("ip -n %s addr add 10.99.0.%d/24 dev eth0", ns[i], i + 1), 0);
        cr_assert_eq(sh("ip -n %s link set eth0 up", ns[i]), 0);
        cr_assert_eq(sh("ip -n %s link set lo up", ns[i]), 0);
    }
}

static void start_all(void)
{
    for (int i = 0; i < NS_NODES; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.99.0.%d", i + 1);
        const char *prefix[] = {"ip", "netns", "exec", ns[i], NULL};
        const char *extra[] = {"--broadcast", "10.99.0.255", "--beacon-interval", "1",
                               "--log-level", "debug", NULL};
        daemons[i].port = 47200;
        cr_assert_eq(nh_daemon_start(&daemons[i], prefix, MESH_CLI, host, extra), 0);
    }
}

static void stop_all(void)
{
    for (int i = 0; i < NS_NODES; i++) nh_daemon_stop(&daemons[i], SIGTERM);
}

static bool wait_converged(uint64_t ops, unsigned timeout_ms)
{
    uint64_t deadline = nh_now_ms() + timeout_ms;
    while (nh_now_ms() < deadline) {
        nh_counts c[NS_NODES];
        bool same = true;
        for (int i = 0; i < NS_NODES && same; i++)
            same = nh_counts_get(daemons[i].dir, &c[i]) == MESH_OK && c[i].ops == ops &&
                   (i == 0 || strcmp(c[i].digest, c[0].digest) == 0);
        if (same) return true;
        nh_sleep_ms(200);
    }
    return false;
}

/* Forgets every peer each node learned, so the next start relies on broadcast alone. */
static void forget_peers(void)
{
    for (int i = 0; i < NS_NODES; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/peers.json", daemons[i].dir);
        unlink(path);
    }
}

TestSuite(netns, .fini = teardown, .timeout = 600);

Test(netns, broadcast_discovery_converges_also_with_5pct_drop)
{
    const char *why = cannot_make_namespaces();
    if (why) cr_skip_test("network namespaces cannot be made here: %s", why);
    snprintf(base, sizeof base, "/tmp/meshns-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
    make_network();
    const char *ks[NS_NODES];
    for (int i = 0; i < NS_NODES; i++) {
        snprintf(daemons[i].dir, sizeof daemons[i].dir, "%s/n%c", base, 'a' + i);
        cr_assert_eq(nh_init_node(daemons[i].dir, keys[i]), MESH_OK, "%s", mesh_errmsg());
        ks[i] = keys[i];
        cr_assert_eq(nh_write_ops(daemons[i].dir, 500, NULL), MESH_OK, "%s", mesh_errmsg());
    }
    for (int i = 0; i < NS_NODES; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/roster", daemons[i].dir);
        cr_assert_eq(nh_write_roster(path, ks, NS_NODES), 0);
    }

    /* Phase 1: a clean LAN. No --peer and no cache: beacons are the only way to meet. */
    start_all();
    bool ok = wait_converged(3 * 500, 90000);
    if (!ok) dump_logs();
    cr_assert(ok, "the three namespaced daemons did not converge by broadcast discovery");
    /* Every node hears the others' beacons (one may have converged through sessions the
     * others started before its first beacon arrived: give it a few beacon intervals). */
    for (int i = 0; i < NS_NODES; i++) {
        uint64_t deadline = nh_now_ms() + 10000;
        while (nh_now_ms() < deadline && !nh_file_contains(daemons[i].log, "(LAN beacon)"))
            nh_sleep_ms(100);
        cr_assert(nh_file_contains(daemons[i].log, "(LAN beacon)"),
                  "node %c found no peer by beacon", 'a' + i);
    }
    stop_all();

    /* Phase 2: 5% of packets dropped at random, in and out, on every node; peers forgotten;
     * 500 more ops each. */
    if (sh("nft --version") != 0) {
        cr_log_warn("nft is not installed: the 5%% drop phase was not run");
        return;
    }
    for (int i = 0; i < NS_NODES; i++) {
        cr_assert_eq(sh("ip netns exec %s nft add table inet meshdrop", ns[i]), 0);
        cr_assert_eq(sh("ip netns exec %s nft 'add chain inet meshdrop in { type filter hook "
                        "input priority 0; policy accept; }'", ns[i]), 0);
        cr_assert_eq(sh("ip netns exec %s nft 'add chain inet meshdrop out { type filter hook "
                        "output priority 0; policy accept; }'", ns[i]), 0);
        cr_assert_eq(sh("ip netns exec %s nft add rule inet meshdrop in iifname eth0 numgen "
                        "random mod 100 '<' 5 counter drop", ns[i]), 0);
        cr_assert_eq(sh("ip netns exec %s nft add rule inet meshdrop out oifname eth0 numgen "
                        "random mod 100 '<' 5 counter drop", ns[i]), 0);
        cr_assert_eq(nh_write_ops(daemons[i].dir, 2000, NULL), MESH_OK, "%s", mesh_errmsg());
    }
    forget_peers();
    start_all();
    ok = wait_converged(3 * 2500, 180000);
    if (!ok) dump_logs();
    cr_assert(ok, "the daemons did not converge with 5%% packet drop");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ip netns exec %s nft list table inet meshdrop", ns[0]);
    FILE *p = popen(cmd, "r");
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    pclose(p);
    cr_assert(strstr(buf, "numgen random mod 100 < 5") != NULL, "drop rule missing: %s", buf);
    cr_log_info("node a's drop rules after the sync:\n%s", buf);
    stop_all();
}
