/*  =========================================================================
    test_sdk_client - every libnexus call against a real nexusd: config and
    its errors, connect, both publishes, subscribe/recv with patterns, the
    callback mode, event views (bytes, msgpack, JSON), the history iterator,
    gap events beyond retention, queue overflow refilled from the history,
    raw requests, sessions and claims with the fencing token.
    =========================================================================
*/

#include <msgpack.h>
#include <pthread.h>

#include "nx_test.h"
#include "test_sdk_harness.h"

static th_broker_t s_broker;

/*  A number field of the broker's answer to a request without fields.    */
static uint64_t s_reply_u64(nexus_client_t *c, const char *op, const char *field)
{
    char req[64], key[64], *rep = NULL;
    snprintf(req, sizeof req, "{\"op\":\"%s\"}", op);
    snprintf(key, sizeof key, "\"%s\":", field);
    CHECK_EQ_U64(nexus_request_json(c, req, &rep), NEXUS_OK);
    const char *at = rep ? strstr(rep, key) : NULL;
    uint64_t n = at ? strtoull(at + strlen(key), NULL, 10) : 0;
    free(rep);
    return n;
}

/*  The broker's count of requests read (state.requests), this one included. */
static uint64_t s_requests(nexus_client_t *c)
{
    return s_reply_u64(c, "state", "requests");
}

static void s_test_offline(void)
{
    CHECK_EQ_STR(nexus_strerror(NEXUS_ERR_GAP), "events were lost beyond retention");
    CHECK_EQ_U64(nexus_version(), NEXUS_VERSION);
    nexus_client_t *c = nexus_client_new();
    CHECK(c != NULL);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "http://x"), NEXUS_ERR_INVALID);
    CHECK(strlen(nexus_client_errmsg(c)) > 0);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "tcp://127.0.0.1"), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "tcp://127.0.0.1:1"), NEXUS_OK);
    CHECK_EQ_STR(nexus_client_endpoint(c), "tcp://127.0.0.1:1");
    CHECK_EQ_U64(nexus_client_set_reconnect(c, 10, 5), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_queue_max(c, 0), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_heartbeat(c, 10, 0), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_keepalive(c, 50, 1000), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_keepalive(c, 2000, 1000), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_keepalive(c, 1000, 7000000), NEXUS_ERR_INVALID);
    CHECK(strstr(nexus_client_errmsg(c), "keepalive") != NULL);
    CHECK_EQ_U64(nexus_client_set_keepalive(c, 0, 0), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_set_keepalive(c, 500, 1500), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_set_metadata_json(c, "[1]"), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_metadata_json(c, "{\"a\":1}"), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_set_metadata_msgpack(c, "\x91\x01", 2), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_capabilities(c, "a, b,c"), NEXUS_OK);
    /*  Calls before connect.                                              */
    nexus_event_t *ev = NULL;
    CHECK_EQ_U64(nexus_recv(c, 0, &ev), NEXUS_ERR_CLOSED);
    CHECK_EQ_U64(nexus_publish(c, "a.b", "x", 1), NEXUS_ERR_CLOSED);
    CHECK_EQ_U64(nexus_subscribe(c, "a.>"), NEXUS_ERR_CLOSED);
    /*  Nobody listens on port 1: connect says so, quickly.                */
    nexus_client_set_timeout(c, 300);
    uint64_t t0 = th_ms();
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_ERR_UNREACHABLE);
    CHECK(th_ms() - t0 < 2000);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_ERR_CLOSED);
    CHECK_EQ_U64(nexus_client_set_name(c, "late"), NEXUS_ERR_CLOSED);
    /*  The timeout may change once connected (the gateway waits 0.5 s for
        its first calls, then broker_timeout): the next call takes it.    */
    CHECK_EQ_U64(nexus_client_set_timeout(c, 100), NEXUS_OK);
    t0 = th_ms();
    CHECK_EQ_U64(nexus_publish_acked(c, "a.b", "x", 1, NULL, NULL), NEXUS_ERR_UNREACHABLE);
    CHECK(th_ms() - t0 < 250);
    CHECK_EQ_U64(nexus_client_set_timeout(c, 600), NEXUS_OK);
    t0 = th_ms();
    CHECK_EQ_U64(nexus_publish_acked(c, "a.b", "x", 1, NULL, NULL), NEXUS_ERR_UNREACHABLE);
    CHECK(th_ms() - t0 >= 550);
    CHECK_EQ_U64(nexus_client_set_timeout(c, 300), NEXUS_OK);
    /*  Never sent (no connection): unreachable, not "outcome unknown".     */
    CHECK_EQ_U64(nexus_publish_acked(c, "a.b", "x", 1, NULL, NULL), NEXUS_ERR_UNREACHABLE);
    CHECK(strstr(nexus_client_errmsg(c), "not sent") != NULL);
    CHECK(!nexus_client_is_connected(c));
    nexus_client_destroy(&c);
    nexus_client_destroy(&c);
    CHECK(c == NULL);

    /*  JSON conversion of msgpack and of what is not msgpack.             */
    char *j = nexus_msgpack_to_json("\x82\xa1"
                                    "a\x01\xa1"
                                    "b\xc4\x02\x00\x01",
                                    10);
    CHECK_EQ_STR(j, "{\"a\":1,\"b\":{\"$base64\":\"AAE=\"}}");
    free(j);
    j = nexus_msgpack_to_json("\xc1\xc1", 2);
    CHECK_EQ_STR(j, "{\"$base64\":\"wcE=\"}");
    free(j);
    j = nexus_msgpack_to_json("", 0);
    CHECK_EQ_STR(j, "null");
    free(j);
    /*  Counts that cannot fit in the bytes (a map32 of 2^32-1 entries in 5
        bytes: msgpack-c would ask for 128 GiB first) and nesting deeper
        than msgpack-c decodes are shown as bytes, never allocated for.    */
    j = nexus_msgpack_to_json("\xdf\xff\xff\xff\xff", 5);
    CHECK_EQ_STR(j, "{\"$base64\":\"3/////8=\"}");
    free(j);
    j = nexus_msgpack_to_json("\xdd\xff\xff\xff\xff\x01", 6);
    CHECK_EQ_STR(j, "{\"$base64\":\"3f////8B\"}");
    free(j);
    {
        char deep[40];
        memset(deep, 0x91, sizeof deep); /* [[[...1]]] */
        deep[39] = 0x01;
        j = nexus_msgpack_to_json(deep + 39 - 32, 33); /* 32 levels: decoded */
        CHECK(j && j[0] == '[' && !strstr(j, "$base64"));
        free(j);
        j = nexus_msgpack_to_json(deep + 39 - 33, 34); /* 33 levels: bytes */
        CHECK(j && strstr(j, "$base64"));
        free(j);
    }

    /*  And back: what nexus_json_to_msgpack packs reads as the same JSON,
        a lone {"$base64"} (bin) included.                                 */
    const char *texts[] = {"{\"$base64\":\"AQ==\"}",
                           "{\"$base64\":\"kw==\"}",
                           "1.0",
                           "1",
                           "\"s\"",
                           "{\"a\":[1,{\"$base64\":\"AAE=\"}],\"b\":null}"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t size = 0;
        void *packed = nexus_json_to_msgpack(texts[i], &size);
        CHECK(packed != NULL && size > 0);
        j = packed ? nexus_msgpack_to_json(packed, size) : NULL;
        CHECK_EQ_STR(j, texts[i]);
        free(j);
        free(packed);
    }
    size_t size = 1;
    CHECK(nexus_json_to_msgpack("{not json", &size) == NULL);
}

