/*  =========================================================================
    test_sdk_async - nexus_publish_async and nexus_publish_async_wait
    against a real nexusd: every completion runs exactly once, the window
    bounds what is in flight (requests and bytes), errors the broker
    answers for some of the pipelined requests reach their own completions,
    a completion may publish again, destroy completes what is in flight,
    several threads share one client, and with the broker SIGKILLed while
    publishes are in flight every completion still runs once (ok or an
    error) and every event acknowledged ok is in the history after the
    restart, with its payload.
    =========================================================================
*/

#include <pthread.h>
#include <stdatomic.h>

#include "nx_test.h"
#include "test_sdk_harness.h"

static th_broker_t s_broker;

/*  What the completions saw, per event index.                             */
#define S_MAX 40000
typedef struct {
    atomic_int calls[S_MAX]; /* completions run for event i           */
    nexus_err_t err[S_MAX];  /* the outcome                           */
    uint64_t seq[S_MAX];     /* its seq when ok                       */
    atomic_int completed;    /* completions run in all                */
    atomic_int ok;           /* of which ok                           */
    nexus_client_t *client;  /* for completions that publish again    */
    atomic_int retried;      /* completions that published again      */
    atomic_int nested_wait;  /* what wait from a completion returned  */
} s_book_t;

static s_book_t *s_book;

typedef struct {
    s_book_t *book;
    int index;
} s_tag_t;

static s_tag_t *s_tags; /* one per index, the completion's argument */

static void s_done(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg)
{
    s_tag_t *tag = arg;
    s_book_t *b = tag->book;
    int i = tag->index;
    b->err[i] = err;
    b->seq[i] = seq;
    if (err == NEXUS_OK) {
        if (ts == 0)
            b->err[i] = NEXUS_ERR_INTERNAL; /* ok must carry the stamp */
        atomic_fetch_add(&b->ok, 1);
    }
    atomic_fetch_add(&b->calls[i], 1);
    atomic_fetch_add(&b->completed, 1);
}

static void s_book_reset(void)
{
    memset(s_book, 0, sizeof *s_book);
    for (int i = 0; i < S_MAX; i++) {
        s_tags[i].book = s_book;
        s_tags[i].index = i;
    }
}

/*  The payload of event i: its index as text, padded to size bytes.       */
static size_t s_payload(char *buf, size_t size, int i)
{
    memset(buf, '.', size);
    int n = snprintf(buf, size, "%d", i);
    buf[n] = '.';
    return size;
}

typedef struct {
    uint64_t seq;
    int index;
} s_pair_t;

static int s_pair_cmp(const void *a, const void *b)
{
    uint64_t x = ((const s_pair_t *)a)->seq, y = ((const s_pair_t *)b)->seq;
    return x < y ? -1 : x > y;
}

/*  Reads back the events of topic and checks that every event the book
    has as ok (indexes 0..n-1) is there under its seq with its payload of
    size bytes. Returns how many matched.                                   */
static int s_check_history(nexus_client_t *c, const char *topic, int n, size_t size)
{
    s_pair_t *ok = calloc((size_t)n, sizeof *ok);
    size_t n_ok = 0;
    for (int i = 0; i < n; i++)
        if (atomic_load(&s_book->calls[i]) && s_book->err[i] == NEXUS_OK)
            ok[n_ok++] = (s_pair_t){s_book->seq[i], i};
    qsort(ok, n_ok, sizeof *ok, s_pair_cmp);
    nexus_history_t *h = nexus_history_new(c);
    nexus_history_add_pattern(h, topic);
    nexus_history_set_page(h, 5000, 0);
    int matched = 0, wrong = 0;
    nexus_event_t *ev = NULL;
    char want[32768];
    while (nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
        s_pair_t key = {nexus_event_seq(ev), 0};
        s_pair_t *hit = bsearch(&key, ok, n_ok, sizeof *ok, s_pair_cmp);
        if (!hit)
            continue; /* not acknowledged ok (a timed out one may be there) */
        size_t len = 0;
        const void *p = nexus_event_payload(ev, &len);
        s_payload(want, size, hit->index);
        if (len == size && memcmp(p, want, size) == 0)
            matched++;
        else
            wrong++;
    }
    nexus_history_destroy(&h);
    free(ok);
    CHECK_EQ_U64(wrong, 0);
    return matched;
}

