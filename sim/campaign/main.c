/*
 * main.c - meshsync-campaign: command-line flags, the seed, start-up, and a clean shutdown on
 * SIGINT/SIGTERM. The first line on stdout is "listening on HOST:PORT" once the service
 * accepts requests (with --port 0, PORT is the one the kernel picked); logs go to stderr.
 *
 * Exit codes: 0 after a clean shutdown (or --help/--version), 1 when the service cannot start
 * (data directory, seed, port), 2 for a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "campaign.h"

extern const char cs_default_seed_json[]; /* generated from seed.json */

static const char usage[] =
    "Usage: meshsync-campaign --data DIR [--listen HOST:PORT | --port N] [options]\n"
    "\n"
    "A reference DIGIT Health Campaign Management service for meshsync tests and demos:\n"
    "HCM entity endpoints with asynchronous (202) writes, MDMS, localisation, dashboard,\n"
    "filestore, sync file and user token endpoints over HTTP, persisted in LMDB, with fault\n"
    "injection. See docs/CAMPAIGN_SERVICE.md.\n"
    "\n"
    "Service:\n"
    "  --listen HOST:PORT     address to listen on (IPv4; default 127.0.0.1:8080); port 0\n"
    "                         picks a free port. The first stdout line is\n"
    "                         \"listening on HOST:PORT\" with the bound port.\n"
    "  --port N               shorthand for --listen 127.0.0.1:N\n"
    "  --data DIR             directory of the LMDB store (created if missing; required).\n"
    "                         Entities, the pending write queue, tokens, files and the error\n"
    "                         log survive a restart.\n"
    "  --seed FILE            JSON seed: users, MDMS masters (form schemas, SOS contacts, ...)\n"
    "                         and localisation messages (default: the built-in seed,\n"
    "                         sim/campaign/seed.json)\n"
    "  --public-url URL       base of the URLs that /filestore/v1/files/url returns\n"
    "                         (default http://HOST:PORT)\n"
    "  --process-delay-ms N   delay between accepting a write (202) and applying it\n"
    "                         (default 200, max 3600000)\n"
    "\n"
    "Auth:\n"
    "  --no-auth              accept requests without a valid token (default: entity, sync,\n"
    "                         filestore and dashboard endpoints need RequestInfo.authToken, or\n"
    "                         an auth-token / Authorization: Bearer header, from\n"
    "                         POST /user/oauth/token)\n"
    "  --user NAME:PASSWORD[:TENANT[:TYPE]]\n"
    "                         an account for the token endpoint (repeatable; replaces the\n"
    "                         seed's users; TENANT default mz, TYPE EMPLOYEE|CITIZEN|SYSTEM)\n"
    "  --oauth-client ID:SECRET\n"
    "                         a client accepted in the token endpoint's Basic auth\n"
    "                         (repeatable; default egov-user-client with an empty secret or\n"
    "                         egov-user-secret)\n"
    "  --token-ttl-s N        access token lifetime in seconds (default 604800, as egov-user)\n"
    "\n"
    "Fault injection (drawn per request, in arrival order; /_test endpoints are exempt):\n"
    "  --fail-rate P          fraction of requests answered 500 or 503 without processing\n"
    "  --slow-rate P          fraction of requests whose response is held back --slow-ms\n"
    "                         (the request is still processed: a client that times out may\n"
    "                         have written)\n"
    "  --slow-ms MS           how long a slow response is held back (default 30000)\n"
    "  --drop-writes P        fraction of valid writes answered 202 but never applied\n"
    "  --fault-seed N         seed of the fault sequence (default: random), for reproducible runs\n"
    "  --fault-paths P1,P2    inject faults only on paths starting with one of these prefixes\n"
    "\n"
    "Limits:\n"
    "  --max-body-bytes N     request body limit, answered 413 beyond (default 16777216)\n"
    "  --max-file-bytes N     uploaded file limit (default 16777216)\n"
    "  --map-mb N             LMDB map size in MiB (default 1024)\n"
    "\n"
    "Other:\n"
    "  --no-test-endpoints    disable /_test/stats, /_test/errors, /_test/entities,\n"
    "                         /_test/flush and /_test/faults\n"
    "  --verbose              log every request on stderr\n"
    "  --help                 this text\n"
    "  --version              print the version\n"
    "\n"
    "Exit codes: 0 clean shutdown on SIGINT/SIGTERM, 1 start-up failure, 2 usage error.\n";

