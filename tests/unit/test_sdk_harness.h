/*  =========================================================================
    test_sdk_harness - starts the real nexusd for the SDK tests: three
    consecutive free loopback ports (the SDK derives the event ports from
    the control port), a temporary data directory, fork/exec, and bounded
    waits. Kill, pause and restart are what the resume test needs.
    =========================================================================
*/

#ifndef TEST_SDK_HARNESS_H_INCLUDED
#define TEST_SDK_HARNESS_H_INCLUDED

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nexus.h"

typedef struct {
    pid_t pid;             /* nexusd, or 0 when not running               */
    int port;              /* control port; events on port+1, port+2      */
    char endpoint[64];     /* tcp://127.0.0.1:port                        */
    char data_dir[256];    /* temporary store directory                   */
    char log[300];         /* nexusd's output                             */
    const char *extra[16]; /* extra nexusd arguments, NULL-terminated     */
} th_broker_t;

static inline int th_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static inline int th_pick_ports(void)
{
    srand((unsigned)(getpid() ^ time(NULL)));
    for (int i = 0; i < 1000; i++) {
        int base = 20000 + rand() % 30000;
        if (th_port_free(base) && th_port_free(base + 1) && th_port_free(base + 2))
            return base;
    }
    return -1;
}

static inline uint64_t th_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*  Waits until the broker answers a ping (bounded by timeout_ms).          */
static inline int th_wait_ready(th_broker_t *b, int timeout_ms)
{
    uint64_t deadline = th_ms() + (uint64_t)timeout_ms;
    while (th_ms() < deadline) {
        nexus_client_t *c = nexus_client_new();
        nexus_client_set_endpoint(c, b->endpoint);
        nexus_client_set_timeout(c, 300);
        nexus_err_t rc = nexus_client_connect(c);
        nexus_client_destroy(&c);
        if (rc == NEXUS_OK)
            return 0;
        int status;
        if (b->pid && waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = 0;
            return -1;
        }
        usleep(50000);
    }
    return -1;
}

static inline int th_start(th_broker_t *b)
{
    if (!b->port) {
        b->port = th_pick_ports();
        snprintf(b->endpoint, sizeof b->endpoint, "tcp://127.0.0.1:%d", b->port);
        snprintf(b->data_dir, sizeof b->data_dir, "/tmp/nexus-sdk-test-XXXXXX");
        if (!mkdtemp(b->data_dir))
            return -1;
        snprintf(b->log, sizeof b->log, "%s.log", b->data_dir);
    }
    char c[64], in[64], out[64];
    snprintf(c, sizeof c, "tcp://127.0.0.1:%d", b->port);
    snprintf(in, sizeof in, "tcp://127.0.0.1:%d", b->port + 1);
    snprintf(out, sizeof out, "tcp://127.0.0.1:%d", b->port + 2);
    const char *nexusd = getenv("NEXUSD") ? getenv("NEXUSD") : NEXUSD_PATH;
    pid_t pid = fork();
    if (pid == 0) {
        FILE *log = fopen(b->log, "a");
        if (log) {
            dup2(fileno(log), 1);
            dup2(fileno(log), 2);
        }
        const char *argv[40] = {nexusd,      "--data-dir",
                                b->data_dir, "--control-endpoints",
                                c,           "--events-in-endpoints",
                                in,          "--events-out-endpoints",
                                out,         "--sync",
                                "none"};
        int n = 11;
        for (int i = 0; b->extra[i] && n < 38; i++)
            argv[n++] = b->extra[i];
        argv[n] = NULL;
        execv(nexusd, (char *const *)argv);
        _exit(127);
    }
    b->pid = pid;
    return th_wait_ready(b, 10000);
}

static inline void th_signal(th_broker_t *b, int sig)
{
    if (b->pid)
        kill(b->pid, sig);
}

static inline void th_kill(th_broker_t *b)
{
    if (!b->pid)
        return;
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
}

static inline void th_stop(th_broker_t *b)
{
    if (!b->pid)
        return;
    kill(b->pid, SIGCONT);
    kill(b->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
            b->pid = 0;
            return;
        }
        usleep(50000);
    }
    th_kill(b);
}

static inline void th_cleanup(th_broker_t *b, int keep_log)
{
    th_stop(b);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", b->data_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", b->data_dir);
    if (!keep_log)
        unlink(b->log);
    else
        fprintf(stderr, "nexusd log kept in %s\n", b->log);
}

/*  A connected client on b with short timeouts for tests.                  */
static inline nexus_client_t *th_client(th_broker_t *b)
{
    nexus_client_t *c = nexus_client_new();
    nexus_client_set_endpoint(c, b->endpoint);
    nexus_client_set_timeout(c, 3000);
    nexus_client_set_reconnect(c, 50, 500);
    return c;
}

#endif
