/*  =========================================================================
    test_mcp - the MCP core and the front-ends' op handlers without a
    broker: JSON-RPC handling (initialize, tools/list, errors), the tools'
    input schemas built from the op table, argument checks that refuse
    before anything is sent, and nx_front's field lists and checks.
    Calls that reach the broker are tested with real processes
    (tests/gateway/mcp.test.js).
    =========================================================================
*/

#include <stdlib.h>

#include "nx_front.h"
#include "nx_mcp.h"
#include "nx_test.h"

static json_t *s_rpc(nx_mcp_t *m, const char *text, nx_mcp_status_t *st)
{
    json_t *msg = json_loads(text, 0, NULL);
    json_t *reply = NULL;
    *st = nx_mcp_handle(m, msg, &reply);
    json_decref(msg);
    return reply;
}

static void s_test_rpc(void)
{
    nx_mcp_config_t cfg = {.client = NULL, .server = "nexus-test"};
    nx_mcp_t *m = nx_mcp_new(&cfg);
    nx_mcp_status_t st;
    json_t *r = s_rpc(m,
                      "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                      "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},"
                      "\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}",
                      &st);
    CHECK(st == NX_MCP_REPLY);
    CHECK_EQ_STR(
        json_string_value(json_object_get(json_object_get(r, "result"), "protocolVersion")),
        "2025-06-18");
    CHECK_EQ_STR(json_string_value(json_object_get(
                     json_object_get(json_object_get(r, "result"), "serverInfo"), "name")),
                 "nexus-test");
    CHECK(json_object_get(json_object_get(json_object_get(r, "result"), "capabilities"), "tools"));
    json_decref(r);
    /*  A revision we do not speak: our newest.                            */
    r = s_rpc(m,
              "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{"
              "\"protocolVersion\":\"1999-01-01\"}}",
              &st);
    CHECK_EQ_STR(
        json_string_value(json_object_get(json_object_get(r, "result"), "protocolVersion")),
        "2025-11-25");
    json_decref(r);
    /*  The transport's header check: exactly the revisions we answer.    */
    CHECK(nx_mcp_revision_known("2025-06-18") && nx_mcp_revision_known("2025-11-25") &&
          nx_mcp_revision_known("2025-03-26"));
    CHECK(!nx_mcp_revision_known("1999-01-01") && !nx_mcp_revision_known("") &&
          !nx_mcp_revision_known(NULL) && !nx_mcp_revision_known("2025-06-18 "));
    CHECK(strstr(nx_mcp_revisions(), "2025-06-18") != NULL);
    /*  A parse error quoting bytes that are not UTF-8 keeps its message.  */
    r = nx_mcp_parse_error("not JSON: near '\xe4\xa3'");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                 "not JSON: near '?"
                 "?'");
    json_decref(r);
    /*  Notifications get nothing back.                                    */
    r = s_rpc(m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &st);
    CHECK(st == NX_MCP_NONE && !r);
    r = s_rpc(m, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}", &st);
    CHECK(json_is_object(json_object_get(r, "result")));
    json_decref(r);
    r = s_rpc(m, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"resources/list\"}", &st);
    CHECK_EQ_U64(json_integer_value(json_object_get(json_object_get(r, "error"), "code")), -32601);
    json_decref(r);
    r = s_rpc(m, "[1,2]", &st);
    CHECK_EQ_U64(json_integer_value(json_object_get(json_object_get(r, "error"), "code")), -32600);
    json_decref(r);
    r = s_rpc(m,
              "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"teleport\"}}",
              &st);
    CHECK_EQ_U64(json_integer_value(json_object_get(json_object_get(r, "error"), "code")), -32602);
    json_decref(r);

    /*  The tools and their schemas, from the op table.                    */
    r = s_rpc(m, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/list\"}", &st);
    json_t *tools = json_object_get(json_object_get(r, "result"), "tools");
    CHECK_EQ_U64(json_array_size(tools), 14);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(tools, 0), "name")),
                 "register_session");
    json_t *claim = NULL, *renew = NULL;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (!strcmp(name, "claim_work"))
            claim = json_object_get(t, "inputSchema");
        if (!strcmp(name, "renew_work"))
            renew = json_object_get(t, "inputSchema");
        CHECK(json_is_false(
            json_object_get(json_object_get(t, "inputSchema"), "additionalProperties")));
    }
    json_t *work_id = json_object_get(json_object_get(claim, "properties"), "work_id");
    CHECK_EQ_STR(json_string_value(json_object_get(work_id, "type")), "string");
    CHECK_EQ_U64(json_integer_value(json_object_get(work_id, "maxLength")), 256);
    CHECK_EQ_U64(json_array_size(json_object_get(renew, "required")), 2);
    json_decref(r);

    /*  Arguments refused before anything is sent (no client here).        */
    r = s_rpc(m,
              "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"notify\",\"arguments\":{\"title\":\"t\"}}}",
              &st);
    json_t *res = json_object_get(r, "result");
    CHECK(json_is_true(json_object_get(res, "isError")));
    CHECK_EQ_STR(json_string_value(json_object_get(
                     json_object_get(json_object_get(res, "structuredContent"), "error"), "code")),
                 "bad_request");
    json_decref(r);
    r = s_rpc(m,
              "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"list_channels\",\"arguments\":{\"x\":1}}}",
              &st);
    res = json_object_get(r, "result");
    CHECK(json_is_true(json_object_get(res, "isError")));
    CHECK(strstr(json_string_value(
                     json_object_get(json_array_get(json_object_get(res, "content"), 0), "text")),
                 "'x'"));
    json_decref(r);
    r = s_rpc(
        m,
        "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/"
        "call\",\"params\":{\"name\":\"wait_for_events\",\"arguments\":{\"timeout_seconds\":301}}}",
        &st);
    CHECK(json_is_true(json_object_get(json_object_get(r, "result"), "isError")));
    json_decref(r);
    /*  Patterns that are not valid pattern strings: refused, never a wait
        that listens (a number once reached strlen (NULL)).               */
    const char *const bad_patterns[] = {"[1]", "[null]", "\"x\"", "[\"a..b\"]", "[[\"a\"]]"};
    for (size_t b = 0; b < sizeof bad_patterns / sizeof bad_patterns[0]; b++) {
        char req[256];
        snprintf(req, sizeof req,
                 "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{"
                 "\"name\":\"wait_for_events\",\"arguments\":{\"patterns\":%s}}}",
                 bad_patterns[b]);
        r = s_rpc(m, req, &st);
        CHECK(st == NX_MCP_REPLY);
        CHECK(json_is_true(json_object_get(json_object_get(r, "result"), "isError")));
        CHECK_EQ_U64(nx_mcp_deadline(m), 0);
        CHECK(!nx_mcp_wants(m, "a.b"));
        json_decref(r);
    }
    /*  Acting tools before a session is registered (the broker has not
        answered yet): unavailable, to try again, not "unregistered".      */
    r = s_rpc(m,
              "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"claim_work\",\"arguments\":{\"work_id\":\"w\"}}}",
              &st);
    CHECK_EQ_STR(
        json_string_value(json_object_get(
            json_object_get(json_object_get(json_object_get(r, "result"), "structuredContent"),
                            "error"),
            "code")),
        "unavailable");
    json_decref(r);
    CHECK_EQ_STR(nx_mcp_session(m), "");
    CHECK_EQ_U64(nx_mcp_deadline(m), 0);
    CHECK(!nx_mcp_wants(m, "a.b"));
    nx_mcp_destroy(&m);
    nx_mcp_destroy(&m);
    CHECK(m == NULL);
}

