/*  =========================================================================
    bench_util - what every nexus benchmark needs: a nexusd child process on
    free loopback ports with a fresh data directory, control-plane request
    helpers, a flow-controlled publisher with counting subscribers, a paced
    latency stream, and percentiles.

    The benchmarks run clients in one process (threads) so that send and
    receive times come from the same CLOCK_MONOTONIC, and so that a
    publisher can be held back by what its subscribers have really received:
    a PUB socket drops silently when its queue is full, so a benchmark that
    does not count arrivals measures nothing (docs/benchmarks.md).
    =========================================================================
*/

#ifndef BENCH_UTIL_H_INCLUDED
#define BENCH_UTIL_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <zmq.h>

/*  ---- Clock and statistics ---------------------------------------------- */

/*  CLOCK_MONOTONIC in nanoseconds.                                         */
uint64_t bench_now_ns(void);

typedef struct {
    size_t n;      /* samples                                               */
    double p50_us; /* percentiles in microseconds                           */
    double p99_us;
    double p999_us;
    double max_us;
} bench_pct_t;

/*  Sorts v (n latencies in ns) in place and fills out.                     */
void bench_percentiles(uint64_t *v, size_t n, bench_pct_t *out);

/*  Median of n doubles (sorts v in place).                                 */
double bench_median(double *v, size_t n);

/*  ---- The broker child ----------------------------------------------- */

typedef struct {
    pid_t pid;           /* nexusd, 0 when not running                      */
    char dir[256];       /* temporary directory we own (data, log)          */
    char data_dir[300];  /* dir/data: the LMDB store                        */
    char log_path[300];  /* dir/nexusd.log: the broker's stderr and stdout  */
    char control[64];    /* tcp://127.0.0.1:P endpoints                     */
    char events_in[64];  /* XSUB, publishers connect here                   */
    char events_out[64]; /* XPUB, subscribers connect here                  */
    char sync[8];        /* full | none                                     */
    char *extra[16];     /* more arguments for nexusd (owned), NULL-ended   */
} bench_broker_t;

/*  Picks the nexusd binary: path when not NULL, else $NEXUSD, else the one
    this build made, else ../broker/nexusd next to the running program.     */
void bench_set_nexusd(const char *path);
const char *bench_nexusd(void);

/*  Makes a fresh temporary directory (under $NEXUS_BENCH_DIR or /tmp),
    picks three free loopback ports and starts nexusd with the given sync
    mode; returns when it answers ping. Returns NULL on failure (with the
    reason and the broker's log on stderr). Caller destroys.               */
bench_broker_t *bench_broker_new(const char *sync);

/*  Like bench_broker_new, with more arguments for nexusd (extra: a NULL-
    ended list of at most 15 strings, copied), e.g. a standby's settings. */
bench_broker_t *bench_broker_new_with(const char *sync, const char *const *extra);

/*  Stops nexusd (if running) and starts it again on the same store and
    ports with another sync mode. Returns 0, or -1.                          */
int bench_broker_restart(bench_broker_t *self, const char *sync);

/*  SIGTERM, then waits up to 10 s (SIGKILL after). Returns the exit status
    (0 clean), or -1 if it had to be killed or died of a signal; a problem is
    reported on stderr.                                                      */
int bench_broker_stop(bench_broker_t *self);

/*  Stops the broker and removes its directory ($NEXUS_BENCH_KEEP keeps it).*/
void bench_broker_destroy(bench_broker_t **self_p);

/*  Counters from the broker's `state` reply.                                */
typedef struct {
    uint64_t events_total; /* events stored                                  */
    uint64_t events_out;   /* events forwarded on XPUB                       */
    uint64_t drops;        /* drops.total                                    */
    uint64_t drop_send;    /* drops.send: subscriber queue full              */
    uint64_t batches;      /* write transactions                             */
    uint64_t last_seq;     /* history.last_seq                               */
    uint64_t count;        /* history.count                                  */
} bench_state_t;

