/*  =========================================================================
    bench_latency - end-to-end latency publish -> nexusd -> subscriber at a
    steady rate. A paced publisher thread stamps each event's payload with
    its CLOCK_MONOTONIC send time; a subscriber thread in the same process
    takes receive - send. Every event is stored (sync=full: one fsync per
    commit) before the broker forwards it, so at low load each event pays
    for its own commit.

    Usage: bench_latency [--n N] [--rate R] [--size B] [--runs R]
                         [--sync full|none] [--nexusd PATH]
    =========================================================================
*/

#include <inttypes.h>
#include <stdio.h>
#include <zmq.h>

#include "bench_util.h"

#define S_RUNS_MAX 16

static const char *s_usage = "usage: bench_latency [options]\n"
                             "  end-to-end latency at a steady rate (its own nexusd)\n"
                             "  --n N          events (100000)\n"
                             "  --rate R       events per second (10000)\n"
                             "  --size B       payload bytes (128)\n"
                             "  --runs R       repetitions, median printed (1)\n"
                             "  --sync full|none  nexusd --sync (full)\n"
                             "  --nexusd PATH  the broker to run (this build's, or $NEXUSD)\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    bench_set_nexusd(bench_arg_str(argc, argv, "nexusd", NULL));
    uint64_t n = bench_arg_u64(argc, argv, "n", 100000);
    unsigned rate = (unsigned)bench_arg_u64(argc, argv, "rate", 10000);
    size_t size = bench_arg_u64(argc, argv, "size", 128);
    int runs = (int)bench_arg_u64(argc, argv, "runs", 1);
    const char *sync = bench_arg_str(argc, argv, "sync", "full");
    if (runs < 1 || runs > S_RUNS_MAX || rate == 0 || size < 16) {
        fprintf(stderr, "bad arguments (--runs 1..%d, --rate > 0, --size >= 16)\n", S_RUNS_MAX);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    double p50[S_RUNS_MAX], p99[S_RUNS_MAX], p999[S_RUNS_MAX], maxv[S_RUNS_MAX];
    uint64_t drops = 0;
    double late = 0;
    int ok = 0, failed = 0;
    for (int r = 0; r < runs; r++) {
        bench_broker_t *broker = bench_broker_new(sync);
        if (!broker) {
            failed = 1;
            continue;
        }
        bench_stream_t s;
        if (bench_stream(broker, ctx, "bench.latency", n, rate, size, &s) == 0) {
            p50[ok] = s.lat.p50_us;
            p99[ok] = s.lat.p99_us;
            p999[ok] = s.lat.p999_us;
            maxv[ok] = s.lat.max_us;
            ok++;
            drops += s.sent - s.received;
            if (s.late_max_us > late)
                late = s.late_max_us;
        } else
            failed = 1;
        if (bench_broker_stop(broker) != 0)
            failed = 1;
        bench_broker_destroy(&broker);
    }
    printf("e2e_latency_%zuB_%uk: p50 %.0f us, p99 %.0f us, p999 %.0f us, max %.0f us, %" PRIu64
           " drops (n=%" PRIu64 " at %u/s, sync=%s%s; publisher at most %.0f us behind "
           "schedule)\n",
           size, rate / 1000, bench_median(p50, (size_t)ok), bench_median(p99, (size_t)ok),
           bench_median(p999, (size_t)ok), bench_median(maxv, (size_t)ok), drops, n, rate, sync,
           ok > 1 ? ", medians of runs" : "", late);
    zmq_ctx_term(ctx);
    return failed;
}
