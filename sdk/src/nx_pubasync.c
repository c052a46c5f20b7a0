/*  =========================================================================
    nx_pubasync - acknowledged publish, pipelined: nexus_publish_async and
    nexus_publish_async_wait (nexus.h has the contract).

    A client has one channel for them, made at the first call: a DEALER of
    its own and a table of slots, one per request in flight, indexed by the
    request id modulo the window (ids count up from a random base, so the
    next request's slot is the one the oldest of a full window used). A
    slot is SENT until its reply is read, DONE until its completion has
    run, then FREE: the window bounds everything the channel holds, the
    answered-but-not-yet-told ones included.

    No thread of the SDK reads the replies: the application's calls do,
    under the channel's lock (ZeroMQ sockets are used by one thread at a
    time). Reading an empty socket costs a system call, so a publish reads
    only every S_READ_EVERY sends or when the window is half full; the
    completions found are run right away, by one thread at a time, with no
    lock held (a flag says a thread is running them; the others wait on
    the condition variable or go on publishing while slots are free).

    A request unanswered for the client's timeout means the broker or the
    path to it is gone: every request in flight then fails with
    NEXUS_ERR_TIMEOUT and the DEALER is replaced, so that nothing queued in
    the old one is sent later and no late answer can come.
    =========================================================================
*/

#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "nx_client.h"

#define S_READ_EVERY 32 /* sends between two reads of the replies          */
#define S_RUN_MAX    64 /* completions taken out of the table at once      */
#define S_SLICE_MS   5  /* longest wait holding the lock                   */

enum { S_FREE, S_SENT, S_DONE };

typedef struct {
    uint64_t id;          /* request id (valid unless FREE)                   */
    uint64_t sent;        /* when it was sent, ms (monotonic)                 */
    size_t bytes;         /* size of the request                              */
    nexus_publish_fn *fn; /* completion, or NULL                              */
    void *arg;            /* its argument                                     */
    nexus_err_t err;      /* DONE: the outcome                                */
    uint64_t seq;         /* DONE and ok: the event's seq                     */
    uint64_t ts;          /* ... and its broker time                          */
    char *msg;            /* DONE and refused: the broker's words, or NULL    */
    int state;            /* S_FREE, S_SENT, S_DONE                           */
} s_slot_t;

struct _nx_async_t {
    pthread_cond_t cond;            /* completions ran, slots were freed  */
    zsock_t *dealer;                /* requests out, replies in           */
    s_slot_t *slots;                /* cap entries, slot of id: id % cap  */
    uint32_t cap;                   /* the window in requests             */
    size_t max_bytes;               /* the window in bytes                */
    uint32_t used;                  /* slots SENT or DONE                 */
    size_t bytes;                   /* request bytes of those             */
    uint32_t *done;                 /* slots answered, in order (a ring)  */
    uint32_t done_head;             /* index of the oldest in done        */
    uint32_t done_count;            /* entries in done                    */
    uint64_t next;                  /* id of the next request             */
    uint64_t oldest;                /* no SENT request has a smaller id   */
    bool running;                   /* a thread runs completions          */
    unsigned unread;                /* sends since the replies were read  */
    char topic[NX_TOPIC_MAX + 1];   /* the last topic found valid         */
    size_t topic_len;               /* its length (0: none yet)           */
    char source[NX_SOURCE_MAX + 1]; /* the source field of the requests   */
    size_t source_len;              /* its length                         */
    unsigned source_gen;            /* client source_gen it is a copy of  */
    unsigned gen;                   /* client ep_gen the dealer is for     */
    bool refused;                   /* a broker answered not_primary       */
};

/*  The completion a thread runs: copied out of its slot, which is free.   */
typedef struct {
    nexus_publish_fn *fn;
    void *arg;
    nexus_err_t err;
    uint64_t seq, ts;
    char *msg; /* owned                                                  */
} s_done_t;

/*  The client whose completion this thread is running, if any: nested
    calls from fn must neither wait nor run completions.                   */
static __thread nexus_client_t *s_running_for;

static void s_slot_done(nx_async_t *a, s_slot_t *slot, nexus_err_t err, uint64_t seq, uint64_t ts)
{
    slot->state = S_DONE;
    slot->err = err;
    slot->seq = seq;
    slot->ts = ts;
    a->done[(a->done_head + a->done_count++) % a->cap] = (uint32_t)(slot - a->slots);
}

