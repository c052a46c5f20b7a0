/*  =========================================================================
    nx_coord - ties sessions, claims, retries and the snapshot to the
    broker's loop: start-up load, the timers, housekeeping, and the write
    path into the open batch.
    =========================================================================
*/

#include <stdlib.h>
#include <string.h>

#include "nx_auth.h"
#include "nx_coord.h"
#include "nx_log.h"

int nx_sessions_load(nx_broker_t *self);
void nx_sessions_unload(nx_broker_t *self);
uint64_t nx_sessions_tick(nx_broker_t *self, uint64_t now);
void nx_sessions_ready(nx_broker_t *self, uint64_t now);
void nx_sessions_prune(nx_broker_t *self, uint64_t now);
int nx_claims_load(nx_broker_t *self);
void nx_claims_unload(nx_broker_t *self);
uint64_t nx_claims_tick(nx_broker_t *self, uint64_t now);
void nx_claims_prune(nx_broker_t *self, uint64_t now);

static int s_load(nx_broker_t *self)
{
    /*  Claims first: sessions count the claims they hold when they load.  */
    if (nx_claims_load(self) || nx_sessions_load(self))
        return -1;
    return 0;
}

static void s_unload(nx_broker_t *self)
{
    nx_sessions_unload(self);
    nx_claims_unload(self);
}

int nx_coord_start(nx_broker_t *self, char *err_buf, size_t err_size)
{
    self->auth = nx_auth_new(self->cfg.token, self->cfg.tokens_file, err_buf, err_size);
    if (!self->auth)
        return -1;
    if (s_load(self)) {
        snprintf(err_buf, err_size, "cannot load sessions and claims: %s",
                 nx_store_errmsg(self->store));
        return -1;
    }
    nx_info("coordination: %zu sessions known; tokens %s", zhashx_size((zhashx_t *)self->sessions),
            nx_auth_enabled(self->auth) ? "required" : "not configured (open)");
    self->snapshot_dirty = true;
    if (self->cfg.snapshot_file && *self->cfg.snapshot_file) {
        self->snapshot = nx_snapshot_new(self->cfg.snapshot_file);
        if (!self->snapshot) {
            snprintf(err_buf, err_size, "cannot start the snapshot writer");
            return -1;
        }
    }
    return 0;
}

void nx_coord_stop(nx_broker_t *self)
{
    nx_snapshot_destroy(&self->snapshot);
    if (self->sessions || self->claims)
        s_unload(self);
    nx_auth_destroy(&self->auth);
}

/*  What a session has in memory only, kept across a reload.              */
typedef struct {
    char id[NX_ID_MAX + 1];
    uint8_t peer[256];
    size_t peer_len;
    nx_session_status_t status;
    uint64_t last_seen, timeout_at;
} s_live_t;

void nx_coord_reload(nx_broker_t *self)
{
    /*  The store has no connections: without this, every session would come
        back stale and its own connection would be refused (forbidden) until
        it sent its secret, after one failed commit.                        */
    size_t n = 0, cap = zhashx_size((zhashx_t *)self->sessions);
    s_live_t *live = cap ? calloc(cap, sizeof *live) : NULL;
    for (nx_session_t *s = nx_sessions_first(self); s && live && n < cap;
         s = nx_sessions_next(self)) {
        s_live_t *l = &live[n++];
        snprintf(l->id, sizeof l->id, "%s", s->id);
        memcpy(l->peer, s->peer, s->peer_len);
        l->peer_len = s->peer_len;
        l->status = s->status;
        l->last_seen = s->last_seen;
        l->timeout_at = s->timeout_at;
    }
    /*  The fencing counter may stand above anything the store holds (a
        floor raised at start or promotion, over tokens an earlier primary
        may have given out): loading alone would hand those out again. The
        failed turn's own tokens were never seen, so keeping them spent
        costs nothing.                                                      */
    uint64_t fence = nx_claims_fence(self);
    s_unload(self);
    if (s_load(self))
        nx_error("coordination: reload from the store failed: %s", nx_store_errmsg(self->store));
    else {
        nx_claims_fence_floor(self, fence);
        for (size_t i = 0; i < n; i++) {
            nx_session_t *s = nx_sessions_lookup(self, live[i].id);
            if (!s || s->status == NX_SESSION_GONE || live[i].status == NX_SESSION_GONE)
                continue;
            memcpy(s->peer, live[i].peer, live[i].peer_len);
            s->peer_len = live[i].peer_len;
            s->status = live[i].status;
            s->last_seen = live[i].last_seen;
            s->timeout_at = live[i].timeout_at;
            nx_coord_wake_session(self, s->timeout_at);
        }
        nx_warn("coordination: state reloaded from the store after a failed batch");
    }
    free(live);
}

int nx_coord_promote(nx_broker_t *self)
{
    /*  A standby's tables were loaded at its start and never followed the
        log it copied: the store, which took all of it, is the truth.      */
    s_unload(self);
    if (s_load(self))
        return -1;
    nx_sessions_ready(self, nx_now_us());
    self->snapshot_dirty = true;
    return 0;
}

/*  A hold lasts at least this (the I/O thread takes in what arrived during
    a stop), and while the turn after it reads requests.                   */
#define S_HOLD_MIN_US 100000

void nx_coord_paused(nx_broker_t *self, uint64_t away_us)
{
    if (self->expiry_hold || !self->hold_may)
        return; /* one hold between two runs of the timers */
    self->pauses++;
    uint64_t mono = nx_mono_us();
    uint64_t cap = away_us < 1000000 ? 1000000 : away_us > 30000000 ? 30000000 : away_us;
    self->expiry_hold = true;
    self->hold_may = false;
    self->hold_from = mono;
    self->hold_cap = mono + cap;
    if (!self->pause_logged || mono - self->pause_logged >= 60000000) {
        self->pause_logged = mono;
        nx_warn("the loop was away for %.2f s (the process was stopped, its machine paused, "
                "or a turn ran long): leases and sessions expire only once the requests that "
                "came meanwhile are read (within %.1f s)",
                away_us / 1e6, cap / 1e6);
    }
}

