/*  =========================================================================
    nx_store - the broker's LMDB store. nx_store.h is the contract.

    Layout: one LMDB environment (data.mdb, lock.mdb) in cfg->path with five
    named databases: "events" (seq as u64 big-endian -> nx_codec record),
    "meta", "sessions" and "claims".

    Counters: first/last seq, last ts, count and bytes live in memory so that
    stats cost nothing. A batch updates the live copy and keeps the copy of
    the last commit aside, so an aborted batch (or a full map) puts them back
    exactly. The counters that must survive a restart (last_seq, last_ts,
    bytes) go to "meta" once per commit, in the transaction whose events
    they count, so they can never disagree with the events on disk.

    Environment flags: MDB_NOSYNC only when sync is off (LMDB's default
    commit flushes data, then meta page, before it returns). MDB_NOTLS is
    set even though one thread owns the store: without it LMDB allows a
    thread only one read transaction at a time, and the broker may have a
    history reader open while it calls nx_store_get / nx_store_foreach or
    nx_store_reader_new again (MDB_BAD_RSLOT otherwise).

    make_room measures the map by walking LMDB's free list (see
    s_map_used), so the keyed databases and LMDB's own overhead count too,
    not only the event bytes we keep in 'bytes'.
    =========================================================================
*/

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "nx_store.h"

#define S_MAXDBS             8     /* five used; room for a few more         */
#define S_TRIM_BATCH_DEFAULT 10000 /* trim_batch 0 in the config means this   */
#define S_ROOM_TRIM_BATCH    10000 /* events per transaction in make_room     */
#define S_ERRMSG_MAX         256   /* bytes of errmsg                         */
#define S_SPARE_PAGES        32    /* see s_spare                             */

/*  Reserved keys of NX_DB_META. Values are u64 big-endian.                 */
#define S_META_LAST_SEQ "last_seq"
#define S_META_LAST_TS  "last_ts"
#define S_META_BYTES    "bytes"
/*  The store's identity: NX_STORE_ID_LEN lowercase hex characters, made
    once when the store is created and never changed (nx_store.h).          */
#define S_META_STORE_ID "store_id"

static const char *s_db_names[NX_DB__COUNT] = {
    [NX_DB_META] = "meta",
    [NX_DB_SESSIONS] = "sessions",
    [NX_DB_CLAIMS] = "claims",
};

/*  The counters a batch changes; copied as a whole to undo a batch.        */
typedef struct {
    uint64_t first_seq; /* oldest stored event, 0 when empty                */
    uint64_t last_seq;  /* highest seq appended (survives trimming)         */
    uint64_t last_ts;   /* ts of last_seq                                   */
    uint64_t count;     /* events stored                                    */
    uint64_t bytes;     /* sum of stored record sizes                       */
    uint64_t trimmed;   /* events deleted by trimming since open            */
} s_counters_t;

struct _nx_store_t {
    MDB_env *env;                 /* the environment                        */
    MDB_dbi events;               /* seq -> record                          */
    MDB_dbi dbs[NX_DB__COUNT];    /* the keyed databases, by nx_db_t        */
    MDB_txn *txn;                 /* the open batch, NULL when none         */
    MDB_cursor *append_cur;       /* events cursor of txn, for MDB_APPEND;
                                     LMDB frees it when txn ends            */
    s_counters_t cur;             /* live counters, open batch included     */
    s_counters_t saved;           /* counters as of the last commit         */
    nx_store_config_t cfg;        /* copy of the config; path points below  */
    char *path;                   /* our copy of cfg->path                  */
    char *data_file;              /* path of data.mdb, for disk_bytes       */
    int lock_fd;                  /* nexusd.lock, flock'ed while open; -1   */
    uint64_t psize;               /* LMDB page size                         */
    uint64_t map_size;            /* current map size                       */
    uint64_t grows;               /* times make_room grew the map           */
    uint64_t commits;             /* write transactions committed           */
    size_t max_key;               /* LMDB's key size limit                  */
    int readers;                  /* live readers (atomic: other threads)   */
    pthread_rwlock_t resize;      /* readers hold it shared; resizing the map
                                     holds it exclusive (LMDB forbids a resize
                                     while any transaction is open)          */
    char errmsg[S_ERRMSG_MAX];    /* text of the last error                 */
    char id[NX_STORE_ID_LEN + 1]; /* the store's identity (constant)     */
    bool id_created;              /* this open made the id: a new store    */
    pthread_t txn_thread;         /* the thread that opened txn             */
    pthread_mutex_t stats_lock;   /* guards published                       */
    nx_store_stats_t published;   /* counters as of the last commit, for
                                     other threads (nx_store_stats)         */
};

/*  Where a reader is, so that next knows whether to step first.            */
typedef enum {
    S_RD_START, /* no seek yet: behaves as seek (0, ascending)               */
    S_RD_AT,    /* the cursor is on the event next returns                   */
    S_RD_MOVE,  /* the cursor is on the event returned last: step first      */
    S_RD_END,   /* nothing more                                              */
    S_RD_ERROR  /* seek failed: next returns -1                              */
} s_rd_state_t;

struct _nx_store_reader_t {
    nx_store_t *store;  /* owner, for errmsg and the live-reader count      */
    MDB_txn *txn;       /* read-only snapshot                               */
    MDB_cursor *cursor; /* over events                                      */
    s_rd_state_t state; /* see s_rd_state_t                                 */
    bool descending;    /* direction given to the last seek                 */
};

/*  ---- Errors ------------------------------------------------------------*/

static nexus_err_t s_fail(nx_store_t *self, nexus_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static nexus_err_t s_fail(nx_store_t *self, nexus_err_t err, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(self->errmsg, sizeof self->errmsg, fmt, args);
    va_end(args);
    return err;
}

/*  Translates an LMDB code: a full map or transaction is the one failure
    the broker can act on (make room, retry), everything else is an error.  */
static nexus_err_t s_mdb_fail(nx_store_t *self, const char *what, int rc)
{
    nexus_err_t err =
        (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) ? NEXUS_ERR_STORE_FULL : NEXUS_ERR_STORE;
    return s_fail(self, err, "%s: %s", what, mdb_strerror(rc));
}

/*  ---- Batches -----------------------------------------------------------*/

static int s_batch_begin(nx_store_t *self)
{
    if (self->txn)
        return 0;
    int rc = mdb_txn_begin(self->env, NULL, 0, &self->txn);
    if (rc)
        self->txn = NULL;
    self->txn_thread = pthread_self();
    self->saved = self->cur;
    return rc;
}

/*  Drops the open batch and every counter change it made.                  */
static void s_batch_abort(nx_store_t *self)
{
    if (self->txn)
        mdb_txn_abort(self->txn);
    self->txn = NULL;
    self->append_cur = NULL;
    self->cur = self->saved;
}

/*  A write failed. LMDB marks the transaction as failed after most errors,
    so no later write of the batch could succeed: the whole batch goes.     */
static nexus_err_t s_batch_fail(nx_store_t *self, const char *what, int rc)
{
    s_batch_abort(self);
    return s_mdb_fail(self, what, rc);
}

static int s_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t value)
{
    uint8_t buf[8];
    nx_put_u64(buf, value);
    MDB_val k = {strlen(key), (void *)key};
    MDB_val v = {sizeof buf, buf};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/*  Reads a u64 meta value; leaves *value alone when absent.                */
static int s_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *value)
{
    MDB_val k = {strlen(key), (void *)key};
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    *value = nx_get_u64(v.mv_data);
    return 0;
}

