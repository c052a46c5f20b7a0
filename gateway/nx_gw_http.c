/*  =========================================================================
    nx_gw_http - the HTTP endpoints of docs/gateway.md (seed 000's REST API
    and ours), run on the worker thread. Each handler fills the
    connection's status and body; the lws thread writes them out.
    =========================================================================
*/

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "nx_error.h"
#include "nx_front.h"
#include "nx_front_event.h"
#include "nx_gw.h"
#include "nx_jdump.h"
#include "nx_optab.h"
#include "nx_log.h"
#include "nx_mcp.h"
#include "nx_topic.h"

typedef struct {
    nx_gw_t *gw;
    int method;       /* NX_GW_GET, NX_GW_POST, ...                         */
    char path[512];   /* decoded path                                       */
    char query[1024]; /* decoded arguments, as in nx_gw_conn_t             */
    char *body;       /* request body (NUL-terminated), may be NULL          */
    size_t body_len;  /* its bytes (a NUL inside is refused)                */
    bool body_too_large;
    json_t *json;         /* parsed body (POST), or NULL                        */
    int status;           /* answer                                             */
    char *out;            /* answer body                                        */
    const char *type;     /* content type                                       */
    const void *auth;     /* nx_auth handle of the request's token              */
    const char *allow;    /* 405: the methods the path takes (static)         */
    const char *op;       /* the op of the route, when it is one               */
    uint64_t conn;        /* the connection                                    */
    char mcp_in[40];      /* its Mcp-Session-Id                                */
    char mcp_version[32]; /* its MCP-Protocol-Version                      */
    char mcp_out[40];     /* the answer's                                      */
    bool parked;          /* answered later (/mcp wait_for_events)             */
    char peer[64];        /* client address                                     */
} s_req_t;

static void s_answer(s_req_t *r, int status, json_t *body)
{
    r->status = status;
    r->type = "application/json";
    free(r->out);
    r->out = nx_json_dumps(body, JSON_COMPACT);
    json_decref(body);
}

static void s_error(s_req_t *r, int status, const char *code, const char *message, json_t *extra)
{
    json_t *e = json_pack("{s:s, s:o}", "code", code, "message", nx_front_text(message));
    if (extra)
        json_object_update(e, extra);
    __atomic_add_fetch(&r->gw->stats.errors, 1, __ATOMIC_RELAXED);
    s_answer(r, status, json_pack("{s:o}", "error", e));
}

/*  Answers an op handler's error with its status (the error table's).   */
static void s_fail(s_req_t *r, nx_front_err_t *err)
{
    s_error(r, err->status ? err->status : 500, err->code, err->message, err->extra);
    nx_front_err_reset(err);
}

/*  Runs op with fields (stolen) and returns the reply's fields (less id
    and ok), or answers the error and returns NULL.                        */
static json_t *s_call(s_req_t *r, const char *op, json_t *fields)
{
    nx_front_err_t err = {0};
    json_t *rep = NULL;
    if (nx_gw_broker_away(r->gw, &err))
        json_decref(fields);
    else
        rep = nx_front_call(r->gw->client, op, fields, &err);
    if (!rep)
        s_fail(r, &err);
    return rep;
}

/*  The same for a broker call whose failure is part of the answer
    (/health, /state, /dependencies): NULL when it failed.                 */
static json_t *s_probe(s_req_t *r, const char *op)
{
    nx_front_err_t err = {0};
    json_t *rep = nx_gw_broker_away(r->gw, &err)
                      ? NULL
                      : nx_front_call(r->gw->client, op, json_object(), &err);
    nx_front_err_reset(&err);
    return rep;
}

/*  ---- Query strings ---------------------------------------------------- */

/*  Copies the value of argument name into out; returns out, or NULL when
    absent. The arguments came decoded from lws: no decoding here.          */
static const char *s_arg(s_req_t *r, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    const char *q = r->query, *q_end = r->query + sizeof r->query;
    while (q < q_end && *q) {
        size_t len = strnlen(q, (size_t)(q_end - q));
        if (len > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
            snprintf(out, size, "%.*s", (int)(len - nlen - 1), q + nlen + 1);
            return out;
        }
        q += len + 1;
    }
    return NULL;
}

/*  Reads a non-negative integer argument; -1 when absent, -2 when bad.    */
static int64_t s_arg_int(s_req_t *r, const char *name)
{
    char v[32];
    if (!s_arg(r, name, v, sizeof v))
        return -1;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    return (end && *end == 0 && *v && n >= 0) ? n : -2;
}

/*  Parses an ISO-8601 time (nx_iso8601_parse: a date, or a date and time
    with fraction and zone optional) into us.                               */
static bool s_parse_time(const char *text, uint64_t *us)
{
    return nx_iso8601_parse(text, us) == 0;
}

/*  ---- Helpers for bodies ----------------------------------------------- */

static const char *s_body_str(s_req_t *r, const char *field)
{
    return json_string_value(json_object_get(r->json, field));
}

static bool s_need(s_req_t *r, const char *field)
{
    if (s_body_str(r, field))
        return true;
    char text[128];
    snprintf(text, sizeof text,
             json_object_get(r->json, field) ? "field '%s' must be a string"
                                             : "field '%s' (a string) is missing",
             field);
    s_error(r, 400, "bad_request", text, NULL);
    return false;
}

/*  The session a request acts as: body field `field`, else the one
    session its token allows (a tokens-file token listing exactly one),
    else NULL. Answers 400 and sets *bad when the field is there but not a
    session id.                                                             */
static const char *s_acting(s_req_t *r, const char *field, bool *bad)
{
    *bad = false;
    json_t *v = json_object_get(r->json, field);
    if (v && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (!s || !nx_session_id_valid(s, strlen(s))) {
            char text[160];
            snprintf(text, sizeof text,
                     "field '%s' must be a session id (1..64 of [A-Za-z0-9_:@-])", field);
            s_error(r, 400, "bad_request", text, NULL);
            *bad = true;
            return NULL;
        }
        return s;
    }
    /*  None named: a token that can be only one session acts as it.      */
    const char *sole = nx_auth_sole(r->gw->auth, r->auth);
    return sole && nx_session_id_valid(sole, strlen(sole)) ? sole : NULL;
}

