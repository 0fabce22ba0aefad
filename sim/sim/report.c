/*
 * report.c - This file implements what a run prints and writes: timeline samples, the summary
 * table (convergence, rounds, traffic and sessions per node, ops delivered, checks, trace
 * hash), the same as JSON, the timeline as CSV or JSON, and an SVG plot of convergence over
 * time (drawn here: no plotting dependency).
 */
#include "sim_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ROLE_NAMES[] = {"field", "supervisor", "gateway"};

void sim_sample_take(sim_world *w)
{
    if (w->nsamples == SIM_SAMPLES_MAX) return;
    if (w->samples == NULL) {
        w->samples = calloc(SIM_SAMPLES_MAX, sizeof *w->samples);
        if (w->samples == NULL) return;
    }
    sim_sample *s = &w->samples[w->nsamples];
    memset(s, 0, sizeof *s);
    s->t_s = (double)w->now / SIM_US;
    if (w->nsamples > 0 && w->samples[w->nsamples - 1].t_s == s->t_s) {
        s = &w->samples[w->nsamples - 1];
        memset(s, 0, sizeof *s);
        s->t_s = (double)w->now / SIM_US;
    } else {
        w->nsamples++;
    }
    double held = 0;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        const sim_node *n = &w->nodes[i];
        held += (double)n->ops_held;
        if (n->up) s->nodes_up++;
    }
    s->ops_created = w->nops;
    s->coverage = w->nops ? held / ((double)w->nops * w->nnodes) : 1.0;
    s->nodes_complete = w->ncomplete;
    s->sessions_active = w->conns_active;
    s->sessions_total = w->res->sessions;
    s->frames_sent = w->res->frames_sent;
    s->bytes_sent = w->res->bytes_sent;
    s->ops_delivered = w->up.applied;
    s->uplink_up = sim_uplink_is_up(w);
    s->partitions_open = w->partitions_open;
}