/*  Writes the persistent counters when they changed in this batch (or
    always with force, which make_room uses to get a dirty transaction).    */
static int s_meta_write(nx_store_t *self, bool force)
{
    MDB_dbi meta = self->dbs[NX_DB_META];
    int rc = 0;
    if (force || self->cur.last_seq != self->saved.last_seq)
        rc = s_put_u64(self->txn, meta, S_META_LAST_SEQ, self->cur.last_seq);
    if (!rc && (force || self->cur.last_ts != self->saved.last_ts))
        rc = s_put_u64(self->txn, meta, S_META_LAST_TS, self->cur.last_ts);
    if (!rc && (force || self->cur.bytes != self->saved.bytes))
        rc = s_put_u64(self->txn, meta, S_META_BYTES, self->cur.bytes);
    return rc;
}

/*  Copies the counters of the last commit where other threads read them
    (nx_store_stats): the live ones belong to the writing thread.          */
static void s_publish(nx_store_t *self)
{
    nx_store_stats_t st;
    memset(&st, 0, sizeof st);
    st.first_seq = self->saved.first_seq;
    st.last_seq = self->saved.last_seq;
    st.last_ts = self->saved.last_ts;
    st.count = self->saved.count;
    st.bytes = self->saved.bytes;
    st.map_size = self->map_size;
    st.trimmed = self->saved.trimmed;
    st.grows = self->grows;
    st.commits = self->commits;
    /*  The high-water mark: pages up to the last one touched. Free pages
        below it are not subtracted (that needs a walk of the free list,
        which make_room does).                                              */
    MDB_envinfo info;
    if (self->env && mdb_env_info(self->env, &info) == 0)
        st.map_used = ((uint64_t)info.me_last_pgno + 1) * self->psize;
    pthread_mutex_lock(&self->stats_lock);
    self->published = st;
    pthread_mutex_unlock(&self->stats_lock);
}

/*  Writes meta and commits the open batch. On failure the batch is gone and
    the counters are those of the last commit.                              */
static nexus_err_t s_batch_finish(nx_store_t *self, bool force_meta)
{
    int rc = s_meta_write(self, force_meta);
    if (rc)
        return s_batch_fail(self, "write meta", rc);
    self->append_cur = NULL;
    rc = mdb_txn_commit(self->txn);
    /*  mdb_txn_commit frees the transaction even when it fails.            */
    self->txn = NULL;
    if (rc) {
        self->cur = self->saved;
        return s_mdb_fail(self, "commit", rc);
    }
    self->saved = self->cur;
    self->commits++;
    s_publish(self);
    return NEXUS_OK;
}

/*  True when the oldest event (value v) is over a retention limit.         */
static bool s_over_limit(const nx_store_t *self, const MDB_val *v, uint64_t now_us)
{
    const nx_store_config_t *cfg = &self->cfg;
    if (cfg->retain_events && self->cur.count > cfg->retain_events)
        return true;
    if (cfg->retain_bytes && self->cur.bytes > cfg->retain_bytes)
        return true;
    if (cfg->retain_age_us && now_us > cfg->retain_age_us) {
        /*  A record that does not decode cannot be served anyway: age
            treats it as the oldest possible.                               */
        nx_record_t rec;
        uint64_t ts = nx_record_decode(v->mv_data, v->mv_size, &rec) == 0 ? rec.ts : 0;
        if (ts < now_us - cfg->retain_age_us)
            return true;
    }
    return false;
}

/*  Deletes up to max oldest events in the open batch: those over a
    retention limit, or any with retention false (make_room). Sets
    *deleted. Returns an LMDB code.                                         */
static int s_trim_txn(nx_store_t *self, uint64_t now_us, uint64_t max, bool retention,
                      uint64_t *deleted)
{
    *deleted = 0;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(self->txn, self->events, &cursor);
    if (rc)
        return rc;
    MDB_val k, v;
    while (*deleted < max && self->cur.count > 0) {
        /*  MDB_FIRST every time: cheap (one root-to-leaf walk) and avoids
            LMDB's special cursor state after a delete.                     */
        rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            /*  The counters were off; the database is the truth.          */
            self->cur.count = 0;
            self->cur.bytes = 0;
            rc = 0;
            break;
        }
        if (rc)
            break;
        if (retention && !s_over_limit(self, &v, now_us))
            break;
        size_t size = v.mv_size;
        rc = mdb_cursor_del(cursor, 0);
        if (rc)
            break;
        self->cur.count--;
        self->cur.bytes -= size < self->cur.bytes ? size : self->cur.bytes;
        self->cur.trimmed++;
        (*deleted)++;
    }
    if (!rc && *deleted > 0) {
        rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            self->cur.first_seq = 0;
            rc = 0;
        } else if (!rc && k.mv_size == 8)
            self->cur.first_seq = nx_get_u64(k.mv_data);
    }
    mdb_cursor_close(cursor);
    return rc;
}

/*  ---- Opening -----------------------------------------------------------*/

/*  mkdir -p. Returns 0 or an errno value.                                  */
static int s_mkdir_p(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return ENOMEM;
    int rc = 0;
    for (char *p = copy + 1; !rc; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0700) != 0 && errno != EEXIST)
            rc = errno;
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    return rc;
}

/*  Reads the store's identity, or makes one: a store written by a version
    without identities gets one at its first open, as a new store does.
    The id is 64 random bits from the kernel, as hex, so that two stores
    never share one by chance (a restored copy keeps it: it is in data.mdb).
    Returns an LMDB code (MDB_CORRUPTED for an id that is not hex).        */
