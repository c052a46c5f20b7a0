/*  =========================================================================
    nx_mcp - the fabric's MCP server without its transport (nx_mcp.h).

    The tools are one table. Each names the op it runs and its arguments;
    an argument that is a field of the op takes its type, bounds and
    description from the op table (nx_optab), so the input schemas that
    tools/list shows and the checks the broker makes are the same rows.
    The tool functions are adapters over nx_front's handlers.
    =========================================================================
*/

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nx_front.h"
#include "nx_front_event.h"
#include "nx_jdump.h"
#include "nx_log.h"
#include "nx_mcp.h"
#include "nx_optab.h"
#include "nx_topic.h"

/*  Protocol revisions we speak, newest first: the one a client asks for
    when we have it, else our newest.                                      */
static const char *const s_revisions[] = {"2025-11-25", "2025-06-18", "2025-03-26", NULL};

#define S_PATTERNS_MAX 64
#define S_PAGE_MAX     1000   /* events per get_events answer            */
#define S_HEARTBEAT_MS 30000  /* the session's heartbeat interval        */
#define S_TTL_MS       600000 /* alive this long between MCP calls       */
#define S_ID_MAX       64     /* bytes of a session id                   */

struct _nx_mcp_t {
    nx_mcp_config_t cfg;        /* settings; strings owned             */
    char session[S_ID_MAX + 1]; /* the fabric session, "" none    */
    char secret[64];            /* its secret                          */
    bool registered;            /* session is registered               */
    bool ended;                 /* unregister_session ended it: not
                                   registered again by itself         */
    uint64_t next_beat;         /* mono us of the next heartbeat       */
    /*  The broker's refusal of the last registration ("": none, or no
        answer), told to the tools that act as the session meanwhile.     */
    char reg_code[32];
    char reg_message[256];
    int reg_status;
    /*  A parked wait_for_events.                                           */
    json_t *wait_id;        /* its JSON-RPC id, NULL: none parked  */
    json_t *wait_args;      /* its arguments                       */
    uint64_t wait_deadline; /* mono us it ends                     */
    pthread_mutex_t lock;   /* guards what nx_mcp_wants reads      */
    char *wait_patterns[S_PATTERNS_MAX];
    size_t n_wait_patterns; /* 0 with waiting: every topic         */
    bool waiting;           /* a wait is parked                    */
};

/*  ---- Tools: the table ---------------------------------------------------- */

struct s_tool;
typedef json_t *(s_tool_fn)(nx_mcp_t *m, const struct s_tool *tool, json_t *args,
                            nx_front_err_t *err);

/*  An argument: a field of the tool's op (type, bounds and description
    from the op table), or one of the tool's own.                          */
typedef struct {
    const char *name;  /* as the agent writes it                         */
    const char *field; /* the op's field it is, NULL: the tool's own     */
    const char *type;  /* own: JSON Schema type, NULL: any value         */
    bool required;     /* own: must be given                             */
    uint64_t max;      /* own integers: 1..max                           */
    const char *doc;   /* own, or instead of the field's                 */
} s_arg_t;

typedef struct s_tool {
    const char *name;    /* the tool                                     */
    const char *op;      /* the op it runs                               */
    s_tool_fn *fn;       /* the adapter                                  */
    const s_arg_t *args; /* ended by a row with name NULL; NULL: the op's
                            fields (less session and secret), as they are */
    const char *doc;     /* for the agent: what, when, what comes back   */
} s_tool_t;

static s_tool_fn t_register, t_list_sessions, t_op, t_publish, t_get_events, t_unregister, t_notify,
    t_send_message, t_wait;

#define A_END                                                                                      \
    {                                                                                              \
        NULL, NULL, NULL, false, 0, NULL                                                           \
    }
#define A_PATTERNS                                                                                 \
    {                                                                                              \
        "patterns", "patterns", NULL, false, 0,                                                    \
            "topic patterns to match ('*' one token, '>' the rest, e.g. 'work.*', "                \
            "'repo.nexus.>'); "                                                                    \
            "none: every event"                                                                    \
    }
#define A_RESUME(dflt)                                                                             \
    {                                                                                              \
        "resume", NULL, "boolean", false, 0,                                                       \
            "continue after the last event this session was given (the broker keeps the cursor, "  \
            "so "                                                                                  \
            "it survives restarts of the agent, this server and the broker); default " dflt        \
    }

static const s_arg_t a_register[] = {
    {"session_id", NULL, "string", false, 0,
     "act as this session id (1..64 of A-Za-z0-9_:@-); default: the session this server "
     "already acts as"},
    {"name", "name", NULL, false, 0, "a name people will recognise, e.g. the task or worktree"},
    {"capabilities", "capabilities", NULL, false, 0,
     "what this session can do, e.g. [\"python\", \"review\"]"},
    {"metadata", "metadata", NULL, false, 0, "anything else: machine, repo, pid"},
    A_END};
static const s_arg_t a_list_sessions[] = {
    {"all", "all", NULL, false, 0, "also sessions that ended recently"},
    {"capability", "capability", NULL, false, 0, "only sessions with this capability"},
    {"available", "available", NULL, false, 0, "only sessions that are available and active"},
    {"limit", "limit", NULL, false, 0,
     "sessions at most (default 1000); truncated: true says more "
     "match, matched how many in all"},
    {"after", "after", NULL, false, 0,
     "the next page: only ids after this one (the last id of "
     "the page before)"},
    A_END};
static const s_arg_t a_publish[] = {
    {"event_type", NULL, "string", true, 0,
     "the topic: dot-separated tokens, no spaces or wildcards, e.g. 'build.done' or "
     "'repo.nexus.status'"},
    {"payload", NULL, NULL, false, 0, "any JSON value; the event's content"},
    {"to", NULL, "string", false, 0, "for event_type message.direct: the target session id"},
    A_END};
static const s_arg_t a_get_events[] = {
    A_PATTERNS,
    {"since_seq", "since_seq", NULL, false, 0, "only events after this seq"},
    {"store", NULL, "string", false, 0,
     "the store_id an earlier answer gave with the seq in since_seq: another store's seq "
     "means nothing here, and the answer then starts over (reset)"},
    {"limit", NULL, "integer", false, S_PAGE_MAX, "events at most (default 100)"},
    {"order", "order", NULL, false, 0, "asc (oldest first, the default) or desc"},
    A_RESUME("false: without since_seq, the newest events"),
    A_END};
