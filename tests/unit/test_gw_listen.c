/*  =========================================================================
    test_gw_listen - the gateway's listen setting: addresses, interface
    names and junk parse as they should; a bound socket is found and
    matched against what was asked, and a wider bind (0.0.0.0 for
    127.0.0.1) is told apart.
    =========================================================================
*/

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "nx_gw_listen.h"
#include "nx_test.h"

/*  A listening TCP socket on addr (port chosen by the kernel), or -1.    */
static int s_listen(int family, const char *addr, int *port)
{
    int fd = socket(family, SOCK_STREAM, 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, addr, &s4->sin_addr);
        len = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, addr, &s6->sin6_addr);
        len = sizeof *s6;
    }
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 4)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port = family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                              : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

int main(void)
{
    nx_gw_listen_t l;
    char err[256];

    CHECK(nx_gw_listen_parse("127.0.0.1", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV4 && l.loopback && !l.any);
    CHECK_EQ_STR(l.iface, "127.0.0.1");
    CHECK(nx_gw_listen_parse("localhost", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV4 && l.loopback);
    CHECK_EQ_STR(l.iface, "127.0.0.1");
    CHECK(nx_gw_listen_parse("0.0.0.0", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV4 && l.any && !l.loopback);
    CHECK(nx_gw_listen_parse("10.8.0.5", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV4 && !l.any && !l.loopback);
    CHECK(nx_gw_listen_parse("::1", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV6 && l.loopback && !l.any);
    CHECK(nx_gw_listen_parse("[::1]", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV6 && l.loopback);
    CHECK_EQ_STR(l.iface, "::1");
    CHECK(nx_gw_listen_parse("::", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV6 && l.any && !l.loopback);
    CHECK(nx_gw_listen_parse("fd00::5", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IPV6 && !l.loopback);
    CHECK(nx_gw_listen_parse("lo", &l, err, sizeof err) == 0);
    CHECK(l.kind == NX_GW_LISTEN_IFACE && l.loopback);
    CHECK_EQ_STR(l.iface, "lo");
    /*  Junk is refused with the value named.                             */
    CHECK(nx_gw_listen_parse("no-such-if0", &l, err, sizeof err) == -1);
    CHECK(strstr(err, "no-such-if0") != NULL);
    CHECK(nx_gw_listen_parse("", &l, err, sizeof err) == -1);
    CHECK(nx_gw_listen_parse("127.0.0.1:8450", &l, err, sizeof err) == -1);
    CHECK(nx_gw_listen_parse("999.1.1.1", &l, err, sizeof err) == -1);

    /*  The socket is found and matched; a wider bind does not match.      */
    int port = 0;
    int fd = s_listen(AF_INET, "127.0.0.1", &port);
    CHECK(fd >= 0);
    struct sockaddr_storage got;
    CHECK(nx_gw_listen_find(port, &got) == 1);
    nx_gw_listen_parse("127.0.0.1", &l, err, sizeof err);
    CHECK(nx_gw_listen_matches(&l, (struct sockaddr *)&got));
    nx_gw_listen_parse("lo", &l, err, sizeof err);
    CHECK(nx_gw_listen_matches(&l, (struct sockaddr *)&got));
    nx_gw_listen_parse("0.0.0.0", &l, err, sizeof err);
    CHECK(!nx_gw_listen_matches(&l, (struct sockaddr *)&got));
    char text[96];
    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK_EQ_STR(nx_gw_listen_text((struct sockaddr *)&got, text, sizeof text), want);
    close(fd);
    CHECK(nx_gw_listen_find(port, &got) == 0);

    fd = s_listen(AF_INET, "0.0.0.0", &port);
    CHECK(fd >= 0 && nx_gw_listen_find(port, &got) == 1);
    nx_gw_listen_parse("127.0.0.1", &l, err, sizeof err);
    CHECK(!nx_gw_listen_matches(&l, (struct sockaddr *)&got));
    nx_gw_listen_parse("lo", &l, err, sizeof err);
    CHECK(!nx_gw_listen_matches(&l, (struct sockaddr *)&got));
    close(fd);

    /*  IPv6, where the machine has it: [::] is not [::1].                 */
    fd = s_listen(AF_INET6, "::", &port);
    if (fd >= 0) {
        CHECK(nx_gw_listen_find(port, &got) == 1);
        nx_gw_listen_parse("::1", &l, err, sizeof err);
        CHECK(!nx_gw_listen_matches(&l, (struct sockaddr *)&got));
        nx_gw_listen_parse("127.0.0.1", &l, err, sizeof err);
        CHECK(!nx_gw_listen_matches(&l, (struct sockaddr *)&got));
        nx_gw_listen_parse("::", &l, err, sizeof err);
        CHECK(nx_gw_listen_matches(&l, (struct sockaddr *)&got));
        close(fd);
    }
    NX_TEST_DONE();
}
