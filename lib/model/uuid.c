/*
 * uuid.c - This file implements entity ids (uuid.h): text conversion through libuuid and the
 * construction of time-ordered UUIDv7 from caller-supplied time and randomness (RFC 9562 5.7).
 */
#include "model/uuid.h"

#include <uuid/uuid.h>

int mesh_uuid_parse(const char *text, uint8_t out[16])
{
    if (text == NULL) return mesh_err(MESH_EINVAL, "no UUID given (NULL)");
    /* uuid_parse wants exactly 36 characters before the NUL; checking the length ourselves
     * gives a clearer message than a bare failure. memchr bounds the scan on long input. */
    const char *nul = memchr(text, '\0', MESH_UUID_STR_LEN);
    if (nul == NULL || nul - text != MESH_UUID_STR_LEN - 1)
        return mesh_err(MESH_EINVAL,
                        "UUID '%.40s%s' is not 36 characters (expected the form "
                        "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                        text, nul == NULL ? "..." : "");
    uuid_t u;
    if (uuid_parse(text, u) != 0)
        return mesh_err(MESH_EINVAL,
                        "UUID '%s' is malformed (expected hex digits in the form "
                        "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                        text);
    memcpy(out, u, 16);
    return MESH_OK;
}

void mesh_uuid_format(const uint8_t id[16], char out[MESH_UUID_STR_LEN])
{
    uuid_t u;
    memcpy(u, id, 16);
    uuid_unparse_lower(u, out);
}

void mesh_uuid_v7(uint64_t unix_ms, const uint8_t rand10[10], uint8_t out[16])
{
    /* unix_ts_ms: 48 bits big-endian. Times past 2^48 ms (year 10889) keep their low bits, as
     * RFC 9562 allows the field to roll over. */
    for (int i = 5; i >= 0; i--) {
        out[i] = (uint8_t)unix_ms;
        unix_ms >>= 8;
    }
    out[6] = (uint8_t)(0x70 | (rand10[0] & 0x0f));   /* version 7, then 4 bits of rand_a */
    out[7] = rand10[1];                              /* rest of rand_a (12 bits in all) */
    out[8] = (uint8_t)(0x80 | (rand10[2] & 0x3f));   /* variant 10, then 6 bits of rand_b */
    memcpy(out + 9, rand10 + 3, 7);                  /* rest of rand_b (62 bits in all) */
}