static const s_arg_t a_notify[] = {
    {"title", NULL, "string", true, 0, "a short title"},
    {"message", NULL, "string", true, 0, "the text"},
    {"level", NULL, "string", false, 0, "info (default), warning or error"},
    A_END};
static const s_arg_t a_list_claims[] = {
    {"holder", "holder", NULL, false, 0, NULL},
    {"state", "state", NULL, false, 0, NULL},
    {"prefix", "prefix", NULL, false, 0, NULL},
    {"limit", "limit", NULL, false, 0, NULL},
    {"after", "after", NULL, false, 0, NULL},
    {"mine", NULL, "boolean", false, 0, "only items this session holds or held"},
    A_END};
static const s_arg_t a_send_message[] = {
    {"to", NULL, "string", true, 0, "the target session id (see list_sessions)"},
    {"message", NULL, "string", true, 0, "the text"},
    {"subject", NULL, "string", false, 0, "a subject line"},
    A_END};
static const s_arg_t a_wait[] = {
    A_PATTERNS,
    {"timeout_seconds", NULL, "integer", false, 300,
     "how long to wait for a matching event, 1..300 (default 30); over HTTP the gateway may "
     "hold less: then it answers with none, call again"},
    {"since_seq", "since_seq", NULL, false, 0, "events after this seq (instead of resume)"},
    {"store", NULL, "string", false, 0, "the store_id since_seq belongs to (as get_events)"},
    A_RESUME("true"),
    A_END};

static const s_tool_t s_tools[] = {
    {"register_session", "session.register", t_register, a_register,
     "Registers this agent's session on the nexus fabric (or takes back session_id), so that "
     "other sessions see it in list_sessions. Returns session_id and cursor (the position of "
     "get_events resume). The server registers a session when it starts: call this to name it, "
     "set capabilities, or act as a given id."},
    {"list_sessions", "session.list", t_list_sessions, a_list_sessions,
     "Lists the sessions on the fabric: id, name, capabilities, state (available/busy/away), "
     "current work, claims held."},
    {"list_channels", "channels", t_op, NULL,
     "Lists the channels being listened to: each subscription prefix the broker sees, with its "
     "live subscriber count."},
    {"publish_event", "publish", t_publish, a_publish,
     "Publishes an event to every session listening to its topic. Acknowledged: returns its "
     "seq once it is stored."},
    {"get_events", "history", t_get_events, a_get_events,
     "Reads events from the fabric's history, oldest first. With resume: true, only the events "
     "after the last ones this session was given, each exactly once across restarts. Direct "
     "messages to other sessions are never shown."},
    {"unregister_session", "session.unregister", t_unregister, NULL,
     "Ends this session (its claims are released). Call it when the agent is done."},
    {"notify", "publish", t_notify, a_notify,
     "Notifies people: a desktop notification where this server can show one, and always a "
     "notify.<session> event on the fabric."},
    {"claim_work", "work.claim", t_op, NULL,
     "Claims a unit of work so that no other session does it. Granted: returns token (the "
     "fencing token to pass to renew/release/complete) and expires_at. Held by someone else: "
     "error 'denied' naming the holder."},
    {"renew_work", "work.renew", t_op, NULL,
     "Extends the lease of work you hold, before its expires_at passes; pass the token "
     "claim_work returned. A lease that ran out cannot be renewed: claim the work again."},
    {"release_work", "work.release", t_op, NULL,
     "Gives work back unfinished, so that another session may claim it."},
    {"complete_work", "work.complete", t_op, NULL,
     "Marks work you hold as done, with an optional result (any JSON): no session can claim it "
     "again until it is reopened."},
    {"list_claims", "work.list", t_op, a_list_claims,
     "Lists work items and who holds them: state claimed, released, expired, completed or "
     "open."},
    {"send_message", "publish", t_send_message, a_send_message,
     "Sends a direct message to one session: only that session (and you) will see it, in "
     "get_events or wait_for_events."},
    {"wait_for_events", "history", t_wait, a_wait,
     "Waits until events matching patterns arrive (or timeout_seconds pass) and returns them, "
     "so that an agent need not poll. timed_out: true when none came."},
};

#define S_TOOLS (sizeof s_tools / sizeof s_tools[0])

/*  ---- Life cycle ----------------------------------------------------------- */

static char *s_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

nx_mcp_t *nx_mcp_new(const nx_mcp_config_t *cfg)
{
    nx_mcp_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->cfg.server = s_dup(cfg->server ? cfg->server : "nexus");
    self->cfg.session = s_dup(cfg->session);
    self->cfg.name = s_dup(cfg->name);
    self->cfg.caps = s_dup(cfg->caps);
    self->cfg.via = s_dup(cfg->via);
    if (!self->cfg.wait_max_s || self->cfg.wait_max_s > 300)
        self->cfg.wait_max_s = 300;
    if (cfg->session)
        snprintf(self->session, sizeof self->session, "%s", cfg->session);
    pthread_mutex_init(&self->lock, NULL);
    return self;
}

static void s_wait_clear(nx_mcp_t *self)
{
    pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < self->n_wait_patterns; i++)
        free(self->wait_patterns[i]);
    self->n_wait_patterns = 0;
    self->waiting = false;
    pthread_mutex_unlock(&self->lock);
    json_decref(self->wait_id);
    json_decref(self->wait_args);
    self->wait_id = self->wait_args = NULL;
    self->wait_deadline = 0;
}

void nx_mcp_destroy(nx_mcp_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_mcp_t *self = *self_p;
    s_wait_clear(self);
    pthread_mutex_destroy(&self->lock);
    free((char *)self->cfg.server);
    free((char *)self->cfg.session);
    free((char *)self->cfg.name);
    free((char *)self->cfg.caps);
    free((char *)self->cfg.via);
    free(self);
    *self_p = NULL;
}

