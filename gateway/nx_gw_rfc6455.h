/*  =========================================================================
    nx_gw_rfc6455 - closes WebSocket connections whose client sends a frame
    without its mask bit (RFC 6455 5.1), which libwebsockets 4.1 accepts.
    See nx_gw_rfc6455.c for how.
    =========================================================================
*/

#ifndef NX_GW_RFC6455_H_INCLUDED
#define NX_GW_RFC6455_H_INCLUDED

#include <stdbool.h>

struct lws;

/*  Parses the frames read from fd, an established WebSocket connection of
    wsi, from now on (call on the lws thread, after the handshake).        */
void nx_gw_rfc6455_watch(int fd, struct lws *wsi);
/*  Stops (when the connection closes, before its fd is closed).           */
void nx_gw_rfc6455_forget(int fd);
/*  True once a frame read from fd came unmasked: close it with 1002.      */
bool nx_gw_rfc6455_unmasked(int fd);

#endif
