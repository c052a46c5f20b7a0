/*  =========================================================================
    nx_disk - the data disk's free-space reserve. nx_disk.h is the contract.
    =========================================================================
*/

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "nx_disk.h"

uint64_t nx_disk_free(const char *dir)
{
    struct statvfs st;
    if (!dir || statvfs(dir, &st) != 0)
        return UINT64_MAX;
    return (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
}

void nx_disk_init(nx_disk_t *self, const char *dir, uint64_t reserve, uint64_t segment,
                  uint64_t turn_bytes)
{
    *self = (nx_disk_t){.dir = dir,
                        .reserve = reserve,
                        .fixed = 3 * segment + turn_bytes,
                        .segment = segment,
                        .turn = turn_bytes};
    self->margin = reserve / 4 > segment ? reserve / 4 : segment;
}

uint64_t nx_disk_need(const nx_disk_t *self, uint64_t lag)
{
    return self->reserve + self->fixed + 2 * lag;
}

bool nx_disk_full(nx_disk_t *self, uint64_t now, uint64_t written, uint64_t lag, bool *changed)
{
    *changed = false;
    if (self->at_us && now - self->at_us < NX_DISK_CHECK_US &&
        written - self->at_lsn < NX_DISK_CHECK_BYTES)
        return self->full;
    self->at_us = now;
    self->at_lsn = written;
    self->free = nx_disk_free(self->dir);
    self->need = nx_disk_need(self, lag);
    /*  Full until there is a margin over the need again: what a refused
        turn leaves the checkpointer to apply shrinks the need, and writes
        should not come and go with it.                                    */
    bool full = self->free < self->need + (self->full ? self->margin : 0);
    *changed = full != self->full;
    self->full = full;
    return full;
}

/*  n bytes in the largest binary unit that keeps it whole-ish: "64 MiB". */
static void s_size(uint64_t n, char *buf, size_t size)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    double v = (double)n;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void nx_disk_explain(const nx_disk_t *self, uint64_t lag, char *buf, size_t size)
{
    char r[32], s3[32], t[32], l[32];
    s_size(self->reserve, r, sizeof r);
    s_size(3 * self->segment, s3, sizeof s3);
    s_size(self->turn, t, sizeof t);
    s_size(2 * lag, l, sizeof l);
    snprintf(buf, size,
             "disk_reserve %s + three log segments %s (wal_segment) + a turn's records %s "
             "(batch_bytes + 4 MiB) + twice the log not yet in the store %s",
             r, s3, t, l);
}

int nx_disk_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}
