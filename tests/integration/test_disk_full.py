"""Issue 18, finding 5 and "disk full": the data directory on a 24 MiB
tmpfs, filled as a new user would, with acknowledged publishes of 60 KB.

Before: the LMDB commit failed with EIO, the publisher was told only
"the store failed", subscribers had seen an event history would never
hold, then a write of the log failed and nexusd exited; after that crash
it would not start at all.

Now:
- a free-space reserve (disk_reserve + the log's next segments + the next
  checkpoint) is kept: before the disk is full, acknowledged publishes and
  claims get store_full "data disk full", events from the event plane are
  dropped (counted), health says degraded and why, the broker stays up;
- every acknowledged event is in the history, byte for byte, and a
  subscriber saw exactly the acknowledged seqs (none the history lacks);
- writes resume once space is freed, without a restart;
- kill -9 near full: the next start recovers (the reserve is there for it);
- kill -9 with log above the checkpoint, then the disk filled to the last
  byte: the broker starts read-only (ping, health, history up to the
  checkpoint; writes refused, saying why) and, once space is freed, starts
  again by itself and serves every acknowledged event and new writes.

Both sync=full (preallocated log segments) and sync=none (sparse ones).
Needs to mount a tmpfs (root); exits 77 (skipped) where it cannot.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, decode_event, wait_until  # noqa: E402

t = Checks()
mnt = tempfile.mkdtemp(prefix="nexus-tmpfs-")
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt],
                  stderr=subprocess.DEVNULL).returncode != 0:
    os.rmdir(mnt)
    print("cannot mount a tmpfs here (not root?): skipped")
    sys.exit(77)

SMALL = ["--wal-segment", "1M", "--max-payload", "64K", "--max-request", "128K",
         "--batch-bytes", "256k", "--disk-reserve", "1M"]


def free_bytes():
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


def fill(path, leave=0):
    """Writes a file until at most `leave` bytes are free; returns its size."""
    n = 0
    with open(path, "wb") as f:
        chunk = b"\0" * 65536
        while free_bytes() > leave + len(chunk):
            f.write(chunk)
            f.flush()
            n += len(chunk)
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
                n += 4096
                if free_bytes() <= leave:
                    break
        except OSError:
            pass
    return n


def history(c, limit=1000):
    out = []
    cursor = None
    for _ in range(100):
        req = {"op": "history", "since_seq": 0, "limit": limit}
        if cursor:
            req = {"op": "history", "cursor": cursor, "limit": limit}
        rep = c.request(req, timeout=30)
        if not rep.get("ok"):
            return None
        out += rep["events"]
        cursor = rep.get("next_cursor")
        if not cursor:
            break
    return out


def run(sync):
    data = os.path.join(mnt, "data-" + sync)
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (3 << 20))
    b = Broker(data_dir=data, extra=["--sync", sync] + SMALL)
    b.start()
    try:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"fill.")
        sub.connect(b.events_out)
        time.sleep(0.3)
        acked = {}
        refused = None
        with Client(b) as c:
            for i in range(600):
                payload = os.urandom(60000)
                rep = c.request({"op": "publish", "topic": "fill.x", "payload": payload}, timeout=15)
                if rep.get("ok"):
                    acked[rep["seq"]] = hashlib.sha256(payload).hexdigest()
                else:
                    refused = rep
                    break
            t.check(refused is not None, "%s: the publishes were refused before the disk filled" % sync)
            t.eq(refused and refused.get("error"), "store_full", "%s: the error is store_full" % sync)
            t.check(refused and "data disk full" in refused.get("message", ""),
                    "%s: ... saying data disk full: %r" % (sync, refused and refused.get("message")))
            # ... and naming the settings behind what it keeps free.
            for part in ("disk_reserve", "wal_segment", "batch_bytes"):
                t.check(refused and part in refused.get("message", ""),
                        "%s: the refusal names %s: %r" % (sync, part, refused and refused.get("message")))
            print("%s: %d acknowledged publishes of 60 KB, then %r; %d bytes free" %
                  (sync, len(acked), refused and refused.get("message"), free_bytes()))
            t.check(free_bytes() > 0, "%s: refused while the disk still had room" % sync)
            t.check(len(acked) > 100, "%s: most of the disk was used first (%d)" % (sync, len(acked)))
            # A claim and the event plane are refused too; the broker stays up.
            rep = c.request({"op": "session.register", "session": "s-1"})
            t.eq(rep.get("error"), "store_full", "%s: session.register refused" % sync)
            pub = zmq.Context.instance().socket(zmq.PUB)
            pub.linger = 1000
            pub.connect(b.events_in)
            time.sleep(0.3)
            for _ in range(20):
                pub.send_multipart([b"fill.plane", b"x" * 1000])
            pub.close()
            health = c.request({"op": "health"})
            t.eq(health.get("status"), "degraded", "%s: health is degraded" % sync)
            t.check("data disk full" in (health.get("problem") or ""), "%s: health says why" % sync)
            t.check(b.proc.poll() is None, "%s: the broker is up" % sync)
            # Whatever a subscriber saw is in the history: acknowledged
            # events byte for byte, and those of the event plane that found
            # room (the others were dropped and counted).
            seen = {}
            while sub.poll(500):
                ev = decode_event(sub.recv())
                seen[ev[1]] = ev[0]
            evs = history(c)
            stored = {e["seq"]: e for e in evs or []}
            got = {q: hashlib.sha256(e["payload"]).hexdigest() for q, e in stored.items()
                   if e["topic"] == "fill.x"}
            t.eq(got, acked, "%s: history holds every acknowledged event, byte for byte" % sync)
            t.eq(sorted(q for q, tp in seen.items() if tp == "fill.x"), sorted(acked),
                 "%s: subscribers saw exactly the acknowledged publishes" % sync)
            t.check(set(seen) <= set(stored), "%s: every event a subscriber saw is in the history" % sync)
            plane = [q for q, e in stored.items() if e["topic"] == "fill.plane"]
            dropped = c.request({"op": "state"})["drops"]["store"]
            t.eq(len(plane) + dropped, 20,
                 "%s: event-plane events were stored (%d, when there was room) or dropped and "
                 "counted (%d)" % (sync, len(plane), dropped))
            # Space is freed: writes resume, no restart.
            os.unlink(filler)
            ok = wait_until(lambda: c.request({"op": "publish", "topic": "fill.x",
                                               "payload": b"again"}).get("ok"), timeout=10)
            t.check(ok, "%s: writes resume once space is freed" % sync)
            t.check("data disk has room again" in b.logs(), "%s: the log says writes resume" % sync)
        # kill -9 near full: the next start recovers.
        with Client(b) as c:
            for i in range(400):
                rep = c.request({"op": "publish", "topic": "fill.y", "payload": os.urandom(60000)},
                                timeout=15)
                if not rep.get("ok"):
                    break
                acked[rep["seq"]] = None
        b.kill()
        b.start()
        with Client(b) as c:
            evs = history(c)
            t.check(evs is not None and set(acked) <= {e["seq"] for e in evs},
                    "%s: after kill -9 near full every acknowledged event is back" % sync)
        sub.close()
    finally:
        b.stop()
    return b, data


# sync=none first, on its own data dir; then sync=full, which goes on to
# the read-only start.
b, data = run("none")
shutil.rmtree(data, ignore_errors=True)
b.cleanup()

b, data = run("full")
# Read-only: a log above the checkpoint (a long checkpoint interval), a
# kill -9, then the disk filled to its last byte while the broker is down.
shutil.rmtree(data, ignore_errors=True)
extra = ["--sync", "full", "--checkpoint-interval", "600s", "--wal-segment", "4M",
         "--max-payload", "64K", "--max-request", "128K", "--batch-bytes", "256k",
         "--disk-reserve", "1M"]
b = Broker(data_dir=data, extra=extra)
b.start()
acked = {}
with Client(b) as c:
    for i in range(25):
        payload = os.urandom(60000)
        rep = c.request({"op": "publish", "topic": "ro.x", "payload": payload})
        t.check(rep.get("ok"), "read-only setup: publish %d" % i) if not rep.get("ok") else None
        acked[rep.get("seq")] = hashlib.sha256(payload).hexdigest()
    # (No state or history here: they wait for a checkpoint.)
b.kill()
filler = os.path.join(mnt, "filler")
fill(filler, leave=0)
b.start()
t.check("read-only" in b.logs(), "a start that cannot recover for want of space is read-only")
with Client(b) as c:
    t.check(c.request({"op": "ping"}).get("ok"), "read-only: ping answers")
    h = c.request({"op": "health"})
    t.eq(h.get("status"), "degraded", "read-only: health is degraded")
    t.check("read-only" in (h.get("problem") or ""), "read-only: health says why: %r" % h.get("problem"))
    rep = c.request({"op": "publish", "topic": "ro.x", "payload": b"no"})
    t.eq(rep.get("error"), "store_full", "read-only: a publish is refused")
    t.check("read-only" in rep.get("message", ""), "... saying read-only")
    rep = c.request({"op": "work.list"})
    t.eq(rep.get("error"), "store_full", "read-only: coordination is refused too")
    rep = c.request({"op": "history", "since_seq": 0, "limit": 10})
    t.check(rep.get("ok"), "read-only: history answers: %r" % {k: rep.get(k) for k in ("error", "message")})
    # Space is freed: it starts again by itself and recovers everything.
    os.unlink(filler)
    t.check(wait_until(lambda: "starting again to recover the log" in b.logs(), timeout=10),
            "read-only: once space is freed it starts again")

    def recovered():
        try:
            return c.request({"op": "publish", "topic": "ro.x", "payload": b"yes"}, timeout=2).get("ok")
        except TimeoutError:
            return False
    t.check(wait_until(recovered, timeout=30), "after the restart writes are served")
    evs = history(c)
    got = {e["seq"]: hashlib.sha256(e["payload"]).hexdigest() for e in evs or []
           if e["topic"] == "ro.x" and e["payload"] != b"yes"}
    t.eq(got, acked, "every acknowledged event is in the history after the read-only time")
print("\n".join(l for l in b.logs().splitlines() if " I " not in l))
t.eq(b.stop(), 0, "the broker stops cleanly")
t.check("AddressSanitizer" not in b.logs(), "no sanitizer report")
b.cleanup()
shutil.rmtree(data, ignore_errors=True)

# The default settings keep more free than this 24 MiB disk has: said at
# the start (the first write would be refused), naming the settings.
small = os.path.join(mnt, "defaults")
b = Broker(data_dir=small)
b.start()
start_log = b.logs()
t.check("writes will be refused" in start_log and "batch_bytes" in start_log,
        "a disk smaller than the reserve is said at the start: %r" %
        [l for l in start_log.splitlines() if "disk" in l])
t.eq(b.stop(), 0, "that broker stops cleanly")
b.cleanup()
shutil.rmtree(small, ignore_errors=True)
subprocess.run(["umount", mnt])
os.rmdir(mnt)
t.done()
sys.exit(1 if t.failed else 0)
