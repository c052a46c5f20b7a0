/*  =========================================================================
    bench_history - history replay through nexusd's control plane.

    1. Fill: --n events of 128 B through the event plane, flow-controlled
       against a subscriber (as in bench_pubsub), with the broker at
       --fill-sync (default full; group commit makes it cheap under load).
    2. Replay: every stored event through paginated history queries
       (limit --limit, following next_cursor), checking that seqs come
       back contiguous and complete; events/s.
    3. Forwarding while replaying: the latency of a paced 10k/s stream,
       first alone, then while another client replays the first --loop-n
       events through history in a loop. The broker serves history in its
       one loop, so a page's cost shows up as forwarding delay.

    Usage: bench_history [--n N] [--limit L] [--fill-sync full|none]
                         [--stream-n N] [--rate R] [--loop-n N] [--nexusd PATH]
    =========================================================================
*/

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"
#include "nx_codec.h"

#define S_PAGE_TIMEOUT_MS 30000
#define S_PAGES_MAX       100000

typedef struct {
    uint64_t events;    /* events received                                   */
    uint64_t pages;     /* history replies                                   */
    uint64_t first_seq; /* first seq seen                                    */
    uint64_t last_seq;  /* last seq seen                                     */
    uint64_t gaps;      /* seq not one more than the one before              */
    uint64_t *page_ns;  /* round trip of each page (S_PAGES_MAX)             */
    double seconds;     /* the whole replay                                  */
} s_replay_t;

/*  Replays events with seq in (since, until] page by page; until 0: all.
    Returns 0, or -1 on an error reply or a timeout.                        */
