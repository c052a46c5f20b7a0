/*  =========================================================================
    nx_broker - nexusd's loop: stamping proxy, group commit, control plane.

    One turn of the loop:
      1. poll the sockets (timeout: the next housekeeping tick);
      2. read what is ready: events from XSUB (up to batch_max events or
         batch_bytes payload bytes) and requests from the ROUTER (up to
         requests_per_turn); events are stamped and appended to the store,
         write ops stage their writes in the same batch;
      3. under sync=full, a turn of events only is appended to the forward
         log and forwarded on XPUB now, before its commit's flush;
      4. commit the batch (one fsync under sync=full), or, when nothing in
         it waits for the flush, leave it open for a later turn (at most
         flush_interval: s_may_wait);
      5. forward the events not forwarded yet, send the replies in arrival
         order, running read ops now, against the committed state.
    Bounding both reads in step 2 is what keeps a flood on one plane from
    starving the other.
    =========================================================================
*/

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_auth.h"
#include "nx_broker.h"
#include "nx_coord.h"
#include "nx_curve.h"
#include "nx_ha.h"
#include "nx_poll.h"
#include "nx_reader.h"
#include "nx_readonly.h"
#include "nx_subs.h"
#include "nx_log.h"
#include "nx_unread.h"
#include "nx_topic.h"

/*  Control clients may send at most this multiple of max_request before
    ZeroMQ drops the connection: a request up to max_request gets an error
    reply, a far larger one is not worth reading into memory.              */
#define S_MAXMSG_FACTOR 4
/*  Subscribers send only subscriptions (at most 1 + 255 bytes, or the
    ZMTP 3.1 command of 10 + 255) and handshake commands (a PLAIN hello
    with a token, a CURVE initiate: a few hundred bytes). A frame over this
    drops the connection before libzmq allocates it (nx_sublimit.h).       */
#define S_XPUB_MAXMSG 4096
#define S_XPUB_RCVHWM 2
#define S_TICK_US     1000000
/*  While large events go out the subscribers' connections are looked at
    (s_check_queues) at most this often, or once a quarter of queue_bytes
    of them went out.                                                      */
#define S_QUEUE_CHECK_US 10000ull
/*  Prefixes state's subscriptions and channels count at most (each entry
    is a few hundred bytes at most).                                       */
#define S_SUBSCRIPTIONS_TRACKED 50000
/*  Parsed requests of one turn wait in memory until the commit; msgpack-c
    needs up to ~24 bytes per element, so the request bytes read in one
    turn are bounded too.                                                   */
#define S_TURN_REQUEST_BYTES (4u << 20)
#define S_MSGPACK_DEPTH      32
/*  Scratch buffers up to this size are kept for the next request; a larger
    one (a big reply) goes back to malloc.                                  */
#define S_SCRATCH_KEEP (256u << 10)
/*  Seqs are reserved durably in blocks (see s_reserve_seqs): a seq that
    may have been seen (events go out before their flush) is never handed
    out again after a power cut.                                           */
#define S_SEQ_BLOCK           (1u << 20)
#define S_META_SEQ_RESERVED   "seq_reserved"
#define S_META_FENCE_RESERVED "fence_reserved"
/*  Fencing tokens are reserved in blocks too, for a promotion: a promoted
    standby continues above the block (the old primary may have handed out
    tokens the copy of its log had not reached yet under async).           */
#define S_FENCE_BLOCK      (1u << 20)
#define S_META_FENCE_BLOCK "fence_block"
/*  Meta key of the record each run writes first: the boot id it runs
    under and a random nonce (which also starts a new checksum chain).     */
#define S_META_RUN "run"
/*  What a run starts from, written with its run record: seqs and fencing
    tokens continue above these even when the run stores nothing. A skip
    (below) lives in memory until the first event or grant of the run;
    without them a later start on the same boot handed the skipped seqs
    out again.                                                              */
#define S_META_SEQ_FLOOR   "seq_floor"
#define S_META_FENCE_FLOOR "fence_floor"
/*  history and state queries waiting for the store to catch up with the
    log: at most this many, each at most this long (then `busy`).          */
#define S_PARKED_MAX  4096
#define S_PARKED_WAIT (10u * 1000000)
/*  A stop waits this long for the store to take the whole log.            */
#define S_STOP_SYNC_MS 30000
/*  Held replies (events: times batch_max) past which the loop reads no
    more requests (events) until a flush releases some: a slow disk holds
    clients back through their ZeroMQ queues, never the broker's memory.  */
#define S_HELD_REPLIES_MAX   65536
#define S_HELD_EVENTS_FACTOR 4
#define S_HELD_REPLY_BYTES   (64u << 20)

/*  The mark a failed write or flush leaves in the data directory: Linux
    may drop the pages it could not write (and report the error once), so
    the next start on this boot must not trust that the log holds every
    event that went out (seqs that may have been seen are skipped).       */
#define S_FLUSH_FAILED "flush-failed"

static void s_reply_error(nx_pending_reply_t *pr, nexus_err_t err, const char *msg);
static void s_fatal(nx_broker_t *self, const char *what);
static void s_held_free(nx_held_queue_t *q);
static bool s_more_input(nx_broker_t *self);
static void s_wake_checkpointer(nx_broker_t *self);

static void s_read_monitor(nx_broker_t *self, zsock_t *mon, uint64_t *connected,
                           const char *socket);

static void s_env_close(nx_envelope_t *env)
{
    for (int k = 0; k < env->n; k++)
        zmq_msg_close(&env->frames[k]);
    env->n = 0;
}

/*  ---- Setup ------------------------------------------------------------ */

static bool s_is_loopback(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return true; /* ipc:// and inproc:// never leave the machine */
    const char *host = endpoint + 6;
    return strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 ||
           strncmp(host, "[::1]:", 6) == 0 || strncmp(host, "lo:", 3) == 0;
}

/*  Binds sock to every comma-separated endpoint in list.                   */
static int s_bind_all(zsock_t *sock, const char *list, const char *what, const char *open_warning,
                      char *err_buf, size_t err_size)
{
    char *copy = strdup(list);
    if (!copy) {
        snprintf(err_buf, err_size, "out of memory");
        return -1;
    }
    int rc = 0, bound = 0;
    char *save = NULL;
    for (char *ep = strtok_r(copy, ", ", &save); ep; ep = strtok_r(NULL, ", ", &save)) {
        if (zsock_bind(sock, "%s", ep) == -1) {
            snprintf(err_buf, err_size, "cannot bind %s endpoint '%s': %s", what, ep,
                     zmq_strerror(zmq_errno()));
            rc = -1;
            break;
        }
        bound++;
        const char *real = zsock_endpoint(sock);
        nx_info("%s bound on %s", what, real ? real : ep);
        if (!s_is_loopback(ep) && open_warning)
            nx_warn("%s endpoint %s is not loopback: %s", what, ep, open_warning);
    }
    if (rc == 0 && bound == 0) {
        snprintf(err_buf, err_size, "no %s endpoint configured", what);
        rc = -1;
    }
    free(copy);
    return rc;
}

/*  Reads a u64 from meta; 0 when absent.                                   */
static uint64_t s_meta_u64(nx_broker_t *self, const char *key)
{
    void *value = NULL;
    size_t len = 0;
    uint64_t v = 0;
    if (nx_store_get(self->store, NX_DB_META, key, strlen(key), &value, &len) == NEXUS_OK &&
        len == 8)
        v = nx_get_u64(value);
    free(value);
    return v;
}

/*  Appends seq_reserved = seq to the turn's records; the caller makes the
    turn flush before any event above the old reservation goes out.       */
static int s_log_reservation(nx_broker_t *self, uint64_t seq)
{
    uint8_t v[8];
    nx_put_u64(v, seq);
    if (nx_wal_put(self->wal, NX_DB_META, S_META_SEQ_RESERVED, strlen(S_META_SEQ_RESERVED), v,
                   sizeof v))
        return -1;
    self->seq_reserved = seq;
    return 0;
}

/*  Appends fence_block = the last token + a block to the turn's records. */
static int s_log_fence_block(nx_broker_t *self)
{
    uint8_t v[8];
    uint64_t block = nx_claims_fence(self) + S_FENCE_BLOCK;
    nx_put_u64(v, block);
    if (nx_wal_put(self->wal, NX_DB_META, S_META_FENCE_BLOCK, strlen(S_META_FENCE_BLOCK), v,
                   sizeof v))
        return -1;
    self->fence_block = block;
    return 0;
}

/*  Writes and flushes what was appended outside a turn (start, stop) and
    tells the checkpointer. Returns 0, or -1 with errno set.                */
static int s_log_sync(nx_broker_t *self)
{
    if (nx_wal_write(self->wal) || nx_wal_flush(self->wal))
        return -1;
    nx_checkpointer_wake(self->ckpt);
    return 0;
}

/*  The first records of a run, written once its endpoints are bound (a
    start that fails leaves the log as it found it): the boot it runs under
    with a random nonce (so its frames start a chain no earlier frame can
    continue) and a block of seqs.                                          */
static int s_log_start(nx_broker_t *self)
{
    uint8_t floor[8];
    nx_put_u64(floor, self->last_seq);
    if (nx_wal_put(self->wal, NX_DB_META, S_META_SEQ_FLOOR, strlen(S_META_SEQ_FLOOR), floor,
                   sizeof floor))
        return -1;
    nx_put_u64(floor, nx_claims_fence(self));
    if (nx_wal_put(self->wal, NX_DB_META, S_META_FENCE_FLOOR, strlen(S_META_FENCE_FLOOR), floor,
                   sizeof floor))
        return -1;
    uint8_t run[NX_WAL_BOOT_MAX + 16];
    memset(run, 0, sizeof run);
    nx_wal_boot_id((char *)run);
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        nonce = nx_now_us() ^ (uint64_t)getpid();
    nx_put_u64(run + NX_WAL_BOOT_MAX, nonce);
    nx_put_u64(run + NX_WAL_BOOT_MAX + 8, nx_now_us());
    if (nx_wal_put(self->wal, NX_DB_META, S_META_RUN, strlen(S_META_RUN), run, sizeof run) ||
        s_log_reservation(self, self->last_seq + S_SEQ_BLOCK) || s_log_fence_block(self))
        return -1;
    return s_log_sync(self);
}

int nx_broker_log_start(nx_broker_t *self)
{
    return s_log_start(self);
}

/*  True when the last run recorded the boot we run under now: the page
    cache it wrote to is still there, so the log holds all it wrote.      */
static bool s_same_boot(nx_broker_t *self)
{
    char boot[NX_WAL_BOOT_MAX];
    if (nx_wal_boot_id(boot))
        return false;
    void *value = NULL;
    size_t len = 0;
    bool same = nx_store_get(self->store, NX_DB_META, S_META_RUN, strlen(S_META_RUN), &value,
                             &len) == NEXUS_OK &&
                len >= NX_WAL_BOOT_MAX && memcmp(value, boot, NX_WAL_BOOT_MAX) == 0;
    free(value);
    return same;
}

/*  Opens the write-ahead log and brings the store up to its end (what was
    acknowledged, and forwarded, before a crash); the log then goes on
    where the valid log ended.                                             */
