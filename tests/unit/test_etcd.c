/*  =========================================================================
    test_etcd - the etcd client and the elector against a real etcd
    (Debian's etcd-server, started here on free loopback ports with its
    data in a temporary directory; skipped, exit 77, when there is none).

    The client: leases (grant, keepalive, revoke: a key under a revoked
    lease is gone), get/put/delete, a transaction that succeeds only when
    its comparisons hold (create_revision 0, mod_revision, value), a watch
    that sees a put and a delete made at or after its revision and times
    out when nothing happens, and a list of URLs whose first does not
    answer.

    The elector: the first of two brokers leads with epoch 1 and a lease
    that runs; the other follows it; the sync key decides who may take
    over (a standby it does not name waits; `force` takes over anyway);
    a leader that resigns hands over at once with the next epoch; a
    leader whose etcd stops answering loses its lease in time (its writes
    end before etcd could let the key go).
    =========================================================================
*/

#include <arpa/inet.h>
#include <czmq.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nx_elector.h"
#include "nx_etcd.h"
#include "nx_log.h"
#include "nx_test.h"

static char s_dir[64];
static pid_t s_etcd = -1;
static char s_url[64];

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static const char *s_etcd_path(void)
{
    static const char *paths[] = {"/usr/bin/etcd", "/usr/local/bin/etcd", NULL};
    for (int i = 0; paths[i]; i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

static bool s_etcd_start(void)
{
    const char *bin = s_etcd_path();
    if (!bin)
        return false;
    int cport = s_free_port(), pport = s_free_port();
    snprintf(s_url, sizeof s_url, "http://127.0.0.1:%d", cport);
    char peer[64], cluster[96], data[128], log[128];
    snprintf(peer, sizeof peer, "http://127.0.0.1:%d", pport);
    snprintf(cluster, sizeof cluster, "t=%s", peer);
    snprintf(data, sizeof data, "%s/etcd", s_dir);
    snprintf(log, sizeof log, "%s/etcd.log", s_dir);
    s_etcd = fork();
    if (s_etcd == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execl(bin, "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", s_url,
              "--advertise-client-urls", s_url, "--listen-peer-urls", peer,
              "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster, (char *)NULL);
        _exit(127);
    }
    /*  Ready when a read answers (bounded: 20 s).                         */
    nx_etcd_t *e = nx_etcd_new(s_url, 500);
    for (int i = 0; i < 200 && e; i++) {
        nx_etcd_kv_t kv;
        if (nx_etcd_get(e, "/probe", &kv, NULL) == 0) {
            nx_etcd_destroy(&e);
            return true;
        }
        zclock_sleep(100);
    }
    nx_etcd_destroy(&e);
    return false;
}

static void s_etcd_stop(void)
{
    if (s_etcd > 0) {
        kill(s_etcd, SIGCONT);
        kill(s_etcd, SIGTERM);
        waitpid(s_etcd, NULL, 0);
        s_etcd = -1;
    }
}

static void s_test_client(void)
{
    /*  The first URL answers nothing: the second does.                    */
    char urls[160];
    snprintf(urls, sizeof urls, "http://127.0.0.1:%d,%s", s_free_port(), s_url);
    nx_etcd_t *e = nx_etcd_new(urls, 300);
    CHECK(e != NULL);
    if (!e)
        return;
    CHECK(nx_etcd_new("", 100) == NULL);
    nx_etcd_kv_t kv;
    int64_t rev = 0;
    CHECK_EQ_U64(nx_etcd_get(e, "/t/a", &kv, &rev), 0);
    CHECK(!kv.found);
    CHECK(rev > 0);
    CHECK_EQ_STR(nx_etcd_endpoint(e), s_url);
    CHECK_EQ_U64(nx_etcd_put(e, "/t/a", "one", 0), 0);
    CHECK_EQ_U64(nx_etcd_get(e, "/t/a", &kv, NULL), 0);
    CHECK(kv.found);
    CHECK_EQ_STR(kv.value, "one");
    CHECK(kv.create_rev > 0 && kv.mod_rev == kv.create_rev);

    /*  Transactions: only when the comparisons hold.                      */
    bool ok = true;
    nx_etcd_cmp_t absent = {"/t/a", NX_ETCD_CREATE, 0, NULL};
    nx_etcd_op_t put = {false, "/t/a", "two", 0};
    CHECK_EQ_U64(nx_etcd_txn(e, &absent, 1, &put, 1, &ok), 0);
    CHECK(!ok);
    nx_etcd_cmp_t same = {"/t/a", NX_ETCD_MOD, kv.mod_rev, NULL};
    CHECK_EQ_U64(nx_etcd_txn(e, &same, 1, &put, 1, &ok), 0);
    CHECK(ok);
    CHECK_EQ_U64(nx_etcd_txn(e, &same, 1, &put, 1, &ok), 0);
    CHECK(!ok); /* the revision moved */
    nx_etcd_cmp_t value = {"/t/a", NX_ETCD_VALUE, 0, "two"};
    nx_etcd_op_t del = {true, "/t/a", NULL, 0};
    CHECK_EQ_U64(nx_etcd_txn(e, &value, 1, &del, 1, &ok), 0);
    CHECK(ok);
    CHECK_EQ_U64(nx_etcd_get(e, "/t/a", &kv, &rev), 0);
    CHECK(!kv.found);

    /*  Leases.                                                            */
    int64_t id = 0, ttl = 0, left = 0;
    CHECK_EQ_U64(nx_etcd_grant(e, 5, &id, &ttl), 0);
    CHECK(id != 0 && ttl >= 5);
    CHECK_EQ_U64(nx_etcd_keepalive(e, id, &left), 0);
    CHECK(left > 0);
    CHECK_EQ_U64(nx_etcd_put(e, "/t/leased", "x", id), 0);
    CHECK_EQ_U64(nx_etcd_get(e, "/t/leased", &kv, NULL), 0);
    CHECK(kv.found && kv.lease == id);

    /*  A watch sees a delete (the lease revoked) made after its revision. */
    CHECK_EQ_U64(nx_etcd_get(e, "/t/leased", &kv, &rev), 0);
    CHECK_EQ_U64(nx_etcd_revoke(e, id), 0);
    nx_etcd_event_t ev;
    CHECK_EQ_U64(nx_etcd_watch(e, "/t/leased", rev + 1, 3000, &ev), 1);
    CHECK(ev.deleted);
    CHECK_EQ_U64(nx_etcd_keepalive(e, id, &left), 0);
    CHECK_EQ_U64(left, 0);
    /*  ... and a put; and nothing, in time.                               */
    CHECK_EQ_U64(nx_etcd_get(e, "/t/w", &kv, &rev), 0);
    CHECK_EQ_U64(nx_etcd_put(e, "/t/w", "seen", 0), 0);
    CHECK_EQ_U64(nx_etcd_watch(e, "/t/w", rev + 1, 3000, &ev), 1);
    CHECK(!ev.deleted && ev.kv.found);
    CHECK_EQ_STR(ev.kv.value, "seen");
    CHECK_EQ_U64(nx_etcd_get(e, "/t/w", &kv, &rev), 0);
    uint64_t t0 = nx_mono_us();
    CHECK_EQ_U64(nx_etcd_watch(e, "/t/w", rev + 1, 400, &ev), 0);
    CHECK(nx_mono_us() - t0 < 2000000);
    nx_etcd_destroy(&e);

    /*  No URL answers: an error that says why.                            */
    char dead[64];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", s_free_port());
    e = nx_etcd_new(dead, 200);
    CHECK(nx_etcd_get(e, "/t/a", &kv, NULL) == -1);
    CHECK(strstr(nx_etcd_error(e), "127.0.0.1") != NULL);
    nx_etcd_destroy(&e);
}

/*  Waits up to ms for news of kind; returns it in *n.                     */
static bool s_news(nx_elector_t *el, nx_elect_kind_t kind, int ms, nx_elect_news_t *n)
{
    uint64_t until = nx_mono_us() + (uint64_t)ms * 1000;
    while (nx_mono_us() < until) {
        zmq_pollitem_t item = {zsock_resolve(nx_elector_sock(el)), 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 50);
        while (nx_elector_recv(el, n) == 0)
            if (n->kind == kind)
                return true;
    }
    return false;
}

static nx_elector_t *s_elector(const char *name, const char *endpoint)
{
    nx_elector_config_t cfg = {s_url, "/nexus-test", name, endpoint, NULL, 2000, 0};
    nx_elector_t *el = nx_elector_new(&cfg);
    CHECK(el != NULL);
    return el;
}

static void s_test_elector(void)
{
    nx_elect_news_t n;
    nx_elector_t *a = s_elector("a", "tcp://a:8451");
    CHECK(s_news(a, NX_ELECT_LEAD, 5000, &n));
    CHECK_EQ_U64(n.epoch, 1);
    CHECK(nx_elector_lease_until(a) > nx_mono_us());
    nx_elector_t *b = s_elector("b", "tcp://b:8451");
    CHECK(s_news(b, NX_ELECT_FOLLOW, 5000, &n));
    CHECK_EQ_STR(n.name, "a");
    CHECK_EQ_STR(n.endpoint, "tcp://a:8451");
    CHECK_EQ_STR(n.peer, "tcp://a:8451"); /* no peer endpoint of its own */
    CHECK_EQ_U64(n.epoch, 1);
    CHECK_EQ_U64(nx_elector_lease_until(b), 0);
    /*  The lease is renewed: a still leads after several leases.         */
    zclock_sleep(4500);
    CHECK(nx_elector_lease_until(a) > nx_mono_us());

    /*  The sync key names nobody but a: b may not take over...            */
    nx_elector_sync(a, "");
    CHECK(s_news(a, NX_ELECT_SYNCED, 3000, &n));
    nx_elector_resign(a);
    CHECK(s_news(b, NX_ELECT_PROBLEM, 5000, &n));
    CHECK(strstr(n.text, "may lack") != NULL);
    CHECK_EQ_U64(nx_elector_lease_until(b), 0);
    /*  ... a wins it back (it is the last leader), names b, resigns: b
        takes over at once with the next epoch.                           */
    CHECK(s_news(a, NX_ELECT_LEAD, 5000, &n));
    CHECK_EQ_U64(n.epoch, 2);
    nx_elector_sync(a, "b");
    CHECK(s_news(a, NX_ELECT_SYNCED, 3000, &n));
    CHECK_EQ_STR(n.name, "b");
    uint64_t t0 = nx_mono_us();
    nx_elector_resign(a);
    CHECK(s_news(b, NX_ELECT_LEAD, 5000, &n));
    CHECK_EQ_U64(n.epoch, 3);
    CHECK(nx_mono_us() - t0 < 2000000);
    CHECK(s_news(a, NX_ELECT_FOLLOW, 5000, &n));
    CHECK_EQ_STR(n.name, "b");
    CHECK_EQ_U64(nx_elector_lease_until(a), 0);

    /*  etcd stops answering: b's writes end before its lease could run out
        in etcd (the margin), and it says it lost the leadership.          */
    kill(s_etcd, SIGSTOP);
    uint64_t until = nx_elector_lease_until(b);
    CHECK(until > nx_mono_us());
    CHECK(until <= nx_mono_us() + 2000000);
    CHECK(s_news(b, NX_ELECT_LOST, 6000, &n));
    CHECK_EQ_U64(nx_elector_lease_until(b), 0);
    kill(s_etcd, SIGCONT);
    /*  etcd back: a (named as the standby? no: sync was reset by b's
        election) ... the last leader, b, wins again with a new epoch, or
        a leads when forced.                                               */
    CHECK(s_news(b, NX_ELECT_LEAD, 8000, &n) || s_news(a, NX_ELECT_LEAD, 1, &n));
    nx_elector_destroy(&a);
    nx_elector_destroy(&b);
}

int main(void)
{
    nx_log_init("test_etcd", NX_LOG_WARN);
    if (!s_etcd_path()) {
        printf("no etcd here: skipped (apt-get install etcd-server)\n");
        return 77;
    }
    snprintf(s_dir, sizeof s_dir, "/tmp/nexus-etcd-test.XXXXXX");
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (!s_etcd_start()) {
        fprintf(stderr, "etcd did not start\n");
        s_etcd_stop();
        nx_test_rm_tree(s_dir);
        return 1;
    }
    s_test_client();
    s_test_elector();
    s_etcd_stop();
    nx_test_rm_tree(s_dir);
    NX_TEST_DONE();
}