const char *nx_mcp_session(nx_mcp_t *self)
{
    return self->registered ? self->session : "";
}

/*  ---- The session -------------------------------------------------------- */

/*  Registers self->session (a new id when empty) with fields (stolen,
    may be NULL: the configured name and capabilities on a first register). */
static json_t *s_register(nx_mcp_t *self, json_t *fields, nx_front_err_t *err)
{
    if (!fields) {
        fields = json_object();
        if (self->cfg.name)
            json_object_set_new(fields, "name", json_string(self->cfg.name));
        if (self->cfg.caps) {
            json_t *caps = json_array();
            char *copy = strdup(self->cfg.caps), *save = NULL;
            for (char *c = strtok_r(copy, ",", &save); c; c = strtok_r(NULL, ",", &save))
                json_array_append_new(caps, json_string(c));
            free(copy);
            json_object_set_new(fields, "capabilities", caps);
        }
        json_object_set_new(fields, "metadata",
                            json_pack("{s:s}", "via", self->cfg.via ? self->cfg.via : "mcp"));
    }
    if (self->session[0]) {
        json_object_set_new(fields, "session", json_string(self->session));
        /*  Taken back from a connection that went (this server restarted,
            or the broker did) with its secret.                            */
        char *secret = self->secret[0]         ? strdup(self->secret)
                       : self->cfg.secret_load ? self->cfg.secret_load(self->session)
                                               : NULL;
        if (secret)
            json_object_set_new(fields, "secret", json_string(secret));
        free(secret);
    }
    json_object_set_new(fields, "heartbeat_ms", json_integer(S_HEARTBEAT_MS));
    json_object_set_new(fields, "ttl_ms", json_integer(S_TTL_MS));
    json_t *rep = nx_front_call(self->cfg.client, "session.register", fields, err);
    bool answered = strcmp(err->code, "unavailable") != 0 && strcmp(err->code, "timeout") != 0;
    if (!rep && answered) {
        snprintf(self->reg_code, sizeof self->reg_code, "%s", err->code);
        snprintf(self->reg_message, sizeof self->reg_message, "%s", err->message);
        self->reg_status = err->status;
    }
    if (!rep)
        return NULL;
    self->reg_code[0] = 0;
    snprintf(self->session, sizeof self->session, "%s",
             json_string_value(json_object_get(rep, "session")));
    snprintf(self->secret, sizeof self->secret, "%s",
             json_string_value(json_object_get(rep, "secret")));
    self->registered = true;
    self->next_beat = nx_mono_us() + S_HEARTBEAT_MS * 1000ull;
    if (self->cfg.secret_store)
        self->cfg.secret_store(self->session, self->secret);
    return rep;
}

nexus_err_t nx_mcp_start(nx_mcp_t *self, char *err_text)
{
    nx_front_err_t err = {0};
    json_t *rep = s_register(self, NULL, &err);
    nexus_err_t rc = rep ? NEXUS_OK : nexus_err_from_name(err.code);
    if (!rep) {
        snprintf(err_text, 256, "%s: %.200s", err.code, err.message);
        if (!strcmp(err.code, "unavailable") || !strcmp(err.code, "timeout"))
            rc = NEXUS_ERR_UNREACHABLE;
    }
    json_decref(rep);
    nx_front_err_reset(&err);
    return rc;
}

uint64_t nx_mcp_tick(nx_mcp_t *self)
{
    uint64_t now = nx_mono_us();
    if (now < self->next_beat || self->ended)
        return self->ended ? now + S_HEARTBEAT_MS * 1000ull : self->next_beat;
    /*  Not registered yet (the broker was not there at start): again once
        the client's background thread hears the broker (a call now would
        hold this server's loop for a whole timeout).                      */
    if (!self->registered && !nexus_client_is_connected(self->cfg.client)) {
        self->next_beat = now + 500000ull;
        return self->next_beat;
    }
    /*  The transport holds back while its link is down (the gateway): the
        heartbeat too, or it would hold the gateway's worker.             */
    nx_front_err_t away = {0};
    if (self->cfg.away && self->cfg.away(self->cfg.arg, &away)) {
        nx_front_err_reset(&away);
        self->next_beat = now + 500000ull;
        return self->next_beat;
    }
    nx_front_err_t err = {0};
    json_t *rep =
        !self->registered
            ? s_register(self, NULL, &err)
            : nx_front_call(
                  self->cfg.client, "session.heartbeat",
                  json_pack("{s:s, s:s}", "session", self->session, "secret", self->secret), &err);
    /*  Forgotten (gone, or the broker lost it): the same id again.        */
    if (!rep && !strcmp(err.code, "not_found")) {
        nx_front_err_reset(&err);
        rep = s_register(self, NULL, &err);
    }
    json_decref(rep);
    nx_front_err_reset(&err);
    /*  Failed or not, the next try is a while away: the broker may be
        restarting (a session not registered yet tries every 2 s).         */
    self->next_beat = now + (self->registered ? S_HEARTBEAT_MS * 1000ull : 2000000ull);
    return self->next_beat;
}

/*  Fields of op from args acting as this session (with its secret, so
    that a broker restart, which changes our connection, changes nothing). */
static json_t *s_acting(nx_mcp_t *self, const char *op, json_t *args, nx_front_err_t *err)
{
    if (!self->registered && !self->ended && self->reg_code[0]) {
        nx_front_fail(err, self->reg_code, self->reg_status ? self->reg_status : 400,
                      "this MCP session could not register as '%s': %s (call register_session "
                      "with another session_id)",
                      self->session[0] ? self->session : "a new session", self->reg_message);
        return NULL;
    }
    if (!self->registered && !self->ended) {
        nx_front_fail(err, "unavailable", 503,
                      "this MCP session is not registered with the fabric yet (the broker did "
                      "not answer): it registers as soon as the broker does; try again");
        return NULL;
    }
    if (!self->registered) {
        nx_front_fail(err, "not_found", 404,
                      "this MCP session acts as no fabric session (it was unregistered): call "
                      "register_session first");
        return NULL;
    }
    json_t *fields = nx_front_fields(op, args, self->session);
    json_object_set_new(fields, "secret", json_string(self->secret));
    return fields;
}

