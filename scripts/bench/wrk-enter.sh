#!/usr/bin/env bash
# Enters distinct tickets through the public HTTP API of any running Presence
# (embedded or distributed), driven by wrk (Debian package `wrk`):
#   scripts/bench/wrk-enter.sh URL API_KEY [connections=64] [seconds=20] [tickets-per-thread=400000]
# Loads the tickets through POST /admin/v1/inventory (timed), configures one
# device, runs wrk with 2 threads and prints its report with the status counts.
# The key must not be rate-limited, or most scans come back RATE_LIMITED: no
# PRESENCE_KEY_RATE for the server (the gateway, in distributed mode), or
# `rate = 0` for the key in the keys file. Loopback only; stops by itself.
set -euo pipefail
url=$1
key=$2
connections=${3:-64}
seconds=${4:-20}
per_thread=${5:-400000}
threads=2
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now=$(($(date +%s) * 1000))
venue=BENCH-$RANDOM$RANDOM
python3 - "$work/inventory.ndjson" "$threads" "$per_thread" "$now" "$venue" <<'PY'
import sys
path, threads, per_thread, now, venue = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(path, "w") as f:
    f.write('{"type":"venue","id":"%s","name":"Bench Arena"}\n' % venue)
    f.write('{"type":"event","id":"%s-E","venueId":"%s","doorsOpen":%d,"endsAt":%d}\n' % (venue, venue, now - 3600000, now + 36000000))
    for t in range(1, threads + 1):
        for n in range(1, per_thread + 1):
            f.write('{"type":"ticket","token":"%s-T%d-%d","eventId":"%s-E","places":["A:%d:%d"]}\n' % (venue, t, n, venue, n // 100, n % 100))
PY
start=$(date +%s.%N)
curl -sf -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" --data-binary @"$work/inventory.ndjson" >/dev/null
end=$(date +%s.%N)
echo "inventory: $((threads * per_thread)) tickets loaded in $(python3 -c "print(round($end - $start, 2))") s"
device=$(curl -sf -X POST "$url/presence/v1/device/init" -H "X-Api-Key: $key" \
  -d "{\"venueId\":\"$venue\",\"name\":\"bench\",\"mac\":\"00:00:00:00:00:01\",\"ip\":\"127.0.0.1\",\"gateName\":\"Bench Gate\",\"serial\":\"b\",\"model\":\"b\"}")
DEVICE_ID=$(echo "$device" | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["id"])')
GATE_ID=$(echo "$device" | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["gateId"])')
export DEVICE_ID GATE_ID API_KEY=$key SCAN_TIME=$now VENUE=$venue
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$here/enter.lua" "$url"
