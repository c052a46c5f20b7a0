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

    The fast path costs no allocation, no lock and no system call per
    event. While the stream flows the thread reads the SUB socket alone,
    blocking in it between bursts, and looks at its other sockets every
    S_HOT_POLL_MS. In callback mode an event is a view over the received
    frame (the callback borrows it); for nexus_recv the events of a burst
    go to the client's queue under one lock (at most S_PUSH_MAX at a
    time), with one wake-up. Counters are added to the client's once per
    burst.

    Every reply the thread gets passes through s_on_reply, which reads its
    top-level fields with nx_page_parse (store_id included).

    5. Store identity. The frontier is a seq of one store, whose id the
       thread keeps with it (from the health that fixed the start, or the
       cursor given to RESUME). After a RESUME and after every reconnect
       it asks `health` before reading on: another store, or a frontier
       above the store's last seq (an older backup restored), and the
       frontier cannot be followed. Every history page is checked the same
       way (its store_id). Then the thread starts over: the frontier goes
       to 0 in the new store, and the first page read from there brings
       the reset event (with that store's range) ahead of its events, so
       the application is told before anything of the new store arrives
       and nothing is skipped.
    =========================================================================
*/

#include <string.h>

#include "nx_client.h"

#define S_VERIFY_MS 1000 /* idle check of the stream against the history     */
#define S_BATCH     4096 /* stream messages read before the other sockets   */
#define S_PUSH_MAX  256  /* events handed to the nexus_recv queue per lock  */
#define S_HOT_POLL_MS                                                                              \
    2 /* while the stream flows, the other sockets at                                              \
         least this often                              */

enum { S_SLOT_DATA, S_SLOT_SESSION, S_SLOT_PROBE, S_SLOTS };
enum { S_Q_NONE, S_Q_HISTORY, S_Q_HEALTH, S_Q_HEARTBEAT, S_Q_REGISTER, S_Q_PING };
enum { S_PAT_ALL, S_PAT_LITERAL, S_PAT_WILD };

typedef struct {
    uint64_t id;    /* request id, 0 when the slot is free                  */
    uint64_t sent;  /* when it was sent, ms (monotonic)                     */
    int kind;       /* S_Q_*                                                */
    uint64_t since; /* history: the frontier it started from                */
    uint64_t until; /* history: inclusive upper bound, 0 for none           */
    unsigned gen;   /* history: the patterns' generation it asked for       */
} s_slot_t;

typedef struct {
    char *text; /* the pattern, NUL-terminated                          */
    size_t len; /* its length                                           */
    int kind;   /* S_PAT_*: how to match it                             */
} s_pattern_t;

typedef struct {
    nexus_client_t *client;                /* the client we work for (not owned)       */
    zsock_t *pipe;                         /* to the API                                */
    zsock_t *sub;                          /* SUB to the broker's XPUB                  */
    void *sub_h;                           /* its libzmq handle                         */
    zsock_t *dealer;                       /* control requests of our own               */
    zsock_t *mon;                          /* monitor of sub (connect/disconnect)       */
    s_pattern_t patterns[NX_PATTERNS_MAX]; /* subscribed patterns                       */
    size_t n_patterns;                     /* entries in patterns                       */
    unsigned patterns_gen;                 /* changes with every pattern added/removed  */
    bool match_all;                        /* some pattern matches every topic          */
    char *pattern_texts[NX_PATTERNS_MAX];  /* the texts, for history requests           */
    bool have_start;                       /* frontier is known                         */
    uint64_t frontier;                     /* F: everything <= F delivered/not matching */
    bool from_oldest;                      /* resume from 0: no gap for the first page  */
    bool need_check;                       /* read the history to its end before trust  */
    uint64_t hint;                         /* highest stream seq seen                   */
    nexus_event_t **pending;               /* stream events waiting for the frontier    */
    size_t p_head;                         /* index of the oldest pending event         */
    size_t p_count;                        /* pending events                            */
    size_t p_max;                          /* capacity of pending                       */
    s_slot_t slot[S_SLOTS];                /* requests in flight                        */
    uint64_t next_id;                      /* request id counter                        */
    bool link_ok;                          /* last exchange worked                      */
    bool was_ok;                           /* the link worked once (so a return counts) */
    uint32_t backoff;                      /* current backoff, ms                       */
    bool no_route;                         /* a send found no connection                */
    uint64_t retry_at;                     /* when to probe again while down            */
    uint64_t told_at;                      /* last probe for the API's link flag        */
    uint64_t data_retry_at;                /* after a refused history query, wait       */
    bool heartbeat;                        /* the session is registered: keep it alive  */
    bool need_register;                    /* register again (after a reconnect)        */
    uint64_t next_heartbeat;               /* when to send the next heartbeat           */
    uint64_t next_verify;                  /* when to check against the history         */
    bool terminated;                       /* $TERM received                            */
    bool callback;                         /* the client delivers to a callback         */
    nx_event_view_t view;                  /* the event a callback borrows              */
    nexus_event_t *push[S_PUSH_MAX];       /* owned events on their way to the queue    */
    size_t n_push;                         /* entries in push                           */
    size_t room;                           /* queue slots free, as last seen, minus push */
    nexus_client_stats_t delta;            /* counts not yet added to the client's      */
    unsigned gen;                          /* client ep_gen the sockets were made for   */
    uint64_t next_role;                    /* with a list: when to ask the role again   */
    uint64_t dealer_made;                  /* when the DEALER was made, ms             */
    bool hot;                              /* the stream flowed in the last turn        */
    uint64_t hot_until;                    /* when to look at the other sockets again   */
    char store[NEXUS_STORE_ID_MAX];        /* the store F belongs to ("": not known)    */
    bool need_verify;                      /* ask health: is F still the broker's?      */
    bool reset_pending;                    /* the reset event is still to be delivered  */
    nx_reset_t reset;                      /* what it will say                          */
} s_actor_t;

#define S_WHY_STORE                                                                                \
    "the cursor belongs to another store (the broker runs on another data directory, or the "      \
    "endpoint reaches another broker)"
#define S_WHY_BEHIND "the cursor is beyond this store's last seq (a store restored from a backup?)"

/*  ---- Helpers ---------------------------------------------------------- */

static bool s_matches(s_actor_t *self, const char *topic, size_t len)
{
    if (self->match_all)
        return true;
    for (size_t i = 0; i < self->n_patterns; i++) {
        const s_pattern_t *p = &self->patterns[i];
        if (p->kind == S_PAT_LITERAL ? p->len == len && memcmp(p->text, topic, len) == 0
                                     : nx_pattern_match(p->text, p->len, topic, len))
            return true;
    }
    return false;
}

static void s_patterns_changed(s_actor_t *self)
{
    self->patterns_gen++;
    self->match_all = false;
    for (size_t i = 0; i < self->n_patterns; i++) {
        self->pattern_texts[i] = self->patterns[i].text;
        self->match_all |= self->patterns[i].kind == S_PAT_ALL;
    }
}

/*  Hands the events of the burst to the queue and the counts to the
    client, under one lock; learns the room left in the queue.             */
static void s_flush(s_actor_t *self)
{
    size_t room =
        nx_client_take(self->client, self->push, self->n_push, &self->delta, self->frontier);
    self->n_push = 0;
    memset(&self->delta, 0, sizeof self->delta);
    self->room = room;
}

/*  Free queue slots (SIZE_MAX in callback mode), asking the client when
    the last figure is used up.                                             */
static size_t s_room(s_actor_t *self)
{
    if (self->callback)
        return SIZE_MAX;
    if (self->room == 0)
        s_flush(self);
    return self->room;
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
        self->delta.queue_drops++;
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
    if (rc < 0) {
        /*  The socket queues nothing without a connection (ZMQ_IMMEDIATE):
            while the link counts as up, that is the news that it is not
            (s_timers takes it down).                                       */
        if (zmq_errno() == EAGAIN)
            self->no_route = true;
        return -1;
    }
    self->slot[slot].id = id;
    self->slot[slot].sent = nx_clock_ms();
    self->slot[slot].kind = kind;
    return 0;
}

/*  ---- Store identity ----------------------------------------------------*/

/*  F belongs to store id from now on.                                      */
static void s_store_adopt(s_actor_t *self, const char *id)
{
    if (!strcmp(self->store, id))
        return;
    nx_store_id_copy(self->store, id);
    nx_view_set_store(&self->view, id);
    nx_client_set_store(self->client, id);
}

/*  The frontier cannot be followed in store id: start over from its first
    event; the reset event goes out with the first page read from there.
    A second change before that keeps the first cursor.                     */
static void s_reset_begin(s_actor_t *self, const char *why, const char *id)
{
    if (!self->reset_pending) {
        self->reset.why = why;
        nx_store_id_copy(self->reset.cursor_store_id, self->store);
        self->reset.cursor_seq = self->frontier;
        self->reset_pending = true;
    }
    s_store_adopt(self, id);
    self->frontier = 0;
    self->from_oldest = true;
    self->need_check = true;
    self->need_verify = false;
    self->hint = 0;
    s_pending_clear(self); /* seqs of the old store */
}

/*  ---- Link --------------------------------------------------------------*/

static void s_sockets_current(s_actor_t *self);

static void s_link_down(s_actor_t *self, const char *why)
{
    (void)why;
    uint64_t now = nx_clock_ms();
    bool was_ok = self->link_ok;
    memset(self->slot, 0, sizeof self->slot);
    zsock_destroy(&self->dealer);
    /*  With a list of brokers: on to the next one (or to where the client
        moved already), probed at once.                                    */
    unsigned gen = self->gen;
    nx_client_failover(self->client, gen, NULL);
    s_sockets_current(self);
    if (!self->dealer)
        self->dealer = nx_client_control_dealer(self->client);
    self->dealer_made = now;
    if (was_ok)
        self->backoff = self->client->backoff_min;
    else if (self->backoff < self->client->backoff_max)
        self->backoff = self->backoff * 2 > self->client->backoff_max ? self->client->backoff_max
                                                                      : self->backoff * 2;
    self->retry_at = self->gen != gen && was_ok ? now : now + s_jitter(self->backoff);
    self->link_ok = false;
    if (self->have_start)
        self->need_check = self->need_verify = true;
    if (self->heartbeat)
        self->need_register = true;
    nx_client_set_link(self->client, false);
}

/*  Makes the SUB (with its monitor and every pattern's prefix) for the
    broker in use.                                                          */
static void s_sub_make(s_actor_t *self)
{
    nexus_client_t *c = self->client;
    self->sub = nx_client_socket(c, ZMQ_SUB, nx_client_ep(c)->out);
    self->sub_h = self->sub ? zsock_resolve(self->sub) : NULL;
    if (!self->sub)
        return;
    zsock_set_rcvhwm(self->sub, 100000);
    for (size_t i = 0; i < self->n_patterns; i++) {
        char prefix[NX_TOPIC_MAX + 1];
        size_t plen = nx_pattern_prefix(self->patterns[i].text, self->patterns[i].len);
        memcpy(prefix, self->patterns[i].text, plen);
        prefix[plen] = 0;
        zsock_set_subscribe(self->sub, prefix);
    }
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://nexus-sub-monitor-%p-%u", (void *)self, self->gen);
    if (zmq_socket_monitor(self->sub_h, ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) == 0)
        self->mon = zsock_new_pair(ep);
}

static void s_sub_end(s_actor_t *self)
{
    if (self->mon) {
        zmq_socket_monitor(self->sub_h, NULL, 0);
        zsock_destroy(&self->mon);
    }
    zsock_destroy(&self->sub);
    self->sub_h = NULL;
}

/*  When the client moved to another broker of its list: the sockets go
    there, what was in flight is forgotten, the session registers again
    and the stream is checked against the new broker's history from the
    frontier on (same store identity: no gap, no duplicate).               */
static void s_sockets_current(s_actor_t *self)
{
    unsigned gen = nx_client_gen(self->client);
    if (gen == self->gen)
        return;
    self->gen = gen;
    memset(self->slot, 0, sizeof self->slot);
    zsock_destroy(&self->dealer);
    self->dealer = nx_client_control_dealer(self->client);
    self->dealer_made = nx_clock_ms();
    s_sub_end(self);
    s_sub_make(self);
    s_pending_clear(self);
    self->hot = false;
    if (self->have_start)
        self->need_check = true;
    if (self->heartbeat)
        self->need_register = true;
    if (self->link_ok) {
        self->link_ok = false;
        nx_client_set_link(self->client, false);
    }
    self->retry_at = nx_clock_ms();
}

static void s_link_up(s_actor_t *self)
{
    /*  The client's flag has two writers: the API's calls set it false
        when their own socket found no connection. An answer here says the
        broker is there, and nothing else would say so again while the
        callers (the gateway) hold back for the flag.                     */
    if (self->link_ok) {
        if (!nexus_client_is_connected(self->client))
            nx_client_set_link(self->client, true);
        return;
    }
    if (self->was_ok)
        self->delta.reconnects++;
    self->link_ok = true;
    self->was_ok = true;
    self->backoff = self->client->backoff_min;
    nx_client_set_link(self->client, true);
}

/*  ---- Delivery ----------------------------------------------------------*/

/*  Hands one event to the application: in callback mode as a view over m,
    else as an owned copy on its way to the queue. Moves the frontier to
    its seq and counts it. Returns 0, or -1 (no room in the queue, out of
    memory: frontier unchanged, the history still has it).                  */
static int s_emit(s_actor_t *self, const nx_event_msg_t *m, uint64_t gap_from, uint64_t *counter)
{
    if (self->callback) {
        if (gap_from)
            nx_view_set_gap(&self->view, gap_from, m->seq);
        else
            nx_view_set_msg(&self->view, m);
        self->client->cb(&self->view.ev, self->client->cb_arg);
        nx_view_clear(&self->view);
    } else {
        if (s_room(self) == 0) {
            self->delta.queue_drops++;
            return -1;
        }
        nexus_event_t *ev = gap_from
                                ? nx_event_new_gap(gap_from, m->seq)
                                : nx_event_new(m->seq, m->ts, m->topic, m->topic_len, m->source,
                                               m->source_len, m->payload, m->payload_len);
        if (!ev)
            return -1;
        memcpy(ev->store_id, self->store, sizeof ev->store_id);
        self->push[self->n_push++] = ev;
        self->room--;
        if (self->n_push == S_PUSH_MAX)
            s_flush(self);
    }
    self->frontier = m->seq;
    (*counter)++;
    return 0;
}

/*  The same for an owned event (from the pending buffer): given away.     */
static void s_emit_owned(s_actor_t *self, nexus_event_t *ev)
{
    if (self->callback) {
        nx_event_msg_t m = {.topic = ev->topic,
                            .topic_len = strlen(ev->topic),
                            .seq = ev->seq,
                            .ts = ev->ts,
                            .source = ev->source,
                            .source_len = strlen(ev->source),
                            .payload = ev->payload,
                            .payload_len = ev->payload_len};
        s_emit(self, &m, 0, &self->delta.live_events);
        nexus_event_destroy(&ev);
        return;
    }
    memcpy(ev->store_id, self->store, sizeof ev->store_id);
    self->push[self->n_push++] = ev;
    self->room--;
    self->frontier = ev->seq;
    self->delta.live_events++;
    if (self->n_push == S_PUSH_MAX)
        s_flush(self);
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
                   !s_history_busy(self) && s_room(self) > 0) {
            self->pending[self->p_head] = NULL;
            self->p_head = (self->p_head + 1) % self->p_max;
            self->p_count--;
            s_emit_owned(self, head);
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
    if (self->have_start && st.seq <= self->frontier)
        return; /* a duplicate of what was delivered */
    if (st.seq > self->hint)
        self->hint = st.seq;
    bool matched = s_matches(self, st.topic, st.topic_len);
    bool direct = self->have_start && st.seq == self->frontier + 1 && self->p_count == 0 &&
                  !self->need_check && !s_history_busy(self);
    if (!matched) {
        if (direct)
            self->frontier = st.seq;
        return;
    }
    if (direct && s_room(self) > 0 && s_emit(self, &st, 0, &self->delta.live_events) == 0)
        return;
    nexus_event_t *ev = nx_event_new(st.seq, st.ts, st.topic, st.topic_len, st.source,
                                     st.source_len, st.payload, st.payload_len);
    if (ev)
        s_pending_push(self, ev); /* else out of memory: the history has it */
}

/*  Reads stream frames: the first waits up to wait_ms (0: not at all), the
    others take only what is there, S_BATCH at most. Returns how many.     */
static int s_read_stream(s_actor_t *self, int wait_ms)
{
    void *h = self->sub_h;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    int n = 0;
    if (wait_ms > 0) {
        zmq_setsockopt(h, ZMQ_RCVTIMEO, &wait_ms, sizeof wait_ms);
        if (zmq_msg_recv(&frame, h, 0) < 0) {
            zmq_msg_close(&frame);
            return 0;
        }
    } else if (zmq_msg_recv(&frame, h, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return 0;
    }
    do {
        n++;
        /*  An event is one frame; anything else is not ours: skip it.     */
        if (!zmq_msg_more(&frame))
            s_on_stream(self, &frame);
        else {
            while (zmq_msg_more(&frame) && zmq_msg_recv(&frame, h, 0) >= 0)
                ;
        }
    } while (n < S_BATCH && zmq_msg_recv(&frame, h, ZMQ_DONTWAIT) >= 0);
    zmq_msg_close(&frame);
    if (self->p_count)
        s_drain_pending(self);
    s_flush(self);
    return n;
}

/*  ---- Requests ----------------------------------------------------------*/

static void s_send_history(s_actor_t *self, bool bounded)
{
    size_t room = s_room(self);
    uint64_t limit = room < NX_PAGE_MAX ? room : NX_PAGE_MAX;
    if (limit == 0)
        return;
    nx_req_t req;
    nx_req_init(&req, "history");
    nx_req_strs(&req, "patterns", self->pattern_texts, self->n_patterns);
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
        self->slot[S_SLOT_DATA].gen = self->patterns_gen;
    }
    nx_req_destroy(&req);
    self->next_verify = nx_clock_ms() + S_VERIFY_MS;
}

/*  Hands the reset event to the application (the frontier stays at 0 of
    the new store). Returns 0, or -1 when the queue has no room.           */
static int s_emit_reset(s_actor_t *self)
{
    if (self->callback) {
        nx_view_set_reset(&self->view, &self->reset);
        self->client->cb(&self->view.ev, self->client->cb_arg);
        nx_view_clear(&self->view);
        return 0;
    }
    if (s_room(self) == 0)
        return -1;
    nexus_event_t *ev = nx_event_new_reset(&self->reset);
    if (!ev)
        return -1;
    self->push[self->n_push++] = ev;
    self->room--;
    if (self->n_push == S_PUSH_MAX)
        s_flush(self);
    return 0;
}

static void s_on_history(s_actor_t *self, s_slot_t *q, nx_page_t *pg)
{
    if (q->since != self->frontier)
        return; /* the frontier moved (RESUME): this page is stale */
    /*  A pattern came (or went) after it was asked: the page lacks its
        events, and taking it would move the frontier past them.         */
    if (q->gen != self->patterns_gen) {
        self->need_check = true;
        return;
    }
    if (pg->store_id[0]) {
        if (!self->store[0])
            s_store_adopt(self, pg->store_id);
        else if (strcmp(pg->store_id, self->store) != 0) {
            /*  The seqs of this page are another store's: none of them.   */
            s_reset_begin(self, S_WHY_STORE, pg->store_id);
            return;
        }
    }
    if (self->reset_pending) {
        nx_store_id_copy(self->reset.store_id, self->store);
        self->reset.first_seq = pg->first_seq;
        self->reset.last_seq = pg->last_seq;
        if (s_emit_reset(self) != 0)
            return; /* no room: the page is read again later */
        self->reset_pending = false;
    }
    self->delta.history_pages++;
    uint64_t first = pg->first_seq, last = pg->last_seq;
    uint64_t F = self->frontier, gap_to = 0;
    if (!self->from_oldest) {
        if (first == 0 && last > F)
            gap_to = last;
        else if (first > F + 1)
            gap_to = first - 1;
    }
    self->from_oldest = false;
    if (gap_to) {
        nx_event_msg_t gap = {.seq = gap_to};
        if (s_emit(self, &gap, F + 1, &self->delta.gaps) != 0)
            return;
    }
    for (uint32_t i = 0; i < pg->n_events; i++) {
        nx_event_msg_t m;
        if (nx_event_read_record(&pg->events, &m) != 0)
            return; /* malformed: the next check asks again */
        if (m.seq <= self->frontier)
            continue;
        if (s_emit(self, &m, 0, &self->delta.history_events) != 0)
            return;
    }
    if (pg->more) {
        if (pg->next_cursor > 0 && pg->next_cursor - 1 > self->frontier)
            self->frontier = pg->next_cursor - 1;
    } else {
        uint64_t end = q->until ? q->until : last;
        if (end > self->frontier)
            self->frontier = end;
        if (!q->until)
            self->need_check = false;
    }
}

/*  With a list of brokers: leaves the one in use for the one named
    primary (or the next), to be probed soon. A broker answered, so the
    backoff starts again from its least.                                   */
static void s_move_on(s_actor_t *self, const char *primary)
{
    if (self->client->n_eps < 2)
        return;
    nx_client_failover(self->client, self->gen, primary);
    s_sockets_current(self);
    self->backoff = self->client->backoff_min;
    self->retry_at = nx_clock_ms() + s_jitter(2 * self->client->backoff_min);
}

/*  A ping's answer: with a list of brokers, one that is not the primary
    (a standby, a fenced primary) is left for the next.                    */
static void s_on_role(s_actor_t *self, nx_reply_t *rep)
{
    char role[16], primary[NX_ENDPOINT_MAX];
    nx_obj_str(rep->map, "role", role, sizeof role);
    if (role[0] && strcmp(role, "primary") != 0)
        s_move_on(self, nx_obj_str(rep->map, "primary", primary, sizeof primary));
}

/*  Every reply to the thread's own requests, matched to its slot.         */
static void s_on_reply(s_actor_t *self, const void *data, size_t size)
{
    nx_page_t pg;
    if (nx_page_parse(&pg, data, size) != 0 || pg.id == 0)
        return;
    for (int i = 0; i < S_SLOTS; i++) {
        s_slot_t q = self->slot[i];
        if (q.id == 0 || q.id != pg.id)
            continue;
        memset(&self->slot[i], 0, sizeof self->slot[i]);
        s_link_up(self);
        nexus_err_t err = pg.ok ? NEXUS_OK : nexus_err_from_name(pg.error);
        if (q.kind == S_Q_HISTORY) {
            if (err == NEXUS_OK)
                s_on_history(self, &q, &pg);
            else
                self->data_retry_at = nx_clock_ms() + s_jitter(self->client->backoff_max);
            break;
        }
        /*  The small replies: read as a msgpack-c map.                    */
        nx_reply_t rep;
        nx_reply_init(&rep);
        if (nx_reply_parse(&rep, data, size) == 0) {
            switch (q.kind) {
            case S_Q_HEALTH:
                if (err != NEXUS_OK)
                    break;
                if (!self->have_start) {
                    self->have_start = true;
                    self->frontier = pg.last_seq;
                    s_store_adopt(self, pg.store_id);
                } else if (self->need_verify) {
                    self->need_verify = false;
                    if (pg.store_id[0] && self->store[0] && strcmp(pg.store_id, self->store))
                        s_reset_begin(self, S_WHY_STORE, pg.store_id);
                    else if (self->frontier > pg.last_seq)
                        s_reset_begin(self, S_WHY_BEHIND,
                                      pg.store_id[0] ? pg.store_id : self->store);
                    else if (pg.store_id[0])
                        s_store_adopt(self, pg.store_id);
                }
                break;
            case S_Q_HEARTBEAT:
                /*  The broker forgot the session (it timed out while we
                    were away, or its store was replaced): register again. */
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
            case S_Q_PING:
                s_on_role(self, &rep);
                if (err == NEXUS_OK)
                    nx_client_take_limits(self->client, rep.map);
                break;
            default:
                break;
            }
            /*  A write refused: this broker is not (or no longer) the
                primary; on to the one it names, or the next.              */
            if (err == NEXUS_ERR_NOT_PRIMARY) {
                char primary[NX_ENDPOINT_MAX];
                s_move_on(self, nx_obj_str(rep.map, "primary", primary, sizeof primary));
            }
        }
        nx_reply_destroy(&rep);
        break;
    }
}

static void s_read_replies(s_actor_t *self)
{
    void *h = zsock_resolve(self->dealer);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    for (int i = 0; i < 1000 && zmq_msg_recv(&msg, h, ZMQ_DONTWAIT) >= 0; i++) {
        s_on_reply(self, zmq_msg_data(&msg), zmq_msg_size(&msg));
        /*  s_link_down may have replaced the socket meanwhile.            */
        if (zsock_resolve(self->dealer) != h)
            break;
    }
    zmq_msg_close(&msg);
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
                else
                    nx_client_set_link(self->client, false); /* the API's calls set it */
                if (self->have_start)
                    self->need_check = self->need_verify = true;
            } else if (event == ZMQ_EVENT_CONNECTED && !self->link_ok)
                self->retry_at = nx_clock_ms(); /* the broker is back: probe now */
        }
        zmsg_destroy(&msg);
    }
}

