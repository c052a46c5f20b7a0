#!/usr/bin/env python3
"""The gateway binds exactly what --listen names (issue 14).

With the default listen (127.0.0.1) the gateway used to listen on *:8450,
every interface, IPv4 and IPv6, while its log said "this machine only".
Checked the way it failed:

1. the listening socket's address after start, from the kernel's tables
   (/proc/net/tcp and tcp6), for 127.0.0.1 (the default), localhost, lo,
   ::1 and 0.0.0.0;
2. from another host (a network namespace joined by a veth pair, nets 20
   and 21), a connection to this machine's non-loopback address is
   refused while the gateway listens on loopback, and is answered when it
   listens on that address (with a token, as a non-loopback gateway must);
3. a listen that is not an address or interface of this machine stops the
   gateway (exit 2 for what cannot be an address, exit 1 for an address
   this machine does not have) with a message that names it, and nothing
   listens.
"""

import os
import subprocess
import sys

import netns
from netns import Host
from harness import Broker, Checks, Gateway, free_ports, listening

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Run inside the other host: connect, send a request, print what happened.
PROBE = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-listen\r\n\r\n")
    print("answered", s.recv(200).split(b"\r\n")[0].decode())
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"""


def probe(host, addr, port):
    r = host.run(PYTHON, "-c", PROBE, addr, str(port), check=False)
    return (r.stdout or r.stderr).strip()


def main():
    t = Checks()
    with Broker(ports=free_ports(3)) as b:
        # 1. the bound address, for each way to name loopback
        for listen, want in ((None, ["127.0.0.1"]), ("localhost", ["127.0.0.1"]),
                             ("lo", ["127.0.0.1"]), ("::1", ["::1"]), ("[::1]", ["::1"])):
            args = ["--listen", listen] if listen else []
            with Gateway(b, args) as g:
                t.eq(listening(g.port), want, "listen %s: the socket's address" % listen)
                t.check("listening on http://%s" % (want[0] if ":" not in want[0] else
                                                    "[%s]" % want[0]) in g.logs(),
                        "listen %s: the log names the bound address: %r" % (listen, g.logs()))
        with Gateway(b, ["--listen", "0.0.0.0", "--token", "tok-listen"]) as g:
            t.eq(listening(g.port), ["0.0.0.0"], "listen 0.0.0.0: every IPv4 address, no IPv6")

        # 3. what is not an address or interface here
        g = Gateway(b, ["--listen", "no-such-if0"])
        g.start(wait_listen=False)
        t.eq(g.wait(), 2, "a listen that is no address or interface: exit 2")
        t.check("no-such-if0" in g.logs() and "interface" in g.logs(),
                "the message names it: %r" % g.logs())
        t.eq(listening(g.port), [], "nothing listens")
        g.cleanup()
        g = Gateway(b, ["--listen", "192.0.2.123", "--token", "tok-listen"])
        g.start(wait_listen=False)
        t.eq(g.wait(), 1, "an address this machine does not have: exit 1")
        t.check("192.0.2.123" in g.logs() and "not serving" in g.logs(),
                "the message says why: %r" % g.logs())
        t.eq(listening(g.port), [], "nothing listens (lws would have bound *)")
        g.cleanup()

        # 2. from another host
        with netns.lock():
            why = netns.available()
            if why:
                print("skipped the other-host part: network namespaces are not available (%s)" %
                      why)
            else:
                other = Host("gl", 20)
                try:
                    other.create()
                    with Gateway(b) as g:
                        t.eq(probe(other, other.here, g.port), "refused",
                             "default listen: a connection from another host to this "
                             "machine's address %s is refused" % other.here)
                    with Gateway(b, ["--listen", other.here, "--token", "tok-listen"]) as g:
                        t.eq(listening(g.port), [other.here],
                             "listen %s: bound to that address only" % other.here)
                        t.check(probe(other, other.here, g.port).startswith("answered HTTP/1.1"),
                                "listen %s: the other host is answered" % other.here)
                finally:
                    other.destroy()
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