/* ---- Summary ------------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct dist {
    uint64_t min, median, max;
    double mean;
} dist;

static dist distribution(const sim_world *w, size_t off)
{
    dist d = {0};
    uint64_t *v = malloc(w->nnodes * sizeof *v);
    if (v == NULL || w->nnodes == 0) {
        free(v);
        return d;
    }
    double sum = 0;
    for (uint32_t i = 0; i < w->nnodes; i++) {
        v[i] = *(const uint64_t *)((const char *)&w->nodes[i] + off);
        sum += (double)v[i];
    }
    qsort(v, w->nnodes, sizeof *v, cmp_u64);
    d.min = v[0];
    d.max = v[w->nnodes - 1];
    d.median = v[w->nnodes / 2];
    d.mean = sum / w->nnodes;
    free(v);
    return d;
}

static const struct {
    const char *label;
    const char *key;
    size_t off;
} NODE_STATS[] = {
    {"bytes sent", "bytes_sent", offsetof(sim_node, bytes_sent)},
    {"messages sent", "frames_sent", offsetof(sim_node, frames_sent)},
    {"bytes received", "bytes_received", offsetof(sim_node, bytes_recv)},
    {"messages received", "frames_received", offsetof(sim_node, frames_recv)},
    {"sessions started", "sessions_started", offsetof(sim_node, sessions_started)},
    {"sessions done", "sessions_ok", offsetof(sim_node, sessions_ok)},
    {"sessions failed", "sessions_failed", offsetof(sim_node, sessions_failed)},
    {"ops written", "ops_written", offsetof(sim_node, my_seq)},
    {"ops received", "ops_received", offsetof(sim_node, ops_applied)},
    {"crashes", "crashes", offsetof(sim_node, crashes)},
};
#define NSTATS (sizeof NODE_STATS / sizeof NODE_STATS[0])

static const char *const CHECK_NAMES[] = {"converge", "no-loss", "gateway", "pending", "engine"};

static void print_failures_by_code(const sim_world *w, FILE *f)
{
    bool any = false;
    for (int c = 0; c < 32; c++) {
        if (w->fail_by_code[c] == 0) continue;
        fprintf(f, "%s%llu %s", any ? ", " : " (", (unsigned long long)w->fail_by_code[c],
                c == 0 ? "interrupted" : mesh_strerror(-c));
        any = true;
    }
    if (any) fprintf(f, ")");
}

static void print_summary(const sim_world *w, FILE *f)
{
    const sim_config *c = &w->cfg;
    const sim_result *r = w->res;
    fprintf(f, "meshsync-sim: %s, seed %llu: %u nodes (%u team%s x %u, %u supervisor%s, %u "
            "gateway%s), %s sync every %g s\n",
            c->name, (unsigned long long)c->seed, w->nnodes, c->teams, c->teams == 1 ? "" : "s",
            c->team_size, c->mules, c->mules == 1 ? "" : "s", c->gateways,
            c->gateways == 1 ? "" : "s",
            c->policy == SIM_POLICY_GOSSIP ? "gossip" : "triggered", c->interval_s);
    fprintf(f, "  simulated %.1f s (%.1f s of scenario, %.1f s settling) in %.2f s wall: %.0f "
            "node-seconds per wall second\n",
            r->sim_s, c->duration_s < r->sim_s ? c->duration_s : r->sim_s,
            r->sim_s > c->duration_s ? r->sim_s - c->duration_s : 0.0, r->wall_s,
            r->wall_s > 0 ? r->node_seconds / r->wall_s : 0.0);
    fprintf(f, "  ops created        %llu (the last at %.1f s); open conflicts at the end %u\n",
            (unsigned long long)r->ops_created, r->last_op_s, r->conflicts);
    if (r->converged_s >= 0)
        fprintf(f, "  convergence        every node held every op at %.1f s: %.1f s after the "
                "last op, %.0f sync interval%s\n",
                r->converged_s, r->converged_s - r->last_op_s, r->rounds,
                r->rounds == 1 ? "" : "s");
    else
        fprintf(f, "  convergence        never: not every node held every op at once after the "
                "last op\n");
    if (w->up.gw != SIM_NONE)
        fprintf(f, "  ops delivered      %llu of %llu applied by the campaign model in %llu "
                "requests (%llu repeats recognised, %llu requests or answers lost)\n",
                (unsigned long long)w->up.applied, (unsigned long long)r->ops_created,
                (unsigned long long)w->up.requests, (unsigned long long)w->up.duplicates,
                (unsigned long long)w->up.lost);
    fprintf(f, "  sessions           %llu started, %llu done, %llu failed",
            (unsigned long long)r->sessions, (unsigned long long)r->sessions_ok,
            (unsigned long long)r->sessions_failed);
    print_failures_by_code(w, f);
    fprintf(f, "\n  frames             %llu sent (%.2f MB), %llu radio losses repaired by the "
            "transport, %llu frames lost\n",
            (unsigned long long)r->frames_sent, (double)r->bytes_sent / 1e6,
            (unsigned long long)r->retransmissions, (unsigned long long)r->frames_lost);
    fprintf(f, "  faults             %llu crashes, %llu partitions%s\n",
            (unsigned long long)r->crashes, (unsigned long long)r->partitions,
            c->inject ? "; test fault injected" : "");
    if (c->inject)
        fprintf(f, "  injected           %llu ops removed from frames in transit\n",
                (unsigned long long)r->inject_hits);
    fprintf(f, "\n  %-20s %12s %12s %12s %12s\n", "per node", "min", "median", "mean", "max");
    for (size_t i = 0; i < NSTATS; i++) {
        dist d = distribution(w, NODE_STATS[i].off);
        fprintf(f, "  %-20s %12llu %12llu %12.1f %12llu\n", NODE_STATS[i].label,
                (unsigned long long)d.min, (unsigned long long)d.median, d.mean,
                (unsigned long long)d.max);
    }
    if (w->out->per_node) {
        fprintf(f, "\n  %5s %-10s %5s %10s %8s %10s %8s %8s %8s %8s\n", "node", "role", "team",
                "bytes out", "msgs out", "bytes in", "sessions", "written", "held", "crashes");
        for (uint32_t i = 0; i < w->nnodes; i++) {
            const sim_node *n = &w->nodes[i];
            char team[12] = "-";
            if (n->role == ROLE_FIELD) snprintf(team, sizeof team, "%u", n->team);
            fprintf(f, "  %5u %-10s %5s %10llu %8llu %10llu %8llu %8llu %8llu %8llu\n", i,
                    ROLE_NAMES[n->role], team, (unsigned long long)n->bytes_sent,
                    (unsigned long long)n->frames_sent, (unsigned long long)n->bytes_recv,
                    (unsigned long long)n->sessions_started, (unsigned long long)n->my_seq,
                    (unsigned long long)n->ops_held, (unsigned long long)n->crashes);
        }
    }
    fprintf(f, "\n  checks            ");
    for (int i = 0; i < 5; i++) {
        if (i == 2 && (w->up.gw == SIM_NONE || c->heal != SIM_HEAL_ALL)) {
            fprintf(f, " gateway n/a");
            continue;
        }
        fprintf(f, " %s %s", CHECK_NAMES[i], r->failed & (1u << i) ? "FAILED" : "ok");
    }
    fprintf(f, "\n  trace hash         %s\n", r->trace_hex);
    if (r->failed) fprintf(f, "\n%s", r->failure);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void print_json(const sim_world *w, FILE *f)
{
    const sim_config *c = &w->cfg;
    const sim_result *r = w->res;
    fprintf(f, "{\"scenario\":");
    json_str(f, c->name);
    fprintf(f, ",\"seed\":%llu,\"nodes\":%u,\"ok\":%s,\"failed\":[",
            (unsigned long long)c->seed, w->nnodes, r->failed ? "false" : "true");
    bool first = true;
    for (int i = 0; i < 5; i++) {
        if (!(r->failed & (1u << i))) continue;
        fprintf(f, "%s\"%s\"", first ? "" : ",", CHECK_NAMES[i]);
        first = false;
    }
    fprintf(f, "],\"failure\":");
    json_str(f, r->failure);
    fprintf(f, ",\"trace\":\"%s\",\"sim_s\":%.6f,\"wall_s\":%.3f,\"node_seconds_per_wall_s\":%.1f,"
            "\"ops_created\":%llu,\"last_op_s\":%.6f,\"converged_s\":%.6f,\"rounds\":%.0f,"
            "\"ops_delivered\":%llu,\"uplink_repeats\":%llu,\"conflicts\":%u,"
            "\"sessions\":%llu,\"sessions_ok\":%llu,\"sessions_failed\":%llu,"
            "\"frames_sent\":%llu,\"retransmissions\":%llu,\"frames_lost\":%llu,\"bytes_sent\":%llu,\"crashes\":%llu,"
            "\"partitions\":%llu,\"inject_hits\":%llu,\"events\":%llu,\"per_node_stats\":{",
            r->trace_hex, r->sim_s, r->wall_s, r->wall_s > 0 ? r->node_seconds / r->wall_s : 0.0,
            (unsigned long long)r->ops_created, r->last_op_s, r->converged_s, r->rounds,
            (unsigned long long)w->up.applied, (unsigned long long)w->up.duplicates, r->conflicts,
            (unsigned long long)r->sessions, (unsigned long long)r->sessions_ok,
            (unsigned long long)r->sessions_failed, (unsigned long long)r->frames_sent,
            (unsigned long long)r->retransmissions, (unsigned long long)r->frames_lost, (unsigned long long)r->bytes_sent,
            (unsigned long long)r->crashes, (unsigned long long)r->partitions,
            (unsigned long long)r->inject_hits, (unsigned long long)r->events);
    for (size_t i = 0; i < NSTATS; i++) {
        dist d = distribution(w, NODE_STATS[i].off);
        fprintf(f, "%s\"%s\":{\"min\":%llu,\"median\":%llu,\"mean\":%.3f,\"max\":%llu}",
                i ? "," : "", NODE_STATS[i].key, (unsigned long long)d.min,
                (unsigned long long)d.median, d.mean, (unsigned long long)d.max);
    }
    fprintf(f, "},\"per_node\":[");
    for (uint32_t i = 0; i < w->nnodes; i++) {
        const sim_node *n = &w->nodes[i];
        fprintf(f, "%s{\"node\":%u,\"role\":\"%s\"", i ? "," : "", i, ROLE_NAMES[n->role]);
        for (size_t k = 0; k < NSTATS; k++)
            fprintf(f, ",\"%s\":%llu", NODE_STATS[k].key,
                    (unsigned long long)*(const uint64_t *)((const char *)n + NODE_STATS[k].off));
        fprintf(f, ",\"ops_held\":%llu}", (unsigned long long)n->ops_held);
    }
    fprintf(f, "]}\n");
}

void sim_report(sim_world *w)
{
    if (w->out->report) print_summary(w, w->out->report);
    if (w->out->json) print_json(w, w->out->json);
}

/* ---- Timeline ----------------------------------------------------------------------------- */

