/*  =========================================================================
    test_sdk_store_id - store identity on libnexus's side, with the real
    nexusd: every cursor the SDK keeps names the store its seq belongs to,
    and a cursor of another store gives the application a reset event
    (with the new store's range), never a silent skip.

    1. A running subscriber follows store A through a kill -9 and restart
       of the same data directory: no reset. Then nexusd is restarted on a
       fresh data directory (store B, seqs from 1 again, all below the
       subscriber's position): the subscriber gets one reset event (old
       cursor in A, B's id and range), then B's events from its first one,
       each naming B, then B's live events.
    2. New clients resume against B: a cursor of A (reset, then B from its
       first event), a cursor of B (no reset, only what follows it), a
       cursor of B beyond B's last seq (reset: a restored older store), a
       plain seq beyond it (reset), and a reset handed to a callback.
    3. The history iterator: a cursor of A against B ends with
       NEXUS_ERR_RESET and names B; a cursor of B reads on.
    =========================================================================
*/

#include "nx_test.h"
#include "test_sdk_harness.h"

#define S_WAIT_MS 15000 /* the longest a check waits for one event         */

static th_broker_t s_broker;

/*  Publishes n events on topic, acknowledged; returns the last seq.       */
static uint64_t s_publish(const char *topic, int n, const char *tag)
{
    nexus_client_t *c = th_client(&s_broker);
    uint64_t seq = 0;
    if (nexus_client_connect(c) == NEXUS_OK)
        for (int i = 0; i < n; i++) {
            char body[64];
            int len = snprintf(body, sizeof body, "%s-%d", tag, i);
            CHECK_EQ_U64(nexus_publish_acked(c, topic, body, (size_t)len, &seq, NULL), NEXUS_OK);
        }
    nexus_client_destroy(&c);
    return seq;
}

/*  The next message event (skipping nothing): returns its rc and event.   */
static nexus_err_t s_next(nexus_client_t *c, nexus_event_t **ev)
{
    return nexus_recv(c, S_WAIT_MS, ev);
}

/*  Reads n message events of store; checks they carry it, in seq order,
    with the payloads tag-0..tag-(n-1). Returns the last seq.               */
static uint64_t s_expect_events(nexus_client_t *c, const char *store, int n, const char *tag)
{
    uint64_t last = 0;
    for (int i = 0; i < n; i++) {
        nexus_event_t *ev = NULL;
        nexus_err_t rc = s_next(c, &ev);
        CHECK_EQ_U64(rc, NEXUS_OK);
        if (!ev)
            return last;
        char body[64];
        int len = snprintf(body, sizeof body, "%s-%d", tag, i);
        size_t size = 0;
        const void *p = nexus_event_payload(ev, &size);
        CHECK(size == (size_t)len && memcmp(p, body, size) == 0);
        CHECK_EQ_STR(nexus_event_store_id(ev), store);
        CHECK(nexus_event_seq(ev) > last);
        last = nexus_event_seq(ev);
        nexus_event_destroy(&ev);
    }
    return last;
}

/*  Expects a reset event; checks what it says (new_last 0: the store may
    have been empty when the client saw it). Returns 0 when it came.       */
static int s_expect_reset(nexus_client_t *c, const char *old_store, uint64_t old_seq,
                          const char *new_store, uint64_t new_last)
{
    nexus_event_t *ev = NULL;
    nexus_err_t rc = s_next(c, &ev);
    CHECK_EQ_U64(rc, NEXUS_ERR_RESET);
    if (!ev)
        return -1;
    nexus_reset_t r;
    CHECK_EQ_U64(nexus_event_kind(ev), NEXUS_EVENT_RESET);
    CHECK(nexus_event_reset(ev, &r) == 0);
    CHECK_EQ_STR(r.cursor_store_id, old_store);
    CHECK_EQ_U64(r.cursor_seq, old_seq);
    CHECK_EQ_STR(r.store_id, new_store);
    CHECK_EQ_STR(nexus_event_store_id(ev), new_store);
    CHECK_EQ_U64(nexus_event_seq(ev), 0);
    if (new_last) {
        CHECK(r.first_seq >= 1 && r.first_seq <= r.last_seq);
        CHECK(r.last_seq >= new_last);
    } else /* the range when the change was seen: maybe before any event */
        CHECK(r.first_seq <= r.last_seq);
    CHECK(r.why && strlen(r.why) > 10);
    const char *json = nexus_event_json(ev);
    CHECK(json && strstr(json, "\"reset\"") && strstr(json, new_store));
    nexus_event_destroy(&ev);
    return rc == NEXUS_ERR_RESET ? 0 : -1;
}

