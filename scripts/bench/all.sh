#!/usr/bin/env bash
# Every table of docs/benchmarks.md's "Targets" section, in one command:
#
#   scripts/bench/all.sh [OUT_DIR]
#
# Builds the release binaries, then measures, with presence-loadgen on this same
# machine:
# - embedded (`presence serve`, fresh data dir): 1,000,000 tickets loaded in one
#   inventory request; enters at 64 connections (closed loop); enters at 2,000/s
#   (open loop); the server's resident memory after those; its idle CPU;
# - distributed (deploy/local/stack.sh: gateway, validator, registry, Redis and
#   tansu): the same, plus Redis's memory per ticket (INFO memory, used_memory
#   before and after the 1,000,000 tickets) and each service's idle CPU.
# Prints a markdown table of target against measurement; the loadgen JSON
# reports, the samples and the servers' logs stay in OUT_DIR (default a new
# temporary directory). Takes about 6 minutes after the build. Loopback only.
#
#   PRESENCE_TANSU_STORAGE   the stack's broker storage (deploy/local/stack.sh)
#   PRESENCE_BENCH_SECONDS   measured seconds of each drive (default 20)
#   PRESENCE_BENCH_IDLE      seconds of each idle-CPU measurement (default 60)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=proc.sh
. "$repo/scripts/bench/proc.sh"
out=${1:-$(mktemp -d -t presence-bench.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
seconds=${PRESENCE_BENCH_SECONDS:-20}
idle=${PRESENCE_BENCH_IDLE:-60}
readonly MILLION=1000000
readonly RATE=2000
bin=${CARGO_TARGET_DIR:-$repo/target}/release
key=bench-$RANDOM$RANDOM
ticks=$(getconf CLK_TCK)
rows=()

log() {
    printf '==> %s\n' "$*" >&2
}

# Percent of one core each pid used over $idle seconds, after a settle.
idle_cpu() {
    local pid before=() i=0
    sleep 10
    for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
    sleep "$idle"
    for pid in "$@"; do
        python3 -c "print(f'{($(cpu_ticks "$pid") - ${before[i]}) / $ticks / $idle * 100:.2f} %')"
        i=$((i + 1))
    done
}

rss_mib() {
    echo "$(($(rss_kib "$1") / 1024)) MiB"
}

# presence-loadgen against $url; the JSON report goes to $out/$1.json.
loadgen() {
    local name=$1
    shift
    log "loadgen $name: $*"
    PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$url" --json "$@" \
        >"$out/$name.json" 2>"$out/$name.log" || log "loadgen $name did not pass (see $out/$name.json)"
}

field() {
    jq -r "$2" "$out/$1.json"
}

drive_summary() {
    field "$1" '"\(.throughput_per_second | floor)/s, p50 \(.latency_us.p50 / 1000) ms, p99 \(.latency_us.p99 / 1000) ms, max \(.latency_us.max / 1000) ms; codes \(.http_codes | tostring)" + (if .open_loop then ", late \(.open_loop.late)" else "" end)'
}

inventory_summary() {
    field "$1" '"\(.setup.inventory.tickets) tickets in \(.setup.inventory.seconds * 100 | round / 100) s (\(.setup.inventory.tickets_per_second | floor)/s)"'
}

row() {
    rows+=("| $1 | $2 | $3 |")
}

cd "$repo"
log "building release binaries"
cargo build --release --all-features --bins -q \
    -p presence -p presence-gateway -p presence-validator -p presence-registry -p presence-loadgen

# --- embedded -------------------------------------------------------------
log "embedded: presence serve"
PRESENCE_KEY_RATE=0 "$bin/presence" serve --listen 127.0.0.1:0 --data-dir "$out/embedded-data" \
    --api-key "$key" >"$out/embedded.out" 2>"$out/embedded.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q PRESENCE_URL= "$out/embedded.out" && break; sleep 0.1; done
url=$(sed -n 's/^PRESENCE_URL=//p' "$out/embedded.out")
[ -n "$url" ] || { cat "$out/embedded.log" >&2; exit 1; }
loadgen embedded-closed --tickets "$MILLION" --inventory-batch "$MILLION" \
    --concurrency 64 --duration "${seconds}s" --warmup 5s
embedded_rss=$(rss_mib "$server")
loadgen embedded-open --tickets $((RATE * (seconds + 10))) --rate "$RATE" \
    --duration "${seconds}s" --warmup 5s
log "embedded: idle CPU over ${idle}s"
embedded_idle=$(idle_cpu "$server")
kill "$server"
wait "$server" 2>/dev/null || true
trap - EXIT
row "embedded: 1,000,000 tickets loaded" "≤ 30 s" "$(inventory_summary embedded-closed)"
row "embedded: enters, 64 connections" "≥ 20,000/s, p99 ≤ 10 ms" "$(drive_summary embedded-closed)"
row "embedded: enters, open loop $RATE/s" "(p99 ≤ 20 ms distributed)" "$(drive_summary embedded-open)"
row "embedded: RSS with 1,000,000 tickets, after the enters" "≤ 400 MiB" "$embedded_rss"
row "embedded: idle CPU" "< 1 %" "$embedded_idle"

# --- distributed ----------------------------------------------------------
log "distributed: deploy/local/stack.sh up"
stack_env=$(PRESENCE_API_KEY=$key PRESENCE_BIN_DIR="$bin" PRESENCE_STACK_DIR="$out/stack" \
    deploy/local/stack.sh up)
eval "$stack_env"
trap 'deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true' EXIT
url=$PRESENCE_URL
redis_used() {
    redis-cli -u "$PRESENCE_REDIS_URL" info memory | tr -d '\r' | sed -n 's/^used_memory://p'
}
before=$(redis_used)
# One second of one connection's scans: the run's point is the inventory.
loadgen distributed-inventory --tickets "$MILLION" --inventory-batch "$MILLION" \
    --concurrency 1 --duration 1s
after=$(redis_used)
per_ticket=$(((after - before) / MILLION))
pids=()
for name in gateway validator registry redis tansu; do
    pids+=("$(cat "$PRESENCE_STACK_DIR/$name.pid")")
done
loadgen distributed-closed --tickets 200000 --concurrency 64 --duration "${seconds}s" --warmup 5s &
driver=$!
# The CPU of the drive alone, from the moment the generator's setup is done.
until grep -q driving "$out/distributed-closed.log" 2>/dev/null || ! kill -0 "$driver" 2>/dev/null; do
    sleep 0.05
done
cpu_before=()
for pid in "${pids[@]}"; do cpu_before+=("$(cpu_ticks "$pid")"); done
wait "$driver"
# Where the stack's CPU goes per scan: what caps the closed-loop rate on 2 cores.
sent=$(field distributed-closed '.sent + .warmup.sent')
cpu_per_scan=()
for i in "${!pids[@]}"; do
    cpu_per_scan+=("$(((($(cpu_ticks "${pids[i]}") - cpu_before[i]) * 1000000 / ticks) / sent)) µs")
done
loadgen distributed-open --tickets $((RATE * (seconds + 10))) --rate "$RATE" \
    --duration "${seconds}s" --warmup 5s
log "distributed: idle CPU over ${idle}s"
mapfile -t distributed_idle < <(idle_cpu "${pids[@]}")
row "distributed: 1,000,000 tickets loaded" "≤ 30 s" "$(inventory_summary distributed-inventory)"
row "distributed: Redis memory per ticket" "≤ 250 bytes" "$per_ticket bytes (used_memory $before → $after)"
row "distributed: enters, 64 connections" "≥ 5,000/s, p99 ≤ 50 ms" "$(drive_summary distributed-closed)"
row "distributed: enters, open loop $RATE/s" "p99 ≤ 20 ms" "$(drive_summary distributed-open)"
row "distributed: CPU per scan in the closed loop, gateway / validator / registry / Redis / tansu" "" "$(IFS=/; echo "${cpu_per_scan[*]}" | sed 's|/| / |g')"
row "distributed: idle CPU, gateway / validator" "< 1 %" "${distributed_idle[0]} / ${distributed_idle[1]}"
row "distributed: idle CPU, registry / Redis / tansu" "" "${distributed_idle[2]} / ${distributed_idle[3]} / ${distributed_idle[4]}"

echo
echo "$(nproc) cores, $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| what | target | measured |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
log "reports and logs: $out"
