"""A primary/standby pair of nexusd on hosts of their own, with an etcd
cluster of three members on three more hosts, all network namespaces of
this machine (netns.py). Used by test_failover_hosts.py and by
bench/bench_failover.py.

Each broker host has three links, so that one can be cut while the others
stay up:
    c  clients (the gateway's and the workers' hosts reach it here)
    e  etcd (the routes to the three members go through it)
    r  replication (the other broker copies the log over it)
The etcd members, the gateway's host and the workers' host have one link
each. The root namespace routes between all of them.
"""

import os
import shutil
import subprocess
import tempfile
import time

import netns
from harness import Broker, Client

PORTS = (8451, 8452, 8453)


class PairHosts:
    """nets: 20 consecutive net numbers of the caller's range."""

    def __init__(self, nets, lease="2s", timeout="1s", replication="sync", extra=()):
        n = iter(nets)
        self.e = [netns.Host("e%d" % i, next(n), routed=True) for i in (1, 2, 3)]
        self.g = netns.Host("g", next(n), routed=True)
        self.w = netns.Host("w", next(n), routed=True)
        self.nets = {name: (next(n), next(n), next(n)) for name in ("a", "b")}
        self.hosts = {}
        self.links = {}
        self.lease, self.timeout, self.replication = lease, timeout, replication
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix="nexus-pair-")
        self.etcd = []
        self.brokers = {}

    # ---- hosts -------------------------------------------------------------

    def create(self):
        for h in self.e + [self.g, self.w]:
            h.create()
        etcd = [h.there for h in self.e]
        for name in ("a", "b"):
            c, e, r = self.nets[name]
            h = netns.Host(name, c, routed=True).create()
            self.hosts[name] = h
            other = "b" if name == "a" else "a"
            peer = "10.199.%d.1" % self.nets[other][2]
            self.links[name] = {"e": h.link("e", e, to=etcd), "r": h.link("r", r, to=[peer])}
        return self

    def client_ep(self, name):
        return "tcp://%s:%d" % (self.hosts[name].there, PORTS[0])

    def peer_ep(self, name):
        return "tcp://%s:%d" % (self.links[name]["r"].there, PORTS[0])

    def endpoints(self):
        return "%s,%s" % (self.client_ep("a"), self.client_ep("b"))

    def cut(self, name, which=("c", "e", "r")):
        for w in which:
            if w == "c":
                self.hosts[name].cut()
            else:
                self.links[name][w].cut()

    def heal(self, name, which=("c", "e", "r")):
        for w in which:
            if w == "c":
                self.hosts[name].heal()
            else:
                self.links[name][w].heal()

    # ---- etcd ---------------------------------------------------------------

    def start_etcd(self):
        cluster = ",".join("e%d=http://%s:2380" % (i + 1, h.there) for i, h in enumerate(self.e))
        for i, h in enumerate(self.e):
            url = "http://%s:2379" % h.there
            log = open(os.path.join(self.dir, "etcd%d.log" % (i + 1)), "ab")
            self.etcd.append(subprocess.Popen(
                h.prefix() + ["etcd", "--name", "e%d" % (i + 1),
                              "--data-dir", os.path.join(self.dir, "etcd%d" % (i + 1)),
                              "--listen-client-urls", url, "--advertise-client-urls", url,
                              "--listen-peer-urls", "http://%s:2380" % h.there,
                              "--initial-advertise-peer-urls", "http://%s:2380" % h.there,
                              "--initial-cluster", cluster, "--initial-cluster-state", "new",
                              "--initial-cluster-token", "nexus-test"],
                stdout=log, stderr=log))
            log.close()
        # Ready when a write goes through (a leader was elected): bounded.
        deadline = time.time() + 30
        while time.time() < deadline:
            r = subprocess.run(["etcdctl", "--endpoints", self.etcd_urls(), "put",
                                "/nexus-test-probe", "1"], capture_output=True, timeout=10,
                               env=dict(os.environ, ETCDCTL_API="3"))
            if r.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("the etcd cluster did not form")

    def etcd_urls(self):
        return ",".join("http://%s:2379" % h.there for h in self.e)

    # ---- brokers ------------------------------------------------------------

    def broker(self, name):
        if name not in self.brokers:
            h = self.hosts[name]
            r = self.links[name]["r"].there
            b = Broker(data_dir=os.path.join(self.dir, "data-" + name), host=h.there,
                       also_bind=[r], prefix=h.prefix(), ports=PORTS, keep_dir=True)
            b.extra = ["--name", name, "--advertise", self.client_ep(name),
                       "--peer-advertise", "tcp://%s:%d" % (r, PORTS[0]),
                       "--etcd", self.etcd_urls(), "--etcd-lease", self.lease,
                       "--replication-timeout", self.timeout,
                       "--replication", self.replication] + self.extra
            self.brokers[name] = b
        return self.brokers[name]

    def role(self, name, timeout=1.0):
        """ping's role of a broker, or None when it does not answer."""
        b = self.broker(name)
        try:
            with Client(b) as c:
                return c.request({"op": "ping"}, timeout=timeout).get("role")
        except (TimeoutError, OSError):
            return None

    def primary(self):
        for name in ("a", "b"):
            if self.brokers.get(name) and self.brokers[name].proc and \
                    self.role(name, 0.5) == "primary":
                return name
        return None

    def wait_role(self, name, role, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.role(name, 0.5) == role:
                return True
            time.sleep(0.05)
        return False

    def wait_synced(self, standby, timeout=40):
        """Until standby streams and its primary waits for it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with Client(self.broker(standby)) as c:
                    st = c.request({"op": "state"}, timeout=2)
                rx = st.get("replication", {}).get("receiving", {})
                if rx.get("state") == "streaming" and rx.get("sync"):
                    return True
            except (TimeoutError, OSError):
                pass
            time.sleep(0.2)
        return False

    # ---- teardown -----------------------------------------------------------

    def destroy(self, keep_logs=False):
        for b in self.brokers.values():
            try:
                b.stop(timeout=20)
            except Exception:
                b.kill()
        for p in self.etcd:
            p.terminate()
        for p in self.etcd:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for h in list(self.hosts.values()) + self.e + [self.g, self.w]:
            h.destroy()
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)
            for b in self.brokers.values():
                try:
                    os.unlink(b.log_path)
                except OSError:
                    pass