/*  With tokens, a request may only act as (or speak for) a session its
    token allows, whatever the body says; answers 403 otherwise. It must
    then name one in `field` (or have a token that allows only one, which
    s_acting then chose): a request acting as no session would publish
    with no source and escape every session's rate limit. Without tokens
    (an open gateway, loopback only unless allow_open_remote) a request may
    act as no session: it publishes with source "" and is charged to its
    client address's rate limit, as is every call of an open gateway:
    there a name proves nothing, and a new one on each call would escape
    the limit otherwise.
    A request that acts as a session is charged to that session's rate
    limit, shared with its WebSocket connections.                          */
static bool s_allowed(s_req_t *r, const char *session, const char *field)
{
    if (!session && nx_auth_enabled(r->gw->auth)) {
        char text[200];
        snprintf(text, sizeof text,
                 "field '%s' (the session this request acts as) is missing: this gateway "
                 "requires it with tokens, unless the token allows exactly one session",
                 field);
        s_error(r, 403, "forbidden", text, NULL);
        return false;
    }
    if (!nx_auth_enabled(r->gw->auth)) {
        pthread_mutex_lock(&r->gw->lock);
        bool ok = nx_gw_addr_rate_ok(r->gw, r->peer);
        pthread_mutex_unlock(&r->gw->lock);
        if (!ok) {
            __atomic_add_fetch(&r->gw->stats.rate_limited, 1, __ATOMIC_RELAXED);
            s_error(r, 429, "rate_limited",
                    "too many requests from this address (an open gateway limits each client "
                    "address); slow down",
                    NULL);
            return false;
        }
        if (!session)
            return true;
    }
    if (!nx_auth_allows(r->gw->auth, r->auth, session, strlen(session))) {
        char text[160];
        snprintf(text, sizeof text, "the token does not allow acting as session '%.64s'", session);
        s_error(r, 403, "forbidden", text, NULL);
        return false;
    }
    pthread_mutex_lock(&r->gw->lock);
    bool ok = nx_gw_session_rate_ok(r->gw, session);
    pthread_mutex_unlock(&r->gw->lock);
    if (!ok) {
        __atomic_add_fetch(&r->gw->stats.rate_limited, 1, __ATOMIC_RELAXED);
        s_error(r, 429, "rate_limited", "too many requests for this session; slow down", NULL);
    }
    return ok;
}

/*  HTTP work calls act as body.session_id: a session the gateway does not
    host yet is registered for the call, with a TTL so that it lingers for
    the claim's follow-ups. A body with the secret acts as a session owned
    elsewhere, as it is.                                                    */
static bool s_host(s_req_t *r, const char *session)
{
    if (!s_allowed(r, session, "session_id"))
        return false;
    if (json_object_get(r->json, "secret"))
        return true;
    pthread_mutex_lock(&r->gw->lock);
    bool hosted = zhashx_lookup(r->gw->sessions, session) != NULL;
    pthread_mutex_unlock(&r->gw->lock);
    nx_front_err_t away = {0};
    if (!hosted && nx_gw_broker_away(r->gw, &away)) {
        s_fail(r, &away);
        return false;
    }
    if (!hosted) {
        nexus_err_t err =
            nx_gw_ensure_session(r->gw, session, NULL, NULL, r->gw->cfg.http_session_ttl);
        if (err && err != NEXUS_ERR_FORBIDDEN) {
            char text[160];
            snprintf(text, sizeof text, "cannot register the session: %s%s", nexus_strerror(err),
                     err == NEXUS_ERR_TIMEOUT ? " (it may or may not be registered)" : "");
            /*  No answer is the gateway's 503 "unavailable" (504 for a
                timeout), as for every other call (nx_front.c).            */
            if (err == NEXUS_ERR_UNREACHABLE)
                s_error(r, 503, "unavailable", text, NULL);
            else if (err == NEXUS_ERR_TIMEOUT)
                s_error(r, 504, "timeout", text, NULL);
            else
                s_error(r, nx_err_http_status(err), nexus_err_name(err), text, NULL);
            return false;
        }
    }
    return true;
}

/*  ---- Handlers ---------------------------------------------------------- */

static void h_health(s_req_t *r)
{
    json_t *b = s_probe(r, "health");
    char iso[40];
    json_t *out = json_pack("{s:s, s:s, s:s, s:s}", "status", b ? "active" : "degraded", "service",
                            "nexus-gateway", "version", NEXUS_VERSION_STRING, "timestamp",
                            nx_iso8601(nx_now_us(), iso));
    json_t *broker =
        json_pack("{s:s, s:s}", "endpoint", r->gw->cfg.broker, "status", b ? "up" : "down");
    if (b)
        json_object_set(broker, "last_seq", json_object_get(b, "last_seq"));
    json_object_set_new(out, "broker", broker);
    json_decref(b);
    s_answer(r, b ? 200 : 503, out);
}

static json_t *s_endpoints(void);

static void h_capabilities(s_req_t *r)
{
    s_answer(r, 200,
             json_pack("{s:s, s:s, s:[s,s,s,s,s,s,s,s,s,s], s:o}", "service", "nexus-gateway",
                       "version", NEXUS_VERSION_STRING, "features", "publish_subscribe",
                       "topic_wildcards", "history", "resume", "work_claims", "fencing_tokens",
                       "presence", "direct_messages", "metrics", "mcp", "endpoints",
                       s_endpoints()));
}

static double s_rate(nx_gw_t *gw)
{
    pthread_mutex_lock(&gw->lock);
    uint64_t sec = nx_gw_mono() / 1000000, total = 0;
    for (unsigned i = 1; i <= 10; i++)
        if (gw->rate_second >= sec - i && sec >= i)
            total += gw->rate_slot[(sec - i) % 64];
    pthread_mutex_unlock(&gw->lock);
    return (double)total / 10.0;
}

