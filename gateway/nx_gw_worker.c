/*  =========================================================================
    nx_gw_worker - the gateway's worker thread and its fabric side.

    The worker runs commands one at a time: what a WebSocket client asked,
    an HTTP request, a connection opening or closing. Commands come from
    the lws thread over an inproc ZeroMQ pipe, bounded in count and bytes;
    when it is full the lws thread answers "busy" at once instead of
    buffering without limit. Between commands the worker sends
    one heartbeat for all the sessions the gateway hosts.

    nx_gw_deliver runs on libnexus's thread for every fabric event: it
    finds the connections whose patterns match, builds the client JSON
    once, and queues the same message to each of them.
    =========================================================================
*/

#include <fcntl.h>
#include <msgpack.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "nx_front.h"
#include "nx_front_event.h"
#include "nx_gw.h"
#include "nx_jdump.h"
#include "nx_log.h"

void nx_gw_wake(nx_gw_t *gw)
{
    /*  Under the lock: the service thread clears gw->lws under it before
        destroying the context, so a late wake never touches freed memory. */
    pthread_mutex_lock(&gw->lock);
    if (gw->lws)
        lws_cancel_service(gw->lws);
    pthread_mutex_unlock(&gw->lock);
}

/*  A command leaves the pipe's count (taken, or its send failed).         */
static void s_uncount(nx_gw_t *gw, const nx_gw_cmd_t *cmd)
{
    pthread_mutex_lock(&gw->lock);
    gw->commands--;
    gw->commands_bytes -= cmd->bytes;
    pthread_mutex_unlock(&gw->lock);
}

int nx_gw_command(nx_gw_t *gw, nx_gw_cmd_t *cmd)
{
    nx_gw_cmd_t *copy = malloc(sizeof *copy);
    if (!copy)
        return -1;
    *copy = *cmd;
    copy->bytes = cmd->text ? strlen(cmd->text) : 0;
    pthread_mutex_lock(&gw->lock);
    /*  A CLOSE is always taken: dropping it would leave its session
        registered for ever. Closes are bounded by the open connections.    */
    if (cmd->kind != NX_GW_CMD_CLOSE &&
        (gw->commands >= gw->commands_max ||
         gw->commands_bytes + copy->bytes > gw->commands_bytes_max)) {
        pthread_mutex_unlock(&gw->lock);
        free(copy);
        return -1;
    }
    gw->commands++;
    gw->commands_bytes += copy->bytes;
    if (gw->commands_bytes > gw->commands_bytes_peak)
        gw->commands_bytes_peak = gw->commands_bytes;
    pthread_mutex_unlock(&gw->lock);
    /*  The pipe has no high-water mark (the bounds above are ours), so the
        send does not block; only the lws thread sends.                    */
    if (zmq_send(zsock_resolve(gw->cmd_push), &copy, sizeof copy, 0) != sizeof copy) {
        s_uncount(gw, copy);
        free(copy);
        return -1;
    }
    cmd->text = NULL; /* owned by the pipe now */
    return 0;
}

/*  The next command, waiting at most wait_us (0: do not wait); NULL when
    none came (or the stop message, a NULL pointer, did).                  */
static nx_gw_cmd_t *s_next_command(nx_gw_t *gw, uint64_t wait_us)
{
    void *pull = zsock_resolve(gw->cmd_pull);
    /*  The wake pipe ends the sleep too: a parked /mcp wait may be done,
        a parked replay may go on.                                          */
    zmq_pollitem_t items[2] = {{pull, 0, ZMQ_POLLIN, 0}, {NULL, gw->wake[0], ZMQ_POLLIN, 0}};
    long ms = (long)((wait_us + 999) / 1000);
    if (zmq_poll(items, 2, ms) <= 0 || !(items[0].revents & ZMQ_POLLIN))
        return NULL;
    nx_gw_cmd_t *cmd = NULL;
    if (zmq_recv(pull, &cmd, sizeof cmd, ZMQ_DONTWAIT) != sizeof cmd || !cmd)
        return NULL;
    s_uncount(gw, cmd);
    return cmd;
}

/*  ---- Fabric events -------------------------------------------------- */

