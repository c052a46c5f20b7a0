/*  =========================================================================
    test_mpread - the in-place msgpack reader: every type msgpack-c packs
    reads back, truncated input at every length fails without reading past
    the end, lying counts fail, and skip agrees with msgpack-c on where a
    value ends for random input.
    =========================================================================
*/

#include <msgpack.h>
#include <stdlib.h>

#include "nx_codec.h"
#include "nx_mpread.h"
#include "nx_test.h"

/*  A history-page-like reply: {id, ok, next_cursor, events:[{...}]}.       */
static void s_pack_page(msgpack_sbuffer *buf)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    nx_pack_kv_u64(&pk, "id", 77);
    nx_pack_kv_bool(&pk, "ok", true);
    nx_pack_kv_u64(&pk, "next_cursor", 1ull << 40);
    nx_pack_str(&pk, "events");
    msgpack_pack_array(&pk, 3);
    for (int i = 0; i < 3; i++) {
        nx_record_t rec = {.ts = 1700000000000000ull + (uint64_t)i,
                           .topic = "a.b",
                           .topic_len = 3,
                           .source = "src",
                           .source_len = (size_t)(i == 1 ? 0 : 3),
                           .payload = (const uint8_t *)"payload-bytes",
                           .payload_len = (size_t)(i * 5)};
        nx_pack_event(&pk, 100 + (uint64_t)i, &rec);
    }
}

static void s_test_types(void)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    uint64_t ints[] = {0,     1,     127,           128,        255,       256,
                       65535, 65536, 0xffffffffull, 1ull << 32, UINT64_MAX};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        msgpack_pack_uint64(&pk, ints[i]);
    msgpack_pack_int64(&pk, -1);
    msgpack_pack_int64(&pk, -100000);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_float(&pk, 2.5f);
    char big[70000];
    memset(big, 'x', sizeof big);
    size_t strs[] = {0, 31, 32, 255, 256, 65535, 65536};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        nx_pack_strn(&pk, big, strs[i]);
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        msgpack_pack_bin(&pk, strs[i]);
        msgpack_pack_bin_body(&pk, big, strs[i]);
    }
    msgpack_pack_ext(&pk, 1, 3);
    msgpack_pack_ext_body(&pk, "e", 1);
    msgpack_pack_ext(&pk, 300, 3);
    msgpack_pack_ext_body(&pk, big, 300);
    msgpack_pack_array(&pk, 20);
    for (int i = 0; i < 20; i++)
        msgpack_pack_map(&pk, 0);
    msgpack_pack_map(&pk, 17);
    for (int i = 0; i < 17; i++) {
        msgpack_pack_int(&pk, i);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_nil(&pk);
    }

    nx_mpread_t r;
    nx_mpread_init(&r, buf.data, buf.size);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        uint64_t v = 42;
        CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_UINT);
        CHECK(nx_mpread_u64(&r, &v) == 0);
        CHECK_EQ_U64(v, ints[i]);
    }
    uint64_t v;
    CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_INT);
    CHECK(nx_mpread_u64(&r, &v) == -1); /* negative: not a u64, cursor kept */
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_nil(&r) == 0);
    bool b = false;
    CHECK(nx_mpread_bool(&r, &b) == 0 && b);
    CHECK(nx_mpread_bool(&r, &b) == 0 && !b);
    CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_FLOAT);
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_skip(&r) == 0);
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const char *s = NULL;
        uint32_t len = 1;
        CHECK(nx_mpread_str(&r, &s, &len) == 0);
        CHECK_EQ_U64(len, strs[i]);
    }
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const uint8_t *d = NULL;
        uint32_t len = 1;
        CHECK(nx_mpread_str(&r, (const char **)&d, &len) == -1); /* a bin is not a str */
        CHECK(nx_mpread_bytes(&r, &d, &len) == 0);
        CHECK_EQ_U64(len, strs[i]);
    }
    CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_EXT);
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_skip(&r) == 0);
    uint32_t count = 0;
    const uint8_t *arr = r.p;
    CHECK(nx_mpread_array(&r, &count) == 0 && count == 20);
    r.p = arr;
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_map(&r, &count) == 0 && count == 17);
    for (uint32_t i = 0; i < 2 * count; i++)
        CHECK(nx_mpread_skip(&r) == 0);
    CHECK_EQ_U64(nx_mpread_left(&r), 0);
    CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_END);
    CHECK(nx_mpread_skip(&r) == -1);
    msgpack_sbuffer_destroy(&buf);
}

