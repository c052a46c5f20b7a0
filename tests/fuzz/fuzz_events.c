/*  =========================================================================
    fuzz_events - the event plane: the frames a publisher sends to the
    XSUB (events in), and the subscription messages a subscriber sends to
    the XPUB (events out), into a real broker (fuzz_broker.h).

    Input: one byte, then frames separated by the bytes C1 C1. Byte 0 bit
    0 clear: the frames are one multipart message from a publisher (PUB);
    set: each frame is one message from a subscriber's XSUB socket (a
    subscribe is 01 PREFIX, an unsubscribe 00 PREFIX). After each input a
    marker event is published and awaited on a subscriber to everything.

    Promises checked:
      - a publisher's message that follows the rules (2 or 3 frames, a
        valid topic, a payload up to max_payload, a source of at most 128
        bytes of UTF-8) comes out once, before the marker, stamped with the
        next seq, a ts that never goes back, its topic, payload and source
        unchanged; anything else comes out not at all (dropped, counted);
      - whatever a subscriber sends, the broker goes on: the marker comes
        out within 30 s;
    and ASan, UBSan and LeakSanitizer see nothing.
    =========================================================================
*/

#include <czmq.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_broker.h"
#include "fuzz_util.h"
#include "nx_codec.h"
#include "nx_topic.h"

#define S_FRAMES     16
#define S_TIMEOUT_MS 30000
#define S_MARKER     "fz.marker"

static fz_broker_t *s_broker;
static zsock_t *s_pub, *s_sub, *s_raw;
static uint64_t s_marker;   /* the last marker's number                    */
static uint64_t s_last_seq; /* the last seq seen                           */
static uint64_t s_last_ts;  /* and its ts                                  */
static uint64_t s_inputs;   /* subscriber inputs, to renew the raw one     */
static uint64_t s_runs;     /* inputs run                                  */

static void s_close(void)
{
    zsock_destroy(&s_pub);
    zsock_destroy(&s_sub);
    zsock_destroy(&s_raw);
}

static void s_drain(zsock_t *sock)
{
    void *h = zsock_resolve(sock);
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, h, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&m);
}

static void s_new_raw(void)
{
    zsock_destroy(&s_raw);
    s_raw = zsock_new(ZMQ_XSUB);
    FZ_CHECK(s_raw && zsock_connect(s_raw, "%s", fz_broker_events_out(s_broker)) == 0,
             "connect the raw subscriber");
    zsock_set_sndtimeo(s_raw, S_TIMEOUT_MS);
}

/*  Publishes the next marker; returns its number.                         */
static uint64_t s_publish_marker(void)
{
    uint8_t n[8];
    nx_put_u64(n, ++s_marker);
    zsock_t *p = s_pub;
    FZ_CHECK(fz_send(zsock_resolve(p), S_MARKER, strlen(S_MARKER), ZMQ_SNDMORE) >= 0 &&
                 fz_send(zsock_resolve(p), n, 8, ZMQ_SNDMORE) >= 0 &&
                 fz_send(zsock_resolve(p), "fz", 2, 0) >= 0,
             "publish the marker");
    return s_marker;
}

/*  Reads events until marker comes; the one event before it, if any, is
    returned in *got (its frame in *frame, which the caller closes).      */
static size_t s_until_marker(uint64_t marker, zmq_msg_t *frame, nx_event_msg_t *got, int timeout_ms)
{
    size_t before = 0;
    void *h = zsock_resolve(s_sub);
    int64_t deadline = zclock_mono() + timeout_ms;
    while (true) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int64_t left = deadline - zclock_mono();
        if (fz_msg_recv(h, &m, left > 0 ? (int)left : 0) < 0) {
            zmq_msg_close(&m);
            return SIZE_MAX;
        }
        nx_event_msg_t ev;
        FZ_CHECK(nx_event_msg_decode(zmq_msg_data(&m), zmq_msg_size(&m), &ev) == 0,
                 "an event frame that does not decode (%zu bytes)", zmq_msg_size(&m));
        FZ_CHECK(ev.seq == s_last_seq + 1 || s_last_seq == 0, "seq %llu after %llu",
                 (unsigned long long)ev.seq, (unsigned long long)s_last_seq);
        FZ_CHECK(ev.ts >= s_last_ts, "ts went back");
        s_last_seq = ev.seq;
        s_last_ts = ev.ts;
        bool is_marker = ev.topic_len == strlen(S_MARKER) &&
                         memcmp(ev.topic, S_MARKER, ev.topic_len) == 0 && ev.payload_len == 8;
        if (is_marker && nx_get_u64(ev.payload) == marker) {
            zmq_msg_close(&m);
            return before;
        }
        if (is_marker && nx_get_u64(ev.payload) < marker) {
            zmq_msg_close(&m); /* a marker of the start-up */
            continue;
        }
        FZ_CHECK(before == 0, "more than one event for one message");
        before++;
        /*  A small message keeps its bytes inside zmq_msg_t: decoded again
            where it now lives.                                             */
        zmq_msg_move(frame, &m);
        zmq_msg_close(&m);
        nx_event_msg_decode(zmq_msg_data(frame), zmq_msg_size(frame), got);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fz_tmpdir("events");
    const char *const settings[] = {"max_payload", "16k", "retain_events", "20000", NULL};
    s_broker = fz_broker_start("events", dir, false, settings);
    s_pub = zsock_new(ZMQ_PUB);
    s_sub = zsock_new(ZMQ_SUB);
    FZ_CHECK(s_pub && s_sub, "sockets");
    FZ_CHECK(zsock_connect(s_pub, "%s", fz_broker_events_in(s_broker)) == 0 &&
                 zsock_connect(s_sub, "%s", fz_broker_events_out(s_broker)) == 0,
             "connect");
    zsock_set_subscribe(s_sub, "");
    zsock_set_sndhwm(s_pub, 0);
    s_new_raw();
    atexit(s_close);
    /*  Until both subscriptions have travelled (the broker's to our PUB,
        ours to its XPUB), markers are lost: send them until one comes.   */
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    nx_event_msg_t ev;
    size_t got = SIZE_MAX;
    for (int i = 0; i < 300 && got == SIZE_MAX; i++)
        got = s_until_marker(s_publish_marker(), &frame, &ev, 100);
    FZ_CHECK(got == 0, "no marker came back from the broker");
    zmq_msg_close(&frame);
    return 0;
}

