/*  =========================================================================
    nx_client - libnexus internals shared by its source files: the client
    structure, the event structure, control-plane request building and the
    JSON <-> msgpack conversion. Nothing here is installed.
    =========================================================================
*/

#ifndef NX_CLIENT_H_INCLUDED
#define NX_CLIENT_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdbool.h>

#include "nexus.h"
#include "nx_base64.h"
#include "nx_codec.h"
#include "nx_mpread.h"
#include "nx_topic.h"

#define NX_PATTERNS_MAX  64   /* patterns per client, as per history query  */
#define NX_ENDPOINT_MAX  512  /* bytes in an endpoint string                */
#define NX_CLIENT_ERRMAX 512  /* bytes in the per-client error text         */
#define NX_PAGE_MAX      1000 /* events per history page the resume reads  */
#define NX_SPARE_MAX     4    /* idle control connections a client keeps   */
#define NX_EPS_MAX       8    /* brokers in an endpoint list (a pair, ...)  */

/*  ---- Events -----------------------------------------------------------
    An event is either owned (one allocation holding every byte, made by
    nx_event_new, freed by nexus_event_destroy) or borrowed: a view the SDK
    fills in place over bytes it holds (a received frame, a history page)
    and hands to the application for the time of a callback or until the
    next read. Destroying a borrowed event only clears the caller's
    pointer; nexus_event_dup makes an owned copy of either kind.           */

struct _nexus_event_t {
    nexus_event_kind_t kind;   /* message or gap                             */
    bool borrowed;             /* a view: the SDK owns the memory            */
    uint64_t seq;              /* seq; for a gap the last missing one         */
    uint64_t ts;               /* broker time, us since the epoch             */
    uint64_t gap_from;         /* for a gap: first missing seq                */
    const char *topic;         /* NUL-terminated                              */
    const char *source;        /* NUL-terminated                              */
    const uint8_t *payload;    /* payload bytes (owned: followed by a NUL)    */
    size_t payload_len;        /* payload bytes                               */
    bool unpacked_done;        /* payload decode attempted                    */
    bool unpacked_ok;          /* and it gave exactly one msgpack value       */
    msgpack_unpacked unpacked; /* decoded payload when unpacked_ok          */
    char *payload_json;        /* cached nexus_event_payload_json, or NULL    */
    char *json;                /* cached nexus_event_json, or NULL            */

    /* store identity (nexus_event_store_id, nexus_event_reset)            */
    char store_id[NEXUS_STORE_ID_MAX];        /* the store seq belongs to    */
    char cursor_store_id[NEXUS_STORE_ID_MAX]; /* reset: the old cursor's     */
    uint64_t cursor_seq;                      /* reset: the old cursor       */
    uint64_t first_seq;                       /* reset: the new store's range */
    uint64_t last_seq;                        /* ...                          */
    const char *why;                          /* reset: static text           */
};

/*  What a reset event says (nexus_reset_t with room for the ids).         */
typedef struct {
    const char *why;                          /* static text               */
    char cursor_store_id[NEXUS_STORE_ID_MAX]; /* "": not known             */
    uint64_t cursor_seq;                      /* the old cursor            */
    char store_id[NEXUS_STORE_ID_MAX];        /* the store served now      */
    uint64_t first_seq;                       /* its range                 */
    uint64_t last_seq;                        /* ...                       */
} nx_reset_t;

/*  Copies a store id into dst (NEXUS_STORE_ID_MAX bytes), cut to fit.     */
void nx_store_id_copy(char *dst, const char *src);

/*  A borrowed event with room for its strings: topic and source are
    copied (they are short and the wire does not terminate them), the
    payload is pointed to where it lies.                                    */
typedef struct {
    nexus_event_t ev;               /* what the application sees           */
    char topic[NX_TOPIC_MAX + 1];   /* NUL-terminated copy of the topic    */
    char source[NX_SOURCE_MAX + 1]; /* NUL-terminated copy of the source   */
} nx_event_view_t;

/*  Makes v an empty borrowed event (call once before the first set).      */
void nx_view_init(nx_event_view_t *v);
/*  Points v at one event; payload is not copied and must outlive the use
    of v. Topic and source longer than their limits are cut.               */
void nx_view_set(nx_event_view_t *v, uint64_t seq, uint64_t ts, const char *topic, size_t topic_len,
                 const char *source, size_t source_len, const void *payload, size_t payload_len);