int sim_write_timeline(sim_world *w, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "meshsync-sim: cannot write the timeline %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(path);
    bool json = len >= 5 && strcmp(path + len - 5, ".json") == 0;
    if (json) {
        fprintf(f, "{\"scenario\":");
        json_str(f, w->cfg.name);
        fprintf(f, ",\"seed\":%llu,\"nodes\":%u,\"samples\":[\n",
                (unsigned long long)w->cfg.seed, w->nnodes);
    }
    if (!json) fprintf(f, "t_s,ops_created,coverage,nodes_complete,nodes_up,sessions_active,"
                    "sessions_total,frames_sent,bytes_sent,ops_delivered,uplink_up,"
                    "partitions_open\n");
    for (uint32_t i = 0; i < w->nsamples; i++) {
        const sim_sample *s = &w->samples[i];
        if (json)
            fprintf(f, "%s{\"t_s\":%.3f,\"ops_created\":%llu,\"coverage\":%.6f,"
                    "\"nodes_complete\":%u,\"nodes_up\":%u,\"sessions_active\":%u,"
                    "\"sessions_total\":%llu,\"frames_sent\":%llu,\"bytes_sent\":%llu,"
                    "\"ops_delivered\":%llu,\"uplink_up\":%s,\"partitions_open\":%u}",
                    i ? ",\n" : "", s->t_s, (unsigned long long)s->ops_created, s->coverage,
                    s->nodes_complete, s->nodes_up, s->sessions_active,
                    (unsigned long long)s->sessions_total, (unsigned long long)s->frames_sent,
                    (unsigned long long)s->bytes_sent, (unsigned long long)s->ops_delivered,
                    s->uplink_up ? "true" : "false", s->partitions_open);
        else
            fprintf(f, "%.3f,%llu,%.6f,%u,%u,%u,%llu,%llu,%llu,%llu,%d,%u\n", s->t_s,
                    (unsigned long long)s->ops_created, s->coverage, s->nodes_complete,
                    s->nodes_up, s->sessions_active, (unsigned long long)s->sessions_total,
                    (unsigned long long)s->frames_sent, (unsigned long long)s->bytes_sent,
                    (unsigned long long)s->ops_delivered, s->uplink_up ? 1 : 0,
                    s->partitions_open);
    }
    if (json) fprintf(f, "\n]}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "meshsync-sim: writing the timeline %s failed: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- SVG plot ----------------------------------------------------------------------------- */

#define PW 960.0
#define PH 460.0
#define ML 70.0
#define MR 30.0
#define MT 50.0
#define MB 90.0

static double px(double t, double tmax) { return ML + (PW - ML - MR) * (tmax > 0 ? t / tmax : 0); }
static double py(double v) { return MT + (PH - MT - MB) * (1.0 - v); }

static void polyline(FILE *f, const sim_world *w, double tmax, int which, const char *color)
{
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
    for (uint32_t i = 0; i < w->nsamples; i++) {
        const sim_sample *s = &w->samples[i];
        if (s->ops_created == 0) continue;   /* nothing to hold or deliver yet */
        double v = which == 0   ? s->coverage
                   : which == 1 ? (double)s->nodes_complete / (w->nnodes ? w->nnodes : 1)
                                : (s->ops_created ? (double)s->ops_delivered / s->ops_created : 1);
        fprintf(f, "%.1f,%.1f ", px(s->t_s, tmax), py(v));
    }
    fprintf(f, "\"/>\n");
}

int sim_write_plot(sim_world *w, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "meshsync-sim: cannot write the plot %s: %s\n", path, strerror(errno));
        return -1;
    }
    double tmax = w->nsamples ? w->samples[w->nsamples - 1].t_s : 1;
    if (tmax <= 0) tmax = 1;
    bool hours = tmax >= 3 * 3600;
    double unit = hours ? 3600 : 1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n", PW, PH);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"16\">meshsync-sim: ", ML);
    for (const char *p = w->cfg.name; *p; p++) {
        if (*p == '<') fputs("&lt;", f);
        else if (*p == '>') fputs("&gt;", f);
        else if (*p == '&') fputs("&amp;", f);
        else fputc(*p, f);
    }
    fprintf(f, ", seed %llu, %u nodes</text>\n", (unsigned long long)w->cfg.seed, w->nnodes);
    /* Shading: uplink up (from the samples), settling. */
    for (uint32_t i = 0; i + 1 < w->nsamples; i++) {
        const sim_sample *s = &w->samples[i];
        double x0 = px(s->t_s, tmax), x1 = px(w->samples[i + 1].t_s, tmax);
        if (s->uplink_up && w->up.gw != SIM_NONE)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"8\" fill=\"#f4c542\"/>\n",
                    x0, PH - MB + 22, x1 - x0 + 0.2);
        if (s->partitions_open)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"8\" fill=\"#d9534f\"/>\n",
                    x0, PH - MB + 32, x1 - x0 + 0.2);
    }
    double dur = w->cfg.duration_s;
    if (dur < tmax && (tmax - dur) / tmax > 0.02)
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#eeeeee\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" fill=\"#777\">settling</text>\n",
                px(dur, tmax), MT, px(tmax, tmax) - px(dur, tmax), PH - MT - MB,
                px(dur, tmax) + 4, MT + 14);
    /* Axes and grid. */
    for (int i = 0; i <= 10; i++) {
        double v = i / 10.0;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n",
                ML, py(v), PW - MR, py(v), ML - 6, py(v) + 4, v);
    }
    /* About eight ticks, every 1, 2 or 5 x 10^k units. */
    double span = tmax / unit, raw = span / 8, mag = pow(10, floor(log10(raw)));
    double norm = raw / mag;
    double step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
    for (double t = 0; t <= span + 1e-9; t += step) {
        double x = px(t * unit, tmax);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
                x, MT, x, PH - MB, x, PH - MB + 16, t);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">time (%s)</text>\n",
            (ML + PW - MR) / 2, PH - 22, hours ? "hours" : "seconds");
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#333\"/>\n", ML, MT, PW - ML - MR, PH - MT - MB);
    if (w->converged >= 0) {
        double x = px((double)w->converged / SIM_US, tmax);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#2a7\" "
                "stroke-dasharray=\"5,4\"/><text x=\"%.1f\" y=\"%.0f\" fill=\"#2a7\" "
                "text-anchor=\"end\">converged</text>\n",
                x, MT, x, PH - MB, x - 4, MT + 28);
    }
    polyline(f, w, tmax, 0, "#1f77b4");
    polyline(f, w, tmax, 1, "#2ca02c");
    if (w->up.gw != SIM_NONE) polyline(f, w, tmax, 2, "#ff7f0e");
    /* Legend. */
    double ly = PH - 10;
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#1f77b4\" "
            "stroke-width=\"3\"/><text x=\"%.0f\" y=\"%.0f\">ops held / (nodes x ops created)"
            "</text>\n", ML, ly - 4, ML + 20, ly - 4, ML + 26, ly);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#2ca02c\" "
            "stroke-width=\"3\"/><text x=\"%.0f\" y=\"%.0f\">nodes holding every op</text>\n",
            ML + 260, ly - 4, ML + 280, ly - 4, ML + 286, ly);
    if (w->up.gw != SIM_NONE)
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#ff7f0e\" "
                "stroke-width=\"3\"/><text x=\"%.0f\" y=\"%.0f\">ops at the campaign service"
                "</text><rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"8\" fill=\"#f4c542\"/>"
                "<text x=\"%.0f\" y=\"%.0f\">uplink up</text><rect x=\"%.0f\" y=\"%.0f\" "
                "width=\"14\" height=\"8\" fill=\"#d9534f\"/><text x=\"%.0f\" y=\"%.0f\">"
                "partition</text>\n",
                ML + 450, ly - 4, ML + 470, ly - 4, ML + 476, ly, ML + 660, ly - 10, ML + 678, ly,
                ML + 760, ly - 10, ML + 778, ly);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "meshsync-sim: writing the plot %s failed: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}
