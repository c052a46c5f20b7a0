/*  =========================================================================
    nexus.h - the public API of libnexus, the nexus fabric client library.

    One header for C services. Handles are opaque; constructors are
    nexus_x_new and return NULL on failure, destructors are nexus_x_destroy
    (&x), safe to call twice, and they set the caller's pointer to NULL.

    Every function that can fail returns a nexus_err_t (NEXUS_OK = 0), or
    NULL/-1 where it returns a pointer or a count; nexus_strerror () turns a
    code into text. The same codes travel on the wire as the stable strings
    that nexus_err_name () returns (see docs/protocol.md).
    =========================================================================
*/

#ifndef NEXUS_H_INCLUDED
#define NEXUS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NEXUS_VERSION_MAJOR                     0
#define NEXUS_VERSION_MINOR                     1
#define NEXUS_VERSION_PATCH                     0
#define NEXUS_MAKE_VERSION(major, minor, patch) ((major)*10000 + (minor)*100 + (patch))
#define NEXUS_VERSION                                                                              \
    NEXUS_MAKE_VERSION(NEXUS_VERSION_MAJOR, NEXUS_VERSION_MINOR, NEXUS_VERSION_PATCH)
#define NEXUS_VERSION_STRING "0.1.0"

#if defined(NEXUS_BUILDING) && defined(__GNUC__)
#define NEXUS_EXPORT __attribute__((visibility("default")))
#else
#define NEXUS_EXPORT
#endif

/*  Error codes. The numeric values are part of the ABI and never change;
    new codes are added at the end. On the wire each code travels as the
    string nexus_err_name () returns ("bad_request", ...).                  */
typedef enum {
    NEXUS_OK = 0,
    NEXUS_ERR_BAD_MSGPACK = 1,   /* request is not a valid msgpack map        */
    NEXUS_ERR_BAD_REQUEST = 2,   /* missing field, wrong type, bad value      */
    NEXUS_ERR_UNKNOWN_OP = 3,    /* the op is not one the broker knows        */
    NEXUS_ERR_TOO_LARGE = 4,     /* request or payload over the limit         */
    NEXUS_ERR_BAD_TOPIC = 5,     /* topic breaks the topic grammar            */
    NEXUS_ERR_BAD_PATTERN = 6,   /* pattern breaks the pattern grammar        */
    NEXUS_ERR_STORE_FULL = 7,    /* store full and retention cannot make room */
    NEXUS_ERR_STORE = 8,         /* the store failed (I/O, corruption)        */
    NEXUS_ERR_NOT_FOUND = 9,     /* no such session, claim or item            */
    NEXUS_ERR_DENIED = 10,       /* claim held by another session             */
    NEXUS_ERR_CONFLICT = 11,     /* state does not allow it (e.g. completed)  */
    NEXUS_ERR_STALE_TOKEN = 12,  /* fencing token is not the current one      */
    NEXUS_ERR_UNAUTHORIZED = 13, /* missing or wrong token                    */
    NEXUS_ERR_FORBIDDEN = 14,    /* acting as a session you do not own        */
    NEXUS_ERR_BUSY = 15,         /* broker overloaded, try again              */
    NEXUS_ERR_INTERNAL = 16,     /* a bug: the broker logs the details        */
    NEXUS_ERR_NOMEM = 17,        /* out of memory                             */
    NEXUS_ERR_TIMEOUT = 18,      /* no reply within the timeout (client side) */
    NEXUS_ERR_UNREACHABLE = 19,  /* cannot reach the broker (client side)     */
    NEXUS_ERR_INVALID = 20,      /* invalid argument to an API call           */
    NEXUS_ERR_CLOSED = 21,       /* handle closed or shutting down            */
    NEXUS_ERR_GAP = 22,          /* events were lost beyond retention         */
    NEXUS_ERR_NOT_PRIMARY = 23,  /* this broker is a standby (or fenced): the
                                    reply names the primary when it knows it  */
    NEXUS_ERR_RESET = 24,        /* a cursor of another store: starts over    */
    NEXUS_ERR__COUNT             /* number of codes; not an error             */
} nexus_err_t;

/*  Returns a static, human-readable description of err. Never NULL.        */
NEXUS_EXPORT const char *nexus_strerror(nexus_err_t err);

/*  Returns the stable wire name of err ("bad_request"). Never NULL; an
    unknown value gives "unknown".                                          */
NEXUS_EXPORT const char *nexus_err_name(nexus_err_t err);

/*  Returns the code whose wire name is name, or NEXUS_ERR_INTERNAL when the
    name is unknown (a newer broker may send codes an older client lacks).  */
NEXUS_EXPORT nexus_err_t nexus_err_from_name(const char *name);

/*  Returns the library version as NEXUS_MAKE_VERSION would build it.        */
NEXUS_EXPORT int nexus_version(void);

/*  =========================================================================
    The client API.

    Thread-safety, once for all: every nexus_client_* and the functions
    taking a client may be called from any thread, concurrently. Control
    calls (nexus_publish_acked, sessions, claims, raw requests) are
    serialized per client: one waits while another is in flight. A history
    iterator and the asynchronous publishes (nexus_publish_async) have
    connections of their own: they neither wait for those calls nor hold
    them up. nexus_publish sends from the calling thread under a mutex of
    its own, with no round trip (its first call waits for the broker's
    subscription, see below). nexus_recv and nexus_recv_batch may be
    called from several threads; each event goes to exactly one of them.
    Event, history, records and reply objects are NOT thread-safe: use each
    from one thread at a time. Nothing here keeps global state besides what
    CZMQ keeps (its zsys context).

    Errors: functions returning nexus_err_t set a detail text that
    nexus_client_errmsg () returns (per client, last error of the calling
    client, not per thread); a NEXUS_ERR_INVALID names the argument and its
    bound. Only a NULL client has no text to set. The codes any control call can return besides
    those listed with it: NEXUS_ERR_INVALID (bad argument, nothing sent),
    NEXUS_ERR_TIMEOUT (no reply in time: the outcome is unknown),
    NEXUS_ERR_UNREACHABLE (no connection to the broker within the timeout:
    the request was not sent, nothing was done),
    NEXUS_ERR_CLOSED (client destroyed or never connected),
    NEXUS_ERR_UNAUTHORIZED (the broker wants a token), NEXUS_ERR_TOO_LARGE
    (the request is over the broker's max_request: not sent),
    NEXUS_ERR_BUSY, NEXUS_ERR_INTERNAL, NEXUS_ERR_NOMEM.
    =========================================================================
*/

