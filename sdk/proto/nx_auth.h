/*  =========================================================================
    nx_auth - tokens: who may connect, as whom they act, and which topics
    they may publish and read. With none configured the fabric is open
    (fine on loopback). With a shared token, every client must present it.
    With a tokens file, each line is one token:

        # comment
        TOKEN  worker-1,worker-2                       (the first format)
        TOKEN  *
        TOKEN  name=ci sessions=build-1 pub=build.>,work.> sub=build.>,work.>
        TOKEN  name=mon sessions=* sub=> pub=
        TOKEN  name=svc key=<40 characters of Z85> sub=>

    The first format, TOKEN SESSION[,SESSION...], means what it always
    meant: the token acts as those sessions ('*': any), and publishes and
    reads as the defaults below allow. Otherwise every field after the
    token is KEY=VALUE:
      name=      the token's non-secret name: the authenticated identity
                 (ZeroMQ's User-Id) and the source stamped on its events.
                 Default: the one session it lists, else "token-L<line>".
      sessions=  ids it may act as ('*': any); default none.
      pub=       patterns it may publish to; default ">" (every topic but
                 the broker's own, which need a pattern naming their first
                 token: "work.>", "session.>").
      sub=       patterns it may read; default ">" (every topic but other
                 sessions' private ones, session.<id>.<more>, which need
                 the session in sessions= or a sub= pattern that names
                 "session" literally).
      key=       a CURVE public key (Z85): a client authenticated by this
                 key on the event plane is this token.
    The shared token is named "shared" and is "sessions=* pub=> sub=>".

    Handles: nx_auth_check gives a token's handle; NULL stands for the
    shared token (or, with nothing configured, for anyone). Handles stay
    valid while the nx_auth_t lives; they are read-only, so any thread may
    use them.
    =========================================================================
*/

#ifndef NX_AUTH_H_INCLUDED
#define NX_AUTH_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "nexus.h"
#include "nx_perm.h"

#define NX_AUTH_SHARED_NAME "shared" /* the shared token's name             */
#define NX_AUTH_NAME_MAX    32       /* bytes in a token's name (a CURVE key: 40) */

typedef struct _nx_auth_t nx_auth_t;

/*  Loads the configuration. shared and file may be NULL or "". Returns NULL
    with a message in err_buf (file:line: why) when the file cannot be read
    or has a bad line.                                                      */
nx_auth_t *nx_auth_new(const char *shared, const char *file, char *err_buf, size_t err_size);
void nx_auth_destroy(nx_auth_t **self_p);

/*  True when any token is configured.                                      */
bool nx_auth_enabled(nx_auth_t *self);

/*  Checks a token (NULL when absent): a request's `auth` field, or a PLAIN
    password. Returns NEXUS_OK or NEXUS_ERR_UNAUTHORIZED. On success
    *handle identifies the token (NULL for the shared token and for an open
    fabric). Constant time per token compared.                              */
nexus_err_t nx_auth_check(nx_auth_t *self, const char *token, size_t len, const void **handle);

/*  True when the token behind handle may act as session id.                */
bool nx_auth_allows(nx_auth_t *self, const void *handle, const char *session, size_t len);

/*  True when the token behind handle is a tokens-file token that lists
    session id by name (not only through '*'): that session's own
    credential rather than a fabric-wide one.                               */
bool nx_auth_names(nx_auth_t *self, const void *handle, const char *session, size_t len);

/*  The one session the token behind handle allows, when it is a
    tokens-file token that lists exactly one (not '*'); NULL otherwise (an
    open fabric, the shared token, several sessions, '*'). Callers that
    act for a request naming no session act as this one.                 */
const char *nx_auth_sole(nx_auth_t *self, const void *handle);

/*  ---- Identities --------------------------------------------------------- */

/*  The token's name ("shared" for the shared token, "" for an open
    fabric): its User-Id and the source its events get.                   */
const char *nx_auth_name(nx_auth_t *self, const void *handle);

/*  The token whose line names CURVE public key z85 (40 characters).
    Returns true and sets *handle, or false when no line names it.        */
bool nx_auth_by_key(nx_auth_t *self, const char *z85, const void **handle);

/*  The token behind an authenticated identity (User-Id): a token's name,
    "shared", or a CURVE key no line names (the defaults: no sessions,
    pub=> sub=>). Returns false for anything else.                        */
bool nx_auth_by_name(nx_auth_t *self, const char *name, const void **handle);

/*  ---- Permissions ----------------------------------------------------------
    With no token configured everything is allowed.                        */

/*  True when the token may publish to topic (a valid topic).             */
bool nx_auth_may_publish(nx_auth_t *self, const void *handle, const char *topic, size_t len);

/*  True when the token may stamp source on a control-plane publish: its
    name, or a session it may act as. (An empty source is the caller's
    to replace with the name.)                                            */
bool nx_auth_may_source(nx_auth_t *self, const void *handle, const char *source, size_t len);

/*  True when every topic pattern matches is within the token's sub=
    (history queries, gateway subscriptions). Other sessions' private
    topics under it are left out where events are read (nx_auth_may_read). */
bool nx_auth_may_subscribe(nx_auth_t *self, const void *handle, const char *pattern, size_t len);

/*  True when the token may read an event on topic.                       */
bool nx_auth_may_read(nx_auth_t *self, const void *handle, const char *topic, size_t len);

/*  False when a subscription of this token may be applied to ZeroMQ as the
    client sent it (it reads every topic); true when it must go through
    nx_auth_sub_prefixes.                                                  */
bool nx_auth_sub_restricted(nx_auth_t *self, const void *handle);

/*  The byte prefixes to subscribe an XPUB connection of this token to
    when it asks for prefix: together they select exactly the events it may
    read among those the prefix selects (prefix itself when it may read
    them all; none when it may read none). Calls emit for each; returns how
    many.                                                                   */
size_t nx_auth_sub_prefixes(nx_auth_t *self, const void *handle, const char *prefix, size_t len,
                            nx_perm_emit_fn *emit, void *arg);

/*  True when prefix is a string nx_auth_sub_prefixes may also produce
    for another prefix of the same connection: unsubscribing it could
    take away what that other subscription needs.                         */
bool nx_auth_prefix_shared(nx_auth_t *self, const void *handle, const char *prefix, size_t len);

/*  Writes the token's pub= or sub= list ("work.>,repo.>", "" for none)
    into buf, for error messages.                                         */
const char *nx_auth_describe(nx_auth_t *self, const void *handle, bool sub, char *buf, size_t size);

#endif
