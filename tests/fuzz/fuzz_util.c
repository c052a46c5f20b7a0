/*  =========================================================================
    fuzz_util - helpers of the fuzz targets (fuzz_util.h).
    =========================================================================
*/

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_util.h"

size_t fz_split(const uint8_t *data, size_t size, const char *sep, size_t sep_len, fz_part_t *parts,
                size_t max)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; n + 1 < max && sep_len && i + sep_len <= size;) {
        if (memcmp(data + i, sep, sep_len) == 0) {
            parts[n++] = (fz_part_t){data + start, i - start};
            i += sep_len;
            start = i;
        } else
            i++;
    }
    parts[n++] = (fz_part_t){data + start, size - start};
    return n;
}

const char *fz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("nexus-fuzz", MFD_CLOEXEC);
        FZ_CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate: %s", strerror(errno));
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);
        FZ_CHECK(n > 0, "pwrite: %s", strerror(errno));
        done += (size_t)n;
    }
    return path;
}

static char s_tmp[4096];

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void s_tmp_remove(void)
{
    if (s_tmp[0])
        nftw(s_tmp, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fz_tmpdir(const char *what)
{
    FZ_CHECK(!s_tmp[0], "fz_tmpdir: one per process");
    const char *base = getenv("TMPDIR");
    snprintf(s_tmp, sizeof s_tmp, "%s/nexus-fuzz-%s-XXXXXX", base && *base ? base : "/tmp", what);
    FZ_CHECK(mkdtemp(s_tmp), "mkdtemp %s: %s", s_tmp, strerror(errno));
    atexit(s_tmp_remove);
    return s_tmp;
}

char *fz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FZ_CHECK(s, "out of memory");
    if (size)
        memcpy(s, data, size);
    s[size] = 0;
    return s;
}

void fz_fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "FUZZ CHECK FAILED: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    abort();
}

bool fz_verbose(void)
{
    const char *v = getenv("FUZZ_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}
