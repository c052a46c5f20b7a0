"""health tells a monitor when the store fails: when claims fill a map
that may not grow, further writes are refused (store_full), status is
"degraded" with the reason, the broker keeps serving, every claim that was
acknowledged is kept (also across a restart), and ping needs no token.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client  # noqa: E402

t = Checks()

with Broker(extra=["--map-size", "1M", "--map-max", "1M"]) as b, Client(b) as c:
    h = c.request({"op": "health"})
    t.eq((h.get("status"), h.get("problem", "absent")), ("active", None),
         "a healthy broker: active, no problem")
    c.request({"op": "session.register", "session": "filler", "heartbeat_ms": 60000})
    full = None
    for i in range(5000):
        r = c.request({"op": "work.claim", "session": "filler", "work_id": "fill/%d" % i,
                       "ttl_ms": 60000, "description": "d" * 2000})
        if not r.get("ok"):
            full = r
            break
    t.eq((full or {}).get("error"), "store_full", "claims fill the store: %r" % (full,))
    h = c.request({"op": "health"})
    t.eq(h.get("status"), "degraded", "health says degraded when the store is full: %r" % h)
    t.check("store is full" in (h.get("problem") or ""), "and why: %r" % h.get("problem"))
    t.check(c.request({"op": "ping"}).get("ok"), "the broker still serves")
    acked = i
    t.check(acked > 0, "some claims were acknowledged before the store was full")
    for k in (0, acked - 1):
        t.check(c.request({"op": "work.get", "work_id": "fill/%d" % k}).get("ok"),
                "acknowledged claim fill/%d is there" % k)
    t.eq(b.stop(), 0, "SIGTERM exits 0")
    b.start()
    with Client(b) as c2:
        for k in (0, acked - 1):
            t.eq(c2.request({"op": "work.get", "work_id": "fill/%d" % k}).get("claim", {})
                 .get("holder"), "filler", "acknowledged claim fill/%d survives a restart" % k)
        t.eq(c2.request({"op": "work.get", "work_id": "fill/%d" % acked}).get("error"),
             "not_found", "the refused claim was not stored")

t.done()
