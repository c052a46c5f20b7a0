/*  =========================================================================
    nx_gw_actions - the WebSocket protocol of docs/gateway.md (the NEXUS
    event bus protocol, extended), run on the worker thread. One function
    per action, in a table; each reads its fields, asks the broker through
    the gateway's libnexus client, and answers with a reply.
    =========================================================================
*/

#include <msgpack.h>
#include <inttypes.h>
#include <string.h>

#include "nx_base64.h"
#include "nx_gw.h"
#include "nx_log.h"
#include "nx_topic.h"

/*  ---- Shared helpers ---------------------------------------------------- */

json_t *nx_gw_request(nx_gw_t *gw, json_t *request, nexus_err_t *err)
{
    *err = NEXUS_ERR_NOMEM;
    if (!request)
        return NULL;
    if (gw->cfg.broker_token && *gw->cfg.broker_token && !json_object_get(request, "token"))
        json_object_set_new(request, "token", json_string(gw->cfg.broker_token));
    char *text = json_dumps(request, JSON_COMPACT);
    json_decref(request);
    if (!text)
        return NULL;
    char *reply = NULL;
    *err = nexus_request_json(gw->client, text, &reply);
    free(text);
    json_t *obj = reply ? json_loads(reply, JSON_ALLOW_NUL, NULL) : NULL;
    free(reply);
    return obj;
}

json_t *nx_gw_payload_bin(const json_t *payload)
{
    /*  The broker stores a bin payload as its bytes and any other value as
        its msgpack encoding; clients see the stored bytes decoded as
        msgpack. A JSON {"$base64":"AQ=="} packs to bin, so sent as it is
        it would be stored as the byte 01 and come back as 1. Sending the
        msgpack encoding as bin, as nexus_publish_json does, stores exactly
        what is decoded later, for every JSON value.                       */
    char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t size = 0;
    void *packed = text ? nexus_json_to_msgpack(text, &size) : NULL;
    free(text);
    char *b64 = packed ? nx_base64_encode(packed, size) : NULL;
    free(packed);
    json_t *bin = b64 ? json_pack("{s:s}", "$base64", b64) : NULL;
    free(b64);
    return bin;
}

char *nx_gw_event_json(nexus_event_t *event, size_t *len)
{
    zchunk_t *out = zchunk_new(NULL, 256);
    char head[64], iso[40];
    snprintf(head, sizeof head,
             "{\"type\":\"event\",\"seq\":%" PRIu64 ",\"event_type\":", nexus_event_seq(event));
    zchunk_extend(out, head, strlen(head));
    const char *topic = nexus_event_topic(event), *source = nexus_event_source(event);
    nx_gw_json_str(out, topic, strlen(topic));
    zchunk_extend(out, ",\"session_id\":", 14);
    nx_gw_json_str(out, source, strlen(source));
    zchunk_extend(out, ",\"payload\":", 11);
    const char *payload = nexus_event_payload_json(event);
    if (!payload)
        payload = "null";
    zchunk_extend(out, payload, strlen(payload));
    zchunk_extend(out, ",\"timestamp\":\"", 14);
    nx_iso8601(nexus_event_ts(event), iso);
    zchunk_extend(out, iso, strlen(iso));
    zchunk_extend(out, "\"}", 3); /* with the terminator */
    *len = zchunk_size(out) - 1;
    char *text = malloc(zchunk_size(out));
    if (text)
        memcpy(text, zchunk_data(out), zchunk_size(out));
    zchunk_destroy(&out);
    return text;
}

static int s_b64(char c)
{
    return c >= 'A' && c <= 'Z'   ? c - 'A'
           : c >= 'a' && c <= 'z' ? c - 'a' + 26
           : c >= '0' && c <= '9' ? c - '0' + 52
           : c == '+'             ? 62
           : c == '/'             ? 63
                                  : -1;
}

