/*
 * world.c - This file implements where nodes are: locations (one per team, plus base where the
 * gateway stands), supervisors walking a route of teams (data mules), field devices moving to
 * another team, everybody going back to base in the evening, and partitions that cut a random
 * part of a location off until they heal. Two nodes can talk when both are up, at the same
 * location (not travelling) and on the same side of any partition.
 */
#include "sim_int.h"

#include <stdlib.h>

static int members_add(sim_world *w, uint32_t loc, uint32_t node)
{
    if (w->nmembers[loc] == w->members_cap[loc]) {
        uint32_t cap = w->members_cap[loc] ? w->members_cap[loc] * 2 : 8;
        uint32_t *m = realloc(w->members[loc], cap * sizeof *m);
        if (m == NULL) return -1;
        w->members[loc] = m;
        w->members_cap[loc] = cap;
    }
    uint32_t *m = w->members[loc];
    uint32_t i = w->nmembers[loc];
    while (i > 0 && m[i - 1] > node) {
        m[i] = m[i - 1];
        i--;
    }
    m[i] = node;
    w->nmembers[loc]++;
    return 0;
}

static void members_remove(sim_world *w, uint32_t loc, uint32_t node)
{
    uint32_t *m = w->members[loc];
    uint32_t n = w->nmembers[loc];
    for (uint32_t i = 0; i < n; i++) {
        if (m[i] == node) {
            memmove(m + i, m + i + 1, (n - i - 1) * sizeof *m);
            w->nmembers[loc]--;
            return;
        }
    }
}

void sim_move(sim_world *w, uint32_t node, uint32_t loc)
{
    sim_node *n = &w->nodes[node];
    if (n->loc == loc) return;
    if (n->loc != SIM_NONE) members_remove(w, n->loc, node);
    n->loc = loc;
    n->part = 0;  /* walking away leaves the dead zone */
    sim_trace(w, 5000, node, loc, 0);
    if (loc == SIM_NONE) return;
    if (members_add(w, loc, node) != 0) {
        sim_engine_error(w, "out of memory moving node %u", node);
        w->stop = true;
        return;
    }
    sim_meet(w, node);
}

/* A supervisor's route: the teams it oversees, in order. */
static uint32_t mule_team(const sim_world *w, const sim_node *n, uint32_t stop)
{
    uint32_t teams = w->cfg.teams, mules = w->cfg.mules;
    if (teams < mules || mules == 0) return (n->team + stop) % teams;
    /* Mule i oversees teams i, i + mules, i + 2 mules, ... */
    uint32_t own = (teams - n->team + mules - 1) / mules;
    return n->team + (stop % own) * mules;
}

static bool evening_passed(const sim_world *w)
{
    return w->cfg.evening_s >= 0 && (double)w->now >= w->cfg.evening_s * SIM_US;
}

void sim_on_mule(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (w->settling || evening_passed(w)) return;
    uint64_t next;
    if (n->loc != SIM_NONE && w->cfg.mule_travel_s > 0) {
        sim_move(w, n->id, SIM_NONE);
        next = (uint64_t)(w->cfg.mule_travel_s * SIM_US);
    } else {
        n->mule_stop++;
        sim_move(w, n->id, mule_team(w, n, n->mule_stop));
        next = (uint64_t)(w->cfg.mule_dwell_s * SIM_US);
    }
    sim_push(w, w->now + next, EV_MULE, n->id, 0, 0, NULL);
}

static void schedule_walk(sim_world *w, sim_node *n)
{
    if (w->cfg.walk_per_hour <= 0 || w->cfg.teams < 2) return;
    double dt = sim_rng_exp(&n->rng_fault, 3600.0 / w->cfg.walk_per_hour);
    uint64_t t = w->now + (uint64_t)(dt * SIM_US);
    if (t < w->end_us) sim_push(w, t, EV_WALK, n->id, 0, 0, NULL);
}

void sim_on_walk(sim_world *w, const sim_event *ev)
{
    sim_node *n = &w->nodes[ev->node];
    if (w->settling || evening_passed(w)) return;
    sim_rng r;
    sim_rng_seed(&r, w->cfg.seed, RNG_TOPO, ((uint64_t)n->id << 32) ^ w->now);
    uint32_t team = (uint32_t)sim_rng_below(&r, w->cfg.teams - 1);
    if (team >= n->team) team++;
    n->team = team;
    sim_move(w, n->id, team);
    schedule_walk(w, n);
}

void sim_on_evening(sim_world *w)
{
    for (uint32_t i = 0; i < w->nnodes; i++) sim_move(w, i, w->base_loc);
}

/* ---- Partitions --------------------------------------------------------------------------- */

static void schedule_partition(sim_world *w, sim_rng *r)
{
    if (w->cfg.partition_per_hour <= 0) return;
    double dt = sim_rng_exp(r, 3600.0 / w->cfg.partition_per_hour);
    uint64_t t = w->now + (uint64_t)(dt * SIM_US);
    if (t < w->end_us) sim_push(w, t, EV_PARTITION, 0, 0, 0, NULL);
}

