/*  =========================================================================
    test_repl - streaming replication without the broker: a primary's log
    (real files) and its sender on a real ROUTER, a standby's log and its
    receiver on a real DEALER over tcp on loopback. This test plays the
    broker's part on the primary's side: it reads the requests, calls the
    sender, and answers. Checked: the standby's log becomes the primary's,
    byte for byte, turn by turn, while both go on; acknowledgements reach
    the sender; the window bounds what is in flight; a standby that
    restarts goes on from where its copy ends; one whose log went on
    differently, or of another store, is told to start from a base copy,
    which arrives whole and takes the old store's place; a newer epoch
    fences the primary; the sync standby is wanted once caught up and let
    go when it leaves a change unacknowledged for the timeout.
    =========================================================================
*/

#include <czmq.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_codec.h"
#include "nx_log.h"
#include "nx_repl_receiver.h"
#include "nx_repl_sender.h"
#include "nx_store.h"
#include "nx_test.h"
#include "nx_wal.h"

#define SEG (1u << 20)

static char s_root[64];
static zsock_t *s_router; /* the primary's, bound once on a free port   */
static char s_pdir[128], s_pwal[160], s_sdir[128], s_swal[160];

typedef struct {
    zsock_t *router;
    nx_wal_t *wal;
    nx_store_t *store;
    nx_repl_sender_t *tx;
    uint64_t epoch;
    uint64_t seq;
    int newer;   /* answers NX_REPL_NEWER seen                              */
    int resyncs; /* answers NX_REPL_RESYNC sent                             */
    uint8_t peer[256]; /* the last standby to ask (its routing id)      */
    size_t peer_len;
    uint64_t hello_durable; /* the durable of its last replicate         */
} s_primary_t;

typedef struct {
    nx_wal_t *wal;
    nx_repl_receiver_t *rx;
    char store_id[NX_STORE_ID_LEN + 1];
} s_standby_t;

static nx_wal_t *s_wal(const char *dir, uint64_t lsn, uint32_t crc)
{
    char err[256] = "";
    nx_wal_config_t cfg = {dir, SEG, false};
    nx_wal_t *wal = nx_wal_new(&cfg, err, sizeof err);
    CHECK(wal != NULL);
    if (wal)
        CHECK_EQ_U64(nx_wal_start(wal, lsn, crc, err, sizeof err), 0);
    return wal;
}

static void s_turn(s_primary_t *p, int events, size_t size)
{
    static uint8_t payload[200000];
    memset(payload, 'x', sizeof payload);
    for (int i = 0; i < events; i++) {
        p->seq++;
        size_t len = nx_event_msg_size(3, 1, size);
        uint8_t *w = nx_wal_add(p->wal, NX_WAL_EVENT, len);
        CHECK(w != NULL);
        if (w)
            nx_event_msg_encode(w, "a.b", 3, p->seq, 1000 + p->seq, "s", 1, payload, size);
    }
    CHECK_EQ_U64(nx_wal_write(p->wal), 0);
    CHECK_EQ_U64(nx_wal_flush(p->wal), 0);
}

static void s_primary_start(s_primary_t *p, const char *endpoint)
{
    memset(p, 0, sizeof *p);
    mkdir(s_pdir, 0700);
    char err[256] = "";
    nx_store_config_t scfg = {
        .path = s_pdir, .sync = false, .map_size = 8u << 20, .map_max = 64u << 20};
    nexus_err_t e = NEXUS_OK;
    p->store = nx_store_new(&scfg, &e, err, sizeof err);
    CHECK(p->store != NULL);
    p->wal = s_wal(s_pwal, 0, 0);
    (void)endpoint;
    p->router = s_router;
    p->epoch = 3;
    nx_repl_sender_config_t cfg = {
        .wal = p->wal,
        .wal_dir = s_pwal,
        .store = p->store,
        .data_dir = s_pdir,
        .store_id = nx_store_id(p->store),
        .router = zsock_resolve(p->router),
        .window = 256u << 10,
        .keep = 64u << 20,
        .timeout_us = 300000,
    };
    p->tx = nx_repl_sender_new(&cfg);
    CHECK(p->tx != NULL);
}

