/*  =========================================================================
    nx_readonly - the broker's read-only mode, for a start that cannot
    bring the store up to the end of its write-ahead log for want of disk
    space (a crash on a full disk, or the disk filled while it was down).

    Refusing to start would leave nobody able to read the history, and
    retention could not free anything either. Instead the broker binds its
    sockets as usual and serves what the store holds: `ping`, `health`
    (degraded, saying why) and `history` (up to the last checkpoint: the
    events of the log not yet in the store are not shown until space
    returns). Every other op gets store_full with the reason; sessions and
    claims are not loaded (the log may hold changes to them), so their
    reads are refused too. Events from the event plane are dropped and
    counted; subscribers get nothing.

    Once a second it looks at the free space again; when the disk has what
    recovery needs (nx_disk.h), nx_readonly_run returns NX_BROKER_RESTART
    and nexusd starts the broker again: recovery applies the log and the
    broker serves writes.
    =========================================================================
*/

#ifndef NX_READONLY_H_INCLUDED
#define NX_READONLY_H_INCLUDED

#include <stddef.h>

typedef struct _nx_broker_t nx_broker_t;

/*  Called by nx_broker_new when the log could not be opened or recovered
    (err_buf says why): when the data disk lacks the space recovery needs,
    makes self read-only (self->readonly) and returns 0; otherwise returns
    -1 and leaves err_buf as it is.                                        */
int nx_readonly_enter(nx_broker_t *self, char *err_buf, size_t err_size);

/*  The read-only loop: until SIGINT/SIGTERM (0) or until the disk has
    room again (NX_BROKER_RESTART).                                        */
int nx_readonly_run(nx_broker_t *self);

#endif
