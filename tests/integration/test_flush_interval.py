"""flush_interval under sync=full: events nobody waits for go to
subscribers at once, written to the write-ahead log but not flushed, and
are flushed within flush_interval; anything that needs them durable
flushes them first.

With flush_interval = 2s (long enough to watch) it checks, with state's
`log` map (written, durable):
  - an event reaches a subscriber at once and is written to the log, but
    not flushed 0.3 s later; it is within the interval;
  - a history query sent after receiving an event returns it at once (its
    turn flushes the log and the store catches up first): the resume
    invariant;
  - an acknowledged publish is answered at once, and flushes the events
    that waited with it;
  - a clean stop keeps what waited (no "unclean stop" at the next start);
  - kill -9 while events wait unflushed: the next start recovers them from
    the log, with the bytes the subscriber saw, and seqs go on without a
    gap (same boot: the page cache held the log);
and with flush_interval = 0 that every turn has its events flushed at once.
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


def log(c):
    return c.request({"op": "state"})["log"]


def flushed(c):
    lg = log(c)
    return lg["durable"] == lg["written"]


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

        # Goes out at once, flushed later (but within the interval).
        wait_until(lambda: flushed(c), timeout=4.0)
        before = log(c)
        t0 = time.time()
        topic, seq, ts, src, payload = publish_and_receive(pub, sub, "fi.one", b"one")
        t.check(time.time() - t0 < 1.0, "the event reached the subscriber at once")
        time.sleep(0.3)
        lg = log(c)
        t.check(lg["written"] > before["written"], "written to the log at once: %r" % lg)
        t.eq(lg["durable"], before["durable"], "not flushed 0.3 s later (flush_interval 2s)")
        t.check(wait_until(lambda: flushed(c), timeout=4.0), "flushed within the interval")

        # A history query after seeing an event returns it at once.
        topic, seq2, ts, src, payload = publish_and_receive(pub, sub, "fi.two", b"two")
        t0 = time.time()
        hist = history(c, seq2 - 1)
        t.check(time.time() - t0 < 1.0, "the history query was answered at once")
        t.eq([e["seq"] for e in hist if e["topic"] == "fi.two"], [seq2],
             "history holds the event just seen")
        t.check(flushed(c), "the query's turn flushed what had gone out")

        # An acknowledged publish is answered at once and flushes the
        # events that waited before it.
        topic, seq3, ts, src, payload = publish_and_receive(pub, sub, "fi.three", b"three")
        t.check(not flushed(c), "fi.three waits for its flush")
        t0 = time.time()
        rep = c.request({"op": "publish", "topic": "fi.acked", "payload": b"acked"})
        t.check(rep.get("ok") and time.time() - t0 < 1.0, "acknowledged at once: %r" % rep)
        t.check(flushed(c), "the acknowledged publish flushed the waiting event too")
        hist = history(c, seq3 - 1)
        t.eq([e["topic"] for e in hist], ["fi.three", "fi.acked"],
             "the waiting event and the acknowledged one are stored")

        # A clean stop keeps what waited.
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

        # kill -9 while events wait unflushed: the log (in the page cache,
        # which outlives the process) puts them back.
        pub, sub = plugged(b)
        wait_until(lambda: flushed(c), timeout=4.0)
        seen = [publish_and_receive(pub, sub, "fi.kill", b"kill-%d" % i) for i in range(5)]
        t.check(not flushed(c), "the killed events were not flushed")
        pub.close(0)
        sub.close(0)
    b.kill()
    b.cleanup()
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--flush-interval", "2s"])
    b.start()
    t.check("recovered from the write-ahead log" in b.logs(),
            "the start recovered the events from the log: %s" % b.logs()[-600:])
    t.check("unclean stop on this boot" in b.logs() and "skipped" not in b.logs(),
            "same boot, clean end of the log: no seqs skipped")
    with Client(b) as c:
        hist = history(c, seen[0][1] - 1)
        t.eq([(e["seq"], e["payload"]) for e in hist if e["topic"] == "fi.kill"],
             [(ev[1], ev[4]) for ev in seen], "every event seen before the kill, with its bytes")
        rep = c.request({"op": "publish", "topic": "fi.after", "payload": b"after"})
        t.eq(rep.get("seq"), seen[-1][1] + 1, "seqs go on without a gap")
    b.stop()
    b.cleanup()

    # flush_interval 0: each turn flushes its events.
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--flush-interval", "0"])
    b.start()
    with Client(b) as c:
        pub, sub = plugged(b)
        before = log(c)
        publish_and_receive(pub, sub, "fi.zero", b"zero")
        # Asked in its own turn; the flusher thread runs it meanwhile.
        t.check(wait_until(lambda: (lambda lg: lg["written"] > before["written"] and
                                    lg["durable"] == lg["written"])(log(c)), timeout=0.5),
                "flush_interval 0: flushed at once: %r" % log(c))
        pub.close(0)
        sub.close(0)
    b.stop()
    b.cleanup()
finally:
    shutil.rmtree(data_dir, ignore_errors=True)
t.done()
