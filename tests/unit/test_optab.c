/*  =========================================================================
    test_optab - the op table (every op, its checks: types, bounds,
    required fields, enums, topics and patterns) and the maps that count
    themselves (nx_dmap), read back with msgpack_unpack_next.
    =========================================================================
*/

#include <stdlib.h>

#include "nx_codec.h"
#include "nx_error.h"
#include "nx_optab.h"
#include "nx_test.h"

/*  Packs a request from a small format: pairs of key, then a value as
    "s:text", "u:123", "b:1", "n:" (nil), "a:x,y" (array of str), "m:" ({}),
    "B:hex" (a str of raw bytes).                                          */
static msgpack_object s_req(msgpack_sbuffer *buf, msgpack_zone *zone, const char *const *kv)
{
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    size_t n = 0;
    while (kv[n])
        n += 2;
    msgpack_pack_map(&pk, (uint32_t)(n / 2));
    for (size_t i = 0; i < n; i += 2) {
        nx_pack_str(&pk, kv[i]);
        const char *v = kv[i + 1] + 2;
        switch (kv[i + 1][0]) {
        case 's':
            nx_pack_str(&pk, v);
            break;
        case 'u':
            msgpack_pack_uint64(&pk, strtoull(v, NULL, 10));
            break;
        case 'i':
            msgpack_pack_int64(&pk, strtoll(v, NULL, 10));
            break;
        case 'b':
            if (*v == '1')
                msgpack_pack_true(&pk);
            else
                msgpack_pack_false(&pk);
            break;
        case 'n':
            msgpack_pack_nil(&pk);
            break;
        case 'm':
            msgpack_pack_map(&pk, 0);
            break;
        case 'a': {
            char *copy = strdup(v), *save = NULL;
            const char *items[300];
            size_t k = 0;
            for (char *t = strtok_r(copy, ",", &save); t && k < 300; t = strtok_r(NULL, ",", &save))
                items[k++] = t;
            msgpack_pack_array(&pk, (uint32_t)k);
            for (size_t j = 0; j < k; j++)
                nx_pack_str(&pk, items[j]);
            free(copy);
            break;
        }
        case 'B': {
            char raw[64];
            size_t len = strlen(v) / 2;
            for (size_t j = 0; j < len; j++) {
                unsigned x;
                sscanf(v + 2 * j, "%2x", &x);
                raw[j] = (char)x;
            }
            msgpack_pack_str_with_body(&pk, raw, len);
            break;
        }
        }
    }
    msgpack_object obj;
    size_t off = 0;
    msgpack_zone_clear(zone);
    msgpack_unpack(buf->data, buf->size, &off, zone, &obj);
    return obj;
}

static nexus_err_t s_check(const char *op, const char *const *kv, char *msg)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object req = s_req(&buf, &zone, kv);
    const nx_opdef_t *def = nx_optab_find(op, strlen(op));
    nexus_err_t rc = def ? nx_optab_check(def, &req, msg) : NEXUS_ERR_UNKNOWN_OP;
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})

static void s_test_table(void)
{
    size_t n = 0;
    const nx_opdef_t *ops = nx_optab_all(&n);
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        CHECK(ops[i].name && ops[i].doc && ops[i].fields);
        CHECK(nx_optab_find(ops[i].name, strlen(ops[i].name)) == &ops[i]);
        for (const nx_field_t *f = ops[i].fields; f->name; f++)
            CHECK(f->doc && f->type);
        /*  Acting ops require the session; write flags where writes are. */
        if (ops[i].flags & NX_OF_ACTS)
            CHECK(nx_optab_field(&ops[i], "session")->flags & NX_FF_REQ);
    }
    CHECK(!nx_optab_find("work.clai", 9));
    CHECK(nx_optab_find("work.claim", 10)->flags & NX_OF_RETRY);
    CHECK(nx_optab_find("ping", 4)->flags & NX_OF_OPEN);
    CHECK(nx_optab_find("history", 7)->flags & NX_OF_READER);
    /*  A standby serves reads of its store only, never a write.           */
    for (size_t i = 0; i < n; i++)
        if (ops[i].flags & NX_OF_WRITE)
            CHECK(!(ops[i].flags & NX_OF_STANDBY));
    CHECK(nx_optab_find("history", 7)->flags & NX_OF_STANDBY);
    CHECK(!(nx_optab_find("session.list", 12)->flags & NX_OF_STANDBY));
    CHECK(nx_optab_find("replicate.ack", 13)->flags & NX_OF_QUIET);
    CHECK(nx_optab_field(nx_optab_find("replicate", 9), "lsn")->flags & NX_FF_REQ);
    CHECK_EQ_STR(nx_optab_json_type(NX_FT_U64), "integer");
    CHECK(nx_optab_json_type(NX_FT_ANY) == NULL);
}

