/*  =========================================================================
    nx_wal - the write-ahead log. nx_wal.h is the contract and describes
    the format.

    Writing. A turn's records collect in one buffer (buf); nx_wal_write
    cuts it into frames that fit their segments and writes each frame with
    one pwritev: header, body, and 32 zero bytes after it (the end marker,
    clipped to the segment), so that where the log ends there are zeros
    unless a write was torn. The next write puts its frame over the
    marker. A flush is one fdatasync per segment written since the last
    one; the segments are preallocated, so it moves data only.

    Why a clean end matters: after a kill -9 nothing written is lost (the
    page cache survives the process), so a start on the same boot that
    finds the log ending cleanly continues seqs without a gap. What is
    there past the last valid frame tells the two cases apart: zeros, the
    end of the file, or a self-consistent frame of an earlier life of the
    segment mean nothing more was written; anything else is a torn write
    (see nx_wal_reader_read).

    Segments. The loop opens the segment it needs by name, creating it
    when the checkpointer has not prepared it (preallocated with fallocate:
    correct, only its first flushes are slower). The checkpointer renames
    segments a durable LMDB commit covers to follow the loop's (recycle)
    and zero-fills new ones ahead of it (prepare). The mutex keeps the two
    from creating the same name; every create and rename is followed by an
    fsync of the directory before the name is used, so that a flush of a
    frame in it is never undone by a power cut that loses the name.
    =========================================================================
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "nx_codec.h"
#include "nx_wal.h"

#define S_MAGIC      0x4e585731u /* "NXW1"                                    */
#define S_MARK       32          /* zero bytes written after the last frame   */
#define S_SPARES     2           /* segments kept ready after the current one */
#define S_FILL_CHUNK (1u << 20)  /* zero-fill writes this much at a time      */
#define S_NAME_LEN   20          /* 16 hex digits + ".log"                    */
#define S_BUF_KEEP   (16u << 20) /* a larger turn buffer is freed after use   */
#define S_TMP_NAME   "prepare.tmp"

struct _nx_wal_t {
    char *dir;             /* the log directory                             */
    int dir_fd;            /* for fsync after a create or rename            */
    bool names_unsynced;   /* a rename's fsync of dir_fd failed (lock)      */
    uint64_t seg;          /* segment size                                  */
    bool sync;             /* fdatasync, zero-filled segments               */
    pthread_mutex_t lock;  /* creating, renaming and removing segment files */
    uint8_t *buf;          /* the turn's records                            */
    size_t len, cap;       /* bytes used and allocated in buf               */
    uint32_t count;        /* records in buf                                */
    uint64_t pos;          /* LSN of the next frame                         */
    uint32_t head;         /* crc of the last frame written                 */
    uint32_t turn_crc;     /* crc of the last frame of the last whole turn  */
    uint64_t hold;         /* atomic: segments from the one holding this
                              on are not recycled (UINT64_MAX: none)        */
    uint64_t cur_base;     /* segment the loop writes (fd cur_fd)           */
    int cur_fd;            /* -1: none open; changes under flock            */
    int *old_fds;          /* earlier segments not flushed since the switch
                              (under flock; the flusher closes them)        */
    size_t n_old, cap_old; /* entries used and allocated in old_fds         */
    uint64_t written;      /* atomic: LSN after the last frame written      */
    uint64_t durable;      /* atomic: LSN up to which it is flushed         */
    uint64_t frames;       /* frames written since open                     */
    uint64_t flushes;      /* atomic: fdatasync rounds since open           */
    pthread_mutex_t flock; /* the flusher's state, cur_fd and old_fds       */
    pthread_cond_t wake;   /* the flusher waits here for work               */
    pthread_cond_t done;   /* nx_wal_flush waits here for the flusher       */
    pthread_t flusher;     /* flushes (sync only)                           */
    bool flusher_on;       /* it runs                                       */
    bool stopping;         /* it is asked to end                            */
    uint64_t target;       /* flush up to here (under flock)                */
    bool flushing;         /* a round runs, the flusher's or the loop's     */
    int flush_errno;       /* a flush failed (sticky): its errno, else 0    */
    int event_fd;          /* readable after each flush round, -1: none     */
};

struct _nx_wal_reader_t {
    char *dir;     /* the log directory                              */
    uint64_t seg;  /* segment size                                   */
    int fd;        /* open segment, -1: none                         */
    uint64_t base; /* its first LSN                                  */
    uint8_t *buf;  /* header and body of the last frame read         */
    size_t cap;    /* bytes allocated in buf                         */
};

/*  ---- Helpers ------------------------------------------------------------ */

static void s_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t s_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void s_name(char *buf, uint64_t base)
{
    snprintf(buf, S_NAME_LEN + 1, "%016" PRIx64 ".log", base);
}

/*  The base of a segment file's name, or UINT64_MAX for any other name.  */
static uint64_t s_parse_name(const char *name)
{
    if (strlen(name) != S_NAME_LEN || strcmp(name + 16, ".log") != 0)
        return UINT64_MAX;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return UINT64_MAX;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

static uint32_t s_crc(const uint8_t *head, const uint8_t *body, size_t len)
{
    uLong c = crc32(0L, head + 4, NX_WAL_FRAME_HEAD - 4);
    while (len) {
        /*  zlib takes uInt lengths.                                       */
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, body, n);
        body += n;
        len -= n;
    }
    return (uint32_t)c;
}