static int s_load_id(nx_store_t *self, MDB_txn *txn)
{
    MDB_dbi meta = self->dbs[NX_DB_META];
    MDB_val k = {strlen(S_META_STORE_ID), (void *)S_META_STORE_ID};
    MDB_val v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == 0) {
        if (v.mv_size != NX_STORE_ID_LEN)
            return MDB_CORRUPTED;
        for (size_t i = 0; i < NX_STORE_ID_LEN; i++) {
            char ch = ((const char *)v.mv_data)[i];
            if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
                return MDB_CORRUPTED;
        }
        memcpy(self->id, v.mv_data, NX_STORE_ID_LEN);
        self->id[NX_STORE_ID_LEN] = 0;
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return rc;
    uint8_t bits[NX_STORE_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof bits) {
        ssize_t n = getrandom(bits + got, sizeof bits - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return errno ? errno : EIO;
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof bits; i++)
        snprintf(self->id + 2 * i, 3, "%02x", bits[i]);
    v.mv_size = NX_STORE_ID_LEN;
    v.mv_data = self->id;
    rc = mdb_put(txn, meta, &k, &v, 0);
    if (!rc)
        self->id_created = true;
    return rc;
}

/*  Opens the databases and loads the counters, in one write transaction so
    that a new store gets its databases created.                            */
static int s_load(nx_store_t *self)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc)
        return rc;
    rc = mdb_dbi_open(txn, "events", MDB_CREATE, &self->events);
    for (int i = 0; !rc && i < NX_DB__COUNT; i++)
        rc = mdb_dbi_open(txn, s_db_names[i], MDB_CREATE, &self->dbs[i]);

    s_counters_t *c = &self->cur;
    bool have_bytes = false;
    if (!rc)
        rc = s_get_u64(txn, self->dbs[NX_DB_META], S_META_LAST_SEQ, &c->last_seq);
    if (!rc)
        rc = s_get_u64(txn, self->dbs[NX_DB_META], S_META_LAST_TS, &c->last_ts);
    if (!rc) {
        uint64_t bytes = UINT64_MAX;
        rc = s_get_u64(txn, self->dbs[NX_DB_META], S_META_BYTES, &bytes);
        have_bytes = bytes != UINT64_MAX;
        c->bytes = have_bytes ? bytes : 0;
    }
    if (!rc)
        rc = s_load_id(self, txn);
    MDB_stat st;
    if (!rc)
        rc = mdb_stat(txn, self->events, &st);
    MDB_cursor *cursor = NULL;
    if (!rc)
        rc = mdb_cursor_open(txn, self->events, &cursor);
    if (!rc && st.ms_entries > 0) {
        c->count = st.ms_entries;
        MDB_val k, v;
        rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
        if (!rc && k.mv_size != 8)
            rc = MDB_CORRUPTED;
        if (!rc)
            c->first_seq = nx_get_u64(k.mv_data);
        if (!rc)
            rc = mdb_cursor_get(cursor, &k, &v, MDB_LAST);
        if (!rc && k.mv_size != 8)
            rc = MDB_CORRUPTED;
        /*  Meta is written with the events, so this only matters for a
            store whose meta was lost: the events then win.                 */
        if (!rc && nx_get_u64(k.mv_data) > c->last_seq) {
            nx_record_t rec;
            c->last_seq = nx_get_u64(k.mv_data);
            if (nx_record_decode(v.mv_data, v.mv_size, &rec) == 0)
                c->last_ts = rec.ts;
        }
        /*  Same for a missing byte count: recount once.                   */
        if (!rc && !have_bytes) {
            c->bytes = 0;
            for (rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0;
                 rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT))
                c->bytes += v.mv_size;
            if (rc == MDB_NOTFOUND)
                rc = 0;
        }
    }
    if (cursor)
        mdb_cursor_close(cursor);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    self->saved = self->cur;
    rc = mdb_txn_commit(txn);
    /*  A new identity is flushed at once (under sync=full), so that the id
        a client was given is the one the store keeps after a power cut.    */
    if (!rc && self->id_created && self->cfg.sync)
        rc = mdb_env_sync(self->env, 1);
    return rc;
}

/*  One broker per data directory. LMDB itself lets several processes
    share an environment, but each broker keeps seqs, fencing tokens,
    leases and the forward log in its own memory: a second one on the same
    directory would hand out the same seqs and grant claims the first one
    holds. An flock on a file of our own (not LMDB's lock.mdb, whose fcntl
    locks LMDB manages) is released by the kernel when the process dies,
    so a crash never leaves the directory locked. The file holds the
    holder's pid, only to name it in the error.                              */
