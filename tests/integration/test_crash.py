"""Crash durability: SIGKILL nexusd (--sync full) at random moments while a
client publishes with acknowledgement, restart it on the same data
directory, and prove from the history that

  - every acknowledged publish is there, at its seq, with exactly its
    topic, source and payload bytes;
  - publishes that were in flight (sent, never acknowledged) are either
    absent or present with exactly their bytes, never corrupted, never
    duplicated;
  - what one restart's history showed is still there, unchanged, after
    every later crash (committed means committed);
  - seq never goes backwards: the store's last_seq after a restart is at
    least every seq seen before, the first publish of the new run gets
    above last_seq, and history seqs are strictly increasing. The log is
    in the page cache, which a kill leaves in place, so a restart on the
    same boot continues at last_seq + 1; only when the log says it ended
    in a torn write (a kill inside a write) are seqs skipped, by at most
    one reservation block;
  - claims made at the same time by another client (claim, then complete
    or release, one in flight) are all there after every restart: every
    acknowledged grant with its token and holder, every acknowledged
    complete or release in its state, and the fencing tokens of a new run
    above every token acknowledged before.

The publisher is pipelined (up to 32 requests outstanding on one DEALER)
so the kill lands in the middle of turns that write and flush the log.
Every loop is bounded in count and in time.
"""

import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client  # noqa: E402

CYCLES = 22
MIN_CYCLES = 20
WINDOW = 32
# The cycles are bounded by count; this hard limit only stops a run that
# hangs, and then the test fails (fewer than MIN_CYCLES). ~40 s under ASan
# on a loaded 2-core machine; ctest's timeout is 300 s.
HARD_LIMIT = 200.0
MAGIC = b"NXCR"

t = Checks()
SEED = int(os.environ.get("NEXUS_CRASH_SEED") or random.randrange(1 << 30))
rng = random.Random(SEED)
print("crash test seed %d (set NEXUS_CRASH_SEED to repeat)" % SEED)

# counter -> (topic, source, payload) for every publish ever sent
sent = {}
# seq -> counter for every acknowledged publish
acked = {}
# seq -> counter for everything ever observed in a history after a restart
observed = {}
max_seen = 0  # highest seq acknowledged or observed in any history
next_counter = [1]


def make_event(cycle):
    n = next_counter[0]
    next_counter[0] += 1
    body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
    payload = MAGIC + struct.pack(">Q", n) + body
    topic = "crash.cycle%d.k%d" % (cycle, n % 5)
    source = "crasher-%d" % cycle
    sent[n] = (topic, source, payload)
    return n, topic, source, payload


def counter_of(payload):
    if len(payload) < 12 or payload[:4] != MAGIC:
        return None
    return struct.unpack(">Q", payload[4:12])[0]