static void s_test_page(void)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    s_pack_page(&buf);
    nx_mpread_t r;
    nx_mpread_init(&r, buf.data, buf.size);
    uint32_t n = 0;
    CHECK(nx_mpread_map(&r, &n) == 0 && n == 4);
    CHECK(nx_mpread_key(&r, "id", 2) == 1);
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_key(&r, "id", 2) == 0); /* "ok" */
    CHECK(nx_mpread_skip(&r) == 0);
    CHECK(nx_mpread_key(&r, "next_cursor", 11) == 1);
    uint64_t cursor = 0;
    CHECK(nx_mpread_u64(&r, &cursor) == 0 && cursor == 1ull << 40);
    CHECK(nx_mpread_key(&r, "events", 6) == 1);
    CHECK(nx_mpread_array(&r, &n) == 0 && n == 3);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t fields = 0;
        CHECK(nx_mpread_map(&r, &fields) == 0 && fields == 5);
        for (uint32_t f = 0; f < fields; f++) {
            const char *key;
            uint32_t klen;
            CHECK(nx_mpread_str(&r, &key, &klen) == 0);
            if (klen == 7 && !memcmp(key, "payload", 7)) {
                const uint8_t *p;
                uint32_t plen;
                CHECK(nx_mpread_bytes(&r, &p, &plen) == 0);
                CHECK_EQ_U64(plen, i * 5);
            } else
                CHECK(nx_mpread_skip(&r) == 0);
        }
    }
    CHECK_EQ_U64(nx_mpread_left(&r), 0);

    /*  Every truncation fails somewhere, never reads past the end (ASan
        would say): a copy of exactly that many bytes on the heap.          */
    for (size_t cut = 0; cut < buf.size; cut++) {
        uint8_t *part = malloc(cut ? cut : 1);
        memcpy(part, buf.data, cut);
        nx_mpread_init(&r, part, cut);
        CHECK(nx_mpread_skip(&r) == -1);
        free(part);
    }
    msgpack_sbuffer_destroy(&buf);
}

static void s_test_hostile(void)
{
    /*  Counts that cannot fit in the bytes left.                           */
    const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
    const uint8_t huge_str[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
    const uint8_t huge_ext[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 1, 2};
    const uint8_t never[] = {0xc1};
    nx_mpread_t r;
    nx_mpread_init(&r, huge_array, sizeof huge_array);
    CHECK(nx_mpread_skip(&r) == -1);
    nx_mpread_init(&r, huge_map, sizeof huge_map);
    CHECK(nx_mpread_skip(&r) == -1);
    nx_mpread_init(&r, huge_str, sizeof huge_str);
    const char *s;
    uint32_t len;
    CHECK(nx_mpread_str(&r, &s, &len) == -1);
    CHECK(r.p == huge_str); /* a failed read leaves the cursor */
    CHECK(nx_mpread_skip(&r) == -1);
    nx_mpread_init(&r, huge_ext, sizeof huge_ext);
    CHECK(nx_mpread_skip(&r) == -1);
    nx_mpread_init(&r, never, sizeof never);
    CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_INVALID);
    CHECK(nx_mpread_skip(&r) == -1);
    nx_mpread_init(&r, NULL, 0);
    CHECK_EQ_U64(nx_mpread_type(&r), NX_MP_END);

    /*  Random bytes: where msgpack-c finds one complete value, skip ends
        at the same offset; where it finds none, skip fails.                */
    srand(12345);
    int agreed = 0;
    for (int round = 0; round < 20000; round++) {
        uint8_t data[48];
        size_t size = 1 + (size_t)(rand() % (int)sizeof data);
        for (size_t i = 0; i < size; i++)
            data[i] = (uint8_t)rand();
        /*  Keep containers small so that msgpack-c does not allocate
            gigabytes for a lying count (it checks nothing up front).       */
        if (nx_msgpack_check(data, size, 32) == NX_MSGPACK_TRUNCATED ||
            nx_msgpack_check(data, size, 32) == NX_MSGPACK_INVALID)
            continue;
        msgpack_unpacked un;
        msgpack_unpacked_init(&un);
        size_t off = 0;
        msgpack_unpack_return ret = msgpack_unpack_next(&un, (const char *)data, size, &off);
        nx_mpread_init(&r, data, size);
        int rc = nx_mpread_skip(&r);
        if (ret == MSGPACK_UNPACK_SUCCESS) {
            CHECK(rc == 0);
            CHECK_EQ_U64((size_t)(r.p - data), off);
            agreed++;
        }
        msgpack_unpacked_destroy(&un);
    }
    CHECK(agreed > 1000);
}

int main(void)
{
    s_test_types();
    s_test_page();
    s_test_hostile();
    NX_TEST_DONE();
}
