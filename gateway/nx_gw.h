/*  =========================================================================
    nx_gw - nexus-gateway's internals, shared by its files.

    Three threads, each owning its part:
      - the lws thread (nx_gw_server.c) owns every struct lws: it reads
        frames and HTTP requests, turns them into commands, and writes what
        the connections' queues hold when lws says they are writable;
      - the worker thread (nx_gw_worker.c) owns the libnexus client's
        control calls: it runs commands (WebSocket actions, HTTP requests,
        session registration, heartbeats, history replays) and queues the
        answers;
      - libnexus's own thread calls nx_gw_deliver for every fabric event,
        which fans it out to the matching connections' queues.
    Commands go from the lws thread to the worker over an inproc ZeroMQ
    PUSH/PULL pipe (a pointer per message), so the worker sleeps in
    zmq_poll until one comes or its next heartbeat is due.
    Connections, their queues and subscriptions are guarded by one mutex
    (gw->lock). Whoever queues something wakes lws with lws_cancel_service,
    the one lws call that is safe from another thread.
    =========================================================================
*/

#ifndef NX_GW_H_INCLUDED
#define NX_GW_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_auth.h"
#include "nx_front.h"
#include "nx_gw_config.h"
#include "nx_gw_listen.h"

#define NX_GW_SESSION_MAX 64    /* bytes in a session id                     */
#define NX_GW_PATTERNS    64    /* subscriptions per connection              */
#define NX_GW_HELD_MAX    10000 /* live events held while a replay runs    */
#define NX_GW_ID_MAX      256   /* bytes of a request id a reply echoes      */
#define NX_GW_ADDRS       1024  /* client addresses with a rate limit        */

/*  A message on its way to clients: shared by every queue it sits in.     */
typedef struct {
    int refs;            /* queues holding it (under gw->lock)              */
    size_t len;          /* bytes of text                                   */
    uint64_t seq;        /* event seq, 0 for replies and control messages   */
    unsigned char buf[]; /* LWS_PRE bytes of room, then the text            */
} nx_gw_msg_t;

typedef enum { NX_GW_WS, NX_GW_HTTP } nx_gw_kind_t;

typedef struct _nx_gw_conn_t {
    uint64_t id;       /* registry key, never reused        */
    nx_gw_kind_t kind; /* WebSocket or HTTP                 */
    struct lws *wsi;   /* lws thread only; NULL once closed */
    int refs;          /* registry + commands in flight     */
    bool closed;       /* lws closed it; drop what comes    */
    /*  WebSocket                                                           */
    char session[NX_GW_SESSION_MAX + 1]; /* the session it acts as          */
    const void *auth;                    /* nx_auth handle of its token       */
    char *patterns[NX_GW_PATTERNS];      /* subscriptions                     */
    size_t n_patterns;
    nx_gw_msg_t **queue;             /* ring, grown on demand up to queue_messages */
    size_t q_cap;                    /* slots allocated in queue          */
    size_t q_head, q_count, q_bytes; /* ring position, fill, bytes        */
    uint64_t full_since;             /* mono us the queue filled, 0 = not */
    bool control_lost;               /* a reply was lost: slow for good   */
    uint64_t lost_from, lost_to;     /* seqs dropped while full (gap)     */
    uint64_t last_seq;               /* highest event seq queued          */
    uint64_t got_from;               /* it got every event of its patterns
                                        from here to last_seq (0: none):
                                        a resume does not send them again */
    uint64_t skip_from, skip_to;     /* a running resume's replay skips
                                        these, got already (0: none)      */
    bool ready;                      /* welcome queued: live events flow  */
    bool replaying;                  /* live events are held meanwhile    */
    uint64_t resume_from;            /* ?since= waiting for a subscribe   */
    nx_gw_msg_t **held;              /* live events held during a replay  */
    size_t n_held;
    bool held_overflow; /* some were not held: replay again  */
    bool replay_parked; /* its replay waits for queue room   */
    int close_code;     /* != 0: close with this             */
    bool evicted;       /* its session was already released  */
    bool opened;        /* its OPEN was queued: CLOSE balances it */
    char close_reason[80];
    /*  Incoming WebSocket message being assembled (lws thread)             */
    char *rx;
    size_t rx_len;
    bool rx_binary; /* it came as binary frames: refused whole */
    /*  HTTP                                                                */
    int method;       /* NX_GW_GET, ...                    */
    char path[512];   /* decoded path                      */
    char query[1024]; /* decoded "name=value" arguments,
                         each ending with NUL, then a NUL    */
    char bearer[256]; /* Authorization: Bearer value       */
    char peer[64];    /* client address, for its rate limit */
    char *body;       /* request body (POST)               */
    size_t body_len;
    bool body_too_large;
    const char *allow;        /* 405: the Allow header (static)    */
    int status;               /* response status, 0 = not yet      */
    char *response;           /* response body (malloc'd)          */
    size_t response_charged;  /* its length, in gw->http_bytes until
                                 the record goes (lws may still hold
                                 the bytes for a slow reader)      */
    const char *content_type; /* static string                     */
    char mcp_in[40];          /* the request's Mcp-Session-Id      */
    char mcp_out[40];         /* the answer's Mcp-Session-Id       */
    char mcp_version[32];     /* its MCP-Protocol-Version, "" none,
                                 "(too long)" for one that is      */
} nx_gw_conn_t;

