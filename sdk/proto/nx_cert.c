/*  =========================================================================
    nx_cert - CURVE certificate files. nx_cert.h is the contract.
    =========================================================================
*/

#include <string.h>

#include "nx_cert.h"

zcert_t *nx_cert_load_secret(const char *path)
{
    /*  A public certificate alone loads with a secret key of zeros, which
        would make a socket nobody can talk to.                            */
    static const char zero_key[] = "0000000000000000000000000000000000000000";
    zcert_t *cert = path && *path ? zcert_load(path) : NULL;
    if (cert && strcmp(zcert_secret_txt(cert), zero_key) == 0)
        zcert_destroy(&cert);
    return cert;
}
