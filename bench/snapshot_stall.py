"""snapshot_stall.py [NEXUSD] - how long the broker's loop stalls while the
snapshot file is rewritten: 30 000 claims held, snapshot_file on, sync=full;
for 4 s a status change (which marks the snapshot changed) and a ping every 5 ms,
and the round trips of both are printed (p50, p99, max). A stall of the loop
shows in the max. Uses the integration tests' harness (python3-zmq,
python3-msgpack).
"""

import os
import sys
import tempfile
import time

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
nexusd = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/broker/nexusd")
os.environ["NEXUSD"] = nexusd  # before the harness reads it
from harness import Broker, Client  # noqa: E402
d = tempfile.mkdtemp()
snap = os.path.join(d, "state.json")
with Broker(extra=["--snapshot-file", snap, "--sync", "full"] + (["-v"] if os.environ.get("NX_V") else [])) as b, Client(b) as c:
    c.request({"op": "session.register", "session": "w", "heartbeat_ms": 600000})
    N = 30000
    sent = 0
    for i in range(N):
        c.sock.send(msgpack.packb({"op": "work.claim", "session": "w", "work_id": "job/%06d" % i, "ttl_ms": 3600000, "description": "some work item %d" % i, "id": i}))
        if i % 500 == 499:
            for _ in range(500): c.recv(timeout=30)
    time.sleep(1.5)
    rtts = []
    t_end = time.time() + 4
    while time.time() < t_end:
        for req in ({"op": "session.status", "session": "w", "text": "at %f" % time.time()},
                    {"op": "ping"}):
            t0 = time.perf_counter()
            c.request(req)
            rtts.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)
    rtts.sort()
    if os.environ.get("NX_V"):
        import re
        packs = [float(x) for x in re.findall(r"state packed in ([0-9.]+) ms", b.logs())]
        writes = [float(x) for x in re.findall(r"written as JSON in ([0-9.]+) ms", b.logs())]
        if packs and writes:
            print("loop: pack p50 %.1f ms max %.1f ms; writer thread: JSON + fsync p50 %.1f ms "
                  "max %.1f ms (%d writes)" % (sorted(packs)[len(packs) // 2], max(packs),
                                                sorted(writes)[len(writes) // 2], max(writes),
                                                len(writes)))
    print("%s: snapshot %.1f MB, requests n=%d p50 %.2f ms p99 %.2f ms max %.2f ms" % (nexusd, os.path.getsize(snap)/1e6, len(rtts), rtts[len(rtts)//2], rtts[int(len(rtts)*.99)], rtts[-1]))
