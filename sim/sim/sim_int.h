/*
 * sim_int.h - the simulator's internals, shared by its modules: the seeded random generators,
 * the event queue, nodes, connections (one sync session per end), the op and entity registry,
 * the gateway's uplink and campaign model, and the world that holds them all.
 *
 * Module map: sim.c (run loop, node life, sync policy), net.c (links and sessions),
 * world.c (locations, mules, partitions), workload.c (entity graphs as signed ops),
 * uplink.c (gateway uplink and campaign model), check.c (end-of-run checks),
 * report.c (summary, timeline, SVG plot), config.c (scenario files), main.c (command line).
 */
#ifndef MESH_SIM_INT_H
#define MESH_SIM_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"
#include "crypto/crypto.h"
#include "sim.h"
#include "store/store.h"
#include "sync/session.h"

/* ---- Limits ------------------------------------------------------------------------------- */
/* Events queued at once: bounds memory (each event is 48 bytes, frames apart). */
#define SIM_EVENTS_MAX (8u * 1024u * 1024u)
/* Frames a session end may push in one turn before it yields to other events. */
#define SIM_PUMP_FRAMES_MAX 64u
/* Bytes a node's radio may have queued before its sessions wait (transport backpressure). */
#define SIM_TX_BACKLOG_US 250000u
/* Timeline samples kept. */
#define SIM_SAMPLES_MAX 20000u
/* Registered ops and entities (memory bound). */
#define SIM_OPS_MAX (16u * 1024u * 1024u)
/* Peers a node remembers for the triggered policy (as the store keeps MESH_PEERS_MAX). */
#define SIM_PEER_TABLE_MAX 4096u
/* Initial LMDB map per node: small, grows by doubling (thousands of nodes share the machine). */
#define SIM_MAP_BYTES_INITIAL (2ull * 1024 * 1024)

#define SIM_US 1000000ull
#define SIM_NONE UINT32_MAX

/* ---- Random numbers: xoshiro256**, one generator per purpose and node --------------------- */
typedef struct sim_rng {
    uint64_t s[4];
} sim_rng;

/* Purposes: separate streams so that a change in one (a new kind of fault) leaves the others'
 * draws, and so most of a run, unchanged. */
enum { RNG_NET = 1, RNG_WORK, RNG_SYNC, RNG_FAULT, RNG_CLOCK, RNG_TOPO, RNG_IDENT, RNG_INJECT };

void sim_rng_seed(sim_rng *r, uint64_t seed, uint64_t purpose, uint64_t index);
uint64_t sim_rng_next(sim_rng *r);
double sim_rng_unit(sim_rng *r);                    /* [0, 1) */
uint64_t sim_rng_below(sim_rng *r, uint64_t n);     /* [0, n), n > 0 */
double sim_rng_range(sim_rng *r, double lo, double hi);
double sim_rng_exp(sim_rng *r, double mean);        /* exponential with this mean */

/* ---- Events ------------------------------------------------------------------------------- */
typedef enum ev_type {
    EV_DELIVER = 1,     /* a frame arrives: conn slot, uid, end */
    EV_PUMP,            /* a session end may send again (radio backlog drained) */
    EV_WAKE,            /* a session's expiry */
    EV_SYNC,            /* triggered policy: start the syncs a node wants */
    EV_ROUND,           /* the sync timer (triggered) or a gossip round */
    EV_WORK,            /* the next workload action of a node */
    EV_FORM,            /* the next form of a registration in progress */
    EV_CRASH,
    EV_RESTART,
    EV_MULE,            /* a supervisor moves to the next stop of its route */
    EV_WALK,            /* a field device moves to another team */
    EV_EVENING,         /* everybody goes to base */
    EV_PARTITION,       /* a partition opens */
    EV_HEAL,            /* a partition heals: arg = partition id */
    EV_UPLINK_TICK,
    EV_UPLINK_ARRIVE,   /* a request reaches the campaign service */
    EV_UPLINK_ACK,      /* its answer reaches the gateway */
    EV_SAMPLE,          /* timeline sample */
    EV_END,             /* the scenario's duration is over */
    EV_SETTLE_CHECK,    /* settle: has everything converged? */
} ev_type;