static nexus_err_t s_lock_dir(nx_store_t *self, char *err_buf, size_t err_size)
{
    struct stat sb;
    if (stat(self->path, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        snprintf(err_buf, err_size, "store: data_dir %s is not a directory", self->path);
        return NEXUS_ERR_STORE;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/nexusd.lock", self->path) >= (int)sizeof path) {
        snprintf(err_buf, err_size, "store: data_dir %s: path too long", self->path);
        return NEXUS_ERR_STORE;
    }
    self->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0) {
        snprintf(err_buf, err_size, "store: cannot open %s: %s", path, strerror(errno));
        return NEXUS_ERR_STORE;
    }
    if (flock(self->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            snprintf(err_buf, err_size, "store: cannot lock %s: %s", path, strerror(e));
            return NEXUS_ERR_STORE;
        }
        char pid[32] = "";
        ssize_t n = pread(self->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        snprintf(err_buf, err_size,
                 "store: data_dir %s is in use by another nexusd (pid %s); one broker per "
                 "data_dir",
                 self->path, pid[0] ? pid : "unknown");
        return NEXUS_ERR_BUSY;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    /*  The pid only improves a message; the lock is what counts.          */
    bool written =
        ftruncate(self->lock_fd, 0) == 0 && pwrite(self->lock_fd, pid, (size_t)len, 0) == len;
    (void)written;
    return NEXUS_OK;
}

nx_store_t *nx_store_new(const nx_store_config_t *cfg, nexus_err_t *err, char *err_buf,
                         size_t err_size)
{
    nexus_err_t dummy_err;
    char dummy_buf[1];
    if (!err)
        err = &dummy_err;
    if (!err_buf || err_size == 0) {
        err_buf = dummy_buf;
        err_size = sizeof dummy_buf;
    }
    if (!cfg || !cfg->path || !*cfg->path || cfg->map_size == 0) {
        *err = NEXUS_ERR_INVALID;
        snprintf(err_buf, err_size, "store: path and map_size are required");
        return NULL;
    }
    nx_store_t *self = calloc(1, sizeof *self);
    if (self) {
        pthread_rwlock_init(&self->resize, NULL);
        pthread_mutex_init(&self->stats_lock, NULL);
        self->lock_fd = -1;
    }
    if (!self) {
        *err = NEXUS_ERR_NOMEM;
        snprintf(err_buf, err_size, "store: out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->path = strdup(cfg->path);
    if (self->path && asprintf(&self->data_file, "%s/data.mdb", cfg->path) < 0)
        self->data_file = NULL;
    if (!self->path || !self->data_file) {
        nx_store_destroy(&self);
        *err = NEXUS_ERR_NOMEM;
        snprintf(err_buf, err_size, "store: out of memory");
        return NULL;
    }
    self->cfg.path = self->path;
    if (self->cfg.map_max < self->cfg.map_size)
        self->cfg.map_max = self->cfg.map_size;

    *err = NEXUS_ERR_STORE;
    int rc = s_mkdir_p(self->path);
    if (rc) {
        snprintf(err_buf, err_size, "store: mkdir %s: %s", self->path, strerror(rc));
        nx_store_destroy(&self);
        return NULL;
    }
    if ((*err = s_lock_dir(self, err_buf, err_size))) {
        nx_store_destroy(&self);
        return NULL;
    }
    /*  A store that grew keeps its size over a restart: LMDB takes the size
        saved in the file unless we set one, so set ours only for a new file
        and clamp an old one below.                                         */
    struct stat sb;
    bool existed = stat(self->data_file, &sb) == 0 && sb.st_size > 0;
    const char *what = "mdb_env_create";
    rc = mdb_env_create(&self->env);
    if (rc)
        self->env = NULL;
    if (!rc) {
        what = "mdb_env_set_maxdbs";
        rc = mdb_env_set_maxdbs(self->env, S_MAXDBS);
    }
    if (!rc && !existed) {
        what = "mdb_env_set_mapsize";
        rc = mdb_env_set_mapsize(self->env, self->cfg.map_size);
    }
    if (!rc) {
        what = "mdb_env_open";
        /*  sync=full: LMDB's own durable commit (data flushed, then the
            meta page): the write-ahead log is recycled behind a commit, so
            a commit must be on disk when it returns. It runs on the
            checkpointer's thread, off the path of any reply.              */
        unsigned int flags = MDB_NOTLS | (self->cfg.sync ? 0 : MDB_NOSYNC);
        rc = mdb_env_open(self->env, self->path, flags, 0600);
    }
    MDB_envinfo info;
    if (!rc) {
        what = "mdb_env_info";
        rc = mdb_env_info(self->env, &info);
    }
    if (!rc && existed) {
        uint64_t size = info.me_mapsize;
        if (size < self->cfg.map_size)
            size = self->cfg.map_size;
        if (size > self->cfg.map_max)
            size = self->cfg.map_max;
        /*  A store that went past map_max to keep what was acknowledged
            (nx_store_overdraft) keeps room for a commit above its data.   */
        MDB_stat est;
        uint64_t in_use = 0;
        if (mdb_env_stat(self->env, &est) == 0)
            in_use = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
        if (size < in_use / 3 * 4)
            size = in_use / 3 * 4;
        what = "mdb_env_set_mapsize";
        /*  LMDB keeps the map at least as large as the data in it.        */
        if (size != info.me_mapsize)
            rc = mdb_env_set_mapsize(self->env, size);
        if (!rc)
            rc = mdb_env_info(self->env, &info);
    }
    MDB_stat st;
    if (!rc) {
        what = "mdb_env_stat";
        rc = mdb_env_stat(self->env, &st);
    }
    if (!rc) {
        what = "open databases";
        rc = s_load(self);
    }
    if (rc) {
        snprintf(err_buf, err_size, "store: %s %s: %s", what, self->path, mdb_strerror(rc));
        nx_store_destroy(&self);
        return NULL;
    }
    self->map_size = info.me_mapsize;
    self->psize = st.ms_psize;
    self->max_key = (size_t)mdb_env_get_maxkeysize(self->env);
    s_publish(self);
    *err = NEXUS_OK;
    return self;
}

void nx_store_destroy(nx_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_store_t *self = *self_p;
    if (self->txn)
        mdb_txn_abort(self->txn);
    /*  mdb_env_close closes the dbi handles too.                           */
    if (self->env)
        mdb_env_close(self->env);
    /*  Closing the file drops the flock; the file stays, so that a
        broker starting meanwhile never locks a file about to vanish.       */
    if (self->lock_fd >= 0)
        close(self->lock_fd);
    free(self->data_file);
    free(self->path);
    pthread_rwlock_destroy(&self->resize);
    pthread_mutex_destroy(&self->stats_lock);
    free(self);
    *self_p = NULL;
}

const char *nx_store_errmsg(nx_store_t *self)
{
    return self ? self->errmsg : "no store";
}

/*  ---- Writing -----------------------------------------------------------*/

nexus_err_t nx_store_append(nx_store_t *self, uint64_t seq, uint64_t ts, const char *topic,
                            size_t topic_len, const char *source, size_t source_len,
                            const uint8_t *payload, size_t payload_len)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    /*  Checked before the record is reserved, so that a bad argument costs
        nothing and leaves the batch valid.                                 */
    if (topic_len > NX_TOPIC_MAX || source_len > NX_SOURCE_MAX || (topic_len && !topic) ||
        (source_len && !source) || (payload_len && !payload))
        return s_fail(self, NEXUS_ERR_INVALID, "append: bad topic, source or payload");
    if (seq <= self->cur.last_seq)
        return s_fail(self, NEXUS_ERR_INVALID, "append: seq %" PRIu64 " not above %" PRIu64, seq,
                      self->cur.last_seq);
    int rc = s_batch_begin(self);
    if (rc)
        return s_mdb_fail(self, "begin batch", rc);
    if (!self->append_cur) {
        rc = mdb_cursor_open(self->txn, self->events, &self->append_cur);
        if (rc) {
            self->append_cur = NULL;
            return s_batch_fail(self, "append", rc);
        }
    }
    uint8_t key_buf[8];
    nx_put_u64(key_buf, seq);
    size_t size = nx_record_size(topic_len, source_len, payload_len);
    MDB_val key = {sizeof key_buf, key_buf};
    MDB_val val = {size, NULL};
    /*  MDB_RESERVE: LMDB hands us the space in the map and we encode
        straight into it, no copy. MDB_APPEND: keys only grow, so LMDB can
        skip the search and fill pages completely.                         */
    rc = mdb_cursor_put(self->append_cur, &key, &val, MDB_APPEND | MDB_RESERVE);
    if (rc)
        return s_batch_fail(self, "append", rc);
    nx_record_encode(val.mv_data, ts, topic, topic_len, source, source_len, payload, payload_len);
    if (self->cur.count == 0)
        self->cur.first_seq = seq;
    self->cur.count++;
    self->cur.bytes += size;
    self->cur.last_seq = seq;
    self->cur.last_ts = ts;
    return NEXUS_OK;
}

static nexus_err_t s_check_key(nx_store_t *self, nx_db_t db, const void *key, size_t key_len)
{
    if ((int)db < 0 || db >= NX_DB__COUNT)
        return s_fail(self, NEXUS_ERR_INVALID, "no such database %d", (int)db);
    if (!key || key_len == 0 || key_len > self->max_key)
        return s_fail(self, NEXUS_ERR_INVALID, "key must be 1..%zu bytes", self->max_key);
    return NEXUS_OK;
}

nexus_err_t nx_store_put(nx_store_t *self, nx_db_t db, const void *key, size_t key_len,
                         const void *value, size_t value_len)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nexus_err_t err = s_check_key(self, db, key, key_len);
    if (err)
        return err;
    if (!value && value_len)
        return s_fail(self, NEXUS_ERR_INVALID, "put: NULL value");
    int rc = s_batch_begin(self);
    if (rc)
        return s_mdb_fail(self, "begin batch", rc);
    MDB_val k = {key_len, (void *)key};
    MDB_val v = {value_len, (void *)value};
    rc = mdb_put(self->txn, self->dbs[db], &k, &v, 0);
    if (rc)
        return s_batch_fail(self, "put", rc);
    return NEXUS_OK;
}

nexus_err_t nx_store_del(nx_store_t *self, nx_db_t db, const void *key, size_t key_len)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nexus_err_t err = s_check_key(self, db, key, key_len);
    if (err)
        return err;
    bool fresh = self->txn == NULL;
    int rc = s_batch_begin(self);
    if (rc)
        return s_mdb_fail(self, "begin batch", rc);
    MDB_val k = {key_len, (void *)key};
    rc = mdb_del(self->txn, self->dbs[db], &k, NULL);
    if (rc == MDB_NOTFOUND) {
        /*  LMDB leaves the transaction usable after NOTFOUND. A batch
            opened only for this delete has nothing in it: close it so that
            nx_store_in_batch stays false.                                  */
        if (fresh)
            s_batch_abort(self);
        return s_fail(self, NEXUS_ERR_NOT_FOUND, "del: key not found");
    }
    if (rc)
        return s_batch_fail(self, "del", rc);
    return NEXUS_OK;
}

nexus_err_t nx_store_get(nx_store_t *self, nx_db_t db, const void *key, size_t key_len,
                         void **value, size_t *value_len)
{
    if (!self || !value || !value_len)
        return NEXUS_ERR_INVALID;
    nexus_err_t err = s_check_key(self, db, key, key_len);
    if (err)
        return err;
    /*  Inside a batch the write transaction sees the batch's own writes;
        another thread reads what was committed.                           */
    MDB_txn *txn = self->txn && pthread_equal(self->txn_thread, pthread_self()) ? self->txn : NULL;
    int rc = 0;
    /*  A read transaction of its own holds the resize lock shared, as every
        reader does: the checkpointer may grow the map meanwhile (the loop
        reads here at a promotion or a reload).                           */
    bool own = !txn;
    if (own) {
        pthread_rwlock_rdlock(&self->resize);
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    }
    if (rc) {
        pthread_rwlock_unlock(&self->resize);
        return s_mdb_fail(self, "get", rc);
    }
    MDB_val k = {key_len, (void *)key};
    MDB_val v;
    rc = mdb_get(txn, self->dbs[db], &k, &v);
    if (rc == MDB_NOTFOUND)
        err = NEXUS_ERR_NOT_FOUND; /* an answer, not a failure: errmsg is the
                                      checkpointer's, another thread's      */
    else if (rc)
        err = s_mdb_fail(self, "get", rc);
    else {
        /*  v points into the map, valid only until the transaction ends.   */
        void *copy = malloc(v.mv_size ? v.mv_size : 1);
        if (!copy)
            err = s_fail(self, NEXUS_ERR_NOMEM, "get: out of memory");
        else {
            memcpy(copy, v.mv_data, v.mv_size);
            *value = copy;
            *value_len = v.mv_size;
        }
    }
    if (own) {
        mdb_txn_abort(txn);
        pthread_rwlock_unlock(&self->resize);
    }
    return err;
}

nexus_err_t nx_store_foreach(nx_store_t *self, nx_db_t db, nx_store_each_fn *fn, void *arg)
{
    if (!self || !fn)
        return NEXUS_ERR_INVALID;
    if ((int)db < 0 || db >= NX_DB__COUNT)
        return s_fail(self, NEXUS_ERR_INVALID, "no such database %d", (int)db);
    MDB_txn *txn;
    /*  Shared resize lock: as nx_store_get.                               */
    pthread_rwlock_rdlock(&self->resize);
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        pthread_rwlock_unlock(&self->resize);
        return s_mdb_fail(self, "foreach", rc);
    }
    MDB_cursor *cursor;
    rc = mdb_cursor_open(txn, self->dbs[db], &cursor);
    if (rc) {
        mdb_txn_abort(txn);
        pthread_rwlock_unlock(&self->resize);
        return s_mdb_fail(self, "foreach", rc);
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
        if (fn(k.mv_data, k.mv_size, v.mv_data, v.mv_size, arg) != 0)
            break;
    }
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&self->resize);
    if (rc && rc != MDB_NOTFOUND)
        return s_mdb_fail(self, "foreach", rc);
    return NEXUS_OK;
}

