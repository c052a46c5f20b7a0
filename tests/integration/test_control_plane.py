"""Control plane: ping, health, state, acknowledged publish, history queries,
and every kind of bad input (each gets its documented error, the connection
and the broker stay up, and nothing stored changes).
"""

import os
import sys
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, recv_event, settle_subscription, subscriber  # noqa: E402

t = Checks()


def history_all(c, **q):
    """Follows cursors to the end; returns (events, pages)."""
    out, pages, cursor = [], 0, None
    for _ in range(10000):
        req = dict(q, op="history")
        if cursor is not None:
            req["cursor"] = cursor
        rep = c.request(req)
        assert rep["ok"], rep
        out += rep["events"]
        pages += 1
        cursor = rep["next_cursor"]
        if cursor is None:
            break
    return out, pages


with Broker(extra=["--history-scan", "500", "--history-limit", "300", "--max-request", "64k",
                   "--max-payload", "32k"]) as b, \
        Client(b) as c:
    # ---- ping / health / state
    rep = c.request({"op": "ping", "id": "abc"})
    t.eq((rep["ok"], rep["id"]), (True, "abc"), "ping echoes a string id")
    rep = c.request({"op": "ping", "id": [1, {"x": 2}]})
    t.eq(rep["id"], [1, {"x": 2}], "any msgpack id is echoed")
    rep = c.request({"op": "health"})
    t.eq((rep["status"], rep["service"], rep["version"]), ("active", "nexusd", "0.1.0"), "health")
    t.check(rep["timestamp"].endswith("Z"), "health timestamp is ISO-8601 UTC")

    # ---- acknowledged publish
    seqs = []
    for i in range(30):
        topic = ["work.claimed", "work.done", "repo.nexus.build", "session.s1.direct"][i % 4]
        rep = c.request({"op": "publish", "topic": topic, "payload": b"p%d" % i, "source": "s-test"})
        t.check(rep["ok"], "publish ok: %r" % rep)
        seqs.append(rep["seq"])
    t.check(all(b2 == a + 1 for a, b2 in zip(seqs, seqs[1:])), "acked seqs consecutive")
    # A non-bin payload is stored as its msgpack encoding.
    rep = c.request({"op": "publish", "topic": "map.payload", "payload": {"a": 1, "b": [1, 2]}})
    h = c.request({"op": "history", "pattern": "map.payload"})
    t.eq(msgpack.unpackb(h["events"][0]["payload"]), {"a": 1, "b": [1, 2]},
         "map payload stored as msgpack")
    # The acked event is delivered to subscribers too, with the same seq.
    sub = subscriber(b, "acked.")
    settle_subscription(b, sub, topic="acked.settle")
    rep = c.request({"op": "publish", "topic": "acked.one", "payload": b"hello"})
    ev = recv_event(sub)
    t.eq((ev[0], ev[1], ev[4]), ("acked.one", rep["seq"], b"hello"), "acked publish delivered")

    # ---- history
    first = seqs[0]
    ev, _ = history_all(c, pattern="work.*", since_seq=first - 1)
    t.eq([e["seq"] for e in ev], [s for i, s in enumerate(seqs) if i % 4 in (0, 1)],
         "pattern work.* in seq order")
    ev, _ = history_all(c, patterns=["repo.>", "session.*.direct"], since_seq=first - 1)
    t.eq([e["seq"] for e in ev], [s for i, s in enumerate(seqs) if i % 4 in (2, 3)], "two patterns")
    ev, _ = history_all(c, pattern="broadcast", since_seq=first - 1, until_seq=first + 9)
    t.eq([e["seq"] for e in ev], seqs[:10], "broadcast + until_seq")
    rep = c.request({"op": "history", "since_seq": first - 1, "limit": 7})
    t.eq(len(rep["events"]), 7, "limit")
    t.eq(rep["next_cursor"], first + 7, "cursor after a limited page")
    rep = c.request({"op": "history", "since_seq": first - 1, "limit": 5, "order": "desc"})
    t.eq([e["seq"] for e in rep["events"]], sorted([e for e in range(rep["last_seq"] - 4,
                                                                     rep["last_seq"] + 1)],
                                                  reverse=True), "desc from the newest")
    ev, pages = history_all(c, since_seq=first - 1, limit=4, order="desc", pattern="work.done")
    t.eq([e["seq"] for e in ev], sorted([s for i, s in enumerate(seqs) if i % 4 == 1],
                                        reverse=True), "desc paginated by pattern")
    t.check(pages >= 2, "desc paginated in several pages")
    # since_time / until_time
    mid = c.request({"op": "history", "since_seq": seqs[14] - 1, "limit": 1})["events"][0]
    ev, _ = history_all(c, since_time=mid["ts"], pattern="work.>")
    t.check(all(e["ts"] >= mid["ts"] for e in ev) and ev[0]["seq"] >= seqs[14] - 1,
            "since_time")
    ev, _ = history_all(c, until_time=mid["ts"], since_seq=first - 1)
    t.check(ev and all(e["ts"] <= mid["ts"] for e in ev) and ev[-1]["seq"] >= seqs[14],
            "until_time")
    # Scan budget: a rare pattern over more events than history_scan returns a
    # cursor instead of scanning everything in one go.
    for i in range(1200):
        c.sock.send(msgpack.packb({"op": "publish", "id": 10000 + i, "topic": "bulk.x",
                                   "payload": b"b"}))
    bulk = sorted(c.recv()["seq"] for _ in range(1200))
    rep = c.request({"op": "history", "pattern": "nothing.here", "since_seq": 0})
    t.eq((rep["events"], rep["scanned"]), ([], 500), "scan budget stops a page")
    t.check(rep["next_cursor"] is not None, "scan budget gives a cursor")
    ev, pages = history_all(c, pattern="nothing.here")
    t.check(ev == [] and pages >= 3, "rare pattern walks to the end by cursor (%d pages)" % pages)
    ev, _ = history_all(c, pattern="bulk.x", limit=1000)
    t.eq(len(ev), 1200, "bulk history complete")
    # A limit above history_limit (300 here) is served in pages of 300:
    # a client that follows next_cursor gets everything, none fails.
    rep = c.request({"op": "history", "since_seq": bulk[0] - 1, "limit": 1000})
    t.eq([e["seq"] for e in rep["events"]], bulk[:300],
         "limit above history_limit: a page of history_limit")
    t.eq(rep["next_cursor"], bulk[300], "and a cursor to the rest")
    ev, pages = history_all(c, since_seq=bulk[0] - 1, until_seq=bulk[-1], limit=1000000)
    t.eq(([e["seq"] for e in ev], pages), (bulk, 4),
         "limit above history_limit: every event once, in pages of history_limit")
    # "*" is one token: it is not "every event" (">" and "broadcast" are).
    c.request({"op": "publish", "topic": "single", "payload": b"1"})
    c.request({"op": "publish", "topic": "two.tokens", "payload": b"2"})
    ev, _ = history_all(c, pattern="*", since_seq=first - 1)
    t.check(len(ev) > 0 and all("." not in e["topic"] for e in ev),
            "pattern * gives one-token topics only: %r" % sorted({e["topic"] for e in ev})[:5])
    ev, _ = history_all(c, patterns=["*", "two.*"], since_seq=first - 1)
    t.check({"single", "two.tokens"} <= {e["topic"] for e in ev}, "* with another pattern")
    rep = c.request({"op": "history", "since_seq": 2**64 - 1})
    t.check(rep["ok"] and rep["events"] == [], "since_seq 2^64-1: nothing after it (no wrap)")

    before = c.request({"op": "state"})["history"]

    # ---- bad input: every one gets a precise error, nothing changes
    def expect(req_bytes, code, what, contains=None):
        c.sock.send(req_bytes)
        rep = c.recv()
        ok = t.eq((rep.get("ok"), rep.get("error")), (False, code), what)
        if ok and contains:
            t.check(contains in rep.get("message", ""), "%s: message %r mentions %r"
                    % (what, rep.get("message"), contains))
        return rep

    P = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
    expect(b"\xc1", "bad_msgpack", "invalid msgpack byte")
    expect(b"\x82\xa2op", "bad_msgpack", "truncated msgpack", "truncated")
    expect(P({"op": "ping"}) + b"\x00", "bad_msgpack", "trailing bytes", "trailing")
    expect(P([1, 2, 3]), "bad_msgpack", "array instead of map", "map")
    expect(P("ping"), "bad_msgpack", "string instead of map")
    expect(b"\xdd\xff\xff\xff\xff", "bad_msgpack", "huge array header")
    expect(b"\xdf\xff\xff\xff\xff", "bad_msgpack", "huge map header")
    expect(b"\x91" * 200 + b"\x00", "bad_msgpack", "deep nesting")
    expect(P({"id": 1}), "bad_request", "missing op", "op")
    expect(P({"op": 5, "id": 1}), "bad_request", "op not a string", "op")
    rep = expect(P({"op": "frobnicate", "id": 7}), "unknown_op", "unknown op", "frobnicate")
    t.eq(rep.get("id"), 7, "error reply echoes id")
    expect(P({"op": "publish", "id": 1}), "bad_request", "publish without topic", "topic")
    expect(P({"op": "publish", "topic": 3}), "bad_request", "topic not a string", "topic")
    expect(P({"op": "publish", "topic": "a b"}), "bad_topic", "topic with a space")
    expect(P({"op": "publish", "topic": "a.*"}), "bad_topic", "wildcard in a topic")
    expect(P({"op": "publish", "topic": ""}), "bad_topic", "empty topic")
    expect(P({"op": "publish", "topic": "x" * 300}), "bad_topic", "topic too long")
    expect(P({"op": "publish", "topic": "ok.topic", "payload": b"x" * 40000}), "too_large",
           "payload over max_payload", "max_payload")
    expect(P({"op": "publish", "topic": "ok.topic", "source": 1}), "bad_request",
           "source not a string", "source")
    expect(P({"op": "publish", "topic": "ok.topic", "source": "s" * 200}), "bad_request",
           "source too long")
    expect(P({"op": "ping", "pad": b"x" * 70000}), "too_large", "request over max_request",
           "max_request")
    expect(P({"op": "history", "pattern": "a..b"}), "bad_pattern", "bad pattern", "a..b")
    expect(P({"op": "history", "pattern": "a.>.b"}), "bad_pattern", "> not last")
    expect(P({"op": "history", "patterns": ["ok", 5]}), "bad_request", "pattern not string")
    expect(P({"op": "history", "patterns": "work.*"}), "bad_request", "patterns not array")
    expect(P({"op": "history", "limit": 0}), "bad_request", "limit 0", "limit")
    rep = c.request({"op": "history", "since_seq": 0, "limit": 2**64 - 1})
    t.check(rep["ok"] and len(rep["events"]) == 300, "limit 2^64-1: a page of history_limit")
    expect(P({"op": "history", "limit": -1}), "bad_request", "negative limit", "limit")
    expect(P({"op": "history", "since_seq": "x"}), "bad_request", "since_seq not int")
    expect(P({"op": "history", "order": "sideways"}), "bad_request", "bad order", "order")
    expect(P({"op": "history", "patterns": ["a"] * 65}), "bad_request", "too many patterns")
    expect(P({"op": "history", "patterns": []}), "bad_request", "empty patterns", "patterns")
    # A str that is not UTF-8 is refused, so that no reply ever carries one
    # (strict decoders refuse it); the reply itself decodes as UTF-8.
    R = lambda m: msgpack.packb(m, use_bin_type=False)  # noqa: E731 (bytes as str)
    expect(R({"op": b"\xff\xfe"}), "bad_request", "op not UTF-8", "UTF-8")
    expect(R({"op": "publish", "topic": "ok.topic", "source": b"\xff"}), "bad_request",
           "source not UTF-8", "UTF-8")
    expect(R({"op": "history", "patterns": ["ok", b"\xc3\x28"]}), "bad_request",
           "pattern not UTF-8", "UTF-8")
    rep = expect(P({"op": "frobnicate" + "\u00e9" * 40}), "unknown_op", "long unknown op")
    t.check(rep.get("message", "").endswith("'"), "unknown op quoted whole characters: %r"
            % rep.get("message"))

    # REQ sockets (with the empty delimiter frame) work too.
    req = zmq.Context.instance().socket(zmq.REQ)
    req.linger = 0
    req.connect(b.control)
    req.send(P({"op": "ping", "id": 1}))
    t.check(req.poll(5000) and msgpack.unpackb(req.recv())["ok"], "REQ client served")
    req.close()

    # Frames before the body are echoed in front of the reply, up to 3 of
    # them; a request with more is refused with a reply of one frame
    # (it used to vanish without a reply or a count).
    c.sock.send_multipart([b"a", b"", b"c", P({"op": "ping", "id": 31})])
    t.check(c.sock.poll(5000), "3 frames before the body: answered")
    fr = c.sock.recv_multipart()
    t.eq((fr[:3], msgpack.unpackb(fr[-1]).get("id")), ([b"a", b"", b"c"], 31),
         "3 frames before the body are echoed")
    errs = c.request({"op": "state"})["request_errors"]
    for n in (4, 1000):
        c.sock.send_multipart([b"f"] * n + [P({"op": "ping", "id": 32})])
        t.check(c.sock.poll(5000), "%d frames before the body: answered" % n)
        fr = c.sock.recv_multipart()
        rep = msgpack.unpackb(fr[-1]) if fr else {}
        t.eq((len(fr), rep.get("ok"), rep.get("error")), (1, False, "bad_request"),
             "%d frames before the body: one-frame bad_request" % n)
        t.check("more than 3 frames before the request body" in rep.get("message", ""),
                "%d frames: message says what is wrong: %r" % (n, rep.get("message")))
    t.eq(c.request({"op": "state"})["request_errors"], errs + 2, "and they count as errors")

    # Still alive, and nothing stored changed.
    after = c.request({"op": "state"})
    t.eq((after["history"]["last_seq"], after["history"]["count"]),
         (before["last_seq"], before["count"]), "bad input stored nothing")
    t.check(after["request_errors"] >= 30, "request errors counted")
    rep = c.request({"op": "publish", "topic": "still.alive", "payload": b"1"})
    t.eq(rep["seq"], before["last_seq"] + 1, "broker keeps serving after bad input")

    # A client that vanishes with requests in flight does not disturb others.
    ghost = zmq.Context.instance().socket(zmq.DEALER)
    ghost.linger = 0
    ghost.connect(b.control)
    for i in range(100):
        ghost.send(P({"op": "history", "id": i, "limit": 100}))
    ghost.close()
    time.sleep(0.2)
    t.check(c.request({"op": "ping"})["ok"], "alive after a vanished client")

    # A flood of history reads never wedges the loop: what the reader
    # thread cannot take at once is answered "busy", the rest served.
    flood = zmq.Context.instance().socket(zmq.DEALER)
    flood.linger = 0
    flood.sndhwm = 0
    flood.rcvhwm = 0
    flood.connect(b.control)
    n_flood = 20000
    for i in range(n_flood):
        flood.send(P({"op": "history", "id": i, "limit": 10}))
    t.check(c.request({"op": "ping"}, timeout=10)["ok"], "ping served during a history flood")
    answers = {"ok": 0, "busy": 0, "other": 0}
    deadline = time.time() + 30
    got = 0
    while got < n_flood and time.time() < deadline and flood.poll(2000):
        rep = msgpack.unpackb(flood.recv(), raw=False, strict_map_key=False)
        got += 1
        if rep.get("ok"):
            answers["ok"] += 1
        elif rep.get("error") == "busy":
            answers["busy"] += 1
        else:
            answers["other"] += 1
    flood.close()
    print("history flood: %d answered: %s" % (got, answers))
    t.check(answers["other"] == 0 and answers["ok"] > 0, "flood answers: %s" % answers)
    t.check(got > n_flood // 2, "most of the flood answered (%d of %d; the ROUTER may drop "
            "replies to a client that does not read)" % (got, n_flood))

    st = c.request({"op": "state"})
    for k in ("uptime_seconds", "events_total", "events_per_second_10s", "events_per_second_1m",
              "subscribers", "start_time", "history", "drops", "requests"):
        t.check(k in st, "state has %s" % k)
    sub.close()