class Publisher(threading.Thread):
    """Pipelined acknowledged publisher; records acks in reply order."""

    def __init__(self, broker, cycle, deadline):
        super().__init__(daemon=True)
        self.endpoint = broker.control
        self.cycle = cycle
        self.deadline = deadline
        self.stop = threading.Event()
        self.acks = []        # (seq, counter) in the order replies arrived
        self.errors = []      # error replies (there must be none)
        self.outstanding = set()
        self.sent_count = 0

    def take_replies(self, sock, wait_ms):
        for _ in range(100000):
            if not sock.poll(wait_ms):
                return
            rep = msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
            n = rep.get("id")
            self.outstanding.discard(n)
            if rep.get("ok") is True and isinstance(rep.get("seq"), int):
                self.acks.append((rep["seq"], n))
            else:
                self.errors.append(rep)

    def run(self):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        try:
            while not self.stop.is_set() and time.time() < self.deadline:
                while len(self.outstanding) < WINDOW:
                    n, topic, source, payload = make_event(self.cycle)
                    req = {"op": "publish", "id": n, "topic": topic, "source": source,
                           "payload": payload}
                    try:
                        sock.send(msgpack.packb(req, use_bin_type=True), zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.outstanding.add(n)
                    self.sent_count += 1
                if sock.poll(20):
                    self.take_replies(sock, 0)
            # Replies the broker sent before it died may still be queued here.
            self.take_replies(sock, 100)
        finally:
            sock.close(0)


# work_id -> (token, holder, state) acknowledged last, for every claim
claims_acked = {}
max_token = [0]
claimer_secret = [None]
run_starts = []  # (cycle, last_seq at its start, seqs skipped at its start)


class Claimer(threading.Thread):
    """Claims unique work items one at a time, then completes or releases
    each (acknowledged); records what was acknowledged."""

    def __init__(self, broker, cycle, deadline):
        super().__init__(daemon=True)
        self.endpoint = broker.control
        self.cycle = cycle
        self.deadline = deadline
        self.stop = threading.Event()
        self.acks = {}  # work_id -> (token, holder, state)
        self.errors = []
        self.rng = random.Random(rng.randrange(1 << 30))

    def call(self, sock, req):
        sock.send(msgpack.packb(req, use_bin_type=True))
        for _ in range(1000):
            if self.stop.is_set() or not sock.poll(50):
                if self.stop.is_set() or time.time() > self.deadline:
                    return None
                continue
            rep = msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
            if rep.get("id") == req["id"]:
                return rep
        return None

    def run(self):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        n = 0
        try:
            # Registered once; after a restart the session is stale and its
            # secret takes it back. A registration whose reply a kill cut
            # off leaves a session nobody knows the secret of: the next
            # cycle registers under another name.
            session, secret = claimer_secret[0] or ("crash-claimer-%d" % self.cycle, None)
            if not secret:
                rep = self.call(sock, {"op": "session.register", "id": "r%d" % self.cycle,
                                       "session": session, "heartbeat_ms": 600000})
                if not rep or not rep.get("ok"):
                    if rep:
                        self.errors.append(rep)
                    return
                secret = rep["secret"]
                claimer_secret[0] = (session, secret)
            while not self.stop.is_set() and time.time() < self.deadline:
                n += 1
                wid = "crash/%d/%d" % (self.cycle, n)
                rep = self.call(sock, {"op": "work.claim", "id": "c%d" % n, "session": session,
                                       "secret": secret, "work_id": wid, "ttl_ms": 600000})
                if rep is None:
                    return
                if not rep.get("ok"):
                    self.errors.append(rep)
                    return
                self.acks[wid] = (rep["token"], session, "claimed")
                end = self.rng.choice(["work.complete", "work.release"])
                rep = self.call(sock, {"op": end, "id": "e%d" % n, "session": session,
                                       "secret": secret, "work_id": wid, "token": rep["token"]})
                if rep is None:
                    return
                if not rep.get("ok"):
                    self.errors.append(rep)
                    return
                self.acks[wid] = (self.acks[wid][0], session, rep["state"])
        finally:
            sock.close(0)


def verify_claims(broker, label):
    """Every acknowledged claim change is in the store."""
    with Client(broker) as c:
        bad = []
        for wid, (token, holder, state) in sorted(claims_acked.items()):
            rec = c.request({"op": "work.get", "work_id": wid}).get("claim") or {}
            if (rec.get("token"), rec.get("holder")) != (token, holder) or \
                    (state != "claimed" and rec.get("state") != state):
                bad.append((wid, (token, holder, state), rec.get("token"), rec.get("state")))
        t.check(not bad, "%s: every acknowledged claim change (%d) is stored: %.300r"
                % (label, len(claims_acked), bad[:5]))


def read_history(broker):
    """Every event in the store, paginated with the cursor (bounded)."""
    events = []
    cursor = None
    with Client(broker) as c:
        for _ in range(1000):
            req = {"op": "history", "since_seq": 0, "limit": 10000}
            if cursor is not None:
                req["cursor"] = cursor
            rep = c.request(req, timeout=10.0)
            if not rep.get("ok"):
                raise AssertionError("history failed: %r" % rep)
            events.extend(rep["events"])
            cursor = rep["next_cursor"]
            if cursor is None:
                break
        else:
            raise AssertionError("history pagination did not end")
    return events


def verify_after_restart(broker, label):
    """Checks the restarted store against everything known so far; returns
    the store's last_seq."""
    global max_seen
    with Client(broker) as c:
        st = c.request({"op": "state"})
    t.check(st.get("ok") is True, "%s: state ok" % label)
    last_seq = st["history"]["last_seq"]
    t.check(last_seq >= max_seen,
            "%s: state last_seq %d >= highest seq seen before %d" % (label, last_seq, max_seen))

    events = read_history(broker)
    seqs = [e["seq"] for e in events]
    t.check(all(b > a for a, b in zip(seqs, seqs[1:])),
            "%s: history seqs strictly increasing, no duplicates" % label)
    t.eq(st["history"]["count"], len(events), "%s: state history count equals events read" % label)
    if seqs:
        t.check(seqs[-1] <= last_seq, "%s: history ends at or below last_seq" % label)
        t.eq(st["history"]["first_seq"], seqs[0], "%s: state first_seq is the first event" % label)

    by_seq = {}
    counters_seen = set()
    bad = []
    dup_counters = []
    for e in events:
        if e["topic"].startswith(("work.", "session.")):
            continue  # the claimer's events
        n = counter_of(e["payload"])
        if n is None or n not in sent:
            bad.append(("unknown payload", e["seq"], e["payload"][:32]))
            continue
        if n in counters_seen:
            dup_counters.append((n, e["seq"]))
        counters_seen.add(n)
        topic, source, payload = sent[n]
        if (e["topic"], e["source"], e["payload"]) != (topic, source, payload):
            bad.append(("corrupt", e["seq"], n))
        by_seq[e["seq"]] = n
    t.check(not bad, "%s: every stored event is one we sent, byte-exact: %.300r" % (label, bad))
    t.check(not dup_counters, "%s: no publish stored twice: %.300r" % (label, dup_counters))

    missing = [(s, n) for s, n in acked.items() if by_seq.get(s) != n]
    t.check(not missing, "%s: every acknowledged publish (%d) is present at its seq with its "
            "bytes; missing/moved: %.300r" % (label, len(acked), sorted(missing)[:10]))
    changed = [(s, n) for s, n in observed.items() if by_seq.get(s) != n]
    t.check(not changed, "%s: events seen after an earlier restart are unchanged: %.300r"
            % (label, sorted(changed)[:10]))

    # The first seq of each earlier run that was not skipped is its
    # start's last_seq + 1: no gap after a kill on the same boot.
    all_seqs = sorted(seqs)
    for cyc, start_last, was_skipped in run_starts:
        if was_skipped:
            continue
        after = [x for x in all_seqs if x > start_last]
        if after:
            t.eq(after[0], start_last + 1, "%s: the run of cycle %d went on at last_seq + 1 "
                 "(no torn write, no skip)" % (label, cyc))
    run_starts.clear()
    observed.update(by_seq)
    if seqs:
        max_seen = max(max_seen, seqs[-1])
    max_seen = max(max_seen, last_seq)
    return last_seq


data_dir = tempfile.mkdtemp(prefix="nexus-crash-")
t0 = time.time()
cycles_done = 0
cycles_with_acks = 0
inflight_total = 0
inflight_stored = 0
try:
    store_last = 0
    for cycle in range(CYCLES):
        if time.time() - t0 > HARD_LIMIT:
            print("FAIL: the hard time limit (%.0f s) stopped the cycles at %d" % (HARD_LIMIT, cycle))
            break
        b = Broker(data_dir=data_dir, extra=["--sync", "full"])
        try:
            b.start()
            label = "cycle %d restart" % cycle
            store_last = verify_after_restart(b, label)
            verify_claims(b, label)
            skipped = "skipped" in b.logs()
            torn = "torn write" in b.logs()

            pub = Publisher(b, cycle, deadline=time.time() + 5.0)
            claimer = Claimer(b, cycle, deadline=time.time() + 5.0)
            pub.start()
            claimer.start()
            time.sleep(rng.uniform(0.05, 0.40))
            b.kill()
            pub.stop.set()
            claimer.stop.set()
            pub.join(5.0)
            claimer.join(5.0)
            t.check(not pub.is_alive() and not claimer.is_alive(),
                    "cycle %d: client threads ended" % cycle)
        finally:
            b.cleanup()
        t.check(not claimer.errors, "cycle %d: no claim errors: %.300r" % (cycle, claimer.errors[:3]))
        tokens = sorted(tok for tok, _, _ in claimer.acks.values())
        if tokens:
            t.check(tokens[0] > max_token[0], "cycle %d: fencing tokens of the run (%d) above "
                    "every token acknowledged before (%d)" % (cycle, tokens[0], max_token[0]))
            max_token[0] = tokens[-1]
        claims_acked.update(claimer.acks)

        t.check(not pub.errors, "cycle %d: no error replies: %.300r" % (cycle, pub.errors[:3]))
        ack_seqs = [s for s, _ in pub.acks]
        if ack_seqs:
            cycles_with_acks += 1
            # The log held everything written (same boot): seqs go on at
            # last_seq + 1 (checked at the next restart, which sees every
            # event of this run, the claimer's too), unless the log ended
            # in a torn write; then the broker continues above its durable
            # seq reservation (a block of 2^20), so that no seq a
            # subscriber may have seen is reused.
            run_starts.append((cycle, store_last, skipped))
            t.check(store_last < ack_seqs[0] <= store_last + 1 + (1 << 20),
                    "cycle %d: first publish after restart %d within one reservation block "
                    "above last_seq %d" % (cycle, ack_seqs[0], store_last))
            t.check(not skipped or torn, "cycle %d: seqs are skipped only after a torn write"
                    % cycle)
            t.check(ack_seqs[0] > max_seen, "cycle %d: first seq %d of the run > every seq seen "
                    "before (%d)" % (cycle, ack_seqs[0], max_seen))
            t.check(all(b2 > a for a, b2 in zip(ack_seqs, ack_seqs[1:])),
                    "cycle %d: acknowledged seqs strictly increasing" % cycle)
        reused = [s for s, _ in pub.acks if s in acked]
        t.check(not reused, "cycle %d: seqs acknowledged in an earlier run again: %.200r"
                % (cycle, reused))
        for s, n in pub.acks:
            acked[s] = n
        if ack_seqs:
            max_seen = max(max_seen, ack_seqs[-1])
        inflight_total += len(pub.outstanding)
        cycles_done += 1
        print("cycle %2d: sent %5d acked %5d in flight %2d (%.1fs)"
              % (cycle, pub.sent_count, len(pub.acks), len(pub.outstanding), time.time() - t0))

    # One last restart: everything must still be there; then a clean stop.
    b = Broker(data_dir=data_dir, extra=["--sync", "full"])
    try:
        b.start()
        store_last = verify_after_restart(b, "final restart")
        verify_claims(b, "final restart")
        with Client(b) as c:
            rep = c.request({"op": "publish", "topic": "crash.final", "payload": b"end"})
            t.check(rep.get("ok") is True, "final publish ok")
            t.check(store_last < rep.get("seq", 0) <= store_last + 1 + (1 << 20),
                    "final publish continues above the seq: %r" % rep.get("seq"))
            t.check(rep.get("seq", 0) > max_seen, "final seq above every seq seen")
        t.eq(b.stop(), 0, "SIGTERM after the crash cycles exits 0")
    finally:
        b.cleanup()

    acked_counters = set(acked.values())
    inflight_stored = sum(1 for n in observed.values() if n not in acked_counters)
finally:
    shutil.rmtree(data_dir, ignore_errors=True)

t.check(cycles_done >= MIN_CYCLES, "at least %d kill/restart cycles ran (%d)"
        % (MIN_CYCLES, cycles_done))
t.check(cycles_with_acks >= cycles_done * 0.8,
        "most cycles got acknowledgements before the kill (%d of %d)"
        % (cycles_with_acks, cycles_done))
t.check(len(acked) >= 10 * cycles_done, "enough acknowledged publishes to mean something (%d)"
        % len(acked))
t.check(len(claims_acked) >= cycles_done, "enough acknowledged claims to mean something (%d)"
        % len(claims_acked))
print("%d cycles, %d acknowledged, %d in flight at kills (%d of them stored), %.1fs"
      % (cycles_done, len(acked), inflight_total, inflight_stored, time.time() - t0))
t.done()
