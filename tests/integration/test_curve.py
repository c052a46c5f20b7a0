#!/usr/bin/env python3
"""CURVE: every socket of nexusd encrypted, every client authenticated by
its key, and the key, not the publisher's word, stamped as an event's
source.

Keys come from `nexus keygen` (CZMQ certificate files); the raw clients
are pyzmq sockets with CURVE options, the CLI takes NEXUS_CURVE_SERVER_KEY
and NEXUS_CURVE_CERT. Checked:
- a client without CURVE, or with a key not in curve_clients, gets no
  answer and no event; one whose key is listed works on all three sockets;
- an event published with a claimed source carries the publisher's public
  key instead, live and in the history;
- curve_clients '*' lets any key in; a bad curve_cert or a missing
  curve_clients stops nexusd with a message naming the setting;
- the CLI with the environment variables publishes and reads the history;
  without them it cannot reach the broker (exit 3); a key the broker does
  not list and a wrong broker key are told apart from silence; a bad key
  is a usage error (exit 2).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq
import zmq.auth

import harness
from harness import NEXUSD, Broker, Checks, decode_event

NEXUS = os.environ.get("NEXUS_CLI") or os.path.join(
    os.environ.get("NEXUS_BUILD_DIR", "build"), "sdk", "nexus")


def keygen(path):
    r = subprocess.run([NEXUS, "keygen", path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class Keys:
    def __init__(self, path):
        self.public_text = keygen(path)
        self.path = path
        self.public, self.secret = zmq.auth.load_certificate(path + "_secret")


def sock(kind, endpoint, server=None, keys=None):
    s = zmq.Context.instance().socket(kind)
    s.linger = 0
    if server:
        s.curve_serverkey = server.public
        s.curve_publickey = keys.public
        s.curve_secretkey = keys.secret
    s.connect(endpoint)
    return s


def ping(endpoint, server=None, keys=None, timeout=1.5):
    d = sock(zmq.DEALER, endpoint, server, keys)
    try:
        d.send(msgpack.packb({"op": "ping", "id": 7}))
        if not d.poll(int(timeout * 1000)):
            return None
        return msgpack.unpackb(d.recv(), raw=False)
    finally:
        d.close()


def request(endpoint, server, keys, req):
    d = sock(zmq.DEALER, endpoint, server, keys)
    try:
        d.send(msgpack.packb(dict(req, id=1), use_bin_type=True))
        assert d.poll(5000), "no reply to %r" % req
        return msgpack.unpackb(d.recv(), raw=False, strict_map_key=False)
    finally:
        d.close()


def cli(args, env_extra, timeout=15):
    env = dict(os.environ)
    env.update(env_extra)
    r = subprocess.run([NEXUS] + args, capture_output=True, text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout, r.stderr


def start_fails(args, data=None):
    """nexusd with args (and a fresh data dir, or data) must exit at once:
    (code, log)."""
    keep = data is not None
    data = data or tempfile.mkdtemp(prefix="nexus-test-curve-")
    ports = harness.free_ports(3)
    r = subprocess.run([NEXUSD, "--data-dir", data,
                        "--control-endpoints", "tcp://127.0.0.1:%d" % ports[0],
                        "--events-in-endpoints", "tcp://127.0.0.1:%d" % ports[1],
                        "--events-out-endpoints", "tcp://127.0.0.1:%d" % ports[2]] + args,
                       capture_output=True, text=True, timeout=20)
    if not keep:
        subprocess.run(["rm", "-rf", data])
    return r.returncode, r.stderr


def main():
    t = Checks()
    keydir = tempfile.mkdtemp(prefix="nexus-test-keys-")
    clients = os.path.join(keydir, "clients")
    os.mkdir(clients)
    broker_keys = Keys(os.path.join(keydir, "broker"))
    alice = Keys(os.path.join(clients, "alice"))  # listed: its public file is in clients/
    os.rename(alice.path + "_secret", os.path.join(keydir, "alice_secret"))
    alice.path = os.path.join(clients, "alice")
    alice_secret = os.path.join(keydir, "alice_secret")
    bob = Keys(os.path.join(keydir, "bob"))  # not listed
    t.eq(len(broker_keys.public_text), 40, "nexus keygen prints the Z85 public key")
    t.eq(oct(os.stat(alice_secret).st_mode & 0o777), "0o600", "the secret file is 0600")

    ports = harness.free_ports(3)
    curve = ["--curve-cert", broker_keys.path + "_secret", "--curve-clients", clients]
    b = Broker(extra=curve, ports=ports)
    try:
        # harness.Broker's readiness ping is plain: it must not get in.
        try:
            b.start(timeout=3.0)
            t.check(False, "a plain client got an answer from a CURVE broker")
        except RuntimeError as e:
            t.check("did not answer ping" in str(e), "a plain ping gets no answer: %s" % e)
        t.check(b.proc and b.proc.poll() is None, "nexusd with CURVE runs")
        t.check(harness.wait_until(lambda: "ready: last seq" in b.logs(), timeout=20.0),
                "nexusd with CURVE gets ready")
        t.check("CURVE on: broker public key %s" % broker_keys.public_text in b.logs(),
                "the log names the broker's public key")
        rep = ping(b.control, broker_keys, alice, timeout=5.0)
        t.check(rep and rep.get("ok"), "alice (listed) gets a ping answered: %r" % rep)
        t.check(ping(b.control, broker_keys, bob) is None, "bob (not listed) gets no answer")
        t.check(ping(b.control) is None, "a plain client gets no answer")

        # Event plane: the source is the key, whatever the publisher claims.
        sub = sock(zmq.SUB, b.events_out, broker_keys, alice)
        sub.setsockopt(zmq.SUBSCRIBE, b"cv.")
        plain_sub = sock(zmq.SUB, b.events_out)
        plain_sub.setsockopt(zmq.SUBSCRIBE, b"")
        bob_pub = sock(zmq.PUB, b.events_in, broker_keys, bob)
        pub = sock(zmq.PUB, b.events_in, broker_keys, alice)
        got = None
        deadline = time.time() + 5
        while got is None and time.time() < deadline:
            pub.send_multipart([b"cv.claimed", msgpack.packb({"n": 1}), b"not-alice"])
            bob_pub.send_multipart([b"cv.bob", msgpack.packb({"n": 2}), b"bob"])
            if sub.poll(200):
                got = decode_event(sub.recv())
        t.check(got is not None, "alice's SUB receives alice's event")
        if got:
            topic, seq, ts, source, payload = got
            t.eq(source, alice.public_text, "the event's source is alice's public key")
            t.eq(msgpack.unpackb(payload), {"n": 1}, "the payload is untouched")
        time.sleep(0.3)
        while sub.poll(100):
            ev = decode_event(sub.recv())
            t.check(ev[0] != "cv.bob", "bob's events never arrive")
        t.check(not plain_sub.poll(300), "a plain SUB receives nothing")
        h = request(b.control, broker_keys, alice,
                    {"op": "history", "patterns": ["cv.>"], "limit": 100})
        t.check(h.get("ok") and h["events"], "history answers alice: %r" % h)
        if h.get("ok"):
            t.check(all(e["source"] == alice.public_text for e in h["events"]),
                    "history holds alice's key as source: %r" % [e["source"] for e in h["events"]])
            t.check(all(e["topic"] != "cv.bob" for e in h["events"]), "bob's events not stored")
        for s in (sub, plain_sub, bob_pub, pub):
            s.close()

        # The CLI with the environment variables.
        env = {"NEXUS_ENDPOINT": b.control, "NEXUS_CURVE_SERVER_KEY": broker_keys.path,
               "NEXUS_CURVE_CERT": alice_secret}
        rc, out, err = cli(["pub", "cv.cli", '{"via":"cli"}', "--ack"], env)
        t.check(rc == 0 and out.strip().isdigit(), "nexus pub over CURVE: %r %r" % (out, err))
        rc, out, err = cli(["events", "--pattern", "cv.cli", "--json"], env)
        lines = [json.loads(line) for line in out.splitlines() if line]
        t.check(rc == 0 and lines and lines[0]["payload"] == {"via": "cli"},
                "nexus events over CURVE: %r %r" % (out, err))
        env_key = dict(env, NEXUS_CURVE_SERVER_KEY=broker_keys.public_text)
        rc, out, err = cli(["status", "--json"], env_key)
        t.eq(rc, 0, "NEXUS_CURVE_SERVER_KEY as the key itself works")
        # The gateway is a libnexus client: the same variables bring it in.
        gw_bin = os.path.join(os.environ.get("NEXUS_BUILD_DIR", "build"), "gateway",
                              "nexus-gateway")
        gport = harness.free_port()
        genv = dict(os.environ, NEXUS_CURVE_SERVER_KEY=broker_keys.path,
                    NEXUS_CURVE_CERT=alice_secret)
        gw = subprocess.Popen([gw_bin, "--port", str(gport), "--broker", b.control, "--web-root",
                               os.path.join(os.path.dirname(__file__), "..", "..", "gateway",
                                            "web")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=genv)
        try:
            rc, out = None, ""
            deadline = time.time() + 15
            while time.time() < deadline:
                rc, out, err = cli(["status", "--gateway", "http://127.0.0.1:%d" % gport,
                                    "--json"], env)
                if rc == 0 and '"status":"active"' in out.replace(" ", ""):
                    break
                time.sleep(0.3)
            g = json.loads(out.splitlines()[0]).get("gateway", {}) if rc == 0 else {}
            t.check(g.get("up") and g.get("health", {}).get("broker", {}).get("status") == "up",
                    "the gateway reaches the CURVE broker: %r" % out[:400])
        finally:
            gw.terminate()
            gw.wait(10)
        # A refused handshake is said at the refusal, not at the end of the
        # client's timeout (60 s here).
        started = time.time()
        rc, out, err = cli(["status", "--timeout", "60s"], {"NEXUS_ENDPOINT": b.control},
                           timeout=90)
        t.check(rc == 1 and "wants a token" in err and "CURVE key" in err,
                "the CLI without CURVE is refused (exit 1), and told what the broker wants: %d %r"
                % (rc, err))
        t.check(time.time() - started < 30, "... at the refusal, not after the 60 s timeout")
        # A failed handshake is told apart from silence.
        started = time.time()
        rc, out, err = cli(["status", "--timeout", "60s"],
                           dict(env, NEXUS_CURVE_CERT=bob.path + "_secret"), timeout=90)
        t.check(rc == 1 and "refused this client's CURVE key" in err,
                "an unlisted key: exit 1 (refused), and says the broker refused the key: %r" % err)
        t.check(time.time() - started < 30, "... at the refusal, not after the 60 s timeout")
        rc, out, err = cli(["status", "--timeout", "1500ms"],
                           dict(env, NEXUS_CURVE_SERVER_KEY=bob.public_text))
        t.check(rc == 3 and "CURVE handshake" in err,
                "a wrong server key: exit 3, and says the handshake failed: %r" % err)
        rc, out, err = cli(["status"], dict(env, NEXUS_CURVE_SERVER_KEY="not-a-key"))
        t.check(rc == 2 and "NEXUS_CURVE_" in err and "server key" in err,
                "a bad server key: exit 2, names it: %r" % err)
        rc, out, err = cli(["status"], dict(env, NEXUS_CURVE_CERT=os.path.join(keydir, "none")))
        t.check(rc == 2 and "certificate" in err, "a missing certificate: exit 2: %r" % err)
        rc, out, err = cli(["status"], {"NEXUS_ENDPOINT": b.control,
                                        "NEXUS_CURVE_CERT": alice_secret})
        t.check(rc == 2 and "clear" in err,
                "a certificate without the broker's key: exit 2, not plain: %r" % err)
    finally:
        b.stop()
        b.cleanup()

    # Any key in: encrypted, but no key names a client, so sources stay
    # as claimed (on a non-loopback endpoint nexusd warns of it).
    b = Broker(extra=["--curve-cert", broker_keys.path + "_secret", "--curve-clients", "*"])
    try:
        try:
            b.start(timeout=2.0)
        except RuntimeError:
            pass
        t.check(harness.wait_until(lambda: "ready: last seq" in b.logs(), timeout=20.0),
                "curve_clients '*': nexusd gets ready")
        rep = ping(b.control, broker_keys, bob, timeout=5.0)
        t.check(rep and rep.get("ok"), "curve_clients '*': bob gets in: %r" % rep)
        t.check(ping(b.control) is None, "curve_clients '*': a plain client still does not")
        t.check("clients: any that knows the key" in b.logs(),
                "curve_clients '*': the log says any key gets in")
        sub = sock(zmq.SUB, b.events_out, broker_keys, bob)
        sub.setsockopt(zmq.SUBSCRIBE, b"any.")
        pub = sock(zmq.PUB, b.events_in, broker_keys, bob)
        got = None
        deadline = time.time() + 5
        while got is None and time.time() < deadline:
            pub.send_multipart([b"any.ev", b"\xc0", b"bob-claims"])
            if sub.poll(200):
                got = decode_event(sub.recv())
        t.check(got is not None and got[3] == "bob-claims",
                "curve_clients '*': the claimed source stays: %r" % (got,))
        sub.close()
        pub.close()
    finally:
        b.stop()
        b.cleanup()

    # Bad settings stop nexusd with a message naming the setting.
    rc, err = start_fails(["--curve-clients", "*"])
    t.check(rc == 2 and "curve_cert" in err, "curve_clients without curve_cert: exit 2: %r" % err)
    rc, err = start_fails(["--curve-cert", broker_keys.path + "_secret"])
    t.check(rc == 2 and "curve_clients" in err, "curve_cert without curve_clients: exit 2: %r" % err)
    data = tempfile.mkdtemp(prefix="nexus-test-curve-")
    for _ in range(2):  # the second start would warn if the first had opened the store
        rc, err = start_fails(["--curve-cert", os.path.join(keydir, "none"), "--curve-clients",
                               "*"], data)
        t.check(rc != 0 and "curve_cert" in err, "a curve_cert that is not there: %r" % err)
        t.check("unclean" not in err, "a bad curve_cert stops nexusd before it opens the store")
    subprocess.run(["rm", "-rf", data])
    rc, err = start_fails(["--curve-cert", broker_keys.path + "_secret", "--curve-clients",
                           os.path.join(keydir, "nodir")])
    t.check(rc != 0 and "curve_clients" in err, "a curve_clients that is not a directory: %r" % err)
    subprocess.run(["rm", "-rf", keydir])
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