/*  Largest session id, work id holder name etc. the SDK copies into the
    fixed-size fields of nexus_claim_result_t, including the terminator.   */
#define NEXUS_ID_MAX 257

/*  The default control endpoint when neither the configuration nor the
    NEXUS_ENDPOINT environment variable gives one.                          */
#define NEXUS_DEFAULT_ENDPOINT "tcp://127.0.0.1:8451"

struct msgpack_object;
typedef struct _nexus_client_t nexus_client_t;
typedef struct _nexus_event_t nexus_event_t;
typedef struct _nexus_history_t nexus_history_t;
typedef struct _nexus_records_t nexus_records_t;

/*  ---- Client: life cycle and configuration -----------------------------
    A client is created unconnected, configured with the setters, then
    started with nexus_client_connect (). Setters return NEXUS_ERR_INVALID
    for bad values and NEXUS_ERR_CLOSED once the client is connected (the
    configuration is fixed from then on). Strings are copied.              */

/*  Creates an unconnected client with defaults: endpoint from the
    NEXUS_ENDPOINT environment variable or NEXUS_DEFAULT_ENDPOINT, token
    from NEXUS_TOKEN, no session. Returns NULL when out of memory. Caller
    owns the client and destroys it with nexus_client_destroy.             */
NEXUS_EXPORT nexus_client_t *nexus_client_new(void);

/*  Stops the background thread, closes the sockets (pending fire-and-forget
    events get up to 200 ms to leave), frees queued events, sets *self_p to
    NULL. Safe with NULL or an already destroyed client. Does NOT unregister
    the session (call nexus_session_unregister first for a clean goodbye).
    Threads waiting in nexus_recv or nexus_recv_batch return
    NEXUS_ERR_CLOSED and are out before destroy frees anything; so does a
    callback waiting in nexus_publish_async for room. Asynchronous
    publishes still in flight complete (NEXUS_ERR_CLOSED unless answered);
    one their completions try again is refused (NEXUS_ERR_CLOSED). Must
    not be called from the client's own callback, nor while another thread
    is inside any other call on the same client.                          */
NEXUS_EXPORT void nexus_client_destroy(nexus_client_t **self_p);

/*  The control endpoint, "tcp://host:port". The event endpoints derive from
    it (port+1: events in, port+2: events out) unless set explicitly.
    "ipc://path" gives path-in and path-out for the event endpoints.
    A comma-separated list (at most 8) names the brokers of a primary/standby
    pair: the client uses the first, and moves on to the next (or to the
    one a not_primary reply names) when the one in use stops answering or
    is not the primary; a request refused with not_primary is sent again
    there, a subscription resumes after its last seq (no gap, no duplicate:
    the brokers share one store identity). A request that got no answer is
    not sent again: it fails with NEXUS_ERR_TIMEOUT, the next goes to the
    next broker.                                                            */
NEXUS_EXPORT nexus_err_t nexus_client_set_endpoint(nexus_client_t *self, const char *endpoint);

/*  Explicit event endpoints: where to publish (the broker's XSUB) and where
    to subscribe (its XPUB). Either may be NULL to keep the derived one.
    With one control endpoint only (NEXUS_ERR_INVALID for a list).         */
NEXUS_EXPORT nexus_err_t nexus_client_set_event_endpoints(nexus_client_t *self,
                                                          const char *events_in,
                                                          const char *events_out);

/*  The session this client acts as: its id (NULL or "": the broker
    assigns one at nexus_session_register) and, to act as a session
    registered by some other process (a script's earlier call), its secret
    (may be NULL). An id is 1 to 64 of A-Z a-z 0-9 _ : @ - (the broker's
    rule): another is NEXUS_ERR_INVALID, and the id and secret set before
    stay.                                                                   */
NEXUS_EXPORT nexus_err_t nexus_client_set_session(nexus_client_t *self, const char *session_id,
                                                  const char *secret);

/*  Human-readable name of the session (shown by `nexus sessions`).        */
NEXUS_EXPORT nexus_err_t nexus_client_set_name(nexus_client_t *self, const char *name);

/*  Capabilities as a comma-separated list ("build,test"); replaces any
    list set before. NULL or "" clears it.                                  */
NEXUS_EXPORT nexus_err_t nexus_client_set_capabilities(nexus_client_t *self, const char *csv);

/*  Session metadata as JSON object text ('{"host":"a"}'). NEXUS_ERR_INVALID
    when it does not parse or is not an object.                             */
NEXUS_EXPORT nexus_err_t nexus_client_set_metadata_json(nexus_client_t *self, const char *json);

/*  Session metadata as one msgpack-encoded map.                            */
NEXUS_EXPORT nexus_err_t nexus_client_set_metadata_msgpack(nexus_client_t *self, const void *data,
                                                           size_t size);

/*  The access token (NULL clears it): presented at the handshake of every
    socket (PLAIN, the token as the password) unless CURVE is set, and sent
    with every request. A broker with tokens refuses a connection without
    a valid one; one without tokens refuses a connection that presents one
    (nexus_client_connect says which).                                     */
NEXUS_EXPORT nexus_err_t nexus_client_set_token(nexus_client_t *self, const char *token);

/*  The name of the setting the token comes from, for the errors that
    tell an operator what to fix ("refused this client's token (NAME)"):
    NEXUS_TOKEN by default (the environment); a program that reads it from
    a setting of its own names that (the gateway: broker_token). At most
    63 bytes; NULL or "" restores the default.                             */
NEXUS_EXPORT nexus_err_t nexus_client_set_token_setting(nexus_client_t *self, const char *name);

/*  Session heartbeat interval (default 5000 ms; 100..3600000) and session
    ttl (0: none; keeps the session alive this long without heartbeats).   */
NEXUS_EXPORT nexus_err_t nexus_client_set_heartbeat(nexus_client_t *self, uint32_t heartbeat_ms,
                                                    uint64_t ttl_ms);

/*  Reconnection backoff bounds: the first retry waits about min_ms, each
    failure doubles it up to max_ms, each wait is randomized to 50..100 %
    (jitter). Defaults 100 and 5000 ms. Requires 1 <= min_ms <= max_ms.    */