static void h_state(s_req_t *r)
{
    nx_gw_t *gw = r->gw;
    json_t *b = s_probe(r, "state");
    char iso[40];
    pthread_mutex_lock(&gw->lock);
    size_t sessions = zhashx_size(gw->sessions), secrets = zhashx_size(gw->secrets);
    pthread_mutex_unlock(&gw->lock);
    uint64_t lat_n = __atomic_load_n(&gw->stats.lat_count, __ATOMIC_RELAXED);
    uint64_t lat_sum = __atomic_load_n(&gw->stats.lat_sum_us, __ATOMIC_RELAXED);
    json_t *out = json_pack(
        "{s:f, s:I, s:I, s:I, s:f, s:I, s:s, s:f}", "uptime_seconds",
        (double)(nx_gw_mono() - gw->start_mono) / 1e6, "connected_sessions", (json_int_t)sessions,
        "websocket_clients", (json_int_t)__atomic_load_n(&gw->stats.ws_open, __ATOMIC_RELAXED),
        "events_total", (json_int_t)__atomic_load_n(&gw->stats.events_fabric, __ATOMIC_RELAXED),
        "events_per_second", s_rate(gw), "errors_last_hour",
        (json_int_t)__atomic_load_n(&gw->stats.errors, __ATOMIC_RELAXED), "last_restart",
        nx_iso8601(gw->start_us, iso), "event_latency_ms",
        lat_n ? (double)lat_sum / (double)lat_n / 1000.0 : 0.0);
    /*  Sessions registered here whose secret it keeps: the WebSocket ones
        and the HTTP work calls' until they time out (bounded memory).    */
    json_object_set_new(out, "sessions_remembered", json_integer((json_int_t)secrets));
    if (b) {
        json_object_set_new(out, "broker", b);
    } else
        json_object_set_new(out, "broker", json_null());
    s_answer(r, 200, out);
}

static void h_dependencies(s_req_t *r)
{
    uint64_t t0 = nx_gw_mono();
    json_t *b = s_probe(r, "ping");
    double ms = (double)(nx_gw_mono() - t0) / 1000.0;
    json_t *dep = json_pack("{s:s, s:s, s:s, s:f}", "name", "nexusd", "endpoint", r->gw->cfg.broker,
                            "status", b ? "up" : "down", "latency_ms", ms);
    json_decref(b);
    s_answer(r, 200, json_pack("{s:[o]}", "dependencies", dep));
}

/*  Publishes msg (stolen) as one event, as session (acknowledged).        */
static void s_publish(s_req_t *r, json_t *msg, const char *source, int status)
{
    nx_front_err_t err = {0};
    char why[300];
    if (!nx_gw_may_publish(r->gw, r->auth, msg, why, sizeof why)) {
        json_decref(msg);
        s_error(r, 403, "forbidden", why, NULL);
        return;
    }
    json_t *rep = nx_gw_broker_away(r->gw, &err) ? NULL
                                                 : nx_front_publish(r->gw->client, msg, source, &err);
    json_decref(msg);
    if (!rep) {
        s_fail(r, &err);
        return;
    }
    __atomic_add_fetch(&r->gw->stats.events_in, 1, __ATOMIC_RELAXED);
    s_answer(r, status, json_pack("{s:b, s:O}", "ok", 1, "seq", json_object_get(rep, "seq")));
    json_decref(rep);
}

static void h_message(s_req_t *r)
{
    if (!s_need(r, "message"))
        return;
    json_t *to_v = json_object_get(r->json, "to");
    const char *to = json_string_value(to_v);
    /*  A "to" that names no session would make a message.direct that
        reaches nobody; without "to" it is a broadcast.                    */
    if (to_v && !json_is_null(to_v) && !(to && nx_session_id_valid(to, strlen(to)))) {
        s_error(r, 400, "bad_request", "field 'to' must be a session id (1..64 of [A-Za-z0-9_:@-])",
                NULL);
        return;
    }
    bool bad;
    const char *from = s_acting(r, "from", &bad);
    if (bad || !s_allowed(r, from, "from"))
        return;
    /*  The whole body is the payload.                                     */
    s_publish(r,
              json_pack("{s:s, s:O}", "event_type", to ? NX_FRONT_DIRECT : "message.broadcast",
                        "payload", r->json),
              from, 200);
}

static void h_events_post(s_req_t *r)
{
    if (!s_need(r, "event_type"))
        return;
    bool bad;
    const char *source = s_acting(r, "session_id", &bad);
    if (bad || !s_allowed(r, source, "session_id"))
        return;
    s_publish(r, json_incref(r->json), source, 201);
}

/*  The history page of fields (stolen), shown to no session: direct
    messages are not shown over HTTP. With tokens a pattern the caller's
    token may not read is refused (check), and events it may not read are
    left out. NULL when answered with an error.                             */
static json_t *s_history(s_req_t *r, json_t *fields, bool check)
{
    nx_front_err_t err = {0};
    char why[300];
    bool ok = !check || nx_gw_may_read_history(r->gw, r->auth, fields, why, sizeof why);
    if (!ok) {
        json_decref(fields);
        s_error(r, 403, "forbidden", why, NULL);
        return NULL;
    }
    json_t *page = NULL;
    if (nx_gw_broker_away(r->gw, &err))
        json_decref(fields);
    else
        page = nx_front_history(r->gw->client, fields, NULL, &err);
    if (!page)
        s_fail(r, &err);
    else
        nx_gw_filter_events(r->gw, r->auth, json_object_get(page, "events"));
    return page;
}

