/*
 * sim_test.c - the deterministic simulator as CI runs it: every shipped scenario at a small
 * size with fixed seeds (all checks must pass), the determinism check (two runs of a seed give
 * the same trace hash, another seed a different one), proof that the checks catch a broken
 * engine (the simulator's test-only hook removes an op from frames in transit after the sender
 * counted it as sent: the checks must fail; removed once, the data heals but the engine check
 * still names the gap), and the real
 * `meshsync-sim` binary: exit codes, the printed seed and a replay command that reproduces the
 * failing run bit for bit.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "sim.h"

#ifndef MESH_SIM_BIN
#define MESH_SIM_BIN MESH_BINARY_DIR "/sim/meshsync-sim"
#endif
#ifndef MESH_SIM_SCENARIOS
#define MESH_SIM_SCENARIOS MESH_SOURCE_DIR "/sim/scenarios"
#endif

/* Loads a shipped scenario and applies "section.key=value" overrides (NULL-terminated). */
static void load(sim_config *c, const char *name, const char *const *sets)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s.ini", MESH_SIM_SCENARIOS, name);
    sim_config_defaults(c);
    cr_assert_eq(sim_config_load(c, path, err, sizeof err), 0, "%s", err);
    for (; sets && *sets; sets++) cr_assert_eq(sim_config_set(c, *sets, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sim_config_check(c, err, sizeof err), 0, "%s", err);
}

static void run(const sim_config *c, sim_result *r)
{
    sim_output o = {0};
    cr_assert_eq(sim_run(c, &o, r), 0, "%s seed %llu did not run: %s", c->name,
                 (unsigned long long)c->seed, r->failure);
}

/* Runs a scenario at the given seeds; every check must pass and every node converge. */
static void pass_at_seeds(const char *name, const char *const *sets, const uint64_t *seeds,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sim_config c;
        load(&c, name, sets);
        c.seed = seeds[i];
        sim_result r;
        run(&c, &r);
        cr_expect_eq(r.failed, 0, "%s seed %llu failed:\n%s", name,
                     (unsigned long long)seeds[i], r.failure);
        cr_expect_gt(r.ops_created, 0, "%s seed %llu created no ops", name,
                     (unsigned long long)seeds[i]);
        cr_expect_geq(r.converged_s, 0, "%s seed %llu never converged", name,
                      (unsigned long long)seeds[i]);
    }
}

static const uint64_t SEEDS[] = {1, 2, 3};

/* ---- Shipped scenarios, small --------------------------------------------------------------- */

Test(scenarios, field_day)
{
    /* Three hours instead of twelve: evening and uplink at two hours. */
    static const char *const sets[] = {"scenario.duration=10800", "topology.evening=7200",
                                       "uplink.start=7200", "topology.mule_dwell=1200",
                                       "topology.mule_travel=600", NULL};
    pass_at_seeds("field-day", sets, SEEDS, 3);
}

Test(scenarios, district_200)
{
    /* 40 nodes over 1.5 hours: 4 teams of 8, 7 supervisors, the gateway. */
    static const char *const sets[] = {"topology.teams=4", "scenario.duration=5400",
                                       "topology.evening=3600", "uplink.start=3600", NULL};
    pass_at_seeds("district-200", sets, SEEDS, 2);
}

Test(scenarios, partition_heal)
{
    static const char *const sets[] = {"scenario.duration=3600", "faults.partition_at=600",
                                       "faults.partition_for=1800", NULL};
    pass_at_seeds("partition-heal", sets, SEEDS, 3);
}

Test(scenarios, chaos)
{
    static const char *const sets[] = {"scenario.duration=3600", NULL};
    pass_at_seeds("chaos", sets, SEEDS, 3);
}

Test(scenarios, gossip_mesh)
{
    static const char *const sets[] = {"topology.team_size=40", NULL};
    pass_at_seeds("gossip-mesh", sets, SEEDS, 3);
}

Test(scenarios, partition_heal_flags_the_same_conflicts)
{
    /* While split, both halves edit the same few entities: conflicts must appear, and the
     * converge check has compared every node's conflict count. */
    sim_config c;
    load(&c, "partition-heal", NULL);
    sim_result r;
    run(&c, &r);
    cr_assert_eq(r.failed, 0, "%s", r.failure);
    cr_expect_gt(r.conflicts, 0, "the partition produced no conflict to agree on");
    cr_expect_eq(r.partitions, 1);
}

/* ---- Determinism ------------------------------------------------------------------------ */

