#!/usr/bin/env python3
"""nexus's programs make no getpid system call while they work.

libzmq asks getpid at every look at a socket's mailbox and every signal to
another thread; glibc makes each one a system call, dear on a virtual
machine. nexusd, nexus-gateway and the nexus command define getpid
themselves (sdk/proto/nx_pid.c), answered from memory. strace counts the
calls that still reach the kernel:

  - nexus-gateway, traced once it serves, answering 50 POST /events: none;
  - `nexus pub --lines` publishing 2000 acknowledged events from its start:
    at most two (nx_pid's first call, and AddressSanitizer's start).

A fork's child getting its own pid is test_pid's (a unit test).

nexusd is checked in test_flush_order, which traces it already. Skipped
(exit 77) only where strace cannot trace at all (no ptrace in the sandbox).
"""

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from harness import Broker, Checks, Gateway, free_ports

BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.path.join(BUILD, "sdk", "nexus")


def strace_works():
    if not shutil.which("strace"):
        return False
    r = subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True)
    return r.returncode == 0


def getpids(path):
    """The getpid calls in an strace -f output file, by pid."""
    by = {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[1].startswith("getpid("):
                by[parts[0]] = by.get(parts[0], 0) + 1
    return by


def attach(pid, out):
    """strace -f -p pid, returned once every thread of pid is traced
    (strace says "Process N attached with T threads" when it has them
    all, or "attached" alone for a process of one thread)."""
    st = subprocess.Popen(["strace", "-f", "-e", "trace=getpid", "-o", out, "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 10
    while b"attached" not in seen and time.time() < deadline:
        ready, _, _ = select.select([st.stderr], [], [], max(0.0, deadline - time.time()))
        if not ready:
            break
        chunk = os.read(st.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return st, b"attached" in seen


def post(port, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def main():
    if not strace_works():
        print("SKIP: strace cannot trace here (not installed, or no ptrace)")
        sys.exit(77)
    t = Checks()
    tmp = tempfile.mkdtemp(prefix="nexus-pid-cache-")
    try:
        with Broker(ports=free_ports(3)) as b:
            # 1. The gateway, traced while it serves.
            with Gateway(b) as g:
                out = os.path.join(tmp, "gateway.trace")
                st, ok = attach(g.proc.pid, out)
                t.check(ok, "strace attached to every thread of the gateway")
                answered = 0
                for i in range(50):
                    status, body = post(g.port, "/events",
                                        {"event_type": "pid.cache", "payload": {"i": i}})
                    answered += status == 201 and body.get("ok") is True
                t.eq(answered, 50, "the gateway stored 50 events")
                st.terminate()
                st.wait(10)
                calls = getpids(out)
                t.check(not calls, "no getpid reached the kernel from the gateway: %r" % calls)
                t.check(g.proc.poll() is None, "the gateway serves after strace detached")

            # 2. nexus pub --lines, traced from its start.
            out = os.path.join(tmp, "pub.trace")
            lines = "".join('{"n": %d}\n' % i for i in range(2000))
            # LeakSanitizer cannot run under ptrace: off for this run only.
            env = dict(os.environ, NEXUS_ENDPOINT=b.control,
                       ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
            r = subprocess.run(["strace", "-f", "-e", "trace=getpid", "-o", out, NEXUS,
                                "pub", "--lines", "pid.lines"],
                               input=lines, capture_output=True, text=True, timeout=120, env=env)
            t.eq(r.returncode, 0, "nexus pub --lines: %s" % r.stderr[-400:])
            calls = getpids(out)
            # One from nx_pid's first call, one from AddressSanitizer's own
            # start in sanitizer builds (a raw system call of its own);
            # libzmq's would be thousands.
            t.check(sum(calls.values()) <= 2,
                    "nexus pub asked the kernel for its pid at most twice: %r" % calls)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
