/*  =========================================================================
    nx_sublimit - bounds on one subscriber connection's subscriptions.
    nx_sublimit.h is the contract.
    =========================================================================
*/

#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "nx_sublimit.h"
#include "nx_topic.h"

/*  What is known of the connection on a descriptor.                        */
enum { S_UNKNOWN = 0, S_LIVE, S_DROPPED };

typedef struct {
    uint32_t subs; /* subscriptions it holds (subscribes less unsubscribes) */
    uint8_t state; /* S_*                                                   */
    bool full;         /* nx_sublimit_queues found its send buffer full      */
    uint64_t full_at;  /* the sent count when it first did, in a row          */
} s_conn_t;

struct _nx_sublimit_t {
    uint64_t max_subs; /* subscriptions per connection                   */
    s_conn_t *conns;   /* by descriptor                                   */
    size_t cap;        /* entries allocated in conns                      */
};

nx_sublimit_t *nx_sublimit_new(uint64_t max_subs)
{
    nx_sublimit_t *self = calloc(1, sizeof *self);
    if (self)
        self->max_subs = max_subs;
    return self;
}

void nx_sublimit_destroy(nx_sublimit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->conns);
    free(*self_p);
    *self_p = NULL;
}

/*  The entry of fd, grown to it; NULL when out of memory. Descriptors are
    small numbers below the process's limit, so the table stays small.    */
static s_conn_t *s_conn(nx_sublimit_t *self, int fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= self->cap) {
        size_t cap = self->cap ? self->cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        s_conn_t *grown = realloc(self->conns, cap * sizeof *grown);
        if (!grown)
            return NULL;
        memset(grown + self->cap, 0, (cap - self->cap) * sizeof *grown);
        self->conns = grown;
        self->cap = cap;
    }
    return &self->conns[fd];
}

void nx_sublimit_conn(nx_sublimit_t *self, uint16_t event, int fd)
{
    if (!self || (event != ZMQ_EVENT_ACCEPTED && event != ZMQ_EVENT_DISCONNECTED))
        return;
    s_conn_t *c = s_conn(self, fd);
    if (c)
        *c = (s_conn_t){0, event == ZMQ_EVENT_ACCEPTED ? S_LIVE : S_UNKNOWN, false, 0};
}

nx_sub_verdict_t nx_sublimit_check(nx_sublimit_t *self, zmq_msg_t *msg, bool subscribe,
                                   size_t prefix_len, int *fd)
{
    /*  The descriptor libzmq read the message from (its connection's
        metadata); -1 for a subscription a connection's end sent (no
        metadata: libzmq takes the connection's subscriptions away then).   */
    *fd = self ? zmq_msg_get(msg, ZMQ_SRCFD) : -1;
    s_conn_t *c = s_conn(self, *fd);
    if (!c)
        return NX_SUB_OK;
    if (!subscribe) {
        if (c->subs)
            c->subs--;
        return NX_SUB_OK;
    }
    if (c->state == S_DROPPED)
        return NX_SUB_OK; /* going already: nothing more to decide */
    if (prefix_len > NX_TOPIC_MAX)
        return NX_SUB_TOO_LONG;
    if (++c->subs > self->max_subs)
        return NX_SUB_TOO_MANY;
    return NX_SUB_OK;
}

bool nx_sublimit_drop(nx_sublimit_t *self, int fd)
{
    s_conn_t *c = s_conn(self, fd);
    /*  Only a connection the monitor says is there: a descriptor it saw
        close may name another socket of the process by now.              */
    if (!c || c->state != S_LIVE)
        return false;
    c->state = S_DROPPED;
    /*  connect () to AF_UNSPEC dissolves a TCP connection at once: what it
        has queued unread is thrown away and the peer gets a reset, where
        shutdown () would let libzmq read (and apply) the rest of its
        stream first. Anything else (ipc) gets the shutdown.              */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    if (connect(fd, &unspec, sizeof unspec) == 0)
        return true;
    return shutdown(fd, SHUT_RDWR) == 0;
}

/*  The kernel holds at least a quarter of the connection's send buffer
    (SO_SNDBUF counts the kernel's overhead too: a peer that reads nothing
    leaves it between a half and all of it): its peer does not take what
    it is sent. A stream socket; for anything else, or when the kernel
    will not say, false.                                                   */
static bool s_backed_up(int fd)
{
    int queued = 0, room = 0;
    socklen_t len = sizeof room;
    if (ioctl(fd, SIOCOUTQ, &queued) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &room, &len) != 0 || room <= 0)
        return false;
    return queued >= room / 4;
}

size_t nx_sublimit_queues(nx_sublimit_t *self, uint64_t sent, uint64_t budget)
{
    size_t dropped = 0;
    for (size_t fd = 0; self && fd < self->cap; fd++) {
        s_conn_t *c = &self->conns[fd];
        if (c->state != S_LIVE || !s_backed_up((int)fd)) {
            c->full = false;
            continue;
        }
        if (!c->full) {
            c->full = true;
            c->full_at = sent;
        } else if (sent - c->full_at >= budget && nx_sublimit_drop(self, (int)fd))
            dropped++;
    }
    return dropped;
}
