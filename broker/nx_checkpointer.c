/*  =========================================================================
    nx_checkpointer - the LMDB writer behind the write-ahead log.
    nx_checkpointer.h is the contract.

    The actor reads only what the log has flushed (nx_wal_durable), so the
    store never holds a change the log could lose: after a power cut the
    store is a prefix of the log, and recovery replays the rest. Flushed
    positions are always a turn's end, so a commit always holds whole
    turns, like the transactions of the loop before the log existed.

    Waking. The loop stores the durable position, then takes the `idle`
    flag; the actor sets `idle`, then looks at the durable position again
    before it sleeps. Both with sequentially consistent order, so one of
    the two always sees the other: a flush is never left unapplied until
    the next timeout.
    =========================================================================
*/

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_checkpointer.h"
#include "nx_codec.h"
#include "nx_disk.h"
#include "nx_log.h"

#define S_HOUSE_US    1000000     /* store housekeeping interval                    */
#define S_RETRY_US    1000000     /* after a failure, try again this much later     */
#define S_SLICE_BYTES (64u << 20) /* apply at most this much between decisions */
#define S_ROOM_MIN    (1u << 20)
/*  The loop wakes the actor once a slice of log is flushed (not every
    turn); between wakes it looks by itself this often.                    */
#define S_CKPT_IDLE_US 50000

struct _nx_checkpointer_t {
    zactor_t *actor;              /* the thread                                 */
    nx_checkpointer_config_t cfg; /* copy; wal_dir points below                 */
    char *wal_dir;                /* our copy                                   */
    uint64_t start_lsn;           /* committed when the actor starts            */
    uint32_t start_crc;           /* the chain's head there                     */
    uint64_t committed;           /* atomic: the last durable commit covers this */
    uint64_t request;             /* atomic: commit once this is applied        */
    int idle;                     /* atomic: the actor sleeps (wake it)         */
    int full;                     /* atomic: the store is full                  */
    pthread_mutex_t lock;         /* guards problem and problem_seq             */
    char problem[256];            /* the last problem reported                  */
    uint64_t problem_seq;         /* counts problems                            */
    uint64_t problem_seen;        /* the loop's: the last one it read           */
};

/*  The actor's own state.                                                  */
typedef struct {
    nx_checkpointer_t *ck;
    zsock_t *pipe;
    nx_store_t *store;
    nx_wal_reader_t *rd;
    uint64_t applied;       /* log position applied to the open batch       */
    uint32_t applied_crc;   /* crc of the frame before applied              */
    uint64_t committed;     /* log position of the last commit              */
    uint32_t committed_crc; /* crc of the frame before committed            */
    uint64_t since;         /* mono us of the first uncommitted apply, 0    */
    uint64_t next_house;    /* mono us of the next housekeeping             */
    uint64_t stuck_until;   /* mono us: after a failure, wait till then     */
    bool stopping;          /* $TERM received: commit all, then end         */
} s_state_t;

