"""Nothing handed out twice across a failover under replication = async
(issue 19), when the standby stalls.

With async replication events go out before the standby has them, so a
promoted standby continues above the old primary's last seq
*reservation* (seqs are reserved in blocks of 2^20, a new block once half
of one is used). Two things keep that safe, checked here with real
nexusd processes:

1. The turn that reserves a new block waits for the sync standby even
   under async: with the standby stopped (SIGSTOP), events above the
   reservation do not reach a subscriber until the primary lets the
   standby go (replication_timeout).
2. A standby that did not run for a while may have been let go without
   hearing it: after SIGCONT it no longer counts itself in sync, so
   `promote` without force refuses it (the primary may have run past its
   last reservation), and with force it continues above every seq the
   subscriber saw.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, EventReader, publisher,  # noqa: E402
                     settle_subscription, subscriber, wait_until)

t = Checks()
HALF_BLOCK = 1 << 19  # broker/nx_broker.c: S_SEQ_BLOCK / 2
TIMEOUT = 4.0


def request(broker, req, timeout=10):
    with Client(broker) as c:
        return c.request(req, timeout=timeout)


def last_seq(broker):
    return request(broker, {"op": "health"})["last_seq"]


def replication(broker):
    return request(broker, {"op": "state"}).get("replication") or {}


def log_of(broker):
    try:
        with open(broker.log_path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def publish_raw(pub, n):
    for _ in range(n):
        pub.send_multipart([b"res.bulk", b"x"])


secs = "%ds" % TIMEOUT
a = Broker(extra=["--name", "a", "--replication", "async", "--replication-timeout", secs])
a.start()
b = Broker(extra=["--name", "b", "--replica-of", a.control, "--replication-timeout", secs])
b.start()
reader = None
stopped = False
try:
    t.check(wait_until(lambda: replication(a).get("sync_standby") == "b", timeout=30),
            "b becomes the standby the primary waits for")
    sub = subscriber(a, "res.")
    settle_subscription(a, sub, topic="res.settle")
    reader = EventReader(sub)
    reader.start()
    pub = publisher(a)

    # Up to just below the next reservation; the standby has all of it.
    before = HALF_BLOCK - 2000
    publish_raw(pub, before - last_seq(a))
    t.check(wait_until(lambda: last_seq(a) == before, timeout=60, step=0.2),
            "the primary took %d events (%d)" % (before, last_seq(a)))
    t.check(wait_until(lambda: last_seq(b) == before, timeout=60, step=0.2),
            "the standby has them (%d)" % last_seq(b))
    t.check(wait_until(lambda: reader.max_seq == before, timeout=30, step=0.1),
            "the subscriber got up to %d (%d)" % (before, reader.max_seq))
    t.check(replication(a).get("sync_standby") == "b", "b is still the sync standby")

    # The standby stops; events go on past the reservation point.
    os.kill(b.proc.pid, signal.SIGSTOP)
    stopped = True
    stop_at = time.time()
    # (Few enough that, released at once, they fit the subscriber's queue
    # at the broker: a slow consumer's overflow is dropped, by design.)
    publish_raw(pub, 6000)
    total = before + 6000
    time.sleep(1.5)
    held = reader.max_seq
    t.check(time.time() - stop_at < TIMEOUT - 1,
            "still inside replication_timeout (%.1f s)" % (time.time() - stop_at))
    t.check(before <= held <= HALF_BLOCK + 1000 and held < total,
            "events above the new reservation wait for the stopped standby: the subscriber "
            "stopped at %d (reservation point %d, published %d)" % (held, HALF_BLOCK, total))

    # The primary lets the standby go after the timeout; then they flow.
    t.check(wait_until(lambda: reader.max_seq == total, timeout=30, step=0.1),
            "after replication_timeout the primary goes on without it: %d of %d"
            % (reader.max_seq, total))
    t.check(time.time() - stop_at >= TIMEOUT - 0.5,
            "not before the timeout (%.1f s)" % (time.time() - stop_at))
    t.check("left a change unacknowledged" in log_of(a), "the primary logged letting b go")
    seen = reader.max_seq

    # The primary dies; the standby runs again, not knowing it was let go.
    a.kill()
    os.kill(b.proc.pid, signal.SIGCONT)
    stopped = False
    r = None
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            r = request(b, {"op": "promote"})
            break
        except TimeoutError:
            time.sleep(0.2)
    t.check(r is not None and r.get("error") == "conflict" and "not in sync" in
            r.get("message", ""), "promote without force refuses the standby that stalled: %r"
            % (r,))
    t.check("no longer counts itself in sync" in log_of(b),
            "the standby logged that it lost sight of its primary")
    r = request(b, {"op": "promote", "force": True}, timeout=30)
    t.check(r.get("ok"), "promote with force: %r" % (r,))
    r = request(b, {"op": "publish", "topic": "res.after", "payload": b"new"}, timeout=10)
    t.check(r.get("ok") and r["seq"] > seen,
            "the promoted standby's next seq is above every seq the subscriber saw: %r > %d"
            % (r.get("seq"), seen))
finally:
    if reader:
        reader.stop()
    if stopped and b.proc:
        os.kill(b.proc.pid, signal.SIGCONT)
    for x in (a, b):
        x.cleanup()

t.done()
