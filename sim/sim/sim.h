/*
 * sim.h - the deterministic network simulator `meshsync-sim`: its configuration (a scenario
 * file plus overrides), one run, and what a run reports. The command line (main.c), the
 * integration test (tests/integration/sim_test.c) and the benchmark (tests/bench/sim_bench.c)
 * all drive the simulator through this header. docs/SIMULATOR.md describes the model.
 *
 * A run is a pure function of its configuration and seed: N nodes of the real sync engine
 * (lib/sync) with real LMDB stores, on a virtual clock, over a simulated network, with every
 * random choice taken from one seeded generator. Two runs with the same configuration produce
 * the same trace hash.
 */
#ifndef MESH_SIM_H
#define MESH_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Hard bounds on what a scenario may ask for: they bound memory and file descriptors. */
#define SIM_NODES_MAX 4096u
#define SIM_TEAMS_MAX 1024u
#define SIM_NAME_BYTES 64
#define SIM_TEXT_BYTES 256
#define SIM_PATH_BYTES 1024

/* Which sessions nodes start. */
typedef enum sim_policy {
    /* Like the daemon (lib/net/loop.h): sync with each reachable peer when the local store
     * changed since the last sync with it, when a peer comes into range, and on a timer. */
    SIM_POLICY_TRIGGERED = 0,
    /* Push-pull gossip: every interval each node starts a session with `fanout` peers chosen
     * at random among those in range. */
    SIM_POLICY_GOSSIP = 1,
} sim_policy;

/* What the network looks like once the scenario's duration is over. */
typedef enum sim_heal {
    SIM_HEAL_NONE = 0,        /* keep locations and partitions: check each group on its own */
    SIM_HEAL_PARTITIONS = 1,  /* lift partitions and restart crashed nodes; keep locations */
    SIM_HEAL_ALL = 2,         /* everybody at base, no faults: one group */
} sim_heal;

/* Test-only fault hooks in the simulated network (never in lib/sync): they prove the checks
 * catch a broken engine. */
typedef enum sim_inject {
    SIM_INJECT_NONE = 0,
    /* From `inject_after` on, remove one op (the first one chosen) from every OPS frame that
     * carries it, and lower the frame's DONE counts so the sender believes it was delivered:
     * what a sender that skips one op when it packs frames would do. The checks must fail. */
    SIM_INJECT_DROP_OP = 1,
    /* The same, but only the first time: the engine must recover (the next session resends
     * it), so every check must still pass. */
    SIM_INJECT_DROP_OP_ONCE = 2,
} sim_inject;

typedef struct sim_config {
    char name[SIM_NAME_BYTES];
    char description[SIM_TEXT_BYTES];
    uint64_t seed;
    double duration_s;          /* simulated time with workload and faults */
    uint64_t epoch_ms;          /* Unix time of virtual time 0 */
    double sample_s;            /* timeline resolution; 0: duration / 400 */

    /* Topology: teams of field devices (each a cluster in radio range), supervisors who walk
     * between teams (data mules), a gateway at base with an intermittent uplink. */
    uint32_t teams;
    uint32_t team_size;
    uint32_t mules;
    uint32_t gateways;          /* 0 or 1 */
    double mule_dwell_s;        /* time a supervisor stays with a team */
    double mule_travel_s;       /* time out of range between two teams */
    double evening_s;           /* everybody goes back to base at this time; < 0: never */
    double walk_per_hour;       /* rate at which a field device moves to another team */

    /* Links (per frame). */
    double latency_ms;
    double jitter_ms;
    double bandwidth_kbps;      /* per node radio; 0: unlimited */
    double loss;                /* radio: probability that one transmission of a frame is lost
                                 * (the transport retransmits it after rto_ms, doubling) */
    double rto_ms;              /* first retransmission timeout */
    uint32_t retries;           /* retransmissions before the connection breaks */
    double drop;                /* probability that the transport loses a frame outright (the
                                 * engine sees a gap in frame numbers) */
    double duplicate;           /* probability that a frame arrives twice */
    double reorder;             /* probability that a frame is held back by reorder_ms */
    double reorder_ms;

    /* Gateway uplink: up for `uplink_up_s` of every `uplink_period_s`, from `uplink_start_s`. */
    double uplink_start_s;
    double uplink_period_s;
    double uplink_up_s;
    double uplink_latency_ms;
    uint32_t uplink_batch;      /* ops per request */
    double uplink_tick_s;       /* time between requests while up */

    /* Sync policy and engine options. */
    sim_policy policy;
    double interval_s;          /* timer (triggered) or round length (gossip) */
    double change_delay_s;      /* triggered: delay between a store change and the syncs */
    uint32_t fanout;            /* gossip: peers per round */
    uint32_t sessions_max;      /* per node at once; <= MESH_SESSIONS_MAX */
    uint32_t idle_timeout_ms;   /* 0: the engine's default */
    uint32_t frame_bytes_max;   /* 0: the protocol's maximum */

    /* Workload: DIGIT-like entity graphs (household -> individuals -> beneficiary -> task). */
    double register_per_hour;   /* household registrations started per field device */
    uint32_t members_min, members_max;
    double form_s_min, form_s_max;  /* time to fill one form (one op) */
    double update_per_hour;     /* edits of recent entities per field device */
    double delete_per_hour;     /* deletes per field device */
    double mule_update_per_hour;/* supervisor edits of the entities of the team it is with */
    uint32_t hot_set;           /* recent entities per team that edits choose from */
    uint32_t initial_ops;       /* ops each node writes at time 0 (gossip experiments) */
    bool work_at_base;          /* keep working after the evening */

    /* Faults (during `duration_s` only). */
    double crash_per_hour;      /* per node */
    double restart_min_s, restart_max_s;
    double skew_s;              /* clock skew drawn in [-skew_s, +skew_s] per node and restart */
    double partition_per_hour;  /* partitions opened per hour (whole run) */
    double partition_min_s, partition_max_s;
    double partition_at_s;      /* a scheduled partition of the busiest location; < 0: none */
    double partition_for_s;     /* its length */

    /* End of run. */
    sim_heal heal;
    double settle_max_s;        /* after duration: time allowed to converge */
    bool stop_when_converged;   /* end the run (no settle) as soon as every node holds all ops */

    /* Test-only fault hook. */
    sim_inject inject;
    double inject_after_s;
} sim_config;