static void s_problem(nx_checkpointer_t *self, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_problem(nx_checkpointer_t *self, const char *fmt, ...)
{
    pthread_mutex_lock(&self->lock);
    va_list args;
    va_start(args, fmt);
    vsnprintf(self->problem, sizeof self->problem, fmt, args);
    va_end(args);
    __atomic_add_fetch(&self->problem_seq, 1, __ATOMIC_RELEASE);
    nx_error("checkpointer: %s", self->problem);
    pthread_mutex_unlock(&self->lock);
}

/*  ---- Applying records ---------------------------------------------------- */

static int s_meta_get(nx_store_t *store, const char *key, uint64_t *value)
{
    void *v = NULL;
    size_t len = 0;
    int found = 0;
    if (nx_store_get(store, NX_DB_META, key, strlen(key), &v, &len) == NEXUS_OK && len == 8) {
        *value = nx_get_u64(v);
        found = 1;
    }
    free(v);
    return found;
}

static nexus_err_t s_meta_put(nx_store_t *store, const char *key, uint64_t value)
{
    uint8_t v[8];
    nx_put_u64(v, value);
    return nx_store_put(store, NX_DB_META, key, strlen(key), v, sizeof v);
}

/*  Applies the records of one body to the open batch. Counts in *events
    and *changes. NEXUS_ERR_STORE_FULL: the batch is gone (make room and
    apply again from the last commit); other errors: a record that does
    not decode or a store error, text in why.                               */
static nexus_err_t s_apply_body(nx_store_t *store, const uint8_t *body, size_t len,
                                uint64_t *events, uint64_t *changes, char *why, size_t why_size)
{
    size_t pos = 0;
    int type, rc;
    const uint8_t *data;
    size_t dlen;
    while ((rc = nx_wal_record_next(body, len, &pos, &type, &data, &dlen)) == 1) {
        nexus_err_t err = NEXUS_OK;
        if (type == NX_WAL_EVENT) {
            nx_event_msg_t ev;
            if (nx_event_msg_decode(data, dlen, &ev) != 0) {
                snprintf(why, why_size, "an event record does not decode");
                return NEXUS_ERR_STORE;
            }
            /*  Already stored (never in a log above its checkpoint, but a
                duplicate must not stop recovery).                         */
            if (ev.seq <= nx_store_last_seq(store))
                continue;
            err = nx_store_append(store, ev.seq, ev.ts, ev.topic, ev.topic_len, ev.source,
                                  ev.source_len, ev.payload, ev.payload_len);
            (*events)++;
        } else if (type == NX_WAL_PUT || type == NX_WAL_DEL) {
            int db;
            const uint8_t *key, *value;
            size_t klen, vlen;
            if (nx_wal_record_kv(data, dlen, &db, &key, &klen, &value, &vlen) != 0 ||
                db >= NX_DB__COUNT) {
                snprintf(why, why_size, "a change record does not decode");
                return NEXUS_ERR_STORE;
            }
            if (type == NX_WAL_PUT)
                err = nx_store_put(store, (nx_db_t)db, key, klen, value, vlen);
            else {
                err = nx_store_del(store, (nx_db_t)db, key, klen);
                if (err == NEXUS_ERR_NOT_FOUND)
                    err = NEXUS_OK;
            }
            (*changes)++;
        } else {
            snprintf(why, why_size, "a record of unknown type %d", type);
            return NEXUS_ERR_STORE;
        }
        if (err) {
            snprintf(why, why_size, "%s", nx_store_errmsg(store));
            return err;
        }
    }
    if (rc < 0) {
        snprintf(why, why_size, "a frame's records do not decode");
        return NEXUS_ERR_STORE;
    }
    return NEXUS_OK;
}

/*  Makes room for need bytes of changes that were acknowledged: grows the
    map or trims events (make_room) and, when that cannot, grows it past
    map_max. Returns NEXUS_OK, NEXUS_ERR_STORE_FULL when it went past
    map_max (room was made, but the store is full), or an error.           */
static nexus_err_t s_make_room(nx_store_t *store, uint64_t need)
{
    int action = 0;
    nexus_err_t err = nx_store_make_room(store, need, &action);
    if (action == 1)
        nx_info("store: grew the LMDB map");
    else if (action == 2)
        nx_info("store: trimmed the oldest events to make room (map at map_max)");
    if (err != NEXUS_ERR_STORE_FULL)
        return err;
    nx_warn("store: %s", nx_store_errmsg(store));
    /*  need may be over what map_max allows at all: still trim what the
        retention-free rule allows (make_room for nothing at map_max trims
        the oldest events down to half the map), then go past map_max.     */
    nx_store_make_room(store, 0, &action);
    if (action == 2)
        nx_info("store: trimmed the oldest events to make room (map at map_max)");
    err = nx_store_overdraft(store, need);
    return err ? err : NEXUS_ERR_STORE_FULL;
}

/*  ---- Recovery ------------------------------------------------------------- */

/*  Removes the segment files of a log no checkpoint refers to.             */
static void s_remove_log(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".log") == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
}

