/*  =========================================================================
    nx_cli_mcp - `nexus mcp`: the fabric's MCP server (sdk/front/nx_mcp)
    over stdio, for an agent on this machine.

    The MCP stdio transport: one JSON-RPC message per line on stdin, one
    per line on stdout; nothing else is written to stdout (logs go to
    stderr). One thread: it polls stdin, a pipe that the client's event
    callback writes to when an event may end a parked wait_for_events, and
    the next heartbeat or wait deadline. Other requests are answered while
    a wait is parked.

    The client subscribes to what waits look for, not to every event: an
    agent's machine may be across a VPN from a busy fabric. The patterns
    stay subscribed for later waits (up to S_SUBS_MAX, then everything),
    and show in list_channels. A parked wait looks at the history again
    1 s after a new subscription (one that reached the broker after the
    wait looked) and every 30 s (each look may move the session's cursor,
    a write on the broker), so no wake-up it missed holds it to its
    deadline.
    =========================================================================
*/

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_cli.h"
#include "nx_front_event.h"
#include "nx_jdump.h"
#include "nx_log.h"
#include "nx_mcp.h"
#include "nx_topic.h"

#define S_LINE_MAX   (16u << 20) /* a message larger than this is refused */
#define S_SUBS_MAX   32          /* patterns subscribed one by one         */
#define S_RECHECK_US 30000000ull /* a parked wait looks again this often   */

extern char **environ;

static nx_mcp_t *s_mcp;             /* the one MCP session               */
static int s_wake[2] = {-1, -1};    /* event callback -> loop            */
static volatile int s_woken;        /* a wake byte is in the pipe        */
static const char *s_endpoint = ""; /* for the state file                */
static nexus_client_t *s_client;    /* the fabric client                 */
static char *s_subs[S_SUBS_MAX];    /* the patterns subscribed           */
static size_t s_n_subs;
static bool s_sub_all;     /* ">" is subscribed                 */
static uint64_t s_recheck; /* mono us a parked wait looks again */

/*  On libnexus's thread: wakes the loop when an event may end the wait.  */
static void s_on_event(nexus_event_t *event, void *arg)
{
    if (nexus_event_kind(event) != NEXUS_EVENT_MESSAGE ||
        !nx_mcp_wants(s_mcp, nexus_event_topic(event)))
        return;
    if (!__atomic_exchange_n(&s_woken, 1, __ATOMIC_ACQ_REL)) {
        char b = 1;
        if (write(s_wake[1], &b, 1) < 0)
            __atomic_store_n(&s_woken, 0, __ATOMIC_RELEASE);
    }
}

/*  Subscribes to pattern unless it is already: 1 when it was added, 0
    when it was there or could not be now (the broker away: the next wait
    tries again, the re-checks cover this one), -1 when we keep too many. */
static int s_sub_one(const char *pattern)
{
    for (size_t j = 0; j < s_n_subs; j++)
        if (!strcmp(s_subs[j], pattern))
            return 0;
    if (s_n_subs == S_SUBS_MAX)
        return -1;
    char *copy = strdup(pattern);
    if (!copy || nexus_subscribe(s_client, copy) != NEXUS_OK) {
        free(copy);
        return 0;
    }
    s_subs[s_n_subs++] = copy;
    return 1;
}

/*  nx_mcp's listen: subscribes to what a wait is about to look for. A
    direct message travels on its target's topic (session.<id>.direct),
    not as message.direct: a wait for it subscribes to this session's.    */
static void s_listen(const char *const *patterns, size_t n)
{
    bool added = false, all = n == 0;
    for (size_t i = 0; i < n && !all && !s_sub_all; i++) {
        if (!patterns[i])
            continue;
        int rc = s_sub_one(patterns[i]), d = 0;
        /*  None without a session: session.*.direct is everyone's.        */
        const char *me = nx_mcp_session(s_mcp);
        if (rc >= 0 && *me && nx_front_wants_direct(patterns[i])) {
            char direct[NX_SESSION_ID_MAX + 32];
            snprintf(direct, sizeof direct, "session.%s.direct", me);
            d = s_sub_one(direct);
        }
        added |= rc > 0 || d > 0;
        all |= rc < 0 || d < 0; /* more patterns than we keep: everything */
    }
    if (all && !s_sub_all) {
        s_sub_all = nexus_subscribe(s_client, ">") == NEXUS_OK;
        added = true;
    }
    s_recheck = nx_mono_us() + (added ? 1000000 : S_RECHECK_US);
}

