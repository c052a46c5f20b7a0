/*  =========================================================================
    nx_repl_receiver - a standby's copy of the primary's log.
    nx_repl_receiver.h is the contract; docs/protocol.md section 9 has the
    messages.

    Where the copy goes on is the log's own position: the frames of the
    last turn that arrived whole are flushed, a turn cut short (its last
    frame never came: a lost message, a new connection) is forgotten
    (nx_wal_copy_rewind) and asked for again. So the position the standby
    gives the primary is always a turn's end of its durable copy.
    =========================================================================
*/

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_codec.h"
#include "nx_disk.h"
#include "nx_log.h"
#include "nx_repl_receiver.h"

#define S_ACK_US     1000000 /* acknowledge at least this often            */
#define S_RETRY_US   100000  /* a request that found no connection: again  */
#define S_BASE_TMP   "base.tmp"
#define S_BASE_READY "base.mdb"
#define S_DIVERGED   "diverged"

struct _nx_repl_receiver_t {
    nx_repl_receiver_config_t cfg;           /* settings; strings below               */
    char *primary;                           /* endpoint followed, NULL: none         */
    char *name, *store_id, *data_dir, *auth; /* our copies                  */
    zsock_t *sock;                           /* DEALER to the primary                 */
    nx_repl_rx_state_t state;                /* where it is                           */
    uint64_t asked_at;                       /* mono us of the last hello (0: never)  */
    uint64_t heard_at;                       /* mono us the primary last spoke        */
    uint64_t spoke_at;                       /* ... really (not reset by a hello), 0:
                                                never: what state's heard_ms says     */
    uint64_t born_at;                        /* mono us this receiver was made        */
    uint64_t acked_at;                       /* mono us of the last ack               */
    uint64_t acked;                          /* log position last acknowledged        */
    uint64_t next;                           /* where the next frame goes (received)  */
    uint32_t next_crc;                       /* crc of the frame before next          */
    uint64_t primary_written;                /* as the primary last said              */
    uint64_t epoch;                          /* newest epoch seen                     */
    bool sync;                               /* the primary waits for us              */
    uint64_t ack_n;                          /* number of the last ack sent           */
    uint64_t trust_n;                        /* a "sync" counts only when it echoes an
                                                ack numbered this or later (0: any)   */
    uint64_t ran_at;                         /* mono us of the last read              */
    uint64_t req_id;                         /* id of the last request                */
    uint64_t hello_id, base_id;              /* ids of the pending hello / base ask   */
    int base_fd;                             /* base.tmp, -1: none                    */
    uint64_t base_got, base_size;            /* bytes received, expected              */
    char why[200];                           /* the last problem                      */
    bool fatal;                              /* the log failed                        */
};

