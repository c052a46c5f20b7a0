/*  =========================================================================
    test_auth - tokens: open without any; the shared token; a tokens file
    whose tokens act only as the sessions they list ('*' = any), and which
    of them name a session as its own credential; bad files refused with
    the line. The second format: names, CURVE keys, pub= and sub=, what
    each token may publish and read, and the ZeroMQ prefixes a restricted
    subscriber gets (checked by which topics they select). A real file in
    a temporary directory.
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_auth.h"
#include "nx_test.h"

static const void *s_check(nx_auth_t *auth, const char *token, nexus_err_t want)
{
    const void *handle = (const void *)1;
    CHECK(nx_auth_check(auth, token, token ? strlen(token) : 0, &handle) == want);
    return handle;
}

typedef struct {
    char p[2048][NX_PERM_PREFIX_MAX];
    size_t len[2048];
    size_t n;
} s_got_t;

static void s_collect(void *arg, const char *prefix, size_t len)
{
    s_got_t *got = arg;
    if (got->n < 2048) {
        memcpy(got->p[got->n], prefix, len);
        got->len[got->n++] = len;
    }
}

/*  Whether the event frame of topic (topic, NUL, the rest) is selected by
    one of the prefixes, as ZeroMQ decides.                               */
static bool s_selected(const s_got_t *got, const char *topic)
{
    char frame[300];
    size_t tl = strlen(topic);
    memcpy(frame, topic, tl);
    memcpy(frame + tl, "\0\2stamp", 7);
    for (size_t i = 0; i < got->n; i++)
        if (got->len[i] <= tl + 7 && memcmp(frame, got->p[i], got->len[i]) == 0)
            return true;
    return false;
}

/*  The prefixes token h gets for prefix p.                               */
static s_got_t *s_prefixes(nx_auth_t *auth, const void *h, const char *p)
{
    static s_got_t got;
    got.n = 0;
    nx_auth_sub_prefixes(auth, h, p, strlen(p), s_collect, &got);
    return &got;
}

#define PUB(h, t)  nx_auth_may_publish(file, h, t, strlen(t))
#define READ(h, t) nx_auth_may_read(file, h, t, strlen(t))
#define SUB(h, t)  nx_auth_may_subscribe(file, h, t, strlen(t))