static void s_count_latency(nx_gw_t *gw, uint64_t ts)
{
    static const uint64_t bounds[11] = {100,   250,   500,   1000,   2500,  5000,
                                        10000, 25000, 50000, 100000, 250000};
    uint64_t now = nx_now_us();
    uint64_t lat = now > ts ? now - ts : 0;
    int b = 0;
    while (b < 11 && lat > bounds[b])
        b++;
    __atomic_add_fetch(&gw->stats.lat_buckets[b], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&gw->stats.lat_sum_us, lat, __ATOMIC_RELAXED);
    __atomic_add_fetch(&gw->stats.lat_count, 1, __ATOMIC_RELAXED);
}

/*  The target of a direct message: "to" in its payload map.               */
static bool s_direct_target(nexus_event_t *event, char *to, size_t size)
{
    const struct msgpack_object *o = nexus_event_msgpack(event);
    const msgpack_object *obj = (const msgpack_object *)o;
    if (!obj || obj->type != MSGPACK_OBJECT_MAP)
        return false;
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object *k = &obj->via.map.ptr[i].key;
        const msgpack_object *v = &obj->via.map.ptr[i].val;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 2 &&
            memcmp(k->via.str.ptr, "to", 2) == 0 && v->type == MSGPACK_OBJECT_STR &&
            v->via.str.size < size) {
            memcpy(to, v->via.str.ptr, v->via.str.size);
            to[v->via.str.size] = 0;
            return true;
        }
    }
    return false;
}

/*  False when topic is another session's private one (session.<id>.<more>,
    not a direct message: those have their own rule).                     */
static bool s_own_private(const char *topic, const char *session)
{
    const char *owner;
    size_t olen;
    return !nx_perm_private_owner(topic, strlen(topic), &owner, &olen) ||
           (strlen(session) == olen && memcmp(session, owner, olen) == 0);
}

static void s_count_type(nx_gw_t *gw, const char *topic)
{
    uint64_t sec = nx_gw_mono() / 1000000;
    if (sec != gw->rate_second) {
        for (uint64_t s = gw->rate_second + 1; s <= sec && s <= gw->rate_second + 64; s++)
            gw->rate_slot[s % 64] = 0;
        gw->rate_second = sec;
    }
    gw->rate_slot[sec % 64]++;
    /*  Types are bounded: past 1000 distinct ones the rest count as
        "other", so a flood of unique topics cannot grow this table.       */
    uintptr_t n = (uintptr_t)zhashx_lookup(gw->by_type, topic);
    if (n || zhashx_size(gw->by_type) < 1000)
        zhashx_update(gw->by_type, topic, (void *)(n + 1));
    else {
        n = (uintptr_t)zhashx_lookup(gw->by_type, "other");
        zhashx_update(gw->by_type, "other", (void *)(n + 1));
    }
}

#define S_RECENT_MAX (sizeof(((nx_gw_t *)0)->recent) / sizeof(nx_gw_msg_t *))

/*  Appends msg to the recent ring (lock held), dropping the oldest.        */
static void s_recent_add(nx_gw_t *gw, nx_gw_msg_t *msg)
{
    if (gw->recent_count == S_RECENT_MAX) {
        nx_gw_msg_unref(&gw->recent[gw->recent_head]);
        gw->recent_head = (gw->recent_head + 1) % S_RECENT_MAX;
        gw->recent_count--;
    }
    msg->refs++;
    gw->recent[(gw->recent_head + gw->recent_count) % S_RECENT_MAX] = msg;
    gw->recent_count++;
}

/*  Fills the ring from the history, before any live event it already
    holds; runs on the worker until it succeeds once.                       */
static void s_recent_prefill(nx_gw_t *gw)
{
    nexus_history_t *h = nexus_history_new(gw->client);
    if (!h)
        return;
    static nx_gw_msg_t *older[S_RECENT_MAX];
    size_t n = 0;
    nexus_err_t err = nexus_history_set_page(h, (uint32_t)S_RECENT_MAX, 1);
    if (err == NEXUS_OK) {
        nexus_history_set_max(h, S_RECENT_MAX);
        nexus_event_t *ev = NULL;
        while (n < S_RECENT_MAX && (err = nexus_history_next(h, &ev)) == NEXUS_OK && ev) {
            size_t len;
            char *text = nx_front_event_json(ev, &len);
            /*  The ring is shown to everyone: no direct messages in it.    */
            older[n] = text && nx_front_event_text_visible(text, len, NULL)
                           ? nx_gw_msg_new(text, len, nexus_event_seq(ev))
                           : NULL;
            free(text);
            if (older[n])
                n++;
            nexus_event_destroy(&ev);
        }
    }
    nexus_history_destroy(&h);
    if (err != NEXUS_OK) {
        for (size_t i = 0; i < n; i++)
            free(older[i]);
        return; /* the broker is not there yet: the next turn tries again */
    }
    pthread_mutex_lock(&gw->lock);
    /*  older[] is newest first; the ring may hold live events already.    */
    uint64_t first_live = gw->recent_count ? gw->recent[gw->recent_head]->seq : UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        nx_gw_msg_t *m = older[i];
        if (m->seq < first_live && gw->recent_count < S_RECENT_MAX) {
            gw->recent_head = (gw->recent_head + S_RECENT_MAX - 1) % S_RECENT_MAX;
            gw->recent[gw->recent_head] = m;
            gw->recent_count++;
            if (m->seq > gw->last_seq)
                gw->last_seq = m->seq;
        } else
            nx_gw_msg_unref(&m);
    }
    gw->recent_ready = true;
    pthread_mutex_unlock(&gw->lock);
}