/*  ---- Tools --------------------------------------------------------------- */

static json_t *t_register(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    const char *id = json_string_value(json_object_get(args, "session_id"));
    if (id && !nx_session_id_valid(id, strlen(id))) {
        nx_front_fail(err, "bad_request", 400,
                      "argument 'session_id' must be 1..64 of [A-Za-z0-9_:@-]");
        return NULL;
    }
    if (id && m->cfg.allows && !m->cfg.allows(m->cfg.arg, id)) {
        nx_front_fail(err, "forbidden", 403, "the token of this MCP session may not act as '%s'",
                      id);
        return NULL;
    }
    /*  Refused, the switch to another session leaves the one it had as it
        was: this MCP session still acts as it, and its claims stay looked
        after, rather than acting as none.                                 */
    char was_session[sizeof m->session], was_secret[sizeof m->secret];
    bool was_registered = m->registered, was_ended = m->ended;
    memcpy(was_session, m->session, sizeof was_session);
    memcpy(was_secret, m->secret, sizeof was_secret);
    m->ended = false;
    if (id && strcmp(id, m->session) != 0) {
        /*  Another session: its secret, if this machine registered it.    */
        snprintf(m->session, sizeof m->session, "%s", id);
        m->secret[0] = 0;
        m->registered = false;
    }
    json_t *fields = nx_front_fields(tool->op, args, NULL);
    if (!json_object_get(fields, "metadata"))
        json_object_set_new(fields, "metadata",
                            json_pack("{s:s}", "via", m->cfg.via ? m->cfg.via : "mcp"));
    json_t *rep = s_register(m, fields, err);
    if (!rep && was_registered && strcmp(was_session, m->session) != 0) {
        memcpy(m->session, was_session, sizeof was_session);
        memcpy(m->secret, was_secret, sizeof was_secret);
        m->registered = true;
        m->ended = was_ended;
        m->reg_code[0] = 0;
        /*  Said in the answer, so the agent knows which session it is.    */
        size_t used = strlen(err->message);
        snprintf(err->message + used, sizeof err->message - used,
                 " (this MCP session still acts as '%s')", m->session);
    }
    if (!rep)
        return NULL;
    json_t *out =
        json_pack("{s:s, s:O, s:O, s:O}", "session_id", m->session, "cursor",
                  json_object_get(rep, "cursor"), "resumed", json_object_get(rep, "resumed"),
                  "timeout_ms", json_object_get(rep, "timeout_ms"));
    json_decref(rep);
    return out;
}

static json_t *t_unregister(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    json_t *fields = s_acting(m, tool->op, args, err);
    json_t *rep = fields ? nx_front_call(m->cfg.client, tool->op, fields, err) : NULL;
    if (rep) {
        json_object_set_new(rep, "session_id", json_string(m->session));
        m->registered = false;
        m->ended = true;
    }
    return rep;
}

/*  A tool that is its op: the args are the op's fields.                    */
static json_t *t_op(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    const nx_opdef_t *def = nx_optab_find(tool->op, strlen(tool->op));
    json_t *fields = def->flags & NX_OF_ACTS ? s_acting(m, tool->op, args, err)
                                             : nx_front_fields(tool->op, args, NULL);
    if (fields && json_is_true(json_object_get(args, "mine")))
        json_object_set_new(fields, "holder", json_string(m->session));
    return fields ? nx_front_call(m->cfg.client, tool->op, fields, err) : NULL;
}

static json_t *t_list_sessions(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    bool find =
        json_object_get(args, "capability") || json_is_true(json_object_get(args, "available"));
    const char *op = find ? "session.find" : "session.list";
    json_t *rep = nx_front_call(m->cfg.client, op, nx_front_fields(op, args, NULL), err);
    if (rep)
        json_object_set_new(
            rep, "count",
            json_integer((json_int_t)json_array_size(json_object_get(rep, "sessions"))));
    return rep;
}

/*  Every publishing tool goes through here: the caller's pub= first.    */
static json_t *s_publish(nx_mcp_t *m, json_t *msg, nx_front_err_t *err)
{
    char why[300];
    if (m->cfg.may_publish && !m->cfg.may_publish(m->cfg.arg, msg, why, sizeof why)) {
        nx_front_fail(err, "forbidden", 403, "%s", why);
        return NULL;
    }
    return nx_front_publish(m->cfg.client, msg, m->registered ? m->session : "", err);
}

static json_t *t_publish(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    return s_publish(m, args, err);
}

static json_t *t_send_message(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    const char *to = json_string_value(json_object_get(args, "to"));
    if (!nx_session_id_valid(to, strlen(to))) {
        nx_front_fail(err, "bad_request", 400,
                      "argument 'to' must be a session id (1..64 of [A-Za-z0-9_:@-])");
        return NULL;
    }
    json_t *payload = json_pack("{s:s, s:s, s:O}", "to", to, "from", m->session, "message",
                                json_object_get(args, "message"));
    if (json_object_get(args, "subject"))
        json_object_set(payload, "subject", json_object_get(args, "subject"));
    json_t *msg = json_pack("{s:s, s:o}", "event_type", NX_FRONT_DIRECT, "payload", payload);
    json_t *rep = s_publish(m, msg, err);
    json_decref(msg);
    return rep;
}

static json_t *t_notify(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    const char *level = json_string_value(json_object_get(args, "level"));
    if (!level)
        level = "info";
    if (strcmp(level, "info") && strcmp(level, "warning") && strcmp(level, "error")) {
        nx_front_fail(err, "bad_request", 400, "argument 'level' must be info, warning or error");
        return NULL;
    }
    const char *title = json_string_value(json_object_get(args, "title"));
    const char *text = json_string_value(json_object_get(args, "message"));
    char topic[S_ID_MAX + 16];
    snprintf(topic, sizeof topic, "notify.%s", m->registered ? m->session : "anonymous");
    json_t *msg =
        json_pack("{s:s, s:{s:s, s:s, s:s, s:s}}", "event_type", topic, "payload", "title", title,
                  "message", text, "level", level, "from", m->registered ? m->session : "");
    json_t *rep = s_publish(m, msg, err);
    json_decref(msg);
    if (!rep)
        return NULL;
    bool shown = m->cfg.desktop && m->cfg.desktop(title, text, level);
    json_object_set_new(rep, "event_type", json_string(topic));
    json_object_set_new(rep, "desktop", json_boolean(shown));
    return rep;
}