static void s_test_errors_and_window(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_publish_async(c, "a.b", "x", 1, s_done, &s_tags[0]), NEXUS_ERR_CLOSED);
    CHECK_EQ_U64(nexus_client_set_publish_window(c, 0, 1 << 20), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_publish_window(c, 100000, 1 << 20), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_publish_window(c, 8, 1000), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nexus_client_set_publish_window(c, 8, 64 << 10), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_client_set_publish_window(c, 8, 64 << 10), NEXUS_ERR_CLOSED);
    CHECK_EQ_U64(nexus_publish_async(c, "bad topic", "x", 1, s_done, &s_tags[0]),
                 NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(nexus_publish_async(c, "a.*", "x", 1, s_done, &s_tags[0]), NEXUS_ERR_BAD_TOPIC);
    CHECK_EQ_U64(nexus_publish_async_wait(c, 0), NEXUS_OK); /* nothing in flight */
    CHECK_EQ_U64(atomic_load(&s_book->completed), 0);

    /*  The window: never more than 8 requests in flight.                  */
    s_book_reset();
    char buf[32 << 10];
    int most = 0;
    for (int i = 0; i < 2000; i++) {
        size_t len = s_payload(buf, 100, i);
        CHECK_EQ_U64(nexus_publish_async(c, "async.win", buf, len, s_done, &s_tags[i]), NEXUS_OK);
        int in_flight = i + 1 - atomic_load(&s_book->completed);
        if (in_flight > most)
            most = in_flight;
    }
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK(most <= 8);
    CHECK(most >= 2); /* it did pipeline */
    CHECK_EQ_U64(atomic_load(&s_book->completed), 2000);
    CHECK_EQ_U64(atomic_load(&s_book->ok), 2000);
    int once = 0;
    for (int i = 0; i < 2000; i++) {
        once += atomic_load(&s_book->calls[i]) == 1;
        if (i)
            CHECK(s_book->seq[i] > s_book->seq[i - 1]); /* one connection: in order */
    }
    CHECK_EQ_U64(once, 2000);
    CHECK_EQ_U64(s_check_history(c, "async.win", 2000, 100), 2000);

    /*  The bytes of the window: 64 KiB hold three requests of 20 KB.      */
    s_book_reset();
    most = 0;
    for (int i = 0; i < 60; i++) {
        size_t len = s_payload(buf, 20000, i);
        CHECK_EQ_U64(nexus_publish_async(c, "async.bytes", buf, len, s_done, &s_tags[i]), NEXUS_OK);
        int in_flight = i + 1 - atomic_load(&s_book->completed);
        if (in_flight > most)
            most = in_flight;
    }
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK(most <= 3);
    CHECK_EQ_U64(atomic_load(&s_book->ok), 60);
    nexus_client_destroy(&c);
}

/*  A completion that publishes again, and tries to wait (refused).        */
static void s_done_retry(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg)
{
    s_tag_t *tag = arg;
    s_book_t *b = tag->book;
    s_done(err, seq, ts, arg);
    if (err == NEXUS_ERR_TOO_LARGE) {
        /*  Send a small one in its place, under the index + 20000.         */
        char buf[64];
        size_t len = s_payload(buf, 50, tag->index + 20000);
        nexus_err_t rc = nexus_publish_async(b->client, "async.err", buf, len, s_done,
                                             &s_tags[tag->index + 20000]);
        if (rc == NEXUS_OK)
            atomic_fetch_add(&b->retried, 1);
        atomic_store(&b->nested_wait, (int)nexus_publish_async_wait(b->client, 0));
    }
}

