#!/usr/bin/env python3
"""A promoted standby fences its old primary until it takes no writes
(without etcd), with real nexusd processes on loopback.

1. The old primary is paused (SIGSTOP) when its standby is promoted, and a
   publish reaches it while it is paused. Resumed, it must not acknowledge
   the publish after replication_timeout lets its (now promoted) standby
   go: the new primary keeps asking it, sees a primary of an older epoch
   and fences it. Whatever it did acknowledge is on the new primary.
2. The old primary, killed and started again with its old settings (no
   role file, no replica_of), is fenced by the new primary within seconds:
   it refuses writes with not_primary.
   Started again once more, without the role file it had got by then (so
   at the new primary's epoch), no fence can part them: the new primary
   logs it as an error, once.
3. A standby whose primary never answers says so in its log and in
   state's problem, and heard_ms counts from its start, not from its
   last request.
Every wait is bounded.
"""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Broker, Checks, Client  # noqa: E402

t = Checks()
TIMEOUT = "3s"


def ping(broker):
    try:
        with Client(broker) as c:
            return c.request({"op": "ping"}, timeout=1)
    except TimeoutError:
        return {}


def wait(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return None


def in_sync(a):
    with Client(a) as c:
        st = c.request({"op": "state"}, timeout=5)
    return (st.get("replication") or {}).get("sync_standby") == "b"


def history_payloads(broker, pattern):
    with Client(broker) as c:
        rep = c.request({"op": "history", "pattern": pattern, "since_seq": 0, "limit": 1000})
    return {e["seq"]: e["payload"] for e in rep.get("events", [])}


def log_of(broker):
    with open(broker.log_path, errors="replace") as f:
        return f.read()


def pair():
    a = Broker(extra=["--name", "a", "--replication-timeout", TIMEOUT]).start()
    b = Broker()
    b.extra = ["--name", "b", "--replica-of", a.control, "--replication-timeout", TIMEOUT]
    b.start()
    t.check(wait(lambda: in_sync(a), 30), "b catches up and is the sync standby")
    return a, b


# 1. paused old primary
a, b = pair()
try:
    with Client(a) as c:
        t.check(c.request({"op": "publish", "topic": "f.warm", "payload": b"w"}).get("ok"),
                "a warm-up publish")
    os.kill(a.proc.pid, signal.SIGSTOP)
    with Client(b) as cb:
        r = cb.request({"op": "promote"}, timeout=30)
    t.check(r.get("ok"), "b promoted while a is paused: %r" % r)
    result = {}

    def publish_to_a():
        try:
            with Client(a) as c:
                result["rep"] = c.request({"op": "publish", "topic": "f.late", "payload": b"late"},
                                          timeout=20)
        except TimeoutError:
            result["rep"] = "timeout"

    th = threading.Thread(target=publish_to_a)
    th.start()
    time.sleep(2.5)
    os.kill(a.proc.pid, signal.SIGCONT)
    th.join(30)
    rep = result.get("rep")
    t.check(not (isinstance(rep, dict) and rep.get("ok")) or
            history_payloads(b, "f.late").get(rep.get("seq")) == b"late",
            "what the paused old primary acknowledged is on the new primary: %r" % rep)
    t.check(not (isinstance(rep, dict) and rep.get("ok")),
            "the old primary did not acknowledge it (fenced first): %r" % rep)
    t.check(wait(lambda: ping(a).get("role") in ("standby", "fenced"), 15),
            "the old primary is fenced: %r" % ping(a))
    t.check("the old primary at %s" % a.control in log_of(b),
            "the new primary's log says what became of the old one")
    t.check("is fenced" in log_of(a), "the old primary's log says it was fenced")
finally:
    b.cleanup()
    a.cleanup()

# 2. the old primary started again with its old settings
a, b = pair()
try:
    a.kill()
    with Client(b) as cb:
        r = cb.request({"op": "promote"}, timeout=30)
    t.check(r.get("ok"), "b promoted after a was killed: %r" % r)
    t.check(not os.path.exists(os.path.join(a.data_dir, "role")), "a has no role file")
    a.start()
    t.check(wait(lambda: ping(a).get("role") in ("standby", "fenced"), 20),
            "the old primary, started again unchanged, is fenced: %r" % ping(a))
    # (A fenced broker restarts to follow, and again to take a base copy:
    # a request sent while it restarts gets no answer, so ask again.)
    def publish_to_a():
        try:
            with Client(a) as c:
                return c.request({"op": "publish", "topic": "f.after", "payload": b"x"},
                                 timeout=3)
        except TimeoutError:
            return None
    r = wait(publish_to_a, 30) or {}
    t.eq(r.get("error"), "not_primary", "and refuses writes: %r" % r)
    t.check("is fenced" in log_of(a), "a's log says it was fenced")
    # `nexus sub` given the standby alone says it streams no live events.
    import subprocess  # noqa: E402
    cli = os.environ.get("NEXUS_CLI") or os.path.join(os.environ.get("NEXUS_BUILD_DIR", "build"),
                                                      "sdk", "nexus")
    def streaming():
        try:
            with Client(a) as c:
                st = c.request({"op": "state"}, timeout=2)
            return ((st.get("replication") or {}).get("receiving") or {}).get("state") == "streaming"
        except TimeoutError:
            return False
    t.check(wait(streaming, 30), "a follows b (streaming) before sub asks it")
    p = subprocess.Popen([cli, "sub", "f.>", "--endpoint", a.control], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, XDG_STATE_HOME=a.data_dir))
    try:
        _, err = p.communicate(timeout=4)
    except subprocess.TimeoutExpired:
        p.terminate()
        _, err = p.communicate(timeout=10)
    t.check("is a standby" in err and "no live events" in err,
            "sub at the standby alone says so: %r" % err[-400:])
    # The old primary, now at the new one's epoch, started again without
    # its role file: a primary that a fence cannot part from the new one.
    # The new primary says so, once, as an error.
    a.kill()
    os.remove(os.path.join(a.data_dir, "role"))
    a.start()
    t.check(wait(lambda: "runs as a primary too" in log_of(b), 15),
            "b's log says two brokers take writes: %r" % ping(a))
    t.eq(log_of(b).count("runs as a primary too"), 1, "said once")
finally:
    b.cleanup()
    a.cleanup()

# 3. a primary that never answers
from harness import free_ports  # noqa: E402
nobody = "tcp://127.0.0.1:%d" % free_ports(1)[0]
lone = Broker()
lone.extra = ["--name", "lone", "--replica-of", nobody, "--replication-timeout", "1s"]
lone.start()
try:
    def receiving():
        with Client(lone) as c:
            return (c.request({"op": "state"}, timeout=5).get("replication") or {}).get("receiving") or {}
    r = wait(lambda: receiving() if (receiving().get("problem") or "") else None, 15)
    t.check(r and "has not answered" in r["problem"] and nobody in r["problem"],
            "state's problem says the primary never answered: %r" % r)
    time.sleep(2.5)
    r = receiving()
    t.check(r.get("heard_ms", 0) >= 2000, "heard_ms counts from the start (a hello every 1 s reset it): %r" % r)
    t.check("has not answered the request for its log yet" in log_of(lone), "and the log says it")
    t.eq(log_of(lone).count("has not answered"), 1, "once, not at every try")
finally:
    lone.cleanup()
t.done()
