/*  =========================================================================
    nx_gw_listen - what the gateway's `listen` setting names, and a check
    that the listening socket is bound to exactly that.

    libwebsockets 4.1 takes an address or an interface name as `iface`, but
    with IPv6 support on it binds an IPv4 address it cannot map, or one that
    does not exist, to every interface (`*:8450`) without a word. So the
    setting is parsed here, lws is told which family to use, and after lws
    has bound, the socket's own address (getsockname) is compared with what
    was asked: a gateway that would listen wider than configured does not
    run.
    =========================================================================
*/

#ifndef NX_GW_LISTEN_H_INCLUDED
#define NX_GW_LISTEN_H_INCLUDED

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef enum {
    NX_GW_LISTEN_IPV4,  /* an IPv4 address (or localhost)                  */
    NX_GW_LISTEN_IPV6,  /* an IPv6 address, with or without brackets       */
    NX_GW_LISTEN_IFACE, /* an interface name: its IPv4 address             */
} nx_gw_listen_kind_t;

typedef struct {
    nx_gw_listen_kind_t kind;
    char iface[64];               /* what lws gets: the address text or the name   */
    struct sockaddr_storage addr; /* IPv4/IPv6: the address (port 0)       */
    bool any;                     /* 0.0.0.0 or ::: every interface                */
    bool loopback;                /* nothing beyond this machine can reach it      */
} nx_gw_listen_t;

/*  Parses the listen setting. Returns 0, or -1 with a message in err when
    text is neither an address nor the name of an interface of this
    machine (or an interface without an IPv4 address).                    */
int nx_gw_listen_parse(const char *text, nx_gw_listen_t *out, char *err, size_t err_size);

/*  True when sa (a bound socket's address) is what l names: the same
    address, or for an interface one of that interface's addresses.      */
bool nx_gw_listen_matches(const nx_gw_listen_t *l, const struct sockaddr *sa);

/*  Finds this process's listening TCP socket on port (0: any port) and
    stores its address in out. Returns the number of such sockets found
    (the gateway has one), 0 when none.                                   */
int nx_gw_listen_find(int port, struct sockaddr_storage *out);

/*  Writes sa as "ADDR:PORT" ("[ADDR]:PORT" for IPv6) into buf.           */
const char *nx_gw_listen_text(const struct sockaddr *sa, char *buf, size_t size);

#endif
