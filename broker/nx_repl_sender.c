/*  =========================================================================
    nx_repl_sender - ships the write-ahead log to standbys. nx_repl_sender.h
    is the contract; docs/protocol.md section 9 has the messages.

    The frames go out as the log has them on disk: the sender reads them
    back (from the page cache, just written) with a reader of its own and
    checks each one's chain as it goes, so that what a standby receives is
    exactly the primary's log, which it checks again before writing it.
    Frames are sent once written, before the primary's own flush: both
    flushes then run at the same time, and a reply that waits for both
    waits for the slower, not for the sum. A frame the primary never
    flushed is only lost with the primary's machine (a crash of the process
    keeps it: the page cache survives), and then the standby is the one
    that is promoted, with it.
    =========================================================================
*/

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "nx_codec.h"
#include "nx_log.h"
#include "nx_repl_sender.h"

#define S_FLIGHT       256          /* messages sent and not acknowledged */
#define S_CHUNK        (1u << 20)   /* bytes of frames per message, about */
#define S_PUMP_BYTES   (8u << 20)   /* read per pump per standby at most  */
#define S_HEARTBEAT_US 1000000      /* a word to each standby this often  */
#define S_CATCHUP      (256u << 10) /* behind by less: it has caught up   */
#define S_BASE_FILE    "replica-base.mdb"
#define S_PEER_MAX     256

typedef struct {
    uint64_t end; /* log position the message ends at                    */
    uint64_t at;  /* mono us it was sent                                  */
} s_flight_t;

typedef struct {
    bool used;                       /* the slot holds a standby            */
    char name[NX_REPL_NAME_MAX + 1]; /* its name                            */
    uint8_t peer[S_PEER_MAX];        /* routing id of its connection        */
    size_t peer_len;                 /* bytes in peer                       */
    bool attached;                   /* its stream runs                     */
    uint64_t detached_at;            /* mono us it stopped (0: attached)    */
    uint64_t sent;                   /* next log position to send           */
    uint32_t sent_crc;               /* crc of the frame before sent        */
    uint64_t acked;                  /* it has the log durable up to        */
    uint64_t received;               /* ... and received up to (window)     */
    uint64_t ack_at;                 /* mono us of its last ack             */
    uint64_t ack_n;                  /* the number of its last ack (echoed) */
    uint64_t last_send;              /* mono us of the last message to it   */
    s_flight_t flight[S_FLIGHT];     /* messages not acknowledged (ring)    */
    size_t flight_head, n_flight;    /* first entry, entries                */
    bool held;                       /* its position is held from recycling */
    int base;                        /* base copy: 0 none, 1 being made,
                                        2 being sent, 3 sent               */
    uint64_t base_lsn;               /* the copy's checkpoint is at least   */
    uint64_t base_size;              /* bytes of the copy                   */
    uint64_t base_sent, base_acked;  /* bytes of it sent, acknowledged      */
} s_standby_t;

struct _nx_repl_sender_t {
    nx_repl_sender_config_t cfg; /* settings; the strings below          */
    char *wal_dir;               /* our copy                            */
    char *data_dir;              /* our copy                            */
    char *store_id;              /* our copy                            */
    char *base_path;             /* data_dir/replica-base.mdb           */
    nx_wal_reader_t *rd;         /* reads the log back                  */
    s_standby_t sb[NX_REPL_MAX]; /* the standbys                        */
    int sync;                    /* index of the sync standby, -1: none */
    uint8_t *buf;                /* a message's frames                  */
    size_t cap;                  /* bytes allocated in buf              */
    pthread_t thread;            /* makes a base copy                   */
    bool thread_on;              /* it was started and not joined       */
    int copy_state;              /* atomic: 0 running, 1 done, -1 failed */
    int base_fd;                 /* the base copy's file, -1: none      */
    int base_owner;              /* standby it is for, -1: none         */
    char copy_err[256];          /* why the copy failed                 */
    bool warned_read;            /* a read failure was logged           */
};

/*  ---- Helpers ------------------------------------------------------------ */

