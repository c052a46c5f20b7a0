/*  =========================================================================
    test_sdk_views - the zero-copy paths of libnexus against a real nexusd:
    the borrowed event of callback mode (everything readable during the
    call, nexus_event_dup keeps it, destroy only clears the pointer),
    nexus_recv_batch (order, completeness, mixed with nexus_recv, a small
    queue that overflows, its errors), and the history iterator's views
    with the next page asked for ahead (many pages, max, desc, an iterator
    dropped with a page in flight, a broker paused mid-way, a page the
    broker refuses then a retry).
    =========================================================================
*/

#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>

#include "nx_test.h"
#include "test_sdk_harness.h"

static th_broker_t s_broker;

/*  ---- Callback views ----------------------------------------------------- */

#define S_CB_N 600
typedef struct {
    atomic_int count;                 /* events seen                            */
    int bad;                          /* events whose fields were wrong         */
    int destroy_cleared;              /* destroy on the view set it to NULL     */
    nexus_event_t *kept[S_CB_N / 50]; /* dups of every 50th                   */
    uint64_t seqs[S_CB_N];            /* seq of each, in order seen             */
} s_cb_t;

static void s_on_view(nexus_event_t *ev, void *arg)
{
    s_cb_t *cb = arg;
    int n = atomic_load(&cb->count);
    if (n >= S_CB_N)
        return;
    /*  Every view of the event works during the call.                     */
    size_t len = 0;
    const uint8_t *p = nexus_event_payload(ev, &len);
    char want_topic[32];
    snprintf(want_topic, sizeof want_topic, "view.%d", n % 3);
    const msgpack_object *o = nexus_event_msgpack(ev);
    const char *json = nexus_event_json(ev);
    char want_json[128];
    snprintf(want_json, sizeof want_json, "\"payload\":{\"n\":%d}", n);
    if (strcmp(nexus_event_topic(ev), want_topic) != 0 ||
        strcmp(nexus_event_source(ev), "viewer") != 0 || !o || o->type != MSGPACK_OBJECT_MAP ||
        o->via.map.ptr[0].val.via.u64 != (uint64_t)n || !json || !strstr(json, want_json) || !p ||
        len < 4)
        cb->bad++;
    if (n % 50 == 0)
        cb->kept[n / 50] = nexus_event_dup(ev);
    nexus_event_t *borrowed = ev;
    nexus_event_destroy(&borrowed); /* the SDK's: only the pointer goes */
    cb->destroy_cleared += borrowed == NULL;
    cb->seqs[n] = nexus_event_seq(ev);
    atomic_store(&cb->count, n + 1);
}

static void s_test_callback_views(void)
{
    static s_cb_t cb;
    nexus_client_t *sub = th_client(&s_broker);
    nexus_client_set_callback(sub, s_on_view, &cb);
    CHECK_EQ_U64(nexus_client_connect(sub), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(sub, "view.*"), NEXUS_OK);
    nexus_client_t *pub = th_client(&s_broker);
    nexus_client_set_name(pub, "viewer");
    CHECK_EQ_U64(nexus_client_connect(pub), NEXUS_OK);
    uint64_t first = 0;
    for (int i = 0; i < S_CB_N; i++) {
        char topic[32], json[32];
        snprintf(topic, sizeof topic, "view.%d", i % 3);
        snprintf(json, sizeof json, "{\"n\":%d}", i);
        uint64_t seq = 0;
        /*  Acknowledged every 100th, so that some go through the history
            path of the subscriber too (a hole, then a check).              */
        if (i % 100 == 0)
            CHECK_EQ_U64(nexus_publish_json_acked(pub, topic, json, &seq), NEXUS_OK);
        else
            CHECK_EQ_U64(nexus_publish_json(pub, topic, json), NEXUS_OK);
        if (i == 0)
            first = seq;
    }
    for (int i = 0; i < 200 && atomic_load(&cb.count) < S_CB_N; i++)
        usleep(20000);
    CHECK_EQ_U64(atomic_load(&cb.count), S_CB_N);
    CHECK_EQ_U64(cb.bad, 0);
    CHECK_EQ_U64(cb.destroy_cleared, S_CB_N);
    CHECK_EQ_U64(cb.seqs[0], first);
    int ordered = 0;
    for (int i = 1; i < S_CB_N; i++)
        ordered += cb.seqs[i] > cb.seqs[i - 1];
    CHECK_EQ_U64(ordered, S_CB_N - 1);
    /*  The copies outlive the calls, with every byte.                     */
    for (int k = 0; k < S_CB_N / 50; k++) {
        nexus_event_t *e = cb.kept[k];
        CHECK(e != NULL);
        if (!e)
            continue;
        CHECK_EQ_U64(nexus_event_seq(e), cb.seqs[k * 50]);
        char want[64];
        snprintf(want, sizeof want, "{\"n\":%d}", k * 50);
        CHECK_EQ_STR(nexus_event_payload_json(e), want);
        CHECK_EQ_STR(nexus_event_source(e), "viewer");
        nexus_event_destroy(&cb.kept[k]);
    }
    nexus_client_destroy(&pub);
    nexus_client_destroy(&sub);
}

