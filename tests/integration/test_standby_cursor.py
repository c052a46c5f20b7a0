"""A subscriber ahead of a standby (issue 19): after a failover with
replication = async, nothing is replayed, nothing delivered twice, and the
events of the new primary arrive.

With async replication the primary acknowledges before the standby has an
event, so a live subscriber may have seen events the standby never gets.
When the primary dies, libnexus moves to the standby in its endpoint list;
once promoted, the standby continues above every seq the old primary
reserved, so the subscriber's cursor stays good. A note of the previous
session feared the SDK would take the standby's lower last seq for a
store that went back and replay everything (a reset); this checks that it
does not.

Real nexusd processes and the real `nexus sub` (libnexus) on loopback.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, free_ports, terminate  # noqa: E402

t = Checks()
BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.path.join(BUILD, "sdk", "nexus")


def publish(broker, topic, payload):
    with Client(broker) as c:
        r = c.request({"op": "publish", "topic": topic, "payload": payload}, timeout=10)
    assert r.get("ok"), r
    return r["seq"]


def last_seq(broker):
    with Client(broker) as c:
        return c.request({"op": "health"}, timeout=10)["last_seq"]


def cli(*args, **kw):
    env = dict(os.environ)
    env.pop("NEXUS_ENDPOINT", None)
    return subprocess.run([NEXUS] + list(args), capture_output=True, text=True, timeout=30,
                          env=env, **kw)


# Consecutive ports: libnexus derives each broker's event ports from its
# control port.
a = Broker(extra=["--name", "a", "--replication", "async", "--replication-timeout", "2s"],
           ports=free_ports(3)).start()
b = Broker(ports=free_ports(3))
b.extra = ["--name", "b", "--replica-of", a.control, "--replication-timeout", "2s"]
b.start()
sub = None
lines = []


def reader(stream):
    for line in stream:
        lines.append(line)


def seen(topic):
    return [json.loads(x) for x in list(lines) if ('"%s"' % topic) in x]


try:
    # A live subscriber that knows both brokers (libnexus fails over).
    env = dict(os.environ)
    env.pop("NEXUS_ENDPOINT", None)
    sub = subprocess.Popen([NEXUS, "sub", "cur.>", "--json", "--endpoint",
                            "%s,%s" % (a.control, b.control)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    threading.Thread(target=reader, args=(sub.stdout,), daemon=True).start()
    deadline = time.time() + 20
    while time.time() < deadline and not seen("cur.probe"):
        publish(a, "cur.probe", b"p")
        time.sleep(0.3)
    t.check(seen("cur.probe"), "the subscriber is live on the primary")

    # The standby has everything up to here.
    for i in range(5):
        seq5 = publish(a, "cur.before", b"%d" % i)
    deadline = time.time() + 20
    while time.time() < deadline and last_seq(b) < seq5:
        time.sleep(0.1)
    t.eq(last_seq(b), seq5, "the standby applied the first events")

    # Five more the standby never gets (async: acknowledged at once); the
    # subscriber gets them live.
    os.kill(b.proc.pid, signal.SIGSTOP)
    for i in range(5):
        seq10 = publish(a, "cur.lost", b"%d" % i)
    deadline = time.time() + 10
    while time.time() < deadline and len(seen("cur.lost")) < 5:
        time.sleep(0.05)
    t.eq(len(seen("cur.lost")), 5, "the subscriber got all five live")
    a.kill()
    os.kill(b.proc.pid, signal.SIGCONT)
    t.check(last_seq(b) < seq10, "the standby is behind the subscriber (%d < %d)" %
            (last_seq(b), seq10))

    # The subscriber fails over to the standby (its SUB shows up there),
    # and checks its cursor against it: it must not replay.
    def subscribers():
        with Client(b) as c:
            return c.request({"op": "state"}, timeout=10).get("subscribers", 0)
    # (Asked once per look: until the promotion the client also looks at
    # the dead primary again, so a second ask may find it away for a moment.)
    moved = False
    deadline = time.time() + 30
    while time.time() < deadline and not moved:
        moved = subscribers() >= 1
        if not moved:
            time.sleep(0.2)
    t.check(moved, "the subscriber moved to the standby")
    time.sleep(3)
    t.eq(len(seen("cur.before")), 5, "behind a standby nothing is replayed")
    r = cli("promote", "--force", "--endpoint", b.control)
    t.check(r.returncode == 0, "promote: %r %r" % (r.stdout, r.stderr))
    after = None
    deadline = time.time() + 20
    while time.time() < deadline and after is None:
        try:
            after = publish(b, "cur.after", b"new")
        except (AssertionError, TimeoutError):
            time.sleep(0.2)
    t.check(after is not None and after > seq10,
            "the promoted standby's next seq is above the subscriber's: %r > %d" % (after, seq10))
    deadline = time.time() + 20
    while time.time() < deadline and not seen("cur.after"):
        time.sleep(0.1)
    t.check(seen("cur.after") and seen("cur.after")[0]["seq"] == after,
            "the subscriber gets the new event from the new primary")
    seqs = [json.loads(x)["seq"] for x in list(lines) if x.strip().startswith("{")]
    t.check(len(seqs) == len(set(seqs)), "no event delivered twice: %r" % seqs)
    t.eq(len(seen("cur.before")), 5, "nothing replayed after the promotion either")
finally:
    err = ""
    if sub:
        _, err = terminate(sub)
    t.check("reset" not in (err or ""), "no reset notice: %r" % (err or "")[-300:])
    for x in (a, b):
        x.cleanup()

t.done()
