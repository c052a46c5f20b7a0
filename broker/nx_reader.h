/*  =========================================================================
    nx_reader - the broker's reader thread. History queries can scan many
    records; run on the event loop they would hold up forwarding, so the
    loop hands them to this actor, which answers from its own LMDB read
    snapshot and hands the packed reply back for the loop to send.

    Messages on the actor's pipe, both ways: [routing frames...][body]. The
    loop sends the request body; the actor sends back the same routing
    frames with the reply body in place of the request.
    =========================================================================
*/

#ifndef NX_READER_H_INCLUDED
#define NX_READER_H_INCLUDED

#include <czmq.h>

#include "nx_auth.h"
#include "nx_history.h"

typedef struct {
    nx_store_t *store;          /* shared; only nx_store_reader_* is used  */
    nx_history_limits_t limits; /* copied at start                         */
    uint64_t *errors;           /* error replies, incremented atomically   */
    nx_auth_t *auth;            /* tokens (read-only): what a query's
                                   `auth` token may read                   */
} nx_reader_args_t;

/*  The actor function for zactor_new; args is an nx_reader_args_t that the
    actor copies before it signals ready.                                   */
void nx_reader_actor(zsock_t *pipe, void *args);

#endif
