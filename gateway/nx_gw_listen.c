/*  =========================================================================
    nx_gw_listen - the gateway's listen address, parsed and checked.
    nx_gw_listen.h is the contract.
    =========================================================================
*/

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_gw_listen.h"

/*  The interface's first IPv4 address (lws binds that one), and whether it
    is a loopback interface. Returns 0, or -1 when it has none.            */
static int s_iface_ipv4(const char *name, struct sockaddr_in *addr, bool *loopback)
{
    struct ifaddrs *all = NULL;
    if (getifaddrs(&all) != 0)
        return -1;
    int rc = -1;
    for (struct ifaddrs *a = all; a; a = a->ifa_next)
        if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET && strcmp(a->ifa_name, name) == 0) {
            memcpy(addr, a->ifa_addr, sizeof *addr);
            *loopback = (a->ifa_flags & IFF_LOOPBACK) != 0;
            rc = 0;
            break;
        }
    freeifaddrs(all);
    return rc;
}

int nx_gw_listen_parse(const char *text, nx_gw_listen_t *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    if (!text || !*text) {
        snprintf(err, err_size,
                 "listen is empty: name an address (127.0.0.1, ::1, 10.8.0.5) or "
                 "an interface (lo, wg0)");
        return -1;
    }
    char buf[sizeof out->iface];
    size_t n = strlen(text);
    if (n >= sizeof buf) {
        snprintf(err, err_size, "listen '%.80s...' is too long", text);
        return -1;
    }
    memcpy(buf, text, n + 1);
    /*  [::1] as in URLs.                                                   */
    if (n > 2 && buf[0] == '[' && buf[n - 1] == ']') {
        memmove(buf, buf + 1, n - 2);
        buf[n - 2] = 0;
    }
    if (strcmp(buf, "localhost") == 0)
        snprintf(buf, sizeof buf, "127.0.0.1");
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->addr;
    if (inet_pton(AF_INET, buf, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        out->kind = NX_GW_LISTEN_IPV4;
        out->any = v4->sin_addr.s_addr == htonl(INADDR_ANY);
        out->loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, buf, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        out->kind = NX_GW_LISTEN_IPV6;
        out->any = IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr);
        out->loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr) ||
                        (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127);
    } else if (if_nametoindex(buf) != 0) {
        out->kind = NX_GW_LISTEN_IFACE;
        if (s_iface_ipv4(buf, v4, &out->loopback)) {
            snprintf(err, err_size,
                     "listen: interface %s has no IPv4 address (name its IPv6 address instead)",
                     buf);
            return -1;
        }
    } else {
        snprintf(err, err_size,
                 "listen '%s' is neither an IPv4 or IPv6 address nor the name of an interface of "
                 "this machine",
                 text);
        return -1;
    }
    memcpy(out->iface, buf, strlen(buf) + 1);
    return 0;
}

bool nx_gw_listen_matches(const nx_gw_listen_t *l, const struct sockaddr *sa)
{
    if (l->kind == NX_GW_LISTEN_IPV6) {
        const struct sockaddr_in6 *want = (const struct sockaddr_in6 *)&l->addr;
        return sa->sa_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr,
                                                   &want->sin6_addr, sizeof want->sin6_addr) == 0;
    }
    if (sa->sa_family != AF_INET)
        return false;
    const struct sockaddr_in *got = (const struct sockaddr_in *)sa;
    if (l->kind == NX_GW_LISTEN_IPV4)
        return got->sin_addr.s_addr == ((const struct sockaddr_in *)&l->addr)->sin_addr.s_addr;
    /*  An interface: any of its IPv4 addresses (it may have several).     */
    struct ifaddrs *all = NULL;
    if (getifaddrs(&all) != 0)
        return false;
    bool ok = false;
    for (struct ifaddrs *a = all; a && !ok; a = a->ifa_next)
        ok = a->ifa_addr && a->ifa_addr->sa_family == AF_INET &&
             strcmp(a->ifa_name, l->iface) == 0 &&
             ((struct sockaddr_in *)a->ifa_addr)->sin_addr.s_addr == got->sin_addr.s_addr;
    freeifaddrs(all);
    return ok;
}

int nx_gw_listen_find(int port, struct sockaddr_storage *out)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return 0;
    int found = 0;
    for (struct dirent *e = readdir(dir); e; e = readdir(dir)) {
        char *end = NULL;
        long fd = strtol(e->d_name, &end, 10);
        if (!end || *end || end == e->d_name || fd == dirfd(dir))
            continue;
        int listening = 0, type = 0;
        socklen_t len = sizeof listening;
        if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) || !listening)
            continue;
        len = sizeof type;
        if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) || type != SOCK_STREAM)
            continue;
        struct sockaddr_storage ss;
        len = sizeof ss;
        if (getsockname((int)fd, (struct sockaddr *)&ss, &len))
            continue;
        int got = ss.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                  : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : -1;
        if (got < 0 || (port && got != port))
            continue;
        if (found++ == 0)
            *out = ss;
    }
    closedir(dir);
    return found;
}

const char *nx_gw_listen_text(const struct sockaddr *sa, char *buf, size_t size)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof addr);
        snprintf(buf, size, "[%s]:%d", addr, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof addr);
        snprintf(buf, size, "%s:%d", addr, ntohs(s4->sin_port));
    }
    return buf;
}
