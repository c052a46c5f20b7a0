/*  =========================================================================
    nx_store - the broker's LMDB store: the event history and the small
    keyed databases the control plane keeps (meta, sessions, claims, ...).

    This is the only file of the project that includes lmdb.h. LMDB codes are
    translated here into nexus_err_t plus a message (nx_store_errmsg).

    Write model: one thread, the checkpointer's (nx_checkpointer.h), calls
    nx_store_append / nx_store_put / nx_store_del for what the write-ahead
    log holds; the first of them opens the write transaction,
    nx_store_commit closes it. Under sync=full a commit returns only after
    it is on disk (LMDB's durable commit: data, then the meta page), which
    is what lets the log be recycled behind it. Replies never wait for a
    commit: they wait for the log's flush (nx_wal.h).

    Events are keyed by seq, a u64 stored big-endian so that LMDB's byte
    order is seq order. The value is the record of nx_codec.h. Timestamps
    are non-decreasing with seq (the broker guarantees it), which lets
    nx_store_seq_at_time binary-search by time without a time index.

    Threads: the writing side (append, put, del, commit, abort, trim,
    make_room, overdraft, full) belongs to one thread at a time. Readers
    (nx_store_reader_*), nx_store_get, nx_store_foreach, nx_store_stats and
    nx_store_id may be used from other threads: they see committed state.
    =========================================================================
*/

#ifndef NX_STORE_H_INCLUDED
#define NX_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_codec.h"

typedef struct _nx_store_t nx_store_t;
typedef struct _nx_store_reader_t nx_store_reader_t;

/*  The keyed databases besides the events. Keys and values are bytes the
    caller chooses.                                                          */
typedef enum {
    NX_DB_META = 0, /* counters that must survive: reserved keys below      */
    NX_DB_SESSIONS, /* session id -> session record (issue 3)               */
    NX_DB_CLAIMS,
    /* work id -> claim record (issue 3)                    */ NX_DB__COUNT
} nx_db_t;

typedef struct {
    const char *path;       /* data directory; created if missing           */
    bool sync;              /* true: fsync before commit returns            */
    uint64_t map_size;      /* initial LMDB map size, bytes                 */
    uint64_t map_max;       /* the map may grow up to this, bytes           */
    uint64_t retain_events; /* keep at most this many events; 0 = no limit  */
    uint64_t retain_bytes;  /* keep at most this many record bytes; 0 = no  */
    uint64_t retain_age_us; /* drop events older than this; 0 = no limit    */
    uint64_t trim_batch;    /* delete at most this many events per commit   */
} nx_store_config_t;

typedef struct {
    uint64_t first_seq;  /* oldest stored event, 0 when empty                */
    uint64_t last_seq;   /* highest seq ever committed (survives trimming)   */
    uint64_t last_ts;    /* ts of last_seq, 0 when none                      */
    uint64_t count;      /* events stored                                    */
    uint64_t bytes;      /* sum of stored record sizes                       */
    uint64_t disk_bytes; /* size of the data file on disk                    */
    uint64_t map_size;   /* current LMDB map size                            */
    uint64_t map_used;   /* bytes of the map in use (pages x page size)      */
    uint64_t trimmed;    /* events deleted by retention since open           */
    uint64_t grows;      /* times the map grew since open                    */
    uint64_t commits;    /* write transactions committed since open          */
} nx_store_stats_t;

/*  Opens (creating if needed) the store in cfg->path and holds an exclusive
    lock on cfg->path/nexusd.lock until nx_store_destroy. Returns NULL on
    failure with *err set (NEXUS_ERR_STORE, NEXUS_ERR_INVALID, or
    NEXUS_ERR_BUSY when another process holds the lock) and a message in
    err_buf (err_size bytes). Copies what it needs from cfg.                 */
nx_store_t *nx_store_new(const nx_store_config_t *cfg, nexus_err_t *err, char *err_buf,
                         size_t err_size);

/*  Aborts any open write transaction, closes the environment, frees self and
    sets *self_p to NULL. Safe with *self_p == NULL.                        */
