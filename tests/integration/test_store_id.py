"""Store identity (docs/protocol.md 6.1): a store gets a random id when it
is created and keeps it for life.

1. ping, health, state and history all carry the same `store_id`: 16
   lowercase hex characters; the start-up log names it.
2. It stays the same across a clean restart (SIGTERM) and a kill -9 under
   acknowledged publish.
3. A copy of the data directory keeps it: `mdb_copy` of the running
   store, and `cp` of a stopped store's files; both serve the copied
   history under the same id.
4. A fresh data directory gets another id; so does a second fresh one.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks, Client  # noqa: E402

t = Checks()
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def ids(broker):
    """The store_id of each reply that carries one, by op."""
    out = {}
    with Client(broker) as c:
        for op in ("ping", "health", "state"):
            rep = c.request({"op": op})
            assert rep.get("ok"), rep
            out[op] = rep.get("store_id")
        rep = c.request({"op": "history", "since_seq": 0, "limit": 10})
        assert rep.get("ok"), rep
        out["history"] = rep.get("store_id")
    return out


def one_id(broker, what):
    got = ids(broker)
    first = got["ping"]
    t.check(isinstance(first, str) and HEX16.match(first), "%s: store_id %r is 16 hex" %
            (what, first))
    for op, v in got.items():
        t.eq(v, first, "%s: %s store_id" % (what, op))
    return first


def publish(broker, n, tag):
    seqs = []
    with Client(broker) as c:
        for i in range(n):
            rep = c.request({"op": "publish", "topic": "sid.t", "payload": b"%s-%d" % (tag, i)})
            assert rep.get("ok"), rep
            seqs.append(rep["seq"])
    return seqs


def history_payloads(broker):
    with Client(broker) as c:
        rep = c.request({"op": "history", "pattern": "sid.>", "since_seq": 0, "limit": 1000})
        assert rep.get("ok"), rep
        return [e["payload"] for e in rep["events"]]


root = tempfile.mkdtemp(prefix="nexus-storeid-")
try:
    data = os.path.join(root, "a")
    full = ["--sync", "full"]

    # 1 + 2: one id everywhere, kept across restarts and kill -9.
    b = Broker(data_dir=data, extra=full)
    try:
        b.start()
        sid = one_id(b, "new store")
        t.check(("id %s" % sid) in b.logs(), "start-up log names the store id")
        publish(b, 20, b"a")
        t.eq(b.stop(), 0, "clean stop exits 0")
        b.start()
        t.eq(one_id(b, "after SIGTERM"), sid, "same id after a clean restart")
        publish(b, 20, b"b")
        for cycle in range(3):
            b.kill()
            b.start()
            t.eq(one_id(b, "after kill -9 #%d" % cycle), sid, "same id after kill -9 #%d" % cycle)
            publish(b, 5, b"k%d" % cycle)
        expected = history_payloads(b)
        t.eq(len(expected), 55, "every acknowledged event is in the history")

        # 3a: mdb_copy of the running store (a hot backup).
        hot = os.path.join(root, "hot")
        os.makedirs(hot)
        mdb_copy = shutil.which("mdb_copy")
        if t.check(mdb_copy is not None, "mdb_copy installed (lmdb-utils)"):
            subprocess.run([mdb_copy, data, hot], check=True)
        t.eq(b.stop(), 0, "clean stop exits 0")

        # 3b: cp of the stopped store.
        cold = os.path.join(root, "cold")
        shutil.copytree(data, cold)
    finally:
        b.cleanup()

    for name in ("hot", "cold"):
        path = os.path.join(root, name)
        if not os.path.exists(os.path.join(path, "data.mdb")):
            continue
        with Broker(data_dir=path, extra=full) as r:
            t.eq(one_id(r, "restored " + name), sid, "a %s copy keeps the store id" % name)
            t.eq(history_payloads(r)[:55], expected, "a %s copy serves the same history" % name)

    # 4: a fresh data directory is another store.
    seen = {sid}
    for k in range(2):
        with Broker(extra=full) as f:
            other = one_id(f, "fresh dir %d" % k)
            t.check(other not in seen, "fresh dir %d gets a new id (%s not in %s)" %
                    (k, other, sorted(seen)))
            seen.add(other)
finally:
    shutil.rmtree(root, ignore_errors=True)

t.done()
