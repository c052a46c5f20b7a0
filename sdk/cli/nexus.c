/*  =========================================================================
    nexus - the command-line client of the nexus fabric, a thin layer over
    libnexus for shell scripts, git hooks and people. docs/cli.md documents
    every subcommand, its --json output and the exit codes:
        0 ok, 1 refused or denied by the broker, 2 usage, 3 broker
        unreachable (no answer within the timeout).
    =========================================================================
*/

#include <czmq.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nexus.h"
#include "nx_cli.h"
#include "nx_codec.h"
#include "nx_front.h"
#include "nx_jdump.h"
#include "nx_topic.h"

#define S_OPTS_MAX     64   /* options and positionals per invocation         */
#define S_LINES_WINDOW 1024 /* acknowledged publishes in flight (pub --lines)  */

typedef struct {
    const char *name;  /* option name without "--"                          */
    const char *value; /* its value, or NULL for a flag                     */
} s_opt_t;

typedef struct s_cmd_t s_cmd_t;

typedef struct {
    const s_cmd_t *cmd;          /* the subcommand                           */
    const char *pos[S_OPTS_MAX]; /* positional arguments                     */
    int npos;                    /* entries in pos                           */
    s_opt_t opts[S_OPTS_MAX];    /* options given                            */
    int nopts;                   /* entries in opts                          */
    bool json;                   /* --json                                   */
    const char *endpoint;        /* --endpoint or NULL (NEXUS_ENDPOINT)      */
    const char *session;         /* --session or NEXUS_SESSION               */
    uint32_t timeout_ms;         /* --timeout                                */
    uint32_t keepalive_ms;       /* --keepalive: dead-link timeout, 0 off    */
    nexus_client_t *client;      /* the connected client, when one is made   */
    char **extra;                /* arguments after "--" (nexus up)          */
    int nextra;                  /* entries in extra                         */
} s_cli_t;

struct s_cmd_t {
    const char *name;  /* "session register"                                */
    const char *args;  /* usage after the name                              */
    const char *flags; /* accepted options: "since= count= ack" (= takes a value) */
    int min_pos;       /* positional arguments at least                     */
    int max_pos;       /* and at most                                       */
    int (*fn)(s_cli_t *cli);
    const char *help; /* the --help text after the usage line              */
};

static volatile sig_atomic_t s_interrupted = 0;

static void s_on_signal(int sig)
{
    s_interrupted = 1;
}

/*  ---- Output and errors -------------------------------------------------*/

static int s_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_fail(int code, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (char *c = text; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    fprintf(stderr, "nexus: %s\n", text);
    return code;
}

static int s_usage_error(s_cli_t *cli, const char *what)
{
    fprintf(stderr, "nexus: %s (see nexus %s --help)\n", what, cli->cmd ? cli->cmd->name : "");
    return NX_EXIT_USAGE;
}

/*  The broker's words for the CLI's: its messages name the op and the
    wire field ("work.get: ...", "field 'ttl_ms'"), which a user of the
    command never typed.                                                    */
static void s_cli_words(const char *msg, char *out, size_t size)
{
    static const char *const fields[][2] = {{"field 'ttl_ms' must be at least 100",
                                             "--ttl must be at least 100ms"},
                                            {"field 'ttl_ms'", "--ttl (in ms)"},
                                            {"field 'state'", "--state"},
                                            {"field 'limit'", "--limit"},
                                            {"field 'after'", "--after"}};
    /*  "op.name: " in front: an op is lower-case words joined by dots (or
        history, which `sub` asks too: its errors read "history:" there). */
    size_t op = strspn(msg, "abcdefghijklmnopqrstuvwxyz_.");
    if (op && msg[op] == ':' && msg[op + 1] == ' ' &&
        (memchr(msg, '.', op) || (op == 7 && !strncmp(msg, "history", 7))))
        msg += op + 2;
    snprintf(out, size, "%s", msg);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char *at = strstr(out, fields[i][0]);
        if (!at)
            continue;
        char rest[512];
        snprintf(rest, sizeof rest, "%s", at + strlen(fields[i][0]));
        snprintf(at, size - (size_t)(at - out), "%s%s", fields[i][1], rest);
    }
}

static int s_client_error(s_cli_t *cli, nexus_err_t err)
{
    char text[512];
    s_cli_words(cli->client && nexus_client_errmsg(cli->client)[0]
                    ? nexus_client_errmsg(cli->client)
                    : nexus_strerror(err),
                text, sizeof text);
    return s_fail(nx_cli_exit_code(err), "%s", text);
}

/*  Prints a jansson object as one line and releases it.                    */
static void s_print_json(json_t *obj)
{
    char *text = obj ? nx_json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    json_decref(obj);
    fflush(stdout);
}

static const char *s_opt(s_cli_t *cli, const char *name)
{
    for (int i = 0; i < cli->nopts; i++)
        if (!strcmp(cli->opts[i].name, name))
            return cli->opts[i].value ? cli->opts[i].value : "";
    return NULL;
}

static bool s_flag(s_cli_t *cli, const char *name)
{
    return s_opt(cli, name) != NULL;
}

/*  ---- Sessions in state files -------------------------------------------*/

/*  ---- The client ----------------------------------------------------------*/

/*  Creates and connects cli->client. With acting, the client acts as the
    session from --session / NEXUS_SESSION (required) and refreshes it
    with a heartbeat first, so a --ttl session stays alive between calls. */
/*  Creates cli->client with the command line's settings, unconnected.     */
static int s_client_make(s_cli_t *cli)
{
    cli->client = nexus_client_new();
    if (!cli->client)
        return s_fail(NX_EXIT_REFUSED, "out of memory");
    nexus_err_t rc = NEXUS_OK;
    if (cli->endpoint)
        rc = nexus_client_set_endpoint(cli->client, cli->endpoint);
    /*  Event ports that are not the control port + 1 and + 2.            */
    const char *in = getenv("NEXUS_EVENTS_IN"), *out = getenv("NEXUS_EVENTS_OUT");
    const char *ep = cli->endpoint ? cli->endpoint : getenv("NEXUS_ENDPOINT");
    bool pair = ep && strchr(ep, ',');
    if (!rc && ((in && *in) || (out && *out)) && pair)
        fprintf(stderr, "nexus: NEXUS_EVENTS_IN/OUT name one broker's event ports: ignored with "
                        "a pair's list of endpoints\n");
    else if (!rc && ((in && *in) || (out && *out)))
        rc = nexus_client_set_event_endpoints(cli->client, in && *in ? in : NULL,
                                              out && *out ? out : NULL);
    if (rc)
        return s_usage_error(cli, nexus_client_errmsg(cli->client));
    nexus_client_set_timeout(cli->client, cli->timeout_ms);
    /*  A ping after a third of the timeout without traffic.               */
    nexus_client_set_keepalive(cli->client, cli->keepalive_ms / 3, cli->keepalive_ms);
    nexus_client_set_reconnect(cli->client, 100, 1000);
    nexus_client_set_publish_window(cli->client, S_LINES_WINDOW, 64u << 20);
    return NX_EXIT_OK;
}

static int s_connect(s_cli_t *cli, bool acting)
{
    int made = s_client_make(cli);
    if (made)
        return made;
    nexus_err_t rc = NEXUS_OK;
    if (acting) {
        if (!cli->session || !*cli->session)
            return s_usage_error(cli, "no session: give --session ID or set NEXUS_SESSION "
                                      "(from `nexus session register`)");
        if (!nx_session_id_valid(cli->session, strlen(cli->session))) {
            char what[160];
            snprintf(what, sizeof what,
                     "session '%.80s' is no session id: 1 to 64 of A-Z a-z 0-9 _ : @ -",
                     cli->session);
            return s_usage_error(cli, what);
        }
        char *secret = nx_cli_session_secret(cli->session);
        nexus_client_set_session(cli->client, cli->session, secret);
        free(secret);
    }
    rc = nexus_client_connect(cli->client);
    if (rc)
        return s_client_error(cli, rc);
    if (acting) {
        char *reply = NULL;
        rc = nexus_request_json(cli->client, "{\"op\":\"session.heartbeat\"}", &reply);
        free(reply);
        /*  The heartbeat is ours, not the user's command: say what it
            found out about the session in the words of the command line.  */
        if (rc == NEXUS_ERR_NOT_FOUND)
            return s_fail(NX_EXIT_REFUSED,
                          "session '%s' is not active (gone or never registered): register it "
                          "with `nexus session register --session %s`",
                          cli->session, cli->session);
        if (rc == NEXUS_ERR_FORBIDDEN) {
            const char *why = nexus_client_errmsg(cli->client);
            const char *op = "session.heartbeat: ";
            if (!strncmp(why, op, strlen(op)))
                why += strlen(op);
            return s_fail(NX_EXIT_REFUSED,
                          "may not act as session '%s': %s (`nexus session register` keeps the "
                          "secret on the machine that registered it)",
                          cli->session, why);
        }
        if (rc)
            return s_client_error(cli, rc);
    }
    return NX_EXIT_OK;
}

/*  ---- nexus status --------------------------------------------------------*/

static json_t *s_call(s_cli_t *cli, const char *request, nexus_err_t *err)
{
    char *reply = NULL;
    *err = nexus_request_json(cli->client, request, &reply);
    json_t *obj = reply ? json_loads(reply, JSON_ALLOW_NUL, NULL) : NULL;
    free(reply);
    if (obj) {
        json_object_del(obj, "id");
        json_object_del(obj, "ok");
    }
    return obj;
}

/*  GET url/health from a gateway (http://HOST[:PORT]); returns the JSON
    body, or NULL with the reason in err. Plain HTTP/1.0 over a socket: all
    a health probe needs, bounded by a 3 s deadline.                        */
