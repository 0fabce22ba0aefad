/*
 * main.c - This file implements the `meshsync-sim` command line: it loads a scenario, applies
 * the flags over it, runs one seed, a swarm of seeds, or each seed twice (the determinism
 * check), prints the summary and, when a check fails, the seed and the exact command that
 * replays the run. Exit codes: 0 every check passed, 1 a check failed (or two runs of one seed
 * differed), 2 usage error, 3 a run could not start (work directory, stores).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "sim.h"

#define EXIT_CHECK 1
#define EXIT_USAGE 2
#define EXIT_RUN 3
#define OVERRIDES_MAX 64
#define SWARM_MAX 1000000u

static const char USAGE[] =
    "usage: meshsync-sim --scenario FILE [options]\n"
    "\n"
    "Runs nodes of the real meshsync sync engine, each with its own LMDB store, on a virtual\n"
    "clock over a simulated network, then checks that every connected group converged, that\n"
    "no op was lost and that every op reached the campaign service once and in order. One seed\n"
    "reproduces a run bit for bit (docs/SIMULATOR.md).\n"
    "\n"
    "Scenario and overrides (applied in this order over the scenario file):\n"
    "  --scenario FILE     scenario file (sim/scenarios/*.ini)\n"
    "  --seed N            seed of every random choice; 'random' picks one and prints it\n"
    "  --nodes N           rescale the topology to about N nodes (keeps team size)\n"
    "  --duration S        seconds of simulated time with workload and faults\n"
    "  --loss P            probability that a frame is lost (0..0.9)\n"
    "  --set SEC.KEY=VAL   any scenario key (repeatable); --keys lists them\n"
    "  --inject FAULT      test only: drop-op (an op is skipped in every frame that carries\n"
    "                      it: the checks must fail) or drop-op-once (skipped once: they must\n"
    "                      pass)\n"
    "\n"
    "Runs:\n"
    "  --swarm K           run K seeds derived from --seed; report each failing one\n"
    "  --determinism       run each seed twice and compare the trace hashes\n"
    "\n"
    "Output:\n"
    "  --timeline FILE     timeline samples as CSV (or JSON if FILE ends in .json)\n"
    "  --plot FILE         SVG plot of convergence over time\n"
    "  --json              print the summary as JSON instead of the table\n"
    "  --per-node          add a row per node to the summary\n"
    "  --quiet             print only failures (and, with --swarm, one line per seed)\n"
    "  --workdir DIR       where the run's stores go (default $TMPDIR or /tmp)\n"
    "  --keep              keep the stores after the run\n"
    "  --keys              list every scenario key with its default and meaning\n"
    "  --print-config      print the effective scenario (after overrides) and exit\n"
    "  --help              this text\n"
    "\n"
    "Exit status: 0 all checks passed; 1 a check failed or two runs of a seed differed (the\n"
    "seed and a replay command are printed); 2 usage error; 3 a run could not start.\n";

typedef struct cli {
    const char *argv0;
    const char *scenario;
    bool seed_given;
    const char *overrides[OVERRIDES_MAX][2];   /* flag, value: replayed as given */
    int noverrides;
    uint64_t swarm;
    bool determinism, json, per_node, quiet, keep, print_config;
    const char *timeline, *plot, *workdir;
} cli;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "meshsync-sim: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'meshsync-sim --help' for the options.\n");
    return EXIT_USAGE;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0' || *s == '-') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end != '\0' || errno != 0) return false;
    *out = v;
    return true;
}

/* Applies one override flag to the configuration. */
static int apply(sim_config *c, const char *flag, const char *val)
{
    char err[512], buf[600];
    const char *key = NULL;
    if (strcmp(flag, "--seed") == 0) key = "scenario.seed";
    else if (strcmp(flag, "--duration") == 0) key = "scenario.duration";
    else if (strcmp(flag, "--loss") == 0) key = "network.loss";
    else if (strcmp(flag, "--inject") == 0) key = "test.inject";
    if (strcmp(flag, "--nodes") == 0) {
        uint64_t n;
        if (!parse_u64(val, &n) || n < 2 || n > SIM_NODES_MAX) {
            fprintf(stderr, "meshsync-sim: --nodes takes 2..%u, not '%s'\n", SIM_NODES_MAX, val);
            return -1;
        }
        sim_config_set_nodes(c, (uint32_t)n);
        return 0;
    }
    if (key) snprintf(buf, sizeof buf, "%s=%s", key, val);
    else snprintf(buf, sizeof buf, "%s", val);
    if (sim_config_set(c, buf, err, sizeof err) != 0) {
        fprintf(stderr, "meshsync-sim: %s %s: %s\n", flag, val, err);
        return -1;
    }
    return 0;
}