NEXUS_EXPORT nexus_err_t nexus_client_set_reconnect(nexus_client_t *self, uint32_t min_ms,
                                                    uint32_t max_ms);

/*  Link keepalive: every socket of the client pings the broker (ZeroMQ
    heartbeats) every interval_ms and drops the connection, to connect
    again, when no answer came within timeout_ms; the broker is told to
    drop ours after the same timeout. That is how a link through a
    VPN or NAT that died without a word (a host that rebooted, a cut cable)
    is noticed: TCP alone may wait for hours. Defaults 5000 and 15000 ms;
    interval 0 turns it off; otherwise 100 <= interval <= timeout <=
    6553500 ms.                                                             */
NEXUS_EXPORT nexus_err_t nexus_client_set_keepalive(nexus_client_t *self, uint32_t interval_ms,
                                                    uint32_t timeout_ms);

/*  CURVE: encrypts every connection and authenticates this client to a
    broker that runs with curve_cert. server_key is the broker's public key
    (40 characters of Z85) or the path of its public certificate file;
    cert_file the path of this client's secret certificate (`nexus keygen
    NAME` writes NAME and NAME_secret: give NAME_secret here, NAME to the
    broker's curve_clients directory), or NULL for a key pair made now,
    for a broker whose curve_clients is "*". server_key NULL turns CURVE
    off (cert_file must then be NULL: a certificate without the broker's
    key would talk in the clear). Events this client publishes are stamped
    with its public key as source, unless the broker's curve_clients is
    "*". nexus_client_new reads NEXUS_CURVE_SERVER_KEY and
    NEXUS_CURVE_CERT from the environment.                                 */
NEXUS_EXPORT nexus_err_t nexus_client_set_curve(nexus_client_t *self, const char *server_key,
                                                const char *cert_file);

/*  How long a control call waits for its reply (default 5000 ms). May be
    changed at any time, also once connected (a call already waiting keeps
    its deadline).                                                          */
NEXUS_EXPORT nexus_err_t nexus_client_set_timeout(nexus_client_t *self, uint32_t timeout_ms);

/*  Largest number of events waiting for nexus_recv (default 10000,
    1..10000000). When the application does not keep up, the client stops
    taking events and later fetches the missed ones from the history, so
    memory stays bounded and nothing is skipped while retention covers it. */
NEXUS_EXPORT nexus_err_t nexus_client_set_queue_max(nexus_client_t *self, size_t max_events);

/*  Callback mode: every event (and gap event) is handed to fn on the
    client's background thread instead of being queued for nexus_recv. The
    event is borrowed: a view over the bytes as they were received, valid
    only during the call, as is everything got from it (topic, source,
    payload, msgpack and JSON views). nexus_event_dup copies it when it
    must outlive the call; nexus_event_destroy on it only clears the
    pointer. Nothing is allocated or locked per event on this path.
    fn must not call, on this client, nexus_client_destroy nor the calls
    that talk to the background thread (nexus_subscribe, nexus_unsubscribe,
    nexus_client_resume_from, nexus_client_resume_at, nexus_session_register,
    nexus_session_unregister): they would wait for the thread that runs fn.
    Other calls are fine; a control call from fn stalls delivery until it
    returns. Set before connect.                                            */
typedef void(nexus_event_fn)(nexus_event_t *event, void *arg);
NEXUS_EXPORT nexus_err_t nexus_client_set_callback(nexus_client_t *self, nexus_event_fn *fn,
                                                   void *arg);

/*  Connects the sockets, starts the background thread and pings the
    broker. Returns NEXUS_OK when the broker answered within the timeout;
    NEXUS_ERR_UNREACHABLE when it did not: the client is still usable and
    keeps trying in the background, so a service may start before its
    broker. NEXUS_ERR_UNAUTHORIZED when the broker refused the handshake (a
    missing or wrong token, a CURVE key it does not list): returned at the
    refusal, or with a list of brokers at the end of the timeout; every
    call of this client then returns it at once, with connect's message
    (make a new client with a token or key the broker takes).
    NEXUS_ERR_CLOSED when already connected; NEXUS_ERR_INVALID for a bad
    endpoint.                                                               */
NEXUS_EXPORT nexus_err_t nexus_client_connect(nexus_client_t *self);

/*  True when the last exchange with the broker succeeded; false from the
    moment a connection to it drops or a call waits out its timeout, until
    the client (its background thread probes) hears the broker again.     */
NEXUS_EXPORT int nexus_client_is_connected(nexus_client_t *self);

/*  Detail text of the last error this client returned (the broker's
    message when the broker refused). Never NULL; valid until the next call
    on this client from any thread. Use it right after the failing call.   */
NEXUS_EXPORT const char *nexus_client_errmsg(nexus_client_t *self);

/*  The control endpoint in use (with a list: the broker in use now). Valid
    while the client lives.                                                 */
NEXUS_EXPORT const char *nexus_client_endpoint(nexus_client_t *self);

/*  The session id, or NULL before one is known; and its secret (NULL when
    unknown). Copied into buf (size bytes); returns buf or NULL.            */
NEXUS_EXPORT const char *nexus_client_session_id(nexus_client_t *self, char *buf, size_t size);
NEXUS_EXPORT const char *nexus_client_session_secret(nexus_client_t *self, char *buf, size_t size);

/*  Counters since connect: reconnects seen (the link went down and came
    back), history pages fetched to fill gaps, events dropped locally
    because the queue was full (later fetched again from the history).      */
typedef struct {
    uint64_t reconnects;     /* times the broker was lost and found again   */
    uint64_t history_pages;  /* history pages the resume logic fetched       */
    uint64_t live_events;    /* events delivered straight from the stream   */
    uint64_t history_events; /* events delivered from the history            */
    uint64_t queue_drops;    /* stream events not taken (queue full)         */
    uint64_t gaps;           /* gap events delivered                         */
    uint64_t last_seq;       /* last seq delivered or examined               */
    uint64_t failovers;      /* moves to another broker of the endpoint list */
} nexus_client_stats_t;
NEXUS_EXPORT void nexus_client_stats(nexus_client_t *self, nexus_client_stats_t *stats);