static int s_open_log(nx_broker_t *self, char *err_buf, size_t err_size)
{
    if (asprintf(&self->wal_dir, "%s/wal", self->cfg.data_dir) < 0) {
        self->wal_dir = NULL;
        snprintf(err_buf, err_size, "out of memory");
        return -1;
    }
    /*  A segment holds at least two of the largest records: an event the
        broker emits may carry a whole request besides its own fields.     */
    uint64_t largest = self->cfg.max_payload + self->cfg.max_request + (128u << 10);
    uint64_t seg = self->cfg.wal_segment;
    /*  A standby's log is a copy of the primary's: it keeps the segment
        size its store recorded (the primary's, from the base copy).      */
    uint64_t kept = s_meta_u64(self, "wal_segment");
    if (nx_ha_keeps_segment(self->ha) && kept >= NX_WAL_SEGMENT_MIN)
        seg = kept;
    else if (seg < 2 * largest) {
        seg = (2 * largest + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
        nx_info("wal_segment raised to %" PRIu64 " bytes: it must hold two of the largest "
                "records (max_payload + max_request)",
                seg);
    }
    nx_wal_config_t wcfg = {self->wal_dir, seg, self->cfg.sync == NX_SYNC_FULL};
    self->wal = nx_wal_new(&wcfg, err_buf, err_size);
    if (!self->wal)
        return -1;
    nx_recovery_t *rec = &self->recovery;
    if (nx_checkpointer_recover(self->store, self->wal_dir, seg, rec, err_buf, err_size))
        return -1;
    if (rec->frames)
        nx_warn("recovered from the write-ahead log: %" PRIu64 " events and %" PRIu64
                " changes above the checkpoint (log %" PRIu64 "..%" PRIu64 ")",
                rec->events, rec->changes, rec->from, rec->end);
    if (rec->damaged_frames) {
        /*  Not a torn end: frames that check follow the one that does not.
            Said as an error, and in health, not as the usual torn write. */
        nx_error("the write-ahead log is damaged at %" PRIu64 ": that frame does not check, and "
                 "%" PRIu64 " %s that do follow it (log %" PRIu64 "..%" PRIu64 "). They are "
                 "left out: the log goes on at %" PRIu64 ". After a power loss they were never "
                 "acknowledged; otherwise the disk damaged the log, and acknowledged changes in "
                 "them are lost. A copy of those segments is in %s",
                 rec->damaged_at, rec->damaged_frames,
                 rec->damaged_frames == 1 ? "frame" : "frames", rec->damaged_from, rec->damaged_to,
                 rec->start, rec->kept[0] ? rec->kept : "(none: the copy failed)");
        nx_broker_problem(self,
                          "the write-ahead log was damaged at %" PRIu64 ": %" PRIu64
                          " frames past it were left out at the start (copy in %s)",
                          rec->damaged_at, rec->damaged_frames, rec->kept[0] ? rec->kept : "none");
    } else if (rec->cut || rec->torn)
        nx_warn("the write-ahead log ended in a torn write at %" PRIu64 " (%" PRIu64
                " bytes of a turn that never finished were left out; no acknowledged "
                "change is in them)",
                rec->end, rec->cut);
    if (nx_wal_start(self->wal, rec->start, rec->end_crc, err_buf, err_size))
        return -1;
    /*  The forward log of earlier versions: the log replaces it.         */
    char *fwd = NULL;
    struct stat st;
    if (asprintf(&fwd, "%s/forwarded.log", self->cfg.data_dir) >= 0 && stat(fwd, &st) == 0) {
        nx_info("removed %s, the forward log of an earlier version (the write-ahead log "
                "replaces it)",
                fwd);
        unlink(fwd);
    }
    free(fwd);
    return 0;
}

static char *s_strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void s_free_config(nx_broker_config_t *cfg)
{
    free(cfg->data_dir);
    free(cfg->control_endpoints);
    free(cfg->events_in_endpoints);
    free(cfg->events_out_endpoints);
    free(cfg->token);
    free(cfg->tokens_file);
    free(cfg->curve_cert);
    free(cfg->curve_clients);
    free(cfg->snapshot_file);
    free(cfg->name);
    free(cfg->advertise);
    free(cfg->peer_advertise);
    free(cfg->replica_of);
    free(cfg->replica_token);
    free(cfg->etcd);
    free(cfg->etcd_prefix);
    memset(cfg, 0, sizeof *cfg);
}

nx_broker_t *nx_broker_new(const nx_broker_config_t *cfg, char *err_buf, size_t err_size)
{
    nx_broker_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err_buf, err_size, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
#ifdef NX_FAULTS
    const char *fault = getenv("NEXUS_FAULT_TURN");
    self->fault_turns = fault ? strtoull(fault, NULL, 10) : 0;
#endif
    self->cfg.data_dir = s_strdup_or_null(cfg->data_dir);
    self->cfg.control_endpoints = s_strdup_or_null(cfg->control_endpoints);
    self->cfg.events_in_endpoints = s_strdup_or_null(cfg->events_in_endpoints);
    self->cfg.events_out_endpoints = s_strdup_or_null(cfg->events_out_endpoints);
    self->cfg.token = s_strdup_or_null(cfg->token);
    self->cfg.tokens_file = s_strdup_or_null(cfg->tokens_file);
    self->cfg.curve_cert = s_strdup_or_null(cfg->curve_cert);
    self->cfg.curve_clients = s_strdup_or_null(cfg->curve_clients);
    self->cfg.snapshot_file = s_strdup_or_null(cfg->snapshot_file);
    self->cfg.name = s_strdup_or_null(cfg->name);
    self->cfg.advertise = s_strdup_or_null(cfg->advertise);
    self->cfg.peer_advertise = s_strdup_or_null(cfg->peer_advertise);
    self->cfg.replica_of = s_strdup_or_null(cfg->replica_of);
    self->cfg.replica_token = s_strdup_or_null(cfg->replica_token);
    self->cfg.etcd = s_strdup_or_null(cfg->etcd);
    self->cfg.etcd_prefix = s_strdup_or_null(cfg->etcd_prefix);
    self->refuse_log = (nx_log_limit_t){"refused handshakes", NX_ZAP_LOG_PER_SECOND, 0, 0, 0};
    self->sub_log = (nx_log_limit_t){"refused subscriptions", NX_ZAP_LOG_PER_SECOND, 0, 0, 0};
    self->sublimit_log = (nx_log_limit_t){"dropped subscribers", NX_ZAP_LOG_PER_SECOND, 0, 0, 0};
    self->start_us = nx_now_us();
    self->start_mono = nx_mono_us();
    if (nx_ops_init(err_buf, err_size))
        goto fail;
    self->next_tick = self->start_mono + S_TICK_US;

    /*  CURVE first: a bad certificate stops the start before the store
        is opened (an open store that is not stopped cleanly makes the
        next start skip a block of seqs).                                   */
    if (self->cfg.curve_cert && *self->cfg.curve_cert) {
        self->curve =
            nx_curve_new(self->cfg.curve_cert, self->cfg.curve_clients, err_buf, err_size);
        if (!self->curve)
            goto fail;
        self->curve_keys = strcmp(self->cfg.curve_clients, "*") != 0;
    }

    nx_store_config_t scfg = {
        .path = self->cfg.data_dir,
        .sync = self->cfg.sync == NX_SYNC_FULL,
        .map_size = self->cfg.map_size,
        .map_max = self->cfg.map_max < self->cfg.map_size ? self->cfg.map_size : self->cfg.map_max,
        .retain_events = self->cfg.retain_events,
        .retain_bytes = self->cfg.retain_bytes,
        .retain_age_us = self->cfg.retain_age * 1000,
        .trim_batch = self->cfg.trim_batch,
    };
    nexus_err_t err = NEXUS_OK;
    if (nx_ha_install(&self->cfg, err_buf, err_size))
        goto fail;
    self->store = nx_store_new(&scfg, &err, err_buf, err_size);
    if (!self->store || !(self->ha = nx_ha_new(self, err_buf, err_size)))
        goto fail;
    /*  A log the store cannot take for want of disk space: read-only
        until space returns (nx_readonly.h).                               */
    if (s_open_log(self, err_buf, err_size) && nx_readonly_enter(self, err_buf, err_size))
        goto fail;
    if (!self->readonly) {
        nx_disk_init(&self->disk, self->cfg.data_dir, self->cfg.disk_reserve,
                     nx_wal_segment_size(self->wal), self->cfg.batch_bytes + S_TURN_REQUEST_BYTES);
        /*  A disk smaller than what the broker keeps free refuses every
            write from the first: said now, not at the first refusal.     */
        uint64_t free_now = nx_disk_free(self->cfg.data_dir);
        if (free_now < nx_disk_need(&self->disk, 0)) {
            char parts[300];
            nx_disk_explain(&self->disk, 0, parts, sizeof parts);
            nx_warn("data disk has %" PRIu64 " bytes free on %s, less than the %" PRIu64
                    " the broker keeps free (%s): writes will be refused (store_full) until "
                    "space is freed; lower those settings for a small disk",
                    free_now, self->cfg.data_dir, nx_disk_need(&self->disk, 0), parts);
        }
    }
    self->last_seq = nx_store_last_seq(self->store);
    self->last_ts = nx_store_last_ts(self->store);
    uint64_t seq_floor = s_meta_u64(self, S_META_SEQ_FLOOR);
    if (seq_floor > self->last_seq)
        self->last_seq = seq_floor;
    if (!self->readonly && nx_coord_start(self, err_buf, err_size))
        goto fail;
    uint64_t fence_floor = s_meta_u64(self, S_META_FENCE_FLOOR);
    if (!self->readonly && fence_floor > nx_claims_fence(self))
        nx_claims_fence_floor(self, fence_floor);
    /*  Events go out before the log's flush when nobody waits for them, so
        seqs are reserved durably in blocks. A start whose reservation is
        above the last stored seq follows an unclean stop. When the same
        boot wrote the log and it ends cleanly, the page cache the log was
        written to survived, so every event that went out is back in the
        store: seqs continue without a gap. After a reboot, or when the log
        ended in a torn write, seqs that may have been seen are skipped, so
        none is handed out again for another event.                         */
    uint64_t r = s_meta_u64(self, S_META_SEQ_RESERVED);
    char *mark = NULL;
    bool flush_failed = asprintf(&mark, "%s/%s", self->cfg.data_dir, S_FLUSH_FAILED) >= 0 &&
                        access(mark, F_OK) == 0;
    free(mark);
    /*  (A standby's reservation is its primary's: a promotion skips it.) */
    if (r > self->last_seq && nx_ha_starts_primary(self->ha)) {
        bool same = s_same_boot(self);
        bool lost = self->recovery.log_missing;
        if (!same || self->recovery.torn || flush_failed || lost) {
            nx_warn("unclean stop: seqs %" PRIu64 "..%" PRIu64
                    " may have been seen and are skipped (%s)",
                    self->last_seq + 1, r,
                    !same  ? "the log was written before a reboot or by an earlier version"
                    : lost ? "the store's write-ahead log is not there (a restored copy of "
                             "data.mdb?): the run that wrote it may have gone further"
                    : flush_failed
                        ? "the last run could not write or flush its log: pages it wrote may "
                          "be gone"
                    : self->recovery.damaged_frames
                        ? "the log is damaged, as said above: frames past the damage were left out"
                        : "the log ended in a torn write");
            self->last_seq = r;
            /*  Under sync=none a grant goes out before its flush: the
                block reserved for tokens is skipped as well.              */
            uint64_t block = s_meta_u64(self, S_META_FENCE_BLOCK);
            if (!self->readonly && block > nx_claims_fence(self)) {
                nx_warn("unclean stop: fencing tokens up to %" PRIu64 " are skipped", block);
                nx_claims_fence_floor(self, block);
            }
        } else
            nx_info("unclean stop on this boot: the log held everything written; seqs continue "
                    "at %" PRIu64,
                    self->last_seq + 1);
    }
    /*  Earlier versions reserved fencing tokens too; a token reserved by
        one is still never handed out again. (Tokens now reach no one
        before the log's flush: no reservation is needed.)                  */
    uint64_t f = s_meta_u64(self, S_META_FENCE_RESERVED);
    if (!self->readonly && f > nx_claims_fence(self)) {
        nx_warn("unclean stop: fencing tokens up to %" PRIu64 " are skipped", f);
        nx_claims_fence_floor(self, f);
    }
    self->seq_reserved = self->last_seq;
    /*  make_room keeps room for a batch, but never asks for more than an
        eighth of map_max (a small map would look full when empty).       */
    uint64_t room = self->cfg.batch_bytes;
    if (room > self->cfg.map_max / 8)
        room = self->cfg.map_max / 8;
    nx_checkpointer_config_t ccfg = {
        .store = self->store,
        .wal = self->wal,
        .wal_dir = self->wal_dir,
        .interval_us = self->cfg.checkpoint_interval * 1000,
        /*  Small checkpoints keep the store close behind the log: a
            history query after a burst waits for less.                    */
        .bytes = nx_wal_segment_size(self->wal) / 2 < (4u << 20)
                     ? nx_wal_segment_size(self->wal) / 2
                     : (4u << 20),
        .room = room,
        .trim_batch = self->cfg.trim_batch,
    };
    /*  A checkpoint that finds the map full needs four times its log
        (copy-on-write) free in a map kept a quarter empty: a smaller
        map_max refuses writes now and then even where trimming events
        would make room.                                                  */
    if ((ccfg.bytes + self->cfg.max_payload + self->cfg.max_request) * 4 + room >
        self->cfg.map_max / 4 * 3)
        nx_warn("map_max %" PRIu64 " is small for checkpoints of %" PRIu64
                " bytes of log: writes may be refused (store_full) while events could still be "
                "trimmed; raise map_max or lower wal_segment and max_request",
                self->cfg.map_max, ccfg.bytes);
    self->ckpt = self->readonly
                     ? NULL
                     : nx_checkpointer_new(&ccfg, self->recovery.start, self->recovery.end_crc);
    if (!self->ckpt && !self->readonly) {
        snprintf(err_buf, err_size, "cannot start the checkpointer thread");
        goto fail;
    }
    nx_reader_args_t rargs = {
        self->store,
        {self->cfg.history_limit, self->cfg.history_scan, self->cfg.history_bytes},
        &self->count.reader_errors,
        self->auth};
    self->reader = zactor_new(nx_reader_actor, &rargs);
    if (!self->reader) {
        snprintf(err_buf, err_size, "cannot start the reader thread");
        goto fail;
    }
    zsock_set_sndtimeo(zactor_sock(self->reader), 0);

    self->events_cap = self->cfg.batch_max + 4 * self->cfg.requests_per_turn;
    self->events = calloc(self->events_cap, sizeof *self->events);
    /*  One more slot than a turn reads: a parked query runs in it.        */
    self->replies = calloc(self->cfg.requests_per_turn + 1, sizeof *self->replies);
    self->subscriptions = zhashx_new();
    if (!self->events || !self->replies || !self->subscriptions) {
        snprintf(err_buf, err_size, "out of memory");
        goto fail;
    }
    nx_scratch_init(&self->scratch, S_SCRATCH_KEEP);
    for (size_t i = 0; i <= self->cfg.requests_per_turn; i++) {
        msgpack_sbuffer_init(&self->replies[i].reply);
        msgpack_sbuffer_init(&self->replies[i].id);
        msgpack_zone_init(&self->replies[i].zone, 2048);
    }

    int64_t max_in = (int64_t)(self->cfg.max_payload + 64 * 1024) * S_MAXMSG_FACTOR;
    int64_t max_ctl = (int64_t)self->cfg.max_request * S_MAXMSG_FACTOR;

    self->xsub = zsock_new(ZMQ_XSUB);
    self->xpub = zsock_new(ZMQ_XPUB);
    self->router = zsock_new(ZMQ_ROUTER);
    if (!self->xsub || !self->xpub || !self->router) {
        snprintf(err_buf, err_size, "cannot create ZeroMQ sockets");
        goto fail;
    }
    /*  Every queue of a connection is bounded in bytes too (nx_hwm.h):
        inbound ones by their largest message, the subscribers' queues by
        a small event's size (and a subscriber that keeps large ones
        waiting is dropped: s_check_queues).                               */
    uint64_t qb = self->cfg.queue_bytes;
    /*  Inbound, by the largest message a client may rightly send: one that
        is too large but within the MAXMSGSIZE (S_MAXMSG_FACTOR times more)
        gets an error (or is dropped), and a queue of them is the price of
        reading them at all.                                               */
    /*  Events in, though, by a small event's size: a mark of
        queue_bytes / max_payload (63 by default) made a publisher's burst
        of small events back up into its own PUB, which drops, and an
        acknowledged publish overtook its unacknowledged predecessors
        (test_sdk_views). Bytes are bounded for events up to 4 KiB; larger
        ones only while the loop keeps reading (docs/testing.md).         */
    uint64_t in_size = self->cfg.max_payload + NX_TOPIC_MAX + NX_SOURCE_MAX;
    int in_hwm =
        nx_hwm_fixed(self->cfg.in_hwm, qb, in_size < NX_HWM_SMALL_MIN ? in_size : NX_HWM_SMALL_MIN);
    int rq_hwm = nx_hwm_fixed(self->cfg.control_hwm, qb, self->cfg.max_request);
    int rp_hwm = nx_hwm_fixed(self->cfg.control_hwm, qb, NX_UNREAD_LARGE);
    zsock_set_rcvhwm(self->xsub, in_hwm);
    zsock_set_maxmsgsize(self->xsub, max_in);
    int out_hwm = nx_hwm_out(self->cfg.out_hwm, qb, &self->out_small);
    self->out_mark = out_hwm;
    zsock_set_sndhwm(self->xpub, out_hwm);
    nx_info("queues per connection (queue_bytes %" PRIu64 "): events out %d messages (of up to "
            "%zu bytes: larger ones only while the subscriber drains); events in %d; requests in "
            "%d; replies %d (those over %u bytes only to clients that read)",
            qb, out_hwm, self->out_small - NX_HWM_MSG_OVERHEAD, in_hwm, rq_hwm, rp_hwm,
            NX_UNREAD_LARGE);
    zsock_set_maxmsgsize(self->xpub, S_XPUB_MAXMSG);
    /*  libzmq applies every subscription it takes from a subscriber's pipe
        before the loop reads it, and takes a pipe-full each time the loop
        touches the socket (every read): with a pipe of one message what a
        connection gets applied ahead of its drop (nx_sublimit) is a few
        times subscriptions_max, where a pipe of 100 let a flood of 100 000
        subscriptions put up to 18 000 of them (110 MB) in the trie before
        the loop read the one over the limit. Two, not one: libzmq 4.3.4
        counts the credential message a PLAIN or CURVE handshake puts first
        in the pipe as written but never as read, so a pipe of one stays
        full for ever. Subscriptions are few and rare; events go the other
        way, unaffected.                                                    */
    zsock_set_rcvhwm(self->xpub, S_XPUB_RCVHWM);
    zsock_set_xpub_nodrop(self->xpub, 1); /* see s_send_event */
    /*  Every subscribe and unsubscribe, not only a prefix's first and last,
        and a leaving subscriber's subscriptions as unsubscribes: so that
        `channels` counts subscribers per prefix.                          */
    int verboser = 1;
    zmq_setsockopt(zsock_resolve(self->xpub), ZMQ_XPUB_VERBOSER, &verboser, sizeof verboser);
    zsock_set_rcvhwm(self->router, rq_hwm);
    zsock_set_sndhwm(self->router, rp_hwm);
    zsock_set_maxmsgsize(self->router, max_ctl);
    zsock_set_rcvtimeo(self->router, 0);
    zsock_set_linger(self->xpub, 0);
    zsock_set_linger(self->router, 0);
    zsock_set_linger(self->xsub, 0);
    /*  A client whose host vanished (a reboot, a cut VPN link) leaves a
        connection TCP may keep for hours: its queues (out_hwm events for
        a subscriber) and its count in state would stay. ZeroMQ pings a
        connection that was silent for a third of peer_timeout and drops it
        when no answer comes within peer_timeout.                          */
    if (self->cfg.peer_timeout) {
        int ivl = (int)(self->cfg.peer_timeout / 3) ? (int)(self->cfg.peer_timeout / 3) : 1;
        zsock_t *socks[] = {self->xsub, self->xpub, self->router};
        for (size_t i = 0; i < 3; i++) {
            zsock_set_heartbeat_ivl(socks[i], ivl);
            zsock_set_heartbeat_timeout(socks[i], (int)self->cfg.peer_timeout);
        }
    }

    /*  Every socket authenticates its clients at the handshake: by CURVE
        key when curve_cert is set, else by token (PLAIN, the token as the
        password) when tokens are set. One ZAP handler answers for all
        three; the domain tells it (and its log) which socket asks.        */
    bool tokens = nx_auth_enabled(self->auth);
    self->ident = self->curve_keys || tokens;
    /*  With tokens the broker decides which subscriptions each connection
        gets (nx_subs.c): ZeroMQ applies none by itself.                   */
    self->perm = tokens;
    if (tokens)
        zsock_set_xpub_manual(self->xpub, 1);
    if (self->curve || tokens) {
        self->zap = nx_zap_new(self->auth, self->curve ? self->cfg.curve_clients : NULL,
                               &self->refused, err_buf, err_size);
        if (!self->zap)
            goto fail;
        zsock_t *socks[] = {self->router, self->xsub, self->xpub};
        const char *domains[] = {"control", "events-in", "events-out"};
        for (size_t i = 0; i < 3; i++) {
            if (self->curve)
                nx_curve_apply(self->curve, socks[i]);
            else
                zsock_set_plain_server(socks[i], 1);
            zsock_set_zap_domain(socks[i], domains[i]);
        }
    }
    if (self->curve)
        nx_info("CURVE on: broker public key %s; clients: %s", nx_curve_public_key(self->curve),
                self->curve_keys ? self->cfg.curve_clients : "any that knows the key");
    else if (tokens)
        nx_info("tokens on every socket: a client presents its token at the handshake (PLAIN); "
                "PLAIN sends it in the clear, so beyond loopback use a VPN or CURVE");

    /*  Without CURVE or tokens nothing authenticates a client, so a
        non-loopback bind is worth a line in the log (bind it to a VPN
        address only).                                                     */
    const char *control_open = tokens || self->curve_keys
                                   ? NULL
                                   : "no tokens are configured, so anyone who can reach it can "
                                     "act on the fabric (set token or tokens_file)";
    const char *events_open =
        self->ident   ? NULL
        : self->curve ? "curve_clients is *: anyone who knows the broker's public key can publish "
                        "(with any source) or subscribe"
                      : "the event plane has no authentication: anyone who can reach it can "
                        "publish or subscribe (set tokens or curve_cert)";
    if (s_bind_all(self->router, self->cfg.control_endpoints, "control", control_open, err_buf,
                   err_size) ||
        s_bind_all(self->xsub, self->cfg.events_in_endpoints, "events-in", events_open, err_buf,
                   err_size) ||
        s_bind_all(self->xpub, self->cfg.events_out_endpoints, "events-out", events_open, err_buf,
                   err_size))
        goto fail;

    /*  The broker keeps every event, so its XSUB subscribes to everything
        and the subscribers' own filters stay on the XPUB side.             */
    uint8_t subscribe_all = 1;
    if (zmq_send(zsock_resolve(self->xsub), &subscribe_all, 1, 0) != 1) {
        snprintf(err_buf, err_size, "cannot subscribe the XSUB socket");
        goto fail;
    }
    self->h_xsub = zsock_resolve(self->xsub);
    self->h_xpub = zsock_resolve(self->xpub);
    self->h_router = zsock_resolve(self->router);
    /*  Written once the endpoints are bound: a start that cannot bind
        (the port is taken) leaves the log and the reservation as they
        were, instead of making the next start skip one more block. A
        standby writes nothing to its log but the primary's frames; a
        read-only broker nothing at all.                                   */
    if (!self->readonly && nx_ha_starts_primary(self->ha) && s_log_start(self)) {
        snprintf(err_buf, err_size, "cannot write the log: %s", strerror(errno));
        goto fail;
    }
    /*  This run's records are flushed: the mark of a failed flush has
        done its work (the skip above is in the log now).                  */
    if (!self->readonly && nx_ha_starts_primary(self->ha)) {
        char *done = NULL;
        if (asprintf(&done, "%s/%s", self->cfg.data_dir, S_FLUSH_FAILED) >= 0 && unlink(done) == 0)
            nx_disk_sync_dir(self->cfg.data_dir);
        free(done);
    }
    if (nx_ha_start(self, err_buf, err_size))
        goto fail;

    char ep[128];
    /*  Handshakes refused before ZAP is asked (a client with no or another
        mechanism) are seen only here; ZAP counts and logs its own. Only
        with security on: without it a client that closes during the
        handshake (a port probe) was refused nothing.                      */
    int handshakes =
        self->zap ? ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL : 0;
    snprintf(ep, sizeof ep, "inproc://nexusd-monitor-xpub-%p", (void *)self);
    /*  Every socket's: accepts that fail (out of descriptors), logged
        once per S_ACCEPT_LOG_US.                                          */
    handshakes |= ZMQ_EVENT_ACCEPT_FAILED;
    if (zmq_socket_monitor(self->h_xpub, ep,
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | handshakes) == 0)
        self->mon_xpub = zsock_new_pair(ep);
    snprintf(ep, sizeof ep, "inproc://nexusd-monitor-xsub-%p", (void *)self);
    if (zmq_socket_monitor(self->h_xsub, ep,
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | handshakes) == 0)
        self->mon_xsub = zsock_new_pair(ep);
    snprintf(ep, sizeof ep, "inproc://nexusd-monitor-router-%p", (void *)self);
    if (zmq_socket_monitor(self->h_router, ep, handshakes) == 0)
        self->mon_router = zsock_new_pair(ep);
    /*  Connections are told apart by the monitor's events: no monitor, no
        per-connection bound (only the length one of S_XPUB_MAXMSG).      */
    if (self->mon_xpub && !(self->sublimit = nx_sublimit_new(self->cfg.subscriptions_max))) {
        snprintf(err_buf, err_size, "out of memory");
        goto fail;
    }

    nx_store_stats_t st;
    nx_store_stats(self->store, &st);
    nx_info("store %s (id %s): %" PRIu64 " events (seq %" PRIu64 "..%" PRIu64 "), %" PRIu64
            " bytes, sync=%s",
            self->cfg.data_dir, nx_store_id(self->store), st.count, st.first_seq, st.last_seq,
            st.bytes, self->cfg.sync == NX_SYNC_FULL ? "full" : "none");
    return self;

fail:
    nx_broker_destroy(&self);
    return NULL;
}

void nx_broker_destroy(nx_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_broker_t *self = *self_p;
    /*  Stop the monitors while our ends of their pipes still exist: libzmq
        sends monitor events blocking, under the lock that stopping takes,
        so an event sent to a pipe with no reader would hang us here.
        Draining first keeps that pipe from being full.                    */
    s_read_monitor(self, self->mon_xpub, &self->count.subscribers, "events-out");
    s_read_monitor(self, self->mon_xsub, &self->count.publishers, "events-in");
    s_read_monitor(self, self->mon_router, NULL, "control");
    if (self->h_xpub && self->mon_xpub)
        zmq_socket_monitor(self->h_xpub, NULL, 0);
    if (self->h_xsub && self->mon_xsub)
        zmq_socket_monitor(self->h_xsub, NULL, 0);
    if (self->h_router && self->mon_router)
        zmq_socket_monitor(self->h_router, NULL, 0);
    zsock_destroy(&self->mon_xpub);
    zsock_destroy(&self->mon_xsub);
    zsock_destroy(&self->mon_router);
    zsock_destroy(&self->xsub);
    zsock_destroy(&self->xpub);
    /*  Replies already handed to ZeroMQ get a moment to leave.            */
    if (self->router)
        zsock_set_linger(self->router, 500);
    zsock_destroy(&self->router);
    /*  After the sockets: no handshake asks it any more.                  */
    nx_zap_destroy(&self->zap);
    nx_curve_destroy(&self->curve);
    nx_scratch_release(&self->scratch);
    if (self->replies) {
        for (size_t i = 0; i <= self->cfg.requests_per_turn; i++) {
            msgpack_sbuffer_destroy(&self->replies[i].reply);
            msgpack_sbuffer_destroy(&self->replies[i].id);
            msgpack_zone_destroy(&self->replies[i].zone);
        }
        free(self->replies);
    }
    if (self->events) {
        for (size_t i = 0; i < self->n_events; i++) {
            zmq_msg_close(&self->events[i].topic);
            zmq_msg_close(&self->events[i].payload);
        }
        free(self->events);
    }
    zhashx_destroy(&self->subscriptions);
    nx_sublimit_destroy(&self->sublimit);
    zactor_destroy(&self->reader);
    for (size_t i = 0; i < self->n_parked; i++) {
        s_env_close(&self->parked[i].env);
        zmq_msg_close(&self->parked[i].body);
    }
    free(self->parked);
    s_held_free(&self->held_replies);
    s_held_free(&self->held_events);
    /*  Before the store: a base copy may be being made of it.             */
    nx_ha_destroy(&self->ha);
    /*  Before the store: it commits what the log has flushed.             */
    nx_checkpointer_destroy(&self->ckpt);
    nx_coord_stop(self);
    nx_store_destroy(&self->store);
    nx_wal_destroy(&self->wal);
    free(self->wal_dir);
    free(self->readonly);
    s_free_config(&self->cfg);
    free(self);
    *self_p = NULL;
}

void nx_broker_stop(nx_broker_t *self)
{
    self->stop = 1;
}

void nx_broker_problem(nx_broker_t *self, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(self->problem, sizeof self->problem, format, args);
    va_end(args);
    self->problem_at = nx_mono_us();
}

/*  ---- Stamping --------------------------------------------------------- */

/*  Events the broker itself emits (work.released for every claim of a
    session that went, ...) must never be dropped, so the slots grow for
    them; the event plane's intake stays bounded by batch_max.              */
static int s_grow_events(nx_broker_t *self)
{
    size_t cap = self->events_cap * 2;
    nx_pending_event_t *grown = realloc(self->events, cap * sizeof *grown);
    if (!grown)
        return -1;
    /*  zmq_msg_t may be moved bitwise: it holds no pointer to itself.      */
    self->events = grown;
    self->events_cap = cap;
    return 0;
}

static size_t s_event_size(nx_pending_event_t *ev);
static void s_event_encode(nx_pending_event_t *ev, uint8_t *p);

/*  Gives ev the next seq and a timestamp that never goes backwards (the
    wall clock may), and appends it to the turn's log records, in the form
    subscribers receive. Events from the event plane are refused while the
    log may not grow (s_check_refuse); the broker's own events never are:
    they tell of a change that is made.                                     */
static nexus_err_t s_stage(nx_broker_t *self, nx_pending_event_t *ev)
{
    if (self->refuse && !self->emitting)
        return NEXUS_ERR_BUSY;
    /*  One clock read per turn (s_turn sets turn_now): events of a batch
        share it, and ts stays non-decreasing either way.                   */
    uint64_t now = self->turn_now ? self->turn_now : nx_now_us();
    ev->ts = now > self->last_ts ? now : self->last_ts;
    ev->seq = self->last_seq + 1;
    uint8_t *p = nx_wal_add(self->wal, NX_WAL_EVENT, s_event_size(ev));
    if (!p)
        return NEXUS_ERR_NOMEM;
    s_event_encode(ev, p);
    self->last_seq = ev->seq;
    self->last_ts = ev->ts;
    return NEXUS_OK;
}

nexus_err_t nx_broker_emit(nx_broker_t *self, const char *topic, size_t topic_len,
                           const char *source, size_t source_len, const void *payload,
                           size_t payload_len, uint64_t max_payload, uint64_t *seq, char *err_msg)
{
    if (!nx_topic_valid(topic, topic_len)) {
        snprintf(err_msg, NX_ERRMSG_MAX,
                 "invalid topic: %s (dot-separated non-empty tokens, "
                 "no spaces or wildcards, at most %d bytes)",
                 nx_topic_why(topic, topic_len, false), NX_TOPIC_MAX);
        return NEXUS_ERR_BAD_TOPIC;
    }
    if (payload_len > max_payload) {
        snprintf(err_msg, NX_ERRMSG_MAX, "payload of %zu bytes is over max_payload (%" PRIu64 ")",
                 payload_len, max_payload);
        return NEXUS_ERR_TOO_LARGE;
    }
    if (source_len > NX_SOURCE_MAX) {
        snprintf(err_msg, NX_ERRMSG_MAX, "source is over %d bytes", NX_SOURCE_MAX);
        return NEXUS_ERR_BAD_REQUEST;
    }
    if (self->n_events >= self->events_cap && s_grow_events(self)) {
        snprintf(err_msg, NX_ERRMSG_MAX, "out of memory for the batch");
        return NEXUS_ERR_NOMEM;
    }
    nx_pending_event_t *ev = &self->events[self->n_events];
    if (zmq_msg_init_size(&ev->topic, topic_len) || zmq_msg_init_size(&ev->payload, payload_len)) {
        snprintf(err_msg, NX_ERRMSG_MAX, "out of memory");
        return NEXUS_ERR_NOMEM;
    }
    memcpy(zmq_msg_data(&ev->topic), topic, topic_len);
    if (payload_len)
        memcpy(zmq_msg_data(&ev->payload), payload, payload_len);
    memcpy(ev->source, source, source_len);
    ev->source_len = (uint8_t)source_len;
    self->emitting = true;
    nexus_err_t rc = s_stage(self, ev);
    self->emitting = false;
    if (rc != NEXUS_OK) {
        zmq_msg_close(&ev->topic);
        zmq_msg_close(&ev->payload);
        snprintf(err_msg, NX_ERRMSG_MAX, "out of memory for the log");
        /*  The change this event tells of cannot be logged whole.         */
        self->batch_failed = true;
        return rc;
    }
    self->n_events++;
    self->batch_payload += payload_len;
    *seq = ev->seq;
    self->count.events_in++;
    return NEXUS_OK;
}

/*  Remembers what a dropped event looked like, for the once-a-second log.  */
static void s_note_drop(nx_broker_t *self, const char *why, zmq_msg_t *topic, size_t size)
{
    size_t tlen = zmq_msg_size(topic);
    if (tlen > 64)
        tlen = 64;
    char shown[65];
    for (size_t i = 0; i < tlen; i++) {
        char c = ((char *)zmq_msg_data(topic))[i];
        shown[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    shown[tlen] = 0;
    snprintf(self->last_drop, sizeof self->last_drop, "%s: topic '%s', %zu payload bytes", why,
             shown, size);
}

/*  Whether the publisher of ev (its name is the source just stamped) may
    publish to its topic. The token behind a name is looked up only when
    the name changes from one event to the next: under load a batch comes
    from few connections, and a string compare is all an event costs.     */
static bool s_may_publish(nx_broker_t *self, nx_pending_event_t *ev)
{
    if (ev->source_len != strlen(self->pub_name) ||
        memcmp(ev->source, self->pub_name, ev->source_len) != 0) {
        memcpy(self->pub_name, ev->source, ev->source_len);
        self->pub_name[ev->source_len] = 0;
        self->pub_known = nx_auth_by_name(self->auth, self->pub_name, &self->pub_handle);
    }
    return self->pub_known &&
           nx_auth_may_publish(self->auth, self->pub_handle, zmq_msg_data(&ev->topic),
                               zmq_msg_size(&ev->topic));
}

/*  Reads one multipart event from XSUB into the next slot. Returns 1 when
    an event was staged, 0 when one was dropped, -1 when nothing is ready.  */
static int s_read_event(nx_broker_t *self)
{
    /*  Events left for a later commit (s_may_wait) share the slots with
        this turn's: at most S_LAZY_EVENTS_MAX + batch_max.                 */
    if (self->n_events >= self->events_cap && s_grow_events(self))
        return -1;
    nx_pending_event_t *ev = &self->events[self->n_events];
    zmq_msg_init(&ev->topic);
    if (zmq_msg_recv(&ev->topic, self->h_xsub, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&ev->topic);
        return -1;
    }
    zmq_msg_init(&ev->payload);
    ev->source_len = 0;
    int frames = 1;
    if (zmq_msg_more(&ev->topic)) {
        zmq_msg_recv(&ev->payload, self->h_xsub, 0);
        frames = 2;
        bool more = zmq_msg_more(&ev->payload);
        while (more) {
            /*  Optional third frame: the source the publisher claims.
                With CURVE the authenticated key takes its place below.   */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, self->h_xsub, 0);
            frames++;
            if (frames == 3 && zmq_msg_size(&extra) <= NX_SOURCE_MAX &&
                nx_utf8_valid(zmq_msg_data(&extra), zmq_msg_size(&extra))) {
                ev->source_len = (uint8_t)zmq_msg_size(&extra);
                memcpy(ev->source, zmq_msg_data(&extra), ev->source_len);
            } else if (frames == 3)
                frames = 99; /* a source over NX_SOURCE_MAX or not UTF-8 */
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
    }
    /*  With tokens or CURVE keys, the source is the identity the
        publisher authenticated with (nx_zap's User-Id: its token's name,
        or its CURVE key in Z85), whatever it claims. With curve_clients
        "*" and no tokens no identity names anyone, so the claimed source
        stays. The lookup costs ~7 % of the loop per event, so only then.  */
    if (self->ident) {
        const char *key = zmq_msg_gets(&ev->topic, "User-Id");
        size_t len = key ? strlen(key) : 0;
        if (len > NX_SOURCE_MAX)
            len = NX_SOURCE_MAX;
        memcpy(ev->source, key ? key : "", len);
        ev->source_len = (uint8_t)len;
    }
    const char *why = NULL;
    char forbidden[NX_SOURCE_MAX + 64];
    uint64_t *counter = NULL;
    if (frames < 2 || frames > 3) {
        why = "malformed (need 2 or 3 frames, source UTF-8 of at most 128 bytes)";
        counter = &self->count.drop_malformed;
    } else if (!nx_topic_valid(zmq_msg_data(&ev->topic), zmq_msg_size(&ev->topic))) {
        why = "invalid topic";
        counter = &self->count.drop_bad_topic;
    } else if (zmq_msg_size(&ev->payload) > self->cfg.max_payload) {
        why = "payload over max_payload";
        counter = &self->count.drop_oversize;
    } else if (self->perm && !s_may_publish(self, ev)) {
        snprintf(forbidden, sizeof forbidden, "not in the pub= of %.*s", (int)ev->source_len,
                 ev->source);
        why = forbidden;
        counter = &self->count.drop_forbidden;
    }
    if (why) {
        (*counter)++;
        s_note_drop(self, why, &ev->topic, zmq_msg_size(&ev->payload));
        zmq_msg_close(&ev->topic);
        zmq_msg_close(&ev->payload);
        return 0;
    }
    if (self->refuse && self->refuse_err == NEXUS_ERR_NOT_PRIMARY) {
        self->count.drop_standby++;
        s_note_drop(self, "this broker is not the primary", &ev->topic, zmq_msg_size(&ev->payload));
        zmq_msg_close(&ev->topic);
        zmq_msg_close(&ev->payload);
        return 0;
    }
    nexus_err_t rc = s_stage(self, ev);
    if (rc != NEXUS_OK && rc != NEXUS_ERR_STORE_FULL) {
        self->count.drop_store++;
        s_note_drop(self, "store error", &ev->topic, zmq_msg_size(&ev->payload));
        zmq_msg_close(&ev->topic);
        zmq_msg_close(&ev->payload);
        return 0;
    }
    self->batch_payload += zmq_msg_size(&ev->payload);
    self->n_events++;
    self->count.events_in++;
    return 1;
}

/*  ---- Control plane ---------------------------------------------------- */

static void s_pack_head(msgpack_packer *pk, nx_pending_reply_t *pr, bool ok, uint32_t fields)
{
    nx_pack_reply_head(pk, pr->id.data, pr->id.size, ok, fields);
}

static void s_reply_error(nx_pending_reply_t *pr, nexus_err_t err, const char *msg)
{
    pr->failed = true;
    msgpack_sbuffer_clear(&pr->reply);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pr->reply, msgpack_sbuffer_write);
    s_pack_head(&pk, pr, false, 2);
    nx_pack_kv_str(&pk, "error", nexus_err_name(err));
    nx_pack_kv_str(&pk, "message", msg && *msg ? msg : nexus_strerror(err));
}

/*  not_primary, naming the primary when this broker knows it.             */
static void s_reply_not_primary(nx_broker_t *self, nx_pending_reply_t *pr, const char *msg)
{
    const char *primary = nx_ha_primary(self);
    pr->failed = true;
    msgpack_sbuffer_clear(&pr->reply);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pr->reply, msgpack_sbuffer_write);
    s_pack_head(&pk, pr, false, primary ? 3 : 2);
    nx_pack_kv_str(&pk, "error", nexus_err_name(NEXUS_ERR_NOT_PRIMARY));
    nx_pack_kv_str(&pk, "message", msg);
    if (primary)
        nx_pack_kv_str(&pk, "primary", primary);
}

/*  Packs the reply: head (id, ok, field count), then the fields that the
    handler packed (on error: error, message, then its extra fields).       */
static void s_pack_reply(nx_pending_reply_t *pr, bool ok, nexus_err_t err, const char *err_msg,
                         uint32_t fields, const char *body, size_t len)
{
    msgpack_sbuffer_clear(&pr->reply);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pr->reply, msgpack_sbuffer_write);
    s_pack_head(&pk, pr, ok, fields + (ok ? 0 : 2));
    if (!ok) {
        pr->failed = true;
        nx_pack_kv_str(&pk, "error", nexus_err_name(err));
        nx_pack_kv_str(&pk, "message", err_msg && *err_msg ? err_msg : nexus_strerror(err));
    }
    msgpack_sbuffer_write(&pr->reply, body, len);
}