static void s_test_pubsub(void)
{
    nexus_client_t *c = th_client(&s_broker);
    nexus_client_set_name(c, "tester");
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK(nexus_client_is_connected(c) || 1);
    CHECK_EQ_U64(nexus_subscribe(c, "a..b"), NEXUS_ERR_BAD_PATTERN);
    CHECK_EQ_U64(nexus_subscribe(c, "t.*.x"), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "u.>"), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "u.>"), NEXUS_OK);
    CHECK_EQ_U64(nexus_unsubscribe(c, "zz"), NEXUS_ERR_NOT_FOUND);
    nexus_event_t *ev = NULL;
    CHECK_EQ_U64(nexus_recv(c, 50, &ev), NEXUS_ERR_TIMEOUT);
    CHECK(ev == NULL);

    CHECK_EQ_U64(nexus_publish(c, "bad topic", "x", 1), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(nexus_publish_acked(c, "t.*", "x", 1, NULL, NULL), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(nexus_publish_json(c, "t.a.x", "{bad"), NEXUS_ERR_INVALID);
    /*  A bad topic says why, control bytes shown as '?'.                  */
    CHECK_EQ_U64(nexus_publish(c, "a b\x01", "", 0), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_STR(nexus_client_errmsg(c), "invalid topic 'a b?': it has a space");
    {
        /*  33 levels (the innermost empty) no reader could show as JSON.  */
        char deep[67];
        memset(deep, '[', 33);
        memset(deep + 33, ']', 33);
        deep[66] = 0;
        CHECK_EQ_U64(nexus_publish_json_acked(c, "deepjson.x", deep, NULL), NEXUS_ERR_INVALID);
        CHECK(strstr(nexus_client_errmsg(c), "deeper than 32") != NULL);
        memmove(deep, deep + 1, 65); /* 32 levels */
        deep[64] = 0;
        CHECK_EQ_U64(nexus_publish_json_acked(c, "deepjson.x", deep, NULL), NEXUS_OK);
    }
    uint64_t s1 = 0, s2 = 0, s3 = 0, ts = 0;
    CHECK_EQ_U64(nexus_publish_acked(c, "t.a.x", "raw", 3, &s1, &ts), NEXUS_OK);
    CHECK(s1 > 0 && ts > 0);
    CHECK_EQ_U64(nexus_publish_acked(c, "t.a.y", "no", 2, NULL, NULL), NEXUS_OK); /* no match */
    CHECK_EQ_U64(nexus_publish_json_acked(c, "u.v.w", "{\"n\":1,\"s\":\"x\"}", &s2), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish(c, "u.ff", "fire", 4), NEXUS_OK);

    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_OK);
    if (ev) {
        CHECK_EQ_U64(nexus_event_seq(ev), s1);
        CHECK_EQ_U64(nexus_event_ts(ev), ts);
        CHECK_EQ_STR(nexus_event_topic(ev), "t.a.x");
        CHECK_EQ_STR(nexus_event_source(ev), "tester");
        size_t size = 0;
        CHECK(memcmp(nexus_event_payload(ev, &size), "raw", 3) == 0 && size == 3);
        CHECK_EQ_U64(nexus_event_kind(ev), NEXUS_EVENT_MESSAGE);
        CHECK(nexus_event_gap(ev, NULL, NULL) == -1);
        nexus_event_t *copy = nexus_event_dup(ev);
        CHECK(copy && nexus_event_seq(copy) == s1);
        nexus_event_destroy(&copy);
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_OK);
    if (ev) {
        CHECK_EQ_U64(nexus_event_seq(ev), s2);
        const msgpack_object *o = nexus_event_msgpack(ev);
        CHECK(o && o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 2);
        CHECK_EQ_STR(nexus_event_payload_json(ev), "{\"n\":1,\"s\":\"x\"}");
        char want[256];
        snprintf(want, sizeof want,
                 "{\"seq\":%" PRIu64 ",\"ts\":%" PRIu64
                 ",\"topic\":\"u.v.w\",\"source\":\"tester\",\"payload\":{\"n\":1,\"s\":\"x\"}}",
                 s2, nexus_event_ts(ev));
        CHECK_EQ_STR(nexus_event_json(ev), want);
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_OK);
    if (ev) {
        CHECK_EQ_STR(nexus_event_topic(ev), "u.ff");
        s3 = nexus_event_seq(ev);
        CHECK(s3 > s2);
        CHECK(nexus_event_msgpack(ev) == NULL); /* "fire" is not one msgpack value */
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(nexus_unsubscribe(c, "u.>"), NEXUS_OK);
    nexus_publish_acked(c, "u.gone", "", 0, NULL, NULL);
    CHECK_EQ_U64(nexus_recv(c, 300, &ev), NEXUS_ERR_TIMEOUT);

    /*  Resume from 0: every matching event again, from the history.       */
    CHECK_EQ_U64(nexus_client_resume_from(c, 0), NEXUS_OK);
    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_OK);
    CHECK(ev && nexus_event_seq(ev) == s1);
    nexus_event_destroy(&ev);

    /*  Raw requests.                                                      */
    char *reply = NULL;
    CHECK_EQ_U64(nexus_request_json(c, "{\"op\":\"health\"}", &reply), NEXUS_OK);
    CHECK(reply && strstr(reply, "\"status\":\"active\""));
    free(reply);
    CHECK_EQ_U64(nexus_request_json(c, "{\"op\":\"nope\"}", &reply), NEXUS_ERR_UNKNOWN_OP);
    CHECK(reply && strstr(reply, "unknown_op"));
    free(reply);
    CHECK_EQ_U64(nexus_request_json(c, "[]", &reply), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_request_json(c, "{\"op\":\"history\",\"limit\":0}", &reply),
                 NEXUS_ERR_BAD_REQUEST);
    free(reply);
    nexus_client_destroy(&c);
}

static void s_test_history(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    uint64_t first = 0, seq = 0;
    for (int i = 0; i < 30; i++) {
        char body[8];
        snprintf(body, sizeof body, "%d", i);
        nexus_publish_json_acked(c, i % 2 ? "h.odd" : "h.even", body, &seq);
        if (i == 0)
            first = seq;
    }
    nexus_history_t *h = nexus_history_new(c);
    CHECK_EQ_U64(nexus_history_add_pattern(h, "h.*."), NEXUS_ERR_BAD_PATTERN);
    CHECK_EQ_U64(nexus_history_add_pattern(h, "h.even"), NEXUS_OK);
    CHECK_EQ_U64(nexus_history_set_page(h, 0, 0), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_history_set_page(h, 4, 0), NEXUS_OK);
    nexus_history_set_seq_range(h, first - 1, 0);
    int n = 0;
    uint64_t last = 0;
    nexus_event_t *ev = NULL;
    while (nexus_history_next(h, &ev) == NEXUS_OK && ev && n < 100) {
        CHECK_EQ_STR(nexus_event_topic(ev), "h.even");
        CHECK(nexus_event_seq(ev) > last);
        last = nexus_event_seq(ev);
        n++;
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(n, 15);
    uint64_t fs = 0, ls = 0;
    nexus_history_bounds(h, &fs, &ls);
    CHECK(fs >= 1 && ls >= seq);
    CHECK_EQ_U64(nexus_history_position(h), ls);
    nexus_history_destroy(&h);

    /*  Newest first, at most 3, one fetch at a time.                      */
    h = nexus_history_new(c);
    nexus_history_set_page(h, 10, 1);
    nexus_history_set_max(h, 3);
    size_t count = 0;
    int more = 0;
    CHECK_EQ_U64(nexus_history_fetch(h, &count, &more), NEXUS_OK);
    CHECK_EQ_U64(count, 3);
    CHECK(nexus_history_next(h, &ev) == NEXUS_OK && ev && nexus_event_seq(ev) == seq);
    nexus_event_destroy(&ev);
    nexus_history_destroy(&h);

    /*  Without read-ahead, one fetch is one request: the broker counts the
        history request and the second state request, nothing else; with
        it, the page read ahead too. The fewest of three tries: another
        request (a probe of the client's own thread) may fall in a window. */
    for (int ahead = 1; ahead >= 0; ahead--) {
        uint64_t fewest = UINT64_MAX;
        for (int attempt = 0; attempt < 3; attempt++) {
            uint64_t before = s_requests(c);
            h = nexus_history_new(c);
            nexus_history_set_page(h, 4, 0);
            nexus_history_set_read_ahead(h, ahead);
            CHECK_EQ_U64(nexus_history_fetch(h, &count, &more), NEXUS_OK);
            CHECK(count == 4 && more);
            usleep(300000); /* a read-ahead request, if any, has reached the broker */
            uint64_t asked = s_requests(c) - before;
            if (asked < fewest)
                fewest = asked;
            nexus_history_destroy(&h);
        }
        CHECK_EQ_U64(fewest, ahead ? 3 : 2);
    }
    nexus_client_destroy(&c);
}

typedef struct {
    pthread_mutex_t lock;
    int count;
    uint64_t last;
} s_seen_t;

static void s_on_event(nexus_event_t *ev, void *arg)
{
    s_seen_t *seen = arg;
    pthread_mutex_lock(&seen->lock);
    seen->count++;
    seen->last = nexus_event_seq(ev);
    pthread_mutex_unlock(&seen->lock);
}

static void s_test_callback_and_overflow(void)
{
    s_seen_t seen = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    nexus_client_t *cb = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_set_callback(cb, s_on_event, &seen), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_connect(cb), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(cb, "cb.>"), NEXUS_OK);
    nexus_event_t *ev = NULL;
    CHECK_EQ_U64(nexus_recv(cb, 0, &ev), NEXUS_ERR_INVALID);

    nexus_client_t *small = th_client(&s_broker);
    nexus_client_set_queue_max(small, 5);
    CHECK_EQ_U64(nexus_client_connect(small), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(small, "cb.>"), NEXUS_OK);

    nexus_client_t *pub = th_client(&s_broker);
    nexus_client_connect(pub);
    uint64_t seqs[50];
    for (int i = 0; i < 50; i++)
        nexus_publish_acked(pub, "cb.x", "", 0, &seqs[i], NULL);
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&seen.lock);
        int done = seen.count >= 50;
        pthread_mutex_unlock(&seen.lock);
        if (done)
            break;
        usleep(20000);
    }
    CHECK_EQ_U64(seen.count, 50);
    CHECK_EQ_U64(seen.last, seqs[49]);
    /*  The small queue overflowed; every event still comes, in order.     */
    int got = 0;
    for (int i = 0; i < 50; i++) {
        if (nexus_recv(small, 3000, &ev) != NEXUS_OK)
            break;
        if (nexus_event_seq(ev) == seqs[got])
            got++;
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(got, 50);
    nexus_client_stats_t st;
    nexus_client_stats(small, &st);
    CHECK(st.history_events > 0);
    nexus_client_destroy(&cb);
    nexus_client_destroy(&small);
    nexus_client_destroy(&pub);
}

