"""A damaged write-ahead log never loses, duplicates or corrupts an
acknowledged change.

One broker (sync=full) takes acknowledged publishes and claims, then
events nobody waits for (written to the log, not flushed) while a
subscriber records what it sees, and is killed (SIGKILL). The tail of its
log past the last flush (where a power cut can tear a write) is then
damaged, in 24 copies of the data directory, each one way at a random
offset: the file cut there, bytes flipped, garbage or zeros written over a
stretch; and some copies are damaged below the checkpoint (log the store
already holds) or past the end of the log. Every copy is started (the real
nexusd), and must

  - start (a torn tail is cut, never a reason to refuse),
  - hold every acknowledged publish exactly once, at its seq, with its
    bytes, and every acknowledged claim with its token, holder and state,
  - hold nothing we did not send, byte for byte (a damaged frame never
    passes its checksum), with seqs strictly increasing,
  - hand out new seqs above everything stored; when it says the log ended
    in a torn write, above every seq the subscriber saw (those seqs are
    skipped, never handed out again for another event),
  - hand out fencing tokens above every acknowledged one,
  - when it skipped seqs, keep skipping them after a clean stop that
    stored nothing and a start on the same boot,
and every eighth copy is stopped and started once more and must show the
same history (recovery is done once, not again). The same damage in 240
copies, recovered in-process without a broker start each, is
tests/unit/test_wal_recovery.c.

The frame format is docs/architecture.md's; the test only needs the
positions state reports (log.durable, log.written, log.checkpoint,
log.segment_size). Every loop is bounded in count and time.
"""

import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Broker, Checks, Client, publisher, recv_event,  # noqa: E402
                     settle_subscription, subscriber)

CASES = 24
WORKERS = 2
MAGIC = b"NXWD"

t = Checks()
SEED = int(os.environ.get("NEXUS_DAMAGE_SEED") or random.randrange(1 << 30))
rng = random.Random(SEED)
print("wal damage test seed %d (set NEXUS_DAMAGE_SEED to repeat)" % SEED)

sent = {}          # counter -> (topic, payload)
acked = {}         # seq -> counter (acknowledged publishes)
claims = {}        # work_id -> (token, state)
seen = {}          # seq -> counter, what the subscriber received


def payload_of(n):
    body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
    return MAGIC + struct.pack(">Q", n) + body


def counter_of(payload):
    if len(payload) >= 12 and payload[:4] == MAGIC:
        return struct.unpack(">Q", payload[4:12])[0]
    return None


def log_state(c):
    st = c.request({"op": "state"})
    assert st.get("ok"), st
    return st["log"]


root = tempfile.mkdtemp(prefix="nexus-wal-damage-")
base = os.path.join(root, "base")
FLAGS = ["--sync", "full", "--flush-interval", "10s", "--checkpoint-interval", "600s",
         "--wal-segment", "1M", "--max-payload", "64K", "--max-request", "64K"]
