/*  =========================================================================
    gw_bench - WebSocket benchmarks of nexus-gateway (and, for bench/compare,
    of Mosquitto's websockets listener), with a minimal WebSocket client
    written here: one thread, epoll, no library, so the client side costs as
    little CPU as possible on a machine it shares with the server.

    Modes:
      --mode fanout   --clients N (1000) connections subscribe to one topic;
                      one more connection publishes --rate per second (100)
                      for --seconds (10), --reps times (1). Every payload
                      carries its repetition, index and CLOCK_MONOTONIC send
                      time; latency = receive - send (same process, same
                      clock). Reports delivered rate, loss, duplicates,
                      p50/p99/max latency and the gateway's RSS (--pid).
      --mode pair     the fan-out against two gateways at once (--port and
                      --port2, each with --clients subscribers and its
                      publisher), publishing to one at a time and switching
                      every --slice seconds (1), so that both meet the same
                      seconds of a machine whose speed drifts; each
                      repetition gives each gateway --seconds in all and
                      prints a RESULT line for each (--system, --system2).
                      For bench/compare's cost of tokens: two runs of the
                      same gateway 10 s apart differ by up to 2x at p50.
      --mode idle     --clients N (10000) connections, each a session that
                      got its welcome (type "connection"), held for --hold seconds (5); reports
                      the gateway's VmRSS (--pid) before and with them.

    --system nexus      nexus-gateway protocol (docs/gateway.md): connect to
                        /ws/session/ID?recent=0, {"action":"subscribe"} with
                        an id, publish with {"action":"publish"} (no id:
                        fire-and-forget)
    --system mosquitto  MQTT 3.1.1 over WebSocket (subprotocol "mqtt"), QoS 0,
                        clean session (fan-out only)

    --port P (127.0.0.1). Prints RESULT lines like compare_common.h.
    =========================================================================
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

static uint64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double s_rss_mb(int pid)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    double mb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            mb = strtod(line + 6, NULL) / 1024.0;
    fclose(f);
    return mb;
}

/*  ---- connections ----------------------------------------------------------- */

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_SUBSCRIBING, ST_READY, ST_CLOSED };

typedef struct {
    int fd;
    int idx;  /* client index; -1 for the publisher                         */
    int port; /* the server's                                               */
    int state;
    unsigned char *rbuf;
    size_t rlen, rcap;
    unsigned char *mq; /* MQTT byte stream carried in binary frames        */
    size_t mqlen, mqcap;
} conn_t;

static bool s_mqtt;
static int s_port;
static int s_ep;
static char s_tag[32];
static int s_ready, s_closed_unexpectedly, s_errors;
static bool s_quitting;

/*  Fan-out bookkeeping for the running repetition.                         */
static int s_rep = -100;
static int s_clients;
static uint64_t s_events_max;
static uint8_t *s_seen; /* per client index and event: delivered yet  */
static size_t s_seen_size;
static uint64_t *s_lat;
static uint64_t s_lat_n, s_delivered, s_dups;

