/*  =========================================================================
    nx_event - the event object: owned events (one allocation holding
    topic, source and payload) and borrowed views over bytes the SDK holds,
    with the msgpack and JSON views of the payload decoded on first use.
    =========================================================================
*/

#include <string.h>

#include "nx_client.h"
#include "nx_jdump.h"

nexus_event_t *nx_event_new(uint64_t seq, uint64_t ts, const char *topic, size_t topic_len,
                            const char *source, size_t source_len, const void *payload,
                            size_t payload_len)
{
    nexus_event_t *self = malloc(sizeof *self + topic_len + 1 + source_len + 1 + payload_len + 1);
    if (!self)
        return NULL;
    memset(self, 0, sizeof *self);
    char *p = (char *)(self + 1);
    self->kind = NEXUS_EVENT_MESSAGE;
    self->seq = seq;
    self->ts = ts;
    self->topic = p;
    if (topic_len)
        memcpy(p, topic, topic_len);
    p[topic_len] = 0;
    p += topic_len + 1;
    self->source = p;
    if (source_len)
        memcpy(p, source, source_len);
    p[source_len] = 0;
    p += source_len + 1;
    self->payload = (uint8_t *)p;
    if (payload_len)
        memcpy(p, payload, payload_len);
    p[payload_len] = 0;
    self->payload_len = payload_len;
    return self;
}

nexus_event_t *nx_event_new_gap(uint64_t from, uint64_t to)
{
    nexus_event_t *self = nx_event_new(to, 0, "", 0, "", 0, "", 0);
    if (self) {
        self->kind = NEXUS_EVENT_GAP;
        self->gap_from = from;
    }
    return self;
}