/*  Decodes base64 text; returns a malloc'd buffer and *len, or NULL.       */
static uint8_t *s_base64_decode(const char *text, size_t *len)
{
    size_t n = strlen(text);
    uint8_t *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && text[i] != '='; i++) {
        int v = s_b64(text[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *len = o;
    return out;
}

json_t *nx_gw_event_from_record(json_t *rec)
{
    /*  {seq, ts, topic, source, payload} as the SDK turns a history reply
        into JSON: the payload bytes arrive as {"$base64": ...}; they are
        msgpack, shown to clients as JSON like live events.                */
    char iso[40];
    json_t *ev = json_pack("{s:s, s:O, s:O, s:O}", "type", "event", "seq",
                           json_object_get(rec, "seq"), "event_type", json_object_get(rec, "topic"),
                           "session_id", json_object_get(rec, "source"));
    if (!ev)
        return json_null();
    json_t *payload = json_object_get(rec, "payload");
    const char *b64 = json_string_value(json_object_get(payload, "$base64"));
    json_t *shown = NULL;
    size_t len = 0;
    uint8_t *bytes = b64 ? s_base64_decode(b64, &len) : NULL;
    if (bytes) {
        char *text = len ? nexus_msgpack_to_json(bytes, len) : strdup("null");
        shown = text ? json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
        free(text);
        free(bytes);
    }
    json_object_set_new(ev, "payload",
                        shown ? shown : json_incref(payload ? payload : json_null()));
    json_object_set_new(
        ev, "timestamp",
        json_string(nx_iso8601((uint64_t)json_integer_value(json_object_get(rec, "ts")), iso)));
    return ev;
}

bool nx_gw_event_visible(const json_t *ev, const char *session)
{
    const char *type = json_string_value(json_object_get(ev, "event_type"));
    if (!type || strcmp(type, "message.direct") != 0)
        return true;
    if (!session)
        return false;
    const char *to = json_string_value(json_object_get(json_object_get(ev, "payload"), "to"));
    const char *from = json_string_value(json_object_get(ev, "session_id"));
    return (to && strcmp(to, session) == 0) || (from && strcmp(from, session) == 0);
}

const char *nx_gw_direct_target(const char *type, json_t *msg, json_t *payload)
{
    if (strcmp(type, "message.direct") != 0)
        return NULL;
    if (!json_is_object(payload))
        return "a message.direct needs an object payload: its 'to' travels in it";
    json_t *to = json_object_get(msg, "to");
    if (json_is_string(to) && !json_object_get(payload, "to"))
        json_object_set(payload, "to", to);
    json_t *target_v = json_object_get(payload, "to");
    if (!target_v)
        target_v = to; /* not a string: named in the error */
    const char *target = json_string_value(target_v);
    if (target && nx_session_id_valid(target, strlen(target)))
        return NULL;
    return target_v ? "field 'to' must be a session id (1..64 of [A-Za-z0-9_:@-])"
                    : "field 'to' (a session id) is missing";
}

bool nx_gw_event_text_visible(const char *text, size_t len, const char *session)
{
    /*  Only direct messages need a look inside.                           */
    if (!memmem(text, len, "\"message.direct\"", 16))
        return true;
    json_t *ev = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    bool visible = ev ? nx_gw_event_visible(ev, session) : false;
    json_decref(ev);
    return visible;
}

/*  Queues text to conn if it is still there.                               */
static void s_send(nx_gw_t *gw, uint64_t conn_id, const char *text)
{
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    if (conn) {
        nx_gw_conn_push_text(gw, conn, text);
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    nx_gw_wake(gw);
}

void nx_gw_reply(nx_gw_t *gw, uint64_t conn_id, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    /*  A reply that could never fit the client's send queue (a history page
        of large events) becomes a too_large error here, before the lock,
        rather than in the queue's own check under it.                     */
    char *fitted = text ? nx_gw_fit(gw, text, strlen(text)) : NULL;
    if (fitted) {
        free(text);
        text = fitted;
    }
    if (text)
        s_send(gw, conn_id, text);
    free(text);
}

nexus_err_t nx_gw_ensure_session(nx_gw_t *gw, const char *session, const char *name,
                                 const char *capabilities, uint64_t ttl_ms)
{
    json_t *req = json_pack("{s:s, s:s, s:I}", "op", "session.register", "session", session,
                            "heartbeat_ms", (json_int_t)gw->cfg.heartbeat);
    if (name)
        json_object_set_new(req, "name", json_string(name));
    if (capabilities) {
        json_t *caps = json_array();
        char *copy = strdup(capabilities), *save = NULL;
        for (char *c = strtok_r(copy, ",", &save); c; c = strtok_r(NULL, ",", &save))
            if (*c)
                json_array_append_new(caps, json_string(c));
        free(copy);
        json_object_set_new(req, "capabilities", caps);
    }
    if (ttl_ms)
        json_object_set_new(req, "ttl_ms", json_integer((json_int_t)ttl_ms));
    json_object_set_new(req, "metadata", json_pack("{s:s}", "via", "nexus-gateway"));
    nexus_err_t err;
    json_t *rep = nx_gw_request(gw, req, &err);
    json_decref(rep);
    return err;
}

/*  The fields of a broker error reply beyond id, ok, error and message
    (a denied claim names the holder): a new object.                       */
json_t *nx_gw_error_extra(json_t *rep)
{
    json_t *extra = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(rep, k, v)
    {
        if (strcmp(k, "id") && strcmp(k, "ok") && strcmp(k, "error") && strcmp(k, "message"))
            json_object_set(extra, k, v);
    }
    return extra;
}

/*  ---- Replies ---------------------------------------------------------- */

typedef struct {
    nx_gw_t *gw;
    uint64_t conn; /* the connection asking                         */
    char session[NX_GW_SESSION_MAX + 1];
    json_t *msg;        /* the parsed message                            */
    json_t *id;         /* its id, or NULL                               */
    const char *action; /* its action                                    */
} s_ctx_t;

static json_t *s_reply_new(s_ctx_t *ctx, bool ok)
{
    json_t *r = json_pack("{s:s, s:b}", "type", "reply", "ok", ok);
    if (ctx->id)
        json_object_set(r, "id", ctx->id);
    if (ctx->action)
        json_object_set_new(r, "action", json_string(ctx->action));
    return r;
}

/*  Errors are always answered, with or without an id.                      */
static void s_error(s_ctx_t *ctx, const char *code, const char *message, json_t *extra)
{
    json_t *r = s_reply_new(ctx, false);
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", message);
    if (extra)
        json_object_update(e, extra);
    json_object_set_new(r, "error", e);
    __atomic_add_fetch(&ctx->gw->stats.errors, 1, __ATOMIC_RELAXED);
    nx_gw_reply(ctx->gw, ctx->conn, r);
}

/*  Successes are answered only when the request had an id.                 */
static void s_ok(s_ctx_t *ctx, json_t *fields)
{
    if (!ctx->id) {
        json_decref(fields);
        return;
    }
    json_t *r = s_reply_new(ctx, true);
    if (fields)
        json_object_update(r, fields);
    json_decref(fields);
    nx_gw_reply(ctx->gw, ctx->conn, r);
}

/*  Sends a broker request and answers from its reply: on success the
    fields named in keep (NULL-terminated) are copied into the reply.       */
static void s_broker(s_ctx_t *ctx, json_t *req, const char *const *keep)
{
    nexus_err_t err;
    json_t *rep = nx_gw_request(ctx->gw, req, &err);
    if (!rep) {
        s_error(ctx, "unavailable", nexus_strerror(err), NULL);
        return;
    }
    if (!json_is_true(json_object_get(rep, "ok"))) {
        const char *code = json_string_value(json_object_get(rep, "error"));
        const char *message = json_string_value(json_object_get(rep, "message"));
        json_t *extra = nx_gw_error_extra(rep);
        s_error(ctx, code ? code : "internal", message ? message : "broker error", extra);
        json_decref(extra);
    } else {
        json_t *fields = json_object();
        for (size_t i = 0; keep && keep[i]; i++) {
            json_t *v = json_object_get(rep, keep[i]);
            if (v)
                json_object_set(fields, keep[i], v);
        }
        s_ok(ctx, fields);
    }
    json_decref(rep);
}

/*  Copies the listed fields of the message into a broker request.         */
static void s_copy(json_t *req, json_t *msg, const char *const *fields)
{
    for (size_t i = 0; fields[i]; i++) {
        json_t *v = json_object_get(msg, fields[i]);
        if (v)
            json_object_set(req, fields[i], v);
    }
}

/*  "is missing" only when it is: a field of the wrong type is named so.   */
static bool s_need_string(s_ctx_t *ctx, const char *field)
{
    json_t *v = json_object_get(ctx->msg, field);
    if (json_is_string(v))
        return true;
    char text[128];
    snprintf(text, sizeof text,
             v ? "field '%s' must be a string" : "field '%s' (a string) is missing", field);
    s_error(ctx, "bad_request", text, NULL);
    return false;
}

static bool s_need_integer(s_ctx_t *ctx, const char *field)
{
    json_t *v = json_object_get(ctx->msg, field);
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        return true;
    char text[128];
    snprintf(text, sizeof text,
             v ? "field '%s' must be a non-negative integer"
               : "field '%s' (a non-negative integer) is missing",
             field);
    s_error(ctx, "bad_request", text, NULL);
    return false;
}

/*  ---- Actions ----------------------------------------------------------- */

/*  Reads "topics" (array of patterns; a string is taken as one).          */
static json_t *s_topics(s_ctx_t *ctx)
{
    json_t *t = json_object_get(ctx->msg, "topics");
    /*  A single pattern is checked like the patterns of an array.          */
    t = json_is_string(t) ? json_pack("[O]", t) : json_incref(t);
    if (!json_is_array(t) || json_array_size(t) == 0) {
        json_decref(t);
        s_error(ctx, "bad_request", "field 'topics' must be a non-empty array of patterns", NULL);
        return NULL;
    }
    size_t i;
    json_t *p;
    json_array_foreach(t, i, p)
    {
        const char *s = json_string_value(p);
        if (!s || !nx_pattern_valid(s, strlen(s))) {
            char text[200];
            snprintf(text, sizeof text, "invalid pattern %.100s%s%s", s ? "'" : "",
                     s ? s : "(not a string)", s ? "'" : "");
            json_decref(t);
            s_error(ctx, "bad_pattern", text, NULL);
            return NULL;
        }
    }
    return t;
}

static json_t *s_current_topics(nx_gw_conn_t *conn)
{
    json_t *a = json_array();
    for (size_t i = 0; i < conn->n_patterns; i++)
        json_array_append_new(a, json_string(conn->patterns[i]));
    return a;
}

static bool s_has_pattern(char *const *patterns, size_t n, const char *s)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(patterns[k], s) == 0)
            return true;
    return false;
}

/*  Adds the patterns of topics that conn does not have yet, all or none:
    a subscribe that would pass NX_GW_PATTERNS (or finds no memory) leaves
    the set as it was, so the error reply tells the whole truth.          */
static const char *s_add_patterns(nx_gw_conn_t *conn, json_t *topics)
{
    char *fresh[NX_GW_PATTERNS];
    size_t n_fresh = 0;
    const char *err = NULL;
    size_t i;
    json_t *p;
    json_array_foreach(topics, i, p)
    {
        const char *s = json_string_value(p);
        if (s_has_pattern(conn->patterns, conn->n_patterns, s) || s_has_pattern(fresh, n_fresh, s))
            continue;
        if (conn->n_patterns + n_fresh == NX_GW_PATTERNS) {
            err = "at most 64 subscriptions per connection: none of these was added";
            break;
        }
        if (!(fresh[n_fresh] = strdup(s))) {
            err = "out of memory: none of these subscriptions was added";
            break;
        }
        n_fresh++;
    }
    for (size_t k = 0; k < n_fresh; k++) {
        if (err)
            free(fresh[k]);
        else
            conn->patterns[conn->n_patterns++] = fresh[k];
    }
    return err;
}

static void a_subscribe(s_ctx_t *ctx)
{
    json_t *topics = s_topics(ctx);
    if (!topics)
        return;
    nx_gw_t *gw = ctx->gw;
    uint64_t replay_from = 0;
    const char *refused = NULL;
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, ctx->conn);
    json_t *now = NULL;
    if (conn) {
        refused = s_add_patterns(conn, topics);
        /*  A connection opened with ?since= replays from there with its
            first subscription; live events are held until it catches up.   */
        if (!refused && conn->resume_from) {
            replay_from = conn->resume_from;
            conn->resume_from = 0;
            conn->replaying = true;
            conn->last_seq = replay_from - 1;
        }
        now = s_current_topics(conn);
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    json_decref(topics);
    if (!now)
        return;
    if (refused)
        s_error(ctx, "bad_request", refused, NULL);
    else
        s_ok(ctx, json_pack("{s:o}", "topics", json_incref(now)));
    json_decref(now);
    if (replay_from)
        nx_gw_replay(gw, ctx->conn, replay_from - 1);
}

static void a_unsubscribe(s_ctx_t *ctx)
{
    json_t *topics = s_topics(ctx);
    if (!topics)
        return;
    nx_gw_t *gw = ctx->gw;
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, ctx->conn);
    json_t *now = NULL;
    if (conn) {
        size_t i;
        json_t *p;
        json_array_foreach(topics, i, p)
        {
            for (size_t k = 0; k < conn->n_patterns; k++)
                if (strcmp(conn->patterns[k], json_string_value(p)) == 0) {
                    free(conn->patterns[k]);
                    conn->patterns[k] = conn->patterns[--conn->n_patterns];
                    break;
                }
        }
        now = s_current_topics(conn);
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    json_decref(topics);
    if (now)
        s_ok(ctx, json_pack("{s:o}", "topics", now));
}

static void a_publish(s_ctx_t *ctx)
{
    json_t *type_v = json_object_get(ctx->msg, "event_type");
    if (!type_v)
        type_v = json_object_get(ctx->msg, "topic");
    const char *type = json_string_value(type_v);
    if (!type) {
        s_error(ctx, "bad_request",
                type_v ? "field 'event_type' must be a string (a topic)"
                       : "field 'event_type' (a string) is missing",
                NULL);
        return;
    }
    if (!nx_topic_valid(type, strlen(type))) {
        s_error(ctx, "bad_topic",
                "event_type must be dot-separated tokens with no spaces or wildcards", NULL);
        return;
    }
    json_t *payload = json_object_get(ctx->msg, "payload");
    payload = payload ? json_incref(payload) : json_object();
    const char *bad_target = nx_gw_direct_target(type, ctx->msg, payload);
    if (bad_target) {
        json_decref(payload);
        s_error(ctx, "bad_request", bad_target, NULL);
        return;
    }
    json_t *bin = nx_gw_payload_bin(payload);
    json_decref(payload);
    if (!bin) {
        s_error(ctx, "internal", "out of memory", NULL);
        return;
    }
    /*  The source is the connection's session, whatever the JSON says.    */
    json_t *req = json_pack("{s:s, s:s, s:o, s:s}", "op", "publish", "topic", type, "payload", bin,
                            "source", ctx->session);
    __atomic_add_fetch(&ctx->gw->stats.events_in, 1, __ATOMIC_RELAXED);
    static const char *const keep[] = {"seq", NULL};
    s_broker(ctx, req, keep);
}

static void s_work(s_ctx_t *ctx, const char *op, bool need_token, const char *const *fields,
                   const char *const *keep)
{
    if (!s_need_string(ctx, "work_id") || (need_token && !s_need_integer(ctx, "token")))
        return;
    json_t *req = json_pack("{s:s, s:s}", "op", op, "session", ctx->session);
    s_copy(req, ctx->msg, fields);
    s_broker(ctx, req, keep);
}

static void a_claim(s_ctx_t *ctx)
{
    static const char *const f[] = {"work_id", "ttl_ms", "description", "metadata", NULL};
    static const char *const k[] = {"work_id", "token", "expires_at", "holder", NULL};
    s_work(ctx, "work.claim", false, f, k);
}

static void a_renew(s_ctx_t *ctx)
{
    static const char *const f[] = {"work_id", "token", "ttl_ms", NULL};
    static const char *const k[] = {"work_id", "token", "expires_at", NULL};
    s_work(ctx, "work.renew", true, f, k);
}

static void a_release(s_ctx_t *ctx)
{
    static const char *const f[] = {"work_id", "token", "reason", NULL};
    static const char *const k[] = {"work_id", "state", NULL};
    s_work(ctx, "work.release", true, f, k);
}

static void a_complete(s_ctx_t *ctx)
{
    static const char *const f[] = {"work_id", "token", "result", NULL};
    static const char *const k[] = {"work_id", "state", NULL};
    s_work(ctx, "work.complete", true, f, k);
}

static void a_status(s_ctx_t *ctx)
{
    json_t *req = json_pack("{s:s, s:s}", "op", "session.status", "session", ctx->session);
    static const char *const f[] = {"state", "current_work", "text", NULL};
    s_copy(req, ctx->msg, f);
    static const char *const k[] = {"session", NULL};
    s_broker(ctx, req, k);
}

static void a_sessions(s_ctx_t *ctx)
{
    json_t *cap = json_object_get(ctx->msg, "capability");
    json_t *avail = json_object_get(ctx->msg, "available");
    bool find = cap || json_is_true(avail);
    json_t *req = json_pack("{s:s}", "op", find ? "session.find" : "session.list");
    static const char *const f[] = {"capability", "capabilities", "available", NULL};
    s_copy(req, ctx->msg, f);
    static const char *const k[] = {"sessions", NULL};
    s_broker(ctx, req, k);
}

static void a_claims(s_ctx_t *ctx)
{
    json_t *req = json_pack("{s:s}", "op", "work.list");
    static const char *const f[] = {"holder", "state", "prefix", "limit", NULL};
    s_copy(req, ctx->msg, f);
    static const char *const k[] = {"claims", "truncated", NULL};
    s_broker(ctx, req, k);
}

static void a_ping(s_ctx_t *ctx)
{
    s_ok(ctx, json_pack("{s:I}", "ts", (json_int_t)nx_now_us()));
}

static void a_history(s_ctx_t *ctx)
{
    json_t *topics = json_object_get(ctx->msg, "topics");
    json_t *limit = json_object_get(ctx->msg, "limit");
    json_t *since = json_object_get(ctx->msg, "since_seq");
    json_t *cursor = json_object_get(ctx->msg, "cursor");
    json_t *order_v = json_object_get(ctx->msg, "order");
    const char *order = json_string_value(order_v);
    const char *bad = NULL;
    if (limit && (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
                  json_integer_value(limit) > 1000))
        bad = "field 'limit' must be an integer 1..1000";
    else if (since && (!json_is_integer(since) || json_integer_value(since) < 0))
        bad = "field 'since_seq' must be a non-negative integer";
    else if (cursor && !json_is_null(cursor) &&
             (!json_is_integer(cursor) || json_integer_value(cursor) < 0))
        bad = "field 'cursor' must be the next_cursor of a previous page (an integer) or null";
    else if (order_v && (!order || (strcmp(order, "asc") && strcmp(order, "desc"))))
        bad = "field 'order' must be \"asc\" or \"desc\"";
    if (bad) {
        s_error(ctx, "bad_request", bad, NULL);
        return;
    }
    json_t *req = json_pack("{s:s, s:I}", "op", "history", "limit",
                            (json_int_t)(limit ? json_integer_value(limit) : 100));
    if (topics) {
        json_t *t = s_topics(ctx);
        if (!t) {
            json_decref(req);
            return;
        }
        json_object_set_new(req, "patterns", t);
    }
    static const char *const f[] = {"since_seq",  "since_time", "until_seq",
                                    "until_time", "order",      NULL};
    s_copy(req, ctx->msg, f);
    if (json_is_integer(cursor))
        json_object_set(req, "cursor", cursor);
    nexus_err_t err;
    json_t *rep = nx_gw_request(ctx->gw, req, &err);
    if (!rep || !json_is_true(json_object_get(rep, "ok"))) {
        const char *code = rep ? json_string_value(json_object_get(rep, "error")) : NULL;
        const char *message = rep ? json_string_value(json_object_get(rep, "message")) : NULL;
        s_error(ctx, code ? code : "unavailable", message ? message : nexus_strerror(err), NULL);
        json_decref(rep);
        return;
    }
    /*  Broker records {seq, ts, topic, source, payload(bin)} become client
        events: the payload bytes are msgpack, shown as JSON.              */
    json_t *events = json_array();
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(rep, "events"), i, rec)
    {
        json_t *ev = nx_gw_event_from_record(rec);
        if (nx_gw_event_visible(ev, ctx->session))
            json_array_append_new(events, ev);
        else
            json_decref(ev);
    }
    json_t *fields = json_pack(
        "{s:o, s:O}", "events", events, "next_cursor",
        json_object_get(rep, "next_cursor") ? json_object_get(rep, "next_cursor") : json_null());
    json_decref(rep);
    s_ok(ctx, fields);
}

