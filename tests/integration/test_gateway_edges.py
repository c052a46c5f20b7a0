#!/usr/bin/env python3
"""The gateway's edges from issue 14's tour:

1. a refused WebSocket upgrade is answered with an HTTP/1.1 status line
   (HTTP/1.0 made Python's websockets raise "unsupported HTTP version", so
   the 401/403 and its reason never reached the user), with the JSON body
   that says why: no token, a wrong token, a bad path, a bad session id;
2. the dashboard files are found from any build directory (CMake tells the
   binary where its source tree is): a copy of the binary elsewhere still
   serves the dashboard;
3. without dashboard files (a web_root without index.html) the gateway
   serves the API and WebSockets with a warning, and / answers a clear 404
   page, never exit 2;
4. `nexus up`: a gateway that cannot start (its port taken) leaves the
   broker running;
5. an upgrade on a keep-alive connection that carried an HTTP request is
   refused (400) and the gateway keeps answering; each request's record is
   released (nexus_gateway_http_requests_open in /metrics);
6. http_bytes bounds the HTTP answers held: one that would pass it is a
   503 busy, and no bytes stay charged once connections are done.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from harness import Broker, Checks, Client, Gateway, free_port, free_ports, wait_until

BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.path.join(BUILD, "sdk", "nexus")

UPGRADE = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def read_answer(s, deadline):
    """One HTTP answer from s: (status line, body)."""
    data = b""
    while time.time() < deadline:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            low = head.lower()
            n = int(low.split(b"content-length:")[1].split(b"\r\n")[0]) \
                if b"content-length:" in low else 0
            if len(body) >= n:
                return head.split(b"\r\n")[0].decode(), body[:n].decode(errors="replace")
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(errors="replace"), body.decode(errors="replace")


def upgrade(port, path):
    """The raw answer to a WebSocket upgrade of path: (status line, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall((UPGRADE % path).encode())
        return read_answer(s, time.time() + 5)
    finally:
        s.close()


def http_then_upgrade(port, path, ws_path, token):
    """A GET of path, read whole, then an upgrade of ws_path on the same
    connection: the upgrade's (status line, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        deadline = time.time() + 10
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (path, token)).encode())
        read_answer(s, deadline)
        s.sendall((UPGRADE % ws_path).encode())
        return read_answer(s, deadline)
    finally:
        s.close()


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def main():
    t = Checks()
    with Broker(ports=free_ports(3)) as b:
        # 1. refusals, HTTP/1.1
        with Gateway(b, ["--token", "gw-tok"]) as g:
            for path, status, code in (("/ws/session/s1", "401", "unauthorized"),
                                       ("/ws/session/s1?token=nope", "401", "unauthorized"),
                                       ("/ws/nowhere?token=gw-tok", "404", "not_found"),
                                       ("/ws/session/bad%20id?token=gw-tok", "400",
                                        "bad_request")):
                line, body = upgrade(g.port, path)
                t.check(line.startswith("HTTP/1.1 %s " % status),
                        "upgrade of %s refused with HTTP/1.1 %s: %r" % (path, status, line))
                try:
                    err = json.loads(body)["error"]
                except (ValueError, KeyError):
                    err = {}
                t.check(err.get("code") == code and err.get("message"),
                        "with the reason in JSON (%s): %r" % (code, body))
            line, _ = upgrade(g.port, "/ws/session/s1?token=gw-tok")
            t.check(line.startswith("HTTP/1.1 101"), "a good upgrade still switches: %r" % line)
            # An upgrade on a keep-alive connection after a large HTTP answer
            # is refused (a run of them made lws spin, every client held up),
            # and the gateway goes on answering.
            with Client(b) as c:
                for i in range(200):
                    c.request({"op": "publish", "topic": "edge.big",
                               "payload": json.dumps({"pad": "x" * 8000}).encode()})
            answered = 0
            for i in range(30):
                line, body = http_then_upgrade(g.port, "/events/history?event_type=edge.big"
                                               "&limit=1000", "/ws/session/s1?token=gw-tok",
                                               "gw-tok")
                answered += line.startswith("HTTP/1.1 400 ") and "connection of its own" in body
            t.eq(answered, 30, "an upgrade after an HTTP request on the same connection: 400")
            st, _, body = get(g.port, "/health")
            t.eq(st, 200, "the gateway answers after them")
            # Each keep-alive request's record (and its answer) is released
            # when the next one comes, or the connection closes (lws 4.1
            # gives each its own pss: they were kept until the gateway
            # stopped).
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            for i in range(50):
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer gw-tok"
                          b"\r\n\r\n")
                read_answer(s, time.time() + 5)
            s.close()
            time.sleep(0.3)
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer gw-tok\r\n\r\n")
            _, body = read_answer(s, time.time() + 5)
            s.close()
            open_now = [line for line in body.splitlines()
                        if line.startswith("nexus_gateway_http_requests_open ")]
            t.check(open_now and int(open_now[0].split()[1]) <= 2,
                    "HTTP request records after 50 keep-alive and 30 refused-upgrade "
                    "connections: %r" % open_now)
            held = [line for line in body.splitlines()
                    if line.startswith("nexus_gateway_http_bytes ")]
            t.check(held and int(held[0].split()[1]) < 4096,
                    "no answer bytes stay charged once their connections are done: %r" % held)

        # 6. http_bytes bounds the answers held: one that would pass it is a
        # 503 busy, a smaller one is answered.
        with Gateway(b, ["--token", "gw-tok", "--http-bytes", "1M"]) as g:
            def ask(path):
                s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
                try:
                    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer gw-tok\r\n"
                               "Connection: close\r\n\r\n" % path).encode())
                    return read_answer(s, time.time() + 10)
                finally:
                    s.close()
            line, body = ask("/events/history?event_type=edge.big&limit=1000")
            t.check(line.startswith("HTTP/1.1 503 ") and "http_bytes" in body,
                    "an answer over http_bytes: 503 busy naming it: %r %r" % (line, body[:200]))
            line, body = ask("/events/history?event_type=edge.big&limit=10")
            t.check(line.startswith("HTTP/1.1 200 ") and len(json.loads(body)["events"]) == 10,
                    "a smaller one is answered: %r" % line)
            t.check("would pass http_bytes" in g.logs(), "the gateway says why in its log")
            line, _ = upgrade(g.port, "/ws/session/s1?token=gw-tok")
            t.check(line.startswith("HTTP/1.1 101"), "and upgrades on new connections: %r" % line)

        # 2. a binary outside its build tree finds the dashboard
        tmp = tempfile.mkdtemp(prefix="nexus-gw-elsewhere-")
        try:
            copy = os.path.join(tmp, "bin", "nexus-gateway")
            os.makedirs(os.path.dirname(copy))
            shutil.copy2(os.path.join(BUILD, "gateway", "nexus-gateway"), copy)
            with Gateway(b, binary=copy) as g:
                st, ctype, body = get(g.port, "/")
                t.check(st == 200 and "text/html" in ctype and "<html" in body.lower(),
                        "a copy of the binary elsewhere serves the dashboard: %s %s" %
                        (st, ctype))
                t.check("dashboard from " in g.logs() and "nowhere" not in g.logs(),
                        "it says where the dashboard comes from")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        # 3. no dashboard files: the API and WebSockets all the same
        empty = tempfile.mkdtemp(prefix="nexus-gw-noweb-")
        try:
            with Gateway(b, ["--web-root", empty]) as g:
                t.check("no dashboard files (index.html) found in %s" % empty in g.logs(),
                        "a warning names where it looked: %r" % g.logs()[-600:])
                st, ctype, body = get(g.port, "/")
                t.check(st == 404 and "text/html" in ctype and "No dashboard here" in body and
                        "--web-root" in body, "/ is a clear 404 page: %s %s %r" %
                        (st, ctype, body[:200]))
                st, _, body = get(g.port, "/app.js")
                t.eq(st, 404, "other files: 404")
                st, _, body = get(g.port, "/etc/passwd")
                t.check(st == 404 and "root:" not in body, "no file outside a web root is served")
                st, _, body = get(g.port, "/health")
                t.check(st == 200 and json.loads(body).get("status") in ("healthy", "ok", "up",
                                                                         "active", "degraded"),
                        "the API works: %s %r" % (st, body[:200]))
                line, _ = upgrade(g.port, "/ws/session/nodash")
                t.check(line.startswith("HTTP/1.1 101"), "WebSockets work: %r" % line)
                t.check(g.proc.poll() is None, "it runs")
        finally:
            shutil.rmtree(empty, ignore_errors=True)
        g = Gateway(b, ["--web-root", "/nonexistent/web"])
        g.start(wait_listen=False)
        t.eq(g.wait(), 2, "a web_root that is no directory: exit 2")
        g.cleanup()
        # web_root none (its --help offers it): the API only, by choice, no
        # warning (it was refused as "not a directory", exit 2).
        with Gateway(b, ["--web-root", "none"]) as g:
            st, _, body = get(g.port, "/")
            t.check(st == 404 and "No dashboard here" in body, "web_root none: / is the 404 page")
            st, _, body = get(g.port, "/health")
            t.eq(st, 200, "web_root none: the API works")
            t.check("web_root none" in g.logs() and "no dashboard files" not in g.logs(),
                    "web_root none: said once, no warning: %r" % g.logs()[-600:])

    # 7. A broker that does not answer holds up neither the start nor a
    # SIGTERM: the gateway listens within a second and stops at once (it
    # waited two broker timeouts, ~10 s, before it looked at the signal).
    g = Gateway(None, ["--web-root", "none"])
    t0 = time.time()
    g.start(wait_listen=False)
    time.sleep(0.2)
    g.proc.send_signal(signal.SIGTERM)
    rc = g.wait()
    t.check(rc == 0 and time.time() - t0 < 4,
            "SIGTERM while the broker does not answer: exit %s after %.1f s" % (rc, time.time() - t0))
    g.cleanup()
    g = Gateway(None, ["--web-root", "none"])
    t0 = time.time()
    g.start()
    t.check(time.time() - t0 < 4, "it listens in %.1f s without a broker" % (time.time() - t0))
    st, _, body = get(g.port, "/health")
    t.check(st in (200, 503) and json.loads(body)["broker"]["status"] == "down",
            "/health says the broker is down: %s %r" % (st, body[:300]))
    # Its port taken: the log says so in words (lws only gave "(-1 98)").
    g2 = Gateway(None, ["--web-root", "none"], port=g.port)
    g2.start(wait_listen=False)
    t.check(g2.wait() not in (None, 0) and "Address already in use" in g2.logs() and
            "choose --port" in g2.logs(), "a taken port is said in words: %r" % g2.logs()[-400:])
    g2.cleanup()
    g.stop()

    # 4. nexus up keeps the broker when the gateway cannot start
    ports = free_ports(3)
    data = tempfile.mkdtemp(prefix="nexus-up-")
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    gport = free_port()
    taken.bind(("127.0.0.1", gport))
    taken.listen(1)
    env = dict(os.environ, NEXUS_PORT=str(gport))
    env.pop("NEXUS_TOKEN", None)
    up = subprocess.Popen([NEXUS, "up", "--data-dir", data, "--endpoint",
                           "tcp://127.0.0.1:%d" % ports[0], "--", "--sync", "none"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        class B:
            control = "tcp://127.0.0.1:%d" % ports[0]
            token = None

        def answers():
            try:
                with Client(B) as c:
                    return c.request({"op": "ping"}, timeout=0.5).get("ok")
            except TimeoutError:
                return False
        t.check(wait_until(answers, timeout=20), "nexus up: the broker answers")
        time.sleep(3)  # the gateway tried, and failed, to listen
        t.check(up.poll() is None and answers(),
                "nexus up: the broker keeps running when the gateway cannot start")
        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=30)
        t.check("nexus-gateway exited" in err and "the broker keeps running" in err,
                "it says the gateway exited and the broker keeps running: %r" % err[-600:])
        t.eq(up.returncode, 0, "Ctrl-C stops it cleanly")
        # kill -9 of `nexus up`: its broker stops too (it stayed under init,
        # holding the ports and the data directory).
        up = subprocess.Popen([NEXUS, "up", "--no-gateway", "--data-dir", data, "--endpoint",
                               "tcp://127.0.0.1:%d" % ports[0], "--", "--sync", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        t.check(wait_until(answers, timeout=20), "nexus up again: the broker answers")
        up.kill()
        up.communicate(timeout=10)
        t.check(wait_until(lambda: not answers(), timeout=15),
                "nexus up killed with SIGKILL: its broker stops too")
        # NEXUS_QUEUE_BYTES is nexusd's: the gateway (whose queue_bytes is
        # per WebSocket client) does not get it, and nexus up says so.
        up = subprocess.Popen([NEXUS, "up", "--data-dir", data, "--endpoint",
                               "tcp://127.0.0.1:%d" % ports[0], "--", "--sync", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(env, NEXUS_PORT=str(free_port()), NEXUS_QUEUE_BYTES="2M"))
        t.check(wait_until(answers, timeout=20), "nexus up with NEXUS_QUEUE_BYTES: the broker answers")

        def children():
            kids = []
            for task in os.listdir("/proc/%d/task" % up.pid):
                with open("/proc/%d/task/%s/children" % (up.pid, task)) as f:
                    kids += [int(k) for k in f.read().split()]
            found = {}
            for k in kids:
                try:
                    with open("/proc/%d/cmdline" % k, "rb") as f:
                        prog = os.path.basename(f.read().split(b"\0")[0].decode())
                    with open("/proc/%d/environ" % k, "rb") as f:
                        found[prog] = f.read().split(b"\0")
                except OSError:
                    pass
            return found
        kids = {}

        def both():
            kids.update(children())
            return "nexusd" in kids and "nexus-gateway" in kids
        wait_until(both, timeout=15)
        t.check(b"NEXUS_QUEUE_BYTES=2M" in kids.get("nexusd", []),
                "nexusd gets NEXUS_QUEUE_BYTES: %r" % sorted(kids))
        t.check("nexus-gateway" in kids and
                not any(v.startswith(b"NEXUS_QUEUE_BYTES=") for v in kids["nexus-gateway"]),
                "the gateway does not: %r" % sorted(kids))
        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=30)
        t.check("NEXUS_QUEUE_BYTES=2M is nexusd's" in err,
                "nexus up says where NEXUS_QUEUE_BYTES went: %r" % err[-600:])
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        taken.close()
        shutil.rmtree(data, ignore_errors=True)
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
