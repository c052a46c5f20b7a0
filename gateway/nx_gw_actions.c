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

#include "nx_front.h"
#include "nx_front_event.h"
#include "nx_gw.h"
#include "nx_jdump.h"
#include "nx_optab.h"
#include "nx_log.h"
#include "nx_topic.h"

/*  ---- Shared helpers ---------------------------------------------------- */

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
    char *text = nx_json_dumps(reply, JSON_COMPACT);
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

/*  Secrets kept at most: one per session registered here (WebSocket
    sessions while connected, HTTP ones until the broker has surely timed
    them out), ~100 bytes each. Past it a new session's is not kept: after
    a broker restart it is taken back only once the broker has let it go,
    as before.                                                             */
#define S_SECRETS_MAX 100000

/*  gw->secrets' values: the secret and when a call last acted with it.   */
typedef struct {
    uint64_t used_us; /* nx_gw_mono                                        */
    char secret[];
} s_secret_t;

void nx_gw_session_secret(nx_gw_t *gw, const char *session, json_t *fields)
{
    pthread_mutex_lock(&gw->lock);
    s_secret_t *known = zhashx_lookup(gw->secrets, session);
    if (known) {
        known->used_us = nx_gw_mono();
        if (!json_object_get(fields, "secret"))
            json_object_set_new(fields, "secret", json_string(known->secret));
    }
    pthread_mutex_unlock(&gw->lock);
}

size_t nx_gw_secrets_prune(nx_gw_t *gw, uint64_t idle_us)
{
    uint64_t now = nx_gw_mono();
    size_t pruned = 0;
    pthread_mutex_lock(&gw->lock);
    zlistx_t *gone = zlistx_new();
    for (s_secret_t *s = zhashx_first(gw->secrets); s && gone; s = zhashx_next(gw->secrets)) {
        const char *id = zhashx_cursor(gw->secrets);
        /*  A WebSocket session's secret goes when its last connection
            closes (nx_gw_worker.c), however long it stays quiet.          */
        if (now - s->used_us > idle_us && !zhashx_lookup(gw->sessions, id))
            zlistx_add_end(gone, (void *)id);
    }
    for (const char *id = gone ? zlistx_first(gone) : NULL; id; id = zlistx_next(gone)) {
        zhashx_delete(gw->secrets, id);
        pruned++;
    }
    zlistx_destroy(&gone);
    pthread_mutex_unlock(&gw->lock);
    return pruned;
}

void nx_gw_session_forget(nx_gw_t *gw, const char *session)
{
    pthread_mutex_lock(&gw->lock);
    zhashx_delete(gw->secrets, session);
    pthread_mutex_unlock(&gw->lock);
}

bool nx_gw_broker_away(nx_gw_t *gw, nx_front_err_t *err)
{
    if (nexus_client_is_connected(gw->client))
        return false;
    /*  The link may be back before the worker looks again: this refusal
        is logged as an outage all the same.                               */
    nx_gw_broker_link(gw, false);
    nx_front_fail(err, "unavailable", 503,
                  "no connection to the broker at %s (the gateway reconnects by itself): "
                  "not sent, try again shortly",
                  gw->cfg.broker);
    return true;
}

/*  Keeps the secret a registration answered (lock not held).             */
static void s_keep_secret(nx_gw_t *gw, const char *session, json_t *rep)
{
    const char *secret = json_string_value(json_object_get(rep, "secret"));
    if (!secret)
        return;
    pthread_mutex_lock(&gw->lock);
    s_secret_t *known = zhashx_lookup(gw->secrets, session);
    if (known && strcmp(known->secret, secret) == 0)
        known->used_us = nx_gw_mono();
    else if (known || zhashx_size(gw->secrets) < S_SECRETS_MAX) {
        size_t len = strlen(secret);
        s_secret_t *copy = malloc(sizeof *copy + len + 1);
        if (copy) {
            copy->used_us = nx_gw_mono();
            memcpy(copy->secret, secret, len + 1);
            zhashx_update(gw->secrets, session, copy);
        }
    }
    pthread_mutex_unlock(&gw->lock);
}

