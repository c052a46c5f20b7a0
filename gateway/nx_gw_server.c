/*  =========================================================================
    nx_gw_server - the libwebsockets side of the gateway: one protocol
    callback for HTTP and WebSocket on one port, run on the lws thread.

    It parses what arrives (HTTP requests and bodies, WebSocket frames
    assembled into messages) and hands each to the worker as a command.
    Other threads queue into connections and call lws_cancel_service;
    LWS_CALLBACK_EVENT_WAIT_CANCELLED then writes to the WebSocket
    connections that have something to send and whose last write went out
    whole, and asks lws for writeable callbacks on the others (s_kick).
    =========================================================================
*/

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_gw.h"
#include "nx_gw_rfc6455.h"
#include "nx_jdump.h"
#include "nx_topic.h"
#include "nx_log.h"

/*  Descriptors kept out of lws's share: the broker link (ZeroMQ sockets
    and their signalling pipes), the log, the dashboard files being sent,
    stdio. The listening socket is paused once the connections reach the
    rest (accepts wait in the kernel's backlog) instead of accepting into
    EMFILE.                                                                */
#define S_FD_RESERVE 64
/*  HTTP connections allowed beyond max_clients WebSocket connections.     */
#define S_HTTP_EXTRA 256
/*  When accept fails anyway (descriptors taken by something else), the
    service thread pauses this long before polling again, and says so in
    the log at most once per S_ACCEPT_LOG_US.                             */
#define S_ACCEPT_PAUSE_US 20000
#define S_ACCEPT_LOG_US   (10 * 1000000ull)
/*  An HTTP body completion said again this many times in one call of
    lws_service is lws looping on a pipelined request (s_callback).       */
#define S_AGAIN_MAX 1000
static uint64_t s_service_pass; /* calls of lws_service (its thread only) */

typedef struct {
    nx_gw_conn_t *conn; /* the connection (registry holds it)         */
    int phase;          /* HTTP: 0 waiting, 1 headers out, 2 done     */
    bool answered;      /* HTTP: answered here, before the worker: a
body that follows is read and dropped     */
    bool close_after;   /* HTTP: a body we cannot skip follows: close */
    bool body_pending;  /* HTTP: body still arriving; answer after */
    bool dispatched;    /* HTTP: queued for the worker                */
    bool completed;     /* HTTP: lws said its body is complete        */
    bool dispatch_due;  /* HTTP: to be queued at the next writable    */
    unsigned again;     /* HTTP: completions said again in one pass   */
    uint64_t again_pass; /* HTTP: the service pass they were in       */
    /*  What the WebSocket handshake said, for LWS_CALLBACK_ESTABLISHED.     */
    char session[NX_GW_SESSION_MAX + 1];
    bool has_since;
    char store[40]; /* ?store=: the store since belongs to, "" none      */
    uint64_t since;
    int recent;
    char name[128];
    char caps[512];
    const void *auth;
    bool unmasked_said; /* WebSocket: its unmasked frame was logged     */
} s_pss_t;

/*  The slow-client timer. Everything else wakes lws when it happens (a
    queued message, an HTTP answer: lws_cancel_service); only the end of a
    full queue's slow_timeout has no event of its own. The timer is armed
    for the earliest such end and left unscheduled when no queue is full,
    so an idle gateway sleeps.                                              */
static lws_sorted_usec_list_t s_tick;
static nx_gw_t *s_tick_gw; /* the sul callback gets no user pointer */

/*  ---- Request details ---------------------------------------------------- */

static bool s_urlarg(struct lws *wsi, const char *name, char *out, int size)
{
    char buf[1024];
    char key[64];
    snprintf(key, sizeof key, "%s=", name);
    const char *v = lws_get_urlarg_by_name(wsi, key, buf, sizeof buf);
    if (!v)
        return false;
    snprintf(out, (size_t)size, "%s", v);
    return true;
}

/*  Whether argument name is there and longer than size - 1 bytes (what
    s_urlarg would cut).                                                   */
static bool s_urlarg_long(struct lws *wsi, const char *name, int size)
{
    char key[64];
    snprintf(key, sizeof key, "%s=", name);
    size_t klen = strlen(key);
    for (int frag = 0; frag < 64; frag++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, frag);
        if (len <= 0)
            break;
        char arg[4200]; /* lws keeps at most 4096 bytes of headers     */
        if (lws_hdr_copy_fragment(wsi, arg, sizeof arg, WSI_TOKEN_HTTP_URI_ARGS, frag) < 0)
            continue;
        if ((size_t)len > klen && strncmp(arg, key, klen) == 0)
            return len - (int)klen > size - 1;
    }
    return false;
}

/*  The token from ?token= or Authorization: Bearer, "" when none.          */
static void s_token(struct lws *wsi, char *out, int size)
{
    out[0] = 0;
    if (s_urlarg(wsi, "token", out, size))
        return;
    char auth[300];
    if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 7 &&
        strncasecmp(auth, "Bearer ", 7) == 0)
        snprintf(out, (size_t)size, "%.255s", auth + 7);
}

/*  Same origin unless allowed_origins says otherwise, for WebSocket
    upgrades and API requests. Non-browser clients send no Origin and are
    let through.                                                            */
/*  True when name (of len bytes) is in the comma-separated list, as a
    host name or as the host of an origin ("http://name:port"); '*' is
    any.                                                                   */
static bool s_host_listed(const char *list, const char *name, size_t len)
{
    bool ok = false;
    char *copy = list && *list ? strdup(list) : NULL, *save = NULL;
    for (char *h = copy ? strtok_r(copy, ", ", &save) : NULL; h && !ok;
         h = strtok_r(NULL, ", ", &save)) {
        char *scheme = strstr(h, "://");
        if (scheme)
            h = scheme + 3;
        size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/");
        ok = strcmp(h, "*") == 0 || (n == len && strncasecmp(h, name, len) == 0);
    }
    free(copy);
    return ok;
}

/*  A browser page of another site can get its name to resolve to this
    gateway's address (DNS rebinding) and then talk to it as its own
    origin: Origin and Host agree, both the attacker's name. So the Host
    header must name the gateway: an IP address, localhost, or a name in
    allowed_hosts or allowed_origins. Requests without Host (HTTP/1.0
    tools) are not from a browser page. Only an open gateway (no tokens)
    checks. *name gets the name refused.                                   */
static bool s_host_ok(nx_gw_t *gw, struct lws *wsi, char *name, size_t size)
{
    char host[256];
    /*  With tokens, a rebound page has none to present: nothing to guard. */
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    if (nx_auth_enabled(gw->auth) || total <= 0)
        return true;
    /*  One longer than any name we answer to is refused, never taken for
        "no Host" (a 253-byte DNS name and a port do not fit the buffer). */
    if (total >= (int)sizeof host || lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0) {
        snprintf(name, size, "(%d bytes)", total);
        return false;
    }
    char *h = host;
    size_t len;
    if (*h == '[') { /* [IPv6] or [IPv6]:port, nothing else after ']'      */
        len = strcspn(h, "]");
        if (h[len] != ']')
            len = 0;
        else {
            len++;
            const char *port = h + len;
            if (*port && (*port != ':' || !port[1] ||
                          strspn(port + 1, "0123456789") != strlen(port + 1)))
                len = 0;
        }
    } else {
        len = strcspn(h, ":");
        if (h[len] == ':' && (!h[len + 1] || strspn(h + len + 1, "0123456789") != strlen(h + len + 1)))
            len = 0; /* a second colon, or a port that is not a number */
    }
    if (len && h[len - 1] == '.' && *h != '[')
        len--; /* "localhost." is localhost */
    snprintf(name, size, "%.*s", (int)len, h);
    if (!len)
        return false;
    unsigned char addr[16];
    char literal[64];
    snprintf(literal, sizeof literal, "%.*s", (int)(*h == '[' ? len - 2 : len), *h == '[' ? h + 1 : h);
    if ((*h == '[' ? inet_pton(AF_INET6, literal, addr) : inet_pton(AF_INET, literal, addr)) == 1)
        return true;
    const char *lh = ".localhost";
    if ((len == 9 && strncasecmp(h, "localhost", 9) == 0) ||
        (len > 10 && strncasecmp(h + len - 10, lh, 10) == 0))
        return true; /* browsers resolve these to loopback themselves */
    return s_host_listed(gw->cfg.allowed_hosts, h, len) ||
           s_host_listed(gw->cfg.allowed_origins, h, len);
}