void nx_view_set_gap(nx_event_view_t *v, uint64_t from, uint64_t to);
void nx_view_set_reset(nx_event_view_t *v, const nx_reset_t *r);
/*  The store the view's next events belong to (kept across sets).         */
void nx_view_set_store(nx_event_view_t *v, const char *store_id);
/*  Frees what the application's calls cached in v (msgpack, JSON).        */
void nx_view_clear(nx_event_view_t *v);

/*  Creates an owned event, copying every byte; NULL when out of memory.   */
nexus_event_t *nx_event_new(uint64_t seq, uint64_t ts, const char *topic, size_t topic_len,
                            const char *source, size_t source_len, const void *payload,
                            size_t payload_len);
nexus_event_t *nx_event_new_gap(uint64_t from, uint64_t to);
/*  A reset event: seq 0 in the new store (r->store_id).                   */
nexus_event_t *nx_event_new_reset(const nx_reset_t *r);

/*  Reads one history record map {seq,ts,topic,source,payload} at r into
    m (whose pointers then point into r's bytes). Returns 0, or -1 when it
    is malformed (r is then somewhere inside it).                           */
int nx_event_read_record(nx_mpread_t *r, nx_event_msg_t *m);
/*  Points v at the event m describes (strings copied, payload pointed to). */
void nx_view_set_msg(nx_event_view_t *v, const nx_event_msg_t *m);

/*  ---- History pages -------------------------------------------------------
    The top-level fields of a `history` reply, read in place (nx_mpread):
    the events are left where they lie for the caller to walk.             */
typedef struct {
    uint64_t id;          /* the reply's id (0: none or not an integer)     */
    bool ok;              /* ok: true                                       */
    char error[32];       /* error code name when !ok                       */
    char message[256];    /* error message when !ok                         */
    bool more;            /* next_cursor is set                             */
    uint64_t next_cursor; /* where the next page starts (inclusive)         */
    uint64_t first_seq;   /* oldest event the store holds (0: empty)        */
    uint64_t last_seq;    /* highest seq committed                          */
    char store_id[64];    /* the store's identity ("": not in the reply)    */
    nx_mpread_t events;   /* at the first event map                         */
    uint32_t n_events;    /* events in the page                             */
} nx_page_t;

/*  Reads a history reply (or any reply: events then stays empty). Returns
    0, or -1 when data is not a msgpack map.                                */
int nx_page_parse(nx_page_t *pg, const void *data, size_t size);

/*  ---- JSON <-> msgpack --------------------------------------------------*/

/*  Converts a msgpack object to a new jansson value (NULL: no memory).     */
json_t *nx_json_from_msgpack(const msgpack_object *obj);
/*  Packs a jansson value as msgpack ({"$base64":..} alone becomes bin).   */
int nx_json_pack(msgpack_packer *pk, const json_t *value);
/*  Parses json text and packs it into buf. Returns 0, or -1 with a message
    in err (size errsize) when it does not parse.                           */
int nx_json_text_to_msgpack(const char *text, msgpack_sbuffer *buf, char *err, size_t errsize);
/*  Base64: nx_base64_encode and nx_base64_decode in nx_base64.h.          */

/*  ---- Control requests ---------------------------------------------------
    A request is built field by field into a body buffer and framed as a
    map when it is sent (msgpack needs the field count up front).           */
typedef struct {
    msgpack_sbuffer body; /* the packed key/value pairs after "op"          */
    msgpack_packer pk;    /* packs into body                                */
    uint32_t fields;      /* pairs in body                                  */
    char op[64];          /* the op name                                    */
} nx_req_t;

void nx_req_init(nx_req_t *req, const char *op);
void nx_req_destroy(nx_req_t *req);
void nx_req_str(nx_req_t *req, const char *key, const char *value);
/*  key: nil (a field the broker clears).                                  */
void nx_req_nil(nx_req_t *req, const char *key);
void nx_req_u64(nx_req_t *req, const char *key, uint64_t value);
void nx_req_bool(nx_req_t *req, const char *key, bool value);
void nx_req_bin(nx_req_t *req, const char *key, const void *data, size_t size);
/*  Adds key with an already packed msgpack value.                          */
void nx_req_raw(nx_req_t *req, const char *key, const void *packed, size_t size);
/*  Adds key with an array of strings.                                      */
void nx_req_strs(nx_req_t *req, const char *key, char **items, size_t count);
/*  Adds "session" and "secret" of the client (when known).                 */
void nx_req_session(nx_req_t *req, nexus_client_t *client);
/*  Packs the whole request map with id (and token when set) into out.      */
void nx_req_frame(nx_req_t *req, uint64_t id, const char *token, msgpack_sbuffer *out);

