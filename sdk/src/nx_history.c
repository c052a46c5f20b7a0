/*  =========================================================================
    nx_history - the history iterator. It has a connection of its own (a
    DEALER from the client's spare ones), so that it can keep the request
    for the next page in flight while the application reads this one: as
    soon as a page arrives and says where the next one starts, that one is
    asked for. A page is read where it lies, in the reply's bytes: the
    events are walked one by one with nx_mpread and handed out as a view
    (nexus_history_next_view) or as an owned copy (nexus_history_next).
    At most two pages are held: the one being read and the one coming.
    =========================================================================
*/

#include <string.h>

#include "nx_client.h"

/*  ---- Reading a page in place ---------------------------------------------*/

static void s_copy_str(nx_mpread_t *r, char *buf, size_t size)
{
    const char *s;
    uint32_t len;
    if (nx_mpread_str(r, &s, &len) == 0)
        snprintf(buf, size, "%.*s", (int)len, s);
    else
        nx_mpread_skip(r);
}

int nx_page_parse(nx_page_t *pg, const void *data, size_t size)
{
    pg->id = 0;
    pg->ok = false;
    pg->error[0] = pg->message[0] = pg->store_id[0] = 0;
    pg->more = false;
    pg->next_cursor = pg->first_seq = pg->last_seq = 0;
    pg->n_events = 0;
    nx_mpread_init(&pg->events, NULL, 0);
    nx_mpread_t r;
    nx_mpread_init(&r, data, size);
    uint32_t fields;
    if (nx_mpread_map(&r, &fields) != 0)
        return -1;
    for (uint32_t i = 0; i < fields; i++) {
        const char *key;
        uint32_t klen;
        if (nx_mpread_str(&r, &key, &klen) != 0)
            return -1;
        int rc = 0;
#define S_KEY(k) (klen == sizeof(k) - 1 && memcmp(key, k, sizeof(k) - 1) == 0)
        if (S_KEY("id")) {
            if (nx_mpread_u64(&r, &pg->id) != 0)
                rc = nx_mpread_skip(&r);
        } else if (S_KEY("ok"))
            rc = nx_mpread_bool(&r, &pg->ok);
        else if (S_KEY("events")) {
            /*  Left where it lies for the caller. Last in the map (this
                broker's order) it need not be walked here; with fields
                after it (an older broker) it is skipped once to find them. */
            nx_mpread_t at = r;
            if (nx_mpread_array(&at, &pg->n_events) != 0)
                return -1;
            pg->events = at;
            if (i + 1 == fields)
                break;
            rc = nx_mpread_skip(&r);
        } else if (S_KEY("next_cursor")) {
            pg->more = nx_mpread_u64(&r, &pg->next_cursor) == 0 && pg->next_cursor > 0;
            if (!pg->more)
                rc = nx_mpread_skip(&r);
        } else if (S_KEY("first_seq"))
            rc = nx_mpread_u64(&r, &pg->first_seq);
        else if (S_KEY("last_seq"))
            rc = nx_mpread_u64(&r, &pg->last_seq);
        else if (S_KEY("error"))
            s_copy_str(&r, pg->error, sizeof pg->error);
        else if (S_KEY("message"))
            s_copy_str(&r, pg->message, sizeof pg->message);
        else if (S_KEY("store_id"))
            s_copy_str(&r, pg->store_id, sizeof pg->store_id);
        else
            rc = nx_mpread_skip(&r);
#undef S_KEY
        if (rc != 0)
            return -1;
    }
    return 0;
}

struct _nexus_history_t {
    nexus_client_t *client;          /* the client (outlives the iterator)     */
    char *patterns[NX_PATTERNS_MAX]; /* patterns (none: every topic)           */
    size_t n_patterns;               /* entries in patterns                    */
    uint64_t since_seq;              /* exclusive lower seq bound              */
    uint64_t until_seq;              /* inclusive upper seq bound, 0: none     */
    uint64_t since_us;               /* time bounds, 0: none                   */
    uint64_t until_us;               /* ...                                    */
    uint32_t page_size;              /* events per request                     */
    bool desc;                       /* newest first                           */
    bool one_page;                   /* no read-ahead (set_read_ahead 0)       */
    uint64_t max;                    /* stop after this many, 0: no limit      */
    uint64_t returned;               /* events handed out                      */
    zsock_t *dealer;                 /* the iterator's connection, or NULL     */
    unsigned dealer_gen;             /* the client's ep_gen it is for         */
    uint64_t req_id;                 /* the request in flight, 0: none         */
    uint64_t req_cursor;             /* the cursor it carries (0: first page)  */
    uint64_t req_sent;               /* when it was sent, ms (monotonic)       */
    uint64_t cursor;                 /* where the page after this one starts   */
    bool started;                    /* a page was fetched                     */
    bool done;                       /* the broker said no more                */
    zmq_msg_t page;                  /* the reply holding the current page     */
    nx_page_t pg;                    /* its fields; pg.events walks its events */
    uint32_t index;                  /* events of it handed out                */
    uint32_t count;                  /* events of it to hand out (max applied) */
    uint64_t first_seq;              /* bounds of the last reply               */
    uint64_t last_seq;               /* ...                                    */
    uint64_t position;               /* see nexus_history_position             */
    uint64_t page_end;               /* position once the page is consumed     */
    nx_event_view_t view;            /* what nexus_history_next_view lends     */

