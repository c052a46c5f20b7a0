/*  =========================================================================
    compare_common.h - the workload harness shared by the compare_* programs
    (bench/compare drives them; see docs/benchmarks.md, "Running it").

    Every compare_SYSTEM program runs one workload against one already
    running server and prints one line per repetition:

        RESULT workload=W system=S rep=R value=V unit=U [key=value ...]

    The flood harness here is the same for every system: one publisher
    connection, nsubs subscriber connections, and the publisher never runs
    more than `window` messages ahead of the slowest subscriber, so that no
    system is made to drop by an overflowing queue; what arrived is counted
    (payload byte 0 'D' = data, 'W' = warm-up probe), and the lost count is
    printed with every figure.
    =========================================================================
*/

#ifndef COMPARE_COMMON_H_INCLUDED
#define COMPARE_COMMON_H_INCLUDED

#include "bench_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CMP_SUBS_MAX 64

typedef struct {
    int nsubs;
    _Atomic uint64_t recv[CMP_SUBS_MAX];
    _Atomic uint64_t warm[CMP_SUBS_MAX];
    _Atomic uint64_t last_ns;
} cmp_flood_t;

/*  Called by a subscriber (any thread) for every message it gets.          */
static inline void cmp_deliver(cmp_flood_t *f, int sub, const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    if (len > 0 && p[0] == 'D') {
        atomic_fetch_add_explicit(&f->recv[sub], 1, memory_order_relaxed);
        atomic_store_explicit(&f->last_ns, bench_now_ns(), memory_order_relaxed);
    } else
        atomic_store_explicit(&f->warm[sub], 1, memory_order_relaxed);
}

static inline uint64_t cmp_min_recv(cmp_flood_t *f)
{
    uint64_t m = UINT64_MAX;
    for (int i = 0; i < f->nsubs; i++) {
        uint64_t r = atomic_load_explicit(&f->recv[i], memory_order_relaxed);
        if (r < m)
            m = r;
    }
    return m;
}

static inline uint64_t cmp_sum_recv(cmp_flood_t *f)
{
    uint64_t s = 0;
    for (int i = 0; i < f->nsubs; i++)
        s += atomic_load_explicit(&f->recv[i], memory_order_relaxed);
    return s;
}

