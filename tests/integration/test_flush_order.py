#!/usr/bin/env python3
"""Power-loss durability, shown by the order of system calls.

SIGKILL never tests fsync (the page cache outlives the process), so this
test traces nexusd with strace and checks, sync=full, for an acknowledged
publish, a claim, its complete and a session change (session.status),
that before the reply leaves:

  1. the change was written to the write-ahead log (a write to a file in
     data_dir/wal holding the change's bytes), and
  2. that file was flushed (an fdatasync of it that started after the
     write ended and ended before the reply's sendto started),

and that the store (data.mdb) is not flushed on that path: the one flush
of the turn is the log's. And that no getpid reaches the kernel while it
serves (libzmq asks at every wake-up; sdk/proto/nx_pid.c answers).

The reply is found by a request id unique to this test, the log write by
a marker in the payload, work id or status text. Skipped (exit 77) only
where strace cannot trace at all (no ptrace in the sandbox).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import Broker, Checks, Client

# msgpack of these ids: 0xce + 4 bytes, which strace -xx shows as \xce\x..
IDS = {"publish": 0xA1B2C3D1, "claim": 0xA1B2C3D2, "complete": 0xA1B2C3D3,
       "status": 0xA1B2C3D4}
MARK_PUB = "flushorder-publish-7f3e"
MARK_WORK = "flushorder-work-5d21"
MARK_STATUS = "flushorder-status-9c44"

LINE = re.compile(r"^(\d+)\s+(\d+):(\d+):(\d+)\.(\d+) (.*)$")
DONE = re.compile(r"^(\w+)\((.*)\) += (-?\d+|\?)(?: [A-Z].*)? <([\d.]+)>$")


def hexbytes(s):
    return "".join("\\x%02x" % b for b in s)


def id_hex(n):
    return hexbytes(b"\xce" + n.to_bytes(4, "big"))


def parse(path):
    """Returns [(start, end, syscall, args)] of completed calls by start
    time. With -f a call interrupted by another thread's call is printed
    in two lines, "<unfinished ...>" then "<... NAME resumed>"; they are
    joined, the start taken from the first and the duration (-T, the
    whole call) from the second."""
    calls, pending = [], {}
    with open(path, errors="replace") as f:
        for raw in f:
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid = m.group(1)
            h, mi, sec, us = (int(m.group(i)) for i in (2, 3, 4, 5))
            t = ((h * 60 + mi) * 60 + sec) + us / 1e6
            rest = m.group(6)
            if rest.endswith("<unfinished ...>"):
                pending[pid] = (t, rest[: -len("<unfinished ...>")].rstrip())
                continue
            r = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
            if r:
                if pid not in pending:
                    continue
                t, head = pending.pop(pid)
                rest = head + r.group(2)
            d = DONE.match(rest)
            if d:
                calls.append((t, t + float(d.group(4)), d.group(1), d.group(2)))
    calls.sort(key=lambda c: c[0])
    return calls


def fds_of(pid, pred):
    """The descriptors nexusd has open on files whose path passes pred."""
    fds = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if pred(os.readlink("/proc/%d/fd/%s" % (pid, fd))):
                fds.add(fd)
        except OSError:
            pass
    return fds


def log_fds(pid):
    """The write-ahead log's segment files (data_dir/wal/*.log)."""
    return fds_of(pid, lambda p: "/wal/" in p and p.endswith(".log"))


def store_fds(pid):
    return fds_of(pid, lambda p: p.endswith("/data.mdb"))


def check_order(t, calls, fds, store, mark, reply_id, what, after=0.0):
    """The change's log write (the first to a log file holding mark after
    `after`), then a flush of that file, then the reply; no flush of the
    store in between."""
    writes = ("pwrite64", "writev", "pwritev", "pwritev2", "write")
    data = [c for c in calls if c[0] > after and c[2] in writes and mark in c[3] and
            c[3].split(",", 1)[0] in fds]
    if not t.check(data, "%s: the log write holding the change was traced" % what):
        return None
    t_data = data[0]
    fd = t_data[3].split(",", 1)[0]
    reply = [c for c in calls if c[0] > after and c[2] in ("sendto", "sendmsg", "write", "writev") and
             id_hex(reply_id) in c[3]]
    if not t.check(reply, "%s: the reply's send was traced" % what):
        return None
    t_reply = reply[0]
    t.check(t_reply[0] > t_data[1], "%s: the reply left after the log write" % what)
    flush = [c for c in calls if c[2] in ("fdatasync", "fsync") and c[3] == fd and
             c[0] >= t_data[1] and c[1] <= t_reply[0]]
    t.check(flush, "%s: the log was flushed after the write and before the reply" % what)
    store_flush = [c for c in calls if c[2] in ("fdatasync", "fsync") and c[3] in store and
                   t_data[0] <= c[0] and c[1] <= t_reply[0]]
    t.check(not store_flush, "%s: no flush of the store on the reply's path: %r" %
            (what, store_flush))
    return t_reply[1]