/*  FNV-1a over bytes, from S_FNV_BASIS (or a hash to extend).              */
#define S_FNV_BASIS 14695981039346656037ull
static uint64_t s_fnv1a(uint64_t h, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)data[i]) * 1099511628211ull;
    return h;
}

/*  Identifies a request for retries (nx_claims.c): a hash of its fields,
    id included, in any order, leaving out what a retry from another
    connection adds or changes ("secret", "auth").                          */
static uint64_t s_request_hash(nx_broker_t *self, const msgpack_object *req)
{
    uint64_t sum = 0;
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    for (uint32_t i = 0; i < req->via.map.size; i++) {
        const msgpack_object *k = &req->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR &&
            ((k->via.str.size == 6 && memcmp(k->via.str.ptr, "secret", 6) == 0) ||
             (k->via.str.size == 4 && memcmp(k->via.str.ptr, "auth", 4) == 0)))
            continue;
        msgpack_sbuffer_clear(&buf);
        msgpack_pack_object(&pk, *k);
        msgpack_pack_object(&pk, req->via.map.ptr[i].val);
        sum += s_fnv1a(S_FNV_BASIS, buf.data, buf.size);
    }
    nx_scratch_give(&self->scratch, &buf);
    return sum ? sum : 1;
}

int nx_request_fail(nx_request_t *rq, nexus_err_t err, const char *format, ...)
{
    rq->err = err ? err : NEXUS_ERR_INTERNAL;
    va_list args;
    va_start(args, format);
    vsnprintf(rq->err_msg, sizeof rq->err_msg, format, args);
    va_end(args);
    nx_dmap_clear(&rq->reply);
    return -1;
}

