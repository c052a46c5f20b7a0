/*  =========================================================================
    nx_hwm - high-water marks that bound a ZeroMQ queue in bytes as well
    as in messages.

    libzmq counts a pipe's messages, not its bytes: with out_hwm 100 000
    and max_payload 1 MiB, one subscriber that stops reading may hold
    100 GiB of the broker's memory. Each connection gets a byte budget
    (queue_bytes), as Redis's client-output-buffer-limit does, and the
    high-water mark follows from it:

    - an inbound queue (events in, requests in) is filled by libzmq's I/O
      thread before the loop sees a message's size: budget / the largest
      message, at most the configured count (nx_hwm_fixed);
    - the subscribers' queues (events out): budget / small, where small is
      budget / count but at least NX_HWM_SMALL_MIN (nx_hwm_out). Small
      events fill at most the budget; larger ones count as one message
      each, and a subscriber that keeps them waiting is disconnected
      instead (nx_sublimit_queues): a queue of large events is bounded by
      what arrives while the subscriber's connection still drains.

    Why the subscribers' mark does not move with the size of what is sent
    (it did, lowered before each large event): libzmq 4.3 judges a pipe
    full by what its reader last reported, and a reader reports once per
    low-water mark (every 15 360 messages under a mark of 16 384). Under a
    lowered mark a subscriber that has read everything may count as full;
    the message is then dropped for it, its pipe waits to be woken by a
    report, and no report comes, since nothing more reaches it: the
    subscriber got nothing more, ever, until it reconnected (the events
    fuzz target's lost marker; test_large_after_small). Setting a mark
    while a connection closes also crashes libzmq 4.3 (pipe_hwm after
    pipe_term_ack). A mark set once, before the socket is bound, has
    neither problem.
    =========================================================================
*/

#ifndef NX_HWM_H_INCLUDED
#define NX_HWM_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

/*  What libzmq holds for a queued message beyond its bytes: the msg_t in
    the pipe and the header of its content.                                 */
#define NX_HWM_MSG_OVERHEAD 128
/*  Messages up to this many bytes are small whatever the budget.           */
#define NX_HWM_SMALL_MIN 4096

/*  The mark of an inbound queue: at most count messages, and at most
    budget bytes of messages up to largest bytes each. At least 1.          */
int nx_hwm_fixed(uint64_t count, uint64_t budget, uint64_t largest);

/*  The mark of the subscribers' queues: at most count messages, and at
    most budget bytes of small messages; *small gets the size (bytes, with
    NX_HWM_MSG_OVERHEAD) up to which a message is small. At least 1.       */
int nx_hwm_out(uint64_t count, uint64_t budget, size_t *small);

#endif