/*  Reads one reply {id, ok, seq, ts} or {id, ok:false, error, message}.   */
static void s_on_reply(nx_async_t *a, const uint8_t *data, size_t size)
{
    nx_mpread_t r;
    nx_mpread_init(&r, data, size);
    uint32_t fields;
    if (nx_mpread_map(&r, &fields) != 0)
        return;
    uint64_t id = 0, seq = 0, ts = 0;
    bool ok = false;
    char error[32] = "";
    const char *message = NULL;
    uint32_t message_len = 0;
    for (uint32_t i = 0; i < fields; i++) {
        const char *key, *str;
        uint32_t klen, len;
        if (nx_mpread_str(&r, &key, &klen) != 0)
            return;
        int rc;
        if (klen == 2 && !memcmp(key, "id", 2))
            rc = nx_mpread_u64(&r, &id);
        else if (klen == 2 && !memcmp(key, "ok", 2))
            rc = nx_mpread_bool(&r, &ok);
        else if (klen == 3 && !memcmp(key, "seq", 3))
            rc = nx_mpread_u64(&r, &seq);
        else if (klen == 2 && !memcmp(key, "ts", 2))
            rc = nx_mpread_u64(&r, &ts);
        else if (klen == 5 && !memcmp(key, "error", 5) && nx_mpread_str(&r, &str, &len) == 0) {
            snprintf(error, sizeof error, "%.*s", (int)len, str);
            rc = 0;
        } else if (klen == 7 && !memcmp(key, "message", 7))
            rc = nx_mpread_str(&r, &message, &message_len);
        else
            rc = nx_mpread_skip(&r);
        if (rc != 0)
            return;
    }
    s_slot_t *slot = &a->slots[id % a->cap];
    if (id == 0 || slot->state != S_SENT || slot->id != id)
        return; /* not ours, or already given up (timed out) */
    nexus_err_t err = NEXUS_OK;
    if (!ok) {
        err = nexus_err_from_name(error);
        if (err == NEXUS_OK)
            err = NEXUS_ERR_INTERNAL;
        a->refused |= err == NEXUS_ERR_NOT_PRIMARY;
        /*  The broker's words (the primary a not_primary names, the free
            bytes of a full disk), for nexus_client_errmsg in the
            completion; without them, a refusal said only its code.        */
        if (message && message_len)
            slot->msg = strndup(message, message_len < 1000 ? message_len : 1000);
    }
    s_slot_done(a, slot, err, seq, ts);
}

/*  Reads every reply that is there (lock held).                            */
static void s_read(nexus_client_t *c, nx_async_t *a)
{
    a->unread = 0;
    if (a->used == a->done_count || !a->dealer)
        return; /* nothing is waiting for an answer */
    void *h = zsock_resolve(a->dealer);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    bool any = false;
    while (zmq_msg_recv(&msg, h, ZMQ_DONTWAIT) >= 0) {
        s_on_reply(a, zmq_msg_data(&msg), zmq_msg_size(&msg));
        any = true;
    }
    zmq_msg_close(&msg);
    if (any)
        nx_client_set_link(c, true);
}

/*  Gives up on every request in flight when the oldest has waited for the
    timeout, and replaces the connection (lock held); with a list of
    brokers, the next one takes the requests from then on. The same at
    once when the client moved to another broker (NEXUS_ERR_TIMEOUT:
    those requests may or may not have been done) or one refused a request
    as not the primary (that one was not done: the application sends it
    again).                                                                 */
static void s_expire(nexus_client_t *c, nx_async_t *a, uint64_t now)
{
    if (a->refused) {
        a->refused = false;
        nx_client_failover(c, a->gen, NULL);
    }
    bool moved = a->gen != nx_client_gen(c);
    while (a->oldest < a->next) {
        s_slot_t *slot = &a->slots[a->oldest % a->cap];
        if (slot->state == S_SENT && slot->id == a->oldest)
            break;
        a->oldest++;
    }
    if (!moved &&
        (a->oldest == a->next || now - a->slots[a->oldest % a->cap].sent < nx_client_timeout(c)))
        return;
    for (uint64_t id = a->oldest; id < a->next; id++) {
        s_slot_t *slot = &a->slots[id % a->cap];
        if (slot->state == S_SENT && slot->id == id)
            s_slot_done(a, slot, NEXUS_ERR_TIMEOUT, 0, 0); /* sent: the outcome is unknown */
    }
    a->oldest = a->next;
    zsock_destroy(&a->dealer);
    if (!moved) {
        nx_client_failover(c, a->gen, NULL);
        nx_client_set_link(c, false);
    }
    a->gen = nx_client_gen(c);
    a->dealer = nx_client_control_dealer(c);
}