/*  notify-send where a desktop session is there to show it.              */
static bool s_desktop(const char *title, const char *message, const char *level)
{
    if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY") && !getenv("DBUS_SESSION_BUS_ADDRESS"))
        return false;
    const char *urgency = !strcmp(level, "error") ? "critical" : "normal";
    char *argv[] = {"notify-send", "-u",          (char *)urgency, "-a",
                    "nexus",       (char *)title, (char *)message, NULL};
    pid_t pid;
    /*  SIGCHLD is ignored: the child is reaped by the kernel.             */
    return posix_spawnp(&pid, "notify-send", NULL, NULL, argv, environ) == 0;
}

static char *s_secret_load(const char *session)
{
    return nx_cli_session_secret(session);
}

static void s_secret_store(const char *session, const char *secret)
{
    if (nx_cli_session_store(session, secret, s_endpoint))
        nx_warn("cannot store the secret of session %s: a restart cannot take it back", session);
}

/*  Writes one message as one line to stdout.                              */
static int s_send(json_t *msg)
{
    char *text = nx_json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return -1;
    size_t len = strlen(text);
    text[len] = '\n';
    size_t off = 0;
    int rc = 0;
    while (off < len + 1) {
        ssize_t n = write(STDOUT_FILENO, text + off, len + 1 - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = -1;
            break;
        }
        off += (size_t)n;
    }
    free(text);
    return rc;
}

/*  One line from stdin.                                                   */
static int s_line(char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (!len)
        return 0;
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, 0, &jerr);
    if (!msg) {
        char why[200];
        snprintf(why, sizeof why, "not JSON: %s", jerr.text);
        return s_send(nx_mcp_unreadable(line, len, why));
    }
    json_t *reply = NULL;
    nx_mcp_status_t st = nx_mcp_handle(s_mcp, msg, &reply);
    json_decref(msg);
    return st == NX_MCP_REPLY ? s_send(reply) : 0;
}

static int s_resume(void)
{
    json_t *reply = NULL;
    return nx_mcp_resume(s_mcp, &reply) == NX_MCP_REPLY ? s_send(reply) : 0;
}

