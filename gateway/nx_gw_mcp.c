/*  =========================================================================
    nx_gw_mcp - /mcp: the fabric's MCP server (sdk/front/nx_mcp) over the
    Streamable HTTP transport, on the worker thread. docs/mcp.md.

    POST /mcp carries one JSON-RPC message; the answer is application/json
    (202 with no body for a notification). initialize opens an MCP session
    and names it in the Mcp-Session-Id header, which every later request
    sends; each MCP session acts as one fabric session (?session=ID on the
    initialize, the one session its token allows, or a new mcp-... id).
    GET answers 405: this server offers no stream of its own.

    A wait_for_events that has nothing yet is parked: the HTTP request
    stays unanswered and the worker goes on with other clients. The
    fabric event thread (nx_gw_deliver -> nx_gw_mcp_deliver) marks the
    MCP sessions an event may wake and pokes the worker through a pipe;
    the worker (nx_gw_mcp_service) then looks again, or answers "timed
    out" at the deadline. Sessions idle for an hour are forgotten.
    =========================================================================
*/

#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "nx_error.h"
#include "nx_front.h"
#include "nx_gw.h"
#include "nx_jdump.h"
#include "nx_log.h"
#include "nx_mcp.h"
#include "nx_topic.h"

#define S_IDLE_US      (3600ull * 1000000) /* an MCP session idle this long goes   */
#define S_SESSIONS_MAX 10000               /* MCP sessions at most                 */
#define S_OWNER_MAX    100                 /* ... opened with one token (address) */

typedef struct {
    nx_gw_t *gw;
    char id[33];      /* Mcp-Session-Id, 32 hex                         */
    nx_mcp_t *mcp;    /* the MCP session (worker thread only)            */
    const void *auth; /* the token it was opened with                    */
    char peer[64];    /* the address it was opened from                  */
    uint64_t used;    /* mono us of its last request                     */
    uint64_t parked;  /* conn of its parked wait_for_events, 0: none     */
    bool woken;       /* an event may end the wait (under gw->lock)      */
} s_sess_t;

static void s_sess_free(void **item)
{
    s_sess_t *s = *item;
    if (s) {
        nx_mcp_destroy(&s->mcp);
        free(s);
    }
    *item = NULL;
}

int nx_gw_mcp_init(nx_gw_t *gw)
{
    gw->mcps = zhashx_new();
    if (!gw->mcps)
        return -1;
    zhashx_set_destructor(gw->mcps, s_sess_free);
    return 0;
}

void nx_gw_mcp_stop(nx_gw_t *gw)
{
    pthread_mutex_lock(&gw->lock);
    zhashx_t *all = gw->mcps;
    gw->mcps = NULL; /* the event thread looks no more */
    pthread_mutex_unlock(&gw->lock);
    zhashx_destroy(&all);
}

/*  On the fabric event thread, gw->lock held.                             */
void nx_gw_mcp_deliver(nx_gw_t *gw, const char *topic)
{
    if (!gw->mcps || !gw->mcp_parked)
        return;
    bool poke = false;
    for (s_sess_t *s = zhashx_first(gw->mcps); s; s = zhashx_next(gw->mcps))
        if (s->parked && !s->woken && nx_mcp_wants(s->mcp, topic))
            poke = s->woken = true;
    if (poke) {
        char b = 1;
        if (write(gw->wake[1], &b, 1) < 0) {
            /*  Full: the worker has a wake to read already.               */
        }
    }
}

/*  Answers conn (a parked request) with reply (stolen); NULL: 202 and no
    body (a cancelled wait, whose client expects no answer).              */
static void s_answer_parked(nx_gw_t *gw, uint64_t conn_id, json_t *reply)
{
    char *text = reply ? nx_json_dumps(reply, JSON_COMPACT) : strdup("");
    json_decref(reply);
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    if (conn) {
        nx_gw_conn_answer(gw, conn, reply ? 200 : 202, "application/json", text);
        text = NULL;
        nx_gw_conn_unref(gw, &conn);
    }
    if (gw->mcp_parked)
        gw->mcp_parked--;
    pthread_mutex_unlock(&gw->lock);
    free(text);
    nx_gw_wake(gw);
}

