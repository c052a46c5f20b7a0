/*  =========================================================================
    nx_error - names, texts and HTTP statuses of nexus_err_t. The names are
    the wire codes of docs/protocol.md and must never change. The third
    column is what every HTTP front-end (the gateway's API, /mcp) answers
    for the code: the caller's mistakes are 4xx, the fabric's trouble 5xx.
    =========================================================================
*/

#include <string.h>

#include "nexus.h"
#include "nx_error.h"

typedef struct {
    const char *name; /* stable wire code                                   */
    const char *text; /* human-readable description                         */
    int http;         /* HTTP status of a front-end that answers with it    */
} s_err_t;

static const s_err_t s_errors[NEXUS_ERR__COUNT] = {
    [NEXUS_OK] = {"ok", "success", 200},
    [NEXUS_ERR_BAD_MSGPACK] = {"bad_msgpack", "request is not a valid msgpack map", 400},
    [NEXUS_ERR_BAD_REQUEST] = {"bad_request", "missing field, wrong type or bad value", 400},
    [NEXUS_ERR_UNKNOWN_OP] = {"unknown_op", "unknown operation", 400},
    [NEXUS_ERR_TOO_LARGE] = {"too_large", "request or payload over the size limit", 413},
    [NEXUS_ERR_BAD_TOPIC] = {"bad_topic", "invalid topic", 400},
    [NEXUS_ERR_BAD_PATTERN] = {"bad_pattern", "invalid topic pattern", 400},
    [NEXUS_ERR_STORE_FULL] = {"store_full", "store is full and retention cannot make room", 507},
    [NEXUS_ERR_STORE] = {"store_error", "the store failed", 500},
    [NEXUS_ERR_NOT_FOUND] = {"not_found", "not found", 404},
    [NEXUS_ERR_DENIED] = {"denied", "held by another session", 409},
    [NEXUS_ERR_CONFLICT] = {"conflict", "the current state does not allow this", 409},
    [NEXUS_ERR_STALE_TOKEN] = {"stale_token", "fencing token is not the current one", 409},
    [NEXUS_ERR_UNAUTHORIZED] = {"unauthorized", "missing or wrong token", 401},
    [NEXUS_ERR_FORBIDDEN] = {"forbidden",
                             "not allowed: outside this token's permissions (pub=, sub=, "
                             "sessions) or another session's",
                             403},
    [NEXUS_ERR_BUSY] = {"busy", "broker overloaded, try again", 503},
    [NEXUS_ERR_INTERNAL] = {"internal", "internal error", 500},
    [NEXUS_ERR_NOMEM] = {"no_memory", "out of memory", 500},
    [NEXUS_ERR_TIMEOUT] = {"timeout", "no reply within the timeout", 504},
    [NEXUS_ERR_UNREACHABLE] = {"unreachable", "cannot reach the broker", 503},
    [NEXUS_ERR_INVALID] = {"invalid_argument", "invalid argument", 500},
    [NEXUS_ERR_CLOSED] = {"closed", "handle closed or shutting down", 503},
    [NEXUS_ERR_GAP] = {"gap", "events were lost beyond retention", 410},
    [NEXUS_ERR_NOT_PRIMARY] = {"not_primary", "this broker is not the primary", 503},
    [NEXUS_ERR_RESET] = {"store_reset", "the cursor belongs to another store: starts over", 409},
};

const char *nexus_strerror(nexus_err_t err)
{
    if ((int)err < 0 || err >= NEXUS_ERR__COUNT)
        return "unknown error";
    return s_errors[err].text;
}

const char *nexus_err_name(nexus_err_t err)
{
    if ((int)err < 0 || err >= NEXUS_ERR__COUNT)
        return "unknown";
    return s_errors[err].name;
}

nexus_err_t nexus_err_from_name(const char *name)
{
    if (name)
        for (int i = 0; i < NEXUS_ERR__COUNT; i++)
            if (strcmp(s_errors[i].name, name) == 0)
                return (nexus_err_t)i;
    return NEXUS_ERR_INTERNAL;
}

int nx_err_http_status(nexus_err_t err)
{
    if ((int)err < 0 || err >= NEXUS_ERR__COUNT)
        return 500;
    return s_errors[err].http;
}

int nexus_version(void)
{
    return NEXUS_VERSION;
}