/*  The message of a 403 forbidden_host (a static buffer: lws thread only). */
static const char *s_host_refusal(const char *name)
{
    static char text[400];
    snprintf(text, sizeof text,
             "the Host '%s' is not a name of this gateway (a guard against DNS rebinding): "
             "use its IP address or localhost, or add the name to allowed_hosts",
             name);
    return text;
}

static bool s_origin_ok(nx_gw_t *gw, struct lws *wsi)
{
    char origin[256], host[256];
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (total <= 0)
        return true; /* no Origin: not a browser page */
    /*  Too long to compare is refused: taken for "no Origin" it let a page
        of a long-named site in.                                           */
    if (total >= (int)sizeof origin || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0)
        return false;
    const char *list = gw->cfg.allowed_origins;
    if (list && *list) {
        char *copy = strdup(list), *save = NULL;
        bool ok = false;
        for (char *o = strtok_r(copy, ", ", &save); o && !ok; o = strtok_r(NULL, ", ", &save))
            ok = strcmp(o, "*") == 0 || strcmp(o, origin) == 0;
        free(copy);
        return ok;
    }
    if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0)
        return false;
    /*  Same origin: a web page's (http or https) on the very host asked.  */
    const char *o = strstr(origin, "://");
    bool web = (o == origin + 4 && strncmp(origin, "http", 4) == 0) ||
               (o == origin + 5 && strncmp(origin, "https", 5) == 0);
    return web && strcmp(o + 3, host) == 0;
}

/*  True when the request's Content-Type is application/json, parameters
    (charset) allowed.                                                      */
static bool s_json_body(struct lws *wsi)
{
    char type[128];
    if (lws_hdr_copy(wsi, type, sizeof type, WSI_TOKEN_HTTP_CONTENT_TYPE) <= 0)
        return false;
    const char *t = type;
    while (*t == ' ' || *t == '\t')
        t++;
    if (strncasecmp(t, "application/json", 16) != 0)
        return false;
    t += 16;
    return *t == 0 || *t == ';' || *t == ' ' || *t == '\t';
}

static const char *s_mime(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js"))
        return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css"))
        return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg"))
        return "image/svg+xml";
    if (!strcmp(dot, ".png"))
        return "image/png";
    if (!strcmp(dot, ".ico"))
        return "image/x-icon";
    if (!strcmp(dot, ".json"))
        return "application/json";
    return "application/octet-stream";
}

static bool s_is_api(const char *path)
{
    static const char *const prefixes[] = {"/health",  "/capabilities", "/state",  "/dependencies",
                                           "/message", "/sessions",     "/events", "/work",
                                           "/metrics", "/mcp"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(path, prefixes[i], n) == 0 && (path[n] == 0 || path[n] == '/'))
            return true;
    }
    return false;
}

/*  Answers an HTTP request from the lws thread (errors found before the
    worker is involved).                                                    */
static void s_http_now(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss, int status, const char *code,
                       const char *message, const char *allow)
{
    char body[512];
    snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, message);
    pss->answered = true;
    /*  Without a length the rest of the body cannot be told from the next
        request on the connection: answer, then close.                     */
    pss->close_after = status == 411;
    pthread_mutex_lock(&gw->lock);
    pss->conn->allow = allow;
    nx_gw_conn_answer(gw, pss->conn, status, "application/json", strdup(body));
    pthread_mutex_unlock(&gw->lock);
    lws_callback_on_writable(wsi);
}

/*  Answers an HTTP request from the lws thread with an HTML page.         */
static void s_http_page(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss, int status, const char *html)
{
    pss->answered = true;
    pss->close_after = false;
    pthread_mutex_lock(&gw->lock);
    pss->conn->allow = NULL;
    nx_gw_conn_answer(gw, pss->conn, status, "text/html; charset=utf-8", strdup(html));
    pthread_mutex_unlock(&gw->lock);
    lws_callback_on_writable(wsi);
}

/*  The HTTP request a connection carries is kept on its wsi (lws's opaque
    user data), not only in the pss: lws 4.1 gives each keep-alive request,
    and an upgrade, a new pss without telling us, so a record kept in the
    old pss alone was never released (every keep-alive request left its
    answer in gw->conns until the gateway stopped).                        */
static void s_http_release(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss)
{
    nx_gw_conn_t *conn = lws_get_opaque_user_data(wsi);
    if (pss && pss->conn == conn)
        pss->conn = NULL;
    if (!conn)
        return;
    lws_set_opaque_user_data(wsi, NULL);
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_closed(gw, conn);
    pthread_mutex_unlock(&gw->lock);
}

/*  ---- HTTP ---------------------------------------------------------------- */

/*  The request's Content-Length: -1 when absent or not a number.          */
static long long s_content_length(struct lws *wsi)
{
    char v[32];
    if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return -1;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    return end && end != v && *end == 0 && n >= 0 && errno != ERANGE ? n : -1;
}

/*  Queues the request for the worker, once.                                */
static void s_http_dispatch(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss)
{
    if (pss->dispatched || pss->answered || !pss->conn)
        return;
    pss->dispatched = true;
    nx_gw_cmd_t cmd = {.kind = NX_GW_CMD_HTTP, .conn = pss->conn->id};
    if (nx_gw_command(gw, &cmd))
        s_http_now(gw, wsi, pss, 503, "busy", "gateway busy, try again", NULL);
}

/*  A request is answered here (errors, static files) or by the worker. The
    worker gets it only once its body is read (LWS_CALLBACK_HTTP_BODY_
    COMPLETION): until then the lws thread writes conn->body without the
    lock. Methods the API does not take (PUT, PATCH, DELETE...) never reach
    the worker; their body is read and dropped, so that the connection can
    carry the next request.                                                 */
