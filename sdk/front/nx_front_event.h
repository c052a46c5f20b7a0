/*  =========================================================================
    nx_front_event - a fabric event as the JSON clients see it (seed 000's
    shape: {type:"event", seq, event_type, session_id, payload, timestamp})
    and who may see a direct message. Shared by the gateway and MCP.
    =========================================================================
*/

#ifndef NX_FRONT_EVENT_H_INCLUDED
#define NX_FRONT_EVENT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>

#include "nexus.h"

/*  Direct messages: clients publish and see event_type "message.direct"
    with the target in "to"; on the fabric the topic is the target's
    private one, session.<to>.direct, which the broker lets only the
    target (and tokens allowed to) read. Events of the old topic
    message.direct (target in the payload's "to") are still shown alike.  */
#define NX_FRONT_DIRECT "message.direct"

/*  True when topic is a direct message. When it names its target
    (session.<id>.direct), copies it into to (size bytes) and returns true;
    for message.direct, to is left "" (the target is in the payload).      */
bool nx_front_direct(const char *topic, char *to, size_t size);

/*  The event_type clients see for a fabric topic: NX_FRONT_DIRECT for a
    direct message, the topic itself otherwise.                           */
const char *nx_front_event_type(const char *topic);

/*  True when a client pattern asks for direct messages (matches
    message.direct): a history query for it must also ask the broker for
    session.*.direct.                                                     */
bool nx_front_wants_direct(const char *pattern);

/*  The payload field of a publish request for a JSON payload: its msgpack
    encoding as bin ({"$base64":...}), so that it comes back as the same
    JSON. Returns a new reference, or NULL when out of memory or (with
    *too_deep set) when the payload is nested deeper than msgpack-c decodes
    (NX_MSGPACK_LEVELS): it could never come back as sent.       */
json_t *nx_front_payload_bin(const json_t *payload, bool *too_deep);

/*  The JSON text of a fabric event as clients receive it; *len its bytes.
    Caller frees it. NULL when out of memory.                              */
char *nx_front_event_json(nexus_event_t *event, size_t *len);

/*  A broker event record of a history reply (JSON form) as a client
    event. Returns a new reference.                                         */
json_t *nx_front_event_from_record(json_t *rec);

/*  Whether client event ev may be shown to `session`: a message.direct
    only to its target ("to", at the top or in the payload) and its
    sender; another session's private topic (session.<id>.<more>) only to
    that session; either to no one when session is NULL. Others always.   */
bool nx_front_event_visible(const json_t *ev, const char *session);

/*  The same for the JSON text of one client event.                        */
bool nx_front_event_text_visible(const char *text, size_t len, const char *session);

/*  For a publish of event type `type` with request msg and payload: a
    direct message's target travels in its payload, where every reader
    looks, so a top-level "to" is copied into its object payload. Returns
    NULL when the publish may go ahead, else the message of a bad_request:
    a message.direct needs a payload object whose "to" is a session id,
    and a top-level "to" that differs from it is refused.                  */
const char *nx_front_direct_target(const char *type, json_t *msg, json_t *payload);

#endif
