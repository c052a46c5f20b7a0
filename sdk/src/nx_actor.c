/*  =========================================================================
    nx_actor - the client's background thread. It owns the SUB socket, a
    DEALER of its own and the pipe to the API, and does four jobs:

    1. Liveness and reconnection. Every request it sends has a deadline; a
       missed one marks the link down, replaces the DEALER and probes again
       after an exponential backoff with jitter (the client's bounds). The
       first answer after that is a reconnect: the session registers again
       with its secret, and the stream is checked against the history.
    2. Heartbeats for the registered session.
    3. Delivery, exactly once and in seq order. The frontier F is the seq
       up to which every event has been delivered or seen not to match.
       A stream event S = F + 1 with nothing else going on is delivered at
       once (the fast path). Anything else -- a hole in the seqs, a
       reconnect, an unanswered request, a full queue, the once-a-second
       check -- makes the actor read the history from F on (with the
       client's patterns), deliver what it finds, and move F to where the
       page ends. Stream events that arrive meanwhile wait in a bounded
       buffer (dropped beyond it: the history has them) and go out once F
       reaches them; those <= F are duplicates and are dropped. A history
       that starts after F + 1 (retention) yields a gap event first.
    4. Commands from the API over the pipe: SUB, UNSUB, START, RESUME,
       HEARTBEAT; each answered with a status code.
    =========================================================================
*/

#include <string.h>

#include "nx_client.h"

#define S_VERIFY_MS 1000  /* idle check of the stream against the history    */
#define S_BATCH     10000 /* stream messages read per loop turn              */

enum { S_SLOT_DATA, S_SLOT_SESSION, S_SLOT_PROBE, S_SLOTS };
enum { S_Q_NONE, S_Q_HISTORY, S_Q_HEALTH, S_Q_HEARTBEAT, S_Q_REGISTER, S_Q_PING };

typedef struct {
    uint64_t id;    /* request id, 0 when the slot is free                  */
    uint64_t sent;  /* when it was sent, ms (monotonic)                     */
    int kind;       /* S_Q_*                                                */
    uint64_t since; /* history: the frontier it started from                */
    uint64_t until; /* history: inclusive upper bound, 0 for none           */
} s_slot_t;

typedef struct {
    nexus_client_t *client;          /* the client we work for (not owned)          */
    zsock_t *pipe;                   /* to the API                                   */
    zsock_t *sub;                    /* SUB to the broker's XPUB                     */
    zsock_t *dealer;                 /* control requests of our own                  */
    zsock_t *mon;                    /* monitor of sub (connect/disconnect)          */
    char *patterns[NX_PATTERNS_MAX]; /* subscribed patterns                 */
    size_t n_patterns;               /* entries in patterns                          */
    bool have_start;                 /* frontier is known                            */
    uint64_t frontier;               /* F: everything <= F delivered or not matching */
    bool from_oldest;                /* resume from 0: no gap for the first page     */
    bool need_check;                 /* read the history up to its end before trust  */
    uint64_t hint;                   /* highest stream seq seen                      */
    nexus_event_t **pending;         /* stream events waiting for the frontier     */
    size_t p_head;                   /* index of the oldest pending event            */
    size_t p_count;                  /* pending events                               */
    size_t p_max;                    /* capacity of pending                          */
    s_slot_t slot[S_SLOTS];          /* requests in flight                           */
    uint64_t next_id;                /* request id counter                           */
    bool link_ok;                    /* last exchange worked                         */
    bool was_ok;                     /* the link worked once (so a return counts)    */
    uint32_t backoff;                /* current backoff, ms                          */
    uint64_t retry_at;               /* when to probe again while down               */
    uint64_t data_retry_at;          /* after a refused history query, wait           */
    bool heartbeat;                  /* the session is registered: keep it alive     */
    bool need_register;              /* register again (after a reconnect)           */
    uint64_t next_heartbeat;         /* when to send the next heartbeat             */
    uint64_t next_verify;            /* when to check against the history            */
    bool terminated;                 /* $TERM received                               */
} s_actor_t;

/*  ---- Helpers ---------------------------------------------------------- */

static bool s_matches(s_actor_t *self, const char *topic, size_t len)
{
    for (size_t i = 0; i < self->n_patterns; i++)
        if (nx_pattern_match(self->patterns[i], strlen(self->patterns[i]), topic, len))
            return true;
    return false;
}