void nx_coord_drained(nx_broker_t *self, bool drained)
{
    if (!self->expiry_hold)
        return;
    uint64_t mono = nx_mono_us();
    if ((drained && mono >= self->hold_from + S_HOLD_MIN_US) || mono >= self->hold_cap) {
        self->expiry_hold = false;
        nx_coord_rearm(self); /* the timers run at the next turn */
    }
}

uint64_t nx_coord_tick(nx_broker_t *self, uint64_t now)
{
    /*  After a pause: what came meanwhile first (nx_coord_paused); the
        loop comes back soon, the hold ends with a drained turn.           */
    if (self->expiry_hold)
        return now + 20000;
    self->hold_may = true;
    uint64_t a = nx_claims_tick(self, now);
    /*  The session table is scanned when its earliest deadline is due, not
        at every lease deadline: that scan took 0.4 of a core at 50 000
        sessions with leases ending every millisecond. Heartbeats only move
        deadlines later, so sessions_due may be early, never late.        */
    if (now >= self->sessions_due)
        self->sessions_due = nx_sessions_tick(self, now);
    return a < self->sessions_due ? a : self->sessions_due;
}

void nx_coord_ready(nx_broker_t *self)
{
    nx_sessions_ready(self, nx_now_us());
}

void nx_coord_housekeeping(nx_broker_t *self, uint64_t now)
{
    nx_sessions_prune(self, now);
    nx_claims_prune(self, now);
    nx_coord_snapshot(self);
}

void nx_coord_pack_state(nx_broker_t *self, nx_request_t *rq)
{
    uint64_t items = 0, claimed = 0, deadlines = 0;
    nx_claims_counts(self, &items, &claimed, &deadlines);
    nx_dmap_open(&rq->reply, "coordination");
    nx_pack_kv_u64(nx_kv(rq), "sessions", nx_sessions_count(self));
    nx_pack_kv_u64(nx_kv(rq), "pauses", self->pauses);
    nx_pack_kv_u64(nx_kv(rq), "work_items", items);
    nx_pack_kv_u64(nx_kv(rq), "claimed", claimed);
    nx_pack_kv_u64(nx_kv(rq), "lease_deadlines", deadlines);
    nx_dmap_close(&rq->reply);
}

void nx_coord_snapshot(nx_broker_t *self)
{
    if (self->snapshot && (self->snapshot_dirty || nx_snapshot_failed(self->snapshot))) {
        nx_snapshot_submit(self->snapshot, self);
        self->snapshot_dirty = false;
    }
}

const char *nx_coord_stored_str(const msgpack_object *map, const char *key, size_t *len)
{
    const msgpack_object *v = nx_map_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return NULL;
    *len = v->via.str.size;
    return v->via.str.ptr;
}

/*  Packs o into a scratch buffer, which the caller gives back.            */
static void s_pack_scratch(nx_broker_t *self, const msgpack_object *o, msgpack_sbuffer *buf)
{
    nx_scratch_take(&self->scratch, buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
}

size_t nx_coord_packed_size(nx_broker_t *self, const msgpack_object *o)
{
    msgpack_sbuffer buf;
    s_pack_scratch(self, o, &buf);
    size_t size = buf.size;
    nx_scratch_give(&self->scratch, &buf);
    return size;
}

uint8_t *nx_coord_pack_object(nx_broker_t *self, const msgpack_object *o, size_t *len)
{
    msgpack_sbuffer buf;
    s_pack_scratch(self, o, &buf);
    uint8_t *copy = buf.size ? malloc(buf.size) : NULL;
    if (copy)
        memcpy(copy, buf.data, buf.size);
    *len = copy ? buf.size : 0;
    nx_scratch_give(&self->scratch, &buf);
    return copy;
}

nexus_err_t nx_coord_put(nx_broker_t *self, nx_db_t db, const char *key, size_t key_len,
                         const void *value, size_t value_len)
{
    if (self->batch_failed)
        return NEXUS_ERR_NOMEM;
    self->batch_kv = true;
    if (nx_wal_put(self->wal, (int)db, key, key_len, value, value_len)) {
        self->batch_failed = true;
        return NEXUS_ERR_NOMEM;
    }
    return NEXUS_OK;
}

nexus_err_t nx_coord_del(nx_broker_t *self, nx_db_t db, const char *key, size_t key_len)
{
    if (self->batch_failed)
        return NEXUS_ERR_NOMEM;
    self->batch_kv = true;
    if (nx_wal_del(self->wal, (int)db, key, key_len)) {
        self->batch_failed = true;
        return NEXUS_ERR_NOMEM;
    }
    return NEXUS_OK;
}

void nx_coord_emit(nx_broker_t *self, const char *topic, const char *source, msgpack_sbuffer *buf)
{
    uint64_t seq;
    char err_msg[NX_ERRMSG_MAX];
    /*  The broker's own events are never dropped (protocol.md 6.8): they
        carry what a request brought (a result, metadata), so they may be
        as large as a request plus the fields around it, over max_payload. */
    uint64_t max = self->cfg.max_payload + self->cfg.max_request + 64 * 1024;
    nexus_err_t rc = nx_broker_emit(self, topic, strlen(topic), source, strlen(source), buf->data,
                                    buf->size, max, &seq, err_msg);
    if (rc != NEXUS_OK)
        nx_warn("cannot emit %s: %s", topic, err_msg);
}