enum {
    OPT_LISTEN = 256, OPT_PORT, OPT_DATA, OPT_SEED, OPT_PUBLIC_URL, OPT_DELAY, OPT_NO_AUTH,
    OPT_USER, OPT_CLIENT, OPT_TTL, OPT_FAIL, OPT_SLOW_RATE, OPT_SLOW_MS, OPT_DROP, OPT_FSEED,
    OPT_FPATHS, OPT_MAX_BODY, OPT_MAX_FILE, OPT_MAP, OPT_NO_TEST, OPT_VERBOSE, OPT_HELP,
    OPT_VERSION
};

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "meshsync-campaign: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'meshsync-campaign --help'.\n");
    return 2;
}

static int parse_listen(cs_config *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    int64_t port;
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof cfg->listen_host ||
        cs_parse_i64(colon + 1, 0, 65535, &port) != 0)
        return -1;
    memcpy(cfg->listen_host, s, (size_t)(colon - s));
    cfg->listen_host[colon - s] = 0;
    cfg->listen_port = (uint16_t)port;
    return 0;
}

static int parse_args(cs_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"port", required_argument, NULL, OPT_PORT},
        {"data", required_argument, NULL, OPT_DATA},
        {"seed", required_argument, NULL, OPT_SEED},
        {"public-url", required_argument, NULL, OPT_PUBLIC_URL},
        {"process-delay-ms", required_argument, NULL, OPT_DELAY},
        {"no-auth", no_argument, NULL, OPT_NO_AUTH},
        {"user", required_argument, NULL, OPT_USER},
        {"oauth-client", required_argument, NULL, OPT_CLIENT},
        {"token-ttl-s", required_argument, NULL, OPT_TTL},
        {"fail-rate", required_argument, NULL, OPT_FAIL},
        {"slow-rate", required_argument, NULL, OPT_SLOW_RATE},
        {"slow-ms", required_argument, NULL, OPT_SLOW_MS},
        {"drop-writes", required_argument, NULL, OPT_DROP},
        {"fault-seed", required_argument, NULL, OPT_FSEED},
        {"fault-paths", required_argument, NULL, OPT_FPATHS},
        {"max-body-bytes", required_argument, NULL, OPT_MAX_BODY},
        {"max-file-bytes", required_argument, NULL, OPT_MAX_FILE},
        {"map-mb", required_argument, NULL, OPT_MAP},
        {"no-test-endpoints", no_argument, NULL, OPT_NO_TEST},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    int c;
    int64_t n;
    bool users_given = false;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            if (parse_listen(cfg, optarg) != 0)
                return usage_error("--listen wants HOST:PORT, got '%s'", optarg);
            break;
        case OPT_PORT:
            if (cs_parse_i64(optarg, 0, 65535, &n) != 0)
                return usage_error("--port wants 0..65535, got '%s'", optarg);
            cfg->listen_port = (uint16_t)n;
            break;
        case OPT_DATA:
            if (strlen(optarg) >= sizeof cfg->data_dir)
                return usage_error("--data path is too long: '%s'", optarg);
            snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", optarg);
            break;
        case OPT_SEED:
            if (strlen(optarg) >= sizeof cfg->seed_path)
                return usage_error("--seed path is too long: '%s'", optarg);
            snprintf(cfg->seed_path, sizeof cfg->seed_path, "%s", optarg);
            break;
        case OPT_PUBLIC_URL:
            if (strlen(optarg) >= sizeof cfg->public_url)
                return usage_error("--public-url is too long: '%s'", optarg);
            snprintf(cfg->public_url, sizeof cfg->public_url, "%s", optarg);
            break;
        case OPT_DELAY:
            if (cs_parse_i64(optarg, 0, CS_PROCESS_DELAY_MS_MAX, &n) != 0)
                return usage_error("--process-delay-ms wants 0..3600000, got '%s'", optarg);
            cfg->process_delay_ms = (uint32_t)n;
            break;
        case OPT_NO_AUTH:
            cfg->auth_required = false;
            break;
        case OPT_USER:
            users_given = true; /* flags replace the seed's users */
            if (cs_auth_add_user_spec(cfg, optarg) != 0)
                return usage_error("--user wants NAME:PASSWORD[:TENANT[:TYPE]] (at most 64 "
                                   "users), got '%s'", optarg);
            break;
        case OPT_CLIENT:
            if (!strchr(optarg, ':') || strlen(optarg) >= sizeof cfg->clients[0] ||
                cfg->n_clients >= CS_CLIENTS_MAX)
                return usage_error("--oauth-client wants ID:SECRET (at most 8), got '%s'",
                                   optarg);
            snprintf(cfg->clients[cfg->n_clients++], sizeof cfg->clients[0], "%s", optarg);
            break;
        case OPT_TTL:
            if (cs_parse_i64(optarg, 1, 10L * 365 * 86400, &n) != 0)
                return usage_error("--token-ttl-s wants a positive number, got '%s'", optarg);
            cfg->token_ttl_s = n;
            break;
        case OPT_FAIL:
            if (cs_parse_rate(optarg, &cfg->fail_rate) != 0)
                return usage_error("--fail-rate wants a fraction in [0, 1], got '%s'", optarg);
            break;
        case OPT_SLOW_RATE:
            if (cs_parse_rate(optarg, &cfg->slow_rate) != 0)
                return usage_error("--slow-rate wants a fraction in [0, 1], got '%s'", optarg);
            break;
        case OPT_SLOW_MS:
            if (cs_parse_i64(optarg, 0, CS_SLOW_MS_MAX, &n) != 0)
                return usage_error("--slow-ms wants 0..600000, got '%s'", optarg);
            cfg->slow_ms = (uint32_t)n;
            break;
        case OPT_DROP:
            if (cs_parse_rate(optarg, &cfg->drop_rate) != 0)
                return usage_error("--drop-writes wants a fraction in [0, 1], got '%s'", optarg);
            break;
        case OPT_FSEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 0);
            if (errno || *end || !*optarg)
                return usage_error("--fault-seed wants an unsigned integer, got '%s'", optarg);
            cfg->fault_seed = v;
            cfg->fault_seed_set = true;
            break;
        }
        case OPT_FPATHS: {
            char buf[2048];
            if (strlen(optarg) >= sizeof buf)
                return usage_error("--fault-paths is too long: '%s'", optarg);
            snprintf(buf, sizeof buf, "%s", optarg);
            char *save = NULL;
            for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                if (cfg->n_fault_paths >= CS_FAULT_PATHS_MAX || strlen(p) >= 128 || p[0] != '/')
                    return usage_error("--fault-paths wants up to 16 comma-separated path "
                                       "prefixes starting with '/', got '%s'", optarg);
                snprintf(cfg->fault_paths[cfg->n_fault_paths++], 128, "%s", p);
            }
            break;
        }
        case OPT_MAX_BODY:
            if (cs_parse_i64(optarg, 1024, CS_BODY_BYTES_HARD_MAX, &n) != 0)
                return usage_error("--max-body-bytes wants 1024..1073741824, got '%s'", optarg);
            cfg->max_body_bytes = (size_t)n;
            break;
        case OPT_MAX_FILE:
            if (cs_parse_i64(optarg, 1, CS_BODY_BYTES_HARD_MAX, &n) != 0)
                return usage_error("--max-file-bytes wants 1..1073741824, got '%s'", optarg);
            cfg->max_file_bytes = (size_t)n;
            break;
        case OPT_MAP:
            if (cs_parse_i64(optarg, 16, CS_MAP_MB_MAX, &n) != 0)
                return usage_error("--map-mb wants 16..262144, got '%s'", optarg);
            cfg->map_bytes = (size_t)n * 1024 * 1024;
            break;
        case OPT_NO_TEST:
            cfg->test_endpoints = false;
            break;
        case OPT_VERBOSE:
            cs_log_verbose = true;
            break;
        case OPT_HELP:
            fputs(usage, stdout);
            exit(0);
        case OPT_VERSION:
            puts("meshsync-campaign 0.1.0");
            exit(0);
        default:
            return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!cfg->data_dir[0])
        return usage_error("%s", "--data DIR is required");
    return users_given ? 1 : 0;
}