static void s_stat_add(s_actor_t *self, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&self->client->lock);
    *field += n;
    self->client->stats.last_seq = self->frontier;
    pthread_mutex_unlock(&self->client->lock);
}

static uint32_t s_jitter(uint32_t ms)
{
    uint32_t half = ms / 2;
    return half + (uint32_t)(randof(half + 1));
}

static void s_pending_clear(s_actor_t *self)
{
    while (self->p_count) {
        nexus_event_destroy(&self->pending[self->p_head]);
        self->p_head = (self->p_head + 1) % self->p_max;
        self->p_count--;
    }
}

static void s_pending_push(s_actor_t *self, nexus_event_t *ev)
{
    if (self->p_count == self->p_max) {
        /*  Dropped here, read again from the history later.               */
        nexus_event_destroy(&ev);
        s_stat_add(self, &self->client->stats.queue_drops, 1);
        return;
    }
    self->pending[(self->p_head + self->p_count) % self->p_max] = ev;
    self->p_count++;
}

/*  Sends a request in slot; returns 0 or -1.                               */
static int s_send(s_actor_t *self, int slot, int kind, nx_req_t *req)
{
    msgpack_sbuffer frame;
    msgpack_sbuffer_init(&frame);
    if (!self->dealer)
        return -1;
    uint64_t id = self->next_id++;
    nx_req_frame(req, id, self->client->token, &frame);
    int rc = zsock_resolve(self->dealer)
                 ? zmq_send(zsock_resolve(self->dealer), frame.data, frame.size, ZMQ_DONTWAIT)
                 : -1;
    msgpack_sbuffer_destroy(&frame);
    if (rc < 0)
        return -1;
    self->slot[slot].id = id;
    self->slot[slot].sent = nx_clock_ms();
    self->slot[slot].kind = kind;
    return 0;
}

/*  ---- Link --------------------------------------------------------------*/

static void s_link_down(s_actor_t *self, const char *why)
{
    uint64_t now = nx_clock_ms();
    memset(self->slot, 0, sizeof self->slot);
    zsock_destroy(&self->dealer);
    self->dealer = nx_client_socket(self->client, ZMQ_DEALER, self->client->endpoint);
    if (self->link_ok)
        self->backoff = self->client->backoff_min;
    else if (self->backoff < self->client->backoff_max)
        self->backoff = self->backoff * 2 > self->client->backoff_max ? self->client->backoff_max
                                                                      : self->backoff * 2;
    self->retry_at = now + s_jitter(self->backoff);
    self->link_ok = false;
    if (self->have_start)
        self->need_check = true;
    if (self->heartbeat)
        self->need_register = true;
    nx_client_set_link(self->client, false);
}

static void s_link_up(s_actor_t *self)
{
    if (self->link_ok)
        return;
    if (self->was_ok)
        s_stat_add(self, &self->client->stats.reconnects, 1);
    self->link_ok = true;
    self->was_ok = true;
    self->backoff = self->client->backoff_min;
    nx_client_set_link(self->client, true);
}

/*  ---- Delivery ----------------------------------------------------------*/

/*  Delivers ev (ownership taken) and moves the frontier to its seq.
    Returns 0, or -1 when the queue was full (frontier unchanged).          */
static int s_deliver(s_actor_t *self, nexus_event_t *ev, uint64_t *counter)
{
    uint64_t seq = ev->seq;
    if (nx_client_deliver(self->client, ev) != 0) {
        s_stat_add(self, &self->client->stats.queue_drops, 1);
        return -1;
    }
    self->frontier = seq;
    s_stat_add(self, counter, 1);
    return 0;
}

static bool s_history_busy(s_actor_t *self)
{
    return self->slot[S_SLOT_DATA].id != 0 && self->slot[S_SLOT_DATA].kind == S_Q_HISTORY;
}

/*  Delivers pending events that follow the frontier directly.             */
static void s_drain_pending(s_actor_t *self)
{
    while (self->p_count) {
        nexus_event_t *head = self->pending[self->p_head];
        if (head->seq <= self->frontier) {
            nexus_event_destroy(&self->pending[self->p_head]);
            self->p_head = (self->p_head + 1) % self->p_max;
            self->p_count--;
        } else if (head->seq == self->frontier + 1 && self->have_start && !self->need_check &&
                   !s_history_busy(self) && nx_client_room(self->client) > 0) {
            self->pending[self->p_head] = NULL;
            self->p_head = (self->p_head + 1) % self->p_max;
            self->p_count--;
            /*  Only this thread fills the queue, so the room checked above
                is still there; a failure would only lose a copy that the
                history still has.                                          */
            s_deliver(self, head, &self->client->stats.live_events);
        } else
            return;
    }
}