static void h_history(s_req_t *r)
{
    int64_t limit = s_arg_int(r, "limit");
    if (limit == -2 || limit == 0 || limit > 1000) {
        s_error(r, 400, "bad_request", "limit must be 1..1000", NULL);
        return;
    }
    json_t *req = json_pack("{s:I}", "limit", (json_int_t)(limit > 0 ? limit : 100));
    char v[512];
    if (s_arg(r, "event_type", v, sizeof v)) {
        if (!nx_pattern_valid(v, strlen(v))) {
            json_decref(req);
            s_error(r, 400, "bad_pattern", "event_type is not a valid pattern", NULL);
            return;
        }
        json_object_set_new(req, "pattern", json_string(v));
    }
    if (s_arg(r, "since", v, sizeof v)) {
        /*  Digits only: strtoull took "-5" as 2^64 - 5, which the broker
            then refused naming since_seq, a field the caller never sent. */
        errno = 0;
        unsigned long long seq = strtoull(v, NULL, 10);
        uint64_t us;
        if (*v && strspn(v, "0123456789") == strlen(v) && errno != ERANGE && seq <= INT64_MAX)
            json_object_set_new(req, "since_seq", json_integer((json_int_t)seq));
        else if (s_parse_time(v, &us))
            json_object_set_new(req, "since_time", json_integer((json_int_t)us));
        else {
            json_decref(req);
            s_error(r, 400, "bad_request", "since must be a seq or an ISO-8601 UTC time", NULL);
            return;
        }
    } else /* "the last 100 events"; the pages after it, with the same query */
        json_object_set_new(req, "order", json_string("desc"));
    int64_t cursor = s_arg_int(r, "cursor");
    if (cursor == -2) {
        json_decref(req);
        s_error(r, 400, "bad_request", "cursor must be a number", NULL);
        return;
    }
    if (cursor > 0)
        json_object_set_new(req, "cursor", json_integer(cursor));
    if (s_arg(r, "order", v, sizeof v))
        json_object_set_new(req, "order", json_string(v));
    /*  store=: the store the since (or cursor) belongs to. A page of
        another store, or a since beyond this store's last seq, is never
        answered as if it followed (its seqs mean nothing here): the answer
        says so (reset) and starts at this store's first event.           */
    char store[40] = "";
    if (s_arg(r, "store", store, sizeof store) &&
        (!store[0] || strspn(store, "0123456789abcdef") != strlen(store))) {
        json_decref(req);
        s_error(r, 400, "bad_request", "store must be a store id (lowercase hex)", NULL);
        return;
    }
    uint64_t asked = (uint64_t)json_integer_value(json_object_get(req, "since_seq"));
    if (!asked && cursor > 0)
        asked = (uint64_t)cursor;
    json_t *keep = json_deep_copy(req);
    json_t *page = s_history(r, req, true);
    if (!page) {
        json_decref(keep);
        return;
    }
    const char *now = json_string_value(json_object_get(page, "store_id"));
    uint64_t last = (uint64_t)json_integer_value(json_object_get(page, "last_seq"));
    const char *why = NULL;
    if (store[0] && now && strcmp(store, now) != 0)
        why = "the cursor belongs to another store (a new data directory or another broker)";
    else if (asked > last)
        why = "the cursor is beyond this store's last seq (another store, or a store restored "
              "from a backup)";
    json_t *reset = NULL;
    if (why) {
        reset = json_pack("{s:s, s:s, s:I, s:s?, s:s?, s:I, s:I}", "code",
                          nx_front_reset_code(store, now), "why", why, "cursor_seq",
                          (json_int_t)asked, "cursor_store_id", store[0] ? store : NULL, "store_id",
                          now, "last_seq", (json_int_t)last, "since", (json_int_t)0);
        json_object_del(keep, "since_seq");
        json_object_del(keep, "since_time");
        json_object_del(keep, "cursor");
        json_object_set_new(keep, "order", json_string("asc"));
        json_decref(page);
        page = s_history(r, keep, true);
        keep = NULL;
        if (!page) {
            json_decref(reset);
            return;
        }
    }
    json_decref(keep);
    json_t *events = json_object_get(page, "events");
    json_t *out = json_pack(
        "{s:O, s:I, s:O, s:O}", "events", events, "count", (json_int_t)json_array_size(events),
        "next_cursor", json_object_get(page, "next_cursor"), "store_id",
        json_object_get(page, "store_id") ? json_object_get(page, "store_id") : json_null());
    if (reset)
        json_object_set_new(out, "reset", reset);
    /*  Retention removed events past since (or the cursor): said.       */
    json_t *gap = json_object_get(page, "gap");
    if (gap)
        json_object_set(out, "gap", gap);
    s_answer(r, 200, out);
    json_decref(page);
}

static void h_recent(s_req_t *r)
{
    int64_t count = s_arg_int(r, "count");
    if (count == -2 || count == 0 || count > 1000) {
        s_error(r, 400, "bad_request", "count must be 1..1000", NULL);
        return;
    }
    /*  "The latest events" it may read: a token limited by sub= asks for
        its patterns, so that the count is of events it reads (the newest
        N of everything, filtered after, could leave none).               */
    json_t *req =
        json_pack("{s:I, s:s}", "limit", (json_int_t)(count > 0 ? count : 10), "order", "desc");
    if (nx_auth_enabled(r->gw->auth) && nx_auth_sub_restricted(r->gw->auth, r->auth)) {
        char list[1024];
        nx_auth_describe(r->gw->auth, r->auth, true, list, sizeof list);
        json_t *pats = json_array();
        /*  A list cut by the buffer would narrow the query: not used then
            (what is read is filtered after anyway).                       */
        bool usable = *list != 0 && strlen(list) < sizeof list - 1;
        char *save = NULL;
        for (char *p = strtok_r(list, ",", &save); p && usable; p = strtok_r(NULL, ",", &save))
            usable = nx_pattern_valid(p, strlen(p)) && json_array_size(pats) < 64 &&
                     json_array_append_new(pats, json_string(p)) == 0;
        if (usable)
            json_object_set_new(req, "patterns", pats);
        else
            json_decref(pats);
    }
    json_t *page = s_history(r, req, false);
    if (!page)
        return;
    json_t *events = json_incref(json_object_get(page, "events"));
    /*  Oldest first, like the welcome's recent_events.                     */
    json_t *asc = json_array();
    for (size_t i = json_array_size(events); i > 0; i--)
        json_array_append(asc, json_array_get(events, i - 1));
    json_decref(events);
    s_answer(r, 200,
             json_pack("{s:o, s:I}", "events", asc, "count", (json_int_t)json_array_size(asc)));
    json_decref(page);
}

