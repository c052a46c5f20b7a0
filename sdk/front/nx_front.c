/*  =========================================================================
    nx_front - one handler per control op for the JSON front-ends (see
    nx_front.h). Most ops need nothing but nx_front_call: the table says
    what their fields are. publish and history have a handler of their
    own, for what every front-end must do the same way around them.
    =========================================================================
*/

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_codec.h"
#include "nx_error.h"
#include "nx_front.h"
#include "nx_front_event.h"
#include "nx_jdump.h"
#include "nx_optab.h"
#include "nx_topic.h"

/*  Requests are checked to the broker's nesting limit before they go: a
    deeper one would come back as bad_msgpack without an id, which no
    client can match to its request.                                       */
#define S_DEPTH 32

void nx_front_fail(nx_front_err_t *err, const char *code, int status, const char *format, ...)
{
    snprintf(err->code, sizeof err->code, "%s", code);
    va_list args;
    va_start(args, format);
    vsnprintf(err->message, sizeof err->message, format, args);
    va_end(args);
    nx_utf8_scrub(err->message);
    err->status = status ? status : nx_err_http_status(nexus_err_from_name(code));
}

json_t *nx_front_text(const char *text)
{
    json_t *s = json_string(text);
    if (s || !text)
        return s;
    char *copy = strdup(text);
    if (!copy)
        return NULL;
    nx_utf8_scrub(copy);
    s = json_string(copy);
    free(copy);
    return s;
}

void nx_front_err_reset(nx_front_err_t *err)
{
    json_decref(err->extra);
    memset(err, 0, sizeof *err);
}

static void s_fail_code(nx_front_err_t *err, nexus_err_t code, const char *message)
{
    nx_front_fail(err, nexus_err_name(code), nx_err_http_status(code), "%s", message);
}

bool nx_front_json_too_deep(const char *text, size_t len, int max)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"')
            in_str = true;
        else if (c == '[' || c == '{') {
            if (++depth > max)
                return true;
        } else if ((c == ']' || c == '}') && depth > 0)
            depth--;
    }
    return false;
}

json_t *nx_front_fields(const char *op, json_t *msg, const char *acting)
{
    const nx_opdef_t *def = nx_optab_find(op, strlen(op));
    json_t *fields = json_object();
    for (const nx_field_t *f = def ? def->fields : NULL; f && f->name; f++) {
        json_t *v = json_object_get(msg, f->name);
        if (v && strcmp(f->name, "session") && strcmp(f->name, "secret"))
            json_object_set(fields, f->name, v);
    }
    if (acting)
        json_object_set_new(fields, "session", json_string(acting));
    return fields;
}

bool nx_front_check(const char *op, json_t *fields, nx_front_err_t *err)
{
    const nx_opdef_t *def = nx_optab_find(op, strlen(op));
    if (!def) {
        nx_front_fail(err, "unknown_op", 0, "unknown op '%.64s'", op);
        return false;
    }
    /*  The same bytes the broker would read, checked by the same code.    */
    char *text = nx_json_dumps(fields, JSON_COMPACT);
    size_t size = 0;
    uint8_t *packed = text ? nexus_json_to_msgpack(text, &size) : NULL;
    free(text);
    if (!packed) {
        s_fail_code(err, NEXUS_ERR_NOMEM, "out of memory");
        return false;
    }
    char msg[NX_ERRMSG_MAX] = "";
    nexus_err_t rc = NEXUS_OK;
    if (nx_msgpack_check(packed, size, S_DEPTH) != NX_MSGPACK_OK) {
        rc = NEXUS_ERR_BAD_REQUEST;
        snprintf(msg, sizeof msg, "a field is nested deeper than %d levels", S_DEPTH - 1);
    } else {
        msgpack_zone zone;
        msgpack_zone_init(&zone, 2048);
        msgpack_object obj;
        size_t off = 0;
        if (msgpack_unpack((const char *)packed, size, &off, &zone, &obj) !=
            MSGPACK_UNPACK_SUCCESS) {
            rc = NEXUS_ERR_NOMEM;
            snprintf(msg, sizeof msg, "out of memory");
        } else
            rc = nx_optab_check(def, &obj, msg);
        msgpack_zone_destroy(&zone);
    }
    free(packed);
    if (rc)
        s_fail_code(err, rc, msg);
    return rc == NEXUS_OK;
}