/*  Runs the handler of pr->op and packs the reply. The handler packs its
    fields into a scratch buffer first, counted as it goes, because the
    reply map's head (with its length) comes before them.                  */
static void s_run_op(nx_broker_t *self, nx_pending_reply_t *pr)
{
    const nx_op_t *op = pr->op;
    pr->op = NULL;
    msgpack_sbuffer body;
    nx_scratch_take(&self->scratch, &body);
    nx_request_t rq = {
        .peer = pr->env.n ? zmq_msg_data(&pr->env.frames[0]) : NULL,
        .peer_len = pr->env.n ? zmq_msg_size(&pr->env.frames[0]) : 0,
        .auth = pr->auth,
        /*  Only requests with an id can be retries.                       */
        .hash =
            pr->id.size && (op->def->flags & NX_OF_RETRY) ? s_request_hash(self, &pr->request) : 0,
        .fields = &pr->request,
    };
    nx_dmap_init(&rq.reply, &body);
    int rc = op->fn(self, &rq);
    if (rc < 0 && rq.err == NEXUS_OK)
        nx_request_fail(&rq, NEXUS_ERR_INTERNAL, "the handler of %s failed", op->def->name);
    bool ok = rq.err == NEXUS_OK;
    s_pack_reply(pr, ok, rq.err, rq.err_msg, nx_dmap_pairs(&rq.reply), body.data ? body.data : "",
                 body.size);
    nx_scratch_give(&self->scratch, &body);
}

/*  Hands a history request to the reader thread; its reply comes back on
    the actor's pipe and goes out from the loop (s_read_reader). Returns 0
    when handed over (pr's frames are closed), -1 when the reader is behind
    (pr then holds a busy error reply).                                    */
static int s_to_reader(nx_broker_t *self, nx_pending_reply_t *pr)
{
    zmsg_t *msg = zmsg_new();
    /*  First the descriptor the request came from: the reader answers
        busy to a client that leaves its replies unread (nx_unread.h).     */
    int32_t fd = zmq_msg_get(&pr->body, ZMQ_SRCFD);
    zmsg_addmem(msg, &fd, sizeof fd);
    for (int k = 0; k < pr->env.n; k++)
        zmsg_addmem(msg, zmq_msg_data(&pr->env.frames[k]), zmq_msg_size(&pr->env.frames[k]));
    zmsg_addmem(msg, zmq_msg_data(&pr->body), zmq_msg_size(&pr->body));
    if (zmsg_send(&msg, zactor_sock(self->reader)) == -1) {
        /*  The pipe is full (the reader is behind): never block the loop
            on it, the reader may be waiting for us to read.               */
        zmsg_destroy(&msg);
        pr->op = NULL;
        pr->deferred = false;
        s_reply_error(pr, NEXUS_ERR_BUSY, "history reader busy, try again");
        return -1;
    }
    s_env_close(&pr->env);
    zmq_msg_close(&pr->body);
    return 0;
}

/*  history and state read the store, which the checkpointer writes behind
    the log, so when the store is behind they wait (are parked) for a
    commit that covers the log as it was when they came. history must see
    everything written before it arrived (the resume invariant: an event a
    subscriber has seen is in the history it asks for next), so it makes
    its turn flush what is written; state counts what is durable (every
    acknowledged change). Returns true when pr is one of them (handed to
    the reader, or deferred).                                               */