/*  Copies wal_dir's segments holding [from, to] (segments of seg bytes) to
    wal_dir.damaged-FROM, before the log goes on over them: what recovery
    leaves out stays there for whoever must find out what it was. The copy
    is made in a .tmp directory and renamed when whole and flushed, so the
    name is only ever on a complete copy; one made by an earlier try at
    starting is kept as it is, a half one made again. Returns 0 with the
    directory in kept, or -1 (errno set).                                  */
static int s_keep_damaged(const char *wal_dir, uint64_t seg, uint64_t from, uint64_t to, char *kept,
                          size_t kept_size)
{
    snprintf(kept, kept_size, "%s.damaged-%016" PRIx64, wal_dir, from);
    if (access(kept, F_OK) == 0)
        return 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", kept);
    DIR *old = opendir(tmp);
    for (struct dirent *e; old && (e = readdir(old));) {
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        if (e->d_name[0] != '.')
            unlink(path);
    }
    if (old)
        closedir(old);
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    char *buf = malloc(1 << 20);
    if (!buf)
        return -1;
    int result = 0;
    for (uint64_t base = from - from % seg; result == 0 && base <= to; base += seg) {
        char src[4096], dst[4500];
        snprintf(src, sizeof src, "%s/%016" PRIx64 ".log", wal_dir, base);
        snprintf(dst, sizeof dst, "%s/%016" PRIx64 ".log", tmp, base);
        int in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            if (errno == ENOENT)
                continue;
            result = -1;
            break;
        }
        int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        ssize_t n = out < 0 ? -1 : 0;
        while (out >= 0 && (n = read(in, buf, 1 << 20)) > 0)
            if (write(out, buf, (size_t)n) != n) {
                n = -1;
                break;
            }
        if (n < 0 || out < 0 || fsync(out) != 0)
            result = -1;
        int saved = errno;
        close(in);
        if (out >= 0)
            close(out);
        errno = saved;
    }
    free(buf);
    if (result == 0 && (nx_disk_sync_dir(tmp) || rename(tmp, kept)))
        result = -1;
    if (result == 0) {
        /*  The rename is durable once the directory holding it is.        */
        char parent[4200];
        snprintf(parent, sizeof parent, "%s", wal_dir);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = 0;
        else
            snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
        nx_disk_sync_dir(parent);
    }
    return result;
}

