/*  =========================================================================
    nx_subs - which subscriptions ZeroMQ applies on the broker's XPUB when
    tokens are set (ZMQ_XPUB_MANUAL): a subscriber gets the events its
    token may read, and no others.

    ZeroMQ selects events for a subscriber by byte prefix. With tokens the
    XPUB runs in manual mode: each subscribe or unsubscribe a client sends
    comes to the broker with the connection's User-Id (its token's name),
    and the broker applies, for that connection, the prefixes its token
    may read under the one asked (nx_auth_sub_prefixes): the prefix itself
    when it may read all of it, narrower ones when it may read part of it
    (other sessions' private topics cut out, or only its sub= grants),
    none when it may read none of it (counted and logged).

    An unsubscribe takes away what was applied for that prefix, except
    prefixes that another subscription of the same connection may also
    have been given (nx_auth_prefix_shared): ZeroMQ keeps one set of
    prefixes per connection, not a count, so those stay until the
    connection closes. That only ever leaves a subscriber more of what it
    may read; the client's own pattern check drops it.
    =========================================================================
*/

#ifndef NX_SUBS_H_INCLUDED
#define NX_SUBS_H_INCLUDED

#include <stddef.h>
#include <zmq.h>

typedef struct _nx_broker_t nx_broker_t;

/*  Applies one subscription message read from the XPUB (msg, with data
    and size its bytes: 1 or 0, then the prefix). Call right after the
    read: ZeroMQ applies ZMQ_SUBSCRIBE to the connection of the last
    message read.                                                         */
void nx_subs_apply(nx_broker_t *self, zmq_msg_t *msg, const unsigned char *data, size_t size);

#endif
