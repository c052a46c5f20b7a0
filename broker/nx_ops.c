/*  =========================================================================
    nx_ops - the control plane's operations, one function each, and the
    table that names them. docs/protocol.md documents every field.

    Handlers check every field of the request before they change anything,
    so that a bad request leaves the store as it was.
    =========================================================================
*/

#include <string.h>

#include "nx_broker.h"
#include "nx_coord.h"
#include "nx_log.h"
#include "nx_topic.h"

#define S_PATTERNS_MAX 64 /* patterns in one history query                  */

static int s_fail(nexus_err_t *err, nexus_err_t code, char *err_msg, const char *text)
{
    *err = code;
    if (text)
        snprintf(err_msg, NX_ERRMSG_MAX, "%s", text);
    return -1;
}

/*  ---- ping, health, state -------------------------------------------- */

static int s_op_ping(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                     nexus_err_t *err, char *err_msg)
{
    nx_pack_kv_u64(pk, "ts", nx_now_us());
    return 1;
}

static int s_op_health(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                       nexus_err_t *err, char *err_msg)
{
    char iso[40];
    nx_pack_kv_str(pk, "status", "active");
    nx_pack_kv_str(pk, "service", "nexusd");
    nx_pack_kv_str(pk, "version", NEXUS_VERSION_STRING);
    nx_pack_kv_str(pk, "timestamp", nx_iso8601(nx_now_us(), iso));
    nx_pack_kv_u64(pk, "last_seq", self->last_seq);
    return 5;
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
    nx_pack_kv_u64(pk, "request_errors", c->request_errors);
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
    msgpack_pack_map(pk, 6);
    nx_pack_kv_u64(pk, "invalid_topic", c->drop_bad_topic);
    nx_pack_kv_u64(pk, "oversize", c->drop_oversize);
    nx_pack_kv_u64(pk, "malformed", c->drop_malformed);
    nx_pack_kv_u64(pk, "store", c->drop_store);
    nx_pack_kv_u64(pk, "send", c->drop_send);
    nx_pack_kv_u64(pk, "total",
                   c->drop_bad_topic + c->drop_oversize + c->drop_malformed + c->drop_store +
                       c->drop_send);

    nx_pack_kv_str(pk, "timestamp", nx_iso8601(now, iso));
    return 18;
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
    /*  payload: bin or str are the event's bytes as they are; any other
        msgpack value is stored as its msgpack encoding, so a client can
        send a map without packing it twice.                                */
    const msgpack_object *payload = nx_map_get(req, "payload");
    const void *data = "";
    size_t size = 0;
    msgpack_sbuffer packed;
    msgpack_sbuffer_init(&packed);
    if (payload && payload->type == MSGPACK_OBJECT_BIN) {
        data = payload->via.bin.ptr;
        size = payload->via.bin.size;
    } else if (payload && payload->type == MSGPACK_OBJECT_STR) {
        data = payload->via.str.ptr;
        size = payload->via.str.size;
    } else if (payload) {
        msgpack_packer ppk;
        msgpack_packer_init(&ppk, &packed, msgpack_sbuffer_write);
        msgpack_pack_object(&ppk, *payload);
        data = packed.data;
        size = packed.size;
    }
    uint64_t seq = 0;
    *err = nx_broker_emit(self, topic, topic_len, source, source_len, data, size, &seq, err_msg);
    msgpack_sbuffer_destroy(&packed);
    if (*err)
        return -1;
    nx_pack_kv_u64(pk, "seq", seq);
    nx_pack_kv_u64(pk, "ts", self->last_ts);
    return 2;
}

/*  ---- history ----------------------------------------------------------
    Patterns, bounds and a page size come in; events matching any pattern
    go out in seq order (or reverse), with a cursor when the page was cut
    short by `limit` or by the scan budget (history_scan), so one query can
    never hold the loop for long.                                            */

typedef struct {
    const char *ptr[S_PATTERNS_MAX];
    size_t len[S_PATTERNS_MAX];
    size_t count; /* 0: every event                                         */
} s_patterns_t;

static bool s_patterns_match(const s_patterns_t *p, const nx_record_t *rec)
{
    if (p->count == 0)
        return true;
    for (size_t i = 0; i < p->count; i++)
        if (nx_pattern_match(p->ptr[i], p->len[i], rec->topic, rec->topic_len))
            return true;
    return false;
}

static int s_read_patterns(const msgpack_object *req, s_patterns_t *p, nexus_err_t *err,
                           char *err_msg)
{
    p->count = 0;
    const char *one = NULL;
    size_t one_len = 0;
    const msgpack_object_array *many = NULL;
    if ((*err = nx_map_str(req, "pattern", &one, &one_len, err_msg)) ||
        (*err = nx_map_str_array(req, "patterns", &many, err_msg)))
        return -1;
    if (one) {
        p->ptr[0] = one;
        p->len[0] = one_len;
        p->count = 1;
    }
    if (many) {
        if (many->size + p->count > S_PATTERNS_MAX)
            return s_fail(err, NEXUS_ERR_BAD_REQUEST, err_msg, "at most 64 patterns per query");
        for (uint32_t i = 0; i < many->size; i++) {
            p->ptr[p->count] = many->ptr[i].via.str.ptr;
            p->len[p->count] = many->ptr[i].via.str.size;
            p->count++;
        }
    }
    for (size_t i = 0; i < p->count; i++) {
        if (!nx_pattern_valid(p->ptr[i], p->len[i])) {
            *err = NEXUS_ERR_BAD_PATTERN;
            snprintf(err_msg, NX_ERRMSG_MAX, "invalid pattern '%.*s'",
                     (int)(p->len[i] > 64 ? 64 : p->len[i]), p->ptr[i]);
            return -1;
        }
        /*  A pattern that matches everything makes the filter moot.       */
        if (nx_pattern_prefix(p->ptr[i], p->len[i]) == 0 &&
            (p->len[i] == 1 || (p->len[i] == 9 && memcmp(p->ptr[i], "broadcast", 9) == 0))) {
            p->count = 0;
            break;
        }
    }
    return 0;
}

