/*  =========================================================================
    nx_gw_rfc6455 - the masking rule of RFC 6455 5.1 that libwebsockets 4.1
    (Debian 12) does not enforce: "The server MUST close the connection
    upon receiving a frame that is not masked". lws 4.1 reads an unmasked
    client frame as if it were masked with zeros; later lws versions close
    such a connection with 1002, and this file does the same here.

    lws 4.1 tells its callbacks nothing about a frame's mask bit, so the
    bytes are looked at where lws reads them: this executable defines
    recv(), which the dynamic linker binds lws's calls to (an executable's
    symbols come first), and passes every call to the next recv (libc's,
    or the sanitizer's interceptor). Only the sockets of established
    WebSocket connections (nx_gw_rfc6455_watch) are parsed, frame header
    by frame header; every other descriptor (ZeroMQ's, HTTP) costs one
    array look-up. The gateway serves no TLS, so the bytes read are the
    frames themselves.

    When a frame arrives without its mask bit, the bytes before it are
    returned, the connection is marked, lws is asked for a writable
    callback and every later read of it would block (EAGAIN): the
    gateway's writable and receive callbacks see the mark and close with
    1002 (lws writes the close frame).

    Threads: watch, forget and the parsing run on the lws thread (lws
    reads its sockets there); other threads only load the slot of their
    own descriptors, which is NULL.
    =========================================================================
*/

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <libwebsockets.h>

#include "nx_gw_rfc6455.h"

#define S_FDS 65536 /* descriptors watched: the gateway's fd limit      */

typedef struct {
    struct lws *wsi;  /* the connection, for its writable callback     */
    uint8_t head[14]; /* the frame header read so far                  */
    uint8_t have;     /* bytes of it                                   */
    uint64_t payload; /* payload bytes of the current frame still due  */
    bool unmasked;    /* a frame came without its mask bit             */
} s_rx_t;

static s_rx_t *s_fds[S_FDS];

typedef ssize_t s_recv_fn(int, void *, size_t, int);
static s_recv_fn *s_next_recv;

void nx_gw_rfc6455_watch(int fd, struct lws *wsi)
{
    if (fd < 0 || fd >= S_FDS)
        return;
    s_rx_t *rx = calloc(1, sizeof *rx);
    if (!rx)
        return; /* out of memory: this connection goes unchecked */
    rx->wsi = wsi;
    free(__atomic_exchange_n(&s_fds[fd], rx, __ATOMIC_RELEASE));
}

void nx_gw_rfc6455_forget(int fd)
{
    if (fd < 0 || fd >= S_FDS)
        return;
    free(__atomic_exchange_n(&s_fds[fd], NULL, __ATOMIC_ACQ_REL));
}

bool nx_gw_rfc6455_unmasked(int fd)
{
    if (fd < 0 || fd >= S_FDS)
        return false;
    s_rx_t *rx = __atomic_load_n(&s_fds[fd], __ATOMIC_ACQUIRE);
    return rx && rx->unmasked;
}

static uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*  Walks n bytes of the stream; returns where the header of the first
    unmasked frame starts (0 when it started in an earlier read), or n.   */
static size_t s_scan(s_rx_t *rx, const uint8_t *buf, size_t n)
{
    size_t i = 0, start = 0;
    while (i < n) {
        if (rx->payload) {
            uint64_t take = n - i < rx->payload ? n - i : rx->payload;
            i += (size_t)take;
            rx->payload -= take;
            continue;
        }
        if (rx->have == 0)
            start = i;
        rx->head[rx->have++] = buf[i++];
        if (rx->have < 2)
            continue;
        if (!(rx->head[1] & 0x80)) {
            rx->unmasked = true;
            return start;
        }
        uint8_t len7 = rx->head[1] & 0x7f;
        int ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        if (rx->have < 2 + ext + 4)
            continue;
        rx->payload = ext ? s_be(rx->head + 2, ext) : len7;
        rx->have = 0;
    }
    return n;
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    s_recv_fn *next = __atomic_load_n(&s_next_recv, __ATOMIC_ACQUIRE);
    if (!next) {
        next = (s_recv_fn *)dlsym(RTLD_NEXT, "recv");
        if (!next) {
            errno = ENOSYS;
            return -1;
        }
        __atomic_store_n(&s_next_recv, next, __ATOMIC_RELEASE);
    }
    s_rx_t *rx = fd >= 0 && fd < S_FDS ? __atomic_load_n(&s_fds[fd], __ATOMIC_ACQUIRE) : NULL;
    if (!rx || (flags & MSG_PEEK))
        return next(fd, buf, len, flags);
    if (rx->unmasked) {
        errno = EAGAIN; /* until the callbacks close it */
        return -1;
    }
    ssize_t n = next(fd, buf, len, flags);
    if (n <= 0)
        return n;
    size_t ok = s_scan(rx, buf, (size_t)n);
    if (ok == (size_t)n)
        return n;
    if (rx->wsi) /* NULL in the unit test */
        lws_callback_on_writable(rx->wsi);
    if (ok > 0)
        return (ssize_t)ok;
    errno = EAGAIN;
    return -1;
}