/*  One stream event from the SUB socket (one frame, nx_codec.h).           */
static void s_on_stream(s_actor_t *self, zmq_msg_t *frame)
{
    nx_event_msg_t st;
    if (nx_event_msg_decode(zmq_msg_data(frame), zmq_msg_size(frame), &st) != 0)
        return;
    const char *t = st.topic;
    size_t tlen = st.topic_len;
    bool matched = s_matches(self, t, tlen);
    if (self->have_start && st.seq <= self->frontier)
        return; /* a duplicate of what was delivered */
    if (st.seq > self->hint)
        self->hint = st.seq;
    bool direct = self->have_start && st.seq == self->frontier + 1 && self->p_count == 0 &&
                  !self->need_check && !s_history_busy(self);
    if (direct && !matched) {
        self->frontier = st.seq;
        return;
    }
    if (!matched)
        return;
    nexus_event_t *ev =
        nx_event_new(st.seq, st.ts, t, tlen, st.source, st.source_len, st.payload, st.payload_len);
    if (!ev)
        return; /* out of memory: the history has it */
    if (direct && nx_client_room(self->client) > 0)
        s_deliver(self, ev, &self->client->stats.live_events);
    else
        s_pending_push(self, ev);
}

static void s_read_stream(s_actor_t *self)
{
    void *h = zsock_resolve(self->sub);
    for (int i = 0; i < S_BATCH; i++) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, h, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return;
        }
        /*  An event is one frame; anything else is not ours: skip it.     */
        bool more = zmq_msg_more(&frame);
        if (!more)
            s_on_stream(self, &frame);
        while (more) {
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, h, 0);
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        zmq_msg_close(&frame);
    }
}

/*  ---- Requests ----------------------------------------------------------*/

static void s_send_history(s_actor_t *self, bool bounded)
{
    size_t room = nx_client_room(self->client);
    uint64_t limit = room < NX_PAGE_MAX ? room : NX_PAGE_MAX;
    if (limit == 0)
        return;
    nx_req_t req;
    nx_req_init(&req, "history");
    nx_req_strs(&req, "patterns", self->patterns, self->n_patterns);
    nx_req_u64(&req, "since_seq", self->frontier);
    uint64_t until = 0;
    if (bounded && self->hint > self->frontier) {
        until = self->hint;
        nx_req_u64(&req, "until_seq", until);
    }
    nx_req_u64(&req, "limit", limit);
    if (s_send(self, S_SLOT_DATA, S_Q_HISTORY, &req) == 0) {
        self->slot[S_SLOT_DATA].since = self->frontier;
        self->slot[S_SLOT_DATA].until = until;
    }
    nx_req_destroy(&req);
    self->next_verify = nx_clock_ms() + S_VERIFY_MS;
}

static void s_on_history(s_actor_t *self, s_slot_t *q, const msgpack_object *rep)
{
    if (q->since != self->frontier)
        return; /* the frontier moved (RESUME): this page is stale */
    s_stat_add(self, &self->client->stats.history_pages, 1);
    uint64_t first = nx_obj_u64(rep, "first_seq"), last = nx_obj_u64(rep, "last_seq");
    uint64_t F = self->frontier, gap_to = 0;
    if (!self->from_oldest) {
        if (first == 0 && last > F)
            gap_to = last;
        else if (first > F + 1)
            gap_to = first - 1;
    }
    self->from_oldest = false;
    if (gap_to) {
        nexus_event_t *gap = nx_event_new_gap(F + 1, gap_to);
        if (!gap || s_deliver(self, gap, &self->client->stats.gaps) != 0)
            return;
    }
    const msgpack_object *events = nx_map_get(rep, "events");
    bool complete = true;
    if (events && events->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < events->via.array.size; i++) {
            const msgpack_object *rec = &events->via.array.ptr[i];
            uint64_t seq = nx_obj_u64(rec, "seq");
            if (seq <= self->frontier)
                continue;
            nexus_event_t *ev = nx_event_from_record(rec);
            if (!ev || s_deliver(self, ev, &self->client->stats.history_events) != 0) {
                complete = false;
                break;
            }
        }
    }
    if (!complete)
        return;
    const msgpack_object *cursor = nx_map_get(rep, "next_cursor");
    if (cursor && cursor->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (cursor->via.u64 > 0 && cursor->via.u64 - 1 > self->frontier)
            self->frontier = cursor->via.u64 - 1;
    } else {
        uint64_t end = q->until ? q->until : last;
        if (end > self->frontier)
            self->frontier = end;
        if (!q->until)
            self->need_check = false;
    }
    s_stat_add(self, &self->client->stats.last_seq, 0);
}