static void s_append(unsigned char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (*len + n > *cap) {
        *cap = (*len + n) * 2 + 4096;
        *buf = (unsigned char *)realloc(*buf, *cap);
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

static int s_write_all(int fd, const void *data, size_t n)
{
    const char *p = (const char *)data;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*  Sends one client frame (masked with a zero key, which RFC 6455 allows). */
static int s_send_frame(conn_t *c, int opcode, const void *data, size_t n)
{
    unsigned char h[14];
    size_t hl = 0;
    h[hl++] = (unsigned char)(0x80 | opcode);
    if (n < 126)
        h[hl++] = (unsigned char)(0x80 | n);
    else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    memset(h + hl, 0, 4);
    hl += 4;
    unsigned char stackbuf[2048];
    unsigned char *out = hl + n <= sizeof stackbuf ? stackbuf : (unsigned char *)malloc(hl + n);
    memcpy(out, h, hl);
    memcpy(out + hl, data, n);
    int rc = s_write_all(c->fd, out, hl + n);
    if (out != stackbuf)
        free(out);
    return rc;
}

static size_t s_mqtt_remlen(unsigned char *p, size_t n)
{
    size_t i = 0;
    do {
        p[i] = (unsigned char)(n % 128);
        n /= 128;
        if (n)
            p[i] |= 0x80;
        i++;
    } while (n);
    return i;
}

static int s_mqtt_send(conn_t *c, unsigned char type, const unsigned char *body, size_t n)
{
    unsigned char pkt[2048];
    size_t k = 0;
    pkt[k++] = type;
    k += s_mqtt_remlen(pkt + k, n);
    memcpy(pkt + k, body, n);
    return s_send_frame(c, 2, pkt, k + n);
}

static int s_connect_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void s_send_handshake(conn_t *c)
{
    char req[512];
    char id[96];
    if (c->idx >= 0)
        snprintf(id, sizeof id, "b%s-%d", s_tag, c->idx);
    else
        snprintf(id, sizeof id, "b%s-pub%d", s_tag, c->port);
    int n = snprintf(req, sizeof req,
                     "GET %s%s%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     s_mqtt ? "/" : "/ws/session/", s_mqtt ? "" : id, s_mqtt ? "" : "?recent=0",
                     c->port, s_mqtt ? "Sec-WebSocket-Protocol: mqtt\r\n" : "");
    if (s_write_all(c->fd, req, (size_t)n) != 0)
        c->state = ST_CLOSED;
    else
        c->state = ST_HANDSHAKE;
}

static const char *s_topic(void)
{
    return s_mqtt ? "bench/fan" : "bench.fan";
}

/*  Once the WebSocket is open: MQTT CONNECT, or wait for the welcome.     */
static void s_on_open(conn_t *c)
{
    c->state = ST_OPEN;
    if (s_mqtt) {
        char id[96];
        snprintf(id, sizeof id, "b%s-%d", s_tag, c->idx);
        unsigned char body[160];
        size_t k = 0, il = strlen(id);
        const unsigned char hdr[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0};
        memcpy(body, hdr, sizeof hdr);
        k = sizeof hdr;
        body[k++] = (unsigned char)(il >> 8);
        body[k++] = (unsigned char)il;
        memcpy(body + k, id, il);
        k += il;
        s_mqtt_send(c, 0x10, body, k);
    }
}

static bool s_subscribe_wanted;

static void s_subscribe(conn_t *c)
{
    if (!s_subscribe_wanted || c->idx < 0) {
        c->state = ST_READY;
        s_ready++;
        return;
    }
    c->state = ST_SUBSCRIBING;
    if (s_mqtt) {
        unsigned char body[64];
        size_t k = 0, tl = strlen(s_topic());
        body[k++] = 0;
        body[k++] = 1;
        body[k++] = 0;
        body[k++] = (unsigned char)tl;
        memcpy(body + k, s_topic(), tl);
        k += tl;
        body[k++] = 0;
        s_mqtt_send(c, 0x82, body, k);
    } else {
        char msg[128];
        int n =
            snprintf(msg, sizeof msg,
                     "{\"action\":\"subscribe\",\"topics\":[\"%s\"],\"id\":\"sub\"}", s_topic());
        s_send_frame(c, 1, msg, (size_t)n);
    }
}

/*  r, k, t out of our payload {"r":R,"k":K,"t":T,...}.                   */
static void s_on_payload(conn_t *c, const unsigned char *p, size_t n)
{
    const unsigned char *r = memmem(p, n, "{\"r\":", 5);
    if (!r || c->idx < 0)
        return;
    uint64_t now = s_now_ns();
    char tmp[96];
    size_t m = (size_t)(p + n - r) < sizeof tmp - 1 ? (size_t)(p + n - r) : sizeof tmp - 1;
    memcpy(tmp, r, m);
    tmp[m] = 0;
    int rep = 0;
    unsigned long long k = 0, t = 0;
    if (sscanf(tmp, "{\"r\":%d,\"k\":%llu,\"t\":%llu", &rep, &k, &t) != 3)
        return;
    if (rep != s_rep || k >= s_events_max)
        return;
    uint64_t slot = (uint64_t)c->idx * s_events_max + k;
    if (s_seen[slot]) {
        s_dups++;
        return;
    }
    s_seen[slot] = 1;
    s_delivered++;
    s_lat[s_lat_n++] = now - t;
}

static void s_on_message(conn_t *c, int opcode, unsigned char *p, size_t n)
{
    if (opcode == 9) { /* ping */
        s_send_frame(c, 10, p, n);
        return;
    }
    if (opcode == 8) {
        if (!s_quitting) {
            s_closed_unexpectedly++;
            fprintf(stderr, "# client %d: closed by the server (code %d)\n", c->idx,
                    n >= 2 ? (p[0] << 8 | p[1]) : 0);
        }
        c->state = ST_CLOSED;
        return;
    }
    if (opcode == 10)
        return;
    if (s_mqtt) {
        s_append(&c->mq, &c->mqlen, &c->mqcap, p, n);
        size_t off = 0;
        for (;;) {
            if (c->mqlen - off < 2)
                break;
            size_t rl = 0, mul = 1, i = 1;
            bool ok = false;
            while (off + i < c->mqlen && i <= 4) {
                unsigned char b = c->mq[off + i++];
                rl += (b & 127) * mul;
                mul *= 128;
                if (!(b & 128)) {
                    ok = true;
                    break;
                }
            }
            if (!ok || c->mqlen - off < i + rl)
                break;
            unsigned char type = c->mq[off] >> 4;
            unsigned char *body = c->mq + off + i;
            if (type == 2) { /* CONNACK */
                if (rl >= 2 && body[1] != 0) {
                    fprintf(stderr, "# client %d: CONNACK refused %d\n", c->idx, body[1]);
                    s_errors++;
                } else
                    s_subscribe(c);
            } else if (type == 9) { /* SUBACK */
                c->state = ST_READY;
                s_ready++;
            } else if (type == 3 && rl >= 2) { /* PUBLISH qos 0 */
                size_t tl = (size_t)(body[0] << 8 | body[1]);
                if (2 + tl <= rl)
                    s_on_payload(c, body + 2 + tl, rl - 2 - tl);
            }
            off += i + rl;
        }
        memmove(c->mq, c->mq + off, c->mqlen - off);
        c->mqlen -= off;
        return;
    }
    /*  nexus: text frames, one JSON object each.                            */
    if (n >= 15 && !memcmp(p, "{\"type\":\"event\"", 15)) {
        s_on_payload(c, p, n);
        return;
    }
    /*  The welcome (seed 003's "connection" message).                      */
    if (c->state == ST_OPEN && memmem(p, n, "\"type\":\"connection\"", 19)) {
        s_subscribe(c);
        return;
    }
    if (c->state == ST_SUBSCRIBING && memmem(p, n, "\"type\":\"reply\"", 14) &&
        memmem(p, n, "\"id\":\"sub\"", 10)) {
        if (!memmem(p, n, "\"ok\":true", 9)) {
            fprintf(stderr, "# client %d: subscribe refused: %.*s\n", c->idx, (int)n, p);
            s_errors++;
        }
        c->state = ST_READY;
        s_ready++;
        return;
    }
    if (memmem(p, n, "\"ok\":false", 10) || memmem(p, n, "\"type\":\"gap\"", 12)) {
        s_errors++;
        if (s_errors < 10)
            fprintf(stderr, "# client %d: %.*s\n", c->idx, (int)(n < 300 ? n : 300), p);
    }
}

static void s_on_readable(conn_t *c)
{
    unsigned char buf[65536];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            r = 0;
        }
        if (r == 0) {
            if (!s_quitting && c->state != ST_CLOSED) {
                s_closed_unexpectedly++;
                fprintf(stderr, "# client %d: connection closed (state %d)\n", c->idx, c->state);
            }
            c->state = ST_CLOSED;
            epoll_ctl(s_ep, EPOLL_CTL_DEL, c->fd, NULL);
            return;
        }
        s_append(&c->rbuf, &c->rlen, &c->rcap, buf, (size_t)r);
        if ((size_t)r < sizeof buf)
            break;
    }
    size_t off = 0;
    if (c->state == ST_HANDSHAKE) {
        unsigned char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!end)
            return;
        if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
            fprintf(stderr, "# client %d: handshake refused: %.*s\n", c->idx,
                    (int)(c->rlen < 200 ? c->rlen : 200), c->rbuf);
            s_errors++;
            c->state = ST_CLOSED;
            return;
        }
        off = (size_t)(end + 4 - c->rbuf);
        s_on_open(c);
    }
    for (;;) {
        size_t avail = c->rlen - off;
        if (avail < 2)
            break;
        unsigned char *h = c->rbuf + off;
        int opcode = h[0] & 15;
        uint64_t len = h[1] & 127;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        if (h[1] & 0x80)
            hl += 4; /* servers do not mask; tolerate it                    */
        if (avail < hl + len)
            break;
        s_on_message(c, opcode, h + hl, (size_t)len);
        off += hl + (size_t)len;
        if (c->state == ST_CLOSED)
            break;
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
}