/*  libnexus found the broker serving another store than the one the
    gateway followed (restarted on a fresh data directory, or an older
    copy): its seqs start over. Every client is told with the reset message
    of a cursor that cannot be followed (docs/gateway.md), the seqs the
    connections and the recent ring hold (the old store's) are forgotten,
    so that the new store's events, which come next from its first one,
    are not taken for duplicates.                                          */
static void s_deliver_reset(nx_gw_t *gw, nexus_event_t *event)
{
    nexus_reset_t r;
    if (nexus_event_reset(event, &r) != 0)
        return;
    nx_warn("the broker serves store %s now (seqs %" PRIu64 "..%" PRIu64 "): %s; clients are "
            "told to start over",
            r.store_id, r.first_seq, r.last_seq, r.why);
    json_t *msg = json_pack("{s:s, s:s, s:s, s:I, s:s?, s:s, s:I, s:I}", "type", "reset", "code",
                            nx_front_reset_code(r.cursor_store_id, r.store_id), "why", r.why,
                            "cursor_seq", (json_int_t)r.cursor_seq, "cursor_store_id",
                            r.cursor_store_id[0] ? r.cursor_store_id : NULL, "store_id", r.store_id,
                            "last_seq", (json_int_t)r.last_seq, "since", (json_int_t)0);
    char *text = msg ? nx_json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    pthread_mutex_lock(&gw->lock);
    snprintf(gw->store_id, sizeof gw->store_id, "%s", r.store_id);
    gw->last_seq = 0;
    gw->store_gen++; /* running replays start over on the new store */
    while (gw->recent_count) {
        nx_gw_msg_unref(&gw->recent[gw->recent_head]);
        gw->recent_head = (gw->recent_head + 1) % S_RECENT_MAX;
        gw->recent_count--;
    }
    for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns))
        if (c->kind == NX_GW_WS && c->ready) {
            c->last_seq = 0;
            nx_gw_conn_got_reset(c); /* the old store's seqs */
            /*  Held for a replay: the old store's events.                  */
            for (size_t i = 0; i < c->n_held; i++)
                nx_gw_msg_unref(&c->held[i]);
            c->n_held = 0;
            c->held_overflow = false;
            if (text)
                nx_gw_conn_push_text(gw, c, text);
        }
    pthread_mutex_unlock(&gw->lock);
    free(text);
    nx_gw_wake(gw);
}

