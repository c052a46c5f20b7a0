/*  =========================================================================
    nx_repl_sender - the primary's side of streaming replication: it ships
    the write-ahead log (nx_wal.h), frame by frame as written, to the
    standbys that asked for it, and learns from their acknowledgements how
    far each has it durable. docs/architecture.md, "Replication", tells the
    whole story; the wire messages are in docs/protocol.md section 9.

    A standby connects to the primary's control endpoint (a DEALER to the
    ROUTER), says where its copy of the log ends (`replicate`: its
    position, the crc of the frame before it, its store's identity), and
    the primary either streams from there or, when that position is not on
    its own log (another store, a log that went on differently, segments
    already recycled), tells it to start again from a base copy: a
    consistent copy of the store (nx_store_copy) whose checkpoint says
    where the log goes on, sent in chunks (`replicate.base`). The log is
    streamed as `wal` messages (a msgpack head, then the frames' bytes),
    at most `window` bytes and S_FLIGHT messages ahead of what the standby
    acknowledged (`replicate.ack`), so nothing ever queues without bound.
    The segments a standby still needs are held from recycling
    (nx_wal_hold) until it is more than `keep` bytes behind.

    The sync standby. One standby at most is the one the primary waits
    for (replication = sync: every acknowledged change; async: the turns
    that reserve seqs and fencing tokens): nx_repl_sender_synced says how
    far it has the log durable. A standby becomes it once it has caught up;
    it stops being it when it leaves something unacknowledged for
    `timeout`. The sender never changes that by itself: it says what it
    wants (nx_repl_sender_want) and the broker decides (with etcd, after
    the change is recorded there: a standby may only be promoted while it
    is the one the primary waits for).

    Threads: the broker's loop, except the base copy, which runs on a
    thread of its own while the loop goes on.
    =========================================================================
*/

#ifndef NX_REPL_SENDER_H_INCLUDED
#define NX_REPL_SENDER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_store.h"
#include "nx_wal.h"

#define NX_REPL_NAME_MAX 64 /* bytes in a broker's name                    */
#define NX_REPL_MAX      4  /* standbys a primary streams to at most       */

typedef struct _nx_repl_sender_t nx_repl_sender_t;

typedef struct {
    nx_wal_t *wal;        /* the log it streams                          */
    const char *wal_dir;  /* its directory (the sender reads it back)    */
    nx_store_t *store;    /* base copies are taken of it                 */
    const char *data_dir; /* where a base copy waits while it is sent    */
    const char *store_id; /* the store's identity                        */
    void *router;         /* the control ROUTER (libzmq handle)          */
    uint64_t window;      /* bytes sent and not acknowledged, at most    */
    uint64_t keep;        /* log a standby may lag behind, else unheld   */
    uint64_t timeout_us;  /* the sync standby is let go after leaving
                             something unacknowledged this long         */
} nx_repl_sender_config_t;

/*  What a standby says when it asks for the log (`replicate`).            */
typedef struct {
    const char *name;      /* the standby's name                          */
    size_t name_len;       /* bytes in name                               */
    const char *store_id;  /* its store's identity                        */
    size_t store_id_len;   /* bytes in store_id                           */
    uint64_t lsn;          /* where its copy of the log ends              */
    uint32_t crc;          /* crc of the frame before lsn                 */
    uint64_t epoch;        /* the newest epoch its log holds              */
    uint64_t segment_size; /* its log's segment size                      */
    uint64_t durable;      /* its log is durable up to here (<= lsn)       */
} nx_repl_hello_t;

/*  What the primary answers.                                              */
typedef enum {
    NX_REPL_STREAM = 0, /* the log goes out from the standby's position   */
    NX_REPL_RESYNC,     /* the standby starts again from a base copy      */
    NX_REPL_NEWER,      /* the standby has seen a newer epoch than ours:
                           this broker is no longer the primary           */
    NX_REPL_REFUSED     /* no room for another standby, or bad request    */
} nx_repl_answer_t;

/*  What the sender would like the broker to do about the sync standby.    */
typedef enum {
    NX_REPL_WANT_NONE = 0,
    NX_REPL_WANT_ADD, /* name caught up: wait for it from now on          */
    NX_REPL_WANT_DROP /* name left a change unacknowledged for timeout    */
} nx_repl_want_t;