/*  ---- Publishing -------------------------------------------------------
    topic: a valid topic (dot-separated tokens, no wildcards, <= 255 bytes);
    NEXUS_ERR_BAD_TOPIC otherwise. payload: size bytes; NULL only with size
    0 (an empty payload): NULL with a size is NEXUS_ERR_INVALID, nothing
    sent. The event's source is the session id when known, else the name,
    else empty (CURVE identities override it).                              */

/*  Fire-and-forget: queues the event to the broker and returns. The bytes
    of payload are copied. Returns NEXUS_OK, NEXUS_ERR_BAD_TOPIC,
    NEXUS_ERR_INVALID (payload NULL with a size), NEXUS_ERR_TOO_LARGE (over
    64 MiB), NEXUS_ERR_CLOSED, NEXUS_ERR_BUSY
    (the send queue to the broker is full: the broker is away or slow; the
    event was not sent). Events sent while the link is down are lost:
    use nexus_publish_acked when that matters. Thread-safe. The first call
    of a client waits (once, at most the client's timeout, other publishing
    threads with it) for the broker's subscription to reach it, so that
    the first events are not dropped by ZeroMQ: at once when the broker's
    event port is there.                                                    */
NEXUS_EXPORT nexus_err_t nexus_publish(nexus_client_t *self, const char *topic, const void *payload,
                                       size_t size);

/*  Acknowledged: returns once the event is durable in the broker's store;
    *seq (may be NULL) receives its sequence number, *ts (may be NULL) its
    broker timestamp (microseconds since the epoch). Errors: those of any
    control call, NEXUS_ERR_BAD_TOPIC, NEXUS_ERR_TOO_LARGE,
    NEXUS_ERR_STORE_FULL, NEXUS_ERR_STORE. After NEXUS_ERR_TIMEOUT the event
    may or may not have been stored.                                        */
NEXUS_EXPORT nexus_err_t nexus_publish_acked(nexus_client_t *self, const char *topic,
                                             const void *payload, size_t size, uint64_t *seq,
                                             uint64_t *ts);

/*  The same two with a JSON text payload, sent as msgpack (the fabric's
    payload encoding); {"$base64":"..."} becomes msgpack bin. NULL or ""
    sends an empty payload. NEXUS_ERR_INVALID when json does not parse, or
    nests deeper than 32 levels (no reader could show it as JSON).          */
NEXUS_EXPORT nexus_err_t nexus_publish_json(nexus_client_t *self, const char *topic,
                                            const char *json);
NEXUS_EXPORT nexus_err_t nexus_publish_json_acked(nexus_client_t *self, const char *topic,
                                                  const char *json, uint64_t *seq);

/*  ---- Acknowledged publish, pipelined ----------------------------------
    nexus_publish_async sends an acknowledged publish and returns without
    waiting for the broker: many can be in flight at once (a window of at
    most max_requests requests and max_bytes of them, per client), and fn
    is told the outcome of each, exactly once. nexus_publish_async_wait
    waits until every one has been told. The broker stores each event
    durably before it answers, as for nexus_publish_acked.

    Completions run on the application's threads, not on a thread of the
    SDK: inside nexus_publish_async (whenever it reads replies: when the
    window fills, and every few dozen calls) and inside
    nexus_publish_async_wait, on the thread that called it, outside every
    lock of the SDK, one at a time per client, in the order the broker
    answered (which may differ from the order of sending, section 4 of
    docs/protocol.md). fn may call nexus_publish_async (e.g. to retry): it
    never waits there, NEXUS_ERR_BUSY says the window is full. fn must not
    call nexus_publish_async_wait nor nexus_client_destroy.

    The outcome passed to fn: NEXUS_OK with seq and ts (the event is
    durable); an error the broker answered (NEXUS_ERR_TOO_LARGE,
    NEXUS_ERR_STORE_FULL, NEXUS_ERR_STORE, NEXUS_ERR_UNAUTHORIZED, ...:
    the event was not stored; during fn, nexus_client_errmsg gives the
    broker's words, such as the primary a NEXUS_ERR_NOT_PRIMARY names);
    NEXUS_ERR_TIMEOUT when no answer came within
    the client's timeout, or NEXUS_ERR_CLOSED when the client was
    destroyed first: then the event may or may not have been stored. A
    request unanswered for the timeout fails with every other one in
    flight (the connection is replaced, so a late answer cannot arrive).  */
typedef void(nexus_publish_fn)(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg);

/*  The window of nexus_publish_async: requests (1..65536, default 1024)
    and bytes of them (64 KiB..1 GiB, default 64 MiB; one request larger
    than that goes alone). Set before connect.                              */
NEXUS_EXPORT nexus_err_t nexus_client_set_publish_window(nexus_client_t *self,
                                                         uint32_t max_requests, size_t max_bytes);

/*  Sends one acknowledged publish (payload copied). fn (may be NULL) is
    called once with its outcome, arg passed along. Waits (running
    completions) while the window is full, at most the client's timeout.
    Returns NEXUS_OK when sent: fn will be called. Otherwise fn will not
    be called and the event was not sent: NEXUS_ERR_BAD_TOPIC,
    NEXUS_ERR_TOO_LARGE (over 64 MiB), NEXUS_ERR_CLOSED (not connected, or
    nexus_client_destroy has begun), NEXUS_ERR_TIMEOUT (the window stayed
    full), NEXUS_ERR_UNREACHABLE (no connection to the broker within the
    timeout), NEXUS_ERR_BUSY (window full or no connection, called from
    fn; or the socket refused), NEXUS_ERR_INVALID, NEXUS_ERR_NOMEM.
    Thread-safe.                                                           */
NEXUS_EXPORT nexus_err_t nexus_publish_async(nexus_client_t *self, const char *topic,
                                             const void *payload, size_t size, nexus_publish_fn *fn,
                                             void *arg);

/*  Waits up to timeout_ms (-1: as long as it takes, which is at most the
    client's timeout after the last send; 0: only run what is ready) until
    no asynchronous publish of this client is in flight and every
    completion has run. Returns NEXUS_OK, NEXUS_ERR_TIMEOUT (some are still
    in flight), NEXUS_ERR_CLOSED (nexus_client_destroy has begun: it runs
    the rest), NEXUS_ERR_INVALID (called from a completion).                */
