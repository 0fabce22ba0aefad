/*
 * config.c - This file implements scenario files and overrides: one table lists every key
 * (section, name, type, range, default, meaning), and the INI reader, the --set overrides, the
 * range check, `--keys` and the replay file all walk that table, so they cannot disagree.
 *
 * Format (docs/SIMULATOR.md, "Scenario files"): `[section]` lines, `key = value` lines, comments
 * from `#` or `;` to the end of a line, blank lines ignored. Unknown sections or keys, values
 * out of range and repeated keys are errors naming the file and line.
 */
#include "sim.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum key_type { T_DOUBLE, T_U32, T_U64, T_BOOL, T_TEXT, T_POLICY, T_HEAL, T_INJECT } key_type;

typedef struct key_def {
    const char *section;
    const char *name;
    key_type type;
    size_t off;
    double min, max;
    const char *help;
} key_def;

#define F(m) offsetof(sim_config, m)

static const key_def KEYS[] = {
    {"scenario", "name", T_TEXT, F(name), 0, 0, "short name printed in reports"},
    {"scenario", "description", T_TEXT, F(description), 0, 0, "one line about the scenario"},
    {"scenario", "seed", T_U64, F(seed), 0, 1.8e19, "seed of every random choice (--seed)"},
    {"scenario", "duration", T_DOUBLE, F(duration_s), 1, 3.0e7, "seconds of simulated time with workload and faults (--duration)"},
    {"scenario", "epoch_ms", T_U64, F(epoch_ms), 1e12, 4e12, "Unix time in ms of virtual time 0"},
    {"scenario", "sample", T_DOUBLE, F(sample_s), 0, 86400, "timeline resolution in seconds; 0: duration/400"},

    {"topology", "teams", T_U32, F(teams), 1, SIM_TEAMS_MAX, "teams of field devices, each a cluster in radio range"},
    {"topology", "team_size", T_U32, F(team_size), 1, SIM_NODES_MAX, "field devices per team"},
    {"topology", "mules", T_U32, F(mules), 0, 256, "supervisors who walk from team to team (data mules)"},
    {"topology", "gateways", T_U32, F(gateways), 0, 1, "a gateway node at base with an uplink to the campaign service"},
    {"topology", "mule_dwell", T_DOUBLE, F(mule_dwell_s), 1, 1e6, "seconds a supervisor stays with a team"},
    {"topology", "mule_travel", T_DOUBLE, F(mule_travel_s), 0, 1e6, "seconds a supervisor is out of range between teams"},
    {"topology", "evening", T_DOUBLE, F(evening_s), -1, 3.0e7, "time (s) when everybody returns to base; -1: never"},
    {"topology", "walk_per_hour", T_DOUBLE, F(walk_per_hour), 0, 100, "rate at which a field device moves to another team"},

    {"network", "latency_ms", T_DOUBLE, F(latency_ms), 0, 60000, "one-way latency of a frame"},
    {"network", "jitter_ms", T_DOUBLE, F(jitter_ms), 0, 60000, "uniform extra latency 0..jitter"},
    {"network", "bandwidth_kbps", T_DOUBLE, F(bandwidth_kbps), 0, 1e7, "radio bandwidth per node (kbit/s); 0: unlimited"},
    {"network", "loss", T_DOUBLE, F(loss), 0, 0.9, "probability that one radio transmission of a frame is lost; the transport retransmits (--loss)"},
    {"network", "rto_ms", T_DOUBLE, F(rto_ms), 1, 60000, "first retransmission timeout; doubles on each retry"},
    {"network", "retries", T_U32, F(retries), 0, 16, "retransmissions before the connection breaks (its later frames are lost)"},
    {"network", "drop", T_DOUBLE, F(drop), 0, 0.9, "probability that the transport loses a frame outright: the engine sees a gap"},
    {"network", "duplicate", T_DOUBLE, F(duplicate), 0, 0.9, "probability that a frame is delivered twice"},
    {"network", "reorder", T_DOUBLE, F(reorder), 0, 0.9, "probability that a frame is held back (later ones overtake it)"},
    {"network", "reorder_ms", T_DOUBLE, F(reorder_ms), 0, 60000, "how long a held-back frame waits"},

    {"uplink", "start", T_DOUBLE, F(uplink_start_s), 0, 3.0e7, "time (s) of the first uplink window"},
    {"uplink", "period", T_DOUBLE, F(uplink_period_s), 1, 3.0e7, "seconds from one uplink window to the next"},
    {"uplink", "up", T_DOUBLE, F(uplink_up_s), 0, 3.0e7, "seconds the uplink stays up in each period"},
    {"uplink", "latency_ms", T_DOUBLE, F(uplink_latency_ms), 0, 600000, "round trip of one request to the campaign service"},
    {"uplink", "batch", T_U32, F(uplink_batch), 1, 100000, "ops per request"},
    {"uplink", "tick", T_DOUBLE, F(uplink_tick_s), 0.001, 86400, "seconds between requests while up"},

    {"sync", "policy", T_POLICY, F(policy), 0, 0, "triggered (like the daemon) or gossip (random push-pull rounds)"},
    {"sync", "interval", T_DOUBLE, F(interval_s), 0.01, 1e6, "sync timer (triggered) or round length (gossip), seconds"},
    {"sync", "change_delay", T_DOUBLE, F(change_delay_s), 0, 3600, "triggered: seconds from a store change to the syncs it starts"},
    {"sync", "fanout", T_U32, F(fanout), 1, 64, "gossip: peers per node per round"},
    {"sync", "sessions_max", T_U32, F(sessions_max), 1, 16, "sessions per node at once"},
    {"sync", "idle_timeout_ms", T_U32, F(idle_timeout_ms), 0, 3600000, "session idle timeout; 0: the engine's default"},
    {"sync", "frame_bytes_max", T_U32, F(frame_bytes_max), 0, 1048576, "largest frame; 0: the protocol maximum"},

    {"workload", "register_per_hour", T_DOUBLE, F(register_per_hour), 0, 3600, "household registrations per field device per hour"},
    {"workload", "members_min", T_U32, F(members_min), 0, 16, "fewest individuals per household"},
    {"workload", "members_max", T_U32, F(members_max), 0, 16, "most individuals per household"},
    {"workload", "form_min", T_DOUBLE, F(form_s_min), 0, 3600, "shortest time to fill one form (s)"},
    {"workload", "form_max", T_DOUBLE, F(form_s_max), 0, 3600, "longest time to fill one form (s)"},
    {"workload", "update_per_hour", T_DOUBLE, F(update_per_hour), 0, 3600, "edits of the team's recent entities per field device per hour"},
    {"workload", "delete_per_hour", T_DOUBLE, F(delete_per_hour), 0, 3600, "deletes per field device per hour"},
    {"workload", "mule_update_per_hour", T_DOUBLE, F(mule_update_per_hour), 0, 3600, "supervisor edits per hour of the team it is with"},
    {"workload", "hot_set", T_U32, F(hot_set), 1, 100000, "recent entities per team that edits and deletes choose from"},
    {"workload", "initial_ops", T_U32, F(initial_ops), 0, 100000, "ops every node writes at time 0"},
    {"workload", "work_at_base", T_BOOL, F(work_at_base), 0, 0, "keep registering after the evening"},

    {"faults", "crash_per_hour", T_DOUBLE, F(crash_per_hour), 0, 100, "crashes per node per hour (process killed; committed data survives)"},
    {"faults", "restart_min", T_DOUBLE, F(restart_min_s), 0, 1e6, "shortest time (s) before a crashed node restarts"},
    {"faults", "restart_max", T_DOUBLE, F(restart_max_s), 0, 1e6, "longest time (s) before a crashed node restarts"},
    {"faults", "skew", T_DOUBLE, F(skew_s), 0, 300, "clock skew bound (s): each node's clock is off by up to +-skew"},
    {"faults", "partition_per_hour", T_DOUBLE, F(partition_per_hour), 0, 100, "partitions opened per hour (a random group is cut off)"},
    {"faults", "partition_min", T_DOUBLE, F(partition_min_s), 0, 1e6, "shortest partition (s)"},
    {"faults", "partition_max", T_DOUBLE, F(partition_max_s), 0, 1e6, "longest partition (s)"},
    {"faults", "partition_at", T_DOUBLE, F(partition_at_s), -1, 3.0e7, "time (s) of a scheduled partition that splits the busiest location in two; -1: none"},
    {"faults", "partition_for", T_DOUBLE, F(partition_for_s), 0, 3.0e7, "how long the scheduled partition lasts (s)"},

    {"end", "heal", T_HEAL, F(heal), 0, 0, "all (everybody at base), partitions (lift partitions only) or none"},
    {"end", "settle_max", T_DOUBLE, F(settle_max_s), 0, 1e7, "seconds allowed after the duration to converge"},
    {"end", "stop_when_converged", T_BOOL, F(stop_when_converged), 0, 0, "end as soon as every node holds every op"},

    {"test", "inject", T_INJECT, F(inject), 0, 0, "test-only network fault: none, drop-op, drop-op-once"},
    {"test", "inject_after", T_DOUBLE, F(inject_after_s), 0, 3.0e7, "time (s) from which the injected fault acts"},
};

