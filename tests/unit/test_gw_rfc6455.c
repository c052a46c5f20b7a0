/*  =========================================================================
    test_gw_rfc6455 - the gateway's check of RFC 6455 5.1 (nx_gw_rfc6455):
    over a real socket pair, reads of a watched socket pass masked frames
    through whole, however the bytes are split; a frame without its mask
    bit stops the read at its header and marks the socket; an unwatched
    socket is read as it is. (The gateway closing such a connection with
    1002 is tested with a raw socket in test_gateway_decoding.py.)
    =========================================================================
*/

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nx_gw_rfc6455.h"
#include "nx_test.h"

/*  A client frame: text, masked unless mask is false, len payload bytes
    (header with the 16- or 64-bit length as needed). Returns its size.   */
static size_t s_frame(uint8_t *out, size_t len, bool mask)
{
    size_t n = 0;
    out[n++] = 0x81;
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126)
        out[n++] = m | (uint8_t)len;
    else if (len < 65536) {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(out + n, "\x12\x34\x56\x78", 4);
        n += 4;
    }
    memset(out + n, 'x', len);
    return n + len;
}

/*  Reads what is there from fd (non-blocking) into buf: bytes read, or -1
    with errno.                                                            */
static ssize_t s_read(int fd, uint8_t *buf, size_t size)
{
    return recv(fd, buf, size, MSG_DONTWAIT);
}

static uint8_t s_out[200000], s_in[200000];

int main(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    int rd = sv[0], wr = sv[1];
    nx_gw_rfc6455_watch(rd, NULL);

    /*  Masked frames of each length form, written one byte at a time and
        in one write: all pass, nothing marked.                            */
    size_t n = s_frame(s_out, 5, true);
    n += s_frame(s_out + n, 300, true);
    n += s_frame(s_out + n, 70000, true);
    size_t got = 0;
    for (size_t i = 0; i < 400; i++) { /* the first two frames, bytewise */
        CHECK(write(wr, s_out + i, 1) == 1);
        ssize_t r = s_read(rd, s_in + got, 1);
        CHECK(r == 1);
        got += r > 0 ? (size_t)r : 0;
    }
    CHECK(write(wr, s_out + 400, n - 400) == (ssize_t)(n - 400));
    while (got < n) {
        ssize_t r = s_read(rd, s_in + got, sizeof s_in - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    CHECK_EQ_U64(got, n);
    CHECK(memcmp(s_in, s_out, n) == 0);
    CHECK(!nx_gw_rfc6455_unmasked(rd));

    /*  A masked frame then an unmasked one in one write: the read stops
        at the unmasked frame's header, the socket is marked, and later
        reads would block.                                                 */
    size_t good = s_frame(s_out, 10, true);
    n = good + s_frame(s_out + good, 3, false);
    CHECK(write(wr, s_out, n) == (ssize_t)n);
    ssize_t r = s_read(rd, s_in, sizeof s_in);
    CHECK_EQ_U64((uint64_t)r, good);
    CHECK(nx_gw_rfc6455_unmasked(rd));
    errno = 0;
    CHECK(s_read(rd, s_in, sizeof s_in) == -1 && errno == EAGAIN);

    /*  The bytes of that read from the unmasked frame on were dropped (the
        connection is closed): forgotten, the socket has nothing more.     */
    nx_gw_rfc6455_forget(rd);
    CHECK(!nx_gw_rfc6455_unmasked(rd));
    errno = 0;
    CHECK(s_read(rd, s_in, sizeof s_in) == -1 && errno == EAGAIN);

    /*  An unmasked frame whose header is split over two reads: the second
        read is refused (the first byte already went to the reader).       */
    nx_gw_rfc6455_watch(rd, NULL);
    n = s_frame(s_out, 4, false);
    CHECK(write(wr, s_out, 1) == 1);
    CHECK(s_read(rd, s_in, sizeof s_in) == 1);
    CHECK(!nx_gw_rfc6455_unmasked(rd));
    CHECK(write(wr, s_out + 1, n - 1) == (ssize_t)(n - 1));
    errno = 0;
    CHECK(s_read(rd, s_in, sizeof s_in) == -1 && errno == EAGAIN);
    CHECK(nx_gw_rfc6455_unmasked(rd));
    nx_gw_rfc6455_forget(rd);

    /*  An unwatched socket: unmasked frames pass untouched.                */
    n = s_frame(s_out, 3, false);
    CHECK(write(rd, s_out, n) == (ssize_t)n);
    CHECK(s_read(wr, s_in, sizeof s_in) == (ssize_t)n);
    CHECK(!nx_gw_rfc6455_unmasked(wr));
    close(rd);
    close(wr);
    NX_TEST_DONE();
}