NEXUS_EXPORT nexus_err_t nexus_publish_async_wait(nexus_client_t *self, int timeout_ms);

/*  ---- Subscribing and receiving ----------------------------------------
    Patterns: tokens separated by '.', '*' matches one token, a final '>'
    one or more; ">" (or "broadcast") matches every topic.

    Delivery guarantee: events matching any pattern arrive once each, in
    seq order, across broker restarts, SIGKILL and network cuts: after any
    doubt (reconnect, unanswered request, a hole in the seq sequence, a full
    queue) the client reads the missed range from the broker's history
    before it delivers anything newer. When the history no longer holds
    part of the range (retention), a gap event (NEXUS_EVENT_GAP) gives the
    missing seq range instead, in its place in the order. When the broker
    serves another store than the one delivery followed, a reset event
    (NEXUS_EVENT_RESET, see nexus_client_resume_at) says so, in its place
    in the order, and delivery starts over in the new store. Callbacks
    get gap and reset events too: check nexus_event_kind.                   */

/*  Adds a pattern. Delivery starts from the broker's current last seq
    unless nexus_client_resume_from () set an earlier starting point.
    Add the patterns of a start-up one after the other, with nothing in
    between: a pattern added once delivery has moved on (events handed
    out) starts where delivery is, not at that earlier point.
    Returns NEXUS_OK, NEXUS_ERR_BAD_PATTERN, NEXUS_ERR_CLOSED (not
    connected), NEXUS_ERR_INVALID (more than 64 patterns).                  */
NEXUS_EXPORT nexus_err_t nexus_subscribe(nexus_client_t *self, const char *pattern);

/*  Removes a pattern added before; NEXUS_ERR_NOT_FOUND when it was not.    */
NEXUS_EXPORT nexus_err_t nexus_unsubscribe(nexus_client_t *self, const char *pattern);

/*  Sets the point to deliver from: the next event delivered is the first
    matching one with seq > seq (0: from the oldest retained event). Meant
    for start-up, after connect and before nexus_subscribe: call it later
    (also right after nexus_subscribe) and the events after seq already
    delivered are delivered again. Returns NEXUS_OK or NEXUS_ERR_CLOSED.
    A seq is a number of one store (docs/protocol.md 6.1): keep the store
    with it and prefer nexus_client_resume_at. Without a store the seq is
    taken for the broker's store, and reset (below) only when it lies
    beyond that store's last seq.                                           */
NEXUS_EXPORT nexus_err_t nexus_client_resume_from(nexus_client_t *self, uint64_t seq);

/*  Store identity. A cursor is a pair: the store_id of the store its seq
    belongs to, and the seq (nexus_event_store_id and nexus_event_seq of
    the last event the application handled, reset events included). Seqs
    of another store mean nothing here: a fresh data directory starts
    again at 1, another broker has its own numbers.

    nexus_client_resume_at sets the point to deliver from as
    nexus_client_resume_from does, for the cursor (store_id, seq). Before
    it delivers anything the client asks the broker which store it serves.
    When that is the cursor's store and seq is at most its last seq,
    delivery goes on after seq. Otherwise (another store, or a seq beyond
    the store's last one: a store restored from an older backup) the
    cursor cannot be followed, and the application is told, never left
    waiting for seqs the store will not reach again nor silently skipped
    past events: a reset event (NEXUS_EVENT_RESET, nexus_recv returns
    NEXUS_ERR_RESET) comes first, with the old cursor and the new store's
    id and range (nexus_event_reset), then the new store's events from
    its first one (events may repeat; none is skipped). The same happens
    when the store changes under a running client: the broker restarted
    on another data directory, or the endpoint now reaches another
    broker; the client checks the store after every reconnect and with
    every history page it reads. store_id NULL or "": as
    nexus_client_resume_from. Returns NEXUS_OK, NEXUS_ERR_CLOSED,
    NEXUS_ERR_INVALID (store_id longer than NEXUS_STORE_ID_MAX - 1).      */
#define NEXUS_STORE_ID_MAX 24 /* bytes of a store id, NUL included (16 hex) */
NEXUS_EXPORT nexus_err_t nexus_client_resume_at(nexus_client_t *self, const char *store_id,
                                                uint64_t seq);

/*  The store the client's delivery follows now (the broker's store_id at
    the last start, check or reset), copied into buf (size bytes; at most
    NEXUS_STORE_ID_MAX). Returns buf, or NULL while no store is known.
    Events carry their own (nexus_event_store_id): a cursor is best taken
    from the event.                                                         */
NEXUS_EXPORT const char *nexus_client_store_id(nexus_client_t *self, char *buf, size_t size);

/*  Waits up to timeout_ms (-1: forever, 0: poll) for the next event.
    Returns NEXUS_OK with *event set (caller owns it: nexus_event_destroy),
    NEXUS_ERR_GAP with *event set to a gap event (caller owns it; see
    nexus_event_gap), NEXUS_ERR_RESET with *event set to a reset event
    (caller owns it; see nexus_event_reset), NEXUS_ERR_TIMEOUT with *event NULL, NEXUS_ERR_CLOSED
    (client destroyed while waiting, or never connected), NEXUS_ERR_INVALID
    (callback mode has no queue).                                           */
NEXUS_EXPORT nexus_err_t nexus_recv(nexus_client_t *self, int timeout_ms, nexus_event_t **event);

/*  Takes up to max waiting events at once (one lock for all of them),
    waiting up to timeout_ms (-1: forever, 0: poll) for the first. Returns
    NEXUS_OK with *count (1..max) events in events[0..*count), in seq order;
    each is owned by the caller (nexus_event_destroy). A gap event may be
    among them, or a reset event: unlike nexus_recv this does not return
    NEXUS_ERR_GAP or NEXUS_ERR_RESET, check nexus_event_kind. NEXUS_ERR_TIMEOUT with *count 0,
   NEXUS_ERR_CLOSED, NEXUS_ERR_INVALID (NULL argument, max 0, or callback mode). Threads may mix
   nexus_recv and nexus_recv_batch; each event goes to one of them.   */
NEXUS_EXPORT nexus_err_t nexus_recv_batch(nexus_client_t *self, int timeout_ms,
                                          nexus_event_t **events, size_t max, size_t *count);

