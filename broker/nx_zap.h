/*  =========================================================================
    nx_zap - the broker's ZAP handler: decides, for every connection to the
    three sockets, whether its handshake may complete, and with which
    identity (ZeroMQ's User-Id, which becomes the source of the events it
    publishes).

    One handler serves the whole ZeroMQ context (libzmq asks it at
    inproc://zeromq.zap.01), so it runs as a CZMQ actor while the broker
    lives, started before any socket binds. It answers:
      - PLAIN (tokens configured, no CURVE): the password must be a token
        (the shared one or one of tokens_file); User-Id is the token's name,
        never the token. The username is not looked at.
      - CURVE (curve_cert): the client's key must be in curve_clients (a
        directory of public certificates, read again when it changes) or
        curve_clients must be "*"; User-Id is the name of the tokens-file
        line that names the key (key=), else the key itself (Z85).
    A refusal is counted and logged (which socket, mechanism, address and
    why), at most NX_ZAP_LOG_PER_SECOND lines a second; the rest are summed
    in one line.

    CZMQ's zauth does CURVE and PLAIN too, but it takes user=password
    pairs and names a client by the user it claims; our tokens are bare
    secrets, and a name must never be the secret.
    =========================================================================
*/

#ifndef NX_ZAP_H_INCLUDED
#define NX_ZAP_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

#include "nx_auth.h"
#include "nx_log.h"

#define NX_ZAP_LOG_PER_SECOND 5

/*  Refused handshakes, counted since start (updated atomically: the ZAP
    thread counts its own, the broker's loop those its socket monitors
    see).                                                                  */
typedef struct {
    uint64_t plain;     /* PLAIN: no such token                            */
    uint64_t curve;     /* CURVE: a key not in curve_clients               */
    uint64_t mechanism; /* refused before ZAP: the client offered no or
                           another mechanism, or the CURVE exchange failed */
} nx_zap_counts_t;

typedef struct _nx_zap_t nx_zap_t;

/*  Starts the handler. auth: the broker's tokens (may be disabled);
    curve_clients: NULL without CURVE, else "*" or a directory. counts:
    where refusals are counted (lives longer than the handler). Returns
    NULL with a message in err_buf when the handler cannot start (another
    ZAP handler holds the endpoint, the directory cannot be read).        */
nx_zap_t *nx_zap_new(nx_auth_t *auth, const char *curve_clients, nx_zap_counts_t *counts,
                     char *err_buf, size_t err_size);
void nx_zap_destroy(nx_zap_t **self_p);

#endif
