/*  =========================================================================
    nx_front - one handler per control op for the JSON front-ends: the
    gateway's WebSocket actions and HTTP routes, and the MCP tools of
    `nexus mcp` and the gateway's /mcp.

    A front-end adapter turns what its client sent into the op's fields
    (a JSON object), calls nx_front_call (or the handler of an op that
    needs more, nx_front_publish and nx_front_history), and turns the
    answer or the error into its own shape. The fields are checked against
    the protocol's op table (nx_optab) before anything is sent, with the
    same function the broker uses; errors come back with their code,
    message, the broker's extra fields and the HTTP status of the error
    table, so every front-end reports the same failure the same way.

    Runs on any thread that may use the given libnexus client.
    =========================================================================
*/

#ifndef NX_FRONT_H_INCLUDED
#define NX_FRONT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>

#include "nexus.h"

/*  What went wrong, for any front-end.                                     */
typedef struct {
    char code[32];     /* the wire code, or "unavailable" (no broker)        */
    char message[256]; /* for people, names the field                        */
    json_t *extra;     /* the broker error's other fields (a denied claim's
                          holder, expires_at, state), or NULL; owned        */
    int status;        /* the HTTP status of code                            */
} nx_front_err_t;

/*  Sets *err (printf-style message); status 0 takes the error table's.    */
void nx_front_fail(nx_front_err_t *err, const char *code, int status, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
/*  A new JSON string (caller owns it; NULL when out of memory) of text,
    with the bytes that are not valid UTF-8 made '?' (nx_utf8_scrub):
    error messages quote what clients sent, and jansson refuses a whole
    string for one bad byte, which would drop the message.                */
json_t *nx_front_text(const char *text);
/*  Releases err->extra.                                                    */
void nx_front_err_reset(nx_front_err_t *err);

/*  A new object with the fields of op's table that msg has, except
    "session" and "secret"; with session set when acting is not NULL.
    Field lists are the table's, never written again by an adapter.        */
json_t *nx_front_fields(const char *op, json_t *msg, const char *acting);

/*  How deep JSON text may nest (arrays and objects, the message itself
    counted): the broker's limit for a request (a deeper one would come
    back as bad_msgpack without an id, which no client can match).         */
#define NX_FRONT_JSON_DEPTH 32
/*  A whole message (WebSocket text or HTTP body) deeper than this is
    refused before it is parsed: its own object, a payload at the bound
    and one level more, so that a payload or field just over the bound
    gets the precise bad_request of the op checks, with its id.           */
#define NX_FRONT_MESSAGE_DEPTH (NX_FRONT_JSON_DEPTH + 2)

/*  Whether text (len bytes) nests arrays and objects deeper than max,
    found by a scan of its brackets (strings skipped) before any parse: a
    parser would build the whole deep tree first.                          */
bool nx_front_json_too_deep(const char *text, size_t len, int max);

/*  Checks fields (with or without "op") against op's row of the table.    */
bool nx_front_check(const char *op, json_t *fields, nx_front_err_t *err);

/*  Runs op with fields (stolen): checks them, asks the broker, and
    returns the reply's fields without id and ok (new reference), or NULL
    with *err set: the broker's refusal, or timeout (504), no_memory,
    unavailable (503) when the broker could not be asked.                  */
json_t *nx_front_call(nexus_client_t *client, const char *op, json_t *fields, nx_front_err_t *err);

/*  publish, in the clients' words: msg's "event_type" (or "topic"),
    "payload" (any JSON, sent as its msgpack encoding so that it comes
    back the same) and, for message.direct, "to" (a session id, at the top
    level or in the payload object). source: the session it acts as ("":
    none). Returns {seq, ts} or NULL with *err.                             */
json_t *nx_front_publish(nexus_client_t *client, json_t *msg, const char *source,
                         nx_front_err_t *err);

/*  The events that retention removed before a reader that stopped after
    seq `after` could read them, from the store's bounds (first 0: the
    store holds none): true with [*from, *to]. After 0 (from the start)
    is never a gap.                                                        */
bool nx_front_gap(uint64_t after, uint64_t first, uint64_t last, uint64_t *from, uint64_t *to);

/*  The code of a reset (a cursor that means nothing on the store served
    now), for clients to branch on: "another_store" when the cursor names
    another store than store, else "beyond_last_seq". MCP's `why`.        */
const char *nx_front_reset_code(const char *cursor_store, const char *store);

/*  history with fields (stolen), its events shaped as the clients'
    events (nx_front_event.h), those viewer may not see left out.
    Returns {events, next_cursor, last_seq, store_id, first_seq} and,
    when the query reads on oldest first after a seq (since_seq or
    cursor) that retention has left behind, gap {from, to}; or NULL with
    *err.                                                                  */
json_t *nx_front_history(nexus_client_t *client, json_t *fields, const char *viewer,
                         nx_front_err_t *err);

#endif
