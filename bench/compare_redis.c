/*  =========================================================================
    compare_redis - the Redis side of bench/compare, through hiredis
    (Debian's libhiredis-dev).

      --workload pubsub|fanout  PUBLISH from one connection (pipelined, at
                                most 256 replies outstanding), --subs
                                SUBSCRIBE connections, each on its thread
      --workload ack            --clients threads, each its own connection,
                                XADD in a loop (one in flight per client);
                                the server runs with appendfsync always
      --workload ack_async      the same with XADD pipelined: --window
                                replies outstanding per connection
      --workload replay         fill --n entries (XADD pipelined), then read
                                them all back with XRANGE pages of 10 000
      --workload claims         SET key holder NX PX 30000, then DEL key

    --port P (127.0.0.1). Prints RESULT lines (compare_common.h).
    =========================================================================
*/

#include "compare_common.h"

#include <hiredis/hiredis.h>

static int s_port = 6379;

static redisContext *s_connect(void)
{
    struct timeval tv = {30, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s_port, tv);
    if (!c || c->err) {
        fprintf(stderr, "# redis connect: %s\n", c ? c->errstr : "out of memory");
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/*  ---- pubsub / fanout ---------------------------------------------------- */

typedef struct {
    cmp_flood_t *flood;
    int idx;
    redisContext *c;
    _Atomic int ready;
} s_sub_t;

static void *s_sub_main(void *arg)
{
    s_sub_t *s = (s_sub_t *)arg;
    redisReply *r = (redisReply *)redisCommand(s->c, "SUBSCRIBE bench.data");
    if (!r)
        return NULL;
    freeReplyObject(r);
    atomic_store(&s->ready, 1);
    for (;;) {
        void *v = NULL;
        if (redisGetReply(s->c, &v) != REDIS_OK)
            break;
        r = (redisReply *)v;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            redisReply *p = r->element[2];
            if (p->len == 1 && p->str[0] == 'Q') {
                freeReplyObject(r);
                break;
            }
            cmp_deliver(s->flood, s->idx, p->str, (size_t)p->len);
        }
        freeReplyObject(r);
    }
    return NULL;
}

typedef struct {
    redisContext *c;
    int outstanding;
} s_pub_t;

static int s_drain(s_pub_t *p, int keep)
{
    while (p->outstanding > keep) {
        void *v = NULL;
        if (redisGetReply(p->c, &v) != REDIS_OK) {
            fprintf(stderr, "# publish reply: %s\n", p->c->errstr);
            return -1;
        }
        freeReplyObject(v);
        p->outstanding--;
    }
    return 0;
}

static int s_pub(void *arg, const void *buf, size_t len)
{
    s_pub_t *p = (s_pub_t *)arg;
    if (redisAppendCommand(p->c, "PUBLISH bench.data %b", buf, len) != REDIS_OK)
        return -1;
    if (++p->outstanding >= 256)
        return s_drain(p, 128);
    return 0;
}

static void s_flush(void *arg)
{
    s_drain((s_pub_t *)arg, 0);
}

static int s_flood(cmp_args_t *a)
{
    static cmp_flood_t flood;
    static s_sub_t subs[CMP_SUBS_MAX];
    pthread_t th[CMP_SUBS_MAX];
    flood.nsubs = (int)a->subs;
    for (int i = 0; i < flood.nsubs; i++) {
        subs[i].flood = &flood;
        subs[i].idx = i;
        if (!(subs[i].c = s_connect()))
            return -1;
        pthread_create(&th[i], NULL, s_sub_main, &subs[i]);
    }
    s_pub_t pub = {s_connect(), 0};
    if (!pub.c)
        return -1;
    int status = 0;
    for (int r = 0; r < (int)a->reps; r++) {
        cmp_flood_result_t res;
        if (cmp_flood_run(&flood, a->n, a->size, a->window, s_pub, s_flush, &pub, &res) != 0)
            return -1;
        cmp_print_flood(a->label, "redis", r, &res);
    }
    s_pub(&pub, "Q", 1);
    s_flush(&pub);
    for (int i = 0; i < flood.nsubs; i++) {
        pthread_join(th[i], NULL);
        redisFree(subs[i].c);
    }
    redisFree(pub.c);
    return status;
}

/*  ---- ack: XADD ------------------------------------------------------------ */

static int s_xadd_op(cmp_worker_t *w, uint64_t k)
{
    memcpy(w->buf + 1, &k, sizeof k);
    redisReply *r =
        (redisReply *)redisCommand((redisContext *)w->conn, "XADD ack * d %b", w->buf, w->size);
    if (!r || r->type != REDIS_REPLY_STRING) {
        snprintf(w->errmsg, sizeof w->errmsg, "%s",
                 r ? (r->str ? r->str : "unexpected reply") : ((redisContext *)w->conn)->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/*  ---- ack_async: XADD pipelined, --window replies outstanding ------------- */

static int s_pipe(cmp_pipe_t *p)
{
    redisContext *c = (redisContext *)p->conn;
    uint64_t outstanding = 0;
    for (uint64_t k = 0; k < p->count || outstanding; k++) {
        if (k < p->count) {
            memcpy(p->buf + 1, &k, sizeof k);
            if (redisAppendCommand(c, "XADD acka * d %b", p->buf, p->size) != REDIS_OK) {
                snprintf(p->errmsg, sizeof p->errmsg, "append: %s", c->errstr);
                return -1;
            }
            outstanding++;
            if (outstanding < p->window && k + 1 < p->count)
                continue;
        }
        /*  Window full (or all sent): take one reply (the first of a full
            window flushes the whole pipeline to the server).               */
        void *v = NULL;
        if (redisGetReply(c, &v) != REDIS_OK) {
            snprintf(p->errmsg, sizeof p->errmsg, "reply: %s", c->errstr);
            return -1;
        }
        redisReply *r = (redisReply *)v;
        if (r->type == REDIS_REPLY_STRING)
            atomic_fetch_add_explicit(&p->acked, 1, memory_order_relaxed);
        else if (atomic_fetch_add(&p->failed, 1) == 0)
            snprintf(p->errmsg, sizeof p->errmsg, "XADD: %s", r->str ? r->str : "?");
        freeReplyObject(r);
        outstanding--;
    }
    return 0;
}

static int s_ack_async(cmp_args_t *a)
{
    int nw = (int)a->clients;
    static cmp_pipe_t p[CMP_SUBS_MAX];
    for (int i = 0; i < nw; i++) {
        if (!(p[i].conn = s_connect()))
            return -1;
        p[i].idx = i;
        p[i].window = a->window;
        p[i].size = a->size;
        p[i].buf = (unsigned char *)malloc(a->size);
        memset(p[i].buf, 'x', a->size);
        p[i].buf[0] = 'D';
        p[i].fn = s_pipe;
    }
    int status = cmp_pipe_reps(p, nw, a->n, (int)a->reps, a->label, "redis");
    for (int i = 0; i < nw; i++) {
        redisFree((redisContext *)p[i].conn);
        free(p[i].buf);
    }
    return status;
}

/*  ---- claims: SET NX PX + DEL --------------------------------------------- */

static int s_claim_op(cmp_worker_t *w, uint64_t k)
{
    char key[64];
    snprintf(key, sizeof key, "job-%d-%d-%d-%llu", (int)getpid(), w->idx, w->rep,
             (unsigned long long)k);
    redisContext *c = (redisContext *)w->conn;
    redisReply *r = (redisReply *)redisCommand(c, "SET %s holder NX PX 30000", key);
    if (!r || r->type != REDIS_REPLY_STATUS) {
        snprintf(w->errmsg, sizeof w->errmsg, "SET: %s", r ? "not granted" : c->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    r = (redisReply *)redisCommand(c, "DEL %s", key);
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        snprintf(w->errmsg, sizeof w->errmsg, "DEL: %s", r ? "not deleted" : c->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

static int s_loop(cmp_args_t *a, bool claims)
{
    int nw = (int)a->clients;
    cmp_worker_t w[CMP_SUBS_MAX];
    memset(w, 0, sizeof w);
    for (int i = 0; i < nw; i++) {
        if (!(w[i].conn = s_connect()))
            return -1;
        w[i].idx = i;
        w[i].op = claims ? s_claim_op : s_xadd_op;
        if (cmp_worker_payload(&w[i], a->size))
            return -1;
    }
    int status = cmp_loop_reps(w, nw, a, "redis", claims);
    for (int i = 0; i < nw; i++)
        redisFree((redisContext *)w[i].conn);
    return status;
}

/*  ---- replay --------------------------------------------------------------- */

static int s_replay(cmp_args_t *a)
{
    redisContext *c = s_connect();
    if (!c)
        return -1;
    unsigned char *buf = (unsigned char *)malloc(a->size);
    memset(buf, 'x', a->size);
    buf[0] = 'D';
    uint64_t t0 = bench_now_ns();
    s_pub_t p = {c, 0};
    for (uint64_t i = 0; a->fill && i < a->n; i++) {
        memcpy(buf + 1, &i, sizeof i);
        redisAppendCommand(c, "XADD replay * d %b", buf, a->size);
        if (++p.outstanding >= 1000 && s_drain(&p, 0) != 0)
            return -1;
    }
    if (s_drain(&p, 0) != 0)
        return -1;
    if (a->fill)
        cmp_print_fill("redis", a->n, (double)(bench_now_ns() - t0) / 1e9);
    int status = 0;
    for (int r = 0; r < (int)a->reps; r++) {
        char start[64] = "-";
        uint64_t count = 0, t1 = bench_now_ns();
        for (;;) {
            redisReply *rep =
                (redisReply *)redisCommand(c, "XRANGE replay %s + COUNT 10000", start);
            if (!rep || rep->type != REDIS_REPLY_ARRAY) {
                fprintf(stderr, "# XRANGE: %s\n", rep && rep->str ? rep->str : c->errstr);
                if (rep)
                    freeReplyObject(rep);
                status = -1;
                break;
            }
            size_t n = rep->elements;
            for (size_t i = 0; i < n; i++) {
                redisReply *e = rep->element[i];
                redisReply *fields = e->element[1];
                if (fields->elements == 2 && fields->element[1]->len > 0 &&
                    fields->element[1]->str[0] == 'D')
                    count++;
            }
            if (n)
                snprintf(start, sizeof start, "(%s", rep->element[n - 1]->element[0]->str);
            freeReplyObject(rep);
            if (n < 10000)
                break;
        }
        cmp_print_replay("redis", r, count, (double)(bench_now_ns() - t1) / 1e9, a->n);
        if (count != a->n)
            status = -1;
    }
    free(buf);
    redisFree(c);
    return status;
}

static const char *s_usage = "usage: compare_redis [options]\n"
                             "  the Redis side of bench/compare, through hiredis\n"
                             "  --port P         127.0.0.1 port (6379)\n" CMP_USAGE_COMMON;

int main(int argc, char **argv)
{
    cmp_args_t a;
    cmp_parse(argc, argv, s_usage, &a);
    s_port = (int)bench_arg_u64(argc, argv, "port", 6379);
    int rc;
    if (!strcmp(a.workload, "pubsub") || !strcmp(a.workload, "fanout"))
        rc = s_flood(&a);
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
