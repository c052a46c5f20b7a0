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


def gateway():
    """Gateway: byte 0 bit 0 clear: a WebSocket message (JSON text); set:
    HTTP, bits 2-3 the method (0 GET, 1 POST, 2 other), then path, query,
    body, Mcp-Session-Id ("@": the target's own MCP session),
    MCP-Protocol-Version separated by C1 C1. Bit 1: the client with the
    token for w1 only."""
    import json
    ws = [
        {"action": "ping", "id": 1},
        {"action": "subscribe", "topics": ["a.>", "work.*"], "id": "s"},
        {"action": "unsubscribe", "topics": "a.>", "id": 2},
        {"action": "publish", "event_type": "a.b", "payload": {"x": [1, 2.5, None, "t"]}, "id": 3},
        {"action": "publish", "event_type": "message.direct", "to": "w1", "payload": {"m": "hi"}},
        {"action": "publish", "event_type": "a.b", "payload": {"$base64": "AQID"}, "id": 4},
        {"action": "claim", "work_id": "job-1", "ttl_ms": 5000, "description": "d", "id": 5},
        {"action": "renew", "work_id": "job-1", "token": 1, "id": 6},
        {"action": "release", "work_id": "job-1", "token": 1, "reason": "r", "id": 7},
        {"action": "complete", "work_id": "job-1", "token": 1, "result": {"ok": True}, "id": 8},
        {"action": "history", "topics": ["a.>"], "since_seq": 0, "limit": 5, "order": "desc",
         "id": 9},
        {"action": "resume", "since": 1, "id": 10},
        {"action": "status", "state": "busy", "current_work": "job-1", "text": "t", "id": 11},
        {"action": "sessions", "capability": "x", "available": True, "id": 12},
        {"action": "claims", "holder": "fz-a", "state": "claimed", "prefix": "job", "limit": 5,
         "id": 13},
    ]
    for i, m in enumerate(ws):
        text = json.dumps(m).encode()
        write("gateway", "ws-%02d" % i, bytes([0]) + text)
        write("gateway", "ws-one-%02d" % i, bytes([2]) + text)
    write("gateway", "ws-deep", bytes([0]) + json.dumps(
        {"action": "publish", "event_type": "a.b", "id": 14,
         "payload": json.loads("[" * 40 + "]" * 40)}).encode())

    def http(method, path, query=b"", body=b"", mcp=b"", who=0, version=None):
        parts = [path, query, body, mcp] + ([version] if version is not None else [])
        return bytes([1 | who << 1 | method << 2]) + SEP.join(parts)
    J = lambda o: json.dumps(o).encode()
    reqs = {
        "health": http(0, b"/health"), "capabilities": http(0, b"/capabilities"),
        "state": http(0, b"/state"), "dependencies": http(0, b"/dependencies"),
        "message": http(1, b"/message", body=J({"from": "fz-a", "to": "w1", "subject": "s",
                                                 "message": "m", "priority": "high"})),
        "active": http(0, b"/sessions/active"),
        "caps": http(0, b"/sessions/capabilities", b"skill=python&available=true"),
        "session": http(0, b"/sessions/fz-a"),
        "events": http(1, b"/events", body=J({"event_type": "a.b", "payload": {"k": 1},
                                              "session_id": "fz-a"})),
        "history": http(0, b"/events/history", b"limit=5&event_type=a.>&since=2026-01-01T00:00:00Z"),
        "history-seq": http(0, b"/events/history", b"since=3&cursor=2"),
        "recent": http(0, b"/events/recent", b"count=3"),
        "stats": http(0, b"/events/stats"),
        "claim": http(1, b"/work/claim", body=J({"session_id": "w1", "work_id": "j",
                                                 "work_description": "d", "ttl_ms": 4000}), who=1),
        "release": http(1, b"/work/release", body=J({"session_id": "w1", "work_id": "j",
                                                     "token": 1, "reason": "r"}), who=1),
        "complete": http(1, b"/work/complete", body=J({"session_id": "w1", "work_id": "j",
                                                       "token": 1, "result": 1}), who=1),
        "claimed": http(0, b"/work/claimed", b"holder=w1"),
        "metrics": http(0, b"/metrics"),
        "mcp-init": http(1, b"/mcp", b"session=fz-a", J({"jsonrpc": "2.0", "id": 1,
                         "method": "initialize", "params": {"protocolVersion": "2025-03-26",
                         "capabilities": {}, "clientInfo": {"name": "f", "version": "1"}}})),
        "mcp-list": http(1, b"/mcp", body=J({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
                         mcp=b"0000"),
        "put": http(2, b"/events"), "static": http(0, b"/index.html"),
        "notfound": http(0, b"/nope"),
    }
    def tool(name, args, who=0, version=b"2025-06-18"):
        return http(1, b"/mcp", body=J({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                        "params": {"name": name, "arguments": args}}),
                    mcp=b"@", who=who, version=version)
    reqs.update({
        "mcp-version": http(1, b"/mcp", body=J({"jsonrpc": "2.0", "id": 2,
                                                "method": "tools/list"}),
                            mcp=b"@", version=b"1999-01-01"),
        "mcp-cancel": http(1, b"/mcp", body=J({"jsonrpc": "2.0",
                                               "method": "notifications/cancelled",
                                               "params": {"requestId": 3}}), mcp=b"@"),
        "mcp-register": tool("register_session", {"name": "m", "capabilities": ["c"]}),
        "mcp-sessions": tool("list_sessions", {"capability": "c"}),
        "mcp-channels": tool("list_channels", {}),
        "mcp-publish": tool("publish_event", {"event_type": "a.m", "payload": {"k": [1]}}),
        "mcp-events": tool("get_events", {"patterns": ["a.>"], "resume": True, "limit": 3}),
        "mcp-notify": tool("notify", {"title": "t", "message": "m", "level": "warning"}),
        "mcp-claim": tool("claim_work", {"work_id": "mj", "ttl_ms": 3000}),
        "mcp-renew": tool("renew_work", {"work_id": "mj", "token": 1}),
        "mcp-release": tool("release_work", {"work_id": "mj", "token": 1, "reason": "r"}),
        "mcp-complete": tool("complete_work", {"work_id": "mj", "token": 1, "result": 2}),
        "mcp-claims": tool("list_claims", {"mine": True, "state": "claimed"}),
        "mcp-message": tool("send_message", {"to": "w1", "message": "m", "subject": "s"}),
        "mcp-wait": tool("wait_for_events", {"patterns": ["a.m", "message.direct"],
                                             "timeout_seconds": 1}),
        "mcp-wait-bad": tool("wait_for_events", {"patterns": [1]}),
        "mcp-unregister": tool("unregister_session", {}),
        "mcp-other-token": tool("list_sessions", {}, who=1),
    })
    for name, data in reqs.items():
        write("gateway", "http-" + name, data)


def sdk():
    """SDK decoders: byte 0 (mod 5) picks reply, history page, event frame,
    payload as JSON, in-place reader (fuzz_sdk.c)."""
    import struct
    P = lambda o: msgpack.packb(o, use_bin_type=True)
    replies = [
        {"id": 1, "ok": True, "seq": 42, "store_id": "62c9bb958188ac94"},
        {"id": 2, "ok": False, "error": "not_found", "message": "no such session"},
        {"id": 3, "ok": True, "session": "s1", "secret": "00" * 16, "token": 7,
         "holder": "s1", "state": "claimed", "count": 2, "last_seq": 9, "first_seq": 1},
        {"id": "x", "ok": "yes"},
    ]
    for i, r in enumerate(replies):
        write("sdk", "reply-%d" % i, bytes([0]) + P(r))

    def rec(seq, topic, payload, source="src"):
        return {"seq": seq, "ts": 1764900000000000 + seq, "topic": topic, "source": source,
                "payload": payload}
    page = {"id": 5, "ok": True, "first_seq": 1, "last_seq": 3, "store_id": "ab" * 8,
            "next_cursor": 4,
            "events": [rec(1, "a.b", P({"x": 1})), rec(2, "session.w1.direct", P({"to": "w1"})),
                       rec(3, "a.c", b"\xdf\xff\xff\xff\xff", "")]}
    write("sdk", "page", bytes([1]) + P(page))
    write("sdk", "page-empty", bytes([1]) + P({"id": 6, "ok": True, "events": [],
                                               "first_seq": 0, "last_seq": 0}))
    write("sdk", "page-error", bytes([1]) + P({"id": 7, "ok": False, "error": "bad_request",
                                               "message": "limit"}))

    def frame(topic, seq, source, payload):
        return (topic.encode() + b"\0" + bytes([2]) + struct.pack(">QQ", seq, 1764900000000000)
                + bytes([len(source)]) + source.encode() + payload)
    write("sdk", "frame", bytes([2]) + frame("a.b", 1, "s1", P({"k": [1, 2.5, None, True]})))
    write("sdk", "frame-empty", bytes([2]) + frame("x", 2, "", b""))
    write("sdk", "frame-raw", bytes([2]) + frame("a.raw", 3, "pub", b"\x01\x02\xff"))
    payloads = [P({"a": 1, "b": b"\x00\x01", "c": [1.5, -3, None, "s"]}), P([[[[1]]]]),
                P(2 ** 64 - 1), P(-2 ** 63), P(1.0), P({"$base64": "AQ=="}), b"\xc1",
                b"\xdf\xff\xff\xff\xff", b"\x92\x01", msgpack.packb(msgpack.ExtType(5, b"xy"))]
    for i, pl in enumerate(payloads):
        write("sdk", "json-%d" % i, bytes([3]) + pl)
        write("sdk", "reader-%d" % i, bytes([4]) + pl)


if __name__ == "__main__":
    control()
    events()
    gateway()
    sdk()