/*  Runs the completions that are due, unless another thread does or this
    one is inside one (lock held; released while they run).               */
static void s_run(nexus_client_t *c, nx_async_t *a)
{
    while (a->done_count && !a->running && s_running_for != c) {
        s_done_t run[S_RUN_MAX];
        int n = 0;
        while (a->done_count && n < S_RUN_MAX) {
            s_slot_t *slot = &a->slots[a->done[a->done_head]];
            a->done_head = (a->done_head + 1) % a->cap;
            a->done_count--;
            run[n++] = (s_done_t){slot->fn, slot->arg, slot->err, slot->seq, slot->ts, slot->msg};
            slot->msg = NULL;
            a->used--;
            a->bytes -= slot->bytes;
            slot->state = S_FREE;
        }
        a->running = true;
        pthread_mutex_unlock(&c->async_lock);
        nexus_client_t *outer = s_running_for; /* a completion of another client */
        s_running_for = c;
        for (int i = 0; i < n; i++) {
            /*  Every failed completion has its own words (a timeout's
                too), never the text of an earlier call.                  */
            if (run[i].fn && run[i].err)
                nx_client_fail(c, run[i].err, "%s",
                               run[i].msg ? run[i].msg : nexus_strerror(run[i].err));
            if (run[i].fn)
                run[i].fn(run[i].err, run[i].seq, run[i].ts, run[i].arg);
            free(run[i].msg);
        }
        s_running_for = outer;
        pthread_mutex_lock(&c->async_lock);
        a->running = false;
        pthread_cond_broadcast(&a->cond);
    }
}

/*  Waits (at most S_SLICE_MS) for a reply, or for the thread running
    completions to finish. Called with the lock held; lets go of it while
    it waits, so that other threads publish, run completions or return
    from nexus_publish_async_wait (c, 0) meanwhile: it waits on the
    socket's descriptor (ZMQ_FD), which is only a file, not on the socket.
    A signal another thread's call takes in the meantime costs at most the
    slice.                                                                  */
static void s_wait(nexus_client_t *c, nx_async_t *a, uint64_t until)
{
    uint64_t now = nx_clock_ms();
    uint64_t end = now + S_SLICE_MS;
    if (until < end)
        end = until;
    if (a->oldest < a->next) {
        uint64_t expiry = a->slots[a->oldest % a->cap].sent + nx_client_timeout(c);
        if (expiry < end)
            end = expiry;
    }
    long ms = end > now ? (long)(end - now) : 0;
    if (a->running) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (ms ? ms : 1) * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&a->cond, &c->async_lock, &ts);
        return;
    }
    int fd = -1;
    if (a->dealer) {
        void *h = zsock_resolve(a->dealer);
        int events = 0;
        size_t size = sizeof events;
        /*  Asking takes the socket's pending commands: its descriptor is
            then signalled by the next reply.                               */
        if (zmq_getsockopt(h, ZMQ_EVENTS, &events, &size) == 0 && (events & ZMQ_POLLIN))
            return;
        size = sizeof fd;
        if (zmq_getsockopt(h, ZMQ_FD, &fd, &size) != 0)
            fd = -1;
    }
    pthread_mutex_unlock(&c->async_lock);
    if (fd >= 0) {
        struct pollfd item = {.fd = fd, .events = POLLIN};
        poll(&item, 1, (int)ms);
    } else
        usleep((useconds_t)(ms ? ms : 1) * 1000);
    pthread_mutex_lock(&c->async_lock);
}

