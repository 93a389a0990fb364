#!/usr/bin/env bash
# What a flood of random tokens costs the store, in both modes (issue 12):
#
#   scripts/bench/not-found-flood.sh [OUT_DIR]
#
# For each mode, a fresh server whose API keys are limited to the flood's rate
# (PRESENCE_KEY_RATE) and whose NOT_FOUND retention is PRESENCE_NOT_FOUND_RETENTION_MS;
# presence-loadgen then sends only tokens in no inventory (each one new), in an
# open loop at that rate, for the flood's duration. Every 5 s, from the first
# scan until a retention after the flood, the script samples the store:
# - embedded (`presence serve`): the size of presence.redb;
# - distributed (deploy/local/stack.sh): Redis's used_memory and key count.
# It prints the samples, and the bytes per refused scan: the store's growth over
# the first 5 s sample after the flood began, divided by the NOT_FOUND answers
# in that time (rate × seconds). Loopback only.
#
#   PRESENCE_FLOOD_RATE          scans a second, and the key's rate limit (default 1000)
#   PRESENCE_FLOOD_SECONDS       how long the flood lasts (default 60)
#   PRESENCE_FLOOD_RETENTION_MS  the NOT_FOUND retention under test (default 20000)
#   PRESENCE_FLOOD_MODES         which modes, of `embedded distributed` (default both)
#   PRESENCE_BIN_DIR             presence, the services and presence-loadgen; default:
#                                built here with `cargo build --release`
#   PRESENCE_TANSU               the broker for the distributed stack (deploy/local/stack.sh)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$(mktemp -d -t presence-flood.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rate=${PRESENCE_FLOOD_RATE:-1000}
seconds=${PRESENCE_FLOOD_SECONDS:-60}
retention_ms=${PRESENCE_FLOOD_RETENTION_MS:-20000}
modes=${PRESENCE_FLOOD_MODES:-embedded distributed}
key=flood-$RANDOM$RANDOM
readonly SAMPLE_EVERY=5
# Sampling goes on for a retention (and a sweep) after the flood, to show the
# store giving the records back; for at most 30 s plus that sweep, as a retention
# longer than the flood (e.g. a day, to see what it cost before) shows nothing more.
after=$((retention_ms / 1000 < 30 ? retention_ms / 1000 : 30))
sample_for=$((seconds + after + 15))
export PRESENCE_KEY_RATE=$rate PRESENCE_NOT_FOUND_RETENTION_MS=$retention_ms

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
        -p presence -p presence-gateway -p presence-validator -p presence-registry -p presence-loadgen
fi

# Floods $url with unknown tokens in the background; the report goes to $out/$1.json.
flood() {
    local name=$1
    log "$name: $rate unknown tokens a second for ${seconds}s"
    PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$url" --json --tickets 1000 \
        --mix unknown=1 --rate "$rate" --duration "${seconds}s" --allow-errors \
        >"$out/$name.json" 2>"$out/$name.log" &
    driver=$!
    until grep -q driving "$out/$name.log" 2>/dev/null || ! kill -0 "$driver" 2>/dev/null; do
        sleep 0.05
    done
}

# Runs `$@` (which prints one sample line) every SAMPLE_EVERY seconds from now,
# prefixed with the seconds since the flood began, into $out/$name.samples.
sample() {
    local name=$1 t
    shift
    : >"$out/$name.samples"
    for ((t = 0; t <= sample_for; t += SAMPLE_EVERY)); do
        printf '%s %s\n' "$t" "$("$@")" >>"$out/$name.samples"
        sleep "$SAMPLE_EVERY"
    done
}

# The growth from the first sample to the second, per scan sent between them.
per_scan() {
    awk -v per=$((rate * SAMPLE_EVERY)) -v col="$2" \
        'NR == 1 {first = $col} NR == 2 {printf "%.0f", ($col - first) / per; exit}' "$out/$1.samples"
}

peak() {
    awk -v col="$2" '$col > max {max = $col} END {print max}' "$out/$1.samples"
}

report() {
    local name=$1
    echo
    echo "$name: $(jq -c '{sent, statuses, http_codes}' "$out/$name.json")"
    echo "| s since the flood began | $2"
    echo "|---|$3"
    awk '{ $1 = $1; printf "| %s |", $1; for (i = 2; i <= NF; i++) printf " %s |", $i; printf "\n" }' \
        "$out/$name.samples"
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
        flood embedded
        sample embedded stat -c %s "$out/embedded-data/presence.redb"
        wait "$driver" || true
        kill "$server"
        wait "$server" 2>/dev/null || true
        trap - EXIT
        report embedded "presence.redb bytes |" "---|"
        results+=("embedded: $(per_scan embedded 2) bytes of presence.redb per refused scan; file at most $(peak embedded 2) bytes")
        ;;
    distributed)
        stack_env=$(PRESENCE_API_KEY=$key PRESENCE_BIN_DIR="$bin" PRESENCE_STACK_DIR="$out/stack" \
            deploy/local/stack.sh up)
        eval "$stack_env"
        trap 'deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true' EXIT
        url=$PRESENCE_URL
        redis_sample() {
            local used keys
            used=$(redis-cli -u "$PRESENCE_REDIS_URL" info memory | tr -d '\r' | sed -n 's/^used_memory://p')
            keys=$(redis-cli -u "$PRESENCE_REDIS_URL" dbsize)
            echo "$used $keys"
        }
        flood distributed
        sample distributed redis_sample
        wait "$driver" || true
        deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true
        trap - EXIT
        report distributed "Redis used_memory | Redis keys |" "---|---|"
        results+=("distributed: $(per_scan distributed 2) bytes of Redis used_memory and $(per_scan distributed 3) keys per refused scan; at most $(peak distributed 2) bytes, $(peak distributed 3) keys")
        ;;
    *)
        echo "unknown mode $mode" >&2
        exit 2
        ;;
    esac
done

echo
echo "$(nproc) cores, commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC');" \
    "flood $rate/s for ${seconds}s, NOT_FOUND retention ${retention_ms} ms"
printf -- '- %s\n' "${results[@]}"
log "reports and logs: $out"
