"""Crash durability of claims: SIGKILL nexusd (--sync full) in the middle of
a claim storm, at least 20 times, restarting on the same data directory, and
prove from work.list after every restart that

  - every acknowledged grant is there: the item's token is at least the
    highest acknowledged token for it, and when it is that token, the holder
    is the acknowledged holder and the state follows what was acknowledged:
    an acked complete -> completed, an acked release -> released, otherwise
    claimed with the acked expires_at (or expired once that is past, or
    completed/released only if such a request for that token was in flight);
  - a token above every acknowledged one comes only from a claim that was
    in flight at the kill, by that holder, and only when the previous lease
    had ended before the kill (released, or past its expires_at);
  - nothing was granted twice: of two acknowledged grants of one id, the
    first had ended (release sent, or lease past) before the second was
    acknowledged, and a completed item is never granted again;
  - what a restart showed stays (a completed item stays completed at its
    token; no record disappears), and the fencing tokens of a new run are
    above every token acknowledged or seen before.

Sessions come back stale after each restart and are taken back from new
connections with their secrets. Every loop is bounded in count and time.
"""

import os
import random
import shutil
import sys
import tempfile
import threading
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client  # noqa: E402

CYCLES = 24
MIN_CYCLES = 20
TOTAL_BUDGET = 40.0  # seconds for the cycles; the file stays under ~60 s
WORKERS = 6
SHARED = ["shared/%02d" % i for i in range(12)]
LONG = 600000
MARGIN_US = 250000  # how late an expiry may be observed (timer <= 100 ms + slack)

t = Checks()
SEED = int(os.environ.get("NEXUS_CRASH_SEED") or random.randrange(1 << 30))
rng = random.Random(SEED)
print("coord crash test seed %d (set NEXUS_CRASH_SEED to repeat)" % SEED)


def now_us():
    return int(time.time() * 1e6)


class Worker(threading.Thread):
    """One session on its own DEALER, one request outstanding at a time;
    records every request with its send time and its reply (or none)."""

    def __init__(self, broker, k, cycle, secret, seed):
        super().__init__(daemon=True)
        self.endpoint = broker.control
        self.k = k
        self.me = "w%d" % k
        self.cycle = cycle
        self.secret = secret
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.ops = []  # dicts: op, work_id, token, ttl, sent, acked (us) or None, reply
        self.setup = None  # reply to the (re-)register
        self.n = 0

    def run(self):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        try:
            self._run(sock)
        finally:
            sock.close(0)

    def _call(self, sock, req, record):
        self.n += 1
        req = dict(req, id="c%d-%s-%d" % (self.cycle, self.me, self.n), session=self.me)
        rec = dict(op=req["op"], work_id=req.get("work_id"), token=req.get("token"),
                   ttl=req.get("ttl_ms"), sent=now_us(), acked=None, reply=None)
        if record:
            self.ops.append(rec)
        sock.send(msgpack.packb(req, use_bin_type=True))
        for _ in range(100000):
            if sock.poll(20):
                rep = msgpack.unpackb(sock.recv(), raw=False)
                rec["acked"], rec["reply"] = now_us(), rep
                return rep
            if self.stop.is_set():
                # A reply sent before the broker died may still be queued.
                if sock.poll(50):
                    rep = msgpack.unpackb(sock.recv(), raw=False)
                    rec["acked"], rec["reply"] = now_us(), rep
                    return rep
                return None
        return None

    def _run(self, sock):
        reg = {"op": "session.register", "heartbeat_ms": LONG}
        if self.secret:
            reg["secret"] = self.secret
        self.setup = self._call(sock, reg, False)
        self.ready.set()
        if not self.setup or not self.setup.get("ok"):
            return
        held = []  # (work_id, token)
        for _ in range(100000):
            if self.stop.is_set():
                return
            r = self.rng.random()
            if held and r < 0.45:
                wid, tok = held.pop(self.rng.randrange(len(held)))
                op = "work.complete" if self.rng.random() < 0.6 else "work.release"
                req = {"op": op, "work_id": wid, "token": tok}
                if op == "work.complete":
                    req["result"] = {"by": self.me, "token": tok}
                rep = self._call(sock, req, True)
            else:
                if r < 0.8:
                    wid = self.rng.choice(SHARED)
                else:
                    wid = "u/%d/%s/%d" % (self.cycle, self.me, self.n)
                ttl = self.rng.choice([300, 800, 1500, 5000])
                rep = self._call(sock, {"op": "work.claim", "work_id": wid, "ttl_ms": ttl}, True)
                if rep and rep.get("ok"):
                    held.append((wid, rep["token"]))
            if rep is None:
                return


