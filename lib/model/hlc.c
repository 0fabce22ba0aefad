/*
 * hlc.c - This file implements the hybrid logical clock of hlc.h: pure functions of the last
 * timestamp and the caller's wall clock, so simulations can drive them with virtual time.
 */
#include "model/hlc.h"

#include "common/common.h"

/* The physical part has 48 bits. A wall clock beyond that (the year 10889) is a broken clock;
 * clamping keeps the packing from silently wrapping to a small timestamp. */
#define MS_MAX ((UINT64_C(1) << 48) - 1)

uint64_t mesh_hlc_tick(uint64_t last, uint64_t wall_ms)
{
    uint64_t last_ms = MESH_HLC_MS(last);
    uint64_t counter = last & 0xffffu;
    uint64_t ms = wall_ms > MS_MAX ? MS_MAX : wall_ms;

    if (ms > last_ms) return MESH_HLC_MAKE(ms, 0);
    /* The wall clock has not moved past `last` (same millisecond, or it went backwards): stay
     * on last's millisecond and count events within it. */
    if (counter < 0xffffu) return MESH_HLC_MAKE(last_ms, counter + 1);
    /* 65536 events in one millisecond: borrow the next millisecond rather than wrap. The only
     * timestamp that cannot advance is the very last one representable; it is returned as is
     * because no clock can legitimately get there. */
    if (last_ms == MS_MAX) return last;
    return MESH_HLC_MAKE(last_ms + 1, 0);
}

uint64_t mesh_hlc_observe(uint64_t last, uint64_t remote, uint64_t wall_ms)
{
    uint64_t remote_ms = MESH_HLC_MS(remote);
    /* Written as a difference so that a wall clock near UINT64_MAX cannot overflow the sum. */
    if (remote_ms > wall_ms && remote_ms - wall_ms > MESH_HLC_SKEW_MAX_MS) return last;
    return remote > last ? remote : last;
}