#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static const char *const POLICY_NAMES[] = {"triggered", "gossip"};
static const char *const HEAL_NAMES[] = {"none", "partitions", "all"};
static const char *const INJECT_NAMES[] = {"none", "drop-op", "drop-op-once"};

void sim_config_defaults(sim_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "unnamed");
    c->seed = 1;
    c->duration_s = 3600;
    c->epoch_ms = 1772434800000ull; /* 2026-03-02 07:00 UTC */
    c->teams = 1;
    c->team_size = 4;
    c->mule_dwell_s = 3600;
    c->mule_travel_s = 600;
    c->evening_s = -1;
    c->latency_ms = 20;
    c->jitter_ms = 10;
    c->bandwidth_kbps = 2000;
    c->rto_ms = 200;
    c->retries = 6;
    c->uplink_period_s = 3600;
    c->uplink_up_s = 3600;
    c->uplink_latency_ms = 400;
    c->uplink_batch = 200;
    c->uplink_tick_s = 2;
    c->policy = SIM_POLICY_TRIGGERED;
    c->interval_s = 900;
    c->change_delay_s = 0.5;
    c->fanout = 1;
    c->sessions_max = 16;
    c->idle_timeout_ms = 10000;
    c->register_per_hour = 3;
    c->members_min = 1;
    c->members_max = 4;
    c->form_s_min = 20;
    c->form_s_max = 90;
    c->update_per_hour = 4;
    c->delete_per_hour = 0.2;
    c->mule_update_per_hour = 6;
    c->hot_set = 32;
    c->restart_min_s = 30;
    c->restart_max_s = 600;
    c->partition_min_s = 300;
    c->partition_max_s = 1800;
    c->partition_at_s = -1;
    c->partition_for_s = 3600;
    c->heal = SIM_HEAL_ALL;
    c->settle_max_s = 7200;
}

