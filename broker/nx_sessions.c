/*  =========================================================================
    nx_sessions - who is on the fabric: registration, heartbeats, status,
    capabilities, and the timeout that declares a silent session gone.

    Ownership: a session belongs to the connection that registered it. Any
    other connection may act as it only with the session's secret (returned
    by register; the CLI keeps it in a state file so a shell script can be
    one session across many short calls), or with a tokens-file token that
    names the session id. With tokens configured, the token must also allow
    the session id.
    =========================================================================
*/

#include <string.h>
#include <sys/random.h>

#include "nx_auth.h"
#include "nx_coord.h"
#include "nx_log.h"
#include "nx_topic.h"
#include "nx_topk.h"

static const char *s_states[] = {"available", "busy", "away"};
static const char *s_statuses[] = {"active", "stale", "gone"};

/*  The table: id -> nx_session_t*, owned.                                  */
static zhashx_t *s_table(nx_broker_t *self)
{
    return (zhashx_t *)self->sessions;
}

static void s_session_free(void **item)
{
    nx_session_t *s = *item;
    if (!s)
        return;
    free(s->name);
    for (size_t i = 0; i < s->n_caps; i++)
        free(s->caps[i]);
    free(s->caps);
    free(s->metadata);
    free(s->current_work);
    free(s->text);
    free(s);
    *item = NULL;
}

char *nx_coord_strdup(const char *ptr, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, ptr, len);
        s[len] = 0;
    }
    return s;
}

static uint64_t s_timeout_ms(nx_broker_t *self, const nx_session_t *s)
{
    uint64_t t = s->heartbeat_ms * self->cfg.heartbeat_misses;
    return s->ttl_ms > t ? s->ttl_ms : t;
}

/*  ---- Persistence -------------------------------------------------------- */

static void s_pack_strs(msgpack_packer *pk, char **strs, size_t n)
{
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        nx_pack_str(pk, strs[i]);
}

static void s_pack_opt_str(msgpack_packer *pk, const char *key, const char *value)
{
    if (value)
        nx_pack_kv_str(pk, key, value);
    else
        nx_pack_kv_nil(pk, key);
}

static void s_pack_metadata(msgpack_packer *pk, const nx_session_t *s)
{
    nx_pack_str(pk, "metadata");
    if (s->metadata)
        msgpack_sbuffer_write(pk->data, (const char *)s->metadata, s->metadata_len);
    else
        msgpack_pack_map(pk, 0);
}

/*  The public record (never the secret).                                   */
void nx_sessions_pack(msgpack_packer *pk, const nx_session_t *s)
{
    msgpack_pack_map(pk, 14);
    nx_pack_kv_str(pk, "session", s->id);
    s_pack_opt_str(pk, "name", s->name);
    nx_pack_str(pk, "capabilities");
    s_pack_strs(pk, s->caps, s->n_caps);
    s_pack_metadata(pk, s);
    nx_pack_kv_str(pk, "state", s_states[s->state]);
    s_pack_opt_str(pk, "current_work", s->current_work);
    s_pack_opt_str(pk, "text", s->text);
    nx_pack_kv_str(pk, "status", s_statuses[s->status]);
    nx_pack_kv_u64(pk, "registered_at", s->registered_at);
    nx_pack_kv_u64(pk, "last_seen", s->last_seen);
    nx_pack_kv_u64(pk, "heartbeat_ms", s->heartbeat_ms);
    nx_pack_kv_u64(pk, "ttl_ms", s->ttl_ms);
    nx_pack_kv_u64(pk, "timeout_at", s->timeout_at);
    nx_pack_kv_u64(pk, "claims", s->claims);
}

static nexus_err_t s_save(nx_broker_t *self, nx_session_t *s)
{
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    /*  The stored record is the public one plus what must survive: the
        secret, when it went, and its event cursor (session.cursor).        */
    msgpack_pack_array(&pk, 4);
    nx_sessions_pack(&pk, s);
    nx_pack_str(&pk, s->secret);
    msgpack_pack_uint64(&pk, s->gone_at);
    msgpack_pack_uint64(&pk, s->cursor);
    nexus_err_t rc = nx_coord_put(self, NX_DB_SESSIONS, s->id, strlen(s->id), buf.data, buf.size);
    nx_scratch_give(&self->scratch, &buf);
    self->snapshot_dirty = true;
    return rc;
}

static char *s_get_str(const msgpack_object *map, const char *key)
{
    size_t n = 0;
    const char *p = nx_coord_stored_str(map, key, &n);
    return p ? nx_coord_strdup(p, n) : NULL;
}

static uint64_t s_get_u64(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;
    nx_map_u64(map, key, &v, NULL);
    return v;
}

static int s_index_of(const char **names, int count, const char *value)
{
    for (int i = 0; value && i < count; i++)
        if (strcmp(names[i], value) == 0)
            return i;
    return 0;
}