enum { NX_GW_GET = 1, NX_GW_POST, NX_GW_OTHER };

/*  Counters for /metrics and /state (atomic, relaxed).                     */
typedef struct {
    uint64_t ws_open;         /* WebSocket connections now                 */
    uint64_t ws_total;        /* WebSocket connections ever                */
    uint64_t http_requests;   /* HTTP requests                             */
    uint64_t events_in;       /* events published through the gateway      */
    uint64_t events_fabric;   /* events received from the fabric           */
    uint64_t events_out;      /* event messages queued to clients          */
    uint64_t drops;           /* event messages dropped (full queues)      */
    uint64_t oversize;        /* of those, larger than any queue takes     */
    uint64_t slow_closes;     /* clients closed for not reading            */
    uint64_t errors;          /* error replies                             */
    uint64_t rate_limited;    /* requests refused by the rate limit        */
    uint64_t auth_refused;    /* requests and upgrades refused: no or a
                                 wrong token (401)                         */
    uint64_t lat_buckets[12]; /* fabric ts -> queued, us: <=100,250,500,
                                 1k,2.5k,5k,10k,25k,50k,100k,250k,+Inf    */
    uint64_t lat_sum_us;      /* sum of those latencies                    */
    uint64_t lat_count;       /* number of them                            */
    uint64_t replays;         /* history replays running or parked (gauge) */
} nx_gw_stats_t;

typedef struct _nx_gw_replays_t nx_gw_replays_t;