bool nx_store_in_batch(nx_store_t *self)
{
    return self && self->txn != NULL;
}

nexus_err_t nx_store_commit(nx_store_t *self, uint64_t now_us)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!self->txn)
        return NEXUS_OK;
    uint64_t max = self->cfg.trim_batch ? self->cfg.trim_batch : S_TRIM_BATCH_DEFAULT;
    uint64_t deleted;
    int rc = s_trim_txn(self, now_us, max, true, &deleted);
    if (rc)
        return s_batch_fail(self, "trim", rc);
    return s_batch_finish(self, false);
}

void nx_store_abort(nx_store_t *self)
{
    if (self)
        s_batch_abort(self);
}

int64_t nx_store_trim(nx_store_t *self, uint64_t now_us, uint64_t max)
{
    if (!self)
        return -1;
    if (self->txn) {
        s_fail(self, NEXUS_ERR_INVALID, "trim: a batch is open");
        return -1;
    }
    if (max == 0)
        return 0;
    int rc = s_batch_begin(self);
    if (rc) {
        s_mdb_fail(self, "trim", rc);
        return -1;
    }
    uint64_t deleted;
    rc = s_trim_txn(self, now_us, max, true, &deleted);
    if (rc) {
        s_batch_fail(self, "trim", rc);
        return -1;
    }
    /*  Nothing to delete: no commit, no fsync.                             */
    if (deleted == 0) {
        s_batch_abort(self);
        return 0;
    }
    if (s_batch_finish(self, false) != NEXUS_OK)
        return -1;
    return (int64_t)deleted;
}

