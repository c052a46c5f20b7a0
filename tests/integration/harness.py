"""Integration test harness: starts the real nexusd on free loopback ports
with a temporary data directory, and speaks to it over real ZeroMQ sockets.

Every wait here is bounded in time; a test that cannot reach the broker
fails instead of hanging.
"""

import atexit
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

NEXUSD = os.environ.get("NEXUSD") or os.path.join(
    os.environ.get("NEXUS_BUILD_DIR", "build"), "broker", "nexusd")

EVENT_HEAD = 19  # NUL, version, seq, ts, source_len (docs/protocol.md)

# A test stopped by a signal (ctest timeout, Ctrl-C) unwinds like an
# exception, so every Broker's __exit__ stops its nexusd: none is left behind.
signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(128 + sig))


_handed_out = set()

# Ports handed out by any test process of this user, while it lives: a
# port one test used stays its own. The crash tests start a broker on new
# ports every cycle; a port another test had just freed (its broker
# killed) was picked, and that test's clients, connecting again by
# themselves, wrote into this test's broker (both failed at once, each
# reading the other's records).
_PORT_DIR = os.path.join(tempfile.gettempdir(), "nexus-test-ports-%d" % os.getuid())
_my_port_files = []


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _claim_port(port):
    """True when port is now this process's for its life (no other live
    test process holds it)."""
    os.makedirs(_PORT_DIR, exist_ok=True)
    path = os.path.join(_PORT_DIR, str(port))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid():
                return True
            if owner and _pid_alive(owner):
                return False
            try:
                os.unlink(path)  # its process is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _my_port_files.append(path)
        return True
    return False


@atexit.register
def _release_ports():
    for path in _my_port_files:
        try:
            os.unlink(path)
        except OSError:
            pass


def free_port():
    """A free loopback port below the kernel's ephemeral range (which
    starts at 32768 here): a port the kernel hands out for bind(0) is also
    the kind it gives outgoing connections as their local port, so another
    test could take it before our server binds it. 10000-19999 is ours;
    the gateway's Node tests pick from 20000-31999."""
    for _ in range(500):
        port = random.randrange(10000, 20000)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not _claim_port(port):
            continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """n consecutive free loopback ports (the SDK and CLI find the event
    endpoints at the two ports after the control port)."""
    for _ in range(200):
        base = free_port()
        held = []
        try:
            for k in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.bind(("127.0.0.1", base + k))
                if k and not _claim_port(base + k):
                    raise OSError("held by another test")
            _handed_out.update(range(base, base + n))
            return tuple(range(base, base + n))
        except OSError:
            pass
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no %d consecutive free ports" % n)


def decode_event(frame):
    """Returns (topic, seq, ts, source, payload) from an event message."""
    nul = frame.index(b"\0")
    assert 0 < nul <= 255 and frame[nul + 1] == 2, frame[:40]
    seq, ts = struct.unpack(">QQ", frame[nul + 2:nul + 18])
    slen = frame[nul + 18]
    src = frame[nul + 19:nul + 19 + slen]
    return (frame[:nul].decode(), seq, ts, src.decode(), bytes(frame[nul + 19 + slen:]))


def _close_log(proc_owner):
    """Closes our handle on the log of a process that stopped: atexit keeps
    the owner alive (_drop_log), so garbage collection would not."""
    log = getattr(proc_owner, "log", None)
    if log:
        log.close()
        proc_owner.log = None


def _drop_log(proc_owner):
    """At exit, the log of a broker or gateway that has stopped goes (tests
    that stop one without cleanup() left them in /tmp, dozens a run); the
    log of one still running stays, for whoever looks into why."""
    proc = proc_owner.proc
    if proc is None or proc.poll() is not None:
        try:
            os.unlink(proc_owner.log_path)
        except OSError:
            pass