/* Prints an argument so a shell reads it back unchanged. */
static void shell_arg(FILE *f, const char *s)
{
    bool plain = *s != '\0';
    for (const char *p = s; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+", *p))
            plain = false;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = s; *p; p++) {
        if (*p == '\'') fputs("'\\''", f);
        else fputc(*p, f);
    }
    fputc('\'', f);
}

static void print_replay(FILE *f, const cli *a, uint64_t seed)
{
    fprintf(f, "replay: ");
    shell_arg(f, a->argv0);
    fprintf(f, " --scenario ");
    shell_arg(f, a->scenario);
    fprintf(f, " --seed %" PRIu64, seed);
    for (int i = 0; i < a->noverrides; i++) {
        if (strcmp(a->overrides[i][0], "--seed") == 0) continue;
        fprintf(f, " %s ", a->overrides[i][0]);
        shell_arg(f, a->overrides[i][1]);
    }
    fprintf(f, "\n");
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const char *const CHECKS[] = {"converge", "no-loss", "gateway", "pending", "engine"};

static void failed_list(uint32_t failed, char *out, size_t cap)
{
    out[0] = '\0';
    for (int i = 0; i < 5; i++) {
        if (!(failed & (1u << i))) continue;
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? "," : "", CHECKS[i]);
    }
}

/* What to print if the process dies during a run (an assertion in meshsync or here): the
 * seed and the replay command, written by the signal handler with write(2). */
static char crash_note[4096];
static size_t crash_len;