/*  The session's cursor (resume), or -1 with *err.                        */
static int s_cursor(nx_mcp_t *m, json_t *seq, uint64_t *cursor, nx_front_err_t *err)
{
    json_t *fields = s_acting(m, "session.cursor", NULL, err);
    if (!fields)
        return -1;
    if (seq)
        json_object_set(fields, "seq", seq);
    json_t *rep = nx_front_call(m->cfg.client, "session.cursor", fields, err);
    if (!rep)
        return -1;
    *cursor = (uint64_t)json_integer_value(json_object_get(rep, "cursor"));
    json_decref(rep);
    return 0;
}

/*  get_events, also for wait_for_events (resume_default): one page of
    events after the session's cursor (resume), after since_seq, or the
    newest ones; with resume the cursor moves past what the page covered.  */
static json_t *s_events(nx_mcp_t *m, json_t *args, bool resume_default, nx_front_err_t *err)
{
    json_t *resume_v = json_object_get(args, "resume");
    json_t *since_v = json_object_get(args, "since_seq");
    bool resume = resume_v ? json_is_true(resume_v) : resume_default && !since_v;
    /*  Said, not one of them dropped in silence.                          */
    const char *order = json_string_value(json_object_get(args, "order"));
    if (resume && (since_v || (order && strcmp(order, "asc") != 0))) {
        nx_front_fail(err, "bad_request", 400,
                      since_v ? "since_seq and resume exclude each other: resume goes on from "
                                "the session's cursor, since_seq from a seq you kept"
                              : "resume reads oldest first: order desc goes without it");
        return NULL;
    }
    json_int_t limit = json_is_integer(json_object_get(args, "limit"))
                           ? json_integer_value(json_object_get(args, "limit"))
                           : 100;
    json_t *fields = nx_front_fields("history", args, NULL);
    json_object_set_new(fields, "limit", json_integer(limit));
    /*  An empty list of patterns means every event here, as none does.   */
    json_t *pats = json_object_get(fields, "patterns");
    if (json_is_array(pats) && !json_array_size(pats))
        json_object_del(fields, "patterns");
    /*  The caller's sub= covers every pattern asked (none: every event);
        what the page holds beyond it (another's direct message) is
        filtered out below.                                                */
    if (m->cfg.may_read) {
        char why[300];
        if (!m->cfg.may_read(m->cfg.arg, fields, why, sizeof why)) {
            json_decref(fields);
            nx_front_fail(err, "forbidden", 403, "%s", why);
            return NULL;
        }
    }
    uint64_t since = 0;
    if (resume) {
        if (s_cursor(m, NULL, &since, err)) {
            json_decref(fields);
            return NULL;
        }
        json_object_set_new(fields, "since_seq", json_integer((json_int_t)since));
        json_object_set_new(fields, "order", json_string("asc"));
    } else if (since_v)
        since = (uint64_t)json_integer_value(since_v);
    bool newest = !resume && !since_v && !json_object_get(args, "order");
    if (newest)
        json_object_set_new(fields, "order", json_string("desc"));
    json_t *asked = since_v && !resume ? json_deep_copy(fields) : NULL;
    json_t *page = nx_front_history(m->cfg.client, fields, m->registered ? m->session : NULL, err);
    if (!page) {
        json_decref(asked);
        return NULL;
    }
    /*  A since_seq of another store (a broker on a fresh data directory),
        or beyond this store's last seq, means nothing here: said (reset),
        and the page starts at the store's first event, as the gateway's
        /events/history and the CLI's cursors do. A silent empty page
        would skip every event up to it.                                   */
    json_t *reset = NULL;
    if (asked) {
        const char *store = json_string_value(json_object_get(args, "store"));
        const char *here = json_string_value(json_object_get(page, "store_id"));
        uint64_t last_seq = (uint64_t)json_integer_value(json_object_get(page, "last_seq"));
        const char *why = (store && here && strcmp(store, here)) || since > last_seq
                              ? nx_front_reset_code(store, here)
                              : NULL;
        if (why) {
            reset = json_pack("{s:s, s:I, s:s?, s:s?, s:I}", "why", why, "cursor_seq",
                              (json_int_t)since, "cursor_store_id", store, "store_id", here,
                              "last_seq", (json_int_t)last_seq);
            json_decref(page);
            json_object_del(asked, "since_seq");
            json_object_set_new(asked, "order", json_string("asc"));
            since = 0;
            /*  (nx_front_history takes the fields it is given.)           */
            page = nx_front_history(m->cfg.client, asked, m->registered ? m->session : NULL, err);
            asked = NULL;
            if (!page) {
                json_decref(reset);
                return NULL;
            }
        }
        json_decref(asked);
    }
    json_t *events = json_object_get(page, "events");
    if (m->cfg.filter)
        m->cfg.filter(m->cfg.arg, events);
    if (newest) {
        /*  The newest ones, shown oldest first.                           */
        json_t *asc = json_array();
        for (size_t i = json_array_size(events); i > 0; i--)
            json_array_append(asc, json_array_get(events, i - 1));
        json_object_set_new(page, "events", asc);
        events = asc;
    }
    /*  Where this page ends: the next page starts at next_cursor; without
        one, everything up to the broker's last seq was looked at.          */
    json_t *next = json_object_get(page, "next_cursor");
    uint64_t upto = json_is_integer(next)
                        ? (uint64_t)json_integer_value(next) - 1
                        : (uint64_t)json_integer_value(json_object_get(page, "last_seq"));
    size_t n = json_array_size(events);
    uint64_t last =
        n ? (uint64_t)json_integer_value(json_object_get(json_array_get(events, n - 1), "seq")) : 0;
    if (last > upto)
        upto = last;
    bool more = json_is_integer(next);
    if (resume && !newest && upto > since) {
        json_t *seq = json_integer((json_int_t)upto);
        uint64_t moved;
        int rc = s_cursor(m, seq, &moved, err);
        json_decref(seq);
        if (rc) {
            json_decref(page);
            return NULL;
        }
    }
    json_t *out = json_pack("{s:O, s:I, s:I, s:b}", "events", events, "count", (json_int_t)n,
                            "cursor", (json_int_t)(upto > since ? upto : since), "more", more);
    /*  The store the seqs are of: keep it with cursor (the store argument). */
    json_t *store = json_object_get(page, "store_id");
    if (json_is_string(store))
        json_object_set(out, "store_id", store);
    if (reset)
        json_object_set_new(out, "reset", reset);
    /*  Reading on after a seq the store no longer reaches: retention
        removed the events between; said, never a silent skip.             */
    json_t *gap = json_object_get(page, "gap");
    if (gap)
        json_object_set(out, "gap", gap);
    json_decref(page);
    return out;
}

