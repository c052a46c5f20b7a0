"""`nexus events --resume NAME` and the store's identity (issue 16).

A cursor file names the store its seq belongs to. Tried as a new user
would:

1. On one store, --resume prints each event once across calls, and the
   cursor file holds {"store_id", "seq"}.
2. The broker restarted on a fresh data directory (another store, the same
   endpoint): the next call does not print nothing forever (all of the new
   store's seqs are below the old cursor); it says why on stderr (and as a
   {"reset": ...} line with --json, naming both stores and the new store's
   last seq) and prints the new store's events from its first; the call
   after it prints nothing new and says nothing.
3. A cursor of an earlier version (a plain number) above the store's last
   seq: the same notice, reading the store from its first event.
4. The same store set back in time (a copy taken earlier, restored): the
   cursor is above its last seq, so it cannot tell which events are new;
   the call says so and reads the store from its first event: the events
   published after the restore are printed (with the older ones again),
   not skipped.
5. `nexus sub --json` across a restart on a fresh data directory: a reset
   line and a notice, then the new store's events; it keeps running.
6. The same store, whose retention removed events the cursor had not
   reached: --resume (and --since N) say which are gone, on stderr and as
   a {"gap": {"from", "to"}} line with --json, then print the rest.
7. Retention by age removed every event, the cursor's next ones too: the
   store holds none, yet the gap is said (the oldest seq is 0 then).
Every wait is bounded.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client, free_ports, terminate  # noqa: E402

BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.environ.get("NEXUS_CLI") or os.path.join(BUILD, "sdk", "nexus")
t = Checks()
root = tempfile.mkdtemp(prefix="nexus-cli-store-")
state = os.path.join(root, "state")
os.makedirs(state)


def nexus(args, broker):
    env = dict(os.environ, XDG_STATE_HOME=state, NEXUS_ENDPOINT=broker.control)
    env.pop("NEXUS_SESSION", None)
    p = subprocess.run([NEXUS] + args, capture_output=True, timeout=30, env=env, text=True)
    return p.returncode, p.stdout, p.stderr


def publish(broker, n, tag):
    with Client(broker) as c:
        for i in range(n):
            rep = c.request({"op": "publish", "topic": "cli.sid", "payload": "%s-%d" % (tag, i)})
            assert rep.get("ok"), rep


def events(broker, json_mode=True):
    rc, out, err = nexus(["events", "--pattern", "cli.>", "--resume", "hook"] +
                         (["--json"] if json_mode else []), broker)
    t.eq(rc, 0, "events --resume exits 0: %s" % err)
    if not json_mode:
        return out.splitlines(), [], err
    out = [json.loads(x) for x in out.splitlines() if x.strip()]
    return [o for o in out if "reset" not in o], [o["reset"] for o in out if "reset" in o], err


def store_id(broker):
    with Client(broker) as c:
        return c.request({"op": "ping"})["store_id"]


cursor = os.path.join(state, "nexus", "cursors", "hook")
try:
    ports = free_ports(3)
    a_dir = os.path.join(root, "a")
    with Broker(data_dir=a_dir, ports=ports) as a:
        sid_a = store_id(a)
        publish(a, 4, "a")
        evs, resets, err = events(a)
        t.eq([e["payload"] for e in evs], ["a-%d" % i for i in range(4)], "first call: every event")
        t.eq(resets, [], "no reset on the first call")
        with open(cursor) as f:
            saved = json.load(f)
        t.eq(saved.get("store_id"), sid_a, "the cursor file names the store: %r" % saved)
        t.eq(saved.get("seq"), evs[-1]["seq"], "and the last seq read")
        evs, resets, err = events(a)
        t.eq((evs, resets, err), ([], [], ""), "second call: nothing new, nothing said")
        publish(a, 2, "a2")
        evs, _, _ = events(a)
        t.eq([e["payload"] for e in evs], ["a2-0", "a2-1"], "third call: only the new events")
        a_seq = evs[-1]["seq"]
        # A copy of this store, to restore later (4).
        t.eq(a.stop(), 0, "clean stop")
        backup = os.path.join(root, "backup")
        shutil.copytree(a_dir, backup)
        a.start()
        publish(a, 5, "a3")
        evs, _, _ = events(a)
        t.eq(len(evs), 5, "events after the copy read")
        a_seq = evs[-1]["seq"]

    # 2. A fresh data directory behind the same endpoint: another store,
    # whose seqs are all below the cursor.
    with Broker(data_dir=os.path.join(root, "b"), ports=ports) as b:
        sid_b = store_id(b)
        t.check(sid_b != sid_a, "a fresh data directory is another store")
        publish(b, 3, "b")
        evs, resets, err = events(b)
        t.eq(len(resets), 1, "the cursor of another store is reset, with a notice: %r" % resets)
        if resets:
            r = resets[0]
            t.eq((r.get("cursor_store_id"), r.get("cursor_seq"), r.get("store_id"),
                  r.get("from_seq")), (sid_a, a_seq, sid_b, 0),
                 "the notice names both stores, the old seq and where reading starts: %r" % r)
            t.eq(r.get("last_seq"), 3, "and this store's last seq")
        t.check("cannot be followed" in err and sid_b in err,
                "a notice on stderr too: %r" % err)
        t.eq([e["payload"] for e in evs], ["b-0", "b-1", "b-2"],
             "the new store's events are printed, not skipped")
        evs, resets, err = events(b)
        t.eq((evs, resets), ([], []), "next call: nothing new, no notice")
        publish(b, 1, "b2")
        evs, resets, err = events(b, json_mode=False)
        t.check(len(evs) == 1 and "b2-0" in evs[0] and err == "",
                "text mode prints the event, no notice: %r %r" % (evs, err))

        # 3. A cursor of an earlier version: a plain number above this store.
        with open(cursor, "w") as f:
            f.write("%d\n" % (a_seq + 100))
        publish(b, 2, "b3")
        evs, resets, err = events(b)
        t.eq(len(resets), 1, "a plain-number cursor above the store is reset: %r" % resets)
        t.eq([e["payload"] for e in evs], ["b-0", "b-1", "b-2", "b2-0", "b3-0", "b3-1"],
             "the store is read from its first event: nothing skipped")

        # A cursor file that is no cursor (damaged, edited): said, then read
        # from the first event (it was taken for "no cursor" in silence).
        for bad in ("garbage", "", '{"store_id":"%s","seq":3}{"x":1}' % sid_b,
                    '{"store_id":"%s","seq":-5}' % sid_b):
            with open(cursor, "w") as f:
                f.write(bad)
            evs, resets, err = events(b)
            t.check(len(resets) == 1 and "cannot be read" in resets[0].get("why", "")
                    and "cannot be read" in err,
                    "cursor file %r: a notice: %r %r" % (bad, resets, err))
            t.eq(len(evs), 6, "cursor file %r: every event, from the first" % bad)
        evs, resets, err = events(b)
        t.eq((evs, resets, err), ([], [], ""), "the file written anew is a cursor again")

    # 4. The copy restored: the same store, set back in time.
    with Broker(data_dir=backup, ports=ports) as r:
        t.eq(store_id(r), sid_a, "a restored copy keeps its store id")
        with open(cursor, "w") as f:
            json.dump({"store_id": sid_a, "seq": a_seq}, f)
        with Client(r) as c:
            last = c.request({"op": "health"})["last_seq"]
        publish(r, 2, "r")
        evs, resets, err = events(r)
        t.eq(len(resets), 1, "a cursor above the restored store's last seq is reset: %r" % resets)
        if resets:
            t.eq((resets[0].get("from_seq"), resets[0].get("store_id")), (0, sid_a),
                 "reading the restored store from its first event")
        t.eq([e["payload"] for e in evs][-2:], ["r-0", "r-1"],
             "the events published after the restore are printed, not skipped")
        t.eq(len(evs), last + 2, "with the older ones again")

    # 5. `nexus sub` running while the broker is restarted on a fresh data
    # directory: a reset line (and a notice on stderr), then the new
    # store's events from its first one; the command keeps running.
    import queue
    import threading
    import time
    with Broker(data_dir=os.path.join(root, "c"), ports=ports) as c1:
        sid_c = store_id(c1)
        env = dict(os.environ, XDG_STATE_HOME=state, NEXUS_ENDPOINT=c1.control)
        # --since 0: from the store's first event, however late sub starts.
        sub = subprocess.Popen([NEXUS, "sub", "cli.>", "--json", "--since", "0"], env=env,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in sub.stdout], daemon=True).start()

        def take(n, what):
            got, deadline = [], time.monotonic() + 20
            while len(got) < n and time.monotonic() < deadline:
                try:
                    got.append(json.loads(lines.get(timeout=0.5)))
                except queue.Empty:
                    pass
            t.eq(len(got), n, "sub printed %s: %r" % (what, got))
            return got

        try:
            publish(c1, 5, "c")
            take(5, "the first store's events")
            t.eq(c1.stop(), 0, "clean stop")
            c1.data_dir = os.path.join(root, "d")
            os.makedirs(c1.data_dir)
            c1.start()
            sid_d = store_id(c1)
            publish(c1, 2, "d")
            got = take(3, "a reset, then the new store's events")
            if len(got) == 3:
                r = got[0].get("reset", {})
                # The range is the new store's when sub saw it: maybe before
                # the two events were published.
                t.eq((r.get("cursor_store_id"), r.get("store_id"), r.get("cursor_seq")),
                     (sid_c, sid_d, 5), "the reset names both stores and the cursor: %r" % r)
                t.check(r.get("first_seq", 9) <= r.get("last_seq", -1) <= 2,
                        "and the new store's range: %r" % r)
                t.eq([g.get("payload") for g in got[1:]], ["d-0", "d-1"],
                     "then the new store's events from its first: %r" % got)
            t.check(sub.poll() is None, "nexus sub keeps running after the reset")
        finally:
            _, err = terminate(sub)
        t.check("reset" in err and sid_d in err, "a notice on stderr: %r" % err)

    # 6. retention removed what the cursor had not reached
    os.remove(cursor)
    with Broker(data_dir=os.path.join(root, "e"), extra=["--retain-events", "5"]) as e:
        publish(e, 3, "e")
        evs, resets, err = events(e)
        t.eq([x["seq"] for x in evs], [1, 2, 3], "the first three")
        publish(e, 17, "f")  # seqs 4..20; retention keeps 16..20
        rc, out, err = nexus(["events", "--pattern", "cli.>", "--resume", "hook", "--json"], e)
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        t.eq(rc, 0, "exit 0: %s" % err)
        t.eq(lines[:1], [{"gap": {"from": 4, "to": 15}}], "a gap line first: %r" % lines[:2])
        t.eq([x.get("seq") for x in lines[1:]], [16, 17, 18, 19, 20], "then the rest")
        t.check("gap: events 4..15" in err, "and a notice on stderr: %r" % err)
        rc, out, err = nexus(["events", "--pattern", "cli.>", "--resume", "hook", "--json"], e)
        t.check(rc == 0 and out == "" and err == "", "the next call: nothing, no notice: %r %r" % (out, err))
        rc, out, err = nexus(["events", "--since", "2"], e)
        t.check(rc == 0 and "gap: events 3..15" in err and len(out.splitlines()) == 5,
                "--since 2 says the same: %r %r" % (out, err))
        rc, out, err = nexus(["events", "--since", "15"], e)
        t.check(rc == 0 and "gap" not in err and len(out.splitlines()) == 5,
                "--since 15 (the oldest is 16): no gap: %r %r" % (out, err))

    # 7. retention by age emptied the store past the cursor
    os.remove(cursor)
    with Broker(data_dir=os.path.join(root, "g"), extra=["--retain-age", "1s"]) as g:
        publish(g, 2, "g")
        evs, _, err = events(g)
        t.eq([x["seq"] for x in evs], [1, 2], "the first two")
        publish(g, 3, "h")  # seqs 3..5, then every event ages out
        left = None
        for _ in range(100):
            with Client(g) as c:
                left = c.request({"op": "history", "limit": 10})
            if left.get("ok") and not left.get("events"):
                break
            time.sleep(0.1)
        t.check(left.get("ok") and not left.get("events") and left.get("last_seq") == 5,
                "retention removed every event: %r" % left)
        rc, out, err = nexus(["events", "--pattern", "cli.>", "--resume", "hook", "--json"], g)
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        t.check(rc == 0 and lines == [{"gap": {"from": 3, "to": 5}}],
                "an emptied store: the gap 3..5 and nothing else: %r %r" % (out, err))
        t.check("gap: events 3..5" in err and "holds no events" in err, "said on stderr: %r" % err)
finally:
    shutil.rmtree(root, ignore_errors=True)
t.done()
