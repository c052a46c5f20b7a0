/*  =========================================================================
    bench_repl - acknowledged publish with a hot standby, against the same
    primary alone, in the same run (alternating, so that the busy machine's
    moods fall on both). Three setups:
      alone  one nexusd
      sync   a primary and a standby (replica_of), replication = sync: a
             reply waits for the standby's flush too
      async  the same with replication = async
    For each: pipelined acknowledged publishes (clients each with its own
    DEALER and a window of requests outstanding, replies checked ok and in
    order), and one request at a time (round trip p50/p99). Afterwards the
    standby's store must hold every acknowledged event (its history's last
    seq).

    Usage: bench_repl [--n N] [--clients C] [--window W] [--lat-n N]
                      [--size B] [--runs R] [--sync full|none] [--nexusd PATH]
    The goal (issue 19): sync >= 0.5 x alone, pipelined.
    =========================================================================
*/

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_acked.h"
#include "bench_util.h"
#include "nx_codec.h"

#define S_RUNS_MAX 16
#define S_STALL_MS 10000
#define S_TOPIC    "bench.repl"

/*  Asks `state` of the standby until its receiver streams and its primary
    waits for it (a crude look for "sync":true in the reply), at most 30 s. */
static int s_wait_synced(bench_broker_t *standby, void *ctx)
{
    for (int i = 0; i < 300; i++) {
        void *s = bench_dealer(ctx, standby->control);
        msgpack_sbuffer buf;
        msgpack_sbuffer_init(&buf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str_with_body(&pk, "op", 2);
        msgpack_pack_str_with_body(&pk, "state", 5);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_uint64(&pk, 1);
        zmq_send(s, buf.data, buf.size, 0);
        msgpack_sbuffer_destroy(&buf);
        bench_reply_t reply;
        bool synced = false;
        if (bench_recv_reply(s, &reply, 2000) == 0) {
            const msgpack_object *repl = nx_map_get(reply.map, "replication");
            const msgpack_object *rx = repl ? nx_map_get(repl, "receiving") : NULL;
            bool sync = false;
            const char *state = NULL;
            size_t len = 0;
            if (rx) {
                nx_map_bool(rx, "sync", &sync, NULL);
                nx_map_str(rx, "state", &state, &len, NULL);
            }
            synced = sync && state && len == 9 && memcmp(state, "streaming", 9) == 0;
            bench_reply_destroy(&reply);
        }
        zmq_close(s);
        if (synced)
            return 0;
        usleep(100000);
    }
    return -1;
}

typedef struct {
    bench_broker_t *primary, *standby;
} s_setup_t;

static int s_start(s_setup_t *st, const char *kind, const char *sync, void *ctx)
{
    memset(st, 0, sizeof *st);
    if (strcmp(kind, "alone") == 0) {
        st->primary = bench_broker_new(sync);
        return st->primary ? 0 : -1;
    }
    const char *mode = strcmp(kind, "sync") == 0 ? "sync" : "async";
    const char *pargs[] = {"--name", "p", "--replication", mode, NULL};
    st->primary = bench_broker_new_with(sync, pargs);
    if (!st->primary)
        return -1;
    const char *sargs[] = {"--name", "s", "--replica-of", st->primary->control, "--replication",
                           mode,     NULL};
    st->standby = bench_broker_new_with(sync, sargs);
    if (!st->standby || s_wait_synced(st->standby, ctx) != 0) {
        fprintf(stderr, "# the standby did not catch up\n");
        return -1;
    }
    return 0;
}

static void s_stop(s_setup_t *st)
{
    bench_broker_destroy(&st->standby);
    bench_broker_destroy(&st->primary);
}

/*  The standby's store has every acknowledged event (its last seq).       */
static void s_check_standby(s_setup_t *st, void *ctx, const char *kind)
{
    if (!st->standby)
        return;
    bench_state_t p, s;
    for (int i = 0; i < 100; i++) {
        if (bench_broker_state(st->primary, ctx, &p) == 0 &&
            bench_broker_state(st->standby, ctx, &s) == 0 && s.last_seq >= p.last_seq)
            return;
        usleep(100000);
    }
    fprintf(stderr,
            "# %s: BROKER PROBLEM: the standby's last seq %" PRIu64 " < the primary's %" PRIu64
            "\n",
            kind, s.last_seq, p.last_seq);
}

static const char *s_usage = "usage: bench_repl [options]\n"
                             "  acknowledged publish alone, with a sync and an async standby\n"
                             "  --n N          pipelined publishes (200000)\n"
                             "  --clients C    client connections (16)\n"
                             "  --window W     outstanding per client (256)\n"
                             "  --lat-n N      one-at-a-time round trips (2000)\n"
                             "  --size B       payload bytes (128)\n"
                             "  --runs R       repetitions, median printed (3)\n"
                             "  --sync full|none  nexusd --sync (full)\n"
                             "  --nexusd PATH  the broker to run (this build's, or $NEXUSD)\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    bench_set_nexusd(bench_arg_str(argc, argv, "nexusd", NULL));
    uint64_t n = bench_arg_u64(argc, argv, "n", 200000);
    int nclients = (int)bench_arg_u64(argc, argv, "clients", 16);
    uint64_t window = bench_arg_u64(argc, argv, "window", 256);
    uint64_t lat_n = bench_arg_u64(argc, argv, "lat-n", 2000);
    size_t size = bench_arg_u64(argc, argv, "size", 128);
    int runs = (int)bench_arg_u64(argc, argv, "runs", 3);
    const char *sync = bench_arg_str(argc, argv, "sync", "full");
    if (runs < 1 || runs > S_RUNS_MAX || nclients < 1 || nclients > BENCH_ACKED_CLIENTS_MAX ||
        !window) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    const char *kinds[] = {"alone", "sync", "async"};
    double rate[3][S_RUNS_MAX], p50[3][S_RUNS_MAX], p99[3][S_RUNS_MAX];
    int ok[3] = {0, 0, 0};
    printf("# bench_repl: %" PRIu64 " acked publishes of %zu bytes, %d clients x window %" PRIu64
           ", sync=%s, %d runs (alternating)\n",
           n, size, nclients, window, sync, runs);
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < 3; k++) {
            s_setup_t st;
            if (s_start(&st, kinds[k], sync, ctx) != 0) {
                s_stop(&st);
                continue;
            }
            double v = bench_acked_pipelined(ctx, st.primary->control, S_TOPIC, nclients, n, window,
                                             size, S_STALL_MS);
            bench_pct_t pct;
            int lrc = bench_acked_one_at_a_time(ctx, st.primary->control, S_TOPIC, lat_n, 100, size,
                                                S_STALL_MS, &pct);
            s_check_standby(&st, ctx, kinds[k]);
            s_stop(&st);
            if (v < 0 || lrc != 0)
                continue;
            printf("# run %d %-5s %.0f msgs/s, one at a time p50 %.0f us p99 %.0f us\n", r + 1,
                   kinds[k], v, pct.p50_us, pct.p99_us);
            fflush(stdout);
            rate[k][ok[k]] = v;
            p50[k][ok[k]] = pct.p50_us;
            p99[k][ok[k]] = pct.p99_us;
            ok[k]++;
        }
    double med[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        if (!ok[k])
            continue;
        med[k] = bench_median(rate[k], (size_t)ok[k]);
        printf("%-5s acked pipelined %.0f msgs/s (median of %d); one at a time p50 %.0f us, p99 "
               "%.0f us\n",
               kinds[k], med[k], ok[k], bench_median(p50[k], (size_t)ok[k]),
               bench_median(p99[k], (size_t)ok[k]));
    }
    if (med[0] > 0)
        printf("sync / alone = %.2f (goal >= 0.5), async / alone = %.2f\n", med[1] / med[0],
               med[2] / med[0]);
    zmq_ctx_term(ctx);
    return ok[0] && ok[1] ? 0 : 1;
}
