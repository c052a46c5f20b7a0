/*  =========================================================================
    nx_log - leveled logging to stderr for the nexus programs (nexusd,
    nexus-gateway, nexus). Library code (libnexus) never logs: it returns
    errors. One line per message:
        2026-11-21T23:59:01.123456Z nexusd I listening on tcp://...
    =========================================================================
*/

#ifndef NX_LOG_H_INCLUDED
#define NX_LOG_H_INCLUDED

#include <stdint.h>

typedef enum { NX_LOG_ERROR = 0, NX_LOG_WARN, NX_LOG_INFO, NX_LOG_DEBUG } nx_log_level_t;

void nx_log_init(const char *program, nx_log_level_t level);
void nx_log_set_level(nx_log_level_t level);
nx_log_level_t nx_log_level(void);

void nx_log(nx_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define nx_error(...) nx_log(NX_LOG_ERROR, __VA_ARGS__)
#define nx_warn(...)  nx_log(NX_LOG_WARN, __VA_ARGS__)
#define nx_info(...)  nx_log(NX_LOG_INFO, __VA_ARGS__)
#define nx_debug(...)                                                                              \
    do {                                                                                           \
        if (nx_log_level() >= NX_LOG_DEBUG)                                                        \
            nx_log(NX_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

/*  A bound on how often one kind of line is logged (a line per refused
    client must not let a flood of them flood the log): at most per_second
    lines a second; the rest of that second are summed in one line, "...
    and N more <what> in that second", logged by the next line of another
    second or by nx_log_limit_flush. One per thread (no locking).          */
typedef struct {
    const char *what; /* what the lines are about, plural                   */
    int per_second;   /* lines a second at most                            */
    uint64_t second;  /* monotonic second of the lines counted below       */
    int lines;        /* lines logged in it                                */
    uint64_t held;    /* lines not logged in it                            */
} nx_log_limit_t;

void nx_log_limited(nx_log_limit_t *limit, nx_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*  Logs the summary of a past second's held lines, if any: call it once a
    second or so, so that the last burst is not left unsaid.              */
void nx_log_limit_flush(nx_log_limit_t *limit);

/*  Wall clock in microseconds since the epoch, and a monotonic clock in
    microseconds for intervals.                                             */
uint64_t nx_now_us(void);
uint64_t nx_mono_us(void);

/*  Formats us-since-epoch as ISO-8601 UTC with microseconds into buf (at
    least 32 bytes); returns buf.                                           */
char *nx_iso8601(uint64_t us, char *buf);

/*  Reads an ISO-8601 time into us since the epoch: a date (2026-12-07,
    midnight UTC) or a date and time with optional fraction and zone
    (2026-12-07T10:00:00.5Z, ...+01:00, ...-0800, ...+01; none: UTC).
    0, or -1 when text is not one, or names no day of the calendar
    (2026-02-30).                                                           */
int nx_iso8601_parse(const char *text, uint64_t *us);

#endif
