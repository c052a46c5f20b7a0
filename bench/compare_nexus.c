/*  =========================================================================
    compare_nexus - the nexus side of bench/compare, through libnexus only.

    Runs one workload against a running nexusd (started by bench/compare
    with its defaults, sync=full):

      --workload pubsub|fanout  nexus_publish (fire-and-forget) from one
                                client, --subs subscriber clients in callback
                                mode; flow-controlled, arrivals counted.
                                --recv 1: each subscriber a thread taking
                                bursts with nexus_recv_batch instead
      --workload ack            --clients threads, each its own client, each
                                nexus_publish_acked in a loop (one in flight
                                per client: the SDK call is synchronous)
      --workload ack_async      the same with nexus_publish_async: --window
                                in flight per client (its publish window), a
                                completion counting, nexus_publish_async_wait
      --workload replay         fill --n events (flow-controlled publish;
                                not with --fill 0),
                                then read them all back from seq 0 with the
                                history iterator (pages of 10 000, each event
                                a view: nexus_history_next_view), --reps times
      --workload claims         --clients threads, each its own registered
                                session: nexus_claim a fresh work id, then
                                nexus_complete it, for --ms milliseconds

    --endpoint tcp://127.0.0.1:P (control; events on P+1 and P+2).
    Prints RESULT lines (compare_common.h).
    =========================================================================
*/

#include "compare_common.h"

#include <nexus.h>

static const char *s_endpoint = "tcp://127.0.0.1:8451";
#define TOPIC "bench.data"

static nexus_client_t *s_client(const char *session)
{
    nexus_client_t *c = nexus_client_new();
    if (!c)
        return NULL;
    nexus_client_set_endpoint(c, s_endpoint);
    nexus_client_set_timeout(c, 30000);
    if (session)
        nexus_client_set_session(c, session, NULL);
    return c;
}

static void s_on_event(nexus_event_t *ev, void *arg)
{
    void **a = (void **)arg;
    size_t len = 0;
    const void *p = nexus_event_payload(ev, &len);
    cmp_deliver((cmp_flood_t *)a[0], (int)(intptr_t)a[1], p, len);
}

static int s_pub(void *arg, const void *buf, size_t len)
{
    nexus_err_t rc = nexus_publish((nexus_client_t *)arg, TOPIC, buf, len);
    if (rc == NEXUS_OK)
        return 0;
    if (rc == NEXUS_ERR_BUSY)
        return 1;
    fprintf(stderr, "# nexus_publish: %s\n", nexus_strerror(rc));
    return -1;
}

/*  --recv: a subscriber thread taking bursts with nexus_recv_batch.        */
static bool s_recv_mode;
static _Atomic int s_recv_stop;

typedef struct {
    nexus_client_t *client;
    void **arg; /* {flood, index} as for the callback */
} s_reader_t;

static void *s_reader(void *arg)
{
    s_reader_t *r = (s_reader_t *)arg;
    nexus_event_t *evs[256];
    while (!atomic_load(&s_recv_stop)) {
        size_t n = 0;
        if (nexus_recv_batch(r->client, 100, evs, 256, &n) != NEXUS_OK)
            continue;
        for (size_t i = 0; i < n; i++) {
            s_on_event(evs[i], r->arg);
            nexus_event_destroy(&evs[i]);
        }
    }
    return NULL;
}

/*  Sets up nsubs subscribers (callback mode, or --recv: a thread each on
    nexus_recv_batch) and one publisher, runs reps floods.                 */