static void s_primary_stop(s_primary_t *p)
{
    nx_repl_sender_destroy(&p->tx);
    p->router = NULL;
    nx_wal_destroy(&p->wal);
    nx_store_destroy(&p->store);
}

/*  The broker's part: one request from the ROUTER, answered.             */
static void s_primary_serve(s_primary_t *p)
{
    zmsg_t *msg = zmsg_recv_nowait(p->router);
    if (!msg)
        return;
    zframe_t *id = zmsg_pop(msg);
    zframe_t *body = zmsg_pop(msg);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(body && msgpack_unpack_next(&u, (const char *)zframe_data(body), zframe_size(body),
                                      &off) == MSGPACK_UNPACK_SUCCESS);
    const char *op = NULL, *name = NULL, *sid = NULL;
    size_t op_len = 0, name_len = 0, sid_len = 0;
    nx_map_str(&u.data, "op", &op, &op_len, NULL);
    nx_map_str(&u.data, "name", &name, &name_len, NULL);
    uint64_t rid = 0;
    nx_map_u64(&u.data, "id", &rid, NULL);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    if (op && op_len == 13 && memcmp(op, "replicate.ack", 13) == 0) {
        uint64_t lsn = 0, received = 0, base = 0;
        nx_map_u64(&u.data, "lsn", &lsn, NULL);
        nx_map_u64(&u.data, "received", &received, NULL);
        nx_map_u64(&u.data, "base", &base, NULL);
        uint64_t n = 0;
        nx_map_u64(&u.data, "n", &n, NULL);
        nx_repl_sender_ack(p->tx, name, name_len, lsn, received, base, n, nx_mono_us());
    } else if (op && op_len == 9 && memcmp(op, "replicate", 9) == 0) {
        nx_repl_hello_t h = {.name = name, .name_len = name_len};
        nx_map_str(&u.data, "store_id", &sid, &sid_len, NULL);
        h.store_id = sid;
        h.store_id_len = sid_len;
        uint64_t crc = 0;
        nx_map_u64(&u.data, "lsn", &h.lsn, NULL);
        nx_map_u64(&u.data, "crc", &crc, NULL);
        h.crc = (uint32_t)crc;
        nx_map_u64(&u.data, "epoch", &h.epoch, NULL);
        nx_map_u64(&u.data, "segment_size", &h.segment_size, NULL);
        /*  As nx_ha: absent (an earlier standby) is lsn.                  */
        h.durable = UINT64_MAX;
        nx_map_u64(&u.data, "durable", &h.durable, NULL);
        CHECK(h.durable != UINT64_MAX); /* this standby says it */
        if (h.durable > h.lsn)
            h.durable = h.lsn;
        p->hello_durable = h.durable;
        p->peer_len = zframe_size(id) < sizeof p->peer ? zframe_size(id) : 0;
        memcpy(p->peer, zframe_data(id), p->peer_len);
        uint64_t from = 0;
        char why[256] = "";
        nx_repl_answer_t a = nx_repl_sender_attach(p->tx, zframe_data(id), zframe_size(id), &h,
                                                   p->epoch, &from, why, sizeof why);
        if (a == NX_REPL_NEWER)
            p->newer++;
        if (a == NX_REPL_RESYNC)
            p->resyncs++;
        bool ok = a == NX_REPL_STREAM || a == NX_REPL_RESYNC;
        msgpack_pack_map(&pk, ok ? (a == NX_REPL_RESYNC ? 6 : 5) : 4);
        nx_pack_kv_u64(&pk, "id", rid);
        nx_pack_kv_bool(&pk, "ok", ok);
        if (ok) {
            nx_pack_kv_u64(&pk, "from", from);
            nx_pack_kv_u64(&pk, "epoch", p->epoch);
            nx_pack_kv_bool(&pk, "resync", a == NX_REPL_RESYNC);
            if (a == NX_REPL_RESYNC)
                nx_pack_kv_str(&pk, "reason", why);
        } else {
            nx_pack_kv_str(&pk, "error", a == NX_REPL_NEWER ? "not_primary" : "busy");
            nx_pack_kv_str(&pk, "message", why);
        }
    } else if (op && op_len == 14 && memcmp(op, "replicate.base", 14) == 0) {
        char why[256] = "";
        /*  The copy's own checkpoint is where the standby streams from. */
        int rc = nx_repl_sender_base(p->tx, name, name_len, 0, why, sizeof why);
        CHECK_EQ_U64(rc, 0);
        msgpack_pack_map(&pk, 2);
        nx_pack_kv_u64(&pk, "id", rid);
        nx_pack_kv_bool(&pk, "ok", rc == 0);
    }
    if (out.size) {
        zmsg_t *reply = zmsg_new();
        zmsg_append(reply, &id);
        zmsg_addmem(reply, out.data, out.size);
        zmsg_send(&reply, p->router);
    }
    msgpack_sbuffer_destroy(&out);
    msgpack_unpacked_destroy(&u);
    zframe_destroy(&id);
    zframe_destroy(&body);
    zmsg_destroy(&msg);
}