/*  Sends what is due; called every turn.                                   */
static void s_timers(s_actor_t *self)
{
    s_sockets_current(self); /* the API's calls may have moved the client */
    uint64_t now = nx_clock_ms();
    if (self->no_route && self->link_ok)
        s_link_down(self, "no connection to send on");
    self->no_route = false;
    for (int i = 0; i < S_SLOTS; i++)
        if (self->slot[i].id && now - self->slot[i].sent >= nx_client_timeout(self->client)) {
            s_link_down(self, "request timed out");
            break;
        }
    /*  The API's calls found no connection while this thread's link is
        up: ask the broker (once a second at most), so that the answer
        sets the client's flag again (s_link_up).                         */
    if (self->link_ok && now >= self->told_at + 1000) {
        self->told_at = now; /* looked at once a second, not every turn */
        if (!self->slot[S_SLOT_PROBE].id && !nexus_client_is_connected(self->client)) {
            nx_req_t req;
            nx_req_init(&req, "ping");
            s_send(self, S_SLOT_PROBE, S_Q_PING, &req);
            nx_req_destroy(&req);
        }
    }
    if (!self->link_ok) {
        if (now >= self->retry_at && !self->slot[S_SLOT_PROBE].id) {
            nx_req_t req;
            nx_req_init(&req, "ping");
            int sent = s_send(self, S_SLOT_PROBE, S_Q_PING, &req);
            nx_req_destroy(&req);
            /*  No connection to send on: with a list, that broker is
                down; try the next after the backoff.                      */
            if (sent != 0 && self->client->n_eps > 1) {
                if (now - self->dealer_made >= 1000)
                    s_link_down(self, "no connection");
                else
                    self->retry_at = now + 50; /* the connection may be under way */
            } else if (sent != 0) {
                /*  One broker, no connection (the socket does not queue:
                    ZMQ_IMMEDIATE): look again after the backoff, which
                    grows; the socket connects again by itself. Without
                    this the thread woke 20 times a second.               */
                if (self->backoff < self->client->backoff_max)
                    self->backoff = self->backoff * 2 > self->client->backoff_max
                                        ? self->client->backoff_max
                                        : self->backoff * 2;
                self->retry_at = now + s_jitter(self->backoff);
            }
        }
        return;
    }
    /*  With a list: is the broker in use still the primary? (A fenced one
        still answers, still serves the history, and writes nothing.)    */
    if (self->client->n_eps > 1 && !self->slot[S_SLOT_PROBE].id && now >= self->next_role) {
        nx_req_t req;
        nx_req_init(&req, "ping");
        s_send(self, S_SLOT_PROBE, S_Q_PING, &req);
        nx_req_destroy(&req);
        self->next_role = now + S_VERIFY_MS;
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
    if (!self->have_start || self->need_verify) {
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
            S_SOONER(self->slot[i].sent + nx_client_timeout(self->client));
    if (!self->link_ok) {
        if (!self->slot[S_SLOT_PROBE].id)
            S_SOONER(self->retry_at);
    } else {
        if (!self->slot[S_SLOT_SESSION].id && self->heartbeat)
            S_SOONER(self->need_register ? now : self->next_heartbeat);
        if (self->client->n_eps > 1 && !self->slot[S_SLOT_PROBE].id)
            S_SOONER(self->next_role);
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

/*  The literal prefix of pattern that ZeroMQ filters on.                   */
static void s_prefix(const char *pattern, char *prefix)
{
    size_t plen = nx_pattern_prefix(pattern, strlen(pattern));
    memcpy(prefix, pattern, plen);
    prefix[plen] = 0;
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
    char prefix[NX_TOPIC_MAX + 1];
    if (!cmd || !strcmp(cmd, "$TERM")) {
        self->terminated = true;
    } else if (!strcmp(cmd, "SUB")) {
        bool known = false;
        for (size_t i = 0; i < self->n_patterns; i++)
            known |= !strcmp(self->patterns[i].text, arg);
        if (known)
            s_reply(self, NEXUS_OK);
        else if (self->n_patterns == NX_PATTERNS_MAX)
            s_reply(self, NEXUS_ERR_INVALID);
        else if (!(self->patterns[self->n_patterns].text = strdup(arg)))
            s_reply(self, NEXUS_ERR_NOMEM);
        else {
            s_pattern_t *p = &self->patterns[self->n_patterns++];
            p->len = strlen(arg);
            p->kind = nx_pattern_is_all(arg, p->len)       ? S_PAT_ALL
                      : nx_pattern_is_literal(arg, p->len) ? S_PAT_LITERAL
                                                           : S_PAT_WILD;
            s_patterns_changed(self);
            s_prefix(arg, prefix);
            zsock_set_subscribe(self->sub, prefix);
            s_reply(self, NEXUS_OK);
        }
    } else if (!strcmp(cmd, "UNSUB")) {
        int code = NEXUS_ERR_NOT_FOUND;
        for (size_t i = 0; i < self->n_patterns; i++)
            if (!strcmp(self->patterns[i].text, arg)) {
                s_prefix(arg, prefix);
                zsock_set_unsubscribe(self->sub, prefix);
                free(self->patterns[i].text);
                self->patterns[i] = self->patterns[--self->n_patterns];
                s_patterns_changed(self);
                code = NEXUS_OK;
                break;
            }
        s_reply(self, code);
    } else if (!strcmp(cmd, "START")) {
        /*  "seq store": the broker's last seq when the subscription began. */
        char *store = NULL;
        uint64_t seq = strtoull(arg ? arg : "", &store, 10);
        if (!self->have_start) {
            self->have_start = true;
            self->frontier = seq;
            s_store_adopt(self, store && *store == ' ' ? store + 1 : "");
            if (self->slot[S_SLOT_DATA].kind == S_Q_HEALTH)
                memset(&self->slot[S_SLOT_DATA], 0, sizeof self->slot[0]);
        }
        s_reply(self, NEXUS_OK);
    } else if (!strcmp(cmd, "RESUME")) {
        /*  "seq store": the application's cursor ("" store: the broker's). */
        char *store = NULL;
        self->have_start = true;
        self->frontier = strtoull(arg ? arg : "", &store, 10);
        s_store_adopt(self, store && *store == ' ' ? store + 1 : "");
        self->from_oldest = self->frontier == 0;
        self->need_check = self->need_verify = true;
        self->reset_pending = false;
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

/*  One full turn: every socket polled (waiting up to wait ms), what is due
    sent. Returns -1 when polling failed for good.                          */
static int s_turn(s_actor_t *self, long wait)
{
    zmq_pollitem_t items[] = {
        {zsock_resolve(self->pipe), 0, ZMQ_POLLIN, 0},
        {self->sub_h, 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->dealer), 0, ZMQ_POLLIN, 0},
        {self->mon ? zsock_resolve(self->mon) : NULL, 0, self->mon ? ZMQ_POLLIN : 0, 0},
    };
    int rc = zmq_poll(items, self->mon ? 4 : 3, wait);
    if (rc < 0 && zmq_errno() != EINTR)
        return -1;
    self->hot = false;
    if (rc > 0) {
        if (items[0].revents & ZMQ_POLLIN)
            s_on_command(self);
        if (items[2].revents & ZMQ_POLLIN)
            s_read_replies(self);
        if (items[1].revents & ZMQ_POLLIN)
            self->hot = s_read_stream(self, 0) > 0;
        if (self->mon && (items[3].revents & ZMQ_POLLIN))
            s_read_monitor(self);
    }
    s_drain_pending(self);
    s_timers(self);
    s_flush(self);
    self->hot_until = nx_clock_ms() + S_HOT_POLL_MS;
    return 0;
}

/*  The actor whose thread this is, NULL on every other thread.          */
static __thread s_actor_t *s_current;

bool nx_actor_is_current(nexus_client_t *client)
{
    return s_current && s_current->client == client;
}

void nx_actor_close_current(void)
{
    if (!s_current)
        return;
    s_sub_end(s_current);
    zsock_destroy(&s_current->dealer);
    /*  Its end of the actor's pipe too (nothing returns to zactor's
        wrapper, which would close it): CZMQ's handler then finds no
        socket left open.                                                  */
    zsock_destroy(&s_current->pipe);
}

void nx_actor_fn(zsock_t *pipe, void *args)
{
    s_actor_t *self = calloc(1, sizeof *self);
    if (!self) {
        zsock_signal(pipe, 0);
        char *cmd;
        while ((cmd = zstr_recv(pipe)) && strcmp(cmd, "$TERM")) {
            zstr_send(pipe, "21"); /* NEXUS_ERR_CLOSED */
            zstr_free(&cmd);
        }
        zstr_free(&cmd);
        return;
    }
    self->client = args;
    self->pipe = pipe;
    s_current = self;
    self->callback = self->client->cb != NULL;
    nx_view_init(&self->view);
    self->next_id = nx_random_id();
    self->p_max = self->client->queue_max;
    self->pending = calloc(self->p_max, sizeof *self->pending);
    self->backoff = self->client->backoff_min;
    self->gen = nx_client_gen(self->client);
    s_sub_make(self);
    self->dealer = nx_client_control_dealer(self->client);
    self->dealer_made = nx_clock_ms();
    s_flush(self);
    zsock_signal(pipe, 0);

    while (!self->terminated && self->pending && self->sub && self->dealer) {
        /*  While the stream flows, read it alone for a short while: no
            poll over four sockets per burst.                              */
        if (self->hot) {
            uint64_t now = nx_clock_ms();
            if (now < self->hot_until && s_read_stream(self, (int)(self->hot_until - now)) > 0)
                continue;
        }
        if (s_turn(self, self->hot ? 0 : s_wait_ms(self)) != 0)
            break;
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
    s_sub_end(self);
    for (size_t i = 0; i < self->n_push; i++)
        nexus_event_destroy(&self->push[i]);
    nx_view_clear(&self->view);
    if (self->pending)
        s_pending_clear(self);
    free(self->pending);
    for (size_t i = 0; i < self->n_patterns; i++)
        free(self->patterns[i].text);
    zsock_destroy(&self->dealer);
    s_current = NULL;
    free(self);
}
