/*
 * daemon.c - per-peer state for `meshsync peers` and `meshsync status` (see daemon.h).
 */
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/loop.h"

void daemon_format_bytes(uint64_t n, char *out, size_t cap)
{
    if (n < 1024) snprintf(out, cap, "%llu B", (unsigned long long)n);
    else if (n < 1024 * 1024) snprintf(out, cap, "%.1f KiB", (double)n / 1024);
    else if (n < 1024ull * 1024 * 1024) snprintf(out, cap, "%.1f MiB", (double)n / (1024 * 1024));
    else snprintf(out, cap, "%.2f GiB", (double)n / (1024.0 * 1024 * 1024));
}

void daemon_format_ago(uint64_t ms, char *out, size_t cap)
{
    if (ms == 0) {
        snprintf(out, cap, "never");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t s = now > ms ? (now - ms) / 1000 : 0;
    if (s < 60) snprintf(out, cap, "%llu s ago", (unsigned long long)s);
    else if (s < 3600) snprintf(out, cap, "%llu min ago", (unsigned long long)(s / 60));
    else if (s < 86400) snprintf(out, cap, "%llu h ago", (unsigned long long)(s / 3600));
    else snprintf(out, cap, "%llu days ago", (unsigned long long)(s / 86400));
}

static json_t *from_file(const cli_ctx *ctx)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", ctx->data_dir, MESH_PEERS_FILE);
    json_t *peers = NULL;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (root) peers = json_incref(json_object_get(root, "peers"));
    json_decref(root);
    if (!json_is_array(peers)) {
        json_decref(peers);
        peers = json_array();
    }
    json_t *o = json_object();
    json_object_set_new(o, "running", json_false());
    json_object_set_new(o, "peers", peers);
    return o;
}

json_t *daemon_peers(const cli_ctx *ctx)
{
    if (!mesh_daemon_running(ctx->data_dir)) return from_file(ctx);
    char *reply = NULL;
    int rc = mesh_control_call(ctx->data_dir, "{\"cmd\":\"peers\"}", DAEMON_CALL_MS, &reply);
    if (rc == MESH_ENOTFOUND) return from_file(ctx);
    if (rc != MESH_OK) {
        cli_fail(ctx, rc);
        return NULL;
    }
    json_error_t je;
    json_t *o = json_loads(reply, 0, &je);
    mesh_free(reply);
    if (!json_is_object(o)) {
        json_decref(o);
        cli_error(ctx, "the daemon of %s sent a malformed answer", ctx->data_dir);
        return NULL;
    }
    json_object_set_new(o, "running", json_true());
    return o;
}

static uint64_t u64(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static const char *str(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s && s[0] ? s : dflt;
}

void daemon_print_peers(FILE *f, json_t *state)
{
    int running = json_is_true(json_object_get(state, "running"));
    json_t *peers = json_object_get(state, "peers");
    if (json_array_size(peers) == 0) {
        fprintf(f, "no peers known%s\n",
                running ? " yet" : " (the daemon is not running: start it with 'meshsync run')");
        return;
    }
    if (!running)
        fprintf(f, "(the daemon is not running; figures are from its last run)\n");
    fprintf(f, "%-8s  %-26s  %-10s  %-12s  %-21s  %-21s  %s\n", "PEER", "ENDPOINT", "STATE",
            "LAST SYNC", "SENT ops / bytes", "RECEIVED ops / bytes", "LAST ERROR");
    size_t i;
    json_t *p;
    json_array_foreach(peers, i, p) {
        char ago[32], bs[24], br[24], sent[48], recv[48];
        const char *key = str(p, "key", "?");
        daemon_format_ago(u64(p, "last_sync_ms"), ago, sizeof ago);
        daemon_format_bytes(u64(p, "bytes_sent"), bs, sizeof bs);
        daemon_format_bytes(u64(p, "bytes_received"), br, sizeof br);
        snprintf(sent, sizeof sent, "%llu / %s", (unsigned long long)u64(p, "ops_sent"), bs);
        snprintf(recv, sizeof recv, "%llu / %s", (unsigned long long)u64(p, "ops_received"), br);
        const char *st = "-";
        if (running) {
            json_t *sess = json_object_get(p, "session");
            const char *ep = json_string_value(json_object_get(p, "endpoint"));
            st = json_is_object(sess) ? "syncing"
                 : json_is_true(json_object_get(p, "connected")) ? "connected"
                 : ep && ep[0] ? "away"
                               : "inbound";
        }
        fprintf(f, "%.8s  %-26s  %-10s  %-12s  %-21s  %-21s  %s\n", key,
                str(p, "endpoint", "(inbound)"), st, ago, sent, recv, str(p, "last_error", "-"));
    }
}

void daemon_status_section(cli_ctx *ctx, cli_json *j)
{
    json_t *state = daemon_peers(ctx);
    if (state == NULL) return;
    json_t *peers = json_object_get(state, "peers");
    int running = json_is_true(json_object_get(state, "running"));
    if (!running && json_array_size(peers) == 0) {
        /* A node that never ran a daemon: nothing to add. */
        json_decref(state);
        return;
    }
    if (j) {
        cli_json_key(j, "network");
        char *text = json_dumps(state, JSON_COMPACT);
        if (text) cli_json_raw(j, text, strlen(text));
        else cli_json_null(j);
        free(text);
    } else {
        FILE *f = ctx->out;
        json_t *d = json_object_get(state, "daemon");
        if (running)
            fprintf(f, "daemon     running (pid %llu), listening on %s\n",
                    (unsigned long long)u64(d, "pid"), str(d, "listen", "-"));
        else
            fprintf(f, "daemon     not running\n");
        if (json_array_size(peers) > 0) {
            fputc('\n', f);
            daemon_print_peers(f, state);
        }
    }
    json_decref(state);
}
