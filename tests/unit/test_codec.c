/*  =========================================================================
    test_codec - stamp frames, stored records, and the msgpack map helpers
    on maps packed with msgpack_pack_* and read back with
    msgpack_unpack_next, the way the broker sees requests.
    =========================================================================
*/

#include <stdlib.h>

#include "nx_codec.h"
#include "nx_test.h"
#include "nx_topic.h"

/*  Copies len bytes to a heap block of exactly len bytes, so that ASan
    catches a decoder that reads one byte too far.                          */
static uint8_t *s_dup(const uint8_t *src, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (len)
        memcpy(copy, src, len);
    return copy;
}

static void s_test_u64(void)
{
    uint8_t buf[8];
    nx_put_u64(buf, 0x0102030405060708ULL);
    CHECK(buf[0] == 0x01 && buf[7] == 0x08);
    CHECK_EQ_U64(nx_get_u64(buf), 0x0102030405060708ULL);
    nx_put_u64(buf, UINT64_MAX);
    CHECK_EQ_U64(nx_get_u64(buf), UINT64_MAX);
    nx_put_u64(buf, 0);
    CHECK_EQ_U64(nx_get_u64(buf), 0);
}

/*  The event message: round trips, NUL-terminated topic that ZeroMQ's
    prefix filter can read, truncation at every length refused.            */
static void s_test_stamp(void)
{
    uint8_t buf[NX_TOPIC_MAX + NX_EVENT_HEAD + NX_SOURCE_MAX + 64];
    const uint8_t payload[] = {0x81, 0xa1, 'a', 0x00, 0x01};
    size_t n = nx_event_msg_encode(buf, "work.claimed", 12, 42, 1700000000000000ULL, "svc", 3,
                                   payload, sizeof payload);
    CHECK_EQ_U64(n, nx_event_msg_size(12, 3, sizeof payload));
    CHECK_EQ_U64(n, 12 + NX_EVENT_HEAD + 3 + sizeof payload);
    CHECK(memcmp(buf, "work.claimed", 12) == 0 && buf[12] == 0);
    CHECK(buf[13] == NX_EVENT_VERSION);
    /*  A subscription to the prefix "work." matches the frame's bytes.     */
    CHECK(memcmp(buf, "work.", 5) == 0);
    nx_event_msg_t ev;
    CHECK(nx_event_msg_decode(buf, n, &ev) == 0);
    CHECK_EQ_U64(ev.topic_len, 12);
    CHECK(memcmp(ev.topic, "work.claimed", 12) == 0);
    CHECK_EQ_U64(ev.seq, 42);
    CHECK_EQ_U64(ev.ts, 1700000000000000ULL);
    CHECK(ev.source_len == 3 && memcmp(ev.source, "svc", 3) == 0);
    CHECK(ev.payload_len == sizeof payload && memcmp(ev.payload, payload, sizeof payload) == 0);
    /*  Every strict prefix of the head is refused; the payload may be
        cut anywhere (it is "the rest").                                    */
    for (size_t len = 0; len < 12 + NX_EVENT_HEAD + 3; len++)
        CHECK(nx_event_msg_decode(buf, len, &ev) == -1);
    CHECK(nx_event_msg_decode(buf, 12 + NX_EVENT_HEAD + 3, &ev) == 0 && ev.payload_len == 0);
    /*  Empty source and payload; the largest topic and source.            */
    n = nx_event_msg_encode(buf, "a", 1, UINT64_MAX, 0, NULL, 0, NULL, 0);
    CHECK_EQ_U64(n, 1 + NX_EVENT_HEAD);
    CHECK(nx_event_msg_decode(buf, n, &ev) == 0);
    CHECK(ev.seq == UINT64_MAX && ev.source_len == 0 && ev.payload_len == 0);
    char topic[NX_TOPIC_MAX + 1], source[NX_SOURCE_MAX + 1];
    memset(topic, 't', sizeof topic);
    memset(source, 's', sizeof source);
    n = nx_event_msg_encode(buf, topic, NX_TOPIC_MAX, 7, 8, source, NX_SOURCE_MAX, NULL, 0);
    CHECK(n > 0 && nx_event_msg_decode(buf, n, &ev) == 0);
    CHECK(ev.topic_len == NX_TOPIC_MAX && ev.source_len == NX_SOURCE_MAX);
    CHECK_EQ_U64(nx_event_msg_encode(buf, topic, NX_TOPIC_MAX + 1, 7, 8, NULL, 0, NULL, 0), 0);
    CHECK_EQ_U64(nx_event_msg_encode(buf, "a", 1, 7, 8, source, NX_SOURCE_MAX + 1, NULL, 0), 0);
    CHECK_EQ_U64(nx_event_msg_encode(buf, "", 0, 7, 8, NULL, 0, NULL, 0), 0);
    /*  No NUL within a topic's length, a leading NUL, another version.    */
    memset(buf, 'x', NX_TOPIC_MAX + NX_EVENT_HEAD);
    CHECK(nx_event_msg_decode(buf, NX_TOPIC_MAX + NX_EVENT_HEAD, &ev) == -1);
    n = nx_event_msg_encode(buf, "a.b", 3, 1, 2, "s", 1, NULL, 0);
    buf[4] = NX_EVENT_VERSION + 1;
    CHECK(nx_event_msg_decode(buf, n, &ev) == -1);
    buf[4] = NX_EVENT_VERSION;
    buf[0] = 0;
    CHECK(nx_event_msg_decode(buf, n, &ev) == -1);
    CHECK(nx_event_msg_decode(NULL, n, &ev) == -1);
    /*  A source length past the end of the frame.                         */
    n = nx_event_msg_encode(buf, "a.b", 3, 1, 2, "s", 1, NULL, 0);
    buf[3 + 18] = 100;
    CHECK(nx_event_msg_decode(buf, n, &ev) == -1);
}

