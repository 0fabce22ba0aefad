/*
 * log.c - timestamped, levelled log lines on stderr for the daemon (see log.h).
 */
#include "net/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static mesh_log_level g_level = MESH_LOG_INFO;
static const char *g_tag = NULL;

static const char *const LEVEL_NAMES[] = {"error", "warn", "info", "debug"};

void mesh_log_set_level(mesh_log_level level) { g_level = level; }
mesh_log_level mesh_log_get_level(void) { return g_level; }
void mesh_log_set_tag(const char *tag) { g_tag = tag; }

int mesh_log_level_parse(const char *text, mesh_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(text, LEVEL_NAMES[i]) == 0) {
            *out = (mesh_log_level)i;
            return MESH_OK;
        }
    return mesh_err(MESH_EINVAL, "log level '%s' is not one of error, warn, info, debug", text);
}

void mesh_log(mesh_log_level level, const char *fmt, ...)
{
    if (level > g_level) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, LEVEL_NAMES[level], g_tag ? g_tag : "",
                     g_tag ? ": " : "");
    if (n < 0 || (size_t)n >= sizeof line) n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    /* One write per line, so lines of concurrent processes sharing stderr do not interleave. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}

void mesh_log_key(const uint8_t pk[32], char out[9])
{
    char hex[65];
    mesh_hex_encode(pk, 32, hex);
    memcpy(out, hex, 8);
    out[8] = '\0';
}