static void s_on_reply(s_actor_t *self, zframe_t *frame)
{
    nx_reply_t rep;
    nx_reply_init(&rep);
    if (nx_reply_parse(&rep, zframe_data(frame), zframe_size(frame)) != 0) {
        nx_reply_destroy(&rep);
        return;
    }
    uint64_t id = nx_reply_id(&rep);
    for (int i = 0; i < S_SLOTS; i++) {
        s_slot_t q = self->slot[i];
        if (q.id == 0 || q.id != id)
            continue;
        memset(&self->slot[i], 0, sizeof self->slot[i]);
        s_link_up(self);
        char msg[256];
        nexus_err_t err = nx_reply_status(&rep, msg, sizeof msg);
        switch (q.kind) {
        case S_Q_HISTORY:
            if (err == NEXUS_OK)
                s_on_history(self, &q, rep.map);
            else
                self->data_retry_at = nx_clock_ms() + s_jitter(self->client->backoff_max);
            break;
        case S_Q_HEALTH:
            if (err == NEXUS_OK && !self->have_start) {
                self->have_start = true;
                self->frontier = nx_obj_u64(rep.map, "last_seq");
            }
            break;
        case S_Q_HEARTBEAT:
            /*  The broker forgot the session (it timed out while we were
                away, or its store was replaced): register it again.       */
            if (err == NEXUS_ERR_NOT_FOUND)
                self->need_register = true;
            break;
        case S_Q_REGISTER:
            if (err == NEXUS_OK) {
                nx_client_take_registration(self->client, rep.map);
                self->need_register = false;
            } else {
                self->next_heartbeat = nx_clock_ms() + self->client->heartbeat_ms;
            }
            break;
        default:
            break;
        }
        break;
    }
    nx_reply_destroy(&rep);
}

