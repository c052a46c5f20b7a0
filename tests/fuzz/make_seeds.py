#!/usr/bin/python3
"""tests/fuzz/make_seeds.py - writes the seed corpora of the fuzz targets
that speak msgpack (control, events): one valid input per op or frame
shape, so that the fuzzer starts from what clients send. Run from the
repository root; it rewrites only the seed-*.bin files it makes, never the
crash reproducers. Needs python3-msgpack."""
import os
import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\xc1\xc1"


def write(target, name, data):
    d = os.path.join(HERE, target, "corpus")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name + ".bin"), "wb") as f:
        f.write(data)


def req(how, fields, env=()):
    """One control request: the framing byte, routing frames, the body."""
    head = bytes([how | len(env)])
    for e in env:
        head += bytes([len(e)]) + e
    return head + msgpack.packb(fields, use_bin_type=True)


def control():
    S = {"session": "s1"}
    ops = {
        "ping": {}, "health": {}, "state": {}, "channels": {},
        "publish": {"topic": "a.b", "payload": b"\x81\xa1k\x01", "source": "s1"},
        "publish-nil": {"topic": "work.x.y", "payload": None},
        "history": {"pattern": "a.>", "limit": 5, "order": "desc"},
        "history-range": {"patterns": ["a.*", "session.>"], "since_seq": 1, "until_seq": 100,
                          "since_time": 0, "cursor": 3},
        "session.register": {"session": "s1", "name": "fuzz", "capabilities": ["x", "y"],
                             "metadata": {"host": "h"}, "heartbeat_ms": 1000, "ttl_ms": 60000},
        "session.heartbeat": {"sessions": ["s1", "s2"]},
        "session.status": dict(S, state="busy", current_work="job", text="t"),
        "session.unregister": dict(S),
        "session.cursor": dict(S, seq=7),
        "session.get": dict(S),
        "session.list": {"all": True, "window_ms": 1000},
        "session.find": {"capability": "x", "available": True},
        "work.claim": dict(S, work_id="job-1", ttl_ms=5000, description="d", metadata={"a": 1}),
        "work.renew": dict(S, work_id="job-1", token=1, ttl_ms=5000),
        "work.release": dict(S, work_id="job-1", token=1, reason="r"),
        "work.complete": dict(S, work_id="job-1", token=1, result={"ok": True}),
        "work.reopen": dict(S, work_id="job-1"),
        "work.get": {"work_id": "job-1"},
        "work.list": {"holder": "s1", "state": "claimed", "prefix": "job", "limit": 10},
    }
    for name, fields in ops.items():
        op = name.split("-")[0]
        body = dict(fields, op=op, id=1)
        write("control", "open-" + name, req(0, body))
        write("control", "tokens-" + name, req(0x80, dict(body, auth="fz-all")))
    # A session's life on one connection, with REQ framing and a string id.
    life = [dict(op="session.register", session="s2", id="a"),
            dict(op="work.claim", session="s2", work_id="w", id="b"),
            dict(op="work.complete", session="s2", work_id="w", token=1, id="c"),
            dict(op="session.unregister", session="s2", id="d")]
    write("control", "life", SEP.join(req(0, f, env=[b""]) for f in life))
    write("control", "life-tokens",
          SEP.join(req(0x80, dict(f, auth="fz-s1")) for f in life))
    write("control", "forbidden", req(0x80, dict(op="publish", topic="b.c", auth="fz-s1")))
    write("control", "many-frames", req(0, {"op": "ping"}, env=[b"a", b"b", b"c", b"d"]))
    write("control", "not-a-map", bytes([0]) + msgpack.packb([1, 2, 3]))


def events():
    """Event plane: byte 0 picks the socket (0: a publisher's frames to
    events-in; 1: a subscriber's subscribe messages to events-out); the
    frames follow, separated by C1 C1."""
    pub = [
        [b"a.b", msgpack.packb({"x": 1})],
        [b"work.claimed", b"", b"src"],
        [b"a", b"\xdf\xff\xff\xff\xff"],
        [b"session.s1.direct", b"hello", "\u00e9t\u00e9".encode()],
        [b"a..b", b"x"],
        [b"a.b"],
        [b"a.b", b"x", b"s", b"extra"],
    ]
    for i, frames in enumerate(pub):
        write("events", "pub-%d" % i, bytes([0]) + SEP.join(frames))
    subs = [[b"\x01a.", b"\x01", b"\x00a."], [b"\x01session.", b"\x02junk"], [b"\x01" + b"x" * 300]]
    for i, frames in enumerate(subs):
        write("events", "sub-%d" % i, bytes([1]) + SEP.join(frames))


if __name__ == "__main__":
    control()
    events()
