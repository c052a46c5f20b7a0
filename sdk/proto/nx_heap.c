/*  =========================================================================
    nx_heap - glibc allocator settings for the long-running processes.
    =========================================================================
*/

#include "nx_heap.h"

#include <stdlib.h> /* defines __GLIBC__ where it is glibc */

#if defined(__GLIBC__)
#include <malloc.h>
#endif

int nx_heap_tune(size_t keep, size_t mmap_min)
{
#if defined(__GLIBC__)
    if (keep > (size_t)0x7fffffff || mmap_min > (size_t)0x7fffffff)
        return -1;
    /*  mallopt returns 1 on success. M_TOP_PAD makes each growth of a heap
        a larger step, so a flood grows it a few times, not per batch.     */
    if (mallopt(M_TRIM_THRESHOLD, (int)keep) != 1 || mallopt(M_TOP_PAD, (int)(keep / 4)) != 1 ||
        mallopt(M_MMAP_THRESHOLD, (int)mmap_min) != 1)
        return -1;
    return 0;
#else
    (void)keep;
    (void)mmap_min;
    return -1;
#endif
}