static json_t *t_get_events(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    return s_events(m, args, false, err);
}

/*  The marker of a parked wait, never shown: nx_mcp_handle parks.         */
static json_t s_parked_marker;

/*  Whether patterns (an argument, or NULL) is an array of valid patterns:
    only such a wait listens; the look refuses the others, precisely.     */
static bool s_patterns_valid(json_t *patterns)
{
    if (!patterns)
        return true;
    if (!json_is_array(patterns) || json_array_size(patterns) > S_PATTERNS_MAX)
        return false;
    size_t i;
    json_t *p;
    json_array_foreach(patterns, i, p)
    {
        const char *s = json_string_value(p);
        if (!s || !nx_pattern_valid(s, strlen(s)))
            return false;
    }
    return true;
}

static json_t *t_wait(nx_mcp_t *m, const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    s_wait_clear(m);
    if (!s_patterns_valid(json_object_get(args, "patterns"))) {
        json_t *page = s_events(m, args, true, err); /* its error */
        if (page)
            json_object_set_new(page, "timed_out", json_false());
        return page;
    }
    /*  Listen first, then look: an event that comes after the look but
        before the wait is parked wakes it (the transport then calls
        nx_mcp_resume), where it would otherwise wait for the deadline.  */
    pthread_mutex_lock(&m->lock);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(args, "patterns"), i, p)
    {
        const char *s = json_string_value(p);
        if (nx_pattern_is_all(s, strlen(s))) {
            for (size_t j = 0; j < m->n_wait_patterns; j++)
                free(m->wait_patterns[j]);
            m->n_wait_patterns = 0;
            break;
        }
        if (m->n_wait_patterns < S_PATTERNS_MAX)
            m->wait_patterns[m->n_wait_patterns++] = strdup(s);
    }
    m->waiting = true;
    pthread_mutex_unlock(&m->lock);
    if (m->cfg.listen)
        m->cfg.listen((const char *const *)m->wait_patterns, m->n_wait_patterns);

    json_t *page = s_events(m, args, true, err);
    if (!page || json_array_size(json_object_get(page, "events")) ||
        json_object_get(page, "reset")) {
        s_wait_clear(m);
        if (page)
            json_object_set_new(page, "timed_out", json_false());
        return page;
    }
    json_decref(page);
    json_int_t secs = json_is_integer(json_object_get(args, "timeout_seconds"))
                          ? json_integer_value(json_object_get(args, "timeout_seconds"))
                          : 30;
    if ((uint64_t)secs > m->cfg.wait_max_s)
        secs = (json_int_t)m->cfg.wait_max_s;
    m->wait_args = json_incref(args);
    m->wait_deadline = nx_mono_us() + (uint64_t)secs * 1000000;
    return &s_parked_marker;
}

bool nx_mcp_wants(nx_mcp_t *self, const char *topic)
{
    pthread_mutex_lock(&self->lock);
    bool want = self->waiting;
    /*  A direct message's topic is its target's; clients ask for it by the
        name they see, message.direct.                                     */
    const char *type = nx_front_event_type(topic);
    if (want && self->n_wait_patterns) {
        want = false;
        for (size_t i = 0; i < self->n_wait_patterns && !want; i++)
            want = self->wait_patterns[i] &&
                   (nx_pattern_matches(self->wait_patterns[i], topic) ||
                    (type != topic && nx_pattern_matches(self->wait_patterns[i], type)));
    }
    pthread_mutex_unlock(&self->lock);
    return want;
}

uint64_t nx_mcp_deadline(nx_mcp_t *self)
{
    return self->wait_id ? self->wait_deadline : 0;
}

/*  ---- Schemas ------------------------------------------------------------- */

/*  The k-th argument of tool, or NULL past the last: its own list, or the
    op's fields (*tmp holds the row then).                                */
static const s_arg_t *s_arg_at(const s_tool_t *tool, size_t k, s_arg_t *tmp)
{
    if (tool->args)
        return tool->args[k].name ? &tool->args[k] : NULL;
    const nx_opdef_t *def = nx_optab_find(tool->op, strlen(tool->op));
    for (const nx_field_t *f = def->fields; f->name; f++) {
        if (!strcmp(f->name, "session") || !strcmp(f->name, "secret"))
            continue;
        if (k-- == 0) {
            *tmp = (s_arg_t){f->name, f->name, NULL, false, 0, NULL};
            return tmp;
        }
    }
    return NULL;
}

static json_t *s_arg_schema(const s_tool_t *tool, const s_arg_t *a, bool *required)
{
    json_t *p = json_object();
    const nx_field_t *f =
        a->field ? nx_optab_field(nx_optab_find(tool->op, strlen(tool->op)), a->field) : NULL;
    const char *type = f ? nx_optab_json_type(f->type) : a->type;
    if (type)
        json_object_set_new(p, "type", json_string(type));
    const char *doc = a->doc ? a->doc : f ? f->doc : NULL;
    if (doc)
        json_object_set_new(p, "description", json_string(doc));
    *required = a->required || (f && (f->flags & NX_FF_REQ));
    if (f && f->type == NX_FT_U64) {
        json_object_set_new(p, "minimum", json_integer((json_int_t)f->min));
        if (f->max)
            json_object_set_new(p, "maximum", json_integer((json_int_t)f->max));
    } else if (!f && a->max) {
        json_object_set_new(p, "minimum", json_integer(1));
        json_object_set_new(p, "maximum", json_integer((json_int_t)a->max));
    }
    if (f && f->type == NX_FT_STR && f->max)
        json_object_set_new(p, "maxLength", json_integer((json_int_t)f->max));
    if (f && f->type == NX_FT_ENUM) {
        json_t *e = json_array();
        for (const char *const *v = f->values; *v; v++)
            json_array_append_new(e, json_string(*v));
        json_object_set_new(p, "enum", e);
    }
    if (f && (f->type == NX_FT_STRS || f->type == NX_FT_PATTERNS)) {
        json_object_set_new(p, "items", json_pack("{s:s}", "type", "string"));
        if (f->items)
            json_object_set_new(p, "maxItems", json_integer(f->items));
    }
    return p;
}

