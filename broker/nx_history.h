/*  =========================================================================
    nx_history - the `history` op of the control plane (docs/protocol.md).
    =========================================================================
*/

#ifndef NX_HISTORY_H_INCLUDED
#define NX_HISTORY_H_INCLUDED

#include <msgpack.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_auth.h"
#include "nx_store.h"

typedef struct {
    uint64_t limit_max; /* largest page a query may ask for                 */
    uint64_t scan_max;  /* records one page may scan before it returns      */
    uint64_t bytes_max; /* event bytes one page may carry (one event more)  */
} nx_history_limits_t;

/*  Runs one history request against a fresh read snapshot of store. Packs
    the reply's fields (next_cursor, scanned, first_seq, last_seq,
    store_id, then events) into reply, counted, and returns 0, or -1 with
    *err and err_msg set. With tokens (auth enabled) a pattern the token
    behind handle may not read is refused (forbidden), and events it may
    not read (other sessions' private topics) are left out of the page.
    scratch holds the events while the page is built: the caller keeps it
    from one query to the next (a page is up to history_bytes; allocating
    that afresh for every page made the allocator give it back to the
    kernel and fault it in again each time). Thread-safe with respect to
    the writer (uses only an nx_store reader).                              */
int nx_history_query(nx_store_t *store, const nx_history_limits_t *limits, nx_auth_t *auth,
                     const void *handle, const msgpack_object *req, nx_dmap_t *reply,
                     msgpack_sbuffer *scratch, nexus_err_t *err, char *err_msg);

#endif