typedef struct sim_frame {
    uint32_t refs;
    uint32_t len;
    uint8_t data[];
} sim_frame;

typedef struct sim_event {
    uint64_t t;          /* virtual time, microseconds */
    uint64_t seq;        /* push order: breaks ties deterministically */
    uint32_t type;
    uint32_t node;
    uint32_t gen;        /* the node's (or connection's) generation when queued */
    uint32_t arg;
    sim_frame *frame;
} sim_event;

typedef struct sim_heap {
    sim_event *ev;
    size_t n, cap;
    uint64_t seq;
} sim_heap;

/* ---- Nodes -------------------------------------------------------------------------------- */
typedef enum sim_role { ROLE_FIELD = 0, ROLE_MULE = 1, ROLE_GATEWAY = 2 } sim_role;

typedef struct sim_peer_entry {
    uint32_t peer;
    uint64_t synced_gen;   /* our store_gen when we were last level with the peer */
} sim_peer_entry;

/* A registration in progress on a device (the forms being filled): lost when it crashes. */
typedef struct sim_form {
    bool active;
    uint32_t household;    /* entity index */
    uint32_t members_left;
    uint32_t individual;   /* the individual waiting for its household_member link */
    uint32_t step;         /* 0 individual, 1 member link, 2 beneficiary, 3 task, 4 delivery */
    uint32_t beneficiary;
    uint32_t task;
} sim_form;

typedef struct sim_node {
    uint32_t id;
    sim_role role;
    uint32_t team;         /* home team (field devices), route offset (mules) */
    uint32_t loc;          /* current location: team index, base, or SIM_NONE (travelling) */
    uint32_t part;         /* partition id, 0 when in none */
    uint32_t mule_stop;    /* supervisors: position on the route */

    mesh_identity ident;
    char scope[MESH_SCOPE_BYTES_MAX + 1];
    uint64_t sid;          /* the node's own stream */
    char dir[SIM_PATH_BYTES];
    mesh_store *store;     /* NULL while down */
    bool up;
    uint32_t gen;          /* bumped by each crash: events queued before it are stale */
    int64_t skew_ms;

    sim_rng rng_net, rng_work, rng_sync, rng_fault, rng_clock;

    /* Sessions. */
    uint32_t *conns;       /* active connection slots (sessions_max) */
    uint32_t nconns;
    uint64_t store_gen;    /* ops added to the store (own and received) */
    bool sync_queued;
    uint32_t sync_rr;      /* round-robin start among neighbours */
    sim_peer_entry *peers;
    uint32_t npeers, peers_cap;
    uint64_t tx_busy;      /* radio busy until (us) */

    sim_form form;

    /* What the node authored (committed), for the checks. */
    uint64_t my_seq;
    uint8_t my_tip[MESH_HASH_BYTES];
    uint32_t *ops;         /* registry index of each op of its stream, by seq - 1 */
    uint32_t ops_cap;

    /* Counters. */
    uint64_t ops_held;
    uint64_t frames_sent, bytes_sent, frames_recv, bytes_recv;
    uint64_t sessions_started, sessions_ok, sessions_failed, ops_applied, ops_rejected;
    uint64_t crashes;
} sim_node;

/* ---- Connections: one sync session between two nodes, one engine session per end --------- */
typedef struct sim_conn {
    bool used;
    uint32_t uid;          /* never reused: frames and timers of an old connection are stale */
    uint32_t node[2];      /* [0] initiator, [1] responder */
    uint32_t gen[2];       /* node generations at start */
    mesh_session *s[2];    /* the responder's is created by the first frame that reaches it */
    bool ended[2];
    bool wake_armed[2];
    bool pump_armed[2];
    uint64_t applied[2];   /* ops_applied already counted */
    uint64_t gen_at_start[2];
    uint64_t started;
    uint64_t last_arrive[2];   /* by sending end: links are FIFO unless a frame is held back */
    bool broken[2];            /* by sending end: the transport gave up; later frames are lost */
    /* Test hook: what was removed from each direction (index: sending end). */
    uint64_t removed_ops[2], removed_frames[2];
} sim_conn;

