#!/usr/bin/env bash
# How long a 1000-scan `ticket/offline` upload takes to answer, in both modes
# (issue 15; the targets: 1 s embedded, 3 s distributed):
#
#   scripts/bench/offline-upload.sh [OUT_DIR]
#
# For each mode, a fresh server (embedded: `presence serve`; distributed:
# deploy/local/stack.sh), 1000 tickets of an event on now and one configured
# scanner; then, timed by curl from request to full answer, one upload each of:
#   enter      1000 tickets entered (shown OKAY): 1000 state changes
#   exit       the same 1000 let out (shown EXIT)
#   again      the exit upload sent again: 1000 scans answered from memory
#   per-ticket 250 tickets x 4 scans (enter, exit, enter, enter shown OKAY: the
#              last one forced): each ticket's four one after another
# Prints the seconds of each and the scans' statuses. Loopback only.
#
#   PRESENCE_OFFLINE_MODES  which modes, of `embedded distributed` (default both)
#   PRESENCE_BIN_DIR        presence and the services; default: built here with
#                           `cargo build --release`
#   PRESENCE_TANSU          the broker for the distributed stack (deploy/local/stack.sh)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$(mktemp -d -t presence-offline.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
modes=${PRESENCE_OFFLINE_MODES:-embedded distributed}
key=offline-$RANDOM$RANDOM

log() {
    printf '==> %s\n' "$*" >&2
}

cd "$repo"
if [ -n "${PRESENCE_BIN_DIR:-}" ]; then
    bin=$PRESENCE_BIN_DIR
else
    bin=${CARGO_TARGET_DIR:-$repo/target}/release
    log "building release binaries"
    cargo build --release --all-features --bins -q \
        -p presence -p presence-gateway -p presence-validator -p presence-registry
fi

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# The inventory: a venue, an event on now, tickets OFF-0000..OFF-0999.
inventory() {
    local now
    now=$(now_ms)
    jq -nc --argjson now "$now" '
        {type: "venue", id: "OFFLINE", name: "Arena"},
        {type: "event", id: "OFFLINE-E", venueId: "OFFLINE", doorsOpen: ($now - 3600000),
         endsAt: ($now + 10800000)},
        (range(1000) | {type: "ticket", token: ("OFF-\(. + 10000 | tostring | .[1:])"),
                        eventId: "OFFLINE-E", places: ["A:1:\(.)"]})'
}

# An upload of `$1` (a jq filter over the ticket number n and the time t)
# for the tickets 0..$2-1, from scanner $device at gate $gate.
upload_body() {
    local scans=$1 tickets=$2 t
    t=$(now_ms)
    jq -nc --argjson device "$device" --argjson gate "$gate" --argjson t "$t" --argjson count "$tickets" "
        {venueId: \"OFFLINE\", deviceId: \$device, gateId: \$gate, gateName: \"Gate 1\",
         deviceOs: \"Android\",
         scans: [range(\$count) as \$n | (\"OFF-\(\$n + 10000 | tostring | .[1:])\") as \$token
                 | $scans]}"
}

# Times one upload: prints "NAME SECONDS {status: count}".
timed() {
    local name=$1 body=$2 seconds
    printf '%s' "$body" >"$out/$mode-$name.json"
    seconds=$(curl -s -o "$out/$mode-$name.answer" -w '%{time_total}' -X POST \
        "$url/presence/v1/ticket/offline" -H "X-Api-Key: $key" \
        -H 'Content-Type: application/json' --data-binary "@$out/$mode-$name.json")
    echo "$mode $name ${seconds}s $(jq -c '[.message.scans[] | .status + (if .forced then " forced" else "" end)]
        | group_by(.) | map({(.[0]): length}) | add' "$out/$mode-$name.answer")"
}

run() {
    curl -sf -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" \
        -H 'Content-Type: application/x-ndjson' --data-binary "$(inventory)" >/dev/null
    local device_answer
    device_answer=$(curl -sf -X POST "$url/presence/v1/device/init" -H "X-Api-Key: $key" \
        -H 'Content-Type: application/json' \
        -d '{"venueId":"OFFLINE","name":"S1","mac":"02:00:00:00:00:01","ip":"10.0.0.1","gateName":"Gate 1","serial":"S1","model":"M"}')
    device=$(jq '.message.id' <<<"$device_answer")
    gate=$(jq '.message.gateId' <<<"$device_answer")
    timed enter "$(upload_body '{kind: "enter", token: $token, scanTime: $t, shown: "OKAY"}' 1000)"
    local exit_body
    exit_body=$(upload_body '{kind: "exit", token: $token, scanTime: $t, shown: "EXIT"}' 1000)
    timed exit "$exit_body"
    timed again "$exit_body"
    timed per-ticket "$(upload_body '({kind: "enter", token: $token, scanTime: ($t + 1), shown: "OKAY"},
        {kind: "exit", token: $token, scanTime: ($t + 2), shown: "EXIT"},
        {kind: "enter", token: $token, scanTime: ($t + 3), shown: "OKAY"},
        {kind: "enter", token: $token, scanTime: ($t + 4), shown: "OKAY"})' 250)"
}

results=()
for mode in $modes; do
    case $mode in
    embedded)
        "$bin/presence" serve --listen 127.0.0.1:0 --data-dir "$out/embedded-data" \
            --api-key "$key" >"$out/embedded.out" 2>"$out/embedded.log" &
        server=$!
        trap 'kill $server 2>/dev/null || true' EXIT
        for _ in $(seq 100); do grep -q PRESENCE_URL= "$out/embedded.out" && break; sleep 0.1; done
        url=$(sed -n 's/^PRESENCE_URL=//p' "$out/embedded.out")
        [ -n "$url" ] || { cat "$out/embedded.log" >&2; exit 1; }
        mapfile -t lines < <(run)
        kill "$server"
        wait "$server" 2>/dev/null || true
        trap - EXIT
        ;;
    distributed)
        stack_env=$(PRESENCE_API_KEY=$key PRESENCE_BIN_DIR="$bin" PRESENCE_STACK_DIR="$out/stack" \
            deploy/local/stack.sh up)
        eval "$stack_env"
        trap 'deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true' EXIT
        url=$PRESENCE_URL
        mapfile -t lines < <(run)
        deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true
        trap - EXIT
        ;;
    *)
        echo "unknown mode $mode" >&2
        exit 2
        ;;
    esac
    results+=("${lines[@]}")
done

echo
echo "$(nproc) cores, commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC')"
printf -- '- %s\n' "${results[@]}"
log "bodies, answers and logs: $out"
