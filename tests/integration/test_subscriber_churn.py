"""Subscribers that come and go while large and small events flow: the
broker stays up and keeps answering.

Why: the broker used to bound each subscriber's queue in bytes by moving
the XPUB's high-water mark, and libzmq 4.3 sends the new mark to every
connection's pipe, also to one whose far end it has just freed while the
connection closes: the broker's I/O thread then used freed memory and died
(a SIGSEGV seen once in a few CI runs, when a gateway or CLI subscriber
went away). The mark no longer moves at all (nx_hwm.h); large events are
bounded by dropping subscribers that do not drain them. This test keeps
the race as likely as it can: threads open and close subscriber
connections as fast as they can while large and small events flow.
"""

import os
import sys
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, drain, publisher, recv_event,  # noqa: E402
                     settle_subscription, subscriber)

t = Checks()
SECONDS = float(os.environ.get("NEXUS_CHURN_SECONDS", "8"))
THREADS = 6
stop = threading.Event()
opened = [0] * THREADS


def churn(b, k):
    ctx = zmq.Context.instance()
    deadline = time.time() + SECONDS
    while not stop.is_set() and time.time() < deadline:
        s = ctx.socket(zmq.SUB)
        s.linger = 0
        s.rcvhwm = 5
        s.connect(b.events_out)
        s.subscribe(b"churn.")
        # Read a little (or nothing), so some connections close with
        # events queued and some mid-handshake.
        if opened[k] % 3 == 0:
            s.poll(2)
        s.close()
        opened[k] += 1


with Broker(extra=["--queue-bytes", "1M", "--max-payload", "256k"]) as b:
    pub = publisher(b)
    steady = subscriber(b, "churn.end", "nexus.test.settle")
    settle_subscription(b, steady)
    threads = [threading.Thread(target=churn, args=(b, k), daemon=True) for k in range(THREADS)]
    for th in threads:
        th.start()
    big = b"L" * (64 << 10)
    small = b"s" * 100
    sent = 0
    deadline = time.time() + SECONDS
    with Client(b) as c:
        while time.time() < deadline and b.proc.poll() is None:
            # A large event every so often (the subscribers' connections
            # are looked at while they flow: s_check_queues).
            pub.send_multipart([b"churn.big", big] if sent % 100 == 0 else [b"churn.small", small])
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.01)
        stop.set()
        for th in threads:
            th.join(10)
        # Large events still flow once the churn stops: a steady
        # subscriber gets one sent now.
        # (An acknowledged publish: the PUB may have dropped at its own
        # mark while the broker took in the backlog of large events.)
        drain(steady, quiet_ms=300)
        r = c.request({"op": "publish", "topic": "churn.end", "payload": big}, timeout=30)
        t.check(r.get("ok") is True, "acknowledged publish after the churn: %r" % str(r)[:200])
        got = None
        end = time.time() + 10
        while time.time() < end and got != "churn.end" and steady.poll(500):
            got = recv_event(steady)[0]
        t.eq(got, "churn.end", "a large event reaches a steady subscriber after the churn")
        if got != "churn.end":
            print(c.request({"op": "state", "id": 9}, timeout=10))
            print(b.logs()[-3000:])
        alive = b.proc.poll() is None
        t.check(alive, "the broker is still running after %d subscriber connections came "
                "and went (exit %r)" % (sum(opened), b.proc.poll()))
        if alive:
            r = c.request({"op": "state", "id": 1}, timeout=10)
            t.check(r.get("ok") is True,
                    "state answers after the churn: %r" % str(r)[:200])
    t.check(sum(opened) > 200, "the churn opened connections: %d" % sum(opened))
    print("churn: %d connections, %d events sent" % (sum(opened), sent))
    pub.close()
    steady.close()

t.done()