int nx_checkpointer_recover(nx_store_t *store, const char *wal_dir, uint64_t new_segment_size,
                            nx_recovery_t *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    uint64_t from = 0, crc = 0, seg = new_segment_size;
    out->had_log = s_meta_get(store, NX_META_WAL_LSN, &from);
    s_meta_get(store, NX_META_WAL_CRC, &crc);
    s_meta_get(store, NX_META_WAL_SEGMENT, &seg);
    if (seg < NX_WAL_SEGMENT_MIN)
        seg = new_segment_size;
    if (!out->had_log) {
        /*  A new store, or one of a version without the log: a log in the
            directory is not this store's (its data.mdb was replaced).     */
        s_remove_log(wal_dir);
        from = crc = 0;
    }
    out->from = out->end = from;
    out->end_crc = (uint32_t)crc;
    if (out->had_log) {
        /*  The segment the checkpoint points into (a position in a
            segment's last bytes means the next one's start).              */
        uint64_t at = from;
        if (seg - at % seg < NX_WAL_FRAME_HEAD)
            at += seg - at % seg;
        char path[4096];
        snprintf(path, sizeof path, "%s/%016" PRIx64 ".log", wal_dir, at - at % seg);
        out->log_missing = access(path, F_OK) != 0 && errno == ENOENT;
    }
    nx_wal_reader_t *rd = out->had_log ? nx_wal_reader_new(wal_dir, seg) : NULL;
    if (out->had_log && !rd) {
        snprintf(err, err_size, "recovery: out of memory");
        return -1;
    }
    /*  Pass 1: where the valid log ends, at a turn's end.                  */
    uint64_t at = from, frames = 0, turn_frames = 0;
    uint32_t prev = (uint32_t)crc;
    nx_wal_frame_t f;
    bool torn = false;
    while (rd) {
        int rc = nx_wal_reader_read(rd, at, prev, true, &f, &torn);
        if (rc < 0) {
            snprintf(err, err_size, "recovery: cannot read the log in %s at %" PRIu64 ": %s",
                     wal_dir, at, strerror(errno));
            nx_wal_reader_destroy(&rd);
            return -1;
        }
        if (rc == 0)
            break;
        frames++;
        at = f.next;
        prev = f.crc;
        if (!(f.flags & NX_WAL_F_MORE)) {
            out->end = at;
            out->end_crc = prev;
            turn_frames = frames;
        }
    }
    out->torn = torn || at != out->end;
    out->cut = at - out->end;
    out->frames = turn_frames;
    if (torn) {
        int rc = nx_wal_reader_beyond(rd, at, &out->damaged_from, &out->damaged_to,
                                      &out->damaged_frames);
        if (rc < 0) {
            snprintf(err, err_size, "recovery: cannot read the log in %s past %" PRIu64 ": %s",
                     wal_dir, at, strerror(errno));
            nx_wal_reader_destroy(&rd);
            return -1;
        }
        out->damaged_at = at;
        if (out->damaged_frames &&
            s_keep_damaged(wal_dir, seg, at, out->damaged_to, out->kept, sizeof out->kept)) {
            nx_error("recovery: cannot keep a copy of the damaged log in %s: %s", out->kept,
                     strerror(errno));
            out->kept[0] = 0;
        }
    }

    /*  The checkpoint moves to where the log goes on; a new segment size
        starts at a multiple of it (nothing of the old log is read again). */
    out->start = out->end;
    if (seg != new_segment_size && out->start % new_segment_size)
        out->start += new_segment_size - out->start % new_segment_size;

    /*  Pass 2: apply [from, end) and commit, in one batch. A full map:
        make room (past map_max if it must: these changes may have been
        acknowledged) and try again.                                        */
    char why[256] = "";
    for (int attempt = 0;; attempt++) {
        out->events = out->changes = 0;
        nexus_err_t e = NEXUS_OK;
        at = from;
        prev = (uint32_t)crc;
        while (rd && at < out->end && e == NEXUS_OK) {
            int rc = nx_wal_reader_read(rd, at, prev, false, &f, NULL);
            if (rc <= 0) {
                snprintf(why, sizeof why, "the log cannot be read again at %" PRIu64, at);
                e = NEXUS_ERR_STORE;
                break;
            }
            e = s_apply_body(store, f.body, f.len, &out->events, &out->changes, why, sizeof why);
            at = f.next;
            prev = f.crc;
        }
        if (!e)
            e = s_meta_put(store, NX_META_WAL_LSN, out->start);
        if (!e)
            e = s_meta_put(store, NX_META_WAL_CRC, out->end_crc);
        if (!e)
            e = s_meta_put(store, NX_META_WAL_SEGMENT, new_segment_size);
        if (!e)
            e = nx_store_commit(store, nx_now_us());
        if (e && !why[0])
            snprintf(why, sizeof why, "%s", nx_store_errmsg(store));
        if (e == NEXUS_OK)
            break;
        nx_store_abort(store);
        if (e != NEXUS_ERR_STORE_FULL || attempt == 3) {
            snprintf(err, err_size,
                     "recovery: cannot apply the log (%" PRIu64 "..%" PRIu64 ") and commit: %s",
                     from, out->end, why);
            nx_wal_reader_destroy(&rd);
            return -1;
        }
        e = s_make_room(store, (out->end - from) * 4 + S_ROOM_MIN);
        if (e == NEXUS_ERR_STORE_FULL)
            nx_warn("recovery: the store is past map_max to keep the changes the log holds");
        else if (e) {
            snprintf(err, err_size, "recovery: cannot make room: %s", nx_store_errmsg(store));
            nx_wal_reader_destroy(&rd);
            return -1;
        }
        why[0] = 0;
    }
    nx_wal_reader_destroy(&rd);
    return 0;
}