static int s_load_one(const void *key, size_t key_len, const void *value, size_t value_len,
                      void *arg)
{
    nx_broker_t *self = arg;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    /*  A damaged record could declare counts msgpack-c would allocate
        (the nesting is left to msgpack-c, as before).                     */
    if (nx_msgpack_check(value, value_len, 63) != NX_MSGPACK_OK ||
        msgpack_unpack_next(&u, value, value_len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size < 3 ||
        u.data.via.array.ptr[0].type != MSGPACK_OBJECT_MAP || key_len > NX_ID_MAX) {
        nx_warn("sessions: skipping a record that does not decode");
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    const msgpack_object *rec = &u.data.via.array.ptr[0];
    nx_session_t *s = calloc(1, sizeof *s);
    memcpy(s->id, key, key_len);
    const msgpack_object *secret = &u.data.via.array.ptr[1];
    if (secret->type == MSGPACK_OBJECT_STR && secret->via.str.size == NX_SECRET_LEN)
        memcpy(s->secret, secret->via.str.ptr, NX_SECRET_LEN);
    if (u.data.via.array.ptr[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        s->gone_at = u.data.via.array.ptr[2].via.u64;
    /*  Records of earlier versions have no cursor: 0, the beginning.      */
    if (u.data.via.array.size > 3 &&
        u.data.via.array.ptr[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        s->cursor = u.data.via.array.ptr[3].via.u64;
    s->name = s_get_str(rec, "name");
    const msgpack_object *caps = nx_map_get(rec, "capabilities");
    if (caps && caps->type == MSGPACK_OBJECT_ARRAY && caps->via.array.size) {
        s->caps = calloc(caps->via.array.size, sizeof(char *));
        for (uint32_t i = 0; s->caps && i < caps->via.array.size; i++) {
            const msgpack_object *c = &caps->via.array.ptr[i];
            if (c->type == MSGPACK_OBJECT_STR)
                s->caps[s->n_caps++] = nx_coord_strdup(c->via.str.ptr, c->via.str.size);
        }
    }
    const msgpack_object *md = nx_map_get(rec, "metadata");
    if (md && md->type == MSGPACK_OBJECT_MAP && md->via.map.size) {
        s->metadata = nx_coord_pack_object(self, md, &s->metadata_len);
    }
    char *state = s_get_str(rec, "state");
    s->state = s_index_of(s_states, 3, state);
    free(state);
    s->current_work = s_get_str(rec, "current_work");
    s->text = s_get_str(rec, "text");
    char *status = s_get_str(rec, "status");
    s->status = (nx_session_status_t)s_index_of(s_statuses, 3, status);
    free(status);
    s->registered_at = s_get_u64(rec, "registered_at");
    s->last_seen = s_get_u64(rec, "last_seen");
    s->heartbeat_ms = s_get_u64(rec, "heartbeat_ms");
    s->ttl_ms = s_get_u64(rec, "ttl_ms");
    if (!s->heartbeat_ms)
        s->heartbeat_ms = self->cfg.heartbeat;
    /*  No connection survives a restart: a live session becomes stale and
        gets one full timeout from now to heartbeat (with its secret).     */
    if (s->status != NX_SESSION_GONE) {
        s->status = NX_SESSION_STALE;
        s->timeout_at = nx_now_us() + s_timeout_ms(self, s) * 1000;
        nx_coord_wake_session(self, s->timeout_at);
    }
    zhashx_update(s_table(self), s->id, s);
    msgpack_unpacked_destroy(&u);
    return 0;
}

int nx_sessions_load(nx_broker_t *self)
{
    zhashx_t *table = zhashx_new();
    if (!table)
        return -1;
    zhashx_set_destructor(table, s_session_free);
    self->sessions = (struct _nx_sessions_t *)table;
    return nx_store_foreach(self->store, NX_DB_SESSIONS, s_load_one, self) == NEXUS_OK ? 0 : -1;
}

void nx_sessions_unload(nx_broker_t *self)
{
    zhashx_t *table = s_table(self);
    zhashx_destroy(&table);
    self->sessions = NULL;
}

nx_session_t *nx_sessions_lookup(nx_broker_t *self, const char *id)
{
    return zhashx_lookup(s_table(self), id);
}

/*  ---- Identity ------------------------------------------------------------ */

/*  Whether the request's routing id is one the ROUTER assigned: a zero
    byte and a 32-bit counter that starts at a random value, never given to
    two connections. A client may choose its own routing id (ZMQ_ROUTING_ID)
    and so take the id of a connection that has gone; such ids do not
    identify a connection here, and their sessions need the secret.        */
static bool s_assigned_peer(const nx_request_t *rq)
{
    return rq->peer && rq->peer_len == 5 && rq->peer[0] == 0;
}

static bool s_same_peer(const nx_request_t *rq, const nx_session_t *s)
{
    return s_assigned_peer(rq) && s->peer_len && s->peer_len == rq->peer_len &&
           memcmp(s->peer, rq->peer, s->peer_len) == 0;
}

static bool s_secret_ok(const nx_session_t *s, const char *secret, size_t len)
{
    if (!secret || len != NX_SECRET_LEN)
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < NX_SECRET_LEN; i++)
        diff |= (unsigned char)s->secret[i] ^ (unsigned char)secret[i];
    return diff == 0;
}

/*  Whether the request's token is a tokens-file token that lists id by
    name. Such a token is the session's own credential ("a client that
    presents that session's token", issue 3): it acts as the session from
    any connection, so that a restarted worker can finish the work it
    still holds. A '*' token and the shared token are fabric-wide, not any
    one session's, and still need the connection or the secret.            */
static bool s_token_names(nx_broker_t *self, const nx_request_t *rq, const char *id)
{
    return rq->auth && nx_auth_names(self->auth, rq->auth, id, strlen(id));
}

static void s_bind_peer(const nx_request_t *rq, nx_session_t *s)
{
    s->peer_len = 0;
    if (s_assigned_peer(rq) && rq->peer_len <= sizeof s->peer) {
        memcpy(s->peer, rq->peer, rq->peer_len);
        s->peer_len = rq->peer_len;
    }
}

/*  Marks s seen now; a stale session becomes active again.                 */
static void s_touch(nx_broker_t *self, nx_session_t *s, uint64_t now)
{
    s->last_seen = now;
    s->timeout_at = now + s_timeout_ms(self, s) * 1000;
    nx_coord_wake_session(self, s->timeout_at);
    if (s->status == NX_SESSION_STALE)
        s->status = NX_SESSION_ACTIVE;
    /*  The snapshot shows status, last_seen and timeout_at: rewritten at
        most once a second, so a heartbeat may mark it.                     */
    self->snapshot_dirty = true;
}

/*  Authorizes acting as session id (secret may be NULL): the checks of
    nx_sessions_authorize for one id, without failing rq (a heartbeat of
    many sessions checks each alone). NULL with *err and err_msg set.      */
static nx_session_t *s_authorize_id(nx_broker_t *self, const nx_request_t *rq, const char *id,
                                    size_t id_len, const char *secret, size_t secret_len,
                                    nexus_err_t *err, char *err_msg)
{
    char key[NX_ID_MAX + 1];
    nx_session_t *s = NULL;
    if (nx_session_id_valid(id, id_len)) {
        memcpy(key, id, id_len);
        key[id_len] = 0;
        s = nx_sessions_lookup(self, key);
    }
    if (!s || s->status == NX_SESSION_GONE) {
        *err = NEXUS_ERR_NOT_FOUND;
        snprintf(err_msg, NX_ERRMSG_MAX, "no active session '%.*s' (register first)",
                 (int)(id_len > NX_ID_MAX ? NX_ID_MAX : id_len), id);
        return NULL;
    }
    if (!nx_auth_allows(self->auth, rq->auth, s->id, strlen(s->id))) {
        *err = NEXUS_ERR_FORBIDDEN;
        snprintf(err_msg, NX_ERRMSG_MAX, "this token may not act as session '%s'", s->id);
        return NULL;
    }
    if (!s_same_peer(rq, s)) {
        if (!s_secret_ok(s, secret, secret_len) && !s_token_names(self, rq, s->id)) {
            *err = NEXUS_ERR_FORBIDDEN;
            snprintf(err_msg, NX_ERRMSG_MAX,
                     "session '%s' belongs to another connection; send its secret (or a token "
                     "that names it) to act as it",
                     s->id);
            return NULL;
        }
        /*  A session without a live connection (stale after a restart, or
            a script's TTL session: its registering command exits, and a
            ROUTER never says that a connection went) is taken over by
            whoever has the secret or its token, so that heartbeats from
            that connection work without them. A TTL session still heard
            within its heartbeat interval keeps its connection (a gateway
            heartbeats the sessions it hosts without their secrets: two
            owners would take it from each other at every heartbeat).     */
        bool quiet = nx_now_us() > s->last_seen + s->heartbeat_ms * 1000;
        if (s->status == NX_SESSION_STALE || !s->peer_len || (s->ttl_ms && quiet))
            s_bind_peer(rq, s);
    }
    s_touch(self, s, nx_now_us());
    return s;
}

nx_session_t *nx_sessions_authorize(nx_broker_t *self, nx_request_t *rq)
{
    /*  The table checked "session" (required, a str) and "secret".        */
    const char *id = NULL, *secret = NULL;
    size_t id_len = 0, secret_len = 0;
    nx_map_str(rq->fields, "session", &id, &id_len, NULL);
    nx_map_str(rq->fields, "secret", &secret, &secret_len, NULL);
    if (!id) {
        nx_request_fail(rq, NEXUS_ERR_BAD_REQUEST, "missing field 'session'");
        return NULL;
    }
    nexus_err_t err = NEXUS_OK;
    char msg[NX_ERRMSG_MAX];
    nx_session_t *s = s_authorize_id(self, rq, id, id_len, secret, secret_len, &err, msg);
    if (!s)
        nx_request_fail(rq, err, "%s", msg);
    return s;
}

/*  ---- Events ------------------------------------------------------------ */

static void s_emit_connected(nx_broker_t *self, nx_session_t *s, bool resumed)
{
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    nx_pack_kv_str(&pk, "session", s->id);
    s_pack_opt_str(&pk, "name", s->name);
    nx_pack_str(&pk, "capabilities");
    s_pack_strs(&pk, s->caps, s->n_caps);
    s_pack_metadata(&pk, s);
    nx_pack_kv_bool(&pk, "resumed", resumed);
    nx_coord_emit(self, "session.connected", s->id, &buf);
    nx_scratch_give(&self->scratch, &buf);
}

/*  Declares s gone: event, claims, record. reason: timeout | unregistered
    | replaced.                                                             */
static size_t s_gone(nx_broker_t *self, nx_session_t *s, const char *reason, uint64_t now)
{
    size_t released = nx_claims_on_session_gone(
        self, s->id, self->cfg.claims_on_disconnect == 0 || strcmp(reason, "unregistered") == 0);
    s->status = NX_SESSION_GONE;
    s->gone_at = now;
    /*  The peer stays recorded (a gone session cannot be acted as) so that
        its owner's retry of the unregister is recognized.                 */
    s->claims = nx_claims_held(self, s->id);
    s_save(self, s);
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    nx_pack_kv_str(&pk, "session", s->id);
    nx_pack_kv_str(&pk, "reason", reason);
    nx_pack_kv_u64(&pk, "released", released);
    nx_coord_emit(self, "session.disconnected", s->id, &buf);
    nx_scratch_give(&self->scratch, &buf);
    nx_info("session %s gone (%s), %zu claims released", s->id, reason, released);
    return released;
}

/*  ---- Ops ---------------------------------------------------------------- */

/*  Reads an optional free-text field (str or nil, checked by the table):
 *present tells whether it was given, *out its copy (NULL for nil).    */
static void s_text_field(const msgpack_object *req, const char *key, char **out, bool *present)
{
    const char *p = NULL;
    size_t n = 0;
    const msgpack_object *o = nx_map_get(req, key);
    *present = o != NULL;
    *out = NULL;
    if (o && o->type == MSGPACK_OBJECT_STR && nx_map_str(req, key, &p, &n, NULL) == NEXUS_OK)
        *out = nx_coord_strdup(p, n);
}

/*  Makes room for a session never seen before. Gone sessions stay listed
    for session_retain, and they count toward sessions_max: without this a
    loop of register and unregister with new ids would lock every new
    session out for that long. At the limit the oldest gone session that
    holds no claims (kept claims need their holder's record) is forgotten
    early. Returns NEXUS_OK, NEXUS_ERR_BUSY when nothing can go, or the
    store's error.                                                          */
static nexus_err_t s_make_room(nx_broker_t *self)
{
    if (zhashx_size(s_table(self)) < self->cfg.sessions_max)
        return NEXUS_OK;
    nx_session_t *oldest = NULL;
    for (nx_session_t *s = zhashx_first(s_table(self)); s; s = zhashx_next(s_table(self)))
        if (s->status == NX_SESSION_GONE && nx_claims_held(self, s->id) == 0 &&
            (!oldest || s->gone_at < oldest->gone_at))
            oldest = s;
    if (!oldest)
        return NEXUS_ERR_BUSY;
    nexus_err_t rc = nx_coord_del(self, NX_DB_SESSIONS, oldest->id, strlen(oldest->id));
    if (rc)
        return rc;
    nx_info("sessions_max reached: forgetting gone session %s early", oldest->id);
    self->snapshot_dirty = true;
    zhashx_delete(s_table(self), oldest->id);
    return NEXUS_OK;
}

int nx_op_session_register(nx_broker_t *self, nx_request_t *rq)
{
    /*  Types and fixed bounds are checked (nx_optab): what is left is the
        id's grammar and the state of the table.                           */
    const msgpack_object *req = rq->fields;
    const char *id = NULL, *secret = NULL;
    size_t id_len = 0, secret_len = 0;
    const msgpack_object_array *caps = NULL;
    /*  A field absent keeps the old value on a resume; presence, not a
        sentinel value, says so (every u64 is a value a client may send).  */
    uint64_t heartbeat = 0, ttl = 0;
    nx_map_str(req, "session", &id, &id_len, NULL);
    nx_map_str(req, "secret", &secret, &secret_len, NULL);
    nx_map_str_array(req, "capabilities", &caps, NULL);
    nx_map_u64(req, "heartbeat_ms", &heartbeat, NULL);
    nx_map_u64(req, "ttl_ms", &ttl, NULL);
    const msgpack_object *md = nx_map_get(req, "metadata");
    if (id && !nx_session_id_valid(id, id_len))
        return nx_request_fail(rq, NEXUS_ERR_BAD_REQUEST,
                               "field 'session' must be 1..64 of [A-Za-z0-9_:@-]");
    bool has_heartbeat = nx_map_get(req, "heartbeat_ms") != NULL;
    bool has_ttl = nx_map_get(req, "ttl_ms") != NULL;
    char *name = NULL;
    bool has_name;
    s_text_field(req, "name", &name, &has_name);

    char key[NX_ID_MAX + 1];
    if (id) {
        memcpy(key, id, id_len);
        key[id_len] = 0;
    } else {
        uint8_t rnd[6];
        if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
            memset(rnd, 0, sizeof rnd);
        snprintf(key, sizeof key, "s-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4], rnd[5]);
    }
    if (!nx_auth_allows(self->auth, rq->auth, key, strlen(key))) {
        free(name);
        return nx_request_fail(rq, NEXUS_ERR_FORBIDDEN, "this token may not register session '%s'",
                               key);
    }
    uint64_t now = nx_now_us();
    nx_session_t *s = nx_sessions_lookup(self, key);
    bool resumed = false, replacing = false;
    if (s && s->status != NX_SESSION_GONE) {
        /*  Taking back a live session needs its connection or its secret;
            a token that names the session may replace it outright.        */
        if (s_same_peer(rq, s) || s_secret_ok(s, secret, secret_len))
            resumed = true;
        else if (rq->auth && nx_auth_allows(self->auth, rq->auth, key, strlen(key)))
            replacing = true;
        else {
            free(name);
            return nx_request_fail(rq, NEXUS_ERR_FORBIDDEN,
                                   "session '%s' is active on another connection; send its "
                                   "secret to take it back",
                                   key);
        }
    }
    /*  Everything that can refuse the request comes before the first
        change: a client told "busy" must still have its old session. A
        replacement or a new run of a gone id reuses the record, so only
        an id never seen needs room.                                        */
    char new_secret[NX_SECRET_LEN + 1] = "";
    if (!resumed) {
        uint8_t rnd[NX_SECRET_LEN / 2];
        if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
            free(name);
            return nx_request_fail(rq, NEXUS_ERR_INTERNAL, "no randomness for the secret");
        }
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(new_secret + 2 * i, 3, "%02x", rnd[i]);
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            free(name);
            return nx_request_fail(rq, NEXUS_ERR_NOMEM, "out of memory");
        }
        nexus_err_t room = s_make_room(self);
        if (room) {
            free(name);
            free(s);
            return nx_request_fail(rq, room, "%s",
                                   room == NEXUS_ERR_BUSY
                                       ? "too many sessions (sessions_max), and none gone "
                                         "without claims to forget"
                                       : "the store could not forget a gone session");
        }
        memcpy(s->id, key, strlen(key) + 1);
        s->status = NX_SESSION_GONE;
        zhashx_update(s_table(self), s->id, s);
    }
    if (replacing)
        s_gone(self, s, "replaced", now);
    if (s->status == NX_SESSION_GONE) {
        /*  A new run of the id starts clean: the status, the owner and
            the last unregister belong to the run that went.               */
        memcpy(s->secret, new_secret, sizeof s->secret);
        s->registered_at = now;
        s->gone_at = 0;
        s->state = 0;
        free(s->current_work);
        s->current_work = NULL;
        free(s->text);
        s->text = NULL;
        s->peer_len = 0;
        s->unregister_hash = 0;
        s->unregister_released = 0;
    }
    /*  Fields given replace the old ones; fields absent stay (a resume may
        send only the id and secret).                                       */
    if (has_name || !resumed) {
        free(s->name);
        s->name = name;
    } else
        free(name);
    if (caps || !resumed) {
        for (size_t i = 0; i < s->n_caps; i++)
            free(s->caps[i]);
        free(s->caps);
        s->caps = NULL;
        s->n_caps = 0;
        if (caps && caps->size) {
            s->caps = calloc(caps->size, sizeof(char *));
            for (uint32_t i = 0; i < caps->size; i++)
                s->caps[s->n_caps++] =
                    nx_coord_strdup(caps->ptr[i].via.str.ptr, caps->ptr[i].via.str.size);
        }
    }
    if (md || !resumed) {
        free(s->metadata);
        s->metadata = NULL;
        s->metadata_len = 0;
        if (md && md->type == MSGPACK_OBJECT_MAP) {
            s->metadata = nx_coord_pack_object(self, md, &s->metadata_len);
        }
    }
    if (has_heartbeat || !resumed)
        s->heartbeat_ms = has_heartbeat ? heartbeat : self->cfg.heartbeat;
    if (has_ttl || !resumed)
        s->ttl_ms = ttl;
    s->status = NX_SESSION_ACTIVE;
    s_bind_peer(rq, s);
    s_touch(self, s, now);
    s->claims = nx_claims_held(self, s->id);
    nexus_err_t saved = s_save(self, s);
    if (saved)
        return nx_request_fail(rq, saved, "the store could not take the session");
    s_emit_connected(self, s, resumed);

    nx_pack_kv_str(nx_kv(rq), "session", s->id);
    nx_pack_kv_str(nx_kv(rq), "secret", s->secret);
    nx_pack_kv_u64(nx_kv(rq), "heartbeat_ms", s->heartbeat_ms);
    nx_pack_kv_u64(nx_kv(rq), "timeout_ms", s_timeout_ms(self, s));
    nx_pack_kv_bool(nx_kv(rq), "resumed", resumed);
    nx_pack_kv_u64(nx_kv(rq), "cursor", s->cursor);
    return 0;
}

int nx_op_session_heartbeat(nx_broker_t *self, nx_request_t *rq)
{
    /*  A gateway hosts many sessions on one connection: "sessions" lists
        them all in one request, so its heartbeats cost one round trip.
        Each is authorized as if it came alone; the reply lists the ones
        that were not alive any more, so the gateway can register them
        again.                                                              */
    const msgpack_object_array *many = NULL;
    nx_map_str_array(rq->fields, "sessions", &many, NULL);
    if (many) {
        msgpack_sbuffer lost;
        msgpack_sbuffer_init(&lost);
        msgpack_packer lpk;
        msgpack_packer_init(&lpk, &lost, msgpack_sbuffer_write);
        uint32_t n_lost = 0, n_ok = 0;
        for (uint32_t i = 0; i < many->size; i++) {
            nexus_err_t one_err;
            char one_msg[NX_ERRMSG_MAX];
            if (s_authorize_id(self, rq, many->ptr[i].via.str.ptr, many->ptr[i].via.str.size, NULL,
                               0, &one_err, one_msg))
                n_ok++;
            else {
                nx_pack_strn(&lpk, many->ptr[i].via.str.ptr, many->ptr[i].via.str.size);
                n_lost++;
            }
        }
        nx_pack_kv_u64(nx_kv(rq), "alive", n_ok);
        nx_pack_str(nx_kv(rq), "lost");
        msgpack_pack_array(&rq->reply.pk, n_lost);
        msgpack_sbuffer_write(rq->reply.buf, lost.data, lost.size);
        msgpack_sbuffer_destroy(&lost);
        return 0;
    }
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return -1;
    /*  Heartbeats are not written through: a restart gives every session a
        fresh timeout anyway, and an fsync per heartbeat would be waste.    */
    nx_pack_kv_u64(nx_kv(rq), "timeout_at", s->timeout_at);
    nx_pack_kv_str(nx_kv(rq), "status", s_statuses[s->status]);
    return 0;
}

int nx_op_session_status(nx_broker_t *self, nx_request_t *rq)
{
    const char *state = NULL;
    size_t state_len = 0;
    nx_map_str(rq->fields, "state", &state, &state_len, NULL);
    int st = -1;
    for (int i = 0; state && i < 3; i++)
        if (strlen(s_states[i]) == state_len && memcmp(s_states[i], state, state_len) == 0)
            st = i;
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return -1;
    char *work = NULL, *text = NULL;
    bool has_work, has_text;
    s_text_field(rq->fields, "current_work", &work, &has_work);
    s_text_field(rq->fields, "text", &text, &has_text);
    if (st >= 0)
        s->state = st;
    if (has_work) {
        free(s->current_work);
        s->current_work = work;
    }
    if (has_text) {
        free(s->text);
        s->text = text;
    }
    nexus_err_t saved = s_save(self, s);
    if (saved)
        return nx_request_fail(rq, saved, "the store could not take the status");
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer epk;
    msgpack_packer_init(&epk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&epk, 4);
    nx_pack_kv_str(&epk, "session", s->id);
    nx_pack_kv_str(&epk, "state", s_states[s->state]);
    s_pack_opt_str(&epk, "current_work", s->current_work);
    s_pack_opt_str(&epk, "text", s->text);
    nx_coord_emit(self, "status.update", s->id, &buf);
    nx_scratch_give(&self->scratch, &buf);
    nx_pack_str(nx_kv(rq), "session");
    s->claims = nx_claims_held(self, s->id);
    nx_sessions_pack(&rq->reply.pk, s);
    return 0;
}

int nx_op_session_unregister(nx_broker_t *self, nx_request_t *rq)
{
    /*  A retry of the unregister that ended the session (from its owner)
        is answered as the first time, not with "no such session".        */
    const char *id = NULL, *secret = NULL;
    size_t id_len = 0, secret_len = 0;
    nx_map_str(rq->fields, "session", &id, &id_len, NULL);
    nx_map_str(rq->fields, "secret", &secret, &secret_len, NULL);
    if (id && nx_session_id_valid(id, id_len) && rq->hash) {
        char key[NX_ID_MAX + 1];
        memcpy(key, id, id_len);
        key[id_len] = 0;
        nx_session_t *gone = nx_sessions_lookup(self, key);
        if (gone && gone->status == NX_SESSION_GONE && gone->unregister_hash == rq->hash &&
            (s_same_peer(rq, gone) || s_secret_ok(gone, secret, secret_len) ||
             s_token_names(self, rq, gone->id))) {
            nx_pack_kv_u64(nx_kv(rq), "released", gone->unregister_released);
            return 0;
        }
    }
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return -1;
    s->unregister_hash = rq->hash;
    size_t released = s_gone(self, s, "unregistered", nx_now_us());
    s->unregister_released = released;
    nx_pack_kv_u64(nx_kv(rq), "released", released);
    return 0;
}

int nx_op_session_cursor(nx_broker_t *self, nx_request_t *rq)
{
    /*  The session's position in the event stream, kept by the broker so
        that an agent, its MCP server or the broker itself may restart and
        the next `get_events resume` starts after the last event handed
        out: it is written through like the rest of the record, durable
        before the reply.                                                   */
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return -1;
    uint64_t seq = 0;
    if (nx_map_get(rq->fields, "seq")) {
        nx_map_u64(rq->fields, "seq", &seq, NULL);
        s->cursor = seq;
        nexus_err_t saved = s_save(self, s);
        if (saved)
            return nx_request_fail(rq, saved, "the store could not take the cursor");
    }
    nx_pack_kv_str(nx_kv(rq), "session", s->id);
    nx_pack_kv_u64(nx_kv(rq), "cursor", s->cursor);
    return 0;
}

int nx_op_session_get(nx_broker_t *self, nx_request_t *rq)
{
    const char *id = NULL;
    size_t id_len = 0;
    nx_map_str(rq->fields, "session", &id, &id_len, NULL);
    nx_session_t *s = NULL;
    if (nx_session_id_valid(id, id_len)) {
        char key[NX_ID_MAX + 1];
        memcpy(key, id, id_len);
        key[id_len] = 0;
        s = nx_sessions_lookup(self, key);
    }
    if (!s)
        return nx_request_fail(rq, NEXUS_ERR_NOT_FOUND, "no session '%.*s'",
                               (int)(id_len > 64 ? 64 : id_len), id);
    s->claims = nx_claims_held(self, s->id);
    nx_pack_str(nx_kv(rq), "session");
    nx_sessions_pack(&rq->reply.pk, s);
    return 0;
}

static bool s_has_cap(const nx_session_t *s, const char *cap, size_t len)
{
    for (size_t i = 0; i < s->n_caps; i++)
        if (strlen(s->caps[i]) == len && memcmp(s->caps[i], cap, len) == 0)
            return true;
    return false;
}

static int s_id_cmp(const void *a, const void *b)
{
    return strcmp(((const nx_session_t *)a)->id, ((const nx_session_t *)b)->id);
}

/*  Lists sessions that pass the filter of the request; shared by list and
    find.                                                                   */
static int s_list(nx_broker_t *self, nx_request_t *rq, bool find)
{
    const msgpack_object *req = rq->fields;
    bool all = false, available = false;
    uint64_t window = self->cfg.session_retain, limit = 1000;
    const char *cap = NULL, *after = NULL;
    size_t cap_len = 0, after_len = 0;
    const msgpack_object_array *caps = NULL;
    nx_map_bool(req, "all", &all, NULL);
    nx_map_u64(req, "window_ms", &window, NULL);
    nx_map_bool(req, "available", &available, NULL);
    nx_map_str(req, "capability", &cap, &cap_len, NULL);
    nx_map_str_array(req, "capabilities", &caps, NULL);
    nx_map_str(req, "after", &after, &after_len, NULL);
    nx_map_u64(req, "limit", &limit, NULL);
    /*  find exists so that nobody lists every session by accident: an
        empty 'capabilities' filters nothing, so it does not count.        */
    if (find && !cap && !(caps && caps->size) && !available)
        return nx_request_fail(rq, NEXUS_ERR_BAD_REQUEST,
                               "give 'capability', a non-empty 'capabilities' or 'available': "
                               "true");
    char from[NX_ID_MAX + 1] = "";
    if (after)
        snprintf(from, sizeof from, "%.*s", (int)after_len, after);
    uint64_t now = nx_now_us();
    /*  Sorted by id so that output is stable for people and tests, and
        pages follow each other (after): the limit + 1 smallest ids that
        pass (nx_topk), one more than the limit telling whether the list
        is truncated. A reply of every session was tens of MB at
        sessions_max, built in the loop.                                   */
    zhashx_t *table = s_table(self);
    size_t keep = zhashx_size(table) < limit + 1 ? zhashx_size(table) : (size_t)limit + 1;
    uint64_t matched = 0; /* on every page, whatever 'after' says */
    nx_topk_t found;
    if (nx_topk_init(&found, keep, s_id_cmp))
        return nx_request_fail(rq, NEXUS_ERR_NOMEM, "out of memory for the list");
    for (nx_session_t *s = zhashx_first(table); s && keep; s = zhashx_next(table)) {
        if (s->status == NX_SESSION_GONE &&
            (!all || find ||
             /*  Written without a sum that a huge window_ms could wrap. */
             (window && window < UINT64_MAX / 1000 && now > s->gone_at &&
              now - s->gone_at > window * 1000)))
            continue;
        if (available && (s->state != 0 || s->status != NX_SESSION_ACTIVE))
            continue;
        if (cap && !s_has_cap(s, cap, cap_len))
            continue;
        bool ok = true;
        for (uint32_t i = 0; caps && i < caps->size && ok; i++)
            ok = s_has_cap(s, caps->ptr[i].via.str.ptr, caps->ptr[i].via.str.size);
        if (!ok)
            continue;
        matched++;
        if (after && strcmp(s->id, from) <= 0)
            continue;
        nx_topk_offer(&found, s);
    }
    nx_topk_sort(&found);
    bool truncated = found.n > limit;
    size_t count = truncated ? (size_t)limit : found.n;
    nx_pack_str(nx_kv(rq), "sessions");
    msgpack_pack_array(&rq->reply.pk, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        nx_session_t *s = found.items[i];
        s->claims = nx_claims_held(self, s->id);
        nx_sessions_pack(&rq->reply.pk, s);
    }
    nx_topk_destroy(&found);
    nx_pack_kv_bool(nx_kv(rq), "truncated", truncated);
    nx_pack_kv_u64(nx_kv(rq), "matched", matched);
    return 0;
}

int nx_op_session_list(nx_broker_t *self, nx_request_t *rq)
{
    return s_list(self, rq, false);
}

int nx_op_session_find(nx_broker_t *self, nx_request_t *rq)
{
    return s_list(self, rq, true);
}

/*  ---- Timers -------------------------------------------------------------- */

/*  Declares sessions whose timeout passed gone; returns the next timeout. */
uint64_t nx_sessions_tick(nx_broker_t *self, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (nx_session_t *s = zhashx_first(s_table(self)); s; s = zhashx_next(s_table(self))) {
        if (s->status == NX_SESSION_GONE)
            continue;
        if (s->timeout_at <= now) {
            /*  zhashx iteration survives updating the current item.       */
            s_gone(self, s, "timeout", now);
        } else if (s->timeout_at < next)
            next = s->timeout_at;
    }
    return next;
}

/*  The broker serves from now: stale sessions get their one full timeout
    from here, not from when they were loaded (a slow start must not use
    up the time they have to heartbeat).                                    */
void nx_sessions_ready(nx_broker_t *self, uint64_t now)
{
    for (nx_session_t *s = zhashx_first(s_table(self)); s; s = zhashx_next(s_table(self)))
        if (s->status == NX_SESSION_STALE) {
            s->timeout_at = now + s_timeout_ms(self, s) * 1000;
            nx_coord_wake_session(self, s->timeout_at);
        }
}

/*  Forgets sessions gone for longer than session_retain.                   */
void nx_sessions_prune(nx_broker_t *self, uint64_t now)
{
    zlistx_t *drop = zlistx_new();
    for (nx_session_t *s = zhashx_first(s_table(self)); s; s = zhashx_next(s_table(self)))
        if (s->status == NX_SESSION_GONE && s->gone_at + self->cfg.session_retain * 1000 < now &&
            nx_claims_held(self, s->id) == 0)
            zlistx_add_end(drop, s->id);
    for (char *id = zlistx_first(drop); id; id = zlistx_next(drop)) {
        nx_coord_del(self, NX_DB_SESSIONS, id, strlen(id));
        zhashx_delete(s_table(self), id);
    }
    zlistx_destroy(&drop);
}

/*  Iteration for the snapshot writer.                                      */
size_t nx_sessions_count(nx_broker_t *self)
{
    return self->sessions ? zhashx_size(s_table(self)) : 0;
}

nx_session_t *nx_sessions_first(nx_broker_t *self)
{
    return zhashx_first(s_table(self));
}

nx_session_t *nx_sessions_next(nx_broker_t *self)
{
    return zhashx_next(s_table(self));
}

const char *nx_session_state_name(int state)
{
    return s_states[state];
}

const char *nx_session_status_name(int status)
{
    return s_statuses[status];
}
