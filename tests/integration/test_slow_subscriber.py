"""A subscriber that does not read: the broker keeps forwarding to the others
at full speed, counts each time the slow one's queue overflowed (in
state.drops.slow_subscriber, and in the log), and the history still holds
every event, so the slow one can fill each gap.

libzmq does not tell how many events a full queue missed; the broker learns
when a queue overflows (its XPUB runs with ZMQ_XPUB_NODROP, see
s_send_event), and each overflow is one gap in that subscriber's stream.
"""

import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, publisher, recv_event,  # noqa: E402
                     settle_subscription, subscriber, wait_until)

t = Checks()
OUT_HWM = 500
CHUNK = 100      # under OUT_HWM: the reading subscriber never overflows
N = 3000         # 12 MB: over the slow one's queue and socket buffers
PAYLOAD = 4096


def burst(pub, fast, first):
    """Publishes N events in chunks that the fast subscriber reads as they
    come; returns the seqs it received."""
    seqs = []
    for start in range(first, first + N, CHUNK):
        for i in range(start, start + CHUNK):
            pub.send_multipart([b"slow.event", i.to_bytes(4, "big") + b"x" * (PAYLOAD - 4)])
        for _ in range(CHUNK):
            seqs.append(recv_event(fast)[1])
    return seqs


def read_all(sub):
    """What sub has queued, as seqs, until it is quiet for 500 ms."""
    got = []
    while sub.poll(500) and len(got) < 10 * N:
        ev = recv_event(sub)
        if ev[0] == "slow.event":
            got.append(ev[1])
    return got


def gaps(seqs):
    return sum(1 for a, b2 in zip(seqs, seqs[1:]) if b2 != a + 1)


with Broker(extra=["--out-hwm", str(OUT_HWM)]) as b:
    fast = subscriber(b, "slow.")
    # The slow one has the smallest queues ZeroMQ and the kernel allow, so
    # that the broker's queue for it fills long before a burst is over.
    slow = zmq.Context.instance().socket(zmq.SUB)
    slow.linger = 0
    slow.rcvhwm = 10
    slow.rcvbuf = 4096
    slow.setsockopt(zmq.SUBSCRIBE, b"slow.")
    slow.connect(b.events_out)
    settle_subscription(b, fast, topic="slow.settle")
    settle_subscription(b, slow, topic="slow.settle")
    while fast.poll(100):
        fast.recv_multipart()
    pub = publisher(b)
    time.sleep(0.3)

    with Client(b) as c:
        base = c.request({"op": "state"})["drops"]["slow_subscriber"]
    seqs = burst(pub, fast, 0)
    t.eq(len(seqs), N, "the reading subscriber got every event of burst 1")
    t.eq(gaps(seqs), 0, "without a gap")
    with Client(b) as c:
        d = c.request({"op": "state"})["drops"]
        t.check(d["slow_subscriber"] - base >= 1, "the slow subscriber's overflow is counted: %r" % d)
        t.eq(d["total"], 0, "no event was lost by the broker (total counts events)")
    t.check(wait_until(lambda: "slow subscribers: a queue overflowed" in b.logs(), timeout=3),
            "the overflow is logged")
    # With the mark in effect (out_hwm here, under queue_bytes' cap).
    t.check("a queue holds %d events" % OUT_HWM in b.logs(),
            "the log names the queue mark in effect")
    got1 = read_all(slow)
    t.check(0 < len(got1) < N, "the slow subscriber got part of burst 1: %d" % len(got1))
    t.check(got1 == sorted(set(got1)) and set(got1) <= set(seqs), "in order, no duplicate")

    # It has read its queue and stops again: another overflow, another gap.
    # (While the kernel's socket buffers still take bytes, a queue may drain
    # and overflow more than once in a burst; each time is one gap.)
    seqs2 = burst(pub, fast, N)
    t.eq(len(seqs2), N, "the reading subscriber got every event of burst 2")
    got2 = read_all(slow)
    t.check(0 < len(got2) < N, "the slow subscriber got part of burst 2: %d" % len(got2))
    with Client(b) as c:
        d = c.request({"op": "state"})["drops"]
        overflows = d["slow_subscriber"] - base
        t.check(overflows >= 2, "both bursts' overflows counted: %d" % overflows)
        t.eq(gaps(got1 + got2) + 1, overflows,
             "one gap in the slow subscriber's stream per overflow (the last runs to the end)")
        # The history fills every gap.
        hist = []
        since = seqs[0] - 1
        for _ in range(100):
            rep = c.request({"op": "history", "pattern": "slow.event", "since_seq": since,
                             "limit": 1000})
            t.check(rep["ok"], "history ok")
            hist += [e["seq"] for e in rep["events"]]
            if not rep["events"] or len(hist) >= 2 * N:
                break
            since = hist[-1]
        t.eq(hist, seqs + seqs2, "history holds every event, the missed ones too")
        t.check(c.request({"op": "ping"})["ok"], "the broker still serves")
    fast.close()
    slow.close()
    pub.close()
    t.eq(b.stop(), 0, "SIGTERM exits 0")

t.done()