baseline = {}  # work_id -> record seen at the previous restart
max_token_seen = 0
all_acked_tokens = []


def read_all(c):
    rep = c.request({"op": "work.list", "limit": 100000}, timeout=10)
    assert rep.get("ok") and not rep["truncated"], rep
    return {x["work_id"]: x for x in rep["claims"]}


def verify(label, records, ops, kill_us, read_from, read_to):
    """records: work.list after the restart; ops: every request of the
    cycle (acked or in flight) with the worker's session; kill_us: wall
    time right after SIGKILL; read_from..read_to: when records were read."""
    problems = []
    by_id = {}
    for o in ops:
        if o["work_id"] is not None:
            by_id.setdefault(o["work_id"], []).append(o)
    ids = set(by_id) | set(baseline)
    for wid in sorted(ids):
        R = records.get(wid)
        lst = by_id.get(wid, [])
        # Known grants: the baseline record, then acked grants in token order.
        grants = []
        B = baseline.get(wid)
        if B:
            grants.append(dict(token=B["token"], holder=B["holder"], expires_at=B["expires_at"],
                               end=None if B["state"] == "claimed" else B["state"],
                               acked=0, base=True))
        for o in lst:
            if o["op"] == "work.claim" and o["reply"] and o["reply"].get("ok"):
                rp = o["reply"]
                grants.append(dict(token=rp["token"], holder=o["session"],
                                   expires_at=rp["expires_at"], end=None, acked=o["acked"],
                                   base=False))
        grants.sort(key=lambda g: g["token"])
        # Ends of each grant by its holder's own release/complete.
        for g in grants:
            g["ends"] = [o for o in lst if o["op"] in ("work.release", "work.complete")
                         and o["token"] == g["token"]]
            for o in g["ends"]:
                if o["reply"] and o["reply"].get("ok"):
                    g["end"] = "completed" if o["op"] == "work.complete" else "released"
        inflight_claims = [o for o in lst if o["op"] == "work.claim" and o["reply"] is None]

        # -- nothing granted twice
        for g1, g2 in zip(grants, grants[1:]):
            if g2["base"]:
                continue
            if g1["end"] == "completed":
                problems.append((wid, "granted after an acked completion", g1, g2["token"]))
                continue
            if g1["end"] == "expired":
                continue
            released_before = any(o["op"] == "work.release" and o["sent"] < g2["acked"] and
                                  (o["reply"] is None or o["reply"].get("ok"))
                                  for o in g1["ends"])
            if not (g1["end"] == "released" and g1["base"]) and not released_before and \
                    g1["expires_at"] > g2["acked"]:
                problems.append((wid, "two overlapping grants", g1["holder"], g1["token"],
                                 g2["holder"], g2["token"]))

        # -- the record against the last known grant
        K = grants[-1] if grants else None
        if K is None:
            if R is not None:
                if not any(o["session"] == R["holder"] for o in inflight_claims):
                    problems.append((wid, "record with no acked or in-flight claim", R))
            continue
        if R is None:
            problems.append((wid, "acked grant lost: no record", K["token"]))
            continue
        if R["token"] < K["token"]:
            problems.append((wid, "acked grant lost", K["token"], R["token"], R["state"]))
        elif R["token"] == K["token"]:
            if R["holder"] != K["holder"]:
                problems.append((wid, "holder changed at the same token", K["holder"], R))
            if K["end"] in ("completed", "released", "expired"):
                allowed = {K["end"]}
            else:
                allowed = set()
                if K["expires_at"] > read_from - MARGIN_US:
                    allowed.add("claimed")
                if K["expires_at"] <= read_to:
                    allowed.add("expired")
                for o in K["ends"]:
                    if o["reply"] is None:
                        allowed.add("completed" if o["op"] == "work.complete" else "released")
            if R["state"] not in allowed:
                problems.append((wid, "state %s, expected one of %s" % (R["state"],
                                                                      sorted(allowed)), K, R))
            if R["state"] == "claimed" and R["expires_at"] != K["expires_at"]:
                problems.append((wid, "lease changed", K["expires_at"], R["expires_at"]))
            if R["state"] == "completed" and K["end"] == "completed" and \
                    R["result"] != {"by": K["holder"], "token": K["token"]}:
                problems.append((wid, "completion result", R["result"]))
        else:
            # An unacknowledged grant: only from an in-flight claim of that
            # holder, and only when the last known lease had ended.
            if not any(o["session"] == R["holder"] for o in inflight_claims):
                problems.append((wid, "unknown grant", R))
            ended = K["end"] in ("released", "expired") or K["expires_at"] <= kill_us or any(
                o["op"] == "work.release" and (o["reply"] is None or o["reply"].get("ok"))
                for o in K["ends"])
            if K["end"] == "completed" or not ended:
                problems.append((wid, "granted while the known lease was live", K, R))
            if R["state"] not in ("claimed", "expired"):
                problems.append((wid, "in-flight grant in state %s" % R["state"], R))
        if B and B["state"] == "completed" and (R["state"], R["token"]) != ("completed",
                                                                            B["token"]):
            problems.append((wid, "a completed item changed", B, R))
    gone = [w for w in baseline if w not in records]
    t.check(not problems, "%s: claims table matches what was acknowledged: %.600r"
            % (label, problems[:4]))
    t.check(not gone, "%s: no record disappeared: %.200r" % (label, gone[:5]))
    return problems