static int s_http(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss, const char *uri)
{
    /*  The connection's previous request, if any, is done.                 */
    s_http_release(gw, wsi, pss);
    pss->phase = 0;
    pss->answered = false;
    pss->close_after = false;
    pss->dispatched = false;
    pss->conn = nx_gw_conn_new(gw, NX_GW_HTTP, wsi);
    if (!pss->conn)
        return -1;
    lws_set_opaque_user_data(wsi, pss->conn);
    __atomic_add_fetch(&gw->stats.http_requests, 1, __ATOMIC_RELAXED);
    nx_gw_conn_t *conn = pss->conn;
    conn->method = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI)    ? NX_GW_GET
                   : lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) ? NX_GW_POST
                                                                   : NX_GW_OTHER;
    snprintf(conn->path, sizeof conn->path, "%s", uri ? uri : "/");
    lws_get_peer_simple(wsi, conn->peer, sizeof conn->peer);
    if (lws_hdr_custom_copy(wsi, conn->mcp_in, sizeof conn->mcp_in, "mcp-session-id:", 15) < 0)
        conn->mcp_in[0] = 0;
    /*  Longer than any revision: cut, then refused as unknown.           */
    if (lws_hdr_custom_copy(wsi, conn->mcp_version, sizeof conn->mcp_version,
                            "mcp-protocol-version:", 21) < 0)
        snprintf(conn->mcp_version, sizeof conn->mcp_version, "%s",
                 lws_hdr_custom_length(wsi, "mcp-protocol-version:", 21) > 0 ? "(too long)" : "");
    /*  lws sends LWS_CALLBACK_HTTP_BODY_COMPLETION after a body of this
        length (for any method).                                            */
    pss->body_pending = s_content_length(wsi) > 0;
    pss->completed = pss->dispatch_due = false;
    pss->again = 0;
    /*  lws keeps each name=value as a fragment of the header, already
        URL-decoded: they are kept as they are, one after the other, each
        ending with a NUL. Joined again, a decoded '&' or '%' would be read
        as syntax ("r%26d" split in two, "c%2B%2B" decoded twice).          */
    size_t qlen = 0;
    int frag = 0;
    for (; frag < 64; frag++) {
        int room = (int)(sizeof conn->query - qlen - 1); /* the final NUL */
        int n = room > 1 ? lws_hdr_copy_fragment(wsi, conn->query + qlen, room,
                                                 WSI_TOKEN_HTTP_URI_ARGS, frag)
                         : -1;
        if (n < 0)
            break; /* no more, or no room */
        if (n > 0)
            qlen += (size_t)n + 1;
    }
    conn->query[qlen] = 0;
    /*  Arguments left out for want of room would be acted on as if never
        given (a list of capabilities dropped whole): refused instead.    */
    if (frag < 64 && lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, frag) > 0) {
        s_http_now(gw, wsi, pss, 414, "too_large",
                   "the query's arguments are over 1023 bytes (decoded): send less, or the "
                   "data in the body",
                   NULL);
        return 0;
    }
    /*  /health stays open to probes by any name, as it does without a
        token: it tells nothing a page could use.                          */
    char refused[256];
    if (strcmp(conn->path, "/health") != 0 && !s_host_ok(gw, wsi, refused, sizeof refused)) {
        s_http_now(gw, wsi, pss, 403, "forbidden_host", s_host_refusal(refused), NULL);
        return 0;
    }
    if (!s_is_api(conn->path)) {
        if (conn->method != NX_GW_GET) {
            s_http_now(gw, wsi, pss, 405, "method_not_allowed", "static files are GET only", "GET");
            return 0;
        }
        /*  Without dashboard files, / says so plainly (the API works):
            left out by choice (web_root none), it says that, not that the
            files were not found.                                          */
        if (!gw->web_root[0] && strcmp(conn->path, "/") == 0) {
            bool by_choice = gw->cfg.web_root && strcmp(gw->cfg.web_root, "none") == 0;
            const char *why =
                by_choice ? "serves no dashboard, by choice (it was started with <code>web_root "
                            "none</code>)"
                          : "did not find its dashboard files (gateway/web: index.html and the "
                            "rest), so it serves no page";
            const char *fix = by_choice ? ""
                                        : " Start it with <code>--web-root DIR</code> (the "
                                          "source tree's gateway/web, or the installed "
                                          "share/nexus/web) to get the dashboard.";
            char page[1024];
            snprintf(page, sizeof page,
                     "<!doctype html><meta charset=utf-8><title>nexus-gateway: no "
                     "dashboard</title><h1>No dashboard here</h1><p>This nexus-gateway %s. Its "
                     "API (<a href=/health>/health</a>, /events, /sessions/active, ...) and "
                     "WebSockets (/ws/session/{id}, /ws/events) work as usual.%s</p>\n",
                     why, fix);
            s_http_page(gw, wsi, pss, 404, page);
            return 0;
        }
        /*  The dashboard's files; lws has already removed ".." segments.  */
        char file[4096 + 600];
        const char *rel = strcmp(conn->path, "/") == 0 ? "/index.html" : conn->path;
        struct stat st;
        snprintf(file, sizeof file, "%s%s", gw->web_root, rel);
        if (!gw->web_root[0] || strstr(rel, "..") || stat(file, &st) != 0 || !S_ISREG(st.st_mode)) {
            s_http_now(gw, wsi, pss, 404, "not_found", "no such endpoint or file", NULL);
            return 0;
        }
        pss->phase = 2;
        int n = lws_serve_http_file(wsi, file, s_mime(file), NULL, 0);
        if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
            return -1;
        return 0;
    }
    /*  A browser says where a request comes from: a page of another
        origin must not use the API with the user's network position (the
        gateway listens on loopback) or cookies. Requests without Origin
        (curl, SDKs) are not from a browser page.                          */
    if (!s_origin_ok(gw, wsi)) {
        s_http_now(gw, wsi, pss, 403, "forbidden_origin",
                   "requests from this Origin are not allowed (see allowed_origins)", NULL);
        return 0;
    }
    if (conn->method == NX_GW_OTHER) {
        const char *allow = nx_gw_http_allow(conn->path);
        if (allow)
            s_http_now(gw, wsi, pss, 405, "method_not_allowed", "method not allowed on this path",
                       allow);
        else
            s_http_now(gw, wsi, pss, 404, "not_found", "no such endpoint", NULL);
        return 0;
    }
    if (nx_auth_enabled(gw->auth) && strcmp(conn->path, "/health") != 0) {
        char token[256];
        const void *handle;
        s_token(wsi, token, sizeof token);
        if (nx_auth_check(gw->auth, token[0] ? token : NULL, strlen(token), &handle)) {
            __atomic_add_fetch(&gw->stats.auth_refused, 1, __ATOMIC_RELAXED);
            s_http_now(gw, wsi, pss, 401, "unauthorized",
                       token[0] ? "wrong token" : "this gateway requires a token", NULL);
            return 0;
        }
        /*  The worker checks every session the request acts as against it
            (the command queue's lock orders this write before its read).  */
        conn->auth = handle;
    }
    if (conn->method == NX_GW_POST) {
        long long length = s_content_length(wsi);
        /*  lws sends LWS_CALLBACK_HTTP_BODY_COMPLETION for an explicit
            Content-Length: 0 too.                                          */
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
            s_http_now(gw, wsi, pss, 411, "length_required", "POST needs a Content-Length", NULL);
        /*  Where such a body ends cannot be known: it used to be waited
            for until lws's timeout. Answer now, then close. (A body over
            max_body with a good length is read and dropped, then 413: a
            client still sending it would see a reset, not the answer.)    */
        else if (length < 0) {
            s_http_now(gw, wsi, pss, 400, "bad_request",
                       "Content-Length must be a non-negative decimal number", NULL);
            pss->close_after = true;
        }
        /*  Forms and text/plain are what a page of any origin may send
            without a CORS preflight: only JSON is taken.                  */
        else if (!s_json_body(wsi))
            s_http_now(gw, wsi, pss, 415, "unsupported_media_type",
                       "the body must be sent as Content-Type: application/json", NULL);
        return 0;
    }
    /*  A GET with a body runs once the body is read (and dropped).         */
    if (!pss->body_pending)
        s_http_dispatch(gw, wsi, pss);
    return 0;
}

static void s_http_body(nx_gw_t *gw, s_pss_t *pss, const void *in, size_t len)
{
    nx_gw_conn_t *conn = pss->conn;
    /*  Only a POST's body is used; others are read and dropped.           */
    if (!conn || conn->body_too_large || conn->method != NX_GW_POST)
        return;
    if (conn->body_len + len > gw->cfg.max_body) {
        conn->body_too_large = true;
        free(conn->body);
        conn->body = NULL;
        conn->body_len = 0;
        return;
    }
    char *grown = realloc(conn->body, conn->body_len + len + 1);
    if (!grown) {
        conn->body_too_large = true;
        return;
    }
    if (len)
        memcpy(grown + conn->body_len, in, len); /* lws may pass NULL, 0 */
    conn->body = grown;
    conn->body_len += len;
    conn->body[conn->body_len] = 0;
}