static nx_repl_rx_t s_standby_start(s_standby_t *s, const char *endpoint, const char *store_id,
                                    uint64_t lsn, uint32_t crc)
{
    memset(s, 0, sizeof *s);
    mkdir(s_sdir, 0700);
    s->wal = s_wal(s_swal, lsn, crc);
    snprintf(s->store_id, sizeof s->store_id, "%s", store_id);
    nx_repl_receiver_config_t cfg = {
        .primary = endpoint,
        .name = "b",
        .wal = s->wal,
        .store_id = s->store_id,
        .epoch = 3,
        .data_dir = s_sdir,
        .timeout_us = 1500000,
    };
    s->rx = nx_repl_receiver_new(&cfg);
    CHECK(s->rx != NULL);
    return NX_REPL_RX_OK;
}

static void s_standby_stop(s_standby_t *s)
{
    nx_repl_receiver_destroy(&s->rx);
    nx_wal_destroy(&s->wal);
}

/*  Runs both sides for up to ms, or until done(). Returns the last thing
    the receiver said.                                                     */
static nx_repl_rx_t s_run(s_primary_t *p, s_standby_t *s, int ms,
                          bool (*done)(s_primary_t *, s_standby_t *))
{
    nx_repl_rx_t last = NX_REPL_RX_OK;
    uint64_t until = nx_mono_us() + (uint64_t)ms * 1000;
    while (nx_mono_us() < until) {
        uint64_t now = nx_mono_us();
        if (s->rx)
            nx_repl_receiver_tick(s->rx, now);
        zmq_pollitem_t items[2] = {
            {zsock_resolve(p->router), 0, ZMQ_POLLIN, 0},
            {s->rx ? nx_repl_receiver_socket(s->rx) : NULL, 0, ZMQ_POLLIN, 0}};
        zmq_poll(items, items[1].socket ? 2 : 1, 5);
        for (int i = 0; i < 100; i++)
            s_primary_serve(p);
        nx_repl_sender_pump(p->tx, p->epoch, nx_mono_us());
        if (s->rx) {
            nx_repl_rx_t rc = nx_repl_receiver_read(s->rx, nx_mono_us());
            if (rc != NX_REPL_RX_OK)
                last = rc;
            if (rc == NX_REPL_RX_RESTART || rc == NX_REPL_RX_FATAL)
                return rc;
        }
        if (done && done(p, s))
            break;
    }
    return last;
}

