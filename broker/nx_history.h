/*  =========================================================================
    nx_history - the `history` op of the control plane (docs/protocol.md).
    =========================================================================
*/

#ifndef NX_HISTORY_H_INCLUDED
#define NX_HISTORY_H_INCLUDED

#include <msgpack.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_store.h"

typedef struct {
    uint64_t limit_max; /* largest page a query may ask for                 */
    uint64_t scan_max;  /* records one page may scan before it returns      */
    uint64_t bytes_max; /* event bytes one page may carry (one event more)  */
} nx_history_limits_t;

/*  Runs one history request against a fresh read snapshot of store. Packs
    the reply's fields (events, next_cursor, scanned, first_seq, last_seq,
    store_id) into reply, counted, and returns 0, or -1 with *err and
    err_msg set. Thread-safe with respect to the writer (uses only an
    nx_store reader).                                                       */
int nx_history_query(nx_store_t *store, const nx_history_limits_t *limits,
                     const msgpack_object *req, nx_dmap_t *reply, nexus_err_t *err, char *err_msg);

#endif