static int s_flood(cmp_args_t *a, const char *label, uint64_t n, int nsubs, int reps, bool print)
{
    static cmp_flood_t flood;
    memset(&flood, 0, sizeof flood);
    flood.nsubs = nsubs;
    nexus_client_t *subs[CMP_SUBS_MAX] = {0};
    void *args[CMP_SUBS_MAX][2];
    pthread_t readers[CMP_SUBS_MAX];
    s_reader_t rd[CMP_SUBS_MAX];
    atomic_store(&s_recv_stop, 0);
    for (int i = 0; i < nsubs; i++) {
        subs[i] = s_client(NULL);
        args[i][0] = &flood;
        args[i][1] = (void *)(intptr_t)i;
        if (!s_recv_mode)
            nexus_client_set_callback(subs[i], s_on_event, args[i]);
        if (nexus_client_connect(subs[i]) != NEXUS_OK ||
            nexus_subscribe(subs[i], TOPIC) != NEXUS_OK) {
            fprintf(stderr, "# subscriber %d: %s\n", i, nexus_client_errmsg(subs[i]));
            return -1;
        }
        if (s_recv_mode) {
            rd[i] = (s_reader_t){subs[i], args[i]};
            pthread_create(&readers[i], NULL, s_reader, &rd[i]);
        }
    }
    nexus_client_t *pub = s_client(NULL);
    if (nexus_client_connect(pub) != NEXUS_OK) {
        fprintf(stderr, "# publisher: %s\n", nexus_client_errmsg(pub));
        return -1;
    }
    int status = 0;
    for (int r = 0; r < reps; r++) {
        cmp_flood_result_t res;
        if (cmp_flood_run(&flood, n, a->size, a->window, s_pub, NULL, pub, &res) != 0) {
            status = -1;
            break;
        }
        if (print)
            cmp_print_flood(label, "nexus", r, &res);
        else
            cmp_print_fill("nexus", res.delivered, res.seconds);
        if (res.lost)
            status = -1;
    }
    for (int i = 0; i < nsubs; i++) {
        nexus_client_stats_t st;
        nexus_client_stats(subs[i], &st);
        if (st.history_events || st.gaps || st.queue_drops)
            fprintf(stderr,
                    "# subscriber %d: %llu live, %llu from history (%llu pages), %llu gaps, "
                    "%llu queue drops\n",
                    i, (unsigned long long)st.live_events, (unsigned long long)st.history_events,
                    (unsigned long long)st.history_pages, (unsigned long long)st.gaps,
                    (unsigned long long)st.queue_drops);
    }
    nexus_client_destroy(&pub);
    atomic_store(&s_recv_stop, 1);
    for (int i = 0; i < nsubs; i++) {
        if (s_recv_mode)
            pthread_join(readers[i], NULL);
        nexus_client_destroy(&subs[i]);
    }
    return status;
}

/*  ---- ack ------------------------------------------------------------------ */

static int s_ack_op(cmp_worker_t *w, uint64_t k)
{
    memcpy(w->buf + 1, &k, sizeof k);
    uint64_t seq = 0;
    nexus_err_t rc =
        nexus_publish_acked((nexus_client_t *)w->conn, "bench.ack", w->buf, w->size, &seq, NULL);
    if (rc != NEXUS_OK) {
        snprintf(w->errmsg, sizeof w->errmsg, "%s: %s", nexus_strerror(rc),
                 nexus_client_errmsg((nexus_client_t *)w->conn));
        return -1;
    }
    return 0;
}

/*  ---- ack_async: nexus_publish_async with a window ---------------------- */

static void s_acked(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg)
{
    (void)seq;
    (void)ts;
    cmp_pipe_t *p = (cmp_pipe_t *)arg;
    if (err == NEXUS_OK)
        atomic_fetch_add_explicit(&p->acked, 1, memory_order_relaxed);
    else if (atomic_fetch_add(&p->failed, 1) == 0)
        snprintf(p->errmsg, sizeof p->errmsg, "completion: %s", nexus_strerror(err));
}

static int s_pipe(cmp_pipe_t *p)
{
    nexus_client_t *c = (nexus_client_t *)p->conn;
    for (uint64_t k = 0; k < p->count; k++) {
        memcpy(p->buf + 1, &k, sizeof k);
        nexus_err_t rc = nexus_publish_async(c, "bench.ack", p->buf, p->size, s_acked, p);
        if (rc != NEXUS_OK) {
            snprintf(p->errmsg, sizeof p->errmsg, "publish_async: %s", nexus_client_errmsg(c));
            return -1;
        }
    }
    if (nexus_publish_async_wait(c, -1) != NEXUS_OK) {
        snprintf(p->errmsg, sizeof p->errmsg, "wait: %s", nexus_client_errmsg(c));
        return -1;
    }
    return 0;
}

static int s_ack_async(cmp_args_t *a)
{
    int nw = (int)a->clients;
    static cmp_pipe_t p[CMP_SUBS_MAX];
    for (int i = 0; i < nw; i++) {
        nexus_client_t *c = s_client(NULL);
        nexus_client_set_publish_window(c, (uint32_t)a->window, 64u << 20);
        if (nexus_client_connect(c) != NEXUS_OK) {
            fprintf(stderr, "# client %d: %s\n", i, nexus_client_errmsg(c));
            return -1;
        }
        p[i].idx = i;
        p[i].conn = c;
        p[i].window = a->window;
        p[i].size = a->size;
        p[i].buf = (unsigned char *)malloc(a->size);
        memset(p[i].buf, 'x', a->size);
        p[i].buf[0] = 'D';
        p[i].fn = s_pipe;
    }
    int status = cmp_pipe_reps(p, nw, a->n, (int)a->reps, a->label, "nexus");
    for (int i = 0; i < nw; i++) {
        nexus_client_t *c = (nexus_client_t *)p[i].conn;
        nexus_client_destroy(&c);
        free(p[i].buf);
    }
    return status;
}

/*  ---- claims ----------------------------------------------------------- */