/* ---- Registry of everything the workload created ------------------------------------------ */
typedef enum sim_etype {
    ET_HOUSEHOLD = 0, ET_INDIVIDUAL, ET_MEMBER, ET_BENEFICIARY, ET_TASK, ET_COUNT
} sim_etype;

typedef struct sim_entity {
    uint8_t uuid[MESH_UUID_BYTES];
    uint8_t type;
    uint8_t nparents;
    uint32_t team;
    uint32_t parents[2];   /* entity indexes */
    uint32_t create_op;    /* registry index of its create, SIM_NONE before */
    uint32_t *ops;         /* registry indexes of its ops */
    uint32_t nops, ops_cap;
} sim_entity;

typedef struct sim_op {
    uint32_t author;
    uint32_t entity;
    uint32_t seq;
    uint32_t rv;
    uint32_t base;         /* registry index, SIM_NONE for a create */
    uint8_t kind;
    uint8_t applied;       /* campaign model: times applied (0 or 1) */
    uint8_t hash[MESH_HASH_BYTES];
    uint64_t t;            /* creation time (us) */
} sim_op;

/* ---- Gateway uplink and the campaign model ------------------------------------------------- */
typedef struct sim_uplink {
    uint32_t gw;           /* gateway node, SIM_NONE if none */
    bool inflight;
    uint32_t inflight_gen;
    uint32_t *batch;       /* registry indexes in the request in flight */
    uint32_t nbatch;
    uint64_t *cursor;      /* per author node: last op seq the campaign service confirmed */
    uint64_t *pending_cursor; /* per author node: cursor once the request in flight is answered */
    uint8_t *in_batch;     /* per op: in the request being built */
    uint64_t applied, duplicates, requests, lost;
    uint64_t order_violations;
    char first_violation[256];
} sim_uplink;

/* ---- Timeline ----------------------------------------------------------------------------- */
typedef struct sim_sample {
    double t_s;
    uint64_t ops_created;
    double coverage;       /* sum of ops held / (nodes x ops created) */
    uint32_t nodes_complete;
    uint32_t nodes_up;
    uint32_t sessions_active;
    uint64_t sessions_total;
    uint64_t frames_sent, bytes_sent;
    uint64_t ops_delivered;
    bool uplink_up;
    uint32_t partitions_open;
} sim_sample;

/* ---- The world ---------------------------------------------------------------------------- */
typedef struct sim_world {
    sim_config cfg;
    const sim_output *out;
    sim_result *res;
    char root[SIM_PATH_BYTES - 64]; /* the run's directory (node dirs add a suffix) */

    uint64_t now;                /* virtual time, us */
    uint64_t end_us;             /* end of the scenario's duration */
    uint64_t settle_deadline;
    bool settling;               /* after the duration: no workload, no faults */
    bool quiescing;              /* no new sessions; wait for the last ones to end */
    bool stop;
    sim_heap heap;
    mesh_hash_state trace;

    uint32_t nnodes;
    sim_node *nodes;
    uint32_t base_loc;           /* = teams */
    uint32_t nlocs;              /* teams + 1 */
    uint32_t **members;          /* per location: node ids, sorted */
    uint32_t *nmembers, *members_cap;
    uint32_t partitions_open;
    uint32_t next_partition;

    sim_conn *conns;
    uint32_t nconns, conns_cap;
    uint32_t *free_conns;
    uint32_t nfree_conns;
    uint32_t next_uid;
    uint32_t conns_active;

    mesh_buf sendbuf;
    mesh_buf scratch;

    sim_entity *ents;
    uint32_t nents, ents_cap;
    sim_op *ops;
    uint32_t nops, ops_cap;
    uint32_t **hot;              /* per team: ring of recent entity indexes */
    uint32_t *hot_n, *hot_pos;

    uint32_t ncomplete;          /* nodes holding every op created */
    uint64_t last_op;            /* time of the last op (us) */
    int64_t converged;           /* time (us) all nodes held all ops, after the last op; -1 */

    sim_uplink up;

    /* Test hook state. */
    bool inject_chosen;
    uint64_t inject_sid, inject_seq;
    bool inject_spent;

    /* Failure reasons of sessions (by MESH_E* code). */
    uint64_t fail_by_code[32];
    uint64_t engine_errors;
    char engine_error[256];

    sim_sample *samples;
    uint32_t nsamples;

    /* Stream id -> author node, sorted by sid. */
    uint64_t *sid_sorted;
    uint32_t *sid_node;
} sim_world;