/* Sets every field to its default (docs/SIMULATOR.md lists them). */
void sim_config_defaults(sim_config *c);

/* Loads a scenario file over `c` (which holds defaults or earlier values). On error writes a
 * message naming the file and line to `err` and returns -1. */
int sim_config_load(sim_config *c, const char *path, char *err, size_t errlen);

/* Applies one "section.key=value" override. Returns 0 or -1 with a message. */
int sim_config_set(sim_config *c, const char *assignment, char *err, size_t errlen);

/* Checks ranges and relations between fields. Returns 0 or -1 with a message. */
int sim_config_check(const sim_config *c, char *err, size_t errlen);

/* Total nodes the topology describes. */
uint32_t sim_config_nodes(const sim_config *c);

/* Rescales the topology to about `n` nodes in total (keeps team_size, mules and gateways). */
void sim_config_set_nodes(sim_config *c, uint32_t n);

/* Prints every scenario key with its default and meaning. */
void sim_config_print_keys(FILE *out);

/* Writes the effective configuration as an INI file (what a replay needs). */
void sim_config_write(const sim_config *c, FILE *out);

/* Where a run writes and what it prints. */
typedef struct sim_output {
    const char *workdir;        /* parent of the run's store directory; NULL: $TMPDIR or /tmp */
    bool keep;                  /* keep the stores after the run */
    const char *timeline_path;  /* CSV, or JSON when the name ends in .json; NULL: none */
    const char *plot_path;      /* SVG; NULL: none */
    FILE *report;               /* the summary table; NULL: silent */
    FILE *json;                 /* the summary as JSON; NULL: none */
    bool per_node;              /* print a row per node in the summary */
    FILE *progress;             /* progress lines on a terminal; NULL: none */
} sim_output;

/* The checks a run makes, as bits of sim_result.failed. */
enum {
    SIM_CHECK_CONVERGE = 1u << 0,   /* each connected group holds identical digests */
    SIM_CHECK_NO_LOSS = 1u << 1,    /* every op created is held by every node of its group */
    SIM_CHECK_GATEWAY = 1u << 2,    /* every op reached the campaign model once, in order */
    SIM_CHECK_PENDING = 1u << 3,    /* no op is left waiting for a missing predecessor */
    SIM_CHECK_ENGINE = 1u << 4,     /* no engine call failed in a way a peer cannot cause */
};

#define SIM_FAILURE_BYTES 2048

typedef struct sim_result {
    uint32_t nodes;
    uint32_t failed;            /* SIM_CHECK_* bits that failed; 0: all passed */
    char failure[SIM_FAILURE_BYTES];  /* what failed, for people */
    uint8_t trace[32];          /* BLAKE2b of every event processed */
    char trace_hex[65];
    uint64_t events;
    double sim_s;               /* simulated seconds, settle included */
    double wall_s;              /* wall-clock seconds of the run (report only) */
    double node_seconds;        /* nodes x simulated seconds */
    uint64_t ops_created;
    uint64_t ops_delivered;     /* applied by the campaign model (gateway) */
    uint64_t uplink_duplicates; /* requests the campaign model recognised as already applied */
    uint64_t sessions, sessions_ok, sessions_failed;
    uint64_t frames_sent, frames_lost, bytes_sent;
    uint64_t retransmissions;   /* radio losses the transport repaired */
    uint64_t crashes, partitions;
    double last_op_s;           /* time of the last op created */
    double converged_s;         /* first time after the last op that every node held all ops; <0: never */
    double rounds;              /* gossip intervals from the last op to convergence */
    uint32_t conflicts;         /* open conflicts at the end (every node agrees) */
    uint64_t inject_hits;       /* ops the test hook removed from frames */
} sim_result;

/* Runs one simulation. Returns 0 when it ran (whatever the checks say: see res->failed), or -1
 * when it could not run (stores could not be created, ...) with a message in res->failure. */
int sim_run(const sim_config *c, const sim_output *out, sim_result *res);

#endif
