"""Issue 18, finding 8 and "memory exhausted on purpose": every queue of a
connection is bounded in bytes (queue_bytes), not only in messages.

- a subscriber that never reads while a publisher floods 1 KiB events
  holds the broker's RSS under its bound (out_hwm's high level x the
  message size: queue_bytes), and a subscriber that reads loses nothing;
- with 64 KiB events (the queue counts them as one message each: 2048 of
  them would be 128 MiB) the slow subscriber is dropped once a whole
  queue_bytes of them went out while its connection did not drain: it
  costs the broker less than 4 x queue_bytes (before: out_hwm x 64 KiB);
- 300 history requests whose large replies are never read: the client
  gets busy once it leaves a page unread, the broker's memory does not
  follow (before: +3.1 GB), and a client that reads pages on.

RSS is the broker's VmRSS; ASan's quarantine of freed memory is kept
small so that RSS shows what is held.
"""

import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, decode_event, publisher, settle_subscription,  # noqa: E402
                     subscriber, wait_until)

t = Checks()
ASAN = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"}
QB = 8 << 20  # queue_bytes of these brokers
# Small turns: a turn holds what it reads until it is written and forwarded
# (batch_bytes), which would hide what a subscriber's queue holds.
SMALL_TURNS = ["--batch-bytes", "256k", "--batch-max", "256"]


def rss_kb(pid):
    """Anonymous resident memory: the heap and libzmq's queues. (Pages of
    the LMDB file mapped in are resident too, but they are the page cache,
    not memory the broker holds.)"""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def slow_subscriber(b, prefix):
    """A SUB that reads nothing: its receive queue is one message, so what
    the broker sends piles up on the broker's side (and in the kernel)."""
    s = zmq.Context.instance().socket(zmq.SUB)
    s.linger = 0
    s.rcvhwm = 1
    s.rcvbuf = 4096
    s.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    s.connect(b.events_out)
    return s


def flood(b, topic, size, count, reader=None, per_round=500):
    """Publishes count events of size bytes on the event plane, in rounds
    the reading subscriber keeps up with; returns the seqs it got."""
    pub = publisher(b)
    time.sleep(0.2)
    payload = b"x" * size
    seqs = []
    sent = 0
    while sent < count:
        n = min(per_round, count - sent)
        for _ in range(n):
            pub.send_multipart([topic.encode(), payload])
        sent += n
        if reader is not None:
            deadline = time.time() + 3
            while len(seqs) < sent and time.time() < deadline:
                if reader.poll(200):
                    seqs.append(decode_event(reader.recv())[1])
    pub.close()
    return seqs


def slow_costs(size, count, per_round=500):
    """RSS the broker grows by when a subscriber that never reads is there
    during a flood of count events of size bytes, beyond what the same
    flood cost just before without it (the turn buffers, LMDB's page lists
    and ASan's caches grow once, in the first flood). Also checks that a
    subscriber that reads gets every event, in order."""
    with Broker(extra=["--queue-bytes", str(QB), "--out-hwm", "100000"] + SMALL_TURNS,
                env=ASAN) as b:
        pid = b.proc.pid
        fast = subscriber(b, "flood.")
        settle_subscription(b, fast, topic="flood.settle")
        time.sleep(0.3)
        seqs = flood(b, "flood.warm", size, count, reader=fast, per_round=per_round)
        t.eq(len(seqs), count, "%d B: the reading subscriber got every event" % size)
        time.sleep(0.5)
        base = rss_kb(pid)
        slow = slow_subscriber(b, "flood.")
        time.sleep(0.3)
        seqs = flood(b, "flood.x", size, count, reader=fast, per_round=per_round)
        time.sleep(0.5)
        grown = rss_kb(pid) - base
        t.eq(len(seqs), count, "%d B with a slow subscriber: the reading one got every event" % size)
        t.check(all(y == x + 1 for x, y in zip(seqs, seqs[1:])), "... with no gap")
        with Client(b) as c:
            st = c.request({"op": "state"})
        if size + 128 <= 4096:
            t.check(st["drops"]["slow_subscriber"] > 0,
                    "the slow subscriber's overflows are counted")
        else:
            t.check(st["subscribers_dropped"] == 1 and
                    "the connection did not drain" in b.logs(),
                    "the slow subscriber of large events is dropped, and the log says why "
                    "(%r)" % st["subscribers_dropped"])
        slow.close()
        fast.close()
        return b.logs(), grown