static void h_stats(s_req_t *r)
{
    nx_gw_t *gw = r->gw;
    json_t *by_type = json_object();
    /*  Only the topics the caller may read: the names alone tell what
        goes on where its sub= does not reach.                            */
    pthread_mutex_lock(&gw->lock);
    for (void *v = zhashx_first(gw->by_type); v; v = zhashx_next(gw->by_type))
        if (nx_gw_may_read(gw, r->auth, zhashx_cursor(gw->by_type)))
            json_object_set_new(by_type, zhashx_cursor(gw->by_type), json_integer((json_int_t)v));
    size_t history_size = gw->recent_count;
    pthread_mutex_unlock(&gw->lock);
    json_t *out = json_pack(
        "{s:I, s:f, s:I, s:I, s:o}", "events_total",
        (json_int_t)__atomic_load_n(&gw->stats.events_fabric, __ATOMIC_RELAXED),
        "events_per_second", s_rate(gw), "events_published",
        (json_int_t)__atomic_load_n(&gw->stats.events_in, __ATOMIC_RELAXED), "events_delivered",
        (json_int_t)__atomic_load_n(&gw->stats.events_out, __ATOMIC_RELAXED), "by_type", by_type);
    /*  Seed 003's fields: WebSocket clients now (the welcome's
        subscriber_count), the events held in memory for welcomes, and
        whether the stream flows (the broker link is up).                  */
    bool active = nexus_client_is_connected(gw->client);
    json_object_set_new(out, "status", json_string(active ? "success" : "degraded"));
    json_object_set_new(
        out, "message",
        json_string(active ? "the event stream is flowing" : "the broker does not answer"));
    json_object_set_new(
        out, "subscribers",
        json_integer((json_int_t)__atomic_load_n(&gw->stats.ws_open, __ATOMIC_RELAXED)));
    json_object_set_new(out, "history_size", json_integer((json_int_t)history_size));
    json_object_set_new(out, "active", json_boolean(active));
    s_answer(r, 200, out);
}

/*  Runs op with fields (stolen) and answers its list under key, with its
    count: {"sessions": [...], "count": n, "truncated": b, "matched": m}.
    A page: ?limit= (1..100000, the broker's default 1000) and ?after=
    (the last id of the page before) go to the op; truncated says more
    match, matched how many in all.                                        */
static void s_answer_list(s_req_t *r, const char *op, json_t *fields, const char *key)
{
    int64_t limit = s_arg_int(r, "limit");
    if (limit == -2 || limit == 0 || limit > 100000) {
        json_decref(fields);
        s_error(r, 400, "bad_request", "limit must be 1..100000", NULL);
        return;
    }
    if (limit > 0)
        json_object_set_new(fields, "limit", json_integer((json_int_t)limit));
    char after[300];
    if (s_arg(r, "after", after, sizeof after)) {
        json_t *v = json_string(after);
        if (!v || strlen(after) > 256) {
            json_decref(v);
            json_decref(fields);
            s_error(r, 400, "bad_request", "after must be an id (UTF-8, at most 256 bytes)", NULL);
            return;
        }
        json_object_set_new(fields, "after", v);
    }
    json_t *rep = s_call(r, op, fields);
    if (!rep)
        return;
    json_t *list = json_object_get(rep, key);
    json_t *out =
        json_pack("{s:O, s:I, s:b}", key, list, "count", (json_int_t)json_array_size(list),
                  "truncated", json_is_true(json_object_get(rep, "truncated")));
    /*  How many pass the filters in all (a broker before 'matched' says
        nothing, and neither does this answer).                            */
    json_t *matched = json_object_get(rep, "matched");
    if (out && json_is_integer(matched))
        json_object_set(out, "matched", matched);
    s_answer(r, 200, out);
    json_decref(rep);
}

static void h_sessions_active(s_req_t *r)
{
    s_answer_list(r, "session.list", json_object(), "sessions");
}

static void h_sessions_capabilities(s_req_t *r)
{
    char skill[256], avail[16];
    json_t *req = json_object();
    if (s_arg(r, "skill", skill, sizeof skill) || s_arg(r, "capability", skill, sizeof skill))
        json_object_set_new(req, "capability", json_string(skill));
    if (s_arg(r, "available", avail, sizeof avail)) {
        bool yes = strcmp(avail, "true") == 0 || strcmp(avail, "1") == 0;
        if (!yes && strcmp(avail, "false") && strcmp(avail, "0")) {
            json_decref(req);
            s_error(r, 400, "bad_request", "available must be true or false", NULL);
            return;
        }
        json_object_set_new(req, "available", json_boolean(yes));
    }
    /*  As over WebSocket: available=false filters nothing (the broker's
        session.find wants a filter it can apply).                          */
    bool find =
        json_object_get(req, "capability") || json_is_true(json_object_get(req, "available"));
    s_answer_list(r, find ? "session.find" : "session.list", req, "sessions");
}

static void h_session_get(s_req_t *r, const char *id)
{
    if (!nx_session_id_valid(id, strlen(id))) {
        s_error(r, 404, "not_found", "no such session", NULL);
        return;
    }
    json_t *rep = s_call(r, "session.get", json_pack("{s:s}", "session", id));
    if (!rep)
        return;
    s_answer(r, 200, json_incref(json_object_get(rep, "session")));
    json_decref(rep);
}

/*  A work call: the op's fields from the body (the table's list), acting
    as body.session_id; checked before the session is hosted, so that a
    bad request changes nothing.                                           */
static void s_work(s_req_t *r)
{
    bool bad;
    const char *session = s_acting(r, "session_id", &bad);
    if (bad)
        return;
    if (!session) {
        s_error(r, 400, "bad_request", "field 'session_id' (a string) is missing", NULL);
        return;
    }
    json_t *fields = nx_front_fields(r->op, r->json, session);
    json_t *secret = json_object_get(r->json, "secret");
    if (secret)
        json_object_set(fields, "secret", secret);
    else
        nx_gw_session_secret(r->gw, session, fields); /* registered here */
    /*  The seed's name for the description.                                */
    json_t *d = json_object_get(r->json, "work_description");
    if (d && !json_object_get(fields, "description") &&
        nx_optab_field(nx_optab_find(r->op, strlen(r->op)), "description"))
        json_object_set(fields, "description", d);
    nx_front_err_t err = {0};
    if (!nx_front_check(r->op, fields, &err)) {
        json_decref(fields);
        s_fail(r, &err);
        return;
    }
    if (!s_host(r, session)) {
        json_decref(fields);
        return;
    }
    json_t *rep = s_call(r, r->op, fields);
    if (!rep)
        return;
    json_object_set_new(rep, "ok", json_true());
    s_answer(r, 200, rep);
}

static void h_claimed(s_req_t *r)
{
    char holder[128];
    json_t *req = json_pack("{s:s}", "state", "claimed");
    if (s_arg(r, "holder", holder, sizeof holder))
        json_object_set_new(req, "holder", json_string(holder));
    s_answer_list(r, "work.list", req, "claims");
}

