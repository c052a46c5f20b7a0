/*  =========================================================================
    nx_unread - whether a client reads what it is sent. nx_unread.h is the
    contract.
    =========================================================================
*/

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "nx_unread.h"

size_t nx_unread_bytes(int fd)
{
    int queued = 0;
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &queued) != 0 || queued < 0)
        return 0;
    return (size_t)queued;
}

bool nx_unread_behind(int fd)
{
    size_t queued = nx_unread_bytes(fd);
    if (queued == 0)
        return false;
    if (queued >= NX_UNREAD_MAX)
        return true;
    /*  A client that never read keeps the send buffer full however small
        the kernel left it (it grows only while the peer reads).           */
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    return getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0 && sndbuf > 0 &&
           queued >= (size_t)sndbuf / 2;
}