typedef struct _nx_gw_t {
    nx_gw_config_t cfg;         /* settings                                 */
    nx_gw_listen_t listen;      /* what cfg.listen names (nx_gw_listen.c)   */
    nx_auth_t *auth;            /* client tokens                            */
    nexus_client_t *client;     /* the gateway's one fabric client          */
    struct lws_context *lws;    /* the lws context (lws thread)             */
    pthread_mutex_t lock;       /* guards conns, queues, subscriptions      */
    zhashx_t *conns;            /* id -> nx_gw_conn_t*                      */
    zhashx_t *sessions;         /* session id -> number of WS connections   */
    zhashx_t *secrets;          /* session id -> its secret (registered here) */
    zhashx_t *descs;            /* session id -> "name\ncapabilities" of its open */
    uint64_t next_id;           /* next conn id                             */
    pthread_t worker;           /* runs commands                            */
    zsock_t *cmd_push;          /* lws thread's end of the command pipe      */
    zsock_t *cmd_pull;          /* worker's end: nx_gw_cmd_t* over inproc    */
    size_t commands;            /* commands in the pipe, under lock          */
    size_t commands_max;        /* bound on queued commands                 */
    size_t commands_bytes;      /* message bytes the queued commands hold   */
    size_t commands_bytes_max;  /* bound on those bytes                   */
    size_t commands_bytes_peak; /* most ever queued (/metrics)           */
    size_t http_bytes;          /* HTTP answer bytes held (response_charged) */
    volatile int stop;          /* set on SIGINT/SIGTERM                    */
    bool broker_up;             /* the worker's last look at the link, to
                                   log when it changes (nx_gw_broker_link) */
    uint64_t start_us;          /* wall clock at start                      */
    uint64_t start_mono;        /* mono clock at start                      */
    nx_gw_stats_t stats;        /* counters                                 */
    zhashx_t *by_type;          /* event type -> count (/events/stats)      */
    zhashx_t *buckets;          /* session -> nx_gw_bucket_t*, the rate limit
                                   shared by a session's connections      */
    zhashx_t *addr_buckets;     /* client address -> nx_gw_bucket_t*, for
                                   HTTP calls acting as no session; at
                                   most NX_GW_ADDRS entries               */
    uint64_t rate_slot[64];     /* fabric events per second, ring           */
    uint64_t rate_second;       /* second of rate_slot's head               */
    char web_root[4096];        /* dashboard directory                      */
    /*  The latest events, for welcome messages without a broker round
        trip: a ring of NX_GW_RECENT messages (under lock), filled from the
        history at start and then by nx_gw_deliver.                         */
    nx_gw_msg_t *recent[1000];
    size_t recent_head, recent_count;
    bool recent_ready; /* prefilled: the ring can answer welcomes  */
    uint64_t last_seq; /* highest seq seen (under lock)            */
    char store_id[40]; /* the broker's store (under lock), "" unknown */
    /*  /mcp (nx_gw_mcp.c)                                                  */
    zhashx_t *mcps;    /* Mcp-Session-Id -> its session (worker adds)  */
    int wake[2];       /* wakes the worker's poll: a parked MCP wait may
                          end (event thread), a parked replay may go on
                          (lws thread)                                  */
    size_t mcp_parked; /* parked waits (under lock)                    */
    uint64_t mcp_due;  /* mono us the MCP sessions need a look (worker) */
    /*  History replays (nx_gw_replay.c)                                     */
    nx_gw_replays_t *replays; /* worker only                               */
    unsigned replay_woken;    /* bumped when a parked replay may go on (lock) */
    unsigned store_gen;       /* bumped when the broker's store changes (lock) */
} nx_gw_t;

/*  A unit of work for the worker thread.                                   */
typedef enum {
    NX_GW_CMD_OPEN,   /* a WebSocket connected: register, welcome           */
    NX_GW_CMD_CLOSE,  /* a WebSocket closed: unregister if last             */
    NX_GW_CMD_ACTION, /* a WebSocket message (JSON text)                    */
    NX_GW_CMD_HTTP    /* an HTTP request                                    */
} nx_gw_cmd_kind_t;

typedef struct {
    nx_gw_cmd_kind_t kind;
    uint64_t conn; /* conn id                                              */
    char *text;    /* ACTION: the message; OPEN: "name\ncapabilities"      */
    size_t bytes;  /* strlen(text), counted in commands_bytes while queued */
    char session[NX_GW_SESSION_MAX + 1];
    uint64_t since; /* OPEN: ?since=, 0 none                                */
    bool has_since;
    char store[40]; /* OPEN: ?store=, the store the since belongs to, "" */
    int recent;     /* OPEN: events in the welcome                          */
} nx_gw_cmd_t;

/*  ---- The store a cursor belongs to (nx_gw_worker.c) -------------------- */

/*  What a resume from `since` (a seq of store `store`, "" when the client
    did not say) finds on the broker's store now.                           */
typedef struct {
    bool known;        /* the broker answered                             */
    bool reset;        /* the cursor cannot be followed here              */
    const char *why;   /* why not (static text)                           */
    char store_id[40]; /* the broker's store                              */
    uint64_t last_seq; /* its last seq                                    */
    uint64_t from;     /* where the replay starts: since, or 0 on reset   */
} nx_gw_resume_t;

/*  Asks the broker (health) which store it serves and decides: a cursor
    of another store, or above this store's last seq (a fresh data
    directory, a store restored from a backup), is reset: the replay starts
    at the store's first event, and the client is told (nx_gw_reset_json).
    Worker thread.                                                          */
void nx_gw_resume_check(nx_gw_t *gw, uint64_t since, const char *store, nx_gw_resume_t *out);

/*  The {"type":"reset", ...} message for a reset resume; caller frees.    */
char *nx_gw_reset_json(const nx_gw_resume_t *r, uint64_t since, const char *store);

/*  The broker's store id as last seen (asked once, then with every
    heartbeat and every resume), into buf (40 bytes); "" when unknown.
    Worker thread.                                                          */
void nx_gw_store_id(nx_gw_t *gw, char *buf);