void nx_store_destroy(nx_store_t **self_p);

/*  Text of the last error this store returned.                             */
const char *nx_store_errmsg(nx_store_t *self);

/*  Appends one event to the open batch (opening it if needed). seq must be
    greater than every seq appended before. Returns NEXUS_OK,
    NEXUS_ERR_STORE_FULL when the map is full (the whole batch is then
    aborted: the caller must treat every write of this batch as not done),
    or NEXUS_ERR_STORE.                                                      */
nexus_err_t nx_store_append(nx_store_t *self, uint64_t seq, uint64_t ts, const char *topic,
                            size_t topic_len, const char *source, size_t source_len,
                            const uint8_t *payload, size_t payload_len);

/*  Puts / deletes key in db within the open batch (opening it if needed).
    Errors as for nx_store_append; nx_store_del returns NEXUS_ERR_NOT_FOUND
    for an absent key (the batch stays open and valid).                     */
nexus_err_t nx_store_put(nx_store_t *self, nx_db_t db, const void *key, size_t key_len,
                         const void *value, size_t value_len);
nexus_err_t nx_store_del(nx_store_t *self, nx_db_t db, const void *key, size_t key_len);

/*  Reads key from db, seeing the open batch's writes if a batch is open
    and was opened by the calling thread (else what is committed).
    On NEXUS_OK *value is a fresh copy (caller frees with free()) of
    *value_len bytes. NEXUS_ERR_NOT_FOUND when absent.                      */
nexus_err_t nx_store_get(nx_store_t *self, nx_db_t db, const void *key, size_t key_len,
                         void **value, size_t *value_len);

/*  Calls fn for every key in db in key order (outside of any batch, in a
    read transaction; key and value are valid during the call only). Stops
    early when fn returns non-zero. Returns NEXUS_OK or NEXUS_ERR_STORE.     */
typedef int(nx_store_each_fn)(const void *key, size_t key_len, const void *value, size_t value_len,
                              void *arg);
nexus_err_t nx_store_foreach(nx_store_t *self, nx_db_t db, nx_store_each_fn *fn, void *arg);

/*  True when a batch is open (something was written since the last commit).*/
bool nx_store_in_batch(nx_store_t *self);

/*  Commits the open batch; also trims up to trim_batch events that are over
    a retention limit (now_us is the clock for the age limit), in the same
    transaction. Under sync=full returns after fsync. Returns NEXUS_OK (also
    when no batch was open), NEXUS_ERR_STORE_FULL or NEXUS_ERR_STORE; on
    error the batch is aborted.                                              */
nexus_err_t nx_store_commit(nx_store_t *self, uint64_t now_us);

/*  Under sync=full a commit flushes the data it wrote but not yet LMDB's
    meta page, which is what makes the commit count after a power loss
    (MDB_NOMETASYNC): this halves the flushes on the path from publisher to
    subscriber. The commit becomes durable with the next commit's flush or
    with nx_store_sync, which flushes everything now; "done" replies wait
    for one of the two. Under sync=none it does nothing. Thread-safe.
    Returns NEXUS_OK or NEXUS_ERR_STORE.                                     */
nexus_err_t nx_store_sync(nx_store_t *self);

/*  Aborts the open batch, if any.                                          */
void nx_store_abort(nx_store_t *self);

/*  Makes room before a batch: when the map is more than 3/4 used (or
    need_bytes would not fit), grows it (doubling, up to map_max); at
    map_max, trims the oldest events (ignoring retention limits) until at
    most half the map is used. Must be called with no batch open and no
    reader alive. Returns NEXUS_OK, or NEXUS_ERR_STORE_FULL when it could not
    make room; *action (may be NULL) says what it did: 0 nothing, 1 grew,
    2 trimmed.                                                              */
nexus_err_t nx_store_make_room(nx_store_t *self, uint64_t need_bytes, int *action);

