#!/usr/bin/env bash
# Soak test: a steady open-loop rate for many minutes, checking that nothing
# fails, p99 stays level and none of Presence's processes grows.
#
#   scripts/bench/soak.sh embedded    RATE [MINUTES=10]  # `presence serve`, fresh data dir
#   scripts/bench/soak.sh distributed RATE [MINUTES=10]  # deploy/local/stack.sh (tansu)
#   scripts/bench/soak.sh attached    RATE [MINUTES=10]  # a deployment already running
#   scripts/bench/soak.sh search      RATE [MINUTES=3]   # the highest rate the local stack holds
#
# RATE is scans per second, or `half`: half the closed-loop maximum that the same
# server reaches just before the soak (presence-loadgen, 64 connections,
# PRESENCE_SOAK_MAX_SECONDS measured after a 5 s warm-up; its report is max.json).
#
# The soak runs `presence-loadgen --rate RATE` in consecutive windows of
# PRESENCE_SOAK_WINDOW seconds (default 60), each with a fresh inventory. At the
# end of every window it reads each process's CPU time and resident memory
# (/proc) and each service's /metrics; the 5 s samples in between go to
# processes.csv. It prints one line per window (for the embedded server, with the
# store's batches over 100 ms while the window drove: a stalled disk holds every
# scan queued behind such a batch), then two tables:
# - per window, each process's CPU per answered scan (µs, the window's CPU time,
#   its inventory load included, over the scans it answered) and RSS (MiB): on
#   the local stack this shows Presence's own processes level while the test
#   broker's CPU per scan grows;
# - what each service asked of the Kafka brokers per scan (requests by type,
#   records and batches produced, bytes), from the `presence_kafka_client_*`
#   counters (librdkafka's statistics, reported every 5 s).
# It fails when
# - a window saw an error (5xx, no answer, an unexpected status);
# - a window after the warm-up had a p99 more than twice (and 5 ms above) its
#   baseline: the lowest p99 of the first three windows after the warm-up that
#   came before it (the lowest, so that one noisy early window cannot excuse a
#   later slowdown);
# - one of Presence's processes (presence, gateway, validator, registry) grew its
#   RSS by 10 % or more between the end of the warm-up and the end. Redis and the
#   broker are shown, not judged: they keep every ticket and record by design.
# The warm-up is the first PRESENCE_SOAK_WARMUP windows (default 2, or 1 for runs
# of under 5 windows): allocators, caches and Redis settle in that time.
#
# Modes:
# - embedded: starts the release `presence serve` on a free port with a fresh
#   data dir and the per-key rate limit off. PRESENCE_STORE_CACHE_MIB and the
#   other server settings pass through from the environment.
# - distributed: starts deploy/local/stack.sh (gateway, validator, registry,
#   Redis, tansu); its settings pass through (PRESENCE_TANSU_STORAGE,
#   PRESENCE_PARTITIONS, PRESENCE_KAFKA_FETCH_WAIT_MS, ...). Every process with a
#   pid file in the stack directory is sampled.
# - attached: soaks PRESENCE_URL with PRESENCE_API_KEY (an admin key) and starts
#   nothing: a deployment on a real Kafka (docs/reliability.md, "Load held").
#   PRESENCE_SOAK_PIDS="gateway=PID validator=PID ..." names processes on this
#   machine to sample; PRESENCE_SOAK_METRICS="gateway=URL validator=URL ..." names
#   each service's /metrics. Either may be left out (no table then).
# - search: runs `distributed` soaks of MINUTES windows, each on a fresh stack (the
#   test broker's cost grows with the records it keeps), from RATE down by
#   PRESENCE_SOAK_STEP percent (default 20) until one passes; a failing step stops
#   at its first failing window. Prints each step's verdict and the rate held.
#
# Environment: PRESENCE_SOAK_DIR (reports, samples and logs; default a new
# temporary directory), PRESENCE_BIN_DIR (built binaries; default: a release build
# here), PRESENCE_SOAK_WINDOW, PRESENCE_SOAK_WARMUP, PRESENCE_SOAK_MAX_SECONDS
# (default 20), PRESENCE_SOAK_STEP, PRESENCE_SOAK_FAIL_FAST=1 (stop at the first
# failing window), PRESENCE_SOAK_P99_SLACK_MS (default 5: how far above its
# baseline's p99 a doubled p99 must also be to fail), PRESENCE_SOAK_SERVER_CPUS and
# PRESENCE_SOAK_LOADGEN_CPUS (CPU lists for `taskset -c`: the embedded server and
# the load generator, the maximum's drive included, each kept to its own cores; on
# a small machine a generator sharing the server's cores falls behind its
# timetable, and its lateness counts in the p99).
#
# Not part of the test suite at these lengths (scripts/test.sh runs a short
# embedded one). Loopback only, unless `attached` is pointed elsewhere.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