static inline void cmp_sleep_us(unsigned us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/*  Publishes one message: 0 sent, 1 busy (try again), -1 failure.          */
typedef int(cmp_pub_fn)(void *arg, const void *buf, size_t len);
/*  Pushes out what the publisher buffered (may be NULL).                  */
typedef void(cmp_flush_fn)(void *arg);

typedef struct {
    uint64_t n;         /* data messages sent                             */
    uint64_t delivered; /* sum over subscribers                           */
    int64_t lost;       /* n * nsubs - delivered (negative: stragglers of
                           an earlier repetition arrived late)          */
    double seconds;     /* first send -> last receipt                     */
    double rate;        /* delivered / seconds                            */
    bool stalled;
} cmp_flood_result_t;

/*  Runs one flood: warm-up probes until every subscriber saw one, then n
    data messages of size bytes (index in bytes 1..8), flow-controlled by
    window. Subscribers must be set up and call cmp_deliver.               */
static inline int cmp_flood_run(cmp_flood_t *f, uint64_t n, size_t size, uint64_t window,
                                cmp_pub_fn *pub, cmp_flush_fn *flush, void *arg,
                                cmp_flood_result_t *out)
{
    if (size < 16)
        size = 16;
    unsigned char *buf = (unsigned char *)calloc(1, size);
    memset(buf, 'x', size);
    for (int i = 0; i < f->nsubs; i++) {
        atomic_store(&f->recv[i], 0);
        atomic_store(&f->warm[i], 0);
    }
    /*  Warm-up: until every subscription is live.                          */
    uint64_t t_end = bench_now_ns() + 15000000000ull;
    buf[0] = 'W';
    for (;;) {
        bool all = true;
        for (int i = 0; i < f->nsubs; i++)
            if (!atomic_load(&f->warm[i]))
                all = false;
        if (all)
            break;
        if (bench_now_ns() > t_end) {
            fprintf(stderr, "# warm-up: subscribers not live after 15 s\n");
            free(buf);
            return -1;
        }
        while (pub(arg, buf, size) == 1)
            cmp_sleep_us(100);
        if (flush)
            flush(arg);
        cmp_sleep_us(20000);
    }
    cmp_sleep_us(100000); /* let the probes drain                           */

    buf[0] = 'D';
    memset(out, 0, sizeof *out);
    out->n = n;
    uint64_t t0 = bench_now_ns();
    atomic_store(&f->last_ns, t0);
    for (uint64_t i = 0; i < n; i++) {
        if (i >= window && i - cmp_min_recv(f) >= window) {
            uint64_t last_progress = bench_now_ns(), seen = cmp_min_recv(f);
            unsigned spins = 0;
            if (flush)
                flush(arg);
            while (cmp_min_recv(f) + window <= i) {
                uint64_t m = cmp_min_recv(f);
                if (m != seen) {
                    seen = m;
                    last_progress = bench_now_ns();
                } else if (bench_now_ns() - last_progress > 5000000000ull) {
                    out->stalled = true;
                    break;
                }
                if (++spins < 50)
                    sched_yield();
                else
                    cmp_sleep_us(50);
            }
            if (out->stalled) {
                fprintf(stderr, "# flood stalled at %llu sent, slowest subscriber %llu\n",
                        (unsigned long long)i, (unsigned long long)cmp_min_recv(f));
                n = i;
                break;
            }
        }
        memcpy(buf + 1, &i, sizeof i);
        int rc;
        unsigned spins = 0;
        while ((rc = pub(arg, buf, size)) == 1) {
            if (++spins < 50)
                sched_yield();
            else
                cmp_sleep_us(50);
        }
        if (rc < 0) {
            fprintf(stderr, "# publish failed at %llu\n", (unsigned long long)i);
            n = i;
            break;
        }
    }
    if (flush)
        flush(arg);
    /*  Wait for the tail: until all arrived or no progress for 3 s.        */
    uint64_t seen = cmp_sum_recv(f), last_progress = bench_now_ns();
    while (cmp_sum_recv(f) < out->n * (uint64_t)f->nsubs) {
        uint64_t s = cmp_sum_recv(f);
        if (s != seen) {
            seen = s;
            last_progress = bench_now_ns();
        } else if (bench_now_ns() - last_progress > 3000000000ull)
            break;
        cmp_sleep_us(200);
    }
    out->delivered = cmp_sum_recv(f);
    out->lost = (int64_t)(out->n * (uint64_t)f->nsubs) - (int64_t)out->delivered;
    out->seconds = (double)(atomic_load(&f->last_ns) - t0) / 1e9;
    out->rate = out->seconds > 0 ? (double)out->delivered / out->seconds : 0;
    free(buf);
    return 0;
}

static inline void cmp_print_flood(const char *workload, const char *system, int rep,
                                   const cmp_flood_result_t *r)
{
    printf("RESULT workload=%s system=%s rep=%d value=%.0f unit=msgs/s delivered=%llu lost=%lld "
           "seconds=%.3f%s\n",
           workload, system, rep, r->rate, (unsigned long long)r->delivered, (long long)r->lost,
           r->seconds, r->stalled ? " stalled=1" : "");
    fflush(stdout);
}

/*  ---- Closed-loop client threads (acked publish, claims) ---------------- */

typedef struct cmp_worker cmp_worker_t;
/*  One operation (or pair) of client idx; returns 0 ok, -1 failure.        */
typedef int(cmp_op_fn)(cmp_worker_t *w, uint64_t k);

struct cmp_worker {
    int idx;
    int rep;    /* repetition (keeps ids unique across reps)   */
    void *conn; /* the system's client handle                    */
    void *extra;
    cmp_op_fn *op;
    uint64_t ops; /* operations to do (0: until deadline)          */
    uint64_t deadline_ns;
    uint64_t done, failed;
    uint64_t *lat; /* ns per operation                              */
    size_t lat_n, lat_cap;
    size_t size;
    unsigned char *buf;
    char errmsg[256];
};

static void *cmp_worker_main(void *arg)
{
    cmp_worker_t *w = (cmp_worker_t *)arg;
    for (uint64_t k = 0; w->ops ? k < w->ops : bench_now_ns() < w->deadline_ns; k++) {
        uint64_t t = bench_now_ns();
        int rc = w->op(w, k);
        uint64_t d = bench_now_ns() - t;
        if (rc != 0) {
            w->failed++;
            if (w->failed > 100)
                break;
            continue;
        }
        w->done++;
        if (w->lat_n == w->lat_cap) {
            w->lat_cap = w->lat_cap ? w->lat_cap * 2 : 4096;
            w->lat = (uint64_t *)realloc(w->lat, w->lat_cap * sizeof *w->lat);
        }
        w->lat[w->lat_n++] = d;
    }
    return NULL;
}

typedef struct {
    uint64_t done, failed;
    double seconds, rate;
    bench_pct_t pct;
} cmp_loop_result_t;

/*  Runs the workers (already connected) concurrently; each does ops
    operations, or loops for seconds when ops is 0.                         */
static inline void cmp_loop_run(cmp_worker_t *w, int nw, uint64_t ops_each, double seconds,
                                cmp_loop_result_t *out)
{
    pthread_t th[CMP_SUBS_MAX];
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < nw; i++) {
        w[i].ops = ops_each;
        w[i].deadline_ns = t0 + (uint64_t)(seconds * 1e9);
        w[i].done = w[i].failed = 0;
        w[i].rep++;
        w[i].lat_n = 0;
        pthread_create(&th[i], NULL, cmp_worker_main, &w[i]);
    }
    for (int i = 0; i < nw; i++)
        pthread_join(th[i], NULL);
    uint64_t t1 = bench_now_ns();
    memset(out, 0, sizeof *out);
    size_t total = 0;
    for (int i = 0; i < nw; i++) {
        out->done += w[i].done;
        out->failed += w[i].failed;
        total += w[i].lat_n;
        if (w[i].failed)
            fprintf(stderr, "# client %d: %llu failures (%s)\n", i, (unsigned long long)w[i].failed,
                    w[i].errmsg);
    }
    uint64_t *all = (uint64_t *)malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < nw; i++) {
        memcpy(all + k, w[i].lat, w[i].lat_n * sizeof *all);
        k += w[i].lat_n;
    }
    bench_percentiles(all, total, &out->pct);
    free(all);
    out->seconds = (double)(t1 - t0) / 1e9;
    out->rate = out->seconds > 0 ? (double)out->done / out->seconds : 0;
}

