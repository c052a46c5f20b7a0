"""nexusd's command line, environment and config file.

--help and --version; exit status 2 with a message naming the culprit for
an unknown flag, a bad value, an out-of-bounds value, a missing value, a
missing or bad config file, a key set twice in the file (nexusd and the
gateway), a snapshot_file nexusd could not write and a bad environment
value; -c FILE sets values, NEXUS_KEY overrides the file and a flag overrides both (checked
with --print-config and by the running broker's behaviour); --print-config
output is itself a valid config file; an endpoint already in use makes
nexusd exit 1 with a message, and so does a data_dir that another nexusd
has open or that is a file; a non-loopback bind logs a warning.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (GATEWAY, NEXUSD, Broker, Checks, Client, free_port, free_ports,  # noqa: E402
                     wait_until)

t = Checks()
T0 = time.time()

KEYS = ["data_dir", "control_endpoints", "events_in_endpoints", "events_out_endpoints", "sync",
        "max_payload", "max_request", "retain_events", "retain_bytes", "retain_age", "trim_batch",
        "map_size", "map_max", "out_hwm", "in_hwm", "control_hwm", "batch_max", "batch_bytes",
        "requests_per_turn", "history_limit", "history_scan", "log_level"]

# The tests must not see settings from the caller's environment.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}

tmp = tempfile.mkdtemp(prefix="nexus-config-")


def run(*args, env=None, timeout=10):
    e = dict(BASE_ENV)
    e.update(env or {})
    p = subprocess.run([os.path.abspath(NEXUSD)] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=e, timeout=timeout, cwd=tmp)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def settings(*args, env=None):
    """--print-config as a dict; fails the check when it does not exit 0."""
    rc, out, err = run(*(list(args) + ["--print-config"]), env=env)
    t.eq(rc, 0, "--print-config %r exits 0 (stderr %r)" % (args, err))
    conf = {}
    for line in out.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        conf[k.strip()] = v.strip().strip('"').strip("'")
    return conf


def write(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def usage_error(args, must_contain, what, env=None):
    rc, out, err = run(*args, env=env)
    t.eq(rc, 2, "%s: exit 2" % what)
    for m in must_contain:
        t.check(m in err, "%s: message names %r: %r" % (what, m, err))
    t.check("Traceback" not in err and len(err) < 2000, "%s: short message" % what)
    return err


try:
    # ---- help and version ---------------------------------------------------
    rc, help_out, err = run("--help")
    out = help_out
    t.eq(rc, 0, "--help exits 0")
    for key in KEYS:
        t.check("--" + key.replace("_", "-") + " " in out, "--help lists --%s"
                % key.replace("_", "-"))
    for word in ("-c, --config FILE", "--print-config", "--version", "Exit status"):
        t.check(word in out, "--help mentions %r" % word)
    t.check("(default 1M, 0..64M)" in out, "--help shows defaults and bounds")
    rc2, out2, _ = run("-h")
    t.eq((rc2, out2), (0, out), "-h is --help")

    rc, out, err = run("--version")
    t.eq((rc, out), (0, "nexusd 0.1.0\n"), "--version")

    conf = settings()
    t.check(set(KEYS) <= set(conf), "--print-config prints every key: missing %r"
            % sorted(set(KEYS) - set(conf)))
    # Keys added later must show up in --help as well.
    for key in sorted(set(conf) - set(KEYS)):
        t.check("--" + key.replace("_", "-") + " " in help_out, "--help lists --%s"
                % key.replace("_", "-"))
    t.eq((conf["sync"], conf["max_payload"], conf["retain_age"], conf["data_dir"]),
         ("full", "1M", "30d", "./nexus-data"), "defaults")

    # ---- usage errors: exit 2 naming the culprit -------------------------------
    usage_error(["--no-such-key", "1"], ["--no-such-key", "unknown flag"], "unknown flag")
    usage_error(["-x"], ["'-x'"], "unknown short flag")
    usage_error(["stray"], ["stray"], "stray argument")
    usage_error(["--sync", "sometimes"], ["sync", "sometimes", "full|none"], "bad enum value")
    usage_error(["--max-payload", "lots"], ["max-payload", "lots"], "bad size")
    usage_error(["--retain-events", "-1"], ["retain-events", "-1"], "negative number")
    usage_error(["--retain-age", "3 weeks"], ["retain-age"], "bad duration")
    usage_error(["--max-payload", "1T"], ["max_payload", "1T", "out of bounds", "0..64M"],
                "--max-payload 1T out of bounds")
    usage_error(["--trim-batch", "0"], ["trim_batch", "out of bounds"], "--trim-batch 0")
    usage_error(["--max-payload", "18446744073709551616"], ["max-payload"], "u64 overflow")
    usage_error(["--data-dir", "x", "--sync"], ["sync", "needs a value"], "flag without value")
    usage_error(["--log-level", "loud"], ["log_level"], "bad log level")
    usage_error(["-c"], ["-c", "needs a file name"], "-c without a file")
    missing = os.path.join(tmp, "does-not-exist.conf")
    usage_error(["-c", missing], [missing, "No such file"], "missing config file")
    usage_error(["-c", write("unknown.conf", "max_payload = 2k\nno_such_key = 1\n")],
                ["unknown.conf", "no_such_key"], "unknown key in the file")
    usage_error(["-c", write("badval.conf", "sync = maybe\n")], ["badval.conf", "sync", "maybe"],
                "bad value in the file")
    usage_error(["-c", write("nested.conf", "broker\n    sync = full\n")],
                ["nested.conf", "broker", "nested"], "nested section in the file")
    # A key given twice would be last-one-wins in silence: refused, naming
    # the key and both lines, by nexusd and by the gateway (same parser).
    dup = write("dup.conf", "# pair A\nsync = full\nmax_payload = 2k\nsync = none\n")
    usage_error(["-c", dup], ["dup.conf", "'sync' is set twice (lines 2 and 4)"],
                "a key set twice in the file")
    if os.path.exists(GATEWAY):
        gdup = write("gw-dup.conf", "port = %d\nbroker_timeout = 1s\nport = %d\n"
                     % (free_port(), free_port()))
        p = subprocess.run([os.path.abspath(GATEWAY), "-c", gdup], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10, cwd=tmp, env=BASE_ENV)
        gerr = p.stderr.decode(errors="replace")
        t.check(p.returncode == 2 and "'port' is set twice (lines 1 and 3)" in gerr,
                "nexus-gateway, a key set twice: exit 2 naming it: %d %r" % (p.returncode, gerr))
    # A snapshot_file nexusd could never write (its directory missing, a
    # file where the directory should be, a directory as the file): exit 2
    # at start, not a warning every second for ever.
    usage_error(["--snapshot-file", os.path.join(tmp, "no-such-dir", "state.json")],
                ["snapshot_file", "no-such-dir", "No such file or directory"],
                "snapshot_file in a missing directory")
    usage_error(["--snapshot-file", os.path.join(dup, "state.json")],
                ["snapshot_file", "is not a directory"], "snapshot_file under a file")
    usage_error(["--snapshot-file", tmp], ["snapshot_file", "is a directory"],
                "snapshot_file that is a directory")
    # A file zconfig cannot parse: one message with the line and why, on
    # stderr only, and exit 2 (a leak in the failure path made the ASan
    # build exit 1).
    rc, out, err = run("-c", write("syntax.conf", "sync = none\n  max_payload = 2k\n"))
    t.eq(rc, 2, "unparsable config file: exit 2 (stderr %r)" % err[-300:])
    t.check("syntax.conf: not a valid ZPL file: line 2: " in err,
            "unparsable config file: message names the line: %r" % err[-300:])
    t.eq(out, "", "unparsable config file: nothing on stdout")
    # A NUL byte is not the end of the file (zconfig would stop there and
    # start on defaults).
    with open(os.path.join(tmp, "nul.conf"), "wb") as f:
        f.write(b"\0sync = bogus\n")
    usage_error(["-c", os.path.join(tmp, "nul.conf")], ["nul.conf", "line 1: NUL byte"],
                "config file with a NUL byte")
    usage_error(["-c", tmp], ["Is a directory"], "config file that is a directory")
    usage_error([], ["NEXUS_SYNC", "bogus"], "bad environment value",
                env={"NEXUS_SYNC": "bogus"})
    usage_error([], ["NEXUS_MAX_PAYLOAD", "out of bounds"], "environment out of bounds",
                env={"NEXUS_MAX_PAYLOAD": "1G"})
    # A bad value must not start anything: no data dir was created.
    t.check(not os.path.exists(os.path.join(tmp, "nexus-data")), "usage errors create no store")

    # ---- precedence: defaults < file < environment < flags -------------------
    cfile = write("nexusd.conf", "# test config\nmax_payload = 2k\nsync = none\n"
                  "retain_age = 1.5h\nretain_events = 77\n")
    c = settings("-c", cfile)
    t.eq((c["max_payload"], c["sync"], c["retain_age"], c["retain_events"]),
         ("2k", "none", "90m", "77"), "-c FILE sets values (1.5h prints as 90m)")
    t.eq(c["trim_batch"], "2000", "keys absent from the file keep their defaults")
    c = settings("-c", cfile, env={"NEXUS_MAX_PAYLOAD": "3k"})
    t.eq((c["max_payload"], c["sync"]), ("3k", "none"), "NEXUS_MAX_PAYLOAD overrides the file")
    c = settings("-c", cfile, "--max-payload", "4k", env={"NEXUS_MAX_PAYLOAD": "3k"})
    t.eq(c["max_payload"], "4k", "a flag overrides environment and file")
    c = settings("--max-payload=5k", "-c", cfile, env={"NEXUS_MAX_PAYLOAD": "3k"})
    t.eq(c["max_payload"], "5k", "--key=value form, and -c anywhere on the line")
    c = settings("--max-payload", "1k", "--max-payload", "6k")
    t.eq(c["max_payload"], "6k", "the later flag wins")
    c = settings("--config", cfile, "--sync", "FULL")
    t.eq((c["max_payload"], c["sync"]), ("2k", "full"), "--config long form; choices ignore case")
    c = settings("--config=" + cfile)
    t.eq((c["max_payload"], c["sync"]), ("2k", "none"), "--config=FILE like every --key=value")

    # --print-config output is a config file that reads back the same.
    rc, dump, _ = run("-c", cfile, "--data-dir", "/tmp/x y/'q'", "--print-config")
    t.eq(rc, 0, "--print-config with odd data_dir")
    rc, dump2, err = run("-c", write("dump.conf", dump), "--print-config")
    t.eq((rc, dump2), (0, dump), "--print-config output round-trips through -c (%s)" % err)

    # ---- the running broker obeys the file, the environment and the flags ----
    def payload_limit_probe(broker, limit, what):
        with Client(broker) as cl:
            ok = cl.request({"op": "publish", "topic": "cfg.ok", "payload": b"x" * limit})
            t.check(ok.get("ok") is True, "%s: %d-byte payload accepted" % (what, limit))
            bad = cl.request({"op": "publish", "topic": "cfg.big", "payload": b"x" * (limit + 1)})
            t.eq((bad.get("ok"), bad.get("error")), (False, "too_large"),
                 "%s: %d-byte payload rejected" % (what, limit + 1))
            t.check(str(limit) in bad.get("message", ""), "%s: message gives the limit: %r"
                    % (what, bad.get("message")))
            h = cl.request({"op": "history", "pattern": "cfg.>"})
            t.eq([e["topic"] for e in h["events"]], ["cfg.ok"], "%s: rejected publish not stored"
                 % what)
            st = cl.request({"op": "state"})
            return st

    b = Broker(extra=["-c", cfile])
    try:
        b.start()
        st = payload_limit_probe(b, 2048, "max_payload from the file")
        t.eq(st["sync"], "none", "sync from the file")
    finally:
        b.cleanup()
    b = Broker(extra=["-c", cfile], env={"NEXUS_MAX_PAYLOAD": "3k"})
    try:
        b.start()
        payload_limit_probe(b, 3072, "max_payload from the environment over the file")
    finally:
        b.cleanup()
    b = Broker(extra=["-c", cfile, "--max-payload", "4k", "--sync", "full"],
               env={"NEXUS_MAX_PAYLOAD": "3k"})
    try:
        b.start()
        st = payload_limit_probe(b, 4096, "max_payload from the flag over env and file")
        t.eq(st["sync"], "full", "sync flag over the file")
    finally:
        b.cleanup()

    # A snapshot_file in a data_dir that does not exist yet: nexusd creates
    # data_dir, so the first start is no bad setting.
    fresh = os.path.join(tmp, "fresh-data")
    b = Broker(data_dir=fresh, extra=["--snapshot-file", os.path.join(fresh, "state.json")])
    try:
        b.start()
        t.check(wait_until(lambda: os.path.exists(os.path.join(fresh, "state.json")), timeout=10),
                "snapshot_file in a data_dir created at the first start is written")
    finally:
        b.stop()
        shutil.rmtree(fresh, ignore_errors=True)

    # ---- runtime failures: exit 1 ---------------------------------------------
    with Broker() as a:
        ports = [free_port(), free_port()]
        other = os.path.join(tmp, "other-store")
        for name, args in (
                ("control", ["--control-endpoints", a.control,
                             "--events-in-endpoints", "tcp://127.0.0.1:%d" % ports[0],
                             "--events-out-endpoints", "tcp://127.0.0.1:%d" % ports[1]]),
                ("events-out", ["--control-endpoints", "tcp://127.0.0.1:%d" % ports[0],
                                "--events-in-endpoints", "tcp://127.0.0.1:%d" % ports[1],
                                "--events-out-endpoints", a.events_out])):
            rc, out, err = run("--data-dir", other, *args)
            endpoint = args[args.index("--%s-endpoints" % name) + 1]
            t.eq(rc, 1, "%s endpoint in use: exit 1" % name)
            t.check("cannot bind %s endpoint '%s'" % (name, endpoint) in err
                    and "in use" in err.lower(),
                    "%s endpoint in use: message names it: %r" % (name, err[-400:]))
        # A second broker on the same data_dir would hand out the same seqs
        # and grant claims the first holds: it must refuse to start.
        rc, out, err = run("--data-dir", a.data_dir,
                           "--control-endpoints", "tcp://127.0.0.1:%d" % free_port(),
                           "--events-in-endpoints", "tcp://127.0.0.1:%d" % free_port(),
                           "--events-out-endpoints", "tcp://127.0.0.1:%d" % free_port())
        t.eq(rc, 1, "second broker on the same data_dir: exit 1")
        t.check("cannot start" in err and a.data_dir in err and "in use by another nexusd" in err
                and "(pid %d)" % a.proc.pid in err,
                "second broker on the same data_dir: message names the dir and pid: %r"
                % err[-400:])
        t.check("ready" not in err, "second broker never got ready: %r" % err[-400:])
        # The first broker is unharmed.
        with Client(a) as cl:
            t.check(cl.request({"op": "ping"}).get("ok") is True, "running broker still answers")
            rep = cl.request({"op": "publish", "topic": "after.second", "payload": b"1"})
            t.eq((rep.get("ok"), rep.get("seq")), (True, 1),
                 "and its seqs were not disturbed (no unclean-stop skip)")
        t.eq(a.stop(), 0, "running broker stops cleanly")

    rc, out, err = run("--data-dir", "/proc/nexus-cannot-be-here/data",
                       "--control-endpoints", "tcp://127.0.0.1:%d" % free_port(),
                       "--events-in-endpoints", "tcp://127.0.0.1:%d" % free_port(),
                       "--events-out-endpoints", "tcp://127.0.0.1:%d" % free_port())
    t.eq(rc, 1, "unusable data dir: exit 1")
    t.check("cannot start" in err and "/proc/nexus-cannot-be-here" in err,
            "unusable data dir: message names it: %r" % err[-300:])
    rc, out, err = run("--data-dir", write("plain-file", "x"),
                       "--control-endpoints", "tcp://127.0.0.1:%d" % free_port(),
                       "--events-in-endpoints", "tcp://127.0.0.1:%d" % free_port(),
                       "--events-out-endpoints", "tcp://127.0.0.1:%d" % free_port())
    t.eq(rc, 1, "data dir that is a file: exit 1")
    t.check("plain-file is not a directory" in err, "data dir that is a file: says so: %r"
            % err[-300:])

    # ---- a non-loopback bind warns (it only binds; all traffic stays on 127.0.0.1)
    b = Broker()
    b.ports = (free_port(), free_port(), free_port())
    b.extra = ["--events-out-endpoints", "tcp://0.0.0.0:%d" % b.ports[2]]
    try:
        b.start()
        logs = b.logs()
        t.check("events-out endpoint tcp://0.0.0.0:%d is not loopback" % b.ports[2] in logs,
                "non-loopback bind is warned about: %r" % logs[-600:])
        t.eq(logs.count("is not loopback"), 1, "only the non-loopback endpoint is warned about")
        warn = [line for line in logs.splitlines() if "not loopback" in line]
        t.check(len(warn) == 1 and " nexusd W " in warn[0],
                "the warning is logged at warn level: %r" % warn)
    finally:
        b.cleanup()
    with Broker() as b:
        t.check("not loopback" not in b.logs(), "loopback binds do not warn")

    # ---- the control plane bound beyond loopback warns only when it is open
    # (issue 3: no tokens = open, and nexusd says so when it binds a
    # non-loopback address). 0.0.0.0 also covers 127.0.0.1, which the
    # harness talks to.
    tokens_path = write("control-tokens", "TOK1 w1\n")
    for name, auth, warned, token in (("no tokens", [], True, None),
                                      ("a shared token", ["--token", "s3cret"], False, "s3cret"),
                                      ("a tokens file", ["--tokens-file", tokens_path], False,
                                       "TOK1")):
        b = Broker(token=token)
        b.ports = (free_port(), free_port(), free_port())
        b.extra = ["--control-endpoints", "tcp://0.0.0.0:%d" % b.ports[0]] + auth
        try:
            b.start()
            logs = b.logs()
            line = "control endpoint tcp://0.0.0.0:%d is not loopback" % b.ports[0]
            warn = [x for x in logs.splitlines() if line in x]
            if warned:
                t.check(len(warn) == 1 and " nexusd W " in warn[0] and
                        "no tokens are configured" in warn[0],
                        "open control plane on 0.0.0.0 is warned about: %r" % logs[-600:])
            else:
                t.eq(warn, [], "control plane on 0.0.0.0 with %s: no warning" % name)
            t.check("control bound on" in logs and "0.0.0.0:%d" % b.ports[0] in logs,
                    "control plane with %s did bind 0.0.0.0: %r" % (name, logs[-600:]))
        finally:
            b.cleanup()

    # Settings valid alone but not together: a default lease over the
    # longest lease would refuse every claim that does not name its ttl.
    rc, out, err = run("--claim-ttl", "2d", "--claim-ttl-max", "1d")
    t.eq(rc, 2, "claim_ttl over claim_ttl_max is refused at start")
    t.check("claim_ttl" in err and "claim_ttl_max" in err, "and the error names both: %r" % err)
    # What the settings alone show to be wrong is a usage error (2), not a
    # failed start (1).
    for args, says in ((("--control-endpoints", "foo://x"), "no endpoint"),
                       (("--tokens-file", os.path.join(tmp, "no-such-tokens")), "No such file"),
                       (("--data-dir", ""), "data_dir is empty")):
        rc, out, err = run(*args)
        t.check(rc == 2 and says in err, "%s: exit 2 saying %r: %d %r" % (args, says, rc, err))
    # A pair's settings that cannot work: exit 2, said.
    own = "tcp://127.0.0.1:%d" % free_port()
    for args, says in ((("--replica-of", "tcp://127.0.0.1:9", "--etcd", "http://127.0.0.1:9"),
                        "exclude each other"),
                       (("--replica-of", "foo://x"), "replica_of is no endpoint"),
                       (("--control-endpoints", own, "--replica-of", own), "own control endpoint")):
        rc, out, err = run(*args)
        t.check(rc == 2 and says in err, "%s: exit 2 saying %r: %d %r" % (args, says, rc, err))
    # A tokens file that holds no token (emptied, truncated, only comments)
    # would leave the fabric open while its operator believes it closed:
    # nexusd and the gateway refuse to start (exit 2, said why); so does a
    # line the file's parser refuses, and a NUL byte is named as such.
    for name, text, says in (("empty", b"", "holds no token"),
                             ("comments", b"# revoked all\n\n   # none yet\n", "holds no token"),
                             ("badline", b"T1 w1\nT2 name=x pub=a..b\n", ":2: pub"),
                             ("nul", b"T1 w1\nT2\x00 w2\n", ":2: a NUL byte")):
        path = os.path.join(tmp, "tokens-" + name)
        with open(path, "wb") as f:
            f.write(text)
        rc, out, err = run("--tokens-file", path, timeout=10)
        t.check(rc == 2 and says in err, "nexusd, tokens file %s: exit 2 saying %r: %d %r"
                % (name, says, rc, err))
        if os.path.exists(GATEWAY):
            p = subprocess.run([os.path.abspath(GATEWAY), "--port", str(free_port()), "--tokens-file", path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10, cwd=tmp)
            gerr = p.stderr.decode(errors="replace")
            t.check(p.returncode == 2 and says in gerr,
                    "nexus-gateway, tokens file %s: exit 2 saying %r: %d %r" % (name, says, p.returncode, gerr))
    # A map_max below the default map_size (a small device) lowers it, with
    # a word in the log, as before; it is no reason to refuse the start.
    with Broker(extra=["--map-max", "512M"]) as mb:
        t.check("the map starts at map_max" in mb.logs(),
                "map_max below map_size: started, said so: %r" % mb.logs()[-400:])
    # A list of endpoints may be split by commas and spaces, as the binds
    # split it (the check above must not refuse what the broker takes).
    ports = free_ports(4)
    p = subprocess.Popen([os.path.abspath(NEXUSD), "--data-dir", os.path.join(tmp, "split"), "--control-endpoints",
                          "tcp://127.0.0.1:%d, tcp://127.0.0.1:%d" % (ports[0], ports[1]),
                          "--events-in-endpoints", "tcp://127.0.0.1:%d" % ports[2],
                          "--events-out-endpoints", "tcp://127.0.0.1:%d" % ports[3]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    alive = p.poll() is None
    p.terminate()
    _, perr = p.communicate(timeout=20)
    t.check(alive and perr.decode().count("control bound on") == 2,
            "endpoints split by ', ' are both bound: %r" % perr.decode()[-600:])
    rc, out, err = run("--control-endpoints", "tcp://127.0.0.1:1 foo://x")
    t.check(rc == 2 and "'foo://x'" in err, "a bad one after a space is named: %r" % err)
    # A log level that is none: refused by --print-config too (it printed it,
    # and only the start refused it).
    rc, out, err = run("--log-level", "chatty", "--print-config")
    t.check(rc == 2 and "error|warn|info|debug|warning" in err and out == "",
            "--print-config refuses log_level chatty: %d %r" % (rc, err))
    rc, out, err = run("--log-level", "warn", "--print-config")
    t.check(rc == 0 and "log_level = warn" in out, "log_level warn printed: %r" % out[-300:])
    # NEXUS_CURVE_CERT is a client's certificate (the nexus command's, the
    # gateway's): a broker started from such a shell keeps its own (it took
    # the client's, over its config file's).
    cfile2 = write("curve.conf", 'curve_cert = "/etc/broker_secret"\n')
    conf = settings("-c", cfile2, env={"NEXUS_CURVE_CERT": "/home/me/alice_secret"})
    t.eq(conf.get("curve_cert"), "/etc/broker_secret",
         "NEXUS_CURVE_CERT does not set the broker's curve_cert")
    # -v is debug, and --print-config says so (it printed the file's level).
    rc, out, err = run("--log-level", "warn", "-v", "--print-config")
    t.check(rc == 0 and "log_level = debug" in out, "-v prints log_level debug: %r" % out[-300:])
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print("config test took %.1fs" % (time.time() - T0))
t.done()
