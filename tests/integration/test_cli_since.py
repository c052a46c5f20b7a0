"""`nexus sub PATTERN --since SEQ` while events flow: every event once, in
seq order.

The CLI (and the load tool of test_failover_hosts) subscribed first and
set the starting point after: events that arrived live in between were
delivered, then delivered again from the history (libnexus documents that
a later resume_from delivers again), so the output had a seq twice and
out of order (seen as test_failover_hosts' "seq order, no duplicate"). Now
the starting point is set first, and a pattern added while a history page
is on its way makes libnexus ask again with every pattern.

Real nexusd and the real `nexus` CLI on loopback; a thread publishes
while the subscriber starts.
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client  # noqa: E402

t = Checks()
BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.path.join(BUILD, "sdk", "nexus")
RUNS = 6


def publish_until(b, stop, topics):
    with Client(b) as c:
        i = 0
        while not stop.is_set() and i < 100000:
            c.request({"op": "publish", "topic": topics[i % len(topics)], "payload": b"%d" % i},
                      timeout=10)
            i += 1


with Broker() as b:
    with Client(b) as c:
        for i in range(50):
            c.request({"op": "publish", "topic": "since.a", "payload": b"before"})
    env = dict(os.environ)
    env.pop("NEXUS_ENDPOINT", None)
    for run in range(RUNS):
        stop = threading.Event()
        pub = threading.Thread(target=publish_until, args=(b, stop, ["since.a", "since.b"]),
                               daemon=True)
        pub.start()
        time.sleep(0.2)
        # Two patterns: the second is added while the first one's history
        # page may be on its way.
        r = subprocess.run([NEXUS, "sub", "since.a", "since.b", "--since", "0", "--count", "400",
                            "--json", "--endpoint", b.control],
                           capture_output=True, text=True, timeout=60, env=env)
        stop.set()
        pub.join(20)
        seqs = []
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                seqs.append(json.loads(line)["seq"])
        t.check(r.returncode == 0 and len(seqs) == 400,
                "run %d: nexus sub printed 400 events (%d, rc %d: %s)"
                % (run, len(seqs), r.returncode, r.stderr[-200:]))
        bad = [(seqs[i - 1], seqs[i]) for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]]
        t.check(not bad, "run %d: every seq once, in order (first break: %r)"
                % (run, bad[:1]))
        holes = [(x, y) for x, y in zip(seqs, seqs[1:]) if y != x + 1]
        t.check(seqs[:1] == [1] and not holes,
                "run %d: from seq 1 with no gap (both patterns, all events; first %r, "
                "holes %r, other lines %r)"
                % (run, seqs[:1], holes[:3],
                   [ln for ln in r.stdout.splitlines() if not ln.startswith("{")][:3]))

t.done()
