"""Clean restart (SIGTERM) and retention.

1. SIGTERM exits 0 after logging the last seq; the history survives a
   restart with the same seqs, timestamps, topics, sources and bytes; the
   seq continues at last_seq + 1 (acknowledged publish and raw PUB alike);
   raw PUB/SUB works after the restart; `state` has every documented field
   with values that match what was done in this run.
2. Retention by count: --retain-events 100 with --trim-batch 1000 keeps
   exactly the newest 100 of 500 events after the commit (first_seq moves,
   last_seq does not); restarted with --retain-events 10 --trim-batch 30,
   one commit trims at most 30 and housekeeping finishes the job.
3. The seq continues even when retention deleted every event
   (--retain-age 1ms, then --retain-events 1), across restarts.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (NEXUSD, Broker, Checks, Client, publisher, recv_event,  # noqa: E402
                     settle_subscription, subscriber, wait_until)

t = Checks()
T0 = time.time()


def all_history(c, **kw):
    """Every event matching kw, paginated with the cursor (bounded)."""
    events, cursor = [], None
    for _ in range(200):
        req = dict({"op": "history", "since_seq": 0, "limit": 1000}, **kw)
        if cursor is not None:
            req["cursor"] = cursor
        rep = c.request(req)
        assert rep.get("ok"), rep
        events.extend(rep["events"])
        cursor = rep["next_cursor"]
        if cursor is None:
            return events
    raise AssertionError("history pagination did not end")


def state(c):
    st = c.request({"op": "state"})
    assert st.get("ok"), st
    return st


def wait_state(c, pred, timeout):
    """Polls state until pred(state) holds; returns that state or None."""
    return wait_until(lambda: (lambda s: s if pred(s) else None)(state(c)), timeout=timeout,
                      step=0.05)


def pub_settle(b, pub, sub, topic):
    """Sends probe events on a raw PUB until sub receives one: the PUB drops
    everything until the broker's XSUB subscription reaches it. Returns the
    seq of the last probe received (the next event gets that + 1)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        pub.send_multipart([topic.encode(), b"probe"])
        if sub.poll(100):
            last = None
            while sub.poll(100):
                ev = recv_event(sub)
                if ev[0] == topic:
                    last = ev[1]
            if last is not None:
                # Probes still in flight would shift the next seq: wait for quiet.
                with Client(b) as c:
                    if state(c)["history"]["last_seq"] == last:
                        return last
    raise TimeoutError("PUB never reached the broker")


