/*
 * types.h - the entity-type registry, loaded from a JSON configuration so that adding a type needs
 * no C change. The default configuration (lib/model/digit_hcm_types.json, compiled in) holds the
 * DIGIT Health Campaign Management types.
 */
#ifndef MESH_MODEL_TYPES_H
#define MESH_MODEL_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct mesh_parent_ref {
    char field[64];         /* body field holding the parent's clientReferenceId */
    uint32_t types_count;   /* the types it may point to (a beneficiary is a household or an individual) */
    char types[4][MESH_TYPE_BYTES_MAX + 1];
} mesh_parent_ref;

typedef struct mesh_type {
    char name[MESH_TYPE_BYTES_MAX + 1];   /* "household_member" */
    char path[128];                       /* campaign-service base path: "/household/member/v1" */
    char array_key[64];                   /* bulk request array key: "HouseholdMembers" */
    char single_key[64];                  /* single request key: "HouseholdMember" */
    char search_key[64];                  /* search criteria key: "HouseholdMember" */
    char response_key[64];                /* search response array key */
    uint32_t parents_count;
    mesh_parent_ref parents[MESH_PARENTS_MAX];
    uint32_t rank;                        /* 0 for roots; parents always rank lower */
} mesh_type;

typedef struct mesh_types mesh_types;

/* Parses a configuration (JSON text). Checks names, duplicates, that every parent type exists
 * and that parent links have no cycle. Returns MESH_OK, MESH_EINVAL (message names the type and
 * field), MESH_ELIMIT, MESH_ENOMEM. */
int mesh_types_parse(const char *json, size_t len, mesh_types **out);

/* Loads the compiled-in DIGIT HCM configuration. */
int mesh_types_default(mesh_types **out);

/* The compiled-in configuration text (NUL-terminated, static). */
const char *mesh_types_default_json(void);

void mesh_types_free(mesh_types *t);

/* Looks a type up by name; NULL if not configured. Borrowed until mesh_types_free. */
const mesh_type *mesh_types_find(const mesh_types *t, const char *name, size_t len);

/* The number of types and the i-th in parents-first order (rank, then name). */
size_t mesh_types_count(const mesh_types *t);
const mesh_type *mesh_types_at(const mesh_types *t, size_t i);

#endif
