#!/usr/bin/env bash
# A first throughput figure of the embedded server: enters of distinct tickets
# through the public HTTP API, driven by wrk (Debian package `wrk`).
#   scripts/bench/embedded-wrk.sh [connections=64] [seconds=20] [tickets-per-thread=400000]
# Builds the release binary, starts `presence serve` on a free port in a fresh
# data dir, loads the tickets through POST /admin/v1/inventory, configures a
# device, runs wrk, and prints wrk's report. Loopback only; stops by itself.
set -euo pipefail
connections=${1:-64}
seconds=${2:-20}
per_thread=${3:-400000}
threads=2
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release -p presence --manifest-path "$root/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release/presence
work=$(mktemp -d)
key=bench-$RANDOM$RANDOM
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --api-key "$key" >"$work/out" 2>"$work/log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q PRESENCE_URL= "$work/out" && break; sleep 0.1; done
url=$(sed -n 's/^PRESENCE_URL=//p' "$work/out")
now=$(($(date +%s) * 1000))
python3 - "$work/inventory.ndjson" "$threads" "$per_thread" "$now" <<'PY'
import sys
path, threads, per_thread, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(path, "w") as f:
    f.write('{"type":"venue","id":"BENCH","name":"Bench Arena"}\n')
    f.write('{"type":"event","id":"BENCH-E","venueId":"BENCH","doorsOpen":%d,"endsAt":%d}\n' % (now - 3600000, now + 36000000))
    for t in range(1, threads + 1):
        for n in range(1, per_thread + 1):
            f.write('{"type":"ticket","token":"T%d-%d","eventId":"BENCH-E","places":["A:%d:%d"]}\n' % (t, n, n // 100, n % 100))
PY
start=$(date +%s.%N)
curl -sf -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" --data-binary @"$work/inventory.ndjson" >/dev/null
end=$(date +%s.%N)
echo "inventory: $((threads * per_thread)) tickets loaded in $(echo "$end - $start" | bc) s"
device=$(curl -sf -X POST "$url/presence/v1/device/init" -H "X-Api-Key: $key" \
  -d '{"venueId":"BENCH","name":"bench","mac":"00:00:00:00:00:01","ip":"127.0.0.1","gateName":"Bench Gate","serial":"b","model":"b"}')
export DEVICE_ID=$(echo "$device" | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["id"])')
export GATE_ID=$(echo "$device" | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["gateId"])')
export API_KEY=$key SCAN_TIME=$now
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$root/scripts/bench/enter.lua" "$url"
echo "server RSS: $(ps -o rss= -p $server) KiB"