mode=${1:-}
rate=${2:-}
case $mode in
    embedded | distributed | attached) minutes=${3:-10} ;;
    search) minutes=${3:-3} ;;
    -h | --help | help) usage; exit 0 ;;
    *) usage; exit 2 ;;
esac
[[ $rate =~ ^[1-9][0-9]*$ || $rate == half ]] || {
    echo "soak.sh: RATE must be a number of scans per second or \`half\`, not '$rate'" >&2
    exit 2
}
[[ $minutes =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: MINUTES must be a whole number" >&2; exit 2; }
window_seconds=${PRESENCE_SOAK_WINDOW:-60}
[[ $window_seconds =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: PRESENCE_SOAK_WINDOW must be whole seconds" >&2; exit 2; }
if ((minutes >= 5)); then warmup=${PRESENCE_SOAK_WARMUP:-2}; else warmup=${PRESENCE_SOAK_WARMUP:-1}; fi
((warmup >= 1 && warmup < minutes)) || {
    echo "soak.sh: the warm-up ($warmup windows) must be at least 1 and under MINUTES ($minutes)" >&2
    exit 2
}
max_seconds=${PRESENCE_SOAK_MAX_SECONDS:-20}
step=${PRESENCE_SOAK_STEP:-20}

server_pin=()
[ -z "${PRESENCE_SOAK_SERVER_CPUS:-}" ] || server_pin=(taskset -c "$PRESENCE_SOAK_SERVER_CPUS")
loadgen_pin=()
[ -z "${PRESENCE_SOAK_LOADGEN_CPUS:-}" ] || loadgen_pin=(taskset -c "$PRESENCE_SOAK_LOADGEN_CPUS")

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=proc.sh
. "$repo/scripts/bench/proc.sh"
out=${PRESENCE_SOAK_DIR:-$(mktemp -d -t presence-soak.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
readonly SAMPLE_EVERY=5
ticks=$(getconf CLK_TCK)

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'soak.sh: %s\n' "$*" >&2
    exit 1
}

# Release binaries unless PRESENCE_BIN_DIR names built ones; exports it so that
# stack.sh and the steps of a search use the same.
find_binaries() {
    if [ -z "${PRESENCE_BIN_DIR:-}" ]; then
        local packages=(-p presence-loadgen)
        case $mode in
            embedded) packages+=(-p presence) ;;
            distributed | search) packages+=(-p presence-gateway -p presence-validator -p presence-registry) ;;
        esac
        log "building release binaries"
        (cd "$repo" && cargo build --release --all-features --bins -q "${packages[@]}")
        PRESENCE_BIN_DIR="${CARGO_TARGET_DIR:-$repo/target}/release"
    fi
    PRESENCE_BIN_DIR=$(cd "$PRESENCE_BIN_DIR" && pwd)
    export PRESENCE_BIN_DIR
    [ -x "$PRESENCE_BIN_DIR/presence-loadgen" ] || die "$PRESENCE_BIN_DIR/presence-loadgen is missing"
}

# The search: fresh distributed soaks, stepping the rate down until one holds.
search() {
    local try=$rate step_dir verdict used held='' rows=()
    while :; do
        step_dir="$out/step-$(printf '%02d' $((${#rows[@]} + 1)))"
        log "search: $minutes windows at $try scans/s ($step_dir)"
        verdict=passed
        PRESENCE_SOAK_DIR=$step_dir PRESENCE_SOAK_FAIL_FAST=1 \
            "${BASH_SOURCE[0]}" distributed "$try" "$minutes" || verdict=failed
        [ -f "$step_dir/window-1.json" ] || die "the step at $try scans/s did not run; see $step_dir"
        used=$(<"$step_dir/rate")
        rows+=("| $used | $verdict | $(cat "$step_dir/summary" 2>/dev/null) |")
        if [ "$verdict" = passed ]; then
            held=$used
            break
        fi
        try=$((used * (100 - step) / 100))
        ((try >= 1)) || break
    done
    echo
    echo "| scans/s | $minutes windows of ${window_seconds} s | windows run: p99 after the warm-up, broker µs per scan (first → last) |"
    echo "|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    if [ -n "$held" ]; then
        echo "the local stack held $held scans/s for $minutes windows of ${window_seconds} s"
    else
        echo "no rate held"
        exit 1
    fi
}

if [ "$mode" = search ]; then
    find_binaries
    search
    exit 0
fi

key=soak-$RANDOM$RANDOM
declare -A pids=() metrics=()
server=
cleanup() {
    if [ -n "${sampler:-}" ]; then kill "$sampler" 2>/dev/null || true; fi
    case $mode in
        embedded)
            if [ -n "$server" ]; then
                kill "$server" 2>/dev/null || true
                wait "$server" 2>/dev/null || true
            fi
            ;;
        distributed)
            if [ -n "${PRESENCE_STACK_DIR:-}" ]; then
                "$repo/deploy/local/stack.sh" down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true
            fi
            ;;
    esac
}
trap cleanup EXIT

# NAME=VALUE words of $2 into the associative array named $1.
read_pairs() {
    local -n into=$1
    local pair
    for pair in $2; do
        [[ $pair == *=* ]] || die "'$pair' is not NAME=VALUE"
        into[${pair%%=*}]=${pair#*=}
    done
}

start_embedded() {
    local data="$out/data" i
    mkdir -p "$data"
    PRESENCE_KEY_RATE=0 "${server_pin[@]}" "$PRESENCE_BIN_DIR/presence" serve --listen 127.0.0.1:0 \
        --data-dir "$data" --api-key "$key" >"$out/presence.out" 2>"$out/presence.log" &
    server=$!
    for i in $(seq 100); do
        grep -q '^PRESENCE_URL=' "$out/presence.out" && break
        kill -0 "$server" 2>/dev/null || die "presence serve exited; see $out/presence.log"
        sleep 0.1
    done
    PRESENCE_URL=$(sed -n 's/^PRESENCE_URL=//p' "$out/presence.out")
    [ -n "$PRESENCE_URL" ] || die "presence serve announced no URL within 10 s"
    pids[presence]=$server
    metrics[presence]=$PRESENCE_URL/metrics
}

start_distributed() {
    local stack_env file name
    stack_env=$(PRESENCE_API_KEY=$key PRESENCE_STACK_DIR="$out/stack" "$repo/deploy/local/stack.sh" up)
    eval "$stack_env"
    for file in "$PRESENCE_STACK_DIR"/*.pid; do
        name=$(basename "$file" .pid)
        pids[$name]=$(<"$file")
    done
    metrics[gateway]=$PRESENCE_URL/metrics
    metrics[validator]=$PRESENCE_VALIDATOR_OPS_URL/metrics
    metrics[registry]=$PRESENCE_REGISTRY_OPS_URL/metrics
}

attach() {
    [ -n "${PRESENCE_URL:-}" ] || die "attached: set PRESENCE_URL to the gateway (or presence serve) to soak"
    [ -n "${PRESENCE_API_KEY:-}" ] || die "attached: set PRESENCE_API_KEY to an admin key (the inventory is loaded through it)"
    key=$PRESENCE_API_KEY
    read_pairs pids "${PRESENCE_SOAK_PIDS:-}"
    read_pairs metrics "${PRESENCE_SOAK_METRICS:-}"
}

# One CSV line per process: LABEL, name, CPU ticks so far, RSS KiB; each
# service's /metrics as metrics/LABEL.NAME.txt; and the machine's load average
# (a soak measures whatever else runs beside it).
snapshot() {
    local label=$1 name cpu rss
    cut -d' ' -f1 /proc/loadavg >"$out/metrics/$label.loadavg"
    for name in "${!pids[@]}"; do
        cpu=$(cpu_ticks "${pids[$name]}") || continue
        rss=$(rss_kib "${pids[$name]}") || continue
        echo "$label,$name,$cpu,$rss" >>"$out/snapshots.csv"
    done
    metrics_now "$label"
}

# Each service's /metrics as metrics/LABEL.NAME.txt.
metrics_now() {
    local label=$1 name
    for name in "${!metrics[@]}"; do
        curl -fsS --max-time 5 "${metrics[$name]}" >"$out/metrics/$label.$name.txt" 2>/dev/null ||
            rm -f "$out/metrics/$label.$name.txt"
    done
}

sample() {
    local start=$SECONDS name cpu rss
    echo "seconds,process,rss_kib,cpu_ticks"
    while true; do
        for name in "${!pids[@]}"; do
            cpu=$(cpu_ticks "${pids[$name]}") || continue
            rss=$(rss_kib "${pids[$name]}") || continue
            echo "$((SECONDS - start)),$name,$rss,$cpu"
        done
        sleep "$SAMPLE_EVERY"
    done
}

# The verdict, the tables and the lines printed: scripts/bench/soak_report.py.
report() {
    python3 -B "$repo/scripts/bench/soak_report.py" "$@"
}

loadgen() {
    PRESENCE_API_KEY=$key "${loadgen_pin[@]}" "$PRESENCE_BIN_DIR/presence-loadgen" --url "$PRESENCE_URL" --json "$@"
}

# Half the closed-loop maximum of the server under test, measured now.
measure_half() {
    local tickets=200000
    [ "$mode" = embedded ] && tickets=1000000
    log "measuring the closed-loop maximum (64 connections, ${max_seconds} s)"
    loadgen --concurrency 64 --duration "${max_seconds}s" --warmup 5s --tickets "$tickets" \
        >"$out/max.json" 2>"$out/max.log" || die "the closed-loop run failed; see $out/max.json and $out/max.log"
    local maximum p99
    read -r rate maximum p99 < <(report half "$out/max.json")
    log "closed-loop maximum ${maximum%.*}/s (p99 $p99 ms): soaking at $rate/s"
}

find_binaries
case $mode in
    embedded) start_embedded ;;
    distributed) start_distributed ;;
    attached) attach ;;
esac
mkdir -p "$out/metrics"
: >"$out/snapshots.csv"
[ "$rate" = half ] && measure_half
echo "$rate" >"$out/rate"
# Tickets per window: the rate for the window, and a margin for a window that
# runs a little long.
tickets=$((rate * window_seconds * 11 / 10 + 100))

sample >"$out/processes.csv" &
sampler=$!
snapshot 0
windows=0
for window in $(seq 1 "$minutes"); do
    loadgen --rate "$rate" --duration "${window_seconds}s" --tickets "$tickets" \
        >"$out/window-$window.json" 2>"$out/window-$window.log" &
    driver=$!
    # The services' figures once the window's inventory is loaded, so that the
    # store's batches are told apart from the inventory's.
    wait_for_drive "$out/window-$window.log" "$driver"
    metrics_now "$window-driving"
    wait "$driver" || true
    snapshot "$window"
    windows=$window
    report line "$out" "$window"
    if [ "${PRESENCE_SOAK_FAIL_FAST:-}" = 1 ] && ! report check "$out" "$window" "$warmup"; then
        log "stopping early: window $window failed"
        break
    fi
done
kill "$sampler" 2>/dev/null || true
sampler=

checks=0
report report "$out" "$windows" "$warmup" "$ticks" || checks=1
log "reports, samples and logs: $out"
if [ "$checks" -ne 0 ] || ((windows < minutes)); then
    log "soak FAILED"
    exit 1
fi
log "soak passed"