/*  ---- Events -----------------------------------------------------------
    An event is immutable. Strings returned are NUL-terminated and valid as
    long as the event lives. An event is owned (from nexus_recv,
    nexus_recv_batch, nexus_history_next, nexus_event_dup: the caller
    destroys it) or borrowed (handed to a callback, or from
    nexus_history_next_view: the SDK owns it and says how long it lives;
    nexus_event_destroy on it only sets the pointer to NULL).               */
typedef enum {
    NEXUS_EVENT_MESSAGE = 0, /* an event from the fabric                    */
    NEXUS_EVENT_GAP = 1,     /* events [from, to] are lost (retention)       */
    NEXUS_EVENT_RESET = 2    /* the cursor cannot be followed: starts over   */
} nexus_event_kind_t;

NEXUS_EXPORT void nexus_event_destroy(nexus_event_t **self_p);
/*  Returns a copy (caller owns it) or NULL when out of memory.             */
NEXUS_EXPORT nexus_event_t *nexus_event_dup(const nexus_event_t *self);
NEXUS_EXPORT nexus_event_kind_t nexus_event_kind(const nexus_event_t *self);
/*  Seq of the event (for a gap: the last missing seq).                     */
NEXUS_EXPORT uint64_t nexus_event_seq(const nexus_event_t *self);
/*  Broker time, microseconds since the Unix epoch (0 for a gap).           */
NEXUS_EXPORT uint64_t nexus_event_ts(const nexus_event_t *self);
/*  Topic ("" for a gap) and source ("" when none).                         */
NEXUS_EXPORT const char *nexus_event_topic(const nexus_event_t *self);
NEXUS_EXPORT const char *nexus_event_source(const nexus_event_t *self);
/*  Payload bytes exactly as published; *size receives the length. Not
    NUL-terminated (it may hold NULs).                                      */
NEXUS_EXPORT const void *nexus_event_payload(const nexus_event_t *self, size_t *size);
/*  For a gap event: the missing range, inclusive. Returns 0, or -1 (and
    leaves from/to alone) when the event is not a gap.                      */
NEXUS_EXPORT int nexus_event_gap(const nexus_event_t *self, uint64_t *from, uint64_t *to);
/*  The store the event's seq belongs to (16 hex characters), "" when not
    known (a broker that does not name its store). With nexus_event_seq
    it is the cursor to resume from (nexus_client_resume_at).               */
NEXUS_EXPORT const char *nexus_event_store_id(const nexus_event_t *self);
/*  For a reset event: why the cursor could not be followed, the cursor,
    and the store delivery starts over in, with its range then. Strings
    live as long as the event. The reset event's own seq is 0 and its
    store_id the new store's: the cursor after it is (store_id, 0).        */
typedef struct {
    const char *why;             /* a sentence for a log                      */
    const char *cursor_store_id; /* the cursor's store ("": not known)        */
    uint64_t cursor_seq;         /* the cursor's seq                          */
    const char *store_id;        /* the store the broker serves               */
    uint64_t first_seq;          /* its oldest event (0: empty)               */
    uint64_t last_seq;           /* its last seq                              */
} nexus_reset_t;
/*  Returns 0 with *reset filled, or -1 when the event is not a reset.      */
NEXUS_EXPORT int nexus_event_reset(const nexus_event_t *self, nexus_reset_t *reset);
/*  The payload decoded as one msgpack object (msgpack-c's msgpack_object),
    or NULL when the payload is empty or not exactly one msgpack value. The
    object lives as long as the event. Decoded once, then cached.           */
NEXUS_EXPORT const struct msgpack_object *nexus_event_msgpack(nexus_event_t *self);
/*  The payload as compact JSON text: msgpack converted to JSON (bin and
    non-UTF-8 str become {"$base64":"..."}, ext {"$ext":type,"$base64":..},
    non-string map keys their JSON text); a payload that is not msgpack
    becomes {"$base64":"..."}; empty gives "null". NULL only when out of
    memory. Converted once, then cached.                                    */
NEXUS_EXPORT const char *nexus_event_payload_json(nexus_event_t *self);
/*  The whole event as one JSON object line:
    {"seq":N,"ts":N,"topic":"..","source":"..","payload":<payload json>}
    or for a gap {"gap":{"from":N,"to":N}}, for a reset
    {"reset":{"why":..,"cursor_store_id":..,"cursor_seq":N,"store_id":..,
    "first_seq":N,"last_seq":N}}. Cached; NULL when out of memory.        */
NEXUS_EXPORT const char *nexus_event_json(nexus_event_t *self);

/*  ---- History ----------------------------------------------------------
    An iterator over the broker's history, one page (one request) at a
    time. Configure, then call nexus_history_next (or _next_view) until it
    gives NULL. The iterator has a connection to the broker of its own and
    asks for the next page as soon as a page arrives, so that the broker
    reads it while the application reads this one: at most two pages are
    held in memory (each at most page_size events and the broker's
    history_bytes). The connection goes back to the client at destroy.    */

/*  Creates a query on client (which must outlive it). Returns NULL when out
    of memory. Caller owns it.                                              */
NEXUS_EXPORT nexus_history_t *nexus_history_new(nexus_client_t *client);
NEXUS_EXPORT void nexus_history_destroy(nexus_history_t **self_p);
/*  Adds a pattern (none: every topic); at most 64. NEXUS_ERR_BAD_PATTERN,
    NEXUS_ERR_INVALID.                                                      */
NEXUS_EXPORT nexus_err_t nexus_history_add_pattern(nexus_history_t *self, const char *pattern);
/*  Only events with seq > since_seq (0: all) and seq <= until_seq (0: no
    bound).                                                                 */
NEXUS_EXPORT void nexus_history_set_seq_range(nexus_history_t *self, uint64_t since_seq,
                                              uint64_t until_seq);
/*  Only events with since_us <= ts <= until_us (0: no bound), microseconds
    since the epoch.                                                        */
NEXUS_EXPORT void nexus_history_set_time_range(nexus_history_t *self, uint64_t since_us,
                                               uint64_t until_us);
/*  Events per page (1..10000, default 1000; a broker whose history_limit
    is lower serves pages of its limit), newest first when desc != 0.      */
NEXUS_EXPORT nexus_err_t nexus_history_set_page(nexus_history_t *self, uint32_t page_size,
                                                int desc);