static int s_http_write(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss)
{
    if (pss->dispatch_due) { /* its body is complete (BODY_COMPLETION) */
        pss->dispatch_due = false;
        s_http_dispatch(gw, wsi, pss);
        return 0;
    }
    nx_gw_conn_t *conn = pss->conn;
    /*  An answer given before the body is read waits for the body's end:
        the connection then reads the next request, not the body's rest.   */
    if (!conn || pss->phase == 2 || (pss->body_pending && !pss->close_after))
        return 0;
    /*  The headers need the length only; the body is taken over once they
        are out (its bytes stay charged to http_bytes until the record
        goes: lws may hold what a slow reader has not taken). A copy per
        phase tripled a 12 MB history page.                                */
    pthread_mutex_lock(&gw->lock);
    int status = conn->status;
    size_t blen = status ? conn->response_charged : 0;
    char *body = NULL;
    if (status && pss->phase == 1) {
        body = conn->response;
        conn->response = NULL;
    }
    const char *type = conn->content_type;
    const char *allow = conn->allow;
    char mcp[40];
    snprintf(mcp, sizeof mcp, "%s", conn->mcp_out);
    if (status && pss->phase == 1)
        conn->status = 0; /* answered: later kicks leave it alone */
    pthread_mutex_unlock(&gw->lock);
    if (!status)
        return 0; /* the worker has not answered yet */
    if (pss->phase == 0) {
        unsigned char buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start,
                                           *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, (unsigned int)status, type, blen, &p, end) ||
            lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                        (const unsigned char *)"no-store", 8, &p, end) ||
            (pss->close_after &&
             lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close",
                                          5, &p, end)) ||
            (allow && lws_add_http_header_by_name(
                          wsi, (const unsigned char *)"allow:", (const unsigned char *)allow,
                          (int)strlen(allow), &p, end)) ||
            (mcp[0] &&
             lws_add_http_header_by_name(wsi, (const unsigned char *)"mcp-session-id:",
                                         (const unsigned char *)mcp, (int)strlen(mcp), &p, end)) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        pss->phase = 1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (!body)
        blen = 0; /* (taken already: never, phase 1 runs once) */
    unsigned char *out = malloc(LWS_PRE + blen + 1);
    if (!out) {
        free(body);
        return -1;
    }
    memcpy(out + LWS_PRE, body ? body : "", blen);
    int n = lws_write(wsi, out + LWS_PRE, blen, LWS_WRITE_HTTP_FINAL);
    free(out);
    free(body);
    pss->phase = 2;
    if (n < 0 || pss->close_after || lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

/*  ---- WebSocket ---------------------------------------------------------- */

/*  Refuses a WebSocket upgrade with an HTTP status and the JSON error body
    every HTTP refusal has, then closes (returns 1 for the filter
    callback). Written here, as lws_return_http_status does: the upgrade
    request is not served by the HTTP callbacks. The status line is ours
    too: lws has not taken the request's HTTP version yet at this stage
    and writes "HTTP/1.0", which WebSocket clients (Python's websockets)
    refuse as an unsupported version instead of showing the status and
    its reason.                                                            */
static int s_refuse_version(struct lws *wsi, unsigned int status, const char *code, const char *why,
                            bool version)
{
    char body[256];
    int blen =
        snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, why);
    const char *phrase = status == 400   ? "Bad Request"
                         : status == 401 ? "Unauthorized"
                         : status == 403 ? "Forbidden"
                         : status == 404 ? "Not Found"
                         : status == 426 ? "Upgrade Required"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    unsigned char buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start,
                                       *end = buf + sizeof buf - 1;
    p += snprintf((char *)p, (size_t)(end - p), "HTTP/1.1 %u %s\r\n", status, phrase);
    if (blen < 0 || (size_t)blen >= sizeof body ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                     (const unsigned char *)"application/json", 16, &p, end) ||
        lws_add_http_header_content_length(wsi, (lws_filepos_t)blen, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
                                     &p, end) ||
        (version &&
         lws_add_http_header_by_name(wsi, (const unsigned char *)"Sec-WebSocket-Version:",
                                     (const unsigned char *)"13", 2, &p, end)) ||
        lws_finalize_http_header(wsi, &p, end) || end - p < blen)
        return 1;
    memcpy(p, body, (size_t)blen);
    p += blen;
    lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP);
    return 1;
}

static int s_refuse(struct lws *wsi, unsigned int status, const char *code, const char *why)
{
    return s_refuse_version(wsi, status, code, why, false);
}

/*  True when v is 1..digits decimal digits and nothing else.              */
static bool s_decimal(const char *v, size_t digits)
{
    size_t n = strspn(v, "0123456789");
    return n > 0 && n <= digits && v[n] == 0;
}

static int s_ws_filter(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss)
{
    /*  An upgrade on a keep-alive connection that already carried an HTTP
        request is refused: lws 4.1 keeps that request's state (its answer,
        megabytes for a history page) and a run of such upgrades after
        large answers left its service thread spinning on a closed socket,
        every client held up. Browsers and WebSocket clients open a
        connection of their own for an upgrade.                           */
    if (lws_get_opaque_user_data(wsi)) {
        s_http_release(gw, wsi, pss);
        nx_info("websocket refused: an upgrade on a connection that carried an HTTP request");
        return s_refuse(wsi, 400, "bad_request",
                        "a WebSocket upgrade needs a connection of its own (this one carried an "
                        "HTTP request)");
    }
    /*  RFC 6455 4.2.2: a version the server does not speak is refused with
        426 and the version it does speak (libwebsockets 4.1 upgrades any). */
    char version[16];
    if (lws_hdr_copy(wsi, version, sizeof version, WSI_TOKEN_VERSION) <= 0 ||
        strcmp(version, "13") != 0) {
        nx_info("websocket refused: Sec-WebSocket-Version is not 13");
        return s_refuse_version(wsi, 426, "bad_request",
                                "this server speaks WebSocket version 13 (RFC 6455) only", true);
    }
    char uri[512];
    int ulen = lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    /*  /ws/events (seed 003): a watcher that acts as no session and gets
        every event it may see, without subscribing.                        */
    bool watcher = ulen > 0 && strcmp(uri, "/ws/events") == 0;
    if (ulen <= 0 || (!watcher && strncmp(uri, "/ws/session/", 12) != 0)) {
        nx_info("websocket refused: path must be /ws/session/{id} or /ws/events");
        return s_refuse(wsi, 404, "not_found",
                        "WebSocket paths are /ws/session/{session_id} and /ws/events");
    }
    const char *id = watcher ? "" : uri + 12;
    if (!watcher && !nx_session_id_valid(id, strlen(id))) {
        nx_info("websocket refused: bad session id");
        return s_refuse(wsi, 400, "bad_request", "the session id must be 1..64 of [A-Za-z0-9_:@-]");
    }
    /*  What the log names: a watcher has no session (it read "session :"). */
    char who[80];
    if (watcher)
        snprintf(who, sizeof who, "the watcher /ws/events");
    else
        snprintf(who, sizeof who, "session %s", id);
    char refused[256];
    if (!s_host_ok(gw, wsi, refused, sizeof refused)) {
        nx_info("websocket refused for %s: Host '%s' is not one of the gateway's", who, refused);
        return s_refuse(wsi, 403, "forbidden_host", s_host_refusal(refused));
    }
    if (!s_origin_ok(gw, wsi)) {
        nx_info("websocket refused for %s: origin not allowed", who);
        return s_refuse(wsi, 403, "forbidden_origin", "origin not allowed");
    }
    if (__atomic_load_n(&gw->stats.ws_open, __ATOMIC_RELAXED) >= gw->cfg.max_clients) {
        nx_warn("websocket refused for %s: max_clients (%" PRIu64 ") reached", who,
                gw->cfg.max_clients);
        return s_refuse(wsi, 503, "busy", "too many connections");
    }
    char token[256];
    s_token(wsi, token, sizeof token);
    pss->auth = NULL;
    if (nx_auth_check(gw->auth, token[0] ? token : NULL, strlen(token), &pss->auth)) {
        __atomic_add_fetch(&gw->stats.auth_refused, 1, __ATOMIC_RELAXED);
        nx_info("websocket refused for %s: %s", who, token[0] ? "no such token" : "no token");
        return s_refuse(wsi, 401, "unauthorized", token[0] ? "token not valid" : "token required");
    }
    /*  A valid token that names other sessions: who the client is is
        known, what it asks is not allowed (403, as HTTP answers it).     */
    if (!watcher && !nx_auth_allows(gw->auth, pss->auth, id, strlen(id))) {
        __atomic_add_fetch(&gw->stats.auth_refused, 1, __ATOMIC_RELAXED);
        nx_info("websocket refused for %s: its token may not act as it", who);
        return s_refuse(wsi, 403, "forbidden", "this token may not act as this session");
    }
    snprintf(pss->session, sizeof pss->session, "%s", id);
    /*  A since that is not a seq used to read as 0, a replay of the whole
        history; a bad recent, as the default. Both are refused instead.   */
    char v[64];
    pss->has_since = s_urlarg(wsi, "since", v, sizeof v);
    /*  Up to 2^63 - 1, as every seq in JSON (above it, it came back as a
        negative cursor_seq).                                              */
    errno = 0;
    pss->since = pss->has_since && s_decimal(v, 20) ? strtoull(v, NULL, 10) : 0;
    if (pss->has_since && (!s_decimal(v, 20) || errno == ERANGE || pss->since > INT64_MAX))
        return s_refuse(wsi, 400, "bad_request",
                        "since must be an event seq (a decimal number, at most "
                        "9223372036854775807)");
    /*  The store the since belongs to (the welcome's store_id).          */
    pss->store[0] = 0;
    if (s_urlarg(wsi, "store", pss->store, sizeof pss->store) &&
        (!pss->store[0] || strspn(pss->store, "0123456789abcdef") != strlen(pss->store)))
        return s_refuse(wsi, 400, "bad_request",
                        "store must be a store id (the welcome's store_id: lowercase hex)");
    /*  A resume (since) replays what comes after since: recent events in
        its welcome would be had already (up to since) or sent again by the
        replay. None, unless asked for.                                    */
    pss->recent = pss->has_since ? 0 : (int)gw->cfg.welcome_events;
    if (s_urlarg(wsi, "recent", v, sizeof v)) {
        if (!s_decimal(v, 4) || atoi(v) > 1000)
            return s_refuse(wsi, 400, "bad_request", "recent must be a number 0..1000");
        pss->recent = atoi(v);
    }
    /*  Cut, a name or a list of capabilities would be stored wrong (a
        capability cut in the middle) with no word: refused.               */
    if (s_urlarg_long(wsi, "name", (int)sizeof pss->name))
        return s_refuse(wsi, 400, "bad_request", "name is over 127 bytes");
    if (s_urlarg_long(wsi, "capabilities", (int)sizeof pss->caps))
        return s_refuse(wsi, 400, "bad_request",
                        "capabilities is over 511 bytes (a comma-separated list)");
    if (!s_urlarg(wsi, "name", pss->name, sizeof pss->name))
        pss->name[0] = 0;
    if (!s_urlarg(wsi, "capabilities", pss->caps, sizeof pss->caps))
        pss->caps[0] = 0;
    /*  Not UTF-8 (%ff%fe), they could not be put in JSON: the broker's
        record lost them in silence (name null, a capability gone).       */
    if (!nx_utf8_valid(pss->name, strlen(pss->name)))
        return s_refuse(wsi, 400, "bad_request", "name is not UTF-8 (decoded)");
    if (!nx_utf8_valid(pss->caps, strlen(pss->caps)))
        return s_refuse(wsi, 400, "bad_request", "capabilities is not UTF-8 (decoded)");
    return 0;
}

