/*  =========================================================================
    nx_broker - nexusd's server: one thread, one poll loop, three planes.

    Event plane: publishers send [topic][payload] (optionally [source]) to
    the XSUB socket; the broker stamps each event with the next seq, a
    timestamp and the source, appends it to the store and forwards it on
    the XPUB socket as one frame, topic NUL stamp payload, once it is in
    the write-ahead log (nx_wal.h). Payload bytes are never decoded.

    Control plane: a ROUTER socket speaking msgpack request/reply; each op is
    one function in the table of nx_ops.c.

    Every loop turn is one batch: what is ready on the event plane (up to
    batch_max events) and on the control plane (up to requests_per_turn
    requests) is appended to the write-ahead log, written with one pwritev
    and flushed with one fdatasync; then events are forwarded, write replies
    sent, and read ops run. The LMDB store is written behind the log by the
    checkpointer (nx_checkpointer.h). So a reply that says "done" always
    follows the flush, and a subscriber that has seen seq N finds every
    event <= N in the history (history waits for the store to catch up).

    This header is internal to the broker (nx_broker.c, nx_ops.c).
    =========================================================================
*/

#ifndef NX_BROKER_H_INCLUDED
#define NX_BROKER_H_INCLUDED

/*  Peers told apart in a turn (s_note_peer in nx_broker.c): whether one of
    them has more than one request in it, i.e. pipelines.                  */
#define NX_TURN_PEERS 32

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_broker_config.h"
#include "nx_codec.h"
#include "nx_curve.h"
#include "nx_checkpointer.h"
#include "nx_disk.h"
#include "nx_hwm.h"
#include "nx_optab.h"
#include "nx_scratch.h"
#include "nx_stats.h"
#include "nx_store.h"
#include "nx_sublimit.h"
#include "nx_wal.h"
#include "nx_zap.h"

typedef struct _nx_broker_t nx_broker_t;
typedef struct _nx_snapshot_t nx_snapshot_t;

/*  Creates the broker: opens the store and binds every endpoint. Returns
    NULL on failure with a message in err_buf. Copies what it needs from
    cfg; the caller keeps cfg.                                              */
nx_broker_t *nx_broker_new(const nx_broker_config_t *cfg, char *err_buf, size_t err_size);

/*  Runs the loop until SIGINT/SIGTERM (zsys_interrupted) or
    nx_broker_stop. Commits the last batch before it returns. Returns 0 on a
    clean stop, -1 when the store failed beyond repair, NX_BROKER_RESTART
    when the broker must start again (a standby's base copy arrived, a
    fenced primary comes back as a standby, or a read-only broker
    (nx_readonly.h) found disk space again): destroy it and start anew.    */
#define NX_BROKER_RESTART 2
int nx_broker_run(nx_broker_t *self);

/*  Asks a running loop to stop at the end of its turn (signal-safe).       */
void nx_broker_stop(nx_broker_t *self);

/*  Records a store failure: `health` says degraded, with this text, for a
    minute after the last one. printf-style.                                */
