/*
 * team_test.c - the team roster, access control, partial replication and at-rest encryption,
 * end to end with the real binary (MESH_CLI): daemons (`meshsync run`) and one-shot syncs over
 * loopback with CURVE, teams made with `meshsync team`, stores inspected afterwards.
 *
 *   - an outsider with a valid install (even one that knows the team's authority key) but no
 *     roster entry is refused, finds nobody by the team's beacons, and receives nothing;
 *   - a field device of locality L01 never holds an op of L02 after syncing with a district
 *     supervisor that holds both; a member that sends one anyway has it rejected;
 *   - a removal reaches a peer by gossip; the removed device is then refused there, and what it
 *     signed after its removal is rejected by every node, also by one that had taken it;
 *   - a forged roster and a rolled-back roster are rejected with a clear log line;
 *   - a daemon running under a roster file takes up a team its node joins meanwhile, with the
 *     roster the node already held from its syncs;
 *   - with at-rest encryption the LMDB file holds no plaintext of a known body string.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdarg.h>

#include "integration/net_helpers.h"
#include "model/team.h"
#include "store/team.h"

#define WAIT_MS 60000u
#define ROOT "MZ/N/E"
#define L01 "MZ/N/E/L01"
#define L02 "MZ/N/E/L02"

enum { S, A, B, D, O, R, NN };  /* supervisor+authority, field devices, outsider, rogue */
static const char NAMES[NN] = {'s', 'a', 'b', 'd', 'o', 'r'};

static char base[64];
static nh_daemon dm[NN];
static char key[NN][MESH_KEY_STR_LEN];
static char auth[MESH_KEY_STR_LEN];