void sim_on_partition(sim_world *w, const sim_event *ev)
{
    if (w->settling) return;
    bool scheduled = ev->arg == 1;
    /* One generator for the whole partition process, re-derived from the time so that the
     * process does not depend on other events. */
    sim_rng r;
    sim_rng_seed(&r, w->cfg.seed, RNG_TOPO, w->now ^ 0x5041525449ull);
    if (!scheduled) schedule_partition(w, &r);
    /* Scheduled: the busiest location. Random: a random location with two nodes or more. */
    uint32_t loc = SIM_NONE;
    if (scheduled) {
        for (uint32_t l = 0; l < w->nlocs; l++)
            if (w->nmembers[l] >= 2 && (loc == SIM_NONE || w->nmembers[l] > w->nmembers[loc]))
                loc = l;
    } else {
        uint32_t start = (uint32_t)sim_rng_below(&r, w->nlocs);
        for (uint32_t k = 0; k < w->nlocs; k++) {
            uint32_t l = (start + k) % w->nlocs;
            if (w->nmembers[l] >= 2) {
                loc = l;
                break;
            }
        }
    }
    if (loc == SIM_NONE) return;
    uint32_t id = ++w->next_partition;
    uint32_t n = w->nmembers[loc], cut = 0;
    /* Each node is cut off with probability 1/2, but at least one stays and one goes. */
    for (uint32_t i = 0; i < n; i++) {
        bool go = sim_rng_unit(&r) < 0.5;
        if (i == n - 1 && cut == 0) go = true;
        if (i == n - 1 && cut == n - 1) go = false;
        if (go) {
            w->nodes[w->members[loc][i]].part = id;
            cut++;
        }
    }
    w->partitions_open++;
    w->res->partitions++;
    sim_trace(w, 5001, loc, id, cut);
    double len = scheduled ? w->cfg.partition_for_s
                           : sim_rng_range(&r, w->cfg.partition_min_s, w->cfg.partition_max_s);
    sim_push(w, w->now + (uint64_t)(len * SIM_US), EV_HEAL, 0, 0, id, NULL);
}

static void heal_one(sim_world *w, uint32_t id)
{
    bool any = false;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        if (w->nodes[i].part == id) {
            w->nodes[i].part = 0;
            any = true;
        }
    }
    if (w->partitions_open > 0) w->partitions_open--;
    if (!any) return;
    for (uint32_t i = 0; i < w->nnodes; i++) sim_meet(w, i);
}

void sim_on_heal(sim_world *w, const sim_event *ev) { heal_one(w, ev->arg); }

void sim_heal_partitions(sim_world *w)
{
    bool any = false;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        if (w->nodes[i].part != 0) {
            w->nodes[i].part = 0;
            any = true;
        }
    }
    w->partitions_open = 0;
    if (any)
        for (uint32_t i = 0; i < w->nnodes; i++) sim_meet(w, i);
}

/* ---- Setup -------------------------------------------------------------------------------- */

int sim_world_topology(sim_world *w)
{
    const sim_config *c = &w->cfg;
    w->base_loc = c->teams;
    w->nlocs = c->teams + 1;
    w->members = calloc(w->nlocs, sizeof *w->members);
    w->nmembers = calloc(w->nlocs, sizeof *w->nmembers);
    w->members_cap = calloc(w->nlocs, sizeof *w->members_cap);
    if (!w->members || !w->nmembers || !w->members_cap) return -1;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        sim_node *n = &w->nodes[i];
        uint32_t loc = n->role == ROLE_FIELD  ? n->team
                       : n->role == ROLE_MULE ? mule_team(w, n, 0)
                                              : w->base_loc;
        n->loc = loc;
        if (members_add(w, loc, i) != 0) return -1;
        if (n->role == ROLE_MULE)
            sim_push(w, (uint64_t)(c->mule_dwell_s * SIM_US), EV_MULE, i, 0, 0, NULL);
        if (n->role == ROLE_FIELD) schedule_walk(w, n);
    }
    if (c->evening_s >= 0) sim_push(w, (uint64_t)(c->evening_s * SIM_US), EV_EVENING, 0, 0, 0, NULL);
    sim_rng r;
    sim_rng_seed(&r, c->seed, RNG_TOPO, 0);
    schedule_partition(w, &r);
    if (c->partition_at_s >= 0)
        sim_push(w, (uint64_t)(c->partition_at_s * SIM_US), EV_PARTITION, 0, 0, 1, NULL);
    return 0;
}

void sim_members_free(sim_world *w)
{
    if (w->members)
        for (uint32_t i = 0; i < w->nlocs; i++) free(w->members[i]);
    free(w->members);
    free(w->nmembers);
    free(w->members_cap);
    w->members = NULL;
}