static json_t *s_gateway_health(const char *url, char *err, size_t err_size)
{
    char host[256], port[16] = "80";
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    size_t n = strcspn(p, ":/");
    if (n == 0 || n >= sizeof host) {
        snprintf(err, err_size, "bad gateway URL '%s' (http://HOST:PORT)", url);
        return NULL;
    }
    memcpy(host, p, n);
    host[n] = 0;
    if (p[n] == ':')
        snprintf(port, sizeof port, "%.*s", (int)strcspn(p + n + 1, "/"), p + n + 1);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        snprintf(err, err_size, "cannot resolve the gateway's host '%.100s'", host);
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    struct timeval tv = {3, 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        snprintf(err, err_size, "cannot connect to %.100s:%.15s: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return NULL;
    }
    freeaddrinfo(ai);
    char req[512];
    int len = snprintf(req, sizeof req, "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n", host);
    char *resp = malloc(65536);
    size_t got = 0;
    if (resp && write(fd, req, (size_t)len) == len) {
        ssize_t r;
        while (got < 65535 && (r = read(fd, resp + got, 65535 - got)) > 0)
            got += (size_t)r;
    }
    close(fd);
    json_t *body = NULL;
    if (resp) {
        resp[got] = 0;
        char *sep = strstr(resp, "\r\n\r\n");
        body = sep ? json_loads(sep + 4, 0, NULL) : NULL;
        if (!body)
            snprintf(err, err_size, "no JSON health from %s (%zu bytes)", url, got);
    }
    free(resp);
    return body;
}

static int s_cmd_status(s_cli_t *cli)
{
    /*  The gateway, when one is named, is probed first so that it shows
        even when the broker is down.                                       */
    const char *gw_url = s_opt(cli, "gateway") ? s_opt(cli, "gateway") : getenv("NEXUS_GATEWAY");
    if (gw_url && *gw_url) {
        /*  What is no http URL is a usage error, not an unreachable
            gateway ("https" was looked up as a host name).                */
        const char *scheme = strstr(gw_url, "://");
        const char *hp = scheme ? scheme + 3 : gw_url, *colon = strchr(hp, ':');
        size_t port_len = colon ? strcspn(colon + 1, "/") : 0;
        if ((scheme && strncmp(gw_url, "http://", 7) != 0) || !*hp || *hp == ':' ||
            (colon && (port_len == 0 || strspn(colon + 1, "0123456789") != port_len)))
            return s_usage_error(cli, "--gateway needs http://HOST:PORT (nexus-gateway speaks "
                                      "plain HTTP; put TLS in front of it)");
    }
    char gw_err[256] = "";
    json_t *gw = gw_url && *gw_url ? s_gateway_health(gw_url, gw_err, sizeof gw_err) : NULL;
    bool gw_asked = gw_url && *gw_url;
    int rc = s_connect(cli, false);
    const char *ep = nexus_client_endpoint(cli->client);
    if (rc) {
        if (cli->json) {
            json_t *out = json_pack("{s:s,s:b,s:s}", "endpoint", ep, "up", 0, "error",
                                    nexus_client_errmsg(cli->client));
            if (gw_asked)
                json_object_set_new(
                    out, "gateway",
                    gw ? json_pack("{s:s,s:b,s:O}", "url", gw_url, "up", 1, "health", gw)
                       : json_pack("{s:s,s:b,s:s}", "url", gw_url, "up", 0, "error", gw_err));
            s_print_json(out);
        }
        json_decref(gw);
        return rc;
    }
    nexus_err_t err;
    json_t *health = s_call(cli, "{\"op\":\"health\"}", &err);
    json_t *state = err ? NULL : s_call(cli, "{\"op\":\"state\"}", &err);
    if (err) {
        json_decref(health);
        json_decref(state);
        json_decref(gw);
        return s_client_error(cli, err);
    }
    if (cli->json) {
        json_t *out = json_pack("{s:s,s:b,s:o,s:o}", "endpoint", ep, "up", 1, "health", health,
                                "state", state);
        if (gw_asked)
            json_object_set_new(
                out, "gateway",
                gw ? json_pack("{s:s,s:b,s:o}", "url", gw_url, "up", 1, "health", gw)
                   : json_pack("{s:s,s:b,s:s}", "url", gw_url, "up", 0, "error", gw_err));
        s_print_json(out);
        return gw_asked && !gw ? NX_EXIT_UNREACHABLE : NX_EXIT_OK;
    }
    nx_table_t *t = nx_table_new(2);
    char buf[128];
    const char *row[2];
#define S_ROW(k, v)                                                                                \
    do {                                                                                           \
        row[0] = (k);                                                                              \
        row[1] = (v);                                                                              \
        nx_table_add(t, row);                                                                      \
    } while (0)
    S_ROW("broker", ep);
    S_ROW("status", json_string_value(json_object_get(health, "status")));
    /*  In a primary/standby pair: which one this is, and the other.        */
    json_t *role = json_object_get(health, "role");
    if (json_is_string(role)) {
        const char *primary = json_string_value(json_object_get(health, "primary"));
        snprintf(buf, sizeof buf, "%s (%s, epoch %" JSON_INTEGER_FORMAT ")%s%s",
                 json_string_value(role),
                 json_string_value(json_object_get(health, "name"))
                     ? json_string_value(json_object_get(health, "name"))
                     : "",
                 json_integer_value(json_object_get(health, "epoch")),
                 primary && strcmp(json_string_value(role), "primary") ? "; primary " : "",
                 primary && strcmp(json_string_value(role), "primary") ? primary : "");
        S_ROW("role", buf);
    }
    S_ROW("version", json_string_value(json_object_get(health, "version")));
    S_ROW("started", json_string_value(json_object_get(state, "start_time")));
    snprintf(buf, sizeof buf, "%.1f s",
             json_number_value(json_object_get(state, "uptime_seconds")));
    S_ROW("uptime", buf);
    json_t *hist = json_object_get(state, "history");
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(health, "last_seq")));
    S_ROW("last seq", buf);
    snprintf(buf, sizeof buf,
             "%" JSON_INTEGER_FORMAT " events, seq %" JSON_INTEGER_FORMAT "..%" JSON_INTEGER_FORMAT
             ", %" JSON_INTEGER_FORMAT " bytes",
             json_integer_value(json_object_get(hist, "count")),
             json_integer_value(json_object_get(hist, "first_seq")),
             json_integer_value(json_object_get(hist, "last_seq")),
             json_integer_value(json_object_get(hist, "bytes")));
    S_ROW("history", buf);
    snprintf(buf, sizeof buf, "%.1f/s (10 s), %.1f/s (1 min)",
             json_number_value(json_object_get(state, "events_per_second_10s")),
             json_number_value(json_object_get(state, "events_per_second_1m")));
    S_ROW("rate", buf);
    snprintf(buf, sizeof buf,
             "%" JSON_INTEGER_FORMAT " publishers, %" JSON_INTEGER_FORMAT " subscribers",
             json_integer_value(json_object_get(state, "publishers")),
             json_integer_value(json_object_get(state, "subscribers")));
    S_ROW("clients", buf);
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(json_object_get(state, "drops"), "total")));
    S_ROW("dropped", buf);
    S_ROW("sync", json_string_value(json_object_get(state, "sync")));
    if (gw_asked) {
        S_ROW("gateway", gw_url);
        if (gw)
            snprintf(buf, sizeof buf, "%s (broker %s)",
                     json_string_value(json_object_get(gw, "status")),
                     json_string_value(json_object_get(json_object_get(gw, "broker"), "status")));
        else
            snprintf(buf, sizeof buf, "down: %.100s", gw_err);
        S_ROW("gateway status", buf);
    }
#undef S_ROW
    nx_table_print(t, stdout);
    nx_table_destroy(&t);
    json_decref(health);
    json_decref(state);
    json_decref(gw);
    return gw_asked && !gw ? NX_EXIT_UNREACHABLE : NX_EXIT_OK;
}

/*  ---- nexus pub -------------------------------------------------------------*/

static char *s_read_stdin(size_t *len)
{
    size_t size = 0, alloc = 4096;
    char *buf = malloc(alloc);
    while (buf) {
        if (size + 1 >= alloc) {
            char *grown = alloc < (64u << 20) ? realloc(buf, alloc * 2) : NULL;
            if (!grown) {
                free(buf);
                return NULL;
            }
            buf = grown;
            alloc *= 2;
        }
        size_t n = fread(buf + size, 1, alloc - size - 1, stdin);
        if (n == 0)
            break;
        size += n;
    }
    if (buf)
        buf[size] = 0;
    *len = size;
    return buf;
}

/*  ---- nexus pub --lines: one event per line of stdin, pipelined ----------
    Every line is one JSON payload, published acknowledged with
    nexus_publish_async: up to S_LINES_WINDOW of them in flight. Results
    are reported in the order of the lines. The ring holds twice the
    window: when line k is sent, every line up to k - window has had its
    completion (the SDK's window guarantees it) and was reported before
    the call, so line k never takes the place of one not yet reported.    */

#define S_LINE_MAX (64u << 20) /* the SDK's payload limit, plus JSON */

typedef struct {
    uint64_t line;          /* input line number (1-based)               */
    nexus_err_t err;        /* outcome                                   */
    uint64_t seq;           /* its seq when ok                           */
    bool done;              /* the completion ran                        */
    char *why;              /* refused: the broker's words, NULL (owned) */
    nexus_client_t *client; /* whose errmsg has them in the completion   */
} s_line_t;

typedef struct {
    s_cli_t *cli;
    const char *topic;
    s_line_t ring[2 * S_LINES_WINDOW]; /* by publish index % size          */
    uint64_t sent;                     /* lines sent                        */
    uint64_t reported;                 /* lines reported, in order          */
    uint64_t refused;                  /* refused by the broker             */
    uint64_t unknown;                  /* no answer: outcome unknown        */
} s_lines_t;

static void s_line_done(nexus_err_t err, uint64_t seq, uint64_t ts, void *arg)
{
    (void)ts;
    s_line_t *l = arg;
    l->err = err;
    l->seq = seq;
    l->done = true;
    const char *why = err && l->client ? nexus_client_errmsg(l->client) : NULL;
    l->why = why && *why ? strdup(why) : NULL;
}

/*  Reports the lines whose completion ran, in order, up to the first
    still in flight.                                                       */
static void s_lines_report(s_lines_t *L)
{
    while (L->reported < L->sent) {
        s_line_t *l = &L->ring[L->reported % (2 * S_LINES_WINDOW)];
        if (!l->done)
            break;
        if (l->err == NEXUS_OK) {
            if (L->cli->json)
                s_print_json(json_pack("{s:s,s:I,s:I}", "topic", L->topic, "seq",
                                       (json_int_t)l->seq, "line", (json_int_t)l->line));
            else if (s_flag(L->cli, "ack"))
                printf("%" PRIu64 "\n", l->seq);
        } else {
            fprintf(stderr, "nexus: line %" PRIu64 ": %s%s\n", l->line,
                    l->why ? l->why : nexus_strerror(l->err),
                    l->err == NEXUS_ERR_TIMEOUT || l->err == NEXUS_ERR_CLOSED
                        ? " (it may or may not have been stored)"
                        : "");
            if (l->err == NEXUS_ERR_TIMEOUT || l->err == NEXUS_ERR_CLOSED)
                L->unknown++;
            else
                L->refused++;
        }
        l->done = false;
        free(l->why);
        l->why = NULL;
        L->reported++;
    }
    fflush(stdout);
}

/*  Publishes one line (len bytes, NUL-terminated, without its newline).
    Returns 0, or an exit code when the command must stop.                 */