/*  ---- The actor ------------------------------------------------------------ */

static void s_notify(s_state_t *st, const char *what)
{
    zmq_send(zsock_resolve(st->pipe), what, 1, ZMQ_DONTWAIT);
}

/*  The batch is gone (full map, failed commit): start again at the last
    commit.                                                                  */
static void s_rewind(s_state_t *st)
{
    nx_store_abort(st->store);
    st->applied = st->committed;
    st->applied_crc = st->committed_crc;
    st->since = 0;
}

static void s_full(s_state_t *st, uint64_t need)
{
    nx_checkpointer_t *self = st->ck;
    nexus_err_t e = s_make_room(st->store, need);
    if (e == NEXUS_ERR_STORE_FULL) {
        if (!__atomic_exchange_n(&self->full, 1, __ATOMIC_SEQ_CST))
            s_problem(self, "the store is full (map_max reached, and trimming events does "
                            "not make room): writes are refused until sessions or claims are "
                            "removed or map_max is raised");
        s_notify(st, "P");
    } else if (e == NEXUS_ERR_BUSY)
        st->stuck_until = nx_mono_us() + 10000;
    else if (e) {
        s_problem(self, "cannot make room in the store: %s", nx_store_errmsg(st->store));
        s_notify(st, "P");
        st->stuck_until = nx_mono_us() + S_RETRY_US;
    }
}

/*  Applies the flushed log up to target (at most a slice of it).          */
static void s_apply(s_state_t *st, uint64_t target)
{
    nx_checkpointer_t *self = st->ck;
    uint64_t start = st->applied, dummy = 0;
    char why[256];
    /*  A transaction holds at most cfg.bytes of log (and one record): the
        room a full map must make is bounded by it (s_full), not by how
        far behind the store is.                                          */
    while (st->applied < target && st->applied - start < S_SLICE_BYTES &&
           st->applied - st->committed < self->cfg.bytes) {
        nx_wal_frame_t f;
        int rc = nx_wal_reader_read(st->rd, st->applied, st->applied_crc, false, &f, NULL);
        if (rc <= 0) {
            s_problem(self, "cannot read the log at %" PRIu64 " (%s)", st->applied,
                      rc < 0 ? strerror(errno) : "no frame there");
            s_notify(st, "P");
            st->stuck_until = nx_mono_us() + S_RETRY_US;
            return;
        }
        nexus_err_t e = s_apply_body(st->store, f.body, f.len, &dummy, &dummy, why, sizeof why);
        if (e == NEXUS_ERR_STORE_FULL) {
            uint64_t need = (f.next - st->committed) * 4 + self->cfg.room;
            s_rewind(st);
            s_full(st, need);
            return;
        }
        if (e) {
            s_rewind(st);
            s_problem(self, "cannot apply the log at %" PRIu64 ": %s", f.lsn, why);
            s_notify(st, "P");
            st->stuck_until = nx_mono_us() + S_RETRY_US;
            return;
        }
        if (!st->since)
            st->since = nx_mono_us();
        st->applied = f.next;
        st->applied_crc = f.crc;
    }
}

