/*  =========================================================================
    test_sdk_resume - the delivery guarantee of libnexus under fire.

    A publisher thread sends 50,000 numbered events (acknowledged), with an
    unrelated event every 10th so that the subscriber sees holes in the seq
    sequence. Meanwhile the test SIGKILLs and restarts nexusd twice, and
    pauses it for 5 s (SIGSTOP/SIGCONT). The subscriber, with a small
    queue so that it overflows too, must end with every acknowledged event
    exactly once, in seq order, and nothing that does not match.
    =========================================================================
*/

#include <pthread.h>
#include <stdatomic.h>

#include "nx_test.h"
#include "test_sdk_harness.h"

#define S_EVENTS   50000
#define S_DEADLINE 90000 /* ms for the whole test at most                  */

static th_broker_t s_broker;
static uint64_t s_acked[S_EVENTS]; /* seq of event i once acknowledged     */
static atomic_int s_published;     /* events acknowledged so far           */
static atomic_int s_stop;          /* give up (deadline)                   */
static uint64_t s_start;

static void *s_publisher(void *arg)
{
    nexus_client_t *c = th_client(&s_broker);
    nexus_client_set_timeout(c, 2000);
    nexus_client_connect(c);
    for (int i = 0; i < S_EVENTS && !s_stop;) {
        char body[32];
        int len = snprintf(body, sizeof body, "%d", i);
        uint64_t seq = 0;
        nexus_err_t rc = nexus_publish_acked(c, "resume.n", body, (size_t)len, &seq, NULL);
        if (rc != NEXUS_OK) {
            static int failures = 0;
            if (failures++ % 50 == 0)
                fprintf(stderr, "publish %d: %s\n", i, nexus_client_errmsg(c));
            usleep(20000); /* broker away: try the same number again */
            continue;
        }
        s_acked[i] = seq;
        atomic_store(&s_published, i + 1);
        if (i % 10 == 0)
            nexus_publish_acked(c, "other.noise", "x", 1, NULL, NULL);
        i++;
    }
    nexus_client_destroy(&c);
    return NULL;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    CHECK(th_start(&s_broker) == 0);
    s_start = th_ms();

    nexus_client_t *sub = th_client(&s_broker);
    nexus_client_set_queue_max(sub, 2000);
    nexus_client_set_timeout(sub, 2000);
    CHECK(nexus_client_connect(sub) == NEXUS_OK);
    CHECK(nexus_subscribe(sub, "resume.>") == NEXUS_OK);

    pthread_t pub;
    pthread_create(&pub, NULL, s_publisher, NULL);

    uint64_t *got = calloc(S_EVENTS * 2, sizeof *got);
    size_t n_got = 0;
    int wrong_topic = 0, gaps = 0, out_of_order = 0, phase = 0;
    uint64_t last = 0, pause_until = 0;
    for (;;) {
        int published = atomic_load(&s_published);
        uint64_t now = th_ms();
        /*  The chaos, driven by progress.                                 */
        if (phase == 0 && published >= 10000) {
            th_kill(&s_broker);
            usleep(300000);
            CHECK(th_start(&s_broker) == 0);
            phase = 1;
        } else if (phase == 1 && published >= 22000) {
            th_kill(&s_broker);
            usleep(1000000);
            CHECK(th_start(&s_broker) == 0);
            phase = 2;
        } else if (phase == 2 && published >= 35000) {
            th_signal(&s_broker, SIGSTOP);
            pause_until = now + 5000;
            phase = 3;
        } else if (phase == 3 && now >= pause_until) {
            th_signal(&s_broker, SIGCONT);
            phase = 4;
        }
        /*  A slow reader now and then, so that the queue overflows.       */
        if (n_got > 5000 && n_got < 8000)
            usleep(100);
        nexus_event_t *ev = NULL;
        nexus_err_t rc = nexus_recv(sub, 100, &ev);
        if (rc == NEXUS_OK || rc == NEXUS_ERR_GAP) {
            if (rc == NEXUS_ERR_GAP)
                gaps++;
            else if (strcmp(nexus_event_topic(ev), "resume.n") != 0)
                wrong_topic++;
            uint64_t seq = nexus_event_seq(ev);
            if (seq <= last)
                out_of_order++;
            last = seq;
            if (n_got < S_EVENTS * 2)
                got[n_got++] = seq;
            nexus_event_destroy(&ev);
        }
        if (published == S_EVENTS && phase == 4 && last >= s_acked[S_EVENTS - 1])
            break;
        if (now - s_start > S_DEADLINE) {
            fprintf(stderr, "deadline: published %d, received %zu, last %" PRIu64 "\n", published,
                    n_got, last);
            atomic_store(&s_stop, 1);
            break;
        }
    }
    pthread_join(pub, NULL);

    /*  Every acknowledged seq exactly once (got is strictly increasing, so
        a binary search per seq tells).                                    */
    int missing = 0;
    for (int i = 0; i < S_EVENTS; i++) {
        if (!s_acked[i]) {
            missing++;
            continue;
        }
        size_t lo = 0, hi = n_got;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (got[mid] < s_acked[i])
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == n_got || got[lo] != s_acked[i]) {
            if (missing < 5)
                fprintf(stderr, "missing event %d (seq %" PRIu64 ")\n", i, s_acked[i]);
            missing++;
        }
    }
    nexus_client_stats_t st;
    nexus_client_stats(sub, &st);
    printf("received %zu events in %.1f s: %" PRIu64 " live, %" PRIu64 " from %" PRIu64
           " history pages, %" PRIu64 " queue drops, %" PRIu64 " reconnects\n",
           n_got, (double)(th_ms() - s_start) / 1000, st.live_events, st.history_events,
           st.history_pages, st.queue_drops, st.reconnects);
    CHECK_EQ_U64(atomic_load(&s_published), S_EVENTS);
    CHECK_EQ_U64(missing, 0);
    CHECK_EQ_U64(out_of_order, 0);
    CHECK_EQ_U64(wrong_topic, 0);
    CHECK_EQ_U64(gaps, 0);
    /*  Proof that the chaos reached the client. Two kills usually show as
        two reconnects or more, but a kill while the link is already down
        (a request that timed out on a loaded machine) shows as none: at
        least one.                                                          */
    CHECK(st.reconnects >= 1);
    CHECK(st.queue_drops > 0 || st.history_events > 0);
    nexus_client_destroy(&sub);
    free(got);
    th_cleanup(&s_broker, nx_test_failures > 0);
    NX_TEST_DONE();
}
