/*  =========================================================================
    nx_ops - the control plane's operations, one function each, and the
    table that names them. docs/protocol.md documents every field.

    Handlers check every field of the request before they change anything,
    so that a bad request leaves the store as it was.
    =========================================================================
*/

#include <string.h>

#include "nx_auth.h"
#include "nx_broker.h"
#include "nx_coord.h"
#include "nx_log.h"
#include "nx_topic.h"

#define S_PROBLEM_US (60 * 1000000ull) /* health degraded after a store failure */

/*  ---- ping, health, state -------------------------------------------- */

static int s_op_ping(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                     nexus_err_t *err, char *err_msg)
{
    nx_pack_kv_u64(pk, "ts", nx_now_us());
    nx_pack_kv_str(pk, "store_id", nx_store_id(self->store));
    return 2;
}

static int s_op_health(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                       nexus_err_t *err, char *err_msg)
{
    char iso[40];
    /*  A store that failed within the last minute makes the broker
        degraded: it still serves, but writes may be refused.              */
    bool degraded = self->problem_at && nx_mono_us() - self->problem_at < S_PROBLEM_US;
    nx_pack_kv_str(pk, "status", degraded ? "degraded" : "active");
    nx_pack_kv_str(pk, "service", "nexusd");
    nx_pack_kv_str(pk, "version", NEXUS_VERSION_STRING);
    nx_pack_kv_str(pk, "timestamp", nx_iso8601(nx_now_us(), iso));
    nx_pack_kv_u64(pk, "last_seq", self->last_seq);
    nx_pack_kv_str(pk, "problem", degraded ? self->problem : NULL);
    nx_pack_kv_str(pk, "store_id", nx_store_id(self->store));
    return 7;
}

static int s_op_state(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                      nexus_err_t *err, char *err_msg)
{
    uint64_t now = nx_now_us(), mono = nx_mono_us();
    char iso[40];
    nx_store_stats_t st;
    nx_store_stats(self->store, &st);
    nx_counters_t *c = &self->count;

    nx_pack_kv_str(pk, "version", NEXUS_VERSION_STRING);
    nx_pack_kv_str(pk, "start_time", nx_iso8601(self->start_us, iso));
    nx_pack_kv_u64(pk, "start_ts", self->start_us);
    nx_pack_kv_double(pk, "uptime_seconds", (double)(mono - self->start_mono) / 1e6);
    nx_pack_kv_str(pk, "sync", self->cfg.sync == NX_SYNC_FULL ? "full" : "none");
    nx_pack_kv_u64(pk, "events_total", c->events_in);
    nx_pack_kv_u64(pk, "events_out", c->events_out);
    nx_pack_kv_double(pk, "events_per_second_10s", nx_rate_get(&self->rate_in, mono, 10));
    nx_pack_kv_double(pk, "events_per_second_1m", nx_rate_get(&self->rate_in, mono, 60));
    nx_pack_kv_u64(pk, "subscribers", c->subscribers);
    nx_pack_kv_u64(pk, "publishers", c->publishers);
    nx_pack_kv_u64(pk, "subscriptions", c->subscriptions);
    nx_pack_kv_u64(pk, "requests", c->requests);
    nx_pack_kv_u64(pk, "request_errors",
                   c->request_errors + __atomic_load_n(&c->reader_errors, __ATOMIC_RELAXED));
    nx_pack_kv_u64(pk, "batches", c->batches);

    nx_pack_str(pk, "history");
    msgpack_pack_map(pk, 10);
    nx_pack_kv_u64(pk, "first_seq", st.first_seq);
    nx_pack_kv_u64(pk, "last_seq", st.last_seq);
    nx_pack_kv_u64(pk, "count", st.count);
    nx_pack_kv_u64(pk, "bytes", st.bytes);
    nx_pack_kv_u64(pk, "disk_bytes", st.disk_bytes);
    nx_pack_kv_u64(pk, "map_size", st.map_size);
    nx_pack_kv_u64(pk, "map_used", st.map_used);
    nx_pack_kv_u64(pk, "trimmed", st.trimmed);
    nx_pack_kv_u64(pk, "commits", st.commits);
    nx_pack_kv_u64(pk, "grows", st.grows);

    nx_pack_str(pk, "drops");
    msgpack_pack_map(pk, 7);
    nx_pack_kv_u64(pk, "invalid_topic", c->drop_bad_topic);
    nx_pack_kv_u64(pk, "oversize", c->drop_oversize);
    nx_pack_kv_u64(pk, "malformed", c->drop_malformed);
    nx_pack_kv_u64(pk, "store", c->drop_store);
    nx_pack_kv_u64(pk, "send", c->drop_send);
    nx_pack_kv_u64(pk, "slow_subscriber", c->drop_slow);
    nx_pack_kv_u64(pk, "total",
                   c->drop_bad_topic + c->drop_oversize + c->drop_malformed + c->drop_store +
                       c->drop_send);

    nx_pack_str(pk, "handshakes_refused");
    msgpack_pack_map(pk, 4);
    uint64_t plain = __atomic_load_n(&self->refused.plain, __ATOMIC_RELAXED);
    uint64_t curve = __atomic_load_n(&self->refused.curve, __ATOMIC_RELAXED);
    uint64_t mech = __atomic_load_n(&self->refused.mechanism, __ATOMIC_RELAXED);
    nx_pack_kv_u64(pk, "plain", plain);
    nx_pack_kv_u64(pk, "curve", curve);
    nx_pack_kv_u64(pk, "mechanism", mech);
    nx_pack_kv_u64(pk, "total", plain + curve + mech);

    nx_pack_kv_str(pk, "timestamp", nx_iso8601(now, iso));
    nx_pack_kv_str(pk, "store_id", nx_store_id(self->store));
    return 20;
}