typedef struct {
    msgpack_unpacked unp;      /* owns the decoded reply                     */
    char *data;                /* the reply bytes (strings point into them)  */
    const msgpack_object *map; /* the reply map                             */
} nx_reply_t;

void nx_reply_init(nx_reply_t *rep);
void nx_reply_destroy(nx_reply_t *rep);
/*  Decodes a reply frame; returns 0 or -1 when it is not a map.            */
int nx_reply_parse(nx_reply_t *rep, const void *data, size_t size);
/*  The reply's id as u64 (0 when absent or of another type).              */
uint64_t nx_reply_id(const nx_reply_t *rep);
/*  NEXUS_OK when ok:true; else the error code (message into errbuf).       */
nexus_err_t nx_reply_status(const nx_reply_t *rep, char *errbuf, size_t errsize);
uint64_t nx_obj_u64(const msgpack_object *map, const char *key);
/*  Copies a string field into buf (size bytes; "" when absent).            */
const char *nx_obj_str(const msgpack_object *map, const char *key, char *buf, size_t size);

/*  ---- The client ---------------------------------------------------------*/

typedef struct _nx_async_t nx_async_t;

/*  One broker of the endpoint list: its control endpoint and the two event
    endpoints derived from it (or set explicitly).                        */
typedef struct {
    char control[NX_ENDPOINT_MAX]; /* control endpoint (DEALER)            */
    char in[NX_ENDPOINT_MAX];      /* broker XSUB: we publish there        */
    char out[NX_ENDPOINT_MAX];     /* broker XPUB: we subscribe there      */
} nx_ep_t;

struct _nexus_client_t {
    /* configuration: written before connect, read-only after            */
    nx_ep_t eps[NX_EPS_MAX];       /* the brokers, in the order given    */
    size_t n_eps;                  /* entries in eps (>= 1)              */
    char *name;                    /* session name or NULL               */
    char **caps;                   /* capabilities                       */
    size_t n_caps;                 /* entries in caps                    */
    uint8_t *metadata;             /* msgpack map or NULL                */
    size_t metadata_len;           /* bytes in metadata                  */
    char *token;                   /* access token or NULL               */
    char token_setting[64];        /* where it is set, named in errors   */
    char curve_server[41];         /* broker's public key (Z85), "": off */
    zcert_t *curve_cert;           /* this client's key pair, with CURVE */
    char *curve_error;             /* bad NEXUS_CURVE_* setting, or NULL */
    uint32_t heartbeat_ms;         /* session heartbeat interval          */
    uint64_t ttl_ms;               /* session ttl (0: none)              */
    uint32_t backoff_min;          /* reconnect backoff lower bound, ms  */
    uint32_t backoff_max;          /* reconnect backoff upper bound, ms  */
    uint32_t timeout_ms;           /* control call timeout (atomic: it may
                                      change while calls run; nx_client_timeout) */
    uint64_t max_request;          /* the broker's, from ping (atomic); 0:
                                      not known                          */
    uint32_t keepalive_ms;         /* ZeroMQ heartbeat interval, 0: off  */
    uint32_t keepalive_timeout_ms; /* no answer this long: link is dead  */
    size_t queue_max;              /* events waiting for nexus_recv      */
    nexus_event_fn *cb;            /* callback mode handler or NULL      */
    void *cb_arg;                  /* its argument                       */
    bool started;                  /* connect was called                 */
    bool refused;                  /* connect was refused (unauthorized)  */
    char refused_msg[NX_CLIENT_ERRMAX]; /* what connect said then          */
    nexus_client_t *live_prev;          /* the process's live clients (at exit) */
    nexus_client_t *live_next;
    pid_t pid;    /* the process that made it            */
    bool at_exit; /* the exit handler has it (s_live_lock) */

