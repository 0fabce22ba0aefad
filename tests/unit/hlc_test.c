/*
 * hlc_test.c - the hybrid logical clock: monotonicity, the counter, and the skew guard.
 */
#include <criterion/criterion.h>

#include "common/common.h"
#include "model/hlc.h"

Test(hlc, tick_follows_wall_clock)
{
    cr_assert_eq(mesh_hlc_tick(0, 1000), MESH_HLC_MAKE(1000, 0));
    cr_assert_eq(mesh_hlc_tick(MESH_HLC_MAKE(1000, 5), 2000), MESH_HLC_MAKE(2000, 0));
}

Test(hlc, tick_counts_within_a_millisecond)
{
    uint64_t h = mesh_hlc_tick(0, 1000);
    h = mesh_hlc_tick(h, 1000);
    cr_assert_eq(h, MESH_HLC_MAKE(1000, 1));
    h = mesh_hlc_tick(h, 1000);
    cr_assert_eq(h, MESH_HLC_MAKE(1000, 2));
}

Test(hlc, tick_when_wall_clock_goes_back)
{
    uint64_t h = MESH_HLC_MAKE(5000, 7);
    cr_assert_eq(mesh_hlc_tick(h, 10), MESH_HLC_MAKE(5000, 8));
}

Test(hlc, counter_overflow_borrows_a_millisecond)
{
    uint64_t h = MESH_HLC_MAKE(1000, 0xffff);
    cr_assert_eq(mesh_hlc_tick(h, 1000), MESH_HLC_MAKE(1001, 0));
    cr_assert_eq(mesh_hlc_tick(h, 0), MESH_HLC_MAKE(1001, 0));
}

Test(hlc, tick_always_increases)
{
    uint64_t h = 0, wall = 1000;
    /* Plain comparisons in the loop: a Criterion assertion per step costs an IPC message
     * under --full-stats. */
    for (int i = 0; i < 200000; i++) {
        uint64_t n = mesh_hlc_tick(h, wall);
        if (n <= h) cr_assert_fail("step %d: %llx after %llx", i, (unsigned long long)n,
                                   (unsigned long long)h);
        h = n;
        if (i % 1000 == 0) wall -= 1;  /* a clock drifting backwards */
    }
    cr_assert_gt(MESH_HLC_MS(h), 1000);
}

Test(hlc, observe)
{
    uint64_t wall = 100000;
    uint64_t last = MESH_HLC_MAKE(wall, 3);
    /* a remote behind us changes nothing */
    cr_assert_eq(mesh_hlc_observe(last, MESH_HLC_MAKE(wall - 5, 9), wall), last);
    /* a remote ahead within the skew bound is followed, without ticking */
    uint64_t ahead = MESH_HLC_MAKE(wall + 500, 2);
    cr_assert_eq(mesh_hlc_observe(last, ahead, wall), ahead);
    uint64_t edge = MESH_HLC_MAKE(wall + MESH_HLC_SKEW_MAX_MS, 0);
    cr_assert_eq(mesh_hlc_observe(last, edge, wall), edge);
    /* too far ahead is ignored */
    uint64_t far = MESH_HLC_MAKE(wall + MESH_HLC_SKEW_MAX_MS + 1, 0);
    cr_assert_eq(mesh_hlc_observe(last, far, wall), last);
    cr_assert_eq(mesh_hlc_observe(last, UINT64_MAX, wall), last);
    /* a tick after observing is above the remote */
    cr_assert_gt(mesh_hlc_tick(mesh_hlc_observe(last, ahead, wall), wall), ahead);
    /* no overflow with a huge wall clock */
    cr_assert_eq(mesh_hlc_observe(last, UINT64_MAX, UINT64_MAX), UINT64_MAX);
}

Test(hlc, extremes)
{
    uint64_t max = MESH_HLC_MAKE((UINT64_C(1) << 48) - 1, 0xffff);
    cr_assert_eq(max, UINT64_MAX);
    cr_assert_eq(mesh_hlc_tick(max, 0), max, "saturates instead of wrapping");
    cr_assert_eq(mesh_hlc_tick(0, UINT64_MAX), MESH_HLC_MAKE((UINT64_C(1) << 48) - 1, 0));
}
