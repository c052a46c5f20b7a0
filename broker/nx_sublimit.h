/*  =========================================================================
    nx_sublimit - what one subscriber connection may cost the broker's
    XPUB: each subscription at most NX_TOPIC_MAX bytes of prefix, and at
    most subscriptions_max of them at once; and, while large events flow,
    a connection that does not drain (nx_sublimit_queues). A connection
    that asks for more, or keeps its queue full, is dropped.

    Why: libzmq keeps every subscription in a trie with one node per byte
    of prefix (about 32 bytes each), whether the XPUB is manual or not,
    and frees it node by node when the connection goes. Unbounded, one
    32 MiB subscription cost the broker 1.3 GB, 100 000 subscriptions of
    200 bytes 0.7 GB, and the disconnect of a 16 MiB one stalled the loop
    for 6.5 s. The XPUB's ZMQ_MAXMSGSIZE (nx_broker.c) stops frames of
    more than a few KiB before they are read at all; this module bounds
    what is left: the length up to it and the count.

    A connection is known by the descriptor its messages came from
    (ZMQ_SRCFD) and followed through the XPUB's socket monitor (accepted,
    disconnected), which tells when a descriptor starts naming another
    connection. Dropping is a shutdown () of that descriptor: libzmq then
    sees the connection end, takes its subscriptions away and closes the
    descriptor itself. Subscriptions that come without a descriptor
    (inproc) are not bounded here.

    Worst case kept for one connection: subscriptions_max × 255 trie nodes
    (about 8 MB at the default of 1000).
    =========================================================================
*/

#ifndef NX_SUBLIMIT_H_INCLUDED
#define NX_SUBLIMIT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef struct _nx_sublimit_t nx_sublimit_t;

typedef enum {
    NX_SUB_OK = 0,   /* within the bounds (or not a connection we track)   */
    NX_SUB_TOO_LONG, /* a prefix over NX_TOPIC_MAX bytes                     */
    NX_SUB_TOO_MANY  /* one more than subscriptions_max                      */
} nx_sub_verdict_t;

/*  A tracker allowing max_subs subscriptions per connection; NULL when out
    of memory.                                                              */
nx_sublimit_t *nx_sublimit_new(uint64_t max_subs);

void nx_sublimit_destroy(nx_sublimit_t **self_p);

/*  A socket monitor event of the XPUB (ZMQ_EVENT_ACCEPTED or
    ZMQ_EVENT_DISCONNECTED; others are ignored) for descriptor fd.        */
void nx_sublimit_conn(nx_sublimit_t *self, uint16_t event, int fd);

/*  Counts one subscription message read from the XPUB (msg, subscribe or
    not, prefix_len bytes of prefix). Sets *fd to the connection's
    descriptor (-1: none). NX_SUB_OK, or why the connection must go.       */
nx_sub_verdict_t nx_sublimit_check(nx_sublimit_t *self, zmq_msg_t *msg, bool subscribe,
                                   size_t prefix_len, int *fd);

/*  Drops the connection on fd unless the monitor said it went (feed it the
    monitor's pending events first) or it is being dropped already. True
    when it was dropped now.                                               */
bool nx_sublimit_drop(nx_sublimit_t *self, int fd);

/*  Looks at the kernel send queue of every connection the monitor says
    is there. sent: bytes of large events sent so far, in all. One found
    at least a quarter full at every look while budget more bytes went out (its
    subscriber does not drain it, and libzmq's queue, which counts
    messages, grows behind it) is dropped (nx_sublimit_drop). Returns how
    many were dropped now.                                                 */
size_t nx_sublimit_queues(nx_sublimit_t *self, uint64_t sent, uint64_t budget);

#endif
