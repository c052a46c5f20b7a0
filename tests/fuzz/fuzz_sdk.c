/*  =========================================================================
    fuzz_sdk - the SDK's decoders of what the broker sends, and the JSON
    mapping every front-end uses, on bytes no broker would send: no
    sockets, the decoders are called as the client's threads call them.

    Input: byte 0 (mod 5) picks the decoder, the rest are its bytes:
      0  a control reply (nx_reply_parse, nx_reply_id, nx_reply_status,
         the fields clients read with nx_obj_u64 / nx_obj_str);
      1  a history page (nx_page_parse, then every event record read in
         place, nx_event_read_record, shown as the application sees it:
         view, JSON, payload JSON, msgpack, a copy);
      2  an event frame off the SUB socket (nx_event_msg_decode), made an
         owned event and shown; a frame that decodes encodes back to the
         same bytes;
      3  a payload shown as JSON (nexus_msgpack_to_json) and that JSON
         packed back (nexus_json_to_msgpack): it comes back as the same
         JSON (when it holds a "$base64", from the second round on);
      4  the in-place reader (nx_mpread_skip) against nx_msgpack_check:
         what the check passes the reader walks to its end, and msgpack-c
         unpacks in memory bounded by the input.

    Promises checked: the above, every pointer a decoder returns lies in
    its input, and ASan, UBSan and LeakSanitizer see nothing.
    =========================================================================
*/

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_util.h"
#include "nx_client.h"
#include "nx_codec.h"
#include "nx_mpread.h"

static void s_inside(const void *p, size_t len, const uint8_t *data, size_t size, const char *what)
{
    if (len == 0)
        return;
    const uint8_t *b = p;
    FZ_CHECK(b >= data && b + len <= data + size, "%s points outside the input", what);
}

/*  Shows an event as the application may: every accessor, every form.    */
static void s_show(nexus_event_t *ev)
{
    FZ_CHECK(nexus_event_topic(ev) && nexus_event_source(ev), "an event without strings");
    size_t size = 0;
    const void *payload = nexus_event_payload(ev, &size);
    FZ_CHECK(payload || size == 0, "payload");
    const char *json = nexus_event_json(ev);
    const char *pj = nexus_event_payload_json(ev);
    FZ_CHECK(json && pj, "an event without JSON");
    json_error_t jerr;
    json_t *j = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    FZ_CHECK(json_is_object(j), "event JSON that is not an object: %s", jerr.text);
    json_decref(j);
    (void)nexus_event_msgpack(ev);
    nexus_event_t *copy = nexus_event_dup(ev);
    FZ_CHECK(copy, "dup");
    FZ_CHECK(strcmp(nexus_event_json(copy), json) == 0, "a copy shows other JSON");
    nexus_event_destroy(&copy);
}

static void s_reply(const uint8_t *data, size_t size)
{
    nx_reply_t rep;
    nx_reply_init(&rep);
    if (nx_reply_parse(&rep, data, size) == 0) {
        FZ_CHECK(rep.map && rep.map->type == MSGPACK_OBJECT_MAP, "a reply that is not a map");
        (void)nx_reply_id(&rep);
        char err[NX_ERRMSG_MAX];
        nexus_err_t rc = nx_reply_status(&rep, err, sizeof err);
        FZ_CHECK(rc == NEXUS_OK || strlen(err) < sizeof err, "status");
        static const char *const keys[] = {"seq",     "token",  "last_seq", "first_seq", "count",
                                           "session", "secret", "store_id", "holder",    "state"};
        char buf[64];
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            (void)nx_obj_u64(rep.map, keys[i]);
            const char *s = nx_obj_str(rep.map, keys[i], buf, sizeof buf);
            FZ_CHECK(s && strlen(s) < sizeof buf, "nx_obj_str");
        }
    }
    nx_reply_destroy(&rep);
}

static void s_page(const uint8_t *data, size_t size)
{
    nx_page_t pg;
    if (nx_page_parse(&pg, data, size) != 0)
        return;
    FZ_CHECK(strlen(pg.error) < sizeof pg.error && strlen(pg.message) < sizeof pg.message &&
                 strlen(pg.store_id) < sizeof pg.store_id,
             "page strings");
    FZ_CHECK(pg.events.p == NULL || (pg.events.p >= data && pg.events.end == data + size),
             "events outside the page");
    nx_event_view_t view;
    nx_view_init(&view);
    for (uint32_t i = 0; i < pg.n_events; i++) {
        nx_event_msg_t m;
        if (nx_event_read_record(&pg.events, &m) != 0)
            break;
        s_inside(m.topic, m.topic_len, data, size, "topic");
        s_inside(m.source, m.source_len, data, size, "source");
        s_inside(m.payload, m.payload_len, data, size, "payload");
        nx_view_set_msg(&view, &m);
        s_show(&view.ev);
    }
    nx_view_clear(&view);
}