static const key_def *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].name, name) == 0)
            return &KEYS[i];
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0) return true;
    return false;
}

static int enum_parse(const char *const *names, size_t n, const char *v)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], v) == 0) return (int)i;
    return -1;
}

/* Stores `value` into the field of `k`; returns 0 or -1 with a message (without location). */
static int set_value(sim_config *c, const key_def *k, const char *value, char *err, size_t errlen)
{
    void *p = (char *)c + k->off;
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case T_TEXT: {
        size_t cap = k->off == F(name) ? sizeof c->name : sizeof c->description;
        if (strlen(value) >= cap) {
            snprintf(err, errlen, "%s.%s is longer than %zu bytes", k->section, k->name, cap - 1);
            return -1;
        }
        snprintf(p, cap, "%s", value);
        return 0;
    }
    case T_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0 || strcmp(value, "yes") == 0)
            *(bool *)p = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0 || strcmp(value, "no") == 0)
            *(bool *)p = false;
        else {
            snprintf(err, errlen, "%s.%s must be true or false, not '%s'", k->section, k->name,
                     value);
            return -1;
        }
        return 0;
    case T_POLICY:
    case T_HEAL:
    case T_INJECT: {
        const char *const *names = k->type == T_POLICY ? POLICY_NAMES
                                   : k->type == T_HEAL ? HEAL_NAMES
                                                       : INJECT_NAMES;
        size_t n = k->type == T_POLICY ? 2 : 3;
        int v = enum_parse(names, n, value);
        if (v < 0) {
            snprintf(err, errlen, "%s.%s must be one of %s, %s%s%s; not '%s'", k->section,
                     k->name, names[0], names[1], n > 2 ? ", " : "", n > 2 ? names[2] : "", value);
            return -1;
        }
        *(int *)p = v;
        return 0;
    }
    case T_DOUBLE: {
        double d = strtod(value, &end);
        if (end == value || *end != '\0' || errno != 0 || !isfinite(d)) {
            snprintf(err, errlen, "%s.%s must be a number, not '%s'", k->section, k->name, value);
            return -1;
        }
        if (d < k->min || d > k->max) {
            snprintf(err, errlen, "%s.%s = %g is outside %g..%g", k->section, k->name, d, k->min,
                     k->max);
            return -1;
        }
        *(double *)p = d;
        return 0;
    }
    case T_U32:
    case T_U64: {
        if (value[0] == '-') {
            snprintf(err, errlen, "%s.%s must not be negative", k->section, k->name);
            return -1;
        }
        unsigned long long u = strtoull(value, &end, 0);
        if (end == value || *end != '\0' || errno != 0) {
            snprintf(err, errlen, "%s.%s must be a whole number, not '%s'", k->section, k->name,
                     value);
            return -1;
        }
        if ((double)u < k->min || (double)u > k->max) {
            snprintf(err, errlen, "%s.%s = %llu is outside %.0f..%.0f", k->section, k->name, u,
                     k->min, k->max);
            return -1;
        }
        if (k->type == T_U32) *(uint32_t *)p = (uint32_t)u;
        else *(uint64_t *)p = (uint64_t)u;
        return 0;
    }
    }
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

