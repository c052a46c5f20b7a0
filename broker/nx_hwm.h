/*  =========================================================================
    nx_hwm - high-water marks that bound a ZeroMQ queue in bytes as well
    as in messages.

    libzmq counts a pipe's messages, not its bytes: with out_hwm 100 000
    and max_payload 1 MiB, one subscriber that stops reading may hold
    100 GiB of the broker's memory. Each connection gets a byte budget
    (queue_bytes), as Redis's client-output-buffer-limit does, and the
    high-water mark follows from it:

    - an inbound queue (events in, requests in) is filled by libzmq's I/O
      thread before the loop sees a message's size, so its mark is fixed:
      budget / the largest message, at most the configured count
      (nx_hwm_fixed);
    - an outbound queue (events out) takes the size of each message the
      loop sends, so its mark moves (nx_hwm_init): while messages are small
      (up to budget / count bytes, at least 4 KiB) it is budget / small;
      before a larger message goes out it is lowered to budget / the
      message's size (rounded up to a power of two, so that a mark moves a
      few times, not once per message), and it goes back up once no large
      message was sent for NX_HWM_QUIET_US. A queue admits a message only
      while it holds fewer than the mark, and every message admitted since
      the mark went up is at most budget / the mark now: those hold at
      most the budget. What it held when the mark went up (at most the
      budget) drains first, so a queue holds at most twice the budget.

    Setting a mark applies to the connections of the socket at that time
    (libzmq 4.3 updates their pipes), at one command each, so it is done
    when the mark changes, at most once per large message size and quiet
    interval.

    It is safe only while no connection is closing: libzmq sends the mark
    to the far end of every pipe it still lists, also to one whose far end
    its I/O thread has freed already (the pipe is listed until the last
    step of its closing handshake comes back), and the I/O thread then
    calls into freed memory (a SIGSEGV, a heap-use-after-free in an
    instrumented libzmq: pipe_hwm after pipe_term_ack). libzmq reports a
    connection's end (ZMQ_EVENT_DISCONNECTED) before its pipe starts
    closing, so the broker reads the socket monitor right before a mark
    is set (the drain callback) and no mark is set until NX_HWM_SETTLE_US
    after the last disconnect (nx_hwm_disconnected). A large message that
    needs a lower mark meanwhile waits (nx_hwm_sending says so), with the
    messages behind it: the bound is kept, the cost is latency for large
    messages right after a subscriber left. While subscribers come and go
    without a pause of NX_HWM_SETTLE_US, a waiting message goes out after
    NX_HWM_WAIT_US under the mark it finds (counted in over_mark): the
    count bound holds then, the byte bound not, rather than stopping the
    stream or crashing. A new connection gets the mark the socket had when it was
    bound (libzmq copies the options then): the low one, the safe one, until
    the broker learns of its handshake (a socket monitor event) and gives it
    the mark of the others (nx_hwm_tick, at most every NX_HWM_FRESH_US).
    =========================================================================
*/

#ifndef NX_HWM_H_INCLUDED
#define NX_HWM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*  What libzmq holds for a queued message beyond its bytes: the msg_t in
    the pipe and the header of its content.                                 */
#define NX_HWM_MSG_OVERHEAD 128
/*  Messages up to this many bytes are small whatever the budget.           */
#define NX_HWM_SMALL_MIN 4096
/*  A lowered mark goes back up after this long without a large message.   */
#define NX_HWM_QUIET_US (2 * 1000000ull)
/*  New connections get the mark at most this often (it costs a command
    to every connection).                                                   */
#define NX_HWM_FRESH_US (100 * 1000ull)
/*  No mark is set for this long after a connection of the socket closed:
    its pipe's closing handshake (two commands through libzmq's I/O thread,
    microseconds when the machine is idle) is over by then.                */
#define NX_HWM_SETTLE_US (500 * 1000ull)
/*  A large message waits for its mark at most this long.                   */
#define NX_HWM_WAIT_US (1000 * 1000ull)

typedef struct {
    void *sock;        /* the libzmq socket                                */
    int option;        /* ZMQ_SNDHWM                                       */
    int high, low;     /* the mark for small messages only, and for any    */
    size_t small;      /* bytes (with overhead) of a small message at most */
    uint64_t budget;   /* bytes a queue may hold                           */
    int now;           /* the mark set on the socket                       */
    bool fresh;        /* connections came since the mark was last set     */
    uint64_t set_at;   /* mono us the mark was last set                    */
    uint64_t large_at; /* mono us of the last large message                */
    uint64_t settled;  /* mono us from which a mark may be set again       */
    bool waiting;      /* large messages wait for a lower mark             */
    uint64_t wait_since; /* mono us since when                             */
    uint64_t over_mark;  /* large messages sent without their mark         */
    void (*drain)(void *arg); /* reads the socket's monitor (may call      */
    void *drain_arg;          /* nx_hwm_disconnected)                      */
} nx_hwm_t;

/*  The fixed mark of an inbound queue: at most count messages, and at most
    budget bytes of messages up to largest bytes each. At least 1.          */
int nx_hwm_fixed(uint64_t count, uint64_t budget, uint64_t largest);

/*  Sets up the mark of an outbound queue on sock (option ZMQ_SNDHWM):
    call before the socket is bound (it sets the low mark, which new
    connections start with).                                                */
void nx_hwm_init(nx_hwm_t *self, void *sock, int option, uint64_t count, uint64_t budget,
                 uint64_t largest);

/*  Gives the function that reads the socket's monitor events: called
    before every mark set after init, so that a disconnect libzmq already
    reported is known (nx_hwm_disconnected) before the mark goes out.
    drain NULL: disconnects cannot be known, and the mark stays as it is
    (the low one after init).                                               */
void nx_hwm_watch(nx_hwm_t *self, void (*drain)(void *arg), void *arg);

/*  Lowers the mark for a large message of size bytes about to be sent.
    False when the mark had to go down and cannot yet (a connection closed
    less than NX_HWM_SETTLE_US ago): the message must wait.                 */
bool nx_hwm_large(nx_hwm_t *self, size_t size);

/*  Call before sending a message of size bytes: a large one lowers the
    mark first. True: send it now; false: hold it (and whatever comes
    after it) and ask again later (nx_hwm_waiting).                         */
static inline bool nx_hwm_sending(nx_hwm_t *self, size_t size)
{
    if (size + NX_HWM_MSG_OVERHEAD > self->small)
        return nx_hwm_large(self, size);
    return true;
}

/*  Whether large messages wait for their mark (the caller polls at most
    100 ms apart then, and asks nx_hwm_sending again).                      */
static inline bool nx_hwm_waiting(const nx_hwm_t *self)
{
    return self->waiting;
}

/*  A connection finished its handshake (a socket monitor's event): it
    has the low mark until the next nx_hwm_tick.                           */
void nx_hwm_connected(nx_hwm_t *self);

/*  A connection of the socket closed (ZMQ_EVENT_DISCONNECTED) at now: no
    mark is set for NX_HWM_SETTLE_US.                                       */
void nx_hwm_disconnected(nx_hwm_t *self, uint64_t now);

/*  Call every loop turn (now: mono us): raises a lowered mark after a
    quiet interval, and gives connections that came meanwhile the mark.    */
void nx_hwm_tick(nx_hwm_t *self, uint64_t now);

#endif