static void s_read_replies(s_actor_t *self)
{
    for (int i = 0; i < 1000; i++) {
        zframe_t *frame = NULL;
        void *h = zsock_resolve(self->dealer);
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, h, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        frame = zframe_new(zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
        if (frame)
            s_on_reply(self, frame);
        zframe_destroy(&frame);
    }
}

static void s_read_monitor(s_actor_t *self)
{
    for (int i = 0; i < 100; i++) {
        zmsg_t *msg = NULL;
        zsock_set_rcvtimeo(self->mon, 0);
        msg = zmsg_recv(self->mon);
        if (!msg)
            return;
        zframe_t *head = zmsg_first(msg);
        if (head && zframe_size(head) >= 2) {
            uint16_t event;
            memcpy(&event, zframe_data(head), 2);
            if (event == ZMQ_EVENT_DISCONNECTED) {
                /*  The broker went away (or the path to it): whatever is in
                    flight is lost, do not wait for the timeouts.           */
                if (self->link_ok)
                    s_link_down(self, "disconnected");
                if (self->have_start)
                    self->need_check = true;
            } else if (event == ZMQ_EVENT_CONNECTED && !self->link_ok)
                self->retry_at = nx_clock_ms(); /* the broker is back: probe now */
        }
        zmsg_destroy(&msg);
    }
}

/*  Sends what is due; called every turn.                                   */
static void s_timers(s_actor_t *self)
{
    uint64_t now = nx_clock_ms();
    for (int i = 0; i < S_SLOTS; i++)
        if (self->slot[i].id && now - self->slot[i].sent >= self->client->timeout_ms) {
            s_link_down(self, "request timed out");
            break;
        }
    if (!self->link_ok) {
        if (now >= self->retry_at && !self->slot[S_SLOT_PROBE].id) {
            nx_req_t req;
            nx_req_init(&req, "ping");
            s_send(self, S_SLOT_PROBE, S_Q_PING, &req);
            nx_req_destroy(&req);
        }
        return;
    }
    if (!self->slot[S_SLOT_SESSION].id) {
        if (self->heartbeat && self->need_register) {
            nx_req_t req;
            nx_client_register_req(self->client, &req);
            s_send(self, S_SLOT_SESSION, S_Q_REGISTER, &req);
            nx_req_destroy(&req);
            self->next_heartbeat = now + self->client->heartbeat_ms;
        } else if (self->heartbeat && now >= self->next_heartbeat) {
            nx_req_t req;
            nx_req_init(&req, "session.heartbeat");
            nx_req_session(&req, self->client);
            s_send(self, S_SLOT_SESSION, S_Q_HEARTBEAT, &req);
            nx_req_destroy(&req);
            self->next_heartbeat = now + self->client->heartbeat_ms;
        }
    }
    if (self->slot[S_SLOT_DATA].id || self->n_patterns == 0 || now < self->data_retry_at)
        return;
    if (!self->have_start) {
        nx_req_t req;
        nx_req_init(&req, "health");
        s_send(self, S_SLOT_DATA, S_Q_HEALTH, &req);
        nx_req_destroy(&req);
        return;
    }
    bool behind = self->p_count > 0 || self->hint > self->frontier;
    if (self->need_check || now >= self->next_verify)
        s_send_history(self, false);
    else if (behind)
        s_send_history(self, true);
}

/*  How long the loop may sleep before s_timers has work: until the nearest
    deadline (a request's timeout, a probe, a heartbeat, the next check
    against the history), at most S_IDLE_MS; S_BUSY_MS while something can
    become possible without a socket saying so (room in the client's queue
    for pending events, a history query to send). An idle client wakes
    about once a second instead of twenty times.                            */
#define S_BUSY_MS 50
#define S_IDLE_MS 1000

static long s_wait_ms(s_actor_t *self)
{
    uint64_t now = nx_clock_ms(), next = now + S_IDLE_MS;
#define S_SOONER(at)                                                                               \
    do {                                                                                           \
        if ((at) < next)                                                                           \
            next = (at);                                                                           \
    } while (0)
    for (int i = 0; i < S_SLOTS; i++)
        if (self->slot[i].id)
            S_SOONER(self->slot[i].sent + self->client->timeout_ms);
    if (!self->link_ok) {
        if (!self->slot[S_SLOT_PROBE].id)
            S_SOONER(self->retry_at);
    } else {
        if (!self->slot[S_SLOT_SESSION].id && self->heartbeat)
            S_SOONER(self->need_register ? now : self->next_heartbeat);
        if (self->p_count > 0)
            S_SOONER(now + S_BUSY_MS);
        if (!self->slot[S_SLOT_DATA].id && self->n_patterns) {
            if (now < self->data_retry_at)
                S_SOONER(self->data_retry_at);
            else if (!self->have_start || self->need_check || self->hint > self->frontier)
                S_SOONER(now + S_BUSY_MS);
            else
                S_SOONER(self->next_verify);
        }
    }
#undef S_SOONER
    /*  Something due now that s_timers could not start (a full socket):
        try again at the old pace rather than spin.                         */
    if (next <= now)
        return S_BUSY_MS;
    return (long)(next - now);
}

/*  ---- Commands ------------------------------------------------------------*/

static void s_reply(s_actor_t *self, int code)
{
    char text[16];
    snprintf(text, sizeof text, "%d", code);
    zstr_send(self->pipe, text);
}

static void s_on_command(s_actor_t *self)
{
    zmsg_t *msg = zmsg_recv(self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *cmd = zmsg_popstr(msg);
    char *arg = zmsg_popstr(msg);
    if (!cmd || !strcmp(cmd, "$TERM")) {
        self->terminated = true;
    } else if (!strcmp(cmd, "SUB")) {
        bool known = false;
        for (size_t i = 0; i < self->n_patterns; i++)
            known |= !strcmp(self->patterns[i], arg);
        if (known)
            s_reply(self, NEXUS_OK);
        else if (self->n_patterns == NX_PATTERNS_MAX)
            s_reply(self, NEXUS_ERR_INVALID);
        else {
            self->patterns[self->n_patterns++] = strdup(arg);
            size_t plen = nx_pattern_prefix(arg, strlen(arg));
            char prefix[NX_TOPIC_MAX + 1];
            memcpy(prefix, arg, plen);
            prefix[plen] = 0;
            zsock_set_subscribe(self->sub, prefix);
            s_reply(self, NEXUS_OK);
        }
    } else if (!strcmp(cmd, "UNSUB")) {
        int code = NEXUS_ERR_NOT_FOUND;
        for (size_t i = 0; i < self->n_patterns; i++)
            if (!strcmp(self->patterns[i], arg)) {
                size_t plen = nx_pattern_prefix(arg, strlen(arg));
                char prefix[NX_TOPIC_MAX + 1];
                memcpy(prefix, arg, plen);
                prefix[plen] = 0;
                zsock_set_unsubscribe(self->sub, prefix);
                free(self->patterns[i]);
                self->patterns[i] = self->patterns[--self->n_patterns];
                code = NEXUS_OK;
                break;
            }
        s_reply(self, code);
    } else if (!strcmp(cmd, "START")) {
        if (!self->have_start) {
            self->have_start = true;
            self->frontier = strtoull(arg, NULL, 10);
            if (self->slot[S_SLOT_DATA].kind == S_Q_HEALTH)
                memset(&self->slot[S_SLOT_DATA], 0, sizeof self->slot[0]);
        }
        s_reply(self, NEXUS_OK);
    } else if (!strcmp(cmd, "RESUME")) {
        self->have_start = true;
        self->frontier = strtoull(arg, NULL, 10);
        self->from_oldest = self->frontier == 0;
        self->need_check = true;
        memset(&self->slot[S_SLOT_DATA], 0, sizeof self->slot[0]);
        s_reply(self, NEXUS_OK);
    } else if (!strcmp(cmd, "HEARTBEAT")) {
        self->heartbeat = arg && arg[0] == '1';
        self->need_register = false;
        self->next_heartbeat = nx_clock_ms() + self->client->heartbeat_ms;
        s_reply(self, NEXUS_OK);
    } else
        s_reply(self, NEXUS_ERR_INVALID);
    zstr_free(&cmd);
    zstr_free(&arg);
    zmsg_destroy(&msg);
}

/*  ---- The actor -----------------------------------------------------------*/

void nx_actor_fn(zsock_t *pipe, void *args)
{
    s_actor_t actor, *self = &actor;
    memset(self, 0, sizeof *self);
    self->client = args;
    self->pipe = pipe;
    self->next_id = nx_random_id();
    self->p_max = self->client->queue_max;
    self->pending = calloc(self->p_max, sizeof *self->pending);
    self->backoff = self->client->backoff_min;
    self->sub = nx_client_socket(self->client, ZMQ_SUB, self->client->events_out);
    self->dealer = nx_client_socket(self->client, ZMQ_DEALER, self->client->endpoint);
    if (self->sub)
        zsock_set_rcvhwm(self->sub, 100000);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://nexus-sub-monitor-%p", (void *)self);
    if (self->sub && zmq_socket_monitor(zsock_resolve(self->sub), ep,
                                        ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) == 0)
        self->mon = zsock_new_pair(ep);
    zsock_signal(pipe, 0);

    while (!self->terminated && self->pending && self->sub && self->dealer) {
        long wait = s_wait_ms(self);
        zmq_pollitem_t items[] = {
            {zsock_resolve(pipe), 0, ZMQ_POLLIN, 0},
            {zsock_resolve(self->sub), 0, ZMQ_POLLIN, 0},
            {zsock_resolve(self->dealer), 0, ZMQ_POLLIN, 0},
            {self->mon ? zsock_resolve(self->mon) : NULL, 0, self->mon ? ZMQ_POLLIN : 0, 0},
        };
        int rc = zmq_poll(items, self->mon ? 4 : 3, wait);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (rc > 0) {
            if (items[0].revents & ZMQ_POLLIN)
                s_on_command(self);
            if (items[2].revents & ZMQ_POLLIN)
                s_read_replies(self);
            if (items[1].revents & ZMQ_POLLIN)
                s_read_stream(self);
            if (self->mon && (items[3].revents & ZMQ_POLLIN))
                s_read_monitor(self);
        }
        s_drain_pending(self);
        s_timers(self);
    }
    /*  Wait for $TERM if we left the loop for another reason.              */
    while (!self->terminated) {
        char *cmd = zstr_recv(pipe);
        if (!cmd || !strcmp(cmd, "$TERM"))
            self->terminated = true;
        else
            s_reply(self, NEXUS_ERR_CLOSED);
        zstr_free(&cmd);
    }
    if (self->mon) {
        zmq_socket_monitor(zsock_resolve(self->sub), NULL, 0);
        zsock_destroy(&self->mon);
    }
    if (self->pending)
        s_pending_clear(self);
    free(self->pending);
    for (size_t i = 0; i < self->n_patterns; i++)
        free(self->patterns[i]);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->dealer);
}
