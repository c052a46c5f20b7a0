/*  =========================================================================
    nx_coord - work coordination in the broker: sessions (presence,
    capabilities, status) in nx_sessions.c, leased claims with fencing
    tokens in nx_claims.c, and the JSON
    snapshot in nx_snapshot.c. docs/coordination.md explains the model and
    docs/protocol.md every op.

    All of it runs on the broker's one thread. State lives in memory (hash
    tables); every change is a record in the turn's write-ahead log, so it
    is durable when the turn's log is flushed, before its reply is sent,
    and the LMDB store (the checkpoint) takes it behind. When a turn cannot
    log its changes, the tables are reloaded from the store once it holds
    everything flushed before (nx_coord_reload), so memory never holds what
    the log does not.
    =========================================================================
*/

#ifndef NX_COORD_H_INCLUDED
#define NX_COORD_H_INCLUDED

#include "nx_broker.h"

#define NX_ID_MAX      64    /* bytes in a session id                        */
#define NX_WORK_ID_MAX 256   /* bytes in a work id                           */
#define NX_SECRET_LEN  32    /* hex characters in a session secret           */
#define NX_TEXT_MAX    4096  /* bytes in names, descriptions, status text   */
#define NX_VALUE_MAX   65536 /* packed bytes of a metadata map or a result */
#define NX_CAP_MAX     256   /* bytes in one capability                     */

typedef enum { NX_SESSION_ACTIVE, NX_SESSION_STALE, NX_SESSION_GONE } nx_session_status_t;

typedef struct {
    char id[NX_ID_MAX + 1];         /* the session id                      */
    char secret[NX_SECRET_LEN + 1]; /* proves ownership across connections */
    char *name;                     /* free text                           */
    char **caps;                    /* capabilities                        */
    size_t n_caps;                  /* entries in caps                     */
    uint8_t *metadata;              /* packed msgpack map, or NULL         */
    size_t metadata_len;            /* bytes in metadata                   */
    int state;                      /* 0 available, 1 busy, 2 away         */
    char *current_work;             /* free text, or NULL                  */
    char *text;                     /* free text, or NULL                  */
    nx_session_status_t status;     /* active, stale (after restart), gone */
    uint64_t registered_at;         /* us since epoch                      */
    uint64_t last_seen;             /* us, last heartbeat or action        */
    uint64_t heartbeat_ms;          /* expected heartbeat interval         */
    uint64_t ttl_ms;                /* alive this long without heartbeats  */
    uint64_t timeout_at;            /* us; gone when this passes           */
    uint64_t gone_at;               /* us; when it went, 0 while alive     */
    uint8_t peer[256];              /* routing id of the owning connection */
    size_t peer_len;                /* 0: no connection owns it now        */
    size_t claims;                  /* claims it holds                     */
    uint64_t unregister_hash;       /* request that unregistered it, for
its retries (0: none)               */
    size_t unregister_released;     /* what that request answered          */
    uint64_t cursor;                /* its event cursor (session.cursor):
                                       kept across runs of the id, until
                                       the record is forgotten             */
} nx_session_t;

/*  ---- Lifecycle (called by nx_broker.c) --------------------------------- */

/*  Creates the tables and loads them from the store. Sessions come back
    stale; leases that ran out while the broker was down expire in the next
    nx_coord_tick. Returns 0 or -1 with err_buf set.                         */
int nx_coord_start(nx_broker_t *self, char *err_buf, size_t err_size);
void nx_coord_stop(nx_broker_t *self);

/*  Drops the tables and loads them again from the store: after a failed
    batch, memory must match what was committed.                            */
void nx_coord_reload(nx_broker_t *self);

/*  A standby becomes the primary: the tables are loaded again from the
    store (which holds the whole copied log by then); sessions come back
    stale with a fresh timeout, leases that ran out expire in the next
    tick. Returns 0, or -1 (nx_store_errmsg says why).                      */
int nx_coord_promote(nx_broker_t *self);

/*  Expires leases and sessions due at now (us). Stages writes and events
    in the open batch. Returns the monotonic-free wall time (us) of the next
    deadline, or UINT64_MAX when none.                                      */
uint64_t nx_coord_tick(nx_broker_t *self, uint64_t now);

/*  The loop was away for away_us beyond what it meant (the process was
    stopped, its machine paused, or a turn ran long): requests that came
    meanwhile, heartbeats and renewals sent in time among them, wait in
    the sockets. No lease or session expires until a turn has read the
    control socket empty (0.1 s after this at the earliest, so that the I/O
    thread has taken in what arrived during a stop; as long as the loop was
    away at the latest, 1..30 s). One hold between two runs of the timers,
    so that long turns cannot hold expiries for ever. Logs it (at most once
    a minute).                                                              */
void nx_coord_paused(nx_broker_t *self, uint64_t away_us);

/*  The turn's requests have been read: drained when the control socket
    had no more. Ends a hold that has lasted its least (or its most).      */
void nx_coord_drained(nx_broker_t *self, bool drained);

/*  True when a lease or session deadline (wall us) has passed at now and
    no hold (nx_coord_paused) keeps it: the one test of expiry.           */
static inline bool nx_coord_expired(const nx_broker_t *self, uint64_t deadline, uint64_t now)
{
    return deadline <= now && !self->expiry_hold;
}

/*  Makes the loop wake by at (wall us) for a new lease or session deadline.*/
static inline void nx_coord_wake(nx_broker_t *self, uint64_t at)
{
    if (at < self->next_coord)
        self->next_coord = at;
}