    /* state shared by threads, under lock                               */
    pthread_mutex_t lock;              /* guards everything below up to cond */
    char *session_id;                  /* session id or NULL                 */
    char *secret;                      /* session secret or NULL             */
    bool registered;                   /* heartbeats wanted                  */
    char errmsg[NX_CLIENT_ERRMAX];     /* last error detail                  */
    char store_id[NEXUS_STORE_ID_MAX]; /* the store delivery follows      */
    nexus_event_t **ring;              /* bounded event queue                */
    size_t q_head;                     /* index of the oldest queued event   */
    size_t q_count;                    /* queued events                      */
    size_t q_waiters;                  /* threads waiting in nexus_recv*     */
    bool closing;                      /* destroy started                    */
    nexus_client_stats_t stats;        /* counters                           */
    bool link_ok;                      /* last exchange with broker worked   */
    bool ever_ok;                      /* some exchange ever worked          */
    pthread_cond_t cond;               /* signalled on queue push and close  */

    /* failover between the brokers of eps (atomic; written under lock) */
    unsigned ep_cur; /* index of the broker in use                      */
    unsigned ep_gen; /* bumped at every switch: sockets made for an older
                        generation are made again                        */

    bool start_known;         /* atomic: the thread has its starting
                                 point (START or RESUME sent)        */
    pthread_mutex_t ctl_lock; /* serializes control calls           */
    zsock_t *dealer;          /* control socket for API calls       */
    unsigned dealer_gen;      /* ep_gen the dealer was made for     */
    uint64_t next_id;         /* request id counter (atomic)        */

    pthread_mutex_t pub_lock;           /* guards pub and what follows        */
    zsock_t *pub;                       /* XPUB to the broker's XSUB          */
    unsigned pub_gen;                   /* ep_gen it was made for             */
    char pub_source[NX_SOURCE_MAX + 1]; /* source frame of fire-and-forget  */
    size_t pub_source_len;              /* its length                         */
    unsigned pub_source_gen;            /* source_gen it was copied at        */
    unsigned pub_count;                 /* events sent, for the drain pace    */
    bool pub_waited;                    /* the first publish waited for the
                                           broker's subscription            */
    char pub_topic[NX_TOPIC_MAX + 1];   /* the last topic found valid         */
    size_t pub_topic_len;               /* its length (0: none yet)           */
    unsigned source_gen;                /* bumped when session id or name
                                           change (atomic; under lock)        */

    zsock_t *spare[NX_SPARE_MAX];     /* idle DEALERs for iterators (lock)  */
    unsigned spare_gen[NX_SPARE_MAX]; /* ep_gen each was made for (lock) */
    size_t n_spare;                   /* entries in spare (lock)            */

    pthread_mutex_t async_lock; /* guards async (nx_pubasync.c)       */
    nx_async_t *async;          /* nexus_publish_async's channel      */
    bool async_closed;          /* destroy began: it takes nothing    */
    uint32_t async_window;      /* its window: requests in flight     */
    size_t async_window_bytes;  /* and their bytes                    */

    pthread_mutex_t pipe_lock; /* serializes commands to the actor   */
    zactor_t *actor;           /* background thread                  */
};

/*  The control call timeout now (another thread may change it).         */
static inline uint32_t nx_client_timeout(const nexus_client_t *self)
{
    return __atomic_load_n(&self->timeout_ms, __ATOMIC_RELAXED);
}

