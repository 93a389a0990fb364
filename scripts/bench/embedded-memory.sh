#!/usr/bin/env bash
# Where the embedded server's memory goes: builds the release binary (unless
# PRESENCE_BIN names one), starts `presence serve` in a fresh data dir, uploads
# TICKETS tickets as ONE NDJSON inventory request, then enters distinct tickets
# with wrk (64 connections, 2 threads) for SECONDS, and prints the server's
# resident memory after each step: RSS now and its peak (VmHWM), from
# /proc/PID/status. Also the server's CPU time per enter, which a shared machine
# disturbs less than throughput, and the store file's size.
#   scripts/bench/embedded-memory.sh [tickets=1000000] [seconds=20] [settle-seconds=10]
# Loopback only; stops by itself.
set -euo pipefail
tickets=${1:-1000000}
seconds=${2:-20}
settle=${3:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=proc.sh
. "$root/scripts/bench/proc.sh"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [ -z "${PRESENCE_BIN:-}" ]; then
  cargo build --release -p presence --manifest-path "$root/Cargo.toml" >&2
fi
bin=${PRESENCE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/presence}
work=$(mktemp -d)
key=bench-$RANDOM$RANDOM
venue=MEM-$RANDOM$RANDOM
now=$(($(date +%s) * 1000))
per_thread=$(((tickets + 1) / 2))
python3 - "$work/inventory.ndjson" "$per_thread" "$now" "$venue" <<'PY'
import sys
path, per_thread, now, venue = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(path, "w") as f:
    f.write('{"type":"venue","id":"%s","name":"Bench Arena"}\n' % venue)
    f.write('{"type":"event","id":"%s-E","venueId":"%s","doorsOpen":%d,"endsAt":%d}\n' % (venue, venue, now - 3600000, now + 36000000))
    for t in (1, 2):
        for n in range(1, per_thread + 1):
            f.write('{"type":"ticket","token":"%s-T%d-%d","eventId":"%s-E","places":["A:%d:%d"]}\n' % (venue, t, n, venue, n // 100, n % 100))
PY
PRESENCE_KEY_RATE=0 "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --api-key "$key" >"$work/out" 2>"$work/log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q PRESENCE_URL= "$work/out" && break; sleep 0.1; done
url=$(sed -n 's/^PRESENCE_URL=//p' "$work/out")
memory() {
  awk -v step="$1" '/^VmRSS/ {rss = $2} /^VmHWM/ {hwm = $2}
    END {printf "%-28s RSS %4d MiB, peak %4d MiB\n", step ":", rss / 1024, hwm / 1024}' "/proc/$server/status"
}
cpu() { cpu_ticks "$server"; }
memory "started"
start=$(date +%s.%N)
curl -sf -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" --data-binary @"$work/inventory.ndjson" >/dev/null
end=$(date +%s.%N)
memory "inventory applied"
echo "inventory: $((2 * per_thread)) tickets in one request, $(python3 -c "print(round($end - $start, 2))") s"
sleep "$settle"
memory "${settle} s later"
device=$(curl -sf -X POST "$url/presence/v1/device/init" -H "X-Api-Key: $key" \
  -d "{\"venueId\":\"$venue\",\"name\":\"bench\",\"mac\":\"00:00:00:00:00:01\",\"ip\":\"127.0.0.1\",\"gateName\":\"Bench Gate\",\"serial\":\"b\",\"model\":\"b\"}")
DEVICE_ID=$(echo "$device" | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["id"])')
GATE_ID=$(echo "$device" | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["gateId"])')
export DEVICE_ID GATE_ID API_KEY=$key SCAN_TIME=$now VENUE=$venue
cpu_before=$(cpu)
wrk -t2 -c64 -d"${seconds}s" --latency -s "$root/scripts/bench/enter.lua" "$url" >"$work/wrk"
cpu_after=$(cpu)
grep -E "Requests/sec|^[A-Z_]+: |^p50" "$work/wrk"
entered=$(sed -n 's/^OKAY: //p' "$work/wrk")
ticks=$(getconf CLK_TCK)
echo "server CPU: $(python3 -c "print(round(($cpu_after - $cpu_before) / $ticks, 1))") s, $(python3 -c "print(round(($cpu_after - $cpu_before) / $ticks * 1e6 / max(${entered:-0}, 1)))") µs per enter"
memory "after ${entered:-0} enters"
sleep "$settle"
memory "${settle} s later"
echo "store file: $(du -m "$work/data/presence.redb" | cut -f1) MiB"
