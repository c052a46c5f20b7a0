#!/bin/bash
# tokens_ab.sh - the cost of tokens on one compare_nexus workload, read
# against the noise: three brokers side by side, A and B plain (an A/A
# pair: what two identical brokers differ by) and T with a tokens file
# (its client gets NEXUS_TOKEN); each round runs the workload once against
# each, in an order that rotates. bench/compare's "cost of tokens" column,
# taken apart for the row where it is noisiest.
#
#   bench/tokens_ab.sh [BUILD_DIR]       # BUILD_DIR default: build-bench
#   ROUNDS=15 bench/tokens_ab.sh
#   ARGS="--workload ack --clients 16 --n 16000" bench/tokens_ab.sh
#
# Default workload: pipelined acknowledged publish from 1 client
# (--workload ack_async --clients 1 --window 1024 --n 200000). Prints each
# round's figures, then the medians over the rounds of A/B (the noise),
# A/T and B/T (the cost of tokens, above 1: tokens slower).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build-bench}
ROUNDS=${ROUNDS:-12}
ARGS=${ARGS:---workload ack_async --clients 1 --window 1024 --n 200000 --size 128}
D=$(mktemp -d "${NEXUS_BENCH_DIR:-/tmp}/nexus-tokens-ab.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT INT TERM
# Three runs of three consecutive free ports (control, events in, out).
read -r PA PB PT <<<"$(python3 "$ROOT/bench/free_ports.py" 3 3 3)"
TOKEN="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
echo "$TOKEN name=bench sessions=*" >"$D/tokens.txt"
chmod 600 "$D/tokens.txt"
start_broker() { # port, name, extra nexusd args (split into words)
    # shellcheck disable=SC2086
    "$B/broker/nexusd" --data-dir "$D/$2" --control-endpoints "tcp://127.0.0.1:$1" \
        --events-in-endpoints "tcp://127.0.0.1:$(($1 + 1))" \
        --events-out-endpoints "tcp://127.0.0.1:$(($1 + 2))" --log-level warn $3 \
        2>>"$D/$2.log" &
    PIDS+=($!)
}
start_broker "$PA" A ""
start_broker "$PB" B ""
start_broker "$PT" T "--tokens-file $D/tokens.txt"
sleep 1
declare -A PORT=([A]=$PA [B]=$PB [T]=$PT)
ORDER=(A B T)
OUT="$D/results"
for r in $(seq "$ROUNDS"); do
    k=$((r % 3))
    line="round $r:"
    for s in "${ORDER[@]:$k}" "${ORDER[@]:0:$k}"; do
        sync
        sleep 0.3
        tok=()
        [ "$s" = T ] && tok=(env "NEXUS_TOKEN=$TOKEN")
        # shellcheck disable=SC2086
        v=$("${tok[@]}" "$B/bench/compare_nexus" --endpoint "tcp://127.0.0.1:${PORT[$s]}" \
            $ARGS --reps 1 | sed -n 's/^RESULT .* value=\([0-9.]*\) .*/\1/p')
        line="$line $s=${v:-failed}"
    done
    echo "$line" | tee -a "$OUT"
done
python3 - "$OUT" <<'PY'
import re, statistics, sys
rows = [dict((k, float(v)) for k, v in re.findall(r"([ABT])=([0-9.]+)", l))
        for l in open(sys.argv[1])]
rows = [r for r in rows if len(r) == 3]
if not rows:
    raise SystemExit("no complete round")
def show(name, xs):
    print(f"{name}: median {statistics.median(xs):.3f} (rounds {min(xs):.2f}-{max(xs):.2f})")
show("A/B, two plain brokers (the noise)", [r["A"] / r["B"] for r in rows])
show("A/T, plain / tokens (the cost)", [r["A"] / r["T"] for r in rows])
show("B/T, plain / tokens (the cost)", [r["B"] / r["T"] for r in rows])
for s in "ABT":
    print(f"{s}: median {statistics.median(r[s] for r in rows):.0f}")
PY