def strace_works():
    if not shutil.which("strace"):
        return False
    r = subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True)
    return r.returncode == 0


def main():
    if not strace_works():
        print("SKIP: strace cannot trace here (not installed, or no ptrace)")
        sys.exit(77)
    t = Checks()
    fd, out = tempfile.mkstemp(prefix="nexus-flush-order-", suffix=".trace")
    os.close(fd)
    with Broker(extra=["--sync", "full"]) as b:
        fds = log_fds(b.proc.pid)
        store = store_fds(b.proc.pid)
        t.check(fds, "nexusd has a log segment open: %r" % fds)
        with Client(b) as c:
            r = c.request({"op": "session.register", "session": "flush-w", "heartbeat_ms": 600000})
            t.check(r.get("ok"), "register: %r" % r)
            # Every thread of nexusd, with the bytes each call wrote.
            st = subprocess.Popen(["strace", "-f", "-tt", "-T", "-xx",
                                   "-s", "65536", "-o", out, "-e",
                                   "trace=fdatasync,fsync,pwrite64,pwritev,pwritev2,writev,write,sendto,sendmsg,getpid",
                                   "-p", str(b.proc.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # strace -p attaches the threads one by one: pings until one
            # reply's send shows in the trace (ZeroMQ's I/O thread traced).
            traced = False
            for _ in range(100):
                if st.poll() is not None:
                    break
                c.request({"op": "ping"})
                with open(out, errors="replace") as f:
                    traced = "sendto(" in f.read()
                if traced:
                    break
                time.sleep(0.1)
            if not t.check(traced and st.poll() is None, "strace traces nexusd's sends"):
                if st.poll() is not None:
                    sys.stderr.write(st.stderr.read().decode(errors="replace"))
            r = c.request({"op": "publish", "id": IDS["publish"], "topic": "flush.order",
                           "payload": MARK_PUB.encode()})
            t.check(r.get("ok") and r.get("seq"), "acknowledged publish: %r" % r)
            r = c.request({"op": "work.claim", "id": IDS["claim"], "session": "flush-w",
                           "work_id": MARK_WORK, "ttl_ms": 60000})
            t.check(r.get("ok") and r.get("token"), "claim: %r" % r)
            token = r.get("token")
            r = c.request({"op": "work.complete", "id": IDS["complete"], "session": "flush-w",
                           "work_id": MARK_WORK, "token": token, "result": "done"})
            t.check(r.get("ok"), "complete: %r" % r)
            r = c.request({"op": "session.status", "id": IDS["status"], "session": "flush-w",
                           "text": MARK_STATUS})
            t.check(r.get("ok"), "session.status: %r" % r)
            time.sleep(0.3)
            st.send_signal(signal.SIGINT)
            try:
                st.wait(timeout=10)
            except subprocess.TimeoutExpired:
                st.kill()
                st.wait()
        if not t.check(b.proc.poll() is None, "nexusd still serves after strace detached"):
            sys.stderr.write(b.logs()[-3000:])
    calls = parse(out)
    t.check(len(calls) > 10, "calls were traced (%d)" % len(calls))
    if not any(c[2] == "sendto" or c[2] == "sendmsg" for c in calls):
        sys.stderr.write("no send traced; first lines of the trace:\n")
        with open(out, errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[:20]))
    # libzmq asks getpid at every wake-up; nx_pid answers from memory.
    getpids = sum(1 for c in calls if c[2] == "getpid")
    t.check(getpids == 0, "no getpid system call while nexusd serves (nx_pid): %d" % getpids)
    check_order(t, calls, fds, store, hexbytes(MARK_PUB.encode()), IDS["publish"], "publish")
    claimed = check_order(t, calls, fds, store, hexbytes(MARK_WORK.encode()), IDS["claim"],
                          "claim")
    # The complete rewrites the same item: its log write is the first one
    # holding the work id after the claim's reply.
    if claimed:
        check_order(t, calls, fds, store, hexbytes(MARK_WORK.encode()), IDS["complete"],
                    "complete", after=claimed)
    check_order(t, calls, fds, store, hexbytes(MARK_STATUS.encode()), IDS["status"],
                "session.status")
    if t.failed:
        sys.stderr.write("trace kept in %s\n" % out)
    else:
        os.unlink(out)
    t.done()


if __name__ == "__main__":
    main()