/*  The channel, made at the first call (lock held). NULL: no memory.      */
static nx_async_t *s_channel(nexus_client_t *c)
{
    if (c->async)
        return c->async;
    nx_async_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->cap = c->async_window;
    a->max_bytes = c->async_window_bytes;
    a->slots = calloc(a->cap, sizeof *a->slots);
    a->done = calloc(a->cap, sizeof *a->done);
    a->gen = nx_client_gen(c);
    a->dealer = nx_client_control_dealer(c);
    if (!a->slots || !a->done || !a->dealer || nx_cond_init_monotonic(&a->cond)) {
        zsock_destroy(&a->dealer);
        free(a->slots);
        free(a->done);
        free(a);
        return NULL;
    }
    a->next = a->oldest = nx_random_id();
    c->async = a;
    return a;
}

/*  ---- The request, encoded by hand ---------------------------------------
    {op: "publish", id: u64, [auth], topic, payload: bin, [source]}, written
    straight into the ZeroMQ message (one allocation, one copy of the
    payload). The id is always a uint 64, so the size is known before the
    id is.                                                                  */

static size_t s_str_size(size_t n)
{
    return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
}

static uint8_t *s_put_len(uint8_t *p, uint8_t b8, uint8_t b16, uint8_t b32, size_t n)
{
    if (n < 256) {
        *p++ = b8;
        *p++ = (uint8_t)n;
    } else if (n < 65536) {
        *p++ = b16;
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
    } else {
        *p++ = b32;
        for (int i = 3; i >= 0; i--)
            *p++ = (uint8_t)(n >> (8 * i));
    }
    return p;
}

static uint8_t *s_put_str(uint8_t *p, const char *s, size_t n)
{
    if (n < 32)
        *p++ = (uint8_t)(0xa0 | n);
    else
        p = s_put_len(p, 0xd9, 0xda, 0xdb, n);
    memcpy(p, s, n);
    return p + n;
}

/*  Refreshes the source when the session id or name changed (lock held).  */
static void s_source(nexus_client_t *c, nx_async_t *a)
{
    unsigned gen = __atomic_load_n(&c->source_gen, __ATOMIC_ACQUIRE);
    if (gen == a->source_gen)
        return;
    pthread_mutex_lock(&c->lock);
    const char *src = c->session_id ? c->session_id : c->name ? c->name : "";
    snprintf(a->source, sizeof a->source, "%s", src);
    pthread_mutex_unlock(&c->lock);
    a->source_len = strlen(a->source);
    a->source_gen = gen;
}

/*  The size of the request s_encode writes.                               */
static size_t s_request_size(nexus_client_t *c, nx_async_t *a, size_t topic_len, size_t size)
{
    /*  map, "op" "publish", "id" u64, "topic" str, "payload" bin.          */
    size_t n = 1 + 3 + 8 + 3 + 9 + 6 + s_str_size(topic_len) + 8 + size +
               (size < 256     ? 2
                : size < 65536 ? 3
                               : 5);
    if (c->token)
        n += 5 + s_str_size(strlen(c->token));
    if (a->source_len)
        n += 7 + s_str_size(a->source_len);
    return n;
}

static void s_encode(nexus_client_t *c, nx_async_t *a, uint8_t *p, uint64_t id, const char *topic,
                     size_t topic_len, const void *payload, size_t size)
{
    *p++ = (uint8_t)(0x80 | (4 + (a->source_len ? 1 : 0) + (c->token ? 1 : 0)));
    memcpy(p, "\xa2op\xa7publish\xa2id\xcf", 15);
    p += 15;
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(id >> (8 * i));
    if (c->token) {
        memcpy(p,
               "\xa4"
               "auth",
               5);
        p = s_put_str(p + 5, c->token, strlen(c->token));
    }
    memcpy(p, "\xa5topic", 6);
    p = s_put_str(p + 6, topic, topic_len);
    memcpy(p, "\xa7payload", 8);
    p = s_put_len(p + 8, 0xc4, 0xc5, 0xc6, size);
    if (size)
        memcpy(p, payload, size);
    p += size;
    if (a->source_len) {
        memcpy(p, "\xa6source", 7);
        s_put_str(p + 7, a->source, a->source_len);
    }
}