static void h_mcp(s_req_t *r)
{
    /*  As large as the query: an argument is never cut here.             */
    char session[1024], name[1024], caps[1024];
    nx_gw_mcp_req_t in = {
        .conn = r->conn,
        .msg = r->json,
        .mcp_session = r->mcp_in,
        .version = r->mcp_version,
        .auth = r->auth,
        .session = s_arg(r, "session", session, sizeof session),
        .name = s_arg(r, "name", name, sizeof name),
        .caps = s_arg(r, "capabilities", caps, sizeof caps),
        .peer = r->peer,
    };
    nx_gw_mcp_ans_t out;
    nx_gw_mcp_post(r->gw, &in, &out);
    r->parked = out.parked;
    snprintf(r->mcp_out, sizeof r->mcp_out, "%s", out.session);
    if (out.parked)
        return;
    if (out.reply)
        s_answer(r, out.status, out.reply);
    else {
        r->status = out.status;
        r->type = "application/json";
        free(r->out);
        r->out = strdup("");
    }
}

/*  The broker's channels (subscription prefixes) with their subscriber
    counts, the 100 most subscribed; nothing when the broker is away.      */
static void s_metric_channels(s_req_t *r, zchunk_t *out)
{
    json_t *rep = s_probe(r, "channels");
    const char *h = "# HELP nexus_broker_channel_subscribers subscribers of a subscription prefix "
                    "on the broker\n# TYPE nexus_broker_channel_subscribers gauge\n";
    zchunk_extend(out, h, strlen(h));
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(rep, "channels"), i, ch)
    {
        const char *prefix = json_string_value(json_object_get(ch, "prefix"));
        if (i == 100 || !prefix)
            break;
        /*  A label value escapes backslash, quote and newline.            */
        char label[NX_GW_ID_MAX * 2 + 1];
        size_t n = 0;
        for (const char *p = prefix; *p && n + 2 < sizeof label; p++) {
            if (*p == '\\' || *p == '"' || *p == '\n')
                label[n++] = '\\';
            label[n++] = *p == '\n' ? 'n' : *p;
        }
        label[n] = 0;
        char line[NX_GW_ID_MAX * 2 + 96];
        snprintf(line, sizeof line, "nexus_broker_channel_subscribers{prefix=\"%s\"} %" PRId64 "\n",
                 label, (int64_t)json_integer_value(json_object_get(ch, "subscribers")));
        zchunk_extend(out, line, strlen(line));
    }
    json_decref(rep);
}

/*  The broker's refused handshakes (state.handshakes_refused), by what
    refused them; nothing when the broker is away.                         */
static void s_metric_refused(s_req_t *r, zchunk_t *out)
{
    json_t *rep = s_probe(r, "state");
    json_t *h = json_object_get(rep, "handshakes_refused");
    if (h) {
        const char *head =
            "# HELP nexus_broker_handshakes_refused_total connections the broker refused at the "
            "handshake (plain: no such token; curve: a key not in curve_clients; mechanism: no or "
            "another mechanism)\n# TYPE nexus_broker_handshakes_refused_total counter\n";
        zchunk_extend(out, head, strlen(head));
        static const char *const kinds[] = {"plain", "curve", "mechanism"};
        for (size_t i = 0; i < 3; i++) {
            char line[160];
            snprintf(line, sizeof line,
                     "nexus_broker_handshakes_refused_total{mechanism=\"%s\"} %" PRId64 "\n",
                     kinds[i], (int64_t)json_integer_value(json_object_get(h, kinds[i])));
            zchunk_extend(out, line, strlen(line));
        }
    }
    /*  In a primary/standby pair (issue 19): the role of the broker in
        use, and how far each standby is behind it.                      */
    json_t *repl = json_object_get(rep, "replication");
    if (json_is_object(repl)) {
        char line[400];
        const char *role = json_string_value(json_object_get(repl, "role"));
        snprintf(line, sizeof line,
                 "# HELP nexus_broker_epoch the broker's epoch (promotions so far)\n"
                 "# TYPE nexus_broker_epoch gauge\nnexus_broker_epoch{role=\"%s\"} %" PRId64 "\n"
                 "# HELP nexus_broker_replication_lag_bytes log bytes a standby has not "
                 "acknowledged\n# TYPE nexus_broker_replication_lag_bytes gauge\n",
                 role ? role : "", (int64_t)json_integer_value(json_object_get(repl, "epoch")));
        zchunk_extend(out, line, strlen(line));
        size_t i;
        json_t *sb;
        json_array_foreach(json_object_get(repl, "standbys"), i, sb)
        {
            const char *name = json_string_value(json_object_get(sb, "name"));
            snprintf(line, sizeof line,
                     "nexus_broker_replication_lag_bytes{standby=\"%.64s\",sync=\"%s\"} %" PRId64
                     "\n",
                     name ? name : "", json_is_true(json_object_get(sb, "sync")) ? "yes" : "no",
                     (int64_t)json_integer_value(json_object_get(sb, "lag_bytes")));
            zchunk_extend(out, line, strlen(line));
        }
    }
    json_decref(rep);
}

static void h_metrics(s_req_t *r)
{
    nx_gw_t *gw = r->gw;
    nx_gw_stats_t *s = &gw->stats;
    zchunk_t *out = zchunk_new(NULL, 4096);
    char line[256];
#define S_METRIC(name, type, help, value)                                                          \
    do {                                                                                           \
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help,    \
                 name, type, name, (uint64_t)(value));                                             \
        zchunk_extend(out, line, strlen(line));                                                    \
    } while (0)