void nx_store_id_copy(char *dst, const char *src)
{
    size_t n = src ? strnlen(src, NEXUS_STORE_ID_MAX - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
}

static void s_set_reset(nexus_event_t *e, const nx_reset_t *r)
{
    e->kind = NEXUS_EVENT_RESET;
    e->seq = 0;
    e->why = r->why;
    nx_store_id_copy(e->cursor_store_id, r->cursor_store_id);
    e->cursor_seq = r->cursor_seq;
    nx_store_id_copy(e->store_id, r->store_id);
    e->first_seq = r->first_seq;
    e->last_seq = r->last_seq;
}

nexus_event_t *nx_event_new_reset(const nx_reset_t *r)
{
    nexus_event_t *self = nx_event_new(0, 0, "", 0, "", 0, "", 0);
    if (self)
        s_set_reset(self, r);
    return self;
}

/*  ---- Borrowed views ----------------------------------------------------*/

void nx_view_init(nx_event_view_t *v)
{
    memset(&v->ev, 0, sizeof v->ev);
    v->ev.borrowed = true;
    v->topic[0] = v->source[0] = 0;
    v->ev.topic = v->topic;
    v->ev.source = v->source;
    v->ev.payload = (const uint8_t *)"";
}

void nx_view_clear(nx_event_view_t *v)
{
    nexus_event_t *e = &v->ev;
    if (e->unpacked_done) {
        msgpack_unpacked_destroy(&e->unpacked);
        e->unpacked_done = e->unpacked_ok = false;
    }
    if (e->payload_json) {
        free(e->payload_json);
        e->payload_json = NULL;
    }
    if (e->json) {
        free(e->json);
        e->json = NULL;
    }
}

void nx_view_set(nx_event_view_t *v, uint64_t seq, uint64_t ts, const char *topic, size_t topic_len,
                 const char *source, size_t source_len, const void *payload, size_t payload_len)
{
    nexus_event_t *e = &v->ev;
    if (e->unpacked_done || e->payload_json || e->json)
        nx_view_clear(v);
    e->kind = NEXUS_EVENT_MESSAGE;
    e->seq = seq;
    e->ts = ts;
    e->gap_from = 0;
    if (topic_len > NX_TOPIC_MAX)
        topic_len = NX_TOPIC_MAX;
    memcpy(v->topic, topic, topic_len);
    v->topic[topic_len] = 0;
    if (source_len > NX_SOURCE_MAX)
        source_len = NX_SOURCE_MAX;
    memcpy(v->source, source, source_len);
    v->source[source_len] = 0;
    e->payload = payload_len ? payload : (const uint8_t *)"";
    e->payload_len = payload_len;
}

void nx_view_set_gap(nx_event_view_t *v, uint64_t from, uint64_t to)
{
    nx_view_set(v, to, 0, "", 0, "", 0, NULL, 0);
    v->ev.kind = NEXUS_EVENT_GAP;
    v->ev.gap_from = from;
}

void nx_view_set_reset(nx_event_view_t *v, const nx_reset_t *r)
{
    nx_view_set(v, 0, 0, "", 0, "", 0, NULL, 0);
    s_set_reset(&v->ev, r);
}

void nx_view_set_store(nx_event_view_t *v, const char *store_id)
{
    nx_store_id_copy(v->ev.store_id, store_id);
}

void nx_view_set_msg(nx_event_view_t *v, const nx_event_msg_t *m)
{
    nx_view_set(v, m->seq, m->ts, m->topic, m->topic_len, m->source, m->source_len, m->payload,
                m->payload_len);
}

int nx_event_read_record(nx_mpread_t *r, nx_event_msg_t *m)
{
    uint32_t fields;
    if (nx_mpread_map(r, &fields) != 0)
        return -1;
    memset(m, 0, sizeof *m);
    m->source = "";
    m->payload = (const uint8_t *)"";
    bool have_topic = false;
    for (uint32_t i = 0; i < fields; i++) {
        const char *key;
        uint32_t klen, len = 0;
        if (nx_mpread_str(r, &key, &klen) != 0)
            return -1;
        /*  The broker packs seq, ts, topic, source, payload (nx_pack_event);
            the keys are told apart by length and first byte.              */
        int rc;
        if (klen == 3 && !memcmp(key, "seq", 3))
            rc = nx_mpread_u64(r, &m->seq);
        else if (klen == 2 && !memcmp(key, "ts", 2))
            rc = nx_mpread_u64(r, &m->ts);
        else if (klen == 5 && !memcmp(key, "topic", 5)) {
            rc = nx_mpread_str(r, &m->topic, &len);
            m->topic_len = len;
            have_topic = rc == 0;
        } else if (klen == 6 && !memcmp(key, "source", 6)) {
            rc = nx_mpread_str(r, &m->source, &len);
            m->source_len = len;
        } else if (klen == 7 && !memcmp(key, "payload", 7)) {
            if (r->p < r->end && r->p[0] == 0xc0) /* nil: an empty payload */
                rc = nx_mpread_nil(r);
            else {
                rc = nx_mpread_bytes(r, &m->payload, &len);
                m->payload_len = len;
            }
        } else
            rc = nx_mpread_skip(r);
        if (rc != 0)
            return -1;
    }
    return have_topic ? 0 : -1;
}

void nexus_event_destroy(nexus_event_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nexus_event_t *self = *self_p;
    *self_p = NULL;
    if (self->borrowed)
        return; /* the SDK owns it (a callback's event, a history view) */
    if (self->unpacked_done)
        msgpack_unpacked_destroy(&self->unpacked);
    free(self->payload_json);
    free(self->json);
    free(self);
}

nexus_event_t *nexus_event_dup(const nexus_event_t *self)
{
    if (!self)
        return NULL;
    nexus_event_t *copy =
        nx_event_new(self->seq, self->ts, self->topic, strlen(self->topic), self->source,
                     strlen(self->source), self->payload, self->payload_len);
    if (copy) {
        copy->kind = self->kind;
        copy->gap_from = self->gap_from;
        memcpy(copy->store_id, self->store_id, sizeof copy->store_id);
        memcpy(copy->cursor_store_id, self->cursor_store_id, sizeof copy->cursor_store_id);
        copy->cursor_seq = self->cursor_seq;
        copy->first_seq = self->first_seq;
        copy->last_seq = self->last_seq;
        copy->why = self->why;
    }
    return copy;
}

nexus_event_kind_t nexus_event_kind(const nexus_event_t *self)
{
    return self->kind;
}

uint64_t nexus_event_seq(const nexus_event_t *self)
{
    return self->seq;
}

uint64_t nexus_event_ts(const nexus_event_t *self)
{
    return self->ts;
}

const char *nexus_event_topic(const nexus_event_t *self)
{
    return self->topic;
}

const char *nexus_event_source(const nexus_event_t *self)
{
    return self->source;
}

const void *nexus_event_payload(const nexus_event_t *self, size_t *size)
{
    if (size)
        *size = self->payload_len;
    return self->payload;
}

int nexus_event_gap(const nexus_event_t *self, uint64_t *from, uint64_t *to)
{
    if (self->kind != NEXUS_EVENT_GAP)
        return -1;
    if (from)
        *from = self->gap_from;
    if (to)
        *to = self->seq;
    return 0;
}

const char *nexus_event_store_id(const nexus_event_t *self)
{
    return self->store_id;
}

int nexus_event_reset(const nexus_event_t *self, nexus_reset_t *reset)
{
    if (self->kind != NEXUS_EVENT_RESET)
        return -1;
    if (reset) {
        reset->why = self->why ? self->why : "";
        reset->cursor_store_id = self->cursor_store_id;
        reset->cursor_seq = self->cursor_seq;
        reset->store_id = self->store_id;
        reset->first_seq = self->first_seq;
        reset->last_seq = self->last_seq;
    }
    return 0;
}

const struct msgpack_object *nexus_event_msgpack(nexus_event_t *self)
{
    if (!self->unpacked_done) {
        self->unpacked_done = true;
        msgpack_unpacked_init(&self->unpacked);
        size_t off = 0;
        /*  Any publisher's bytes: 5 of them can declare 2^32 entries,
            which msgpack-c would allocate before reading one.              */
        self->unpacked_ok =
            self->payload_len > 0 &&
            nx_msgpack_check(self->payload, self->payload_len, NX_MSGPACK_DEPTH) ==
                NX_MSGPACK_OK &&
            msgpack_unpack_next(&self->unpacked, (const char *)self->payload, self->payload_len,
                                &off) == MSGPACK_UNPACK_SUCCESS &&
            off == self->payload_len;
    }
    return self->unpacked_ok ? &self->unpacked.data : NULL;
}

const char *nexus_event_payload_json(nexus_event_t *self)
{
    if (!self->payload_json)
        self->payload_json = nexus_msgpack_to_json(self->payload, self->payload_len);
    return self->payload_json;
}

const char *nexus_event_json(nexus_event_t *self)
{
    if (self->json)
        return self->json;
    json_t *obj;
    if (self->kind == NEXUS_EVENT_GAP) {
        obj = json_pack("{s:{s:I,s:I}}", "gap", "from", (json_int_t)self->gap_from, "to",
                        (json_int_t)self->seq);
    } else if (self->kind == NEXUS_EVENT_RESET) {
        obj = json_pack("{s:{s:s,s:s?,s:I,s:s,s:I,s:I}}", "reset", "why",
                        self->why ? self->why : "", "cursor_store_id",
                        self->cursor_store_id[0] ? self->cursor_store_id : NULL, "cursor_seq",
                        (json_int_t)self->cursor_seq, "store_id", self->store_id, "first_seq",
                        (json_int_t)self->first_seq, "last_seq", (json_int_t)self->last_seq);
    } else {
        const char *pj = nexus_event_payload_json(self);
        /*  JSON_ALLOW_NUL: a str payload may hold NUL bytes, which the
            text carries as \u0000; without it the event had no JSON.      */
        json_t *payload = pj ? json_loads(pj, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
        if (!payload)
            return NULL;
        json_t *topic = json_string(self->topic);
        json_t *source = json_string(self->source);
        obj = json_pack("{s:I,s:I,s:o,s:o,s:o}", "seq", (json_int_t)self->seq, "ts",
                        (json_int_t)self->ts, "topic", topic ? topic : json_string("?"), "source",
                        source ? source : json_string(""), "payload", payload);
    }
    if (!obj)
        return NULL;
    self->json = nx_json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return self->json;
}
