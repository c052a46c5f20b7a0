"""Event plane: raw ZeroMQ PUB -> nexusd -> raw SUB with patterns.

Checks the stamp (seq strictly increasing, timestamp, source), that payload
bytes arrive untouched and equal the history's, that wildcard filtering
works with the prefix + match scheme, and that bad events (invalid topic,
oversized payload, wrong frame count) are dropped, counted, and do not
disturb good ones.
"""

import os
import shutil
import sys
import tempfile
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, drain, free_port, publisher,  # noqa: E402
                     recv_event, settle_subscription, subscriber)

t = Checks()

with Broker(extra=["--max-payload", "4k"]) as b:
    sub_all = subscriber(b, "")
    sub_work = subscriber(b, "work.")
    settle_subscription(b, sub_all)
    settle_subscription(b, sub_work, topic="work.settle")
    drain(sub_all)

    pub = publisher(b)
    time.sleep(0.3)  # PUB connects asynchronously; events sent before are lost by design

    payloads = [os.urandom(i * 37 % 300) for i in range(50)]
    for i, p in enumerate(payloads):
        topic = "work.claimed" if i % 2 else "repo.nexus.build"
        pub.send_multipart([topic.encode(), p, b"pub-session-1"])

    got = []
    for _ in payloads:
        got.append(recv_event(sub_all))
    t.eq([g[4] for g in got], payloads, "payload bytes arrive untouched, in order")
    seqs = [g[1] for g in got]
    t.check(all(b2 == a + 1 for a, b2 in zip(seqs, seqs[1:])), "seqs consecutive: %r" % seqs[:5])
    t.check(all(g[3] == "pub-session-1" for g in got), "claimed source stamped")
    now_us = time.time() * 1e6
    t.check(all(abs(g[2] - now_us) < 60e6 for g in got), "timestamps are wall-clock us")
    ts = [g[2] for g in got]
    t.check(ts == sorted(ts), "timestamps never go backwards")

    # sub_work filtered on prefix "work." gets only work events
    work = []
    for _ in range(25):
        work.append(recv_event(sub_work))
    t.check(all(w[0] == "work.claimed" for w in work), "prefix subscription filters")
    t.check(not sub_work.poll(200), "no other events for work.")

    # The history holds exactly the bytes subscribers received.
    with Client(b) as c:
        rep = c.request({"op": "history", "since_seq": seqs[0] - 1, "limit": 50})
        t.check(rep["ok"], "history ok")
        hist = rep["events"]
        t.eq([e["seq"] for e in hist], seqs, "history seqs equal delivered seqs")
        t.eq([e["payload"] for e in hist], payloads, "history bytes equal delivered bytes")
        t.eq([e["ts"] for e in hist], ts, "history timestamps equal stamps")
        t.eq(hist[0]["source"], "pub-session-1", "history source")

    # Patterns on raw SUB sockets, as protocol.md 2.3 says a client does
    # it: subscribe to the pattern's literal prefix, match the rest itself.
    def match(pattern, topic):
        pt, tt = pattern.split("."), topic.split(".")
        for i, p_ in enumerate(pt):
            if p_ == ">":
                return len(tt) > i
            if i >= len(tt) or (p_ != "*" and p_ != tt[i]):
                return False
        return len(pt) == len(tt)

    cases = {"work.*": "work.", "repo.nexus.>": "repo.nexus.", "*.x": ""}
    subs = {pat: subscriber(b, prefix) for pat, prefix in cases.items()}
    for pat, sub in subs.items():
        settle_subscription(b, sub, topic=cases[pat] + "settle" if cases[pat] else "settle.x")
        drain(sub)
    topics = ["work.claimed", "work.a.b", "workx.y", "repo.nexus.build", "repo.nexus.a.b",
              "repo.nexusx", "a.x", "b.x", "a.b.x", "x"]
    for tp in topics:
        pub.send_multipart([tp.encode(), b"p"])
    for pat, sub in subs.items():
        seen = []
        for _ in range(100):
            try:
                ev = recv_event(sub, timeout=0.5)
            except TimeoutError:
                break
            seen.append(ev[0])
        t.check(all(tp.startswith(cases[pat]) for tp in seen),
                "%s: the SUB gets only its prefix %r: %r" % (pat, cases[pat], seen))
        t.eq([tp for tp in seen if match(pat, tp)], [tp for tp in topics if match(pat, tp)],
             "%s: prefix plus client-side match" % pat)
        sub.close()
    drain(sub_all)
    drain(sub_work)

    # Two frames (no source) are fine too; the source is then empty.
    pub.send_multipart([b"plain.event", b"x"])
    ev = recv_event(sub_all)
    t.eq((ev[0], ev[3], ev[4]), ("plain.event", "", b"x"), "two-frame event")
    plain_seq = ev[1]

    # Bad events: invalid topics, oversized payload, one frame, four frames.
    bad = [
        [b"bad topic", b"x"],
        [b"work..x", b"x"],
        [b"work.*", b"x"],
        [b"", b"x"],
        [b"\xff\xfe", b"x"],
        [b"a" * 256, b"x"],
        [b"big.payload", b"x" * 5000],
        [b"only.topic"],
        [b"four.frames", b"x", b"src", b"extra"],
        [b"long.source", b"x", b"s" * 129],
        [b"bad.source", b"x", b"\xff\xfe"],
    ]
    for frames in bad:
        pub.send_multipart(frames)
    pub.send_multipart([b"after.bad", b"still-alive"])
    ev = recv_event(sub_all)
    t.eq((ev[0], ev[4]), ("after.bad", b"still-alive"), "good event after bad ones")
    t.eq(ev[1], plain_seq + 1, "bad events consume no seq")

    with Client(b) as c:
        st = c.request({"op": "state"})
        d = st["drops"]
        t.eq(d["invalid_topic"], 6, "invalid topics counted")
        t.eq(d["oversize"], 1, "oversize counted")
        t.eq(d["malformed"], 4, "malformed counted (a source that is not UTF-8 too)")
        t.eq(d["total"], 11, "total drops")
        t.check(st["subscribers"] >= 2, "subscribers counted: %r" % st["subscribers"])
        t.check(st["publishers"] >= 1, "publishers counted")
        t.check(st["events_total"] >= 52, "events_total")
        h = c.request({"op": "history", "pattern": "big.>"})
        t.eq(h["events"], [], "oversize event not stored")
    # The drop summary is logged (once a second at most).
    deadline = time.time() + 3
    while time.time() < deadline and "dropped" not in b.logs():
        time.sleep(0.1)
    t.check("dropped 11 events" in b.logs() or "dropped" in b.logs(), "drops logged")
    t.check(b.logs().count("dropped") <= 3, "drop log rate-limited")
    sub_all.close()
    sub_work.close()
    pub.close()
    rc = b.stop()
    t.eq(rc, 0, "SIGTERM exits 0")