static bool s_store_read(nx_broker_t *self, nx_pending_reply_t *pr)
{
    const nx_op_t *op = pr->op;
    bool history = !op->fn;
    if (!history && strcmp(op->def->name, "state") != 0)
        return false;
    uint64_t need = history ? nx_wal_written(self->wal) : nx_wal_durable(self->wal);
    if (nx_checkpointer_committed(self->ckpt) < need) {
        pr->deferred = true;
        pr->need_lsn = need;
        if (need > self->turn_need)
            self->turn_need = need;
    } else if (history && s_to_reader(self, pr) == 0)
        self->n_replies--;
    return true;
}

/*  Notes the connection a request of this turn came from (its routing
    id): a second request from one connection in a turn means it pipelines
    (s_log_turn then never flushes on the loop). The first NX_TURN_PEERS
    connections of a turn are remembered; a repeat of one of them counts.  */
static void s_note_peer(nx_broker_t *self, zmq_msg_t *id)
{
    if (self->turn_repeat)
        return;
    uint64_t h = s_fnv1a(S_FNV_BASIS, zmq_msg_data(id), zmq_msg_size(id));
    for (size_t i = 0; i < self->n_turn_peers; i++)
        if (self->turn_peers[i] == h) {
            self->turn_repeat = true;
            return;
        }
    if (self->n_turn_peers < NX_TURN_PEERS)
        self->turn_peers[self->n_turn_peers++] = h;
}

/*  Reads one request. Returns 0 when one was taken, -1 when none is ready.*/
static int s_read_request(nx_broker_t *self)
{
    nx_pending_reply_t *pr = &self->replies[self->n_replies];
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, self->h_router, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&frame);
        return -1;
    }
    /*  [identity]([empty])...[body]: every frame but the last routes the
        reply back. More routing frames than we keep: the request is
        refused with a reply to the connection alone (its identity frame),
        since the frames in between cannot all be echoed.                  */
    pr->env.n = 0;
    bool too_many = false;
    while (zmq_msg_more(&frame)) {
        if (pr->env.n < NX_ENVELOPE_MAX) {
            zmq_msg_init(&pr->env.frames[pr->env.n]);
            zmq_msg_move(&pr->env.frames[pr->env.n++], &frame);
        } else
            too_many = true;
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, self->h_router, 0) == -1)
            break;
    }
    self->count.requests++;
    if (pr->env.n == 0) {
        zmq_msg_close(&frame);
        return 0;
    }
    if (too_many) {
        for (int k = 1; k < pr->env.n; k++)
            zmq_msg_close(&pr->env.frames[k]);
        pr->env.n = 1;
    }
    zmq_msg_init(&pr->body);
    zmq_msg_move(&pr->body, &frame);
    zmq_msg_close(&frame);
    self->n_replies++;
    s_note_peer(self, &pr->env.frames[0]);
    pr->op = NULL;
    pr->is_write = false;
    pr->deferred = false;
    pr->failed = false;
    msgpack_sbuffer_clear(&pr->id);
    msgpack_zone_clear(&pr->zone);
    if (too_many) {
        char text[NX_ERRMSG_MAX];
        snprintf(text, sizeof text,
                 "more than %d frames before the request body; send one frame (DEALER) or an "
                 "empty delimiter and the body (REQ)",
                 NX_ENVELOPE_MAX - 1);
        s_reply_error(pr, NEXUS_ERR_BAD_REQUEST, text);
        return 0;
    }

    size_t size = zmq_msg_size(&pr->body);
    if (size > self->cfg.max_request) {
        char text[NX_ERRMSG_MAX];
        snprintf(text, sizeof text, "request of %zu bytes is over max_request (%" PRIu64 ")", size,
                 self->cfg.max_request);
        s_reply_error(pr, NEXUS_ERR_TOO_LARGE, text);
        return 0;
    }
    self->turn_request_bytes += size;
    nx_msgpack_check_t chk = nx_msgpack_check(zmq_msg_data(&pr->body), size, S_MSGPACK_DEPTH);
    if (chk != NX_MSGPACK_OK) {
        s_reply_error(pr, NEXUS_ERR_BAD_MSGPACK,
                      chk == NX_MSGPACK_TRUNCATED  ? "truncated msgpack"
                      : chk == NX_MSGPACK_TRAILING ? "trailing bytes after the request map"
                      : chk == NX_MSGPACK_TOO_DEEP ? "request nested deeper than 32 levels"
                                                   : "not valid msgpack");
        return 0;
    }
    size_t off = 0;
    msgpack_unpack_return ur =
        msgpack_unpack((const char *)zmq_msg_data(&pr->body), size, &off, &pr->zone, &pr->request);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        const char *text = ur == MSGPACK_UNPACK_EXTRA_BYTES ? "trailing bytes after the request map"
                           : ur == MSGPACK_UNPACK_CONTINUE  ? "truncated msgpack"
                           : ur == MSGPACK_UNPACK_NOMEM_ERROR
                               ? "request too deeply nested or too large to decode"
                               : "not valid msgpack";
        s_reply_error(pr, NEXUS_ERR_BAD_MSGPACK, text);
        return 0;
    }
    if (pr->request.type != MSGPACK_OBJECT_MAP) {
        s_reply_error(pr, NEXUS_ERR_BAD_MSGPACK, "request must be a msgpack map");
        return 0;
    }
    const msgpack_object *id = nx_map_get(&pr->request, "id");
    if (id) {
        msgpack_packer ipk;
        msgpack_packer_init(&ipk, &pr->id, msgpack_sbuffer_write);
        msgpack_pack_object(&ipk, *id);
    }
    const char *name = NULL;
    size_t name_len = 0;
    char err_msg[NX_ERRMSG_MAX] = "";
    if (nx_map_str_req(&pr->request, "op", &name, &name_len, err_msg) != NEXUS_OK) {
        s_reply_error(pr, NEXUS_ERR_BAD_REQUEST, err_msg);
        return 0;
    }
    const nx_op_t *op = nx_ops_find(name, name_len);
    if (!op) {
        char text[NX_ERRMSG_MAX];
        int shown = (int)nx_utf8_cut(name, name_len, 64);
        snprintf(text, sizeof text, "unknown op '%.*s'", shown, name);
        for (char *c = text; *c; c++)
            if ((unsigned char)*c < 0x20)
                *c = '?';
        s_reply_error(pr, NEXUS_ERR_UNKNOWN_OP, text);
        return 0;
    }
    /*  ping and health stay open so that monitors need no secret.         */
    pr->auth = NULL;
    if (nx_auth_enabled(self->auth) && !(op->def->flags & NX_OF_OPEN)) {
        /*  "auth", not "token": work ops use "token" for fencing tokens.  */
        const char *token = NULL;
        size_t token_len = 0;
        nx_map_str(&pr->request, "auth", &token, &token_len, NULL);
        if (nx_auth_check(self->auth, token, token_len, &pr->auth) != NEXUS_OK) {
            s_reply_error(pr, NEXUS_ERR_UNAUTHORIZED,
                          token ? "wrong token" : "this fabric requires a token");
            return 0;
        }
    }
    /*  Every field the table knows is checked here, once for every op,
        before anything runs: a bad request changes nothing.               */
    nexus_err_t bad = nx_optab_check(op->def, &pr->request, err_msg);
    if (bad) {
        s_reply_error(pr, bad, err_msg);
        return 0;
    }
    /*  A standby (or a fenced primary) serves what its store holds: the
        rest is the primary's.                                              */
    if (!nx_ha_serves(self, op)) {
        nexus_err_t e = NEXUS_ERR_NOT_PRIMARY;
        const char *why = nx_ha_refusal(self, &e);
        s_reply_not_primary(self, pr, why ? why : "this broker is not the primary");
        return 0;
    }
    pr->op = op;
    if (s_store_read(self, pr))
        return 0;
    if (op->def->flags & NX_OF_WRITE) {
        if (self->refuse) {
            pr->op = NULL;
            if (self->refuse_err == NEXUS_ERR_NOT_PRIMARY)
                s_reply_not_primary(self, pr, self->refuse);
            else
                s_reply_error(pr, self->refuse_err, self->refuse);
            return 0;
        }
        pr->is_write = true;
        self->turn_writes++;
        s_run_op(self, pr);
    }
    return 0;
}

/*  Sends the routing frames, then the reply; closes what it did not send. */
static void s_env_send(nx_broker_t *self, nx_envelope_t *env, zmq_msg_t *reply)
{
    int k = 0;
    for (; k < env->n; k++)
        if (zmq_msg_send(&env->frames[k], self->h_router, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1)
            break;
    /*  A client whose queue is full, or gone, loses its reply: ROUTER
        drops it rather than block the loop.                                */
    if (k == env->n)
        zmq_msg_send(reply, self->h_router, ZMQ_DONTWAIT);
    for (; k < env->n; k++)
        zmq_msg_close(&env->frames[k]);
    env->n = 0;
    zmq_msg_close(reply);
}

/*  ---- Held until the log is flushed ------------------------------------- */

static nx_held_t *s_held_push(nx_held_queue_t *q)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        nx_held_t *grown = malloc(cap * sizeof *grown);
        if (!grown)
            return NULL;
        /*  zmq_msg_t may be moved bitwise: it holds no pointer to itself. */
        for (size_t i = 0; i < q->n; i++)
            grown[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = grown;
        q->cap = cap;
        q->head = 0;
    }
    return &q->items[(q->head + q->n++) % q->cap];
}

static nx_held_t *s_held_first(nx_held_queue_t *q)
{
    return q->n ? &q->items[q->head] : NULL;
}

static void s_held_pop(nx_held_queue_t *q)
{
    q->head = (q->head + 1) % q->cap;
    q->n--;
}

/*  Whether so much waits for a flush that a plane is not read: events
    past S_HELD_EVENTS_FACTOR turns (count or bytes), replies past
    S_HELD_REPLIES_MAX or S_HELD_REPLY_BYTES.                              */
static bool s_held_events_full(nx_broker_t *self)
{
    return self->held_events.n > S_HELD_EVENTS_FACTOR * self->cfg.batch_max ||
           self->held_events.bytes > S_HELD_EVENTS_FACTOR * self->cfg.batch_bytes;
}

static bool s_held_replies_full(nx_broker_t *self)
{
    return self->held_replies.n > S_HELD_REPLIES_MAX ||
           self->held_replies.bytes > S_HELD_REPLY_BYTES;
}

static void s_held_free(nx_held_queue_t *q)
{
    for (nx_held_t *h; (h = s_held_first(q)); s_held_pop(q)) {
        s_env_close(&h->env);
        zmq_msg_close(&h->msg);
    }
    free(q->items);
    memset(q, 0, sizeof *q);
}

/*  Holds a reply (env's frames and reply are moved) until gate is durable.
    Out of memory: waits for the flush here instead; a reply that must
    still wait after it (for the sync standby, or behind replies held
    before it) is dropped: the client times out, "outcome unknown", which
    is true, where sending it would overtake the gate or the order.       */
static void s_hold_reply(nx_broker_t *self, nx_envelope_t *env, zmq_msg_t *reply, uint64_t gate)
{
    nx_held_t *h = s_held_push(&self->held_replies);
    if (!h) {
        if (nx_wal_flush(self->wal))
            s_fatal(self, "flush");
        else if (gate <= nx_ha_released(self) && self->held_replies.n == 0)
            s_env_send(self, env, reply);
        else {
            nx_error("out of memory to hold a reply for the standby: dropped (the client times "
                     "out; the change is stored)");
            s_env_close(env);
            zmq_msg_close(reply);
        }
        return;
    }
    h->env.n = env->n;
    for (int k = 0; k < env->n; k++) {
        zmq_msg_init(&h->env.frames[k]);
        zmq_msg_move(&h->env.frames[k], &env->frames[k]);
        zmq_msg_close(&env->frames[k]);
    }
    env->n = 0;
    zmq_msg_init(&h->msg);
    zmq_msg_move(&h->msg, reply);
    zmq_msg_close(reply);
    h->gate = gate;
    self->held_replies.bytes += zmq_msg_size(&h->msg);
}

/*  Turns pr's reply into busy when the client on fd leaves what it was
    sent unread.                                                           */
static void s_unread_check(nx_pending_reply_t *pr, int fd)
{
    if (!nx_unread_behind(fd))
        return;
    char text[NX_ERRMSG_MAX];
    snprintf(text, sizeof text,
             "this connection has left %zu bytes of earlier replies unread: read them, then ask "
             "again",
             nx_unread_bytes(fd));
    s_reply_error(pr, NEXUS_ERR_BUSY, text);
}

static void s_send_reply(nx_broker_t *self, nx_pending_reply_t *pr)
{
    /*  A standby's acknowledgements get no reply.                         */
    bool quiet = pr->op && (pr->op->def->flags & NX_OF_QUIET);
    if (pr->op)
        s_run_op(self, pr);
    /*  A large answer to a read goes only to a client that reads what it
        was sent (nx_unread.h); a write's reply always goes: it says what
        was done.                                                          */
    if (!pr->is_write && pr->reply.size > NX_UNREAD_LARGE)
        s_unread_check(pr, zmq_msg_get(&pr->body, ZMQ_SRCFD));
    if (pr->failed)
        self->count.request_errors++;
    zmq_msg_close(&pr->body);
    if (quiet && !pr->failed) {
        s_env_close(&pr->env);
        return;
    }
    zmq_msg_t reply;
    if (zmq_msg_init_size(&reply, pr->reply.size)) {
        s_env_close(&pr->env);
        return;
    }
    memcpy(zmq_msg_data(&reply), pr->reply.data, pr->reply.size);
    /*  "Done" means durable: a reply never runs ahead of the flush of the
        changes it (or any read of this turn) may have seen.               */
    if (self->kv_gate > nx_ha_released(self) || self->held_replies.n)
        s_hold_reply(self, &pr->env, &reply, self->kv_gate);
    else
        s_env_send(self, &pr->env, &reply);
}

/*  Forwards the reader thread's replies to their clients.                  */
static void s_read_reader(nx_broker_t *self)
{
    zsock_t *pipe = zactor_sock(self->reader);
    for (int i = 0; i < 10000 && (zsock_events(pipe) & ZMQ_POLLIN); i++) {
        zmsg_t *m = zmsg_recv(pipe);
        if (!m)
            return;
        zframe_t *fd = zmsg_pop(m); /* see s_to_reader */
        zframe_destroy(&fd);
        if (zmsg_send(&m, self->router) == -1)
            zmsg_destroy(&m);
    }
}

/*  ---- The turn --------------------------------------------------------- */

/*  The event's frame for subscribers (and the forward log): its size, and
    the frame written into p.                                              */
