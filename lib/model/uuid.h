/*
 * uuid.h - entity ids: RFC 4122 UUIDs; new ids are time-ordered UUIDv7 so LMDB appends.
 */
#ifndef MESH_MODEL_UUID_H
#define MESH_MODEL_UUID_H

#include <stdint.h>

#include "common/common.h"

/* Parses the 36-character text form (any version, case-insensitive). Returns MESH_OK or
 * MESH_EINVAL with a message quoting the input. */
int mesh_uuid_parse(const char *text, uint8_t out[16]);

/* Writes the lowercase 36-character text form plus NUL. */
void mesh_uuid_format(const uint8_t id[16], char out[MESH_UUID_STR_LEN]);

/* Builds a UUIDv7 from a Unix time in ms and 10 random bytes supplied by the caller (the
 * library takes randomness from its caller so simulations are reproducible). */
void mesh_uuid_v7(uint64_t unix_ms, const uint8_t rand10[10], uint8_t out[16]);

#endif
