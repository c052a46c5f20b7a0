/*  =========================================================================
    nx_stats - event rates over sliding windows, in one-second buckets, so
    that `state` can say events/s over the last 10 s and 1 min without
    keeping timestamps per event.
    =========================================================================
*/

#ifndef NX_STATS_H_INCLUDED
#define NX_STATS_H_INCLUDED

#include <stdint.h>

#define NX_RATE_SLOTS 64 /* seconds of history; >= the longest window     */

typedef struct {
    uint64_t slot[NX_RATE_SLOTS]; /* counts per second, ring by second      */
    uint64_t second;              /* the second slot[second % N] counts      */
} nx_rate_t;

/*  Adds count events at monotonic time now_us.                            */
void nx_rate_add(nx_rate_t *self, uint64_t now_us, uint64_t count);

/*  Events per second over the last window_s whole seconds before now_us
    (the current, partial second is not counted). window_s < NX_RATE_SLOTS.*/
double nx_rate_get(nx_rate_t *self, uint64_t now_us, unsigned window_s);

#endif
