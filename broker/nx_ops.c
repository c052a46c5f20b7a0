/*  =========================================================================
    nx_ops - the control plane's operations, one function each, and the
    table that joins each row of the protocol's op table (sdk/proto/
    nx_optab.c: names, flags, fields) to its handler. docs/protocol.md
    documents every field.

    The broker has checked every field the table knows before a handler
    runs; handlers check the rest (bounds from the settings, state) before
    they change anything, so that a bad request leaves the store as it was.
    =========================================================================
*/

#include <string.h>

#include "nx_auth.h"
#include "nx_broker.h"
#include "nx_coord.h"
#include "nx_ha.h"
#include "nx_log.h"
#include "nx_topic.h"

#define S_PROBLEM_US (60 * 1000000ull) /* health degraded after a store failure */

/*  ---- ping, health, state -------------------------------------------- */

static int s_op_ping(nx_broker_t *self, nx_request_t *rq)
{
    nx_pack_kv_u64(nx_kv(rq), "ts", nx_now_us());
    nx_pack_kv_str(nx_kv(rq), "store_id", nx_store_id(self->store));
    /*  So that a client refuses a request too large before sending it
        (over 4 x max_request the connection itself would be dropped).   */
    nx_pack_kv_u64(nx_kv(rq), "max_request", self->cfg.max_request);
    nx_pack_kv_u64(nx_kv(rq), "max_payload", self->cfg.max_payload);
    nx_ha_pack_role(self, rq);
    return 0;
}

static int s_op_health(nx_broker_t *self, nx_request_t *rq)
{
    char iso[40];
    /*  A store that failed within the last minute makes the broker
        degraded: it still serves, but writes may be refused.              */
    bool degraded = self->problem_at && nx_mono_us() - self->problem_at < S_PROBLEM_US;
    nx_pack_kv_str(nx_kv(rq), "status", degraded ? "degraded" : "active");
    nx_pack_kv_str(nx_kv(rq), "service", "nexusd");
    nx_pack_kv_str(nx_kv(rq), "version", NEXUS_VERSION_STRING);
    nx_pack_kv_str(nx_kv(rq), "timestamp", nx_iso8601(nx_now_us(), iso));
    nx_pack_kv_u64(nx_kv(rq), "last_seq", self->last_seq);
    nx_pack_kv_str(nx_kv(rq), "problem", degraded ? self->problem : NULL);
    nx_pack_kv_str(nx_kv(rq), "store_id", nx_store_id(self->store));
    nx_ha_pack_role(self, rq);
    return 0;
}