nexus_err_t nexus_publish_async(nexus_client_t *self, const char *topic, const void *payload,
                                size_t size, nexus_publish_fn *fn, void *arg)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!topic)
        return nx_client_bad_topic(self, NULL);
    nexus_err_t bad = nx_client_check_payload(self, payload, size);
    if (bad)
        return bad;
    if (size > (64u << 20))
        return nx_client_fail(self, NEXUS_ERR_TOO_LARGE, "payload of %zu bytes", size);
    size_t tlen = strlen(topic);
    if (!self->started || __atomic_load_n(&self->refused, __ATOMIC_RELAXED)) {
        if (!nx_topic_valid(topic, tlen))
            return nx_client_bad_topic(self, topic);
        return nx_client_usable(self);
    }
    bool nested = s_running_for == self;
    pthread_mutex_lock(&self->async_lock);
    if (self->async_closed) {
        pthread_mutex_unlock(&self->async_lock);
        return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is being destroyed");
    }
    nx_async_t *a = s_channel(self);
    if (!a) {
        pthread_mutex_unlock(&self->async_lock);
        return nx_client_fail(self, NEXUS_ERR_NOMEM, "cannot make the publish channel");
    }
    /*  A publisher mostly repeats its last topic: checked once.           */
    if (tlen != a->topic_len || memcmp(topic, a->topic, tlen) != 0) {
        if (!nx_topic_valid(topic, tlen)) {
            pthread_mutex_unlock(&self->async_lock);
            return nx_client_bad_topic(self, topic);
        }
        memcpy(a->topic, topic, tlen + 1);
        a->topic_len = tlen;
    }
    size_t bytes = 0;
    uint64_t deadline = 0;
    bool read = false, unsent = false;
    zmq_msg_t msg;
    for (;;) {
        if (read) {
            s_read(self, a);
            s_expire(self, a, nx_clock_ms());
            s_run(self, a);
        }
        /*  Destroy began while this waited, or a completion run just now
            (above, or by nx_async_destroy) asks again: nothing more goes
            in, so that every completion runs exactly once.                */
        if (self->async_closed) {
            pthread_mutex_unlock(&self->async_lock);
            return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is being destroyed");
        }
        if (a->refused || a->gen != nx_client_gen(self))
            s_expire(self, a, nx_clock_ms());
        if (!a->dealer) {
            a->gen = nx_client_gen(self);
            a->dealer = nx_client_control_dealer(self);
        }
        /*  Read here, as completions run above may have let go of the
            lock while the session changed.                                 */
        s_source(self, a);
        bytes = s_request_size(self, a, tlen, size);
        uint64_t max = __atomic_load_n(&self->max_request, __ATOMIC_RELAXED);
        if (max && bytes > max) { /* as nx_client_call, asked again first */
            pthread_mutex_unlock(&self->async_lock);
            max = nested ? max : nx_client_max_request(self, bytes);
            if (max)
                return nx_client_fail(self, NEXUS_ERR_TOO_LARGE,
                                      "the request is %zu bytes, over the broker's max_request "
                                      "(%" PRIu64 " bytes): not sent",
                                      bytes, max);
            pthread_mutex_lock(&self->async_lock);
            continue;
        }
        s_slot_t *slot = &a->slots[a->next % a->cap];
        bool fits = a->used == 0 || (a->used < a->cap && a->bytes + bytes <= a->max_bytes);
        unsent = false; /* what the last look found: no connection, or no room */
        if (fits && slot->state == S_FREE && a->dealer) {
            if (zmq_msg_init_size(&msg, bytes) != 0) {
                pthread_mutex_unlock(&self->async_lock);
                return nx_client_fail(self, NEXUS_ERR_NOMEM, "out of memory");
            }
            s_encode(self, a, zmq_msg_data(&msg), a->next, topic, tlen, payload, size);
            if (zmq_msg_send(&msg, zsock_resolve(a->dealer), ZMQ_DONTWAIT) >= 0)
                break;
            int e = zmq_errno();
            zmq_msg_close(&msg);
            if (e != EAGAIN) {
                pthread_mutex_unlock(&self->async_lock);
                return nx_client_fail(self, NEXUS_ERR_BUSY, "cannot queue the request: %s",
                                      zmq_strerror(e));
            }
            /*  No connection (the socket queues nothing without one), or
                its queue is full: wait for it as for room.                 */
            unsent = true;
        }
        if (!read) { /* no room: read the replies before waiting for them */
            read = true;
            deadline = nx_clock_ms() + nx_client_timeout(self);
            continue;
        }
        if (nested) {
            pthread_mutex_unlock(&self->async_lock);
            return nx_client_fail(self, NEXUS_ERR_BUSY,
                                  unsent ? "cannot send now (called from a completion)"
                                         : "the publish window is full (called from a completion)");
        }
        if (nx_clock_ms() >= deadline) {
            if (unsent) {
                /*  As nx_client_call: with a list, the next call goes to
                    the next broker; the link is down.                      */
                char ep[NX_ENDPOINT_MAX];
                snprintf(ep, sizeof ep, "%s", nx_client_ep(self)->control);
                if (a->oldest == a->next) {
                    zsock_destroy(&a->dealer);
                    nx_client_failover(self, a->gen, NULL);
                }
                nx_client_set_link(self, false);
                pthread_mutex_unlock(&self->async_lock);
                return nx_client_fail(self, NEXUS_ERR_UNREACHABLE,
                                      "no connection to the broker at %s within %u ms: the event "
                                      "was not sent",
                                      ep, nx_client_timeout(self));
            }
            pthread_mutex_unlock(&self->async_lock);
            return nx_client_fail(self, NEXUS_ERR_TIMEOUT,
                                  "the publish window stayed full for %u ms",
                                  nx_client_timeout(self));
        }
        s_wait(self, a, deadline);
    }
    uint64_t id = a->next;
    s_slot_t *slot = &a->slots[id % a->cap];
    *slot = (s_slot_t){
        .id = id, .sent = nx_clock_ms(), .bytes = bytes, .fn = fn, .arg = arg, .state = S_SENT};
    a->next++;
    a->used++;
    a->bytes += bytes;
    if (++a->unread >= S_READ_EVERY && !nested) {
        s_read(self, a);
        s_expire(self, a, nx_clock_ms());
        s_run(self, a);
    }
    pthread_mutex_unlock(&self->async_lock);
    return NEXUS_OK;
}

