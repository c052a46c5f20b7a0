/*  =========================================================================
    compare_nats - the NATS side of bench/compare, through libnats (the NATS
    C client, Debian's libnats-dev).

      --workload pubsub|fanout  core NATS publish, --subs async subscribers
      --workload ack            JetStream file stream, --clients threads each
                                its own connection doing js_Publish (waits
                                for the PubAck) in a loop
      --workload ack_async      the same stream, each thread js_PublishAsync
                                with --window in flight (MaxPending), an
                                AckHandler counting, js_PublishAsyncComplete
      --workload replay         fill --n messages (js_PublishAsync, 4096 in
                                flight), then read all back with an ordered
                                push consumer from the start, --reps times
      --workload claims         JetStream KV bucket (file storage): kvStore_Create
                                (fails when the key exists) + kvStore_Delete

    --url nats://127.0.0.1:P. Prints RESULT lines (compare_common.h).
    =========================================================================
*/

#include "compare_common.h"

#include <nats/nats.h>

static const char *s_url = "nats://127.0.0.1:4222";

static natsConnection *s_connect(void)
{
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, s_url);
    natsOptions_SetMaxPendingMsgs(o, 2000000);
    natsOptions_SetTimeout(o, 10000);
    natsStatus s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        fprintf(stderr, "# nats connect %s: %s\n", s_url, natsStatus_GetText(s));
        return NULL;
    }
    return nc;
}

static jsCtx *s_js(natsConnection *nc)
{
    jsCtx *js = NULL;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = 30000;
    o.PublishAsync.MaxPending = 4096;
    if (natsConnection_JetStream(&js, nc, &o) != NATS_OK)
        return NULL;
    return js;
}

