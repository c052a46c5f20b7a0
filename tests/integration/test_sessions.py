"""Sessions (issue 3, docs/protocol.md): register, heartbeat,
status, get, list, find, unregister, heartbeat timeout (claims released, or
kept until their lease ends with --claims-on-disconnect keep), identity
(owner connection, secret, or a tokens-file token that names the session),
a gone id registered again starting clean, sessions_max (refusals change
nothing, replacement reuses the slot, gone sessions make room), script
sessions kept alive by ttl_ms across short connections, fabric and
per-session tokens (and replacement by a token that names the session),
restart (stale, then active on heartbeat or gone on timeout), the JSON
snapshot file (a failing write logged once, not every second), and bad
input on every session op (bad_request naming the field, nothing changed).

Every wait is bounded in time; the whole file runs in well under 60 s.
"""

import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, next_event, settle_subscription,  # noqa: E402
                     subscriber, wait_until)

t = Checks()
T0 = time.time()
P = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
LONG = 60000  # heartbeat_ms for sessions that must not time out during a section
RECORD_KEYS = {"session", "name", "capabilities", "metadata", "state", "current_work", "text",
               "status", "registered_at", "last_seen", "heartbeat_ms", "ttl_ms", "timeout_at",
               "claims"}


def now_us():
    return int(time.time() * 1e6)


def is_ok(rep, what):
    return t.check(rep.get("ok") is True, "%s: %r" % (what, rep))


def is_err(rep, code, what, contains=None):
    good = t.eq((rep.get("ok"), rep.get("error")), (False, code), what)
    if good and contains is not None:
        t.check(contains in rep.get("message", ""),
                "%s: message %r names %r" % (what, rep.get("message"), contains))
    return good


def events_sub(b):
    sub = subscriber(b, "session.", "status.", "work.", "nexus.test.")
    settle_subscription(b, sub)
    return sub


def no_event(sub, topic, pred=None, wait=0.3):
    return next_event(sub, topic, pred, timeout=wait) is None


def history(c, pattern):
    rep = c.request({"op": "history", "pattern": pattern, "since_seq": 0, "limit": 10000})
    assert rep.get("ok"), rep
    out = []
    for e in rep["events"]:
        out.append((e["topic"], msgpack.unpackb(e["payload"], raw=False)))
    return out


def register(c, sid=None, **kw):
    req = dict(kw, op="session.register")
    if sid is not None:
        req["session"] = sid
    rep = c.request(req)
    assert rep.get("ok"), rep
    return rep


def get(c, sid):
    rep = c.request({"op": "session.get", "session": sid})
    return rep.get("session") if rep.get("ok") else None


def ids(rep):
    return [s["session"] for s in rep["sessions"]]


def fresh(b):
    """A new connection (a new DEALER, so a new ROUTER identity)."""
    return Client(b)