static s_standby_t *s_find(nx_repl_sender_t *self, const char *name, size_t len)
{
    for (int i = 0; i < NX_REPL_MAX; i++)
        if (self->sb[i].used && strlen(self->sb[i].name) == len &&
            memcmp(self->sb[i].name, name, len) == 0)
            return &self->sb[i];
    return NULL;
}

static int s_index(nx_repl_sender_t *self, s_standby_t *sb)
{
    return (int)(sb - self->sb);
}

static void s_flight_clear(s_standby_t *sb)
{
    sb->flight_head = sb->n_flight = 0;
}

static void s_flight_push(s_standby_t *sb, uint64_t end, uint64_t now)
{
    sb->flight[(sb->flight_head + sb->n_flight) % S_FLIGHT] = (s_flight_t){end, now};
    sb->n_flight++;
}

static void s_flight_pop_to(s_standby_t *sb, uint64_t acked)
{
    while (sb->n_flight && sb->flight[sb->flight_head].end <= acked) {
        sb->flight_head = (sb->flight_head + 1) % S_FLIGHT;
        sb->n_flight--;
    }
}

/*  Stops sending a base copy (the file stays while a copy is being made:
    the thread owns it until it is joined).                                */
static void s_base_close(nx_repl_sender_t *self)
{
    if (self->base_fd >= 0) {
        close(self->base_fd);
        self->base_fd = -1;
    }
    if (!self->thread_on)
        unlink(self->base_path);
}

static void s_base_end(nx_repl_sender_t *self, s_standby_t *sb)
{
    if (self->base_owner == s_index(self, sb) && !self->thread_on) {
        s_base_close(self);
        self->base_owner = -1;
    }
    if (sb->base != 1)
        sb->base = 0;
}

/*  Sends [peer][head][data] on the ROUTER without waiting. 0, or -1 when
    ZeroMQ would not take it now.                                          */