nexus_err_t nx_gw_ensure_session(nx_gw_t *gw, const char *session, const char *name,
                                 const char *capabilities, uint64_t ttl_ms)
{
    json_t *req =
        json_pack("{s:s, s:I}", "session", session, "heartbeat_ms", (json_int_t)gw->cfg.heartbeat);
    nx_gw_session_secret(gw, session, req);
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
    nx_front_err_t err = {0};
    json_t *rep = nx_front_call(gw->client, "session.register", req, &err);
    /*  The front's own words for no answer are not the SDK's names.       */
    nexus_err_t rc = rep                                  ? NEXUS_OK
                     : !strcmp(err.code, "unavailable") ? NEXUS_ERR_UNREACHABLE
                     : !strcmp(err.code, "timeout")     ? NEXUS_ERR_TIMEOUT
                     : !strcmp(err.code, "no_memory")   ? NEXUS_ERR_NOMEM
                                                        : nexus_err_from_name(err.code);
    if (rep)
        s_keep_secret(gw, session, rep);
    json_decref(rep);
    nx_front_err_reset(&err);
    return rc;
}

/*  ---- Replies ---------------------------------------------------------- */

typedef struct {
    nx_gw_t *gw;
    uint64_t conn; /* the connection asking                         */
    char session[NX_GW_SESSION_MAX + 1];
    json_t *msg;        /* the parsed message                            */
    json_t *id;         /* its id, or NULL                               */
    const char *action; /* its action                                    */
    const char *op;     /* the op it runs, when it is one                */
    const void *auth;   /* its token (nx_auth handle of gw->auth)        */
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
    json_t *e = json_pack("{s:s, s:o}", "code", code, "message", nx_front_text(message));
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

/*  Answers from an op handler's result (stolen), or from its error.     */
static void s_answer(s_ctx_t *ctx, json_t *result, nx_front_err_t *err)
{
    if (result)
        s_ok(ctx, result);
    else
        s_error(ctx, err->code, err->message, err->extra);
    nx_front_err_reset(err);
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
    char why[300];
    if (!nx_gw_may_subscribe(ctx->gw, ctx->auth, topics, why, sizeof why)) {
        json_decref(topics);
        s_error(ctx, "forbidden", why, NULL);
        return;
    }
    nx_gw_t *gw = ctx->gw;
    uint64_t replay_from = 0;
    const char *refused = NULL;
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, ctx->conn);
    json_t *now = NULL;
    if (conn) {
        size_t had = conn->n_patterns;
        refused = s_add_patterns(conn, topics);
        /*  What it got so far lacks the new patterns' events: a resume
            must send those (nx_gw_conn_resume_at).                         */
        if (!refused && conn->n_patterns > had)
            nx_gw_conn_got_reset(conn);
        /*  A connection opened with ?since= replays from there with its
            first subscription; live events are held until it catches up.   */
        if (!refused && conn->resume_from) {
            replay_from = conn->resume_from;
            conn->resume_from = 0;
            conn->replaying = true;
            nx_gw_conn_resume_at(conn, replay_from - 1);
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
        nx_gw_replay_start(gw, ctx->conn, replay_from - 1, NULL);
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
    /*  The source is the connection's session, whatever the JSON says.    */
    nx_front_err_t err = {0};
    char why[300];
    if (!nx_gw_may_publish(ctx->gw, ctx->auth, ctx->msg, why, sizeof why)) {
        s_error(ctx, "forbidden", why, NULL);
        return;
    }
    json_t *rep = nx_gw_broker_away(ctx->gw, &err)
                      ? NULL
                      : nx_front_publish(ctx->gw->client, ctx->msg, ctx->session, &err);
    if (rep)
        __atomic_add_fetch(&ctx->gw->stats.events_in, 1, __ATOMIC_RELAXED);
    s_answer(ctx, rep, &err);
}

/*  An action that is one op: its fields are the table's, the session the
    connection's (for ops that act as one).                                */
static void a_op(s_ctx_t *ctx)
{
    const nx_opdef_t *def = nx_optab_find(ctx->op, strlen(ctx->op));
    nx_front_err_t away = {0};
    if (nx_gw_broker_away(ctx->gw, &away)) {
        s_answer(ctx, NULL, &away);
        return;
    }
    bool acts = (def->flags & NX_OF_ACTS) && ctx->session[0];
    json_t *fields = nx_front_fields(ctx->op, ctx->msg, acts ? ctx->session : NULL);
    if (acts)
        nx_gw_session_secret(ctx->gw, ctx->session, fields);
    nx_front_err_t err = {0};
    s_answer(ctx, nx_front_call(ctx->gw->client, ctx->op, fields, &err), &err);
}

static void a_sessions(s_ctx_t *ctx)
{
    /*  A filter makes it a find; none, the whole list.                     */
    json_t *cap = json_object_get(ctx->msg, "capability");
    json_t *avail = json_object_get(ctx->msg, "available");
    ctx->op = cap || json_is_true(avail) ? "session.find" : "session.list";
    a_op(ctx);
}

static void a_ping(s_ctx_t *ctx)
{
    s_ok(ctx, json_pack("{s:I}", "ts", (json_int_t)nx_now_us()));
}

static void a_history(s_ctx_t *ctx)
{
    json_t *topics = json_object_get(ctx->msg, "topics");
    json_t *limit = json_object_get(ctx->msg, "limit");
    json_t *cursor = json_object_get(ctx->msg, "cursor");
    /*  The gateway's own bound on a page (its replies go through a client
        queue); the rest is the table's to check.                          */
    if (limit && (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
                  json_integer_value(limit) > 1000)) {
        s_error(ctx, "bad_request", "field 'limit' must be an integer 1..1000", NULL);
        return;
    }
    json_t *fields = nx_front_fields("history", ctx->msg, NULL);
    if (!limit)
        json_object_set_new(fields, "limit", json_integer(100));
    /*  null: no cursor, as a first page.                                   */
    if (json_is_null(cursor))
        json_object_del(fields, "cursor");
    if (topics) {
        json_t *t = s_topics(ctx);
        if (!t) {
            json_decref(fields);
            return;
        }
        json_object_set_new(fields, "patterns", t);
    }
    nx_front_err_t err = {0};
    char why[300];
    if (!nx_gw_may_read_history(ctx->gw, ctx->auth, fields, why, sizeof why)) {
        json_decref(fields);
        s_error(ctx, "forbidden", why, NULL);
        return;
    }
    json_t *page = NULL;
    if (nx_gw_broker_away(ctx->gw, &err))
        json_decref(fields);
    else
        page = nx_front_history(ctx->gw->client, fields, ctx->session, &err);
    if (page) {
        json_object_del(page, "last_seq");
        json_object_del(page, "first_seq");
        nx_gw_filter_events(ctx->gw, ctx->auth, json_object_get(page, "events"));
    }
    s_answer(ctx, page, &err);
}

static void a_resume(s_ctx_t *ctx)
{
    json_t *since_v = json_object_get(ctx->msg, "since");
    if (!json_is_integer(since_v) || json_integer_value(since_v) < 0) {
        s_error(ctx, "bad_request",
                since_v ? "field 'since' must be a non-negative integer"
                        : "field 'since' (a non-negative integer) is missing",
                NULL);
        return;
    }
    json_t *store_v = json_object_get(ctx->msg, "store_id");
    if (store_v && !json_is_null(store_v) &&
        (!json_is_string(store_v) || json_string_length(store_v) == 0 ||
         json_string_length(store_v) >= 40 ||
         strspn(json_string_value(store_v), "0123456789abcdef") != json_string_length(store_v))) {
        s_error(ctx, "bad_request",
                "field 'store_id' must be a store id (the welcome's store_id: lowercase hex)",
                NULL);
        return;
    }
    const char *store = json_is_string(store_v) ? json_string_value(store_v) : "";
    uint64_t asked = (uint64_t)json_integer_value(since_v);
    nx_gw_t *gw = ctx->gw;
    /*  A cursor of another store, or beyond this store's last seq, is
        reset (told, and replayed from the store's first event), never
        followed silently.                                                  */
    nx_gw_resume_t check;
    nx_gw_resume_check(gw, asked, store, &check);
    uint64_t since = check.from;
    char *reset = check.reset ? nx_gw_reset_json(&check, asked, store) : NULL;
    bool deferred = false;
    pthread_mutex_lock(&gw->lock);
    /*  Past the last seq, unchecked (the broker did not answer): live
        events would be held back until they got there. Resume from the
        last seq.                                                           */
    if (!check.known && since > gw->last_seq)
        since = gw->last_seq;
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, ctx->conn);
    bool open = conn != NULL;
    if (conn) {
        if (reset)
            nx_gw_conn_push_text(gw, conn, reset);
        if (conn->n_patterns == 0) {
            /*  Nothing subscribed: the replay waits for the first
                subscription, as with ?since=, rather than replay every
                topic now.                                                  */
            conn->resume_from = since + 1;
            deferred = true;
        } else {
            conn->replaying = true;
            nx_gw_conn_resume_at(conn, since); /* not what it got again */
        }
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    free(reset);
    json_t *rep = json_pack("{s:I, s:I, s:b, s:b}", "since", (json_int_t)since, "replayed",
                            (json_int_t)0, "deferred", deferred, "reset", check.reset);
    if (check.known) {
        json_object_set_new(rep, "store_id", json_string(check.store_id));
        json_object_set_new(rep, "last_seq", json_integer((json_int_t)check.last_seq));
    }
    if (deferred || !open) {
        s_ok(ctx, rep);
        return;
    }
    /*  The reply goes when the replay ends, with its count.                */
    json_t *r = NULL;
    if (ctx->id) {
        r = s_reply_new(ctx, true);
        json_object_update(r, rep);
    }
    json_decref(rep);
    nx_gw_replay_start(gw, ctx->conn, since, r);
}

/*  The actions of docs/gateway.md. Those that are one op name it; their
    fields come from the op table (nx_optab).                              */
typedef struct {
    const char *name;
    void (*fn)(s_ctx_t *ctx);
    const char *op;
} s_action_t;

static const s_action_t s_actions[] = {
    {"subscribe", a_subscribe, NULL},
    {"unsubscribe", a_unsubscribe, NULL},
    {"publish", a_publish, "publish"},
    {"claim", a_op, "work.claim"},
    {"renew", a_op, "work.renew"},
    {"release", a_op, "work.release"},
    {"complete", a_op, "work.complete"},
    {"reopen", a_op, "work.reopen"},
    {"history", a_history, "history"},
    {"resume", a_resume, NULL},
    {"status", a_op, "session.status"},
    {"sessions", a_sessions, "session.list"},
    {"claims", a_op, "work.list"},
    {"ping", a_ping, NULL},
};

/*  The string or number under key name at the top level of the JSON
    object text, decoded, without parsing what is nested (a message too
    deep to parse still gets its id back); NULL when there is none.       */
static json_t *s_top_scalar(const char *text, const char *name)
{
    size_t nlen = strlen(name);
    int depth = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '[' || *p == '{')
            depth++;
        else if (*p == ']' || *p == '}')
            depth--;
        if (*p != '"')
            continue;
        const char *start = p++;
        while (*p && *p != '"')
            p += *p == '\\' && p[1] ? 2 : 1;
        if (!*p)
            return NULL;
        if (depth != 1)
            continue;
        const char *after = p + 1;
        while (*after == ' ' || *after == '\t' || *after == '\n' || *after == '\r')
            after++;
        if (*after != ':' || (size_t)(p - start - 1) != nlen || memcmp(start + 1, name, nlen))
            continue;
        const char *v = after + 1;
        while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
            v++;
        const char *end = v;
        if (*v == '"') {
            for (end = v + 1; *end && *end != '"';)
                end += *end == '\\' && end[1] ? 2 : 1;
            if (*end)
                end++;
        } else
            end += strspn(v, "-+0123456789.eE");
        return end > v ? json_loadb(v, (size_t)(end - v), JSON_DECODE_ANY, NULL) : NULL;
    }
    return NULL;
}

