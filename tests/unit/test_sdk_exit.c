/*  =========================================================================
    test_sdk_exit - a program that exits with its clients alive.

    exit(3) on an error path, or a return from main, with a connected
    client that is subscribed and has an asynchronous publish in flight,
    used to abort the process (SIGABRT): CZMQ's exit handler closed the
    client's sockets under its background thread. libnexus's own exit
    handler now stops every live client first. Each case runs this program
    again as a child (fork + exec, nothing shared) and checks that the
    child's exit status is the one it asked for and that it said nothing
    about dangling sockets or failed assertions. The broker is the real
    nexusd (test_sdk_harness.h).
    =========================================================================
*/

#include <fcntl.h>
#include <pthread.h>

#include "nx_test.h"
#include "test_sdk_harness.h"

static th_broker_t s_broker;

/*  A global: the child's clients stay reachable, so that LeakSanitizer,
    run after the exit handlers, does not count their memory as leaked
    (a program that never destroys its client keeps it to the end).      */
static nexus_client_t *s_kept[2];

static void *s_receiver(void *arg)
{
    nexus_event_t *ev = NULL;
    /*  Blocked here when the process exits: woken, closed.               */
    while (nexus_recv(arg, -1, &ev) == NEXUS_OK)
        nexus_event_destroy(&ev);
    return NULL;
}

static void s_done(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg)
{
    (void)err, (void)seq, (void)ts, (void)arg;
}

/*  exit() from an event callback: on the client's own background
    thread, which the exit handler cannot join. It waits until the main
    thread no longer uses the client (a program whose other threads are
    inside a library's calls when it exits has a race of its own).        */
static volatile int s_cb_started, s_main_parked;

static void s_exit_in_callback(nexus_event_t *ev, void *arg)
{
    (void)ev, (void)arg;
    __atomic_store_n(&s_cb_started, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 1000 && !__atomic_load_n(&s_main_parked, __ATOMIC_SEQ_CST); i++)
        usleep(10 * 1000);
    exit(5);
}

/*  The child: how it leaves is argv[2].                                   */
static int s_child(const char *endpoint, const char *how)
{
    nexus_client_t *c = nexus_client_new();
    s_kept[0] = c;
    nexus_client_set_endpoint(c, endpoint);
    nexus_client_set_timeout(c, 2000);
    if (strcmp(how, "callback") == 0) {
        nexus_client_set_callback(c, s_exit_in_callback, NULL);
        if (nexus_client_connect(c) != NEXUS_OK || nexus_subscribe(c, "exit.cb") != NEXUS_OK)
            return 10;
        uint64_t seq;
        for (int i = 0; i < 50 && !__atomic_load_n(&s_cb_started, __ATOMIC_SEQ_CST); i++) {
            nexus_publish_acked(c, "exit.cb", "1", 1, &seq, NULL); /* until subscribed */
            usleep(100 * 1000);
        }
        if (!__atomic_load_n(&s_cb_started, __ATOMIC_SEQ_CST))
            return 12; /* the callback never ran */
        __atomic_store_n(&s_main_parked, 1, __ATOMIC_SEQ_CST);
        sleep(15); /* the callback's exit ends the process first */
        return 13;
    }
    if (strcmp(how, "unreachable") != 0) {
        if (nexus_client_connect(c) != NEXUS_OK || nexus_subscribe(c, "exit.>") != NEXUS_OK)
            return 10;
        nexus_publish_async(c, "exit.a", "1", 1, s_done, NULL);
        /*  A second client, in callback-less receive on another thread.   */
        nexus_client_t *r = nexus_client_new();
        s_kept[1] = r;
        nexus_client_set_endpoint(r, endpoint);
        if (nexus_client_connect(r) != NEXUS_OK || nexus_subscribe(r, "exit.>") != NEXUS_OK)
            return 11;
        pthread_t t;
        pthread_create(&t, NULL, s_receiver, r);
        pthread_detach(t);
        usleep(100 * 1000);
    } else
        nexus_client_connect(c); /* fails: nobody listens there */
    if (strcmp(how, "return") == 0)
        return 0;
    exit(3);
}

/*  Runs this program as a child; returns its wait status, its stderr in
    err (NUL-terminated).                                                   */
static int s_run_child(const char *self, const char *endpoint, const char *how, char *err,
                       size_t size)
{
    char path[] = "/tmp/nexus-sdk-exit-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, 1); /* CZMQ logs to stdout */
        dup2(fd, 2);
        execl(self, self, endpoint, how, (char *)NULL);
        _exit(127);
    }
    int status = -1;
    uint64_t deadline = th_ms() + 20000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (th_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "child '%s' did not exit within 20 s\n", how);
            break;
        }
        usleep(10 * 1000);
    }
    ssize_t n = pread(fd, err, size - 1, 0);
    err[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(path);
    return status;
}

int main(int argc, char **argv)
{
    if (argc == 3)
        return s_child(argv[1], argv[2]);
    signal(SIGPIPE, SIG_IGN);
    CHECK(th_start(&s_broker) == 0);
    char err[8192];
    struct {
        const char *how;
        int code;
    } cases[] = {{"exit", 3}, {"return", 0}, {"unreachable", 3}, {"callback", 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *ep =
            strcmp(cases[i].how, "unreachable") ? s_broker.endpoint : "tcp://127.0.0.1:9";
        int status = s_run_child(argv[0], ep, cases[i].how, err, sizeof err);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != cases[i].code)
            fprintf(stderr, "child '%s': status %#x, stderr:\n%s\n", cases[i].how, status, err);
        CHECK(WIFEXITED(status));
        CHECK_EQ_U64(WEXITSTATUS(status), (uint64_t)cases[i].code);
        CHECK(strstr(err, "dangling") == NULL);
        CHECK(strstr(err, "Assertion") == NULL);
    }
    th_stop(&s_broker);
    th_cleanup(&s_broker, nx_test_failures > 0);
    NX_TEST_DONE();
}