static void s_test_gap(void)
{
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--retain-events";
    b.extra[1] = "10";
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    nexus_client_connect(c);
    for (int i = 0; i < 40; i++)
        nexus_publish_acked(c, "g.x", "", 0, NULL, NULL);
    /*  Retention trims in the background: wait for it (bounded).          */
    for (int i = 0; i < 100; i++) {
        char *reply = NULL;
        nexus_request_json(c, "{\"op\":\"history\",\"limit\":1}", &reply);
        int trimmed = reply && !strstr(reply, "\"first_seq\":1,");
        free(reply);
        if (trimmed)
            break;
        usleep(50000);
    }
    CHECK_EQ_U64(nexus_subscribe(c, "g.>"), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_resume_from(c, 3), NEXUS_OK);
    nexus_event_t *ev = NULL;
    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_ERR_GAP);
    uint64_t from = 0, to = 0;
    if (ev) {
        CHECK_EQ_U64(nexus_event_kind(ev), NEXUS_EVENT_GAP);
        CHECK(nexus_event_gap(ev, &from, &to) == 0);
        CHECK_EQ_U64(from, 4);
        CHECK(to >= 4 && to < 40);
        CHECK(strstr(nexus_event_json(ev), "\"gap\"") != NULL);
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_OK);
    CHECK(ev && nexus_event_seq(ev) == to + 1);
    nexus_event_destroy(&ev);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

