/*
 * body.h - entity bodies: canonical msgpack maps, and conversion to and from JSON.
 *
 * Canonical form: a map at the top; map keys are strings, unique, sorted by bytes (shorter
 * first on a common prefix); integers in their shortest msgpack form (non-negative ones as
 * unsigned); non-integral numbers as float64; strings as str (never bin); nesting at most
 * MESH_BODY_DEPTH_MAX; each map or array at most MESH_BODY_ITEMS_MAX entries.
 */
#ifndef MESH_MODEL_BODY_H
#define MESH_MODEL_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* Validates that `len` bytes are exactly one canonical map. Returns MESH_OK, MESH_ECORRUPT,
 * MESH_ELIMIT. Never crashes on any input. */
int mesh_body_check(const uint8_t *buf, size_t len);

/*
 * Parses a JSON object and appends its canonical msgpack form to `out`. Duplicate keys and
 * non-object tops are errors. JSON integers become msgpack integers, other numbers float64.
 * Returns MESH_OK, MESH_EINVAL (with the JSON error's line and column), MESH_ELIMIT, MESH_ENOMEM.
 */
int mesh_body_from_json(const char *json, size_t len, mesh_buf *out);

/* Appends the JSON text of a canonical body to `out` (compact, keys in canonical order, no
 * terminating NUL). Returns MESH_OK, MESH_ECORRUPT, MESH_ENOMEM, MESH_ELIMIT. */
int mesh_body_to_json(const uint8_t *buf, size_t len, mesh_buf *out);

/* Looks up top-level string field `key` in a canonical body. On success *val and *val_len borrow
 * from `buf`. Returns MESH_OK, MESH_ENOTFOUND (absent or not a string), MESH_ECORRUPT. */
int mesh_body_get_str(const uint8_t *buf, size_t len, const char *key, const char **val,
                      size_t *val_len);

/* Looks up top-level integer field `key`. Returns MESH_OK, MESH_ENOTFOUND (absent or not an
 * integer), MESH_ECORRUPT. */
int mesh_body_get_int(const uint8_t *buf, size_t len, const char *key, int64_t *val);

/* Looks up top-level boolean field `key`. Returns MESH_OK, MESH_ENOTFOUND (absent or not a
 * boolean), MESH_ECORRUPT. */
int mesh_body_get_bool(const uint8_t *buf, size_t len, const char *key, bool *val);

/*
 * Appends to `out` a canonical copy of body `buf` without the top-level keys in `drop`
 * (`ndrop` NUL-terminated names) and with the entries of `add` (a canonical map, may be NULL)
 * merged in (add wins on equal keys). Used to strip the fields an op carries in its header
 * (clientReferenceId, rowVersion, isDeleted) and to put them back when printing.
 * Returns MESH_OK, MESH_ECORRUPT, MESH_ENOMEM, MESH_ELIMIT.
 */
int mesh_body_edit(const uint8_t *buf, size_t len, const char *const *drop, size_t ndrop,
                   const uint8_t *add, size_t add_len, mesh_buf *out);

#endif