static void a_resume(s_ctx_t *ctx)
{
    if (!s_need_integer(ctx, "since"))
        return;
    uint64_t since = (uint64_t)json_integer_value(json_object_get(ctx->msg, "since"));
    nx_gw_t *gw = ctx->gw;
    bool deferred = false;
    pthread_mutex_lock(&gw->lock);
    /*  Past the last seq: live events would be held back until they got
        there (after a broker reset, for ever). Resume from the last seq.  */
    if (since > gw->last_seq)
        since = gw->last_seq;
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, ctx->conn);
    if (conn) {
        if (conn->n_patterns == 0) {
            /*  Nothing subscribed: the replay waits for the first
                subscription, as with ?since=, rather than replay every
                topic now.                                                  */
            conn->resume_from = since + 1;
            deferred = true;
        } else {
            conn->replaying = true;
            conn->last_seq = since;
        }
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    size_t replayed = deferred ? 0 : nx_gw_replay(gw, ctx->conn, since);
    s_ok(ctx, json_pack("{s:I, s:I, s:b}", "since", (json_int_t)since, "replayed",
                        (json_int_t)replayed, "deferred", deferred));
}

typedef struct {
    const char *name;
    void (*fn)(s_ctx_t *ctx);
} s_action_t;

static const s_action_t s_actions[] = {
    {"subscribe", a_subscribe}, {"unsubscribe", a_unsubscribe},
    {"publish", a_publish},     {"claim", a_claim},
    {"renew", a_renew},         {"release", a_release},
    {"complete", a_complete},   {"history", a_history},
    {"resume", a_resume},       {"status", a_status},
    {"sessions", a_sessions},   {"claims", a_claims},
    {"ping", a_ping},
};

