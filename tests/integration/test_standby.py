#!/usr/bin/env python3
"""A hot standby without etcd (issue 19), on loopback: `nexusd --replica-of`
streams the primary's write-ahead log, and `promote` makes it the primary.

1. A standby with an empty store starts from a base copy of the primary's
   store (its identity too) and then streams the log: its history is the
   primary's, event for event. It serves ping, health, state and history,
   and refuses writes and the primary's reads with not_primary naming
   the primary; events sent to its event plane are dropped and counted.
2. replication = sync: while the standby is stopped (SIGSTOP) an
   acknowledged publish is answered only once replication_timeout has let
   it go; once it is back and caught up, it is waited for again (fast).
   replication = async: the answer does not wait for it.
3. A standby that restarts goes on from where its copy ends: no base copy.
4. Under acknowledged publish and claim load, kill -9 of the primary, then
   `promote`: every acknowledged event (seq and payload) and every
   acknowledged claim (its token) is on the new primary; a seq and a
   fencing token handed out after the promotion are above every earlier
   one (also above the seqs a subscriber saw); the store identity stays.
   The old primary, back with --replica-of, catches up.
5. promote refuses a standby that is not in sync (its primary let it go),
   unless forced. A switchover (promote while the primary runs) fences the
   old primary: it restarts as the new one's standby and refuses writes.
6. With tokens, the standby presents its token (PLAIN) and replication
   works; a token without every right may not replicate (forbidden).
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Broker, Checks, Client  # noqa: E402

import zmq  # noqa: E402

TIMEOUT = "1s"


class Report(Checks):
    def ok(self, what, cond):
        return self.check(cond, what)

    def eq(self, what, a, b):
        return Checks.eq(self, a, b, what)


check = Report()


def call(broker, req, timeout=5.0, client=None):
    """One request, with the broker's token as auth when it has one."""
    if broker.token:
        req = dict(req, auth=broker.token)
    if client:
        return client.request(req, timeout=timeout)
    with Client(broker) as c:
        return c.request(req, timeout=timeout)


def pair(extra_a=(), extra_b=(), token=None):
    a = Broker(extra=["--name", "a", "--replication-timeout", TIMEOUT] + list(extra_a),
               token=token).start()
    b = Broker(extra=[], token=token)
    b.extra = ["--name", "b", "--replica-of", a.control,
               "--replication-timeout", TIMEOUT] + list(extra_b)
    b.start()
    return a, b


def receiving(broker, timeout=15):
    st = call(broker, {"op": "state"}, timeout=timeout)
    return st.get("replication", {}).get("receiving", {})


