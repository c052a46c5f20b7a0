"""The `nexus` command against a real nexusd: every subcommand, --help,
--json shapes, exit codes (0 ok, 1 refused/denied, 2 usage, 3 unreachable),
`events --resume`, `sub --exec`, and a session registered by one call and
used by later calls. Every wait is bounded.
"""

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import msgpack  # noqa: E402

from harness import Broker, Checks, Client, free_port, free_ports  # noqa: E402

BUILD = os.environ.get("NEXUS_BUILD_DIR", "build")
NEXUS = os.environ.get("NEXUS_CLI") or os.path.join(BUILD, "sdk", "nexus")
t = Checks()
state = tempfile.mkdtemp(prefix="nexus-cli-state-")


def run(args, endpoint, stdin=None, timeout=20, env=None):
    e = dict(os.environ, XDG_STATE_HOME=state, NEXUS_ENDPOINT=endpoint)
    e.pop("NEXUS_SESSION", None)
    if env:
        e.update(env)
    p = subprocess.run([NEXUS] + args, input=stdin, capture_output=True, timeout=timeout,
                       env=e, text=True)
    return p.returncode, p.stdout, p.stderr


def lines(out):
    return [json.loads(x) for x in out.splitlines() if x.strip()]


port = free_ports(3)[0]


class FixedBroker(Broker):
    """A broker on port, port+1, port+2 so that --endpoint derives them;
    its history pages hold 4 events at most, below the CLI's page size,
    so every `events` call here walks several pages."""

    def __init__(self, base):
        super().__init__(extra=["--history-limit", "4"])
        self.ports = (base, base + 1, base + 2)