#define S_LOAD(field) __atomic_load_n(&s->field, __ATOMIC_RELAXED)
    size_t depth = 0, clients = 0, http = 0;
    pthread_mutex_lock(&gw->lock);
    for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns))
        if (c->kind == NX_GW_WS) {
            depth += c->q_count;
            clients++;
        } else
            http++;
    size_t sessions = zhashx_size(gw->sessions);
    size_t addrs = zhashx_size(gw->addr_buckets);
    size_t cmd_bytes = gw->commands_bytes, cmd_peak = gw->commands_bytes_peak;
    size_t http_bytes = gw->http_bytes;
    size_t mcp_sessions = gw->mcps ? zhashx_size(gw->mcps) : 0, mcp_waits = gw->mcp_parked;
    pthread_mutex_unlock(&gw->lock);
    S_METRIC("nexus_gateway_command_bytes", "gauge",
             "bytes of client messages waiting for the worker", cmd_bytes);
    S_METRIC("nexus_gateway_command_bytes_peak", "gauge",
             "most bytes of client messages ever waiting for the worker (bound: command_bytes)",
             cmd_peak);
    S_METRIC("nexus_gateway_connections", "gauge", "WebSocket connections open", clients);
    S_METRIC("nexus_gateway_http_requests_open", "gauge",
             "HTTP requests being read, answered or written (this one included)", http);
    S_METRIC("nexus_gateway_http_bytes", "gauge",
             "bytes of HTTP answers held until their connections take them (bound: http_bytes)",
             http_bytes);
    S_METRIC("nexus_gateway_connections_total", "counter", "WebSocket connections accepted",
             S_LOAD(ws_total));
    S_METRIC("nexus_gateway_sessions", "gauge", "sessions hosted", sessions);
    S_METRIC("nexus_gateway_mcp_sessions", "gauge", "MCP sessions open on /mcp", mcp_sessions);
    S_METRIC("nexus_gateway_mcp_waits", "gauge", "wait_for_events calls parked on /mcp",
             mcp_waits);
    S_METRIC("nexus_gateway_http_requests_total", "counter", "HTTP requests",
             S_LOAD(http_requests));
    S_METRIC("nexus_gateway_events_in_total", "counter", "events published through the gateway",
             S_LOAD(events_in));
    S_METRIC("nexus_gateway_events_fabric_total", "counter", "events received from the fabric",
             S_LOAD(events_fabric));
    S_METRIC("nexus_gateway_events_out_total", "counter", "event messages queued to clients",
             S_LOAD(events_out));
    S_METRIC("nexus_gateway_drops_total", "counter", "event messages dropped for full queues",
             S_LOAD(drops));
    S_METRIC("nexus_gateway_oversize_drops_total", "counter",
             "of the drops, events larger than a client queue takes (queue_bytes)",
             S_LOAD(oversize));
    S_METRIC("nexus_gateway_slow_closes_total", "counter", "clients closed for not reading",
             S_LOAD(slow_closes));
    S_METRIC("nexus_gateway_errors_total", "counter", "error replies", S_LOAD(errors));
    S_METRIC("nexus_gateway_rate_limited_total", "counter", "requests refused by the rate limit",
             S_LOAD(rate_limited));
    S_METRIC("nexus_gateway_auth_refused_total", "counter",
             "HTTP requests and WebSocket upgrades refused for no or a wrong token (401)",
             S_LOAD(auth_refused));
    S_METRIC("nexus_gateway_rate_addresses", "gauge",
             "client addresses with a rate limit of their own (bound: 1024)", addrs);
    S_METRIC("nexus_gateway_queue_depth", "gauge", "messages waiting in client queues", depth);
    S_METRIC("nexus_gateway_replays", "gauge",
             "history replays to WebSocket clients running or waiting for their clients",
             S_LOAD(replays));
    s_metric_channels(r, out);
    s_metric_refused(r, out);
    static const char *const le[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                     "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "+Inf"};
    const char *h = "# HELP nexus_gateway_delivery_latency_seconds broker timestamp to client "
                    "queue\n# TYPE nexus_gateway_delivery_latency_seconds histogram\n";
    zchunk_extend(out, h, strlen(h));
    uint64_t cum = 0;
    for (int i = 0; i < 12; i++) {
        cum += S_LOAD(lat_buckets[i]);
        snprintf(line, sizeof line,
                 "nexus_gateway_delivery_latency_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", le[i],
                 cum);
        zchunk_extend(out, line, strlen(line));
    }
    snprintf(line, sizeof line,
             "nexus_gateway_delivery_latency_seconds_sum %.6f\n"
             "nexus_gateway_delivery_latency_seconds_count %" PRIu64 "\n",
             (double)S_LOAD(lat_sum_us) / 1e6, S_LOAD(lat_count));
    zchunk_extend(out, line, strlen(line) + 1);
    r->status = 200;
    r->type = "text/plain; version=0.0.4";
    free(r->out);
    r->out = strdup((const char *)zchunk_data(out));
    zchunk_destroy(&out);
#undef S_METRIC
#undef S_LOAD
}

/*  ---- Routing ----------------------------------------------------------- */

typedef struct {
    int method;
    const char *path;
    void (*fn)(s_req_t *r);
    bool body;      /* needs a JSON object body                             */
    const char *op; /* the op it runs, when it is one                       */
} s_route_t;

static const s_route_t s_routes[] = {
    {NX_GW_GET, "/health", h_health, false, NULL},
    {NX_GW_GET, "/capabilities", h_capabilities, false, NULL},
    {NX_GW_GET, "/state", h_state, false, NULL},
    {NX_GW_GET, "/dependencies", h_dependencies, false, NULL},
    {NX_GW_POST, "/message", h_message, true, NULL},
    {NX_GW_GET, "/sessions/active", h_sessions_active, false, NULL},
    {NX_GW_GET, "/sessions/capabilities", h_sessions_capabilities, false, NULL},
    {NX_GW_POST, "/events", h_events_post, true, NULL},
    {NX_GW_GET, "/events/history", h_history, false, NULL},
    {NX_GW_GET, "/events/recent", h_recent, false, NULL},
    {NX_GW_GET, "/events/stats", h_stats, false, NULL},
    {NX_GW_POST, "/work/claim", s_work, true, "work.claim"},
    {NX_GW_POST, "/work/renew", s_work, true, "work.renew"},
    {NX_GW_POST, "/work/release", s_work, true, "work.release"},
    {NX_GW_POST, "/work/complete", s_work, true, "work.complete"},
    {NX_GW_POST, "/work/reopen", s_work, true, "work.reopen"},
    {NX_GW_GET, "/work/claimed", h_claimed, false, NULL},
    {NX_GW_GET, "/metrics", h_metrics, false, NULL},
    {NX_GW_POST, "/mcp", h_mcp, true, NULL},
};

/*  What /capabilities lists: every path the gateway serves, read from the
    table that routes them (a list of its own left out /metrics and the
    newer /work calls), with the two WebSocket paths (nx_gw_server.c) and
    /sessions/{id} (s_is_session_path), which are matched by prefix.
    Caller owns the array.                                                  */