/*  The error of a reply that says ok: false, or of no reply at all.       */
static void s_reply_error(nexus_client_t *client, json_t *rep, nexus_err_t rc, nx_front_err_t *err)
{
    if (!rep && (rc == NEXUS_ERR_TOO_LARGE || rc == NEXUS_ERR_BAD_TOPIC ||
                 rc == NEXUS_ERR_BAD_REQUEST || rc == NEXUS_ERR_INVALID)) {
        /*  Refused by the client before sending (too large for the broker,
            a bad argument): its own code and words (413, 400, ...), never
            "unavailable", which a caller would try again.                */
        s_fail_code(err, rc, client ? nexus_client_errmsg(client) : nexus_strerror(rc));
        return;
    }
    if (!rep) {
        /*  Not asked, or no answer: the outcome of a write is unknown on
            a timeout, and the client must be told so (504), not "down".   */
        const char *code = rc == NEXUS_ERR_TIMEOUT ? "timeout"
                           : rc == NEXUS_ERR_NOMEM ? "no_memory"
                                                   : "unavailable";
        nx_front_fail(err, code,
                      rc == NEXUS_ERR_TIMEOUT ? 504
                      : rc == NEXUS_ERR_NOMEM ? 500
                                              : 503,
                      "%s%s", nexus_strerror(rc),
                      rc == NEXUS_ERR_TIMEOUT       ? ": it may or may not have been done"
                      : rc == NEXUS_ERR_UNREACHABLE ? ": the request was not sent"
                                                    : "");
        return;
    }
    const char *code = json_string_value(json_object_get(rep, "error"));
    const char *message = json_string_value(json_object_get(rep, "message"));
    nx_front_fail(err, code ? code : "internal", 0, "%s", message ? message : "broker error");
    err->extra = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(rep, k, v)
    {
        if (strcmp(k, "id") && strcmp(k, "ok") && strcmp(k, "error") && strcmp(k, "message"))
            json_object_set(err->extra, k, v);
    }
}