static void s_test_checks(void)
{
    char msg[NX_ERRMSG_MAX];
    CHECK_EQ_U64(s_check("work.claim", KV("session", "s:a", "work_id", "s:w"), msg), NEXUS_OK);
    CHECK_EQ_U64(s_check("work.claim", KV("work_id", "s:w"), msg), NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "'session'"));
    CHECK_EQ_U64(s_check("work.claim", KV("session", "s:a", "work_id", "s:"), msg),
                 NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "work_id") && strstr(msg, "1..256"));
    CHECK_EQ_U64(s_check("work.claim", KV("session", "s:a", "work_id", "B:6100"), msg),
                 NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "NUL"));
    CHECK_EQ_U64(
        s_check("work.claim", KV("session", "s:a", "work_id", "s:w", "ttl_ms", "u:99"), msg),
        NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "ttl_ms"));
    CHECK_EQ_U64(
        s_check("work.claim", KV("session", "s:a", "work_id", "s:w", "ttl_ms", "i:-5"), msg),
        NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "non-negative"));
    CHECK_EQ_U64(
        s_check("work.claim", KV("session", "s:a", "work_id", "s:w", "metadata", "s:x"), msg),
        NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "must be a map"));
    CHECK_EQ_U64(
        s_check("work.claim", KV("session", "s:a", "work_id", "s:w", "metadata", "n:"), msg),
        NEXUS_OK);
    CHECK_EQ_U64(s_check("work.renew", KV("session", "s:a", "work_id", "s:w"), msg),
                 NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "'token'"));
    /*  Enums list their values; topics and patterns have codes of their
        own, a topic that is not UTF-8 too (protocol.md 2.1).               */
    CHECK_EQ_U64(s_check("history", KV("order", "s:up"), msg), NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "asc or desc"));
    CHECK_EQ_U64(s_check("history", KV("patterns", "a:a.*,b..c"), msg), NEXUS_ERR_BAD_PATTERN);
    CHECK_EQ_U64(s_check("history", KV("pattern", "s:a.>"), msg), NEXUS_OK);
    CHECK_EQ_U64(s_check("publish", KV("topic", "B:fffe"), msg), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(s_check("publish", KV("topic", "s:a b"), msg), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(s_check("publish", KV("topic", "u:1"), msg), NEXUS_ERR_BAD_REQUEST);
    CHECK_EQ_U64(s_check("publish", KV("topic", "s:a.b", "payload", "n:"), msg), NEXUS_OK);
    CHECK_EQ_U64(s_check("session.status", KV("session", "s:a", "state", "s:idle"), msg),
                 NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "available, busy or away"));
    CHECK_EQ_U64(s_check("session.status", KV("session", "s:a", "text", "n:"), msg), NEXUS_OK);
    CHECK_EQ_U64(s_check("session.register", KV("heartbeat_ms", "u:50"), msg),
                 NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "100..3600000"));
    CHECK_EQ_U64(s_check("session.register", KV("capabilities", "a:x,,y"), msg), NEXUS_OK);
    CHECK_EQ_U64(s_check("session.list", KV("all", "u:1"), msg), NEXUS_ERR_BAD_REQUEST);
    CHECK(strstr(msg, "boolean"));
    /*  Unknown keys are ignored.                                          */
    CHECK_EQ_U64(s_check("ping", KV("whatever", "u:1"), msg), NEXUS_OK);
    /*  The error table's HTTP column.                                     */
    CHECK_EQ_U64(nx_err_http_status(NEXUS_ERR_DENIED), 409);
    CHECK_EQ_U64(nx_err_http_status(NEXUS_ERR_TIMEOUT), 504);
    CHECK_EQ_U64(nx_err_http_status(NEXUS_ERR_BAD_TOPIC), 400);
    CHECK_EQ_U64(nx_err_http_status((nexus_err_t)999), 500);
}

/*  Reads back what a dmap wrote under a head of its own pair count.        */
static void s_test_dmap(void)
{
    msgpack_sbuffer body, whole;
    msgpack_sbuffer_init(&body);
    msgpack_sbuffer_init(&whole);
    nx_dmap_t m;
    nx_dmap_init(&m, &body);
    nx_pack_kv_u64(nx_dmap_pair(&m), "a", 1);
    nx_dmap_open(&m, "small");
    for (int i = 0; i < 3; i++)
        nx_pack_kv_u64(nx_dmap_pair(&m), i == 0 ? "x" : i == 1 ? "y" : "z", (uint64_t)i);
    nx_dmap_close(&m);
    nx_dmap_open(&m, "big");
    char key[16];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "k%d", i);
        nx_pack_kv_u64(nx_dmap_pair(&m), key, (uint64_t)i);
    }
    nx_dmap_close(&m);
    nx_dmap_raw(&m, "\xa1q\x07", 3, 1);
    CHECK_EQ_U64(nx_dmap_pairs(&m), 4);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &whole, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, nx_dmap_pairs(&m));
    msgpack_sbuffer_write(&whole, body.data, body.size);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(msgpack_unpack_next(&u, whole.data, whole.size, &off) == MSGPACK_UNPACK_SUCCESS);
    CHECK_EQ_U64(off, whole.size);
    CHECK(u.data.type == MSGPACK_OBJECT_MAP && u.data.via.map.size == 4);
    const msgpack_object *small = nx_map_get(&u.data, "small");
    CHECK(small && small->type == MSGPACK_OBJECT_MAP && small->via.map.size == 3);
    /*  Shortest form: a fixmap header of one byte.                        */
    CHECK((uint8_t)body.data[3 + 6] == 0x83);
    const msgpack_object *big = nx_map_get(&u.data, "big");
    CHECK(big && big->type == MSGPACK_OBJECT_MAP && big->via.map.size == 20);
    uint64_t q = 0;
    CHECK(nx_map_u64(&u.data, "q", &q, NULL) == NEXUS_OK && q == 7);
    nx_dmap_clear(&m);
    CHECK_EQ_U64(nx_dmap_pairs(&m), 0);
    CHECK_EQ_U64(body.size, 0);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&body);
    msgpack_sbuffer_destroy(&whole);
}

int main(void)
{
    s_test_table();
    s_test_checks();
    s_test_dmap();
    NX_TEST_DONE();
}