void nx_gw_action(nx_gw_t *gw, uint64_t conn_id, const char *text)
{
    s_ctx_t ctx = {gw, conn_id, "", NULL, NULL, NULL};
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    if (conn) {
        memcpy(ctx.session, conn->session, sizeof ctx.session);
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    if (!ctx.session[0])
        return; /* closed meanwhile */
    json_error_t jerr;
    ctx.msg = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(ctx.msg)) {
        char message[256];
        if (ctx.msg)
            snprintf(message, sizeof message, "a message must be a JSON object");
        else
            snprintf(message, sizeof message, "not valid JSON: %s (line %d, column %d)", jerr.text,
                     jerr.line, jerr.column);
        s_error(&ctx, "bad_json", message, NULL);
        json_decref(ctx.msg);
        return;
    }
    /*  An id that cannot be echoed would leave the client waiting for a
        reply that never names it: it is an error of its own (null is no id). */
    ctx.id = json_object_get(ctx.msg, "id");
    const char *bad_id = NULL;
    if (json_is_null(ctx.id))
        ctx.id = NULL;
    else if (ctx.id && !json_is_string(ctx.id) && !json_is_integer(ctx.id))
        bad_id = "field 'id' must be a string or an integer";
    else if (json_is_string(ctx.id) && json_string_length(ctx.id) > NX_GW_ID_MAX)
        bad_id = "field 'id' must be at most 256 bytes";
    json_t *action = json_object_get(ctx.msg, "action");
    if (json_is_string(action) && json_string_length(action) <= NX_GW_ID_MAX)
        ctx.action = json_string_value(action);
    if (bad_id) {
        ctx.id = NULL;
        s_error(&ctx, "bad_request", bad_id, NULL);
        json_decref(ctx.msg);
        return;
    }
    if (!ctx.action) {
        s_error(&ctx, "bad_request",
                json_is_string(action) ? "field 'action' is too long (no such action)"
                : action               ? "field 'action' must be a string"
                                       : "field 'action' (a string) is missing",
                NULL);
        json_decref(ctx.msg);
        return;
    }
    for (size_t i = 0; i < sizeof s_actions / sizeof s_actions[0]; i++)
        if (strcmp(s_actions[i].name, ctx.action) == 0) {
            s_actions[i].fn(&ctx);
            json_decref(ctx.msg);
            return;
        }
    char message[200];
    snprintf(message, sizeof message, "unknown action '%.64s'", ctx.action);
    s_error(&ctx, "unknown_action", message, NULL);
    json_decref(ctx.msg);
}

