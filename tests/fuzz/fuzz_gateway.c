/*  =========================================================================
    fuzz_gateway - the gateway's side of what clients send, after
    libwebsockets has framed it: WebSocket actions (nx_gw_action) and HTTP
    requests as lws hands them over (method, decoded path, decoded query
    arguments, body; nx_gw_http), with the gateway's real fabric client
    connected to a real broker in this process (fuzz_broker.h, over ipc).
    lws itself and the worker thread are not running: the target calls
    what the worker calls, on its own thread, and reads the connections'
    queues as the lws thread would.

    Input: byte 0 bit 0 clear: a WebSocket message, the rest of the input
    (the text up to a NUL: lws refuses a text with a NUL before this); set:
    an HTTP request, bits 2-3 the method (GET, POST, other), then parts
    separated by C1 C1: path, query ("a=1&b=2", split at '&' as lws splits
    it), body, Mcp-Session-Id ("@": the MCP session the target opened at
    start, as fz-m with the first token, so that inputs reach the tools),
    MCP-Protocol-Version (cut at 31 bytes, as the server's copy is). Bit 1
    picks the client: one with a token
    for every session (acting as session fz-a), one with a token for
    session w1 only (pub=a.> sub=a.>).

    Promises checked:
      - every message queued to a WebSocket client is one JSON object with
        a "type"; at most one reply per action, with the action's id when
        it had one; a request with a valid id gets its reply;
      - an error has a known code and a message, never internal;
      - every HTTP request gets a status 200..599 and, for JSON, a JSON
        body; an error status carries {"error":{"code","message"}};
    and ASan, UBSan and LeakSanitizer see nothing.
    =========================================================================
*/

#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_broker.h"
#include "fuzz_util.h"
#include "nx_gw.h"
#include "nx_log.h"

static nx_gw_t s_gw;
static uint64_t s_ws[2];      /* the two WebSocket connections           */
static const void *s_auth[2]; /* their tokens                            */
static uint64_t s_inputs;
static char s_mcp[40]; /* the MCP session opened at start ("@")       */

static const char *const s_tokens = "gw-all name=all sessions=* pub=> sub=>\n"
                                    "gw-one name=one sessions=w1 pub=a.> sub=a.>\n";

static void s_item_free(void **item)
{
    free(*item);
    *item = NULL;
}

/*  A WebSocket connection as s_ws_established and s_open leave it.        */
static uint64_t s_ws_open(const char *session, const void *auth)
{
    nx_gw_conn_t *conn = nx_gw_conn_new(&s_gw, NX_GW_WS, NULL);
    FZ_CHECK(conn, "conn");
    nexus_err_t err = nx_gw_ensure_session(&s_gw, session, "fuzz", NULL, 0);
    FZ_CHECK(err == NEXUS_OK, "register %s: %s", session, nexus_strerror(err));
    pthread_mutex_lock(&s_gw.lock);
    snprintf(conn->session, sizeof conn->session, "%s", session);
    conn->auth = auth;
    conn->ready = true;
    conn->opened = true;
    uintptr_t refs = (uintptr_t)zhashx_lookup(s_gw.sessions, session) + 1;
    zhashx_update(s_gw.sessions, session, (void *)refs);
    uint64_t id = conn->id;
    pthread_mutex_unlock(&s_gw.lock);
    return id;
}