static void s_test_front(void)
{
    json_t *msg = json_pack("{s:s, s:s, s:s, s:I, s:s}", "work_id", "w", "session", "evil",
                            "secret", "s", "token", (json_int_t)3, "other", "x");
    json_t *f = nx_front_fields("work.renew", msg, "me");
    CHECK_EQ_STR(json_string_value(json_object_get(f, "session")), "me");
    CHECK(!json_object_get(f, "secret") && !json_object_get(f, "other"));
    CHECK_EQ_U64(json_integer_value(json_object_get(f, "token")), 3);
    nx_front_err_t err = {0};
    CHECK(nx_front_check("work.renew", f, &err));
    json_object_set_new(f, "token", json_integer(-1));
    CHECK(!nx_front_check("work.renew", f, &err));
    CHECK_EQ_STR(err.code, "bad_request");
    CHECK_EQ_U64(err.status, 400);
    CHECK(strstr(err.message, "token"));
    nx_front_err_reset(&err);
    json_decref(f);
    /*  Nesting the broker would refuse without an id is refused here.    */
    json_t *deep = json_string("x");
    for (int k = 0; k < 40; k++)
        deep = json_pack("[o]", deep);
    f = json_pack("{s:s, s:s, s:s, s:I, s:o}", "session", "me", "work_id", "w", "op",
                  "work.complete", "token", (json_int_t)1, "result", deep);
    CHECK(!nx_front_check("work.complete", f, &err));
    CHECK(strstr(err.message, "nested"));
    json_decref(f);
    json_t *nothing = json_object();
    CHECK(!nx_front_check("work.nothing", nothing, &err) && !strcmp(err.code, "unknown_op"));
    CHECK(nx_front_call(NULL, "publish", NULL, &err) == NULL);
    CHECK_EQ_STR(err.code, "no_memory");
    json_decref(nothing);
    json_decref(msg);
}