Test(determinism, same_seed_same_trace)
{
    static const char *const sets[] = {"scenario.duration=3600", NULL};
    sim_config c;
    load(&c, "chaos", sets);
    c.seed = 42;
    sim_result a, b;
    run(&c, &a);
    run(&c, &b);
    cr_assert_str_eq(a.trace_hex, b.trace_hex, "two runs of chaos seed 42 differ");
    cr_expect_eq(a.events, b.events);
    cr_expect_eq(a.ops_created, b.ops_created);
    cr_expect_eq(a.bytes_sent, b.bytes_sent);
    cr_expect_gt(a.crashes, 0, "chaos must crash nodes for this check to mean much");
    c.seed = 43;
    sim_result d;
    run(&c, &d);
    cr_expect_str_neq(a.trace_hex, d.trace_hex, "seeds 42 and 43 gave the same trace");
}

Test(determinism, field_day_twice)
{
    static const char *const sets[] = {"scenario.duration=7200", "topology.evening=5400",
                                       "uplink.start=5400", NULL};
    sim_config c;
    load(&c, "field-day", sets);
    sim_result a, b;
    run(&c, &a);
    run(&c, &b);
    cr_assert_str_eq(a.trace_hex, b.trace_hex);
    cr_expect_eq(a.failed, 0, "%s", a.failure);
}

/* ---- The checks catch a broken engine ------------------------------------------------------ */

Test(inject, dropped_op_is_caught)
{
    /* An op is skipped in every frame that carries it, and the frame's DONE counts are lowered
     * so the sender believes it was delivered. Nothing can heal that: the checks must say so. */
    static const char *const sets[] = {"scenario.duration=3600", "faults.partition_at=300",
                                       "faults.partition_for=900", "test.inject=drop-op",
                                       "end.settle_max=300", NULL};
    sim_config c;
    load(&c, "partition-heal", sets);
    sim_result r;
    run(&c, &r);
    cr_assert_gt(r.inject_hits, 0, "the hook never found an op to drop");
    cr_expect(r.failed & SIM_CHECK_CONVERGE, "converge did not fail:\n%s", r.failure);
    cr_expect(r.failed & SIM_CHECK_NO_LOSS, "no-loss did not fail:\n%s", r.failure);
    cr_expect(r.failed & SIM_CHECK_PENDING, "pending did not fail:\n%s", r.failure);
    cr_expect(r.failed & SIM_CHECK_GATEWAY, "gateway did not fail:\n%s", r.failure);
    cr_expect(strstr(r.failure, "never arrived") != NULL, "%s", r.failure);
}

Test(inject, dropped_once_heals_but_is_noticed)
{
    /* Skipped once only: the receiver reports its real vector next time and gets it again, so
     * every outcome check passes; but a completed session left an op waiting for one the
     * sender never sent, which no honest sender does: the engine check names it. */
    static const char *const sets[] = {"scenario.duration=3600", "test.inject=drop-op-once",
                                       NULL};
    for (uint64_t seed = 1; seed <= 3; seed++) {
        sim_config c;
        load(&c, "partition-heal", sets);
        c.seed = seed;
        sim_result r;
        run(&c, &r);
        cr_expect_eq(r.inject_hits, 1, "seed %llu: %llu ops dropped", (unsigned long long)seed,
                     (unsigned long long)r.inject_hits);
        cr_expect_eq(r.failed, SIM_CHECK_ENGINE, "seed %llu:\n%s", (unsigned long long)seed,
                     r.failure);
        cr_expect(strstr(r.failure, "wait for a predecessor the peer never sent") != NULL,
                  "seed %llu:\n%s", (unsigned long long)seed, r.failure);
    }
}

/* ---- The binary ------------------------------------------------------------------------- */

/* Runs a shell command; returns its exit status and its stdout in `out`. */
static int sh(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char out1[1 << 16], out2[1 << 16];

/* The value after `key` up to the end of its line. */
static const char *line_after(const char *text, const char *key, char *buf, size_t cap)
{
    const char *p = strstr(text, key);
    if (p == NULL) return NULL;
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

Test(cli, failure_prints_seed_and_replay_that_reproduces)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s --scenario %s/partition-heal.ini --seed 7 --duration 1800 --inject drop-op "
             "--set end.settle_max=120 --set faults.partition_at=300 2>&1",
             MESH_SIM_BIN, MESH_SIM_SCENARIOS);
    int st = sh(cmd, out1, sizeof out1);
    cr_assert_eq(st, 1, "exit %d, output:\n%s", st, out1);
    cr_expect(strstr(out1, "FAILED: seed 7") != NULL, "%s", out1);
    char replay[1024], trace1[128], trace2[128];
    cr_assert_not_null(line_after(out1, "replay: ", replay, sizeof replay), "%s", out1);
    cr_expect(strstr(replay, "--seed 7") && strstr(replay, "--inject drop-op") &&
                  strstr(replay, "--set end.settle_max=120"),
              "replay lacks an override: %s", replay);
    cr_assert_not_null(line_after(out1, "trace hash", trace1, sizeof trace1), "%s", out1);
    /* The printed command, run again, gives the same run. */
    snprintf(cmd, sizeof cmd, "%s 2>&1", replay);
    st = sh(cmd, out2, sizeof out2);
    cr_expect_eq(st, 1);
    cr_assert_not_null(line_after(out2, "trace hash", trace2, sizeof trace2), "%s", out2);
    cr_expect_str_eq(trace1, trace2, "the replay differs from the original run");
}