static size_t s_event_size(nx_pending_event_t *ev)
{
    return nx_event_msg_size(zmq_msg_size(&ev->topic), ev->source_len, zmq_msg_size(&ev->payload));
}

static void s_event_encode(nx_pending_event_t *ev, uint8_t *p)
{
    nx_event_msg_encode(p, zmq_msg_data(&ev->topic), zmq_msg_size(&ev->topic), ev->seq, ev->ts,
                        ev->source, ev->source_len, zmq_msg_data(&ev->payload),
                        zmq_msg_size(&ev->payload));
}

/*  A subscriber's queue holds out_hwm events whatever their size, so
    large ones could fill it far beyond queue_bytes (nx_hwm.h). While they
    go out the subscribers' connections are looked at: one whose kernel
    send buffer stayed at least a quarter full while a whole queue_bytes of
    large events went out (it does not drain what it is sent, and libzmq's
    queue grows behind it) is dropped. libnexus reconnects and resumes
    from the history.                                                      */
static void s_check_queues(nx_broker_t *self)
{
    if (!self->sublimit || self->large_bytes == self->queues_bytes)
        return;
    uint64_t now = nx_mono_us();
    if (now - self->queues_at < S_QUEUE_CHECK_US &&
        self->large_bytes - self->queues_bytes < self->cfg.queue_bytes / 4)
        return;
    self->queues_at = now;
    self->queues_bytes = self->large_bytes;
    /*  Connections that came and went first (a descriptor may be reused). */
    s_read_monitor(self, self->mon_xpub, &self->count.subscribers, "events-out");
    size_t n = nx_sublimit_queues(self->sublimit, self->large_bytes, self->cfg.queue_bytes);
    if (n) {
        self->count.sub_dropped += n;
        nx_log_limited(&self->sublimit_log, NX_LOG_WARN,
                       "dropped %zu subscriber(s) on events-out: the connection did not drain "
                       "while queue_bytes (%" PRIu64 ") of events over %zu bytes went out "
                       "(its queue counts them as one each); libnexus reconnects and resumes "
                       "from the history",
                       n, self->cfg.queue_bytes, self->out_small - NX_HWM_MSG_OVERHEAD);
    }
}

/*  The XPUB runs with ZMQ_XPUB_NODROP, so a send fails with EAGAIN when
    a matching subscriber's queue (out_hwm) is full, where libzmq would
    drop for it silently: that is how the broker learns of an overflow.
    It then sends this one event lossy, so the subscribers with room still
    get it; libzmq sets the full queue aside until its reader has drained
    it to half, and drops for it meanwhile without a word, so what is
    counted is overflows (gaps in that subscriber's stream), not events.
    The broker never waits for a subscriber.                               */
static void s_send_event(nx_broker_t *self, zmq_msg_t *out)
{
    int rc = zmq_msg_send(out, self->h_xpub, ZMQ_DONTWAIT);
    if (rc == -1 && errno == EAGAIN) {
        int nodrop = 0;
        zmq_setsockopt(self->h_xpub, ZMQ_XPUB_NODROP, &nodrop, sizeof nodrop);
        rc = zmq_msg_send(out, self->h_xpub, ZMQ_DONTWAIT);
        nodrop = 1;
        zmq_setsockopt(self->h_xpub, ZMQ_XPUB_NODROP, &nodrop, sizeof nodrop);
        self->count.drop_slow++;
    }
    if (rc == -1)
        self->count.drop_send++;
    else
        self->count.events_out++;
    zmq_msg_close(out);
}

/*  Forwards the turn's events on the XPUB, in seq order: held until gate
    is durable (and behind any event held before them).                   */
static void s_forward(nx_broker_t *self, uint64_t gate)
{
    bool hold = gate > nx_ha_released(self) || self->held_events.n;
    for (size_t i = 0; i < self->n_events; i++) {
        nx_pending_event_t *ev = &self->events[i];
        zmq_msg_t out;
        size_t size = s_event_size(ev);
        if (zmq_msg_init_size(&out, size)) {
            self->count.drop_send++;
            continue;
        }
        s_event_encode(ev, zmq_msg_data(&out));
        if (size + NX_HWM_MSG_OVERHEAD > self->out_small)
            self->large_bytes += size;
        nx_held_t *h = hold ? s_held_push(&self->held_events) : NULL;
        if (h) {
            h->env.n = 0;
            zmq_msg_init(&h->msg);
            zmq_msg_move(&h->msg, &out);
            zmq_msg_close(&out);
            h->gate = gate;
            self->held_events.bytes += zmq_msg_size(&h->msg);
        } else {
            /*  Out of memory to hold it: it waits for the flush here, and
                is dropped if it must wait longer (for the sync standby, or
                behind events held before it): subscribers see a gap and
                read it from the history.                                   */
            if (hold && nx_wal_flush(self->wal))
                s_fatal(self, "flush");
            if (!hold || (gate <= nx_ha_released(self) && self->held_events.n == 0))
                s_send_event(self, &out);
            else {
                self->count.drop_send++;
                zmq_msg_close(&out);
            }
        }
    }
    s_check_queues(self);
}

/*  Sends what the flush made durable: held replies and events, in order.  */
static void s_release_held(nx_broker_t *self)
{
    uint64_t durable = nx_ha_released(self);
    nx_held_t *h;
    while ((h = s_held_first(&self->held_events)) && h->gate <= durable) {
        self->held_events.bytes -= zmq_msg_size(&h->msg);
        s_send_event(self, &h->msg);
        s_held_pop(&self->held_events);
    }
    while ((h = s_held_first(&self->held_replies)) && h->gate <= durable) {
        self->held_replies.bytes -= zmq_msg_size(&h->msg);
        s_env_send(self, &h->env, &h->msg);
        s_held_pop(&self->held_replies);
    }
}

static void s_close_events(nx_broker_t *self)
{
    for (size_t i = 0; i < self->n_events; i++) {
        zmq_msg_close(&self->events[i].topic);
        zmq_msg_close(&self->events[i].payload);
    }
    self->n_events = 0;
}

/*  Whether this turn takes writes: not while the store is full, nor while
    it is more than wal_max behind the log (the log would grow without
    bound). Refused writes get an error, refused events are dropped and
    counted; nothing that was accepted is ever dropped.                    */
/*  Whether the data disk has less free space than the broker may still
    have to write (nx_disk.h); says so in the log when that changes.       */
static bool s_disk_full(nx_broker_t *self, uint64_t written, uint64_t lag)
{
    bool changed = false;
    bool full = nx_disk_full(&self->disk, nx_mono_us(), written, lag, &changed);
    if (full) {
        char parts[300];
        nx_disk_explain(&self->disk, lag, parts, sizeof parts);
        snprintf(self->disk_why, sizeof self->disk_why,
                 "data disk full: %" PRIu64 " bytes free on %s, the broker keeps %" PRIu64
                 " free (%s): nothing was written; free space on that disk, or lower those "
                 "settings",
                 self->disk.free, self->cfg.data_dir, self->disk.need, parts);
        nx_broker_problem(self, "%s", self->disk_why);
    }
    if (changed && full)
        nx_error("%s; writes are refused (store_full) and events dropped until then",
                 self->disk_why);
    else if (changed)
        nx_warn("data disk has room again (%" PRIu64 " bytes free on %s): writes resume",
                self->disk.free, self->cfg.data_dir);
    return full;
}

static void s_check_refuse(nx_broker_t *self)
{
    self->refuse = NULL;
    char problem[256];
    if (nx_checkpointer_problem(self->ckpt, problem, sizeof problem))
        nx_broker_problem(self, "%s", problem);
    self->refuse = nx_ha_refusal(self, &self->refuse_err);
    if (self->refuse)
        return;
    if (nx_checkpointer_full(self->ckpt)) {
        self->refuse = "the store is full (map_max reached, and trimming events does not make "
                       "room): nothing was written";
        self->refuse_err = NEXUS_ERR_STORE_FULL;
        return;
    }
    uint64_t written = nx_wal_written(self->wal);
    uint64_t behind = written - nx_checkpointer_committed(self->ckpt);
    if (s_disk_full(self, written, behind)) {
        self->refuse = self->disk_why;
        self->refuse_err = NEXUS_ERR_STORE_FULL;
        return;
    }
    if (behind > self->cfg.wal_max) {
        self->refuse = "the store is behind the log by more than wal_max: nothing was "
                       "written, try again";
        self->refuse_err = NEXUS_ERR_BUSY;
    }
}

/*  An I/O error on the log: what was written may not be on disk, and an
    fdatasync that failed cannot be trusted to fail again. The turn is not
    answered and the loop stops; a restart recovers every change that was
    acknowledged from what the log holds.                                   */
static void s_mark_flush_failed(nx_broker_t *self)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", self->cfg.data_dir, S_FLUSH_FAILED) < 0)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0)
        return;
    fsync(fd);
    close(fd);
    nx_disk_sync_dir(self->cfg.data_dir);
}

static void s_fatal(nx_broker_t *self, const char *what)
{
    int saved = errno;
    s_mark_flush_failed(self);
    errno = saved;
    nx_error("cannot %s the write-ahead log: %s; stopping without answering this turn (a "
             "restart recovers every acknowledged change from the log)",
             what, strerror(errno));
    nx_broker_problem(self, "cannot %s the write-ahead log", what);
    self->fatal = true;
    self->stop = 1;
}

/*  A turn that could not log all its changes (out of memory for its
    records): none of it is written, its events are dropped (none went
    out), its write replies become errors, and sessions and claims are
    loaded again from the store once it holds everything flushed before
    the turn, since the turn changed them in memory.                      */
static void s_fail_turn(nx_broker_t *self)
{
    nx_wal_discard(self->wal);
    nx_error("a turn could not be logged (out of memory): %zu events dropped, its changes "
             "undone",
             self->n_events);
    nx_broker_problem(self, "a turn could not be logged (out of memory)");
    self->count.drop_store += self->n_events;
    self->count.events_in -= self->n_events;
    self->last_seq = self->turn_seq;
    self->last_ts = self->turn_ts;
    for (size_t i = 0; i < self->n_replies; i++)
        if (self->replies[i].is_write)
            s_reply_error(&self->replies[i], NEXUS_ERR_NOMEM,
                          "out of memory for the log: nothing was written");
    if (!self->batch_kv)
        return;
    if (nx_wal_flush(self->wal)) {
        s_fatal(self, "flush");
        return;
    }
    nx_checkpointer_wake(self->ckpt);
    /*  Sessions and claims loaded from a store behind the log would lose
        acknowledged grants (an item granted twice, tokens going back):
        the loop stops instead, and a restart replays the log.             */
    if (nx_checkpointer_sync(self->ckpt, nx_wal_durable(self->wal), S_STOP_SYNC_MS)) {
        nx_error("the store did not take the log within %d s after a failed turn: stopping "
                 "(a restart recovers every acknowledged change from the log)",
                 S_STOP_SYNC_MS / 1000);
        nx_broker_problem(self, "the store did not catch up with the log after a failed turn");
        self->fatal = true;
        self->stop = 1;
        return;
    }
    nx_coord_reload(self);
    /*  Deadlines of what was loaded again, some maybe past: asked now.    */
    nx_coord_rearm(self);
}

/*  When the events nobody waits for must be flushed (mono us), 0: none.   */
static uint64_t s_flush_due(nx_broker_t *self)
{
    return self->lazy_since ? self->lazy_since + self->cfg.flush_interval * 1000 : 0;
}

/*  Writes the turn's records (one pwritev) and asks the flusher for one
    fdatasync of them when anyone waits for that, then forwards the turn's
    events. The loop does not wait for the flush: it goes on with the next
    turn, and what waits for the flush is held (s_send_reply, s_forward)
    until it is done (s_flushed): pipelined group commit. Who waits: a write
    reply ("done" means durable), a session or claim change (its events go
    out only once it is durable), a new seq reservation, a history or
    state query that must see it, and events nobody waits for once the
    oldest of them is flush_interval old. A turn of such events alone goes
    out after the write, before the flush: a crash of the process loses
    nothing written (the page cache survives it), and after a power cut
    their seqs are skipped (the reservation). Returns false on an I/O
    error (s_fatal).                                                        */
static bool s_log_turn(nx_broker_t *self, bool reserve)
{
    bool wrote = nx_wal_pending(self->wal) > 0;
    if (wrote) {
        if (nx_wal_write(self->wal)) {
            s_fatal(self, "write");
            return false;
        }
        self->count.batches++;
        nx_ha_shipped(self);
    }
    uint64_t now = nx_mono_us(), written = nx_wal_written(self->wal);
    /*  Before the events go out: a flush done here makes them durable at
        once, and they must still wait for the standby.                    */
    if (reserve)
        nx_ha_reserved(self, written);
    bool unflushed = written > nx_wal_durable(self->wal);
    bool changes = self->turn_writes || self->batch_kv || reserve;
    bool flush = changes || self->cfg.sync != NX_SYNC_FULL || !self->cfg.flush_interval ||
                 (self->lazy_since && now >= s_flush_due(self)) ||
                 self->turn_need > nx_wal_durable(self->wal);
    if (unflushed && flush) {
        /*  When a reply or a query waits for it, nothing else is to be
            read and no client of the turn pipelines, the loop flushes
            itself (no hand-off to a thread on the path of clients that
            each wait for their reply); otherwise the flusher does it while
            the loop reads on (events nobody waits for never stall the
            loop). A pipelining client's next requests are on their way
            even when none is queued yet: flushing on the loop kept them
            unread for the whole flush (pipelined acknowledged publish
            ~130 k/s against ~190-210 k/s).                                */
        bool waited = changes || self->turn_need > nx_wal_durable(self->wal);
        int rc = waited && !self->turn_repeat && !s_more_input(self)
                     ? nx_wal_flush_now(self->wal)
                     : nx_wal_flush_async(self->wal);
        if (rc < 0) {
            s_fatal(self, "flush");
            return false;
        }
        self->lazy_since = 0;
        if (changes)
            self->kv_gate = written;
        if (nx_wal_durable(self->wal) >= written)
            s_wake_checkpointer(self);
    } else if (unflushed && !self->lazy_since)
        self->lazy_since = now;
    s_forward(self, self->batch_kv || reserve ? written : 0);
    return true;
}

/*  Wakes the checkpointer once a good slice of log is flushed: waking it
    for every turn costs two thread switches per turn, and it applies bigger
    slices better. It wakes by itself (S_CKPT_IDLE_US in nx_checkpointer.c)
    and when a query waits for it (nx_checkpointer_request).               */