/*  The envelope: JSON-RPC 2.0 ("jsonrpc": "2.0"), an id that is a string
    or an integer, params an object, a tool named by a string. Each was
    served, or answered "unknown tool ''".                                 */
static void s_test_envelope(void)
{
    nx_mcp_config_t cfg = {.client = NULL, .server = "nexus-test"};
    nx_mcp_t *m = nx_mcp_new(&cfg);
    struct {
        const char *msg;
        int code;
        const char *says;
    } bad[] = {
        {"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", -32600, "jsonrpc"},
        {"{\"id\":1,\"method\":\"ping\"}", -32600, "jsonrpc"},
        {"{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"ping\"}", -32600, "'id'"},
        {"{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"ping\"}", -32600, "'id'"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", -32600, "'id'"},
        {"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", -32600, "'id'"},
        {"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":[1]}", -32602,
         "'params'"},
        {"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":5}}", -32602,
         "params.name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nx_mcp_status_t st;
        json_t *r = s_rpc(m, bad[i].msg, &st);
        CHECK(st == NX_MCP_REPLY);
        json_t *e = json_object_get(r, "error");
        CHECK_EQ_U64(json_integer_value(json_object_get(e, "code")),
                     (uint64_t)(int64_t)bad[i].code);
        CHECK(strstr(json_string_value(json_object_get(e, "message")) ?: "", bad[i].says));
        json_decref(r);
    }
    /*  A notification of another version is dropped, unanswered.          */
    nx_mcp_status_t st;
    json_t *r = s_rpc(m, "{\"jsonrpc\":\"1.0\",\"method\":\"notifications/x\"}", &st);
    CHECK(st == NX_MCP_NONE && !r);
    /*  A good one still works.                                             */
    r = s_rpc(m, "{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"ping\"}", &st);
    CHECK(st == NX_MCP_REPLY && json_object_get(r, "result"));
    json_decref(r);
    nx_mcp_destroy(&m);
}

int main(void)
{
    s_test_envelope();
    s_test_rpc();
    s_test_front();
    NX_TEST_DONE();
}