uint64_t nx_gw_mcp_service(nx_gw_t *gw)
{
    char drain[64];
    bool poked = false;
    while (read(gw->wake[0], drain, sizeof drain) > 0)
        poked = true;
    uint64_t now = nx_gw_mono(), next = now + 60 * 1000000ull;
    if (!zhashx_size(gw->mcps))
        return next; /* the common case: nobody uses /mcp */
    /*  The worker comes here after every command: the walk below is for a
        wake, a deadline or a heartbeat, not for each WebSocket action or
        HTTP request (ten thousand MCP sessions, each command).           */
    if (!poked && now < gw->mcp_due)
        return gw->mcp_due;
    zlistx_t *idle = zlistx_new();
    /*  Only the worker adds or removes sessions: iterating here is safe
        but for the event thread's reads, which take the lock.             */
    pthread_mutex_lock(&gw->lock);
    zlistx_t *ids = zhashx_keys(gw->mcps);
    pthread_mutex_unlock(&gw->lock);
    for (const char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        s_sess_t *s = zhashx_lookup(gw->mcps, id);
        pthread_mutex_lock(&gw->lock);
        bool woken = s->woken;
        s->woken = false;
        pthread_mutex_unlock(&gw->lock);
        uint64_t due = nx_mcp_deadline(s->mcp);
        if (s->parked && (woken || (due && now >= due))) {
            json_t *reply = NULL;
            if (nx_mcp_resume(s->mcp, &reply) == NX_MCP_REPLY) {
                uint64_t conn = s->parked;
                pthread_mutex_lock(&gw->lock);
                s->parked = 0;
                pthread_mutex_unlock(&gw->lock);
                s_answer_parked(gw, conn, reply);
                s->used = now;
            }
            due = nx_mcp_deadline(s->mcp);
        }
        if (s->parked && due && due < next)
            next = due;
        uint64_t beat = nx_mcp_tick(s->mcp);
        if (beat < next)
            next = beat;
        if (!s->parked && now - s->used > S_IDLE_US)
            zlistx_add_end(idle, s->id);
    }
    zlistx_destroy(&ids);
    for (const char *id = zlistx_first(idle); id; id = zlistx_next(idle)) {
        nx_info("mcp: session %s idle for an hour: forgotten", id);
        pthread_mutex_lock(&gw->lock);
        zhashx_delete(gw->mcps, id);
        pthread_mutex_unlock(&gw->lock);
    }
    zlistx_destroy(&idle);
    gw->mcp_due = next;
    return next;
}

static bool s_allows(void *arg, const char *session)
{
    s_sess_t *s = arg;
    return nx_auth_allows(s->gw->auth, s->auth, session, strlen(session));
}

/*  The token's pub= and sub= hold on /mcp as on every other route.       */
static bool s_may_publish(void *arg, json_t *msg, char *why, size_t size)
{
    s_sess_t *s = arg;
    return nx_gw_may_publish(s->gw, s->auth, msg, why, size);
}

static bool s_may_read(void *arg, json_t *fields, char *why, size_t size)
{
    s_sess_t *s = arg;
    return nx_gw_may_read_history(s->gw, s->auth, fields, why, size);
}

static void s_filter(void *arg, json_t *events)
{
    s_sess_t *s = arg;
    nx_gw_filter_events(s->gw, s->auth, events);
}

static bool s_away(void *arg, nx_front_err_t *err)
{
    s_sess_t *s = arg;
    return nx_gw_broker_away(s->gw, err);
}