# ---- 1. clean restart ------------------------------------------------------
data_dir = tempfile.mkdtemp(prefix="nexus-restart-")
try:
    b = Broker(data_dir=data_dir, extra=["--sync", "full"])
    b.start()
    sent = []
    with Client(b) as c:
        for i in range(60):
            topic = "restart.t%d.e%d" % (i % 3, i)
            payload = os.urandom(i * 13 % 250) + bytes([i])
            rep = c.request({"op": "publish", "topic": topic, "payload": payload,
                             "source": "src-%d" % (i % 4)})
            t.check(rep.get("ok") is True, "publish %d ok" % i)
            sent.append((rep["seq"], topic, "src-%d" % (i % 4), payload))
        seqs = [s[0] for s in sent]
        t.eq(seqs, list(range(1, 61)), "fresh store: seqs 1..60")
        before = all_history(c)
        st1 = state(c)
    t.eq([(e["seq"], e["topic"], e["source"], e["payload"]) for e in before], sent,
         "history before the restart is what was published")
    t.eq((st1["history"]["first_seq"], st1["history"]["last_seq"], st1["history"]["count"]),
         (1, 60, 60), "state history before the restart")
    t.eq(st1["events_total"], 60, "events_total counts this run's events")
    t.eq(st1["sync"], "full", "state reports sync=full")

    rc = b.stop()
    t.eq(rc, 0, "SIGTERM exits 0")
    t.check("stopping: last seq 60" in b.logs(), "stop logs the last seq")

    # Same data dir, same ports.
    b.start()
    t.check("ready: last seq 60" in b.logs(), "restart logs the recovered last seq")
    with Client(b) as c:
        st2 = state(c)
        after = all_history(c)
        t.eq(after, before, "history after the restart equals before (seq, ts, topic, source, "
             "bytes)")
        t.eq((st2["history"]["first_seq"], st2["history"]["last_seq"], st2["history"]["count"]),
             (1, 60, 60), "state history after the restart")
        t.eq(st2["history"]["bytes"], st1["history"]["bytes"], "history bytes survive")
        t.eq(st2["events_total"], 0, "events_total restarts at 0 with the process")
        t.check(st2["start_time"] != st1["start_time"], "start_time is the new process's")
        t.check(0 <= st2["uptime_seconds"] < st1["uptime_seconds"] + 30
                and st2["uptime_seconds"] < 10, "uptime restarts: %r" % st2["uptime_seconds"])
        h = c.request({"op": "health"})
        t.eq(h.get("last_seq"), 60, "health last_seq after the restart")

        rep = c.request({"op": "publish", "topic": "restart.after", "payload": b"next"})
        t.eq(rep.get("seq"), 61, "acknowledged publish continues at last_seq + 1")
        t.check(rep.get("ts", 0) >= before[-1]["ts"], "ts never goes backwards over a restart")

    # Raw PUB/SUB after the restart.
    sub = subscriber(b, "restart.")
    settle_subscription(b, sub, topic="restart.settle")
    pub = publisher(b)
    last = pub_settle(b, pub, sub, "restart.probe")
    raw = [os.urandom(40) for _ in range(5)]
    for i, p in enumerate(raw):
        pub.send_multipart([b"restart.raw.%d" % i, p, b"raw-src"])
    got = [recv_event(sub) for _ in raw]
    t.eq([g[0] for g in got], ["restart.raw.%d" % i for i in range(5)], "raw topics after restart")
    t.eq([g[4] for g in got], raw, "raw payloads after restart")
    t.eq([g[1] for g in got], list(range(last + 1, last + 6)), "raw seqs continue")
    t.check(all(g[3] == "raw-src" for g in got), "raw source after restart")
    nothing_else = sub.poll(200)
    t.check(not nothing_else, "no extra events")
    with Client(b) as c:
        h = all_history(c, pattern="restart.raw.>")
        t.eq([(e["seq"], e["payload"]) for e in h], [(g[1], g[4]) for g in got],
             "raw events in the history after restart")

        # Every documented state field, with values that match this run.
        time.sleep(1.1)  # rates count complete seconds only
        st = state(c)
        for key in ("uptime_seconds", "events_total", "events_per_second_10s",
                    "events_per_second_1m", "subscribers", "history", "drops", "start_time"):
            t.check(key in st, "state has %s" % key)
        for key in ("first_seq", "last_seq", "count", "bytes", "disk_bytes"):
            t.check(isinstance(st["history"].get(key), int), "state history.%s is an int" % key)
        for key in ("invalid_topic", "oversize", "malformed", "store", "send", "slow_subscriber",
                    "total"):
            t.check(isinstance(st["drops"].get(key), int), "state drops.%s is an int" % key)
        n_run = st["history"]["last_seq"] - 60
        t.eq(st["events_total"], n_run, "events_total = events published since the restart")
        t.eq(st["history"]["count"], st["history"]["last_seq"], "nothing trimmed: count")
        t.check(st["history"]["bytes"] > sum(len(s[3]) for s in sent), "history bytes cover the "
                "payloads")
        t.check(st["history"]["disk_bytes"] >= st["history"]["bytes"] > 0,
                "disk_bytes >= bytes: %r" % st["history"])
        t.eq(st["drops"]["total"], 0, "no drops")
        t.eq(st["subscribers"], 1, "one subscriber connected")
        t.check(isinstance(st["uptime_seconds"], float) and 1.0 <= st["uptime_seconds"] < 30,
                "uptime_seconds: %r" % st["uptime_seconds"])
        t.check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", st["start_time"]),
                "start_time is ISO 8601 UTC: %r" % st["start_time"])
        t.check(abs(st["start_ts"] / 1e6 - (time.time() - st["uptime_seconds"])) < 5,
                "start_ts matches uptime")
        if st["uptime_seconds"] < 9:
            t.check(abs(st["events_per_second_10s"] * 10 - n_run) < 1e-6,
                    "10 s rate covers the run: %r * 10 != %d"
                    % (st["events_per_second_10s"], n_run))
            t.check(abs(st["events_per_second_1m"] * 60 - n_run) < 1e-6,
                    "1 min rate covers the run: %r * 60 != %d"
                    % (st["events_per_second_1m"], n_run))
        else:
            t.check(st["events_per_second_1m"] > 0, "1 min rate > 0")
    sub.close()
    pub.close()
    t.eq(b.stop(), 0, "second SIGTERM exits 0")
    b.cleanup()