static void s_frame(const uint8_t *data, size_t size)
{
    nx_event_msg_t m;
    if (nx_event_msg_decode(data, size, &m) != 0)
        return;
    s_inside(m.topic, m.topic_len, data, size, "topic");
    s_inside(m.source, m.source_len, data, size, "source");
    s_inside(m.payload, m.payload_len, data, size, "payload");
    nexus_event_t *ev = nx_event_new(m.seq, m.ts, m.topic, m.topic_len, m.source, m.source_len,
                                     m.payload, m.payload_len);
    FZ_CHECK(ev, "nx_event_new");
    s_show(ev);
    nexus_event_destroy(&ev);
    FZ_CHECK(!ev, "destroy nulls");
    size_t n = nx_event_msg_size(m.topic_len, m.source_len, m.payload_len);
    FZ_CHECK(n == size, "a frame of %zu bytes decodes to one of %zu", size, n);
    uint8_t *again = malloc(n);
    FZ_CHECK(again, "malloc");
    size_t w = nx_event_msg_encode(again, m.topic, m.topic_len, m.seq, m.ts, m.source, m.source_len,
                                   m.payload, m.payload_len);
    FZ_CHECK(w == size && memcmp(again, data, size) == 0, "a frame encodes back to other bytes");
    free(again);
}

/*  JSON text -> msgpack -> JSON text; NULL when the text does not pack.   */
static char *s_round(const char *text)
{
    size_t size = 0;
    uint8_t *packed = nexus_json_to_msgpack(text, &size);
    if (!packed)
        return NULL;
    char *back = nexus_msgpack_to_json(packed, size);
    FZ_CHECK(back, "nexus_msgpack_to_json of what nexus_json_to_msgpack packed");
    free(packed);
    return back;
}

static void s_json(const uint8_t *data, size_t size)
{
    char *text = nexus_msgpack_to_json(data, size);
    FZ_CHECK(text, "nexus_msgpack_to_json");
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    FZ_CHECK(j, "not JSON: %s", jerr.text);
    json_decref(j);
    /*  Without "$base64" the JSON comes back as it is; with it (a string
        that is not canonical base64 is read as the bytes it decodes to)
        it is the same from the second time on.                           */
    char *back = s_round(text);
    if (back && !strstr(text, "$base64"))
        FZ_CHECK(strcmp(back, text) == 0, "JSON -> msgpack -> JSON changes it:\n%.300s\n%.300s",
                 text, back);
    char *again = back ? s_round(back) : NULL;
    if (back)
        FZ_CHECK(again && strcmp(again, back) == 0,
                 "JSON -> msgpack -> JSON is not stable:\n%.300s\n%.300s", back,
                 again ? again : "(null)");
    free(again);
    free(back);
    free(text);
}

static void s_reader(const uint8_t *data, size_t size)
{
    nx_msgpack_check_t chk = nx_msgpack_check(data, size, NX_MSGPACK_DEPTH);
    nx_mpread_t r;
    nx_mpread_init(&r, data, size);
    int rc = nx_mpread_skip(&r);
    if (chk == NX_MSGPACK_OK) {
        FZ_CHECK(rc == 0 && nx_mpread_left(&r) == 0,
                 "the reader stops where the check read one whole value");
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        FZ_CHECK(msgpack_unpack_next(&u, (const char *)data, size, &off) ==
                         MSGPACK_UNPACK_SUCCESS &&
                     off == size,
                 "msgpack-c cannot unpack what the check passed");
        msgpack_unpacked_destroy(&u);
    } else if (chk == NX_MSGPACK_TRAILING)
        FZ_CHECK(rc == 0 && nx_mpread_left(&r) > 0, "trailing bytes");
    else if (chk == NX_MSGPACK_TRUNCATED)
        FZ_CHECK(rc != 0, "the reader reads a value the check found truncated");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /*  A copy of exactly the bytes, so ASan sees a read past the end.    */
    size_t n = size - 1;
    uint8_t *copy = malloc(n ? n : 1);
    FZ_CHECK(copy, "malloc");
    memcpy(copy, data + 1, n);
    switch (data[0] % 5) {
    case 0:
        s_reply(copy, n);
        break;
    case 1:
        s_page(copy, n);
        break;
    case 2:
        s_frame(copy, n);
        break;
    case 3:
        s_json(copy, n);
        break;
    default:
        s_reader(copy, n);
        break;
    }
    free(copy);
    return 0;
}