static json_t *s_tools_list(void)
{
    json_t *list = json_array();
    for (size_t i = 0; i < S_TOOLS; i++) {
        const s_tool_t *t = &s_tools[i];
        json_t *props = json_object(), *req = json_array();
        s_arg_t tmp;
        const s_arg_t *a;
        for (size_t k = 0; (a = s_arg_at(t, k, &tmp)); k++) {
            bool required;
            json_object_set_new(props, a->name, s_arg_schema(t, a, &required));
            if (required)
                json_array_append_new(req, json_string(a->name));
        }
        json_t *schema = json_pack("{s:s, s:o, s:b}", "type", "object", "properties", props,
                                   "additionalProperties", 0);
        if (json_array_size(req))
            json_object_set_new(schema, "required", req);
        else
            json_decref(req);
        json_array_append_new(list, json_pack("{s:s, s:s, s:o}", "name", t->name, "description",
                                              t->doc, "inputSchema", schema));
    }
    return json_pack("{s:o}", "tools", list);
}

/*  Checks the arguments a schema cannot leave to the op table: no unknown
    ones, the tool's own of the right type, the required ones there.       */
static bool s_args_ok(const s_tool_t *tool, json_t *args, nx_front_err_t *err)
{
    const char *k;
    json_t *v;
    s_arg_t tmp;
    json_object_foreach(args, k, v)
    {
        const s_arg_t *a = NULL;
        for (size_t n = 0; (a = s_arg_at(tool, n, &tmp)) && strcmp(a->name, k); n++)
            ;
        if (!a) {
            nx_front_fail(err, "bad_request", 400,
                          "unknown argument '%.64s' (see the input schema)", k);
            return false;
        }
        if (a->field || !a->type)
            continue;
        bool ok = !strcmp(a->type, "string")    ? json_is_string(v)
                  : !strcmp(a->type, "boolean") ? json_is_boolean(v)
                  : !strcmp(a->type, "integer")
                      ? json_is_integer(v) && json_integer_value(v) >= 1 &&
                            (!a->max || (uint64_t)json_integer_value(v) <= a->max)
                      : true;
        if (!ok) {
            if (a->max)
                nx_front_fail(err, "bad_request", 400, "argument '%s' must be an integer 1..%llu",
                              k, (unsigned long long)a->max);
            else
                nx_front_fail(err, "bad_request", 400, "argument '%s' must be a %s", k, a->type);
            return false;
        }
    }
    const s_arg_t *a;
    for (size_t n = 0; (a = s_arg_at(tool, n, &tmp)); n++)
        if (a->required && !json_object_get(args, a->name)) {
            nx_front_fail(err, "bad_request", 400, "argument '%s' is missing", a->name);
            return false;
        }
    return true;
}

/*  ---- JSON-RPC ------------------------------------------------------------- */

static json_t *s_response(json_t *id, json_t *result)
{
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
                     result);
}

static json_t *s_rpc_error(json_t *id, int code, const char *message)
{
    return json_pack("{s:s, s:O, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                     "error", "code", code, "message", nx_front_text(message));
}

json_t *nx_mcp_parse_error(const char *why)
{
    return s_rpc_error(NULL, -32700, why);
}

json_t *nx_mcp_request_error(const char *why)
{
    return s_rpc_error(NULL, -32600, why);
}

json_t *nx_mcp_unreadable(const char *text, size_t len, const char *why)
{
    /*  Valid JSON but for a \u0000 in a string, which nothing here takes
        (ids, topics and names end at it): refused with the request's id,
        so that the client's call gets its answer.                        */
    json_t *msg = text && memmem(text, len, "\\u0000", 6)
                      ? json_loadb(text, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, NULL)
                      : NULL;
    json_t *id = json_object_get(msg, "id");
    json_t *reply =
        json_is_string(id) || json_is_integer(id)
            ? s_rpc_error(id, -32602,
                          "invalid params: a string holds \\u0000 (a NUL character), which this "
                          "server does not take")
            : s_rpc_error(NULL, -32700, why);
    json_decref(msg);
    return reply;
}

bool nx_mcp_revision_known(const char *revision)
{
    for (size_t i = 0; revision && s_revisions[i]; i++)
        if (!strcmp(revision, s_revisions[i]))
            return true;
    return false;
}

static char s_revisions_text[128];

static void s_revisions_join(void)
{
    size_t n = 0;
    for (size_t i = 0; s_revisions[i]; i++)
        n += (size_t)snprintf(s_revisions_text + n, sizeof s_revisions_text - n, "%s%s",
                              i ? ", " : "", s_revisions[i]);
}

const char *nx_mcp_revisions(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, s_revisions_join);
    return s_revisions_text;
}

/*  A tool's answer: its result as text and structured content, or a tool
    error (isError) carrying the code, message and the broker's details.  */
static json_t *s_tool_result(json_t *result, nx_front_err_t *err)
{
    if (result) {
        char *text = nx_json_dumps(result, JSON_COMPACT);
        json_t *r = json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text",
                              text ? text : "{}", "structuredContent", result, "isError", 0);
        free(text);
        return r;
    }
    json_t *e = json_pack("{s:s, s:s}", "code", err->code, "message", err->message);
    if (err->extra)
        json_object_update(e, err->extra);
    char text[400];
    snprintf(text, sizeof text, "%s: %s", err->code, err->message);
    nx_front_err_reset(err);
    return json_pack("{s:[{s:s, s:s}], s:{s:o}, s:b}", "content", "type", "text", "text", text,
                     "structuredContent", "error", e, "isError", 1);
}

