#!/usr/bin/env python3
"""libnexus takes an error reply without an id (the broker's answer to a
request it could not read: `too_large`, `bad_msgpack`, protocol.md 4.3)
as the answer to the request in flight, instead of waiting out its
timeout and saying "no reply, outcome unknown".

A broker that does not say its max_request in `ping` (an earlier one) is
played by raw ZeroMQ sockets here, since a real nexusd says it and
libnexus then refuses such a request before sending it
(test_sdk_client.c, s_test_too_large). The client is the real `nexus`
command. Every wait is bounded.
"""

import os
import subprocess
import sys
import threading
import time

import msgpack
import zmq

from harness import Checks, free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("NEXUS_BUILD_DIR", os.path.join(ROOT, "build"))
NEXUS = os.environ.get("NEXUS_CLI") or os.path.join(BUILD, "sdk", "nexus")

t = Checks()
control, ev_in, ev_out = free_ports(3)  # the CLI's default layout: P, P+1, P+2
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.bind("tcp://127.0.0.1:%d" % control)
xsub = ctx.socket(zmq.XSUB)
xsub.bind("tcp://127.0.0.1:%d" % ev_in)
xpub = ctx.socket(zmq.XPUB)
xpub.bind("tcp://127.0.0.1:%d" % ev_out)
stop = threading.Event()
seen = []


def serve():
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while not stop.is_set():
        # Subscribe to everything, as the broker's XSUB does, for every
        # publisher that connects (an XSUB here does not repeat it to new
        # connections by itself).
        xsub.send(b"\x01")
        if not poller.poll(50):
            continue
        frames = router.recv_multipart()
        req = msgpack.unpackb(frames[-1], raw=False)
        seen.append(req.get("op"))
        if req.get("op") == "ping":
            rep = {"id": req.get("id"), "ok": True, "ts": int(time.time() * 1e6),
                   "store_id": "0123456789abcdef", "role": "primary", "name": "fake",
                   "epoch": 0, "primary": None}
        else:
            # What nexusd answers a body over max_request: no id.
            rep = {"id": None, "ok": False, "error": "too_large",
                   "message": "request body over max_request"}
        router.send_multipart(frames[:-1] + [msgpack.packb(rep, use_bin_type=True)])


th = threading.Thread(target=serve, daemon=True)
th.start()
try:
    t0 = time.time()
    p = subprocess.run([NEXUS, "pub", "--ack", "--timeout", "5s", "--endpoint",
                        "tcp://127.0.0.1:%d" % control, "nil.id", '{"a": 1}'],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    took = time.time() - t0
    err = p.stderr.decode()
    t.check("publish" in seen, "the publish reached the broker: %r" % seen)
    t.eq(p.returncode, 1, "refused (exit 1), not unreachable (3): %r" % err)
    t.check("max_request" in err or "too large" in err.lower(),
            "the broker's words: %r" % err)
    t.check(took < 4.0, "answered in %.1f s, not after the 5 s timeout" % took)
finally:
    stop.set()
    th.join(5)
    for s in (router, xsub, xpub):
        s.close(0)
    ctx.term()
t.done()