static json_t *s_rpc_error(json_t *msg, int code, const char *message)
{
    json_t *id = json_object_get(msg, "id");
    return json_pack("{s:s, s:O, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                     "error", "code", code, "message", nx_front_text(message));
}

/*  Whether s was opened by the same owner as in: its token, or on a
    gateway without tokens its address.                                    */
static bool s_same_owner(nx_gw_t *gw, const s_sess_t *s, const nx_gw_mcp_req_t *in)
{
    if (nx_auth_enabled(gw->auth))
        return s->auth == in->auth;
    return strcmp(s->peer, in->peer ? in->peer : "") == 0;
}

/*  One owner holds at most S_OWNER_MAX MCP sessions: past that its least
    recently used one that waits for nothing is forgotten, so that no
    token (or address) fills the table for everyone (10 000 initialize
    calls did, for the hour sessions are kept). Returns false when every
    one of its sessions waits (the caller answers 503).                    */
static bool s_owner_room(nx_gw_t *gw, const nx_gw_mcp_req_t *in)
{
    /*  Under the lock: the event thread walks the table too (its cursor
        is the table's).                                                   */
    size_t n = 0;
    s_sess_t *lru = NULL;
    pthread_mutex_lock(&gw->lock);
    for (s_sess_t *s = zhashx_first(gw->mcps); s; s = zhashx_next(gw->mcps))
        if (s_same_owner(gw, s, in)) {
            n++;
            if (!s->parked && (!lru || s->used < lru->used))
                lru = s;
        }
    bool room = n < S_OWNER_MAX || lru;
    if (n >= S_OWNER_MAX && lru) {
        nx_info("mcp: session %s forgotten: its %s opened %d MCP sessions", lru->id,
                nx_auth_enabled(gw->auth) ? "token" : "address", S_OWNER_MAX);
        char id[sizeof lru->id];
        memcpy(id, lru->id, sizeof id);
        zhashx_delete(gw->mcps, id);
    }
    pthread_mutex_unlock(&gw->lock);
    return room;
}

/*  initialize: a new MCP session, acting as the fabric session the
    request names (or its token's one session, or a new one).              */
static s_sess_t *s_open(nx_gw_t *gw, const nx_gw_mcp_req_t *in, nx_gw_mcp_ans_t *out)
{
    if (!s_owner_room(gw, in)) {
        out->status = 503;
        out->reply = s_rpc_error(in->msg, -32000,
                                 "this token (or address) has 100 MCP sessions, each in a "
                                 "wait_for_events: try again when a wait ends");
        return NULL;
    }
    if (zhashx_size(gw->mcps) >= S_SESSIONS_MAX) {
        out->status = 503;
        out->reply = s_rpc_error(in->msg, -32000, "too many MCP sessions; try again later");
        return NULL;
    }
    const char *want = in->session && *in->session ? in->session : nx_auth_sole(gw->auth, in->auth);
    char made[32];
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        out->status = 500;
        out->reply = s_rpc_error(in->msg, -32603, "no randomness for a session id");
        return NULL;
    }
    if (!want) {
        snprintf(made, sizeof made, "mcp-%02x%02x%02x%02x%02x%02x", rnd[10], rnd[11], rnd[12],
                 rnd[13], rnd[14], rnd[15]);
        want = made;
    }
    if (!nx_session_id_valid(want, strlen(want))) {
        out->status = 400;
        out->reply = s_rpc_error(in->msg, -32602,
                                 "session must be 1..64 of [A-Za-z0-9_:@-] (/mcp?session=ID)");
        return NULL;
    }
    if (!nx_auth_allows(gw->auth, in->auth, want, strlen(want))) {
        out->status = 403;
        out->reply = s_rpc_error(in->msg, -32000,
                                 "this token may not act as that session: name one it allows "
                                 "(/mcp?session=ID)");
        return NULL;
    }
    s_sess_t *s = calloc(1, sizeof *s);
    if (!s) {
        out->status = 500;
        out->reply = s_rpc_error(in->msg, -32603, "out of memory");
        return NULL;
    }
    for (int i = 0; i < 16; i++)
        snprintf(s->id + 2 * i, 3, "%02x", rnd[i]);
    s->gw = gw;
    s->auth = in->auth;
    snprintf(s->peer, sizeof s->peer, "%s", in->peer ? in->peer : "");
    s->used = nx_gw_mono();
    nx_mcp_config_t cfg = {
        .client = gw->client,
        .server = "nexus-gateway",
        .session = want,
        .name = in->name,
        .caps = in->caps,
        .via = "nexus-gateway /mcp",
        /*  lws ends a request unanswered for timeout_secs (nx_gw_server.c:
            4 broker timeouts + 10 s); a wait ends before that.            */
        .wait_max_s = gw->cfg.broker_timeout * 4 / 1000 + 5,
        .allows = s_allows,
        .may_publish = s_may_publish,
        .may_read = s_may_read,
        .filter = s_filter,
        .away = s_away,
        .arg = s,
    };
    s->mcp = nx_mcp_new(&cfg);
    char why[256];
    nexus_err_t rc = s->mcp ? nx_mcp_start(s->mcp, why) : NEXUS_ERR_NOMEM;
    if (rc) {
        nx_warn("mcp: cannot register session %s: %s", want, s->mcp ? why : "out of memory");
        /*  503 invites a retry: only when the broker did not answer. Its
            refusals (forbidden, bad_request) keep their own status.      */
        out->status =
            rc == NEXUS_ERR_UNREACHABLE || rc == NEXUS_ERR_NOMEM ? 503 : nx_err_http_status(rc);
        out->reply = s_rpc_error(in->msg, -32000, s->mcp ? why : "out of memory");
        nx_mcp_destroy(&s->mcp);
        free(s);
        return NULL;
    }
    pthread_mutex_lock(&gw->lock);
    zhashx_insert(gw->mcps, s->id, s);
    pthread_mutex_unlock(&gw->lock);
    nx_info("mcp: session %s opened, acting as %s", s->id, nx_mcp_session(s->mcp));
    return s;
}