/*  Encodes a record into an exact-size heap buffer, decodes it back and
    checks every field; then checks that every truncation is rejected.     */
static void s_record_round_trip(uint64_t ts, const char *topic, size_t topic_len,
                                const char *source, size_t source_len, const uint8_t *payload,
                                size_t payload_len)
{
    size_t size = nx_record_size(topic_len, source_len, payload_len);
    CHECK_EQ_U64(size, NX_RECORD_HEAD + topic_len + source_len + payload_len);
    uint8_t *buf = malloc(size);
    CHECK_EQ_U64(
        nx_record_encode(buf, ts, topic, topic_len, source, source_len, payload, payload_len),
        size);
    CHECK(buf[0] == NX_RECORD_VERSION);

    nx_record_t rec;
    CHECK(nx_record_decode(buf, size, &rec) == 0);
    CHECK_EQ_U64(rec.ts, ts);
    CHECK_EQ_U64(rec.topic_len, topic_len);
    CHECK(memcmp(rec.topic, topic, topic_len) == 0);
    CHECK_EQ_U64(rec.source_len, source_len);
    CHECK(source_len == 0 || memcmp(rec.source, source, source_len) == 0);
    CHECK_EQ_U64(rec.payload_len, payload_len);
    CHECK(payload_len == 0 || memcmp(rec.payload, payload, payload_len) == 0);
    CHECK(rec.topic == (const char *)buf + NX_RECORD_HEAD);

    /* Shorter than head + topic + source: rejected at every length.
       Cutting only the payload gives a valid record with less payload.    */
    for (size_t len = 0; len < size; len++) {
        uint8_t *cut = s_dup(buf, len);
        int rc = nx_record_decode(cut, len, &rec);
        if (len < NX_RECORD_HEAD + topic_len + source_len)
            CHECK(rc == -1);
        else {
            CHECK(rc == 0);
            CHECK_EQ_U64(rec.payload_len, len - NX_RECORD_HEAD - topic_len - source_len);
        }
        free(cut);
    }
    free(buf);
}