class Broker:
    """One nexusd process. Use as a context manager or call stop()."""

    def __init__(self, data_dir=None, extra=None, env=None, keep_dir=False, host="127.0.0.1",
                 also_bind=(), prefix=(), ports=None, token=None):
        """host: the address the test reaches it at; also_bind: more
        addresses each socket binds (same ports); prefix: a command the
        broker runs under (e.g. ip netns exec NS); ports: (control, in, out);
        token: the token the harness's own sockets present at the handshake
        (PLAIN) when the broker has tokens."""
        self.host = host
        self.token = token
        self.also_bind = list(also_bind)
        self.prefix = list(prefix)
        self.owns_dir = data_dir is None and not keep_dir
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="nexus-test-")
        self.extra = list(extra or [])
        self.env = env
        self.proc = None
        self.log_path = os.path.join(tempfile.gettempdir(),
                                     "nexusd-%d-%d.log" % (os.getpid(), free_port()))
        atexit.register(_drop_log, self)
        self.ports = ports
        self.ctx = zmq.Context.instance()

    @property
    def control(self):
        return "tcp://%s:%d" % (self.host, self.ports[0])

    @property
    def events_in(self):
        return "tcp://%s:%d" % (self.host, self.ports[1])

    @property
    def events_out(self):
        return "tcp://%s:%d" % (self.host, self.ports[2])

    def _binds(self, endpoint, port):
        return ",".join([endpoint] + ["tcp://%s:%d" % (h, port) for h in self.also_bind])

    def start(self, timeout=10.0):
        # Ports picked here may be taken before nexusd binds them (another
        # test's connection may get one as its local port): a first start
        # that cannot bind tries other ports, at most 3 times. A restart
        # keeps its ports, as clients expect.
        picked = self.ports is None
        for attempt in range(3):
            if picked:
                self.ports = (free_port(), free_port(), free_port())
            before = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            try:
                return self._start(timeout)
            except RuntimeError:
                with open(self.log_path, "rb") as f:
                    f.seek(before)
                    fresh = f.read().decode(errors="replace")
                if not picked or attempt == 2 or "cannot bind" not in fresh:
                    raise

    def _start(self, timeout):
        args = self.prefix + [NEXUSD, "--data-dir", self.data_dir,
                "--control-endpoints", self._binds(self.control, self.ports[0]),
                "--events-in-endpoints", self._binds(self.events_in, self.ports[1]),
                "--events-out-endpoints", self._binds(self.events_out, self.ports[2]),
                "--sync", "none"] + self.extra
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        if getattr(self, "log", None):
            self.log.close()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nexusd exited with %s:\n%s" % (self.proc.returncode, self.logs()))
            try:
                with Client(self) as c:
                    if c.request({"op": "ping"}, timeout=0.3).get("ok"):
                        return self
            except TimeoutError:
                pass
        raise RuntimeError("nexusd did not answer ping:\n" + self.logs())

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self):
        """SIGKILL: no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Say where it hangs before killing it: that is the bug.
                try:
                    out = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex",
                                          "thread apply all bt"], capture_output=True,
                                         text=True, timeout=60).stdout
                except Exception as e:  # gdb missing or stuck
                    out = "(no backtrace: %s)" % e
                sys.stderr.write("---- nexusd did not stop in %ss; backtrace ----\n%s\n"
                                 "---- nexusd log ----\n%s\n" % (timeout, out, self.logs()))
                self.proc.kill()
                self.proc.wait(5)
                raise
        elif self.proc:
            rc = self.proc.returncode
        self.proc = None
        _close_log(self)
        return rc

    def cleanup(self):
        self.stop()
        if self.owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def __enter__(self):
        # A start that fails (no answer to the readiness ping: a broker with
        # tokens and no token= here) must not leave nexusd running.
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write("---- nexusd log ----\n" + self.logs())
        self.cleanup()


def plain(sock, token):
    """Makes sock present token at the handshake (PLAIN), as libnexus does
    when it has one. None leaves it without a mechanism."""
    if token is not None:
        sock.plain_username = b"nexus"
        sock.plain_password = token.encode() if isinstance(token, str) else token
    return sock


class Client:
    """A DEALER on the control plane: msgpack maps in, msgpack maps out.
    token: the PLAIN password at the handshake (default: the broker's)."""

    def __init__(self, broker, endpoint=None, token=False):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        plain(self.sock, getattr(broker, "token", None) if token is False else token)
        self.sock.connect(endpoint or broker.control)
        self.next_id = 1

    def send_raw(self, data):
        self.sock.send(data)

    def recv(self, timeout=5.0):
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply within %.1fs" % timeout)
        return msgpack.unpackb(self.sock.recv(), raw=False, strict_map_key=False)

    def request(self, req, timeout=5.0):
        if "id" not in req:
            req = dict(req, id=self.next_id)
            self.next_id += 1
        self.sock.send(msgpack.packb(req, use_bin_type=True))
        while True:
            rep = self.recv(timeout)
            if rep.get("id") == req["id"]:
                return rep

    def close(self):
        self.sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def subscriber(broker, *prefixes, token=False):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 0
    plain(sub, getattr(broker, "token", None) if token is False else token)
    for p in prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, p.encode() if isinstance(p, str) else p)
    sub.connect(broker.events_out)
    return sub


def publisher(broker, token=False):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.linger = 1000
    pub.sndhwm = 0
    plain(pub, getattr(broker, "token", None) if token is False else token)
    pub.connect(broker.events_in)
    return pub


def recv_event(sub, timeout=5.0):
    """Returns (topic, seq, ts, source, payload) or raises TimeoutError."""
    if not sub.poll(int(timeout * 1000)):
        raise TimeoutError("no event within %.1fs" % timeout)
    frames = sub.recv_multipart()
    assert len(frames) == 1, frames
    return decode_event(frames[0])


_pending = {}  # id(sub) -> events received by next_event but not yet matched


