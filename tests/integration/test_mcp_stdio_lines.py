#!/usr/bin/env python3
"""`nexus mcp` reads one JSON-RPC message a line from stdin; a line over
its 16 MiB limit is refused with one parse error, and the rest of that
line is skipped, never read as messages of its own (it gave three errors,
the last for the line's tail taken as a message). The messages after it
are served. Against a real nexusd; every wait is bounded.
"""

import json
import os
import subprocess
import sys

from harness import Broker, Checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("NEXUS_BUILD_DIR", os.path.join(ROOT, "build"))
NEXUS = os.environ.get("NEXUS_CLI") or os.path.join(BUILD, "sdk", "nexus")

t = Checks()
b = Broker().start()
try:
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(b.data_dir, "state"))
    p = subprocess.Popen([NEXUS, "mcp", "--endpoint", b.control, "--session", "lines"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    # 40 MiB: two and a half times the limit, so the old code refused it
    # twice and then parsed its tail.
    big = b'{"jsonrpc":"2.0","id":2,"method":"ping","pad":"' + b"y" * (40 << 20) + b'"}'
    try:
        out, err = p.communicate(json.dumps(init).encode() + b"\n" + big + b"\n" +
                                 b'{"jsonrpc":"2.0","id":3,"method":"ping"}\n', timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    replies = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    t.eq([r.get("id") for r in replies], [1, None, 3],
         "initialize, one error for the long line, the ping after it: %r"
         % [str(r)[:120] for r in replies])
    errors = [r for r in replies if "error" in r]
    t.check(len(errors) == 1 and errors[0]["error"]["code"] == -32700
            and "16 MiB" in errors[0]["error"]["message"],
            "the one error is a parse error naming the limit: %r" % errors)
    t.eq(p.returncode, 0, "it ends on its own when stdin closes (stderr %r)" % err.decode()[-500:])
finally:
    b.cleanup()
t.done()
