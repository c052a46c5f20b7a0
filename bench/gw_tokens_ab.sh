#!/bin/bash
# gw_tokens_ab.sh - the WebSocket fan-out through two fabrics side by side,
# one plain and one with tokens (nexusd --tokens-file, the gateway's
# --broker-token), measured alternately ROUNDS times, with the CPU each
# gateway and its broker took over 6 s of each run (perf stat).
# bench/compare's "cost of tokens" on the WebSocket rows, taken apart.
#
#   bench/gw_tokens_ab.sh [BUILD_DIR]     # BUILD_DIR default: build-bench
#   ROUNDS=4 bench/gw_tokens_ab.sh
#   CONTROL=1 bench/gw_tokens_ab.sh       # A/A: the second fabric plain too
#   PERF_RECORD=1 bench/gw_tokens_ab.sh   # also perf record each gateway and
#                                         # broker; prints where the reports are
#
# Prints one line per run: round, fabric, p50/p99, and the task-clock
# (ms over 6 s, all threads) of the gateway and of its broker. Needs perf.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build-bench}
ROUNDS=${ROUNDS:-4}
D=$(mktemp -d "${NEXUS_BENCH_DIR:-/tmp}/nexus-gw-tokens.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT INT TERM
if [ "${PERF_RECORD:-0}" = 1 ]; then
    PERF_DIR=$(mktemp -d "${NEXUS_BENCH_DIR:-/tmp}/nexus-gw-tokens-perf.XXXXXX")
    echo "perf records in $PERF_DIR (gw|nd-FABRIC-ROUND.data; perf report -i FILE)"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Two runs of three consecutive free ports (the brokers), two more (the
# gateways), all held until all are found so that none is handed out twice.
read -r PP PT GP GT <<<"$(python3 "$ROOT/bench/free_ports.py" 3 3 1 1)"
echo "benchtok name=bench sessions=*" >"$D/tokens.txt"
chmod 600 "$D/tokens.txt"
start_fabric() { # port, data, gateway port, extra nexusd args, extra gateway args
    "$B/broker/nexusd" --data-dir "$D/$2" --control-endpoints "tcp://127.0.0.1:$1" \
        --events-in-endpoints "tcp://127.0.0.1:$(($1 + 1))" \
        --events-out-endpoints "tcp://127.0.0.1:$(($1 + 2))" --log-level warn $4 2>>"$D/$2.log" &
    PIDS+=($!)
    sleep 1
    "$B/gateway/nexus-gateway" --broker "tcp://127.0.0.1:$1" --port "$3" \
        --web-root "$ROOT/gateway/web" --log-level warn $5 2>>"$D/$2.gw.log" &
    PIDS+=($!)
    sleep 1
    kill -0 "${PIDS[-1]}" || { cat "$D/$2.gw.log" >&2; exit 1; }
}
start_fabric "$PP" plain "$GP" "" ""
if [ "${CONTROL:-0}" = 1 ]; then
    # The same fabric twice: what the placement and start order alone do.
    start_fabric "$PT" tokens "$GT" "" ""
else
    start_fabric "$PT" tokens "$GT" "--tokens-file $D/tokens.txt" "--broker-token benchtok"
fi
# PIDS: plain nexusd, plain gateway, tokens nexusd, tokens gateway
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="plain tokens"; else order="tokens plain"; fi
    for v in $order; do
        if [ "$v" = plain ]; then port=$GP nd=${PIDS[0]} gw=${PIDS[1]}; else port=$GT nd=${PIDS[2]} gw=${PIDS[3]}; fi
        sync
        sleep 0.5
        (sleep 3; perf stat -e task-clock -x, -p "$gw" -o "$D/gw.stat" -- sleep 6 >/dev/null 2>&1) &
        ps1=$!
        (sleep 3; perf stat -e task-clock -x, -p "$nd" -o "$D/nd.stat" -- sleep 6 >/dev/null 2>&1) &
        ps2=$!
        if [ "${PERF_RECORD:-0}" = 1 ]; then
            (sleep 3; perf record -q -g -p "$gw" -o "$PERF_DIR/gw-$v-$r.data" -- sleep 6 >/dev/null 2>&1) &
            ps3=$!
            (sleep 3; perf record -q -g -p "$nd" -o "$PERF_DIR/nd-$v-$r.data" -- sleep 6 >/dev/null 2>&1) &
            ps4=$!
        fi
        lat=$("$B/bench/gw_bench" --mode fanout --system nexus --port "$port" --clients 1000 --rate 100 \
                --seconds 10 --pid "$gw" 2>/dev/null | grep -o 'p50_ms=[0-9.]* p99_ms=[0-9.]*' || true)
        wait "$ps1" "$ps2" || true
        [ "${PERF_RECORD:-0}" = 1 ] && { wait "$ps3" "$ps4" || true; }
        cpu="gateway_cpu_ms=$(awk -F, '/task-clock/ { printf "%.0f", $1 }' "$D/gw.stat")"
        cpu="$cpu nexusd_cpu_ms=$(awk -F, '/task-clock/ { printf "%.0f", $1 }' "$D/nd.stat")"
        echo "round=$r fabric=$v $lat $cpu"
    done
done
