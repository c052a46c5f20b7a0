/*  =========================================================================
    nx_heap - how the long-running processes (nexusd, nexus-gateway) ask
    glibc's allocator to keep freed memory instead of giving it back to the
    kernel and faulting it in again at once.

    Under a flood every batch of events is allocated on one thread and
    freed on another (the loop, ZeroMQ's I/O thread); with glibc's defaults
    the top of each heap is trimmed and regrown many times a second, and
    the page faults cost the broker ~15 % of its CPU per event (measured:
    docs/benchmarks-log.md). Libraries never call this: the process that
    owns main does.
    =========================================================================
*/

#ifndef NX_HEAP_H_INCLUDED
#define NX_HEAP_H_INCLUDED

#include <stddef.h>

/*  Keeps up to keep bytes of freed memory at the top of each heap and
    serves blocks below mmap_min from the heaps (fixed thresholds: glibc's
    dynamic ones only ever grow). Returns 0 when the allocator took the
    settings, -1 when it is not glibc's or refused them (nothing changes
    then; the process runs as before).                                     */
int nx_heap_tune(size_t keep, size_t mmap_min);

#endif
