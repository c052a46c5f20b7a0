/*  =========================================================================
    nx_checkpointer - writes the LMDB store behind the write-ahead log.

    The loop appends every change to the log (nx_wal.h) and acknowledges
    it once the log is flushed. This thread (a CZMQ actor) reads the
    flushed frames back, applies their records to the store in one write
    transaction, and commits it durably on a bounded schedule: every
    `interval_us`, when `bytes` of log are applied, or at once when the
    loop asks (a history or state query must see what was forwarded before
    it arrived). Each commit records in the store's meta where the log
    continues (wal_lsn, wal_crc, wal_segment), in the same transaction as
    the records it applied, so the store and its checkpoint never disagree.
    The segments a commit covers are then recycled.

    Recovery (nx_checkpointer_recover, at start, before the actor runs)
    replays the log above the checkpoint the same way.

    Store housekeeping (retention trims, make_room) runs here too, once a
    second, between commits. A store that cannot take what was acknowledged
    (the map at map_max with nothing left to trim) still takes it, beyond
    map_max (nx_store_overdraft): acknowledged changes are never dropped;
    nx_checkpointer_full then tells the loop to refuse new writes until
    there is room again.
    =========================================================================
*/

#ifndef NX_CHECKPOINTER_H_INCLUDED
#define NX_CHECKPOINTER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "nx_store.h"
#include "nx_wal.h"

typedef struct _nx_checkpointer_t nx_checkpointer_t;

/*  The slice of flushed log the actor applies in one go: the loop wakes it
    once this much more is flushed (not at every flush), and the actor,
    further behind than this, applies without waiting for a wake.         */
#define NX_CKPT_SLICE_BYTES (256u << 10)

/*  Meta keys of the checkpoint (u64 big-endian values).                   */
#define NX_META_WAL_LSN     "wal_lsn"     /* the log goes on here          */
#define NX_META_WAL_CRC     "wal_crc"     /* crc of the frame before it    */
#define NX_META_WAL_SEGMENT "wal_segment" /* segment size of that log      */

typedef struct {
    nx_store_t *store;    /* written by the actor only while it runs     */
    nx_wal_t *wal;        /* the log the loop writes                     */
    const char *wal_dir;  /* its directory (the actor's own reader)      */
    uint64_t interval_us; /* commit at least this often when applied     */
    uint64_t bytes;       /* ... or when this much log is applied        */
    uint64_t room;        /* bytes make_room keeps free (batch_bytes)    */
    uint64_t trim_batch;  /* retention deletes per housekeeping at most  */
} nx_checkpointer_config_t;

/*  What recovery found and did.                                           */
typedef struct {
    uint64_t from;    /* the checkpoint: where replay started             */
    uint64_t end;     /* where the valid log ended                        */
    uint64_t start;   /* where the log goes on (end, or the next segment
                         when the segment size changed)                   */
    uint32_t end_crc; /* crc of the last valid frame (chain head)         */
    uint64_t frames;  /* frames replayed                                  */
    uint64_t events;  /* events stored from them                          */
    uint64_t changes; /* puts and dels applied                            */
    uint64_t cut;     /* bytes of an incomplete last turn left out        */
    bool torn;        /* the log ended in a torn write or an incomplete
                         turn (not in zeros or an old frame)              */
    bool had_log;     /* the store had a checkpoint (a log to read)       */
    bool log_missing; /* ... and the log's segment at it is not there (a
                         restored copy of data.mdb without its wal/): the
                         run that wrote the store may have gone further  */
    /*  The frame that ended the log does not check, and frames that do
        follow it on its chain (nx_wal_reader_beyond): left out.          */
    uint64_t damaged_frames;           /* how many; 0: none              */
    uint64_t damaged_at;               /* the frame that does not check  */
    uint64_t damaged_from, damaged_to; /* the frames left out past it    */
    char kept[512]; /* where the segments holding them were copied ("":
                       the copy failed; the log says why)                */
} nx_recovery_t;

/*  Replays the log in wal_dir above the store's checkpoint into the store
    and commits (durably), with the checkpoint moved to where the log will
    go on (a segment of new_segment_size bytes). A store without a
    checkpoint (new, or written by a version without the log) has nothing
    to replay. Returns 0, or -1 with a message in err.                     */
int nx_checkpointer_recover(nx_store_t *store, const char *wal_dir, uint64_t new_segment_size,
                            nx_recovery_t *out, char *err, size_t err_size);

/*  Starts the actor. committed starts at start_lsn (the log is empty above
    recovery's commit). NULL on failure.                                    */
nx_checkpointer_t *nx_checkpointer_new(const nx_checkpointer_config_t *cfg, uint64_t start_lsn,
                                       uint32_t start_crc);

/*  Applies and commits everything the log has flushed, then stops the
    actor and frees self. Safe on NULL.                                     */
void nx_checkpointer_destroy(nx_checkpointer_t **self_p);

/*  The log was flushed further (nx_wal_flush): wakes the actor if it
    sleeps. Never blocks.                                                   */
void nx_checkpointer_wake(nx_checkpointer_t *self);

/*  Asks for a commit that covers the log up to lsn, as soon as it is
    flushed and applied. Never blocks.                                      */
void nx_checkpointer_request(nx_checkpointer_t *self, uint64_t lsn);

/*  The log position the last durable commit covers. Any thread.           */
uint64_t nx_checkpointer_committed(nx_checkpointer_t *self);

/*  Waits (the caller blocks, up to timeout_ms) until a commit covers lsn.
    Returns 0, or -1 on timeout.                                            */
int nx_checkpointer_sync(nx_checkpointer_t *self, uint64_t lsn, int timeout_ms);

/*  The actor's socket: readable after each commit (and problem). The loop
    polls it and calls nx_checkpointer_drain.                               */
zsock_t *nx_checkpointer_sock(nx_checkpointer_t *self);

/*  Reads what the actor sent. Returns true when it reported a new problem,
    copied into buf (size bytes).                                           */
bool nx_checkpointer_drain(nx_checkpointer_t *self, char *buf, size_t size);

/*  Like drain, without reading the socket: cheap (an atomic load when
    nothing is new), for every turn.                                        */
bool nx_checkpointer_problem(nx_checkpointer_t *self, char *buf, size_t size);

/*  True while the store is full (the loop refuses writes).                */
bool nx_checkpointer_full(nx_checkpointer_t *self);

#endif