static void s_wake_checkpointer(nx_broker_t *self)
{
    uint64_t durable = nx_wal_durable(self->wal);
    if (durable - self->ckpt_woken >= NX_CKPT_SLICE_BYTES || self->n_parked) {
        self->ckpt_woken = durable;
        nx_checkpointer_wake(self->ckpt);
    }
}

/*  True when a request is already queued on the control plane.            */
static bool s_more_input(nx_broker_t *self)
{
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt(self->h_router, ZMQ_EVENTS, &events, &size) == 0 && (events & ZMQ_POLLIN);
}

/*  The flusher finished a round: send what it made durable, and let the
    checkpointer apply it.                                                  */
static void s_flushed(nx_broker_t *self)
{
    if (nx_wal_flush_ack(self->wal)) {
        s_fatal(self, "flush");
        return;
    }
    s_release_held(self);
    s_wake_checkpointer(self);
    nx_ha_flushed(self);
}

/*  Keeps a deferred history or state query until the store catches up
    (s_release_parked), or answers busy when too many wait.               */
static void s_park(nx_broker_t *self, nx_pending_reply_t *pr)
{
    if (self->n_parked == S_PARKED_MAX) {
        pr->op = NULL;
        s_reply_error(pr, NEXUS_ERR_BUSY, "too many queries wait for the store; try again");
        s_send_reply(self, pr);
        return;
    }
    if (self->n_parked == self->cap_parked) {
        size_t cap = self->cap_parked ? self->cap_parked * 2 : 16;
        nx_parked_t *grown = realloc(self->parked, cap * sizeof *grown);
        if (!grown) {
            pr->op = NULL;
            s_reply_error(pr, NEXUS_ERR_NOMEM, "out of memory");
            s_send_reply(self, pr);
            return;
        }
        self->parked = grown;
        self->cap_parked = cap;
    }
    nx_parked_t *p = &self->parked[self->n_parked++];
    p->env.n = pr->env.n;
    for (int k = 0; k < pr->env.n; k++) {
        zmq_msg_init(&p->env.frames[k]);
        zmq_msg_move(&p->env.frames[k], &pr->env.frames[k]);
        zmq_msg_close(&pr->env.frames[k]);
    }
    pr->env.n = 0;
    zmq_msg_init(&p->body);
    zmq_msg_move(&p->body, &pr->body);
    zmq_msg_close(&pr->body);
    p->op = pr->op;
    p->auth = pr->auth;
    p->need = pr->need_lsn;
    p->deadline = nx_mono_us() + S_PARKED_WAIT;
    nx_checkpointer_request(self->ckpt, p->need);
}

/*  Runs a parked query in the spare reply slot: history goes to the
    reader, state is answered now; why: answer busy with this instead.    */
static void s_run_parked(nx_broker_t *self, nx_parked_t *p, const char *why)
{
    nx_pending_reply_t *pr = &self->replies[self->cfg.requests_per_turn];
    pr->env = p->env;
    p->env.n = 0;
    zmq_msg_init(&pr->body);
    zmq_msg_move(&pr->body, &p->body);
    zmq_msg_close(&p->body);
    msgpack_sbuffer_clear(&pr->id);
    msgpack_zone_clear(&pr->zone);
    pr->is_write = pr->deferred = pr->failed = false;
    pr->auth = p->auth;
    pr->op = p->op;
    size_t off = 0;
    /*  The bytes were checked and parsed when they came.                  */
    msgpack_unpack((const char *)zmq_msg_data(&pr->body), zmq_msg_size(&pr->body), &off, &pr->zone,
                   &pr->request);
    const msgpack_object *id = nx_map_get(&pr->request, "id");
    if (id) {
        msgpack_packer ipk;
        msgpack_packer_init(&ipk, &pr->id, msgpack_sbuffer_write);
        msgpack_pack_object(&ipk, *id);
    }
    if (why) {
        pr->op = NULL;
        s_reply_error(pr, NEXUS_ERR_BUSY, why);
    } else if (!pr->op->fn && s_to_reader(self, pr) == 0)
        return;
    s_send_reply(self, pr);
}

/*  Answers the parked queries the store has caught up with, and those
    that waited too long (busy).                                            */
static void s_release_parked(nx_broker_t *self, bool stopping)
{
    uint64_t committed = nx_checkpointer_committed(self->ckpt), now = nx_mono_us();
    size_t keep = 0;
    for (size_t i = 0; i < self->n_parked; i++) {
        nx_parked_t *p = &self->parked[i];
        if (p->need <= committed)
            s_run_parked(self, p, NULL);
        else if (stopping || now >= p->deadline)
            s_run_parked(self, p,
                         stopping ? "the broker is stopping; try again"
                                  : "the store is behind the log; try again");
        else
            self->parked[keep++] = *p;
    }
    self->n_parked = keep;
}

/*  How long the loop may be away beyond what it meant before the
    leases and sessions it would expire get a hold (nx_coord_paused).       */
#define S_PAUSE_US 250000

/*  The time since the last poll returned, less what this poll was meant to
    sleep: a turn that ran long, or a poll that overslept because the
    process was stopped or its machine paused. Either way the requests of
    that time wait in the sockets, and expiring first would lose them.
    Measured on both clocks: a suspended machine may stop the monotonic
    one, and deadlines are on the wall clock.                              */
static uint64_t s_away(uint64_t prev, uint64_t slept, uint64_t woke, uint64_t meant)
{
    uint64_t away = woke > slept && woke - slept > meant ? woke - slept - meant : 0;
    if (prev && slept > prev)
        away += slept - prev;
    return away;
}

static void s_check_pause(nx_broker_t *self, uint64_t slept, uint64_t slept_wall, long timeout_ms)
{
    uint64_t woke = nx_mono_us(), woke_wall = nx_now_us();
    uint64_t meant = timeout_ms < 0 ? UINT64_MAX : (uint64_t)timeout_ms * 1000;
    uint64_t away = s_away(self->loop_woke, slept, woke, meant);
    uint64_t away_wall = s_away(self->loop_woke_wall, slept_wall, woke_wall, meant);
    self->loop_woke = woke;
    self->loop_woke_wall = woke_wall;
    if (away_wall > away)
        away = away_wall;
    if (away > S_PAUSE_US)
        nx_coord_paused(self, away);
}

static void s_turn(nx_broker_t *self, bool events_ready, bool requests_ready, bool timers,
                   bool housekeeping)
{
    self->turn_first = 0;
    self->n_events = 0;
    self->n_replies = 0;
    self->batch_payload = 0;
    self->batch_kv = false;
    self->batch_failed = false;
    self->turn_writes = 0;
    self->turn_need = 0;
    self->turn_request_bytes = 0;
    self->n_turn_peers = 0;
    self->turn_repeat = false;
    self->turn_now = nx_now_us();
    self->turn_seq = self->last_seq;
    self->turn_ts = self->last_ts;
    uint64_t reserved = self->seq_reserved;
    s_check_refuse(self);
    /*  Only the primary changes sessions and claims, timers included.     */
    bool lead = !self->refuse || self->refuse_err != NEXUS_ERR_NOT_PRIMARY;
    if (!lead) {
        self->next_coord = UINT64_MAX; /* no deadline of ours: the loop sleeps */
        self->coord_parked = true;
    } else {
        if (self->coord_parked) /* leading again: every deadline is asked */
            nx_coord_rearm(self);
        self->coord_parked = false;
        if (timers || !self->next_coord)
            self->next_coord = nx_coord_tick(self, nx_now_us());
    }
    if (housekeeping && lead)
        nx_coord_housekeeping(self, nx_now_us());

    if (s_held_events_full(self))
        events_ready = false;
    /*  Drained: every request that had come is read (the poll found none,
        or reading stopped at an empty socket, not at a bound).            */
    bool replies_full = s_held_replies_full(self);
    bool drained = !replies_full && !requests_ready;
    if (replies_full)
        requests_ready = false;
    if (events_ready)
        while (self->n_events < self->cfg.batch_max &&
               self->batch_payload < self->cfg.batch_bytes && s_read_event(self) >= 0)
            ;
    if (requests_ready) {
        int r = 0;
        while (self->n_replies < self->cfg.requests_per_turn &&
               self->turn_request_bytes < S_TURN_REQUEST_BYTES && (r = s_read_request(self)) == 0)
            ;
        drained = r != 0;
    }
    if (lead)
        nx_coord_drained(self, drained);
    nx_rate_add(&self->rate_in, nx_mono_us(), self->n_events);
    /*  A new block of seqs goes into this turn, which then flushes before
        its events go out (one record and no extra flush per ~half a
        million events).                                                    */
    bool reserve = false;
    if (lead && !self->batch_failed && self->last_seq + S_SEQ_BLOCK / 2 > self->seq_reserved) {
        if (s_log_reservation(self, self->last_seq + S_SEQ_BLOCK))
            self->batch_failed = true;
        else
            reserve = true;
    }
    if (lead && !self->batch_failed &&
        nx_claims_fence(self) + S_FENCE_BLOCK / 2 > self->fence_block) {
        if (s_log_fence_block(self))
            self->batch_failed = true;
        else
            reserve = true;
    }
#ifdef NX_FAULTS
    /*  Test builds only: a turn fails as out of memory for its records
        would make it, a path no real input reaches on demand.            */
    if (lead && self->batch_kv && self->fault_turns && --self->fault_turns == 0) {
        nx_warn("fault injected (NEXUS_FAULT_TURN): this turn fails as if out of memory");
        self->batch_failed = true;
    }
#endif
    if (self->batch_failed) {
        self->seq_reserved = reserved;
        s_fail_turn(self);
    } else if (!s_log_turn(self, reserve)) {
        /*  Not answered: see s_fatal.                                     */
        s_close_events(self);
        for (size_t i = 0; i < self->n_replies; i++) {
            s_env_close(&self->replies[i].env);
            zmq_msg_close(&self->replies[i].body);
        }
        self->n_replies = 0;
        return;
    }
    s_close_events(self);
    /*  Replies in arrival order, after the flush: read ops run now,
        against the state the flush made durable.                          */
    for (size_t i = 0; i < self->n_replies; i++) {
        nx_pending_reply_t *pr = &self->replies[i];
        if (pr->deferred)
            s_park(self, pr);
        else
            s_send_reply(self, pr);
    }
    self->n_replies = 0;
    nx_ha_after_turn(self);
    s_release_held(self);
    if (self->n_parked)
        s_release_parked(self, false);
}

/*  A subscriber asked for more than nx_sublimit allows: its connection
    goes (libzmq holds what it asked until then).                          */
static void s_drop_subscriber(nx_broker_t *self, int fd, nx_sub_verdict_t why, size_t len)
{
    /*  What the monitor has to say first: whether fd went meanwhile.     */
    s_read_monitor(self, self->mon_xpub, &self->count.subscribers, "events-out");
    if (!nx_sublimit_drop(self->sublimit, fd))
        return;
    self->count.sub_dropped++;
    if (why == NX_SUB_TOO_LONG)
        nx_log_limited(&self->sublimit_log, NX_LOG_WARN,
                       "dropped a subscriber on events-out: a subscription of %zu bytes (a topic "
                       "is at most %d)",
                       len, NX_TOPIC_MAX);
    else
        nx_log_limited(&self->sublimit_log, NX_LOG_WARN,
                       "dropped a subscriber on events-out: more than subscriptions_max (%" PRIu64
                       ") subscriptions",
                       self->cfg.subscriptions_max);
}

/*  XPUB hands us subscribe (1) and unsubscribe (0) messages; we keep the
    set of active prefixes for `state`. They must be read or libzmq queues
    them without bound.                                                     */
static void s_read_subscriptions(nx_broker_t *self)
{
    /*  Connections that came and went first: a descriptor may name a new
        connection by now (nx_sublimit).                                   */
    if (self->sublimit)
        s_read_monitor(self, self->mon_xpub, &self->count.subscribers, "events-out");
    for (int i = 0; i < 10000; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, self->h_xpub, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close(&msg);
            return;
        }
        size_t size = zmq_msg_size(&msg);
        const uint8_t *data = zmq_msg_data(&msg);
        if (size >= 1 && (data[0] == 0 || data[0] == 1)) {
            char key[NX_TOPIC_MAX * 4 + 2];
            size_t n = size - 1 > NX_TOPIC_MAX ? NX_TOPIC_MAX : size - 1;
            /*  Hex keeps arbitrary prefix bytes usable as a hash key.       */
            key[0] = 'p';
            for (size_t k = 0; k < n; k++)
                snprintf(key + 1 + 2 * k, 3, "%02x", data[1 + k]);
            key[1 + 2 * n] = 0;
            uintptr_t refs = (uintptr_t)zhashx_lookup(self->subscriptions, key);
            if (data[0] == 1)
                refs++;
            else if (refs > 0)
                refs--;
            /*  libzmq passes every subscribe of a connection, repeats too,
                but takes back each prefix once when it goes: a peer that
                repeats new prefixes leaves entries behind, so the table is
                bounded (only `state`'s counts depend on it).             */
            if (refs == 1 && data[0] == 1 &&
                zhashx_size(self->subscriptions) >= S_SUBSCRIPTIONS_TRACKED)
                nx_log_limited(&self->sub_log, NX_LOG_WARN,
                               "events-out: %d prefixes tracked already: a new one is not "
                               "counted in state's subscriptions and channels",
                               S_SUBSCRIPTIONS_TRACKED);
            else if (refs)
                zhashx_update(self->subscriptions, key, (void *)refs);
            else
                zhashx_delete(self->subscriptions, key);
            self->count.subscriptions = zhashx_size(self->subscriptions);
            int fd = -1;
            nx_sub_verdict_t v =
                nx_sublimit_check(self->sublimit, &msg, data[0] == 1, size - 1, &fd);
            if (v != NX_SUB_OK)
                s_drop_subscriber(self, fd, v, size - 1);
            else if (self->perm)
                nx_subs_apply(self, &msg, data, size);
        }
        zmq_msg_close(&msg);
    }
}

