"""flush_interval under sync=full: events nobody waits for go to
subscribers at once and are committed within flush_interval; anything that
needs the store commits them first.

With flush_interval = 2s (long enough to watch) it checks that
  - an event reaches a subscriber, and is not committed yet a moment later
    (state's history.commits unchanged), but is within the interval;
  - a history query sent after receiving an event returns it at once (the
    query commits what went out before running): the resume invariant;
  - an acknowledged publish is answered at once, and commits the events
    that waited with it;
  - a clean stop commits what waited (no "unclean stop" at the next start);
  - kill -9 while events wait: the next start stores them from the
    forward log, with the bytes the subscriber saw;
and with flush_interval = 0 that every event is committed in its own turn.
Every loop is bounded in count and in time.
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, publisher, recv_event,  # noqa: E402
                     settle_subscription, subscriber, wait_until)

t = Checks()


def commits(c):
    return c.request({"op": "state"})["history"]["commits"]


def history(c, since):
    rep = c.request({"op": "history", "since_seq": since, "limit": 100})
    t.check(rep.get("ok"), "history ok: %r" % rep)
    return rep.get("events", [])


def publish_and_receive(pub, sub, topic, payload):
    pub.send_multipart([topic.encode(), payload])
    for _ in range(100):
        ev = recv_event(sub, timeout=5.0)
        if ev[0] == topic:
            return ev
    raise AssertionError("no %s event" % topic)


def plugged(b):
    """A subscriber to fi.* whose subscription has reached the broker, and
    a connected publisher."""
    sub = subscriber(b, "fi.")
    settle_subscription(b, sub, "fi.settle")
    pub = publisher(b)
    time.sleep(0.3)
    return pub, sub


data_dir = tempfile.mkdtemp(prefix="nexus-flush-interval-")
try:
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--flush-interval", "2s"])
    b.start()
    with Client(b) as c:
        pub, sub = plugged(b)

        # Goes out at once, committed later (but within the interval).
        before = commits(c)
        t0 = time.time()
        topic, seq, ts, src, payload = publish_and_receive(pub, sub, "fi.one", b"one")
        t.check(time.time() - t0 < 1.0, "the event reached the subscriber at once")
        time.sleep(0.3)
        t.eq(commits(c), before, "not committed 0.3 s later (flush_interval 2s)")
        t.check(wait_until(lambda: commits(c) > before, timeout=4.0),
                "committed within the interval")

        # A history query after seeing an event returns it at once.
        topic, seq2, ts, src, payload = publish_and_receive(pub, sub, "fi.two", b"two")
        before = commits(c)
        t0 = time.time()
        hist = history(c, seq2 - 1)
        t.check(time.time() - t0 < 1.0, "the history query was answered at once")
        t.eq([e["seq"] for e in hist if e["topic"] == "fi.two"], [seq2],
             "history holds the event just seen")
        t.check(commits(c) > before, "the query committed what had gone out")

        # An acknowledged publish is answered at once and commits the
        # events that waited before it.
        topic, seq3, ts, src, payload = publish_and_receive(pub, sub, "fi.three", b"three")
        t0 = time.time()
        rep = c.request({"op": "publish", "topic": "fi.acked", "payload": b"acked"})
        t.check(rep.get("ok") and time.time() - t0 < 1.0, "acknowledged at once: %r" % rep)
        hist = history(c, seq3 - 1)
        t.eq([e["topic"] for e in hist], ["fi.three", "fi.acked"],
             "the waiting event and the acknowledged one are stored")

        # A clean stop commits what waited.
        topic, seq4, ts, src, payload = publish_and_receive(pub, sub, "fi.four", b"four")
        pub.close(0)
        sub.close(0)
    t.eq(b.stop(), 0, "clean stop")
    b.cleanup()
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--flush-interval", "2s"])
    b.start()
    t.check("unclean stop" not in b.logs(), "no unclean stop after a clean one")
    with Client(b) as c:
        t.eq([e["seq"] for e in history(c, seq4 - 1)], [seq4],
             "the event that waited at the stop is stored")

        # kill -9 while events wait: the forward log puts them back.
        pub, sub = plugged(b)
        seen = [publish_and_receive(pub, sub, "fi.kill", b"kill-%d" % i) for i in range(5)]
        pub.close(0)
        sub.close(0)
    b.kill()
    b.cleanup()
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--flush-interval", "2s"])
    b.start()
    t.check("forwarded before their commit" in b.logs(),
            "the start stored the events of the forward log: %s" % b.logs()[-600:])
    with Client(b) as c:
        hist = history(c, seen[0][1] - 1)
        t.eq([(e["seq"], e["payload"]) for e in hist if e["topic"] == "fi.kill"],
             [(ev[1], ev[4]) for ev in seen], "every event seen before the kill, with its bytes")
    b.stop()
    b.cleanup()

    # flush_interval 0: each turn commits its events.
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--flush-interval", "0"])
    b.start()
    with Client(b) as c:
        pub, sub = plugged(b)
        before = commits(c)
        publish_and_receive(pub, sub, "fi.zero", b"zero")
        t.check(wait_until(lambda: commits(c) > before, timeout=0.5),
                "flush_interval 0: committed in its own turn")
        pub.close(0)
        sub.close(0)
    b.stop()
    b.cleanup()
finally:
    shutil.rmtree(data_dir, ignore_errors=True)
t.done()
