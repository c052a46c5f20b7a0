/*  =========================================================================
    nx_cli_util - helpers of the `nexus` command (see nx_cli.h).
    =========================================================================
*/

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "nx_cli.h"
#include "nx_jdump.h"
#include "nx_log.h"

int nx_cli_exit_code(nexus_err_t err)
{
    switch (err) {
    case NEXUS_OK:
        return NX_EXIT_OK;
    case NEXUS_ERR_TIMEOUT:
    case NEXUS_ERR_UNREACHABLE:
    case NEXUS_ERR_CLOSED:
        return NX_EXIT_UNREACHABLE;
    case NEXUS_ERR_INVALID:
        return NX_EXIT_USAGE;
    default:
        return NX_EXIT_REFUSED;
    }
}

int nx_cli_u64(const char *text, uint64_t *value)
{
    if (!text || !*text || *text == '-' || *text == '+')
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end)
        return -1;
    *value = v;
    return 0;
}

int nx_cli_duration(const char *text, uint64_t *ms)
{
    if (!text || !*text || *text == '-' || *text == '+')
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || v < 0)
        return -1;
    double scale;
    if (!*end || !strcmp(end, "s"))
        scale = 1000;
    else if (!strcmp(end, "ms"))
        scale = 1;
    else if (!strcmp(end, "m"))
        scale = 60000;
    else if (!strcmp(end, "h"))
        scale = 3600000;
    else if (!strcmp(end, "d"))
        scale = 86400000;
    else
        return -1;
    double total = v * scale;
    if (total > 1e15)
        return -1;
    *ms = (uint64_t)total;
    return 0;
}

static uint64_t s_now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

int nx_cli_time(const char *text, uint64_t *us)
{
    /*  A duration ago: "10m", or as --help writes it, "10m ago".           */
    char dur[64];
    size_t n = strlen(text);
    if (n > 4 && n < sizeof dur && strcmp(text + n - 4, " ago") == 0) {
        memcpy(dur, text, n - 4);
        dur[n - 4] = 0;
        text = dur;
    }
    uint64_t ms;
    if (nx_cli_duration(text, &ms) == 0 && strpbrk(text, "smhd")) {
        uint64_t now = s_now_us();
        *us = ms * 1000 > now ? 1 : now - ms * 1000;
        return 0;
    }
    return text == dur ? -1 : nx_iso8601_parse(text, us);
}

const char *nx_cli_iso(uint64_t us, char *buf)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)((us / 1000) % 1000));
    return buf;
}

static int s_mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc && errno != EEXIST)
            return -1;
    }
    if (mkdir(path, 0700) && errno != EEXIST)
        return -1;
    return 0;
}

int nx_cli_state_dir(const char *sub, bool create, char *buf, size_t size)
{
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && *xdg)
        n = snprintf(buf, size, "%s/nexus/%s", xdg, sub);
    else if (home && *home)
        n = snprintf(buf, size, "%s/.local/state/nexus/%s", home, sub);
    else
        return -1;
    if (n < 0 || (size_t)n >= size)
        return -1;
    if (create && s_mkdirs(buf))
        return -1;
    return 0;
}

char *nx_cli_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = 0;
    return buf;
}

int nx_cli_write_file(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    if (close(fd) || w != (ssize_t)len || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

struct nx_table_t {
    int columns;  /* cells per row                                        */
    char **cells; /* rows * columns strings                               */
    size_t rows;  /* rows added                                           */
    size_t alloc; /* rows allocated                                       */
};

nx_table_t *nx_table_new(int columns)
{
    nx_table_t *self = calloc(1, sizeof *self);
    if (self)
        self->columns = columns;
    return self;
}

char *nx_cli_printable(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return text;
}

void nx_table_add(nx_table_t *self, const char *const *cells)
{
    if (self->rows == self->alloc) {
        size_t alloc = self->alloc ? self->alloc * 2 : 16;
        char **grown = realloc(self->cells, alloc * (size_t)self->columns * sizeof *grown);
        if (!grown)
            return;
        self->cells = grown;
        self->alloc = alloc;
    }
    for (int c = 0; c < self->columns; c++) {
        char *cell = strdup(cells[c] ? cells[c] : "");
        if (cell)
            nx_cli_printable(cell);
        self->cells[self->rows * (size_t)self->columns + (size_t)c] = cell;
    }
    self->rows++;
}

void nx_table_print(nx_table_t *self, FILE *out)
{
    size_t width[32] = {0};
    for (size_t r = 0; r < self->rows; r++)
        for (int c = 0; c < self->columns && c < 32; c++) {
            const char *s = self->cells[r * (size_t)self->columns + (size_t)c];
            size_t w = s ? strlen(s) : 0;
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = 0; r < self->rows; r++) {
        for (int c = 0; c < self->columns; c++) {
            const char *s = self->cells[r * (size_t)self->columns + (size_t)c];
            if (c == self->columns - 1)
                fprintf(out, "%s", s ? s : "");
            else
                fprintf(out, "%-*s  ", (int)width[c], s ? s : "");
        }
        fputc('\n', out);
    }
}

void nx_table_destroy(nx_table_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_table_t *self = *self_p;
    for (size_t i = 0; i < self->rows * (size_t)self->columns; i++)
        free(self->cells[i]);
    free(self->cells);
    free(self);
    *self_p = NULL;
}

/*  ---- Sessions in state files -------------------------------------------*/

int nx_cli_session_path(const char *id, bool create, char *buf, size_t size)
{
    char dir[PATH_MAX];
    if (!id || !*id || strchr(id, '/') || id[0] == '.' ||
        nx_cli_state_dir("sessions", create, dir, sizeof dir))
        return -1;
    int n = snprintf(buf, size, "%s/%s", dir, id);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

char *nx_cli_session_secret(const char *id)
{
    char path[PATH_MAX];
    if (nx_cli_session_path(id, false, path, sizeof path))
        return NULL;
    char *text = nx_cli_read_file(path);
    json_t *obj = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    const char *secret = json_string_value(json_object_get(obj, "secret"));
    char *copy = secret ? strdup(secret) : NULL;
    json_decref(obj);
    return copy;
}

int nx_cli_session_store(const char *id, const char *secret, const char *endpoint)
{
    char path[PATH_MAX];
    if (nx_cli_session_path(id, true, path, sizeof path))
        return -1;
    json_t *state =
        json_pack("{s:s,s:s?,s:s?}", "session", id, "secret", secret, "endpoint", endpoint);
    char *text = state ? nx_json_dumps(state, JSON_COMPACT) : NULL;
    json_decref(state);
    int rc = text ? nx_cli_write_file(path, text) : -1;
    free(text);
    return rc;
}
