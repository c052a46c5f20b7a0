/*  =========================================================================
    nx_gw_conn - a client connection as the three gateway threads share it:
    its registry entry, its bounded send queue, its subscriptions and its
    rate limit. Everything here runs with gw->lock held unless it says
    otherwise.

    The send queue is a ring of shared messages bounded in count and bytes.
    When it is full, new events are not queued: the connection remembers
    the range it lost and, once it drains, is told with a "gap" message
    (never silently); if it stays full for slow_timeout the lws thread
    closes it with 1008.

    Replies and control messages (welcome, gap, errors) have no seq and
    cannot be announced by a gap, so a part of the queue is kept for them:
    events stop at the bounds less a reserve, the rest take the whole
    queue. A client that does not read past even that has lost a reply:
    it is a slow client for good (full_since stays set) and is closed
    once slow_timeout has run, whether or not it reads meanwhile.
    =========================================================================
*/

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "nx_gw.h"
#include "nx_jdump.h"
#include "nx_log.h"
#include "nx_topic.h"

uint64_t nx_gw_mono(void)
{
    return nx_mono_us();
}

nx_gw_msg_t *nx_gw_msg_new(const char *text, size_t len, uint64_t seq)
{
    nx_gw_msg_t *msg = malloc(sizeof *msg + LWS_PRE + len + 1);
    if (!msg)
        return NULL;
    msg->refs = 1;
    msg->len = len;
    msg->seq = seq;
    memcpy(msg->buf + LWS_PRE, text, len);
    msg->buf[LWS_PRE + len] = 0;
    return msg;
}

void nx_gw_msg_unref(nx_gw_msg_t **msg_p)
{
    if (!msg_p || !*msg_p)
        return;
    if (--(*msg_p)->refs == 0)
        free(*msg_p);
    *msg_p = NULL;
}

nx_gw_conn_t *nx_gw_conn_new(nx_gw_t *gw, nx_gw_kind_t kind, struct lws *wsi)
{
    nx_gw_conn_t *conn = calloc(1, sizeof *conn);
    if (!conn)
        return NULL;
    /*  The ring starts small: an idle client costs a few hundred bytes,
        a busy one grows its ring up to queue_messages.                    */
    if (kind == NX_GW_WS) {
        conn->q_cap = gw->cfg.queue_messages < 16 ? gw->cfg.queue_messages : 16;
        conn->queue = calloc(conn->q_cap, sizeof *conn->queue);
        if (!conn->queue) {
            free(conn);
            return NULL;
        }
    }
    conn->kind = kind;
    conn->wsi = wsi;
    conn->refs = 1;
    pthread_mutex_lock(&gw->lock);
    conn->id = ++gw->next_id;
    char key[24];
    snprintf(key, sizeof key, "%" PRIu64, conn->id);
    zhashx_insert(gw->conns, key, conn);
    pthread_mutex_unlock(&gw->lock);
    return conn;
}

nx_gw_conn_t *nx_gw_conn_get(nx_gw_t *gw, uint64_t id)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRIu64, id);
    nx_gw_conn_t *conn = zhashx_lookup(gw->conns, key);
    if (conn)
        conn->refs++;
    return conn;
}

static void s_conn_free(nx_gw_conn_t *conn)
{
    free(conn->queue);
    for (size_t i = 0; i < conn->n_held; i++)
        nx_gw_msg_unref(&conn->held[i]);
    free(conn->held);
    for (size_t i = 0; i < conn->n_patterns; i++)
        free(conn->patterns[i]);
    free(conn->rx);
    free(conn->body);
    free(conn->response);
    free(conn);
}

void nx_gw_conn_answer(nx_gw_t *gw, nx_gw_conn_t *conn, int status, const char *type,
                       char *text)
{
    gw->http_bytes -= conn->response_charged;
    conn->response_charged = 0;
    free(conn->response);
    if (!text)
        text = strdup("{}");
    size_t len = text ? strlen(text) : 0;
    if (len && gw->http_bytes + len > gw->cfg.http_bytes) {
        static uint64_t s_warned;
        uint64_t now = nx_gw_mono();
        if (!s_warned || now - s_warned > 60 * 1000000ull) {
            s_warned = now;
            nx_warn("an HTTP answer of %zu bytes would pass http_bytes (%" PRIu64 " held now, of "
                    "%" PRIu64 "): answered 503 busy; clients are slow to read their answers",
                    len, (uint64_t)gw->http_bytes, gw->cfg.http_bytes);
        }
        free(text);
        text = strdup("{\"error\":{\"code\":\"busy\",\"message\":\"the gateway holds too "
                      "many answers not yet read (http_bytes); try again\"}}");
        len = text ? strlen(text) : 0;
        status = 503;
        type = "application/json";
    }
    conn->status = status;
    conn->content_type = type;
    conn->response = text;
    conn->response_charged = len;
    gw->http_bytes += len;
}