static void on_fatal(int sig)
{
    if (crash_len > 0) {
        ssize_t r = write(STDOUT_FILENO, crash_note, crash_len);
        (void)r;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void arm_crash_note(const cli *a, uint64_t seed)
{
    FILE *f = fmemopen(crash_note, sizeof crash_note, "w");
    if (f == NULL) return;
    fprintf(f, "\nFAILED: seed %" PRIu64 ": the process died during the run (see the message "
            "above)\n", seed);
    print_replay(f, a, seed);
    long n = ftell(f);
    fclose(f);
    crash_len = n > 0 && (size_t)n < sizeof crash_note ? (size_t)n : 0;
    static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_fatal);
}

/* Runs one seed (twice with --determinism). Returns 0, EXIT_CHECK or EXIT_RUN. */
static int run_seed(const cli *a, sim_config *c, uint64_t seed, bool swarm)
{
    c->seed = seed;
    sim_output o = {.workdir = a->workdir, .keep = a->keep, .per_node = a->per_node};
    bool table = !a->json && !a->quiet && !swarm;
    o.report = table ? stdout : NULL;
    o.json = a->json ? stdout : NULL;
    o.timeline_path = a->timeline;
    o.plot_path = a->plot;
    o.progress = !a->quiet && !swarm && isatty(STDERR_FILENO) ? stderr : NULL;
    sim_result r;
    fflush(stdout);
    arm_crash_note(a, seed);
    int rc = sim_run(c, &o, &r);
    if (rc != 0 && r.failure[0]) {
        fprintf(stderr, "meshsync-sim: seed %" PRIu64 ": the run could not %s: %s\n", seed,
                r.events ? "write its output" : "start", r.failure);
        if (r.events == 0) return EXIT_RUN;
    }
    int status = r.failed ? EXIT_CHECK : 0;
    if (a->determinism) {
        sim_output o2 = {.workdir = a->workdir};
        sim_result r2;
        if (sim_run(c, &o2, &r2) != 0 && r2.events == 0) {
            fprintf(stderr, "meshsync-sim: seed %" PRIu64 ": the second run could not start: %s\n",
                    seed, r2.failure);
            return EXIT_RUN;
        }
        if (memcmp(r.trace, r2.trace, sizeof r.trace) != 0) {
            fprintf(stdout, "seed %" PRIu64 ": NOT DETERMINISTIC: trace %s then %s\n", seed,
                    r.trace_hex, r2.trace_hex);
            status = EXIT_CHECK;
        } else if (!a->json) {
            fprintf(stdout, "seed %" PRIu64 ": deterministic: both runs have trace %s\n", seed,
                    r.trace_hex);
        }
    }
    if (swarm && !a->json) {
        char names[64];
        failed_list(r.failed, names, sizeof names);
        if (r.failed)
            printf("seed %-20" PRIu64 " FAILED %s\n", seed, names);
        else if (r.converged_s < 0)
            printf("seed %-20" PRIu64 " ok   trace %.16s  ops %" PRIu64 "  groups converged "
                   "(never all nodes at once)  wall %.1f s\n", seed, r.trace_hex, r.ops_created,
                   r.wall_s);
        else
            printf("seed %-20" PRIu64 " ok   trace %.16s  ops %" PRIu64 "  converged at %.1f s  "
                   "wall %.1f s\n", seed, r.trace_hex, r.ops_created, r.converged_s, r.wall_s);
    }
    if (status != 0) {
        if (r.failed && (swarm || a->quiet || a->json)) fprintf(stdout, "%s", r.failure);
        fprintf(stdout, "FAILED: seed %" PRIu64 "\n", seed);
        print_replay(stdout, a, seed);
    }
    fflush(stdout);
    return status;
}

int main(int argc, char **argv)
{
    cli a = {.argv0 = argv[0]};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else if (strcmp(o, "--keys") == 0) {
            sim_config_print_keys(stdout);
            return 0;
        } else if (strcmp(o, "--json") == 0) {
            a.json = true;
        } else if (strcmp(o, "--per-node") == 0) {
            a.per_node = true;
        } else if (strcmp(o, "--quiet") == 0) {
            a.quiet = true;
        } else if (strcmp(o, "--keep") == 0) {
            a.keep = true;
        } else if (strcmp(o, "--determinism") == 0) {
            a.determinism = true;
        } else if (strcmp(o, "--print-config") == 0) {
            a.print_config = true;
        } else if (strcmp(o, "--scenario") == 0 || strcmp(o, "--timeline") == 0 ||
                   strcmp(o, "--plot") == 0 || strcmp(o, "--workdir") == 0 ||
                   strcmp(o, "--swarm") == 0 || strcmp(o, "--seed") == 0 ||
                   strcmp(o, "--nodes") == 0 || strcmp(o, "--duration") == 0 ||
                   strcmp(o, "--loss") == 0 || strcmp(o, "--set") == 0 ||
                   strcmp(o, "--inject") == 0) {
            if (v == NULL) return usage_error("%s needs a value", o);
            i++;
            if (strcmp(o, "--scenario") == 0) a.scenario = v;
            else if (strcmp(o, "--timeline") == 0) a.timeline = v;
            else if (strcmp(o, "--plot") == 0) a.plot = v;
            else if (strcmp(o, "--workdir") == 0) a.workdir = v;
            else if (strcmp(o, "--swarm") == 0) {
                if (!parse_u64(v, &a.swarm) || a.swarm == 0 || a.swarm > SWARM_MAX)
                    return usage_error("--swarm takes a count of 1..1000000, not '%s'", v);
            } else {
                if (a.noverrides == OVERRIDES_MAX)
                    return usage_error("more than %s overrides", "64");
                if (strcmp(o, "--seed") == 0) a.seed_given = true;
                a.overrides[a.noverrides][0] = o;
                a.overrides[a.noverrides][1] = v;
                a.noverrides++;
            }
        } else {
            return usage_error("unknown option '%s'", o);
        }
    }
    if (a.scenario == NULL) return usage_error("%s", "--scenario FILE is required");

    sim_config c;
    sim_config_defaults(&c);
    char err[1024];
    if (sim_config_load(&c, a.scenario, err, sizeof err) != 0) {
        fprintf(stderr, "meshsync-sim: %s\n", err);
        return EXIT_USAGE;
    }
    for (int i = 0; i < a.noverrides; i++) {
        if (strcmp(a.overrides[i][0], "--seed") == 0 &&
            strcmp(a.overrides[i][1], "random") == 0) {
            uint64_t s;
            if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = (uint64_t)getpid();
            c.seed = s % 1000000000000ull;
            continue;
        }
        if (apply(&c, a.overrides[i][0], a.overrides[i][1]) != 0) return EXIT_USAGE;
    }
    if (sim_config_check(&c, err, sizeof err) != 0) {
        fprintf(stderr, "meshsync-sim: %s\n", err);
        return EXIT_USAGE;
    }
    if (a.print_config) {
        sim_config_write(&c, stdout);
        return 0;
    }

    if (a.swarm == 0) return run_seed(&a, &c, c.seed, false);

    /* Swarm: seeds derived from the base seed, so the whole swarm is reproducible too. */
    uint64_t x = c.seed, failed = 0;
    if (!a.json)
        printf("swarm: %" PRIu64 " seeds of %s derived from seed %" PRIu64 "\n", a.swarm, c.name,
               c.seed);
    int status = 0;
    for (uint64_t k = 0; k < a.swarm; k++) {
        uint64_t seed = splitmix(&x) % 1000000000000ull;
        int rc = run_seed(&a, &c, seed, true);
        if (rc == EXIT_RUN) return EXIT_RUN;
        if (rc != 0) {
            failed++;
            status = EXIT_CHECK;
        }
    }
    if (!a.json)
        printf("swarm: %" PRIu64 " of %" PRIu64 " seeds failed\n", failed, a.swarm);
    return status;
}