static bool s_caught_up(s_primary_t *p, s_standby_t *s)
{
    nx_repl_standby_stats_t st;
    return nx_wal_durable(s->wal) == nx_wal_written(p->wal) &&
           nx_repl_sender_stats(p->tx, 0, &st, nx_mono_us()) == 0 &&
           st.acked == nx_wal_written(p->wal);
}

static bool s_in_sync(s_primary_t *p, s_standby_t *s)
{
    (void)p;
    nx_repl_rx_stats_t rs;
    nx_repl_receiver_stats(s->rx, &rs, nx_mono_us());
    return rs.sync;
}

/*  Compares the two logs byte for byte up to the primary's end.           */
static void s_same_logs(uint64_t from, uint64_t end)
{
    for (uint64_t base = from - from % SEG; base < end; base += SEG) {
        char a[256], b[256];
        snprintf(a, sizeof a, "%s/%016llx.log", s_pwal, (unsigned long long)base);
        snprintf(b, sizeof b, "%s/%016llx.log", s_swal, (unsigned long long)base);
        static uint8_t ba[SEG], bb[SEG];
        FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
        CHECK(fa && fb);
        size_t lo = base < from ? (size_t)(from - base) : 0;
        size_t hi = end - base < SEG ? (size_t)(end - base) : SEG;
        if (fa && fb) {
            CHECK_EQ_U64(fread(ba, 1, hi, fa), hi);
            CHECK_EQ_U64(fread(bb, 1, hi, fb), hi);
            CHECK(memcmp(ba + lo, bb + lo, hi - lo) == 0);
        }
        if (fa)
            fclose(fa);
        if (fb)
            fclose(fb);
    }
}

