/*  =========================================================================
    nx_curve - CURVE security for the broker's three sockets: encryption,
    and authentication of every client by its public key.

    The broker's certificate is a CZMQ certificate file (the secret one:
    `nexus keygen NAME` writes NAME and NAME_secret). Clients are allowed by
    a directory of their public certificate files, read again when it
    changes, or by "*": any client that knows the broker's public key. The
    ZAP handler that checks them is nx_zap (it also serves tokens).
    =========================================================================
*/

#ifndef NX_CURVE_H_INCLUDED
#define NX_CURVE_H_INCLUDED

#include <czmq.h>

typedef struct _nx_curve_t nx_curve_t;

/*  Loads the certificate and checks clients (a directory, or "*"): the
    ZAP handler (nx_zap) uses it. Returns NULL with a message in err_buf
    when the certificate cannot be read or clients names no directory.   */
nx_curve_t *nx_curve_new(const char *cert_file, const char *clients, char *err_buf,
                         size_t err_size);
void nx_curve_destroy(nx_curve_t **self_p);

/*  Makes sock a CURVE server with the broker's certificate: call before
    it binds.                                                               */
void nx_curve_apply(nx_curve_t *self, zsock_t *sock);

/*  Makes sock a CURVE client of a broker with the same certificate (a
    standby and its primary share one, so that clients trust one key
    whichever of the two serves): call before it connects.                */
void nx_curve_client(nx_curve_t *self, zsock_t *sock);

/*  The broker's public key (Z85, 40 characters): what clients configure.  */
const char *nx_curve_public_key(nx_curve_t *self);

#endif
