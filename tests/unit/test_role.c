/*  =========================================================================
    test_role - the role table, transition by transition, and the role
    file: a standby promotes on winning the election or on the operator's
    word (never both ways: with etcd only etcd decides); a primary takes
    writes only while its lease runs, is fenced by a lost lease, by another
    leader and by a newer epoch (never by its own or an older one), and
    restarts to follow; a fenced broker that wins again resumes; messages
    with an epoch older than one seen are refused. The file round-trips,
    and a file that does not parse is an error, not a guess.
    =========================================================================
*/

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_role.h"
#include "nx_test.h"

static void s_test_manual(void)
{
    nx_role_state_t st;
    nx_role_init(&st, NX_ROLE_STANDBY, 4, false, "tcp://a:8451");
    CHECK(!nx_role_writable(&st, 0));
    /*  The same primary again: nothing to do; another: follow it.         */
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FOLLOW, 4, "tcp://a:8451", 0), NX_RA_NONE);
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FOLLOW, 4, "tcp://c:8451", 0), NX_RA_FOLLOW);
    CHECK_EQ_STR(st.primary, "tcp://c:8451");
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FOLLOW, 3, "tcp://d:8451", 0), NX_RA_REFUSE);
    CHECK_EQ_STR(st.primary, "tcp://c:8451");
    /*  Lease events mean nothing to a standby.                            */
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LOST, 0, NULL, 0), NX_RA_NONE);
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_PROMOTE, 0, NULL, 0), NX_RA_PROMOTE);
    CHECK_EQ_U64(st.role, NX_ROLE_PRIMARY);
    CHECK_EQ_U64(st.epoch, 5);
    CHECK_EQ_STR(st.primary, "");
    /*  No lease without etcd: writable until fenced.                      */
    CHECK(nx_role_writable(&st, UINT64_MAX - 1));
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LOST, 0, NULL, 0), NX_RA_NONE);
    CHECK(nx_role_writable(&st, 1));
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_PROMOTE, 0, NULL, 0), NX_RA_REFUSE);
    /*  Its own epoch, or an older one, does not fence it.                 */
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FENCE, 5, "tcp://c:8451", 0), NX_RA_REFUSE);
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FENCE, 4, "tcp://c:8451", 0), NX_RA_REFUSE);
    CHECK(nx_role_writable(&st, 1));
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FENCE, 6, "tcp://c:8451", 0), NX_RA_RESTART);
    CHECK_EQ_U64(st.role, NX_ROLE_FENCED);
    CHECK(!nx_role_writable(&st, 1));
    CHECK_EQ_STR(st.primary, "tcp://c:8451");
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_PROMOTE, 0, NULL, 0), NX_RA_REFUSE);
}

static void s_test_etcd(void)
{
    nx_role_state_t st;
    nx_role_init(&st, NX_ROLE_STANDBY, 0, true, NULL);
    /*  With etcd, the operator's promote is refused: etcd decides.       */
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_PROMOTE, 0, NULL, 0), NX_RA_REFUSE);
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LEAD, 7, NULL, 0), NX_RA_PROMOTE);
    CHECK_EQ_U64(st.epoch, 7);
    /*  A leader without a lease yet takes no writes.                      */
    CHECK(!nx_role_writable(&st, 10));
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LEASE, 0, NULL, 1000), NX_RA_NONE);
    CHECK(nx_role_writable(&st, 999));
    CHECK(!nx_role_writable(&st, 1000));
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LOST, 0, NULL, 0), NX_RA_FENCE);
    CHECK(!nx_role_writable(&st, 10));
    /*  Nobody else led meanwhile: it wins again and resumes.              */
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LEAD, 8, NULL, 0), NX_RA_RESUME);
    CHECK_EQ_U64(st.role, NX_ROLE_PRIMARY);
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LEASE, 0, NULL, 2000), NX_RA_NONE);
    /*  Another leader: fenced at once, restarts to follow it.             */
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_FOLLOW, 9, "tcp://b:8451", 0), NX_RA_RESTART);
    CHECK(!nx_role_writable(&st, 10));
    CHECK_EQ_STR(st.primary, "tcp://b:8451");
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LEASE, 0, NULL, 5000), NX_RA_NONE);
    CHECK(!nx_role_writable(&st, 10));
    CHECK_EQ_U64(nx_role_apply(&st, NX_RE_LEAD, 8, NULL, 0), NX_RA_REFUSE);
}

static void s_test_file(void)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/nexus-role-test.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    nx_role_t role = NX_ROLE_FENCED;
    uint64_t epoch = 99;
    char primary[256] = "x", err[256] = "";
    CHECK_EQ_U64(nx_role_file_read(dir, &role, &epoch, primary, sizeof primary, err, sizeof err),
                 0);
    CHECK_EQ_U64(nx_role_file_write(dir, NX_ROLE_STANDBY, 12, "tcp://10.0.0.2:8451"), 0);
    CHECK_EQ_U64(nx_role_file_read(dir, &role, &epoch, primary, sizeof primary, err, sizeof err),
                 1);
    CHECK_EQ_U64(role, NX_ROLE_STANDBY);
    CHECK_EQ_U64(epoch, 12);
    CHECK_EQ_STR(primary, "tcp://10.0.0.2:8451");
    CHECK_EQ_U64(nx_role_file_write(dir, NX_ROLE_PRIMARY, 13, NULL), 0);
    CHECK_EQ_U64(nx_role_file_read(dir, &role, &epoch, primary, sizeof primary, err, sizeof err),
                 1);
    CHECK_EQ_U64(role, NX_ROLE_PRIMARY);
    CHECK_EQ_U64(epoch, 13);
    char path[128];
    snprintf(path, sizeof path, "%s/role", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("leader of the pack\n", f);
        fclose(f);
    }
    CHECK_EQ_U64(nx_role_file_read(dir, &role, &epoch, primary, sizeof primary, err, sizeof err),
                 (uint64_t)-1);
    CHECK(strstr(err, "role") != NULL);
    unlink(path);
    CHECK(rmdir(dir) == 0);
    /*  A directory that cannot be written: an error.                      */
    CHECK_EQ_U64(nx_role_file_write("/nonexistent/dir", NX_ROLE_PRIMARY, 1, NULL), (uint64_t)-1);
}

int main(void)
{
    s_test_manual();
    s_test_etcd();
    s_test_file();
    NX_TEST_DONE();
}