void nx_gw_action(nx_gw_t *gw, uint64_t conn_id, const char *text)
{
    s_ctx_t ctx = {gw, conn_id, "", NULL, NULL, NULL, NULL, NULL};
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    bool open = conn != NULL;
    if (conn) {
        memcpy(ctx.session, conn->session, sizeof ctx.session);
        ctx.auth = conn->auth;
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    if (!open)
        return; /* closed meanwhile */
    json_error_t jerr;
    bool too_deep = nx_front_json_too_deep(text, strlen(text), NX_FRONT_MESSAGE_DEPTH);
    ctx.msg = too_deep ? NULL : json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(ctx.msg)) {
        char message[256];
        json_t *top_id = NULL, *top_action = NULL;
        if (too_deep) {
            /*  Answered with its id, so the client can match the refusal
                to its request; nothing in it is acted on. The id is read
                only from a message that is JSON otherwise: jansson checks
                that up to its own depth bound (2048, bounded stack);
                beyond it, from the top level as scanned.                  */
            json_error_t werr;
            json_t *whole = json_loads(text, JSON_REJECT_DUPLICATES, &werr);
            if (json_is_object(whole)) {
                top_id = json_incref(json_object_get(whole, "id"));
                top_action = json_incref(json_object_get(whole, "action"));
            } else if (!whole && json_error_code(&werr) == json_error_stack_overflow) {
                top_id = s_top_scalar(text, "id");
                top_action = s_top_scalar(text, "action");
            }
            json_decref(whole);
            if ((json_is_string(top_id) && json_string_length(top_id) <= NX_GW_ID_MAX) ||
                json_is_integer(top_id))
                ctx.id = top_id;
            if (json_is_string(top_action) && json_string_length(top_action) <= NX_GW_ID_MAX)
                ctx.action = json_string_value(top_action);
            snprintf(message, sizeof message,
                     "the message is nested deeper than %d levels (arrays and objects): "
                     "nothing was done",
                     NX_FRONT_MESSAGE_DEPTH);
        } else if (ctx.msg)
            snprintf(message, sizeof message, "a message must be a JSON object");
        else
            snprintf(message, sizeof message, "not valid JSON: %s (line %d, column %d)", jerr.text,
                     jerr.line, jerr.column);
        s_error(&ctx, "bad_json", message, NULL);
        json_decref(ctx.msg);
        json_decref(top_id);
        json_decref(top_action);
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
    /*  A watcher of /ws/events acts as no session: it only listens.        */
    if (!ctx.session[0]) {
        s_error(&ctx, "bad_request",
                "/ws/events only streams events; connect to /ws/session/{session_id} to send "
                "actions",
                NULL);
        json_decref(ctx.msg);
        return;
    }
    for (size_t i = 0; i < sizeof s_actions / sizeof s_actions[0]; i++)
        if (strcmp(s_actions[i].name, ctx.action) == 0) {
            ctx.op = s_actions[i].op;
            s_actions[i].fn(&ctx);
            json_decref(ctx.msg);
            return;
        }
    char message[200];
    snprintf(message, sizeof message, "unknown action '%.64s'", ctx.action);
    s_error(&ctx, "unknown_action", message, NULL);
    json_decref(ctx.msg);
}