static int s_claim_op(cmp_worker_t *w, uint64_t k)
{
    char id[64];
    snprintf(id, sizeof id, "job-%d-%d-%llu-%llu", (int)getpid(), w->idx,
             (unsigned long long)w->rep, (unsigned long long)k);
    nexus_claim_result_t res;
    nexus_client_t *c = (nexus_client_t *)w->conn;
    nexus_err_t rc = nexus_claim(c, id, 30000, NULL, &res);
    if (rc == NEXUS_OK)
        rc = nexus_complete(c, id, res.token, NULL);
    if (rc != NEXUS_OK) {
        snprintf(w->errmsg, sizeof w->errmsg, "%s: %s", nexus_strerror(rc), nexus_client_errmsg(c));
        return -1;
    }
    return 0;
}

static int s_loop(cmp_args_t *a, bool claims)
{
    int nw = (int)a->clients;
    cmp_worker_t w[CMP_SUBS_MAX];
    memset(w, 0, sizeof w);
    for (int i = 0; i < nw; i++) {
        char sid[64];
        snprintf(sid, sizeof sid, "bench-%d-%d", (int)getpid(), i);
        nexus_client_t *c = s_client(claims ? sid : NULL);
        if (nexus_client_connect(c) != NEXUS_OK) {
            fprintf(stderr, "# client %d: %s\n", i, nexus_client_errmsg(c));
            return -1;
        }
        if (claims && nexus_session_register(c, NULL) != NEXUS_OK) {
            fprintf(stderr, "# register %d: %s\n", i, nexus_client_errmsg(c));
            return -1;
        }
        w[i].idx = i;
        w[i].conn = c;
        w[i].op = claims ? s_claim_op : s_ack_op;
        if (cmp_worker_payload(&w[i], a->size))
            return -1;
    }
    int status = cmp_loop_reps(w, nw, a, "nexus", claims);
    for (int i = 0; i < nw; i++) {
        nexus_client_t *c = (nexus_client_t *)w[i].conn;
        if (claims)
            nexus_session_unregister(c, NULL);
        nexus_client_destroy(&c);
        free(w[i].buf);
        free(w[i].lat);
    }
    return status;
}

/*  ---- replay ----------------------------------------------------------- */

static int s_replay(cmp_args_t *a)
{
    if (a->fill && s_flood(a, "fill", a->n, 1, 1, false) != 0)
        return -1;
    nexus_client_t *c = s_client(NULL);
    if (nexus_client_connect(c) != NEXUS_OK)
        return -1;
    int status = 0;
    for (int r = 0; r < (int)a->reps; r++) {
        nexus_history_t *h = nexus_history_new(c);
        nexus_history_set_page(h, 10000, 0);
        nexus_history_add_pattern(h, TOPIC);
        uint64_t count = 0, data = 0, t0 = bench_now_ns();
        for (;;) {
            nexus_event_t *ev = NULL;
            nexus_err_t rc = nexus_history_next_view(h, &ev);
            if (rc != NEXUS_OK) {
                fprintf(stderr, "# history: %s: %s\n", nexus_strerror(rc), nexus_client_errmsg(c));
                status = -1;
                break;
            }
            if (!ev)
                break;
            size_t len;
            const unsigned char *p = (const unsigned char *)nexus_event_payload(ev, &len);
            if (len && p[0] == 'D')
                data++;
            count++;
        }
        double secs = (double)(bench_now_ns() - t0) / 1e9;
        nexus_history_destroy(&h);
        cmp_print_replay("nexus", r, data, secs, a->n);
        if (data != a->n)
            status = -1;
    }
    nexus_client_destroy(&c);
    return status;
}

static const char *s_usage =
    "usage: compare_nexus [options]\n"
    "  the nexus side of bench/compare, through libnexus\n"
    "  --endpoint E     nexusd control endpoint (tcp://127.0.0.1:8451; events on P+1, P+2)\n"
    "  --recv 1         pubsub/fanout: subscribers take nexus_recv_batch bursts\n" CMP_USAGE_COMMON;

int main(int argc, char **argv)
{
    cmp_args_t a;
    cmp_parse(argc, argv, s_usage, &a);
    s_endpoint = bench_arg_str(argc, argv, "endpoint", s_endpoint);
    s_recv_mode = bench_arg_str(argc, argv, "recv", NULL) != NULL;
    int rc;
    if (!strcmp(a.workload, "pubsub") || !strcmp(a.workload, "fanout"))
        rc = s_flood(&a, a.label, a.n, (int)a.subs, (int)a.reps, true);
    else if (!strcmp(a.workload, "ack"))
        rc = s_loop(&a, false);
    else if (!strcmp(a.workload, "ack_async"))
        rc = s_ack_async(&a);
    else if (!strcmp(a.workload, "claims"))
        rc = s_loop(&a, true);
    else if (!strcmp(a.workload, "replay"))
        rc = s_replay(&a);
    else {
        fprintf(stderr, "unknown workload %s\n", a.workload);
        return 2;
    }
    return rc == 0 ? 0 : 1;
}