# ============================================================================
# 1. register, events, heartbeat, status, get, list, find, unregister
# ============================================================================
tmp = tempfile.mkdtemp(prefix="nexus-sess-")
snap_path = os.path.join(tmp, "state.json")
with Broker(extra=["--heartbeat", "200ms", "--snapshot-file", snap_path]) as b, \
        Client(b) as c:
    sub = events_sub(b)

    # ---- register with a given id
    before = now_us()
    rep = c.request({"op": "session.register", "session": "alice", "name": "Alice",
                     "capabilities": ["python", "gpu"],
                     "metadata": {"machine": "m1", "pid": 42, "repo": "nexus"},
                     "heartbeat_ms": LONG})
    is_ok(rep, "register alice")
    t.eq((rep["session"], rep["heartbeat_ms"], rep["timeout_ms"], rep["resumed"]),
         ("alice", LONG, 3 * LONG, False), "register reply fields")
    t.check(re.fullmatch(r"[0-9a-f]{32}", rep["secret"]) is not None,
            "secret is 32 hex chars: %r" % rep["secret"])
    alice_secret = rep["secret"]
    ev = next_event(sub, "session.connected", lambda p: p["session"] == "alice")
    t.check(ev is not None, "session.connected for alice")
    if ev:
        t.eq(ev[0], {"session": "alice", "name": "Alice", "capabilities": ["python", "gpu"],
                     "metadata": {"machine": "m1", "pid": 42, "repo": "nexus"},
                     "resumed": False}, "session.connected payload")
        t.eq(ev[1], "alice", "session.connected source is the session")
        t.check("secret" not in ev[0], "no secret in the event")

    # ---- register without an id: assigned s-<hex>, default heartbeat
    rep = c.request({"op": "session.register", "name": "anon", "capabilities": ["python"]})
    is_ok(rep, "register without id")
    anon = rep["session"]
    t.check(re.fullmatch(r"s-[0-9a-f]{12}", anon) is not None, "assigned id s-<hex>: %r" % anon)
    t.eq((rep["heartbeat_ms"], rep["timeout_ms"]), (200, 600), "default heartbeat from --heartbeat")
    rep2 = c.request({"op": "session.register", "name": "anon2"})
    t.check(rep2["session"] != anon and rep2["secret"] != rep["secret"],
            "two assigned ids and secrets differ")
    ev = next_event(sub, "session.connected", lambda p: p["session"] == anon)
    t.check(ev is not None and ev[0]["name"] == "anon", "session.connected for assigned id")
    c.request({"op": "session.unregister", "session": anon})
    c.request({"op": "session.unregister", "session": rep2["session"]})

    # ---- get: every field of the record
    rec = get(c, "alice")
    t.eq(set(rec), RECORD_KEYS, "record fields")
    t.eq((rec["session"], rec["name"], rec["capabilities"], rec["metadata"], rec["state"],
          rec["current_work"], rec["text"], rec["status"], rec["heartbeat_ms"], rec["ttl_ms"],
          rec["claims"]),
         ("alice", "Alice", ["python", "gpu"], {"machine": "m1", "pid": 42, "repo": "nexus"},
          "available", None, None, "active", LONG, 0, 0), "record values after register")
    t.check(before <= rec["registered_at"] <= rec["last_seen"] <= now_us(), "registered_at/last_seen")
    t.check(abs(rec["timeout_at"] - (rec["last_seen"] + 3 * LONG * 1000)) < 1000,
            "timeout_at = last_seen + 3 x heartbeat")
    is_err(c.request({"op": "session.get", "session": "nobody"}), "not_found", "get unknown",
           "nobody")

    # ---- heartbeat
    time.sleep(0.02)
    rep = c.request({"op": "session.heartbeat", "session": "alice"})
    is_ok(rep, "heartbeat")
    t.eq(rep.get("status"), "active", "heartbeat reply status")
    t.check(rep["timeout_at"] > rec["timeout_at"] and
            abs(rep["timeout_at"] - (now_us() + 3 * LONG * 1000)) < 200000,
            "heartbeat moves timeout_at to now + timeout")
    t.check(get(c, "alice")["last_seen"] > rec["last_seen"], "heartbeat moves last_seen")

    # ---- status
    rep = c.request({"op": "session.status", "session": "alice", "state": "busy",
                     "current_work": "job-1", "text": "compiling"})
    is_ok(rep, "status")
    t.eq((rep["session"]["state"], rep["session"]["current_work"], rep["session"]["text"],
          rep["session"]["session"]), ("busy", "job-1", "compiling", "alice"),
         "status reply is the record")
    ev = next_event(sub, "status.update", lambda p: p["session"] == "alice")
    t.check(ev is not None, "status.update event")
    if ev:
        t.eq(ev[0], {"session": "alice", "state": "busy", "current_work": "job-1",
                     "text": "compiling"}, "status.update payload")
    rec = get(c, "alice")
    t.eq((rec["state"], rec["current_work"], rec["text"]), ("busy", "job-1", "compiling"),
         "status visible in get")
    # Fields absent stay; nil clears.
    rep = c.request({"op": "session.status", "session": "alice", "text": "linking"})
    t.eq((rep["session"]["state"], rep["session"]["current_work"], rep["session"]["text"]),
         ("busy", "job-1", "linking"), "status with only text keeps the rest")
    rep = c.request({"op": "session.status", "session": "alice", "state": "away",
                     "current_work": None})
    t.eq((rep["session"]["state"], rep["session"]["current_work"]), ("away", None),
         "status nil clears current_work")
    ev = next_event(sub, "status.update", lambda p: p["state"] == "away")
    t.check(ev is not None and ev[0]["current_work"] is None and ev[0]["text"] == "linking",
            "status.update after clearing")

    # ---- list / find
    register(c, "bob", capabilities=["python"], heartbeat_ms=LONG)
    register(c, "carol", capabilities=["rust", "gpu"], heartbeat_ms=LONG)
    register(c, "dave", capabilities=["python", "gpu", "cuda"], heartbeat_ms=LONG)
    c.request({"op": "session.status", "session": "dave", "state": "busy"})
    rep = c.request({"op": "session.list"})
    t.eq(ids(rep), ["alice", "bob", "carol", "dave"], "list: active sessions, sorted")
    t.check(all(set(s) == RECORD_KEYS for s in rep["sessions"]), "list gives full records")
    f = lambda **q: ids(c.request(dict(q, op="session.find")))  # noqa: E731
    t.eq(f(capability="python"), ["alice", "bob", "dave"], "find capability python")
    t.eq(f(capability="gpu"), ["alice", "carol", "dave"], "find capability gpu")
    t.eq(f(capabilities=["python", "gpu"]), ["alice", "dave"], "find capabilities: all required")
    t.eq(f(capabilities=["python", "gpu", "cuda"]), ["dave"], "find three capabilities")
    t.eq(f(capability="cobol"), [], "find unknown capability")
    t.eq(f(available=True), ["bob", "carol"], "find available (alice away, dave busy)")
    t.eq(f(capability="python", available=True), ["bob"], "find python and available")
    t.eq(f(capabilities=["gpu"], available=True), ["carol"], "find gpu and available")
    c.request({"op": "session.status", "session": "alice", "state": "available"})
    t.eq(f(capability="python", available=True), ["alice", "bob"], "available again after status")

    # ---- snapshot file: active sessions, no secrets, rewritten within ~1.5 s
    def snap():
        try:
            with open(snap_path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    s0 = wait_until(lambda: (lambda d: d if d and {x["session"] for x in d["sessions"]} ==
                             {"alice", "bob", "carol", "dave"} else None)(snap()), timeout=3.0)
    t.check(s0 is not None, "snapshot lists the active sessions")
    if s0:
        t.check({"generated_at", "last_seq", "sessions", "claims"} <= set(s0), "snapshot keys")
        t.check(all(set(x) == RECORD_KEYS for x in s0["sessions"]), "snapshot session records")
        with open(snap_path) as fh:
            text = fh.read()
        t.check(alice_secret not in text, "snapshot holds no secret")
    rep = c.request({"op": "work.claim", "session": "bob", "work_id": "snap/1", "ttl_ms": 60000})
    t_claim = time.time()
    s1 = wait_until(lambda: (lambda d: d if d and any(x["work_id"] == "snap/1"
                                                      for x in d["claims"]) else None)(snap()),
                    timeout=3.0, step=0.01)
    took = time.time() - t_claim
    t.check(s1 is not None and took <= 1.5, "snapshot shows a claim within 1.5 s (%.2fs)" % took)
    if s1:
        cl = [x for x in s1["claims"] if x["work_id"] == "snap/1"][0]
        t.eq((cl["holder"], cl["token"], cl["state"]), ("bob", rep["token"], "claimed"),
             "snapshot claim record")
        t.eq([x["claims"] for x in s1["sessions"] if x["session"] == "bob"], [1],
             "snapshot session claim count")
    t.check(not any(f_.startswith("state.json.tmp") for f_ in os.listdir(tmp)),
            "no temp file left next to the snapshot")
    # A msgpack str that is not UTF-8 is refused with an error naming the
    # field (no reply, event or snapshot ever carries one), and the reply
    # itself decodes as UTF-8.
    raw = msgpack.packb({"op": "work.claim", "session": "bob", "work_id": "snap/PLACEHOLDER",
                         "ttl_ms": 60000, "id": 777001}, use_bin_type=True)
    c.send_raw(raw.replace(b"\xb0snap/PLACEHOLDER", b"\xa7snap/\xff\xfe"))
    t.check(c.sock.poll(5000), "a reply to the non-UTF-8 claim")
    rep = msgpack.unpackb(c.sock.recv(), raw=False)
    t.eq((rep.get("ok"), rep.get("error")), (False, "bad_request"),
         "a work id that is not UTF-8 is refused")
    t.check("work_id" in rep.get("message", ""), "the error names work_id: %r" % rep)
    c.request({"op": "work.claim", "session": "bob", "work_id": "snap/after", "ttl_ms": 60000})
    s2 = wait_until(lambda: (lambda d: d if d and any(x["work_id"] == "snap/after"
                                                      for x in d["claims"]) else None)(snap()),
                    timeout=3.0)
    t.check(s2 is not None, "the snapshot is still rewritten after it")
    if s2:
        t.check(not any(x["work_id"].startswith("snap/\ufffd") for x in s2["claims"]),
                "the refused work id is not in the snapshot")
    t.check("cannot write snapshot" not in b.logs(), "no snapshot write failed")

    # ---- unregister: released claims, event, gone, list all / window
    r1 = c.request({"op": "work.claim", "session": "carol", "work_id": "u/1", "ttl_ms": 60000})
    r2 = c.request({"op": "work.claim", "session": "carol", "work_id": "u/2", "ttl_ms": 60000})
    t.check(r1["ok"] and r2["ok"], "carol claims two items")
    t.eq(get(c, "carol")["claims"], 2, "record counts claims held")
    rep = c.request({"op": "session.unregister", "session": "carol"})
    t.eq((rep.get("ok"), rep.get("released")), (True, 2), "unregister releases 2 claims")
    ev = next_event(sub, "session.disconnected", lambda p: p["session"] == "carol")
    t.check(ev is not None and ev[0]["reason"] == "unregistered" and ev[0].get("released") == 2,
            "session.disconnected reason unregistered: %r" % (ev and ev[0]))
    rel = []
    for _ in range(2):
        e = next_event(sub, "work.released", lambda p: p["holder"] == "carol")
        if e:
            rel.append(e[0])
    t.eq(sorted((p["work_id"], p["reason"], p["token"]) for p in rel),
         [("u/1", "holder_gone", r1["token"]), ("u/2", "holder_gone", r2["token"])],
         "work.released holder_gone for each claim")
    for w in ("u/1", "u/2"):
        t.eq(c.request({"op": "work.get", "work_id": w})["claim"]["state"], "released",
             "%s released after unregister" % w)
    t.eq(get(c, "carol")["status"], "gone", "unregistered session is gone")
    t.eq(get(c, "carol")["claims"], 0, "gone session holds nothing")
    t.eq(ids(c.request({"op": "session.list"})), ["alice", "bob", "dave"],
         "list excludes gone sessions")
    named = lambda rep: [x for x in ids(rep) if not x.startswith("s-")]  # noqa: E731
    t.eq(named(c.request({"op": "session.list", "all": True})), ["alice", "bob", "carol", "dave"],
         "list all includes gone sessions")
    t.eq(len(ids(c.request({"op": "session.list", "all": True}))), 6,
         "list all includes the two unregistered assigned ids")
    t.check("carol" not in f(capability="rust"), "find excludes gone sessions")
    time.sleep(0.05)
    t.eq(ids(c.request({"op": "session.list", "all": True, "window_ms": 10})),
         ["alice", "bob", "dave"], "list all with a 10 ms window drops what went 50 ms ago")
    t.eq(named(c.request({"op": "session.list", "all": True, "window_ms": 60000})),
         ["alice", "bob", "carol", "dave"], "list all with a 60 s window keeps it")
    is_err(c.request({"op": "session.heartbeat", "session": "carol"}), "not_found",
           "heartbeat of a gone session", "carol")
    is_err(c.request({"op": "work.claim", "session": "carol", "work_id": "u/3"}), "not_found",
           "claim as a gone session")
    # A gone id can be registered again (new secret).
    rep = register(c, "carol", heartbeat_ms=LONG)
    t.eq((rep["resumed"], get(c, "carol")["status"]), (False, "active"), "gone id re-registered")
    c.request({"op": "session.unregister", "session": "carol"})
    # A new run of a gone id starts clean: the last run's status does not
    # show (a worker that timed out and came back is not still on its old job).
    register(c, "rerun", heartbeat_ms=LONG)
    is_ok(c.request({"op": "session.status", "session": "rerun", "state": "busy",
                     "current_work": "job-old", "text": "old text"}), "rerun status")
    c.request({"op": "session.unregister", "session": "rerun"})
    with fresh(b) as c_rerun:
        register(c_rerun, "rerun", heartbeat_ms=LONG)
        rec = get(c_rerun, "rerun")
        t.eq((rec["status"], rec["state"], rec["current_work"], rec["text"]),
             ("active", "available", None, None), "re-registered gone id shows no old status")
        c_rerun.request({"op": "session.unregister", "session": "rerun"})

    # ---- heartbeat timeout: gone, reason timeout, claims released
    with fresh(b) as c2:
        r = register(c2, "tim")  # default heartbeat 200 ms -> gone after 600 ms
        registered = time.time()
        rc = c2.request({"op": "work.claim", "session": "tim", "work_id": "t/1", "ttl_ms": 60000})
        register(c2, "keeper", heartbeat_ms=200)
        got = None
        deadline = time.time() + 3
        while time.time() < deadline and got is None:
            c2.request({"op": "session.heartbeat", "session": "keeper"})
            got = next_event(sub, "session.disconnected", lambda p: p["session"] == "tim",
                             timeout=0.1)
        t.check(got is not None, "tim times out")
        if got:
            dt = got[2] - registered
            t.eq((got[0]["reason"], got[0]["released"]), ("timeout", 1), "reason timeout")
            t.check(0.55 <= dt <= 1.2, "timeout after 3 x 200 ms (%.3fs)" % dt)
        e = next_event(sub, "work.released", lambda p: p["work_id"] == "t/1", timeout=1)
        t.check(e is not None and e[0]["reason"] == "holder_gone" and
                e[0]["token"] == rc["token"], "timed-out session's claim released holder_gone")
        t.eq(c2.request({"op": "work.get", "work_id": "t/1"})["claim"]["state"], "released",
             "t/1 released")
        t.eq(get(c2, "tim")["status"], "gone", "tim gone")
        t.eq(get(c2, "keeper")["status"], "active", "a session that heartbeats stays active")
        is_err(c2.request({"op": "session.heartbeat", "session": "tim"}), "not_found",
               "heartbeat after timeout")
        c2.request({"op": "session.unregister", "session": "keeper"})

    # ---- identity: only the registering connection, or the secret
    with fresh(b) as owner, fresh(b) as other:
        r = register(owner, "ida", name="Ida", capabilities=["x"], heartbeat_ms=LONG)
        secret = r["secret"]
        rc = owner.request({"op": "work.claim", "session": "ida", "work_id": "id/1"})
        before_rec = get(owner, "ida")
        for req in ({"op": "session.heartbeat"}, {"op": "session.status", "state": "busy"},
                    {"op": "work.claim", "work_id": "id/2"},
                    {"op": "work.renew", "work_id": "id/1", "token": rc["token"]},
                    {"op": "work.complete", "work_id": "id/1", "token": rc["token"]},
                    {"op": "work.release", "work_id": "id/1", "token": rc["token"]},
                    {"op": "session.unregister"}):
            req = dict(req, session="ida")
            is_err(other.request(req), "forbidden", "other connection: %s" % req["op"], "ida")
            is_err(other.request(dict(req, secret="0" * 32)), "forbidden",
                   "wrong secret: %s" % req["op"])
        after_rec = get(owner, "ida")
        t.eq((after_rec["state"], after_rec["last_seen"], after_rec["status"]),
             (before_rec["state"], before_rec["last_seen"], "active"),
             "forbidden requests changed nothing")
        t.eq(other.request({"op": "work.get", "work_id": "id/2"}).get("error"), "not_found",
             "forbidden claim created nothing")
        t.eq(other.request({"op": "work.get", "work_id": "id/1"})["claim"]["state"], "claimed",
             "forbidden release/complete changed nothing")
        # With the secret the other connection may act.
        is_ok(other.request({"op": "session.heartbeat", "session": "ida", "secret": secret}),
              "heartbeat with secret")
        rep = other.request({"op": "session.status", "session": "ida", "secret": secret,
                             "state": "busy"})
        t.eq(rep.get("session", {}).get("state"), "busy", "status with secret")
        rep = other.request({"op": "work.claim", "session": "ida", "secret": secret,
                             "work_id": "id/2"})
        t.eq((rep.get("ok"), rep.get("holder")), (True, "ida"), "claim with secret")
        # The owner still acts without the secret.
        is_ok(owner.request({"op": "session.heartbeat", "session": "ida"}), "owner still owns")
        # Re-register an active id from another connection.
        is_err(other.request({"op": "session.register", "session": "ida"}), "forbidden",
               "re-register active id without secret", "ida")
        t.eq(get(owner, "ida")["name"], "Ida", "refused re-register changed nothing")
        is_err(other.request({"op": "session.register", "session": "ida", "secret": "f" * 32}),
               "forbidden", "re-register with a wrong secret")
        rep = other.request({"op": "session.register", "session": "ida", "secret": secret})
        t.eq((rep.get("ok"), rep.get("resumed"), rep.get("secret")), (True, True, secret),
             "re-register with secret resumes, same secret")
        ev = next_event(sub, "session.connected",
                        lambda p: p["session"] == "ida" and p["resumed"])
        t.check(ev is not None, "session.connected resumed true")
        rec = get(owner, "ida")
        t.eq((rec["name"], rec["capabilities"], rec["claims"]), ("Ida", ["x"], 2),
             "resume keeps name, capabilities and claims")
        # The same connection may register again (resume) without the secret.
        rep = other.request({"op": "session.register", "session": "ida", "name": "Ida2",
                             "heartbeat_ms": LONG})
        t.eq((rep.get("ok"), rep.get("resumed")), (True, True), "registering connection resumes")
        is_err(other.request({"op": "session.heartbeat", "session": "ghost"}), "not_found",
               "heartbeat of an unknown session", "ghost")
        owner.request({"op": "session.unregister", "session": "ida", "secret": secret})

    # ---- ttl_ms: a script session across short connections, no heartbeats
    with fresh(b) as c3:
        r = register(c3, "script", heartbeat_ms=100, ttl_ms=1500)
        t.eq(r["timeout_ms"], 1500, "ttl_ms longer than 3 x heartbeat is the timeout")
        register(c3, "noscript", heartbeat_ms=100)  # gone after 300 ms
    secret = r["secret"]
    # Taking it back with only the id and the secret (what a script's next
    # call does) keeps its heartbeat and ttl: absent fields stay.
    with fresh(b) as cs:
        rep = cs.request({"op": "session.register", "session": "script", "secret": secret})
        t.eq((rep.get("resumed"), rep.get("heartbeat_ms"), rep.get("timeout_ms")),
             (True, 100, 1500), "resume with id + secret keeps heartbeat_ms and ttl_ms")
        if rep.get("timeout_ms") != 1500:  # restore it so the section below still runs
            cs.request({"op": "session.register", "session": "script", "secret": secret,
                        "heartbeat_ms": 100, "ttl_ms": 1500})
    token = None
    for i in range(5):
        time.sleep(0.5)  # 2.5 s in all: past 3 x 100 ms many times, past the ttl once
        with fresh(b) as cs:
            if i == 0:
                rep = cs.request({"op": "work.claim", "session": "script", "secret": secret,
                                  "work_id": "sc/1"})
                token = rep.get("token")
                t.check(rep.get("ok"), "script claims from connection 1: %r" % rep)
            elif i == 4:
                rep = cs.request({"op": "work.complete", "session": "script", "secret": secret,
                                  "work_id": "sc/1", "token": token, "result": "done"})
                t.eq(rep.get("state"), "completed", "script completes from connection 5")
            else:
                rep = cs.request({"op": "session.heartbeat", "session": "script",
                                  "secret": secret})
                t.eq((rep.get("ok"), rep.get("status")), (True, "active"),
                     "script heartbeat from connection %d" % (i + 1))
                # The connection that presented the secret took it over
                # (coordination.md): it acts as it without the secret now.
                rep = cs.request({"op": "session.heartbeat", "session": "script"})
                t.eq((rep.get("ok"), rep.get("error")), (True, None),
                     "connection %d acts as the TTL session it took over, without the secret"
                     % (i + 1))
    t.eq(get(c, "script")["status"], "active", "ttl session alive after 2.5 s of short calls")
    t.eq(get(c, "noscript")["status"], "gone", "same heartbeat without ttl is gone")
    last = time.time()
    got = next_event(sub, "session.disconnected", lambda p: p["session"] == "script", timeout=3)
    t.check(got is not None and got[0]["reason"] == "timeout" and
            1.3 <= got[2] - last <= 2.2,
            "ttl session times out ~1.5 s after its last call (%r)" %
            ((got and (got[0], got[2] - last)),))
    # A TTL session still heard within its heartbeat interval keeps its
    # connection: another one with the secret acts as it, but does not
    # take it (a gateway heartbeats hosted sessions without their secrets).
    with fresh(b) as ca, fresh(b) as cb:
        r = register(ca, "hosted", heartbeat_ms=5000, ttl_ms=600000)
        rep = cb.request({"op": "session.heartbeat", "session": "hosted", "secret": r["secret"]})
        t.eq(rep.get("ok"), True, "another connection with the secret acts as it: %r" % rep)
        rep = cb.request({"op": "session.heartbeat", "session": "hosted"})
        t.eq(rep.get("error"), "forbidden", "... but did not take it over: %r" % rep)
        rep = ca.request({"op": "session.heartbeat", "session": "hosted"})
        t.eq(rep.get("ok"), True, "its own connection keeps it: %r" % rep)

    # ---- bad input on every session op: bad_request naming the field
    register(c, "eve", heartbeat_ms=LONG)
    before_list = c.request({"op": "session.list", "all": True})["sessions"]
    before_seq = c.request({"op": "state"})["history"]["last_seq"]
    R = "session.register"
    bad = [
        ({"op": R, "session": "a.b"}, "'session'"),
        ({"op": R, "session": "a b"}, "'session'"),
        ({"op": R, "session": "x*"}, "'session'"),
        ({"op": R, "session": "x" * 65}, "'session'"),
        ({"op": R, "session": ""}, "'session'"),
        ({"op": R, "session": 5}, "'session'"),
        ({"op": R, "session": "eve2", "capabilities": "python"}, "'capabilities'"),
        ({"op": R, "session": "eve2", "capabilities": ["python", 3]}, "'capabilities'"),
        ({"op": R, "session": "eve2", "capabilities": ["c"] * 257}, "capabilities"),
        ({"op": R, "session": "eve2", "capabilities": ["c" * 257]}, "'capabilities'"),
        ({"op": R, "session": "eve2", "capabilities": ["python", ""]}, "'capabilities'"),
        ({"op": R, "session": "eve2", "metadata": {"blob": b"m" * 65536}}, "'metadata'"),
        ({"op": R, "session": "eve2", "metadata": "m1"}, "'metadata'"),
        ({"op": R, "session": "eve2", "metadata": [1, 2]}, "'metadata'"),
        ({"op": R, "session": "eve2", "heartbeat_ms": "5000"}, "'heartbeat_ms'"),
        ({"op": R, "session": "eve2", "heartbeat_ms": 99}, "'heartbeat_ms'"),
        ({"op": R, "session": "eve2", "heartbeat_ms": 0}, "'heartbeat_ms'"),
        ({"op": R, "session": "eve2", "heartbeat_ms": 3600001}, "'heartbeat_ms'"),
        ({"op": R, "session": "eve2", "heartbeat_ms": -1}, "'heartbeat_ms'"),
        ({"op": R, "session": "eve2", "heartbeat_ms": 1.5}, "'heartbeat_ms'"),
        ({"op": R, "session": "eve2", "ttl_ms": "1s"}, "'ttl_ms'"),
        ({"op": R, "session": "eve2", "ttl_ms": -5}, "'ttl_ms'"),
        ({"op": R, "session": "eve2", "ttl_ms": 30 * 86400000 + 1}, "'ttl_ms'"),
        ({"op": R, "session": "eve2", "ttl_ms": 2**64 - 1}, "'ttl_ms'"),  # no sentinel
        ({"op": R, "session": "eve", "ttl_ms": 2**64 - 1}, "'ttl_ms'"),  # nor on a resume
        ({"op": R, "session": "eve2", "name": 7}, "'name'"),
        ({"op": R, "session": "eve2", "name": "n" * 4097}, "'name'"),
        # A NUL would cut the stored text short in silence ("ev" for
        # "ev\0il", a capability "py" that session.find then matches).
        ({"op": R, "session": "eve2", "name": "ev\x00il"}, "'name'"),
        ({"op": R, "session": "eve2", "capabilities": ["py\x00thon"]}, "'capabilities'"),
        ({"op": "session.status", "session": "eve", "text": "abc\x00def"}, "'text'"),
        ({"op": "session.status", "session": "eve", "current_work": "job\x00x"}, "'current_work'"),
        ({"op": R, "session": "eve2", "secret": 123}, "'secret'"),
        ({"op": R, "session": "eve", "heartbeat_ms": 5}, "'heartbeat_ms'"),  # on an existing id
        ({"op": "session.heartbeat"}, "'session'"),
        ({"op": "session.heartbeat", "session": 5}, "'session'"),
        ({"op": "session.heartbeat", "session": "eve", "secret": 5}, "'secret'"),
        ({"op": "session.status", "session": "eve", "state": "sleeping"}, "'state'"),
        ({"op": "session.status", "session": "eve", "state": 1}, "'state'"),
        ({"op": "session.status", "session": "eve", "state": ["busy"]}, "'state'"),
        ({"op": "session.status", "session": "eve", "current_work": 5}, "'current_work'"),
        ({"op": "session.status", "session": "eve", "text": {"a": 1}}, "'text'"),
        ({"op": "session.status", "session": "eve", "text": "t" * 4097}, "'text'"),
        ({"op": "session.status", "state": "busy"}, "'session'"),
        ({"op": "session.unregister"}, "'session'"),
        ({"op": "session.unregister", "session": ["eve"]}, "'session'"),
        ({"op": "session.get"}, "'session'"),
        ({"op": "session.get", "session": 1}, "'session'"),
        ({"op": "session.list", "all": "yes"}, "'all'"),
        ({"op": "session.list", "all": True, "window_ms": "1h"}, "'window_ms'"),
        ({"op": "session.list", "window_ms": -1}, "'window_ms'"),
        ({"op": "session.list", "limit": 0}, "'limit'"),
        ({"op": "session.list", "limit": 100001}, "'limit'"),
        ({"op": "session.list", "limit": "10"}, "'limit'"),
        ({"op": "session.list", "after": 5}, "'after'"),
        ({"op": "session.list", "after": "x" * 65}, "'after'"),
        ({"op": "session.find", "available": True, "limit": -1}, "'limit'"),
        ({"op": "session.find"}, "capability"),
        ({"op": "session.find", "capability": 5}, "'capability'"),
        ({"op": "session.find", "capabilities": "python"}, "'capabilities'"),
        ({"op": "session.find", "capabilities": []}, "capability"),  # an empty list filters nothing
        ({"op": "session.find", "capabilities": ["python", None]}, "'capabilities'"),
        ({"op": "session.find", "capability": "python", "available": "true"}, "'available'"),
    ]
    for req, field in bad:
        rep = c.request(req)
        is_err(rep, "bad_request", "bad input %.120r" % (req,), field)
    # Ids that can never exist on ops that act as or read a session: the
    # broker answers not_found (no such session); nothing changes either way.
    for op in ("session.heartbeat", "session.unregister", "session.get"):
        for sid in ("a.b", "x" * 65):
            rep = c.request({"op": op, "session": sid})
            t.check(rep.get("error") in ("not_found", "bad_request"),
                    "%s with impossible id %s...: %r" % (op, sid[:8], rep))
    after_list = c.request({"op": "session.list", "all": True})["sessions"]
    # A bad request from the owning connection may count as a sign of life
    # (last_seen, timeout_at); nothing else may change.
    live = ("last_seen", "timeout_at")
    strip = lambda recs: [{k: v for k, v in r.items() if k not in live} for r in recs]  # noqa: E731
    diff = [(x["session"], k, x[k], y[k]) for x, y in zip(before_list, after_list)
            for k in x if x[k] != y.get(k) and k not in live]
    t.check(strip(after_list) == strip(before_list) and len(after_list) == len(before_list),
            "bad input changed no session: %r" % diff[:5])
    t.eq(c.request({"op": "state"})["history"]["last_seq"], before_seq,
         "bad input published no event")
    t.eq(c.request({"op": "session.get", "session": "eve2"}).get("error"), "not_found",
         "no session created by bad register")
    t.check(c.request({"op": "ping"})["ok"], "broker alive after bad input")
    sub.close()
shutil.rmtree(tmp, ignore_errors=True)

# ============================================================================
# 2. --claims-on-disconnect keep: the claim outlives its holder until the lease
# ============================================================================
with Broker(extra=["--heartbeat", "200ms", "--claims-on-disconnect", "keep"]) as b, \
        Client(b) as c:
    sub = events_sub(b)
    register(c, "k1")  # gone after 600 ms
    rep = c.request({"op": "work.claim", "session": "k1", "work_id": "keep/1", "ttl_ms": 1500})
    t_claim = time.time()
    got = next_event(sub, "session.disconnected", lambda p: p["session"] == "k1", timeout=3)
    t.check(got is not None and got[0]["reason"] == "timeout" and got[0]["released"] == 0,
            "keep: disconnected by timeout, nothing released: %r" % (got and got[0]))
    cl = c.request({"op": "work.get", "work_id": "keep/1"})["claim"]
    t.eq((cl["state"], cl["holder"], cl["token"]), ("claimed", "k1", rep["token"]),
         "keep: claim still held by the gone session")
    register(c, "k2", heartbeat_ms=LONG)
    den = c.request({"op": "work.claim", "session": "k2", "work_id": "keep/1"})
    t.eq((den.get("error"), den.get("holder")), ("denied", "k1"), "keep: others still denied")
    got = next_event(sub, "work.released", lambda p: p["work_id"] == "keep/1", timeout=3)
    t.check(got is not None and got[0]["reason"] == "expired",
            "keep: released only when the lease ends, reason expired: %r" % (got and got[0]))
    if got:
        t.check(1.4 <= got[2] - t_claim <= 2.0, "keep: at the lease end (%.2fs)" %
                (got[2] - t_claim))
    t.eq(c.request({"op": "work.get", "work_id": "keep/1"})["claim"]["state"], "expired",
         "keep: expired after the lease")
    # An explicit unregister still releases (the session said it is done).
    c.request({"op": "work.claim", "session": "k2", "work_id": "keep/2"})
    rep = c.request({"op": "session.unregister", "session": "k2"})
    t.eq(rep.get("released"), 1, "keep: unregister releases")
    sub.close()

# ============================================================================
# 3. tokens: one shared fabric token
# ============================================================================
with Broker(extra=["--token", "T0pSecret"], token="T0pSecret") as b, Client(b) as c:
    is_ok(c.request({"op": "ping"}), "ping needs no token")
    is_ok(c.request({"op": "health"}), "health needs no token")
    rep = c.request({"op": "session.register", "session": "tk", "auth": "T0pSecret",
                     "heartbeat_ms": LONG})
    is_ok(rep, "register with the token")
    rc = c.request({"op": "work.claim", "session": "tk", "work_id": "tk/1", "auth": "T0pSecret"})
    is_ok(rc, "claim with the token")
    ops = [{"op": "session.register", "session": "tk2"},
           {"op": "session.heartbeat", "session": "tk"},
           {"op": "session.status", "session": "tk", "state": "busy"},
           {"op": "session.get", "session": "tk"}, {"op": "session.list"},
           {"op": "session.find", "capability": "x"},
           {"op": "work.claim", "session": "tk", "work_id": "tk/2"},
           {"op": "work.get", "work_id": "tk/1"}, {"op": "work.list"},
           {"op": "work.complete", "session": "tk", "work_id": "tk/1", "token": rc["token"]},
           {"op": "state"}, {"op": "history"},
           {"op": "publish", "topic": "x.y", "payload": b"1"},
           {"op": "session.unregister", "session": "tk"}]
    for req in ops:
        is_err(c.request(req), "unauthorized", "no token: %s" % req["op"], "token")
        is_err(c.request(dict(req, auth="wrong")), "unauthorized",
               "wrong token: %s" % req["op"], "wrong token")
        is_err(c.request(dict(req, auth=7)), "unauthorized", "token not a string: %s" % req["op"])
    rec = c.request({"op": "session.get", "session": "tk", "auth": "T0pSecret"})["session"]
    t.eq((rec["state"], rec["claims"]), ("available", 1), "unauthorized requests changed nothing")
    t.eq(c.request({"op": "session.get", "session": "tk2", "auth": "T0pSecret"}).get("error"),
         "not_found", "unauthorized register created nothing")
    for req in ops:
        if req["op"] == "work.complete":
            continue
        rep = c.request(dict(req, auth="T0pSecret"))
        t.check(rep.get("ok") or rep.get("error") == "conflict", "with token: %s %r" %
                (req["op"], rep))
    # On a fabric with a token, the access token travels as "auth" and the
    # fencing token as "token": a holder can renew, release and complete.
    register(c, "tk3", heartbeat_ms=LONG, auth="T0pSecret")
    rc = c.request({"op": "work.claim", "session": "tk3", "work_id": "tk/9", "auth": "T0pSecret"})
    is_ok(rc, "claim on a --token fabric")
    is_ok(c.request({"op": "work.renew", "session": "tk3", "work_id": "tk/9",
                     "auth": "T0pSecret", "token": rc.get("token")}), "renew on a --token fabric")
    is_ok(c.request({"op": "work.complete", "session": "tk3", "work_id": "tk/9",
                     "auth": "T0pSecret", "token": rc.get("token")}),
          "complete on a --token fabric")

# ============================================================================
# 4. tokens file: a token acts only as the sessions it lists; replacement
# ============================================================================
tmp = tempfile.mkdtemp(prefix="nexus-tok-")
tokfile = os.path.join(tmp, "tokens")
with open(tokfile, "w") as fh:
    fh.write("# worker tokens\nTOK1 w1\nTOK2 w2,w3\nADMIN *\n")
with Broker(extra=["--tokens-file", tokfile], token="ADMIN") as b, Client(b) as c, Client(b) as c2:
    sub = subscriber(b, "session.", "work.")
    # settle with a token-carrying publish
    deadline = time.time() + 5
    while time.time() < deadline:
        c.request({"op": "publish", "topic": "session.settle.direct", "payload": b"", "auth": "ADMIN"})
        if sub.poll(100):
            while sub.poll(50):
                sub.recv_multipart()
            break
    is_err(c.request({"op": "session.register", "session": "w1"}), "unauthorized",
           "tokens file: no token")
    is_err(c.request({"op": "session.register", "session": "w1", "auth": "TOK3"}),
           "unauthorized", "tokens file: unknown token")
    r1 = c.request({"op": "session.register", "session": "w1", "auth": "TOK1",
                    "heartbeat_ms": LONG})
    is_ok(r1, "TOK1 registers w1")
    is_err(c.request({"op": "session.register", "session": "w2", "auth": "TOK1"}), "forbidden",
           "TOK1 may not register w2", "w2")
    is_err(c.request({"op": "session.register", "auth": "TOK1"}), "forbidden",
           "TOK1 may not register an assigned id")
    r2 = c2.request({"op": "session.register", "session": "w2", "auth": "TOK2",
                     "heartbeat_ms": LONG})
    is_ok(r2, "TOK2 registers w2")
    is_ok(c2.request({"op": "session.register", "session": "w3", "auth": "TOK2",
                      "heartbeat_ms": LONG}), "TOK2 registers w3")
    # TOK1 may not act as w2, not even with w2's secret.
    for req in ({"op": "session.heartbeat"}, {"op": "session.status", "state": "busy"},
                {"op": "work.claim", "work_id": "f/1"}, {"op": "session.unregister"}):
        is_err(c.request(dict(req, session="w2", auth="TOK1", secret=r2["secret"])), "forbidden",
               "TOK1 acting as w2 (%s)" % req["op"], "w2")
    t.eq(c.request({"op": "work.get", "work_id": "f/1", "auth": "TOK1"}).get("error"),
         "not_found", "forbidden claim created nothing")
    # The owning connection with the wrong token is refused too.
    is_err(c2.request({"op": "session.heartbeat", "session": "w2", "auth": "TOK1"}), "forbidden",
           "owner connection with a token for another session")
    is_ok(c2.request({"op": "session.heartbeat", "session": "w2", "auth": "TOK2"}),
          "owner with its token")
    is_ok(c.request({"op": "session.heartbeat", "session": "w2", "auth": "ADMIN",
                     "secret": r2["secret"]}), "'*' token with the secret acts as w2")
    # A '*' token is the fabric's, not w2's: from another connection it
    # still needs the secret.
    before_w2 = c.request({"op": "session.get", "session": "w2", "auth": "ADMIN"})["session"]
    for req in ({"op": "session.heartbeat"}, {"op": "session.status", "state": "away"},
                {"op": "work.claim", "work_id": "f/2"}):
        is_err(c.request(dict(req, session="w2", auth="ADMIN")), "forbidden",
               "'*' token without the secret (%s)" % req["op"], "w2")
    after_w2 = c.request({"op": "session.get", "session": "w2", "auth": "ADMIN"})["session"]
    t.eq((after_w2["state"], after_w2["last_seen"]), (before_w2["state"], before_w2["last_seen"]),
         "refused '*' requests changed nothing")
    # A token that names w2 is w2's own: it acts as w2 from any connection,
    # without the secret (a restarted worker holding only its token).
    is_ok(c.request({"op": "session.heartbeat", "session": "w2", "auth": "TOK2"}),
          "the token that names w2 acts as it from another connection")
    with fresh(b) as c_w2:
        g = c_w2.request({"op": "work.claim", "session": "w2", "work_id": "own/1", "auth": "TOK2"})
        is_ok(g, "claim with w2's own token from a new connection")
        is_ok(c_w2.request({"op": "session.status", "session": "w2", "auth": "TOK2",
                            "state": "busy", "text": "restarted"}),
              "status with w2's own token from a new connection")
    with fresh(b) as c_w2b:
        rep = c_w2b.request({"op": "work.complete", "session": "w2", "work_id": "own/1",
                             "auth": "TOK2", "token": g.get("token"), "result": "done"})
        t.eq((rep.get("ok"), rep.get("state")), (True, "completed"),
             "a later connection completes w2's work with its token, no re-register: %r" % rep)
    is_ok(c2.request({"op": "session.heartbeat", "session": "w2", "auth": "TOK2"}),
          "the owning connection still owns w2")
    t.eq(c.request({"op": "session.get", "session": "w2", "auth": "ADMIN"})["session"]["status"],
         "active", "w2 was never replaced")
    # Reads need a valid token but no session right.
    is_ok(c.request({"op": "session.get", "session": "w2", "auth": "TOK1"}), "TOK1 reads w2")
    # Replacement: a token that names w1 takes it over from another connection.
    rc = c.request({"op": "work.claim", "session": "w1", "work_id": "r/1", "auth": "TOK1"})
    is_ok(rc, "w1 claims r/1")
    with fresh(b) as c3:
        rep = c3.request({"op": "session.register", "session": "w1", "auth": "TOK1",
                          "heartbeat_ms": LONG})
        t.eq((rep.get("ok"), rep.get("resumed")), (True, False), "TOK1 replaces w1")
        t.check(rep.get("secret") and rep["secret"] != r1["secret"], "replacement gets a new secret")
        ev = next_event(sub, "session.disconnected", lambda p: p["session"] == "w1")
        t.check(ev is not None and ev[0]["reason"] == "replaced",
                "session.disconnected reason replaced: %r" % (ev and ev[0]))
        ev = next_event(sub, "work.released", lambda p: p["work_id"] == "r/1")
        t.check(ev is not None and ev[0]["reason"] == "holder_gone",
                "replaced session's claim released holder_gone")
        ev = next_event(sub, "session.connected", lambda p: p["session"] == "w1")
        t.check(ev is not None and ev[0]["resumed"] is False, "connected (not resumed) after replace")
        # The old connection and the old secret no longer act as w1 (with
        # a '*' token, which needs the connection or the secret). TOK1
        # names w1, so it acts as w1 from any connection, the old one too.
        is_err(c.request({"op": "session.heartbeat", "session": "w1", "auth": "ADMIN"}),
               "forbidden", "old connection after replacement")
        is_err(c.request({"op": "session.heartbeat", "session": "w1", "auth": "ADMIN",
                          "secret": r1["secret"]}), "forbidden", "old secret after replacement")
        is_ok(c.request({"op": "session.heartbeat", "session": "w1", "auth": "TOK1"}),
              "w1's own token acts as it from the old connection")
        is_ok(c3.request({"op": "session.heartbeat", "session": "w1", "auth": "TOK1"}),
              "new connection owns w1")
    sub.close()
shutil.rmtree(tmp, ignore_errors=True)

# ============================================================================
# 5. restart: stale, active again on heartbeat with the secret, or timeout
# ============================================================================
data = tempfile.mkdtemp(prefix="nexus-sess-restart-")
b = Broker(data_dir=data, extra=["--heartbeat", "200ms"])
try:
    b.start()
    with Client(b) as c:
        ra = register(c, "ra", heartbeat_ms=1000, name="RA", capabilities=["py"])  # 3 s timeout
        rb = register(c, "rb", heartbeat_ms=500)  # 1.5 s timeout
        ca = c.request({"op": "work.claim", "session": "ra", "work_id": "rs/a"})
        cb = c.request({"op": "work.claim", "session": "rb", "work_id": "rs/b"})
        c.request({"op": "session.status", "session": "ra", "state": "busy", "text": "t"})
        # rb's timeout must not run out before the stop (CI under ASan and
        # load once took longer than 900 ms from rb's registration to the
        # SIGTERM, and rb came back gone): it heartbeats last.
        is_ok(c.request({"op": "session.heartbeat", "session": "rb"}), "rb heartbeats before the stop")
    t.eq(b.stop(), 0, "SIGTERM exits 0")
    b.start()
    started = time.time()
    with Client(b) as c:
        a, bb = get(c, "ra"), get(c, "rb")
        t.eq((a["status"], bb["status"]), ("stale", "stale"), "sessions come back stale")
        t.eq((a["name"], a["capabilities"], a["state"], a["text"], a["claims"]),
             ("RA", ["py"], "busy", "t", 1), "stale record kept its fields")
        t.eq(ids(c.request({"op": "session.list"})), ["ra", "rb"], "stale sessions are listed")
        t.eq(ids(c.request({"op": "session.find", "capability": "py", "available": True})), [],
             "stale sessions are not available")
        # Without the secret nobody owns them now.
        is_err(c.request({"op": "session.heartbeat", "session": "ra"}), "forbidden",
               "stale session: heartbeat without the secret")
        rep = c.request({"op": "session.heartbeat", "session": "ra", "secret": ra["secret"]})
        t.eq((rep.get("ok"), rep.get("status")), (True, "active"),
             "heartbeat with the secret makes it active")
        t.eq(get(c, "ra")["status"], "active", "ra active")
        # That connection now owns it: no secret needed.
        is_ok(c.request({"op": "session.heartbeat", "session": "ra"}),
              "the heartbeating connection took the session over")
        rep = c.request({"op": "work.complete", "session": "ra", "work_id": "rs/a",
                         "token": ca["token"]})
        t.eq(rep.get("state"), "completed", "resumed session completes its claim")
        # rb never heartbeats: gone on its timeout, with reason timeout.
        gone = wait_until(lambda: get(c, "rb")["status"] == "gone", timeout=5.0)
        took = time.time() - started
        t.check(gone, "rb times out after the restart")
        t.check(1.0 <= took <= 3.5, "rb gets one full timeout after the restart (%.2fs)" % took)
        hist = history(c, "session.disconnected")
        t.check(("session.disconnected", {"session": "rb", "reason": "timeout", "released": 1})
                in hist, "session.disconnected rb timeout in history: %r" % hist[-2:])
        rel = [p for tp, p in history(c, "work.released") if p["work_id"] == "rs/b"]
        t.check(len(rel) == 1 and rel[0]["reason"] == "holder_gone" and
                rel[0]["token"] == cb["token"], "rb's claim released holder_gone: %r" % rel)
        t.eq(get(c, "ra")["status"], "active", "ra still active")
        # A resumed session re-registers with its secret from a new connection.
        with fresh(b) as c4:
            rep = c4.request({"op": "session.register", "session": "ra", "secret": ra["secret"]})
            t.eq((rep.get("ok"), rep.get("resumed"), rep.get("secret")), (True, True, ra["secret"]),
                 "register with secret after restart resumes")
finally:
    b.stop()
    b.cleanup()
    shutil.rmtree(data, ignore_errors=True)

# The snapshot file keeps up: a change in the last second before a stop is
# in it, and a stale session made active by its heartbeat shows as active.
snap_dir = tempfile.mkdtemp(prefix="nexus-snap-")
snap_file = os.path.join(snap_dir, "state.json")
data = os.path.join(snap_dir, "data")


def snap_sessions():
    try:
        with open(snap_file) as fh:
            return {x["session"]: x for x in json.load(fh)["sessions"]}
    except (OSError, ValueError, KeyError):
        return None


b = Broker(data_dir=data, extra=["--snapshot-file", snap_file])
b.start()
with Client(b) as c:
    rep = c.request({"op": "session.register", "session": "snap-z", "heartbeat_ms": 60000})
    is_ok(rep, "register snap-z")
    z_secret = rep.get("secret")
    is_ok(c.request({"op": "session.status", "session": "snap-z", "text": "last words"}),
          "status just before the stop")
b.stop()
got = snap_sessions()
t.eq((got or {}).get("snap-z", {}).get("text"), "last words",
     "a change just before SIGTERM is in the snapshot file")
b = Broker(data_dir=data, extra=["--snapshot-file", snap_file])
b.start()
with Client(b) as c:
    t.check(wait_until(lambda: (snap_sessions() or {}).get("snap-z", {}).get("status") == "stale",
                       3.0), "after a restart the snapshot shows the session stale")
    is_ok(c.request({"op": "session.heartbeat", "session": "snap-z", "secret": z_secret}),
          "heartbeat with the secret")
    t.check(wait_until(lambda: (snap_sessions() or {}).get("snap-z", {}).get("status") == "active",
                       2.0), "the heartbeat makes it active in the snapshot within ~1 s")
b.stop()
b.cleanup()
shutil.rmtree(snap_dir, ignore_errors=True)

# The snapshot's directory goes away while nexusd runs: the write is tried
# again every second, but the failure is logged once (not a line a
# second), its end once, and a new failure once again.
snap_dir = tempfile.mkdtemp(prefix="nexus-snap-")
gone_dir = os.path.join(snap_dir, "gone")
os.mkdir(gone_dir)
snap_file = os.path.join(gone_dir, "state.json")
data = os.path.join(snap_dir, "data")
FAIL = "cannot write snapshot_file " + snap_file
AGAIN = "snapshot_file %s written again" % snap_file
b = Broker(data_dir=data, extra=["--snapshot-file", snap_file])
b.start()
try:
    t.check(wait_until(lambda: os.path.exists(snap_file), 3.0), "the snapshot is written")
    with Client(b) as c:
        shutil.rmtree(gone_dir)
        is_ok(c.request({"op": "session.register", "session": "snap-gone", "heartbeat_ms": LONG}),
              "register while the snapshot's directory is gone")
        t.check(wait_until(lambda: FAIL in b.logs(), 3.0), "the failed write is logged")
        time.sleep(3.5)  # three more tries, at least
        t.eq(b.logs().count(FAIL), 1, "a failing snapshot is logged once, not every second")
        os.mkdir(gone_dir)
        t.check(wait_until(lambda: AGAIN in b.logs() and os.path.exists(snap_file), 3.0),
                "the snapshot is written again once the directory is back, and it says so")
        t.check("snap-gone" in open(snap_file).read(), "with the change made meanwhile")
        shutil.rmtree(gone_dir)
        is_ok(c.request({"op": "session.status", "session": "snap-gone", "text": "again"}),
              "a change while it is gone again")
        t.check(wait_until(lambda: b.logs().count(FAIL) == 2, 3.0),
                "a new failure after the recovery is logged again: %r" % b.logs()[-600:])
        time.sleep(2.5)
        t.eq(b.logs().count(FAIL), 2, "and once only")
        t.eq(b.logs().count(AGAIN), 1, "the recovery is logged once")
finally:
    b.stop()
    b.cleanup()
    shutil.rmtree(snap_dir, ignore_errors=True)

# A store that is full refuses the claim before anything changes; the
# connection that registered a session still owns it afterwards.
with Broker(extra=["--map-size", "1M", "--map-max", "1M"]) as b, Client(b) as c:
    is_ok(c.request({"op": "session.register", "session": "full-s", "heartbeat_ms": 60000}),
          "register before filling the store")
    full = None
    for i in range(5000):
        r = c.request({"op": "work.claim", "session": "full-s", "work_id": "fill/%d" % i,
                       "ttl_ms": 60000, "description": "d" * 2000})
        if not r.get("ok"):
            full = r
            break
    t.eq((full or {}).get("error"), "store_full", "claims fill the store: %r" % (full,))
    r = c.request({"op": "session.heartbeat", "session": "full-s"})
    t.eq((r.get("ok"), r.get("status")), (True, "active"),
         "after the refused claim its connection still acts as the session: %r" % r)
    t.eq(c.request({"op": "work.get", "work_id": "fill/0"}).get("claim", {}).get("holder"),
         "full-s", "what was committed before is still there")

# session.list and session.find answer at most `limit` sessions (1000 by
# default), the smallest ids, sorted, with `truncated` when more pass, and
# `after` gives the next page: every session once across the pages. A reply
# of every session was tens of MB at sessions_max, built in the loop.
with Broker() as b, Client(b) as c:
    rnd = random.Random(11)
    sids = list(dict.fromkeys("pg-%05d" % rnd.randrange(10 ** 5) for _ in range(1300)))
    for sid in sids:
        c.send_raw(P({"op": "session.register", "session": sid, "heartbeat_ms": 600000,
                      "capabilities": ["odd"] if int(sid[3:]) % 2 else []}))
    t.eq(sum(c.recv(timeout=30).get("ok") is True for _ in sids), len(sids),
         "%d sessions registered" % len(sids))
    rep = c.request({"op": "session.list"})
    t.eq(ids(rep), sorted(sids)[:1000], "session.list: the 1000 smallest ids by default, sorted")
    t.eq(rep.get("truncated"), True, "session.list: truncated when more pass")
    pages, after = [], None
    for _ in range(20):
        q = {"op": "session.list", "limit": 250}
        if after:
            q["after"] = after
        rep = c.request(q)
        is_ok(rep, "session.list page after %r" % after)
        pages.append(ids(rep))
        t.eq(rep.get("matched"), len(sids), "session.list page after %r: matched counts all" % after)
        if not rep.get("truncated"):
            break
        after = pages[-1][-1]
    t.eq([s for p in pages for s in p], sorted(sids), "pages of 250: every session once, in order")
    t.eq([len(p) for p in pages[:-1]], [250] * (len(pages) - 1), "every page but the last is full")
    odd = sorted(s for s in sids if int(s[3:]) % 2)
    rep = c.request({"op": "session.find", "capability": "odd", "limit": 10, "after": odd[4]})
    t.eq((ids(rep), rep.get("truncated"), rep.get("matched")), (odd[5:15], len(odd) > 15, len(odd)),
         "session.find with after and limit: the next ten that pass, and how many pass")
    rep = c.request({"op": "session.list", "limit": 100000})
    t.eq((len(ids(rep)), rep.get("truncated")), (len(sids), False), "a limit over the count: all")

# session.list with a window too large to add to a time shows every gone
# session (it used to wrap and show none); session.status counts claims.
with Broker() as b, Client(b) as c:
    register(c, "w-gone")
    c.request({"op": "session.unregister", "session": "w-gone"})
    for w in (0, 2**40, 2**63, 2**64 - 1):
        rep = c.request({"op": "session.list", "all": True, "window_ms": w})
        t.check("w-gone" in [x["session"] for x in rep.get("sessions", [])],
                "list all with window_ms %d shows the gone session: %r" % (w, rep))
    register(c, "w-held")
    c.request({"op": "work.claim", "session": "w-held", "work_id": "w/1", "ttl_ms": 60000})
    rep = c.request({"op": "session.status", "session": "w-held", "text": "x"})
    t.eq(rep.get("session", {}).get("claims"), 1, "session.status reply counts the claim held")

# A client may choose its ZeroMQ routing id and so take the id of a
# connection that has gone: a chosen id never identifies a connection, its
# sessions act only with their secret.
with Broker() as b:
    ctx = zmq.Context.instance()

    def dealer(ident):
        d = ctx.socket(zmq.DEALER)
        d.linger = 0
        d.setsockopt(zmq.ROUTING_ID, ident)
        d.connect(b.control)
        return d

    def ask(d, req):
        d.send(msgpack.packb(req, use_bin_type=True))
        if not d.poll(5000):
            return {}
        return msgpack.unpackb(d.recv(), raw=False)

    a = dealer(b"worker-A")
    rep = ask(a, {"op": "session.register", "session": "chosen-a", "heartbeat_ms": 60000, "id": 1})
    t.check(rep.get("ok"), "register from a chosen routing id: %r" % rep)
    secret = rep.get("secret")
    rep = ask(a, {"op": "work.claim", "session": "chosen-a", "work_id": "ch/1", "ttl_ms": 60000,
                  "secret": secret, "id": 2})
    t.check(rep.get("ok"), "with the secret it acts as the session: %r" % rep)
    token = rep.get("token")
    a.close()
    time.sleep(0.2)
    thief = dealer(b"worker-A")
    rep = ask(thief, {"op": "work.release", "session": "chosen-a", "work_id": "ch/1",
                      "token": token, "id": 3})
    t.eq(rep.get("error"), "forbidden", "the same chosen id on a new connection cannot act: %r" % rep)
    rep = ask(thief, {"op": "session.unregister", "session": "chosen-a", "id": 4})
    t.eq(rep.get("error"), "forbidden", "nor unregister the session: %r" % rep)
    with Client(b) as c:
        t.eq(c.request({"op": "work.get", "work_id": "ch/1"}).get("claim", {}).get("state"),
             "claimed", "the claim is untouched")
    thief.close()

# ============================================================================
# sessions_max: a refused register changes nothing; a replacement or a new
# run of a gone id needs no new slot; at the limit the oldest gone session
# without claims is forgotten, one that keeps claims is not.
# ============================================================================
tmp = tempfile.mkdtemp(prefix="nexus-smax-")
tokfile = os.path.join(tmp, "tokens")
with open(tokfile, "w") as fh:
    fh.write("TA a\nTB b\nTC c,d,loop1,loop2,loop3,loop4,loop5\nADMIN *\n")
with Broker(extra=["--sessions-max", "2", "--tokens-file", tokfile,
                   "--claims-on-disconnect", "keep"], token="ADMIN") as b, \
        Client(b) as ca, Client(b) as cb:
    sub = subscriber(b, "session.")
    deadline = time.time() + 5
    while time.time() < deadline:
        ca.request({"op": "publish", "topic": "session.settle.direct", "payload": b"", "auth": "ADMIN"})
        if sub.poll(100):
            while sub.poll(50):
                sub.recv_multipart()
            break

    def sget(sid):
        rep = ca.request({"op": "session.get", "session": sid, "auth": "ADMIN"})
        return rep.get("session") if rep.get("ok") else rep.get("error")

    ra = ca.request({"op": "session.register", "session": "a", "auth": "TA",
                     "heartbeat_ms": LONG})
    rb = cb.request({"op": "session.register", "session": "b", "auth": "TB",
                     "heartbeat_ms": LONG})
    t.check(ra.get("ok") and rb.get("ok"), "two sessions fill --sessions-max 2")
    is_err(ca.request({"op": "session.register", "session": "c", "auth": "TC"}), "busy",
           "a third session at sessions_max", "sessions_max")
    t.eq(sget("c"), "not_found", "the refused session is not recorded")
    t.eq((sget("a")["status"], sget("b")["status"]), ("active", "active"),
         "a refused register changed nothing")
    # Replacing a live session at the limit: the old record's slot is reused,
    # so the replacement succeeds (it used to answer busy after the old
    # session was already declared gone).
    with fresh(b) as c3:
        rep = c3.request({"op": "session.register", "session": "a", "auth": "TA",
                          "heartbeat_ms": LONG})
        t.eq((rep.get("ok"), rep.get("resumed")), (True, False),
             "replacement at sessions_max: %r" % rep)
        ev = next_event(sub, "session.disconnected", lambda p: p["session"] == "a")
        t.check(ev is not None and ev[0]["reason"] == "replaced", "replaced event")
        t.eq(sget("a")["status"], "active", "the replaced session is active")
        is_ok(c3.request({"op": "session.heartbeat", "session": "a", "auth": "TA"}),
              "the new connection owns a")
    # A register/unregister loop of new ids never locks new sessions out:
    # the oldest gone session without claims is forgotten to make room.
    cb.request({"op": "session.unregister", "session": "b", "auth": "TB"})
    for i in range(1, 6):
        sid = "loop%d" % i
        rep = ca.request({"op": "session.register", "session": sid, "auth": "TC",
                          "heartbeat_ms": LONG})
        is_ok(rep, "register %s at sessions_max with gone sessions" % sid)
        ca.request({"op": "session.unregister", "session": sid, "auth": "TC"})
    t.eq(sget("b"), "not_found", "the oldest gone session was forgotten")
    t.eq(sget("loop5")["status"], "gone", "the newest gone session is still listed")
    t.eq(sget("a")["status"], "active", "the active session is untouched")
    # A gone session that keeps claims (claims_on_disconnect keep) is not
    # forgotten: its claims still name it.
    rep = ca.request({"op": "session.register", "session": "c", "auth": "TC",
                      "heartbeat_ms": 100})
    is_ok(rep, "c takes loop5's slot")
    is_ok(ca.request({"op": "work.claim", "session": "c", "auth": "TC", "work_id": "m/1",
                      "ttl_ms": 60000}), "c claims m/1")
    t.check(wait_until(lambda: sget("c")["status"] == "gone", timeout=3.0), "c times out")
    is_err(ca.request({"op": "session.register", "session": "d", "auth": "TC"}), "busy",
           "no gone session without claims to forget", "sessions_max")
    t.eq((sget("c")["status"], sget("c")["claims"], sget("d")),
         ("gone", 1, "not_found"), "c and its claim kept, d not recorded")
    # The gone id itself registers again in its own slot.
    is_ok(ca.request({"op": "session.register", "session": "c", "auth": "TC",
                      "heartbeat_ms": LONG}), "a gone id re-registers at sessions_max")
    sub.close()
shutil.rmtree(tmp, ignore_errors=True)

print("test_sessions: %.1fs" % (time.time() - T0))
t.done()
