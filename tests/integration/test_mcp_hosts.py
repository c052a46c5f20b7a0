#!/usr/bin/env python3
"""Two agents on two hosts coordinate over MCP.

Three hosts on one machine: network namespaces joined to this one by veth
pairs (tests/integration/netns.py, nets 30-32), routed so that they reach
each other. Host A runs nexusd and nexus-gateway, bound to A's address,
with a token. Agent B runs `nexus mcp` on host B (stdio), reaching the
broker on A over TCP. Agent C runs on host C with nothing but Node and the
official MCP SDK client (tests/gateway/mcp_two_hosts.js), speaking
Streamable HTTP to A's /mcp. B claims a unit of work, C is denied and
told who holds it, B releases it and sends C a direct message, which
C's parked wait_for_events receives; C claims it with a higher fencing
token, completes it and answers B directly.

Needs root (CAP_NET_ADMIN), `ip`, and Node (tests/gateway/run.sh
--deps-only installs it and the npm packages): exits 77 (skipped) where
namespaces cannot be made.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import netns
from harness import Broker, Checks
from netns import Host

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("NEXUS_BUILD_DIR", os.path.join(ROOT, "build"))
NEXUS = os.environ.get("NEXUS_CLI") or os.path.join(BUILD, "sdk", "nexus")
GATEWAY = os.environ.get("NEXUS_GATEWAY") or os.path.join(BUILD, "gateway", "nexus-gateway")
TOKEN = "two-hosts-token"


def gateway_up(url, deadline):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200 and json.load(r)["broker"]["status"] == "up":
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def run():
    why = netns.available()
    if why:
        print("skipped: network namespaces are not available here (%s)" % why)
        return 77
    deps = subprocess.run(["sh", os.path.join(ROOT, "tests", "gateway", "run.sh"), "--deps-only"],
                          capture_output=True, text=True, timeout=900)
    if deps.returncode != 0:
        sys.stderr.write("cannot install Node and the MCP SDK:\n%s%s" % (deps.stdout, deps.stderr))
        return 1
    t = Checks()
    a, b, c = Host("mcpa", 30, routed=True), Host("mcpb", 31, routed=True), Host("mcpc", 32,
                                                                                     routed=True)
    gw = None
    state = tempfile.mkdtemp(prefix="nexus-mcp-hosts-")
    try:
        for h in (a, b, c):
            h.create()
        with Broker(host=a.there, prefix=a.prefix(), ports=(8451, 8452, 8453),
                    extra=["--token", TOKEN], token=TOKEN) as broker:
            gw_log = open(os.path.join(state, "gateway.log"), "wb")
            gw = subprocess.Popen(a.prefix() + [
                GATEWAY, "--listen", a.there, "--port", "8450", "--broker", broker.control,
                "--broker-token", TOKEN, "--token", TOKEN,
                "--web-root", os.path.join(ROOT, "gateway", "web")],
                stdout=gw_log, stderr=gw_log)
            url = "http://%s:8450" % a.there
            if not t.check(gateway_up(url, time.time() + 15), "the gateway on host A answers"):
                return t.done()
            env = dict(os.environ, GATEWAY=url, TOKEN=TOKEN, BROKER=broker.control,
                       HOST_B_PREFIX=json.dumps(b.prefix()), NEXUS_CLI=NEXUS, STATE=state)
            r = subprocess.run(c.prefix() + ["node", os.path.join(ROOT, "tests", "gateway",
                                                                  "mcp_two_hosts.js")],
                               capture_output=True, text=True, timeout=120, env=env)
            line = (r.stdout.strip().splitlines() or ["{}"])[-1]
            try:
                out = json.loads(line)
            except ValueError:
                out = {"ok": False, "error": r.stdout + r.stderr}
            if not out.get("ok"):
                sys.stderr.write("agents: %s\n%s\n" % (json.dumps(out, indent=1), r.stderr[-3000:]))
                with open(os.path.join(state, "gateway.log")) as f:
                    sys.stderr.write("gateway:\n" + f.read()[-3000:])
                sys.stderr.write("broker:\n" + broker.logs()[-3000:])
            t.check(r.returncode == 0 and out.get("ok"),
                    "agent B (stdio, host B) and agent C (HTTP, host C) coordinate a claim and "
                    "exchange direct messages")
            # Agent C reached the fabric from another host over HTTP only:
            # the broker saw both sessions from the gateway and host B.
            with urllib.request.urlopen(urllib.request.Request(
                    url + "/sessions/active", headers={"Authorization": "Bearer " + TOKEN}),
                    timeout=3) as resp:
                names = {s["session"] for s in json.load(resp)["sessions"]}
            t.check({"agent-b", "agent-c"} <= names, "both sessions are on the fabric: %s" % names)
    finally:
        if gw:
            gw.terminate()
            try:
                gw.wait(timeout=10)
            except subprocess.TimeoutExpired:
                gw.kill()
        for h in (a, b, c):
            h.destroy()
    return t.done()


def main():
    with netns.lock():
        return run()


if __name__ == "__main__":
    sys.exit(main())
