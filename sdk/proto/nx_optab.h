/*  =========================================================================
    nx_optab - the table of control-plane operations: each op's name,
    flags and fields (type, bounds, required), described once.

    The broker checks every request against its op's row before the
    handler runs (nx_optab_check); the front-ends (the gateway's WebSocket
    actions and HTTP routes, the MCP tools of `nexus mcp` and /mcp) check
    what they are about to send with the same function, and MCP builds its
    tools' input schemas from the same rows. A new op or field is one row
    here plus its handler in the broker.

    Bounds that depend on the broker's settings (ttl_ms up to
    claim_ttl_max, payload up to max_payload; a history limit above
    history_limit is cut to it)
    are the handler's to check: the table holds the fixed ones.
    docs/protocol.md section 6 lists the same fields for people.
    =========================================================================
*/

#ifndef NX_OPTAB_H_INCLUDED
#define NX_OPTAB_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nexus.h"

/*  What a field holds on the wire.                                         */
typedef enum {
    NX_FT_STR = 1, /* str, valid UTF-8; min..max bytes (max 0: no bound)   */
    NX_FT_U64,     /* non-negative integer; min..max (max 0: no bound)     */
    NX_FT_BOOL,    /* boolean                                              */
    NX_FT_STRS,    /* array of str: at most `items`, each min..max bytes   */
    NX_FT_MAP,     /* map; at most max bytes packed (0: no bound)          */
    NX_FT_ANY,     /* any value; at most max bytes packed (0: no bound)    */
    NX_FT_ENUM,    /* str, one of `values`                                 */
    NX_FT_TOPIC,   /* str, a valid topic, else bad_topic                   */
    NX_FT_PATTERN, /* str, a valid pattern, else bad_pattern               */
    NX_FT_PATTERNS /* array of patterns, at most `items`, else bad_pattern */
} nx_ftype_t;

/*  Field flags.                                                            */
#define NX_FF_REQ   0x01 /* required                                        */
#define NX_FF_NIL   0x02 /* nil is taken too (it clears, or means "none")   */
#define NX_FF_NONUL 0x04 /* a str without NUL bytes                         */

typedef struct {
    const char *name;          /* the key                                  */
    nx_ftype_t type;           /* what it holds                            */
    unsigned flags;            /* NX_FF_*                                  */
    uint64_t min, max;         /* bounds, as the type says                 */
    uint32_t items;            /* arrays: most items (0: no bound)         */
    const char *const *values; /* NX_FT_ENUM: the names, NULL-terminated   */
    const char *doc;           /* one line for people and agents           */
} nx_field_t;

/*  Op flags.                                                               */
#define NX_OF_WRITE                                                                                \
    0x01 /* changes state: runs in the batch, reply after                                          \
            its commit                                    */
#define NX_OF_RETRY                                                                                \
    0x02                   /* a retry (same fields, same id) gets the first                        \
                              answer (protocol.md 7)                        */
#define NX_OF_OPEN    0x04 /* needs no token (ping, health)                  */
#define NX_OF_ACTS    0x08 /* acts as the session in "session" (+ "secret") */
#define NX_OF_READER  0x10 /* runs on the broker's reader thread             */
#define NX_OF_QUIET   0x20 /* gets no reply (a standby's acknowledgement)    */
#define NX_OF_STANDBY 0x40 /* a standby serves it too (others: not_primary) */

typedef struct {
    const char *name;         /* the "op" string                           */
    unsigned flags;           /* NX_OF_*                                   */
    const nx_field_t *fields; /* its fields, ended by a row with name NULL */
    const char *doc;          /* what it does, one sentence                */
} nx_opdef_t;

/*  The row of op `name` (len bytes), or NULL.                              */
const nx_opdef_t *nx_optab_find(const char *name, size_t len);

/*  Every row; *count receives how many.                                    */
const nx_opdef_t *nx_optab_all(size_t *count);

/*  The row of field `name` of op, or NULL.                                 */
const nx_field_t *nx_optab_field(const nx_opdef_t *op, const char *name);

/*  Checks the request map req against op's row: required fields present,
    every known field of the right type and within its bounds. Unknown
    keys are left alone (protocol.md 4: unknown keys are ignored). Returns
    NEXUS_OK, or NEXUS_ERR_BAD_REQUEST / BAD_TOPIC / BAD_PATTERN with the
    reason in err_msg (NX_ERRMSG_MAX bytes), naming the field.              */
nexus_err_t nx_optab_check(const nx_opdef_t *op, const msgpack_object *req, char *err_msg);

/*  The type's name as the JSON Schema of a tool argument says it
    ("string", "integer", "boolean", "array", "object"), NULL for any.     */
const char *nx_optab_json_type(nx_ftype_t type);

#endif