finally:
    b.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)

# ---- 2. retention by count -------------------------------------------------
data_dir = tempfile.mkdtemp(prefix="nexus-retain-")
try:
    b = Broker(data_dir=data_dir, extra=["--retain-events", "100", "--trim-batch", "1000"])
    b.start()
    sub = subscriber(b, "keep.")
    settle_subscription(b, sub, topic="keep.settle")
    pub = publisher(b)
    base = pub_settle(b, pub, sub, "keep.probe")
    payloads = {}
    for i in range(500):
        p = b"%d:" % i + os.urandom(20)
        payloads[base + 1 + i] = p
        pub.send_multipart([b"keep.ev", p])
    last = base + 500
    with Client(b) as c:
        st = wait_state(c, lambda s: s["history"]["last_seq"] == last, 5)
        t.check(st, "all 500 raw events committed")
        st = state(c)
        h = st["history"]
        t.eq(h["count"], 100, "--retain-events 100: exactly 100 kept after the commit")
        t.eq((h["first_seq"], h["last_seq"]), (last - 99, last),
             "first_seq advanced, last_seq stays")
        ev = all_history(c)
        t.eq([e["seq"] for e in ev], list(range(last - 99, last + 1)), "history is the newest 100")
        t.eq([e["payload"] for e in ev], [payloads[s] for s in range(last - 99, last + 1)],
             "kept events keep their bytes")
        rep = c.request({"op": "history", "since_seq": 0, "limit": 5})
        t.eq((rep["first_seq"], rep["last_seq"]), (last - 99, last), "history reply bounds")
        t.eq(rep["events"][0]["seq"], last - 99, "since_seq 0 starts at the oldest kept")
        t.check(st["history"]["trimmed"] >= 400, "trimmed counted: %r" % st["history"]["trimmed"])
    sub.close()
    pub.close()
    t.eq(b.stop(), 0, "SIGTERM exits 0 (retention)")

    # Restart with a smaller limit and a small trim batch: a commit deletes at
    # most trim_batch events, housekeeping (once a second) continues.
    b.extra = ["--retain-events", "10", "--trim-batch", "30"]
    b.start()
    with Client(b) as c:
        st = state(c)
        n0 = st["history"]["count"]
        t.check(n0 in (100, 70, 40), "each commit (the start-up one too) trims at most "
                "trim_batch=30: %d" % n0)
        rep = c.request({"op": "publish", "topic": "keep.after", "payload": b"A"})
        t.eq(rep.get("seq"), last + 1, "seq continues after the retention restart")
        n = state(c)["history"]["count"]
        t.check(n0 + 1 - 60 <= n <= n0 + 1 and n >= 10, "one commit trims at most trim_batch=30 "
                "(a tick may have trimmed 30 more): %d -> %d" % (n0, n))
        st = wait_state(c, lambda s: s["history"]["count"] == 10, 8)
        t.check(st, "housekeeping finishes the trim to 10")
        if st:
            t.eq((st["history"]["first_seq"], st["history"]["last_seq"]), (last - 8, last + 1),
                 "after trim: the newest 10")
        ev = all_history(c)
        t.eq([e["seq"] for e in ev], list(range(last - 8, last + 2)), "history is the newest 10")
        t.eq([e["payload"] for e in ev[:-1]], [payloads[s] for s in range(last - 8, last + 1)],
             "bytes of the kept events")
        t.eq(ev[-1]["payload"], b"A", "the new event is kept")
    t.eq(b.stop(), 0, "SIGTERM exits 0 (retention 2)")
    b.cleanup()
