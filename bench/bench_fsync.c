/*  =========================================================================
    bench_fsync - what one flush costs on the disk that holds the data: the
    floor under an acknowledged change. nexusd acknowledges a change after
    one write + fdatasync of its write-ahead log, whose segment files are
    preallocated (zero-filled once) and reused, so the figure to hold
    bench_ack's one-at-a-time p50 against is `fsync_prealloc_4k` (the bar:
    ack p50 <= its p50 + 250 us, docs/benchmarks.md).

    Four ways of making 4 KiB durable, each n times (after 50 warm-up), in
    a fresh file under $NEXUS_BENCH_DIR (or /tmp), removed afterwards:
      fsync_prealloc_4k  pwrite into a zero-filled, flushed file, fdatasync
      fsync_append_4k    pwrite at the end of a growing file, fdatasync
                         (the file size changes: metadata goes with it)
      fsync_odirect_4k   pwrite with O_DIRECT|O_DSYNC into a zero-filled
                         file (no page cache, no separate flush)
      fsync_log_200B     what the log does for a small acknowledged change:
                         200-byte writes back to back into a zero-filled
                         file (several per page), fdatasync after each

    Prints one line per figure: p50, p99, p999, max in microseconds.
    Usage: bench_fsync [--n 2000]
    =========================================================================
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"

#define S_BLOCK  4096
#define S_WARMUP 50
#define S_FILL   (64u << 20)

static char s_path[512];

/*  A file of S_FILL zero bytes, written and flushed (the log's segments
    are made this way once, then reused). Returns the fd or -1.           */
static int s_zero_filled(int extra_flags)
{
    int fd = open(s_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    char *zeros = calloc(1, 1 << 20);
    for (uint64_t off = 0; zeros && off < S_FILL; off += 1 << 20)
        if (pwrite(fd, zeros, 1 << 20, (off_t)off) != 1 << 20)
            break;
    free(zeros);
    if (fdatasync(fd) != 0) {
        close(fd);
        return -1;
    }
    if (!extra_flags)
        return fd;
    close(fd);
    return open(s_path, O_RDWR | extra_flags);
}

/*  Runs n (+ warm-up) writes of size bytes at consecutive offsets from 0;
    flush: fdatasync after each. Prints the line for name.                 */
static int s_run(const char *name, int fd, size_t size, bool flush, size_t n, void *buf)
{
    uint64_t *lat = calloc(n, sizeof *lat);
    if (!lat)
        return -1;
    off_t off = 0;
    for (size_t i = 0; i < n + S_WARMUP; i++) {
        memset(buf, (int)(i & 0xff) | 1, size);
        uint64_t t0 = bench_now_ns();
        if (pwrite(fd, buf, size, off) != (ssize_t)size || (flush && fdatasync(fd) != 0)) {
            fprintf(stderr, "# %s: %s\n", name, strerror(errno));
            free(lat);
            return -1;
        }
        uint64_t t1 = bench_now_ns();
        if (i >= S_WARMUP)
            lat[i - S_WARMUP] = t1 - t0;
        off += (off_t)size;
        if ((uint64_t)off + size > S_FILL)
            off = 0;
    }
    bench_pct_t p;
    bench_percentiles(lat, n, &p);
    printf("%s: p50 %.0f us, p99 %.0f us, p999 %.0f us, max %.0f us (n=%zu)\n", name, p.p50_us,
           p.p99_us, p.p999_us, p.max_us, n);
    /*  The same for bench/compare, which reads RESULT lines.              */
    printf("RESULT workload=%s system=disk p50_us=%.0f p99_us=%.0f n=%zu\n", name, p.p50_us,
           p.p99_us, n);
    fflush(stdout);
    free(lat);
    return 0;
}

static const char *s_usage =
    "usage: bench_fsync [options]\n"
    "  the floor under an acknowledged change: write + fdatasync on this disk\n"
    "  --n N   writes per case (2000)\n"
    "  --only-prealloc 1   only the first case, the floor under the log's flush\n"
    "  files go to $NEXUS_BENCH_DIR (or /tmp): put it on the data disk\n";

int main(int argc, char **argv)
{
    bench_usage(argc, argv, s_usage);
    size_t n = bench_arg_u64(argc, argv, "n", 2000);
    if (n < 10 || n > S_FILL / S_BLOCK - S_WARMUP) {
        fprintf(stderr, "--n must be 10..%u\n", S_FILL / S_BLOCK - S_WARMUP);
        return 2;
    }
    const char *dir = getenv("NEXUS_BENCH_DIR");
    snprintf(s_path, sizeof s_path, "%s/nexus-bench-fsync-%d", dir && *dir ? dir : "/tmp",
             (int)getpid());
    void *buf = NULL;
    if (posix_memalign(&buf, S_BLOCK, S_BLOCK)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    int status = 0;

    int fd = s_zero_filled(0);
    if (fd < 0 || s_run("fsync_prealloc_4k", fd, S_BLOCK, true, n, buf))
        status = 1;
    if (fd >= 0)
        close(fd);
    if (bench_arg_u64(argc, argv, "only-prealloc", 0)) {
        unlink(s_path);
        free(buf);
        return status;
    }

    fd = open(s_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || s_run("fsync_append_4k", fd, S_BLOCK, true, n, buf))
        status = 1;
    if (fd >= 0)
        close(fd);

    fd = s_zero_filled(O_DIRECT | O_DSYNC);
    if (fd < 0) {
        printf("fsync_odirect_4k: not supported here (%s)\n", strerror(errno));
    } else {
        if (s_run("fsync_odirect_4k", fd, S_BLOCK, false, n, buf))
            status = 1;
        close(fd);
    }

    fd = s_zero_filled(0);
    if (fd < 0 || s_run("fsync_log_200B", fd, 200, true, n, buf))
        status = 1;
    if (fd >= 0)
        close(fd);

    unlink(s_path);
    free(buf);
    return status;
}