/*  Asks the broker for `state`. Returns 0, or -1.                           */
int bench_broker_state(bench_broker_t *self, void *ctx, bench_state_t *out);

/*  ---- Control plane ---------------------------------------------------- */

/*  A DEALER connected to endpoint with linger 0. Returns NULL on failure.  */
void *bench_dealer(void *ctx, const char *endpoint);

/*  Packs {"op":"publish","id":id,"topic":topic,"payload":bin}.             */
void bench_pack_publish(msgpack_sbuffer *buf, uint64_t id, const char *topic, const void *payload,
                        size_t len);

/*  One reply: the decoded map points into the frame, so both live here. */
typedef struct {
    zmq_msg_t frame;           /* the received frame                        */
    msgpack_unpacked unpacked; /* decoded; str/bin point into frame         */
    msgpack_object *map;       /* &unpacked.data, a map                     */
} bench_reply_t;

/*  Receives one reply frame into *reply (caller destroys it with
    bench_reply_destroy), waiting at most timeout_ms (0: only what is
    already queued). Returns 0, or -1 on timeout or when the frame is not
    one msgpack map (then there is nothing to destroy).                     */
int bench_recv_reply(void *dealer, bench_reply_t *reply, int timeout_ms);
void bench_reply_destroy(bench_reply_t *reply);

/*  True when the reply map has "ok": true. *id gets "id" when it is an
    unsigned integer (else left alone).                                     */
bool bench_reply_ok(const msgpack_object *map, uint64_t *id);

/*  Prints the reply's error and message to stderr, prefixed by what.       */
void bench_reply_print_error(const char *what, const msgpack_object *map);

/*  ---- Event plane: flow-controlled flood ----------------------------------
    One publisher (the calling thread) sends n events of payload bytes on
    topic, never more than window ahead of the slowest of nsubs subscriber
    threads; each event carries its index, so drops are counted exactly. */

#define BENCH_SUBS_MAX 16

typedef struct {
    uint64_t sent;                     /* events sent                       */
    uint64_t received[BENCH_SUBS_MAX]; /* events each subscriber got        */
    uint64_t out_of_order;             /* index went backwards (any sub)    */
    double seconds;                    /* first send -> last receipt        */
    double send_seconds;               /* first send -> last send           */
    bool stalled;                      /* gave up waiting for events        */
} bench_flood_t;

int bench_flood(bench_broker_t *broker, void *ctx, const char *topic, uint64_t n, size_t payload,
                int nsubs, uint64_t window, bench_flood_t *out);

/*  ---- Event plane: paced latency stream ------------------------------------
    The calling thread publishes n events of payload bytes at rate per
    second on a fixed schedule (a late event goes out at once, the schedule
    does not slip); a subscriber thread records receive - send time. */

typedef struct {
    uint64_t sent;      /* events sent                                       */
    uint64_t received;  /* events received                                   */
    double seconds;     /* duration of the publishing                        */
    double late_max_us; /* how far the publisher fell behind its schedule    */
    bench_pct_t lat;    /* one-way latency                                   */
} bench_stream_t;

int bench_stream(bench_broker_t *broker, void *ctx, const char *topic, uint64_t n, unsigned rate,
                 size_t payload, bench_stream_t *out);

/*  ---- Arguments --------------------------------------------------------- */

/*  Returns the value of "--name VALUE" or "--name=VALUE" in argv, or dflt.
    Also honours --nexusd PATH for every benchmark.                          */
uint64_t bench_arg_u64(int argc, char **argv, const char *name, uint64_t dflt);
const char *bench_arg_str(int argc, char **argv, const char *name, const char *dflt);
/*  -h/--help prints usage and exits 0; an option usage does not name
    ("--name") is reported with usage and exits 2: a typo is not a silent
    default.                                                                */
void bench_usage(int argc, char **argv, const char *usage);

#endif