/*  Opens n connections to port (plus a publisher when pub != NULL), their
    client indexes from first, at most 200 still setting up at a time;
    returns when all are ready (or failed).                                 */
static conn_t *s_open_all(int port, int first, int n, conn_t **pub, double timeout_s)
{
    conn_t *cs = (conn_t *)calloc((size_t)n + 1, sizeof *cs);
    int total = n + (pub ? 1 : 0), started = 0;
    int ready0 = s_ready, errors0 = s_errors;
    uint64_t deadline = s_now_ns() + (uint64_t)(timeout_s * 1e9);
    struct epoll_event evs[256];
    while (s_ready - ready0 < total) {
        while (started < total && started - (s_ready - ready0) - (s_errors - errors0) < 200) {
            conn_t *c = &cs[started];
            c->idx = started < n ? first + started : -1;
            c->port = port;
            c->fd = s_connect_tcp(port);
            if (c->fd < 0) {
                fprintf(stderr, "# connect %d: %s\n", started, strerror(errno));
                s_errors++;
                c->state = ST_CLOSED;
                started++;
                continue;
            }
            c->state = ST_CONNECTING;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(s_ep, EPOLL_CTL_ADD, c->fd, &ev);
            started++;
        }
        if (s_now_ns() > deadline ||
            (started == total && (s_ready - ready0) + (s_errors - errors0) >= total))
            break;
        int k = epoll_wait(s_ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            conn_t *c = (conn_t *)evs[i].data.ptr;
            if (c->state == ST_CONNECTING && (evs[i].events & (EPOLLOUT | EPOLLERR))) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    fprintf(stderr, "# connect %d: %s\n", c->idx, strerror(err));
                    s_errors++;
                    c->state = ST_CLOSED;
                    epoll_ctl(s_ep, EPOLL_CTL_DEL, c->fd, NULL);
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(s_ep, EPOLL_CTL_MOD, c->fd, &ev);
                s_send_handshake(c);
            }
            if (evs[i].events & EPOLLIN)
                s_on_readable(c);
        }
    }
    if (pub)
        *pub = &cs[n];
    return cs;
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void s_publish(conn_t *pub, int rep, uint64_t k, size_t size)
{
    char payload[2048];
    int n = snprintf(payload, sizeof payload, "{\"r\":%d,\"k\":%llu,\"t\":%llu,\"pad\":\"", rep,
                     (unsigned long long)k, (unsigned long long)s_now_ns());
    while ((size_t)n < size - 2 && n < (int)sizeof payload - 3)
        payload[n++] = 'x';
    payload[n++] = '"';
    payload[n++] = '}';
    if (s_mqtt) {
        unsigned char body[2100];
        size_t tl = strlen(s_topic());
        body[0] = (unsigned char)(tl >> 8);
        body[1] = (unsigned char)tl;
        memcpy(body + 2, s_topic(), tl);
        memcpy(body + 2 + tl, payload, (size_t)n);
        s_mqtt_send(pub, 0x30, body, 2 + tl + (size_t)n);
    } else {
        char msg[2300];
        int m = snprintf(msg, sizeof msg,
                         "{\"action\":\"publish\",\"event_type\":\"%s\",\"payload\":%.*s}",
                         s_topic(), n, payload);
        s_send_frame(pub, 1, msg, (size_t)m);
    }
}

