#!/usr/bin/env bash
# Soak test of the distributed stack: a steady open-loop rate for many minutes,
# checking that nothing fails, p99 stays level and no process grows.
#
#   scripts/bench/soak.sh [RATE=700] [MINUTES=10]
#
# Starts deploy/local/stack.sh (release binaries), then runs `presence-loadgen
# --rate RATE` in consecutive one-minute windows, each with a fresh inventory
# (setup takes well under a second between windows), while sampling the resident
# memory and CPU time of every process of the stack every 5 s. Prints one line per
# window and a memory table, writes everything to $PRESENCE_SOAK_DIR (default a
# new temporary directory), and fails when
# - a window saw an error (5xx, no answer, an unexpected status);
# - a window after the warm-up had a p99 more than twice (and 5 ms above) the
#   p99 of the first window after it;
# - a process's RSS grew by 10 % or more between the end of the warm-up and the end.
# The warm-up is the first PRESENCE_SOAK_WARMUP windows (default 2): the services'
# allocators and Redis settle into their working size in that time.
# PRESENCE_TANSU_STORAGE (see deploy/local/stack.sh) picks the broker's storage.
#
# Not part of the test suite: it runs for MINUTES minutes. Loopback only.
set -euo pipefail

rate=${1:-700}
minutes=${2:-10}
warmup=${PRESENCE_SOAK_WARMUP:-2}
((warmup >= 1 && warmup < minutes)) || {
    echo "soak.sh: the warm-up ($warmup windows) must be at least 1 and under MINUTES ($minutes)" >&2
    exit 2
}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=proc.sh
. "$repo/scripts/bench/proc.sh"
out=${PRESENCE_SOAK_DIR:-$(mktemp -d -t presence-soak.XXXXXX)}
mkdir -p "$out"
key=soak-$RANDOM$RANDOM
readonly SAMPLE_EVERY=5
readonly COMPONENTS=(gateway validator registry redis tansu)
# Tickets per window: the rate for a minute, and a margin for a window that
# runs a little long.
tickets=$((rate * 66))

log() {
    printf '==> %s\n' "$*" >&2
}

cd "$repo"
log "building release binaries"
cargo build --release --all-features --bins -q \
    -p presence-gateway -p presence-validator -p presence-registry -p presence-loadgen

stack_env=$(PRESENCE_API_KEY=$key PRESENCE_BIN_DIR=target/release \
    PRESENCE_STACK_DIR="$out/stack" deploy/local/stack.sh up)
eval "$stack_env"
sampler=
cleanup() {
    if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
    deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# One CSV line per process per sample: seconds since start, name, RSS KiB, CPU
# seconds so far (utime+stime from /proc, in clock ticks).
ticks=$(getconf CLK_TCK)
sample() {
    local start=$SECONDS name pid cpu rss
    echo "seconds,process,rss_kib,cpu_seconds"
    while true; do
        for name in "${COMPONENTS[@]}"; do
            pid=$(cat "$PRESENCE_STACK_DIR/$name.pid" 2>/dev/null) || continue
            cpu=$(cpu_ticks "$pid") || continue
            rss=$(rss_kib "$pid") || continue
            echo "$((SECONDS - start)),$name,$rss,$((cpu / ticks))"
        done
        sleep "$SAMPLE_EVERY"
    done
}
sample >"$out/processes.csv" &
sampler=$!

failed=0
for window in $(seq 1 "$minutes"); do
    report="$out/window-$window.json"
    if ! target/release/presence-loadgen --url "$PRESENCE_URL" --api-key "$key" \
        --rate "$rate" --duration 60s --tickets "$tickets" --inventory-batch "$tickets" \
        --json >"$report" 2>"$out/window-$window.log"; then
        failed=1
    fi
    # Memory at the end of each window, marked so the table can find it.
    echo "window $window done at $(date +%s)" >>"$out/windows.log"
    cp "$out/processes.csv" "$out/processes-after-$window.csv"
    jq -r --arg w "$window" '"window \($w): \(.throughput_per_second | floor)/s  p50 \(.latency_us.p50/1000) ms  p99 \(.latency_us.p99/1000) ms  max \(.latency_us.max/1000) ms  errors \(.errors.connect + .errors.timeout + .errors.transport)  unexpected \([.ops[].unexpected] | add)  codes \(.http_codes | tostring)  late \(.open_loop.late)"' "$report"
done
kill "$sampler" 2>/dev/null || true
sampler=

checks=0
python3 - "$out" "$minutes" "$warmup" <<'PY' || checks=1
import csv, json, sys
out, minutes, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def last_rss(path):
    rss = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            rss[row["process"]] = (int(row["rss_kib"]), int(row["cpu_seconds"]))
    return rss

failed = False
p99 = {}
for window in range(warmup + 1, minutes + 1):
    with open(f"{out}/window-{window}.json") as f:
        p99[window] = json.load(f)["latency_us"]["p99"] / 1000
first = p99[warmup + 1]
drifted = [w for w, ms in p99.items() if ms > 2 * first and ms > first + 5]
print()
print(f"p99 after the warm-up: {first:.1f} ms in window {warmup + 1}, "
      f"{min(p99.values()):.1f} to {max(p99.values()):.1f} ms in windows {warmup + 1} to {minutes}")
if drifted:
    print(f"p99 more than doubled in windows {drifted}")
    failed = True

warm = last_rss(f"{out}/processes-after-{warmup}.csv")
end = last_rss(f"{out}/processes-after-{minutes}.csv")
print()
print(f"| process | RSS after window {warmup} | RSS at the end | growth | CPU seconds |")
print("|---|---|---|---|---|")
grew = []
for name, (rss_end, cpu) in end.items():
    rss_warm = warm.get(name, (rss_end, 0))[0]
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else 0.0
    print(f"| {name} | {rss_warm / 1024:.1f} MiB | {rss_end / 1024:.1f} MiB | {growth:+.1f} % | {cpu} |")
    if growth >= 10:
        grew.append(name)
if grew:
    print(f"\nRSS grew by 10 % or more: {', '.join(grew)}")
    failed = True
sys.exit(1 if failed else 0)
PY
log "reports, samples and logs: $out"
if [ "$failed" -ne 0 ] || [ "$checks" -ne 0 ]; then
    log "soak FAILED"
    exit 1
fi
log "soak passed"