/*  The same for a session's timeout: the session table is scanned by then
    (nx_coord_tick scans it only when its earliest deadline is due).        */
static inline void nx_coord_wake_session(nx_broker_t *self, uint64_t at)
{
    if (at < self->sessions_due)
        self->sessions_due = at;
    nx_coord_wake(self, at);
}

/*  Every deadline is asked again at the next turn (after a reload, a
    promotion, or leading again).                                           */
static inline void nx_coord_rearm(nx_broker_t *self)
{
    self->next_coord = 0;
    self->sessions_due = 0;
}

/*  Once a second: prune gone sessions and closed items;
    write the snapshot file when something changed.                        */
/*  Called once when the loop starts serving: timeouts of sessions that
    came back stale run from here.                                          */
void nx_coord_ready(nx_broker_t *self);
void nx_coord_housekeeping(nx_broker_t *self, uint64_t now);

/*  ---- Shared between the coordination files ---------------------------- */

/*  Finds the session a request acts as ("session" field) and checks the
    caller may act as it: the request's token allows it, and it comes from
    the same connection, carries the matching "secret", or carries a
    tokens-file token that names the session id (not '*'). Marks the
    session seen. Returns NULL with rq failed.                              */
nx_session_t *nx_sessions_authorize(nx_broker_t *self, nx_request_t *rq);
nx_session_t *nx_sessions_lookup(nx_broker_t *self, const char *id);

/*  Iterates the session table (one iteration at a time: the table's own
    cursor).                                                                */
size_t nx_sessions_count(nx_broker_t *self);
nx_session_t *nx_sessions_first(nx_broker_t *self);
nx_session_t *nx_sessions_next(nx_broker_t *self);
void nx_sessions_pack(msgpack_packer *pk, const nx_session_t *s);

/*  Releases (reason "holder_gone") or keeps the claims of a session that
    went. Returns how many were released.                                   */
size_t nx_claims_on_session_gone(nx_broker_t *self, const char *session, bool release);
/*  The last fencing token handed out, and raising it (after a crash).      */
uint64_t nx_claims_fence(nx_broker_t *self);
void nx_claims_fence_floor(nx_broker_t *self, uint64_t fence);

/*  Number of active claims held by session.                                */
size_t nx_claims_held(nx_broker_t *self, const char *session);

/*  Packs the tables' sizes for `state` ("coordination"): sessions known,
    work items known, of which claimed, and lease deadlines the timers
    hold (renewals leave old ones until the heap is compacted).             */
void nx_coord_pack_state(nx_broker_t *self, nx_request_t *rq);
void nx_claims_counts(nx_broker_t *self, uint64_t *items, uint64_t *claimed, uint64_t *deadlines);

/*  Logs key -> value in db (a record of the turn) and marks the turn as
    changing coordination state. Returns NEXUS_OK, or NEXUS_ERR_NOMEM when
    the record cannot be logged (the turn then fails as a whole).           */
nexus_err_t nx_coord_put(nx_broker_t *self, nx_db_t db, const char *key, size_t key_len,
                         const void *value, size_t value_len);
nexus_err_t nx_coord_del(nx_broker_t *self, nx_db_t db, const char *key, size_t key_len);

/*  Emits an event whose payload is the msgpack map in buf.                 */
void nx_coord_emit(nx_broker_t *self, const char *topic, const char *source, msgpack_sbuffer *buf);

/*  Copies a msgpack str object into a fresh NUL-terminated string, or NULL.*/
char *nx_coord_strdup(const char *ptr, size_t len);

/*  Packs o into a fresh buffer of exactly *len bytes (the caller frees it),
    or NULL when out of memory. Items keep these for as long as they live,
    so the buffer is not a growable msgpack_sbuffer (8 KiB at least).      */
/*  A str field of a record read back from the store, or NULL: taken as it
    was stored, without nx_map_str's UTF-8 check (stores of earlier
    versions may hold strings that were not checked; dropping them on
    load would lose them).                                                  */
const char *nx_coord_stored_str(const msgpack_object *map, const char *key, size_t *len);

/*  The size of o packed as msgpack.                                      */
size_t nx_coord_packed_size(nx_broker_t *self, const msgpack_object *o);
uint8_t *nx_coord_pack_object(nx_broker_t *self, const msgpack_object *o, size_t *len);

/*  The op handlers, listed in nx_ops.c's table.                            */
nx_op_fn nx_op_session_register, nx_op_session_heartbeat, nx_op_session_status,
    nx_op_session_unregister, nx_op_session_cursor, nx_op_session_get, nx_op_session_list,
    nx_op_session_find;
nx_op_fn nx_op_work_claim, nx_op_work_renew, nx_op_work_release, nx_op_work_complete,
    nx_op_work_reopen, nx_op_work_get, nx_op_work_list;

/*  ---- Snapshot (nx_snapshot.c) ----------------------------------------- */

/*  Rewrites the snapshot file if something changed since it was written
    (housekeeping, once a second, and at stop).                             */
void nx_coord_snapshot(nx_broker_t *self);

/*  The snapshot file's writer thread (nx_snapshot.c). submit packs the
    active sessions and claims on the calling thread and hands them over;
    the thread writes the newest state it has as JSON, atomically (temp
    file + rename). destroy writes what was submitted last, then stops.    */
nx_snapshot_t *nx_snapshot_new(const char *path);
void nx_snapshot_destroy(nx_snapshot_t **self_p);
void nx_snapshot_submit(nx_snapshot_t *self, nx_broker_t *broker);
/*  True when the last write failed (it was logged): submit again.         */
bool nx_snapshot_failed(nx_snapshot_t *self);

#endif