# 1. 1 KiB events: the slow subscriber's queue holds at most queue_bytes
#    (8 MiB: 2048 small messages), not out_hwm (100 000) of them.
logs, grown = slow_costs(1024, 60000)
t.check("events out 2048 messages (of up to 3968 bytes" in logs,
        "the start says what the queues hold")
print("1 KiB flood: 60000 events, a slow subscriber costs the broker %d kB" % grown)
t.check(grown < 4 * QB // 1024,
        "1 KiB: the slow subscriber costs %d kB, under 4 x queue_bytes (before: 80 MB)" % grown)

# 2. 64 KiB events: the slow subscriber goes once queue_bytes of them went
#    out while it did not drain.
logs, grown = slow_costs(65536, 2000, per_round=16)
print("64 KiB flood: 2000 events, a slow subscriber costs the broker %d kB" % grown)
t.check(grown < 4 * QB // 1024,
        "64 KiB: the slow subscriber costs %d kB, under 4 x queue_bytes (before: 155 MB)" % grown)

# 3. 300 history requests for 5 MB pages, never read.
with Broker(extra=["--queue-bytes", str(QB)], env=ASAN) as b:
    pid = b.proc.pid
    with Client(b) as c:
        for i in range(100):
            rep = c.request({"op": "publish", "topic": "hist.big", "payload": os.urandom(50000)})
            t.check(rep.get("ok"), "publish %d" % i) if not rep.get("ok") else None
    time.sleep(0.5)
    base = rss_kb(pid)
    lazy = zmq.Context.instance().socket(zmq.DEALER)
    lazy.linger = 0
    lazy.rcvhwm = 1
    lazy.connect(b.control)
    import msgpack
    for i in range(300):
        lazy.send(msgpack.packb({"op": "history", "id": i, "patterns": ["hist.>"], "limit": 100},
                                use_bin_type=True))
    # Wait until the broker has answered them all (it counts requests).
    with Client(b) as c:
        wait_until(lambda: c.request({"op": "state"})["requests"] >= 300 + 100, timeout=60)
        time.sleep(1.0)
        grown = rss_kb(pid) - base
        print("300 unread 5 MB history pages: broker RSS +%d kB" % grown)
        t.check(grown < 160 * 1024, "300 unread history pages: RSS grew %d kB (< 160 MB; "
                "before: every page held, 1.5 GB)" % grown)
        # Another client pages through the history meanwhile.
        rep = c.request({"op": "history", "patterns": ["hist.>"], "limit": 100}, timeout=30)
        t.check(rep.get("ok") and len(rep["events"]) == 100,
                "a client that reads still gets its page")
    # The lazy client: once it reads, it finds busy among its replies.
    # (Its rcvhwm stays 1: changing it now would change the point at which
    # its reading wakes libzmq's I/O thread, which is waiting for that.)
    replies = []
    deadline = time.time() + 60
    while len(replies) < 300 and time.time() < deadline:
        if lazy.poll(10000):
            replies.append(msgpack.unpackb(lazy.recv(), raw=False))
        else:
            break
    busy = [r for r in replies if r.get("error") == "busy"]
    pages = [r for r in replies if r.get("ok")]
    print("the lazy client: %d pages, %d busy, %d replies" % (len(pages), len(busy), len(replies)))
    t.check(len(busy) > 250, "the client that did not read got busy (%d)" % len(busy))
    t.check(busy and "unread" in busy[0]["message"], "... saying why")
    t.check(len(pages) >= 1, "... after its first page(s)")
    lazy.close()
    t.check("AddressSanitizer" not in b.logs(), "no sanitizer report")

t.done()
sys.exit(1 if t.failed else 0)