static json_t *s_initialize(nx_mcp_t *self, json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = s_revisions[0];
    for (size_t i = 0; asked && s_revisions[i]; i++)
        if (!strcmp(asked, s_revisions[i]))
            version = s_revisions[i];
    return json_pack(
        "{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}", "protocolVersion", version, "capabilities",
        "tools", "listChanged", 0, "serverInfo", "name", self->cfg.server, "version",
        NEXUS_VERSION_STRING, "instructions",
        "The nexus fabric: sessions (agents) on many machines see each other (list_sessions), "
        "claim work so that no two do the same thing (claim_work, with a fencing token), "
        "exchange events (publish_event, get_events with resume, wait_for_events) and direct "
        "messages (send_message). This server acts as one session; register_session names it.");
}

static nx_mcp_status_t s_call_tool(nx_mcp_t *self, json_t *id, json_t *params, json_t **reply)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    if (!name) {
        *reply = s_rpc_error(id, -32602, "params.name (the tool, a string) is missing");
        return NX_MCP_REPLY;
    }
    const s_tool_t *tool = NULL;
    for (size_t i = 0; name && i < S_TOOLS; i++)
        if (!strcmp(s_tools[i].name, name))
            tool = &s_tools[i];
    if (!tool) {
        char text[160];
        snprintf(text, sizeof text, "unknown tool '%.64s' (see tools/list)", name ? name : "");
        *reply = s_rpc_error(id, -32602, text);
        return NX_MCP_REPLY;
    }
    if (tool->fn == t_wait && self->wait_id) {
        *reply = s_rpc_error(id, -32600,
                             "a wait_for_events of this MCP session is still waiting: one at a "
                             "time");
        return NX_MCP_REPLY;
    }
    if (args && !json_is_object(args)) {
        *reply = s_rpc_error(id, -32602, "params.arguments must be an object");
        return NX_MCP_REPLY;
    }
    json_t *own = args ? json_incref(args) : json_object();
    nx_front_err_t err = {0};
    json_t *result = !s_args_ok(tool, own, &err)                               ? NULL
                     : self->cfg.away && self->cfg.away(self->cfg.arg, &err) ? NULL
                                                                              : tool->fn(self, tool, own, &err);
    json_decref(own);
    if (result == &s_parked_marker) {
        self->wait_id = json_incref(id ? id : json_null());
        return NX_MCP_PARKED;
    }
    *reply = s_response(id, s_tool_result(result, &err));
    return NX_MCP_REPLY;
}

nx_mcp_status_t nx_mcp_handle(nx_mcp_t *self, json_t *msg, json_t **reply)
{
    *reply = NULL;
    if (!json_is_object(msg)) {
        *reply = s_rpc_error(NULL, -32600, "a message must be one JSON-RPC 2.0 object");
        return NX_MCP_REPLY;
    }
    json_t *id = json_object_get(msg, "id");
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    /*  The envelope, as JSON-RPC 2.0 and MCP have it: an id is a string or
        an integer, params an object.                                      */
    if (id && !json_is_string(id) && !json_is_integer(id)) {
        *reply = s_rpc_error(NULL, -32600, "'id' must be a string or an integer");
        return NX_MCP_REPLY;
    }
    const char *version = json_string_value(json_object_get(msg, "jsonrpc"));
    if (!version || strcmp(version, "2.0") != 0) {
        if (!id)
            return NX_MCP_NONE; /* a notification is never answered */
        *reply = s_rpc_error(id, -32600, "field 'jsonrpc' must be \"2.0\"");
        return NX_MCP_REPLY;
    }
    if (method && id && params && !json_is_object(params)) {
        *reply = s_rpc_error(id, -32602, "'params' must be an object");
        return NX_MCP_REPLY;
    }
    if (!method) {
        /*  A response to us (we send no requests) or garbage.             */
        if (!id || json_object_get(msg, "result") || json_object_get(msg, "error"))
            return NX_MCP_NONE;
        *reply = s_rpc_error(id, -32600, "field 'method' (a string) is missing");
        return NX_MCP_REPLY;
    }
    if (!id) {
        /*  Notifications: a cancelled wait stops waiting, unanswered.     */
        json_t *rid = json_object_get(params, "requestId");
        if (!strcmp(method, "notifications/cancelled") && self->wait_id && rid &&
            json_equal(rid, self->wait_id))
            s_wait_clear(self);
        return NX_MCP_NONE;
    }
    if (!strcmp(method, "initialize"))
        *reply = s_response(id, s_initialize(self, params));
    else if (!strcmp(method, "ping"))
        *reply = s_response(id, json_object());
    else if (!strcmp(method, "tools/list"))
        *reply = s_response(id, s_tools_list());
    else if (!strcmp(method, "tools/call"))
        return s_call_tool(self, id, params, reply);
    else {
        char text[160];
        snprintf(text, sizeof text, "method '%.64s' not found", method);
        *reply = s_rpc_error(id, -32601, text);
    }
    return NX_MCP_REPLY;
}

nx_mcp_status_t nx_mcp_resume(nx_mcp_t *self, json_t **reply)
{
    *reply = NULL;
    if (!self->wait_id)
        return NX_MCP_NONE;
    nx_front_err_t err = {0};
    json_t *page = s_events(self, self->wait_args, true, &err);
    bool timed_out = nx_mono_us() >= self->wait_deadline;
    if (page && !json_array_size(json_object_get(page, "events")) && !timed_out &&
        !json_object_get(page, "reset")) {
        json_decref(page);
        return NX_MCP_PARKED; /* woken for an event that was not ours */
    }
    if (page)
        json_object_set_new(
            page, "timed_out",
            json_boolean(timed_out && !json_array_size(json_object_get(page, "events"))));
    json_t *id = json_incref(self->wait_id);
    s_wait_clear(self);
    *reply = s_response(id, s_tool_result(page, &err));
    json_decref(id);
    return NX_MCP_REPLY;
}