#define LINE_BYTES_MAX 1024
#define FILE_LINES_MAX 10000

int sim_config_load(sim_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open scenario %s: %s", path, strerror(errno));
        return -1;
    }
    char line[LINE_BYTES_MAX + 2];
    char section[64] = "";
    bool seen[NKEYS] = {false};
    unsigned lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (lineno > FILE_LINES_MAX) {
            snprintf(err, errlen, "%s: more than %d lines", path, FILE_LINES_MAX);
            rc = -1;
            break;
        }
        if (strlen(line) > LINE_BYTES_MAX) {
            snprintf(err, errlen, "%s:%u: line longer than %d bytes", path, lineno, LINE_BYTES_MAX);
            rc = -1;
            break;
        }
        /* Comments run to the end of the line (description text may not hold # or ;). */
        char *hash = strpbrk(line, "#;");
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (*s == '\0') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (close == NULL || close[1] != '\0') {
                snprintf(err, errlen, "%s:%u: a section line is [name]", path, lineno);
                rc = -1;
                break;
            }
            *close = '\0';
            char *name = trim(s + 1);
            if (!section_known(name)) {
                snprintf(err, errlen, "%s:%u: unknown section [%s] (meshsync-sim --keys lists them)",
                         path, lineno, name);
                rc = -1;
                break;
            }
            snprintf(section, sizeof section, "%s", name);
            continue;
        }
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (section[0] == '\0') {
            snprintf(err, errlen, "%s:%u: key '%s' before any [section]", path, lineno, key);
            rc = -1;
            break;
        }
        const key_def *k = find_key(section, key);
        if (k == NULL) {
            snprintf(err, errlen, "%s:%u: unknown key '%s' in [%s] (meshsync-sim --keys lists them)",
                     path, lineno, key, section);
            rc = -1;
            break;
        }
        size_t idx = (size_t)(k - KEYS);
        if (seen[idx]) {
            snprintf(err, errlen, "%s:%u: %s.%s is set twice", path, lineno, section, key);
            rc = -1;
            break;
        }
        seen[idx] = true;
        char msg[400];
        if (set_value(c, k, value, msg, sizeof msg) != 0) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, msg);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "cannot read scenario %s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

