/*
 * hlc.h - hybrid logical clock: 48 bits of physical milliseconds and a 16-bit counter packed in
 * a uint64 (ms << 16 | counter). Timestamps order ops causally and roughly by wall time.
 */
#ifndef MESH_MODEL_HLC_H
#define MESH_MODEL_HLC_H

#include <stdint.h>

#define MESH_HLC_MS(h) ((h) >> 16)
#define MESH_HLC_MAKE(ms, c) (((uint64_t)(ms) << 16) | ((c) & 0xffffu))

/* The timestamp for a local event given the last one issued (`last`) and the wall clock. Always
 * greater than `last`. If the counter would overflow, the physical part advances by one ms. */
uint64_t mesh_hlc_tick(uint64_t last, uint64_t wall_ms);

/* The clock after observing a remote timestamp. A remote time more than MESH_HLC_SKEW_MAX_MS
 * ahead of `wall_ms` is ignored (a peer with a wrong clock must not drag ours along). */
uint64_t mesh_hlc_observe(uint64_t last, uint64_t remote, uint64_t wall_ms);

#endif