void nx_gw_deliver(nexus_event_t *event, void *arg)
{
    nx_gw_t *gw = arg;
    if (nexus_event_kind(event) == NEXUS_EVENT_RESET) {
        s_deliver_reset(gw, event);
        return;
    }
    if (nexus_event_kind(event) == NEXUS_EVENT_GAP) {
        uint64_t from = 0, to = 0;
        nexus_event_gap(event, &from, &to);
        char text[128];
        snprintf(text, sizeof text, "{\"type\":\"gap\",\"from\":%" PRIu64 ",\"to\":%" PRIu64 "}",
                 from, to);
        pthread_mutex_lock(&gw->lock);
        for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns))
            if (c->kind == NX_GW_WS && c->ready && c->n_patterns)
                nx_gw_conn_push_text(gw, c, text);
        pthread_mutex_unlock(&gw->lock);
        nx_gw_wake(gw);
        return;
    }
    const char *topic = nexus_event_topic(event);
    uint64_t seq = nexus_event_seq(event);
    __atomic_add_fetch(&gw->stats.events_fabric, 1, __ATOMIC_RELAXED);
    char to[NX_GW_SESSION_MAX + 1];
    /*  A direct message names its target in its topic (session.<to>.direct)
        or, the old way, in its payload; clients see it as message.direct.  */
    bool direct = nx_front_direct(topic, to, sizeof to);
    if (direct && !to[0] && !s_direct_target(event, to, sizeof to))
        to[0] = 0; /* a direct message with no target reaches nobody */
    const char *type = nx_front_event_type(topic);
    bool perm = nx_auth_enabled(gw->auth);
    /*  Every event goes to the recent ring, so its JSON is built once here
        and shared with the connections it matches.                         */
    size_t len = 0;
    char *text = nx_front_event_json(event, &len);
    nx_gw_msg_t *msg = text ? nx_gw_msg_new(text, len, seq) : NULL;
    free(text);
    bool pushed = false, gap_now = false;
    pthread_mutex_lock(&gw->lock);
    s_count_type(gw, type);
    if (seq > gw->last_seq)
        gw->last_seq = seq;
    if (msg && !direct && s_own_private(topic, "")) /* the ring is shown to every session */
        s_recent_add(gw, msg);
    nx_gw_mcp_deliver(gw, topic);
    for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns)) {
        if (c->kind != NX_GW_WS || c->closed || c->close_code || !c->ready || seq <= c->last_seq)
            continue;
        if (!nx_gw_conn_matches(c, type) && (type == topic || !nx_gw_conn_matches(c, topic)))
            continue;
        /*  A direct message: its target's connections and its sender's,
            as in the history (nx_front_event_visible).                    */
        if (direct && strcmp(c->session, to) != 0 &&
            (!c->session[0] || strcmp(c->session, nexus_event_source(event)) != 0))
            continue;
        /*  Another session's private topic, or one its token may not read. */
        if (!direct && type == topic && !s_own_private(topic, c->session))
            continue;
        if (perm && !nx_gw_may_read(gw, c->auth, type))
            continue;
        if (!msg)
            break;
        if (c->replaying) {
            /*  Held until the replay catches up; too many: replay again.  */
            if (c->n_held < NX_GW_HELD_MAX) {
                if (!c->held)
                    c->held = calloc(NX_GW_HELD_MAX, sizeof *c->held);
                if (c->held) {
                    msg->refs++;
                    c->held[c->n_held++] = msg;
                    continue;
                }
            }
            c->held_overflow = true;
            continue;
        }
        if (nx_gw_conn_push(gw, c, msg) == 0) {
            pushed = true;
            __atomic_add_fetch(&gw->stats.events_out, 1, __ATOMIC_RELAXED);
        } else if (!c->full_since)
            gap_now = true; /* lost, but not for a full queue: told at once */
    }
    nx_gw_msg_unref(&msg);
    pthread_mutex_unlock(&gw->lock);
    if (pushed)
        s_count_latency(gw, nexus_event_ts(event));
    if (pushed || gap_now)
        nx_gw_wake(gw);
}

/*  ---- Commands --------------------------------------------------------- */

static void s_session_ref(nx_gw_t *gw, const char *session, int delta, size_t *count)
{
    pthread_mutex_lock(&gw->lock);
    uintptr_t n = (uintptr_t)zhashx_lookup(gw->sessions, session);
    n = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (n)
        zhashx_update(gw->sessions, session, (void *)n);
    else
        zhashx_delete(gw->sessions, session);
    *count = n;
    pthread_mutex_unlock(&gw->lock);
}

/*  ---- The store a cursor belongs to ------------------------------------- */

/*  health: the broker's store id and last seq; false when it did not
    answer. Remembers the id for welcomes.                                  */
static bool s_store_now(nx_gw_t *gw, char *store, uint64_t *last)
{
    /*  Not while the link is down: the call would hold the worker (and
        every request behind it) for broker_timeout.                      */
    if (!nexus_client_is_connected(gw->client)) {
        store[0] = 0;
        *last = 0;
        return false;
    }
    nx_front_err_t herr = {0};
    json_t *health = nx_front_call(gw->client, "health", json_object(), &herr);
    nx_front_err_reset(&herr);
    const char *id = health ? json_string_value(json_object_get(health, "store_id")) : NULL;
    bool ok = health && id;
    snprintf(store, 40, "%s", id ? id : "");
    *last = health ? (uint64_t)json_integer_value(json_object_get(health, "last_seq")) : 0;
    json_decref(health);
    if (ok) {
        pthread_mutex_lock(&gw->lock);
        snprintf(gw->store_id, sizeof gw->store_id, "%s", store);
        pthread_mutex_unlock(&gw->lock);
    }
    return ok;
}

