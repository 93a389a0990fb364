#!/usr/bin/env bash
# Every target of docs/benchmarks.md's "Targets" section, in one command:
#
#   scripts/bench/all.sh [OUT_DIR]
#
# Builds the release binaries, then measures, with presence-loadgen on this same
# machine:
# - embedded (`presence serve`, fresh data dir): 1,000,000 tickets loaded in one
#   inventory request; enters at 64 connections (closed loop) and the server's CPU
#   per scan in it; enters at 2,000/s (open loop); enters with wrk at 64
#   connections (scripts/bench/wrk-enter.sh, its own inventory); the server's
#   resident memory after those; its idle CPU;
# - distributed (deploy/local/stack.sh: gateway, validator, registry, Redis and
#   tansu): one connection's scans on the idle stack (the single-scan latency),
#   the same drives, each process's CPU per scan in the closed loop, Redis's
#   memory per ticket (INFO memory, used_memory before and after the 1,000,000
#   tickets) and each service's idle CPU.
# The targets are issue 14's (CPU per scan, rates, the idle single scan) and the
# earlier ones that still hold (loading, memory, idle CPU).
# Prints a markdown table of target against measurement; the loadgen JSON
# reports, the samples and the servers' logs stay in OUT_DIR (default a new
# temporary directory). Takes about 7 minutes after the build. Needs jq and wrk.
# Loopback only.
#
#   PRESENCE_BIN_DIR         built release binaries to use (default: build them here)
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
bin=${PRESENCE_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
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

# "met" or "not met": whether every `value op bound` triple holds.
verdict() {
    python3 -c '
import sys
a = sys.argv[1:]
ok = all(eval(f"{a[i]} {a[i + 1]} {a[i + 2]}") for i in range(0, len(a), 3))
print("met" if ok else "not met")' "$@"
}

# CPU µs per scan of process $1 since $2 (clock ticks), over $3 scans.
micros_per_scan() {
    echo $(((($(cpu_ticks "$1") - $2) * 1000000 / ticks) / $3))
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
    rows+=("| $1 | $2 | $3 | ${4:-} |")
}

cd "$repo"
log "building release binaries"
if [ -z "${PRESENCE_BIN_DIR:-}" ]; then
    cargo build --release --workspace --all-features --bins -q
fi

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
    --concurrency 64 --duration "${seconds}s" --warmup 5s &
driver=$!
wait_for_drive "$out/embedded-closed.log" "$driver"
server_before=$(cpu_ticks "$server")
wait "$driver"
embedded_cpu=$(micros_per_scan "$server" "$server_before" "$(field embedded-closed '.sent + .warmup.sent')")
embedded_rss=$(rss_mib "$server")
loadgen embedded-open --tickets $((RATE * (seconds + 10))) --rate "$RATE" \
    --duration "${seconds}s" --warmup 5s
log "embedded: wrk, 64 connections, ${seconds}s"
scripts/bench/wrk-enter.sh "$url" "$key" 64 "$seconds" 200000 >"$out/embedded-wrk.txt" 2>&1 ||
    log "wrk did not run (see $out/embedded-wrk.txt)"
wrk_rate=$(awk '/^Requests\/sec:/ {printf "%d", $2}' "$out/embedded-wrk.txt")
wrk_p99=$(awk '$1 == "99%" {print $2}' "$out/embedded-wrk.txt")
wrk_p99_ms=$(python3 -c "
v = '${wrk_p99:-0ms}'
print(float(v[:-2]) if v.endswith('ms') else float(v[:-2]) / 1000 if v.endswith('us') else float(v[:-1]) * 1000)")
log "embedded: idle CPU over ${idle}s"
embedded_idle=$(idle_cpu "$server")
kill "$server"
wait "$server" 2>/dev/null || true
trap - EXIT
row "embedded: 1,000,000 tickets loaded" "≤ 30 s" "$(inventory_summary embedded-closed)" \
    "$(verdict "$(field embedded-closed .setup.inventory.seconds)" '<=' 30)"
row "embedded: server CPU per scan, 64 connections (presence-loadgen)" "≤ 40 µs" "$embedded_cpu µs" \
    "$(verdict "$embedded_cpu" '<=' 40)"
row "embedded: enters, 64 connections (presence-loadgen)" "" "$(drive_summary embedded-closed)"
row "embedded: enters, 64 connections (wrk)" "≥ 25,000/s, p99 ≤ 10 ms" \
    "${wrk_rate:-?}/s, p99 ${wrk_p99:-?}" "$(verdict "${wrk_rate:-0}" '>=' 25000 "$wrk_p99_ms" '<=' 10)"
row "embedded: enters, open loop $RATE/s" "" "$(drive_summary embedded-open)"
row "embedded: RSS with 1,000,000 tickets, after the enters" "≤ 400 MiB" "$embedded_rss" \
    "$(verdict "${embedded_rss% MiB}" '<=' 400)"
row "embedded: idle CPU" "< 1 %" "$embedded_idle" "$(verdict "${embedded_idle% %}" '<' 1)"

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
# One scan at a time on the otherwise idle stack: what a lone fan at the gate waits.
loadgen distributed-single --tickets 2000 --concurrency 1 --duration 10s --warmup 2s
pids=()
for name in gateway validator registry redis tansu; do
    pids+=("$(cat "$PRESENCE_STACK_DIR/$name.pid")")
done
loadgen distributed-closed --tickets 200000 --concurrency 64 --duration "${seconds}s" --warmup 5s &
driver=$!
# The CPU of the drive alone, from the moment the generator's setup is done.
wait_for_drive "$out/distributed-closed.log" "$driver"
cpu_before=()
for pid in "${pids[@]}"; do cpu_before+=("$(cpu_ticks "$pid")"); done
wait "$driver"
# Where the stack's CPU goes per scan: what caps the closed-loop rate on 2 cores.
sent=$(field distributed-closed '.sent + .warmup.sent')
cpu_per_scan=()
for i in "${!pids[@]}"; do
    cpu_per_scan+=("$(micros_per_scan "${pids[i]}" "${cpu_before[i]}" "$sent")")
done
presence_cpu=$((cpu_per_scan[0] + cpu_per_scan[1] + cpu_per_scan[2]))
loadgen distributed-open --tickets $((RATE * (seconds + 10))) --rate "$RATE" \
    --duration "${seconds}s" --warmup 5s
log "distributed: idle CPU over ${idle}s"
mapfile -t distributed_idle < <(idle_cpu "${pids[@]}")
single_p50_ms=$(field distributed-single '.latency_us.p50 / 1000')
closed_rate=$(field distributed-closed '.throughput_per_second | floor')
closed_p99_ms=$(field distributed-closed '.latency_us.p99 / 1000')
row "distributed: 1,000,000 tickets loaded" "≤ 30 s" "$(inventory_summary distributed-inventory)" \
    "$(verdict "$(field distributed-inventory .setup.inventory.seconds)" '<=' 30)"
row "distributed: Redis memory per ticket" "≤ 250 bytes" "$per_ticket bytes (used_memory $before → $after)" \
    "$(verdict "$per_ticket" '<=' 250)"
row "distributed: a single scan on the idle stack (1 connection)" "p50 ≤ 10 ms" "$(drive_summary distributed-single)" \
    "$(verdict "$single_p50_ms" '<=' 10)"
row "distributed: enters, 64 connections" "≥ 2,500/s, p99 ≤ 50 ms" "$(drive_summary distributed-closed)" \
    "$(verdict "$closed_rate" '>=' 2500 "$closed_p99_ms" '<=' 50)"
row "distributed: enters, open loop $RATE/s" "" "$(drive_summary distributed-open)"
row "distributed: CPU per scan (64 connections): gateway" "≤ 50 µs" "${cpu_per_scan[0]} µs" "$(verdict "${cpu_per_scan[0]}" '<=' 50)"
row "distributed: CPU per scan: validator" "≤ 60 µs" "${cpu_per_scan[1]} µs" "$(verdict "${cpu_per_scan[1]}" '<=' 60)"
row "distributed: CPU per scan: registry" "≤ 10 µs" "${cpu_per_scan[2]} µs" "$(verdict "${cpu_per_scan[2]}" '<=' 10)"
row "distributed: CPU per scan: Redis" "≤ 30 µs" "${cpu_per_scan[3]} µs" "$(verdict "${cpu_per_scan[3]}" '<=' 30)"
row "distributed: CPU per scan: Presence's processes together" "≤ 150 µs" "$presence_cpu µs" "$(verdict "$presence_cpu" '<=' 150)"
row "distributed: CPU per scan: the test broker (tansu)" "" "${cpu_per_scan[4]} µs"
row "distributed: idle CPU, gateway / validator" "< 1 %" "${distributed_idle[0]} / ${distributed_idle[1]}" \
    "$(verdict "${distributed_idle[0]% %}" '<' 1 "${distributed_idle[1]% %}" '<' 1)"
row "distributed: idle CPU, registry / Redis / tansu" "" "${distributed_idle[2]} / ${distributed_idle[3]} / ${distributed_idle[4]}"

echo
echo "$(nproc) cores, $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| what | target | measured | |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
log "reports and logs: $out"