static int s_send(nx_repl_sender_t *self, s_standby_t *sb, msgpack_sbuffer *head, const void *data,
                  size_t len, bool with_data)
{
    void *r = self->cfg.router;
    if (zmq_send(r, sb->peer, sb->peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    /*  Once the first frame is taken, the rest of a message is too.      */
    zmq_send(r, head->data, head->size, with_data ? ZMQ_SNDMORE : 0);
    if (with_data)
        zmq_send(r, data, len, 0);
    return 0;
}

/*  ---- Lifecycle ------------------------------------------------------------ */

nx_repl_sender_t *nx_repl_sender_new(const nx_repl_sender_config_t *cfg)
{
    nx_repl_sender_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->wal_dir = strdup(cfg->wal_dir);
    self->data_dir = strdup(cfg->data_dir);
    self->store_id = strdup(cfg->store_id);
    self->sync = -1;
    self->base_fd = -1;
    self->base_owner = -1;
    if (self->data_dir && asprintf(&self->base_path, "%s/%s", self->data_dir, S_BASE_FILE) < 0)
        self->base_path = NULL;
    if (self->wal_dir)
        self->rd = nx_wal_reader_new(self->wal_dir, nx_wal_segment_size(cfg->wal));
    if (!self->wal_dir || !self->data_dir || !self->store_id || !self->base_path || !self->rd) {
        nx_repl_sender_destroy(&self);
        return NULL;
    }
    self->cfg.wal_dir = self->wal_dir;
    self->cfg.data_dir = self->data_dir;
    self->cfg.store_id = self->store_id;
    if (!self->cfg.window)
        self->cfg.window = 16u << 20;
    /*  A copy left by a broker that stopped while sending one.           */
    unlink(self->base_path);
    return self;
}

void nx_repl_sender_destroy(nx_repl_sender_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_repl_sender_t *self = *self_p;
    if (self->thread_on) {
        pthread_join(self->thread, NULL);
        self->thread_on = false;
    }
    if (self->base_path)
        s_base_close(self);
    if (self->cfg.wal)
        nx_wal_hold(self->cfg.wal, UINT64_MAX);
    nx_wal_reader_destroy(&self->rd);
    free(self->buf);
    free(self->base_path);
    free(self->wal_dir);
    free(self->data_dir);
    free(self->store_id);
    free(self);
    *self_p = NULL;
}

/*  ---- Attach ------------------------------------------------------------------ */

/*  Whether the frame at lsn continuing crc is on this log (or lsn is where
    it ends). A reader that fails once is made again: its open segment may
    have been recycled under it.                                           */
static bool s_on_log(nx_repl_sender_t *self, uint64_t lsn, uint32_t crc)
{
    uint64_t written = nx_wal_written(self->cfg.wal);
    if (lsn == written)
        return crc == nx_wal_turn_crc(self->cfg.wal);
    if (lsn > written)
        return false;
    for (int attempt = 0; attempt < 2; attempt++) {
        nx_wal_frame_t f;
        if (nx_wal_reader_read(self->rd, lsn, crc, true, &f, NULL) == 1)
            return true;
        nx_wal_reader_destroy(&self->rd);
        self->rd = nx_wal_reader_new(self->wal_dir, nx_wal_segment_size(self->cfg.wal));
        if (!self->rd)
            return false;
    }
    return false;
}

nx_repl_answer_t nx_repl_sender_attach(nx_repl_sender_t *self, const uint8_t *peer, size_t peer_len,
                                       const nx_repl_hello_t *hello, uint64_t epoch, uint64_t *from,
                                       char *why, size_t why_size)
{
    uint64_t now = nx_mono_us();
    if (!hello->name_len || hello->name_len > NX_REPL_NAME_MAX || peer_len > S_PEER_MAX ||
        !self->rd) {
        snprintf(why, why_size, "a standby's name is 1..%d bytes", NX_REPL_NAME_MAX);
        return NX_REPL_REFUSED;
    }
    s_standby_t *sb = s_find(self, hello->name, hello->name_len);
    for (int i = 0; !sb && i < NX_REPL_MAX; i++)
        if (!self->sb[i].used)
            sb = &self->sb[i];
    /*  No free slot: one that went away (not the sync one) makes room.    */
    for (int i = 0; !sb && i < NX_REPL_MAX; i++)
        if (!self->sb[i].attached && i != self->sync && self->sb[i].base != 1) {
            sb = &self->sb[i];
            nx_info("replication: forgot standby %s to make room for %.*s", sb->name,
                    (int)hello->name_len, hello->name);
            s_base_end(self, sb);
            memset(sb, 0, sizeof *sb);
        }
    if (!sb) {
        snprintf(why, why_size, "this primary streams to %d standbys already", NX_REPL_MAX);
        return NX_REPL_REFUSED;
    }
    bool known = sb->used;
    if (!known) {
        memset(sb, 0, sizeof *sb);
        sb->used = true;
        memcpy(sb->name, hello->name, hello->name_len);
        sb->name[hello->name_len] = 0;
    }
    memcpy(sb->peer, peer, peer_len);
    sb->peer_len = peer_len;
    sb->attached = false;
    if (!sb->detached_at)
        sb->detached_at = now;
    s_flight_clear(sb);
    sb->ack_at = now;
    if (hello->epoch > epoch) {
        snprintf(why, why_size,
                 "standby %s has seen epoch %" PRIu64 ", newer than this broker's %" PRIu64
                 ": another broker was promoted",
                 sb->name, hello->epoch, epoch);
        return NX_REPL_NEWER;
    }
    const char *problem = NULL;
    if (hello->store_id_len != strlen(self->store_id) ||
        memcmp(hello->store_id, self->store_id, hello->store_id_len) != 0)
        problem = "its store is another one (a new or replaced data directory)";
    else if (hello->segment_size != nx_wal_segment_size(self->cfg.wal))
        problem = "its log has another segment size";
    else if (hello->lsn > nx_wal_written(self->cfg.wal))
        problem = "its log goes further than this one (it holds changes this broker never had)";
    else if (!s_on_log(self, hello->lsn, hello->crc))
        problem = "its log is not a part of this one (it went on differently, or this broker "
                  "no longer holds that part)";
    if (problem) {
        snprintf(why, why_size, "standby %s at log position %" PRIu64 " needs a base copy: %s",
                 sb->name, hello->lsn, problem);
        if (sb->base != 1)
            sb->held = false;
        return NX_REPL_RESYNC;
    }
    s_base_end(self, sb);
    sb->attached = true;
    sb->detached_at = 0;
    /*  What it has may not all be flushed yet (a flush round was running
        when it asked again): only what is durable counts for a reply
        that waits for the standby; its next ack says the rest.           */
    sb->sent = sb->received = hello->lsn;
    sb->acked = hello->durable;
    sb->sent_crc = hello->crc;
    sb->ack_n = 0;
    sb->held = true;
    sb->last_send = 0;
    *from = hello->lsn;
    return NX_REPL_STREAM;
}

/*  ---- Acks ------------------------------------------------------------------- */

void nx_repl_sender_ack(nx_repl_sender_t *self, const char *name, size_t name_len, uint64_t lsn,
                        uint64_t received, uint64_t base_offset, uint64_t n, uint64_t now)
{
    s_standby_t *sb = s_find(self, name, name_len);
    if (!sb)
        return;
    sb->ack_at = now;
    if (n > sb->ack_n)
        sb->ack_n = n;
    if (received < lsn)
        received = lsn;
    if (sb->attached && received > sb->received && received <= sb->sent) {
        sb->received = received;
        s_flight_pop_to(sb, received);
    }
    if (sb->attached && lsn > sb->acked && lsn <= sb->sent)
        sb->acked = lsn;
    if (sb->base == 2 && base_offset > sb->base_acked && base_offset <= sb->base_sent)
        sb->base_acked = base_offset;
}

/*  ---- Base copies ------------------------------------------------------------ */

static void *s_copy_thread(void *arg)
{
    nx_repl_sender_t *self = arg;
    nexus_err_t e =
        nx_store_copy(self->cfg.store, self->base_fd, self->copy_err, sizeof self->copy_err);
    __atomic_store_n(&self->copy_state, e == NEXUS_OK ? 1 : -1, __ATOMIC_RELEASE);
    return NULL;
}

int nx_repl_sender_base(nx_repl_sender_t *self, const char *name, size_t name_len,
                        uint64_t checkpoint, char *why, size_t why_size)
{
    s_standby_t *sb = s_find(self, name, name_len);
    if (!sb) {
        snprintf(why, why_size, "no standby of that name asked for the log");
        return -1;
    }
    if (sb->base == 1)
        return 0; /* being made: it comes */
    if (sb->base == 2) {
        /*  Asked again (the standby started over): from the first byte.  */
        sb->base_sent = sb->base_acked = 0;
        return 0;
    }
    if (self->base_owner >= 0 && self->base_owner != s_index(self, sb)) {
        snprintf(why, why_size, "a base copy is being made for standby %s: try again later",
                 self->sb[self->base_owner].name);
        return -1;
    }
    if (self->thread_on) {
        snprintf(why, why_size, "a base copy is being made: try again later");
        return -1;
    }
    s_base_close(self);
    self->base_fd = open(self->base_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (self->base_fd < 0) {
        snprintf(why, why_size, "cannot create %s: %s", self->base_path, strerror(errno));
        return -1;
    }
    /*  Held from now: the copy's checkpoint is at or above checkpoint.    */
    sb->base_lsn = checkpoint;
    sb->held = true;
    sb->base = 1;
    sb->base_sent = sb->base_acked = sb->base_size = 0;
    sb->attached = false;
    s_flight_clear(sb);
    nx_wal_hold(self->cfg.wal, checkpoint);
    self->base_owner = s_index(self, sb);
    self->copy_state = 0;
    self->copy_err[0] = 0;
    int rc = pthread_create(&self->thread, NULL, s_copy_thread, self);
    if (rc) {
        snprintf(why, why_size, "cannot start the base copy's thread: %s", strerror(rc));
        sb->base = 0;
        self->base_owner = -1;
        s_base_close(self);
        return -1;
    }
    self->thread_on = true;
    nx_info("replication: making a base copy of the store for standby %s", sb->name);
    return 0;
}

/*  Sends the next chunks of the base copy.                                */
static void s_pump_base(nx_repl_sender_t *self, s_standby_t *sb, uint64_t now)
{
    if (sb->base == 1) {
        int st = __atomic_load_n(&self->copy_state, __ATOMIC_ACQUIRE);
        if (st == 0)
            return;
        pthread_join(self->thread, NULL);
        self->thread_on = false;
        struct stat s;
        if (st < 0 || fstat(self->base_fd, &s) != 0) {
            nx_error("replication: the base copy for standby %s failed: %s", sb->name,
                     self->copy_err[0] ? self->copy_err : strerror(errno));
            sb->base = 0;
            self->base_owner = -1;
            s_base_close(self);
            return;
        }
        sb->base = 2;
        sb->base_size = (uint64_t)s.st_size;
        nx_info("replication: sending a base copy of %" PRIu64 " bytes to standby %s",
                sb->base_size, sb->name);
    }
    while (sb->base == 2 && sb->base_sent < sb->base_size &&
           sb->base_sent - sb->base_acked < self->cfg.window) {
        size_t n = sb->base_size - sb->base_sent < S_CHUNK ? (size_t)(sb->base_size - sb->base_sent)
                                                           : S_CHUNK;
        if (n > self->cap) {
            uint8_t *grown = realloc(self->buf, n);
            if (!grown)
                return;
            self->buf = grown;
            self->cap = n;
        }
        ssize_t got = pread(self->base_fd, self->buf, n, (off_t)sb->base_sent);
        if (got != (ssize_t)n) {
            nx_error("replication: cannot read the base copy: %s", strerror(errno));
            sb->base = 0;
            self->base_owner = -1;
            s_base_close(self);
            return;
        }
        msgpack_sbuffer head;
        msgpack_sbuffer_init(&head);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &head, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        nx_pack_kv_str(&pk, "op", "base");
        nx_pack_kv_u64(&pk, "offset", sb->base_sent);
        nx_pack_kv_u64(&pk, "size", sb->base_size);
        nx_pack_kv_str(&pk, "store_id", self->store_id);
        int rc = s_send(self, sb, &head, self->buf, n, true);
        msgpack_sbuffer_destroy(&head);
        if (rc)
            return;
        sb->base_sent += n;
        sb->last_send = now;
    }
    if (sb->base == 2 && sb->base_acked == sb->base_size) {
        nx_info("replication: standby %s has the base copy (%" PRIu64 " bytes); it restarts "
                "from it",
                sb->name, sb->base_size);
        sb->base = 3;
        self->base_owner = -1;
        s_base_close(self);
    }
}

/*  ---- Streaming ------------------------------------------------------------- */

static void s_detach(nx_repl_sender_t *self, s_standby_t *sb, uint64_t now)
{
    (void)self;
    sb->attached = false;
    sb->detached_at = now;
}

/*  Sends one `wal` message: frames from sb->sent (up to written), or a
    heartbeat. Returns 1 when it sent frames, 0 when there was nothing or
    ZeroMQ would not take it, -1 when the log cannot be read there.       */
static int s_send_wal(nx_repl_sender_t *self, s_standby_t *sb, uint64_t epoch, uint64_t written,
                      uint64_t now)
{
    uint64_t start = sb->sent, pos = sb->sent;
    uint32_t crc = sb->sent_crc;
    size_t len = 0;
    while (pos < written && len < S_CHUNK) {
        /*  The loop's own frames, written before: trusted past the header
            (the standby checks each frame's crc and chain again).        */
        nx_wal_frame_t f;
        int rc = nx_wal_reader_read(self->rd, pos, crc, false, &f, NULL);
        if (rc != 1) {
            /*  Its segment may have been recycled under an open fd: read
                it with a new reader once before giving up.                */
            nx_wal_reader_destroy(&self->rd);
            self->rd = nx_wal_reader_new(self->wal_dir, nx_wal_segment_size(self->cfg.wal));
            rc = self->rd ? nx_wal_reader_read(self->rd, pos, crc, false, &f, NULL) : -1;
        }
        if (rc != 1) {
            if (!self->warned_read)
                nx_error("replication: cannot read the log at %" PRIu64 " for standby %s (%s): "
                         "it has to ask again",
                         pos, sb->name, rc < 0 ? strerror(errno) : "no frame there");
            self->warned_read = true;
            return -1;
        }
        size_t n = NX_WAL_FRAME_HEAD + f.len;
        if (len + n > self->cap) {
            size_t cap = self->cap ? self->cap : S_CHUNK;
            while (cap < len + n)
                cap *= 2;
            uint8_t *grown = realloc(self->buf, cap);
            if (!grown)
                return 0;
            self->buf = grown;
            self->cap = cap;
        }
        memcpy(self->buf + len, f.body - NX_WAL_FRAME_HEAD, n);
        len += n;
        pos = f.next;
        crc = f.crc;
    }
    self->warned_read = false;
    msgpack_sbuffer head;
    msgpack_sbuffer_init(&head);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &head, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    nx_pack_kv_str(&pk, "op", "wal");
    nx_pack_kv_u64(&pk, "lsn", start);
    nx_pack_kv_u64(&pk, "end", pos);
    nx_pack_kv_u64(&pk, "written", written);
    nx_pack_kv_u64(&pk, "epoch", epoch);
    nx_pack_kv_bool(&pk, "sync", self->sync == s_index(self, sb));
    /*  Which of its acks this says sync after (nx_repl_receiver.c, lost
        sight): a standby that stalled trusts no older word.              */
    nx_pack_kv_u64(&pk, "n", sb->ack_n);
    int rc = s_send(self, sb, &head, self->buf, len, len > 0);
    msgpack_sbuffer_destroy(&head);
    if (rc)
        return 0;
    sb->last_send = now;
    if (!len)
        return 0;
    sb->sent = pos;
    sb->sent_crc = crc;
    s_flight_push(sb, pos, now);
    return 1;
}

/*  A heartbeat at least four times per timeout: a standby takes a primary
    silent for the timeout (the same setting on both) as gone.            */
static uint64_t s_heartbeat(nx_repl_sender_t *self)
{
    uint64_t hb = self->cfg.timeout_us / 4;
    return hb && hb < S_HEARTBEAT_US ? hb : S_HEARTBEAT_US;
}

static void s_update_hold(nx_repl_sender_t *self, uint64_t written)
{
    uint64_t hold = UINT64_MAX;
    for (int i = 0; i < NX_REPL_MAX; i++) {
        s_standby_t *sb = &self->sb[i];
        if (!sb->used || !sb->held)
            continue;
        uint64_t at = sb->base ? sb->base_lsn : sb->acked;
        if (written - at > self->cfg.keep && sb->base != 1 && sb->base != 2) {
            nx_warn("replication: standby %s is more than %" PRIu64 " bytes of log behind; the "
                    "log it needs is no longer kept (it will need a base copy)",
                    sb->name, self->cfg.keep);
            sb->held = false;
            continue;
        }
        if (at < hold)
            hold = at;
    }
    nx_wal_hold(self->cfg.wal, hold);
}

void nx_repl_sender_pump(nx_repl_sender_t *self, uint64_t epoch, uint64_t now)
{
    uint64_t written = nx_wal_written(self->cfg.wal);
    for (int i = 0; i < NX_REPL_MAX; i++) {
        s_standby_t *sb = &self->sb[i];
        if (!sb->used)
            continue;
        if (sb->base == 1 || sb->base == 2)
            s_pump_base(self, sb, now);
        if (!sb->attached) {
            /*  A standby waiting for its base copy hears a heartbeat.    */
            if ((sb->base == 1 || sb->base == 2) && now - sb->last_send >= s_heartbeat(self))
                s_send_wal(self, sb, epoch, sb->sent, now);
            continue;
        }
        uint64_t start = sb->sent;
        while (sb->sent < written && sb->sent - sb->received < self->cfg.window &&
               sb->n_flight < S_FLIGHT && sb->sent - start < S_PUMP_BYTES) {
            int rc = s_send_wal(self, sb, epoch, written, now);
            if (rc < 0)
                s_detach(self, sb, now);
            if (rc <= 0)
                break;
        }
        if (now - sb->last_send >= s_heartbeat(self))
            s_send_wal(self, sb, epoch, sb->sent, now);
    }
    s_update_hold(self, written);
}

/*  ---- The sync standby -------------------------------------------------------- */

uint64_t nx_repl_sender_synced(nx_repl_sender_t *self)
{
    return self->sync >= 0 ? self->sb[self->sync].acked : UINT64_MAX;
}

const char *nx_repl_sender_sync_name(nx_repl_sender_t *self)
{
    return self->sync >= 0 ? self->sb[self->sync].name : NULL;
}

int nx_repl_sender_set_sync(nx_repl_sender_t *self, const char *name)
{
    s_standby_t *sb = name ? s_find(self, name, strlen(name)) : NULL;
    if (name && !sb)
        return -1;
    self->sync = sb ? s_index(self, sb) : -1;
    /*  The standbys hear it at the next pump (a heartbeat says it): a
        standby that was let go must not think itself safe to promote.    */
    for (int i = 0; i < NX_REPL_MAX; i++)
        self->sb[i].last_send = 0;
    return 0;
}

nx_repl_want_t nx_repl_sender_want(nx_repl_sender_t *self, uint64_t now, char *name, size_t size)
{
    uint64_t written = nx_wal_written(self->cfg.wal);
    if (self->sync >= 0) {
        s_standby_t *sb = &self->sb[self->sync];
        /*  Something waits for it since: the oldest message it has not
            acknowledged, or since it went, for what was written after.   */
        uint64_t since = 0;
        if (sb->attached && sb->n_flight)
            since = sb->flight[sb->flight_head].at;
        else if (!sb->attached && written > sb->acked)
            since = sb->detached_at;
        if (since && now - since > self->cfg.timeout_us) {
            snprintf(name, size, "%s", sb->name);
            return NX_REPL_WANT_DROP;
        }
        return NX_REPL_WANT_NONE;
    }
    /*  Caught up: close behind, and alive (it acknowledged lately and
        leaves nothing waiting long): a stopped standby is close behind
        too, but must not be taken back.                                   */
    uint64_t alive = self->cfg.timeout_us > 2000000 ? self->cfg.timeout_us : 2000000;
    for (int i = 0; i < NX_REPL_MAX; i++) {
        s_standby_t *sb = &self->sb[i];
        bool waits =
            sb->n_flight && now - sb->flight[sb->flight_head].at > self->cfg.timeout_us / 2;
        if (sb->used && sb->attached && written - sb->acked <= S_CATCHUP &&
            now - sb->ack_at <= alive && !waits) {
            snprintf(name, size, "%s", sb->name);
            return NX_REPL_WANT_ADD;
        }
    }
    return NX_REPL_WANT_NONE;
}

int nx_repl_sender_stats(nx_repl_sender_t *self, size_t i, nx_repl_standby_stats_t *st,
                         uint64_t now)
{
    size_t k = 0;
    uint64_t written = nx_wal_written(self->cfg.wal);
    for (int j = 0; j < NX_REPL_MAX; j++) {
        s_standby_t *sb = &self->sb[j];
        if (!sb->used)
            continue;
        if (k++ != i)
            continue;
        memset(st, 0, sizeof *st);
        snprintf(st->name, sizeof st->name, "%s", sb->name);
        st->attached = sb->attached;
        st->sync = self->sync == j;
        st->base = sb->base == 1 || sb->base == 2;
        st->sent = sb->sent;
        st->acked = sb->acked;
        st->received = sb->received;
        st->lag = written > sb->acked ? written - sb->acked : 0;
        st->ack_age_ms = now > sb->ack_at ? (now - sb->ack_at) / 1000 : 0;
        return 0;
    }
    return -1;
}