/*  ---- nx_gw_conn.c ------------------------------------------------------ */

nx_gw_msg_t *nx_gw_msg_new(const char *text, size_t len, uint64_t seq);
/*  Drops one reference (under gw->lock); frees at zero.                    */
void nx_gw_msg_unref(nx_gw_msg_t **msg_p);

/*  Creates and registers a connection (takes the lock).                    */
nx_gw_conn_t *nx_gw_conn_new(nx_gw_t *gw, nx_gw_kind_t kind, struct lws *wsi);
/*  Looks a connection up by id and takes a reference, or NULL (lock held). */
nx_gw_conn_t *nx_gw_conn_get(nx_gw_t *gw, uint64_t id);
/*  Drops a reference (lock held); frees at zero.                           */
void nx_gw_conn_unref(nx_gw_t *gw, nx_gw_conn_t **conn_p);
/*  Marks it closed and removes it from the registry (lock held).           */
void nx_gw_conn_closed(nx_gw_t *gw, nx_gw_conn_t *conn);
/*  Sets an HTTP answer: status, content type and text (taken; NULL: "{}").
    Its bytes count against http_bytes until the record goes; an answer
    that would pass it becomes 503 busy (and a warning, at most one a
    minute). Lock held.                                                    */
void nx_gw_conn_answer(nx_gw_t *gw, nx_gw_conn_t *conn, int status, const char *type,
                       char *text);

/*  True when a message of len bytes fits conn's queue now (lock held):
    an event (seq != 0) leaves a reserve free for replies and control
    messages (seq 0), which may fill the whole queue.                      */
bool nx_gw_conn_room(nx_gw_t *gw, nx_gw_conn_t *conn, size_t len, uint64_t seq);
/*  Marks conn's queue full now unless it already is, starting its
    slow_timeout, and wakes the lws thread to time it (lock held).          */
void nx_gw_conn_full(nx_gw_t *gw, nx_gw_conn_t *conn);
/*  Queues msg (taking a reference) for a WebSocket conn (lock held).
    Returns 0, or -1 when there is no room (the message is not queued; an
    event's seq is remembered for the gap notice; a lost reply or control
    message marks conn slow for good, so that it is closed with 1008 after
    slow_timeout: never a silent loss).                                    */
int nx_gw_conn_push(nx_gw_t *gw, nx_gw_conn_t *conn, nx_gw_msg_t *msg);
/*  What conn got is no longer one unbroken run of its patterns' events (a
    gap, a pattern added, another store): a later resume sends what it
    asks for, from the next event queued on (lock held).                   */
void nx_gw_conn_got_reset(nx_gw_conn_t *conn);
/*  A resume to since on conn (lock held): sets last_seq to since for the
    replay, and the range it is to skip (what conn got already, after
    since).                                                                 */
void nx_gw_conn_resume_at(nx_gw_conn_t *conn, uint64_t since);
/*  A reply or control message that could never fit a send queue (over
    half of queue_bytes) made to fit: a welcome leaves out its oldest
    recent events (recent_omitted says how many), anything else becomes a
    too_large error (a reply keeps its id and action). Returns NULL when
    text fits as it is, else a new text the caller owns. Any thread, no
    lock needed: callers run it before taking the lock where they can.    */
char *nx_gw_fit(nx_gw_t *gw, const char *text, size_t len);
/*  Queues a text the worker made (reply, welcome); copies it, made to fit
    (nx_gw_fit) when it could never fit. Returns and records as
    nx_gw_conn_push does.                                                  */
int nx_gw_conn_push_text(nx_gw_t *gw, nx_gw_conn_t *conn, const char *text);
/*  Takes the next message to write, or NULL (lock held); the caller owns
    the reference it returns.                                               */
nx_gw_msg_t *nx_gw_conn_pop(nx_gw_t *gw, nx_gw_conn_t *conn);
/*  True when any pattern of conn matches topic (lock held).                */
bool nx_gw_conn_matches(nx_gw_conn_t *conn, const char *topic);
/*  A session's token bucket.                                              */
typedef struct {
    double tokens; /* requests it may send now                        */
    uint64_t at;   /* mono us of the last refill                      */
} nx_gw_bucket_t;

/*  Token bucket of conn's session (all its connections share it): true
    when a request may go now. Under gw->lock.                              */