static int s_ws_established(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss)
{
    pss->conn = nx_gw_conn_new(gw, NX_GW_WS, wsi);
    if (!pss->conn)
        return -1;
    pthread_mutex_lock(&gw->lock);
    snprintf(pss->conn->session, sizeof pss->conn->session, "%s", pss->session);
    pss->conn->auth = pss->auth;
    /*  A watcher (/ws/events, no session) is subscribed to everything.    */
    if (!pss->session[0] && (pss->conn->patterns[0] = strdup(">")))
        pss->conn->n_patterns = 1;
    pthread_mutex_unlock(&gw->lock);
    __atomic_add_fetch(&gw->stats.ws_open, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&gw->stats.ws_total, 1, __ATOMIC_RELAXED);
    char text[700];
    snprintf(text, sizeof text, "%s\n%s", pss->name, pss->caps);
    nx_gw_cmd_t cmd = {.kind = NX_GW_CMD_OPEN,
                       .conn = pss->conn->id,
                       .text = strdup(text),
                       .since = pss->since,
                       .has_since = pss->has_since,
                       .recent = pss->recent};
    snprintf(cmd.store, sizeof cmd.store, "%s", pss->store);
    snprintf(cmd.session, sizeof cmd.session, "%s", pss->session);
    if (nx_gw_command(gw, &cmd)) {
        free(cmd.text);
        lws_close_reason(wsi, (enum lws_close_status)1013, (unsigned char *)"busy", 4);
        return -1;
    }
    pthread_mutex_lock(&gw->lock);
    pss->conn->opened = true;
    pthread_mutex_unlock(&gw->lock);
    nx_debug("websocket %" PRIu64 " open for session %s", pss->conn->id, pss->session);
    nx_gw_rfc6455_watch(lws_get_socket_fd(wsi), wsi);
    return 0;
}

/*  RFC 6455 5.1: a client frame without its mask closes the connection
    with 1002 (nx_gw_rfc6455.c). Returns true when wsi is to be closed.
    Both the receive and the writable callback ask, and both may come
    before the close: the log says it once per connection.                 */
static bool s_ws_unmasked(struct lws *wsi, s_pss_t *pss)
{
    if (!nx_gw_rfc6455_unmasked(lws_get_socket_fd(wsi)))
        return false;
    if (!pss->unmasked_said)
        nx_info("websocket closed: the client sent a frame without its mask (RFC 6455 5.1)");
    pss->unmasked_said = true;
    lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, (unsigned char *)"frame not masked", 16);
    return true;
}

/*  Answers an error to a WebSocket client from the lws thread.            */
static void s_ws_error(nx_gw_t *gw, nx_gw_conn_t *conn, const char *text, const char *code,
                       const char *message)
{
    json_t *msg = json_loads(text, 0, NULL);
    json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    json_t *action = json_is_object(msg) ? json_object_get(msg, "action") : NULL;
    json_t *r = json_pack("{s:s, s:b, s:{s:s, s:s}}", "type", "reply", "ok", 0, "error", "code",
                          code, "message", message);
    if ((json_is_string(id) && json_string_length(id) <= NX_GW_ID_MAX) || json_is_integer(id))
        json_object_set(r, "id", id);
    if (json_is_string(action) && json_string_length(action) <= NX_GW_ID_MAX)
        json_object_set(r, "action", action);
    char *out = nx_json_dumps(r, JSON_COMPACT);
    pthread_mutex_lock(&gw->lock);
    if (out)
        nx_gw_conn_push_text(gw, conn, out);
    pthread_mutex_unlock(&gw->lock);
    free(out);
    json_decref(r);
    json_decref(msg);
    __atomic_add_fetch(&gw->stats.errors, 1, __ATOMIC_RELAXED);
}

/*  Takes a token from conn's session bucket; without one, answers
    rate_limited for the message (text, for its id) and returns false.
    Every message takes one, the refused ones too: a flood of messages the
    gateway refuses costs it work all the same.                            */
static bool s_ws_rate_ok(nx_gw_t *gw, nx_gw_conn_t *conn, const char *text)
{
    pthread_mutex_lock(&gw->lock);
    bool rate_ok = nx_gw_conn_rate_ok(gw, conn);
    pthread_mutex_unlock(&gw->lock);
    if (!rate_ok) {
        __atomic_add_fetch(&gw->stats.rate_limited, 1, __ATOMIC_RELAXED);
        s_ws_error(gw, conn, text, "rate_limited", "too many requests; slow down");
    }
    return rate_ok;
}

