/*  =========================================================================
    nx_hwm - byte-bounded high-water marks. nx_hwm.h is the contract.
    =========================================================================
*/

#include "nx_hwm.h"

static int s_clamp(uint64_t v, uint64_t most)
{
    if (v > most)
        v = most;
    if (v > 1000000000)
        v = 1000000000;
    return v ? (int)v : 1;
}

int nx_hwm_fixed(uint64_t count, uint64_t budget, uint64_t largest)
{
    return s_clamp(budget / (largest + NX_HWM_MSG_OVERHEAD), count);
}

int nx_hwm_out(uint64_t count, uint64_t budget, size_t *small)
{
    uint64_t s = count ? budget / count : budget;
    if (s < NX_HWM_SMALL_MIN)
        s = NX_HWM_SMALL_MIN;
    *small = (size_t)s;
    return s_clamp(budget / s, count);
}