static inline void cmp_print_loop(const char *workload, const char *system, int rep,
                                  const char *unit, const cmp_loop_result_t *r)
{
    printf("RESULT workload=%s system=%s rep=%d value=%.0f unit=%s p50_us=%.0f p99_us=%.0f "
           "done=%llu failed=%llu seconds=%.3f\n",
           workload, system, rep, r->rate, unit, r->pct.p50_us, r->pct.p99_us,
           (unsigned long long)r->done, (unsigned long long)r->failed, r->seconds);
    fflush(stdout);
}

static inline void cmp_print_replay(const char *system, int rep, uint64_t count, double seconds,
                                    uint64_t expected)
{
    printf("RESULT workload=replay system=%s rep=%d value=%.0f unit=events/s count=%llu "
           "expected=%llu seconds=%.3f\n",
           system, rep, seconds > 0 ? (double)count / seconds : 0, (unsigned long long)count,
           (unsigned long long)expected, seconds);
    fflush(stdout);
}

static inline void cmp_print_fill(const char *system, uint64_t n, double seconds)
{
    fprintf(stderr, "# %s: filled %llu events in %.2f s (%.0f/s)\n", system, (unsigned long long)n,
            seconds, seconds > 0 ? n / seconds : 0);
}

/*  ---- Pipelined acknowledged publish ------------------------------------
    Each of nw client threads sends its share of n acknowledged publishes
    with up to window of them in flight, then waits for all; the figure is
    acknowledged messages per second, first send to last acknowledgement
    of the slowest thread. A system plugs in one function per thread.      */

typedef struct cmp_pipe cmp_pipe_t;
/*  Sends count publishes of size bytes on client idx and waits for all of
    their acknowledgements; fills acked and failed. Returns 0 or -1.       */
typedef int(cmp_pipe_fn)(cmp_pipe_t *p);

struct cmp_pipe {
    int idx;
    void *conn; /* the system's client handle                   */
    void *extra;
    uint64_t count;  /* publishes to send                            */
    uint64_t window; /* in flight at most                            */
    size_t size;
    unsigned char *buf;
    _Atomic uint64_t acked, failed;
    uint64_t t_end_ns; /* when the last acknowledgement came           */
    cmp_pipe_fn *fn;
    char errmsg[256];
};

static void *cmp_pipe_main(void *arg)
{
    cmp_pipe_t *p = (cmp_pipe_t *)arg;
    if (p->fn(p) != 0 && !p->errmsg[0])
        snprintf(p->errmsg, sizeof p->errmsg, "failed");
    p->t_end_ns = bench_now_ns();
    return NULL;
}

/*  Runs reps repetitions of the pipelined workload over nw prepared
    threads and prints one RESULT line each; -1 if anything failed.        */
static inline int cmp_pipe_reps(cmp_pipe_t *p, int nw, uint64_t n, int reps, const char *label,
                                const char *system)
{
    int status = 0;
    for (int r = 0; r < reps; r++) {
        pthread_t th[CMP_SUBS_MAX];
        uint64_t t0 = bench_now_ns();
        for (int i = 0; i < nw; i++) {
            p[i].count = n / (uint64_t)nw;
            atomic_store(&p[i].acked, 0);
            atomic_store(&p[i].failed, 0);
            p[i].errmsg[0] = 0;
            pthread_create(&th[i], NULL, cmp_pipe_main, &p[i]);
        }
        uint64_t acked = 0, failed = 0, t_end = t0;
        for (int i = 0; i < nw; i++) {
            pthread_join(th[i], NULL);
            acked += atomic_load(&p[i].acked);
            failed += atomic_load(&p[i].failed);
            if (p[i].t_end_ns > t_end)
                t_end = p[i].t_end_ns;
            if (p[i].errmsg[0])
                fprintf(stderr, "# client %d: %s\n", i, p[i].errmsg);
        }
        double secs = (double)(t_end - t0) / 1e9;
        printf("RESULT workload=%s system=%s rep=%d value=%.0f unit=msgs/s done=%llu "
               "failed=%llu seconds=%.3f clients=%d window=%llu\n",
               label, system, r, secs > 0 ? (double)acked / secs : 0, (unsigned long long)acked,
               (unsigned long long)failed, secs, nw, (unsigned long long)p[0].window);
        fflush(stdout);
        if (failed || acked != (n / (uint64_t)nw) * (uint64_t)nw)
            status = -1;
    }
    return status;
}