static int s_ws_receive(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss, const void *in, size_t len)
{
    nx_gw_conn_t *conn = pss->conn;
    if (!conn || s_ws_unmasked(wsi, pss))
        return -1;
    /*  The protocol is JSON text; a binary message is dropped as it comes
        (nothing of it is kept) and answered once it ends.                 */
    if (lws_frame_is_binary(wsi))
        conn->rx_binary = true;
    if (conn->rx_binary) {
        if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
            return 0;
        conn->rx_binary = false;
        if (s_ws_rate_ok(gw, conn, ""))
            s_ws_error(gw, conn, "", "bad_request",
                       "binary frames are not taken: send each message as one JSON text frame");
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (conn->rx_len + len > gw->cfg.max_message) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message too large", 17);
        return -1;
    }
    char *grown = realloc(conn->rx, conn->rx_len + len + 1);
    if (!grown)
        return -1;
    memcpy(grown + conn->rx_len, in, len);
    conn->rx = grown;
    conn->rx_len += len;
    conn->rx[conn->rx_len] = 0;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return 0;
    char *text = conn->rx;
    size_t len_total = conn->rx_len;
    conn->rx = NULL;
    conn->rx_len = 0;
    if (!s_ws_rate_ok(gw, conn, text)) {
        free(text);
        lws_callback_on_writable(wsi);
        return 0;
    }
    /*  The worker reads the text up to its first NUL: what follows would
        be dropped unseen rather than refused.                             */
    const char *nul = memchr(text, 0, len_total);
    if (nul) {
        char message[80];
        snprintf(message, sizeof message, "not valid JSON: a NUL byte at offset %zu",
                 (size_t)(nul - text));
        s_ws_error(gw, conn, text, "bad_json", message); /* echoes an id before it */
        free(text);
        lws_callback_on_writable(wsi);
        return 0;
    }
    nx_gw_cmd_t cmd = {.kind = NX_GW_CMD_ACTION, .conn = conn->id, .text = text};
    if (nx_gw_command(gw, &cmd)) {
        s_ws_error(gw, conn, text, "busy", "gateway busy, try again");
        free(text);
        lws_callback_on_writable(wsi);
    }
    return 0;
}

#define S_BATCHES_PER_CALLBACK 16    /* sends per writeable callback          */
#define S_BATCH_MSGS           64    /* messages coalesced into one send        */
#define S_BATCH_BYTES          65536 /* payload bytes coalesced into one send   */
#define S_BATCH_SMALL          16384 /* larger messages go out on their own     */

/*  The coalescing buffer. Only the lws service thread writes, so one will
    do: room for S_BATCH_BYTES of payload and a 10-byte header per frame.  */
static unsigned char s_batch[LWS_PRE + S_BATCH_BYTES + S_BATCH_MSGS * 10];

/*  Appends one unmasked, final server frame (RFC 6455 5.2) to p.          */
static unsigned char *s_frame(unsigned char *p, int opcode, const void *data, size_t len)
{
    *p++ = (unsigned char)(0x80 | opcode);
    if (len < 126)
        *p++ = (unsigned char)len;
    else if (len < 65536) {
        *p++ = 126;
        *p++ = (unsigned char)(len >> 8);
        *p++ = (unsigned char)len;
    } else {
        *p++ = 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            *p++ = (unsigned char)((uint64_t)len >> shift);
    }
    memcpy(p, data, len);
    return p + len;
}

static int s_ws_write(nx_gw_t *gw, struct lws *wsi, s_pss_t *pss)
{
    nx_gw_conn_t *conn = pss->conn;
    if (!conn || s_ws_unmasked(wsi, pss))
        return -1;
    /*  Many small messages become one send: a fan-out of 100 k frames a
        second is otherwise 100 k syscalls from this one thread. The frames
        are built here, so they go to lws as raw bytes (LWS_WRITE_RAW, no
        extensions are negotiated); lws buffers what the socket does not
        take and reports the pipe choked until it is flushed.              */
    for (int b = 0; b < S_BATCHES_PER_CALLBACK; b++) {
        nx_gw_msg_t *msgs[S_BATCH_MSGS], *big = NULL;
        int n_msgs = 0;
        size_t bytes = 0;
        char gap[128] = "";
        pthread_mutex_lock(&gw->lock);
        if (conn->close_code) {
            int code = conn->close_code;
            char reason[80];
            snprintf(reason, sizeof reason, "%s", conn->close_reason);
            pthread_mutex_unlock(&gw->lock);
            lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason,
                             strlen(reason));
            return -1;
        }
        /*  Lost events are announced once the queue has room again.       */
        if (conn->lost_from && !conn->full_since) {
            snprintf(gap, sizeof gap, "{\"type\":\"gap\",\"from\":%" PRIu64 ",\"to\":%" PRIu64 "}",
                     conn->lost_from, conn->lost_to);
            conn->lost_from = conn->lost_to = 0;
            bytes = strlen(gap);
        }
        while (n_msgs < S_BATCH_MSGS && conn->q_count) {
            nx_gw_msg_t *next = conn->queue[conn->q_head];
            if (next->len > S_BATCH_SMALL) {
                if (n_msgs == 0 && !gap[0])
                    big = nx_gw_conn_pop(gw, conn); /* alone, without a copy */
                break;
            }
            if (bytes + next->len > S_BATCH_BYTES)
                break;
            msgs[n_msgs++] = nx_gw_conn_pop(gw, conn);
            bytes += next->len;
        }
        bool more = conn->q_count || conn->lost_from || conn->close_code;
        pthread_mutex_unlock(&gw->lock);
        int n;
        if (big) {
            n = lws_write(wsi, big->buf + LWS_PRE, big->len, LWS_WRITE_TEXT);
        } else if (n_msgs || gap[0]) {
            unsigned char *start = s_batch + LWS_PRE, *p = start;
            if (gap[0])
                p = s_frame(p, 0x1, gap, strlen(gap));
            for (int i = 0; i < n_msgs; i++)
                p = s_frame(p, 0x1, msgs[i]->buf + LWS_PRE, msgs[i]->len);
            n = lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_RAW);
        } else
            return 0; /* nothing left */
        pthread_mutex_lock(&gw->lock);
        nx_gw_msg_unref(&big);
        for (int i = 0; i < n_msgs; i++)
            nx_gw_msg_unref(&msgs[i]);
        pthread_mutex_unlock(&gw->lock);
        if (n < 0)
            return -1;
        /*  Emptied: no need to ask the socket (lws_send_pipe_choked is a
            poll() of its own); what is queued later comes with a kick.    */
        if (!more)
            return 0;
        if (lws_send_pipe_choked(wsi))
            break;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static void s_ws_closed(nx_gw_t *gw, s_pss_t *pss)
{
    if (!pss->conn)
        return;
    char session[NX_GW_SESSION_MAX + 1];
    pthread_mutex_lock(&gw->lock);
    snprintf(session, sizeof session, "%s", pss->conn->session);
    uint64_t id = pss->conn->id;
    /*  Only an OPEN the worker saw is balanced by a CLOSE; an evicted
        connection's session was released when it was evicted.            */
    bool release = pss->conn->opened && !pss->conn->evicted;
    nx_gw_conn_closed(gw, pss->conn);
    pthread_mutex_unlock(&gw->lock);
    pss->conn = NULL;
    __atomic_sub_fetch(&gw->stats.ws_open, 1, __ATOMIC_RELAXED);
    if (!release)
        return;
    nx_gw_cmd_t cmd = {.kind = NX_GW_CMD_CLOSE, .conn = id};
    snprintf(cmd.session, sizeof cmd.session, "%s", session);
    if (nx_gw_command(gw, &cmd))
        nx_warn("session %s: close not processed (command queue full)", session);
    nx_debug("websocket %" PRIu64 " closed (session %s)", id, session);
}

/*  Asks for writeable callbacks where something waits, or writes at once
    (below); closes clients whose queue stayed full for slow_timeout.       */
#define S_EVICT_MAX 64 /* evictions per kick; the rest wait for the next one  */

/*  WebSocket connections written to at once by this kick. A writeable
    callback costs a round of lws's poll() with POLLOUT on every such
    descriptor and a dispatch per connection; in a fan-out to 1000 clients
    that was ~3 % of the gateway's samples. A socket whose last write went out
    whole (lws holds nothing of it) is written directly; what it does not
    take lws keeps (one batch at most) and flushes in a writeable
    callback, as before. Service thread only.                             */
static struct lws **s_direct;
static size_t s_direct_cap;

static bool s_direct_add(size_t n, struct lws *wsi)
{
    if (n == s_direct_cap) {
        size_t cap = s_direct_cap ? s_direct_cap * 2 : 256;
        struct lws **grown = realloc(s_direct, cap * sizeof *grown);
        if (!grown)
            return false;
        s_direct = grown;
        s_direct_cap = cap;
    }
    s_direct[n] = wsi;
    return true;
}

static void s_tick_cb(lws_sorted_usec_list_t *sul);

