/*
 * faults.c - fault injection: every request that is not a /_test endpoint (and that matches
 * --fault-paths, when given) draws from one seeded generator, in arrival order: a 5xx answer
 * without processing (--fail-rate), a response held back past the client's timeout
 * (--slow-rate, --slow-ms; the request is still processed), and, for writes, an accepted
 * request that is silently never applied (--drop-writes). With --fault-seed the sequence of
 * decisions is the same on every run for the same order of requests.
 */
#include <string.h>

#include <sodium.h>

#include "campaign.h"

/* splitmix64: tiny, fast, and good enough to pick faults reproducibly. */
static uint64_t next_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *state)
{
    return (double)(next_u64(state) >> 11) * 0x1.0p-53;
}

void cs_faults_init(cs_server *srv)
{
    cs_faults *f = &srv->faults;
    pthread_mutex_init(&f->mu, NULL);
    if (srv->cfg.fault_seed_set)
        f->rng = srv->cfg.fault_seed;
    else
        randombytes_buf(&f->rng, sizeof f->rng);
    f->fail_rate = srv->cfg.fail_rate;
    f->slow_rate = srv->cfg.slow_rate;
    f->drop_rate = srv->cfg.drop_rate;
    f->slow_ms = srv->cfg.slow_ms;
}

static bool path_selected(const cs_config *cfg, const char *path)
{
    if (cfg->n_fault_paths == 0)
        return true;
    for (unsigned i = 0; i < cfg->n_fault_paths; i++)
        if (!strncmp(path, cfg->fault_paths[i], strlen(cfg->fault_paths[i])))
            return true;
    return false;
}

cs_fault_decision cs_faults_draw(cs_server *srv, const char *path, const cs_route *route)
{
    cs_fault_decision d = {0};
    if (route->is_test || !path_selected(&srv->cfg, path))
        return d;
    cs_faults *f = &srv->faults;
    pthread_mutex_lock(&f->mu);
    /* Always four draws per request, so one rate does not shift the others' sequence. */
    double u_fail = next_unit(&f->rng), u_kind = next_unit(&f->rng);
    double u_slow = next_unit(&f->rng), u_drop = next_unit(&f->rng);
    if (u_fail < f->fail_rate)
        d.fail_status = u_kind < 0.5 ? 500 : 503;
    if (u_slow < f->slow_rate)
        d.slow_ms = f->slow_ms;
    if (route->is_write && !d.fail_status && u_drop < f->drop_rate)
        d.drop = true;
    pthread_mutex_unlock(&f->mu);

    pthread_mutex_lock(&srv->stats.mu);
    srv->stats.faults_failed += d.fail_status != 0;
    srv->stats.faults_slowed += d.slow_ms != 0;
    pthread_mutex_unlock(&srv->stats.mu);
    return d;
}
