/*  =========================================================================
    nx_error - names and texts of nexus_err_t. The names are the wire codes
    of docs/protocol.md and must never change.
    =========================================================================
*/

#include <string.h>

#include "nexus.h"

typedef struct {
    const char *name; /* stable wire code                                   */
    const char *text; /* human-readable description                         */
} s_err_t;

static const s_err_t s_errors[NEXUS_ERR__COUNT] = {
    [NEXUS_OK] = {"ok", "success"},
    [NEXUS_ERR_BAD_MSGPACK] = {"bad_msgpack", "request is not a valid msgpack map"},
    [NEXUS_ERR_BAD_REQUEST] = {"bad_request", "missing field, wrong type or bad value"},
    [NEXUS_ERR_UNKNOWN_OP] = {"unknown_op", "unknown operation"},
    [NEXUS_ERR_TOO_LARGE] = {"too_large", "request or payload over the size limit"},
    [NEXUS_ERR_BAD_TOPIC] = {"bad_topic", "invalid topic"},
    [NEXUS_ERR_BAD_PATTERN] = {"bad_pattern", "invalid topic pattern"},
    [NEXUS_ERR_STORE_FULL] = {"store_full", "store is full and retention cannot make room"},
    [NEXUS_ERR_STORE] = {"store_error", "the store failed"},
    [NEXUS_ERR_NOT_FOUND] = {"not_found", "not found"},
    [NEXUS_ERR_DENIED] = {"denied", "held by another session"},
    [NEXUS_ERR_CONFLICT] = {"conflict", "the current state does not allow this"},
    [NEXUS_ERR_STALE_TOKEN] = {"stale_token", "fencing token is not the current one"},
    [NEXUS_ERR_UNAUTHORIZED] = {"unauthorized", "missing or wrong token"},
    [NEXUS_ERR_FORBIDDEN] = {"forbidden", "not allowed to act as that session"},
    [NEXUS_ERR_BUSY] = {"busy", "broker overloaded, try again"},
    [NEXUS_ERR_INTERNAL] = {"internal", "internal error"},
    [NEXUS_ERR_NOMEM] = {"no_memory", "out of memory"},
    [NEXUS_ERR_TIMEOUT] = {"timeout", "no reply within the timeout"},
    [NEXUS_ERR_UNREACHABLE] = {"unreachable", "cannot reach the broker"},
    [NEXUS_ERR_INVALID] = {"invalid_argument", "invalid argument"},
    [NEXUS_ERR_CLOSED] = {"closed", "handle closed or shutting down"},
    [NEXUS_ERR_GAP] = {"gap", "events were lost beyond retention"},
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

int nexus_version(void)
{
    return NEXUS_VERSION;
}