def wait_streaming(broker, sync=True, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            # (a request to a standby that restarts from its base copy is
            # lost with the old process: ask again soon)
            last = receiving(broker, timeout=2)
            if last.get("state") == "streaming" and (last.get("sync") or not sync):
                return last
        except TimeoutError:
            pass  # restarting from a base copy
        time.sleep(0.1)
    raise RuntimeError("the standby is not streaming: %s\n%s" % (last, broker.logs()[-3000:]))


def history(broker, since=0):
    out = []
    with Client(broker) as c:
        while True:
            h = call(broker, {"op": "history", "since_seq": since, "limit": 1000}, timeout=15,
                     client=c)
            assert h.get("ok"), h
            out += h["events"]
            if not h["events"] or not h.get("next_cursor"):
                return out
            since = h["events"][-1]["seq"]


def wait_history(broker, last_seq, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        evs = history(broker)
        if evs and evs[-1]["seq"] >= last_seq:
            return evs
        time.sleep(0.1)
    return history(broker)


def test_basics():
    a = Broker(extra=["--name", "a", "--replication-timeout", TIMEOUT]).start()
    b = None
    try:
        with Client(a) as ca:
            for i in range(100):
                r = ca.request({"op": "publish", "topic": "std.before", "payload": b"b%d" % i})
            last = r["seq"]
        b = Broker()
        b.extra = ["--name", "b", "--replica-of", a.control, "--replication-timeout", TIMEOUT]
        b.start()
        wait_streaming(b)
        check.ok("a new standby starts from a base copy", "base copy" in b.logs())
        with Client(a) as ca:
            for i in range(50):
                r = ca.request({"op": "publish", "topic": "std.after", "payload": b"a%d" % i})
            last = r["seq"]
            sid_a = ca.request({"op": "ping"})["store_id"]
        ha, hb = history(a), wait_history(b, last)
        check.eq("the standby's history is the primary's",
                 [(e["seq"], e["topic"], e["payload"]) for e in hb],
                 [(e["seq"], e["topic"], e["payload"]) for e in ha])
        with Client(b) as cb:
            ping = cb.request({"op": "ping"})
            check.eq("ping: role", ping.get("role"), "standby")
            check.eq("ping: the primary", ping.get("primary"), a.control)
            check.eq("ping: the same store identity", ping.get("store_id"), sid_a)
            health = cb.request({"op": "health"})
            check.eq("health: role", health.get("role"), "standby")
            for req in ({"op": "publish", "topic": "std.no", "payload": b"x"},
                        {"op": "session.register", "session": "s1"},
                        {"op": "session.list"},
                        {"op": "work.claim", "session": "s1", "work_id": "w"},
                        {"op": "replicate", "name": "c", "store_id": sid_a, "lsn": 0, "crc": 0,
                         "segment_size": 1 << 25}):
                r = cb.request(req)
                check.eq("standby refuses %s: not_primary" % req["op"], r.get("error"),
                         "not_primary")
                check.eq("... naming the primary", r.get("primary"), a.control)
            check.ok("the message says so", "standby" in r.get("message", ""))
        pub = harness.publisher(b)
        time.sleep(0.3)
        pub.send_multipart([b"std.fire", b"lost"])
        time.sleep(0.5)
        with Client(b) as cb:
            st = cb.request({"op": "state"})
        pub.close(0)
        check.ok("an event sent to the standby's event plane is dropped, counted",
                 st["drops"]["standby"] >= 1)
        with Client(a) as ca:
            st = ca.request({"op": "state"})["replication"]
        sb = st["standbys"][0] if st["standbys"] else {}
        check.eq("the primary streams to b", (sb.get("name"), sb.get("attached"), sb.get("sync")),
                 ("b", True, True))
        check.eq("the primary's sync standby", st.get("sync_standby"), "b")
        # The CLI (libnexus) given both, the standby first: refused with
        # not_primary, it sends to the primary the reply names.
        both = "%s,%s" % (b.control, a.control)
        r = cli("pub", "std.cli", '{"n": 1}', "--ack", "--endpoint", both)
        check.ok("nexus pub to standby,primary: acknowledged (%s)" % (r.stdout + r.stderr).strip(),
                 r.returncode == 0 and r.stdout.strip().isdigit())
        with Client(a) as ca:
            h = ca.request({"op": "history", "patterns": ["std.cli"]})
        check.eq("... stored on the primary", [e["seq"] for e in h["events"]],
                 [int(r.stdout.strip() or 0)])
        r = cli("status", "--endpoint", both)
        check.ok("nexus status: the primary in use, its role: %r" % r.stdout,
                 r.returncode == 0 and "broker    " + a.control in r.stdout and
                 "primary (a, epoch" in r.stdout)
        r = cli("status", "--endpoint", b.control)
        check.ok("nexus status of the standby: its role and primary: %r" % r.stdout,
                 "standby (b, epoch" in r.stdout and "primary " + a.control in r.stdout)
        r = cli("promote", "--endpoint", a.control)
        check.ok("nexus promote of the primary: refused (%s)" % r.stderr.strip(),
                 r.returncode != 0 and "promote" in r.stderr)
        # An idle standby sleeps in its poll: no session or lease deadline
        # is its own, so none may make its loop spin (it did: ~0.7 core).
        used = cpu_seconds(b, 2.0)
        check.ok("an idle standby uses little CPU (%.2f s in 2 s)" % used, used < 0.5)
    finally:
        for x in (b, a):
            if x:
                x.cleanup()


def cpu_seconds(broker, seconds):
    """CPU time (user + system) the broker's process uses in `seconds`."""
    def ticks():
        with open("/proc/%d/stat" % broker.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    t0 = ticks()
    time.sleep(seconds)
    return (ticks() - t0) / os.sysconf("SC_CLK_TCK")


def cli(*args):
    exe = os.path.join(os.environ.get("NEXUS_BUILD_DIR", "build"), "sdk", "nexus")
    env = dict(os.environ)
    env.pop("NEXUS_ENDPOINT", None)
    return subprocess.run([exe] + list(args), capture_output=True, text=True, timeout=30, env=env)


def timed_publish(broker, topic, payload, timeout=15):
    t0 = time.time()
    r = call(broker, {"op": "publish", "topic": topic, "payload": payload}, timeout=timeout)
    return r, time.time() - t0


def test_sync_waits():
    a, b = pair()
    try:
        wait_streaming(b)
        r, dt = timed_publish(a, "std.sync", b"fast")
        check.ok("sync, standby there: acknowledged at once (%.3f s)" % dt, r["ok"] and dt < 0.8)
        os.kill(b.proc.pid, signal.SIGSTOP)
        r, dt = timed_publish(a, "std.sync", b"waits")
        check.ok("sync, standby stopped: answered only after replication_timeout (%.2f s)" % dt,
                 r["ok"] and dt >= 0.9)
        with Client(a) as ca:
            st = ca.request({"op": "state"})["replication"]
        check.eq("... then it is no longer waited for", st.get("sync_standby"), None)
        r, dt = timed_publish(a, "std.sync", b"alone")
        check.ok("... and the next is fast (%.3f s)" % dt, r["ok"] and dt < 0.8)
        os.kill(b.proc.pid, signal.SIGCONT)
        wait_streaming(b)
        deadline = time.time() + 10
        while time.time() < deadline:
            with Client(a) as ca:
                if ca.request({"op": "state"})["replication"].get("sync_standby") == "b":
                    break
            time.sleep(0.1)
        check.ok("back and caught up: waited for again", time.time() < deadline)
        evs = wait_history(b, r["seq"])
        check.ok("it has what was acknowledged without it", evs and evs[-1]["seq"] >= r["seq"])
    finally:
        if b.proc:
            os.kill(b.proc.pid, signal.SIGCONT)
        b.cleanup()
        a.cleanup()
    a, b = pair(extra_a=["--replication", "async"])
    try:
        wait_streaming(b)
        os.kill(b.proc.pid, signal.SIGSTOP)
        r, dt = timed_publish(a, "std.async", b"now")
        check.ok("async, standby stopped: acknowledged at once (%.3f s)" % dt, r["ok"] and dt < 0.8)
        os.kill(b.proc.pid, signal.SIGCONT)
    finally:
        if b.proc:
            os.kill(b.proc.pid, signal.SIGCONT)
        b.cleanup()
        a.cleanup()


def test_restart_standby():
    a, b = pair()
    try:
        wait_streaming(b)
        b.stop()
        with Client(a) as ca:
            for i in range(30):
                r = ca.request({"op": "publish", "topic": "std.away", "payload": b"%d" % i})
        log_before = b.logs()
        b.start()
        rx = wait_streaming(b)
        fresh = b.logs()[len(log_before):]
        check.ok("a standby back from a restart needs no base copy", "base copy" not in fresh)
        check.ok("... it goes on from its own position (%d)" % rx["received"], rx["received"] > 0)
        evs = wait_history(b, r["seq"])
        check.ok("... and has what it missed", evs and evs[-1]["seq"] == r["seq"])
    finally:
        b.cleanup()
        a.cleanup()


class Load:
    """Acknowledged publishes and claims on one connection, recording what
    was acknowledged; a subscriber records the seqs it saw."""

    def __init__(self, broker):
        self.broker = broker
        self.acked = {}     # seq -> payload
        self.claims = {}    # work_id -> token
        self.seen = []
        self.stop = False
        self.errors = 0

    def run(self):
        with Client(self.broker) as c:
            c.request({"op": "session.register", "session": "load"})
            i = 0
            while not self.stop:
                i += 1
                try:
                    p = b"load-%d" % i
                    r = c.request({"op": "publish", "topic": "std.load", "payload": p},
                                  timeout=1)
                    if r.get("ok"):
                        self.acked[r["seq"]] = p
                    r = c.request({"op": "work.claim", "session": "load", "work_id": "w%d" % i,
                                   "ttl_ms": 600000}, timeout=1)
                    if r.get("ok"):
                        self.claims["w%d" % i] = r["token"]
                except (TimeoutError, zmq.ZMQError):
                    self.errors += 1
                    return

    def subscribe(self):
        sub = harness.subscriber(self.broker, "std.")
        while not self.stop:
            if sub.poll(100):
                frame = sub.recv()
                self.seen.append(harness.decode_event(frame)[1])
        sub.close(0)


def test_kill_and_promote():
    a, b = pair()
    try:
        wait_streaming(b)
        load = Load(a)
        threads = [threading.Thread(target=load.run), threading.Thread(target=load.subscribe)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        a.kill()
        load.stop = True
        for t in threads:
            t.join(10)
        check.ok("load ran: %d publishes, %d claims acknowledged" %
                 (len(load.acked), len(load.claims)), len(load.acked) > 20 and load.claims)
        with Client(b) as cb:
            t0 = time.time()
            r = cb.request({"op": "promote"}, timeout=30)
            check.ok("promote: %s (%.3f s)" % (r.get("result") or r, time.time() - t0),
                     r.get("ok"))
            check.eq("ping: now the primary", cb.request({"op": "ping"}).get("role"), "primary")
            after = cb.request({"op": "publish", "topic": "std.after", "payload": b"after"})
            check.ok("a seq after the promotion is above every acknowledged and seen one",
                     after["ok"] and after["seq"] > max(list(load.acked) + load.seen))
            cb.request({"op": "session.register", "session": "new"})
            c = cb.request({"op": "work.claim", "session": "new", "work_id": "fresh"})
            check.ok("a fencing token after the promotion is above every earlier one",
                     c["ok"] and c["token"] > max(load.claims.values()))
            lost = []
            for wid, token in load.claims.items():
                g = cb.request({"op": "work.get", "work_id": wid})
                if not g.get("ok") or g["claim"].get("token") != token:
                    lost.append((wid, token, g))
            check.eq("every acknowledged claim is there with its token", lost[:3], [])
        hb = {e["seq"]: e["payload"] for e in history(b)}
        missing = [s for s, p in load.acked.items() if hb.get(s) != p]
        check.eq("every acknowledged event is there, seq and payload", missing[:5], [])
        # The old primary comes back as the standby of the new one.
        a.extra = ["--name", "a", "--replica-of", b.control, "--replication-timeout", TIMEOUT]
        a.start()
        wait_streaming(a)
        evs = wait_history(a, after["seq"])
        check.eq("the old primary, back as a standby, catches up",
                 [e["seq"] for e in evs], [e["seq"] for e in history(b)])
    finally:
        b.cleanup()
        a.cleanup()


def test_promote_rules():
    # A standby that never heard its primary at all: its store is not the
    # primary's (no base copy came), so not even force promotes it (it
    # would be another, empty store handing out seqs and tokens from 1).
    # test_standby_reservation has a standby that was let go: refused, and
    # promoted with force.
    a = Broker(extra=["--name", "a", "--replication-timeout", TIMEOUT]).start()
    os.kill(a.proc.pid, signal.SIGSTOP)
    b = Broker()
    b.extra = ["--name", "b", "--replica-of", a.control, "--replication-timeout", TIMEOUT]
    try:
        b.start()
        a.kill()
        with Client(b) as cb:
            r = cb.request({"op": "promote"})
            check.eq("promote refuses a standby that never had its primary's store",
                     r.get("error"), "conflict")
            check.ok("... and says why: %r" % r, "never received a copy" in r.get("message", ""))
            r = cb.request({"op": "promote", "force": True})
            check.eq("... also with force: %r" % r, r.get("error"), "conflict")
            h = cb.request({"op": "health"})
            check.eq("it is still a standby", h.get("role"), "standby")
    finally:
        b.cleanup()
        a.cleanup()
    a, b = pair()
    try:
        wait_streaming(b)
        with Client(b) as cb:
            r = cb.request({"op": "promote"})
            check.ok("switchover: promote while the primary runs", r.get("ok"))
        deadline = time.time() + 20
        role = None
        while time.time() < deadline:
            try:
                with Client(a) as ca:
                    p = ca.request({"op": "ping"}, timeout=1)
                    role = (p.get("role"), p.get("primary"))
                    if role == ("standby", b.control):
                        break
            except TimeoutError:
                pass
            time.sleep(0.2)
        check.eq("the old primary is fenced and follows the new one", role, ("standby", b.control))
        with Client(a) as ca:
            r = ca.request({"op": "publish", "topic": "std.old", "payload": b"x"})
        check.eq("... and refuses writes", r.get("error"), "not_primary")
        check.ok("its role file keeps it so", os.path.exists(os.path.join(a.data_dir, "role")))
        r, _ = timed_publish(b, "std.new", b"y")
        check.ok("the new primary takes writes", r.get("ok"))
        wait_streaming(a)
    finally:
        b.cleanup()
        a.cleanup()


def wait_role(broker, want, timeout=20):
    deadline = time.time() + timeout
    role = None
    while time.time() < deadline:
        try:
            with Client(broker) as c:
                p = c.request({"op": "ping"}, timeout=1)
                role = (p.get("role"), p.get("primary"), p.get("epoch"))
                if role[:2] == want:
                    return role
        except TimeoutError:
            pass
        time.sleep(0.2)
    return role


def test_lost_primary_returns():
    """A primary that a promotion decided (it has a role file) is lost, the
    standby is promoted past it, and it is started again with replica_of
    set to the new primary, as the operations guide says: it follows the
    newer epoch instead of taking writes beside it (it did: two
    primaries)."""
    a, b = pair()
    try:
        wait_streaming(b)
        # Switch over to b, and back to a: a's role file says primary now.
        check.ok("switchover to b", call(b, {"op": "promote"}).get("ok"))
        check.eq("a follows b", wait_role(a, ("standby", b.control))[:2], ("standby", b.control))
        wait_streaming(a)
        check.ok("switchover back to a", call(a, {"op": "promote"}).get("ok"))
        check.eq("b follows a", wait_role(b, ("standby", a.control))[:2], ("standby", a.control))
        wait_streaming(b)
        with open(os.path.join(a.data_dir, "role")) as f:
            check.ok("a's role file says primary: %r" % f.read(), True)
        a.kill()
        r = call(b, {"op": "promote"}, timeout=30)
        check.ok("b promoted past the lost a: %r" % r, r.get("ok"))
        epoch_b = call(b, {"op": "ping"}).get("epoch")
        # The fence b sends the old primary at its promotion lingers 2 s: a
        # started later hears nothing of it (the operator repairs a later).
        time.sleep(2.5)
        a.extra = ["--name", "a", "--replica-of", b.control, "--replication-timeout", TIMEOUT]
        a.start()
        role = wait_role(a, ("standby", b.control))
        check.eq("a starts as the standby of the newer primary", role[:2], ("standby", b.control))
        check.ok("and says why", "starts as its standby" in a.logs())
        with Client(a) as ca:
            r = ca.request({"op": "publish", "topic": "std.lost", "payload": b"x"})
        check.eq("a takes no writes", r.get("error"), "not_primary")
        check.eq("b is still the primary of its epoch", call(b, {"op": "ping"}).get("epoch"),
                 epoch_b)
        r, _ = timed_publish(b, "std.lost.b", b"y")
        check.ok("b takes writes", r.get("ok"))
        wait_streaming(a, sync=False)
    finally:
        b.cleanup()
        a.cleanup()


def test_tokens():
    tokens = tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False)
    tokens.write("limited name=lim sessions=x pub=std.> sub=std.>\n")
    tokens.close()
    sec = ["--token", "T0ken", "--tokens-file", tokens.name]
    a = Broker(extra=["--name", "a"] + sec, token="T0ken").start()
    b = Broker(token="T0ken")
    b.extra = ["--name", "b", "--replica-of", a.control] + sec
    try:
        b.start()
        wait_streaming(b)
        r, _ = timed_publish(a, "std.tok", b"t")
        evs = wait_history(b, r["seq"])
        check.ok("with tokens the standby streams (PLAIN)", evs and evs[-1]["seq"] == r["seq"])
        with Client(a, token="limited") as c:
            r = c.request({"op": "replicate", "auth": "limited", "name": "x", "store_id": "0",
                           "lsn": 0, "crc": 0, "segment_size": 1 << 25})
        check.eq("a token without every right may not replicate", r.get("error"), "forbidden")
        with Client(b, token="limited") as c:
            r = c.request({"op": "promote", "auth": "limited"})
        check.eq("... nor promote", r.get("error"), "forbidden")
    finally:
        b.cleanup()
        a.cleanup()
        os.unlink(tokens.name)


def main():
    for t in (test_basics, test_sync_waits, test_restart_standby, test_kill_and_promote,
              test_promote_rules, test_lost_primary_returns, test_tokens):
        t0 = time.time()
        t()
        print("%s: %.1f s" % (t.__name__, time.time() - t0))
    return check.done()


if __name__ == "__main__":
    sys.exit(main())
