/*
 * layering_test.c - the sans-IO cores stay sans-IO: no file of lib/sync (nor the gateway's core)
 * reads a clock, draws randomness, opens a socket, or calls LMDB, ZeroMQ or libcurl directly.
 * Time and randomness come from the caller; storage goes through lib/store. (The link-level
 * check is the sync_core_only program, built from lib/sync and the layers below it alone.)
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const FORBIDDEN[] = {
    "clock_gettime", "gettimeofday", "[^_a-z]time[ ]*\\(", "[^_a-z]rand[ ]*\\(", "random[ ]*\\(",
    "randombytes", "getrandom", "[^_a-z]socket[ ]*\\(", "mdb_[a-z_]+[ ]*\\(", "zmq_[a-z_]+[ ]*\\(",
    "curl_[a-z_]+[ ]*\\(", "#include[ ]*<(lmdb|zmq|curl/curl|sodium|time)\\.h>",
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Blanks comments and string literals, so prose and messages cannot trip the patterns. */
static void strip(char *s)
{
    for (char *p = s; *p; p++) {
        if (p[0] == '/' && p[1] == '*') {
            char *end = strstr(p + 2, "*/");
            char *stop = end ? end + 2 : p + strlen(p);
            memset(p, ' ', (size_t)(stop - p));
            p = stop - 1;
        } else if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n') *p++ = ' ';
            if (!*p) break;
        } else if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1]) *p++ = ' ';
                *p = ' ';
            }
            if (!*p) break;
        }
    }
}

/* Checks every .c/.h file in `dir` except `skip` (a file allowed to do I/O). */
static int check_dir(const char *dir, const char *skip)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", MESH_SOURCE_DIR, dir);
    DIR *d = opendir(path);
    if (d == NULL) return 0;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 3 || (strcmp(e->d_name + l - 2, ".c") && strcmp(e->d_name + l - 2, ".h"))) continue;
        if (skip && strcmp(e->d_name, skip) == 0) continue;
        char file[1300];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        char *text = slurp(file);
        strip(text);
        for (size_t i = 0; i < sizeof FORBIDDEN / sizeof FORBIDDEN[0]; i++) {
            regex_t re;
            cr_assert_eq(regcomp(&re, FORBIDDEN[i], REG_EXTENDED | REG_NOSUB), 0);
            int hit = regexec(&re, text, 0, NULL, 0) == 0;
            regfree(&re);
            cr_expect(!hit, "%s/%s uses something a sans-IO core must not: /%s/", dir, e->d_name,
                      FORBIDDEN[i]);
        }
        free(text);
        files++;
    }
    closedir(d);
    return files;
}

Test(layering, sync_core_is_sans_io)
{
    cr_assert_gt(check_dir("lib/sync", NULL), 0, "lib/sync has sources");
}

Test(layering, gateway_core_is_sans_io)
{
    /* The gateway's driver is the one file allowed to talk HTTP. */
    check_dir("lib/gateway", "curl_driver.c");
}