void nx_gw_mcp_post(nx_gw_t *gw, const nx_gw_mcp_req_t *in, nx_gw_mcp_ans_t *out)
{
    memset(out, 0, sizeof *out);
    const char *method = json_string_value(json_object_get(in->msg, "method"));
    s_sess_t *s = NULL;
    /*  The transport's rule (2025-06-18 on): an unknown revision is a 400;
        none at all is taken as the one initialize agreed on. initialize
        itself negotiates in its body (we answer with our newest).        */
    bool init = method && !strcmp(method, "initialize");
    if (!init && in->version && *in->version && !nx_mcp_revision_known(in->version)) {
        char why[160];
        snprintf(why, sizeof why, "MCP-Protocol-Version %s is not one this server speaks (%s)",
                 in->version, nx_mcp_revisions());
        out->status = 400;
        out->reply = s_rpc_error(in->msg, -32600, why);
        return;
    }
    if (init) {
        if (!(s = s_open(gw, in, out)))
            return;
        snprintf(out->session, sizeof out->session, "%s", s->id);
    } else if (!in->mcp_session || !*in->mcp_session) {
        out->status = 400;
        out->reply = s_rpc_error(in->msg, -32000, "no Mcp-Session-Id: send initialize first");
        return;
    } else if (!(s = zhashx_lookup(gw->mcps, in->mcp_session))) {
        /*  404: the client starts a new session (the spec's signal).      */
        out->status = 404;
        out->reply =
            s_rpc_error(in->msg, -32001, "no such MCP session (expired?): initialize again");
        return;
    } else if (s->auth != in->auth) {
        out->status = 403;
        out->reply = s_rpc_error(in->msg, -32000, "this MCP session was opened with another token");
        return;
    }
    s->used = nx_gw_mono();
    const char *acting = nx_mcp_session(s->mcp);
    if (*acting) {
        pthread_mutex_lock(&gw->lock);
        bool rate_ok = nx_gw_session_rate_ok(gw, acting);
        pthread_mutex_unlock(&gw->lock);
        if (!rate_ok) {
            __atomic_add_fetch(&gw->stats.rate_limited, 1, __ATOMIC_RELAXED);
            out->status = 429;
            out->reply =
                s_rpc_error(in->msg, -32000, "too many requests for this session; slow down");
            return;
        }
    }
    /*  A session opened, a wait parked or cancelled, a heartbeat moved:
        the next service walks the sessions again (a refused request
        changed nothing, and costs no walk).                              */
    gw->mcp_due = 0;
    /*  Counted as parked while it runs: a wait_for_events listens before
        it looks at the history, and an event the fabric delivers between
        that look and the park must mark it woken (nx_gw_mcp_deliver).   */
    pthread_mutex_lock(&gw->lock);
    bool was_parked = s->parked != 0; /* another request of it waits      */
    if (!was_parked) {
        s->parked = in->conn;
        gw->mcp_parked++;
    }
    pthread_mutex_unlock(&gw->lock);
    json_t *reply = NULL;
    nx_mcp_status_t st = nx_mcp_handle(s->mcp, in->msg, &reply);
    /*  notifications/cancelled ended the parked wait: its request gets
        its (empty) answer, and the session waits no more.                */
    uint64_t cancelled =
        was_parked && st != NX_MCP_PARKED && !nx_mcp_deadline(s->mcp) ? s->parked : 0;
    pthread_mutex_lock(&gw->lock);
    if (st == NX_MCP_PARKED)
        s->parked = in->conn;
    else if (!was_parked || cancelled) {
        s->parked = 0;
        s->woken = false;
        if (!was_parked)
            gw->mcp_parked--;
    }
    pthread_mutex_unlock(&gw->lock);
    if (cancelled)
        s_answer_parked(gw, cancelled, NULL); /* counts it out */
    switch (st) {
    case NX_MCP_REPLY:
        out->status = 200;
        out->reply = reply;
        break;
    case NX_MCP_NONE:
        out->status = 202;
        break;
    case NX_MCP_PARKED:
        out->parked = true;
        break;
    }
}