void nx_gw_store_id(nx_gw_t *gw, char *buf)
{
    pthread_mutex_lock(&gw->lock);
    snprintf(buf, 40, "%s", gw->store_id);
    pthread_mutex_unlock(&gw->lock);
    /*  Asked once, then refreshed with the heartbeats (s_worker) and by
        every resume: a welcome costs no broker round trip.                */
    uint64_t last;
    if (!buf[0])
        s_store_now(gw, buf, &last);
}

void nx_gw_resume_check(nx_gw_t *gw, uint64_t since, const char *store, nx_gw_resume_t *out)
{
    memset(out, 0, sizeof *out);
    out->from = since;
    out->known = s_store_now(gw, out->store_id, &out->last_seq);
    if (!out->known)
        return; /* the replay reports what it cannot read (a gap) */
    if (store && *store && strcmp(store, out->store_id) != 0)
        out->why = "the cursor belongs to another store (a new data directory or another broker)";
    else if (since > out->last_seq)
        out->why = "the cursor is beyond this store's last seq (another store, or a store "
                   "restored from a backup)";
    if (out->why) {
        out->reset = true;
        out->from = 0;
    }
}

char *nx_gw_reset_json(const nx_gw_resume_t *r, uint64_t since, const char *store)
{
    json_t *msg =
        json_pack("{s:s, s:s, s:s, s:I, s:s?, s:s, s:I, s:I}", "type", "reset", "code",
                  nx_front_reset_code(store, r->store_id), "why", r->why, "cursor_seq",
                  (json_int_t)since, "cursor_store_id", store && *store ? store : NULL, "store_id",
                  r->store_id, "last_seq", (json_int_t)r->last_seq, "since", (json_int_t)r->from);
    char *text = msg ? nx_json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    return text;
}

