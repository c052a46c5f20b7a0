/*  =========================================================================
    nx_event - the event object: one allocation holding topic, source and
    payload, with the msgpack and JSON views decoded on first use.
    =========================================================================
*/

#include <string.h>

#include "nx_client.h"

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

nexus_event_t *nx_event_from_record(const msgpack_object *rec)
{
    const msgpack_object *topic = nx_map_get(rec, "topic");
    const msgpack_object *source = nx_map_get(rec, "source");
    const msgpack_object *payload = nx_map_get(rec, "payload");
    if (!topic || topic->type != MSGPACK_OBJECT_STR)
        return NULL;
    const char *src = "";
    size_t src_len = 0;
    if (source && source->type == MSGPACK_OBJECT_STR) {
        src = source->via.str.ptr;
        src_len = source->via.str.size;
    }
    const void *data = "";
    size_t size = 0;
    if (payload && payload->type == MSGPACK_OBJECT_BIN) {
        data = payload->via.bin.ptr;
        size = payload->via.bin.size;
    } else if (payload && payload->type == MSGPACK_OBJECT_STR) {
        data = payload->via.str.ptr;
        size = payload->via.str.size;
    }
    return nx_event_new(nx_obj_u64(rec, "seq"), nx_obj_u64(rec, "ts"), topic->via.str.ptr,
                        topic->via.str.size, src, src_len, data, size);
}

void nexus_event_destroy(nexus_event_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nexus_event_t *self = *self_p;
    if (self->unpacked_done)
        msgpack_unpacked_destroy(&self->unpacked);
    free(self->payload_json);
    free(self->json);
    free(self);
    *self_p = NULL;
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

const struct msgpack_object *nexus_event_msgpack(nexus_event_t *self)
{
    if (!self->unpacked_done) {
        self->unpacked_done = true;
        msgpack_unpacked_init(&self->unpacked);
        size_t off = 0;
        self->unpacked_ok =
            self->payload_len > 0 &&
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
    self->json = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return self->json;
}