void nx_broker_problem(nx_broker_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

void nx_broker_destroy(nx_broker_t **self_p);

/*  ---- Internal: shared with nx_ops.c ------------------------------------ */

/*  An event read in this turn, waiting for its commit to be forwarded.     */
typedef struct {
    zmq_msg_t topic;            /* frame 1, moved to the XPUB on send  */
    zmq_msg_t payload;          /* frame 3, moved to the XPUB on send  */
    uint64_t seq;               /* stamped sequence number             */
    uint64_t ts;                /* stamped time, us since epoch        */
    uint8_t source_len;         /* bytes in source                     */
    char source[NX_SOURCE_MAX]; /* stamped source                      */
} nx_pending_event_t;

/*  The routing frames of a request (identity, and REQ's empty delimiter),
    kept as raw messages: the control plane's hot path allocates nothing
    per request beyond what ZeroMQ does.                                    */
#define NX_ENVELOPE_MAX 4
typedef struct {
    zmq_msg_t frames[NX_ENVELOPE_MAX];
    int n;
} nx_envelope_t;

/*  A history or state query waiting for the store to catch up with the
    log (nx_broker.c, s_park).                                              */
typedef struct {
    nx_envelope_t env;      /* where the reply goes                            */
    zmq_msg_t body;         /* the request                                     */
    const struct nx_op *op; /* its row of the op table                   */
    const void *auth;       /* its token (nx_auth handle)                      */
    uint64_t need;          /* log position the store must cover               */
    uint64_t deadline;      /* mono us: busy after this                        */
} nx_parked_t;

/*  A reply or an event held until the log is durable up to gate: replies
    and the events of session and claim changes go out only once what they
    tell of is flushed; later events queue behind them (seq order).        */
typedef struct {
    nx_envelope_t env; /* where a reply goes; n == 0: an event            */
    zmq_msg_t msg;     /* the reply, or the event's frame                 */
    uint64_t gate;     /* log position that must be durable first         */
} nx_held_t;

/*  A FIFO of held messages (nx_broker.c).                                  */
typedef struct {
    nx_held_t *items;    /* ring of cap entries                            */
    size_t head, n, cap; /* first entry, entries, allocated                */
    size_t bytes;        /* message bytes the entries hold                 */
} nx_held_queue_t;

/*  A control request of this turn whose reply waits for the commit.        */
typedef struct {
    nx_envelope_t env;      /* routing frames to send the reply back         */
    msgpack_sbuffer reply;  /* the packed reply, ready to send               */
    msgpack_sbuffer id;     /* the request's packed id, to build an error    */
    bool is_write;          /* fails with the batch if the commit fails      */
    bool deferred;          /* history/state: waits for the store (parked)   */
    bool failed;            /* the reply is an error                         */
    zmq_msg_t body;         /* the request bytes; the parsed request points in */
    msgpack_zone zone;      /* holds the parsed request (reads run later)    */
    msgpack_object request; /* the parsed request map                        */
    const struct nx_op *op; /* its row of the op table; NULL: reply is ready */
    const void *auth;       /* the request's token (nx_auth handle)          */
    uint64_t need_lsn;      /* deferred: log position the store must cover   */
} nx_pending_reply_t;

/*  Counters reported by `state`.                                           */
typedef struct {
    uint64_t events_in;      /* events accepted since start              */
    uint64_t events_out;     /* events forwarded on the XPUB             */
    uint64_t drop_bad_topic; /* dropped: topic breaks the grammar        */
    uint64_t drop_oversize;  /* dropped: payload over max_payload        */
    uint64_t drop_malformed; /* dropped: wrong frame count or source     */
    uint64_t drop_store;     /* dropped: the store could not take them   */
    uint64_t drop_send;      /* dropped: XPUB refused the send           */
    uint64_t drop_slow;      /* subscriber queues that overflowed (gaps) */
    uint64_t requests;       /* control requests received                */
    uint64_t request_errors; /* control replies that carried an error    */
    uint64_t reader_errors;  /* history replies with an error (atomic)   */
    uint64_t batches;        /* loop turns that committed something      */
    uint64_t subscribers;    /* connected XPUB peers                     */
    uint64_t publishers;     /* connected XSUB peers                     */
    uint64_t subscriptions;  /* distinct subscription prefixes active    */
    uint64_t drop_forbidden; /* dropped: outside the publisher's pub=    */
    uint64_t sub_refused;    /* subscriptions no prefix was applied for  */
    uint64_t drop_standby;   /* dropped: this broker is not the primary  */
    uint64_t sub_dropped;    /* subscribers dropped: a subscription over
                                255 bytes, or over subscriptions_max    */
} nx_counters_t;

struct _nx_broker_t {
    nx_broker_config_t cfg;           /* own copy of the settings (strings owned)   */
    nx_store_t *store;                /* the LMDB store                             */
    zsock_t *xsub;                    /* events in                                  */
    zsock_t *xpub;                    /* events out                                 */
    zsock_t *router;                  /* control plane                              */
    nx_curve_t *curve;                /* CURVE security, NULL when off              */
    bool curve_keys;                  /* CURVE names each client by its key (not *) */
    bool perm;                        /* tokens: permissions are checked, and the
                                         XPUB is manual (nx_subs.c)                 */
    const void *pub_handle;           /* token of the last publisher seen ...       */
    char pub_name[NX_SOURCE_MAX + 1]; /* ... and its name (User-Id), a cache        */
    bool pub_known;                   /* that name is a token                       */
    bool ident;                       /* the event plane's authenticated identity
                                         (User-Id) is the source: CURVE with keys,
                                         or tokens                                  */
    nx_zap_t *zap;                    /* ZAP handler, NULL when no CURVE or tokens  */
    nx_zap_counts_t refused;          /* handshakes refused (state)                 */
    nx_log_limit_t refuse_log;        /* bounds the loop's refusal log lines        */
    nx_log_limit_t sub_log;           /* bounds refused-subscription log lines      */
    nx_sublimit_t *sublimit;          /* subscriptions per connection (nx_sublimit) */
    nx_log_limit_t sublimit_log;      /* bounds dropped-subscriber log lines        */
    size_t out_small;                 /* events up to this size fill queue_bytes    */
    int out_mark;                     /* the subscribers' queue mark in effect      */
    uint64_t large_bytes;             /* bytes of larger events sent, in all        */
    uint64_t queues_at;               /* mono us of the last s_check_queues look    */
    uint64_t queues_bytes;            /* large_bytes at that look                   */
    uint64_t accept_failed;           /* accepts that failed (out of descriptors)   */
    uint64_t accept_logged;           /* accept_failed when last logged             */
    uint64_t accept_logged_us;        /* and when (mono us)                         */
    char accept_where[16];            /* the socket of the last failure             */
    nx_disk_t disk;                   /* the data disk's free-space reserve         */
    char disk_why[640];               /* why writes are refused while it is short   */
    char *readonly;                   /* read-only, and why (nx_readonly.h), or NULL */
    uint64_t lag;                     /* read-only: log bytes recovery must apply   */
    zsock_t *mon_router;              /* socket monitor of the router (handshakes)  */
    zsock_t *mon_xpub;                /* socket monitor of xpub (connections)       */
    zsock_t *mon_xsub;                /* socket monitor of xsub                     */
    void *h_xsub, *h_xpub, *h_router; /* raw libzmq handles for the hot path */
    volatile int stop;                /* set by nx_broker_stop                      */
    uint64_t last_seq;                /* last seq stamped                           */
    uint64_t last_ts;                 /* last ts stamped, keeps ts non-decreasing   */
    uint64_t start_us;                /* wall clock at start                        */
    uint64_t start_mono;              /* monotonic clock at start                   */
    nx_pending_event_t *events;       /* batch_max slots                          */
    size_t events_cap;                /* slots allocated in events                  */
    size_t n_events;                  /* slots used this turn                       */
    uint64_t batch_payload;           /* payload bytes this turn                    */
    nx_pending_reply_t *replies;      /* requests_per_turn slots                 */
    size_t n_replies;                 /* slots used this turn                       */
    nx_counters_t count;              /* counters for `state`                       */
    nx_rate_t rate_in;                /* events accepted per second                 */
    zhashx_t *subscriptions;          /* prefix -> refcount, for `state`            */
    uint64_t dropped_logged;          /* drops already reported in the log          */
    uint64_t slow_logged;             /* slow-subscriber drops already logged       */
    uint64_t next_tick;               /* monotonic us of the next housekeeping      */
    char last_drop[160];              /* what the last dropped event looked like    */
    bool batch_kv;                    /* this turn logged session/claim changes     */
    bool batch_failed;                /* this turn could not log a change: undone   */
    uint64_t fault_turns;             /* NX_FAULTS: the Nth turn with session or
                                         claim changes fails (NEXUS_FAULT_TURN)     */
    size_t turn_first;                /* first event of this turn in events (0)     */
    uint64_t lazy_since;              /* mono us: oldest log write not flushed (no
                                         one waits for it), 0: none                */
    size_t turn_writes;               /* write requests read this turn              */
    uint64_t turn_need;               /* log position a query of this turn needs
                                         in the store (0: none)                    */
    uint64_t turn_seq, turn_ts;       /* last_seq, last_ts when the turn began      */
    const char *refuse;               /* why this turn takes no writes, or NULL     */
    nexus_err_t refuse_err;           /* and the error they get                     */
    bool emitting;                    /* the broker stages its own event            */
    bool fatal;                       /* the log failed: the loop stops (-1)        */
    nx_wal_t *wal;                    /* the write-ahead log                        */
    char *wal_dir;                    /* its directory (data_dir/wal)               */
    nx_checkpointer_t *ckpt;          /* writes the store behind the log            */
    nx_recovery_t recovery;           /* what the start replayed                    */
    nx_parked_t *parked;              /* queries waiting for the store              */
    size_t n_parked, cap_parked;      /* entries used and allocated                 */
    nx_held_queue_t held_replies;     /* replies waiting for the log's flush        */
    nx_held_queue_t held_events;      /* events waiting for it (and behind them)    */
    uint64_t kv_gate;                 /* log end of the last turn whose changes
                                         replies must not run ahead of           */
    uint64_t ckpt_woken;              /* durable position the checkpointer was
                                         last woken for                          */
    uint64_t problem_at;              /* mono us of the last store failure, 0: none  */
    char problem[640];                /* what it was, for `health`                   */
    uint64_t next_coord;              /* wall us of the next lease/session deadline */
    uint64_t sessions_due;            /* wall us by which the session table is
                                         scanned for timeouts (never late)     */
    bool coord_parked;                /* not leading: no timers run           */
    bool expiry_hold;                 /* no lease or session expires: after a
                                         pause, what came meanwhile is read first */
    bool hold_may;                    /* the timers ran since the last hold    */
    uint64_t hold_from, hold_cap;     /* mono us the hold began, its latest end */
    uint64_t loop_woke;               /* mono us the loop's last poll returned  */
    uint64_t loop_woke_wall;          /* the same on the wall clock            */
    uint64_t pauses;                  /* pauses that held expiries (state)     */
    uint64_t pause_logged;            /* mono us of the last pause log line     */
    zactor_t *reader;                 /* runs history queries (nx_reader.c)         */
    uint64_t seq_reserved;            /* seqs up to here may have been seen; a
                                         restart after a crash continues above    */
    uint64_t turn_now;                /* wall clock at the start of the turn        */
    size_t turn_request_bytes;        /* request bytes read this turn             */
    uint64_t turn_peers[NX_TURN_PEERS]; /* hashes of the peers read this turn     */
    size_t n_turn_peers;              /* how many, NX_TURN_PEERS at most          */
    bool turn_repeat;                 /* a peer sent two requests this turn       */
    struct _nx_sessions_t *sessions;  /* session table (nx_sessions.c)       */
    struct _nx_claims_t *claims;      /* claim table (nx_claims.c)           */
    struct _nx_auth_t *auth;          /* tokens (nx_auth.c)                  */
    bool snapshot_dirty;              /* sessions or claims changed since written   */
    nx_snapshot_t *snapshot;          /* its writer thread, NULL: no snapshot_file  */
    nx_scratch_t scratch;             /* msgpack buffers the loop reuses            */
    struct _nx_ha_t *ha;              /* primary/standby pair (nx_ha.c)             */
    uint64_t fence_block;             /* fencing tokens up to here may be handed
                                         out before a new block is logged          */
};

/*  ---- The op table (nx_ops.c) ------------------------------------------- */

/*  One control request as its handler sees it (redis's `client *c`):
    everything about the request in one argument, nothing parked on the
    broker between calls. The handler reads fields, packs the reply's own
    fields (not id/ok) into reply, nx_dmap_pair () counting them, and
    returns 0; or fails with nx_request_fail () and returns -1. Fields
    packed after the failure go out with the error (a denied claim names
    the holder). The fields were checked against the op's row of the
    protocol table (nx_optab) before the handler runs. Write ops stage
    their writes in the open batch; the reply goes out after the commit.   */
typedef struct {
    const uint8_t *peer;          /* routing id of the connection, or NULL   */
    size_t peer_len;              /* bytes in peer                           */
    const void *auth;             /* the request's token (nx_auth handle)    */
    uint64_t hash;                /* identifies a retry (protocol.md 7); 0:
                                     no id, or an op without retries        */
    const msgpack_object *fields; /* the request map                         */
    nx_dmap_t reply;              /* the reply's fields, counted             */
    nexus_err_t err;              /* NEXUS_OK, or why it failed              */
    char err_msg[NX_ERRMSG_MAX];  /* the error's message                     */
} nx_request_t;

/*  Fails rq with err and a printf-style message; drops the fields packed
    so far. Returns -1, for `return nx_request_fail (...)`.                 */
int nx_request_fail(nx_request_t *rq, nexus_err_t err, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/*  Counts one reply field and returns the packer for its key and value.  */
static inline msgpack_packer *nx_kv(nx_request_t *rq)
{
    return nx_dmap_pair(&rq->reply);
}

typedef int(nx_op_fn)(nx_broker_t *self, nx_request_t *rq);

typedef struct nx_op {
    const nx_opdef_t *def; /* its row of the protocol table: name, flags,
                              fields                                       */
    nx_op_fn *fn;          /* the handler; NULL: the reader thread's       */
} nx_op_t;

/*  Joins the protocol table to the handlers; -1 (with a message) when an
    op has no handler. Called once by nx_broker_new.                        */
int nx_ops_init(char *err_buf, size_t err_size);

/*  The op named name (len bytes), or NULL.                                 */
const nx_op_t *nx_ops_find(const char *name, size_t len);

/*  Logs (and flushes) what starts a primary's run: the run record, a block
    of seqs and of fencing tokens. At start, and when a standby is promoted.
    Returns 0, or -1 with errno set.                                        */
int nx_broker_log_start(nx_broker_t *self);

/*  Packs the live subscriptions of the XPUB as an array of
    {prefix, subscribers}, most subscribed first (nx_broker.c).            */
void nx_broker_pack_subscriptions(nx_broker_t *self, msgpack_packer *pk);

/*  Stamps and stages one event from the control plane (publish op, and
    events the broker itself emits), refusing payloads over max_payload.
    Returns NEXUS_OK and *seq, or an error with err_msg set.                 */
nexus_err_t nx_broker_emit(nx_broker_t *self, const char *topic, size_t topic_len,
                           const char *source, size_t source_len, const void *payload,
                           size_t payload_len, uint64_t max_payload, uint64_t *seq, char *err_msg);

#endif