/*  Counters for `state`, per standby.                                     */
typedef struct {
    char name[NX_REPL_NAME_MAX + 1]; /* the standby's name                */
    bool attached;                   /* its stream runs                   */
    bool sync;                       /* the one the primary waits for     */
    bool base;                       /* it is being sent a base copy      */
    uint64_t sent;                   /* log position sent up to           */
    uint64_t acked;                  /* it has the log durable up to      */
    uint64_t received;               /* ... and received up to            */
    uint64_t lag;                    /* written - acked, bytes            */
    uint64_t ack_age_ms;             /* since its last acknowledgement    */
} nx_repl_standby_stats_t;

/*  Creates the sender. NULL when out of memory. Copies cfg (the strings
    too); the wal, store and router stay the caller's.                     */
nx_repl_sender_t *nx_repl_sender_new(const nx_repl_sender_config_t *cfg);

/*  Stops a base copy in progress (waits for its thread), removes its
    file, lets go of the hold, frees self and sets *self_p to NULL.        */
void nx_repl_sender_destroy(nx_repl_sender_t **self_p);

/*  A standby's `replicate` from the connection peer (routing id, peer_len
    bytes). Decides how it goes on: NX_REPL_STREAM with *from (the
    standby's position: the log goes out from there at the next pump),
    else why (a sentence) says what is wrong. epoch is this broker's.
    The standby's earlier connection, if any, is forgotten.               */
nx_repl_answer_t nx_repl_sender_attach(nx_repl_sender_t *self, const uint8_t *peer, size_t peer_len,
                                       const nx_repl_hello_t *hello, uint64_t epoch, uint64_t *from,
                                       char *why, size_t why_size);

/*  A standby's `replicate.ack`: it has the log durable up to lsn and has
    received it up to received (a turn's frames are flushed once the whole
    turn is there, so the window counts what arrived); with a base copy in
    progress, base_offset bytes of it (else 0).                            */
void nx_repl_sender_ack(nx_repl_sender_t *self, const char *name, size_t name_len, uint64_t lsn,
                        uint64_t received, uint64_t base_offset, uint64_t n, uint64_t now);

/*  A standby's `replicate.base`: starts a base copy for it (a thread
    copies the store), sent once ready. checkpoint: the log position the
    store's last commit covers (the copy's own checkpoint is at or above
    it), held until the standby streams again. Returns 0, or -1 with why
    (no such standby, a copy already runs for another, no thread).        */
int nx_repl_sender_base(nx_repl_sender_t *self, const char *name, size_t name_len,
                        uint64_t checkpoint, char *why, size_t why_size);

/*  Sends what is written and not sent yet (within each standby's window),
    the base copy's chunks, and a heartbeat to each standby once a second;
    updates the hold. epoch is this broker's. now: mono us. Cheap when
    there is nothing to send; call it after each turn's write.            */
void nx_repl_sender_pump(nx_repl_sender_t *self, uint64_t epoch, uint64_t now);

/*  The log position the sync standby has durable: what a reply that
    waits for it may go out at. UINT64_MAX when there is no sync standby
    (nothing to wait for).                                                 */
uint64_t nx_repl_sender_synced(nx_repl_sender_t *self);

/*  The name of the sync standby, or NULL.                                 */
const char *nx_repl_sender_sync_name(nx_repl_sender_t *self);

/*  Makes name (NULL: none) the sync standby. A name no standby has is
    refused (-1).                                                          */
int nx_repl_sender_set_sync(nx_repl_sender_t *self, const char *name);

/*  What the sender would like done about the sync standby; name gets the
    standby's name (size bytes).                                           */
nx_repl_want_t nx_repl_sender_want(nx_repl_sender_t *self, uint64_t now, char *name, size_t size);

/*  Stats of standby i (0 ..): 0, or -1 past the last.                     */
int nx_repl_sender_stats(nx_repl_sender_t *self, size_t i, nx_repl_standby_stats_t *st,
                         uint64_t now);

#endif