static int s_replay(void *dealer, uint64_t until, uint64_t limit, s_replay_t *out)
{
    uint64_t *page_ns = out->page_ns;
    memset(out, 0, sizeof *out);
    out->page_ns = page_ns;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    uint64_t cursor = 0, t0 = bench_now_ns(), expect = 0;
    int rc = 0;
    while (rc == 0) {
        msgpack_sbuffer_clear(&buf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4 + (cursor != 0) + (until != 0));
        nx_pack_kv_str(&pk, "op", "history");
        nx_pack_kv_u64(&pk, "id", out->pages + 1);
        nx_pack_kv_u64(&pk, "since_seq", 0);
        nx_pack_kv_u64(&pk, "limit", limit);
        if (cursor)
            nx_pack_kv_u64(&pk, "cursor", cursor);
        if (until)
            nx_pack_kv_u64(&pk, "until_seq", until);
        uint64_t t = bench_now_ns();
        bench_reply_t reply;
        if (zmq_send(dealer, buf.data, buf.size, 0) < 0 ||
            bench_recv_reply(dealer, &reply, S_PAGE_TIMEOUT_MS) != 0) {
            fprintf(stderr, "# history: no reply in %d ms (page %" PRIu64 ")\n", S_PAGE_TIMEOUT_MS,
                    out->pages + 1);
            rc = -1;
            break;
        }
        if (out->page_ns && out->pages < S_PAGES_MAX)
            out->page_ns[out->pages] = bench_now_ns() - t;
        out->pages++;
        const msgpack_object *map = reply.map;
        const msgpack_object *events = nx_map_get(map, "events");
        const msgpack_object *next = nx_map_get(map, "next_cursor");
        if (!bench_reply_ok(map, NULL) || !events || events->type != MSGPACK_OBJECT_ARRAY) {
            bench_reply_print_error("history failed", map);
            rc = -1;
        } else {
            for (uint32_t i = 0; i < events->via.array.size; i++) {
                uint64_t seq = 0;
                nx_map_u64(&events->via.array.ptr[i], "seq", &seq, NULL);
                if (out->events == 0)
                    out->first_seq = seq;
                else if (seq != expect)
                    out->gaps++;
                expect = seq + 1;
                out->last_seq = seq;
                out->events++;
            }
            if (next && next->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                cursor = next->via.u64;
            else
                cursor = 0;
        }
        bench_reply_destroy(&reply);
        if (cursor == 0)
            break;
    }
    out->seconds = (double)(bench_now_ns() - t0) / 1e9;
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/*  ---- The replay loop that runs beside the latency stream ---------------- */

typedef struct {
    void *ctx;
    const char *endpoint; /* control plane                                   */
    uint64_t until;       /* replay seq 1..until                             */
    uint64_t limit;       /* page size                                       */
    atomic_int stop;      /* set by main when the stream is done             */
    uint64_t events;      /* events replayed in all                          */
    uint64_t pages;       /* pages in all                                    */
    uint64_t page_max_ns; /* slowest page round trip                         */
    int failed;
    pthread_t thread;
} s_looper_t;

static void *s_looper_run(void *arg)
{
    s_looper_t *self = arg;
    void *dealer = bench_dealer(self->ctx, self->endpoint);
    s_replay_t r = {.page_ns = calloc(S_PAGES_MAX, sizeof(uint64_t))};
    while (!atomic_load(&self->stop) && !self->failed) {
        if (s_replay(dealer, self->until, self->limit, &r) != 0)
            self->failed = 1;
        self->events += r.events;
        for (uint64_t i = 0; i < r.pages && i < S_PAGES_MAX; i++)
            if (r.page_ns[i] > self->page_max_ns)
                self->page_max_ns = r.page_ns[i];
        self->pages += r.pages;
    }
    free(r.page_ns);
    zmq_close(dealer);
    return NULL;
}

static void s_print_stream(const char *name, const bench_stream_t *s, unsigned rate)
{
    printf("%s: p50 %.0f us, p99 %.0f us, p999 %.0f us, max %.0f us, %" PRIu64 " drops (n=%" PRIu64
           " at %u/s, 128 B, sync=full",
           name, s->lat.p50_us, s->lat.p99_us, s->lat.p999_us, s->lat.max_us, s->sent - s->received,
           s->sent, rate);
}

static const char *s_usage = "usage: bench_history [options]\n"
                             "  history replay and forwarding while replaying (its own nexusd)\n"
                             "  --n N          events filled and replayed (1000000)\n"
                             "  --limit L      events per history page (10000)\n"
                             "  --fill-sync full|none  nexusd --sync while filling (full)\n"
                             "  --stream-n N   paced events for the latency part (50000)\n"
                             "  --rate R       their rate per second (10000)\n"
                             "  --loop-n N     events the concurrent replay loops over (100000)\n"
                             "  --nexusd PATH  the broker to run (this build's, or $NEXUSD)\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    bench_set_nexusd(bench_arg_str(argc, argv, "nexusd", NULL));
    uint64_t n = bench_arg_u64(argc, argv, "n", 1000000);
    uint64_t limit = bench_arg_u64(argc, argv, "limit", 10000);
    const char *fill_sync = bench_arg_str(argc, argv, "fill-sync", "full");
    uint64_t stream_n = bench_arg_u64(argc, argv, "stream-n", 50000);
    unsigned rate = (unsigned)bench_arg_u64(argc, argv, "rate", 10000);
    uint64_t loop_n = bench_arg_u64(argc, argv, "loop-n", 100000);
    if (n < loop_n || limit == 0 || rate == 0) {
        fprintf(stderr, "bad arguments (--n >= --loop-n, --limit > 0, --rate > 0)\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int failed = 0;
    bench_broker_t *broker = bench_broker_new(fill_sync);
    if (!broker)
        return 1;

    /*  1. Fill.                                                            */
    bench_flood_t fill;
    if (bench_flood(broker, ctx, "bench.history", n, 128, 1, 20000, &fill) != 0 ||
        fill.received[0] != n) {
        fprintf(stderr, "# fill failed: %" PRIu64 " sent, %" PRIu64 " received\n", fill.sent,
                fill.received[0]);
        failed = 1;
    }
    bench_state_t st;
    bench_broker_state(broker, ctx, &st);
    fprintf(stderr,
            "# fill: %" PRIu64 " events in %.2f s (%.0f/s, sync=%s); broker stored %" PRIu64
            " (incl. warm-up), %" PRIu64 " commits\n",
            fill.sent, fill.seconds, (double)fill.sent / fill.seconds, fill_sync, st.count,
            st.batches);
    if (strcmp(fill_sync, "full") != 0 && bench_broker_restart(broker, "full") != 0) {
        bench_broker_destroy(&broker);
        return 1;
    }

    /*  2. Replay everything, twice: the first pass warms the page cache.   */
    void *dealer = bench_dealer(ctx, broker->control);
    s_replay_t r = {.page_ns = calloc(S_PAGES_MAX, sizeof(uint64_t))};
    double best = 0;
    bench_pct_t page = {0};
    for (int pass = 0; pass < 2 && !failed; pass++) {
        if (s_replay(dealer, 0, limit, &r) != 0)
            failed = 1;
        if (r.events != st.count || r.gaps) {
            fprintf(stderr,
                    "# BROKER PROBLEM: replay returned %" PRIu64 " events (%" PRIu64
                    " gaps), store holds %" PRIu64 "\n",
                    r.events, r.gaps, st.count);
            failed = 1;
        }
        double rate_ev = (double)r.events / r.seconds;
        fprintf(stderr, "# replay pass %d: %" PRIu64 " events, %" PRIu64 " pages, %.0f events/s\n",
                pass + 1, r.events, r.pages, rate_ev);
        if (rate_ev > best) {
            best = rate_ev;
            bench_percentiles(r.page_ns, r.pages < S_PAGES_MAX ? r.pages : S_PAGES_MAX, &page);
        }
    }
    printf("history_replay: %.0f events/s (n=%" PRIu64 " events, %" PRIu64 " pages of %" PRIu64
           ", best of 2 passes; page round trip p50 %.1f ms, max %.1f ms;"
           " fill sync=%s, replay sync=full)\n",
           best, r.events, r.pages, limit, page.p50_us / 1000, page.max_us / 1000, fill_sync);
    fflush(stdout);
    free(r.page_ns);
    zmq_close(dealer);

    /*  3. Forwarding latency alone, then beside a replay loop.              */
    bench_stream_t s;
    if (bench_stream(broker, ctx, "bench.stream", stream_n, rate, 128, &s) == 0) {
        s_print_stream("stream_latency_idle", &s, rate);
        printf(", no history queries)\n");
    } else
        failed = 1;
    fflush(stdout);

    s_looper_t looper = {.ctx = ctx, .endpoint = broker->control, .until = loop_n, .limit = limit};
    atomic_init(&looper.stop, 0);
    pthread_create(&looper.thread, NULL, s_looper_run, &looper);
    int rc = bench_stream(broker, ctx, "bench.stream", stream_n, rate, 128, &s);
    atomic_store(&looper.stop, 1);
    pthread_join(looper.thread, NULL);
    if (rc == 0 && !looper.failed) {
        s_print_stream("stream_latency_during_replay", &s, rate);
        printf("; meanwhile %" PRIu64 " events replayed in %" PRIu64 " pages of %" PRIu64
               " from the first %" PRIu64 ", slowest page %.1f ms)\n",
               looper.events, looper.pages, limit, loop_n, (double)looper.page_max_ns / 1e6);
    } else
        failed = 1;

    if (bench_broker_stop(broker) != 0)
        failed = 1;
    bench_broker_destroy(&broker);
    zmq_ctx_term(ctx);
    return failed;
}