def next_event(sub, topic, pred=None, timeout=3.0):
    """The first event on `topic` (payload decoded) whose payload passes
    pred, looking first at events received earlier and not yet matched, so
    that the order of waits does not matter. Returns (payload, source,
    arrival) or None. At most 200 000 unmatched events are kept."""
    buf = _pending.setdefault(id(sub), [])
    for i, (tp, payload, source, at) in enumerate(buf):
        if tp == topic and (pred is None or pred(payload)):
            del buf[i]
            return payload, source, at
    deadline = time.time() + timeout
    for _ in range(1000000):
        left = deadline - time.time()
        if left <= 0:
            return None
        try:
            ev = recv_event(sub, timeout=left)
        except TimeoutError:
            return None
        at = time.time()
        try:
            payload = msgpack.unpackb(ev[4], raw=False)
        except Exception:
            payload = ev[4]
        if ev[0] == topic and (pred is None or pred(payload)):
            return payload, ev[3], at
        if len(buf) < 200000:
            buf.append((ev[0], payload, ev[3], at))
    return None


class EventReader(threading.Thread):
    """Owns a subscriber socket on a thread of its own (start it once the
    subscription is settled): events holds (seq, topic) of every event
    received, max_seq the highest seq. stop() ends it."""

    def __init__(self, sub):
        super().__init__(daemon=True)
        self.sub, self.events, self.max_seq, self.done = sub, [], 0, False

    def run(self):
        while not self.done:
            if not self.sub.poll(100):
                continue
            for _ in range(10000):
                try:
                    frames = self.sub.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                ev = decode_event(frames[0])
                self.events.append((ev[1], ev[0]))
                if ev[1] > self.max_seq:
                    self.max_seq = ev[1]

    def stop(self):
        self.done = True
        self.join(5)


def terminate(proc, timeout=10):
    """SIGTERM, then SIGKILL if it lingers: returns (stdout, stderr)."""
    proc.terminate()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def wait_until(fn, timeout=5.0, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def drain(sub, quiet_ms=100):
    """Discards what sub has queued until it is quiet for quiet_ms."""
    n = 0
    while sub.poll(quiet_ms) and n < 1000000:
        sub.recv_multipart()
        n += 1
    return n


def settle_subscription(broker, sub, topic="nexus.test.settle", timeout=5.0, auth=None):
    """Publishes acknowledged probe events until sub sees one: a SUB's
    subscription reaches the broker asynchronously, so a test that starts
    publishing at once may lose its first events (the ZeroMQ slow joiner)."""
    with Client(broker) as c:
        deadline = time.time() + timeout
        while time.time() < deadline:
            req = {"op": "publish", "topic": topic, "payload": b""}
            if auth or broker.token:
                req["auth"] = auth or broker.token
            c.request(req)
            if sub.poll(100):
                while sub.poll(50):
                    sub.recv_multipart()
                return
    raise TimeoutError("subscription never settled")


class Checks:
    """Counts checks; the test exits non-zero if any failed."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            sys.stderr.write("FAIL: %s\n" % what)
        return cond

    def eq(self, a, b, what):
        return self.check(a == b, "%s: %.300r != %.300r" % (what, a, b))

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(1 if self.failed else 0)


GATEWAY = os.environ.get("NEXUS_GATEWAY") or os.path.join(
    os.environ.get("NEXUS_BUILD_DIR", "build"), "gateway", "nexus-gateway")


class Gateway:
    """One nexus-gateway process on a free port, a client of `broker`
    (a Broker, or None: it then points at a port nothing answers on).
    start() returns once its log says it listens, or raises with the log."""

    def __init__(self, broker=None, args=(), port=None, prefix=(), env=None, binary=None):
        self.binary = binary or GATEWAY
        self.broker = broker
        self.args = list(args)
        self.port = port or free_port()
        self.prefix = list(prefix)
        self.env = env
        self.proc = None
        self.log_path = os.path.join(tempfile.gettempdir(),
                                     "nexus-gateway-%d-%d.log" % (os.getpid(), self.port))
        atexit.register(_drop_log, self)

    def start(self, timeout=15.0, wait_listen=True):
        # The gateway finds the event endpoints at the two ports after the
        # control port: start the broker with ports=free_ports(3).
        assert not self.broker or tuple(self.broker.ports) == tuple(
            range(self.broker.ports[0], self.broker.ports[0] + 3)), "broker ports not consecutive"
        control = self.broker.control if self.broker else "tcp://127.0.0.1:%d" % free_port()
        argv = self.prefix + [self.binary, "--port", str(self.port), "--broker", control] + self.args
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=env)
        if not wait_listen:
            return self
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "listening on http://" in self.logs():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("nexus-gateway exited with %s:\n%s" %
                                   (self.proc.returncode, self.logs()))
            time.sleep(0.05)
        raise RuntimeError("nexus-gateway did not listen:\n" + self.logs())

    def wait(self, timeout=15.0):
        """The exit status of a gateway expected to stop by itself."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=20):
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait(5)
        elif self.proc:
            rc = self.proc.returncode
        self.proc = None
        _close_log(self)
        return rc

    def cleanup(self):
        self.stop()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write("---- nexus-gateway log ----\n" + self.logs())
        self.cleanup()


def listening(port):
    """The local addresses of the sockets listening on TCP port, as the
    kernel's tables (/proc/net/tcp, tcp6) show them: '127.0.0.1',
    '0.0.0.0', '::1', '::' ..."""
    import ipaddress
    found = []
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state = cols[1], cols[3]
            addr, p = local.split(":")
            if state != "0A" or int(p, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(str(ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw)))
    return sorted(found)
