/*  =========================================================================
    bench_ref - the reference loop that ANCHORS.md measured the broker bars
    against, as a program the benchmarks can start in nexusd's place: XSUB
    in, XPUB out, and between them one thread that reads every event ready
    (up to 8192), stamps it with a seq and a timestamp, appends it to LMDB in
    one write transaction with one fdatasync (MDB_NOMETASYNC), then forwards
    each as the one frame nexusd sends (nx_codec.h). It has no validation,
    no history queries, no forward log, no statistics: it is the floor of
    the work, not a broker.

    BENCH_REF_STORE=0 leaves LMDB out (stamp and forward only: the
    zmq_proxy-like ceiling of one loop thread).

    It takes nexusd's flags that bench_util passes (--data-dir,
    --control-endpoints, --events-in-endpoints, --events-out-endpoints,
    --sync full|none) and answers ping and a minimal state on the control
    endpoint, so `bench_pubsub --ref` can run it alternately with nexusd in
    one invocation, on the same host at the same moment: this machine's
    speed moves by 30 % or more between hours (docs/benchmarks.md).
    SIGTERM or SIGINT: commits, closes and exits 0.
    =========================================================================
*/

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <msgpack.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "bench_util.h"
#include "nx_codec.h"

#define S_BATCH_MAX 8192
#define S_HWM       100000

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static uint64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

typedef struct {
    zmq_msg_t topic;
    zmq_msg_t payload;
    zmq_msg_t frame; /* what goes out, and what LMDB holds                 */
} s_event_t;

typedef struct {
    MDB_env *env;
    MDB_dbi dbi;
    bool store;
    uint64_t last_seq;
    uint64_t events;
    uint64_t batches;
    uint64_t out;
} s_ref_t;

static int s_store_open(s_ref_t *self, const char *dir, bool sync)
{
    mkdir(dir, 0755);
    unsigned flags = MDB_NOMETASYNC | (sync ? 0 : MDB_NOSYNC);
    int rc = mdb_env_create(&self->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(self->env, (size_t)16 << 30);
    if (rc == 0)
        rc = mdb_env_open(self->env, dir, flags, 0644);
    MDB_txn *txn = NULL;
    if (rc == 0)
        rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &self->dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0)
        fprintf(stderr, "bench_ref: LMDB in %s: %s\n", dir, mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

/*  One batch: stamp, append, commit (one fdatasync), forward.              */
static int s_turn(s_ref_t *self, void *xsub, void *xpub, s_event_t *evs)
{
    size_t n = 0;
    while (n < S_BATCH_MAX) {
        s_event_t *ev = &evs[n];
        zmq_msg_init(&ev->topic);
        if (zmq_msg_recv(&ev->topic, xsub, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close(&ev->topic);
            break;
        }
        zmq_msg_init(&ev->payload);
        if (zmq_msg_more(&ev->topic))
            zmq_msg_recv(&ev->payload, xsub, 0);
        /*  A source frame, if any, is read and dropped.                     */
        bool more = zmq_msg_more(&ev->payload);
        while (more) {
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, xsub, 0);
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        n++;
    }
    if (n == 0)
        return 0;
    /*  Stamp: each event's frame, encoded once, stored and sent.           */
    uint64_t now = s_now_us();
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        s_event_t *ev = &evs[i];
        size_t size = nx_event_msg_size(zmq_msg_size(&ev->topic), 0, zmq_msg_size(&ev->payload));
        if (zmq_msg_init_size(&ev->frame, size) != 0) {
            fprintf(stderr, "bench_ref: out of memory\n");
            exit(1);
        }
        nx_event_msg_encode(zmq_msg_data(&ev->frame), zmq_msg_data(&ev->topic),
                            zmq_msg_size(&ev->topic), ++self->last_seq, now, "", 0,
                            zmq_msg_data(&ev->payload), zmq_msg_size(&ev->payload));
        zmq_msg_close(&ev->topic);
        zmq_msg_close(&ev->payload);
    }
    if (self->store) {
        MDB_txn *txn;
        rc = mdb_txn_begin(self->env, NULL, 0, &txn);
        uint64_t seq = self->last_seq - n;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            uint64_t key = __builtin_bswap64(++seq);
            MDB_val k = {sizeof key, &key};
            MDB_val v = {zmq_msg_size(&evs[i].frame), zmq_msg_data(&evs[i].frame)};
            rc = mdb_put(txn, self->dbi, &k, &v, MDB_APPEND);
        }
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc != 0)
            fprintf(stderr, "bench_ref: commit: %s\n", mdb_strerror(rc));
    }
    /*  Forward after the commit, as the hand loop of ANCHORS.md did.       */
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && zmq_msg_send(&evs[i].frame, xpub, ZMQ_DONTWAIT) != -1)
            self->out++;
        else
            zmq_msg_close(&evs[i].frame);
    }
    self->events += n;
    self->batches++;
    return rc == 0 ? 0 : -1;
}

/*  ping and state get ok (state with the counters bench_util reads); any
    other request an error. Requests are [identity, empty?, body].          */