static void s_ws_close(uint64_t id)
{
    pthread_mutex_lock(&s_gw.lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(&s_gw, id);
    if (conn) {
        nx_gw_conn_closed(&s_gw, conn);
        nx_gw_conn_unref(&s_gw, &conn);
    }
    pthread_mutex_unlock(&s_gw.lock);
}

static void s_stop(void)
{
    nx_gw_replay_stop(&s_gw);
    nexus_client_destroy(&s_gw.client);
    nx_gw_mcp_stop(&s_gw);
    for (int i = 0; i < 2; i++)
        s_ws_close(s_ws[i]);
    zlistx_t *all = zhashx_values(s_gw.conns);
    for (nx_gw_conn_t *c = zlistx_first(all); c; c = zlistx_next(all)) {
        nx_gw_conn_t *p = c;
        nx_gw_conn_closed(&s_gw, p);
    }
    zlistx_destroy(&all);
    zhashx_destroy(&s_gw.conns);
    for (size_t i = 0; i < s_gw.recent_count; i++) {
        nx_gw_msg_t *m = s_gw.recent[(s_gw.recent_head + i) % 1000];
        nx_gw_msg_unref(&m);
    }
    zhashx_destroy(&s_gw.sessions);
    zhashx_destroy(&s_gw.by_type);
    zhashx_destroy(&s_gw.buckets);
    zhashx_destroy(&s_gw.addr_buckets);
    zhashx_destroy(&s_gw.secrets);
    zhashx_destroy(&s_gw.descs);
    nx_auth_destroy(&s_gw.auth);
    nx_conf_free(nx_gw_conf_keys, nx_gw_conf_count, &s_gw.cfg);
}

/*  An MCP session as a client's initialize leaves it: inputs name it "@". */
static void s_mcp_open(void)
{
    static const char init[] =
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
        "\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},"
        "\"clientInfo\":{\"name\":\"fuzz\",\"version\":\"1\"}}}";
    nx_gw_conn_t *conn = nx_gw_conn_new(&s_gw, NX_GW_HTTP, NULL);
    FZ_CHECK(conn, "conn");
    uint64_t id = conn->id;
    pthread_mutex_lock(&s_gw.lock);
    conn->method = NX_GW_POST;
    snprintf(conn->path, sizeof conn->path, "/mcp");
    memcpy(conn->query, "session=fz-m\0", 14); /* lws's fragments, then a NUL */
    conn->body = strdup(init);
    conn->body_len = strlen(init);
    snprintf(conn->peer, sizeof conn->peer, "127.0.0.1");
    conn->auth = s_auth[0];
    pthread_mutex_unlock(&s_gw.lock);
    nx_gw_http(&s_gw, id);
    pthread_mutex_lock(&s_gw.lock);
    FZ_CHECK(conn->status == 200 && conn->mcp_out[0], "initialize: %d %s", conn->status,
             conn->response ? conn->response : "");
    snprintf(s_mcp, sizeof s_mcp, "%s", conn->mcp_out);
    nx_gw_conn_closed(&s_gw, conn);
    pthread_mutex_unlock(&s_gw.lock);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fz_tmpdir("gateway");
    /*  Few, small events: the last 100 events of up to 64 KiB, each
        turned into JSON under ASan at every GET /events, took most of the
        target's time; larger payloads are still sent and refused, and
        retention runs all the time. Gone sessions and finished work are
        forgotten after 2 s and the tables are small, for the same reason:
        every GET /sessions answered the table's bound, 5 000 sessions,
        turned into JSON and parsed again under ASan.                    */
    const char *const settings[] = {"max_payload",
                                    "4k",
                                    "retain_events",
                                    "20",
                                    "sessions_max",
                                    "64",
                                    "claims_max",
                                    "64",
                                    "history_limit",
                                    "200",
                                    "session_retain",
                                    "2s",
                                    "claims_retain",
                                    "2s",
                                    NULL};
    fz_broker_t *broker = fz_broker_start("gw", dir, true, settings);
    char err[512] = "";
    FZ_CHECK(nx_conf_defaults(nx_gw_conf_keys, nx_gw_conf_count, &s_gw.cfg, err, sizeof err) ==
                 NEXUS_OK,
             "%s", err);
    const char *const gw_settings[] = {
        "broker",   fz_broker_control(broker), "rate", "10000000",    "burst",
        "10000000", "broker_timeout",          "10s",  "queue_bytes", "1M",
        NULL};
    for (size_t i = 0; gw_settings[i]; i += 2)
        FZ_CHECK(nx_conf_set(nx_gw_conf_keys, nx_gw_conf_count, &s_gw.cfg, gw_settings[i],
                             gw_settings[i + 1], err, sizeof err) == NEXUS_OK,
                 "%s", err);
    char tokens[4200];
    snprintf(tokens, sizeof tokens, "%s/gw-tokens", dir);
    FILE *f = fopen(tokens, "w");
    FZ_CHECK(f && fputs(s_tokens, f) >= 0 && fclose(f) == 0, "tokens");
    s_gw.auth = nx_auth_new(NULL, tokens, err, sizeof err);
    FZ_CHECK(s_gw.auth, "%s", err);
    FZ_CHECK(nx_auth_check(s_gw.auth, "gw-all", 6, &s_auth[0]) == NEXUS_OK &&
                 nx_auth_check(s_gw.auth, "gw-one", 6, &s_auth[1]) == NEXUS_OK,
             "tokens");
    pthread_mutex_init(&s_gw.lock, NULL);
    s_gw.conns = zhashx_new();
    s_gw.sessions = zhashx_new();
    s_gw.by_type = zhashx_new();
    s_gw.buckets = zhashx_new();
    zhashx_set_destructor(s_gw.buckets, s_item_free);
    s_gw.addr_buckets = zhashx_new();
    zhashx_set_destructor(s_gw.addr_buckets, s_item_free);
    s_gw.secrets = zhashx_new();
    zhashx_set_destructor(s_gw.secrets, s_item_free);
    s_gw.descs = zhashx_new();
    zhashx_set_destructor(s_gw.descs, s_item_free);
    s_gw.commands_max = 100000;
    s_gw.commands_bytes_max = (size_t)s_gw.cfg.command_bytes;
    s_gw.start_us = nx_now_us();
    s_gw.start_mono = nx_mono_us();
    FZ_CHECK(nx_gw_mcp_init(&s_gw) == 0 && nx_gw_replay_init(&s_gw) == 0, "mcp, replays");
    s_gw.client = nexus_client_new();
    FZ_CHECK(s_gw.client && nexus_client_set_endpoint(s_gw.client, s_gw.cfg.broker) == NEXUS_OK &&
                 nexus_client_set_timeout(s_gw.client, (uint32_t)s_gw.cfg.broker_timeout) ==
                     NEXUS_OK &&
                 nexus_client_set_callback(s_gw.client, nx_gw_deliver, &s_gw) == NEXUS_OK,
             "client");
    FZ_CHECK(nexus_client_connect(s_gw.client) == NEXUS_OK, "connect: %s",
             nexus_client_errmsg(s_gw.client));
    FZ_CHECK(nexus_subscribe(s_gw.client, ">") == NEXUS_OK, "subscribe");
    s_ws[0] = s_ws_open("fz-a", s_auth[0]);
    s_ws[1] = s_ws_open("w1", s_auth[1]);
    s_mcp_open();
    atexit(s_stop); /* before the broker stops */
    return 0;
}

static bool s_known_code(const char *code)
{
    static const char *const gateway[] = {
        "bad_json", "method_not_allowed", "rate_limited", "unknown_action",
        "timeout",  "unavailable",        "no_memory",    NULL};
    for (size_t i = 0; gateway[i]; i++)
        if (strcmp(code, gateway[i]) == 0)
            return true;
    nexus_err_t err = nexus_err_from_name(code);
    return strcmp(nexus_err_name(err), code) == 0 && err != NEXUS_ERR_INTERNAL &&
           err != NEXUS_ERR_STORE;
}

static void s_check_error(json_t *error, const char *where)
{
    const char *code = json_string_value(json_object_get(error, "code"));
    const char *message = json_string_value(json_object_get(error, "message"));
    FZ_CHECK(code && message && *message, "%s: an error without code or message", where);
    FZ_CHECK(s_known_code(code), "%s: error %s: %s", where, code, message);
}

static void s_action(int who, const uint8_t *data, size_t size)
{
    char *text = fz_strndup(data, size);
    json_error_t jerr;
    json_t *req = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    json_t *id = json_object_get(req, "id");
    bool valid_id =
        (json_is_string(id) && json_string_length(id) <= NX_GW_ID_MAX) || json_is_integer(id);
    /*  Deeper than jansson parses: the gateway echoes the id it finds at
        the top level (docs/gateway.md), which only a scan can tell.      */
    bool too_deep_to_parse = !req && json_error_code(&jerr) == json_error_stack_overflow;
    nx_gw_action(&s_gw, s_ws[who], text);
    free(text);
    size_t replies = 0;
    bool lost = false;
    /*  As the worker and the lws thread do: a replay (resume) runs in
        slices and answers when it ends, while its queue is written out.   */
    uint64_t give_up = nx_mono_us() + 10000000;
    nx_gw_conn_t *conn = NULL;
    for (int round = 0; round < 100000; round++) {
        uint64_t next = nx_gw_replay_service(&s_gw);
        pthread_mutex_lock(&s_gw.lock);
        conn = nx_gw_conn_get(&s_gw, s_ws[who]);
        FZ_CHECK(conn, "the connection is gone");
        for (nx_gw_msg_t *m; (m = nx_gw_conn_pop(&s_gw, conn)); nx_gw_msg_unref(&m)) {
            json_error_t merr;
            json_t *msg = json_loadb((const char *)m->buf + LWS_PRE, m->len, JSON_ALLOW_NUL, &merr);
            FZ_CHECK(json_is_object(msg), "a message that is not a JSON object: %s: %.*s",
                     merr.text, (int)(m->len < 200 ? m->len : 200), (const char *)m->buf + LWS_PRE);
            const char *type = json_string_value(json_object_get(msg, "type"));
            FZ_CHECK(type, "a message without type");
            if (strcmp(type, "reply") == 0) {
                replies++;
                FZ_CHECK(json_is_boolean(json_object_get(msg, "ok")), "a reply without ok");
                json_t *rid = json_object_get(msg, "id");
                if (rid && !too_deep_to_parse)
                    FZ_CHECK(valid_id && json_equal(rid, id), "a reply with another id");
                if (!json_is_true(json_object_get(msg, "ok")))
                    s_check_error(json_object_get(msg, "error"), "ws");
            }
            json_decref(msg);
        }
        /*  Every replay over (what was popped has woken a parked one), or
            out of time or rounds.                                          */
        if (!__atomic_load_n(&s_gw.stats.replays, __ATOMIC_RELAXED) || nx_mono_us() > give_up ||
            round == 99999)
            break; /* conn still referenced: checked below */
        nx_gw_conn_unref(&s_gw, &conn);
        pthread_mutex_unlock(&s_gw.lock);
        if (next && next != UINT64_MAX)
            usleep(1000); /* a retry after a failed history request */
    }
    lost = conn->control_lost || conn->close_code;
    if (lost) { /* a reply lost to a full queue: the client is closed */
        conn->control_lost = false;
        conn->close_code = 0;
        conn->full_since = 0;
    }
    nx_gw_conn_unref(&s_gw, &conn);
    pthread_mutex_unlock(&s_gw.lock);
    FZ_CHECK(replies <= 1, "%zu replies to one action", replies);
    if (valid_id && json_is_object(req) && !lost)
        FZ_CHECK(replies == 1, "no reply to an action with an id");
    json_decref(req);
}

static void s_http(int who, int method, const uint8_t *data, size_t size)
{
    fz_part_t p[5] = {{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}};
    fz_split(data, size, "\xc1\xc1", 2, p, 5);
    nx_gw_conn_t *conn = nx_gw_conn_new(&s_gw, NX_GW_HTTP, NULL);
    FZ_CHECK(conn, "conn");
    uint64_t id = conn->id;
    pthread_mutex_lock(&s_gw.lock);
    conn->method = method == 0 ? NX_GW_GET : method == 1 ? NX_GW_POST : NX_GW_OTHER;
    snprintf(conn->path, sizeof conn->path, "%.*s", (int)p[0].size, (const char *)p[0].data);
    /*  lws's fragments: name=value, each ending with a NUL, then a NUL.  */
    size_t q = 0;
    for (size_t i = 0; i < p[1].size && q + 2 < sizeof conn->query; i++)
        conn->query[q++] = p[1].data[i] == '&' ? 0 : (char)p[1].data[i];
    conn->query[q++] = 0;
    conn->query[q] = 0;
    if (conn->method == NX_GW_POST && p[2].data) {
        if (p[2].size > s_gw.cfg.max_body)
            conn->body_too_large = true;
        else {
            conn->body = fz_strndup(p[2].data, p[2].size);
            conn->body_len = p[2].size;
        }
    }
    if (p[3].size == 1 && p[3].data[0] == '@')
        snprintf(conn->mcp_in, sizeof conn->mcp_in, "%s", s_mcp);
    else
        snprintf(conn->mcp_in, sizeof conn->mcp_in, "%.*s", (int)p[3].size,
                 (const char *)p[3].data);
    snprintf(conn->mcp_version, sizeof conn->mcp_version, "%.*s", (int)p[4].size,
             (const char *)p[4].data);
    snprintf(conn->peer, sizeof conn->peer, "127.0.0.%d", who + 1);
    conn->auth = s_auth[who];
    pthread_mutex_unlock(&s_gw.lock);
    nx_gw_http(&s_gw, id);
    nx_gw_mcp_service(&s_gw);
    pthread_mutex_lock(&s_gw.lock);
    int status = conn->status;
    char *body = conn->response ? strdup(conn->response) : NULL;
    const char *type = conn->content_type;
    nx_gw_conn_closed(&s_gw, conn);
    pthread_mutex_unlock(&s_gw.lock);
    /*  A parked /mcp wait is answered later (or at its timeout).          */
    if (status == 0) {
        free(body);
        return;
    }
    FZ_CHECK(status >= 200 && status <= 599, "HTTP status %d", status);
    /*  202: an MCP notification, answered with no body.                  */
    if (type && strncmp(type, "application/json", 16) == 0 && !(status == 202 && body && !*body)) {
        json_error_t jerr;
        json_t *j = json_loads(body ? body : "", JSON_DECODE_ANY, &jerr);
        FZ_CHECK(j, "a JSON answer that is not JSON (%d): %s", status, jerr.text);
        json_t *e = json_object_get(j, "error");
        if (json_object_get(j, "jsonrpc")) /* MCP: JSON-RPC's own errors */
            FZ_CHECK(!e || (json_is_integer(json_object_get(e, "code")) &&
                            json_is_string(json_object_get(e, "message"))),
                     "a JSON-RPC error without code or message: %.200s", body);
        else if (status >= 400) {
            FZ_CHECK(e, "HTTP %d without an error object: %.200s", status, body);
            s_check_error(e, "http");
        }
        json_decref(j);
    }
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /*  Fresh connections now and then: subscriptions and queues start
        over, as clients come and go.                                      */
    if (++s_inputs % 512 == 0) {
        s_ws_close(s_ws[0]);
        s_ws_close(s_ws[1]);
        s_ws[0] = s_ws_open("fz-a", s_auth[0]);
        s_ws[1] = s_ws_open("w1", s_auth[1]);
    }
    int who = (data[0] >> 1) & 1;
    if (data[0] & 1)
        s_http(who, (data[0] >> 2) & 3, data + 1, size - 1);
    else
        s_action(who, data + 1, size - 1);
    return 0;
}
