/*  =========================================================================
    bench_pubsub - fire-and-forget throughput through nexusd: one PUB sends
    events to the broker's XSUB, the broker stamps, stores (sync=full) and
    forwards them, 1 or 4 SUBs receive them from its XPUB.

    The publisher is flow-controlled: it never runs more than --window
    events ahead of the slowest subscriber (well under every HWM), so any
    event that does not arrive was lost, not shed by design. Each event
    carries its index; drops = sent - received, per subscriber.

    With --ref PATH (bench_ref, the reference loop of ANCHORS.md) every
    run of nexusd is followed by one of the reference loop on the same
    case, and a second line gives its figure and nexus's share of it:
    this machine's speed moves by 30 % or more between hours, so only
    figures taken alternately in one invocation compare.

    Usage: bench_pubsub [--n N] [--n-1k N] [--window W] [--runs R]
                        [--sync full|none] [--nexusd PATH] [--ref PATH]
                        [--case NAME]   (one case only, e.g. fanout_128B_1sub)
    Prints one line per figure; with R > 1 the figure is the median.
    =========================================================================
*/

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"

#define S_RUNS_MAX 16

typedef struct {
    size_t payload; /* bytes per event                                       */
    int nsubs;      /* subscribers                                           */
    const char *name;
} s_case_t;

/*  Runs one case once on a fresh broker. Returns 0 and fills the rate per
    subscriber and the drops summed over subscribers, or -1.               */
static int s_run(void *ctx, const char *sync, const s_case_t *c, uint64_t n, uint64_t window,
                 double *rate, uint64_t *drops, uint64_t *broker_drops)
{
    bench_broker_t *broker = bench_broker_new(sync);
    if (!broker)
        return -1;
    bench_flood_t r;
    int rc = bench_flood(broker, ctx, "bench.pubsub", n, c->payload, c->nsubs, window, &r);
    double sum = 0;
    *drops = 0;
    for (int k = 0; k < c->nsubs; k++) {
        sum += (double)r.received[k];
        *drops += r.sent - r.received[k];
    }
    *rate = r.seconds > 0 ? sum / c->nsubs / r.seconds : 0;
    if (r.out_of_order)
        fprintf(stderr, "# %s: %" PRIu64 " events out of order\n", c->name, r.out_of_order);
    if (r.sent < n)
        fprintf(stderr, "# %s: only %" PRIu64 " of %" PRIu64 " sent (stalled)\n", c->name, r.sent,
                n);
    bench_state_t st;
    *broker_drops = 0;
    if (bench_broker_state(broker, ctx, &st) == 0) {
        *broker_drops = st.drops;
        if (st.events_total < r.sent)
            fprintf(stderr, "# %s: broker stored %" PRIu64 " events of %" PRIu64 " sent\n", c->name,
                    st.events_total, r.sent);
    } else
        fprintf(stderr, "# %s: state query failed\n", c->name);
    if (bench_broker_stop(broker) != 0)
        rc = -1;
    bench_broker_destroy(&broker);
    return rc == 0 && r.sent == n ? 0 : -1;
}

/*  ", median of R: a b c" when there was more than one run.                */
static void s_print_runs(const double *rates, int n)
{
    if (n < 2)
        return;
    printf(", median of %d:", n);
    for (int r = 0; r < n; r++)
        printf(" %.0f", rates[r]);
}

/*  Median of n rates, leaving them in run order for s_print_runs.        */
static double s_median(const double *rates, int n)
{
    double sorted[S_RUNS_MAX];
    for (int r = 0; r < n; r++)
        sorted[r] = rates[r];
    return bench_median(sorted, (size_t)n);
}