# A history page is bounded in bytes too (history_bytes): 10 events of 20 KiB
# with a 64 KiB budget come back 4 to a page (the one that crosses the budget
# is included), every one once and in order; an event larger than the budget
# comes alone.
with Broker(extra=["--history-bytes", "64k"]) as b, Client(b) as c:
    blob = b"x" * (20 << 10)
    seqs = []
    for i in range(10):
        rep = c.request({"op": "publish", "topic": "big.page", "payload": blob + b"%d" % i})
        t.check(rep.get("ok"), "publish big event %d: %r" % (i, rep))
        seqs.append(rep.get("seq"))
    rep = c.request({"op": "history", "pattern": "big.>", "limit": 10})
    t.eq(len(rep.get("events", [])), 4, "a 64 KiB page holds 4 events of 20 KiB")
    t.check(rep.get("next_cursor") is not None, "and says where the next page starts")
    evs, pages = history_all(c, pattern="big.>", limit=10)
    t.eq([e["seq"] for e in evs], seqs, "following the cursor returns every event once, in order")
    t.eq([bytes(e["payload"])[-1:] for e in evs], [b"%d" % i for i in range(10)],
         "with its own payload")
    t.eq(pages, 3, "in pages of 4, 4 and 2")
    rep = c.request({"op": "publish", "topic": "huge.one", "payload": b"y" * (100 << 10)})
    t.check(rep.get("ok"), "publish an event larger than the page budget")
    rep = c.request({"op": "history", "pattern": ">", "limit": 100, "since_seq": seqs[-1]})
    t.eq(len(rep.get("events", [])), 1, "an event over the budget comes alone")
    t.eq(len(bytes(rep["events"][0]["payload"])) if rep.get("events") else 0, 100 << 10,
         "and whole")

t.done()
