#!/usr/bin/env python3
"""Power-loss durability, shown by the order of system calls.

SIGKILL never tests fsync (the page cache outlives the process), so this
test traces nexusd with strace and checks, for an acknowledged publish and
for a claim and its complete, sync=full, that before the reply leaves:

  1. the LMDB data pages holding the change were written and flushed
     (an fdatasync that started after the write and ended before the meta
     page was written), and
  2. the meta page that commits it was written and flushed (an fdatasync
     that started after the meta write and ended before the reply's
     sendto started).

The reply is found by a request id unique to this test, the data write by
a marker in the payload or work id. Skipped (exit 77) only where strace
cannot trace at all (no ptrace in the sandbox).
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
IDS = {"publish": 0xA1B2C3D1, "claim": 0xA1B2C3D2, "complete": 0xA1B2C3D3}
MARK_PUB = "flushorder-publish-7f3e"
MARK_WORK = "flushorder-work-5d21"

LINE = re.compile(r"^(\d+)\s+(\d+):(\d+):(\d+)\.(\d+) (.*)$")
DONE = re.compile(r"^(\w+)\((.*)\) += (-?\d+|\?)(?: [A-Z].*)? <([\d.]+)>$")
META = re.compile(r", (\d+), (\d+)$")


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


def data_fds(pid):
    """The descriptors nexusd has open on its LMDB data file: the forward
    log's write holds the same bytes and is not the store's."""
    fds = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).endswith("/data.mdb"):
                fds.add(fd)
        except OSError:
            pass
    return fds


def check_order(t, calls, fds, data_mark, reply_id, what, after=0.0):
    """The change's data write (the first to data.mdb holding data_mark
    after `after`), then a flush, then the meta page write, then a flush,
    then the reply."""
    writes = ("pwrite64", "writev", "pwritev", "write")
    data = [c for c in calls if c[0] > after and c[2] in writes and data_mark in c[3] and
            c[3].split(",", 1)[0] in fds]
    if not t.check(data, "%s: the data write holding the change was traced" % what):
        return None
    t_data = data[0]
    # LMDB writes the meta page's fields alone: a pwrite64 of a few hundred
    # bytes inside one of the two meta pages at the file's start.
    def is_meta(c):
        m = META.search(c[3])
        return c[2] == "pwrite64" and m and int(m.group(1)) < 1024 and int(m.group(2)) < 16384
    meta = [c for c in calls if c[0] >= t_data[1] and is_meta(c)]
    if not t.check(meta, "%s: a meta page write followed the data write" % what):
        return None
    t_meta = meta[0]
    flush1 = [c for c in calls if c[2] in ("fdatasync", "fsync") and c[0] >= t_data[1] and
              c[1] <= t_meta[0]]
    t.check(flush1, "%s: the data was flushed before the meta page was written" % what)
    reply = [c for c in calls if c[0] > after and c[2] in ("sendto", "sendmsg", "write", "writev") and
             id_hex(reply_id) in c[3]]
    if not t.check(reply, "%s: the reply's send was traced" % what):
        return None
    t_reply = reply[0]
    t.check(t_reply[0] > t_meta[1], "%s: the reply left after the meta page write" % what)
    flush2 = [c for c in calls if c[2] in ("fdatasync", "fsync") and c[0] >= t_meta[1] and
              c[1] <= t_reply[0]]
    t.check(flush2, "%s: the meta page was flushed before the reply was sent" % what)
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
        fds = data_fds(b.proc.pid)
        t.check(fds, "nexusd has its data file open: %r" % fds)
        with Client(b) as c:
            r = c.request({"op": "session.register", "session": "flush-w", "heartbeat_ms": 600000})
            t.check(r.get("ok"), "register: %r" % r)
            # Every thread of nexusd, with the bytes each call wrote.
            st = subprocess.Popen(["strace", "-f", "-tt", "-T", "-xx",
                                   "-s", "65536", "-o", out, "-e",
                                   "trace=fdatasync,fsync,pwrite64,pwritev,writev,write,sendto,sendmsg",
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
    check_order(t, calls, fds, hexbytes(MARK_PUB.encode()), IDS["publish"], "publish")
    claimed = check_order(t, calls, fds, hexbytes(MARK_WORK.encode()), IDS["claim"], "claim")
    # The complete rewrites the same item: its data write is the first one
    # holding the work id after the claim's reply.
    if claimed:
        check_order(t, calls, fds, hexbytes(MARK_WORK.encode()), IDS["complete"], "complete",
                    after=claimed)
    if t.failed:
        sys.stderr.write("trace kept in %s\n" % out)
    else:
        os.unlink(out)
    t.done()


if __name__ == "__main__":
    main()
