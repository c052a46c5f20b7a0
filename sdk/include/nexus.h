/*  =========================================================================
    nexus.h - the public API of libnexus, the nexus fabric client library.

    One header for C services. Handles are opaque; constructors are
    nexus_x_new and return NULL on failure, destructors are nexus_x_destroy
    (&x), safe to call twice, and they set the caller's pointer to NULL.

    Every function that can fail returns a nexus_err_t (NEXUS_OK = 0), or
    NULL/-1 where it returns a pointer or a count; nexus_strerror () turns a
    code into text. The same codes travel on the wire as the stable strings
    that nexus_err_name () returns (see docs/protocol.md).
    =========================================================================
*/

#ifndef NEXUS_H_INCLUDED
#define NEXUS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NEXUS_VERSION_MAJOR 0
#define NEXUS_VERSION_MINOR 1
#define NEXUS_VERSION_PATCH 0
#define NEXUS_MAKE_VERSION(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define NEXUS_VERSION                                                                              \
    NEXUS_MAKE_VERSION(NEXUS_VERSION_MAJOR, NEXUS_VERSION_MINOR, NEXUS_VERSION_PATCH)
#define NEXUS_VERSION_STRING "0.1.0"

#if defined(NEXUS_BUILDING) && defined(__GNUC__)
#define NEXUS_EXPORT __attribute__((visibility("default")))
#else
#define NEXUS_EXPORT
#endif

/*  Error codes. The numeric values are part of the ABI and never change;
    new codes are added at the end. On the wire each code travels as the
    string nexus_err_name () returns ("bad_request", ...).                  */
typedef enum {
    NEXUS_OK = 0,
    NEXUS_ERR_BAD_MSGPACK = 1,   /* request is not a valid msgpack map        */
    NEXUS_ERR_BAD_REQUEST = 2,   /* missing field, wrong type, bad value      */
    NEXUS_ERR_UNKNOWN_OP = 3,    /* the op is not one the broker knows        */
    NEXUS_ERR_TOO_LARGE = 4,     /* request or payload over the limit         */
    NEXUS_ERR_BAD_TOPIC = 5,     /* topic breaks the topic grammar            */
    NEXUS_ERR_BAD_PATTERN = 6,   /* pattern breaks the pattern grammar        */
    NEXUS_ERR_STORE_FULL = 7,    /* store full and retention cannot make room */
    NEXUS_ERR_STORE = 8,         /* the store failed (I/O, corruption)        */
    NEXUS_ERR_NOT_FOUND = 9,     /* no such session, claim or item            */
    NEXUS_ERR_DENIED = 10,       /* claim held by another session             */
    NEXUS_ERR_CONFLICT = 11,     /* state does not allow it (e.g. completed)  */
    NEXUS_ERR_STALE_TOKEN = 12,  /* fencing token is not the current one      */
    NEXUS_ERR_UNAUTHORIZED = 13, /* missing or wrong token                    */
    NEXUS_ERR_FORBIDDEN = 14,    /* acting as a session you do not own        */
    NEXUS_ERR_BUSY = 15,         /* broker overloaded, try again              */
    NEXUS_ERR_INTERNAL = 16,     /* a bug: the broker logs the details        */
    NEXUS_ERR_NOMEM = 17,        /* out of memory                             */
    NEXUS_ERR_TIMEOUT = 18,      /* no reply within the timeout (client side) */
    NEXUS_ERR_UNREACHABLE = 19,  /* cannot reach the broker (client side)     */
    NEXUS_ERR_INVALID = 20,      /* invalid argument to an API call           */
    NEXUS_ERR_CLOSED = 21,       /* handle closed or shutting down            */
    NEXUS_ERR_GAP = 22,          /* events were lost beyond retention         */
    NEXUS_ERR__COUNT             /* number of codes; not an error             */
} nexus_err_t;

/*  Returns a static, human-readable description of err. Never NULL.        */
NEXUS_EXPORT const char *nexus_strerror(nexus_err_t err);

/*  Returns the stable wire name of err ("bad_request"). Never NULL; an
    unknown value gives "unknown".                                          */
NEXUS_EXPORT const char *nexus_err_name(nexus_err_t err);

/*  Returns the code whose wire name is name, or NEXUS_ERR_INTERNAL when the
    name is unknown (a newer broker may send codes an older client lacks).  */
NEXUS_EXPORT nexus_err_t nexus_err_from_name(const char *name);

/*  Returns the library version as NEXUS_MAKE_VERSION would build it.        */
NEXUS_EXPORT int nexus_version(void);

#ifdef __cplusplus
}
#endif

#endif