try:
    with FixedBroker(port) as b:
        ep = b.control

        # ---- help and usage
        for cmd in (["up"], ["status"], ["pub"], ["sub"], ["events"], ["session", "register"],
                    ["session", "status"], ["session", "unregister"], ["sessions"], ["claim"],
                    ["renew"], ["release"], ["complete"], ["claims"]):
            rc, out, err = run(cmd + ["--help"], ep)
            t.check(rc == 0 and out.startswith("Usage: nexus " + " ".join(cmd)),
                    "%s --help: %r %r" % (cmd, rc, out[:80]))
        rc, out, err = run(["--help"], ep)
        t.check(rc == 0 and "Commands:" in out, "nexus --help")
        t.check("Publishes one event" in out and "Lists claims sorted by work id" in out and
                max(len(x) for x in out.splitlines()) <= 100,
                "nexus --help says what each command is for, in lines that fit: %r" % out[:600])
        rc, out, err = run(["session", "--help"], ep)
        t.check(rc == 0 and "nexus session register" in out and "nexus session get" in out,
                "nexus session --help lists its subcommands: %r %r" % (rc, out[:200]))
        rc, out, err = run(["session"], ep)
        t.check(rc == 2 and "session --help" in err, "nexus session alone: usage: %r" % err)
        for url in ("https://127.0.0.1:8450", "http://127.0.0.1:port", "http://:8450"):
            rc, out, err = run(["status", "--gateway", url], ep)
            t.check(rc == 2 and "http://HOST:PORT" in err, "status --gateway %s: usage: %r" % (url, err))
        rc, out, err = run(["keygen", ""], ep)
        t.check(rc == 2 and "NAME" in err, "keygen '': usage: %r" % err)
        rc, out, err = run([], ep)
        t.eq(rc, 2, "no command is a usage error")
        rc, out, err = run(["frobnicate"], ep)
        t.check(rc == 2 and err.count("\n") == 1 and err.startswith("nexus: "),
                "unknown command: one line on stderr, exit 2: %r" % err)
        rc, out, err = run(["pub"], ep)
        t.eq(rc, 2, "pub without topic")
        rc, out, err = run(["pub", "a.b", "{not json"], ep)
        t.eq(rc, 2, "pub with bad JSON")
        rc, out, err = run(["sub", "a.b", "--bogus"], ep)
        t.eq(rc, 2, "unknown option")
        rc, out, err = run(["sub", "a..b", "--count", "1"], ep)
        t.eq(rc, 2, "bad pattern is usage")
        rc, out, err = run(["events", "--limit", "zero"], ep)
        t.eq(rc, 2, "bad --limit")
        rc, out, err = run(["status", "--endpoint", "nonsense"], ep)
        t.eq(rc, 2, "bad endpoint")
        for bad in ("1ms", "soon", "200ms"):
            rc, out, err = run(["status", "--keepalive", bad], ep)
            t.check(rc == 2 and "--keepalive" in err, "bad --keepalive %s: exit 2, says so: %r" %
                    (bad, err))
        rc, out, err = run(["status", "--keepalive", "0"], ep)
        t.eq(rc, 0, "--keepalive 0 turns it off")
        rc, out, err = run(["version"], ep)
        t.check(rc == 0 and out.startswith("nexus "), "version")

        # ---- status
        rc, out, err = run(["status"], ep)
        t.check(rc == 0 and "last seq" in out and "active" in out, "status: %r" % out)
        rc, out, err = run(["status", "--json"], ep)
        st = lines(out)
        t.check(rc == 0 and len(st) == 1 and st[0]["up"] is True
                and st[0]["health"]["status"] == "active" and "history" in st[0]["state"],
                "status --json: %r" % out[:200])
        dead = "tcp://127.0.0.1:%d" % free_port()
        rc, out, err = run(["status", "--timeout", "300ms"], dead)
        t.check(rc == 3 and err.count("\n") == 1, "status when down: exit 3: %r %r" % (rc, err))
        rc, out, err = run(["status", "--json", "--timeout", "300ms"], dead)
        t.check(rc == 3 and lines(out)[0]["up"] is False, "status --json when down")
        rc, out, err = run(["pub", "a.b", "1", "--timeout", "300ms"], dead)
        t.eq(rc, 3, "pub when down: exit 3")

        # ---- status with a gateway (--gateway or NEXUS_GATEWAY)
        gw_bin = os.path.join(os.environ.get("NEXUS_BUILD_DIR", "build"), "gateway",
                              "nexus-gateway")
        gport = free_port()
        gw = subprocess.Popen([gw_bin, "--port", str(gport), "--broker", ep, "--web-root",
                               os.path.join(os.path.dirname(__file__), "..", "..", "gateway",
                                            "web")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = "http://127.0.0.1:%d" % gport
            deadline = time.time() + 10
            while time.time() < deadline:
                rc, out, err = run(["status", "--gateway", url], ep)
                if rc == 0:
                    break
                time.sleep(0.2)
            t.check(rc == 0 and "gateway status" in out and "active (broker up)" in out,
                    "status --gateway: %r %r" % (rc, out[-200:]))
            rc, out, err = run(["status", "--json"], ep, env={"NEXUS_GATEWAY": url})
            g = lines(out)[0].get("gateway", {}) if rc == 0 else {}
            t.check(g.get("up") is True and g.get("health", {}).get("service") == "nexus-gateway",
                    "status --json with NEXUS_GATEWAY: %r" % out[:300])
        finally:
            gw.terminate()
            gw.wait(10)
        rc, out, err = run(["status", "--json", "--gateway", url], ep)
        t.check(rc == 3 and lines(out)[0]["gateway"]["up"] is False,
                "status: exit 3 when the named gateway is down: %r" % out[-200:])

        # ---- pub
        rc, out, err = run(["pub", "cli.one", '{"n":1}', "--ack"], ep)
        t.check(rc == 0 and out.strip().isdigit(), "pub --ack prints the seq: %r %r %r" % (rc, out, err))
        seq1 = int(out)
        rc, out, err = run(["pub", "cli.two", "-", "--json"], ep, stdin='{"from":"stdin"}')
        j = lines(out)
        t.check(rc == 0 and j[0]["topic"] == "cli.two" and j[0]["seq"] == seq1 + 1,
                "pub - --json: %r" % out)
        rc, out, err = run(["pub", "cli.three"], ep)
        t.check(rc == 0 and out == "", "pub without --ack prints nothing")
        # A payload that is not JSON says where; JSON Lines piped into
        # `pub -` are pointed at --lines. Nothing is published.
        rc, out, err = run(["pub", "badpl.x", '{"a":'], ep)
        t.check(rc == 2 and "not valid JSON" in err and "line 1, column 5" in err,
                "pub: bad JSON refused with its place: %r" % err)
        rc, out, err = run(["pub", "badpl.x", "-"], ep, stdin='{"a":1}\n{"a":2}\n')
        t.check(rc == 2 and "line 2, column 1" in err and "--lines" in err,
                "pub -: two JSON lines point at --lines: %r" % err)
        # Deeper than 32 levels no reader can show as JSON: refused, one
        # event or a line of --lines; 32 levels come back as sent.
        rc, out, err = run(["pub", "badpl.x", "-"], ep, stdin="[" * 33 + "]" * 33)
        t.check(rc == 2 and "deeper than 32" in err, "pub: 33 levels refused: %r" % err)
        rc, out, err = run(["pub", "badpl.x", "--lines"], ep, stdin="1\n" + "{}" + "[" * 40 + "]" * 40 + "\n")
        t.check(rc == 2 and "line 2 is not valid JSON" in err, "--lines: bad line 2: %r" % err)
        rc, out, err = run(["pub", "badpl.x", "--lines"], ep, stdin="[" * 40 + "]" * 40 + "\n")
        t.check(rc == 2 and "line 1 nests deeper than 32" in err, "--lines: deep line refused: %r" % err)
        rc, out, err = run(["pub", "deeppl.x", "-"], ep, stdin="[" * 32 + "]" * 32)
        t.eq(rc, 0, "pub: 32 levels published (%r)" % err)
        rc, out, err = run(["events", "--json", "--pattern", "deeppl.x"], ep)
        t.eq([e["payload"] for e in lines(out)], [json.loads("[" * 32 + "]" * 32)],
             "32 levels come back as sent")
        rc, out, err = run(["events", "--json", "--pattern", "badpl.x"], ep)
        t.check(rc == 0 and out.count("\n") == 1, "only the first --lines line was published: %r" % out)
        rc, out, err = run(["pub", "bad topic", "1"], ep)
        t.check(rc == 1 and "topic" in err, "bad topic refused: exit 1: %r" % err)
        # A NUL byte is refused, never the payload cut at it in silence.
        rc, out, err = run(["pub", "nul.x", "-", "--ack"], ep, stdin='{"s":1}\0{"t":2}')
        t.check(rc == 2 and "NUL byte at offset 7" in err, "pub -: a NUL byte: exit 2: %r" % err)
        rc, out, err = run(["pub", "nul.x", "--lines"], ep, stdin='{"s":1}\n{"t"\0:2}\n{"u":3}\n')
        t.check(rc == 2 and "line 2 holds a NUL byte" in err, "--lines: a NUL byte stops: %r" % err)
        rc, out, err = run(["events", "--json", "--pattern", "nul.x"], ep)
        t.eq([e["payload"] for e in lines(out)], [{"s": 1}], "only the line before it was published")
        # A line over max_request is refused locally, said, and the rest go on.
        big = '"' + "x" * (2 * 1024 * 1024 + 100) + '"'
        rc, out, err = run(["pub", "bigl.x", "--lines", "--ack"], ep, stdin="1\n%s\n3\n" % big)
        t.check(rc == 1 and "line 2: " in err and "max_request" in err and len(out.split()) == 2,
                "--lines: an oversized line is reported, the next published: %r %r" % (out, err[:300]))
        rc, out, err = run(["events", "--json", "--pattern", "bigl.x"], ep)
        t.eq([e["payload"] for e in lines(out)], [1, 3], "lines 1 and 3 stored")
        rc, out, err = run(["version", "--json"], ep)
        t.check(rc == 0 and json.loads(out)["version"], "version --json: %r" % out)
        rc, out, err = run(["version", "extra"], ep)
        t.eq(rc, 2, "version takes no arguments: %r" % err)
        rc, out, err = run(["promote", "--endpoint", "%s,tcp://127.0.0.1:9" % ep], ep)
        t.check(rc == 2 and "alone" in err, "promote with a pair's list: usage: %r" % err)
        # "--" ends the options: what follows is arguments, never dropped.
        rc, out, err = run(["pub", "dd.x", "--ack", "--", "-5"], ep)
        t.check(rc == 0 and out.strip().isdigit(), "pub --ack -- -5: %r %r" % (out, err))
        rc, out, err = run(["pub", "dd.x", "--", "-6", "--ack"], ep)
        t.check(rc == 2 and "too many arguments" in err, "after --, --ack is an argument: %r" % err)
        rc, out, err = run(["events", "--json", "--pattern", "dd.x"], ep)
        t.eq([e["payload"] for e in lines(out)], [-5], "-5 published as the payload")

        # ---- events
        rc, out, err = run(["events", "--json", "--pattern", "cli.>"], ep)
        ev = lines(out)
        t.eq([e["topic"] for e in ev], ["cli.one", "cli.two", "cli.three"], "events --json")
        t.eq(sorted(ev[0].keys()), ["payload", "seq", "source", "topic", "ts"], "event keys")
        t.eq(ev[0]["payload"], {"n": 1}, "payload as JSON")
        t.eq(ev[1]["payload"], {"from": "stdin"}, "payload from stdin")
        t.eq(ev[2]["payload"], None, "empty payload is null")
        rc, out, err = run(["events", "--pattern", "cli.>", "--since", str(seq1)], ep)
        t.check(rc == 0 and len(out.splitlines()) == 2 and "cli.two" in out,
                "events --since SEQ (human): %r" % out)
        rc, out, err = run(["events", "--json", "--since", "1h", "--pattern", "cli.one"], ep)
        t.eq(len(lines(out)), 1, "events --since TIME-ago")
        rc, out, err = run(["events", "--json", "--limit", "1", "--desc", "--pattern", "cli.>"], ep)
        t.eq(lines(out)[0]["topic"], "cli.three", "events --desc --limit 1")
        # More events than the broker's history_limit (4): every one, once,
        # in order (the CLI failed on every call before the broker cut the
        # page size it asks for to its limit).
        run(["pub", "many.x", "--lines"], ep, stdin="".join("%d\n" % i for i in range(11)))
        rc, out, err = run(["events", "--json", "--pattern", "many.x"], ep)
        t.eq((rc, [e["payload"] for e in lines(out)]), (0, list(range(11))),
             "events over pages of history_limit (%r)" % err)
        rc, out, err = run(["events", "--json", "--pattern", "many.x", "--desc", "--limit", "6"], ep)
        t.eq([e["payload"] for e in lines(out)], list(range(10, 4, -1)),
             "events --desc --limit 6 over pages of 4")
        # Payloads JSON cannot spell still make one line each: NaN and the
        # infinities as null, a NUL inside a string as \u0000 (both used to
        # make the event vanish from --json output); a source with a
        # newline stays on its line in the human output.
        with Client(b) as cl:
            odd = [msgpack.packb(float("nan")), msgpack.packb(float("inf")),
                   msgpack.packb(float("-inf")), msgpack.packb("a\0b"),
                   msgpack.packb({"k": "x\0y", "n": float("nan")})]
            for p in odd:
                rep = cl.request({"op": "publish", "topic": "odd.x", "payload": p})
                t.check(rep.get("ok"), "publish odd payload: %r" % rep)
            rep = cl.request({"op": "publish", "topic": "odd.src", "source": "two\nlines\x1b[2J",
                              "payload": msgpack.packb(1)})
            t.check(rep.get("ok"), "publish with a newline in the source: %r" % rep)
        rc, out, err = run(["events", "--json", "--pattern", "odd.x"], ep)
        t.eq([e["payload"] for e in lines(out)],
             [None, None, None, "a\0b", {"k": "x\0y", "n": None}],
             "events --json: every odd payload, one JSON line each")
        rc, out, err = run(["sub", "odd.x", "--since", "0", "--count", "5", "--json"], ep)
        t.eq(len(lines(out)), 5, "sub --json: every odd payload (rc %d, %r)" % (rc, err))
        rc, out, err = run(["events", "--pattern", "odd.>"], ep)
        t.check(rc == 0 and len(out.splitlines()) == 6 and "two?lines?[2J" in out
                and "\x1b" not in out,
                "events (human): one line per event, control bytes shown as ?: %r" % out)
        # --resume: each call returns only what is new.
        rc, out, err = run(["events", "--json", "--pattern", "res.>", "--resume", "r1"], ep)
        t.check(rc == 0 and out == "", "resume: nothing yet")
        for i in range(3):
            run(["pub", "res.x", str(i)], ep)
        rc, out, err = run(["events", "--json", "--pattern", "res.>", "--resume", "r1"], ep)
        t.eq([e["payload"] for e in lines(out)], [0, 1, 2], "resume: the three new ones")
        rc, out, err = run(["events", "--json", "--pattern", "res.>", "--resume", "r1"], ep)
        t.eq(out, "", "resume: nothing new")
        run(["pub", "res.x", "3"], ep)
        run(["pub", "other.x", "3"], ep)
        rc, out, err = run(["events", "--json", "--pattern", "res.>", "--resume", "r1",
                            "--limit", "5"], ep)
        t.eq([e["payload"] for e in lines(out)], [3], "resume: only the newest")
        rc, out, err = run(["events", "--resume", "../x"], ep)
        t.eq(rc, 2, "resume name must be plain")
        # --resume goes on oldest first from its cursor: --desc and --since
        # with it were ignored (and the cursor never moved); --until 0 was
        # "no bound" and listed everything.
        for extra in (["--desc"], ["--since", "1"]):
            rc, out, err = run(["events", "--resume", "r1"] + extra, ep)
            t.check(rc == 2 and "--resume" in err and out == "",
                    "events --resume %s: usage error: %r" % (extra[0], err))
        rc, out, err = run(["events", "--until", "0"], ep)
        t.check(rc == 2 and "--until" in err and out == "", "events --until 0: usage: %r" % err)
        # Times as people type them: "10m ago" as --help writes it, a date,
        # and an ISO time with a zone offset.
        for since in ("10m ago", "10m", "2000-01-01", "2000-01-01T01:00:00+01:00"):
            rc, out, err = run(["events", "--json", "--pattern", "res.>", "--since", since], ep)
            t.eq((rc, [e["payload"] for e in lines(out)]), (0, [0, 1, 2, 3]),
                 "events --since %r (%r)" % (since, err))
        rc, out, err = run(["events", "--since", "10 parsecs ago"], ep)
        t.eq(rc, 2, "events --since nonsense: usage")

        # ---- pub --lines: one event per line, pipelined, seqs in order
        n = 5000
        body = "".join('{"i":%d}\n' % i for i in range(n)) + "\n" + '"last"'
        rc, out, err = run(["pub", "lines.x", "--lines", "--ack"], ep, stdin=body, timeout=60)
        seqs = [int(x) for x in out.split()]
        t.check(rc == 0 and len(seqs) == n + 1 and seqs == sorted(seqs) and
                len(set(seqs)) == n + 1, "pub --lines --ack: %d seqs in order, rc %d, %r"
                % (len(seqs), rc, err[-300:]))
        rc, out, err = run(["events", "--json", "--pattern", "lines.x", "--limit", "10000"], ep)
        ev = lines(out)
        t.check([e["seq"] for e in ev] == seqs and
                [e["payload"] for e in ev] == [{"i": i} for i in range(n)] + ["last"],
                "pub --lines: every line stored once, in order, with its payload")
        # A line the broker refuses (over max_payload, 1 MiB) is reported
        # on stderr with its number; the others are stored; exit 1.
        big = '"' + "x" * (1100 << 10) + '"'
        rc, out, err = run(["pub", "lines.y", "--lines", "--json"], ep,
                           stdin='1\n%s\n3\n' % big, timeout=60)
        j = lines(out)
        t.check(rc == 1 and [x["line"] for x in j] == [1, 3] and "line 2" in err,
                "pub --lines with a refused line: %r %r rc %d" % (out, err[-200:], rc))
        rc, out, err = run(["pub", "lines.z", "--lines"], ep, stdin='1\n{oops\n3\n')
        t.check(rc == 2 and "line 2" in err, "pub --lines stops at a line that is not JSON: %r"
                % err)
        rc, out, err = run(["pub", "lines.z", "1", "--lines"], ep)
        t.eq(rc, 2, "pub --lines with a JSON argument is a usage error")

        # ---- sub
        p = subprocess.Popen([NEXUS, "sub", "s.>", "--json", "--count", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, NEXUS_ENDPOINT=ep))
        time.sleep(0.7)
        for i in range(4):
            run(["pub", "s.%d" % i, str(i)], ep)
            run(["pub", "x.%d" % i, str(i)], ep)
        out, err = p.communicate(timeout=15)
        got = lines(out)
        t.eq([e["topic"] for e in got], ["s.0", "s.1", "s.2"], "sub --count 3 --json")
        t.eq(p.returncode, 0, "sub exit 0")
        rc, out, err = run(["sub", "s.>", "--since", "0", "--count", "4", "--json"], ep)
        t.eq([e["payload"] for e in lines(out)], [0, 1, 2, 3], "sub --since 0 replays history")
        # --exec with the event on stdin and the environment.
        outdir = tempfile.mkdtemp()
        cmd = 'cat > %s/$NEXUS_SEQ.json; echo "$NEXUS_TOPIC $NEXUS_SOURCE" > %s/$NEXUS_SEQ.env' % (
            outdir, outdir)
        rc, out, err = run(["sub", "s.>", "--since", "0", "--count", "2", "--exec", cmd], ep)
        files = sorted(os.listdir(outdir))
        t.check(rc == 0 and len(files) == 4, "sub --exec ran twice: %r %r" % (files, err))
        if len(files) == 4:
            first = sorted((f for f in files if f.endswith(".json")), key=lambda f: int(f[:-5]))[0]
            body = json.load(open(os.path.join(outdir, first)))
            env_line = open(os.path.join(outdir, first[:-5] + ".env")).read()
            t.check(body.get("topic") == "s.0" and body.get("payload") == 0, "exec stdin: %r" % body)
            t.check(env_line.strip() == "s.0", "exec env: %r" % env_line)
        shutil.rmtree(outdir, ignore_errors=True)
        # A command a signal killed is said so (it read "exited with 128").
        rc, out, err = run(["sub", "s.>", "--since", "0", "--count", "1", "--exec",
                            "kill -9 $$"], ep)
        t.check(rc == 0 and "killed by signal 9" in err, "exec killed: %r" % err)
        # SIGTERM for sub (systemd, kill) reaches its running command: it
        # waited out a `sleep 30`.
        p = subprocess.Popen([NEXUS, "sub", "s.>", "--since", "0", "--exec", "sleep 30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, NEXUS_ENDPOINT=ep))
        time.sleep(1.0)
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
        t.check(time.time() - t0 < 5, "sub --exec stops on SIGTERM without waiting for its "
                "command (%.1f s)" % (time.time() - t0))
        # SIGINT stops sub cleanly.
        p = subprocess.Popen([NEXUS, "sub", ">"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, NEXUS_ENDPOINT=ep))
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
        t.eq(p.returncode, 0, "sub stops on SIGINT with 0")

        # ---- sessions across calls
        rc, out, err = run(["session", "register", "--name", "ci-script", "--capabilities",
                            "build,deploy", "--metadata", '{"repo":"nexus"}', "--ttl", "10m"], ep)
        sid = out.strip()
        t.check(rc == 0 and sid, "session register prints the id: %r %r" % (out, err))
        t.check(os.path.exists(os.path.join(state, "nexus", "sessions", sid)),
                "secret kept in the state dir")
        mode = os.stat(os.path.join(state, "nexus", "sessions", sid)).st_mode & 0o777
        t.eq(mode, 0o600, "state file is private")
        env = {"NEXUS_SESSION": sid}
        rc, out, err = run(["session", "status", "busy", "--work", "w1", "--json"], ep, env=env)
        t.check(rc == 0 and lines(out)[0] == {"session": sid, "state": "busy"},
                "session status: %r %r" % (out, err))
        rc, out, err = run(["session", "status", "busy", "--text", "on it", "--json"], ep, env=env)
        rc, out, err = run(["session", "get", sid, "--json"], ep)
        rec = lines(out)[0] if rc == 0 else {}
        t.check(rec.get("current_work") == "w1" and rec.get("text") == "on it",
                "without --work the work stays: %r" % rec)
        # '' clears a field (it used to set it to ""), and only that one.
        rc, out, err = run(["session", "status", "busy", "--text", "", "--json"], ep, env=env)
        rc2, out2, err2 = run(["session", "get", sid, "--json"], ep)
        rec = lines(out2)[0] if rc == 0 and rc2 == 0 else {}
        t.check("text" in rec and rec["text"] is None and rec.get("current_work") == "w1",
                "--text '' clears the text: %r %r" % (rec, err))
        rc, out, err = run(["session", "status", "busy", "--work", "w1", "--json"], ep, env=env)
        rc, out, err = run(["session", "status", "asleep"], ep, env=env)
        t.eq(rc, 2, "bad state is usage")
        rc, out, err = run(["session", "get", sid], ep)
        t.check(rc == 0 and re.search(r"registered_at\s+\d{4}-\d\d-\d\dT", out) and
                re.search(r"last_seen\s+\d{4}-", out),
                "session get (human): times as ISO, as sessions shows them: %r" % out)
        rc, out, err = run(["session", "get", sid, "--json"], ep)
        rec = lines(out)[0] if rc == 0 else {}
        t.check(rec.get("name") == "ci-script" and rec.get("state") == "busy"
                and rec.get("metadata") == {"repo": "nexus"}, "session get: %r" % rec)
        rc, out, err = run(["sessions"], ep)
        t.check(rc == 0 and out.splitlines()[0].split()[:3] == ["SESSION", "NAME", "STATE"]
                and sid in out, "sessions table: %r" % out)
        rc, out, err = run(["sessions", "--json", "--capability", "deploy"], ep)
        t.eq([r["session"] for r in lines(out)], [sid], "sessions --capability")
        rc, out, err = run(["sessions", "--json", "--capability", "deploy", "--available"], ep)
        t.eq(lines(out), [], "busy is not available")
        # --available alone: every available, active session (the broker's
        # find); pages with --limit and --after, said on stderr when cut.
        for name in ("pg-s1", "pg-s2", "pg-s3"):
            rc, out, err = run(["session", "register", "--session", name, "--capabilities", "pg",
                                "--ttl", "10m"], ep)
            t.eq(rc, 0, "register %s" % name)
        rc, out, err = run(["sessions", "--json", "--available"], ep)
        got = [r["session"] for r in lines(out)]
        t.check(rc == 0 and {"pg-s1", "pg-s2", "pg-s3"} <= set(got) and sid not in got,
                "sessions --available: the available ones only: %r" % got)
        rc, out, err = run(["sessions", "--json", "--capability", "pg", "--limit", "2"], ep)
        t.eq([r["session"] for r in lines(out)], ["pg-s1", "pg-s2"], "sessions --limit 2")
        t.check(rc == 0 and "2 of 3 matching" in err and "--after 'pg-s2'" in err,
                "sessions cut: stderr says how many and names the next page: %r" % err)
        rc, out, err = run(["sessions", "--json", "--capability", "pg", "--limit", "2",
                            "--after", "pg-s2"], ep)
        t.check(rc == 0 and [r["session"] for r in lines(out)] == ["pg-s3"] and err == "",
                "sessions --after: the last page: %r %r" % (out, err))
        rc, out, err = run(["sessions", "--json", "--limit", "1", "--after", "pg-s1"], ep)
        t.eq([r["session"] for r in lines(out)], ["pg-s2"], "sessions (list) --after --limit 1")
        rc, out, err = run(["sessions", "--json", "--capability", "pg", "--limit", "1",
                            "--after", "pg-s1"], ep)
        t.check("1 shown (3 match in all, from the first)" in err and "--after 'pg-s2'" in err,
                "with --after the count is not '1 of 3' (those before it match too): %r" % err)
        for bad in (["--limit", "0"], ["--limit", "100001"], ["--available", "--all"]):
            rc, out, err = run(["sessions"] + bad, ep)
            t.check(rc == 2 and err, "sessions %s: usage error: %r" % (" ".join(bad), err))
        for name in ("pg-s1", "pg-s2", "pg-s3"):
            run(["session", "unregister"], ep, env={"NEXUS_SESSION": name})
        rc, out, err = run(["claim", "job-9"], ep)
        t.eq(rc, 2, "claim without a session is usage")
        rc, out, err = run(["claim", "job-9", "--session", "bad id!"], ep)
        t.check(rc == 2 and "is no session id" in err,
                "a session id that cannot be one: usage, said so (not 'register it'): %r" % err)
        # pub --session is the source and session register --session the id:
        # one the library refuses is usage, not an event without a source
        # or a session the broker names.
        for cmd in (["pub", "cli.src", "1", "--session", "bad id!"],
                    ["pub", "cli.src", "--lines", "--session", "a.b"],
                    ["session", "register", "--session", "bad id!"]):
            rc, out, err = run(cmd, ep, stdin="1\n")
            t.check(rc == 2 and "is no session id" in err,
                    "%s with a bad --session: usage: %r %r" % (" ".join(cmd[:2]), out, err))
        for cmd in (["claim", "job-9"], ["renew", "job-9", "7"]):
            rc, out, err = run(cmd + ["--ttl", "0"], ep, env=env)
            t.check(rc == 2 and "--ttl 0" in err,
                    "%s --ttl 0: usage (not a 30 s lease in silence): %r" % (cmd[0], err))
        rc, out, err = run(["claims", "--state", "bogus"], ep)
        t.check(rc == 2 and "open, claimed" in err, "claims --state bogus: usage: %r" % err)
        rc, out, err = run(["renew", "--help"], ep)
        t.check(rc == 0 and "--ttl" in out and "claim's own" in out, "renew --help has --ttl: %r" % out)
        rc, out, err = run(["release", "--help"], ep)
        t.check(rc == 0 and "--reason" in out, "release --help has --reason: %r" % out)

        # ---- claims
        rc, out, err = run(["claim", "job-9", "--ttl", "1m", "--description", "nine"], ep, env=env)
        t.check(rc == 0 and out.strip().isdigit(), "claim prints the token: %r %r" % (out, err))
        token = out.strip()
        rc, out, err = run(["session", "register", "--session", "s-rival"], ep)
        t.eq((rc, out.strip()), (0, "s-rival"), "register a given id")
        rc, out, err = run(["claim", "job-9"], ep, env={"NEXUS_SESSION": "s-rival"})
        t.check(rc == 1 and out.strip() == sid and err.count("\n") == 1,
                "denied: exit 1, prints the holder: %r %r" % (out, err))
        rc, out, err = run(["claim", "job-9", "--json"], ep, env={"NEXUS_SESSION": "s-rival"})
        j = lines(out)[0]
        t.check(rc == 1 and j["granted"] is False and j["holder"] == sid, "denied --json: %r" % j)
        rc, out, err = run(["renew", "job-9", "--ttl", "2m", "--json"], ep, env=env)
        t.check(rc == 0 and lines(out)[0]["token"] == int(token), "renew (token looked up): %r %r"
                % (out, err))
        exp2 = lines(out)[0]["expires_at"] if rc == 0 else 0
        rc, out, err = run(["renew", "job-9", "--json"], ep, env=env)
        exp = lines(out)[0]["expires_at"] if rc == 0 else 0
        t.check(rc == 0 and exp2 - 1000000 <= exp <= exp2 + 5000000,
                "a bare renew keeps the last lease (2 m), not claim_ttl: %r %r" % (exp2, exp))
        rc, out, err = run(["renew", "job-9", "999999"], ep, env=env)
        t.check(rc == 1 and "stale" in err.lower() or "token" in err, "stale token refused: %r" % err)
        rc, out, err = run(["claims", "--json", "--holder", sid], ep)
        t.eq([(c["work_id"], c["state"]) for c in lines(out)], [("job-9", "claimed")], "claims --json")
        rc, out, err = run(["claims"], ep)
        t.check(rc == 0 and out.splitlines()[0].startswith("WORK") and "job-9" in out, "claims table")
        t.eq(err, "", "claims: nothing on stderr when every claim is shown")
        # A list cut at --limit says so on stderr, with the next page's --after.
        for wid in ("pg/1", "pg/2", "pg/3"):
            rc, out, err = run(["claim", wid, "--ttl", "1m"], ep, env=env)
            t.eq(rc, 0, "claim %s" % wid)
        rc, out, err = run(["claims", "--json", "--prefix", "pg/", "--limit", "2"], ep)
        t.eq([c["work_id"] for c in lines(out)], ["pg/1", "pg/2"], "claims --limit 2: the first two")
        t.check(rc == 0 and "--after 'pg/2'" in err and "2 of 3 matching" in err,
                "claims cut: stderr says how many and names the next page: %r" % err)
        # The broker's messages in the command's words: no op name, the
        # flag rather than the wire field.
        rc, out, err = run(["claim", "w-ttl", "--ttl", "50ms"], ep, env=env)
        t.check(rc == 1 and err == "nexus: --ttl must be at least 100ms\n", "claim --ttl 50ms: %r" % err)
        rc, out, err = run(["renew", "no-such-item"], ep, env=env)
        t.check(rc == 1 and err == "nexus: no work item 'no-such-item'\n", "renew unknown: %r" % err)
        rc, out, err = run(["claims", "--mine"], ep)
        t.check(rc == 2 and out == "" and "--mine needs a session" in err,
                "claims --mine without a session: usage, not everyone's claims: %r %r" % (out, err))
        rc, out, err = run(["claims", "--json", "--prefix", "pg/", "--limit", "2", "--after", "pg/2"],
                           ep)
        t.check(rc == 0 and [c["work_id"] for c in lines(out)] == ["pg/3"] and err == "",
                "claims --after: the next page, the last: %r %r" % (out, err))
        for wid in ("pg/1", "pg/2", "pg/3"):
            run(["release", wid], ep, env=env)
        rc, out, err = run(["complete", "job-9", token, "--result", '{"ok":true}', "--json"], ep,
                           env=env)
        t.check(rc == 0 and lines(out)[0]["state"] == "completed", "complete: %r %r" % (out, err))
        rc, out, err = run(["reopen", "job-9", "--json"], ep, env=env)
        t.check(rc == 0 and lines(out)[0]["state"] == "open", "reopen: %r %r" % (out, err))
        rc, out, err = run(["reopen", "job-9"], ep, env=env)
        t.check(rc == 1 and err.startswith("nexus: "),
                "reopen of an open item: refused, exit 1: %d %r" % (rc, err))
        rc, out, err = run(["claim", "job-10"], ep, env=env)
        rc, out, err = run(["release", "job-10", "--reason", "nope"], ep, env=env)
        t.eq(rc, 0, "release (token looked up)")
        rc, out, err = run(["release", "job-10"], ep, env=env)
        t.eq(rc, 1, "release of a released item is refused")
        rc, out, err = run(["session", "unregister", "--json"], ep, env=env)
        t.check(rc == 0 and lines(out)[0]["session"] == sid, "unregister: %r %r" % (out, err))
        t.check(not os.path.exists(os.path.join(state, "nexus", "sessions", sid)),
                "unregister forgets the secret")
        rc, out, err = run(["claim", "job-11"], ep, env=env)
        t.eq(rc, 1, "a gone session is refused")
        # The CLI's own heartbeat found that out: the message speaks of the
        # session and what to do, not of an op the user never ran.
        t.check(("session '%s' is not active" % sid) in err and "nexus session register" in err
                and "session.heartbeat" not in err and err.count("\n") == 1,
                "a gone session: the message says so: %r" % err)
        rc, out, err = run(["claim", "job-11"], ep, env={"NEXUS_SESSION": "never-seen"})
        t.check(rc == 1 and "session 'never-seen' is not active" in err,
                "an unknown session: the message says so: %r" % err)
        # s-rival is live, but its secret is not in this state dir.
        rc, out, err = run(["claim", "job-11"], ep,
                           env={"NEXUS_SESSION": "s-rival",
                                "XDG_STATE_HOME": tempfile.mkdtemp(prefix="nexus-cli-empty-")})
        t.check(rc == 1 and "may not act as session 's-rival'" in err
                and "session.heartbeat" not in err,
                "a session without its secret here: the message says so: %r" % err)

    # ---- up: runs nexusd in the foreground, Ctrl-C stops it
    base = free_ports(3)[0]
    datadir = tempfile.mkdtemp(prefix="nexus-up-")
    ep = "tcp://127.0.0.1:%d" % base
    nexusd = os.environ.get("NEXUSD")
    bindir = tempfile.mkdtemp(prefix="nexus-bin-")
    # `up` finds nexusd next to itself: stage both in one directory.
    shutil.copy(NEXUS, os.path.join(bindir, "nexus"))
    if nexusd:
        os.symlink(os.path.abspath(nexusd), os.path.join(bindir, "nexusd"))
    p = subprocess.Popen([os.path.join(bindir, "nexus"), "up", "--no-gateway", "--endpoint", ep,
                          "--data-dir", datadir, "--", "--sync", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ok = False
    for _ in range(100):
        rc, out, err = run(["status", "--timeout", "200ms"], ep)
        if rc == 0:
            ok = True
            break
        time.sleep(0.1)
    t.check(ok, "nexus up serves status")
    if not ok and p.poll() is not None:
        print("nexus up exited %s: %s" % (p.returncode, p.stderr.read()[-2000:]))
    rc, out, err = run(["pub", "up.test", "1", "--ack"], ep)
    t.eq(rc, 0, "publish through nexus up")
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
    t.eq(p.returncode, 0, "nexus up stops on Ctrl-C with 0")
    t.check(os.path.isdir(datadir) and os.listdir(datadir), "data dir used")
    rc, out, err = run(["status", "--timeout", "200ms"], ep)
    t.eq(rc, 3, "broker gone after up stops")
    shutil.rmtree(datadir, ignore_errors=True)
    shutil.rmtree(bindir, ignore_errors=True)
    # ---- event ports that are not the control port + 1 and + 2 (a harness
    # Broker takes three free ports anywhere): commands that only make
    # requests do not wait out --timeout for the event ports; sub reaches
    # them with NEXUS_EVENTS_OUT (NEXUS_EVENTS_IN for publishing).
    with Broker() as ob:
        oep = ob.control
        t0 = time.monotonic()
        for cmd in (["pub", "odd.x", "1", "--ack"], ["events", "--pattern", "odd.x"],
                    ["claims"], ["sessions"]):
            rc, out, err = run(cmd + ["--timeout", "5s"], oep)
            t.eq(rc, 0, "%s with other event ports: %r" % (cmd[0], err))
        took = time.monotonic() - t0
        t.check(took < 8, "four commands in %.1f s, not a --timeout each" % took)
        env = {"NEXUS_EVENTS_OUT": ob.events_out, "NEXUS_EVENTS_IN": ob.events_in}
        sub = subprocess.Popen([NEXUS, "sub", "odd.live", "--count", "1", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, XDG_STATE_HOME=state, NEXUS_ENDPOINT=oep, **env))
        try:
            time.sleep(1.0)
            rc, out, err = run(["pub", "odd.live", "7"], oep, env=env)
            t.eq(rc, 0, "pub with NEXUS_EVENTS_IN: %r" % err)
            out, err = sub.communicate(timeout=15)
            t.check(sub.returncode == 0 and json.loads(out.splitlines()[0])["payload"] == 7,
                    "sub with NEXUS_EVENTS_OUT gets the event: %r %r" % (out, err))
        finally:
            if sub.poll() is None:
                sub.kill()
    # ---- a line the broker refuses is reported in the broker's words (the
    # async path said only the code's: "not allowed: outside ...").
    tf = os.path.join(state, "tokens")
    with open(tf, "w") as f:
        f.write("T1 name=ci sessions=ci pub=build.> sub=build.>\nT2 *\n")
    with Broker(token="T2", extra=["--tokens-file", tf]) as tb:
        rc, out, err = run(["pub", "repo.x", "--lines", "--ack"], tb.control, stdin="1\n2\n",
                           env={"NEXUS_TOKEN": "T1"})
        t.check(rc == 1 and err.count("may not publish to 'repo.x': its pub= is 'build.>'") == 2,
                "--lines: refusals in the broker's words: %r" % err)
finally:
    shutil.rmtree(state, ignore_errors=True)

t.done()