    /* store identity: the seqs above are this store's                      */
    char expect[NEXUS_STORE_ID_MAX];   /* the store the cursor belongs to ("") */
    char store_id[NEXUS_STORE_ID_MAX]; /* the store of the pages read          */
};

nexus_history_t *nexus_history_new(nexus_client_t *client)
{
    if (!client)
        return NULL;
    nexus_history_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->client = client;
    self->page_size = 1000;
    zmq_msg_init(&self->page);
    nx_view_init(&self->view);
    return self;
}

void nexus_history_destroy(nexus_history_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nexus_history_t *self = *self_p;
    for (size_t i = 0; i < self->n_patterns; i++)
        free(self->patterns[i]);
    /*  With a request in flight its reply would reach the next user of the
        connection: only a quiet one goes back to the client.              */
    nx_client_dealer_put(self->client, &self->dealer, self->req_id == 0, self->dealer_gen);
    zmq_msg_close(&self->page);
    nx_view_clear(&self->view);
    free(self);
    *self_p = NULL;
}

nexus_err_t nexus_history_add_pattern(nexus_history_t *self, const char *pattern)
{
    if (!pattern || !nx_pattern_valid(pattern, strlen(pattern)))
        return nx_client_fail(self->client, NEXUS_ERR_BAD_PATTERN, "invalid pattern '%.64s'",
                              pattern ? pattern : "(null)");
    if (self->n_patterns == NX_PATTERNS_MAX)
        return nx_client_fail(self->client, NEXUS_ERR_INVALID, "at most %d patterns",
                              NX_PATTERNS_MAX);
    self->patterns[self->n_patterns] = strdup(pattern);
    if (!self->patterns[self->n_patterns])
        return nx_client_fail(self->client, NEXUS_ERR_NOMEM, "out of memory");
    self->n_patterns++;
    return NEXUS_OK;
}

void nexus_history_set_seq_range(nexus_history_t *self, uint64_t since_seq, uint64_t until_seq)
{
    self->since_seq = since_seq;
    self->until_seq = until_seq;
    self->position = since_seq;
}

void nexus_history_set_time_range(nexus_history_t *self, uint64_t since_us, uint64_t until_us)
{
    self->since_us = since_us;
    self->until_us = until_us;
}

nexus_err_t nexus_history_set_page(nexus_history_t *self, uint32_t page_size, int desc)
{
    if (page_size < 1 || page_size > 10000)
        return nx_client_fail(self->client, NEXUS_ERR_INVALID, "page size must be 1..10000");
    self->page_size = page_size;
    self->desc = desc != 0;
    return NEXUS_OK;
}

void nexus_history_set_max(nexus_history_t *self, uint64_t max_events)
{
    self->max = max_events;
}

void nexus_history_set_read_ahead(nexus_history_t *self, int on)
{
    if (self)
        self->one_page = !on;
}

/*  Events still wanted after those of the current page (UINT64_MAX: no
    limit).                                                                 */
static uint64_t s_wanted(nexus_history_t *self)
{
    if (!self->max)
        return UINT64_MAX;
    uint64_t after = self->returned + (self->count - self->index);
    return after >= self->max ? 0 : self->max - after;
}

/*  Sends the request for the page at cursor (0: the first). Returns
    NEXUS_OK or an error (nothing in flight then).                          */
