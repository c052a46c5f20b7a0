/*  =========================================================================
    nexus_load - an SDK worker for the failover tests: acknowledged
    publishes, claims or a subscription through libnexus, one line on
    stdout per outcome, so that a test can check afterwards what was
    acknowledged, granted and delivered across a failover.

    nexus_load ENDPOINTS pub TOPIC COUNT PACE_MS
        publishes {"k":K} for K = 1..COUNT, acknowledged, PACE_MS apart; an
        error is printed and the same K sent again (at least once):
        "ack K SEQ" / "err K CODE"
    nexus_load ENDPOINTS claim PREFIX COUNT PACE_MS
        registers a session, claims PREFIX.K (ttl 10 min) for K = 1..COUNT:
        "claim K TOKEN" / "err K CODE"; an error is sent again, and a
        claim denied to its own session (granted before the answer was
        lost) is "mine K".
    nexus_load ENDPOINTS sub PATTERN [SINCE]
        subscribes (from after seq SINCE when given, 0: the oldest) and
        prints "ev SEQ TOPIC" per event, "gap FROM TO" per gap, until
        SIGTERM.

    ENDPOINTS is what --endpoint takes (a comma-separated list for a
    pair). NEXUS_TIMEOUT_MS sets the call timeout. Exits 0 at the end
    (or on SIGTERM), 2 on bad arguments, 1 when it cannot connect.
    =========================================================================
*/

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nexus.h"

static volatile sig_atomic_t s_stop = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static int s_pub(nexus_client_t *c, const char *topic, long count, long pace)
{
    for (long k = 1; k <= count && !s_stop;) {
        char json[64];
        snprintf(json, sizeof json, "{\"k\":%ld}", k);
        uint64_t seq = 0;
        nexus_err_t rc = nexus_publish_json_acked(c, topic, json, &seq);
        if (rc == NEXUS_OK) {
            printf("ack %ld %" PRIu64 "\n", k, seq);
            k++;
        } else {
            printf("err %ld %s\n", k, nexus_err_name(rc));
            usleep(20000);
        }
        if (pace)
            usleep((useconds_t)pace * 1000);
    }
    return 0;
}

static int s_claim(nexus_client_t *c, const char *prefix, long count, long pace)
{
    int resumed = 0;
    nexus_err_t rc;
    while ((rc = nexus_session_register(c, &resumed)) != NEXUS_OK && !s_stop) {
        printf("err 0 %s\n", nexus_err_name(rc));
        usleep(100000);
    }
    char me[NEXUS_ID_MAX] = "";
    nexus_client_session_id(c, me, sizeof me);
    printf("session %s\n", me);
    for (long k = 1; k <= count && !s_stop;) {
        char id[300];
        snprintf(id, sizeof id, "%s.%ld", prefix, k);
        nexus_claim_result_t res;
        memset(&res, 0, sizeof res);
        rc = nexus_claim(c, id, 600000, NULL, &res);
        if (rc == NEXUS_OK) {
            printf("claim %ld %" PRIu64 "\n", k, res.token);
            k++;
        } else if (rc == NEXUS_ERR_DENIED && strcmp(res.holder, me) == 0) {
            printf("mine %ld\n", k);
            k++;
        } else {
            printf("err %ld %s\n", k, nexus_err_name(rc));
            usleep(20000);
        }
        if (pace)
            usleep((useconds_t)pace * 1000);
    }
    return 0;
}

static int s_sub(nexus_client_t *c, const char *pattern, const char *since)
{
    nexus_err_t rc;
    /*  The starting point first: after the pattern, what came live in
        between would be delivered twice (nexus.h).                        */
    while (since && (rc = nexus_client_resume_from(c, strtoull(since, NULL, 10))) != NEXUS_OK &&
           !s_stop) {
        printf("err 0 %s\n", nexus_err_name(rc));
        usleep(100000);
    }
    while ((rc = nexus_subscribe(c, pattern)) != NEXUS_OK && !s_stop) {
        printf("err 0 %s\n", nexus_err_name(rc));
        usleep(100000);
    }
    printf("subscribed\n");
    while (!s_stop) {
        nexus_event_t *ev = NULL;
        rc = nexus_recv(c, 200, &ev);
        uint64_t from = 0, to = 0;
        if (ev && nexus_event_gap(ev, &from, &to) == 0)
            printf("gap %" PRIu64 " %" PRIu64 "\n", from, to);
        else if (ev)
            printf("ev %" PRIu64 " %s\n", nexus_event_seq(ev), nexus_event_topic(ev));
        nexus_event_destroy(&ev);
        if (rc != NEXUS_OK && rc != NEXUS_ERR_TIMEOUT && rc != NEXUS_ERR_GAP)
            break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: nexus_load ENDPOINTS pub|claim|sub ARGS (see the source)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    nexus_client_t *c = nexus_client_new();
    const char *timeout = getenv("NEXUS_TIMEOUT_MS");
    if (!c || nexus_client_set_endpoint(c, argv[1]) ||
        (timeout && nexus_client_set_timeout(c, (uint32_t)atoi(timeout))) ||
        nexus_client_set_reconnect(c, 50, 500) || nexus_client_set_keepalive(c, 500, 2000)) {
        fprintf(stderr, "nexus_load: %s\n", c ? nexus_client_errmsg(c) : "no memory");
        nexus_client_destroy(&c);
        return 2;
    }
    if (!strcmp(argv[2], "claim"))
        nexus_client_set_name(c, "nexus-load");
    /*  A broker that does not answer yet is tried again by the calls.     */
    nexus_err_t rc = nexus_client_connect(c);
    if (rc && rc != NEXUS_ERR_UNREACHABLE && rc != NEXUS_ERR_TIMEOUT) {
        fprintf(stderr, "nexus_load: %s\n", nexus_client_errmsg(c));
        nexus_client_destroy(&c);
        return 1;
    }
    /*  After the first socket: CZMQ installs handlers of its own then.    */
    signal(SIGTERM, s_on_signal);
    signal(SIGINT, s_on_signal);
    int status = 2;
    if (!strcmp(argv[2], "pub") && argc == 6)
        status = s_pub(c, argv[3], atol(argv[4]), atol(argv[5]));
    else if (!strcmp(argv[2], "claim") && argc == 6)
        status = s_claim(c, argv[3], atol(argv[4]), atol(argv[5]));
    else if (!strcmp(argv[2], "sub") && (argc == 4 || argc == 5))
        status = s_sub(c, argv[3], argc == 5 ? argv[4] : NULL);
    else
        fprintf(stderr, "nexus_load: bad arguments\n");
    nexus_client_stats_t st;
    nexus_client_stats(c, &st);
    printf("done failovers %" PRIu64 " reconnects %" PRIu64 " gaps %" PRIu64 "\n", st.failovers,
           st.reconnects, st.gaps);
    nexus_client_destroy(&c);
    return status;
}