static void s_test_record(void)
{
    const uint8_t payload[] = {0x00, 0xff, 0x10, 0x80};
    s_record_round_trip(123456789, "work.claimed", 12, "svc-1", 5, payload, sizeof(payload));
    s_record_round_trip(0, "a", 1, "svc", 3, NULL, 0);
    s_record_round_trip(UINT64_MAX, "a", 1, NULL, 0, payload, 1);

    char topic[NX_TOPIC_MAX + 1];
    char source[NX_SOURCE_MAX + 1];
    memset(topic, 't', sizeof(topic));
    memset(source, 's', sizeof(source));
    s_record_round_trip(9, topic, NX_TOPIC_MAX, source, NX_SOURCE_MAX, payload, sizeof(payload));

    /* Lengths the format must not carry are refused by the encoder.        */
    uint8_t buf[NX_RECORD_HEAD + NX_TOPIC_MAX + NX_SOURCE_MAX + 16];
    CHECK_EQ_U64(nx_record_encode(buf, 1, topic, NX_TOPIC_MAX + 1, "s", 1, NULL, 0), 0);
    CHECK_EQ_U64(nx_record_encode(buf, 1, "a", 1, source, NX_SOURCE_MAX + 1, NULL, 0), 0);

    /* Another version, and header lengths that overrun the buffer or the
       limits, are rejected.                                                */
    nx_record_t rec;
    size_t n = nx_record_encode(buf, 1, "a.b", 3, "s", 1, payload, 2);
    CHECK(nx_record_decode(buf, n, &rec) == 0);
    buf[0] = NX_RECORD_VERSION + 1;
    CHECK(nx_record_decode(buf, n, &rec) == -1);
    buf[0] = NX_RECORD_VERSION;
    buf[10] = 200; /* topic_len 200 > bytes left                            */
    CHECK(nx_record_decode(buf, n, &rec) == -1);
    buf[10] = 3;
    buf[11] = 10; /* source_len 10 > bytes left                             */
    CHECK(nx_record_decode(buf, n, &rec) == -1);
    buf[11] = 1;
    memset(buf + n, 0, sizeof(buf) - n);
    buf[9] = 0x01; /* topic_len 259 > NX_TOPIC_MAX even with room            */
    CHECK(nx_record_decode(buf, sizeof(buf), &rec) == -1);
    buf[9] = 0;
    buf[11] = NX_SOURCE_MAX + 1;
    CHECK(nx_record_decode(buf, sizeof(buf), &rec) == -1);
    CHECK(nx_record_decode(NULL, n, &rec) == -1);
}

/*  ---- msgpack maps -------------------------------------------------------*/

/*  Holds one packed and unpacked request map.                              */
typedef struct {
    msgpack_sbuffer sbuf; /* packed bytes                                 */
    msgpack_packer pk;    /* writes into sbuf                             */
    msgpack_unpacked unp; /* the unpacked object, valid until s_map_done  */
} s_map_t;

static void s_map_begin(s_map_t *m, uint32_t entries)
{
    msgpack_sbuffer_init(&m->sbuf);
    msgpack_packer_init(&m->pk, &m->sbuf, msgpack_sbuffer_write);
    msgpack_unpacked_init(&m->unp);
    msgpack_pack_map(&m->pk, entries);
}

static const msgpack_object *s_map_end(s_map_t *m)
{
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(&m->unp, m->sbuf.data, m->sbuf.size, &off);
    CHECK(rc == MSGPACK_UNPACK_SUCCESS);
    CHECK_EQ_U64(off, m->sbuf.size);
    return &m->unp.data;
}

static void s_map_done(s_map_t *m)
{
    msgpack_unpacked_destroy(&m->unp);
    msgpack_sbuffer_destroy(&m->sbuf);
}