/*  Pages of one session each, of the list (csv NULL) or of a find: every
    id once, in order, each page counting all that match. Returns how many
    pages it took.                                                          */
static size_t s_session_pages(nexus_client_t *a, const char *csv, size_t total)
{
    char after[NEXUS_ID_MAX] = "";
    size_t pages = 0;
    for (int more = 1; more && pages < 100; pages++) {
        nexus_records_t *recs = NULL;
        nexus_err_t rc = csv ? nexus_sessions_find_after(a, csv, 0, after, 1, &recs)
                             : nexus_sessions_list_after(a, 0, after, 1, &recs);
        CHECK_EQ_U64(rc, NEXUS_OK);
        if (rc)
            break;
        CHECK_EQ_U64(nexus_records_count(recs), 1);
        CHECK_EQ_U64(nexus_records_matched(recs), total);
        const char *sid = nexus_records_str(recs, 0, "session");
        CHECK(strcmp(sid, after) > 0);
        snprintf(after, sizeof after, "%s", sid);
        more = nexus_records_truncated(recs);
        nexus_records_destroy(&recs);
    }
    return pages;
}

static void s_test_coordination(void)
{
    nexus_client_t *a = th_client(&s_broker);
    nexus_client_set_name(a, "worker-a");
    nexus_client_set_capabilities(a, "build,test");
    nexus_client_set_metadata_json(a, "{\"host\":\"h1\"}");
    nexus_client_set_heartbeat(a, 500, 0);
    CHECK_EQ_U64(nexus_client_connect(a), NEXUS_OK);
    nexus_claim_result_t res;
    CHECK_EQ_U64(nexus_claim(a, "job-1", 0, NULL, &res), NEXUS_ERR_INVALID); /* no session */
    int resumed = -1;
    nexus_err_t rc = nexus_session_register(a, &resumed);
    if (rc == NEXUS_ERR_UNKNOWN_OP) {
        printf("broker has no sessions yet: coordination tests skipped\n");
        nexus_client_destroy(&a);
        return;
    }
    CHECK_EQ_U64(rc, NEXUS_OK);
    CHECK_EQ_U64(resumed, 0);
    char id[NEXUS_ID_MAX], secret[NEXUS_ID_MAX];
    CHECK(nexus_client_session_id(a, id, sizeof id) != NULL);
    CHECK(nexus_client_session_secret(a, secret, sizeof secret) != NULL);

    nexus_client_t *b = th_client(&s_broker);
    nexus_client_set_session(b, "s-other", NULL);
    nexus_client_set_name(b, "worker-b");
    CHECK_EQ_U64(nexus_client_connect(b), NEXUS_OK);
    CHECK_EQ_U64(nexus_session_register(b, NULL), NEXUS_OK);

    CHECK_EQ_U64(nexus_session_status(a, "busy", "job-1", "building"), NEXUS_OK);
    CHECK_EQ_U64(nexus_session_status(a, "dancing", NULL, NULL), NEXUS_ERR_BAD_REQUEST);
    nexus_records_t *recs = NULL;
    CHECK_EQ_U64(nexus_session_get(a, id, &recs), NEXUS_OK);
    CHECK_EQ_U64(nexus_records_count(recs), 1);
    /*  Each string stays valid while the records live, not only until the
        next field is asked for.                                           */
    const char *name = nexus_records_str(recs, 0, "name");
    const char *state = nexus_records_str(recs, 0, "state");
    CHECK_EQ_STR(name, "worker-a");
    CHECK_EQ_STR(state, "busy");
    CHECK(nexus_records_str(recs, 0, "name") == name);
    CHECK(strstr(nexus_records_json(recs, 0), "\"host\":\"h1\"") != NULL);
    CHECK(nexus_records_msgpack(recs, 1) == NULL);
    nexus_records_destroy(&recs);
    CHECK_EQ_U64(nexus_session_get(a, "s-nobody", &recs), NEXUS_ERR_NOT_FOUND);
    CHECK_EQ_U64(nexus_sessions_list(a, 0, &recs), NEXUS_OK);
    CHECK(nexus_records_count(recs) >= 2);
    CHECK(!nexus_records_truncated(recs));
    nexus_records_destroy(&recs);
    /*  Pages of one: the first session, then the one after it, truncated
        while more follow; every session once.                              */
    {
        size_t pages = 0, total = 0;
        CHECK_EQ_U64(nexus_sessions_list(a, 0, &recs), NEXUS_OK);
        total = nexus_records_count(recs);
        nexus_records_destroy(&recs);
        pages = s_session_pages(a, NULL, total);
        CHECK_EQ_U64(pages, total);
        CHECK_EQ_U64(nexus_sessions_list_after(a, 0, NULL, 100001, &recs), NEXUS_ERR_INVALID);
    }
    CHECK_EQ_U64(nexus_sessions_find(a, "build,test", 0, &recs), NEXUS_OK);
    CHECK_EQ_U64(nexus_records_count(recs), 1);
    nexus_records_destroy(&recs);
    CHECK_EQ_U64(nexus_sessions_find(a, "build", 1, &recs), NEXUS_OK);
    CHECK_EQ_U64(nexus_records_count(recs), 0); /* a is busy */
    nexus_records_destroy(&recs);
    /*  Pages of a find: one at a time, each past the one before.          */
    {
        nexus_client_t *pagers[3];
        for (int i = 0; i < 3; i++) {
            pagers[i] = th_client(&s_broker);
            nexus_client_set_capabilities(pagers[i], "pager");
            CHECK_EQ_U64(nexus_client_connect(pagers[i]), NEXUS_OK);
            CHECK_EQ_U64(nexus_session_register(pagers[i], NULL), NEXUS_OK);
        }
        size_t pages = 0, total = 0;
        CHECK_EQ_U64(nexus_sessions_find(a, "pager", 0, &recs), NEXUS_OK);
        total = nexus_records_count(recs);
        nexus_records_destroy(&recs);
        CHECK_EQ_U64(total, 3);
        pages = s_session_pages(a, "pager", total);
        CHECK_EQ_U64(pages, total);
        CHECK_EQ_U64(nexus_sessions_find_after(a, NULL, 0, NULL, 0, &recs), NEXUS_ERR_INVALID);
        CHECK_EQ_U64(nexus_sessions_find_after(a, "build", 0, NULL, 100001, &recs),
                     NEXUS_ERR_INVALID);
        /*  available alone: every available, active session.              */
        CHECK_EQ_U64(nexus_sessions_find_after(a, NULL, 1, NULL, 0, &recs), NEXUS_OK);
        CHECK(nexus_records_count(recs) >= 3);
        for (size_t i = 0; i < nexus_records_count(recs); i++)
            CHECK_EQ_STR(nexus_records_str(recs, i, "state"), "available");
        nexus_records_destroy(&recs);
        for (int i = 0; i < 3; i++) {
            nexus_session_unregister(pagers[i], NULL);
            nexus_client_destroy(&pagers[i]);
        }
    }

    /*  Claims: grant, deny with the holder, fencing.                       */
    CHECK_EQ_U64(nexus_claim(a, "", 0, NULL, &res), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_claim(a, "job-1", 60000, "build it", &res), NEXUS_OK);
    uint64_t token = res.token;
    CHECK(token > 0);
    CHECK_EQ_STR(res.holder, id);
    CHECK_EQ_U64(nexus_claim(b, "job-1", 0, NULL, &res), NEXUS_ERR_DENIED);
    CHECK_EQ_STR(res.holder, id);
    CHECK(strstr(nexus_client_errmsg(b), id) != NULL);
    uint64_t expires = 0;
    CHECK_EQ_U64(nexus_renew(a, "job-1", token, 120000, &expires), NEXUS_OK);
    CHECK(expires > 0);
    CHECK_EQ_U64(nexus_renew(a, "job-1", token + 100, 0, NULL), NEXUS_ERR_STALE_TOKEN);
    CHECK_EQ_U64(nexus_renew(b, "job-1", token, 0, NULL), NEXUS_ERR_FORBIDDEN);
    CHECK_EQ_U64(nexus_claims_list(a, id, NULL, NULL, 0, &recs), NEXUS_OK);
    CHECK_EQ_U64(nexus_records_count(recs), 1);
    CHECK_EQ_STR(nexus_records_str(recs, 0, "work_id"), "job-1");
    CHECK_EQ_U64(nexus_records_u64(recs, 0, "token"), token);
    CHECK(!nexus_records_truncated(recs));
    nexus_records_destroy(&recs);
    CHECK_EQ_U64(nexus_claim(a, "job-1b", 60000, NULL, &res), NEXUS_OK);
    CHECK_EQ_U64(nexus_claims_list(a, id, NULL, "job-1", 1, &recs), NEXUS_OK);
    CHECK_EQ_U64(nexus_records_count(recs), 1);
    CHECK_EQ_STR(nexus_records_str(recs, 0, "work_id"), "job-1");
    CHECK(nexus_records_truncated(recs)); /* job-1b also matches */
    CHECK_EQ_U64(nexus_records_matched(recs), 2);
    nexus_records_destroy(&recs);
    CHECK_EQ_U64(nexus_claims_list_after(a, id, NULL, "job-1", "job-1", 1, &recs), NEXUS_OK);
    CHECK_EQ_U64(nexus_records_count(recs), 1);
    CHECK_EQ_STR(nexus_records_str(recs, 0, "work_id"), "job-1b");
    CHECK(!nexus_records_truncated(recs));
    CHECK_EQ_U64(nexus_records_matched(recs), 2); /* on every page */
    nexus_records_destroy(&recs);
    CHECK_EQ_U64(nexus_release(a, "job-1b", res.token, NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_complete(a, "job-1", token, "{bad"), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_complete(a, "job-1", token, "{\"ok\":true}"), NEXUS_OK);
    CHECK_EQ_U64(nexus_release(a, "job-1", token, NULL), NEXUS_ERR_CONFLICT);
    CHECK_EQ_U64(nexus_claim(b, "job-1", 0, NULL, &res), NEXUS_ERR_DENIED);
    CHECK_EQ_STR(res.state, "completed");
    CHECK_EQ_U64(nexus_claim(b, "job-2", 0, NULL, &res), NEXUS_OK);
    CHECK_EQ_U64(nexus_release(b, "job-2", res.token, "changed my mind"), NEXUS_OK);

    /*  Another process acting as a with its secret.                       */
    nexus_client_t *a2 = th_client(&s_broker);
    nexus_client_set_session(a2, id, secret);
    CHECK_EQ_U64(nexus_client_connect(a2), NEXUS_OK);
    CHECK_EQ_U64(nexus_claim(a2, "job-3", 0, NULL, &res), NEXUS_OK);
    nexus_client_destroy(&a2);

    /*  Heartbeats keep a alive past 3 x 500 ms.                           */
    usleep(2000000);
    CHECK_EQ_U64(nexus_session_get(b, id, &recs), NEXUS_OK);
    CHECK_EQ_STR(nexus_records_str(recs, 0, "status"), "active");
    nexus_records_destroy(&recs);

    uint64_t released = 99;
    CHECK_EQ_U64(nexus_session_unregister(a, &released), NEXUS_OK);
    CHECK_EQ_U64(released, 1); /* job-3 */
    nexus_client_destroy(&a);
    nexus_client_destroy(&b);
}

/*  Events published before and after nexus_session_register: the source
    is the name until then, the session id from then on, on every publish
    path (each keeps a copy of it).                                        */
static void s_test_source_after_register(void)
{
    nexus_client_t *sub = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(sub), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(sub, "src.>"), NEXUS_OK);
    nexus_client_t *c = th_client(&s_broker);
    nexus_client_set_name(c, "src-name");
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish(c, "src.before.plain", "x", 1), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async(c, "src.before.async", "x", 1, NULL, NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK_EQ_U64(nexus_session_register(c, NULL), NEXUS_OK);
    char id[NEXUS_ID_MAX];
    CHECK(nexus_client_session_id(c, id, sizeof id) != NULL);
    CHECK_EQ_U64(nexus_publish(c, "src.after.plain", "x", 1), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async(c, "src.after.async", "x", 1, NULL, NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_acked(c, "src.after.acked", "x", 1, NULL, NULL), NEXUS_OK);
    int before = 0, after = 0;
    for (int i = 0; i < 5; i++) {
        nexus_event_t *ev = NULL;
        if (nexus_recv(sub, 3000, &ev) != NEXUS_OK)
            break;
        const char *topic = nexus_event_topic(ev), *source = nexus_event_source(ev);
        if (strncmp(topic, "src.before.", 11) == 0)
            before += strcmp(source, "src-name") == 0;
        else
            after += strcmp(source, id) == 0;
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(before, 2);
    CHECK_EQ_U64(after, 3);
    CHECK_EQ_U64(nexus_session_unregister(c, NULL), NEXUS_OK);
    nexus_client_destroy(&c);
    nexus_client_destroy(&sub);
}

/*  A thread waiting in nexus_recv when the client is destroyed returns
    NEXUS_ERR_CLOSED, and destroy waits for it to be out.                  */
static void *s_recv_forever(void *arg)
{
    nexus_event_t *ev = NULL;
    nexus_err_t rc = nexus_recv((nexus_client_t *)arg, -1, &ev);
    return (void *)(intptr_t)(rc == NEXUS_ERR_CLOSED && ev == NULL);
}

static void s_test_destroy_while_recv(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "nobody.publishes.here"), NEXUS_OK);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        CHECK(pthread_create(&t[i], NULL, s_recv_forever, c) == 0);
    usleep(200000); /* they are waiting */
    nexus_client_destroy(&c);
    for (int i = 0; i < 3; i++) {
        void *ok = NULL;
        pthread_join(t[i], &ok);
        CHECK(ok != NULL);
    }
}

/*  A comma-separated list of brokers: parsed, and a broker that is not
    there is left for the next (the failover between a primary and its
    standby is in tests/integration/test_failover_hosts.py).               */
static void s_test_endpoint_list(void)
{
    nexus_client_t *c = nexus_client_new();
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "tcp://127.0.0.1:1, tcp://127.0.0.1:3"), NEXUS_OK);
    CHECK_EQ_STR(nexus_client_endpoint(c), "tcp://127.0.0.1:1");
    CHECK_EQ_U64(nexus_client_set_event_endpoints(c, "tcp://127.0.0.1:5", NULL), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "tcp://127.0.0.1:1,"), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "tcp://127.0.0.1:1,http://x"), NEXUS_ERR_INVALID);
    CHECK(strstr(nexus_client_errmsg(c), "comma-separated") != NULL);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, "tcp://a:1,tcp://a:2,tcp://a:3,tcp://a:4,tcp://a:5,"
                                              "tcp://a:6,tcp://a:7,tcp://a:8,tcp://a:9"),
                 NEXUS_ERR_INVALID);
    /*  The first broker is not there: the second serves everything.       */
    char list[200];
    snprintf(list, sizeof list, "tcp://127.0.0.1:1,%s", s_broker.endpoint);
    CHECK_EQ_U64(nexus_client_set_endpoint(c, list), NEXUS_OK);
    nexus_client_set_timeout(c, 3000);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_STR(nexus_client_endpoint(c), s_broker.endpoint);
    CHECK_EQ_U64(nexus_subscribe(c, "list.>"), NEXUS_OK);
    uint64_t seq = 0;
    CHECK_EQ_U64(nexus_publish_acked(c, "list.a", "x", 1, &seq, NULL), NEXUS_OK);
    nexus_event_t *ev = NULL;
    CHECK_EQ_U64(nexus_recv(c, 3000, &ev), NEXUS_OK);
    CHECK(ev && nexus_event_seq(ev) == seq);
    nexus_event_destroy(&ev);
    nexus_client_stats_t st;
    nexus_client_stats(c, &st);
    CHECK(st.failovers >= 1);
    nexus_client_destroy(&c);
}

