/*
 * sim_bench.c - the simulator's speed and the sync engine's gossip behaviour, measured with the
 * shipped scenarios (sim/scenarios/) through the simulator core (sim/sim/sim.h):
 *
 *   1. field-day (32 nodes, 12 simulated hours): simulated node-seconds per wall second on one
 *      core (goal >= 1,000);
 *   2. gossip-mesh, a connected mesh of N = 100 and N = 1,000 nodes, one op each, push-pull
 *      gossip rounds, 10% radio loss (retransmitted by the transport, as TCP under ZeroMQ
 *      does): rounds until every node holds every op, beside log2 N (goal <= log2 N + 2);
 *   3. for comparison, N = 100 with 10% of frames dropped outright (the engine sees a gap in
 *      frame numbers and fails the session).
 * Every run's checks must pass (exit 1 otherwise); missed goals are printed.
 *
 *   sim_bench                 the runs above (about four minutes on one core)
 *   sim_bench --smoke         a tiny run of each for CI
 *   sim_bench --workdir DIR   where the stores go (default $TMPDIR or /tmp)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#ifndef MESH_SIM_SCENARIOS
#define MESH_SIM_SCENARIOS "sim/scenarios"
#endif

static const char *workdir;
static int failures;

static int load(sim_config *c, const char *name, const char *const *sets)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s.ini", MESH_SIM_SCENARIOS, name);
    sim_config_defaults(c);
    if (sim_config_load(c, path, err, sizeof err) != 0) {
        fprintf(stderr, "sim_bench: %s\n", err);
        return -1;
    }
    for (; sets && *sets; sets++) {
        if (sim_config_set(c, *sets, err, sizeof err) != 0) {
            fprintf(stderr, "sim_bench: %s\n", err);
            return -1;
        }
    }
    return 0;
}

static int run(const sim_config *c, sim_result *r)
{
    sim_output o = {.workdir = workdir};
    if (sim_run(c, &o, r) != 0) {
        fprintf(stderr, "sim_bench: %s seed %llu did not run: %s\n", c->name,
                (unsigned long long)c->seed, r->failure);
        failures++;
        return -1;
    }
    if (r->failed) {
        fprintf(stderr, "sim_bench: %s seed %llu FAILED its checks:\n%s", c->name,
                (unsigned long long)c->seed, r->failure);
        failures++;
    }
    return 0;
}

static void field_day(bool smoke)
{
    static const char *const small[] = {"scenario.duration=3600", "topology.evening=2400",
                                        "uplink.start=2400", "topology.teams=2", NULL};
    sim_config c;
    if (load(&c, "field-day", smoke ? small : NULL) != 0) {
        failures++;
        return;
    }
    sim_result r;
    if (run(&c, &r) != 0) return;
    double rate = r.wall_s > 0 ? r.node_seconds / r.wall_s : 0;
    printf("field-day: %u nodes, %.0f simulated s, %llu ops, %llu sessions: %.0f node-seconds "
           "in %.1f s wall = %.0f node-seconds per wall second (goal >= 1000: %s)\n",
           r.nodes, r.sim_s, (unsigned long long)r.ops_created, (unsigned long long)r.sessions,
           r.node_seconds, r.wall_s, rate, rate >= 1000 ? "met" : "MISSED");
    fflush(stdout);
}

/* Rounds to convergence of gossip-mesh at N nodes over `seeds` seeds. */
static void gossip(uint32_t n, const char *fault, int seeds, bool goal)
{
    char nodes[64], loss[64];
    snprintf(nodes, sizeof nodes, "topology.team_size=%u", n);
    snprintf(loss, sizeof loss, "%s", fault);
    const char *const sets[] = {nodes, "network.loss=0", loss, NULL};
    double log2n = log2((double)n), worst = 0, sum = 0, wall = 0;
    int ran = 0;
    printf("gossip-mesh N=%u %s: rounds", n, fault);
    for (int s = 1; s <= seeds; s++) {
        sim_config c;
        if (load(&c, "gossip-mesh", sets) != 0) {
            failures++;
            return;
        }
        c.seed = (uint64_t)s;
        sim_result r;
        if (run(&c, &r) != 0) continue;
        if (r.converged_s < 0) {
            printf(" never");
            worst = INFINITY;
            continue;
        }
        printf(" %.0f", r.rounds);
        fflush(stdout);
        if (r.rounds > worst) worst = r.rounds;
        sum += r.rounds;
        wall += r.wall_s;
        ran++;
    }
    char verdict[64];
    if (goal)
        snprintf(verdict, sizeof verdict, "goal <= log2 N + 2 = %.2f: %s", log2n + 2,
                 worst <= log2n + 2 ? "met" : "MISSED");
    else
        snprintf(verdict, sizeof verdict, "for comparison, no goal");
    printf("; mean %.2f, worst %.0f, log2 N = %.2f (%s); %.1f s wall per run\n",
           ran ? sum / ran : 0, worst, log2n, verdict, ran ? wall / ran : 0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    bool smoke = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0) smoke = true;
        else if (strcmp(argv[i], "--workdir") == 0 && i + 1 < argc) workdir = argv[++i];
        else {
            fprintf(stderr, "usage: sim_bench [--smoke] [--workdir DIR]\n");
            return 2;
        }
    }
    printf("sim_bench%s: the simulator on one core, the engine's push-pull gossip\n",
           smoke ? " --smoke" : "");
    field_day(smoke);
    if (smoke) {
        gossip(20, "network.loss=0.1", 1, true);
    } else {
        gossip(100, "network.loss=0.1", 5, true);
        gossip(1000, "network.loss=0.1", 1, true);
        gossip(100, "network.drop=0.1", 5, false);
    }
    return failures ? 1 : 0;
}
