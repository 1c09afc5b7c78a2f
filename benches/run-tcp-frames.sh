#!/usr/bin/env bash
# Runs the tcp-frames measurements recorded in benches/RESULTS.md against a
# release build of shoal-dataplane on loopback. Every run is bounded in time.
#   bash benches/run-tcp-frames.sh [pairs]      (default 200 pairs)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
PAIRS=${1:-200}
build_release
echo "machine: $(machine_description)"

DP_PID=""
start() { # start [taskset cpus] [args...]
    "$@" --stats-interval 0s 2>/tmp/shoal-bench-dp.log &
    DP_PID=$!
    wait_for_line /tmp/shoal-bench-dp.log "shoal-dataplane ready" 50 && return
    echo "data plane did not start"; cat /tmp/shoal-bench-dp.log; exit 1
}
stop() { stop_pid "$DP_PID"; DP_PID=""; }
trap '[ -z "$DP_PID" ] || stop' EXIT

echo; echo "== idle: 10,000 TCP device connections (default config, 2 cores)"
start $DP
$BENCH tcp-frames --mode idle --connections 10000 --processes 2 --duration 5s --server-pid "$DP_PID"
stop

echo; echo "== full speed, 64-byte frames, $PAIRS pairs (server 2 cores, load generator 2 threads on the same 2 CPUs)"
start $DP --config benches/configs/tcp-frames.toml
FULL_JSON=$($BENCH tcp-frames --connections "$PAIRS" --rate 0 --duration 10s --warmup 2s --server-pid "$DP_PID" --json)
echo "$FULL_JSON" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("latency_histogram_v2_base64",None); print(json.dumps({k:d[k] for k in ("measured","latency_us","server","frames")}))'
FULL=$(echo "$FULL_JSON" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["measured"]["frames_received_per_s"]))')
HALF_RATE=$(( FULL / 2 / PAIRS ))
echo; echo "== half that rate: $HALF_RATE frames/s per sender x $PAIRS = $(( HALF_RATE * PAIRS )) frames/s"
$BENCH tcp-frames --connections "$PAIRS" --rate "$HALF_RATE" --duration 10s --warmup 2s --server-pid "$DP_PID" --id-prefix half
echo; echo "== light load: 100 frames/s per sender x $PAIRS"
$BENCH tcp-frames --connections "$PAIRS" --rate 100 --duration 10s --warmup 2s --server-pid "$DP_PID" --id-prefix light
stop

echo; echo "== split CPUs: server --cores 1 on CPU 1, load generator 1 thread on CPU 0"
start taskset -c 1 $DP --cores 1 --config benches/configs/tcp-frames.toml
$BENCH tcp-frames --connections "$PAIRS" --threads 1 --rate 0 --duration 10s --warmup 2s --server-pid "$DP_PID" --id-prefix split
stop
