/*  =========================================================================
    bench_acked - acknowledged publish on a broker's control plane over raw
    DEALER sockets (bench_ack, bench_repl).
    =========================================================================
*/

#ifndef BENCH_ACKED_H_INCLUDED
#define BENCH_ACKED_H_INCLUDED

#include "bench_util.h"

#define BENCH_ACKED_CLIENTS_MAX 64

/*  Publishes n events of size bytes on topic from nclients DEALERs (at most
    BENCH_ACKED_CLIENTS_MAX), each with up to window requests outstanding,
    all driven by the calling thread (on a 2-core machine a thread per
    client would only take CPU from the broker). Replies must be ok and in
    order. Returns msgs/s, or a negative value on failure (a refused or
    out-of-order reply, or no reply for stall_ms).                         */
double bench_acked_pipelined(void *ctx, const char *endpoint, const char *topic, int nclients,
                             uint64_t n, uint64_t window, size_t size, int stall_ms);

/*  One request at a time: warm unmeasured ones, then n measured round
    trips into pct. Returns 0, or -1 on a refused or missing reply.        */
int bench_acked_one_at_a_time(void *ctx, const char *endpoint, const char *topic, uint64_t n,
                              uint64_t warm, size_t size, int stall_ms, bench_pct_t *pct);

#endif
