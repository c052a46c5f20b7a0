"""A large event after a stream of small ones (issue 18): every
subscriber that keeps up gets it, and everything after it.

The broker used to bound each subscriber's queue in bytes by lowering the
XPUB's high-water mark before a large event. libzmq 4.3 judges a pipe by
what its reader last reported, once per 15 360 messages under the high
mark, so under the lowered mark a subscriber that had read everything
could count as full: the large event was dropped for it, its pipe waited
for a report to wake it, and none came, since nothing more reached it. It
got no event ever again (the events fuzz target's lost marker). The mark
no longer moves (nx_hwm.h):

- a raw subscriber that keeps up gets the large event and every small
  event published after it;
- `nexus sub` (libnexus) gets every event, in order and once each.

Real nexusd, a raw ZeroMQ SUB and the real `nexus` CLI on loopback.
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, EventReader, publisher,  # noqa: E402
                     settle_subscription, subscriber, wait_until)

t = Checks()
BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.path.join(BUILD, "sdk", "nexus")
SMALL = 15000
LARGE = 200_000  # bytes: far above the 4 KiB of a small event
AFTER = 20


with Broker() as b:
    raw = subscriber(b, "big.")
    settle_subscription(b, raw, topic="big.settle")
    reader = EventReader(raw)
    reader.start()
    env = dict(os.environ)
    env.pop("NEXUS_ENDPOINT", None)
    lines = []
    sdk = subprocess.Popen([NEXUS, "sub", "big.>", "--json", "--endpoint", b.control],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    threading.Thread(target=lambda: lines.extend(sdk.stdout), daemon=True).start()
    try:
        def sdk_live():
            with Client(b) as c:
                c.request({"op": "publish", "topic": "big.probe", "payload": b"p"}, timeout=10)
            return any('"big.probe"' in x for x in list(lines))
        t.check(wait_until(sdk_live, timeout=20, step=0.3), "nexus sub is live")
        # Small events the raw subscriber reads as they come: its pipe's
        # reports to the broker lag behind by up to 15 360 of them.
        pub = publisher(b)
        time.sleep(0.3)
        for i in range(SMALL):
            pub.send_multipart([b"big.small", b"s"])
        t.check(wait_until(lambda: sum(1 for _, tp in list(reader.events) if tp == "big.small")
                           >= SMALL * 0.9, timeout=60, step=0.1),
                "the raw subscriber read the small events (%d)" % len(reader.events))
        time.sleep(0.3)
        with Client(b) as c:
            large = c.request({"op": "publish", "topic": "big.large", "payload": b"L" * LARGE},
                              timeout=10)["seq"]
            after = [c.request({"op": "publish", "topic": "big.after", "payload": b"%d" % i},
                               timeout=10)["seq"] for i in range(AFTER)]
        t.check(wait_until(lambda: any(tp == "big.large" for _, tp in list(reader.events)),
                           timeout=10, step=0.1),
                "a raw subscriber that keeps up gets the large event")
        got_after = lambda: sorted(s for s, tp in list(reader.events) if tp == "big.after")  # noqa: E731
        t.check(wait_until(lambda: got_after() == after, timeout=10, step=0.1),
                "a raw subscriber that keeps up gets every event after the large one: %d of %d"
                % (len(got_after()), AFTER))

        # libnexus: everything, in order, once, the large event included.
        def sdk_seqs():
            out = []
            for x in list(lines):
                if x.startswith("{"):
                    try:
                        out.append(json.loads(x))
                    except ValueError:
                        pass
            return out
        t.check(wait_until(lambda: any(e.get("seq") == after[-1] for e in sdk_seqs()),
                           timeout=30, step=0.2),
                "nexus sub got up to the last event")
        evs = sdk_seqs()
        seqs = [e["seq"] for e in evs]
        t.check(seqs == sorted(set(seqs)), "nexus sub: in order, once each")
        big = [e for e in evs if e.get("seq") == large]
        t.check(len(big) == 1 and big[0].get("topic") == "big.large",
                "nexus sub got the large event (seq %d)" % large)
        t.check(set(range(large, after[-1] + 1)) <= set(seqs),
                "nexus sub: no gap from the large event on (%d..%d)" % (large, after[-1]))
        with Client(b) as c:
            st = c.request({"op": "state"})
        t.eq(st["drops"]["slow_subscriber"], 0, "no event was dropped for a subscriber")
    finally:
        reader.stop()
        sdk.terminate()
        try:
            sdk.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            sdk.kill()

t.done()