nexus_err_t nexus_publish_async_wait(nexus_client_t *self, int timeout_ms)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (s_running_for == self)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "nexus_publish_async_wait called from a completion");
    uint64_t until = timeout_ms < 0 ? UINT64_MAX : nx_clock_ms() + (uint64_t)timeout_ms;
    pthread_mutex_lock(&self->async_lock);
    nx_async_t *a = self->async;
    nexus_err_t rc = NEXUS_OK;
    while (a) {
        s_read(self, a);
        s_expire(self, a, nx_clock_ms());
        s_run(self, a);
        if (a->used == 0 && !a->running)
            break;
        if (self->async_closed) {
            rc = NEXUS_ERR_CLOSED;
            break;
        }
        if (nx_clock_ms() >= until) {
            rc = NEXUS_ERR_TIMEOUT;
            break;
        }
        s_wait(self, a, until);
    }
    pthread_mutex_unlock(&self->async_lock);
    if (rc == NEXUS_ERR_CLOSED)
        return nx_client_fail(self, rc, "the client is being destroyed");
    if (rc)
        return nx_client_fail(self, rc, "asynchronous publishes still in flight");
    return NEXUS_OK;
}

void nx_async_close(nexus_client_t *self)
{
    pthread_mutex_lock(&self->async_lock);
    self->async_closed = true;
    if (self->async)
        pthread_cond_broadcast(&self->async->cond);
    pthread_mutex_unlock(&self->async_lock);
}

void nx_async_destroy(nexus_client_t *self)
{
    pthread_mutex_lock(&self->async_lock);
    nx_async_t *a = self->async;
    if (!a) {
        pthread_mutex_unlock(&self->async_lock);
        return;
    }
    /*  What was answered is told as answered, the rest as closed: every
        completion runs exactly once. One that publishes again is refused
        (closed).                                                          */
    self->async_closed = true;
    s_read(self, a);
    for (uint64_t id = a->oldest; id < a->next; id++) {
        s_slot_t *slot = &a->slots[id % a->cap];
        if (slot->state == S_SENT && slot->id == id)
            s_slot_done(a, slot, NEXUS_ERR_CLOSED, 0, 0);
    }
    a->oldest = a->next;
    s_run(self, a);
    self->async = NULL;
    pthread_mutex_unlock(&self->async_lock);
    zsock_destroy(&a->dealer);
    pthread_cond_destroy(&a->cond);
    for (uint32_t i = 0; i < a->cap; i++)
        free(a->slots[i].msg);
    free(a->slots);
    free(a->done);
    free(a);
}