static void s_header(uint8_t *h, uint64_t lsn, uint32_t len, uint32_t prev, uint32_t flags,
                     uint32_t count)
{
    s_put_u32(h + 4, S_MAGIC);
    nx_put_u64(h + 8, lsn);
    s_put_u32(h + 16, len);
    s_put_u32(h + 20, prev);
    s_put_u32(h + 24, flags);
    s_put_u32(h + 28, count);
}

static ssize_t s_pread_all(int fd, uint8_t *buf, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/*  Writes the iovecs at off in full (a short write is continued).        */
static int s_pwritev_all(int fd, struct iovec *iov, int n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        off += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static bool s_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int nx_wal_boot_id(char *buf)
{
    memset(buf, 0, NX_WAL_BOOT_MAX);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, NX_WAL_BOOT_MAX - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return n ? 0 : -1;
}

/*  ---- Segment files ------------------------------------------------------- */

/*  Zero-fills fd to size (sync: flushed), so that later flushes move data
    only; without sync a sparse file of that size.                         */
static int s_fill(nx_wal_t *self, int fd)
{
    if (!self->sync)
        return ftruncate(fd, (off_t)self->seg);
    uint8_t *zeros = calloc(1, S_FILL_CHUNK);
    if (!zeros) {
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    for (uint64_t off = 0; off < self->seg && rc == 0; off += S_FILL_CHUNK) {
        size_t n = self->seg - off < S_FILL_CHUNK ? (size_t)(self->seg - off) : S_FILL_CHUNK;
        struct iovec iov = {zeros, n};
        rc = s_pwritev_all(fd, &iov, 1, (off_t)off);
    }
    free(zeros);
    return rc == 0 ? fdatasync(fd) : -1;
}

/*  Opens the segment at base for writing, creating it when missing: with
    zero-fill (fill) or else preallocated by the file system. Returns the
    fd or -1 (errno set). Takes the lock.                                   */
static int s_open_segment(nx_wal_t *self, uint64_t base, bool fill)
{
    char name[S_NAME_LEN + 1];
    s_name(name, base);
    pthread_mutex_lock(&self->lock);
    int fd = openat(self->dir_fd, name, O_RDWR | O_CLOEXEC);
    /*  A spare renamed to this name whose directory fsync failed: its
        name must be durable before anything acknowledged goes in, or a
        power cut could leave the log without it (read as its end).       */
    if (fd >= 0 && self->names_unsynced) {
        if (fsync(self->dir_fd) == 0)
            self->names_unsynced = false;
        else {
            int e = errno;
            close(fd);
            errno = e;
            fd = -1;
        }
    }
    if (fd < 0 && errno == ENOENT) {
        fd = openat(self->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int rc = fd < 0 ? -1 : 0;
        if (rc == 0 && fill)
            rc = s_fill(self, fd);
        else if (rc == 0 && self->sync && fallocate(fd, 0, 0, (off_t)self->seg) != 0)
            rc = ftruncate(fd, (off_t)self->seg);
        else if (rc == 0 && !self->sync)
            rc = ftruncate(fd, (off_t)self->seg);
        if (rc == 0 && self->sync)
            rc = fsync(self->dir_fd);
        if (rc != 0 && fd >= 0) {
            int e = errno;
            close(fd);
            unlinkat(self->dir_fd, name, 0);
            errno = e;
            fd = -1;
        }
    }
    pthread_mutex_unlock(&self->lock);
    return fd;
}

/*  The segment files in the directory, by base, sorted. Caller frees.     */
static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t *s_list(nx_wal_t *self, size_t *n)
{
    *n = 0;
    int fd = openat(self->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t cap = 16;
    uint64_t *bases = malloc(cap * sizeof *bases);
    struct dirent *e;
    while (bases && (e = readdir(d)) != NULL) {
        uint64_t base = s_parse_name(e->d_name);
        if (base == UINT64_MAX)
            continue;
        if (*n == cap) {
            uint64_t *grown = realloc(bases, cap * 2 * sizeof *bases);
            if (!grown)
                break;
            bases = grown;
            cap *= 2;
        }
        bases[(*n)++] = base;
    }
    closedir(d);
    if (bases)
        qsort(bases, *n, sizeof *bases, s_cmp_u64);
    return bases;
}

static bool s_exists(nx_wal_t *self, uint64_t base)
{
    char name[S_NAME_LEN + 1];
    s_name(name, base);
    struct stat st;
    return fstatat(self->dir_fd, name, &st, 0) == 0;
}

/*  Renames (or removes, when enough spares wait) the files wholly below
    `below`; spares go to the first free bases after `after`. Holds the
    lock.                                                                   */
static void s_recycle_locked(nx_wal_t *self, uint64_t below, uint64_t after)
{
    size_t n = 0;
    uint64_t *bases = s_list(self, &n);
    if (!bases)
        return;
    size_t spares = 0;
    for (size_t i = 0; i < n; i++)
        if (bases[i] > after)
            spares++;
    bool renamed = false;
    uint64_t next = after + self->seg;
    for (size_t i = 0; i < n; i++) {
        uint64_t base = bases[i];
        if (base > after || base + self->seg > below || base + self->seg > after)
            continue;
        char from[S_NAME_LEN + 1], to[S_NAME_LEN + 1];
        s_name(from, base);
        /*  A file of another segment size (the setting changed) is not
            worth keeping.                                                 */
        if (spares < S_SPARES && base % self->seg == 0) {
            while (s_exists(self, next))
                next += self->seg;
            s_name(to, next);
            if (renameat(self->dir_fd, from, self->dir_fd, to) == 0) {
                spares++;
                renamed = true;
                continue;
            }
        }
        unlinkat(self->dir_fd, from, 0);
    }
    if (renamed && self->sync && fsync(self->dir_fd) != 0)
        self->names_unsynced = true; /* s_open_segment tries again */
    free(bases);
}

/*  ---- Lifecycle ------------------------------------------------------------ */

/*  fsync of the directory that holds path. Returns 0 or -1 (errno).       */
static int s_sync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    char *slash = strrchr(copy, '/');
    const char *parent = !slash ? "." : slash == copy ? "/" : (*slash = 0, copy);
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : fsync(fd);
    int e = errno;
    if (fd >= 0)
        close(fd);
    free(copy);
    errno = e;
    return rc;
}

nx_wal_t *nx_wal_new(const nx_wal_config_t *cfg, char *err, size_t err_size)
{
    if (!cfg || !cfg->dir || cfg->segment_size < NX_WAL_SEGMENT_MIN) {
        snprintf(err, err_size,
                 "log: a directory and a segment size of at least %u bytes "
                 "are required",
                 NX_WAL_SEGMENT_MIN);
        return NULL;
    }
    nx_wal_t *self = calloc(1, sizeof *self);
    if (!self || !(self->dir = strdup(cfg->dir))) {
        free(self);
        snprintf(err, err_size, "log: out of memory");
        return NULL;
    }
    self->seg = cfg->segment_size;
    self->sync = cfg->sync;
    self->hold = UINT64_MAX;
    self->cur_fd = -1;
    self->dir_fd = -1;
    self->event_fd = -1;
    pthread_mutex_init(&self->lock, NULL);
    pthread_mutex_init(&self->flock, NULL);
    pthread_cond_init(&self->wake, NULL);
    pthread_cond_init(&self->done, NULL);
    if (self->sync && (self->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        snprintf(err, err_size, "log: eventfd: %s", strerror(errno));
        nx_wal_destroy(&self);
        return NULL;
    }
    bool made = mkdir(self->dir, 0700) == 0;
    if (!made && errno != EEXIST) {
        snprintf(err, err_size, "log: mkdir %s: %s", self->dir, strerror(errno));
        nx_wal_destroy(&self);
        return NULL;
    }
    /*  The new directory's own name is made durable too, before a segment
        in it ever holds anything acknowledged.                            */
    if (made && self->sync && s_sync_parent(self->dir) != 0) {
        snprintf(err, err_size, "log: fsync of the directory holding %s: %s", self->dir,
                 strerror(errno));
        nx_wal_destroy(&self);
        return NULL;
    }
    self->dir_fd = open(self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dir_fd < 0) {
        snprintf(err, err_size, "log: open %s: %s", self->dir, strerror(errno));
        nx_wal_destroy(&self);
        return NULL;
    }
    /*  A segment being zero-filled when the broker stopped.               */
    unlinkat(self->dir_fd, S_TMP_NAME, 0);
    return self;
}

void nx_wal_destroy(nx_wal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_wal_t *self = *self_p;
    if (self->flusher_on) {
        pthread_mutex_lock(&self->flock);
        self->stopping = true;
        pthread_cond_broadcast(&self->wake);
        pthread_mutex_unlock(&self->flock);
        pthread_join(self->flusher, NULL);
    }
    if (self->event_fd >= 0)
        close(self->event_fd);
    pthread_mutex_destroy(&self->flock);
    pthread_cond_destroy(&self->wake);
    pthread_cond_destroy(&self->done);
    if (self->cur_fd >= 0)
        close(self->cur_fd);
    for (size_t i = 0; i < self->n_old; i++)
        close(self->old_fds[i]);
    free(self->old_fds);
    if (self->dir_fd >= 0)
        close(self->dir_fd);
    pthread_mutex_destroy(&self->lock);
    free(self->buf);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

uint64_t nx_wal_segment_size(nx_wal_t *self)
{
    return self->seg;
}

/*  The flusher: flushes what the loop wrote up to the target it set, so
    that the loop goes on with the next turn meanwhile (pipelined group
    commit). What was written up to target is in old_fds and cur_fd when
    the flusher looks (a switch moves the old segment to old_fds before
    anything is written to the new one). fdatasync may flush more than
    that (the loop writes on); only target is claimed durable.            */
static void *s_flusher(void *arg)
{
    nx_wal_t *self = arg;
    int *mine = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&self->flock);
    for (;;) {
        uint64_t durable = __atomic_load_n(&self->durable, __ATOMIC_ACQUIRE);
        while (!self->stopping &&
               (self->target <= durable || self->flush_errno || self->flushing)) {
            pthread_cond_wait(&self->wake, &self->flock);
            durable = __atomic_load_n(&self->durable, __ATOMIC_ACQUIRE);
        }
        if (self->target <= durable || self->flush_errno || self->flushing)
            break; /* stopping, nothing left */
        self->flushing = true;
        uint64_t to = self->target;
        int cur = self->cur_fd;
        size_t n = self->n_old;
        if (n > cap) {
            int *grown = realloc(mine, n * sizeof *grown);
            if (!grown) {
                self->flush_errno = ENOMEM;
                pthread_cond_broadcast(&self->done);
                continue;
            }
            mine = grown;
            cap = n;
        }
        if (n)
            memcpy(mine, self->old_fds, n * sizeof *mine);
        self->n_old = 0;
        pthread_mutex_unlock(&self->flock);
        int rc = 0;
        for (size_t i = 0; i < n; i++) {
            if (!rc && fdatasync(mine[i]))
                rc = errno;
            close(mine[i]);
        }
        if (!rc && cur >= 0 && fdatasync(cur))
            rc = errno;
        pthread_mutex_lock(&self->flock);
        self->flushing = false;
        if (rc)
            self->flush_errno = rc;
        else {
            __atomic_store_n(&self->durable, to, __ATOMIC_RELEASE);
            __atomic_add_fetch(&self->flushes, 1, __ATOMIC_RELAXED);
        }
        pthread_cond_broadcast(&self->done);
        uint64_t one = 1;
        if (write(self->event_fd, &one, sizeof one) < 0) {
            /* the counter is saturated: the loop is told already */
        }
    }
    pthread_mutex_unlock(&self->flock);
    free(mine);
    return NULL;
}

int nx_wal_start(nx_wal_t *self, uint64_t lsn, uint32_t prev, char *err, size_t err_size)
{
    uint64_t base = lsn - lsn % self->seg;
    pthread_mutex_lock(&self->lock);
    s_recycle_locked(self, base, base);
    /*  Files of another segment size above the start would be read with
        the wrong cut: nothing of them is needed (recovery applied them).  */
    size_t n = 0;
    uint64_t *bases = s_list(self, &n);
    for (size_t i = 0; bases && i < n; i++)
        if (bases[i] % self->seg != 0) {
            char name[S_NAME_LEN + 1];
            s_name(name, bases[i]);
            unlinkat(self->dir_fd, name, 0);
        }
    free(bases);
    pthread_mutex_unlock(&self->lock);
    self->cur_fd = s_open_segment(self, base, self->sync);
    if (self->cur_fd < 0) {
        snprintf(err, err_size, "log: cannot open the segment at %" PRIu64 " in %s: %s", base,
                 self->dir, strerror(errno));
        return -1;
    }
    self->cur_base = base;
    self->pos = lsn;
    self->head = prev;
    self->turn_crc = prev;
    self->target = lsn;
    __atomic_store_n(&self->written, lsn, __ATOMIC_RELEASE);
    __atomic_store_n(&self->durable, lsn, __ATOMIC_RELEASE);
    if (self->sync && !self->flusher_on) {
        int rc = pthread_create(&self->flusher, NULL, s_flusher, self);
        if (rc) {
            snprintf(err, err_size, "log: cannot start the flusher thread: %s", strerror(rc));
            return -1;
        }
        self->flusher_on = true;
    }
    return 0;
}

/*  ---- Writing --------------------------------------------------------------- */

/*  The largest record data a frame can carry.                              */
static size_t s_record_max(nx_wal_t *self)
{
    return (size_t)self->seg - NX_WAL_FRAME_HEAD - S_MARK - NX_WAL_RECORD_HEAD;
}

uint8_t *nx_wal_add(nx_wal_t *self, int type, size_t len)
{
    if (len > s_record_max(self))
        return NULL;
    size_t need = self->len + NX_WAL_RECORD_HEAD + len;
    if (need > self->cap) {
        size_t cap = self->cap ? self->cap : 64 << 10;
        while (cap < need)
            cap *= 2;
        uint8_t *grown = realloc(self->buf, cap);
        if (!grown)
            return NULL;
        self->buf = grown;
        self->cap = cap;
    }
    uint8_t *p = self->buf + self->len;
    s_put_u32(p, (uint32_t)(len + 1));
    p[4] = (uint8_t)type;
    self->len = need;
    self->count++;
    return p + NX_WAL_RECORD_HEAD;
}

static uint8_t *s_kv(nx_wal_t *self, int type, int db, const void *key, size_t key_len,
                     size_t value_len)
{
    if (key_len > UINT16_MAX || db < 0 || db > UINT8_MAX)
        return NULL;
    uint8_t *p = nx_wal_add(self, type, 3 + key_len + value_len);
    if (!p)
        return NULL;
    p[0] = (uint8_t)db;
    p[1] = (uint8_t)(key_len >> 8);
    p[2] = (uint8_t)key_len;
    memcpy(p + 3, key, key_len);
    return p + 3 + key_len;
}

int nx_wal_put(nx_wal_t *self, int db, const void *key, size_t key_len, const void *value,
               size_t value_len)
{
    uint8_t *p = s_kv(self, NX_WAL_PUT, db, key, key_len, value_len);
    if (!p)
        return -1;
    if (value_len)
        memcpy(p, value, value_len);
    return 0;
}

int nx_wal_del(nx_wal_t *self, int db, const void *key, size_t key_len)
{
    return s_kv(self, NX_WAL_DEL, db, key, key_len, 0) ? 0 : -1;
}

size_t nx_wal_pending(nx_wal_t *self)
{
    return self->len;
}

static void s_reset_buf(nx_wal_t *self)
{
    self->len = 0;
    self->count = 0;
    if (self->cap > S_BUF_KEEP) {
        free(self->buf);
        self->buf = NULL;
        self->cap = 0;
    }
}

void nx_wal_discard(nx_wal_t *self)
{
    s_reset_buf(self);
}

/*  Makes the segment at base the current one. The one it replaces goes
    to old_fds: the next flush flushes and closes it.                       */
static int s_switch(nx_wal_t *self, uint64_t base)
{
    if (self->cur_fd >= 0 && self->cur_base == base)
        return 0;
    int fd = s_open_segment(self, base, false);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&self->flock);
    if (self->cur_fd >= 0) {
        if (self->n_old == self->cap_old) {
            size_t cap = self->cap_old ? self->cap_old * 2 : 4;
            int *grown = realloc(self->old_fds, cap * sizeof *grown);
            if (!grown) {
                pthread_mutex_unlock(&self->flock);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            self->old_fds = grown;
            self->cap_old = cap;
        }
        self->old_fds[self->n_old++] = self->cur_fd;
    }
    self->cur_fd = fd;
    self->cur_base = base;
    pthread_mutex_unlock(&self->flock);
    return 0;
}

/*  Writes one frame at *pos (header, body, end marker) and advances *pos
    and *head.                                                              */
static int s_write_frame(nx_wal_t *self, uint64_t *pos, uint32_t *head, const uint8_t *body,
                         size_t len, uint32_t flags, uint32_t count)
{
    static const uint8_t zeros[S_MARK];
    uint64_t base = *pos - *pos % self->seg;
    if (s_switch(self, base))
        return -1;
    uint8_t h[NX_WAL_FRAME_HEAD];
    s_header(h, *pos, (uint32_t)len, *head, flags, count);
    uint32_t crc = s_crc(h, body, len);
    s_put_u32(h, crc);
    uint64_t end = *pos + NX_WAL_FRAME_HEAD + len;
    uint64_t room = base + self->seg - end;
    struct iovec iov[3] = {{h, sizeof h}, {(void *)body, len}, {(void *)zeros, 0}};
    iov[2].iov_len = room < S_MARK ? (size_t)room : S_MARK;
    if (s_pwritev_all(self->cur_fd, iov, 3, (off_t)(*pos - base)))
        return -1;
    self->frames++;
    *pos = end;
    *head = crc;
    return 0;
}

int nx_wal_write(nx_wal_t *self)
{
    if (self->len == 0)
        return 0;
    uint64_t pos = self->pos;
    uint32_t head = self->head;
    size_t off = 0;
    uint32_t left = self->count;
    while (off < self->len) {
        uint64_t room = self->seg - pos % self->seg;
        size_t take = self->len - off;
        uint32_t count = left;
        if (NX_WAL_FRAME_HEAD + take + S_MARK > room) {
            /*  Whole records that fit the rest of the segment.            */
            take = 0;
            count = 0;
            while (off + take < self->len) {
                size_t rec = NX_WAL_RECORD_HEAD - 1 + s_get_u32(self->buf + off + take);
                if (NX_WAL_FRAME_HEAD + take + rec + S_MARK > room)
                    break;
                take += rec;
                count++;
            }
        }
        if (take == 0) {
            /*  Nothing fits: pad the rest (with fewer than a header's
                bytes left, readers skip them unasked) and go on at the
                next segment.                                              */
            uint64_t next = pos - pos % self->seg + self->seg;
            /*  A PAD between two frames of one turn carries MORE too: it
                is no turn's end (recovery and a standby's copy count turns
                by the frames without MORE).                               */
            uint32_t pad = NX_WAL_F_PAD | (off ? NX_WAL_F_MORE : 0);
            if (room >= NX_WAL_FRAME_HEAD && s_write_frame(self, &pos, &head, NULL, 0, pad, 0))
                return -1;
            pos = next;
            continue;
        }
        uint32_t flags = off + take < self->len ? NX_WAL_F_MORE : 0;
        if (s_write_frame(self, &pos, &head, self->buf + off, take, flags, count))
            return -1;
        off += take;
        left -= count;
    }
    self->pos = pos;
    self->head = head;
    self->turn_crc = head;
    __atomic_store_n(&self->written, pos, __ATOMIC_RELEASE);
    s_reset_buf(self);
    return 0;
}

int nx_wal_flush_async(nx_wal_t *self)
{
    uint64_t written = nx_wal_written(self);
    if (!self->sync) {
        for (size_t i = 0; i < self->n_old; i++)
            close(self->old_fds[i]);
        self->n_old = 0;
        __atomic_store_n(&self->durable, written, __ATOMIC_RELEASE);
        return 0;
    }
    pthread_mutex_lock(&self->flock);
    int e = self->flush_errno;
    if (!e && self->target < written) {
        self->target = written;
        pthread_cond_signal(&self->wake);
    }
    pthread_mutex_unlock(&self->flock);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

int nx_wal_flush_now(nx_wal_t *self)
{
    if (!self->sync)
        return nx_wal_flush_async(self);
    uint64_t written = nx_wal_written(self);
    pthread_mutex_lock(&self->flock);
    if (self->flush_errno || self->flushing ||
        self->target > __atomic_load_n(&self->durable, __ATOMIC_ACQUIRE)) {
        /*  A round runs (or is due): the flusher takes this one too.      */
        pthread_mutex_unlock(&self->flock);
        return nx_wal_flush_async(self) ? -1 : 1;
    }
    self->flushing = true;
    self->target = written;
    int cur = self->cur_fd;
    size_t n = self->n_old;
    int *old = n ? malloc(n * sizeof *old) : NULL;
    if (n && !old) {
        self->flushing = false;
        pthread_mutex_unlock(&self->flock);
        return nx_wal_flush_async(self) ? -1 : 1;
    }
    if (n)
        memcpy(old, self->old_fds, n * sizeof *old);
    self->n_old = 0;
    pthread_mutex_unlock(&self->flock);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rc && fdatasync(old[i]))
            rc = errno;
        close(old[i]);
    }
    free(old);
    if (!rc && cur >= 0 && fdatasync(cur))
        rc = errno;
    pthread_mutex_lock(&self->flock);
    self->flushing = false;
    if (rc)
        self->flush_errno = rc;
    else {
        __atomic_store_n(&self->durable, written, __ATOMIC_RELEASE);
        __atomic_add_fetch(&self->flushes, 1, __ATOMIC_RELAXED);
    }
    pthread_cond_broadcast(&self->done);
    if (self->target > written)
        pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->flock);
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}

int nx_wal_flush(nx_wal_t *self)
{
    if (nx_wal_flush_async(self))
        return -1;
    if (!self->sync)
        return 0;
    uint64_t written = nx_wal_written(self);
    pthread_mutex_lock(&self->flock);
    while (!self->flush_errno && __atomic_load_n(&self->durable, __ATOMIC_ACQUIRE) < written)
        pthread_cond_wait(&self->done, &self->flock);
    int e = self->flush_errno;
    pthread_mutex_unlock(&self->flock);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

int nx_wal_flush_fd(nx_wal_t *self)
{
    return self->event_fd;
}

int nx_wal_flush_ack(nx_wal_t *self)
{
    uint64_t n;
    if (self->event_fd >= 0 && read(self->event_fd, &n, sizeof n) < 0) {
        /* nothing signalled: fine */
    }
    pthread_mutex_lock(&self->flock);
    int e = self->flush_errno;
    pthread_mutex_unlock(&self->flock);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

uint64_t nx_wal_written(nx_wal_t *self)
{
    return __atomic_load_n(&self->written, __ATOMIC_ACQUIRE);
}

uint64_t nx_wal_durable(nx_wal_t *self)
{
    return __atomic_load_n(&self->durable, __ATOMIC_ACQUIRE);
}

uint32_t nx_wal_head_crc(nx_wal_t *self)
{
    return self->head;
}

void nx_wal_stats(nx_wal_t *self, nx_wal_stats_t *st)
{
    memset(st, 0, sizeof *st);
    st->written = nx_wal_written(self);
    st->durable = nx_wal_durable(self);
    st->frames = self->frames;
    st->flushes = __atomic_load_n(&self->flushes, __ATOMIC_RELAXED);
    st->segment_size = self->seg;
    pthread_mutex_lock(&self->lock);
    size_t n = 0;
    free(s_list(self, &n));
    pthread_mutex_unlock(&self->lock);
    st->segments = n;
}

/*  ---- Segments (checkpointer) ------------------------------------------------ */

void nx_wal_recycle(nx_wal_t *self, uint64_t below)
{
    uint64_t hold = __atomic_load_n(&self->hold, __ATOMIC_ACQUIRE);
    if (hold != UINT64_MAX && hold - hold % self->seg < below)
        below = hold - hold % self->seg;
    uint64_t written = nx_wal_written(self);
    uint64_t cur = written - written % self->seg;
    pthread_mutex_lock(&self->lock);
    s_recycle_locked(self, below, cur);
    pthread_mutex_unlock(&self->lock);
}

int nx_wal_prepare(nx_wal_t *self)
{
    uint64_t written = nx_wal_written(self);
    uint64_t next = written - written % self->seg + self->seg;
    if (s_exists(self, next))
        return 0;
    /*  Zero-filled outside the lock (it takes a while); renamed under it,
        unless the loop got there first.                                   */
    int fd = openat(self->dir_fd, S_TMP_NAME, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = s_fill(self, fd);
    close(fd);
    if (rc == 0) {
        char name[S_NAME_LEN + 1];
        s_name(name, next);
        pthread_mutex_lock(&self->lock);
        if (!s_exists(self, next)) {
            rc = renameat(self->dir_fd, S_TMP_NAME, self->dir_fd, name);
            if (rc == 0 && self->sync && (rc = fsync(self->dir_fd)) != 0)
                self->names_unsynced = true; /* s_open_segment tries again */
        }
        pthread_mutex_unlock(&self->lock);
    }
    unlinkat(self->dir_fd, S_TMP_NAME, 0);
    return rc;
}

/*  ---- Reading -------------------------------------------------------------------- */

nx_wal_reader_t *nx_wal_reader_new(const char *dir, uint64_t segment_size)
{
    nx_wal_reader_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->dir = strdup(dir);
    self->seg = segment_size < NX_WAL_SEGMENT_MIN ? NX_WAL_SEGMENT_MIN : segment_size;
    self->fd = -1;
    if (!self->dir) {
        free(self);
        return NULL;
    }
    return self;
}

void nx_wal_reader_destroy(nx_wal_reader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_wal_reader_t *self = *self_p;
    if (self->fd >= 0)
        close(self->fd);
    free(self->buf);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/*  Opens the segment at base; 0, 1 when it does not exist, -1 on error.   */
static int s_reader_open(nx_wal_reader_t *self, uint64_t base)
{
    if (self->fd >= 0 && self->base == base)
        return 0;
    if (self->fd >= 0)
        close(self->fd);
    self->fd = -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%016" PRIx64 ".log", self->dir, base);
    self->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (self->fd < 0)
        return errno == ENOENT ? 1 : -1;
    self->base = base;
    return 0;
}

static int s_reserve(nx_wal_reader_t *self, size_t n)
{
    if (n <= self->cap)
        return 0;
    uint8_t *grown = realloc(self->buf, n);
    if (!grown)
        return -1;
    self->buf = grown;
    self->cap = n;
    return 0;
}

/*  Fills frame from the checked header h (its body follows it) of the frame
    at lsn: where the next frame starts (after a PAD, the next segment; a
    position in a segment's last 31 bytes means the next segment too).    */
static void s_fill_frame(nx_wal_frame_t *frame, const uint8_t *h, uint64_t lsn, uint64_t seg)
{
    uint32_t len = s_get_u32(h + 16);
    frame->lsn = lsn;
    frame->crc = s_get_u32(h);
    frame->flags = s_get_u32(h + 24);
    frame->count = s_get_u32(h + 28);
    frame->body = h + NX_WAL_FRAME_HEAD;
    frame->len = len;
    frame->next = lsn + NX_WAL_FRAME_HEAD + len;
    if (frame->flags & NX_WAL_F_PAD)
        frame->next = lsn - lsn % seg + seg;
    else if (seg - frame->next % seg < NX_WAL_FRAME_HEAD)
        frame->next += seg - frame->next % seg;
}

int nx_wal_reader_read(nx_wal_reader_t *self, uint64_t lsn, uint32_t prev, bool verify,
                       nx_wal_frame_t *frame, bool *torn)
{
    bool dummy;
    if (!torn)
        torn = &dummy;
    *torn = false;
    uint64_t off = lsn % self->seg;
    if (self->seg - off < NX_WAL_FRAME_HEAD) {
        lsn += self->seg - off;
        off = 0;
    }
    uint64_t base = lsn - off;
    frame->lsn = lsn;
    frame->next = lsn;
    int rc = s_reader_open(self, base);
    if (rc)
        return rc > 0 ? 0 : -1;
    if (s_reserve(self, NX_WAL_FRAME_HEAD))
        return -1;
    uint8_t *h = self->buf;
    ssize_t got = s_pread_all(self->fd, h, NX_WAL_FRAME_HEAD, (off_t)off);
    if (got < 0)
        return -1;
    if (got < NX_WAL_FRAME_HEAD) {
        /*  The end of the file: a file cut short inside a frame is torn.  */
        *torn = !s_all_zero(h, (size_t)got);
        return 0;
    }
    if (s_all_zero(h, NX_WAL_FRAME_HEAD))
        return 0;
    uint32_t len = s_get_u32(h + 16);
    if (s_get_u32(h + 4) != S_MAGIC || len > self->seg - off - NX_WAL_FRAME_HEAD) {
        *torn = true;
        return 0;
    }
    uint64_t at = nx_get_u64(h + 8);
    if (!verify && at == lsn) {
        /*  The loop's own frames, read back: trusted past the header.     */
        if (s_reserve(self, NX_WAL_FRAME_HEAD + (size_t)len))
            return -1;
        h = self->buf;
        got = s_pread_all(self->fd, h + NX_WAL_FRAME_HEAD, len, (off_t)(off + NX_WAL_FRAME_HEAD));
        if (got < 0)
            return -1;
        if ((size_t)got < len) {
            *torn = true;
            return 0;
        }
    } else {
        if (s_reserve(self, NX_WAL_FRAME_HEAD + (size_t)len))
            return -1;
        h = self->buf;
        got = s_pread_all(self->fd, h + NX_WAL_FRAME_HEAD, len, (off_t)(off + NX_WAL_FRAME_HEAD));
        if (got < 0)
            return -1;
        if ((size_t)got < len || s_get_u32(h) != s_crc(h, h + NX_WAL_FRAME_HEAD, len)) {
            *torn = true;
            return 0;
        }
        /*  A frame that checks but names another position, or continues
            another chain, is left from an earlier life of the segment (or
            a log that a crash cut off): nothing more was written here.    */
        if (at != lsn || s_get_u32(h + 20) != prev)
            return 0;
    }
    s_fill_frame(frame, h, lsn, self->seg);
    return 1;
}

int nx_wal_reader_beyond(nx_wal_reader_t *self, uint64_t lsn, uint64_t *first, uint64_t *end,
                         uint64_t *frames)
{
    *first = *end = lsn;
    *frames = 0;
    uint64_t off = lsn % self->seg;
    if (self->seg - off < NX_WAL_FRAME_HEAD) {
        lsn += self->seg - off;
        off = 0;
    }
    int rc = s_reader_open(self, lsn - off);
    if (rc)
        return rc > 0 ? 0 : -1;
    uint8_t h[NX_WAL_FRAME_HEAD];
    ssize_t got = s_pread_all(self->fd, h, NX_WAL_FRAME_HEAD, (off_t)off);
    if (got < 0)
        return -1;
    uint32_t len = got == NX_WAL_FRAME_HEAD ? s_get_u32(h + 16) : 0;
    if (got < NX_WAL_FRAME_HEAD || s_get_u32(h + 4) != S_MAGIC || nx_get_u64(h + 8) != lsn ||
        len > self->seg - off - NX_WAL_FRAME_HEAD)
        return 0;
    nx_wal_frame_t f;
    s_fill_frame(&f, h, lsn, self->seg);
    uint64_t at = f.next;
    uint32_t prev = f.crc;
    *first = at;
    for (;;) {
        rc = nx_wal_reader_read(self, at, prev, true, &f, NULL);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        (*frames)++;
        at = f.next;
        prev = f.crc;
    }
    *end = at;
    return *frames > 0;
}

int nx_wal_record_next(const uint8_t *body, size_t len, size_t *pos, int *type,
                       const uint8_t **data, size_t *data_len)
{
    if (*pos >= len)
        return 0;
    if (len - *pos < NX_WAL_RECORD_HEAD)
        return -1;
    uint32_t n = s_get_u32(body + *pos);
    if (n < 1 || n - 1 > len - *pos - NX_WAL_RECORD_HEAD)
        return -1;
    *type = body[*pos + 4];
    *data = body + *pos + NX_WAL_RECORD_HEAD;
    *data_len = n - 1;
    *pos += NX_WAL_RECORD_HEAD + n - 1;
    return 1;
}

int nx_wal_record_kv(const uint8_t *data, size_t data_len, int *db, const uint8_t **key,
                     size_t *key_len, const uint8_t **value, size_t *value_len)
{
    if (data_len < 3)
        return -1;
    size_t klen = (size_t)data[1] << 8 | data[2];
    if (klen == 0 || klen > data_len - 3)
        return -1;
    *db = data[0];
    *key = data + 3;
    *key_len = klen;
    *value = data + 3 + klen;
    *value_len = data_len - 3 - klen;
    return 0;
}

/*  ---- Copying another log ------------------------------------------------------ */

long nx_wal_frame_parse(const uint8_t *data, size_t avail, uint64_t lsn, uint32_t prev,
                        uint64_t segment_size, nx_wal_frame_t *frame)
{
    uint64_t seg = segment_size;
    if (seg < NX_WAL_SEGMENT_MIN || avail < NX_WAL_FRAME_HEAD)
        return -1;
    uint64_t off = lsn % seg;
    if (seg - off < NX_WAL_FRAME_HEAD) {
        lsn += seg - off;
        off = 0;
    }
    uint32_t len = s_get_u32(data + 16);
    if (s_get_u32(data + 4) != S_MAGIC || nx_get_u64(data + 8) != lsn ||
        s_get_u32(data + 20) != prev || len > seg - off - NX_WAL_FRAME_HEAD ||
        avail - NX_WAL_FRAME_HEAD < len)
        return -1;
    if (s_get_u32(data) != s_crc(data, data + NX_WAL_FRAME_HEAD, len))
        return -1;
    s_fill_frame(frame, data, lsn, seg);
    return (long)(NX_WAL_FRAME_HEAD + len);
}

long nx_wal_copy_frame(nx_wal_t *self, const uint8_t *data, size_t avail, nx_wal_frame_t *frame)
{
    static const uint8_t zeros[S_MARK];
    nx_wal_frame_t f;
    long n = nx_wal_frame_parse(data, avail, self->pos, self->head, self->seg, &f);
    if (n < 0) {
        errno = EINVAL;
        return -1;
    }
    uint64_t base = f.lsn - f.lsn % self->seg;
    if (s_switch(self, base))
        return -1;
    uint64_t room = base + self->seg - (f.lsn + (uint64_t)n);
    struct iovec iov[2] = {{(void *)data, (size_t)n},
                           {(void *)zeros, room < S_MARK ? (size_t)room : S_MARK}};
    if (s_pwritev_all(self->cur_fd, iov, 2, (off_t)(f.lsn - base)))
        return -1;
    self->frames++;
    self->pos = f.next;
    self->head = f.crc;
    if (!(f.flags & NX_WAL_F_MORE)) {
        self->turn_crc = f.crc;
        __atomic_store_n(&self->written, f.next, __ATOMIC_RELEASE);
    }
    if (frame)
        *frame = f;
    return n;
}

void nx_wal_copy_rewind(nx_wal_t *self)
{
    self->pos = nx_wal_written(self);
    self->head = self->turn_crc;
}

uint32_t nx_wal_turn_crc(nx_wal_t *self)
{
    return self->turn_crc;
}

void nx_wal_hold(nx_wal_t *self, uint64_t lsn)
{
    __atomic_store_n(&self->hold, lsn, __ATOMIC_RELEASE);
}
