/*  =========================================================================
    nx_mcp - the Model Context Protocol server of the fabric, without its
    transport: JSON-RPC 2.0 messages in, messages out. `nexus mcp` carries
    them over stdio (sdk/cli/nx_cli_mcp.c), the gateway over Streamable
    HTTP at /mcp (gateway/nx_gw_mcp.c). docs/mcp.md is its manual.

    One nx_mcp_t is one MCP session, and acts as one fabric session: it
    registers it (the id given, or a new one), keeps it alive with
    heartbeats (nx_mcp_tick), and registers it again after a broker that
    forgot it. Its tools (seed 004's names first) are adapters over the
    front-ends' op handlers (nx_front); their input schemas come from the
    op table. A tool that fails answers an MCP tool error (isError) with
    the broker's code and message.

    wait_for_events blocks: nx_mcp_handle then answers NX_MCP_PARKED and
    the transport waits, without holding anyone else up, until an event
    nx_mcp_wants arrives or nx_mcp_deadline passes, and calls
    nx_mcp_resume. Not thread-safe, except nx_mcp_wants, which a fabric
    event thread may call at any time.
    =========================================================================
*/

#ifndef NX_MCP_H_INCLUDED
#define NX_MCP_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_front.h"

typedef struct _nx_mcp_t nx_mcp_t;

typedef struct {
    nexus_client_t *client; /* the fabric client (not owned)                */
    const char *server;     /* serverInfo.name: "nexus" or "nexus-gateway"  */
    const char *session;    /* the session to act as; NULL or "": a new one */
    const char *name;       /* its name, or NULL                            */
    const char *caps;       /* its capabilities, comma-separated, or NULL   */
    const char *via;        /* metadata.via: "nexus mcp", "nexus-gateway"   */
    uint64_t wait_max_s;    /* longest wait_for_events this transport holds */
    /*  A desktop notification for `notify`; NULL where none can be shown
        (the gateway). Returns true when one was shown.                     */
    bool (*desktop)(const char *title, const char *message, const char *level);
    /*  The secret of a session registered earlier on this machine, to take
        it back (caller frees), and where to keep a new one. May be NULL.  */
    char *(*secret_load)(const char *session);
    void (*secret_store)(const char *session, const char *secret);
    /*  Whether the caller may act as session (the gateway asks its
        tokens); NULL: any. arg is passed back.                            */
    bool (*allows)(void *arg, const char *session);
    /*  The caller's rights on events (the gateway's tokens: pub=, sub=);
        NULL: every right. may_publish: the message (event_type) it
        publishes; may_read: the fields of a history query it makes
        ("pattern", "patterns"; neither: every event); why (size bytes)
        says what refused. filter removes from events (a JSON array) those
        it may not read. arg is passed back.                               */
    bool (*may_publish)(void *arg, json_t *msg, char *why, size_t size);
    bool (*may_read)(void *arg, json_t *fields, char *why, size_t size);
    void (*filter)(void *arg, json_t *events);
    /*  True, with err set, when a tool must not ask the broker now: the
        gateway's link is down, and its one worker would wait out the
        timeout for each call. NULL: always ask (`nexus mcp`).            */
    bool (*away)(void *arg, nx_front_err_t *err);
    void *arg;
    /*  A wait_for_events is about to look for events matching patterns
        (n 0: every event): the transport makes sure such events reach
        nx_mcp_wants from now on (`nexus mcp` subscribes to them). NULL:
        every event reaches it already (the gateway subscribes to all).   */
    void (*listen)(const char *const *patterns, size_t n);
} nx_mcp_config_t;

typedef enum {
    NX_MCP_NONE = 0, /* nothing to send (a notification)                    */
    NX_MCP_REPLY,    /* *reply holds the response                            */
    NX_MCP_PARKED    /* a wait_for_events waits: see nx_mcp_resume          */
} nx_mcp_status_t;

/*  A new MCP session with cfg (copied). Registers nothing yet. NULL when
    out of memory. Caller owns it.                                          */
nx_mcp_t *nx_mcp_new(const nx_mcp_config_t *cfg);
/*  Unregisters nothing (a session outlives its MCP transport; its TTL or
    unregister_session ends it). Nulls *self_p.                             */
void nx_mcp_destroy(nx_mcp_t **self_p);

/*  Registers the fabric session now (`nexus mcp` at start). Returns
    NEXUS_OK or the error, with a message in err (256 bytes).              */
nexus_err_t nx_mcp_start(nx_mcp_t *self, char *err);

/*  Handles one JSON-RPC message (borrowed). *reply (new reference) is set
    for NX_MCP_REPLY. A message that is not JSON-RPC gets an error reply.   */
nx_mcp_status_t nx_mcp_handle(nx_mcp_t *self, json_t *msg, json_t **reply);

/*  For a parked wait: looks again; NX_MCP_REPLY with the answer when
    events came or the deadline passed, else NX_MCP_PARKED.               */
nx_mcp_status_t nx_mcp_resume(nx_mcp_t *self, json_t **reply);

/*  The monotonic time (us) a parked wait ends, 0 when none is parked.    */
uint64_t nx_mcp_deadline(nx_mcp_t *self);

/*  True when an event on topic may end the parked wait. Thread-safe.     */
bool nx_mcp_wants(nx_mcp_t *self, const char *topic);

/*  Heartbeats the session when due; registers it again when the broker
    forgot it. Returns the monotonic time (us) it wants to run next.       */
uint64_t nx_mcp_tick(nx_mcp_t *self);

/*  The fabric session it acts as ("" before one is registered).          */
const char *nx_mcp_session(nx_mcp_t *self);

/*  The JSON-RPC error response for a message that could not be read.     */
json_t *nx_mcp_parse_error(const char *why);
/*  The JSON-RPC error response (-32600, invalid request, id null) for a
    message refused unread (too large).                                    */
json_t *nx_mcp_request_error(const char *why);
/*  The same for text (len bytes), which jansson refused for why; the error
    answers the message's id when only a \u0000 in a string stood in the
    way (-32602, invalid params).                                          */
json_t *nx_mcp_unreadable(const char *text, size_t len, const char *why);

/*  Whether revision is an MCP protocol revision this server speaks; the
    list, for messages ("2025-11-25, 2025-06-18, ...").                    */
bool nx_mcp_revision_known(const char *revision);
const char *nx_mcp_revisions(void);

#endif