/*  Stops after max_events in all (0: no limit).                            */
NEXUS_EXPORT void nexus_history_set_max(nexus_history_t *self, uint64_t max_events);
/*  on 0: no page is asked for before the caller fetches it (one request,
    one page in memory; for a caller that reads a page and then drops the
    iterator, whose read-ahead the broker would read for nothing). On by
    default.                                                                */
NEXUS_EXPORT void nexus_history_set_read_ahead(nexus_history_t *self, int on);
/*  Next event: NEXUS_OK with *event set (caller owns it), or NEXUS_OK with
    *event NULL at the end; fetches the next page when needed (errors of any
    control call, NEXUS_ERR_BAD_PATTERN). After an error the iterator may be
    called again to retry the same page.                                    */
NEXUS_EXPORT nexus_err_t nexus_history_next(nexus_history_t *self, nexus_event_t **event);
/*  The same without a copy: *event is borrowed from the iterator, a view
    over the page as it came from the broker, valid until the next call on
    the iterator (next, next_view, fetch, destroy); nexus_event_dup keeps
    it longer. No allocation per event. Returns as nexus_history_next;
    NEXUS_ERR_BAD_MSGPACK when an event of the page does not decode (the
    rest of that page is dropped; the next call goes on with the next one).*/
NEXUS_EXPORT nexus_err_t nexus_history_next_view(nexus_history_t *self, nexus_event_t **event);
/*  Fetches the next page now; *count receives its number of events (which
    nexus_history_next then returns one by one). 0 with *more false: end.   */
NEXUS_EXPORT nexus_err_t nexus_history_fetch(nexus_history_t *self, size_t *count, int *more);
/*  Oldest and newest seq the broker held at the last page.                 */
NEXUS_EXPORT void nexus_history_bounds(nexus_history_t *self, uint64_t *first_seq,
                                       uint64_t *last_seq);
/*  Seq to resume from: every event <= this has been returned or did not
    match (store it to continue later with set_seq_range (cursor, 0)).      */
NEXUS_EXPORT uint64_t nexus_history_position(nexus_history_t *self);
/*  The store the iterator's pages came from ("" before the first page, or
    from a broker that does not name its store): with
    nexus_history_position, the cursor to keep.                             */
NEXUS_EXPORT const char *nexus_history_store_id(nexus_history_t *self);
/*  The store a since_seq or cursor given to the iterator belongs to (NULL
    or "": any). A page from another store ends the iteration with
    NEXUS_ERR_RESET (its message names both stores; nexus_history_store_id
    and nexus_history_bounds then give the broker's store and range): the
    seqs asked for mean nothing there. A store that changes between two
    pages of one iteration does the same, with or without this call.
    NEXUS_ERR_INVALID when store_id is too long.                            */
NEXUS_EXPORT nexus_err_t nexus_history_set_store(nexus_history_t *self, const char *store_id);

/*  ---- Records: lists of sessions and claims ----------------------------
    A read-only list of msgpack maps (session or claim records as
    docs/protocol.md describes). Not thread-safe.              */
NEXUS_EXPORT void nexus_records_destroy(nexus_records_t **self_p);
NEXUS_EXPORT size_t nexus_records_count(const nexus_records_t *self);
/*  Field of record index as a string; NULL when absent or not a string.
    Valid while the records live.                                           */
NEXUS_EXPORT const char *nexus_records_str(nexus_records_t *self, size_t index, const char *field);
/*  Field as an unsigned integer (bools give 0/1); 0 when absent.           */
NEXUS_EXPORT uint64_t nexus_records_u64(const nexus_records_t *self, size_t index,
                                        const char *field);
/*  Record index as one compact JSON object; NULL when out of range or out
    of memory. Valid while the records live.                                */
NEXUS_EXPORT const char *nexus_records_json(nexus_records_t *self, size_t index);
/*  The record as msgpack-c object; NULL when out of range.                 */
NEXUS_EXPORT const struct msgpack_object *nexus_records_msgpack(const nexus_records_t *self,
                                                                size_t index);
/*  1 when the broker left records out (more matched than the limit): ask
    for the next page with the last record's id as after; 0 otherwise.     */
NEXUS_EXPORT int nexus_records_truncated(const nexus_records_t *self);
/*  How many records pass the list's filters in all, on every page (so
    "1000 of 1500"); 0 from a broker that does not say.                     */
NEXUS_EXPORT uint64_t nexus_records_matched(const nexus_records_t *self);

/*  ---- Sessions ---------------------------------------------------------
    Ops acting as the session send its id and, when known, its secret.     */

/*  Registers (or takes back, with the secret) the configured session with
    its name, capabilities, metadata, heartbeat and ttl. From then on the
    background thread sends heartbeats and registers again after losing
    the broker. The id and secret are then available through
    nexus_client_session_id/secret. *resumed (may be NULL) tells whether an
    existing session was taken back. Errors: those of any control call,
    NEXUS_ERR_BAD_REQUEST, NEXUS_ERR_FORBIDDEN (the id is taken by another
    owner and no/wrong secret).                                             */
NEXUS_EXPORT nexus_err_t nexus_session_register(nexus_client_t *self, int *resumed);

/*  Sets the session's state: "available", "busy" or "away". current_work
    and text: NULL leaves the field as it is, "" clears it. Errors:
    NEXUS_ERR_NOT_FOUND, NEXUS_ERR_FORBIDDEN, NEXUS_ERR_BAD_REQUEST,
    NEXUS_ERR_INVALID (state NULL, or no session configured).              */
NEXUS_EXPORT nexus_err_t nexus_session_status(nexus_client_t *self, const char *state,
                                              const char *current_work, const char *text);

/*  Ends the session (its claims are released; heartbeats stop).
 *released (may be NULL) receives the number of claims released.        */
NEXUS_EXPORT nexus_err_t nexus_session_unregister(nexus_client_t *self, uint64_t *released);

/*  One session record by id (NEXUS_ERR_NOT_FOUND; NEXUS_ERR_INVALID when
    session_id is NULL or "", or out is NULL). *out: caller owns.           */
NEXUS_EXPORT nexus_err_t nexus_session_get(nexus_client_t *self, const char *session_id,
                                           nexus_records_t **out);

/*  Sessions the broker knows, sorted by id; all != 0 includes gone ones
    seen recently. Up to 100 000 (the most one reply holds):
    nexus_records_truncated tells when more are known, and
    nexus_sessions_list_after gives the rest.                              */
