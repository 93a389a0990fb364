#!/usr/bin/env bash
# Scans a second with 50 venue boards open against none, in both modes
# (docs/benchmarks.md, "The venue board: scans with 50 boards open"):
#
#   scripts/bench/board.sh [MODES] [OUT_DIR]      # MODES: "embedded distributed" (default)
#
# Per mode, one server: the embedded `presence serve` (fresh data dir) or the
# distributed stack (deploy/local/stack.sh: gateway, validator, registry, Redis,
# tansu). Then rounds of four presence-loadgen drives of enters, closed loop at
# 64 connections, alternating so that drift (a growing store, a warming cache,
# a neighbour's load) falls on every kind alike:
#   none   no board open
#   one    PRESENCE_BENCH_BOARDS (default 50) live streams of the drive's venue
#   none   again
#   spread as many streams, each of its own venue: the drive's and the others
#          the script loaded up front (one poller per venue: a read a second each)
# Each stream (curl -N, reading every event) opens once the drive's setup is
# done and closes at its end. Prints one line per drive, how many snapshots the
# boards received, and the mean of each kind. Loopback only.
#
#   PRESENCE_BIN_DIR         the binaries (default: release, built first)
#   PRESENCE_BENCH_SECONDS   measured seconds of each drive (default 20)
#   PRESENCE_BENCH_ROUNDS    rounds of the four drives (default 2)
#   PRESENCE_TANSU           the distributed stack's broker (deploy/local/stack.sh)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
modes=${1:-embedded distributed}
out=${2:-$(mktemp -d -t presence-bench-board.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
seconds=${PRESENCE_BENCH_SECONDS:-20}
boards=${PRESENCE_BENCH_BOARDS:-50}
rounds=${PRESENCE_BENCH_ROUNDS:-2}
key=bench-$RANDOM$RANDOM

log() {
    printf '==> %s\n' "$*" >&2
}

cd "$repo"
if [ -z "${PRESENCE_BIN_DIR:-}" ]; then
    log "building release binaries"
    cargo build --release --all-features --bins -q \
        -p presence -p presence-gateway -p presence-validator -p presence-registry -p presence-loadgen
    bin=${CARGO_TARGET_DIR:-$repo/target}/release
else
    bin=$PRESENCE_BIN_DIR
fi

streams=()
close_streams() {
    for stream in "${streams[@]}"; do kill "$stream" 2>/dev/null || true; done
    streams=()
}

# The venues the spread boards watch besides the drive's: a venue, a gate and
# an event with its doors open each, nothing scanned.
load_other_venues() {
    local i now
    now=$(($(date +%s) * 1000))
    for i in $(seq 2 "$boards"); do
        printf '{"type":"venue","id":"board-bench-%d","name":"Board bench %d"}\n' "$i" "$i"
        printf '{"type":"gate","venueId":"board-bench-%d","name":"Main"}\n' "$i"
        printf '{"type":"event","id":"board-bench-event-%d","venueId":"board-bench-%d","name":"Show","doorsOpen":%d,"endsAt":%d,"status":"ACTIVE","allowReentry":true}\n' \
            "$i" "$i" $((now - 3600000)) $((now + 14400000))
    done >"$out/other-venues.ndjson"
    curl -sf -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" \
        -H "Content-Type: application/x-ndjson" --data-binary "@$out/other-venues.ndjson" >/dev/null
}

# drive MODE KIND N: one loadgen run; for `one` and `spread` the boards are
# open from the end of its setup to its end.
drive() {
    local mode=$1 kind=$2 n=$3 name venue i
    name=$mode-$n-$kind
    log "$name"
    PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$url" --json --tickets 600000 \
        --concurrency 64 --duration "${seconds}s" --warmup 5s \
        >"$out/$name.json" 2>"$out/$name.log" &
    local driver=$!
    until grep -q "at venue" "$out/$name.log" 2>/dev/null || ! kill -0 "$driver" 2>/dev/null; do
        sleep 0.05
    done
    venue=$(sed -n 's/.* at venue \([^;]*\);.*/\1/p' "$out/$name.log")
    for i in $(seq "$boards"); do
        case $kind in
        none) break ;;
        one) ;;
        spread) [ "$i" -gt 1 ] && venue=board-bench-$i ;;
        esac
        curl -sN -H "X-Api-Key: $key" "$url/presence/v1/venues/$venue/live" >"$out/$name-board-$i.sse" &
        streams+=($!)
    done
    wait "$driver" || log "loadgen $name did not pass (see $out/$name.json)"
    close_streams
    local line
    line=$(jq -r --arg name "$name" '"\($name): \(.throughput_per_second | floor) scans/s, p50 \(.latency_us.p50 / 1000) ms, p99 \(.latency_us.p99 / 1000) ms; codes \(.http_codes | tostring)"' \
        "$out/$name.json")
    if [ "$kind" != none ]; then
        local received
        received=$(cat "$out/$name"-board-*.sse | grep -c '^event: board' || true)
        line="$line; the $boards boards received $received snapshots"
    fi
    echo "$line"
    jq -r --arg kind "$kind" '"\($kind) \(.throughput_per_second)"' "$out/$name.json" >>"$out/$mode-rates"
}

# Runs the rounds against $url, then prints each kind's mean.
measure() {
    local mode=$1 round
    load_other_venues
    for round in $(seq "$rounds"); do
        drive "$mode" none $((round * 4 - 3))
        drive "$mode" one $((round * 4 - 2))
        drive "$mode" none $((round * 4 - 1))
        drive "$mode" spread $((round * 4))
    done
    awk -v mode="$mode" '{ sum[$1] += $2; n[$1]++ }
        END { printf "%s means: no board %d scans/s, %d boards of one venue %d, of %d venues %d\n",
              mode, sum["none"] / n["none"], '"$boards"', sum["one"] / n["one"], '"$boards"', sum["spread"] / n["spread"] }' \
        "$out/$mode-rates"
}

for mode in $modes; do
    case $mode in
    embedded)
        PRESENCE_KEY_RATE=0 "$bin/presence" serve --listen 127.0.0.1:0 --data-dir "$out/embedded-data" \
            --api-key "$key" >"$out/embedded.out" 2>"$out/embedded.log" &
        server=$!
        trap 'close_streams; kill $server 2>/dev/null || true' EXIT
        for _ in $(seq 100); do grep -q PRESENCE_URL= "$out/embedded.out" && break; sleep 0.1; done
        url=$(sed -n 's/^PRESENCE_URL=//p' "$out/embedded.out")
        [ -n "$url" ] || { cat "$out/embedded.log" >&2; exit 1; }
        measure embedded
        kill "$server"
        wait "$server" 2>/dev/null || true
        trap - EXIT
        ;;
    distributed)
        stack_env=$(PRESENCE_API_KEY=$key PRESENCE_KEY_RATE=0 PRESENCE_BIN_DIR="$bin" \
            PRESENCE_STACK_DIR="$out/stack" deploy/local/stack.sh up)
        eval "$stack_env"
        trap 'close_streams; deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true' EXIT
        url=$PRESENCE_URL
        measure distributed
        deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true
        trap - EXIT
        ;;
    *)
        echo "unknown mode $mode (embedded, distributed)" >&2
        exit 2
        ;;
    esac
done
echo "$(nproc) cores, commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), ${seconds} s per drive, $rounds rounds"
log "reports and logs in $out"
