#!/usr/bin/env python3
"""bench_failover - how long a pair takes to serve again after its primary
is killed (SIGKILL), over --kills kills (default 20).

A primary/standby pair on hosts of their own with three etcd members
(tests/integration/pair_hosts.py: network namespaces, needs root and
Debian's etcd-server). A client on the test host publishes (acknowledged)
every 10 ms to whichever broker answers; each kill is timed from the
SIGKILL to:
  - promoted: the standby's ping says primary;
  - served: the first acknowledged publish on it.
Then the killed broker is started again (it becomes the standby: from its
own log, or from a base copy) and the next kill waits until it is in sync.

Usage: sudo bench/bench_failover.py [--kills 20] [--lease 2s] [--nexusd PATH]
Prints one line per kill and the p50/p99 of both times (ms).
"""

import argparse
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))

import harness  # noqa: E402
import netns  # noqa: E402
from harness import Client  # noqa: E402
from pair_hosts import PairHosts  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def publish(broker, timeout=0.3):
    try:
        with Client(broker) as c:
            r = c.request({"op": "publish", "topic": "bench.failover", "payload": b"x"},
                          timeout=timeout)
            return r.get("ok")
    except (TimeoutError, OSError):
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--lease", default="2s")
    ap.add_argument("--nexusd")
    args = ap.parse_args()
    if args.nexusd:
        harness.NEXUSD = args.nexusd
    with netns.lock():
        why = netns.available()
        if why:
            print("# cannot make network namespaces here: %s" % why)
            return 77
        p = PairHosts(range(60, 80), lease=args.lease).create()
        promoted, served = [], []
        try:
            p.start_etcd()
            p.broker("a").start()
            p.wait_role("a", "primary")
            p.broker("b").start()
            if not p.wait_synced("b"):
                raise RuntimeError("b did not catch up")
            print("# bench_failover: %d kills, etcd lease %s, 3 etcd members" %
                  (args.kills, args.lease))
            for k in range(args.kills):
                old = p.primary()
                new = "b" if old == "a" else "a"
                for _ in range(20):
                    publish(p.broker(old))
                t0 = time.time()
                p.broker(old).kill()
                t_promoted = t_served = None
                while time.time() - t0 < 30 and t_served is None:
                    if t_promoted is None and p.role(new, 0.2) == "primary":
                        t_promoted = time.time()
                    if t_promoted is not None and publish(p.broker(new)):
                        t_served = time.time()
                    time.sleep(0.01)
                if t_served is None:
                    raise RuntimeError("kill %d: %s did not serve within 30 s" % (k + 1, new))
                promoted.append((t_promoted - t0) * 1000)
                served.append((t_served - t0) * 1000)
                print("# kill %2d: %s -> %s promoted %.0f ms, served %.0f ms" %
                      (k + 1, old, new, promoted[-1], served[-1]))
                sys.stdout.flush()
                p.broker(old).start()
                if not p.wait_synced(old, timeout=60):
                    raise RuntimeError("kill %d: %s did not come back in sync" % (k + 1, old))
            print("promoted after a kill: p50 %.0f ms, p99 %.0f ms, max %.0f ms (%d kills)" %
                  (pct(promoted, 50), pct(promoted, 99), max(promoted), len(promoted)))
            print("served after a kill:   p50 %.0f ms, p99 %.0f ms, max %.0f ms" %
                  (pct(served, 50), pct(served, 99), max(served)))
        finally:
            p.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