static void s_problem(nx_repl_receiver_t *self, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_problem(nx_repl_receiver_t *self, const char *fmt, ...)
{
    char text[sizeof self->why];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    /*  Said once, not once per retry.                                     */
    if (strcmp(text, self->why) != 0)
        nx_warn("replication: %s", text);
    memcpy(self->why, text, sizeof text);
}

static char *s_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

nx_repl_receiver_t *nx_repl_receiver_new(const nx_repl_receiver_config_t *cfg)
{
    nx_repl_receiver_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->primary = s_dup(cfg->primary && *cfg->primary ? cfg->primary : NULL);
    self->name = s_dup(cfg->name);
    self->store_id = s_dup(cfg->store_id);
    self->data_dir = s_dup(cfg->data_dir);
    self->auth = s_dup(cfg->auth && *cfg->auth ? cfg->auth : NULL);
    self->base_fd = -1;
    self->born_at = nx_mono_us();
    self->epoch = cfg->epoch;
    self->next = self->acked = nx_wal_written(cfg->wal);
    self->next_crc = nx_wal_turn_crc(cfg->wal);
    if (!self->name || !self->store_id || !self->data_dir) {
        nx_repl_receiver_destroy(&self);
        return NULL;
    }
    if (!self->cfg.timeout_us)
        self->cfg.timeout_us = 5000000;
    return self;
}

static void s_base_drop(nx_repl_receiver_t *self)
{
    if (self->base_fd >= 0) {
        close(self->base_fd);
        self->base_fd = -1;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", self->data_dir, S_BASE_TMP);
        unlink(path);
    }
    self->base_got = self->base_size = 0;
}

void nx_repl_receiver_destroy(nx_repl_receiver_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_repl_receiver_t *self = *self_p;
    zsock_destroy(&self->sock);
    if (self->state != NX_REPL_RX_DONE)
        s_base_drop(self);
    free(self->primary);
    free(self->name);
    free(self->store_id);
    free(self->data_dir);
    free(self->auth);
    free(self);
    *self_p = NULL;
}

void *nx_repl_receiver_socket(nx_repl_receiver_t *self)
{
    return self->sock ? zsock_resolve(self->sock) : NULL;
}

uint64_t nx_repl_receiver_epoch(nx_repl_receiver_t *self)
{
    return self->epoch;
}

/*  ---- Requests ------------------------------------------------------------ */

/*  Packs the head of a request: op, id (0: none), name, auth; fields more
    to come.                                                               */
static void s_request(nx_repl_receiver_t *self, msgpack_packer *pk, const char *op, uint64_t id,
                      uint32_t more)
{
    msgpack_pack_map(pk, 2 + (id ? 1 : 0) + (self->auth ? 1 : 0) + more);
    nx_pack_kv_str(pk, "op", op);
    if (id)
        nx_pack_kv_u64(pk, "id", id);
    nx_pack_kv_str(pk, "name", self->name);
    if (self->auth)
        nx_pack_kv_str(pk, "auth", self->auth);
}

/*  Sends a request now, or not at all (0, or -1 while no connection to the
    primary is complete: nothing waits in a pipe to go out later).        */
static int s_send(nx_repl_receiver_t *self, msgpack_sbuffer *buf)
{
    if (!self->sock)
        return -1;
    return zmq_send(zsock_resolve(self->sock), buf->data, buf->size, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

static void s_ack(nx_repl_receiver_t *self, uint64_t now)
{
    if (!self->sock)
        return;
    uint64_t durable = nx_wal_durable(self->cfg.wal);
    if (durable > self->next)
        durable = self->next;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    s_request(self, &pk, "replicate.ack", 0, 4);
    nx_pack_kv_u64(&pk, "lsn", durable);
    nx_pack_kv_u64(&pk, "received", self->next);
    nx_pack_kv_u64(&pk, "base", self->base_got);
    nx_pack_kv_u64(&pk, "n", ++self->ack_n);
    s_send(self, &buf);
    msgpack_sbuffer_destroy(&buf);
    self->acked = durable;
    self->acked_at = now;
}

/*  The socket to the primary. ZeroMQ's heartbeat finds a connection that
    died without a word (a cut link) and reconnects. IMMEDIATE: a request is
    taken only by a complete connection, so none piles up while there is
    none (a `replicate` that could not go is tried again shortly).        */
static int s_connect(nx_repl_receiver_t *self)
{
    zsock_destroy(&self->sock);
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->sock) {
        s_problem(self, "cannot create a socket");
        return -1;
    }
    int ivl = (int)(self->cfg.timeout_us / 3000);
    zsock_set_linger(self->sock, 0);
    zsock_set_rcvhwm(self->sock, 0); /* the primary's window bounds it   */
    zsock_set_sndhwm(self->sock, 1000);
    zsock_set_immediate(self->sock, 1);
    zsock_set_heartbeat_ivl(self->sock, ivl > 0 ? ivl : 1);
    zsock_set_heartbeat_timeout(self->sock, (int)(self->cfg.timeout_us / 1000));
    if (self->cfg.secure)
        self->cfg.secure(self->sock, self->cfg.secure_arg);
    if (zsock_connect(self->sock, "%s", self->primary) != 0) {
        s_problem(self, "cannot connect to %s", self->primary);
        zsock_destroy(&self->sock);
        return -1;
    }
    return 0;
}

/*  `replicate` with where the copy ends, on the socket there is (what it
    still holds from the stream before is read first), or on a new one.  */
static void s_hello(nx_repl_receiver_t *self, uint64_t now, bool fresh)
{
    s_base_drop(self);
    self->asked_at = now;
    self->heard_at = now;
    if (!self->primary) {
        zsock_destroy(&self->sock);
        self->state = NX_REPL_RX_IDLE;
        return;
    }
    if ((fresh || !self->sock) && s_connect(self))
        return;
    /*  A turn cut short is asked for again.                               */
    nx_wal_copy_rewind(self->cfg.wal);
    self->next = nx_wal_written(self->cfg.wal);
    self->next_crc = nx_wal_turn_crc(self->cfg.wal);
    self->hello_id = ++self->req_id;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    s_request(self, &pk, "replicate", self->hello_id, 6);
    nx_pack_kv_str(&pk, "store_id", self->store_id);
    nx_pack_kv_u64(&pk, "lsn", self->next);
    nx_pack_kv_u64(&pk, "crc", self->next_crc);
    nx_pack_kv_u64(&pk, "epoch", self->epoch);
    nx_pack_kv_u64(&pk, "segment_size", nx_wal_segment_size(self->cfg.wal));
    uint64_t durable = nx_wal_durable(self->cfg.wal);
    nx_pack_kv_u64(&pk, "durable", durable < self->next ? durable : self->next);
    if (s_send(self, &buf)) {
        /*  Not connected yet: again in S_RETRY_US, not in a timeout.     */
        self->asked_at = now - self->cfg.timeout_us + S_RETRY_US;
    }
    msgpack_sbuffer_destroy(&buf);
    self->state = NX_REPL_RX_HELLO;
}

static void s_ask_base(nx_repl_receiver_t *self)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", self->data_dir, S_BASE_TMP);
    self->base_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (self->base_fd < 0) {
        s_problem(self, "cannot create %s: %s", path, strerror(errno));
        return;
    }
    self->base_got = self->base_size = 0;
    self->base_id = ++self->req_id;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    s_request(self, &pk, "replicate.base", self->base_id, 0);
    s_send(self, &buf);
    msgpack_sbuffer_destroy(&buf);
    self->state = NX_REPL_RX_BASE;
}

/*  ---- Input ------------------------------------------------------------------ */

static nx_repl_rx_t s_reply(nx_repl_receiver_t *self, const msgpack_object *m)
{
    uint64_t id = 0;
    nx_map_u64(m, "id", &id, NULL);
    bool ok = false;
    nx_map_bool(m, "ok", &ok, NULL);
    const char *text = NULL, *code = NULL;
    size_t text_len = 0, code_len = 0;
    nx_map_str(m, "message", &text, &text_len, NULL);
    nx_map_str(m, "error", &code, &code_len, NULL);
    if (id == self->hello_id && self->state == NX_REPL_RX_HELLO) {
        if (!ok) {
            s_problem(self, "%s refuses to stream its log: %.*s", self->primary, (int)text_len,
                      text ? text : "");
            /*  Asked again after the timeout.                             */
            if (code_len == 11 && memcmp(code, "not_primary", 11) == 0)
                return NX_REPL_RX_NEWER;
            return NX_REPL_RX_OK;
        }
        bool resync = false;
        nx_map_bool(m, "resync", &resync, NULL);
        uint64_t epoch = 0;
        nx_map_u64(m, "epoch", &epoch, NULL);
        if (epoch > self->epoch)
            self->epoch = epoch;
        if (resync) {
            const char *why = NULL;
            size_t why_len = 0;
            nx_map_str(m, "reason", &why, &why_len, NULL);
            s_problem(self, "%.*s; asking %s for a base copy", (int)why_len, why ? why : "",
                      self->primary);
            self->sync = false;
            s_ask_base(self);
            return NX_REPL_RX_OK;
        }
        self->state = NX_REPL_RX_STREAM;
        self->why[0] = 0;
        nx_info("replication: streaming the log of %s from position %" PRIu64, self->primary,
                self->next);
    } else if (id == self->base_id && self->state == NX_REPL_RX_BASE && !ok) {
        s_problem(self, "%s cannot send a base copy: %.*s", self->primary, (int)text_len,
                  text ? text : "");
        s_base_drop(self);
        self->state = NX_REPL_RX_HELLO; /* asked again after the timeout */
    }
    return NX_REPL_RX_OK;
}

/*  Writes the frames of one `wal` message. 1: frames written, 0: none (a
    heartbeat or a message not for here), -1: the log failed.             */
static int s_wal(nx_repl_receiver_t *self, const msgpack_object *m, zmq_msg_t *data, uint64_t now)
{
    uint64_t lsn = 0, written = 0, epoch = 0;
    nx_map_u64(m, "lsn", &lsn, NULL);
    nx_map_u64(m, "written", &written, NULL);
    nx_map_u64(m, "epoch", &epoch, NULL);
    bool sync = false;
    uint64_t echo = 0;
    nx_map_bool(m, "sync", &sync, NULL);
    nx_map_u64(m, "n", &echo, NULL);
    if (!sync || !self->trust_n || echo >= self->trust_n) {
        if (sync && self->trust_n)
            nx_info("replication: %s says this standby is in sync again", self->primary);
        self->sync = sync;
        if (sync)
            self->trust_n = 0;
    }
    if (epoch < self->epoch) {
        s_problem(self,
                  "%s streams epoch %" PRIu64 ", older than %" PRIu64
                  " this standby has seen: refused",
                  self->primary, epoch, self->epoch);
        return 0;
    }
    self->epoch = epoch;
    self->primary_written = written;
    if ((self->state != NX_REPL_RX_STREAM && self->state != NX_REPL_RX_HELLO) || !data ||
        zmq_msg_size(data) == 0)
        return 0;
    const uint8_t *p = zmq_msg_data(data);
    size_t left = zmq_msg_size(data);
    /*  Frames of the stream before the last ask, that the copy has: skipped
        (each frame's header names its position).                         */
    while (lsn < self->next && left >= NX_WAL_FRAME_HEAD) {
        uint32_t body =
            (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
        if (body > left - NX_WAL_FRAME_HEAD)
            return 0;
        p += NX_WAL_FRAME_HEAD + body;
        left -= NX_WAL_FRAME_HEAD + body;
        lsn = left >= NX_WAL_FRAME_HEAD ? nx_get_u64(p + 8) : UINT64_MAX;
    }
    if (!left)
        return 0;
    if (lsn != self->next && !(lsn == UINT64_MAX && left == 0)) {
        /*  A message lost on the way: ask again from where the copy is.  */
        s_problem(self, "the stream from %s jumped from %" PRIu64 " to %" PRIu64 ": asking again",
                  self->primary, self->next, lsn);
        self->asked_at = 0;
        return 0;
    }
    int wrote = 0;
    while (left > 0) {
        nx_wal_frame_t f;
        long n = nx_wal_copy_frame(self->cfg.wal, p, left, &f);
        if (n < 0) {
            if (errno != EINVAL) {
                s_problem(self, "cannot write the log: %s", strerror(errno));
                self->fatal = true;
                return -1;
            }
            s_problem(self,
                      "a frame from %s at %" PRIu64 " does not continue this log: "
                      "asking again",
                      self->primary, self->next);
            self->asked_at = 0;
            break;
        }
        self->next = f.next;
        self->next_crc = f.crc;
        p += n;
        left -= (size_t)n;
        wrote = 1;
    }
    (void)now;
    return wrote;
}

static int s_base(nx_repl_receiver_t *self, const msgpack_object *m, zmq_msg_t *data, uint64_t now)
{
    if (self->state != NX_REPL_RX_BASE || self->base_fd < 0 || !data)
        return 0;
    uint64_t offset = 0, size = 0;
    nx_map_u64(m, "offset", &offset, NULL);
    nx_map_u64(m, "size", &size, NULL);
    if (offset != self->base_got) {
        s_problem(self,
                  "the base copy from %s jumped from %" PRIu64 " to %" PRIu64 ": asking again",
                  self->primary, self->base_got, offset);
        self->asked_at = 0;
        return 0;
    }
    size_t n = zmq_msg_size(data);
    if (n && pwrite(self->base_fd, zmq_msg_data(data), n, (off_t)offset) != (ssize_t)n) {
        s_problem(self, "cannot write the base copy: %s", strerror(errno));
        self->asked_at = 0;
        return 0;
    }
    self->base_got += n;
    self->base_size = size;
    s_ack(self, now);
    if (self->base_got < size)
        return 0;
    /*  Whole: flushed, then renamed (and the directory flushed), so that a
        start finds either the whole copy or none.                         */
    char tmp[4096], ready[4096];
    snprintf(tmp, sizeof tmp, "%s/%s", self->data_dir, S_BASE_TMP);
    snprintf(ready, sizeof ready, "%s/%s", self->data_dir, S_BASE_READY);
    int dfd = open(self->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fdatasync(self->base_fd) != 0 || rename(tmp, ready) != 0 || dfd < 0 || fsync(dfd) != 0) {
        s_problem(self, "cannot keep the base copy: %s", strerror(errno));
        if (dfd >= 0)
            close(dfd);
        s_base_drop(self);
        self->asked_at = 0;
        return 0;
    }
    close(dfd);
    close(self->base_fd);
    self->base_fd = -1;
    nx_info("replication: received a base copy of %" PRIu64 " bytes from %s", size, self->primary);
    self->state = NX_REPL_RX_DONE;
    return 1;
}

/*  The primary lets its sync standby go when it leaves a change
    unacknowledged for the timeout, and says so in its next message; a
    standby that could not hear for a while (it did not run, or nothing
    came) may have been let go without hearing it, and what comes now may
    have been sent before. It stops counting itself in sync until the
    primary says so in answer to an ack sent from now on (`n`), so that a
    promotion without force never takes a standby the primary went on
    without.                                                               */
static void s_lost_sight(nx_repl_receiver_t *self, uint64_t gap, const char *what)
{
    if (self->sync)
        nx_warn("replication: %s for %" PRIu64 " ms: this standby no longer counts itself in "
                "sync until %s says so again",
                what, gap / 1000, self->primary);
    self->sync = false;
    self->trust_n = self->ack_n + 1;
}

void nx_repl_receiver_awake(nx_repl_receiver_t *self, uint64_t now)
{
    uint64_t blind = self->cfg.timeout_us / 2;
    if (self->ran_at && now - self->ran_at > blind)
        s_lost_sight(self, now - self->ran_at, "this broker did not run");
    self->ran_at = now;
}

nx_repl_rx_t nx_repl_receiver_read(nx_repl_receiver_t *self, uint64_t now)
{
    nx_repl_rx_t result = NX_REPL_RX_OK;
    bool wrote = false;
    uint64_t blind = self->cfg.timeout_us / 2;
    nx_repl_receiver_awake(self, now);
    for (int i = 0; i < 1000 && self->sock && result == NX_REPL_RX_OK; i++) {
        void *h = zsock_resolve(self->sock);
        zmq_msg_t head, data;
        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, h, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            break;
        }
        zmq_msg_init(&data);
        bool has_data = false;
        if (zmq_msg_more(&head)) {
            zmq_msg_recv(&data, h, 0);
            has_data = true;
            /*  Anything past a second frame is not ours: drained.        */
            while (zmq_msg_more(&data)) {
                zmq_msg_t extra;
                zmq_msg_init(&extra);
                zmq_msg_recv(&extra, h, 0);
                bool more = zmq_msg_more(&extra);
                zmq_msg_close(&extra);
                if (!more)
                    break;
            }
        }
        if (self->heard_at && now - self->heard_at > blind && now > self->heard_at)
            s_lost_sight(self, now - self->heard_at, "no word came from the primary");
        self->heard_at = self->spoke_at = now;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (msgpack_unpack_next(&u, zmq_msg_data(&head), zmq_msg_size(&head), &off) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_MAP) {
            const char *op = NULL;
            size_t op_len = 0;
            nx_map_str(&u.data, "op", &op, &op_len, NULL);
            if (!op)
                result = s_reply(self, &u.data);
            else if (op_len == 3 && memcmp(op, "wal", 3) == 0) {
                int rc = s_wal(self, &u.data, has_data ? &data : NULL, now);
                if (rc < 0)
                    result = NX_REPL_RX_FATAL;
                wrote |= rc > 0;
            } else if (op_len == 4 && memcmp(op, "base", 4) == 0) {
                if (s_base(self, &u.data, has_data ? &data : NULL, now) > 0)
                    result = NX_REPL_RX_RESTART;
            }
        }
        msgpack_unpacked_destroy(&u);
        zmq_msg_close(&data);
        zmq_msg_close(&head);
    }
    if (wrote) {
        int rc = nx_wal_flush_now(self->cfg.wal);
        if (rc < 0) {
            s_problem(self, "cannot flush the log: %s", strerror(errno));
            self->fatal = true;
            return NX_REPL_RX_FATAL;
        }
        if (rc == 0)
            s_ack(self, now);
    }
    return result;
}

void nx_repl_receiver_flushed(nx_repl_receiver_t *self)
{
    if (self->state == NX_REPL_RX_STREAM && nx_wal_durable(self->cfg.wal) > self->acked)
        s_ack(self, nx_mono_us());
}

void nx_repl_receiver_tick(nx_repl_receiver_t *self, uint64_t now)
{
    if (self->state == NX_REPL_RX_DONE || self->fatal)
        return;
    if (!self->primary) {
        if (self->sock)
            zsock_destroy(&self->sock);
        self->state = NX_REPL_RX_IDLE;
        return;
    }
    bool silent = now - self->heard_at > self->cfg.timeout_us;
    /*  A primary that never answers (not running, or refusing this
        broker's token or key at the handshake) is said once, and stays in
        state's problem until it answers.                                  */
    if (self->state == NX_REPL_RX_HELLO && self->asked_at &&
        now - self->asked_at > self->cfg.timeout_us)
        s_problem(self,
                  "%s has not answered the request for its log %s: is it running, and does "
                  "it take this broker's token or key? (asking again)",
                  self->primary, self->spoke_at ? "since it last spoke" : "yet");
    if (!self->asked_at || self->state == NX_REPL_RX_IDLE ||
        (self->state == NX_REPL_RX_HELLO && now - self->asked_at > self->cfg.timeout_us) ||
        (self->state != NX_REPL_RX_HELLO && silent)) {
        if (self->asked_at && silent && self->state != NX_REPL_RX_IDLE &&
            self->state != NX_REPL_RX_HELLO) /* said above */
            s_problem(self, "no word from %s for %" PRIu64 " ms: asking again", self->primary,
                      (now - self->heard_at) / 1000);
        /*  A new socket only when the primary was silent for long: a
            reconnect is ZeroMQ's (heartbeats), and the socket still holds
            what came before the silence was noticed.                      */
        s_hello(self, now, !self->sock || now - self->heard_at > 4 * self->cfg.timeout_us);
        return;
    }
    if (self->state == NX_REPL_RX_STREAM && now - self->acked_at >= S_ACK_US)
        s_ack(self, now);
}

void nx_repl_receiver_follow(nx_repl_receiver_t *self, const char *endpoint)
{
    if ((!endpoint && !self->primary) ||
        (endpoint && self->primary && strcmp(endpoint, self->primary) == 0))
        return;
    free(self->primary);
    self->primary = s_dup(endpoint);
    self->sync = false;
    self->trust_n = 0;
    self->asked_at = 0;
    self->why[0] = 0;
    zsock_destroy(&self->sock); /* another primary: a new socket          */
    s_base_drop(self);
    self->state = self->primary ? NX_REPL_RX_HELLO : NX_REPL_RX_IDLE;
    if (self->primary)
        nx_info("replication: following %s", self->primary);
}

void nx_repl_receiver_stats(nx_repl_receiver_t *self, nx_repl_rx_stats_t *st, uint64_t now)
{
    memset(st, 0, sizeof *st);
    st->primary = self->primary;
    st->state = self->state;
    st->received = self->next;
    st->durable = nx_wal_durable(self->cfg.wal);
    st->primary_written = self->primary_written;
    st->lag = self->primary_written > st->durable ? self->primary_written - st->durable : 0;
    uint64_t spoke = self->spoke_at ? self->spoke_at : self->born_at;
    st->heard_ms = now > spoke ? (now - spoke) / 1000 : 0;
    st->epoch = self->epoch;
    /*  As the primary last said (a primary that went silent said nothing
        since): what a promotion needs to know.                            */
    st->sync = self->sync;
    st->base_got = self->base_got;
    st->base_size = self->base_size;
    snprintf(st->why, sizeof st->why, "%s", self->why);
}

/*  ---- Installing a base copy --------------------------------------------------- */

int nx_repl_receiver_install(const char *data_dir, char *err, size_t err_size)
{
    char ready[4096], data[4096], lock[4096], keep_dir[4096], keep[4200], wal[4096];
    snprintf(ready, sizeof ready, "%s/%s", data_dir, S_BASE_READY);
    struct stat st;
    if (stat(ready, &st) != 0)
        return 0;
    snprintf(data, sizeof data, "%s/data.mdb", data_dir);
    snprintf(lock, sizeof lock, "%s/lock.mdb", data_dir);
    snprintf(keep_dir, sizeof keep_dir, "%s/%s", data_dir, S_DIVERGED);
    snprintf(keep, sizeof keep, "%s/data.mdb", keep_dir);
    snprintf(wal, sizeof wal, "%s/wal", data_dir);
    if (stat(data, &st) == 0) {
        if (mkdir(keep_dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, err_size, "cannot create %s: %s", keep_dir, strerror(errno));
            return -1;
        }
        /*  A store kept by an earlier base copy may hold the only copy of
            changes that reached no one else: never overwritten.           */
        if (stat(keep, &st) == 0) {
            char when[32];
            time_t now = time(NULL);
            struct tm tm;
            strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
            for (int i = 0; i < 1000; i++) {
                if (i)
                    snprintf(keep, sizeof keep, "%s/data-%s-%d.mdb", keep_dir, when, i);
                else
                    snprintf(keep, sizeof keep, "%s/data-%s.mdb", keep_dir, when);
                if (stat(keep, &st) != 0)
                    break;
            }
            if (stat(keep, &st) == 0) {
                snprintf(err, err_size, "%s holds too many kept stores: remove those not needed",
                         keep_dir);
                return -1;
            }
        }
        if (rename(data, keep) != 0) {
            snprintf(err, err_size, "cannot move %s aside: %s", data, strerror(errno));
            return -1;
        }
        nx_disk_sync_dir(keep_dir);
        nx_warn("replication: the store this broker had is kept in %s (it may hold changes "
                "that never reached the primary); remove it when it is not needed",
                keep);
    }
    unlink(lock);
    /*  The log belongs to the old store: the copy's checkpoint says where
        the primary's goes on, and the stream writes it there.            */
    DIR *d = opendir(wal);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".log") == 0) {
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", wal, e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
    if (rename(ready, data) != 0 || nx_disk_sync_dir(data_dir) != 0) {
        snprintf(err, err_size, "cannot put the base copy in place: %s", strerror(errno));
        return -1;
    }
    nx_info("replication: installed the base copy from the primary as the store");
    return 0;
}
