/*  =========================================================================
    test_pid - nx_pid's getpid: the kernel's pid, kept; a fork's child gets
    its own; and it is the getpid the process's libraries call (libzmq's
    fork check among them), not libc's.
    =========================================================================
*/

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <zmq.h>

#include "nx_pid.h"
#include "nx_test.h"

static void *s_thread(void *arg)
{
    *(pid_t *)arg = getpid();
    return NULL;
}

int main(void)
{
    pid_t kernel = (pid_t)syscall(SYS_getpid);
    CHECK(getpid() == kernel);
    CHECK(nx_pid_cached());
    CHECK(getpid() == kernel); /* from the cache now */

    /*  Another thread: the process's pid, not the thread's id.            */
    pid_t seen = 0;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, s_thread, &seen) == 0);
    pthread_join(t, NULL);
    CHECK(seen == kernel);

    /*  The symbol the dynamic linker gives every library is this one: the
        program's, found before libc's.                                    */
    void *found = dlsym(RTLD_DEFAULT, "getpid");
    CHECK(found == (void *)getpid);
    void *libc = dlsym(RTLD_NEXT, "getpid");
    CHECK(libc != NULL && libc != found);

    /*  A fork's child: its own pid, twice (the second from its cache),
        and the parent's stays. Two generations, so that a child's cache
        is forgotten in its own child too.                                 */
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        pid_t mine = (pid_t)syscall(SYS_getpid);
        int ok = getpid() == mine && getpid() == mine && mine != kernel && nx_pid_cached();
        pid_t grandchild = fork();
        if (grandchild == 0) {
            pid_t gmine = (pid_t)syscall(SYS_getpid);
            _exit(getpid() == gmine && gmine != mine ? 0 : 1);
        }
        int st = 0;
        ok = ok && grandchild > 0 && waitpid(grandchild, &st, 0) == grandchild &&
             WIFEXITED(st) && WEXITSTATUS(st) == 0;
        pid_t told = getpid();
        (void)!write(fds[1], &told, sizeof told);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pid_t told = 0;
    CHECK(read(fds[0], &told, sizeof told) == (ssize_t)sizeof told);
    CHECK(told == child);
    CHECK(getpid() == kernel);
    close(fds[0]);
    close(fds[1]);

    /*  libzmq still works with it (its fork check compares the pid it
        kept at socket creation with getpid's).                            */
    void *ctx = zmq_ctx_new();
    void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    CHECK(zmq_bind(a, "inproc://pid") == 0 && zmq_connect(b, "inproc://pid") == 0);
    CHECK(zmq_send(b, "x", 1, 0) == 1);
    char c = 0;
    CHECK(zmq_recv(a, &c, 1, 0) == 1 && c == 'x');
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
    NX_TEST_DONE();
}
