/*  =========================================================================
    bench_ack - acknowledged publish on nexusd's control plane. A publish
    reply is sent only after the event's LMDB commit (and its fsync under
    sync=full), so this measures durable writes.

    1. Pipelined: C clients, each its own DEALER, keep up to --window
       publish requests outstanding; all clients are driven by one thread
       with zmq_poll (on a 2-core machine one more thread per client would
       only take CPU from the broker). Replies must come back ok and in
       order (id = the client's request number).
    2. One at a time: one DEALER, send, wait for the reply, repeat; the
       round trip's p50/p99/p999.

    Usage: bench_ack [--n N] [--window W] [--lat-n N] [--size B] [--runs R]
                     [--sync full|none] [--nexusd PATH]
    =========================================================================
*/

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_acked.h"
#include "bench_util.h"

#define S_RUNS_MAX 16
#define S_STALL_MS 5000
#define S_TOPIC    "bench.ack"

static void s_check_stored(bench_broker_t *broker, void *ctx, uint64_t expected, const char *name)
{
    bench_state_t st;
    if (bench_broker_state(broker, ctx, &st) != 0)
        fprintf(stderr, "# %s: state query failed\n", name);
    else if (st.events_total != expected || st.count != expected)
        fprintf(stderr,
                "# %s: BROKER PROBLEM: acknowledged %" PRIu64 " events, broker stored %" PRIu64
                " (history count %" PRIu64 ")\n",
                name, expected, st.events_total, st.count);
}

static const char *s_usage =
    "usage: bench_ack [options]\n"
    "  acknowledged publish, pipelined and one at a time (its own nexusd)\n"
    "  --n N          pipelined publishes (500000)\n"
    "  --window W     outstanding per client (256)\n"
    "  --lat-n N      one-at-a-time round trips (5000)\n"
    "  --size B       payload bytes (128)\n"
    "  --runs R       repetitions, median printed (1)\n"
    "  --sync full|none  nexusd --sync (full)\n"
    "  --pipelined 0  only the one-at-a-time round trips\n"
    "  --nexusd PATH  the broker to run (this build's, or $NEXUSD)\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    bench_set_nexusd(bench_arg_str(argc, argv, "nexusd", NULL));
    uint64_t n = bench_arg_u64(argc, argv, "n", 500000);
    uint64_t window = bench_arg_u64(argc, argv, "window", 256);
    uint64_t lat_n = bench_arg_u64(argc, argv, "lat-n", 5000);
    size_t size = bench_arg_u64(argc, argv, "size", 128);
    int runs = (int)bench_arg_u64(argc, argv, "runs", 1);
    const char *sync = bench_arg_str(argc, argv, "sync", "full");
    bool pipelined = bench_arg_u64(argc, argv, "pipelined", 1) != 0;
    if (runs < 1 || runs > S_RUNS_MAX || window < 1 || n < 16) {
        fprintf(stderr, "bad arguments (--runs 1..%d, --window >= 1, --n >= 16)\n", S_RUNS_MAX);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int failed = 0;
    const int client_counts[] = {1, 16};
    for (size_t i = 0; pipelined && i < 2; i++) {
        int nclients = client_counts[i];
        char name[64];
        snprintf(name, sizeof name, "ack_pipelined_%zuB_%dc", size, nclients);
        double rates[S_RUNS_MAX], sorted[S_RUNS_MAX];
        int ok = 0;
        for (int r = 0; r < runs; r++) {
            bench_broker_t *broker = bench_broker_new(sync);
            if (!broker) {
                failed = 1;
                continue;
            }
            double rate = bench_acked_pipelined(ctx, broker->control, S_TOPIC, nclients, n, window,
                                                size, S_STALL_MS);
            if (rate > 0) {
                rates[ok++] = rate;
                s_check_stored(broker, ctx, n, name);
            } else
                failed = 1;
            if (bench_broker_stop(broker) != 0)
                failed = 1;
            bench_broker_destroy(&broker);
        }
        memcpy(sorted, rates, sizeof(double) * (size_t)ok);
        printf("%s: %.0f msgs/s acknowledged (n=%" PRIu64 ", %d client%s x window %" PRIu64
               ", sync=%s",
               name, bench_median(sorted, (size_t)ok), n, nclients, nclients > 1 ? "s" : "", window,
               sync);
        if (ok > 1) {
            printf(", median of %d:", ok);
            for (int r = 0; r < ok; r++)
                printf(" %.0f", rates[r]);
        }
        printf(")\n");
        fflush(stdout);
    }

    double p50[S_RUNS_MAX], p99[S_RUNS_MAX], p999[S_RUNS_MAX], maxv[S_RUNS_MAX];
    int ok = 0;
    for (int r = 0; r < runs; r++) {
        bench_broker_t *broker = bench_broker_new(sync);
        if (!broker) {
            failed = 1;
            continue;
        }
        bench_pct_t pct;
        if (bench_acked_one_at_a_time(ctx, broker->control, S_TOPIC, lat_n, 200, size, S_STALL_MS,
                                      &pct) == 0) {
            p50[ok] = pct.p50_us;
            p99[ok] = pct.p99_us;
            p999[ok] = pct.p999_us;
            maxv[ok] = pct.max_us;
            ok++;
            s_check_stored(broker, ctx, lat_n + 200, "ack_latency");
        } else
            failed = 1;
        if (bench_broker_stop(broker) != 0)
            failed = 1;
        bench_broker_destroy(&broker);
    }
    printf("ack_latency_%zuB: p50 %.0f us, p99 %.0f us, p999 %.0f us, max %.0f us (n=%" PRIu64
           " one at a time, sync=%s%s)\n",
           size, bench_median(p50, (size_t)ok), bench_median(p99, (size_t)ok),
           bench_median(p999, (size_t)ok), bench_median(maxv, (size_t)ok), lat_n, sync,
           ok > 1 ? ", medians of runs" : "");
    /*  The same for bench/compare, which reads RESULT lines.              */
    if (ok)
        printf("RESULT workload=ack_one system=nexus p50_us=%.0f p99_us=%.0f n=%" PRIu64
               " size=%zu\n",
               bench_median(p50, (size_t)ok), bench_median(p99, (size_t)ok), lat_n, size);
    zmq_ctx_term(ctx);
    return failed;
}
