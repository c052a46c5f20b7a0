/*  =========================================================================
    nx_front_event - fabric events as the JSON clients see them, and the
    visibility of direct messages (see nx_front_event.h).
    =========================================================================
*/

#include <czmq.h>
#include <inttypes.h>
#include <string.h>

#include "nx_base64.h"
#include "nx_codec.h"
#include "nx_front_event.h"
#include "nx_jdump.h"
#include "nx_log.h"
#include "nx_perm.h"
#include "nx_topic.h"

json_t *nx_front_payload_bin(const json_t *payload, bool *too_deep)
{
    *too_deep = false;
    /*  The broker stores a bin payload as its bytes and any other value as
        its msgpack encoding; clients see the stored bytes decoded as
        msgpack. A JSON {"$base64":"AQ=="} packs to bin, so sent as it is
        it would be stored as the byte 01 and come back as 1. Sending the
        msgpack encoding as bin, as nexus_publish_json does, stores exactly
        what is decoded later, for every JSON value.                       */
    char *text = nx_json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t size = 0;
    void *packed = text ? nexus_json_to_msgpack(text, &size) : NULL;
    free(text);
    if (packed && nx_msgpack_check(packed, size, NX_MSGPACK_DEPTH) == NX_MSGPACK_TOO_DEEP) {
        *too_deep = true;
        free(packed);
        return NULL;
    }
    char *b64 = packed ? nx_base64_encode(packed, size) : NULL;
    free(packed);
    json_t *bin = b64 ? json_pack("{s:s}", "$base64", b64) : NULL;
    free(b64);
    return bin;
}

/*  Writes s as a JSON string (with quotes) into out.                      */
static void s_json_str(zchunk_t *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    zchunk_extend(out, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        zchunk_extend(out, s + start, i - start);
        char esc[7];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            zchunk_extend(out, esc, 2);
        } else {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            zchunk_extend(out, esc, 6);
        }
        start = i + 1;
    }
    zchunk_extend(out, s + start, len - start);
    zchunk_extend(out, "\"", 1);
}

bool nx_front_direct(const char *topic, char *to, size_t size)
{
    const char *owner;
    size_t olen, tlen = strlen(topic);
    if (size)
        to[0] = 0;
    if (strcmp(topic, NX_FRONT_DIRECT) == 0)
        return true;
    if (!nx_perm_private_owner(topic, tlen, &owner, &olen) || strcmp(owner + olen, ".direct") != 0)
        return false;
    if (olen < size) {
        memcpy(to, owner, olen);
        to[olen] = 0;
    }
    return true;
}

const char *nx_front_event_type(const char *topic)
{
    char to[NX_SESSION_ID_MAX + 1];
    return nx_front_direct(topic, to, sizeof to) ? NX_FRONT_DIRECT : topic;
}

bool nx_front_wants_direct(const char *pattern)
{
    return nx_pattern_matches(pattern, NX_FRONT_DIRECT);
}

char *nx_front_event_json(nexus_event_t *event, size_t *len)
{
    /*  Built by hand, once per event: every matching connection shares it. */
    zchunk_t *out = zchunk_new(NULL, 256);
    char head[64], iso[40];
    snprintf(head, sizeof head,
             "{\"type\":\"event\",\"seq\":%" PRIu64 ",\"event_type\":", nexus_event_seq(event));
    zchunk_extend(out, head, strlen(head));
    const char *topic = nexus_event_topic(event), *source = nexus_event_source(event);
    char to[NX_SESSION_ID_MAX + 1];
    bool direct = nx_front_direct(topic, to, sizeof to);
    const char *type = direct ? NX_FRONT_DIRECT : topic;
    s_json_str(out, type, strlen(type));
    if (to[0]) {
        zchunk_extend(out, ",\"to\":", 6);
        s_json_str(out, to, strlen(to));
    }
    zchunk_extend(out, ",\"session_id\":", 14);
    s_json_str(out, source, strlen(source));
    zchunk_extend(out, ",\"payload\":", 11);
    const char *payload = nexus_event_payload_json(event);
    if (!payload)
        payload = "null";
    zchunk_extend(out, payload, strlen(payload));
    zchunk_extend(out, ",\"timestamp\":\"", 14);
    nx_iso8601(nexus_event_ts(event), iso);
    zchunk_extend(out, iso, strlen(iso));
    zchunk_extend(out, "\"}", 3); /* with the terminator */
    *len = zchunk_size(out) - 1;
    char *text = malloc(zchunk_size(out));
    if (text)
        memcpy(text, zchunk_data(out), zchunk_size(out));
    zchunk_destroy(&out);
    return text;
}

