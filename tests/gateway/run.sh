#!/bin/sh
# Runs the gateway's JavaScript tests (WebSocket protocol, HTTP, dashboard in
# Debian's chromium). Installs what it needs: npm packages from the lock
# file, and chromium via apt-get when /usr/bin/chromium is missing.
#
#   tests/gateway/run.sh [node --test args...]   e.g. run.sh http.test.js
#   tests/gateway/run.sh --deps-only               installs, runs nothing
#
# Binaries: $NEXUSD, $NEXUS_GATEWAY and $NEXUS_CLI, else build/broker/nexusd,
# build/gateway/nexus-gateway and build/sdk/nexus from the source tree. Screenshots go to
# tests/artifacts/.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "run.sh: installing nodejs and npm" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

# Node 18 (Debian 12's) has node:test and fetch; running files two at a
# time and per-test timeouts need Node 20, so older ones run them in turn.
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "run.sh: Node $major is too old (18 or newer needed)" >&2
    exit 1
fi

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
    echo "run.sh: installing Debian's chromium" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# npm packages (ws, playwright-core, @modelcontextprotocol/sdk: the
# official MCP client); never downloads browsers. One install at a time on
# this machine (tests/integration/test_mcp_hosts.py runs this too).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec 9>/tmp/nexus-npm.lock
flock -w 600 9 || true
if [ ! -d node_modules/ws ] || [ ! -d node_modules/playwright-core ] || \
   [ ! -d node_modules/@modelcontextprotocol/sdk ] || \
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    else
        npm install --no-audit --no-fund --loglevel=error
    fi
fi

flock -u 9
if [ "${1:-}" = "--deps-only" ]; then
    exit 0
fi
mkdir -p ../artifacts

if [ "$#" -eq 0 ]; then
    set -- ws_protocol.test.js http.test.js dashboard.test.js ws_events.test.js mcp.test.js \
        permissions.test.js store_id.test.js limits.test.js replay.test.js
fi
if [ "$major" -ge 20 ]; then
    exec node --test --test-concurrency=2 --test-timeout=600000 "$@"
fi
exec node --test "$@"
