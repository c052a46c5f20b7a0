"""Issue 18, "file descriptors exhausted", broker side: nexusd under
ulimit -n 128 (soft and hard: nothing to raise), then 200 TCP connections
to its control port.

Before: nothing in the log said why new clients hung (libzmq retried the
accept without a word). Now:
- one log line per 10 s names the cause ("out of file descriptors",
  ulimit -n) and counts the failed accepts;
- the clients connected before are served: a request is answered, a
  subscriber gets the events published meanwhile;
- once connections close, new clients are served again;
- at start, a soft limit below the hard one is raised to it (logged).
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, free_ports, next_event, publisher, settle_subscription, subscriber, wait_until  # noqa: E402

t = Checks()
b = Broker(ports=free_ports(3), prefix=["prlimit", "--nofile=128"])
b.start()
try:
    c = Client(b)
    t.check(c.request({"op": "ping"}).get("ok"), "a client connected before")
    sub = subscriber(b, "fd.")
    settle_subscription(b, sub, "fd.settle")
    pub = publisher(b)
    socks = []
    for i in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", b.ports[0]), timeout=1)
            socks.append(s)
        except OSError:
            break  # the listen backlog is full
    t.check(wait_until(lambda: "out of file descriptors" in b.logs(), timeout=10),
            "the log says why new clients wait: out of file descriptors")
    fds = len(os.listdir("/proc/%d/fd" % b.proc.pid))
    t.check(fds <= 128, "descriptors in use %d <= 128" % fds)
    n0 = len(b.logs().splitlines())
    time.sleep(3)
    lines = b.logs().splitlines()[n0:]
    t.check(len(lines) <= 2, "at most one line per interval, not one per accept: %d in 3 s" % len(lines))
    line = [l for l in b.logs().splitlines() if "out of file descriptors" in l][0]
    t.check("ulimit -n 128" in line and "failed accepts" in line, "it names the limit: %s" % line)
    # Clients connected before are served.
    rep = c.request({"op": "publish", "topic": "fd.x", "payload": b"hello"})
    t.check(rep.get("ok"), "a request of a connected client is answered: %r" % rep)
    ev = next_event(sub, "fd.x", timeout=5)
    t.check(ev is not None, "a connected subscriber gets the event")
    pub.send_multipart([b"fd.plane", b"x"])
    t.check(next_event(sub, "fd.plane", timeout=5) is not None, "a connected publisher's event arrives")
    for s in socks:
        s.close()
    # New clients are served again once descriptors are free.
    def fresh():
        with Client(b) as c2:
            try:
                return c2.request({"op": "ping"}, timeout=2).get("ok")
            except Exception:
                return False
    t.check(wait_until(fresh, timeout=15), "a new client is served once connections closed")
    c.close()
    sub.close()
    pub.close()
finally:
    t.eq(b.stop(), 0, "the broker stops cleanly")
    t.check("AddressSanitizer" not in b.logs(), "no sanitizer report")
    b.cleanup()

# A soft limit below the hard one is raised at start.
b = Broker(ports=free_ports(3), prefix=["prlimit", "--nofile=256:4096"])
b.start()
try:
    t.check("raised from 256 to the hard limit 4096" in b.logs(), "the soft limit is raised to the hard one")
    with open("/proc/%d/limits" % b.proc.pid) as f:
        row = [l for l in f if l.startswith("Max open files")][0].split()
    t.eq(row[3], "4096", "nexusd runs with ulimit -n 4096")
finally:
    b.stop()
    b.cleanup()
t.done()
sys.exit(1 if t.failed else 0)