static void s_control(s_ref_t *self, void *router)
{
    zmq_msg_t part[4];
    int n = 0;
    bool more = true;
    while (more && n < 4) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], router, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close(&part[n]);
            return;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    msgpack_unpacked req;
    msgpack_unpacked_init(&req);
    uint64_t id = 0;
    const char *op = "";
    size_t op_len = 0;
    if (n >= 2 && msgpack_unpack_next(&req, zmq_msg_data(&part[n - 1]), zmq_msg_size(&part[n - 1]),
                                      NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *v = nx_map_get(&req.data, "id");
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            id = v->via.u64;
        v = nx_map_get(&req.data, "op");
        if (v && v->type == MSGPACK_OBJECT_STR) {
            op = v->via.str.ptr;
            op_len = v->via.str.size;
        }
    }
    bool ping = op_len == 4 && !memcmp(op, "ping", 4);
    bool state = op_len == 5 && !memcmp(op, "state", 5);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, state ? 7 : 2);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    msgpack_pack_str_with_body(&pk, "ok", 2);
    if (ping || state)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    if (state) {
        msgpack_pack_str_with_body(&pk, "events_total", 12);
        msgpack_pack_uint64(&pk, self->events);
        msgpack_pack_str_with_body(&pk, "events_out", 10);
        msgpack_pack_uint64(&pk, self->out);
        msgpack_pack_str_with_body(&pk, "batches", 7);
        msgpack_pack_uint64(&pk, self->batches);
        msgpack_pack_str_with_body(&pk, "drops", 5);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str_with_body(&pk, "total", 5);
        msgpack_pack_uint64(&pk, 0);
        msgpack_pack_str_with_body(&pk, "history", 7);
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str_with_body(&pk, "last_seq", 8);
        msgpack_pack_uint64(&pk, self->last_seq);
        msgpack_pack_str_with_body(&pk, "count", 5);
        msgpack_pack_uint64(&pk, self->store ? self->events : 0);
    }
    /*  The envelope goes back as it came: identity and the empty frame.   */
    for (int i = 0; i < n - 1; i++)
        zmq_msg_send(&part[i], router, ZMQ_SNDMORE);
    zmq_send(router, buf.data, buf.size, 0);
    zmq_msg_close(&part[n - 1]);
    msgpack_sbuffer_destroy(&buf);
    msgpack_unpacked_destroy(&req);
}

/*  XPUB hands us (un)subscriptions; they must be read or they pile up.     */
static void s_drain(void *sock)
{
    for (int i = 0; i < 1000; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int rc = zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT);
        zmq_msg_close(&msg);
        if (rc == -1)
            return;
    }
}

static void *s_bind(void *ctx, int type, const char *endpoint)
{
    void *sock = zmq_socket(ctx, type);
    int hwm = S_HWM, linger = 0;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock, endpoint) != 0) {
        fprintf(stderr, "bench_ref: cannot bind %s: %s\n", endpoint, zmq_strerror(errno));
        exit(1);
    }
    return sock;
}

static const char *s_usage = "usage: bench_ref [options]\n"
                             "  the reference loop of ANCHORS.md (stamp, LMDB append, forward)\n"
                             "  --data-dir D                 its LMDB directory (required)\n"
                             "  --control-endpoints E        (required)\n"
                             "  --events-in-endpoints E      (required)\n"
                             "  --events-out-endpoints E     (required)\n"
                             "  --sync full|none             fdatasync per batch (full)\n"
                             "  env BENCH_REF_STORE=0: no LMDB\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    const char *dir = bench_arg_str(argc, argv, "data-dir", NULL);
    const char *control = bench_arg_str(argc, argv, "control-endpoints", NULL);
    const char *in = bench_arg_str(argc, argv, "events-in-endpoints", NULL);
    const char *out = bench_arg_str(argc, argv, "events-out-endpoints", NULL);
    const char *sync = bench_arg_str(argc, argv, "sync", "full");
    if (!dir || !control || !in || !out) {
        fputs(s_usage, stderr);
        return 2;
    }
    s_ref_t self = {0};
    const char *store = getenv("BENCH_REF_STORE");
    self.store = !(store && strcmp(store, "0") == 0);
    if (self.store && s_store_open(&self, dir, strcmp(sync, "none") != 0) != 0)
        return 1;
    signal(SIGTERM, s_on_signal);
    signal(SIGINT, s_on_signal);
    void *ctx = zmq_ctx_new();
    void *router = s_bind(ctx, ZMQ_ROUTER, control);
    void *xsub = s_bind(ctx, ZMQ_XSUB, in);
    void *xpub = s_bind(ctx, ZMQ_XPUB, out);
    /*  XSUB must subscribe upstream to everything, as nexusd does.          */
    zmq_send(xsub, "\x01", 1, 0);
    s_event_t *evs = calloc(S_BATCH_MAX, sizeof *evs);
    if (!evs)
        return 1;
    fprintf(stderr, "bench_ref: ready (%s, sync=%s)\n", self.store ? "LMDB" : "no store", sync);
    int rc = 0;
    while (!s_stop && rc == 0) {
        zmq_pollitem_t items[] = {
            {xsub, 0, ZMQ_POLLIN, 0}, {router, 0, ZMQ_POLLIN, 0}, {xpub, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 3, 100) < 0)
            continue;
        if (items[0].revents & ZMQ_POLLIN)
            rc = s_turn(&self, xsub, xpub, evs);
        if (items[1].revents & ZMQ_POLLIN)
            s_control(&self, router);
        if (items[2].revents & ZMQ_POLLIN)
            s_drain(xpub);
    }
    fprintf(stderr, "bench_ref: %" PRIu64 " events in %" PRIu64 " batches\n", self.events,
            self.batches);
    free(evs);
    zmq_close(router);
    zmq_close(xsub);
    zmq_close(xpub);
    zmq_ctx_term(ctx);
    if (self.env)
        mdb_env_close(self.env);
    return rc == 0 ? 0 : 1;
}