static nexus_err_t s_request(nexus_history_t *self, uint64_t cursor)
{
    nexus_client_t *c = self->client;
    nexus_err_t usable = nx_client_usable(c);
    if (usable)
        return usable;
    /*  The client moved to another broker of its list: so does the
        iterator (a standby serves the history too, from the same store). */
    if (self->dealer && self->dealer_gen != nx_client_gen(c))
        nx_client_dealer_put(c, &self->dealer, false, self->dealer_gen);
    if (!self->dealer && !(self->dealer = nx_client_dealer_get(c, &self->dealer_gen)))
        return nx_client_fail(c, NEXUS_ERR_NOMEM, "cannot make a connection for the history");
    nx_req_t req;
    nx_req_init(&req, "history");
    if (self->n_patterns)
        nx_req_strs(&req, "patterns", self->patterns, self->n_patterns);
    if (self->since_seq)
        nx_req_u64(&req, "since_seq", self->since_seq);
    if (self->until_seq)
        nx_req_u64(&req, "until_seq", self->until_seq);
    if (self->since_us)
        nx_req_u64(&req, "since_time", self->since_us);
    if (self->until_us)
        nx_req_u64(&req, "until_time", self->until_us);
    uint64_t limit = self->page_size, wanted = s_wanted(self);
    if (wanted < limit)
        limit = wanted;
    nx_req_u64(&req, "limit", limit);
    if (self->desc)
        nx_req_str(&req, "order", "desc");
    if (cursor)
        nx_req_u64(&req, "cursor", cursor);
    uint64_t id = nx_client_next_id(c);
    msgpack_sbuffer frame;
    msgpack_sbuffer_init(&frame);
    nx_req_frame(&req, id, c->token, &frame);
    nx_req_destroy(&req);
    int rc = zmq_send(zsock_resolve(self->dealer), frame.data, frame.size, ZMQ_DONTWAIT);
    msgpack_sbuffer_destroy(&frame);
    if (rc < 0)
        return nx_client_fail(c, NEXUS_ERR_BUSY, "cannot send the history request");
    self->req_id = id;
    self->req_cursor = cursor;
    self->req_sent = nx_clock_ms();
    return NEXUS_OK;
}

/*  Waits for the reply to the request in flight and makes it the current
    page. On a timeout the connection is dropped (a late reply must not
    meet the next request) and nothing is in flight any more.              */
static nexus_err_t s_receive(nexus_history_t *self)
{
    nexus_client_t *c = self->client;
    void *h = zsock_resolve(self->dealer);
    uint64_t deadline = self->req_sent + nx_client_timeout(c), now = nx_clock_ms();
    if (deadline < now)
        deadline = now;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    for (;;) {
        if (zmq_msg_recv(&msg, h, ZMQ_DONTWAIT) >= 0) {
            nx_page_t pg;
            if (nx_page_parse(&pg, zmq_msg_data(&msg), zmq_msg_size(&msg)) == 0 &&
                pg.id == self->req_id) {
                /*  The page's bytes move into the iterator; pg points into
                    them and stays valid (zmq_msg_move keeps the buffer).   */
                zmq_msg_move(&self->page, &msg);
                self->pg = pg;
                break;
            }
            continue; /* a stale reply */
        }
        now = nx_clock_ms();
        zmq_pollitem_t item = {h, 0, ZMQ_POLLIN, 0};
        if (now >= deadline || zmq_poll(&item, 1, (long)(deadline - now)) < 0) {
            if (nx_clock_ms() < deadline)
                continue; /* EINTR */
            zmq_msg_close(&msg);
            nx_client_dealer_put(c, &self->dealer, false, self->dealer_gen);
            self->req_id = 0;
            return nx_client_fail(c, NEXUS_ERR_TIMEOUT,
                                  "no reply from %s to 'history' within %u ms",
                                  nx_client_ep(c)->control, nx_client_timeout(c));
        }
    }
    zmq_msg_close(&msg);
    self->req_id = 0;
    nx_client_set_link(c, true);
    if (!self->pg.ok) {
        nexus_err_t err = nexus_err_from_name(self->pg.error);
        if (err == NEXUS_OK)
            err = NEXUS_ERR_INTERNAL;
        self->pg.n_events = 0;
        return nx_client_fail(c, err, "history: %s",
                              self->pg.message[0] ? self->pg.message : nexus_strerror(err));
    }
    return NEXUS_OK;
}