static json_t *s_endpoints(void)
{
    json_t *list = json_pack("[s,s]", "/ws/session/{session_id}", "/ws/events");
    for (size_t i = 0; list && i < sizeof s_routes / sizeof s_routes[0]; i++) {
        bool listed = false;
        for (size_t j = 0; j < i && !listed; j++)
            listed = strcmp(s_routes[j].path, s_routes[i].path) == 0;
        if (!listed)
            json_array_append_new(list, json_string(s_routes[i].path));
        if (strcmp(s_routes[i].path, "/sessions/active") == 0)
            json_array_append_new(list, json_string("/sessions/{id}"));
    }
    return list;
}

/*  GET /sessions/{id}: one segment after the prefix.                      */
static bool s_is_session_path(const char *path)
{
    return strncmp(path, "/sessions/", 10) == 0 && path[10] && !strchr(path + 10, '/');
}

const char *nx_gw_http_allow(const char *path)
{
    bool get = false, post = false;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++)
        if (strcmp(s_routes[i].path, path) == 0) {
            get |= s_routes[i].method == NX_GW_GET;
            post |= s_routes[i].method == NX_GW_POST;
        }
    if (!get && !post && s_is_session_path(path))
        get = true;
    return get && post ? "GET, POST" : get ? "GET" : post ? "POST" : NULL;
}


/*  A body that is not a JSON object: 400 bad_json, and on /mcp a JSON-RPC
    parse error (-32700), the shape an MCP client reads.                   */
/*  unparsed: jansson refused the body (the others: a NUL byte, too deep). */
static void s_bad_body(s_req_t *r, const char *text, bool unparsed)
{
    if (strcmp(r->path, "/mcp") == 0) {
        s_answer(r, 400,
                 unparsed ? nx_mcp_unreadable(r->body, strlen(r->body), text)
                          : nx_mcp_parse_error(text));
        return;
    }
    s_error(r, 400, "bad_json", text, NULL);
}

static void s_route(s_req_t *r)
{
    bool path_known = false;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
        const s_route_t *rt = &s_routes[i];
        if (strcmp(rt->path, r->path) != 0)
            continue;
        path_known = true;
        if (rt->method != r->method)
            continue;
        if (rt->body) {
            if (r->body_too_large) {
                char text[128];
                snprintf(text, sizeof text,
                         "request body over max_body (%" PRIu64 " bytes): not read",
                         r->gw->cfg.max_body);
                /*  /mcp's clients read JSON-RPC, whatever the status.     */
                if (strcmp(r->path, "/mcp") == 0)
                    s_answer(r, 413, nx_mcp_request_error(text));
                else
                    s_error(r, 413, "too_large", text, NULL);
                return;
            }
            json_error_t jerr;
            /*  JSON text has no NUL byte: what follows one was dropped
                without a word (the WebSocket side refuses it too).       */
            if (r->body && strlen(r->body) != r->body_len) {
                char text[96];
                snprintf(text, sizeof text,
                         "the body holds a NUL byte (at offset %zu): nothing was done",
                         strlen(r->body));
                s_bad_body(r, text, false);
                return;
            }
            if (r->body &&
                nx_front_json_too_deep(r->body, strlen(r->body), NX_FRONT_MESSAGE_DEPTH)) {
                char text[128];
                snprintf(text, sizeof text,
                         "the body is nested deeper than %d levels (arrays and objects): "
                         "nothing was done",
                         NX_FRONT_MESSAGE_DEPTH);
                s_bad_body(r, text, false);
                return;
            }
            r->json = r->body ? json_loads(r->body, JSON_REJECT_DUPLICATES, &jerr) : NULL;
            if (r->json && !json_is_object(r->json) && strcmp(r->path, "/mcp") == 0) {
                /*  Valid JSON that is no message (a batch, which MCP no
                    longer has): invalid request, as stdio says.           */
                s_answer(r, 400,
                         json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error",
                                   "code", -32600, "message",
                                   "a message must be one JSON-RPC 2.0 object"));
                return;
            }
            if (!json_is_object(r->json)) {
                char text[256];
                if (r->json || !r->body)
                    snprintf(text, sizeof text, "the body must be a JSON object");
                else
                    snprintf(text, sizeof text, "body is not valid JSON: %s (line %d, column %d)",
                             jerr.text, jerr.line, jerr.column);
                s_bad_body(r, text, r->body != NULL && r->json == NULL);
                return;
            }
        }
        r->op = rt->op;
        rt->fn(r);
        return;
    }
    if (r->method == NX_GW_GET && s_is_session_path(r->path)) {
        h_session_get(r, r->path + 10);
        return;
    }
    if (path_known || s_is_session_path(r->path)) {
        r->allow = nx_gw_http_allow(r->path);
        s_error(r, 405, "method_not_allowed", "method not allowed on this path", NULL);
    } else
        s_error(r, 404, "not_found", "no such endpoint", NULL);
}

void nx_gw_http(nx_gw_t *gw, uint64_t conn_id)
{
    s_req_t r;
    memset(&r, 0, sizeof r);
    r.gw = gw;
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    if (conn) {
        r.method = conn->method;
        memcpy(r.path, conn->path, sizeof r.path);
        memcpy(r.query, conn->query, sizeof r.query);
        r.body = conn->body;
        r.body_len = conn->body_len;
        conn->body = NULL;
        r.body_too_large = conn->body_too_large;
        r.auth = conn->auth;
        memcpy(r.peer, conn->peer, sizeof r.peer);
        memcpy(r.mcp_in, conn->mcp_in, sizeof r.mcp_in);
        memcpy(r.mcp_version, conn->mcp_version, sizeof r.mcp_version);
        r.conn = conn_id;
    }
    pthread_mutex_unlock(&gw->lock);
    if (!conn)
        return;
    s_route(&r);
    json_decref(r.json);
    free(r.body);
    pthread_mutex_lock(&gw->lock);
    memcpy(conn->mcp_out, r.mcp_out, sizeof conn->mcp_out);
    if (r.parked) {
        /*  Answered later, from nx_gw_mcp_service: the connection waits.  */
        free(r.out);
        nx_gw_conn_unref(gw, &conn);
        pthread_mutex_unlock(&gw->lock);
        return;
    }
    conn->allow = r.allow;
    nx_gw_conn_answer(gw, conn, r.status ? r.status : 500, r.type ? r.type : "application/json",
                      r.out);
    nx_gw_conn_unref(gw, &conn);
    pthread_mutex_unlock(&gw->lock);
    nx_gw_wake(gw);
}