/*  Hex key of s_read_subscriptions back to bytes; returns the length.    */
static size_t s_unhex(const char *key, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = key + 1; p[0] && p[1] && n < size; p += 2) {
        unsigned v = 0;
        sscanf(p, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

static int s_by_refs(const void *a, const void *b)
{
    uintptr_t x = ((const uintptr_t *)a)[1], y = ((const uintptr_t *)b)[1];
    return x < y ? 1 : x > y ? -1 : 0;
}

void nx_broker_pack_subscriptions(nx_broker_t *self, msgpack_packer *pk)
{
    /*  At most S_CHANNELS_MAX, most subscribed first: the table is bounded
        by what subscribers send, the reply must not be.                  */
    enum { S_CHANNELS_MAX = 1000 };
    size_t n = zhashx_size(self->subscriptions);
    uintptr_t(*rows)[2] = n ? calloc(n, sizeof *rows) : NULL;
    size_t k = 0;
    for (void *refs = zhashx_first(self->subscriptions); refs && rows && k < n;
         refs = zhashx_next(self->subscriptions)) {
        rows[k][0] = (uintptr_t)zhashx_cursor(self->subscriptions);
        rows[k][1] = (uintptr_t)refs;
        k++;
    }
    if (k)
        qsort(rows, k, sizeof *rows, s_by_refs);
    size_t shown = k < S_CHANNELS_MAX ? k : S_CHANNELS_MAX;
    msgpack_pack_array(pk, (uint32_t)shown);
    for (size_t i = 0; i < shown; i++) {
        char prefix[NX_TOPIC_MAX + 1];
        size_t len = s_unhex((const char *)rows[i][0], prefix, sizeof prefix);
        msgpack_pack_map(pk, 2);
        /*  A prefix is raw bytes a subscriber sent; shown as a str only
            when it is UTF-8 (a topic's start always is).                  */
        nx_pack_str(pk, "prefix");
        if (nx_utf8_valid(prefix, len))
            nx_pack_strn(pk, prefix, len);
        else
            msgpack_pack_bin_with_body(pk, prefix, len);
        nx_pack_kv_u64(pk, "subscribers", rows[i][1]);
    }
    free(rows);
}

/*  Why a handshake failed before ZAP was asked, from a monitor event's
    value (libzmq says nothing of the client's address then).             */
static const char *s_handshake_why(uint16_t event, uint32_t value)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        return "the handshake did not complete (the client closed it: a client without a token "
               "or key, or with another mechanism, does)";
    switch (value) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "the client offered no or another security mechanism (this broker wants a "
               "token: PLAIN, or a CURVE key); its address is not known at this stage";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "CURVE: the client's handshake did not decrypt (does it use the broker's public "
               "key?)";
    default:
        return "a protocol error in the handshake";
    }
}

#define S_ACCEPT_LOG_US (10 * 1000000ull)

static void s_read_monitor(nx_broker_t *self, zsock_t *mon, uint64_t *connected, const char *socket)
{
    if (!mon)
        return;
    for (int i = 0; i < 1000; i++) {
        zmsg_t *msg = NULL;
        zsock_set_rcvtimeo(mon, 0);
        msg = zmsg_recv(mon);
        if (!msg)
            return;
        zframe_t *head = zmsg_first(msg);
        if (head && zframe_size(head) >= 6) {
            uint16_t event;
            uint32_t value;
            memcpy(&event, zframe_data(head), 2);
            memcpy(&value, zframe_data(head) + 2, 4);
            if (mon == self->mon_xpub)
                nx_sublimit_conn(self->sublimit, event, (int)value);
            if (event == ZMQ_EVENT_ACCEPTED && connected)
                (*connected)++;
            else if (event == ZMQ_EVENT_DISCONNECTED && connected && *connected > 0)
                (*connected)--;
            else if (event == ZMQ_EVENT_ACCEPT_FAILED) {
                self->accept_failed++;
                snprintf(self->accept_where, sizeof self->accept_where, "%s", socket);
            } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
                       event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
                __atomic_add_fetch(&self->refused.mechanism, 1, __ATOMIC_RELAXED);
                nx_log_limited(&self->refuse_log, NX_LOG_WARN, "refused handshake on %s: %s",
                               socket, s_handshake_why(event, value));
            }
        }
        zmsg_destroy(&msg);
    }
}

/*  Once a second: report drops (at most one line a second, however many). */
static void s_housekeeping(nx_broker_t *self)
{
    nx_log_limit_flush(&self->refuse_log);
    nx_log_limit_flush(&self->sub_log);
    uint64_t now = nx_mono_us();
    if (self->accept_failed != self->accept_logged &&
        (!self->accept_logged_us || now - self->accept_logged_us >= S_ACCEPT_LOG_US)) {
        struct rlimit rl = {0, 0};
        getrlimit(RLIMIT_NOFILE, &rl);
        nx_error("cannot accept connections (last on %s): out of file descriptors (ulimit -n "
                 "%" PRIu64 "); %" PRIu64 " failed accepts since the last line; new clients wait "
                 "in the listen backlog, connected ones are served; raise LimitNOFILE",
                 self->accept_where, (uint64_t)rl.rlim_cur,
                 self->accept_failed - self->accept_logged);
        self->accept_logged = self->accept_failed;
        self->accept_logged_us = now;
    }
    nx_log_limit_flush(&self->sublimit_log);
    nx_counters_t *c = &self->count;
    uint64_t dropped = c->drop_bad_topic + c->drop_oversize + c->drop_malformed + c->drop_store +
                       c->drop_forbidden;
    if (dropped != self->dropped_logged) {
        nx_warn("dropped %" PRIu64 " events in the last second (%" PRIu64 " in all: %" PRIu64
                " invalid topic, %" PRIu64 " oversize, %" PRIu64 " malformed, %" PRIu64
                " store, %" PRIu64 " forbidden); last: %s",
                dropped - self->dropped_logged, dropped, c->drop_bad_topic, c->drop_oversize,
                c->drop_malformed, c->drop_store, c->drop_forbidden, self->last_drop);
        self->dropped_logged = dropped;
    }
    if (c->drop_slow != self->slow_logged) {
        /*  The mark in effect, not out_hwm: queue_bytes lowers it (16 384
            by default). libzmq judges a queue by what its reader last
            reported (once per low-water mark, nx_hwm.h), so under a high
            rate a subscriber a thousand events behind may count as full. */
        nx_warn("slow subscribers: a queue overflowed %" PRIu64
                " times in the last second (%" PRIu64 " in all; a queue holds %d events, "
                "counted as its reader last reported them); each such subscriber misses "
                "events until its reader reports again (libnexus fills the gap from the "
                "history)",
                c->drop_slow - self->slow_logged, c->drop_slow, self->out_mark);
        self->slow_logged = c->drop_slow;
    }
    /*  Retention and make_room run on the checkpointer's thread.         */
}

/*  The checkpointer committed (parked queries may go) or has a problem.   */
static void s_read_checkpointer(nx_broker_t *self)
{
    char problem[256];
    if (nx_checkpointer_drain(self->ckpt, problem, sizeof problem))
        nx_broker_problem(self, "%s", problem);
    if (self->n_parked)
        s_release_parked(self, false);
}

int nx_broker_run(nx_broker_t *self)
{
    /*  The monitors are optional (zmq_socket_monitor may fail): a NULL one
        is not polled.                                                      */
    void *mon_xpub = self->mon_xpub ? zsock_resolve(self->mon_xpub) : NULL;
    void *mon_xsub = self->mon_xsub ? zsock_resolve(self->mon_xsub) : NULL;
    void *mon_router = self->mon_router ? zsock_resolve(self->mon_router) : NULL;
    void *reader = zsock_resolve(zactor_sock(self->reader));
    if (self->readonly)
        return nx_readonly_run(self);
    void *ckpt = zsock_resolve(nx_checkpointer_sock(self->ckpt));
    nx_coord_ready(self);
    nx_info("nexusd %s ready: last seq %" PRIu64, NEXUS_VERSION_STRING, self->last_seq);
    int status = 0;
    /*  Kept between turns: nx_poll remembers which lazy socket was ready.
        Lazy: the sockets the loop only reads from (the events plane's
        XSUB, the monitors), asked only when their descriptor fires. Each
        is asked at the first turn (ready): a pipe nobody has read yet
        brings messages without a signal (the monitors' pipes, connected
        by us, have no other).                                            */
    nx_poll_item_t items[NX_POLL_MAX] = {
        {.socket = self->h_xsub, .fd = -1, .lazy = true, .ready = true},
        {.socket = self->h_router, .fd = -1},
        {.socket = self->h_xpub, .fd = -1, .events = ZMQ_POLLIN},
        {.socket = reader, .fd = -1, .events = ZMQ_POLLIN},
        {.socket = ckpt, .fd = -1},
        /*  -1 under sync=none: poll skips it.                             */
        {.fd = nx_wal_flush_fd(self->wal), .events = ZMQ_POLLIN},
    };
    int n_mon = 6;
    void *mons[] = {mon_xpub, mon_xsub, mon_router};
    for (size_t i = 0; i < sizeof mons / sizeof mons[0]; i++)
        if (mons[i])
            items[n_mon++] = (nx_poll_item_t){
                .socket = mons[i], .fd = -1, .events = ZMQ_POLLIN, .lazy = true, .ready = true};
    while (!self->stop && !zsys_interrupted) {
        /*  While too much waits for a flush, the planes are not read: the
            clients' ZeroMQ queues hold what comes, not our memory.        */
        items[0].events = s_held_events_full(self) ? 0 : ZMQ_POLLIN;
        items[1].events = s_held_replies_full(self) ? 0 : ZMQ_POLLIN;
        items[4].events = self->n_parked ? ZMQ_POLLIN : 0;
        /*  The standby's sockets, read by nx_ha_handle after every turn
            (not lazy: it reads them whether they fired or not).           */
        int n_items = n_mon + nx_ha_poll(self, items + n_mon, NX_POLL_MAX - n_mon);
        uint64_t now = nx_mono_us(), wall = nx_now_us();
        long timeout = now >= self->next_tick ? 0 : (long)((self->next_tick - now) / 1000) + 1;
        if (self->next_coord <= wall)
            timeout = 0;
        else if ((self->next_coord - wall) / 1000 + 1 < (uint64_t)timeout)
            timeout = (long)((self->next_coord - wall) / 1000) + 1;
        /*  Parked queries that wait too long get busy.                    */
        if (self->n_parked && timeout > 100)
            timeout = 100;
        if (timeout > nx_ha_timeout(self))
            timeout = nx_ha_timeout(self);
        /*  Events nobody waits for are flushed at flush_interval even when
            nothing else happens.                                           */
        if (self->lazy_since) {
            uint64_t due = s_flush_due(self);
            long wait = due <= now ? 0 : (long)((due - now) / 1000) + 1;
            if (wait < timeout)
                timeout = wait;
        }
        uint64_t slept = nx_mono_us(), slept_wall = nx_now_us();
        int rc = nx_poll(items, n_items, timeout);
        s_check_pause(self, slept, slept_wall, timeout);
        if (rc == -1) {
            if (zmq_errno() == EINTR)
                continue;
            nx_error("poll failed: %s", zmq_strerror(zmq_errno()));
            status = -1;
            break;
        }
        nx_ha_awake(self);
        if (items[2].revents & ZMQ_POLLIN)
            s_read_subscriptions(self);
        if (items[3].revents & ZMQ_POLLIN)
            s_read_reader(self);
        if (items[4].revents & ZMQ_POLLIN)
            s_read_checkpointer(self);
        if (items[5].revents & ZMQ_POLLIN)
            s_flushed(self);
        for (int i = 6; i < n_mon; i++)
            if (items[i].revents & ZMQ_POLLIN) {
                if (items[i].socket == mon_xpub)
                    s_read_monitor(self, self->mon_xpub, &self->count.subscribers, "events-out");
                else if (items[i].socket == mon_xsub)
                    s_read_monitor(self, self->mon_xsub, &self->count.publishers, "events-in");
                else
                    s_read_monitor(self, self->mon_router, NULL, "control");
            }
        bool ev = items[0].revents & ZMQ_POLLIN, rq = items[1].revents & ZMQ_POLLIN;
        bool timers = nx_now_us() >= self->next_coord;
        bool house = nx_mono_us() >= self->next_tick;
        bool due = self->lazy_since && nx_mono_us() >= s_flush_due(self);
        if (ev || rq || timers || house || due)
            s_turn(self, ev, rq, timers, house);
        if (house) {
            s_housekeeping(self);
            /*  The checkpointer's problems (health), when no query made
                the loop poll its pipe.                                     */
            s_read_checkpointer(self);
            self->next_tick = nx_mono_us() + S_TICK_US;
            /*  Once a tick every lazy socket is asked at the next turn:
                s_read_monitor, called from s_read_subscriptions and
                s_drop_subscriber too, stops at its bound with more to
                come, and nothing would signal the rest.                   */
            for (int i = 0; i < n_mon; i++)
                items[i].ready |= items[i].lazy;
        }
        int ha = nx_ha_handle(self);
        if (ha < 0) {
            s_fatal(self, "write or flush");
            break;
        }
        s_release_held(self);
        if (self->n_parked)
            s_release_parked(self, false);
        if (ha == NX_BROKER_RESTART) {
            status = NX_BROKER_RESTART;
            break;
        }
    }
    /*  What is left: the seq reservation goes back to last_seq (so the
        next start continues without a jump), the log is flushed, the store
        takes all of it, and the queries that waited for that are answered.*/
    nexus_err_t not_primary;
    bool lead = nx_ha_refusal(self, &not_primary) == NULL;
    if (!self->fatal && !lead) {
        /*  A standby or a fenced primary writes nothing of its own.      */
        if (nx_wal_flush(self->wal) == 0)
            nx_checkpointer_wake(self->ckpt);
        s_release_held(self);
        if (nx_checkpointer_sync(self->ckpt, nx_wal_durable(self->wal), S_STOP_SYNC_MS))
            nx_warn("the store has not taken the whole log: the next start replays the rest");
        s_read_checkpointer(self);
    } else if (!self->fatal) {
        if (s_log_reservation(self, self->last_seq)) {
            nx_warn("cannot record the clean stop: the next start skips a block of seqs");
            nx_wal_discard(self->wal);
        } else if (s_log_sync(self))
            s_fatal(self, "write or flush");
        if (!self->fatal)
            s_release_held(self);
        if (nx_checkpointer_sync(self->ckpt, nx_wal_durable(self->wal), S_STOP_SYNC_MS))
            nx_warn("the store has not taken the whole log: the next start replays the rest");
        s_read_checkpointer(self);
        /*  A change of the last second is not lost from the snapshot file.*/
        nx_coord_snapshot(self);
        /*  With etcd the standby takes over at once, not in a lease.     */
        nx_ha_stop(self);
    }
    s_release_parked(self, true);
    if (self->fatal)
        status = -1;
    nx_wal_stats_t ws;
    nx_wal_stats(self->wal, &ws);
    nx_info("stopping: last seq %" PRIu64 ", %" PRIu64 " events in, %" PRIu64 " out, %" PRIu64
            " requests, %" PRIu64 " turns written to the log, %" PRIu64 " flushes",
            self->last_seq, self->count.events_in, self->count.events_out, self->count.requests,
            self->count.batches, ws.flushes);
    return status;
}
