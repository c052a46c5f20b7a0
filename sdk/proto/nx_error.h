/*  =========================================================================
    nx_error - the error table's columns beyond nexus.h's name and text.
    =========================================================================
*/

#ifndef NX_ERROR_H_INCLUDED
#define NX_ERROR_H_INCLUDED

#include "nexus.h"

/*  The HTTP status a front-end answers for err: 400 bad request and its
    kin, 401, 403, 404, 409 (denied, conflict, stale_token), 413, 503
    (busy, broker unreachable), 504 (no answer in time), 507 (store
    full), 500 otherwise.                                                  */
int nx_err_http_status(nexus_err_t err);

#endif