/* ---- sim.c -------------------------------------------------------------------------------- */
void sim_push(sim_world *w, uint64_t t, uint32_t type, uint32_t node, uint32_t gen, uint32_t arg,
              sim_frame *frame);
void sim_trace(sim_world *w, uint32_t kind, uint32_t a, uint32_t b, uint64_t x);
uint64_t sim_node_ms(const sim_world *w, const sim_node *n);
void sim_store_changed(sim_world *w, sim_node *n, uint64_t ops);
void sim_schedule_sync(sim_world *w, sim_node *n, double delay_s);
void sim_engine_error(sim_world *w, const char *fmt, ...) MESH_PRINTF(2, 3);
bool sim_reachable(const sim_world *w, uint32_t a, uint32_t b);
void sim_peer_synced(sim_world *w, sim_node *n, uint32_t peer, uint64_t gen);
void sim_meet(sim_world *w, uint32_t node);
uint32_t sim_author_of(const sim_world *w, uint64_t sid);   /* SIM_NONE if no node's */

/* ---- net.c -------------------------------------------------------------------------------- */
int sim_conn_open(sim_world *w, uint32_t a, uint32_t b);
bool sim_conn_busy(const sim_world *w, uint32_t a, uint32_t b);
void sim_on_deliver(sim_world *w, const sim_event *ev);
void sim_on_pump(sim_world *w, const sim_event *ev);
void sim_on_wake(sim_world *w, const sim_event *ev);
void sim_conn_end_all(sim_world *w, sim_node *n); /* a crash: drop every session of n */
void sim_conns_free(sim_world *w);

/* ---- world.c ------------------------------------------------------------------------------ */
int sim_world_topology(sim_world *w);
void sim_move(sim_world *w, uint32_t node, uint32_t loc);
void sim_on_mule(sim_world *w, const sim_event *ev);
void sim_on_walk(sim_world *w, const sim_event *ev);
void sim_on_evening(sim_world *w);
void sim_on_partition(sim_world *w, const sim_event *ev);
void sim_on_heal(sim_world *w, const sim_event *ev);
void sim_heal_partitions(sim_world *w);
void sim_members_free(sim_world *w);

/* ---- workload.c --------------------------------------------------------------------------- */
int sim_workload_init(sim_world *w);
void sim_workload_start(sim_world *w, sim_node *n);  /* schedules the node's next action */
void sim_on_work(sim_world *w, const sim_event *ev);
void sim_on_form(sim_world *w, const sim_event *ev);
int sim_initial_ops(sim_world *w, sim_node *n);
void sim_workload_free(sim_world *w);

/* ---- uplink.c ----------------------------------------------------------------------------- */
int sim_uplink_init(sim_world *w);
bool sim_uplink_is_up(const sim_world *w);
void sim_on_uplink_tick(sim_world *w, const sim_event *ev);
void sim_on_uplink_arrive(sim_world *w, const sim_event *ev);
void sim_on_uplink_ack(sim_world *w, const sim_event *ev);
void sim_uplink_restart(sim_world *w);   /* the gateway restarted: reload its cursors */
void sim_uplink_crash(sim_world *w);
void sim_uplink_free(sim_world *w);

/* ---- check.c ------------------------------------------------------------------------------ */
void sim_checks(sim_world *w);
bool sim_groups_settled(sim_world *w);

/* ---- report.c ----------------------------------------------------------------------------- */
void sim_sample_take(sim_world *w);
void sim_report(sim_world *w);
int sim_write_timeline(sim_world *w, const char *path);
int sim_write_plot(sim_world *w, const char *path);

#endif