static void s_pump(int ms)
{
    struct epoll_event evs[256];
    int k = epoll_wait(s_ep, evs, 256, ms);
    for (int i = 0; i < k; i++) {
        conn_t *c = (conn_t *)evs[i].data.ptr;
        if (c)
            s_on_readable(c);
    }
}

/*  One stretch of the fan-out: total events at rate per second through
    pub, as repetition id rep_id, then at most 5 s for every delivery to
    the clients behind it. Latencies go to s_lat from s_lat_n on.          */
typedef struct {
    uint64_t delivered, expected, dups, late_max;
    double seconds; /* from the first publish to the last */
} window_t;

static window_t s_window(conn_t *pub, int rep_id, double rate, uint64_t total, size_t size)
{
    window_t out = {0};
    memset(s_seen, 0, s_seen_size);
    s_delivered = s_dups = 0;
    s_rep = rep_id;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(s_ep, EPOLL_CTL_ADD, tfd, &ev);
    uint64_t start = s_now_ns(), period = (uint64_t)(1e9 / rate);
    struct itimerspec its = {{(time_t)(period / 1000000000ull), (long)(period % 1000000000ull)},
                             {0, 1}};
    timerfd_settime(tfd, 0, &its, NULL);
    uint64_t k = 0;
    struct epoll_event evs[256];
    while (k < total) {
        int m = epoll_wait(s_ep, evs, 256, 100);
        for (int i = 0; i < m; i++) {
            conn_t *c = (conn_t *)evs[i].data.ptr;
            if (c)
                s_on_readable(c);
            else {
                uint64_t exp;
                if (read(tfd, &exp, sizeof exp) < 0)
                    continue;
            }
        }
        uint64_t now = s_now_ns();
        while (k < total && start + k * period <= now) {
            uint64_t late = now - (start + k * period);
            if (late > out.late_max)
                out.late_max = late;
            s_publish(pub, rep_id, k, size);
            k++;
        }
    }
    out.seconds = (double)(s_now_ns() - start) / 1e9;
    epoll_ctl(s_ep, EPOLL_CTL_DEL, tfd, NULL);
    close(tfd);
    out.expected = total * (uint64_t)s_clients;
    uint64_t wait_until = s_now_ns() + 5000000000ull;
    while (s_delivered < out.expected && s_now_ns() < wait_until)
        s_pump(20);
    out.delivered = s_delivered;
    out.dups = s_dups;
    return out;
}