static void s_test_broker_errors(void)
{
    /*  A broker that refuses payloads over 1000 bytes: every other request
        of the pipeline gets too_large, in its own completion.             */
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--max-payload";
    b.extra[1] = "1000";
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    nexus_client_set_publish_window(c, 64, 1 << 20);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_book_reset();
    s_book->client = c;
    char buf[4096];
    int n = 1000;
    for (int i = 0; i < n; i++) {
        size_t len = s_payload(buf, i % 2 ? 2000 : 50, i);
        CHECK_EQ_U64(nexus_publish_async(c, "async.err", buf, len, s_done_retry, &s_tags[i]),
                     NEXUS_OK);
    }
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    int too_large = 0, ok = 0, once = 0;
    for (int i = 0; i < n; i++) {
        once += atomic_load(&s_book->calls[i]) == 1;
        if (i % 2)
            too_large += s_book->err[i] == NEXUS_ERR_TOO_LARGE;
        else
            ok += s_book->err[i] == NEXUS_OK;
    }
    CHECK_EQ_U64(once, n);
    CHECK_EQ_U64(too_large, n / 2);
    CHECK_EQ_U64(ok, n / 2);
    /*  Every refused one was sent again from its completion (the window
        had room: the refusal freed a slot) and completed once.            */
    CHECK_EQ_U64(atomic_load(&s_book->retried), n / 2);
    CHECK_EQ_U64(atomic_load(&s_book->nested_wait), NEXUS_ERR_INVALID);
    int retried_ok = 0;
    for (int i = 1; i < n; i += 2)
        retried_ok +=
            atomic_load(&s_book->calls[i + 20000]) == 1 && s_book->err[i + 20000] == NEXUS_OK;
    CHECK_EQ_U64(retried_ok, n / 2);
    CHECK_EQ_U64(s_check_history(c, "async.err", n, 50), n / 2);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

static void s_test_token_and_source(void)
{
    /*  A broker with a token: the requests carry it (and the source).    */
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--token";
    b.extra[1] = "s3cret";
    setenv("NEXUS_TOKEN", "s3cret", 1); /* for the harness's readiness probe */
    CHECK(th_start(&b) == 0);
    unsetenv("NEXUS_TOKEN");
    nexus_client_t *c = th_client(&b);
    nexus_client_set_token(c, "s3cret");
    nexus_client_set_name(c, "asyncer");
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_book_reset();
    char buf[64];
    for (int i = 0; i < 300; i++) {
        size_t len = s_payload(buf, 40, i);
        CHECK_EQ_U64(
            nexus_publish_async(c, i % 2 ? "tok.a" : "tok.b.c", buf, len, s_done, &s_tags[i]),
            NEXUS_OK);
    }
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK_EQ_U64(atomic_load(&s_book->ok), 300);
    nexus_history_t *h = nexus_history_new(c);
    nexus_history_add_pattern(h, "tok.>");
    nexus_event_t *ev = NULL;
    int named = 0, n = 0;
    while (nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
        named += strcmp(nexus_event_source(ev), "asyncer") == 0;
        n++;
    }
    nexus_history_destroy(&h);
    CHECK_EQ_U64(n, 300);
    CHECK_EQ_U64(named, 300);

    /*  Without the token the broker does not even let the connection in
        (ZAP PLAIN): connect says unauthorized, and so does every call
        after it, at once (each used to wait out its timeout and say the
        broker was unreachable); no completion runs, nothing is stored.    */
    nexus_client_t *anon = th_client(&b);
    nexus_client_set_token(anon, NULL);
    nexus_client_set_timeout(anon, 2000);
    CHECK_EQ_U64(nexus_client_connect(anon), NEXUS_ERR_UNAUTHORIZED); /* the broker refused */
    s_book_reset();
    uint64_t t0 = th_ms();
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_U64(nexus_publish_async(anon, "tok.anon", "x", 1, s_done, &s_tags[i]),
                     NEXUS_ERR_UNAUTHORIZED);
        CHECK(strstr(nexus_client_errmsg(anon), "at connect") != NULL);
    }
    uint64_t seq = 0;
    CHECK_EQ_U64(nexus_publish_acked(anon, "tok.anon", "x", 1, &seq, NULL), NEXUS_ERR_UNAUTHORIZED);
    CHECK_EQ_U64(nexus_publish(anon, "tok.anon", "x", 1), NEXUS_ERR_UNAUTHORIZED);
    CHECK_EQ_U64(nexus_subscribe(anon, "tok.>"), NEXUS_ERR_UNAUTHORIZED);
    nexus_history_t *ah = nexus_history_new(anon);
    CHECK_EQ_U64(nexus_history_next_view(ah, &ev), NEXUS_ERR_UNAUTHORIZED);
    nexus_history_destroy(&ah);
    CHECK(th_ms() - t0 < 1000); /* none waited out the 2 s timeout */
    CHECK_EQ_U64(nexus_publish_async_wait(anon, -1), NEXUS_OK);
    CHECK_EQ_U64(atomic_load(&s_book->completed), 0);
    nexus_client_destroy(&anon);
    h = nexus_history_new(c);
    nexus_history_add_pattern(h, "tok.anon");
    CHECK_EQ_U64(nexus_history_next_view(h, &ev), NEXUS_OK);
    CHECK(ev == NULL);
    nexus_history_destroy(&h);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

static void s_test_destroy_in_flight(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_book_reset();
    char buf[256];
    int sent = 0;
    for (int i = 0; i < 3000; i++) {
        size_t len = s_payload(buf, 128, i);
        if (nexus_publish_async(c, "async.destroy", buf, len, s_done, &s_tags[i]) == NEXUS_OK)
            sent++;
    }
    CHECK_EQ_U64(sent, 3000);
    nexus_client_destroy(&c); /* in flight: told ok or closed, once each */
    int once = 0, known = 0;
    for (int i = 0; i < 3000; i++) {
        once += atomic_load(&s_book->calls[i]) == 1;
        known += s_book->err[i] == NEXUS_OK || s_book->err[i] == NEXUS_ERR_CLOSED;
    }
    CHECK_EQ_U64(once, 3000);
    CHECK_EQ_U64(known, 3000);
}

/*  The first asynchronous publish makes the client's channel (its own
    connection): made here, before a test stops the broker, so that the
    requests it sends then go out (with no connection they are not sent:
    s_test_unreachable).                                                   */
static void s_warm(nexus_client_t *c)
{
    CHECK_EQ_U64(nexus_publish_async(c, "async.warm", "w", 1, NULL, NULL), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
}

/*  Destroy with the broker stopped (SIGSTOP: nothing is answered) and
    completions that publish again: each accepted publish is told its
    outcome exactly once, and a retry while destroy runs is refused.      */
static atomic_int s_retry_calls, s_retry_accepted, s_retry_refused;
static nexus_client_t *s_retry_client;

static void s_done_retry_once(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg)
{
    (void)seq;
    (void)ts;
    atomic_fetch_add(&s_retry_calls, 1);
    if (err == NEXUS_OK || arg)
        return;
    nexus_err_t rc =
        nexus_publish_async(s_retry_client, "async.retry", "y", 1, s_done_retry_once, (void *)1);
    atomic_fetch_add(rc == NEXUS_OK ? &s_retry_accepted : &s_retry_refused, 1);
}

static void s_test_destroy_retry(void)
{
    nexus_client_t *c = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_retry_client = c;
    s_warm(c);
    th_signal(&s_broker, SIGSTOP);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_U64(nexus_publish_async(c, "async.retry", "y", 1, s_done_retry_once, NULL),
                     NEXUS_OK);
    nexus_client_destroy(&c);
    th_signal(&s_broker, SIGCONT);
    CHECK_EQ_U64(atomic_load(&s_retry_accepted), 0);
    CHECK_EQ_U64(atomic_load(&s_retry_refused), 10);
    CHECK_EQ_U64(atomic_load(&s_retry_calls), 10);
}

/*  A thread waiting for room in a full window does not hold the others
    up: nexus_publish_async_wait (c, 0) only runs what is ready.          */
static void *s_wait_for_room(void *arg)
{
    nexus_err_t rc = nexus_publish_async((nexus_client_t *)arg, "async.room", "y", 1, NULL, NULL);
    return (void *)(intptr_t)rc;
}

static void s_test_wait_for_room(void)
{
    nexus_client_t *c = th_client(&s_broker); /* timeout 3 s */
    nexus_client_set_publish_window(c, 1, 64 << 10);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_warm(c);
    th_signal(&s_broker, SIGSTOP);
    CHECK_EQ_U64(nexus_publish_async(c, "async.room", "y", 1, NULL, NULL), NEXUS_OK);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, s_wait_for_room, c) == 0);
    usleep(100000); /* it waits for room */
    uint64_t t0 = th_ms();
    CHECK_EQ_U64(nexus_publish_async_wait(c, 0), NEXUS_ERR_TIMEOUT);
    /*  Not the other thread's wait (up to the 3 s timeout): a slice.      */
    CHECK(th_ms() - t0 < 1000);
    /*  Its room came when the first request timed out (sent 100 ms
        before it began to wait), with a new connection that the stopped
        broker never completes: by its own timeout it was not sent.        */
    void *rc = NULL;
    pthread_join(t, &rc);
    CHECK_EQ_U64((intptr_t)rc, NEXUS_ERR_UNREACHABLE);
    th_signal(&s_broker, SIGCONT);
    nexus_client_destroy(&c);
}