/*  ---- Replay ------------------------------------------------------------
    History after since for the connection's patterns, then the live
    events held meanwhile, in seq order, each once.                         */

/*  Queues msg, waiting for room while the client reads; gives up (closing
    the client) after slow_timeout.                                         */
/*  How long a replay waits for room in a client's queue. The one worker
    serves every connection: waiting up to slow_timeout for a client that
    does not read held up everyone else's requests for seconds.           */
#define S_REPLAY_WAIT_MS 250

/*  1: pushed (or already sent); 0: the connection is gone or closing; -1:
    no room within S_REPLAY_WAIT_MS.                                        */
static int s_push_paced(nx_gw_t *gw, uint64_t conn_id, nx_gw_msg_t *msg)
{
    uint64_t deadline = nx_gw_mono() + S_REPLAY_WAIT_MS * 1000;
    while (true) {
        pthread_mutex_lock(&gw->lock);
        nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
        if (!conn) {
            pthread_mutex_unlock(&gw->lock);
            return false;
        }
        bool room = nx_gw_conn_room(gw, conn, msg->len, msg->seq);
        if (room) {
            if (msg->seq > conn->last_seq) {
                nx_gw_conn_push(gw, conn, msg);
                __atomic_add_fetch(&gw->stats.events_out, 1, __ATOMIC_RELAXED);
            }
        } else
            nx_gw_conn_full(gw, conn); /* the slow-client clock runs */
        bool closing = !room && conn->close_code;
        nx_gw_conn_unref(gw, &conn);
        pthread_mutex_unlock(&gw->lock);
        nx_gw_wake(gw);
        if (room)
            return 1;
        if (closing)
            return 0;
        if (nx_gw_mono() > deadline)
            return -1;
        usleep(2000);
    }
}

