/*
 * curl_driver.h - the gateway's HTTP driver: the only code that calls libcurl. It takes the
 * requests the sans-IO core (gateway.h) hands out, performs them with curl's multi interface
 * (concurrent transfers, kept-alive connections, gzip responses), and hands each outcome back
 * with the time. The `meshsync gateway` command, the integration tests and the benchmark run
 * it; the unit tests and the simulator drive the core without it.
 */
#ifndef MESH_GATEWAY_CURL_DRIVER_H
#define MESH_GATEWAY_CURL_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/gateway.h"

typedef struct mesh_gw_driver mesh_gw_driver;

typedef struct mesh_gw_driver_opts {
    const char *base_url;        /* cfg.base_url */
    bool gzip_requests;          /* gzip request bodies (Content-Encoding: gzip) */
    /* Append every request (method, path, headers but no secrets, body) as one JSON line to
     * this file before it is sent, flushed: a record to check against the contracts. */
    const char *record_path;
    bool measure_gzip;           /* count what gzip would make of each body (benchmarks) */
} mesh_gw_driver_opts;

typedef struct mesh_gw_driver_stats {
    uint64_t requests;           /* transfers completed */
    uint64_t bytes_up;           /* request headers and bodies as sent */
    uint64_t body_bytes_up;      /* request bodies as sent */
    uint64_t body_bytes_gzip;    /* with measure_gzip: those bodies gzipped */
    uint64_t bytes_down;         /* response headers and bodies as received (gzip) */
    uint64_t body_bytes_decoded; /* response bodies after gunzip */
    uint64_t net_errors;         /* transfers without an HTTP response */
    uint64_t wait_ms;            /* time spent waiting for the network (the rest is the core) */
} mesh_gw_driver_stats;

/* Makes a driver for core `g` (borrowed). Returns MESH_OK, MESH_EIO (curl or the record file
 * cannot be set up), MESH_ENOMEM. */
int mesh_gw_driver_new(mesh_gw *g, const mesh_gw_driver_opts *o, mesh_gw_driver **out);

/* Abandons transfers in flight (the core confirms them by search next time) and frees. */
void mesh_gw_driver_free(mesh_gw_driver *d);

/*
 * One turn: hands out every request the core has now, moves data, hands finished transfers
 * back, and waits up to `wait_ms` (less if the core has a deadline sooner) for the network.
 * `now_ms` is a callback for the wall clock (the core's time base). Returns MESH_OK or the
 * core's error (a failed store write: make a new core and driver).
 */
int mesh_gw_driver_step(mesh_gw_driver *d, uint32_t wait_ms, uint64_t (*now_ms)(void *ctx),
                        void *ctx);

/* Transfers in flight. */
unsigned mesh_gw_driver_inflight(const mesh_gw_driver *d);

void mesh_gw_driver_stats_get(const mesh_gw_driver *d, mesh_gw_driver_stats *out);

#endif