static void s_open(nx_gw_t *gw, nx_gw_cmd_t *cmd)
{
    /*  name\ncapabilities                                                  */
    char *name = cmd->text, *caps = NULL;
    char *nl = name ? strchr(name, '\n') : NULL;
    if (nl) {
        *nl = 0;
        caps = nl + 1;
    }
    size_t refs;
    /*  A watcher of /ws/events acts as no session.                         */
    bool watcher = !cmd->session[0];
    nexus_err_t err = NEXUS_OK;
    if (!watcher) {
        s_session_ref(gw, cmd->session, +1, &refs);
        /*  Kept for a registration by the heartbeat (the broker lost it,
            or the link was down now).                                      */
        if ((name && *name) || (caps && *caps)) {
            char *desc = zsys_sprintf("%s\n%s", name ? name : "", caps ? caps : "");
            pthread_mutex_lock(&gw->lock);
            if (desc)
                zhashx_update(gw->descs, cmd->session, desc);
            pthread_mutex_unlock(&gw->lock);
        }
        /*  With the link down the heartbeat registers it once it is back. */
        err = nexus_client_is_connected(gw->client)
                  ? nx_gw_ensure_session(gw, cmd->session, name && *name ? name : NULL,
                                         caps && *caps ? caps : NULL, 0)
                  : NEXUS_ERR_UNREACHABLE;
    }
    if (err)
        nx_warn("cannot register session %s: %s (retried with the heartbeats)", cmd->session,
                nexus_strerror(err));

    /*  The welcome: who we are, where the fabric is, what just happened.
        Seed 003's connection message (type "connection", message,
        subscriber_count, recent_events) with our fields added.             */
    json_t *welcome = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "connection", "message",
                                "Welcome to the NEXUS event stream", "session_id", cmd->session,
                                "server", "nexus-gateway", "version", NEXUS_VERSION_STRING);
    if (watcher)
        json_object_set_new(welcome, "session_id", json_null());
    pthread_mutex_lock(&gw->lock);
    bool ready = gw->recent_ready;
    uint64_t last_seq = gw->last_seq;
    pthread_mutex_unlock(&gw->lock);
    if (!ready) {
        nx_front_err_t herr = {0};
        json_t *health = nx_front_call(gw->client, "health", json_object(), &herr);
        /*  No answer: the highest seq the gateway saw, not 0 (a resume
            from there would replay, or report lost, everything).           */
        if (health)
            last_seq = (uint64_t)json_integer_value(json_object_get(health, "last_seq"));
        json_decref(health);
        nx_front_err_reset(&herr);
    }
    json_object_set_new(welcome, "last_seq", json_integer((json_int_t)last_seq));
    /*  The store the seqs belong to: a client keeps it with its cursor and
        gives it back with ?since= (store=).                                */
    nx_gw_resume_t resume = {.from = cmd->since};
    char store[40];
    if (cmd->has_since) {
        nx_gw_resume_check(gw, cmd->since, cmd->store, &resume);
        snprintf(store, sizeof store, "%s", resume.store_id);
    } else
        nx_gw_store_id(gw, store);
    json_object_set_new(welcome, "store_id", store[0] ? json_string(store) : json_null());
    if (resume.reset && resume.last_seq > last_seq)
        last_seq = resume.last_seq;
    pthread_mutex_lock(&gw->lock);
    size_t subscribers = 0;
    for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns))
        subscribers += c->kind == NX_GW_WS && !c->closed;
    pthread_mutex_unlock(&gw->lock);
    json_object_set_new(welcome, "subscribers", json_integer((json_int_t)subscribers));
    json_object_set_new(welcome, "subscriber_count", json_integer((json_int_t)subscribers));
    json_t *recent = json_array();
    if (cmd->recent > 0 && ready) {
        pthread_mutex_lock(&gw->lock);
        size_t n = gw->recent_count < (size_t)cmd->recent ? gw->recent_count : (size_t)cmd->recent;
        for (size_t i = gw->recent_count - n; i < gw->recent_count; i++) {
            nx_gw_msg_t *m = gw->recent[(gw->recent_head + i) % S_RECENT_MAX];
            json_t *j = json_loadb((const char *)m->buf + LWS_PRE, m->len, JSON_ALLOW_NUL, NULL);
            if (j)
                json_array_append_new(recent, j);
        }
        pthread_mutex_unlock(&gw->lock);
    } else if (cmd->recent > 0) {
        nexus_history_t *h = nexus_history_new(gw->client);
        if (h && nexus_history_set_page(h, (uint32_t)cmd->recent, 1) == NEXUS_OK) {
            nexus_history_set_max(h, (uint64_t)cmd->recent);
            nexus_event_t *ev = NULL;
            while (nexus_history_next(h, &ev) == NEXUS_OK && ev) {
                size_t len;
                char *text = nx_front_event_json(ev, &len);
                json_t *j = text ? json_loadb(text, len, JSON_ALLOW_NUL, NULL) : NULL;
                free(text);
                if (j && !nx_front_event_visible(j, NULL)) {
                    json_decref(j);
                    j = NULL;
                }
                if (j)
                    json_array_insert_new(recent, 0, j); /* newest first -> oldest first */
                nexus_event_destroy(&ev);
            }
        }
        nexus_history_destroy(&h);
    }
    /*  What its token may not read is not in its welcome either.          */
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *asking = nx_gw_conn_get(gw, cmd->conn);
    const void *auth = asking ? asking->auth : NULL;
    if (asking)
        nx_gw_conn_unref(gw, &asking);
    pthread_mutex_unlock(&gw->lock);
    nx_gw_filter_events(gw, auth, recent);
    /*  What it may subscribe to: a client limited by its token's sub=
        (the dashboard) subscribes to these rather than to '>', which
        would be refused.                                                   */
    json_t *may_read = nx_gw_readable(gw, auth);
    if (may_read)
        json_object_set_new(welcome, "may_read", may_read);
    json_object_set_new(welcome, "recent_events", recent);
    json_object_set_new(welcome, "recent_omitted", json_integer(0));
    char *text = nx_json_dumps(welcome, JSON_COMPACT);
    /*  One that could never fit the send queue leaves out its oldest
        recent events (nx_gw_fit, outside the lock).                       */
    char *fitted = text ? nx_gw_fit(gw, text, strlen(text)) : NULL;
    if (fitted) {
        free(text);
        text = fitted;
    }
    json_decref(welcome);

    /*  A cursor of another store, or beyond this store's last seq, is
        never followed silently (its seqs mean nothing here, and live
        events would be held back up to it): the client is told (reset)
        and the replay starts at this store's first event.                 */
    char *reset = resume.reset ? nx_gw_reset_json(&resume, cmd->since, cmd->store) : NULL;
    if (resume.reset)
        nx_info("websocket %" PRIu64 " (session %s): since=%" PRIu64 " reset: %s", cmd->conn,
                cmd->session, cmd->since, resume.why);
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, cmd->conn);
    if (conn) {
        if (text)
            nx_gw_conn_push_text(gw, conn, text);
        if (reset)
            nx_gw_conn_push_text(gw, conn, reset);
        conn->ready = true;
        /*  A since beyond the last seq that could not be checked (the
            broker did not answer) would hold back every live event up to
            it: resume from the last seq there is instead.                 */
        uint64_t from = resume.from > last_seq && !resume.known ? last_seq : resume.from;
        if (cmd->has_since)
            conn->resume_from = from + 1; /* 0: none */
        nx_gw_conn_unref(gw, &conn);
    }
    free(reset);
    pthread_mutex_unlock(&gw->lock);
    free(text);
    nx_gw_wake(gw);
}