/*  The event callback (the client's own thread) waits in
    nexus_publish_async for room when the client is destroyed: it gets
    NEXUS_ERR_CLOSED, and nothing it uses is freed under it (ASan).       */
static nexus_client_t *s_cb_client;
static atomic_int s_cb_in, s_cb_go, s_cb_rc = -1;

static void s_cb_publishes(nexus_event_t *ev, void *arg)
{
    (void)ev;
    (void)arg;
    if (atomic_exchange(&s_cb_in, 1))
        return;
    for (int i = 0; i < 500 && !atomic_load(&s_cb_go); i++)
        usleep(10000); /* until the broker is stopped */
    nexus_publish_async(s_cb_client, "async.cb.out", "r", 1, NULL, NULL); /* the one slot */
    atomic_store(&s_cb_rc, nexus_publish_async(s_cb_client, "async.cb.out", "r", 1, NULL, NULL));
}

static void s_test_destroy_from_callback_wait(void)
{
    nexus_client_t *c = th_client(&s_broker); /* timeout 3 s */
    s_cb_client = c;
    nexus_client_set_callback(c, s_cb_publishes, NULL);
    nexus_client_set_publish_window(c, 1, 64 << 10);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    CHECK_EQ_U64(nexus_subscribe(c, "async.cb.in"), NEXUS_OK);
    nexus_client_t *p = th_client(&s_broker);
    CHECK_EQ_U64(nexus_client_connect(p), NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_acked(p, "async.cb.in", "q", 1, NULL, NULL), NEXUS_OK);
    for (int i = 0; i < 500 && !atomic_load(&s_cb_in); i++)
        usleep(10000);
    CHECK(atomic_load(&s_cb_in));
    th_signal(&s_broker, SIGSTOP);
    atomic_store(&s_cb_go, 1);
    usleep(200000); /* the callback waits for room */
    uint64_t t0 = th_ms();
    nexus_client_destroy(&c);
    CHECK(th_ms() - t0 < 2500); /* it gave up at once, not at its 3 s timeout */
    CHECK_EQ_U64(atomic_load(&s_cb_rc), NEXUS_ERR_CLOSED);
    th_signal(&s_broker, SIGCONT);
    nexus_client_destroy(&p);
}

