/*  =========================================================================
    nx_poll - zmq_poll for a loop that waits on the same sockets turn after
    turn, with fewer system calls.

    zmq_poll asks every ZeroMQ socket for ZMQ_EVENTS at every call, and for
    a socket with no command pending that costs a getpid and a poll of its
    own (libzmq's signaler): with the broker's nine sockets, some twenty
    system calls a turn, and a system call is dear on a virtual machine.
    nx_poll asks a socket marked lazy only when its descriptor (ZMQ_FD)
    fired, or when the previous call found it readable; every other socket
    is asked at every call, as zmq_poll does.

    Lazy is for a socket the loop only receives from, draining it each time
    it is readable or coming back at the next turn: libzmq signals the
    descriptor when a message arrives on a pipe the reader found empty,
    and a receive that ends in EAGAIN has taken every pending command. A
    send may take a command too (the one saying a message arrived) without
    the caller seeing it, so a socket the loop also sends on is not lazy.
    A lazy item starts ready (asked at the first call): a pipe nobody has
    read yet brings messages without a signal, and one the socket itself
    connected (inproc) came with no command that would have fired it.
    =========================================================================
*/

#ifndef NX_POLL_H_INCLUDED
#define NX_POLL_H_INCLUDED

#include <stdbool.h>

#define NX_POLL_MAX 16

typedef struct {
    void *socket;  /* a ZeroMQ socket, or NULL: fd                     */
    int fd;        /* a descriptor when socket is NULL; -1: none       */
    short events;  /* ZMQ_POLLIN, or 0: the item is not looked at      */
    short revents; /* out: ZMQ_POLLIN when there is something to read  */
    bool lazy;     /* asked only when its descriptor fired (above)     */
    bool ready;    /* kept between calls: readable at the last one     */
} nx_poll_item_t;

/*  Waits up to timeout_ms (-1: for ever) until an item can be read; at
    most NX_POLL_MAX items. Returns how many can, 0 at the timeout, -1 on
    an error (zmq_errno (); EINTR when a signal came).                    */
int nx_poll(nx_poll_item_t *items, int n, long timeout_ms);

#endif