static json_t *load_seed(const char *path)
{
    json_error_t jerr;
    json_t *seed = path[0] ? json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)
                           : json_loads(cs_default_seed_json, JSON_REJECT_DUPLICATES, &jerr);
    if (!seed) {
        cs_log("error", "seed %s: %s at line %d column %d", path[0] ? path : "(built-in)",
               jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    static const char *const arrays[] = {"users", "mdms", "localization"};
    for (int i = 0; i < 3; i++) {
        const json_t *v = json_object_get(seed, arrays[i]);
        if (!json_is_object(seed) || (v && !json_is_array(v))) {
            cs_log("error", "seed %s: must be an object whose \"%s\" is an array",
                   path[0] ? path : "(built-in)", arrays[i]);
            json_decref(seed);
            return NULL;
        }
    }
    return seed;
}

static cs_server server;

void cs_server_sleep(cs_server *srv, uint32_t ms)
{
    int64_t deadline = cs_now_ms() + ms;
    pthread_mutex_lock(&srv->mu);
    while (!srv->stopping && cs_now_ms() < deadline) {
        struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
        pthread_cond_timedwait(&srv->cond, &srv->mu, &ts);
    }
    pthread_mutex_unlock(&srv->mu);
}

int main(int argc, char **argv)
{
    cs_server *srv = &server;
    cs_config *cfg = &srv->cfg;
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    cfg->process_delay_ms = 200;
    cfg->slow_ms = 30000;
    cfg->auth_required = true;
    cfg->token_ttl_s = 10080 * 60;
    cfg->max_body_bytes = CS_BODY_BYTES_DEFAULT;
    cfg->max_file_bytes = CS_FILE_BYTES_DEFAULT;
    cfg->map_bytes = (size_t)CS_MAP_MB_DEFAULT * 1024 * 1024;
    cfg->test_endpoints = true;

    if (sodium_init() < 0) {
        cs_log("error", "libsodium failed to initialise");
        return 1;
    }
    json_object_seed(0); /* before any thread creates JSON objects */

    int pr = parse_args(cfg, argc, argv);
    if (pr == 2)
        return 2;
    bool users_from_flags = pr == 1;
    if (cfg->n_clients == 0) {
        snprintf(cfg->clients[0], sizeof cfg->clients[0], "egov-user-client:");
        snprintf(cfg->clients[1], sizeof cfg->clients[1], "egov-user-client:egov-user-secret");
        cfg->n_clients = 2;
    }
    if (cfg->max_file_bytes > cfg->max_body_bytes)
        cfg->max_file_bytes = cfg->max_body_bytes;

    srv->seed = load_seed(cfg->seed_path);
    if (!srv->seed)
        return 1;
    if (!users_from_flags && cs_auth_load_seed_users(cfg, srv->seed) != 0)
        return 1;
    if (cfg->n_users == 0)
        cs_auth_add_user_spec(cfg, "gateway:eGov@123:mz:EMPLOYEE");

    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cond, NULL);
    pthread_mutex_init(&srv->stats.mu, NULL);
    cs_faults_init(srv);

    if (cs_store_open(&srv->store, cfg->data_dir, cfg->map_bytes) != 0)
        return 1;

    /* Signals are taken synchronously by sigwait below; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    if (cs_queue_start(srv) != 0)
        goto out;
    if (cs_http_start(srv) != 0)
        goto out;
    if (cfg->public_url[0])
        snprintf(srv->base_url, sizeof srv->base_url, "%s", cfg->public_url);
    else
        snprintf(srv->base_url, sizeof srv->base_url, "http://%s:%u", cfg->listen_host,
                 (unsigned)srv->bound_port);
    printf("listening on %s:%u\n", cfg->listen_host, (unsigned)srv->bound_port);
    fflush(stdout);
    cs_log("info", "data %s, seed %s, process delay %u ms, auth %s, faults fail=%g slow=%g "
           "(%u ms) drop=%g", cfg->data_dir, cfg->seed_path[0] ? cfg->seed_path : "(built-in)",
           cfg->process_delay_ms, cfg->auth_required ? "on" : "off", cfg->fail_rate,
           cfg->slow_rate, cfg->slow_ms, cfg->drop_rate);

    int sig = 0;
    sigwait(&sigs, &sig);
    cs_log("info", "%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
out:
    /* Wake handlers sleeping for --slow-ms, then stop accepting, then stop the worker. */
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
    cs_http_stop(srv);
    cs_queue_stop(srv);
    cs_store_close(&srv->store);
    cs_auth_fini(cfg);
    json_decref(srv->seed);
    return status;
}
