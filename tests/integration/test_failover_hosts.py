"""Failover of a primary/standby pair decided by etcd (issue 19), every part
on a host of its own (network namespaces, pair_hosts.py): brokers a and b,
three etcd members, a gateway host g and a workers' host w. The workers are
libnexus clients (tests/tools/nexus_load: acknowledged publishes, claims, a
subscription) given both brokers as a comma-separated endpoint list; the
gateway is given the same list; a WebSocket client watches /ws/events.

1. kill -9 of the primary under load: the standby serves within 5 s; the
   killed broker, started again, becomes the standby and catches up.
2. the primary's host cut off (every link): the same, and the host, back,
   becomes the standby.
3. the primary cut off from etcd only, clients still reach it: writes
   through both brokers, never both accepted (the old one stops first).
4. only the link between the brokers cut: writes through both, only the
   primary accepts.
At the end: every acknowledged event is in the store and was delivered to
the subscriber and the WebSocket client once, in seq order, with no gap;
every granted claim is there with its token; the claims' fencing tokens
grew across every failover.

Needs root (namespaces) and Debian's etcd-server; skipped (77) otherwise.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import msgpack

import harness
import netns
from harness import Checks, Client
from pair_hosts import PairHosts

BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
LOAD = os.path.join(BUILD, "tests", "nexus_load")
GW_PORT = 8450
GW_TOKEN = "gw-failover-token"


class WsWatcher(threading.Thread):
    """A raw WebSocket client of /ws/events (RFC 6455, text frames): the
    seqs of the events it got, in the order it got them."""

    def __init__(self, host, port, path):
        super().__init__(daemon=True)
        self.host, self.port, self.path = host, port, path
        self.seqs = []
        self.other = []
        self.stop = False
        self.error = None
        self.sock = None

    def connect(self, timeout=10):
        deadline = time.time() + timeout
        while True:
            try:
                s = socket.create_connection((self.host, self.port), timeout=2)
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" %
                           (self.path, self.host, self.port, key)).encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise OSError("closed during the upgrade")
                    head += chunk
                if b" 101 " not in head.split(b"\r\n")[0]:
                    raise OSError("upgrade refused: %r" % head[:200])
                self.buf = head.split(b"\r\n\r\n", 1)[1]
                s.settimeout(0.5)
                self.sock = s
                return
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def _read(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                if self.stop:
                    raise EOFError()
                continue
            if not chunk:
                raise EOFError()
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def run(self):
        try:
            while not self.stop:
                b0, b1 = self._read(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(self._read(2), "big")
                elif n == 127:
                    n = int.from_bytes(self._read(8), "big")
                data = self._read(n)
                op = b0 & 0x0F
                if op == 8:
                    self.other.append("close")
                    return
                if op != 1:
                    continue
                msg = json.loads(data)
                if msg.get("type") == "event":
                    self.seqs.append(msg["seq"])
                elif msg.get("type") != "connection":
                    self.other.append(msg)
        except EOFError:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)


def lines(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def write_ok(pair, name, timeout=0.4):
    """One acknowledged publish straight to broker name: True when it was
    taken, False when refused or unanswered."""
    try:
        with Client(pair.broker(name)) as c:
            r = c.request({"op": "publish", "topic": "fo.direct", "payload": b"d"},
                          timeout=timeout)
            return bool(r.get("ok"))
    except (TimeoutError, OSError):
        return False


def serve_time(pair, name, t0, limit=15):
    """Seconds from t0 until broker name takes an acknowledged publish."""
    while time.time() - t0 < limit:
        if write_ok(pair, name, 0.3):
            return time.time() - t0
        time.sleep(0.05)
    return None


def both_ways(pair, seconds):
    """Writes through both brokers, alternately, for seconds: the list of
    (time, name) of every write that was taken."""
    taken = []
    end = time.time() + seconds
    while time.time() < end:
        for name in ("a", "b"):
            if write_ok(pair, name, 0.25):
                taken.append((time.time(), name))
        time.sleep(0.03)
    return taken


def history(pair, name, topic):
    """seq -> payload of every event of topic in broker name's store."""
    out = {}
    since = 0
    with Client(pair.broker(name)) as c:
        for _ in range(1000):
            r = c.request({"op": "history", "patterns": [topic], "since_seq": since,
                           "limit": 1000}, timeout=10)
            for ev in r.get("events", []):
                out[ev["seq"]] = msgpack.unpackb(ev["payload"])
            if not r.get("next_cursor"):
                break
            since = r["next_cursor"] - 1
    return out