bool nx_gw_conn_rate_ok(nx_gw_t *gw, nx_gw_conn_t *conn);

/*  The same bucket by session id (HTTP calls acting as a session).        */
bool nx_gw_session_rate_ok(nx_gw_t *gw, const char *session);

/*  The bucket of a client address, for HTTP calls that act as no session
    (an open gateway): the same rate and burst. The table holds at most
    NX_GW_ADDRS addresses; a new one first forgets those that have refilled
    and, if none has, the fullest (the one whose loss matters least).
    Under gw->lock.                                                         */
bool nx_gw_addr_rate_ok(nx_gw_t *gw, const char *addr);

/*  ---- nx_gw_worker.c ---------------------------------------------------- */

int nx_gw_worker_start(nx_gw_t *gw);
void nx_gw_worker_stop(nx_gw_t *gw);
/*  What the worker has just seen of the broker link: up (a call answered,
    the client's link flag) or down (a request refused or timed out for
    want of it). Logs the change once per transition, when it happens:
    "lost the broker" / "answers again". Worker thread.                   */
void nx_gw_broker_link(nx_gw_t *gw, bool up);
/*  Queues a command (takes ownership of cmd->text). Returns -1 when the
    queue is full (the caller answers "busy").                             */
int nx_gw_command(nx_gw_t *gw, nx_gw_cmd_t *cmd);
/*  libnexus callback: fans a fabric event out to matching connections.     */
void nx_gw_deliver(nexus_event_t *event, void *arg);
/*  Wakes the lws thread (safe from any thread).                            */
void nx_gw_wake(nx_gw_t *gw);

/*  ---- nx_gw_actions.c (worker thread) ----------------------------------- */

/*  Runs one WebSocket message for conn and queues its reply.               */
void nx_gw_action(nx_gw_t *gw, uint64_t conn_id, const char *text);
/*  Sends {"type":"reply",...}.                                             */
void nx_gw_reply(nx_gw_t *gw, uint64_t conn_id, json_t *reply);
/*  Makes sure session is registered on the fabric (the gateway's
    connection owns it). With the secret of an earlier registration here,
    the session is taken back as it is (its claims kept): after a broker
    restart it is stale and owned by no connection. Returns NEXUS_OK or
    the broker's error.                                                     */
nexus_err_t nx_gw_ensure_session(nx_gw_t *gw, const char *session, const char *name,
                                 const char *capabilities, uint64_t ttl_ms);
/*  Adds the secret of session, when it was registered here, to fields
    (an op acting as it): a broker that restarted lets the gateway act for
    it at once, before the heartbeat takes it back.                        */
void nx_gw_session_secret(nx_gw_t *gw, const char *session, json_t *fields);
/*  True, with err set (503 unavailable), while the gateway's link to the
    broker is down (nexus_client_is_connected): a request is then answered
    at once, where it would wait out broker_timeout in the worker's queue
    behind every other one (six requests took 5 to 30 s, some none).
    libnexus reconnects by itself, and the worker's heartbeats ask.        */
bool nx_gw_broker_away(nx_gw_t *gw, nx_front_err_t *err);
/*  Forgets session's secret (the gateway unregistered it).                 */
void nx_gw_session_forget(nx_gw_t *gw, const char *session);
/*  Forgets the secrets no call has acted with for idle_us, of sessions no
    WebSocket connection holds (HTTP ones: the broker has timed them out
    by then, and a new registration gets a new secret). Returns how many. */
size_t nx_gw_secrets_prune(nx_gw_t *gw, uint64_t idle_us);

/*  ---- nx_gw_replay.c (worker thread) ------------------------------------ */

int nx_gw_replay_init(nx_gw_t *gw);
/*  Frees the replays still running (at stop, the worker gone).             */
void nx_gw_replay_stop(nx_gw_t *gw);
/*  Replays the history after since that conn's patterns match, then the
    live events held meanwhile (conn->replaying, set by the caller): no
    gap, no duplicate. It runs in slices (nx_gw_replay_service); reply
    (taken; NULL: none) is sent when it ends, with "replayed" set. A replay
    already running for conn is answered and replaced.                      */
void nx_gw_replay_start(nx_gw_t *gw, uint64_t conn_id, uint64_t since, json_t *reply);
/*  Runs one slice of the next replay that can go on. Returns when the
    worker should come back: 0 at once, a mono us time, UINT64_MAX when
    every replay waits for its client (or none runs).                       */