static void s_test_stream(const char *ep)
{
    s_primary_t p;
    s_standby_t s;
    s_primary_start(&p, ep);
    s_turn(&p, 3, 100);
    s_standby_start(&s, ep, nx_store_id(p.store), 0, 0);
    s_run(&p, &s, 3000, s_caught_up);
    CHECK(s_caught_up(&p, &s));
    /*  While both go on: small turns, and turns that pad over and span
        segments, sent before the standby acknowledges what came before. */
    for (int t = 0; t < 40; t++) {
        s_turn(&p, t % 7 == 3 ? 30 : 2, t % 7 == 3 ? 100000 : 300);
        s_run(&p, &s, 2, NULL);
        nx_repl_standby_stats_t st;
        CHECK_EQ_U64(nx_repl_sender_stats(p.tx, 0, &st, nx_mono_us()), 0);
        /*  The window (256 KiB) plus one message (1 MiB and a frame).     */
        CHECK(st.sent - st.received <= (256u << 10) + (2u << 20));
    }
    s_run(&p, &s, 5000, s_caught_up);
    CHECK(s_caught_up(&p, &s));
    CHECK(nx_wal_written(p.wal) > 4 * SEG);
    /*  A standby asking again while a flush of its copy runs has received
        more than it has durable: only what is durable counts as
        acknowledged (a held reply waits for it), until an ack says more. */
    {
        uint64_t written = nx_wal_written(p.wal), from = 0;
        nx_repl_hello_t h = {.name = "b", .name_len = 1, .lsn = written,
                             .crc = nx_wal_turn_crc(p.wal), .segment_size = SEG,
                             .durable = written - 1000};
        h.store_id = nx_store_id(p.store);
        h.store_id_len = strlen(h.store_id);
        char why[256] = "";
        CHECK_EQ_U64(nx_repl_sender_attach(p.tx, p.peer, p.peer_len, &h, p.epoch, &from, why,
                                           sizeof why),
                     NX_REPL_STREAM);
        nx_repl_standby_stats_t st;
        CHECK_EQ_U64(nx_repl_sender_stats(p.tx, 0, &st, nx_mono_us()), 0);
        CHECK_EQ_U64(st.acked, written - 1000);
        CHECK_EQ_U64(st.sent, written);
        s_run(&p, &s, 5000, s_caught_up);
        CHECK(s_caught_up(&p, &s));
    }
    s_same_logs(0, nx_wal_written(p.wal));
    nx_repl_rx_stats_t rs;
    nx_repl_receiver_stats(s.rx, &rs, nx_mono_us());
    CHECK_EQ_U64(rs.state, NX_REPL_RX_STREAM);
    CHECK_EQ_U64(rs.received, nx_wal_written(p.wal));

    /*  The sync standby: wanted once caught up; the gate follows it.      */
    char name[64] = "";
    CHECK_EQ_U64(nx_repl_sender_want(p.tx, nx_mono_us(), name, sizeof name), NX_REPL_WANT_ADD);
    CHECK_EQ_STR(name, "b");
    CHECK_EQ_U64(nx_repl_sender_synced(p.tx), UINT64_MAX);
    CHECK_EQ_U64(nx_repl_sender_set_sync(p.tx, "b"), 0);
    CHECK_EQ_U64(nx_repl_sender_synced(p.tx), nx_wal_written(p.wal));
    CHECK_EQ_U64(nx_repl_sender_set_sync(p.tx, "nobody"), -1);
    s_turn(&p, 1, 10);
    CHECK(nx_repl_sender_synced(p.tx) < nx_wal_written(p.wal));
    s_run(&p, &s, 3000, s_caught_up);
    CHECK_EQ_U64(nx_repl_sender_synced(p.tx), nx_wal_written(p.wal));
    nx_repl_receiver_stats(s.rx, &rs, nx_mono_us());
    CHECK(rs.sync);

    /*  A standby that did not run for more than half the timeout: what it
        reads now was sent before (it says sync, with an older ack's
        number), so it counts itself in sync only once the primary answers
        an ack sent after.                                                */
    s_turn(&p, 1, 10);
    nx_repl_sender_pump(p.tx, p.epoch, nx_mono_us());
    usleep(20000);
    CHECK_EQ_U64(nx_repl_receiver_read(s.rx, nx_mono_us() + 1000000), NX_REPL_RX_OK);
    nx_repl_receiver_stats(s.rx, &rs, nx_mono_us());
    CHECK(!rs.sync);
    CHECK_EQ_U64(nx_wal_durable(s.wal), nx_wal_written(p.wal));
    s_run(&p, &s, 3000, s_in_sync);
    nx_repl_receiver_stats(s.rx, &rs, nx_mono_us());
    CHECK(rs.sync);
    /*  The same when nothing came for that long.                          */
    s_run(&p, &s, 20, NULL);
    CHECK_EQ_U64(nx_repl_receiver_read(s.rx, nx_mono_us() + 1000000), NX_REPL_RX_OK);
    nx_repl_receiver_stats(s.rx, &rs, nx_mono_us());
    CHECK(!rs.sync);
    s_run(&p, &s, 3000, s_in_sync);
    nx_repl_receiver_stats(s.rx, &rs, nx_mono_us());
    CHECK(rs.sync);

    /*  The standby stops; the primary goes on; it comes back from where
        its copy ends, with no base copy.                                 */
    uint64_t at = nx_wal_written(s.wal);
    uint32_t crc = nx_wal_turn_crc(s.wal);
    s_standby_stop(&s);
    s_turn(&p, 5, 1000);
    s_run(&p, &s, 50, NULL);
    CHECK_EQ_U64(nx_repl_sender_want(p.tx, nx_mono_us(), name, sizeof name), NX_REPL_WANT_NONE);
    /*  A change left unacknowledged for the timeout: let it go.          */
    usleep(350000);
    CHECK_EQ_U64(nx_repl_sender_want(p.tx, nx_mono_us(), name, sizeof name), NX_REPL_WANT_DROP);
    nx_repl_sender_set_sync(p.tx, NULL);
    CHECK_EQ_U64(nx_repl_sender_synced(p.tx), UINT64_MAX);
    s_standby_start(&s, ep, nx_store_id(p.store), at, crc);
    s_run(&p, &s, 3000, s_caught_up);
    CHECK(s_caught_up(&p, &s));
    CHECK_EQ_U64(p.resyncs, 0);
    /*  (A start makes the segments below its position spares.)            */
    s_same_logs(at, nx_wal_written(p.wal));

    /*  A standby that has seen a newer epoch: this primary is not one.    */
    p.epoch = 2;
    s_standby_stop(&s);
    s_standby_start(&s, ep, nx_store_id(p.store), nx_wal_written(p.wal), nx_wal_turn_crc(p.wal));
    nx_repl_rx_t rc = s_run(&p, &s, 1000, NULL);
    CHECK_EQ_U64(rc, NX_REPL_RX_NEWER);
    CHECK(p.newer > 0);
    p.epoch = 3;
    s_standby_stop(&s);
    s_primary_stop(&p);
    nx_test_rm_tree(s_sdir);
    nx_test_rm_tree(s_pdir);
}