int sim_config_set(sim_config *c, const char *assignment, char *err, size_t errlen)
{
    char buf[LINE_BYTES_MAX];
    if (strlen(assignment) >= sizeof buf) {
        snprintf(err, errlen, "--set value too long");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", assignment);
    char *eq = strchr(buf, '=');
    char *dot = strchr(buf, '.');
    if (eq == NULL || dot == NULL || dot > eq) {
        snprintf(err, errlen, "--set takes section.key=value, not '%s'", assignment);
        return -1;
    }
    *eq = '\0';
    *dot = '\0';
    const key_def *k = find_key(trim(buf), trim(dot + 1));
    if (k == NULL) {
        snprintf(err, errlen, "--set: unknown key '%s.%s' (meshsync-sim --keys lists them)", buf,
                 dot + 1);
        return -1;
    }
    return set_value(c, k, trim(eq + 1), err, errlen);
}

uint32_t sim_config_nodes(const sim_config *c)
{
    uint64_t n = (uint64_t)c->teams * c->team_size + c->mules + c->gateways;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

void sim_config_set_nodes(sim_config *c, uint32_t n)
{
    uint32_t fixed = c->mules + c->gateways;
    uint32_t field = n > fixed ? n - fixed : 1;
    if (c->teams <= 1) {
        c->teams = 1;
        c->team_size = field;
        return;
    }
    uint32_t teams = (field + c->team_size / 2) / c->team_size;
    if (teams < 1) teams = 1;
    if (teams > SIM_TEAMS_MAX) teams = SIM_TEAMS_MAX;
    c->teams = teams;
    c->team_size = (field + teams - 1) / teams;
}

int sim_config_check(const sim_config *c, char *err, size_t errlen)
{
    uint64_t n = (uint64_t)c->teams * c->team_size + c->mules + c->gateways;
    if (n < 2 || n > SIM_NODES_MAX) {
        snprintf(err, errlen, "the topology has %llu nodes; the simulator runs 2..%u",
                 (unsigned long long)n, SIM_NODES_MAX);
        return -1;
    }
    if (c->members_min > c->members_max) {
        snprintf(err, errlen, "workload.members_min %u is above members_max %u", c->members_min,
                 c->members_max);
        return -1;
    }
    if (c->form_s_min > c->form_s_max || c->restart_min_s > c->restart_max_s ||
        c->partition_min_s > c->partition_max_s) {
        snprintf(err, errlen, "a *_min value is above its *_max (form, restart or partition)");
        return -1;
    }
    if (c->uplink_up_s > c->uplink_period_s) {
        snprintf(err, errlen, "uplink.up %g is longer than uplink.period %g", c->uplink_up_s,
                 c->uplink_period_s);
        return -1;
    }
    if (c->frame_bytes_max != 0 && c->frame_bytes_max < 4096) {
        snprintf(err, errlen, "sync.frame_bytes_max %u is below 4096 (a frame must hold an op)",
                 c->frame_bytes_max);
        return -1;
    }
    if (c->policy == SIM_POLICY_GOSSIP && c->fanout > c->sessions_max) {
        snprintf(err, errlen, "sync.fanout %u is above sync.sessions_max %u", c->fanout,
                 c->sessions_max);
        return -1;
    }
    return 0;
}

/* exact: every digit a double needs to read back the same (replays); else the short form. */
static void print_value(const sim_config *c, const key_def *k, FILE *out, bool exact)
{
    const void *p = (const char *)c + k->off;
    switch (k->type) {
    case T_TEXT: fprintf(out, "%s", (const char *)p); break;
    case T_BOOL: fprintf(out, "%s", *(const bool *)p ? "true" : "false"); break;
    case T_POLICY: fprintf(out, "%s", POLICY_NAMES[*(const int *)p]); break;
    case T_HEAL: fprintf(out, "%s", HEAL_NAMES[*(const int *)p]); break;
    case T_INJECT: fprintf(out, "%s", INJECT_NAMES[*(const int *)p]); break;
    case T_DOUBLE: fprintf(out, exact ? "%.17g" : "%g", *(const double *)p); break;
    case T_U32: fprintf(out, "%u", *(const uint32_t *)p); break;
    case T_U64: fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    }
}

void sim_config_print_keys(FILE *out)
{
    sim_config d;
    sim_config_defaults(&d);
    const char *section = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &KEYS[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(out, "  %-22s default ", k->name);
        print_value(&d, k, out, false);
        fprintf(out, "\n      %s\n", k->help);
    }
}

void sim_config_write(const sim_config *c, FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &KEYS[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(out, "%s = ", k->name);
        print_value(c, k, out, true);
        fprintf(out, "\n");
    }
}