int nx_cli_mcp(nexus_client_t **client_p, const char *session, const char *name, const char *caps,
               uint32_t timeout_ms)
{
    nexus_client_t *client = *client_p;
    *client_p = NULL;
    nx_log_init("nexus-mcp", NX_LOG_INFO);
    signal(SIGCHLD, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    if (pipe2(s_wake, O_CLOEXEC | O_NONBLOCK)) {
        nexus_client_destroy(&client);
        fprintf(stderr, "nexus: cannot make a pipe: %s\n", strerror(errno));
        return NX_EXIT_REFUSED;
    }
    nx_mcp_config_t cfg = {
        .client = client,
        .server = "nexus",
        .session = session && *session ? session : NULL,
        .name = name,
        .caps = caps,
        .via = "nexus mcp",
        .wait_max_s = 300,
        .desktop = s_desktop,
        .secret_load = s_secret_load,
        .secret_store = s_secret_store,
        .listen = s_listen,
    };
    s_mcp = nx_mcp_new(&cfg);
    int code = NX_EXIT_OK;
    nexus_client_set_callback(client, s_on_event, NULL);
    /*  A broker that is not up yet is not fatal: the client keeps trying,
        tools answer "unavailable" meanwhile, and the session registers
        with the first heartbeat that gets through.                        */
    /*  Nor does it hold up the agent's initialize: the first look waits at
        most 1 s, the calls after it the client's timeout.                 */
    nexus_client_set_timeout(client, timeout_ms < 1000 ? timeout_ms : 1000);
    nexus_err_t rc = s_mcp ? nexus_client_connect(client) : NEXUS_ERR_NOMEM;
    /*  Kept before the next call, which clears it (a refused handshake
        said only "nexus: ").                                              */
    char failed[512];
    snprintf(failed, sizeof failed, "%s",
             rc == NEXUS_ERR_NOMEM && !s_mcp ? "out of memory" : nexus_client_errmsg(client));
    nexus_client_set_timeout(client, timeout_ms);
    s_endpoint = nexus_client_endpoint(client);
    if (rc && rc != NEXUS_ERR_UNREACHABLE && rc != NEXUS_ERR_TIMEOUT) {
        fprintf(stderr, "nexus: %s\n", failed[0] ? failed : nexus_strerror(rc));
        code = nx_cli_exit_code(rc);
        goto done;
    }
    s_client = client;
    char why[256] = "";
    if (rc)
        nx_warn("the broker at %s does not answer yet: serving MCP on stdio; the session "
                "registers once it does, and tools answer 'unavailable' meanwhile",
                s_endpoint);
    else if ((rc = nx_mcp_start(s_mcp, why)) && rc != NEXUS_ERR_UNREACHABLE) {
        /*  The broker refused it (a session active elsewhere, a token that
            may not act as it, too many capabilities): it would refuse at
            every try, while the tools told the agent to try again.       */
        fprintf(stderr, "nexus: cannot register the session%s%s: %s\n",
                session && *session ? " " : "", session && *session ? session : "", why);
        code = nx_cli_exit_code(rc) == NX_EXIT_OK ? NX_EXIT_REFUSED : nx_cli_exit_code(rc);
        goto done;
    } else if (rc)
        nx_warn("cannot register the session yet (%s): tools wait for the broker", why);
    else
        nx_info("serving MCP on stdio as session %s (broker %s)", nx_mcp_session(s_mcp),
                s_endpoint);

    char *buf = malloc(65536);
    size_t cap = 65536, len = 0;
    bool eof = false, skipping = false; /* the rest of a refused line */
    while (buf && !eof) {
        uint64_t now = nx_mono_us(), next = nx_mcp_tick(s_mcp);
        uint64_t deadline = nx_mcp_deadline(s_mcp);
        if (deadline && deadline < next)
            next = deadline;
        if (deadline && s_recheck < next)
            next = s_recheck;
        int timeout = next > now ? (int)((next - now) / 1000) + 1 : 0;
        struct pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {s_wake[0], POLLIN, 0}};
        if (poll(fds, 2, timeout) < 0 && errno != EINTR)
            break;
        if (fds[1].revents & POLLIN) {
            /*  Drained before the flag drops: an event that comes in
                between finds the flag up and writes nothing, and the look
                below finds it. The other order could drain the byte of an
                event that had just raised the flag again, and with the
                flag left up no later event would wake the loop.          */
            char drain[64];
            while (read(s_wake[0], drain, sizeof drain) > 0)
                ;
            __atomic_store_n(&s_woken, 0, __ATOMIC_RELEASE);
            s_resume();
        } else if (deadline && nx_mono_us() >= deadline)
            s_resume();
        else if (deadline && nx_mono_us() >= s_recheck) {
            s_recheck = nx_mono_us() + S_RECHECK_US;
            s_resume();
        }
        if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (len == cap) {
            if (cap >= S_LINE_MAX) {
                /*  One message larger than we take: refused once, then
                    skipped up to its end of line.                         */
                if (!skipping)
                    s_send(nx_mcp_parse_error("message over 16 MiB"));
                skipping = true;
                len = 0;
            } else {
                char *grown = realloc(buf, cap * 2);
                if (!grown)
                    break;
                buf = grown;
                cap *= 2;
            }
        }
        ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            eof = true;
            n = 0;
        }
        len += (size_t)n;
        char *start = buf, *nl;
        if (skipping) {
            nl = memchr(buf, '\n', len);
            if (!nl) {
                len = 0;
                continue;
            }
            skipping = false;
            start = nl + 1;
        }
        while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
            if (s_line(start, (size_t)(nl - start)))
                eof = true; /* stdout is gone */
            start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
        if (eof && len)
            s_line(buf, len);
    }
    free(buf);
    if (*nx_mcp_session(s_mcp))
        nx_info("stdin closed: stopping (session %s stays until its TTL or unregister_session)",
                nx_mcp_session(s_mcp));
    else
        nx_info("stdin closed: stopping");
done:
    nexus_client_destroy(&client);
    s_client = NULL;
    for (size_t i = 0; i < s_n_subs; i++)
        free(s_subs[i]);
    s_n_subs = 0;
    nx_mcp_destroy(&s_mcp);
    close(s_wake[0]);
    close(s_wake[1]);
    return code;
}