static bool s_never(s_primary_t *p, s_standby_t *s)
{
    (void)p;
    (void)s;
    return false;
}

/*  A standby of another store, or whose log went on differently: a base
    copy, whole, then installed in place of its store.                    */
static void s_test_base(const char *ep)
{
    s_primary_t p;
    s_standby_t s;
    s_primary_start(&p, ep);
    /*  Events in the primary's store, as its checkpointer would put them. */
    for (uint64_t seq = 1; seq <= 3000; seq++)
        CHECK_EQ_U64(nx_store_append(p.store, seq, 1000 + seq, "a.b", 3, "s", 1,
                                     (const uint8_t *)"payload", 7),
                     NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(p.store, 0), NEXUS_OK);
    s_turn(&p, 2, 100);

    /*  The standby's own log went on differently from the same start.     */
    mkdir(s_sdir, 0700);
    nx_wal_t *w = s_wal(s_swal, 0, 0);
    uint8_t *x = nx_wal_add(w, NX_WAL_EVENT, nx_event_msg_size(3, 1, 5));
    nx_event_msg_encode(x, "a.b", 3, 1, 1, "s", 1, (const uint8_t *)"other", 5);
    CHECK_EQ_U64(nx_wal_write(w), 0);
    uint64_t at = nx_wal_written(w);
    uint32_t crc = nx_wal_turn_crc(w);
    nx_wal_destroy(&w);
    /*  And a store of its own, which the base copy replaces.              */
    char data[256];
    snprintf(data, sizeof data, "%s/data.mdb", s_sdir);
    FILE *f = fopen(data, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("the old store", f);
        fclose(f);
    }
    s_standby_start(&s, ep, nx_store_id(p.store), at, crc);
    nx_repl_rx_t rc = s_run(&p, &s, 10000, s_never);
    CHECK_EQ_U64(rc, NX_REPL_RX_RESTART);
    CHECK_EQ_U64(p.resyncs, 1);
    char ready[256];
    snprintf(ready, sizeof ready, "%s/base.mdb", s_sdir);
    CHECK(access(ready, F_OK) == 0);
    s_standby_stop(&s);
    /*  The primary's copy file is gone once sent.                         */
    s_run(&p, &s, 100, NULL);
    char sent[256];
    snprintf(sent, sizeof sent, "%s/replica-base.mdb", s_pdir);
    CHECK(access(sent, F_OK) != 0);

    char err[256] = "";
    CHECK_EQ_U64(nx_repl_receiver_install(s_sdir, err, sizeof err), 0);
    CHECK(access(ready, F_OK) != 0);
    char kept[256];
    snprintf(kept, sizeof kept, "%s/diverged/data.mdb", s_sdir);
    CHECK(access(kept, F_OK) == 0);
    char seg0[256];
    snprintf(seg0, sizeof seg0, "%s/0000000000000000.log", s_swal);
    CHECK(access(seg0, F_OK) != 0);
    nx_store_config_t scfg = {
        .path = s_sdir, .sync = false, .map_size = 8u << 20, .map_max = 64u << 20};
    nexus_err_t e = NEXUS_OK;
    nx_store_t *copy = nx_store_new(&scfg, &e, err, sizeof err);
    CHECK(copy != NULL);
    if (copy) {
        CHECK_EQ_STR(nx_store_id(copy), nx_store_id(p.store));
        CHECK_EQ_U64(nx_store_last_seq(copy), 3000);
        nx_store_destroy(&copy);
    }
    /*  Nothing to install: nothing happens.                               */
    CHECK_EQ_U64(nx_repl_receiver_install(s_sdir, err, sizeof err), 0);

    /*  Another store altogether: a base copy too.                         */
    p.resyncs = 0;
    nx_test_rm_tree(s_swal);
    s_standby_start(&s, ep, "0123456789abcdef", 0, 0);
    rc = s_run(&p, &s, 10000, s_never);
    CHECK_EQ_U64(rc, NX_REPL_RX_RESTART);
    CHECK_EQ_U64(p.resyncs, 1);
    s_standby_stop(&s);
    s_primary_stop(&p);
    nx_test_rm_tree(s_sdir);
    nx_test_rm_tree(s_pdir);
}