typedef struct {
    nexus_client_t *client;
    int first, count;
    int failed;
} s_worker_t;

static void *s_worker(void *arg)
{
    s_worker_t *w = arg;
    char buf[256];
    for (int i = w->first; i < w->first + w->count; i++) {
        size_t len = s_payload(buf, 64, i);
        if (nexus_publish_async(w->client, "async.threads", buf, len, s_done, &s_tags[i]))
            w->failed++;
    }
    if (nexus_publish_async_wait(w->client, -1) != NEXUS_OK)
        w->failed++;
    return NULL;
}

static void s_test_threads(void)
{
    nexus_client_t *c = th_client(&s_broker);
    nexus_client_set_publish_window(c, 100, 1 << 20);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_book_reset();
    pthread_t th[4];
    s_worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (s_worker_t){c, i * 2500, 2500, 0};
        pthread_create(&th[i], NULL, s_worker, &w[i]);
    }
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        failed += w[i].failed;
    }
    CHECK_EQ_U64(failed, 0);
    int once = 0;
    for (int i = 0; i < 10000; i++)
        once += atomic_load(&s_book->calls[i]) == 1 && s_book->err[i] == NEXUS_OK;
    CHECK_EQ_U64(once, 10000);
    CHECK_EQ_U64(s_check_history(c, "async.threads", 10000, 64), 10000);
    nexus_client_destroy(&c);
}