data_dir = tempfile.mkdtemp(prefix="nexus-coord-crash-")
t0 = time.time()
secrets = {}
cycles_done = 0
totals = dict(acked=0, inflight=0, grants=0, completes=0, releases=0, denied=0)
prev = None  # (label, ops, kill_us) of the cycle before this restart


def check_restart(c, label):
    """After a restart: compare the claims table with the previous cycle."""
    global baseline, max_token_seen
    read_from = now_us()
    records = read_all(c)
    read_to = now_us()
    if prev:
        plabel, ops, kill_us = prev
        verify("%s (after the kill)" % plabel, records, ops, kill_us, read_from, read_to)
    baseline = records
    max_token_seen = max([max_token_seen] + [r["token"] for r in records.values()])


try:
    for cycle in range(CYCLES + 1):
        last = cycle == CYCLES or time.time() - t0 > TOTAL_BUDGET
        b = Broker(data_dir=data_dir, extra=["--sync", "full"])
        try:
            b.start()
            label = "cycle %d" % cycle
            with Client(b) as c:
                check_restart(c, label)
                if cycle:
                    stale = [c.request({"op": "session.get", "session": "w%d" % k})
                             .get("session", {}).get("status") for k in range(WORKERS)]
                    t.eq(stale, ["stale"] * WORKERS, "%s: sessions came back stale" % label)
                # New fencing tokens are above everything acked or seen.
                # Unique request ids: the probe session spans restarts and
                # connections, and a reused id is a retry (docs: dedup).
                reg = {"op": "session.register", "session": "probe", "heartbeat_ms": LONG,
                       "id": "probe-reg-%d" % cycle}
                if cycle:
                    reg["secret"] = secrets["probe"]
                rp = c.request(reg)
                t.check(rp.get("ok") and rp.get("resumed") is bool(cycle),
                        "%s: probe session (re-)registered: %r" % (label, rp))
                secrets["probe"] = rp.get("secret")
                pr = c.request({"op": "work.claim", "session": "probe", "id": "probe-%d" % cycle,
                                "work_id": "probe/%d" % cycle})
                t.check(pr.get("ok") and pr["token"] > max_token_seen,
                        "%s: a new grant's token %s is above every token before (%d)"
                        % (label, pr.get("token"), max_token_seen))
                if pr.get("ok"):
                    max_token_seen = max(max_token_seen, pr["token"])
            if last:
                t.eq(b.stop(), 0, "clean stop after the crash cycles")
                break
            workers = [Worker(b, k, cycle, secrets.get("w%d" % k), rng.randrange(1 << 30))
                       for k in range(WORKERS)]
            for w in workers:
                w.start()
            for w in workers:
                w.ready.wait(5)
            for w in workers:
                if t.check(w.setup and w.setup.get("ok"), "%s: %s registered: %r"
                           % (label, w.me, w.setup)):
                    if cycle:
                        t.eq((w.setup["resumed"], w.setup["secret"]), (True, secrets[w.me]),
                             "%s: %s taken back with its secret from a new connection"
                             % (label, w.me))
                    secrets[w.me] = w.setup["secret"]
            time.sleep(rng.uniform(0.05, 0.30))
            b.kill()
            kill_us = now_us()
            for w in workers:
                w.stop.set()
            for w in workers:
                w.join(5)
            t.check(not any(w.is_alive() for w in workers), "%s: workers ended" % label)
        finally:
            b.cleanup()

        ops = []
        for w in workers:
            for o in w.ops:
                o["session"] = w.me
                ops.append(o)
        errors = [o["reply"] for o in ops if o["reply"] and not o["reply"].get("ok") and
                  o["reply"].get("error") not in ("denied", "conflict", "stale_token")]
        t.check(not errors, "%s: only denied/conflict/stale_token errors: %.300r"
                % (label, errors[:3]))
        acked_tokens = [o["reply"]["token"] for o in ops if o["op"] == "work.claim" and
                        o["reply"] and o["reply"].get("ok")]
        t.check(all(x > max_token_seen for x in acked_tokens),
                "%s: every token of this run is above every token before (%d)"
                % (label, max_token_seen))
        t.check(all(b2 > a for a, b2 in zip(sorted(acked_tokens), sorted(acked_tokens)[1:])),
                "%s: acked tokens unique" % label)
        for o in ops:
            rp = o["reply"]
            if o["op"] == "work.claim" and rp and rp.get("error") == "denied":
                t.check((rp.get("holder") and rp.get("holder") != o["session"]) or
                        rp.get("state") == "completed", "%s: denied names another holder: %r"
                        % (label, rp))
        max_token_seen = max([max_token_seen] + acked_tokens)
        prev = (label, ops, kill_us)
        n_acked = sum(1 for o in ops if o["reply"])
        n_inflight = sum(1 for o in ops if o["reply"] is None)
        totals["acked"] += n_acked
        totals["inflight"] += n_inflight
        totals["grants"] += len(acked_tokens)
        totals["completes"] += sum(1 for o in ops if o["op"] == "work.complete" and o["reply"]
                                   and o["reply"].get("ok"))
        totals["releases"] += sum(1 for o in ops if o["op"] == "work.release" and o["reply"]
                                  and o["reply"].get("ok"))
        totals["denied"] += sum(1 for o in ops if o["reply"] and
                                o["reply"].get("error") == "denied")
        cycles_done += 1
        print("cycle %2d: %4d requests acked, %d in flight, %3d grants (%.1fs)"
              % (cycle, n_acked, n_inflight, len(acked_tokens), time.time() - t0))
finally:
    shutil.rmtree(data_dir, ignore_errors=True)

t.check(cycles_done >= MIN_CYCLES, "at least %d kill/restart cycles ran (%d)"
        % (MIN_CYCLES, cycles_done))
t.check(totals["grants"] >= 10 * cycles_done and totals["completes"] >= cycles_done and
        totals["releases"] >= cycles_done and totals["denied"] >= cycles_done,
        "the storm exercised grants, completes, releases and denials: %r" % totals)
t.check(totals["inflight"] >= cycles_done // 2, "kills landed with requests in flight (%d)"
        % totals["inflight"])
print("%d cycles: %r, %.1fs" % (cycles_done, totals, time.time() - t0))
t.done()