static void s_test_map_get(void)
{
    s_map_t m;
    s_map_begin(&m, 5);
    nx_pack_kv_str(&m.pk, "topic", "a.b");
    msgpack_pack_int(&m.pk, 7); /* a non-str key, ignored                   */
    msgpack_pack_str_with_body(&m.pk, "int-key", 7);
    msgpack_pack_bin_with_body(&m.pk, "op", 2); /* a bin key, ignored      */
    msgpack_pack_str_with_body(&m.pk, "bin-key", 7);
    nx_pack_kv_u64(&m.pk, "topics", 1); /* shares a prefix with "topic"     */
    nx_pack_kv_nil(&m.pk, "");
    const msgpack_object *map = s_map_end(&m);

    const msgpack_object *val = nx_map_get(map, "topic");
    CHECK(val && val->type == MSGPACK_OBJECT_STR && val->via.str.size == 3);
    val = nx_map_get(map, "topics");
    CHECK(val && val->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
    CHECK(nx_map_get(map, "top") == NULL);
    CHECK(nx_map_get(map, "topicss") == NULL);
    CHECK(nx_map_get(map, "op") == NULL);
    CHECK(nx_map_get(map, "7") == NULL);
    val = nx_map_get(map, "");
    CHECK(val && val->type == MSGPACK_OBJECT_NIL);
    CHECK(nx_map_get(NULL, "topic") == NULL);
    CHECK(nx_map_get(&val[0], "topic") == NULL); /* nil is not a map       */
    s_map_done(&m);
}

/*  Checks an error code and that the message names the field.             */
#define CHECK_BAD(call, field, text)                                                               \
    do {                                                                                           \
        err[0] = '\0';                                                                             \
        CHECK((call) == NEXUS_ERR_BAD_REQUEST);                                                    \
        CHECK_EQ_STR(err, text);                                                                   \
        CHECK(strstr(err, "'" field "'") != NULL);                                                 \
    } while (0)

static void s_test_map_helpers(void)
{
    char err[NX_ERRMSG_MAX];
    s_map_t m;
    const uint8_t blob[] = {1, 2, 3};

    s_map_begin(&m, 12);
    nx_pack_kv_str(&m.pk, "str", "hello");
    nx_pack_kv_u64(&m.pk, "u64", UINT64_MAX);
    nx_pack_kv_u64(&m.pk, "zero", 0);
    nx_pack_kv_i64(&m.pk, "neg", -5);
    nx_pack_kv_double(&m.pk, "dbl", 1.5);
    nx_pack_kv_bool(&m.pk, "yes", true);
    nx_pack_kv_bool(&m.pk, "no", false);
    nx_pack_kv_bin(&m.pk, "bin", blob, sizeof(blob));
    nx_pack_kv_nil(&m.pk, "nil");
    nx_pack_str(&m.pk, "arr");
    msgpack_pack_array(&m.pk, 2);
    nx_pack_str(&m.pk, "a.*");
    nx_pack_strn(&m.pk, "b.>xx", 3);
    nx_pack_str(&m.pk, "mixed");
    msgpack_pack_array(&m.pk, 2);
    nx_pack_str(&m.pk, "a");
    msgpack_pack_int(&m.pk, 1);
    nx_pack_str(&m.pk, "empty");
    msgpack_pack_array(&m.pk, 0);
    const msgpack_object *map = s_map_end(&m);

    /* Strings.                                                             */
    const char *s = NULL;
    size_t slen = 0;
    CHECK(nx_map_str(map, "str", &s, &slen, err) == NEXUS_OK);
    CHECK(slen == 5 && memcmp(s, "hello", 5) == 0);
    s = "default";
    CHECK(nx_map_str(map, "absent", &s, &slen, err) == NEXUS_OK);
    CHECK_EQ_STR(s, "default"); /* untouched                                */
    CHECK(nx_map_str_req(map, "str", &s, &slen, err) == NEXUS_OK);
    CHECK_BAD(nx_map_str(map, "u64", &s, &slen, err), "u64", "field 'u64' must be a string");
    CHECK_BAD(nx_map_str(map, "bin", &s, &slen, err), "bin", "field 'bin' must be a string");
    CHECK_BAD(nx_map_str(map, "nil", &s, &slen, err), "nil", "field 'nil' must be a string");
    CHECK_BAD(nx_map_str_req(map, "topic", &s, &slen, err), "topic", "missing field 'topic'");
    CHECK_BAD(nx_map_str_req(map, "u64", &s, &slen, err), "u64", "field 'u64' must be a string");
    CHECK(nx_map_str(map, "u64", &s, &slen, NULL) == NEXUS_ERR_BAD_REQUEST);

    /* Non-negative integers.                                               */
    uint64_t u = 99;
    CHECK(nx_map_u64(map, "u64", &u, err) == NEXUS_OK);
    CHECK_EQ_U64(u, UINT64_MAX);
    CHECK(nx_map_u64(map, "zero", &u, err) == NEXUS_OK);
    CHECK_EQ_U64(u, 0);
    u = 99;
    CHECK(nx_map_u64(map, "absent", &u, err) == NEXUS_OK);
    CHECK_EQ_U64(u, 99);
    CHECK(nx_map_u64_req(map, "zero", &u, err) == NEXUS_OK);
    CHECK_BAD(nx_map_u64(map, "neg", &u, err), "neg", "field 'neg' must be a non-negative integer");
    CHECK_BAD(nx_map_u64(map, "dbl", &u, err), "dbl", "field 'dbl' must be a non-negative integer");
    CHECK_BAD(nx_map_u64(map, "str", &u, err), "str", "field 'str' must be a non-negative integer");
    CHECK_BAD(nx_map_u64(map, "yes", &u, err), "yes", "field 'yes' must be a non-negative integer");
    CHECK_BAD(nx_map_u64_req(map, "limit", &u, err), "limit", "missing field 'limit'");
    CHECK_BAD(nx_map_u64_req(map, "neg", &u, err), "neg",
              "field 'neg' must be a non-negative integer");
    CHECK_EQ_U64(u, 0); /* errors leave *out alone                          */

    /* Booleans.                                                            */
    bool b = false;
    CHECK(nx_map_bool(map, "yes", &b, err) == NEXUS_OK);
    CHECK(b == true);
    CHECK(nx_map_bool(map, "no", &b, err) == NEXUS_OK);
    CHECK(b == false);
    b = true;
    CHECK(nx_map_bool(map, "absent", &b, err) == NEXUS_OK);
    CHECK(b == true);
    CHECK_BAD(nx_map_bool(map, "zero", &b, err), "zero", "field 'zero' must be a boolean");
    CHECK_BAD(nx_map_bool(map, "str", &b, err), "str", "field 'str' must be a boolean");

    /* Bytes: bin or str.                                                   */
    const uint8_t *bytes = NULL;
    size_t blen = 0;
    CHECK(nx_map_bytes(map, "bin", &bytes, &blen, err) == NEXUS_OK);
    CHECK(blen == 3 && memcmp(bytes, blob, 3) == 0);
    CHECK(nx_map_bytes(map, "str", &bytes, &blen, err) == NEXUS_OK);
    CHECK(blen == 5 && memcmp(bytes, "hello", 5) == 0);
    bytes = NULL;
    CHECK(nx_map_bytes(map, "absent", &bytes, &blen, err) == NEXUS_OK);
    CHECK(bytes == NULL);
    CHECK_BAD(nx_map_bytes(map, "u64", &bytes, &blen, err), "u64",
              "field 'u64' must be bytes (bin or str)");
    CHECK_BAD(nx_map_bytes(map, "arr", &bytes, &blen, err), "arr",
              "field 'arr' must be bytes (bin or str)");

    /* Arrays of strings.                                                   */
    const msgpack_object_array *arr = NULL;
    CHECK(nx_map_str_array(map, "arr", &arr, err) == NEXUS_OK);
    CHECK(arr && arr->size == 2);
    if (arr && arr->size == 2) {
        CHECK(arr->ptr[0].via.str.size == 3 && memcmp(arr->ptr[0].via.str.ptr, "a.*", 3) == 0);
        CHECK(arr->ptr[1].via.str.size == 3 && memcmp(arr->ptr[1].via.str.ptr, "b.>", 3) == 0);
    }
    CHECK(nx_map_str_array(map, "empty", &arr, err) == NEXUS_OK);
    CHECK(arr && arr->size == 0);
    arr = NULL;
    CHECK(nx_map_str_array(map, "absent", &arr, err) == NEXUS_OK);
    CHECK(arr == NULL);
    CHECK_BAD(nx_map_str_array(map, "mixed", &arr, err), "mixed",
              "field 'mixed' must be an array of strings");
    CHECK_BAD(nx_map_str_array(map, "str", &arr, err), "str",
              "field 'str' must be an array of strings");
    CHECK(arr == NULL);

    s_map_done(&m);

    /* A request that is not a map has no fields at all.                    */
    s_map_t a;
    msgpack_sbuffer_init(&a.sbuf);
    msgpack_packer_init(&a.pk, &a.sbuf, msgpack_sbuffer_write);
    msgpack_unpacked_init(&a.unp);
    nx_pack_str(&a.pk, "not a map");
    const msgpack_object *obj = s_map_end(&a);
    s = NULL;
    CHECK(nx_map_str(obj, "str", &s, &slen, err) == NEXUS_OK);
    CHECK(s == NULL);
    CHECK_BAD(nx_map_str_req(obj, "topic", &s, &slen, err), "topic", "missing field 'topic'");
    s_map_done(&a);
}

/*  A record packed as an event comes back with the same five fields.       */
static void s_check_event(uint64_t seq, const nx_record_t *rec)
{
    char err[NX_ERRMSG_MAX];
    s_map_t m;
    msgpack_sbuffer_init(&m.sbuf);
    msgpack_packer_init(&m.pk, &m.sbuf, msgpack_sbuffer_write);
    msgpack_unpacked_init(&m.unp);
    nx_pack_event(&m.pk, seq, rec);
    const msgpack_object *map = s_map_end(&m);

    CHECK(map->type == MSGPACK_OBJECT_MAP && map->via.map.size == 5);
    uint64_t u = 0;
    CHECK(nx_map_u64_req(map, "seq", &u, err) == NEXUS_OK);
    CHECK_EQ_U64(u, seq);
    CHECK(nx_map_u64_req(map, "ts", &u, err) == NEXUS_OK);
    CHECK_EQ_U64(u, rec->ts);
    const char *s = NULL;
    size_t len = 0;
    CHECK(nx_map_str_req(map, "topic", &s, &len, err) == NEXUS_OK);
    CHECK(len == rec->topic_len && memcmp(s, rec->topic, len) == 0);
    CHECK(nx_map_str_req(map, "source", &s, &len, err) == NEXUS_OK);
    CHECK(len == rec->source_len && (len == 0 || memcmp(s, rec->source, len) == 0));
    const msgpack_object *payload = nx_map_get(map, "payload");
    CHECK(payload && payload->type == MSGPACK_OBJECT_BIN);
    if (payload) {
        CHECK_EQ_U64(payload->via.bin.size, rec->payload_len);
        CHECK(rec->payload_len == 0 ||
              memcmp(payload->via.bin.ptr, rec->payload, rec->payload_len) == 0);
    }
    s_map_done(&m);
}

static void s_test_pack_event(void)
{
    const uint8_t payload[] = {'{', '}', 0, 0xff};
    uint8_t buf[64];
    nx_record_t rec;
    size_t n = nx_record_encode(buf, 1700000000123456ULL, "work.claimed", 12, "svc", 3, payload,
                                sizeof(payload));
    CHECK(nx_record_decode(buf, n, &rec) == 0);
    s_check_event(77, &rec);

    /* Empty source and payload, straight from a decoded record.            */
    n = nx_record_encode(buf, 5, "a", 1, NULL, 0, NULL, 0);
    CHECK(nx_record_decode(buf, n, &rec) == 0);
    s_check_event(UINT64_MAX, &rec);
}

/*  nx_msgpack_check: hostile headers must be refused before msgpack-c
    allocates for them; every prefix of a valid object is truncated.       */
static void s_test_msgpack_check(void)
{
    static const struct {
        const char *bytes;
        size_t len;
        nx_msgpack_check_t want;
    } cases[] = {
        {"\x80", 1, NX_MSGPACK_OK},
        {"\x81\xa2op\xa4ping", 9, NX_MSGPACK_OK},
        {"\x92\x01\xcb\x00\x00\x00\x00\x00\x00\x00\x00", 11, NX_MSGPACK_OK},
        {"\xc4\x03"
         "abc",
         5, NX_MSGPACK_OK},
        {"\xd8\x01"
         "0123456789abcdef",
         18, NX_MSGPACK_OK},
        {"\xc1", 1, NX_MSGPACK_INVALID},
        {"\x82\xa2op", 4, NX_MSGPACK_TRUNCATED},
        {"\xdd\xff\xff\xff\xff", 5, NX_MSGPACK_TRUNCATED},
        {"\xdf\xff\xff\xff\xff", 5, NX_MSGPACK_TRUNCATED},
        {"\xc6\xff\xff\xff\xff", 5, NX_MSGPACK_TRUNCATED},
        {"\xdb\x00\x00\x00\x05"
         "abc",
         8, NX_MSGPACK_TRUNCATED},
        {"\x80\x00", 2, NX_MSGPACK_TRAILING},
        {"", 0, NX_MSGPACK_TRUNCATED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nx_msgpack_check_t got =
            nx_msgpack_check((const uint8_t *)cases[i].bytes, cases[i].len, 32);
        if (got != cases[i].want)
            fprintf(stderr, "msgpack_check case %zu: got %d want %d\n", i, got, cases[i].want);
        CHECK(got == cases[i].want);
    }
    /*  Nesting: 31 arrays deep is fine at depth 32, 40 is too deep.        */
    uint8_t deep[64];
    memset(deep, 0x91, sizeof deep);
    deep[31] = 0x00;
    CHECK(nx_msgpack_check(deep, 32, 32) == NX_MSGPACK_OK);
    deep[31] = 0x91;
    deep[40] = 0x00;
    CHECK(nx_msgpack_check(deep, 41, 32) == NX_MSGPACK_TOO_DEEP);
    /*  An empty innermost container is a level too, as msgpack-c counts
        it: NX_MSGPACK_LEVELS (32) arrays, the last one empty, pass and
        unpack; one more does neither (it used to pass the check, and
        then fail to unpack).                                                */
    memset(deep, 0x91, sizeof deep);
    deep[NX_MSGPACK_LEVELS - 1] = 0x90;
    CHECK(nx_msgpack_check(deep, NX_MSGPACK_LEVELS, NX_MSGPACK_DEPTH) == NX_MSGPACK_OK);
    {
        msgpack_unpacked unp;
        msgpack_unpacked_init(&unp);
        size_t off = 0;
        CHECK(msgpack_unpack_next(&unp, (const char *)deep, NX_MSGPACK_LEVELS, &off) ==
              MSGPACK_UNPACK_SUCCESS);
        deep[NX_MSGPACK_LEVELS - 1] = 0x91;
        deep[NX_MSGPACK_LEVELS] = 0x90;
        off = 0;
        CHECK(nx_msgpack_check(deep, NX_MSGPACK_LEVELS + 1, NX_MSGPACK_DEPTH) ==
              NX_MSGPACK_TOO_DEEP);
        CHECK(msgpack_unpack_next(&unp, (const char *)deep, NX_MSGPACK_LEVELS + 1, &off) !=
              MSGPACK_UNPACK_SUCCESS);
        msgpack_unpacked_destroy(&unp);
    }
    /*  Every strict prefix of a valid request is truncated.                */
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    nx_pack_kv_str(&pk, "op", "publish");
    nx_pack_kv_bin(&pk, "payload", "\x01\x02\x03", 3);
    nx_pack_kv_u64(&pk, "id", UINT64_MAX);
    CHECK(nx_msgpack_check((const uint8_t *)buf.data, buf.size, 32) == NX_MSGPACK_OK);
    for (size_t n = 0; n < buf.size; n++)
        CHECK(nx_msgpack_check((const uint8_t *)buf.data, n, 32) == NX_MSGPACK_TRUNCATED);
    msgpack_sbuffer_destroy(&buf);
}

/*  nx_pack_event writes by hand what msgpack-c's packer would: the same
    bytes for every width of every field.                                  */
static void s_test_pack_event_bytes(void)
{
    static char big[70000];
    memset(big, 'p', sizeof big);
    const uint64_t seqs[] = {0,     1,     127,           128,        255,       256,
                             65535, 65536, 0xffffffffull, 1ull << 32, UINT64_MAX};
    const size_t topics[] = {1, 31, 32, 255};
    const size_t sources[] = {0, 31, 32, 128};
    const size_t payloads[] = {0, 1, 255, 256, 900, 1000, 65535, 65536, 69999};
    int same = 0, cases = 0;
    for (size_t a = 0; a < sizeof seqs / sizeof seqs[0]; a++)
        for (size_t b = 0; b < sizeof topics / sizeof topics[0]; b++)
            for (size_t c = 0; c < sizeof sources / sizeof sources[0]; c++)
                for (size_t d = 0; d < sizeof payloads / sizeof payloads[0]; d++) {
                    nx_record_t rec = {.ts = seqs[(a + 3) % 11],
                                       .topic = big,
                                       .topic_len = topics[b],
                                       .source = big,
                                       .source_len = sources[c],
                                       .payload = (const uint8_t *)big,
                                       .payload_len = payloads[d]};
                    msgpack_sbuffer mine, theirs;
                    msgpack_sbuffer_init(&mine);
                    msgpack_sbuffer_init(&theirs);
                    msgpack_packer pk;
                    msgpack_packer_init(&pk, &mine, msgpack_sbuffer_write);
                    nx_pack_event(&pk, seqs[a], &rec);
                    msgpack_packer_init(&pk, &theirs, msgpack_sbuffer_write);
                    msgpack_pack_map(&pk, 5);
                    nx_pack_kv_u64(&pk, "seq", seqs[a]);
                    nx_pack_kv_u64(&pk, "ts", rec.ts);
                    nx_pack_kv_strn(&pk, "topic", rec.topic, rec.topic_len);
                    nx_pack_kv_strn(&pk, "source", rec.source, rec.source_len);
                    nx_pack_kv_bin(&pk, "payload", rec.payload, rec.payload_len);
                    same +=
                        mine.size == theirs.size && memcmp(mine.data, theirs.data, mine.size) == 0;
                    cases++;
                    msgpack_sbuffer_destroy(&mine);
                    msgpack_sbuffer_destroy(&theirs);
                }
    CHECK_EQ_U64(same, cases);
}

int main(void)
{
    s_test_msgpack_check();
    s_test_u64();
    s_test_stamp();
    s_test_record();
    s_test_map_get();
    s_test_map_helpers();
    s_test_pack_event();
    s_test_pack_event_bytes();
    NX_TEST_DONE();
}
