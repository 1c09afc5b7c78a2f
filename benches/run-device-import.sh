#!/usr/bin/env bash
# Imports N devices (default 1,000,000) with `shoalctl device import` into a
# release build of both planes on loopback, and reports the import's time
# and both planes' memory before and after (recorded in benches/RESULTS.md).
#   bash benches/run-device-import.sh [devices]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
N=${1:-1000000}
cargo build --release -p shoal-controlplane -p shoal-dataplane -p shoal-cli >/dev/null
BIN=$TARGET_DIR/release
echo "machine: $(machine_description)"
WORK=$(mktemp -d /tmp/shoal-import.XXXXXX)
cleanup() {
    [[ -n "${DP_PID:-}" ]] && kill -TERM "$DP_PID" 2>/dev/null || true
    [[ -n "${CP_PID:-}" ]] && kill -TERM "$CP_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_for() { # wait_for FILE PATTERN
    wait_for_line "$1" "$2" && return
    echo "no '$2' in $1"; cat "$1"; exit 1
}

echo "generating $N devices"
python3 - "$N" > "$WORK/devices.csv" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write("id,product,secret\n")
for i in range(n):
    out.write(f"meter-{i:07d},meter,secret-token-{i:07d}\n")
PY
ls -l "$WORK/devices.csv" | awk '{print "csv bytes:", $5}'

"$BIN/shoal-controlplane" run --state-dir "$WORK/cp" --socket-dir "$WORK" 2>"$WORK/cp.log" &
CP_PID=$!
wait_for "$WORK/cp.log" "shoal-controlplane ready"
"$BIN/shoal-dataplane" --control "$WORK/dataplane.sock" --state-dir "$WORK/dp" --stats-interval 0s 2>"$WORK/dp.log" &
DP_PID=$!
wait_for "$WORK/dp.log" "applied version"
CTL=("$BIN/shoalctl" --socket "$WORK/control.sock")
"${CTL[@]}" product add meter >/dev/null
sleep 1
CP0=$(rss_kib $CP_PID); DP0=$(rss_kib $DP_PID)
echo "before: control plane RSS ${CP0} KiB, data plane RSS ${DP0} KiB"

START=$(date +%s.%N)
"${CTL[@]}" device import "$WORK/devices.csv"
END=$(date +%s.%N)
sleep 2
CP1=$(rss_kib $CP_PID); DP1=$(rss_kib $DP_PID)
python3 - "$START" "$END" "$N" "$CP0" "$CP1" "$DP0" "$DP1" <<'PY'
import sys
s, e, n, cp0, cp1, dp0, dp1 = map(float, sys.argv[1:])
secs = e - s
print(f"import: {int(n):,} devices in {secs:.1f} s ({n/secs:,.0f} devices/s)")
print(f"control plane RSS: {cp0/1024:.1f} MiB -> {cp1/1024:.1f} MiB ({(cp1-cp0)*1024/n:.0f} bytes/device)")
print(f"data plane RSS:    {dp0/1024:.1f} MiB -> {dp1/1024:.1f} MiB ({(dp1-dp0)*1024/n:.0f} bytes/device)")
PY
"${CTL[@]}" status | head -20
du -sh "$WORK/cp" "$WORK/dp" | sed 's/^/on disk: /'