static void s_commit(s_state_t *st)
{
    nx_checkpointer_t *self = st->ck;
    uint64_t seg = nx_wal_segment_size(self->cfg.wal);
    nexus_err_t e = s_meta_put(st->store, NX_META_WAL_LSN, st->applied);
    if (!e)
        e = s_meta_put(st->store, NX_META_WAL_CRC, st->applied_crc);
    if (!e)
        e = s_meta_put(st->store, NX_META_WAL_SEGMENT, seg);
    if (!e)
        e = nx_store_commit(st->store, nx_now_us());
    if (e == NEXUS_ERR_STORE_FULL) {
        uint64_t need = (st->applied - st->committed) * 4 + self->cfg.room;
        s_rewind(st);
        s_full(st, need);
        return;
    }
    if (e) {
        s_rewind(st);
        s_problem(self, "a commit failed: %s", nx_store_errmsg(st->store));
        s_notify(st, "P");
        st->stuck_until = nx_mono_us() + S_RETRY_US;
        return;
    }
    st->committed = st->applied;
    st->committed_crc = st->applied_crc;
    st->since = 0;
    __atomic_store_n(&self->committed, st->committed, __ATOMIC_SEQ_CST);
    s_notify(st, "K");
    nx_wal_recycle(self->cfg.wal, st->committed);
}

/*  Once a second, between commits: retention, make_room, spare segments,
    and whether a full store has room again.                               */
static void s_housekeeping(s_state_t *st)
{
    nx_checkpointer_t *self = st->ck;
    int64_t trimmed = nx_store_trim(st->store, nx_now_us(), self->cfg.trim_batch);
    if (trimmed > 0)
        nx_debug("retention trimmed %" PRId64 " events", trimmed);
    int action = 0;
    nexus_err_t e = nx_store_make_room(st->store, self->cfg.room, &action);
    if (e == NEXUS_OK && action)
        nx_info("store: %s", action == 1 ? "grew the LMDB map"
                                         : "trimmed the oldest events to make room (map at "
                                           "map_max)");
    if (__atomic_load_n(&self->full, __ATOMIC_SEQ_CST) &&
        !nx_store_full(st->store, self->cfg.room)) {
        __atomic_store_n(&self->full, 0, __ATOMIC_SEQ_CST);
        nx_warn("checkpointer: the store has room again: writes are accepted");
    } else if (e == NEXUS_ERR_STORE_FULL &&
               !__atomic_exchange_n(&self->full, 1, __ATOMIC_SEQ_CST)) {
        s_problem(self, "the store is full (map_max reached, and trimming events does not make "
                        "room): writes are refused until sessions or claims are removed or "
                        "map_max is raised");
        s_notify(st, "P");
    }
    if (nx_wal_prepare(self->cfg.wal))
        nx_debug("checkpointer: cannot prepare a log segment: %s", strerror(errno));
}

/*  A slice or more of flushed log is not applied yet: apply now.          */
static bool s_slice_behind(nx_checkpointer_t *self, const s_state_t *st)
{
    return st->applied + NX_CKPT_SLICE_BYTES <= nx_wal_durable(self->cfg.wal);
}

