/*  =========================================================================
    nx_stats - sliding-window event rates in one-second buckets.
    =========================================================================
*/

#include <string.h>

#include "nx_stats.h"

/*  Moves the ring forward to the second of now, zeroing the seconds that
    passed without events.                                                  */
static void s_advance(nx_rate_t *self, uint64_t now_us)
{
    uint64_t second = now_us / 1000000;
    if (second <= self->second)
        return;
    if (second - self->second >= NX_RATE_SLOTS)
        memset(self->slot, 0, sizeof(self->slot));
    else
        for (uint64_t s = self->second + 1; s <= second; s++)
            self->slot[s % NX_RATE_SLOTS] = 0;
    self->second = second;
}

void nx_rate_add(nx_rate_t *self, uint64_t now_us, uint64_t count)
{
    s_advance(self, now_us);
    self->slot[self->second % NX_RATE_SLOTS] += count;
}

double nx_rate_get(nx_rate_t *self, uint64_t now_us, unsigned window_s)
{
    if (window_s == 0 || window_s >= NX_RATE_SLOTS)
        return 0;
    s_advance(self, now_us);
    uint64_t total = 0;
    for (unsigned i = 1; i <= window_s; i++)
        total += self->slot[(self->second - i) % NX_RATE_SLOTS];
    return (double)total / window_s;
}
