#!/usr/bin/env python3
"""Soak: mixed load on a real nexusd + nexus-gateway for --duration seconds
(30 minutes by default), with a broker restart in the middle, sampling the
processes' memory and descriptors every 10 s. Issue 18.

Load:
- acknowledged publishes (control plane, 200 B..2 KB), each one's seq and
  payload hash kept;
- the event plane: publishers of 512 B events;
- subscribers that join and leave (20..60 s each): each checks, when it
  leaves, that it saw exactly what the history holds on soak.> between its
  first and last seq (gap-free, no extra), in order;
- claim storms: 8 sessions claim the same 50 work items at once, the one
  granted releases it (the same items again and again, so that what the
  broker holds stays the same); fencing tokens must only go up;
- history readers paging through soak.>;
- --ws WebSocket clients (5 000 by default) on the gateway (bench/soak_ws.js),
  subscribed to soak.ws.>, fed by a publisher whose events name the seq of
  the one before (a client that got seq N and then one naming a prev above
  N missed it);
- at half time the broker is stopped (SIGTERM) and started again; clients
  reconnect by themselves.

Checks at the end (exit 1 if one fails): every acknowledged publish is in
the history, byte for byte; every subscriber that did not live through the
restart was gap-free; WebSocket clients saw no disorder and no gap; the
broker's and the gateway's anonymous memory (RssAnon: the store's mmap is
file pages and grows with the data) and descriptors are flat after warm-up.

    nice python3 bench/soak.py [--duration 1800] [--ws 5000] [--build build] [--out DIR]

Samples go to DIR/samples.csv and the summary to DIR/summary.json.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--duration", type=int, default=1800, help="seconds of load (default 1800)")
ap.add_argument("--ws", type=int, default=5000, help="WebSocket clients (default 5000)")
ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory")
ap.add_argument("--out", default=None, help="where samples and the summary go")
args = ap.parse_args()
os.environ["NEXUSD"] = os.path.join(args.build, "broker", "nexusd")
os.environ["NEXUS_BUILD_DIR"] = args.build
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import msgpack  # noqa: E402
import zmq  # noqa: E402
from harness import Broker, Client, Gateway, decode_event, free_ports  # noqa: E402

out = args.out or tempfile.mkdtemp(prefix="nexus-soak-")
os.makedirs(out, exist_ok=True)
stop = threading.Event()
lock = threading.Lock()
acked = {}            # seq -> sha256 of the payload
counts = {k: 0 for k in ("acked", "ack_errors", "plane", "subs_checked", "subs_gapfree",
                         "subs_gaps", "subs_restart", "claims", "claim_denied", "token_errors",
                         "history_pages", "history_errors", "ws_pub")}
problems = []
restart_window = [0.0, 0.0]  # when the broker was down (time.time())


def bump(k, n=1):
    with lock:
        counts[k] += n


def problem(text):
    with lock:
        if len(problems) < 100:
            problems.append(text)
    print("PROBLEM:", text, flush=True)


b = Broker(ports=free_ports(3), extra=["--sync", "full"])
b.start()
g = Gateway(b, prefix=["prlimit", "--nofile=%d" % (args.ws + 4096)],
            binary=os.path.join(args.build, "gateway", "nexus-gateway"),
            args=["--max-clients", str(args.ws + 1000)])
g.start()


def client():
    for _ in range(1000):
        if stop.is_set():
            return None
        try:
            c = Client(b)
            if c.request({"op": "ping"}, timeout=2).get("ok"):
                return c
            c.close()
        except Exception:
            pass
        time.sleep(0.5)
    return None


def guarded(fn):
    def run(*a):
        try:
            fn(*a)
        except Exception as e:  # a thread's crash is a finding, not a hang
            problem("%s crashed: %r" % (fn.__name__, e))
    return run


@guarded
def acked_publisher(k):
    c = client()
    while c and not stop.is_set():
        payload = os.urandom(random.randint(200, 2000))
        try:
            rep = c.request({"op": "publish", "topic": "soak.ack.%d" % k, "payload": payload},
                            timeout=5)
        except Exception:
            bump("ack_errors")
            c.close()
            c = client()
            continue
        if rep.get("ok"):
            with lock:
                acked[rep["seq"]] = hashlib.sha256(payload).hexdigest()
                counts["acked"] += 1
        else:
            bump("ack_errors")
            time.sleep(0.1)
        time.sleep(0.01)
    if c:
        c.close()


@guarded
def plane_publisher(k):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.linger = 0
    pub.connect(b.events_in)
    blob = b"p" * 512
    while not stop.is_set():
        for _ in range(20):
            pub.send_multipart([b"soak.plane.%d" % k, blob])
        bump("plane", 20)
        time.sleep(0.1)
    pub.close()


def history_seqs(c, lo, hi):
    """Seqs in (lo, hi] on soak.> from the history, or None."""
    seqs = []
    for _ in range(10000):
        rep = c.request({"op": "history", "patterns": ["soak.>"], "since_seq": lo,
                         "until_seq": hi, "limit": 1000}, timeout=30)
        if not rep.get("ok"):
            return None
        if not rep["events"]:
            return seqs
        seqs += [e["seq"] for e in rep["events"]]
        lo = seqs[-1]
    return None


@guarded
def churning_subscriber(k):
    while not stop.is_set():
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"soak.")
        sub.connect(b.events_out)
        born = time.time()
        life = random.uniform(20, 60)
        seen = []
        while time.time() - born < life and not stop.is_set():
            if sub.poll(200):
                for _ in range(1000):
                    try:
                        frame = sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    seen.append(decode_event(frame)[1])
        sub.close()
        died = time.time()
        if len(seen) < 2:
            continue
        if any(y <= x for x, y in zip(seen, seen[1:])):
            problem("subscriber %d: seqs out of order" % k)
        lived_through = restart_window[0] and born <= restart_window[1] and died >= restart_window[0]
        c = client()
        if not c:
            return
        want = history_seqs(c, seen[0], seen[-1])
        c.close()
        if want is None:
            bump("history_errors")
            continue
        bump("subs_checked")
        missing = sorted(set(want) - set(seen))
        extra = sorted(set(seen[1:]) - set(want))
        if not missing and not extra:
            bump("subs_gapfree")
        elif lived_through:
            bump("subs_restart")
        else:
            bump("subs_gaps")
            problem("subscriber %d: %d missing (first %s), %d not in history" %
                    (k, len(missing), missing[:3], len(extra)))


@guarded
def claim_storm():
    c = client()
    sessions = ["soak-claimer-%d" % i for i in range(8)]
    for s in sessions:
        c.request({"op": "session.register", "session": s})
    last_token = 0
    rounds = 0
    while c and not stop.is_set():
        for key in range(50):
            wid = "soak/%d" % key  # the same items again: released, claimed again
            ids = []
            for s in sessions:
                rid = "%s-%s" % (wid, s)
                c.sock.send(msgpack.packb({"op": "work.claim", "id": rid, "session": s,
                                           "work_id": wid, "ttl_ms": 60000}))
                ids.append(rid)
            reps = {}
            try:
                for _ in ids:
                    rep = c.recv(timeout=10)
                    reps[rep.get("id")] = rep
            except Exception:
                c.close()
                c = client()
                break
            granted = [r for r in reps.values() if r.get("ok")]
            bump("claim_denied", len(reps) - len(granted))
            if len(granted) > 1:
                problem("claim %s granted %d times" % (wid, len(granted)))
            for r in granted:
                bump("claims")
                if r["token"] <= last_token:
                    bump("token_errors")
                    problem("fencing token went down: %d after %d" % (r["token"], last_token))
                last_token = r["token"]
                s = [s for s in sessions if r["id"].endswith(s)][0]
                c.request({"op": "work.release", "session": s, "work_id": wid,
                           "token": r["token"]}, timeout=10)
        rounds += 1
        time.sleep(0.2)
    if c:
        c.close()


@guarded
def history_reader():
    c = client()
    while c and not stop.is_set():
        since = random.randint(0, max(1, max(acked) if acked else 1))
        try:
            rep = c.request({"op": "history", "patterns": ["soak.>"], "since_seq": since,
                             "limit": 1000}, timeout=30)
            bump("history_pages" if rep.get("ok") else "history_errors")
        except Exception:
            bump("history_errors")
            c.close()
            c = client()
        time.sleep(0.2)
    if c:
        c.close()


@guarded
def ws_publisher():
    c = client()
    prev = 0
    while c and not stop.is_set():
        try:
            rep = c.request({"op": "publish", "topic": "soak.ws.x",
                             "payload": msgpack.packb({"prev": prev})}, timeout=5)
        except Exception:
            c.close()
            c = client()
            continue
        if rep.get("ok"):
            prev = rep["seq"]
            bump("ws_pub")
        time.sleep(0.5)  # x 5 000 clients: 10 000 messages a second out of the gateway
    if c:
        c.close()


def proc_sample(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(l.split(":", 1) for l in f)
        rss = int(st["VmRSS"].split()[0]) // 1024
        anon = int(st.get("RssAnon", "0 kB").split()[0]) // 1024
        fds = len(os.listdir("/proc/%d/fd" % pid))
        return rss, anon, fds
    except OSError:
        return 0, 0, 0


ws = subprocess.Popen(["node", os.path.join(ROOT, "bench", "soak_ws.js"), str(g.port), str(args.ws)],
                      stdout=subprocess.PIPE, text=True)
ws_last = {}


def ws_reader():
    for line in ws.stdout:
        try:
            ws_last.update(json.loads(line))
        except ValueError:
            pass


threading.Thread(target=ws_reader, daemon=True).start()
threads = [threading.Thread(target=acked_publisher, args=(k,)) for k in range(2)]
threads += [threading.Thread(target=plane_publisher, args=(k,)) for k in range(2)]
threads += [threading.Thread(target=churning_subscriber, args=(k,)) for k in range(3)]
threads += [threading.Thread(target=claim_storm), threading.Thread(target=history_reader),
            threading.Thread(target=ws_publisher)]
for th in threads:
    th.start()

start = time.time()
samples = []
restarted = False
csv = open(os.path.join(out, "samples.csv"), "w")
csv.write("t,broker_pid,broker_rss_mb,broker_anon_mb,broker_fds,gw_rss_mb,gw_anon_mb,gw_fds,"
          "acked,plane,ws_open,ws_events\n")
try:
    while time.time() - start < args.duration:
        time.sleep(10)
        now = time.time() - start
        if not restarted and now >= args.duration / 2:
            restarted = True
            restart_window[0] = time.time()
            print("%.0f s: restarting the broker" % now, flush=True)
            b.stop()
            b.start()
            restart_window[1] = time.time()
        br = proc_sample(b.proc.pid)
        gw = proc_sample(g.proc.pid)
        row = (round(now), b.proc.pid) + br + gw + (counts["acked"], counts["plane"],
                                                    ws_last.get("open", 0), ws_last.get("events", 0))
        samples.append(row)
        csv.write(",".join(str(x) for x in row) + "\n")
        csv.flush()
        print("%4d s broker rss %d MB anon %d MB fds %d | gateway rss %d MB anon %d MB fds %d | "
              "acked %d plane %d ws open %d events %d" % ((row[0],) + row[2:]) +
              " closed %d gaps %d disorder %d | subs ok %d gaps %d" %
              (ws_last.get("closed", 0), ws_last.get("gaps", 0), ws_last.get("disorder", 0),
               counts["subs_gapfree"], counts["subs_gaps"]), flush=True)
finally:
    stop.set()
    for th in threads:
        th.join(timeout=60)
    ws.terminate()
    try:
        ws.wait(timeout=10)
    except subprocess.TimeoutExpired:
        ws.kill()

# Every acknowledged publish is in the history, byte for byte.
c = Client(b)
stored = {}
since = 0
for _ in range(100000):
    rep = c.request({"op": "history", "patterns": ["soak.ack.>"], "since_seq": since,
                     "limit": 1000}, timeout=60)
    if not rep.get("ok"):
        problem("history after the soak: %r" % rep)
        break
    if not rep["events"]:
        break
    for e in rep["events"]:
        stored[e["seq"]] = hashlib.sha256(e["payload"]).hexdigest()
    since = rep["events"][-1]["seq"]
c.close()
lost = [q for q in acked if stored.get(q) != acked[q]]
if lost:
    problem("%d acknowledged publishes not in the history as sent (first %s)" % (len(lost), lost[:5]))

# Flat after warm-up: per broker process (the restart makes a new one)
# and for the gateway, anonymous memory and descriptors after 3 minutes
# against the end.


def flat(rows, col, what, slack_mb):
    if len(rows) < 4:
        return
    warm = [r for r in rows if r[0] - rows[0][0] >= 180] or rows[len(rows) // 2:]
    first, last, peak = warm[0][col], rows[-1][col], max(r[col] for r in warm)
    ok = last <= first * 1.25 + slack_mb
    print("%s: %d after warm-up, %d at the end, %d at most: %s" %
          (what, first, last, peak, "flat" if ok else "GROWS"))
    if not ok:
        problem("%s grows: %d -> %d" % (what, first, last))


for pid in sorted(set(r[1] for r in samples)):
    rows = [r for r in samples if r[1] == pid]
    flat(rows, 3, "broker %d anon MB" % pid, 32)
    flat(rows, 4, "broker %d fds" % pid, 20)
flat(samples, 6, "gateway anon MB", 64)
flat(samples, 7, "gateway fds", 100)
if ws_last.get("disorder") or ws_last.get("gaps"):
    problem("WebSocket clients: %s" % ws_last)
if counts["subs_checked"] == 0:
    problem("no subscriber was checked")

summary = {"duration_s": args.duration, "ws_clients": args.ws, "counts": counts, "ws": ws_last,
           "acked_in_history": len(acked) - len(lost), "problems": problems,
           "samples": os.path.join(out, "samples.csv")}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps(summary, indent=1))
b.stop()
g.stop()
b.cleanup()
g.cleanup()
print("soak:", "PASS" if not problems else "FAIL (%d problems)" % len(problems))
sys.exit(1 if problems else 0)