/*  ---- Making room -------------------------------------------------------*/

/*  Measures the map. LMDB reuses free pages before it extends the file (it
    never shrinks it), so what is in use is the pages up to the last one
    touched minus the pages on its free list. The free list is LMDB's
    database 0: key the id of the transaction that freed the pages, value a
    page-number list whose first element is its length -- the same walk as
    `mdb_stat -f`. Pages freed by the last commit are not reusable by the
    next transaction (the previous snapshot still needs them), only by the
    one after: they are counted as in use in *used and reported in
    *pending. Assumes no reader is open (make_room's precondition).         */
static int s_map_used(nx_store_t *self, uint64_t *used, uint64_t *pending)
{
    MDB_envinfo info;
    int rc = mdb_env_info(self->env, &info);
    if (rc)
        return rc;
    MDB_txn *txn;
    rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return rc;
    MDB_cursor *cursor;
    rc = mdb_cursor_open(txn, 0, &cursor);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    uint64_t free_pages = 0, pending_pages = 0;
    MDB_val k, v;
    while ((rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) == 0) {
        size_t n, txnid;
        if (v.mv_size < sizeof n || k.mv_size != sizeof txnid)
            continue;
        /*  memcpy: LMDB node data is only 2-byte aligned.                 */
        memcpy(&n, v.mv_data, sizeof n);
        memcpy(&txnid, k.mv_data, sizeof txnid);
        if (txnid >= info.me_last_txnid)
            pending_pages += n;
        else
            free_pages += n;
    }
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND)
        return rc;
    uint64_t pages = (uint64_t)info.me_last_pgno + 1;
    *used = (pages > free_pages ? pages - free_pages : 0) * self->psize;
    *pending = pending_pages * self->psize;
    return 0;
}

/*  True when used + need stays within 3/4 of a map of map_size bytes.     */
static bool s_fits(uint64_t map_size, uint64_t used, uint64_t need)
{
    uint64_t limit = map_size / 4 * 3;
    return used <= limit && need <= limit - used;
}

/*  A transaction that deletes also needs a few fresh pages (copy-on-write
    of the path to the leaf, the free list record). In a map filled to the
    last page, with nothing reusable, it cannot run, and the store would be
    stuck for good. So make_room may, once, extend the map this far beyond
    map_max to let its deletes through; it shrinks the map back afterwards
    (LMDB keeps it at least as large as the pages in use), so the map ends
    at most S_SPARE_PAGES over map_max.                                    */
static nexus_err_t s_spare(nx_store_t *self, bool *spare_used)
{
    if (*spare_used)
        return s_fail(self, NEXUS_ERR_STORE_FULL, "make_room: map full, cannot even delete");
    *spare_used = true;
    MDB_envinfo info;
    int rc = mdb_env_set_mapsize(self->env, self->map_size + S_SPARE_PAGES * self->psize);
    if (!rc)
        rc = mdb_env_info(self->env, &info);
    if (rc)
        return s_mdb_fail(self, "make_room: spare pages", rc);
    self->map_size = info.me_mapsize;
    return NEXUS_OK;
}

/*  Commits a small transaction (it rewrites the meta counters) so that the
    pages the last commit freed become reusable by the next batch.         */
static nexus_err_t s_release(nx_store_t *self, bool *spare_used)
{
    for (;;) {
        int rc = s_batch_begin(self);
        if (rc)
            return s_mdb_fail(self, "make_room: begin", rc);
        nexus_err_t err = s_batch_finish(self, true);
        if (err != NEXUS_ERR_STORE_FULL)
            return err;
        err = s_spare(self, spare_used);
        if (err)
            return err;
    }
}

static nexus_err_t s_make_room_locked(nx_store_t *self, uint64_t need_bytes, int *action);

nexus_err_t nx_store_make_room(nx_store_t *self, uint64_t need_bytes, int *action)
{
    int dummy_action;
    if (!action)
        action = &dummy_action;
    *action = 0;
    if (!self)
        return NEXUS_ERR_INVALID;
    /*  Resizing the map with a transaction open in this process is
        undefined behaviour in LMDB, and a reader would hold pages.        */
    if (self->txn)
        return s_fail(self, NEXUS_ERR_INVALID, "make_room: a batch is open");
    /*  Most calls find room. Measuring takes no lock: only a resize, made
        on this very thread, must exclude the readers, and waiting for a
        history page to end would stall the loop once a second.            */
    uint64_t used, pending;
    if (s_map_used(self, &used, &pending) == 0 && s_fits(self->map_size, used, need_bytes))
        return NEXUS_OK;
    /*  Readers on other threads finish within one history page; a reader
        held by this very thread never would, hence the bound.             */
    int tries = 0;
    while (pthread_rwlock_trywrlock(&self->resize) != 0) {
        if (++tries > 500)
            return s_fail(self, NEXUS_ERR_BUSY, "make_room: a reader stays open");
        usleep(1000);
    }
    nexus_err_t result = s_make_room_locked(self, need_bytes, action);
    pthread_rwlock_unlock(&self->resize);
    s_publish(self);
    return result;
}

/*  Takes the resize lock, waiting up to 0.5 s for readers (see make_room).*/
static nexus_err_t s_resize_lock(nx_store_t *self, const char *what)
{
    int tries = 0;
    while (pthread_rwlock_trywrlock(&self->resize) != 0) {
        if (++tries > 500)
            return s_fail(self, NEXUS_ERR_BUSY, "%s: a reader stays open", what);
        usleep(1000);
    }
    return NEXUS_OK;
}

nexus_err_t nx_store_overdraft(nx_store_t *self, uint64_t need_bytes)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (self->txn)
        return s_fail(self, NEXUS_ERR_INVALID, "overdraft: a batch is open");
    nexus_err_t err = s_resize_lock(self, "overdraft");
    if (err)
        return err;
    uint64_t used, pending;
    int rc = s_map_used(self, &used, &pending);
    uint64_t map = self->map_size;
    /*  The same headroom as make_room keeps: what is needed fits in 3/4.  */
    while (!rc && !s_fits(map, used, need_bytes) && map < UINT64_MAX / 2)
        map *= 2;
    MDB_envinfo info;
    if (!rc && map != self->map_size)
        rc = mdb_env_set_mapsize(self->env, map);
    if (!rc)
        rc = mdb_env_info(self->env, &info);
    if (!rc && info.me_mapsize != self->map_size) {
        self->map_size = info.me_mapsize;
        self->grows++;
    }
    pthread_rwlock_unlock(&self->resize);
    s_publish(self);
    return rc ? s_mdb_fail(self, "overdraft", rc) : NEXUS_OK;
}