/*  Grows the map past map_max until used + need_bytes fits in 3/4 of it:
    for changes that were acknowledged before the store could tell it was
    full (the write-ahead log holds them; they must be stored). Same
    preconditions as make_room. Returns NEXUS_OK or an error.             */
nexus_err_t nx_store_overdraft(nx_store_t *self, uint64_t need_bytes);

/*  True when used + need_bytes would not fit in 3/4 of a map of map_max
    bytes (pages freed by the last commit count as free). Measures the map
    (a walk of LMDB's free list); call with no batch open.                 */
bool nx_store_full(nx_store_t *self, uint64_t need_bytes);

/*  Trims, in its own transaction, up to max events that are over a
    retention limit. Returns the number deleted, or -1 on error. For idle
    periods: nx_store_commit trims as it goes under load.                   */
int64_t nx_store_trim(nx_store_t *self, uint64_t now_us, uint64_t max);

/*  Fills st with the counters as of the last commit (any thread). Cheap.  */
void nx_store_stats(nx_store_t *self, nx_store_stats_t *st);

/*  The store's identity: NX_STORE_ID_LEN lowercase hex characters (64
    random bits), made when the store is created (or first opened by a
    version that had none) and kept in its meta database for life. A copy
    of data.mdb (a backup, mdb_copy) keeps it; a fresh data directory gets
    another. Clients keep it with their cursors, so a seq from another store
    is told apart from one of this store. Constant while the store is open,
    so any thread may read it. Never NULL.                                  */
#define NX_STORE_ID_LEN 16
const char *nx_store_id(nx_store_t *self);

/*  Highest seq ever committed (0 for a new store). The broker continues
    from here after a restart, even when retention deleted every event.    */
uint64_t nx_store_last_seq(nx_store_t *self);

/*  ts of the newest event (0 when none). The broker keeps ts non-decreasing
    from here.                                                              */
uint64_t nx_store_last_ts(nx_store_t *self);

/*  Writes a consistent copy of the store (one read snapshot, compacted)
    to the file fd is open on, and flushes it (fdatasync). The copy is a
    data.mdb of its own: a standby starts from it (its base copy, with the
    store's identity and checkpoint). Any thread; it holds a read
    snapshot (and the resize lock, shared) while it runs, so make_room
    waits for it. Returns NEXUS_OK or NEXUS_ERR_STORE with the
    reason in err_buf.                          */
nexus_err_t nx_store_copy(nx_store_t *self, int fd, char *err_buf, size_t err_size);

/*  ---- Reading the history ----------------------------------------------
    A reader is a read transaction plus a cursor over the events. It sees
    the committed state as of nx_store_reader_new. Keep readers short: a
    live reader stops LMDB from reusing pages, and delays make_room.
    Readers may be created and used on a thread other than the writer's
    (one reader per thread at a time); the rest of this API belongs to the
    writer's thread.                                                        */

/*  Returns a new reader, or NULL on error.                                 */
nx_store_reader_t *nx_store_reader_new(nx_store_t *self);
void nx_store_reader_destroy(nx_store_reader_t **self_p);

/*  Positions the reader so that the next nx_store_reader_next returns: in
    ascending order the first event with seq >= seq; in descending order
    the last event with seq <= seq (UINT64_MAX: the newest).                 */
void nx_store_reader_seek(nx_store_reader_t *self, uint64_t seq, bool descending);

/*  Returns 1 and fills *seq and *rec with the next event in the order given
    to seek, 0 at the end, -1 on error (a record that does not decode is an
    error). rec's pointers stay valid until the next call or destroy.       */
int nx_store_reader_next(nx_store_reader_t *self, uint64_t *seq, nx_record_t *rec);

/*  The oldest stored seq and the highest committed seq, as of the reader's
    snapshot (0 and 0 for an empty store).                                  */
void nx_store_reader_bounds(nx_store_reader_t *self, uint64_t *first_seq, uint64_t *last_seq);

/*  Returns the first seq whose ts >= ts_us, or last_seq + 1 when none.     */
uint64_t nx_store_reader_seq_at_time(nx_store_reader_t *self, uint64_t ts_us);

#endif