/*  Nothing more arrives within ms.                                        */
static void s_expect_quiet(nexus_client_t *c, int ms)
{
    nexus_event_t *ev = NULL;
    nexus_err_t rc = nexus_recv(c, ms, &ev);
    CHECK_EQ_U64(rc, NEXUS_ERR_TIMEOUT);
    if (ev) {
        fprintf(stderr, "unexpected event: %s\n", nexus_event_json(ev));
        nexus_event_destroy(&ev);
    }
}

typedef struct {
    int resets;                            /* reset events seen                           */
    int messages;                          /* message events seen                         */
    char store[NEXUS_STORE_ID_MAX];        /* store of the last event           */
    char cursor_store[NEXUS_STORE_ID_MAX]; /* the reset's old store      */
    int order_ok;                          /* the reset came before every message         */
} s_cb_t;

static void s_callback(nexus_event_t *ev, void *arg)
{
    s_cb_t *st = arg;
    snprintf(st->store, sizeof st->store, "%s", nexus_event_store_id(ev));
    if (nexus_event_kind(ev) == NEXUS_EVENT_RESET) {
        nexus_reset_t r;
        if (nexus_event_reset(ev, &r) == 0)
            snprintf(st->cursor_store, sizeof st->cursor_store, "%s", r.cursor_store_id);
        if (st->messages == 0)
            st->order_ok = 1;
        st->resets++;
    } else if (nexus_event_kind(ev) == NEXUS_EVENT_MESSAGE)
        __atomic_add_fetch(&st->messages, 1, __ATOMIC_RELEASE);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    CHECK(th_start(&s_broker) == 0);
    char dir_a[256];
    snprintf(dir_a, sizeof dir_a, "%s", s_broker.data_dir);

    /*  ---- 1. A running subscriber, the store swapped under it ---------- */
    nexus_client_t *sub = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(sub), NEXUS_OK);
    char store_a[NEXUS_STORE_ID_MAX] = "";
    CHECK(nexus_client_store_id(sub, store_a, sizeof store_a) != NULL);
    CHECK_EQ_U64(strlen(store_a), 16);
    CHECK_EQ_U64(nexus_client_resume_at(sub, store_a, 0), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(sub, "sid.>"), NEXUS_OK);

    s_publish("sid.a", 30, "a1");
    uint64_t last_a = s_expect_events(sub, store_a, 30, "a1");
    CHECK(last_a >= 30);

    /*  The same store after a kill -9: no reset, delivery goes on.        */
    th_kill(&s_broker);
    CHECK(th_start(&s_broker) == 0);
    s_publish("sid.a", 5, "a2");
    last_a = s_expect_events(sub, store_a, 5, "a2");

    /*  A fresh data directory: store B, whose seqs start again below the
        subscriber's position: two events published before the subscriber
        may be back, four once it found B.                                 */
    th_stop(&s_broker);
    snprintf(s_broker.data_dir, sizeof s_broker.data_dir, "/tmp/nexus-sdk-test-XXXXXX");
    CHECK(mkdtemp(s_broker.data_dir) != NULL);
    CHECK(th_start(&s_broker) == 0);
    s_publish("sid.b", 2, "b0");
    nexus_client_t *probe = th_client(&s_broker);
    char store_b[NEXUS_STORE_ID_MAX] = "";
    CHECK_EQ_U64(nexus_client_connect(probe), NEXUS_OK);
    CHECK(nexus_client_store_id(probe, store_b, sizeof store_b) != NULL);
    nexus_client_destroy(&probe);
    CHECK(strlen(store_b) == 16 && strcmp(store_a, store_b) != 0);

    /*  The subscriber finds B by itself, after its reconnect.             */
    char seen[NEXUS_STORE_ID_MAX] = "";
    for (uint64_t until = th_ms() + S_WAIT_MS; th_ms() < until; usleep(20000))
        if (nexus_client_store_id(sub, seen, sizeof seen) && !strcmp(seen, store_b))
            break;
    CHECK_EQ_STR(seen, store_b);
    uint64_t last_b = s_publish("sid.b", 4, "b1");
    CHECK(last_b > 0 && last_b < last_a);

    /*  The reset's range is B's when the subscriber saw it.               */
    if (s_expect_reset(sub, store_a, last_a, store_b, 0) == 0) {
        s_expect_events(sub, store_b, 2, "b0");
        s_expect_events(sub, store_b, 4, "b1");
        s_publish("sid.b", 3, "b2"); /* live, after the reset */
        s_expect_events(sub, store_b, 3, "b2");
        s_expect_quiet(sub, 300);
        char now[NEXUS_STORE_ID_MAX];
        CHECK_EQ_STR(nexus_client_store_id(sub, now, sizeof now), store_b);
    }
    nexus_client_destroy(&sub);
    last_b = s_publish("sid.b", 2, "b3");

    /*  ---- 2. Resuming against B ---------------------------------------- */
    /*  A cursor of A: reset, then B from its first event.                 */
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_resume_at(c, store_a, last_a), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "sid.b"), NEXUS_OK);
    if (s_expect_reset(c, store_a, last_a, store_b, last_b) == 0) {
        s_expect_events(c, store_b, 2, "b0");
        s_expect_events(c, store_b, 4, "b1");
        s_expect_events(c, store_b, 3, "b2");
        s_expect_events(c, store_b, 2, "b3");
    }
    nexus_client_destroy(&c);

    /*  A cursor of B: what follows it, no reset.                          */
    c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_resume_at(c, store_b, last_b - 2), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "sid.b"), NEXUS_OK);
    s_expect_events(c, store_b, 2, "b3");
    s_expect_quiet(c, 300);
    nexus_client_destroy(&c);

    /*  A cursor of B beyond its last seq (an older copy of B restored):
        reset; and the same for a plain seq without a store.               */
    for (int with_store = 1; with_store >= 0; with_store--) {
        c = th_client(&s_broker);
        CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
        CHECK_EQ_U64(with_store ? nexus_client_resume_at(c, store_b, last_b + 1000)
                                : nexus_client_resume_from(c, last_b + 1000),
                     NEXUS_OK);
        CHECK_EQ_U64(nexus_subscribe(c, "sid.b"), NEXUS_OK);
        if (s_expect_reset(c, with_store ? store_b : "", last_b + 1000, store_b, last_b) == 0)
            s_expect_events(c, store_b, 2, "b0");
        nexus_client_destroy(&c);
    }

    /*  Bad store ids are refused.                                         */
    c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_resume_at(c, "0123456789abcdef0123456789", 1), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_resume_at(c, "a b", 1), NEXUS_ERR_INVALID);
    nexus_client_destroy(&c);

    /*  A reset handed to a callback, ahead of the new store's events.     */
    s_cb_t st = {0};
    c = th_client(&s_broker);
    nexus_client_set_callback(c, s_callback, &st);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_resume_at(c, store_a, 7), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "sid.b"), NEXUS_OK);
    uint64_t deadline = th_ms() + S_WAIT_MS;
    while (th_ms() < deadline && __atomic_load_n(&st.messages, __ATOMIC_ACQUIRE) < 11)
        usleep(20000);
    nexus_client_destroy(&c); /* joins the thread: st is stable now */
    CHECK_EQ_U64(st.resets, 1);
    CHECK_EQ_U64(st.messages, 11);
    CHECK_EQ_U64(st.order_ok, 1);
    CHECK_EQ_STR(st.cursor_store, store_a);
    CHECK_EQ_STR(st.store, store_b);

    /*  ---- 3. The history iterator -------------------------------------- */
    c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    nexus_history_t *h = nexus_history_new(c);
    CHECK_EQ_U64(nexus_history_add_pattern(h, "sid.>"), NEXUS_OK);
    nexus_history_set_seq_range(h, last_a, 0);
    CHECK_EQ_U64(nexus_history_set_store(h, store_a), NEXUS_OK);
    nexus_event_t *ev = NULL;
    CHECK_EQ_U64(nexus_history_next(h, &ev), NEXUS_ERR_RESET);
    CHECK(ev == NULL);
    CHECK(strstr(nexus_client_errmsg(c), store_a) && strstr(nexus_client_errmsg(c), store_b));
    CHECK_EQ_STR(nexus_history_store_id(h), store_b);
    uint64_t first = 0, last = 0;
    nexus_history_bounds(h, &first, &last);
    CHECK(first >= 1 && last >= last_b);
    CHECK_EQ_U64(nexus_history_next(h, &ev), NEXUS_OK); /* ended */
    CHECK(ev == NULL);
    nexus_history_destroy(&h);

    h = nexus_history_new(c);
    CHECK_EQ_U64(nexus_history_add_pattern(h, "sid.b"), NEXUS_OK);
    nexus_history_set_seq_range(h, last_b - 2, 0);
    CHECK_EQ_U64(nexus_history_set_store(h, store_b), NEXUS_OK);
    int n = 0;
    while (nexus_history_next(h, &ev) == NEXUS_OK && ev) {
        CHECK_EQ_STR(nexus_event_store_id(ev), store_b);
        n++;
        nexus_event_destroy(&ev);
    }
    CHECK_EQ_U64(n, 2);
    CHECK_EQ_STR(nexus_history_store_id(h), store_b);
    CHECK_EQ_U64(nexus_history_position(h), last_b);
    nexus_history_destroy(&h);
    nexus_client_destroy(&c);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir_a);
    CHECK(system(cmd) == 0);
    th_cleanup(&s_broker, nx_test_failures > 0);
    NX_TEST_DONE();
}
