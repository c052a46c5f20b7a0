/*  =========================================================================
    nx_repl_receiver - the standby's side of streaming replication: it asks
    the primary for its write-ahead log from where its own copy ends,
    writes the frames it receives at the same positions (nx_wal_copy_frame,
    each checked: position, chain, crc), flushes them, and acknowledges how
    far it has them durable. The checkpointer applies the copy to the
    standby's store as it does the primary's own log, so the standby's
    store follows the primary's and serves history reads.

    When the primary says the copy cannot go on (another store, a log that
    went on differently, the part it needs no longer kept), the receiver
    asks for a base copy, writes it to data_dir/base.tmp and, once it is
    whole and flushed, renames it to data_dir/base.mdb and says so
    (NX_REPL_RX_RESTART): the broker restarts, and a start that finds
    base.mdb puts it in place of the store (nx_repl_receiver_install)
    before it opens anything.

    The receiver owns its DEALER socket. A primary that says nothing for
    `timeout` (it sends a heartbeat every second) is asked again on a new
    socket, so a connection lost on the way is replaced.

    Threads: the broker's loop.
    =========================================================================
*/

#ifndef NX_REPL_RECEIVER_H_INCLUDED
#define NX_REPL_RECEIVER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "nx_wal.h"

typedef struct _nx_repl_receiver_t nx_repl_receiver_t;

typedef struct {
    const char *primary;  /* the primary's control endpoint                */
    const char *name;     /* this broker's name                            */
    nx_wal_t *wal;        /* this broker's log: the copy                   */
    const char *store_id; /* this store's identity                         */
    uint64_t epoch;       /* the newest epoch this store holds             */
    const char *data_dir; /* a base copy is written here                   */
    uint64_t timeout_us;  /* the primary silent this long: ask again       */
    const char *auth;     /* sent as "auth" in every request, or NULL      */
    /*  Called with each new socket before it connects (CURVE or PLAIN).   */
    void (*secure)(zsock_t *sock, void *arg);
    void *secure_arg;
} nx_repl_receiver_config_t;

/*  What nx_repl_receiver_read says.                                       */
typedef enum {
    NX_REPL_RX_OK = 0,  /* go on                                           */
    NX_REPL_RX_RESTART, /* a base copy is in data_dir/base.mdb: restart    */
    NX_REPL_RX_FATAL,   /* the log could not be written or flushed         */
    NX_REPL_RX_NEWER    /* the primary says it is not one (not_primary)    */
} nx_repl_rx_t;

typedef enum {
    NX_REPL_RX_IDLE = 0, /* no primary to follow                           */
    NX_REPL_RX_HELLO,    /* asked for the log, waits for the answer        */
    NX_REPL_RX_STREAM,   /* receives the log                               */
    NX_REPL_RX_BASE,     /* receives a base copy                           */
    NX_REPL_RX_DONE      /* the base copy is whole: the broker restarts    */
} nx_repl_rx_state_t;

/*  Counters for `state`.                                                   */
typedef struct {
    const char *primary;      /* the endpoint it follows (NULL: none)      */
    nx_repl_rx_state_t state; /* where it is                               */
    uint64_t received;        /* log position received up to               */
    uint64_t durable;         /* ... and flushed (acknowledged)            */
    uint64_t primary_written; /* the primary's log position, as last told  */
    uint64_t lag;             /* primary_written - durable                 */
    uint64_t heard_ms;        /* since the primary last said something     */
    uint64_t epoch;           /* the newest epoch seen                     */
    bool sync;                /* the primary waits for this standby (as it
                                 said last, also when it went silent)      */
    uint64_t base_got;        /* bytes of a base copy received             */
    uint64_t base_size;       /* its size                                  */
    char why[200];            /* the last problem, "" when none            */
} nx_repl_rx_stats_t;

/*  Creates the receiver; it asks the primary at the first tick. NULL when
    out of memory. Copies cfg (and its strings).                           */
nx_repl_receiver_t *nx_repl_receiver_new(const nx_repl_receiver_config_t *cfg);

/*  Closes the socket and frees self; sets *self_p to NULL. Safe on NULL.   */
void nx_repl_receiver_destroy(nx_repl_receiver_t **self_p);

/*  The socket to poll for input (libzmq handle), or NULL while none.
    It changes when the receiver asks again: take it before each poll.     */
void *nx_repl_receiver_socket(nx_repl_receiver_t *self);

/*  Reads what arrived: writes the frames, flushes them (or hands the flush
    to the log's flusher: then nx_repl_receiver_flushed acknowledges).    */
nx_repl_rx_t nx_repl_receiver_read(nx_repl_receiver_t *self, uint64_t now);

/*  Notes that the broker runs at now: after a time without running (half
    the replication timeout: stopped, or starved) it no longer counts
    itself in sync (nx_repl_receiver_read does this too). The loop calls
    it before a turn, so that a request that came meanwhile (promote) sees
    it.                                                                    */
void nx_repl_receiver_awake(nx_repl_receiver_t *self, uint64_t now);

/*  The log's flusher finished a round: acknowledges what it made durable. */
void nx_repl_receiver_flushed(nx_repl_receiver_t *self);

/*  Timers: asks again when the primary is silent, acknowledges once a
    second. now: mono us.                                                  */
void nx_repl_receiver_tick(nx_repl_receiver_t *self, uint64_t now);

/*  Follows another primary (endpoint; NULL: none) from the next tick.    */
void nx_repl_receiver_follow(nx_repl_receiver_t *self, const char *endpoint);

/*  The epoch it last said it holds: raised when the stream shows one.     */
uint64_t nx_repl_receiver_epoch(nx_repl_receiver_t *self);

void nx_repl_receiver_stats(nx_repl_receiver_t *self, nx_repl_rx_stats_t *st, uint64_t now);

/*  At start, before the store is opened: when data_dir/base.mdb is there
    (a base copy that arrived whole), it takes the store's place: the old
    data.mdb moves to data_dir/diverged/ (one kept; it may hold changes
    that never reached the primary), lock.mdb and the log's files go.
    Returns 0 (also when there is nothing to install), or -1 with a
    message in err.                                                        */
int nx_repl_receiver_install(const char *data_dir, char *err, size_t err_size);

#endif