static int s_op_state(nx_broker_t *self, nx_request_t *rq)
{
    uint64_t now = nx_now_us(), mono = nx_mono_us();
    char iso[40];
    nx_store_stats_t st;
    nx_store_stats(self->store, &st);
    nx_counters_t *c = &self->count;

    nx_pack_kv_str(nx_kv(rq), "version", NEXUS_VERSION_STRING);
    nx_pack_kv_str(nx_kv(rq), "start_time", nx_iso8601(self->start_us, iso));
    nx_pack_kv_u64(nx_kv(rq), "start_ts", self->start_us);
    nx_pack_kv_double(nx_kv(rq), "uptime_seconds", (double)(mono - self->start_mono) / 1e6);
    nx_pack_kv_str(nx_kv(rq), "sync", self->cfg.sync == NX_SYNC_FULL ? "full" : "none");
    nx_pack_kv_u64(nx_kv(rq), "events_total", c->events_in);
    nx_pack_kv_u64(nx_kv(rq), "events_out", c->events_out);
    nx_pack_kv_double(nx_kv(rq), "events_per_second_10s", nx_rate_get(&self->rate_in, mono, 10));
    nx_pack_kv_double(nx_kv(rq), "events_per_second_1m", nx_rate_get(&self->rate_in, mono, 60));
    nx_pack_kv_u64(nx_kv(rq), "subscribers", c->subscribers);
    nx_pack_kv_u64(nx_kv(rq), "publishers", c->publishers);
    nx_pack_kv_u64(nx_kv(rq), "subscriptions", c->subscriptions);
    nx_pack_kv_u64(nx_kv(rq), "subscriptions_refused", c->sub_refused);
    nx_pack_kv_u64(nx_kv(rq), "subscribers_dropped", c->sub_dropped);
    nx_pack_str(nx_kv(rq), "channels");
    nx_broker_pack_subscriptions(self, &rq->reply.pk);
    nx_pack_kv_u64(nx_kv(rq), "requests", c->requests);
    nx_pack_kv_u64(nx_kv(rq), "request_errors",
                   c->request_errors + __atomic_load_n(&c->reader_errors, __ATOMIC_RELAXED));
    nx_pack_kv_u64(nx_kv(rq), "batches", c->batches);

    nx_dmap_open(&rq->reply, "history");
    nx_pack_kv_u64(nx_kv(rq), "first_seq", st.first_seq);
    nx_pack_kv_u64(nx_kv(rq), "last_seq", st.last_seq);
    nx_pack_kv_u64(nx_kv(rq), "count", st.count);
    nx_pack_kv_u64(nx_kv(rq), "bytes", st.bytes);
    nx_pack_kv_u64(nx_kv(rq), "disk_bytes", st.disk_bytes);
    nx_pack_kv_u64(nx_kv(rq), "map_size", st.map_size);
    nx_pack_kv_u64(nx_kv(rq), "map_used", st.map_used);
    nx_pack_kv_u64(nx_kv(rq), "trimmed", st.trimmed);
    nx_pack_kv_u64(nx_kv(rq), "commits", st.commits);
    nx_pack_kv_u64(nx_kv(rq), "grows", st.grows);

    nx_dmap_close(&rq->reply);

    nx_dmap_open(&rq->reply, "drops");
    nx_pack_kv_u64(nx_kv(rq), "invalid_topic", c->drop_bad_topic);
    nx_pack_kv_u64(nx_kv(rq), "oversize", c->drop_oversize);
    nx_pack_kv_u64(nx_kv(rq), "malformed", c->drop_malformed);
    nx_pack_kv_u64(nx_kv(rq), "store", c->drop_store);
    nx_pack_kv_u64(nx_kv(rq), "send", c->drop_send);
    nx_pack_kv_u64(nx_kv(rq), "slow_subscriber", c->drop_slow);
    nx_pack_kv_u64(nx_kv(rq), "forbidden", c->drop_forbidden);
    nx_pack_kv_u64(nx_kv(rq), "standby", c->drop_standby);
    nx_pack_kv_u64(nx_kv(rq), "total",
                   c->drop_bad_topic + c->drop_oversize + c->drop_malformed + c->drop_store +
                       c->drop_send + c->drop_forbidden + c->drop_standby);
    nx_dmap_close(&rq->reply);

    nx_dmap_open(&rq->reply, "handshakes_refused");
    uint64_t plain = __atomic_load_n(&self->refused.plain, __ATOMIC_RELAXED);
    uint64_t curve = __atomic_load_n(&self->refused.curve, __ATOMIC_RELAXED);
    uint64_t mech = __atomic_load_n(&self->refused.mechanism, __ATOMIC_RELAXED);
    nx_pack_kv_u64(nx_kv(rq), "plain", plain);
    nx_pack_kv_u64(nx_kv(rq), "curve", curve);
    nx_pack_kv_u64(nx_kv(rq), "mechanism", mech);
    nx_pack_kv_u64(nx_kv(rq), "total", plain + curve + mech);
    nx_dmap_close(&rq->reply);

    nx_wal_stats_t ws;
    nx_wal_stats(self->wal, &ws);
    uint64_t checkpoint = nx_checkpointer_committed(self->ckpt);
    nx_dmap_open(&rq->reply, "log");
    nx_pack_kv_u64(nx_kv(rq), "written", ws.written);
    nx_pack_kv_u64(nx_kv(rq), "durable", ws.durable);
    nx_pack_kv_u64(nx_kv(rq), "checkpoint", checkpoint);
    nx_pack_kv_u64(nx_kv(rq), "behind", ws.written - checkpoint);
    nx_pack_kv_u64(nx_kv(rq), "flushes", ws.flushes);
    nx_pack_kv_u64(nx_kv(rq), "frames", ws.frames);
    nx_pack_kv_u64(nx_kv(rq), "segments", ws.segments);
    nx_pack_kv_u64(nx_kv(rq), "segment_size", ws.segment_size);
    nx_dmap_close(&rq->reply);

    nx_coord_pack_state(self, rq);
    nx_ha_pack_state(self, rq);
    nx_pack_kv_str(nx_kv(rq), "timestamp", nx_iso8601(now, iso));
    nx_pack_kv_str(nx_kv(rq), "store_id", nx_store_id(self->store));
    return 0;
}

/*  ---- publish (acknowledged) ------------------------------------------ */