/*  Whether the broker must take this message (nx_broker.c, s_read_event). */
static bool s_valid(const fz_part_t *f, size_t n)
{
    if (n < 2 || n > 3)
        return false;
    if (!nx_topic_valid((const char *)f[0].data, f[0].size))
        return false;
    if (f[1].size > fz_broker_max_payload(s_broker))
        return false;
    return n == 2 ||
           (f[2].size <= NX_SOURCE_MAX && nx_utf8_valid((const char *)f[2].data, f[2].size));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool subscriber = data[0] & 1;
    fz_part_t f[S_FRAMES];
    size_t n = fz_split(data + 1, size - 1, "\xc1\xc1", 2, f, S_FRAMES);
    s_runs++;
    if (subscriber) {
        if (++s_inputs % 64 == 0)
            s_new_raw(); /* a connection's subscriptions are bounded */
        for (size_t i = 0; i < n; i++)
            FZ_CHECK(fz_send(zsock_resolve(s_raw), f[i].data, f[i].size, 0) >= 0,
                     "send a subscription: %s", zmq_strerror(zmq_errno()));
    } else
        for (size_t i = 0; i < n; i++)
            FZ_CHECK(fz_send(zsock_resolve(s_pub), f[i].data, f[i].size,
                              i + 1 < n ? ZMQ_SNDMORE : 0) >= 0,
                     "publish: %s", zmq_strerror(zmq_errno()));
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    nx_event_msg_t ev;
    size_t got = s_until_marker(s_publish_marker(), &frame, &ev, S_TIMEOUT_MS);
    if (got == SIZE_MAX) {
        /*  What the report needs: whether the loop still answers, what its
            counters say, and whether a second marker comes.               */
        char state[8192];
        fz_broker_state(s_broker, state, sizeof state);
        fprintf(stderr, "events fuzz: no marker %llu after input %llu; state: %s\n",
                (unsigned long long)s_marker, (unsigned long long)s_runs, state);
        zmq_msg_t again;
        zmq_msg_init(&again);
        size_t second = s_until_marker(s_publish_marker(), &again, &ev, 5000);
        zmq_msg_close(&again);
        fprintf(stderr, "events fuzz: a second marker %s\n",
                second == SIZE_MAX ? "did not come either" : "came");
    }
    FZ_CHECK(got != SIZE_MAX, "the marker did not come within %d ms", S_TIMEOUT_MS);
    if (subscriber)
        FZ_CHECK(got == 0, "an event came from a subscriber's messages");
    else if (!s_valid(f, n))
        FZ_CHECK(got == 0, "a message the broker must drop went out (%zu frames)", n);
    else {
        FZ_CHECK(got == 1, "a valid message (%zu frames) did not come out", n);
        FZ_CHECK(ev.topic_len == f[0].size && memcmp(ev.topic, f[0].data, f[0].size) == 0,
                 "topic changed");
        FZ_CHECK(ev.payload_len == f[1].size &&
                     (f[1].size == 0 || memcmp(ev.payload, f[1].data, f[1].size) == 0),
                 "payload changed");
        size_t slen = n == 3 ? f[2].size : 0;
        FZ_CHECK(ev.source_len == slen && (slen == 0 || memcmp(ev.source, f[2].data, slen) == 0),
                 "source changed");
    }
    zmq_msg_close(&frame);
    s_drain(s_raw);
    return 0;
}
