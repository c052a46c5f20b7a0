"""What a subscriber saw survives SIGKILL of nexusd.

Under sync=full the broker forwards a batch of events before its commit's
flush (after writing it to the forward log), so the flush is not on the
path from publisher to subscriber. This test kills nexusd (SIGKILL) at
random moments while a raw PUB socket publishes at a steady rate and a raw
SUB socket records every event it receives; after each restart on the same
data directory, every event the subscriber received must be in the
history, at its seq, with exactly the bytes received. Without the forward
log, events forwarded while their commit was still flushing are missing
after the kill.

Every loop is bounded in count and in time.
"""

import os
import random
import shutil
import sys
import tempfile
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, decode_event, publisher, subscriber  # noqa: E402

CYCLES = 12
BUDGET = 50.0  # seconds for all cycles
RATE = 5000  # events per second, in bursts of 10 every 2 ms

t = Checks()
rng = random.Random(int(os.environ.get("NEXUS_TEST_SEED", time.time())))
data_dir = tempfile.mkdtemp(prefix="nexus-seen-crash-")


def history_of(broker, seqs):
    """seq -> (topic, source, payload) for the seqs asked, read back with
    the cursor from the lowest."""
    found = {}
    lo = min(seqs)
    with Client(broker) as c:
        cursor = None
        for _ in range(1000):
            req = {"op": "history", "since_seq": lo - 1, "limit": 10000}
            if cursor is not None:
                req["cursor"] = cursor
            rep = c.request(req, timeout=10.0)
            if not rep.get("ok"):
                raise AssertionError("history failed: %r" % rep)
            for e in rep["events"]:
                p = e["payload"]
                found[e["seq"]] = (e["topic"], e["source"], p if isinstance(p, bytes) else None)
            cursor = rep["next_cursor"]
            if cursor is None:
                break
    return found


def publish_until(broker, stop):
    pub = publisher(broker)
    n = 0
    try:
        while not stop.is_set() and n < 10 ** 6:
            for _ in range(10):
                n += 1
                pub.send_multipart([b"seen.crash", b"event-%08d" % n], zmq.NOBLOCK)
            time.sleep(10.0 / RATE)
    except zmq.ZMQError:
        pass
    finally:
        pub.close(0)


t0 = time.time()
cycles = 0
seen_total = 0
recovered_runs = 0
try:
    for cycle in range(CYCLES):
        if time.time() - t0 > BUDGET:
            break
        b = Broker(data_dir=data_dir, extra=["--sync", "full"])
        try:
            b.start()
            sub = subscriber(b, "seen.")
            time.sleep(0.2)  # the subscription reaches the XPUB
            stop = threading.Event()
            th = threading.Thread(target=publish_until, args=(b, stop))
            th.start()
            seen = {}
            kill_at = time.time() + rng.uniform(0.3, 0.8)
            while time.time() < kill_at:
                if sub.poll(10):
                    for _ in range(1000):
                        try:
                            topic, seq, ts, src, payload = decode_event(sub.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                        seen[seq] = (topic, src, payload)
            b.kill()
            # What the dead broker had sent already: drain it.
            for _ in range(100000):
                if not sub.poll(200):
                    break
                topic, seq, ts, src, payload = decode_event(sub.recv())
                seen[seq] = (topic, src, payload)
            stop.set()
            th.join(5.0)
            sub.close(0)
        finally:
            b.cleanup()
        t.check(seen, "cycle %d: the subscriber received events" % cycle)
        if not seen:
            continue
        seen_total += len(seen)

        b = Broker(data_dir=data_dir, extra=["--sync", "full"])
        try:
            b.start()
            if "forwarded before their commit" in b.logs():
                recovered_runs += 1
            hist = history_of(b, seen.keys())
            missing = sorted(s for s in seen if s not in hist)
            t.check(not missing, "cycle %d: all %d events seen before the kill are in the history "
                    "(missing %d, first %r)" % (cycle, len(seen), len(missing), missing[:5]))
            differ = [s for s in seen if s in hist and hist[s] != seen[s]]
            t.check(not differ, "cycle %d: the history holds exactly the bytes seen (%d differ: "
                    "%r)" % (cycle, len(differ), [(s, seen[s], hist[s]) for s in differ[:2]]))
            b.stop()
        finally:
            b.cleanup()
        cycles += 1
finally:
    shutil.rmtree(data_dir, ignore_errors=True)

t.check(cycles >= 6, "at least 6 kill cycles ran (%d)" % cycles)
print("%d cycles, %d events seen, %d restarts stored events from the forward log"
      % (cycles, seen_total, recovered_runs))
t.done()