/*  Sets the client's error text (printf style) and returns err.           */
nexus_err_t nx_client_fail(nexus_client_t *self, nexus_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*  NEXUS_ERR_CLOSED before connect; NEXUS_ERR_UNAUTHORIZED, with what
    connect said, after a connect the broker refused (a token or key it
    does not take: every call would wait out its timeout and say the
    broker is unreachable); else NEXUS_OK.                                 */
nexus_err_t nx_client_usable(nexus_client_t *self);

/*  NEXUS_ERR_BAD_TOPIC with why topic is not one; the topic is shown cut
    to 64 bytes, control bytes as '?'.                                      */
nexus_err_t nx_client_bad_topic(nexus_client_t *self, const char *topic);

/*  The check every publish shares: NEXUS_ERR_INVALID for NULL bytes of a
    non-zero size; else NEXUS_OK.                                           */
nexus_err_t nx_client_check_payload(nexus_client_t *self, const void *payload, size_t size);

/*  Sends req and waits for its reply (into rep, initialized by the call).
    Returns the reply status; on an error reply rep still holds it.         */
nexus_err_t nx_client_call(nexus_client_t *self, nx_req_t *req, nx_reply_t *rep);

/*  Packs the session.register request of the configured session.          */
void nx_client_register_req(nexus_client_t *self, nx_req_t *req);
/*  Stores session and secret from a session.register reply.               */
void nx_client_take_registration(nexus_client_t *self, const msgpack_object *map);

/*  Creates a socket of type connected to endpoint (NULL: not connected
    yet) with the client's reconnect, keepalive and CURVE settings; NULL on
    failure.                                                                */
zsock_t *nx_client_socket(nexus_client_t *self, int type, const char *endpoint);

/*  The broker in use (its strings do not change once connected) and the
    generation of that choice: read the generation first, then the broker,
    and make a socket again when the generation moved on.                  */
static inline unsigned nx_client_gen(nexus_client_t *self)
{
    return __atomic_load_n(&self->ep_gen, __ATOMIC_ACQUIRE);
}
static inline const nx_ep_t *nx_client_ep(nexus_client_t *self)
{
    return &self->eps[__atomic_load_n(&self->ep_cur, __ATOMIC_ACQUIRE)];
}

/*  Moves on from the broker of generation seen_gen (it did not answer, or
    is not the primary): to the one whose control endpoint is primary when
    that is in the list, else to the next. Nothing when another thread
    moved on already or the list has one broker. Returns the generation
    now in use.                                                             */
unsigned nx_client_failover(nexus_client_t *self, unsigned seen_gen, const char *primary);

/*  A DEALER to the control endpoint in use; with a list of brokers it
    queues nothing before it is connected (ZMQ_IMMEDIATE). NULL on failure. */
zsock_t *nx_client_control_dealer(nexus_client_t *self);

/*  Keeps the limits a ping reply gives (max_request).                     */
void nx_client_take_limits(nexus_client_t *self, const msgpack_object *ping);

/*  The broker's max_request when a request of size bytes is over it, after
    asking the broker again (a ping: it may have changed); 0 when the
    request may go. Takes ctl_lock: call without it.                       */
uint64_t nx_client_max_request(nexus_client_t *self, size_t size);

/*  A fresh request id (unique within the client, any thread).             */
uint64_t nx_client_next_id(nexus_client_t *self);

/*  A DEALER connected to the control endpoint for a history iterator: an
    idle one the client kept, or a new one; *gen receives the generation of
    the broker it is for (nx_client_gen). NULL when none can be made.     */
zsock_t *nx_client_dealer_get(nexus_client_t *self, unsigned *gen);
/*  Gives one back (*sock set to NULL): kept for the next iterator when
    quiet is true (no request in flight), it is for the broker in use (gen)
    and there is room, else closed.                                        */
void nx_client_dealer_put(nexus_client_t *self, zsock_t **sock, bool quiet, unsigned gen);

/*  Closes nexus_publish_async's channel: from now on it takes nothing
    (NEXUS_ERR_CLOSED), and a thread waiting in it for room gives up. The
    first step of nexus_client_destroy (nx_pubasync.c).                    */
void nx_async_close(nexus_client_t *self);

/*  Ends the channel once no other thread can be in it: what is in flight
    completes with NEXUS_ERR_CLOSED, and the channel is freed.              */
void nx_async_destroy(nexus_client_t *self);

/*  The background actor (nx_actor.c).                                      */
void nx_actor_fn(zsock_t *pipe, void *args);

/*  True when this thread is client's background thread (an exit() from
    an event callback runs the exit handlers there).                       */
bool nx_actor_is_current(nexus_client_t *client);

/*  On a background thread: closes its own sockets (the process exits
    from one of its callbacks, and nothing joins it).                      */
void nx_actor_close_current(void);
/*  Appends n owned events to the nexus_recv queue (the caller knows there
    is room) and adds delta to the counters, last_seq included, under one
    lock and with one wake-up. Returns the free slots left (SIZE_MAX in
    callback mode).                                                         */
size_t nx_client_take(nexus_client_t *self, nexus_event_t **events, size_t n,
                      const nexus_client_stats_t *delta, uint64_t last_seq);
void nx_client_set_link(nexus_client_t *self, bool ok);
/*  Records the store delivery follows (nexus_client_store_id).            */
void nx_client_set_store(nexus_client_t *self, const char *store_id);

uint64_t nx_clock_ms(void);
/*  A condition variable whose timed waits take CLOCK_MONOTONIC deadlines.
    Returns 0 or -1.                                                        */
int nx_cond_init_monotonic(pthread_cond_t *cond);
/*  A random request id base (see nexus_client_new).                        */
uint64_t nx_random_id(void);

#endif