/*  A second base copy keeps the store it replaces beside the one an
    earlier copy kept: each may hold the only copy of some changes.       */

static char *s_read_file(const char *path)
{
    static char buf[64];
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    return buf;
}

static void s_test_kept_stores(void)
{
    char dir[300], path[400], err[256] = "";
    snprintf(dir, sizeof dir, "%s/keeper", s_root);
    CHECK(mkdir(dir, 0700) == 0);
    const char *stores[] = {"first", "second", "third"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/data.mdb", dir);
        nx_test_write_file(path, stores[i]);
        snprintf(path, sizeof path, "%s/base.mdb", dir);
        nx_test_write_file(path, "copy");
        CHECK_EQ_U64(nx_repl_receiver_install(dir, err, sizeof err), 0);
    }
    snprintf(path, sizeof path, "%s/diverged/data.mdb", dir);
    CHECK_EQ_STR(s_read_file(path), "first");
    DIR *d;
    snprintf(path, sizeof path, "%s/diverged", dir);
    d = opendir(path);
    int kept = 0, second = 0, third = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        kept++;
        char file[700];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        second += strcmp(s_read_file(file), "second") == 0;
        third += strcmp(s_read_file(file), "third") == 0;
    }
    if (d)
        closedir(d);
    CHECK_EQ_U64(kept, 3);
    CHECK(second == 1 && third == 1);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    CHECK_EQ_STR(s_read_file(path), "copy");
    nx_test_rm_tree(dir);
}

int main(void)
{
    nx_log_init("test_repl", NX_LOG_WARN);
    snprintf(s_root, sizeof s_root, "/tmp/nexus-repl-test.XXXXXX");
    if (!mkdtemp(s_root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(s_pdir, sizeof s_pdir, "%s/primary", s_root);
    snprintf(s_pwal, sizeof s_pwal, "%s/wal", s_pdir);
    snprintf(s_sdir, sizeof s_sdir, "%s/standby", s_root);
    snprintf(s_swal, sizeof s_swal, "%s/wal", s_sdir);
    /*  One ROUTER for every primary of the test, on a free port.          */
    s_router = zsock_new(ZMQ_ROUTER);
    int port = s_router ? zsock_bind(s_router, "tcp://127.0.0.1:*") : -1;
    CHECK(port > 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    s_test_stream(ep);
    s_test_base(ep);
    s_test_kept_stores();
    zsock_destroy(&s_router);
    nx_test_rm_tree(s_root);
    NX_TEST_DONE();
}
