/*  =========================================================================
    nx_poll - zmq_poll with fewer system calls (nx_poll.h says why and how).
    =========================================================================
*/

#include "nx_poll.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <zmq.h>

/*  Asks a socket item for ZMQ_EVENTS, which processes its pending
    commands and so clears its descriptor: 1 (revents set) when it can be
    read, 0 when not, -1 on an error.                                      */
static int s_ask(nx_poll_item_t *it)
{
    int events = 0;
    size_t size = sizeof events;
    if (zmq_getsockopt(it->socket, ZMQ_EVENTS, &events, &size) == -1)
        return -1;
    if (!(events & ZMQ_POLLIN))
        return 0;
    it->revents = ZMQ_POLLIN;
    return 1;
}

/*  One look: asks the sockets to ask, then one poll (waiting up to
    timeout_ms when none is ready), then asks the sockets whose descriptor
    fired.                                                                 */
static int s_poll_once(nx_poll_item_t *items, int n, long timeout_ms)
{
    struct pollfd fds[NX_POLL_MAX];
    int ready = 0;
    for (int i = 0; i < n; i++) {
        nx_poll_item_t *it = &items[i];
        it->revents = 0;
        fds[i] = (struct pollfd){-1, POLLIN, 0};
        /*  Not looked at now: what it had stays there, and so does ready
            (a reader that stopped before EAGAIN gets no signal for it).  */
        if (!(it->events & ZMQ_POLLIN))
            continue;
        if (!it->socket) {
            fds[i].fd = it->fd;
            continue;
        }
        size_t size = sizeof fds[i].fd;
        if (zmq_getsockopt(it->socket, ZMQ_FD, &fds[i].fd, &size) == -1)
            return -1;
        if (!it->lazy || it->ready) {
            int rc = s_ask(it);
            if (rc == -1)
                return -1;
            ready += rc;
        }
    }
    /*  One poll: for the descriptors, and for the sockets whose commands
        came since they were asked (or that were not asked).              */
    int rc = poll(fds, (nfds_t)n, ready ? 0 : (int)timeout_ms);
    if (rc == -1)
        return -1;
    for (int i = 0; i < n; i++) {
        nx_poll_item_t *it = &items[i];
        if (!(it->events & ZMQ_POLLIN))
            continue;
        if (!it->socket) {
            if (fds[i].revents & POLLIN) {
                it->revents = ZMQ_POLLIN;
                ready++;
            }
        } else if (!it->revents && (fds[i].revents & POLLIN)) {
            int asked = s_ask(it);
            if (asked == -1)
                return -1;
            ready += asked;
        }
        it->ready = it->revents != 0;
    }
    return ready;
}

static long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int nx_poll(nx_poll_item_t *items, int n, long timeout_ms)
{
    if (n < 0 || n > NX_POLL_MAX) {
        errno = EINVAL;
        return -1;
    }
    /*  A descriptor fires for commands that bring nothing to read too
        (a connection made, a pipe's credit): look again until the time
        is up, as zmq_poll does.                                           */
    long end = timeout_ms > 0 ? s_now_ms() + timeout_ms : 0;
    for (;;) {
        int rc = s_poll_once(items, n, timeout_ms);
        if (rc != 0 || timeout_ms == 0)
            return rc;
        if (timeout_ms > 0) {
            timeout_ms = end - s_now_ms();
            if (timeout_ms <= 0)
                return 0;
        }
    }
}