/*  A request over the broker's max_request is refused at once, not sent
    (the broker would answer too_large without the request's id, or drop
    the connection past 4 x max_request): never "no reply, outcome
    unknown" after the timeout. The client goes on serving.              */
static void s_test_too_large(void)
{
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--max-request";
    b.extra[1] = "64k";
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    nexus_client_set_timeout(c, 3000);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    size_t sizes[] = {100 << 10, 400 << 10};
    static char big[400 << 10];
    memset(big, 'b', sizeof big);
    for (int i = 0; i < 2; i++) {
        uint64_t t0 = th_ms();
        CHECK_EQ_U64(nexus_publish_acked(c, "big.one", big, sizes[i], NULL, NULL),
                     NEXUS_ERR_TOO_LARGE);
        CHECK(th_ms() - t0 < 1000);
        CHECK(strstr(nexus_client_errmsg(c), "max_request") != NULL);
        CHECK(strstr(nexus_client_errmsg(c), "not sent") != NULL);
    }
    CHECK_EQ_U64(nexus_publish_async(c, "big.one", big, 100 << 10, NULL, NULL),
                 NEXUS_ERR_TOO_LARGE);
    CHECK(strstr(nexus_client_errmsg(c), "max_request") != NULL);
    uint64_t seq = 0;
    CHECK_EQ_U64(nexus_publish_acked(c, "big.one", big, 1000, &seq, NULL), NEXUS_OK);
    CHECK(seq > 0);
    CHECK_EQ_U64(nexus_publish_async(c, "big.one", big, 1000, NULL, NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    /*  The broker comes back with a larger limit: what the client read at
        connect must not refuse what the broker now takes (it is asked
        again before a refusal).                                          */
    th_stop(&b);
    b.extra[1] = "4M";
    CHECK(th_start(&b) == 0);
    nexus_err_t rc = NEXUS_ERR_UNREACHABLE;
    for (int i = 0; i < 50 && (rc == NEXUS_ERR_UNREACHABLE || rc == NEXUS_ERR_TIMEOUT); i++)
        rc = nexus_publish_acked(c, "big.one", big, sizes[0], &seq, NULL);
    CHECK_EQ_U64(rc, NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async(c, "big.one", big, sizes[1], NULL, NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

/*  Every NEXUS_ERR_INVALID of a live client says which argument and its
    bound: the text is not the previous error's (a stale text is set just
    before each call) nor empty.                                           */
static const char s_stale[] = "timeout must be at least 1 ms";

static void s_set_stale(nexus_client_t *c)
{
    CHECK_EQ_U64(nexus_client_set_timeout(c, 0), NEXUS_ERR_INVALID);
    CHECK_EQ_STR(nexus_client_errmsg(c), s_stale);
}

#define CHECK_INVALID(c, call, words)                                                              \
    do {                                                                                           \
        s_set_stale(c);                                                                            \
        CHECK_EQ_U64((call), NEXUS_ERR_INVALID);                                                   \
        const char *nx_msg_ = nexus_client_errmsg(c);                                              \
        if (!strstr(nx_msg_, (words)))                                                             \
            fprintf(stderr, "  %s: errmsg \"%s\" lacks \"%s\"\n", #call, nx_msg_, (words));        \
        CHECK(strstr(nx_msg_, (words)) != NULL);                                                   \
    } while (0)

static void s_test_invalid_errmsg(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    nexus_records_t *rec = NULL;
    CHECK_INVALID(c, nexus_claims_list(c, NULL, NULL, NULL, 200000, &rec), "limit 200000");
    CHECK(strstr(nexus_client_errmsg(c), "100000") != NULL);
    CHECK(rec == NULL);
    CHECK_INVALID(c, nexus_claims_list_after(c, NULL, NULL, NULL, "x", 100001, &rec),
                  "limit 100001 is over 100000");
    CHECK_INVALID(c, nexus_claims_list(c, NULL, NULL, NULL, 10, NULL), "out is NULL");
    CHECK_INVALID(c, nexus_sessions_list_after(c, 0, NULL, 100001, &rec),
                  "limit 100001 is over 100000");
    CHECK_INVALID(c, nexus_sessions_list(c, 0, NULL), "out is NULL");
    CHECK_INVALID(c, nexus_sessions_find(c, NULL, 0, &rec), "csv is NULL or empty");
    CHECK_INVALID(c, nexus_sessions_find(c, "", 0, &rec), "csv is NULL or empty");
    CHECK_INVALID(c, nexus_sessions_find_after(c, "build", 0, NULL, 100001, &rec),
                  "limit 100001 is over 100000");
    CHECK_INVALID(c, nexus_session_status(c, NULL, NULL, NULL), "state is NULL");
    CHECK_INVALID(c, nexus_session_get(c, NULL, &rec), "session_id is NULL");
    CHECK_INVALID(c, nexus_session_get(c, "s-1", NULL), "out is NULL");
    CHECK_INVALID(c, nexus_request_json(c, NULL, NULL), "request_json is NULL");
    CHECK_INVALID(c, nexus_recv(c, 0, NULL), "event is NULL");
    nexus_event_t *evs[2];
    size_t n = 0;
    CHECK_INVALID(c, nexus_recv_batch(c, 0, NULL, 2, &n), "events is NULL");
    CHECK_INVALID(c, nexus_recv_batch(c, 0, evs, 2, NULL), "count is NULL");
    CHECK_INVALID(c, nexus_recv_batch(c, 0, evs, 0, &n), "max is 0");
    CHECK_INVALID(c, nexus_unsubscribe(c, NULL), "pattern is NULL");
    CHECK_INVALID(c, nexus_claim(c, NULL, 0, NULL, NULL), "work id must be 1..256 bytes");
    CHECK_INVALID(c, nexus_claim(c, "w", 0, NULL, NULL), "no session");
    nexus_history_t *h = nexus_history_new(c);
    CHECK_INVALID(c, nexus_history_next_view(h, NULL), "event is NULL");
    CHECK_INVALID(c, nexus_history_next(h, NULL), "event is NULL");
    CHECK_INVALID(c, nexus_history_set_page(h, 0, 0), "page size must be 1..10000");
    nexus_history_destroy(&h);
    /*  Within the bound the call goes to the broker and succeeds.         */
    CHECK_EQ_U64(nexus_claims_list(c, NULL, NULL, NULL, 100000, &rec), NEXUS_OK);
    nexus_records_destroy(&rec);
    CHECK_EQ_U64(nexus_sessions_list_after(c, 0, NULL, 100000, &rec), NEXUS_OK);
    nexus_records_destroy(&rec);
    nexus_client_destroy(&c);
}

/*  nexus_client_set_session takes only what the broker takes as an id
    (nx_session_id_valid): another is refused at once, with the id in use
    kept, not sent to fail at the first session op.                       */
static void s_test_set_session(void)
{
    nexus_client_t *c = th_client(&s_broker);
    char id[NEXUS_ID_MAX];
    CHECK_EQ_U64(nexus_client_set_session(c, "s-kept", NULL), NEXUS_OK);
    char long_id[71];
    memset(long_id, 'a', 70);
    long_id[70] = 0;
    const char *bad[] = {"bad id!", "a.b", long_id, "tab\there"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_U64(nexus_client_set_session(c, bad[i], "secret"), NEXUS_ERR_INVALID);
        CHECK(strstr(nexus_client_errmsg(c), "is no session id") != NULL);
        CHECK(strstr(nexus_client_errmsg(c), "1 to 64") != NULL);
        CHECK_EQ_STR(nexus_client_session_id(c, id, sizeof id), "s-kept");
    }
    /*  64 characters is the longest id; NULL and "" still clear it.       */
    CHECK_EQ_U64(nexus_client_set_session(c, long_id + 6, NULL), NEXUS_OK);
    CHECK_EQ_STR(nexus_client_session_id(c, id, sizeof id), long_id + 6);
    CHECK_EQ_U64(nexus_client_set_session(c, "", NULL), NEXUS_OK);
    CHECK(nexus_client_session_id(c, id, sizeof id) == NULL);
    CHECK_EQ_U64(nexus_client_set_session(c, "s-kept", NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_set_session(c, "a.b", NULL), NEXUS_ERR_INVALID);
    /*  The kept id is the one registered.                                 */
    CHECK_EQ_U64(nexus_session_register(c, NULL), NEXUS_OK);
    CHECK_EQ_STR(nexus_client_session_id(c, id, sizeof id), "s-kept");
    CHECK_EQ_U64(nexus_session_unregister(c, NULL), NEXUS_OK);
    nexus_client_destroy(&c);
}

/*  NULL payload bytes with a size are the caller's mistake: every publish
    refuses them (nothing stored), while NULL with size 0 is the empty
    payload.                                                              */
static uint64_t s_last_seq(nexus_client_t *c)
{
    return s_reply_u64(c, "health", "last_seq");
}

static void s_test_null_payload(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    uint64_t before = s_last_seq(c);
    CHECK(before > 0);
    CHECK_EQ_U64(nexus_publish_acked(c, "a.b", NULL, 5, NULL, NULL), NEXUS_ERR_INVALID);
    CHECK(strstr(nexus_client_errmsg(c), "payload is NULL but size is 5") != NULL);
    CHECK_EQ_U64(nexus_publish(c, "a.b", NULL, 5), NEXUS_ERR_INVALID);
    CHECK(strstr(nexus_client_errmsg(c), "payload is NULL") != NULL);
    CHECK_EQ_U64(nexus_publish_async(c, "a.b", NULL, 5, NULL, NULL), NEXUS_ERR_INVALID);
    CHECK(strstr(nexus_client_errmsg(c), "payload is NULL") != NULL);
    CHECK_EQ_U64(nexus_publish_async_wait(c, 3000), NEXUS_OK);
    CHECK(nexus_msgpack_to_json(NULL, 5) == NULL);
    /*  A bad topic is still said first.                                   */
    CHECK_EQ_U64(nexus_publish_acked(c, "a..b", NULL, 5, NULL, NULL), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(s_last_seq(c), before); /* none of them was stored */
    uint64_t seq = 0;
    CHECK_EQ_U64(nexus_publish_acked(c, "a.b", NULL, 0, &seq, NULL), NEXUS_OK);
    CHECK_EQ_U64(seq, before + 1);
    nexus_client_destroy(&c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    s_test_offline();
    CHECK(th_start(&s_broker) == 0);
    s_test_pubsub();
    s_test_endpoint_list();
    s_test_history();
    s_test_callback_and_overflow();
    s_test_coordination();
    s_test_invalid_errmsg();
    s_test_set_session();
    s_test_null_payload();
    s_test_source_after_register();
    s_test_destroy_while_recv();
    s_test_gap();
    s_test_too_large();
    th_cleanup(&s_broker, nx_test_failures > 0);
    NX_TEST_DONE();
}