/*  Common arguments.                                                        */
typedef struct {
    const char *workload; /* pubsub | fanout | ack | ack_async | replay | claims */
    uint64_t n;           /* messages (pubsub/fanout/ack/replay)            */
    uint64_t size;        /* payload bytes                                  */
    uint64_t subs;        /* subscribers (pubsub 1, fanout 16)              */
    uint64_t clients;     /* client threads (ack, claims)                   */
    uint64_t window;      /* flood window                                   */
    uint64_t reps;
    bool fill;         /* replay: fill the store first                   */
    double seconds;    /* claims: per repetition                         */
    const char *label; /* workload label printed (e.g. pubsub_128)       */
} cmp_args_t;

/*  The options every compare_ program takes; each adds its own (usage).   */
#define CMP_USAGE_COMMON                                                                           \
    "  --workload NAME  pubsub|fanout|ack|ack_async|replay|claims (pubsub)\n"                      \
    "  --n N            messages (200000)\n"                                                       \
    "  --size B         payload bytes (128)\n"                                                     \
    "  --subs S         subscribers, pubsub/fanout (1)\n"                                          \
    "  --clients C      client threads, ack/ack_async/claims (16)\n"                               \
    "  --window W       flood lead / requests in flight (10000)\n"                                 \
    "  --reps R         repetitions (3)\n"                                                         \
    "  --fill 0|1       replay: fill the store first (1), or read back what an earlier\n"           \
    "                   run with --fill 1 left there (0)\n"                                         \
    "  --ms MS          claims: milliseconds per repetition (3000)\n"                              \
    "  --label L        the workload's name on RESULT lines (the workload)\n"

/*  usage: the program's own text, ending with CMP_USAGE_COMMON.            */
static inline void cmp_parse(int argc, char **argv, const char *usage, cmp_args_t *a)
{
    bench_usage(argc, argv, usage);
    a->workload = bench_arg_str(argc, argv, "workload", "pubsub");
    a->n = bench_arg_u64(argc, argv, "n", 200000);
    a->size = bench_arg_u64(argc, argv, "size", 128);
    a->subs = bench_arg_u64(argc, argv, "subs", 1);
    a->clients = bench_arg_u64(argc, argv, "clients", 16);
    a->window = bench_arg_u64(argc, argv, "window", 10000);
    a->reps = bench_arg_u64(argc, argv, "reps", 3);
    a->fill = bench_arg_u64(argc, argv, "fill", 1) != 0;
    a->seconds = (double)bench_arg_u64(argc, argv, "ms", 3000) / 1000.0;
    a->label = bench_arg_str(argc, argv, "label", a->workload);
    if (a->subs > CMP_SUBS_MAX)
        a->subs = CMP_SUBS_MAX;
    if (a->clients > CMP_SUBS_MAX)
        a->clients = CMP_SUBS_MAX;
}

/*  A worker's payload: size bytes of 'x' behind a 'D' marker.             */
static inline int cmp_worker_payload(cmp_worker_t *w, uint64_t size)
{
    w->size = size;
    w->buf = (unsigned char *)malloc(size ? size : 1);
    if (!w->buf)
        return -1;
    memset(w->buf, 'x', size);
    w->buf[0] = 'D';
    return 0;
}

/*  Runs and prints the repetitions of the ack (a->n ops shared by the
    workers) or claims (a->seconds each) workload; -1 if any op failed.     */
static inline int cmp_loop_reps(cmp_worker_t *w, int nw, const cmp_args_t *a, const char *system,
                                int claims)
{
    int status = 0;
    for (int r = 0; r < (int)a->reps; r++) {
        cmp_loop_result_t res;
        if (claims)
            cmp_loop_run(w, nw, 0, a->seconds, &res);
        else
            cmp_loop_run(w, nw, a->n / nw, 0, &res);
        cmp_print_loop(a->label, system, r, claims ? "pairs/s" : "msgs/s", &res);
        if (res.failed)
            status = -1;
    }
    return status;
}

#endif