/*  ---- publish (acknowledged) ------------------------------------------ */

static int s_op_publish(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                        nexus_err_t *err, char *err_msg)
{
    const char *topic = NULL, *source = "";
    size_t topic_len = 0, source_len = 0;
    *err = nx_map_str_req(req, "topic", &topic, &topic_len, err_msg);
    if (*err)
        return -1;
    *err = nx_map_str(req, "source", &source, &source_len, err_msg);
    if (*err)
        return -1;
    /*  payload: bin is the event's bytes as they are; any other msgpack
        value (a str too) is stored as its msgpack encoding, so a client
        can send a map without packing it twice, and a JSON string sent
        through the gateway comes back as a string.                        */
    const msgpack_object *payload = nx_map_get(req, "payload");
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
    if (nx_auth_enabled(self->auth) && source_len == 0) {
        source = nx_auth_name(self->auth, self->auth_handle);
        source_len = strlen(source);
    } else if (!nx_auth_may_source(self->auth, self->auth_handle, source, source_len)) {
        *err = NEXUS_ERR_FORBIDDEN;
        snprintf(err_msg, NX_ERRMSG_MAX,
                 "this token may not publish as '%.*s': the source is its name (%s) or a session "
                 "it may act as",
                 (int)nx_utf8_cut(source, source_len, 64), source,
                 nx_auth_name(self->auth, self->auth_handle));
        msgpack_sbuffer_destroy(&packed);
        return -1;
    }
    uint64_t seq = 0;
    *err = nx_broker_emit(self, topic, topic_len, source, source_len, data, size,
                          self->cfg.max_payload, &seq, err_msg);
    msgpack_sbuffer_destroy(&packed);
    if (*err)
        return -1;
    nx_pack_kv_u64(pk, "seq", seq);
    nx_pack_kv_u64(pk, "ts", self->last_ts);
    return 2;
}

/*  ---- The table -------------------------------------------------------- */

static const nx_op_t s_ops[] = {
    {"ping", s_op_ping, false, false},
    {"health", s_op_health, false, false},
    {"state", s_op_state, false, false},
    {"publish", s_op_publish, true, false},
    /*  No function: history runs on the reader thread (nx_reader.c).      */
    {"history", NULL, false, false},
    {"session.register", nx_op_session_register, true, false},
    {"session.heartbeat", nx_op_session_heartbeat, false, false},
    {"session.status", nx_op_session_status, true, false},
    {"session.unregister", nx_op_session_unregister, true, true},
    {"session.get", nx_op_session_get, false, false},
    {"session.list", nx_op_session_list, false, false},
    {"session.find", nx_op_session_find, false, false},
    {"work.claim", nx_op_work_claim, true, true},
    {"work.renew", nx_op_work_renew, true, true},
    {"work.release", nx_op_work_release, true, true},
    {"work.complete", nx_op_work_complete, true, true},
    {"work.reopen", nx_op_work_reopen, true, true},
    {"work.get", nx_op_work_get, false, false},
    {"work.list", nx_op_work_list, false, false},
};

int nx_ops_find(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof s_ops / sizeof s_ops[0]; i++)
        if (strlen(s_ops[i].name) == len && memcmp(s_ops[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

const nx_op_t *nx_ops_get(int index)
{
    return &s_ops[index];
}