uint64_t nx_gw_replay_service(nx_gw_t *gw);
/*  conn's queue was written down (any thread, gw->lock held): a replay
    parked for want of room goes on.                                        */
void nx_gw_replay_room(nx_gw_t *gw, nx_gw_conn_t *conn);

/*  ---- nx_gw_http.c (worker thread) -------------------------------------- */

/*  Answers one HTTP request: fills conn->status/response/content_type.    */
void nx_gw_http(nx_gw_t *gw, uint64_t conn_id);

/*  The methods an API path takes, as an Allow header ("GET", "POST"), or
    NULL when there is no such endpoint. Reads a constant table: safe from
    any thread.                                                             */
const char *nx_gw_http_allow(const char *path);

/*  ---- nx_gw_perm.c (any thread) ------------------------------------------
    A client's token (auth: its nx_auth handle) against gw->auth's rules.
    With no tokens configured everything is allowed. The refusals write a
    message for a `forbidden` error into why.                               */

/*  Whether it may see an event of client type `type` (event_type).        */
bool nx_gw_may_read(nx_gw_t *gw, const void *auth, const char *type);
/*  Whether it may publish msg (its "event_type", or "topic").             */
bool nx_gw_may_publish(nx_gw_t *gw, const void *auth, json_t *msg, char *why, size_t size);
/*  Whether it may read every pattern of patterns (an array; NULL or empty:
    every event).                                                           */
bool nx_gw_may_subscribe(nx_gw_t *gw, const void *auth, json_t *patterns, char *why, size_t size);
/*  Whether a history query's fields ("pattern" and "patterns"; neither:
    every event) stay within the token's sub=.                            */
bool nx_gw_may_read_history(nx_gw_t *gw, const void *auth, json_t *fields, char *why,
                            size_t size);
/*  The patterns it may subscribe to, as a JSON array (its sub=; [">"]
    when it may read everything, [] when nothing): what a client needs to
    subscribe within its rights. Caller owns the array; NULL: no memory.  */
json_t *nx_gw_readable(nx_gw_t *gw, const void *auth);
/*  Removes from events (client events) those it may not read.              */
void nx_gw_filter_events(nx_gw_t *gw, const void *auth, json_t *events);

/*  ---- nx_gw_mcp.c (worker thread) ------------------------------------- */

/*  One POST /mcp.                                                          */
typedef struct {
    uint64_t conn;           /* the HTTP request                            */
    json_t *msg;             /* its JSON-RPC message                        */
    const char *mcp_session; /* its Mcp-Session-Id, or ""                   */
    const char *version;     /* its MCP-Protocol-Version, or ""             */
    const void *auth;        /* its token (nx_auth handle)                  */
    const char *session;     /* initialize: ?session=, or NULL              */
    const char *name;        /* initialize: ?name=, or NULL                 */
    const char *caps;        /* initialize: ?capabilities=, or NULL         */
    const char *peer;        /* the client's address                        */
} nx_gw_mcp_req_t;

/*  Its answer: status and reply (owned; NULL for 202), the session id to
    send in Mcp-Session-Id, or parked (answered later by the service).     */
typedef struct {
    int status;
    json_t *reply;
    char session[40];
    bool parked;
} nx_gw_mcp_ans_t;

int nx_gw_mcp_init(nx_gw_t *gw);
void nx_gw_mcp_stop(nx_gw_t *gw);
void nx_gw_mcp_post(nx_gw_t *gw, const nx_gw_mcp_req_t *in, nx_gw_mcp_ans_t *out);
/*  On the fabric event thread, gw->lock held: wakes waits topic may end.  */
void nx_gw_mcp_deliver(nx_gw_t *gw, const char *topic);
/*  Answers woken and expired waits, heartbeats, forgets idle sessions;
    returns the mono us it wants to run again.                             */
uint64_t nx_gw_mcp_service(nx_gw_t *gw);

/*  ---- nx_gw_server.c (lws thread) --------------------------------------- */

int nx_gw_server_run(nx_gw_t *gw);

/*  ---- helpers ----------------------------------------------------------- */

/*  Mono and wall clocks, us.                                               */
uint64_t nx_gw_mono(void);

#endif