bool nx_store_full(nx_store_t *self, uint64_t need_bytes)
{
    uint64_t used, pending;
    if (!self || s_map_used(self, &used, &pending) != 0)
        return true;
    return !s_fits(self->cfg.map_max, used > pending ? used - pending : 0, need_bytes);
}

static nexus_err_t s_make_room_locked(nx_store_t *self, uint64_t need_bytes, int *action)
{
    uint64_t used, pending;
    int rc = s_map_used(self, &used, &pending);
    if (rc)
        return s_mdb_fail(self, "make_room", rc);
    if (s_fits(self->map_size, used, need_bytes))
        return NEXUS_OK;
    /*  A need that no map within map_max could take: say so before any
        history is deleted for nothing.                                    */
    if (!s_fits(self->cfg.map_max, 0, need_bytes))
        return s_fail(self, NEXUS_ERR_STORE_FULL,
                      "make_room: %" PRIu64 " bytes do not fit a map of %" PRIu64, need_bytes,
                      self->cfg.map_max);
    bool spare_used = false;
    nexus_err_t err;
    if (pending > 0) {
        /*  A large delete was just committed: release its pages first.   */
        err = s_release(self, &spare_used);
        if (!err && s_map_used(self, &used, &pending) != 0)
            err = s_fail(self, NEXUS_ERR_STORE, "make_room: cannot measure the map");
        if (err)
            return err;
    }

    uint64_t map = self->map_size;
    if (map < self->cfg.map_max && !s_fits(map, used, need_bytes)) {
        while (map < self->cfg.map_max && !s_fits(map, used, need_bytes))
            map = map > self->cfg.map_max / 2 ? self->cfg.map_max : map * 2;
        MDB_envinfo info;
        rc = mdb_env_set_mapsize(self->env, map);
        if (!rc)
            rc = mdb_env_info(self->env, &info);
        if (rc)
            return s_mdb_fail(self, "make_room: grow map", rc);
        self->map_size = map = info.me_mapsize;
        self->grows++;
        *action = 1;
    }
    if (s_fits(map, used, need_bytes))
        return NEXUS_OK;

    /*  At map_max: delete the oldest events until at most half the map is
        in use (so that this does not run again at the next batch).        */
    uint64_t target = map / 2;
    uint64_t fit = map / 4 * 3 - need_bytes; /* need fits map_max, checked */
    if (fit < target)
        target = fit;
    uint64_t batch = S_ROOM_TRIM_BATCH;
    bool trimmed = false;
    while (self->cur.count > 0 && used > target) {
        /*  How many: the excess at the average footprint of an event
            (record, key, node header, page index slot). An underestimate
            takes another round; the pages freed are counted right after
            the commit, as pending.                                        */
        uint64_t per_event = self->cur.bytes / self->cur.count + 18;
        uint64_t n = (used - target) / per_event + 1;
        if (n > batch)
            n = batch;
        rc = s_batch_begin(self);
        if (rc)
            return s_mdb_fail(self, "make_room: begin", rc);
        uint64_t deleted;
        rc = s_trim_txn(self, 0, n, false, &deleted);
        err = rc ? s_batch_fail(self, "make_room: trim", rc) : s_batch_finish(self, false);
        if (err == NEXUS_ERR_STORE_FULL && !spare_used)
            err = s_spare(self, &spare_used);
        else if (err == NEXUS_ERR_STORE_FULL && batch > 1) {
            batch = n > 1 ? n / 2 : 1;
            continue;
        }
        if (err)
            return err;
        trimmed = true;
        rc = s_map_used(self, &used, &pending);
        if (rc)
            return s_mdb_fail(self, "make_room", rc);
        used -= pending < used ? pending : used;
    }
    if (trimmed) {
        *action = 2;
        err = s_release(self, &spare_used);
        if (!err && s_map_used(self, &used, &pending) != 0)
            err = s_fail(self, NEXUS_ERR_STORE, "make_room: cannot measure the map");
        if (err)
            return err;
    }
    if (spare_used) {
        MDB_envinfo info;
        rc = mdb_env_set_mapsize(self->env, map);
        if (!rc)
            rc = mdb_env_info(self->env, &info);
        if (rc)
            return s_mdb_fail(self, "make_room: shrink map", rc);
        self->map_size = info.me_mapsize;
    }
    if (!s_fits(map, used, need_bytes))
        return s_fail(self, NEXUS_ERR_STORE_FULL,
                      "make_room: %" PRIu64 " of %" PRIu64 " bytes in use, no events to trim", used,
                      map);
    return NEXUS_OK;
}

/*  ---- Counters ----------------------------------------------------------*/

void nx_store_stats(nx_store_t *self, nx_store_stats_t *st)
{
    if (!st)
        return;
    memset(st, 0, sizeof *st);
    if (!self)
        return;
    pthread_mutex_lock(&self->stats_lock);
    *st = self->published;
    pthread_mutex_unlock(&self->stats_lock);
    struct stat sb;
    if (stat(self->data_file, &sb) == 0)
        st->disk_bytes = (uint64_t)sb.st_blocks * 512;
}

const char *nx_store_id(nx_store_t *self)
{
    return self ? self->id : "";
}

uint64_t nx_store_last_seq(nx_store_t *self)
{
    return self ? self->cur.last_seq : 0;
}

uint64_t nx_store_last_ts(nx_store_t *self)
{
    return self ? self->cur.last_ts : 0;
}

nexus_err_t nx_store_copy(nx_store_t *self, int fd, char *err_buf, size_t err_size)
{
    /*  The copy runs a read transaction of its own: hold the resize lock
        shared like any reader (LMDB must not resize under it).            */
    pthread_rwlock_rdlock(&self->resize);
    int rc = mdb_env_copyfd2(self->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&self->resize);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = errno;
    if (rc) {
        snprintf(err_buf, err_size, "cannot copy the store: %s", mdb_strerror(rc));
        return NEXUS_ERR_STORE;
    }
    return NEXUS_OK;
}

/*  ---- Readers -----------------------------------------------------------*/

nx_store_reader_t *nx_store_reader_new(nx_store_t *self)
{
    if (!self)
        return NULL;
    nx_store_reader_t *reader = calloc(1, sizeof *reader);
    if (!reader) {
        s_fail(self, NEXUS_ERR_NOMEM, "reader: out of memory");
        return NULL;
    }
    pthread_rwlock_rdlock(&self->resize);
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &reader->txn);
    if (!rc) {
        rc = mdb_cursor_open(reader->txn, self->events, &reader->cursor);
        if (rc)
            mdb_txn_abort(reader->txn);
    }
    if (rc) {
        pthread_rwlock_unlock(&self->resize);
        s_mdb_fail(self, "reader", rc);
        free(reader);
        return NULL;
    }
    reader->store = self;
    reader->state = S_RD_START;
    __atomic_add_fetch(&self->readers, 1, __ATOMIC_RELAXED);
    return reader;
}