/*  Ends a replay that cannot finish (history unreadable, out of memory,
    the fabric outrunning it): what it could not read is announced as a gap
    (after since, up to the first held event or the newest seq seen), then
    the held events go out and live events flow again. Never holds events
    for ever, never loses them silently.                                    */
static void s_replay_abandon(nx_gw_t *gw, uint64_t conn_id, uint64_t since)
{
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    if (conn) {
        uint64_t to = gw->last_seq;
        if (conn->n_held && !conn->held_overflow && conn->held[0]->seq > 0)
            to = conn->held[0]->seq - 1;
        if (to > since && to > conn->last_seq) {
            uint64_t from = since + 1 > conn->last_seq + 1 ? since + 1 : conn->last_seq + 1;
            if (!conn->lost_from || from < conn->lost_from)
                conn->lost_from = from;
            if (to > conn->lost_to)
                conn->lost_to = to;
            conn->last_seq = to; /* what comes next is past the gap */
        }
        for (size_t i = 0; i < conn->n_held; i++) {
            if (conn->held[i]->seq > conn->last_seq)
                nx_gw_conn_push(gw, conn, conn->held[i]);
            nx_gw_msg_unref(&conn->held[i]);
        }
        conn->n_held = 0;
        conn->held_overflow = false;
        conn->replaying = false;
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    nx_gw_wake(gw);
}

size_t nx_gw_replay(nx_gw_t *gw, uint64_t conn_id, uint64_t since)
{
    size_t replayed = 0;
    int failures = 0;
    for (int round = 0; round < 100; round++) {
        nexus_history_t *h = nexus_history_new(gw->client);
        if (!h) {
            s_replay_abandon(gw, conn_id, since);
            return replayed;
        }
        char session[NX_GW_SESSION_MAX + 1] = "";
        pthread_mutex_lock(&gw->lock);
        nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
        bool open = conn != NULL;
        if (conn) {
            for (size_t i = 0; i < conn->n_patterns; i++)
                nexus_history_add_pattern(h, conn->patterns[i]);
            snprintf(session, sizeof session, "%s", conn->session);
            nx_gw_conn_unref(gw, &conn);
        }
        pthread_mutex_unlock(&gw->lock);
        if (!open) {
            nexus_history_destroy(&h);
            return replayed;
        }
        nexus_history_set_seq_range(h, since, 0);
        nexus_history_set_page(h, 1000, 0);
        nexus_event_t *ev = NULL;
        bool alive = true;
        nexus_err_t err = NEXUS_OK;
        while (alive && (err = nexus_history_next(h, &ev)) == NEXUS_OK && ev) {
            size_t len;
            char *text = nx_gw_event_json(ev, &len);
            nx_gw_msg_t *msg = text && nx_gw_event_text_visible(text, len, session)
                                   ? nx_gw_msg_new(text, len, nexus_event_seq(ev))
                                   : NULL;
            free(text);
            since = nexus_event_seq(ev);
            nexus_event_destroy(&ev);
            int pushed = 1;
            if (msg) {
                pushed = s_push_paced(gw, conn_id, msg);
                replayed += pushed == 1;
                pthread_mutex_lock(&gw->lock);
                nx_gw_msg_unref(&msg);
                pthread_mutex_unlock(&gw->lock);
            }
            if (pushed == -1) {
                /*  The client does not read: the rest is a gap it can
                    resume from later (or the slow-client rule closes it),
                    and the worker goes back to everyone else.              */
                nexus_history_destroy(&h);
                s_replay_abandon(gw, conn_id, since - 1);
                return replayed;
            }
            alive = pushed == 1;
        }
        nexus_history_destroy(&h);
        if (!alive)
            return replayed;
        if (err != NEXUS_OK) {
            /*  The broker is busy or away: try again a little later, then
                give up with a gap rather than hold live events for ever.  */
            nx_warn("replay for connection %" PRIu64 " after seq %" PRIu64 ": %s", conn_id, since,
                    nexus_strerror(err));
            if (++failures >= 3) {
                s_replay_abandon(gw, conn_id, since);
                return replayed;
            }
            usleep(200000);
            continue;
        }
        /*  Now the events held while we read: those past the history.     */
        pthread_mutex_lock(&gw->lock);
        conn = nx_gw_conn_get(gw, conn_id);
        bool again = false;
        if (conn) {
            for (size_t i = 0; i < conn->n_held; i++) {
                if (!conn->held_overflow && conn->held[i]->seq > conn->last_seq)
                    nx_gw_conn_push(gw, conn, conn->held[i]);
                nx_gw_msg_unref(&conn->held[i]);
            }
            conn->n_held = 0;
            again = conn->held_overflow;
            conn->held_overflow = false;
            if (again)
                since = conn->last_seq; /* read on from the history */
            else
                conn->replaying = false;
            nx_gw_conn_unref(gw, &conn);
        }
        pthread_mutex_unlock(&gw->lock);
        nx_gw_wake(gw);
        if (!again)
            return replayed;
    }
    s_replay_abandon(gw, conn_id, since); /* the fabric outran us */
    return replayed;
}