void nx_gw_conn_unref(nx_gw_t *gw, nx_gw_conn_t **conn_p)
{
    if (!conn_p || !*conn_p)
        return;
    nx_gw_conn_t *conn = *conn_p;
    *conn_p = NULL;
    if (--conn->refs > 0)
        return;
    gw->http_bytes -= conn->response_charged;
    /*  The ring is emptied with its real capacity, which only gw knows.   */
    while (conn->q_count) {
        nx_gw_msg_unref(&conn->queue[conn->q_head]);
        conn->q_head = (conn->q_head + 1) % conn->q_cap;
        conn->q_count--;
    }
    s_conn_free(conn);
}

void nx_gw_conn_closed(nx_gw_t *gw, nx_gw_conn_t *conn)
{
    if (conn->closed)
        return;
    conn->closed = true;
    conn->wsi = NULL;
    nx_gw_replay_room(gw, conn); /* a parked replay ends */
    char key[24];
    snprintf(key, sizeof key, "%" PRIu64, conn->id);
    zhashx_delete(gw->conns, key);
    nx_gw_conn_unref(gw, &conn);
}

/*  The part of the queue only replies and control messages may use: an
    eighth, at least one message and 1 KiB, at most 64 messages.           */
static size_t s_reserve_messages(const nx_gw_t *gw)
{
    size_t n = gw->cfg.queue_messages / 8;
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

static size_t s_reserve_bytes(const nx_gw_t *gw)
{
    size_t n = gw->cfg.queue_bytes / 8;
    return n < 1024 ? 1024 : n;
}

bool nx_gw_conn_room(nx_gw_t *gw, nx_gw_conn_t *conn, size_t len, uint64_t seq)
{
    size_t max_messages = gw->cfg.queue_messages, max_bytes = gw->cfg.queue_bytes;
    if (seq) {
        size_t rm = s_reserve_messages(gw), rb = s_reserve_bytes(gw);
        max_messages = max_messages > rm ? max_messages - rm : 0;
        max_bytes = max_bytes > rb ? max_bytes - rb : 0;
    }
    return conn->q_count < max_messages && conn->q_bytes + len <= max_bytes;
}

/*  Starts conn's slow-client clock. The lws thread arms its timer for the
    end of slow_timeout when it next looks at the connections: wake it, as
    nothing else may (a client that does not read makes no callbacks).     */
void nx_gw_conn_full(nx_gw_t *gw, nx_gw_conn_t *conn)
{
    if (conn->full_since)
        return;
    conn->full_since = nx_gw_mono();
    if (gw->lws)
        lws_cancel_service(gw->lws);
}

/*  A reply or control message could not be queued (no room even in the
    reserve, or no memory): the client is slow for good and is closed when
    slow_timeout has run from the time its queue filled.                   */
static void s_control_lost(nx_gw_t *gw, nx_gw_conn_t *conn)
{
    nx_gw_conn_full(gw, conn);
    if (!conn->control_lost)
        nx_warn("session %s: a reply could not be queued (send queue full): closing it",
                conn->session);
    conn->control_lost = true;
}

/*  A message that could not be queued: an event becomes part of the gap
    the client is told about; anything else closes it (s_control_lost).     */
static void s_lost(nx_gw_t *gw, nx_gw_conn_t *conn, const nx_gw_msg_t *msg)
{
    if (msg->seq) {
        nx_gw_conn_got_reset(conn); /* the gap is not got: resumed, it comes */
        if (!conn->lost_from)
            conn->lost_from = msg->seq;
        conn->lost_to = msg->seq;
        __atomic_add_fetch(&gw->stats.drops, 1, __ATOMIC_RELAXED);
    } else
        s_control_lost(gw, conn);
}

/*  An event larger than an empty queue takes (queue_bytes less the
    reserve) is lost to every client whatever they read: it is a gap, told
    at once, not a slow client. Starting the slow clock for it closed a
    client that read everything, 1008 after slow_timeout, and the gap was
    never told (it waits for the queue to drain, and an empty queue never
    does).                                                                  */
static bool s_never_fits(nx_gw_t *gw, nx_gw_conn_t *conn, const nx_gw_msg_t *msg)
{
    size_t q_count = conn->q_count, q_bytes = conn->q_bytes;
    conn->q_count = conn->q_bytes = 0;
    bool never = msg->seq && !nx_gw_conn_room(gw, conn, msg->len, msg->seq);
    conn->q_count = q_count;
    conn->q_bytes = q_bytes;
    if (never) {
        static uint64_t s_warned;
        uint64_t now = nx_gw_mono();
        if (!s_warned || now - s_warned > 60 * 1000000ull) {
            s_warned = now;
            nx_warn("event %" PRIu64 " (%zu bytes as JSON) is larger than a client's send queue "
                    "takes (queue_bytes %" PRIu64 "): its clients get a gap; raise queue_bytes "
                    "above max_payload",
                    msg->seq, msg->len, (uint64_t)gw->cfg.queue_bytes);
        }
        __atomic_add_fetch(&gw->stats.oversize, 1, __ATOMIC_RELAXED);
    }
    return never;
}

int nx_gw_conn_push(nx_gw_t *gw, nx_gw_conn_t *conn, nx_gw_msg_t *msg)
{
    if (conn->closed)
        return 0;
    if (!nx_gw_conn_room(gw, conn, msg->len, msg->seq)) {
        if (!s_never_fits(gw, conn, msg))
            nx_gw_conn_full(gw, conn);
        s_lost(gw, conn, msg);
        return -1;
    }
    if (conn->q_count == conn->q_cap) {
        /*  Double the ring, unrolling it so that head is slot 0.          */
        size_t cap =
            conn->q_cap * 2 > gw->cfg.queue_messages ? gw->cfg.queue_messages : conn->q_cap * 2;
        nx_gw_msg_t **ring = calloc(cap, sizeof *ring);
        if (!ring) {
            s_lost(gw, conn, msg); /* as if the queue were full */
            return -1;
        }
        for (size_t i = 0; i < conn->q_count; i++)
            ring[i] = conn->queue[(conn->q_head + i) % conn->q_cap];
        free(conn->queue);
        conn->queue = ring;
        conn->q_cap = cap;
        conn->q_head = 0;
    }
    msg->refs++;
    conn->queue[(conn->q_head + conn->q_count) % conn->q_cap] = msg;
    conn->q_count++;
    conn->q_bytes += msg->len;
    if (msg->seq && msg->seq > conn->last_seq) {
        conn->last_seq = msg->seq;
        if (!conn->got_from)
            conn->got_from = msg->seq;
    }
    return 0;
}

void nx_gw_conn_got_reset(nx_gw_conn_t *conn)
{
    conn->got_from = conn->skip_from = conn->skip_to = 0;
}

/*  A client that subscribes, receives live events and then resumes from
    an older seq got the events it had already received again, between
    older ones (duplicates, out of order). What it got is one run,
    got_from..last_seq, of every event of its patterns (a gap or a new
    pattern ends the run): the replay skips that run, and sends the
    events after since before it, then the ones after it. Cases:
      1. since at or past last_seq, or nothing got: nothing to skip; the
         events from last_seq to since were not sent here, so the run
         starts again with the next event queued;
      2. since inside the run: skip since + 1 .. last_seq (the replay
         sends only what is newer);
      3. since before the run: skip got_from .. last_seq, and once the
         replay is past it every event from since + 1 on is got.
    A resume while another runs keeps the run the first one had left to
    skip only if it still joins on (else those events come again: never
    lost, at worst sent twice).                                            */
void nx_gw_conn_resume_at(nx_gw_conn_t *conn, uint64_t since)
{
    uint64_t got_from = conn->got_from, got_to = conn->last_seq;
    /*  A replay running: what it had left to skip, when it joins on to
        what was queued so far, is got as well.                            */
    if (conn->skip_from && got_from && conn->skip_from <= got_to + 1)
        got_to = conn->skip_to > got_to ? conn->skip_to : got_to;
    else if (conn->skip_from)
        got_from = 0;
    conn->skip_from = conn->skip_to = 0;
    conn->last_seq = since;
    if (!got_from || since >= got_to) {
        conn->got_from = 0; /* 1 */
        return;
    }
    conn->skip_from = since + 1 > got_from ? since + 1 : got_from;
    conn->skip_to = got_to;
    conn->got_from = since + 1 < got_from ? since + 1 : got_from; /* 2, 3 */
}

/*  The fields of msg a too_large notice keeps: its id (when short enough
    to echo) and action.                                                   */
static void s_keep_id(json_t *notice, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    if ((json_is_string(id) && json_string_length(id) <= NX_GW_ID_MAX) || json_is_integer(id))
        json_object_set(notice, "id", id);
    json_t *action = json_object_get(msg, "action");
    if (json_is_string(action) && json_string_length(action) <= NX_GW_ID_MAX)
        json_object_set(notice, "action", action);
}

/*  A welcome over max: its oldest recent events are left out, as few as
    will do, and recent_omitted says how many. Returns the text, or NULL
    when even no event at all would not fit.                               */
static char *s_fit_welcome(json_t *welcome, size_t len, size_t max)
{
    json_t *recent = json_object_get(welcome, "recent_events");
    size_t n = json_array_size(recent), drop = 0;
    json_int_t omitted = json_integer_value(json_object_get(welcome, "recent_omitted"));
    /*  Room for the digits of recent_omitted once it grows.               */
    size_t total = len + 24;
    while (drop < n && total > max) {
        char *one = nx_json_dumps(json_array_get(recent, drop), JSON_COMPACT | JSON_ENCODE_ANY);
        size_t size = one ? strlen(one) + 1 : 0; /* and its comma */
        free(one);
        total = total > size ? total - size : 0;
        drop++;
    }
    while (true) {
        for (size_t i = 0; i < drop && json_array_size(recent); i++)
            json_array_remove(recent, 0);
        omitted += (json_int_t)drop;
        json_object_set_new(welcome, "recent_omitted", json_integer(omitted));
        char *text = nx_json_dumps(welcome, JSON_COMPACT);
        if (!text || strlen(text) <= max || json_array_size(recent) == 0) {
            if (text && strlen(text) > max) {
                free(text);
                text = NULL;
            }
            return text;
        }
        free(text);
        drop = 1; /* the estimate fell short: one more each turn */
    }
}

char *nx_gw_fit(nx_gw_t *gw, const char *text, size_t len)
{
    size_t max = gw->cfg.queue_bytes / 2;
    if (len <= max)
        return NULL;
    json_t *msg = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    const char *type = json_string_value(json_object_get(msg, "type"));
    char *out = NULL;
    if (type && strcmp(type, "connection") == 0)
        out = s_fit_welcome(msg, len, max);
    if (!out) {
        char message[200];
        snprintf(message, sizeof message,
                 "the %s (%zu bytes) is over what this connection may queue (queue_bytes %" PRIu64
                 "): ask for less (a smaller limit)",
                 type && strcmp(type, "reply") == 0 ? "reply" : "message", len,
                 (uint64_t)gw->cfg.queue_bytes);
        bool reply = !type || strcmp(type, "reply") == 0;
        json_t *notice = json_pack("{s:s, s:{s:s, s:s}}", "type", reply ? "reply" : "error",
                                   "error", "code", "too_large", "message", message);
        if (notice && reply) {
            json_object_set_new(notice, "ok", json_false());
            s_keep_id(notice, msg);
        }
        out = notice ? nx_json_dumps(notice, JSON_COMPACT) : NULL;
        json_decref(notice);
        __atomic_add_fetch(&gw->stats.errors, 1, __ATOMIC_RELAXED);
    }
    json_decref(msg);
    return out;
}

int nx_gw_conn_push_text(nx_gw_t *gw, nx_gw_conn_t *conn, const char *text)
{
    if (conn->closed)
        return 0;
    /*  Whatever is queued here must reach the client; one that could never
        fit the queue would close a client that reads, as if it did not.   */
    size_t len = strlen(text);
    char *fitted = nx_gw_fit(gw, text, len);
    if (fitted) {
        text = fitted;
        len = strlen(fitted);
    }
    nx_gw_msg_t *msg = nx_gw_msg_new(text, len, 0);
    free(fitted);
    if (!msg) {
        s_control_lost(gw, conn);
        return -1;
    }
    int rc = nx_gw_conn_push(gw, conn, msg);
    nx_gw_msg_unref(&msg);
    return rc;
}

nx_gw_msg_t *nx_gw_conn_pop(nx_gw_t *gw, nx_gw_conn_t *conn)
{
    if (!conn->q_count)
        return NULL;
    nx_gw_msg_t *msg = conn->queue[conn->q_head];
    conn->queue[conn->q_head] = NULL;
    conn->q_head = (conn->q_head + 1) % conn->q_cap;
    conn->q_count--;
    conn->q_bytes -= msg->len;
    /*  A client that lost a reply stays slow until it is closed.          */
    if (conn->full_since && !conn->control_lost && conn->q_count < gw->cfg.queue_messages / 2 &&
        conn->q_bytes < gw->cfg.queue_bytes / 2)
        conn->full_since = 0;
    /*  Half written down (or a message that did not fit may fit now): a
        replay waiting for room goes on.                                   */
    if (conn->replay_parked &&
        ((conn->q_count < gw->cfg.queue_messages / 2 && conn->q_bytes < gw->cfg.queue_bytes / 2) ||
         !conn->q_count))
        nx_gw_replay_room(gw, conn);
    return msg;
}

bool nx_gw_conn_matches(nx_gw_conn_t *conn, const char *topic)
{
    size_t tlen = strlen(topic);
    for (size_t i = 0; i < conn->n_patterns; i++)
        if (nx_pattern_match(conn->patterns[i], strlen(conn->patterns[i]), topic, tlen))
            return true;
    return false;
}

/*  Forgets the buckets that have refilled: they are as good as new. Keeps
    the table to the sessions that sent something within a refill time.    */
static void s_buckets_prune(nx_gw_t *gw, uint64_t now)
{
    uint64_t refill_us = (uint64_t)((double)gw->cfg.burst / (double)gw->cfg.rate * 1e6) + 1000000;
    zlistx_t *old = zlistx_new();
    for (nx_gw_bucket_t *b = zhashx_first(gw->buckets); b; b = zhashx_next(gw->buckets))
        if (now - b->at > refill_us)
            zlistx_add_end(old, (void *)zhashx_cursor(gw->buckets));
    for (const char *k = zlistx_first(old); k; k = zlistx_next(old))
        zhashx_delete(gw->buckets, k);
    zlistx_destroy(&old);
}

bool nx_gw_conn_rate_ok(nx_gw_t *gw, nx_gw_conn_t *conn)
{
    return nx_gw_session_rate_ok(gw, conn->session);
}

/*  Refills b to now and takes a token: true when a request may go.       */
static bool s_bucket_take(nx_gw_t *gw, nx_gw_bucket_t *b, uint64_t now)
{
    b->tokens += (double)(now - b->at) * (double)gw->cfg.rate / 1e6;
    b->at = now;
    if (b->tokens > (double)gw->cfg.burst)
        b->tokens = (double)gw->cfg.burst;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

/*  Takes a token from key's bucket in table, which starts full. Out of
    memory, a request is let through rather than refused.                  */
static bool s_table_take(nx_gw_t *gw, zhashx_t *table, const char *key, uint64_t now)
{
    nx_gw_bucket_t *b = zhashx_lookup(table, key);
    if (!b) {
        b = malloc(sizeof *b);
        if (!b)
            return true;
        *b = (nx_gw_bucket_t){(double)gw->cfg.burst, now};
        zhashx_insert(table, key, b);
    }
    return s_bucket_take(gw, b, now);
}

bool nx_gw_session_rate_ok(nx_gw_t *gw, const char *session)
{
    uint64_t now = nx_gw_mono();
    if (!zhashx_lookup(gw->buckets, session) &&
        zhashx_size(gw->buckets) >= 2 * zhashx_size(gw->conns) + 1024)
        s_buckets_prune(gw, now);
    return s_table_take(gw, gw->buckets, session, now);
}

/*  Makes room for one more address: forgets every bucket that has refilled
    (as good as new), else the fullest one, so that an address that spent
    its burst is the last to be forgotten.                                 */
static void s_addrs_evict(nx_gw_t *gw, uint64_t now)
{
    zlistx_t *full = zlistx_new();
    const char *fullest = NULL;
    double most = -1.0;
    for (nx_gw_bucket_t *b = zhashx_first(gw->addr_buckets); b; b = zhashx_next(gw->addr_buckets)) {
        double level = b->tokens + (double)(now - b->at) * (double)gw->cfg.rate / 1e6;
        if (level >= (double)gw->cfg.burst)
            zlistx_add_end(full, (void *)zhashx_cursor(gw->addr_buckets));
        else if (level > most) {
            most = level;
            fullest = zhashx_cursor(gw->addr_buckets);
        }
    }
    if (zlistx_size(full) == 0 && fullest)
        zlistx_add_end(full, (void *)fullest);
    for (const char *k = zlistx_first(full); k; k = zlistx_next(full))
        zhashx_delete(gw->addr_buckets, k);
    zlistx_destroy(&full);
}

bool nx_gw_addr_rate_ok(nx_gw_t *gw, const char *addr)
{
    uint64_t now = nx_gw_mono();
    if (!zhashx_lookup(gw->addr_buckets, addr) && zhashx_size(gw->addr_buckets) >= NX_GW_ADDRS)
        s_addrs_evict(gw, now);
    return s_table_take(gw, gw->addr_buckets, addr, now);
}