static void s_actor(zsock_t *pipe, void *arg)
{
    nx_checkpointer_t *self = arg;
    s_state_t st = {
        .ck = self,
        .pipe = pipe,
        .store = self->cfg.store,
        .applied = self->start_lsn,
        .applied_crc = self->start_crc,
        .committed = self->start_lsn,
        .committed_crc = self->start_crc,
        .next_house = nx_mono_us() + S_HOUSE_US,
    };
    st.rd = nx_wal_reader_new(self->wal_dir, nx_wal_segment_size(self->cfg.wal));
    zsock_signal(pipe, 0);
    void *handle = zsock_resolve(pipe);
    /*  A stop waits for this at most ~10 s of failures; then what is not
        committed is left to the log (and the next start's recovery).      */
    int stop_tries = 0;
    while (st.rd) {
        uint64_t now = nx_mono_us();
        bool stuck = st.stuck_until && now < st.stuck_until;
        if (!stuck)
            st.stuck_until = 0;
        uint64_t durable = nx_wal_durable(self->cfg.wal);
        if (!stuck && st.applied < durable)
            s_apply(&st, durable);
        uint64_t req = __atomic_load_n(&self->request, __ATOMIC_SEQ_CST);
        now = nx_mono_us();
        stuck = st.stuck_until && now < st.stuck_until;
        bool at_end = st.applied >= durable;
        if (!stuck && st.applied > st.committed &&
            (st.stopping || (req > st.committed && at_end) ||
             now - st.since >= self->cfg.interval_us ||
             st.applied - st.committed >= self->cfg.bytes))
            s_commit(&st);
        now = nx_mono_us();
        if (now >= st.next_house && st.applied == st.committed) {
            s_housekeeping(&st);
            st.next_house = nx_mono_us() + S_HOUSE_US;
        }
        if (st.stopping) {
            if (st.committed >= nx_wal_durable(self->cfg.wal))
                break;
            if (st.stuck_until && ++stop_tries > 10) {
                nx_error("checkpointer: stopping with the log applied up to %" PRIu64
                         " only; the next start replays the rest",
                         st.committed);
                break;
            }
        }
        /*  How long to sleep: until housekeeping or the commit is due, at
            most S_CKPT_IDLE_US; not at all a slice behind.                */
        now = nx_mono_us();
        int64_t timeout = S_CKPT_IDLE_US;
        /*  Housekeeping waits for a commit that leaves nothing applied
            uncommitted: until then its time passed is no reason to wake
            (this spun the thread from that time to the next commit, up to
            a second, under a steady load).                                */
        if (st.applied == st.committed)
            timeout = (int64_t)(st.next_house > now ? st.next_house - now : 0);
        if (st.since && st.applied > st.committed) {
            uint64_t due = st.since + self->cfg.interval_us;
            if ((int64_t)(due > now ? due - now : 0) < timeout)
                timeout = (int64_t)(due > now ? due - now : 0);
        }
        if (timeout > S_CKPT_IDLE_US)
            timeout = S_CKPT_IDLE_US;
        /*  Behind by a slice or less, it waits for the loop's wake (a
            slice flushed) or its own timer: following every flush, a few
            frames at a time, cost two system calls a frame and kept a
            core busy under a steady load.                                 */
        if (st.stuck_until)
            timeout = (int64_t)(st.stuck_until > now ? st.stuck_until - now : 0);
        else if (s_slice_behind(self, &st) ||
                 (st.stopping && st.applied < nx_wal_durable(self->cfg.wal)))
            timeout = 0;
        if (timeout > 0) {
            __atomic_store_n(&self->idle, 1, __ATOMIC_SEQ_CST);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (!st.stuck_until &&
                (s_slice_behind(self, &st) ||
                 __atomic_load_n(&self->request, __ATOMIC_SEQ_CST) > st.committed))
                timeout = 0;
            zmq_pollitem_t item = {handle, 0, ZMQ_POLLIN, 0};
            if (timeout > 0)
                zmq_poll(&item, 1, (long)(timeout / 1000) + 1);
            __atomic_store_n(&self->idle, 0, __ATOMIC_SEQ_CST);
        }
        for (int i = 0; i < 1000; i++) {
            zmsg_t *msg = NULL;
            if (!(zsock_events(pipe) & ZMQ_POLLIN) || !(msg = zmsg_recv(pipe)))
                break;
            char *cmd = zmsg_popstr(msg);
            if (cmd && strcmp(cmd, "$TERM") == 0)
                st.stopping = true;
            zstr_free(&cmd);
            zmsg_destroy(&msg);
        }
    }
    nx_store_abort(st.store);
    nx_wal_reader_destroy(&st.rd);
}

/*  ---- The loop's side ------------------------------------------------------ */

nx_checkpointer_t *nx_checkpointer_new(const nx_checkpointer_config_t *cfg, uint64_t start_lsn,
                                       uint32_t start_crc)
{
    nx_checkpointer_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->wal_dir = strdup(cfg->wal_dir);
    self->cfg.wal_dir = self->wal_dir;
    if (self->cfg.interval_us == 0)
        self->cfg.interval_us = 1;
    if (self->cfg.bytes == 0)
        self->cfg.bytes = 1;
    self->start_lsn = start_lsn;
    self->start_crc = start_crc;
    self->committed = start_lsn;
    pthread_mutex_init(&self->lock, NULL);
    if (self->wal_dir)
        self->actor = zactor_new(s_actor, self);
    if (!self->actor) {
        pthread_mutex_destroy(&self->lock);
        free(self->wal_dir);
        free(self);
        return NULL;
    }
    zsock_set_sndtimeo(zactor_sock(self->actor), 0);
    return self;
}

