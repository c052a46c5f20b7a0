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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"

#define S_RUNS_MAX    16
#define S_CLIENTS_MAX 64
#define S_STALL_MS    5000
#define S_TOPIC       "bench.ack"

typedef struct {
    void *sock;     /* DEALER                                                */
    uint64_t quota; /* requests this client sends                            */
    uint64_t sent;  /* requests sent; ids are 1..sent                        */
    uint64_t acked; /* ok replies received                                   */
} s_client_t;

/*  Sends up to the window for one client. Returns how many were sent.     */
static uint64_t s_fill(s_client_t *c, uint64_t window, msgpack_sbuffer *buf, const uint8_t *payload,
                       size_t size)
{
    uint64_t sent = 0;
    while (c->sent < c->quota && c->sent - c->acked < window) {
        msgpack_sbuffer_clear(buf);
        bench_pack_publish(buf, c->sent + 1, S_TOPIC, payload, size);
        if (zmq_send(c->sock, buf->data, buf->size, ZMQ_DONTWAIT) < 0)
            break;
        c->sent++;
        sent++;
    }
    return sent;
}

/*  Reads every reply waiting on one client. Returns -1 on a failed or
    out-of-order reply.                                                     */
static int s_drain(s_client_t *c, uint64_t *acked_total)
{
    bench_reply_t reply;
    while (bench_recv_reply(c->sock, &reply, 0) == 0) {
        uint64_t id = 0;
        int rc = 0;
        if (!bench_reply_ok(reply.map, &id)) {
            bench_reply_print_error("publish failed", reply.map);
            rc = -1;
        } else if (id != c->acked + 1) {
            fprintf(stderr, "# reply id %" PRIu64 ", expected %" PRIu64 "\n", id, c->acked + 1);
            rc = -1;
        }
        bench_reply_destroy(&reply);
        if (rc)
            return rc;
        c->acked++;
        (*acked_total)++;
    }
    return 0;
}

/*  Publishes n events from nclients pipelined clients. Returns msgs/s, or
    a negative value on failure.                                            */
static double s_pipelined(bench_broker_t *broker, void *ctx, int nclients, uint64_t n,
                          uint64_t window, size_t size)
{
    s_client_t clients[S_CLIENTS_MAX];
    zmq_pollitem_t items[S_CLIENTS_MAX];
    for (int k = 0; k < nclients; k++) {
        clients[k] = (s_client_t){bench_dealer(ctx, broker->control), n / nclients, 0, 0};
        if (k < (int)(n % nclients))
            clients[k].quota++;
        items[k] = (zmq_pollitem_t){clients[k].sock, 0, ZMQ_POLLIN, 0};
    }
    uint8_t *payload = calloc(1, size);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    uint64_t acked = 0, t0 = bench_now_ns(), idle_ms = 0;
    int rc = 0;
    while (acked < n && rc == 0) {
        for (int k = 0; k < nclients; k++)
            s_fill(&clients[k], window, &buf, payload, size);
        int ready = zmq_poll(items, nclients, 100);
        if (ready <= 0) {
            idle_ms += 100;
            if (idle_ms >= S_STALL_MS) {
                fprintf(stderr, "# pipelined: no reply for %d ms at %" PRIu64 " acked\n",
                        S_STALL_MS, acked);
                rc = -1;
            }
            continue;
        }
        idle_ms = 0;
        for (int k = 0; k < nclients && rc == 0; k++)
            if (items[k].revents & ZMQ_POLLIN)
                rc = s_drain(&clients[k], &acked);
    }
    double seconds = (double)(bench_now_ns() - t0) / 1e9;
    for (int k = 0; k < nclients; k++)
        zmq_close(clients[k].sock);
    msgpack_sbuffer_destroy(&buf);
    free(payload);
    return rc == 0 ? (double)n / seconds : -1;
}

/*  One request at a time. Returns 0 and fills pct, or -1.                  */
static int s_one_at_a_time(bench_broker_t *broker, void *ctx, uint64_t n, size_t size,
                           bench_pct_t *pct)
{
    void *sock = bench_dealer(ctx, broker->control);
    uint8_t *payload = calloc(1, size);
    uint64_t *lat = malloc(n * sizeof *lat);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int rc = 0;
    uint64_t warm = 200, done = 0;
    for (uint64_t i = 0; i < warm + n && rc == 0; i++) {
        msgpack_sbuffer_clear(&buf);
        bench_pack_publish(&buf, i + 1, S_TOPIC, payload, size);
        uint64_t t = bench_now_ns();
        bench_reply_t reply;
        if (zmq_send(sock, buf.data, buf.size, 0) < 0 ||
            bench_recv_reply(sock, &reply, S_STALL_MS) != 0) {
            fprintf(stderr, "# one-at-a-time: no reply to request %" PRIu64 "\n", i + 1);
            rc = -1;
            break;
        }
        uint64_t id = 0, dt = bench_now_ns() - t;
        if (!bench_reply_ok(reply.map, &id) || id != i + 1) {
            bench_reply_print_error("publish failed", reply.map);
            rc = -1;
        } else if (i >= warm)
            lat[done++] = dt;
        bench_reply_destroy(&reply);
    }
    bench_percentiles(lat, done, pct);
    zmq_close(sock);
    msgpack_sbuffer_destroy(&buf);
    free(payload);
    free(lat);
    return rc;
}

/*  Checks that the broker stored what it acknowledged.                      */
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

int main(int argc, char **argv)
{
    bench_set_nexusd(bench_arg_str(argc, argv, "nexusd", NULL));
    uint64_t n = bench_arg_u64(argc, argv, "n", 500000);
    uint64_t window = bench_arg_u64(argc, argv, "window", 256);
    uint64_t lat_n = bench_arg_u64(argc, argv, "lat-n", 5000);
    size_t size = bench_arg_u64(argc, argv, "size", 128);
    int runs = (int)bench_arg_u64(argc, argv, "runs", 1);
    const char *sync = bench_arg_str(argc, argv, "sync", "full");
    if (runs < 1 || runs > S_RUNS_MAX || window < 1 || n < 16) {
        fprintf(stderr, "bad arguments (--runs 1..%d, --window >= 1, --n >= 16)\n", S_RUNS_MAX);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int failed = 0;
    const int client_counts[] = {1, 16};
    for (size_t i = 0; i < 2; i++) {
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
            double rate = s_pipelined(broker, ctx, nclients, n, window, size);
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
        if (s_one_at_a_time(broker, ctx, lat_n, size, &pct) == 0) {
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
    zmq_ctx_term(ctx);
    return failed;
}