static int s_lines_send(s_lines_t *L, char *text, size_t len, uint64_t line)
{
    /*  JSON text holds no NUL byte: what follows one would be dropped.    */
    if (memchr(text, 0, len)) {
        fprintf(stderr,
                "nexus: line %" PRIu64 " holds a NUL byte at column %zu (JSON has none; "
                "write \\u0000 in a string); stopping\n",
                line, strlen(text) + 1);
        return NX_EXIT_USAGE;
    }
    char *end = text + len;
    while (end > text && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
        *--end = 0;
    if (!*text)
        return 0; /* blank lines are skipped */
    size_t size = 0;
    void *data = nexus_json_to_msgpack(text, &size);
    if (!data) {
        fprintf(stderr, "nexus: line %" PRIu64 " is not valid JSON; stopping\n", line);
        return NX_EXIT_USAGE;
    }
    if (nx_msgpack_check(data, size, NX_MSGPACK_DEPTH) == NX_MSGPACK_TOO_DEEP) {
        free(data);
        fprintf(stderr, "nexus: line %" PRIu64 " nests deeper than %d levels; stopping\n", line,
                NX_MSGPACK_LEVELS);
        return NX_EXIT_USAGE;
    }
    s_lines_report(L);
    s_line_t *l = &L->ring[L->sent % (2 * S_LINES_WINDOW)];
    *l = (s_line_t){.line = line, .client = L->cli->client};
    nexus_err_t err = nexus_publish_async(L->cli->client, L->topic, data, size, s_line_done, l);
    free(data);
    if (err == NEXUS_ERR_TOO_LARGE) {
        /*  Refused before it was sent, as the broker refuses one over
            max_payload: said in its place among the lines' reports (the
            ones before it first), and the lines after it go on.           */
        char why[300];
        snprintf(why, sizeof why, "%s", nexus_client_errmsg(L->cli->client));
        nexus_publish_async_wait(L->cli->client, -1);
        s_lines_report(L);
        fprintf(stderr, "nexus: line %" PRIu64 ": %s\n", line, why);
        L->refused++;
        return 0;
    }
    if (err) {
        /*  The lines before it are reported as they complete; this one
            and those after it were not sent.                               */
        fprintf(stderr, "nexus: line %" PRIu64 " was not sent; stopping\n", line);
        return s_client_error(L->cli, err);
    }
    L->sent++;
    return 0;
}

/*  Gives the client --session (and its secret): an id the library refuses
    is a usage error, not an event without a source (pub) nor a session
    the broker names (session register).                                  */
static int s_give_session(s_cli_t *cli, const char *secret)
{
    if (!cli->session || nexus_client_set_session(cli->client, cli->session, secret) == NEXUS_OK)
        return 0;
    return s_usage_error(cli, nexus_client_errmsg(cli->client));
}

static int s_pub_lines(s_cli_t *cli, const char *topic)
{
    int rc = s_connect(cli, false);
    if (!rc)
        rc = s_give_session(cli, NULL);
    if (rc)
        return rc;
    s_lines_t *L = calloc(1, sizeof *L);
    size_t alloc = 1 << 16, have = 0;
    char *buf = malloc(alloc);
    if (!L || !buf) {
        free(L);
        free(buf);
        return s_fail(NX_EXIT_REFUSED, "out of memory");
    }
    L->cli = cli;
    L->topic = topic;
    uint64_t line = 0;
    int status = 0;
    bool eof = false;
    while (!status && !s_interrupted) {
        /*  Every complete line in the buffer first.                       */
        char *nl;
        size_t off = 0;
        while (!status && (nl = memchr(buf + off, '\n', have - off))) {
            *nl = 0;
            status = s_lines_send(L, buf + off, (size_t)(nl - (buf + off)), ++line);
            off = (size_t)(nl - buf) + 1;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (status || eof)
            break;
        if (have + 1 >= alloc) {
            char *grown = alloc < S_LINE_MAX ? realloc(buf, alloc * 2) : NULL;
            if (!grown) {
                status = s_fail(NX_EXIT_USAGE, "line %" PRIu64 " is over %u MiB", line + 1,
                                S_LINE_MAX >> 20);
                break;
            }
            buf = grown;
            alloc *= 2;
        }
        /*  While input is slow, the answers are reported as they come.    */
        struct pollfd pfd = {0, POLLIN, 0};
        int ready = poll(&pfd, 1, L->reported < L->sent ? 20 : 1000);
        if (ready <= 0) {
            nexus_publish_async_wait(cli->client, 0);
            s_lines_report(L);
            continue;
        }
        ssize_t n = read(0, buf + have, alloc - have - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = true;
            if (have) { /* a last line without its newline */
                buf[have] = 0;
                status = s_lines_send(L, buf, have, ++line);
                have = 0;
            }
            break;
        }
        have += (size_t)n;
    }
    nexus_publish_async_wait(cli->client, -1);
    s_lines_report(L);
    if (!status && (L->unknown || L->refused))
        status = L->unknown ? NX_EXIT_UNREACHABLE : NX_EXIT_REFUSED;
    free(buf);
    free(L);
    return status;
}

static int s_cmd_pub(s_cli_t *cli)
{
    const char *topic = cli->pos[0];
    if (s_flag(cli, "lines")) {
        if (cli->npos > 1)
            return s_usage_error(cli, "--lines reads the payloads from stdin: give no JSON");
        return s_pub_lines(cli, topic);
    }
    char *payload = NULL;
    if (cli->npos > 1 && !strcmp(cli->pos[1], "-")) {
        size_t len = 0;
        payload = s_read_stdin(&len);
        if (!payload)
            return s_fail(NX_EXIT_USAGE, "cannot read the payload from stdin");
        /*  What follows a NUL byte would be dropped in silence.           */
        if (memchr(payload, 0, len)) {
            char why[160];
            snprintf(why, sizeof why,
                     "the payload holds a NUL byte at offset %zu (JSON has none; write \\u0000 "
                     "in a string)",
                     strlen(payload));
            free(payload);
            return s_usage_error(cli, why);
        }
    } else if (cli->npos > 1)
        payload = strdup(cli->pos[1]);
    json_error_t jerr;
    json_t *check =
        payload && *payload ? json_loads(payload, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr) : NULL;
    if (payload && *payload && !check) {
        /*  Say where, and name --lines when stdin holds several values:
            that is what a user piping JSON Lines into `pub -` meant.     */
        json_t *first =
            json_loads(payload, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DISABLE_EOF_CHECK, NULL);
        char why[300];
        if (first)
            snprintf(why, sizeof why,
                     "the payload is not one JSON value: more follows it at line %d, column %d "
                     "(one event per line: use --lines)",
                     jerr.line, jerr.column);
        else
            snprintf(why, sizeof why, "the payload is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
        json_decref(first);
        free(payload);
        return s_usage_error(cli, why);
    }
    json_decref(check);
    size_t packed_size = 0;
    void *packed = payload && *payload ? nexus_json_to_msgpack(payload, &packed_size) : NULL;
    bool too_deep =
        packed && nx_msgpack_check(packed, packed_size, NX_MSGPACK_DEPTH) == NX_MSGPACK_TOO_DEEP;
    free(packed);
    if (too_deep) {
        free(payload);
        char why[120];
        snprintf(why, sizeof why,
                 "the payload nests deeper than %d levels (no reader could show it as JSON)",
                 NX_MSGPACK_LEVELS);
        return s_usage_error(cli, why);
    }
    int rc = s_connect(cli, false);
    if (!rc)
        rc = s_give_session(cli, NULL);
    uint64_t seq = 0;
    nexus_err_t err = rc ? NEXUS_OK : nexus_publish_json_acked(cli->client, topic, payload, &seq);
    free(payload);
    if (rc)
        return rc;
    if (err)
        return s_client_error(cli, err);
    if (cli->json)
        s_print_json(json_pack("{s:s,s:I}", "topic", topic, "seq", (json_int_t)seq));
    else if (s_flag(cli, "ack"))
        printf("%" PRIu64 "\n", seq);
    return NX_EXIT_OK;
}

/*  ---- Event lines -----------------------------------------------------------*/

static void s_print_event(s_cli_t *cli, nexus_event_t *ev)
{
    if (cli->json) {
        const char *line = nexus_event_json(ev);
        if (line)
            printf("%s\n", line);
    } else if (nexus_event_kind(ev) == NEXUS_EVENT_GAP) {
        uint64_t from, to;
        nexus_event_gap(ev, &from, &to);
        printf("-- gap: events %" PRIu64 "..%" PRIu64 " are no longer in the history --\n", from,
               to);
    } else {
        char iso[32], src[256]; /* a source is at most 128 bytes */
        snprintf(src, sizeof src, "%s", nexus_event_source(ev));
        nx_cli_printable(src);
        const char *payload = nexus_event_payload_json(ev);
        printf("%-8" PRIu64 " %s  %-24s %-12s %s\n", nexus_event_seq(ev),
               nx_cli_iso(nexus_event_ts(ev), iso), nexus_event_topic(ev), src[0] ? src : "-",
               payload ? payload : "?");
    }
    fflush(stdout);
}

/*  Runs cmd with the event JSON on its stdin; returns its wait status, or
    -1 when it could not be started. A SIGINT/SIGTERM for us meanwhile is
    passed on to it (systemd or kill stop `nexus sub`, not its command).  */
static int s_exec(const char *cmd, nexus_event_t *ev)
{
    const char *json = nexus_event_json(ev);
    int fds[2];
    if (pipe(fds))
        return -1;
    char seq[32];
    snprintf(seq, sizeof seq, "%" PRIu64, nexus_event_seq(ev));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        /*  Its own process group: a stop reaches the shell's children too
            (sh -c forks the command), not only the shell.                 */
        setpgid(0, 0);
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        setenv("NEXUS_TOPIC", nexus_event_topic(ev), 1);
        setenv("NEXUS_SEQ", seq, 1);
        setenv("NEXUS_SOURCE", nexus_event_source(ev), 1);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    if (json) {
        size_t len = strlen(json);
        /*  A command that does not read its stdin makes these fail: that
            is its choice, not an error.                                    */
        if (write(fds[1], json, len) == (ssize_t)len)
            (void)!write(fds[1], "\n", 1);
    }
    close(fds[1]);
    /*  Looked at every 20 ms, not waited for: the signal may be taken by
        another of our threads, so waitpid would not see it.              */
    int status = 0;
    bool told = false;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid || (got < 0 && errno != EINTR))
            break;
        if (s_interrupted && !told) {
            kill(-pid, SIGTERM);
            told = true;
        }
        usleep(20000);
    }
    return status;
}

/*  ---- nexus sub -------------------------------------------------------------*/

static int s_cmd_sub(s_cli_t *cli)
{
    uint64_t count = 0, since = 0;
    const char *v;
    if ((v = s_opt(cli, "count")) && (nx_cli_u64(v, &count) || count == 0))
        return s_usage_error(cli, "--count needs a positive number");
    bool have_since = (v = s_opt(cli, "since")) != NULL;
    if (have_since && nx_cli_u64(v, &since))
        return s_usage_error(cli, "--since needs a seq number");
    const char *exec = s_opt(cli, "exec");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    /*  The starting point before the patterns: set after them, the events
        that came live in between would be printed, then again from the
        history (nexus.h: a later resume_from delivers again).            */
    if (have_since)
        nexus_client_resume_from(cli->client, since);
    for (int i = 0; i < cli->npos; i++) {
        nexus_err_t err = nexus_subscribe(cli->client, cli->pos[i]);
        if (err == NEXUS_ERR_BAD_PATTERN)
            return s_usage_error(cli, nexus_client_errmsg(cli->client));
        if (err)
            return s_client_error(cli, err);
    }
    /*  A pattern outside the token's sub= would deliver nothing, in
        silence (the event plane has no error to give): the history, which
        checks the same permissions, says so clearly. One event at most.  */
    nexus_history_t *probe = nexus_history_new(cli->client);
    nexus_err_t perr = probe ? nexus_history_set_page(probe, 1, 1) : NEXUS_ERR_NOMEM;
    for (int i = 0; i < cli->npos && perr == NEXUS_OK; i++)
        perr = nexus_history_add_pattern(probe, cli->pos[i]);
    nexus_event_t *first = NULL;
    if (perr == NEXUS_OK) {
        nexus_history_set_max(probe, 1);
        perr = nexus_history_next(probe, &first);
        nexus_event_destroy(&first);
    }
    nexus_history_destroy(&probe);
    if (perr == NEXUS_ERR_FORBIDDEN)
        return s_client_error(cli, perr);
    /*  A standby given alone publishes no live events: said, not a stream
        that stays empty with no word.                                     */
    const char *ep = cli->endpoint ? cli->endpoint : getenv("NEXUS_ENDPOINT");
    if (!ep || !strchr(ep, ',')) {
        nexus_err_t herr = NEXUS_OK;
        json_t *ping = s_call(cli, "{\"op\":\"ping\"}", &herr);
        const char *role = json_string_value(json_object_get(ping, "role"));
        const char *primary = json_string_value(json_object_get(ping, "primary"));
        if (role && strcmp(role, "primary") != 0)
            fprintf(stderr,
                    "nexus: %s is a %s%s%s: it streams no live events (its history is there); "
                    "subscribe at the primary, or give the pair's list (--endpoint "
                    "PRIMARY,STANDBY)\n",
                    nexus_client_endpoint(cli->client), role, primary && *primary ? " of " : "",
                    primary && *primary ? primary : "");
        json_decref(ping);
    }
    uint64_t seen = 0;
    while (!s_interrupted && (count == 0 || seen < count)) {
        nexus_event_t *ev = NULL;
        nexus_err_t err = nexus_recv(cli->client, 200, &ev);
        if (err == NEXUS_ERR_TIMEOUT)
            continue;
        if (err == NEXUS_ERR_GAP) {
            uint64_t from, to;
            nexus_event_gap(ev, &from, &to);
            fprintf(stderr, "nexus: gap: events %" PRIu64 "..%" PRIu64 " were lost (retention)\n",
                    from, to);
            if (cli->json && !exec)
                s_print_event(cli, ev);
            nexus_event_destroy(&ev);
            continue;
        }
        if (err == NEXUS_ERR_RESET) {
            /*  The broker serves another store now (or an older copy):
                delivery starts over there; say so, then go on.            */
            nexus_reset_t r;
            nexus_event_reset(ev, &r);
            fprintf(stderr,
                    "nexus: reset: %s; store %s has seqs %" PRIu64 "..%" PRIu64
                    ": reading it from its first event (events may repeat, none is skipped)\n",
                    r.why, r.store_id, r.first_seq, r.last_seq);
            if (cli->json && !exec)
                s_print_event(cli, ev);
            nexus_event_destroy(&ev);
            continue;
        }
        if (err)
            return s_client_error(cli, err);
        if (exec) {
            int status = s_exec(exec, ev);
            if (status == -1)
                fprintf(stderr, "nexus: cannot run the --exec command for seq %" PRIu64 ": %s\n",
                        nexus_event_seq(ev), strerror(errno));
            else if (WIFSIGNALED(status))
                fprintf(stderr,
                        "nexus: --exec command was killed by signal %d (%s) for seq %" PRIu64
                        "\n",
                        WTERMSIG(status), strsignal(WTERMSIG(status)), nexus_event_seq(ev));
            else if (WEXITSTATUS(status))
                fprintf(stderr, "nexus: --exec command exited with %d for seq %" PRIu64 "\n",
                        WEXITSTATUS(status), nexus_event_seq(ev));
        } else
            s_print_event(cli, ev);
        nexus_event_destroy(&ev);
        seen++;
    }
    return NX_EXIT_OK;
}

/*  ---- nexus events ------------------------------------------------------------*/

static int s_cursor_path(const char *name, char *buf, size_t size)
{
    char dir[PATH_MAX];
    if (!*name || strchr(name, '/') || name[0] == '.' ||
        nx_cli_state_dir("cursors", true, dir, sizeof dir))
        return -1;
    int n = snprintf(buf, size, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/*  A cursor file: {"store_id": ID, "seq": N}, one line. A plain number
    is a cursor of an earlier version (no store named): *store is "".
    Returns 0, -1 when there is no file, -2 when it cannot be read or is
    neither (damaged, edited by hand).                                     */
static int s_cursor_read(const char *path, char *store, size_t store_size, uint64_t *seq)
{
    *store = 0;
    *seq = 0;
    errno = 0;
    char *text = nx_cli_read_file(path);
    if (!text)
        return errno == ENOENT ? -1 : -2;
    json_t *obj = json_loads(text, JSON_DECODE_ANY, NULL);
    json_t *s = json_object_get(obj, "seq");
    int rc = 0;
    if (json_is_object(obj) && json_is_integer(s) && json_integer_value(s) >= 0) {
        *seq = (uint64_t)json_integer_value(s);
        const char *id = json_string_value(json_object_get(obj, "store_id"));
        snprintf(store, store_size, "%s", id ? id : "");
    } else {
        text[strcspn(text, "\n")] = 0;
        rc = json_is_object(obj) || nx_cli_u64(text, seq) ? -2 : 0;
    }
    json_decref(obj);
    free(text);
    return rc;
}

/*  Decides where a cursor takes up on the broker's store, and tells when it
    cannot be followed (never a silent skip): a cursor of another store (a
    fresh data directory, another broker) means nothing here, and one above
    this store's last seq (a store restored from a backup: its new events
    get seqs the cursor has passed) cannot say which of its events are new;
    reading starts at this store's first event (events may repeat, none is
    skipped). Sets *since, and store (size NEXUS_STORE_ID_MAX) to the store
    *since belongs to ("": any). Returns NX_EXIT_OK or an exit code.        */
static int s_cursor_follow(s_cli_t *cli, const char *name, const char *path, uint64_t *since,
                           char *since_store)
{
    since_store[0] = 0;
    char old_store[64];
    uint64_t old_seq = 0;
    int read = s_cursor_read(path, old_store, sizeof old_store, &old_seq);
    if (read == -1)
        return NX_EXIT_OK; /* no cursor yet: from the start */
    nexus_err_t err = NEXUS_OK;
    json_t *health = s_call(cli, "{\"op\":\"health\"}", &err);
    if (!health)
        return s_client_error(cli, err ? err : NEXUS_ERR_INTERNAL);
    const char *store = json_string_value(json_object_get(health, "store_id"));
    uint64_t last = (uint64_t)json_integer_value(json_object_get(health, "last_seq"));
    const char *why = NULL;
    uint64_t from = old_seq;
    if (read == -2) {
        /*  Said, not taken for "no cursor": its events would repeat with
            no word of why.                                                */
        why = "its file cannot be read as a cursor ({\"store_id\":ID,\"seq\":N}): it is "
              "written anew after this call";
        from = 0;
    } else if (store && old_store[0] && strcmp(store, old_store) != 0) {
        why = "it was kept for another store (a new data directory or another broker)";
        from = 0;
    } else if (old_seq > last) {
        why = old_store[0] ? "this store is behind it (restored from a backup?)"
                           : "this store is behind it (another store, or restored from a "
                             "backup?)";
        from = 0;
    }
    if (why) {
        if (cli->json)
            s_print_json(json_pack("{s:{s:s,s:s,s:s?,s:I,s:s?,s:I,s:I,s:s}}", "reset", "cursor",
                                   name, "why", why, "cursor_store_id",
                                   old_store[0] ? old_store : NULL, "cursor_seq",
                                   (json_int_t)old_seq, "store_id", store, "last_seq",
                                   (json_int_t)last, "from_seq", (json_int_t)from, "path", path));
        fprintf(stderr,
                "nexus: cursor '%s' (seq %" PRIu64 "%s%s) cannot be followed: %s; this store "
                "(%s) has events up to seq %" PRIu64 ": reading it from %s (events may "
                "repeat, none is skipped)\n",
                name, old_seq, old_store[0] ? ", store " : "", old_store, why,
                store ? store : "unknown", last, "its first event");
    }
    *since = from;
    snprintf(since_store, NEXUS_STORE_ID_MAX, "%s", store ? store : "");
    json_decref(health);
    return NX_EXIT_OK;
}

/*  Reading on after seq since (a cursor, or --since N) on a store whose
    oldest event is above since + 1: retention removed the events between,
    said as `sub` says it (never a silent skip).                           */
static void s_events_gap(s_cli_t *cli, nexus_history_t *h, uint64_t since)
{
    uint64_t first = 0, last = 0, from, to;
    nexus_history_bounds(h, &first, &last);
    if (s_flag(cli, "desc") || !nx_front_gap(since, first, last, &from, &to))
        return;
    if (first)
        fprintf(stderr,
                "nexus: gap: events %" PRIu64 "..%" PRIu64 " are no longer in the history "
                "(retention); this store's oldest is seq %" PRIu64 "\n",
                from, to, first);
    else
        fprintf(stderr,
                "nexus: gap: events %" PRIu64 "..%" PRIu64 " are no longer in the history "
                "(retention); this store holds no events now\n",
                from, to);
    if (cli->json)
        s_print_json(
            json_pack("{s:{s:I,s:I}}", "gap", "from", (json_int_t)from, "to", (json_int_t)to));
}

static int s_cmd_events(s_cli_t *cli)
{
    uint64_t limit = 1000, since_seq = 0, since_us = 0, until_seq = 0, until_us = 0;
    const char *v;
    if ((v = s_opt(cli, "limit")) && (nx_cli_u64(v, &limit) || limit == 0))
        return s_usage_error(cli, "--limit needs a positive number");
    if ((v = s_opt(cli, "since")) && nx_cli_u64(v, &since_seq) && nx_cli_time(v, &since_us))
        return s_usage_error(cli, "--since needs a seq, an ISO time or a duration ago (10m)");
    if ((v = s_opt(cli, "until")) && nx_cli_u64(v, &until_seq) && nx_cli_time(v, &until_us))
        return s_usage_error(cli, "--until needs a seq, an ISO time or a duration ago (10m)");
    /*  0 is "no bound" to the iterator: --until 0 listed every event.     */
    if ((v = s_opt(cli, "until")) && nx_cli_u64(v, &until_seq) == 0 && until_seq == 0)
        return s_usage_error(cli, "--until needs a seq of at least 1 (or a time)");
    if (v && !until_seq && !until_us)
        return s_usage_error(cli, "--until: a time after 1970-01-01T00:00:00Z");
    const char *resume = s_opt(cli, "resume");
    /*  --resume reads on, oldest first, from its own cursor: a --desc or a
        --since with it was ignored, and the cursor never moved.           */
    if (resume && (s_flag(cli, "desc") || s_opt(cli, "since")))
        return s_usage_error(cli, "--resume goes on from its cursor, oldest first: it takes "
                                  "neither --desc nor --since");
    char cursor_path[PATH_MAX];
    if (resume && s_cursor_path(resume, cursor_path, sizeof cursor_path))
        return s_usage_error(cli, "--resume needs a plain name (and a writable state dir)");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    char since_store[NEXUS_STORE_ID_MAX] = "";
    if (resume) {
        uint64_t stored = 0;
        rc = s_cursor_follow(cli, resume, cursor_path, &stored, since_store);
        if (rc)
            return rc;
        if (stored > since_seq)
            since_seq = stored;
    }
    nexus_history_t *h = nexus_history_new(cli->client);
    for (int i = 0; i < cli->nopts; i++)
        if (!strcmp(cli->opts[i].name, "pattern") &&
            nexus_history_add_pattern(h, cli->opts[i].value)) {
            nexus_history_destroy(&h);
            return s_usage_error(cli, nexus_client_errmsg(cli->client));
        }
    nexus_history_set_seq_range(h, since_seq, until_seq);
    /*  The store may change between the health above and the pages: the
        iterator then stops with NEXUS_ERR_RESET instead of reading
        another store's seqs after this one's cursor.                      */
    nexus_history_set_store(h, since_store);
    nexus_history_set_time_range(h, since_us, until_us);
    nexus_history_set_page(h, limit < 1000 ? (uint32_t)limit : 1000, s_flag(cli, "desc"));
    nexus_history_set_max(h, limit);
    nexus_err_t err = NEXUS_OK;
    for (uint64_t i = 0; i <= limit; i++) {
        nexus_event_t *ev = NULL;
        err = nexus_history_next(h, &ev);
        if (i == 0 && !err)
            s_events_gap(cli, h, since_seq);
        if (err || !ev)
            break;
        s_print_event(cli, ev);
        nexus_event_destroy(&ev);
    }
    if (!err && resume) {
        /*  The cursor names the store its seq belongs to: the pages' (or,
            from a broker that does not name it, health's).                 */
        const char *store = nexus_history_store_id(h);
        json_t *health = NULL;
        if (!store[0]) {
            nexus_err_t herr = NEXUS_OK;
            health = s_call(cli, "{\"op\":\"health\"}", &herr);
            store = health ? json_string_value(json_object_get(health, "store_id")) : NULL;
        }
        char text[160];
        snprintf(text, sizeof text, "{\"store_id\":\"%s\",\"seq\":%" PRIu64 "}\n",
                 store ? store : "", nexus_history_position(h));
        json_decref(health);
        if (nx_cli_write_file(cursor_path, text))
            err = NEXUS_ERR_INVALID;
    }
    nexus_history_destroy(&h);
    if (err == NEXUS_ERR_INVALID)
        return s_fail(NX_EXIT_REFUSED, "cannot write the cursor file %s", cursor_path);
    return err ? s_client_error(cli, err) : NX_EXIT_OK;
}

/*  Never a silent cut: when a list was cut at --limit, stderr says so and
    names the --after of the next page. kind: "sessions"; key: the field
    of a record that --after takes.                                         */
static void s_page_note(s_cli_t *cli, nexus_records_t *recs, const char *kind, const char *key)
{
    size_t n = nexus_records_count(recs);
    if (!nexus_records_truncated(recs) || !n)
        return;
    char all[48] = "more";
    if (nexus_records_matched(recs))
        snprintf(all, sizeof all, "%" PRIu64, nexus_records_matched(recs));
    /*  matched counts them all, those before --after too.                 */
    if (s_opt(cli, "after"))
        fprintf(stderr,
                "nexus: %zu shown (%s match in all, from the first); the next page: "
                "--after '%s'\n",
                n, all, nexus_records_str(recs, n - 1, key));
    else
        fprintf(stderr, "nexus: %zu of %s matching %s shown; the next page: --after '%s'\n", n,
                all, kind, nexus_records_str(recs, n - 1, key));
}

/*  ---- nexus session ... -------------------------------------------------------*/

static int s_cmd_session_register(s_cli_t *cli)
{
    uint64_t ttl = 600000;
    const char *v;
    if ((v = s_opt(cli, "ttl")) && nx_cli_duration(v, &ttl))
        return s_usage_error(cli, "--ttl needs a duration such as 10m");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    nexus_client_t *c = cli->client;
    if (cli->session) {
        char *secret = nx_cli_session_secret(cli->session);
        rc = s_give_session(cli, secret);
        free(secret);
        if (rc)
            return rc;
    }
    /*  The client is connected, so configure through the register request
        itself: the setters are closed once connected.                     */
    json_t *req = json_pack("{s:s,s:I}", "op", "session.register", "ttl_ms", (json_int_t)ttl);
    if ((v = s_opt(cli, "name")))
        json_object_set_new(req, "name", json_string(v));
    if ((v = s_opt(cli, "capabilities"))) {
        json_t *caps = json_array();
        char *copy = strdup(v), *save = NULL;
        for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
            json_array_append_new(caps, json_string(t));
        free(copy);
        json_object_set_new(req, "capabilities", caps);
    }
    if ((v = s_opt(cli, "metadata"))) {
        json_t *meta = json_loads(v, JSON_ALLOW_NUL, NULL);
        if (!json_is_object(meta)) {
            json_decref(meta);
            json_decref(req);
            return s_usage_error(cli, "--metadata needs a JSON object");
        }
        json_object_set_new(req, "metadata", meta);
    }
    char *text = nx_json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *reply = NULL;
    nexus_err_t err = nexus_request_json(c, text, &reply);
    free(text);
    json_t *rep = reply ? json_loads(reply, JSON_ALLOW_NUL, NULL) : NULL;
    free(reply);
    if (err) {
        json_decref(rep);
        return s_client_error(cli, err);
    }
    const char *id = json_string_value(json_object_get(rep, "session"));
    const char *secret = json_string_value(json_object_get(rep, "secret"));
    char path[PATH_MAX];
    if (!id || nx_cli_session_path(id, true, path, sizeof path)) {
        json_decref(rep);
        return s_fail(NX_EXIT_REFUSED, "cannot store the session (no id or no state dir)");
    }
    if (nx_cli_session_store(id, secret, nexus_client_endpoint(c))) {
        json_decref(rep);
        return s_fail(NX_EXIT_REFUSED, "cannot write %s", path);
    }
    if (cli->json)
        s_print_json(json_pack("{s:s,s:b,s:I,s:s}", "session", id, "resumed",
                               json_is_true(json_object_get(rep, "resumed")), "ttl_ms",
                               (json_int_t)ttl, "state_file", path));
    else
        printf("%s\n", id);
    json_decref(rep);
    return NX_EXIT_OK;
}

static int s_cmd_session_status(s_cli_t *cli)
{
    int rc = s_connect(cli, true);
    if (rc)
        return rc;
    nexus_err_t err =
        nexus_session_status(cli->client, cli->pos[0], s_opt(cli, "work"), s_opt(cli, "text"));
    if (err == NEXUS_ERR_BAD_REQUEST)
        return s_fail(NX_EXIT_USAGE, "%s", nexus_client_errmsg(cli->client));
    if (err)
        return s_client_error(cli, err);
    if (cli->json)
        s_print_json(json_pack("{s:s,s:s}", "session", cli->session, "state", cli->pos[0]));
    return NX_EXIT_OK;
}

static int s_cmd_session_unregister(s_cli_t *cli)
{
    int rc = s_connect(cli, true);
    if (rc)
        return rc;
    uint64_t released = 0;
    nexus_err_t err = nexus_session_unregister(cli->client, &released);
    if (err)
        return s_client_error(cli, err);
    char path[PATH_MAX];
    if (nx_cli_session_path(cli->session, false, path, sizeof path) == 0)
        unlink(path);
    if (cli->json)
        s_print_json(
            json_pack("{s:s,s:I}", "session", cli->session, "released", (json_int_t)released));
    return NX_EXIT_OK;
}

/*  Writes a CURVE key pair as CZMQ certificate files: NAME (public, for
    the broker's curve_clients directory or for clients to name the broker)
    and NAME_secret (mode 0600, for curve_cert or NEXUS_CURVE_CERT).        */
static int s_cmd_keygen(s_cli_t *cli)
{
    const char *name = cli->pos[0];
    if (!*name || name[strlen(name) - 1] == '/')
        return s_usage_error(cli, "keygen needs a file NAME (NAME and NAME_secret are written)");
    /*  CZMQ builds NAME_secret in a 256-byte buffer of its own.             */
    char secret[256];
    if (strlen(name) > 240 ||
        snprintf(secret, sizeof secret, "%s_secret", name) >= (int)sizeof secret)
        return s_usage_error(cli, "the name is too long (240 characters at most)");
    if (access(name, F_OK) == 0 || access(secret, F_OK) == 0)
        return s_fail(NX_EXIT_REFUSED, "%s or %s exists already: not overwritten", name, secret);
    zcert_t *cert = zcert_new();
    if (!cert)
        return s_fail(NX_EXIT_REFUSED, "cannot make a key pair");
    const char *label = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    zcert_set_meta(cert, "name", "%s", label);
    mode_t old = umask(077);
    int rc = zcert_save(cert, name);
    umask(old);
    if (rc == 0)
        chmod(name, 0644); /* the public half is for sharing */
    if (rc != 0) {
        zcert_destroy(&cert);
        return s_fail(NX_EXIT_REFUSED, "cannot write %s and %s: %s", name, secret, strerror(errno));
    }
    if (cli->json) {
        json_t *out = json_pack("{s:s, s:s, s:s}", "public_key", zcert_public_txt(cert), "public",
                                name, "secret", secret);
        s_print_json(out);
    } else
        printf("%s\n", zcert_public_txt(cert));
    zcert_destroy(&cert);
    return NX_EXIT_OK;
}

static int s_cmd_session_get(s_cli_t *cli)
{
    const char *id = cli->npos ? cli->pos[0] : cli->session;
    if (!id)
        return s_usage_error(cli, "which session? give an id or --session");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    nexus_records_t *recs = NULL;
    nexus_err_t err = nexus_session_get(cli->client, id, &recs);
    if (err)
        return s_client_error(cli, err);
    const char *json = nexus_records_json(recs, 0);
    if (cli->json || json) {
        json_t *obj = json ? json_loads(json, JSON_ALLOW_NUL, NULL) : NULL;
        if (cli->json)
            s_print_json(obj);
        else {
            const char *key;
            json_t *value;
            nx_table_t *t = nx_table_new(2);
            json_object_foreach(obj, key, value)
            {
                char *text = nx_json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
                /*  Times (µs since the epoch) as `sessions` shows them.   */
                size_t klen = strlen(key);
                char iso[40];
                if (json_is_integer(value) && json_integer_value(value) > 0 &&
                    ((klen > 3 && !strcmp(key + klen - 3, "_at")) || !strcmp(key, "last_seen"))) {
                    free(text);
                    text = strdup(nx_cli_iso((uint64_t)json_integer_value(value), iso));
                }
                const char *row[2] = {key, json_is_string(value) ? json_string_value(value) : text};
                nx_table_add(t, row);
                free(text);
            }
            nx_table_print(t, stdout);
            nx_table_destroy(&t);
            json_decref(obj);
        }
    }
    nexus_records_destroy(&recs);
    return NX_EXIT_OK;
}

/*  ---- nexus sessions ---------------------------------------------------------*/

static void s_ago(uint64_t us, char *buf, size_t size)
{
    char iso[32];
    if (!us)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%s", nx_cli_iso(us, iso));
}

static int s_cmd_sessions(s_cli_t *cli)
{
    /*  Without --limit, every session (up to what one reply holds).        */
    uint64_t limit = 100000;
    const char *v;
    if ((v = s_opt(cli, "limit")) && (nx_cli_u64(v, &limit) || limit == 0 || limit > 100000))
        return s_usage_error(cli, "--limit needs a number 1..100000");
    const char *cap = s_opt(cli, "capability");
    bool available = s_flag(cli, "available");
    if ((cap || available) && s_flag(cli, "all"))
        return s_usage_error(cli, "--all lists gone sessions too; --capability and --available "
                                  "only find active ones");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    nexus_records_t *recs = NULL;
    const char *after = s_opt(cli, "after");
    nexus_err_t err;
    if (cap || available) {
        /*  Every --capability is required: join them.                     */
        char csv[1024] = "";
        for (int i = 0; i < cli->nopts; i++)
            if (!strcmp(cli->opts[i].name, "capability")) {
                size_t n = strlen(csv);
                snprintf(csv + n, sizeof csv - n, "%s%s", n ? "," : "", cli->opts[i].value);
            }
        err = nexus_sessions_find_after(cli->client, csv, available, after, (uint32_t)limit,
                                        &recs);
    } else
        err = nexus_sessions_list_after(cli->client, s_flag(cli, "all"), after, (uint32_t)limit,
                                        &recs);
    if (err)
        return s_client_error(cli, err);
    nx_table_t *t = nx_table_new(7);
    const char *head[] = {"SESSION",      "NAME",   "STATE",    "STATUS",
                          "CAPABILITIES", "CLAIMS", "LAST SEEN"};
    nx_table_add(t, head);
    for (size_t i = 0; i < nexus_records_count(recs); i++) {
        const char *state = nexus_records_str(recs, i, "state");
        char state_copy[32];
        snprintf(state_copy, sizeof state_copy, "%s", state ? state : "");
        if (cli->json) {
            s_print_json(json_loads(nexus_records_json(recs, i), JSON_ALLOW_NUL, NULL));
            continue;
        }
        json_t *rec = json_loads(nexus_records_json(recs, i), JSON_ALLOW_NUL, NULL);
        char caps[512] = "", claims[32], seen[40];
        size_t k;
        json_t *item;
        json_array_foreach(json_object_get(rec, "capabilities"), k, item)
        {
            size_t n = strlen(caps);
            snprintf(caps + n, sizeof caps - n, "%s%s", n ? "," : "", json_string_value(item));
        }
        snprintf(claims, sizeof claims, "%" PRIu64, nexus_records_u64(recs, i, "claims"));
        s_ago(nexus_records_u64(recs, i, "last_seen"), seen, sizeof seen);
        const char *row[7] = {json_string_value(json_object_get(rec, "session")),
                              json_string_value(json_object_get(rec, "name")),
                              state_copy,
                              json_string_value(json_object_get(rec, "status")),
                              caps,
                              claims,
                              seen};
        nx_table_add(t, row);
        json_decref(rec);
    }
    if (!cli->json)
        nx_table_print(t, stdout);
    nx_table_destroy(&t);
    s_page_note(cli, recs, "sessions", "session");
    nexus_records_destroy(&recs);
    return NX_EXIT_OK;
}

/*  ---- nexus claim / renew / release / complete / claims ----------------------*/

static int s_cmd_claim(s_cli_t *cli)
{
    uint64_t ttl = 0;
    const char *v;
    if ((v = s_opt(cli, "ttl")) && nx_cli_duration(v, &ttl))
        return s_usage_error(cli, "--ttl needs a duration such as 10m");
    /*  0 is the SDK's "the broker's default" (claim_ttl): said as is, a
        lease of none would be granted 30s in silence.                     */
    if (v && ttl == 0)
        return s_usage_error(cli, "--ttl 0: a lease must last (at least 100ms); leave --ttl out "
                                  "for the broker's claim_ttl");
    int rc = s_connect(cli, true);
    if (rc)
        return rc;
    nexus_claim_result_t res;
    const char *work = cli->pos[0];
    nexus_err_t err = nexus_claim(cli->client, work, ttl, s_opt(cli, "description"), &res);
    if (err == NEXUS_OK || err == NEXUS_ERR_DENIED) {
        if (cli->json)
            s_print_json(json_pack("{s:s,s:b,s:I,s:I,s:s,s:s}", "work_id", work, "granted",
                                   err == NEXUS_OK, "token", (json_int_t)res.token, "expires_at",
                                   (json_int_t)res.expires_at, "holder", res.holder, "state",
                                   res.state));
        else if (err == NEXUS_OK)
            printf("%" PRIu64 "\n", res.token);
        else
            printf("%s\n", res.holder);
        fflush(stdout);
    }
    return err ? s_client_error(cli, err) : NX_EXIT_OK;
}

/*  The fencing token: the second positional argument, or the current token
    of the item when this session holds it.                                */
static int s_token(s_cli_t *cli, uint64_t *token)
{
    if (cli->npos > 1) {
        if (nx_cli_u64(cli->pos[1], token))
            return s_usage_error(cli, "the fencing token must be a number");
        return NX_EXIT_OK;
    }
    json_t *req = json_pack("{s:s,s:s}", "op", "work.get", "work_id", cli->pos[0]);
    char *text = nx_json_dumps(req, JSON_COMPACT);
    json_decref(req);
    nexus_err_t err;
    json_t *rep = s_call(cli, text, &err);
    free(text);
    json_t *claim = json_object_get(rep, "claim");
    const char *holder = json_string_value(json_object_get(claim, "holder"));
    *token = (uint64_t)json_integer_value(json_object_get(claim, "token"));
    bool mine = holder && cli->session && !strcmp(holder, cli->session);
    json_decref(rep);
    if (err)
        return s_client_error(cli, err);
    if (!mine)
        return s_fail(NX_EXIT_REFUSED, "'%s' is not held by %s: give the fencing token",
                      cli->pos[0], cli->session);
    return NX_EXIT_OK;
}

static int s_cmd_renew(s_cli_t *cli)
{
    uint64_t ttl = 0, token = 0, expires = 0;
    const char *v;
    if ((v = s_opt(cli, "ttl")) && nx_cli_duration(v, &ttl))
        return s_usage_error(cli, "--ttl needs a duration such as 10m");
    if (v && ttl == 0)
        return s_usage_error(cli, "--ttl 0: a lease must last (at least 100ms); leave --ttl out "
                                  "to keep the claim's own lease");
    int rc = s_connect(cli, true);
    if (!rc)
        rc = s_token(cli, &token);
    if (rc)
        return rc;
    nexus_err_t err = nexus_renew(cli->client, cli->pos[0], token, ttl, &expires);
    if (err)
        return s_client_error(cli, err);
    char iso[32];
    if (cli->json)
        s_print_json(json_pack("{s:s,s:I,s:I}", "work_id", cli->pos[0], "token", (json_int_t)token,
                               "expires_at", (json_int_t)expires));
    else
        printf("%s\n", nx_cli_iso(expires, iso));
    return NX_EXIT_OK;
}

static int s_cmd_release(s_cli_t *cli)
{
    uint64_t token = 0;
    int rc = s_connect(cli, true);
    if (!rc)
        rc = s_token(cli, &token);
    if (rc)
        return rc;
    nexus_err_t err = nexus_release(cli->client, cli->pos[0], token, s_opt(cli, "reason"));
    if (err)
        return s_client_error(cli, err);
    if (cli->json)
        s_print_json(json_pack("{s:s,s:s}", "work_id", cli->pos[0], "state", "released"));
    return NX_EXIT_OK;
}

static int s_cmd_complete(s_cli_t *cli)
{
    uint64_t token = 0;
    const char *result = s_opt(cli, "result");
    if (result) {
        json_t *check = json_loads(result, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!check)
            return s_usage_error(cli, "--result needs JSON");
        json_decref(check);
    }
    int rc = s_connect(cli, true);
    if (!rc)
        rc = s_token(cli, &token);
    if (rc)
        return rc;
    nexus_err_t err = nexus_complete(cli->client, cli->pos[0], token, result);
    if (err)
        return s_client_error(cli, err);
    if (cli->json)
        s_print_json(json_pack("{s:s,s:s}", "work_id", cli->pos[0], "state", "completed"));
    return NX_EXIT_OK;
}

static int s_cmd_reopen(s_cli_t *cli)
{
    int rc = s_connect(cli, true);
    if (rc)
        return rc;
    json_t *req = json_pack("{s:s,s:s}", "op", "work.reopen", "work_id", cli->pos[0]);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *reply = NULL;
    nexus_err_t err = text ? nexus_request_json(cli->client, text, &reply) : NEXUS_ERR_NOMEM;
    free(text);
    free(reply);
    if (err)
        return s_client_error(cli, err);
    if (cli->json)
        s_print_json(json_pack("{s:s,s:s}", "work_id", cli->pos[0], "state", "open"));
    return NX_EXIT_OK;
}

static int s_cmd_claims(s_cli_t *cli)
{
    uint64_t limit = 0;
    const char *v;
    if ((v = s_opt(cli, "limit")) && (nx_cli_u64(v, &limit) || limit == 0 || limit > 100000))
        return s_usage_error(cli, "--limit needs a number 1..100000");
    /*  --mine without a session listed everyone's claims.                 */
    if (s_flag(cli, "mine") && (!cli->session || !*cli->session))
        return s_usage_error(cli, "--mine needs a session: give --session ID or set "
                                  "NEXUS_SESSION");
    if (s_flag(cli, "mine") && s_opt(cli, "holder"))
        return s_usage_error(cli, "--mine and --holder both name the holder: give one");
    const char *state = s_opt(cli, "state");
    if (state && strcmp(state, "open") && strcmp(state, "claimed") && strcmp(state, "released") &&
        strcmp(state, "expired") && strcmp(state, "completed"))
        return s_usage_error(cli, "--state is one of open, claimed, released, expired, completed");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    const char *holder = s_opt(cli, "holder");
    if (s_flag(cli, "mine"))
        holder = cli->session;
    nexus_records_t *recs = NULL;
    nexus_err_t err =
        nexus_claims_list_after(cli->client, holder, s_opt(cli, "state"), s_opt(cli, "prefix"),
                                s_opt(cli, "after"), (uint32_t)limit, &recs);
    if (err)
        return s_client_error(cli, err);
    nx_table_t *t = nx_table_new(6);
    const char *head[] = {"WORK", "STATE", "HOLDER", "TOKEN", "EXPIRES", "DESCRIPTION"};
    nx_table_add(t, head);
    for (size_t i = 0; i < nexus_records_count(recs); i++) {
        if (cli->json) {
            s_print_json(json_loads(nexus_records_json(recs, i), JSON_ALLOW_NUL, NULL));
            continue;
        }
        json_t *rec = json_loads(nexus_records_json(recs, i), JSON_ALLOW_NUL, NULL);
        char token[32], expires[40];
        snprintf(token, sizeof token, "%" PRIu64, nexus_records_u64(recs, i, "token"));
        s_ago(nexus_records_u64(recs, i, "expires_at"), expires, sizeof expires);
        const char *row[6] = {json_string_value(json_object_get(rec, "work_id")),
                              json_string_value(json_object_get(rec, "state")),
                              json_string_value(json_object_get(rec, "holder")),
                              token,
                              expires,
                              json_string_value(json_object_get(rec, "description"))};
        nx_table_add(t, row);
        json_decref(rec);
    }
    if (!cli->json)
        nx_table_print(t, stdout);
    nx_table_destroy(&t);
    s_page_note(cli, recs, "claims", "work_id");
    nexus_records_destroy(&recs);
    return NX_EXIT_OK;
}

/*  ---- nexus up -----------------------------------------------------------------*/

/*  Finds program: next to this binary, in ../<subdir>/ of the build tree,
    then on PATH. Returns 0 with the path in buf.                           */
static int s_find_program(const char *program, const char *subdir, char *buf, size_t size)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = 0;
        /*  A path that does not fit is skipped, never truncated.          */
        if ((size_t)snprintf(buf, size, "%.*s/%s", (int)(size / 2), self, program) < size &&
            access(buf, X_OK) == 0)
            return 0;
        if ((size_t)snprintf(buf, size, "%.*s/../%s/%s", (int)(size / 2), self, subdir, program) <
                size &&
            access(buf, X_OK) == 0)
            return 0;
    }
    const char *path = getenv("PATH");
    char *copy = path ? strdup(path) : NULL, *save = NULL;
    for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(buf, size, "%s/%s", dir, program);
        if (access(buf, X_OK) == 0) {
            free(copy);
            return 0;
        }
    }
    free(copy);
    return -1;
}