NEXUS_EXPORT nexus_err_t nexus_sessions_list(nexus_client_t *self, int all, nexus_records_t **out);

/*  A page of nexus_sessions_list: the sessions with ids after after (NULL
    or "": from the first), at most limit (1..100000; 0: the broker's
    default, 1000; above 100000: NEXUS_ERR_INVALID, nothing sent).
    nexus_records_truncated: there are more.                                */
NEXUS_EXPORT nexus_err_t nexus_sessions_list_after(nexus_client_t *self, int all,
                                                   const char *after, uint32_t limit,
                                                   nexus_records_t **out);

/*  Sessions having every capability of the comma-separated list csv;
    available != 0 keeps only those in state "available" and status
    "active" (csv may then be NULL or "": every available session; with
    available 0 an empty csv is NEXUS_ERR_INVALID). Up to 100 000, as
    nexus_sessions_list.                                                    */
NEXUS_EXPORT nexus_err_t nexus_sessions_find(nexus_client_t *self, const char *csv, int available,
                                             nexus_records_t **out);

/*  A page of nexus_sessions_find, as nexus_sessions_list_after is of
    nexus_sessions_list: ids after after (NULL or ""), at most limit
    (1..100000; 0: the broker's default, 1000; above 100000:
    NEXUS_ERR_INVALID, nothing sent).                                       */
NEXUS_EXPORT nexus_err_t nexus_sessions_find_after(nexus_client_t *self, const char *csv,
                                                   int available, const char *after,
                                                   uint32_t limit, nexus_records_t **out);

/*  ---- Claims -----------------------------------------------------------
    Work items are claimed by the client's session (configure one and
    register it, or give the id and secret of a registered one). Every
    mutating call carries the fencing token the claim returned: a holder
    whose lease expired gets NEXUS_ERR_STALE_TOKEN, never silently wins.    */
typedef struct {
    uint64_t token;            /* fencing token when granted, else 0         */
    uint64_t expires_at;       /* lease end, microseconds since the epoch    */
    char holder[NEXUS_ID_MAX]; /* session holding the item                   */
    char state[16];            /* on NEXUS_ERR_DENIED: claimed or completed  */
} nexus_claim_result_t;

/*  Claims work_id (1..256 bytes) for ttl_ms (0: broker default 30 s) with
    an optional description. NEXUS_OK: granted, result->token is the fencing
    token. NEXUS_ERR_DENIED: someone else holds it (or it is completed);
    result->holder, ->expires_at and ->state tell who and until when.
    result may be NULL. Other errors: NEXUS_ERR_INVALID (no session),
    NEXUS_ERR_FORBIDDEN, NEXUS_ERR_NOT_FOUND (session unknown),
    NEXUS_ERR_BAD_REQUEST.                                                  */
NEXUS_EXPORT nexus_err_t nexus_claim(nexus_client_t *self, const char *work_id, uint64_t ttl_ms,
                                     const char *description, nexus_claim_result_t *result);

/*  Extends the lease to ttl_ms from now (0: by the claim's own lease, the
    ttl of the claim or of the last renewal that gave one); *expires_at
    (may be NULL) receives the new end.
    Errors: NEXUS_ERR_STALE_TOKEN, NEXUS_ERR_FORBIDDEN, NEXUS_ERR_CONFLICT
    (lease already expired or item not claimed), NEXUS_ERR_NOT_FOUND.      */
NEXUS_EXPORT nexus_err_t nexus_renew(nexus_client_t *self, const char *work_id, uint64_t token,
                                     uint64_t ttl_ms, uint64_t *expires_at);

/*  Gives the item back (reason may be NULL). Errors as nexus_renew.       */
NEXUS_EXPORT nexus_err_t nexus_release(nexus_client_t *self, const char *work_id, uint64_t token,
                                       const char *reason);

/*  Closes the item for good, with an optional result as JSON text (NULL:
    none). Errors as nexus_renew, and NEXUS_ERR_INVALID for bad JSON.       */
NEXUS_EXPORT nexus_err_t nexus_complete(nexus_client_t *self, const char *work_id, uint64_t token,
                                        const char *result_json);

/*  Claim records sorted by work id, filtered by holder session, state and
    work id prefix (each may be NULL); at most limit records (1..100000,
    the most one reply holds; 0: the broker default, 1000; above 100000:
    NEXUS_ERR_INVALID, nothing sent). nexus_records_truncated tells when
    more matched.                                                           */
NEXUS_EXPORT nexus_err_t nexus_claims_list(nexus_client_t *self, const char *holder,
                                           const char *state, const char *prefix, uint32_t limit,
                                           nexus_records_t **out);

/*  The same from the work id after after (NULL or "": from the first): the
    next page is asked with the last record's work_id.                    */
NEXUS_EXPORT nexus_err_t nexus_claims_list_after(nexus_client_t *self, const char *holder,
                                                 const char *state, const char *prefix,
                                                 const char *after, uint32_t limit,
                                                 nexus_records_t **out);

/*  ---- Raw requests ------------------------------------------------------
    Sends one control request given as a JSON object with an "op" (the
    client adds id, token and, unless present, session and secret for ops
    that start with "session." or "work."), and returns the whole reply as
    compact JSON text in *reply_json (caller frees it with free ()), also
    when the broker refused (then the return value is the error code).
    For ops this header has no function for (health, state, ...).          */
NEXUS_EXPORT nexus_err_t nexus_request_json(nexus_client_t *self, const char *request_json,
                                            char **reply_json);

/*  Converts one msgpack value (data, size) to compact JSON text as
    nexus_event_payload_json does; caller frees the result with free ().
    NULL when out of memory or data is NULL with a size.                   */
NEXUS_EXPORT char *nexus_msgpack_to_json(const void *data, size_t size);

/*  The reverse: packs JSON text as one msgpack value, with the mapping of
    nexus_publish_json ({"$base64":"..."} alone becomes bin). Returns the
    bytes and their count in *size; caller frees them with free (). NULL
    when json does not parse or out of memory. Sent as a bin payload, the
    result comes back from nexus_msgpack_to_json as the same JSON.         */
NEXUS_EXPORT void *nexus_json_to_msgpack(const char *json, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