try:
    # ---- the data: acknowledged changes, then a tail nobody waits for ----
    b = Broker(data_dir=base, extra=FLAGS)
    b.start()
    with Client(b) as c:
        sub = subscriber(b, "dmg.")
        settle_subscription(b, sub, "dmg.settle")
        rep = c.request({"op": "session.register", "session": "dmg-w", "heartbeat_ms": 600000})
        secret = rep["secret"]
        n = 0
        for i in range(150):
            n += 1
            p = payload_of(n)
            sent[n] = ("dmg.acked", p)
            rep = c.request({"op": "publish", "topic": "dmg.acked", "payload": p})
            assert rep.get("ok"), rep
            acked[rep["seq"]] = n
        # A checkpoint covers the first part (a history query makes the store
        # catch up with the log): damage below it must change nothing.
        c.request({"op": "history", "since_seq": 0, "limit": 1})
        checkpoint = log_state(c)["checkpoint"]
        for i in range(30):
            wid = "dmg/%d" % i
            rep = c.request({"op": "work.claim", "session": "dmg-w", "work_id": wid,
                             "ttl_ms": 600000})
            assert rep.get("ok"), rep
            claims[wid] = (rep["token"], "claimed")
            if i % 3 == 0:
                rep = c.request({"op": "work.complete", "session": "dmg-w", "work_id": wid,
                                 "token": rep["token"], "result": i})
                assert rep.get("ok"), rep
                claims[wid] = (claims[wid][0], "completed")
        for i in range(150):
            n += 1
            p = payload_of(n)
            sent[n] = ("dmg.acked", p)
            rep = c.request({"op": "publish", "topic": "dmg.acked", "payload": p})
            assert rep.get("ok"), rep
            acked[rep["seq"]] = n
        durable = log_state(c)["durable"]
        pub = publisher(b)
        time.sleep(0.2)
        for i in range(300):
            n += 1
            p = payload_of(n)
            sent[n] = ("dmg.tail", p)
            pub.send_multipart([b"dmg.tail", p])
            if i % 50 == 49:
                time.sleep(0.05)  # the tail in several turns (frames)
        deadline = time.time() + 10
        while len(seen) < 300 and time.time() < deadline:
            try:
                ev = recv_event(sub, timeout=1.0)
            except TimeoutError:
                break
            if ev[0] == "dmg.tail":
                seen[ev[1]] = counter_of(ev[4])
        lg = log_state(c)
        written, seg = lg["written"], lg["segment_size"]
        pub.close(0)
        sub.close(0)
    t.eq(len(seen), 300, "the subscriber saw the whole tail before the kill")
    t.check(lg["durable"] == durable < written,
            "the tail was written, not flushed: durable %d, written %d" % (lg["durable"], written))
    t.check(0 < checkpoint < durable, "a checkpoint %d below the acknowledged end %d"
            % (checkpoint, durable))
    b.kill()
    b.cleanup()
    max_seen = max(seen) if seen else 0
    max_token = max(tok for tok, _ in claims.values())

    def segment_path(data_dir, lsn):
        return os.path.join(data_dir, "wal", "%016x.log" % (lsn - lsn % seg))

    def damage(data_dir, r, kind, lsn):
        """Damages the log at lsn; returns a description."""
        path = segment_path(data_dir, lsn)
        off = lsn % seg
        if kind == "cut":
            os.truncate(path, off)
            return "cut at %d" % lsn
        with open(path, "r+b") as f:
            if kind == "flip":
                k = r.randrange(1, 9)
                for _ in range(k):
                    at = off + r.randrange(0, 64)
                    f.seek(at)
                    b0 = f.read(1)
                    f.seek(at)
                    f.write(bytes([(b0[0] if b0 else 0) ^ (1 << r.randrange(8))]))
                return "%d bits flipped at %d" % (k, lsn)
            size = r.randrange(1, 4096)
            f.seek(off)
            if kind == "garbage":
                f.write(bytes(r.getrandbits(8) for _ in range(size)))
            else:
                f.write(bytes(size))
            return "%d bytes of %s at %d" % (size, kind, lsn)

    def plan(i):
        r = random.Random(SEED * 1000 + i)
        kind = r.choice(["cut", "flip", "garbage", "zeros"])
        where = r.random()
        if where < 0.08:
            lsn = r.randrange(0, checkpoint)      # below the checkpoint
            if kind == "cut":
                kind = "flip"                     # a cut there would cut the tail too
        elif where < 0.14:
            lsn = written + r.randrange(64, 8192)  # past the end
        else:
            lsn = r.randrange(durable, written + 64)  # the tail
        return r, kind, lsn

    def history(c):
        events, cursor = [], None
        for _ in range(100):
            req = {"op": "history", "since_seq": 0, "limit": 10000}
            if cursor is not None:
                req["cursor"] = cursor
            rep = c.request(req, timeout=20.0)
            assert rep.get("ok"), rep
            events.extend(rep["events"])
            cursor = rep["next_cursor"]
            if cursor is None:
                return events
        raise AssertionError("history pagination did not end")

    lock = threading.Lock()
    results = {"cases": 0, "torn": 0, "skipped": 0}

    def check_case(i):
        r, kind, lsn = plan(i)
        case_dir = os.path.join(root, "case%d" % i)
        shutil.copytree(base, case_dir)
        what = "case %d (%s)" % (i, damage(case_dir, r, kind, lsn))
        fails = []
        logs = ""

        def check(cond, msg):
            if not cond:
                fails.append("%s: %s" % (what, msg))
            return cond

        b = Broker(data_dir=case_dir, extra=FLAGS)
        try:
            b.start()
            logs = b.logs()
            if "skipped" in logs:
                # The skip holds for the runs after this one even when this
                # one stores nothing: a clean stop, and a start on the same
                # boot must not hand out the skipped seqs (it did).
                check(b.stop() == 0, "clean stop right after the skip")
                b.start()
            with Client(b) as c:
                events = history(c)
                seqs = [e["seq"] for e in events]
                check(all(y > x for x, y in zip(seqs, seqs[1:])), "seqs strictly increasing")
                by_seq, counters, bad = {}, set(), []
                for e in events:
                    if not e["topic"].startswith("dmg.") or e["topic"] == "dmg.settle":
                        continue
                    k = counter_of(e["payload"])
                    if k is None or k not in sent or sent[k] != (e["topic"], e["payload"]) or \
                            k in counters:
                        bad.append(e["seq"])
                    counters.add(k)
                    by_seq[e["seq"]] = k
                check(not bad, "every stored event is one we sent, once, byte-exact: %r" % bad[:5])
                missing = [s for s, k in acked.items() if by_seq.get(s) != k]
                check(not missing, "every acknowledged publish at its seq: missing %r"
                      % missing[:5])
                tail = [s for s in by_seq if sent[by_seq[s]][0] == "dmg.tail"]
                check(all(seen.get(s) == by_seq[s] for s in tail),
                      "tail events kept are the ones seen, at their seqs")
                lost = [wid for wid, (tok, state) in claims.items()
                        if (lambda rec: (rec.get("token"), rec.get("state")) != (tok, state))(
                            c.request({"op": "work.get", "work_id": wid}).get("claim") or {})]
                check(not lost, "every acknowledged claim: %r" % lost[:5])
                rep = c.request({"op": "publish", "topic": "dmg.after", "payload": b"after"})
                new_seq = rep.get("seq", 0)
                check(rep.get("ok") and new_seq > max(seqs or [0]) and new_seq > max(acked),
                      "a new seq above everything stored: %r" % rep)
                skipped = "skipped" in logs
                torn = "torn write" in logs
                if torn:
                    check(skipped or len(tail) == len(seen),
                          "a torn tail that lost seen events skips their seqs")
                if skipped:
                    check(new_seq > max_seen, "seqs seen before are not handed out again (%d <= %d)"
                          % (new_seq, max_seen))
                rep = c.request({"op": "work.claim", "session": "dmg-w", "secret": secret,
                                 "work_id": "dmg/new", "ttl_ms": 60000})
                check(rep.get("ok") and rep.get("token", 0) > max_token,
                      "a new fencing token above every acknowledged one: %r" % rep)
            if i % 8 == 0:
                check(b.stop() == 0, "clean stop")
                b.start()
                with Client(b) as c:
                    again = [e for e in history(c) if e["topic"].startswith("dmg.")]
                check([(e["seq"], e["payload"]) for e in again if e["topic"] != "dmg.after"] ==
                      [(e["seq"], e["payload"]) for e in events
                       if e["topic"].startswith("dmg.")], "the same history after a restart")
            check(b.stop() == 0, "clean stop")
        except Exception as e:  # a broker that does not start is a failure
            fails.append("%s: %r\n%s" % (what, e, b.logs()[-2000:]))
        finally:
            b.cleanup()
            shutil.rmtree(case_dir, ignore_errors=True)
        with lock:
            results["cases"] += 1
            results["torn"] += "torn write" in logs
            results["skipped"] += "skipped" in logs
            for f in fails:
                t.check(False, f)
            if not fails:
                t.passed += 1

    t0 = time.time()
    next_case = [0]

    def worker():
        while True:
            with lock:
                i = next_case[0]
                next_case[0] += 1
            if i >= CASES:
                return
            check_case(i)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(240)
    t.eq(results["cases"], CASES, "every damaged copy was started")

    # The undamaged log, started with another segment size: recovery reads
    # it with the size it was written with, and the log goes on with the
    # new one (and a kill -9 after that recovers again).
    resized = os.path.join(root, "resized")
    shutil.copytree(base, resized)
    flags2 = [x if x != "1M" else "2M" for x in FLAGS]
    b = Broker(data_dir=resized, extra=flags2)
    try:
        b.start()
        with Client(b) as c:
            evs = history(c)
            by_seq = {e["seq"]: counter_of(e["payload"]) for e in evs}
            t.check(all(by_seq.get(s) == k for s, k in acked.items()),
                    "another segment size: every acknowledged publish is there")
            t.eq(c.request({"op": "state"})["log"]["segment_size"], 2 << 20,
                 "the log goes on with the new segment size")
            rep = c.request({"op": "publish", "topic": "dmg.resized", "payload": b"r"})
            t.check(rep.get("ok"), "a publish after the resize: %r" % rep)
        b.kill()
        b.start()
        with Client(b) as c:
            t.check(any(e["topic"] == "dmg.resized" for e in history(c)),
                    "and a kill -9 after it loses nothing")
        t.eq(b.stop(), 0, "clean stop")
    finally:
        b.cleanup()
    # A frame's body damaged with frames that check after it (here in the
    # tail: the store's checkpoint caught up with the acknowledged part
    # before the kill; the same damage in acknowledged log, where the loss
    # is real, is test_wal_recovery.c's): what follows cannot be kept, but
    # the broker must say so as an error, not as the usual torn write ("no
    # acknowledged change is in them"), show it in health, and keep a copy
    # of the segment.
    middle = os.path.join(root, "middle")
    shutil.copytree(base, middle)
    at, frames = durable, []
    with open(segment_path(middle, at), "rb") as f:
        data = f.read()
    while len(frames) < 4:
        off = at % seg
        magic, lsn, ln = struct.unpack(">I Q I", data[off + 4:off + 20])
        if magic != 0x4e585731 or lsn != at or off + 32 + ln > seg - 32:
            break
        frames.append((at, ln))
        at += 32 + ln
    t.check(len(frames) >= 2, "frames of the tail in its segment: %r" % frames)
    hit = frames[0][0]
    t.check(durable <= hit < written, "the damage is in the tail")
    with open(segment_path(middle, hit), "r+b") as f:
        f.seek(hit % seg + 32 + 3)
        byte = f.read(1)[0]
        f.seek(hit % seg + 32 + 3)
        f.write(bytes([byte ^ 0x20]))
    damaged_copy = open(segment_path(middle, hit), "rb").read()
    b = Broker(data_dir=middle, extra=FLAGS)
    try:
        b.start()
        logs = b.logs()
        t.check("write-ahead log is damaged at %d" % hit in logs and "that do follow it"
                in logs and "ended in a torn write" not in logs,
                "the damage is said as such (a skip too, never as a torn write): %r"
                % logs[-1500:])
        kept = os.path.join(middle, "wal.damaged-%016x" % hit)
        kept_seg = os.path.join(kept, os.path.basename(segment_path(middle, hit)))
        t.check(os.path.exists(kept_seg) and open(kept_seg, "rb").read() == damaged_copy,
                "a copy of the segment as found: %r" % (os.listdir(middle),))
        with Client(b) as c:
            h = c.request({"op": "health"})
            t.check(h.get("status") == "degraded" and "damaged" in (h.get("problem") or ""),
                    "health says degraded, and why: %r" % h)
            rep = c.request({"op": "publish", "topic": "dmg.middle", "payload": b"m"})
            t.check(rep.get("ok") and rep["seq"] > max(max_seen, max(acked)),
                    "new seqs above every seq handed out: %r" % rep)
        t.eq(b.stop(), 0, "clean stop")
        # The next start finds the log whole: no error, no new copy.
        before = len(b.logs())
        b.start()
        later = b.logs()
        later = later[before:] if len(later) >= before else later
        t.check("damaged" not in later and "torn" not in later,
                "a restart after it finds nothing more: %r" % later[-800:])
        with Client(b) as c:
            t.eq(c.request({"op": "health"}).get("status"), "active", "and health is active")
        t.eq(b.stop(), 0, "clean stop again")
    finally:
        b.cleanup()

    # A run that could not flush its log leaves a mark (flush-failed): Linux
    # may have dropped the pages it could not write, so the undamaged log
    # of this very boot is not trusted to hold every event that went out.
    # (Without the mark the same copy continues its seqs: the "resized"
    # start above.) The mark is gone once the new run's records are flushed.
    marked = os.path.join(root, "marked")
    shutil.copytree(base, marked)
    open(os.path.join(marked, "flush-failed"), "w").close()
    b = Broker(data_dir=marked, extra=FLAGS)
    try:
        b.start()
        logs = b.logs()
        t.check("may have been seen and are skipped" in logs and "could not write or flush" in logs,
                "a failed flush's mark skips the seqs: %r" % logs[-1200:])
        t.check(not os.path.exists(os.path.join(marked, "flush-failed")),
                "the mark is removed once the new run is logged")
        with Client(b) as c:
            rep = c.request({"op": "publish", "topic": "dmg.marked", "payload": b"k"})
            t.check(rep.get("ok") and rep["seq"] > max_seen,
                    "new seqs above every seq seen: %r (seen up to %d)" % (rep, max_seen))
        t.eq(b.stop(), 0, "clean stop")
    finally:
        b.cleanup()

    # A restored copy of data.mdb without its log (what mdb_copy of a running
    # broker gives, operations.md "Backup and restore"), started on the
    # boot that wrote it: the run it was copied from may have handed out
    # more seqs and tokens than the copy holds, so they are skipped (they
    # were handed out again, under the same store id).
    restored = os.path.join(root, "restored")
    shutil.copytree(base, restored)
    shutil.rmtree(os.path.join(restored, "wal"))
    b = Broker(data_dir=restored, extra=FLAGS)
    try:
        b.start()
        logs = b.logs()
        t.check("may have been seen and are skipped" in logs and "log is not there" in logs
                and "fencing tokens up to" in logs,
                "a store without its log skips seqs and tokens: %r" % logs[-1200:])
        with Client(b) as c:
            rep = c.request({"op": "publish", "topic": "dmg.restored", "payload": b"r"})
            t.check(rep.get("ok") and rep["seq"] > max_seen,
                    "new seqs above every seq the old run handed out: %r (seen up to %d)"
                    % (rep, max_seen))
            rep = c.request({"op": "session.register", "session": "dmg-r", "heartbeat_ms": 600000})
            rep = c.request({"op": "work.claim", "session": "dmg-r", "work_id": "dmg/r",
                             "ttl_ms": 600000})
            t.check(rep.get("ok") and rep["token"] > max_token,
                    "new tokens above every token handed out: %r (up to %d)" % (rep, max_token))
        t.eq(b.stop(), 0, "clean stop")
    finally:
        b.cleanup()

    t.check(results["torn"] > 0 and results["skipped"] > 0,
            "some damage was found torn and skipped seqs: %r" % results)
    print("%d cases in %.1fs: %r" % (results["cases"], time.time() - t0, results))
finally:
    shutil.rmtree(root, ignore_errors=True)
t.done()
