/*  =========================================================================
    nx_unread - whether a client reads what the broker sends it.

    libzmq bounds a connection's outbound queue in messages only, so a
    client that asks for large replies (history pages of up to
    history_bytes, long lists) and never reads them grew the broker by
    their sum (300 unread history replies: +3.1 GB). Before a large reply
    goes out the broker looks at the kernel's send queue of the client's
    connection (SIOCOUTQ on the descriptor its request came from,
    ZMQ_SRCFD): when it holds NX_UNREAD_MAX bytes or half the socket's send
    buffer, the client has not read what it was sent, and gets `busy`
    instead of another large reply. The descriptor may name another
    connection by then (the client went): the answer is then merely
    wrong for one reply, never harmful, since nothing is done to it.
    =========================================================================
*/

#ifndef NX_UNREAD_H_INCLUDED
#define NX_UNREAD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

/*  Replies over this many bytes are large.                                 */
#define NX_UNREAD_LARGE (4u << 10)
/*  Unread bytes that make a client one that does not read.                 */
#define NX_UNREAD_MAX (1u << 20)

/*  Bytes sent on fd that its peer has not taken yet (0 when unknown or
    fd < 0).                                                                */
size_t nx_unread_bytes(int fd);

/*  True when the peer on fd has NX_UNREAD_MAX bytes, or half its send
    buffer, left unread.                                                    */
bool nx_unread_behind(int fd);

#endif
