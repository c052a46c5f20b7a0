#!/usr/bin/env python3
"""Token permissions on both planes (issue 14), checked with raw pyzmq
sockets that present the tokens at the handshake, as any client could:

1. no source forging: a control-plane publish may name only its token's
   name or a session it may act as; the event plane stamps the name;
2. direct messages are private: session.<id>.direct reaches only
   connections whose token may act as <id> (or that a sub= pattern naming
   "session" allows), on the event plane (a SUB of everything) and in the
   history, also when the gateway sends them (POST /message);
3. a publish outside pub=: a clear `forbidden` on the control plane;
   nothing stored or delivered on the event plane (counted in
   state.drops.forbidden and logged), the broker's own topics (work.claimed,
   session.connected) included, unless a pattern names them;
4. a subscribe outside sub=: `forbidden` for a history query; on the event
   plane nothing delivered (state.subscriptions_refused, logged), and a SUB
   of everything gets just what the token may read;
5. the first tokens-file format keeps its meaning (sessions; pub and sub
   of everything but the broker's topics and others' private ones).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import msgpack
import zmq

import harness
from harness import (Broker, Checks, Client, Gateway, decode_event, drain, free_ports, publisher,
                     subscriber, wait_until)

TOKENS = """# the second format
TOK-ALICE name=alice sessions=alice
TOK-CI name=ci sessions=ci pub=build.>,work.> sub=build.>,work.claimed
TOK-MON name=mon sub=>,session.*.direct pub=
# the first format
TOK-BOB bob
TOK-ADMIN *
"""
ADMIN = "TOK-ADMIN"


def req(c, token, **fields):
    return c.request(dict(fields, auth=token))


def is_err(t, rep, code, what, mention=None):
    ok = rep.get("ok") is False and rep.get("error") == code and \
        (mention is None or mention in rep.get("message", ""))
    return t.check(ok, "%s: %r" % (what, rep))


def events_of(sub, wait=0.8):
    """Everything sub received until it is quiet for `wait`."""
    got = []
    while sub.poll(int(wait * 1000)):
        got.append(decode_event(sub.recv()))
    return got


def history(c, token, **kw):
    rep = c.request(dict({"op": "history", "auth": token, "limit": 1000}, **kw))
    assert rep.get("ok"), rep
    return rep["events"]


def main():
    t = Checks()
    tmp = tempfile.mkdtemp(prefix="nexus-perm-")
    path = os.path.join(tmp, "tokens")
    with open(path, "w") as f:
        f.write(TOKENS)
    with Broker(extra=["--tokens-file", path], token=ADMIN, ports=free_ports(3)) as b, \
            Client(b) as c:
        # Subscribers of everything, one per token.
        subs = {name: subscriber(b, "", token=tok) for name, tok in
                (("admin", ADMIN), ("alice", "TOK-ALICE"), ("bob", "TOK-BOB"), ("ci", "TOK-CI"),
                 ("mon", "TOK-MON"))}
        # A SUB of the bare prefix "session." and one of a single DM topic.
        bob_sessions = subscriber(b, "session.", token="TOK-BOB")
        mon_one = subscriber(b, "session.alice.direct", token="TOK-MON")
        ci_repo = subscriber(b, "repo.", token="TOK-CI")
        for s in subs.values():
            harness.settle_subscription(b, s, topic="build.settle")
        harness.settle_subscription(b, bob_sessions, topic="session.bob.direct")
        harness.settle_subscription(b, mon_one, topic="session.alice.direct")
        time.sleep(0.5)  # ci_repo gets nothing to settle with
        for s in list(subs.values()) + [bob_sessions, mon_one]:
            drain(s)
        settled = c.request({"op": "health"})["last_seq"]

        # channels counts what subscribers asked for, manual XPUB or not.
        ch = {x["prefix"]: x["subscribers"] for x in
              c.request({"op": "channels", "auth": ADMIN})["channels"]}
        t.check(ch.get("") == 5 and ch.get("session.") == 1 and ch.get("repo.") == 1,
                "channels with tokens: %r" % ch)

        # ---- 1. sources
        is_err(t, req(c, "TOK-ALICE", op="publish", topic="a.b", payload=b"1", source="bob"),
               "forbidden", "alice may not publish as bob", "bob")
        is_err(t, req(c, "TOK-BOB", op="publish", topic="a.b", payload=b"1", source="alice"),
               "forbidden", "bob (first format) may not publish as alice")
        is_err(t, req(c, "TOK-BOB", op="publish", topic="a.b", payload=b"1", source="nexusd"),
               "forbidden", "bob may not publish as the broker")
        t.check(req(c, "TOK-ALICE", op="publish", topic="a.b", payload=b"2", source="alice")["ok"],
                "alice may publish as alice")
        t.check(req(c, "TOK-ALICE", op="publish", topic="a.b", payload=b"3")["ok"],
                "alice without a source")
        src = {e["payload"]: e["source"] for e in history(c, ADMIN, pattern="a.b")}
        t.eq(src, {b"2": "alice", b"3": "alice"}, "stored: only alice's own, named alice")
        t.check(req(c, ADMIN, op="publish", topic="a.c", payload=b"4", source="whoever")["ok"],
                "a '*' token may name any session (the gateway's case)")
        p = publisher(b, token="TOK-BOB")
        deadline = time.time() + 5
        forged = None
        while time.time() < deadline and forged is None:
            p.send_multipart([b"a.forge", b"x", b"alice"])
            if subs["admin"].poll(100):
                ev = decode_event(subs["admin"].recv())
                if ev[0] == "a.forge":
                    forged = ev
        p.close()
        t.check(forged is not None and forged[3] == "bob",
                "event plane: bob claiming 'alice' is stamped bob: %r" % (forged,))
        time.sleep(0.3)
        for s in subs.values():
            drain(s)

        # ---- 2. direct messages
        for to in ("alice", "bob"):
            rep = req(c, ADMIN, op="publish", topic="session.%s.direct" % to,
                      payload=msgpack.packb({"to": to, "text": "hi " + to}), source="admin-s")
            t.check(rep["ok"], "a direct message to %s" % to)
        got = {name: [e[0] for e in events_of(s)] for name, s in subs.items()}
        t.check("session.alice.direct" in got["alice"] and "session.bob.direct" not in got["alice"],
                "alice's SUB of everything gets hers, not bob's: %r" % got["alice"])
        t.check("session.bob.direct" in got["bob"] and "session.alice.direct" not in got["bob"],
                "bob's (first format) gets his, not alice's: %r" % got["bob"])
        t.check({"session.alice.direct", "session.bob.direct"} <= set(got["admin"]),
                "a '*' token reads every session's")
        t.check(not any(tp.startswith("session.") for tp in got["ci"]),
                "ci (sub=build.>,work.claimed) gets none: %r" % got["ci"])
        t.check(not any(tp.endswith(".direct") for tp in got["mon"]),
                "mon's SUB of everything: its session.*.direct has no ZeroMQ prefix: %r" %
                got["mon"])
        one = [e[0] for e in events_of(mon_one)]
        t.eq(one, ["session.alice.direct"], "mon's SUB of the one topic gets exactly it")
        bs = [e[0] for e in events_of(bob_sessions)]
        t.eq(bs, ["session.bob.direct"], "bob's SUB of 'session.' gets only his own")
        dm = [e["topic"] for e in history(c, "TOK-BOB", pattern="session.*.direct",
                                          since_seq=settled)]
        t.eq(dm, ["session.bob.direct"], "bob's history of session.*.direct: only his")
        dm = [e["topic"] for e in history(c, "TOK-BOB", since_seq=settled)]
        t.check("session.alice.direct" not in dm and "session.bob.direct" in dm,
                "bob's history of everything leaves alice's out")
        dm = [e["topic"] for e in history(c, "TOK-ALICE", pattern="session.alice.>",
                                          since_seq=settled)]
        t.eq(dm, ["session.alice.direct"], "alice's history has hers")
        dm = sorted(e["topic"] for e in history(c, "TOK-MON", pattern="session.*.direct",
                                                since_seq=settled))
        t.eq(dm, ["session.alice.direct", "session.bob.direct"],
             "mon's explicit sub= session.*.direct reads every one in the history")
        is_err(t, c.request({"op": "history", "auth": "TOK-CI", "pattern": "session.*.direct"}),
               "forbidden", "ci may not ask for direct messages")

        # Through the gateway: its direct message is private on the broker too.
        with Gateway(b, ["--broker-token", ADMIN]) as g:
            body = json.dumps({"from": "gw-s", "to": "alice", "message": "via the gateway"})
            rq = urllib.request.Request("http://127.0.0.1:%d/message" % g.port, body.encode(),
                                        {"Content-Type": "application/json"})
            with urllib.request.urlopen(rq, timeout=10) as resp:
                t.check(resp.status in (200, 201), "POST /message to alice")
            got = {name: [e[0] for e in events_of(s)] for name, s in subs.items()}
            t.check("session.alice.direct" in got["alice"],
                    "the gateway's direct message reaches alice's raw SUB: %r" % got["alice"])
            t.check("session.alice.direct" not in got["bob"],
                    "and not bob's: %r" % got["bob"])
            t.check(not any("message.direct" == tp for tp in got["admin"]),
                    "the gateway no longer publishes message.direct for all to read")

        # ---- 3. publish outside pub=
        is_err(t, req(c, "TOK-CI", op="publish", topic="repo.x", payload=b"1"), "forbidden",
               "ci may not publish repo.x", "build.>,work.>")
        t.check(req(c, "TOK-CI", op="publish", topic="build.ok", payload=b"1")["ok"],
                "ci may publish build.ok")
        t.check(req(c, "TOK-CI", op="publish", topic="work.claimed", payload=b"1")["ok"],
                "ci's work.> names the broker's work.claimed")
        is_err(t, req(c, "TOK-ALICE", op="publish", topic="work.claimed", payload=b"1"),
               "forbidden", "alice (pub=>) may not forge work.claimed", "names its first token")
        is_err(t, req(c, "TOK-BOB", op="publish", topic="session.connected", payload=b"1"),
               "forbidden", "bob may not forge session.connected")
        is_err(t, req(c, "TOK-MON", op="publish", topic="a.b", payload=b"1"), "forbidden",
               "mon (pub=) may publish nothing")
        t.check(req(c, "TOK-ALICE", op="publish", topic="status.update", payload=b"1")["ok"],
                "status.update is a client's topic (seed 000)")
        def forbidden():
            return c.request({"op": "state", "auth": ADMIN})["drops"]["forbidden"]

        before = forbidden()
        want = before
        for tok, topic in (("TOK-CI", b"repo.raw"), ("TOK-ALICE", b"work.claimed"),
                           ("TOK-BOB", b"session.connected"), ("TOK-MON", b"mon.raw")):
            # A PUB drops what it sends before its handshake is done: send
            # rounds of 10 until the broker has counted one (bounded).
            p = publisher(b, token=tok)
            want += 10
            for _ in range(50):
                for i in range(10):
                    p.send_multipart([topic, b"raw", b""])
                if wait_until(lambda: forbidden() >= want, timeout=0.3):
                    break
            want = max(want, forbidden())
            p.close()
        t.check(wait_until(lambda: forbidden() >= before + 40, timeout=5),
                "40 events outside pub= counted")
        got = [e[0] for e in events_of(subs["admin"]) if e[4] == b"raw"]
        t.eq(got, [], "nothing outside pub= delivered")
        stored = [e for e in history(c, ADMIN) if e["payload"] == b"raw"]
        t.eq(stored, [], "nothing outside pub= stored")
        t.check(wait_until(lambda: "forbidden); last: not in the pub= of" in b.logs(), timeout=3),
                "the drop is logged, naming whose pub= it is outside")

        # ---- 4. subscribe outside sub=
        is_err(t, c.request({"op": "history", "auth": "TOK-CI", "pattern": "repo.>"}),
               "forbidden", "ci's history of repo.>", "build.>,work.claimed")
        is_err(t, c.request({"op": "history", "auth": "TOK-CI"}), "forbidden",
               "ci's history of everything")
        is_err(t, c.request({"op": "history", "auth": "TOK-CI", "pattern": "work.*"}),
               "forbidden", "ci's history of work.* (wider than work.claimed)")
        t.check(c.request({"op": "history", "auth": "TOK-CI", "patterns": ["build.>",
                                                                          "work.claimed"]})["ok"],
                "ci's history of its grants")
        for tp in ("repo.x", "build.y", "work.claimed", "work.released"):
            req(c, ADMIN, op="publish", topic=tp, payload=b"s")
        got = [e[0] for e in events_of(subs["ci"])]
        t.check("build.y" in got and "work.claimed" in got and "repo.x" not in got and
                "work.released" not in got, "ci's SUB of everything gets its grants only: %r" % got)
        t.eq(events_of(ci_repo, 0.3), [], "ci's SUB of repo. gets nothing")
        st = c.request({"op": "state", "auth": ADMIN})
        t.check(st["subscriptions_refused"] >= 1, "refused subscriptions counted: %r" %
                st["subscriptions_refused"])
        t.check("refused subscription on events-out: ci may not read what prefix 'repo.' selects"
                in b.logs(), "a refused subscription is logged")

        # An unsubscribe takes back what was applied as asked.
        w = subscriber(b, "work.", token="TOK-ALICE")
        harness.settle_subscription(b, w, topic="work.settle")
        drain(w)
        w.setsockopt(zmq.UNSUBSCRIBE, b"work.")
        time.sleep(0.5)
        req(c, ADMIN, op="publish", topic="work.after", payload=b"u")
        t.eq(events_of(w, 0.5), [], "after unsubscribing work. alice's SUB gets no work event")
        w.close()

        # nexus sub says so when its pattern is outside sub=, instead of
        # waiting in silence; events shows it too.
        cli = os.path.join(os.environ.get("NEXUS_BUILD_DIR", "build"), "sdk", "nexus")
        env = dict(os.environ, NEXUS_ENDPOINT=b.control, NEXUS_TOKEN="TOK-CI")
        r = subprocess.run([cli, "sub", "repo.>"], capture_output=True, text=True, timeout=30,
                           env=env)
        t.check(r.returncode == 1 and "may not read 'repo.>'" in r.stderr,
                "nexus sub outside sub=: a clear error: %d %r" % (r.returncode, r.stderr))
        sub = subprocess.Popen([cli, "sub", "build.>", "--count", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.time() + 15
            while sub.poll() is None and time.time() < deadline:
                req(c, ADMIN, op="publish", topic="build.cli", payload=b"c")
                time.sleep(0.2)
            out, err = sub.communicate(timeout=10)
            t.check(sub.returncode == 0 and "build.cli" in out,
                    "nexus sub within sub= streams: %r %r" % (out[:200], err[-300:]))
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait(10)

        # ---- 5. the first format still works
        r = c.request({"op": "session.register", "session": "bob", "auth": "TOK-BOB"})
        t.check(r.get("ok"), "bob's token registers bob: %r" % r)
        is_err(t, c.request({"op": "session.register", "session": "alice", "auth": "TOK-BOB"}),
               "forbidden", "bob's token may not register alice")
        t.check(req(c, "TOK-BOB", op="publish", topic="repo.y", payload=b"1")["ok"],
                "bob publishes any client topic")

        for s in list(subs.values()) + [bob_sessions, mon_one, ci_repo]:
            s.close()
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