static void s_close(nx_gw_t *gw, nx_gw_cmd_t *cmd)
{
    if (!cmd->session[0])
        return; /* a watcher had no session */
    size_t refs;
    s_session_ref(gw, cmd->session, -1, &refs);
    if (refs)
        return; /* another connection of the same session remains */
    pthread_mutex_lock(&gw->lock);
    zhashx_delete(gw->descs, cmd->session);
    pthread_mutex_unlock(&gw->lock);
    /*  With the link down the broker times the session out itself.       */
    if (nexus_client_is_connected(gw->client)) {
        nx_front_err_t err = {0};
        json_t *fields = json_pack("{s:s}", "session", cmd->session);
        nx_gw_session_secret(gw, cmd->session, fields);
        json_t *rep = nx_front_call(gw->client, "session.unregister", fields, &err);
        json_decref(rep);
        nx_front_err_reset(&err);
    }
    nx_gw_session_forget(gw, cmd->session);
}

static void s_heartbeat(nx_gw_t *gw)
{
    /*  Not while the link is down: the call would hold the worker, and
        every request behind it, for broker_timeout. The first heartbeat
        once it is back registers the sessions the broker lost.           */
    if (!nexus_client_is_connected(gw->client))
        return;
    json_t *list = json_array();
    pthread_mutex_lock(&gw->lock);
    for (void *v = zhashx_first(gw->sessions); v; v = zhashx_next(gw->sessions))
        json_array_append_new(list, json_string(zhashx_cursor(gw->sessions)));
    pthread_mutex_unlock(&gw->lock);
    if (json_array_size(list) == 0) {
        json_decref(list);
        return;
    }
    nx_front_err_t err = {0};
    json_t *rep =
        nx_front_call(gw->client, "session.heartbeat", json_pack("{s:o}", "sessions", list), &err);
    nx_front_err_reset(&err);
    /*  Sessions the broker no longer knows (it restarted and timed them out,
        or we were cut off) are registered again.                          */
    json_t *lost = rep ? json_object_get(rep, "lost") : NULL;
    size_t i;
    json_t *id;
    json_array_foreach(lost, i, id)
    {
        if (!json_is_string(id))
            continue;
        /*  With the name and capabilities its connection opened with.     */
        pthread_mutex_lock(&gw->lock);
        const char *known = zhashx_lookup(gw->descs, json_string_value(id));
        char *desc = known ? strdup(known) : NULL;
        pthread_mutex_unlock(&gw->lock);
        char *caps = desc ? strchr(desc, '\n') : NULL;
        if (caps)
            *caps++ = 0;
        nx_gw_ensure_session(gw, json_string_value(id), desc && *desc ? desc : NULL,
                             caps && *caps ? caps : NULL, 0);
        free(desc);
    }
    json_decref(rep);
}

void nx_gw_broker_link(nx_gw_t *gw, bool up)
{
    /*  The log says when the broker went and came back: requests fail
        meanwhile (503), and an operator looks here first.                 */
    if (up == gw->broker_up)
        return;
    if (up)
        nx_info("the broker at %s answers again", gw->cfg.broker);
    else
        nx_warn("lost the broker at %s: requests fail (503 unavailable) until it answers again",
                gw->cfg.broker);
    gw->broker_up = up;
}