/*  ---- nexus_recv_batch ---------------------------------------------------- */

static void s_test_recv_batch(void)
{
    nexus_client_t *c = th_client(&s_broker);
    nexus_event_t *evs[64];
    size_t count = 99;
    CHECK_EQ_U64(nexus_recv_batch(c, 0, evs, 64, &count), NEXUS_ERR_CLOSED);
    CHECK_EQ_U64(count, 0);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_recv_batch(c, 0, evs, 0, &count), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_recv_batch(c, 0, NULL, 4, &count), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_subscribe(c, "batch.>"), NEXUS_OK);
    CHECK_EQ_U64(nexus_recv_batch(c, 50, evs, 64, &count), NEXUS_ERR_TIMEOUT);
    CHECK_EQ_U64(count, 0);

    /*  A small queue that overflows (refilled from the history), read by
        batches and single events in turn.                                 */
    nexus_client_t *small = th_client(&s_broker);
    nexus_client_set_queue_max(small, 50);
    CHECK_EQ_U64(nexus_client_connect(small), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(small, "batch.>"), NEXUS_OK);

    nexus_client_t *pub = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(pub), NEXUS_OK);
    int n = 3000;
    uint64_t *seqs = calloc((size_t)n, sizeof *seqs);
    for (int i = 0; i < n; i++) {
        char body[16];
        int len = snprintf(body, sizeof body, "%d", i);
        CHECK_EQ_U64(nexus_publish_acked(pub, i % 2 ? "batch.a" : "batch.b.c", body, (size_t)len,
                                         &seqs[i], NULL),
                     NEXUS_OK);
        if (i % 500 == 0) /* unrelated events make holes in the seqs */
            nexus_publish_acked(pub, "other.x", "", 0, NULL, NULL);
    }
    nexus_client_t *readers[2] = {c, small};
    for (int r = 0; r < 2; r++) {
        int got = 0, wrong = 0, calls = 0, biggest = 0;
        uint64_t t0 = th_ms();
        while (got < n && th_ms() - t0 < 20000) {
            if (calls++ % 3 == 2) { /* now and then one at a time */
                nexus_event_t *ev = NULL;
                if (nexus_recv(readers[r], 1000, &ev) != NEXUS_OK)
                    continue;
                wrong += nexus_event_seq(ev) != seqs[got];
                got++;
                nexus_event_destroy(&ev);
                continue;
            }
            size_t k = 0;
            nexus_err_t rc = nexus_recv_batch(readers[r], 1000, evs, 64, &k);
            if (rc != NEXUS_OK)
                continue;
            CHECK(k >= 1 && k <= 64);
            if ((int)k > biggest)
                biggest = (int)k;
            for (size_t j = 0; j < k; j++) {
                CHECK_EQ_U64(nexus_event_kind(evs[j]), NEXUS_EVENT_MESSAGE);
                char body[16];
                snprintf(body, sizeof body, "%d", got);
                size_t len = 0;
                const char *p = nexus_event_payload(evs[j], &len);
                wrong += got >= n || nexus_event_seq(evs[j]) != seqs[got] || len != strlen(body) ||
                         memcmp(p, body, len) != 0;
                got++;
                nexus_event_destroy(&evs[j]);
            }
        }
        CHECK_EQ_U64(got, n);
        CHECK_EQ_U64(wrong, 0);
        CHECK(biggest > 1); /* batches did carry several events */
        CHECK(r == 0 || biggest <= 50);
        nexus_event_t *ev = NULL;
        CHECK_EQ_U64(nexus_recv(readers[r], 100, &ev), NEXUS_ERR_TIMEOUT);
    }
    nexus_client_stats_t st;
    nexus_client_stats(small, &st);
    CHECK(st.history_events > 0);
    CHECK_EQ_U64(st.live_events + st.history_events, n);

    /*  Callback mode has no queue.                                         */
    nexus_client_t *cbc = th_client(&s_broker);
    static s_cb_t unused;
    nexus_client_set_callback(cbc, s_on_view, &unused);
    CHECK_EQ_U64(nexus_client_connect(cbc), NEXUS_OK);
    CHECK_EQ_U64(nexus_recv_batch(cbc, 0, evs, 4, &count), NEXUS_ERR_INVALID);
    nexus_client_destroy(&cbc);
    free(seqs);
    nexus_client_destroy(&pub);
    nexus_client_destroy(&small);
    nexus_client_destroy(&c);
}

