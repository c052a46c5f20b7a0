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
    interval. A new connection gets the mark the socket had when it was
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
} nx_hwm_t;

/*  The fixed mark of an inbound queue: at most count messages, and at most
    budget bytes of messages up to largest bytes each. At least 1.          */
int nx_hwm_fixed(uint64_t count, uint64_t budget, uint64_t largest);

/*  Sets up the mark of an outbound queue on sock (option ZMQ_SNDHWM):
    call before the socket is bound (it sets the low mark, which new
    connections start with).                                                */
void nx_hwm_init(nx_hwm_t *self, void *sock, int option, uint64_t count, uint64_t budget,
                 uint64_t largest);

/*  Lowers the mark for a large message of size bytes about to be sent.   */
void nx_hwm_large(nx_hwm_t *self, size_t size);

/*  Call before sending a message of size bytes: a large one lowers the
    mark first.                                                             */
static inline void nx_hwm_sending(nx_hwm_t *self, size_t size)
{
    if (size + NX_HWM_MSG_OVERHEAD > self->small)
        nx_hwm_large(self, size);
}

/*  A connection finished its handshake (a socket monitor's event): it
    has the low mark until the next nx_hwm_tick.                           */
void nx_hwm_connected(nx_hwm_t *self);

/*  Call every loop turn (now: mono us): raises a lowered mark after a
    quiet interval, and gives connections that came meanwhile the mark.    */
void nx_hwm_tick(nx_hwm_t *self, uint64_t now);

#endif