json_t *nx_front_event_from_record(json_t *rec)
{
    /*  {seq, ts, topic, source, payload} as the SDK turns a history reply
        into JSON: the payload bytes arrive as {"$base64": ...}; they are
        msgpack, shown to clients as JSON like live events.                */
    char iso[40];
    const char *topic = json_string_value(json_object_get(rec, "topic"));
    char to[NX_SESSION_ID_MAX + 1] = "";
    bool direct = topic && nx_front_direct(topic, to, sizeof to);
    json_t *type =
        direct ? json_string(NX_FRONT_DIRECT) : json_incref(json_object_get(rec, "topic"));
    json_t *ev =
        json_pack("{s:s, s:O, s:o, s:O}", "type", "event", "seq", json_object_get(rec, "seq"),
                  "event_type", type, "session_id", json_object_get(rec, "source"));
    if (!ev)
        return json_null();
    if (to[0])
        json_object_set_new(ev, "to", json_string(to));
    json_t *payload = json_object_get(rec, "payload");
    const char *b64 = json_string_value(json_object_get(payload, "$base64"));
    json_t *shown = NULL;
    size_t len = 0;
    uint8_t *bytes = b64 ? nx_base64_decode(b64, strlen(b64), &len) : NULL;
    if (bytes) {
        char *text = len ? nexus_msgpack_to_json(bytes, len) : strdup("null");
        shown = text ? json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
        free(text);
        free(bytes);
    }
    json_object_set_new(ev, "payload",
                        shown ? shown : json_incref(payload ? payload : json_null()));
    json_object_set_new(
        ev, "timestamp",
        json_string(nx_iso8601((uint64_t)json_integer_value(json_object_get(rec, "ts")), iso)));
    return ev;
}

bool nx_front_event_visible(const json_t *ev, const char *session)
{
    const char *type = json_string_value(json_object_get(ev, "event_type"));
    const char *owner;
    size_t olen;
    if (type && nx_perm_private_owner(type, strlen(type), &owner, &olen))
        return session && strlen(session) == olen && memcmp(session, owner, olen) == 0;
    if (!type || strcmp(type, NX_FRONT_DIRECT) != 0)
        return true;
    if (!session)
        return false;
    const char *to = json_string_value(json_object_get(ev, "to"));
    if (!to)
        to = json_string_value(json_object_get(json_object_get(ev, "payload"), "to"));
    const char *from = json_string_value(json_object_get(ev, "session_id"));
    return (to && strcmp(to, session) == 0) || (from && strcmp(from, session) == 0);
}

bool nx_front_event_text_visible(const char *text, size_t len, const char *session)
{
    /*  Only direct messages and private topics need a look inside.       */
    if (!memmem(text, len, "\"" NX_FRONT_DIRECT "\"", strlen(NX_FRONT_DIRECT) + 2) &&
        !memmem(text, len, "\"event_type\":\"" NX_PERM_PRIVATE, 14 + NX_PERM_PRIVATE_LEN))
        return true;
    json_t *ev = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    bool visible = ev ? nx_front_event_visible(ev, session) : false;
    json_decref(ev);
    return visible;
}

const char *nx_front_direct_target(const char *type, json_t *msg, json_t *payload)
{
    if (strcmp(type, NX_FRONT_DIRECT) != 0)
        return NULL;
    if (!json_is_object(payload))
        return "a message.direct needs an object payload: its 'to' travels in it";
    json_t *to = json_object_get(msg, "to");
    json_t *inner = json_object_get(payload, "to");
    /*  Two addressees: which one was meant cannot be known, and taking
        either delivers a private message to a session never named for
        it. Refused.                                                       */
    if (to && inner && !json_equal(to, inner))
        return "field 'to' and the payload's 'to' name different sessions: give one";
    if (json_is_string(to) && !inner)
        json_object_set(payload, "to", to);
    json_t *target_v = json_object_get(payload, "to");
    if (!target_v)
        target_v = to; /* not a string: named in the error */
    const char *target = json_string_value(target_v);
    if (target && nx_session_id_valid(target, strlen(target)))
        return NULL;
    return target_v ? "field 'to' must be a session id (1..64 of [A-Za-z0-9_:@-])"
                    : "field 'to' (a session id) is missing";
}
