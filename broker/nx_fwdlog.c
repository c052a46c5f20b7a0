/*  =========================================================================
    nx_fwdlog - the forward log. nx_fwdlog.h is the contract.

    No fsync here, on purpose: the log is for a crash of the process, which
    leaves the page cache (and so every completed pwrite) in place; what a
    power cut does is handled by the boot id. That keeps the cost of
    forwarding early at two pwrites per turn.
    =========================================================================
*/

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_fwdlog.h"

#define S_MAGIC      "NXFWD001"
#define S_HEADER     72   /* magic 8, boot 40, first 8, count 4, len 4, check 8 */
#define S_BODY_AT    4096 /* the body starts on its own page                    */
#define S_RECORD_MIN (4 + NX_EVENT_HEAD + 1)

struct _nx_fwdlog_t {
    int fd;
    char boot[NX_FWDLOG_BOOT_MAX];
    uint8_t *body;   /* max_body bytes, allocated once */
    size_t max_body; /* bound of one turn's body       */
    size_t len;      /* bytes of the body so far       */
    uint32_t count;  /* records of the body so far     */
};

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

static uint64_t s_fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/*  Writes all of buf at off; a short write is retried, an error is not.    */
static int s_pwrite_all(int fd, const uint8_t *buf, size_t n, off_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, buf, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

static int s_write_header(nx_fwdlog_t *self, uint64_t first_seq, uint32_t count, uint32_t len)
{
    uint8_t h[S_HEADER];
    memcpy(h, S_MAGIC, 8);
    memcpy(h + 8, self->boot, NX_FWDLOG_BOOT_MAX);
    nx_put_u64(h + 48, first_seq);
    s_put_u32(h + 56, count);
    s_put_u32(h + 60, len);
    nx_put_u64(h + 64, s_fnv1a(h, 64));
    return s_pwrite_all(self->fd, h, S_HEADER, 0);
}

int nx_fwdlog_boot_id(char *buf)
{
    memset(buf, 0, NX_FWDLOG_BOOT_MAX);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, NX_FWDLOG_BOOT_MAX - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return n ? 0 : -1;
}

nx_fwdlog_t *nx_fwdlog_new(const char *path, const char *boot, size_t max_body, char *err,
                           size_t err_size)
{
    nx_fwdlog_t *self = calloc(1, sizeof *self);
    if (self)
        self->body = malloc(max_body ? max_body : 1);
    if (!self || !self->body) {
        snprintf(err, err_size, "forward log: out of memory");
        free(self);
        return NULL;
    }
    self->max_body = max_body;
    strncpy(self->boot, boot ? boot : "", NX_FWDLOG_BOOT_MAX - 1);
    self->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->fd < 0) {
        snprintf(err, err_size, "forward log %s: %s", path, strerror(errno));
        free(self->body);
        free(self);
        return NULL;
    }
    return self;
}

void nx_fwdlog_destroy(nx_fwdlog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_fwdlog_t *self = *self_p;
    close(self->fd);
    free(self->body);
    free(self);
    *self_p = NULL;
}

void nx_fwdlog_reset(nx_fwdlog_t *self)
{
    self->len = 0;
    self->count = 0;
}

nx_fwdlog_mark_t nx_fwdlog_mark(nx_fwdlog_t *self)
{
    return (nx_fwdlog_mark_t){self->len, self->count};
}

void nx_fwdlog_rollback(nx_fwdlog_t *self, nx_fwdlog_mark_t mark)
{
    if (mark.len <= self->len) {
        self->len = mark.len;
        self->count = mark.count;
    }
}

uint8_t *nx_fwdlog_add(nx_fwdlog_t *self, size_t len)
{
    if (len > UINT32_MAX || self->len + 4 + len > self->max_body)
        return NULL;
    uint8_t *p = self->body + self->len;
    s_put_u32(p, (uint32_t)len);
    self->len += 4 + len;
    self->count++;
    return p + 4;
}

const uint8_t *nx_fwdlog_next(nx_fwdlog_t *self, size_t *pos, size_t *len)
{
    if (*pos + 4 > self->len)
        return NULL;
    *len = s_get_u32(self->body + *pos);
    const uint8_t *p = self->body + *pos + 4;
    *pos += 4 + *len;
    return p;
}

int nx_fwdlog_write(nx_fwdlog_t *self, uint64_t first_seq, nx_fwdlog_mark_t from)
{
    if (from.len > self->len || s_pwrite_all(self->fd, self->body + from.len, self->len - from.len,
                                             S_BODY_AT + (off_t)from.len))
        return -1;
    return s_write_header(self, first_seq, self->count, (uint32_t)self->len);
}

int nx_fwdlog_clear(nx_fwdlog_t *self)
{
    return s_write_header(self, 0, 0, 0);
}

int64_t nx_fwdlog_recover(nx_fwdlog_t *self, uint64_t after_seq, nx_fwdlog_fn *fn, void *arg,
                          const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    *why = NULL;
    uint8_t h[S_HEADER];
    ssize_t r = pread(self->fd, h, S_HEADER, 0);
    if (r == 0)
        return 0;
    if (r != S_HEADER || memcmp(h, S_MAGIC, 8) || nx_get_u64(h + 64) != s_fnv1a(h, 64)) {
        *why = "the header is damaged";
        return 0;
    }
    if (!self->boot[0] || memcmp(h + 8, self->boot, NX_FWDLOG_BOOT_MAX)) {
        *why = "it was written before a reboot";
        return 0;
    }
    uint64_t first = nx_get_u64(h + 48);
    uint32_t count = s_get_u32(h + 56), len = s_get_u32(h + 60);
    if (count == 0)
        return 0;
    if (len > self->max_body || (uint64_t)count * S_RECORD_MIN > len) {
        *why = "the header is damaged";
        return 0;
    }
    if (pread(self->fd, self->body, len, S_BODY_AT) != (ssize_t)len) {
        *why = "the body is short";
        return 0;
    }
    /*  Check every record before calling fn once: all or nothing.          */
    size_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        nx_event_msg_t ev;
        uint32_t n = pos + 4 <= len ? s_get_u32(self->body + pos) : 0;
        if (!n || pos + 4 + n > len || nx_event_msg_decode(self->body + pos + 4, n, &ev) ||
            ev.seq != first + i) {
            *why = "a record is damaged";
            return 0;
        }
        pos += 4 + n;
    }
    *why = NULL;
    int64_t calls = 0;
    pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t n = s_get_u32(self->body + pos);
        nx_event_msg_t ev;
        nx_event_msg_decode(self->body + pos + 4, n, &ev);
        pos += 4 + n;
        if (ev.seq <= after_seq)
            continue;
        if (fn(&ev, arg))
            return -1;
        calls++;
    }
    return calls;
}
