"""health tells a monitor when the store fails: after a commit that could
not be made (claims filling a map that may not grow), status is "degraded"
with the reason, the broker keeps serving, and ping needs no token.
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
    t.eq(h.get("status"), "degraded", "health says degraded after a failed commit: %r" % h)
    t.check("commit failed" in (h.get("problem") or ""), "and why: %r" % h.get("problem"))
    t.check(c.request({"op": "ping"}).get("ok"), "the broker still serves")
    t.check(c.request({"op": "work.get", "work_id": "fill/0"}).get("ok"),
            "what was stored is still there")
    t.eq(b.stop(), 0, "SIGTERM exits 0")

t.done()
