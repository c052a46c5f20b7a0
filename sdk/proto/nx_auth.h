/*  =========================================================================
    nx_auth - control-plane tokens. With none configured the fabric is open
    (fine on loopback). With a shared token, every request must carry it.
    With a tokens file, each token may act only as the sessions it lists:
        # comment
        TOKEN  worker-1,worker-2
        TOKEN2 *
    =========================================================================
*/

#ifndef NX_AUTH_H_INCLUDED
#define NX_AUTH_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "nexus.h"

typedef struct _nx_auth_t nx_auth_t;

/*  Loads the configuration. shared and file may be NULL or "". Returns NULL
    with a message in err_buf when the file cannot be read or has a bad
    line.                                                                    */
nx_auth_t *nx_auth_new(const char *shared, const char *file, char *err_buf, size_t err_size);
void nx_auth_destroy(nx_auth_t **self_p);

/*  True when any token is configured.                                      */
bool nx_auth_enabled(nx_auth_t *self);

/*  Checks a request's token (NULL when absent). Returns NEXUS_OK or
    NEXUS_ERR_UNAUTHORIZED. On success *handle identifies the token for
    nx_auth_allows (NULL for the shared token and for an open fabric).      */
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

#endif
