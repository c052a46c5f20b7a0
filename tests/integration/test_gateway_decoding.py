#!/usr/bin/env python3
"""The gateway's decoders against hostile bytes (issue 18, items 6 and 7),
with the real broker and gateway and a WebSocket client written on a raw
socket (so it can send what no WebSocket library sends):

1. an event whose payload is `df ff ff ff ff` (a map32 declaring 2^32-1
   entries in 5 bytes), published as raw bytes, also to a direct
   message topic (whose payload the gateway decodes to find "to"): the
   gateway shows it as {"$base64": ...} live, in the welcome, in history
   and after a restart that reloads it from history (it used to ask
   msgpack-c for 256 GiB and abort at every start);
2. JSON nested 32 levels comes back exactly as sent; 33 is refused
   with bad_request and the action's id (it used to be stored and come
   back as {"$base64": ...}, against docs/gateway.md);
3. RFC 6455: a client frame without its mask closes the connection with
   1002 and its action is not done (alone, after masked frames in the
   same read, a ping); an upgrade with Sec-WebSocket-Version: 99 is
   refused with 426 and the version spoken (13), 13 is accepted.
"""

import base64
import json
import os
import socket
import struct
import sys
import time

import msgpack
from harness import Broker, Checks, Client, Gateway, free_ports

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class WS:
    """A WebSocket client on a raw socket."""

    def __init__(self, port, path, version="13"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: %s\r\n\r\n" % (path, KEY, version)).encode())
        self.buf = b""
        self.kept = []
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = head.split(b"\r\n")[0].decode(errors="replace")

    def send(self, obj, masked=True):
        data = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        head = bytes([0x81])
        n = len(data)
        mbit = 0x80 if masked else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack(">Q", n)
        if masked:
            mask = os.urandom(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            head += mask
        self.s.sendall(head + data)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            if time.time() > deadline:
                raise socket.timeout("no frame")
            self.s.settimeout(max(0.05, deadline - time.time()))
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk

    def frame(self, timeout=15.0):
        """(opcode, payload) of the next frame."""
        deadline = time.time() + timeout
        self._need(2, deadline)
        op, n = self.buf[0] & 0x0f, self.buf[1] & 0x7f
        at = 2
        if n == 126:
            self._need(4, deadline)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n, deadline)
        data, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return op, data

    def recv(self, pred=lambda m: True, timeout=15.0):
        """The first message pred accepts; the others are kept for later
        calls (an event may come before the reply to its publish)."""
        for i, msg in enumerate(self.kept):
            if pred(msg):
                return self.kept.pop(i)
        deadline = time.time() + timeout
        while True:
            op, data = self.frame(max(0.05, deadline - time.time()))
            if op == 8:
                raise EOFError("close %s" % (struct.unpack(">H", data[:2])[0] if data else None))
            if op == 1:
                msg = json.loads(data)
                if pred(msg):
                    return msg
                self.kept.append(msg)

    def close(self):
        self.s.close()


def masked_frame(data):
    mask = os.urandom(4)
    return (bytes([0x81, 0x80 | len(data)]) + mask +
            bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def closed_with(ws):
    """How the connection ends: "close CODE", "eof", or "open"."""
    try:
        ws.recv(lambda m: False, timeout=10)
    except EOFError as e:
        return str(e) if str(e).startswith("close") else "eof"
    except (socket.timeout, OSError):
        return "open"
    return "open"


def deep(n, inner=1):
    """n nested containers around inner; inner [] or {} is one more."""
    v = inner
    for _ in range(n):
        v = [v]
    return v


def is_event(msg, topic):
    return msg.get("type") == "event" and msg.get("event_type") == topic


def main():
    c = Checks()
    hostile = b"\xdf\xff\xff\xff\xff"
    b64 = {"$base64": base64.b64encode(hostile).decode()}
    with Broker(ports=free_ports(3)) as broker:
        g = Gateway(broker).start()
        try:
            ws = WS(g.port, "/ws/session/watcher")
            c.check(ws.status.startswith("HTTP/1.1 101"), "upgrade: %s" % ws.status)
            welcome = ws.recv(lambda m: m.get("type") == "connection")
            ws.send({"action": "subscribe", "topics": ["fz.>", "session.>"], "id": 1})
            ws.recv(lambda m: m.get("type") == "reply" and m.get("id") == 1)
            # 1. the hostile payload, live, on a plain and a direct topic.
            with Client(broker) as cl:
                # message.direct with no target in its topic: the gateway
                # decodes the payload to find "to" (it reaches nobody).
                for topic in ("fz.hostile", "session.watcher.direct", "message.direct"):
                    rep = cl.request({"op": "publish", "topic": topic, "payload": hostile})
                    c.check(rep.get("ok") is True, "published %s: %s" % (topic, rep))
            # A direct message is shown as message.direct to its target.
            for topic in ("fz.hostile", "message.direct"):
                try:
                    m = ws.recv(lambda m, t=topic: is_event(m, t))
                    c.eq(m.get("payload"), b64, "%s live shows the bytes as $base64" % topic)
                except (EOFError, socket.timeout) as e:
                    c.check(False, "%s live: %s" % (topic, e))
            # 2. 32 levels back as sent; 33 refused with its id.
            ws.send({"action": "publish", "event_type": "fz.deep", "payload": deep(32), "id": 2})
            rep = ws.recv(lambda m: m.get("type") == "reply" and m.get("id") == 2)
            c.check(rep.get("ok") is True, "32 levels published: %s" % rep)
            m = ws.recv(lambda m: is_event(m, "fz.deep"))
            c.eq(m.get("payload"), deep(32), "32 levels come back as sent")
            ws.send({"action": "publish", "event_type": "fz.deep", "payload": deep(33), "id": 3})
            rep = ws.recv(lambda m: m.get("type") == "reply" and m.get("id") == 3)
            c.check(rep.get("ok") is False and rep["error"]["code"] == "bad_request" and
                    "nested deeper than 32" in rep["error"]["message"],
                    "33 levels refused: %s" % rep)
            # An empty innermost container is a level too: 31 around [] or {}
            # come back as sent; 32 around it are refused (they used to be
            # stored and come back as $base64).
            for i, inner in enumerate(([], {})):
                ws.send({"action": "publish", "event_type": "fz.deep", "id": 20 + i,
                         "payload": deep(31, inner)})
                rep = ws.recv(lambda m, i=i: m.get("type") == "reply" and m.get("id") == 20 + i)
                c.check(rep.get("ok") is True, "31 levels around %r published: %s" % (inner, rep))
                m = ws.recv(lambda m: is_event(m, "fz.deep"))
                c.eq(m.get("payload"), deep(31, inner), "31 levels around %r come back as sent"
                     % (inner,))
                ws.send({"action": "publish", "event_type": "fz.deep", "id": 30 + i,
                         "payload": deep(32, inner)})
                rep = ws.recv(lambda m, i=i: m.get("type") == "reply" and m.get("id") == 30 + i)
                c.check(rep.get("ok") is False and rep["error"]["code"] == "bad_request" and
                        "nested deeper than 32" in rep["error"]["message"],
                        "32 levels around %r refused: %s" % (inner, rep))
            ws.send({"action": "history", "topics": ["fz.>"], "id": 4})
            rep = ws.recv(lambda m: m.get("type") == "reply" and m.get("id") == 4)
            events = rep.get("events", [])
            c.eq([e.get("payload") for e in events if e.get("event_type") == "fz.hostile"],
                 [b64], "history shows the hostile payload as $base64")
            c.eq(len([e for e in events if e.get("event_type") == "fz.deep"]), 3,
                 "history holds the events of 32 levels only")
            # 3. RFC 6455: an unmasked frame closes the connection with
            # 1002, its action not done; so does one after masked frames
            # in the same read, and an unmasked ping.
            ws.send({"action": "publish", "event_type": "fz.unmasked", "payload": 1, "id": 5},
                    masked=False)
            c.eq(closed_with(ws), "close 1002", "an unmasked frame closes with 1002")
            ws.close()
            ws = WS(g.port, "/ws/session/watcher3")
            ws.recv(lambda m: m.get("type") == "connection")
            good = masked_frame(b'{"action":"ping","id":6}')
            ws.s.sendall(good + b"\x81\x02{}")
            c.eq(closed_with(ws), "close 1002", "an unmasked frame after a masked one: 1002")
            ws.close()
            ws = WS(g.port, "/ws/session/watcher4")
            ws.recv(lambda m: m.get("type") == "connection")
            ws.s.sendall(b"\x89\x00")  # an unmasked ping
            ws.send({"action": "ping", "id": 7})
            c.eq(closed_with(ws), "close 1002", "an unmasked ping: 1002")
            ws.close()
            bad = WS(g.port, "/ws/session/v99", version="99")
            c.check(bad.status.startswith("HTTP/1.1 426"),
                    "Sec-WebSocket-Version 99 refused: %s" % bad.status)
            bad.close()
            # The gateway restarts: its welcome reloads the hostile events.
            g.stop()
            g = Gateway(broker, port=g.port).start()
            ws = WS(g.port, "/ws/session/watcher2?recent=50")
            welcome = ws.recv(lambda m: m.get("type") == "connection")
            recent = welcome.get("recent_events", [])
            c.eq([e.get("payload") for e in recent if e.get("event_type") == "fz.hostile"],
                 [b64], "the welcome after a restart shows the hostile payload")
            c.check(not [e for e in recent if e.get("event_type") == "fz.unmasked"],
                    "the unmasked frame's publish was not done")
            ws.send({"action": "ping", "id": 9})
            c.check(ws.recv(lambda m: m.get("id") == 9).get("ok") is True,
                    "the restarted gateway answers")
            ws.close()
            c.check(g.proc.poll() is None, "the gateway is up")
            logs = g.logs()
            c.check("AddressSanitizer" not in logs and "runtime error" not in logs,
                    "no sanitizer report in the gateway's log")
        finally:
            g.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