static int s_op_publish(nx_broker_t *self, nx_request_t *rq)
{
    /*  Types and the topic's grammar are checked (nx_optab).               */
    const char *topic = NULL, *source = "";
    size_t topic_len = 0, source_len = 0;
    nx_map_str(rq->fields, "topic", &topic, &topic_len, NULL);
    nx_map_str(rq->fields, "source", &source, &source_len, NULL);
    /*  payload: bin is the event's bytes as they are; any other msgpack
        value (a str too) is stored as its msgpack encoding, so a client
        can send a map without packing it twice, and a JSON string sent
        through the gateway comes back as a string.                        */
    const msgpack_object *payload = nx_map_get(rq->fields, "payload");
    const void *data = "";
    size_t size = 0;
    msgpack_sbuffer packed;
    msgpack_sbuffer_init(&packed);
    if (payload && payload->type == MSGPACK_OBJECT_BIN) {
        data = payload->via.bin.ptr;
        size = payload->via.bin.size;
    } else if (payload) {
        msgpack_packer ppk;
        msgpack_packer_init(&ppk, &packed, msgpack_sbuffer_write);
        msgpack_pack_object(&ppk, *payload);
        data = packed.data;
        size = packed.size;
    }
    /*  With tokens the source is the token's own: its name when none is
        given, else a session it may act as (the gateway names the session
        it acts for). Without tokens nothing names a client.               */
    if (!nx_auth_may_publish(self->auth, rq->auth, topic, topic_len)) {
        char pub[200];
        msgpack_sbuffer_destroy(&packed);
        return nx_request_fail(rq, NEXUS_ERR_FORBIDDEN,
                               "this token (%s) may not publish to '%.*s': its pub= is '%s'%s",
                               nx_auth_name(self->auth, rq->auth),
                               (int)nx_utf8_cut(topic, topic_len, 64), topic,
                               nx_auth_describe(self->auth, rq->auth, false, pub, sizeof pub),
                               nx_perm_broker_topic(topic, topic_len)
                                   ? " (a topic the broker publishes needs a pattern that names "
                                     "its first token)"
                                   : "");
    }
    if (nx_auth_enabled(self->auth) && source_len == 0) {
        source = nx_auth_name(self->auth, rq->auth);
        source_len = strlen(source);
    } else if (!nx_auth_may_source(self->auth, rq->auth, source, source_len)) {
        msgpack_sbuffer_destroy(&packed);
        return nx_request_fail(rq, NEXUS_ERR_FORBIDDEN,
                               "this token may not publish as '%.*s': the source is its name (%s) "
                               "or a session it may act as",
                               (int)nx_utf8_cut(source, source_len, 64), source,
                               nx_auth_name(self->auth, rq->auth));
    }
    uint64_t seq = 0;
    char err_msg[NX_ERRMSG_MAX] = "";
    nexus_err_t err = nx_broker_emit(self, topic, topic_len, source, source_len, data, size,
                                     self->cfg.max_payload, &seq, err_msg);
    msgpack_sbuffer_destroy(&packed);
    if (err)
        return nx_request_fail(rq, err, "%s", err_msg);
    nx_pack_kv_u64(nx_kv(rq), "seq", seq);
    nx_pack_kv_u64(nx_kv(rq), "ts", self->last_ts);
    return 0;
}

/*  ---- channels ------------------------------------------------------------ */

static int s_op_channels(nx_broker_t *self, nx_request_t *rq)
{
    nx_pack_str(nx_kv(rq), "channels");
    nx_broker_pack_subscriptions(self, &rq->reply.pk);
    nx_pack_kv_u64(nx_kv(rq), "subscribers", self->count.subscribers);
    return 0;
}

/*  ---- The table -------------------------------------------------------- */

/*  Handlers by op name; every row of the protocol table has one here
    (history's runs on the reader thread, nx_reader.c).                     */
static const struct {
    const char *name;
    nx_op_fn *fn;
} s_handlers[] = {
    {"ping", s_op_ping},
    {"health", s_op_health},
    {"state", s_op_state},
    {"channels", s_op_channels},
    {"publish", s_op_publish},
    {"history", NULL},
    {"session.register", nx_op_session_register},
    {"session.heartbeat", nx_op_session_heartbeat},
    {"session.status", nx_op_session_status},
    {"session.unregister", nx_op_session_unregister},
    {"session.cursor", nx_op_session_cursor},
    {"session.get", nx_op_session_get},
    {"session.list", nx_op_session_list},
    {"session.find", nx_op_session_find},
    {"work.claim", nx_op_work_claim},
    {"work.renew", nx_op_work_renew},
    {"work.release", nx_op_work_release},
    {"work.complete", nx_op_work_complete},
    {"work.reopen", nx_op_work_reopen},
    {"work.get", nx_op_work_get},
    {"work.list", nx_op_work_list},
    {"replicate", nx_op_replicate},
    {"replicate.ack", nx_op_replicate_ack},
    {"replicate.base", nx_op_replicate_base},
    {"promote", nx_op_promote},
    {"fence", nx_op_fence},
};

#define S_HANDLERS (sizeof s_handlers / sizeof s_handlers[0])

/*  The joined table, in the protocol table's order (nx_ops_init).       */
static nx_op_t s_ops[S_HANDLERS];
static size_t s_n_ops;

int nx_ops_init(char *err_buf, size_t err_size)
{
    size_t n = 0;
    const nx_opdef_t *defs = nx_optab_all(&n);
    if (n > S_HANDLERS) {
        snprintf(err_buf, err_size, "the op table has %zu ops, the broker %zu handlers", n,
                 S_HANDLERS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < S_HANDLERS && strcmp(s_handlers[k].name, defs[i].name) != 0)
            k++;
        /*  A row without a handler is a bug of this build: refuse to start
            rather than answer unknown_op for an op the docs promise.      */
        if (k == S_HANDLERS || (!s_handlers[k].fn && !(defs[i].flags & NX_OF_READER))) {
            snprintf(err_buf, err_size, "op %s has no handler", defs[i].name);
            return -1;
        }
        s_ops[i] = (nx_op_t){&defs[i], s_handlers[k].fn};
    }
    s_n_ops = n;
    return 0;
}

const nx_op_t *nx_ops_find(const char *name, size_t len)
{
    for (size_t i = 0; i < s_n_ops; i++)
        if (strlen(s_ops[i].def->name) == len && memcmp(s_ops[i].def->name, name, len) == 0)
            return &s_ops[i];
    return NULL;
}