finally:
    b.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)

# ---- 3. seq continues when retention deleted everything --------------------
data_dir = tempfile.mkdtemp(prefix="nexus-empty-")
try:
    b = Broker(data_dir=data_dir, extra=["--sync", "full", "--retain-age", "1ms"])
    b.start()
    with Client(b) as c:
        seqs = [c.request({"op": "publish", "topic": "gone.ev", "payload": b"x%d" % i})["seq"]
                for i in range(5)]
        t.eq(seqs, [1, 2, 3, 4, 5], "seqs before the age trim")
        st = wait_state(c, lambda s: s["history"]["count"] == 0, 5)
        t.check(st, "--retain-age 1ms deletes everything")
        st = state(c)
        t.eq((st["history"]["first_seq"], st["history"]["last_seq"], st["history"]["count"]),
             (0, 5, 0), "empty store keeps last_seq")
        rep = c.request({"op": "history"})
        t.eq((rep["events"], rep["first_seq"], rep["last_seq"]), ([], 0, 5), "history empty")
    t.eq(b.stop(), 0, "SIGTERM exits 0 (empty)")

    # Restart without age retention: the next seq is 6, not 1.
    b.extra = ["--sync", "full"]
    b.start()
    with Client(b) as c:
        st = state(c)
        t.eq((st["history"]["count"], st["history"]["last_seq"]), (0, 5),
             "empty store after restart remembers last_seq")
        rep = c.request({"op": "publish", "topic": "back.ev", "payload": b"six"})
        t.eq(rep.get("seq"), 6, "seq continues after everything was deleted")
        ev = all_history(c)
        t.eq([(e["seq"], e["payload"]) for e in ev], [(6, b"six")], "only the new event")
        t.eq(state(c)["history"]["first_seq"], 6, "first_seq is the new event")
    t.eq(b.stop(), 0, "SIGTERM exits 0 (after empty)")

    # --retain-events 1: only the newest survives, across a restart.
    b.extra = ["--sync", "full", "--retain-events", "1"]
    b.start()
    with Client(b) as c:
        got = [c.request({"op": "publish", "topic": "one.ev", "payload": b"%d" % i})["seq"]
               for i in range(3)]
        t.eq(got, [7, 8, 9], "seqs with --retain-events 1")
        st = state(c)["history"]
        t.eq((st["count"], st["first_seq"], st["last_seq"]), (1, 9, 9), "--retain-events 1 keeps one")
    t.eq(b.stop(), 0, "SIGTERM exits 0 (retain 1)")
    b.start()
    with Client(b) as c:
        rep = c.request({"op": "publish", "topic": "one.ev", "payload": b"last"})
        t.eq(rep.get("seq"), 10, "seq continues after restart with one event kept")
        ev = all_history(c)
        t.eq([(e["seq"], e["payload"]) for e in ev], [(10, b"last")], "only the newest kept")
    t.eq(b.stop(), 0, "SIGTERM exits 0 (final)")

    # A start that cannot bind (its control port is taken) exits 1 and
    # leaves the store as it was: the next start continues at seq 11, with
    # no 'unclean stop' skip of a block.
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", b.ports[0]))
    taken.listen(1)
    try:
        r = subprocess.run([NEXUSD, "--data-dir", data_dir,
                            "--control-endpoints", b.control,
                            "--events-in-endpoints", b.events_in,
                            "--events-out-endpoints", b.events_out],
                           capture_output=True, text=True, timeout=30)
        t.check(r.returncode == 1 and "cannot bind" in r.stderr,
                "a taken control port: exit 1, says so: %r" % r.stderr[-300:])
    finally:
        taken.close()
    b.start()
    with Client(b) as c:
        rep = c.request({"op": "publish", "topic": "one.ev", "payload": b"after"})
        t.eq(rep.get("seq"), 11, "after a start that could not bind, seqs continue")
    t.eq(b.stop(), 0, "SIGTERM exits 0 (after the failed start)")
    b.cleanup()
finally:
    b.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)

print("restart test took %.1fs" % (time.time() - T0))
t.done()
