/*  =========================================================================
    test_auth - tokens: open without any; the shared token; a tokens file
    whose tokens act only as the sessions they list ('*' = any), and which
    of them name a session as its own credential; bad files refused with
    the line. A real file in a temporary directory.
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

static void s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

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
    s_write(path, "# workers\nTOK1 w1,w2\n\nTOKANY *\nTOKMIX w3,*\n");
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
    s_write(path, "SOLO w9\nTWICE w8,w8\n");
    file = nx_auth_new(NULL, path, err, sizeof err);
    CHECK(file != NULL);
    const char *sole = nx_auth_sole(file, s_check(file, "SOLO", NEXUS_OK));
    CHECK(sole && strcmp(sole, "w9") == 0);
    sole = nx_auth_sole(file, s_check(file, "TWICE", NEXUS_OK));
    CHECK(sole && strcmp(sole, "w8") == 0);
    nx_auth_destroy(&file);

    s_write(path, "TOK1 w1\nTOK2\n");
    err[0] = 0;
    CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
    CHECK(strstr(err, ":2:") != NULL);
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK(nx_auth_new(NULL, path, err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot read") != NULL);

    snprintf(path, sizeof path, "%s/tokens", dir);
    unlink(path);
    rmdir(dir);
    NX_TEST_DONE();
}