static const char *s_usage =
    "usage: gw_bench [options]\n"
    "  WebSocket fan-out and idle connections against nexus-gateway or Mosquitto\n"
    "  --mode fanout|pair|idle   (fanout)\n"
    "  --system nexus|mosquitto  the server's protocol (nexus)\n"
    "  --port P                  127.0.0.1 port (8450)\n"
    "  --pid PID                 the server's pid, for its RSS (none)\n"
    "  --port2 P, --pid2 PID     pair: the second gateway\n"
    "  --system2 NAME            pair: the second gateway's name on RESULT lines (nexus-2)\n"
    "  --slice S                 pair: seconds before switching gateways (1)\n"
    "  --clients N               connections (fanout 1000, idle 10000)\n"
    "  --rate R                  fanout: events per second (100)\n"
    "  --seconds S               fanout: seconds per repetition (10)\n"
    "  --reps R                  fanout: repetitions (1)\n"
    "  --size B                  payload bytes, 64..1500 (128)\n"
    "  --hold S                  idle: seconds the connections are held (5)\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    const char *mode = bench_arg_str(argc, argv, "mode", "fanout");
    const char *system = bench_arg_str(argc, argv, "system", "nexus");
    s_mqtt = !strcmp(system, "mosquitto");
    s_port = atoi(bench_arg_str(argc, argv, "port", "8450"));
    int pid = atoi(bench_arg_str(argc, argv, "pid", "0"));
    s_clients =
        atoi(bench_arg_str(argc, argv, "clients", !strcmp(mode, "idle") ? "10000" : "1000"));
    double rate = atof(bench_arg_str(argc, argv, "rate", "100"));
    double seconds = atof(bench_arg_str(argc, argv, "seconds", "10"));
    int reps = atoi(bench_arg_str(argc, argv, "reps", "1"));
    size_t size = (size_t)atoi(bench_arg_str(argc, argv, "size", "128"));
    double hold = atof(bench_arg_str(argc, argv, "hold", "5"));
    snprintf(s_tag, sizeof s_tag, "%d", (int)getpid());
    if (size < 64)
        size = 64;
    if (size > 1500)
        size = 1500;

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    /*  A pair holds --clients to each of its two gateways.                 */
    int conns = s_clients * (!strcmp(mode, "pair") ? 2 : 1);
    if ((rlim_t)conns + 64 > rl.rlim_cur) {
        fprintf(stderr, "# open files limit %llu is too low for %d clients\n",
                (unsigned long long)rl.rlim_cur, conns);
        return 2;
    }
    s_ep = epoll_create1(0);

    if (!strcmp(mode, "idle")) {
        s_subscribe_wanted = false;
        double before = s_rss_mb(pid);
        uint64_t t0 = s_now_ns();
        conn_t *cs = s_open_all(s_port, 0, s_clients, NULL, 120);
        double connect_s = (double)(s_now_ns() - t0) / 1e9;
        double during = s_rss_mb(pid);
        uint64_t end = s_now_ns() + (uint64_t)(hold * 1e9);
        double peak = during;
        while (s_now_ns() < end) {
            s_pump(100);
            double m = s_rss_mb(pid);
            if (m > peak)
                peak = m;
        }
        double after = s_rss_mb(pid);
        printf("RESULT workload=gw_idle system=%s rep=0 value=%.1f unit=MB connections=%d "
               "ready=%d errors=%d closed=%d rss_before_mb=%.1f rss_connected_mb=%.1f "
               "rss_peak_mb=%.1f connect_s=%.1f hold_s=%.0f\n",
               system, after, s_clients, s_ready, s_errors, s_closed_unexpectedly, before, during,
               peak, connect_s, hold);
        fflush(stdout);
        s_quitting = true;
        for (int i = 0; i < s_clients; i++)
            if (cs[i].fd > 0)
                close(cs[i].fd);
        return s_ready == s_clients && !s_closed_unexpectedly ? 0 : 1;
    }

    /*  fan-out, one gateway or a pair                                        */
    s_subscribe_wanted = true;
    bool pair = !strcmp(mode, "pair");
    if (!pair && strcmp(mode, "fanout")) {
        fprintf(stderr, "gw_bench: unknown --mode %s (fanout, pair or idle)\n", mode);
        return 2;
    }
    int nf = pair ? 2 : 1;
    const char *systems[2] = {system, bench_arg_str(argc, argv, "system2", "nexus-2")};
    int ports[2] = {s_port, atoi(bench_arg_str(argc, argv, "port2", "0"))};
    int pids[2] = {pid, atoi(bench_arg_str(argc, argv, "pid2", "0"))};
    double slice = atof(bench_arg_str(argc, argv, "slice", "1"));
    if (pair && (!ports[1] || s_mqtt)) {
        fprintf(stderr, "gw_bench: --mode pair needs --port2, and two nexus gateways\n");
        return 2;
    }
    conn_t *pubs[2] = {NULL, NULL}, *cs[2] = {NULL, NULL};
    uint64_t t0 = s_now_ns();
    for (int f = 0; f < nf; f++)
        cs[f] = s_open_all(ports[f], f * s_clients, s_clients, &pubs[f], 120);
    double connect_s = (double)(s_now_ns() - t0) / 1e9;
    if (s_ready < nf * (s_clients + 1)) {
        fprintf(stderr, "# only %d of %d connections ready after %.1f s (%d errors)\n", s_ready,
                nf * (s_clients + 1), connect_s, s_errors);
        return 1;
    }
    for (int f = 0; f < nf; f++)
        fprintf(stderr, "# %s: %d clients connected and subscribed in %.1f s, gateway RSS %.1f MB\n",
                systems[f], s_clients, connect_s, s_rss_mb(pids[f]));
    /*  Warm-up events (r = -1), then the repetitions.                       */
    for (int k = 0; k < 5; k++) {
        for (int f = 0; f < nf; f++)
            s_publish(pubs[f], -1, (uint64_t)k, size);
        uint64_t until = s_now_ns() + 50000000ull;
        while (s_now_ns() < until)
            s_pump(10);
    }
    /*  Each gateway's share of a repetition, in stretches of per_window
        events: the whole of --seconds for one gateway, --slice for a pair. */
    uint64_t total = (uint64_t)(rate * seconds + 0.5);
    uint64_t per_window = pair ? (uint64_t)(rate * slice + 0.5) : total;
    if (per_window < 1)
        per_window = 1;
    int windows = (int)((total + per_window - 1) / per_window);
    s_events_max = per_window;
    s_seen_size = (size_t)nf * s_clients * per_window;
    s_seen = (uint8_t *)calloc(s_seen_size, 1);
    uint64_t *lat[2] = {NULL, NULL};
    for (int f = 0; f < nf; f++)
        lat[f] = (uint64_t *)malloc((size_t)s_clients * per_window * windows * sizeof *lat[f]);
    int status = 0;
    for (int rep = 0; rep < reps; rep++) {
        window_t sum[2] = {{0}};
        uint64_t lat_n[2] = {0, 0};
        /*  A pair alternates, the first gateway of each repetition taking
            turns; a window's id (its "r") sets its events apart from the
            last window's stragglers.                                       */
        for (int w = 0; w < nf * windows; w++) {
            int f = pair ? (w + rep) % 2 : 0;
            s_lat = lat[f];
            s_lat_n = lat_n[f];
            window_t one = s_window(pubs[f], rep * 100000 + w, rate, per_window, size);
            lat_n[f] = s_lat_n;
            sum[f].delivered += one.delivered;
            sum[f].expected += one.expected;
            sum[f].dups += one.dups;
            sum[f].seconds += one.seconds;
            if (one.late_max > sum[f].late_max)
                sum[f].late_max = one.late_max;
        }
        for (int f = 0; f < nf; f++) {
            qsort(lat[f], lat_n[f], sizeof *lat[f], s_cmp_u64);
            uint64_t *l = lat[f], n = lat_n[f];
#define PCT(q) (n ? (double)l[(size_t)((q) * (double)(n - 1))] / 1e6 : -1.0)
            printf("RESULT workload=%s system=%s rep=%d value=%.2f unit=ms p50_ms=%.2f "
                   "p99_ms=%.2f max_ms=%.2f delivered=%llu expected=%llu lost=%llu dup=%llu "
                   "rate=%.0f clients=%d events=%llu publisher_late_max_ms=%.1f connect_s=%.1f "
                   "closed=%d errors=%d gateway_rss_mb=%.1f slice_s=%.2f\n",
                   pair ? "ws_fanout_pair" : "ws_fanout", systems[f], rep, PCT(0.99), PCT(0.5),
                   PCT(0.99), PCT(1.0),
                   (unsigned long long)sum[f].delivered, (unsigned long long)sum[f].expected,
                   (unsigned long long)(sum[f].expected - sum[f].delivered),
                   (unsigned long long)sum[f].dups,
                   sum[f].seconds > 0 ? (double)sum[f].delivered / sum[f].seconds : 0.0,
                   s_clients, (unsigned long long)(per_window * windows),
                   (double)sum[f].late_max / 1e6, connect_s, s_closed_unexpectedly, s_errors,
                   s_rss_mb(pids[f]), pair ? slice : seconds);
#undef PCT
            if (sum[f].delivered != sum[f].expected || sum[f].dups)
                status = 1;
        }
        fflush(stdout);
        uint64_t until = s_now_ns() + 1000000000ull;
        while (s_now_ns() < until)
            s_pump(50);
    }
    s_quitting = true;
    for (int f = 0; f < nf; f++) {
        for (int i = 0; i <= s_clients; i++)
            if (cs[f][i].fd > 0)
                close(cs[f][i].fd);
        free(cs[f]);
        free(lat[f]);
    }
    free(s_seen);
    return status;
}