static void *s_worker(void *arg)
{
    nx_gw_t *gw = arg;
    uint64_t next_hb = nx_gw_mono() + gw->cfg.heartbeat * 1000, next_prefill = 0, next_mcp = 0,
             next_replay = UINT64_MAX;
    while (!gw->stop) {
        /*  While the broker is away this would wait out a timeout each
            time: try at most every two seconds.                            */
        if (!gw->recent_ready && nx_gw_mono() >= next_prefill &&
            nexus_client_is_connected(gw->client)) {
            s_recent_prefill(gw);
            next_prefill = nx_gw_mono() + 2000000;
        }
        /*  Sleep until a command, the next heartbeat, or the next try at
            the recent ring while it is not ready.                          */
        uint64_t now = nx_gw_mono(), until_us = next_hb;
        if (!gw->recent_ready && next_prefill < until_us)
            until_us = next_prefill;
        if (next_mcp < until_us)
            until_us = next_mcp;
        if (next_replay < until_us)
            until_us = next_replay;
        nx_gw_cmd_t *cmd = s_next_command(gw, until_us > now ? until_us - now : 0);
        if (cmd) {
            switch (cmd->kind) {
            case NX_GW_CMD_OPEN:
                s_open(gw, cmd);
                break;
            case NX_GW_CMD_CLOSE:
                s_close(gw, cmd);
                break;
            case NX_GW_CMD_ACTION:
                nx_gw_action(gw, cmd->conn, cmd->text);
                break;
            case NX_GW_CMD_HTTP:
                nx_gw_http(gw, cmd->conn);
                break;
            }
            free(cmd->text);
            free(cmd);
            /*  A request that timed out has set the link down, one that
                was answered up: said now, not at the next heartbeat (a
                short outage would be over by then, and never logged).     */
            nx_gw_broker_link(gw, nexus_client_is_connected(gw->client));
        }
        if (nx_gw_mono() >= next_hb) {
            s_heartbeat(gw);
            nx_gw_broker_link(gw, nexus_client_is_connected(gw->client));
            /*  The store the welcomes name: the broker may have been
                started on another data directory since.                    */
            char store[40];
            uint64_t last;
            s_store_now(gw, store, &last);
            /*  An HTTP work call's session lives max(http_session_ttl,
                misses x heartbeat) after the last call acting as it (the
                broker's misses, 3 by default: 10 is ample); then the broker
                has let it go and its secret is of no use. Forgotten early,
                the next call registers the session again all the same.   */
            uint64_t hb = gw->cfg.heartbeat, ttl = gw->cfg.http_session_ttl;
            uint64_t idle_ms = (10 * hb > ttl ? 10 * hb : ttl) + 3 * hb + 1000;
            size_t pruned = nx_gw_secrets_prune(gw, idle_ms * 1000);
            if (pruned)
                nx_debug("forgot the secrets of %zu sessions no call acted as for %" PRIu64 " ms",
                         pruned, idle_ms);
            next_hb = nx_gw_mono() + gw->cfg.heartbeat * 1000;
        }
        /*  After each command, a wake or a deadline: it walks the MCP
            sessions only when woken or when one of them is due.          */
        next_mcp = nx_gw_mcp_service(gw);
        /*  Then one slice of a replay: a command never waits behind more
            than one.                                                       */
        next_replay = nx_gw_replay_service(gw);
    }
    return NULL;
}

int nx_gw_worker_start(nx_gw_t *gw)
{
    if (pipe2(gw->wake, O_CLOEXEC | O_NONBLOCK) || nx_gw_mcp_init(gw) || nx_gw_replay_init(gw))
        return -1;
    return pthread_create(&gw->worker, NULL, s_worker, gw) == 0 ? 0 : -1;
}

void nx_gw_worker_stop(nx_gw_t *gw)
{
    gw->stop = 1;
    /*  Called on the lws thread, the pipe's one sender: a NULL pointer
        wakes the worker, which then sees stop.                            */
    void *none = NULL;
    zmq_send(zsock_resolve(gw->cmd_push), &none, sizeof none, 0);
    pthread_join(gw->worker, NULL);
    nx_gw_mcp_stop(gw);
    nx_gw_replay_stop(gw);
    /*  Under the lock: the lws thread may still close a connection whose
        replay was parked (nx_gw_replay_room), and must find no descriptor
        rather than one the number was given to since.                     */
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < 2; i++) {
        if (gw->wake[i] > 0)
            close(gw->wake[i]);
        gw->wake[i] = -1;
    }
    pthread_mutex_unlock(&gw->lock);
    nx_gw_cmd_t *cmd;
    while ((cmd = s_next_command(gw, 0))) {
        free(cmd->text);
        free(cmd);
    }
}
