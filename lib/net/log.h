/*
 * log.h - the daemon's log: one line per event on stderr, with a UTC timestamp and a level.
 *
 * The transport and the event loop log what an operator needs to follow a node in the field
 * (peers found and lost, sessions and what they moved, refusals, errors); the library below
 * never logs, it returns errors. Lines look like
 *   2026-05-01T09:30:00.123Z info  session with 3f2a..91 done: sent 10 ops, received 1000 ops
 */
#ifndef MESH_NET_LOG_H
#define MESH_NET_LOG_H

#include "common/common.h"

typedef enum mesh_log_level {
    MESH_LOG_ERROR = 0,
    MESH_LOG_WARN = 1,
    MESH_LOG_INFO = 2,
    MESH_LOG_DEBUG = 3,
} mesh_log_level;

/* Lines above `level` are dropped. The default is MESH_LOG_INFO. Not thread-safe against
 * concurrent calls to itself; logging itself is (one fprintf per line). */
void mesh_log_set_level(mesh_log_level level);
mesh_log_level mesh_log_get_level(void);

/* Parses "error", "warn", "info" or "debug". Returns MESH_OK or MESH_EINVAL. */
int mesh_log_level_parse(const char *text, mesh_log_level *out);

/* A prefix for every line of this process (e.g. "A" in tests running several loops), or NULL. */
void mesh_log_set_tag(const char *tag);

void mesh_log(mesh_log_level level, const char *fmt, ...) MESH_PRINTF(2, 3);

#define mesh_log_error(...) mesh_log(MESH_LOG_ERROR, __VA_ARGS__)
#define mesh_log_warn(...) mesh_log(MESH_LOG_WARN, __VA_ARGS__)
#define mesh_log_info(...) mesh_log(MESH_LOG_INFO, __VA_ARGS__)
#define mesh_log_debug(...) \
    (mesh_log_get_level() >= MESH_LOG_DEBUG ? mesh_log(MESH_LOG_DEBUG, __VA_ARGS__) : (void)0)

/* A short form of a public key for log lines ("3f2a9c1d"): the first 8 hex characters. */
void mesh_log_key(const uint8_t pk[32], char out[9]);

#endif