static void setup(void)
{
    snprintf(base, sizeof base, "/tmp/meshteam-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
    memset(dm, 0, sizeof dm);
    memset(key, 0, sizeof key);
    for (int i = 0; i < NN; i++) {
        snprintf(dm[i].dir, sizeof dm[i].dir, "%s/%c", base, NAMES[i]);
        dm[i].port = nh_free_port();
        snprintf(dm[i].endpoint, sizeof dm[i].endpoint, "tcp://127.0.0.1:%u",
                 (unsigned)dm[i].port);
    }
}

static void teardown(void)
{
    for (int i = 0; i < NN; i++)
        if (dm[i].pid > 0) nh_daemon_stop(&dm[i], SIGKILL);
    if (getenv("MESH_TEST_KEEP") == NULL) nh_rm_rf(base);
}

TestSuite(team, .init = setup, .fini = teardown, .timeout = 600);

static void dump_logs(void)
{
    for (int i = 0; i < NN; i++)
        if (dm[i].log[0]) nh_dump(dm[i].log);
}

/* Runs a shell command line (printf-formatted; MESH_CLI is "$M"), stdout and stderr into `out`.
 * Returns the exit status. setsid keeps the command off any terminal (no passphrase prompt). */
static int sh(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "M=%s; exec 2>&1 </dev/null; ", MESH_CLI);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    /* Through a script file: the command lines quote JSON bodies. */
    char script[300], full[400];
    snprintf(script, sizeof script, "%s/cmd.sh", base);
    FILE *sf = fopen(script, "w");
    cr_assert_not_null(sf);
    fputs(cmd, sf);
    fclose(sf);
    snprintf(full, sizeof full, "setsid -w sh %s", script);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    char sink[256];
    char *buf = out ? out : sink;
    size_t bcap = out ? cap : sizeof sink, len = 0;
    for (;;) {
        size_t got = fread(buf + len, 1, bcap - 1 - len, p);
        if (got == 0) break;
        len += got;
        if (len == bcap - 1) {
            if (out) break;
            len = 0;  /* not kept: read on */
        }
    }
    buf[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#define SH_OK(...)                                                                                 \
    do {                                                                                           \
        char o_[8192];                                                                             \
        int rc_ = sh(o_, sizeof o_, __VA_ARGS__);                                                  \
        cr_assert_eq(rc_, 0, "exit %d: %s", rc_, o_);                                              \
    } while (0)

/* `meshsync init` for node i, then its key. `team` may be NULL. */
static void node_init(int i, const char *scope, const char *team)
{
    char out[4096];
    int rc = sh(out, sizeof out, "$M init --data %s --scope %s %s %s", dm[i].dir, scope,
                team ? "--team" : "", team ? team : "");
    cr_assert_eq(rc, 0, "init %c: %s", NAMES[i], out);
    rc = sh(out, sizeof out, "$M identity --no-qr --data %s", dm[i].dir);
    cr_assert_eq(rc, 0, "identity %c: %s", NAMES[i], out);
    cr_assert_eq(strlen(out), 65, "identity printed: %s", out);
    memcpy(key[i], out, 64);
    key[i][64] = '\0';
}

/* Node S makes the team (root ROOT) and is its authority. */
static void team_create(void)
{
    node_init(S, ROOT, NULL);
    char out[4096];
    int rc = sh(out, sizeof out, "$M team create --root %s --json --data %s", ROOT, dm[S].dir);
    cr_assert_eq(rc, 0, "team create: %s", out);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    cr_assert_not_null(o, "team create printed: %s", out);
    snprintf(auth, sizeof auth, "%s", json_string_value(json_object_get(o, "authority")));
    json_decref(o);
    cr_assert_eq(strlen(auth), 64);
}

static void team_add(int i, const char *role, const char *scope)
{
    SH_OK("$M team add meshsync:%s --role %s --scope %s --data %s", key[i], role, scope,
          dm[S].dir);
}

static void start(int i, const char *const *more)
{
    const char *extra[24] = {"--no-discovery", "--log-level", "debug", NULL};
    size_t n = 3;
    for (size_t k = 0; more && more[k] && n < 22; k++) extra[n++] = more[k];
    extra[n] = NULL;
    cr_assert_eq(nh_daemon_start(&dm[i], NULL, MESH_CLI, "127.0.0.1", extra), 0);
}

/* "KEY@tcp://127.0.0.1:PORT" of node i. */
static const char *spec(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s@%s", key[i], dm[i].endpoint);
    return buf;
}

/* A one-shot `meshsync sync` of node i with node j (which runs a daemon). */
static int sync_with(int i, int j, char *out, size_t cap)
{
    char sp[200];
    return sh(out, cap, "$M sync --data %s --peer %s --timeout 10 --json", dm[i].dir,
              spec(j, sp, sizeof sp));
}

/* ---- Looking into a node's store (beside its daemon, as LMDB allows) ---- */

typedef struct probe {
    uint8_t author[32];
    const char *scope;
    uint64_t seq;          /* stream (author, scope) */
    const char *within;    /* count streams whose scope lies within this, authority excluded */
    uint8_t authority[32];
    bool has_team;
    size_t nwithin;
    uint64_t version;
} probe;

static int probe_stream(const mesh_stream *st, void *ctx)
{
    probe *p = ctx;
    if (p->within && mesh_scope_within(st->scope, st->scope_len, p->within, strlen(p->within)) &&
        !(p->has_team && memcmp(st->author, p->authority, 32) == 0))
        p->nwithin++;
    return MESH_OK;
}

static int probe_fn(mesh_txn *t, void *ctx)
{
    probe *p = ctx;
    p->has_team = mesh_store_team_get(t, p->authority) == MESH_OK;
    int rc = mesh_store_roster_version(t, &p->version);
    if (rc == MESH_OK && p->scope) {
        mesh_stream st;
        rc = mesh_store_stream_get(t, mesh_stream_id(p->author, p->scope, strlen(p->scope)), &st);
        p->seq = rc == MESH_OK ? st.seq : 0;
        if (rc == MESH_ENOTFOUND) rc = MESH_OK;
    }
    if (rc == MESH_OK && p->within) rc = mesh_store_streams(t, probe_stream, p);
    return rc;
}

static void do_probe(int i, probe *p)
{
    mesh_node *n = NULL;
    cr_assert_eq(mesh_node_open(dm[i].dir, NULL, &n), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(mesh_store_read(n->store, probe_fn, p), MESH_OK, "%s", mesh_errmsg());
    mesh_node_close(n);
}

/* The seq node i holds of stream (author = node `who`, scope). */
static uint64_t held(int i, int who, const char *scope)
{
    probe p = {.scope = scope};
    mesh_hex_decode(key[who], p.author, 32);
    do_probe(i, &p);
    return p.seq;
}

static size_t streams_within(int i, const char *scope)
{
    probe p = {.within = scope};
    do_probe(i, &p);
    return p.nwithin;
}

static uint64_t roster_version(int i)
{
    probe p = {0};
    do_probe(i, &p);
    return p.version;
}

/* Waits until node i's daemon has taken up roster `version` (its log says so). */
static bool wait_roster(int i, uint64_t version)
{
    char line[64];
    snprintf(line, sizeof line, "team roster version %llu:", (unsigned long long)version);
    uint64_t deadline = nh_now_ms() + WAIT_MS;
    while (nh_now_ms() < deadline) {
        if (nh_file_contains(dm[i].log, line)) return true;
        nh_sleep_ms(50);
    }
    return false;
}

static uint64_t ops(int i)
{
    nh_counts c;
    cr_assert_eq(nh_counts_get(dm[i].dir, &c), MESH_OK, "%s", mesh_errmsg());
    return c.ops;
}

static bool wait_held(int i, int who, const char *scope, uint64_t seq)
{
    uint64_t deadline = nh_now_ms() + WAIT_MS;
    while (nh_now_ms() < deadline) {
        if (held(i, who, scope) == seq) return true;
        nh_sleep_ms(100);
    }
    return false;
}

static bool wait_log(int i, const char *needle)
{
    uint64_t deadline = nh_now_ms() + WAIT_MS;
    while (nh_now_ms() < deadline) {
        if (nh_file_contains(dm[i].log, needle)) return true;
        nh_sleep_ms(100);
    }
    return false;
}

/* ---- Joining while running ---- */

Test(team, a_running_daemon_takes_up_a_team_joined_while_it_runs)
{
    team_create();
    /* a runs in no team, with a roster file naming s; it joins s's team only later. */
    node_init(A, L01, NULL);
    team_add(A, "field", L01);
    char roster[300];
    snprintf(roster, sizeof roster, "%s/roster", dm[A].dir);
    const char *rk[1] = {key[S]};
    cr_assert_eq(nh_write_roster(roster, rk, 1), 0);
    cr_assert_eq(nh_write_ops(dm[S].dir, 5, "district-data"), MESH_OK, "%s", mesh_errmsg());
    char sp[200];
    const char *const a_peer[] = {"--peer", spec(S, sp, sizeof sp), NULL};
    start(S, NULL);
    start(A, a_peer);
    cr_assert_eq(roster_version(A), 0);
    bool held_all = wait_held(A, S, ROOT, 5);
    if (!held_all) dump_logs();
    cr_assert(held_all, "a did not sync with s under its roster file");

    /* a already holds the authority's stream, rosters included, from its syncs with s: they
     * apply as soon as it joins. */
    char out[4096];
    int rc = sh(out, sizeof out, "$M team join meshsync:%s --data %s", auth, dm[A].dir);
    cr_assert_eq(rc, 0, "team join: %s", out);
    cr_assert(strstr(out, "already held the team's roster (version 2") != NULL, "%s", out);
    cr_assert_eq(roster_version(A), 2);
    bool ok = wait_log(A, "joined the team of authority") && wait_roster(A, 2);
    if (!ok) dump_logs();
    cr_assert(ok, "a's daemon did not take up the team it joined");
    /* Under the team's rules a holds what its scope lets it: the authority's roster stream and
     * s's district data (ROOT contains L01), and s takes a's locality ops. */
    cr_assert_eq(nh_write_ops(dm[A].dir, 3, "locality-data"), MESH_OK, "%s", mesh_errmsg());
    ok = wait_held(A, S, ROOT, 5) && wait_held(S, A, L01, 3);
    if (!ok) dump_logs();
    cr_assert(ok, "a and s did not sync under the team");
}

/* ---- Outsiders ---- */

Test(team, outsider_is_refused_learns_nothing_and_receives_nothing)
{
    team_create();
    node_init(A, L01, auth);
    /* The outsider runs meshsync and even knows the team's authority key: what it lacks is a
     * roster entry. */
    node_init(O, L01, auth);
    team_add(A, "field", L01);
    cr_assert_eq(nh_write_ops(dm[S].dir, 20, "district-data"), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(nh_write_ops(dm[A].dir, 10, "locality-data"), MESH_OK, "%s", mesh_errmsg());
    cr_assert_eq(nh_write_ops(dm[O].dir, 7, "outsider-data"), MESH_OK, "%s", mesh_errmsg());

    /* Every node beacons on the loopback network; a and o also dial s by its key. */
    char dport[16], sp[200];
    snprintf(dport, sizeof dport, "%u", (unsigned)nh_free_port());
    spec(S, sp, sizeof sp);
    const char *const bc[] = {"--broadcast", "127.255.255.255", "--discovery-port", dport,
                              "--beacon-interval", "1", "--log-level", "debug", NULL};
    const char *const bc_peer[] = {"--broadcast", "127.255.255.255", "--discovery-port", dport,
                                   "--beacon-interval", "1", "--log-level", "debug", "--peer",
                                   sp, NULL};
    cr_assert_eq(nh_daemon_start(&dm[S], NULL, MESH_CLI, "127.0.0.1", bc), 0);
    cr_assert_eq(nh_daemon_start(&dm[A], NULL, MESH_CLI, "127.0.0.1", bc_peer), 0);
    cr_assert_eq(nh_daemon_start(&dm[O], NULL, MESH_CLI, "127.0.0.1", bc_peer), 0);

    /* s and a converge: 20 + 10 ops and the two roster versions. */
    bool ok = wait_held(A, S, ROOT, 20) && wait_held(S, A, L01, 10);
    if (!ok) dump_logs();
    cr_assert(ok, "the members did not sync");
    /* The members hear each other's beacons: s learnt a's address from one. */
    ok = wait_log(S, "(LAN beacon)");
    if (!ok) dump_logs();
    cr_assert(ok, "s found no member by its beacons");
    ok = wait_log(S, "refused a connection") && wait_log(O, "refused our key");
    if (!ok) dump_logs();
    cr_assert(ok, "s did not refuse the outsider");
    nh_sleep_ms(3000);  /* a few more beacons and retries */

    cr_assert(!nh_file_contains(dm[O].log, "found peer"), "the outsider found a peer");
    cr_assert(!nh_file_contains(dm[O].log, "synced with"), "the outsider synced");
    cr_assert_eq(ops(O), 7, "the outsider received %llu ops", (unsigned long long)ops(O) - 7);
    cr_assert_eq(held(S, O, L01), 0, "s took the outsider's ops");
    cr_assert_eq(held(A, O, L01), 0, "a took the outsider's ops");
    cr_assert_eq(ops(S), 20 + 10 + 2);
    cr_assert_eq(ops(A), 20 + 10 + 2);
    /* `meshsync peers` on s lists a, never o. */
    char out[16384];
    cr_assert_eq(sh(out, sizeof out, "$M peers --json --data %s", dm[S].dir), 0, "%s", out);
    cr_assert(strstr(out, key[A]) != NULL, "s does not list a: %s", out);
    cr_assert(strstr(out, key[O]) == NULL, "s lists the outsider: %s", out);
}

/* ---- Partial replication ---- */

Test(team, a_locality_never_holds_another_localitys_ops)
{
    team_create();
    node_init(A, L01, auth);
    node_init(B, L02, auth);
    team_add(A, "field", L01);
    team_add(B, "field", L02);
    cr_assert_eq(nh_write_ops(dm[A].dir, 10, "locality-X-household"), MESH_OK, "%s",
                 mesh_errmsg());
    cr_assert_eq(nh_write_ops(dm[B].dir, 12, "locality-Y-household"), MESH_OK, "%s",
                 mesh_errmsg());
    cr_assert_eq(nh_write_ops(dm[S].dir, 5, "district-household"), MESH_OK, "%s", mesh_errmsg());
    start(S, NULL);
    /* Each device's first sync brings it the roster, the second sends its own ops. */
    char out[16384];
    int order[] = {A, B, A, B, A};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        int rc = sync_with(order[k], S, out, sizeof out);
        if (rc != 0) dump_logs();
        cr_assert_eq(rc, 0, "sync of %c: %s", NAMES[order[k]], out);
        /* s never offers a device a stream it may not hold: nothing is rejected. */
        cr_assert(strstr(out, "\"ops_rejected\": 0") != NULL, "sync of %c: %s",
                  NAMES[order[k]], out);
    }
    /* The district supervisor holds both localities. */
    cr_assert_eq(held(S, A, L01), 10);
    cr_assert_eq(held(S, B, L02), 12);
    /* Each locality holds its own, the district's and nothing of the other. */
    cr_assert_eq(held(A, A, L01), 10);
    cr_assert_eq(held(A, S, ROOT), 5, "district-level data flows down");
    cr_assert_eq(held(B, S, ROOT), 5);
    cr_assert_eq(streams_within(A, L02), 0, "a holds an op of L02");
    cr_assert_eq(streams_within(B, L01), 0, "b holds an op of L01");
    cr_assert_eq(sh(out, sizeof out, "$M list --data %s", dm[A].dir), 0, "%s", out);
    cr_assert(strstr(out, "locality-Y") == NULL, "a lists an entity of L02");
    cr_assert(strstr(out, "locality-X") != NULL && strstr(out, "district-household") != NULL);

    /* A member that sends what the receiver may not hold anyway (r: on the roster for L01, but
     * its own node is in no team and filters nothing) has it rejected. */
    node_init(R, L01, NULL);
    team_add(R, "field", L01);
    char bundle[300];
    snprintf(bundle, sizeof bundle, "%s/b.bundle", base);
    SH_OK("$M export %s --data %s && $M import %s --data %s", bundle, dm[B].dir, bundle,
          dm[R].dir);
    cr_assert_eq(held(R, B, L02), 12);
    char roster[300];
    snprintf(roster, sizeof roster, "%s/roster", dm[R].dir);
    const char *rk[2] = {key[R], key[A]};
    cr_assert_eq(nh_write_roster(roster, rk, 2), 0);
    cr_assert_eq(sync_with(A, S, out, sizeof out), 0, "%s", out);  /* the roster that adds r */
    start(A, NULL);
    int rc = sync_with(R, A, out, sizeof out);
    if (rc != 0) dump_logs();
    cr_assert_eq(rc, 0, "%s", out);
    bool ok = wait_log(A, "which this node may not hold");
    if (!ok) dump_logs();
    cr_assert(ok, "a did not log the rejection");
    cr_assert_eq(streams_within(A, L02), 0, "a took an op of L02 from r");
}

/* ---- Removal ---- */

Test(team, removal_is_gossiped_then_refused_and_later_ops_rejected_everywhere)
{
    team_create();
    node_init(A, L01, auth);
    node_init(D, L01, auth);
    team_add(A, "field", L01);
    team_add(D, "field", L01);
    char sp[200], out[16384];
    const char *const a_peer[] = {"--peer", spec(S, sp, sizeof sp), NULL};
    start(S, NULL);
    start(A, a_peer);
    bool ok = wait_roster(A, 3);
    if (!ok) dump_logs();
    cr_assert(ok, "a did not get the roster");
    /* d writes 5 ops and syncs with a only; a passes them on to s. */
    cr_assert_eq(nh_write_ops(dm[D].dir, 5, "before-removal"), MESH_OK, "%s", mesh_errmsg());
    for (int k = 0; k < 2; k++) {
        int rc = sync_with(D, A, out, sizeof out);
        if (rc != 0) dump_logs();
        cr_assert_eq(rc, 0, "%s", out);
    }
    ok = wait_held(S, D, L01, 5);
    if (!ok) dump_logs();
    cr_assert(ok, "d's ops did not reach s through a");

    /* The device is lost. The supervisor removes it while its own daemon is down, so a does
     * not learn of it yet. */
    nh_daemon_stop(&dm[S], SIGTERM);
    SH_OK("$M team remove %s --data %s", key[D], dm[S].dir);
    cr_assert_eq(roster_version(S), 4);
    cr_assert_eq(sh(out, sizeof out, "$M team show --json --data %s", dm[S].dir), 0);
    cr_assert(strstr(out, "\"seq\":5") != NULL, "d's stream is not closed at 5: %s", out);

    /* Whoever has d writes on; a, which has not heard, takes it. */
    cr_assert_eq(nh_write_ops(dm[D].dir, 3, "after-removal"), MESH_OK, "%s", mesh_errmsg());
    int rc = sync_with(D, A, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_eq(held(A, D, L01), 8);

    /* s comes back; a meets it, learns of the removal and drops what d signed after it; s
     * refuses those ops when a passes them on. */
    start(S, NULL);
    ok = wait_roster(A, 4);
    if (!ok) dump_logs();
    cr_assert(ok, "the removal did not reach a");
    cr_assert_eq(roster_version(A), 4);
    ok = wait_held(A, D, L01, 5);
    if (!ok) dump_logs();
    cr_assert(ok, "a still holds d's ops signed after its removal");
    ok = wait_log(S, "after its author's removal");
    if (!ok) dump_logs();
    cr_assert(ok, "s did not log rejecting d's later ops");
    cr_assert_eq(held(S, D, L01), 5);

    /* d is refused by a now. */
    rc = sync_with(D, A, out, sizeof out);
    cr_assert_neq(rc, 0, "the removed device synced: %s", out);
    ok = wait_log(A, "refused a connection");
    if (!ok) dump_logs();
    cr_assert(ok, "a did not refuse d");
    cr_assert_eq(held(A, D, L01), 5);
    /* s and a hold the same ops. */
    nh_counts cs, ca;
    uint64_t deadline = nh_now_ms() + WAIT_MS;
    do {
        nh_sleep_ms(200);
        cr_assert_eq(nh_counts_get(dm[S].dir, &cs), MESH_OK);
        cr_assert_eq(nh_counts_get(dm[A].dir, &ca), MESH_OK);
    } while (nh_now_ms() < deadline && strcmp(cs.digest, ca.digest) != 0);
    cr_assert_str_eq(cs.digest, ca.digest, "s and a differ");
}

/* ---- Forged and rolled-back rosters ---- */

typedef struct plant {
    mesh_op *op;
    const mesh_identity *signer;
} plant;

static int plant_fn(mesh_txn *t, void *ctx)
{
    plant *p = ctx;
    mesh_op *op = p->op;
    mesh_stream st;
    int rc = mesh_store_stream_get(t, mesh_stream_id(op->author, op->scope, op->scope_len), &st);
    if (rc == MESH_ENOTFOUND) {
        st.seq = 0;
        memset(st.tip, 0, sizeof st.tip);
    } else if (rc != MESH_OK) {
        return rc;
    }
    op->seq = st.seq + 1;
    memcpy(op->prev, st.tip, 32);
    mesh_buf enc;
    mesh_buf_init(&enc, MESH_OP_BYTES_MAX);
    rc = mesh_op_encode(op, &enc);
    uint8_t hash[32], sig[64];
    mesh_op_hash(enc.data, enc.len, hash);
    mesh_sign(p->signer, MESH_DOMAIN_OP, hash, 32, sig);
    mesh_oprec rec = {.op = enc.data, .op_len = enc.len, .sig = sig};
    mesh_ingest_report rep;
    memset(&rep, 0, sizeof rep);
    if (rc == MESH_OK) rc = mesh_store_ingest(t, &rec, 1, MESH_INGEST_ATOMIC, &rep);
    mesh_buf_fini(&enc);
    return rc;
}

/* Appends a `_roster` op of `version` (listing node `who` as supervisor of ROOT) to the stream
 * (signer, scope) in the store of node i, which is in no team and so takes anything. */
static void plant_roster(int i, const mesh_identity *signer, const char *scope, uint32_t version,
                         int who)
{
    mesh_node *n = NULL;
    cr_assert_eq(mesh_node_open(dm[i].dir, NULL, &n), MESH_OK, "%s", mesh_errmsg());
    uint8_t apk[32];
    mesh_hex_decode(auth, apk, 32);
    char json[512];
    snprintf(json, sizeof json, "{\"format\":1,\"members\":[{\"key\":\"%s\",\"role\":"
             "\"supervisor\",\"scopes\":[\"%s\"]}],\"root\":\"%s\",\"version\":%u}",
             key[who], ROOT, ROOT, version);
    mesh_buf body;
    mesh_buf_init(&body, MESH_OP_BYTES_MAX);
    cr_assert_eq(mesh_body_from_json(json, strlen(json), &body), MESH_OK);
    mesh_op op;
    memset(&op, 0, sizeof op);
    op.kind = version == 1 ? MESH_OP_CREATE : MESH_OP_UPDATE;
    op.type = MESH_TYPE_ROSTER;
    op.type_len = strlen(MESH_TYPE_ROSTER);
    mesh_team_roster_entity(apk, op.entity);
    op.row_version = version;
    if (version > 1) {
        op.has_base = true;
        op.base.row_version = version - 1;
        memcpy(op.base.author, apk, 32);
    }
    op.body = body.data;
    op.body_len = body.len;
    op.hlc = (uint64_t)1800000000000ull << 16;
    memcpy(op.author, signer->pk, 32);
    op.scope = scope;
    op.scope_len = strlen(scope);
    plant p = {&op, signer};
    cr_assert_eq(mesh_store_write(n->store, plant_fn, &p), MESH_OK, "%s", mesh_errmsg());
    mesh_buf_fini(&body);
    mesh_node_close(n);
}

Test(team, forged_and_rolled_back_rosters_are_rejected_with_a_clear_log_line)
{
    team_create();
    node_init(A, L01, auth);
    /* Two members whose own nodes check nothing (in no team): rogue relays. */
    node_init(R, L01, NULL);
    node_init(B, L01, NULL);
    team_add(A, "field", L01);
    team_add(R, "field", L01);
    team_add(B, "field", L01);
    char sp[200], out[16384], path[300];
    const char *const a_peer[] = {"--peer", spec(S, sp, sizeof sp), NULL};
    start(S, NULL);
    start(A, a_peer);
    bool ok = wait_roster(A, 4);
    if (!ok) dump_logs();
    cr_assert(ok, "a did not get the roster");
    for (int i = R; i >= B; i -= R - B) {
        char roster[300];
        snprintf(roster, sizeof roster, "%s/roster", dm[i].dir);
        const char *rk[2] = {key[i], key[A]};
        cr_assert_eq(nh_write_roster(roster, rk, 2), 0);
    }

    /* Forged: r signs a roster naming itself supervisor of the district. */
    mesh_identity rid;
    snprintf(path, sizeof path, "%s/identity.key", dm[R].dir);
    cr_assert_eq(mesh_identity_load(path, NULL, &rid, NULL), MESH_OK);
    plant_roster(R, &rid, L01, 9, R);
    int rc = sync_with(R, A, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    ok = wait_log(A, "forged roster: not signed by the team authority");
    if (!ok) dump_logs();
    cr_assert(ok, "a did not log the forged roster");
    cr_assert_eq(roster_version(A), 4);
    mesh_identity_wipe(&rid);

    /* Rolled back: the authority key itself signs version 2 again (a stale copy of the
     * authority's machine, set up with another root, say); b carries it to a. */
    mesh_identity aid;
    snprintf(path, sizeof path, "%s/team-authority.key", dm[S].dir);
    cr_assert_eq(mesh_identity_load(path, NULL, &aid, NULL), MESH_OK);
    plant_roster(B, &aid, L01, 2, B);
    mesh_identity_wipe(&aid);
    /* (b itself refuses a's genuine version 2, which shares the rolled-back op's log key: its
     * sync reports that, and a's log is what counts here.) */
    sync_with(B, A, out, sizeof out);
    ok = wait_log(A, "rolled-back roster: version 2 is not newer than the held version 4");
    if (!ok) dump_logs();
    cr_assert(ok, "a did not log the rolled-back roster");
    cr_assert_eq(roster_version(A), 4);

    /* The same refusals on import, which then stores nothing: exit 8 (not permitted) for the
     * forged roster, 5 (refused by current state) for the rolled-back one. */
    const int who[2] = {R, B};
    const int code[2] = {8, 5};
    const char *const what[2] = {"forged roster", "rolled-back roster"};
    for (int k = 0; k < 2; k++) {
        char bundle[300];
        snprintf(bundle, sizeof bundle, "%s/%c.bundle", base, NAMES[who[k]]);
        SH_OK("$M export %s --data %s", bundle, dm[who[k]].dir);
        uint64_t before = ops(A);
        rc = sh(out, sizeof out, "$M import %s --data %s", bundle, dm[A].dir);
        cr_assert_eq(rc, code[k], "import exited %d: %s", rc, out);
        cr_assert(strstr(out, what[k]) != NULL, "%s", out);
        cr_assert_eq(ops(A), before);
    }
}

/* ---- At rest ---- */

/* True if the file holds `needle`. */
static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = strlen(needle), cap = 1 << 20, len = 0, got;
    char *buf = malloc(cap + n);
    bool found = false;
    while (!found && (got = fread(buf + len, 1, cap, f)) > 0) {
        len += got;
        found = memmem(buf, len, needle, n) != NULL;
        /* keep the last n-1 bytes: a match may straddle two reads */
        size_t keep = len < n ? len : n - 1;
        memmove(buf, buf + len - keep, keep);
        len = keep;
    }
    free(buf);
    fclose(f);
    return found;
}

Test(team, at_rest_encryption_leaves_no_plaintext_in_the_store)
{
    char kf[300], wrong[300], out[16384], mdb[300];
    snprintf(kf, sizeof kf, "%s/e.key", base);
    snprintf(wrong, sizeof wrong, "%s/wrong.key", base);
    /* e: encrypted with a key file; c: in clear. Same kind of body, known strings. */
    SH_OK("$M init --data %s --scope %s --key-file %s", dm[A].dir, L01, kf);
    SH_OK("$M init --data %s --scope %s", dm[B].dir, L01);
    SH_OK("echo '{\"name\":\"AT-REST-SECRET-7731\"}' | $M put household --data %s "
          "--key-file %s", dm[A].dir, kf);
    SH_OK("echo '{\"name\":\"CLEAR-MARKER-5521\"}' | $M put household --data %s", dm[B].dir);
    snprintf(mdb, sizeof mdb, "%s/store/data.mdb", dm[A].dir);
    cr_assert(!file_has(mdb, "AT-REST-SECRET-7731"), "the encrypted store holds the plaintext");
    char cmdb[300];
    snprintf(cmdb, sizeof cmdb, "%s/store/data.mdb", dm[B].dir);
    cr_assert(file_has(cmdb, "CLEAR-MARKER-5521"), "the check itself is broken");
    /* It reads back with its key, and not without it or with another. */
    SH_OK("$M list --data %s --key-file %s | grep -q AT-REST-SECRET-7731", dm[A].dir, kf);
    int rc = sh(out, sizeof out, "$M list --data %s", dm[A].dir);
    cr_assert_eq(rc, 8, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "encrypted with a key file") != NULL, "%s", out);
    SH_OK("head -c 32 /dev/urandom > %s && chmod 600 %s", wrong, wrong);
    rc = sh(out, sizeof out, "$M list --data %s --key-file %s", dm[A].dir, wrong);
    cr_assert_eq(rc, 8, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "does not open this store") != NULL, "%s", out);

    /* A passphrase: MESHSYNC_PASSPHRASE, and a clear error for a wrong or missing one. */
    SH_OK("MESHSYNC_PASSPHRASE=correct-horse $M init --data %s --scope %s --encrypt", dm[D].dir,
          L01);
    SH_OK("echo '{\"name\":\"PASSPHRASE-SECRET-9090\"}' | MESHSYNC_PASSPHRASE=correct-horse "
          "$M put household --data %s", dm[D].dir);
    snprintf(mdb, sizeof mdb, "%s/store/data.mdb", dm[D].dir);
    cr_assert(!file_has(mdb, "PASSPHRASE-SECRET-9090"));
    rc = sh(out, sizeof out, "MESHSYNC_PASSPHRASE=battery $M list --data %s", dm[D].dir);
    cr_assert_eq(rc, 8, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "the passphrase does not open this store") != NULL, "%s", out);
    rc = sh(out, sizeof out, "$M list --data %s", dm[D].dir);
    cr_assert_eq(rc, 8, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "MESHSYNC_PASSPHRASE") != NULL, "no hint: %s", out);
    SH_OK("MESHSYNC_PASSPHRASE=correct-horse $M list --data %s | grep -q PASSPHRASE-SECRET-9090",
          dm[D].dir);

    /* Sync between the encrypted node (a daemon, with its key file) and the clear one: each
     * gets the other's op, and the encrypted store still holds no plaintext of either. */
    char roster[300];
    const char *ks[2];
    ks[0] = key[A];
    ks[1] = key[B];
    SH_OK("$M identity --no-qr --data %s --key-file %s > %s/ka && $M identity --no-qr --data %s "
          "> %s/kb", dm[A].dir, kf, base, dm[B].dir, base);
    char kpath[300];
    FILE *f;
    snprintf(kpath, sizeof kpath, "%s/ka", base);
    f = fopen(kpath, "r");
    cr_assert(fgets(key[A], sizeof key[A], f) != NULL);
    fclose(f);
    snprintf(kpath, sizeof kpath, "%s/kb", base);
    f = fopen(kpath, "r");
    cr_assert(fgets(key[B], sizeof key[B], f) != NULL);
    fclose(f);
    for (int i = A; i <= B; i++) {
        snprintf(roster, sizeof roster, "%s/roster", dm[i].dir);
        cr_assert_eq(nh_write_roster(roster, ks, 2), 0);
    }
    const char *const kfo[] = {"--key-file", kf, NULL};
    start(A, kfo);
    rc = sync_with(B, A, out, sizeof out);
    if (rc != 0) dump_logs();
    cr_assert_eq(rc, 0, "%s", out);
    SH_OK("$M list --data %s | grep -q AT-REST-SECRET-7731", dm[B].dir);
    SH_OK("$M list --data %s --key-file %s | grep -q CLEAR-MARKER-5521", dm[A].dir, kf);
    snprintf(mdb, sizeof mdb, "%s/store/data.mdb", dm[A].dir);
    cr_assert(!file_has(mdb, "CLEAR-MARKER-5521"), "a synced op was stored in clear");
    cr_assert(!file_has(mdb, "AT-REST-SECRET-7731"));
}