static void s_kick(nx_gw_t *gw)
{
    uint64_t now;
    uint64_t slow_us = gw->cfg.slow_timeout * 1000;
    uint64_t due = 0;  /* earliest end of a full queue's slow_timeout, 0: none */
    bool more = false; /* evictions left for the next turn */
    /*  Commands take the lock, so evictions are posted after the loop
        (other threads iterate gw->conns too, with its shared cursor).     */
    nx_gw_cmd_t evicted[S_EVICT_MAX];
    int n_evicted = 0;
    size_t n_direct = 0;
    pthread_mutex_lock(&gw->lock);
    /*  Read under the lock: every full_since set before it is <= now.     */
    now = nx_gw_mono();
    for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns)) {
        if (c->closed || !c->wsi)
            continue;
        if (c->kind == NX_GW_HTTP) {
            if (c->status)
                lws_callback_on_writable(c->wsi);
            continue;
        }
        if (c->full_since && !c->close_code && now - c->full_since <= slow_us) {
            /*  Not yet: the timer comes back when it is.                  */
            uint64_t end = c->full_since + slow_us + 1;
            if (!due || end < due)
                due = end;
        } else if (c->full_since && !c->close_code && n_evicted == S_EVICT_MAX) {
            more = true;
        } else if (c->full_since && !c->close_code) {
            c->close_code = LWS_CLOSE_STATUS_POLICY_VIOLATION;
            snprintf(c->close_reason, sizeof c->close_reason, "send queue full");
            __atomic_add_fetch(&gw->stats.slow_closes, 1, __ATOMIC_RELAXED);
            nx_warn("closing session %s: it does not read (queue full for %" PRIu64 " ms)",
                    c->session, gw->cfg.slow_timeout);
            /*  The close frame goes out when the socket takes it; a client
                that never reads again is cut after another slow_timeout.   */
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                            (int)(gw->cfg.slow_timeout / 1000) + 30);
            /*  What it did not read will not be sent: the close frame goes
                first as soon as the socket has room.                       */
            while (c->q_count) {
                nx_gw_msg_t *m = nx_gw_conn_pop(gw, c);
                nx_gw_msg_unref(&m);
            }
            /*  It is off the fabric now (session.disconnected), whether or
                not it ever reads its close frame.                          */
            c->evicted = true;
            if (c->opened) {
                evicted[n_evicted] = (nx_gw_cmd_t){.kind = NX_GW_CMD_CLOSE, .conn = c->id};
                snprintf(evicted[n_evicted].session, sizeof evicted[n_evicted].session, "%s",
                         c->session);
                n_evicted++;
            } else
                c->evicted = false; /* released when it closes, then */
        }
        if (!c->q_count && !c->close_code && !c->lost_from)
            continue;
        /*  A close goes through lws's callback (lws_close_reason, then -1),
            as does a connection lws still holds bytes of.                  */
        s_pss_t *pss = lws_wsi_user(c->wsi);
        bool direct = !c->close_code && pss && pss->conn == c &&
                      !lws_partial_buffered(c->wsi) && s_direct_add(n_direct, c->wsi);
        if (direct)
            n_direct++;
        else
            lws_callback_on_writable(c->wsi);
    }
    pthread_mutex_unlock(&gw->lock);
    /*  Only this thread closes connections, so each wsi is still alive.   */
    for (size_t i = 0; i < n_direct; i++)
        if (s_ws_write(gw, s_direct[i], lws_wsi_user(s_direct[i])) < 0)
            lws_set_timeout(s_direct[i], PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    for (int i = 0; i < n_evicted; i++)
        if (nx_gw_command(gw, &evicted[i]))
            nx_warn("session %s: eviction not processed (command queue full)", evicted[i].session);
    /*  Armed only while a queue is full; each kick sets it again from what
        it saw, so it never fires for nothing.                             */
    if (more)
        lws_sul_schedule(gw->lws, 0, &s_tick, s_tick_cb, 1000);
    else if (due)
        lws_sul_schedule(gw->lws, 0, &s_tick, s_tick_cb, (lws_usec_t)(due - now));
    else
        lws_sul_cancel(&s_tick);
}

/*  A stop says goodbye: every open WebSocket gets a close frame (1001,
    going away) through its writable callback, as the other closes do,
    rather than a cut connection (1006). At most a second.                */
static lws_sorted_usec_list_t s_bye;

static void s_bye_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* only wakes lws_service, so that the loop below looks */
}

static void s_goodbye(nx_gw_t *gw)
{
    uint64_t until = nx_gw_mono() + 1000000;
    for (int round = 0; round < 1000 && nx_gw_mono() < until; round++) {
        size_t open = 0;
        pthread_mutex_lock(&gw->lock);
        for (nx_gw_conn_t *c = zhashx_first(gw->conns); c; c = zhashx_next(gw->conns)) {
            if (c->kind != NX_GW_WS || c->closed || !c->wsi)
                continue;
            if (!c->close_code) {
                c->close_code = LWS_CLOSE_STATUS_GOINGAWAY;
                snprintf(c->close_reason, sizeof c->close_reason, "the gateway is stopping");
                lws_callback_on_writable(c->wsi);
            }
            open++;
        }
        pthread_mutex_unlock(&gw->lock);
        if (!open)
            break;
        lws_sul_schedule(gw->lws, 0, &s_bye, s_bye_cb, 50000);
        s_service_pass++;
        if (lws_service(gw->lws, 0) < 0)
            break;
    }
    lws_sul_cancel(&s_bye);
}

static void s_tick_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    s_kick(s_tick_gw);
}

/*  Connections (HTTP and WebSocket) now, counted from the accept to the
    end of the lws connection. At s_conns_max the listening socket is no
    longer polled, so new clients wait in the kernel's backlog until one
    closes. lws would do this itself given fd_limit_per_thread, but a
    limit below ulimit -n puts it in a mode where it finds the connection
    of every ready descriptor by a linear scan of its table: 14 % of the
    gateway's CPU in a fan-out to 1000 clients, more with more clients.   */
static uint64_t s_conns, s_conns_max, s_full_logged_us;
static struct lws *s_paused; /* the listener while it is not polled */

static void s_conn_accepted(struct lws *listener)
{
    /*  The listening socket and lws's wake pipe take two of the share.    */
    if (++s_conns + 2 < s_conns_max)
        return;
    if (!s_paused) {
        s_paused = listener;
        lws_rx_flow_control(listener, 0);
    }
    uint64_t now = nx_gw_mono();
    if (s_full_logged_us && now - s_full_logged_us < S_ACCEPT_LOG_US)
        return;
    s_full_logged_us = now;
    nx_warn("connection limit reached: %" PRIu64 " connections (HTTP and WebSocket; max_clients + "
            "%d, or ulimit -n less %d): new connections wait in the listen backlog until one "
            "closes",
            s_conns, S_HTTP_EXTRA, S_FD_RESERVE);
}

static void s_conn_destroyed(nx_gw_t *gw, struct lws *wsi)
{
    if (wsi == s_paused) {
        s_paused = NULL; /* the listener itself, at the end */
        return;
    }
    if (s_conns > 0)
        s_conns--;
    if (s_paused && s_conns + 2 < s_conns_max && !gw->stop) {
        lws_rx_flow_control(s_paused, 1);
        s_paused = NULL;
    }
}

