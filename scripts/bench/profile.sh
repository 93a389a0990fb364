#!/usr/bin/env bash
# Where the distributed stack's CPU per scan goes, per process, under the same
# closed-loop drive as scripts/bench/all.sh:
#
#   scripts/bench/profile.sh [OUT_DIR]
#
# Starts deploy/local/stack.sh (one gateway, validator and registry, Redis and
# tansu) from the release binaries, drives it with presence-loadgen (enters of
# distinct tickets, 64 connections, PRESENCE_BENCH_SECONDS measured after a 5 s
# warm-up) and, during the measured part, samples every process with
# `perf record` (software clock, 499 Hz; no hardware counters needed). Prints:
# - per process: CPU per scan (µs), threads, context switches per scan
#   (voluntary + involuntary, summed over its threads, from /proc), and the share
#   of its samples in the kernel;
# - per process: what it costs with no scan at all (CPU ms and context switches a
#   second over PRESENCE_PROFILE_IDLE_SECONDS, default 20, on the idle stack just
#   before the drive: consumers polling the broker, timers, statistics), and the
#   CPU per scan beyond that idle cost, so that a fixed cost spread over few
#   scans is not read as a cost of each scan;
# - per process: its samples by what they were doing (scheduler and futex,
#   network, other system calls, librdkafka, tokio, Redis client, HTTP, tracing,
#   allocation, protobuf, JSON, the project's own code, ...), and its context
#   switches per scan by kind of thread (tokio's workers, each librdkafka thread,
#   the delivery-report thread), from scripts/bench/profile_report.py.
# The perf data and reports stay in OUT_DIR (default a new temporary directory).
# Needs perf (Debian's linux-perf) and jq. Loopback only.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=proc.sh
. "$repo/scripts/bench/proc.sh"
out=${1:-$(mktemp -d -t presence-profile.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
seconds=${PRESENCE_BENCH_SECONDS:-20}
idle_seconds=${PRESENCE_PROFILE_IDLE_SECONDS:-20}
readonly CONNECTIONS=64
readonly KINDS=(gateway validator registry redis tansu)
bin=${PRESENCE_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
ticks=$(getconf CLK_TCK)

log() {
    printf '==> %s\n' "$*" >&2
}

for tool in perf jq; do
    command -v "$tool" >/dev/null || { echo "profile.sh needs $tool" >&2; exit 1; }
done

# Context switches of every thread of process $1 so far.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print n + 0}'
}

# Enter requests the gateway has answered so far (its /metrics).
enters_answered() {
    curl -sf "$PRESENCE_URL/metrics" |
        awk '/^presence_http_requests_total\{.*enter/ {n += $2} END {print n + 0}'
}

threads() {
    ls /proc/"$1"/task | wc -l
}

# One line per thread of process $1: its id, its context switches so far, its name.
thread_switches() {
    local task
    for task in /proc/"$1"/task/*; do
        awk -v tid="${task##*/}" -v comm="$(cat "$task/comm" 2>/dev/null)" \
            '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print tid, n + 0, comm}' \
            "$task/status" 2>/dev/null
    done
}

if [ -z "${PRESENCE_BIN_DIR:-}" ]; then
    log "building release binaries"
    (cd "$repo" && cargo build --release --workspace --all-features --bins -q)
fi

key=bench-$RANDOM$RANDOM
log "stack.sh up"
stack_env=$(PRESENCE_API_KEY=$key PRESENCE_BIN_DIR="$bin" PRESENCE_STACK_DIR="$out/stack" \
    "$repo/deploy/local/stack.sh" up 2>"$out/stack-up.log")
eval "$stack_env"
trap '"$repo/deploy/local/stack.sh" down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true' EXIT
pids=()
for kind in "${KINDS[@]}"; do pids+=("$(<"$PRESENCE_STACK_DIR/$kind.pid")"); done

# The idle cost, after a settle: the stack is ready, no scan has been sent.
sleep 5
log "idle for ${idle_seconds}s"
idle_cpu_before=() idle_switch_before=()
for pid in "${pids[@]}"; do
    idle_cpu_before+=("$(cpu_ticks "$pid")")
    idle_switch_before+=("$(switches "$pid")")
done
sleep "$idle_seconds"
idle_cpu=() idle_switches=()
for i in "${!pids[@]}"; do
    idle_cpu+=($(($(cpu_ticks "${pids[i]}") - idle_cpu_before[i])))
    idle_switches+=($(($(switches "${pids[i]}") - idle_switch_before[i])))
done

log "presence-loadgen: $CONNECTIONS connections, ${seconds}s after a 5 s warm-up"
PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$PRESENCE_URL" --json \
    --tickets 200000 --concurrency "$CONNECTIONS" --duration "${seconds}s" --warmup 5s \
    >"$out/drive.json" 2>"$out/drive.log" &
driver=$!
wait_for_drive "$out/drive.log" "$driver"
sleep 5 # the warm-up
sent_before=$(enters_answered)
cpu_before=() switch_before=() recorders=()
for i in "${!pids[@]}"; do
    cpu_before+=("$(cpu_ticks "${pids[i]}")")
    switch_before+=("$(switches "${pids[i]}")")
    thread_switches "${pids[i]}" >"$out/${KINDS[i]}.threads-before"
    perf record -F 499 -g -p "${pids[i]}" -o "$out/${KINDS[i]}.perf" -- sleep $((seconds - 2)) \
        >"$out/${KINDS[i]}.perf.log" 2>&1 &
    recorders+=($!)
done
wait "${recorders[@]}" || true
cpu_after=() switch_after=() thread_counts=()
for i in "${!pids[@]}"; do
    cpu_after+=("$(cpu_ticks "${pids[i]}")")
    switch_after+=("$(switches "${pids[i]}")")
    thread_counts+=("$(threads "${pids[i]}")")
    thread_switches "${pids[i]}" >"$out/${KINDS[i]}.threads-after"
done
sent_after=$(enters_answered)
wait "$driver" || log "loadgen did not pass (see $out/drive.json)"
scans=$((sent_after - sent_before))
[ "$scans" -gt 0 ] || { echo "no scans counted by the gateway's /metrics during the profile" >&2; exit 1; }

echo
echo "$(nproc) cores, commit $(cd "$repo" && git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "drive: $(jq -r '"\(.throughput_per_second | floor) scans/s, p50 \(.latency_us.p50 / 1000) ms, p99 \(.latency_us.p99 / 1000) ms, codes \(.http_codes | tostring)"' "$out/drive.json"); profiled: $scans scans in $((seconds - 2)) s"
echo
echo "| process | CPU µs per scan | threads | context switches per scan | idle: CPU ms/s | idle: switches/s | CPU µs per scan beyond idle |"
echo "|---|---|---|---|---|---|---|"
# Beyond idle: the drive's CPU time less what the process spends idle in as long.
for i in "${!pids[@]}"; do
    python3 -c '
import sys
kind, ticks, scans, profiled, idle_seconds, threads, cpu, switches, idle_cpu, idle_switches = sys.argv[1:]
ticks, scans, profiled, idle_seconds = int(ticks), int(scans), int(profiled), int(idle_seconds)
cpu_us, idle_us_per_s = int(cpu) * 1e6 / ticks, int(idle_cpu) * 1e6 / ticks / idle_seconds
beyond = (cpu_us - idle_us_per_s * profiled) / scans
print(f"| {kind} | {cpu_us / scans:.0f} | {threads} | {int(switches) / scans:.2f} "
      f"| {idle_us_per_s / 1000:.1f} | {int(idle_switches) / idle_seconds:.0f} | {beyond:.0f} |")
' "${KINDS[i]}" "$ticks" "$scans" $((seconds - 2)) "$idle_seconds" "${thread_counts[i]}" \
        $((cpu_after[i] - cpu_before[i])) $((switch_after[i] - switch_before[i])) \
        "${idle_cpu[i]}" "${idle_switches[i]}"
done
echo
for kind in "${KINDS[@]}"; do
    perf report -i "$out/$kind.perf" --no-children --sort sym --stdio -g none \
        --percent-limit 0 2>/dev/null >"$out/$kind.report" || true
done
python3 "$repo/scripts/bench/profile_report.py" "$out" "$scans" "${KINDS[@]}"
log "perf data and reports: $out"
