/*  =========================================================================
    test_perm - the topic algebra of permissions: which pattern covers
    which, the broker's own topics, sessions' private namespaces, the byte
    prefixes that select a grant exactly, and the ladder of prefixes that
    selects everything but one namespace (checked against every topic of a
    sample: each is selected exactly when it should be).
    =========================================================================
*/

#include <stdlib.h>

#include "nx_perm.h"
#include "nx_topic.h"
#include "nx_test.h"

#define W(g, p) nx_perm_within(g, strlen(g), p, strlen(p))

typedef struct {
    char **p;
    size_t *len;
    size_t n, cap;
} s_all_t;

static void s_keep(void *arg, const char *prefix, size_t len)
{
    s_all_t *a = arg;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->p = realloc(a->p, a->cap * sizeof *a->p);
        a->len = realloc(a->len, a->cap * sizeof *a->len);
    }
    a->p[a->n] = malloc(len + 1);
    memcpy(a->p[a->n], prefix, len);
    a->len[a->n++] = len;
}

/*  Whether the event frame of topic (topic, NUL, ...) starts with one of
    the prefixes, as ZeroMQ decides.                                      */
static bool s_selected(const s_all_t *a, const char *topic)
{
    char frame[300];
    size_t tl = strlen(topic);
    memcpy(frame, topic, tl);
    frame[tl] = 0;
    memcpy(frame + tl + 1, "\x02stamp", 6);
    for (size_t i = 0; i < a->n; i++)
        if (a->len[i] <= tl + 7 && memcmp(frame, a->p[i], a->len[i]) == 0)
            return true;
    return false;
}

int main(void)
{
    /*  within: grant covers pattern                                       */
    CHECK(W(">", "a.b") && W(">", ">") && W("broadcast", "x.>"));
    CHECK(W("a.>", "a.b") && W("a.>", "a.b.c") && W("a.>", "a.*") && W("a.>", "a.>"));
    CHECK(!W("a.>", "a") && !W("a.>", ">") && !W("a.>", "b.c") && !W("a.>", "*.b"));
    CHECK(W("a.*", "a.b") && W("a.*", "a.*") && !W("a.*", "a.b.c") && !W("a.*", "a.>"));
    CHECK(W("a.b", "a.b") && !W("a.b", "a.*") && !W("a.b", "a.bc") && !W("a.b", "a"));
    CHECK(W("*.b.>", "x.b.c") && !W("*.b.>", "x.c.d") && W("a.*.c", "a.x.c"));
    CHECK(!W("a.b.c", "a.b") && !W("work.>", "broadcast"));

    /*  the broker's own topics                                            */
    CHECK(nx_perm_broker_topic("work.claimed", 12) && nx_perm_broker_topic("work.reopened", 13));
    CHECK(!nx_perm_broker_topic("work.progress", 13) && !nx_perm_broker_topic("work", 4));
    CHECK(nx_perm_broker_topic("session.connected", 17));
    CHECK(nx_perm_broker_topic("session.a.b", 11) && nx_perm_broker_topic("session.x", 9));
    CHECK(!nx_perm_broker_topic("session.a.direct", 16));
    CHECK(nx_perm_broker_topic("session.a.direct.x", 18));
    CHECK(!nx_perm_broker_topic("status.update", 13) && !nx_perm_broker_topic("sessions.a", 10));
    CHECK(nx_perm_names_first("work.>", 6, "work.claimed", 12));
    CHECK(nx_perm_names_first("work.claimed", 12, "work.claimed", 12));
    CHECK(!nx_perm_names_first(">", 1, "work.claimed", 12));
    CHECK(!nx_perm_names_first("*.claimed", 9, "work.claimed", 12));
    CHECK(!nx_perm_names_first("workers.>", 9, "work.claimed", 12));

    /*  private namespaces                                                 */
    const char *owner = NULL;
    size_t olen = 0;
    CHECK(nx_perm_private_owner("session.s-5.direct", 18, &owner, &olen) && olen == 3 &&
          memcmp(owner, "s-5", 3) == 0);
    CHECK(!nx_perm_private_owner("session.connected", 17, &owner, &olen));
    CHECK(!nx_perm_private_owner("sessions.a.b", 12, &owner, &olen));

    /*  grant prefixes                                                     */
    char q[NX_PERM_PREFIX_MAX];
    size_t qlen = 99;
    CHECK(nx_perm_grant_prefix(">", 1, q, &qlen) && qlen == 0);
    CHECK(nx_perm_grant_prefix("a.b.>", 5, q, &qlen) && qlen == 4 && memcmp(q, "a.b.", 4) == 0);
    CHECK(nx_perm_grant_prefix("a.b", 3, q, &qlen) && qlen == 4 && memcmp(q, "a.b\0", 4) == 0);
    CHECK(!nx_perm_grant_prefix("a.*", 3, q, &qlen) && !nx_perm_grant_prefix("*.b.>", 5, q, &qlen));

    /*  The ladder from "" for "session.": every topic but session.* is
        selected, and nothing under session. is.                          */
    s_all_t all = {0};
    size_t n = nx_perm_ladder("session.", 8, 0, s_keep, &all);
    CHECK(n == all.n && n > 100 && n < 1300);
    const char *yes[] = {"work.claimed", "s",         "se",        "session",
                         "sessions.x",   "sessio.n",  "s.x",       "x",
                         "métrique.cpu", "SESSION.a", "sEssion.x", "session-x"};
    const char *no[] = {"session.connected", "session.a.direct", "session.x"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CHECK(s_selected(&all, yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECK(!s_selected(&all, no[i]));
    for (size_t i = 0; i < all.n; i++)
        free(all.p[i]);
    all.n = 0;
    /*  From "sess": only what starts with sess.                          */
    nx_perm_ladder("session.", 8, 4, s_keep, &all);
    CHECK(s_selected(&all, "sessx") && s_selected(&all, "sess") && s_selected(&all, "session"));
    CHECK(!s_selected(&all, "session.y") && !s_selected(&all, "work"));
    for (size_t i = 0; i < all.n; i++)
        free(all.p[i]);
    free(all.p);
    free(all.len);
    NX_TEST_DONE();
}
