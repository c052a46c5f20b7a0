"""Issue 18, "LMDB map full at map_max": events fill a store whose map may
grow to 8 MiB at most.

- retention makes room: 20 MB of acknowledged publishes all succeed, the
  oldest events are trimmed (the log says so), the newest are all in the
  history, byte for byte, and the broker stays up;
- what cannot be trimmed (claims: nothing of them is retention's to drop)
  is refused clearly with store_full once the map is full, health says
  degraded and why (test_health checks that part too);
- after a restart the store opens, serves the same history and takes
  writes again.
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client  # noqa: E402

t = Checks()
# Small log segments: a checkpoint applies at most half a segment, and
# make_room wants four times that free in the map (see the note in
# docs/testing.md: a map_max below that refuses writes now and then).
b = Broker(extra=["--map-size", "1M", "--map-max", "8M", "--max-payload", "16K",
                  "--max-request", "64K", "--wal-segment", "1M", "--batch-bytes", "256k"])
b.start()
try:
    acked = {}
    with Client(b) as c:
        for i in range(2000):
            payload = os.urandom(10000)
            rep = c.request({"op": "publish", "topic": "map.x", "payload": payload}, timeout=15)
            if not rep.get("ok"):
                t.check(False, "publish %d refused: %r" % (i, rep))
                break
            acked[rep["seq"]] = hashlib.sha256(payload).hexdigest()
        t.eq(len(acked), 2000, "20 MB of acknowledged publishes into a 8 MiB map: all taken")
        t.check("trimmed the oldest events to make room" in b.logs(), "the log says events were trimmed")
        evs = []
        since = 0
        floor = 0  # the store's first seq, as the last page saw it
        for _ in range(1000):
            rep = c.request({"op": "history", "since_seq": since, "limit": 100}, timeout=15)
            t.check(rep.get("ok"), "history answers") if not rep.get("ok") else None
            if not rep.get("ok") or not rep["events"]:
                break
            evs += rep["events"]
            floor = rep["first_seq"]
            since = rep["events"][-1]["seq"]
        # Retention may trim the oldest between two pages (it keeps room in
        # the map on its own schedule): what the pages read below the
        # store's first seq may be gone since; from it on, nothing may be.
        kept = {e["seq"]: hashlib.sha256(e["payload"]).hexdigest() for e in evs
                if e["seq"] >= floor}
        ks = sorted(kept)
        t.check(0 < len(kept) < 2000, "the history keeps the newest %d events" % len(kept))
        t.eq(ks[:1], [floor], "... from the store's first seq")
        t.eq(ks[-1:], [max(acked)], "... up to the last one acknowledged")
        t.check(all(y == x + 1 for x, y in zip(ks, ks[1:])),
                "... with no hole (%s)" % [(x, y) for x, y in zip(ks, ks[1:]) if y != x + 1][:3])
        t.check(all(kept[q] == acked[q] for q in kept), "... byte for byte")
        # Claims are not retention's to trim: the map fills, and they are refused clearly.
        c.request({"op": "session.register", "session": "filler", "heartbeat_ms": 60000})
        full = None
        for i in range(5000):
            r = c.request({"op": "work.claim", "session": "filler", "work_id": "fill/%d" % i,
                           "ttl_ms": 600000, "description": "d" * 4000}, timeout=15)
            if not r.get("ok"):
                full = r
                break
        t.eq((full or {}).get("error"), "store_full", "claims that cannot be trimmed are refused: %r"
             % ((full or {}).get("message"),))
        t.check(c.request({"op": "ping"}).get("ok"), "the broker still serves")
        # (Claims made room by trimming more of the oldest events.)
        before = c.request({"op": "history", "since_seq": 0, "limit": 10})["events"]
    t.eq(b.stop(), 0, "the broker stops cleanly")
    b.start()
    with Client(b) as c:
        rep = c.request({"op": "history", "since_seq": 0, "limit": 10})
        t.check(rep.get("ok") and rep["events"] and rep["events"] == before,
                "after a restart the history is the same")
        rep = c.request({"op": "work.get", "work_id": "fill/0"})
        t.check(rep.get("ok"), "acknowledged claims are there after the restart")
finally:
    b.stop()
    t.check("AddressSanitizer" not in b.logs(), "no sanitizer report")
    b.cleanup()

# A map_max too small for a checkpoint's log is named at start.
b = Broker(extra=["--map-size", "1M", "--map-max", "4M"])
b.start()
t.check("map_max 4194304 is small for checkpoints" in b.logs(), "a map_max too small is warned of")
b.stop()
b.cleanup()
t.done()
sys.exit(1 if t.failed else 0)
