#!/bin/sh
# gw_run.sh - the gateway's bars (issue 5): starts nexusd and nexus-gateway
# on free loopback ports with a fresh data directory, runs gw_bench's
# fan-out RUNS times and the idle-connections case once, stops both.
#
#   bench/gw_run.sh [BUILD_DIR]         # BUILD_DIR default: build/
#   RUNS=1 bench/gw_run.sh
#
# Each gw_bench run prints a RESULT line (docs/benchmarks.md). The idle
# case opens 10 000 connections: it runs only where the open-files limit
# allows that, and says so when it does not.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${1:-${BUILD_DIR:-$ROOT/build}}
RUNS=${RUNS:-3}
BENCH_DATA=${NEXUS_BENCH_DIR:-/tmp}

# Three consecutive free ports for nexusd (control, events in, events out)
# and one for the gateway: the gateway finds the event ports after --broker's.
ports=$(python3 "$ROOT/bench/free_ports.py" 3 1)
set -- $ports
CP=$1
GP=$2
DATA=$(mktemp -d "$BENCH_DATA/nexus-gw-bench.XXXXXX")
NEXUSD_PID=
GW_PID=

cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [ -n "$NEXUSD_PID" ] && kill "$NEXUSD_PID" 2>/dev/null && wait "$NEXUSD_PID" 2>/dev/null
    rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

# Waits up to 5 s for a TCP port to accept.
wait_port() {
    python3 - "$1" <<'EOF'
import socket, sys, time
end = time.time() + 5
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("gw_run.sh: port %s did not open" % sys.argv[1])
EOF
}

# The gateway holds 10 000 connections in the idle case and inherits this
# shell's open-files limit: raise it to the hard limit before it starts.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$BUILD_DIR/broker/nexusd" --data-dir "$DATA/broker" \
    --control-endpoints "tcp://127.0.0.1:$CP" \
    --events-in-endpoints "tcp://127.0.0.1:$((CP + 1))" \
    --events-out-endpoints "tcp://127.0.0.1:$((CP + 2))" \
    --log-level warn 2>"$DATA/nexusd.log" &
NEXUSD_PID=$!
wait_port "$CP"
# A fresh gateway for each case, so the idle case's RSS is its own.
start_gateway() {
    "$BUILD_DIR/gateway/nexus-gateway" --broker "tcp://127.0.0.1:$CP" --port "$GP" \
        --web-root "$ROOT/gateway/web" --log-level warn 2>>"$DATA/gateway.log" &
    GW_PID=$!
    wait_port "$GP"
}
stop_gateway() {
    kill "$GW_PID" && wait "$GW_PID" || echo "# nexus-gateway did not stop cleanly"
    GW_PID=
}
start_gateway

status=0
i=0
while [ "$i" -lt "$RUNS" ]; do
    "$BUILD_DIR/bench/gw_bench" --mode fanout --system nexus --port "$GP" --clients 1000 \
        --rate 100 --seconds 10 --pid "$GW_PID" || status=1
    echo
    i=$((i + 1))
done
stop_gateway
start_gateway
if [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 10100 ]; then
    "$BUILD_DIR/bench/gw_bench" --mode idle --system nexus --port "$GP" --clients 10000 \
        --hold 5 --pid "$GW_PID" || status=1
    echo
else
    echo "# idle: skipped, the open-files limit is $(ulimit -n) (10 000 connections need more)"
fi
exit $status