static void s_test_kill(void)
{
    /*  The broker is SIGKILLed with publishes in flight and restarted.    */
    th_broker_t b;
    memset(&b, 0, sizeof b);
    b.extra[0] = "--sync";
    b.extra[1] = "full";
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    nexus_client_set_timeout(c, 1000);
    nexus_client_set_publish_window(c, 256, 1 << 20);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_book_reset();
    int n = 30000, sent = 0, refused = 0, phase = 0;
    char buf[256];
    static int accepted[S_MAX];
    uint64_t t0 = th_ms();
    for (int i = 0; i < n && th_ms() - t0 < 60000; i++) {
        if (phase == 0 && atomic_load(&s_book->completed) >= 8000) {
            th_kill(&b);
            phase = 1;
        } else if (phase == 1 && atomic_load(&s_book->completed) >= sent - 10) {
            /*  Everything in flight was given up on: start it again.       */
            CHECK(th_start(&b) == 0);
            phase = 2;
        }
        size_t len = s_payload(buf, 128, i);
        nexus_err_t rc = nexus_publish_async(c, "async.kill", buf, len, s_done, &s_tags[i]);
        accepted[i] = rc == NEXUS_OK;
        if (rc == NEXUS_OK)
            sent++;
        else
            refused++;
    }
    CHECK_EQ_U64(phase, 2);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    int once = 0, never = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        if (accepted[i])
            once += atomic_load(&s_book->calls[i]) == 1;
        else
            never += atomic_load(&s_book->calls[i]) == 0;
        if (accepted[i] && s_book->err[i] != NEXUS_OK) {
            failed++;
            CHECK(s_book->err[i] == NEXUS_ERR_TIMEOUT);
        }
    }
    printf("kill: %d sent, %d refused, %d ok, %d failed (timeout)\n", sent, refused,
           atomic_load(&s_book->ok), failed);
    CHECK_EQ_U64(once, sent);
    CHECK_EQ_U64(never, n - sent);
    CHECK(failed > 0); /* the kill hit requests in flight */
    CHECK(atomic_load(&s_book->ok) > 8000);
    /*  Nothing acknowledged is lost: each ok event is in the history of
        the restarted broker with its payload.                              */
    CHECK_EQ_U64(s_check_history(c, "async.kill", n, 128), atomic_load(&s_book->ok));
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

/*  A broker that is gone: a publish finds no connection, is not sent
    and says so (unreachable, no completion), not a completion "timeout"
    that leaves the outcome open; once the broker is back, publishes go
    out again on the same client.                                          */
static void s_test_unreachable(void)
{
    th_broker_t b;
    memset(&b, 0, sizeof b);
    CHECK(th_start(&b) == 0);
    nexus_client_t *c = th_client(&b);
    nexus_client_set_timeout(c, 400);
    CHECK_EQ_U64(nexus_client_connect(c), NEXUS_OK);
    s_warm(c);
    th_kill(&b);
    usleep(100000); /* the connection is seen gone */
    s_book_reset();
    uint64_t t0 = th_ms();
    CHECK_EQ_U64(nexus_publish_async(c, "async.gone", "g", 1, s_done, &s_tags[0]),
                 NEXUS_ERR_UNREACHABLE);
    CHECK(th_ms() - t0 >= 350);
    CHECK(strstr(nexus_client_errmsg(c), "was not sent") != NULL);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK_EQ_U64(atomic_load(&s_book->completed), 0);
    CHECK(th_start(&b) == 0);
    nexus_err_t rc = NEXUS_ERR_UNREACHABLE;
    for (int i = 0; i < 20 && rc == NEXUS_ERR_UNREACHABLE; i++)
        rc = nexus_publish_async(c, "async.gone", "h", 1, s_done, &s_tags[1]);
    CHECK_EQ_U64(rc, NEXUS_OK);
    CHECK_EQ_U64(nexus_publish_async_wait(c, -1), NEXUS_OK);
    CHECK_EQ_U64(atomic_load(&s_book->ok), 1);
    /*  The one stored is the one sent after the restart.                  */
    nexus_history_t *h = nexus_history_new(c);
    nexus_history_add_pattern(h, "async.gone");
    nexus_event_t *ev = NULL;
    int n = 0, h_payload = 0;
    while (nexus_history_next_view(h, &ev) == NEXUS_OK && ev) {
        size_t len = 0;
        const char *p = nexus_event_payload(ev, &len);
        h_payload += len == 1 && p[0] == 'h';
        n++;
    }
    nexus_history_destroy(&h);
    CHECK_EQ_U64(n, 1);
    CHECK_EQ_U64(h_payload, 1);
    nexus_client_destroy(&c);
    th_cleanup(&b, nx_test_failures > 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    s_book = calloc(1, sizeof *s_book);
    s_tags = calloc(S_MAX, sizeof *s_tags);
    s_book_reset();
    CHECK(th_start(&s_broker) == 0);
    s_test_errors_and_window();
    s_test_broker_errors();
    s_test_token_and_source();
    s_test_destroy_in_flight();
    s_test_destroy_retry();
    s_test_wait_for_room();
    s_test_destroy_from_callback_wait();
    s_test_threads();
    s_test_kill();
    s_test_unreachable();
    th_cleanup(&s_broker, nx_test_failures > 0);
    free(s_book);
    free(s_tags);
    NX_TEST_DONE();
}
