#!/bin/sh
# run_all.sh - builds nexus (RelWithDebInfo) and runs every benchmark that
# has a bar (issues 2, 3 and 5), printing the machine, the date and the
# commit first. Each benchmark starts its own nexusd (and, for the gateway's,
# nexus-gateway) on free loopback ports with a fresh data directory.
#
#   bench/run_all.sh                 # 3 runs of each, medians reported
#   RUNS=1 bench/run_all.sh          # quicker
#   BUILD_DIR=/tmp/b bench/run_all.sh
# NEXUS_BENCH_DIR picks where the data directories go (default /tmp); it
# should be on the disk you want fsync measured on, not a tmpfs.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RUNS=${RUNS:-3}

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j2 --target nexusd nexus-gateway bench_pubsub bench_ref bench_ack bench_latency \
    bench_history bench_claims bench_fsync gw_bench >/dev/null

BENCH=$BUILD_DIR/bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -sr)"
echo "date:    $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
echo "commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "data:    ${NEXUS_BENCH_DIR:-/tmp} ($(df -T "${NEXUS_BENCH_DIR:-/tmp}" | awk 'NR==2 {print $2}'))"
echo "runs:    $RUNS per figure (medians)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before)"
echo

status=0
# Fire-and-forget alternates with the reference loop of ANCHORS.md
# (bench_ref): the host's speed moves between hours, the ratio much less.
"$BENCH/bench_pubsub" --runs "$RUNS" --ref "$BENCH/bench_ref" || status=1
# The floor under an acknowledged publish, on the same disk, right before
# it (issue 16: ack one-at-a-time p50 <= fsync_prealloc_4k p50 + 250 us).
"$BENCH/bench_fsync" || status=1
"$BENCH/bench_ack" --runs "$RUNS" || status=1
"$BENCH/bench_latency" --runs "$RUNS" || status=1
# bench_history fills a 1M-event store once per run; run it RUNS times.
i=0
while [ "$i" -lt "$RUNS" ]; do
    "$BENCH/bench_history" || status=1
    i=$((i + 1))
done
# Claims (issue 3): 1, 16 and 64 clients, one pair in flight per client
# and eight; one line each, RUNS times.
i=0
while [ "$i" -lt "$RUNS" ]; do
    BENCH_SECONDS=${BENCH_SECONDS:-5} BENCH_CLIENTS=${BENCH_CLIENTS:-1,16,64} \
        BENCH_WINDOWS=${BENCH_WINDOWS:-1,8} "$BENCH/bench_claims" || status=1
    i=$((i + 1))
done
# Gateway (issue 5): fan-out RUNS times, then 10 000 idle connections.
RUNS=$RUNS "$ROOT/bench/gw_run.sh" "$BUILD_DIR" || status=1
echo
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, after)"
exit $status
