/*  =========================================================================
    bench_acked - acknowledged publish on a broker's control plane over raw
    DEALER sockets, for bench_ack and bench_repl: pipelined clients driven
    by one thread, and one request at a time with its round trip's
    percentiles.
    =========================================================================
*/

#include "bench_acked.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    void *sock;     /* DEALER                                                */
    uint64_t quota; /* requests this client sends                            */
    uint64_t sent;  /* requests sent; ids are 1..sent                        */
    uint64_t acked; /* ok replies received                                   */
} s_client_t;

/*  Sends up to the window for one client. Returns how many were sent.     */
static uint64_t s_fill(s_client_t *c, uint64_t window, msgpack_sbuffer *buf, const char *topic,
                       const uint8_t *payload, size_t size)
{
    uint64_t sent = 0;
    while (c->sent < c->quota && c->sent - c->acked < window) {
        msgpack_sbuffer_clear(buf);
        bench_pack_publish(buf, c->sent + 1, topic, payload, size);
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

double bench_acked_pipelined(void *ctx, const char *endpoint, const char *topic, int nclients,
                             uint64_t n, uint64_t window, size_t size, int stall_ms)
{
    s_client_t clients[BENCH_ACKED_CLIENTS_MAX];
    zmq_pollitem_t items[BENCH_ACKED_CLIENTS_MAX];
    for (int k = 0; k < nclients; k++) {
        clients[k] = (s_client_t){bench_dealer(ctx, endpoint), n / nclients, 0, 0};
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
            s_fill(&clients[k], window, &buf, topic, payload, size);
        int ready = zmq_poll(items, nclients, 100);
        if (ready <= 0) {
            idle_ms += 100;
            if (idle_ms >= (uint64_t)stall_ms) {
                fprintf(stderr, "# pipelined: no reply for %d ms at %" PRIu64 " acked\n", stall_ms,
                        acked);
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

int bench_acked_one_at_a_time(void *ctx, const char *endpoint, const char *topic, uint64_t n,
                              uint64_t warm, size_t size, int stall_ms, bench_pct_t *pct)
{
    void *sock = bench_dealer(ctx, endpoint);
    uint8_t *payload = calloc(1, size);
    uint64_t *lat = malloc(n * sizeof *lat);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int rc = 0;
    uint64_t done = 0;
    for (uint64_t i = 0; i < warm + n && rc == 0; i++) {
        msgpack_sbuffer_clear(&buf);
        bench_pack_publish(&buf, i + 1, topic, payload, size);
        uint64_t t = bench_now_ns();
        bench_reply_t reply;
        if (zmq_send(sock, buf.data, buf.size, 0) < 0 ||
            bench_recv_reply(sock, &reply, stall_ms) != 0) {
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