Test(cli, determinism_flag_and_exit_codes)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s --scenario %s/gossip-mesh.ini --nodes 12 --seed 5 --determinism --quiet 2>&1",
             MESH_SIM_BIN, MESH_SIM_SCENARIOS);
    int st = sh(cmd, out1, sizeof out1);
    cr_expect_eq(st, 0, "%s", out1);
    cr_expect(strstr(out1, "deterministic: both runs have trace") != NULL, "%s", out1);

    snprintf(cmd, sizeof cmd, "%s --no-such-flag 2>&1", MESH_SIM_BIN);
    cr_expect_eq(sh(cmd, out1, sizeof out1), 2, "%s", out1);
    snprintf(cmd, sizeof cmd, "%s --scenario %s/chaos.ini --set network.loss=2 2>&1",
             MESH_SIM_BIN, MESH_SIM_SCENARIOS);
    cr_expect_eq(sh(cmd, out1, sizeof out1), 2, "%s", out1);
    cr_expect(strstr(out1, "outside") != NULL, "%s", out1);
    snprintf(cmd, sizeof cmd, "%s --help", MESH_SIM_BIN);
    cr_expect_eq(sh(cmd, out1, sizeof out1), 0);
    cr_expect(strstr(out1, "--swarm") && strstr(out1, "--plot") && strstr(out1, "Exit status"));
}

Test(cli, outputs_timeline_plot_json_and_swarm)
{
    char dir[] = "/tmp/meshsync-simtest-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s --scenario %s/gossip-mesh.ini --nodes 16 --timeline %s/t.csv --plot %s/p.svg "
             "--json 2>&1",
             MESH_SIM_BIN, MESH_SIM_SCENARIOS, dir, dir);
    cr_assert_eq(sh(cmd, out1, sizeof out1), 0, "%s", out1);
    cr_expect(strstr(out1, "\"ok\":true") && strstr(out1, "\"per_node\":["), "%s", out1);
    snprintf(cmd, sizeof cmd, "head -n 3 %s/t.csv; grep -c '<polyline' %s/p.svg", dir, dir);
    cr_assert_eq(sh(cmd, out2, sizeof out2), 0);
    cr_expect(strstr(out2, "t_s,ops_created,coverage") != NULL, "%s", out2);
    cr_expect(strstr(out2, "\n2\n") != NULL, "the plot lacks its lines: %s", out2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)sh(cmd, out2, sizeof out2);

    snprintf(cmd, sizeof cmd, "%s --scenario %s/gossip-mesh.ini --nodes 8 --swarm 3 2>&1",
             MESH_SIM_BIN, MESH_SIM_SCENARIOS);
    cr_expect_eq(sh(cmd, out1, sizeof out1), 0, "%s", out1);
    cr_expect(strstr(out1, "swarm: 0 of 3 seeds failed") != NULL, "%s", out1);
}

Test(config, effective_scenario_round_trips)
{
    /* --print-config writes every key; loading it back gives the same configuration. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s --scenario %s/field-day.ini --seed 9 --set network.loss=0.125 --print-config "
             "> /tmp/meshsync-simtest-config.ini",
             MESH_SIM_BIN, MESH_SIM_SCENARIOS);
    cr_assert_eq(system(cmd), 0);
    sim_config a, b;
    load(&a, "field-day", NULL);
    a.seed = 9;
    a.loss = 0.125;
    char err[512];
    sim_config_defaults(&b);
    cr_assert_eq(sim_config_load(&b, "/tmp/meshsync-simtest-config.ini", err, sizeof err), 0,
                 "%s", err);
    remove("/tmp/meshsync-simtest-config.ini");
    cr_expect_eq(memcmp(&a, &b, sizeof a), 0, "the printed scenario loads differently");
}