void nx_store_reader_destroy(nx_store_reader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_store_reader_t *self = *self_p;
    /*  A read transaction's cursors must be closed before it ends.         */
    mdb_cursor_close(self->cursor);
    mdb_txn_abort(self->txn);
    __atomic_sub_fetch(&self->store->readers, 1, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&self->store->resize);
    free(self);
    *self_p = NULL;
}

void nx_store_reader_seek(nx_store_reader_t *self, uint64_t seq, bool descending)
{
    if (!self)
        return;
    self->descending = descending;
    uint8_t key_buf[8];
    nx_put_u64(key_buf, seq);
    MDB_val k = {sizeof key_buf, key_buf};
    MDB_val v;
    /*  SET_RANGE finds the first key >= seq: right for ascending. For
        descending step back when it overshot, or take the last key when
        every key is below seq.                                             */
    int rc = mdb_cursor_get(self->cursor, &k, &v, MDB_SET_RANGE);
    if (descending) {
        if (rc == MDB_NOTFOUND)
            rc = mdb_cursor_get(self->cursor, &k, &v, MDB_LAST);
        else if (rc == 0 && k.mv_size == 8 && nx_get_u64(k.mv_data) > seq)
            rc = mdb_cursor_get(self->cursor, &k, &v, MDB_PREV);
    }
    if (rc == 0)
        self->state = S_RD_AT;
    else if (rc == MDB_NOTFOUND)
        self->state = S_RD_END;
    else {
        s_mdb_fail(self->store, "reader seek", rc);
        self->state = S_RD_ERROR;
    }
}

int nx_store_reader_next(nx_store_reader_t *self, uint64_t *seq, nx_record_t *rec)
{
    if (!self || !seq || !rec)
        return -1;
    if (self->state == S_RD_START)
        nx_store_reader_seek(self, 0, false);
    if (self->state == S_RD_END)
        return 0;
    if (self->state == S_RD_ERROR)
        return -1;
    MDB_val k, v;
    MDB_cursor_op op = self->state == S_RD_AT ? MDB_GET_CURRENT
                       : self->descending     ? MDB_PREV
                                              : MDB_NEXT;
    int rc = mdb_cursor_get(self->cursor, &k, &v, op);
    if (rc == MDB_NOTFOUND) {
        self->state = S_RD_END;
        return 0;
    }
    if (rc) {
        s_mdb_fail(self->store, "reader next", rc);
        return -1;
    }
    self->state = S_RD_MOVE;
    if (k.mv_size != 8 || nx_record_decode(v.mv_data, v.mv_size, rec) != 0) {
        s_fail(self->store, NEXUS_ERR_STORE, "reader: corrupt event record");
        return -1;
    }
    *seq = nx_get_u64(k.mv_data);
    return 1;
}

/*  Reads the event with the smallest seq >= from: its seq and ts. Returns
    an LMDB code (MDB_NOTFOUND past the end).                               */
static int s_event_at(MDB_cursor *cursor, uint64_t from, uint64_t *seq, uint64_t *ts)
{
    uint8_t key_buf[8];
    nx_put_u64(key_buf, from);
    MDB_val k = {sizeof key_buf, key_buf};
    MDB_val v;
    int rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
    if (rc)
        return rc;
    nx_record_t rec;
    if (k.mv_size != 8 || nx_record_decode(v.mv_data, v.mv_size, &rec) != 0)
        return MDB_CORRUPTED;
    *seq = nx_get_u64(k.mv_data);
    *ts = rec.ts;
    return 0;
}

uint64_t nx_store_reader_seq_at_time(nx_store_reader_t *self, uint64_t ts_us)
{
    if (!self)
        return 0;
    /*  The answer for "none": one past the newest seq of this snapshot.
        The snapshot's own meta tells it even when retention left no event. */
    uint64_t last_seq = 0;
    s_get_u64(self->txn, self->store->dbs[NX_DB_META], S_META_LAST_SEQ, &last_seq);

    /*  A cursor of its own, so the reader's position is left alone.       */
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(self->txn, self->store->events, &cursor);
    if (rc) {
        s_mdb_fail(self->store, "seq_at_time", rc);
        return last_seq + 1;
    }
    uint64_t result = last_seq + 1;
    MDB_val k, v;
    uint64_t lo = 0, hi = 0, seq, ts;
    rc = mdb_cursor_get(cursor, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) {
        hi = nx_get_u64(k.mv_data);
        if (hi > last_seq)
            result = hi + 1;
    }
    if (rc == 0)
        rc = s_event_at(cursor, hi, &seq, &ts);
    if (rc == 0 && ts >= ts_us) {
        /*  Smallest x in [lo, hi] whose first event at or after x has
            ts >= ts_us; x need not be a stored seq (gaps are fine).
            ts is non-decreasing with seq, so that predicate is monotone.   */
        while (rc == 0 && lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            rc = s_event_at(cursor, mid, &seq, &ts);
            if (rc == 0 && ts >= ts_us)
                hi = mid;
            else if (rc == 0)
                lo = seq + 1;
        }
        if (rc == 0)
            rc = s_event_at(cursor, lo, &seq, &ts);
        if (rc == 0)
            result = seq;
    }
    if (rc && rc != MDB_NOTFOUND)
        s_mdb_fail(self->store, "seq_at_time", rc);
    mdb_cursor_close(cursor);
    return result;
}

nexus_err_t nx_store_sync(nx_store_t *self)
{
    if (!self || !self->cfg.sync)
        return NEXUS_OK;
    int rc = mdb_env_sync(self->env, 1);
    return rc ? s_mdb_fail(self, "sync", rc) : NEXUS_OK;
}

void nx_store_reader_bounds(nx_store_reader_t *self, uint64_t *first_seq, uint64_t *last_seq)
{
    *first_seq = *last_seq = 0;
    MDB_cursor *cursor = NULL;
    if (mdb_cursor_open(self->txn, self->store->events, &cursor))
        return;
    MDB_val k, v;
    if (mdb_cursor_get(cursor, &k, &v, MDB_FIRST) == 0 && k.mv_size == 8)
        *first_seq = nx_get_u64(k.mv_data);
    if (mdb_cursor_get(cursor, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        *last_seq = nx_get_u64(k.mv_data);
    mdb_cursor_close(cursor);
    /*  The highest seq ever committed may be above the last stored one
        when retention trimmed everything: meta keeps it.                   */
    uint64_t meta = 0;
    s_get_u64(self->txn, self->store->dbs[NX_DB_META], S_META_LAST_SEQ, &meta);
    if (meta > *last_seq)
        *last_seq = meta;
}
