/*  =========================================================================
    nx_perm - the topic algebra behind token permissions (nx_auth): which
    pattern covers which, which topics belong to the broker or to one
    session, and which ZeroMQ byte prefixes select exactly a permitted set
    of topics. Pure functions over bytes; no state.

    Two namespaces are special:
      - the broker's own topics: work.claimed, work.released,
        work.completed, work.reopened, and every session.* topic except a
        direct message session.<id>.direct. A client publishes them only
        through a pub= pattern that names their first token ("work.>",
        "session.>"), never through ">" or "*.claimed";
      - a session's private namespace, session.<id>.<more> (three tokens
        or more; direct messages are session.<id>.direct): readable only
        by a token that may act as <id>, or whose sub= names "session"
        literally.
    =========================================================================
*/

#ifndef NX_PERM_H_INCLUDED
#define NX_PERM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define NX_PERM_PRIVATE     "session." /* the private namespaces' root      */
#define NX_PERM_PRIVATE_LEN 8
#define NX_PERM_PREFIX_MAX  258 /* bytes in a prefix we build        */

/*  True when every topic that pattern matches is also matched by grant
    (both valid patterns; "broadcast" is ">").                            */
bool nx_perm_within(const char *grant, size_t glen, const char *pattern, size_t plen);

/*  True when topic is one the broker emits itself (see above).           */
bool nx_perm_broker_topic(const char *topic, size_t len);

/*  True when grant's first token is literally topic's first token: the
    explicit grant a broker topic or a private namespace needs.           */
bool nx_perm_names_first(const char *grant, size_t glen, const char *topic, size_t tlen);

/*  When topic is in a session's private namespace (session.<id>.<more>),
    sets *owner and *owner_len to <id> and returns true.                  */
bool nx_perm_private_owner(const char *topic, size_t len, const char **owner, size_t *owner_len);

/*  The byte prefix that selects exactly grant's topics in the broker's
    event frames (topic, then NUL): ">" -> "", "a.b.>" -> "a.b.", "a.b" ->
    "a.b\0". Returns false for a grant with a '*' (no prefix does).
    out holds NX_PERM_PREFIX_MAX bytes.                                   */
bool nx_perm_grant_prefix(const char *grant, size_t glen, char *out, size_t *out_len);

/*  Calls emit for every byte prefix that, together, select every topic
    starting with mark[0..from) that does not start with all of mark:
    mark[0..k) + b for each byte b a topic may hold there other than
    mark[k], and the topic mark[0..k) itself (mark[0..k) + NUL), for k
    from `from` to len - 1. Returns how many it emitted.                  */
typedef void(nx_perm_emit_fn)(void *arg, const char *prefix, size_t len);
size_t nx_perm_ladder(const char *mark, size_t len, size_t from, nx_perm_emit_fn *emit, void *arg);

#endif
