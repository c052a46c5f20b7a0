/*  =========================================================================
    nx_history - the history iterator: one `history` request per page,
    following the broker's cursor until it says the range is done.
    =========================================================================
*/

#include <string.h>

#include "nx_client.h"

struct _nexus_history_t {
    nexus_client_t *client;          /* the client requests go through     */
    char *patterns[NX_PATTERNS_MAX]; /* patterns (none: every topic)       */
    size_t n_patterns;               /* entries in patterns                */
    uint64_t since_seq;              /* exclusive lower seq bound          */
    uint64_t until_seq;              /* inclusive upper seq bound, 0: none */
    uint64_t since_us;               /* time bounds, 0: none               */
    uint64_t until_us;
    uint32_t page_size;           /* events per request                 */
    bool desc;                    /* newest first                       */
    uint64_t max;                 /* stop after this many, 0: no limit  */
    uint64_t returned;            /* events handed out                  */
    uint64_t cursor;              /* next_cursor of the last page, 0    */
    bool started;                 /* a page was fetched                 */
    bool done;                    /* the broker said no more            */
    nx_reply_t page;              /* the current page                   */
    const msgpack_object *events; /* its events array                   */
    uint32_t index;               /* next event in it                   */
    uint64_t first_seq;           /* bounds of the last reply           */
    uint64_t last_seq;
    uint64_t position; /* see nexus_history_position         */
    uint64_t page_end; /* position once the page is consumed */
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
    nx_reply_init(&self->page);
    return self;
}

void nexus_history_destroy(nexus_history_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nexus_history_t *self = *self_p;
    for (size_t i = 0; i < self->n_patterns; i++)
        free(self->patterns[i]);
    nx_reply_destroy(&self->page);
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
        return NEXUS_ERR_NOMEM;
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

nexus_err_t nexus_history_fetch(nexus_history_t *self, size_t *count, int *more)
{
    if (count)
        *count = 0;
    if (more)
        *more = 0;
    self->events = NULL;
    self->index = 0;
    if (self->done || (self->max && self->returned >= self->max)) {
        self->done = true;
        return NEXUS_OK;
    }
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
    uint64_t limit = self->page_size;
    if (self->max && self->max - self->returned < limit)
        limit = self->max - self->returned;
    nx_req_u64(&req, "limit", limit);
    if (self->desc)
        nx_req_str(&req, "order", "desc");
    if (self->cursor)
        nx_req_u64(&req, "cursor", self->cursor);
    nx_reply_destroy(&self->page);
    nexus_err_t rc = nx_client_call(self->client, &req, &self->page);
    nx_req_destroy(&req);
    if (rc)
        return rc;
    self->started = true;
    self->first_seq = nx_obj_u64(self->page.map, "first_seq");
    self->last_seq = nx_obj_u64(self->page.map, "last_seq");
    const msgpack_object *ev = nx_map_get(self->page.map, "events");
    self->events = ev && ev->type == MSGPACK_OBJECT_ARRAY ? ev : NULL;
    const msgpack_object *cur = nx_map_get(self->page.map, "next_cursor");
    self->page_end = 0;
    if (cur && cur->type == MSGPACK_OBJECT_POSITIVE_INTEGER && cur->via.u64) {
        self->cursor = cur->via.u64;
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
    size_t n = self->events ? self->events->via.array.size : 0;
    if (self->max && self->returned + n > self->max)
        n = (size_t)(self->max - self->returned);
    if (count)
        *count = n;
    if (more)
        *more = !self->done;
    return NEXUS_OK;
}

nexus_err_t nexus_history_next(nexus_history_t *self, nexus_event_t **event)
{
    *event = NULL;
    for (int pages = 0; pages < 1000000; pages++) {
        if (self->events && self->index < self->events->via.array.size &&
            !(self->max && self->returned >= self->max)) {
            const msgpack_object *rec = &self->events->via.array.ptr[self->index++];
            *event = nx_event_from_record(rec);
            if (!*event)
                return nx_client_fail(self->client, NEXUS_ERR_NOMEM, "cannot decode event");
            self->returned++;
            if (!self->desc && (*event)->seq > self->position)
                self->position = (*event)->seq;
            return NEXUS_OK;
        }
        if (self->done || (self->max && self->returned >= self->max))
            return NEXUS_OK;
        size_t count = 0;
        nexus_err_t rc = nexus_history_fetch(self, &count, NULL);
        if (rc)
            return rc;
    }
    return NEXUS_OK;
}

void nexus_history_bounds(nexus_history_t *self, uint64_t *first_seq, uint64_t *last_seq)
{
    if (first_seq)
        *first_seq = self->first_seq;
    if (last_seq)
        *last_seq = self->last_seq;
}

uint64_t nexus_history_position(nexus_history_t *self)
{
    bool consumed = !self->events || self->index >= self->events->via.array.size;
    if (consumed && self->started && !(self->max && self->returned >= self->max && !self->done) &&
        self->page_end > self->position)
        return self->page_end;
    return self->position;
}