json_t *nx_front_call(nexus_client_t *client, const char *op, json_t *fields, nx_front_err_t *err)
{
    if (!fields) {
        s_fail_code(err, NEXUS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!nx_front_check(op, fields, err)) {
        json_decref(fields);
        return NULL;
    }
    json_object_set_new(fields, "op", json_string(op));
    char *text = nx_json_dumps(fields, JSON_COMPACT);
    json_decref(fields);
    if (!text) {
        s_fail_code(err, NEXUS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    char *reply = NULL;
    nexus_err_t rc = nexus_request_json(client, text, &reply);
    free(text);
    json_t *rep = reply ? json_loads(reply, JSON_ALLOW_NUL, NULL) : NULL;
    free(reply);
    if (!rep || !json_is_true(json_object_get(rep, "ok"))) {
        s_reply_error(client, rep, rc, err);
        json_decref(rep);
        return NULL;
    }
    json_object_del(rep, "id");
    json_object_del(rep, "ok");
    return rep;
}

json_t *nx_front_publish(nexus_client_t *client, json_t *msg, const char *source,
                         nx_front_err_t *err)
{
    json_t *type_v = json_object_get(msg, "event_type");
    if (!type_v)
        type_v = json_object_get(msg, "topic");
    const char *type = json_string_value(type_v);
    if (!type) {
        nx_front_fail(err, "bad_request", 400, "%s",
                      type_v ? "field 'event_type' must be a string (a topic)"
                             : "field 'event_type' (a string) is missing");
        return NULL;
    }
    if (!nx_topic_valid(type, strlen(type))) {
        const char *why = nx_topic_why(type, strlen(type), false);
        nx_front_fail(err, "bad_topic", 400,
                      "event_type must be dot-separated tokens with no spaces or wildcards%s%s",
                      why ? ": " : "", why ? why : "");
        return NULL;
    }
    json_t *payload = json_object_get(msg, "payload");
    payload = payload ? json_incref(payload) : json_object();
    const char *bad_target = nx_front_direct_target(type, msg, payload);
    if (bad_target) {
        json_decref(payload);
        nx_front_fail(err, "bad_request", 400, "%s", bad_target);
        return NULL;
    }
    bool too_deep;
    json_t *bin = nx_front_payload_bin(payload, &too_deep);
    if (!bin) {
        json_decref(payload);
        if (too_deep)
            nx_front_fail(err, "bad_request", 400, "payload is nested deeper than %d levels",
                          NX_MSGPACK_LEVELS);
        else
            s_fail_code(err, NEXUS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    /*  A direct message goes to its target's private topic.              */
    char topic[NX_TOPIC_MAX + 1];
    const char *to = json_string_value(json_object_get(payload, "to"));
    if (strcmp(type, NX_FRONT_DIRECT) == 0 && to)
        snprintf(topic, sizeof topic, "session.%s.direct", to);
    else
        snprintf(topic, sizeof topic, "%s", type);
    json_decref(payload);
    return nx_front_call(client, "publish",
                         json_pack("{s:s, s:o, s:s}", "topic", topic, "payload", bin, "source",
                                   source ? source : ""),
                         err);
}

bool nx_front_gap(uint64_t after, uint64_t first, uint64_t last, uint64_t *from, uint64_t *to)
{
    if (!after || after >= last)
        return false;
    /*  Empty with a last seq above: retention removed every event.      */
    uint64_t upto = first ? first - 1 : last;
    if (upto <= after)
        return false;
    *from = after + 1;
    *to = upto;
    return true;
}

const char *nx_front_reset_code(const char *cursor_store, const char *store)
{
    return cursor_store && *cursor_store && store && strcmp(cursor_store, store) != 0
               ? "another_store"
               : "beyond_last_seq";
}

/*  The seq after which a history query reads on oldest first (0: none,
    or newest first): since_seq, or the seq before its cursor.          */
static uint64_t s_reads_after(json_t *fields)
{
    const char *order = json_string_value(json_object_get(fields, "order"));
    if (order && strcmp(order, "asc") != 0)
        return 0;
    json_int_t cursor = json_integer_value(json_object_get(fields, "cursor"));
    if (cursor > 0)
        return (uint64_t)cursor - 1;
    json_int_t since = json_integer_value(json_object_get(fields, "since_seq"));
    return since > 0 ? (uint64_t)since : 0;
}

json_t *nx_front_history(nexus_client_t *client, json_t *fields, const char *viewer,
                         nx_front_err_t *err)
{
    uint64_t after = s_reads_after(fields);
    /*  Direct messages live on their targets' topics: a viewer that asks
        for message.direct asks the broker for those too (what it may see
        of them is left to nx_front_event_visible below).                  */
    json_t *patterns = json_object_get(fields, "patterns");
    bool direct = false;
    size_t i;
    json_t *p;
    json_array_foreach(patterns, i, p)
    {
        const char *s = json_string_value(p);
        direct |= s && nx_front_wants_direct(s);
    }
    /*  A copy: the caller's array may be shared (a parked wait keeps it). */
    if (viewer && direct && json_array_size(patterns) < 64) {
        json_t *more = json_copy(patterns);
        json_array_append_new(more, json_string("session.*.direct"));
        json_object_set_new(fields, "patterns", more);
    }
    json_t *rep = nx_front_call(client, "history", fields, err);
    if (!rep)
        return NULL;
    /*  Broker records {seq, ts, topic, source, payload(bin)} become client
        events: the payload bytes are msgpack, shown as JSON.              */
    json_t *events = json_array();
    json_t *rec;
    json_array_foreach(json_object_get(rep, "events"), i, rec)
    {
        json_t *ev = nx_front_event_from_record(rec);
        if (nx_front_event_visible(ev, viewer))
            json_array_append_new(events, ev);
        else
            json_decref(ev);
    }
    json_t *cursor = json_object_get(rep, "next_cursor");
    json_t *last = json_object_get(rep, "last_seq");
    json_t *out = json_pack("{s:o, s:o, s:o}", "events", events, "next_cursor",
                            cursor ? json_incref(cursor) : json_null(), "last_seq",
                            last ? json_incref(last) : json_integer(0));
    /*  The store these seqs belong to (protocol.md 6.1).                  */
    json_t *store = json_object_get(rep, "store_id");
    if (out && json_is_string(store))
        json_object_set(out, "store_id", store);
    /*  Its oldest event now: a reader after seq N learns of a gap.        */
    json_t *first = json_object_get(rep, "first_seq");
    if (out && json_is_integer(first))
        json_object_set(out, "first_seq", first);
    uint64_t from, to;
    if (out && nx_front_gap(after, (uint64_t)json_integer_value(first),
                            (uint64_t)json_integer_value(last), &from, &to))
        json_object_set_new(
            out, "gap", json_pack("{s:I, s:I}", "from", (json_int_t)from, "to", (json_int_t)to));
    json_decref(rep);
    return out;
}