static pid_t s_spawn(char **argv)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        /*  `nexus up` killed (kill -9): its broker and gateway stop too,
            instead of holding the ports and the data dir under init.      */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        execv(argv[0], argv);
        fprintf(stderr, "nexus: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static int s_cmd_up(s_cli_t *cli)
{
    char nexusd[PATH_MAX], gateway[PATH_MAX];
    if (s_find_program("nexusd", "broker", nexusd, sizeof nexusd))
        return s_fail(NX_EXIT_USAGE, "cannot find nexusd (next to nexus, in ../broker or on PATH)");
    bool with_gateway = !s_flag(cli, "no-gateway") &&
                        s_find_program("nexus-gateway", "gateway", gateway, sizeof gateway) == 0;
    const char *data = s_opt(cli, "data-dir") ? s_opt(cli, "data-dir") : "./nexus-data";
    char *argv[S_OPTS_MAX + 16];
    int argc = 0;
    char in[300], out[300];
    argv[argc++] = nexusd;
    argv[argc++] = "--data-dir";
    argv[argc++] = (char *)data;
    const char *ep = cli->endpoint ? cli->endpoint : getenv("NEXUS_ENDPOINT");
    if (ep && *ep) {
        nexus_client_t *probe = nexus_client_new();
        if (!probe || nexus_client_set_endpoint(probe, ep)) {
            nexus_client_destroy(&probe);
            return s_usage_error(cli, "bad endpoint");
        }
        nexus_client_destroy(&probe);
        /*  Same derivation as the SDK: ports +1 and +2.                    */
        const char *colon = strrchr(ep, ':');
        long port = colon ? strtol(colon + 1, NULL, 10) : 0;
        if (strncmp(ep, "tcp://", 6) == 0 && port > 0) {
            snprintf(in, sizeof in, "%.*s:%ld", (int)(colon - ep), ep, port + 1);
            snprintf(out, sizeof out, "%.*s:%ld", (int)(colon - ep), ep, port + 2);
        } else {
            snprintf(in, sizeof in, "%s-in", ep);
            snprintf(out, sizeof out, "%s-out", ep);
        }
        argv[argc++] = "--control-endpoints";
        argv[argc++] = (char *)ep;
        argv[argc++] = "--events-in-endpoints";
        argv[argc++] = in;
        argv[argc++] = "--events-out-endpoints";
        argv[argc++] = out;
        setenv("NEXUS_ENDPOINT", ep, 1);
    }
    for (int i = 0; i < cli->nextra && argc < S_OPTS_MAX + 14; i++)
        argv[argc++] = cli->extra[i];
    argv[argc] = NULL;
    fprintf(stderr, "nexus: starting %s (data in %s)%s\n", nexusd, data,
            with_gateway ? " and the gateway" : "");
    pid_t broker = s_spawn(argv), gw = -1;
    if (broker < 0)
        return s_fail(NX_EXIT_REFUSED, "cannot start nexusd: %s", strerror(errno));
    if (with_gateway) {
        /*  The gateway talks to the broker this command started, with the
            token the broker takes from NEXUS_TOKEN.                        */
        const char *tok = getenv("NEXUS_TOKEN");
        if (tok && *tok && !getenv("NEXUS_BROKER_TOKEN"))
            setenv("NEXUS_BROKER_TOKEN", tok, 1);
        /*  Both programs have a queue_bytes, of other sizes: nexusd's per
            client connection (64M), the gateway's per WebSocket client
            (4M). Meant for the broker, it would let each browser queue as
            much: the gateway keeps its own.                                */
        const char *qb = getenv("NEXUS_QUEUE_BYTES");
        if (qb && *qb) {
            fprintf(stderr,
                    "nexus: NEXUS_QUEUE_BYTES=%s is nexusd's (per client connection); the "
                    "gateway keeps its own queue_bytes (per WebSocket client): run "
                    "nexus-gateway yourself with --queue-bytes to change it\n",
                    qb);
            unsetenv("NEXUS_QUEUE_BYTES");
        }
        char *gargv[] = {gateway, "--broker", (char *)(ep && *ep ? ep : NEXUS_DEFAULT_ENDPOINT),
                         NULL};
        gw = s_spawn(gargv);
    }
    int status = 0, code = NX_EXIT_OK;
    int alive = 1 + (gw > 0);
    bool stopping = false;
    uint64_t kill_at = 0;
    while (alive > 0) {
        if (s_interrupted && !stopping) {
            stopping = true;
            kill_at = (uint64_t)time(NULL) + 10;
            if (broker > 0)
                kill(broker, SIGTERM);
            if (gw > 0)
                kill(gw, SIGTERM);
        }
        if (stopping && (uint64_t)time(NULL) >= kill_at) {
            if (broker > 0)
                kill(broker, SIGKILL);
            if (gw > 0)
                kill(gw, SIGKILL);
        }
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) {
            usleep(50000);
            continue;
        }
        if (pid == broker || pid == gw) {
            alive--;
            int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
            char how[64];
            if (WIFSIGNALED(status))
                snprintf(how, sizeof how, "was killed by signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
            else
                snprintf(how, sizeof how, "exited (%d)", rc);
            /*  The broker is the fabric: a gateway that cannot run (its
                port taken, a bad setting) leaves it running.              */
            if (!stopping && pid == gw)
                fprintf(stderr,
                        "nexus: nexus-gateway %s; the broker keeps running (Ctrl-C stops it)\n",
                        how);
            else if (!stopping) {
                fprintf(stderr, "nexus: %s %s; stopping\n",
                        pid == broker ? "nexusd" : "nexus-gateway", how);
                /*  Bad settings (2) stay a usage error for the caller.    */
                code = rc == NX_EXIT_USAGE ? NX_EXIT_USAGE : rc ? NX_EXIT_REFUSED : NX_EXIT_OK;
                s_interrupted = 1;
            }
            if (pid == broker)
                broker = -1;
            else
                gw = -1;
        }
    }
    return code;
}

/*  ---- The table of subcommands -------------------------------------------------*/

/*  Makes the standby at the endpoint the primary (a pair without etcd), or
    asks it to campaign (with etcd).                                         */
static int s_cmd_promote(s_cli_t *cli)
{
    /*  With a list the client goes to the primary, which answers that it
        is the primary already: the standby is named alone.               */
    const char *ep = cli->endpoint ? cli->endpoint : getenv("NEXUS_ENDPOINT");
    if (ep && strchr(ep, ','))
        return s_usage_error(cli, "promote asks one broker: give the standby's endpoint alone "
                                  "(--endpoint tcp://STANDBY:PORT), not the pair's list");
    int rc = s_connect(cli, false);
    if (rc)
        return rc;
    nexus_err_t err;
    json_t *reply = s_call(cli,
                           s_opt(cli, "force") ? "{\"op\":\"promote\",\"force\":true}"
                                               : "{\"op\":\"promote\"}",
                           &err);
    if (err) {
        json_decref(reply);
        return s_client_error(cli, err);
    }
    if (cli->json)
        s_print_json(reply);
    else {
        json_t *epoch = json_object_get(reply, "epoch");
        printf("%s", json_string_value(json_object_get(reply, "result")));
        if (epoch)
            printf(" (epoch %" JSON_INTEGER_FORMAT ")", json_integer_value(epoch));
        printf("\n");
        json_decref(reply);
    }
    return NX_EXIT_OK;
}

static int s_cmd_mcp(s_cli_t *cli)
{
    /*  Refused here, as by every other command: the broker would refuse
        it at every try while the agent's tools said "try again".         */
    if (cli->session && *cli->session && !nx_session_id_valid(cli->session, strlen(cli->session))) {
        char what[160];
        snprintf(what, sizeof what,
                 "session '%.80s' is no session id: 1 to 64 of A-Z a-z 0-9 _ : @ -", cli->session);
        return s_usage_error(cli, what);
    }
    int rc = s_client_make(cli);
    if (rc)
        return rc;
    return nx_cli_mcp(&cli->client, cli->session, s_opt(cli, "name"), s_opt(cli, "capabilities"),
                      cli->timeout_ms);
}

static const s_cmd_t s_cmds[] = {
    {"up", "[--data-dir DIR] [--no-gateway] [-- NEXUSD-ARGS...]", "data-dir= no-gateway", 0, 0,
     s_cmd_up,
     "Runs the broker (nexusd) and, when built, the gateway in the foreground with a\n"
     "local data directory (default ./nexus-data). Ctrl-C stops both cleanly.\n"
     "nexusd is looked for next to this program, in ../broker/, then on PATH."},
    {"status", "", "gateway=", 0, 0, s_cmd_status,
     "Shows the broker's health and state, and the gateway's health when one is\n"
     "named. Exit 3 when either does not answer.\n"
     "  --gateway URL   also the gateway's /health: http://HOST:PORT (NEXUS_GATEWAY)"},
    {"pub", "TOPIC [JSON|-]", "ack lines", 1, 2, s_cmd_pub,
     "Publishes one event. The payload is JSON (from the argument, or stdin with -),\n"
     "sent as msgpack; none means an empty payload. The broker acknowledges it\n"
     "once it is stored; --ack prints its seq.\n"
     "  --lines   one event per line of stdin (JSON Lines; blank lines skipped),\n"
     "            up to 1024 in flight: --ack prints one seq per line, in order.\n"
     "            A refused line is reported on stderr and the others go on\n"
     "            (exit 1); a line that is not JSON stops the command (exit 2)."},
    {"sub", "PATTERN...", "since= count= exec=", 1, 64, s_cmd_sub,
     "Streams events matching any PATTERN ('*' one token, '>' the rest), one per\n"
     "line, surviving broker restarts without loss or duplicates.\n"
     "  --since SEQ   start after SEQ (from the history) instead of now\n"
     "  --count N     exit after N events\n"
     "  --exec CMD    run CMD (sh -c) for each event instead of printing it, with\n"
     "                the event JSON on stdin and NEXUS_TOPIC, NEXUS_SEQ,\n"
     "                NEXUS_SOURCE in its environment"},
    {"events", "", "pattern= since= until= limit= resume= desc", 0, 0, s_cmd_events,
     "Lists events from the history (oldest first).\n"
     "  --pattern P       only topics matching P (repeatable)\n"
     "  --since SEQ|TIME  after this seq, or from this time: ISO 8601 (2026-12-07,\n"
     "                    2026-12-07T10:00:00Z, ...+01:00) or a duration ago (10m, 2h ago)\n"
     "  --until SEQ|TIME  up to this seq (at least 1) or time\n"
     "  --limit N         at most N events (default 1000)\n"
     "  --desc            newest first\n"
     "  --resume NAME     continue where the last call with NAME stopped (cursor in\n"
     "                    $XDG_STATE_HOME/nexus/cursors/NAME, with the store it\n"
     "                    belongs to; a cursor of another store, or beyond this\n"
     "                    store's last seq, is reset with a notice); oldest first, so\n"
     "                    neither --desc nor --since"},
    {"session register", "", "name= capabilities= metadata= ttl=", 0, 0, s_cmd_session_register,
     "Registers a session for scripts and prints its id. Its secret is kept in\n"
     "$XDG_STATE_HOME/nexus/sessions/ID so later calls with --session ID (or\n"
     "NEXUS_SESSION) act as it; each such call also refreshes it.\n"
     "  --ttl DURATION        keep it alive this long between calls (default 10m)\n"
     "  --name N  --capabilities a,b  --metadata JSON-OBJECT\n"
     "  --session ID          register (or take back) this id"},
    {"session status", "STATE", "work= text=", 1, 1, s_cmd_session_status,
     "Sets the session's state: available, busy or away.\n"
     "  --work W   what it works on (--work '' clears it; absent: unchanged)\n"
     "  --text T   a line for people (--text '' clears it; absent: unchanged)"},
    {"session unregister", "", "", 0, 0, s_cmd_session_unregister,
     "Ends the session (its claims are released) and forgets its secret."},
    {"session get", "[ID]", "", 0, 1, s_cmd_session_get, "Shows one session record."},
    {"sessions", "", "capability= available all limit= after=", 0, 0, s_cmd_sessions,
     "Lists sessions sorted by id.\n"
     "  --capability X   only sessions with X (repeatable: all required)\n"
     "  --available      only sessions in state available (and active)\n"
     "  --all            include sessions gone recently\n"
     "  --limit N        at most N (1..100000; default: all, up to 100000); when more\n"
     "                   match, stderr says so and --after ID (the last id shown)\n"
     "                   gives the next page"},
    {"claim", "WORK_ID", "ttl= description=", 1, 1, s_cmd_claim,
     "Claims a work item as the session. Granted: prints the fencing token, exit 0.\n"
     "Denied: prints the holder, exit 1.\n"
     "  --ttl DURATION        lease (default: the broker's claim_ttl, 30s)\n"
     "  --description TEXT    what the work is, for people"},
    {"renew", "WORK_ID [TOKEN]", "ttl=", 1, 2, s_cmd_renew,
     "Sets the lease to --ttl from now; prints the new expiry. Without TOKEN, the\n"
     "session's current token for the item is used.\n"
     "  --ttl DURATION        the new lease (default: the claim's own, the --ttl of the\n"
     "                        claim or of the last renewal that gave one)"},
    {"release", "WORK_ID [TOKEN]", "reason=", 1, 2, s_cmd_release,
     "Gives the item back.\n"
     "  --reason TEXT         why, in the work.released event"},
    {"complete", "WORK_ID [TOKEN]", "result=", 1, 2, s_cmd_complete,
     "Closes the item for good, with an optional --result JSON."},
    {"reopen", "WORK_ID", "", 1, 1, s_cmd_reopen,
     "Opens a completed item again (work.reopened), so that it can be claimed."},
    {"promote", "", "force", 0, 0, s_cmd_promote,
     "Makes the standby at --endpoint the primary (pairs without etcd; with etcd it campaigns). "
     "--force: even a standby that is not in sync, which may lack acknowledged changes."},
    {"mcp", "", "name= capabilities=", 0, 0, s_cmd_mcp,
     "Serves the Model Context Protocol on stdin/stdout (JSON-RPC 2.0, one message a\n"
     "line) for an agent on this machine: add {\"command\": \"nexus\", \"args\": [\"mcp\"]}\n"
     "to its MCP servers. It acts as one session: --session ID (or NEXUS_SESSION; its\n"
     "secret is kept in the state dir, so a restart takes it back), else a new one;\n"
     "--name and --capabilities describe it. The broker is reached with the usual\n"
     "settings (--endpoint / NEXUS_ENDPOINT, NEXUS_TOKEN, CURVE). Tools: register_session,\n"
     "list_sessions, list_channels, publish_event, get_events, unregister_session,\n"
     "notify, claim_work, renew_work, release_work, complete_work, list_claims,\n"
     "send_message, wait_for_events (docs/mcp.md). Logs go to stderr."},
    {"keygen", "NAME", "", 1, 1, s_cmd_keygen,
     "Writes a CURVE key pair: NAME (the public certificate: put it in the broker's\n"
     "curve_clients directory, or give it to clients as NEXUS_CURVE_SERVER_KEY) and\n"
     "NAME_secret (mode 0600: the broker's curve_cert, or a client's NEXUS_CURVE_CERT).\n"
     "Prints the public key. Needs no broker."},
    {"claims", "", "holder= state= prefix= limit= after= mine", 0, 0, s_cmd_claims,
     "Lists claims sorted by work id (--holder S, --mine,\n"
     "--state claimed|released|expired|completed|open, --prefix P). At most --limit N\n"
     "(default 1000); when more match, stderr says so and --after ID (the last work id\n"
     "shown) gives the next page."},
};
#define S_NCMDS (sizeof s_cmds / sizeof s_cmds[0])

static const char *s_common = "Options of every subcommand:\n"
                              "  --endpoint EP   broker control endpoint, or a comma-separated list of a\n"
                              "                  primary/standby pair (NEXUS_ENDPOINT; default "
                              "tcp://127.0.0.1:8451)\n"
                              "  --session ID    act as this session (NEXUS_SESSION)\n"
                              "  --timeout DUR   how long to wait for the broker (default 5s)\n"
                              "  --keepalive DUR a link silent this long is dead and connected "
                              "again (default 15s, 0 off)\n"
                              "  --json          output one JSON object per line\n"
                              "  -h, --help      this help\n"
                              "Access token: NEXUS_TOKEN. Exit: 0 ok, 1 refused/denied, 2 usage, "
                              "3 broker unreachable.\n";

static void s_help_cmd(const s_cmd_t *cmd)
{
    printf("Usage: nexus %s %s [OPTIONS]\n\n%s\n\n%s", cmd->name, cmd->args, cmd->help, s_common);
}

static void s_help(FILE *out)
{
    fprintf(out, "Usage: nexus COMMAND [ARGS] [OPTIONS]\n\nThe command-line client of the "
                 "nexus message fabric.\n\nCommands:\n");
    /*  Each command with its arguments and the first sentence of its
        help, cut to a line: what it is for, not only what it takes.       */
    for (size_t i = 0; i < S_NCMDS; i++) {
        char line[160], what[52];
        snprintf(line, sizeof line, "%s %s", s_cmds[i].name, s_cmds[i].args);
        size_t n = 0;
        for (const char *h = s_cmds[i].help; *h && n < sizeof what - 1; h++) {
            if ((h[0] == '.' && (h[1] == ' ' || h[1] == '\n' || !h[1])) || h[0] == ':')
                break;
            what[n++] = *h == '\n' ? ' ' : *h;
        }
        what[n] = 0;
        if (n == sizeof what - 1)
            memcpy(what + n - 3, "...", 3);
        if (strlen(line) > 26)
            fprintf(out, "  %s\n  %-26s %s\n", line, "", what);
        else
            fprintf(out, "  %-26s %s\n", line, what);
    }
    fprintf(out, "  %-26s %s\n\n%s", "version", "Prints the version", s_common);
    fprintf(out, "\nnexus COMMAND --help tells more.\n");
}

/*  Checks that name is an option of cmd; returns 1 takes a value, 0 flag,
    -1 unknown.                                                            */
static int s_known(const s_cmd_t *cmd, const char *name)
{
    static const char *const global_values[] = {"endpoint", "session", "timeout", "keepalive",
                                                NULL};
    for (int i = 0; global_values[i]; i++)
        if (!strcmp(name, global_values[i]))
            return 1;
    if (!strcmp(name, "json") || !strcmp(name, "help"))
        return 0;
    size_t len = strlen(name);
    for (const char *p = cmd->flags; *p;) {
        while (*p == ' ')
            p++;
        const char *end = p;
        while (*end && *end != ' ')
            end++;
        size_t n = (size_t)(end - p);
        bool value = n && p[n - 1] == '=';
        if ((value ? n - 1 : n) == len && !strncmp(p, name, len))
            return value ? 1 : 0;
        p = end;
    }
    return -1;
}

int main(int argc, char **argv)
{
    /*  Our own SIGINT/SIGTERM handling: stop cleanly between events.      */
    zsys_handler_set(NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        s_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? NX_EXIT_USAGE : NX_EXIT_OK;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        bool json = argc == 3 && !strcmp(argv[2], "--json");
        if (argc > 2 && !json) {
            fprintf(stderr, "nexus: version takes no arguments but --json\n");
            return NX_EXIT_USAGE;
        }
        if (json)
            printf("{\"version\":\"%s\"}\n", NEXUS_VERSION_STRING);
        else
            printf("nexus %s\n", NEXUS_VERSION_STRING);
        return NX_EXIT_OK;
    }
    s_cli_t cli;
    memset(&cli, 0, sizeof cli);
    cli.timeout_ms = 5000;
    cli.keepalive_ms = 15000;
    cli.session = getenv("NEXUS_SESSION");
    if (cli.session && !*cli.session)
        cli.session = NULL;
    /*  Two-word commands first ("session register"), then one word.       */
    int first = 2;
    for (size_t i = 0; i < S_NCMDS && !cli.cmd; i++) {
        const char *name = s_cmds[i].name;
        const char *space = strchr(name, ' ');
        if (space && argc > 2 && strlen(argv[1]) == (size_t)(space - name) &&
            !strncmp(argv[1], name, (size_t)(space - name)) && !strcmp(argv[2], space + 1)) {
            cli.cmd = &s_cmds[i];
            first = 3;
        }
    }
    for (size_t i = 0; i < S_NCMDS && !cli.cmd; i++)
        if (!strcmp(argv[1], s_cmds[i].name))
            cli.cmd = &s_cmds[i];
    if (!cli.cmd) {
        bool help = argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"));
        if (!strcmp(argv[1], "session") && help) {
            for (size_t i = 0; i < S_NCMDS; i++)
                if (!strncmp(s_cmds[i].name, "session ", 8))
                    printf("Usage: nexus %s %s [OPTIONS]\n  %s\n\n", s_cmds[i].name,
                           s_cmds[i].args, s_cmds[i].help);
            printf("%s", s_common);
            return NX_EXIT_OK;
        }
        if (!strcmp(argv[1], "session"))
            fprintf(stderr, "nexus: session needs register, status, unregister or get (see nexus "
                            "session --help)\n");
        else
            fprintf(stderr, "nexus: unknown command '%s' (see nexus --help)\n", argv[1]);
        return NX_EXIT_USAGE;
    }
    bool operands = false; /* after "--": no more options */
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (!operands && !strcmp(arg, "--")) {
            /*  `up` hands what follows to nexusd; every other command takes
                it as arguments, options or not (`pub t -- -5`): dropped in
                silence, a payload was published as null.                  */
            if (cli.cmd->fn == s_cmd_up) {
                cli.extra = argv + i + 1;
                cli.nextra = argc - i - 1;
                break;
            }
            operands = true;
            continue;
        }
        if (!operands && !strcmp(arg, "-h"))
            arg = "--help";
        if (operands || strncmp(arg, "--", 2) != 0 || arg[2] == 0) {
            if (cli.npos == S_OPTS_MAX)
                return s_usage_error(&cli, "too many arguments");
            cli.pos[cli.npos++] = arg;
            continue;
        }
        char name[64];
        const char *eq = strchr(arg, '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq ? eq - arg - 2 : (long)strlen(arg) - 2),
                 arg + 2);
        int kind = s_known(cli.cmd, name);
        if (kind < 0) {
            char text[128];
            snprintf(text, sizeof text, "unknown option --%s", name);
            return s_usage_error(&cli, text);
        }
        const char *value = NULL;
        if (kind == 1) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                char text[128];
                snprintf(text, sizeof text, "--%s needs a value", name);
                return s_usage_error(&cli, text);
            }
        } else if (eq) {
            char text[128];
            snprintf(text, sizeof text, "--%s takes no value", name);
            return s_usage_error(&cli, text);
        }
        if (!strcmp(name, "help")) {
            s_help_cmd(cli.cmd);
            return NX_EXIT_OK;
        }
        if (!strcmp(name, "json"))
            cli.json = true;
        else if (!strcmp(name, "endpoint"))
            cli.endpoint = value;
        else if (!strcmp(name, "session"))
            cli.session = value;
        else if (!strcmp(name, "timeout")) {
            uint64_t ms;
            if (nx_cli_duration(value, &ms) || ms == 0 || ms > 3600000)
                return s_usage_error(&cli, "--timeout needs a duration such as 5s");
            cli.timeout_ms = (uint32_t)ms;
        } else if (!strcmp(name, "keepalive")) {
            uint64_t ms;
            if (nx_cli_duration(value, &ms) || (ms && (ms < 300 || ms > 6553500)))
                return s_usage_error(&cli, "--keepalive needs 0 (off) or a duration from 300ms "
                                           "to 109m, such as 15s");
            cli.keepalive_ms = (uint32_t)ms;
        } else if (cli.nopts < S_OPTS_MAX) {
            cli.opts[cli.nopts].name = strdup(name);
            cli.opts[cli.nopts].value = value;
            cli.nopts++;
        }
    }
    int code;
    if (cli.npos < cli.cmd->min_pos)
        code = s_usage_error(&cli, "missing argument");
    else if (cli.npos > cli.cmd->max_pos)
        code = s_usage_error(&cli, "too many arguments");
    else
        code = cli.cmd->fn(&cli);
    nexus_client_destroy(&cli.client);
    for (int i = 0; i < cli.nopts; i++)
        free((char *)cli.opts[i].name);
    return code;
}