static int s_stream(jsCtx *js, const char *name, const char *subject)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    const char *subjects[1] = {subject};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = 1;
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK) {
        fprintf(stderr, "# add stream %s: %s (%d)\n", name, natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    jsStreamInfo_Destroy(si);
    return 0;
}

/*  ---- pubsub / fanout ---------------------------------------------------- */

typedef struct {
    cmp_flood_t *flood;
    int idx;
} s_sub_arg_t;

static void s_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *arg)
{
    (void)nc;
    (void)sub;
    s_sub_arg_t *a = (s_sub_arg_t *)arg;
    cmp_deliver(a->flood, a->idx, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static int s_pub(void *arg, const void *buf, size_t len)
{
    natsStatus s = natsConnection_Publish((natsConnection *)arg, "bench.data", buf, (int)len);
    if (s == NATS_OK)
        return 0;
    fprintf(stderr, "# publish: %s\n", natsStatus_GetText(s));
    return -1;
}

static void s_flush(void *arg)
{
    natsConnection_FlushTimeout((natsConnection *)arg, 10000);
}

static int s_flood(cmp_args_t *a)
{
    static cmp_flood_t flood;
    flood.nsubs = (int)a->subs;
    natsConnection *subs[CMP_SUBS_MAX];
    natsSubscription *ss[CMP_SUBS_MAX];
    s_sub_arg_t args[CMP_SUBS_MAX];
    for (int i = 0; i < flood.nsubs; i++) {
        args[i].flood = &flood;
        args[i].idx = i;
        if (!(subs[i] = s_connect()))
            return -1;
        if (natsConnection_Subscribe(&ss[i], subs[i], "bench.data", s_on_msg, &args[i]) != NATS_OK)
            return -1;
        natsSubscription_SetPendingLimits(ss[i], -1, -1);
        natsConnection_Flush(subs[i]);
    }
    natsConnection *pub = s_connect();
    if (!pub)
        return -1;
    int status = 0;
    for (int r = 0; r < (int)a->reps; r++) {
        cmp_flood_result_t res;
        if (cmp_flood_run(&flood, a->n, a->size, a->window, s_pub, s_flush, pub, &res) != 0)
            return -1;
        cmp_print_flood(a->label, "nats", r, &res);
    }
    natsConnection_Destroy(pub);
    for (int i = 0; i < flood.nsubs; i++) {
        int64_t dropped = 0;
        natsSubscription_GetDropped(ss[i], &dropped);
        if (dropped)
            fprintf(stderr, "# nats sub %d: %lld dropped (slow consumer)\n", i, (long long)dropped);
        natsSubscription_Destroy(ss[i]);
        natsConnection_Destroy(subs[i]);
    }
    return status;
}

/*  ---- ack ----------------------------------------------------------------- */

static int s_ack_op(cmp_worker_t *w, uint64_t k)
{
    memcpy(w->buf + 1, &k, sizeof k);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s =
        js_Publish(&pa, (jsCtx *)w->extra, "ack.data", w->buf, (int)w->size, NULL, &jerr);
    if (s != NATS_OK) {
        snprintf(w->errmsg, sizeof w->errmsg, "%s (%d)", natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    jsPubAck_Destroy(pa);
    return 0;
}

/*  ---- ack_async: js_PublishAsync with a window, then wait for all -------- */

static void s_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    cmp_pipe_t *p = (cmp_pipe_t *)closure;
    if (pa)
        atomic_fetch_add_explicit(&p->acked, 1, memory_order_relaxed);
    else if (atomic_fetch_add(&p->failed, 1) == 0)
        snprintf(p->errmsg, sizeof p->errmsg, "ack error: %s (%d)",
                 pae ? natsStatus_GetText(pae->Err) : "?", pae ? (int)pae->ErrCode : 0);
    natsMsg_Destroy(msg);
}

static int s_pipe(cmp_pipe_t *p)
{
    jsCtx *js = (jsCtx *)p->extra;
    for (uint64_t k = 0; k < p->count; k++) {
        memcpy(p->buf + 1, &k, sizeof k);
        natsStatus s = js_PublishAsync(js, "acka.data", p->buf, (int)p->size, NULL);
        if (s != NATS_OK) {
            snprintf(p->errmsg, sizeof p->errmsg, "js_PublishAsync: %s", natsStatus_GetText(s));
            return -1;
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    natsStatus s = js_PublishAsyncComplete(js, &po);
    if (s != NATS_OK) {
        snprintf(p->errmsg, sizeof p->errmsg, "js_PublishAsyncComplete: %s", natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

static int s_ack_async(cmp_args_t *a)
{
    int nw = (int)a->clients;
    static cmp_pipe_t p[CMP_SUBS_MAX];
    natsConnection *ncs[CMP_SUBS_MAX];
    {
        natsConnection *nc = s_connect();
        jsCtx *js = nc ? s_js(nc) : NULL;
        if (!js || s_stream(js, "ACKA", "acka.>") != 0)
            return -1;
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
    }
    for (int i = 0; i < nw; i++) {
        if (!(ncs[i] = s_connect()))
            return -1;
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = 30000;
        o.PublishAsync.MaxPending = (int64_t)a->window;
        o.PublishAsync.StallWait = 30000;
        o.PublishAsync.AckHandler = s_on_ack;
        o.PublishAsync.AckHandlerClosure = &p[i];
        jsCtx *js = NULL;
        if (natsConnection_JetStream(&js, ncs[i], &o) != NATS_OK)
            return -1;
        p[i].idx = i;
        p[i].conn = ncs[i];
        p[i].extra = js;
        p[i].window = a->window;
        p[i].size = a->size;
        p[i].buf = (unsigned char *)malloc(a->size);
        memset(p[i].buf, 'x', a->size);
        p[i].buf[0] = 'D';
        p[i].fn = s_pipe;
    }
    int status = cmp_pipe_reps(p, nw, a->n, (int)a->reps, a->label, "nats");
    for (int i = 0; i < nw; i++) {
        jsCtx_Destroy((jsCtx *)p[i].extra);
        natsConnection_Destroy(ncs[i]);
        free(p[i].buf);
    }
    return status;
}

/*  ---- claims: KV create + delete ------------------------------------------ */

static int s_kv_op(cmp_worker_t *w, uint64_t k)
{
    char key[64];
    snprintf(key, sizeof key, "job-%d-%d-%llu-%llu", (int)getpid(), w->idx,
             (unsigned long long)w->rep, (unsigned long long)k);
    uint64_t rev = 0;
    kvStore *kv = (kvStore *)w->extra;
    natsStatus s = kvStore_Create(&rev, kv, key, "holder", 6);
    if (s == NATS_OK)
        s = kvStore_Delete(kv, key);
    if (s != NATS_OK) {
        snprintf(w->errmsg, sizeof w->errmsg, "%s", natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

static int s_loop(cmp_args_t *a, bool claims)
{
    int nw = (int)a->clients;
    cmp_worker_t w[CMP_SUBS_MAX];
    memset(w, 0, sizeof w);
    natsConnection *ncs[CMP_SUBS_MAX];
    jsCtx *jss[CMP_SUBS_MAX];
    {
        natsConnection *nc = s_connect();
        jsCtx *js = nc ? s_js(nc) : NULL;
        if (!js)
            return -1;
        if (claims) {
            kvConfig kc;
            kvConfig_Init(&kc);
            kc.Bucket = "claims";
            kc.History = 1;
            kc.StorageType = js_FileStorage;
            kvStore *kv = NULL;
            natsStatus s = js_CreateKeyValue(&kv, js, &kc);
            if (s != NATS_OK) {
                fprintf(stderr, "# create kv: %s\n", natsStatus_GetText(s));
                return -1;
            }
            kvStore_Destroy(kv);
        } else if (s_stream(js, "ACK", "ack.>") != 0)
            return -1;
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
    }
    for (int i = 0; i < nw; i++) {
        ncs[i] = s_connect();
        jss[i] = ncs[i] ? s_js(ncs[i]) : NULL;
        if (!jss[i])
            return -1;
        w[i].idx = i;
        w[i].conn = ncs[i];
        if (claims) {
            kvStore *kv = NULL;
            if (js_KeyValue(&kv, jss[i], "claims") != NATS_OK)
                return -1;
            w[i].extra = kv;
        } else
            w[i].extra = jss[i];
        w[i].op = claims ? s_kv_op : s_ack_op;
        if (cmp_worker_payload(&w[i], a->size))
            return -1;
    }
    int status = cmp_loop_reps(w, nw, a, "nats", claims);
    for (int i = 0; i < nw; i++) {
        if (claims)
            kvStore_Destroy((kvStore *)w[i].extra);
        jsCtx_Destroy(jss[i]);
        natsConnection_Destroy(ncs[i]);
    }
    return status;
}

/*  ---- replay --------------------------------------------------------------- */

typedef struct {
    _Atomic uint64_t count;
    _Atomic uint64_t last_ns;
} s_replay_t;

static void s_on_replay(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *arg)
{
    (void)nc;
    (void)sub;
    s_replay_t *r = (s_replay_t *)arg;
    atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed);
    atomic_store_explicit(&r->last_ns, bench_now_ns(), memory_order_relaxed);
    natsMsg_Destroy(msg);
}

static int s_replay(cmp_args_t *a)
{
    natsConnection *nc = s_connect();
    jsCtx *js = nc ? s_js(nc) : NULL;
    if (!js || (a->fill && s_stream(js, "REPLAY", "replay.>") != 0))
        return -1;
    unsigned char *buf = (unsigned char *)malloc(a->size);
    memset(buf, 'x', a->size);
    buf[0] = 'D';
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; a->fill && i < a->n; i++) {
        memcpy(buf + 1, &i, sizeof i);
        natsStatus s = js_PublishAsync(js, "replay.data", buf, (int)a->size, NULL);
        if (s != NATS_OK) {
            fprintf(stderr, "# publish async %llu: %s\n", (unsigned long long)i,
                    natsStatus_GetText(s));
            return -1;
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    if (js_PublishAsyncComplete(js, &po) != NATS_OK) {
        fprintf(stderr, "# publish async complete failed\n");
        return -1;
    }
    if (a->fill)
        cmp_print_fill("nats", a->n, (double)(bench_now_ns() - t0) / 1e9);
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, js, "REPLAY", NULL, NULL) == NATS_OK) {
        if (si->State.Msgs != a->n)
            fprintf(stderr, "# stream holds %llu, expected %llu\n",
                    (unsigned long long)si->State.Msgs, (unsigned long long)a->n);
        jsStreamInfo_Destroy(si);
    }
    int status = 0;
    for (int r = 0; r < (int)a->reps; r++) {
        static s_replay_t rp;
        atomic_store(&rp.count, 0);
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Ordered = true;
        so.Config.DeliverPolicy = js_DeliverAll;
        natsSubscription *sub = NULL;
        jsErrCode jerr = 0;
        uint64_t t1 = bench_now_ns();
        atomic_store(&rp.last_ns, t1);
        natsStatus s = js_Subscribe(&sub, js, "replay.>", s_on_replay, &rp, NULL, &so, &jerr);
        if (s != NATS_OK) {
            fprintf(stderr, "# ordered consumer: %s (%d)\n", natsStatus_GetText(s), (int)jerr);
            return -1;
        }
        natsSubscription_SetPendingLimits(sub, -1, -1);
        uint64_t seen = 0, last_progress = bench_now_ns();
        while (atomic_load(&rp.count) < a->n) {
            uint64_t c = atomic_load(&rp.count);
            if (c != seen) {
                seen = c;
                last_progress = bench_now_ns();
            } else if (bench_now_ns() - last_progress > 5000000000ull)
                break;
            cmp_sleep_us(500);
        }
        uint64_t count = atomic_load(&rp.count);
        cmp_print_replay("nats", r, count, (double)(atomic_load(&rp.last_ns) - t1) / 1e9, a->n);
        if (count != a->n)
            status = -1;
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    free(buf);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return status;
}

static const char *s_usage = "usage: compare_nats [options]\n"
                             "  the NATS side of bench/compare, through libnats\n"
                             "  --url U          nats://127.0.0.1:4222\n" CMP_USAGE_COMMON;

int main(int argc, char **argv)
{
    cmp_args_t a;
    cmp_parse(argc, argv, s_usage, &a);
    s_url = bench_arg_str(argc, argv, "url", s_url);
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
    nats_Close();
    return rc == 0 ? 0 : 1;
}