int main(void)
{
    char err[256] = "";
    nx_auth_t *open = nx_auth_new(NULL, "", err, sizeof err);
    CHECK(open && !nx_auth_enabled(open));
    CHECK(s_check(open, NULL, NEXUS_OK) == NULL);
    CHECK(nx_auth_allows(open, NULL, "anyone", 6));
    CHECK(!nx_auth_names(open, NULL, "anyone", 6));
    nx_auth_destroy(&open);
    CHECK(open == NULL);

    nx_auth_t *shared = nx_auth_new("s3cret", NULL, err, sizeof err);
    CHECK(shared && nx_auth_enabled(shared));
    CHECK(s_check(shared, "s3cret", NEXUS_OK) == NULL);
    s_check(shared, "s3cre", NEXUS_ERR_UNAUTHORIZED);
    s_check(shared, NULL, NEXUS_ERR_UNAUTHORIZED);
    CHECK(!nx_auth_names(shared, NULL, "w1", 2));
    nx_auth_destroy(&shared);

    char dir[] = "/tmp/nx-auth-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300];
    snprintf(path, sizeof path, "%s/tokens", dir);
    nx_test_write_file(path, "# workers\nTOK1 w1,w2\n\nTOKANY *\nTOKMIX w3,*\n");
    nx_auth_t *file = nx_auth_new(NULL, path, err, sizeof err);
    CHECK(file && nx_auth_enabled(file));
    const void *t1 = s_check(file, "TOK1", NEXUS_OK);
    const void *any = s_check(file, "TOKANY", NEXUS_OK);
    const void *mix = s_check(file, "TOKMIX", NEXUS_OK);
    s_check(file, "TOK", NEXUS_ERR_UNAUTHORIZED);
    s_check(file, "TOK1 ", NEXUS_ERR_UNAUTHORIZED);
    CHECK(nx_auth_allows(file, t1, "w1", 2) && nx_auth_allows(file, t1, "w2", 2));
    CHECK(!nx_auth_allows(file, t1, "w", 1) && !nx_auth_allows(file, t1, "w12", 3));
    CHECK(nx_auth_allows(file, any, "whoever", 7));
    /*  Named: the session's own credential; '*' is no one's.              */
    CHECK(nx_auth_names(file, t1, "w1", 2) && nx_auth_names(file, t1, "w2", 2));
    CHECK(!nx_auth_names(file, t1, "w3", 2));
    CHECK(!nx_auth_names(file, any, "w1", 2));
    CHECK(nx_auth_names(file, mix, "w3", 2) && !nx_auth_names(file, mix, "w1", 2));
    CHECK(nx_auth_allows(file, mix, "w1", 2));
    /*  Sole: only a token that can be exactly one session.                 */
    CHECK(nx_auth_sole(file, t1) == NULL && nx_auth_sole(file, any) == NULL);
    CHECK(nx_auth_sole(file, mix) == NULL && nx_auth_sole(file, NULL) == NULL);
    nx_auth_destroy(&file);
    nx_test_write_file(path, "SOLO w9\nTWICE w8,w8\n");
    file = nx_auth_new(NULL, path, err, sizeof err);
    CHECK(file != NULL);
    const char *sole = nx_auth_sole(file, s_check(file, "SOLO", NEXUS_OK));
    CHECK(sole && strcmp(sole, "w9") == 0);
    sole = nx_auth_sole(file, s_check(file, "TWICE", NEXUS_OK));
    CHECK(sole && strcmp(sole, "w8") == 0);
    nx_auth_destroy(&file);

    /*  The second format, mixed with the first.                          */
    nx_test_write_file(path, "OLD w1,w2\n"
                             "ANY *\n"
                             "CI name=ci sessions=build-1 pub=build.>,work.> sub=build.>,work.claimed\n"
                             "MON name=mon sub=>,session.*.direct pub=\n"
                             "SVC name=svc key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7 sub=a.*.c\n"
                             "ALL name=ops sessions=* sub=session.>\n"
                             "SOLO w9\n"
                             "SOLO2 w9\n"
                             "TWO sessions=w9 pub=x.>\n");
    file = nx_auth_new(NULL, path, err, sizeof err);
    CHECK(file != NULL);
    if (!file) {
        fprintf(stderr, "%s\n", err);
        NX_TEST_DONE();
    }
    const void *old = s_check(file, "OLD", NEXUS_OK), *anyt = s_check(file, "ANY", NEXUS_OK);
    const void *ci = s_check(file, "CI", NEXUS_OK), *mon = s_check(file, "MON", NEXUS_OK);
    const void *svc = s_check(file, "SVC", NEXUS_OK), *ops = s_check(file, "ALL", NEXUS_OK);
    const void *solo = s_check(file, "SOLO", NEXUS_OK), *solo2 = s_check(file, "SOLO2", NEXUS_OK);
    const void *two = s_check(file, "TWO", NEXUS_OK);
    /*  Names: given, the one session, else the line; never the token.     */
    CHECK_EQ_STR(nx_auth_name(file, ci), "ci");
    CHECK_EQ_STR(nx_auth_name(file, old), "token-L1");
    CHECK_EQ_STR(nx_auth_name(file, anyt), "token-L2");
    CHECK_EQ_STR(nx_auth_name(file, solo), "w9");
    CHECK_EQ_STR(nx_auth_name(file, solo2), "w9");     /* same rights: same name */
    CHECK_EQ_STR(nx_auth_name(file, two), "token-L9"); /* w9 is taken        */
    const void *h = NULL;
    CHECK(nx_auth_by_name(file, "ci", &h) && h == ci);
    CHECK(nx_auth_by_name(file, "w9", &h) && h == solo);
    CHECK(!nx_auth_by_name(file, "CI", &h) && !nx_auth_by_name(file, "shared", &h));
    CHECK(nx_auth_by_key(file, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", &h) && h == svc);
    CHECK(nx_auth_by_name(file, "svc", &h) && h == svc);
    CHECK(!nx_auth_by_key(file, "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", &h));
    /*  A CURVE key no line names gets the defaults.                       */
    CHECK(nx_auth_by_name(file, "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", &h) && h != NULL);
    CHECK(nx_auth_may_publish(file, h, "a.b", 3) && !nx_auth_allows(file, h, "w1", 2));
    CHECK(!nx_auth_may_read(file, h, "session.w1.direct", 17));
    /*  Sessions: the first format as before; the second needs sessions=. */
    CHECK(nx_auth_allows(file, old, "w2", 2) && !nx_auth_allows(file, mon, "w2", 2));
    CHECK(nx_auth_allows(file, ci, "build-1", 7) && nx_auth_names(file, ci, "build-1", 7));

    /*  Publishing: the broker's topics need a grant that names them.      */
    CHECK(PUB(old, "repo.x") && PUB(old, "status.update") && PUB(old, "session.w5.direct"));
    CHECK(!PUB(old, "work.claimed") && !PUB(old, "session.connected") &&
          !PUB(anyt, "work.released"));
    CHECK(PUB(old, "work.progress"));
    CHECK(PUB(ci, "build.done") && PUB(ci, "work.claimed") && !PUB(ci, "repo.x"));
    CHECK(!PUB(mon, "a") && !PUB(mon, "session.w1.direct"));
    CHECK(nx_auth_may_publish(file, NULL, "x.y", 3) &&
          !nx_auth_may_publish(file, NULL, "work.completed", 14));
    /*  Sources: the name, or a session it may act as.                     */
    CHECK(nx_auth_may_source(file, ci, "ci", 2) && nx_auth_may_source(file, ci, "build-1", 7));
    CHECK(!nx_auth_may_source(file, ci, "build-2", 7) &&
          !nx_auth_may_source(file, ci, "nexusd", 6));
    CHECK(nx_auth_may_source(file, anyt, "anyone", 6) && !nx_auth_may_source(file, anyt, "a b", 3));
    CHECK(nx_auth_may_source(file, ci, "", 0));

    /*  Reading: sub= and privacy.                                         */
    CHECK(READ(old, "repo.x") && READ(old, "work.claimed") && READ(old, "session.connected"));
    CHECK(READ(old, "session.w1.direct") && READ(old, "session.w2.x.y"));
    CHECK(!READ(old, "session.w3.direct") && !READ(solo, "session.w1.direct"));
    CHECK(READ(anyt, "session.w3.direct") && READ(ops, "session.w3.direct"));
    CHECK(READ(mon, "session.w3.direct") && !READ(mon, "session.w3.other"));
    CHECK(READ(ci, "build.x") && READ(ci, "work.claimed") && !READ(ci, "work.released"));
    CHECK(!READ(ci, "session.connected") && !READ(ci, "session.build-1.direct"));
    CHECK(READ(svc, "a.b.c") && !READ(svc, "a.b.d"));
    CHECK(SUB(old, ">") && SUB(ci, "build.>") && SUB(ci, "build.x.*") && !SUB(ci, ">"));
    CHECK(SUB(ci, "work.claimed") && !SUB(ci, "work.*") && SUB(svc, "a.x.c") && !SUB(svc, "a.>"));
    char desc[128];
    CHECK_EQ_STR(nx_auth_describe(file, ci, false, desc, sizeof desc), "build.>,work.>");
    CHECK_EQ_STR(nx_auth_describe(file, mon, false, desc, sizeof desc), "");

    /*  ZeroMQ prefixes.                                                   */
    CHECK(!nx_auth_sub_restricted(file, anyt) && !nx_auth_sub_restricted(file, NULL));
    CHECK(nx_auth_sub_restricted(file, ops) && nx_auth_sub_restricted(file, old));
    s_got_t *g = s_prefixes(file, anyt, "");
    CHECK(g->n == 1 && g->len[0] == 0);
    /*  OLD (w1, w2, sub=>) asks for everything: it gets everything but
        other sessions' private topics.                                     */
    g = s_prefixes(file, old, "");
    CHECK(g->n > 100);
    const char *old_yes[] = {"work.claimed",
                             "repo.x",
                             "session.connected",
                             "session.disconnected",
                             "session.w1.direct",
                             "session.w2.a.b",
                             "s",
                             "session",
                             "sessions.a"};
    const char *old_no[] = {"session.w3.direct", "session.w1x.direct", "session.connected.x",
                            "session.other"};
    for (size_t i = 0; i < sizeof old_yes / sizeof old_yes[0]; i++)
        CHECK(s_selected(g, old_yes[i]));
    for (size_t i = 0; i < sizeof old_no / sizeof old_no[0]; i++)
        CHECK(!s_selected(g, old_no[i]));
    g = s_prefixes(file, old, "session.");
    CHECK(s_selected(g, "session.w1.direct") && !s_selected(g, "session.w3.direct"));
    CHECK(s_selected(g, "session.connected") && !s_selected(g, "work.x"));
    g = s_prefixes(file, old, "session.w3.");
    CHECK(g->n == 0);
    g = s_prefixes(file, old, "session.w1.");
    CHECK(g->n == 1 && g->len[0] == 11);
    g = s_prefixes(file, old, "work.");
    CHECK(g->n == 1 && g->len[0] == 5);
    g = s_prefixes(file, old, "session.connected");
    CHECK(g->n == 1 && g->len[0] == 18); /* exactly the topic                */
    /*  CI asks for everything: it gets its grants.                         */
    g = s_prefixes(file, ci, "");
    CHECK(g->n == 2 && s_selected(g, "build.x") && s_selected(g, "work.claimed"));
    CHECK(!s_selected(g, "work.claimedx") && !s_selected(g, "work.released"));
    g = s_prefixes(file, ci, "build.a.");
    CHECK(g->n == 1 && g->len[0] == 8);
    g = s_prefixes(file, ci, "repo.");
    CHECK(g->n == 0);
    g = s_prefixes(file, ci, "work.claimed");
    CHECK(g->n == 1 && s_selected(g, "work.claimed") && !s_selected(g, "work.claimed.x"));
    /*  SVC (sub=a.*.c): only exact topics can be had on the event plane.   */
    g = s_prefixes(file, svc, "a.");
    CHECK(g->n == 0);
    g = s_prefixes(file, svc, "a.b.c");
    CHECK(g->n == 1 && s_selected(g, "a.b.c") && !s_selected(g, "a.b.cd"));
    /*  MON's session.*.direct has no prefix: the exact topic it asks for.  */
    g = s_prefixes(file, mon, "session.w3.direct");
    CHECK(g->n == 1 && s_selected(g, "session.w3.direct") && !s_selected(g, "session.w3.directx"));
    g = s_prefixes(file, mon, "session.w3.");
    CHECK(g->n == 0);
    g = s_prefixes(file, mon, "");
    CHECK(!s_selected(g, "session.w3.direct") && s_selected(g, "session.connected"));
    /*  A raw prefix with a NUL: one topic exactly, when it may read it.    */
    CHECK(nx_auth_sub_prefixes(file, old, "repo.x\0", 7, s_collect, g) == 1);
    CHECK(nx_auth_sub_prefixes(file, old, "session.w3.direct\0", 18, s_collect, g) == 0);
    CHECK(nx_auth_sub_prefixes(file, old, "repo.x\0junk", 11, s_collect, g) == 0);
    /*  What an unsubscribe must leave alone.                              */
    CHECK(nx_auth_prefix_shared(file, old, "s", 1) && nx_auth_prefix_shared(file, old, "sx", 2));
    CHECK(nx_auth_prefix_shared(file, old, "session.w1.", 11));
    CHECK(nx_auth_prefix_shared(file, ci, "build.", 6) &&
          !nx_auth_prefix_shared(file, ci, "build.a.", 8));
    CHECK(!nx_auth_prefix_shared(file, old, "work.", 5));
    CHECK(!nx_auth_prefix_shared(file, anyt, "s", 1));
    nx_auth_destroy(&file);

    /*  The first format takes any text as a session: one that is not an
        id ("w.x", found by fuzz_tokens) owns no namespace, so its token
        never gets a prefix under session.w. (session w's).                */
    nx_test_write_file(path, "T w.x\n");
    file = nx_auth_new(NULL, path, err, sizeof err);
    CHECK(file != NULL);
    if (file) {
        const void *dotted = s_check(file, "T", NEXUS_OK);
        g = s_prefixes(file, dotted, "session");
        CHECK(!s_selected(g, "session.w.x.direct") && s_selected(g, "session.connected"));
        CHECK(!READ(dotted, "session.w.x.direct"));
        nx_auth_destroy(&file);
    }

    /*  Bad second-format lines, each named by its line.                   */
    const char *bad[] = {"T name=a name=b\n",
                         "T sessions=bad.id\n",
                         "T pub=a..b\n",
                         "T sub=a.>.b\n",
                         "T colour=red\n",
                         "T key=short\n",
                         "T name=shared\n",
                         "T name=has/slash\n",
                         "T w1 extra\n",
                         "T name=x\nU name=x pub=a\n",
                         "T key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n"
                         "U key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n",
                         "T name=abcdefghijabcdefghijabcdefghijabc\n",
                         /*  One token on two lines got the first's rights
                             only: refused, naming the other line.        */
                         "T name=x pub=a.>\nT name=y pub=b.>\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nx_test_write_file(path, bad[i]);
        err[0] = 0;
        nx_auth_t *a = nx_auth_new(NULL, path, err, sizeof err);
        CHECK(a == NULL);
        CHECK(strstr(err, "tokens:") != NULL);
        if (a) {
            fprintf(stderr, "accepted: %s", bad[i]);
            nx_auth_destroy(&a);
        }
    }
    /*  A line whose token is the shared one: it would have every right,
        whatever the line says. Refused.                                   */
    nx_test_write_file(path, "s3cret name=lim pub=a.> sub=a.>\n");
    err[0] = 0;
    nx_auth_t *same = nx_auth_new("s3cret", path, err, sizeof err);
    CHECK(same == NULL && strstr(err, "shared token") != NULL);
    nx_auth_destroy(&same);
    nx_test_write_file(path, "T name=x pub=a.>\nT name=y pub=b.>\n");
    nx_auth_t *dup = nx_auth_new(NULL, path, err, sizeof err);
    CHECK(dup == NULL && strstr(err, ":2: this token is on line 1 too") != NULL);
    nx_auth_destroy(&dup);
    /*  The shared token's rights; an open fabric allows all.              */
    shared = nx_auth_new("s3cret", NULL, err, sizeof err);
    CHECK_EQ_STR(nx_auth_name(shared, NULL), "shared");
    CHECK(nx_auth_by_name(shared, "shared", &h) && h == NULL);
    CHECK(!nx_auth_may_publish(shared, NULL, "work.claimed", 12));
    CHECK(nx_auth_may_source(shared, NULL, "agent-b", 7) &&
          nx_auth_may_source(shared, NULL, "shared", 6));
    CHECK(!nx_auth_may_source(shared, NULL, "not an id", 9));
    CHECK(nx_auth_may_read(shared, NULL, "session.a.direct", 16));
    nx_auth_destroy(&shared);
    open = nx_auth_new(NULL, NULL, err, sizeof err);
    CHECK(nx_auth_may_publish(open, NULL, "work.claimed", 12));
    CHECK(!nx_auth_sub_restricted(open, NULL));
    CHECK_EQ_STR(nx_auth_name(open, NULL), "");
    nx_auth_destroy(&open);

    nx_test_write_file(path, "TOK1 w1\nTOK2\n");
    err[0] = 0;
    CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
    CHECK(strstr(err, ":2:") != NULL);
    /*  A file with no token would leave the fabric open while its operator
        believes it closed: refused. Beside a shared token it does not (the
        per-session tokens were all revoked): taken.                       */
    const char *empty[] = {"", "\n\n", "# all tokens revoked\n   \n# none yet\n"};
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        nx_test_write_file(path, empty[i]);
        err[0] = 0;
        nx_auth_t *a = nx_auth_new(NULL, path, err, sizeof err);
        CHECK(a == NULL && strstr(err, "holds no token") != NULL);
        nx_auth_destroy(&a);
        a = nx_auth_new("s3cret", path, err, sizeof err);
        CHECK(a != NULL && nx_auth_enabled(a));
        nx_auth_destroy(&a);
    }
    /*  A NUL byte is named as such, not as a long line.                   */
    FILE *nul = fopen(path, "w");
    CHECK(nul != NULL);
    if (nul) {
        fwrite("TOK1 w1\nTOK2\0 w2\n", 1, 18, nul);
        fclose(nul);
    }
    err[0] = 0;
    CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
    CHECK(strstr(err, ":2: a NUL byte") != NULL);
    /*  4094 bytes and a line end (LF or CRLF) are the longest line, as
        before; one byte more is too long.                                 */
    char edge[4100];
    for (int crlf = 0; crlf < 2; crlf++) {
        memset(edge, 'a', 4094);
        memcpy(edge, "T1 ", 3);
        snprintf(edge + 4094, sizeof edge - 4094, "%s", crlf ? "\r\n" : "\n");
        nx_test_write_file(path, edge);
        err[0] = 0;
        nx_auth_t *a = nx_auth_new(NULL, path, err, sizeof err);
        CHECK(a != NULL);
        nx_auth_destroy(&a);
        memset(edge, 'a', 4095);
        memcpy(edge, "T1 ", 3);
        snprintf(edge + 4095, sizeof edge - 4095, "%s", crlf ? "\r\n" : "\n");
        nx_test_write_file(path, edge);
        CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
        CHECK(strstr(err, "line longer than") != NULL);
    }
    /*  A line of 5000 bytes is still named as too long.                   */
    char longline[5002];
    memset(longline, 'a', 5000);
    longline[5000] = '\n';
    longline[5001] = 0;
    nx_test_write_file(path, longline);
    err[0] = 0;
    CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
    CHECK(strstr(err, ":1: line longer than") != NULL);
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot read") != NULL);

    snprintf(path, sizeof path, "%s/tokens", dir);
    unlink(path);
    rmdir(dir);
    NX_TEST_DONE();
}
