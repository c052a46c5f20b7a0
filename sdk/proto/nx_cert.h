/*  =========================================================================
    nx_cert - CURVE certificate files (CZMQ's format), shared by the broker
    and libnexus.
    =========================================================================
*/

#ifndef NX_CERT_H_INCLUDED
#define NX_CERT_H_INCLUDED

#include <czmq.h>

/*  Loads a certificate with its secret key: path is the secret file, or
    the public one with its _secret beside it (as zcert_load looks). NULL
    when there is none, or the file holds only a public key.              */
zcert_t *nx_cert_load_secret(const char *path);

#endif