void nx_checkpointer_destroy(nx_checkpointer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_checkpointer_t *self = *self_p;
    /*  $TERM: the actor applies and commits what is flushed, then ends;
        zactor_destroy waits for it.                                        */
    zsock_set_sndtimeo(zactor_sock(self->actor), -1);
    zactor_destroy(&self->actor);
    pthread_mutex_destroy(&self->lock);
    free(self->wal_dir);
    free(self);
    *self_p = NULL;
}

void nx_checkpointer_wake(nx_checkpointer_t *self)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&self->idle, 0, __ATOMIC_SEQ_CST))
        zmq_send(zsock_resolve(zactor_sock(self->actor)), "W", 1, ZMQ_DONTWAIT);
}

void nx_checkpointer_request(nx_checkpointer_t *self, uint64_t lsn)
{
    uint64_t cur = __atomic_load_n(&self->request, __ATOMIC_SEQ_CST);
    while (lsn > cur && !__atomic_compare_exchange_n(&self->request, &cur, lsn, false,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
    nx_checkpointer_wake(self);
}

uint64_t nx_checkpointer_committed(nx_checkpointer_t *self)
{
    return __atomic_load_n(&self->committed, __ATOMIC_SEQ_CST);
}

zsock_t *nx_checkpointer_sock(nx_checkpointer_t *self)
{
    return zactor_sock(self->actor);
}

bool nx_checkpointer_problem(nx_checkpointer_t *self, char *buf, size_t size)
{
    if (__atomic_load_n(&self->problem_seq, __ATOMIC_ACQUIRE) == self->problem_seen)
        return false;
    bool fresh = false;
    pthread_mutex_lock(&self->lock);
    if (self->problem_seq != self->problem_seen) {
        self->problem_seen = self->problem_seq;
        snprintf(buf, size, "%s", self->problem);
        fresh = true;
    }
    pthread_mutex_unlock(&self->lock);
    return fresh;
}

bool nx_checkpointer_drain(nx_checkpointer_t *self, char *buf, size_t size)
{
    void *h = zsock_resolve(zactor_sock(self->actor));
    char b[8];
    for (int i = 0; i < 10000 && zmq_recv(h, b, sizeof b, ZMQ_DONTWAIT) >= 0; i++)
        ;
    bool fresh = false;
    pthread_mutex_lock(&self->lock);
    if (self->problem_seq != self->problem_seen) {
        self->problem_seen = self->problem_seq;
        snprintf(buf, size, "%s", self->problem);
        fresh = true;
    }
    pthread_mutex_unlock(&self->lock);
    return fresh;
}

int nx_checkpointer_sync(nx_checkpointer_t *self, uint64_t lsn, int timeout_ms)
{
    nx_checkpointer_request(self, lsn);
    uint64_t deadline = nx_mono_us() + (uint64_t)timeout_ms * 1000;
    void *h = zsock_resolve(zactor_sock(self->actor));
    while (nx_checkpointer_committed(self) < lsn) {
        uint64_t now = nx_mono_us();
        if (now >= deadline)
            return -1;
        zmq_pollitem_t item = {h, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, (long)((deadline - now) / 1000) + 1);
        char b[8];
        while (zmq_recv(h, b, sizeof b, ZMQ_DONTWAIT) >= 0)
            ;
    }
    return 0;
}

bool nx_checkpointer_full(nx_checkpointer_t *self)
{
    return __atomic_load_n(&self->full, __ATOMIC_RELAXED) != 0;
}