# Several endpoints per socket, tcp and ipc: the same broker serves both.
ipc_dir = tempfile.mkdtemp(prefix="nexus-ipc-")
try:
    ctl = "ipc://%s/ctl" % ipc_dir
    ein = "ipc://%s/in" % ipc_dir
    eout = "ipc://%s/out" % ipc_dir
    b = Broker()
    b.ports = (free_port(), free_port(), free_port())
    b.extra = ["--control-endpoints", "%s,%s" % (b.control, ctl),
               "--events-in-endpoints", "%s,%s" % (b.events_in, ein),
               "--events-out-endpoints", "%s,%s" % (b.events_out, eout)]
    with b:
        ctx = zmq.Context.instance()
        sub_ipc = ctx.socket(zmq.SUB)
        sub_ipc.linger = 0
        sub_ipc.setsockopt(zmq.SUBSCRIBE, b"")
        sub_ipc.connect(eout)
        sub_tcp = subscriber(b, "")
        with Client(b, endpoint=ctl) as c:
            t.check(c.request({"op": "ping"})["ok"], "control plane over ipc")
        settle_subscription(b, sub_ipc)
        settle_subscription(b, sub_tcp)
        drain(sub_ipc)
        drain(sub_tcp)
        pub_ipc = ctx.socket(zmq.PUB)
        pub_ipc.linger = 1000
        pub_ipc.connect(ein)
        time.sleep(0.3)
        pub_ipc.send_multipart([b"over.ipc", b"i"])
        ev_ipc = recv_event(sub_ipc)
        ev_tcp = recv_event(sub_tcp)
        t.eq((ev_ipc[0], ev_ipc[4]), ("over.ipc", b"i"), "ipc publisher -> ipc subscriber")
        t.eq((ev_tcp[0], ev_tcp[1]), ("over.ipc", ev_ipc[1]), "ipc publisher -> tcp subscriber")
        for s in (sub_ipc, sub_tcp, pub_ipc):
            s.close()
finally:
    shutil.rmtree(ipc_dir, ignore_errors=True)

t.done()