nexus_err_t nexus_history_fetch(nexus_history_t *self, size_t *count, int *more)
{
    if (count)
        *count = 0;
    if (more)
        *more = 0;
    /*  Whatever is left of the current page is dropped.                   */
    self->count = self->index = 0;
    self->pg.n_events = 0;
    if (self->done || (self->max && self->returned >= self->max)) {
        self->done = true;
        return NEXUS_OK;
    }
    nexus_err_t rc = NEXUS_OK;
    if (!self->req_id)
        rc = s_request(self, self->started ? self->cursor : 0);
    if (rc == NEXUS_OK)
        rc = s_receive(self);
    if (rc)
        return rc;
    self->started = true;
    self->first_seq = self->pg.first_seq;
    self->last_seq = self->pg.last_seq;
    /*  Seqs are one store's: a page of another store than the cursor's (or
        than the pages before) would skip or repeat events without a word. */
    const char *want = self->store_id[0] ? self->store_id : self->expect;
    if (self->pg.store_id[0] && want[0] && strcmp(self->pg.store_id, want) != 0) {
        char old[NEXUS_STORE_ID_MAX];
        nx_store_id_copy(old, want);
        nx_store_id_copy(self->store_id, self->pg.store_id);
        nx_view_set_store(&self->view, self->store_id);
        self->pg.n_events = 0;
        self->done = true;
        return nx_client_fail(self->client, NEXUS_ERR_RESET,
                              "history: the cursor belongs to store %s, the broker serves store %s "
                              "(seqs %" PRIu64 "..%" PRIu64 "): its seqs cannot be followed here",
                              old, self->store_id, self->first_seq, self->last_seq);
    }
    if (self->pg.store_id[0] && !self->store_id[0]) {
        nx_store_id_copy(self->store_id, self->pg.store_id);
        nx_view_set_store(&self->view, self->store_id);
    }
    self->page_end = 0;
    if (self->pg.more) {
        self->cursor = self->pg.next_cursor;
        if (!self->desc)
            self->page_end = self->cursor - 1;
    } else {
        self->done = true;
        /*  Everything up to the bound (or the broker's last seq) has been
            seen once this page is consumed.                                */
        if (!self->desc && !self->until_us) {
            uint64_t end = self->until_seq ? self->until_seq : self->last_seq;
            self->page_end = end > self->last_seq ? self->last_seq : end;
        }
    }
    uint64_t n = self->pg.n_events;
    if (self->max && self->returned + n > self->max)
        n = self->max - self->returned;
    self->count = (uint32_t)n;
    /*  Ask for the next page now: the broker reads it while the caller
        reads this one. An error here is found again by the next fetch.    */
    if (!self->done && s_wanted(self) > 0 && !self->one_page)
        s_request(self, self->cursor);
    if (count)
        *count = n;
    if (more)
        *more = !self->done;
    return NEXUS_OK;
}

nexus_err_t nexus_history_next_view(nexus_history_t *self, nexus_event_t **event)
{
    if (event)
        *event = NULL;
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!event)
        return nx_client_fail(self->client, NEXUS_ERR_INVALID,
                              "event is NULL: nowhere to put the event");
    for (int pages = 0; pages < 1000000; pages++) {
        if (self->index < self->count) {
            nx_event_msg_t m;
            if (nx_event_read_record(&self->pg.events, &m) != 0) {
                self->count = self->index; /* the rest of the page is lost */
                return nx_client_fail(self->client, NEXUS_ERR_BAD_MSGPACK,
                                      "history: an event of the page does not decode");
            }
            self->index++;
            self->returned++;
            nx_view_set_msg(&self->view, &m);
            if (!self->desc && m.seq > self->position)
                self->position = m.seq;
            *event = &self->view.ev;
            return NEXUS_OK;
        }
        if (self->done || (self->max && self->returned >= self->max))
            return NEXUS_OK;
        nexus_err_t rc = nexus_history_fetch(self, NULL, NULL);
        if (rc)
            return rc;
    }
    return NEXUS_OK;
}

nexus_err_t nexus_history_next(nexus_history_t *self, nexus_event_t **event)
{
    if (event)
        *event = NULL;
    if (self && !event)
        return nx_client_fail(self->client, NEXUS_ERR_INVALID,
                              "event is NULL: nowhere to put the event");
    nexus_event_t *view = NULL;
    nexus_err_t rc = nexus_history_next_view(self, &view);
    if (rc || !view)
        return rc;
    *event = nexus_event_dup(view);
    if (!*event)
        return nx_client_fail(self->client, NEXUS_ERR_NOMEM, "out of memory");
    return NEXUS_OK;
}

void nexus_history_bounds(nexus_history_t *self, uint64_t *first_seq, uint64_t *last_seq)
{
    if (first_seq)
        *first_seq = self->first_seq;
    if (last_seq)
        *last_seq = self->last_seq;
}

const char *nexus_history_store_id(nexus_history_t *self)
{
    return self ? self->store_id : "";
}

nexus_err_t nexus_history_set_store(nexus_history_t *self, const char *store_id)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (store_id && strlen(store_id) >= NEXUS_STORE_ID_MAX)
        return nx_client_fail(self->client, NEXUS_ERR_INVALID, "'%.64s' is not a store id",
                              store_id);
    nx_store_id_copy(self->expect, store_id);
    return NEXUS_OK;
}

uint64_t nexus_history_position(nexus_history_t *self)
{
    bool consumed = self->index >= self->count;
    if (consumed && self->started && !(self->max && self->returned >= self->max && !self->done) &&
        self->page_end > self->position)
        return self->page_end;
    return self->position;
}
