#!/usr/bin/env bash
# Scans a second with 50 venue boards open against none (docs/benchmarks.md,
# "The venue board"):
#
#   scripts/bench/board.sh [OUT_DIR]
#
# Starts the embedded `presence serve` (fresh data dir) and drives enters with
# presence-loadgen twice, closed loop at 64 connections: once with no board
# open, once with PRESENCE_BENCH_BOARDS (default 50) live streams of the run's
# venue open (curl -N, each reading every event) from the warm-up on. Prints
# both drives and how many snapshots each board received. Loopback only.
#
#   PRESENCE_BIN_DIR         the binaries (default: release, built first)
#   PRESENCE_BENCH_SECONDS   measured seconds of each drive (default 20)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$(mktemp -d -t presence-bench-board.XXXXXX)}
mkdir -p "$out"
seconds=${PRESENCE_BENCH_SECONDS:-20}
boards=${PRESENCE_BENCH_BOARDS:-50}
key=bench-$RANDOM$RANDOM

log() {
    printf '==> %s\n' "$*" >&2
}

cd "$repo"
if [ -z "${PRESENCE_BIN_DIR:-}" ]; then
    log "building release binaries"
    cargo build --release --all-features --bins -q -p presence -p presence-loadgen
    bin=${CARGO_TARGET_DIR:-$repo/target}/release
else
    bin=$PRESENCE_BIN_DIR
fi

PRESENCE_KEY_RATE=0 "$bin/presence" serve --listen 127.0.0.1:0 --data-dir "$out/data" \
    --api-key "$key" >"$out/server.out" 2>"$out/server.log" &
server=$!
streams=()
cleanup() {
    for stream in "${streams[@]}"; do kill "$stream" 2>/dev/null || true; done
    kill "$server" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q PRESENCE_URL= "$out/server.out" && break; sleep 0.1; done
url=$(sed -n 's/^PRESENCE_URL=//p' "$out/server.out")
[ -n "$url" ] || { cat "$out/server.log" >&2; exit 1; }

# drive NAME BOARDS: one loadgen run; BOARDS streams of its venue open from
# the end of its setup to its end.
drive() {
    local name=$1 open=$2 venue i
    log "drive $name: $open boards open"
    PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$url" --json --tickets 400000 \
        --concurrency 64 --duration "${seconds}s" --warmup 5s \
        >"$out/$name.json" 2>"$out/$name.log" &
    local driver=$!
    until grep -q "at venue" "$out/$name.log" 2>/dev/null || ! kill -0 "$driver" 2>/dev/null; do
        sleep 0.05
    done
    venue=$(sed -n 's/.* at venue \([^;]*\);.*/\1/p' "$out/$name.log")
    streams=()
    for i in $(seq "$open"); do
        curl -sN -H "X-Api-Key: $key" "$url/presence/v1/venues/$venue/live" >"$out/$name-board-$i.sse" &
        streams+=($!)
    done
    wait "$driver" || log "loadgen $name did not pass (see $out/$name.json)"
    for stream in "${streams[@]}"; do kill "$stream" 2>/dev/null || true; done
    streams=()
    jq -r --arg name "$name" '"\($name): \(.throughput_per_second | floor) scans/s, p50 \(.latency_us.p50 / 1000) ms, p99 \(.latency_us.p99 / 1000) ms; codes \(.http_codes | tostring)"' \
        "$out/$name.json"
    if [ "$open" -gt 0 ]; then
        local received
        received=$(cat "$out/$name"-board-*.sse | grep -c '^event: board' || true)
        echo "$name: $open boards received $received snapshots in all ($((received / open)) each)"
    fi
}

drive no-boards 0
drive "$boards-boards" "$boards"
log "reports and logs in $out"
