/*  =========================================================================
    nx_curve - CURVE security for the broker's sockets. nx_curve.h is the
    contract.
    =========================================================================
*/

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "nx_cert.h"
#include "nx_curve.h"

struct _nx_curve_t {
    zcert_t *cert; /* the broker's certificate (public + secret)          */
};

nx_curve_t *nx_curve_new(const char *cert_file, const char *clients, char *err_buf, size_t err_size)
{
    if (!clients || !*clients) {
        snprintf(err_buf, err_size,
                 "curve_cert needs curve_clients: a directory of client public certificates, "
                 "or * for any client that knows the broker's key");
        return NULL;
    }
    struct stat st;
    if (strcmp(clients, CURVE_ALLOW_ANY) != 0) {
        int rc = stat(clients, &st);
        if (rc != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err_buf, err_size, "curve_clients %s: %s", clients,
                     rc != 0 ? strerror(errno) : "not a directory");
            return NULL;
        }
    }
    if (!zsys_has_curve()) {
        snprintf(err_buf, err_size, "curve_cert: this libzmq was built without CURVE (libsodium)");
        return NULL;
    }
    nx_curve_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err_buf, err_size, "out of memory");
        return NULL;
    }
    self->cert = nx_cert_load_secret(cert_file);
    if (!self->cert) {
        snprintf(err_buf, err_size,
                 "curve_cert %s: not a secret certificate file (nexus keygen NAME writes "
                 "NAME_secret)",
                 cert_file);
        nx_curve_destroy(&self);
        return NULL;
    }
    return self;
}

void nx_curve_destroy(nx_curve_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_curve_t *self = *self_p;
    zcert_destroy(&self->cert);
    free(self);
    *self_p = NULL;
}

void nx_curve_apply(nx_curve_t *self, zsock_t *sock)
{
    zcert_apply(self->cert, sock);
    zsock_set_curve_server(sock, 1);
}

void nx_curve_client(nx_curve_t *self, zsock_t *sock)
{
    zcert_apply(self->cert, sock);
    zsock_set_curve_serverkey(sock, zcert_public_txt(self->cert));
}

const char *nx_curve_public_key(nx_curve_t *self)
{
    return zcert_public_txt(self->cert);
}
