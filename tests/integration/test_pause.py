"""A broker that was paused (SIGSTOP, as a stopped VM or a long stall) does
not expire the sessions and leases whose heartbeats and renewals were sent
in time and waited in its sockets meanwhile: it reads them first. Those
that sent nothing still expire, soon after.

The broker is stopped for 2 s; sessions time out after 0.9 s, the lease
after 1 s. Stopped again and again, it still expires a silent session. Before the hold (nx_coord_paused), the loop woke with every
deadline past and expired them before the queued heartbeat and renewal
were read: the heartbeat found its session gone and the renewal its lease
expired. Every wait is bounded.
"""

import os
import signal
import sys
import time

import msgpack

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, next_event, settle_subscription, subscriber  # noqa: E402

t = Checks()
T0 = time.time()
P = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
ROUNDS = 3

with Broker() as b, Client(b) as c:
    sub = subscriber(b, "session.", "work.", "nexus.test.")
    settle_subscription(b, sub)
    for r in range(ROUNDS):
        live, dead, wid = "live-%d" % r, "dead-%d" % r, "job-%d" % r
        for sid in (live, dead):
            rep = c.request({"op": "session.register", "session": sid, "heartbeat_ms": 300})
            t.check(rep.get("ok"), "register %s: %r" % (sid, rep))
        rep = c.request({"op": "work.claim", "session": live, "work_id": wid, "ttl_ms": 1000})
        t.check(rep.get("ok"), "claim: %r" % rep)
        token = rep.get("token")
        b.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.3)
            # Sent in time (the session has 0.9 s, the lease 1 s): they wait
            # in the stopped broker's socket.
            c.send_raw(P({"op": "session.heartbeat", "session": live, "id": 1000 + r}))
            c.send_raw(P({"op": "work.renew", "session": live, "work_id": wid, "token": token,
                          "ttl_ms": 5000, "id": 2000 + r}))
            time.sleep(1.7)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        got = {}
        deadline = time.time() + 10
        while len(got) < 2 and time.time() < deadline:
            try:
                rep = c.recv(timeout=max(0.1, deadline - time.time()))
            except TimeoutError:
                break
            got[rep.get("id")] = rep
        hb, rn = got.get(1000 + r, {}), got.get(2000 + r, {})
        t.check(hb.get("ok") is True and hb.get("status") == "active",
                "round %d: the heartbeat sent in time keeps its session: %r" % (r, hb))
        t.check(rn.get("ok") is True and rn.get("token") == token,
                "round %d: the renewal sent in time keeps its lease: %r" % (r, rn))
        rep = c.request({"op": "session.get", "session": live})
        t.eq(rep.get("session", {}).get("status"), "active", "round %d: still active" % r)
        rep = c.request({"op": "work.get", "work_id": wid})
        t.eq((rep.get("claim", {}).get("state"), rep.get("claim", {}).get("holder")),
             ("claimed", live), "round %d: still claimed by its holder" % r)
        c.request({"op": "work.release", "session": live, "work_id": wid, "token": token})
        c.request({"op": "session.unregister", "session": live})
        # It went when it said so, not at the pause; the session that sent
        # nothing expires all the same, soon after.
        ev = next_event(sub, "session.disconnected", lambda p: p.get("session") == live,
                        timeout=10)
        t.check(ev is not None and ev[0].get("reason") == "unregistered",
                "round %d: the live session went when it unregistered: %r" % (r, ev))
        ev = next_event(sub, "session.disconnected", lambda p: p.get("session") == dead,
                        timeout=10)
        t.check(ev is not None and ev[0].get("reason") == "timeout",
                "round %d: the silent session times out after the hold: %r" % (r, ev))
    st = c.request({"op": "state"})
    t.check(st.get("coordination", {}).get("pauses", 0) >= ROUNDS,
            "state.coordination.pauses counts them: %r" % st.get("coordination"))
    logs = b.logs()
    t.check("expire only once the requests that came meanwhile are read" in logs,
            "the pause is logged")
    sub.close(0)

# Stopped again and again (0.3 s in every 0.6 s), the broker still expires a
# session that sends nothing: one hold between two runs of the timers, never
# a hold renewed for ever.
with Broker() as b, Client(b) as c:
    sub = subscriber(b, "session.", "nexus.test.")
    settle_subscription(b, sub)
    rep = c.request({"op": "session.register", "session": "quiet", "heartbeat_ms": 300})
    t.check(rep.get("ok"), "register quiet: %r" % rep)
    gone = None
    t1 = time.time()
    while time.time() - t1 < 8 and gone is None:
        b.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.3)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        gone = next_event(sub, "session.disconnected", lambda p: p.get("session") == "quiet",
                          timeout=0.3)
    t.check(gone is not None and gone[0].get("reason") == "timeout",
            "a silent session times out while the broker is stopped again and again: %r" % (gone,))
    sub.close(0)

print("test_pause: %.1fs" % (time.time() - T0))
t.done()