def main():
    if not os.path.exists(LOAD):
        print("no %s (build the tests)" % LOAD)
        return 1
    with netns.lock():
        why = netns.available()
        if why:
            print("skip: cannot make network namespaces here: %s" % why)
            return 77
        if not shutil.which("etcd") or not shutil.which("etcdctl"):
            print("skip: no etcd (Debian's etcd-server, etcd-client)")
            return 77
        t = Checks()
        p = PairHosts(range(60, 80), lease="2s", timeout="1s").create()
        procs = []
        ws = None
        ok = False
        try:
            t0 = time.time()
            p.start_etcd()
            p.broker("a").start()
            t.check(p.wait_role("a", "primary"), "a becomes the primary")
            p.broker("b").start()
            t.check(p.wait_synced("b"), "b streams a's log, in sync")
            print("# pair up in %.1f s" % (time.time() - t0))

            eps = p.endpoints()
            # The gateway and its WebSocket watcher first: it sees every
            # event from the first on (since=0: the history, then live).
            gw_log = open(os.path.join(p.dir, "gateway.log"), "wb")
            gw = subprocess.Popen(p.g.prefix() + [
                harness.GATEWAY, "--port", str(GW_PORT), "--listen", p.g.there,
                "--broker", eps, "--broker-timeout", "1500ms", "--token", GW_TOKEN],
                stdout=gw_log, stderr=gw_log)
            gw_log.close()
            procs.append(("gateway", gw))
            ws = WsWatcher(p.g.there, GW_PORT, "/ws/events?since=0&token=" + GW_TOKEN)
            ws.connect()
            ws.start()
            env = dict(os.environ, NEXUS_TIMEOUT_MS="1500")
            out = {}
            for name, args in (("sub", ["sub", "fo.>", "0"]),
                               ("pub", ["pub", "fo.pub", "1000000", "10"]),
                               ("claim", ["claim", "fo.work", "1000000", "40"])):
                out[name] = os.path.join(p.dir, name + ".out")
                f = open(out[name], "w")
                procs.append((name, subprocess.Popen(p.w.prefix() + [LOAD, eps] + args,
                                                     stdout=f, stderr=subprocess.STDOUT,
                                                     env=env)))
                f.close()
            time.sleep(2)

            # 1. kill -9 of the primary under load
            k0 = time.time()
            p.broker("a").kill()
            took = serve_time(p, "b", k0)
            t.check(took is not None and took <= 5.0,
                    "kill -9: the standby serves within 5 s (%s s)" % took)
            print("# kill -9 of a: b serves after %.2f s" % (took or -1))
            time.sleep(1.5)
            p.broker("a").start()
            t.check(p.wait_synced("a"), "kill -9: a, back, is b's standby and caught up")
            t.eq(p.role("a"), "standby", "kill -9: a's role once back")

            # 2. the primary's host cut off
            time.sleep(1)
            k0 = time.time()
            p.cut("b")
            took = serve_time(p, "a", k0)
            t.check(took is not None and took <= 5.0,
                    "link cut: the standby serves within 5 s (%s s)" % took)
            print("# b cut off: a serves after %.2f s" % (took or -1))
            time.sleep(1.5)
            p.heal("b")
            t.check(p.wait_synced("b"), "link cut: b, back, is a's standby and caught up")
            t.eq(p.role("b"), "standby", "link cut: b's role once back")

            # 3. the primary (a) cut off from etcd, reachable by clients
            time.sleep(1)
            p.cut("a", ("e",))
            taken = both_ways(p, 6)
            took_a = [x for x, n in taken if n == "a"]
            took_b = [x for x, n in taken if n == "b"]
            t.check(took_b, "etcd cut: b took over (writes to b taken: %d)" % len(took_b))
            t.check(not took_a or not took_b or max(took_a) < min(took_b),
                    "etcd cut: never two primaries taking writes (a until %s, b from %s)" %
                    (max(took_a) if took_a else None, min(took_b) if took_b else None))
            p.heal("a", ("e",))
            t.check(p.wait_synced("a"), "etcd cut: a, back, is b's standby and caught up")

            # 4. only the link between the brokers cut
            p.cut("b", ("r",))
            taken = both_ways(p, 4)
            t.check([1 for _, n in taken if n == "b"], "broker link cut: the primary takes writes")
            t.eq([n for _, n in taken if n == "a"], [],
                 "broker link cut: the standby takes no write")
            p.heal("b", ("r",))
            t.check(p.wait_synced("a"), "broker link cut: a catches up once healed")

            # The end: stop the writers, let the readers drain.
            for name, proc in procs:
                if name in ("pub", "claim"):
                    proc.send_signal(signal.SIGTERM)
            for name, proc in procs:
                if name in ("pub", "claim"):
                    proc.wait(20)
            primary = p.primary()
            t.check(primary is not None, "a primary at the end")
            acked = {int(x[2]): int(x[1]) for x in lines(out["pub"]) if x[0] == "ack"}
            stored = history(p, primary, "fo.pub")
            lost = sorted(s for s in acked if s not in stored or stored[s] != {"k": acked[s]})
            t.eq(lost, [], "no acknowledged event lost (%d acknowledged)" % len(acked))
            ks = sorted(acked.values())
            t.check(ks and ks[-1] > 100, "the publisher kept going (%d acknowledged)" % len(ks))
            last = max(acked) if acked else 0
            harness.wait_until(lambda: any(x[0] == "ev" and int(x[1]) >= last
                                           for x in lines(out["sub"])), timeout=20)
            harness.wait_until(lambda: ws.seqs and ws.seqs[-1] >= last, timeout=20)
            for proc_name, proc in procs:
                if proc_name == "sub":
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(20)
            sub = [int(x[1]) for x in lines(out["sub"]) if x[0] == "ev" and x[2] == "fo.pub"]
            gaps = [x for x in lines(out["sub"]) if x[0] == "gap"]
            t.eq(gaps, [], "the subscriber saw no gap")
            if sub != sorted(set(sub)):
                # What the next look needs: where the order broke, and what
                # else the subscriber printed (errors, gaps, resets).
                bad = [i for i in range(1, len(sub)) if sub[i] <= sub[i - 1]]
                for i in bad[:5]:
                    print("# out of order at %d: %r" % (i, sub[max(0, i - 4):i + 4]))
                print("# the subscriber's other lines: %r"
                      % [x for x in lines(out["sub"]) if x[0] != "ev"][:40])
            t.check(sub == sorted(set(sub)), "the subscriber: seq order, no duplicate")
            t.eq(sorted(set(acked) - set(sub)), [], "the subscriber got every acknowledged event")
            t.check(ws.error is None, "the WebSocket client's stream: %s" % ws.error)
            t.check(ws.seqs == sorted(set(ws.seqs)),
                    "the WebSocket client: seq order, no duplicate")
            missing_ws = sorted(set(acked) - set(ws.seqs))
            t.eq(missing_ws, [], "the WebSocket client got every acknowledged event")
            t.eq([m for m in ws.other if m != "close"], [],
                 "the WebSocket client got nothing but events")
            print("# %d acknowledged, subscriber %d, WebSocket %d events, %s" %
                  (len(acked), len(sub), len(ws.seqs), lines(out["sub"])[-1]))

            claims = [x for x in lines(out["claim"]) if x[0] == "claim"]
            tokens = [int(x[2]) for x in claims]
            t.check(len(tokens) > 20, "claims granted: %d" % len(tokens))
            t.check(tokens == sorted(set(tokens)),
                    "fencing tokens grow across every failover")
            session = [x[1] for x in lines(out["claim"]) if x[0] == "session"]
            with Client(p.broker(primary)) as c:
                r = c.request({"op": "work.list", "prefix": "fo.work.", "limit": 100000},
                              timeout=10)
            held = {x["work_id"]: x for x in r.get("claims", [])}
            lost = [x for x in claims if "fo.work." + x[1] not in held or
                    held["fo.work." + x[1]].get("token") != int(x[2]) or
                    held["fo.work." + x[1]].get("holder") != session[0]]
            t.eq(lost[:5], [], "no granted claim lost (%d granted)" % len(claims))
            with Client(p.broker(primary)) as c:
                reg = c.request({"op": "session.register", "name": "late"}, timeout=5)
                r = c.request({"op": "work.claim", "work_id": "fo.late", "session":
                               reg.get("session"), "secret": reg.get("secret")}, timeout=5)
            t.check(r.get("ok") and tokens and r.get("token", 0) > max(tokens),
                    "a token after the failovers is above every earlier one (%s > %s)" %
                    (r.get("token"), max(tokens) if tokens else None))
            # The gateway's /metrics: the broker in use and its standby's lag.
            try:
                with socket.create_connection((p.g.there, GW_PORT), timeout=5) as s:
                    s.sendall(("GET /metrics HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer %s\r\n"
                               "Connection: close\r\n\r\n" % GW_TOKEN).encode())
                    body = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                metrics = body.decode(errors="replace")
            except OSError as e:
                metrics = repr(e)
            t.check('nexus_broker_epoch{role="primary"}' in metrics and
                     "nexus_broker_replication_lag_bytes{standby=" in metrics,
                     "the gateway's /metrics: role, epoch and the standby's lag: %r" %
                     [x for x in metrics.splitlines() if "nexus_broker_" in x][:6])
            ok = t.failed == 0
            print("# wall time %.1f s" % (time.time() - t0))
            t.done()
        finally:
            if ws:
                ws.stop = True
            for name, proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
            if not ok:
                for name in ("sub.out", "pub.out", "claim.out", "gateway.log"):
                    path = os.path.join(p.dir, name)
                    if os.path.exists(path):
                        with open(path, errors="replace") as f:
                            tail = f.readlines()[-15:]
                        sys.stderr.write("---- %s (end) ----\n%s" % (name, "".join(tail)))
                for name, b in p.brokers.items():
                    sys.stderr.write("---- nexusd %s (end) ----\n%s\n" %
                                     (name, "\n".join(b.logs().splitlines()[-30:])))
            p.destroy()


if __name__ == "__main__":
    sys.exit(main())