/*  A gap event comes in a batch like any other, in its place.            */
static void s_test_batch_gap(void)
{
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--retain-events";
    b.extra[1] = "10";
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    for (int i = 0; i < 40; i++)
        nexus_publish_acked(c, "g.x", "", 0, NULL, NULL);
    for (int i = 0; i < 100; i++) { /* retention trims in the background */
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
    nexus_event_t *evs[8];
    size_t k = 0;
    CHECK_EQ_U64(nexus_recv_batch(c, 3000, evs, 8, &k), NEXUS_OK);
    CHECK(k >= 1);
    if (k >= 1) {
        uint64_t from = 0, to = 0;
        CHECK_EQ_U64(nexus_event_kind(evs[0]), NEXUS_EVENT_GAP);
        CHECK(nexus_event_gap(evs[0], &from, &to) == 0);
        CHECK_EQ_U64(from, 4);
        if (k >= 2)
            CHECK_EQ_U64(nexus_event_seq(evs[1]), to + 1);
    }
    for (size_t j = 0; j < k; j++)
        nexus_event_destroy(&evs[j]);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

/*  ---- History views ----------------------------------------------------- */

/*  Reads the iterator to its end with next_view, checking that each view
    holds event i of want (seqs), payload "i"; returns how many came.      */
static int s_read_all(nexus_history_t *h, const uint64_t *want, int first, int step, int *wrong)
{
    int got = 0;
    nexus_event_t *ev = NULL, *prev = NULL, *copy = NULL;
    while (nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
        int i = first + got * step;
        char body[16];
        snprintf(body, sizeof body, "%d", i);
        size_t len = 0;
        const char *p = nexus_event_payload(ev, &len);
        *wrong +=
            nexus_event_seq(ev) != want[i] || len != strlen(body) || memcmp(p, body, len) != 0;
        /*  The view is the iterator's (the same object each time); a copy
            taken before the next call keeps its event.                    */
        if (prev)
            *wrong += prev != ev;
        if (copy) {
            *wrong += nexus_event_seq(copy) != want[i - step];
            nexus_event_destroy(&copy);
        }
        copy = nexus_event_dup(ev);
        prev = ev;
        got++;
    }
    nexus_event_destroy(&copy);
    return got;
}

static void s_test_history_views(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    int n = 1000;
    uint64_t *seqs = calloc((size_t)n, sizeof *seqs);
    for (int i = 0; i < n; i++) {
        char body[16];
        int len = snprintf(body, sizeof body, "%d", i);
        nexus_publish_acked(c, i % 2 ? "hv.odd" : "hv.even", body, (size_t)len, &seqs[i], NULL);
    }
    /*  Pages of 7 (so 72 pages for the 500 even ones), each next page
        asked for ahead.                                                    */
    nexus_history_t *h = nexus_history_new(c);
    nexus_history_add_pattern(h, "hv.even");
    nexus_history_set_page(h, 7, 0);
    nexus_history_set_seq_range(h, seqs[0] - 1, 0);
    int wrong = 0;
    CHECK_EQ_U64(s_read_all(h, seqs, 0, 2, &wrong), n / 2);
    CHECK_EQ_U64(wrong, 0);
    uint64_t fs = 0, ls = 0;
    nexus_history_bounds(h, &fs, &ls);
    CHECK(ls >= seqs[n - 1]);
    CHECK_EQ_U64(nexus_history_position(h), ls);
    nexus_event_t *ev = (nexus_event_t *)1;
    CHECK_EQ_U64(nexus_history_next_view(h, &ev), NEXUS_OK); /* stays at the end */
    CHECK(ev == NULL);
    nexus_history_destroy(&h);

    /*  max 13 over pages of 5; owned events from nexus_history_next.       */
    h = nexus_history_new(c);
    nexus_history_add_pattern(h, "hv.>");
    nexus_history_set_page(h, 5, 0);
    nexus_history_set_max(h, 13);
    nexus_history_set_seq_range(h, seqs[0] - 1, 0);
    int got = 0;
    while (nexus_history_next(h, &ev) == NEXUS_OK && ev) {
        wrong += nexus_event_seq(ev) != seqs[got];
        got++;
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(got, 13);
    CHECK_EQ_U64(nexus_history_position(h), seqs[12]);
    nexus_history_destroy(&h);

    /*  Newest first, pages of 100, by next_view.                           */
    h = nexus_history_new(c);
    nexus_history_add_pattern(h, "hv.odd");
    nexus_history_set_page(h, 100, 1);
    nexus_history_set_seq_range(h, seqs[0] - 1, 0);
    got = 0;
    while (nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
        wrong += nexus_event_seq(ev) != seqs[n - 1 - 2 * got];
        got++;
    }
    CHECK_EQ_U64(got, n / 2);
    nexus_history_destroy(&h);

    /*  Dropped with the next page in flight, many times: the connections
        that go back to the client must never hand a stale page to the
        next iterator.                                                      */
    for (int round = 0; round < 20; round++) {
        h = nexus_history_new(c);
        nexus_history_add_pattern(h, "hv.even");
        nexus_history_set_page(h, 5, 0);
        nexus_history_set_seq_range(h, seqs[0] - 1, 0);
        for (int k = 0; k < 1 + round % 7 && nexus_history_next_view(h, &ev) == NEXUS_OK; k++)
            ;
        nexus_history_destroy(&h);
        h = nexus_history_new(c);
        nexus_history_add_pattern(h, "hv.odd");
        nexus_history_set_page(h, 50, 0);
        nexus_history_set_seq_range(h, seqs[0] - 1, 0);
        nexus_history_set_max(h, 60);
        got = 0;
        while (nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
            wrong += nexus_event_seq(ev) != seqs[1 + 2 * got];
            got++;
        }
        CHECK_EQ_U64(got, 60);
        nexus_history_destroy(&h);
    }
    CHECK_EQ_U64(wrong, 0);

    /*  The broker paused mid-way: the iterator says timeout, then goes on
        once it is back, with no event lost or repeated.                   */
    nexus_client_t *slow = th_client(&s_broker);
    nexus_client_set_timeout(slow, 500);
    CHECK_EQ_U64(nexus_client_connect(slow), NEXUS_OK);
    h = nexus_history_new(slow);
    nexus_history_add_pattern(h, "hv.even");
    nexus_history_set_page(h, 20, 0);
    nexus_history_set_seq_range(h, seqs[0] - 1, 0);
    got = 0;
    int timeouts = 0;
    uint64_t t0 = th_ms();
    while (th_ms() - t0 < 20000) {
        if (got == 30 && timeouts == 0)
            th_signal(&s_broker, SIGSTOP);
        nexus_err_t rc = nexus_history_next_view(h, &ev);
        if (rc == NEXUS_ERR_TIMEOUT) {
            timeouts++;
            th_signal(&s_broker, SIGCONT);
            continue;
        }
        if (rc != NEXUS_OK || !ev)
            break;
        wrong += nexus_event_seq(ev) != seqs[2 * got];
        got++;
    }
    th_signal(&s_broker, SIGCONT);
    /*  The page in flight when it stopped may have been there already:
        a timeout needs a page not yet asked for. At 20 per page, event 30
        is in page 2, and page 3 was asked for at once; pages 4+ were not. */
    CHECK(timeouts >= 1);
    CHECK_EQ_U64(got, n / 2);
    CHECK_EQ_U64(wrong, 0);
    nexus_history_destroy(&h);
    nexus_client_destroy(&slow);
    free(seqs);
    nexus_client_destroy(&c);
}

static void s_test_history_clamped(void)
{
    /*  A broker that serves pages of at most 5: an iterator that asks for
        pages of 10 gets pages of 5 and every event, once, in order.       */
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--history-limit";
    b.extra[1] = "5";
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    uint64_t seqs[12] = {0};
    for (int i = 0; i < 12; i++)
        CHECK_EQ_U64(nexus_publish_acked(c, "r.x", "", 0, &seqs[i], NULL), NEXUS_OK);
    nexus_history_t *h = nexus_history_new(c);
    CHECK_EQ_U64(nexus_history_set_page(h, 10, 0), NEXUS_OK);
    nexus_history_set_read_ahead(h, 0);
    size_t count = 0;
    int more = 0;
    CHECK_EQ_U64(nexus_history_fetch(h, &count, &more), NEXUS_OK);
    CHECK_EQ_U64(count, 5);
    CHECK(more);
    nexus_history_destroy(&h);

    h = nexus_history_new(c);
    nexus_history_set_page(h, 10, 0);
    nexus_event_t *ev = NULL;
    int got = 0, wrong = 0;
    while (got < 100 && nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
        if (got >= 12 || nexus_event_seq(ev) != seqs[got])
            wrong++;
        got++;
    }
    CHECK_EQ_U64(got, 12);
    CHECK_EQ_U64(wrong, 0);
    nexus_history_destroy(&h);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    CHECK(th_start(&s_broker) == 0);
    s_test_callback_views();
    s_test_recv_batch();
    s_test_history_views();
    s_test_history_clamped();
    s_test_batch_gap();
    th_cleanup(&s_broker, nx_test_failures > 0);
    NX_TEST_DONE();
}