static const char *s_usage = "usage: bench_pubsub [options]\n"
                             "  fire-and-forget throughput on raw sockets (its own nexusd)\n"
                             "  --n N          128 B events per case (1000000)\n"
                             "  --n-1k N       1 KiB events per case (300000)\n"
                             "  --window W     publisher lead over the slowest subscriber (20000)\n"
                             "  --runs R       repetitions, median printed (1)\n"
                             "  --sync full|none  nexusd --sync (full)\n"
                             "  --ref PATH     run bench_ref alternately on each case\n"
                             "  --case NAME    one case only, e.g. fanout_128B_1sub\n"
                             "  --nexusd PATH  the broker to run (this build's, or $NEXUSD)\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    bench_set_nexusd(bench_arg_str(argc, argv, "nexusd", NULL));
    uint64_t n_small = bench_arg_u64(argc, argv, "n", 1000000);
    uint64_t n_large = bench_arg_u64(argc, argv, "n-1k", 300000);
    uint64_t window = bench_arg_u64(argc, argv, "window", 20000);
    int runs = (int)bench_arg_u64(argc, argv, "runs", 1);
    const char *sync = bench_arg_str(argc, argv, "sync", "full");
    const char *ref = bench_arg_str(argc, argv, "ref", NULL);
    const char *only = bench_arg_str(argc, argv, "case", NULL);
    char nexusd[4096];
    snprintf(nexusd, sizeof nexusd, "%s", bench_nexusd());
    if (runs < 1 || runs > S_RUNS_MAX) {
        fprintf(stderr, "--runs must be 1..%d\n", S_RUNS_MAX);
        return 2;
    }
    const s_case_t cases[] = {
        {128, 1, "fanout_128B_1sub"},
        {128, 4, "fanout_128B_4sub"},
        {1024, 1, "fanout_1KiB_1sub"},
        {1024, 4, "fanout_1KiB_4sub"},
    };
    bool known = !only;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        known = known || strcmp(only, cases[i].name) == 0;
    if (!known) {
        fprintf(stderr,
                "--case: no case named '%s' (fanout_128B_1sub, fanout_128B_4sub, "
                "fanout_1KiB_1sub, fanout_1KiB_4sub)\n",
                only);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const s_case_t *c = &cases[i];
        if (only && strcmp(only, c->name) != 0)
            continue;
        uint64_t n = c->payload <= 128 ? n_small : n_large;
        /*  [0] nexusd, [1] the reference loop (with --ref), alternated.     */
        const char *binary[2] = {nexusd, ref};
        int systems = ref ? 2 : 1;
        double rates[2][S_RUNS_MAX];
        uint64_t drops[2] = {0, 0}, broker_drops = 0;
        int ok[2] = {0, 0};
        for (int r = 0; r < runs; r++)
            for (int w = 0; w < systems; w++) {
                uint64_t d = 0, bd = 0;
                bench_set_nexusd(binary[w]);
                if (s_run(ctx, sync, c, n, window, &rates[w][ok[w]], &d, &bd) == 0)
                    ok[w]++;
                else
                    failed = 1;
                drops[w] += d;
                if (w == 0)
                    broker_drops += bd;
            }
        double median = s_median(rates[0], ok[0]);
        printf("%s: %.0f msgs/s delivered per subscriber, %" PRIu64 " drops (n=%" PRIu64
               " x %d sub%s, sync=%s, window=%" PRIu64,
               c->name, median, drops[0], n, c->nsubs, c->nsubs > 1 ? "s" : "", sync, window);
        s_print_runs(rates[0], ok[0]);
        if (broker_drops)
            printf(", broker counted %" PRIu64 " drops", broker_drops);
        printf(")\n");
        if (ref) {
            double ref_median = s_median(rates[1], ok[1]);
            printf("%s_ref: %.0f msgs/s for the reference loop, %" PRIu64
                   " drops; nexus %.0f %% of it (alternated runs",
                   c->name, ref_median, drops[1], ref_median > 0 ? 100 * median / ref_median : 0);
            s_print_runs(rates[1], ok[1]);
            printf(")\n");
        }
        fflush(stdout);
    }
    zmq_ctx_term(ctx);
    return failed;
}
