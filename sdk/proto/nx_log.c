/*  =========================================================================
    nx_log - leveled logging to stderr for the nexus programs.

    Several threads log at once (broker, store, gateway loop), so each
    message is built whole in a stack buffer and handed to the kernel in one
    write: lines never interleave, and no lock is needed. A line longer
    than the buffer is cut and ends in "...". Newlines inside a message are
    turned into spaces so that one message is always one line, even when
    it quotes client input.
    =========================================================================
*/

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "nx_log.h"

/*  One write of up to PIPE_BUF bytes to a pipe is atomic, so this is also
    the longest line that cannot interleave when stderr is a pipe.          */
#define S_LINE_MAX 4096

/*  Set once by nx_log_init, before the program starts threads.            */
static char s_program[64] = "nexus";

/*  Read by every thread on every log call, changed at any time.           */
static atomic_int s_level = NX_LOG_INFO;

void nx_log_init(const char *program, nx_log_level_t level)
{
    if (program) {
        //  argv[0] may be a path; the line only needs the program's name.
        const char *slash = strrchr(program, '/');
        if (slash && slash[1])
            program = slash + 1;
        snprintf(s_program, sizeof s_program, "%s", program);
    }
    nx_log_set_level(level);
}

void nx_log_set_level(nx_log_level_t level)
{
    atomic_store(&s_level, (int)level);
}

nx_log_level_t nx_log_level(void)
{
    return (nx_log_level_t)atomic_load(&s_level);
}

/*  Writes all of buf, retrying after signals and short writes. Logging
    has nowhere to report its own failure, so a failed write is dropped.   */
static void s_write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void nx_log(nx_log_level_t level, const char *fmt, ...)
{
    if ((int)level > atomic_load(&s_level))
        return;
    static const char letters[] = "EWID";
    char letter = (int)level >= 0 && (int)level < 4 ? letters[level] : '?';

    //  errno is part of what a caller may want to log after us.
    int saved_errno = errno;
    char line[S_LINE_MAX];
    char stamp[32];
    int head =
        snprintf(line, sizeof line, "%s %s %c ", nx_iso8601(nx_now_us(), stamp), s_program, letter);
    if (head < 0)
        head = 0;
    //  Leave room for the newline; "..." marks a message that was cut.
    size_t room = sizeof line - 1 - (size_t)head;
    va_list args;
    va_start(args, fmt);
    int body = vsnprintf(line + head, room + 1, fmt, args);
    va_end(args);
    if (body < 0)
        body = 0;
    size_t len = (size_t)head + ((size_t)body < room ? (size_t)body : room);
    if ((size_t)body > room)
        memcpy(line + len - 3, "...", 3);
    while (len > (size_t)head && line[len - 1] == '\n')
        len--;
    for (size_t i = (size_t)head; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    s_write_all(line, len);
    errno = saved_errno;
}

void nx_log_limit_flush(nx_log_limit_t *limit)
{
    if (limit->held && nx_mono_us() / 1000000u != limit->second) {
        nx_log(NX_LOG_WARN, "... and %" PRIu64 " more %s in that second", limit->held, limit->what);
        limit->held = 0;
    }
}

void nx_log_limited(nx_log_limit_t *limit, nx_log_level_t level, const char *fmt, ...)
{
    uint64_t sec = nx_mono_us() / 1000000u;
    if (sec != limit->second) {
        nx_log_limit_flush(limit);
        limit->second = sec;
        limit->lines = 0;
    }
    if (limit->lines >= limit->per_second) {
        limit->held++;
        return;
    }
    limit->lines++;
    char text[S_LINE_MAX];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    nx_log(level, "%s", text);
}

uint64_t nx_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t nx_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

char *nx_iso8601(uint64_t us, char *buf)
{
    time_t secs = (time_t)(us / 1000000u);
    unsigned micros = (unsigned)(us % 1000000u);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(buf, 32, "invalid-time");
        return buf;
    }
    //  Formatted into a roomy buffer first: the compiler cannot know that
    //  struct tm fields are in range, and years past 9999 need more digits.
    char text[96];
    snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, micros);
    size_t len = strlen(text);
    if (len > 31)
        len = 31;
    memcpy(buf, text, len);
    buf[len] = '\0';
    return buf;
}

//  Reads exactly n digits at *p into *out and moves *p past them.
static bool s_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int nx_iso8601_parse(const char *text, uint64_t *us)
{
    //  By hand, not strptime: glibc's takes 2026-02-31 (as March 3rd),
    //  leading spaces and short fields, which a typed time should not.
    const char *p = text;
    int year, mon, day, hh = 0, mi = 0, ss = 0;
    if (!s_digits(&p, 4, &year) || *p++ != '-' || !s_digits(&p, 2, &mon) || *p++ != '-' ||
        !s_digits(&p, 2, &day))
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] + (mon == 2 && leap))
        return -1;
    uint64_t frac = 0, scale = 1000000;
    int64_t offset = 0; /* seconds east of UTC */
    if (*p == 'T' || *p == 't') {
        p++;
        if (!s_digits(&p, 2, &hh) || *p++ != ':' || !s_digits(&p, 2, &mi) || *p++ != ':' ||
            !s_digits(&p, 2, &ss))
            return -1;
        //  60: a leap second, which the epoch count folds into the next.
        if (hh > 23 || mi > 59 || ss > 60)
            return -1;
        if (*p == '.') {
            if (p[1] < '0' || p[1] > '9')
                return -1;
            for (p++; *p >= '0' && *p <= '9'; p++)
                if (scale > 1) {
                    scale /= 10;
                    frac += (uint64_t)(*p - '0') * scale;
                }
        }
        if (*p == 'Z' || *p == 'z')
            p++;
        else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (!s_digits(&p, 2, &oh))
                return -1;
            //  +01:30, +0130 or +01.
            bool colon = *p == ':';
            p += colon;
            if ((colon || *p) && !s_digits(&p, 2, &om))
                return -1;
            if (oh > 23 || om > 59)
                return -1;
            offset = sign * (int64_t)(oh * 3600 + om * 60);
        }
    }
    if (*p)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hh;
    tm.tm_min = mi;
    tm.tm_sec = ss;
    time_t t = timegm(&tm);
    if (t < 0 || (int64_t)t - offset < 0)
        return -1;
    *us = (uint64_t)((int64_t)t - offset) * 1000000 + frac;
    return 0;
}