static int s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    nx_gw_t *gw = lws_context_user(lws_get_context(wsi));
    s_pss_t *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return s_http(gw, wsi, pss, in);
    case LWS_CALLBACK_HTTP_BODY:
        if (pss && !pss->answered)
            s_http_body(gw, pss, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!pss || !pss->conn)
            return 0;
        /*  lws 4.1 says it again while bytes of a next request wait
            behind this one's answer: once per service pass (harmless: the
            request stays in flight, the answer goes out, then the next
            request is read). But for a request it read from what it kept
            of an earlier read (pipelined behind one answered later), it
            says it again and again within one pass, never returning: the
            service thread spun for every client, for good. That request
            is refused and its connection closed; the worker gets a
            request only at a writable callback, which that loop never
            reaches, so nothing of it was done.                            */
        if (pss->completed) {
            if (pss->again_pass != s_service_pass) {
                pss->again_pass = s_service_pass;
                pss->again = 0;
            }
            if (++pss->again < S_AGAIN_MAX)
                return 0;
            nx_debug("HTTP %s from %s: lws could not read it, pipelined behind another "
                     "request; %s, connection closed",
                     pss->conn->path, pss->conn->peer,
                     pss->dispatched ? "its outcome unknown" : "refused, nothing done");
            if (!pss->dispatched)
                s_refuse(wsi, 400, "bad_request",
                         "this request was not taken: it came pipelined behind another one "
                         "with a body, before that one's answer (HTTP pipelining); send it "
                         "again after the answer");
            return -1;
        }
        pss->completed = true;
        pss->body_pending = false;
        /*  Answered already (401, 405, 411...): the body is not acted on,
            the answer can go now.                                         */
        if (!pss->answered)
            pss->dispatch_due = true;
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return s_http_write(gw, wsi, pss);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        if (lws_http_transaction_completed(wsi))
            return -1;
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            s_http_release(gw, wsi, pss);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return s_ws_filter(gw, wsi, pss);
    case LWS_CALLBACK_ESTABLISHED:
        return s_ws_established(gw, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return s_ws_receive(gw, wsi, pss, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return s_ws_write(gw, wsi, pss);
    case LWS_CALLBACK_CLOSED:
        nx_gw_rfc6455_forget(lws_get_socket_fd(wsi));
        s_ws_closed(gw, pss);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        s_kick(gw);
        return 0;
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        s_conn_accepted(wsi); /* wsi: the listener */
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        s_conn_destroyed(gw, wsi);
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols s_protocols[] = {
    {"nexus", s_callback, sizeof(s_pss_t), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static volatile bool s_accept_failed; /* set by the log emitter, lws thread */
static uint64_t s_accept_failures;    /* since the last line about them      */
static uint64_t s_accept_logged_us;

/*  The errno of lws's last failed bind ("ERROR on binding fd 27 to port
    8450 (-1 98)"), for a message that says it in words.                   */
static int s_bind_errno;

static void s_lws_log(int level, const char *line)
{
    /*  lws lines end with a newline; ours add their own.                   */
    char text[512];
    snprintf(text, sizeof text, "%s", line);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = 0;
    const char *code = strstr(text, "binding") ? strrchr(text, '(') : NULL;
    int rc, e;
    if (code && sscanf(code, "(%d %d)", &rc, &e) == 2 && e > 0)
        s_bind_errno = e;
    /*  A failed accept is retried at once by lws, and failed again: with
        no descriptors left that was a busy loop of ~140 000 lines/s.       */
    if (strstr(text, "accept")) {
        s_accept_failed = true;
        s_accept_failures++;
        uint64_t now = nx_gw_mono();
        if (s_accept_logged_us && now - s_accept_logged_us < S_ACCEPT_LOG_US)
            return;
        nx_error("cannot accept connections (%s): out of file descriptors? (ulimit -n); "
                 "%" PRIu64 " failed accepts since the last line, retried every %d ms; "
                 "connected clients are served",
                 text, s_accept_failures, S_ACCEPT_PAUSE_US / 1000);
        s_accept_failures = 0;
        s_accept_logged_us = now;
        return;
    }
    nx_log(level == LLL_ERR ? NX_LOG_ERROR : NX_LOG_WARN, "lws: %s", text);
}

/*  How many descriptors lws may use: every connection, HTTP or WebSocket,
    takes one, and the listener is paused at the limit. The soft ulimit -n
    is brought down to the limit and the reserve, if it is above: lws
    sizes its tables by it (a slot for every descriptor number), and
    nothing in the gateway needs more.                                     */
static unsigned s_fd_limit(const nx_gw_t *gw)
{
    struct rlimit rl;
    uint64_t limit = gw->cfg.max_clients + S_HTTP_EXTRA;
    bool known = getrlimit(RLIMIT_NOFILE, &rl) == 0;
    uint64_t fds = known && rl.rlim_cur != RLIM_INFINITY ? (uint64_t)rl.rlim_cur : 1u << 20;
    uint64_t room = fds > 2 * S_FD_RESERVE ? fds - S_FD_RESERVE : fds / 2;
    if (room < limit) {
        nx_warn("ulimit -n is %" PRIu64 ": at most %" PRIu64 " connections (HTTP and WebSocket) "
                "rather than max_clients %" PRIu64 " + %d; raise it (LimitNOFILE in systemd)",
                fds, room, gw->cfg.max_clients, S_HTTP_EXTRA);
        limit = room;
    }
    if (known && (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > limit + S_FD_RESERVE)) {
        rl.rlim_cur = limit + S_FD_RESERVE;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            nx_debug("setrlimit: %s", strerror(errno));
    }
    return (unsigned)limit;
}

int nx_gw_server_run(nx_gw_t *gw)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, s_lws_log);
    static lws_retry_bo_t retry;
    retry.secs_since_valid_ping = (uint16_t)(gw->cfg.ping_interval / 1000);
    retry.secs_since_valid_hangup = (uint16_t)(gw->cfg.dead_timeout / 1000);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = (int)gw->cfg.port;
    /*  lws with IPv6 on binds an IPv4 address it cannot map to every
        interface: an IPv4 address or an interface name (its IPv4 address)
        is bound with IPv6 off, an IPv6 address with it on.               */
    info.iface = gw->listen.iface;
    info.protocols = s_protocols;
    info.user = gw;
    info.retry_and_idle_policy = &retry;
    info.vhost_name = "nexus-gateway";
    info.server_string = "nexus-gateway";
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (gw->listen.kind != NX_GW_LISTEN_IPV6)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    /*  lws cuts an HTTP request that is not answered within timeout_secs
        (default 5 s). An answer may wait for the broker for broker_timeout
        and for the requests queued before it, so a broker that is down
        must give 503, not a cut connection: allow a few broker timeouts.   */
    info.timeout_secs = (unsigned int)(gw->cfg.broker_timeout * 4 / 1000) + 10;
    s_conns_max = s_fd_limit(gw);
    gw->lws = lws_create_context(&info);
    if (!gw->lws) {
        nx_error("cannot listen on %s:%" PRIu64 "%s%s%s", gw->cfg.listen, gw->cfg.port,
                 s_bind_errno ? ": " : "", s_bind_errno ? strerror(s_bind_errno) : "",
                 s_bind_errno == EADDRINUSE
                     ? " (another process listens there: stop it, or choose --port)"
                     : "");
        return -1;
    }
    /*  Whatever lws did, the socket must be bound to what listen names:
        never wider (lws falls back to every interface silently).         */
    struct sockaddr_storage bound;
    char shown[96] = "nothing";
    int n = nx_gw_listen_find((int)gw->cfg.port, &bound);
    if (n > 0)
        nx_gw_listen_text((struct sockaddr *)&bound, shown, sizeof shown);
    if (n != 1 || !nx_gw_listen_matches(&gw->listen, (struct sockaddr *)&bound)) {
        nx_error("listen %s: the socket is bound to %s, not to what listen names (is the address "
                 "on this machine?): not serving",
                 gw->cfg.listen, shown);
        pthread_mutex_lock(&gw->lock);
        struct lws_context *lws = gw->lws;
        gw->lws = NULL;
        pthread_mutex_unlock(&gw->lock);
        lws_context_destroy(lws);
        return -1;
    }
    nx_info("listening on http://%s (%s, WebSocket at /ws/session/{id})", shown,
            gw->web_root[0] ? "dashboard at /" : "no dashboard: the API only");
    s_tick_gw = gw;
    while (!gw->stop) {
        s_accept_failed = false;
        s_service_pass++;
        if (lws_service(gw->lws, 0) < 0)
            break;
        if (s_accept_failed)
            usleep(S_ACCEPT_PAUSE_US); /* back off: the socket stays readable */
    }
    lws_sul_cancel(&s_tick);
    s_goodbye(gw);
    pthread_mutex_lock(&gw->lock);
    struct lws_context *lws = gw->lws;
    gw->lws = NULL; /* no wake reaches the context from here on */
    pthread_mutex_unlock(&gw->lock);
    lws_context_destroy(lws);
    free(s_direct);
    s_direct = NULL;
    s_direct_cap = 0;
    return 0;
}