static int s_op_history(nx_broker_t *self, const msgpack_object *req, msgpack_packer *pk,
                        nexus_err_t *err, char *err_msg)
{
    s_patterns_t patterns;
    if (s_read_patterns(req, &patterns, err, err_msg))
        return -1;
    uint64_t since_seq = 0, since_time = 0, until_seq = UINT64_MAX, until_time = UINT64_MAX;
    uint64_t limit = 100, cursor = 0;
    const char *order = "asc";
    size_t order_len = 3;
    if ((*err = nx_map_u64(req, "since_seq", &since_seq, err_msg)) ||
        (*err = nx_map_u64(req, "since_time", &since_time, err_msg)) ||
        (*err = nx_map_u64(req, "until_seq", &until_seq, err_msg)) ||
        (*err = nx_map_u64(req, "until_time", &until_time, err_msg)) ||
        (*err = nx_map_u64(req, "limit", &limit, err_msg)) ||
        (*err = nx_map_u64(req, "cursor", &cursor, err_msg)) ||
        (*err = nx_map_str(req, "order", &order, &order_len, err_msg)))
        return -1;
    bool desc;
    if (order_len == 3 && memcmp(order, "asc", 3) == 0)
        desc = false;
    else if (order_len == 4 && memcmp(order, "desc", 4) == 0)
        desc = true;
    else
        return s_fail(err, NEXUS_ERR_BAD_REQUEST, err_msg, "field 'order' must be 'asc' or 'desc'");
    if (limit == 0 || limit > self->cfg.history_limit) {
        *err = NEXUS_ERR_BAD_REQUEST;
        snprintf(err_msg, NX_ERRMSG_MAX, "field 'limit' must be 1..%" PRIu64,
                 self->cfg.history_limit);
        return -1;
    }

    nx_store_reader_t *reader = nx_store_reader_new(self->store);
    if (!reader)
        return s_fail(err, NEXUS_ERR_STORE, err_msg, nx_store_errmsg(self->store));

    /*  Turn every bound into an inclusive seq range [lo, hi].              */
    uint64_t lo = since_seq + 1, hi = until_seq;
    if (since_time) {
        uint64_t at = nx_store_reader_seq_at_time(reader, since_time);
        if (at > lo)
            lo = at;
    }
    if (until_time != UINT64_MAX) {
        uint64_t after = until_time == UINT64_MAX
                             ? UINT64_MAX
                             : nx_store_reader_seq_at_time(reader, until_time + 1);
        if (after == 0)
            hi = 0;
        else if (after - 1 < hi)
            hi = after - 1;
    }
    if (cursor) {
        if (desc && cursor < hi)
            hi = cursor;
        if (!desc && cursor > lo)
            lo = cursor;
    }

    msgpack_sbuffer events;
    msgpack_sbuffer_init(&events);
    msgpack_packer epk;
    msgpack_packer_init(&epk, &events, msgpack_sbuffer_write);
    uint64_t found = 0, scanned = 0, next = 0, seq = 0;
    bool more = false;
    if (lo <= hi) {
        nx_store_reader_seek(reader, desc ? hi : lo, desc);
        nx_record_t rec;
        int rc;
        while ((rc = nx_store_reader_next(reader, &seq, &rec)) == 1) {
            if (seq < lo || seq > hi)
                break;
            if (found == limit || scanned == self->cfg.history_scan) {
                more = true;
                next = seq;
                break;
            }
            scanned++;
            if (s_patterns_match(&patterns, &rec)) {
                nx_pack_event(&epk, seq, &rec);
                found++;
            }
        }
        if (rc < 0) {
            msgpack_sbuffer_destroy(&events);
            nx_store_reader_destroy(&reader);
            return s_fail(err, NEXUS_ERR_STORE, err_msg, "history record does not decode");
        }
    }
    nx_store_stats_t st;
    nx_store_stats(self->store, &st);
    nx_store_reader_destroy(&reader);

    nx_pack_str(pk, "events");
    msgpack_pack_array(pk, (uint32_t)found);
    msgpack_sbuffer_write(pk->data, events.data, events.size);
    msgpack_sbuffer_destroy(&events);
    nx_pack_str(pk, "next_cursor");
    if (more)
        msgpack_pack_uint64(pk, next);
    else
        msgpack_pack_nil(pk);
    nx_pack_kv_u64(pk, "scanned", scanned);
    nx_pack_kv_u64(pk, "first_seq", st.first_seq);
    nx_pack_kv_u64(pk, "last_seq", st.last_seq);
    return 5;
}

/*  ---- The table -------------------------------------------------------- */

static const nx_op_t s_ops[] = {
    {"ping", s_op_ping, false, false},
    {"health", s_op_health, false, false},
    {"state", s_op_state, false, false},
    {"publish", s_op_publish, true, false},
    {"history", s_op_history, false, false},
    {"session.register", nx_op_session_register, true, false},
    {"session.heartbeat", nx_op_session_heartbeat, true, false},
    {"session.status", nx_op_session_status, true, true},
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
